//! Operating like a Linux daemon: reload, state, daemon mode, pid file.

use crate::util::*;
use std::process::Command;

const PING: &[u8] = b"CZ0040320CA00201CD001I";

#[test]
fn sighup_moves_the_listener_without_dropping_a_transaction() {
    let gate = Gate::new();
    let d = Daemon::start(&format!("{}config-watch 0", gate.terminal()));
    let old = d.addr;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        tx.send(exchange(old, b"CZ0040320CA00201CB003700CD0010CE003978"))
            .unwrap()
    });
    d.wait_log("debit 7.00 EUR register 01 from tcp");
    // Another loopback address, port 0: the new listener is told by the log.
    d.write_config(&format!(
        "{}{}config-watch 0\nlisten 127.0.0.2:0\n",
        d.base_config(),
        gate.terminal()
    ));
    d.signal(libc::SIGHUP);
    let line = d.wait_log("listening on 127.0.0.2:");
    let new: std::net::SocketAddr = line
        .rsplit("listening on ")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    d.wait_log(&format!("stopped listening on {old}"));
    assert_eq!(text(&exchange(new, PING)), "CZ0040320CA00201CD001IAE00210");
    assert!(
        std::net::TcpStream::connect(old).is_err(),
        "old port still open"
    );
    // The debit held across the reload gets its answer.
    assert!(rx.try_recv().is_err(), "the debit ended before the reload");
    gate.release();
    let a = rx.recv().unwrap();
    assert!(text(&a).contains("AE00210"), "{}", text(&a));
    d.wait_log("reloaded: listen 127.0.0.2:0");
}

#[test]
fn invalid_file_keeps_the_running_configuration() {
    let d = Daemon::start("config-watch 0");
    d.write_config(&format!(
        "{}listen 127.0.0.1:0\nrequest-gap forever\n",
        d.base_config()
    ));
    d.signal(libc::SIGHUP);
    let line = d.wait_log("the running configuration is kept");
    assert!(line.contains("concertd.conf:4: "), "{line}");
    assert_eq!(
        text(&exchange(d.addr, PING)),
        "CZ0040320CA00201CD001IAE00210"
    );
}

#[test]
fn file_edited_on_disk_changes_the_allow_list() {
    let d = Daemon::start("allow 192.0.2.0/24\nconfig-watch 100ms");
    assert!(exchange(d.addr, PING).is_empty());
    d.write_config(&format!(
        "{}listen 127.0.0.1:0\nallow 127.0.0.1\nconfig-watch 100ms\n",
        d.base_config()
    ));
    d.wait_log("changed on disk");
    d.wait_log("reloaded: listen ");
    // `listen 127.0.0.1:0` is the same configured address: kept as it is.
    assert_eq!(
        text(&exchange(d.addr, PING)),
        "CZ0040320CA00201CD001IAE00210"
    );
}

#[test]
fn restart_only_keywords_are_kept_and_said() {
    let d = Daemon::start("config-watch 0");
    let other = d.dir.join("other-journal");
    d.write_config(&format!(
        "listen 127.0.0.1:0\nsimulator-delay 0\njournal {}\n",
        other.display()
    ));
    d.signal(libc::SIGHUP);
    d.wait_log("journal changed; that needs a restart");
    exchange(d.addr, b"CZ0040320CA00201CB003100CD0010CE003978");
    assert!(d.journal().contains(" begun "));
    assert!(!other.exists());
}

#[test]
fn sigusr1_logs_the_live_state() {
    let gate = Gate::new();
    let d = Daemon::start(&gate.terminal());
    let addr = d.addr;
    let t = std::thread::spawn(move || exchange(addr, b"CZ0040320CA00203CB003900CD0010CE003978"));
    d.wait_log("debit 9.00 EUR register 03 from tcp");
    d.signal(libc::SIGUSR1);
    d.wait_log("state: listening on 127.0.0.1:");
    let line = d.wait_log("state: running: tx");
    assert!(line.contains("debit 9.00 EUR register 03"), "{line}");
    gate.release();
    t.join().unwrap();
    d.signal(libc::SIGUSR1);
    let line = d.wait_log("state: last outcome");
    assert!(line.contains("approved"), "{line}");
}

#[test]
fn daemon_mode_pid_file_and_second_instance() {
    let dir = temp_dir();
    let dd = Detached::new(&dir);
    let pidfile = dd.pidfile.clone();
    let start = || dd.start(&[]);
    // The parent returns once the daemon listens.
    let o = start();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let addr = listening_in(&dir.join("log"));
    assert_eq!(text(&exchange(addr, PING)), "CZ0040320CA00201CD001IAE00210");
    // Whatever happens below, the daemon does not outlive the test.
    let reap = Reap::from_pid_file(&pidfile);
    let pid = reap.0;
    // A second one refuses to start.
    let o = start();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!("already running as pid {pid}")),
        "{}",
        stderr(&o)
    );
    // SAFETY: kill(2) on the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + PATIENCE;
    // The daemon is not our child: watch its pid file go.
    while pidfile.exists() {
        assert!(std::time::Instant::now() < deadline, "pid file not removed");
        std::thread::yield_now();
    }
    // The pid file goes just before the process: the port closes with it.
    while std::net::TcpStream::connect(addr).is_ok() {
        assert!(std::time::Instant::now() < deadline, "still listening");
        std::thread::yield_now();
    }
}

#[test]
fn daemon_startup_errors_reach_the_terminal() {
    let d = Daemon::start("");
    let dir = temp_dir();
    let conf = dir.join("c.conf");
    std::fs::write(
        &conf,
        format!("listen {}\njournal {}\n", d.addr, dir.join("j").display()),
    )
    .unwrap();
    let o = run(CONCERTD, &["-f", conf.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot listen on"), "{}", stderr(&o));
}

#[test]
fn reload_moves_the_serial_line_to_another_device() {
    let dir = temp_dir();
    let (a, b) = (dir.join("ttyA"), dir.join("ttyB"));
    let _ra = crate::serial::pty(&a);
    let mut rb = crate::serial::pty(&b);
    let timers =
        "serial-ack-timeout 400ms\nserial-frame-timeout 400ms\nserial-retry 100ms\nconfig-watch 0";
    let d = Daemon::start(&format!("serial {}\n{timers}", a.display()));
    d.wait_log(&format!("serial {}: open", a.display()));
    d.write_config(&format!(
        "{}listen 127.0.0.1:0\nserial {}\n{timers}\n",
        d.base_config(),
        b.display()
    ));
    d.signal(libc::SIGHUP);
    d.wait_log(&format!(
        "serial {}: closed for the new configuration",
        a.display()
    ));
    d.wait_log(&format!("serial {}: open", b.display()));
    assert_eq!(
        rb.request(b"CZ0040320CA00201CD001I"),
        concert::wire::framing::ACK
    );
    assert_eq!(rb.answer(), b"CZ0040320CA00201CD001IAE00210");
}

#[test]
fn a_daemon_started_with_a_relative_file_still_reloads_it() {
    // A daemon runs in /: `-f concertd.conf`, taken from the start
    // directory, must still name the same file at a reload.
    let dir = temp_dir();
    let conf_text = |extra: &str| {
        format!(
            "listen 127.0.0.1:0\nsimulator-delay 0\njournal journal\npidfile concertd.pid\n\
             log-file log\nsyslog-socket no-syslog\nconfig-watch 0\n{extra}"
        )
    };
    std::fs::write(dir.join("concertd.conf"), conf_text("")).unwrap();
    let o = {
        let _g = SPAWN.lock().unwrap_or_else(|p| p.into_inner());
        Command::new(CONCERTD)
            .args(["-f", "concertd.conf"])
            .current_dir(&dir)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let reap = Reap::from_pid_file(&dir.join("concertd.pid"));
    let pid = reap.0;
    std::fs::write(dir.join("concertd.conf"), conf_text("allow 127.0.0.1\n")).unwrap();
    // SAFETY: kill(2) on the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
        if log.contains("reloaded: listen ") {
            assert!(log.contains("allow 127.0.0.1/32"), "{log}");
            break;
        }
        assert!(!log.contains("the running configuration is kept"), "{log}");
        assert!(std::time::Instant::now() < deadline, "no reload: {log}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn reload_adds_a_serial_line() {
    // No serial line at start: no serial thread; a reload starts one.
    let dir = temp_dir();
    let a = dir.join("ttyA");
    let mut ra = crate::serial::pty(&a);
    let timers =
        "serial-ack-timeout 400ms\nserial-frame-timeout 400ms\nserial-retry 100ms\nconfig-watch 0";
    let d = Daemon::start(timers);
    let pid = d.pid();
    let names = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|t| {
                t.filter_map(Result::ok)
                    .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    assert!(
        !names().iter().any(|n| n.trim() == "serial"),
        "{:?}",
        names()
    );
    d.write_config(&format!(
        "{}listen 127.0.0.1:0\nserial {}\n{timers}\n",
        d.base_config(),
        a.display()
    ));
    d.signal(libc::SIGHUP);
    d.wait_log(&format!("serial {}: open", a.display()));
    assert_eq!(
        ra.request(b"CZ0040320CA00201CD001I"),
        concert::wire::framing::ACK
    );
    assert_eq!(ra.answer(), b"CZ0040320CA00201CD001IAE00210");
}

/// A payment program that refuses every payment: told apart at once from
/// the simulator, which would approve.
fn refusing_program(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("refuse.sh");
    std::fs::write(&p, "#!/bin/sh\necho AE=01\necho AF=04\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

const SALE: &[u8] = b"CZ0040320CA00201CB0041000CD0010CE003978";

/// The running configuration, as SIGUSR1 reports it.
fn state(d: &Daemon, n: usize) -> String {
    d.signal(libc::SIGUSR1);
    d.wait_log_n("state: listening on", n)
}

#[test]
fn unfinished_files_never_replace_the_running_configuration() {
    let dir = temp_dir();
    let prog = refusing_program(&dir);
    let d = Daemon::start(&format!(
        "terminal exec {}\nallow 127.0.0.1\nconfig-watch 100ms",
        prog.display()
    ));
    let conf = d.dir.join("concertd.conf");
    let running = |n: usize| {
        // Still the exec backend (the simulator would approve), on the
        // same listener, with the same allow-list.
        let a = exchange(d.addr, SALE);
        assert!(text(&a).ends_with("AE00201AF00204"), "{}", text(&a));
        let s = state(&d, n);
        assert!(s.contains(&format!("listening on {}", d.addr)), "{s}");
        assert!(s.contains("allow 127.0.0.1/32;"), "{s}");
        assert!(s.contains("terminal exec"), "{s}");
    };
    running(1);
    // An editor saving in place, caught after the truncation.
    std::fs::write(&conf, "").unwrap();
    d.wait_log("not applied: it has no keyword line");
    running(2);
    // Caught half-way: the last line has no newline yet.
    let whole = std::fs::read_to_string(&conf).unwrap_or_default();
    let full = format!(
        "{}terminal exec {}\nallow 127.0.0.1\nconfig-watch 100ms\nlisten 0.0.0.0:8888\nterminal simu",
        d.base_config(),
        prog.display()
    );
    assert!(whole.is_empty());
    std::fs::write(&conf, &full).unwrap();
    d.wait_log("its last line has no newline");
    running(3);
    // Comments only.
    std::fs::write(&conf, "# being rewritten\n\n").unwrap();
    d.wait_log_n("not applied: it has no keyword line", 2);
    running(4);
    // Keywords, but no terminal line: it would fall back to the simulator.
    std::fs::write(&conf, format!("{}config-watch 100ms\n", d.base_config())).unwrap();
    d.wait_log("it has no terminal line");
    running(5);
    assert!(!d.log_text().contains("reloaded:"), "{}", d.log_text());
}

#[test]
fn sighup_refuses_an_empty_file() {
    let d = Daemon::start("allow 127.0.0.1\nconfig-watch 0");
    std::fs::write(d.dir.join("concertd.conf"), "").unwrap();
    d.signal(libc::SIGHUP);
    d.wait_log("not applied: it has no keyword line");
    let s = state(&d, 1);
    assert!(s.contains("allow 127.0.0.1/32;"), "{s}");
    assert!(!d.log_text().contains("reloaded:"));
}

#[test]
fn a_change_is_applied_once_the_file_has_settled() {
    let d = Daemon::start("config-watch 100ms");
    d.write_config(&format!(
        "{}listen 127.0.0.1:0\nallow 127.0.0.1\nconfig-watch 100ms\n",
        d.base_config()
    ));
    d.wait_log("reloaded: listen ");
    // The change was seen, then applied a period later, not at once.
    let log = d.log_text();
    let seen = log.find("applied once it stays unchanged");
    let applied = log
        .find("changed on disk\n")
        .or(log.find("changed on disk"));
    assert!(seen.is_some(), "{log}");
    assert!(seen < applied.map(|a| a + 1), "{log}");
}

#[test]
fn the_simulator_says_no_card_is_charged() {
    let d = Daemon::start("config-watch 0");
    d.wait_log("terminal simulator: no card is charged");
    let a = exchange(d.addr, b"CZ0040320CA00201CB0041000CD0010CE003978CK003100");
    let zt = get(&a, "ZT").expect("a ticket");
    let (_, doc) = concert::wire::ticket::decode_zt(zt.as_bytes()).unwrap();
    assert!(
        doc.starts_with(concert::wire::ticket::SIMULATED),
        "{}",
        String::from_utf8_lossy(&doc)
    );
    d.write_config(&format!(
        "{}listen 127.0.0.1:0\nconfig-watch 0\n",
        d.base_config()
    ));
    d.signal(libc::SIGHUP);
    d.wait_log("reloaded: listen ");
    d.wait_log_n("terminal simulator: no card is charged", 2);
}

#[test]
fn a_second_signal_exits_at_once() {
    let gate = Gate::new();
    let mut d = Daemon::start(&gate.terminal());
    let addr = d.addr;
    let t = std::thread::spawn(move || exchange(addr, b"CZ0040320CA00201CB003800CD0010CE003978"));
    d.wait_log("held 800");
    d.signal(libc::SIGTERM);
    d.wait_log("stopping once the running transaction has ended");
    // The transaction is still held: only the second signal can end this.
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit().code(), Some(1));
    assert!(
        d.log_text().contains("again: exiting at once"),
        "{}",
        d.log_text()
    );
    // The register got no answer: the outcome is for a status request.
    assert!(!text(&t.join().unwrap()).contains("AE00210"));
}

#[test]
fn reload_swaps_the_backend_after_the_running_transaction() {
    let gate = Gate::new();
    let d = Daemon::start(&format!("{}config-watch 0", gate.terminal()));
    let addr = d.addr;
    let req = "CZ0040320CA00201CB003700CD0010CE003978";
    let t = std::thread::spawn(move || exchange(addr, req.as_bytes()));
    d.wait_log("held 700");
    d.write_config(&format!(
        "{}listen 127.0.0.1:0\nconfig-watch 0\nterminal simulator\n",
        d.base_config()
    ));
    d.signal(libc::SIGHUP);
    d.wait_log("terminal simulator: takes over after the running transaction");
    d.wait_log("reloaded: listen ");
    assert!(!d.log_text().contains("now in use"), "{}", d.log_text());
    // The running transaction ends on the program it started on.
    gate.release();
    let a = t.join().unwrap();
    assert_eq!(get(&a, "AC").as_deref(), Some("424242"), "{}", text(&a));
    d.wait_log("terminal simulator: now in use");
    // The next one runs on the simulator: not held, its own authorisation.
    let b = exchange(d.addr, b"CZ0040320CA00201CB003600CD0010CE003978");
    assert!(text(&b).contains("AE00210"), "{}", text(&b));
    assert_ne!(get(&b, "AC").as_deref(), Some("424242"), "{}", text(&b));
    assert!(!d.log_text().contains("held 600"), "{}", d.log_text());
}

/// A daemon listening on 127.0.0.1 at a port outside the ephemeral range,
/// as a configured one is: between an old listener's close and a new
/// bind, a client connecting anywhere on the machine could be given an
/// ephemeral port, and block the bind for as long as it lives (or lingers
/// in TIME_WAIT). Taken ports are skipped: the daemon says so and exits,
/// and the next one is tried, never a port bound then released. The
/// daemon listens on port 0 too (the harness's), which a reload drops.
/// `apart` keeps two tests that run at once off each other's ports.
fn daemon_on_a_fixed_port(extra: &str, apart: u16) -> (u16, Daemon) {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap_or_else(|_| "32768 60999".into());
    let low: u16 = range
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or(32768);
    assert!(low > 4096 + 2000 + apart, "ephemeral ports start at {low}");
    let first = low - 1 - apart - (std::process::id() % 2000) as u16;
    (0..50)
        .map(|i| first - i)
        .find_map(|p| {
            std::panic::catch_unwind(|| Daemon::start(&format!("{extra}\nlisten 127.0.0.1:{p}")))
                .ok()
                .map(|d| (p, d))
        })
        .expect("a free port below the ephemeral range")
}

#[test]
fn reload_rebinds_an_overlapping_address() {
    let (port, d) = daemon_on_a_fixed_port("config-watch 0", 0);
    d.wait_log(&format!("listening on 127.0.0.1:{port}"));
    // The wildcard on the same port overlaps 127.0.0.1: binding it first
    // would fail, so the old listener closes first, and says so.
    d.write_config(&format!(
        "{}config-watch 0\nlisten 0.0.0.0:{port}\n",
        d.base_config()
    ));
    d.signal(libc::SIGHUP);
    d.wait_log(&format!(
        "reload: 0.0.0.0:{port} overlaps 127.0.0.1:{port}: closing that one first"
    ));
    d.wait_log(&format!("listening on 0.0.0.0:{port}"));
    d.wait_log(&format!("reloaded: listen 0.0.0.0:{port}"));
    assert!(!d.log_text().contains("cannot listen"), "{}", d.log_text());
    let served: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(
        text(&exchange(served, PING)),
        "CZ0040320CA00201CD001IAE00210"
    );
}

/// A register's debit through `concert` on `addr`: approved.
fn debit_answers(addr: std::net::SocketAddr) {
    let o = run(
        CONCERT,
        &[
            "-h",
            &addr.ip().to_string(),
            "-p",
            &addr.port().to_string(),
            "pay",
            "4.20",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).starts_with("approved: debit 4.20 EUR"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_file_that_lost_its_listen_lines_is_refused() {
    // Applied, it would move the terminal to 0.0.0.0:8888, or, that port
    // taken, to nowhere.
    let d = Daemon::start("control @DIR@/control.sock\nconfig-watch 0");
    d.write_config("terminal simulator\n");
    d.signal(libc::SIGHUP);
    let line = d.wait_log("it has no listen line");
    assert!(
        line.contains(
            "it has no listen line, which would replace listen 127.0.0.1:0 with the \
             default, listen 0.0.0.0:8888; the running configuration is kept"
        ),
        "{line}"
    );
    debit_answers(d.addr);
    // concertctl reload is refused the same way, and says why.
    let o = d.ctl(&["reload"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("it has no listen line"),
        "{}",
        stderr(&o)
    );
    debit_answers(d.addr);
    let s = state(&d, 1);
    assert!(s.contains(&format!("listening on {};", d.addr)), "{s}");
    assert!(!d.log_text().contains("reloaded:"), "{}", d.log_text());
    assert!(
        !d.log_text().contains("stopped listening"),
        "{}",
        d.log_text()
    );
}

#[test]
fn a_new_address_that_cannot_be_bound_keeps_every_old_listener() {
    // The port is ours: the daemon's bind of it fails.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    let d = Daemon::start("control @DIR@/control.sock\nconfig-watch 0");
    // A free address first, then the taken one: all or nothing.
    d.write_config(&format!(
        "{}control {}\nconfig-watch 0\nlisten 127.0.0.2:0\nlisten {busy}\n",
        d.base_config(),
        d.control_socket().display()
    ));
    let o = d.ctl(&["reload"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let e = stderr(&o);
    assert!(e.contains(&format!("cannot listen on {busy}: ")), "{e}");
    assert!(e.contains("the running configuration is kept"), "{e}");
    let line = d.wait_log(&format!("reload: cannot listen on {busy}: "));
    assert!(
        line.ends_with("; the running configuration is kept"),
        "{line}"
    );
    debit_answers(d.addr);
    let s = state(&d, 1);
    assert!(s.contains(&format!("listening on {};", d.addr)), "{s}");
    let log = d.log_text();
    assert!(!log.contains("listening on 127.0.0.2"), "{log}");
    assert!(!log.contains("stopped listening"), "{log}");
    assert!(!log.contains("reloaded:"), "{log}");
    drop(taken);
}

#[test]
fn concertctl_reload_moves_the_listener_to_a_new_address() {
    let d = Daemon::start("control @DIR@/control.sock\nconfig-watch 0");
    let old = d.addr;
    d.write_config(&format!(
        "{}control {}\nconfig-watch 0\nlisten 127.0.0.2:0\n",
        d.base_config(),
        d.control_socket().display()
    ));
    let o = d.ctl(&["reload"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("was: listen 127.0.0.1:0"), "{out}");
    assert!(out.contains("now: listen 127.0.0.2:0"), "{out}");
    let line = d.wait_log("listening on 127.0.0.2:");
    let new: std::net::SocketAddr = line
        .rsplit("listening on ")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    d.wait_log(&format!("stopped listening on {old}"));
    debit_answers(new);
    assert!(
        std::net::TcpStream::connect(old).is_err(),
        "old port still open"
    );
}

#[test]
fn an_overlap_that_cannot_be_bound_listens_again_on_the_old_address() {
    let (port, d) = daemon_on_a_fixed_port("config-watch 0", 100);
    d.wait_log(&format!("listening on 127.0.0.1:{port}"));
    let old: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Someone else on the same port at another address: the wildcard
    // cannot be bound even once the daemon's own listener there closed.
    let other = std::net::TcpListener::bind(("127.0.0.2", port)).unwrap();
    d.write_config(&format!(
        "{}config-watch 0\nlisten 0.0.0.0:{port}\n",
        d.base_config()
    ));
    d.signal(libc::SIGHUP);
    d.wait_log(&format!(
        "reload: 0.0.0.0:{port} overlaps 127.0.0.1:{port}: closing that one first"
    ));
    let line = d.wait_log(&format!("reload: cannot listen on 0.0.0.0:{port}: "));
    assert!(
        line.ends_with("; the running configuration is kept"),
        "{line}"
    );
    d.wait_log(&format!("listening on 127.0.0.1:{port} again"));
    debit_answers(old);
    // The harness's own listener, never closed, answers too.
    debit_answers(d.addr);
    assert!(!d.log_text().contains("reloaded:"), "{}", d.log_text());
    drop(other);
}

/// The uid of `nobody` when this test runs as root (what the tests of
/// `user` need), else None with the reason printed.
fn nobody_as_root() -> Option<u32> {
    // SAFETY: plain system calls; getpwnam's result is read at once.
    let uid = unsafe {
        let pw = libc::getpwnam(c"nobody".as_ptr());
        (libc::geteuid() == 0 && !pw.is_null()).then(|| (*pw).pw_uid)
    };
    if uid.is_none() {
        eprintln!("not root, or no user nobody: skipped");
    }
    uid
}

#[test]
fn as_root_with_user_every_directory_is_the_users_or_the_start_is_refused() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Some(nobody) = nobody_as_root() else {
        return;
    };
    // Directories of any name, none of them `concertd`: the journal's
    // made by the operator (root's), the pid file's and the socket's left
    // for concertd to make.
    let dir = temp_dir();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pay = dir.join("pay");
    std::fs::create_dir(&pay).unwrap();
    std::fs::set_permissions(&pay, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pid = dir.join("run-pay").join("concertd.pid");
    let sock = dir.join("ctl").join("concertd.sock");
    let log = dir.join("log");
    let conf = dir.join("concertd.conf");
    std::fs::write(
        &conf,
        format!(
            "listen 127.0.0.1:0\nsimulator-delay 0\njournal {}\njournal-size 4K\n\
             journal-keep 1\npidfile {}\ncontrol {}\nlog-file {}\nsyslog-socket {}\n\
             user nobody\n",
            pay.join("journal").display(),
            pid.display(),
            sock.display(),
            log.display(),
            dir.join("no-syslog").display()
        ),
    )
    .unwrap();
    let start = || {
        let _g = SPAWN.lock().unwrap_or_else(|p| p.into_inner());
        Command::new(CONCERTD)
            .arg("-f")
            .arg(&conf)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    // Root's directory: refused, with the command that fixes it, before
    // anything is written or made.
    let o = start();
    if o.status.success() {
        let _reap = Reap::from_pid_file(&pid);
    }
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let want = format!(
        "concertd: journal directory {}: user nobody cannot write in it, which the \
         journal's rotation needs; concertd gives away only the directories it makes: \
         give it (chown nobody {}) or name one of its own",
        pay.display(),
        pay.display()
    );
    assert_eq!(stderr(&o).trim_end(), want);
    assert!(std::fs::read_dir(&pay).unwrap().next().is_none());
    assert!(!pid.parent().unwrap().exists() && !sock.parent().unwrap().exists());
    // Given by the operator as told: the daemon runs, and what it made is
    // the user's.
    let c = std::ffi::CString::new(pay.to_str().unwrap()).unwrap();
    // SAFETY: chown(2) on the test's own directory.
    assert_eq!(unsafe { libc::chown(c.as_ptr(), nobody, u32::MAX) }, 0);
    let o = start();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let reap = Reap::from_pid_file(&pid);
    let owner = |p: &std::path::Path| std::fs::metadata(p).unwrap().uid();
    assert_eq!(owner(pid.parent().unwrap()), nobody);
    assert_eq!(owner(sock.parent().unwrap()), nobody);
    // The control socket works...
    let o = run(CONCERTCTL, &["-s", sock.to_str().unwrap(), "status"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // ...and so does the rotation, which keeps the journal bounded.
    let addr = listening_in(&log);
    let mut n = 0;
    while std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches(": rotated,")
        .count()
        < 2
    {
        n += 1;
        assert!(n < 400, "not rotated twice");
        let req = format!("CZ0040320CA00201CB004{}CD0010CE003978", 1000 + n);
        assert!(text(&exchange(addr, req.as_bytes())).contains("AE00210"));
    }
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.contains("rotation failed"), "{logged}");
    assert!(std::fs::metadata(pay.join("journal")).unwrap().len() < 3 * 4096);
    // At exit the pid file goes.
    // SAFETY: kill(2) on the daemon this test started.
    unsafe { libc::kill(reap.0, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + PATIENCE;
    while pid.exists() {
        assert!(std::time::Instant::now() < deadline, "pid file left behind");
        std::thread::yield_now();
    }
}

#[test]
fn a_missing_default_journal_directory_is_made_0750() {
    use std::os::unix::fs::PermissionsExt;
    // The default journal, /var/lib/concertd/journal: only where it can
    // be made, and is not there (a real installation's is left alone).
    let state = std::path::Path::new("/var/lib/concertd");
    // SAFETY: plain system call.
    if unsafe { libc::geteuid() } != 0 || state.exists() || !state.parent().unwrap().is_dir() {
        eprintln!("not root, or {} exists: skipped", state.display());
        return;
    }
    let dir = temp_dir();
    let conf = dir.join("concertd.conf");
    // No journal line.
    std::fs::write(&conf, "listen 127.0.0.1:0\ncontrol none\n").unwrap();
    let mut child = {
        let _g = SPAWN.lock().unwrap_or_else(|p| p.into_inner());
        Command::new(CONCERTD)
            .args(["-d", "-f"])
            .arg(&conf)
            .env_remove("RUST_LOG")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    for l in std::io::BufRead::lines(err).map_while(Result::ok) {
        seen.push_str(&l);
        seen.push('\n');
        if l.contains("ready") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let mode = std::fs::metadata(state).map(|m| m.permissions().mode() & 0o7777);
    let _ = std::fs::remove_dir_all(state);
    assert!(seen.contains("ready"), "{seen}");
    assert!(
        seen.contains("journal directory /var/lib/concertd: made, mode 0750"),
        "{seen}"
    );
    assert_eq!(mode.unwrap() & !0o750, 0);
}

#[test]
fn a_daemon_logs_to_the_syslog_socket_named() {
    let dir = temp_dir();
    let dd = Detached::new(&dir);
    let socket = dir.join("syslog");
    let syslog = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
    syslog.set_read_timeout(Some(PATIENCE)).unwrap();
    let conf = std::fs::read_to_string(&dd.conf).unwrap();
    std::fs::write(
        &dd.conf,
        format!("{conf}syslog-socket {}\n", socket.display()),
    )
    .unwrap();
    let o = dd.start(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let reap = Reap::from_pid_file(&dd.pidfile);
    let mut buf = [0; 2048];
    loop {
        let n = syslog
            .recv(&mut buf)
            .expect("a log line on the syslog socket");
        let line = String::from_utf8_lossy(&buf[..n]).into_owned();
        // Facility daemon (3), priority info (6).
        if line == format!("<30>concertd[{}]: ready", reap.0) {
            break;
        }
    }
    // Not to the log-file, which is only for a machine without syslog.
    assert!(!dd.log.exists() || std::fs::read_to_string(&dd.log).unwrap().is_empty());
}

#[test]
fn no_binary_reads_a_test_hook_from_the_environment() {
    // What a test needs is configured (syslog-socket), never read from
    // the environment of a production process.
    for bin in [CONCERTD, CONCERT, CONCERTCTL] {
        let bytes = std::fs::read(bin).unwrap();
        let hook = b"CONCERTD_TEST";
        assert!(
            !bytes.windows(hook.len()).any(|w| w == hook),
            "{bin} holds CONCERTD_TEST"
        );
    }
}

/// A FIFO left where the pid file goes (a careless operator, a hostile
/// local user) neither blocks the start nor is read: the daemon starts and
/// replaces it with a regular pid file.
#[test]
fn a_fifo_at_the_pid_file_path_does_not_block_the_start() {
    let dir = temp_dir();
    let dd = Detached::new(&dir);
    let path = std::ffi::CString::new(dd.pidfile.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) on a path of this test's own directory.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    // Bounded: a start that blocks on the FIFO is killed and fails here.
    let o = {
        let _g = SPAWN.lock().unwrap_or_else(|p| p.into_inner());
        std::process::Command::new("timeout")
            .args(["20", CONCERTD, "-f"])
            .arg(&dd.conf)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let meta = std::fs::symlink_metadata(&dd.pidfile).unwrap();
    assert!(meta.file_type().is_file(), "{meta:?}");
    let reap = Reap::from_pid_file(&dd.pidfile);
    assert!(reap.0 > 1);
    let addr = listening_in(&dd.log);
    assert_eq!(text(&exchange(addr, PING)), "CZ0040320CA00201CD001IAE00210");
}

/// A start-up that fails on its port, its journal or its control socket
/// says what to do about it (issue 24, item 12).
#[test]
fn start_up_errors_say_the_next_step() {
    let dir = temp_dir();
    let conf = dir.join("c.conf");
    let start = |text: String| {
        std::fs::write(&conf, text).unwrap();
        run(CONCERTD, &["-d", "-f", conf.to_str().unwrap()])
    };
    // The port is ours.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    let o = start(format!(
        "listen {busy}\ncontrol none\njournal {}\n",
        dir.join("j").display()
    ));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!(
            "; another process listens on {busy}: stop it, or set listen to another port"
        )),
        "{}",
        stderr(&o)
    );
    // sysfs refuses new files even to root.
    let o = start("listen 127.0.0.1:0\ncontrol none\njournal /sys/journal\n".into());
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(
            "concertd may not write in /sys; give that directory to the user concertd runs \
             as (chown), or set journal to a file in a directory it may write"
        ),
        "{}",
        stderr(&o)
    );
    // No control socket: a warning that says how to have one.
    let d = Daemon::start("control /sys/concertd.sock");
    let line = d.wait_log("no control socket");
    assert!(
        line.ends_with(
            "concertctl cannot reach this concertd: set control to a path in a directory \
             concertd's user may write (or control none), and restart"
        ),
        "{line}"
    );
}
