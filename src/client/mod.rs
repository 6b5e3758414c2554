//! The cash-register side, for the `concert` tool: build a request, send
//! it over TCP, read the answer, and describe it for a person.

use crate::wire::answer::Af;
use crate::wire::currency;
use crate::wire::framing::{lrc, ETX, STX};
use crate::wire::ticket;
use crate::wire::tlv::{step, tags::*, DecodeError, Frame, Step};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Longest answer read from a terminal; past it the answer is not read
/// further. Every tag a terminal is documented to answer, each at its
/// longest, comes to under 4 KiB; this is also the longest request
/// concertd takes.
pub const MAX_ANSWER: usize = crate::wire::assemble::MAX_REQUEST;

/// The IPC concertd's client sends (the example value used by HiPay, Viva
/// and Dolibarr); terminals do not check it.
pub const CJ_DEFAULT: &str = "247300123456";

#[derive(Clone, Debug)]
pub struct Options {
    pub version: String,
    pub register: String,
    pub currency: u16,
    pub ticket: Option<String>,
    pub private: Option<String>,
    pub immediate: bool,
    /// `IM` on a refund: the transaction id (a debit answer's `ID`) of
    /// the debit it refunds.
    pub refund_of: Option<String>,
    /// `BF=1` on a payment: the register accepts an approval for less than
    /// it asked (a partial approval).
    pub partial: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            version: "0320".into(),
            register: "01".into(),
            currency: 978,
            ticket: None,
            private: None,
            immediate: false,
            refund_of: None,
            partial: false,
        }
    }
}

fn head(o: &Options) -> Frame {
    let mut f = Frame::new();
    f.push(CZ, o.version.as_bytes().to_vec());
    f.push(CJ, CJ_DEFAULT.as_bytes().to_vec());
    f.push(CA, o.register.as_bytes().to_vec());
    f
}

fn tail(f: &mut Frame, o: &Options) {
    if o.immediate {
        f.push(BA, &b"1"[..]);
    }
    if let Some(t) = &o.ticket {
        f.push(CK, t.as_bytes().to_vec());
    }
    if let Some(p) = &o.private {
        f.push(CF, p.as_bytes().to_vec());
    }
}

/// Debit `0`, credit `1`, cancellation `2` or deferred debit `7` of
/// `amount` minor units.
pub fn payment(cd: u8, amount: u64, o: &Options) -> Frame {
    let mut f = head(o);
    f.push(CB, format!("{amount:02}").into_bytes());
    f.push(CD, vec![cd]);
    f.push(CE, format!("{:03}", o.currency).into_bytes());
    if let (b'1', Some(im)) = (cd, &o.refund_of) {
        f.push(IM, im.as_bytes().to_vec());
    }
    if o.partial {
        f.push(BF, &b"1"[..]);
    }
    tail(&mut f, o);
    f
}

/// What `concert` is asked to do: its command and argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Pay(u64),
    /// A deferred debit (`CD=7`).
    Defer(u64),
    Refund(u64),
    Cancel(u64),
    Duplicate,
    Ping,
    Status,
    Telecollect,
    Print(String),
    /// A frame sent as it is.
    Send(String),
}

/// Largest amount `concert` sends, in minor units: 12 digits.
const MAX_AMOUNT: u64 = 999_999_999_999;

/// An amount from the command line, in minor units of `currency`; the
/// error says what is wrong with it, so that nobody has to guess.
pub fn amount(a: &str, currency: u16) -> Result<u64, String> {
    let cur = currency::label(currency);
    let exp = usize::from(currency::exponent(currency));
    let number = a.strip_prefix('-').unwrap_or(a);
    let (int, frac) = number.split_once(['.', ',']).unwrap_or((number, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() && frac.is_empty() || !digits(int) || !digits(frac) {
        return Err(format!(
            "amount {a:?} is not a number: write it like 12.34 or 12,34"
        ));
    }
    if a.starts_with('-') {
        return Err(format!(
            "amount {a} is negative: amounts are positive; to give money back, use refund"
        ));
    }
    if frac.len() > exp {
        return Err(match exp {
            0 => format!("amount {a} has decimals, and {cur} has none"),
            _ => format!(
                "amount {a} has {} decimals, and {cur} has {exp}",
                frac.len()
            ),
        });
    }
    match currency::parse_amount(a, currency) {
        Some(0) => Err(format!(
            "amount {a} is zero: the smallest is {} {cur}",
            currency::format_amount(1, currency, false)
        )),
        Some(v) if v <= MAX_AMOUNT => Ok(v),
        _ => Err(format!(
            "amount {a} is too large: a Concert amount has 12 digits at most ({} {cur})",
            currency::format_amount(MAX_AMOUNT, currency, false)
        )),
    }
}

impl Command {
    /// The command `cmd` with its argument; amounts are read in `currency`.
    pub fn parse(cmd: &str, arg: Option<&str>, currency: u16) -> Result<Command, String> {
        let amount = |a: Option<&str>| -> Result<u64, String> {
            amount(a.ok_or_else(|| format!("{cmd} needs an AMOUNT"))?, currency)
        };
        Ok(match (cmd, arg) {
            ("pay", a) => Command::Pay(amount(a)?),
            ("defer", a) => Command::Defer(amount(a)?),
            ("refund", a) => Command::Refund(amount(a)?),
            ("cancel", a) => Command::Cancel(amount(a)?),
            ("duplicate", None) => Command::Duplicate,
            ("ping", None) => Command::Ping,
            ("status", None) => Command::Status,
            ("telecollect", None) => Command::Telecollect,
            ("print", Some(t)) => {
                if t.is_empty() || t.chars().count() > ticket::MAX_AK / 4 * 3 {
                    return Err("print takes 1 to 675 characters".into());
                }
                Command::Print(t.to_string())
            }
            ("send", Some(f)) => Command::Send(f.to_string()),
            _ => return Err(format!("bad command {cmd:?}")),
        })
    }

    /// A payment: its outcome may come after an immediate answer.
    pub fn is_payment(&self) -> bool {
        matches!(
            self,
            Command::Pay(_) | Command::Defer(_) | Command::Refund(_) | Command::Cancel(_)
        )
    }

    /// A request that may move money: a payment, or a frame sent as it is
    /// whose `CD` is a debit, credit, cancellation or deferred debit. Its
    /// answer lost, the outcome is unknown rather than failed.
    pub fn moves_money(&self) -> bool {
        match self {
            Command::Send(f) => read_answer(f.as_bytes())
                .ok()
                .and_then(|a| a.frame.get(CD).map(<[u8]>::to_vec))
                .is_some_and(|cd| matches!(cd.as_slice(), b"0" | b"1" | b"2" | b"7")),
            c => c.is_payment(),
        }
    }

    /// The Concert V3 request.
    pub fn v3(&self, o: &Options) -> Vec<u8> {
        match self {
            Command::Pay(a) => payment(b'0', *a, o).encode(),
            Command::Defer(a) => payment(b'7', *a, o).encode(),
            Command::Refund(a) => payment(b'1', *a, o).encode(),
            Command::Cancel(a) => payment(b'2', *a, o).encode(),
            Command::Duplicate => simple(b'3', o).encode(),
            Command::Ping => simple(b'I', o).encode(),
            Command::Status => simple(b'T', o).encode(),
            Command::Telecollect => simple(b'B', o).encode(),
            Command::Print(t) => print(t, o).encode(),
            Command::Send(f) => f.as_bytes().to_vec(),
        }
    }

    /// The Concert V2 (E+) request: payments only, amounts of 8 digits.
    pub fn v2(&self, o: &Options) -> Result<Vec<u8>, String> {
        let (kind, amount) = match self {
            Command::Pay(a) => (b'0', *a),
            Command::Refund(a) => (b'1', *a),
            Command::Cancel(a) => (b'2', *a),
            _ => return Err("with --v2 only pay, refund and cancel".into()),
        };
        if amount > 99_999_999 {
            return Err("a V2 amount has 8 digits at most".into());
        }
        let pos = o.register.as_bytes();
        let pos = [
            pos.first().copied().unwrap_or(b'0'),
            pos.get(1).copied().unwrap_or(b'1'),
        ];
        let private = crate::wire::v2::private_field(o.private.as_deref().unwrap_or("").as_bytes());
        Ok(crate::wire::v2::request_eplus(
            pos,
            amount,
            b'1',
            b'1',
            kind,
            o.currency,
            private,
            o.immediate,
            false,
        ))
    }
}

/// An operation with no amount: identification `I`, duplicata `3`,
/// telecollection `B`.
pub fn simple(cd: u8, o: &Options) -> Frame {
    let mut f = head(o);
    f.push(CD, vec![cd]);
    tail(&mut f, o);
    f
}

/// Print `text` (Latin-1 is what terminals print; UTF-8 is converted where
/// it can be).
pub fn print(text: &str, o: &Options) -> Frame {
    let latin1: Vec<u8> = text
        .chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
        .collect();
    let mut f = head(o);
    f.push(CD, &b"P"[..]);
    let mut zt = Frame::new();
    zt.push(CK, &b"100"[..]);
    zt.push(AK, crate::wire::base64::encode(&latin1).into_bytes());
    f.push(ZT, zt.encode());
    f
}

/// Why an exchange brought no answer, told by whether the terminal may
/// have taken the request: for a payment, the difference between "nothing
/// happened" and "the outcome is unknown".
#[derive(Debug)]
pub enum NoAnswer {
    /// The request never reached the terminal whole: no connection, a
    /// connection closed before the request was written; on a serial
    /// line, no ACK to ENQ or a NAK to the request.
    Unsent(io::Error),
    /// The request went out, and no answer came: the connection closed,
    /// reset or timed out after it was written, or the answer could not be
    /// read whole; on a serial line, no ACK to the request frame, or no
    /// answer after it.
    Unanswered(io::Error),
}

impl NoAnswer {
    pub fn error(&self) -> &io::Error {
        match self {
            NoAnswer::Unsent(e) | NoAnswer::Unanswered(e) => e,
        }
    }

    /// The terminal may have taken the request.
    pub fn sent(&self) -> bool {
        matches!(self, NoAnswer::Unanswered(_))
    }

    pub fn into_error(self) -> io::Error {
        match self {
            NoAnswer::Unsent(e) | NoAnswer::Unanswered(e) => e,
        }
    }
}

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error().fmt(f)
    }
}

impl std::error::Error for NoAnswer {}

/// The peer closed or reset the connection before anything was written:
/// a terminal that refuses the register's address does so at once.
fn closed_already(s: &TcpStream) -> Option<io::Error> {
    s.set_nonblocking(true).ok()?;
    let seen = match s.peek(&mut [0u8; 1]) {
        Ok(0) => Some(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed before the request was written",
        )),
        Err(e)
            if e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::Interrupted =>
        {
            Some(e)
        }
        _ => None,
    };
    let _ = s.set_nonblocking(false);
    seen
}

/// Sends one request and reads the answer until the terminal closes.
/// Returns the raw answer bytes (framing removed).
pub fn exchange_tcp(addr: &str, request: &[u8], timeout: Duration) -> Result<Vec<u8>, NoAnswer> {
    let target = addr
        .to_socket_addrs()
        .map_err(NoAnswer::Unsent)?
        .next()
        .ok_or_else(|| {
            NoAnswer::Unsent(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{addr}: no address"),
            ))
        })?;
    let mut s = TcpStream::connect_timeout(&target, timeout.min(Duration::from_secs(10)))
        .map_err(NoAnswer::Unsent)?;
    if let Some(e) = closed_already(&s) {
        return Err(NoAnswer::Unsent(e));
    }
    // Once a byte of the request is out, the terminal may act on it.
    let mut written = 0;
    while written < request.len() {
        match s.write(&request[written..]) {
            Ok(0) => {
                let e = io::Error::from(io::ErrorKind::WriteZero);
                return Err(if written == 0 {
                    NoAnswer::Unsent(e)
                } else {
                    NoAnswer::Unanswered(e)
                });
            }
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if written == 0 => return Err(NoAnswer::Unsent(e)),
            Err(e) => return Err(NoAnswer::Unanswered(e)),
        }
    }
    let lost = NoAnswer::Unanswered;
    s.shutdown(Shutdown::Write).map_err(lost)?;
    let deadline = Instant::now() + timeout;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let late = || lost(io::Error::new(io::ErrorKind::TimedOut, "no answer in time"));
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(late());
        }
        s.set_read_timeout(Some(left)).map_err(lost)?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if answer.len() + n > MAX_ANSWER + 3 => {
                return Err(lost(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("answer longer than {MAX_ANSWER} bytes"),
                )))
            }
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock) => return Err(late()),
            Err(e) => return Err(lost(e)),
        }
    }
    if answer.is_empty() {
        return Err(lost(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the terminal closed the connection without answering",
        )));
    }
    Ok(unwrap_stx(answer))
}

/// An answer as registers should read one: its elements up to the first
/// bytes that do not make one more (a terminal's trailing CR LF, a cut
/// element), which are kept aside, not taken as an error.
#[derive(Debug)]
pub struct Answer {
    pub frame: Frame,
    /// The bytes after the last element, ignored.
    pub ignored: Vec<u8>,
}

/// Reads an answer: an error only when not even a first element, `CZ`,
/// can be read, or when a tag comes twice (which value holds is not
/// known).
pub fn read_answer(bytes: &[u8]) -> Result<Answer, DecodeError> {
    let mut frame = Frame::new();
    let mut pos = 0;
    while pos < bytes.len() {
        match step(&bytes[pos..], pos) {
            Step::Whole(el, n) => {
                if frame.has(el.tag) {
                    return Err(DecodeError::Duplicate {
                        tag: el.tag,
                        offset: pos,
                    });
                }
                frame.push(el.tag, el.value);
                pos += n;
            }
            _ if frame.has(CZ) => break,
            Step::Cut => return Err(DecodeError::Truncated { offset: pos }),
            Step::Invalid(e) => return Err(e),
        }
    }
    match frame.elements().first() {
        None => Err(DecodeError::Empty),
        Some(e) if e.tag != CZ => Err(DecodeError::CzNotFirst),
        Some(_) => Ok(Answer {
            frame,
            ignored: bytes[pos..].to_vec(),
        }),
    }
}

/// Removes STX..ETX+LRC around an answer, if there is one and it is good.
pub fn unwrap_stx(bytes: Vec<u8>) -> Vec<u8> {
    if bytes.first() == Some(&STX) {
        if let Some(end) = bytes.iter().position(|&b| b == ETX) {
            if bytes.get(end + 1) == Some(&lrc(&bytes[1..=end])) {
                return bytes[1..end].to_vec();
            }
        }
    }
    bytes
}

/// What the register concludes from an answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Approved,
    Declined,
    /// AF 07: the terminal does not know how the transaction ended (it
    /// may have been approved): neither a refusal nor an approval.
    Unknown,
}

pub fn verdict(f: &Frame) -> Verdict {
    match (f.get(AE), f.get(AF)) {
        (Some(b"10"), _) => Verdict::Approved,
        (_, Some(b"07")) => Verdict::Unknown,
        _ => Verdict::Declined,
    }
}

fn row(out: &mut String, label: &str, value: &str) {
    out.push_str(&format!("  {label:<15}{value}\n"));
}

fn operation_name(cd: &[u8]) -> &'static str {
    crate::wire::request::Operation::from_cd(cd).map_or("operation", |op| op.label())
}

fn application_name(cc: &str) -> String {
    crate::wire::ticket::application(cc)
        .map_or_else(|| format!("application {cc}"), |a| a.name.into())
}

/// `AP` (`YYMMDDhhmmssZ`) as `20YY-MM-DD hh:mm:ss UTC`; as it came when
/// it is not that.
fn ap_readable(v: &str) -> String {
    let b = v.as_bytes();
    if b.len() != 13 || b[12] != b'Z' || !b[..12].iter().all(u8::is_ascii_digit) {
        return v.to_string();
    }
    format!(
        "20{}-{}-{} {}:{}:{} UTC",
        &v[0..2],
        &v[2..4],
        &v[4..6],
        &v[6..8],
        &v[8..10],
        &v[10..12]
    )
}

/// An approval for less than the request asked, as a terminal may give
/// when the register sent `BF=1`: the amounts charged and asked, in minor
/// units. None for an approval of the whole amount, or an answer that
/// approves nothing.
pub fn partial(request: &Frame, answer: &Frame) -> Option<(u64, u64)> {
    let amount = |f: &Frame| f.text(CB).and_then(|b| b.parse::<u64>().ok());
    if answer.get(AE) != Some(b"10") {
        return None;
    }
    match (amount(answer), amount(request)) {
        (Some(charged), Some(asked)) if charged < asked => Some((charged, asked)),
        _ => None,
    }
}

/// A readable description of an answer, ticket decoded; given the
/// `request` it answers, an approval for less says so, with both amounts.
pub fn describe(f: &Frame, request: Option<&Frame>) -> String {
    let mut out = String::new();
    let op = operation_name(f.get(CD).unwrap_or_default());
    let amount = match (f.text(CB).and_then(|b| b.parse::<u64>().ok()), f.text(CE)) {
        (Some(a), Some(c)) => {
            let c: u16 = c.parse().unwrap_or(0);
            format!(
                " {} {}",
                currency::format_amount(a, c, false),
                currency::label(c)
            )
        }
        _ => String::new(),
    };
    let reg = f
        .text(CA)
        .map(|r| format!(", register {r}"))
        .unwrap_or_default();
    let part = request.and_then(|r| partial(r, f));
    match (f.text(AE), f.get(AF)) {
        (Some("10"), _) => match part {
            Some((charged, asked)) => {
                let c: u16 = f.text(CE).and_then(|c| c.parse().ok()).unwrap_or(0);
                out.push_str(&format!(
                    "approved for {} of {} {} (partial): {op}{reg}\n",
                    currency::format_amount(charged, c, false),
                    currency::format_amount(asked, c, false),
                    currency::label(c)
                ))
            }
            None => out.push_str(&format!("approved: {op}{amount}{reg}\n")),
        },
        (Some("01"), None) => {
            out.push_str(&format!("declined: {op}{amount}{reg}: terminal busy\n"))
        }
        (Some("01"), Some(b"00")) if matches!(f.get(CD), Some(b"3" | b"T")) => {
            // Real terminals answer AF 00 too when they know no transaction
            // to give again: the code stays, the words say what it means.
            let r = f.text(CA).unwrap_or("?");
            out.push_str(&format!(
                "declined: {op}: no transaction known for register {r} (AF 00)\n"
            ))
        }
        (Some("01"), Some(b"07")) if matches!(f.get(CD), Some(b"T")) => out.push_str(&format!(
            "unknown: {op}{reg}: the last transaction has not ended, or its outcome is not known (AF 07)\n"
        )),
        (Some("01"), Some(b"07")) => out.push_str(&format!(
            "unknown: {op}{amount}{reg}: the terminal does not know the outcome, it may have been approved (AF 07)\n"
        )),
        (Some("01"), Some(af)) => {
            let why = Af::from_code(af).map_or("unknown reason", Af::label);
            let code = String::from_utf8_lossy(af);
            out.push_str(&format!("declined: {op}{amount}{reg}: {why} (AF {code})\n"))
        }
        (ae, _) => out.push_str(&format!(
            "unexpected answer status AE={}\n",
            ae.unwrap_or("none")
        )),
    }
    if let Some(v) = f.text(AC) {
        row(&mut out, "authorisation", v);
    }
    if let Some(v) = f.text(AA) {
        row(&mut out, "card", v);
    }
    if let Some(v) = f.text(AB) {
        row(&mut out, "expiry (YYMM)", v);
    }
    if let Some(v) = f.text(CC) {
        row(&mut out, "application", &application_name(v));
    }
    if let Some(v) = f.text(CI) {
        let mode = match v {
            "1" => "chip",
            "2" => "contactless",
            "3" => "magnetic stripe",
            "4" => "keyed",
            _ => v,
        };
        row(&mut out, "read", mode);
    }
    if let Some(v) = f.text(AI) {
        row(&mut out, "AID", v);
    }
    if let Some(v) = f.text(CG) {
        row(&mut out, "contract", v);
    }
    if let Some(v) = f.text(CF) {
        row(&mut out, "private data", v);
    }
    if let Some(v) = f.text(IM) {
        out.push_str(&format!("  refund of tx {v}\n"));
    }
    if let Some(v) = f.text(ID) {
        row(&mut out, "transaction", v);
    }
    if let Some(v) = f.text(AP) {
        row(&mut out, "time", &ap_readable(v));
    }
    if let Some(v) = f.text(AQ) {
        row(&mut out, "serial", v);
    }
    if let Some(z) = f.get(ZT) {
        match ticket::decode_zt(z) {
            Some((_, doc)) => {
                out.push_str("ticket:\n");
                // Tickets are Latin-1; show them as text.
                let text: String = doc.iter().map(|&b| b as char).collect();
                for l in text.lines() {
                    out.push_str(&format!("  | {l}\n"));
                }
            }
            None => out.push_str("  ticket not decodable\n"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::framing::{wrap, Wrapping};

    #[test]
    fn commands_and_their_requests() {
        let o = Options::default();
        let c = Command::parse("pay", Some("12.34"), 978).unwrap();
        assert_eq!(c, Command::Pay(1234));
        assert!(c.is_payment());
        assert_eq!(
            c.v3(&o),
            b"CZ0040320CJ012247300123456CA00201CB0041234CD0010CE003978"
        );
        assert_eq!(c.v2(&o).unwrap(), b"0100001234110978          A010B010");
        assert_eq!(
            Command::parse("ping", None, 978).unwrap().v3(&o),
            b"CZ0040320CJ012247300123456CA00201CD001I"
        );
        // Errors say what is wrong.
        let err = |c: &str, a: Option<&str>| Command::parse(c, a, 978).unwrap_err();
        assert_eq!(err("pay", None), "pay needs an AMOUNT");
        assert_eq!(
            err("pay", Some("0")),
            "amount 0 is zero: the smallest is 0.01 EUR"
        );
        assert_eq!(
            err("pay", Some("10000000000.00")),
            "amount 10000000000.00 is too large: a Concert amount has 12 digits at most \
             (9999999999.99 EUR)"
        );
        assert_eq!(
            err("pay", Some("99999999999999")),
            "amount 99999999999999 is too large: a Concert amount has 12 digits at most \
             (9999999999.99 EUR)"
        );
        assert_eq!(
            err("pay", Some("-5")),
            "amount -5 is negative: amounts are positive; to give money back, use refund"
        );
        assert_eq!(
            err("pay", Some("0.001")),
            "amount 0.001 has 3 decimals, and EUR has 2"
        );
        assert_eq!(
            Command::parse("pay", Some("1.5"), 953).unwrap_err(),
            "amount 1.5 has decimals, and XPF has none"
        );
        assert_eq!(
            Command::parse("pay", Some("0"), 953).unwrap_err(),
            "amount 0 is zero: the smallest is 1 XPF"
        );
        for bad in ["ten", "1.2.3", "", ".", "-", "1e3", "+5"] {
            assert_eq!(
                err("pay", Some(bad)),
                format!("amount {bad:?} is not a number: write it like 12.34 or 12,34")
            );
        }
        assert_eq!(
            Command::parse("refund", Some("12,5"), 978).unwrap(),
            Command::Refund(1250)
        );
        assert_eq!(err("ping", Some("x")), "bad command \"ping\"");
        assert_eq!(err("print", Some("")), "print takes 1 to 675 characters");
        assert_eq!(
            Command::parse("defer", Some("12.34"), 978).unwrap().v3(&o),
            b"CZ0040320CJ012247300123456CA00201CB0041234CD0017CE003978"
        );
        assert_eq!(
            Command::Defer(100).v2(&o).unwrap_err(),
            "with --v2 only pay, refund and cancel"
        );
        assert_eq!(
            Command::Ping.v2(&o).unwrap_err(),
            "with --v2 only pay, refund and cancel"
        );
        assert_eq!(
            Command::Pay(100_000_000).v2(&o).unwrap_err(),
            "a V2 amount has 8 digits at most"
        );
        // 999 999 999 999 minor units is the largest 12-digit CB.
        assert_eq!(
            Command::parse("pay", Some("9999999999.99"), 978).unwrap(),
            Command::Pay(999_999_999_999)
        );
    }

    #[test]
    fn builds_requests() {
        let o = Options::default();
        assert_eq!(
            payment(b'0', 1234, &o).encode(),
            b"CZ0040320CJ012247300123456CA00201CB0041234CD0010CE003978"
        );
        assert_eq!(payment(b'0', 5, &o).text(CB), Some("05"));
        assert_eq!(
            simple(b'I', &o).encode(),
            b"CZ0040320CJ012247300123456CA00201CD001I"
        );
    }

    #[test]
    fn unwraps_stx() {
        assert_eq!(unwrap_stx(wrap(b"CZ0040320", Wrapping::Stx)), b"CZ0040320");
        assert_eq!(unwrap_stx(b"CZ0040320".to_vec()), b"CZ0040320");
    }

    #[test]
    fn answers_are_read_up_to_their_last_element() {
        let read = |b: &[u8]| read_answer(b).map(|a| (a.frame.encode(), a.ignored));
        let whole = b"CZ0040320CA00201CD001IAE00210";
        assert_eq!(read(whole).unwrap(), (whole.to_vec(), vec![]));
        // What real terminals add, or what a cut leaves: set aside.
        for tail in [&b"\r\n"[..], b"\n", b"\0", b"AE0", b"ZZ9", b" junk"] {
            let b = [&whole[..], tail].concat();
            assert_eq!(
                read(&b).unwrap(),
                (whole.to_vec(), tail.to_vec()),
                "{tail:?}"
            );
        }
        // Not an answer: nothing before the fault, or a tag said twice.
        assert_eq!(
            read(b"\r\nCZ0040320").unwrap_err(),
            DecodeError::BadTag { offset: 0 }
        );
        assert_eq!(read(b"").unwrap_err(), DecodeError::Empty);
        assert_eq!(
            read(b"CA00201CZ0040320").unwrap_err(),
            DecodeError::CzNotFirst
        );
        assert_eq!(
            read(b"CZ0040320AE00210AE00201").unwrap_err(),
            DecodeError::Duplicate {
                tag: AE,
                offset: 16
            }
        );
    }

    #[test]
    fn what_may_move_money() {
        for (c, money) in [
            ("pay", true),
            ("defer", true),
            ("refund", true),
            ("cancel", true),
        ] {
            assert_eq!(
                Command::parse(c, Some("1"), 978).unwrap().moves_money(),
                money
            );
        }
        for c in ["ping", "status", "duplicate", "telecollect"] {
            assert!(!Command::parse(c, None, 978).unwrap().moves_money(), "{c}");
        }
        let send = |f: &str| Command::Send(f.into()).moves_money();
        for cd in ["0", "1", "2", "7"] {
            assert!(send(&format!("CZ0040320CA00201CB0041000CD001{cd}CE003978")));
        }
        assert!(!send("CZ0040320CA00201CD001T"));
        assert!(!send("CZ0040320CA00201CD0013"));
        assert!(!send("not a frame"));
    }

    #[test]
    fn an_endless_answer_is_an_error() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            while s.write_all(&[b'A'; 4096]).is_ok() {}
        });
        let e = exchange_tcp(&addr, b"CZ0040320", Duration::from_secs(30)).unwrap_err();
        assert_eq!(e.to_string(), "answer longer than 8192 bytes");
    }

    #[test]
    fn describes_answers() {
        let f = Frame::decode(b"CZ0040320CA00201CB0041234CD0010CE003978AE00201AF00204").unwrap();
        assert_eq!(
            describe(&f, None),
            "declined: debit 12.34 EUR, register 01: refused (AF 04)\n"
        );
        assert_eq!(verdict(&f), Verdict::Declined);
        // AF 07 is the one word for an outcome not known, never a refusal.
        let f = Frame::decode(b"CZ0040320CA00201CB0041234CD0010CE003978AE00201AF00207").unwrap();
        assert_eq!(
            describe(&f, None),
            "unknown: debit 12.34 EUR, register 01: the terminal does not know the outcome, \
             it may have been approved (AF 07)\n"
        );
        assert_eq!(verdict(&f), Verdict::Unknown);
        for cd in ["3", "T"] {
            let f = Frame::decode(format!("CZ0040320CA00207CD001{cd}AE00201AF00200").as_bytes())
                .unwrap();
            assert!(
                describe(&f, None).ends_with(": no transaction known for register 07 (AF 00)\n"),
                "{}",
                describe(&f, None)
            );
        }
        // On a payment, AF 00 keeps its label.
        let f = Frame::decode(b"CZ0040320CA00201CB0041234CD0010CE003978AE00201AF00200").unwrap();
        assert!(describe(&f, None).ends_with(": unknown error (AF 00)\n"));
    }

    #[test]
    fn an_approval_for_less_says_both_amounts() {
        let o = Options {
            partial: true,
            ..Options::default()
        };
        let req = payment(b'0', 1000, &o);
        assert_eq!(req.text(BF), Some("1"));
        assert_eq!(payment(b'0', 1000, &Options::default()).get(BF), None);
        let answer = |cb: &str, ae: &str| {
            Frame::decode(format!("CZ0040320CA00201CB{cb}CD0010CE003978AE002{ae}").as_bytes())
                .unwrap()
        };
        let part = answer("0040500", "10");
        assert_eq!(partial(&req, &part), Some((500, 1000)));
        assert_eq!(
            describe(&part, Some(&req)),
            "approved for 5.00 of 10.00 EUR (partial): debit, register 01\n"
        );
        // The whole amount, written another way, is no partial approval;
        // neither is a refusal, which echoes the amount or not.
        assert_eq!(partial(&req, &answer("00501000", "10")), None);
        assert_eq!(partial(&req, &answer("0040500", "01")), None);
        assert_eq!(
            describe(&answer("0041000", "10"), Some(&req)),
            "approved: debit 10.00 EUR, register 01\n"
        );
    }
}

/// The register's side of the serial link layer, for `concert -s` and the
/// relay to a serial terminal.
pub mod serial_link {
    use super::{NoAnswer, MAX_ANSWER};
    use crate::config::Format;
    use crate::link::session::{self, Sent, Timers};
    use crate::link::{Link, Patience, Timer};
    use std::io;
    use std::time::Duration;

    /// The timers real registers use (reference: 3 s waits, 1 s pause).
    const WAIT: Duration = Duration::from_secs(3);
    const TIMERS: Timers = Timers {
        ack: Timer {
            wait: WAIT,
            name: "ACK wait",
        },
        frame: Timer {
            wait: WAIT,
            name: "frame wait",
        },
        eot: Timer {
            wait: WAIT,
            name: "EOT wait",
        },
        pause: Duration::from_secs(1),
    };

    fn err(msg: &str) -> io::Error {
        io::Error::other(msg)
    }

    pub struct Line {
        link: Link,
    }

    impl Line {
        pub fn open(path: &str, speed: u32, format: Format) -> io::Result<Line> {
            let port = crate::link::builder(path, speed, format, false, Duration::from_millis(50))
                .open_native()
                .map_err(io::Error::from)?;
            Ok(Line {
                link: Link::new(Box::new(port), format!("serial {path}"))
                    .with_patience(Patience::new(WAIT, speed, format)),
            })
        }

        /// Session 1: ENQ (three tries), the frame, the terminal's ACK, EOT.
        /// A NAKed frame is sent again, [`session::TRIES`] times in all, each
        /// time in a session of its own (EOT, a pause, ENQ): a terminal that
        /// NAKs because it is busy ends its session, as concertd does, and
        /// the frame sent again outside one would be noise to it, or read
        /// as a raw V3 request; one that NAKs a garbled frame and waits for
        /// it again takes the EOT as the end of that wait. A frame met by
        /// silence is not sent again: the terminal may have taken it and
        /// its ACK been lost, which nothing sent again can tell.
        ///
        /// Told by whether the terminal may have taken the request: the
        /// frame went out once the session opened, and without its ACK
        /// nobody knows whether the terminal took it, unless it was NAKed
        /// each time. A device that fails mid-session is counted the same
        /// way.
        pub fn send(&mut self, payload: &[u8]) -> Result<(), NoAnswer> {
            let blocks = [payload.to_vec()];
            for attempt in 1..=session::TRIES {
                match session::send(&mut self.link, &TIMERS, &blocks, 1) {
                    Err(e) => return Err(NoAnswer::Unanswered(e)),
                    Ok(Sent::Done) => return Ok(()),
                    Ok(Sent::Unopened) => {
                        return Err(NoAnswer::Unsent(err(
                            "the terminal does not answer ENQ (not ready, or not a Concert line)",
                        )))
                    }
                    Ok(Sent::Unanswered) => {
                        return Err(NoAnswer::Unanswered(err("no ACK to the request frame")))
                    }
                    Ok(Sent::Refused) if attempt < session::TRIES => {
                        std::thread::sleep(TIMERS.pause)
                    }
                    Ok(Sent::Refused) => {}
                }
            }
            Err(NoAnswer::Unsent(io::Error::other(format!(
                "request refused: NAKed {} times, so not taken (the terminal is busy, or the \
                 line garbles the frame); nothing was done",
                session::TRIES
            ))))
        }

        /// Session 2: waits for the terminal's ENQ, reads its frame or ETB
        /// blocks (NAK on a bad LRC), and returns the joined payload, of at
        /// most `MAX_ANSWER` bytes.
        pub fn receive_answer(&mut self, timeout: Duration) -> io::Result<Vec<u8>> {
            let first = Timer {
                wait: timeout,
                name: "answer timeout",
            };
            session::receive(&mut self.link, &TIMERS, first, MAX_ANSWER)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::wire::framing::{lrc, ACK, ENQ, ETB, STX};
        use serialport::{SerialPort, TTYPort};
        use std::io::{Read, Write};

        #[test]
        fn an_endless_answer_is_cut_at_the_largest_frame() {
            let (mut terminal, line) = TTYPort::pair().expect("pty pair");
            terminal.set_timeout(Duration::from_secs(1)).unwrap();
            let path = line.name().expect("pty name");
            let mut l = Line::open(&path, 9600, Format::parse("7E1").unwrap()).unwrap();
            // The terminal opens its session, then never ends its frame, in
            // ETB blocks with good LRCs or in one block.
            let writer = std::thread::spawn(move || {
                let mut ack = [0u8; 1];
                for blocks in [true, false] {
                    terminal.write_all(&[ENQ]).unwrap();
                    while terminal.read_exact(&mut ack).is_ok() && ack[0] != ACK {}
                    let mut block = vec![STX];
                    block.extend_from_slice(&[b'A'; 100]);
                    if blocks {
                        block.push(ETB);
                        block.push(lrc(&block[1..]));
                    }
                    // Until the line stops reading: a write or an ACK
                    // times out.
                    while terminal.write_all(&block).is_ok()
                        && (!blocks || terminal.read_exact(&mut ack).is_ok())
                    {}
                }
                // Closed only once the line is done: a hang-up would end
                // its reading early.
                terminal
            });
            for _ in 0..2 {
                let e = l.receive_answer(Duration::from_secs(10)).unwrap_err();
                assert_eq!(e.to_string(), "answer longer than 8192 bytes");
            }
            drop(l);
            drop(line);
            let _ = writer.join();
        }
    }
}
