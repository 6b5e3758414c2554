//! `terminal relay tcp|serial ...`: each transaction goes on to an
//! upstream Concert terminal, translated to V2 when the upstream speaks V2,
//! and its outcome comes back. A request that left but got no answer has
//! an outcome nobody knows: it is answered as such and, with a V3 upstream,
//! resolved later by asking the upstream for the transaction status.
//!
//! A status answer describes the register's last transaction upstream,
//! which after a loss may be the one before the lost request, asked again:
//! an upstream may print a new duplicate ticket, a counter or the time in
//! each answer. So the status is asked before every payment too, and kept,
//! and a later answer is read by what identifies a transaction (its
//! authorisation, transaction id and date), never by its bytes: the lost
//! request is resolved only on evidence that names it (see `settle`).
//! Without a kept answer there is nothing to tell the two apart, and the
//! outcome stays unknown.

// The way to the upstream, and telling its answers apart; this file is
// the backend and the requests under way.
mod settle;
mod transport;

use crate::backend::history;
use crate::backend::{Backend, Done, Note, Transaction};
use crate::config::Upstream;
use crate::wire::answer::{Af, Outcome};
use crate::wire::request::Request;
use crossbeam_channel::{bounded, Receiver, Sender};
use settle::{resolve, status_before, Evidence, RESOLVE_EVERY};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
pub use transport::outcome_from_answer;
use transport::{outcome_of, v2_request, v3_request, Link, Sent};

pub struct Relay {
    link: Link,
    timeout: Duration,
    /// Wakes the resolver of a register's unknown outcome.
    pokes: HashMap<u8, Sender<()>>,
    spawn: crate::backend::Spawn,
    /// The worker's, once it shares it.
    history: history::Shared,
    flights: Arc<Flights>,
}

/// The requests this relay has sent or is sending upstream. A status
/// answer taken while one is under way, or since one began, may describe
/// it before its answer (its AC, its CF) is in the history: a resolver
/// takes only answers asked and received while none was.
#[derive(Default)]
struct Flights {
    /// How many ever began, and how many are under way.
    state: Mutex<(u64, usize)>,
}

impl Flights {
    fn begin(self: &Arc<Self>) -> Flight {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.0 += 1;
        s.1 += 1;
        Flight(Arc::clone(self))
    }

    /// How many began, when none is under way.
    fn quiet(&self) -> Option<u64> {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        (s.1 == 0).then_some(s.0)
    }
}

/// One request under way; it ends when dropped.
struct Flight(Arc<Flights>);

impl Drop for Flight {
    fn drop(&mut self) {
        let mut s = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.1 = s.1.saturating_sub(1);
    }
}

impl Relay {
    pub fn new(upstream: &Upstream, v2: bool, timeout: Duration) -> Relay {
        Relay {
            link: Link {
                upstream: upstream.clone(),
                v2,
            },
            timeout,
            pokes: HashMap::new(),
            spawn: crate::backend::spawn_thread,
            history: history::Shared::default(),
            flights: Arc::default(),
        }
    }
}

impl Backend for Relay {
    fn name(&self) -> &'static str {
        "relay"
    }

    fn start(&mut self, tx: &Transaction, done: Sender<Done>) {
        let id = tx.id;
        let req = tx.request.clone();
        let link = self.link.clone();
        let until = Instant::now() + self.timeout;
        let (poke_tx, poke_rx) = bounded(1);
        if !link.v2 {
            self.pokes.insert(req.register, poke_tx);
        }
        let answer = done.clone();
        let (history, flights) = (Arc::clone(&self.history), Arc::clone(&self.flights));
        // Counted from before the thread starts: a status answer a resolver
        // receives from now on may describe this request.
        let flight = flights.begin();
        let spawned = (self.spawn)(
            std::thread::Builder::new().name("relay".into()),
            Box::new(move || {
                let payload = if link.v2 {
                    v2_request(id, &req)
                } else {
                    Ok(v3_request(&req))
                };
                let outcome = match payload {
                    Err(why) => {
                        log::warn!("tx {id}: not relayed: {why}");
                        Outcome::declined(Af::UnknownOperation)
                    }
                    Ok(p) => {
                        let kept = (!link.v2 && req.op.is_payment())
                            .then(|| status_before(&link, id, &req, until))
                            .flatten();
                        if let Some(k) = &kept {
                            let _ = done.send(Done {
                                id,
                                outcome: Outcome::declined(Af::NotEnded),
                                resolved: false,
                                note: Some(Note::UpstreamStatus(k.clone())),
                            });
                        }
                        let ev = kept.map(|kept| Evidence {
                            kept,
                            history: Arc::clone(&history),
                            flights: Arc::clone(&flights),
                        });
                        relay_one(id, &link, &req, &p, until, ev, &poke_rx, &done)
                    }
                };
                // Its AC and CF known before a resolver may take a status
                // answer again.
                history::with(&history, |h| h.record(id, &req, &outcome));
                drop(flight);
                let _ = done.send(Done {
                    id,
                    outcome,
                    resolved: false,
                    note: None,
                });
            }),
        );
        if let Err(e) = spawned {
            if !self.link.v2 {
                self.pokes.remove(&tx.request.register);
            }
            crate::backend::decline_unstarted(id, "the relay", &e, &answer);
        }
    }

    fn abort(&mut self, _id: u64) -> Outcome {
        // The request may have reached the upstream: nobody knows.
        Outcome::declined(Af::NotEnded)
    }

    fn reload(&mut self, cfg: &crate::config::Config) {
        self.timeout = cfg.transaction_timeout;
    }

    fn status_requested(&mut self, register: u8) {
        if let Some(p) = self.pokes.get(&register) {
            let _ = p.try_send(());
        }
    }

    fn resume(&mut self, tx: &Transaction, kept: &[u8], done: Sender<Done>) {
        if self.link.v2 {
            return;
        }
        let id = tx.id;
        let (poke_tx, poke_rx) = bounded(1);
        self.pokes.insert(tx.request.register, poke_tx);
        log::info!("tx {id}: outcome unknown before the restart: asking the upstream again");
        let (link, req) = (self.link.clone(), tx.request.clone());
        let ev = Evidence {
            kept: kept.to_vec(),
            history: Arc::clone(&self.history),
            flights: Arc::clone(&self.flights),
        };
        let spawned = std::thread::Builder::new()
            .name("relay-resolve".into())
            .spawn(move || resolve(link, id, req, ev, poke_rx, done, RESOLVE_EVERY));
        if let Err(e) = spawned {
            log::error!("tx {id}: cannot start the resolver: {e}");
        }
    }

    fn share_history(&mut self, history: history::Shared) {
        self.history = history;
    }
}

/// The request upstream and what its answer says.
#[allow(clippy::too_many_arguments)]
fn relay_one(
    id: u64,
    link: &Link,
    req: &Request,
    payload: &[u8],
    until: Instant,
    ev: Option<Evidence>,
    pokes: &Receiver<()>,
    done: &Sender<Done>,
) -> Outcome {
    if Instant::now() >= until {
        // The status request took all the time: the request never left.
        log::warn!("tx {id}: not relayed: no time left after the status request");
        return Outcome::declined(Af::Unknown);
    }
    match link.exchange(payload, until) {
        Sent::Refused(why) => {
            log::warn!("tx {id}: upstream: {why}: declined");
            Outcome::declined(Af::Unknown)
        }
        Sent::Answer(a) => match outcome_of(id, link.v2, req, &a) {
            Ok(o) => o,
            Err(why) => lost(id, link, req, &why, ev, pokes.clone(), done),
        },
        Sent::Lost(why) => lost(id, link, req, &why, ev, pokes.clone(), done),
    }
}

/// A request that left without a usable answer: unknown, and when a status
/// answer was kept before it a resolver starts asking for the status.
fn lost(
    id: u64,
    link: &Link,
    req: &Request,
    why: &str,
    ev: Option<Evidence>,
    pokes: Receiver<()>,
    done: &Sender<Done>,
) -> Outcome {
    let Some(ev) = ev else {
        let cannot = if link.v2 {
            "a V2 upstream cannot be asked"
        } else {
            "no status answer kept before the request"
        };
        log::warn!("tx {id}: upstream: {why}: outcome unknown, and stays so ({cannot})");
        return Outcome::declined(Af::NotEnded);
    };
    log::warn!("tx {id}: upstream: {why}: outcome unknown, asking the upstream");
    let (link, req, done) = (link.clone(), req.clone(), done.clone());
    let spawned = std::thread::Builder::new()
        .name("relay-resolve".into())
        .spawn(move || resolve(link, id, req, ev, pokes, done, RESOLVE_EVERY));
    if let Err(e) = spawned {
        log::error!("tx {id}: cannot start the resolver: {e}");
    }
    Outcome::declined(Af::NotEnded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn req(body: &str) -> Request {
        crate::wire::request::parse(body.as_bytes(), &[978]).unwrap()
    }

    #[test]
    fn a_status_request_from_the_register_makes_the_resolver_ask_at_once() {
        const SALE: &str = "CZ0040320CJ012247300123456CA00201CB0041000CD0010CE003978";
        // An upstream whose status answer is the lost sale, performed.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (seen_tx, seen) = bounded(8);
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 256];
                while crate::wire::request::parse(&buf, &[978]).is_err() {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = s.write_all(format!("{SALE}CF003abcAE00210AC006222222").as_bytes());
                if seen_tx.send(buf).is_err() {
                    return;
                }
            }
        });
        let link = Link {
            upstream: Upstream::Tcp(addr.to_string()),
            v2: false,
        };
        let kept = format!("{SALE}CF003abcAE00210AC006111111").into_bytes();
        let (poke_tx, pokes) = bounded(1);
        let (done_tx, done) = crossbeam_channel::unbounded();
        let r = req(&format!("{SALE}CF003abc"));
        let ev = Evidence {
            kept,
            history: history::Shared::default(),
            flights: Arc::default(),
        };
        // Asking every hour: only the poke can make it ask within the test.
        std::thread::spawn(move || {
            resolve(link, 7, r, ev, pokes, done_tx, Duration::from_secs(3600))
        });
        poke_tx.send(()).unwrap();
        let asked = seen.recv_timeout(Duration::from_secs(30)).expect("asked");
        assert!(
            asked.ends_with(b"CD001T"),
            "{}",
            String::from_utf8_lossy(&asked)
        );
        let d = done
            .recv_timeout(Duration::from_secs(30))
            .expect("resolved");
        assert_eq!((d.id, d.resolved), (7, true));
        assert!(d.outcome.is_approved());
        drop(poke_tx);
    }

    /// A relay thread that cannot start sends nothing upstream, so the
    /// transaction is declined at once, not left to transaction-timeout.
    #[test]
    fn a_thread_that_cannot_start_sends_nothing_and_declines() {
        let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        upstream.set_nonblocking(true).unwrap();
        let addr = upstream.local_addr().unwrap().to_string();
        let mut r = Relay::new(&Upstream::Tcp(addr), false, Duration::from_secs(60));
        r.spawn = |_, _| Err(std::io::Error::other("no threads left"));
        let (done, finished) = crossbeam_channel::unbounded();
        let tx = Transaction {
            id: 9,
            request: req("CZ0040320CA00201CB0041000CD0010CE003978"),
            channel: crate::terminal::worker::Channel::Serial,
            original: None,
        };
        r.start(&tx, done);
        let d = finished.try_recv().expect("an answer at once");
        assert_eq!(d.id, 9);
        assert_eq!(d.outcome, Outcome::declined(Af::Unknown));
        assert!(d.note.is_none());
        assert!(finished.try_recv().is_err());
        assert!(r.pokes.is_empty());
        assert!(upstream.accept().is_err(), "something reached the upstream");
    }
}
