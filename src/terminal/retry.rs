//! Safe retry: the key that makes a retry the same transaction, and the
//! age that bounds how long it counts as one (see the worker, which keeps
//! the keys, and `retry-window` in concertd.conf(5)).

use crate::terminal::journal;
use crate::wire::operation::Operation;
use crate::wire::request::Request;
use crate::wire::tlv::tags::{CA, CB, CD, CE, CF, CZ};
use crate::wire::tlv::Frame;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Which payment attempt a CF names: register, operation, masked CF and
/// its check.
pub type Attempt = (u8, Vec<u8>, String, Option<u16>);

/// The age of a transaction. Those begun by this process age on the
/// monotonic clock, so that a clock stepped back or forward changes
/// nothing; those read back from the journal start from the age their
/// time stamp gave at start-up.
#[derive(Clone, Copy, Debug)]
pub struct Age {
    base: Duration,
    since: Instant,
}

impl Age {
    pub fn fresh(since: Instant) -> Age {
        Age {
            base: Duration::ZERO,
            since,
        }
    }

    /// From a journal stamp: a stamp in the future counts as made now.
    pub fn from_stamp(stamp: &str, now_unix: i64, since: Instant) -> Age {
        let began = journal::unix_time(stamp).unwrap_or(i64::MIN);
        let secs = now_unix.saturating_sub(began).max(0);
        Age {
            base: Duration::from_secs(secs as u64),
            since,
        }
    }

    pub fn get(&self) -> Duration {
        self.at(Instant::now())
    }

    /// The age at `now`: a clock the caller chooses.
    pub fn at(&self, now: Instant) -> Duration {
        self.base
            .saturating_add(now.saturating_duration_since(self.since))
    }
}

/// Equal requests within the retry window are one transaction: equal in
/// every element the register sent, not in a list of tags (each tag left
/// out would be a way for another request to get this one's approval).
///
/// The request is held in its canonical form: elements in tag order (a
/// register library may not keep them in one order), `CA` as the register
/// number (`1` and `01` name one register). The journal keeps requests
/// masked (card-like digit runs, the shopper's phone and e-mail), so the
/// key holds the masked form, which a restart reads back, plus:
/// - when masking changed nothing, nothing else: the masked form is the
///   request, and equal forms prove equal requests, after a restart too;
/// - when it changed something, a 12-bit check of the whole request,
///   written to the journal, and the request itself, in memory only
///   (never written: it may hold a card number). A key read back from the
///   journal has no request: equal masked forms and checks then do not
///   prove the same request (1 in 4096 requests differing only in masked
///   digits share a check), so such a match is [`Proof::Unproven`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RetryKey {
    pub register: u8,
    /// The canonical request, masked as the journal keeps it.
    masked: Vec<u8>,
    check: Check,
    /// The canonical request when masking changed it and this process
    /// saw it whole.
    whole: Option<Vec<u8>>,
    /// What [`RetryKey::attempt`] compares: the operation, amount,
    /// currency, masked CF and a check of its digits.
    pub cd: Vec<u8>,
    pub cb: Vec<u8>,
    pub ce: Vec<u8>,
    pub cf: String,
    cf_check: Option<u16>,
}

/// How the masked form relates to the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Check {
    /// Masking changed nothing.
    Plain,
    /// The 12-bit check of the canonical request, masking changed it.
    Of(u16),
    /// Journaled by an earlier concertd, which checked CF alone: what the
    /// rest of the request held under its masks is not known.
    Legacy,
}

/// Whether a retry is the request it matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proof {
    /// Equal, element for element.
    Same,
    /// Equal masked forms (and checks), but the earlier request is known
    /// only masked: it may be another one.
    Unproven,
}

/// FNV-1a, folded to 12 bits: a short check, not a digest of the card
/// number (12 bits leave thousands of candidates for the masked digits).
fn check12(bytes: &[u8]) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    ((h >> 20) ^ (h & 0xfff)) as u16 & 0xfff
}

/// The request's elements in tag order, `CA` as the register number. `CZ`
/// stays first, as a frame needs it: the journal masks a frame element by
/// element only when it decodes.
fn canonical(req: &Request) -> Vec<u8> {
    let mut elements: Vec<_> = req.frame.elements().iter().collect();
    elements.sort_by_key(|e| (e.tag != CZ, e.tag.0));
    let mut f = Frame::new();
    for e in elements {
        match e.tag {
            CA => f.push(CA, format!("{:02}", req.register).into_bytes()),
            tag => f.push(tag, e.value.clone()),
        }
    }
    f.encode()
}

/// The journal token's prefix: a token without it is a legacy one.
const VERSION: &str = "r";

impl RetryKey {
    /// The key of a request that may be replayed: a V3 debit or credit
    /// with a CF, as this process received it.
    pub fn of(req: &Request) -> Option<RetryKey> {
        let cf = req.frame.get(CF).filter(|v| !v.is_empty())?;
        let cf_check = (crate::wire::pan::scrub(cf).as_bytes() != cf).then(|| check12(cf));
        let whole = canonical(req);
        let masked = journal::masked(&whole);
        let (check, whole) = if masked == whole {
            (Check::Plain, None)
        } else {
            (Check::Of(check12(&whole)), Some(whole))
        };
        RetryKey::with(req, masked, check, whole, cf_check)
    }

    fn with(
        req: &Request,
        masked: Vec<u8>,
        check: Check,
        whole: Option<Vec<u8>>,
        cf_check: Option<u16>,
    ) -> Option<RetryKey> {
        if !(req.op.is_debit() || req.op == Operation::Credit) {
            return None;
        }
        let f = &req.frame;
        Some(RetryKey {
            register: req.register,
            masked,
            check,
            whole,
            cd: f.get(CD)?.to_vec(),
            cb: f.get(CB)?.to_vec(),
            ce: f.get(CE)?.to_vec(),
            cf: crate::wire::pan::scrub(f.get(CF).filter(|v| !v.is_empty())?),
            cf_check,
        })
    }

    /// What the journal keeps of it besides the masked request: the
    /// checks of the request and of its CF (`-` for none), as `r<request
    /// check>.<CF check>`.
    pub fn token(&self) -> String {
        let hex = |c: Option<u16>| c.map_or("-".into(), |c| format!("{c:03x}"));
        let check = match self.check {
            Check::Of(c) => Some(c),
            Check::Plain | Check::Legacy => None,
        };
        format!("{VERSION}{}.{}", hex(check), hex(self.cf_check))
    }

    /// The key of a journaled request (read back masked) and its token.
    /// A token of an earlier concertd (`-` or three hex digits: CF's
    /// check alone) gives a key that matches but proves nothing.
    pub fn from_token(req: &Request, token: &str) -> Option<RetryKey> {
        let hex = |t: &str| match t {
            "-" => Some(None),
            t if t.len() == 3 => u16::from_str_radix(t, 16).ok().map(Some),
            _ => None,
        };
        let masked = journal::masked(&canonical(req));
        let Some(rest) = token.strip_prefix(VERSION) else {
            let cf_check = hex(token)?;
            return RetryKey::with(req, masked, Check::Legacy, None, cf_check);
        };
        let (check, cf_check) = rest.split_once('.')?;
        let check = hex(check)?.map_or(Check::Plain, Check::Of);
        RetryKey::with(req, masked, check, None, hex(cf_check)?)
    }

    /// The forms a key read back from the journal would have if it were
    /// this request's: equal to one of them, it may be this request, but
    /// nothing proves it.
    pub fn unproven_forms(&self) -> Vec<RetryKey> {
        let mut forms = Vec::with_capacity(2);
        if self.whole.is_some() {
            forms.push(RetryKey {
                whole: None,
                ..self.clone()
            });
        }
        forms.push(RetryKey {
            check: Check::Legacy,
            whole: None,
            ..self.clone()
        });
        forms
    }

    /// Which payment attempt a CF names: a debit and the credit that
    /// refunds it may share it.
    pub fn attempt(&self) -> Attempt {
        (
            self.register,
            self.cd.clone(),
            self.cf.clone(),
            self.cf_check,
        )
    }
}

/// What the retry rule remembers of a payment attempt's CF: the amount and
/// currency it was first seen with.
pub struct Seen {
    pub cb: Vec<u8>,
    pub ce: Vec<u8>,
    pub age: Age,
}

/// Most transactions the retry rule remembers; past this the oldest is
/// forgotten (and a retry of it runs again), so memory and the records
/// carried over on rotation stay bounded.
pub const MAX_RETRIES: usize = 10_000;

/// Drops the oldest entries past `MAX_RETRIES`.
pub fn bound<K: Clone + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    age: impl Fn(&V) -> Duration,
) {
    while map.len() > MAX_RETRIES {
        let Some(oldest) = map
            .iter()
            .max_by_key(|(_, v)| age(v))
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        map.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(body: &str) -> Request {
        crate::wire::request::parse(body.as_bytes(), &[978]).unwrap()
    }

    #[test]
    fn ages_never_go_negative_or_follow_the_wall_clock() {
        let born = Instant::now();
        // A stamp in the future (the clock was stepped back since).
        let a = Age::from_stamp("2999-01-01T00:00:00.000Z", 1_800_000_000, born);
        assert!(a.get() < Duration::from_secs(60));
        // An hour-old stamp is an hour old.
        let b = Age::from_stamp(
            &journal::stamp(),
            crate::wire::clock::unix_now().0 + 3600,
            born,
        );
        assert!(b.get() >= Duration::from_secs(3599));
        // An unreadable stamp is older than any window.
        let c = Age::from_stamp("garbage", 1_800_000_000, born);
        assert!(c.get() > Duration::from_secs(10 * 365 * 86_400));
    }

    /// What a restart reads back: the request as the journal masks it.
    fn journaled(live: &Request) -> Request {
        crate::wire::request::reread(&journal::masked(&live.frame.encode())).unwrap()
    }

    fn tlv(elements: &[(&str, &str)]) -> String {
        elements
            .iter()
            .map(|(t, v)| format!("{t}{:03}{v}", v.len()))
            .collect()
    }

    /// A credit by reference carrying every tag a register may send.
    const FULL: &[(&str, &str)] = &[
        ("CZ", "0320"),
        ("CJ", "247300123456"),
        ("CA", "01"),
        ("CB", "500"),
        ("CD", "1"),
        ("CE", "978"),
        ("CF", "REFUND"),
        ("IM", "1796098000001"),
        ("CK", "110"),
        ("BA", "0"),
        ("BB", "0"),
        ("BF", "1"),
        ("CC", "00C"),
        ("CH", "caisse-3"),
        ("OD", "fidecoin"),
    ];

    #[test]
    fn every_element_the_register_sent_is_in_the_key() {
        let base = RetryKey::of(&req(&tlv(FULL))).unwrap();
        assert_eq!(RetryKey::of(&req(&tlv(FULL))), Some(base.clone()));
        // One element changed, whichever (CZ and CD would be another
        // protocol or operation, CB another amount: all differ too).
        for (n, (tag, value)) in FULL.iter().enumerate() {
            let mut other = FULL.to_vec();
            let changed = match *tag {
                "CZ" => "0300".to_string(),
                "CA" => "02".to_string(),
                "CD" => "0".to_string(),
                "CE" => "840".to_string(),
                "IM" => "1796098000002".to_string(),
                "BA" | "BB" | "BF" => "1".repeat(1 + usize::from(*value == "1")),
                "CC" => "00D".to_string(),
                "CK" => "100".to_string(),
                _ => format!("{value}x"),
            };
            other[n].1 = &changed;
            let Ok(r) = crate::wire::request::parse(tlv(&other).as_bytes(), &[978, 840]) else {
                continue;
            };
            let k = RetryKey::of(&r).unwrap_or_else(|| panic!("{tag}: no key"));
            assert_ne!(k, base, "{tag} changed, same key");
            assert!(!base.unproven_forms().contains(&k), "{tag}");
        }
        // One element more, one fewer.
        let more = [FULL, &[("AN", "1")]].concat();
        assert_ne!(RetryKey::of(&req(&tlv(&more))), Some(base.clone()));
        let fewer: Vec<_> = FULL.iter().filter(|(t, _)| *t != "CK").copied().collect();
        assert_ne!(RetryKey::of(&req(&tlv(&fewer))), Some(base.clone()));
        // The same elements in another order, CA written `1`: the same.
        let mut shuffled = FULL.to_vec();
        shuffled[1..].reverse();
        let ca = shuffled.iter().position(|(t, _)| *t == "CA").unwrap();
        shuffled[ca].1 = "1";
        assert_eq!(RetryKey::of(&req(&tlv(&shuffled))), Some(base));
    }

    #[test]
    fn refunds_of_two_debits_with_one_cf_are_two_keys() {
        // The issue's case: CF=REFUND for 5.00, IM naming two debits.
        let a = "CZ0040320CA00201CB003500CD0011CE003978CF006REFUNDIM0131796098000001";
        let b = "CZ0040320CA00201CB003500CD0011CE003978CF006REFUNDIM0131796098000002";
        let (ka, kb) = (
            RetryKey::of(&req(a)).unwrap(),
            RetryKey::of(&req(b)).unwrap(),
        );
        assert_ne!(ka, kb);
        // Not even after a restart, which reads A back from the journal.
        let back = RetryKey::from_token(&journaled(&req(a)), &ka.token()).unwrap();
        assert_eq!(back, ka);
        assert!(!kb.unproven_forms().contains(&back));
        // The same payment attempt (CF) all the same.
        assert_eq!(ka.attempt(), kb.attempt());
    }

    #[test]
    fn a_request_without_masked_digits_is_proven_after_a_restart() {
        let live = req("CZ0040320CA00201CB0042000CD0010CE003978CF004T-01");
        let k = RetryKey::of(&live).unwrap();
        assert_eq!(k.token(), "r-.-");
        assert_eq!(RetryKey::from_token(&journaled(&live), &k.token()), Some(k));
    }

    #[test]
    fn masked_digits_match_after_a_restart_but_prove_nothing() {
        // A card-like CF, a 13-digit Visa-like IM, a shopper's phone: the
        // journal keeps each masked.
        for live in [
            "CZ0040320CA00201CB0042000CD0010CE003978CF0164970101234560674",
            "CZ0040320CA00201CB003500CD0011CE003978CF006REFUNDIM0134222222222222",
            "CZ0040320CA00201CB0042000CD0010CE003978CF004T-01BH0100612345678",
        ] {
            let live = req(live);
            let k = RetryKey::of(&live).unwrap();
            assert!(matches!(k.check, Check::Of(_)), "{k:?}");
            assert!(k.whole.is_some());
            let back = RetryKey::from_token(&journaled(&live), &k.token()).unwrap();
            // Read back: not the live key (nothing proves it), one of
            // the forms it may be.
            assert_ne!(back, k);
            assert!(back.whole.is_none());
            assert!(k.unproven_forms().contains(&back));
        }
        let cf = |digits: &str| {
            RetryKey::of(&req(&format!(
                "CZ0040320CA00201CB0042000CD0010CE003978CF016{digits}"
            )))
            .unwrap()
        };
        let k = cf("4970101234560674");
        assert_eq!(k.cf, "497010######0674");
        // Another number that masks the same way: another key, live; and
        // its CF check tells the payment attempts apart.
        let other = cf("4970109999880674");
        assert_ne!(other, k);
        assert_ne!(other.attempt(), k.attempt());
        assert_eq!(other.masked, k.masked);
    }

    #[test]
    fn a_token_of_an_earlier_concertd_matches_unproven() {
        let live = req("CZ0040320CA00201CB0042000CD0010CE003978CF0164970101234560674");
        let k = RetryKey::of(&live).unwrap();
        let cf_check = format!("{:03x}", k.cf_check.unwrap());
        for token in ["-", cf_check.as_str()] {
            let back = RetryKey::from_token(&journaled(&live), token).unwrap();
            assert_eq!(back.check, Check::Legacy);
            assert_ne!(back, k);
        }
        let back = RetryKey::from_token(&journaled(&live), &cf_check).unwrap();
        assert!(k.unproven_forms().contains(&back));
        for bad in ["zz", "r", "r-", "rzzz.-", "r-.-.-"] {
            assert!(RetryKey::from_token(&live, bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn only_debits_and_credits_with_a_cf_have_a_key() {
        assert!(RetryKey::of(&req("CZ0040320CA00201CB0042000CD0010CE003978")).is_none());
        assert!(RetryKey::of(&req("CZ0040320CA00201CB0042000CD0012CE003978CF003abc")).is_none());
        assert!(RetryKey::of(&req("CZ0040320CA00201CB0042000CD0017CE003978CF003abc")).is_some());
    }
}
