//! Safe retry: the key that makes a retry the same transaction, and the
//! age that bounds how long it counts as one (see the worker, which keeps
//! the keys, and `retry-window` in concertd.conf(5)).

use crate::journal;
use crate::operation::Operation;
use crate::request::Request;
use crate::tlv::tags::{CB, CD, CE, CF};
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

/// Equal requests within the retry window are one transaction.
///
/// CF is held in the masked form the journal keeps (a digit run that
/// looks like a card number is never written whole), plus a 12-bit check
/// of the unmasked bytes when masking changed them: a key read back from
/// the journal after a restart then equals the live one, and two CFs that
/// differ only in masked digits are still told apart (but for a 1 in 4096
/// chance, on top of an equal amount, currency and register).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RetryKey {
    pub register: u8,
    pub cd: Vec<u8>,
    pub cb: Vec<u8>,
    pub ce: Vec<u8>,
    pub cf: String,
    pub check: Option<u16>,
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

impl RetryKey {
    /// The key of a request that may be replayed: a V3 debit or credit
    /// with a CF. `check` is the journaled check when read back.
    pub fn of(req: &Request) -> Option<RetryKey> {
        let cf = req.frame.get(CF).filter(|v| !v.is_empty())?;
        let masked = crate::pan::scrub(cf);
        let check = (masked.as_bytes() != cf).then(|| check12(cf));
        RetryKey::with_check(req, check)
    }

    fn with_check(req: &Request, check: Option<u16>) -> Option<RetryKey> {
        if !(req.op.is_debit() || req.op == Operation::Credit) {
            return None;
        }
        let f = &req.frame;
        Some(RetryKey {
            register: req.register,
            cd: f.get(CD)?.to_vec(),
            cb: f.get(CB)?.to_vec(),
            ce: f.get(CE)?.to_vec(),
            cf: crate::pan::scrub(f.get(CF).filter(|v| !v.is_empty())?),
            check,
        })
    }

    /// What the journal keeps of it: the masked CF is in the request
    /// already, so only the check is written (`-` when there is none).
    pub fn token(&self) -> String {
        self.check.map_or("-".into(), |c| format!("{c:03x}"))
    }

    pub fn from_token(req: &Request, token: &str) -> Option<RetryKey> {
        let check = match token {
            "-" => None,
            t if t.len() == 3 => Some(u16::from_str_radix(t, 16).ok()?),
            _ => return None,
        };
        RetryKey::with_check(req, check)
    }

    /// Which payment attempt a CF names: a debit and the credit that
    /// refunds it may share it.
    pub fn attempt(&self) -> Attempt {
        (self.register, self.cd.clone(), self.cf.clone(), self.check)
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
        crate::request::parse(body.as_bytes(), &[978]).unwrap()
    }

    #[test]
    fn ages_never_go_negative_or_follow_the_wall_clock() {
        let born = Instant::now();
        // A stamp in the future (the clock was stepped back since).
        let a = Age::from_stamp("2999-01-01T00:00:00.000Z", 1_800_000_000, born);
        assert!(a.get() < Duration::from_secs(60));
        // An hour-old stamp is an hour old.
        let b = Age::from_stamp(&journal::stamp(), crate::clock::unix_now().0 + 3600, born);
        assert!(b.get() >= Duration::from_secs(3599));
        // An unreadable stamp is older than any window.
        let c = Age::from_stamp("garbage", 1_800_000_000, born);
        assert!(c.get() > Duration::from_secs(10 * 365 * 86_400));
    }

    /// A job whose reply closes without an answer (the worker could not
    /// journal the outcome) is "no answer", never an answer to send.

    #[test]
    fn a_card_like_cf_keys_the_same_after_a_journal_round_trip() {
        let live = req("CZ0040320CA00201CB0042000CD0010CE003978CF0164970101234560674");
        let k = RetryKey::of(&live).unwrap();
        assert_eq!(k.cf, "497010######0674");
        assert!(k.check.is_some());
        // What restore sees: the masked request and the journaled token.
        let masked = req(&crate::pan::scrub(&live.frame.encode()));
        assert_eq!(RetryKey::from_token(&masked, &k.token()), Some(k.clone()));
        // Another number that masks the same way is another key.
        let other = req("CZ0040320CA00201CB0042000CD0010CE003978CF0164970109999880674");
        assert_ne!(RetryKey::of(&other), Some(k));
        // A plain CF needs no check.
        let plain = RetryKey::of(&req("CZ0040320CA00201CB0042000CD0010CE003978CF003abc")).unwrap();
        assert_eq!(plain.token(), "-");
        // No CF, or not a debit or credit: no key.
        assert!(RetryKey::of(&req("CZ0040320CA00201CB0042000CD0010CE003978")).is_none());
        assert!(RetryKey::of(&req("CZ0040320CA00201CB0042000CD0012CE003978CF003abc")).is_none());
        assert!(RetryKey::from_token(&masked, "zz").is_none());
    }
}
