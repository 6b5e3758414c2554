//! Start-up: the worker built again from what the journal holds (every
//! transaction folded in, those never ended closed as unknown, late
//! resolutions settled), relay outcomes left unknown resumed, and the ids
//! a new transaction may take.

use super::{
    unix_now, Channel, Control, Counters, Handle, Settings, Worker, ID_SLACK, MAX_UNRESOLVED, QUEUE,
};
use crate::backend::{Backend, Transaction};
use crate::terminal::journal::read::Item;
use crate::terminal::journal::{self, Event, Journal, Record, Verdict};
use crate::terminal::memory::{Completed, Memory};
use crate::terminal::refunds::Refunds;
use crate::terminal::retry::{Age, RetryKey};
use crate::wire::answer::{self, Af, Outcome};
use crate::wire::request::{self, Operation, Request};
use crate::wire::tlv::{tags::*, Frame};
use crossbeam_channel::{bounded, unbounded, Sender};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

impl Worker {
    /// Builds the worker from what the journal holds: transactions begun
    /// and never ended are closed as unknown, and each register's last
    /// transaction is known again.
    pub fn new(
        backend: Box<dyn Backend>,
        terminal: crate::config::Terminal,
        journal: Journal,
        contents: journal::Contents,
        settings: Settings,
        stage: Arc<crate::backend::stage::Stage>,
    ) -> (Worker, Handle, Sender<Control>) {
        let (jobs_tx, jobs) = bounded(QUEUE);
        let (deliveries_tx, deliveries) = unbounded();
        let (control_tx, control) = unbounded();
        let (done_tx, done_rx) = unbounded();
        // Unique across restarts: past every sane id in the journal (and
        // every id a rotation line says was given out before it), and
        // seconds since the epoch times 1000 plus a count. Checked
        // arithmetic: a clock or a journal cannot make it wrap.
        let floor = u64::try_from(unix_now()).unwrap_or(0).saturating_mul(1000);
        let bound = floor.saturating_add(ID_SLACK);
        let mut w = Worker {
            backend,
            terminal,
            next_backend: None,
            journal,
            settings,
            jobs,
            deliveries,
            control,
            done_tx,
            done_rx,
            running: None,
            memory: Memory::default(),
            born: Instant::now(),
            next_id: floor,
            taken: HashSet::new(),
            stopping: false,
            undelivered: HashMap::new(),
            unresolved: HashMap::new(),
            history: Arc::default(),
            history_later: crate::terminal::journal::read::whole(&contents),
            refunds: Refunds::default(),
            stage,
            counters: Counters::default(),
            turned_busy: Arc::default(),
        };
        w.backend.share_history(Arc::clone(&w.history));
        // Streamed: each record is folded in as it is read, in id order,
        // and dropped unless the state keeps it.
        let mut max_id = 0;
        let mut unknown = BTreeMap::new();
        let read = crate::terminal::journal::read::restore(&contents, |item| match item {
            Item::Record(r) if r.id > bound => {
                w.taken.insert(r.id);
            }
            Item::Record(r) => {
                max_id = max_id.max(r.id);
                if let Some(c) = w.restore_read(r) {
                    // A later `resolved` line may settle it.
                    unknown.insert(c.record.id, c);
                    if unknown.len() > MAX_UNRESOLVED {
                        unknown.pop_first();
                    }
                }
            }
            Item::Late(id, ev) => w.restore_late(id, ev, &mut unknown),
        });
        drop(unknown);
        let path = w.journal.path().display().to_string();
        let read = read.unwrap_or_else(|e| {
            log::error!("{path}: reading stopped: {e}; the state is what was read before");
            crate::terminal::journal::read::Restored::default()
        });
        if read.bad_lines > 0 {
            log::warn!("{path}: {} unreadable lines skipped", read.bad_lines);
        }
        if read.last > bound {
            log::warn!(
                "{path}: a rotation line says ids up to {} were given, beyond {bound}: ignored",
                read.last
            );
        } else {
            max_id = max_id.max(read.last);
        }
        if let Some(max) = w.taken.iter().max() {
            log::warn!(
                "{path}: {} transaction ids beyond {bound} (start time x 1000 + 10^9), up to {max}, \
                 ignored when choosing new ids: corrupt or crafted lines",
                w.taken.len()
            );
        }
        w.next_id = max_id.max(floor);
        if std::mem::take(&mut w.history_later) {
            w.history_backwards(&contents);
        }
        log::debug!(
            "{path}: {} files read{}",
            read.files,
            if read.newest_only {
                " (the last rotation carried what the state needs)"
            } else {
                ""
            }
        );
        w.resume_unknown();
        let handle = Handle {
            jobs: jobs_tx,
            deliveries: deliveries_tx,
            stage: Arc::clone(&w.stage),
            turned_busy: Arc::clone(&w.turned_busy),
        };
        (w, handle, control_tx)
    }

    /// A transaction read back at start-up: a withdrawn one is left out
    /// (never started, never answered: not an unknown outcome, and not
    /// its register's last), one begun and never ended is closed as
    /// unknown, then it is restored. The restored transaction when its
    /// outcome is unknown.
    fn restore_read(&mut self, mut r: Record) -> Option<Arc<Completed>> {
        if r.withdrawn {
            return None;
        }
        if r.answer.is_none() {
            let answer = recovery_answer(&r.request);
            log::warn!(
                "tx {}: begun {} from {} {} and never ended: outcome unknown; the register got \
                 no answer (concertd stopped before the transaction ended); a status request \
                 now returns AF07",
                r.id,
                r.begun_at,
                r.channel,
                r.peer
            );
            if let Err(e) = self.journal.record(
                r.id,
                &Event::Recovered {
                    answer: answer.clone(),
                },
            ) {
                log::error!(
                    "{}: cannot close tx {}: {e}",
                    self.journal.path().display(),
                    r.id
                );
            }
            r.ended_at = Some(r.begun_at.clone());
            r.verdict = Some(Verdict::Unknown);
            r.answer = Some(answer);
            r.recovered = true;
        }
        self.restore(r)
            .filter(|c| c.record.verdict == Some(Verdict::Unknown))
    }

    /// An event read after its transaction was folded in: a resolution
    /// settles it as `resolve` did when it was written (the refunds
    /// index, and its register's last when it still is); nothing else
    /// changes the state.
    fn restore_late(&mut self, id: u64, ev: Event, unknown: &mut BTreeMap<u64, Arc<Completed>>) {
        let Event::Resolved { verdict, answer } = ev else {
            return;
        };
        let Some(old) = unknown
            .remove(&id)
            .or_else(|| self.memory.lasts().find(|c| c.record.id == id).cloned())
            .filter(|c| c.record.verdict == Some(Verdict::Unknown))
        else {
            return;
        };
        let outcome = match Frame::decode(&answer) {
            Ok(f) if verdict != Verdict::NotDone => Outcome::from_answer(&f, &old.request.frame),
            _ => old.outcome.clone(),
        };
        self.settle(&old, old.request.clone(), outcome, verdict, answer);
    }

    /// Start-up read the journal alone: the relay's history of the ACs and
    /// CFs other transactions had, bounded to the newest values, is filled
    /// from the newest transactions back (the journal, then the older
    /// generations, read backwards) until it is full or has gone back
    /// twice its size in transactions, rather than from every transaction
    /// folded in. A transaction never ended still gives its CF.
    fn history_backwards(&mut self, contents: &journal::Contents) {
        let limit = 2 * crate::backend::history::LIMIT;
        let mut n = 0;
        let h = Arc::clone(&self.history);
        let read = crate::terminal::journal::read::back_through(contents, |r| {
            n += 1;
            let full = match reread(&r) {
                Ok((req, frame)) => {
                    let outcome = Outcome::from_answer(&frame, &req.frame);
                    crate::backend::history::with(&h, |h| h.older(r.id, &req, &outcome))
                }
                Err(_) if r.answer.is_none() => match request::reread(&r.request) {
                    Ok(req) => {
                        let unknown = Outcome::declined(Af::NotEnded);
                        crate::backend::history::with(&h, |h| h.older(r.id, &req, &unknown))
                    }
                    Err(_) => false,
                },
                Err(_) => false,
            };
            !full && n < limit
        });
        if let Err(e) = read {
            log::warn!(
                "{}: the journal not read back for the relay's history: {e}",
                self.journal.path().display()
            );
        }
    }

    /// Puts a journaled transaction back in the per-register state.
    fn restore(&mut self, r: Record) -> Option<Arc<Completed>> {
        let (request, frame) = match reread(&r) {
            Ok(v) => v,
            Err(why) => {
                log::warn!(
                    "{}: tx {} (begun {} from {} {}): {why}; skipped",
                    self.journal.path().display(),
                    r.id,
                    r.begun_at,
                    r.channel,
                    r.peer
                );
                return None;
            }
        };
        let answer = r.answer.clone().unwrap_or_default();
        let outcome = Outcome::from_answer(&frame, &request.frame);
        let age = Age::from_stamp(&r.begun_at, unix_now(), self.born);
        let key = r
            .key
            .as_deref()
            .and_then(|t| RetryKey::from_token(&request, t));
        let c = Arc::new(Completed {
            request,
            outcome,
            answer,
            record: r,
            age,
            key,
        });
        // Journaled in order: the cancellation's debit is its register's
        // last approved one, as when it ran.
        let cancels = (c.request.op == Operation::Cancel)
            .then(|| self.memory.last_debit(c.request.register))
            .flatten()
            .map(|d| d.record.id);
        self.account(&c, cancels);
        self.remember(Arc::clone(&c));
        Some(c)
    }

    /// Relay outcomes left unknown by the previous run, which the backend
    /// may still learn: only a register's last transaction, as a status
    /// request answers nothing older.
    fn resume_unknown(&mut self) {
        let unknown: Vec<Arc<Completed>> = self
            .memory
            .lasts()
            .filter(|c| {
                c.record.verdict == Some(Verdict::Unknown) && c.record.upstream_status.is_some()
            })
            .cloned()
            .collect();
        for c in unknown {
            // concertd writes only the names `Channel` displays: another
            // is not a record of ours to act upon.
            let Some(channel) = Channel::from_name(&c.record.channel) else {
                log::warn!(
                    "tx {}: the journal names channel {:?}: outcome not asked again",
                    c.record.id,
                    c.record.channel
                );
                continue;
            };
            let tx = Transaction {
                id: c.record.id,
                request: c.request.clone(),
                channel,
                original: None,
            };
            let kept = c.record.upstream_status.as_deref().unwrap_or_default();
            self.backend.resume(&tx, kept, self.done_tx.clone());
        }
    }

    /// The next id: never one the journal holds, never a wrapped one.
    pub(super) fn new_id(&mut self) -> Option<u64> {
        loop {
            self.next_id = self.next_id.checked_add(1)?;
            if !self.taken.contains(&self.next_id) {
                return Some(self.next_id);
            }
        }
    }
}

/// The answer of a transaction begun and never ended, closed at start:
/// AF07, echoing what can be read of its request.
pub fn recovery_answer(request: &[u8]) -> Vec<u8> {
    let partial = Frame::decode(request).unwrap_or_else(|(p, _)| p);
    answer::refusal(&partial, Some(Af::NotEnded)).encode()
}

/// A journaled transaction read back with the checks a request gets now:
/// its request, and its answer, which must decode and say AE 10 or 01.
/// The error says what is wrong.
pub fn reread(r: &Record) -> Result<(Request, Frame), String> {
    let request =
        request::reread(&r.request).map_err(|e| format!("journaled request not readable ({e})"))?;
    let Some(answer) = &r.answer else {
        return Err("no answer journaled".into());
    };
    let frame =
        Frame::decode(answer).map_err(|(_, e)| format!("journaled answer not readable ({e})"))?;
    match frame.get(AE) {
        Some(b"10" | b"01") => Ok((request, frame)),
        _ => Err("journaled answer not valid (no AE 10 or 01)".into()),
    }
}

#[cfg(test)]
mod id_tests {
    use super::*;
    use std::time::Duration;

    fn worker(records: Vec<Record>) -> Worker {
        super::super::queue_and_window_tests::worker(records, Duration::ZERO).0
    }

    #[test]
    fn new_ids_skip_journal_ids_and_never_wrap() {
        let rec = |id| Record {
            id,
            begun_at: "2026-01-01T00:00:00.000Z".into(),
            request: b"CZ0040320CA00201CB0041000CD0010CE003978".to_vec(),
            answer: Some(b"CZ0040320CA00201CB0041000CD0010CE003978AE00210".to_vec()),
            ..Record::default()
        };
        let mut w = worker(vec![rec(u64::MAX - 1), rec(7)]);
        // Past the sane bound: ignored when choosing, still never reused.
        assert!(w.next_id < u64::MAX / 2, "{}", w.next_id);
        assert_eq!(w.taken, HashSet::from([u64::MAX - 1]));
        w.next_id = u64::MAX - 3;
        assert_eq!(w.new_id(), Some(u64::MAX - 2));
        assert_eq!(w.new_id(), Some(u64::MAX));
        assert_eq!(w.new_id(), None);
        assert_eq!(w.new_id(), None);
    }

    /// A late outcome written long after its transaction ended (more
    /// transactions than start-up holds back began in between) still
    /// settles it when the journal is read back: as its register's last.
    #[test]
    fn a_resolution_read_far_after_its_transaction_settles_it() {
        let dir = std::env::temp_dir().join(format!("concertd-worker-late-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let t = "2026-01-01T00:00:00.000Z";
        let req = |reg: u8| format!("CZ0040320CA002{reg:02}CB0041000CD0010CE003978");
        let mut text = format!(
            "{t} 1 begun tcp 127.0.0.1:1 01 {}\n{t} 1 ended unknown {}AE00201AF00207\n",
            req(1),
            req(1)
        );
        for id in 2..40 {
            text += &format!(
                "{t} {id} begun tcp 127.0.0.1:1 02 {}\n{t} {id} ended approved {}AE00210\n",
                req(2),
                req(2)
            );
        }
        text += &format!("{t} 1 resolved approved {}AE00210\n", req(1));
        std::fs::write(dir.join("journal"), text).unwrap();
        let (journal, contents) = Journal::open(&dir.join("journal"), 1 << 20, 0).unwrap();
        let (w, _, _) =
            super::super::testing::on(journal, contents, Duration::from_secs(1), Duration::ZERO);
        let last = w.memory.last(1).expect("register 01's last");
        assert_eq!(last.record.id, 1);
        assert_eq!(last.record.verdict, Some(Verdict::Approved));
        assert!(last.record.resolved && last.outcome.is_approved());
        assert_eq!(w.memory.last_debit(1).map(|c| c.record.id), Some(1));
        assert_eq!(w.refunds.len(), 39, "the resolved debit is refundable too");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An unknown outcome resolved while running is settled as one read
    /// back at start: its record says resolved, so that a rotation carries
    /// its resolution line and `totals` still lists it apart.
    #[test]
    fn a_live_resolution_is_settled_like_one_read_back() {
        let dir = std::env::temp_dir().join(format!("concertd-worker-live-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let t = "2026-01-01T00:00:00.000Z";
        let req = "CZ0040320CA00201CB0041000CD0010CE003978";
        let text = format!(
            "{t} 1 begun tcp 127.0.0.1:1 01 {req}\n{t} 1 ended unknown {req}AE00201AF00207\n"
        );
        std::fs::write(dir.join("journal"), text).unwrap();
        let (journal, contents) = Journal::open(&dir.join("journal"), 1 << 20, 0).unwrap();
        let (mut w, _, _) =
            super::super::testing::on(journal, contents, Duration::from_secs(1), Duration::ZERO);
        let request = Frame::decode(req.as_bytes()).unwrap();
        let approved = Frame::decode(format!("{req}AE00210AC006123456").as_bytes()).unwrap();
        w.resolve(1, Outcome::from_answer(&approved, &request), false);
        let last = w.memory.last(1).expect("register 01's last");
        assert_eq!(last.record.verdict, Some(Verdict::Approved));
        assert!(last.record.resolved && last.outcome.is_approved());
        assert_eq!(w.refunds.len(), 1, "the resolved debit is refundable");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Start-up that reads the journal alone (its rotation carried
    /// everything) still never gives an id an older generation holds: the
    /// rotation line says the highest one given out.
    #[test]
    fn ids_go_on_past_the_rotation_line_when_older_generations_are_not_read() {
        let dir = std::env::temp_dir().join(format!("concertd-worker-ids-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let given = u64::try_from(unix_now()).unwrap() * 1000 + 5_000_000;
        let older = format!(
            "2026-01-01T00:00:00.000Z {given} begun tcp 127.0.0.1:1 01 CZ0040320CA00201CB0041000CD0010CE003978\n"
        );
        std::fs::write(dir.join("journal.1"), older).unwrap();
        std::fs::write(
            dir.join("journal"),
            format!("2026-01-01T00:00:01.000Z 0 rotated carried=0 last={given} whole\n"),
        )
        .unwrap();
        let (journal, contents) = Journal::open(&dir.join("journal"), 1 << 20, 1).unwrap();
        let (mut w, _, _) =
            super::super::testing::on(journal, contents, Duration::from_secs(1), Duration::ZERO);
        assert!(w.new_id().is_some_and(|id| id > given), "{}", w.next_id);
        // Not read: tx `given`, begun and never ended there, is not closed.
        let older = std::fs::read_to_string(dir.join("journal.1")).unwrap();
        assert_eq!(older.lines().count(), 1, "{older}");
        assert!(!std::fs::read_to_string(dir.join("journal"))
            .unwrap()
            .contains("unknown-recovered"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
