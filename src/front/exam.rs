//! The exam (`concertctl exam`): the steps of `etc/exam.script`, one
//! table ([`STEPS`]), and what each register did at each step, judged from
//! what the terminal side can see (the register's episodes, kept by
//! [`crate::front::findings`]). What only the register's screen shows is
//! said as such: a line beginning `check:` for the integrator.
//!
//! A step is the script line a request took (its place among the script's
//! plans): the exam reads only episodes whose plan is the step's, the
//! latest of each step, and only those of the script's latest run (since
//! its first line was last taken).

use crate::backend::stage::Stage;
use crate::config::plan::Plan;
use crate::front::findings::{Episode, Findings, Next, Who};
use crate::wire::answer::Af;
use std::fmt::Write as _;
use std::time::Duration;

/// A retry after a busy answer sooner than this fails the busy step, as
/// it is a finding (`busy-retry-soon`).
const BUSY_PAUSE: Duration = crate::front::findings::BUSY_PAUSE;

/// How a step is judged from what the terminal sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Judge {
    /// The register read the whole answer (every byte acknowledged, not
    /// reset).
    ReadWhole,
    /// It read the whole answer, which came late: it did not give up.
    Waited,
    /// The answer was lost: its next request asks the last outcome (CD=T)
    /// before any payment.
    AskedStatus,
    /// The answer was read, and its outcome is unknown (AF07): as
    /// [`Judge::AskedStatus`] then.
    ReadThenStatus,
    /// The busy answer: it did not retry sooner than 1 s.
    WaitedAfterBusy,
    /// A partial approval when it allowed one (BF=1), a refusal otherwise.
    Partial,
}

/// One step of the exam: a line of `etc/exam.script`.
#[derive(Debug)]
pub struct Step {
    /// What it tries, in a few words.
    pub name: &'static str,
    /// The script's plan for it, as the vocabulary writes it.
    pub plan: &'static str,
    /// What the terminal cannot see: the integrator checks it on the
    /// register.
    pub check: &'static str,
    judge: Judge,
}

/// The exam, in the order of `etc/exam.script` (a test holds the file to
/// it).
pub const STEPS: [Step; 11] = [
    Step {
        name: "split answer",
        plan: "approve split=3:200ms",
        check: "the register showed the payment approved, not an error or a half-read answer",
        judge: Judge::ReadWhole,
    },
    Step {
        name: "CR LF after the answer",
        plan: "approve crlf",
        check: "the register showed the payment approved: CR LF after the answer must not \
                make it fail",
        judge: Judge::ReadWhole,
    },
    Step {
        name: "late answer",
        plan: "approve late=10s",
        check: "the register showed the payment approved, and waited without an error",
        judge: Judge::Waited,
    },
    Step {
        name: "closed without an answer",
        plan: "approve silent",
        check: "the register showed the payment approved, as the status answer said, and did \
                not charge it again",
        judge: Judge::AskedStatus,
    },
    Step {
        name: "reset instead of the answer",
        plan: "refuse reset",
        check: "the register showed the refusal the status answer gave, not an approval",
        judge: Judge::AskedStatus,
    },
    Step {
        name: "busy",
        plan: "busy",
        check: "the register said the terminal was busy, and charged nothing",
        judge: Judge::WaitedAfterBusy,
    },
    Step {
        name: "red key without CB",
        plan: "abandon no-cb",
        check: "the register showed the payment abandoned at the terminal (AF06), not an error \
                about the missing amount (CB)",
        judge: Judge::ReadWhole,
    },
    Step {
        name: "partial approval with BF",
        plan: "partial=100",
        check: "with BF=1, the register recorded 1.00 paid and asked the rest another way; \
                without it, it showed the refusal",
        judge: Judge::Partial,
    },
    Step {
        name: "refusal",
        plan: "refuse",
        check: "the register showed the refusal (AF04)",
        judge: Judge::ReadWhole,
    },
    Step {
        name: "unknown outcome",
        plan: "not-ended",
        check: "the register showed the outcome as unknown (the card may be charged), neither \
                approved nor refused",
        judge: Judge::ReadThenStatus,
    },
    Step {
        name: "status after a lost answer",
        plan: "unknown",
        check: "the register showed the outcome the status answer gave (AF07: unknown) and had \
                the cashier check it, neither approved nor refused",
        judge: Judge::AskedStatus,
    },
];

/// The exam's plans, in order.
pub fn plans() -> Vec<Plan> {
    STEPS
        .iter()
        .filter_map(|s| s.plan.parse::<Plan>().ok())
        .collect()
}

/// What the terminal can tell of a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass(String),
    Fail(String),
    /// Nothing the terminal can judge: only the register's screen says.
    Unseen(String),
    /// Judged at the register's next request, which has not come.
    Waiting(String),
}

impl Verdict {
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Pass(_) => "pass",
            Verdict::Fail(_) => "fail",
            Verdict::Unseen(_) => "cannot see",
            Verdict::Waiting(_) => "waiting",
        }
    }

    fn why(&self) -> &str {
        match self {
            Verdict::Pass(w) | Verdict::Fail(w) | Verdict::Unseen(w) | Verdict::Waiting(w) => w,
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Did the register take the whole answer?
fn read_whole(e: &Episode) -> Verdict {
    let a = &e.answered;
    let how = if a.split {
        "the whole answer (sent in several writes)"
    } else {
        "the whole answer"
    };
    match &a.delivered {
        Some(Ok(())) => Verdict::Pass(format!("it read {how} and closed")),
        Some(Err(why)) => match a.closed_after {
            Some(d) => Verdict::Fail(format!(
                "it closed {} after its request, before the answer ({why}): it gave up",
                secs(d)
            )),
            // Not the system's words: which one comes (a reset, a broken
            // pipe) depends on when the register closed.
            None if a.split => Verdict::Fail(
                "it closed before the whole answer was taken: one read of an answer in \
                 several segments gets only its first part"
                    .into(),
            ),
            None => Verdict::Fail(format!("it did not read the whole answer ({why})")),
        },
        None => Verdict::Unseen("the answer's delivery was not measured".into()),
    }
}

/// Did the register ask the last outcome before its next payment?
fn asked_status(e: &Episode) -> Verdict {
    match &e.next {
        Some(Next::Status) => {
            Verdict::Pass("it asked the last outcome (CD=T) before any new payment".into())
        }
        Some(Next::Payment(_)) => Verdict::Fail(
            "its next payment came without a status request (CD=T) first: an approval it \
             did not get would be charged twice"
                .into(),
        ),
        None => Verdict::Waiting(
            "no request from it since: a status request (CD=T) is right; pay again if it \
             sends none"
                .into(),
        ),
    }
}

/// Judges one episode of `step`.
pub fn judge(step: &Step, e: &Episode) -> Verdict {
    let a = &e.answered;
    match step.judge {
        Judge::ReadWhole => read_whole(e),
        Judge::Waited => match read_whole(e) {
            Verdict::Pass(_) => Verdict::Pass("it waited for the late answer and read it".into()),
            other => other,
        },
        Judge::AskedStatus => asked_status(e),
        Judge::ReadThenStatus => match read_whole(e) {
            Verdict::Pass(_) => match asked_status(e) {
                Verdict::Pass(w) => Verdict::Pass(format!("it read the AF07 answer; {w}")),
                Verdict::Fail(w) => Verdict::Fail(format!("it read the AF07 answer, but {w}")),
                other => other,
            },
            other => other,
        },
        Judge::WaitedAfterBusy => match &e.next {
            Some(Next::Payment(after)) if *after < BUSY_PAUSE => Verdict::Fail(format!(
                "it tried again {} ms after the busy answer: a busy terminal needs at least 1 s",
                after.as_millis()
            )),
            Some(Next::Payment(after)) => Verdict::Pass(format!(
                "it tried again {} after the busy answer",
                secs(*after)
            )),
            Some(Next::Status) => {
                Verdict::Pass("it asked the last outcome (CD=T) after the busy answer".into())
            }
            None => Verdict::Waiting("no request from it since the busy answer".into()),
        },
        Judge::Partial => {
            let read = read_whole(e);
            if !matches!(read, Verdict::Pass(_)) {
                return read;
            }
            let partial = a.approved && a.amount.is_some_and(|p| Some(p) < a.requested);
            match (a.partial_ok, partial) {
                (true, true) => Verdict::Pass(format!(
                    "it allowed a partial approval (BF=1) and read it: CB={} of CB={}",
                    a.amount.unwrap_or_default(),
                    a.requested.unwrap_or_default()
                )),
                (false, _) if !a.approved && a.af == Some(Af::Refused) => Verdict::Pass(
                    "it does not allow partial approvals (no BF=1): the terminal refused \
                     (AF04), as a real one does, and it read the refusal"
                        .into(),
                ),
                (true, false) if a.approved => Verdict::Unseen(format!(
                    "approved in full: the amount CB={} was not above the partial 100; pay \
                     more than 1.00 to try a partial approval",
                    a.requested.unwrap_or_default()
                )),
                _ => Verdict::Unseen("no partial approval was given".into()),
            }
        }
    }
}

/// Where the exam's script stands, as the stage says.
enum Script {
    /// Not played: no script, or another one.
    Absent(String),
    /// The exam, and the place of its next step (its length once all are
    /// taken).
    Playing(usize),
}

fn script(stage: &Stage) -> Script {
    match stage.script_plans() {
        None => Script::Absent(
            "no simulator-script is played: start concertd (terminal simulator) with \
             simulator-script naming exam.script, installed with the documentation"
                .into(),
        ),
        Some((p, _)) if p != plans() => Script::Absent(
            "the simulator-script played is not the exam (its plans are not exam.script's)".into(),
        ),
        Some((_, next)) => Script::Playing(next),
    }
}

/// The latest episode of each step, of the latest run of the script.
fn latest(episodes: Vec<(Who, Episode)>) -> Vec<Option<(Who, Episode)>> {
    let ours = plans();
    let mut mine: Vec<(Who, Episode, usize, u64)> = episodes
        .into_iter()
        .filter_map(|(w, e)| {
            let t = e.answered.taken.as_ref()?;
            let (index, run) = (t.index, t.run);
            (ours.get(index) == Some(&t.plan)).then_some((w, e, index, run))
        })
        .collect();
    let last = mine.iter().map(|m| m.3).max().unwrap_or(0);
    mine.sort_by_key(|m| m.1.seq);
    let mut steps: Vec<Option<(Who, Episode)>> = vec![None; STEPS.len()];
    for (w, e, index, _) in mine.into_iter().filter(|m| m.3 == last) {
        steps[index] = Some((w, e));
    }
    steps
}

/// `concertctl exam`: each step, what the register did and the verdict,
/// what to check on the register, and where the exam stands.
pub fn report(findings: &Findings, stage: &Stage) -> String {
    let steps = latest(findings.episodes());
    let n = STEPS.len();
    let mut out = String::new();
    let (mut pass, mut fail, mut unseen, mut waiting, mut done) = (0, 0, 0, 0, 0);
    for (i, (step, seen)) in STEPS.iter().zip(&steps).enumerate() {
        let Some((who, e)) = seen else {
            let _ = writeln!(
                out,
                "step {} of {n}, {} ({}): not taken yet",
                i + 1,
                step.name,
                step.plan
            );
            continue;
        };
        done += 1;
        let v = judge(step, e);
        match v {
            Verdict::Pass(_) => pass += 1,
            Verdict::Fail(_) => fail += 1,
            Verdict::Unseen(_) => unseen += 1,
            Verdict::Waiting(_) => waiting += 1,
        }
        let what = match (e.answered.tx, e.answered.op) {
            (Some(id), Some(op)) => format!("tx {id} {}", op.name()),
            (Some(id), None) => format!("tx {id}"),
            (None, Some(op)) => format!("{} answered busy, no transaction", op.name()),
            (None, None) => "no transaction".into(),
        };
        let _ = writeln!(
            out,
            "step {} of {n}, {} ({}): {}",
            i + 1,
            step.name,
            step.plan,
            v.word()
        );
        let _ = writeln!(out, "  {}, {what}: {}", who.label(), v.why());
        let _ = writeln!(out, "  check: {}", step.check);
    }
    let registers: std::collections::BTreeSet<String> =
        steps.iter().flatten().map(|(w, _)| w.label()).collect();
    let _ = write!(
        out,
        "exam: {done} of {n} steps done: {pass} pass, {fail} fail, {unseen} cannot see, \
         {waiting} waiting"
    );
    if registers.len() > 1 {
        let _ = write!(out, " ({} registers took part)", registers.len());
    }
    out.push('\n');
    match script(stage) {
        Script::Absent(why) => {
            let _ = writeln!(out, "exam: {why}");
        }
        Script::Playing(next) if next < n => {
            let _ = writeln!(
                out,
                "exam: pay again to continue: step {} of {n}, {}, is next",
                next + 1,
                STEPS[next].name
            );
        }
        Script::Playing(_) if waiting > 0 => {
            let _ = writeln!(
                out,
                "exam: every step taken; waiting for the register's next request (pay again \
                 if it sends none)"
            );
        }
        Script::Playing(_) => {
            let _ = writeln!(out, "exam: every step taken: the exam is over");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::plan::Script;
    use crate::front::findings::{Answered, Seen};
    use crate::wire::channel::Channel;
    use crate::wire::operation::Operation;
    use std::path::Path;
    use std::time::Instant;

    #[test]
    fn etc_exam_script_is_the_table() {
        let text = include_str!("../../etc/exam.script");
        let script = Script::parse(Path::new("exam.script"), text).unwrap();
        let theirs: Vec<Plan> = script.lines.into_iter().map(|(_, p)| p).collect();
        assert_eq!(plans().len(), STEPS.len(), "every step's plan parses");
        assert_eq!(theirs, plans());
        // Each line says which step it is.
        for (i, line) in text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| !l.trim().is_empty())
            .enumerate()
        {
            assert!(line.contains(&format!("# {}: ", i + 1)), "{line}");
        }
    }

    #[test]
    fn concertctl_8_lists_every_step_in_order() {
        let man = include_str!("../../man/concertctl.8");
        let exam = &man[man.find(".Sh EXAM").unwrap()..];
        let mut at = 0;
        for s in &STEPS {
            let item = format!(".It\n{},\n.Li {} :\n", s.name, s.plan);
            let found = exam[at..].find(&item);
            assert!(found.is_some(), "{item:?} not in EXAM, in order");
            at += found.unwrap_or(0);
        }
    }

    fn episode(a: Answered, next: Option<Next>) -> Episode {
        Episode {
            seq: 1,
            answered: a,
            at: Instant::now(),
            next,
        }
    }

    fn step(plan: &str) -> &'static Step {
        STEPS.iter().find(|s| s.plan == plan).unwrap()
    }

    fn delivered(r: Result<(), &str>) -> Option<Result<(), String>> {
        Some(r.map_err(str::to_string))
    }

    #[test]
    fn each_judgement_from_what_the_terminal_sees() {
        let split = step("approve split=3:200ms");
        let read = Answered {
            approved: true,
            split: true,
            delivered: delivered(Ok(())),
            ..Answered::default()
        };
        assert_eq!(judge(split, &episode(read.clone(), None)).word(), "pass");
        let cut = Answered {
            delivered: delivered(Err("connection reset by the register")),
            ..read.clone()
        };
        let v = judge(split, &episode(cut.clone(), None));
        assert_eq!(v.word(), "fail");
        assert!(v.why().contains("only its first part"), "{v:?}");
        // Closed before the late answer: it gave up.
        let late = step("approve late=10s");
        let gave_up = Answered {
            closed_after: Some(Duration::from_secs(5)),
            ..cut
        };
        let v = judge(late, &episode(gave_up, None));
        assert!(v.why().contains("closed 5.0 s after its request"), "{v:?}");
        // A lost answer: judged at the next request.
        let silent = step("approve silent");
        let lost = Answered {
            withheld: true,
            delivered: delivered(Err("simulator: silent")),
            ..Answered::default()
        };
        assert_eq!(
            judge(silent, &episode(lost.clone(), None)).word(),
            "waiting"
        );
        assert_eq!(
            judge(silent, &episode(lost.clone(), Some(Next::Status))).word(),
            "pass"
        );
        let again = Some(Next::Payment(Duration::from_secs(3)));
        assert_eq!(judge(silent, &episode(lost, again.clone())).word(), "fail");
        // AF07 read, then a payment without asking.
        let af07 = Answered {
            af: Some(Af::NotEnded),
            delivered: delivered(Ok(())),
            ..Answered::default()
        };
        let v = judge(step("not-ended"), &episode(af07, again.clone()));
        assert_eq!(v.word(), "fail");
        assert!(v.why().starts_with("it read the AF07 answer, but"), "{v:?}");
        // Busy: a retry under 1 s fails, later passes.
        let busy = step("busy");
        let b = Answered {
            busy: true,
            ..Answered::default()
        };
        let soon = Some(Next::Payment(Duration::from_millis(300)));
        let v = judge(busy, &episode(b.clone(), soon));
        assert_eq!(v.word(), "fail");
        assert!(v.why().contains("300 ms"), "{v:?}");
        assert_eq!(judge(busy, &episode(b, again)).word(), "pass");
        // Partial: approved for less with BF=1, refused without it, and
        // an amount too small tries nothing.
        let partial = step("partial=100");
        let part = Answered {
            approved: true,
            amount: Some(100),
            requested: Some(1000),
            partial_ok: true,
            delivered: delivered(Ok(())),
            ..Answered::default()
        };
        assert_eq!(judge(partial, &episode(part.clone(), None)).word(), "pass");
        let refused = Answered {
            approved: false,
            amount: None,
            af: Some(Af::Refused),
            partial_ok: false,
            ..part.clone()
        };
        assert_eq!(judge(partial, &episode(refused, None)).word(), "pass");
        let small = Answered {
            amount: Some(50),
            requested: Some(50),
            ..part
        };
        let v = judge(partial, &episode(small, None));
        assert_eq!(v.word(), "cannot see");
        assert!(v.why().contains("pay more than 1.00"), "{v:?}");
    }

    #[test]
    fn the_report_follows_the_latest_run_and_names_each_register() {
        let stage = Stage::new();
        let text = include_str!("../../etc/exam.script");
        let script = Script::parse(Path::new("exam.script"), text).unwrap();
        stage.configure(true, Some(&script), Duration::from_secs(5));
        let f = Findings::new();
        let who = |peer: &str| Who {
            channel: Channel::Tcp,
            peer: peer.into(),
            ca: Some(1),
        };
        let pay = |w: &Who, id: u64| {
            f.request(
                w,
                &Seen {
                    op: Some(Operation::Debit),
                    ..Seen::default()
                },
            );
            stage.begin(id, Channel::Tcp);
            f.answered(
                w,
                &Answered {
                    op: Some(Operation::Debit),
                    transaction: true,
                    approved: true,
                    tx: Some(id),
                    taken: stage.taken(id),
                    delivered: delivered(Ok(())),
                    ..Answered::default()
                },
            );
        };
        // A first run cut short by a changed script played again.
        pay(&who("10.0.0.1"), 1);
        pay(&who("10.0.0.1"), 2);
        stage.configure(true, None, Duration::from_secs(5));
        stage.configure(true, Some(&script), Duration::from_secs(5));
        // The new run: step 1 by one register, step 2 by another.
        pay(&who("10.0.0.2"), 3);
        pay(&who("10.0.0.3"), 4);
        let r = report(&f, &stage);
        assert!(
            r.contains("step 1 of 11, split answer (approve split=3:200ms): pass\n  register 01 at tcp 10.0.0.2, tx 3 debit: "),
            "{r}"
        );
        assert!(
            r.contains("  register 01 at tcp 10.0.0.3, tx 4 debit: "),
            "{r}"
        );
        assert!(!r.contains("10.0.0.1"), "{r}");
        assert!(r.contains("step 3 of 11, late answer (approve late=10s): not taken yet"));
        assert!(
            r.contains("exam: 2 of 11 steps done: 2 pass, 0 fail, 0 cannot see, 0 waiting (2 registers took part)\n"),
            "{r}"
        );
        assert!(
            r.ends_with("exam: pay again to continue: step 3 of 11, late answer, is next\n"),
            "{r}"
        );
    }
}
