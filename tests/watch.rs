//! `concertctl watch` and the control socket's event stream, through the
//! real binaries.

use crate::util::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CONTROL: &str = "control @DIR@/control.sock\n";

/// A debit as a careful register writes it (CJ and all): no finding comes
/// between its events.
fn debit(cb: &str) -> String {
    format!(
        "CZ0040320CJ012247300123456CA00201CB{:03}{cb}CD0010CE003978",
        cb.len()
    )
}

/// A raw watcher on the socket, its `ok` read: subscribed from then on.
fn watcher(d: &Daemon) -> BufReader<UnixStream> {
    let mut c = UnixStream::connect(d.control_socket()).unwrap();
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    c.write_all(b"watch\n").unwrap();
    let mut r = BufReader::new(c);
    let mut first = String::new();
    r.read_line(&mut first).unwrap();
    assert_eq!(first, "ok\n");
    r
}

fn line(r: &mut BufReader<UnixStream>) -> String {
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    l.trim_end().to_string()
}

#[test]
fn watch_prints_a_transactions_events_in_order() {
    let d = Daemon::start(CONTROL);
    let sock = d.control_socket();
    let mut child = Command::new(CONCERTCTL)
        .args(["-s", sock.to_str().unwrap(), "watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    d.wait_log("a watcher came");
    let a = exchange(d.addr, debit("1234").as_bytes());
    assert_eq!(get(&a, "AE").as_deref(), Some("10"), "{}", text(&a));
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut got = Vec::new();
    while got.len() < 3 {
        let mut l = String::new();
        assert!(out.read_line(&mut l).unwrap() > 0, "{got:?}");
        got.push(l.trim_end().to_string());
    }
    let id = got[0]
        .strip_prefix("begun tx ")
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("{got:?}"))
        .to_string();
    assert_eq!(
        got[0],
        format!(
            "begun tx {id} debit 12.34 EUR register 01 tcp 127.0.0.1:{}",
            {
                // The register's own port, as the log names it.
                let l = d.wait_log(&format!("tx {id}: debit"));
                l.rsplit(':').next().unwrap().to_string()
            }
        )
    );
    assert_eq!(got[1], format!("ended tx {id} approved"));
    assert_eq!(got[2], format!("delivered tx {id}"));
    // Its reader gone, concertctl ends, and so does the watch.
    let _ = child.kill();
    let _ = child.wait();
    d.wait_log("a watcher left");
}

#[test]
fn watch_tells_the_outcome_the_wait_and_a_reload() {
    let d = Daemon::start(CONTROL);
    let mut w = watcher(&d);
    assert_eq!(d.ctl(&["hold", "on"]).status.code(), Some(0));
    let addr = d.addr;
    let pay = std::thread::spawn(move || exchange(addr, debit("500").as_bytes()));
    let begun = line(&mut w);
    assert!(
        begun.starts_with("begun tx ") && begun.contains(" debit 5.00 EUR register 01 tcp "),
        "{begun}"
    );
    let id = begun.split(' ').nth(2).unwrap().to_string();
    assert_eq!(line(&mut w), format!("waiting tx {id}"));
    // A watcher that comes now sees the waiting transaction at once.
    let mut late = watcher(&d);
    assert_eq!(line(&mut late), begun);
    assert_eq!(line(&mut late), format!("waiting tx {id}"));
    assert_eq!(d.ctl(&["press", "red"]).status.code(), Some(0));
    let a = pay.join().unwrap();
    assert_eq!(get(&a, "AF").as_deref(), Some("06"));
    let ended = line(&mut w);
    assert!(
        ended.starts_with(&format!("ended tx {id} declined AF06 ")),
        "{ended}"
    );
    assert_eq!(line(&mut w), format!("delivered tx {id}"));
    assert_eq!(line(&mut late), ended);
    let o = d.ctl(&["reload"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let reload = line(&mut w);
    assert!(reload.starts_with("reload done reloaded "), "{reload}");
    assert!(!reload.contains('\n'));
}

/// A watcher that never reads: the worker answers as fast as without it,
/// and the watcher, reading at last, is told what it lost.
#[test]
fn a_stalled_watcher_never_delays_an_answer() {
    let d = Daemon::start(CONTROL);
    let mut stalled = watcher(&d);
    let mut slowest = Duration::ZERO;
    // Enough events to fill the socket and the watcher's queue: the
    // watch's thread is stuck in a write long before the last.
    let n = 400;
    for _ in 0..n {
        let t = Instant::now();
        let a = exchange(d.addr, debit("1200").as_bytes());
        slowest = slowest.max(t.elapsed());
        assert_eq!(get(&a, "AE").as_deref(), Some("10"));
    }
    assert!(
        slowest < Duration::from_secs(5),
        "an answer took {slowest:?} with a stalled watcher"
    );
    let mut all = String::new();
    stalled
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let _ = stalled.read_to_string(&mut all);
    let lost: u64 = all
        .lines()
        .filter_map(|l| l.strip_prefix("lost "))
        .map(|n| n.parse::<u64>().unwrap())
        .sum();
    let seen = all.lines().filter(|l| !l.starts_with("lost ")).count() as u64;
    assert!(
        lost > 0,
        "nothing lost: the watcher was not stalled ({seen} lines)"
    );
    // Lost or seen, every event is accounted for; the last ones come
    // once the watcher reads again.
    assert!(seen + lost <= 3 * n, "{seen} + {lost}");
}

#[test]
fn four_watchers_leave_room_for_status() {
    let d = Daemon::start(CONTROL);
    let _ws: Vec<_> = (0..4).map(|_| watcher(&d)).collect();
    let mut fifth = UnixStream::connect(d.control_socket()).unwrap();
    fifth.write_all(b"watch\n").unwrap();
    let mut said = String::new();
    fifth.read_to_string(&mut said).unwrap();
    assert!(said.starts_with("refused\n4 watchers already"), "{said}");
    // Every ordinary place is free: four commands at once get in.
    let ts: Vec<_> = (0..4)
        .map(|_| {
            let sock = d.control_socket();
            std::thread::spawn(move || run(CONCERTCTL, &["-s", sock.to_str().unwrap(), "status"]))
        })
        .collect();
    for t in ts {
        let o = t.join().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(stdout(&o).contains("concertd"), "{}", stdout(&o));
    }
}

/// A register's mistake is told to watchers once, as the log tells it
/// (`concertctl registers` lists it).
#[test]
fn watch_tells_a_finding_once() {
    let d = Daemon::start(CONTROL);
    let mut w = watcher(&d);
    // Without CJ, twice: one finding line, then only counted.
    for _ in 0..2 {
        let a = exchange(d.addr, b"CZ0040320CA00201CB0041234CD0010CE003978");
        assert_eq!(get(&a, "AE").as_deref(), Some("10"), "{}", text(&a));
    }
    let mut got = Vec::new();
    while got
        .iter()
        .filter(|l: &&String| l.starts_with("delivered "))
        .count()
        < 2
    {
        got.push(line(&mut w));
    }
    let findings: Vec<&String> = got.iter().filter(|l| l.starts_with("finding ")).collect();
    assert_eq!(findings.len(), 1, "{got:?}");
    assert!(
        findings[0].starts_with("finding register 01 at tcp 127.0.0.1")
            && findings[0].contains("warning no-cj"),
        "{got:?}"
    );
}
