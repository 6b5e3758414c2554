//! What the journal holds that a relay must not take as evidence about a
//! lost request: the authorisations (`AC`) other transactions were given
//! and the `CF` values other requests carried. A status answer showing one
//! of them describes another transaction, or at least cannot be told from
//! one.
//!
//! Filled by the worker with every transaction it journals (those read
//! back at start included) and by the relay as answers come back, before
//! anything else may ask the upstream; bounded: the newest `LIMIT` values
//! of each kind. A value older than that is the upstream's last
//! transaction only if it reused it, which the kept status answer (the
//! transaction just before the request) still tells.

use crate::wire::answer::Outcome;
use crate::wire::request::Request;
use crate::wire::tlv::tags;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

/// How many values of each kind are kept.
pub const LIMIT: usize = 4096;

/// The history, shared between the worker and the backend's threads.
pub type Shared = Arc<Mutex<History>>;

/// Runs `f` on the shared history; a thread that panicked while holding it
/// left whole entries (every change is one insert), so it is still read.
pub fn with<T>(h: &Shared, f: impl FnOnce(&mut History) -> T) -> T {
    f(&mut h.lock().unwrap_or_else(PoisonError::into_inner))
}

#[derive(Default, Debug)]
pub struct History {
    auths: Ids,
    cfs: Ids,
}

/// Values, each with the lowest and highest transaction id seen with it:
/// enough to tell whether a transaction other than a given one had it.
/// Each value is stored once (a CF may be 999 bytes).
#[derive(Default, Debug)]
struct Ids {
    by_value: HashMap<Arc<[u8]>, (u64, u64)>,
    order: VecDeque<Arc<[u8]>>,
}

impl Ids {
    fn add(&mut self, value: &[u8], id: u64) {
        if value.is_empty() {
            return;
        }
        if let Some((lo, hi)) = self.by_value.get_mut(value) {
            *lo = (*lo).min(id);
            *hi = (*hi).max(id);
            return;
        }
        if self.order.len() >= LIMIT {
            if let Some(old) = self.order.pop_front() {
                self.by_value.remove(&old);
            }
        }
        let value: Arc<[u8]> = Arc::from(value);
        self.by_value.insert(Arc::clone(&value), (id, id));
        self.order.push_back(value);
    }

    /// A value older than every one held: kept only while there is room,
    /// as the oldest. Whether the values are full.
    fn add_older(&mut self, value: &[u8], id: u64) -> bool {
        if let Some((lo, hi)) = self.by_value.get_mut(value) {
            *lo = (*lo).min(id);
            *hi = (*hi).max(id);
        } else if !value.is_empty() && self.order.len() < LIMIT {
            let value: Arc<[u8]> = Arc::from(value);
            self.by_value.insert(Arc::clone(&value), (id, id));
            self.order.push_front(value);
        }
        self.order.len() >= LIMIT
    }

    fn other_than(&self, value: &[u8], id: u64) -> bool {
        self.by_value
            .get(value)
            .is_some_and(|&(lo, hi)| lo != id || hi != id)
    }
}

impl History {
    /// Transaction `id`: its request's CF, and the AC of its outcome.
    pub fn record(&mut self, id: u64, req: &Request, outcome: &Outcome) {
        if let Some(cf) = req.frame.get(tags::CF) {
            self.cfs.add(cf, id);
        }
        if let Some(ac) = outcome.auth.as_deref() {
            self.auths.add(ac.as_bytes(), id);
        }
    }

    /// Transaction `id`, older than every one recorded (start-up reading
    /// older generations backwards): its values are kept while there is
    /// room. Whether both kinds are full.
    pub fn older(&mut self, id: u64, req: &Request, outcome: &Outcome) -> bool {
        let cfs = match req.frame.get(tags::CF) {
            Some(cf) => self.cfs.add_older(cf, id),
            None => self.cfs.order.len() >= LIMIT,
        };
        let auths = match outcome.auth.as_deref() {
            Some(ac) => self.auths.add_older(ac.as_bytes(), id),
            None => self.auths.order.len() >= LIMIT,
        };
        cfs && auths
    }

    /// Was authorisation `ac` given to a transaction other than `id`?
    pub fn auth_elsewhere(&self, ac: &[u8], id: u64) -> bool {
        self.auths.other_than(ac, id)
    }

    /// Did a request other than `id`, of any register, carry this CF?
    pub fn cf_elsewhere(&self, cf: &[u8], id: u64) -> bool {
        self.cfs.other_than(cf, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(body: &str) -> Request {
        crate::wire::request::parse(body.as_bytes(), &[978]).unwrap()
    }

    fn approved(ac: &str) -> Outcome {
        let mut o = Outcome::approved();
        o.auth = Some(ac.into());
        o
    }

    #[test]
    fn a_value_is_elsewhere_only_when_another_transaction_had_it() {
        let mut h = History::default();
        let r = req("CZ0040320CA00201CB0041000CD0010CE003978CF003abc");
        h.record(5, &r, &approved("111111"));
        assert!(!h.auth_elsewhere(b"111111", 5));
        assert!(h.auth_elsewhere(b"111111", 6));
        assert!(!h.auth_elsewhere(b"222222", 6));
        assert!(!h.cf_elsewhere(b"abc", 5));
        assert!(h.cf_elsewhere(b"abc", 6));
        // The same CF sent again later: the later one is not alone with it
        // either.
        h.record(6, &r, &Outcome::declined(crate::wire::answer::Af::NotEnded));
        assert!(h.cf_elsewhere(b"abc", 5));
        assert!(h.cf_elsewhere(b"abc", 6));
    }

    #[test]
    fn the_oldest_values_go_first_past_the_limit() {
        let mut h = History::default();
        let r = req("CZ0040320CA00201CB0041000CD0010CE003978");
        for i in 0..=LIMIT as u64 {
            h.record(i, &r, &approved(&format!("{i:06}")));
        }
        assert!(!h.auth_elsewhere(b"000000", 99_999));
        assert!(h.auth_elsewhere(b"000001", 99_999));
        assert!(h.auth_elsewhere(format!("{LIMIT:06}").as_bytes(), 99_999));
        assert_eq!(h.auths.by_value.len(), LIMIT);
    }
}
