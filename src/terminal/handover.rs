//! Who decides a request handed over on the serial line: the worker, by
//! taking it (its transaction starts), or the line, by withdrawing it (the
//! frame is NAKed). On the serial line the ACK is the terminal's word that
//! it took the request, and a register gives up waiting for it within a
//! second or less; the worker may not reach the request in that time (its
//! "begun" record waiting on a slow disk, another job before it). Both
//! sides race for one state, and the first to change it wins: a request
//! withdrawn never starts, a request taken is always ACKed, whichever
//! comes first at the boundary.

use std::sync::atomic::{AtomicU8, Ordering};

const OPEN: u8 = 0;
const TAKEN: u8 = 1;
const WITHDRAWN: u8 = 2;

/// The fate of one handed-over request, decided once.
#[derive(Debug, Default)]
pub struct Claim(AtomicU8);

impl Claim {
    /// The worker's side, just before it starts the transaction (its begun
    /// record on disk, the backend not asked yet): true when the request is
    /// its to run; false when the line withdrew it first.
    pub fn take(&self) -> bool {
        self.settle(TAKEN)
    }

    /// The line's side, when the request was not taken in time: true when
    /// it is withdrawn (the worker will not start it); false when the
    /// worker took it first, and it must be ACKed.
    pub fn withdraw(&self) -> bool {
        self.settle(WITHDRAWN)
    }

    /// Whether the line withdrew it: the worker then leaves it alone.
    pub fn withdrawn(&self) -> bool {
        self.0.load(Ordering::Acquire) == WITHDRAWN
    }

    /// Moves from open to `to`, once; true when the state is `to` after
    /// (also when this side had already settled it so).
    fn settle(&self, to: u8) -> bool {
        match self
            .0
            .compare_exchange(OPEN, to, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(now) => now == to,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    #[test]
    fn the_first_side_wins_and_the_other_sees_it() {
        let c = Claim::default();
        assert!(!c.withdrawn());
        assert!(c.take());
        assert!(!c.withdraw(), "taken: the line must ACK");
        assert!(c.take(), "taking again changes nothing");
        assert!(!c.withdrawn());

        let c = Claim::default();
        assert!(c.withdraw());
        assert!(c.withdrawn());
        assert!(!c.take(), "withdrawn: the worker must not start it");
        assert!(c.withdraw());
    }

    /// Both sides at once, many times: exactly one wins each race, and
    /// each side's view agrees with the other's.
    #[test]
    fn a_race_has_exactly_one_winner() {
        let (mut taken, mut withdrawn) = (0, 0);
        for _ in 0..2000 {
            let c = Arc::new(Claim::default());
            let start = Arc::new(Barrier::new(2));
            let (c2, s2) = (Arc::clone(&c), Arc::clone(&start));
            let worker = std::thread::spawn(move || {
                s2.wait();
                c2.take()
            });
            start.wait();
            let line = c.withdraw();
            let worker = worker.join().unwrap();
            assert_ne!(worker, line, "one side wins, never both nor neither");
            assert_eq!(c.withdrawn(), line);
            if worker {
                taken += 1;
            } else {
                withdrawn += 1;
            }
        }
        assert_eq!(taken + withdrawn, 2000);
    }
}
