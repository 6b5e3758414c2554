//! Log lines a peer can cause at will (connections refused, bad
//! requests, a serial line's bad frames, noise and link errors) are
//! summarised: per address or line, the first few in a minute are logged
//! in full, the rest counted and logged as one line when the minute is
//! over. A flood then costs a line a minute, not a line a connection or a
//! frame. At `-vv` every one is logged, for an integrator debugging a
//! register.
//!
//! One thread writes the summaries; it sleeps without a timeout while no
//! count is pending, so an idle terminal has no wakeup for it.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Logged in full per address, per kind, per window.
pub const SHOWN: u32 = 3;
/// Findings logged in full per address per window: more than there are
/// kinds of finding, so that one register's are all told.
pub const FINDINGS_SHOWN: u32 = 20;
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses counted one by one; past this they share one count.
pub const MAX_ADDRESSES: usize = 1024;
const KINDS: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A connection closed at once: allow-list, connection caps.
    Refused,
    /// A request answered as malformed, a bad V2 frame, bytes after a
    /// request; on a serial line, a frame NAKed or a request not complete
    /// in time.
    BadRequest,
    /// A serial line's link going wrong: an ACK or EOT that does not come,
    /// a NAK to our frame, a register that does not read.
    LinkError,
    /// Bytes on an idle serial line that start nothing (debug level).
    Noise,
    /// A register's mistake seen the first time (`concertctl registers`):
    /// once per register and kind, but registers come and go.
    Finding,
}

impl Kind {
    fn index(self) -> usize {
        match self {
            Kind::Refused => 0,
            Kind::BadRequest => 1,
            Kind::LinkError => 2,
            Kind::Noise => 3,
            Kind::Finding => 4,
        }
    }

    /// Lines of this kind logged in full per address per window.
    fn shown(self) -> u32 {
        match self {
            Kind::Finding => FINDINGS_SHOWN,
            _ => SHOWN,
        }
    }

    /// How the summary counts them.
    fn plural(i: usize) -> &'static str {
        [
            "connections refused",
            "bad requests",
            "link errors",
            "stray bytes",
            "findings",
        ][i]
    }
}

/// Who caused a line: a client's address, or a serial line by its name in
/// the log (`serial /dev/ttyUSB0`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    Peer(IpAddr),
    Line(Arc<str>),
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Source {
        Source::Peer(ip)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Peer(ip) => ip.fmt(f),
            Source::Line(name) => f.write_str(name),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Window {
    since: Instant,
    shown: [u32; KINDS],
    hidden: [u64; KINDS],
}

impl Window {
    fn new(since: Instant) -> Window {
        Window {
            since,
            shown: [0; KINDS],
            hidden: [0; KINDS],
        }
    }

    fn pending(&self) -> bool {
        self.hidden != [0; KINDS]
    }
}

#[derive(Default)]
struct State {
    by_address: HashMap<Source, Window>,
    /// Addresses past `MAX_ADDRESSES`: one window for them all.
    others: Option<Window>,
    stopped: bool,
}

#[derive(Default)]
pub struct Floodgate {
    state: Mutex<State>,
    wake: Condvar,
    /// Every one since start, logged or not (`concertctl status`).
    counts: [std::sync::atomic::AtomicU64; KINDS],
}

/// The summary of one window's hidden counts.
fn summary(who: &str, w: &Window, now: Instant) -> String {
    let secs = now.saturating_duration_since(w.since).as_secs().max(1);
    let parts: Vec<String> = (0..KINDS)
        .filter(|&i| w.hidden[i] > 0)
        .map(|i| format!("{} more {}", w.hidden[i], Kind::plural(i)))
        .collect();
    format!(
        "{who}: {} in {secs} s (the first ones logged in full; -vv logs each)",
        parts.join(", ")
    )
}

impl Floodgate {
    /// The floodgate and its summary thread.
    pub fn start() -> std::io::Result<Arc<Floodgate>> {
        let f = Arc::new(Floodgate::default());
        let g = Arc::clone(&f);
        std::thread::Builder::new()
            .name("log-summary".into())
            .spawn(move || g.summarise())?;
        Ok(f)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Logs `line` at `level` unless `who` has had its share this minute;
    /// then it is only counted.
    pub fn note(
        &self,
        who: impl Into<Source>,
        kind: Kind,
        level: log::Level,
        line: impl FnOnce() -> String,
    ) {
        self.counts[kind.index()].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if log::log_enabled!(log::Level::Trace) {
            let l = line();
            log::log!(level, "{l}");
            return;
        }
        let now = Instant::now();
        let mut guard = self.lock();
        let st = &mut *guard;
        let who = who.into();
        let counted = st.by_address.len() < MAX_ADDRESSES || st.by_address.contains_key(&who);
        let w = if counted {
            st.by_address.entry(who.clone()).or_insert(Window::new(now))
        } else {
            st.others.get_or_insert(Window::new(now))
        };
        if now.saturating_duration_since(w.since) >= WINDOW {
            // The summary thread has not got to it yet: say it now.
            if w.pending() {
                log::warn!("{}", summary(&who.to_string(), w, now));
            }
            *w = Window::new(now);
        }
        let k = kind.index();
        if w.shown[k] < kind.shown() {
            w.shown[k] += 1;
            drop(guard);
            let l = line();
            log::log!(level, "{l}");
            return;
        }
        let was_pending = w.pending();
        w.hidden[k] += 1;
        if !was_pending {
            self.wake.notify_one();
        }
    }

    /// How many of `kind` since start.
    pub fn count(&self, kind: Kind) -> u64 {
        self.counts[kind.index()].load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Logs every pending count now (at stop).
    pub fn flush(&self) {
        let now = Instant::now();
        let mut st = self.lock();
        st.stopped = true;
        for (who, w) in st.by_address.drain() {
            if w.pending() {
                log::warn!("{}", summary(&who.to_string(), &w, now));
            }
        }
        if let Some(w) = st.others.take().filter(Window::pending) {
            log::warn!("{}", summary("other addresses", &w, now));
        }
        self.wake.notify_one();
    }

    /// Writes each window's summary when it ends; sleeps while nothing is
    /// pending.
    fn summarise(&self) {
        let mut st = self.lock();
        loop {
            if st.stopped {
                return;
            }
            let now = Instant::now();
            let due = st
                .by_address
                .values()
                .chain(st.others.iter())
                .filter(|w| w.pending())
                .map(|w| w.since + WINDOW)
                .min();
            let Some(due) = due else {
                // Windows with nothing hidden expire when next used.
                st.by_address
                    .retain(|_, w| now.saturating_duration_since(w.since) < WINDOW);
                st = self.wake.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            };
            if due > now {
                st = match self.wake.wait_timeout(st, due - now) {
                    Ok((g, _)) => g,
                    Err(p) => p.into_inner().0,
                };
                continue;
            }
            let ended = |w: &Window| now.saturating_duration_since(w.since) >= WINDOW;
            let mut lines = Vec::new();
            st.by_address.retain(|who, w| {
                if !ended(w) {
                    return true;
                }
                if w.pending() {
                    lines.push(summary(&who.to_string(), w, now));
                }
                false
            });
            if let Some(w) = st.others.filter(|w| ended(w)) {
                if w.pending() {
                    lines.push(summary("other addresses", &w, now));
                }
                st.others = None;
            }
            drop(st);
            for l in lines {
                log::warn!("{l}");
            }
            st = self.lock();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_says_what_it_hid() {
        let t = Instant::now();
        let mut w = Window::new(t);
        assert!(!w.pending());
        w.hidden = [1995, 0, 0, 0, 0];
        let s = summary("127.0.0.2", &w, t + WINDOW);
        assert!(
            s.starts_with("127.0.0.2: 1995 more connections refused in 60 s"),
            "{s}"
        );
        w.hidden = [3, 1200, 0, 0, 0];
        let s = summary("127.0.0.2", &w, t + WINDOW);
        assert!(
            s.contains("3 more connections refused, 1200 more bad requests"),
            "{s}"
        );
        w.hidden = [0, 1200, 7, 2, 0];
        let s = summary("serial /dev/ttyUSB0", &w, t + WINDOW);
        assert!(
            s.starts_with(
                "serial /dev/ttyUSB0: 1200 more bad requests, 7 more link errors, \
                 2 more stray bytes in 60 s"
            ),
            "{s}"
        );
    }

    #[test]
    fn counts_past_the_first_few_and_bounds_addresses() {
        let f = Floodgate::default();
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let mut logged = 0;
        for _ in 0..100 {
            f.note(ip, Kind::Refused, log::Level::Warn, || {
                logged += 1;
                String::new()
            });
        }
        assert_eq!(logged, SHOWN);
        let st = f.lock();
        assert_eq!(
            st.by_address[&Source::Peer(ip)].hidden,
            [100 - u64::from(SHOWN), 0, 0, 0, 0]
        );
        drop(st);
        for i in 0..(MAX_ADDRESSES as u32 + 10) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            f.note(ip, Kind::BadRequest, log::Level::Info, String::new);
        }
        let st = f.lock();
        assert_eq!(st.by_address.len(), MAX_ADDRESSES);
        assert!(st.others.is_some());
    }
}
