//! Card numbers masked where they enter, and foreign text escaped in the
//! log, through the real daemon.

use crate::util::*;
use concert::wire::framing::{wrap, Wrapping};
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
    let ticket = concert::wire::base64::encode(b"CARTE 4970 1012 3456 0674\nMERCI\n");
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
    let (_, doc) = concert::wire::ticket::decode_zt(get(&a, "ZT").unwrap().as_bytes()).unwrap();
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
    let doc = concert::wire::base64::encode(
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
    // the unknown outcome (concertd-protocol.7, Safe retry), with its CF whole.
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

// ---- One masking policy for every value from outside (issue 21) ----

/// The test card, and the ways people, programs and tickets write it:
/// grouped by 4 with every separator the policy joins.
const CARD: &str = "4970101234560674";
const SEPARATORS: &[&str] = &["  ", "\t", ".", "/", "_", "\u{a0}", " - "];
/// Those a TLV element or a configuration word can carry (printable ASCII).
const ASCII_SEPARATORS: &[&str] = &["  ", ".", "/", "_", " - "];

fn grouped(sep: &str) -> String {
    let groups: Vec<&str> = (0..4).map(|i| &CARD[i * 4..i * 4 + 4]).collect();
    groups.join(sep)
}

/// Whether `text` (a log, a journal, a control reply, a ticket) holds 11
/// or more digits of the test card in a row, whatever separates them and
/// however they are escaped (`\xNN`, `\u{N}` in logs, `%XX` in the journal).
fn holds_card(text: &str) -> bool {
    let c: Vec<char> = text.chars().collect();
    let hex = |k: usize| c.get(k).is_some_and(char::is_ascii_hexdigit);
    let mut kept = String::new();
    let mut i = 0;
    while i < c.len() {
        if c[i] == '\\' && c.get(i + 1) == Some(&'x') && hex(i + 2) && hex(i + 3) {
            i += 4;
        } else if c[i] == '\\' && c.get(i + 1) == Some(&'u') && c.get(i + 2) == Some(&'{') {
            i += 3;
            while i < c.len() && c[i] != '}' {
                i += 1;
            }
            i += 1;
        } else if c[i] == '%' && hex(i + 1) && hex(i + 2) {
            i += 3;
        } else {
            // Digits, letters and masks make the text; the rest separates.
            if c[i].is_alphanumeric() || c[i] == '#' {
                kept.push(c[i]);
            }
            i += 1;
        }
    }
    (0..=CARD.len() - 11).any(|k| kept.contains(&CARD[k..k + 11]))
}

#[test]
fn the_card_check_finds_every_shape_and_passes_masked_ones() {
    for sep in SEPARATORS {
        assert!(holds_card(&grouped(sep)), "{sep:?}");
        assert!(holds_card(&concert::wire::pan::escape(
            grouped(sep).as_bytes()
        )));
        let mut m = grouped(sep).into_bytes();
        concert::wire::pan::mask_in_place(&mut m);
        assert!(!holds_card(&String::from_utf8(m).unwrap()), "{sep:?}");
    }
    assert!(holds_card("4970 1012\n3456 0674"));
    assert!(!holds_card("497010######0674 1796089883005"));
}

/// A program that writes the card in every shape on standard output (as
/// lines that are not KEY=value, as keys, in AA) and standard error, and
/// a ticket holding every shape and one number cut across two lines.
#[test]
fn a_programs_output_stderr_and_ticket_are_masked_in_every_shape() {
    let dir = temp_dir();
    let mut ticket = String::from("CARTE 4970 1012\n3456 0674\n");
    let mut sh = String::from("#!/bin/sh\necho AE=10\necho 'AA=4970  1012  3456  0674'\n");
    for sep in SEPARATORS {
        let g = grouped(sep);
        sh.push_str(&format!("printf '%s\\n' 'card {g}'\n"));
        sh.push_str(&format!("printf '%s\\n' '{g}=x'\n"));
        sh.push_str(&format!("printf '%s\\n' 'stderr {g}' >&2\n"));
        ticket.push_str(&format!("CARTE {g}\n"));
    }
    sh.push_str(&format!(
        "echo 'TICKET={}'\n",
        concert::wire::base64::encode(ticket.as_bytes())
    ));
    let script = dir.join("shapes.sh");
    std::fs::write(&script, sh).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::start_with(&format!("terminal exec {}", script.display()), &["-vv"]);
    // CK: the register prints the ticket.
    let a = exchange(d.addr, debit("100", "CK003100").as_bytes());
    assert_eq!(get(&a, "AE").unwrap(), "10");
    assert_eq!(get(&a, "AA").unwrap(), "4970  10##  ####  0674");
    let zt = get(&a, "ZT").unwrap_or_else(|| panic!("{}\n{}", text(&a), d.log_text()));
    let (_, doc) = concert::wire::ticket::decode_zt(zt.as_bytes()).unwrap();
    let doc = String::from_utf8(doc).unwrap();
    assert!(doc.starts_with("CARTE 4970 10##\n#### 0674\n"), "{doc}");
    assert!(!holds_card(&doc), "{doc}");
    d.wait_log_n(": stderr ", SEPARATORS.len());
    d.wait_log("approved");
    let log = d.log_text();
    assert!(!holds_card(&log), "{log}");
    assert!(
        log.contains("stderr 4970\\x0910##\\x09####\\x090674"),
        "{log}"
    );
    let journal = d.journal();
    assert!(!holds_card(&journal), "{journal}");
}

/// Request elements: an e-mail whose domain is a card number, an IM that
/// is not one of our ids, a CF in every printable shape (wire trace and
/// journal), and bytes after a request in every shape.
#[test]
fn request_values_are_masked_in_log_trace_and_journal() {
    let d = Daemon::start_with("", &["-vv"]);
    let bi = format!("BI{:03}a@{CARD}.fr", CARD.len() + 5);
    let a = exchange(d.addr, debit("100", &bi).as_bytes());
    assert_eq!(get(&a, "AE").unwrap(), "10");
    d.wait_log("receipt sent by e-mail to a***@497010######0674.fr");
    let refund = format!(
        "CZ0040320CJ012247300123456CA00201CB003100CD0011CE003978IM{:03}{CARD}",
        CARD.len()
    );
    let a = exchange(d.addr, refund.as_bytes());
    assert_eq!(get(&a, "AF").unwrap(), "04");
    d.wait_log("refund by reference refused AF04: tx 497010######0674 is not known");
    for sep in ASCII_SEPARATORS {
        let cf = grouped(sep);
        let req = debit("100", &format!("CF{:03}{cf}", cf.len()));
        let a = exchange(d.addr, req.as_bytes());
        assert_eq!(
            get(&a, "CF").unwrap(),
            cf,
            "the register's own CF comes back"
        );
    }
    for sep in SEPARATORS {
        let mut s = connect(d.addr);
        s.write_all(format!("{}\r\n{}", debit("100", ""), grouped(sep)).as_bytes())
            .unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(get(&read_all(&mut s), "AE").unwrap(), "10");
    }
    d.wait_log_n("after the request ignored", SEPARATORS.len());
    let log = d.log_text();
    assert!(!holds_card(&log), "{log}");
    let journal = d.journal();
    assert!(!holds_card(&journal), "{journal}");
}

/// An upstream's answers: the card in every printable shape in AA, in
/// an element of a status answer that describes no payment (logged), and
/// in its ticket, cut across two lines.
#[test]
fn an_upstreams_answers_are_masked_in_every_shape() {
    use std::io::Read;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = l.local_addr().unwrap();
    let shapes: Vec<String> = ASCII_SEPARATORS.iter().map(|s| grouped(s)).collect();
    let answers = shapes.clone();
    std::thread::spawn(move || {
        let mut n = 0;
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            s.set_read_timeout(Some(PATIENCE)).unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while concert::wire::request::parse(&buf, &[978]).is_err() {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                }
            }
            let req = text(&buf);
            let g = &answers[(n / 2) % answers.len()];
            let a = if get(req.as_bytes(), "CD").as_deref() == Some("T") {
                format!("{req}AE00201AF00212ZZ{:03}{g}", g.len())
            } else {
                let doc = concert::wire::base64::encode(
                    format!("CARTE {g}\n4970 1012\n3456 0674\n").as_bytes(),
                );
                format!("{req}AE00210AA{:03}{g}ZT{:03}{doc}", g.len(), doc.len())
            };
            n += 1;
            let _ = s.write_all(a.as_bytes());
        }
    });
    let d = Daemon::start(&format!(
        "terminal relay tcp {up} v3\ntransaction-timeout 5s"
    ));
    for g in &shapes {
        let a = exchange(d.addr, debit("100", "").as_bytes());
        assert_eq!(get(&a, "AE").unwrap(), "10", "{}", text(&a));
        let aa = get(&a, "AA").unwrap();
        assert!(!holds_card(&aa), "{aa}");
        assert!(aa.contains("10##") && aa.len() == g.len(), "{aa} {g}");
        let (_, doc) = concert::wire::ticket::decode_zt(get(&a, "ZT").unwrap().as_bytes()).unwrap();
        assert!(!holds_card(&text(&doc)), "{}", text(&doc));
    }
    d.wait_log_n("describes no payment", shapes.len());
    let log = d.log_text();
    assert!(!holds_card(&log), "{log}");
    let journal = d.journal();
    assert!(!holds_card(&journal), "{journal}");
}

/// Control commands: a card number in every shape is neither run nor
/// shown whole (log and reply); control and format characters in a
/// command are escaped in the log.
#[test]
fn control_commands_are_masked_and_escaped() {
    let d = Daemon::start_with("control @DIR@/control.sock\n", &["-v"]);
    let ask = |line: &str| {
        let mut s = std::os::unix::net::UnixStream::connect(d.control_socket()).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s.write_all(line.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut s, &mut out);
        out
    };
    for sep in SEPARATORS {
        let reply = ask(&format!("next approved {}\n", grouped(sep)));
        assert!(reply.starts_with("refused\n"), "{reply}");
        assert!(!holds_card(&reply), "{reply}");
        // A word alone can show 12 digits of it.
        let reply = ask(&format!("decide {}\n", grouped(sep).replacen(sep, "", 2)));
        assert!(!holds_card(&reply), "{reply}");
    }
    let reply = ask("next approved\x1b[2K\u{2028}\u{202e}x\n");
    assert!(reply.starts_with("refused\n"), "{reply}");
    d.wait_log("control: next approved\\x1b[2K\\u{2028}\\u{202e}x: refused");
    d.wait_log_n("holding a card number refused", 2 * SEPARATORS.len());
    let log = d.log_text();
    assert!(!holds_card(&log), "{log}");
    assert!(!log.contains(['\x1b', '\u{2028}', '\u{202e}']), "{log}");
}

/// Configuration values: a path and a word of the file holding a card
/// number, shown by the log (running summary, reload refusals) and by
/// `status` and `reload` replies.
#[test]
fn configuration_values_are_masked_in_log_and_replies() {
    let d = Daemon::start_with("control @DIR@/control.sock\n", &["-v"]);
    // A payment program in a directory named by the card.
    let home = d.dir.join(grouped("."));
    std::fs::create_dir_all(&home).unwrap();
    let prog = home.join("pay.sh");
    std::fs::write(&prog, "#!/bin/sh\necho AE=10\n").unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    let base = format!(
        "listen {}\ncontrol {}\n{}",
        d.addr,
        d.control_socket().display(),
        d.base_config()
    );
    let mut replies = String::new();
    for sep in SEPARATORS {
        d.write_config(&format!("{base}currency \"{}\"\n", grouped(sep)));
        let o = d.ctl(&["reload"]);
        replies.push_str(&stdout(&o));
        replies.push_str(&stderr(&o));
    }
    d.wait_log_n("reload:", SEPARATORS.len());
    d.write_config(&format!("{base}terminal exec \"{}\"\n", prog.display()));
    let o = d.ctl(&["reload"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    replies.push_str(&stdout(&o));
    d.wait_log("reloaded: listen ");
    let o = d.ctl(&["status"]);
    let status = stdout(&o);
    assert!(status.contains(".####.0674/pay.sh"), "{status}");
    replies.push_str(&status);
    assert!(!holds_card(&replies), "{replies}");
    let log = d.log_text();
    assert!(!holds_card(&log), "{log}");
}

/// The serial device and the simulator script are configuration values
/// too: a path named by a card number is shown masked in the log, the
/// journal's peer and `concertctl status`, and still opened by its name.
#[test]
fn serial_device_and_script_paths_are_masked_where_shown() {
    let dir = temp_dir();
    let named = dir.join(grouped("."));
    std::fs::create_dir_all(&named).unwrap();
    let tty = named.join("tty");
    let _pty = crate::serial::pty(&tty);
    let script = named.join("exam.script");
    std::fs::write(&script, "approve\n").unwrap();
    let d = Daemon::start_with(
        &format!(
            "control @DIR@/control.sock\nserial {}\nsimulator-script {}\n{}",
            tty.display(),
            script.display(),
            crate::serial::TIMERS
        ),
        &["-v"],
    );
    d.wait_log(": open, 9600 baud");
    // Played over TCP: the script's line is named in the journal.
    let a = exchange(d.addr, b"CZ0040320CA00201CB0041000CD0010CE003978");
    assert_eq!(get(&a, "AE").unwrap(), "10");
    d.wait_log("consumed");
    let status = stdout(&d.ctl(&["status"]));
    assert!(status.contains(".####.0674/tty"), "{status}");
    for (what, text) in [
        ("status", status),
        ("log", d.log_text()),
        ("journal", d.journal()),
    ] {
        assert!(!holds_card(&text), "{what}: {text}");
    }
}
