//! Safe retry (`retry-window`): off by default, and when on it replays
//! only what a retry must not repeat, never another sale's answer.

use crate::util::*;
use concert::framing::{wrap, Wrapping};

fn debit(ca: &str, amount: &str, cf: &str) -> String {
    let cf = if cf.is_empty() {
        String::new()
    } else {
        format!("CF{:03}{cf}", cf.len())
    };
    format!(
        "CZ0040320CJ012247300123456CA002{ca}CB{:03}{amount}CD0010CE003978{cf}",
        amount.len()
    )
}

fn begun_count(d: &Daemon, pat: &str) -> usize {
    d.journal()
        .lines()
        .filter(|l| l.contains(" begun ") && l.contains(pat))
        .count()
}

#[test]
fn a_constant_cf_is_two_sales_by_default() {
    // A JS client's fixed CF: two sales of one amount are two payments.
    let d = Daemon::start("");
    let req = debit("01", "1500", "0123456789");
    let a = exchange(d.addr, req.as_bytes());
    let b = exchange(d.addr, req.as_bytes());
    assert_eq!(get(&a, "AE").as_deref(), Some("10"));
    assert_eq!(get(&b, "AE").as_deref(), Some("10"));
    assert_ne!(
        get(&a, "AC"),
        get(&b, "AC"),
        "second sale replayed the first"
    );
    assert_eq!(begun_count(&d, "CF0100123456789"), 2);
    assert!(!d.journal().contains(" replayed "));
}

#[test]
fn v2_private_data_is_never_a_retry_key() {
    let d = Daemon::start("retry-window 1h");
    // A V2 E request whose private field is the register's constant.
    let req = wrap(b"01000015000109780000000000", Wrapping::Stx);
    let a = exchange_open(d.addr, &req);
    let b = exchange_open(d.addr, &req);
    assert_eq!(a, b, "both approved the same way in V2");
    assert_eq!(begun_count(&d, "CF0100000000000"), 2, "{}", d.journal());
    assert!(!d.journal().contains(" replayed "));
}

#[test]
fn with_a_window_approvals_are_replayed_refusals_are_not() {
    let d = Daemon::start("retry-window 1h");
    d.wait_log("safe retry is on");
    let sale = debit("01", "3300", "TRY-0001");
    let a = exchange(d.addr, sale.as_bytes());
    let b = exchange(d.addr, sale.as_bytes());
    assert_eq!(a, b);
    assert_eq!(begun_count(&d, "TRY-0001"), 1);
    d.wait_log("its answer replayed");
    // A refusal (simulator: amounts ending in 51) is not replayed: the
    // customer can try again and that try runs.
    let refused = debit("01", "3351", "TRY-0002");
    let r1 = exchange(d.addr, refused.as_bytes());
    assert_eq!(get(&r1, "AF").as_deref(), Some("04"));
    exchange(d.addr, refused.as_bytes());
    assert_eq!(begun_count(&d, "TRY-0002"), 2, "{}", d.journal());
}

#[test]
fn a_cf_seen_with_another_amount_stops_replays_for_that_register() {
    let d = Daemon::start("retry-window 1h");
    let first = debit("01", "1000", "ORDER-7");
    let a = exchange(d.addr, first.as_bytes());
    // The same CF for another amount: an order number, not an attempt.
    let other = exchange(d.addr, debit("01", "500", "ORDER-7").as_bytes());
    assert_eq!(get(&other, "AE").as_deref(), Some("10"));
    d.wait_log("retries are no longer replayed");
    // From now on even an exact retry of the first runs again.
    let again = exchange(d.addr, first.as_bytes());
    assert_ne!(get(&a, "AC"), get(&again, "AC"));
    assert_eq!(begun_count(&d, "ORDER-7"), 3);
    // Another register is not affected.
    let r2 = debit("02", "1000", "ORDER-7");
    let x = exchange(d.addr, r2.as_bytes());
    assert_eq!(exchange(d.addr, r2.as_bytes()), x);
    // The state report names the register.
    d.signal(libc::SIGUSR1);
    d.wait_log("register 01: replays stopped");
    // A refund carrying the sale's CF is normal.
    let refund = "CZ0040320CJ012247300123456CA00202CB0041000CD0011CE003978CF007ORDER-7";
    assert_eq!(
        get(&exchange(d.addr, refund.as_bytes()), "AE").as_deref(),
        Some("10")
    );
    assert!(!d.log_text().contains("register 02 ("), "{}", d.log_text());
}

#[test]
fn a_replay_survives_a_restart_with_a_card_like_cf() {
    // A Luhn-valid digit run: the journal keeps it masked.
    let mut d = Daemon::start("retry-window 1h");
    let sale = debit("01", "2000", "4970101234560674");
    let a = exchange(d.addr, sale.as_bytes());
    assert_eq!(get(&a, "AE").as_deref(), Some("10"));
    assert!(!d.journal().contains("4970101234560674"));
    d.signal(libc::SIGTERM);
    d.wait_exit();
    d.spawn();
    let b = exchange(d.addr, sale.as_bytes());
    assert_eq!(a, b, "not replayed after the restart");
    d.wait_log("its answer replayed");
    // Another CF that masks the same way is another sale.
    let other = debit("01", "2000", "4970109999880674");
    let c = exchange(d.addr, other.as_bytes());
    assert_ne!(get(&c, "AC"), get(&a, "AC"));
}
