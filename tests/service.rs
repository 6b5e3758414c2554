//! The Concert Service's own operations and tags (PayXpress, HiPay):
//! deferred debit, refunds by reference, PayXpert answer tags, e-receipts.

use crate::util::*;
use std::os::unix::fs::PermissionsExt;

fn payment(cd: &str, amount: &str, extra: &str) -> String {
    format!(
        "CZ0040320CJ012247300123456CA00201CB{:03}{amount}CD001{cd}CE003978{extra}",
        amount.len()
    )
}

fn status() -> &'static [u8] {
    b"CZ0040320CJ012247300123456CA00201CD001T"
}

#[test]
fn a_deferred_debit_is_a_debit_in_every_way() {
    let d = Daemon::start("");
    // Approved by the simulator's amount table, with its ticket.
    let req = payment("7", "1000", "CK003100");
    let a = exchange(d.addr, req.as_bytes());
    assert!(
        text(&a).starts_with(&format!("{}AE00210AC006", payment("7", "1000", ""))),
        "{}",
        text(&a)
    );
    d.wait_log("deferred-debit 10.00 EUR register 01 from tcp");
    let (_, doc) = concert::wire::ticket::decode_zt(get(&a, "ZT").unwrap().as_bytes()).unwrap();
    let doc = String::from_utf8_lossy(&doc).to_string();
    assert!(doc.contains("DEBIT DIFFERE"), "{doc}");
    // CD=T gives it again, byte for byte.
    assert_eq!(exchange(d.addr, status()), a);
    // A cancellation of the same amount undoes it, as it undoes a debit.
    let c = exchange(d.addr, payment("2", "1000", "").as_bytes());
    assert!(text(&c).contains("AE00210"), "{}", text(&c));
    // Refused by amount (..51 is AF04 in the table).
    let r = exchange(d.addr, payment("7", "1051", "").as_bytes());
    assert_eq!(
        text(&r),
        format!("{}AE00201AF00204", payment("7", "1051", ""))
    );
    assert!(
        d.journal().contains(&payment("7", "1051", "")),
        "{}",
        d.journal()
    );
    // `concert defer` sends it and names it.
    let o = d.concert(&["defer", "12.34"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("approved: deferred debit 12.34 EUR, register 01\n"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_deferred_debit_obeys_the_one_transaction_rule_and_reaches_exec_by_name() {
    let gate = Gate::new();
    let d = Daemon::start(&gate.terminal());
    let held = std::thread::spawn({
        let addr = d.addr;
        move || exchange(addr, payment("0", "700", "").as_bytes())
    });
    d.wait_log("held 700");
    let busy = exchange(d.addr, payment("7", "800", "").as_bytes());
    assert_eq!(text(&busy), format!("{}AE00201", payment("7", "800", "")));
    gate.release();
    assert!(text(&held.join().unwrap()).contains("AE00210"));

    let dir = temp_dir();
    let script = dir.join("pay.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nenv | grep '^CONCERT_OPERATION=' > \"$(dirname \"$0\")/op\"\necho AE=10\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let e = Daemon::start(&format!("terminal exec {}\n", script.display()));
    let a = exchange(e.addr, payment("7", "500", "").as_bytes());
    assert!(text(&a).contains("AE00210"), "{}", text(&a));
    assert_eq!(
        std::fs::read_to_string(dir.join("op")).unwrap(),
        "CONCERT_OPERATION=deferred-debit\n"
    );
}

#[test]
fn a_relay_forwards_a_deferred_debit_to_v3_and_refuses_it_toward_v2() {
    let up = Daemon::start("");
    let d = Daemon::start(&format!("terminal relay tcp {}\n", up.addr));
    let a = exchange(d.addr, payment("7", "1000", "").as_bytes());
    assert!(text(&a).contains("AE00210"), "{}", text(&a));
    up.wait_log("deferred-debit 10.00 EUR register 01 from tcp");

    // A V2 terminal has no deferred debit: AF12, and it is never called.
    let v2 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let d = Daemon::start(&format!(
        "terminal relay tcp {} v2\n",
        v2.local_addr().unwrap()
    ));
    let a = exchange(d.addr, payment("7", "1000", "").as_bytes());
    assert_eq!(
        text(&a),
        format!("{}AE00201AF00212", payment("7", "1000", ""))
    );
    v2.set_nonblocking(true).unwrap();
    assert_eq!(
        v2.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
}

/// An exec program that writes its CONCERT_RECEIPT_* variables beside
/// itself and approves.
fn receipt_program() -> (std::path::PathBuf, String) {
    let dir = temp_dir();
    let script = dir.join("pay.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nenv | grep '^CONCERT_RECEIPT_' | sort > \"$(dirname \"$0\")/receipt\"\n\
         echo AE=10\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let conf = format!("terminal exec {}\n", script.display());
    (dir, conf)
}

fn el(tag: &str, v: &str) -> String {
    format!("{tag}{:03}{v}", v.len())
}

const PHONE: &str = "+33 6 12 34 56 78";
const EMAIL: &str = "jean.dupont@example.fr";

#[test]
fn e_receipt_phone_and_email_are_checked_used_and_masked() {
    let d = Daemon::start_with("", &["-vv"]);
    // E-mail first when both are given; the customer's ticket says so.
    let req = payment(
        "0",
        "1000",
        &format!("CK003100{}{}", el("BH", PHONE), el("BI", EMAIL)),
    );
    let a = exchange(d.addr, req.as_bytes());
    assert!(text(&a).contains("AE00210"), "{}", text(&a));
    let (_, doc) = concert::wire::ticket::decode_zt(get(&a, "ZT").unwrap().as_bytes()).unwrap();
    assert!(String::from_utf8_lossy(&doc).contains("TICKET ENVOYE PAR E-MAIL"));
    d.wait_log("simulator: receipt sent by e-mail to j***@example.fr");
    let req = payment("0", "1100", &format!("CK003100{}", el("BH", PHONE)));
    let a = exchange(d.addr, req.as_bytes());
    let (_, doc) = concert::wire::ticket::decode_zt(get(&a, "ZT").unwrap().as_bytes()).unwrap();
    assert!(String::from_utf8_lossy(&doc).contains("TICKET ENVOYE PAR SMS"));
    d.wait_log("simulator: receipt sent by SMS to ***78");
    // PayXpert's fixed-length fields, padded with spaces, are taken.
    let padded = payment("0", "1200", &el("BH", &format!("{:<20}", "0612345678")));
    assert!(text(&exchange(d.addr, padded.as_bytes())).contains("AE00210"));
    // Bad ones are a format error, and the terminal is not used.
    for bad in [
        el("BH", "12-34-56-78"),
        el("BI", "jean.dupont.example.fr"),
        el("BH", "1234"),
    ] {
        let req = payment("0", "1300", &bad);
        let a = exchange(d.addr, req.as_bytes());
        assert!(text(&a).contains("AE00201AF00209"), "{bad}: {}", text(&a));
    }
    // Neither the log (wire trace included) nor the journal keeps them.
    let (log, journal) = (d.log_text(), d.journal());
    for whole in [PHONE, EMAIL, "0612345678", "12 34 56"] {
        assert!(!log.contains(whole), "{whole} in the log:\n{log}");
        assert!(
            !journal.contains(whole),
            "{whole} in the journal:\n{journal}"
        );
    }
    assert!(journal.contains("BI015j***@example.fr"), "{journal}");
    assert!(journal.contains("BH005***78"), "{journal}");
    // Read back after a restart: the masked journal is still good.
    let mut d = d;
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit().success());
    d.spawn();
    let s = exchange(d.addr, status());
    assert!(
        text(&s).starts_with(&payment("0", "1200", "")),
        "{}",
        text(&s)
    );
    assert!(!d.log_text().contains("unreadable"), "{}", d.log_text());
}

#[test]
fn exec_gets_the_receipt_and_a_relay_forwards_it_to_v3() {
    let (dir, conf) = receipt_program();
    let up = Daemon::start(&conf);
    let relay = Daemon::start(&format!("terminal relay tcp {}\n", up.addr));
    let req = payment(
        "0",
        "1000",
        &format!("{}{}", el("BH", PHONE), el("BI", EMAIL)),
    );
    let a = exchange(relay.addr, req.as_bytes());
    assert!(text(&a).contains("AE00210"), "{}", text(&a));
    assert_eq!(
        std::fs::read_to_string(dir.join("receipt")).unwrap(),
        format!("CONCERT_RECEIPT_EMAIL={EMAIL}\nCONCERT_RECEIPT_PHONE={PHONE}\n")
    );
    // Without them, the variables are there and empty.
    let a = exchange(up.addr, payment("0", "900", "").as_bytes());
    assert!(text(&a).contains("AE00210"), "{}", text(&a));
    assert_eq!(
        std::fs::read_to_string(dir.join("receipt")).unwrap(),
        "CONCERT_RECEIPT_EMAIL=\nCONCERT_RECEIPT_PHONE=\n"
    );
}

/// A payment program whose answers are always the same, for pinning them.
fn fixed_terminal() -> String {
    let dir = temp_dir();
    let script = dir.join("pay.sh");
    std::fs::write(&script, "#!/bin/sh\necho AE=10\necho AC=123456\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!("terminal exec {}\n", script.display())
}

/// The transaction id the log gives the last transaction of this kind.
fn tx_id(d: &Daemon, what: &str, n: usize) -> String {
    let line = d.wait_log_n(&format!(": {what}"), n);
    let at = line.find("tx ").unwrap() + 3;
    line[at..].split(':').next().unwrap().to_string()
}

#[test]
fn debit_answers_without_and_with_payxpert_tags() {
    // Off by default: the answer of today, byte for byte.
    let d = Daemon::start(&fixed_terminal());
    for cd in ["0", "7"] {
        let a = exchange(d.addr, payment(cd, "1000", "CF003abc").as_bytes());
        assert_eq!(
            text(&a),
            format!("{}AE00210AC006123456", payment(cd, "1000", "CF003abc"))
                .replace("CF003abcAE00210AC006123456", "AE00210AC006123456CF003abc")
        );
    }

    let d = Daemon::start(&format!(
        "{}answer-extensions payxpert\nserial-number TERM-0042\n",
        fixed_terminal()
    ));
    let a = text(&exchange(d.addr, payment("0", "1000", "").as_bytes()));
    let id = tx_id(&d, "debit 10.00 EUR", 1);
    let head = format!(
        "{}AE00210AC006123456ID{:03}{id}AP013",
        payment("0", "1000", ""),
        id.len()
    );
    assert!(a.starts_with(&head), "{a}");
    let ap = &a[head.len()..head.len() + 13];
    assert!(
        ap.ends_with('Z') && ap[..12].bytes().all(|b| b.is_ascii_digit()),
        "{a}"
    );
    assert_eq!(&a[head.len() + 13..], "AQ009TERM-0042");
    // CD=T gives the same bytes; concert names the tags.
    assert_eq!(text(&exchange(d.addr, status())), a);
    let o = d.concert(&["status"]);
    let out = stdout(&o);
    assert!(out.contains(&format!("transaction    {id}")), "{out}");
    assert!(out.contains("serial         TERM-0042"), "{out}");
    assert!(out.contains(" UTC\n"), "{out}");
    // Only approved debits carry them: not a credit.
    let c = text(&exchange(d.addr, payment("1", "500", "").as_bytes()));
    assert_eq!(c, format!("{}AE00210AC006123456", payment("1", "500", "")));

    // Without serial-number: the machine id (or host name), 2 to 20.
    let d = Daemon::start("answer-extensions payxpert\n");
    let a = exchange(d.addr, payment("7", "1000", "").as_bytes());
    let aq = get(&a, "AQ").unwrap();
    assert!((2..=20).contains(&aq.len()), "{}", text(&a));
    if let Ok(m) = std::fs::read_to_string("/etc/machine-id") {
        if m.trim().len() >= 2 {
            assert!(m.trim().starts_with(&aq), "{aq} {m}");
        }
    }
}

#[test]
fn a_refund_by_reference_is_held_to_its_debit() {
    let mut d = Daemon::start("currency EUR USD\n");
    let refund = |d: &Daemon, amount: &str, im: &str| {
        let req = payment("1", amount, &format!("IM{:03}{im}", im.len()));
        (req.clone(), text(&exchange(d.addr, req.as_bytes())))
    };
    // The echo, AF04, then the IM.
    let refused = |req: &str| {
        let at = req.find("IM").unwrap();
        format!("{}AE00201AF00204{}", &req[..at], &req[at..])
    };
    // Whatever answer-extensions (none here): the id is in the log.
    exchange(d.addr, payment("0", "1000", "").as_bytes());
    let id = tx_id(&d, "debit 10.00 EUR", 1);

    // Within the amount: approved, the answer ends with the IM it refunds.
    let (_, a) = refund(&d, "600", &id);
    assert!(a.contains("AE00210"), "{a}");
    assert!(a.ends_with(&format!("IM{:03}{id}", id.len())), "{a}");
    d.wait_log(&format!("credit 6.00 EUR, refund of tx {id}, register 01"));
    assert!(d.journal().contains(&format!("IM{:03}{id}", id.len())));
    // CD=T shows which sale it refunded; so does concert.
    assert!(text(&exchange(d.addr, status())).ends_with(&format!("IM{:03}{id}", id.len())));
    let out = stdout(&d.concert(&["status"]));
    assert!(out.contains(&format!("refund of tx {id}\n")), "{out}");

    // Above what is left: AF04, the reason logged, the backend not called.
    let (req, a) = refund(&d, "401", &id);
    assert_eq!(a, refused(&req));
    d.wait_log(&format!(
        "refused AF04: tx {id} charged 1000, 600 already refunded"
    ));
    assert!(!d.log_text().contains("credit 4.01 EUR"));
    // Twice up to the total: the rest, then nothing more.
    let o = d.concert(&["refund", "-m", &id, "4.00"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).contains(&format!("refund of tx {id}")),
        "{}",
        stdout(&o)
    );
    let (req, a) = refund(&d, "1", &id);
    assert_eq!(a, refused(&req));

    // Unknown id, a declined debit, another currency: AF04, each said.
    let (req, a) = refund(&d, "100", "123");
    assert_eq!(a, refused(&req));
    d.wait_log("tx 123 is not known as an approved debit");
    exchange(d.addr, payment("0", "1051", "").as_bytes());
    let declined = tx_id(&d, "debit 10.51 EUR", 1);
    let (req, a) = refund(&d, "100", &declined);
    assert_eq!(a, refused(&req));
    d.wait_log(&format!("tx {declined} is not known as an approved debit"));
    exchange(d.addr, payment("0", "2000", "").as_bytes());
    let second = tx_id(&d, "debit 20.00 EUR", 1);
    let usd = format!("IM{:03}{second}", second.len());
    let req = payment("1", "100", &usd).replace("CE003978", "CE003840");
    assert_eq!(text(&exchange(d.addr, req.as_bytes())), refused(&req));
    d.wait_log(&format!(
        "tx {second} was in currency 978, the request asks 840"
    ));
    // A refund whose outcome is unknown (..54: AF07) counts: money may
    // have moved.
    let (_, a) = refund(&d, "1254", &second);
    assert!(a.contains("AE00201AF00207"), "{a}");
    let (req, a) = refund(&d, "747", &second);
    assert_eq!(a, refused(&req));

    // After a restart the journal gives the same sums.
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit().success());
    d.spawn();
    let (req, a) = refund(&d, "1", &id);
    assert_eq!(a, refused(&req));
    let (req, a) = refund(&d, "747", &second);
    assert_eq!(a, refused(&req));
    let (_, a) = refund(&d, "746", &second);
    assert!(a.contains("AE00210"), "{a}");

    // A partial approval charged half: that is what may be refunded.
    exchange(d.addr, payment("0", "1057", "BF0011").as_bytes());
    let partial = tx_id(&d, "debit 10.57 EUR", 1);
    let (req, a) = refund(&d, "529", &partial);
    assert_eq!(a, refused(&req));
    let (_, a) = refund(&d, "528", &partial);
    assert!(a.contains("AE00210"), "{a}");
}

#[test]
fn a_refundable_debit_outlives_journal_rotation() {
    let mut d = Daemon::start("journal-size 4K\njournal-keep 1\n");
    exchange(d.addr, payment("0", "1000", "").as_bytes());
    let id = tx_id(&d, "debit 10.00 EUR", 1);
    let im = format!("IM{:03}{id}", id.len());
    let a = exchange(d.addr, payment("1", "300", &im).as_bytes());
    assert!(text(&a).contains("AE00210"), "{}", text(&a));
    // Enough other transactions (credits: not refundable) to rotate past
    // the generation that held the debit, and register 01's last debit
    // is another one.
    exchange(d.addr, payment("0", "2000", "").as_bytes());
    for _ in 0..40 {
        exchange(d.addr, payment("1", "100", "").as_bytes());
    }
    d.wait_log_n("rotated", 3);
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit().success());
    d.spawn();
    let req = payment("1", "701", &im);
    assert_eq!(
        text(&exchange(d.addr, req.as_bytes())),
        format!("{}AE00201AF00204{im}", req.replace(&im, ""))
    );
    let a = exchange(d.addr, payment("1", "700", &im).as_bytes());
    assert!(text(&a).contains("AE00210"), "{}", text(&a));
}

/// The requests of the clients in use, as they send them, get the answers
/// of a terminal without the PayXpress extensions, byte for byte: the
/// extensions are off unless asked for.
#[test]
fn odoo_and_akretion_requests_get_plain_answers() {
    let d = Daemon::start(&fixed_terminal());
    // The Odoo Caisse-AP addon (0.05 EUR: CB of one digit, its tag order).
    let odoo = b"CZ0040300CJ012012345678901CA00201CE003978BF0010CD0010CB0015";
    assert_eq!(
        text(&exchange_open(d.addr, odoo)),
        "CZ0040300CJ012012345678901CA00201CB0015CD0010CE003978AE00210AC006123456"
    );
    // The Akretion client: BA0 before CD and CB.
    let akretion = b"CZ0040300CJ012247300123456CA00201CE003978BA0010CD0010CB0041234";
    assert_eq!(
        text(&exchange(d.addr, akretion)),
        "CZ0040300CJ012247300123456CA00201CB0041234CD0010CE003978AE00210AC006123456"
    );
}

/// A cancellation whose answer was lost may have put the money back on the
/// card: until its outcome is known, its debit is not refunded by
/// reference too, before or after a restart.
#[test]
fn a_cancellation_of_unknown_outcome_blocks_refunds_of_its_debit() {
    let dir = temp_dir();
    let script = dir.join("script");
    std::fs::write(&script, "approve\nunknown\n").unwrap();
    let mut d = Daemon::start(&format!("simulator-script {}\n", script.display()));
    let a = exchange(d.addr, payment("0", "1000", "").as_bytes());
    assert!(text(&a).contains("AE00210"), "{}", text(&a));
    let id = tx_id(&d, "debit 10.00 EUR", 1);
    // The cancellation's answer is lost: the journal says unknown.
    let a = exchange(d.addr, payment("2", "1000", "").as_bytes());
    assert!(a.is_empty(), "{}", text(&a));
    loop_until(|| d.journal().contains(" ended unknown ").then_some(()));
    let refund = payment("1", "500", &el("IM", &id));
    for round in 0..2 {
        let a = exchange(d.addr, refund.as_bytes());
        assert!(text(&a).contains("AE00201AF00204"), "{round}: {}", text(&a));
        // Each start logs afresh.
        d.wait_log(&format!(
            "tx {id} was cancelled (or its cancellation's outcome is unknown)"
        ));
        d.signal(libc::SIGTERM);
        assert!(d.wait_exit().success());
        d.spawn();
    }
}

/// A payment program is told which debit a refund by reference names.
#[test]
fn exec_is_told_which_debit_a_refund_names() {
    let dir = temp_dir();
    let script = dir.join("pay.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nenv | grep '^CONCERT_REFUND_OF=' > \"$(dirname \"$0\")/of.$CONCERT_OPERATION\"\n\
         echo AE=10\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::start(&format!("terminal exec {}\n", script.display()));
    assert!(text(&exchange(d.addr, payment("0", "1000", "").as_bytes())).contains("AE00210"));
    let id = tx_id(&d, "debit 10.00 EUR", 1);
    let a = exchange(d.addr, payment("1", "400", &el("IM", &id)).as_bytes());
    assert!(text(&a).contains("AE00210"), "{}", text(&a));
    let read = |op: &str| std::fs::read_to_string(dir.join(format!("of.{op}"))).unwrap();
    assert_eq!(read("debit"), "CONCERT_REFUND_OF=\n");
    assert_eq!(read("credit"), format!("CONCERT_REFUND_OF={id}\n"));
}

/// The answer refusing `req` with AF04 before any backend: its echo.
fn refused_af04(req: &str) -> String {
    format!("{req}AE00201AF00204")
}

/// Debit 8.00, refund 6.00 of it by reference, cancel it: 14.00 back on an
/// 8.00 sale. The cancellation is refused AF04 before the backend is asked
/// (issue 20, 3); so are a second cancellation and one asking more than a
/// partial approval charged.
#[test]
fn a_cancellation_of_a_debit_refunded_by_reference_is_refused() {
    let mut d = Daemon::start("");
    exchange(d.addr, payment("0", "800", "").as_bytes());
    let id = tx_id(&d, "debit 8.00 EUR", 1);
    let a = exchange(d.addr, payment("1", "600", &el("IM", &id)).as_bytes());
    assert!(text(&a).contains("AE00210"), "{}", text(&a));
    let refund = tx_id(&d, &format!("credit 6.00 EUR, refund of tx {id}"), 1);
    let cancel = payment("2", "800", "");
    for round in 0..2 {
        let a = exchange(d.addr, cancel.as_bytes());
        assert_eq!(text(&a), refused_af04(&cancel), "round {round}");
        d.wait_log(&format!(
            "cancellation refused AF04: tx {id} has refunds by reference (tx {refund}: 600 \
             approved or of unknown outcome)"
        ));
        // Never begun, so no backend saw it; the journal rebuilds the
        // refunds after a restart.
        assert!(!d.journal().contains(&cancel), "{}", d.journal());
        assert!(!d.log_text().contains("cancel 8.00 EUR"));
        d.signal(libc::SIGTERM);
        assert!(d.wait_exit().success());
        d.spawn();
    }

    // A partial approval (..57: half) charged 5.28: a cancellation asks
    // that much at most, and once approved nothing is refunded after it.
    exchange(d.addr, payment("0", "1057", "BF0011").as_bytes());
    let partial = tx_id(&d, "debit 10.57 EUR", 1);
    let whole = payment("2", "1057", "");
    assert_eq!(
        text(&exchange(d.addr, whole.as_bytes())),
        refused_af04(&whole)
    );
    d.wait_log(&format!(
        "cancellation refused AF04: tx {partial} charged 528"
    ));
    let a = exchange(d.addr, payment("2", "528", "").as_bytes());
    assert!(text(&a).contains("AE00210"), "{}", text(&a));
    let r = payment("1", "1", &el("IM", &partial));
    assert!(text(&exchange(d.addr, r.as_bytes())).contains("AE00201AF00204"));
    d.wait_log(&format!("tx {partial} was cancelled"));
}

/// A refund whose answer was lost may have paid out: it blocks the
/// cancellation of its debit as an approved one does, after a restart too.
#[test]
fn a_refund_of_unknown_outcome_blocks_the_cancellation_of_its_debit() {
    let dir = temp_dir();
    let script = dir.join("script");
    std::fs::write(&script, "approve\nunknown\n").unwrap();
    let mut d = Daemon::start(&format!("simulator-script {}\n", script.display()));
    exchange(d.addr, payment("0", "1000", "").as_bytes());
    let id = tx_id(&d, "debit 10.00 EUR", 1);
    let a = exchange(d.addr, payment("1", "500", &el("IM", &id)).as_bytes());
    assert!(a.is_empty(), "{}", text(&a));
    loop_until(|| d.journal().contains(" ended unknown ").then_some(()));
    let refund = tx_id(&d, &format!("credit 5.00 EUR, refund of tx {id}"), 1);
    let cancel = payment("2", "1000", "");
    for round in 0..2 {
        let a = exchange(d.addr, cancel.as_bytes());
        assert_eq!(text(&a), refused_af04(&cancel), "round {round}");
        d.wait_log(&format!(
            "tx {id} has refunds by reference (tx {refund}: 500 approved or of unknown outcome)"
        ));
        assert!(!d.journal().contains(&cancel), "{}", d.journal());
        d.signal(libc::SIGTERM);
        assert!(d.wait_exit().success());
        d.spawn();
    }
}

/// A payment program and a relay's upstream decide a cancellation
/// themselves, but never get one of a debit refunded by reference: the
/// program's trace and the upstream's log show the debit and the refund,
/// no cancellation.
#[test]
fn exec_and_relay_never_get_the_cancellation_of_a_refunded_debit() {
    let dir = temp_dir();
    let script = dir.join("pay.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"$CONCERT_OPERATION $CONCERT_AMOUNT\" >> \"$(dirname \"$0\")/trace\"\n\
         echo AE=10\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let exec = Daemon::start(&format!("terminal exec {}\n", script.display()));
    let up = Daemon::start("");
    let relay = Daemon::start(&format!("terminal relay tcp {} v3\n", up.addr));
    for d in [&exec, &relay] {
        assert!(text(&exchange(d.addr, payment("0", "800", "").as_bytes())).contains("AE00210"));
        let id = tx_id(d, "debit 8.00 EUR", 1);
        let a = exchange(d.addr, payment("1", "600", &el("IM", &id)).as_bytes());
        assert!(text(&a).contains("AE00210"), "{}", text(&a));
        let cancel = payment("2", "800", "");
        assert_eq!(
            text(&exchange(d.addr, cancel.as_bytes())),
            refused_af04(&cancel)
        );
        d.wait_log(&format!(
            "cancellation refused AF04: tx {id} has refunds by reference"
        ));
    }
    let trace = std::fs::read_to_string(dir.join("trace")).unwrap();
    assert_eq!(trace, "debit 800\ncredit 600\n");
    up.wait_log("debit 8.00 EUR register 01");
    up.wait_log("credit 6.00 EUR register 01");
    assert!(!up.log_text().contains("cancel "), "{}", up.log_text());
}
