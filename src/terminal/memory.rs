//! What the worker remembers of ended transactions: per register the last
//! payment (status, duplicata) and the last approved debit (cancellation),
//! and the payments a safe retry may replay. Ages are read against a `now`
//! the caller gives (the worker: `Instant::now()`; tests: any instant).

use crate::terminal::journal::{Record, Verdict};
use crate::terminal::retry::{bound, Age, Attempt, Proof, RetryKey, Seen};
use crate::wire::answer::Outcome;
use crate::wire::operation::Operation;
use crate::wire::request::Request;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A transaction that ended, kept per register for status, cancellation
/// and duplicata.
#[derive(Debug)]
pub struct Completed {
    pub request: Request,
    pub outcome: Outcome,
    /// The V3 answer, as sent (or as it would have been).
    pub answer: Vec<u8>,
    pub record: Record,
    /// How old it is, for the retry window.
    pub age: Age,
    /// Set when a retry of it may be answered with its answer.
    pub key: Option<RetryKey>,
}

#[derive(Default)]
struct Register {
    last: Option<Arc<Completed>>,
    /// The last approved debit not cancelled yet.
    last_debit: Option<Arc<Completed>>,
}

/// Replays are answered only for outcomes a retry must not repeat: money
/// moved, or nobody knows yet whether it did.
fn replayable(c: &Completed) -> bool {
    c.outcome.is_approved() || c.record.verdict == Some(Verdict::Unknown)
}

#[derive(Default)]
pub struct Memory {
    registers: HashMap<u8, Register>,
    retries: HashMap<RetryKey, Arc<Completed>>,
    /// Every debit's and credit's CF within the window, to tell a register
    /// whose CF names an order, not a payment attempt.
    seen: HashMap<Attempt, Seen>,
    /// Registers whose CF was seen with two amounts: never replayed again.
    no_replay: BTreeSet<u8>,
}

impl Memory {
    /// Keeps an ended transaction: as its register's last payment, its last
    /// approved debit, and for replays when a retry may get its answer.
    pub fn remember(&mut self, c: Arc<Completed>, window: Duration, now: Instant) {
        self.retries.retain(|_, c| c.age.at(now) < window);
        self.seen.retain(|_, s| s.age.at(now) < window);
        if let (Some(k), false) = (&c.key, window.is_zero()) {
            self.check_attempt(k, &c.record.peer, window, now);
            if replayable(&c) {
                self.retries.insert(k.clone(), Arc::clone(&c));
            } else {
                // Refused, abandoned, not done: a retry is a new attempt.
                self.retries.remove(k);
            }
            self.seen.entry(k.attempt()).or_insert_with(|| Seen {
                cb: k.cb.clone(),
                ce: k.ce.clone(),
                age: c.age,
            });
            bound(&mut self.retries, |c| c.age.at(now));
            bound(&mut self.seen, |s| s.age.at(now));
        }
        let reg = self.registers.entry(c.request.register).or_default();
        if c.outcome.is_approved() {
            match c.request.op {
                op if op.is_debit() => reg.last_debit = Some(Arc::clone(&c)),
                Operation::Cancel => reg.last_debit = None,
                _ => {}
            }
        }
        if c.request.op.is_payment() {
            reg.last = Some(c);
        }
    }

    /// The transaction a retry with this key repeats, if its answer is to
    /// be given again, and whether it is proven to be the same request: a
    /// transaction read back from the journal whose request held masked
    /// digits matches only [`Proof::Unproven`]. A proven match comes first.
    pub fn replay_of(
        &self,
        key: &RetryKey,
        window: Duration,
        now: Instant,
    ) -> Option<(Arc<Completed>, Proof)> {
        if window.is_zero() || self.no_replay.contains(&key.register) {
            return None;
        }
        let live = |k: &RetryKey| {
            self.retries
                .get(k)
                .filter(|done| replayable(done) && done.age.at(now) < window)
                .map(Arc::clone)
        };
        if let Some(done) = live(key) {
            return Some((done, Proof::Same));
        }
        key.unproven_forms()
            .iter()
            .find_map(live)
            .map(|done| (done, Proof::Unproven))
    }

    /// A CF seen again for the same register and operation with another
    /// amount or currency names an order, not a payment attempt: replaying
    /// on it could answer a new sale with an old one's outcome, so replays
    /// stop for that register.
    pub fn check_attempt(&mut self, key: &RetryKey, from: &str, window: Duration, now: Instant) {
        if window.is_zero() {
            return;
        }
        let conflict = self
            .seen
            .get(&key.attempt())
            .is_some_and(|s| s.age.at(now) < window && (s.cb != key.cb || s.ce != key.ce));
        if conflict && self.no_replay.insert(key.register) {
            log::warn!(
                "register {:02} ({from}): CF {} came again with another amount or currency: \
                 this register's CF does not name one payment attempt, so its retries are \
                 no longer replayed (retry-window)",
                key.register,
                key.cf
            );
        }
    }

    /// The register's last payment.
    pub fn last(&self, register: u8) -> Option<&Arc<Completed>> {
        self.registers.get(&register)?.last.as_ref()
    }

    /// The register's last approved debit not cancelled yet.
    pub fn last_debit(&self, register: u8) -> Option<&Arc<Completed>> {
        self.registers.get(&register)?.last_debit.as_ref()
    }

    /// Every register's last payment.
    pub fn lasts(&self) -> impl Iterator<Item = &Arc<Completed>> {
        self.registers.values().filter_map(|r| r.last.as_ref())
    }

    /// What must outlive a journal generation: each register's last
    /// payment and last approved debit.
    pub fn kept(&self) -> impl Iterator<Item = &Arc<Completed>> {
        self.registers
            .values()
            .flat_map(|r| [&r.last, &r.last_debit].into_iter().flatten())
    }

    /// The transactions held for replay.
    pub fn replayable(&self) -> impl Iterator<Item = &Arc<Completed>> {
        self.retries.values()
    }

    /// Whether the transactions held for replay are all the window needs
    /// to be rebuilt: every payment attempt seen has one held, and no
    /// register's replays were stopped (their evidence may be a refused
    /// attempt, not held).
    pub fn attempts_held(&self) -> bool {
        let held: std::collections::HashSet<_> = self.retries.keys().map(|k| k.attempt()).collect();
        self.no_replay.is_empty() && self.seen.keys().all(|a| held.contains(a))
    }

    /// Registers whose retries are no longer replayed.
    pub fn no_replay(&self) -> impl Iterator<Item = &u8> {
        self.no_replay.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::answer::{Af, Outcome};

    fn done(id: u64, body: &str, outcome: Outcome, since: Instant) -> Arc<Completed> {
        let request = crate::wire::request::parse(body.as_bytes(), &[978]).unwrap();
        let key = RetryKey::of(&request);
        let verdict = if outcome.is_approved() {
            Verdict::Approved
        } else {
            Verdict::Declined
        };
        Arc::new(Completed {
            record: Record {
                id,
                register: request.register,
                verdict: Some(verdict),
                ..Record::default()
            },
            request,
            outcome,
            answer: Vec::new(),
            age: Age::fresh(since),
            key,
        })
    }

    const SALE: &str = "CZ0040320CA00201CB0041000CD0010CE003978CF004T-01";
    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn replays_within_the_window_on_the_given_clock() {
        let t0 = Instant::now();
        let mut m = Memory::default();
        let c = done(1, SALE, Outcome::approved(), t0);
        let key = c.key.clone().unwrap();
        m.remember(c, HOUR, t0);
        assert_eq!(
            m.replay_of(&key, HOUR, t0).map(|(c, p)| (c.record.id, p)),
            Some((1, Proof::Same))
        );
        // Fifty-nine minutes on: still; an hour on: a new attempt.
        assert!(m.replay_of(&key, HOUR, t0 + 59 * HOUR / 60).is_some());
        assert!(m.replay_of(&key, HOUR, t0 + HOUR).is_none());
        // Window 0: never.
        assert!(m.replay_of(&key, Duration::ZERO, t0).is_none());
    }

    #[test]
    fn refusals_are_not_replayed_and_a_later_refusal_ends_a_replay() {
        let t0 = Instant::now();
        let mut m = Memory::default();
        let refused = done(1, SALE, Outcome::declined(Af::Refused), t0);
        let key = refused.key.clone().unwrap();
        m.remember(refused, HOUR, t0);
        assert!(m.replay_of(&key, HOUR, t0).is_none());
        m.remember(done(2, SALE, Outcome::approved(), t0), HOUR, t0);
        assert!(m.replay_of(&key, HOUR, t0).is_some());
        m.remember(done(3, SALE, Outcome::declined(Af::Refused), t0), HOUR, t0);
        assert!(m.replay_of(&key, HOUR, t0).is_none());
    }

    #[test]
    fn a_cf_seen_with_two_amounts_stops_replays_for_its_register() {
        let t0 = Instant::now();
        let mut m = Memory::default();
        let c = done(1, SALE, Outcome::approved(), t0);
        let key = c.key.clone().unwrap();
        m.remember(c, HOUR, t0);
        let other = "CZ0040320CA00201CB003500CD0010CE003978CF004T-01";
        m.remember(done(2, other, Outcome::approved(), t0), HOUR, t0);
        assert!(m.replay_of(&key, HOUR, t0).is_none());
        assert_eq!(m.no_replay().copied().collect::<Vec<_>>(), vec![1]);
        // A refund with the sale's CF is another operation: nothing stops.
        let mut m = Memory::default();
        m.remember(done(1, SALE, Outcome::approved(), t0), HOUR, t0);
        let refund = "CZ0040320CA00201CB0041000CD0011CE003978CF004T-01";
        m.remember(done(2, refund, Outcome::approved(), t0), HOUR, t0);
        assert_eq!(m.no_replay().count(), 0);
    }

    #[test]
    fn last_payment_and_last_debit_per_register() {
        let t0 = Instant::now();
        let mut m = Memory::default();
        let debit = "CZ0040320CA00201CB0041000CD0010CE003978";
        let cancel = "CZ0040320CA00201CB0041000CD0012CE003978";
        m.remember(done(1, debit, Outcome::approved(), t0), HOUR, t0);
        assert_eq!(m.last_debit(1).map(|c| c.record.id), Some(1));
        assert!(m.last(2).is_none());
        m.remember(done(2, cancel, Outcome::approved(), t0), HOUR, t0);
        assert!(m.last_debit(1).is_none());
        assert_eq!(m.last(1).map(|c| c.record.id), Some(2));
        assert_eq!(m.kept().count(), 1);
    }
}
