//! The exam through the real binaries: concertd plays etc/exam.script, a
//! scripted register pays until every step is taken, and `concertctl
//! exam` judges each step. A careful register passes every step; the Odoo
//! addon's transport (one send, one recv(1024), no status request) fails
//! the steps that need the whole answer or a status request, and passes
//! the others.

use crate::findings::{odoo_pay, ODOO};
use crate::util::*;
use std::time::Duration;

const STATUS: &[u8] = b"CZ0040300CJ012012345678901CA00201CD001T";
/// A careful register's debit of 10.00 that allows a partial approval.
const PARTIAL_OK: &[u8] = b"CZ0040300CJ012012345678901CA00201CE003978BF0011CD0010CB0041000";
/// The steps of etc/exam.script.
const STEPS: usize = 11;

fn start(extra: &str) -> Daemon {
    Daemon::start_env(
        &format!("control @DIR@/control.sock\n{extra}"),
        &["-v"],
        &[("TZ", "UTC")],
    )
}

fn exam_daemon() -> Daemon {
    start(&format!(
        "simulator-script {}/etc/exam.script\n",
        env!("CARGO_MANIFEST_DIR")
    ))
}

fn exam(d: &Daemon) -> String {
    let o = d.ctl(&["exam"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    stdout(&o)
}

/// The verdict word of step `n` (`pass`, `fail`, ...), from its first line.
fn verdict(report: &str, n: usize) -> String {
    let head = format!("step {n} of {STEPS}, ");
    let line = report
        .lines()
        .find(|l| l.starts_with(&head))
        .unwrap_or_else(|| panic!("no step {n} in:\n{report}"));
    line.rsplit(": ").next().unwrap_or_default().to_string()
}

/// The lines of step `n`: its head, the register's line and `check:`.
fn step(report: &str, n: usize) -> String {
    let head = format!("step {n} of {STEPS}, ");
    let mut lines = report.lines().skip_while(|l| !l.starts_with(&head));
    let first = lines.next().unwrap_or_default();
    let rest: Vec<&str> = lines.take_while(|l| l.starts_with("  ")).collect();
    format!("{first}\n{}", rest.join("\n"))
}

/// A tag of an answer as a register reads it: a CR LF after it dropped,
/// a cut answer read as far as it goes.
fn tag(a: &[u8], t: &str) -> Option<String> {
    let a = a.strip_suffix(b"\r\n").unwrap_or(a);
    let f = concert::wire::tlv::Frame::decode(a).unwrap_or_else(|(partial, _)| partial);
    let t: [u8; 2] = t.as_bytes().try_into().ok()?;
    f.text(concert::wire::tlv::Tag(t)).map(str::to_string)
}

fn is_busy(a: &[u8]) -> bool {
    tag(a, "AE").as_deref() == Some("01") && tag(a, "AF").is_none()
}

/// A careful register's payment: the whole answer read; a lost answer or
/// an unknown outcome (AF07) asked with a status request; after a busy
/// answer, a pause of over 1 s before the next payment.
fn careful_payment(src: &str, d: &Daemon) -> Vec<u8> {
    let a = exchange_from(src, d.addr, PARTIAL_OK);
    if a.is_empty() || tag(&a, "AF").as_deref() == Some("07") {
        let s = exchange_from(src, d.addr, STATUS);
        assert!(tag(&s, "AE").is_some(), "status: {}", text(&s));
        return s;
    }
    if is_busy(&a) {
        // What the register does, not a wait for concertd.
        std::thread::sleep(Duration::from_millis(1100));
    }
    a
}

#[test]
fn a_careful_register_passes_every_step() {
    let d = exam_daemon();
    let r = exam(&d);
    assert!(r.contains("exam: 0 of 11 steps done"), "{r}");
    assert!(
        r.contains("exam: pay again to continue: step 1 of 11, split answer, is next"),
        "{r}"
    );
    let src = "127.0.0.61";
    // Step 1: the split answer, read whole.
    let a = careful_payment(src, &d);
    assert_eq!(tag(&a, "AE").as_deref(), Some("10"), "{}", text(&a));
    let r = exam(&d);
    assert_eq!(verdict(&r, 1), "pass", "{r}");
    assert!(
        step(&r, 1).contains("register 01 at tcp 127.0.0.61, tx "),
        "{r}"
    );
    assert!(r.contains("step 2 of 11, CR LF after the answer (approve crlf): not taken yet"));
    assert!(
        r.contains("exam: 1 of 11 steps done: 1 pass, 0 fail"),
        "{r}"
    );
    assert!(r.contains("pay again to continue: step 2 of 11"), "{r}");
    // The others: the busy step's payment is answered busy, and the next
    // payment is step 7's.
    let mut outcomes = Vec::new();
    for _ in 2..=STEPS {
        let a = careful_payment(src, &d);
        outcomes.push((tag(&a, "AE"), tag(&a, "AF"), tag(&a, "CB")));
    }
    // What a careful register got: the status answers for the lost
    // ones (step 4 approved, step 5 refused, step 11 unknown).
    let want = [
        (Some("10"), None, Some("1000")), // 2: crlf
        (Some("10"), None, Some("1000")), // 3: late
        (Some("10"), None, Some("1000")), // 4: silent, then status
        (Some("01"), Some("04"), None),   // 5: reset, then status
        (Some("01"), None, None),         // 6: busy
        (Some("01"), Some("06"), None),   // 7: red key, no CB
        (Some("10"), None, Some("0100")), // 8: partial
        (Some("01"), Some("04"), None),   // 9: refused
        (Some("01"), Some("07"), None),   // 10: not ended, then status
        (Some("01"), Some("07"), None),   // 11: unknown, then status
    ];
    for (i, (got, want)) in outcomes.iter().zip(want).enumerate() {
        let want = (
            want.0.map(String::from),
            want.1.map(String::from),
            want.2.map(String::from),
        );
        assert_eq!(got.0, want.0, "step {}", i + 2);
        assert_eq!(got.1, want.1, "step {}", i + 2);
        if want.2.is_some() {
            assert_eq!(got.2, want.2, "step {}", i + 2);
        }
    }
    let r = exam(&d);
    for n in 1..=STEPS {
        assert_eq!(verdict(&r, n), "pass", "step {n}:\n{r}");
        assert!(step(&r, n).contains("\n  check: "), "{r}");
    }
    assert!(
        step(&r, 4).contains("it asked the last outcome (CD=T) before any new payment"),
        "{r}"
    );
    assert!(step(&r, 6).contains("s after the busy answer"), "{r}");
    assert!(
        step(&r, 8).contains("partial approval (BF=1) and read it: CB=100 of CB=1000"),
        "{r}"
    );
    assert!(step(&r, 9).contains("check: the register showed the refusal (AF04)"));
    assert!(
        r.contains("exam: 11 of 11 steps done: 11 pass, 0 fail, 0 cannot see, 0 waiting\n"),
        "{r}"
    );
    assert!(
        r.ends_with("exam: every step taken: the exam is over\n"),
        "{r}"
    );
}

#[test]
fn the_odoo_transport_fails_the_split_answer_and_every_status_step() {
    let d = exam_daemon();
    let src = "127.0.0.62";
    // The addon's transport; the cashier tries again after a failure,
    // which takes more than a second.
    let mut got = Vec::new();
    for _ in 0..STEPS {
        let a = odoo_pay(src, d.addr, ODOO);
        if is_busy(&a) {
            std::thread::sleep(Duration::from_millis(1100));
        }
        got.push(a);
    }
    // Step 11's answer was lost and the addon asks nothing: the exam
    // waits for its next request...
    let r = exam(&d);
    assert_eq!(verdict(&r, 11), "waiting", "{r}");
    assert!(r.contains("exam: every step taken; waiting"), "{r}");
    // ...which is a payment, taken by the amount table.
    let a = odoo_pay(src, d.addr, ODOO);
    assert_eq!(tag(&a, "AE").as_deref(), Some("10"), "{}", text(&a));
    let r = exam(&d);
    let failed = [1, 4, 5, 10, 11];
    for n in 1..=STEPS {
        let want = if failed.contains(&n) { "fail" } else { "pass" };
        assert_eq!(verdict(&r, n), want, "step {n}:\n{r}");
    }
    assert!(
        step(&r, 1).contains("one read of an answer in several segments gets only its first part"),
        "{r}"
    );
    for n in [4, 5, 11] {
        assert!(
            step(&r, n).contains("its next payment came without a status request (CD=T) first"),
            "{r}"
        );
    }
    assert!(step(&r, 10).contains("it read the AF07 answer, but"), "{r}");
    // Without BF=1 the partial approval is a refusal, read whole.
    assert!(
        step(&r, 8).contains("does not allow partial approvals (no BF=1)"),
        "{r}"
    );
    assert!(
        r.contains("exam: 11 of 11 steps done: 6 pass, 5 fail, 0 cannot see, 0 waiting\n"),
        "{r}"
    );
    // README.md shows this very report, numbers aside.
    assert_eq!(
        digitless(&readme_exam()),
        digitless(&r),
        "README.md's exam:\n{r}"
    );
    // The findings say the same.
    let o = d.ctl(&["registers"]);
    let regs = stdout(&o);
    assert!(regs.contains("answer-not-read"), "{regs}");
    assert!(regs.contains("no-status-after-loss"), "{regs}");
}

#[test]
fn the_exam_says_when_its_script_is_not_played() {
    let d = start("");
    let r = exam(&d);
    assert!(r.contains("step 1 of 11, split answer (approve split=3:200ms): not taken yet"));
    assert!(r.contains("exam: no simulator-script is played"), "{r}");
    // Another script is no exam.
    let dir = temp_dir();
    std::fs::write(dir.join("other.script"), "approve\n").unwrap();
    let d = start(&format!(
        "simulator-script {}\n",
        dir.join("other.script").display()
    ));
    let r = exam(&d);
    assert!(
        r.contains("exam: the simulator-script played is not the exam"),
        "{r}"
    );
}

/// The text with each run of digits as `#`: transaction ids, addresses
/// and times differ from one run to the next.
fn digitless(t: &str) -> String {
    let mut out = String::new();
    let mut digit = false;
    for c in t.chars() {
        if c.is_ascii_digit() {
            if !digit {
                out.push('#');
            }
            digit = true;
        } else {
            out.push(c);
            digit = false;
        }
    }
    out
}

/// The `concertctl exam` output README.md shows in its section on the
/// exam: the first fenced block after the line beginning `$ concertctl
/// exam`, that line excluded.
fn readme_exam() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("\n$ concertctl exam\n")
        .expect("no `$ concertctl exam` in README.md")
        + "\n$ concertctl exam\n".len();
    let rest = &readme[start..];
    rest[..rest.find("```").expect("an unclosed block")].to_string()
}
