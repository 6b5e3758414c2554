//! The one worker that owns the terminal backend and the journal. It alone
//! holds the one-transaction rule: connection and serial threads send it
//! jobs; while a transaction runs, every other transaction gets an
//! immediate busy answer, and identification, duplicata and status are
//! still answered at once.
//!
//! Durability order, for every transaction: the "begun" record is on disk
//! before the backend starts, and the "ended" record is on disk before the
//! answer is handed to the connection that writes it. A crash in between
//! leaves a begun record that the next start closes as "unknown".

use crate::backend::{Backend, Done, Note, Original, Transaction};
use crate::terminal::generations::Item;
use crate::terminal::handover::Claim;
use crate::terminal::journal::{self, Event, Journal, Record, Verdict};
use crate::terminal::memory::{Completed, Memory};
use crate::terminal::refunds::Refunds;
use crate::terminal::retry::{Age, Proof, RetryKey};
use crate::wire::answer::{self, Af, Outcome, Status};
use crate::wire::currency;
use crate::wire::request::{self, Operation, Request};
use crate::wire::ticket::{self, Facts, TicketSpec};
use crate::wire::tlv::{tags::*, Frame};
use crossbeam_channel::{
    at, bounded, never, select_biased, unbounded, Receiver, Sender, TrySendError,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Jobs waiting for the worker; past this the sender answers busy itself.
const QUEUE: usize = 256;
/// At shutdown, how long to wait for the last answer's delivery report.
const DELIVERY_WAIT: Duration = Duration::from_secs(15);
/// Records written without a sync of their own are on disk at most this
/// long after, when no transaction's sync comes first.
const NOTE_SYNC: Duration = Duration::from_secs(1);
/// Transactions ended unknown kept for a late outcome, beyond each
/// register's last; past this the oldest is forgotten (its record stays).
const MAX_UNRESOLVED: usize = 64;
/// Ids are start seconds x 1000 plus a count: a journal id more than this
/// past the start time's came from no clock (a corrupt or crafted line).
const ID_SLACK: u64 = 1_000_000_000;

/// Where requests come from; defined with the backends, which are told it.
pub use crate::backend::Channel;

#[derive(Clone, Debug)]
pub struct Origin {
    pub channel: Channel,
    pub peer: String,
    /// A Concert V2 request: its private field is not a sale identifier,
    /// so it is never replayed.
    pub v2: bool,
}

/// Where a request came from, as the log and the journal name it: the
/// channel and the peer (`tcp 127.0.0.1:41710`, `serial /dev/ttyUSB0`).
impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.channel, self.peer)
    }
}

/// The worker's answer to a job.
#[derive(Debug)]
pub struct Reply {
    pub frame: Frame,
    /// Set when this is the final answer of a transaction: the sender then
    /// reports whether it reached the register.
    pub tx: Option<u64>,
    /// The acknowledgement of an immediate-answer request (`BA=1`, V2
    /// `A011`), not an outcome.
    pub immediate: bool,
}

pub struct Job {
    pub request: Request,
    pub origin: Origin,
    pub reply: Sender<Reply>,
    /// Told the transaction id once a transaction has started (its begun
    /// record on disk): the serial link ACKs a request only then.
    pub started: Option<Sender<u64>>,
    /// The serial link's hold on the job: once it withdrew it (NAKed, not
    /// taken in time), the job never starts.
    pub claim: Option<Arc<Claim>>,
}

impl Job {
    /// The worker's claim on the job: false when the serial link withdrew
    /// it first (a job with no claim is always the worker's).
    fn take(&self) -> bool {
        self.claim.as_ref().is_none_or(|c| c.take())
    }

    fn withdrawn(&self) -> bool {
        self.claim.as_ref().is_some_and(|c| c.withdrawn())
    }
}

/// A job handed over without waiting: what the serial link holds.
pub struct Pending {
    pub started: Receiver<u64>,
    pub reply: Receiver<Reply>,
    pub claim: Arc<Claim>,
}

/// What the worker made of a job.
pub enum Decision {
    /// A transaction started; its answer comes later on `reply`.
    Started(u64),
    /// Answered at once (identification, status, busy, a refusal...).
    Answered(Reply),
    /// No answer will come (the outcome could not be journaled).
    Gone,
    /// Not decided by the deadline: withdrawn, it will never start.
    Withdrawn,
}

impl Pending {
    /// Waits for the worker's decision until `by`, if given; past it the
    /// job is withdrawn, unless the worker took it first: then its start
    /// (or answer) is on its way, with no disk write before it, and is
    /// waited for.
    pub fn decision(&self, by: Option<Instant>) -> Decision {
        let deadline = by.map_or_else(never, at);
        // Biased: a decision that came is taken before the deadline.
        select_biased! {
            recv(self.started) -> id => if let Ok(id) = id {
                return Decision::Started(id);
            },
            recv(self.reply) -> r => return r.map_or(Decision::Gone, Decision::Answered),
            recv(deadline) -> _ => {
                if self.claim.withdraw() {
                    return Decision::Withdrawn;
                }
                return self.decision(None);
            },
        }
        // `started` closed without an id: the job was answered, not
        // started; the answer is in `reply` (both channels can be ready at
        // once, so this order matters).
        self.reply.recv().map_or(Decision::Gone, Decision::Answered)
    }
}

/// Whether a transaction's answer reached its register.
pub struct Delivery {
    pub id: u64,
    pub result: Result<(), String>,
}

pub enum Control {
    /// Refuse new transactions, let the running one end and its answer go
    /// out, then return.
    Stop,
    /// New settings, and the new configuration for the backend; they apply
    /// from the next transaction on.
    Reload(Settings, Box<crate::config::Config>),
    /// The live state as lines, for `concertctl status` and SIGUSR1.
    Status(Sender<Vec<String>>),
}

/// Counted since start by the worker, for `concertctl status`.
#[derive(Debug, Default)]
struct Counters {
    approved: u64,
    declined: u64,
    unknown: u64,
    /// Busy answers the worker gave; those of a full queue are counted by
    /// the senders, in [`Handle`]'s `turned_busy`.
    busy: u64,
    undelivered: u64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Settings the worker applies.
#[derive(Clone, Debug)]
pub struct Settings {
    pub transaction_timeout: Duration,
    /// 0: no replays.
    pub retry_window: Duration,
    pub extensions: crate::config::AnswerExtensions,
    /// AQ, with `answer-extensions payxpert`.
    pub serial_number: String,
}

struct Running {
    id: u64,
    request: Request,
    origin: Origin,
    /// `None` after an immediate (`BA=1`) acknowledgement.
    reply: Option<Sender<Reply>>,
    record: Record,
    key: Option<RetryKey>,
    started: Instant,
    deadline: Instant,
    /// A cancellation's debit: no longer refundable once it is approved.
    cancels: Option<u64>,
}

pub struct Worker {
    backend: Box<dyn Backend>,
    terminal: crate::config::Terminal,
    /// A new backend from a reload, waiting for the running transaction.
    next_backend: Option<(Box<dyn Backend>, crate::config::Terminal)>,
    journal: Journal,
    settings: Settings,
    jobs: Receiver<Job>,
    deliveries: Receiver<Delivery>,
    control: Receiver<Control>,
    done_tx: Sender<Done>,
    done_rx: Receiver<Done>,
    running: Option<Running>,
    /// Each register's last payment and last debit, and what a retry may
    /// replay.
    memory: Memory,
    /// When the worker started: restored records age from here.
    born: Instant,
    next_id: u64,
    /// Journal ids past `next_id` (beyond the sane bound): never given out.
    taken: HashSet<u64>,
    stopping: bool,
    /// Transactions whose answer was handed out and whose delivery is not
    /// reported yet.
    undelivered: HashMap<u64, Handed>,
    /// Transactions ended unknown in this run, by id: a late outcome
    /// resolves them even once their register has moved on.
    unresolved: HashMap<u64, Arc<Completed>>,
    /// The ACs and CFs of journaled transactions, shared with the backend.
    /// (Filled after start-up's fold, from the newest transactions back,
    /// while `history_later` is set.)
    history: crate::backend::history::Shared,
    history_later: bool,
    /// Approved debits a credit's IM may name, with what was refunded.
    refunds: Refunds,
    /// The service's stage, given to every simulator built on reload.
    stage: Arc<crate::config::stage::Stage>,
    counters: Counters,
    /// Busy answers the senders gave themselves (queue full, worker
    /// gone): the one count another thread writes.
    turned_busy: Arc<AtomicU64>,
}

/// An answer handed out, waiting for its delivery report.
struct Handed {
    done: Arc<Completed>,
    /// Asked in Concert V2, which has no status request.
    v2: bool,
}

/// How the register that asked can still get an outcome it did not
/// receive: Concert V2 has no status request, V3's returns the register's
/// last outcome.
fn how_to_fetch(v2: bool, register: u8) -> String {
    if v2 {
        format!(
            "Concert V2 has no status request: check its outcome in the journal \
             (a V3 status request for register {register:02} also returns it)"
        )
    } else {
        "a status request (CD=T) returns it".to_string()
    }
}

/// The senders' side: what connection and serial threads hold.
#[derive(Clone)]
pub struct Handle {
    jobs: Sender<Job>,
    deliveries: Sender<Delivery>,
    /// What the simulator is told to do, for the ways in to shape answers
    /// and for the control socket.
    stage: Arc<crate::config::stage::Stage>,
    /// The worker's `turned_busy`.
    turned_busy: Arc<AtomicU64>,
}

impl Handle {
    pub fn stage(&self) -> &Arc<crate::config::stage::Stage> {
        &self.stage
    }

    /// Hands a request to the worker and waits for its answer. `None`: no
    /// answer may be sent (its outcome could not be journaled).
    pub fn submit(&self, request: Request, origin: Origin) -> Option<Reply> {
        // Nobody waits for the start here: no `started` channel, and the
        // request is taken back from a refused job for the busy answer.
        let (reply, answer) = bounded(2);
        let job = Job {
            request,
            origin,
            reply,
            started: None,
            claim: None,
        };
        if let Err(job) = self.offer(job) {
            return Some(Reply {
                frame: answer::refusal(&job.request.frame, None),
                tx: None,
                immediate: false,
            });
        }
        // Closed without an answer: the worker could not journal the
        // outcome (or stopped), and a register must not get one then.
        answer.recv().ok()
    }

    /// Hands a request to the worker without waiting. When the worker
    /// cannot take it (queue full, stopped), the busy answer is already in
    /// the reply channel.
    pub fn hand_over(&self, request: Request, origin: Origin) -> Pending {
        let (reply, answer) = bounded(2);
        let (started_tx, started) = bounded(1);
        let claim = Arc::new(Claim::default());
        let job = Job {
            request,
            origin,
            reply,
            started: Some(started_tx),
            claim: Some(Arc::clone(&claim)),
        };
        if let Err(job) = self.offer(job) {
            send(&job.reply, answer::refusal(&job.request.frame, None), None);
        }
        Pending {
            started,
            reply: answer,
            claim,
        }
    }

    /// Queues a job for the worker; a job it cannot take (queue full,
    /// stopped) comes back, for the busy answer.
    /// (Boxed: only the busy path pays for moving a job back.)
    fn offer(&self, job: Job) -> Result<(), Box<Job>> {
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job)) => {
                bump(&self.turned_busy);
                log::warn!("{}: worker queue full, answered busy", job.origin);
                Err(Box::new(job))
            }
            Err(TrySendError::Disconnected(job)) => {
                bump(&self.turned_busy);
                Err(Box::new(job))
            }
        }
    }

    pub fn delivered(&self, id: u64, result: Result<(), String>) {
        let _ = self.deliveries.send(Delivery { id, result });
    }
}

fn unix_now() -> i64 {
    crate::wire::clock::unix_now().0
}

fn verdict_of(o: &Outcome) -> Verdict {
    match o.status {
        Status::Approved => Verdict::Approved,
        Status::Declined(Af::NotEnded) => Verdict::Unknown,
        Status::Declined(_) => Verdict::Declined,
    }
}

impl Worker {
    /// Builds the worker from what the journal holds: transactions begun
    /// and never ended are closed as unknown, and each register's last
    /// transaction is known again.
    pub fn new(
        backend: Box<dyn Backend>,
        terminal: crate::config::Terminal,
        journal: Journal,
        contents: journal::Contents,
        settings: Settings,
        stage: Arc<crate::config::stage::Stage>,
    ) -> (Worker, Handle, Sender<Control>) {
        let (jobs_tx, jobs) = bounded(QUEUE);
        let (deliveries_tx, deliveries) = unbounded();
        let (control_tx, control) = unbounded();
        let (done_tx, done_rx) = unbounded();
        // Unique across restarts: past every sane id in the journal (and
        // every id a rotation line says was given out before it), and
        // seconds since the epoch times 1000 plus a count. Checked
        // arithmetic: a clock or a journal cannot make it wrap.
        let floor = u64::try_from(unix_now()).unwrap_or(0).saturating_mul(1000);
        let bound = floor.saturating_add(ID_SLACK);
        let mut w = Worker {
            backend,
            terminal,
            next_backend: None,
            journal,
            settings,
            jobs,
            deliveries,
            control,
            done_tx,
            done_rx,
            running: None,
            memory: Memory::default(),
            born: Instant::now(),
            next_id: floor,
            taken: HashSet::new(),
            stopping: false,
            undelivered: HashMap::new(),
            unresolved: HashMap::new(),
            history: Arc::default(),
            history_later: crate::terminal::generations::whole(&contents),
            refunds: Refunds::default(),
            stage,
            counters: Counters::default(),
            turned_busy: Arc::default(),
        };
        w.backend.share_history(Arc::clone(&w.history));
        // Streamed: each record is folded in as it is read, in id order,
        // and dropped unless the state keeps it.
        let mut max_id = 0;
        let mut unknown = BTreeMap::new();
        let read = crate::terminal::generations::restore(&contents, |item| match item {
            Item::Record(r) if r.id > bound => {
                w.taken.insert(r.id);
            }
            Item::Record(r) => {
                max_id = max_id.max(r.id);
                if let Some(c) = w.restore_read(r) {
                    // A later `resolved` line may settle it.
                    unknown.insert(c.record.id, c);
                    if unknown.len() > MAX_UNRESOLVED {
                        unknown.pop_first();
                    }
                }
            }
            Item::Late(id, ev) => w.restore_late(id, ev, &mut unknown),
        });
        drop(unknown);
        let path = w.journal.path().display().to_string();
        let read = read.unwrap_or_else(|e| {
            log::error!("{path}: reading stopped: {e}; the state is what was read before");
            crate::terminal::generations::Restored::default()
        });
        if read.bad_lines > 0 {
            log::warn!("{path}: {} unreadable lines skipped", read.bad_lines);
        }
        if read.last > bound {
            log::warn!(
                "{path}: a rotation line says ids up to {} were given, beyond {bound}: ignored",
                read.last
            );
        } else {
            max_id = max_id.max(read.last);
        }
        if let Some(max) = w.taken.iter().max() {
            log::warn!(
                "{path}: {} transaction ids beyond {bound} (start time x 1000 + 10^9), up to {max}, \
                 ignored when choosing new ids: corrupt or crafted lines",
                w.taken.len()
            );
        }
        w.next_id = max_id.max(floor);
        if std::mem::take(&mut w.history_later) {
            w.history_backwards(&contents);
        }
        log::debug!(
            "{path}: {} files read{}",
            read.files,
            if read.newest_only {
                " (the last rotation carried what the state needs)"
            } else {
                ""
            }
        );
        w.resume_unknown();
        let handle = Handle {
            jobs: jobs_tx,
            deliveries: deliveries_tx,
            stage: Arc::clone(&w.stage),
            turned_busy: Arc::clone(&w.turned_busy),
        };
        (w, handle, control_tx)
    }

    /// A transaction read back at start-up: a withdrawn one is left out
    /// (never started, never answered: not an unknown outcome, and not
    /// its register's last), one begun and never ended is closed as
    /// unknown, then it is restored. The restored transaction when its
    /// outcome is unknown.
    fn restore_read(&mut self, mut r: Record) -> Option<Arc<Completed>> {
        if r.withdrawn {
            return None;
        }
        if r.answer.is_none() {
            let answer = recovery_answer(&r.request);
            log::warn!(
                "tx {}: begun {} from {} {} and never ended: outcome unknown, answer AF07",
                r.id,
                r.begun_at,
                r.channel,
                r.peer
            );
            if let Err(e) = self.journal.record(
                r.id,
                &Event::Recovered {
                    answer: answer.clone(),
                },
            ) {
                log::error!(
                    "{}: cannot close tx {}: {e}",
                    self.journal.path().display(),
                    r.id
                );
            }
            r.ended_at = Some(r.begun_at.clone());
            r.verdict = Some(Verdict::Unknown);
            r.answer = Some(answer);
            r.recovered = true;
        }
        self.restore(r)
            .filter(|c| c.record.verdict == Some(Verdict::Unknown))
    }

    /// An event read after its transaction was folded in: a resolution
    /// settles it as `resolve` did when it was written (the refunds
    /// index, and its register's last when it still is); nothing else
    /// changes the state.
    fn restore_late(&mut self, id: u64, ev: Event, unknown: &mut BTreeMap<u64, Arc<Completed>>) {
        let Event::Resolved { verdict, answer } = ev else {
            return;
        };
        let Some(old) = unknown
            .remove(&id)
            .or_else(|| self.memory.lasts().find(|c| c.record.id == id).cloned())
            .filter(|c| c.record.verdict == Some(Verdict::Unknown))
        else {
            return;
        };
        let outcome = match Frame::decode(&answer) {
            Ok(f) if verdict != Verdict::NotDone => Outcome::from_answer(&f, &old.request.frame),
            _ => old.outcome.clone(),
        };
        let mut record = old.record.clone();
        record.verdict = Some(verdict);
        record.answer = Some(answer.clone());
        record.recovered = false;
        record.resolved = true;
        let register = old.request.register;
        let settled = Completed {
            request: old.request.clone(),
            outcome,
            answer,
            record,
            age: old.age,
            key: old.key.clone(),
        };
        let cancels = self.refunds.cancelled_by(id);
        self.account(&settled, cancels);
        if self
            .memory
            .last(register)
            .is_some_and(|c| c.record.id == id)
        {
            self.remember(Arc::new(settled));
        }
    }

    /// Start-up read the journal alone: the relay's history of the ACs and
    /// CFs other transactions had, bounded to the newest values, is filled
    /// from the newest transactions back (the journal, then the older
    /// generations, read backwards) until it is full or has gone back
    /// twice its size in transactions, rather than from every transaction
    /// folded in. A transaction never ended still gives its CF.
    fn history_backwards(&mut self, contents: &journal::Contents) {
        let limit = 2 * crate::backend::history::LIMIT;
        let mut n = 0;
        let h = Arc::clone(&self.history);
        let read = crate::terminal::generations::back_through(contents, |r| {
            n += 1;
            let full = match reread(&r) {
                Ok((req, frame)) => {
                    let outcome = Outcome::from_answer(&frame, &req.frame);
                    crate::backend::history::with(&h, |h| h.older(r.id, &req, &outcome))
                }
                Err(_) if r.answer.is_none() => match request::reread(&r.request) {
                    Ok(req) => {
                        let unknown = Outcome::declined(Af::NotEnded);
                        crate::backend::history::with(&h, |h| h.older(r.id, &req, &unknown))
                    }
                    Err(_) => false,
                },
                Err(_) => false,
            };
            !full && n < limit
        });
        if let Err(e) = read {
            log::warn!(
                "{}: the journal not read back for the relay's history: {e}",
                self.journal.path().display()
            );
        }
    }

    /// Puts a journaled transaction back in the per-register state.
    fn restore(&mut self, r: Record) -> Option<Arc<Completed>> {
        let (request, frame) = match reread(&r) {
            Ok(v) => v,
            Err(why) => {
                log::warn!(
                    "{}: tx {} (begun {} from {} {}): {why}; skipped",
                    self.journal.path().display(),
                    r.id,
                    r.begun_at,
                    r.channel,
                    r.peer
                );
                return None;
            }
        };
        let answer = r.answer.clone().unwrap_or_default();
        let outcome = Outcome::from_answer(&frame, &request.frame);
        let age = Age::from_stamp(&r.begun_at, unix_now(), self.born);
        let key = r
            .key
            .as_deref()
            .and_then(|t| RetryKey::from_token(&request, t));
        let c = Arc::new(Completed {
            request,
            outcome,
            answer,
            record: r,
            age,
            key,
        });
        // Journaled in order: the cancellation's debit is its register's
        // last approved one, as when it ran.
        let cancels = (c.request.op == Operation::Cancel)
            .then(|| self.memory.last_debit(c.request.register))
            .flatten()
            .map(|d| d.record.id);
        self.account(&c, cancels);
        self.remember(Arc::clone(&c));
        Some(c)
    }

    /// What an ended (or resolved) transaction changes for refunds by
    /// reference: an approved debit becomes refundable, a cancellation
    /// approved or of unknown outcome ends that (until it is found
    /// declined), and a refund counts against its debit when
    /// approved (the charged amount) or unknown (the asked amount: money
    /// may have moved, and a refund with a lost answer must not make room
    /// for another).
    fn account(&mut self, c: &Completed, cancels: Option<u64>) {
        let req = &c.request;
        let verdict = c.record.verdict;
        if req.op.is_debit() && verdict == Some(Verdict::Approved) {
            let charged = c.outcome.charged(req.amount);
            self.refunds.debit(&c.record, req.currency, charged);
        } else if req.op == Operation::Cancel {
            match (verdict, cancels) {
                (_, None) => {}
                (Some(Verdict::Declined | Verdict::NotDone), Some(id)) => {
                    self.refunds.cancel_undone(id, c.record.id)
                }
                (_, Some(id)) => self.refunds.cancelled(id, &c.record),
            }
        } else if let Some(of) = req
            .refund_of
            .as_deref()
            .and_then(crate::terminal::refunds::id_of)
        {
            let counts = match verdict {
                Some(Verdict::Approved) => Some(c.outcome.charged(req.amount)),
                Some(Verdict::Unknown) | None => req.amount,
                Some(Verdict::Declined | Verdict::NotDone) => None,
            };
            self.refunds.refund(of, &c.record, counts);
        }
    }

    /// The answer for an outcome: with `answer-extensions payxpert`, an
    /// approved debit's ends with ID AP AQ.
    fn answer_for(&self, id: u64, req: &Request, outcome: &Outcome) -> Vec<u8> {
        let mut f = answer::result(&req.frame, outcome);
        let payxpert = self.settings.extensions == crate::config::AnswerExtensions::PayXpert;
        if payxpert && outcome.is_approved() && req.op.is_debit() {
            let (secs, _) = crate::wire::clock::unix_now();
            let time = answer::ap_time(&crate::wire::clock::utc(secs, 0));
            let x = answer::Extensions {
                id,
                time: &time,
                serial: &self.settings.serial_number,
            };
            answer::extend(&mut f, &x);
        }
        f.encode()
    }

    /// Relay outcomes left unknown by the previous run, which the backend
    /// may still learn: only a register's last transaction, as a status
    /// request answers nothing older.
    fn resume_unknown(&mut self) {
        let unknown: Vec<Arc<Completed>> = self
            .memory
            .lasts()
            .filter(|c| {
                c.record.verdict == Some(Verdict::Unknown) && c.record.upstream_status.is_some()
            })
            .cloned()
            .collect();
        for c in unknown {
            // concertd writes only the names `Channel` displays: another
            // is not a record of ours to act upon.
            let Some(channel) = Channel::from_name(&c.record.channel) else {
                log::warn!(
                    "tx {}: the journal names channel {:?}: outcome not asked again",
                    c.record.id,
                    c.record.channel
                );
                continue;
            };
            let tx = Transaction {
                id: c.record.id,
                request: c.request.clone(),
                channel,
                original: None,
            };
            let kept = c.record.upstream_status.as_deref().unwrap_or_default();
            self.backend.resume(&tx, kept, self.done_tx.clone());
        }
    }

    pub fn run(mut self) {
        let mut stop_by: Option<Instant> = None;
        // When records written without a sync (`Journal::note`) must be on
        // disk at the latest.
        let mut sync_by: Option<Instant> = None;
        loop {
            if self.stopping && self.running.is_none() {
                let now = Instant::now();
                let by = *stop_by.get_or_insert(now + DELIVERY_WAIT);
                if self.undelivered.is_empty() || now >= by {
                    self.sync_notes();
                    log::info!("worker stopped");
                    return;
                }
            }
            let deadline = match (&self.running, stop_by) {
                (Some(r), _) => at(r.deadline),
                (None, Some(by)) => at(by),
                (None, None) => never(),
            };
            sync_by = match (self.journal.unsynced(), sync_by) {
                (false, _) => None,
                (true, Some(t)) => Some(t),
                (true, None) => Some(Instant::now() + NOTE_SYNC),
            };
            let sync_tick = sync_by.map_or_else(never, at);
            select_biased! {
                recv(self.control) -> c => match c {
                    Ok(Control::Reload(settings, cfg)) => self.reload(settings, &cfg),
                    Ok(Control::Status(to)) => {
                        let _ = to.send(self.status_lines());
                    }
                    Ok(Control::Stop) | Err(_) => {
                        if !self.stopping {
                            log::info!("stopping: new transactions refused");
                        }
                        self.stopping = true;
                    }
                },
                recv(self.done_rx) -> done => match done {
                    Ok(Done { id, note: Some(Note::UpstreamStatus(kept)), .. }) => {
                        self.keep_status(id, kept)
                    }
                    Ok(Done { id, note: Some(Note::Simulated(text)), .. }) => {
                        self.keep_simulated(id, text)
                    }
                    Ok(d) if d.resolved => {
                        let not_done = matches!(d.note, Some(Note::NotDone));
                        self.resolve(d.id, d.outcome, not_done)
                    }
                    Ok(d) => self.finish(d.id, d.outcome),
                    Err(_) => {}
                },
                recv(self.deliveries) -> d => {
                    if let Ok(d) = d {
                        self.delivery(d);
                    }
                }
                recv(deadline) -> _ => self.time_out(),
                recv(sync_tick) -> _ => self.sync_notes(),
                recv(self.jobs) -> job => match job {
                    Ok(job) => self.handle(job),
                    Err(_) => self.stopping = true,
                },
            }
        }
    }

    fn handle(&mut self, job: Job) {
        let req = &job.request;
        if job.withdrawn() {
            // NAKed while it waited in the queue: nothing was written.
            log::info!(
                "{}: {} register {:02} withdrawn (NAKed) before the worker reached it: not started",
                job.origin,
                req.op.name(),
                req.register
            );
            return;
        }
        log::debug!(
            "{}: {} register {:02}",
            job.origin,
            req.op.name(),
            req.register
        );
        let frame = match req.op {
            Operation::Identify => answer::identification(&req.frame),
            Operation::Duplicata => self.duplicata(req),
            Operation::Status => self.status(req),
            _ => return self.transaction(job),
        };
        send(&job.reply, frame, None);
    }

    fn transaction(&mut self, job: Job) {
        let req = &job.request;
        if let Some(r) = &self.running {
            log::info!(
                "{}: {} refused busy: tx {} for register {:02} running",
                job.origin,
                req.op.name(),
                r.id,
                r.request.register
            );
            self.counters.busy += 1;
            return send(&job.reply, answer::refusal(&req.frame, None), None);
        }
        if self.stopping {
            log::info!("{}: {} refused: stopping", job.origin, req.op.name());
            self.counters.busy += 1;
            return send(&job.reply, answer::refusal(&req.frame, None), None);
        }
        let key = (!job.origin.v2).then(|| RetryKey::of(req)).flatten();
        if let Some(k) = &key {
            self.check_attempt(k, &job.origin.to_string());
        }
        match key.as_ref().and_then(|k| self.replay_of(k)) {
            Some((done, Proof::Same)) => {
                if !job.take() {
                    return;
                }
                log::info!(
                    "{}: same {} as tx {} (every element): its answer replayed",
                    job.origin,
                    req.op.name(),
                    done.record.id
                );
                let ev = Event::Replayed {
                    peer: job.origin.to_string(),
                };
                if let Err(e) = self.journal.note(done.record.id, &ev) {
                    log::error!("{}: {e}", self.journal.path().display());
                }
                // Replays append too: a register retrying in a loop must not
                // grow the journal past journal-size between transactions.
                self.rotate_if_needed();
                return send(&job.reply, echo_cf(&done.answer, &req.frame), None);
            }
            // Before any check: nothing runs, so nothing is refused.
            Some((done, Proof::Unproven)) => {
                return self.start(job, key, Some(done.record.id));
            }
            None => {}
        }
        // The simulator told to answer busy although idle (the stage says
        // nothing with another backend): no transaction starts.
        if let Some(why) = self.stage.take_busy() {
            self.counters.busy += 1;
            log::info!("{}: {} refused busy: {why}", job.origin, req.op.name());
            return send(&job.reply, answer::refusal(&req.frame, None), None);
        }
        if let Some(im) = &req.refund_of {
            let amount = req.amount.unwrap_or(0);
            if let Err(why) = self.refunds.check(im, req.currency, amount) {
                log::warn!("{}: refund by reference refused AF04: {why}", job.origin);
                let frame = answer::refusal(&req.frame, Some(Af::Refused));
                return send(&job.reply, frame, None);
            }
        }
        if let Err(why) = self.check_cancel(req) {
            log::warn!("{}: cancellation refused AF04: {why}", job.origin);
            let frame = answer::refusal(&req.frame, Some(Af::Refused));
            return send(&job.reply, frame, None);
        }
        self.start(job, key, None);
    }

    /// A cancellation undoes its register's last approved debit (see
    /// `start`): whatever the backend, it is refused when that debit has
    /// refunds by reference or a cancellation (approved, or of unknown
    /// outcome), or asks more than it charged: money would go back twice.
    /// With no such debit the backend decides (concertd-protocol.7, Operations).
    fn check_cancel(&self, req: &Request) -> Result<(), crate::terminal::refunds::Refusal> {
        if req.op != Operation::Cancel {
            return Ok(());
        }
        let Some(debit) = self.memory.last_debit(req.register) else {
            return Ok(());
        };
        self.refunds
            .check_cancel(debit.record.id, req.currency, req.amount.unwrap_or(0))
    }

    fn replay_of(&self, key: &RetryKey) -> Option<(Arc<Completed>, Proof)> {
        self.memory
            .replay_of(key, self.settings.retry_window, Instant::now())
    }

    fn check_attempt(&mut self, key: &RetryKey, from: &str) {
        self.memory
            .check_attempt(key, from, self.settings.retry_window, Instant::now());
    }

    /// The next id: never one the journal holds, never a wrapped one.
    fn new_id(&mut self) -> Option<u64> {
        loop {
            self.next_id = self.next_id.checked_add(1)?;
            if !self.taken.contains(&self.next_id) {
                return Some(self.next_id);
            }
        }
    }

    /// Starts a transaction. `unproven`: the transaction read back from the
    /// journal whose masked request this one matches without proof that
    /// it is the same (see `RetryKey`): it is not run but ended unknown,
    /// as its outcome is that transaction's if it is the same request and
    /// none if it is not.
    fn start(&mut self, job: Job, key: Option<RetryKey>, unproven: Option<u64>) {
        let req = job.request.clone();
        let Some(id) = self.new_id() else {
            log::error!(
                "no transaction id left after {}: {} refused",
                self.next_id,
                req.op.name()
            );
            return send(
                &job.reply,
                answer::refusal(&req.frame, Some(Af::Unknown)),
                None,
            );
        };
        let begun = Event::Begun {
            channel: job.origin.channel.to_string(),
            peer: job.origin.peer.clone(),
            register: req.register,
            key: key.as_ref().map(RetryKey::token),
            request: req.frame.encode(),
        };
        // On disk before the backend starts: a crash from here on leaves a
        // record that the next start closes as unknown.
        if let Err(e) = self.journal.record(id, &begun) {
            log::error!(
                "{}: {e}: {} refused, transactions are not run unrecorded",
                self.journal.path().display(),
                req.op.name()
            );
            return send(
                &job.reply,
                answer::refusal(&req.frame, Some(Af::Unknown)),
                None,
            );
        }
        // The serial link may have given up on it while the begun record
        // waited for the disk: then it was NAKed, and never starts.
        if !job.take() {
            return self.withdrawn(id, &job);
        }
        // Told before the backend starts: the line ACKs it, and nothing
        // the backend does at its start may hold up that ACK.
        if let Some(s) = &job.started {
            let _ = s.send(id);
        }
        let original = match req.op {
            Operation::Cancel => self.memory.last_debit(req.register).map(|c| {
                Arc::new(Original {
                    id: c.record.id,
                    amount: c.outcome.charged(c.request.amount),
                    currency: c.request.currency.unwrap_or(0),
                    outcome: c.outcome.clone(),
                })
            }),
            _ => None,
        };
        let cancels = original.as_ref().map(|o| o.id);
        log::info!(
            "tx {id}: {}{}{} register {:02} from {}{}",
            req.op.name(),
            amount_label(&req),
            req.refund_of
                .as_deref()
                .map(|im| format!(
                    ", refund of tx {},",
                    crate::wire::pan::shown_element(crate::wire::tlv::tags::IM, im.as_bytes())
                ))
                .unwrap_or_default(),
            req.register,
            job.origin,
            if req.immediate {
                " (immediate answer)"
            } else {
                ""
            }
        );
        let tx = Transaction {
            channel: job.origin.channel,
            id,
            request: req.clone(),
            original,
        };
        match unproven {
            None => self.backend.start(&tx, self.done_tx.clone()),
            Some(of) => {
                log::warn!(
                    "tx {id}: same request as tx {of} as the journal keeps it (masked), but \
                     not provably the same (tx {of} is from before the restart): not run, \
                     outcome unknown (AF07); tx {of}'s outcome is in the journal"
                );
                let _ = self.done_tx.send(Done {
                    id,
                    outcome: Outcome::declined(Af::NotEnded),
                    resolved: false,
                    note: None,
                });
            }
        }
        let mut reply = Some(job.reply);
        if req.immediate {
            if let Some(r) = reply.take() {
                let _ = r.send(Reply {
                    frame: answer::done(&req.frame),
                    tx: None,
                    immediate: true,
                });
            }
        }
        let now = Instant::now();
        self.running = Some(Running {
            id,
            record: Record {
                id,
                begun_at: journal::stamp(),
                channel: job.origin.channel.to_string(),
                peer: job.origin.peer.clone(),
                register: req.register,
                request: req.frame.encode(),
                key: key.as_ref().map(RetryKey::token),
                ..Record::default()
            },
            request: req,
            origin: job.origin,
            reply,
            key,
            started: now,
            deadline: now + self.settings.transaction_timeout,
            cancels,
        });
    }

    /// A transaction begun on disk, then withdrawn by the serial link
    /// before it started: journaled so, with no answer (the register got a
    /// NAK), so that the journal does not read as an unknown outcome.
    fn withdrawn(&mut self, id: u64, job: &Job) {
        let req = &job.request;
        let ev = Event::Withdrawn {
            reason: "not taken in time: NAKed, not started".into(),
        };
        match self.journal.record(id, &ev) {
            Ok(()) => log::warn!(
                "tx {id}: {}{} register {:02} from {} withdrawn: the line NAKed it \
                 before it was taken (slow journal?); not started, nothing charged",
                req.op.name(),
                amount_label(req),
                req.register,
                job.origin
            ),
            Err(e) => log::error!(
                "{}: {e}: tx {id} was withdrawn (NAKed, not started) but its record could \
                 not be written: the journal reads it as begun and never ended",
                self.journal.path().display()
            ),
        }
        self.rotate_if_needed();
    }

    fn time_out(&mut self) {
        if let Some(id) = self.running.as_ref().map(|r| r.id) {
            log::warn!("tx {id}: transaction-timeout reached, aborting it");
            let outcome = self.backend.abort(id);
            self.finish(id, outcome);
        }
    }

    fn reload(&mut self, settings: Settings, cfg: &crate::config::Config) {
        self.settings = settings;
        if cfg.terminal == self.terminal {
            // Back to the running backend: a pending change is dropped.
            self.next_backend = None;
            self.backend.reload(cfg);
            return;
        }
        match crate::backend::build(cfg, &self.stage) {
            Ok(b) => {
                log::info!(
                    "terminal {}: takes over after the running transaction",
                    cfg.terminal.shown()
                );
                self.next_backend = Some((b, cfg.terminal.clone()));
                self.swap_backend();
            }
            Err(e) => log::error!(
                "reload: terminal {}: {e}; the running backend is kept",
                cfg.terminal.shown()
            ),
        }
    }

    /// A backend change waits for the running transaction to end.
    fn swap_backend(&mut self) {
        if self.running.is_some() {
            return;
        }
        if let Some((b, t)) = self.next_backend.take() {
            log::info!("terminal {}: now in use", t.shown());
            self.backend = b;
            self.backend.share_history(Arc::clone(&self.history));
            self.terminal = t;
        }
    }

    /// Puts on disk the records written without a sync of their own.
    fn sync_notes(&mut self) {
        if let Err(e) = self.journal.sync() {
            log::error!(
                "{}: {e}: delivery records may not be on disk",
                self.journal.path().display()
            );
        }
    }

    /// A relay's upstream status before the running transaction's request
    /// went upstream: journaled with it, so that its outcome can still be
    /// settled after a restart.
    fn keep_status(&mut self, id: u64, kept: Vec<u8>) {
        let Some(run) = self.running.as_mut().filter(|r| r.id == id) else {
            return;
        };
        let ev = Event::UpstreamStatus {
            answer: kept.clone(),
        };
        match self.journal.note(id, &ev) {
            Ok(()) => run.record.upstream_status = Some(kept),
            Err(e) => log::error!(
                "{}: {e}: upstream status of tx {id} not recorded; \
                 if lost, its outcome cannot be settled after a restart",
                self.journal.path().display()
            ),
        }
    }

    /// What the simulator was told to do with a transaction: journaled with
    /// it, before its end, so that the journal explains a strange answer.
    fn keep_simulated(&mut self, id: u64, text: String) {
        // A decision made as the transaction was given up (timeout) comes
        // after its end: it decided nothing, and only the log says so.
        if self.running.as_ref().is_none_or(|r| r.id != id) {
            log::info!("tx {id}: simulator: {text}: came after the transaction ended, ignored");
            return;
        }
        if let Err(e) = self.journal.note(id, &Event::Simulated { text }) {
            log::error!(
                "{}: {e}: the simulator's plan for tx {id} not recorded",
                self.journal.path().display()
            );
        }
    }

    /// A later outcome for a transaction closed as unknown: journaled, and
    /// from then on what status and duplicata return (while it is its
    /// register's last transaction). `not_done`: the request never ran
    /// upstream; the register keeps its "not ended" answer, the journal
    /// knows nothing was charged.
    fn resolve(&mut self, id: u64, mut outcome: Outcome, not_done: bool) {
        let Some(old) = self
            .unresolved
            .get(&id)
            .cloned()
            .or_else(|| self.memory.lasts().find(|c| c.record.id == id).cloned())
            .filter(|c| c.record.verdict == Some(Verdict::Unknown))
        else {
            log::info!("tx {id}: resolved outcome no longer needed");
            return;
        };
        let req = old.request.clone();
        let (answer, verdict) = if not_done {
            outcome = old.outcome.clone();
            (old.answer.clone(), Verdict::NotDone)
        } else {
            let when = crate::wire::clock::now().ticket();
            with_ticket(&req, &mut outcome, &when, self.simulated());
            let answer = self.answer_for(id, &req, &outcome);
            (answer, verdict_of(&outcome))
        };
        if verdict == Verdict::Unknown {
            log::info!("tx {id}: the upstream does not know the outcome either");
            return;
        }
        let ev = Event::Resolved {
            verdict,
            answer: answer.clone(),
        };
        if let Err(e) = self.journal.record(id, &ev) {
            log::error!(
                "{}: {e}: resolution of tx {id} not recorded",
                self.journal.path().display()
            );
            return;
        }
        log::info!("tx {id}: outcome resolved: {}", verdict.word());
        self.unresolved.remove(&id);
        let mut record = old.record.clone();
        record.verdict = Some(verdict);
        record.answer = Some(answer.clone());
        record.recovered = false;
        let register = req.register;
        let settled = Completed {
            request: req,
            outcome,
            answer,
            record,
            age: old.age,
            key: old.key.clone(),
        };
        let cancels = self.refunds.cancelled_by(id);
        self.account(&settled, cancels);
        let current = self
            .memory
            .last(register)
            .is_some_and(|c| c.record.id == id);
        if !current {
            // The status request describes the register's last transaction.
            log::info!(
                "tx {id}: register {register:02} has had a transaction since; the resolution is in the journal"
            );
            return;
        }
        self.remember(Arc::new(settled));
    }

    fn finish(&mut self, id: u64, mut outcome: Outcome) {
        let Some(run) = self.running.take_if(|r| r.id == id) else {
            // Answered AF07 at transaction-timeout, the backend learnt the
            // outcome after all (a payment program that exits by itself
            // after it): a definite one resolves the transaction.
            if verdict_of(&outcome) != Verdict::Unknown {
                return self.resolve(id, outcome, false);
            }
            log::debug!("tx {id}: late outcome ignored");
            return;
        };
        let req = run.request;
        let when = crate::wire::clock::now().ticket();
        with_ticket(&req, &mut outcome, &when, self.simulated());
        let answer = self.answer_for(id, &req, &outcome);
        let verdict = verdict_of(&outcome);
        let detail = match outcome.status {
            Status::Approved => "approved".to_string(),
            Status::Declined(af) => format!("declined AF{} ({})", af.code(), af.label()),
        };
        log::info!(
            "tx {id}: {} {detail} in {:.1} s{}",
            req.op.name(),
            run.started.elapsed().as_secs_f64(),
            outcome
                .auth
                .as_ref()
                .map(|a| format!(", authorisation {a}"))
                .unwrap_or_default()
        );
        *match verdict {
            Verdict::Approved => &mut self.counters.approved,
            Verdict::Declined => &mut self.counters.declined,
            Verdict::Unknown | Verdict::NotDone => &mut self.counters.unknown,
        } += 1;
        let mut record = run.record;
        record.ended_at = Some(journal::stamp());
        record.verdict = Some(verdict);
        record.answer = Some(answer.clone());
        // On disk before the first byte of the answer goes out.
        let journaled = self.journal.record(
            id,
            &Event::Ended {
                verdict,
                answer: answer.clone(),
            },
        );
        let done = Arc::new(Completed {
            request: req,
            outcome,
            answer,
            record,
            age: Age::fresh(run.started),
            key: run.key,
        });
        if verdict == Verdict::Unknown {
            if self.unresolved.len() >= MAX_UNRESOLVED {
                if let Some(&oldest) = self.unresolved.keys().min() {
                    self.unresolved.remove(&oldest);
                }
            }
            self.unresolved.insert(id, Arc::clone(&done));
        }
        self.account(&done, run.cancels);
        self.remember(Arc::clone(&done));
        match (journaled, run.reply) {
            (Err(e), reply) => {
                log::error!(
                    "tx {id}: {}: {e}: the outcome is not on disk, so no answer is sent; {}",
                    self.journal.path().display(),
                    how_to_fetch(run.origin.v2, done.request.register)
                );
                drop(reply);
            }
            (Ok(()), Some(reply)) => {
                let frame = Frame::decode(&done.answer).unwrap_or_else(|(p, _)| p);
                let v2 = run.origin.v2;
                self.undelivered.insert(id, Handed { done, v2 });
                let sent = reply.send(Reply {
                    frame,
                    tx: Some(id),
                    immediate: false,
                });
                if sent.is_err() {
                    // Its connection or line is gone: nobody will report.
                    self.delivery(Delivery {
                        id,
                        result: Err("the channel that asked is gone".into()),
                    });
                }
            }
            (Ok(()), None) => {
                log::info!(
                    "tx {id}: outcome kept for a status request from {}",
                    run.origin
                );
            }
        }
        self.rotate_if_needed();
        self.swap_backend();
    }

    fn delivery(&mut self, d: Delivery) {
        let Some(Handed { done, v2 }) = self.undelivered.remove(&d.id) else {
            return;
        };
        let ev = match &d.result {
            Ok(()) => Event::Delivered,
            Err(reason) => Event::Undelivered {
                reason: reason.clone(),
            },
        };
        // Journal first, then the log: the log line says it is on record.
        // No sync of its own: the next transaction's, or the one a second
        // later, puts it on disk.
        if let Err(e) = self.journal.note(d.id, &ev) {
            log::error!("{}: {e}", self.journal.path().display());
        }
        if let Err(reason) = d.result {
            self.counters.undelivered += 1;
            log::warn!(
                "tx {}: answer not delivered to {} ({reason}); {}",
                d.id,
                done.record.peer,
                how_to_fetch(v2, done.request.register)
            );
        }
        self.rotate_if_needed();
    }

    fn remember(&mut self, c: Arc<Completed>) {
        if !self.history_later {
            crate::backend::history::with(&self.history, |h| {
                h.record(c.record.id, &c.request, &c.outcome)
            });
        }
        self.memory
            .remember(c, self.settings.retry_window, Instant::now());
    }

    /// Past `journal-size`, a new generation starts with the records still
    /// needed copied in, so that dropping the oldest generation never loses
    /// them: always the running transaction's begun record, the unknown
    /// outcomes a late one may settle (at most `MAX_UNRESOLVED`) and each
    /// register's last payment and last approved debit (at most 2 x 100);
    /// then the retry window's, newest first, while the carried set stays
    /// within `Journal::carry_budget`. Those left out stay in the older
    /// generations as long as they are kept, and in memory.
    fn rotate_if_needed(&mut self) {
        if !self.journal.needs_rotation() {
            return;
        }
        let mut carry = journal::Carry::default();
        if let Some(r) = &self.running {
            carry.take(&r.record);
        }
        for c in self.unresolved.values() {
            carry.take(&c.record);
        }
        for c in self.memory.kept() {
            carry.take(&c.record);
        }
        let mut window: Vec<&Record> = self.memory.replayable().map(|c| &c.record).collect();
        window.sort_by_key(|r| std::cmp::Reverse(r.id));
        let budget = self.journal.carry_budget();
        let mut left = 0;
        for r in window {
            if !carry.has(r.id) && !carry.take_all(&[r], budget, false) {
                left += 1;
            }
        }
        // A debit goes with its refunds and cancellation, or not at all: a
        // debit read back without them would be refundable again. One of
        // them already carried takes the rest along, whatever the budget.
        let mut unrefundable = 0;
        for group in self.refunds.groups() {
            let forced = group.iter().any(|r| carry.has(r.id));
            if !carry.take_all(&group, budget, forced) {
                unrefundable += 1;
            }
        }
        if unrefundable > 0 {
            log::info!(
                "{}: {unrefundable} older approved debits not carried over (past half of \
                 journal-size): refundable by reference while their generation is kept",
                self.journal.path().display()
            );
        }
        // Start-up may then read the new generation alone: ids go on from
        // `last`, and nothing the state holds is left behind.
        carry.last = self.next_id;
        carry.whole = left == 0
            && unrefundable == 0
            && self.taken.is_empty()
            && (self.settings.retry_window.is_zero() || self.memory.attempts_held());
        let carried = carry.len();
        let path = self.journal.path().display().to_string();
        match self.journal.rotate(carry) {
            Ok(()) if left > 0 => log::info!(
                "{path}: rotated, {carried} transactions carried over; {left} older ones of the \
                 retry window are not (past half of journal-size): they stay in the older \
                 generations while those are kept"
            ),
            Ok(()) => log::info!("{path}: rotated, {carried} transactions carried over"),
            Err(e) => log::error!("{path}: rotation failed: {e}"),
        }
    }

    /// The running transaction, as `concertctl status` and SIGUSR1 say
    /// it.
    fn running_line(r: &Running) -> String {
        format!(
            "running: tx {} {}{} register {:02} from {} for {:.1} s",
            r.id,
            r.request.op.name(),
            amount_label(&r.request),
            r.request.register,
            r.origin,
            r.started.elapsed().as_secs_f64()
        )
    }

    /// The worker's part of the live state (`concertctl status`,
    /// SIGUSR1): the running transaction, the counts since start, the
    /// replays and each register's last outcome.
    fn status_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        out.push(match &self.running {
            Some(r) => Worker::running_line(r),
            None if self.stopping => "running: none, stopping".into(),
            None => "running: none".into(),
        });
        let c = &self.counters;
        out.push(format!(
            "since start: {} approved, {} declined, {} unknown; {} busy answers; {} answers undelivered",
            c.approved,
            c.declined,
            c.unknown,
            c.busy + self.turned_busy.load(Ordering::Relaxed),
            c.undelivered
        ));
        if self.settings.retry_window.is_zero() {
            out.push("retries are not replayed (retry-window 0)".into());
        } else {
            out.push(format!(
                "{} transactions held for replay (retry-window {})",
                self.memory.replayable().count(),
                crate::config::fmt_duration(self.settings.retry_window)
            ));
        }
        for reg in self.memory.no_replay() {
            out.push(format!(
                "register {reg:02}: replays stopped, its CF came with two amounts"
            ));
        }
        out.push(match self.memory.lasts().max_by_key(|c| c.record.id) {
            Some(c) => format!(
                "last outcome tx {} {}{} register {:02}: {}",
                c.record.id,
                c.request.op.name(),
                amount_label(&c.request),
                c.request.register,
                c.record.verdict.map_or("unknown", Verdict::word)
            ),
            None => "no transaction yet".into(),
        });
        let mut lasts: Vec<&Arc<Completed>> = self.memory.lasts().collect();
        lasts.sort_by_key(|c| c.request.register);
        for c in lasts {
            out.push(format!(
                "register {:02}: tx {} {}{} {}",
                c.request.register,
                c.record.id,
                c.request.op.name(),
                amount_label(&c.request),
                c.record.verdict.map_or("unknown", Verdict::word)
            ));
        }
        out
    }

    fn status(&mut self, req: &Request) -> Frame {
        if self
            .running
            .as_ref()
            .is_some_and(|r| r.request.register == req.register)
        {
            return answer::still_running(&req.frame);
        }
        let last = self.memory.last(req.register).cloned();
        match last {
            Some(last) => {
                if last.record.verdict == Some(Verdict::Unknown) {
                    self.backend.status_requested(req.register);
                }
                Frame::decode(&last.answer).unwrap_or_else(|(p, _)| p)
            }
            None => answer::refusal(&req.frame, Some(Af::Unknown)),
        }
    }

    /// Tickets made while the simulator is the backend say so.
    fn simulated(&self) -> bool {
        self.terminal == crate::config::Terminal::Simulator
    }

    fn duplicata(&self, req: &Request) -> Frame {
        let Some(last) = self.memory.last(req.register) else {
            return answer::refusal(&req.frame, Some(Af::Unknown));
        };
        let spec = req
            .ticket
            .clone()
            .or_else(|| last.request.ticket.clone())
            .unwrap_or(TicketSpec {
                ck: *b"100",
                copies: ticket::Copies::Customer,
                html: false,
            });
        let when = last.record.ended_at.clone().unwrap_or_default();
        let mut f = answer::done(&req.frame);
        f.push(
            ZT,
            ticket::zt(
                &spec,
                &facts(
                    &last.request,
                    &last.outcome,
                    &ticket_time(&when),
                    true,
                    self.simulated(),
                ),
            ),
        );
        f
    }
}

/// Puts the ticket a payment's request asks for (CK) in its outcome: the
/// backend's own document when it gave one, else one made from the outcome,
/// dated `when`.
pub fn with_ticket(req: &Request, outcome: &mut Outcome, when: &str, simulated: bool) {
    let (true, Some(spec), None) = (req.op.is_payment(), &req.ticket, &outcome.ticket) else {
        return;
    };
    let own = outcome
        .document
        .take()
        .and_then(|doc| ticket::zt_of(spec, doc));
    outcome.ticket = Some(match own {
        Some(zt) => zt,
        None => ticket::zt(spec, &facts(req, outcome, when, false, simulated)),
    });
}

/// The answer of a transaction begun and never ended, closed at start:
/// AF07, echoing what can be read of its request.
pub fn recovery_answer(request: &[u8]) -> Vec<u8> {
    let partial = Frame::decode(request).unwrap_or_else(|(p, _)| p);
    answer::refusal(&partial, Some(Af::NotEnded)).encode()
}

/// A journaled transaction read back with the checks a request gets now:
/// its request, and its answer, which must decode and say AE 10 or 01.
/// The error says what is wrong.
pub fn reread(r: &Record) -> Result<(Request, Frame), String> {
    let request =
        request::reread(&r.request).map_err(|e| format!("journaled request not readable ({e})"))?;
    let Some(answer) = &r.answer else {
        return Err("no answer journaled".into());
    };
    let frame =
        Frame::decode(answer).map_err(|(_, e)| format!("journaled answer not readable ({e})"))?;
    match frame.get(AE) {
        Some(b"10" | b"01") => Ok((request, frame)),
        _ => Err("journaled answer not valid (no AE 10 or 01)".into()),
    }
}

/// `2026-11-26T16:07:29.100Z` -> `26/11/2026 16:07:29` in local time.
fn ticket_time(stamp: &str) -> String {
    match journal::unix_time(stamp) {
        Some(s) => crate::wire::clock::local(s, 0).ticket(),
        None => crate::wire::clock::now().ticket(),
    }
}

/// A replayed answer, its CF the retry's own bytes: the journal keeps a
/// card-like CF masked, and the register must get back what it sent.
fn echo_cf(answer: &[u8], req: &Frame) -> Frame {
    let old = Frame::decode(answer).unwrap_or_else(|(p, _)| p);
    let mut f = Frame::new();
    for e in old.elements() {
        match (e.tag, req.get(CF)) {
            (CF, Some(cf)) => f.push(CF, cf.to_vec()),
            _ => f.push(e.tag, e.value.clone()),
        }
    }
    f
}

fn send(reply: &Sender<Reply>, frame: Frame, tx: Option<u64>) {
    // A connection that went away no longer listens; its thread logs that.
    let _ = reply.send(Reply {
        frame,
        tx,
        immediate: false,
    });
}

fn amount_label(req: &Request) -> String {
    match (req.amount, req.currency) {
        (Some(a), Some(c)) => format!(
            " {} {}",
            currency::format_amount(a, c, false),
            currency::label(c)
        ),
        _ => String::new(),
    }
}

fn application_label(cc: Option<&str>) -> &'static str {
    cc.and_then(ticket::application)
        .map_or("CARTE", |a| a.ticket)
}

/// What the ticket of a transaction shows.
fn facts(req: &Request, o: &Outcome, when: &str, duplicata: bool, simulated: bool) -> Facts {
    let minor = o.charged(req.amount);
    let cur = req.currency.unwrap_or(978);
    Facts {
        op: Some(req.op),
        approved: o.is_approved(),
        af: match o.status {
            Status::Declined(af) => Some(af),
            Status::Approved => None,
        },
        amount: format!(
            "{} {}",
            currency::format_amount(minor, cur, true),
            currency::label(cur)
        ),
        cheque: req.cheque,
        application: application_label(o.application.as_deref()).to_string(),
        aid: o.aid.clone(),
        pan: o.pan.clone(),
        auth: o.auth.clone(),
        contract: o.contract.clone(),
        register: req.register,
        when: when.to_string(),
        duplicata,
        simulated,
        receipt: receipt_by(req, simulated),
    }
}

/// The way the simulator sends the shopper's receipt (an e-mail before a
/// phone when a register gives both). Only the simulator says it did: a
/// real payment program sends receipts its own way.
fn receipt_by(req: &Request, simulated: bool) -> Option<&'static str> {
    if !simulated || !req.op.is_payment() {
        return None;
    }
    match (&req.receipt_email, &req.receipt_phone) {
        (Some(_), _) => Some("E-MAIL"),
        (None, Some(_)) => Some("SMS"),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(body: &str) -> Request {
        request::parse(body.as_bytes(), &[978]).unwrap()
    }

    #[test]
    fn channel_names_round_trip() {
        for c in [Channel::Tcp, Channel::Serial] {
            assert_eq!(Channel::from_name(&c.to_string()), Some(c));
        }
        assert_eq!(Channel::from_name("TCP"), None);
        assert_eq!(Channel::from_name(""), None);
    }

    #[test]
    fn a_reply_closed_without_an_answer_is_none() {
        let (jobs, taken) = bounded::<Job>(1);
        let (deliveries, _d) = crossbeam_channel::unbounded();
        let h = Handle {
            jobs,
            deliveries,
            stage: Arc::default(),
            turned_busy: Arc::default(),
        };
        let origin = Origin {
            channel: Channel::Tcp,
            peer: "test".into(),
            v2: false,
        };
        let t = std::thread::spawn(move || drop(taken.recv()));
        let r = req("CZ0040320CA00201CB0042000CD0010CE003978");
        assert!(h.submit(r.clone(), origin.clone()).is_none());
        t.join().unwrap();
        // The worker gone: a busy refusal, which is an answer.
        let busy = h.submit(r, origin).expect("a busy answer");
        assert!(!busy.frame.elements().is_empty());
    }
}

#[cfg(test)]
mod id_tests {
    use super::*;

    fn worker(records: Vec<Record>) -> Worker {
        super::queue_and_window_tests::worker(records, Duration::ZERO).0
    }

    #[test]
    fn new_ids_skip_journal_ids_and_never_wrap() {
        let rec = |id| Record {
            id,
            begun_at: "2026-01-01T00:00:00.000Z".into(),
            request: b"CZ0040320CA00201CB0041000CD0010CE003978".to_vec(),
            answer: Some(b"CZ0040320CA00201CB0041000CD0010CE003978AE00210".to_vec()),
            ..Record::default()
        };
        let mut w = worker(vec![rec(u64::MAX - 1), rec(7)]);
        // Past the sane bound: ignored when choosing, still never reused.
        assert!(w.next_id < u64::MAX / 2, "{}", w.next_id);
        assert_eq!(w.taken, HashSet::from([u64::MAX - 1]));
        w.next_id = u64::MAX - 3;
        assert_eq!(w.new_id(), Some(u64::MAX - 2));
        assert_eq!(w.new_id(), Some(u64::MAX));
        assert_eq!(w.new_id(), None);
        assert_eq!(w.new_id(), None);
    }

    /// A late outcome written long after its transaction ended (more
    /// transactions than start-up holds back began in between) still
    /// settles it when the journal is read back: as its register's last.
    #[test]
    fn a_resolution_read_far_after_its_transaction_settles_it() {
        let dir = std::env::temp_dir().join(format!("concertd-worker-late-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let t = "2026-01-01T00:00:00.000Z";
        let req = |reg: u8| format!("CZ0040320CA002{reg:02}CB0041000CD0010CE003978");
        let mut text = format!(
            "{t} 1 begun tcp 127.0.0.1:1 01 {}\n{t} 1 ended unknown {}AE00201AF00207\n",
            req(1),
            req(1)
        );
        for id in 2..40 {
            text += &format!(
                "{t} {id} begun tcp 127.0.0.1:1 02 {}\n{t} {id} ended approved {}AE00210\n",
                req(2),
                req(2)
            );
        }
        text += &format!("{t} 1 resolved approved {}AE00210\n", req(1));
        std::fs::write(dir.join("journal"), text).unwrap();
        let (journal, contents) = Journal::open(&dir.join("journal"), 1 << 20, 0).unwrap();
        let (w, _, _) = Worker::new(
            Box::new(crate::backend::simulator::Simulator::new(Duration::ZERO)),
            crate::config::Terminal::Simulator,
            journal,
            contents,
            Settings {
                transaction_timeout: Duration::from_secs(1),
                retry_window: Duration::ZERO,
                extensions: crate::config::AnswerExtensions::None,
                serial_number: "test".into(),
            },
            Arc::default(),
        );
        let last = w.memory.last(1).expect("register 01's last");
        assert_eq!(last.record.id, 1);
        assert_eq!(last.record.verdict, Some(Verdict::Approved));
        assert!(last.record.resolved && last.outcome.is_approved());
        assert_eq!(w.memory.last_debit(1).map(|c| c.record.id), Some(1));
        assert_eq!(w.refunds.len(), 39, "the resolved debit is refundable too");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Start-up that reads the journal alone (its rotation carried
    /// everything) still never gives an id an older generation holds: the
    /// rotation line says the highest one given out.
    #[test]
    fn ids_go_on_past_the_rotation_line_when_older_generations_are_not_read() {
        let dir = std::env::temp_dir().join(format!("concertd-worker-ids-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let given = u64::try_from(unix_now()).unwrap() * 1000 + 5_000_000;
        let older = format!(
            "2026-01-01T00:00:00.000Z {given} begun tcp 127.0.0.1:1 01 CZ0040320CA00201CB0041000CD0010CE003978\n"
        );
        std::fs::write(dir.join("journal.1"), older).unwrap();
        std::fs::write(
            dir.join("journal"),
            format!("2026-01-01T00:00:01.000Z 0 rotated carried=0 last={given} whole\n"),
        )
        .unwrap();
        let (journal, contents) = Journal::open(&dir.join("journal"), 1 << 20, 1).unwrap();
        let (mut w, _, _) = Worker::new(
            Box::new(crate::backend::simulator::Simulator::new(Duration::ZERO)),
            crate::config::Terminal::Simulator,
            journal,
            contents,
            Settings {
                transaction_timeout: Duration::from_secs(1),
                retry_window: Duration::ZERO,
                extensions: crate::config::AnswerExtensions::None,
                serial_number: "test".into(),
            },
            Arc::default(),
        );
        assert!(w.new_id().is_some_and(|id| id > given), "{}", w.next_id);
        // Not read: tx `given`, begun and never ended there, is not closed.
        let older = std::fs::read_to_string(dir.join("journal.1")).unwrap();
        assert_eq!(older.lines().count(), 1, "{older}");
        assert!(!std::fs::read_to_string(dir.join("journal"))
            .unwrap()
            .contains("unknown-recovered"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod queue_and_window_tests {
    use super::*;

    /// A worker on a fresh journal holding `records`, not running.
    pub(super) fn worker(records: Vec<Record>, retry_window: Duration) -> (Worker, Handle) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "concertd-worker-qw-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (journal, _) = Journal::open(&dir.join("journal"), 1 << 20, 0).unwrap();
        let contents = journal::Contents::given(records);
        let (w, h, _) = Worker::new(
            Box::new(crate::backend::simulator::Simulator::new(Duration::ZERO)),
            crate::config::Terminal::Simulator,
            journal,
            contents,
            Settings {
                transaction_timeout: Duration::from_secs(1),
                retry_window,
                extensions: crate::config::AnswerExtensions::None,
                serial_number: "test".into(),
            },
            Arc::default(),
        );
        let _ = std::fs::remove_dir_all(&dir);
        (w, h)
    }

    fn origin() -> Origin {
        Origin {
            channel: Channel::Tcp,
            peer: "127.0.0.1:9".into(),
            v2: false,
        }
    }

    const DEBIT: &str = "CZ0040320CA00201CB0041000CD0010CE003978";

    #[test]
    fn a_full_queue_answers_busy_at_once() {
        // The worker never runs: every job it is handed stays queued.
        let (_w, h) = worker(Vec::new(), Duration::ZERO);
        let r = request::parse(DEBIT.as_bytes(), &[978]).unwrap();
        let queued: Vec<Pending> = (0..QUEUE)
            .map(|_| h.hand_over(r.clone(), origin()))
            .collect();
        assert!(queued.iter().all(|p| p.reply.try_recv().is_err()));
        // One more: answered busy by the caller's side, without blocking.
        let busy = h.submit(r.clone(), origin()).expect("a busy answer");
        assert_eq!(busy.frame.encode(), format!("{DEBIT}AE00201").as_bytes());
        assert_eq!(busy.tx, None);
        let p = h.hand_over(r, origin());
        let busy = p.reply.try_recv().expect("busy answer at once");
        assert_eq!(busy.frame.encode(), format!("{DEBIT}AE00201").as_bytes());
    }

    #[test]
    fn status_counts_the_busy_answers_of_a_full_queue_with_the_workers() {
        let (mut w, h) = worker(Vec::new(), Duration::ZERO);
        let r = request::parse(DEBIT.as_bytes(), &[978]).unwrap();
        let _queued: Vec<Pending> = (0..QUEUE)
            .map(|_| h.hand_over(r.clone(), origin()))
            .collect();
        let busy = |w: &Worker| w.status_lines()[1].clone();
        assert!(busy(&w).contains("; 0 busy answers;"), "{}", busy(&w));
        h.submit(r, origin()).expect("a busy answer");
        assert!(busy(&w).contains("; 1 busy answers;"), "{}", busy(&w));
        // One the worker gives itself (a transaction running, stopping).
        w.counters.busy += 1;
        assert!(busy(&w).contains("; 2 busy answers;"), "{}", busy(&w));
    }

    /// A journal stamp `secs` before now.
    fn stamp_ago(secs: i64) -> String {
        let (s, ms) = crate::wire::clock::unix_now();
        let c = crate::wire::clock::utc(s - secs, ms);
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            c.year, c.month, c.day, c.hour, c.minute, c.second, c.millis
        )
    }

    fn approved(id: u64, cf: &str, secs_ago: i64) -> Record {
        let request = format!("{DEBIT}CF{:03}{cf}", cf.len());
        Record {
            id,
            begun_at: stamp_ago(secs_ago),
            channel: "tcp".into(),
            peer: "127.0.0.1:9".into(),
            register: 1,
            key: Some("r-.-".into()),
            answer: Some(format!("{request}AE00210AC006123456").into_bytes()),
            request: request.into_bytes(),
            ended_at: Some(stamp_ago(secs_ago)),
            verdict: Some(Verdict::Approved),
            delivered: Some(true),
            ..Record::default()
        }
    }

    #[test]
    fn retries_are_replayed_within_the_window_only() {
        // Ages come from the stamps against the start time: an hour-old
        // approval is past a 30-minute window, a minute-old one is not.
        let (w, _h) = worker(
            vec![approved(1, "old", 3600), approved(2, "new", 60)],
            Duration::from_secs(1800),
        );
        let key = |cf: &str| {
            let body = format!("{DEBIT}CF{:03}{cf}", cf.len());
            RetryKey::of(&request::parse(body.as_bytes(), &[978]).unwrap()).unwrap()
        };
        assert!(w.replay_of(&key("old")).is_none(), "expired, yet replayed");
        let (done, proof) = w.replay_of(&key("new")).expect("within the window");
        assert_eq!((done.record.id, proof), (2, Proof::Same));
        // The same records under a window of two hours: both replayed.
        let (w, _h) = worker(
            vec![approved(1, "old", 3600), approved(2, "new", 60)],
            Duration::from_secs(7200),
        );
        assert!(w.replay_of(&key("old")).is_some());
        assert!(w.replay_of(&key("new")).is_some());
        // Journaled by an earlier concertd (its token checked CF alone):
        // found, never proven.
        let mut legacy = approved(3, "new", 60);
        legacy.key = Some("-".into());
        let (w, _h) = worker(vec![legacy], Duration::from_secs(1800));
        let (done, proof) = w.replay_of(&key("new")).expect("within the window");
        assert_eq!((done.record.id, proof), (3, Proof::Unproven));
    }
}

#[cfg(test)]
mod handover_tests {
    use super::*;

    const DEBIT: &str = "CZ0040320CA00201CB0048000CD0010CE003978";

    /// A worker, not running, on a journal in `dir` (kept for reading).
    fn worker(dir: &std::path::Path) -> (Worker, Handle) {
        let (journal, contents) = Journal::open(&dir.join("journal"), 1 << 20, 0).unwrap();
        let (w, h, _) = Worker::new(
            Box::new(crate::backend::simulator::Simulator::new(Duration::ZERO)),
            crate::config::Terminal::Simulator,
            journal,
            contents,
            Settings {
                transaction_timeout: Duration::from_secs(5),
                retry_window: Duration::ZERO,
                extensions: crate::config::AnswerExtensions::None,
                serial_number: "test".into(),
            },
            Arc::default(),
        );
        (w, h)
    }

    fn dir() -> std::path::PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "concertd-worker-ho-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn serial_origin() -> Origin {
        Origin {
            channel: Channel::Serial,
            peer: "/dev/ttyTEST".into(),
            v2: true,
        }
    }

    fn hand_over(h: &Handle) -> Pending {
        h.hand_over(
            request::parse(DEBIT.as_bytes(), &[978]).unwrap(),
            serial_origin(),
        )
    }

    fn journal_text(d: &std::path::Path) -> String {
        std::fs::read_to_string(d.join("journal")).unwrap()
    }

    #[test]
    fn withdrawn_in_the_queue_it_is_never_journaled_nor_started() {
        let d = dir();
        let (mut w, h) = worker(&d);
        let p = hand_over(&h);
        // The worker does not reach it by the deadline.
        let by = Instant::now() + Duration::from_millis(20);
        assert!(matches!(p.decision(Some(by)), Decision::Withdrawn));
        let job = w.jobs.try_recv().expect("the job is queued");
        w.handle(job);
        assert!(w.running.is_none(), "a withdrawn job started");
        assert_eq!(journal_text(&d), "", "nothing to journal");
        let _ = std::fs::remove_dir_all(&d);
    }

    /// The line gives up while the begun record is being written: the
    /// worker, back from the disk, finds the job withdrawn, journals it so
    /// and never starts it; read back, it is neither an unknown outcome
    /// nor its register's last transaction.
    #[test]
    fn withdrawn_during_the_begun_write_is_journaled_withdrawn() {
        let d = dir();
        let (mut w, h) = worker(&d);
        let p = hand_over(&h);
        let job = w.jobs.try_recv().expect("the job is queued");
        // As if the deadline fired while `start` waited for the disk.
        assert!(p.claim.withdraw());
        w.start(job, None, None);
        assert!(w.running.is_none(), "a withdrawn job started");
        assert!(p.started.try_recv().is_err(), "told started");
        let text = journal_text(&d);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].contains(" begun serial "), "{text}");
        assert!(lines[1].contains(" withdrawn "), "{text}");
        drop(w);
        // Read back at the next start: closed, not recovered as unknown.
        let (journal, contents) = Journal::open(&d.join("journal"), 1 << 20, 0).unwrap();
        let loaded = crate::terminal::generations::load(&contents).unwrap();
        let r = &loaded.records[0];
        assert!(r.withdrawn && r.verdict == Some(Verdict::NotDone) && r.answer.is_none());
        drop(journal);
        let (w, _h) = worker(&d);
        assert_eq!(journal_text(&d), text, "a recovery record was added");
        assert!(
            w.memory.last(1).is_none(),
            "a withdrawn request became the last"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    /// The worker takes it first, the deadline passes after: the line
    /// cannot withdraw it, gets the start and ACKs.
    #[test]
    fn taken_before_the_deadline_it_is_started_whatever_the_clock() {
        let d = dir();
        let (mut w, h) = worker(&d);
        let p = hand_over(&h);
        let job = w.jobs.try_recv().expect("the job is queued");
        w.start(job, None, None);
        let id = w.running.as_ref().map(|r| r.id).expect("started");
        // A deadline already past: the start is still what decides.
        match p.decision(Some(Instant::now() - Duration::from_millis(1))) {
            Decision::Started(got) => assert_eq!(got, id),
            _ => panic!("a started transaction not told as started"),
        }
        assert!(!p.claim.withdraw(), "withdrawn after it started");
        let _ = std::fs::remove_dir_all(&d);
    }
}
