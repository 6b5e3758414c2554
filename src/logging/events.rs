//! The watch stream (`concertctl watch`): what the terminal does, as
//! events of one line each, handed to the few clients that watch.
//!
//! Published by the worker (a transaction begun, ended, its answer
//! delivered), the simulator (waiting for a decision), the service (a
//! reload) and whoever records findings; all of them sit above this
//! layer, so the hub lives here, one per process like the logger.
//!
//! Publishing never waits: each watcher has a queue of [`QUEUE`] lines
//! and an event that finds it full is dropped for that watcher only and
//! counted; the watcher reads `lost N` before the next event that gets
//! in, or once it has read every queued line ([`Watcher::take_lost`]). The worker is never slowed by a client that reads slowly or not
//! at all. At most [`MAX_WATCHERS`] watch at once.
//!
//! A line is masked and escaped as a log line is (concertd-logging.7,
//! Card numbers): no card number reaches a watcher whole.

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use std::sync::{Mutex, MutexGuard};

/// Watchers at once; one more is refused.
pub const MAX_WATCHERS: usize = 4;
/// Lines queued per watcher before it loses events.
pub const QUEUE: usize = 256;

/// What a watcher is told, one line each (concertctl.8, WATCH).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A transaction began (its begun record on disk).
    Begun {
        id: u64,
        /// Its operation's name (`debit`, `cancel`...).
        operation: String,
        /// `12.34 EUR`, when the request has one.
        amount: Option<String>,
        register: u8,
        /// `tcp`, `serial`.
        channel: String,
        peer: String,
    },
    /// The simulator in manual mode waits for a decision on it.
    Waiting { id: u64 },
    /// It ended: `outcome` begins with approved, declined or unknown.
    Ended { id: u64, outcome: String },
    /// Its answer reached the register, or did not (why).
    Delivered { id: u64, result: Result<(), String> },
    /// Something a register did (the findings recorder's text).
    Finding(String),
    /// A reload: what it did, or why the running configuration is kept.
    Reload(Result<String, String>),
}

impl Event {
    /// Its line, without the newline; the first word says what it is.
    pub fn line(&self) -> String {
        // What came from outside is masked; ids, amounts and registers are
        // ours, and a transaction id can look like a card number.
        let shown = crate::wire::pan::masked_text;
        let text = match self {
            Event::Begun {
                id,
                operation,
                amount,
                register,
                channel,
                peer,
            } => {
                let amount = amount.as_ref().map(|a| format!(" {a}")).unwrap_or_default();
                let peer = shown(peer);
                format!("begun tx {id} {operation}{amount} register {register:02} {channel} {peer}")
            }
            Event::Waiting { id } => format!("waiting tx {id}"),
            Event::Ended { id, outcome } => format!("ended tx {id} {outcome}"),
            Event::Delivered { id, result: Ok(()) } => format!("delivered tx {id}"),
            Event::Delivered {
                id,
                result: Err(why),
            } => format!("undelivered tx {id} {}", shown(why)),
            Event::Finding(text) => format!("finding {}", shown(text)),
            Event::Reload(Ok(said)) => format!("reload done {}", shown(said)),
            Event::Reload(Err(why)) => format!("reload refused {}", shown(why)),
        };
        // One line: a reload's text has several, a reason may have any.
        let one = text.replace(['\r', '\n'], "; ");
        crate::wire::pan::escape_line(&one).into_owned()
    }
}

struct Sub {
    id: u64,
    tx: Sender<String>,
    /// Events dropped since the last that got in.
    lost: u64,
}

#[derive(Default)]
struct Inner {
    subs: Vec<Sub>,
    last_id: u64,
    /// The lines of the transaction running now (begun, waiting): a new
    /// watcher gets them first, so a page opened while a transaction
    /// waits shows it at once.
    current: Vec<String>,
    current_id: Option<u64>,
}

/// The watchers and what is running; [`hub`] is the process's.
pub struct Hub {
    inner: Mutex<Inner>,
}

impl Default for Hub {
    fn default() -> Hub {
        Hub::new()
    }
}

/// Why a watcher was not taken.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

impl std::fmt::Display for Full {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{MAX_WATCHERS} watchers already (at most {MAX_WATCHERS})"
        )
    }
}

/// A watcher's end: its lines come on [`Watcher::lines`]; dropped, its
/// place is free.
pub struct Watcher<'a> {
    hub: &'a Hub,
    id: u64,
    lines: Receiver<String>,
}

impl Watcher<'_> {
    pub fn lines(&self) -> &Receiver<String> {
        &self.lines
    }

    /// Events lost since the last line queued, once every queued line is
    /// read: then they came after all of them, and the count is the
    /// watcher's to say (the hub says it only before a next event).
    pub fn take_lost(&self) -> u64 {
        let mut g = self.hub.lock();
        if !self.lines.is_empty() {
            return 0;
        }
        g.subs
            .iter_mut()
            .find(|s| s.id == self.id)
            .map_or(0, |s| std::mem::take(&mut s.lost))
    }
}

impl Drop for Watcher<'_> {
    fn drop(&mut self) {
        self.hub.lock().subs.retain(|s| s.id != self.id);
    }
}

static HUB: Hub = Hub::new();

/// The process's hub.
pub fn hub() -> &'static Hub {
    &HUB
}

/// Publishes on the process's hub: never waits.
pub fn publish(e: Event) {
    HUB.publish(&e);
}

impl Hub {
    pub const fn new() -> Hub {
        Hub {
            inner: Mutex::new(Inner {
                subs: Vec::new(),
                last_id: 0,
                current: Vec::new(),
                current_id: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Plain data: a panic elsewhere leaves it usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new watcher, given the running transaction's lines first.
    pub fn subscribe(&self) -> Result<Watcher<'_>, Full> {
        let mut g = self.lock();
        if g.subs.len() >= MAX_WATCHERS {
            return Err(Full);
        }
        let (tx, rx) = bounded(QUEUE);
        for l in &g.current {
            // A new queue has room for the few lines of one transaction.
            let _ = tx.try_send(l.clone());
        }
        g.last_id += 1;
        let id = g.last_id;
        g.subs.push(Sub { id, tx, lost: 0 });
        Ok(Watcher {
            hub: self,
            id,
            lines: rx,
        })
    }

    /// Watchers now.
    pub fn watchers(&self) -> usize {
        self.lock().subs.len()
    }

    /// Hands the event to every watcher that has room; never waits.
    pub fn publish(&self, e: &Event) {
        let line = e.line();
        let mut g = self.lock();
        match e {
            Event::Begun { id, .. } => {
                g.current = vec![line.clone()];
                g.current_id = Some(*id);
            }
            Event::Waiting { id } if g.current_id == Some(*id) => g.current.push(line.clone()),
            Event::Ended { id, .. } if g.current_id == Some(*id) => {
                g.current.clear();
                g.current_id = None;
            }
            _ => {}
        }
        g.subs.retain_mut(|s| {
            if s.lost > 0 {
                match s.tx.try_send(format!("lost {}", s.lost)) {
                    Ok(()) => s.lost = 0,
                    Err(TrySendError::Full(_)) => {
                        s.lost += 1;
                        return true;
                    }
                    Err(TrySendError::Disconnected(_)) => return false,
                }
            }
            match s.tx.try_send(line.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    s.lost += 1;
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn begun(id: u64) -> Event {
        Event::Begun {
            id,
            operation: "debit".into(),
            amount: Some("12.34 EUR".into()),
            register: 1,
            channel: "tcp".into(),
            peer: "127.0.0.1:4000".into(),
        }
    }

    #[test]
    fn lines_begin_with_their_word_and_hold_one_line() {
        assert_eq!(
            begun(7).line(),
            "begun tx 7 debit 12.34 EUR register 01 tcp 127.0.0.1:4000"
        );
        assert_eq!(Event::Waiting { id: 7 }.line(), "waiting tx 7");
        let r = Event::Reload(Ok("reloaded /etc/c.conf\nnow: hold on".into()));
        assert_eq!(r.line(), "reload done reloaded /etc/c.conf; now: hold on");
        let u = Event::Delivered {
            id: 7,
            result: Err("reset\x1b[2J".into()),
        };
        assert!(!u.line().contains('\x1b'), "{}", u.line());
    }

    #[test]
    fn a_card_number_is_masked_a_transaction_id_is_not() {
        let l = Event::Finding("example CA00201CF0164970100000000000".into()).line();
        assert!(!l.contains("4970100000000000"), "{l}");
        let u = Event::Delivered {
            id: 1,
            result: Err("card 4111111111111111 read".into()),
        };
        assert!(!u.line().contains("4111111111111111"), "{}", u.line());
        // 13 digits that pass Luhn's check, as an id can.
        let id = 1796551607001;
        assert_eq!(Event::Waiting { id }.line(), format!("waiting tx {id}"));
        assert!(begun(id)
            .line()
            .starts_with(&format!("begun tx {id} debit")));
    }

    #[test]
    fn a_full_queue_loses_events_counts_them_and_never_waits() {
        let hub = Hub::new();
        let w = hub.subscribe().unwrap();
        for id in 0..(QUEUE as u64 + 10) {
            hub.publish(&Event::Waiting { id });
        }
        // Room again: the count comes before the next event.
        let first: Vec<String> = w.lines().try_iter().take(QUEUE).collect();
        assert_eq!(first.len(), QUEUE);
        assert_eq!(first[0], "waiting tx 0");
        hub.publish(&Event::Waiting { id: 999 });
        let rest: Vec<String> = w.lines().try_iter().collect();
        assert_eq!(rest, ["lost 10", "waiting tx 999"]);
        // Lost with nothing after: the watcher asks once it has read all.
        for id in 0..(QUEUE as u64 + 3) {
            hub.publish(&Event::Waiting { id });
        }
        assert_eq!(w.take_lost(), 0, "lines still queued");
        assert_eq!(w.lines().try_iter().count(), QUEUE);
        assert_eq!(w.take_lost(), 3);
        assert_eq!(w.take_lost(), 0);
    }

    #[test]
    fn at_most_four_watchers_and_a_dropped_one_frees_its_place() {
        let hub = Hub::new();
        let ws: Vec<_> = (0..MAX_WATCHERS)
            .map(|_| hub.subscribe().unwrap())
            .collect();
        assert_eq!(hub.subscribe().err(), Some(Full));
        drop(ws);
        assert_eq!(hub.watchers(), 0);
        assert!(hub.subscribe().is_ok());
    }

    #[test]
    fn a_new_watcher_sees_the_running_transaction_first() {
        let hub = Hub::new();
        hub.publish(&begun(5));
        hub.publish(&Event::Waiting { id: 5 });
        let w = hub.subscribe().unwrap();
        let got: Vec<String> = w.lines().try_iter().collect();
        assert_eq!(got.len(), 2);
        assert!(got[0].starts_with("begun tx 5 "), "{got:?}");
        assert_eq!(got[1], "waiting tx 5");
        drop(w);
        hub.publish(&Event::Ended {
            id: 5,
            outcome: "declined AF06 (abandoned)".into(),
        });
        let w = hub.subscribe().unwrap();
        assert_eq!(w.lines().try_iter().count(), 0);
    }
}
