//! The one worker that owns the terminal backend. It alone holds the
//! one-transaction rule: connection and serial threads send it jobs; while
//! a transaction runs, every other transaction gets an immediate busy
//! answer, and identification and duplicata are still answered at once.

use crate::answer::{self, Af, Outcome};
use crate::backend::{Backend, Done, Original, Transaction};
use crate::currency;
use crate::request::{Operation, Request};
use crate::ticket::{self, Facts, TicketSpec};
use crate::tlv::Frame;
use crossbeam_channel::{
    at, bounded, never, select_biased, unbounded, Receiver, Sender, TrySendError,
};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Jobs waiting for the worker; past this the sender answers busy itself.
const QUEUE: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    Tcp,
    Serial,
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Channel::Tcp => "tcp",
            Channel::Serial => "serial",
        })
    }
}

#[derive(Clone, Debug)]
pub struct Origin {
    pub channel: Channel,
    pub peer: String,
}

pub struct Job {
    pub request: Request,
    pub origin: Origin,
    pub reply: Sender<Frame>,
}

/// A transaction that ended, kept per register for cancellation and
/// duplicata.
#[derive(Debug)]
pub struct Completed {
    pub id: u64,
    pub request: Request,
    pub outcome: Outcome,
    pub when: String,
}

#[derive(Default)]
struct Register {
    last: Option<Arc<Completed>>,
    /// The last approved debit not cancelled yet.
    last_debit: Option<Arc<Completed>>,
}

struct Running {
    id: u64,
    job: Job,
    started: Instant,
    deadline: Instant,
}

pub struct Worker {
    backend: Box<dyn Backend>,
    jobs: Receiver<Job>,
    done_tx: Sender<Done>,
    done_rx: Receiver<Done>,
    timeout: Duration,
    running: Option<Running>,
    registers: HashMap<u8, Register>,
    next_id: u64,
}

/// The senders' side: what connection and serial threads hold.
#[derive(Clone)]
pub struct Handle {
    jobs: Sender<Job>,
}

impl Handle {
    /// Hands a request to the worker and waits for its answer.
    pub fn submit(&self, request: Request, origin: Origin) -> Frame {
        let (reply, answer) = bounded(1);
        let frame = request.frame.clone();
        match self.jobs.try_send(Job {
            request,
            origin,
            reply,
        }) {
            Ok(()) => answer.recv().unwrap_or_else(|_| {
                log::error!("worker gone before answering");
                answer::refusal(&frame, Some(Af::Unknown))
            }),
            Err(TrySendError::Full(job)) => {
                log::warn!(
                    "{} {}: worker queue full, answered busy",
                    job.origin.channel,
                    job.origin.peer
                );
                answer::refusal(&frame, None)
            }
            Err(TrySendError::Disconnected(_)) => answer::refusal(&frame, Some(Af::Unknown)),
        }
    }
}

impl Worker {
    pub fn new(backend: Box<dyn Backend>, timeout: Duration) -> (Worker, Handle) {
        let (jobs_tx, jobs) = bounded(QUEUE);
        let (done_tx, done_rx) = unbounded();
        let (s, _) = crate::clock::unix_now();
        let worker = Worker {
            backend,
            jobs,
            done_tx,
            done_rx,
            timeout,
            running: None,
            registers: HashMap::new(),
            // Unique across restarts: seconds since the epoch, then a count.
            next_id: (s.max(0) as u64) * 1000,
        };
        (worker, Handle { jobs: jobs_tx })
    }

    pub fn spawn(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("worker".into())
            .spawn(move || self.run())
    }

    pub fn run(mut self) {
        loop {
            let deadline = match &self.running {
                Some(r) => at(r.deadline),
                None => never(),
            };
            select_biased! {
                recv(self.done_rx) -> done => {
                    if let Ok(done) = done {
                        self.finish(done.id, done.outcome);
                    }
                }
                recv(deadline) -> _ => self.time_out(),
                recv(self.jobs) -> job => match job {
                    Ok(job) => self.handle(job),
                    Err(_) if self.running.is_none() => return,
                    Err(_) => {}
                },
            }
        }
    }

    fn handle(&mut self, job: Job) {
        let req = &job.request;
        log::debug!(
            "{} {}: {} register {:02}",
            job.origin.channel,
            job.origin.peer,
            req.op.name(),
            req.register
        );
        match req.op {
            Operation::Identify => reply(&job, answer::identification(&req.frame)),
            Operation::Duplicata => {
                let a = self.duplicata(req);
                reply(&job, a)
            }
            _ if self.running.is_some() => {
                if let Some(r) = &self.running {
                    log::info!(
                        "{} {}: {} refused busy: tx {} for register {:02} running",
                        job.origin.channel,
                        job.origin.peer,
                        req.op.name(),
                        r.id,
                        r.job.request.register
                    );
                }
                reply(&job, answer::refusal(&req.frame, None))
            }
            _ => self.start(job),
        }
    }

    fn start(&mut self, job: Job) {
        self.next_id += 1;
        let id = self.next_id;
        let req = &job.request;
        let original = match req.op {
            Operation::Cancel => self
                .registers
                .get(&req.register)
                .and_then(|r| r.last_debit.as_ref())
                .map(|c| {
                    Arc::new(Original {
                        id: c.id,
                        amount: c
                            .outcome
                            .amount
                            .as_deref()
                            .and_then(|a| a.parse().ok())
                            .or(c.request.amount)
                            .unwrap_or(0),
                        currency: c.request.currency.unwrap_or(0),
                        outcome: c.outcome.clone(),
                    })
                }),
            _ => None,
        };
        log::info!(
            "tx {id}: {}{} register {:02} from {} {}",
            req.op.name(),
            amount_label(req),
            req.register,
            job.origin.channel,
            job.origin.peer
        );
        let tx = Transaction {
            id,
            request: req.clone(),
            original,
        };
        self.backend.start(&tx, self.done_tx.clone());
        let now = Instant::now();
        self.running = Some(Running {
            id,
            job,
            started: now,
            deadline: now + self.timeout,
        });
    }

    fn time_out(&mut self) {
        if let Some(id) = self.running.as_ref().map(|r| r.id) {
            log::warn!("tx {id}: transaction-timeout reached, aborting it");
            let outcome = self.backend.abort(id);
            self.finish(id, outcome);
        }
    }

    fn finish(&mut self, id: u64, mut outcome: Outcome) {
        let Some(run) = self.running.take_if(|r| r.id == id) else {
            log::debug!("tx {id}: late outcome ignored");
            return;
        };
        let req = run.job.request.clone();
        let when = crate::clock::now().ticket();
        if let (Some(spec), None) = (&req.ticket, &outcome.ticket) {
            outcome.ticket = Some(ticket::zt(spec, &facts(&req, &outcome, &when, false)));
        }
        let frame = answer::result(&req.frame, &outcome);
        let verdict = match outcome.status {
            answer::Status::Approved => "approved".to_string(),
            answer::Status::Declined(af) => format!("declined AF{} ({})", af.code(), af.label()),
        };
        log::info!(
            "tx {id}: {} {verdict} in {:.1} s{}",
            req.op.name(),
            run.started.elapsed().as_secs_f64(),
            outcome
                .auth
                .as_ref()
                .map(|a| format!(", authorisation {a}"))
                .unwrap_or_default()
        );
        if req.op.is_payment() {
            let done = Arc::new(Completed {
                id,
                request: req,
                outcome,
                when,
            });
            let reg = self.registers.entry(done.request.register).or_default();
            if done.outcome.is_approved() {
                match done.request.op {
                    Operation::Debit => reg.last_debit = Some(Arc::clone(&done)),
                    Operation::Cancel => reg.last_debit = None,
                    _ => {}
                }
            }
            reg.last = Some(done);
        }
        reply(&run.job, frame);
    }

    fn duplicata(&self, req: &Request) -> Frame {
        let Some(last) = self
            .registers
            .get(&req.register)
            .and_then(|r| r.last.as_ref())
        else {
            return answer::refusal(&req.frame, Some(Af::Unknown));
        };
        let spec = req
            .ticket
            .clone()
            .or_else(|| last.request.ticket.clone())
            .or_else(|| TicketSpec::from_ck(b"100"))
            .unwrap_or(TicketSpec {
                ck: *b"100",
                copies: ticket::Copies::Customer,
                html: false,
            });
        let mut f = answer::done(&req.frame);
        f.push(
            crate::tlv::tags::ZT,
            ticket::zt(
                &spec,
                &facts(&last.request, &last.outcome, &last.when, true),
            ),
        );
        f
    }
}

fn reply(job: &Job, frame: Frame) {
    // A connection that went away no longer listens; its thread logs that.
    let _ = job.reply.send(frame);
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
    match cc {
        Some("001") => "CARTE BANCAIRE",
        Some("00B") => "CB SANS CONTACT",
        Some("002") => "AMERICAN EXPRESS",
        Some("00D") => "AMEX SANS CONTACT",
        Some("00C") => "CHEQUE",
        _ => "CARTE",
    }
}

/// What the ticket of a transaction shows.
fn facts(req: &Request, o: &Outcome, when: &str, duplicata: bool) -> Facts {
    let minor = o
        .amount
        .as_deref()
        .and_then(|a| a.parse().ok())
        .or(req.amount)
        .unwrap_or(0);
    let cur = req.currency.unwrap_or(978);
    Facts {
        op: Some(req.op),
        approved: o.is_approved(),
        af: match o.status {
            answer::Status::Declined(af) => Some(af),
            answer::Status::Approved => None,
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
    }
}
