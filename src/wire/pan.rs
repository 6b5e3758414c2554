//! Card numbers never leave concertd whole, and text from outside never
//! shapes a log line.
//!
//! One masking policy for every value that comes from outside (a request's
//! element, a program's output and standard error, an upstream's answer, a
//! ticket, a control command, a configuration value): digits joined by
//! separators make a run, and every window of 13 to 19 of its digits
//! (counting digits only) that passes the Luhn check keeps at most its
//! first 6 and last 4 digits; the others become `#`, separators stay. A
//! separator is any run of 1 to 3 characters that are neither letters nor
//! digits: a blank, two, a tab, `.`, `/`, `_`, a no-break space, ` - `, a
//! line break (a ticket may cut a number across two lines). Card numbers
//! are written grouped, every way, by programs, people and tickets, so
//! contiguous digits alone would let them through.
//!
//! Callers mask values, one field at a time (a TLV element, a V2 field, a
//! program's `KEY=value`, a command line), never a whole log line, so that
//! concertd's own time stamps, ids and addresses are never taken for card
//! numbers and digits of neighbouring fields never join into a false one;
//! and they mask before they cut, so that a cut never shows what masking
//! would hide.

use crate::wire::tlv::{tags, Frame, Tag};
use std::borrow::Cow;
use std::fmt::Write;

pub const MASK: u8 = b'#';

/// Window lengths taken for a card number.
const SHORTEST: usize = 13;
const LONGEST: usize = 19;
/// The most characters a separator between two digits of a run holds.
const JOINT: usize = 3;
/// The most bytes one card number can span, separators included (a
/// character takes at most 4 bytes): what a reader must see past a cut so
/// that a number straddling it is masked whole.
pub const SPAN: usize = LONGEST + (LONGEST - 1) * JOINT * 4;

/// Masks, in place, every card number in `bytes` by the masking rule;
/// whether anything was masked. Masking only turns digits into `#`, so
/// masking again until nothing changes ends.
pub fn mask_in_place(bytes: &mut [u8]) -> bool {
    mask(bytes, None)
}

/// As `mask_in_place`, but a window whose digits are exactly `id` (a
/// transaction id, which a program may print back) is not taken for a
/// card number.
pub fn mask_except(bytes: &mut [u8], id: u64) -> bool {
    mask(bytes, Some(id.to_string().as_bytes()))
}

/// `text` with its card numbers masked (only ASCII digits change, so it
/// stays the text it was).
pub fn masked_text(text: &str) -> String {
    let mut v = text.as_bytes().to_vec();
    if !mask_in_place(&mut v) {
        return text.to_string();
    }
    String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// One value from outside as a log line or a reply may show it: card
/// numbers masked, then control and format characters escaped.
pub fn shown(value: &[u8]) -> String {
    let mut v = value.to_vec();
    mask_in_place(&mut v);
    escape(&v)
}

/// How many bytes the character at `k` takes when it is neither a letter
/// nor a digit (a byte that is not UTF-8 counts as one such character);
/// `None` at a letter, a digit or the end.
fn mark(bytes: &[u8], k: usize) -> Option<usize> {
    let b = *bytes.get(k)?;
    if b.is_ascii_alphanumeric() {
        return None;
    }
    let len = match b {
        0x00..=0x7f => return Some(1),
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => return Some(1),
    };
    let c = bytes
        .get(k..k + len)
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.chars().next());
    match c {
        Some(c) if c.is_alphanumeric() => None,
        Some(_) => Some(len),
        None => Some(1),
    }
}

/// The bytes from `j` to the next digit when at most [`JOINT`] characters
/// that are neither letters nor digits lie between: the separator that
/// joins the digit before `j` to the one after.
fn joint(bytes: &[u8], j: usize) -> Option<usize> {
    let mut k = j;
    for _ in 0..JOINT {
        k += mark(bytes, k)?;
        if bytes.get(k).is_some_and(u8::is_ascii_digit) {
            return Some(k - j);
        }
    }
    None
}

fn mask(bytes: &mut [u8], keep: Option<&[u8]>) -> bool {
    let mut masked = false;
    // Positions of the digits of the current run, reused from run to run.
    let mut pos: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        pos.clear();
        pos.push(i);
        let mut j = i + 1;
        loop {
            if bytes.get(j).is_some_and(u8::is_ascii_digit) {
                pos.push(j);
                j += 1;
            } else if let Some(n) = joint(bytes, j) {
                pos.push(j + n);
                j += n + 1;
            } else {
                break;
            }
        }
        if pos.len() >= SHORTEST {
            masked |= mask_run(bytes, &pos, keep);
        }
        i = j;
    }
    masked
}

/// Masks the windows of one run (`pos`: where its digits are) that pass
/// Luhn. Sums are taken from each window's last digit leftwards, so every
/// window ending there is checked in one pass.
fn mask_run(bytes: &mut [u8], pos: &[usize], keep: Option<&[u8]>) -> bool {
    let n = pos.len();
    let mut hide = vec![false; n];
    let mut any = false;
    for end in SHORTEST..=n {
        let mut sum = 0u32;
        for k in 0..LONGEST.min(end) {
            let mut v = u32::from(bytes[pos[end - 1 - k]] - b'0');
            if k % 2 == 1 {
                v *= 2;
                if v > 9 {
                    v -= 9;
                }
            }
            sum += v;
            let len = k + 1;
            if len < SHORTEST || !sum.is_multiple_of(10) {
                continue;
            }
            let start = end - len;
            if keep.is_some_and(|id| &bytes[pos[start]..=pos[end - 1]] == id) {
                continue;
            }
            for h in &mut hide[start + 6..end - 4] {
                *h = true;
            }
            any = true;
        }
    }
    for (p, h) in pos.iter().zip(hide) {
        if h {
            bytes[*p] = MASK;
        }
    }
    any
}

/// The shopper's phone (`BH`) and e-mail (`BI`), given for an e-receipt,
/// are personal data: logs and the journal keep a phone's last 2 digits
/// and an e-mail's first letter and domain (`***78`, `j***@example.fr`),
/// enough to tell two apart. The domain is a value from outside like any
/// other: a card number there is masked too (`a***@497010######0674.fr`).
/// Masking twice changes nothing.
pub fn mask_personal(tag: Tag, v: &[u8]) -> Option<Vec<u8>> {
    if tag == tags::BH {
        let digits: Vec<u8> = v.iter().copied().filter(u8::is_ascii_digit).collect();
        let last = &digits[digits.len().saturating_sub(2)..];
        return Some([&b"***"[..], last].concat());
    }
    if tag != tags::BI {
        return None;
    }
    let (local, domain) = match v.iter().rposition(|b| *b == b'@') {
        Some(at) => (&v[..at], Some(&v[at..])),
        None => (v, None),
    };
    let mut out: Vec<u8> = local
        .iter()
        .copied()
        .find(|b| *b != b'*')
        .into_iter()
        .collect();
    out.extend_from_slice(b"***");
    let mut domain = domain.unwrap_or_default().to_vec();
    mask_in_place(&mut domain);
    out.extend_from_slice(&domain);
    Some(out)
}

/// A debit answer's `ID` or a credit's `IM` holding one of our
/// transaction ids: 13 digits starting with 1 to 3 (start seconds x 1000
/// plus a count, until 2096). A tenth of them pass the Luhn check, but the
/// only card numbers of 13 digits are Visa's, which start with 4: masking
/// them would lose which debit a refund names. Any other value is masked.
fn is_transaction_id(tag: Tag, v: &[u8]) -> bool {
    (tag == tags::ID || tag == tags::IM)
        && v.len() == 13
        && v.iter().all(u8::is_ascii_digit)
        && (b'1'..=b'3').contains(&v[0])
}

/// One element's value as logs and the journal keep it: personal data
/// masked by [`mask_personal`], card numbers by the masking rule.
pub fn mask_element(tag: Tag, v: &mut Vec<u8>, except: Option<u64>) {
    if let Some(m) = mask_personal(tag, v) {
        *v = m;
    }
    if is_transaction_id(tag, v) {
        return;
    }
    match except {
        Some(id) => mask_except(v, id),
        None => mask_in_place(v),
    };
}

/// One element's value as a log line shows it: masked by
/// [`mask_element`] (our own transaction ids in `ID` and `IM` whole), then
/// escaped.
pub fn shown_element(tag: Tag, v: &[u8]) -> String {
    let mut v = v.to_vec();
    mask_element(tag, &mut v, None);
    escape(&v)
}

/// `raw` with its card numbers masked: element by element when it is a
/// frame (so that digit runs never straddle a length field), else whole.
pub fn masked(raw: &[u8], except: Option<u64>) -> Vec<u8> {
    let m = |v: &mut [u8]| match except {
        Some(id) => mask_except(v, id),
        None => mask_in_place(v),
    };
    match Frame::decode(raw) {
        Ok(f) => {
            let mut out = Vec::with_capacity(raw.len());
            for e in f.elements() {
                let mut one = Frame::new();
                let mut v = e.value.clone();
                mask_element(e.tag, &mut v, except);
                one.push(e.tag, v);
                one.encode_into(&mut out);
            }
            out
        }
        Err(_) => {
            let mut v = raw.to_vec();
            m(&mut v);
            v
        }
    }
}

/// Text from outside (a register, a program, an upstream) as it may appear
/// in a log line: control, format and line or paragraph separator
/// characters (Unicode Cc, Cf, Zl, Zp: CR, LF, ESC, U+2028, the
/// bidirectional overrides...) and bytes that are not UTF-8 are written
/// `\xNN` or `\u{NNNN}`, so that nothing can end, forge, hide or reorder
/// a line. Printable ASCII is kept as it is.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        push_escaped(&mut s, chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    s
}

/// As `escape`, for text already decoded.
pub fn escape_str(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    push_escaped(&mut s, text);
    s
}

/// A whole log line, whatever wrote it, as the logger writes it: as
/// [`escape_str`], but a line break followed by four blanks stays, which is
/// how concertd itself continues a record on the next line (a ticket
/// printed); any other line break is escaped. Unchanged (and not copied)
/// when there is nothing to escape.
pub fn escape_line(text: &str) -> Cow<'_, str> {
    if !text.chars().any(hidden) {
        return Cow::Borrowed(text);
    }
    let mut s = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(at) = rest.find('\n') {
        push_escaped(&mut s, &rest[..at]);
        if rest[at + 1..].starts_with("    ") {
            s.push('\n');
        } else {
            s.push_str("\\x0a");
        }
        rest = &rest[at + 1..];
    }
    push_escaped(&mut s, rest);
    Cow::Owned(s)
}

/// Unicode's format characters (general category Cf, Unicode 15.1): they
/// print nothing, and some reorder (U+202E) or hide what follows.
const FORMAT: &[(char, char)] = &[
    ('\u{00ad}', '\u{00ad}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061c}', '\u{061c}'),
    ('\u{06dd}', '\u{06dd}'),
    ('\u{070f}', '\u{070f}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08e2}', '\u{08e2}'),
    ('\u{180e}', '\u{180e}'),
    ('\u{200b}', '\u{200f}'),
    ('\u{202a}', '\u{202e}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206f}'),
    ('\u{feff}', '\u{feff}'),
    ('\u{fff9}', '\u{fffb}'),
    ('\u{110bd}', '\u{110bd}'),
    ('\u{110cd}', '\u{110cd}'),
    ('\u{13430}', '\u{1343f}'),
    ('\u{1bca0}', '\u{1bca3}'),
    ('\u{1d173}', '\u{1d17a}'),
    ('\u{e0001}', '\u{e0001}'),
    ('\u{e0020}', '\u{e007f}'),
];

/// A character a log line never holds as it is: Cc, Cf, Zl or Zp.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}')
        || (c > '\u{ac}' && FORMAT.iter().any(|&(lo, hi)| (lo..=hi).contains(&c)))
}

fn push_escaped(s: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            ' '..='~' => s.push(c),
            '\0'..='\u{1f}' | '\u{7f}' => {
                let _ = write!(s, "\\x{:02x}", c as u32);
            }
            c if hidden(c) => {
                let _ = write!(s, "\\u{{{:04x}}}", c as u32);
            }
            c => s.push(c),
        }
    }
}

/// A printable copy of a frame (or of raw bytes) for logs: card numbers
/// masked element by element, control bytes escaped.
pub fn scrub(raw: &[u8]) -> String {
    escape(&masked(raw, None))
}

/// As `scrub`, for what a transaction's program printed: its own id is
/// not a card number.
pub fn scrub_except(raw: &[u8], id: u64) -> String {
    escape(&masked(raw, Some(id)))
}

/// As `scrub`, showing at most the first `max` bytes: masked whole first,
/// so that the cut cannot leave the start of a card number whole.
pub fn scrub_cut(raw: &[u8], max: usize) -> String {
    let m = masked(raw, None);
    escape(&m[..m.len().min(max)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn transaction_ids_in_id_and_im_are_not_card_numbers() {
        // 1796098000005 passes the Luhn check.
        let id = b"1796098000005".to_vec();
        for tag in [tags::ID, tags::IM] {
            let mut v = id.clone();
            mask_element(tag, &mut v, None);
            assert_eq!(v, id);
        }
        let mut v = id.clone();
        mask_element(tags::CF, &mut v, None);
        assert_ne!(v, id);
        // A 13-digit Visa number, or a longer card number, in IM is masked.
        for pan in [&b"4222222222222"[..], b"4970101234560674"] {
            let mut v = pan.to_vec();
            mask_element(tags::IM, &mut v, None);
            assert!(v.contains(&MASK), "{}", String::from_utf8_lossy(&v));
        }
    }

    #[test]
    fn receipt_phone_and_email_keep_what_tells_them_apart() {
        let m =
            |tag, v: &str| String::from_utf8(mask_personal(tag, v.as_bytes()).unwrap()).unwrap();
        assert_eq!(m(tags::BH, "+33 6 12 34 56 78"), "***78");
        assert_eq!(m(tags::BH, "0612345678          "), "***78");
        assert_eq!(m(tags::BI, "jean.dupont@example.fr"), "j***@example.fr");
        assert_eq!(m(tags::BI, "nobody"), "n***");
        assert_eq!(mask_personal(tags::CF, b"jean@example.fr"), None);
        for (tag, v) in [
            (tags::BH, "***78"),
            (tags::BH, "***"),
            (tags::BI, "j***@x.fr"),
            (tags::BI, "***@x.fr"),
        ] {
            assert_eq!(m(tag, v), v, "masking twice changes nothing");
        }
        let f = b"CZ0040320CA00201BH0100612345678BI015jean@example.fr";
        assert_eq!(scrub(f), "CZ0040320CA00201BH005***78BI015j***@example.fr");
    }

    proptest! {
        #[test]
        fn personal_masking_is_idempotent(tag in prop_oneof![Just(tags::BH), Just(tags::BI)],
                                          v in proptest::collection::vec(0x20u8..0x7f, 0..40)) {
            let once = mask_personal(tag, &v).unwrap();
            prop_assert_eq!(mask_personal(tag, &once).unwrap(), once);
        }
    }

    fn luhn(digits: &[u8]) -> bool {
        let mut sum = 0u32;
        for (i, d) in digits.iter().rev().enumerate() {
            let mut v = u32::from(d - b'0');
            if i % 2 == 1 {
                v *= 2;
                if v > 9 {
                    v -= 9;
                }
            }
            sum += v;
        }
        sum.is_multiple_of(10)
    }

    fn masked_str(s: &str) -> String {
        let mut v = s.as_bytes().to_vec();
        mask_in_place(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn masks_card_numbers_only() {
        let mut v = b"pan 4970101234560674 amount 000000012345".to_vec();
        assert!(mask_in_place(&mut v));
        assert_eq!(&v[..], b"pan 497010######0674 amount 000000012345");
        let mut not_luhn = b"4970101234560675".to_vec();
        assert!(!mask_in_place(&mut not_luhn));
    }

    #[test]
    fn grouped_card_numbers_are_masked_separators_kept() {
        assert_eq!(masked_str("4970 1012 3456 0674"), "4970 10## #### 0674");
        assert_eq!(masked_str("4970-1012-3456-0674"), "4970-10##-####-0674");
        assert_eq!(
            masked_str("AA=4970 1012-3456 0674."),
            "AA=4970 10##-#### 0674."
        );
        // Whatever separates the digits, one to three characters that are
        // neither letters nor digits, a line break included.
        for (raw, want) in [
            ("4970  1012  3456  0674", "4970  10##  ####  0674"),
            ("4970\t1012\t3456\t0674", "4970\t10##\t####\t0674"),
            ("4970.1012.3456.0674", "4970.10##.####.0674"),
            ("4970/1012/3456/0674", "4970/10##/####/0674"),
            ("4970_1012_3456_0674", "4970_10##_####_0674"),
            (
                "4970\u{a0}1012\u{a0}3456\u{a0}0674",
                "4970\u{a0}10##\u{a0}####\u{a0}0674",
            ),
            ("4970 - 1012 - 3456 - 0674", "4970 - 10## - #### - 0674"),
            (
                "CARTE 4970 1012\r\n3456 0674\r\n",
                "CARTE 4970 10##\r\n#### 0674\r\n",
            ),
            ("4970#1012#3456#0674", "4970#10########0674"),
            (
                "4970\u{202e}1012\u{2028}3456\x1b0674",
                "4970\u{202e}10##\u{2028}####\x1b0674",
            ),
        ] {
            assert_eq!(masked_str(raw), want, "{raw:?}");
        }
        // A letter, or four separators, end the run: no 13 digits left.
        for s in [
            "4970x1012x3456x0674",
            "4970    1012 3456 0674",
            "4970 é 1012 3456",
        ] {
            assert_eq!(masked_str(s), s);
        }
        // A separator at either end is not part of the run.
        assert_eq!(masked_str("-4970101234560674 "), "-497010######0674 ");
    }

    #[test]
    fn an_e_mail_domain_is_masked_too() {
        let m =
            |v: &str| String::from_utf8(mask_personal(tags::BI, v.as_bytes()).unwrap()).unwrap();
        assert_eq!(m("a@4970101234560674.fr"), "a***@497010######0674.fr");
        assert_eq!(m("a@4970.1012.3456.0674.fr"), "a***@4970.10##.####.0674.fr");
        let f = b"CZ0040320BI021a@4970101234560674.fr";
        assert_eq!(scrub(f), "CZ0040320BI024a***@497010######0674.fr");
    }

    #[test]
    fn a_card_number_inside_a_longer_run_is_found() {
        // Digits joined to it on either side: it is one of the windows,
        // and other windows that pass Luhn mask more.
        assert_eq!(masked_str("1 4970 1012 3456 0674"), "1 4970 10## #### 0674");
        assert_eq!(
            masked_str("12 4970 1012 3456 0674 99"),
            "12 4970 #### #### ##74 99"
        );
    }

    #[test]
    fn masking_twice_changes_nothing() {
        for s in [
            "4970 1012 3456 0674",
            "11111111111111111111111111111111",
            "5 4970-1012-3456-0674-9 1796089883005",
        ] {
            let once = masked_str(s);
            assert_eq!(masked_str(&once), once);
        }
    }

    #[test]
    fn ids_amounts_and_short_runs_stay() {
        // A transaction id that fails Luhn, amounts, dates.
        for s in [
            "tx 1796089883001: approved",
            "CB=000000012345",
            "26/11/2026 15:58:32",
            "01 23 45 67 89",
        ] {
            assert_eq!(masked_str(s), s);
        }
        // One that passes is still a transaction's own id when told so.
        let mut v = b"id 1796089883005".to_vec();
        assert!(!mask_except(&mut v, 1_796_089_883_005));
        assert!(mask_in_place(&mut v));
    }

    #[test]
    fn scrub_keeps_tlv_structure() {
        let s = scrub(b"CZ0040320CJ012247300123456CF0164970101234560674");
        assert_eq!(s, "CZ0040320CJ012247300123456CF016497010######0674");
        assert_eq!(scrub(b"\x02AB\x03"), "\\x02AB\\x03");
    }

    #[test]
    fn escapes_what_could_forge_a_line() {
        assert_eq!(
            escape(b"ok\r\n2026 ERROR forged\x1b[2K\x7f"),
            "ok\\x0d\\x0a2026 ERROR forged\\x1b[2K\\x7f"
        );
        // UTF-8 text is kept, bytes that are not UTF-8 and C1 or bidi
        // controls are not.
        assert_eq!(escape("payé".as_bytes()), "payé");
        assert_eq!(escape(b"\xe9t\xc3"), "\\xe9t\\xc3");
        assert_eq!(
            escape("a\u{85}b\u{202e}c".as_bytes()),
            "a\\u{0085}b\\u{202e}c"
        );
        assert_eq!(escape_str("\u{2028}"), "\\u{2028}");
    }

    #[test]
    fn a_log_line_holds_no_control_or_format_character() {
        assert_eq!(escape_line("tx 1: plain"), "tx 1: plain");
        assert!(matches!(escape_line("plain"), Cow::Borrowed(_)));
        assert_eq!(
            escape_line("a\x1bb\u{2028}c\u{202e}d\u{200b}e\u{feff}f\u{ad}g\u{e0041}"),
            "a\\x1bb\\u{2028}c\\u{202e}d\\u{200b}e\\u{feff}f\\u{00ad}g\\u{e0041}"
        );
        // concertd's own continuation lines stay; any other break does not.
        assert_eq!(
            escape_line("print:\n    TICKET\n2026 ERROR forged\r"),
            "print:\n    TICKET\\x0a2026 ERROR forged\\x0d"
        );
        assert_eq!(escape_line("é ü 中"), "é ü 中");
    }

    #[test]
    fn a_cut_comes_after_masking() {
        let raw = format!("{}4970101234560674", "x".repeat(55));
        let s = scrub_cut(raw.as_bytes(), 64);
        assert_eq!(s, format!("{}497010###", "x".repeat(55)));
    }

    /// The rule, written the slow and obvious way, on characters.
    fn reference(text: &str) -> Vec<u8> {
        let mut out = text.as_bytes().to_vec();
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let digit = |k: usize| chars.get(k).is_some_and(|(_, c)| c.is_ascii_digit());
        let mut i = 0;
        while i < chars.len() {
            if !digit(i) {
                i += 1;
                continue;
            }
            let mut pos = vec![chars[i].0];
            let mut j = i + 1;
            'run: while j < chars.len() {
                if digit(j) {
                    pos.push(chars[j].0);
                    j += 1;
                    continue;
                }
                for gap in 1..=3 {
                    let all_marks = (j..j + gap)
                        .all(|k| chars.get(k).is_some_and(|(_, c)| !c.is_alphanumeric()));
                    if !all_marks {
                        break;
                    }
                    if digit(j + gap) {
                        pos.push(chars[j + gap].0);
                        j += gap + 1;
                        continue 'run;
                    }
                }
                break;
            }
            for s in 0..pos.len() {
                for len in SHORTEST..=LONGEST {
                    if s + len > pos.len() {
                        break;
                    }
                    let w: Vec<u8> = pos[s..s + len]
                        .iter()
                        .map(|&p| text.as_bytes()[p])
                        .collect();
                    if luhn(&w) {
                        for &p in &pos[s + 6..s + len - 4] {
                            out[p] = MASK;
                        }
                    }
                }
            }
            i = j;
        }
        out
    }

    /// A Luhn-valid card number of 13 to 19 digits.
    fn pan() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(0u8..10, 12..=18).prop_map(|body| {
            let mut d: Vec<u8> = body.iter().map(|v| b'0' + v).collect();
            let check = (0..10u8)
                .map(|c| b'0' + c)
                .find(|&c| {
                    let mut w = d.clone();
                    w.push(c);
                    luhn(&w)
                })
                .unwrap_or(b'0');
            d.push(check);
            d
        })
    }

    /// Text around it: what a backend value or a log line may hold, blanks,
    /// dashes, digits and line breaks included, so that runs extend past the
    /// card number.
    fn text() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                0x20u8..=0x7e,
                Just(b' '),
                Just(b'-'),
                b'0'..=b'9',
                Just(b'\n')
            ],
            0..40,
        )
    }

    /// How card numbers are written: every separator shape.
    const SEPARATORS: &[&str] = &[
        "", " ", "  ", "\t", ".", "/", "_", "-", "\u{a0}", " - ", "\n", "\r\n", "#", "\u{2028}",
    ];

    /// The card number with a separator from `SEPARATORS` between some
    /// digits, between `before` and `after`; and where its digits are.
    fn embed(pan: &[u8], seps: &[usize], before: &[u8], after: &[u8]) -> (Vec<u8>, Vec<usize>) {
        let mut v = before.to_vec();
        let mut at = Vec::new();
        for (i, &d) in pan.iter().enumerate() {
            if i > 0 {
                v.extend_from_slice(SEPARATORS[seps[i % seps.len()]].as_bytes());
            }
            at.push(v.len());
            v.push(d);
        }
        v.extend_from_slice(after);
        (v, at)
    }

    /// Whether `shown` (a log line: `raw` masked, then escaped) holds 11 or
    /// more of the digits of the card number at `at` in `raw`: `shown` read
    /// back through the escapes gives the masked bytes, position for position.
    fn digits_shown(masked: &[u8], at: &[usize]) -> usize {
        at.iter()
            .filter(|&&p| masked.get(p).is_some_and(u8::is_ascii_digit))
            .count()
    }

    proptest! {
        #[test]
        fn card_numbers_never_show_more_than_ten_digits(
            pan in pan(),
            seps in proptest::collection::vec(0..SEPARATORS.len(), 1..20),
            before in text(),
            after in text(),
        ) {
            let (raw, at) = embed(&pan, &seps, &before, &after);
            // A backend value.
            let mut v = raw.clone();
            mask_in_place(&mut v);
            prop_assert!(digits_shown(&v, &at) <= 10, "{}", String::from_utf8_lossy(&v));
            // A log line shows the same value, escaped.
            prop_assert_eq!(shown(&raw), escape(&v));
            prop_assert_eq!(scrub(&raw), escape(&v));
            // Masked until nothing changes, as the journal keeps it: never more.
            let mut again = v.clone();
            while mask_in_place(&mut again) {}
            prop_assert!(digits_shown(&again, &at) <= 10);
            // Cut anywhere after masking: never more.
            let max = before.len() + pan.len() / 2;
            prop_assert_eq!(scrub_cut(&raw, max), escape(&v[..max.min(v.len())]));
            // A program's text holding its own transaction id keeps it,
            // the card number is masked all the same.
            let mut w = raw.clone();
            mask_except(&mut w, 1_796_098_000_005);
            prop_assert!(digits_shown(&w, &at) <= 10);
        }

        #[test]
        fn masking_is_the_rule_exactly(raw in proptest::collection::vec(
            prop_oneof![
                4 => prop_oneof![Just('0'), Just('1'), Just('4'), Just('5'), Just('9'), Just('7')],
                1 => prop_oneof![
                    Just(' '), Just('-'), Just('x'), Just('.'), Just('\t'), Just('_'),
                    Just('\u{a0}'), Just('\n'), Just('#'), Just('é'), Just('\u{202e}'),
                ],
            ],
            0..80,
        )) {
            let text: String = raw.into_iter().collect();
            let mut v = text.clone().into_bytes();
            let changed = mask_in_place(&mut v);
            let want = reference(&text);
            prop_assert_eq!(changed, want != text.as_bytes());
            prop_assert_eq!(v, want);
        }

        #[test]
        fn ids_and_amounts_that_are_no_card_number_stay(
            id in 1_000_000_000_000u64..10_000_000_000_000,
            amount in 0u64..1_000_000_000_000,
            currency in 0u16..1000,
        ) {
            let line = format!("tx {id}: CB={amount:012} CE={currency:03} id={id}");
            let mut v = line.clone().into_bytes();
            mask_in_place(&mut v);
            if luhn(id.to_string().as_bytes()) {
                let mut v = line.clone().into_bytes();
                prop_assert!(!mask_except(&mut v, id));
            } else {
                prop_assert_eq!(String::from_utf8(v).unwrap(), line);
            }
        }

        #[test]
        fn escaped_text_holds_no_control_character(raw in proptest::collection::vec(any::<u8>(), 0..200)) {
            let s = escape(&raw);
            prop_assert!(!s.chars().any(char::is_control), "{:?}", s);
            let bad = ['\u{2028}', '\u{2029}', '\u{202e}'];
            prop_assert!(!s.contains(bad), "{:?}", s);
        }
    }
}
