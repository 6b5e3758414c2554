//! Concert V3 TLV elements: a two-letter tag, a three-digit length and a
//! value of 1 to 999 printable ASCII bytes, concatenated with no separator.

use std::fmt;

/// Largest value a three-digit length field can announce.
pub const MAX_VALUE: usize = 999;

/// A two-letter tag (`A`..`Z` only).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(pub [u8; 2]);

impl Tag {
    pub const fn new(s: &[u8; 2]) -> Tag {
        Tag(*s)
    }
    pub fn as_str(&self) -> &str {
        // Tags are only ever built from A-Z bytes (checked by the decoder or
        // written as constants), so this cannot fail.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Tags concertd interprets or produces.
pub mod tags {
    use super::Tag;
    pub const CZ: Tag = Tag::new(b"CZ");
    pub const CJ: Tag = Tag::new(b"CJ");
    pub const CA: Tag = Tag::new(b"CA");
    pub const CB: Tag = Tag::new(b"CB");
    pub const CC: Tag = Tag::new(b"CC");
    pub const CD: Tag = Tag::new(b"CD");
    pub const CE: Tag = Tag::new(b"CE");
    pub const CF: Tag = Tag::new(b"CF");
    pub const CG: Tag = Tag::new(b"CG");
    pub const CH: Tag = Tag::new(b"CH");
    pub const CI: Tag = Tag::new(b"CI");
    pub const CK: Tag = Tag::new(b"CK");
    pub const AA: Tag = Tag::new(b"AA");
    pub const AB: Tag = Tag::new(b"AB");
    pub const AC: Tag = Tag::new(b"AC");
    pub const AE: Tag = Tag::new(b"AE");
    pub const AF: Tag = Tag::new(b"AF");
    pub const AI: Tag = Tag::new(b"AI");
    pub const AK: Tag = Tag::new(b"AK");
    pub const AL: Tag = Tag::new(b"AL");
    pub const BA: Tag = Tag::new(b"BA");
    pub const BB: Tag = Tag::new(b"BB");
    pub const BF: Tag = Tag::new(b"BF");
    /// Shopper phone and e-mail for an e-receipt (PayXpert, HiPay).
    pub const BH: Tag = Tag::new(b"BH");
    pub const BI: Tag = Tag::new(b"BI");
    pub const ZT: Tag = Tag::new(b"ZT");
    // PayXpert's own tags: a debit's transaction id (ID), the operation's
    // time (AP), the terminal's serial (AQ); a credit's debit (IM).
    pub const ID: Tag = Tag::new(b"ID");
    pub const AP: Tag = Tag::new(b"AP");
    pub const AQ: Tag = Tag::new(b"AQ");
    pub const IM: Tag = Tag::new(b"IM");
}

/// One tag-length-value element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    pub tag: Tag,
    pub value: Vec<u8>,
}

/// A decoded message: its elements in wire order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frame {
    elements: Vec<Element>,
}

/// Why bytes are not a well-formed TLV message. Offsets count from the
/// first byte of the message body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    Empty,
    BadTag { offset: usize },
    BadLength { offset: usize },
    ZeroLength { offset: usize },
    BadByte { offset: usize, byte: u8 },
    Truncated { offset: usize },
    Duplicate { tag: Tag, offset: usize },
    CzNotFirst,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Empty => write!(f, "empty message"),
            DecodeError::BadTag { offset } => {
                write!(f, "tag at byte {offset} is not two letters A-Z")
            }
            DecodeError::BadLength { offset } => {
                write!(f, "length at byte {offset} is not three digits")
            }
            DecodeError::ZeroLength { offset } => {
                write!(f, "element at byte {offset} has length 000")
            }
            DecodeError::BadByte { offset, byte } => {
                write!(f, "byte 0x{byte:02x} at {offset} is not printable ASCII")
            }
            DecodeError::Truncated { offset } => {
                write!(f, "element at byte {offset} is cut short")
            }
            DecodeError::Duplicate { tag, offset } => {
                write!(f, "tag {tag} given twice (again at byte {offset})")
            }
            DecodeError::CzNotFirst => write!(f, "CZ is not the first element"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Result of looking at the start of an element that may not be all there.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// A whole element of this many bytes.
    Whole(Element, usize),
    /// The bytes so far are a valid beginning of an element.
    Cut,
    /// The bytes cannot begin an element.
    Invalid(DecodeError),
}

pub fn is_printable(b: u8) -> bool {
    (0x20..=0x7e).contains(&b)
}

/// Whether the decoder accepts `v` as a value: 1 to 999 printable bytes.
pub fn is_valid_value(v: &[u8]) -> bool {
    (1..=MAX_VALUE).contains(&v.len()) && v.iter().copied().all(is_printable)
}

/// Reads one element at `bytes[0..]`; `base` is its offset in the message
/// (for error reports only).
pub fn step(bytes: &[u8], base: usize) -> Step {
    for (i, &b) in bytes.iter().take(2).enumerate() {
        if !b.is_ascii_uppercase() {
            return Step::Invalid(DecodeError::BadTag { offset: base + i });
        }
    }
    if bytes.len() < 2 {
        return Step::Cut;
    }
    let mut len = 0usize;
    for i in 2..5 {
        match bytes.get(i) {
            None => return Step::Cut,
            Some(b) if b.is_ascii_digit() => len = len * 10 + usize::from(b - b'0'),
            Some(_) => return Step::Invalid(DecodeError::BadLength { offset: base + 2 }),
        }
    }
    if len == 0 {
        return Step::Invalid(DecodeError::ZeroLength { offset: base });
    }
    let avail = &bytes[5..bytes.len().min(5 + len)];
    if let Some(i) = avail.iter().position(|&b| !is_printable(b)) {
        return Step::Invalid(DecodeError::BadByte {
            offset: base + 5 + i,
            byte: avail[i],
        });
    }
    if avail.len() < len {
        return Step::Cut;
    }
    let tag = Tag([bytes[0], bytes[1]]);
    Step::Whole(
        Element {
            tag,
            value: avail.to_vec(),
        },
        5 + len,
    )
}

impl Frame {
    pub fn new() -> Frame {
        Frame::default()
    }

    /// Decodes a whole message. On error, also returns the elements read
    /// before the fault, so an error answer can still echo them.
    pub fn decode(bytes: &[u8]) -> Result<Frame, (Frame, DecodeError)> {
        let frame = Frame::decode_any(bytes)?;
        if frame.elements[0].tag != tags::CZ {
            return Err((frame, DecodeError::CzNotFirst));
        }
        Ok(frame)
    }

    /// Decodes elements in any order (the inside of a constructed tag).
    pub fn decode_any(bytes: &[u8]) -> Result<Frame, (Frame, DecodeError)> {
        let mut frame = Frame::new();
        if bytes.is_empty() {
            return Err((frame, DecodeError::Empty));
        }
        let mut pos = 0;
        while pos < bytes.len() {
            match step(&bytes[pos..], pos) {
                Step::Whole(el, n) => {
                    if frame.get(el.tag).is_some() {
                        return Err((
                            frame,
                            DecodeError::Duplicate {
                                tag: el.tag,
                                offset: pos,
                            },
                        ));
                    }
                    frame.elements.push(el);
                    pos += n;
                }
                Step::Cut => return Err((frame, DecodeError::Truncated { offset: pos })),
                Step::Invalid(e) => return Err((frame, e)),
            }
        }
        Ok(frame)
    }

    pub fn elements(&self) -> &[Element] {
        &self.elements
    }

    pub fn get(&self, tag: Tag) -> Option<&[u8]> {
        self.elements
            .iter()
            .find(|e| e.tag == tag)
            .map(|e| e.value.as_slice())
    }

    /// The value as text; values are printable ASCII by construction.
    pub fn text(&self, tag: Tag) -> Option<&str> {
        self.get(tag).and_then(|v| std::str::from_utf8(v).ok())
    }

    pub fn has(&self, tag: Tag) -> bool {
        self.get(tag).is_some()
    }

    /// A copy without `tag`'s element, the others in their order.
    pub fn without(&self, tag: Tag) -> Frame {
        let mut f = Frame::new();
        for e in self.elements.iter().filter(|e| e.tag != tag) {
            f.push(e.tag, e.value.clone());
        }
        f
    }

    /// Appends an element. Callers building answers only pass values they
    /// produced or that came out of a decoded request, so the value is
    /// already 1..=999 printable bytes; anything else is a programming error
    /// caught by the debug assertion and by `encode`'s tests.
    pub fn push(&mut self, tag: Tag, value: impl Into<Vec<u8>>) {
        let value = value.into();
        debug_assert!(!value.is_empty() && value.len() <= MAX_VALUE, "{tag}");
        self.elements.push(Element { tag, value });
    }

    /// Appends the element with this tag from `from`, if it has one.
    pub fn echo(&mut self, from: &Frame, tag: Tag) {
        if let Some(v) = from.get(tag) {
            self.push(tag, v.to_vec());
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        for e in &self.elements {
            out.extend_from_slice(&e.tag.0);
            let n = e.value.len().min(MAX_VALUE);
            out.push(b'0' + (n / 100) as u8);
            out.push(b'0' + (n / 10 % 10) as u8);
            out.push(b'0' + (n % 10) as u8);
            out.extend_from_slice(&e.value[..n]);
        }
    }

    pub fn encoded_len(&self) -> usize {
        self.elements.iter().map(|e| 5 + e.value.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DEBIT: &[u8] = b"CZ0040320CJ012247300123456CA00201CB00512345CD0010CE003978";

    #[test]
    fn decodes_reference_debit() {
        let f = Frame::decode(DEBIT).unwrap();
        assert_eq!(f.text(tags::CZ), Some("0320"));
        assert_eq!(f.text(tags::CJ), Some("247300123456"));
        assert_eq!(f.text(tags::CB), Some("12345"));
        assert_eq!(f.text(tags::CE), Some("978"));
        assert_eq!(f.elements().len(), 6);
        assert_eq!(f.encode(), DEBIT);
    }

    #[test]
    fn rejects_duplicate_tag_and_keeps_what_came_before() {
        let (partial, e) = Frame::decode(b"CZ0040320CA00201CA00202").unwrap_err();
        assert_eq!(
            e,
            DecodeError::Duplicate {
                tag: tags::CA,
                offset: 16
            }
        );
        assert_eq!(partial.text(tags::CA), Some("01"));
    }

    #[test]
    fn rejects_bad_length_zero_length_and_cut() {
        assert_eq!(
            Frame::decode(b"CZ0040320CAx0201").unwrap_err().1,
            DecodeError::BadLength { offset: 11 }
        );
        assert_eq!(
            Frame::decode(b"CZ0040320CA000").unwrap_err().1,
            DecodeError::ZeroLength { offset: 9 }
        );
        assert_eq!(
            Frame::decode(b"CZ0040320CA0020").unwrap_err().1,
            DecodeError::Truncated { offset: 9 }
        );
        assert_eq!(
            Frame::decode(b"CZ0040320cA00201").unwrap_err().1,
            DecodeError::BadTag { offset: 9 }
        );
        assert_eq!(
            Frame::decode(b"CZ0040320CA002\x0101").unwrap_err().1,
            DecodeError::BadByte {
                offset: 14,
                byte: 1
            }
        );
    }

    #[test]
    fn cz_must_come_first() {
        assert_eq!(
            Frame::decode(b"CA00201CZ0040320").unwrap_err().1,
            DecodeError::CzNotFirst
        );
    }

    #[test]
    fn unknown_tags_are_kept() {
        let f = Frame::decode(b"CZ0040320OD003abcTI001x").unwrap();
        assert_eq!(f.get(Tag::new(b"OD")), Some(&b"abc"[..]));
        assert_eq!(f.get(Tag::new(b"TI")), Some(&b"x"[..]));
    }

    #[test]
    fn step_reports_cut_prefixes() {
        for n in 0..DEBIT.len().min(9) {
            let s = step(&DEBIT[..n], 0);
            assert!(matches!(s, Step::Cut), "{n}: {s:?}");
        }
    }

    fn element() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
        (
            proptest::collection::vec(b'A'..=b'Z', 2),
            proptest::collection::vec(0x20u8..=0x7e, 1..=40),
        )
    }

    proptest! {
        #[test]
        fn every_encoded_frame_decodes_to_itself(
            els in proptest::collection::vec(element(), 0..12),
            cz in proptest::collection::vec(b'0'..=b'9', 4),
        ) {
            let mut f = Frame::new();
            f.push(tags::CZ, cz);
            for (t, v) in els {
                let tag = Tag([t[0], t[1]]);
                if f.has(tag) { continue; }
                f.push(tag, v);
            }
            let bytes = f.encode();
            prop_assert_eq!(Frame::decode(&bytes).unwrap(), f);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(f) = Frame::decode(&bytes) {
                prop_assert_eq!(f.encode(), bytes);
            }
        }

        #[test]
        fn decode_never_panics_on_near_valid(
            cut in 0usize..57, flip in 0usize..57, b in any::<u8>()
        ) {
            let mut v = DEBIT.to_vec();
            v[flip] = b;
            v.truncate(cut.max(1));
            let _ = Frame::decode(&v);
        }
    }
}
