//! The serial register of the oracle: the master side of a pty pair whose
//! slave concertd opens (`serial` in its configuration), playing a real
//! register's link layer (ENQ, ACK, STX..ETX+LRC, EOT) with a real
//! register's patience: it waits 1 s for the ACK of its frame, as
//! pyTeliumManager does, and counts a NAK or silence as "not taken".
//!
//! Silence is proved, not timed: the register gives up only once a look
//! at the line that began after its patience ran out found nothing there.
//! A byte on the line stays until read, so an ACK concertd wrote in time
//! is found by that look however late a loaded machine schedules the
//! harness (what a real register's read does too); such an ACK, found only
//! after the deadline, is counted (`late_looks`) and taken.
//! Nothing here panics on what concertd sends: a broken session is said
//! to the caller, which judges it.

use concert::wire::framing::{lrc, ACK, ENQ, EOT, ETB, ETX, NAK, STX};
use serialport::{SerialPort, TTYPort};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the register waits for concertd's ACK (to its ENQ, to its
/// frame) before it counts the request as not taken: pyTeliumManager's.
pub const ACK_PATIENCE: Duration = Duration::from_secs(1);

/// The daemon's link timers: the register answers at once, so they only
/// bound what a lost byte costs.
pub const TIMERS: &str = "serial-ack-timeout 1s\nserial-frame-timeout 1s\n\
    serial-eot-timeout 200ms\nserial-retry-pause 50ms\nserial-retry 100ms\n";

/// What the register made of its request session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Took {
    /// ACKed: the terminal took it.
    Ack,
    /// NAKed: not taken (busy, withdrawn).
    Nak,
    /// No ACK to the frame within ACK_PATIENCE: not taken, for the
    /// register.
    NoAck,
    /// No ACK to the ENQ within ACK_PATIENCE: the frame never went.
    Unsent,
}

pub struct Line {
    master: TTYPort,
    _slave: TTYPort,
    pub link: PathBuf,
    /// ACKs and NAKs found only by a look that began after the register's
    /// patience: the harness was not scheduled to look in time.
    pub late_looks: u64,
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![STX];
    f.extend_from_slice(payload);
    f.push(ETX);
    f.push(lrc(&f[1..]));
    f
}

impl Line {
    pub fn new(dir: &Path) -> Line {
        let link = dir.join("tty");
        let (mut master, slave) = crate::util::pty_pair(&link);
        master
            .set_timeout(Duration::from_millis(5))
            .expect("pty timeout");
        Line {
            master,
            _slave: slave,
            link,
            late_looks: 0,
        }
    }

    /// The `serial` configuration lines.
    pub fn config(&self) -> String {
        format!("serial {}\n{TIMERS}", self.link.display())
    }

    fn send(&mut self, b: &[u8]) {
        let _ = self.master.write_all(b);
        let _ = self.master.flush();
    }

    fn byte_within(&mut self, d: Duration) -> Option<u8> {
        let until = Instant::now() + d;
        let mut b = [0u8; 1];
        loop {
            if let Ok(1) = self.master.read(&mut b) {
                return Some(b[0]);
            }
            if Instant::now() >= until {
                return None;
            }
        }
    }

    /// Bytes left on the line (a session cut by a restart): dropped.
    pub fn drain(&mut self) {
        while self.byte_within(Duration::ZERO).is_some() {}
    }

    /// The register's session: ENQ, its ACK, the frame, its ACK or NAK,
    /// EOT after an ACK. Bytes other than those awaited are ignored, as a
    /// register does.
    pub fn request(&mut self, payload: &[u8]) -> Took {
        self.drain();
        self.send(&[ENQ]);
        if self.awaits(&[ACK], ACK_PATIENCE).is_none() {
            self.send(&[EOT]);
            return Took::Unsent;
        }
        self.send(&frame(payload));
        match self.awaits(&[ACK, NAK], ACK_PATIENCE) {
            Some(ACK) => {
                self.send(&[EOT]);
                Took::Ack
            }
            Some(_) => Took::Nak,
            None => {
                self.send(&[EOT]);
                Took::NoAck
            }
        }
    }

    /// concertd's ACK or NAK to a frame the register gave up on, within
    /// `d` (only a broken terminal says neither).
    pub fn late_word(&mut self, d: Duration) -> Option<u8> {
        let until = Instant::now() + d;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let b = self.byte_within(left)?;
            if b == ACK || b == NAK {
                return Some(b);
            }
        }
    }

    /// The first of `want` on the line within `d`, others ignored: None
    /// only once a look that began at or after the deadline found the
    /// line empty, so that nothing wanted was there in time.
    fn awaits(&mut self, want: &[u8], d: Duration) -> Option<u8> {
        let until = Instant::now() + d;
        let mut b = [0u8; 1];
        loop {
            let look = Instant::now();
            match self.master.read(&mut b) {
                Ok(1) if want.contains(&b[0]) => {
                    if look >= until {
                        self.late_looks += 1;
                    }
                    return Some(b[0]);
                }
                Ok(1) => {}
                // Interrupted (EINTR: the harness stopped and continued,
                // signal(7)) is no look at the line.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                _ if look >= until => return None,
                _ => {}
            }
        }
    }

    /// The terminal's session with the answer: ACKs its ENQ and its
    /// frames (or, `refuse`, NAKs every frame: the register lost it),
    /// joins ETB blocks, until its EOT after the last frame. Waits for
    /// the ENQ while `more()` says so. The payload, or None (no session,
    /// refused, or broken: `Err` says how).
    pub fn answer(
        &mut self,
        refuse: bool,
        mut more: impl FnMut() -> bool,
    ) -> Result<Option<Vec<u8>>, String> {
        let mut payload = Vec::new();
        let mut done: Option<Vec<u8>> = None;
        let mut naks = 0;
        loop {
            let Some(b) = self.byte_within(Duration::from_millis(20)) else {
                if done.is_none() && more() {
                    continue;
                }
                return Ok(done);
            };
            match b {
                ENQ => {
                    payload.clear();
                    self.send(&[ACK]);
                }
                STX => {
                    let start = payload.len();
                    let end = loop {
                        match self.byte_within(Duration::from_secs(3)) {
                            Some(e @ (ETX | ETB)) => break e,
                            Some(b) if payload.len() - start < 600 => payload.push(b),
                            Some(_) => return Err("frame over 600 bytes".into()),
                            None => return Err("frame cut".into()),
                        }
                    };
                    let Some(got) = self.byte_within(Duration::from_secs(3)) else {
                        return Err("no LRC".into());
                    };
                    if got != lrc(&payload[start..]) ^ end {
                        return Err(format!("bad LRC 0x{got:02x}"));
                    }
                    if refuse {
                        naks += 1;
                        payload.truncate(start);
                        self.send(&[NAK]);
                        continue;
                    }
                    self.send(&[ACK]);
                    if end == ETX {
                        done = Some(std::mem::take(&mut payload));
                    }
                }
                EOT if done.is_some() || (refuse && naks >= 3) => return Ok(done),
                // The end of a try without a frame (the terminal tries
                // again), or noise: a register ignores it.
                _ => {}
            }
        }
    }
}
