//! The journal through the real daemon: appends that fail part-way, ids
//! near the top of `u64`, fields with spaces, corrupt values read back.

use crate::util::*;
use concert::terminal::journal::{format_line, parse_line, Event};

fn debit(ca: &str, amount: &str) -> String {
    format!(
        "CZ0040320CJ012247300123456CA002{ca}CB{:03}{amount}CD0010CE003978",
        amount.len()
    )
}

fn status(ca: &str) -> String {
    format!("CZ0040320CJ012247300123456CA002{ca}CD001T")
}

/// Every line of the journal is a whole journal line; the events.
fn events(j: &str) -> Vec<(u64, Event)> {
    assert!(j.is_empty() || j.ends_with('\n'), "{j:?}");
    j.lines()
        .map(|l| {
            let (_, id, ev) =
                parse_line(l).unwrap_or_else(|| panic!("unreadable line {l:?} in\n{j}"));
            (id, ev)
        })
        .collect()
}

#[test]
fn an_append_that_fails_part_way_is_cut_off_and_the_daemon_lives_on() {
    let mut d = Daemon::start("");
    let path = d.dir.join("journal");
    exchange(d.addr, debit("01", "100").as_bytes());
    let j = loop_until(|| {
        let j = d.journal();
        j.contains(" delivered").then_some(j)
    });
    let size = std::fs::metadata(&path).unwrap().len();
    let last_id: u64 = events(&j).last().unwrap().0;
    // Room for the next debit's begun record and a few bytes of its ended
    // record: that one is written in part, then fails with EFBIG.
    let req = debit("01", "4242");
    let mut s = connect(d.addr);
    let begun = format_line(
        "2026-11-26T16:07:28.800Z",
        last_id + 1,
        &Event::Begun {
            channel: "tcp".into(),
            peer: s.local_addr().unwrap().to_string(),
            register: 1,
            key: None,
            request: req.clone().into_bytes(),
        },
    );
    let room = begun.len() as u64 + 1 + 8;
    let old = set_fsize(d.pid(), size + room);
    std::io::Write::write_all(&mut s, req.as_bytes()).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let a = read_all(&mut s);
    assert!(
        a.is_empty(),
        "answer sent for an outcome not on disk: {}",
        text(&a)
    );
    let err = d.wait_log("the outcome is not on disk, so no answer is sent");
    assert!(err.contains("cut back to the last whole line"), "{err}");
    // The partial ended record is gone: the file ends with the begun one.
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        size + begun.len() as u64 + 1
    );
    restore_fsize(d.pid(), old);
    // Alive (SIGXFSZ ignored), and the next records start whole lines.
    let req2 = debit("01", "777");
    let a2 = exchange(d.addr, req2.as_bytes());
    assert!(
        text(&a2).starts_with(&format!("{req2}AE00210")),
        "{}",
        text(&a2)
    );
    d.wait_log("debit approved");
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit().success());
    d.spawn();
    assert_eq!(text(&exchange(d.addr, status("01").as_bytes())), text(&a2));
    let evs = events(&d.journal());
    let begun_ids: Vec<u64> = evs
        .iter()
        .filter(|(_, e)| matches!(e, Event::Begun { .. }))
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(begun_ids.len(), 3, "{evs:?}");
    // The debit whose outcome could not be written is unknown.
    assert!(evs
        .iter()
        .any(|(id, e)| *id == begun_ids[1] && matches!(e, Event::Recovered { .. })));
    assert!(!d.log_text().contains("unreadable"), "{}", d.log_text());
}

/// Stops the daemon, puts `lines` in its journal, starts it again.
fn restart_on(d: &mut Daemon, lines: &[u8]) {
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit().success());
    std::fs::write(d.dir.join("journal"), lines).unwrap();
    d.spawn();
}

/// The id `concertd` logged for the transaction of this amount.
fn logged_id(d: &Daemon, label: &str) -> u64 {
    let l = d.wait_log(&format!(": debit {label} EUR register"));
    let t = l.split("tx ").nth(1).unwrap();
    t.split(':').next().unwrap().parse().unwrap()
}

#[test]
fn ids_near_the_top_of_u64_neither_wrap_nor_collide() {
    let mut d = Daemon::start("");
    let (r1, r2) = (debit("01", "5555"), debit("02", "6666"));
    let crafted = format!(
        "2026-01-01T00:00:00.000Z {max} begun tcp 127.0.0.1:1 01 {r1}\n\
         2026-01-01T00:00:00.001Z {max} ended approved {r1}AE00210AC006999999\n\
         2026-01-01T00:00:00.002Z {max1} begun tcp 127.0.0.1:1 02 {r2}\n\
         2026-01-01T00:00:00.003Z {max1} ended approved {r2}AE00210AC006888888\n",
        max = u64::MAX,
        max1 = u64::MAX - 1,
    );
    restart_on(&mut d, crafted.as_bytes());
    let a1 = exchange(d.addr, debit("01", "1111").as_bytes());
    let a2 = exchange(d.addr, debit("02", "2222").as_bytes());
    assert!(text(&a1).contains("AE00210"), "{}", text(&a1));
    assert!(text(&a2).contains("AE00210"), "{}", text(&a2));
    let (i1, i2) = (logged_id(&d, "11.11"), logged_id(&d, "22.22"));
    assert!(i1 < i2 && i2 < u64::MAX - 1, "{i1} {i2}");
    let w = d.wait_log("transaction ids beyond");
    assert!(
        w.contains(": 2 transaction ids beyond") && w.contains(&u64::MAX.to_string()),
        "{w}"
    );
    for _ in 0..2 {
        assert_eq!(exchange(d.addr, status("01").as_bytes()), a1);
        assert_eq!(exchange(d.addr, status("02").as_bytes()), a2);
        // Also after a restart: the crafted ids say nothing of age.
        d.signal(libc::SIGTERM);
        assert!(d.wait_exit().success());
        d.spawn();
    }
}

#[test]
fn a_journaled_request_with_a_corrupt_currency_is_reported_and_skipped() {
    let mut d = Daemon::start("");
    let bad = "CZ0040320CJ012247300123456CA00201CB0041000CD0010CE0039-8";
    let good = debit("02", "300");
    let lines = format!(
        "2026-01-01T00:00:00.000Z 1000 begun tcp 127.0.0.1:1 01 {bad}\n\
         2026-01-01T00:00:00.001Z 1000 ended approved {bad}AE00210\n\
         2026-01-01T00:00:00.002Z 1001 begun tcp 127.0.0.1:1 02 {good}\n\
         2026-01-01T00:00:00.003Z 1001 ended approved {good}AE00210AC006123456\n\
         2026-01-01T00:00:00.004Z 1002 begun tcp 127.0.0.1:1 03 {r3}\n\
         2026-01-01T00:00:00.005Z 1002 ended approved CZ0040320CA00203AF00207\n",
        r3 = debit("03", "300"),
    );
    let mut bytes = lines.into_bytes();
    bytes.extend_from_slice(b"2026-01-01T00:00:00.006Z 1003 delivered \xff\n");
    restart_on(&mut d, &bytes);
    let w = d.wait_log("tx 1000 (begun");
    assert!(
        w.contains("journaled request not readable") && w.contains("CE must be 3 digits"),
        "{w}"
    );
    let w = d.wait_log("tx 1002 (begun");
    assert!(w.contains("journaled answer not valid"), "{w}");
    d.wait_log("1 unreadable lines skipped");
    assert_eq!(
        text(&exchange(d.addr, status("01").as_bytes())),
        format!("{}AE00201AF00200", status("01"))
    );
    assert_eq!(
        text(&exchange(d.addr, status("02").as_bytes())),
        format!("{good}AE00210AC006123456")
    );
}

const TIMERS: &str = "serial-ack-timeout 400ms\nserial-frame-timeout 400ms\n\
                      serial-eot-timeout 200ms\nserial-retry-pause 50ms\nserial-retry 100ms";

#[test]
fn a_serial_path_with_a_space_survives_a_restart() {
    let dir = temp_dir();
    let link = dir.join("usb-Ingenico A");
    let mut reg = crate::serial::pty(&link);
    let mut d = Daemon::start(&format!("serial \"{}\"\n{TIMERS}", link.display()));
    d.wait_log(": open, 9600 baud 7E1");
    let req = debit("01", "1234");
    assert_eq!(reg.request(req.as_bytes()), concert::wire::framing::ACK);
    let a = reg.answer();
    assert!(
        text(&a).starts_with(&format!("{req}AE00210")),
        "{}",
        text(&a)
    );
    let j = loop_until(|| {
        let j = d.journal();
        j.contains(" delivered").then_some(j)
    });
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit().success());
    d.spawn();
    assert_eq!(text(&exchange(d.addr, status("01").as_bytes())), text(&a));
    let escaped = format!(" begun serial {} 01 ", link.display()).replace("o A", "o%20A");
    assert!(j.contains(&escaped), "{j}");
    assert!(!d.log_text().contains("unreadable"), "{}", d.log_text());
    drop(d);
    drop(reg);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An answer journaled by an earlier version, in its tag order (AA before
/// AL, AB and AI), is given again byte for byte: a register comparing
/// the status answer with the one it got must see the same bytes.
#[test]
fn a_stored_answer_keeps_its_bytes_in_the_old_tag_order() {
    let mut d = Daemon::start("");
    let r = debit("01", "4242");
    let old = format!(
        "{r}AE00210AC006934632AA016513100######4242AL0011AB0042904\
         AI014A0000000041010CC00300BCI0012"
    );
    let crafted = format!(
        "2026-01-01T00:00:00.000Z 1000 begun tcp 127.0.0.1:1 01 {r}\n\
         2026-01-01T00:00:00.001Z 1000 ended approved {old}\n\
         2026-01-01T00:00:00.002Z 1000 delivered\n"
    );
    restart_on(&mut d, crafted.as_bytes());
    assert_eq!(text(&exchange(d.addr, status("01").as_bytes())), old);
    // A new payment is answered in today's order.
    let a = text(&exchange(d.addr, debit("01", "100").as_bytes()));
    let (al, aa) = (a.find("AL0011").unwrap(), a.find("AA016").unwrap());
    assert!(al < aa, "{a}");
}

/// A second concertd on the journal of a running one, in the foreground,
/// on `listen`: its output.
fn second_on(journal: &std::path::Path, listen: &str) -> std::process::Output {
    let dir = temp_dir();
    let conf = dir.join("concertd.conf");
    std::fs::write(
        &conf,
        format!(
            "listen {listen}\nsimulator-delay 0\njournal {}\n",
            journal.display()
        ),
    )
    .unwrap();
    let _g = SPAWN.lock().unwrap_or_else(|p| p.into_inner());
    std::process::Command::new(CONCERTD)
        .arg("-d")
        .arg("-f")
        .arg(&conf)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn one_journal_one_daemon_through_rotation_and_reload() {
    let mut d = Daemon::start("journal-size 4K\njournal-keep 1\nconfig-watch 0");
    let journal = d.dir.join("journal");
    let refused = |d: &Daemon| {
        // Once the last answer's delivery is written: then the daemon
        // writes nothing until the next request.
        let before = loop_until(|| {
            let j = d.journal();
            (j.is_empty() || j.ends_with(" delivered\n")).then_some(j)
        });
        // Its own address too: the lock is taken before binding, so the
        // message names the journal, not a busy port.
        let o = second_on(&journal, &d.addr.to_string());
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        // After it waited for the lock, in vain.
        assert_eq!(
            stderr(&o).trim_end().lines().last().unwrap_or(""),
            format!(
                "concertd: journal {} in use by pid {}",
                journal.display(),
                d.pid()
            )
        );
        // Nothing written by the refused one.
        assert!(d.journal() == before, "the journal changed");
    };
    refused(&d);
    // Rotation moves the journal to journal.1 and puts a new file in its
    // place: the lock, on journal.lock, still holds.
    let mut n = 0;
    while !d.log_text().contains(": rotated,") {
        exchange(d.addr, debit("01", &format!("{}", 1000 + n)).as_bytes());
        n += 1;
        assert!(n < 200, "no rotation:\n{}", d.log_text());
    }
    assert!(d.dir.join("journal.1").exists());
    refused(&d);
    d.signal(libc::SIGHUP);
    d.wait_log("reloaded: listen ");
    refused(&d);
    // Gone with its holder: the next daemon starts on the same journal.
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit().success());
    d.spawn();
    refused(&d);
}

/// A second concertd on `journal`, its standard error read line by line
/// and given to `seen` as it comes; killed when dropped.
struct Second(std::process::Child);

impl Drop for Second {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Second {
    fn start(journal: &std::path::Path) -> (Second, std::io::Lines<impl std::io::BufRead>) {
        let dir = temp_dir();
        let conf = dir.join("concertd.conf");
        std::fs::write(
            &conf,
            format!(
                "listen 127.0.0.1:0\nsimulator-delay 0\ncontrol none\njournal {}\n",
                journal.display()
            ),
        )
        .unwrap();
        let mut child = {
            let _g = SPAWN.lock().unwrap_or_else(|p| p.into_inner());
            std::process::Command::new(CONCERTD)
                .arg("-d")
                .arg("-f")
                .arg(&conf)
                .env_remove("RUST_LOG")
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let err = child.stderr.take().unwrap();
        (
            Second(child),
            std::io::BufRead::lines(std::io::BufReader::new(err)),
        )
    }
}

/// The lines up to the first that holds `pat` (None: ended without it).
fn until(lines: &mut impl Iterator<Item = std::io::Result<String>>, pat: &str) -> Option<String> {
    let mut seen = String::new();
    for l in lines.map_while(Result::ok) {
        seen.push_str(&l);
        seen.push('\n');
        if l.contains(pat) {
            return Some(seen);
        }
    }
    eprintln!("no {pat:?} in:\n{seen}");
    None
}

#[test]
fn removing_the_lock_file_lets_no_second_daemon_on_the_journal() {
    let d = Daemon::start("");
    let journal = d.dir.join("journal");
    let ping = "CZ0040320CA00201CD001I";
    assert_eq!(
        text(&exchange(d.addr, ping.as_bytes())),
        format!("{ping}AE00210")
    );
    let before = loop_until(|| {
        let j = d.journal();
        (j.is_empty() || j.ends_with(" delivered\n")).then_some(j)
    });
    // What a careless operator does to a daemon that "does not start".
    std::fs::remove_file(d.dir.join("journal.lock")).unwrap();
    let (mut second, mut lines) = Second::start(&journal);
    let said = until(&mut lines, "ready").map(|_| "started");
    assert_eq!(said, None, "a second daemon runs on {}", journal.display());
    let status = second.0.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    assert_eq!(d.journal(), before, "the journal changed");
    assert_eq!(
        text(&exchange(d.addr, ping.as_bytes())),
        format!("{ping}AE00210")
    );
}

#[test]
fn a_journal_lock_let_go_within_two_seconds_is_waited_for() {
    // A daemon killed while it was starting a payment program leaves a
    // child between fork and exec that holds the lock for a moment; a
    // restart at once must not fail on it. Here the holder is a running
    // daemon, killed once the second one says it waits.
    let mut first = Daemon::start("");
    let journal = first.dir.join("journal");
    let (_second, mut lines) = Second::start(&journal);
    let waiting = until(&mut lines, "waiting");
    assert!(waiting.is_some(), "the second daemon did not wait");
    first.signal(libc::SIGKILL);
    first.wait_exit();
    let seen = until(&mut lines, "ready");
    assert!(seen.is_some(), "the second daemon did not start");
    assert!(
        !seen.unwrap_or_default().contains("in use by"),
        "refused before the lock was let go"
    );
}

#[test]
fn the_detached_daemon_keeps_the_journal_lock_after_the_fork() {
    let dir = temp_dir();
    let dd = Detached::new(&dir);
    let o = dd.start(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let reap = Reap::from_pid_file(&dd.pidfile);
    let addr = listening_in(&dd.log);
    // The parent that took the lock has exited: the daemon holds it, and
    // is the pid named. (On the daemon's address: without the lock this
    // one would fail too, but on the port.)
    let o = second_on(&dir.join("journal"), &addr.to_string());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "journal {} in use by pid {}",
            dir.join("journal").display(),
            reap.0
        )),
        "{}",
        stderr(&o)
    );
}

/// After rotations that carried everything, a restart reads the journal
/// file alone: older generations may hold anything, they are not read;
/// each register's last outcome is known again, and new ids go on past
/// the old ones.
#[test]
fn a_restart_after_a_whole_rotation_reads_the_journal_alone() {
    let mut d = Daemon::start("journal-size 4K\njournal-keep 2");
    let mut n = 0;
    // Refused (amounts ending in 51): no debit for the refunds index,
    // whose records a 4K journal could not carry whole.
    while d.log_text().matches(": rotated,").count() < 2 {
        let amount = format!("{}51", 10 + n);
        let a = exchange(
            d.addr,
            debit(&format!("{:02}", n % 3 + 1), &amount).as_bytes(),
        );
        assert_eq!(get(&a, "AF").as_deref(), Some("04"), "{}", text(&a));
        n += 1;
        assert!(n < 400, "no rotation:\n{}", d.log_text());
    }
    let newest = d.journal();
    let first = newest.lines().next().unwrap();
    assert!(
        first.contains(" 0 rotated carried=") && first.ends_with(" whole"),
        "{first}"
    );
    let ids = |j: &str| {
        j.lines()
            .filter_map(parse_line)
            .map(|(_, id, _)| id)
            .max()
            .unwrap_or(0)
    };
    let highest = ids(&newest).max(ids(
        &std::fs::read_to_string(d.dir.join("journal.1")).unwrap()
    ));
    let before: Vec<Vec<u8>> = ["01", "02", "03"]
        .iter()
        .map(|reg| exchange(d.addr, status(reg).as_bytes()))
        .collect();
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit().success());
    // What an older generation holds is not read: an unreadable line there
    // is not counted.
    let mut older = std::fs::read_to_string(d.dir.join("journal.1")).unwrap();
    older.push_str("not a journal line\n");
    std::fs::write(d.dir.join("journal.1"), older).unwrap();
    d.spawn();
    d.wait_log("1 files read (the last rotation carried what the state needs)");
    assert!(
        !d.log_text().contains("unreadable lines"),
        "{}",
        d.log_text()
    );
    for (reg, was) in ["01", "02", "03"].iter().zip(before) {
        let a = exchange(d.addr, status(reg).as_bytes());
        assert_eq!(text(&a), text(&was), "register {reg}");
    }
    let a = exchange(d.addr, debit("01", "777").as_bytes());
    assert_eq!(get(&a, "AE").as_deref(), Some("10"));
    assert!(ids(&d.journal()) > highest);
}
