//! Card numbers masked where they enter, and foreign text escaped in the
//! log, through the real daemon.

use crate::util::*;
use concert::framing::{wrap, Wrapping};
use std::io::Write;
use std::net::Shutdown;
use std::os::unix::fs::PermissionsExt;

const HEAD: &str = "CZ0040320CJ012247300123456CA00201";

fn debit(amount: &str, extra: &str) -> String {
    format!("{HEAD}CB{:03}{amount}CD0010CE003978{extra}", amount.len())
}

/// A payment program that writes card numbers the way people do, by
/// amount; every run says its transaction id on standard error. `@TICKET@`
/// is replaced by a base64 ticket holding a grouped card number.
const CARDS_SH: &str = r#"#!/bin/sh
echo "id=$CONCERT_ID" >&2
case "$CONCERT_AMOUNT" in
811) echo AE=10; echo "AA=4970 1012 3456 0674"
     echo "card 4970 1012 3456 0674 read" >&2
     printf 'evil\033[2K\rFORGED\n' >&2
     printf '4970-1012-3456-0674\033[2K=x\n'
     echo "TICKET=@TICKET@" ;;
812) echo AE=10; echo "AA=4970-1012-3456-0674" ;;
*) echo AE=10 ;;
esac
"#;

fn cards_daemon(flags: &[&str]) -> (Daemon, std::path::PathBuf) {
    let dir = temp_dir();
    let script = dir.join("cards.sh");
    let ticket = concert::base64::encode(b"CARTE 4970 1012 3456 0674\nMERCI\n");
    std::fs::write(&script, CARDS_SH.replace("@TICKET@", &ticket)).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::start_with(&format!("terminal exec {}", script.display()), flags);
    (d, dir)
}

/// Whether `text` shows the test card's digits past its first 6 and last
/// 4, however grouped.
fn shows_the_card(text: &str) -> bool {
    let digits: String = text.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    digits.contains("1234560") || digits.contains("0101234")
}

#[test]
fn grouped_card_numbers_from_a_program_are_masked_in_answer_journal_and_log() {
    let (d, _dir) = cards_daemon(&["-v"]);
    // The register's own CF and CH, card-like or not, come back as sent.
    let own = "CF0194970 1012 3456 0674CH003REFCK003100";
    let a = exchange(d.addr, debit("811", own).as_bytes());
    assert_eq!(get(&a, "AE").unwrap(), "10");
    assert_eq!(get(&a, "AA").unwrap(), "4970 10## #### 0674");
    assert_eq!(get(&a, "CF").unwrap(), "4970 1012 3456 0674");
    assert_eq!(get(&a, "CH").unwrap(), "REF");
    let (_, doc) = concert::ticket::decode_zt(get(&a, "ZT").unwrap().as_bytes()).unwrap();
    assert_eq!(text(&doc), "CARTE 4970 10## #### 0674\nMERCI\n");
    let a = exchange(d.addr, debit("812", "").as_bytes());
    assert_eq!(get(&a, "AA").unwrap(), "4970-10##-####-0674");
    d.wait_log("printed a full card number in AA: masked");
    d.wait_log("4970-10##-####-0674\\x1b[2K: bad or unknown value ignored");
    d.wait_log("card 4970 10## #### 0674 read");
    // A program's ESC and CR are shown, not obeyed.
    d.wait_log("evil\\x1b[2K\\x0dFORGED");
    d.wait_log_n("approved", 2);
    let log = d.log_text();
    assert!(!shows_the_card(&log), "{log}");
    assert!(!log.contains(['\x1b', '\r']), "{log}");
    let journal = d.journal();
    assert!(journal.contains("10## ####"), "{journal}");
    assert!(journal.contains("10##-####"), "{journal}");
    assert!(!shows_the_card(&journal), "{journal}");
}

fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let v = u32::from(d - b'0') * if i % 2 == 1 { 2 } else { 1 };
            if v > 9 {
                v - 9
            } else {
                v
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[test]
fn a_transaction_id_is_not_taken_for_a_card_number() {
    let (d, _dir) = cards_daemon(&["-v"]);
    // Ids are consecutive: one in ten passes Luhn, as a card number would.
    for n in 1..=30 {
        let a = exchange(d.addr, debit("100", "").as_bytes());
        assert_eq!(get(&a, "AE").unwrap(), "10");
        let line = d.wait_log_n(": id=", n);
        let id = line
            .split("tx ")
            .nth(1)
            .and_then(|r| r.split(':').next())
            .unwrap()
            .to_string();
        assert_eq!(id.len(), 13, "{line}");
        assert!(line.ends_with(&format!(": id={id}")), "{line}");
        if luhn(&id) {
            return;
        }
    }
    panic!("no Luhn-valid transaction id in 30");
}

#[test]
fn a_v2_reply_is_answered_and_traced_byte_exact() {
    let d = Daemon::start_with("", &["-vv"]);
    // Register, result, amount, mode, currency and private data make 25
    // digits, windows of which pass Luhn.
    let a = exchange_open(d.addr, &wrap(b"01000010000109781234567890", Wrapping::Stx));
    assert_eq!(a, wrap(b"0100000100019781234567890", Wrapping::Stx));
    d.wait_log("< 01|00001000|0|1|0|978|1234567890");
    d.wait_log("> \\x0201|0|00001000|1|978|1234567890\\x03");
}

#[test]
fn bytes_after_a_request_are_masked_whole_then_cut_and_escaped() {
    let d = Daemon::start("");
    let send = |trailing: &[u8]| {
        let mut s = connect(d.addr);
        s.write_all(format!("{}\r\n", debit("100", "")).as_bytes())
            .unwrap();
        s.write_all(trailing).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(get(&read_all(&mut s), "AE").unwrap(), "10");
    };
    // The card number straddles the 64th byte: cut first, 14 of its
    // digits would show.
    let card = format!("{}4970101234560674", "x".repeat(50));
    send(card.as_bytes());
    let line = d.wait_log("66 bytes after the request ignored");
    assert!(
        line.ends_with(&format!("{}497010######06", "x".repeat(50))),
        "{line}"
    );
    send(b"evil\x1b[2K\rFORGED");
    d.wait_log("after the request ignored: evil\\x1b[2K\\x0dFORGED");
    assert!(!d.log_text().contains(['\x1b', '\r']));
}

#[test]
fn a_document_to_print_cannot_forge_log_lines() {
    let d = Daemon::start("");
    let doc = concert::base64::encode(
        b"TICKET\x1b[2K\r2026-01-01T00:00:00.000Z ERROR forged\n4970 1012 3456 0674\n",
    );
    let req = format!("CZ0040320CA00201CD001PZT{:03}{doc}", doc.len());
    let a = exchange(d.addr, req.as_bytes());
    assert_eq!(get(&a, "AE").unwrap(), "10");
    d.wait_log("    TICKET\\x1b[2K\\x0d2026-01-01T00:00:00.000Z ERROR forged");
    d.wait_log("    4970 10## #### 0674");
    let log = d.log_text();
    assert!(!log.contains(['\x1b', '\r']), "{log}");
    assert!(!shows_the_card(&log), "{log}");
}

#[test]
fn a_grouped_card_like_cf_is_masked_and_unproven_after_a_restart() {
    // Masked in the journal, with a 12-bit check: after a restart a retry
    // matches its sale but nothing proves it is the same one, so it gets
    // the unknown outcome (concertd.8, Safe retry), with its CF whole.
    let mut d = Daemon::start("retry-window 1h");
    let sale = debit("2000", "CF0194970-1012-3456-0674");
    let a = exchange(d.addr, sale.as_bytes());
    assert_eq!(get(&a, "AE").unwrap(), "10");
    assert_eq!(get(&a, "CF").unwrap(), "4970-1012-3456-0674");
    assert_eq!(exchange(d.addr, sale.as_bytes()), a, "not replayed live");
    assert!(!shows_the_card(&d.journal()), "{}", d.journal());
    d.signal(libc::SIGTERM);
    d.wait_exit();
    d.spawn();
    let b = exchange(d.addr, sale.as_bytes());
    assert_eq!(get(&b, "AF").as_deref(), Some("07"), "{}", text(&b));
    assert_eq!(get(&b, "CF").unwrap(), "4970-1012-3456-0674");
    d.wait_log("not provably the same");
    assert!(!shows_the_card(&d.journal()), "{}", d.journal());
    assert!(!shows_the_card(&d.log_text()), "{}", d.log_text());
    // Another CF that masks the same way (another check) is another sale.
    let other = debit("2000", "CF0194970-1099-9988-0674");
    let c = exchange(d.addr, other.as_bytes());
    assert_eq!(get(&c, "AE").unwrap(), "10");
    assert_ne!(get(&c, "AC"), get(&a, "AC"));
}

#[test]
fn a_torn_journal_line_is_logged_masked_and_escaped_its_id_whole() {
    let mut d = Daemon::start("");
    d.signal(libc::SIGTERM);
    d.wait_exit();
    // 1796089883005 passes Luhn; the frame holds a grouped card number
    // (cut, it is masked as raw text: its length joins the run).
    let torn = "2026-11-26T16:00:00.000Z 1796089883005 begun tcp 127.0.0.1:1 01 \
                CZ0040320CF0194970 1012 3456 0674\x1b[2K";
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(d.dir.join("journal"))
        .unwrap();
    f.write_all(torn.as_bytes()).unwrap();
    drop(f);
    d.spawn();
    let line = d.wait_log("torn last line skipped");
    assert!(
        line.ends_with(
            "2026-11-26T16:00:00.000Z 1796089883005 begun tcp 127.0.0.1:1 01 \
             CZ0040320CF0194970 1### #### 0674\\x1b[2K"
        ),
        "{line}"
    );
}
