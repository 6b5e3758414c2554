//! `terminal-profile`: each profile's traits, answer bytes pinned, through
//! the real binary, with the Odoo addon's requests.

use crate::util::*;

/// The Odoo addon's debit of 123.45 EUR, byte for byte as it sends it.
const ODOO_DEBIT: &str = "CZ0040300CJ012012345678901CA00201CE003978CD0010CB00512345";
/// The same, paying by check (`CC=00C`).
const ODOO_CHECK: &str = "CZ0040300CJ012012345678901CA00201CE003978CD0010CB00512345CC00300C";
/// An identification, as the Odoo addon's developer sent it to a Desk/5000.
const IDENTIFY: &str = "CZ0040300CJ012012345678901CA00201CD001I";
/// A request concertd refuses as badly formed (BH shorter than 8),
/// with the CJ of HiPay's "bad frame format" example.
const BAD: &str = "CZ0040300CJ012999999999999CA00201CB00512345CD0010CE003978BH003abc";
/// What every answer to `ODOO_DEBIT` echoes, after CZ.
const ECHO: &str = "CJ012012345678901CA00201CB00512345CD0010CE003978";

/// A daemon playing `script`, one line per transaction, in `profile`.
fn playing(script: &str, extra: &str) -> Daemon {
    let dir = temp_dir();
    let path = dir.join("script");
    std::fs::write(&path, script).unwrap();
    Daemon::start(&format!("simulator-script {}\n{extra}", path.display()))
}

fn pay(d: &Daemon, req: &str) -> String {
    text(&exchange(d.addr, req.as_bytes()))
}

fn tags(answer: &str) -> Vec<String> {
    elements(answer.as_bytes())
        .into_iter()
        .map(|(t, _)| t)
        .collect()
}

#[test]
fn generic_is_the_default_and_answers_as_before() {
    for extra in ["", "terminal-profile generic\n"] {
        let d = playing("refuse\nabandon\napprove\n", extra);
        assert_eq!(
            pay(&d, ODOO_DEBIT),
            format!("CZ0040300{ECHO}AE00201AF00204")
        );
        assert_eq!(
            pay(&d, ODOO_DEBIT),
            format!("CZ0040300{ECHO}AE00201AF00206")
        );
        let a = pay(&d, ODOO_DEBIT);
        assert!(a.starts_with(&format!("CZ0040300{ECHO}AE00210")), "{a}");
        assert!(!a.contains("AQ0"), "{a}");
        assert_eq!(
            pay(&d, BAD),
            "CZ0040300CJ012999999999999CA00201CB00512345CD0010CE003978AE00201AF00209"
        );
    }
}

#[test]
fn ingenico_answers_0301_drops_cb_after_the_red_key_and_refuses_checks_with_af04() {
    let d = playing(
        "refuse\nabandon\ntimeout\nforbidden\nnot-ended\n",
        "terminal-profile ingenico\n",
    );
    assert_eq!(
        pay(&d, ODOO_DEBIT),
        format!("CZ0040301{ECHO}AE00201AF00204")
    );
    // The red key: no CB.
    assert_eq!(
        pay(&d, ODOO_DEBIT),
        "CZ0040301CJ012012345678901CA00201CD0010CE003978AE00201AF00206"
    );
    // A check times out, another is forbidden: AF04 both times.
    for _ in 0..2 {
        assert_eq!(
            pay(&d, ODOO_CHECK),
            format!("CZ0040301{ECHO}AE00201AF00204")
        );
    }
    // A check whose outcome is not ended stays so: never read as refused.
    assert_eq!(
        pay(&d, ODOO_CHECK),
        format!("CZ0040301{ECHO}AE00201AF00207")
    );
    // concertd's own answers take the shape too.
    assert_eq!(
        pay(&d, IDENTIFY),
        "CZ0040301CJ012012345678901CA00201CD001IAE00210"
    );
    assert!(pay(&d, BAD).starts_with("CZ0040301CJ012999999999999"));
    // The journal keeps concertd's own answers: the request's CZ, and CB
    // after the red key, AF08 for the check that timed out.
    let j = d.journal();
    assert!(!j.contains("CZ0040301"), "{j}");
    assert!(j.contains(&format!("CZ0040300{ECHO}AE00201AF00206")), "{j}");
    assert!(j.contains("AE00201AF00208"), "{j}");
}

#[test]
fn nepting_answers_as_hipay_shows() {
    let d = playing(
        "approve\nrefuse\nforbidden\nabandon\n",
        "terminal-profile nepting\n",
    );
    let a = pay(&d, ODOO_DEBIT);
    assert!(
        a.starts_with("CZ0040320CJ012012345678901CA00201CB00512345CC0"),
        "{a}"
    );
    // HiPay's order of the tags it shows: CZ CJ CA CB CC CD CE AC AE.
    let order = tags(&a);
    assert_eq!(
        order[..9],
        ["CZ", "CJ", "CA", "CB", "CC", "CD", "CE", "AC", "AE"],
        "{a}"
    );
    assert_eq!(get(a.as_bytes(), "AE").as_deref(), Some("10"));
    // The bank's refusals carry the CB2A details, space filled.
    assert_eq!(
        pay(&d, ODOO_DEBIT),
        format!("CZ0040320{ECHO}AE00201AF02904  REFUSED{}", " ".repeat(18))
    );
    assert_eq!(
        pay(&d, ODOO_DEBIT),
        format!(
            "CZ0040320{ECHO}AE00201AF02905  FORBIDDEN CARD{}",
            " ".repeat(11)
        )
    );
    // An abandon does not.
    assert_eq!(
        pay(&d, ODOO_DEBIT),
        format!("CZ0040320{ECHO}AE00201AF00206")
    );
    // A bad request: HiPay's "bad frame format" answer, byte for byte.
    assert_eq!(
        pay(&d, BAD),
        "CZ0040320CJ012999999999999AE00201AF00209CA00201CB00512345CD0010CE003978"
    );
    assert!(!d.journal().contains("REFUSED"));
}

#[test]
fn payxpress_ends_approved_debits_with_id_ap_aq_whatever_answer_extensions_says() {
    let d = playing(
        "approve\nrefuse\n",
        "terminal-profile payxpress\nanswer-extensions none\nserial-number TERM-7\n",
    );
    let a = pay(&d, ODOO_DEBIT);
    // The request's CZ, as PayXpress takes it from the request.
    assert!(a.starts_with(&format!("CZ0040300{ECHO}AE00210")), "{a}");
    let order = tags(&a);
    assert_eq!(order[order.len() - 3..], ["ID", "AP", "AQ"], "{a}");
    assert!(a.ends_with("AQ006TERM-7"), "{a}");
    let ap = get(a.as_bytes(), "AP").unwrap();
    assert!(ap.len() == 13 && ap.ends_with('Z'), "{ap}");
    // A refusal has none.
    assert_eq!(
        pay(&d, ODOO_DEBIT),
        format!("CZ0040300{ECHO}AE00201AF00204")
    );
}

#[test]
fn the_profile_is_reloaded_for_new_connections_and_shown_by_n() {
    let mut d = playing(
        "refuse\nrefuse\n",
        "terminal-profile ingenico\nconfig-watch 0\n",
    );
    assert!(pay(&d, ODOO_DEBIT).starts_with("CZ0040301"));
    let script = d.dir.join("script2");
    std::fs::write(&script, "refuse\n").unwrap();
    d.set_extra(&format!(
        "simulator-script {}\nterminal-profile nepting\nconfig-watch 0\n",
        script.display()
    ));
    let since = d.mark();
    d.signal(libc::SIGHUP);
    d.wait_log_since(since, "reloaded: listen ")
        .expect("reloaded");
    assert!(pay(&d, ODOO_DEBIT).starts_with("CZ0040320"));

    let conf = d.dir.join("n.conf");
    std::fs::write(&conf, "terminal-profile payxpress\n").unwrap();
    let o = run(CONCERTD, &["-n", "-f", conf.to_str().unwrap()]);
    assert!(
        stdout(&o).contains("\nterminal-profile payxpress\n"),
        "{}",
        stdout(&o)
    );
    std::fs::write(&conf, "terminal-profile hipay\n").unwrap();
    let o = run(CONCERTD, &["-n", "-f", conf.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o)
            .contains("terminal-profile \"hipay\" is not generic, ingenico, nepting or payxpress"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_relay_is_not_reshaped_and_says_so() {
    let port = ClosedPort::new();
    let d = Daemon::start(&format!(
        "terminal relay tcp {} v3\nterminal-profile ingenico\n",
        port.addr
    ));
    d.wait_log("terminal-profile ingenico: not applied with terminal relay");
    let o = run(
        CONCERTD,
        &["-n", "-f", d.dir.join("concertd.conf").to_str().unwrap()],
    );
    assert!(
        stdout(&o).contains(
            "\nterminal-profile ingenico\n# not applied with terminal relay: answers in the \
             generic shape\n"
        ),
        "{}",
        stdout(&o)
    );
    // concertd's own answer to a bad request: generic, the request's CZ.
    assert!(pay(&d, BAD).starts_with("CZ0040300CJ012999999999999CA002"));
}

#[test]
fn the_serial_line_answers_v3_in_the_profile_and_v2_as_ever() {
    use crate::serial::{pty, TIMERS};
    use concert::wire::framing::ACK;
    let dir = temp_dir();
    let link = dir.join("tty");
    let script = dir.join("script");
    std::fs::write(&script, "timeout\napprove\n").unwrap();
    let mut r = pty(&link);
    let d = Daemon::start(&format!(
        "serial {}\n{TIMERS}\nsimulator-script {}\nterminal-profile ingenico\n",
        link.display(),
        script.display()
    ));
    d.wait_log(": open, 9600 baud 7E1");
    // A check that times out, framed V3: answered once the worker has it.
    assert_eq!(r.request(ODOO_CHECK.as_bytes()), ACK);
    assert_eq!(text(&r.answer()), format!("CZ0040301{ECHO}AE00201AF00204"));
    // Raw V3, answered at once.
    r.send(IDENTIFY.as_bytes());
    let want = "CZ0040301CJ012012345678901CA00201CD001IAE00210";
    let got: Vec<u8> = (0..want.len()).map(|_| r.byte()).collect();
    assert_eq!(text(&got), want);
    // pyTeliumManager's E+ request: a V2 reply has fixed fields.
    assert_eq!(r.request(b"0100001000110978          A010B010"), ACK);
    assert_eq!(r.answer()[..12], *b"010000010001");
}
