//! What a V3 request asks for: the operation, its mandatory tags, and the
//! checks on the values concertd interprets. Values of tags we only echo
//! (CJ, CF, CH, unknown tags) are not checked.

use crate::wire::answer::Af;
use crate::wire::ticket::TicketSpec;
use crate::wire::tlv::{tags::*, DecodeError, Frame, Tag};
use std::fmt;

pub use crate::wire::operation::Operation;

/// The mandatory tags for a raw CD value, for deciding on the wire whether
/// a request can already be complete.
pub fn mandatory_for_cd(cd: &[u8]) -> Option<&'static [Tag]> {
    Operation::from_cd(cd).map(Operation::mandatory)
}

/// A request concertd will act on.
#[derive(Clone, Debug)]
pub struct Request {
    pub frame: Frame,
    pub op: Operation,
    /// CA as a number: `1` and `01` are the same register.
    pub register: u8,
    pub amount: Option<u64>,
    pub currency: Option<u16>,
    pub ticket: Option<TicketSpec>,
    pub immediate: bool,
    pub force_auth: bool,
    pub partial_ok: bool,
    pub cheque: bool,
    /// Where the shopper wants the receipt (`BH`, `BI`), without the
    /// padding of PayXpert's fixed-length fields.
    pub receipt_phone: Option<String>,
    pub receipt_email: Option<String>,
    /// PayXpert's `IM` on a credit: the transaction id of the debit it
    /// refunds (read on credits only; elsewhere an unknown tag, ignored).
    pub refund_of: Option<String>,
}

impl Request {
    /// The request's own CB text (for answers that echo it).
    pub fn amount_text(&self) -> Option<&str> {
        self.frame.text(CB)
    }
}

/// A request that gets an error answer without reaching the terminal.
#[derive(Clone, Debug)]
pub struct Rejection {
    /// What could be read of the request, for the echo in the answer.
    pub frame: Frame,
    pub af: Af,
    pub reason: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AF{} {}: {}",
            self.af.code(),
            self.af.label(),
            self.reason
        )
    }
}

fn all_digits(v: &[u8]) -> bool {
    v.iter().all(u8::is_ascii_digit)
}

/// A value of digits as a number; `None` for anything else or past
/// `u64`. Also used on values not checked yet (`reread`), so it must not
/// trust them.
fn number(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &d| {
        let d = d.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// Checks a value we interpret; `None` when it is acceptable.
fn bad_value(tag: Tag, v: &[u8]) -> Option<&'static str> {
    let ok = match tag {
        CZ => v.len() == 4 && v.starts_with(b"03") && all_digits(v),
        CD => v.len() == 1,
        CA => (1..=2).contains(&v.len()) && all_digits(v),
        CB => (1..=12).contains(&v.len()) && all_digits(v),
        CE => v.len() == 3 && all_digits(v),
        BA | BB | BF => v == b"0" || v == b"1",
        CK => v.len() == 3,
        _ => true,
    };
    if ok {
        return None;
    }
    Some(match tag {
        CZ => "CZ must be 03xx",
        CD => "CD must be one character",
        CA => "CA must be 1 or 2 digits",
        CB => "CB must be 1 to 12 digits",
        CE => "CE must be 3 digits (numeric ISO 4217)",
        CK => "CK must be 3 characters",
        _ => "BA, BB and BF must be 0 or 1",
    })
}

fn reject(frame: Frame, af: Af, reason: impl Into<String>) -> Rejection {
    Rejection {
        frame,
        af,
        reason: reason.into(),
    }
}

/// Decodes and checks a request body (TLV bytes, no framing).
pub fn parse(body: &[u8], currencies: &[u16]) -> Result<Request, Rejection> {
    let frame = Frame::decode(body)
        .map_err(|(partial, e): (Frame, DecodeError)| reject(partial, Af::Format, e.to_string()))?;
    // Checked only as received: the journal keeps these masked, and a
    // masked phone or e-mail is no longer one.
    for tag in [BH, BI] {
        if let Some(why) = frame.get(tag).and_then(|v| bad_receipt(tag, v)) {
            return Err(reject(frame, Af::Format, why));
        }
    }
    interpret(frame, currencies)
}

/// The shopper's phone (`BH`: 8 to 20 characters, HiPay; PayXpert pads it
/// to 20) and e-mail (`BI`: 6 to 256, one `@`); `None` when acceptable.
fn bad_receipt(tag: Tag, v: &[u8]) -> Option<&'static str> {
    let t = trim_padding(v);
    if tag == BH {
        let ok = (8..=20).contains(&v.len())
            && t.iter().any(u8::is_ascii_digit)
            && t.iter()
                .all(|b| b.is_ascii_digit() || *b == b'+' || *b == b' ');
        return (!ok)
            .then_some("BH must be a phone number of 8 to 20 characters: digits, + and spaces");
    }
    let at = t.iter().filter(|b| **b == b'@').count();
    let ok = (6..=256).contains(&v.len())
        && at == 1
        && t.first() != Some(&b'@')
        && t.last() != Some(&b'@')
        && t.iter().all(|b| (0x21..0x7f).contains(b));
    (!ok).then_some("BI must be an e-mail address of 6 to 256 characters with one @")
}

/// PayXpert sends BH and BI at a fixed length, padded with spaces.
fn trim_padding(v: &[u8]) -> &[u8] {
    let end = v.iter().rposition(|b| *b != b' ').map_or(0, |p| p + 1);
    &v[..end]
}

/// The tests' shorthand for [`reread`].
#[cfg(test)]
fn reparse(body: &[u8]) -> Option<Request> {
    reread(body).ok()
}

/// Reads back a request journaled earlier, whatever the currencies
/// accepted now, with the checks of a request received now (but for BH
/// and BI, journaled masked); the error says why it is refused.
pub fn reread(body: &[u8]) -> Result<Request, Rejection> {
    let frame = Frame::decode(body)
        .map_err(|(partial, e): (Frame, DecodeError)| reject(partial, Af::Format, e.to_string()))?;
    // Its own currency, when CE is one: a bad CE is refused by `interpret`.
    let own: Vec<u16> = frame
        .get(CE)
        .and_then(number)
        .and_then(|c| u16::try_from(c).ok())
        .into_iter()
        .collect();
    interpret(frame, &own)
}

pub fn interpret(frame: Frame, currencies: &[u16]) -> Result<Request, Rejection> {
    for tag in [CZ, CD, CA, CB, CE, BA, BB, BF, CK] {
        if let Some(why) = frame.get(tag).and_then(|v| bad_value(tag, v)) {
            return Err(reject(frame, Af::Format, why));
        }
    }
    let Some(cd) = frame.get(CD) else {
        return Err(reject(frame, Af::Format, "CD missing"));
    };
    let Some(op) = Operation::from_cd(cd) else {
        let why = format!("operation CD={} not supported", String::from_utf8_lossy(cd));
        return Err(reject(frame, Af::UnknownOperation, why));
    };
    if let Some(t) = op.mandatory().iter().find(|t| !frame.has(**t)) {
        let why = format!("{t} missing for {}", op.name());
        return Err(reject(frame, Af::Format, why));
    }
    // Checked above: CB is 1 to 12 digits, CE 3 and CA 1 or 2.
    let amount = frame.get(CB).and_then(number);
    let currency = frame
        .get(CE)
        .and_then(number)
        .and_then(|c| u16::try_from(c).ok());
    if op.is_payment() {
        if let Some(c) = currency.filter(|c| !currencies.contains(c)) {
            return Err(reject(
                frame,
                Af::Currency,
                format!("currency {c:03} not accepted"),
            ));
        }
    }
    if (op.is_debit() || op == Operation::Credit) && amount == Some(0) {
        return Err(reject(frame, Af::Format, "amount 0"));
    }
    let flag = |t: Tag| frame.get(t) == Some(b"1");
    Ok(Request {
        register: frame
            .get(CA)
            .and_then(number)
            .and_then(|n| u8::try_from(n).ok())
            .unwrap_or(0),
        amount,
        currency,
        ticket: frame.get(CK).and_then(TicketSpec::from_ck),
        immediate: flag(BA),
        force_auth: flag(BB),
        partial_ok: flag(BF),
        cheque: frame.get(CC) == Some(b"00C"),
        receipt_phone: receipt(&frame, BH),
        receipt_email: receipt(&frame, BI),
        refund_of: (op == Operation::Credit)
            .then(|| frame.get(IM))
            .flatten()
            .map(|v| String::from_utf8_lossy(v).into_owned()),
        op,
        frame,
    })
}

fn receipt(frame: &Frame, tag: Tag) -> Option<String> {
    let v = trim_padding(frame.get(tag)?);
    (!v.is_empty()).then(|| String::from_utf8_lossy(v).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EUR: &[u16] = &[978];

    fn af(body: &str) -> Af {
        parse(body.as_bytes(), EUR).unwrap_err().af
    }

    #[test]
    fn accepts_what_real_clients_send() {
        for body in [
            "CZ0040320CJ012247300123456CA00201CB00512345CD0010CE003978",
            // Odoo addon: tag order, CB of one digit, legacy BF0010.
            "CZ0040300CJ012012345678901CA00201CE003978BF0010CD0010CB0015",
            // PayXpert: CA of one digit, no CJ.
            "CZ0040320CA0011CB0041000CD0011CE003978",
            "CZ0040300CJ012012345678901CA00201CD001I",
            "CZ0040320CJ012247300123456CA00201CD0013CK003100",
        ] {
            let r = parse(body.as_bytes(), EUR);
            assert!(r.is_ok(), "{body}: {:?}", r.err());
        }
        let r = parse(b"CZ0040320CA0011CB0015CD0010CE003978", EUR).unwrap();
        assert_eq!((r.register, r.amount, r.currency), (1, Some(5), Some(978)));
    }

    #[test]
    fn receipt_phone_and_email_are_checked_as_received() {
        let debit = "CZ0040320CJ012247300123456CA00201CB0042500CD0010CE003978";
        let with = |extra: &str| parse(format!("{debit}{extra}").as_bytes(), EUR);
        let el = |tag: &str, v: &str| format!("{tag}{:03}{v}", v.len());
        let r = with(&(el("BH", "+33 6 12 34 56 78") + &el("BI", "jean@example.fr"))).unwrap();
        assert_eq!(r.receipt_phone.as_deref(), Some("+33 6 12 34 56 78"));
        assert_eq!(r.receipt_email.as_deref(), Some("jean@example.fr"));
        // PayXpert's fixed-length fields, padded with spaces.
        let r = with(&el("BH", &format!("{:<20}", "0612345678"))).unwrap();
        assert_eq!(r.receipt_phone.as_deref(), Some("0612345678"));
        let r = with(&el("BI", &format!("{:<256}", "a@b.fr"))).unwrap();
        assert_eq!(r.receipt_email.as_deref(), Some("a@b.fr"));
        for (tag, bad) in [
            ("BH", "1234567"),
            ("BH", "123456789012345678901"),
            ("BH", "0612x45678"),
            ("BH", "++++++++"),
            ("BI", "a@b.f"),
            ("BI", "jean.at.fr"),
            ("BI", "j@an@ex.fr"),
            ("BI", "jean @x.fr"),
            ("BI", "@ex.fr"),
            ("BI", "jean@"),
        ] {
            let e = with(&el(tag, bad)).unwrap_err();
            assert_eq!(e.af, Af::Format, "{bad}");
            assert!(e.reason.starts_with(tag), "{bad}: {}", e.reason);
        }
        // Read back from the journal, masked, they are not checked again.
        let masked = format!("{debit}BH005***78BI015j***@example.fr");
        let r = reread(masked.as_bytes()).unwrap();
        assert_eq!(r.receipt_phone.as_deref(), Some("***78"));
    }

    #[test]
    fn errors_map_to_af_codes() {
        assert_eq!(
            af("CZ0040320CJ012247300123456CA00201CB0042500CD0010"),
            Af::Format
        );
        assert_eq!(
            af("CZ0040320CJ012247300123456CA00201CB0042500CD001XCE003978"),
            Af::UnknownOperation
        );
        assert_eq!(
            af("CZ0040320CA00201CB0042500CD001RCE003978"),
            Af::UnknownOperation
        );
        assert_eq!(af("CZ0040320CA00201CB0042500CD0010CE003840"), Af::Currency);
        assert_eq!(af("CZ0040320CA00201CB0010CD0010CE003978"), Af::Format);
        assert_eq!(
            af("CZ0040320CA00201CB0042500CD0010CE003978CA00201"),
            Af::Format
        );
        assert_eq!(af("CZ0040220CA00201CB0042500CD0010CE003978"), Af::Format);
        assert_eq!(af("CZ0040320CA003001CB0042500CD0010CE003978"), Af::Format);
        assert_eq!(af("CZ0040320CA00201CB0042500CD0010CE0049780"), Af::Format);
        assert_eq!(
            af("CZ0040320CA00201CB0131234567890123CD0010CE003978"),
            Af::Format
        );
        assert_eq!(
            af("CZ0040320CA00201CB0042500CD0010CE003978BA0012"),
            Af::Format
        );
        assert_eq!(af("CZ0040320CA00201CD001P"), Af::Format);
        assert_eq!(af("CZ0040320CA00201"), Af::Format);
    }

    #[test]
    fn numbers_never_overflow() {
        assert_eq!(number(b"0039"), Some(39));
        assert_eq!(number(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(number(b"18446744073709551616"), None);
        assert_eq!(number(b"99999999999999999999999"), None);
        assert_eq!(number(b"0039-8"), None);
        assert_eq!(number(b"9:"), None);
        assert_eq!(number(b""), None);
    }

    #[test]
    fn reparse_checks_a_journaled_request_as_a_new_one() {
        // A corrupt currency used to overflow in `number` (debug builds
        // panicked at start-up); it is a format error like any other.
        let e = reread(b"CZ0040320CA00201CB0041000CD0010CE0039-8").unwrap_err();
        assert_eq!(e.af, Af::Format);
        let r = reparse(b"CZ0040320CA00201CB0041000CD0010CE003840").unwrap();
        assert_eq!((r.amount, r.currency), (Some(1000), Some(840)));
        assert!(reparse(b"CZ0040320CA00201CB0041000CD0010CE003").is_none());
        assert!(reparse(b"CA00201").is_none());
    }

    #[test]
    fn rejection_keeps_the_parsed_echo() {
        let e = parse(b"CZ0040320CJ012247300123456CA00201CB0042500CD0010", EUR).unwrap_err();
        assert_eq!(e.frame.text(CB), Some("2500"));
    }
}
