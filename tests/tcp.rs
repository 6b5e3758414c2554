//! Concert V3 over TCP, through the real daemon.

use crate::util::*;
use concert::wire::framing::{lrc, wrap, Wrapping, ETX, STX};
use std::io::Write;
use std::net::Shutdown;
use std::sync::mpsc;

const HEAD: &str = "CZ0040320CJ012247300123456CA00201";

fn debit(amount: &str) -> String {
    format!("{HEAD}CB{:03}{amount}CD0010CE003978", amount.len())
}

#[test]
fn approved_debit_echoes_every_tag_in_order() {
    let d = Daemon::start("");
    let req = format!("{}CF005ABCDECH003REFOD002zz", debit("12345"));
    // No shutdown: the request is taken as complete because it holds every
    // mandatory tag and nothing more is waiting (the Odoo addon's way).
    let a = exchange_open(d.addr, req.as_bytes());
    let t = text(&a);
    assert!(t.starts_with(&format!("{}AE00210", debit("12345"))), "{t}");
    assert!(a.len() < 1024);
    let tags: Vec<String> = elements(&a).into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        tags,
        [
            "CZ", "CJ", "CA", "CB", "CD", "CE", "AE", "AC", "AL", "AB", "AI", "AA", "CF", "CC",
            "CI", "CG", "CH"
        ]
    );
    assert_eq!(get(&a, "CF").unwrap(), "ABCDE");
    assert_eq!(get(&a, "CH").unwrap(), "REF");
    assert_eq!(get(&a, "AL").unwrap(), "1");
    let pan = get(&a, "AA").unwrap();
    assert!(
        pan.len() == 16 && pan[6..12].bytes().all(|b| b == b'#'),
        "{pan}"
    );
    let ac = get(&a, "AC").unwrap();
    assert!(
        ac.len() == 6 && ac.bytes().all(|b| b.is_ascii_digit()),
        "{ac}"
    );
    // 123.45 is above the contactless limit: chip.
    assert_eq!(get(&a, "CC").unwrap(), "001");
    assert_eq!(get(&a, "CI").unwrap(), "1");
    assert!(!d.log_text().contains("bytes after the request"));
}

#[test]
fn simulator_outcomes_by_last_two_digits() {
    let d = Daemon::start("");
    for (amount, af) in [
        ("1251", "04"),
        ("1252", "05"),
        ("1253", "06"),
        ("1254", "07"),
        ("1255", "08"),
        ("1256", "02"),
        ("1257", "04"),
    ] {
        let a = exchange(d.addr, debit(amount).as_bytes());
        assert_eq!(
            text(&a),
            format!("{}AE00201AF002{af}", debit(amount)),
            "amount {amount}"
        );
    }
    // Partial approval only when the register accepts it.
    let a = exchange(d.addr, format!("{}BF0011", debit("1257")).as_bytes());
    assert_eq!(get(&a, "AE").unwrap(), "10");
    assert_eq!(get(&a, "CB").unwrap(), "0628");
    // Small amounts are contactless.
    let a = exchange(d.addr, debit("05").as_bytes());
    assert_eq!(
        (get(&a, "CC").unwrap(), get(&a, "CI").unwrap()),
        ("00B".into(), "2".into())
    );
    // Cheques are approved without card data.
    let a = exchange(d.addr, format!("{}CC00300C", debit("4200")).as_bytes());
    assert_eq!(get(&a, "AE").unwrap(), "10");
    assert_eq!(get(&a, "CC").unwrap(), "00C");
    assert_eq!(get(&a, "AA"), None);
    // The Odoo addon's 0.05 EUR: CB of one digit, tags in its own order.
    let odoo = b"CZ0040300CJ012012345678901CA00201CE003978BF0010CD0010CB0015";
    let a = exchange_open(d.addr, odoo);
    assert!(
        text(&a).starts_with("CZ0040300CJ012012345678901CA00201CB0015CD0010CE003978AE00210"),
        "{}",
        text(&a)
    );
}

#[test]
fn credit_is_approved() {
    let d = Daemon::start("");
    let req = format!("{HEAD}CB0041000CD0011CE003978");
    let a = exchange(d.addr, req.as_bytes());
    assert!(
        text(&a).starts_with(&format!("{req}AE00210")),
        "{}",
        text(&a)
    );
}

#[test]
fn busy_answers_arrive_before_the_running_debit_ends() {
    let gate = Gate::new();
    let d = Daemon::start(&gate.terminal());
    let (tx, rx) = mpsc::channel();
    let addr = d.addr;
    let first = std::thread::spawn(move || {
        let a = exchange(addr, debit("100").as_bytes());
        tx.send(a).unwrap();
    });
    d.wait_log("debit 1.00 EUR register 01 from tcp");
    let busy = exchange(d.addr, debit("200").as_bytes());
    assert_eq!(text(&busy), format!("{}AE00201", debit("200")));
    let ping = exchange(d.addr, format!("{HEAD}CD001I").as_bytes());
    assert_eq!(text(&ping), format!("{HEAD}CD001IAE00210"));
    // Both came back while the first debit is held running.
    assert!(
        rx.try_recv().is_err(),
        "the first debit ended before the busy answers"
    );
    gate.release();
    let a = rx.recv().unwrap();
    assert!(
        text(&a).starts_with(&format!("{}AE00210", debit("100"))),
        "{}",
        text(&a)
    );
    first.join().unwrap();
    assert!(d.log_text().contains("refused busy"));
}

#[test]
fn error_answers() {
    let d = Daemon::start("");
    // Unknown operation and unsupported currency: the reference's frames.
    let unknown = "CZ0040320CJ012247300123456CA00201CB0042500CD001XCE003978";
    assert_eq!(
        text(&exchange(d.addr, unknown.as_bytes())),
        format!("{unknown}AE00201AF00212")
    );
    let usd = "CZ0040320CJ012247300123456CA00201CB0042500CD0010CE003840";
    assert_eq!(
        text(&exchange(d.addr, usd.as_bytes())),
        format!("{usd}AE00201AF00213")
    );
    // A tag given twice.
    let dup = format!("{}CA00202", debit("2500"));
    assert_eq!(
        text(&exchange(d.addr, dup.as_bytes())),
        format!("{}AE00201AF00209", debit("2500"))
    );
    // A length field that is not three digits: answered at once, with what
    // could be read echoed.
    let bad = format!("{HEAD}CB0x42500CD0010CE003978");
    assert_eq!(
        text(&exchange_open(d.addr, bad.as_bytes())),
        format!("{HEAD}AE00201AF00209")
    );
    // Missing mandatory tag.
    let no_ce = format!("{HEAD}CB0042500CD0010");
    assert_eq!(
        text(&exchange(d.addr, no_ce.as_bytes())),
        format!("{no_ce}AE00201AF00209")
    );
    // Amount zero.
    assert!(text(&exchange(d.addr, debit("00").as_bytes())).ends_with("AE00201AF00209"));
    // A control byte inside the body.
    let ctl = format!("{HEAD}CB004\x0100CD0010CE003978");
    assert_eq!(
        text(&exchange_open(d.addr, ctl.as_bytes())),
        format!("{HEAD}AE00201AF00209")
    );
    // No CZ at all: our own version answers.
    assert_eq!(
        text(&exchange(d.addr, b"CA00201CD001I")),
        "CZ0040320CA00201CD001IAE00201AF00209"
    );
}

#[test]
fn oversize_request_is_refused() {
    let d = Daemon::start("");
    let mut req = HEAD.as_bytes().to_vec();
    for _ in 0..10 {
        req.extend_from_slice(b"XA999");
        req.extend(std::iter::repeat_n(b'a', 999));
    }
    let mut s = connect(d.addr);
    // The daemon may answer and close before it has read everything.
    let _ = s.write_all(&req);
    let a = read_all(&mut s);
    assert_eq!(text(&a), format!("{HEAD}AE00201AF00209"));
}

#[test]
fn request_cut_inside_an_element_then_completed() {
    let d = Daemon::start_with("request-gap 30s", &["-vv"]);
    let req = debit("1234");
    let mut s = connect(d.addr);
    s.write_all(&req.as_bytes()[..30]).unwrap();
    // The trace shows the daemon holds the cut request.
    d.wait_log("read 30 bytes");
    s.write_all(&req.as_bytes()[30..]).unwrap();
    let a = read_all(&mut s);
    assert!(
        text(&a).starts_with(&format!("{req}AE00210")),
        "{}",
        text(&a)
    );
}

#[test]
fn crlf_ends_a_request() {
    // Gap and timeout far away: only the CR/LF can end these requests.
    let d = Daemon::start("request-gap 60s\nrequest-timeout 60s");
    let no_ce = format!("{HEAD}CB0042500CD0010");
    let a = exchange_open(d.addr, format!("{no_ce}\r\n").as_bytes());
    assert_eq!(text(&a), format!("{no_ce}AE00201AF00209"));
    let a = exchange_open(d.addr, format!("{}\r\n", debit("2500")).as_bytes());
    assert!(text(&a).starts_with(&format!("{}AE00210", debit("2500"))));
    let a = exchange_open(d.addr, format!("{}CK003100\n", debit("2500")).as_bytes());
    assert!(get(&a, "ZT").is_some());
    assert!(!d.log_text().contains("bytes after the request"));
}

#[test]
fn stx_wrapped_request_gets_a_wrapped_answer() {
    let d = Daemon::start("");
    let req = debit("4200");
    let a = exchange_open(d.addr, &wrap(req.as_bytes(), Wrapping::Stx));
    assert_eq!(a[0], STX);
    let n = a.len();
    assert_eq!(a[n - 2], ETX);
    assert_eq!(a[n - 1], lrc(&a[1..n - 1]));
    assert!(text(&a[1..n - 2]).starts_with(&format!("{req}AE00210")));
    // A bad LRC is a format error, answered in the same wrapping.
    let mut bad = wrap(req.as_bytes(), Wrapping::Stx);
    *bad.last_mut().unwrap() ^= 0x20;
    let a = exchange_open(d.addr, &bad);
    assert_eq!(
        a,
        wrap(format!("{req}AE00201AF00209").as_bytes(), Wrapping::Stx)
    );
}

#[test]
fn allow_list_refuses_other_addresses() {
    let d = Daemon::start("allow 192.0.2.0/24");
    let a = exchange(d.addr, debit("100").as_bytes());
    assert!(a.is_empty(), "{}", text(&a));
    let line = d.wait_log("not in the allow-list");
    assert!(line.contains("127.0.0.1:"), "{line}");
}

#[test]
fn cancellation_of_the_registers_last_debit() {
    let d = Daemon::start("");
    let reg = |ca: &str, body: &str| format!("CZ0040320CA002{ca}{body}");
    let debit3 = reg("03", "CB0042000CD0010CE003978");
    assert_eq!(
        get(&exchange(d.addr, debit3.as_bytes()), "AE").unwrap(),
        "10"
    );
    // Another register's cancellation does not touch it.
    let other = reg("04", "CB0042000CD0012CE003978");
    assert_eq!(
        text(&exchange(d.addr, other.as_bytes())),
        format!("{other}AE00201AF00204")
    );
    let wrong = reg("03", "CB0041900CD0012CE003978");
    assert_eq!(
        text(&exchange(d.addr, wrong.as_bytes())),
        format!("{wrong}AE00201AF00204")
    );
    let right = reg("03", "CB0042000CD0012CE003978");
    let a = exchange(d.addr, right.as_bytes());
    assert!(
        text(&a).starts_with(&format!("{right}AE00210")),
        "{}",
        text(&a)
    );
    // Cancelled once only.
    assert_eq!(
        text(&exchange(d.addr, right.as_bytes())),
        format!("{right}AE00201AF00204")
    );
}

#[test]
fn duplicata_with_and_without_a_ticket() {
    let d = Daemon::start("");
    let dup = "CZ0040320CJ012247300123456CA00205CD0013CK003100";
    // No transaction yet for register 05.
    assert_eq!(
        text(&exchange(d.addr, dup.as_bytes())),
        "CZ0040320CJ012247300123456CA00205CD0013AE00201AF00200"
    );
    let pay = "CZ0040320CJ012247300123456CA00205CB0042500CD0010CE003978";
    let paid = exchange(d.addr, pay.as_bytes());
    let a = exchange(d.addr, dup.as_bytes());
    assert!(
        text(&a).starts_with("CZ0040320CJ012247300123456CA00205CD0013AE00210ZT"),
        "{}",
        text(&a)
    );
    let (ck, doc) = concert::wire::ticket::decode_zt(get(&a, "ZT").unwrap().as_bytes()).unwrap();
    assert_eq!(ck, Some(*b"100"));
    let doc = String::from_utf8_lossy(&doc);
    assert!(doc.contains("DUPLICATA"), "{doc}");
    assert!(doc.contains("MONTANT : 25,00 EUR"), "{doc}");
    assert!(doc.contains(&get(&paid, "AC").unwrap()), "{doc}");
    assert!(doc.contains(&get(&paid, "AA").unwrap()), "{doc}");
}

#[test]
fn tickets_follow_ck() {
    let d = Daemon::start("");
    let a = exchange(d.addr, format!("{}CK003121", debit("2500")).as_bytes());
    let zt = get(&a, "ZT").unwrap();
    let (ck, doc) = concert::wire::ticket::decode_zt(zt.as_bytes()).unwrap();
    assert_eq!(ck, Some(*b"121"));
    let doc = String::from_utf8_lossy(&doc).into_owned();
    assert!(doc.starts_with("<html>"), "{doc}");
    let c = doc.find("TICKET CLIENT").unwrap();
    let m = doc.find("TICKET COMMERCANT").unwrap();
    assert!(c < m);
    // A refusal has its ticket too; no card number on it.
    let a = exchange(d.addr, format!("{}CK003110", debit("2551")).as_bytes());
    let (_, doc) = concert::wire::ticket::decode_zt(get(&a, "ZT").unwrap().as_bytes()).unwrap();
    let doc: String = doc.iter().map(|&b| b as char).collect();
    assert!(
        doc.contains("TRANSACTION REFUSÉE") && doc.contains("TICKET COMMERCANT"),
        "{doc}"
    );
    // CK asking for no ticket: none.
    let a = exchange(d.addr, format!("{}CK003000", debit("2500")).as_bytes());
    assert_eq!(get(&a, "ZT"), None);
}

#[test]
fn print_and_telecollection() {
    let d = Daemon::start("");
    let a = exchange(d.addr, debit("1000").as_bytes());
    assert_eq!(get(&a, "AE").unwrap(), "10");
    let zt = "CK003100AK016Qm9uam91ciDpdOk=";
    let p = format!("{HEAD}CD001PZT{:03}{zt}", zt.len());
    assert_eq!(
        text(&exchange(d.addr, p.as_bytes())),
        format!("{HEAD}CD001PAE00210")
    );
    d.wait_log("Bonjour");
    let b = format!("{HEAD}CD001B");
    assert_eq!(text(&exchange(d.addr, b.as_bytes())), format!("{b}AE00210"));
    d.wait_log("telecollection: 1 transactions, total 10.00 EUR");
    let bad = format!("{HEAD}CD001PZT004!!!!");
    assert_eq!(
        text(&exchange(d.addr, bad.as_bytes())),
        format!("{HEAD}CD001PAE00201AF00209")
    );
}

#[test]
fn silent_connection_closed_at_request_timeout() {
    let d = Daemon::start("request-timeout 300ms");
    let mut s = connect(d.addr);
    assert!(read_all(&mut s).is_empty());
    d.wait_log("closed without a request");
    // A request cut at the timeout gets a format error.
    let mut s = connect(d.addr);
    s.write_all(format!("{HEAD}CB004").as_bytes()).unwrap();
    assert_eq!(text(&read_all(&mut s)), format!("{HEAD}AE00201AF00209"));
}

#[test]
fn request_gap_completes_a_quiet_request() {
    // No mandatory set (CE missing), no CR/LF, no shutdown: the gap ends it.
    let d = Daemon::start("request-gap 50ms");
    let no_ce = format!("{HEAD}CB0042500CD0010");
    assert_eq!(
        text(&exchange_open(d.addr, no_ce.as_bytes())),
        format!("{no_ce}AE00201AF00209")
    );
}

#[test]
fn bytes_after_the_request_are_logged() {
    let d = Daemon::start("");
    let mut s = connect(d.addr);
    s.write_all(format!("{}\r\nEXTRA", debit("100")).as_bytes())
        .unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let a = read_all(&mut s);
    assert_eq!(get(&a, "AE").unwrap(), "10");
    d.wait_log("bytes after the request ignored: EXTRA");
}

#[test]
fn max_connections_closes_extra_connections() {
    let d = Daemon::start_with(
        "max-connections 1\nrequest-timeout 60s\nrequest-gap 60s",
        &["-vv"],
    );
    let mut held = connect(d.addr);
    held.write_all(b"CZ004").unwrap();
    d.wait_log("read 5 bytes");
    let a = exchange(d.addr, debit("100").as_bytes());
    assert!(a.is_empty());
    d.wait_log("max-connections");
    held.write_all(b"0320CA00201CD001I\n").unwrap();
    assert_eq!(text(&read_all(&mut held)), "CZ0040320CA00201CD001IAE00210");
    let me = held.local_addr().unwrap();
    drop(held);
    // Once that connection is closed, its slot serves the next one.
    d.wait_log(&format!("tcp {me}: closed"));
    let a = exchange(d.addr, debit("100").as_bytes());
    assert_eq!(get(&a, "AE").unwrap(), "10");
}

#[test]
fn v2_over_tcp_is_answered_in_v2() {
    let d = Daemon::start("");
    let a = exchange_open(d.addr, &wrap(b"0100001000010978ORDER00042", Wrapping::Stx));
    assert_eq!(a, wrap(b"010000010001978ORDER00042", Wrapping::Stx));
    assert_eq!(a.len(), 28);
    let a = exchange_open(
        d.addr,
        &wrap(b"0100001051110978          A010B010", Wrapping::Stx),
    );
    assert_eq!(a.len(), 83);
    assert!(a[1..].starts_with(b"017"));
    // Not a V2 frame: NAK.
    assert_eq!(
        exchange_open(d.addr, &wrap(b"01000010000109", Wrapping::Stx)),
        [concert::wire::framing::NAK]
    );
}
