//! Changes the worker makes between transactions: new settings and a new
//! backend on reload, and the journal's rotation.

use super::{Settings, Worker};
use crate::terminal::journal::{self, Record};
use std::sync::Arc;

impl Worker {
    pub(super) fn reload(&mut self, settings: Settings, cfg: &crate::config::Config) {
        self.settings = settings;
        if cfg.terminal == self.terminal {
            // Back to the running backend: a pending change is dropped.
            self.next_backend = None;
            self.backend.reload(cfg);
            return;
        }
        match crate::backend::build(cfg, &self.stage) {
            Ok(b) => {
                log::info!(
                    "terminal {}: takes over after the running transaction",
                    cfg.terminal.shown()
                );
                self.next_backend = Some((b, cfg.terminal.clone()));
                self.swap_backend();
            }
            Err(e) => log::error!(
                "reload: terminal {}: {e}; the running backend is kept",
                cfg.terminal.shown()
            ),
        }
    }

    /// A backend change waits for the running transaction to end.
    pub(super) fn swap_backend(&mut self) {
        if self.running.is_some() {
            return;
        }
        if let Some((b, t)) = self.next_backend.take() {
            log::info!("terminal {}: now in use", t.shown());
            self.backend = b;
            self.backend.share_history(Arc::clone(&self.history));
            self.terminal = t;
        }
    }

    /// Past `journal-size`, a new generation starts with the records still
    /// needed copied in, so that dropping the oldest generation never loses
    /// them: always the running transaction's begun record, the unknown
    /// outcomes a late one may settle (at most `MAX_UNRESOLVED`) and each
    /// register's last payment and last approved debit (at most 2 x 100);
    /// then the retry window's, newest first, while the carried set stays
    /// within `Journal::carry_budget`. Those left out stay in the older
    /// generations as long as they are kept, and in memory.
    pub(super) fn rotate_if_needed(&mut self) {
        if !self.journal.needs_rotation() {
            return;
        }
        let mut carry = journal::Carry::default();
        if let Some(r) = &self.running {
            carry.take(&r.record);
        }
        for c in self.unresolved.values() {
            carry.take(&c.record);
        }
        for c in self.memory.kept() {
            carry.take(&c.record);
        }
        let mut window: Vec<&Record> = self.memory.replayable().map(|c| &c.record).collect();
        window.sort_by_key(|r| std::cmp::Reverse(r.id));
        let budget = self.journal.carry_budget();
        let mut left = 0;
        for r in window {
            if !carry.has(r.id) && !carry.take_all(&[r], budget, false) {
                left += 1;
            }
        }
        // A debit goes with its refunds and cancellation, or not at all: a
        // debit read back without them would be refundable again. One of
        // them already carried takes the rest along, whatever the budget.
        let mut unrefundable = 0;
        for group in self.refunds.groups() {
            let forced = group.iter().any(|r| carry.has(r.id));
            if !carry.take_all(&group, budget, forced) {
                unrefundable += 1;
            }
        }
        if unrefundable > 0 {
            log::info!(
                "{}: {unrefundable} older approved debits not carried over (past half of \
                 journal-size): refundable by reference while their generation is kept",
                self.journal.path().display()
            );
        }
        // Start-up may then read the new generation alone: ids go on from
        // `last`, and nothing the state holds is left behind.
        carry.last = self.next_id;
        carry.whole = left == 0
            && unrefundable == 0
            && self.taken.is_empty()
            && (self.settings.retry_window.is_zero() || self.memory.attempts_held());
        let carried = carry.len();
        let path = self.journal.path().display().to_string();
        match self.journal.rotate(carry) {
            Ok(()) if left > 0 => log::info!(
                "{path}: rotated, {carried} transactions carried over; {left} older ones of the \
                 retry window are not (past half of journal-size): they stay in the older \
                 generations while those are kept"
            ),
            Ok(()) => log::info!("{path}: rotated, {carried} transactions carried over"),
            Err(e) => log::error!("{path}: rotation failed: {e}"),
        }
    }
}
