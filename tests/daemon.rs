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
    d.wait_log("reloaded:");
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
    let line = d.wait_log("state: running tx");
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
    assert_eq!(rb.request(b"CZ0040320CA00201CD001I"), concert::framing::ACK);
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
        if log.contains("reloaded:") {
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
    assert_eq!(ra.request(b"CZ0040320CA00201CD001I"), concert::framing::ACK);
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
    d.wait_log("reloaded:");
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
    let (_, doc) = concert::ticket::decode_zt(zt.as_bytes()).unwrap();
    assert!(
        doc.starts_with(concert::ticket::SIMULATED),
        "{}",
        String::from_utf8_lossy(&doc)
    );
    d.write_config(&format!(
        "{}listen 127.0.0.1:0\nconfig-watch 0\n",
        d.base_config()
    ));
    d.signal(libc::SIGHUP);
    d.wait_log("reloaded:");
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
    d.wait_log("reloaded: ");
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
