//! The control socket and concertctl, through the real binaries.

use crate::util::*;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};

const CONTROL: &str = "control @DIR@/control.sock\n";

fn debit(cb: &str) -> String {
    format!("CZ0040320CA00201CB{:03}{cb}CD0010CE003978", cb.len())
}

/// Local time is UTC for these daemons: the day a journal stamp names is
/// the day `totals` counts it in.
fn start(extra: &str) -> Daemon {
    Daemon::start_env(&format!("{CONTROL}{extra}"), &["-v"], &[("TZ", "UTC")])
}

fn ok(o: &std::process::Output) -> String {
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(o), stderr(o));
    stdout(o)
}

#[test]
fn status_show_and_totals_over_the_socket() {
    let d = start("");
    let sock = d.control_socket();
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let a = exchange(d.addr, debit("1200").as_bytes());
    assert_eq!(get(&a, "AE").as_deref(), Some("10"));
    // Refused by the simulator's amount table (…51).
    let a = exchange(d.addr, debit("0051").as_bytes());
    assert_eq!(get(&a, "AF").as_deref(), Some("04"));
    // Approved for half: counted at what was charged.
    let partial = format!("{}BF0011", debit("0057"));
    let a = exchange(d.addr, partial.as_bytes());
    assert_eq!(get(&a, "AE").as_deref(), Some("10"), "{}", text(&a));
    let deferred = "CZ0040320CA00201CB003500CD0017CE003978";
    assert_eq!(
        get(&exchange(d.addr, deferred.as_bytes()), "AE").as_deref(),
        Some("10")
    );
    let credit = "CZ0040320CA00202CB003300CD0011CE003978";
    assert_eq!(
        get(&exchange(d.addr, credit.as_bytes()), "AE").as_deref(),
        Some("10")
    );
    // Delivery reports are journaled just after the answer is written.
    loop_until(|| (d.journal().matches(" delivered").count() >= 5).then_some(()));

    let s = ok(&d.ctl(&["status"]));
    assert!(s.starts_with("concertd "), "{s}");
    assert!(s.contains("terminal: simulator"), "{s}");
    assert!(s.contains(&format!("listening on {}", d.addr)), "{s}");
    assert!(s.contains("serial: none"), "{s}");
    assert!(s.contains("running: none"), "{s}");
    assert!(s.contains("4 approved, 1 declined, 0 unknown"), "{s}");
    assert!(s.contains("register 02: tx "), "{s}");
    assert!(s.contains("credit 3.00 EUR approved"), "{s}");

    let all = ok(&d.ctl(&["show"]));
    assert_eq!(all.lines().count(), 5, "{all}");
    let two = ok(&d.ctl(&["show", "2"]));
    let lines: Vec<&str> = two.lines().collect();
    assert_eq!(lines.len(), 2, "{two}");
    assert!(
        lines[0].contains("register 01 deferred-debit 5.00 EUR: approved; delivered"),
        "{two}"
    );
    assert!(lines[1].contains("tcp 127.0.0.1:"), "{two}");
    assert!(lines[1].contains("credit 3.00 EUR: approved"), "{two}");
    assert!(all.contains("declined AF04 (refused)"), "{all}");
    assert!(all.contains("approved for 0.28 EUR (partial)"), "{all}");

    let day = &d.journal()[..10];
    let t = ok(&d.ctl(&["totals", day]));
    assert!(t.contains(&format!("totals for {day}")), "{t}");
    // 12.00 + 0.28 (partial) + 5.00 (deferred): the refused one is not.
    assert!(t.contains("register 01 EUR: debit 3 = 17.28 EUR"), "{t}");
    assert!(t.contains("register 02 EUR: credit 1 = 3.00 EUR"), "{t}");
    assert!(!t.contains("incomplete"), "{t}");
    // Today is the default (TZ=UTC: the journal's day, unless midnight
    // passed in between, which only the dated form above is immune to).
    assert!(ok(&d.ctl(&["totals"])).starts_with("totals for "));
}

#[test]
fn status_and_show_answer_while_a_transaction_runs() {
    let gate = Gate::new();
    let d = start(&gate.terminal());
    let addr = d.addr;
    let t = std::thread::spawn(move || exchange(addr, debit("1000").as_bytes()));
    d.wait_log(": debit 10.00 EUR register 01 from tcp");
    let s = ok(&d.ctl(&["status"]));
    assert!(s.contains("running: tx "), "{s}");
    assert!(s.contains("debit 10.00 EUR register 01 from tcp"), "{s}");
    let shown = ok(&d.ctl(&["show"]));
    assert!(
        shown.contains("register 01 debit 10.00 EUR: not ended yet"),
        "{shown}"
    );
    // A second register is still answered busy at once.
    let busy = exchange(d.addr, debit("2000").as_bytes());
    assert_eq!(text(&busy), format!("{}AE00201", debit("2000")));
    let s = ok(&d.ctl(&["status"]));
    assert!(s.contains("1 busy answers"), "{s}");
    gate.release();
    assert_eq!(get(&t.join().unwrap(), "AE").as_deref(), Some("10"));
}

/// SIGUSR1 logs what `status` answers, line for line: one report, not
/// two wordings of it.
#[test]
fn sigusr1_logs_what_status_answers() {
    let d = start("");
    let a = exchange(d.addr, debit("1200").as_bytes());
    assert_eq!(get(&a, "AE").as_deref(), Some("10"));
    loop_until(|| d.journal().contains(" delivered").then_some(()));
    // The register's connection may still be counted open for a moment:
    // asked again until both say the same.
    loop_until(|| {
        let since = d.mark();
        d.signal(libc::SIGUSR1);
        d.wait_log_since(since, "state: control connections closed")
            .expect("SIGUSR1 logs the control socket's line last");
        let log = d.log_text();
        let lines: Vec<&str> = log.lines().collect();
        let first = lines
            .iter()
            .rposition(|l| l.contains("state: concertd "))
            .unwrap();
        let logged: Vec<&str> = lines[first..]
            .iter()
            .filter_map(|l| l.split_once("state: ").map(|(_, s)| s))
            .collect();
        let status = ok(&d.ctl(&["status"]));
        let said: Vec<&str> = status.lines().collect();
        assert!(said.len() > 8, "{status}");
        assert!(status.contains("last outcome tx "), "{status}");
        assert!(status.contains("register 01: tx "), "{status}");
        // The first line has the uptime, which may have turned meanwhile.
        (logged.len() == said.len() && logged[1..] == said[1..]).then_some(())
    });
}

/// Journal lines as concertd writes them.
fn line(t: &str, id: u64, rest: &str) -> String {
    format!("{t} {id} {rest}\n")
}

#[test]
fn totals_count_carried_copies_once_and_list_unknown_and_resolved_apart() {
    let d = start("journal-keep 1");
    d.signal(libc::SIGTERM);
    let mut d = d;
    d.wait_exit();
    let t = concert::terminal::journal::stamp();
    let day = &t[..10];
    let req = |cb: &str, reg: &str, cd: &str| {
        format!("CZ0040320CA002{reg}CB{:03}{cb}CD001{cd}CE003978", cb.len())
    };
    let d1 = req("1000", "01", "0");
    let d2 = format!("{}BF0011", req("1000", "01", "0"));
    let d2_answer = format!("{}BF0011AE00210", req("0400", "01", "0"));
    let d3 = req("0700", "01", "0");
    let d4 = req("0900", "01", "0");
    let d5 = req("0800", "01", "0");
    let d6 = req("0200", "02", "1");
    let d7 = req("0100", "01", "7");
    let mut old = String::new();
    for (id, r) in [(1, &d1), (2, &d2)] {
        old += &line(&t, id, &format!("begun tcp 127.0.0.1:1 01 {r}"));
    }
    old += &line(&t, 1, &format!("ended approved {d1}AE00210"));
    old += &line(&t, 2, &format!("ended approved {d2_answer}"));
    old += &line(&t, 3, &format!("begun tcp 127.0.0.1:1 01 {d3}"));
    old += &line(&t, 4, &format!("begun tcp 127.0.0.1:1 01 {d4}"));
    old += &line(&t, 4, &format!("ended unknown {d4}AE00201AF00207"));
    old += &line(&t, 4, &format!("resolved approved {d4}AE00210"));
    old += &line(&t, 5, &format!("begun tcp 127.0.0.1:1 01 {d5}"));
    old += &line(&t, 5, &format!("ended declined {d5}AE00201AF00204"));
    // The current generation: tx 2 carried over, then new ones.
    let mut cur = line(&t, 0, "rotated");
    cur += &line(&t, 2, &format!("begun tcp 127.0.0.1:1 01 {d2}"));
    cur += &line(&t, 2, &format!("ended approved {d2_answer}"));
    cur += &line(&t, 6, &format!("begun tcp 127.0.0.1:2 02 {d6}"));
    cur += &line(&t, 6, &format!("ended approved {d6}AE00210"));
    cur += &line(&t, 7, &format!("begun tcp 127.0.0.1:1 01 {d7}"));
    cur += &line(&t, 7, &format!("ended approved {d7}AE00210"));
    let journal = d.dir.join("journal");
    std::fs::write(d.dir.join("journal.1"), &old).unwrap();
    std::fs::write(&journal, &cur).unwrap();
    d.spawn();
    // tx 3, begun and never ended, is closed unknown at start.
    d.wait_log("tx 3: begun");
    let out = ok(&d.ctl(&["totals", day]));
    // 10.00 + 4.00 charged of 10.00 + 1.00 deferred; tx 2 once.
    assert!(
        out.contains("register 01 EUR: debit 3 = 15.00 EUR"),
        "{out}"
    );
    assert!(
        out.contains("register 02 EUR: credit 1 = 2.00 EUR"),
        "{out}"
    );
    assert!(out.contains("not counted above"), "{out}");
    assert!(
        out.contains("tx 3 register 01 debit 7.00 EUR: unknown"),
        "{out}"
    );
    assert!(
        out.contains("tx 4 register 01 debit 9.00 EUR: approved, resolved later"),
        "{out}"
    );
    assert!(!out.contains("tx 5"), "declined are not listed: {out}");
    // journal.1 was the first journal: nothing is missing.
    assert!(!out.contains("incomplete"), "{out}");
    let shown = ok(&d.ctl(&["show", "3"]));
    assert!(shown.contains("tx 5 "), "{shown}");
    assert!(
        shown.contains("tx 7 ") && shown.contains("deferred-debit"),
        "{shown}"
    );

    // Once journal.1 is itself a rotation's, what came before it is gone.
    d.signal(libc::SIGTERM);
    d.wait_exit();
    let old = std::fs::read_to_string(d.dir.join("journal.1")).unwrap();
    std::fs::write(d.dir.join("journal.1"), line(&t, 0, "rotated") + &old).unwrap();
    d.spawn();
    let out = ok(&d.ctl(&["totals", day]));
    let hms = &t[11..19];
    assert!(
        out.contains(&format!("incomplete: the journal starts at {day} {hms}")),
        "{out}"
    );
    // The rotation line is no unreadable line.
    assert!(!d.log_text().contains("unreadable"), "{}", d.log_text());
}

#[test]
fn totals_through_real_rotations() {
    let d = start("journal-size 4K\njournal-keep 1");
    let mut approved = 0u64;
    let rotated = |n: usize| d.log_text().matches(": rotated, ").count() >= n;
    while !rotated(1) {
        let a = exchange(d.addr, debit("1000").as_bytes());
        assert_eq!(get(&a, "AE").as_deref(), Some("10"));
        approved += 1;
        assert!(approved < 200, "no rotation");
    }
    // A few more, so that the new generation has records of its own.
    for _ in 0..3 {
        exchange(d.addr, debit("1000").as_bytes());
        approved += 1;
    }
    // The current generation starts with its rotation line, dated.
    let day = d.journal()[..10].to_string();
    let out = ok(&d.ctl(&["totals", &day]));
    assert!(
        out.contains(&format!(
            "register 01 EUR: debit {approved} = {}.00 EUR",
            approved * 10
        )),
        "{approved}: {out}"
    );
    assert!(!out.contains("incomplete"), "{out}");
    // A second rotation drops the first journal.
    while !rotated(2) {
        exchange(d.addr, debit("1000").as_bytes());
    }
    let out = ok(&d.ctl(&["totals", &day]));
    assert!(out.contains("incomplete: the journal starts at "), "{out}");
}

#[test]
fn reload_says_what_changed_or_where_the_file_is_wrong() {
    let d = start("");
    let conf = |extra: &str| {
        format!(
            "listen {}\n{}control {}\n{extra}",
            d.addr,
            d.base_config().replace("control none\n", ""),
            d.control_socket().display()
        )
    };
    d.write_config(&conf("simulator-delay 1s\n"));
    let out = ok(&d.ctl(&["reload"]));
    assert!(out.starts_with("reloaded "), "{out}");
    assert!(out.contains("was: simulator-delay 0s"), "{out}");
    assert!(out.contains("now: simulator-delay 1s"), "{out}");
    d.write_config(&conf("simulator-delay 1s\nlisten nowhere\n"));
    let o = d.ctl(&["reload"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let e = stderr(&o);
    let file = d.dir.join("concertd.conf");
    assert!(e.contains(&format!("{}:6:", file.display())), "{e}");
    assert!(e.contains("the running configuration is kept"), "{e}");
    // Still running, still on the socket.
    assert!(ok(&d.ctl(&["status"])).contains("running: none"));
}

#[test]
fn concertctl_exit_codes() {
    let dir = temp_dir();
    let missing = dir.join("none.sock");
    let o = run(CONCERTCTL, &["-s", missing.to_str().unwrap(), "status"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains(missing.to_str().unwrap()), "{e}");
    assert!(e.contains("check that concertd runs"), "{e}");
    // A socket file nobody answers on: not reachable either.
    drop(UnixListener::bind(&missing).unwrap());
    let o = run(CONCERTCTL, &["-s", missing.to_str().unwrap(), "status"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // A wrong command line: refused before connecting.
    let o = run(CONCERTCTL, &["-s", missing.to_str().unwrap(), "frobnicate"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unknown command"), "{}", stderr(&o));
    let o = run(CONCERTCTL, &["-s", missing.to_str().unwrap(), "show", "0"]);
    assert_eq!(o.status.code(), Some(1));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends `bytes` as a client would, and returns the whole answer.
fn raw(d: &Daemon, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(d.control_socket()).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let _ = s.write_all(bytes);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn the_daemon_refuses_bad_commands_long_lines_and_extra_connections() {
    let d = start("");
    assert!(raw(&d, b"frobnicate\n").starts_with("refused\nunknown command"));
    let long = vec![b'x'; 300];
    let out = raw(&d, &long);
    assert!(
        out.starts_with("refused\ncommand longer than 256 bytes"),
        "{out}"
    );
    // Four idle connections hold every place; the fifth is refused at once.
    let idle: Vec<UnixStream> = (0..4)
        .map(|_| UnixStream::connect(d.control_socket()).unwrap())
        .collect();
    loop_until(|| {
        let out = raw(&d, b"status\n");
        out.starts_with("refused\ntoo many control connections (at most 4)")
            .then_some(())
    });
    drop(idle);
    loop_until(|| raw(&d, b"status\n").starts_with("ok\n").then_some(()));
}

#[test]
fn a_stale_socket_is_replaced_a_live_one_is_left_alone() {
    let dir = temp_dir();
    let sock = dir.join("c.sock");
    // Left behind by a daemon that was killed: nobody answers on it.
    drop(UnixListener::bind(&sock).unwrap());
    let extra = format!("control {}", sock.display());
    let d = Daemon::start(&extra);
    d.wait_log("stale socket (nobody answers), removed");
    assert!(ok(&run(CONCERTCTL, &["-s", sock.to_str().unwrap(), "status"])).contains("running"));
    // A second daemon on the same socket leaves the first one's alone.
    let d2 = Daemon::start(&extra);
    d2.wait_log("is answered by another process");
    assert!(d2.log_text().contains("no control socket"));
    assert!(
        ok(&run(CONCERTCTL, &["-s", sock.to_str().unwrap(), "status"]))
            .contains(&format!("listening on {}", d.addr))
    );
    // Its directory cannot be made: a warning, and the service runs.
    let file = dir.join("file");
    std::fs::write(&file, "").unwrap();
    let d3 = Daemon::start(&format!("control {}/sub/c.sock", file.display()));
    let w = d3.wait_log("no control socket");
    assert!(w.contains("WARN") && w.contains("cannot make"), "{w}");
    // A clean stop removes the socket.
    d.signal(libc::SIGTERM);
    let mut d = d;
    d.wait_exit();
    assert!(!sock.exists());
    drop((d2, d3));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The simulator on demand from a second process: armed outcomes, a
/// cardholder deciding at the keypad while the register waits, the red
/// key; refused with another terminal.
#[test]
fn the_simulator_takes_orders_from_concertctl() {
    let d = start("");
    assert_eq!(ok(&d.ctl(&["next", "refuse"])), "armed: refuse\n");
    assert!(ok(&d.ctl(&["status"])).contains("next: refuse"));
    // The amount table would approve 12.00: the armed outcome wins, once.
    let a = exchange(d.addr, debit("1200").as_bytes());
    assert_eq!(get(&a, "AF").as_deref(), Some("04"), "{}", text(&a));
    assert_eq!(ok(&d.ctl(&["next"])), "nothing armed\n");
    let a = exchange(d.addr, debit("1200").as_bytes());
    assert_eq!(get(&a, "AE").as_deref(), Some("10"), "{}", text(&a));

    // Manual mode: the register waits until the keypad decides.
    assert!(ok(&d.ctl(&["hold", "on"])).starts_with("hold on"));
    let held = |cb: &'static str| {
        let addr = d.addr;
        std::thread::spawn(move || exchange(addr, debit(cb).as_bytes()))
    };
    let waiting = || {
        loop_until(|| {
            let s = ok(&d.ctl(&["status"]));
            s.contains("waiting for a decision").then_some(s)
        })
    };
    let register = held("1300");
    waiting();
    let said = ok(&d.ctl(&["decide", "abandon"]));
    assert!(said.ends_with(" decided\n"), "{said}");
    let a = register.join().unwrap();
    assert_eq!(get(&a, "AF").as_deref(), Some("06"), "{}", text(&a));
    // Nothing waits now: a decision is refused.
    let o = d.ctl(&["decide", "approve"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("no transaction is waiting"),
        "{}",
        stderr(&o)
    );

    // The red key ends the running transaction abandoned.
    let register = held("1400");
    waiting();
    assert!(ok(&d.ctl(&["press", "red"])).contains("red key pressed"));
    let a = register.join().unwrap();
    assert_eq!(get(&a, "AF").as_deref(), Some("06"), "{}", text(&a));
    assert!(ok(&d.ctl(&["hold", "off"])).starts_with("hold off"));
    let a = exchange(d.addr, debit("1500").as_bytes());
    assert_eq!(get(&a, "AE").as_deref(), Some("10"), "{}", text(&a));
    // Each decision is journaled with its transaction.
    let j = d.journal();
    assert!(j.contains(" simulated "), "{j}");

    // A scripted busy answer counts as one in the status.
    assert!(ok(&d.ctl(&["status"])).contains("; 0 busy answers;"));
    ok(&d.ctl(&["next", "busy"]));
    let a = exchange(d.addr, debit("1600").as_bytes());
    assert_eq!(text(&a), format!("{}AE00201", debit("1600")));
    assert!(ok(&d.ctl(&["status"])).contains("; 1 busy answers;"));

    // Words outside the vocabulary, and another terminal: refused.
    let o = d.ctl(&["next", "frobnicate"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let e = start("terminal exec /bin/true\n");
    let o = e.ctl(&["next", "approve"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("not the simulator"), "{}", stderr(&o));
}

/// A client that trickles its command: a byte each time its read of the
/// answer times out (every `every`), at most `max` bytes, never a newline.
/// Returns what the daemon answered before closing.
fn trickle(mut s: UnixStream, every: std::time::Duration, max: usize) -> String {
    s.set_read_timeout(Some(every)).unwrap();
    let mut out = Vec::new();
    let mut sent = 0;
    loop {
        let mut buf = [0u8; 256];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if sent == max || s.write_all(b"s").is_err() {
                    break;
                }
                sent += 1;
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Issue 21, item 3: four clients sending a byte a second (each read came
/// within the old 5-second timeout, so they held every place for minutes)
/// are closed 5 s after their accept, counted, and concertctl is answered.
#[test]
fn slow_clients_are_closed_at_the_command_deadline_and_concertctl_answers() {
    let d = start("");
    // Connected here, before any other: the daemon accepts them first.
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let s = UnixStream::connect(d.control_socket()).unwrap();
            std::thread::spawn(move || trickle(s, std::time::Duration::from_secs(1), 60))
        })
        .collect();
    // They hold every place: a fifth connection is refused.
    loop_until(|| {
        raw(&d, b"status\n")
            .starts_with("refused\ntoo many control connections")
            .then_some(())
    });
    d.wait_log_n("control: connection closed: no whole command within 5 s", 4);
    let s = ok(&d.ctl(&["status"]));
    assert!(
        s.contains("control connections closed without a whole command within 5 s: 4;"),
        "{s}"
    );
    for c in clients {
        let said = c.join().unwrap();
        assert_eq!(said, "refused\nno whole command within 5 s of connecting\n");
    }
}

/// A FIFO at `path`.
fn mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo(3) with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// Caps a process's address space: a daemon that reads /dev/zero to the
/// end (as before issue 21) then fails its allocation, instead of taking
/// the test machine's memory.
fn cap_memory(pid: u32) {
    let cap = libc::rlimit {
        rlim_cur: 2 << 30,
        rlim_max: 2 << 30,
    };
    // SAFETY: prlimit(2) on our own child, with a local.
    let r = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_AS,
            &cap,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// Issue 21, item 4: a FIFO (nobody writes to it) or /dev/zero as
/// `simulator-script` at reload: refused with the reason, the running
/// configuration kept; status and reload still answer, and SIGTERM stops
/// the daemon.
#[test]
fn a_fifo_or_dev_zero_as_simulator_script_is_refused_at_reload() {
    let mut d = start("");
    cap_memory(d.pid());
    let script = d.dir.join("script");
    std::fs::write(&script, "refuse\n").unwrap();
    let fifo = d.dir.join("fifo");
    mkfifo(&fifo);
    let conf = |script: &std::path::Path| {
        format!(
            "listen {}\n{}control {}\nsimulator-script {}\n",
            d.addr,
            d.base_config(),
            d.control_socket().display(),
            script.display()
        )
    };
    d.write_config(&conf(&script));
    assert!(ok(&d.ctl(&["reload"])).starts_with("reloaded "));
    for (bad, kind) in [
        (fifo.as_path(), "a FIFO"),
        (std::path::Path::new("/dev/zero"), "a character device"),
    ] {
        d.write_config(&conf(bad));
        let o = d.ctl(&["reload"]);
        assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
        let e = stderr(&o);
        assert!(
            e.contains(&format!(
                "simulator-script {}: {kind}, not a regular file: refused",
                bad.display()
            )),
            "{e}"
        );
        assert!(e.contains("the running configuration is kept"), "{e}");
        // Still answering, still on the script it had.
        let s = ok(&d.ctl(&["status"]));
        assert!(
            s.contains(&format!("script: {} line 1 is next", script.display())),
            "{s}"
        );
    }
    // A reload of a good file still works, then SIGTERM stops it.
    d.write_config(&conf(&script));
    assert!(ok(&d.ctl(&["reload"])).starts_with("reloaded "));
    d.write_config(&conf(&fifo));
    assert_eq!(d.ctl(&["reload"]).status.code(), Some(1));
    d.signal(libc::SIGTERM);
    d.wait_log("INFO  stopped");
    assert!(d.wait_exit().success());
}

/// Runs concertd on `conf` in the foreground; its exit status and stderr,
/// or a panic if it has not ended within PATIENCE (it blocked).
fn start_fails(conf: &std::path::Path) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(CONCERTD)
        .args(["-d", "-f"])
        .arg(conf)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    cap_memory(child.id());
    let deadline = std::time::Instant::now() + PATIENCE;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("concertd neither started nor failed within {PATIENCE:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    (status.code(), err)
}

/// Issue 21, item 4, at start: a FIFO or /dev/zero as simulator-script,
/// or as the configuration file itself, is a clear error exit.
#[test]
fn a_fifo_or_dev_zero_as_simulator_script_or_configuration_fails_the_start() {
    let dir = temp_dir();
    let fifo = dir.join("fifo");
    mkfifo(&fifo);
    for (bad, kind) in [
        (fifo.as_path(), "a FIFO"),
        (std::path::Path::new("/dev/zero"), "a character device"),
    ] {
        let conf = dir.join("concertd.conf");
        std::fs::write(
            &conf,
            format!(
                "listen 127.0.0.1:0\ncontrol none\njournal {}\nsimulator-script {}\n",
                dir.join("journal").display(),
                bad.display()
            ),
        )
        .unwrap();
        let (code, err) = start_fails(&conf);
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.contains(&format!(
                "simulator-script {}: {kind}, not a regular file: refused",
                bad.display()
            )),
            "{err}"
        );
        let (code, err) = start_fails(bad);
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.contains(&format!("{}: {kind}, not a regular file", bad.display())),
            "{err}"
        );
    }
    // Larger than 64 KiB: refused too, with the bound.
    let big = dir.join("big");
    std::fs::write(&big, "approve\n".repeat(9000)).unwrap();
    let conf = dir.join("concertd.conf");
    std::fs::write(
        &conf,
        format!(
            "listen 127.0.0.1:0\ncontrol none\njournal {}\nsimulator-script {}\n",
            dir.join("journal").display(),
            big.display()
        ),
    )
    .unwrap();
    let (code, err) = start_fails(&conf);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("larger than 64 KiB: refused"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether one of the daemon's threads is serving a control connection.
fn control_thread(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "control-conn")
        })
}

/// `totals` reads the journal on its connection's thread: a register's
/// debit is answered while a totals over a big journal is still being
/// read, not after it.
#[test]
fn a_debit_is_answered_while_totals_reads_a_big_journal() {
    let mut d = start("journal-keep 1\njournal-size 1G");
    d.signal(libc::SIGTERM);
    d.wait_exit();
    // 30,000 approved debits of one day, through the journal's own writer.
    let path = d.dir.join("journal");
    let _ = std::fs::remove_file(&path);
    {
        let (mut j, _) = concert::terminal::journal::Journal::open(&path, 1 << 30, 1).unwrap();
        let n = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let tick = std::sync::Arc::clone(&n);
        j.set_clock(move || {
            let ms = tick.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!(
                "2025-01-15T{:02}:{:02}:{:02}.{:03}Z",
                ms / 3_600_000 % 24,
                ms / 60_000 % 60,
                ms / 1000 % 60,
                ms % 1000
            )
        });
        let req = debit("1000");
        for id in 1..=30_000u64 {
            use concert::terminal::journal::{Event, Verdict};
            let begun = Event::Begun {
                channel: "tcp".into(),
                peer: "127.0.0.1:1".into(),
                register: 1,
                key: None,
                request: req.clone().into_bytes(),
            };
            j.note(id, &begun).unwrap();
            let ended = Event::Ended {
                verdict: Verdict::Approved,
                answer: format!("{req}AE00210").into_bytes(),
            };
            j.note(id, &ended).unwrap();
            j.note(id, &Event::Delivered).unwrap();
        }
        j.sync().unwrap();
    }
    d.spawn();
    let pid = d.pid();
    let sock = d.control_socket();
    let mut conclusive = 0;
    for _ in 0..5 {
        let sock = sock.clone();
        let totals = std::thread::spawn(move || {
            run(
                CONCERTCTL,
                &["-s", sock.to_str().unwrap(), "totals", "2025-01-15"],
            )
        });
        // Readiness: the connection's thread serves the totals.
        while !control_thread(pid) && !totals.is_finished() {
            std::thread::yield_now();
        }
        let a = exchange(d.addr, debit("2500").as_bytes());
        assert_eq!(get(&a, "AE").as_deref(), Some("10"), "{}", text(&a));
        // Answered before the totals' answer came: the read did not hold
        // the worker. (A totals done first proves nothing: tried again.)
        if !totals.is_finished() {
            conclusive += 1;
        }
        let out = ok(&totals.join().unwrap());
        assert!(
            out.contains("register 01 EUR: debit 30000 = 300000.00 EUR"),
            "{out}"
        );
        if conclusive > 0 {
            break;
        }
    }
    assert!(conclusive > 0, "every totals ended before a debit's answer");
}

/// A script asking one command after another (each once the last one's
/// connection ended) is never turned away as "too many": the place of a
/// connection is free before its client sees it end.
#[test]
fn commands_asked_one_after_another_always_get_a_place() {
    let d = start("");
    for i in 0..300 {
        let reply = raw(&d, b"next\n");
        assert!(reply.starts_with("ok\n"), "ask {i}: {reply}");
    }
}

/// Print and telecollection move no money: `show` says whether each was
/// done, with no amount, and `totals` counts them apart from the sums
/// (issue 24, item 2).
#[test]
fn show_and_totals_describe_print_and_telecollection_by_what_they_are() {
    let d = start("");
    assert_eq!(d.concert(&["pay", "10"]).status.code(), Some(0));
    assert_eq!(d.concert(&["telecollect"]).status.code(), Some(0));
    assert_eq!(d.concert(&["print", "hello"]).status.code(), Some(0));
    loop_until(|| (d.journal().matches(" delivered").count() >= 3).then_some(()));

    let shown = ok(&d.ctl(&["show"]));
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 3, "{shown}");
    assert!(
        lines[0].ends_with("register 01 debit 10.00 EUR: approved; delivered"),
        "{shown}"
    );
    assert!(
        lines[1].ends_with("register 01 telecollection: done; delivered"),
        "{shown}"
    );
    assert!(
        lines[2].ends_with("register 01 print: done; delivered"),
        "{shown}"
    );
    assert!(
        !shown.contains("partial") && !shown.contains(" 000"),
        "{shown}"
    );

    let day = &d.journal()[..10];
    let t = ok(&d.ctl(&["totals", day]));
    let sums: Vec<&str> = t.lines().filter(|l| l.starts_with("register ")).collect();
    assert_eq!(sums, ["register 01 EUR: debit 1 = 10.00 EUR"], "{t}");
    assert!(
        t.contains("other operations, no money moved: print 1 done; telecollection 1 done\n"),
        "{t}"
    );
    assert!(!t.contains("not counted above"), "{t}");
    // The log says it as `show` does.
    let log = d.log_text();
    assert!(log.contains(": telecollection done in "), "{log}");
    assert!(log.contains(": print done in "), "{log}");
    assert!(!log.contains("telecollection approved"), "{log}");
}

/// An unknown outcome has one word, "unknown", in the log, the journal,
/// `show` and `status`, with the fact of what its register got: AF07, or
/// nothing (issue 24, item 10).
#[test]
fn an_unknown_outcome_says_whether_the_register_got_af07_or_nothing() {
    let mut d = start("");
    // Answered AF07, said as such.
    assert!(ok(&d.ctl(&["next", "not-ended"])).contains("not-ended"));
    let a = exchange(d.addr, debit("1100").as_bytes());
    assert_eq!(get(&a, "AF").as_deref(), Some("07"));
    // The answer lost: the register gets nothing.
    assert!(ok(&d.ctl(&["next", "unknown"])).contains("unknown"));
    assert!(exchange(d.addr, debit("1200").as_bytes()).is_empty());
    // The journal is written first, then the log: wait for the log's line.
    loop_until(|| {
        d.log_text()
            .contains(": the register got no answer: AF07 not delivered to ")
            .then_some(())
    });

    let j = d.journal();
    assert_eq!(j.matches(" ended unknown ").count(), 2, "{j}");
    let log = d.log_text();
    assert_eq!(log.matches(": debit unknown in ").count(), 2, "{log}");
    assert!(
        log.contains(": outcome unknown: the register was answered AF07"),
        "{log}"
    );
    assert!(
        log.contains(": the register got no answer: AF07 not delivered to 127.0.0.1:"),
        "{log}"
    );
    assert!(!log.contains("declined AF07"), "{log}");

    let shown = ok(&d.ctl(&["show"]));
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 2, "{shown}");
    assert!(
        lines[0].ends_with("debit 11.00 EUR: unknown; the register was answered AF07"),
        "{shown}"
    );
    assert!(
        lines[1]
            .ends_with("debit 12.00 EUR: unknown; the register got no answer: AF07 undelivered"),
        "{shown}"
    );
    let s = ok(&d.ctl(&["status"]));
    assert!(s.contains("0 approved, 0 declined, 2 unknown"), "{s}");
    assert!(
        s.contains("debit 12.00 EUR unknown (the register got no answer: AF07 undelivered)"),
        "{s}"
    );

    // Begun and never ended (concertd stopped): closed unknown at start,
    // and the register got nothing.
    d.signal(libc::SIGTERM);
    d.wait_exit();
    let t = concert::terminal::journal::stamp();
    let mut journal = d.journal();
    journal += &line(
        &t,
        9,
        &format!(
            "begun tcp 127.0.0.1:1 03 {}",
            debit("1300").replace("CA00201", "CA00203")
        ),
    );
    std::fs::write(d.dir.join("journal"), journal).unwrap();
    d.spawn();
    let log = d.wait_log("tx 9: begun");
    assert!(
        log.contains("outcome unknown; the register got no answer"),
        "{log}"
    );
    // (Its id is older than the others: it is listed first.)
    let shown = ok(&d.ctl(&["show"]));
    assert!(
        shown.contains(
            "register 03 debit 13.00 EUR: unknown; the register got no answer: concertd \
             stopped before the transaction ended"
        ),
        "{shown}"
    );
    let s = ok(&d.ctl(&["status"]));
    assert!(
        s.contains("register 03: tx 9 debit 13.00 EUR unknown (the register got no answer: concertd stopped"),
        "{s}"
    );
}
