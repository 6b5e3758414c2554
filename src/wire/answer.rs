//! Building answers. Every answer starts with CZ, then echoes the request's
//! CJ CA CB CD CE byte for byte, then AE/AF, then the result tags in a fixed
//! order (AC AL AB AI AA CF CC CI CG CH ZT): one public client reads the PAN
//! as the text between AA and CF, and the private data between CF and CC, so
//! nothing may sit between AA and CF or between CF and CC.
//!
//! PayXpert's tags come after all of these, ZT included, so that a client
//! reading the standard tags by position finds them where it always did:
//! a credit's `IM` is echoed last, and with `answer-extensions payxpert` an
//! approved debit's answer ends with `ID AP AQ` ([`extend`]).

use crate::wire::tlv::{self, tags::*, Frame, Tag};

/// Our own protocol version, used only when the request carried no usable CZ.
pub const OUR_CZ: &[u8] = b"0320";

/// `AF`: why an operation was not performed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Af {
    Unknown,
    Phone,
    Forcing,
    Refused,
    Forbidden,
    Abandon,
    NotEnded,
    InputTimeout,
    Format,
    Selection,
    OperatorAbandon,
    UnknownOperation,
    Currency,
}

impl Af {
    pub fn code(self) -> &'static str {
        match self {
            Af::Unknown => "00",
            Af::Phone => "02",
            Af::Forcing => "03",
            Af::Refused => "04",
            Af::Forbidden => "05",
            Af::Abandon => "06",
            Af::NotEnded => "07",
            Af::InputTimeout => "08",
            Af::Format => "09",
            Af::Selection => "10",
            Af::OperatorAbandon => "11",
            Af::UnknownOperation => "12",
            Af::Currency => "13",
        }
    }

    pub fn from_code(code: &[u8]) -> Option<Af> {
        Some(match code.get(..2)? {
            b"00" => Af::Unknown,
            b"02" => Af::Phone,
            b"03" => Af::Forcing,
            b"04" => Af::Refused,
            b"05" => Af::Forbidden,
            b"06" => Af::Abandon,
            b"07" => Af::NotEnded,
            b"08" => Af::InputTimeout,
            b"09" => Af::Format,
            b"10" => Af::Selection,
            b"11" => Af::OperatorAbandon,
            b"12" => Af::UnknownOperation,
            b"13" => Af::Currency,
            _ => return None,
        })
    }

    pub fn label(self) -> &'static str {
        match self {
            Af::Unknown => "unknown error",
            Af::Phone => "phone call to the bank needed",
            Af::Forcing => "forcing",
            Af::Refused => "refused",
            Af::Forbidden => "forbidden card",
            Af::Abandon => "abandoned by the cardholder",
            Af::NotEnded => "not ended",
            Af::InputTimeout => "input time-out",
            Af::Format => "bad message format",
            Af::Selection => "bad selection",
            Af::OperatorAbandon => "operator abandon",
            Af::UnknownOperation => "unknown operation",
            Af::Currency => "currency not supported",
        }
    }
}

/// What the backend says of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Approved,
    Declined(Af),
}

/// The result of a transaction, as the backend reports it. Values are
/// printable ASCII of legal lengths; `pan` is already masked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub status: Status,
    /// CB when it differs from the request (partial approval).
    pub amount: Option<String>,
    pub auth: Option<String>,
    pub pan: Option<String>,
    pub expiry: Option<String>,
    pub aid: Option<String>,
    pub application: Option<String>,
    pub read_mode: Option<String>,
    pub contract: Option<String>,
    /// The ZT value (CK + AK), built from the request's CK.
    pub ticket: Option<Vec<u8>>,
    /// A ticket document from the backend, packed into ZT as CK asks.
    pub document: Option<Vec<u8>>,
}

impl Outcome {
    pub fn approved() -> Outcome {
        Outcome::with_status(Status::Approved)
    }

    pub fn declined(af: Af) -> Outcome {
        Outcome::with_status(Status::Declined(af))
    }

    fn with_status(status: Status) -> Outcome {
        Outcome {
            status,
            amount: None,
            auth: None,
            pan: None,
            expiry: None,
            aid: None,
            application: None,
            read_mode: None,
            contract: None,
            ticket: None,
            document: None,
        }
    }

    pub fn is_approved(&self) -> bool {
        self.status == Status::Approved
    }

    /// The amount the answer reports: CB when the backend set one (partial
    /// approval), else the requested amount.
    pub fn charged(&self, requested: Option<u64>) -> u64 {
        self.amount
            .as_deref()
            .and_then(|a| a.parse().ok())
            .or(requested)
            .unwrap_or(0)
    }

    /// The outcome an answer reports (for answers read back from the
    /// journal). CB is kept only when it differs from the request's.
    pub fn from_answer(answer: &Frame, request: &Frame) -> Outcome {
        let text = |t: Tag| answer.text(t).map(str::to_string);
        let status = match (answer.get(AE), answer.get(AF)) {
            (Some(b"10"), _) => Status::Approved,
            (_, Some(af)) => Status::Declined(Af::from_code(af).unwrap_or(Af::Unknown)),
            _ => Status::Declined(Af::Unknown),
        };
        Outcome {
            status,
            amount: text(CB).filter(|cb| request.text(CB) != Some(cb)),
            auth: text(AC),
            pan: text(AA),
            expiry: text(AB),
            aid: text(AI),
            application: text(CC),
            read_mode: text(CI),
            contract: text(CG),
            ticket: answer.get(ZT).map(<[u8]>::to_vec),
            document: None,
        }
    }
}

/// The request's CZ when it is a version we speak (`03xx`), else ours.
fn cz(req: &Frame) -> Vec<u8> {
    match req.get(CZ) {
        Some(v) if v.len() == 4 && v.starts_with(b"03") && v.iter().all(u8::is_ascii_digit) => {
            v.to_vec()
        }
        _ => OUR_CZ.to_vec(),
    }
}

/// Appends an element to an answer being built, when the register can
/// read it back: a value the decoder would refuse (empty, longer than 999
/// bytes, not printable, or a tag given twice) is dropped with a warning
/// rather than sent. Backends are checked where they produce values; this
/// is the last check before the wire, whatever the backend.
fn put(f: &mut Frame, tag: Tag, v: &[u8]) -> bool {
    let fits = fits(f, tag, v);
    if fits {
        f.push(tag, v.to_vec());
    }
    fits
}

/// Whether `put` would append this element; says why not in the log.
fn fits(f: &Frame, tag: Tag, v: &[u8]) -> bool {
    let why = if f.has(tag) {
        "given twice"
    } else if v.is_empty() {
        "empty"
    } else if v.len() > tlv::MAX_VALUE {
        "longer than 999 bytes"
    } else if !tlv::is_valid_value(v) {
        "not printable ASCII"
    } else if tag == ZT && broken_inside(v) {
        "its CK or AK element does not decode"
    } else {
        return true;
    };
    let what = if tag == ZT { "the ticket " } else { "" };
    log::warn!(
        "answer: {what}{tag} of {} bytes dropped ({why}): an element holds 1 to 999 printable bytes",
        v.len()
    );
    false
}

/// A ZT made of CK and AK elements (as concertd and V3 terminals write it)
/// that the register's decoder would refuse, such as an empty AK.
fn broken_inside(zt: &[u8]) -> bool {
    let tlv_like = zt.len() >= 5
        && (zt.starts_with(b"CK") || zt.starts_with(b"AK"))
        && zt[2..5].iter().all(u8::is_ascii_digit);
    tlv_like && Frame::decode_any(zt).is_err()
}

fn echo(f: &mut Frame, req: &Frame, tag: Tag) {
    if let Some(v) = req.get(tag) {
        put(f, tag, v);
    }
}

fn head(req: &Frame, cb: Option<&[u8]>) -> Frame {
    let mut f = Frame::new();
    f.push(CZ, cz(req));
    echo(&mut f, req, CJ);
    echo(&mut f, req, CA);
    if !cb.is_some_and(|v| put(&mut f, CB, v)) {
        echo(&mut f, req, CB);
    }
    echo(&mut f, req, CD);
    echo(&mut f, req, CE);
    f
}

fn push_opt(f: &mut Frame, tag: Tag, v: &Option<String>) {
    if let Some(v) = v {
        put(f, tag, v.as_bytes());
    }
}

/// The answer at the end of a transaction.
pub fn result(req: &Frame, o: &Outcome) -> Frame {
    let mut f = head(req, o.amount.as_deref().map(str::as_bytes));
    match o.status {
        Status::Approved => f.push(AE, &b"10"[..]),
        Status::Declined(af) => {
            f.push(AE, &b"01"[..]);
            f.push(AF, af.code().as_bytes().to_vec());
        }
    }
    push_opt(&mut f, AC, &o.auth);
    // AL says AA is there, so it goes only with an AA that will be sent;
    // AA comes last so that CF directly follows it.
    let pan = o.pan.as_deref().filter(|p| fits(&f, AA, p.as_bytes()));
    if pan.is_some() {
        f.push(AL, &b"1"[..]);
    }
    push_opt(&mut f, AB, &o.expiry);
    push_opt(&mut f, AI, &o.aid);
    if let Some(pan) = pan {
        f.push(AA, pan.as_bytes().to_vec());
    }
    echo(&mut f, req, CF);
    push_opt(&mut f, CC, &o.application);
    push_opt(&mut f, CI, &o.read_mode);
    push_opt(&mut f, CG, &o.contract);
    echo(&mut f, req, CH);
    if let Some(t) = &o.ticket {
        put(&mut f, ZT, t);
    }
    echo_im(&mut f, req);
    f
}

/// A credit names the debit it refunds in `IM`: echoed last, so that the
/// answer, and a status request's copy of it, says which sale it refunds.
fn echo_im(f: &mut Frame, req: &Frame) {
    if req.get(CD) == Some(b"1") {
        echo(f, req, IM);
    }
}

/// PayXpert's tags for an approved debit's answer.
pub struct Extensions<'a> {
    /// Our transaction id, which a credit's `IM` names.
    pub id: u64,
    /// When the outcome was known, as [`ap_time`] writes it.
    pub time: &'a str,
    /// The terminal's serial (`serial-number`).
    pub serial: &'a str,
}

/// Appends `ID AP AQ`, after every other tag.
pub fn extend(f: &mut Frame, x: &Extensions) {
    put(f, ID, x.id.to_string().as_bytes());
    put(f, AP, x.time.as_bytes());
    put(f, AQ, x.serial.as_bytes());
}

/// `AP`, 13 characters: `YYMMDDhhmmssZ` in UTC, the UTCTime of X.509
/// certificates and ASN.1. A person reads it left to right, a program
/// parses it with any UTCTime reader (or strptime `%y%m%d%H%M%SZ`), and
/// the `Z` says it is UTC: the register and the terminal need not share a
/// time zone.
pub fn ap_time(c: &crate::wire::clock::Civil) -> String {
    format!(
        "{:02}{:02}{:02}{:02}{:02}{:02}Z",
        c.year.rem_euclid(100),
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second
    )
}

/// Not performed: `AE=01` with this AF, or with no AF at all (busy).
pub fn refusal(req: &Frame, af: Option<Af>) -> Frame {
    let mut f = head(req, None);
    f.push(AE, &b"01"[..]);
    if let Some(af) = af {
        f.push(AF, af.code().as_bytes().to_vec());
    }
    echo(&mut f, req, CF);
    echo(&mut f, req, CH);
    echo_im(&mut f, req);
    f
}

/// A status request about a transaction still running: `AE=01 AF=07`, the
/// echoed `CD=T` telling it apart from a final "not ended".
pub fn still_running(req: &Frame) -> Frame {
    refusal(req, Some(Af::NotEnded))
}

/// Performed, with no result tags (print, telecollection, and the
/// immediate acknowledgement of `BA=1`).
pub fn done(req: &Frame) -> Frame {
    let mut f = head(req, None);
    f.push(AE, &b"10"[..]);
    echo(&mut f, req, CF);
    echo(&mut f, req, CH);
    f
}

/// The identification answer: `CZ CJ CA CD AE10`, as a real Ingenico
/// terminal answers.
pub fn identification(req: &Frame) -> Frame {
    let mut f = Frame::new();
    f.push(CZ, cz(req));
    echo(&mut f, req, CJ);
    echo(&mut f, req, CA);
    echo(&mut f, req, CD);
    f.push(AE, &b"10"[..]);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> Frame {
        Frame::decode(b"CZ0040320CJ012247300123456CA00201CB00512345CD0010CE003978CF003abcOD001x")
            .unwrap()
    }

    #[test]
    fn approved_answer_order() {
        let mut o = Outcome::approved();
        o.auth = Some("123456".into());
        o.pan = Some("497010######0674".into());
        o.application = Some("00B".into());
        o.read_mode = Some("2".into());
        let a = result(&req(), &o).encode();
        assert_eq!(
            String::from_utf8(a).unwrap(),
            "CZ0040320CJ012247300123456CA00201CB00512345CD0010CE003978AE00210AC006123456\
             AL0011AA016497010######0674CF003abcCC00300BCI0012"
        );
    }

    /// The whole order, as a public PHP client cuts it: the PAN is the text
    /// between AA and CF, the private data the text between CF and CC.
    #[test]
    fn every_result_tag_in_order() {
        let req = Frame::decode(b"CZ0040320CA00201CB0041000CD0010CE003978CF003abcCH002xy").unwrap();
        let mut o = Outcome::approved();
        o.auth = Some("123456".into());
        o.pan = Some("497010######0674".into());
        o.expiry = Some("2912".into());
        o.aid = Some("A0000000421010".into());
        o.application = Some("00B".into());
        o.read_mode = Some("2".into());
        o.contract = Some("7654321".into());
        o.ticket = Some(b"CK003100".to_vec());
        let a = String::from_utf8(result(&req, &o).encode()).unwrap();
        assert_eq!(
            a,
            "CZ0040320CA00201CB0041000CD0010CE003978AE00210AC006123456AL0011AB0042912\
             AI014A0000000421010AA016497010######0674CF003abcCC00300BCI0012CG0077654321\
             CH002xyZT008CK003100"
        );
        let between = |a: &str, from: &str, to: &str| -> String {
            let s = &a[a.find(from).unwrap() + from.len()..];
            s[..s.find(to).unwrap()].to_string()
        };
        assert_eq!(between(&a, "AA", "CF"), "016497010######0674");
        assert_eq!(between(&a, "CF", "CC"), "003abc");
    }

    #[test]
    fn payxpert_tags_come_last_and_im_is_echoed_on_credits() {
        let mut a = result(&req(), &Outcome::approved());
        extend(
            &mut a,
            &Extensions {
                id: 1764561745001,
                time: "261201040225Z",
                serial: "0123456789abcdef0123",
            },
        );
        assert_eq!(
            String::from_utf8(a.encode()).unwrap(),
            "CZ0040320CJ012247300123456CA00201CB00512345CD0010CE003978AE00210CF003abc\
             ID0131764561745001AP013261201040225ZAQ0200123456789abcdef0123"
        );
        let credit = Frame::decode(b"CZ0040320CA00201CB0041000CD0011CE003978IM0041234").unwrap();
        let mut o = Outcome::approved();
        o.ticket = Some(b"CK003100".to_vec());
        assert_eq!(
            result(&credit, &o).encode(),
            b"CZ0040320CA00201CB0041000CD0011CE003978AE00210ZT008CK003100IM0041234".to_vec()
        );
        assert_eq!(
            refusal(&credit, Some(Af::Refused)).encode(),
            b"CZ0040320CA00201CB0041000CD0011CE003978AE00201AF00204IM0041234".to_vec()
        );
        // A debit's IM means nothing: not echoed.
        let debit = Frame::decode(b"CZ0040320CA00201CB0041000CD0010CE003978IM0041234").unwrap();
        assert!(!result(&debit, &o).has(IM));
    }

    #[test]
    fn ap_is_utctime() {
        let c = crate::wire::clock::utc(1_796_097_745, 0);
        assert_eq!(ap_time(&c), "261201040225Z");
        assert_eq!(ap_time(&c).len(), 13);
    }

    #[test]
    fn a_pan_that_cannot_be_sent_takes_its_al_with_it() {
        let mut o = Outcome::approved();
        o.pan = Some("4970\u{7f}10".into());
        o.expiry = Some("2912".into());
        let a = result(&req(), &o);
        assert!(!a.has(AA) && !a.has(AL));
        assert_eq!(a.get(AB), Some(&b"2912"[..]));
    }

    #[test]
    fn busy_and_refusal() {
        assert_eq!(
            refusal(&req(), None).encode(),
            b"CZ0040320CJ012247300123456CA00201CB00512345CD0010CE003978AE00201CF003abc"
        );
        let mut partial = Frame::new();
        partial.push(CA, &b"01"[..]);
        assert_eq!(
            refusal(&partial, Some(Af::Format)).encode(),
            b"CZ0040320CA00201AE00201AF00209"
        );
        let bad_cz = Frame::decode(b"CZ0040220CA00201").unwrap();
        assert_eq!(
            refusal(&bad_cz, Some(Af::Format)).encode(),
            b"CZ0040320CA00201AE00201AF00209"
        );
    }

    #[test]
    fn identification_answer() {
        let r = Frame::decode(b"CZ0040300CJ012012345678901CA00201CD001I").unwrap();
        assert_eq!(
            identification(&r).encode(),
            b"CZ0040300CJ012012345678901CA00201CD001IAE00210"
        );
    }

    #[test]
    fn values_that_cannot_be_read_back_are_dropped() {
        let mut o = Outcome::approved();
        o.ticket = Some(b"CK003110AK000".to_vec());
        o.auth = Some(String::new());
        o.pan = Some("4970\u{1}".into());
        o.amount = Some(String::new());
        o.contract = Some("x".repeat(1000));
        let a = result(&req(), &o);
        let bytes = a.encode();
        assert_eq!(Frame::decode(&bytes).as_ref(), Ok(&a));
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "CZ0040320CJ012247300123456CA00201CB00512345CD0010CE003978AE00210CF003abc"
        );
        // An empty ZT, or one past 999 bytes, is not sent at all.
        for t in [Vec::new(), vec![b'A'; 1000], b"a\nb".to_vec()] {
            o.ticket = Some(t);
            let a = result(&req(), &o);
            assert_eq!(a.get(ZT), None);
            assert!(Frame::decode(&a.encode()).is_ok());
        }
        for t in [&b"CK003110AK008TU9OIFRJ"[..], b"TU9OIFRJQ0tFVAo="] {
            o.ticket = Some(t.to_vec());
            assert_eq!(result(&req(), &o).get(ZT), Some(t));
        }
    }

    proptest::proptest! {
        #[test]
        fn every_result_decodes(
            fields in proptest::collection::vec(
                proptest::option::of(proptest::collection::vec(proptest::num::u8::ANY, 0..1100)),
                9,
            ),
            declined in proptest::option::of(0u8..14),
        ) {
            let s = |i: usize| fields[i].as_ref().map(|v| String::from_utf8_lossy(v).into_owned());
            let mut o = match declined.and_then(|c| Af::from_code(format!("{c:02}").as_bytes())) {
                Some(af) => Outcome::declined(af),
                None => Outcome::approved(),
            };
            o.amount = s(0);
            o.auth = s(1);
            o.pan = s(2);
            o.expiry = s(3);
            o.aid = s(4);
            o.application = s(5);
            o.read_mode = s(6);
            o.contract = s(7);
            o.ticket = fields[8].clone();
            let bytes = result(&req(), &o).encode();
            proptest::prop_assert!(Frame::decode(&bytes).is_ok(), "{:?}", String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn af_codes_round_trip() {
        // Every code the protocol defines decodes, and back to itself; 01
        // is not one, nor anything past 13.
        for c in (0..=13u8).filter(|&c| c != 1) {
            let s = format!("{c:02}");
            let af = Af::from_code(s.as_bytes()).unwrap_or_else(|| panic!("AF {s}"));
            assert_eq!(af.code(), s);
        }
        for s in ["01", "14", "99", "0", ""] {
            assert_eq!(Af::from_code(s.as_bytes()), None, "AF {s:?}");
        }
    }
}
