//! The register's report card through the real binaries: small registers
//! that each make one mistake, the Odoo addon's exchange that makes none,
//! and what `concertctl registers` says of them.

use crate::util::*;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Duration;

const CONTROL: &str = "control @DIR@/control.sock\n";

/// The Odoo addon's request, byte for byte (clients.md, 2.1).
pub const ODOO: &[u8] = b"CZ0040300CJ012012345678901CA00201CE003978CD0010CB00512345";

fn start() -> Daemon {
    Daemon::start_env(CONTROL, &["-v"], &[("TZ", "UTC")])
}

fn ok(o: &std::process::Output) -> String {
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(o), stderr(o));
    stdout(o)
}

/// The Odoo addon's transport: connect, one send, one recv(1024), close.
pub fn odoo_pay(src: &str, addr: SocketAddr, req: &[u8]) -> Vec<u8> {
    let mut s = connect_from(src, addr).expect("connect");
    s.write_all(req).unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap_or(0);
    buf[..n].to_vec()
}

/// A register that reads its answer whole and asks the last outcome
/// with a status request (CD=T) when it got none.
pub fn careful_pay(src: &str, addr: SocketAddr, req: &[u8]) -> Vec<u8> {
    let a = exchange_from(src, addr, req);
    if !a.is_empty() {
        return a;
    }
    exchange_from(src, addr, b"CZ0040300CJ012012345678901CA00201CD001T")
}

/// The block `registers` writes for the register at `ip`.
fn block(report: &str, ca: &str, ip: &str) -> String {
    let head = format!("register {ca} at tcp {ip}:");
    let mut lines = report.lines().skip_while(|l| !l.starts_with(&head));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("no {head} in:\n{report}"));
    let rest: Vec<&str> = lines.take_while(|l| l.starts_with("  ")).collect();
    format!("{first}\n{}", rest.join("\n"))
}

/// Waits until the log says the register at `ip` got the finding `name`,
/// and returns that line.
fn found(d: &Daemon, ip: &str, severity: &str, name: &str) -> String {
    d.wait_log(&format!("at tcp {ip}: {severity} {name}: "))
}

#[test]
fn the_odoo_exchange_gets_no_error_and_no_warning() {
    let d = start();
    for _ in 0..2 {
        let a = odoo_pay("127.0.0.21", d.addr, ODOO);
        assert_eq!(get(&a, "AE").as_deref(), Some("10"), "{}", text(&a));
    }
    // Delivery is measured before the findings hear of it: wait for the
    // second one's report in the counts.
    let report = loop_until(|| {
        let r = ok(&d.ctl(&["registers"]));
        r.contains("2 payments (2 approved").then_some(r)
    });
    let b = block(&report, "01", "127.0.0.21");
    assert!(b.contains("Concert V3 CZ 0300"), "{b}");
    assert!(
        !b.lines()
            .any(|l| l.starts_with("  error") || l.starts_with("  warning")),
        "{b}"
    );
}

#[test]
fn a_register_for_each_framing_and_tag_mistake() {
    let d = start();
    let addr = d.addr;
    // CR/LF after the request.
    let a = exchange_from("127.0.0.31", addr, &[ODOO, b"\r\n"].concat());
    assert_eq!(get(&a, "AE").as_deref(), Some("10"), "{}", text(&a));
    found(&d, "127.0.0.31", "warning", "bytes-after-request");
    // STX..ETX+LRC around a V3 request on TCP.
    let wrapped = concert::wire::framing::wrap(ODOO, concert::wire::framing::Wrapping::Stx);
    exchange_from("127.0.0.32", addr, &wrapped);
    found(&d, "127.0.0.32", "warning", "stx-on-tcp");
    // A request cut inside an element, the rest 300 ms later.
    {
        let mut s = connect_from("127.0.0.33", addr).unwrap();
        s.write_all(&ODOO[..20]).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        s.write_all(&ODOO[20..]).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let _ = s.read_to_end(&mut Vec::new());
    }
    let line = found(&d, "127.0.0.33", "warning", "slow-segments");
    assert!(line.contains("2 segments"), "{line}");
    // A status request after the answer, on the same connection.
    {
        let mut s = connect_from("127.0.0.34", addr).unwrap();
        s.write_all(ODOO).unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).unwrap();
        assert_eq!(get(&answer, "AE").as_deref(), Some("10"));
        s.write_all(b"CZ0040300CA00201CD001T").unwrap();
    }
    found(&d, "127.0.0.34", "warning", "several-requests");
    // A Concert V2 request over TCP.
    let v2 = concert::wire::framing::wrap(
        b"0100001234110978          A010B010",
        concert::wire::framing::Wrapping::Stx,
    );
    exchange_from("127.0.0.35", addr, &v2);
    found(&d, "127.0.0.35", "error", "v2-over-tcp");
    // CZ 0301, no CJ, BF, a tag nobody reads, CB padded to 12 digits;
    // sent twice: logged once, counted twice.
    let tags = b"CZ0040301CA00201CE003978CD0010CB012000000001000BF0010TI003abc";
    for _ in 0..2 {
        exchange_from("127.0.0.36", addr, tags);
    }
    for (sev, name) in [
        ("warning", "cz-version"),
        ("warning", "no-cj"),
        ("warning", "bf-present"),
        ("note", "ignored-tags"),
        ("note", "cb-zeros"),
    ] {
        found(&d, "127.0.0.36", sev, name);
    }
    // Lengths of one digit.
    let a = exchange_from("127.0.0.37", addr, b"CZ40320CA201CE3978CD10CB41000");
    assert_eq!(get(&a, "AF").as_deref(), Some("09"), "{}", text(&a));
    found(&d, "127.0.0.37", "error", "unpadded-length");
    // A debit without its currency.
    exchange_from(
        "127.0.0.38",
        addr,
        b"CZ0040320CJ012012345678901CA00201CD0010CB0041000",
    );
    found(&d, "127.0.0.38", "error", "no-ce");

    let report = loop_until(|| {
        let r = ok(&d.ctl(&["registers"]));
        r.contains("at tcp 127.0.0.36:").then_some(r)
    });
    let b = block(&report, "01", "127.0.0.36");
    assert!(b.contains("2 requests"), "{b}");
    assert!(b.contains("\n  warning 2 bf-present "), "{b}");
    assert!(b.contains("BF=0"), "{b}");
    assert!(b.contains("Ingenico"), "{b}");
    assert!(b.contains("\n  note 2 cb-zeros "), "{b}");
    assert_eq!(
        d.count_log("at tcp 127.0.0.36: warning bf-present"),
        1,
        "logged once per register and kind"
    );
    let b = block(&report, "01", "127.0.0.35");
    assert!(b.contains("Concert V2"), "{b}");
}

#[test]
fn a_register_for_each_reading_and_behaviour_mistake() {
    let d = start();
    let addr = d.addr;
    // One recv of an answer in three writes 200 ms apart.
    ok(&d.ctl(&["next", "approve", "split=3:200ms"]));
    let a = odoo_pay("127.0.0.39", addr, ODOO);
    assert!(
        concert::wire::tlv::Frame::decode(&a).is_err(),
        "{}",
        text(&a)
    );
    let line = found(&d, "127.0.0.39", "error", "answer-not-read");
    assert!(line.contains("split"), "{line}");

    // A lost answer, then a new sale without a status request.
    ok(&d.ctl(&["next", "approve", "silent"]));
    assert!(odoo_pay("127.0.0.40", addr, ODOO).is_empty());
    let a = odoo_pay("127.0.0.40", addr, ODOO);
    assert_eq!(get(&a, "AE").as_deref(), Some("10"), "{}", text(&a));
    found(&d, "127.0.0.40", "error", "no-status-after-loss");
    // One that asks first is right.
    ok(&d.ctl(&["next", "approve", "reset"]));
    // Reset: no answer; the status request returns the approval.
    let a = careful_pay("127.0.0.41", addr, ODOO);
    assert_eq!(get(&a, "AE").as_deref(), Some("10"), "{}", text(&a));
    careful_pay("127.0.0.41", addr, ODOO);

    // A retry at once after a busy answer.
    ok(&d.ctl(&["next", "busy"]));
    let a = exchange_from("127.0.0.42", addr, ODOO);
    assert_eq!(get(&a, "AE").as_deref(), Some("01"), "{}", text(&a));
    exchange_from("127.0.0.42", addr, ODOO);
    found(&d, "127.0.0.42", "warning", "busy-retry-soon");

    // A register that gives up while the card is read.
    ok(&d.ctl(&["hold", "on"]));
    let s = connect_from("127.0.0.43", addr).unwrap();
    (&s).write_all(ODOO).unwrap();
    loop_until(|| {
        let st = ok(&d.ctl(&["status"]));
        st.contains("waiting for a decision").then_some(())
    });
    drop(s);
    ok(&d.ctl(&["decide", "approve"]));
    ok(&d.ctl(&["hold", "off"]));
    let line = found(&d, "127.0.0.43", "error", "gave-up");
    assert!(line.contains("s into a transaction"), "{line}");

    // A cancellation of another amount than the last debit's.
    let debit = b"CZ0040320CJ012012345678901CA00201CE003978CD0010CB0041500";
    let cancel = b"CZ0040320CJ012012345678901CA00201CE003978CD0012CB0041200";
    exchange_from("127.0.0.44", addr, debit);
    exchange_from("127.0.0.44", addr, cancel);
    let line = found(&d, "127.0.0.44", "warning", "cancel-amount");
    assert!(line.contains("CB=1500"), "{line}");

    let report = loop_until(|| {
        let r = ok(&d.ctl(&["registers"]));
        r.contains("at tcp 127.0.0.44:").then_some(r)
    });
    let good = block(&report, "01", "127.0.0.41");
    assert!(!good.contains("\n  "), "{good}");
    assert!(good.contains("1 status"), "{good}");
    // Forgotten on demand.
    assert!(ok(&d.ctl(&["registers", "clear"])).starts_with("6 registers forgotten"));
    assert_eq!(ok(&d.ctl(&["registers"])), "no register seen\n");
}

#[test]
fn card_numbers_are_masked_in_findings() {
    let d = start();
    let pan = "4970101234560674";
    // A card number where CZ belongs, and as an unknown tag's value.
    let req = format!("CZ016{pan}CA00201CD0010CB0041000CE003978XX016{pan}");
    exchange_from("127.0.0.51", d.addr, req.as_bytes());
    found(&d, "127.0.0.51", "warning", "cz-version");
    let report = ok(&d.ctl(&["registers"]));
    assert!(report.contains("at tcp 127.0.0.51"), "{report}");
    assert!(!report.contains(pan), "{report}");
    assert!(!d.log_text().contains(pan));
}

/// A peer that changes its CA at every request makes a new register each
/// time, each with its first finding: the log lines pass the floodgate
/// (20 in full a minute per address), `registers` still lists them all.
#[test]
fn findings_of_registers_without_end_cost_a_few_log_lines() {
    let d = start();
    for ca in 10..40 {
        // Without CJ: a finding for each new register.
        let req = format!("CZ0040320CA002{ca}CB0041000CD0010CE003978");
        let a = exchange_from("127.0.0.9", d.addr, req.as_bytes());
        assert_eq!(get(&a, "AE").as_deref(), Some("10"), "{}", text(&a));
    }
    let report = ok(&d.ctl(&["registers"]));
    assert_eq!(
        report
            .lines()
            .filter(|l| l.starts_with("register "))
            .count(),
        30,
        "{report}"
    );
    assert_eq!(report.matches("no-cj").count(), 30, "{report}");
    let log = d.log_text();
    assert_eq!(log.matches("finding: register").count(), 20, "{log}");
}
