//! What a stage tried, lost and measured.

use crate::tcp::check_outcome;
use crate::util::Daemon;

/// Most evidence lines kept per stage.
const EVIDENCE: usize = 12;

/// What a stage reports.
#[derive(Default)]
pub struct Stage {
    pub key: &'static str,
    pub title: &'static str,
    pub tried: u64,
    pub lost: u64,
    /// Answers that disagree with what the backend did.
    pub wrong: u64,
    pub secs: f64,
    /// `stress.<key>.<name>=<value>`, in order.
    pub figures: Vec<(String, String)>,
    /// Evidence of what was lost, and remarks.
    pub notes: Vec<String>,
    /// One line for the summary table.
    pub summary: String,
}

impl Stage {
    pub fn new(key: &'static str, title: &'static str) -> Stage {
        Stage {
            key,
            title,
            ..Stage::default()
        }
    }

    pub fn fig(&mut self, name: &str, value: impl ToString) {
        self.figures.push((name.to_string(), value.to_string()));
    }

    pub fn evidence(&mut self, s: String) {
        if self.notes.len() < EVIDENCE {
            self.notes.push(s);
        }
    }

    pub fn lose(&mut self, s: String) {
        self.lost += 1;
        self.evidence(s);
    }

    /// Counts a wrong outcome: checked for every final answer to a debit.
    pub fn outcome(&mut self, amount: u64, answer: &[u8], unknown_ok: bool) {
        if let Err(e) = check_outcome(amount, answer, unknown_ok) {
            self.wrong += 1;
            self.evidence(format!("wrong outcome: {e}"));
        }
    }

    /// Panics and errors in the daemon's log are reported; a panic is a
    /// failure.
    pub fn daemon_log(&mut self, d: &Daemon) {
        for p in d.panics() {
            self.lose(format!("concertd panicked: {p}"));
        }
        let (n, errors) = d.errors();
        for e in errors {
            self.evidence(format!("daemon error: {e}"));
        }
        let prev = self.figures.iter().position(|(k, _)| k == "daemon_errors");
        let total = prev.map_or(0, |i| self.figures[i].1.parse::<usize>().unwrap_or(0)) + n;
        match prev {
            Some(i) => self.figures[i].1 = total.to_string(),
            None => self.fig("daemon_errors", total),
        }
    }
}
