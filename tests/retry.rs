//! Safe retry (`retry-window`): off by default, and when on it replays
//! only what a retry must not repeat, never another sale's answer.

use crate::util::*;
use concert::wire::framing::{wrap, Wrapping};

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

/// The transaction id the log gives the `n`th line saying `what`.
fn tx_id(d: &Daemon, what: &str, n: usize) -> String {
    let line = d.wait_log_n(&format!(": {what}"), n);
    let at = line.find("tx ").unwrap() + 3;
    line[at..].split(':').next().unwrap().to_string()
}

fn el(tag: &str, v: &str) -> String {
    format!("{tag}{:03}{v}", v.len())
}

#[test]
fn a_refund_of_another_debit_with_the_same_cf_is_not_a_replay() {
    // Issue 20, 2: the same CF and amount, IM naming another debit.
    let d = Daemon::start("retry-window 1h");
    exchange(d.addr, debit("01", "1000", "SALE-A").as_bytes());
    exchange(d.addr, debit("01", "1000", "SALE-B").as_bytes());
    let a = tx_id(&d, "debit 10.00 EUR", 1);
    let b = tx_id(&d, "debit 10.00 EUR", 2);
    let refund = |im: &str| {
        format!(
            "CZ0040320CJ012247300123456CA00201CB003500CD0011CE003978{}{}",
            el("CF", "REFUND"),
            el("IM", im)
        )
    };
    let ra = exchange(d.addr, refund(&a).as_bytes());
    assert_eq!(get(&ra, "AE").as_deref(), Some("10"), "{}", text(&ra));
    let rb = exchange(d.addr, refund(&b).as_bytes());
    assert_eq!(get(&rb, "AE").as_deref(), Some("10"), "{}", text(&rb));
    assert_eq!(get(&rb, "IM"), Some(b.clone()), "A's answer replayed");
    // B was refunded: its own transaction ran.
    d.wait_log(&format!("credit 5.00 EUR, refund of tx {b}, register 01"));
    assert_eq!(begun_count(&d, "CF006REFUND"), 2, "{}", d.journal());
    assert!(!d.journal().contains(" replayed "));
    // A true retry of B's refund is replayed, with B in it.
    assert_eq!(exchange(d.addr, refund(&b).as_bytes()), rb);
    assert_eq!(begun_count(&d, "CF006REFUND"), 2);
}

#[test]
fn a_request_differing_in_any_one_tag_is_not_a_replay() {
    let d = Daemon::start("retry-window 1h");
    let base = debit("01", "2500", "SAME-CF");
    let first = exchange(d.addr, base.as_bytes());
    assert_eq!(get(&first, "AE").as_deref(), Some("10"));
    let mut runs = 1;
    // The same CA CB CD CE CF, and one tag more or other: another
    // ticket, partial approval, forcing, the cashier's id, a Fidecoin
    // tag, another terminal id (CJ), a cheque.
    for extra in [
        "CK003100",
        "BF0011",
        "BB0011",
        "CH004ab12",
        "OD003xyz",
        "CC00300C",
    ] {
        let variant = format!("{base}{extra}");
        let a = exchange(d.addr, variant.as_bytes());
        assert_eq!(
            get(&a, "AE").as_deref(),
            Some("10"),
            "{extra}: {}",
            text(&a)
        );
        runs += 1;
        assert_eq!(begun_count(&d, "SAME-CF"), runs, "{extra} replayed");
    }
    let other_cj = base.replace("CJ012247300123456", "CJ012247300999999");
    exchange(d.addr, other_cj.as_bytes());
    assert_eq!(begun_count(&d, "SAME-CF"), runs + 1, "CJ replayed");
    assert!(!d.journal().contains(" replayed "), "{}", d.journal());
    // The first, sent again byte for byte, still is a retry.
    assert_eq!(exchange(d.addr, base.as_bytes()), first);
    d.wait_log("its answer replayed");
    assert_eq!(begun_count(&d, "SAME-CF"), runs + 1);
}

#[test]
fn a_true_retry_is_replayed_across_a_restart() {
    let mut d = Daemon::start("retry-window 1h");
    let sale = format!("{}CK003100BF0011", debit("01", "2000", "T-42"));
    let a = exchange(d.addr, sale.as_bytes());
    assert_eq!(get(&a, "AE").as_deref(), Some("10"));
    d.signal(libc::SIGTERM);
    d.wait_exit();
    d.spawn();
    assert_eq!(exchange(d.addr, sale.as_bytes()), a);
    d.wait_log("its answer replayed");
    assert_eq!(begun_count(&d, "T-42"), 1);
}

#[test]
fn a_card_like_cf_is_replayed_live_and_answered_unknown_after_a_restart() {
    // A Luhn-valid digit run: the journal keeps it masked, with a 12-bit
    // check, which cannot prove a retry after a restart is the same sale.
    let mut d = Daemon::start("retry-window 1h");
    let sale = debit("01", "2000", "4970101234560674");
    let a = exchange(d.addr, sale.as_bytes());
    assert_eq!(get(&a, "AE").as_deref(), Some("10"));
    assert!(!d.journal().contains("4970101234560674"));
    // Live, the whole request is known: a replay.
    assert_eq!(exchange(d.addr, sale.as_bytes()), a);
    // Another number that masks the same way is another sale.
    let other = debit("01", "2000", "4970109999880674");
    let c = exchange(d.addr, other.as_bytes());
    assert_ne!(get(&c, "AC"), get(&a, "AC"));
    assert_eq!(begun_count(&d, "497010######0674"), 2);
    d.signal(libc::SIGTERM);
    d.wait_exit();
    d.spawn();
    // After the restart: neither replayed (it may be another sale) nor
    // run again (it may be this one): unknown, journaled so, the backend
    // not asked (the simulator approves 20.00).
    let b = exchange(d.addr, sale.as_bytes());
    let sale_echo = sale.replace("CF0164970101234560674", "");
    assert_eq!(
        text(&b),
        format!("{sale_echo}AE00201AF00207CF0164970101234560674")
    );
    d.wait_log("not provably the same");
    assert_eq!(begun_count(&d, "497010######0674"), 3);
    assert_eq!(
        d.journal().matches(" ended unknown ").count(),
        1,
        "{}",
        d.journal()
    );
    // Its retry now gets that answer again, and a status request too.
    assert_eq!(exchange(d.addr, sale.as_bytes()), b);
    let status = "CZ0040320CJ012247300123456CA00201CD001T";
    let s = exchange(d.addr, status.as_bytes());
    assert_eq!(get(&s, "AF").as_deref(), Some("07"), "{}", text(&s));
    assert_eq!(begun_count(&d, "497010######0674"), 3);
}
