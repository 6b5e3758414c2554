//! `terminal relay tcp|serial ...`: each transaction goes on to an
//! upstream Concert terminal, translated to V2 when the upstream speaks V2,
//! and its outcome comes back. A request that left but got no answer has
//! an outcome nobody knows: it is answered as such and, with a V3 upstream,
//! resolved later by asking the upstream for the transaction status.

use crate::answer::{Af, Outcome};
use crate::backend::{Backend, Done, Transaction};
use crate::client::{self, serial_link::Line};
use crate::config::{Format, Upstream};
use crate::framing::{self, Wrapping, NAK};
use crate::pan;
use crate::request::{Operation, Request};
use crate::tlv::{tags, Frame, Tag};
use crate::v2;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

const CONNECT: Duration = Duration::from_secs(5);
/// A V3 answer over TCP is complete when whole and then quiet this long
/// (or when the upstream closes).
const QUIET: Duration = Duration::from_millis(300);
/// How often, and how long, an unknown outcome is asked for upstream.
const RESOLVE_EVERY: Duration = Duration::from_secs(2);
const RESOLVE_FOR: Duration = Duration::from_secs(3600);

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
        match s.read(&mut buf) {
            Ok(0) => break,
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
    if let Err(e) = line.send_request(payload) {
        return Sent::Refused(format!("{path}: {e}"));
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
/// end (an immediate answer was already given downstream).
fn v3_request(req: &Request) -> Vec<u8> {
    let mut f = Frame::new();
    for e in req.frame.elements().iter().filter(|e| e.tag != tags::BA) {
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
    let mut private = [b' '; 10];
    let cf = req.frame.get(tags::CF).unwrap_or_default();
    for (d, s) in private.iter_mut().zip(cf) {
        *d = *s;
    }
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
            if let Some(rep) = &r.rep {
                let mut b = rep.clone().into_bytes();
                pan::mask_in_place(&mut b);
                o.pan = Some(String::from_utf8_lossy(&b).into_owned());
            }
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
fn outcome_of(link: &Link, req: &Request, answer: &[u8]) -> Result<Outcome, String> {
    if link.v2 {
        let r = v2::parse_reply(answer).map_err(|e| format!("bad V2 reply: {e}"))?;
        return Ok(from_v2(req, &r));
    }
    let f = Frame::decode(answer).map_err(|(_, e)| format!("bad answer: {e}"))?;
    if !f.has(tags::AE) {
        return Err("answer without AE".into());
    }
    Ok(masked(Outcome::from_answer(&f, &req.frame)))
}

/// Is this status answer about the lost request, and not an older one of
/// the same register? Same operation, currency and private data, and the
/// same amount (or less, approved, for a partial approval).
fn same_transaction(answer: &Frame, req: &Request) -> bool {
    let digits = |v: Option<&[u8]>| -> Option<u64> { std::str::from_utf8(v?).ok()?.parse().ok() };
    let amount_ok = match (digits(answer.get(tags::CB)), req.amount) {
        (Some(a), Some(r)) => a == r || (a < r && answer.get(tags::AE) == Some(b"10")),
        (None, None) => true,
        _ => false,
    };
    answer.get(tags::CD) == req.frame.get(tags::CD)
        && answer.get(tags::CE) == req.frame.get(tags::CE)
        && answer.get(tags::CF) == req.frame.get(tags::CF)
        && amount_ok
}

/// A card number from upstream never goes further whole.
fn masked(mut o: Outcome) -> Outcome {
    if let Some(p) = &o.pan {
        let mut b = p.clone().into_bytes();
        if pan::mask_in_place(&mut b) {
            log::warn!("upstream sent a full card number: masked");
        }
        o.pan = Some(String::from_utf8_lossy(&b).into_owned());
    }
    o
}

/// Asks a V3 upstream for the status of the register's last transaction
/// until it says how the lost one ended.
fn resolve(link: Link, id: u64, req: Request, pokes: Receiver<()>, done: Sender<Done>) {
    let mut status = Frame::new();
    for t in [tags::CZ, tags::CJ, tags::CA] {
        status.echo(&req.frame, t);
    }
    status.push(tags::CD, &b"T"[..]);
    let status = status.encode();
    let until = Instant::now() + RESOLVE_FOR;
    while Instant::now() < until {
        match pokes.recv_timeout(RESOLVE_EVERY) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let Sent::Answer(a) = link.exchange(&status, Instant::now() + RESOLVE_EVERY * 5) else {
            continue;
        };
        let Ok(f) = Frame::decode(&a) else { continue };
        let same = same_transaction(&f, &req);
        if !same {
            // Still running upstream (CD=T), or not this transaction.
            continue;
        }
        log::info!("tx {id}: the upstream answered the status request");
        let _ = done.send(Done {
            id,
            outcome: masked(Outcome::from_answer(&f, &req.frame)),
            resolved: true,
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
        let spawned = std::thread::Builder::new()
            .name("relay".into())
            .spawn(move || {
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
                    Ok(p) => match link.exchange(&p, until) {
                        Sent::Refused(why) => {
                            log::warn!("tx {id}: upstream: {why}: declined");
                            Outcome::declined(Af::Unknown)
                        }
                        Sent::Answer(a) => match outcome_of(&link, &req, &a) {
                            Ok(o) => o,
                            Err(why) => lost(id, &link, &req, &why, poke_rx.clone(), &done),
                        },
                        Sent::Lost(why) => lost(id, &link, &req, &why, poke_rx.clone(), &done),
                    },
                };
                let _ = done.send(Done {
                    id,
                    outcome,
                    resolved: false,
                });
            });
        if let Err(e) = spawned {
            log::error!("tx {id}: cannot start the relay thread: {e}");
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
}

/// A request that left without a usable answer: unknown, and for a V3
/// upstream a resolver starts asking for the status.
fn lost(
    id: u64,
    link: &Link,
    req: &Request,
    why: &str,
    pokes: Receiver<()>,
    done: &Sender<Done>,
) -> Outcome {
    log::warn!("tx {id}: upstream: {why}: outcome unknown");
    if !link.v2 {
        let (link, req, done) = (link.clone(), req.clone(), done.clone());
        let _ = std::thread::Builder::new()
            .name("relay-resolve".into())
            .spawn(move || resolve(link, id, req, pokes, done));
    }
    Outcome::declined(Af::NotEnded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(body: &str) -> Request {
        crate::request::parse(body.as_bytes(), &[978]).unwrap()
    }

    #[test]
    fn v3_to_v2_and_back() {
        let r =
            req("CZ0040320CJ012247300123456CA00201CB0041000CD0010CE003978CF010ORDER00042CK003100");
        let p = v2_request(1, &r).unwrap();
        assert_eq!(p, b"0100001000110978ORDER00042A010B010");
        let reply = v2::parse_reply(&v2::reply(
            &v2::parse(&p).unwrap(),
            b'0',
            1000,
            Some("4970101234560674"),
        ))
        .unwrap();
        let o = from_v2(&r, &reply);
        assert!(o.is_approved());
        assert_eq!(o.pan.as_deref(), Some("497010######0674"));
        assert_eq!(o.amount, None);
        let refused =
            v2::parse_reply(&v2::reply(&v2::parse(&p).unwrap(), b'7', 1000, None)).unwrap();
        assert_eq!(
            from_v2(&r, &refused).status,
            crate::answer::Status::Declined(Af::Refused)
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
        assert!(same_transaction(&partial, &r));
        let older =
            Frame::decode(b"CZ0040320CA00201CB0042000CD0010CE003978AE00210CF003abc").unwrap();
        assert!(!same_transaction(&older, &r));
        let other_cf =
            Frame::decode(b"CZ0040320CA00201CB0041000CD0010CE003978AE00210CF003xyz").unwrap();
        assert!(!same_transaction(&other_cf, &r));
    }

    #[test]
    fn immediate_answers_are_not_asked_upstream() {
        let r = req("CZ0040320CA00201CB0041000CD0010CE003978BA0011");
        assert_eq!(v3_request(&r), b"CZ0040320CA00201CB0041000CD0010CE003978");
    }
}
