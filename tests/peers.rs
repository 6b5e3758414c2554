//! One peer cannot lock the registers out, and cannot flood the log.

use crate::util::*;
use concert::wire::framing::{wrap, Wrapping};
use std::io::Write;

const PING3: &[u8] = b"CZ0040320CA00203CD001I";
const PING4: &[u8] = b"CZ0040320CA00204CD001I";

/// Waits until SIGUSR1 reports `n` connections open.
fn wait_open(d: &Daemon, n: usize) {
    let want = format!("; {n} connections open;");
    for k in 1.. {
        d.signal(libc::SIGUSR1);
        let line = d.wait_log_n("state: listening on", k);
        if line.contains(&want) {
            return;
        }
        assert!(k < 500, "never {n} connections open: {line}");
    }
}

/// Holds `n` idle connections from `src`; those the daemon closes at once
/// are not kept.
fn hog(d: &Daemon, src: &str, n: usize) -> Vec<std::net::TcpStream> {
    (0..n)
        .filter_map(|_| connect_from(src, d.addr).ok())
        .collect()
}

fn registers_answered(d: &Daemon) {
    for i in 0..20 {
        let a = exchange_from("127.0.0.3", d.addr, PING3);
        assert_eq!(
            text(&a),
            format!("{}AE00210", text(PING3)),
            "ping {i} from .3"
        );
        let a = exchange_from("127.0.0.4", d.addr, PING4);
        assert_eq!(
            text(&a),
            format!("{}AE00210", text(PING4)),
            "ping {i} from .4"
        );
    }
}

#[test]
fn one_peer_at_max_connections_is_displaced_for_the_registers() {
    raise_nofile();
    let d = Daemon::start(
        "max-connections 64\nmax-connections-per-peer 64\nrequest-timeout 60s\nrequest-gap 60s",
    );
    let held = hog(&d, "127.0.0.2", 64);
    wait_open(&d, 64);
    // Every place taken by one idle peer: the registers still get 20/20.
    registers_answered(&d);
    d.wait_log("idle connection closed to make room for 127.0.0.3");
    drop(held);
}

#[test]
fn one_peer_holds_at_most_max_connections_per_peer() {
    raise_nofile();
    let d = Daemon::start("max-connections 64\nrequest-timeout 60s\nrequest-gap 60s");
    let held = hog(&d, "127.0.0.2", 40);
    d.wait_log("(max-connections-per-peer), closed");
    wait_open(&d, 16);
    registers_answered(&d);
    // The cap is per address: it never displaced anybody.
    assert!(!d.log_text().contains("to make room"), "{}", d.log_text());
    drop(held);
}

#[test]
fn a_refusal_flood_costs_a_few_log_lines() {
    let mut d = Daemon::start("allow 127.0.0.1");
    for _ in 0..2000 {
        let _ = exchange_from("127.0.0.2", d.addr, PING3);
    }
    // A register allowed in is still served and its transactions logged.
    let a = exchange(d.addr, b"CZ0040320CA00201CB0041000CD0010CE003978");
    assert!(text(&a).contains("AE00210"), "{}", text(&a));
    d.wait_log("debit 10.00 EUR register 01 from tcp");
    let refused = d
        .log_text()
        .lines()
        .filter(|l| l.contains("127.0.0.2") && !l.contains(" DEBUG "))
        .count();
    assert!(refused <= 3, "{refused} lines:\n{}", d.log_text());
    // The rest is counted and said in one line (at the latest at stop).
    d.signal(libc::SIGTERM);
    d.wait_exit();
    let log = d.log_text();
    assert!(
        log.contains("127.0.0.2: 1997 more connections refused"),
        "{log}"
    );
    assert!(
        log.lines()
            .filter(|l| l.contains("127.0.0.2") && !l.contains(" DEBUG "))
            .count()
            <= 4
    );
}

#[test]
fn a_garbage_flood_costs_a_few_log_lines() {
    // Each connection holds its place until it has closed on both sides: a
    // loaded machine may leave more than the default 16 of them lingering,
    // which is not what this test is about.
    let mut d = Daemon::start("max-connections-per-peer 1024");
    // A V2 frame with a wrong LRC: answered NAK at once.
    let mut bad = wrap(b"0100001000010978ORDER00042", Wrapping::Stx);
    *bad.last_mut().unwrap() ^= 0x55;
    for i in 0..2000 {
        let mut s = connect_from("127.0.0.2", d.addr).unwrap();
        s.write_all(&bad).unwrap();
        let a = read_all(&mut s);
        assert_eq!(a, [concert::wire::framing::NAK], "garbage {i}");
        if i == 1000 {
            let a = exchange(d.addr, b"CZ0040320CA00201CB0041000CD0010CE003978");
            assert!(text(&a).contains("AE00210"));
        }
    }
    d.wait_log("debit 10.00 EUR register 01 from tcp");
    // Debug lines (-v: a line per connection closed) aside.
    let lines = |log: &str| {
        log.lines()
            .filter(|l| l.contains("127.0.0.2") && !l.contains(" DEBUG "))
            .count()
    };
    assert!(lines(&d.log_text()) <= 3, "{}", d.log_text());
    d.signal(libc::SIGTERM);
    d.wait_exit();
    let log = d.log_text();
    assert!(log.contains("127.0.0.2: 1997 more bad requests"), "{log}");
    assert!(lines(&log) <= 4, "{log}");
}

#[test]
fn at_vv_every_refusal_is_logged() {
    let d = Daemon::start_with("allow 127.0.0.1", &["-vv"]);
    for _ in 0..10 {
        let _ = exchange_from("127.0.0.2", d.addr, PING3);
    }
    d.wait_log_n("not in the allow-list", 10);
}
