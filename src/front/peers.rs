//! Who holds the TCP connections, by client address, so that one peer
//! cannot take them all: past `max-connections-per-peer` a peer's new
//! connections are closed at once, and when `max-connections` is reached,
//! a peer holding fewer connections than the busiest one takes the place
//! of the busiest one's oldest connection that has not sent a whole
//! request yet (an idle one: a register waiting for its answer is never
//! cut off).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// One connection as the table knows it.
pub struct Conn {
    peer: SocketAddr,
    since: Instant,
    fd: RawFd,
    /// A whole request came: it is being answered, never displaced.
    requested: AtomicBool,
    /// Another peer took its place: its thread stops quietly.
    displaced: AtomicBool,
}

#[derive(Default)]
struct Table {
    by_peer: HashMap<IpAddr, Vec<Arc<Conn>>>,
    total: usize,
}

/// What became of a new connection.
pub enum Admission {
    Admitted(Held),
    /// Its peer already holds `max-connections-per-peer`.
    PeerFull(usize),
    /// `max-connections` reached and nobody to displace.
    Full(usize),
}

#[derive(Default)]
pub struct Peers {
    table: Mutex<Table>,
    /// Connections open, for the state report.
    pub active: AtomicUsize,
}

/// A connection's place in the table, given back when dropped. The socket
/// must outlive it: the table may shut the socket down while it is held.
pub struct Held {
    peers: Arc<Peers>,
    conn: Arc<Conn>,
    /// The connection this one displaced, for the log.
    pub displaced: Option<SocketAddr>,
}

impl Held {
    /// A whole request came: from now on this connection is not displaced.
    pub fn requested(&self) {
        self.conn.requested.store(true, Ordering::SeqCst);
    }

    pub fn is_displaced(&self) -> bool {
        self.conn.displaced.load(Ordering::SeqCst)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut t = self.peers.lock();
        let ip = self.conn.peer.ip();
        let Some(list) = t.by_peer.get_mut(&ip) else {
            return;
        };
        let Some(i) = list.iter().position(|c| Arc::ptr_eq(c, &self.conn)) else {
            // Displaced: already out of the table.
            return;
        };
        list.remove(i);
        if list.is_empty() {
            t.by_peer.remove(&ip);
        }
        t.total -= 1;
        self.peers.active.store(t.total, Ordering::Relaxed);
    }
}

impl Peers {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place for a new connection from `peer` on socket `fd`, or
    /// says why not.
    pub fn admit(
        self: &Arc<Self>,
        peer: SocketAddr,
        fd: RawFd,
        max: usize,
        per_peer: usize,
    ) -> Admission {
        let mut t = self.lock();
        let mine = t.by_peer.get(&peer.ip()).map_or(0, Vec::len);
        if mine >= per_peer {
            return Admission::PeerFull(mine);
        }
        let mut displaced = None;
        if t.total >= max {
            let Some(victim) = take_place(&mut t, mine) else {
                return Admission::Full(t.total);
            };
            victim.displaced.store(true, Ordering::SeqCst);
            // SAFETY: the fd is open: its owner drops its `Held` (taking
            // this table's lock) before it closes the socket, and we hold
            // the lock. shutdown(2) wakes the owner's blocked read.
            unsafe { libc::shutdown(victim.fd, libc::SHUT_RDWR) };
            displaced = Some(victim.peer);
            t.total -= 1;
        }
        let conn = Arc::new(Conn {
            peer,
            since: Instant::now(),
            fd,
            requested: AtomicBool::new(false),
            displaced: AtomicBool::new(false),
        });
        t.by_peer
            .entry(peer.ip())
            .or_default()
            .push(Arc::clone(&conn));
        t.total += 1;
        self.active.store(t.total, Ordering::Relaxed);
        Admission::Admitted(Held {
            peers: Arc::clone(self),
            conn,
            displaced,
        })
    }
}

/// Takes out of the table the connection a newcomer holding `mine`
/// connections displaces: the oldest idle one of the busiest peer, when
/// that peer holds more than the newcomer.
fn take_place(t: &mut Table, mine: usize) -> Option<Arc<Conn>> {
    let (ip, list) = t
        .by_peer
        .iter_mut()
        .filter(|(_, l)| l.len() > mine)
        .filter(|(_, l)| l.iter().any(|c| !c.requested.load(Ordering::SeqCst)))
        .max_by_key(|(_, l)| l.len())?;
    let ip = *ip;
    let i = list
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.requested.load(Ordering::SeqCst))
        .min_by_key(|(_, c)| c.since)
        .map(|(i, _)| i)?;
    let victim = list.remove(i);
    if list.is_empty() {
        t.by_peer.remove(&ip);
    }
    Some(victim)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(ip: &str, port: u16) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), port)
    }

    fn held(a: Admission) -> Held {
        match a {
            Admission::Admitted(h) => h,
            Admission::PeerFull(n) => panic!("peer full at {n}"),
            Admission::Full(n) => panic!("full at {n}"),
        }
    }

    #[test]
    fn one_peer_cannot_take_every_place() {
        let p = Arc::new(Peers::default());
        // fd -1: shutdown(2) fails harmlessly, the table is what is tested.
        let hog: Vec<Held> = (0..4)
            .map(|i| held(p.admit(addr("127.0.0.2", 1000 + i), -1, 4, 8)))
            .collect();
        hog[0].requested();
        assert!(matches!(
            p.admit(addr("127.0.0.2", 2000), -1, 4, 8),
            Admission::Full(4)
        ));
        // A register displaces the hog's oldest idle connection, not the
        // one that is being answered.
        let r = held(p.admit(addr("127.0.0.3", 1), -1, 4, 8));
        assert_eq!(r.displaced, Some(addr("127.0.0.2", 1001)));
        assert!(hog[1].is_displaced() && !hog[0].is_displaced());
        assert_eq!(p.active.load(Ordering::Relaxed), 4);
        // Its owner lets go: counted once.
        drop(hog);
        assert_eq!(p.active.load(Ordering::Relaxed), 1);
        drop(r);
        assert_eq!(p.active.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn per_peer_cap_and_fair_displacement() {
        let p = Arc::new(Peers::default());
        let a: Vec<Held> = (0..2)
            .map(|i| held(p.admit(addr("127.0.0.2", i), -1, 4, 2)))
            .collect();
        assert!(matches!(
            p.admit(addr("127.0.0.2", 9), -1, 4, 2),
            Admission::PeerFull(2)
        ));
        let b: Vec<Held> = (0..2)
            .map(|i| held(p.admit(addr("127.0.0.3", i), -1, 4, 2)))
            .collect();
        // Full; the newcomer holds none, the busiest two: displaced.
        let c = held(p.admit(addr("127.0.0.4", 1), -1, 4, 2));
        assert!(c.displaced.is_some());
        // 127.0.0.4 holds one, the busiest (the other of .2 and .3) two:
        // that one gives one up.
        let c2 = held(p.admit(addr("127.0.0.4", 2), -1, 4, 2));
        let (x, y) = (c.displaced.unwrap(), c2.displaced.unwrap());
        assert_ne!(x.ip(), y.ip());
        assert_eq!((x.port(), y.port()), (0, 0), "the oldest go first");
        assert!(matches!(
            p.admit(addr("127.0.0.4", 3), -1, 4, 2),
            Admission::PeerFull(2)
        ));
        // .2 and .3 hold one each, .4 two: a newcomer takes .4's oldest.
        let e = held(p.admit(addr("127.0.0.5", 1), -1, 4, 2));
        assert_eq!(e.displaced, Some(addr("127.0.0.4", 1)));
        // Everyone holds one: a second from .5 finds nobody busier.
        assert!(matches!(
            p.admit(addr("127.0.0.5", 2), -1, 4, 2),
            Admission::Full(4)
        ));
        drop((a, b, c, c2, e));
        assert_eq!(p.active.load(Ordering::Relaxed), 0);
    }
}
