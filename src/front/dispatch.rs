//! From request bytes to a job for the worker, and from its reply to the
//! answer bytes: the same for TCP and the serial line. Each way in keeps
//! its own framing, its own log wording and how it hands the job over
//! (TCP waits for the reply; the serial line ACKs only once it started).

use crate::terminal::worker::Reply;
use crate::wire::answer::{self, Af};
use crate::wire::profile::{self, Profile};
use crate::wire::request::{self, Request};
use crate::wire::tlv::Frame;
use crate::wire::v2::{self, V2Request};

/// How a request came, so that its answer goes back the same way.
#[derive(Clone, Debug)]
pub enum Kind {
    /// A Concert V3 frame.
    V3,
    /// A Concert V2 request: its reply has fixed fields.
    V2(V2Request),
    /// V3 with no link layer at all on the serial line, as one public
    /// client sends it.
    Raw,
}

/// What to do with the bytes of one request.
pub enum Job {
    /// Hand it to the worker.
    Submit(Request, Kind),
    /// Answer it at once with this refusal; the sentence says why, for the
    /// log (after the channel's own prefix).
    Refuse(Kind, Reply, String),
    /// Not a request that can be answered in its own protocol: NAK it.
    Nak(String),
}

/// The job for a request payload (framing removed), read as V3 or as V2.
pub fn job(payload: &[u8], v3: bool, currencies: &[u16]) -> Job {
    if v3 {
        return match request::parse(payload, currencies) {
            Ok(req) => Job::Submit(req, Kind::V3),
            Err(rej) => Job::Refuse(
                Kind::V3,
                refusal(&rej.frame, rej.af),
                format!("request refused: {rej}"),
            ),
        };
    }
    let v = match v2::parse(payload) {
        Ok(v) => v,
        Err(e) => return Job::Nak(format!("not a V2 request ({e})")),
    };
    if !matches!(v.kind, b'0' | b'1' | b'2') {
        let why = format!("transaction type {:?} not supported", v.kind as char);
        return v2_refusal(v, why);
    }
    match request::interpret(v.to_v3(), currencies) {
        Ok(req) => Job::Submit(req, Kind::V2(v)),
        Err(rej) => v2_refusal(v, rej.to_string()),
    }
}

/// A V2 request refused: status `7`, its own amount, no card number.
fn v2_refusal(v: V2Request, why: String) -> Job {
    let reply = refusal(&Frame::new(), Af::Refused);
    Job::Refuse(Kind::V2(v), reply, format!("V2 request refused: {why}"))
}

/// A refusal that ends no transaction.
pub fn refusal(req: &Frame, af: Af) -> Reply {
    Reply {
        frame: answer::refusal(req, Some(af)),
        tx: None,
        immediate: None,
    }
}

/// The answer to bytes that are not a whole V3 request (`AF=09`), echoing
/// what could be read of them.
pub fn malformed(body: &[u8]) -> Reply {
    let partial = Frame::decode(body).unwrap_or_else(|(p, _)| p);
    refusal(&partial, Af::Format)
}

/// A reply in the shape of the terminal concertd plays
/// (`terminal-profile`), for a V3 answer: a V2 reply has fixed fields.
/// `req` is the request when it could be read.
pub fn shaped(kind: &Kind, mut reply: Reply, req: Option<&Frame>, profile: Profile) -> Reply {
    if matches!(kind, Kind::V3 | Kind::Raw) {
        reply.frame = profile::shape(profile, req, &reply.frame);
    }
    reply
}

/// The answer payload (before the channel's framing) for a reply.
pub fn payload(kind: &Kind, reply: &Reply) -> Vec<u8> {
    match kind {
        Kind::V3 | Kind::Raw => reply.frame.encode(),
        Kind::V2(v) if reply.immediate.is_some() => v2::immediate_reply(v),
        Kind::V2(v) => v2::reply_from_answer(v, &reply.frame),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_refused(req: &[u8]) -> (V2Request, Vec<u8>) {
        match job(req, false, &[978]) {
            Job::Refuse(Kind::V2(v), reply, _) => {
                let bytes = payload(&Kind::V2(v.clone()), &reply);
                (v, bytes)
            }
            _ => panic!("not refused"),
        }
    }

    #[test]
    fn a_v2_refusal_is_the_bytes_tcp_sent_before() {
        // TCP built it as `v2::reply(&v, b'7', v.amount, None)`, the serial
        // line from `answer::refusal`: one builder now, the same bytes.
        for req in [
            // An unknown transaction type, long and short replies.
            &b"0100001234115978          A010B010"[..],
            b"0100001234015978          A011B010",
            // A currency the terminal does not take.
            b"0100001234110999          A010B010",
            b"0100001234010999          ",
        ] {
            let (v, bytes) = v2_refused(req);
            assert_eq!(bytes, v2::reply(&v, b'7', v.amount, None), "{req:?}");
        }
    }

    #[test]
    fn requests_become_jobs() {
        assert!(matches!(
            job(b"CZ0040320CA00201CD001I", true, &[978]),
            Job::Submit(_, Kind::V3)
        ));
        assert!(matches!(
            job(b"0100001234110978          A010B010", false, &[978]),
            Job::Submit(_, Kind::V2(_))
        ));
        match job(b"CZ0040320CA00201CD001Q", true, &[978]) {
            Job::Refuse(Kind::V3, r, why) => {
                assert_eq!(r.frame.get(crate::wire::tlv::tags::AE), Some(&b"01"[..]));
                assert!(why.starts_with("request refused: "), "{why}");
            }
            _ => panic!("not refused"),
        }
        match job(b"hello", false, &[978]) {
            Job::Nak(why) => assert!(why.starts_with("not a V2 request"), "{why}"),
            _ => panic!("not NAKed"),
        }
    }
}
