//! A transaction's life in the worker: started (its begun record on disk
//! first), timed out, finished or resolved late (its ended record on disk
//! before the answer goes out), and its delivery reported.

use super::status::{amount_label, with_ticket};
use super::{send, Delivery, Handed, Job, Reply, Running, Worker, MAX_UNRESOLVED};
use crate::backend::{Done, Original, Transaction};
use crate::terminal::answered;
use crate::terminal::journal::{self, Event, Record, Verdict};
use crate::terminal::memory::Completed;
use crate::terminal::retry::{Age, Proof, RetryKey};
use crate::wire::answer::{self, Af, Outcome, Status};
use crate::wire::request::{Operation, Request};
use crate::wire::tlv::{tags::*, Frame};
use std::sync::Arc;
use std::time::Instant;

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

fn verdict_of(o: &Outcome) -> Verdict {
    match o.status {
        Status::Approved => Verdict::Approved,
        Status::Declined(Af::NotEnded) => Verdict::Unknown,
        Status::Declined(_) => Verdict::Declined,
    }
}

impl Worker {
    /// What an ended (or resolved) transaction changes for refunds by
    /// reference: an approved debit becomes refundable, a cancellation
    /// approved or of unknown outcome ends that (until it is found
    /// declined), and a refund counts against its debit when
    /// approved (the charged amount) or unknown (the asked amount: money
    /// may have moved, and a refund with a lost answer must not make room
    /// for another).
    pub(super) fn account(&mut self, c: &Completed, cancels: Option<u64>) {
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

    pub(super) fn transaction(&mut self, job: Job) {
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

    pub(super) fn replay_of(&self, key: &RetryKey) -> Option<(Arc<Completed>, Proof)> {
        self.memory
            .replay_of(key, self.settings.retry_window, Instant::now())
    }

    fn check_attempt(&mut self, key: &RetryKey, from: &str) {
        self.memory
            .check_attempt(key, from, self.settings.retry_window, Instant::now());
    }

    /// Starts a transaction. `unproven`: the transaction read back from the
    /// journal whose masked request this one matches without proof that
    /// it is the same (see `RetryKey`): it is not run but ended unknown,
    /// as its outcome is that transaction's if it is the same request and
    /// none if it is not.
    pub(super) fn start(&mut self, job: Job, key: Option<RetryKey>, unproven: Option<u64>) {
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
        // Before the backend starts: a simulator waiting for a decision
        // says so after it.
        crate::logging::events::publish(crate::logging::events::Event::Begun {
            id,
            operation: req.op.name().to_string(),
            amount: Some(amount_label(&req).trim_start().to_string()).filter(|a| !a.is_empty()),
            register: req.register,
            channel: job.origin.channel.to_string(),
            peer: job.origin.peer.clone(),
        });
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
                    immediate: Some(id),
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

    pub(super) fn time_out(&mut self) {
        if let Some(id) = self.running.as_ref().map(|r| r.id) {
            log::warn!("tx {id}: transaction-timeout reached, aborting it");
            let outcome = self.backend.abort(id);
            self.finish(id, outcome);
        }
    }

    /// Puts on disk the records written without a sync of their own.
    pub(super) fn sync_notes(&mut self) {
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
    pub(super) fn keep_status(&mut self, id: u64, kept: Vec<u8>) {
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
    pub(super) fn keep_simulated(&mut self, id: u64, text: String) {
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
    pub(super) fn resolve(&mut self, id: u64, mut outcome: Outcome, not_done: bool) {
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
        let register = req.register;
        if !self.settle(&old, req, outcome, verdict, answer) {
            // The status request describes the register's last transaction.
            log::info!(
                "tx {id}: register {register:02} has had a transaction since; the resolution is in the journal"
            );
        }
    }

    /// Settles a transaction of unknown outcome, whether its resolution is
    /// written now (`resolve`) or read back at start: its record as the
    /// journal now reads it (resolved, so that a rotation carries its
    /// resolution line too), the refunds index, and its register's last
    /// when it still is. False when the register has had a transaction
    /// since (its last stays that one).
    pub(super) fn settle(
        &mut self,
        old: &Completed,
        request: Request,
        outcome: Outcome,
        verdict: Verdict,
        answer: Vec<u8>,
    ) -> bool {
        let id = old.record.id;
        let mut record = old.record.clone();
        record.verdict = Some(verdict);
        record.answer = Some(answer.clone());
        record.resolved = true;
        let register = request.register;
        let settled = Completed {
            request,
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
        if current {
            self.remember(Arc::new(settled));
        }
        current
    }

    pub(super) fn finish(&mut self, id: u64, mut outcome: Outcome) {
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
        // An operation that moves no money (print, telecollection...) is
        // done or not, as `show` says it.
        let detail = match outcome.status {
            Status::Approved if !req.op.is_payment() => "done".to_string(),
            Status::Approved => "approved".to_string(),
            // The journal's word; whether the register got AF07 is logged
            // when its delivery is reported.
            Status::Declined(Af::NotEnded) => answered::UNKNOWN.to_string(),
            Status::Declined(af) if !req.op.is_payment() => {
                format!("not done AF{} ({})", af.code(), af.label())
            }
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
        crate::logging::events::publish(crate::logging::events::Event::Ended {
            id,
            outcome: outcome_line(verdict, &detail, &req, &outcome),
        });
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
                self.note_delivery(id, false);
            }
            (Ok(()), Some(reply)) => {
                let frame = Frame::decode(&done.answer).unwrap_or_else(|(p, _)| p);
                let v2 = run.origin.v2;
                self.undelivered.insert(id, Handed { done, v2 });
                let sent = reply.send(Reply {
                    frame,
                    tx: Some(id),
                    immediate: None,
                });
                if sent.is_err() {
                    // Its connection or line is gone: nobody will report.
                    self.delivery(Delivery {
                        id,
                        result: Err("the channel that asked is gone".into()),
                        immediate: false,
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

    pub(super) fn delivery(&mut self, d: Delivery) {
        if d.immediate {
            return self.immediate_undelivered(d);
        }
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
        crate::logging::events::publish(crate::logging::events::Event::Delivered {
            id: d.id,
            result: d.result.clone(),
        });
        let unknown = done.record.verdict == Some(Verdict::Unknown);
        self.note_delivery(d.id, d.result.is_ok());
        match d.result {
            Ok(()) if unknown => log::info!(
                "tx {}: outcome {}: the register was answered AF07",
                d.id,
                answered::UNKNOWN
            ),
            Ok(()) => {}
            Err(reason) => {
                self.counters.undelivered += 1;
                let what = if unknown {
                    "the register got no answer: AF07 not delivered"
                } else {
                    "answer not delivered"
                };
                log::warn!(
                    "tx {}: {what} to {} ({reason}); {}",
                    d.id,
                    done.record.peer,
                    how_to_fetch(v2, done.request.register)
                );
            }
        }
        self.rotate_if_needed();
    }

    /// The immediate answer did not reach the register: it may take the
    /// request for lost while the transaction runs (or ran). On record,
    /// and said with the transaction's id and how to learn its outcome.
    fn immediate_undelivered(&mut self, d: Delivery) {
        let Err(reason) = d.result else { return };
        let ev = Event::Undelivered {
            reason: format!("immediate answer: {reason}"),
        };
        if let Err(e) = self.journal.note(d.id, &ev) {
            log::error!("{}: {e}", self.journal.path().display());
        }
        self.counters.undelivered += 1;
        log::warn!(
            "tx {}: immediate answer not delivered ({reason}); the transaction runs all the \
             same, its outcome is kept for a status request",
            d.id
        );
        self.rotate_if_needed();
    }

    /// Whether a transaction's answer reached its register, kept with it
    /// while its outcome is unknown: what `concertctl status` says of it,
    /// and what its resolution carries.
    fn note_delivery(&mut self, id: u64, delivered: bool) {
        let with = |c: &Completed| {
            let mut record = c.record.clone();
            record.delivered = Some(delivered);
            Arc::new(Completed {
                request: c.request.clone(),
                outcome: c.outcome.clone(),
                answer: c.answer.clone(),
                record,
                age: c.age,
                key: c.key.clone(),
            })
        };
        if let Some(c) = self.unresolved.get_mut(&id) {
            *c = with(c);
        }
        let last = self
            .memory
            .lasts()
            .find(|c| c.record.id == id && c.record.verdict == Some(Verdict::Unknown))
            .map(|c| with(c));
        if let Some(c) = last {
            // The same transaction again: its place, age and replay key
            // stay as they were (not told to the history a second time).
            self.memory
                .remember(c, self.settings.retry_window, Instant::now());
        }
    }

    pub(super) fn remember(&mut self, c: Arc<Completed>) {
        if !self.history_later {
            crate::backend::history::with(&self.history, |h| {
                h.record(c.record.id, &c.request, &c.outcome)
            });
        }
        self.memory
            .remember(c, self.settings.retry_window, Instant::now());
    }
}

/// An ended transaction's outcome for the watch stream: its verdict's
/// word first (approved, declined, unknown), then what the log says of
/// it; a partial approval with what was charged.
fn outcome_line(verdict: Verdict, detail: &str, req: &Request, outcome: &Outcome) -> String {
    match verdict {
        Verdict::Approved => {
            let charged = outcome.charged(req.amount);
            match (req.amount, req.currency) {
                (Some(asked), Some(c)) if asked != charged => format!(
                    "approved for {} {} (partial)",
                    crate::wire::currency::format_amount(charged, c, false),
                    crate::wire::currency::label(c)
                ),
                _ => "approved".to_string(),
            }
        }
        Verdict::Declined => detail.to_string(),
        Verdict::Unknown | Verdict::NotDone => format!(
            "unknown {}",
            detail.strip_prefix("declined ").unwrap_or(detail)
        ),
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
