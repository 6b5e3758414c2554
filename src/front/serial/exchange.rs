//! The exchange with the register: the [`Line`] takes its frames through the
//! link layer and sends the answers; its [`Desk`] hands the requests to the
//! worker and keeps the transactions whose answer is not sent yet.

use super::{patience, port_settings, request_timer, timers, Bell, Conf};
use super::{MAX_FRAME, POLL, TAKE_WITHIN};
use crate::backend::stage::Answer;
use crate::config::plan::Quirk;
use crate::config::SerialProtocol;
use crate::front::dispatch::{self, Job, Kind};
use crate::front::findings::{Answered, Findings, Seen, Who};
use crate::link::session::{self, Sent, Take, TRIES};
use crate::link::{is_stalled, Link, Port};
use crate::logging::floodgate::{self, Floodgate, Source};
use crate::terminal::worker::{Channel, Decision, Handle, Origin, Reply};
use crate::wire::assemble::{Assembler, Progress};
use crate::wire::framing::{ENQ, EOT, ETB, ETX, STX};
use crate::wire::pan;
use crate::wire::request::Request;
use crate::wire::tlv::{tags, Frame};
use crossbeam_channel::Receiver;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

/// A transaction accepted on this line whose answer is not sent yet:
/// not ready, or held back by the simulator's `slow-enq`.
pub(super) struct Waiting {
    reply: Receiver<Reply>,
    kind: Kind,
    /// The request, for the answer's shape (`terminal-profile`).
    asked: Frame,
    /// Its answer rings the bell: the line may sleep until it comes.
    rung: bool,
    /// `slow-enq`: the answer is ready and goes out at this instant, with
    /// these quirks (taken from the stage already). The line goes on
    /// serving the register meanwhile, as a terminal does.
    due: Option<(Instant, Answer)>,
}

impl Waiting {
    fn new(reply: Receiver<Reply>, kind: Kind, asked: Frame, rung: bool) -> Waiting {
        Waiting {
            reply,
            kind,
            asked,
            rung,
            due: None,
        }
    }
}

pub(super) struct Line<'a> {
    link: Link,
    pub(super) desk: Desk<'a>,
    updates: &'a Receiver<Conf>,
}

/// What takes the register's frames: the dispatch to the worker, and the
/// transactions accepted on this line whose answer is not sent yet (the
/// register may send a new request before fetching an answer).
pub(super) struct Desk<'a> {
    pub(super) conf: Conf,
    bell: Option<&'a Arc<Bell>>,
    worker: &'a Handle,
    floodgate: &'a Arc<Floodgate>,
    findings: &'a Arc<Findings>,
    /// The line as the floodgate counts it.
    source: Source,
    path: &'a str,
    pub(super) waiting: Vec<Waiting>,
}

/// Is this the worker's busy answer (`AE=01`, no AF) to a transaction?
fn is_busy(req: &Request, reply: &Reply) -> bool {
    reply.tx.is_none()
        && req.op.occupies_terminal()
        && reply.frame.get(tags::AE) == Some(b"01")
        && !reply.frame.has(tags::AF)
}

/// A V2 request's register number, when its two digits are one.
fn v2_register(v: &crate::wire::v2::V2Request) -> Option<u8> {
    std::str::from_utf8(&v.pos).ok()?.parse().ok()
}

/// An answer to send once the register has closed its session, and the
/// request it answers when it could be read.
type Now = Option<(Kind, Reply, Option<Frame>)>;

impl Desk<'_> {
    /// Logs a line the register can cause at will: the first few of each
    /// kind in a minute, then a count.
    fn flood(&self, kind: floodgate::Kind, level: log::Level, line: impl FnOnce() -> String) {
        if log::log_enabled!(level) {
            self.floodgate.note(self.source.clone(), kind, level, line);
        }
    }

    fn origin(&self, v2: bool) -> Origin {
        Origin {
            channel: Channel::Serial,
            peer: self.path.to_string(),
            v2,
        }
    }

    /// The register a request or an answer names on this line.
    fn who(&self, ca: Option<u8>) -> Who {
        Who {
            channel: Channel::Serial,
            peer: self.path.to_string(),
            ca,
        }
    }

    /// Tells the findings about a request read on this line.
    fn seen(&self, payload: &[u8], v3: bool, job: &Job) {
        let (ca, op, amount) = match job {
            Job::Submit(req, _) => (Some(req.register), Some(req.op), req.amount),
            Job::Refuse(Kind::V2(v), ..) => (v2_register(v), None, None),
            Job::Refuse(_, reply, _) => (
                reply.frame.text(tags::CA).and_then(|c| c.parse().ok()),
                None,
                None,
            ),
            Job::Nak(_) => (None, None, None),
        };
        let seen = Seen {
            body: payload,
            v2: !v3,
            segments: 1,
            op,
            amount,
            ..Seen::default()
        };
        self.findings.request(&self.who(ca), &seen);
    }

    fn is_v3(&self, payload: &[u8]) -> bool {
        match self.conf.settings.protocol {
            SerialProtocol::V3 => true,
            SerialProtocol::V2 => false,
            SerialProtocol::Auto => payload.starts_with(b"CZ"),
        }
    }

    /// Decides on a good frame: NAK it (to have it again), or ACK it, with
    /// an answer to send at once or none (the transaction started).
    fn request(&mut self, payload: &[u8]) -> Take<Now> {
        // From the frame's last byte, as the register counts.
        let by = Instant::now() + TAKE_WITHIN;
        let v3 = self.is_v3(payload);
        let job = dispatch::job(payload, v3, &self.conf.currencies);
        self.seen(payload, v3, &job);
        let transaction = matches!(&job, Job::Submit(req, _) if req.op.occupies_terminal());
        if self.worker.stage().frame(transaction, payload) {
            return Take::Nak("simulator nak-first".into());
        }
        match job {
            Job::Submit(req, kind) => self.submit(req, kind, by),
            Job::Refuse(kind, reply, why) => {
                self.flood(floodgate::Kind::BadRequest, log::Level::Info, || {
                    format!("serial {}: {why}", self.path)
                });
                Take::Ack(Some((kind, reply, None)))
            }
            Job::Nak(why) => Take::Nak(why),
        }
    }

    /// Hands a request to the worker; the frame is ACKed only once the
    /// worker has started it (or answered it at once); a busy terminal NAKs
    /// it, since V2 registers count an ACKed request as accepted, and so
    /// does a terminal that has not taken it `by` then: withdrawn, it never
    /// starts.
    fn submit(&mut self, req: Request, kind: Kind, by: Instant) -> Take<Now> {
        let v2 = matches!(kind, Kind::V2(_));
        let pending = self.worker.hand_over(req.clone(), self.origin(v2));
        match pending.decision(Some(by)) {
            Decision::Started(_) => {
                // Waiting before the ACK: if the ACK cannot be written
                // (device gone), the answer still goes out once the line
                // is back.
                let (reply, rung) = self.forward(pending.reply);
                self.waiting
                    .push(Waiting::new(reply, kind, req.frame.clone(), rung));
                Take::Ack(None)
            }
            Decision::Answered(reply) if is_busy(&req, &reply) => {
                // The exam reads TCP only: the script line this busy answer
                // took is not left for a TCP register's busy answer to claim.
                let _ = self.worker.stage().busy_taken();
                self.flood(floodgate::Kind::BadRequest, log::Level::Info, || {
                    format!("serial {}: {} refused busy: NAK", self.path, req.op.name())
                });
                Take::Refuse
            }
            Decision::Answered(reply) => Take::Ack(Some((kind, reply, Some(req.frame.clone())))),
            Decision::Gone => Take::Nak("worker unavailable".into()),
            Decision::Withdrawn => {
                log::warn!(
                    "serial {}: {} register {:02} not taken within {}: NAK, withdrawn, \
                     it will not run",
                    self.path,
                    req.op.name(),
                    req.register,
                    crate::config::fmt_duration(TAKE_WITHIN)
                );
                Take::Refuse
            }
        }
    }

    /// The answer of a transaction, rung in: a small thread waits for it
    /// and rings the bell, so that the line can sleep in poll(2) meanwhile
    /// (true). Without a bell (the fuzz target's fake port) or a thread,
    /// the line polls for it (false).
    fn forward(&self, reply: Receiver<Reply>) -> (Receiver<Reply>, bool) {
        let Some(bell) = self.bell.cloned() else {
            return (reply, false);
        };
        let (tx, rx) = crossbeam_channel::bounded(2);
        // The receiver goes over only once the thread exists, so that it
        // stays ours if it cannot be started.
        let (give, given) = crossbeam_channel::bounded::<Receiver<Reply>>(1);
        let spawned = std::thread::Builder::new()
            .name("serial-answer".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let Ok(reply) = given.recv() else { return };
                for r in reply.iter() {
                    if tx.send(r).is_err() {
                        break;
                    }
                    bell.ring();
                }
                // Closed without an answer (not journaled): said too.
                drop(tx);
                bell.ring();
            });
        match spawned {
            Ok(_) => {
                let _ = give.send(reply);
                (rx, true)
            }
            Err(e) => {
                log::warn!("serial {}: cannot start a thread ({e}): polling", self.path);
                (reply, false)
            }
        }
    }
}

impl<'a> Line<'a> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        port: Box<dyn Port>,
        conf: Conf,
        updates: &'a Receiver<Conf>,
        bell: Option<&'a Arc<Bell>>,
        worker: &'a Handle,
        floodgate: &'a Arc<Floodgate>,
        findings: &'a Arc<Findings>,
        path: &'a str,
        waiting: Vec<Waiting>,
    ) -> Line<'a> {
        let name = format!("serial {path}");
        Line {
            link: Link::new(port, name.as_str())
                .with_patience(patience(&conf.settings))
                .with_floodgate(Arc::clone(floodgate)),
            desk: Desk {
                conf,
                bell,
                worker,
                floodgate,
                findings,
                source: Source::Line(name.into()),
                path,
                waiting,
            },
            updates,
        }
    }

    fn path(&self) -> &'a str {
        self.desk.path
    }

    /// No input pending: blocks until the register sends a byte (true), or
    /// the bell rings for a new configuration or an answer, or an answer
    /// held back by slow-enq is due (false).
    fn sleep(&mut self) -> io::Result<bool> {
        let (Some(fd), Some(bell)) = (self.link.poll_fd(), self.desk.bell) else {
            return Ok(true);
        };
        let mut fds = [
            libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: bell.read.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // Until the first answer held back by slow-enq is due, if any.
        let timeout = self
            .desk
            .waiting
            .iter()
            .filter_map(|w| w.due.as_ref().map(|(at, _)| *at))
            .min()
            .map_or(-1, |at| {
                let ms = at.saturating_duration_since(Instant::now()).as_millis() + 1;
                i32::try_from(ms).unwrap_or(i32::MAX)
            });
        // SAFETY: poll(2) on two valid descriptors.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            };
        }
        if n == 0 {
            return Ok(false);
        }
        if fds[1].revents != 0 {
            bell.drain();
            return Ok(fds[0].revents != 0);
        }
        // Input, or a hang-up or error that the read reports.
        Ok(true)
    }

    pub(super) fn serve(&mut self) -> io::Error {
        match self.serve_inner() {
            Ok(()) => io::Error::other("stopped"),
            Err(e) => e,
        }
    }

    fn serve_inner(&mut self) -> io::Result<()> {
        loop {
            match self.step() {
                Ok(()) => {}
                // The register does not read: that session is over, not
                // the device.
                Err(e) if is_stalled(&e) => self.stalled(&e),
                Err(e) => return Err(e),
            }
        }
    }

    /// What is left of a session whose write stalled goes: the bytes the
    /// register has not read, and those it sent meanwhile.
    fn stalled(&mut self, e: &io::Error) {
        self.link.discard();
        let path = self.path();
        self.desk
            .flood(floodgate::Kind::LinkError, log::Level::Warn, || {
                format!("serial {path}: {e}: session ended, line kept open")
            });
    }

    /// One turn of the idle line: an answer to send, a reload to take, or
    /// the register's next byte and the session it starts.
    fn step(&mut self) -> io::Result<()> {
        self.answer_if_ready()?;
        // A reload applies between link sessions.
        if let Some(c) = self.updates.try_iter().last() {
            let reopen = port_settings(&c.settings) != port_settings(&self.desk.conf.settings);
            self.link.set_patience(patience(&c.settings));
            self.desk.conf = c;
            if reopen {
                return Err(io::Error::other("device settings changed"));
            }
        }
        let may_sleep = self.desk.waiting.iter().all(|w| w.rung);
        if !self.link.has_input() && may_sleep && !self.sleep()? {
            return Ok(());
        }
        let Some(b) = self.link.byte(Instant::now() + POLL)? else {
            return Ok(());
        };
        let settings = &self.desk.conf.settings;
        match b {
            ENQ if self.desk.worker.stage().enq() => {
                log::info!("serial {}: ENQ not ACKed (simulator no-ack)", self.path());
            }
            ENQ => {
                let t = timers(settings);
                let whole = request_timer(&self.desk.conf);
                let desk = &mut self.desk;
                let now = session::take(&mut self.link, &t, MAX_FRAME, whole, |payload| {
                    Ok(desk.request(&payload))
                })?;
                if let Some((kind, reply, asked)) = now.flatten() {
                    self.answer(&kind, reply, asked.as_ref())?;
                }
            }
            STX => self.outside()?,
            b'C' if settings.protocol != SerialProtocol::V2 => {
                let start = Instant::now();
                match self.link.byte(start + settings.frame_timeout)? {
                    Some(b'Z') => self.raw(start)?,
                    Some(other) => {
                        // Not a raw request: look at that byte again
                        // (it may be the ENQ of a session).
                        self.link.unread(other);
                        self.stray(b'C');
                    }
                    None => self.stray(b'C'),
                }
            }
            b => self.stray(b),
        }
        Ok(())
    }

    /// A frame outside any session (STX read on the idle line): its
    /// register goes on with a session that is over for us, after three
    /// NAKs or having missed our EOT, or it is noise. It is read to its
    /// LRC and never taken (its `CZ` is not the start of a raw V3 request),
    /// and not answered: the idle line ignores what is not an ENQ, and a
    /// NAK then would reach a register that has opened a session since as
    /// the answer to its ENQ.
    fn outside(&mut self) -> io::Result<()> {
        let s = &self.desk.conf.settings;
        let (frame, until) = (
            s.frame_timeout,
            Instant::now() + self.desk.conf.request_timeout,
        );
        let by = || (Instant::now() + frame).min(until);
        let whole = loop {
            match self.link.byte(by())? {
                None => break false,
                Some(ETX | ETB) => {
                    // The LRC, whatever its value.
                    let _ = self.link.byte(by())?;
                    break true;
                }
                // A session starts, or ends: that byte is the idle line's.
                Some(b @ (ENQ | EOT)) => {
                    self.link.unread(b);
                    break false;
                }
                Some(_) => {}
            }
        };
        let path = self.path();
        self.desk
            .flood(floodgate::Kind::LinkError, log::Level::Info, || {
                format!(
                    "serial {path}: frame outside a session{}: not taken, not answered",
                    if whole { "" } else { " (cut)" }
                )
            });
        Ok(())
    }

    fn stray(&self, b: u8) {
        let path = self.path();
        self.desk
            .flood(floodgate::Kind::Noise, log::Level::Debug, || {
                format!("serial {path}: stray byte 0x{b:02x} ignored")
            });
    }

    /// Sends the answer of the transaction accepted on this line once the
    /// worker has it.
    fn answer_if_ready(&mut self) -> io::Result<()> {
        let mut i = 0;
        let now = Instant::now();
        while i < self.desk.waiting.len() {
            if self.desk.waiting[i]
                .due
                .as_ref()
                .is_some_and(|(at, _)| *at > now)
            {
                i += 1;
                continue;
            }
            match self.desk.waiting[i].reply.try_recv() {
                Ok(reply) => {
                    let w = self.desk.waiting.remove(i);
                    let taken = w.due.map(|(_, q)| q);
                    self.send_answer(&w.kind, reply, Some(&w.asked), taken)?;
                }
                Err(crossbeam_channel::TryRecvError::Empty) => i += 1,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    // The outcome could not be journaled: no answer may go out.
                    self.desk.waiting.remove(i);
                }
            }
        }
        Ok(())
    }

    /// Sends an answer given at once (no transaction waits for it).
    fn answer(&mut self, kind: &Kind, reply: Reply, asked: Option<&Frame>) -> io::Result<()> {
        self.send_answer(kind, reply, asked, None)
    }

    /// Sends an answer the way its request came, in the terminal's shape
    /// (`terminal-profile`, from `asked` when the request could be read),
    /// and reports its delivery. `taken`: the simulator's quirks already
    /// taken for an answer that slow-enq held back.
    fn send_answer(
        &mut self,
        kind: &Kind,
        reply: Reply,
        asked: Option<&Frame>,
        taken: Option<Answer>,
    ) -> io::Result<()> {
        let deferred = taken.is_some();
        // A held-back answer (slow-enq) was shaped before it was held.
        let reply = if deferred {
            reply
        } else {
            dispatch::shaped(kind, reply, asked, self.desk.conf.profile)
        };
        let quirks = taken
            .or_else(|| reply.tx.and_then(|id| self.desk.worker.stage().answer(id)))
            .unwrap_or_default();
        let id = reply.tx.unwrap_or_default();
        let ca = match kind {
            Kind::V2(v) => v2_register(v),
            _ => reply.frame.text(tags::CA).and_then(|c| c.parse().ok()),
        };
        let who = self.desk.who(ca);
        let mut answered = Answered {
            op: reply
                .frame
                .get(tags::CD)
                .and_then(crate::wire::operation::Operation::from_cd),
            approved: reply.frame.get(tags::AE) == Some(b"10"),
            af: reply
                .frame
                .get(tags::AF)
                .and_then(crate::wire::answer::Af::from_code),
            transaction: reply.tx.is_some(),
            amount: reply.frame.text(tags::CB).and_then(|t| t.parse().ok()),
            ..Answered::default()
        };
        if let Some(why) = quirks.withhold {
            log::info!("tx {id}: {why}");
            self.desk.worker.delivered(id, Err(why.to_string()));
            answered.withheld = true;
            answered.delivered = Some(Err(why.to_string()));
            self.desk.findings.answered(&who, &answered);
            return Ok(());
        }
        let raw = matches!(kind, Kind::Raw);
        if raw {
            for q in &quirks.quirks {
                log::info!("tx {id}: {q} not applied: raw V3 has no link session");
            }
        }
        let bad_lrc = quirks.has(Quirk::BadLrc) && !raw;
        if let (Some(d), false, false) = (quirks.slow_enq(), raw, deferred) {
            log::info!(
                "tx {id}: our ENQ {} late (slow-enq)",
                crate::config::fmt_duration(d)
            );
            // Held back, never slept on: the register may open a session
            // meanwhile (a status request), and is ACKed.
            let (tx, rx) = crossbeam_channel::bounded(1);
            let _ = tx.send(reply);
            self.desk.waiting.push(Waiting {
                reply: rx,
                kind: kind.clone(),
                // Shaped already: not read again.
                asked: Frame::new(),
                rung: true,
                due: Some((Instant::now() + d, quirks)),
            });
            return Ok(());
        }
        let sent: io::Result<Result<(), String>> = match kind {
            Kind::Raw => {
                let bytes = dispatch::payload(kind, &reply);
                log::trace!("serial {}: > {}", self.path(), pan::scrub(&bytes));
                match self.link.send(&bytes) {
                    Ok(()) => Ok(Ok(())),
                    // The line drops what the register did not read.
                    Err(e) if is_stalled(&e) => Err(e),
                    Err(e) => Ok(Err(e.to_string())),
                }
            }
            Kind::V3 => {
                let blocks = self.blocks(reply.frame.clone());
                self.send_session(&blocks, bad_lrc)
            }
            Kind::V2(_) => self.send_session(&[dispatch::payload(kind, &reply)], bad_lrc),
        };
        // The device failing mid-answer is a failed delivery too: report
        // it before the line is opened again.
        let (result, device) = match sent {
            Ok(r) => (r, Ok(())),
            Err(e) => (Err(e.to_string()), Err(e)),
        };
        if let Err(e) = &result {
            let path = self.path();
            let line = || format!("serial {path}: answer not delivered: {e}");
            if reply.tx.is_some() {
                log::warn!("{}", line());
            } else if let Some(id) = reply.immediate {
                // The worker journals it and says it with the id.
                self.desk.worker.immediate_undelivered(id, e.clone());
            } else {
                // No transaction's: the register may ask and NAK the
                // answer as often as it likes.
                self.desk
                    .flood(floodgate::Kind::LinkError, log::Level::Warn, line);
            }
        }
        if let Some(id) = reply.tx {
            answered.delivered = Some(result.clone());
            self.desk.findings.answered(&who, &answered);
            self.desk.worker.delivered(id, result);
        }
        device
    }

    /// A V3 answer in frames of at most 512 data bytes: a longer one loses
    /// its ticket, or with `serial-split yes` goes in several blocks.
    fn blocks(&self, frame: Frame) -> Vec<Vec<u8>> {
        let bytes = frame.encode();
        if bytes.len() <= MAX_FRAME {
            return vec![bytes];
        }
        if self.desk.conf.settings.split {
            return bytes.chunks(MAX_FRAME).map(<[u8]>::to_vec).collect();
        }
        let short = frame.without(tags::ZT).encode();
        if short.len() <= MAX_FRAME {
            log::warn!(
                "serial {}: answer of {} bytes is over {MAX_FRAME}: ticket dropped (serial-split no)",
                self.path(),
                bytes.len()
            );
            return vec![short];
        }
        // Still too long (a long CF echo): blocks are the only way to keep
        // frames within 512 bytes without dropping the register's data.
        log::warn!(
            "serial {}: answer of {} bytes is over {MAX_FRAME} even without its ticket: \
             sent in ETB blocks",
            self.path(),
            bytes.len()
        );
        bytes.chunks(MAX_FRAME).map(<[u8]>::to_vec).collect()
    }

    /// The terminal's session, each block tried three times. The outer
    /// error is the device failing; the inner one an answer that did not
    /// get through.
    fn send_session(
        &mut self,
        blocks: &[Vec<u8>],
        bad_lrc: bool,
    ) -> io::Result<Result<(), String>> {
        let t = timers(&self.desk.conf.settings);
        Ok(
            match session::send_quirky(&mut self.link, &t, blocks, TRIES, bad_lrc)? {
                Sent::Done => Ok(()),
                Sent::Unopened => Err(format!("no ACK to {TRIES} ENQ")),
                Sent::Refused | Sent::Unanswered => {
                    Err(format!("frame not acknowledged after {TRIES} tries"))
                }
            },
        )
    }

    /// A V3 request with no link layer (`CZ` already read, its `C` at
    /// `start`): it ends at a whole element followed by `request-gap` of
    /// silence, or at CR/LF, and is answered the same way, raw. At
    /// `request-timeout` from its first byte, it is what has come, as on
    /// TCP.
    fn raw(&mut self, start: Instant) -> io::Result<()> {
        let until = start + self.desk.conf.request_timeout;
        let mut asm = Assembler::default();
        let mut progress = asm.feed(b"CZ");
        let assembled = loop {
            if let Progress::Done(a) = progress {
                break Some(a);
            }
            let wait = match progress {
                Progress::Whole { .. } => self.desk.conf.request_gap,
                _ => self.desk.conf.settings.frame_timeout,
            };
            if Instant::now() >= until {
                let path = self.path();
                self.desk
                    .flood(floodgate::Kind::BadRequest, log::Level::Info, || {
                        format!("serial {path}: request-timeout fired: raw request taken as it is")
                    });
                break asm.finish();
            }
            match self.link.byte((Instant::now() + wait).min(until))? {
                Some(b) => progress = asm.feed(&[b]),
                None if Instant::now() >= until => continue,
                None => break asm.finish(),
            }
        };
        let Some(a) = assembled else { return Ok(()) };
        log::trace!("serial {}: < {}", self.path(), pan::scrub(&a.body));
        if let Some(fault) = &a.fault {
            let path = self.path();
            self.desk
                .flood(floodgate::Kind::BadRequest, log::Level::Info, || {
                    format!("serial {path}: bad raw request ({fault}): answered AF09")
                });
            return self.answer(&Kind::Raw, dispatch::malformed(&a.body), None);
        }
        let job = dispatch::job(&a.body, true, &self.desk.conf.currencies);
        self.desk.seen(&a.body, true, &job);
        match job {
            Job::Submit(req, _) => {
                if req.op.occupies_terminal() {
                    self.desk.worker.stage().unframed();
                }
                let asked = req.frame.clone();
                let pending = self.desk.worker.hand_over(req, self.desk.origin(false));
                // No ACK to give: its answer is the register's only word,
                // however long the start takes.
                match pending.decision(None) {
                    Decision::Started(_) => {
                        let (reply, rung) = self.desk.forward(pending.reply);
                        self.desk
                            .waiting
                            .push(Waiting::new(reply, Kind::Raw, asked, rung));
                        Ok(())
                    }
                    Decision::Answered(r) => self.answer(&Kind::Raw, r, Some(&asked)),
                    Decision::Gone | Decision::Withdrawn => Ok(()),
                }
            }
            Job::Refuse(_, reply, why) => {
                let path = self.path();
                self.desk
                    .flood(floodgate::Kind::BadRequest, log::Level::Info, || {
                        format!("serial {path}: {why}")
                    });
                self.answer(&Kind::Raw, reply, None)
            }
            // Read as V3, a request is never NAKed.
            Job::Nak(_) => Ok(()),
        }
    }
}
