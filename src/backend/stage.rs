//! The simulator on demand: what the next simulated transaction does, said
//! in a small vocabulary (`OUTCOME [QUIRK...]`, read by [`crate::config::plan`]),
//! and the stage that holds it between the ways in (a `simulator-script`,
//! the control socket) and the places that act on it (the simulator backend
//! for the outcome, the TCP and serial channels for the quirks).
//!
//! One [`Stage`] serves the whole service: made at start, given to every
//! simulator the worker builds (reloads rebuild the backend) and reached
//! by the channels and the control socket through the worker's handle,
//! since an armed plan, the script's position and the manual mode must
//! outlive a backend. Everything
//! is behind one mutex held for a few field updates, never across I/O.
//!
//! The API for the ways in, each returning a sentence for the operator:
//! [`Stage::arm`], [`Stage::armed`], [`Stage::clear`], [`Stage::hold`],
//! [`Stage::decide`], [`Stage::press_red`], [`Stage::state`], and
//! [`Stage::command`], which reads the same commands as text (`next ...`,
//! `hold on`, `decide ...`, `press red`, `state`) for a socket to forward.

use crate::config::plan::{Fate, Plan, Quirk, Script};
use crossbeam_channel::Sender;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Answers decided and not yet written; past it the oldest are forgotten
/// (their connection went away without asking for them).
const MAX_ANSWERS: usize = 32;

pub use crate::wire::channel::Channel;

/// What the simulator does with a transaction it starts.
#[derive(Debug, PartialEq, Eq)]
pub enum Begin {
    /// No plan: the amount table decides.
    Table,
    /// Manual mode: wait for [`Stage::decide`] (or the red key, or
    /// `transaction-timeout`).
    Hold,
    /// This outcome; `note` is what the journal and the log keep.
    Plan { fate: Fate, note: String },
}

/// A message to the thread of a running simulated transaction.
#[derive(Debug)]
pub enum Cmd {
    /// The manual decision, already settled: its outcome and note.
    Decide(Fate, String),
    /// The red key.
    Red,
    /// `hold off` while it waits: the amount table decides.
    Release,
}

/// How a channel writes one transaction's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// The quirks of this channel, to apply.
    pub quirks: Vec<Quirk>,
    /// Nothing is sent, for this reason (the outcome `unknown`).
    pub withhold: Option<&'static str>,
}

impl Answer {
    /// Carries this quirk (one without a value: those are found by
    /// [`Answer::split`], [`Answer::late`] and [`Answer::slow_enq`]).
    pub fn has(&self, q: Quirk) -> bool {
        self.quirks.contains(&q)
    }

    pub fn split(&self) -> Option<(u32, Duration)> {
        self.quirks.iter().find_map(|q| match q {
            Quirk::Split(n, g) => Some((*n, *g)),
            _ => None,
        })
    }

    /// `late`: the extra wait before a TCP answer.
    pub fn late(&self) -> Option<Duration> {
        self.quirks.iter().find_map(|q| match q {
            Quirk::Late(d) => Some(*d),
            _ => None,
        })
    }

    /// `slow-enq`: the wait before the serial answer's ENQ.
    pub fn slow_enq(&self) -> Option<Duration> {
        self.quirks.iter().find_map(|q| match q {
            Quirk::SlowEnq(d) => Some(*d),
            _ => None,
        })
    }
}

/// A plan a request took from the script, for the exam
/// (`concertctl exam`): its place among the script's plans, from 0, the
/// plan, and which run of the script took it (a run begins each time its
/// first plan is taken).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taken {
    pub index: usize,
    pub plan: Plan,
    pub run: u64,
}

/// The running simulated transaction, which the red key or a decision
/// reaches.
struct Run {
    id: u64,
    channel: Channel,
    cmd: Sender<Cmd>,
    waiting: bool,
    since: Instant,
}

struct Playing {
    script: Script,
    /// Index in `script.lines` of the next plan.
    next: usize,
}

#[derive(Default)]
struct Inner {
    /// The simulator is the backend: the ways in are refused otherwise.
    active: bool,
    armed: Option<Plan>,
    hold: bool,
    script: Option<Playing>,
    running: Option<Run>,
    answers: BTreeMap<u64, Answer>,
    /// Quirks acting before the request (nak-first, no-ack) already spent
    /// on the plan that comes next.
    early: Vec<Quirk>,
    /// The serial request frame (its payload) they were spent on: they
    /// apply to the transaction of that very request, not to another one
    /// that comes after a register gave up on it.
    early_for: Option<Vec<u8>>,
    /// An ENQ went un-ACKed for `no-ack` and the frame of its session is
    /// not read yet: only that frame says whether a transaction had it.
    unacked: bool,
    /// How long `open` keeps a connection: `transaction-timeout`.
    open_limit: Duration,
    /// The simulator that has the stage, and the last claim given.
    owner: u64,
    claims: u64,
    /// Script lines taken by transactions, by id, until their channel
    /// asks ([`Stage::taken`]); capped as `answers`.
    taken: BTreeMap<u64, Taken>,
    /// The script line the last busy answer took ([`Stage::busy_taken`]).
    busy_taken: Option<Taken>,
    /// Runs of the script begun: its first plan taken this many times.
    runs: u64,
}

impl Inner {
    /// The plan the next transaction takes, not taken yet.
    fn next_plan(&self) -> Option<&Plan> {
        self.armed.as_ref().or_else(|| {
            let p = self.script.as_ref()?;
            p.script.lines.get(p.next).map(|(_, plan)| plan)
        })
    }

    /// Takes the next plan and says where it came from.
    fn take_plan(&mut self) -> Option<(Plan, String)> {
        if let Some(p) = self.armed.take() {
            return Some((p, "next".into()));
        }
        let p = self.script.as_mut()?;
        let (line, plan) = p.script.lines.get(p.next)?.clone();
        p.next += 1;
        let at = p.script.at(line);
        if p.next == p.script.lines.len() {
            log::info!(
                "simulator: {} consumed, the amount table decides again",
                p.script.shown()
            );
        }
        Some((plan, format!("script {at}")))
    }

    /// The place in the script of the plan [`Inner::take_plan`] would take
    /// now: none when `next` armed one or the script is consumed.
    fn script_index(&self) -> Option<usize> {
        if self.armed.is_some() {
            return None;
        }
        let p = self.script.as_ref()?;
        (p.next < p.script.lines.len()).then_some(p.next)
    }

    /// The script's plan at `index` is taken now (by a request whose
    /// report may come after a later one's).
    fn took(&mut self, index: usize, plan: &Plan) -> Taken {
        if index == 0 {
            self.runs += 1;
        }
        Taken {
            index,
            plan: plan.clone(),
            run: self.runs,
        }
    }
}

pub struct Stage {
    inner: Mutex<Inner>,
}

impl Default for Stage {
    fn default() -> Stage {
        Stage::new()
    }
}

const NOT_SIMULATOR: &str = "the terminal is not the simulator: only the simulator can be \
                             told what to do (terminal simulator)";

impl Stage {
    pub fn new() -> Stage {
        Stage {
            inner: Mutex::new(Inner {
                open_limit: Duration::from_secs(60),
                ..Inner::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere leaves plain data behind: still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn active(&self) -> Result<MutexGuard<'_, Inner>, String> {
        let g = self.lock();
        if g.active {
            Ok(g)
        } else {
            Err(NOT_SIMULATOR.into())
        }
    }

    // ---- the ways in ----

    /// `next OUTCOME [QUIRK...]`: the next transaction, on any channel,
    /// takes this plan instead of the amount table (or the script's next
    /// line, which waits its turn).
    pub fn arm(&self, plan: Plan) -> Result<String, String> {
        let mut g = self.active()?;
        // Not logged here: the control socket logs the command and this
        // reply, once.
        let said = format!("armed: {plan}");
        g.armed = Some(plan);
        forget_early(&mut g);
        Ok(said)
    }

    /// What `next` armed, if anything.
    pub fn armed(&self) -> Option<Plan> {
        self.lock().armed.clone()
    }

    /// `next clear`: what was armed, now disarmed.
    pub fn clear(&self) -> Result<Option<Plan>, String> {
        let mut g = self.active()?;
        let was = g.armed.take();
        if was.is_some() {
            forget_early(&mut g);
        }
        Ok(was)
    }

    /// `hold on|off`. Off while a transaction waits: the amount table
    /// decides it now.
    pub fn hold(&self, on: bool) -> Result<String, String> {
        let mut g = self.active()?;
        g.hold = on;
        if on {
            return Ok("hold on: each transaction waits for a decision".into());
        }
        if let Some(r) = g.running.as_ref().filter(|r| r.waiting) {
            let _ = r.cmd.send(Cmd::Release);
            return Ok(format!(
                "hold off: tx {} released to the amount table",
                r.id
            ));
        }
        Ok("hold off".into())
    }

    /// `decide OUTCOME [QUIRK...]`: the waiting transaction ends so.
    /// Returns its id.
    pub fn decide(&self, plan: Plan) -> Result<u64, String> {
        let mut g = self.active()?;
        if plan.fate == Fate::Busy {
            return Err("busy answers a new request, not a running transaction".into());
        }
        let Some((id, channel, cmd)) = g
            .running
            .as_ref()
            .filter(|r| r.waiting)
            .map(|r| (r.id, r.channel, r.cmd.clone()))
        else {
            return Err(
                "no transaction is waiting for a decision (hold on makes them wait)".into(),
            );
        };
        // Now, not when the thread gets it: the channel may ask for the
        // answer's quirks as soon as the outcome is out.
        let ways = Ways {
            channel,
            answered: true,
            early: Vec::new(),
        };
        let (fate, note) = settle(&mut g, id, plan, "decide".into(), ways);
        if cmd.send(Cmd::Decide(fate, note)).is_err() {
            g.answers.remove(&id);
            return Err(format!("tx {id} ended meanwhile"));
        }
        if let Some(r) = g.running.as_mut() {
            r.waiting = false;
        }
        Ok(id)
    }

    /// `press red`: the running simulated transaction ends abandoned
    /// (AF06) now. Returns its id.
    pub fn press_red(&self) -> Result<u64, String> {
        let g = self.active()?;
        let Some(r) = g.running.as_ref() else {
            return Err("no simulated transaction is running".into());
        };
        r.cmd
            .send(Cmd::Red)
            .map(|()| r.id)
            .map_err(|_| format!("tx {} ended meanwhile", r.id))
    }

    /// What is armed, held, scripted and waiting, one fact a line.
    pub fn state(&self) -> String {
        let g = self.lock();
        if !g.active {
            return format!("simulator: inactive ({NOT_SIMULATOR})");
        }
        let mut out = Vec::new();
        out.push(match &g.armed {
            Some(p) => format!("next: {p}"),
            None => "next: nothing armed".into(),
        });
        out.push(format!("hold: {}", if g.hold { "on" } else { "off" }));
        match &g.script {
            Some(p) => out.push(match p.script.lines.get(p.next) {
                Some((line, plan)) => format!(
                    "script: {} line {line} is next ({plan}), {} of {} left",
                    p.script.shown(),
                    p.script.lines.len() - p.next,
                    p.script.lines.len()
                ),
                None => format!(
                    "script: {} consumed ({} lines), the amount table decides",
                    p.script.shown(),
                    p.script.lines.len()
                ),
            }),
            None => out.push("script: none".into()),
        }
        if let Some(r) = &g.running {
            out.push(format!(
                "running: tx {} {} for {:.1} s",
                r.id,
                if r.waiting {
                    "waiting for a decision"
                } else {
                    "simulated"
                },
                r.since.elapsed().as_secs_f64()
            ));
        }
        out.join("\n")
    }

    /// Whether a command line only asks (`next` alone, `state`): it
    /// changes nothing, and is not logged as if it did.
    pub fn is_query(line: &str) -> bool {
        let words: Vec<&str> = line.split_whitespace().collect();
        matches!(words.as_slice(), ["next"] | ["state"])
    }

    /// The commands as text: `next [OUTCOME [QUIRK...] | clear | rewind]`, `hold
    /// on|off`, `decide OUTCOME [QUIRK...]`, `press red`, `state`. The
    /// reply is a sentence for the operator; an error is a refusal.
    pub fn command(&self, line: &str) -> Result<String, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["next"] => {
                drop(self.active()?);
                Ok(self
                    .armed()
                    .map_or("nothing armed".into(), |p| format!("armed: {p}")))
            }
            ["next", "rewind"] => self.rewind(),
            ["next", "clear"] => Ok(match self.clear()? {
                Some(p) => format!("disarmed: {p}"),
                None => "nothing was armed".into(),
            }),
            ["next", plan @ ..] => self.arm(Plan::parse(plan)?),
            ["hold", "on"] => self.hold(true),
            ["hold", "off"] => self.hold(false),
            ["hold", ..] => Err("hold takes on or off".into()),
            ["decide", plan @ ..] => self
                .decide(Plan::parse(plan)?)
                .map(|id| format!("tx {id} decided")),
            ["press", "red"] => self
                .press_red()
                .map(|id| format!("tx {id}: red key pressed")),
            ["press", ..] => Err("the only key is red: press red".into()),
            ["state"] => Ok(self.state()),
            [w, ..] => Err(format!(
                "{w:?} is not a simulator command (next, hold, decide, press red, state)"
            )),
            [] => Err("no command".into()),
        }
    }

    // ---- the simulator backend's side ----

    /// The simulator became (or stopped being) the backend, with this
    /// script and `transaction-timeout`. A script read again is played
    /// from its first line only when it changed.
    /// A simulator is built: the stage is its from now on (a reload may
    /// build one before the previous one is dropped). Its claim, for
    /// [`Stage::release`].
    pub fn adopt(&self) -> u64 {
        let mut g = self.lock();
        g.claims += 1;
        g.owner = g.claims;
        g.active = true;
        g.owner
    }

    /// The simulator with this claim is dropped: if the stage is still
    /// its, no simulator is the backend any more.
    pub fn release(&self, claim: u64) {
        let mut g = self.lock();
        if g.owner == claim {
            g.active = false;
            g.running = None;
        }
    }

    pub fn configure(&self, active: bool, script: Option<&Script>, open_limit: Duration) {
        let mut g = self.lock();
        g.active = active;
        g.open_limit = open_limit;
        if !active {
            g.running = None;
            return;
        }
        load(&mut g, script);
    }

    /// The script a configuration names, read again (`reload`, or
    /// config-watch seeing it change): played from its first step when it
    /// changed, kept where it is when not. Says which, for the reply to
    /// `reload`; `None` when there is no script and was none. The
    /// simulator's own reload then finds it the same and keeps it.
    pub fn load_script(&self, script: Option<&Script>) -> Option<Verdict> {
        load(&mut self.lock(), script)
    }

    /// `next rewind`: the script plays again from its first step.
    pub fn rewind(&self) -> Result<String, String> {
        let mut g = self.active()?;
        let Some(p) = g.script.as_mut() else {
            return Err("no simulator-script to rewind".into());
        };
        p.next = 0;
        let said = format!(
            "script {} rewound: {}, starts at step 1",
            p.script.shown(),
            steps(p.script.lines.len())
        );
        // Quirks spent before a request belong to the plan they were spent
        // for: an armed plan keeps them, the script's next step does not.
        if g.armed.is_none() {
            forget_early(&mut g);
        }
        Ok(said)
    }

    /// Is the next plan `busy`? Then it is spent on this request, which
    /// gets the busy answer; the sentence is for the log.
    pub fn take_busy(&self) -> Option<String> {
        let mut g = self.lock();
        if !g.active || g.next_plan().map(|p| p.fate) != Some(Fate::Busy) {
            return None;
        }
        let index = g.script_index();
        let (plan, from) = g.take_plan()?;
        g.busy_taken = index.map(|index| g.took(index, &plan));
        let early = std::mem::take(&mut g.early);
        g.early_for = None;
        let mut note = format!("{from}: {plan}: busy answer, no transaction");
        for q in plan.quirks.iter().filter(|q| !early.contains(q)) {
            note.push_str(&format!("; {q} not applied"));
        }
        Some(note)
    }

    /// Transaction `id` starts on `channel`, its answer to be sent: what
    /// decides it.
    pub fn begin(&self, id: u64, channel: Channel) -> Begin {
        self.begin_answered(id, channel, true)
    }

    /// [`Stage::begin`]; `answered` false when the channel sends no
    /// answer of the outcome (an immediate answer, `BA=1` or V2 `A011`,
    /// went out instead): the answer's quirks have nothing to act on.
    pub fn begin_answered(&self, id: u64, channel: Channel, answered: bool) -> Begin {
        let mut g = self.lock();
        if !g.active {
            return Begin::Table;
        }
        let index = g.script_index();
        match g.take_plan() {
            Some((plan, from)) => {
                if let Some(index) = index {
                    while g.taken.len() >= MAX_ANSWERS {
                        g.taken.pop_first();
                    }
                    let taken = g.took(index, &plan);
                    g.taken.insert(id, taken);
                }
                let early = std::mem::take(&mut g.early);
                g.early_for = None;
                let ways = Ways {
                    channel,
                    answered,
                    early,
                };
                let (fate, note) = settle(&mut g, id, plan, from, ways);
                Begin::Plan { fate, note }
            }
            None if g.hold => Begin::Hold,
            None => Begin::Table,
        }
    }

    /// The simulated transaction `id` runs in a thread that listens on
    /// `cmd`'s other end.
    pub fn running(&self, id: u64, channel: Channel, cmd: Sender<Cmd>, waiting: bool) {
        self.lock().running = Some(Run {
            id,
            channel,
            cmd,
            waiting,
            since: Instant::now(),
        });
    }

    /// Transaction `id` ended (or was aborted): no key reaches it now.
    pub fn ended(&self, id: u64) {
        let mut g = self.lock();
        if g.running.as_ref().is_some_and(|r| r.id == id) {
            g.running = None;
        }
    }

    /// The transaction that waits for a decision, if any (for the tests:
    /// `state` says it to operators).
    #[cfg(test)]
    pub fn waiting(&self) -> Option<u64> {
        self.lock()
            .running
            .as_ref()
            .filter(|r| r.waiting)
            .map(|r| r.id)
    }

    // ---- the channels' side ----

    /// How the answer of transaction `id` goes out; taken once.
    pub fn answer(&self, id: u64) -> Option<Answer> {
        self.lock().answers.remove(&id)
    }

    /// The script line transaction `id` took, if it took one; asked once.
    pub fn taken(&self, id: u64) -> Option<Taken> {
        self.lock().taken.remove(&id)
    }

    /// The script line the last busy answer took, if it took one; asked
    /// once, by the request that got the busy answer.
    pub fn busy_taken(&self) -> Option<Taken> {
        self.lock().busy_taken.take()
    }

    /// The script being played, if any: its plans and the place of the
    /// next one (its length once consumed). None when the simulator is not
    /// the backend: its script is not played then.
    pub fn script_plans(&self) -> Option<(Vec<Plan>, usize)> {
        let g = self.lock();
        let p = g.script.as_ref().filter(|_| g.active)?;
        let plans = p
            .script
            .lines
            .iter()
            .map(|(_, plan)| plan.clone())
            .collect();
        Some((plans, p.next))
    }

    /// How long `open` keeps a connection.
    pub fn open_limit(&self) -> Duration {
        self.lock().open_limit
    }

    /// The serial line is about to ACK an ENQ (`no-ack`) or a frame
    /// (`nak-first`): true when the next plan says not to, once. The
    /// serial line asks through [`Stage::enq`] and [`Stage::frame`], which
    /// keep both for a transaction.
    pub fn early(&self, q: Quirk) -> bool {
        spend(&mut self.lock(), q)
    }

    /// The register's ENQ: true when it is not to be ACKed (`no-ack`).
    /// What the session carries is not known yet: [`Stage::frame`] gives
    /// the quirk back if it is no transaction.
    pub fn enq(&self) -> bool {
        let mut g = self.lock();
        let spent = spend(&mut g, Quirk::NoAck);
        g.unacked |= spent;
        spent
    }

    /// The register's good frame, a `transaction` (a request that occupies
    /// the terminal) or not, its `payload` as read: true when it is to be
    /// NAKed (`nak-first`). Identification, status and duplicata frames
    /// spend neither quirk: a `no-ack` spent on the ENQ of their session
    /// is given back, for the ENQ of the next one. Quirks spent on another
    /// request, which never started (its register gave up), are the
    /// plan's again, for this one.
    pub fn frame(&self, transaction: bool, payload: &[u8]) -> bool {
        let mut g = self.lock();
        let unacked = std::mem::take(&mut g.unacked);
        if transaction {
            if g.early_for.as_deref().is_some_and(|p| p != payload) {
                // A no-ack spent on this very session's ENQ stays spent.
                let here = unacked && g.early.contains(&Quirk::NoAck);
                let gone: Vec<String> = g
                    .early
                    .iter()
                    .filter(|q| !(here && **q == Quirk::NoAck))
                    .map(ToString::to_string)
                    .collect();
                g.early.retain(|q| here && *q == Quirk::NoAck);
                if !gone.is_empty() {
                    log::info!(
                        "simulator: {} spent on a request that did not start: \
                         played again for this one",
                        gone.join(" ")
                    );
                }
            }
            let nak = spend(&mut g, Quirk::NakFirst);
            if !g.early.is_empty() {
                g.early_for = Some(payload.to_vec());
            }
            return nak;
        }
        if unacked && g.early.contains(&Quirk::NoAck) {
            g.early.retain(|q| *q != Quirk::NoAck);
            log::info!("simulator: no-ack kept for a transaction's ENQ: that session carried none");
        }
        false
    }

    /// A raw V3 request (no link session) is handed over: quirks spent
    /// on a framed request before it are not its own.
    pub fn unframed(&self) {
        let mut g = self.lock();
        if g.early_for.is_some() && !g.early.is_empty() {
            let gone: Vec<String> = g.early.iter().map(ToString::to_string).collect();
            log::info!(
                "simulator: {} spent on a framed request that did not start",
                gone.join(" ")
            );
            forget_early(&mut g);
        }
    }
}

/// What a reload did to the script, said to the operator.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    /// It plays from its first step (new, changed, or dropped).
    pub changed: bool,
    pub said: String,
}

/// Where a script is: the step that comes next, or consumed.
fn position(p: &Playing) -> String {
    let n = p.script.lines.len();
    match p.script.lines.get(p.next) {
        Some((line, _)) => format!("step {} of {n} (line {line}) is next", p.next + 1),
        None => format!("consumed ({}), the amount table decides", steps(n)),
    }
}

fn steps(n: usize) -> String {
    format!("{n} step{}", if n == 1 { "" } else { "s" })
}

fn load(g: &mut Inner, script: Option<&Script>) -> Option<Verdict> {
    let verdict = match (script, &g.script) {
        (Some(s), Some(p)) if p.script == *s => {
            return Some(Verdict {
                changed: false,
                said: format!("script {} unchanged: {}", s.shown(), position(p)),
            })
        }
        (Some(s), had) => {
            let how = if had.is_some() { "reloaded" } else { "loaded" };
            g.script = Some(Playing {
                script: s.clone(),
                next: 0,
            });
            Verdict {
                changed: true,
                said: format!(
                    "script {} {}: {}, starts at step 1",
                    s.shown(),
                    how,
                    steps(s.lines.len())
                ),
            }
        }
        (None, Some(p)) => {
            let said = format!("script {} no longer named: not played", p.script.shown());
            g.script = None;
            Verdict {
                changed: true,
                said,
            }
        }
        (None, None) => return None,
    };
    if g.armed.is_none() {
        forget_early(g);
    }
    log::info!("simulator: {}", verdict.said);
    Some(verdict)
}

/// The quirks spent before a request are forgotten with the plan they
/// were spent for.
fn forget_early(g: &mut Inner) {
    g.early.clear();
    g.early_for = None;
    g.unacked = false;
}

/// Spends quirk `q` of the next plan, before its request: true when the
/// plan has it and it was not spent yet.
fn spend(g: &mut Inner, q: Quirk) -> bool {
    if !g.active || g.early.contains(&q) {
        return false;
    }
    if !g.next_plan().is_some_and(|p| p.quirks.contains(&q)) {
        return false;
    }
    g.early.push(q);
    true
}

/// How a transaction that takes a plan came and is answered.
struct Ways {
    channel: Channel,
    /// Its outcome is sent to the register (no immediate answer instead).
    answered: bool,
    /// The quirks spent before its request.
    early: Vec<Quirk>,
}

/// A plan taken for transaction `id`: the answer's quirks of its channel
/// are kept for it; the note says what applies and what does not, and
/// why.
fn settle(g: &mut Inner, id: u64, plan: Plan, from: String, ways: Ways) -> (Fate, String) {
    let Ways {
        channel,
        answered,
        early,
    } = ways;
    let mut note = format!("{from}: {plan}");
    let mut answer = Answer {
        withhold: (plan.fate == Fate::Unknown && answered)
            .then_some("simulator: unknown, the answer is lost"),
        ..Answer::default()
    };
    for q in &plan.quirks {
        if q.channel() != channel {
            note.push_str(&format!(
                "; {q} not applied: the transaction came over {channel}"
            ));
            if early.contains(q) {
                note.push_str(" (spent on a serial request that did not start)");
            }
        } else if early.contains(q) {
            note.push_str(&format!("; {q} applied before the request"));
        } else if q.before_request() {
            note.push_str(&format!("; {q} not applied: the request was already taken"));
        } else if !answered {
            note.push_str(&format!(
                "; {q} not applied: an immediate answer went out, the outcome is not sent"
            ));
        } else {
            answer.quirks.push(*q);
        }
    }
    if !answer.quirks.is_empty() || answer.withhold.is_some() {
        while g.answers.len() >= MAX_ANSWERS {
            g.answers.pop_first();
        }
        g.answers.insert(id, answer);
    }
    (plan.fate, note)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::plan::DEFAULT_GAP;
    use std::path::Path;

    fn plan(s: &str) -> Plan {
        s.parse().unwrap()
    }

    fn active() -> Stage {
        let s = Stage::new();
        s.configure(true, None, Duration::from_secs(5));
        s
    }

    #[test]
    fn nothing_is_taken_unless_the_simulator_is_the_backend() {
        let s = Stage::new();
        assert!(s
            .arm(plan("refuse"))
            .unwrap_err()
            .contains("not the simulator"));
        assert!(s
            .command("hold on")
            .unwrap_err()
            .contains("not the simulator"));
        assert!(s.state().contains("inactive"));
        assert_eq!(s.begin(1, Channel::Tcp), Begin::Table);
        assert!(!s.early(Quirk::NakFirst));
    }

    #[test]
    fn an_armed_plan_is_taken_once_then_the_script_then_the_table() {
        let s = Stage::new();
        let script = Script::parse(Path::new("t.script"), "phone\n# c\nrefuse\n").unwrap();
        s.configure(true, Some(&script), Duration::from_secs(5));
        assert!(s
            .state()
            .contains("script: t.script line 1 is next (phone), 2 of 2 left"));
        assert_eq!(s.command("next approve").unwrap(), "armed: approve");
        assert_eq!(s.command("next").unwrap(), "armed: approve");
        let fate = |b: Begin| match b {
            Begin::Plan { fate, note } => (fate, note),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            fate(s.begin(1, Channel::Tcp)),
            (Fate::Approve, "next: approve".into())
        );
        assert_eq!(s.armed(), None);
        assert_eq!(
            fate(s.begin(2, Channel::Tcp)),
            (Fate::Phone, "script t.script:1: phone".into())
        );
        assert!(s.state().contains("line 3 is next (refuse), 1 of 2 left"));
        // The same script again (a reload): its place is kept.
        s.configure(true, Some(&script), Duration::from_secs(5));
        assert_eq!(fate(s.begin(3, Channel::Serial)).0, Fate::Refuse);
        assert!(s.state().contains("consumed (2 lines)"));
        assert_eq!(s.begin(4, Channel::Tcp), Begin::Table);
        // A changed script starts over.
        let other = Script::parse(Path::new("t.script"), "abandon\n").unwrap();
        s.configure(true, Some(&other), Duration::from_secs(5));
        assert_eq!(fate(s.begin(5, Channel::Tcp)).0, Fate::Abandon);
        // Armed then cleared: the table.
        s.command("next refuse").unwrap();
        assert_eq!(s.command("next clear").unwrap(), "disarmed: refuse");
        assert_eq!(s.command("next clear").unwrap(), "nothing was armed");
        assert_eq!(s.begin(6, Channel::Tcp), Begin::Table);
    }

    #[test]
    fn quirks_go_to_their_channel_and_are_noted_elsewhere() {
        let s = active();
        s.arm(plan("approve split=3 crlf bad-lrc")).unwrap();
        let Begin::Plan { note, .. } = s.begin(7, Channel::Tcp) else {
            panic!()
        };
        assert_eq!(
            note,
            "next: approve split=3:50ms crlf bad-lrc; bad-lrc not applied: the transaction \
             came over tcp"
        );
        let a = s.answer(7).unwrap();
        assert_eq!(a.split(), Some((3, DEFAULT_GAP)));
        assert!(a.has(Quirk::Crlf) && !a.has(Quirk::BadLrc));
        assert_eq!(s.answer(7), None, "taken once");
        // Serial quirks before the request: spent on the frame, noted.
        s.arm(plan("refuse nak-first no-ack slow-enq=1s crlf"))
            .unwrap();
        assert!(s.early(Quirk::NoAck));
        assert!(!s.early(Quirk::NoAck), "once");
        assert!(s.early(Quirk::NakFirst));
        let Begin::Plan { fate, note } = s.begin(8, Channel::Serial) else {
            panic!()
        };
        assert_eq!(fate, Fate::Refuse);
        assert!(
            note.contains("nak-first applied before the request"),
            "{note}"
        );
        assert!(note.contains("no-ack applied before the request"), "{note}");
        assert!(note.contains("crlf not applied: the transaction came over serial"));
        assert_eq!(
            s.answer(8).unwrap().slow_enq(),
            Some(Duration::from_secs(1))
        );
        // Not spent, and the transaction came over TCP.
        s.arm(plan("approve nak-first")).unwrap();
        let Begin::Plan { note, .. } = s.begin(9, Channel::Tcp) else {
            panic!()
        };
        assert!(note.contains("nak-first not applied"), "{note}");
        assert_eq!(s.answer(9), None);
        // Unknown: nothing sent, whatever the channel.
        s.arm(plan("unknown")).unwrap();
        s.begin(10, Channel::Serial);
        assert!(s.answer(10).unwrap().withhold.is_some());
    }

    #[test]
    fn serial_quirks_are_spent_on_a_transaction_only() {
        let s = active();
        s.arm(plan("approve nak-first no-ack")).unwrap();
        // A status frame's session: its ENQ is not ACKed (nothing says yet
        // what follows), its frame not NAKed, and the no-ack is given back.
        assert!(s.enq());
        assert!(!s.enq(), "its retry is ACKed");
        assert!(!s.frame(false, b"S"));
        assert!(!s.frame(false, b"S"), "nak-first kept");
        // The transaction's session gets both.
        assert!(s.enq());
        assert!(!s.enq());
        assert!(s.frame(true, b"D"));
        assert!(!s.frame(true, b"D"), "once");
        let Begin::Plan { note, .. } = s.begin(1, Channel::Serial) else {
            panic!()
        };
        assert!(
            note.contains("nak-first applied before the request"),
            "{note}"
        );
        assert!(note.contains("no-ack applied before the request"), "{note}");
        // A frame with no un-ACKed ENQ before it gives nothing back.
        s.arm(plan("approve no-ack")).unwrap();
        assert!(s.enq());
        assert!(!s.enq());
        assert!(!s.frame(true, b"D"));
        assert!(!s.frame(false, b"S"));
        assert!(!s.enq(), "spent on the transaction's session");
    }

    #[test]
    fn quirks_spent_before_a_request_belong_to_that_request() {
        let s = active();
        s.arm(plan("refuse nak-first")).unwrap();
        assert!(s.frame(true, b"A"), "A's first frame");
        assert!(!s.frame(true, b"A"), "A's retry");
        // A is given up; B is another request: its own first frame.
        assert!(s.frame(true, b"B"));
        assert!(!s.frame(true, b"B"));
        let Begin::Plan { note, .. } = s.begin(1, Channel::Serial) else {
            panic!()
        };
        assert!(
            note.contains("nak-first applied before the request"),
            "{note}"
        );
        // Spent on a serial request, taken by a TCP transaction.
        s.arm(plan("refuse nak-first")).unwrap();
        assert!(s.frame(true, b"C"));
        let Begin::Plan { note, .. } = s.begin(2, Channel::Tcp) else {
            panic!()
        };
        assert!(
            note.contains(
                "nak-first not applied: the transaction came over tcp (spent on a serial \
                 request that did not start)"
            ),
            "{note}"
        );
        // A raw request after a framed one that was NAKed.
        s.arm(plan("refuse nak-first")).unwrap();
        assert!(s.frame(true, b"D"));
        s.unframed();
        let Begin::Plan { note, .. } = s.begin(3, Channel::Serial) else {
            panic!()
        };
        assert!(
            note.contains("nak-first not applied: the request was already taken"),
            "{note}"
        );
    }

    #[test]
    fn no_answer_quirk_applies_to_an_immediate_answer() {
        let s = active();
        s.arm(plan("approve bad-lrc slow-enq=1s")).unwrap();
        let Begin::Plan { note, .. } = s.begin_answered(1, Channel::Serial, false) else {
            panic!()
        };
        assert!(note.contains("bad-lrc not applied: an immediate answer went out"));
        assert!(note.contains("slow-enq=1s not applied: an immediate answer went out"));
        assert_eq!(s.answer(1), None);
    }

    #[test]
    fn a_script_read_again_says_where_it_is_and_rewinds() {
        let s = active();
        let script = Script::parse(
            Path::new("t.script"),
            "phone
refuse
",
        )
        .unwrap();
        assert!(s.rewind().unwrap_err().contains("no simulator-script"));
        let v = s.load_script(Some(&script)).unwrap();
        assert!(v.changed);
        assert_eq!(v.said, "script t.script loaded: 2 steps, starts at step 1");
        s.begin(1, Channel::Tcp);
        let v = s.load_script(Some(&script)).unwrap();
        assert!(!v.changed);
        assert_eq!(
            v.said,
            "script t.script unchanged: step 2 of 2 (line 2) is next"
        );
        s.begin(2, Channel::Tcp);
        assert!(s
            .load_script(Some(&script))
            .unwrap()
            .said
            .ends_with("consumed (2 steps), the amount table decides"));
        assert_eq!(
            s.command("next rewind").unwrap(),
            "script t.script rewound: 2 steps, starts at step 1"
        );
        assert!(matches!(
            s.begin(3, Channel::Tcp),
            Begin::Plan {
                fate: Fate::Phone,
                ..
            }
        ));
        let other = Script::parse(
            Path::new("t.script"),
            "abandon
",
        )
        .unwrap();
        assert_eq!(
            s.load_script(Some(&other)).unwrap().said,
            "script t.script reloaded: 1 step, starts at step 1"
        );
        let v = s.load_script(None).unwrap();
        assert!(v.changed && v.said.contains("no longer named"), "{v:?}");
        assert_eq!(s.load_script(None), None);
    }

    #[test]
    fn only_a_plain_next_is_a_query() {
        assert!(Stage::is_query("next"));
        assert!(Stage::is_query(" next "));
        assert!(!Stage::is_query("next refuse"));
        assert!(!Stage::is_query("next rewind"));
    }

    #[test]
    fn busy_is_taken_by_the_request_it_refuses() {
        let s = active();
        assert_eq!(s.take_busy(), None);
        s.arm(plan("busy")).unwrap();
        assert_eq!(
            s.take_busy().unwrap(),
            "next: busy: busy answer, no transaction"
        );
        assert_eq!(s.take_busy(), None);
        assert_eq!(s.begin(1, Channel::Tcp), Begin::Table);
        s.arm(plan("approve")).unwrap();
        assert_eq!(s.take_busy(), None, "not busy: left for the transaction");
        assert!(s.armed().is_some());
    }

    #[test]
    fn hold_decide_and_the_red_key_reach_the_running_transaction() {
        let s = active();
        assert!(s
            .press_red()
            .unwrap_err()
            .contains("no simulated transaction"));
        assert!(s
            .decide(plan("approve"))
            .unwrap_err()
            .contains("no transaction is waiting"));
        s.hold(true).unwrap();
        assert_eq!(s.begin(11, Channel::Tcp), Begin::Hold);
        let (cmd, got) = crossbeam_channel::unbounded();
        s.running(11, Channel::Tcp, cmd, true);
        assert_eq!(s.waiting(), Some(11));
        assert!(s.state().contains("running: tx 11 waiting for a decision"));
        assert!(s.decide(plan("busy")).unwrap_err().contains("busy"));
        assert_eq!(s.decide(plan("refuse crlf bad-lrc")).unwrap(), 11);
        match got.try_recv().unwrap() {
            Cmd::Decide(Fate::Refuse, note) => assert_eq!(
                note,
                "decide: refuse crlf bad-lrc; bad-lrc not applied: the transaction came over tcp"
            ),
            other => panic!("{other:?}"),
        }
        assert!(s.answer(11).unwrap().has(Quirk::Crlf));
        assert_eq!(s.waiting(), None, "decided once");
        assert_eq!(s.command("press red").unwrap(), "tx 11: red key pressed");
        assert!(matches!(got.try_recv(), Ok(Cmd::Red)));
        s.ended(11);
        assert!(s.press_red().is_err());
        // hold off releases a waiting transaction.
        let (cmd, got) = crossbeam_channel::unbounded();
        s.running(12, Channel::Serial, cmd, true);
        assert!(s.hold(false).unwrap().contains("tx 12 released"));
        assert!(matches!(got.try_recv(), Ok(Cmd::Release)));
        // Gone: the decision is refused and leaves nothing behind.
        s.hold(true).unwrap();
        let (cmd, got) = crossbeam_channel::unbounded();
        s.running(13, Channel::Tcp, cmd, true);
        drop(got);
        assert!(s
            .decide(plan("approve crlf"))
            .unwrap_err()
            .contains("ended"));
        assert_eq!(s.answer(13), None);
        // No longer the simulator: nothing reaches it.
        s.configure(false, None, Duration::from_secs(5));
        assert!(s.press_red().unwrap_err().contains("not the simulator"));
    }

    #[test]
    fn commands_as_text() {
        let s = active();
        assert_eq!(s.command("next").unwrap(), "nothing armed");
        assert!(s
            .command("next refuse wobble")
            .unwrap_err()
            .contains("wobble"));
        assert!(s.command("hold maybe").unwrap_err().contains("on or off"));
        assert!(s.command("press green").unwrap_err().contains("press red"));
        assert!(s
            .command("fly")
            .unwrap_err()
            .contains("not a simulator command"));
        assert!(s.command("").is_err());
        assert!(s.command("state").unwrap().contains("hold: off"));
    }

    #[test]
    fn the_script_line_each_request_took_is_told_once() {
        let s = Stage::new();
        let script = Script::parse(Path::new("exam"), "approve crlf\n# c\nbusy\nrefuse\n").unwrap();
        s.configure(true, Some(&script), Duration::from_secs(5));
        assert_eq!(
            s.script_plans(),
            Some((vec![plan("approve crlf"), plan("busy"), plan("refuse")], 0))
        );
        s.begin(1, Channel::Tcp);
        assert_eq!(
            s.taken(1),
            Some(Taken {
                index: 0,
                plan: plan("approve crlf"),
                run: 1
            })
        );
        assert_eq!(s.taken(1), None, "told once");
        assert!(s.take_busy().is_some());
        assert_eq!(
            s.busy_taken(),
            Some(Taken {
                index: 1,
                plan: plan("busy"),
                run: 1
            })
        );
        assert_eq!(s.busy_taken(), None);
        // What `next` armed is no script line, nor what the table decides.
        s.arm(plan("approve")).unwrap();
        s.begin(2, Channel::Tcp);
        assert_eq!(s.taken(2), None);
        s.begin(3, Channel::Tcp);
        assert_eq!(
            s.taken(3),
            Some(Taken {
                index: 2,
                plan: plan("refuse"),
                run: 1
            })
        );
        assert_eq!(s.script_plans().map(|(_, next)| next), Some(3));
        s.begin(4, Channel::Tcp);
        assert_eq!(s.taken(4), None);
        // Played again from its first line (here a changed script): a new
        // run.
        let again = Script::parse(Path::new("exam"), "approve crlf\n").unwrap();
        s.configure(true, Some(&again), Duration::from_secs(5));
        s.begin(5, Channel::Tcp);
        assert_eq!(s.taken(5).map(|t| (t.index, t.run)), Some((0, 2)));
        // Another backend: no script is played.
        s.configure(false, Some(&again), Duration::from_secs(5));
        assert_eq!(s.script_plans(), None);
    }

    #[test]
    fn decided_answers_are_capped() {
        let s = active();
        for id in 0..(MAX_ANSWERS as u64 + 5) {
            s.arm(plan("approve crlf")).unwrap();
            s.begin(id, Channel::Tcp);
        }
        assert_eq!(s.lock().answers.len(), MAX_ANSWERS);
        assert_eq!(s.answer(0), None, "the oldest went first");
        assert!(s.answer(MAX_ANSWERS as u64 + 4).is_some());
    }
}
