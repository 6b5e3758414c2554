//! Concert V2 (protocols E and E+): fixed-position ASCII messages, read
//! and written here without any I/O. A request is turned into the V3 frame
//! it means, so the rest of concertd handles both versions the same way;
//! the V3 answer is turned back into the 25- or 80-byte V2 reply that
//! clients read by position.

use crate::wire::tlv::{is_printable, tags::*, Frame};
use std::fmt;

/// Which request layout came, told apart by the payload length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// 26 bytes: no answer-delay or authorisation fields.
    E,
    /// 28 bytes: PayXpert's table, with a 1-byte DELAI and a 1-byte AUTO.
    E28,
    /// 34 bytes: `A01x` and `B01x`, what every public client sends.
    EPlus,
}

/// A V2 request payload (the bytes between STX and ETX).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V2Request {
    /// Register number, echoed.
    pub pos: [u8; 2],
    /// Minor units.
    pub amount: u64,
    /// Answer flag as received; only `1` asks for the long reply.
    pub ind: u8,
    /// Payment mode (`1` card, `C` cheque, ...), echoed.
    pub mode: u8,
    /// Transaction type; the caller decides which ones it supports.
    pub kind: u8,
    /// ISO 4217 numeric, echoed.
    pub currency: [u8; 3],
    /// Echoed.
    pub private: [u8; 10],
    pub immediate: bool,
    pub force_auth: bool,
    pub protocol: Protocol,
}

/// Why a payload is not a V2 message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum V2Error {
    /// The payload length, which is none of the known layouts.
    Length(usize),
    /// The field that holds a bad value.
    Field(&'static str),
}

impl fmt::Display for V2Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            V2Error::Length(n) => write!(f, "V2 message of {n} bytes"),
            V2Error::Field(name) => write!(f, "bad V2 field: {name}"),
        }
    }
}

impl std::error::Error for V2Error {}

const E_LEN: usize = 26;
const E28_LEN: usize = 28;
const EPLUS_LEN: usize = 34;
const REP_LEN: usize = 55;
const SHORT_REPLY: usize = 25;
const LONG_REPLY: usize = SHORT_REPLY + REP_LEN;
const MAX_AMOUNT: u64 = 99_999_999;

fn digits<const N: usize>(v: &[u8], name: &'static str) -> Result<[u8; N], V2Error> {
    let out: [u8; N] = v.try_into().map_err(|_| V2Error::Field(name))?;
    if out.iter().all(u8::is_ascii_digit) {
        Ok(out)
    } else {
        Err(V2Error::Field(name))
    }
}

fn printable<const N: usize>(v: &[u8], name: &'static str) -> Result<[u8; N], V2Error> {
    let out: [u8; N] = v.try_into().map_err(|_| V2Error::Field(name))?;
    if out.iter().copied().all(is_printable) {
        Ok(out)
    } else {
        Err(V2Error::Field(name))
    }
}

fn number(v: &[u8]) -> u64 {
    // Saturating so that an over-long V3 CB cannot overflow; the reply caps
    // it to 8 digits anyway.
    v.iter().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    })
}

/// The E+ tail field `<letter>01<x>`, with x among `allowed`.
fn tail_field(v: &[u8], letter: u8, allowed: &[u8], name: &'static str) -> Result<u8, V2Error> {
    match v {
        [l, b'0', b'1', x] if *l == letter && allowed.contains(x) => Ok(*x),
        _ => Err(V2Error::Field(name)),
    }
}

/// A PayXpert 1-byte flag: `1` set, `0` unset.
fn flag(b: u8, name: &'static str) -> Result<bool, V2Error> {
    match b {
        b'1' => Ok(true),
        b'0' => Ok(false),
        _ => Err(V2Error::Field(name)),
    }
}

/// Reads a request payload. Every byte must be printable ASCII: the link
/// layer has already stripped any parity bit.
pub fn parse(payload: &[u8]) -> Result<V2Request, V2Error> {
    let protocol = match payload.len() {
        E_LEN => Protocol::E,
        E28_LEN => Protocol::E28,
        EPLUS_LEN => Protocol::EPlus,
        n => return Err(V2Error::Length(n)),
    };
    // Fields are checked in wire order, so the error names the first bad one.
    let pos = digits(&payload[0..2], "POS number")?;
    let amount = number(&digits::<8>(&payload[2..10], "amount")?);
    let [ind] = printable(&payload[10..11], "answer flag")?;
    let [mode] = printable(&payload[11..12], "payment mode")?;
    let [kind] = printable(&payload[12..13], "transaction type")?;
    let currency = digits(&payload[13..16], "currency")?;
    let private = printable(&payload[16..26], "private data")?;
    let (immediate, force_auth) = match protocol {
        Protocol::E => (false, false),
        Protocol::E28 => (
            flag(payload[26], "answer delay")?,
            flag(payload[27], "authorisation")?,
        ),
        Protocol::EPlus => (
            tail_field(&payload[26..30], b'A', b"01", "answer delay")? == b'1',
            // B012's meaning is unknown; accepting it without forcing is
            // the harmless reading.
            tail_field(&payload[30..34], b'B', b"012", "authorisation")? == b'1',
        ),
    };
    Ok(V2Request {
        pos,
        amount,
        ind,
        mode,
        kind,
        currency,
        private,
        immediate,
        force_auth,
        protocol,
    })
}

impl V2Request {
    /// The V3 request this V2 request means. CD is the V2 type byte as is,
    /// so a type that is also a V3 non-payment code (`3`, `I`, `T`...)
    /// would read as that operation: callers accept only `0`, `1`, `2`
    /// before handing the frame on.
    pub fn to_v3(&self) -> Frame {
        let mut f = Frame::new();
        f.push(CZ, &b"0320"[..]);
        f.push(CA, self.pos.to_vec());
        f.push(CB, format!("{:02}", self.amount).into_bytes());
        f.push(CD, vec![self.kind]);
        f.push(CE, self.currency.to_vec());
        // Clients send spaces for "no private data"; V3 says that by
        // leaving CF out.
        if self.private.iter().any(|&b| b != b' ') {
            f.push(CF, self.private.to_vec());
        }
        if self.mode == b'C' {
            f.push(CC, &b"00C"[..]);
        }
        if self.force_auth {
            f.push(BB, &b"1"[..]);
        }
        if self.immediate {
            f.push(BA, &b"1"[..]);
        }
        f
    }

    /// Whether the reply must carry the 55-byte REP (83 bytes framed):
    /// clients read a fixed count, so this decides the reply size.
    pub fn long_reply(&self) -> bool {
        self.ind == b'1'
    }
}

/// Reply payload (without STX/ETX/LRC): pos, stat, amount, mode, [REP if
/// the request asked for it], currency, private; 25 or 80 bytes. The PAN is
/// written as given (the caller masks it) and cut to 55 bytes.
pub fn reply(req: &V2Request, stat: u8, amount: u64, pan: Option<&str>) -> Vec<u8> {
    let long = req.long_reply();
    let mut out = Vec::with_capacity(if long { LONG_REPLY } else { SHORT_REPLY });
    out.extend_from_slice(&req.pos);
    out.push(stat);
    out.extend_from_slice(format!("{:08}", amount.min(MAX_AMOUNT)).as_bytes());
    out.push(req.mode);
    if long {
        let mut rep = [b' '; REP_LEN];
        for (r, b) in rep.iter_mut().zip(pan.unwrap_or("").bytes()) {
            // A control byte from a backend would break the V2 frame, whose
            // bytes must all be printable.
            *r = if is_printable(b) { b } else { b'?' };
        }
        out.extend_from_slice(&rep);
    }
    out.extend_from_slice(&req.currency);
    out.extend_from_slice(&req.private);
    out
}

/// The reply for a V3 answer: `0` when approved (AE=10), else `7`; the
/// answer's CB when it is a number (partial approval), else the request
/// amount; REP from AA.
pub fn reply_from_answer(req: &V2Request, answer: &Frame) -> Vec<u8> {
    let stat = if answer.get(AE) == Some(b"10") {
        b'0'
    } else {
        b'7'
    };
    let amount = match answer.get(CB) {
        Some(cb) if !cb.is_empty() && cb.iter().all(u8::is_ascii_digit) => number(cb),
        _ => req.amount,
    };
    reply(req, stat, amount, answer.text(AA))
}

/// The reply to an `A011` request, sent before the transaction runs: `9`
/// says "request handled", not an outcome.
pub fn immediate_reply(req: &V2Request) -> Vec<u8> {
    reply(req, b'9', req.amount, None)
}

/// The 10-byte private field of a V2 request: `data` left-aligned, padded
/// with spaces (what clients send for "none"), cut past 10 bytes.
pub fn private_field(data: &[u8]) -> [u8; 10] {
    let mut private = [b' '; 10];
    for (d, s) in private.iter_mut().zip(data) {
        *d = *s;
    }
    private
}

/// A 34-byte E+ request, for the `concert` client. An amount above
/// 99 999 999 or a currency above 999 makes the payload longer, and any
/// terminal refuses it: the caller checks them, as a payment amount must
/// never be changed silently.
///
/// The private field comes from [`private_field`].
// One argument per wire field keeps the call readable against the layout.
#[allow(clippy::too_many_arguments)]
pub fn request_eplus(
    pos: [u8; 2],
    amount: u64,
    ind: u8,
    mode: u8,
    kind: u8,
    currency: u16,
    private: [u8; 10],
    immediate: bool,
    force: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(EPLUS_LEN);
    out.extend_from_slice(&pos);
    out.extend_from_slice(format!("{amount:08}").as_bytes());
    out.extend_from_slice(&[ind, mode, kind]);
    out.extend_from_slice(format!("{currency:03}").as_bytes());
    out.extend_from_slice(&private);
    out.extend_from_slice(if immediate { b"A011" } else { b"A010" });
    out.extend_from_slice(if force { b"B011" } else { b"B010" });
    out
}

/// A reply as the client reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V2Reply {
    pub pos: [u8; 2],
    /// `0` approved, `7` refused, `9` request handled (immediate reply).
    pub stat: u8,
    pub amount: u64,
    pub mode: u8,
    /// The REP trimmed; `None` in a short reply or when it is blank.
    pub rep: Option<String>,
    pub currency: [u8; 3],
    pub private: [u8; 10],
}

/// Reads a 25- or 80-byte reply payload.
pub fn parse_reply(payload: &[u8]) -> Result<V2Reply, V2Error> {
    let rep_len = match payload.len() {
        SHORT_REPLY => 0,
        LONG_REPLY => REP_LEN,
        n => return Err(V2Error::Length(n)),
    };
    let pos = digits(&payload[0..2], "POS number")?;
    let [stat] = printable(&payload[2..3], "result")?;
    let amount = number(&digits::<8>(&payload[3..11], "amount")?);
    let [mode] = printable(&payload[11..12], "payment mode")?;
    let (rep, rest) = payload[12..].split_at(rep_len);
    let rep = match rep_len {
        0 => None,
        _ => {
            let rep: [u8; REP_LEN] = printable(rep, "REP")?;
            // Printable ASCII is valid UTF-8.
            std::str::from_utf8(&rep)
                .map(str::trim)
                .ok()
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        }
    };
    Ok(V2Reply {
        pos,
        stat,
        amount,
        mode,
        rep,
        currency: digits(&rest[0..3], "currency")?,
        private: printable(&rest[3..13], "private data")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// pyTeliumManager / odoo-driver, §6.1: IND=1, A010, B010.
    const PTM: &[u8] = b"0100001000110978          A010B010";
    /// pypostelium / OCA Odoo 8, §6.1: IND=0, A011, B010.
    const PYP: &[u8] = b"0100001000010978          A011B010";

    fn req(p: &[u8]) -> V2Request {
        parse(p).unwrap()
    }

    fn answer(s: &str) -> Frame {
        Frame::decode(s.as_bytes()).unwrap()
    }

    fn spaces(n: usize) -> String {
        " ".repeat(n)
    }

    #[test]
    fn parses_the_clients_requests() {
        let r = req(PTM);
        assert_eq!(r.pos, *b"01");
        assert_eq!(r.amount, 1000);
        assert!(r.long_reply());
        assert!(!r.immediate && !r.force_auth);
        assert_eq!((r.mode, r.kind), (b'1', b'0'));
        assert_eq!(r.currency, *b"978");
        assert_eq!(r.private, [b' '; 10]);
        assert_eq!(r.protocol, Protocol::EPlus);

        let r = req(PYP);
        assert!(r.immediate && !r.force_auth && !r.long_reply());

        let r = req(b"0100001000110978          ");
        assert_eq!(r.protocol, Protocol::E);
        assert!(r.long_reply() && !r.immediate && !r.force_auth);
    }

    #[test]
    fn payxpert_28_byte_layout() {
        let r = req(b"0100001000010978          11");
        assert_eq!(r.protocol, Protocol::E28);
        assert!(r.immediate && r.force_auth);
        let r = req(b"0100001000010978          00");
        assert!(!r.immediate && !r.force_auth);
        assert_eq!(
            parse(b"0100001000010978          A0"),
            Err(V2Error::Field("answer delay"))
        );
        assert_eq!(
            parse(b"0100001000010978          12"),
            Err(V2Error::Field("authorisation"))
        );
    }

    #[test]
    fn eplus_tail() {
        assert!(req(b"0100001000010978          A010B011").force_auth);
        assert!(!req(b"0100001000010978          A010B012").force_auth);
        for bad in [
            &b"0100001000010978          A012B010"[..],
            b"0100001000010978          B010A010",
            b"0100001000010978          A020B010",
        ] {
            assert_eq!(parse(bad), Err(V2Error::Field("answer delay")));
        }
        assert_eq!(
            parse(b"0100001000010978          A010B013"),
            Err(V2Error::Field("authorisation"))
        );
    }

    #[test]
    fn rejects_bad_requests() {
        assert_eq!(parse(&PTM[..33]), Err(V2Error::Length(33)));
        assert_eq!(parse(b""), Err(V2Error::Length(0)));
        assert_eq!(
            parse(b"01000010x0110978          A010B010"),
            Err(V2Error::Field("amount"))
        );
        assert_eq!(
            parse(b"0x00001000110978          A010B010"),
            Err(V2Error::Field("POS number"))
        );
        assert_eq!(
            parse(b"01000010001109 8          A010B010"),
            Err(V2Error::Field("currency"))
        );
        assert_eq!(
            parse(b"0100001000110978     \x01    A010B010"),
            Err(V2Error::Field("private data"))
        );
        assert_eq!(
            parse(b"0100001000\x7f10978          A010B010"),
            Err(V2Error::Field("answer flag"))
        );
    }

    #[test]
    fn approved_long_reply_is_byte_exact() {
        let got = reply(&req(PTM), b'0', 1000, Some("4111111111111111"));
        let want = format!(
            "0100000100014111111111111111{}978{}",
            spaces(39),
            spaces(10)
        );
        assert_eq!(got, want.as_bytes());
        assert_eq!(got.len(), 80);
    }

    #[test]
    fn refused_long_reply_is_byte_exact() {
        let a = answer("CZ0040320CA00201CB0041000CD0010CE003978AE00201AF00204");
        let want = format!("017000010001{}978{}", spaces(55), spaces(10));
        assert_eq!(reply_from_answer(&req(PTM), &a), want.as_bytes());
    }

    #[test]
    fn short_replies_are_byte_exact() {
        let a = answer("CZ0040320CA00201CB0041000CD0010CE003978AE00210AA016497010######0674");
        let got = reply_from_answer(&req(PYP), &a);
        assert_eq!(got, format!("010000010001978{}", spaces(10)).as_bytes());
        assert_eq!(got.len(), 25);
        assert_eq!(
            immediate_reply(&req(PYP)),
            format!("019000010001978{}", spaces(10)).as_bytes()
        );
    }

    #[test]
    fn reply_from_answer_takes_pan_and_partial_amount() {
        let a = answer("CZ0040320CA00201CB0040628CD0010CE003978AE00210AA016497010######0674");
        let got = reply_from_answer(&req(PTM), &a);
        assert!(got.starts_with(b"010000006281497010######0674 "));
        let r = parse_reply(&got).unwrap();
        assert_eq!(r.amount, 628);
        assert_eq!(r.stat, b'0');
        assert_eq!(r.rep.as_deref(), Some("497010######0674"));
    }

    #[test]
    fn reply_caps_amount_and_cleans_rep() {
        let got = reply(&req(PTM), b'0', 123_456_789_012, Some("12\x0134"));
        assert_eq!(&got[3..11], b"99999999");
        assert_eq!(&got[12..17], b"12?34");
    }

    #[test]
    fn to_v3_encodes_the_equivalent_request() {
        assert_eq!(
            req(PTM).to_v3().encode(),
            b"CZ0040320CA00201CB0041000CD0010CE003978"
        );
        let mut r = req(PTM);
        r.private = *b"ORDER00042";
        assert_eq!(
            r.to_v3().encode(),
            b"CZ0040320CA00201CB0041000CD0010CE003978CF010ORDER00042"
        );
        let r = req(b"01000010001C0978          A011B011");
        assert_eq!(
            r.to_v3().encode(),
            b"CZ0040320CA00201CB0041000CD0010CE003978CC00300CBB0011BA0011"
        );
        let r = req(b"0100000005111978          ");
        assert_eq!(r.to_v3().text(CB), Some("05"));
        assert_eq!(r.to_v3().text(CD), Some("1"));
    }

    #[test]
    fn to_v3_is_a_valid_v3_request() {
        let r = crate::wire::request::interpret(req(PTM).to_v3(), &[978]).unwrap();
        assert_eq!(r.op, crate::wire::request::Operation::Debit);
        assert_eq!(
            (r.register, r.amount, r.currency),
            (1, Some(1000), Some(978))
        );
        let r = crate::wire::request::interpret(req(PYP).to_v3(), &[978]).unwrap();
        assert!(r.immediate);
    }

    #[test]
    fn request_eplus_matches_the_clients() {
        let p = [b' '; 10];
        assert_eq!(
            request_eplus(*b"01", 1000, b'1', b'1', b'0', 978, p, false, false),
            PTM
        );
        assert_eq!(
            request_eplus(*b"01", 1000, b'0', b'1', b'0', 978, p, true, false),
            PYP
        );
    }

    #[test]
    fn parse_reply_checks_lengths_and_fields() {
        let short = format!("010000010001978{}", spaces(10));
        let r = parse_reply(short.as_bytes()).unwrap();
        assert_eq!(
            r,
            V2Reply {
                pos: *b"01",
                stat: b'0',
                amount: 1000,
                mode: b'1',
                rep: None,
                currency: *b"978",
                private: [b' '; 10],
            }
        );
        let long = format!("017000010001{}978ORDER00042", spaces(55));
        let r = parse_reply(long.as_bytes()).unwrap();
        assert_eq!((r.stat, r.rep, r.private), (b'7', None, *b"ORDER00042"));
        assert_eq!(
            parse_reply(&short.as_bytes()[1..]),
            Err(V2Error::Length(24))
        );
        assert_eq!(
            parse_reply(format!("01000001x001978{}", spaces(10)).as_bytes()),
            Err(V2Error::Field("amount"))
        );
    }

    fn printable_byte() -> impl Strategy<Value = u8> {
        0x20u8..=0x7e
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse(&bytes);
            let _ = parse_reply(&bytes);
        }

        #[test]
        fn parse_never_panics_at_known_lengths(
            len in prop_oneof![Just(26usize), Just(28), Just(34), Just(25), Just(80)],
            bytes in proptest::collection::vec(any::<u8>(), 80),
        ) {
            let _ = parse(&bytes[..len]);
            let _ = parse_reply(&bytes[..len]);
        }

        #[test]
        fn request_eplus_round_trips(
            pos in 0u8..100,
            amount in 0u64..=MAX_AMOUNT,
            ind in printable_byte(),
            mode in printable_byte(),
            kind in printable_byte(),
            currency in 0u16..1000,
            private in proptest::collection::vec(printable_byte(), 10),
            immediate in any::<bool>(),
            force in any::<bool>(),
        ) {
            let pos = [b'0' + pos / 10, b'0' + pos % 10];
            let mut priv10 = [0u8; 10];
            priv10.copy_from_slice(&private);
            let bytes = request_eplus(
                pos, amount, ind, mode, kind, currency, priv10, immediate, force,
            );
            let r = parse(&bytes).unwrap();
            prop_assert_eq!(r.pos, pos);
            prop_assert_eq!(r.amount, amount);
            prop_assert_eq!((r.ind, r.mode, r.kind), (ind, mode, kind));
            prop_assert_eq!(r.currency.to_vec(), format!("{currency:03}").into_bytes());
            prop_assert_eq!(r.private, priv10);
            prop_assert_eq!((r.immediate, r.force_auth), (immediate, force));
            prop_assert_eq!(r.protocol, Protocol::EPlus);
        }

        #[test]
        fn every_reply_parses_back(
            amount in 0u64..=MAX_AMOUNT,
            ind in printable_byte(),
            stat in prop_oneof![Just(b'0'), Just(b'7'), Just(b'9')],
            pan in "[0-9#]{0,19}",
        ) {
            let r = req(&request_eplus(
                *b"42", 1, ind, b'1', b'0', 978, *b"ORDER00042", false, false,
            ));
            let bytes = reply(&r, stat, amount, Some(&pan));
            prop_assert_eq!(bytes.len(), if ind == b'1' { 80 } else { 25 });
            let back = parse_reply(&bytes).unwrap();
            prop_assert_eq!((back.pos, back.stat, back.amount), (*b"42", stat, amount));
            let want = (ind == b'1' && !pan.is_empty()).then(|| pan.clone());
            prop_assert_eq!(back.rep, want);
            prop_assert_eq!(back.private, *b"ORDER00042");
        }
    }
}
