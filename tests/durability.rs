//! Never lose a result: journal, recovery, status, immediate answers, safe
//! retries and graceful stop, through the real daemon.

use crate::util::*;
use std::io::Write;
use std::sync::mpsc;

fn debit(ca: &str, amount: &str, extra: &str) -> String {
    format!(
        "CZ0040320CJ012247300123456CA002{ca}CB{:03}{amount}CD0010CE003978{extra}",
        amount.len()
    )
}

fn status(ca: &str) -> String {
    format!("CZ0040320CJ012247300123456CA002{ca}CD001T")
}

/// The answer journaled for the transaction whose request contains `pat`.
fn journaled_answer(journal: &str, pat: &str) -> String {
    let id = journal
        .lines()
        .find(|l| l.contains(" begun ") && l.contains(pat))
        .unwrap_or_else(|| panic!("no begun record with {pat}:\n{journal}"))
        .split(' ')
        .nth(1)
        .unwrap()
        .to_string();
    let ended = journal
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(&id) && l.contains(" ended "))
        .unwrap_or_else(|| panic!("tx {id} not ended:\n{journal}"));
    ended.splitn(5, ' ').nth(4).unwrap().to_string()
}

#[test]
fn killed_mid_transaction_is_unknown_after_restart() {
    let gate = Gate::new();
    let mut d = Daemon::start(&gate.terminal());
    let addr = d.addr;
    let req = debit("01", "4200", "");
    let r2 = req.clone();
    let t = std::thread::spawn(move || {
        let mut s = connect(addr);
        s.write_all(r2.as_bytes()).unwrap();
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut v);
    });
    d.wait_log("debit 42.00 EUR register 01 from tcp");
    d.signal(libc::SIGKILL);
    d.wait_exit();
    t.join().unwrap();
    d.spawn();
    d.wait_log("never ended: outcome unknown; the register got no answer");
    let a = exchange(d.addr, status("01").as_bytes());
    assert_eq!(text(&a), format!("{req}AE00201AF00207"));
    let j = d.journal();
    assert!(j.contains(" begun tcp 127.0.0.1:"), "{j}");
    assert!(
        j.contains(&format!(" ended unknown-recovered {req}AE00201AF00207")),
        "{j}"
    );
}

#[test]
fn client_gone_then_status_returns_the_answer() {
    let gate = Gate::new();
    let d = Daemon::start(&gate.terminal());
    let req = debit("01", "1500", "");
    let mut s = connect(d.addr);
    s.write_all(req.as_bytes()).unwrap();
    d.wait_log("debit 15.00 EUR register 01 from tcp");
    drop(s);
    gate.release();
    d.wait_log("answer not delivered to");
    let a = exchange(d.addr, status("01").as_bytes());
    assert!(
        text(&a).starts_with(&format!("{req}AE00210")),
        "{}",
        text(&a)
    );
    let j = d.journal();
    assert_eq!(text(&a), journaled_answer(&j, &req));
    assert!(j.contains(" undelivered "), "{j}");
}

#[test]
fn delivered_answers_are_journaled() {
    let d = Daemon::start("");
    let req = debit("01", "700", "");
    let a = exchange(d.addr, req.as_bytes());
    d.wait_log("debit approved");
    // The delivery record follows the answer; wait until it is there.
    let j = loop_until(|| {
        let j = d.journal();
        j.contains(" delivered").then_some(j)
    });
    assert_eq!(journaled_answer(&j, &req), text(&a));
    let mode = std::fs::metadata(d.dir.join("journal")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);
}

#[test]
fn immediate_answer_then_status() {
    let gate = Gate::new();
    let d = Daemon::start(&gate.terminal());
    let req = debit("01", "900", "BA0011");
    let a = exchange(d.addr, req.as_bytes());
    assert_eq!(text(&a), format!("{}AE00210", debit("01", "900", "")));
    let running = exchange(d.addr, status("01").as_bytes());
    assert_eq!(text(&running), format!("{}AE00201AF00207", status("01")));
    gate.release();
    d.wait_log("debit approved");
    let done = exchange(d.addr, status("01").as_bytes());
    let head = debit("01", "900", "");
    assert!(
        text(&done).starts_with(&format!("{head}AE00210AC")),
        "{}",
        text(&done)
    );
    // Nothing yet for another register.
    assert_eq!(
        text(&exchange(d.addr, status("02").as_bytes())),
        format!("{}AE00201AF00200", status("02"))
    );
}

#[test]
fn registers_keep_their_own_last_transaction_across_a_restart() {
    let mut d = Daemon::start("");
    let r1 = debit("01", "1111", "");
    let r2 = debit("02", "2222", "");
    let a1 = exchange(d.addr, r1.as_bytes());
    let a2 = exchange(d.addr, r2.as_bytes());
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit().success());
    d.spawn();
    assert_eq!(exchange(d.addr, status("01").as_bytes()), a1);
    assert_eq!(exchange(d.addr, status("02").as_bytes()), a2);
    let dup = exchange(d.addr, b"CZ0040320CJ012247300123456CA00202CD0013");
    let (_, doc) = concert::wire::ticket::decode_zt(get(&dup, "ZT").unwrap().as_bytes()).unwrap();
    let doc = String::from_utf8_lossy(&doc);
    assert!(
        doc.contains("22,22 EUR") && doc.contains("CAISSE 02"),
        "{doc}"
    );
    // Register 02 cannot cancel register 01's debit; 01 can.
    let c2 = "CZ0040320CA00202CB0041111CD0012CE003978";
    assert!(text(&exchange(d.addr, c2.as_bytes())).ends_with("AE00201AF00204"));
    let c1 = "CZ0040320CA00201CB0041111CD0012CE003978";
    assert!(text(&exchange(d.addr, c1.as_bytes())).contains("AE00210"));
}

#[test]
fn safe_retry_replays_the_stored_answer() {
    let d = Daemon::start("retry-window 24h");
    let req = debit("01", "3300", "CF008ORDER-42");
    let a = exchange(d.addr, req.as_bytes());
    let b = exchange(d.addr, req.as_bytes());
    assert_eq!(a, b);
    d.wait_log("its answer replayed");
    let j = d.journal();
    assert_eq!(
        j.lines()
            .filter(|l| l.contains(" begun ") && l.contains("ORDER-42"))
            .count(),
        1,
        "{j}"
    );
    assert!(j.contains(" replayed tcp 127.0.0.1:"), "{j}");
    // Another private reference is another transaction.
    let other = exchange(d.addr, debit("01", "3300", "CF008ORDER-43").as_bytes());
    assert_ne!(get(&other, "AC"), get(&a, "AC"));
    // Without CF, never replayed.
    let plain = debit("01", "3300", "");
    exchange(d.addr, plain.as_bytes());
    exchange(d.addr, plain.as_bytes());
    assert_eq!(
        d.journal()
            .lines()
            .filter(|l| l.contains(" begun ") && l.ends_with(&plain))
            .count(),
        2
    );
}

#[test]
fn retry_window_zero_turns_replays_off() {
    let d = Daemon::start("retry-window 0");
    let req = debit("01", "3300", "CF008ORDER-42");
    let a = exchange(d.addr, req.as_bytes());
    let b = exchange(d.addr, req.as_bytes());
    assert_ne!(get(&a, "AC"), get(&b, "AC"));
}

#[test]
fn sigterm_lets_the_running_transaction_finish() {
    let gate = Gate::new();
    let mut d = Daemon::start(&gate.terminal());
    let (tx, rx) = mpsc::channel();
    let addr = d.addr;
    let req = debit("01", "1234", "");
    let r2 = req.clone();
    std::thread::spawn(move || tx.send(exchange(addr, r2.as_bytes())).unwrap());
    d.wait_log("debit 12.34 EUR register 01 from tcp");
    d.signal(libc::SIGTERM);
    d.wait_log("stopping: new transactions refused");
    // New transactions are refused while stopping.
    let late = debit("02", "100", "");
    assert_eq!(
        text(&exchange(d.addr, late.as_bytes())),
        format!("{late}AE00201")
    );
    gate.release();
    let a = rx.recv().unwrap();
    assert!(
        text(&a).starts_with(&format!("{req}AE00210")),
        "{}",
        text(&a)
    );
    assert_eq!(d.wait_exit().code(), Some(0));
    let j = d.journal();
    assert_eq!(journaled_answer(&j, &req), text(&a));
    assert!(j.lines().last().unwrap().ends_with(" delivered"), "{j}");
}

#[test]
fn torn_last_line_is_reported_and_skipped() {
    let mut d = Daemon::start("");
    let req = debit("01", "500", "");
    let a = exchange(d.addr, req.as_bytes());
    d.signal(libc::SIGTERM);
    d.wait_exit();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(d.dir.join("journal"))
        .unwrap();
    f.write_all(b"2026-11-26T16:00:00.000Z 9999999999999 begun tcp 127.0.0.1:1 01 CZ00403")
        .unwrap();
    drop(f);
    d.spawn();
    d.wait_log("torn last line skipped");
    assert_eq!(exchange(d.addr, status("01").as_bytes()), a);
    assert!(d.journal().ends_with('\n'));
}

#[test]
fn rotation_keeps_every_registers_last_transaction() {
    let mut d = Daemon::start("journal-size 4K\njournal-keep 1");
    let first = exchange(d.addr, debit("02", "202", "").as_bytes());
    for i in 0..40 {
        exchange(d.addr, debit("01", &format!("{}", 1000 + i), "").as_bytes());
    }
    let last = exchange(d.addr, debit("01", "999", "").as_bytes());
    d.wait_log("rotated");
    assert!(d.dir.join("journal.1").exists());
    assert!(!d.dir.join("journal.2").exists());
    d.signal(libc::SIGTERM);
    d.wait_exit();
    d.spawn();
    assert_eq!(exchange(d.addr, status("02").as_bytes()), first);
    assert_eq!(exchange(d.addr, status("01").as_bytes()), last);
}

/// A `terminal exec` program that approves once the test writes a line to
/// its FIFO: the transaction stays open until then. The daemon, its
/// script's directory and the FIFO.
fn held_daemon() -> (Daemon, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir();
    let fifo = dir.join("go");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(2) with a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let script = dir.join("held.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nread go < '{}'\necho AE=10\n", fifo.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::start(&format!("terminal exec {}", script.display()));
    (d, fifo)
}

/// The journal's size once it holds `n` begun records.
fn size_after_begun(d: &Daemon, n: usize) -> u64 {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if d.journal().matches(" begun ").count() >= n {
            return std::fs::metadata(d.dir.join("journal")).unwrap().len();
        }
        assert!(std::time::Instant::now() < deadline, "no begun record");
        std::thread::yield_now();
    }
}

#[test]
fn no_answer_goes_out_when_the_outcome_cannot_be_journaled() {
    let (d, fifo) = held_daemon();
    let req = debit("01", "800", "");
    let (addr, sent) = (d.addr, req.clone());
    let answer = std::thread::spawn(move || exchange(addr, sent.as_bytes()));
    // The begun record is on disk and the program waits: not one byte more
    // fits, so the ended record fails as on a full disk.
    let size = size_after_begun(&d, 1);
    let old = set_fsize(d.pid(), size);
    std::fs::write(&fifo, "go\n").unwrap();
    let a = answer.join().unwrap();
    assert!(a.is_empty(), "{}", text(&a));
    d.wait_log("the outcome is not on disk, so no answer is sent");
    assert_eq!(
        std::fs::metadata(d.dir.join("journal")).unwrap().len(),
        size
    );
    restore_fsize(d.pid(), old);
    // The outcome is still known to a status request.
    let s = exchange(d.addr, status("01").as_bytes());
    assert!(
        text(&s).starts_with(&format!("{req}AE00210")),
        "{}",
        text(&s)
    );
}

#[test]
fn journal_write_failure_refuses_transactions() {
    let d = Daemon::start("");
    // Not one byte more fits: the begun record fails as on a full disk.
    let size = std::fs::metadata(d.dir.join("journal")).unwrap().len();
    let _old = set_fsize(d.pid(), size);
    let req = debit("01", "800", "");
    assert_eq!(
        text(&exchange(d.addr, req.as_bytes())),
        format!("{req}AE00201AF00200")
    );
    d.wait_log("transactions are not run unrecorded");
    assert_eq!(
        std::fs::metadata(d.dir.join("journal")).unwrap().len(),
        size
    );
    // Identification still works.
    let ping = "CZ0040320CA00201CD001I";
    assert_eq!(
        text(&exchange(d.addr, ping.as_bytes())),
        format!("{ping}AE00210")
    );
}

#[test]
fn unwritable_journal_is_a_startup_error() {
    let dir = temp_dir();
    let conf = dir.join("c.conf");
    std::fs::write(
        &conf,
        "listen 127.0.0.1:0\njournal /nonexistent/dir/journal\n",
    )
    .unwrap();
    let o = run(CONCERTD, &["-d", "-f", conf.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    // Which directory, and how to make it.
    assert_eq!(
        stderr(&o).trim_end(),
        "concertd: journal directory /nonexistent/dir does not exist: make it \
         (install -d -m 0750 /nonexistent/dir), or name another journal"
    );
    std::fs::write(&conf, "listen 127.0.0.1:0\njournal /dev/null\n").unwrap();
    let o = run(CONCERTD, &["-d", "-f", conf.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("journal /dev/null: not a regular file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn client_status_and_immediate_payment() {
    let d = Daemon::start("simulator-delay 1s");
    let o = d.concert(&["status"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("no transaction known for register 01 (AF 00)"),
        "{}",
        stdout(&o)
    );
    let o = d.concert(&["--immediate", "-P", "order-7", "pay", "7.00"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("accepted, waiting for the outcome\napproved: debit 7.00 EUR"),
        "{out}"
    );
    let o = d.concert(&["status"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stdout(&o).contains("approved: debit 7.00 EUR, register 01"),
        "{}",
        stdout(&o)
    );
    let o = d.concert(&["-i", "pay", "7.51"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("refused (AF 04)"), "{}", stdout(&o));
}

#[test]
fn an_undelivered_answer_says_how_to_fetch_it_for_its_channel() {
    use concert::wire::framing::{wrap, Wrapping};
    let gate = Gate::new();
    let d = Daemon::start(&gate.terminal());
    // Concert V2 over TCP: the client resets before reading its answer.
    let mut s = connect(d.addr);
    s.write_all(&wrap(b"0100001000010978ORDER00042", Wrapping::Stx))
        .unwrap();
    d.wait_log("debit 10.00 EUR");
    drop(s);
    gate.release();
    let line = d.wait_log("answer not delivered to");
    assert!(
        line.ends_with(
            "; Concert V2 has no status request: check its outcome in the journal \
             (a V3 status request for register 01 also returns it)"
        ),
        "{line}"
    );
    // V3: a status request is the way.
    let mut s = connect(d.addr);
    s.write_all(debit("01", "1100", "").as_bytes()).unwrap();
    d.wait_log("debit 11.00 EUR");
    drop(s);
    gate.release();
    let line = d.wait_log_n("answer not delivered to", 2);
    assert!(
        line.ends_with("; a status request (CD=T) returns it"),
        "{line}"
    );
}

#[test]
fn rotations_follow_new_records_not_the_carried_ones() {
    // Every transaction stays in the retry window, so all would be carried
    // over: before, once they outgrew journal-size every record rotated.
    let mut d = Daemon::start("journal-size 4K\njournal-keep 1\nretry-window 24h");
    let n = 60;
    let mut last = Vec::new();
    for i in 0..n {
        let req = debit(
            "01",
            &format!("{}", 1000 + 100 * i),
            &format!("CF008order{i:03}"),
        );
        last = exchange(d.addr, req.as_bytes());
        assert!(text(&last).contains("AE00210"), "{}", text(&last));
    }
    let rotations = d.log_text().matches(": rotated,").count();
    // About 500 bytes of new records per transaction: 8 a generation.
    assert!(
        (1..=n / 4).contains(&rotations),
        "{rotations} rotations for {n} transactions:\n{}",
        d.log_text()
    );
    d.wait_log("older ones of the retry window are not (past half of journal-size)");
    // A generation holds at most half of journal-size carried over (one
    // register: its last is within it), then journal-size of new records.
    for f in ["journal", "journal.1"] {
        let len = std::fs::metadata(d.dir.join(f)).unwrap().len();
        assert!(len < 2048 + 4096 + 1024, "{f}: {len} bytes");
    }
    // The newest retries are still replayed after a restart.
    d.signal(libc::SIGTERM);
    d.wait_exit();
    d.spawn();
    let req = debit(
        "01",
        &format!("{}", 1000 + 100 * (n - 1)),
        &format!("CF008order{:03}", n - 1),
    );
    assert_eq!(exchange(d.addr, req.as_bytes()), last);
    d.wait_log("its answer replayed");
}
