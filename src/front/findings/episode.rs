//! A register's recent payment episodes, for the exam (`concertctl exam`,
//! in front/exam.rs): each request that took a line of the
//! `simulator-script`, what was answered and what became of the answer,
//! and what the register did next (a status request, or its next payment
//! and how soon). At most [`MAX_EPISODES`] per register, the oldest
//! forgotten first.

use super::Answered;
use std::time::{Duration, Instant};

/// Episodes kept per register: the exam's steps, and as many again for
/// a run started over.
pub const MAX_EPISODES: usize = 32;

/// What the register sent after an episode's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// A status request (CD=T).
    Status,
    /// A payment, this long after the answer (without a status request
    /// between).
    Payment(Duration),
}

/// One request that took a script line, and its answer.
#[derive(Clone, Debug)]
pub struct Episode {
    /// Its place among every register's episodes: the latest run of a
    /// step is the one with the largest.
    pub seq: u64,
    /// What was answered (its `taken` is the script line) and delivered.
    pub answered: Answered,
    /// When the answer was written, or withheld.
    pub at: Instant,
    /// What the register did next; none yet.
    pub next: Option<Next>,
}

impl Episode {
    /// The register's next request, `status` telling a status request
    /// from a payment, seen at `now`: kept if it is the first after this
    /// episode.
    pub(super) fn followed(&mut self, status: bool, now: Instant) {
        if self.next.is_some() {
            return;
        }
        self.next = Some(if status {
            Next::Status
        } else {
            Next::Payment(now.saturating_duration_since(self.at))
        });
    }
}
