//! The serial link layer of Concert, both sides: the terminal's (concertd's
//! line) and the register's (`concert -s`, and the relay to a serial
//! terminal). A `Link` reads and writes bytes on a port with deadlines;
//! `session` holds the half-duplex exchange (ENQ, STX blocks, ACK/NAK,
//! EOT) with its three tries. It knows nothing of requests or the worker:
//! whoever takes a frame decides whether it is ACKed.

pub mod port;
pub mod session;

pub use port::builder;

use crate::config::{Format, Parity};
use crate::logging::floodgate::{Floodgate, Kind, Source};
use crate::wire::pan;
use serialport::TTYPort;
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the link layer needs of a port: a real serial port, or a fake one
/// (the fuzz target's, the unit tests').
pub trait Port: Read + Write + Send {
    fn clear_input(&mut self) -> io::Result<()>;

    /// Drops what was written and not sent yet.
    fn clear_output(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Bytes written and not sent yet.
    fn pending_output(&self) -> io::Result<u32> {
        Ok(0)
    }

    /// A descriptor poll(2) can wait on for input; without one the line
    /// reads with a timeout instead.
    fn poll_fd(&self) -> Option<RawFd> {
        None
    }
}

impl Port for TTYPort {
    fn clear_input(&mut self) -> io::Result<()> {
        serialport::SerialPort::clear(self, serialport::ClearBuffer::Input).map_err(io::Error::from)
    }

    fn clear_output(&mut self) -> io::Result<()> {
        serialport::SerialPort::clear(self, serialport::ClearBuffer::Output)
            .map_err(io::Error::from)
    }

    fn pending_output(&self) -> io::Result<u32> {
        serialport::SerialPort::bytes_to_write(self).map_err(io::Error::from)
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.as_raw_fd())
    }
}

/// A write the other side would not let through in time: its input buffer
/// full, or CTS held low with `rtscts`. Not a device failure: the session
/// ends, the line stays open.
#[derive(Debug)]
pub struct Stalled {
    waited: Duration,
}

impl fmt::Display for Stalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the register does not read: output blocked for {:.1} s",
            self.waited.as_secs_f64()
        )
    }
}

impl std::error::Error for Stalled {}

/// Is this error a write that the other side did not let through?
pub fn is_stalled(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Stalled>())
}

/// What the kernel says when the other end of the device is gone (a USB
/// cable pulled out, a pty whose master closed) is said in words: poll(2)'s
/// POLLHUP reaches us as "Broken pipe", a write as EIO.
fn hung_up(e: io::Error) -> io::Error {
    let gone = e.kind() == io::ErrorKind::BrokenPipe
        || matches!(
            e.raw_os_error(),
            Some(libc::EIO | libc::EPIPE | libc::ENXIO)
        );
    if gone {
        io::Error::new(io::ErrorKind::BrokenPipe, "device hung up")
    } else {
        e
    }
}

/// How long a write may wait for the other side to take its bytes: the
/// time they take on the wire, plus `grace`.
#[derive(Clone, Copy, Debug)]
pub struct Patience {
    pub grace: Duration,
    /// Characters the line carries per second.
    pub rate: u32,
}

impl Patience {
    /// For a line at `speed` baud in `format`, each character framed by a
    /// start bit, its data bits, its parity bit and its stop bits.
    pub fn new(grace: Duration, speed: u32, format: Format) -> Patience {
        let parity = u32::from(format.parity != Parity::None);
        let bits = 1 + u32::from(format.data_bits) + parity + u32::from(format.stop_bits);
        Patience {
            grace,
            rate: (speed / bits.max(1)).max(1),
        }
    }

    /// The time `n` characters take on the wire.
    fn airtime(&self, n: usize) -> Duration {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        Duration::from_millis(n.saturating_mul(1000) / u64::from(self.rate.max(1)))
    }
}

impl Default for Patience {
    /// The registers' usual wait, at 9600 baud 7E1.
    fn default() -> Patience {
        Patience {
            grace: Duration::from_secs(3),
            rate: 960,
        }
    }
}

/// A wait of the link, named so that the log says which one fired (the
/// daemon names them after their keywords).
#[derive(Clone, Copy, Debug)]
pub struct Timer {
    pub wait: Duration,
    pub name: &'static str,
}

/// A port, the bytes read from it and not used yet, and the name the log
/// gives it.
pub struct Link {
    port: Box<dyn Port>,
    input: VecDeque<u8>,
    name: String,
    patience: Patience,
    /// Where the lines the other side can cause at will are counted; none
    /// on the register's side, which logs each.
    gate: Option<(Arc<Floodgate>, Source)>,
}

impl Link {
    pub fn new(port: Box<dyn Port>, name: impl Into<String>) -> Link {
        Link {
            port,
            input: VecDeque::new(),
            name: name.into(),
            patience: Patience::default(),
            gate: None,
        }
    }

    /// How long a write waits for the other side to take its bytes.
    pub fn with_patience(mut self, p: Patience) -> Link {
        self.patience = p;
        self
    }

    pub fn set_patience(&mut self, p: Patience) {
        self.patience = p;
    }

    /// The lines the other side causes go through `floodgate`, counted
    /// under this link's name.
    pub fn with_floodgate(mut self, floodgate: Arc<Floodgate>) -> Link {
        self.gate = Some((floodgate, Source::Line(self.name.as_str().into())));
        self
    }

    /// How the log names this link, e.g. `serial /dev/ttyUSB0`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Logs a line the other side can cause at will: through the
    /// floodgate when the link has one.
    pub fn flood(&self, kind: Kind, level: log::Level, line: impl FnOnce() -> String) {
        if !log::log_enabled!(level) {
            return;
        }
        match &self.gate {
            Some((gate, who)) => gate.note(who.clone(), kind, level, line),
            None => log::log!(level, "{}", line()),
        }
    }

    /// Writes `bytes` and waits until they are sent, for at most the time
    /// they take on the wire plus the patience's grace: a register that
    /// does not read (its buffer full, CTS low) cannot hold the line, and
    /// is told from a device that failed by the `Stalled` error.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let start = Instant::now();
        let until = start + self.patience.grace + self.patience.airtime(bytes.len());
        let stalled = || {
            io::Error::new(
                io::ErrorKind::TimedOut,
                Stalled {
                    waited: start.elapsed(),
                },
            )
        };
        let mut rest = bytes;
        while !rest.is_empty() {
            match self.port.write(rest) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::BrokenPipe, "device hung up")),
                Ok(n) => rest = &rest[n..],
                // The port's own write timeout is short (it is its read
                // timeout too): wait on until ours.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                            | io::ErrorKind::WouldBlock
                    ) =>
                {
                    if Instant::now() >= until {
                        return Err(stalled());
                    }
                }
                Err(e) => return Err(hung_up(e)),
            }
        }
        // Sent, not only queued, before a timer starts for the answer; not
        // tcdrain(3), which waits without a bound while CTS is low.
        loop {
            let queued = match self.port.pending_output().map_err(hung_up) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Err(e),
                // A device that cannot tell: its bytes were taken.
                Err(_) => 0,
            };
            if queued == 0 {
                return Ok(());
            }
            let now = Instant::now();
            if now >= until {
                return Err(stalled());
            }
            let nap = self
                .patience
                .airtime(queued as usize)
                .clamp(Duration::from_millis(1), Duration::from_millis(20));
            std::thread::sleep(nap.min(until - now));
        }
    }

    /// Forgets what either side had not taken yet: after a write that
    /// stalled, the next session starts clean both ways.
    pub fn discard(&mut self) {
        self.input.clear();
        // Best effort, as in `clear_input`.
        let _ = self.port.clear_input();
        let _ = self.port.clear_output();
    }

    /// Bytes already read and not used yet.
    pub fn has_input(&self) -> bool {
        !self.input.is_empty()
    }

    /// Puts a byte back, to be read again first.
    pub fn unread(&mut self, b: u8) {
        self.input.push_front(b);
    }

    /// Forgets what the other side sent before: a session starts clean.
    pub fn clear_input(&mut self) {
        self.input.clear();
        // A port that cannot flush its input still works: late bytes are
        // skipped by whoever waits for a given one.
        let _ = self.port.clear_input();
    }

    pub fn poll_fd(&self) -> Option<RawFd> {
        self.port.poll_fd()
    }

    /// The next byte, masked to 7 bits (parity is the line's business; a
    /// USB link opened 8N1 may still carry it), or `None` at `until`.
    pub fn byte(&mut self, until: Instant) -> io::Result<Option<u8>> {
        loop {
            if let Some(b) = self.input.pop_front() {
                return Ok(Some(b & 0x7f));
            }
            if Instant::now() >= until {
                return Ok(None);
            }
            let mut buf = [0u8; 256];
            match self.port.read(&mut buf) {
                // A tty that reads nothing after poll said it could: hung up.
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "device hung up",
                    ))
                }
                Ok(n) => self.input.extend(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(hung_up(e)),
            }
        }
    }

    /// Waits for one of `wanted`, skipping anything else, until `timer`
    /// fires.
    pub fn wait_for(&mut self, wanted: &[u8], timer: Timer) -> io::Result<Option<u8>> {
        let until = Instant::now() + timer.wait;
        while let Some(b) = self.byte(until)? {
            if wanted.contains(&b) {
                return Ok(Some(b));
            }
        }
        log::debug!("{}: {} fired", self.name, timer.name);
        Ok(None)
    }
}

/// A payload for the wire trace. V2 payloads are cut into their fields
/// first: their numeric header is one long run of digits that could pass
/// for a card number, while a card number in the REP field must be masked.
pub fn trace(payload: &[u8]) -> String {
    let cuts: &[usize] = match payload.len() {
        _ if payload.starts_with(b"CZ") => &[],
        26 => &[2, 10, 11, 12, 13, 16],
        28 => &[2, 10, 11, 12, 13, 16, 26, 27],
        34 => &[2, 10, 11, 12, 13, 16, 26, 30],
        25 => &[2, 3, 11, 12, 15],
        80 => &[2, 3, 11, 12, 67, 70],
        _ => &[],
    };
    if cuts.is_empty() {
        return pan::scrub(payload);
    }
    let mut fields = Vec::new();
    let mut start = 0;
    for &c in cuts.iter().chain(std::iter::once(&payload.len())) {
        fields.push(pan::scrub(&payload[start..c]));
        start = c;
    }
    fields.join("|")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// The other side's script: after a write starting with this byte,
    /// these bytes come.
    type Script = VecDeque<(u8, Vec<u8>)>;

    /// One side of an in-memory line: what the other side will send, as a
    /// script of replies to our writes, and everything we wrote.
    #[derive(Clone, Default)]
    pub struct Wire {
        pub written: Arc<Mutex<Vec<u8>>>,
        input: Arc<Mutex<VecDeque<u8>>>,
        /// For each write that ends with the given byte, what comes back.
        replies: Arc<Mutex<Script>>,
    }

    impl Wire {
        /// Bytes the other side has sent already.
        pub fn preload(&self, bytes: &[u8]) {
            self.input.lock().unwrap().extend(bytes);
        }

        /// Once we write a byte sequence starting with `after` (a control
        /// byte, or STX for a frame), the other side sends `bytes` (in the
        /// order of the script).
        pub fn on(&self, after: u8, bytes: &[u8]) {
            self.replies
                .lock()
                .unwrap()
                .push_back((after, bytes.to_vec()));
        }

        pub fn written(&self) -> Vec<u8> {
            self.written.lock().unwrap().clone()
        }

        pub fn link(&self) -> Link {
            Link::new(Box::new(self.clone()), "test")
        }
    }

    impl Read for Wire {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let mut input = self.input.lock().unwrap();
            if input.is_empty() {
                drop(input);
                // A real port's read timeout, short: the tests use short
                // timers and wait for nothing else.
                std::thread::sleep(Duration::from_millis(1));
                return Err(io::ErrorKind::TimedOut.into());
            }
            let n = buf.len().min(input.len());
            for b in buf.iter_mut().take(n) {
                *b = input.pop_front().unwrap_or_default();
            }
            Ok(n)
        }
    }

    impl Write for Wire {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.lock().unwrap().extend_from_slice(buf);
            let mut replies = self.replies.lock().unwrap();
            if let (Some(first), Some((after, _))) = (buf.first(), replies.front()) {
                if first == after {
                    let (_, bytes) = replies.pop_front().unwrap_or_default();
                    self.input.lock().unwrap().extend(bytes);
                }
            }
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Port for Wire {
        fn clear_input(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bytes_are_masked_to_seven_bits_and_read_back_in_order() {
        let w = Wire::default();
        w.preload(&[0x80 | b'A', b'B']);
        let mut l = w.link();
        let soon = Instant::now() + Duration::from_millis(50);
        assert_eq!(l.byte(soon).unwrap(), Some(b'A'));
        l.unread(b'Z');
        assert_eq!(l.byte(soon).unwrap(), Some(b'Z'));
        assert_eq!(l.byte(soon).unwrap(), Some(b'B'));
        assert_eq!(l.byte(Instant::now()).unwrap(), None);
    }

    #[test]
    fn wait_for_skips_other_bytes() {
        let w = Wire::default();
        w.preload(b"xy\x06");
        let mut l = w.link();
        let t = Timer {
            wait: Duration::from_millis(50),
            name: "t",
        };
        assert_eq!(l.wait_for(&[0x06], t).unwrap(), Some(0x06));
        assert_eq!(l.wait_for(&[0x06], t).unwrap(), None);
    }

    /// A port whose other side never reads: every write times out, as the
    /// port's own short timeout says, or the bytes taken stay queued.
    struct Deaf {
        queued: u32,
    }

    impl Read for Deaf {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::TimedOut.into())
        }
    }

    impl Write for Deaf {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.queued > 0 {
                return Ok(buf.len());
            }
            std::thread::sleep(Duration::from_millis(2));
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "Operation timed out",
            ))
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Port for Deaf {
        fn clear_input(&mut self) -> io::Result<()> {
            Ok(())
        }

        fn pending_output(&self) -> io::Result<u32> {
            Ok(self.queued)
        }
    }

    #[test]
    fn a_write_the_other_side_does_not_take_stalls_within_its_bound() {
        let grace = Duration::from_millis(60);
        // 4 characters at 100 a second: 40 ms on the wire.
        let p = Patience { grace, rate: 100 };
        for queued in [0, 4] {
            let mut l = Link::new(Box::new(Deaf { queued }), "test").with_patience(p);
            let t = Instant::now();
            let e = l.send(b"abcd").unwrap_err();
            let took = t.elapsed();
            assert!(is_stalled(&e), "{e}");
            assert!(e
                .to_string()
                .starts_with("the register does not read: output blocked for "));
            assert!(took >= Duration::from_millis(100), "{took:?}");
            assert!(took < Duration::from_secs(2), "{took:?}");
        }
        // A device error is not a stall.
        let other = io::Error::other("x");
        assert!(!is_stalled(&other));
    }

    #[test]
    fn hang_ups_are_said_in_words() {
        for e in [
            io::Error::new(io::ErrorKind::BrokenPipe, "Broken pipe"),
            io::Error::from_raw_os_error(libc::EIO),
            io::Error::from_raw_os_error(libc::EPIPE),
        ] {
            assert_eq!(hung_up(e).to_string(), "device hung up");
        }
        let e = hung_up(io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(e.raw_os_error(), Some(libc::EACCES));
    }

    #[test]
    fn airtime_follows_speed_and_format() {
        let f = Format::parse("7E1").unwrap();
        let p = Patience::new(Duration::ZERO, 9600, f);
        assert_eq!(p.rate, 960);
        assert_eq!(p.airtime(516), Duration::from_millis(537));
        let p = Patience::new(Duration::ZERO, 1200, Format::parse("8N2").unwrap());
        assert_eq!(p.rate, 109);
    }

    #[test]
    fn v2_traces_keep_amounts_and_mask_card_numbers() {
        // 0100001051110978 passes the Luhn check: it must not be masked.
        assert_eq!(
            trace(b"0100001051110978          A010B010"),
            "01|00001051|1|1|0|978|          |A010|B010"
        );
        let mut reply = b"01000001051".to_vec();
        reply.push(b'1');
        reply.extend_from_slice(b"4111111111111111");
        reply.extend_from_slice(&[b' '; 39]);
        reply.extend_from_slice(b"978          ");
        let t = trace(&reply);
        assert!(t.contains("|411111######1111"), "{t}");
    }
}
