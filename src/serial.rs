//! The serial line, terminal side. One thread owns the port and drives the
//! half-duplex link layer of Concert: the register opens a session with
//! ENQ, sends STX payload ETX LRC, and closes with EOT; when the answer is
//! ready the terminal opens its own session the same way. Requests go to
//! the same worker as TCP, so the one-transaction rule holds across both.

use crate::answer;
use crate::assemble::{Assembler, Progress};
use crate::config::{Serial as Settings, SerialProtocol};
use crate::framing::{lrc, ACK, ENQ, EOT, ETB, ETX, NAK, STX};
use crate::pan;
pub use crate::port::open_port;
use crate::request::{self, Request};
use crate::tlv::{tags, Frame};
use crate::v2::{self, V2Request};
use crate::worker::{Channel, Decision, Handle, Origin, Reply};
use crossbeam_channel::{Receiver, Sender};
use serialport::{SerialPort, TTYPort};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most data bytes a frame may carry on a serial line.
pub const MAX_FRAME: usize = 512;
/// How often the idle line looks for a finished transaction to answer.
const POLL: Duration = Duration::from_millis(20);
/// Sessions are retried this many times (ENQ, frame, bad request frames).
const TRIES: u32 = 3;

/// The link timers, named after their keywords so that the log says which
/// one fired.
#[derive(Clone, Copy, Debug)]
enum Timer {
    Ack,
    Frame,
    Eot,
}

impl Timer {
    fn keyword(self) -> &'static str {
        match self {
            Timer::Ack => "serial-ack-timeout",
            Timer::Frame => "serial-frame-timeout",
            Timer::Eot => "serial-eot-timeout",
        }
    }
}

/// The part of the configuration the serial thread follows; a reload sends
/// a new one.
#[derive(Clone, Debug, PartialEq)]
pub struct Conf {
    pub settings: Settings,
    pub currencies: Vec<u16>,
    /// Silence that ends a raw (unframed) V3 request.
    pub request_gap: Duration,
}

/// What the serial thread needs.
pub struct Context {
    pub conf: Conf,
    pub updates: Receiver<Conf>,
    /// Rung with each update, so that an idle line blocked in poll(2)
    /// takes it.
    pub bell: Arc<Bell>,
    pub worker: Handle,
}

/// A pipe that wakes the serial thread out of poll(2): the thread blocks
/// on its device and on this, with no timeout, while nothing is pending.
pub struct Bell {
    read: OwnedFd,
    write: OwnedFd,
}

impl Bell {
    pub fn new() -> io::Result<Bell> {
        let mut fds = [0; 2];
        // SAFETY: pipe2(2) fills two descriptors this struct then owns.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just opened and belong to nobody.
        Ok(unsafe {
            Bell {
                read: OwnedFd::from_raw_fd(fds[0]),
                write: OwnedFd::from_raw_fd(fds[1]),
            }
        })
    }

    pub fn ring(&self) {
        // A full pipe is already ringing.
        // SAFETY: write(2) of one byte to our own pipe.
        let _ = unsafe { libc::write(self.write.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
    }

    fn drain(&self) {
        let mut buf = [0u8; 64];
        // SAFETY: read(2) into a buffer of that size, non-blocking.
        while unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {
        }
    }
}

/// The service's side: new configurations for the serial thread.
pub struct Updates {
    tx: Sender<Conf>,
    bell: Arc<Bell>,
}

impl Updates {
    pub fn send(&self, c: Conf) {
        let _ = self.tx.send(c);
        self.bell.ring();
    }
}

/// How a request came, so that its answer goes back the same way.
enum Kind {
    V2(V2Request),
    V3,
    /// V3 with no link layer at all, as one public client sends it.
    Raw,
}

/// A transaction accepted on this line whose answer is not ready yet.
struct Waiting {
    reply: Receiver<Reply>,
    kind: Kind,
    /// Its answer rings the bell: the line may sleep until it comes.
    rung: bool,
}

enum Rx {
    Good(Vec<u8>),
    Bad(String),
    Eot,
    Silence,
}

/// Starts the serial thread; what it returns sends it new configurations.
/// The service starts it only once a configuration names a device.
pub fn spawn(conf: Conf, worker: Handle) -> io::Result<Updates> {
    let (tx, updates) = crossbeam_channel::unbounded();
    let bell = Arc::new(Bell::new()?);
    let ctx = Context {
        conf,
        updates,
        bell: Arc::clone(&bell),
        worker,
    };
    std::thread::Builder::new()
        .name("serial".into())
        .spawn(move || run(ctx))?;
    Ok(Updates { tx, bell })
}

/// The line's own port: a tty whose descriptor poll(2) can wait on.
fn open(s: &Settings, path: &str) -> serialport::Result<TTYPort> {
    crate::port::builder(path, s.speed, s.format, s.rtscts, POLL).open_native()
}

/// The settings that need the device opened again when they change.
fn port_settings(s: &Settings) -> (Option<std::path::PathBuf>, u32, String, bool) {
    (s.device.clone(), s.speed, s.format.to_string(), s.rtscts)
}

/// Opens the device, serves it until it fails or its settings change, and
/// opens it again every `serial-retry`: a USB cable pulled out and plugged
/// back is picked up. Without a device it waits for a reload that names one.
fn run(ctx: Context) {
    let Context {
        mut conf,
        updates,
        bell,
        worker,
    } = ctx;
    let mut reported = false;
    let mut waiting: Vec<Waiting> = Vec::new();
    loop {
        let Some(device) = conf.settings.device.clone() else {
            match updates.recv() {
                Ok(c) => conf = c,
                Err(_) => return,
            }
            continue;
        };
        let path = device.display().to_string();
        match open(&conf.settings, &path) {
            Ok(port) => {
                reported = false;
                log::info!(
                    "serial {path}: open, {} baud {}{}",
                    conf.settings.speed,
                    conf.settings.format,
                    if conf.settings.rtscts { " rtscts" } else { "" }
                );
                let mut line = Line {
                    port: Box::new(port),
                    conf: conf.clone(),
                    updates: &updates,
                    bell: Some(&bell),
                    worker: &worker,
                    path: &path,
                    input: VecDeque::new(),
                    waiting: std::mem::take(&mut waiting),
                };
                let e = line.serve();
                waiting = std::mem::take(&mut line.waiting);
                let changed = line.conf != conf;
                conf = line.conf;
                if changed {
                    log::info!("serial {path}: closed for the new configuration ({e})");
                    continue;
                }
                log::warn!(
                    "serial {path}: {e}; trying to open it again every {}",
                    crate::config::fmt_duration(conf.settings.retry)
                );
            }
            Err(e) if !reported => {
                log::warn!(
                    "serial {path}: cannot open: {e}; trying again every {}",
                    crate::config::fmt_duration(conf.settings.retry)
                );
                reported = true;
            }
            Err(_) => {}
        }
        // Wait for the retry, or for a new configuration.
        if let Ok(c) = updates.recv_timeout(conf.settings.retry) {
            conf = c;
        }
    }
}

/// What the link layer needs of a port: a real serial port, or the fake
/// one the fuzz target feeds.
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
        self.clear(serialport::ClearBuffer::Input)
            .map_err(io::Error::from)
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.as_raw_fd())
    }
}

struct Line<'a> {
    port: Box<dyn Port>,
    conf: Conf,
    updates: &'a Receiver<Conf>,
    bell: Option<&'a Arc<Bell>>,
    worker: &'a Handle,
    path: &'a str,
    input: VecDeque<u8>,
    /// Transactions accepted on this line whose answer is not sent yet
    /// (the register may send a new request before fetching an answer).
    waiting: Vec<Waiting>,
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

/// Serves one port until it fails, with this configuration: for the fuzz
/// target, which passes a fake port that fails once its bytes are read.
#[doc(hidden)]
pub fn serve_port(port: Box<dyn Port>, conf: Conf, worker: &Handle, path: &str) -> io::Error {
    let (_keep, updates) = crossbeam_channel::unbounded();
    let mut line = Line {
        port,
        conf,
        updates: &updates,
        bell: None,
        worker,
        path,
        input: VecDeque::new(),
        waiting: Vec::new(),
    };
    line.serve()
}

/// Is this the worker's busy answer (`AE=01`, no AF) to a transaction?
fn is_busy(req: &Request, reply: &Reply) -> bool {
    reply.tx.is_none()
        && req.op.occupies_terminal()
        && reply.frame.get(tags::AE) == Some(b"01")
        && !reply.frame.has(tags::AF)
}

impl Line<'_> {
    fn origin(&self, v2: bool) -> Origin {
        Origin {
            channel: Channel::Serial,
            peer: self.path.to_string(),
            v2,
        }
    }

    /// The next byte, masked to 7 bits (parity is the line's business; a
    /// USB link opened 8N1 may still carry it), or `None` at `until`.
    fn byte(&mut self, until: Instant) -> io::Result<Option<u8>> {
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

    /// The answer of a transaction, rung in: a small thread waits for it
    /// and rings the bell, so that the line can sleep in poll(2) meanwhile
    /// (true). Without a bell (the fuzz target's fake port) or a thread,
    /// the line polls for it (false).
    fn forward(&self, reply: Receiver<Reply>) -> (Receiver<Reply>, bool) {
        let Some(bell) = self.bell.cloned() else {
            return (reply, false);
        };
        let (tx, rx) = crossbeam_channel::bounded(2);
        // The receiver goes over only once the thread exists, so that it
        // stays ours if it cannot be started.
        let (give, given) = crossbeam_channel::bounded::<Receiver<Reply>>(1);
        let spawned = std::thread::Builder::new()
            .name("serial-answer".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let Ok(reply) = given.recv() else { return };
                for r in reply.iter() {
                    if tx.send(r).is_err() {
                        break;
                    }
                    bell.ring();
                }
                // Closed without an answer (not journaled): said too.
                drop(tx);
                bell.ring();
            });
        match spawned {
            Ok(_) => {
                let _ = give.send(reply);
                (rx, true)
            }
            Err(e) => {
                log::warn!("serial {}: cannot start a thread ({e}): polling", self.path);
                (reply, false)
            }
        }
    }

    /// No input pending: blocks, with no timeout, until the register sends
    /// a byte (true), or the bell rings for a new configuration or an
    /// answer (false).
    fn sleep(&mut self) -> io::Result<bool> {
        let (Some(fd), Some(bell)) = (self.port.poll_fd(), self.bell) else {
            return Ok(true);
        };
        let mut fds = [
            libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: bell.read.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll(2) on two valid descriptors, no timeout.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            };
        }
        if fds[1].revents != 0 {
            bell.drain();
            return Ok(fds[0].revents != 0);
        }
        // Input, or a hang-up or error that the read reports.
        Ok(true)
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.port.write_all(bytes)?;
        self.port.flush()
    }

    /// Waits for one of `wanted`, ignoring anything else, until `timer`.
    fn wait_for(&mut self, wanted: &[u8], timer: Timer, d: Duration) -> io::Result<Option<u8>> {
        let until = Instant::now() + d;
        while let Some(b) = self.byte(until)? {
            if wanted.contains(&b) {
                return Ok(Some(b));
            }
        }
        log::debug!("serial {}: {} fired", self.path, timer.keyword());
        Ok(None)
    }

    fn serve(&mut self) -> io::Error {
        match self.serve_inner() {
            Ok(()) => io::Error::other("stopped"),
            Err(e) => e,
        }
    }

    fn serve_inner(&mut self) -> io::Result<()> {
        loop {
            self.answer_if_ready()?;
            // A reload applies between link sessions.
            if let Some(c) = self.updates.try_iter().last() {
                let reopen = port_settings(&c.settings) != port_settings(&self.conf.settings);
                self.conf = c;
                if reopen {
                    return Err(io::Error::other("device settings changed"));
                }
            }
            let may_sleep = self.waiting.iter().all(|w| w.rung);
            if self.input.is_empty() && may_sleep && !self.sleep()? {
                continue;
            }
            let Some(b) = self.byte(Instant::now() + POLL)? else {
                continue;
            };
            match b {
                ENQ => {
                    self.send(&[ACK])?;
                    self.session()?;
                }
                b'C' if self.conf.settings.protocol != SerialProtocol::V2 => {
                    match self.byte(Instant::now() + self.conf.settings.frame_timeout)? {
                        Some(b'Z') => self.raw()?,
                        Some(other) => {
                            // Not a raw request: look at that byte again
                            // (it may be the ENQ of a session).
                            self.input.push_front(other);
                            log::debug!("serial {}: stray byte 0x43 ignored", self.path);
                        }
                        None => log::debug!("serial {}: stray byte 0x43 ignored", self.path),
                    }
                }
                b => log::debug!("serial {}: stray byte 0x{b:02x} ignored", self.path),
            }
        }
    }

    /// Sends the answer of the transaction accepted on this line once the
    /// worker has it.
    fn answer_if_ready(&mut self) -> io::Result<()> {
        let mut i = 0;
        while i < self.waiting.len() {
            match self.waiting[i].reply.try_recv() {
                Ok(reply) => {
                    let w = self.waiting.remove(i);
                    self.answer(&w.kind, reply)?;
                }
                Err(crossbeam_channel::TryRecvError::Empty) => i += 1,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    // The outcome could not be journaled: no answer may go out.
                    self.waiting.remove(i);
                }
            }
        }
        Ok(())
    }

    /// After our ACK to the register's ENQ: read its frame, NAK a bad one
    /// and take a retransmission, at most three times.
    fn session(&mut self) -> io::Result<()> {
        for attempt in 1..=TRIES {
            match self.receive_frame()? {
                Rx::Eot => return Ok(()),
                Rx::Silence => {
                    log::info!(
                        "serial {}: {} fired waiting for the request frame",
                        self.path,
                        Timer::Frame.keyword()
                    );
                    return Ok(());
                }
                Rx::Bad(why) => {
                    log::info!(
                        "serial {}: bad frame ({why}): NAK ({attempt}/{TRIES})",
                        self.path
                    );
                    self.send(&[NAK])?;
                }
                Rx::Good(payload) => {
                    log::trace!("serial {}: < {}", self.path, trace(&payload));
                    match self.request(payload)? {
                        Some(why) => {
                            log::info!("serial {}: {why}: NAK ({attempt}/{TRIES})", self.path);
                            self.send(&[NAK])?;
                        }
                        None => return Ok(()),
                    }
                }
            }
        }
        log::info!("serial {}: {TRIES} bad frames, back to idle", self.path);
        Ok(())
    }

    /// STX payload ETX, then exactly one LRC byte (it may look like any
    /// control byte).
    fn receive_frame(&mut self) -> io::Result<Rx> {
        let wait = self.conf.settings.frame_timeout;
        loop {
            match self.byte(Instant::now() + wait)? {
                None => return Ok(Rx::Silence),
                Some(STX) => break,
                Some(EOT) => return Ok(Rx::Eot),
                // The register did not see our ACK and asks again.
                Some(ENQ) => self.send(&[ACK])?,
                Some(_) => {}
            }
        }
        let mut payload = Vec::with_capacity(64);
        loop {
            match self.byte(Instant::now() + wait)? {
                None => {
                    return Ok(Rx::Bad(format!(
                        "frame cut, {} fired",
                        Timer::Frame.keyword()
                    )))
                }
                Some(ETX) => break,
                Some(_) if payload.len() >= MAX_FRAME => {
                    return Ok(Rx::Bad(format!("frame longer than {MAX_FRAME} bytes")));
                }
                Some(b) => payload.push(b),
            }
        }
        let Some(got) = self.byte(Instant::now() + wait)? else {
            return Ok(Rx::Bad(format!("no LRC, {} fired", Timer::Frame.keyword())));
        };
        let want = lrc(&payload) ^ ETX;
        if got != want {
            return Ok(Rx::Bad(format!(
                "bad LRC 0x{got:02x}, expected 0x{want:02x}"
            )));
        }
        if let Some(b) = payload.iter().find(|b| !(0x20..0x7f).contains(*b)) {
            return Ok(Rx::Bad(format!("control byte 0x{b:02x} in the frame")));
        }
        Ok(Rx::Good(payload))
    }

    fn is_v3(&self, payload: &[u8]) -> bool {
        match self.conf.settings.protocol {
            SerialProtocol::V3 => true,
            SerialProtocol::V2 => false,
            SerialProtocol::Auto => payload.starts_with(b"CZ"),
        }
    }

    /// Acts on a good frame. `Some(reason)` asks for a NAK (and a
    /// retransmission); `None` means the request was dealt with.
    fn request(&mut self, payload: Vec<u8>) -> io::Result<Option<String>> {
        if self.is_v3(&payload) {
            return match request::parse(&payload, &self.conf.currencies) {
                Ok(req) => self.submit(req, Kind::V3),
                Err(rej) => {
                    log::info!("serial {}: request refused: {rej}", self.path);
                    self.accept_frame()?;
                    let reply = Reply {
                        frame: answer::refusal(&rej.frame, Some(rej.af)),
                        tx: None,
                        immediate: false,
                    };
                    self.answer(&Kind::V3, reply)?;
                    Ok(None)
                }
            };
        }
        let v = match v2::parse(&payload) {
            Ok(v) => v,
            Err(e) => return Ok(Some(format!("not a V2 request ({e})"))),
        };
        let refused = |why: String| -> Reply {
            log::info!("V2 request refused: {why}");
            Reply {
                frame: answer::refusal(&Frame::new(), Some(answer::Af::Refused)),
                tx: None,
                immediate: false,
            }
        };
        if !matches!(v.kind, b'0' | b'1' | b'2') {
            let reply = refused(format!(
                "transaction type {:?} not supported",
                v.kind as char
            ));
            self.accept_frame()?;
            self.answer(&Kind::V2(v), reply)?;
            return Ok(None);
        }
        match request::interpret(v.to_v3(), &self.conf.currencies) {
            Ok(req) => self.submit(req, Kind::V2(v)),
            Err(rej) => {
                let reply = refused(rej.to_string());
                self.accept_frame()?;
                self.answer(&Kind::V2(v), reply)?;
                Ok(None)
            }
        }
    }

    /// ACK the request frame and let the register close its session.
    fn accept_frame(&mut self) -> io::Result<()> {
        self.send(&[ACK])?;
        let d = self.conf.settings.eot_timeout;
        if self.wait_for(&[EOT], Timer::Eot, d)?.is_none() {
            log::info!(
                "serial {}: no EOT, {} fired; going on",
                self.path,
                Timer::Eot.keyword()
            );
        }
        Ok(())
    }

    /// Hands a request to the worker and ACKs it only once the worker has
    /// started it (or answered it at once); a busy terminal NAKs it, since
    /// V2 registers count an ACKed request as accepted.
    fn submit(&mut self, req: Request, kind: Kind) -> io::Result<Option<String>> {
        let v2 = matches!(kind, Kind::V2(_));
        let pending = self.worker.hand_over(req.clone(), self.origin(v2));
        match pending.decision() {
            Decision::Started(_) => {
                // Waiting first: if the ACK cannot be written (device gone),
                // the answer still goes out once the line is back.
                let (reply, rung) = self.forward(pending.reply);
                self.waiting.push(Waiting { reply, kind, rung });
                self.accept_frame()?;
                Ok(None)
            }
            Decision::Answered(reply) if is_busy(&req, &reply) => {
                log::info!("serial {}: {} refused busy: NAK", self.path, req.op.name());
                self.send(&[NAK])?;
                Ok(None)
            }
            Decision::Answered(reply) => {
                self.accept_frame()?;
                self.answer(&kind, reply)?;
                Ok(None)
            }
            Decision::Gone => Ok(Some("worker unavailable".into())),
        }
    }

    /// Sends an answer the way its request came, and reports its delivery.
    fn answer(&mut self, kind: &Kind, reply: Reply) -> io::Result<()> {
        let sent: io::Result<Result<(), String>> = match kind {
            Kind::Raw => {
                let bytes = reply.frame.encode();
                log::trace!("serial {}: > {}", self.path, pan::scrub(&bytes));
                Ok(self.send(&bytes).map_err(|e| e.to_string()))
            }
            Kind::V3 => {
                let blocks = self.blocks(reply.frame.clone());
                self.send_session(&blocks)
            }
            Kind::V2(v) => {
                let payload = if reply.immediate {
                    v2::immediate_reply(v)
                } else {
                    v2::reply_from_answer(v, &reply.frame)
                };
                self.send_session(&[payload])
            }
        };
        // The device failing mid-answer is a failed delivery too: report
        // it before the line is opened again.
        let (result, device) = match sent {
            Ok(r) => (r, Ok(())),
            Err(e) => (Err(e.to_string()), Err(e)),
        };
        if let Err(e) = &result {
            log::warn!("serial {}: answer not delivered: {e}", self.path);
        }
        if let Some(id) = reply.tx {
            self.worker.delivered(id, result);
        }
        device
    }

    /// A V3 answer in frames of at most 512 data bytes: a longer one loses
    /// its ticket, or with `serial-split yes` goes in several blocks.
    fn blocks(&self, frame: Frame) -> Vec<Vec<u8>> {
        let bytes = frame.encode();
        if bytes.len() <= MAX_FRAME {
            return vec![bytes];
        }
        if self.conf.settings.split {
            return bytes.chunks(MAX_FRAME).map(<[u8]>::to_vec).collect();
        }
        let mut short = Frame::new();
        for e in frame.elements().iter().filter(|e| e.tag != tags::ZT) {
            short.push(e.tag, e.value.clone());
        }
        let short = short.encode();
        if short.len() <= MAX_FRAME {
            log::warn!(
                "serial {}: answer of {} bytes is over {MAX_FRAME}: ticket dropped (serial-split no)",
                self.path,
                bytes.len()
            );
            return vec![short];
        }
        // Still too long (a long CF echo): blocks are the only way to keep
        // frames within 512 bytes without dropping the register's data.
        log::warn!(
            "serial {}: answer of {} bytes is over {MAX_FRAME} even without its ticket: \
             sent in ETB blocks",
            self.path,
            bytes.len()
        );
        bytes.chunks(MAX_FRAME).map(<[u8]>::to_vec).collect()
    }

    /// The terminal's session: ENQ, wait ACK (else EOT, pause, again, three
    /// times), each block until ACKed (three tries), EOT. The outer error is
    /// the device failing; the inner one an answer that did not get through.
    fn send_session(&mut self, blocks: &[Vec<u8>]) -> io::Result<Result<(), String>> {
        let s = &self.conf.settings;
        let (ack, pause) = (s.ack_timeout, s.retry_pause);
        let mut open = false;
        for attempt in 1..=TRIES {
            self.input.clear();
            let _ = self.port.clear_input();
            self.send(&[ENQ])?;
            if self.wait_for(&[ACK], Timer::Ack, ack)? == Some(ACK) {
                open = true;
                break;
            }
            log::info!(
                "serial {}: no ACK to our ENQ, {} fired ({attempt}/{TRIES})",
                self.path,
                Timer::Ack.keyword()
            );
            self.send(&[EOT])?;
            if attempt < TRIES {
                std::thread::sleep(pause);
            }
        }
        if !open {
            return Ok(Err(format!("no ACK to {TRIES} ENQ")));
        }
        for (i, block) in blocks.iter().enumerate() {
            let end = if i + 1 == blocks.len() { ETX } else { ETB };
            let frame = crate::framing::block(block, end);
            log::trace!("serial {}: > {}", self.path, trace(block));
            let mut acked = false;
            for attempt in 1..=TRIES {
                self.send(&frame)?;
                match self.wait_for(&[ACK, NAK], Timer::Ack, ack)? {
                    Some(ACK) => {
                        acked = true;
                        break;
                    }
                    Some(_) => {
                        log::info!("serial {}: NAK to our frame ({attempt}/{TRIES})", self.path)
                    }
                    None => log::info!(
                        "serial {}: no ACK to our frame, {} fired ({attempt}/{TRIES})",
                        self.path,
                        Timer::Ack.keyword()
                    ),
                }
            }
            if !acked {
                self.send(&[EOT])?;
                return Ok(Err(format!("frame not acknowledged after {TRIES} tries")));
            }
        }
        self.send(&[EOT])?;
        Ok(Ok(()))
    }

    /// A V3 request with no link layer (`CZ` already read): it ends at a
    /// whole element followed by `request-gap` of silence, or at CR/LF, and
    /// is answered the same way, raw.
    fn raw(&mut self) -> io::Result<()> {
        let mut asm = Assembler::default();
        let mut progress = asm.feed(b"CZ");
        let assembled = loop {
            if let Progress::Done(a) = progress {
                break Some(a);
            }
            let wait = match progress {
                Progress::Whole { .. } => self.conf.request_gap,
                _ => self.conf.settings.frame_timeout,
            };
            match self.byte(Instant::now() + wait)? {
                Some(b) => progress = asm.feed(&[b]),
                None => break asm.finish(),
            }
        };
        let Some(a) = assembled else { return Ok(()) };
        log::trace!("serial {}: < {}", self.path, pan::scrub(&a.body));
        let reply = match (&a.fault, request::parse(&a.body, &self.conf.currencies)) {
            (Some(fault), _) => {
                log::info!(
                    "serial {}: bad raw request ({fault}): answered AF09",
                    self.path
                );
                let partial = Frame::decode(&a.body).unwrap_or_else(|(p, _)| p);
                answer::refusal(&partial, Some(answer::Af::Format))
            }
            (None, Err(rej)) => {
                log::info!("serial {}: request refused: {rej}", self.path);
                answer::refusal(&rej.frame, Some(rej.af))
            }
            (None, Ok(req)) => {
                let pending = self.worker.hand_over(req, self.origin(false));
                return match pending.decision() {
                    Decision::Started(_) => {
                        let (reply, rung) = self.forward(pending.reply);
                        self.waiting.push(Waiting {
                            reply,
                            kind: Kind::Raw,
                            rung,
                        });
                        Ok(())
                    }
                    Decision::Answered(r) => self.answer(&Kind::Raw, r),
                    Decision::Gone => Ok(()),
                };
            }
        };
        self.answer(
            &Kind::Raw,
            Reply {
                frame: reply,
                tx: None,
                immediate: false,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
