//! What the worker says of itself and of past transactions: the status
//! report lines (`concertctl status`, SIGUSR1), status and duplicata
//! answers, and the receipt facts tickets are printed from.

use super::{Running, Worker};
use crate::terminal::answered;
use crate::terminal::journal::{self, Verdict};
use crate::terminal::memory::Completed;
use crate::wire::answer::{self, Af, Outcome, Status};
use crate::wire::currency;
use crate::wire::request::Request;
use crate::wire::ticket::{self, Facts, TicketSpec};
use crate::wire::tlv::{tags::*, Frame};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A past transaction's outcome: the journal's word, and for an unknown
/// one whether its register was answered AF07 or got nothing.
fn outcome_words(c: &Completed) -> String {
    match c.record.verdict {
        Some(Verdict::Unknown) | None => format!(
            "{} ({})",
            answered::UNKNOWN,
            answered::reached(&c.record, c.request.immediate)
        ),
        Some(v) => v.word().to_string(),
    }
}

impl Worker {
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
    pub(super) fn status_lines(&self) -> Vec<String> {
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
                outcome_words(c)
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
                outcome_words(c)
            ));
        }
        out
    }

    pub(super) fn status(&mut self, req: &Request) -> Frame {
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
    pub(super) fn simulated(&self) -> bool {
        self.terminal == crate::config::Terminal::Simulator
    }

    pub(super) fn duplicata(&self, req: &Request) -> Frame {
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

/// `2026-11-26T16:07:29.100Z` -> `26/11/2026 16:07:29` in local time.
fn ticket_time(stamp: &str) -> String {
    match journal::unix_time(stamp) {
        Some(s) => crate::wire::clock::local(s, 0).ticket(),
        None => crate::wire::clock::now().ticket(),
    }
}

pub(super) fn amount_label(req: &Request) -> String {
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
