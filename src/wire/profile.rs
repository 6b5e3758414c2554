//! Terminal profiles (`terminal-profile`): the answer shapes of the
//! terminals registers really meet, applied to a V3 answer as it leaves,
//! after the journal has kept concertd's own. A profile moves, drops or
//! pads what an answer says; it never turns one outcome into another: an
//! approval stays an approval, a refusal a refusal, an unknown outcome
//! (AF00, AF07) unknown. Each trait is one a public source describes; the
//! sources are named where the trait is applied and in concertd.conf(5).
//!
//! Concert V2 replies have fixed fields: no profile applies to them.

use crate::wire::tlv::{tags::*, Frame, Tag};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Profile {
    /// concertd's own shapes, the same bytes as before profiles existed.
    #[default]
    Generic,
    /// An Ingenico Telium/Tetra terminal (Desk/5000) running CONCERT V3.
    Ingenico,
    /// An Android terminal behind HiPay's Local API for Nepting.
    Nepting,
    /// PayXpert's PayXpress "Concert Service".
    PayXpress,
}

/// The profiles by their keyword, in the order the man page lists them.
pub const PROFILES: &[(&str, Profile)] = &[
    ("generic", Profile::Generic),
    ("ingenico", Profile::Ingenico),
    ("nepting", Profile::Nepting),
    ("payxpress", Profile::PayXpress),
];

impl Profile {
    pub fn name(self) -> &'static str {
        PROFILES
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("generic", |(n, _)| n)
    }

    /// PayXpress answers an approved debit with `ID AP AQ`
    /// (`answer-extensions payxpert`, which this profile implies).
    pub fn payxpert_tags(self) -> bool {
        self == Profile::PayXpress
    }
}

/// The CZ an Ingenico Desk/5000 answered a `0300` identification with
/// (OCA/l10n-france, commit f5711722, `CZ0040301CJ012330538600404...`).
const INGENICO_CZ: &[u8] = b"0301";
/// The CZ of every answer in HiPay's Local API for Nepting page, `0300`
/// requests included.
const NEPTING_CZ: &[u8] = b"0320";

/// Declines an Ingenico terminal reports as AF04 on a check, whatever the
/// reason: the failures Akretion's simulator (written against a Desk/5000
/// with an i2200 check printer) offers, "from our experience Ingenico
/// always answers 04", and the red key (AF06). Never AF00 or AF07: an
/// outcome concertd does not know must not read as a refusal.
const CHECK_AS_REFUSED: [&[u8]; 5] = [b"04", b"05", b"06", b"08", b"11"];

/// Declines after which a Nepting terminal appends the CB2A details to AF:
/// the bank's refusals, the case those fields describe.
const WITH_CB2A: [&[u8]; 2] = [b"04", b"05"];

/// The answer `answer` to the request `req` (None when it could not be
/// read), in this profile's shape.
pub fn shape(profile: Profile, req: Option<&Frame>, answer: &Frame) -> Frame {
    match profile {
        Profile::Generic | Profile::PayXpress => answer.clone(),
        Profile::Ingenico => ingenico(req, answer),
        Profile::Nepting => nepting(answer),
    }
}

fn is(f: &Frame, tag: Tag, v: &[u8]) -> bool {
    f.get(tag) == Some(v)
}

/// The answer with each element passed through `map` (None drops it).
fn rebuilt(answer: &Frame, mut map: impl FnMut(Tag, &[u8]) -> Option<Vec<u8>>) -> Frame {
    let mut f = Frame::new();
    for e in answer.elements() {
        if let Some(v) = map(e.tag, &e.value) {
            f.push(e.tag, v);
        }
    }
    f
}

fn ingenico(req: Option<&Frame>, answer: &Frame) -> Frame {
    let declined = is(answer, AE, b"01");
    // OCA/l10n-france #669-#672: after the red key, a Desk/5000's debit
    // answer "will not contain the initial amount in the CB tag".
    let red_key = declined && is(answer, AF, b"06") && is(answer, CD, b"0");
    let check = declined && req.is_some_and(|r| is(r, CC, b"00C"));
    rebuilt(answer, |tag, v| match tag {
        CZ => Some(INGENICO_CZ.to_vec()),
        CB if red_key => None,
        AF if check && CHECK_AS_REFUSED.contains(&v) => Some(b"04".to_vec()),
        _ => Some(v.to_vec()),
    })
}

fn nepting(answer: &Frame) -> Frame {
    let declined = is(answer, AE, b"01");
    let transaction = is(answer, CD, b"0") || is(answer, CD, b"1");
    let f = rebuilt(answer, |tag, v| match tag {
        CZ => Some(NEPTING_CZ.to_vec()),
        AF if declined && transaction && WITH_CB2A.contains(&v) => Some(with_cb2a(v)),
        _ => Some(v.to_vec()),
    });
    if is(&f, AF, b"09") {
        // HiPay's "bad frame format" answer:
        // CZ CJ AE AF CA CB CD CE, the status right after CJ.
        return reordered(&f, &[CZ, CJ, AE, AF]);
    }
    // HiPay's answers: CZ CJ CA CB CC CD CE AC AE [AF] CF CG ZT; the tags
    // its page does not show keep concertd's places.
    let mut order: Vec<Tag> = f.elements().iter().map(|e| e.tag).collect();
    if let (Some(cc), Some(cb)) = (pos(&order, CC), pos(&order, CB)) {
        if cc > cb {
            let t = order.remove(cc);
            order.insert(cb + 1, t);
        }
    }
    if let (Some(ac), Some(ae)) = (pos(&order, AC), pos(&order, AE)) {
        if ac > ae {
            let t = order.remove(ac);
            order.insert(ae, t);
        }
    }
    reordered(&f, &order)
}

fn pos(order: &[Tag], tag: Tag) -> Option<usize> {
    order.iter().position(|&t| t == tag)
}

/// `first`'s tags that are there, in that order, then the others as they
/// were.
fn reordered(f: &Frame, first: &[Tag]) -> Frame {
    let mut out = Frame::new();
    for &t in first {
        if let Some(v) = f.get(t) {
            out.push(t, v.to_vec());
        }
    }
    for e in f.elements() {
        if !first.contains(&e.tag) {
            out.push(e.tag, e.value.clone());
        }
    }
    out
}

/// AF with HiPay's CB2A supplement after the 2-character code: CB2A field
/// 39 (2, the bank's answer code), field 44-BC (21, a message to the
/// initiator), field 55-DF70 (2) and field 58-FF50 (2), "unfilled
/// sub-fields filled with spaces". concertd has no bank code: field 39
/// stays blank and the message is the reason's label in capitals.
fn with_cb2a(code: &[u8]) -> Vec<u8> {
    let label = crate::wire::answer::Af::from_code(code)
        .map(|af| af.label().to_ascii_uppercase())
        .unwrap_or_default();
    let mut v = code.to_vec();
    v.extend_from_slice(b"  ");
    v.extend_from_slice(format!("{label:<21.21}").as_bytes());
    v.extend_from_slice(b"    ");
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(b: &[u8]) -> Frame {
        Frame::decode(b).unwrap()
    }

    fn shaped(p: Profile, req: &[u8], answer: &[u8]) -> String {
        String::from_utf8(shape(p, Some(&frame(req)), &frame(answer)).encode()).unwrap()
    }

    const DEBIT: &[u8] = b"CZ0040300CJ012012345678901CA00201CE003978CD0010CB00512345";
    const APPROVED: &[u8] = b"CZ0040300CJ012012345678901CA00201CB00512345CD0010CE003978\
AE00210AC006123456CF003abcCC00300BCI0012";

    #[test]
    fn generic_and_payxpress_leave_the_bytes_alone() {
        for p in [Profile::Generic, Profile::PayXpress] {
            assert_eq!(shaped(p, DEBIT, APPROVED).as_bytes(), APPROVED);
        }
    }

    #[test]
    fn ingenico_red_key_and_checks() {
        let red = b"CZ0040300CJ012012345678901CA00201CB00512345CD0010CE003978AE00201AF00206";
        assert_eq!(
            shaped(Profile::Ingenico, DEBIT, red),
            "CZ0040301CJ012012345678901CA00201CD0010CE003978AE00201AF00206"
        );
        let check = b"CZ0040300CJ012012345678901CA00201CE003978CD0010CB00512345CC00300C";
        let timeout = b"CZ0040300CJ012012345678901CA00201CB00512345CD0010CE003978AE00201AF00208";
        assert!(shaped(Profile::Ingenico, check, timeout).ends_with("AE00201AF00204"));
        // Not on a card, and never an unknown outcome.
        assert!(shaped(Profile::Ingenico, DEBIT, timeout).ends_with("AF00208"));
        let unknown = b"CZ0040300CJ012012345678901CA00201CB00512345CD0010CE003978AE00201AF00207";
        assert!(shaped(Profile::Ingenico, check, unknown).ends_with("AF00207"));
    }

    #[test]
    fn nepting_orders_and_details_as_hipay() {
        assert_eq!(
            shaped(Profile::Nepting, DEBIT, APPROVED),
            "CZ0040320CJ012012345678901CA00201CB00512345CC00300BCD0010CE003978\
             AC006123456AE00210CF003abcCI0012"
        );
        let refused = b"CZ0040300CJ012012345678901CA00201CB00512345CD0010CE003978AE00201AF00204";
        assert_eq!(
            shaped(Profile::Nepting, DEBIT, refused),
            "CZ0040320CJ012012345678901CA00201CB00512345CD0010CE003978AE00201\
             AF02904  REFUSED                  "
        );
        let bad = b"CZ0040300CJ012999999999999CA00201CB00512345CD0010CE003978AE00201AF00209";
        assert_eq!(
            shaped(Profile::Nepting, DEBIT, bad),
            "CZ0040320CJ012999999999999AE00201AF00209CA00201CB00512345CD0010CE003978"
        );
    }

    #[test]
    fn names() {
        for (n, p) in PROFILES {
            assert_eq!(p.name(), *n);
        }
    }
}
