//! What a V3 request's own bytes tell about its register: missing or
//! unwelcome tags, an unusual CZ, lengths not written as three digits,
//! padded amounts. Pure functions over the body; examples never hold a
//! value that could be card data (tags and lengths, or masked values).

use super::kind::Kind;
use crate::wire::currency;
use crate::wire::operation::Operation;
use crate::wire::pan;
use crate::wire::tlv::{self, tags::*, Frame, Step, Tag};

/// Tags concertd reads or echoes in a request; others it ignores.
const KNOWN: &[Tag] = &[
    CZ, CJ, CA, CB, CC, CD, CE, CF, CH, CK, BA, BB, BF, BH, BI, IM, ZT, ID,
];

/// Findings on a V3 request body (framing removed), each with its
/// example.
pub fn findings(body: &[u8]) -> Vec<(Kind, String)> {
    let mut out = Vec::new();
    let frame = match Frame::decode(body) {
        Ok(f) => f,
        Err((partial, _)) => {
            if let Some(ex) = unpadded(body) {
                out.push((Kind::UnpaddedLength, ex));
            }
            partial
        }
    };
    if frame.elements().is_empty() {
        return out;
    }
    let op = frame.get(CD).and_then(Operation::from_cd);
    if let Some(cz) = frame.get(CZ) {
        if cz != b"0300" && cz != b"0320" {
            out.push((Kind::CzVersion, format!("CZ={}", pan::shown(cz))));
        }
    }
    // CJ matters where a transaction is asked; an identification or a
    // status request is answered without it everywhere.
    if !frame.has(CJ) && op.is_some_and(Operation::is_payment) {
        out.push((Kind::NoCj, "CJ missing".into()));
    }
    if let Some(bf) = frame.get(BF) {
        out.push((Kind::BfPresent, format!("BF={}", pan::shown(bf))));
    }
    let ignored: Vec<String> = frame
        .elements()
        .iter()
        .filter(|e| !KNOWN.contains(&e.tag))
        .map(|e| format!("{}{:03}", e.tag, e.value.len()))
        .collect();
    if !ignored.is_empty() {
        out.push((Kind::IgnoredTags, ignored.join(" ")));
    }
    if let Some(op) = op.filter(|o| o.mandatory().contains(&CE) && !frame.has(CE)) {
        out.push((Kind::NoCe, format!("CE missing for {}", op.name())));
    }
    if let (Some(cb), Some(ce)) = (frame.get(CB), frame.get(CE)) {
        if let Some(ex) = padded_amount(cb, ce) {
            out.push((Kind::CbZeros, ex));
        }
    }
    out
}

/// CB with more leading zeros than the currency needs: an amount needs
/// its significant digits, and at least one before its decimal point
/// (`005` for 0.05 EUR); more is padding.
fn padded_amount(cb: &[u8], ce: &[u8]) -> Option<String> {
    if !cb.iter().all(u8::is_ascii_digit) || !ce.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = std::str::from_utf8(ce).ok()?.parse::<u16>().ok()?;
    let significant = cb.len() - cb.iter().take_while(|b| **b == b'0').count();
    let needed = significant.max(usize::from(currency::exponent(code)) + 1);
    (cb.len() > needed).then(|| {
        format!(
            "CB={} ({} digits where {needed} do)",
            String::from_utf8_lossy(cb),
            cb.len()
        )
    })
}

/// When `body` is not TLV as written (three-digit lengths) but is with
/// lengths of one or two digits, or padded with blanks: the first such
/// element, as an example (its tag and length field only).
pub fn unpadded(body: &[u8]) -> Option<String> {
    let mut dead = vec![false; body.len() + 1];
    let mut first = None;
    lenient(body, 0, &mut dead, &mut first)
        .then_some(first)
        .flatten()
}

/// Whether `body[pos..]` reads as elements with lenient lengths; `first`
/// gets the first length not written as three digits. `dead` marks
/// positions known not to read, so the search stays linear.
fn lenient(body: &[u8], pos: usize, dead: &mut [bool], first: &mut Option<String>) -> bool {
    if pos == body.len() {
        return true;
    }
    if dead[pos] || body.len() - pos < 3 {
        return false;
    }
    let rest = &body[pos..];
    if !rest[0].is_ascii_uppercase() || !rest[1].is_ascii_uppercase() {
        dead[pos] = true;
        return false;
    }
    // Three digits first: a strict element is not a finding.
    for width in [3usize, 2, 1] {
        let Some(field) = rest.get(2..2 + width) else {
            continue;
        };
        let digits = String::from_utf8_lossy(field);
        let trimmed = digits.trim_matches(' ');
        let Ok(len) = trimmed.parse::<usize>() else {
            continue;
        };
        if trimmed.is_empty() || !trimmed.bytes().all(|b| b.is_ascii_digit()) || len == 0 {
            continue;
        }
        let start = 2 + width;
        let Some(value) = rest.get(start..start + len) else {
            continue;
        };
        if !value.iter().copied().all(tlv::is_printable) {
            continue;
        }
        let strict = width == 3 && trimmed.len() == 3;
        let mut mine = None;
        if !strict {
            mine = Some(format!(
                "{}{} (length {len} not written as three digits)",
                String::from_utf8_lossy(&rest[..2]),
                pan::escape(field)
            ));
        }
        let mut later = None;
        if lenient(body, pos + start + len, dead, &mut later) {
            *first = mine.or(later);
            return true;
        }
    }
    dead[pos] = true;
    false
}

/// Whether the bytes begin a V3 request (for bytes after a request: a
/// second request, or something else).
pub fn starts_request(bytes: &[u8]) -> bool {
    let b = bytes
        .iter()
        .position(|c| !matches!(c, b'\r' | b'\n'))
        .map_or(&[][..], |i| &bytes[i..]);
    let b = b
        .strip_prefix(&[crate::wire::framing::STX][..])
        .unwrap_or(b);
    b.starts_with(b"CZ") && matches!(tlv::step(b, 0), Step::Whole(..) | Step::Cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(body: &[u8]) -> Vec<Kind> {
        findings(body).into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn the_odoo_request_is_clean() {
        assert!(kinds(b"CZ0040300CJ012012345678901CA00201CE003978CD0010CB00512345").is_empty());
        // One digit of CB (0.05 EUR sent as CB0015) is not padding.
        assert!(kinds(b"CZ0040300CJ012012345678901CA00201CE003978CD0010CB0015").is_empty());
    }

    #[test]
    fn each_tag_mistake_is_found() {
        let k = kinds(b"CZ0040301CA00201CE003978CD0010CB012000000001234BF0010TI003abc");
        assert_eq!(
            k,
            [
                Kind::CzVersion,
                Kind::NoCj,
                Kind::BfPresent,
                Kind::IgnoredTags,
                Kind::CbZeros
            ]
        );
        let f = findings(b"CZ0040320CJ012012345678901CA00201CD0010CB0041000");
        assert_eq!(f, [(Kind::NoCe, "CE missing for debit".to_string())]);
        // A status request needs neither CJ nor CE.
        assert!(kinds(b"CZ0040320CA00201CD001T").is_empty());
    }

    #[test]
    fn lengths_not_written_as_three_digits() {
        let f = findings(b"CZ40320CJ012012345678901CA201CE3978CD10CB41000");
        assert_eq!(f[0].0, Kind::UnpaddedLength, "{f:?}");
        assert!(f[0].1.starts_with("CZ4 "), "{f:?}");
        let f = findings(b"CZ0040320CJ012012345678901CA 2 01CE003978CD0010CB0041000");
        assert_eq!(f[0].0, Kind::UnpaddedLength, "{f:?}");
        assert!(unpadded(b"CZ0040320CA00201").is_none());
        assert!(unpadded(b"hello world").is_none());
        // Long bodies stay linear: no blow-up on a pathological input.
        let long = b"AA1".repeat(3000);
        let _ = unpadded(&long);
    }

    #[test]
    fn examples_hold_no_card_number() {
        let pan = "4970101234560674";
        let body = format!("CZ0040320CJ012012345678901CA00201CE003978CD0010CB0041000XX016{pan}");
        for (_, ex) in findings(body.as_bytes()) {
            assert!(!ex.contains(pan), "{ex}");
        }
        let body = format!("CZ004{pan}");
        for (_, ex) in findings(body.as_bytes()) {
            assert!(!ex.contains("0101234560"), "{ex}");
        }
    }

    #[test]
    fn a_second_request_is_told_from_a_tail() {
        assert!(starts_request(b"CZ0040320CA00201CD001T"));
        assert!(starts_request(b"\r\nCZ0040320"));
        assert!(!starts_request(b"\r\n"));
        assert!(!starts_request(b"\x06\x04"));
    }
}
