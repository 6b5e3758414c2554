//! The commands a control connection may send, and what they answer:
//! `status` and `reload` asked of the main thread, the simulator's
//! commands handed to the stage, and `show` and `totals` read from the
//! journal (on the connection's thread) and written for a person.

use super::{Ask, Journal};
use crate::backend::stage::Stage;
use crate::terminal::answered;
use crate::terminal::journal::{self, Record, Verdict};
use crate::wire::answer::{Outcome, Status};
use crate::wire::clock::{self, Civil};
use crate::wire::currency;
use crate::wire::operation::Operation;
use crossbeam_channel::{bounded, Sender};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::time::Duration;

/// `show N`: at most this many transactions.
pub const MAX_SHOW: usize = 1000;

/// `show` without N.
pub const DEFAULT_SHOW: usize = 20;

/// How long a command waits for the main thread (a reload, the status).
const ASK_WAIT: Duration = Duration::from_secs(30);

/// A day of the local calendar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Day {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}

impl Day {
    pub fn of(c: &Civil) -> Day {
        Day {
            year: c.year,
            month: c.month,
            day: c.day,
        }
    }

    /// `YYYY-MM-DD`, a date that exists.
    pub fn parse(s: &str) -> Option<Day> {
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let digits = |r: std::ops::Range<usize>| -> Option<u32> {
            let t = s.get(r)?;
            t.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| t.parse().ok())?
        };
        let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
        let year = i32::try_from(year).ok()?;
        let days = clock::days_in_month(year, month)?;
        (1..=days)
            .contains(&day)
            .then_some(Day { year, month, day })
    }
}

impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// What a control connection may ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Status,
    Show(usize),
    /// `None`: today.
    Totals(Option<Day>),
    Reload,
    /// `watch`: the connection streams events until the client closes
    /// (served by [`super::watch`], not [`run`]).
    Watch,
    /// A command for the simulator on demand (`next`, `hold`, `decide`,
    /// `press`), read by the stage itself.
    Simulator(String),
    /// `registers`: each register's findings.
    Registers,
    /// `registers clear`: forget them.
    RegistersClear,
    /// `exam`: each step of the exam script, judged.
    Exam,
}

/// The commands, for messages and `concertctl -h`.
pub const COMMANDS: &str = "status, show [N], totals [YYYY-MM-DD], reload, watch, \
                            next [OUTCOME [QUIRK...] | clear | rewind], hold on|off, \
                            decide OUTCOME [QUIRK...], press red, registers [clear], exam";

impl Command {
    /// One command line, its words separated by blanks.
    pub fn parse(line: &str) -> Result<Command, String> {
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        match words.as_slice() {
            ["next" | "hold" | "decide" | "press", ..] => Ok(Command::Simulator(words.join(" "))),
            ["status"] => Ok(Command::Status),
            ["reload"] => Ok(Command::Reload),
            ["watch"] => Ok(Command::Watch),
            ["show"] => Ok(Command::Show(DEFAULT_SHOW)),
            ["show", n] => match n.parse::<usize>() {
                Ok(n) if (1..=MAX_SHOW).contains(&n) => Ok(Command::Show(n)),
                _ => Err(format!(
                    "show {n:?}: N must be a number from 1 to {MAX_SHOW}"
                )),
            },
            ["totals"] => Ok(Command::Totals(None)),
            ["registers"] => Ok(Command::Registers),
            ["exam"] => Ok(Command::Exam),
            ["registers", "clear"] => Ok(Command::RegistersClear),
            ["registers", w, ..] => Err(format!(
                "registers {:?}: the only argument is clear",
                crate::wire::pan::escape_str(w)
            )),
            ["totals", d] => Day::parse(d)
                .map(|d| Command::Totals(Some(d)))
                .ok_or_else(|| format!("totals {d:?}: not a day written YYYY-MM-DD")),
            [] => Err(format!("no command; the commands are {COMMANDS}")),
            [c @ ("status" | "reload" | "watch"), ..] => Err(format!("{c} takes no argument")),
            [c @ ("show" | "totals"), ..] => Err(format!("{c} takes at most one argument")),
            [c, ..] => Err(format!(
                "unknown command {c:?}; the commands are {COMMANDS}"
            )),
        }
    }
}

pub(super) fn run(
    c: Command,
    journal: &Journal,
    ask: &Sender<Ask>,
    stage: &Stage,
    findings: &crate::front::findings::Findings,
) -> Result<String, String> {
    match c {
        Command::Registers => Ok(findings.report(|s| clock::local(s, 0))),
        Command::Exam => Ok(crate::front::exam::report(findings, stage)),
        Command::RegistersClear => {
            let n = findings.clear();
            log::info!("control: registers clear: {n} registers forgotten");
            Ok(format!("{n} registers forgotten\n"))
        }
        // Straight to the stage: a decision must reach a held transaction
        // while the worker waits for it.
        Command::Simulator(line) => {
            let r = stage.command(&line);
            match &r {
                // A query changes nothing: not an event of the log.
                Ok(said) if Stage::is_query(&line) => log::debug!(
                    "control: {}: {}",
                    crate::wire::pan::escape_str(&line),
                    crate::wire::pan::escape_str(said)
                ),
                // Logged here once (the stage does not log them).
                Ok(said) => log::info!("control: {}: {said}", crate::wire::pan::escape_str(&line)),
                Err(why) => {
                    log::info!(
                        "control: {}: refused: {why}",
                        crate::wire::pan::escape_str(&line)
                    )
                }
            }
            r
        }
        Command::Watch => Err("watch is served by the connection itself".into()),
        Command::Status => {
            let (tx, rx) = bounded(1);
            ask.send(Ask::Status(tx))
                .map_err(|_| "concertd is stopping".to_string())?;
            rx.recv_timeout(ASK_WAIT)
                .map_err(|_| "concertd did not answer (stopping?)".into())
        }
        Command::Reload => {
            log::info!("control: reload asked");
            let (tx, rx) = bounded(1);
            ask.send(Ask::Reload(tx))
                .map_err(|_| "concertd is stopping".to_string())?;
            rx.recv_timeout(ASK_WAIT)
                .map_err(|_| "concertd did not answer (stopping?)".to_string())?
        }
        Command::Show(n) => {
            let local = |s| clock::local(s, 0);
            one_read(journal, || {
                crate::terminal::journal::read::newest(&journal.path, journal.keep, n)
            })
            .map(|records| show(&records, local))
        }
        Command::Totals(day) => {
            let day = day.unwrap_or_else(|| Day::of(&clock::now()));
            let local = |s| clock::local(s, 0);
            let mut days = Days::default();
            one_read(journal, || {
                crate::terminal::journal::read::day(
                    &journal.path,
                    journal.keep,
                    |at| journal::unix_time(at).is_some_and(|t| Day::of(&local(t)) < day),
                    |time| days.of(time, &local) == Some(day),
                    || Totals::new(day),
                    |t, r| t.add(&r, &local),
                )
            })
            .map(|(t, read)| t.text(read.starts.as_deref(), &local))
        }
    }
}

/// One read of the journal at a time: each holds a few buffers and what
/// its answer keeps, and several control connections must not multiply
/// that.
static READING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `read`, one connection at a time.
fn one_read<T>(j: &Journal, read: impl FnOnce() -> io::Result<T>) -> Result<T, String> {
    let _one = READING.lock().unwrap_or_else(|p| p.into_inner());
    read().map_err(|e| format!("cannot read the journal {}: {e}", j.path.display()))
}

/// The local day of journal time stamps, by their minute: a zone's
/// offset changes only on a whole minute, and a day's lines share a few
/// minutes each, so most are not converted at all.
#[derive(Default)]
struct Days {
    minute: Vec<u8>,
    day: Option<Day>,
}

impl Days {
    fn of(&mut self, stamp: &[u8], local: &impl Fn(i64) -> Civil) -> Option<Day> {
        let minute = stamp.get(..16)?;
        if self.minute != minute {
            self.minute.clear();
            self.minute.extend_from_slice(minute);
            self.day = std::str::from_utf8(stamp)
                .ok()
                .and_then(journal::unix_time)
                .map(|s| Day::of(&local(s)));
        }
        self.day
    }
}

/// `2026-12-01 10:02:03` in the zone `local` gives; the stamp as it is
/// when it cannot be read.
fn when(stamp: &str, local: &impl Fn(i64) -> Civil) -> String {
    match journal::unix_time(stamp) {
        Some(s) => {
            let c = local(s);
            format!(
                "{} {:02}:{:02}:{:02}",
                Day::of(&c),
                c.hour,
                c.minute,
                c.second
            )
        }
        None => stamp.to_string(),
    }
}

/// A journaled transaction as the totals and `show` see it.
struct Seen {
    op: Operation,
    /// Asked with an immediate answer (`BA=1`).
    immediate: bool,
    currency: u16,
    requested: Option<u64>,
    outcome: Outcome,
}

fn seen(r: &Record) -> Result<Seen, String> {
    let (req, answer) = crate::terminal::worker::reread(r)?;
    Ok(Seen {
        op: req.op,
        immediate: req.immediate,
        currency: req.currency.unwrap_or(0),
        requested: req.amount,
        outcome: Outcome::from_answer(&answer, &req.frame),
    })
}

fn money(minor: u128, currency: u16) -> String {
    // An amount past u64 (only a sum of many can be) is shown in minor units.
    match u64::try_from(minor) {
        Ok(m) => format!(
            "{} {}",
            currency::format_amount(m, currency, false),
            currency::label(currency)
        ),
        Err(_) => format!("{minor} minor units of {}", currency::label(currency)),
    }
}

/// The outcome in words: AF named, a partial approval with what was
/// charged; an operation that moves no money (print, telecollection)
/// done or not, with no amount.
fn outcome_words(r: &Record, s: &Seen) -> String {
    let payment = s.op.is_payment();
    let base = match (r.verdict, &s.outcome.status) {
        (None, _) => "not ended yet".to_string(),
        (Some(Verdict::Unknown), _) => answered::UNKNOWN.to_string(),
        (Some(Verdict::NotDone), _) if payment => "not done (nothing charged)".to_string(),
        (Some(Verdict::NotDone), _) => "not done".to_string(),
        (_, Status::Approved) if !payment => "done".to_string(),
        (_, Status::Approved) => {
            let charged = s.outcome.charged(s.requested);
            if Some(charged) != s.requested {
                format!(
                    "approved for {} (partial)",
                    money(charged.into(), s.currency)
                )
            } else {
                "approved".to_string()
            }
        }
        (_, Status::Declined(af)) if !payment => {
            format!("not done, AF{} ({})", af.code(), af.label())
        }
        (_, Status::Declined(af)) => format!("declined AF{} ({})", af.code(), af.label()),
    };
    if r.resolved {
        format!("{base}, resolved later")
    } else {
        base
    }
}

/// What the register got: for an outcome unknown (or unknown at first,
/// resolved later), whether it was answered AF07 or got nothing, said as
/// such; else whether the answer was delivered.
fn delivery_words(r: &Record, s: Option<&Seen>) -> String {
    let immediate = s.is_some_and(|s| s.immediate);
    match (r.verdict, r.delivered) {
        (Some(Verdict::Unknown), _) => answered::reached(r, immediate).to_string(),
        _ if r.resolved => format!("at first {}", answered::reached(r, immediate)),
        (_, Some(true)) => "delivered".into(),
        (_, Some(false)) => "undelivered".into(),
        (_, None) => "delivery not reported".into(),
    }
}

/// The operation and, for one that moves money, its amount.
fn asked(s: &Seen) -> String {
    op_and_amount(s.op, s.requested, s.currency)
}

/// An operation as the lists write it: with its amount when it moves money.
fn op_and_amount(op: Operation, amount: Option<u64>, currency: u16) -> String {
    let amount = amount
        .filter(|_| op.is_payment())
        .map(|a| format!(" {}", money(a.into(), currency)))
        .unwrap_or_default();
    format!("{}{amount}", op.name())
}

/// What a journaled request asked (operation and amount), read from the
/// request alone: for a transaction with no answer yet, or withdrawn.
fn asked_of(r: &Record) -> String {
    crate::wire::request::reread(&r.request).map_or_else(
        |_| "request".to_string(),
        |req| op_and_amount(req.op, req.amount, req.currency.unwrap_or(0)),
    )
}

/// A transaction withdrawn before it started (its request NAKed on the
/// serial line): what it asked, and that nothing ran.
fn withdrawn_words(r: &Record) -> String {
    format!(
        "{}: withdrawn, NAKed before it started (nothing charged)",
        asked_of(r)
    )
}

/// `show`: one line per transaction, oldest first.
pub fn show(records: &[Record], local: impl Fn(i64) -> Civil) -> String {
    let mut out = String::new();
    if records.is_empty() {
        out.push_str("no transaction in the journal\n");
    }
    for r in records {
        let seen = seen(r);
        let what = match &seen {
            _ if r.withdrawn => withdrawn_words(r),
            Ok(s) => format!("{}: {}", asked(s), outcome_words(r, s)),
            Err(_) if r.verdict.is_none() => format!("{}: not ended yet", asked_of(r)),
            Err(why) => why.clone(),
        };
        let delivery = delivery_words(r, seen.as_ref().ok());
        let _ = writeln!(
            out,
            "{} tx {} {} {} register {:02} {what}; {delivery}",
            when(&r.begun_at, &local),
            r.id,
            r.channel,
            r.peer,
            r.register
        );
    }
    out
}

/// The name operations are totalled under: a deferred debit is a debit
/// for the day's money, so it is added to the debits.
fn total_name(op: Operation) -> &'static str {
    if op.is_debit() {
        Operation::Debit.name()
    } else {
        op.name()
    }
}

/// Per operation name: how many, and their sum in minor units.
type Sums = BTreeMap<&'static str, (u64, u128)>;

/// The totals of a day, added one transaction at a time.
pub struct Totals {
    day: Day,
    sums: BTreeMap<(u8, u16), Sums>,
    /// What is listed apart, by id.
    apart: BTreeMap<u64, String>,
    /// Operations that move no money (print, telecollection): how many,
    /// by name and by what became of them.
    others: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
}

impl Totals {
    pub fn new(day: Day) -> Totals {
        Totals {
            day,
            sums: BTreeMap::new(),
            apart: BTreeMap::new(),
            others: BTreeMap::new(),
        }
    }

    /// One transaction (once: a carried copy is not given again), with
    /// every event of it; one not begun on the day is left out.
    pub fn add(&mut self, r: &Record, local: &impl Fn(i64) -> Civil) {
        let of_day = journal::unix_time(&r.begun_at).map(|s| Day::of(&local(s)));
        // A withdrawn request never ran: no operation to count or list.
        if of_day != Some(self.day) || r.withdrawn {
            return;
        }
        let s = match seen(r) {
            Ok(s) => s,
            Err(why) => {
                let line = if r.verdict.is_none() {
                    format!(
                        "tx {} register {:02} {}: not ended yet",
                        r.id,
                        r.register,
                        asked_of(r)
                    )
                } else {
                    format!("tx {} register {:02}: {why}", r.id, r.register)
                };
                self.apart.insert(r.id, line);
                return;
            }
        };
        // Counted apart: no amount, no money, nothing to reconcile.
        if !s.op.is_payment() {
            let state = match (r.verdict, s.outcome.is_approved()) {
                (None, _) => "not ended yet",
                (Some(Verdict::Unknown), _) => answered::UNKNOWN,
                (Some(Verdict::Approved), true) => "done",
                _ => "not done",
            };
            *self
                .others
                .entry(s.op.name())
                .or_default()
                .entry(state)
                .or_default() += 1;
            return;
        }
        let counted = r.verdict == Some(Verdict::Approved) && !r.resolved;
        if counted && s.outcome.is_approved() {
            let e = self
                .sums
                .entry((r.register, s.currency))
                .or_default()
                .entry(total_name(s.op))
                .or_default();
            e.0 += 1;
            e.1 += u128::from(s.outcome.charged(s.requested));
        } else if r.resolved || r.verdict != Some(Verdict::Declined) {
            // What the register got, where it has to be checked.
            let got = if r.verdict == Some(Verdict::Unknown) || r.resolved {
                format!("; {}", delivery_words(r, Some(&s)))
            } else {
                String::new()
            };
            self.apart.insert(
                r.id,
                format!(
                    "{} tx {} register {:02} {}: {}{got}",
                    when(&r.begun_at, local),
                    r.id,
                    r.register,
                    asked(&s),
                    outcome_words(r, &s)
                ),
            );
        }
    }

    /// The answer. `starts`: when the oldest generation kept was started
    /// by a rotation, if it was and the day may be older.
    pub fn text(self, starts: Option<&str>, local: &impl Fn(i64) -> Civil) -> String {
        let day = self.day;
        let mut out = format!(
            "totals for {day} (local time), approved operations at the amount charged; \
             debits include deferred debits\n"
        );
        if self.sums.is_empty() {
            out.push_str("no approved operation\n");
        }
        for ((register, cur), ops) in &self.sums {
            let parts: Vec<String> = ops
                .iter()
                .map(|(name, (n, sum))| format!("{name} {n} = {}", money(*sum, *cur)))
                .collect();
            let _ = writeln!(
                out,
                "register {register:02} {}: {}",
                currency::label(*cur),
                parts.join("; ")
            );
        }
        if !self.others.is_empty() {
            let parts: Vec<String> = self
                .others
                .iter()
                .map(|(name, states)| {
                    let states: Vec<String> =
                        states.iter().map(|(st, n)| format!("{n} {st}")).collect();
                    format!("{name} {}", states.join(", "))
                })
                .collect();
            let _ = writeln!(
                out,
                "other operations, no money moved: {}",
                parts.join("; ")
            );
        }
        if !self.apart.is_empty() {
            out.push_str("not counted above (unknown, resolved later or not ended; check each):\n");
            for l in self.apart.values() {
                let _ = writeln!(out, "  {l}");
            }
        }
        if let Some(t) = starts.and_then(journal::unix_time) {
            if Day::of(&local(t)) >= day {
                let _ = writeln!(
                    out,
                    "incomplete: the journal starts at {}; older records were dropped by rotation \
                     (journal-keep), but for those carried over",
                    when(starts.unwrap_or_default(), local)
                );
            }
        }
        out
    }
}

/// `totals` of records held in memory (the daemon streams them instead:
/// see [`crate::terminal::journal::read::day`]): for `day` (in the zone `local`
/// gives), per register and currency, the count and sum of approved
/// operations by name, each at the amount charged (a partial approval at
/// its part); a transaction given twice counts once. Unknown and later
/// resolved outcomes are listed apart, not added. `starts`: when the
/// oldest generation kept was started by a rotation.
pub fn totals(
    records: &[Record],
    day: Day,
    starts: Option<&str>,
    local: impl Fn(i64) -> Civil,
) -> String {
    let mut t = Totals::new(day);
    let mut ids = std::collections::HashSet::new();
    for r in records.iter().filter(|r| ids.insert(r.id)) {
        t.add(r, &local);
    }
    t.text(starts, &local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_bad_ones_say_why() {
        assert_eq!(Command::parse("status\n"), Ok(Command::Status));
        assert_eq!(Command::parse("  reload "), Ok(Command::Reload));
        assert_eq!(Command::parse("watch"), Ok(Command::Watch));
        assert!(Command::parse("watch all").is_err());
        assert_eq!(Command::parse("show"), Ok(Command::Show(DEFAULT_SHOW)));
        assert_eq!(Command::parse("show 5"), Ok(Command::Show(5)));
        assert_eq!(Command::parse("show 1000"), Ok(Command::Show(MAX_SHOW)));
        assert_eq!(Command::parse("totals"), Ok(Command::Totals(None)));
        assert_eq!(
            Command::parse("totals 2024-02-29"),
            Ok(Command::Totals(Some(Day {
                year: 2024,
                month: 2,
                day: 29
            })))
        );
        for bad in [
            "",
            "show 0",
            "show 1001",
            "show -1",
            "show x",
            "show 1 2",
            "totals 2023-02-29",
            "totals 2026-13-01",
            "totals 2026-1-01",
            "totals +026-01-01",
            "status now",
            "STATUS",
        ] {
            assert!(Command::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Command::parse("frob").unwrap_err().contains(COMMANDS));
        // The simulator's commands go whole to the stage, which reads them.
        assert_eq!(
            Command::parse(" next  approve split=3 "),
            Ok(Command::Simulator("next approve split=3".into()))
        );
        assert_eq!(
            Command::parse("press red"),
            Ok(Command::Simulator("press red".into()))
        );
    }

    const T: &str = "2026-11-26T16:07:28.800Z";

    fn rec(id: u64, reg: u8, req: &str, verdict: Option<Verdict>, answer: &str) -> Record {
        Record {
            id,
            begun_at: T.into(),
            channel: "tcp".into(),
            peer: "127.0.0.1:1".into(),
            register: reg,
            request: req.as_bytes().to_vec(),
            ended_at: verdict.map(|_| T.into()),
            verdict,
            answer: verdict.map(|_| answer.as_bytes().to_vec()),
            ..Record::default()
        }
    }

    fn utc(s: i64) -> Civil {
        clock::utc(s, 0)
    }

    const DAY: Day = Day {
        year: 2026,
        month: 11,
        day: 26,
    };

    #[test]
    fn totals_add_approved_operations_at_the_amount_charged() {
        let debit = "CZ0040320CA00201CB0041000CD0010CE003978";
        let partial = "CZ0040320CA00201CB0041000CD0010CE003978BF0011";
        let deferred = "CZ0040320CA00201CB003250CD0017CE003978";
        let usd = "CZ0040320CA00201CB003999CD0010CE003840";
        let cancel = "CZ0040320CA00201CB003100CD0012CE003978";
        let records = vec![
            rec(
                1,
                1,
                debit,
                Some(Verdict::Approved),
                &format!("{debit}AE00210"),
            ),
            // Approved for 4.00 of 10.00.
            rec(
                2,
                1,
                partial,
                Some(Verdict::Approved),
                "CZ0040320CA00201CB0040400CD0010CE003978BF0011AE00210",
            ),
            rec(
                3,
                1,
                deferred,
                Some(Verdict::Approved),
                &format!("{deferred}AE00210"),
            ),
            rec(4, 1, usd, Some(Verdict::Approved), &format!("{usd}AE00210")),
            rec(
                5,
                1,
                cancel,
                Some(Verdict::Approved),
                &format!("{cancel}AE00210"),
            ),
            rec(
                6,
                1,
                debit,
                Some(Verdict::Declined),
                &format!("{debit}AE00201AF00204"),
            ),
            // The same id again (a carried copy): once.
            rec(
                1,
                1,
                debit,
                Some(Verdict::Approved),
                &format!("{debit}AE00210"),
            ),
            rec(
                7,
                1,
                debit,
                Some(Verdict::Unknown),
                &format!("{debit}AE00201AF00207"),
            ),
            rec(8, 2, debit, None, ""),
        ];
        let out = totals(&records, DAY, None, utc);
        assert!(
            out.contains("register 01 EUR: cancel 1 = 1.00 EUR; debit 3 = 16.50 EUR\n"),
            "{out}"
        );
        assert!(
            out.contains("register 01 USD: debit 1 = 9.99 USD\n"),
            "{out}"
        );
        assert!(
            out.contains("tx 7 register 01 debit 10.00 EUR: unknown"),
            "{out}"
        );
        // What it asked is said while it runs, as once it has ended.
        assert!(
            out.contains("tx 8 register 02 debit 10.00 EUR: not ended yet"),
            "{out}"
        );
        assert!(!out.contains("tx 6"), "{out}");
        assert!(!out.contains("incomplete"), "{out}");
        // Another day: nothing.
        let other = Day { day: 27, ..DAY };
        assert!(totals(&records, other, None, utc).contains("no approved operation"));
    }

    /// A serial request NAKed before it started: `show` says so, with
    /// what it asked; `totals` neither counts nor lists it.
    #[test]
    fn a_withdrawn_request_is_shown_as_such_and_not_totalled() {
        let debit = "CZ0040320CA00201CB0048000CD0010CE003978";
        let mut r = rec(9, 1, debit, Some(Verdict::NotDone), "");
        r.answer = None;
        r.withdrawn = true;
        let out = show(std::slice::from_ref(&r), utc);
        assert!(
            out.contains(
                "tx 9 tcp 127.0.0.1:1 register 01 debit 80.00 EUR: withdrawn, NAKed before it \
                 started (nothing charged); delivery not reported"
            ),
            "{out}"
        );
        let out = totals(&[r], DAY, None, utc);
        assert!(out.contains("no approved operation"), "{out}");
        assert!(!out.contains("tx 9"), "{out}");
    }

    /// What the register got of an unknown outcome, said as a fact, also
    /// once the outcome is resolved; an operation that moves no money is
    /// done or not, with no amount.
    #[test]
    fn show_says_what_the_register_got_and_what_each_operation_is() {
        let debit = "CZ0040320CA00201CB0041000CD0010CE003978";
        let af07 = format!("{debit}AE00201AF00207");
        let mut answered = rec(1, 1, debit, Some(Verdict::Unknown), &af07);
        answered.delivered = Some(true);
        let mut lost = rec(2, 1, debit, Some(Verdict::Unknown), &af07);
        lost.delivered = Some(false);
        let mut resolved = rec(
            3,
            1,
            debit,
            Some(Verdict::Approved),
            &format!("{debit}AE00210"),
        );
        resolved.recovered = true;
        resolved.resolved = true;
        let immediate = format!("{debit}BA0011");
        let later = rec(4, 1, &immediate, Some(Verdict::Unknown), &af07);
        let print = "CZ0040320CA00201CD001PZT017CK003100AK004aGk=";
        let refused = rec(
            5,
            1,
            print,
            Some(Verdict::Declined),
            "CZ0040320CA00201CD001PAE00201AF00212",
        );
        let out = show(&[answered, lost, resolved, later, refused], utc);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].ends_with("debit 10.00 EUR: unknown; the register was answered AF07"),
            "{out}"
        );
        assert!(
            lines[1].ends_with(
                "debit 10.00 EUR: unknown; the register got no answer: AF07 undelivered"
            ),
            "{out}"
        );
        assert!(
            lines[2].ends_with(
                "debit 10.00 EUR: approved, resolved later; at first the register got no answer: \
                 concertd stopped before the transaction ended"
            ),
            "{out}"
        );
        assert!(
            lines[3].contains("only the immediate acknowledgement"),
            "{out}"
        );
        assert!(
            lines[4].ends_with(
                "register 01 print: not done, AF12 (unknown operation); delivery not reported"
            ),
            "{out}"
        );
    }

    #[test]
    fn totals_say_when_rotation_dropped_part_of_the_day() {
        let on_the_day = "2026-11-26T09:00:00.000Z";
        let out = totals(&[], DAY, Some(on_the_day), utc);
        assert!(
            out.contains("incomplete: the journal starts at 2026-11-26 09:00:00"),
            "{out}"
        );
        // Started after the day: the whole day is gone.
        assert!(totals(&[], DAY, Some("2026-11-28T00:00:00.000Z"), utc).contains("incomplete"));
        // Started the day before: the day is whole.
        assert!(!totals(&[], DAY, Some("2026-11-25T23:59:59.000Z"), utc).contains("incomplete"));
    }

    #[test]
    fn sums_past_u64_do_not_wrap() {
        assert_eq!(
            money(u128::from(u64::MAX) + 1, 978),
            "18446744073709551616 minor units of EUR"
        );
        assert_eq!(money(1234, 978), "12.34 EUR");
    }
}
