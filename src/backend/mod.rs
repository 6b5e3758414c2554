//! The interface between the worker and whatever performs transactions.
//! A backend never blocks the worker: `start` returns at once and the
//! outcome arrives later on the `done` channel.

pub mod exec;
pub mod history;
pub mod relay;
pub mod simulator;
pub mod stage;

use crate::wire::answer::Outcome;
use crate::wire::request::Request;
use crossbeam_channel::Sender;
use std::sync::Arc;

pub use crate::wire::channel::Channel;

/// A transaction handed to a backend.
#[derive(Clone, Debug)]
pub struct Transaction {
    pub id: u64,
    pub request: Request,
    /// Where the request came from (a program sees it as `tcp` or `serial`).
    pub channel: Channel,
    /// For a cancellation: the register's last approved debit, if any.
    pub original: Option<Arc<Original>>,
}

/// What a cancellation needs to know of the debit it cancels.
#[derive(Clone, Debug)]
pub struct Original {
    pub id: u64,
    pub amount: u64,
    pub currency: u16,
    pub outcome: Outcome,
}

/// A finished transaction, reported by the backend.
#[derive(Debug)]
pub struct Done {
    pub id: u64,
    pub outcome: Outcome,
    /// A later answer for a transaction already closed as unknown (a relay
    /// that asked its upstream for the status).
    pub resolved: bool,
    /// What a relay learned besides the outcome; `None` for every other
    /// backend.
    pub note: Option<Note>,
}

/// A relay's report that is not (only) an outcome.
#[derive(Debug)]
pub enum Note {
    /// Sent before the request goes upstream: the upstream's status answer
    /// (CD=T), card numbers masked, kept to tell later whether a lost
    /// request ran there. `outcome` means nothing with it: the worker only
    /// journals the frame.
    UpstreamStatus(Vec<u8>),
    /// With `resolved`: nothing was charged. The upstream still reports
    /// the transaction it reported before the request, so the request
    /// never ran there; or a refusal that may be the request's or an
    /// earlier one. The register keeps its "not ended" answer.
    NotDone,
    /// The simulator's plan or decision for the running transaction (its
    /// quirks, what applies and what does not), sent before its outcome:
    /// the worker journals it with the transaction. `outcome` means
    /// nothing with it.
    Simulated(String),
}

/// The amount rule every backend's outcome passes before it becomes an
/// answer: an approval reports the requested amount, or a smaller one only
/// when the register allowed partial payment (`BF=1`). A backend that
/// reports any other amount contradicts what the register asked for, so
/// nobody knows what was charged: the outcome is unknown (`AF=07`) and the
/// log says what the backend claimed. A refusal always echoes the
/// request's amount.
pub fn amount_rule(id: u64, who: &str, mut o: Outcome, req: &Request) -> Outcome {
    let Some(cb) = o.amount.take() else {
        return o;
    };
    if !o.is_approved() {
        return o;
    }
    let reported = (!cb.is_empty() && cb.len() <= 12 && cb.bytes().all(|b| b.is_ascii_digit()))
        .then(|| cb.parse::<u64>().ok())
        .flatten();
    match (reported, req.amount) {
        // The whole amount, written another way (`0100` for `100`).
        (Some(r), Some(asked)) if r == asked => o,
        (Some(r), Some(asked)) if r < asked && req.partial_ok => {
            o.amount = Some(cb);
            o
        }
        _ => {
            log::error!(
                "tx {id}: {who} approved CB={} for a request of CB={}{}: it contradicts the \
                 request, so the outcome is unknown (AF07)",
                crate::wire::pan::scrub(cb.as_bytes()),
                req.amount_text().unwrap_or("(none)"),
                if req.partial_ok {
                    ""
                } else {
                    " without partial payment (BF=1)"
                }
            );
            Outcome::declined(crate::wire::answer::Af::NotEnded)
        }
    }
}

/// How a backend starts its threads: `std::thread::Builder::spawn`, or in
/// unit tests a spawner that fails, to prove what a failed spawn answers.
pub(crate) type Spawn = fn(std::thread::Builder, Box<dyn FnOnce() + Send>) -> std::io::Result<()>;

/// The spawner of the release binary.
pub(crate) fn spawn_thread(
    b: std::thread::Builder,
    f: Box<dyn FnOnce() + Send>,
) -> std::io::Result<()> {
    b.spawn(f).map(drop)
}

/// A backend could not start the thread that would run transaction `id`.
/// Each backend spawns that thread before anything leaves concertd (no
/// program run, no byte sent upstream), so the refusal is definite: declined
/// (AF00) now, rather than silence until transaction-timeout and an unknown
/// outcome (AF07) the register would have to resolve.
pub(crate) fn decline_unstarted(id: u64, what: &str, e: &std::io::Error, done: &Sender<Done>) {
    log::error!("tx {id}: cannot start a thread for {what}: {e}; declined, nothing was sent");
    let _ = done.send(Done {
        id,
        outcome: Outcome::declined(crate::wire::answer::Af::Unknown),
        resolved: false,
        note: None,
    });
}

pub trait Backend: Send {
    fn name(&self) -> &'static str;

    /// Starts the transaction; its outcome is sent on `done` with the same id.
    fn start(&mut self, tx: &Transaction, done: Sender<Done>);

    /// The transaction ran past `transaction-timeout`: stop it and say what
    /// to report. An outcome it sends on `done` afterwards resolves the
    /// transaction when it is definite (not AF07): send one only when it is
    /// true, such as a program that exited by itself, never for a
    /// transaction this abort stopped.
    fn abort(&mut self, id: u64) -> Outcome;

    /// A reload: take the new configuration from the next transaction on.
    fn reload(&mut self, _cfg: &crate::config::Config) {}

    /// The register asked for the status of its last transaction: a backend
    /// still resolving an unknown outcome can try at once.
    fn status_requested(&mut self, _register: u8) {}

    /// At start: `tx` ended with an unknown outcome before a restart, and
    /// `kept` is the upstream status journaled before its request went
    /// upstream. A backend that can still learn the outcome does so and
    /// reports it on `done` as `resolved`.
    fn resume(&mut self, _tx: &Transaction, _kept: &[u8], _done: Sender<Done>) {}

    /// The worker's history of journaled transactions (their ACs and CFs),
    /// given when the backend takes over, before `resume`: what a backend
    /// that learns outcomes later must not take for another transaction's.
    fn share_history(&mut self, _history: history::Shared) {}
}

/// The backend a configuration names. A program that cannot run is an
/// error here, so that it is a startup (or reload) error. A simulator
/// takes its orders from `stage`, the service's one.
pub fn build(
    cfg: &crate::config::Config,
    stage: &std::sync::Arc<crate::backend::stage::Stage>,
) -> Result<Box<dyn Backend>, String> {
    use crate::config::Terminal;
    Ok(match &cfg.terminal {
        Terminal::Simulator => Box::new(crate::backend::simulator::Simulator::configured(
            cfg,
            std::sync::Arc::clone(stage),
        )),
        Terminal::Exec { program, args } => {
            Box::new(crate::backend::exec::Exec::new(program, args)?)
        }
        Terminal::Relay { link, v2 } => Box::new(crate::backend::relay::Relay::new(
            link,
            *v2,
            cfg.transaction_timeout,
        )),
    })
}
