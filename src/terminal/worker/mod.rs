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

mod recovery;
mod reload;
mod status;
mod transaction;

pub use recovery::{recovery_answer, reread};
pub use status::with_ticket;

use crate::backend::{Backend, Done, Note};
use crate::terminal::handover::Claim;
use crate::terminal::journal::{Journal, Record};
use crate::terminal::memory::{Completed, Memory};
use crate::terminal::refunds::Refunds;
use crate::terminal::retry::RetryKey;
use crate::wire::answer;
use crate::wire::request::{Operation, Request};
use crate::wire::tlv::Frame;
use crossbeam_channel::{at, bounded, never, select_biased, Receiver, Sender, TrySendError};
use std::collections::{HashMap, HashSet};
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
    /// `A011`), not an outcome: the transaction it started, which its
    /// sender reports a failed delivery under.
    pub immediate: Option<u64>,
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
    /// The immediate answer (`BA=1`, V2 `A011`) of the transaction, not
    /// its outcome's.
    pub immediate: bool,
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
    stage: Arc<crate::backend::stage::Stage>,
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

/// The senders' side: what connection and serial threads hold.
#[derive(Clone)]
pub struct Handle {
    jobs: Sender<Job>,
    deliveries: Sender<Delivery>,
    /// What the simulator is told to do, for the ways in to shape answers
    /// and for the control socket.
    stage: Arc<crate::backend::stage::Stage>,
    /// The worker's `turned_busy`.
    turned_busy: Arc<AtomicU64>,
}

impl Handle {
    pub fn stage(&self) -> &Arc<crate::backend::stage::Stage> {
        &self.stage
    }

    /// Hands a request to the worker and waits for its answer. `None`: no
    /// answer may be sent (its outcome could not be journaled).
    pub fn submit(&self, request: Request, origin: Origin) -> Option<Reply> {
        self.submit_watching(request, origin, None)
    }

    /// As [`Handle::submit`], calling `watch`'s function every `watch`'s
    /// period while the answer is awaited (a connection looks whether its
    /// register is still there).
    pub fn submit_watching(
        &self,
        request: Request,
        origin: Origin,
        watch: Option<(Duration, &mut dyn FnMut())>,
    ) -> Option<Reply> {
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
                immediate: None,
            });
        }
        // Closed without an answer: the worker could not journal the
        // outcome (or stopped), and a register must not get one then.
        let Some((every, tick)) = watch else {
            return answer.recv().ok();
        };
        loop {
            match answer.recv_timeout(every) {
                Ok(r) => return Some(r),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => tick(),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return None,
            }
        }
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
        let _ = self.deliveries.send(Delivery {
            id,
            result,
            immediate: false,
        });
    }

    /// The immediate answer of transaction `id` could not be delivered:
    /// journaled, since its register does not know that it runs.
    pub fn immediate_undelivered(&self, id: u64, reason: String) {
        let _ = self.deliveries.send(Delivery {
            id,
            result: Err(reason),
            immediate: true,
        });
    }
}

fn unix_now() -> i64 {
    crate::wire::clock::unix_now().0
}

impl Worker {
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
}

fn send(reply: &Sender<Reply>, frame: Frame, tx: Option<u64>) {
    // A connection that went away no longer listens; its thread logs that.
    let _ = reply.send(Reply {
        frame,
        tx,
        immediate: None,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::request;

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
mod queue_and_window_tests {
    use super::*;
    use crate::terminal::journal::{self, Verdict};
    use crate::terminal::retry::Proof;
    use crate::wire::request;

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
        let (w, h, _) = testing::on(journal, contents, Duration::from_secs(1), retry_window);
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
    use crate::terminal::journal::Verdict;
    use crate::wire::request;

    const DEBIT: &str = "CZ0040320CA00201CB0048000CD0010CE003978";

    /// A worker, not running, on a journal in `dir` (kept for reading).
    fn worker(dir: &std::path::Path) -> (Worker, Handle) {
        let (journal, contents) = Journal::open(&dir.join("journal"), 1 << 20, 0).unwrap();
        let (w, h, _) = testing::on(journal, contents, Duration::from_secs(5), Duration::ZERO);
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
        let loaded = crate::terminal::journal::read::load(&contents).unwrap();
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

/// What the worker's tests share.
#[cfg(test)]
pub(super) mod testing {
    use super::*;

    /// A worker on the simulator, not running, on `journal` and what start
    /// read of it.
    pub fn on(
        journal: Journal,
        contents: crate::terminal::journal::Contents,
        transaction_timeout: Duration,
        retry_window: Duration,
    ) -> (Worker, Handle, Sender<Control>) {
        Worker::new(
            Box::new(crate::backend::simulator::Simulator::new(Duration::ZERO)),
            crate::config::Terminal::Simulator,
            journal,
            contents,
            Settings {
                transaction_timeout,
                retry_window,
                extensions: crate::config::AnswerExtensions::None,
                serial_number: "test".into(),
            },
            Arc::default(),
        )
    }
}
