//! Card numbers never leave concertd whole: anything that looks like one
//! (13 to 19 digits passing the Luhn check) is cut to its first 6 and last
//! 4 digits before it is logged or journaled.

use crate::tlv::Frame;

pub const MASK: u8 = b'#';

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

/// Masks, in place, every run of 13..=19 digits that passes Luhn.
pub fn mask_in_place(bytes: &mut [u8]) -> bool {
    let mut masked = false;
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let run = &mut bytes[start..i];
        if (13..=19).contains(&run.len()) && luhn(run) {
            let n = run.len();
            for b in &mut run[6..n - 4] {
                *b = MASK;
            }
            masked = true;
        }
    }
    masked
}

/// A printable copy of a frame (or of raw bytes) for logs: card numbers
/// masked element by element (so digit runs never straddle a length field),
/// control bytes shown as `<xx>`.
pub fn scrub(raw: &[u8]) -> String {
    let mut bytes = match Frame::decode(raw) {
        Ok(f) => {
            let mut out = Vec::with_capacity(raw.len());
            for e in f.elements() {
                let mut one = Frame::new();
                let mut v = e.value.clone();
                mask_in_place(&mut v);
                one.push(e.tag, v);
                one.encode_into(&mut out);
            }
            out
        }
        Err(_) => {
            let mut v = raw.to_vec();
            mask_in_place(&mut v);
            v
        }
    };
    let mut s = String::with_capacity(bytes.len());
    for b in bytes.drain(..) {
        if (0x20..0x7f).contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("<{b:02x}>"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_card_numbers_only() {
        let mut v = b"pan 4970101234560674 amount 000000012345".to_vec();
        assert!(mask_in_place(&mut v));
        assert_eq!(&v[..], b"pan 497010######0674 amount 000000012345");
        let mut not_luhn = b"4970101234560675".to_vec();
        assert!(!mask_in_place(&mut not_luhn));
    }

    #[test]
    fn scrub_keeps_tlv_structure() {
        let s = scrub(b"CZ0040320CJ012247300123456CF0164970101234560674");
        assert_eq!(s, "CZ0040320CJ012247300123456CF016497010######0674");
        assert_eq!(scrub(b"\x02AB\x03"), "<02>AB<03>");
    }
}
