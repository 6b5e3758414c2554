//! `terminal relay tcp|serial ...`: each transaction goes on to an
//! upstream Concert terminal, translated to V2 when the upstream speaks V2,
//! and its outcome comes back. A request that left but got no answer has
//! an outcome nobody knows: it is answered as such and, with a V3 upstream,
//! resolved later by asking the upstream for the transaction status.
//!
//! A status answer describes the register's last transaction upstream,
//! which after a loss may be the one before the lost request, asked again:
//! an upstream may print a new duplicate ticket, a counter or the time in
//! each answer. So the status is asked before every payment too, and kept,
//! and a later answer is read by what identifies a transaction (its
//! authorisation, transaction id and date), never by its bytes: the lost
//! request is resolved only on evidence that names it (see `settle`).
//! Without a kept answer there is nothing to tell the two apart, and the
//! outcome stays unknown.

use crate::backend::history::{self, History};
use crate::backend::{Backend, Done, Note, Transaction};
use crate::client::{self, serial_link::Line, MAX_ANSWER};
use crate::config::{Format, Upstream};
use crate::wire::answer::{Af, Outcome};
use crate::wire::framing::{self, Wrapping, NAK};
use crate::wire::pan;
use crate::wire::request::{Operation, Request};
use crate::wire::tlv::{tags, Frame, Tag};
use crate::wire::v2;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

const CONNECT: Duration = Duration::from_secs(5);
/// A V3 answer over TCP is complete when whole and then quiet this long
/// (or when the upstream closes).
const QUIET: Duration = Duration::from_millis(300);
/// How often, and how long, an unknown outcome is asked for upstream.
const RESOLVE_EVERY: Duration = Duration::from_secs(2);
const RESOLVE_FOR: Duration = Duration::from_secs(3600);
/// How long one status request may take; a working terminal answers it at
/// once.
const STATUS_WAIT: Duration = Duration::from_secs(10);

/// What became of a request sent upstream.
enum Sent {
    /// It never reached the terminal (unreachable, refused, NAKed).
    Refused(String),
    Answer(Vec<u8>),
    /// It left, and no usable answer came back.
    Lost(String),
}

#[derive(Clone)]
struct Link {
    upstream: Upstream,
    v2: bool,
}

pub struct Relay {
    link: Link,
    timeout: Duration,
    /// Wakes the resolver of a register's unknown outcome.
    pokes: HashMap<u8, Sender<()>>,
    spawn: crate::backend::Spawn,
    /// The worker's, once it shares it.
    history: history::Shared,
    flights: Arc<Flights>,
}

/// The requests this relay has sent or is sending upstream. A status
/// answer taken while one is under way, or since one began, may describe
/// it before its answer (its AC, its CF) is in the history: a resolver
/// takes only answers asked and received while none was.
#[derive(Default)]
struct Flights {
    /// How many ever began, and how many are under way.
    state: Mutex<(u64, usize)>,
}

impl Flights {
    fn begin(self: &Arc<Self>) -> Flight {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.0 += 1;
        s.1 += 1;
        Flight(Arc::clone(self))
    }

    /// How many began, when none is under way.
    fn quiet(&self) -> Option<u64> {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        (s.1 == 0).then_some(s.0)
    }
}

/// One request under way; it ends when dropped.
struct Flight(Arc<Flights>);

impl Drop for Flight {
    fn drop(&mut self) {
        let mut s = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.1 = s.1.saturating_sub(1);
    }
}

/// What a resolver reads its status answers against.
struct Evidence {
    /// The status answer kept before the request, masked.
    kept: Vec<u8>,
    history: history::Shared,
    flights: Arc<Flights>,
}

impl Relay {
    pub fn new(upstream: &Upstream, v2: bool, timeout: Duration) -> Relay {
        Relay {
            link: Link {
                upstream: upstream.clone(),
                v2,
            },
            timeout,
            pokes: HashMap::new(),
            spawn: crate::backend::spawn_thread,
            history: history::Shared::default(),
            flights: Arc::default(),
        }
    }
}

fn tcp(addr: &str, bytes: &[u8], until: Instant, stx: bool) -> Sent {
    let target = match addr.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(t)) => t,
        _ => return Sent::Refused(format!("{addr}: cannot resolve")),
    };
    let mut s = match TcpStream::connect_timeout(&target, CONNECT) {
        Ok(s) => s,
        Err(e) => return Sent::Refused(format!("{addr}: {e}")),
    };
    if let Err(e) = s.write_all(bytes) {
        return Sent::Refused(format!("{addr}: {e}"));
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let now = Instant::now();
        if now >= until {
            return Sent::Lost("no answer before transaction-timeout".into());
        }
        let whole = !stx && Frame::decode(&answer).is_ok_and(|f| f.has(tags::AE));
        let wait = if whole {
            QUIET.min(until - now)
        } else {
            until - now
        };
        if s.set_read_timeout(Some(wait)).is_err() {
            return Sent::Lost("socket error".into());
        }
        // One byte past the cap tells an answer that is too long.
        let want = buf.len().min(MAX_ANSWER + 1 - answer.len());
        match s.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) if answer.len() + n > MAX_ANSWER => {
                return Sent::Lost(format!("{addr}: answer longer than {MAX_ANSWER} bytes"));
            }
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if stx
                    && (answer.first() == Some(&NAK)
                        || client::unwrap_stx(answer.clone()) != answer)
                {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if whole {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Sent::Lost(format!("{addr}: {e}")),
        }
    }
    if stx && answer == [NAK] {
        return Sent::Refused(format!("{addr}: request refused (NAK)"));
    }
    if answer.is_empty() {
        return Sent::Lost(format!("{addr}: closed without an answer"));
    }
    Sent::Answer(if stx {
        client::unwrap_stx(answer)
    } else {
        answer
    })
}

fn serial(device: &Path, speed: u32, format: Format, payload: &[u8], timeout: Duration) -> Sent {
    let path = device.display().to_string();
    let mut line = match Line::open(&path, speed, format) {
        Ok(l) => l,
        Err(e) => return Sent::Refused(format!("{path}: {e}")),
    };
    // Without the ACK to its frame, nobody knows whether the upstream took
    // the request (an ACK lost on the line looks the same): lost, not
    // refused, so that a payment it may have made is never answered as
    // declined.
    match line.send(payload) {
        Ok(()) => {}
        Err(e @ client::NoAnswer::Unsent(_)) => {
            return Sent::Refused(format!("{path}: {}", e.error()))
        }
        Err(e) => return Sent::Lost(format!("{path}: {}", e.error())),
    }
    match line.receive_answer(timeout) {
        Ok(a) => Sent::Answer(a),
        Err(e) => Sent::Lost(format!("{path}: {e}")),
    }
}

impl Link {
    /// One request and its answer upstream, framed for the link.
    fn exchange(&self, payload: &[u8], until: Instant) -> Sent {
        let left = until.saturating_duration_since(Instant::now());
        match &self.upstream {
            Upstream::Tcp(addr) if self.v2 => {
                tcp(addr, &framing::wrap(payload, Wrapping::Stx), until, true)
            }
            Upstream::Tcp(addr) => tcp(addr, payload, until, false),
            Upstream::Serial {
                device,
                speed,
                format,
            } => serial(device, *speed, *format, payload, left),
        }
    }
}

/// The request for a V3 upstream: as received, but always answered at the
/// end (an immediate answer was already given downstream), and without
/// `IM`: it names one of our transaction ids, which the upstream never
/// gave and cannot know. concertd checked the refund against its own
/// journal; upstream it is a plain credit.
fn v3_request(req: &Request) -> Vec<u8> {
    let mut f = Frame::new();
    let relayed = |t: &Tag| *t != tags::BA && *t != tags::IM;
    for e in req.frame.elements().iter().filter(|e| relayed(&e.tag)) {
        f.push(e.tag, e.value.clone());
    }
    f.encode()
}

/// The V2 (E+) request for a V3 one; what V2 cannot carry is dropped and
/// said in the log.
fn v2_request(id: u64, req: &Request) -> Result<Vec<u8>, String> {
    let kind = match req.op {
        Operation::Debit => b'0',
        Operation::Credit => b'1',
        Operation::Cancel => b'2',
        op => return Err(format!("{} cannot be sent in V2", op.name())),
    };
    let amount = req.amount.unwrap_or(0);
    if amount > 99_999_999 {
        return Err("amount over 8 digits cannot be sent in V2".into());
    }
    let cf = req.frame.get(tags::CF).unwrap_or_default();
    let private = v2::private_field(cf);
    let carried: [Tag; 9] = [
        tags::CZ,
        tags::CJ,
        tags::CA,
        tags::CB,
        tags::CD,
        tags::CE,
        tags::CC,
        tags::BB,
        tags::BA,
    ];
    let mut dropped: Vec<String> = req
        .frame
        .elements()
        .iter()
        .filter(|e| !carried.contains(&e.tag) && e.tag != tags::CF)
        .map(|e| e.tag.to_string())
        .collect();
    if cf.len() > 10 {
        dropped.push("CF past 10 characters".into());
    }
    if !dropped.is_empty() {
        log::info!(
            "tx {id}: V2 upstream cannot carry {}: dropped",
            dropped.join(", ")
        );
    }
    let pos = format!("{:02}", req.register);
    let pos = pos.as_bytes();
    Ok(v2::request_eplus(
        [pos[0], pos[1]],
        amount,
        b'1',
        if req.cheque { b'C' } else { b'1' },
        kind,
        req.currency.unwrap_or(978),
        private,
        false,
        req.force_auth,
    ))
}

/// The outcome a V2 reply reports.
fn from_v2(req: &Request, r: &v2::V2Reply) -> Outcome {
    match r.stat {
        b'0' => {
            let mut o = Outcome::approved();
            if Some(r.amount) != req.amount {
                let width = req.amount_text().map_or(2, str::len);
                o.amount = Some(format!("{:0width$}", r.amount));
            }
            // Masked with the rest by `masked`.
            o.pan.clone_from(&r.rep);
            if r.mode == b'C' {
                o.application = Some("00C".into());
            }
            o
        }
        b'7' => Outcome::declined(Af::Refused),
        _ => Outcome::declined(Af::NotEnded),
    }
}

/// The outcome an upstream answer reports, or why it is not usable.
fn outcome_of(id: u64, v2: bool, req: &Request, answer: &[u8]) -> Result<Outcome, String> {
    let o = if v2 {
        let r = v2::parse_reply(answer).map_err(|e| format!("bad V2 reply: {e}"))?;
        masked(from_v2(req, &r))
    } else {
        let f = Frame::decode(answer).map_err(|(_, e)| format!("bad answer: {e}"))?;
        if !f.has(tags::AE) {
            return Err("answer without AE".into());
        }
        masked(Outcome::from_answer(&f, &req.frame))
    };
    Ok(crate::backend::amount_rule(id, "the upstream", o, req))
}

/// The outcome an upstream's answer (V2 reply or V3 frame) reports for
/// `req`, or why it is not usable; for fuzzing the relay's reading of
/// whatever an upstream sends.
pub fn outcome_from_answer(v2: bool, req: &Request, answer: &[u8]) -> Result<Outcome, String> {
    outcome_of(0, v2, req, answer)
}

/// The status request about the register's last transaction upstream.
fn status_request(req: &Request) -> Vec<u8> {
    let mut status = Frame::new();
    for t in [tags::CZ, tags::CJ, tags::CA] {
        status.echo(&req.frame, t);
    }
    status.push(tags::CD, &b"T"[..]);
    status.encode()
}

/// The upstream's answer to a status request about a transaction it is
/// still running.
fn still_running(f: &Frame) -> bool {
    f.get(tags::CD) == Some(b"T")
        && f.get(tags::AE) == Some(b"01")
        && f.get(tags::AF) == Some(b"07")
}

/// Is this status answer, taken before a request, worth keeping? It must
/// describe a payment, approved or not performed for a reason; an upstream
/// that answers CD=T with a format or unknown-operation error (it does not
/// know the request) or busy says nothing that a later answer can be told
/// apart from. (A frame that decodes is printable: it fits a journal line.)
fn keepable(f: &Frame) -> bool {
    match (f.get(tags::AE), f.get(tags::AF)) {
        (Some(b"10"), _) => true,
        (Some(b"01"), Some(af)) => af != b"09" && af != b"12" && !still_running(f),
        _ => false,
    }
}

/// Before a payment goes upstream: the upstream's status answer, masked,
/// if it can be compared with one taken after a loss.
fn status_before(link: &Link, id: u64, req: &Request, until: Instant) -> Option<Vec<u8>> {
    let by = until.min(Instant::now() + STATUS_WAIT);
    let answer = match link.exchange(&status_request(req), by) {
        Sent::Answer(a) => a,
        Sent::Refused(why) | Sent::Lost(why) => {
            log::info!("tx {id}: status before the request: {why}");
            return None;
        }
    };
    match Frame::decode(&answer) {
        Ok(f) if keepable(&f) => Some(pan::scrub(&answer).into_bytes()),
        _ => {
            log::info!(
                "tx {id}: the upstream's status answer describes no payment: {}",
                pan::scrub(&answer)
            );
            None
        }
    }
}

/// What a status answer taken after a loss says of the lost request.
#[derive(Debug)]
enum Settled {
    /// Nothing yet, and why: still running, not an answer, or nothing in
    /// it names the lost request. Asked again.
    NotYet(&'static str),
    /// It never ran there, or ran and was refused: nothing was charged
    /// either way, and why it is known.
    NotDone(&'static str),
    Outcome(Box<Outcome>),
}

/// What identifies a transaction in a status answer: values that stay the
/// same however often it is asked about and differ from one transaction to
/// the next (the authorisation, PayXpert's transaction id and date). A
/// ticket, a counter or the time of the answer are not among them.
const MARKS: [Tag; 3] = [tags::AC, tags::ID, tags::AP];

/// What a status answer says the transaction was, besides its marks.
const DESCRIBED: [Tag; 7] = [
    tags::CA,
    tags::CD,
    tags::CB,
    tags::CE,
    tags::CF,
    tags::AE,
    tags::AF,
];

fn marks(f: &Frame) -> Vec<(Tag, &[u8])> {
    MARKS
        .iter()
        .filter_map(|&t| f.get(t).filter(|v| !v.is_empty()).map(|v| (t, v)))
        .collect()
}

/// Reads a status answer taken after transaction `id`'s request was lost,
/// against the one `kept` (masked) before the request and what `history`
/// holds of other transactions. Only evidence that names this request
/// resolves it:
/// - every mark the answer carries differs from the kept answer's, and
///   its AC is no other transaction's: a transaction after the kept one,
///   and not one concertd journaled; or
/// - the answer echoes the request's CF, which no other request carried.
///
/// The kept transaction again, all its marks unchanged, means nothing ran
/// upstream since: not done. A refusal of a transaction like this one,
/// for this register, means no money moved, whichever transaction it was:
/// not done. Anything else cannot be told apart: not yet.
fn settle(answer: &[u8], id: u64, req: &Request, kept: &[u8], history: &History) -> Settled {
    let Ok(f) = Frame::decode(answer) else {
        return Settled::NotYet("not a frame");
    };
    if still_running(&f) {
        return Settled::NotYet("still running");
    }
    let approved = match f.get(tags::AE) {
        Some(b"10") => true,
        Some(b"01") if f.get(tags::AF) != Some(b"07") => false,
        _ => return Settled::NotYet("no outcome in it"),
    };
    // Compared masked, as the kept answer was.
    let scrubbed = pan::scrub(answer);
    let (Ok(seen), Ok(before)) = (Frame::decode(scrubbed.as_bytes()), Frame::decode(kept)) else {
        return Settled::NotYet("not comparable with the status kept before the request");
    };
    let (now, then) = (marks(&seen), marks(&before));
    let shared = now.iter().filter(|m| then.contains(m)).count();
    if shared > 0 {
        let same = |t: &Tag| seen.get(*t) == before.get(*t);
        // Two marks masked alike may have differed.
        let whole = marks(&f) == now;
        return if whole && shared == now.len() && shared == then.len() && DESCRIBED.iter().all(same)
        {
            Settled::NotDone(
                "the upstream's last transaction is still the one from before the request: \
                 it never ran there",
            )
        } else {
            Settled::NotYet("it shares marks with the status kept before the request")
        };
    }
    if !same_transaction(&f, req) {
        return Settled::NotYet("it describes another transaction");
    }
    let o = masked(Outcome::from_answer(&f, &req.frame));
    if o.auth
        .as_deref()
        .is_some_and(|ac| history.auth_elsewhere(ac.as_bytes(), id))
    {
        return Settled::NotYet("its authorisation (AC) is another transaction's");
    }
    let fresh_cf = req
        .frame
        .get(tags::CF)
        .filter(|cf| !cf.is_empty() && before.get(tags::CF) != Some(*cf))
        .is_some_and(|cf| !history.cf_elsewhere(cf, id));
    if !now.is_empty() || fresh_cf {
        return Settled::Outcome(Box::new(o));
    }
    match (approved, f.get(tags::CA)) {
        (false, Some(ca)) if Some(ca) == req.frame.get(tags::CA) => Settled::NotDone(
            "the upstream reports a refusal like the request, for this register: \
             whether it was the request's or an earlier one, nothing was charged",
        ),
        _ => Settled::NotYet("nothing in it names the request"),
    }
}

/// Can this status answer be about the lost request? Same register (when
/// it says), operation, currency and private data, and the same amount, or
/// less if approved when the request allowed a partial payment (BF=1).
fn same_transaction(answer: &Frame, req: &Request) -> bool {
    let digits = |v: Option<&[u8]>| -> Option<u64> {
        let v = v.filter(|v| !v.is_empty() && v.iter().all(u8::is_ascii_digit))?;
        std::str::from_utf8(v).ok()?.parse().ok()
    };
    let amount_ok = match (digits(answer.get(tags::CB)), req.amount) {
        (Some(a), Some(r)) => {
            a == r || (a < r && req.partial_ok && answer.get(tags::AE) == Some(b"10"))
        }
        (None, None) => true,
        _ => false,
    };
    answer
        .get(tags::CA)
        .is_none_or(|ca| Some(ca) == req.frame.get(tags::CA))
        && answer.get(tags::CD) == req.frame.get(tags::CD)
        && answer.get(tags::CE) == req.frame.get(tags::CE)
        && answer.get(tags::CF) == req.frame.get(tags::CF)
        && amount_ok
}

/// A card number from upstream never goes further whole, whatever field
/// it is in: each value is masked on its own (the amount, at most 12
/// digits, cannot hold one), and so is the ticket inside ZT.
fn masked(mut o: Outcome) -> Outcome {
    let fields = [
        ("AC", &mut o.auth),
        ("AA", &mut o.pan),
        ("AB", &mut o.expiry),
        ("AI", &mut o.aid),
        ("CC", &mut o.application),
        ("CI", &mut o.read_mode),
        ("CG", &mut o.contract),
    ];
    for (tag, field) in fields {
        let Some(v) = field.as_mut() else { continue };
        let mut b = std::mem::take(v).into_bytes();
        if pan::mask_in_place(&mut b) {
            log::warn!("upstream sent a full card number in {tag}: masked");
        }
        *v = String::from_utf8_lossy(&b).into_owned();
    }
    if let Some(zt) = o.ticket.as_mut() {
        if masked_zt(zt) {
            log::warn!("upstream sent a full card number in its ticket: masked");
        }
    }
    o
}

/// Masks the card numbers of a ZT value in place: in the ticket text its
/// AK (or the whole value) carries in base64, then in the value as it is
/// (text that only looks like base64 included).
fn masked_zt(zt: &mut Vec<u8>) -> bool {
    let mut changed = false;
    let inner = Frame::decode_any(zt).ok();
    let ak = inner.as_ref().and_then(|f| f.get(tags::AK));
    if let Some(mut doc) = crate::wire::base64::decode(ak.unwrap_or(zt)) {
        if pan::mask_in_place(&mut doc) {
            let text = crate::wire::base64::encode(&doc).into_bytes();
            *zt = match (&inner, ak) {
                (Some(f), Some(_)) => {
                    let mut out = Frame::new();
                    for e in f.elements() {
                        let v = if e.tag == tags::AK { &text } else { &e.value };
                        out.push(e.tag, v.clone());
                    }
                    out.encode()
                }
                _ => text,
            };
            changed = true;
        }
    }
    let raw = pan::masked(zt, None);
    changed |= raw != *zt;
    *zt = raw;
    changed
}

/// Asks a V3 upstream for the status of the register's last transaction
/// until it says how the lost one ended, for up to RESOLVE_FOR from now
/// (also after a restart: the hour starts again). It asks every `every`
/// (RESOLVE_EVERY; a test passes an hour so that only a poke can ask).
fn resolve(
    link: Link,
    id: u64,
    req: Request,
    ev: Evidence,
    pokes: Receiver<()>,
    done: Sender<Done>,
    every: Duration,
) {
    let status = status_request(&req);
    let until = Instant::now() + RESOLVE_FOR;
    let mut said = "";
    while Instant::now() < until {
        match pokes.recv_timeout(every) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let Some(began) = ev.flights.quiet() else {
            continue;
        };
        let Sent::Answer(a) = link.exchange(&status, Instant::now() + STATUS_WAIT) else {
            continue;
        };
        if ev.flights.quiet() != Some(began) {
            log::debug!(
                "tx {id}: another request went upstream meanwhile: status answer set aside"
            );
            continue;
        }
        let settled = history::with(&ev.history, |h| settle(&a, id, &req, &ev.kept, h));
        let (outcome, note) = match settled {
            Settled::NotYet(why) => {
                if why != said {
                    log::info!("tx {id}: the upstream's status answer: {why}: asking again");
                    said = why;
                }
                continue;
            }
            Settled::NotDone(why) => {
                log::info!("tx {id}: {why}");
                (Outcome::declined(Af::NotEnded), Some(Note::NotDone))
            }
            Settled::Outcome(o) => {
                log::info!("tx {id}: the upstream answered the status request");
                (*o, None)
            }
        };
        let _ = done.send(Done {
            id,
            outcome,
            resolved: true,
            note,
        });
        return;
    }
    log::warn!("tx {id}: outcome still unknown after asking the upstream for an hour");
}

impl Backend for Relay {
    fn name(&self) -> &'static str {
        "relay"
    }

    fn start(&mut self, tx: &Transaction, done: Sender<Done>) {
        let id = tx.id;
        let req = tx.request.clone();
        let link = self.link.clone();
        let until = Instant::now() + self.timeout;
        let (poke_tx, poke_rx) = bounded(1);
        if !link.v2 {
            self.pokes.insert(req.register, poke_tx);
        }
        let answer = done.clone();
        let (history, flights) = (Arc::clone(&self.history), Arc::clone(&self.flights));
        // Counted from before the thread starts: a status answer a resolver
        // receives from now on may describe this request.
        let flight = flights.begin();
        let spawned = (self.spawn)(
            std::thread::Builder::new().name("relay".into()),
            Box::new(move || {
                let payload = if link.v2 {
                    v2_request(id, &req)
                } else {
                    Ok(v3_request(&req))
                };
                let outcome = match payload {
                    Err(why) => {
                        log::warn!("tx {id}: not relayed: {why}");
                        Outcome::declined(Af::UnknownOperation)
                    }
                    Ok(p) => {
                        let kept = (!link.v2 && req.op.is_payment())
                            .then(|| status_before(&link, id, &req, until))
                            .flatten();
                        if let Some(k) = &kept {
                            let _ = done.send(Done {
                                id,
                                outcome: Outcome::declined(Af::NotEnded),
                                resolved: false,
                                note: Some(Note::UpstreamStatus(k.clone())),
                            });
                        }
                        let ev = kept.map(|kept| Evidence {
                            kept,
                            history: Arc::clone(&history),
                            flights: Arc::clone(&flights),
                        });
                        relay_one(id, &link, &req, &p, until, ev, &poke_rx, &done)
                    }
                };
                // Its AC and CF known before a resolver may take a status
                // answer again.
                history::with(&history, |h| h.record(id, &req, &outcome));
                drop(flight);
                let _ = done.send(Done {
                    id,
                    outcome,
                    resolved: false,
                    note: None,
                });
            }),
        );
        if let Err(e) = spawned {
            if !self.link.v2 {
                self.pokes.remove(&tx.request.register);
            }
            crate::backend::decline_unstarted(id, "the relay", &e, &answer);
        }
    }

    fn abort(&mut self, _id: u64) -> Outcome {
        // The request may have reached the upstream: nobody knows.
        Outcome::declined(Af::NotEnded)
    }

    fn reload(&mut self, cfg: &crate::config::Config) {
        self.timeout = cfg.transaction_timeout;
    }

    fn status_requested(&mut self, register: u8) {
        if let Some(p) = self.pokes.get(&register) {
            let _ = p.try_send(());
        }
    }

    fn resume(&mut self, tx: &Transaction, kept: &[u8], done: Sender<Done>) {
        if self.link.v2 {
            return;
        }
        let id = tx.id;
        let (poke_tx, poke_rx) = bounded(1);
        self.pokes.insert(tx.request.register, poke_tx);
        log::info!("tx {id}: outcome unknown before the restart: asking the upstream again");
        let (link, req) = (self.link.clone(), tx.request.clone());
        let ev = Evidence {
            kept: kept.to_vec(),
            history: Arc::clone(&self.history),
            flights: Arc::clone(&self.flights),
        };
        let spawned = std::thread::Builder::new()
            .name("relay-resolve".into())
            .spawn(move || resolve(link, id, req, ev, poke_rx, done, RESOLVE_EVERY));
        if let Err(e) = spawned {
            log::error!("tx {id}: cannot start the resolver: {e}");
        }
    }

    fn share_history(&mut self, history: history::Shared) {
        self.history = history;
    }
}

/// The request upstream and what its answer says.
#[allow(clippy::too_many_arguments)]
fn relay_one(
    id: u64,
    link: &Link,
    req: &Request,
    payload: &[u8],
    until: Instant,
    ev: Option<Evidence>,
    pokes: &Receiver<()>,
    done: &Sender<Done>,
) -> Outcome {
    if Instant::now() >= until {
        // The status request took all the time: the request never left.
        log::warn!("tx {id}: not relayed: no time left after the status request");
        return Outcome::declined(Af::Unknown);
    }
    match link.exchange(payload, until) {
        Sent::Refused(why) => {
            log::warn!("tx {id}: upstream: {why}: declined");
            Outcome::declined(Af::Unknown)
        }
        Sent::Answer(a) => match outcome_of(id, link.v2, req, &a) {
            Ok(o) => o,
            Err(why) => lost(id, link, req, &why, ev, pokes.clone(), done),
        },
        Sent::Lost(why) => lost(id, link, req, &why, ev, pokes.clone(), done),
    }
}

/// A request that left without a usable answer: unknown, and when a status
/// answer was kept before it a resolver starts asking for the status.
fn lost(
    id: u64,
    link: &Link,
    req: &Request,
    why: &str,
    ev: Option<Evidence>,
    pokes: Receiver<()>,
    done: &Sender<Done>,
) -> Outcome {
    let Some(ev) = ev else {
        let cannot = if link.v2 {
            "a V2 upstream cannot be asked"
        } else {
            "no status answer kept before the request"
        };
        log::warn!("tx {id}: upstream: {why}: outcome unknown, and stays so ({cannot})");
        return Outcome::declined(Af::NotEnded);
    };
    log::warn!("tx {id}: upstream: {why}: outcome unknown, asking the upstream");
    let (link, req, done) = (link.clone(), req.clone(), done.clone());
    let spawned = std::thread::Builder::new()
        .name("relay-resolve".into())
        .spawn(move || resolve(link, id, req, ev, pokes, done, RESOLVE_EVERY));
    if let Err(e) = spawned {
        log::error!("tx {id}: cannot start the resolver: {e}");
    }
    Outcome::declined(Af::NotEnded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(body: &str) -> Request {
        crate::wire::request::parse(body.as_bytes(), &[978]).unwrap()
    }

    #[test]
    fn a_status_request_from_the_register_makes_the_resolver_ask_at_once() {
        const SALE: &str = "CZ0040320CJ012247300123456CA00201CB0041000CD0010CE003978";
        // An upstream whose status answer is the lost sale, performed.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (seen_tx, seen) = bounded(8);
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 256];
                while crate::wire::request::parse(&buf, &[978]).is_err() {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = s.write_all(format!("{SALE}CF003abcAE00210AC006222222").as_bytes());
                if seen_tx.send(buf).is_err() {
                    return;
                }
            }
        });
        let link = Link {
            upstream: Upstream::Tcp(addr.to_string()),
            v2: false,
        };
        let kept = format!("{SALE}CF003abcAE00210AC006111111").into_bytes();
        let (poke_tx, pokes) = bounded(1);
        let (done_tx, done) = crossbeam_channel::unbounded();
        let r = req(&format!("{SALE}CF003abc"));
        let ev = Evidence {
            kept,
            history: history::Shared::default(),
            flights: Arc::default(),
        };
        // Asking every hour: only the poke can make it ask within the test.
        std::thread::spawn(move || {
            resolve(link, 7, r, ev, pokes, done_tx, Duration::from_secs(3600))
        });
        poke_tx.send(()).unwrap();
        let asked = seen.recv_timeout(Duration::from_secs(30)).expect("asked");
        assert!(
            asked.ends_with(b"CD001T"),
            "{}",
            String::from_utf8_lossy(&asked)
        );
        let d = done
            .recv_timeout(Duration::from_secs(30))
            .expect("resolved");
        assert_eq!((d.id, d.resolved), (7, true));
        assert!(d.outcome.is_approved());
        drop(poke_tx);
    }

    #[test]
    fn v3_to_v2_and_back() {
        let r =
            req("CZ0040320CJ012247300123456CA00201CB0041000CD0010CE003978CF010ORDER00042CK003100");
        let p = v2_request(1, &r).unwrap();
        assert_eq!(p, b"0100001000110978ORDER00042A010B010");
        let reply = v2::reply(
            &v2::parse(&p).unwrap(),
            b'0',
            1000,
            Some("4970101234560674"),
        );
        let o = outcome_from_answer(true, &r, &reply).unwrap();
        assert!(o.is_approved());
        assert_eq!(o.pan.as_deref(), Some("497010######0674"));
        assert_eq!(o.amount, None);
        let refused =
            v2::parse_reply(&v2::reply(&v2::parse(&p).unwrap(), b'7', 1000, None)).unwrap();
        assert_eq!(
            from_v2(&r, &refused).status,
            crate::wire::answer::Status::Declined(Af::Refused)
        );
        assert!(v2_request(1, &req("CZ0040320CA00201CD001B")).is_err());
    }

    #[test]
    fn resolution_matches_only_the_lost_request() {
        let r = req("CZ0040320CA00201CB0041000CD0010CE003978CF003abc");
        let ok = Frame::decode(b"CZ0040320CA00201CB0041000CD0010CE003978AE00210CF003abc").unwrap();
        assert!(same_transaction(&ok, &r));
        let partial =
            Frame::decode(b"CZ0040320CA00201CB003500CD0010CE003978AE00210CF003abc").unwrap();
        // Less than asked is a partial approval only when the request
        // allowed one: otherwise it is an older, smaller sale.
        assert!(!same_transaction(&partial, &r));
        let r_bf = req("CZ0040320CA00201CB0041000CD0010CE003978CF003abcBF0011");
        assert!(same_transaction(&partial, &r_bf));
        let partial_refused =
            Frame::decode(b"CZ0040320CA00201CB003500CD0010CE003978AE00201AF00204CF003abc").unwrap();
        assert!(!same_transaction(&partial_refused, &r_bf));
        let older =
            Frame::decode(b"CZ0040320CA00201CB0042000CD0010CE003978AE00210CF003abc").unwrap();
        assert!(!same_transaction(&older, &r));
        let other_cf =
            Frame::decode(b"CZ0040320CA00201CB0041000CD0010CE003978AE00210CF003xyz").unwrap();
        assert!(!same_transaction(&other_cf, &r));
        let no_cf = Frame::decode(b"CZ0040320CA00201CB0041000CD0010CE003978AE00210").unwrap();
        assert!(!same_transaction(&no_cf, &r));
        let other_ce =
            Frame::decode(b"CZ0040320CA00201CB0041000CD0010CE003840AE00210CF003abc").unwrap();
        assert!(!same_transaction(&other_ce, &r));
        let signed =
            Frame::decode(b"CZ0040320CA00201CB005+1000CD0010CE003978AE00210CF003abc").unwrap();
        assert!(!same_transaction(&signed, &r));
    }

    #[test]
    fn only_a_payment_status_is_kept() {
        let keep = |a: &[u8]| keepable(&Frame::decode(a).unwrap());
        assert!(keep(
            b"CZ0040320CA00201CB003500CD0010CE003978AE00210AC006111111"
        ));
        assert!(keep(
            b"CZ0040320CA00201CB003500CD0010CE003978AE00201AF00204"
        ));
        // What a concertd upstream answers before any transaction.
        assert!(keep(b"CZ0040320CA00201CD001TAE00201AF00200"));
        // Does not know CD=T, or did not understand it.
        assert!(!keep(b"CZ0040320CA00201CD001TAE00201AF00212"));
        assert!(!keep(b"CZ0040320CA00201CD001TAE00201AF00209"));
        // Busy, still running, or no result at all.
        assert!(!keep(b"CZ0040320CA00201CD001TAE00201"));
        assert!(!keep(b"CZ0040320CA00201CD001TAE00201AF00207"));
        assert!(!keep(b"CZ0040320CA00201CD001T"));
    }

    /// `settle` for transaction 9, with `history`.
    fn settled(answer: &[u8], r: &Request, kept: &[u8], history: &History) -> Settled {
        settle(answer, 9, r, &pan::scrub(kept).into_bytes(), history)
    }

    fn approved_by(ac: &str) -> Outcome {
        let mut o = Outcome::approved();
        o.auth = Some(ac.into());
        o
    }

    #[test]
    fn a_lost_request_is_settled_against_the_kept_status() {
        let none = History::default();
        let r = req("CZ0040320CA00201CB0041000CD0010CE003978");
        let before =
            b"CZ0040320CA00201CB003500CD0010CE003978AE00210AC006111111AA0164970101234560674";
        // The previous 5.00 sale, as before the request: it never ran.
        assert!(matches!(
            settled(before, &r, before, &none),
            Settled::NotDone(_)
        ));
        // Still running, or not a whole answer: ask again.
        let running = b"CZ0040320CA00201CD001TAE00201AF00207";
        assert!(matches!(
            settled(running, &r, before, &none),
            Settled::NotYet(_)
        ));
        assert!(matches!(
            settled(b"CZ004", &r, before, &none),
            Settled::NotYet(_)
        ));
        // Another register's or an older sale, changed since: not this one.
        let other = b"CZ0040320CA00201CB003700CD0010CE003978AE00210AC006222222";
        assert!(matches!(
            settled(other, &r, before, &none),
            Settled::NotYet(_)
        ));
        let register_2 = b"CZ0040320CA00202CB0041000CD0010CE003978AE00210AC006222222";
        assert!(matches!(
            settled(register_2, &r, before, &none),
            Settled::NotYet(_)
        ));
        // The lost request itself, approved: its card number masked.
        let done =
            b"CZ0040320CA00201CB0041000CD0010CE003978AE00210AC006333333AA0164970101234560674";
        match settled(done, &r, before, &none) {
            Settled::Outcome(o) => {
                assert!(o.is_approved());
                assert_eq!(o.auth.as_deref(), Some("333333"));
                assert_eq!(o.pan.as_deref(), Some("497010######0674"));
            }
            s => panic!("{s:?}"),
        }
        // A refusal like the request, for this register: nothing charged,
        // whichever transaction it was.
        let refused = b"CZ0040320CA00201CB0041000CD0010CE003978AE00201AF00204";
        assert!(matches!(
            settled(refused, &r, before, &none),
            Settled::NotDone(_)
        ));
        // An upstream that does not know either: ask again.
        let unknown = b"CZ0040320CA00201CB0041000CD0010CE003978AE00201AF00207";
        assert!(matches!(
            settled(unknown, &r, before, &none),
            Settled::NotYet(_)
        ));
    }

    #[test]
    fn a_status_answer_that_varies_between_asks_names_no_transaction() {
        let none = History::default();
        // The previous 10.00 sale, asked before and after the lost 10.00
        // one: a duplicate ticket with the time in it, and a counter.
        let sale = "CZ0040320CA00201CB0041000CD0010CE003978AE00210AC006111111";
        let ticket = |t: &str| {
            let doc = crate::wire::base64::encode(format!("DUPLICATA {t}\n").as_bytes());
            format!("CK003100AK{:03}{doc}", doc.len())
        };
        let ask = |t: &str, n: u32| {
            let zt = ticket(t);
            format!("{sale}ZT{:03}{zt}ZZ003{n:03}", zt.len())
        };
        let kept = ask("10:41:07", 1);
        let again = ask("10:41:09", 2);
        for cf in ["", "CF003abc"] {
            let r = req(&format!("CZ0040320CA00201CB0041000CD0010CE003978{cf}"));
            let a = format!("{}{cf}", again);
            let k = format!("{}{cf}", kept);
            match settled(a.as_bytes(), &r, k.as_bytes(), &none) {
                Settled::NotDone(_) => {}
                s => panic!("{cf}: {s:?}"),
            }
            // Its AC, the same as before: the previous sale, whatever else
            // differs; with another amount it contradicts itself.
            let odd = format!("CZ0040320CA00201CB0041000CD0010CE003978AE00210AC006111111{cf}");
            let k = format!("CZ0040320CA00201CB003500CD0010CE003978AE00210AC006111111{cf}");
            assert!(matches!(
                settled(odd.as_bytes(), &r, k.as_bytes(), &none),
                Settled::NotYet(_)
            ));
        }
        // No mark at all: an approval of the same amount with no CF, or a
        // CF sent before, cannot be told from the previous sale.
        let bare = "CZ0040320CA00201CB0041000CD0010CE003978AE00210";
        let r = req("CZ0040320CA00201CB0041000CD0010CE003978");
        assert!(matches!(
            settled(
                format!("{bare}ZZ0012").as_bytes(),
                &r,
                format!("{bare}ZZ0011").as_bytes(),
                &none
            ),
            Settled::NotYet(_)
        ));
        let mut h = History::default();
        let r = req("CZ0040320CA00201CB0041000CD0010CE003978CF003abc");
        h.record(4, &r, &Outcome::approved());
        h.record(9, &r, &Outcome::declined(Af::NotEnded));
        let previous = b"CZ0040320CA00201CB003500CD0010CE003978AE00201AF00204";
        assert!(matches!(
            settled(format!("{bare}CF003abc").as_bytes(), &r, previous, &h),
            Settled::NotYet(_)
        ));
    }

    #[test]
    fn a_new_authorisation_no_other_transaction_holds_resolves() {
        let r = req("CZ0040320CA00201CB0041000CD0010CE003978");
        let kept = b"CZ0040320CA00201CB0041000CD0010CE003978AE00210AC006111111";
        let new = b"CZ0040320CA00201CB0041000CD0010CE003978AE00210AC006222222";
        let mut h = History::default();
        h.record(4, &r, &approved_by("111111"));
        h.record(9, &r, &Outcome::declined(Af::NotEnded));
        match settled(new, &r, kept, &h) {
            Settled::Outcome(o) => assert_eq!(o.auth.as_deref(), Some("222222")),
            s => panic!("{s:?}"),
        }
        // PayXpert's transaction id and date are marks too.
        let kept = b"CZ0040320CA00201CB0041000CD0010CE003978AE00210ID0011AP0132501011200000";
        let new = b"CZ0040320CA00201CB0041000CD0010CE003978AE00210ID0012AP0132501011201000";
        match settled(new, &r, kept, &h) {
            Settled::Outcome(o) => assert!(o.is_approved()),
            s => panic!("{s:?}"),
        }
        assert!(matches!(settled(kept, &r, kept, &h), Settled::NotDone(_)));
        // A mark that looks like a card number is masked in the kept
        // answer: two such marks masked alike may have differed.
        let card = b"CZ0040320CA00201CB0041000CD0010CE003978AE00210AP0164970101234560674";
        assert!(matches!(settled(card, &r, card, &h), Settled::NotYet(_)));
        // A new id with the old date: it cannot be told apart.
        let half = b"CZ0040320CA00201CB0041000CD0010CE003978AE00210ID0012AP0132501011200000";
        assert!(matches!(settled(half, &r, kept, &h), Settled::NotYet(_)));
    }

    #[test]
    fn an_authorisation_another_transaction_holds_never_resolves() {
        let r = req("CZ0040320CA00201CB0041000CD0010CE003978CF003new");
        let kept = b"CZ0040320CA00201CB003500CD0010CE003978AE00210AC006111111";
        // Register 02's sale through the same upstream, journaled with
        // AC 222222 after the lost one, reported as the last transaction
        // by an upstream that does not say which register; even with the
        // lost request's own, never sent before, CF.
        let mut h = History::default();
        let r2 = req("CZ0040320CA00202CB0041000CD0010CE003978");
        h.record(9, &r, &Outcome::declined(Af::NotEnded));
        h.record(10, &r2, &approved_by("222222"));
        let theirs = b"CZ0040320CB0041000CD0010CE003978AE00210AC006222222CF003new";
        match settled(theirs, &r, kept, &h) {
            Settled::NotYet(why) => assert!(why.contains("another transaction's"), "{why}"),
            s => panic!("{s:?}"),
        }
        // Transaction 9's own AC, once journaled, is not "elsewhere".
        h.record(9, &r, &approved_by("333333"));
        let own = b"CZ0040320CB0041000CD0010CE003978AE00210AC006333333CF003new";
        assert!(matches!(settled(own, &r, kept, &h), Settled::Outcome(_)));
    }

    #[test]
    fn a_cf_no_other_request_carried_names_the_request() {
        let r = req("CZ0040320CA00201CB0041000CD0010CE003978CF006ord-42");
        let kept = b"CZ0040320CA00201CB0041000CD0010CE003978AE00201AF00204CF006ord-41";
        let mut h = History::default();
        h.record(
            8,
            &req("CZ0040320CA00201CB0041000CD0010CE003978CF006ord-41"),
            &Outcome::declined(Af::Refused),
        );
        h.record(9, &r, &Outcome::declined(Af::NotEnded));
        // No AC at all (an upstream that gives none): the echo of a CF
        // only this request carried names it, approved or refused.
        let approved = b"CZ0040320CA00201CB0041000CD0010CE003978AE00210CF006ord-42";
        match settled(approved, &r, kept, &h) {
            Settled::Outcome(o) => assert!(o.is_approved()),
            s => panic!("{s:?}"),
        }
        let refused = b"CZ0040320CA00201CB0041000CD0010CE003978AE00201AF00205CF006ord-42";
        match settled(refused, &r, kept, &h) {
            Settled::Outcome(o) => {
                assert_eq!(
                    o.status,
                    crate::wire::answer::Status::Declined(Af::Forbidden)
                )
            }
            s => panic!("{s:?}"),
        }
        // The same CF sent by another request since: it names neither.
        h.record(
            10,
            &req("CZ0040320CA00202CB0041000CD0010CE003978CF006ord-42"),
            &Outcome::declined(Af::Refused),
        );
        assert!(matches!(
            settled(approved, &r, kept, &h),
            Settled::NotYet(_)
        ));
    }

    #[test]
    fn card_numbers_from_upstream_are_masked_in_every_field() {
        let r = req("CZ0040320CA00201CB0041000CD0010CE003978CF0164970101234560674CK003100");
        let ticket = crate::wire::base64::encode(b"CARTE 4970 1012 3456 0674\nMERCI\n");
        let zt = format!("CK003100AK{:03}{ticket}", ticket.len());
        let answer = format!(
            "CZ0040320CA00201CB0041000CD0010CE003978AE00210AC0061234 5\
             AA0194970 1012 3456 0674CG0194970-1012-3456-0674CF0164970101234560674\
             ZT{:03}{zt}",
            zt.len()
        );
        let o = outcome_from_answer(false, &r, answer.as_bytes()).unwrap();
        assert_eq!(o.auth.as_deref(), Some("1234 5"));
        assert_eq!(o.pan.as_deref(), Some("4970 10## #### 0674"));
        assert_eq!(o.contract.as_deref(), Some("4970-10##-####-0674"));
        let (ck, doc) = crate::wire::ticket::decode_zt(o.ticket.as_deref().unwrap()).unwrap();
        assert_eq!(ck, Some(*b"100"));
        assert_eq!(doc, b"CARTE 4970 10## #### 0674\nMERCI\n");
        // The answer to the register echoes its own CF, whatever it holds.
        let a = crate::wire::answer::result(&r.frame, &o);
        assert_eq!(a.get(tags::CF), Some(&b"4970101234560674"[..]));
        // A ZT in clear, and a V2 card field written in groups.
        let mut clear = b"CK003100AK025CARTE 4970 1012 3456 0674".to_vec();
        assert!(masked_zt(&mut clear));
        assert_eq!(clear, b"CK003100AK025CARTE 4970 10## #### 0674");
        let p = v2_request(1, &r).unwrap();
        let reply = v2::reply(
            &v2::parse(&p).unwrap(),
            b'0',
            1000,
            Some("4970-1012-3456-0674"),
        );
        let o = outcome_from_answer(true, &r, &reply).unwrap();
        assert_eq!(o.pan.as_deref(), Some("4970-10##-####-0674"));
    }

    #[test]
    fn answers_from_upstream_never_panic() {
        let r = req("CZ0040320CA00201CB0041000CD0010CE003978CK003100");
        for a in [
            &b""[..],
            b"\x02\x03",
            b"AE00210",
            b"CZ0040320AE00210CB0039999",
            b"CZ0040320AE003999AF0029Z",
            b"0000099999999",
            b"\xff\xfe\x00",
        ] {
            let _ = outcome_from_answer(false, &r, a);
            let _ = outcome_from_answer(true, &r, a);
        }
        assert!(
            outcome_from_answer(false, &r, b"CZ0040320CA00201CB0041000CD0010CE003978AE00210")
                .unwrap()
                .is_approved()
        );
    }

    #[test]
    fn an_upstream_approving_another_amount_gives_an_unknown_outcome() {
        let af = |o: Outcome| o.status;
        let unknown = crate::wire::answer::Status::Declined(Af::NotEnded);
        let r = req("CZ0040320CA00201CB0041000CD0010CE003978");
        // More than asked, or less without BF=1: nobody knows what moved.
        for a in [
            &b"CZ0040320CA00201CB00599999CD0010CE003978AE00210"[..],
            b"CZ0040320CA00201CB003500CD0010CE003978AE00210",
        ] {
            assert_eq!(af(outcome_from_answer(false, &r, a).unwrap()), unknown);
        }
        let partial = req("CZ0040320CA00201CB0041000CD0010CE003978BF0011");
        let o = outcome_from_answer(
            false,
            &partial,
            b"CZ0040320CA00201CB003500CD0010CE003978AE00210",
        )
        .unwrap();
        assert!(o.is_approved());
        assert_eq!(o.amount.as_deref(), Some("500"));
    }

    /// An upstream on loopback that reads a request, then sends `prefix`
    /// and `chunk` after it for as long as the relay reads.
    fn streaming_upstream(prefix: &'static [u8], chunk: &'static [u8]) -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                std::thread::spawn(move || {
                    let _ = s.read(&mut [0u8; 512]);
                    let _ = s.write_all(prefix);
                    while s.write_all(chunk).is_ok() {}
                });
            }
        });
        addr
    }

    #[test]
    fn an_endless_answer_is_cut_at_the_largest_frame() {
        let r = req("CZ0040320CA00201CB0041000CD0010CE003978");
        for (v2, prefix, chunk) in [
            (false, &b""[..], &b"garbage "[..]),
            // Whole elements with AE, and never quiet.
            (false, b"CZ0040320AE00210", b"CF003abc"),
            (true, b"\x02", b"0123456789"),
        ] {
            let link = Link {
                upstream: Upstream::Tcp(streaming_upstream(prefix, chunk)),
                v2,
            };
            let until = Instant::now() + Duration::from_secs(30);
            // The request, and the status exchanges of the resolver.
            for payload in [v3_request(&r), status_request(&r)] {
                match link.exchange(&payload, until) {
                    Sent::Lost(why) => assert!(why.ends_with("answer longer than 8192 bytes")),
                    Sent::Answer(a) => panic!("{} bytes taken as an answer", a.len()),
                    Sent::Refused(why) => panic!("refused: {why}"),
                }
            }
        }
    }

    #[test]
    fn an_answer_of_the_largest_frame_is_read() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let _ = s.read(&mut [0u8; 512]);
            let mut a = b"CZ0040320AE00210".to_vec();
            a.resize(MAX_ANSWER, b'x');
            let _ = s.write_all(&a);
        });
        let until = Instant::now() + Duration::from_secs(30);
        match tcp(&addr, b"CZ0040320CD001T", until, false) {
            Sent::Answer(a) => assert_eq!(a.len(), MAX_ANSWER),
            _ => panic!("not read"),
        }
    }

    #[test]
    fn immediate_answers_are_not_asked_upstream() {
        let r = req("CZ0040320CA00201CB0041000CD0010CE003978BA0011");
        assert_eq!(v3_request(&r), b"CZ0040320CA00201CB0041000CD0010CE003978");
    }

    #[test]
    fn a_refund_by_reference_goes_upstream_as_a_plain_credit() {
        let r = req("CZ0040320CA00201CB0041000CD0011CE003978IM0131764561745001CF002ab");
        assert_eq!(
            v3_request(&r),
            b"CZ0040320CA00201CB0041000CD0011CE003978CF002ab"
        );
    }

    /// A relay thread that cannot start sends nothing upstream, so the
    /// transaction is declined at once, not left to transaction-timeout.
    #[test]
    fn a_thread_that_cannot_start_sends_nothing_and_declines() {
        let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        upstream.set_nonblocking(true).unwrap();
        let addr = upstream.local_addr().unwrap().to_string();
        let mut r = Relay::new(&Upstream::Tcp(addr), false, Duration::from_secs(60));
        r.spawn = |_, _| Err(std::io::Error::other("no threads left"));
        let (done, finished) = crossbeam_channel::unbounded();
        let tx = Transaction {
            id: 9,
            request: req("CZ0040320CA00201CB0041000CD0010CE003978"),
            channel: crate::terminal::worker::Channel::Serial,
            original: None,
        };
        r.start(&tx, done);
        let d = finished.try_recv().expect("an answer at once");
        assert_eq!(d.id, 9);
        assert_eq!(d.outcome, Outcome::declined(Af::Unknown));
        assert!(d.note.is_none());
        assert!(finished.try_recv().is_err());
        assert!(r.pokes.is_empty());
        assert!(upstream.accept().is_err(), "something reached the upstream");
    }
}
