//! The serial link layer of Concert, both sides: the terminal's (concertd's
//! line) and the register's (`concert -s`, and the relay to a serial
//! terminal). A `Link` reads and writes bytes on a port with deadlines;
//! `session` holds the half-duplex exchange (ENQ, STX blocks, ACK/NAK,
//! EOT) with its three tries. It knows nothing of requests or the worker:
//! whoever takes a frame decides whether it is ACKed.

pub mod port;
pub mod session;

pub use port::builder;

use crate::pan;
use serialport::TTYPort;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// What the link layer needs of a port: a real serial port, or a fake one
/// (the fuzz target's, the unit tests').
pub trait Port: Read + Write + Send {
    fn clear_input(&mut self) -> io::Result<()>;

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

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.as_raw_fd())
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
}

impl Link {
    pub fn new(port: Box<dyn Port>, name: impl Into<String>) -> Link {
        Link {
            port,
            input: VecDeque::new(),
            name: name.into(),
        }
    }

    /// How the log names this link, e.g. `serial /dev/ttyUSB0`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.port.write_all(bytes)?;
        self.port.flush()
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
                Err(e) => return Err(e),
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
