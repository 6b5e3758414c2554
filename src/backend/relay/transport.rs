//! The way to the upstream: a request sent over TCP or the serial line,
//! built for a V3 or a V2 (E+) upstream, and its answer read back as an
//! outcome.

use super::settle::masked;
use crate::client::{self, serial_link::Line, MAX_ANSWER};
use crate::config::{Format, Upstream};
use crate::wire::answer::{Af, Outcome};
use crate::wire::framing::{self, Wrapping, NAK};
use crate::wire::request::{Operation, Request};
use crate::wire::tlv::{tags, Frame, Tag};
use crate::wire::v2;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

const CONNECT: Duration = Duration::from_secs(5);
/// A V3 answer over TCP is complete when whole and then quiet this long
/// (or when the upstream closes).
const QUIET: Duration = Duration::from_millis(300);

/// What became of a request sent upstream.
pub(super) enum Sent {
    /// It never reached the terminal (unreachable, refused, NAKed).
    Refused(String),
    Answer(Vec<u8>),
    /// It left, and no usable answer came back.
    Lost(String),
}

#[derive(Clone)]
pub(super) struct Link {
    pub(super) upstream: Upstream,
    pub(super) v2: bool,
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
    pub(super) fn exchange(&self, payload: &[u8], until: Instant) -> Sent {
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
pub(super) fn v3_request(req: &Request) -> Vec<u8> {
    let mut f = Frame::new();
    let relayed = |t: &Tag| *t != tags::BA && *t != tags::IM;
    for e in req.frame.elements().iter().filter(|e| relayed(&e.tag)) {
        f.push(e.tag, e.value.clone());
    }
    f.encode()
}

/// The V2 (E+) request for a V3 one; what V2 cannot carry is dropped and
/// said in the log.
pub(super) fn v2_request(id: u64, req: &Request) -> Result<Vec<u8>, String> {
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
pub(super) fn outcome_of(
    id: u64,
    v2: bool,
    req: &Request,
    answer: &[u8],
) -> Result<Outcome, String> {
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
pub(super) fn status_request(req: &Request) -> Vec<u8> {
    let mut status = Frame::new();
    for t in [tags::CZ, tags::CJ, tags::CA] {
        status.echo(&req.frame, t);
    }
    status.push(tags::CD, &b"T"[..]);
    status.encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(body: &str) -> Request {
        crate::wire::request::parse(body.as_bytes(), &[978]).unwrap()
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
}
