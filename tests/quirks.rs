//! The simulator on demand, seen from the register's side: each outcome
//! and quirk of a `simulator-script`, through the real binaries.

use crate::serial::{frame, pty, relay, TIMERS};
use crate::util::*;
use concert::wire::framing::{ACK, NAK};
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::time::Duration;

/// A debit of 10.00 EUR; with `BF=1` partial payment is allowed.
const DEBIT: &str = "CZ0040320CA00201CB0041000CD0010CE003978";
const STATUS: &str = "CZ0040320CJ012247300123456CA00201CD001T";

/// A daemon playing `script`, with `extra` configuration lines.
fn scripted(script: &str, extra: &str) -> (Daemon, String) {
    let dir = temp_dir();
    let path = dir.join("scenario");
    std::fs::write(&path, script).unwrap();
    let d = Daemon::start(&format!("simulator-script {}\n{extra}", path.display()));
    (d, path.display().to_string())
}

fn pay(d: &Daemon, req: &str) -> Vec<u8> {
    exchange(d.addr, req.as_bytes())
}

#[test]
fn every_outcome_in_script_order_then_the_amount_table() {
    let (d, path) = scripted(
        "# every outcome, one transaction each\n\
         refuse\nforbidden\nabandon\nnot-ended\ntimeout\nphone\n\
         partial=400   # without BF=1: refused\n\
         partial=400\n\
         approve\n",
        "",
    );
    for (i, af) in ["04", "05", "06", "07", "08", "02", "04"]
        .iter()
        .enumerate()
    {
        let a = pay(&d, DEBIT);
        assert_eq!(
            get(&a, "AE").as_deref(),
            Some("01"),
            "line {i}: {}",
            text(&a)
        );
        assert_eq!(
            get(&a, "AF").as_deref(),
            Some(*af),
            "line {i}: {}",
            text(&a)
        );
    }
    let a = pay(&d, &format!("{DEBIT}BF0011"));
    assert_eq!(get(&a, "AE").as_deref(), Some("10"), "{}", text(&a));
    assert_eq!(get(&a, "CB").as_deref(), Some("0400"), "{}", text(&a));
    // 10.51 is refused by the table: approved on demand, then refused.
    let d1051 = DEBIT.replace("CB0041000", "CB0041051");
    assert_eq!(get(&pay(&d, &d1051), "AE").as_deref(), Some("10"));
    d.wait_log("consumed, the amount table decides again");
    assert_eq!(get(&pay(&d, &d1051), "AF").as_deref(), Some("04"));
    // Each line named in the log and in the journal, in order.
    for (n, line) in [
        (2, "refuse"),
        (3, "forbidden"),
        (9, "partial=400"),
        (10, "approve"),
    ] {
        let said = format!("simulator: script {path}:{n}: {line}");
        d.wait_log(&said);
        assert!(d
            .journal()
            .contains(&format!("simulated script {path}:{n}: {line}")));
    }
    d.wait_log("without partial payment (BF=1): refused");
}

#[test]
fn unknown_loses_the_answer_and_status_says_not_ended() {
    let (d, _) = scripted("unknown\n", "");
    assert_eq!(pay(&d, DEBIT), b"", "no answer");
    d.wait_log("simulator: unknown, the answer is lost");
    let s = pay(&d, STATUS);
    assert_eq!(get(&s, "AF").as_deref(), Some("07"), "{}", text(&s));
    let j = d.journal();
    assert!(j.contains(" ended unknown "), "{j}");
    assert!(j.contains(" undelivered simulator: unknown"), "{j}");
}

#[test]
fn busy_answers_busy_without_a_transaction() {
    let (d, _) = scripted("busy\nrefuse\n", "");
    let a = pay(&d, DEBIT);
    assert_eq!(get(&a, "AE").as_deref(), Some("01"), "{}", text(&a));
    assert_eq!(get(&a, "AF"), None, "the busy answer has no AF");
    d.wait_log("refused busy: script");
    assert!(!d.journal().contains(" begun "), "no transaction");
    assert_eq!(
        get(&pay(&d, DEBIT), "AF").as_deref(),
        Some("04"),
        "next line"
    );
}

#[test]
fn split_answers_come_in_several_reads() {
    let (d, _) = scripted("approve split=3:100ms\n", "");
    let mut s = connect(d.addr);
    s.write_all(DEBIT.as_bytes()).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let (mut reads, mut all) = (0, Vec::new());
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                reads += 1;
                all.extend_from_slice(&buf[..n]);
            }
            Err(e) => panic!("read: {e}"),
        }
    }
    assert!(reads >= 2, "{reads} read(s) of {}", text(&all));
    assert!(all.starts_with(DEBIT.as_bytes()), "{}", text(&all));
    assert_eq!(get(&all, "AE").as_deref(), Some("10"));
    d.wait_log("answer in 3 writes, 100ms apart (split)");
}

#[test]
fn crlf_no_cb_and_late_shape_the_answer() {
    let (d, _) = scripted("approve crlf\napprove no-cb late=100ms\n", "");
    let a = pay(&d, DEBIT);
    assert!(a.ends_with(b"\r\n"), "{}", text(&a));
    assert_eq!(get(&a[..a.len() - 2], "AE").as_deref(), Some("10"));
    let a = pay(&d, DEBIT);
    assert_eq!(get(&a, "AE").as_deref(), Some("10"), "{}", text(&a));
    assert_eq!(get(&a, "CB"), None, "{}", text(&a));
    d.wait_log("answer without its amount CB (no-cb)");
    d.wait_log("answer 100ms late (late)");
}

#[test]
fn silent_closes_and_status_returns_the_outcome() {
    let (d, _) = scripted("approve silent\n", "");
    assert_eq!(pay(&d, DEBIT), b"");
    d.wait_log("simulator: silent, closed without an answer");
    let s = pay(&d, STATUS);
    assert_eq!(get(&s, "AE").as_deref(), Some("10"), "{}", text(&s));
    assert!(d.journal().contains(" ended approved "));
}

#[test]
fn reset_instead_of_the_answer() {
    let (d, _) = scripted("refuse reset\n", "");
    let mut s = connect(d.addr);
    s.write_all(DEBIT.as_bytes()).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut buf = Vec::new();
    let e = s.read_to_end(&mut buf).expect_err("a reset, not an end");
    assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
    assert!(buf.is_empty(), "{}", text(&buf));
    d.wait_log("simulator: reset instead of the answer");
}

#[test]
fn open_keeps_the_connection_until_the_register_closes() {
    let (d, _) = scripted("approve open\n", "");
    let mut s = connect(d.addr);
    s.write_all(DEBIT.as_bytes()).unwrap();
    // Like a client that never shuts its side: the answer comes, then no
    // end of stream until it closes.
    d.wait_log("connection kept open after the answer");
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        match s.read(&mut buf) {
            Ok(0) => break "closed",
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break "still open"
            }
            Err(e) => panic!("read: {e}"),
        }
    };
    assert_eq!(get(&all, "AE").as_deref(), Some("10"), "{}", text(&all));
    assert_eq!(end, "still open");
    drop(s);
    d.wait_log("open: the register closed the connection");
}

#[test]
fn a_serial_quirk_on_tcp_is_noted_not_applied() {
    let (d, _) = scripted("approve bad-lrc\n", "");
    assert_eq!(get(&pay(&d, DEBIT), "AE").as_deref(), Some("10"));
    d.wait_log("bad-lrc not applied: the transaction came over tcp");
    assert!(d.journal().contains("bad-lrc not applied"));
}

#[test]
fn nak_first_then_the_retransmission_is_taken() {
    let dir = temp_dir();
    let link = dir.join("tty");
    let mut r = pty(&link);
    let script = dir.join("scenario");
    std::fs::write(&script, "refuse nak-first crlf\n").unwrap();
    let d = Daemon::start(&format!(
        "serial {}\n{TIMERS}\nsimulator-script {}",
        link.display(),
        script.display()
    ));
    d.wait_log(": open, 9600 baud 7E1");
    assert_eq!(r.request(DEBIT.as_bytes()), NAK);
    r.send(&frame(DEBIT.as_bytes()));
    assert_eq!(r.byte(), ACK);
    r.send(&[concert::wire::framing::EOT]);
    let a = r.answer();
    assert_eq!(get(&a, "AF").as_deref(), Some("04"), "{}", text(&a));
    d.wait_log("simulator nak-first: NAK");
    let j = d.journal();
    assert!(j.contains("nak-first applied before the request"), "{j}");
    assert!(
        j.contains("crlf not applied: the transaction came over serial"),
        "{j}"
    );
}

#[test]
fn bad_lrc_is_retransmitted_and_accepted_by_concert() {
    let dir = temp_dir();
    let (tpe, ecr) = (dir.join("ttyTPE"), dir.join("ttyECR"));
    let _relay = relay(pty(&tpe), pty(&ecr));
    let script = dir.join("scenario");
    std::fs::write(&script, "approve bad-lrc\n").unwrap();
    let d = Daemon::start(&format!(
        "serial {}\n{TIMERS}\nsimulator-script {}",
        tpe.display(),
        script.display()
    ));
    d.wait_log(": open, 9600 baud 7E1");
    let o = d.concert(&["-s", ecr.to_str().unwrap(), "pay", "12.34"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).starts_with("approved: debit 12.34 EUR"),
        "{}",
        stdout(&o)
    );
    d.wait_log("first try with a wrong LRC (bad-lrc)");
}

#[test]
fn a_bad_script_line_is_a_configuration_error_with_its_place() {
    let dir = temp_dir();
    let script = dir.join("scenario");
    std::fs::write(&script, "approve\n# fine\nrefuse wobble\n").unwrap();
    let conf = dir.join("c.conf");
    std::fs::write(&conf, format!("simulator-script {}\n", script.display())).unwrap();
    let o = run(CONCERTD, &["-n", "-f", conf.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&format!(
            "{}:3: \"wobble\" is not a quirk",
            script.display()
        )),
        "{e}"
    );
    std::fs::write(
        &conf,
        format!(
            "terminal exec /bin/true\nsimulator-script {}\n",
            script.display()
        ),
    )
    .unwrap();
    let o = run(CONCERTD, &["-n", "-f", conf.to_str().unwrap()]);
    let e = stderr(&o);
    assert!(
        e.contains("c.conf:2: simulator-script needs terminal simulator"),
        "{e}"
    );
}

#[test]
fn no_ack_then_the_registers_second_enq_is_taken() {
    let dir = temp_dir();
    let link = dir.join("tty");
    let mut r = pty(&link);
    let script = dir.join("scenario");
    std::fs::write(&script, "approve no-ack\n").unwrap();
    let d = Daemon::start(&format!(
        "serial {}\n{TIMERS}\nsimulator-script {}",
        link.display(),
        script.display()
    ));
    d.wait_log(": open, 9600 baud 7E1");
    r.send(&[concert::wire::framing::ENQ]);
    // Withheld: the register's next ENQ is its retry, and is ACKed once.
    d.wait_log("ENQ not ACKed (simulator no-ack)");
    assert_eq!(r.request(DEBIT.as_bytes()), ACK);
    r.send(&[concert::wire::framing::EOT]);
    let a = r.answer();
    assert_eq!(get(&a, "AE").as_deref(), Some("10"), "{}", text(&a));
    assert!(d.journal().contains("no-ack applied before the request"));
}

#[test]
fn nak_first_and_no_ack_wait_for_a_transaction() {
    let dir = temp_dir();
    let link = dir.join("tty");
    let mut r = pty(&link);
    let script = dir.join("scenario");
    std::fs::write(&script, "refuse nak-first no-ack\n").unwrap();
    let d = Daemon::start(&format!(
        "serial {}\n{TIMERS}\nsimulator-script {}",
        link.display(),
        script.display()
    ));
    d.wait_log(": open, 9600 baud 7E1");
    // A status request first. Its ENQ meets the no-ack (an ENQ does not say
    // what follows), its frame is not NAKed, and the no-ack is kept.
    r.send(&[concert::wire::framing::ENQ]);
    d.wait_log("ENQ not ACKed (simulator no-ack)");
    assert_eq!(r.request(STATUS.as_bytes()), ACK, "status frame NAKed");
    let a = r.answer();
    assert_eq!(get(&a, "CD").as_deref(), Some("T"), "{}", text(&a));
    d.wait_log("no-ack kept for a transaction's ENQ");
    // The debit: its ENQ is not ACKed, its first frame is NAKed.
    r.send(&[concert::wire::framing::ENQ]);
    d.wait_log_n("ENQ not ACKed (simulator no-ack)", 2);
    assert_eq!(r.request(DEBIT.as_bytes()), NAK);
    r.send(&frame(DEBIT.as_bytes()));
    assert_eq!(r.byte(), ACK);
    r.send(&[concert::wire::framing::EOT]);
    let a = r.answer();
    assert_eq!(get(&a, "AF").as_deref(), Some("04"), "{}", text(&a));
    let j = d.journal();
    assert!(j.contains("nak-first applied before the request"), "{j}");
    assert!(j.contains("no-ack applied before the request"), "{j}");
}

#[test]
fn slow_enq_opens_the_answer_session_late_and_says_so() {
    let dir = temp_dir();
    let link = dir.join("tty");
    let mut r = pty(&link);
    let script = dir.join("scenario");
    std::fs::write(&script, "refuse slow-enq=300ms\n").unwrap();
    let d = Daemon::start(&format!(
        "serial {}\n{TIMERS}\nsimulator-script {}",
        link.display(),
        script.display()
    ));
    d.wait_log(": open, 9600 baud 7E1");
    assert_eq!(r.request(DEBIT.as_bytes()), ACK);
    r.send(&[concert::wire::framing::EOT]);
    d.wait_log("our ENQ 300ms late (slow-enq)");
    let a = r.answer();
    assert_eq!(get(&a, "AF").as_deref(), Some("04"), "{}", text(&a));
}

/// What `concert` says of a payment whose request went out unanswered.
const UNKNOWN: &str = "the request went out: the outcome is unknown (it may have been \
                       approved); run `concert status` to fetch it before trying again";

#[test]
fn concert_reads_an_answer_followed_by_crlf() {
    let (d, _) = scripted("approve crlf\nrefuse crlf\napprove crlf\n", "");
    let o = d.concert(&["pay", "10"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).starts_with("approved: debit 10.00 EUR, register 01\n"),
        "{}",
        stdout(&o)
    );
    assert_eq!(stderr(&o), "", "ignored without -v");
    let o = d.concert(&["pay", "10"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).starts_with("declined: debit 10.00 EUR, register 01: refused (AF 04)"),
        "{}",
        stdout(&o)
    );
    // -v says what was left aside.
    let o = d.concert(&["-v", "pay", "10"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        stderr(&o),
        "concert: ignored 2 bytes after the answer's last element: \\x0d\\x0a\n"
    );
}

#[test]
fn a_payment_closed_or_reset_after_its_request_is_unknown_not_failed() {
    let (d, _) = scripted("approve silent\napprove reset\n", "");
    for quirk in ["silent", "reset"] {
        let o = d.concert(&["pay", "10"]);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(3), "{quirk}: {}{e}", stdout(&o));
        assert!(e.contains(UNKNOWN), "{quirk}: {e}");
        assert!(!e.contains("is this address allowed"), "{quirk}: {e}");
        assert_eq!(stdout(&o), "", "{quirk}");
        // And it was approved: what the status says.
        let o = d.concert(&["status"]);
        assert_eq!(o.status.code(), Some(0), "{quirk}: {}", stderr(&o));
        assert!(
            stdout(&o).starts_with("approved: debit 10.00 EUR"),
            "{quirk}: {}",
            stdout(&o)
        );
    }
    d.wait_log("simulator: silent, closed without an answer");
    d.wait_log("simulator: reset instead of the answer");
}

#[test]
fn concert_s_keeps_a_nak_apart_from_a_lost_answer() {
    let dir = temp_dir();
    let (tpe, ecr) = (dir.join("ttyTPE"), dir.join("ttyECR"));
    let _relay = relay(pty(&tpe), pty(&ecr));
    let script = dir.join("scenario");
    std::fs::write(&script, "refuse nak-first\nunknown\n").unwrap();
    let d = Daemon::start(&format!(
        "serial {}\n{TIMERS}\nsimulator-script {}",
        tpe.display(),
        script.display()
    ));
    d.wait_log(": open, 9600 baud 7E1");
    let ecr = ecr.to_str().unwrap();
    // NAKed: the terminal did not take it, and it is sent again; the
    // NAKed frame never ran: the plan is the one taken.
    let o = d.concert(&["-s", ecr, "pay", "10"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    d.wait_log("simulator nak-first: NAK");
    // ACKed, then no answer: the outcome is unknown.
    let o = d.concert(&["-s", ecr, "-t", "1", "pay", "10"]);
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains(UNKNOWN), "{}", stderr(&o));
    d.wait_log("simulator: unknown, the answer is lost");
}

/// A daemon on a pty playing `script`, the register on the other side.
fn serial_scripted(script: &str) -> (Daemon, crate::serial::Register) {
    let dir = temp_dir();
    let link = dir.join("tty");
    let r = pty(&link);
    let path = dir.join("scenario");
    std::fs::write(&path, script).unwrap();
    let d = Daemon::start(&format!(
        "serial {}\n{TIMERS}\nsimulator-script {}",
        link.display(),
        path.display()
    ));
    d.wait_log(": open, 9600 baud 7E1");
    (d, r)
}

/// pypostelium's V2 request for 10.00 EUR with an immediate answer (A011).
const V2_IMMEDIATE: &[u8] = b"0100001000010978          A011B010";

#[test]
fn an_immediate_answer_takes_no_answer_quirk_and_its_loss_is_journaled_with_its_tx() {
    let (d, mut r) = serial_scripted("approve bad-lrc slow-enq=300ms\n");
    assert_eq!(r.request(V2_IMMEDIATE), ACK);
    // The immediate answer, with a good LRC and at once; the outcome is
    // not sent: the quirks had nothing to act on, and the journal says so.
    assert_eq!(r.answer(), b"019000010001978          ");
    d.wait_log("outcome kept for a status request");
    let j = d.journal();
    assert!(
        j.contains("bad-lrc not applied: an immediate answer went out, the outcome is not sent"),
        "{j}"
    );
    assert!(
        j.contains("slow-enq=300ms not applied: an immediate answer"),
        "{j}"
    );
    assert!(!d.log_text().contains("late (slow-enq)"));
    // The register does not take the next immediate answer: said with its
    // transaction, and journaled.
    r.send(&[concert::wire::framing::ENQ]);
    assert_eq!(r.byte(), ACK);
    r.send(&frame(V2_IMMEDIATE));
    assert_eq!(r.byte(), ACK);
    r.send(&[concert::wire::framing::EOT]);
    let said = d.wait_log(": immediate answer not delivered (no ACK to 3 ENQ)");
    let tx = said.split("tx ").nth(1).and_then(|t| t.split(':').next());
    let tx = tx.expect("said with its transaction");
    let j = d.journal();
    assert!(j.contains(&format!("{tx} begun serial")), "{tx}: {j}");
    assert!(j.contains("immediate answer: no ACK to 3 ENQ"), "{j}");
}

#[test]
fn nak_first_spent_on_a_request_that_never_started_is_not_said_applied() {
    let (d, mut r) = serial_scripted("refuse nak-first\nrefuse nak-first\n");
    // The register gives up on its NAKed debit.
    assert_eq!(r.request(DEBIT.as_bytes()), NAK);
    r.send(&[concert::wire::framing::EOT]);
    d.wait_log("simulator nak-first: NAK");
    // The plan's transaction comes over TCP: the NAK was not its own.
    let a = pay(&d, DEBIT);
    assert_eq!(get(&a, "AF").as_deref(), Some("04"), "{}", text(&a));
    let j = d.journal();
    assert!(
        j.contains(
            "nak-first not applied: the transaction came over tcp (spent on a serial request \
             that did not start)"
        ),
        "{j}"
    );
    assert!(!j.contains("nak-first applied"), "{j}");
    // Serial again: the first debit is NAKed and given up; another debit
    // then has its own first frame NAKed, and takes the plan.
    assert_eq!(r.request(DEBIT.as_bytes()), NAK);
    r.send(&[concert::wire::framing::EOT]);
    let other = DEBIT.replace("CB0041000", "CB0042000");
    assert_eq!(r.request(other.as_bytes()), NAK, "its own first frame");
    r.send(&frame(other.as_bytes()));
    assert_eq!(r.byte(), ACK);
    r.send(&[concert::wire::framing::EOT]);
    let a = r.answer();
    assert_eq!(get(&a, "CB").as_deref(), Some("2000"), "{}", text(&a));
    assert_eq!(get(&a, "AF").as_deref(), Some("04"), "{}", text(&a));
    d.wait_log("nak-first spent on a request that did not start");
    assert!(d.journal().contains("nak-first applied before the request"));
}

#[test]
fn slow_enq_leaves_the_line_listening() {
    // Long enough for the status exchange below to fit in, under load.
    let (d, mut r) = serial_scripted("refuse slow-enq=4s\n");
    assert_eq!(r.request(DEBIT.as_bytes()), ACK);
    d.wait_log("our ENQ 4s late (slow-enq)");
    // Meanwhile the register asks for the status: its ENQ is ACKed (a
    // line that slept would open its own session instead) and answered
    // with the outcome.
    assert_eq!(r.request(STATUS.as_bytes()), ACK);
    let s = r.answer();
    assert_eq!(get(&s, "AF").as_deref(), Some("04"), "{}", text(&s));
    // Then the debit's answer, late, once the status was answered.
    let a = r.answer();
    assert_eq!(get(&a, "AF").as_deref(), Some("04"), "{}", text(&a));
    loop_until(|| d.journal().contains(" delivered").then_some(()));
}

#[test]
fn noise_shaped_like_a_frame_is_not_answered_before_the_next_enq() {
    // Found by `make stress` (stage 5): line noise that happened to hold
    // STX ... ETX and a byte, sent just before a register's ENQ, was NAKed,
    // and the register read that NAK as the answer to its ENQ.
    let (d, mut r) = serial_scripted("");
    let mut noise = vec![0x7f, STX_BYTE];
    noise.extend_from_slice(b"\x11garbage");
    noise.extend_from_slice(&[0x03, 0x42]);
    r.send(&noise);
    assert_eq!(r.request(DEBIT.as_bytes()), ACK, "the ENQ's answer");
    let a = r.answer();
    assert_eq!(get(&a, "AE").as_deref(), Some("10"), "{}", text(&a));
    assert_eq!(d.journal().matches(" begun ").count(), 1, "{}", d.journal());
}

/// The byte that opens a frame.
const STX_BYTE: u8 = 0x02;

#[test]
fn a_framed_request_after_three_naks_is_never_read_as_a_raw_one() {
    let (d, mut r) = serial_scripted("");
    let mut bad = frame(DEBIT.as_bytes());
    if let Some(l) = bad.last_mut() {
        *l ^= 0x01;
    }
    r.send(&[concert::wire::framing::ENQ]);
    assert_eq!(r.byte(), ACK);
    for _ in 0..3 {
        r.send(&bad);
        assert_eq!(r.byte(), NAK);
    }
    d.wait_log("NAK (3/3), back to idle");
    // The register's last retry, in a session that is over for the
    // terminal: not taken, not answered (neither raw nor NAK).
    r.send(&frame(DEBIT.as_bytes()));
    d.wait_log("frame outside a session: not taken, not answered");
    // The next session is served as ever: the first byte after its ENQ
    // is the ACK, no answer to the frame before.
    assert_eq!(r.request(DEBIT.as_bytes()), ACK);
    let a = r.answer();
    assert_eq!(get(&a, "AE").as_deref(), Some("10"), "{}", text(&a));
    assert_eq!(d.journal().matches(" begun ").count(), 1, "{}", d.journal());
}

/// Over TCP too, an immediate answer (`BA=1`) the register never takes is
/// journaled with its transaction and said with its id: the register does
/// not know that its payment runs (issue 24, item 11).
#[test]
fn a_tcp_immediate_answer_not_taken_is_journaled_with_its_tx() {
    let d = Daemon::start("");
    let mut c = std::net::TcpStream::connect(d.addr).unwrap();
    // The request, then gone before any answer: the immediate answer
    // reaches a closed socket, whose system resets it.
    c.write_all(format!("{DEBIT}BA0011").as_bytes()).unwrap();
    drop(c);
    let said = d.wait_log(": immediate answer not delivered (");
    let id = said
        .split("tx ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .unwrap_or_else(|| panic!("{said}"))
        .to_string();
    loop_until(|| d.journal().contains(" undelivered ").then_some(()));
    let j = d.journal();
    assert!(
        j.lines().any(|l| l.contains(&id)
            && l.contains(" undelivered ")
            && l.contains("immediate answer: ")),
        "{j}"
    );
    // The payment ran all the same; its outcome waits for a status request.
    d.wait_log(&format!("tx {id}: debit approved"));
}
