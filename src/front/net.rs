//! TCP: one accept thread per `listen` address and one small thread per
//! connection. A connection carries one request and one answer: the answer
//! goes out in a single write, then concertd closes its side.

use crate::backend::stage::Answer;
use crate::config::allow::{self, Net};
use crate::config::plan::Quirk;
use crate::front::dispatch::{self, Job};
use crate::front::findings::{Answered, Findings, Seen, Who};
use crate::front::peers::{Admission, Held, Peers};
use crate::logging::floodgate::{Floodgate, Kind};
use crate::terminal::worker::{Channel, Handle, Origin, Reply};
use crate::wire::assemble::{Assembled, Assembler, Progress};
use crate::wire::framing::{self, Wrapping, ACK, EOT, NAK};
use crate::wire::pan;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Connection threads only parse and copy small buffers.
const CONNECTION_STACK: usize = 128 * 1024;
/// Threads of a listener blocked in accept(2) waiting for the next
/// connection, at most; one done with its connection beyond that ends.
const SPARE: usize = 16;
/// How long to wait for the client to close after the answer, so that its
/// last bytes are read rather than reset.
const LINGER: Duration = Duration::from_secs(2);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// An answer this long fits in any socket's send buffer (Linux never
/// makes it smaller than 4608 bytes): its write cannot block.
const SURE_WRITE: usize = 4096;
/// `TCP_CLOSE` of the kernel's tcp_states.h (not exported by libc).
const TCP_CLOSE: u8 = 7;

/// What connection threads need to know; fixed for a connection's life.
pub struct Settings {
    pub allow: Vec<Net>,
    pub currencies: Vec<u16>,
    pub request_gap: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
    /// The shape of V3 answers (`terminal-profile`).
    pub profile: crate::wire::profile::Profile,
}

pub struct Shared {
    /// Replaced whole on reload; each connection keeps the one it started
    /// with.
    settings: RwLock<Arc<Settings>>,
    pub worker: Handle,
    /// Every open connection, by client address.
    pub peers: Arc<Peers>,
    /// Refusals and bad requests, logged in full only at first.
    pub floodgate: Arc<Floodgate>,
    /// What each register does wrong, for `concertctl registers`.
    pub findings: Arc<Findings>,
}

impl Shared {
    pub fn new(settings: Settings, worker: Handle) -> io::Result<Shared> {
        let floodgate = Floodgate::start()?;
        Ok(Shared {
            settings: RwLock::new(Arc::new(settings)),
            worker,
            peers: Arc::new(Peers::default()),
            findings: Arc::new(Findings::with_gate(Arc::clone(&floodgate))),
            floodgate,
        })
    }

    /// Logs a line a peer can cause at will: in full for the first few
    /// from an address in a minute, then counted.
    fn flood(
        &self,
        peer: SocketAddr,
        kind: Kind,
        level: log::Level,
        line: impl FnOnce() -> String,
    ) {
        self.floodgate.note(peer.ip(), kind, level, line);
    }

    pub fn settings(&self) -> Arc<Settings> {
        match self.settings.read() {
            Ok(s) => Arc::clone(&s),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    pub fn set_settings(&self, s: Settings) {
        match self.settings.write() {
            Ok(mut g) => *g = Arc::new(s),
            Err(p) => *p.into_inner() = Arc::new(s),
        }
    }
}

/// A listening socket and the way to close it.
pub struct Listening {
    /// The address as configured (port 0 stays 0).
    pub configured: SocketAddr,
    /// The address actually bound.
    pub local: SocketAddr,
    door: Arc<Door>,
}

/// A listener and its threads. A thread accepts a connection and serves it
/// itself, with no hand-over, while other threads wait in accept(2); the
/// last one waiting starts a thread for what it accepts and goes on
/// accepting. Once done, a thread goes back to accept(2), or ends when
/// `SPARE` threads already wait there. Waiting threads block without a
/// timeout: an idle listener wakes nobody.
struct Door {
    listener: TcpListener,
    stop: AtomicBool,
    /// Threads waiting in accept(2).
    waiting: AtomicUsize,
}

impl Listening {
    /// Stops accepting: the flag is set, then shutdown(2) of the listening
    /// socket wakes every thread blocked in accept(2) on it.
    pub fn close(self) {
        self.door.stop.store(true, Ordering::SeqCst);
        // SAFETY: shutdown(2) on the listening socket the door owns; its
        // threads see the flag when accept(2) returns.
        unsafe { libc::shutdown(self.door.listener.as_raw_fd(), libc::SHUT_RDWR) };
        log::info!("stopped listening on {}", self.local);
    }
}

pub fn spawn_listener(
    listener: TcpListener,
    configured: SocketAddr,
    shared: Arc<Shared>,
) -> io::Result<Listening> {
    let local = listener.local_addr()?;
    let door = Arc::new(Door {
        listener,
        stop: AtomicBool::new(false),
        waiting: AtomicUsize::new(0),
    });
    spawn_door_thread(&door, &shared)?;
    Ok(Listening {
        configured,
        local,
        door,
    })
}

fn spawn_door_thread(door: &Arc<Door>, shared: &Arc<Shared>) -> io::Result<()> {
    let (d, sh) = (Arc::clone(door), Arc::clone(shared));
    door.waiting.fetch_add(1, Ordering::SeqCst);
    let spawned = std::thread::Builder::new()
        .name("connection".into())
        .stack_size(CONNECTION_STACK)
        .spawn(move || door_thread(&d, &sh));
    if spawned.is_err() {
        door.waiting.fetch_sub(1, Ordering::SeqCst);
    }
    spawned.map(|_| ())
}

/// A new thread for a connection just accepted, which then joins the
/// door's threads; the one that accepted it goes on accepting.
fn spawn_server(
    door: &Arc<Door>,
    shared: &Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
) -> io::Result<()> {
    let (d, sh) = (Arc::clone(door), Arc::clone(shared));
    std::thread::Builder::new()
        .name("connection".into())
        .stack_size(CONNECTION_STACK)
        .spawn(move || {
            admit(stream, peer, &sh);
            if rejoin(&d) {
                door_thread(&d, &sh);
            }
        })
        .map(|_| ())
}

/// Back to accept(2), unless enough threads wait there already.
fn rejoin(door: &Door) -> bool {
    if door.waiting.fetch_add(1, Ordering::SeqCst) >= SPARE {
        door.waiting.fetch_sub(1, Ordering::SeqCst);
        return false;
    }
    true
}

/// Accepts and serves connections, one at a time. Counted in `waiting`
/// while in accept(2). The last thread waiting there does not serve what
/// it accepts: it starts a thread for it and goes on accepting, so that
/// under a burst connections are accepted as fast as they come.
fn door_thread(door: &Arc<Door>, shared: &Arc<Shared>) {
    loop {
        let accepted = door.listener.accept();
        let left = door.waiting.fetch_sub(1, Ordering::SeqCst) - 1;
        if door.stop.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            Ok((stream, peer)) if left == 0 => {
                if let Err(e) = spawn_server(door, shared, stream, peer) {
                    // The connection went with the closure: closed.
                    log::error!("{peer}: cannot start a connection thread: {e}");
                }
                door.waiting.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            Ok((stream, peer)) => admit(stream, peer, shared),
            Err(e) => {
                log::warn!("accept: {e}");
                // Out of descriptors or memory: give the system a moment
                // rather than spin.
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if !rejoin(door) {
            return;
        }
    }
}

/// Applies the allow-list and the connection caps to a new connection,
/// and serves it when it is let in.
fn admit(stream: TcpStream, peer: SocketAddr, shared: &Shared) {
    let settings = shared.settings();
    if !allow::allowed(&settings.allow, peer.ip()) {
        shared.flood(peer, Kind::Refused, log::Level::Warn, || {
            format!("{peer}: not in the allow-list, closed")
        });
        return;
    }
    let held = match shared.peers.admit(
        peer,
        stream.as_raw_fd(),
        settings.max_connections,
        settings.max_connections_per_peer,
    ) {
        Admission::Admitted(h) => h,
        Admission::PeerFull(n) => {
            shared.flood(peer, Kind::Refused, log::Level::Warn, || {
                format!(
                    "{peer}: its address holds {n} connections \
                     (max-connections-per-peer), closed"
                )
            });
            return;
        }
        Admission::Full(n) => {
            shared.flood(peer, Kind::Refused, log::Level::Warn, || {
                format!("{peer}: {n} connections open (max-connections), closed")
            });
            return;
        }
    };
    if let Some(old) = held.displaced {
        shared.flood(old, Kind::Refused, log::Level::Warn, || {
            format!(
                "{old}: idle connection closed to make room for {peer} \
                 (max-connections reached; {old} holds the most)"
            )
        });
    }
    let mut stream = stream;
    connection(&mut stream, peer, shared, &held);
    // Out of the table before the socket closes: the table may shut down
    // the descriptor while it holds the entry.
    drop(held);
    drop(stream);
    log::debug!("tcp {peer}: closed");
}

/// True when the kernel holds no unread byte for this socket.
fn nothing_waiting(stream: &TcpStream) -> bool {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int into n; the fd is open for the call.
    let r = unsafe { libc::ioctl(stream.as_raw_fd(), libc::FIONREAD, &mut n) };
    r == 0 && n == 0
}

enum Incoming {
    Request(Assembled, Reading),
    Silent,
    Gone,
}

/// How a request came, for the register's findings.
#[derive(Default)]
struct Reading {
    /// Its bytes as read, framing and tails included (at most a little
    /// more than the largest request).
    raw: Vec<u8>,
    segments: u32,
    /// The longest pause between two segments.
    gap: Duration,
    /// When its first byte came.
    since: Option<Instant>,
}

impl Reading {
    fn read(&mut self, bytes: &[u8], last: &mut Option<Instant>) {
        let now = Instant::now();
        if let Some(l) = *last {
            self.gap = self.gap.max(now.saturating_duration_since(l));
        }
        *last = Some(now);
        self.since.get_or_insert(now);
        self.segments += 1;
        if self.raw.len() < crate::wire::assemble::MAX_REQUEST + 64 {
            self.raw.extend_from_slice(bytes);
        }
    }

    /// The bytes that came with the request and are not part of it: what
    /// follows its body (and its ETX and LRC), but ACK and EOT, which
    /// STX-framing registers send as their link layer.
    fn extra(&self, a: &Assembled) -> Vec<u8> {
        let lead = self
            .raw
            .iter()
            .take_while(|b| matches!(**b, b'\r' | b'\n'))
            .count();
        let end = match a.wrapping {
            Wrapping::Stx => lead + 1 + a.body.len() + 2,
            Wrapping::Raw => lead + a.body.len(),
        };
        self.raw
            .get(end..)
            .unwrap_or_default()
            .iter()
            .copied()
            .filter(|b| !matches!(*b, ACK | EOT))
            .collect()
    }
}

fn read_request(stream: &mut TcpStream, s: &Settings, peer: SocketAddr, held: &Held) -> Incoming {
    let deadline = Instant::now() + s.request_timeout;
    let mut asm = Assembler::default();
    let mut whole = false;
    let mut buf = [0u8; 4096];
    let mut reading = Reading::default();
    let mut last = None;
    let request = |asm: &Assembler, reading| {
        asm.finish()
            .map_or(Incoming::Silent, |a| Incoming::Request(a, reading))
    };
    loop {
        let now = Instant::now();
        if now >= deadline {
            log::debug!("{peer}: request-timeout");
            return request(&asm, reading);
        }
        let left = deadline - now;
        let wait = if whole { left.min(s.request_gap) } else { left };
        if stream.set_read_timeout(Some(wait)).is_err() {
            return Incoming::Gone;
        }
        let read = stream.read(&mut buf);
        if held.is_displaced() {
            log::debug!("tcp {peer}: displaced by another peer's connection");
            return Incoming::Gone;
        }
        match read {
            Ok(0) => return request(&asm, reading),
            Ok(n) => {
                // Only the count: a card number split across two reads
                // would escape masking.
                log::trace!("tcp {peer}: read {n} bytes");
                whole = false;
                reading.read(&buf[..n], &mut last);
                match asm.feed(&buf[..n]) {
                    Progress::Done(a) => return Incoming::Request(a, reading),
                    Progress::Whole { ready } => {
                        if ready && nothing_waiting(stream) {
                            return request(&asm, reading);
                        }
                        whole = true;
                    }
                    Progress::Partial | Progress::Empty => {}
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if whole {
                    return request(&asm, reading);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::debug!("{peer}: read: {e}");
                return Incoming::Gone;
            }
        }
    }
}

/// True once the register has shut its side of the connection (or it
/// failed): it sends nothing more, and a register that closed its socket
/// will not read an answer either.
fn peer_closed(stream: &TcpStream) -> bool {
    let mut p = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: poll(2) on one pollfd of ours, without waiting.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

/// How often a connection looks whether its register is still there while
/// its transaction runs.
const WATCH: Duration = Duration::from_millis(250);

/// One answer to write, and what the register's findings need of it.
struct Outgoing {
    bytes: Vec<u8>,
    /// The transaction whose final answer it is.
    tx: Option<u64>,
    /// The transaction whose immediate answer (`BA=1`) it is.
    immediate: Option<u64>,
    /// How the simulator was told to send it.
    quirks: Answer,
    who: Who,
    answered: Answered,
}

/// The register a request names: its CA, read from what could be parsed.
fn register_of(body: &[u8], v2: bool) -> Option<u8> {
    if v2 {
        let d = body.get(..2)?;
        return std::str::from_utf8(d).ok()?.parse().ok();
    }
    let f = crate::wire::tlv::Frame::decode(body).unwrap_or_else(|(p, _)| p);
    let ca = f.text(crate::wire::tlv::tags::CA)?;
    ca.parse().ok()
}

/// The bytes to send back for one assembled request, with what the
/// findings need; `None` when nothing may be sent (the outcome could not
/// be journaled).
fn answer_for(
    a: &Assembled,
    reading: &Reading,
    stream: &TcpStream,
    shared: &Shared,
    settings: &Settings,
    peer: SocketAddr,
) -> Option<Outgoing> {
    // A V2 request comes STX-framed; a V3 answer goes back as its request
    // came.
    let v2 = a.wrapping == Wrapping::Stx && !a.body.starts_with(b"CZ");
    let who = Who {
        channel: Channel::Tcp,
        peer: peer.ip().to_string(),
        ca: register_of(&a.body, v2),
    };
    let extra = reading.extra(a);
    let mut seen = Seen {
        body: &a.body,
        v2,
        stx_on_tcp: !v2 && a.wrapping == Wrapping::Stx,
        extra: &extra,
        segments: reading.segments,
        gap: reading.gap,
        op: None,
        amount: None,
    };
    let plain = |bytes: Vec<u8>| Outgoing {
        bytes,
        tx: None,
        immediate: None,
        quirks: Answer::default(),
        who: who.clone(),
        answered: Answered::default(),
    };
    let nak = |why: &str| {
        shared.flood(peer, Kind::BadRequest, log::Level::Info, || {
            format!("tcp {peer}: {why}: NAK")
        });
        Some(plain(vec![NAK]))
    };
    let refused = |why: &str| {
        shared.flood(peer, Kind::BadRequest, log::Level::Info, || {
            format!("tcp {peer}: {why}")
        })
    };
    let bytes = |kind: &dispatch::Kind, reply: &Reply| {
        let payload = dispatch::payload(kind, reply);
        match kind {
            dispatch::Kind::V3 => framing::wrap(&payload, a.wrapping),
            _ => framing::wrap(&payload, Wrapping::Stx),
        }
    };
    if let Some(fault) = &a.fault {
        // Bytes that are no request at all (a NAKed frame) tell nothing
        // of a register; a V3 request that is not TLV as written does.
        if v2 {
            return nak(&format!("bad V2 frame ({fault})"));
        }
        shared.findings.request(&who, &seen);
        refused(&format!("bad request ({fault}): answered AF09"));
        let v3 = dispatch::Kind::V3;
        let reply = dispatch::shaped(&v3, dispatch::malformed(&a.body), None, settings.profile);
        return Some(plain(bytes(&v3, &reply)));
    }
    match dispatch::job(&a.body, !v2, &settings.currencies) {
        Job::Submit(req, kind) => {
            let origin = Origin {
                channel: Channel::Tcp,
                peer: peer.to_string(),
                v2,
            };
            (seen.op, seen.amount) = (Some(req.op), req.amount);
            shared.findings.request(&who, &seen);
            let op = req.op;
            let asked = req.frame.clone();
            let (requested, partial_ok) = (req.amount, req.partial_ok);
            let since = reading.since.unwrap_or_else(Instant::now);
            let mut closed_after = None;
            let mut watch = || {
                if closed_after.is_none() && peer_closed(stream) {
                    closed_after = Some(since.elapsed());
                }
            };
            let mut reply =
                shared
                    .worker
                    .submit_watching(req, origin, Some((WATCH, &mut watch)))?;
            let busy = reply.tx.is_none()
                && op.occupies_terminal()
                && reply.frame.get(crate::wire::tlv::tags::AE) == Some(b"01")
                && !reply.frame.has(crate::wire::tlv::tags::AF);
            let answered = Answered {
                op: Some(op),
                approved: reply.frame.get(crate::wire::tlv::tags::AE) == Some(b"10"),
                af: reply
                    .frame
                    .get(crate::wire::tlv::tags::AF)
                    .and_then(crate::wire::answer::Af::from_code),
                busy,
                transaction: reply.tx.is_some(),
                amount: reply
                    .frame
                    .text(crate::wire::tlv::tags::CB)
                    .and_then(|t| t.parse().ok()),
                closed_after,
                tx: reply.tx,
                // The exam's step: the script line this request took.
                taken: match reply.tx {
                    Some(id) => shared.worker.stage().taken(id),
                    None if busy => shared.worker.stage().busy_taken(),
                    None => None,
                },
                requested,
                partial_ok,
                ..Answered::default()
            };
            let quirks = reply
                .tx
                .and_then(|id| shared.worker.stage().answer(id))
                .unwrap_or_default();
            if let (true, Some(id)) = (quirks.has(Quirk::NoCb), reply.tx) {
                match kind {
                    dispatch::Kind::V3 => {
                        log::info!("tx {id}: answer without its amount CB (no-cb)");
                        reply.frame = reply.frame.without(crate::wire::tlv::tags::CB);
                    }
                    _ => log::info!(
                        "tx {id}: no-cb not applied: a Concert V2 reply has fixed fields"
                    ),
                }
            }
            let reply = dispatch::shaped(&kind, reply, Some(&asked), settings.profile);
            Some(Outgoing {
                bytes: bytes(&kind, &reply),
                tx: reply.tx,
                immediate: reply.immediate,
                quirks,
                who,
                answered,
            })
        }
        Job::Refuse(kind, reply, why) => {
            let f = crate::wire::tlv::Frame::decode(&a.body).unwrap_or_else(|(p, _)| p);
            seen.op = f
                .get(crate::wire::tlv::tags::CD)
                .and_then(crate::wire::operation::Operation::from_cd);
            shared.findings.request(&who, &seen);
            refused(&why);
            let reply = dispatch::shaped(&kind, reply, None, settings.profile);
            Some(plain(bytes(&kind, &reply)))
        }
        Job::Nak(why) => nak(&why),
    }
}

/// Writes `bytes` in `n` parts of nearly equal size (one a byte when
/// shorter), pausing `gap` between two: how a terminal whose answer
/// crosses several TCP segments looks to a register. The number of
/// writes.
fn write_split(
    w: &mut impl Write,
    bytes: &[u8],
    n: u32,
    gap: Duration,
    pause: &mut dyn FnMut(Duration),
) -> io::Result<usize> {
    let n = (n as usize).clamp(1, bytes.len().max(1));
    for i in 0..n {
        if i > 0 {
            pause(gap);
        }
        w.write_all(&bytes[i * bytes.len() / n..(i + 1) * bytes.len() / n])?;
        w.flush()?;
    }
    Ok(n)
}

/// Closes with a reset (RST) rather than a FIN: linger on, zero seconds.
fn reset(stream: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt(2) reads one linger struct of the size given.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

/// `open`: the answer is out and the connection stays open until the
/// register closes it, at most `limit`.
fn hold_open(stream: &mut TcpStream, id: u64, limit: Duration) {
    log::info!(
        "tx {id}: connection kept open after the answer until the register closes it, \
         at most {} (open)",
        crate::config::fmt_duration(limit)
    );
    if drain_until_closed(stream, Instant::now() + limit, |_| {}) {
        log::info!("tx {id}: open: the register closed the connection");
    } else {
        log::info!("tx {id}: open: transaction-timeout reached, closed");
    }
}

/// Reads what the register still sends, handing it to `keep`, until it
/// closes its side (true) or `until` passes (false). A read error counts as
/// closed: nothing more can come.
fn drain_until_closed(stream: &mut TcpStream, until: Instant, mut keep: impl FnMut(&[u8])) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        let now = Instant::now();
        if now >= until || stream.set_read_timeout(Some(until - now)).is_err() {
            return false;
        }
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => keep(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
}

/// Bytes after a request that deserve a warning: a CR/LF tail, or the ACK
/// and EOT that STX-framing clients send after our answer, do not.
fn report_trailing(shared: &Shared, peer: SocketAddr, bytes: &[u8]) {
    if bytes
        .iter()
        .any(|b| !matches!(*b, b'\r' | b'\n' | ACK | EOT))
    {
        shared.flood(peer, Kind::BadRequest, log::Level::Warn, || {
            format!(
                "tcp {peer}: {} bytes after the request ignored: {}",
                bytes.len(),
                // Masked whole before the cut, or the cut could leave the
                // start of a card number whole.
                pan::scrub_cut(bytes, 64)
            )
        });
    }
}

/// An answer for the wire trace, its body as `link::trace` shows it: a
/// V3 frame masked element by element, a V2 reply cut into its fields (its
/// register, amount, mode and currency digits run together and must not be
/// taken for a card number).
fn trace_answer(bytes: &[u8]) -> String {
    match bytes {
        [framing::STX, body @ .., framing::ETX, lrc] => format!(
            "\\x02{}\\x03{}",
            crate::link::trace(body),
            pan::escape(&[*lrc])
        ),
        _ => pan::scrub(bytes),
    }
}

/// Where the answer is, as the kernel tells it.
#[derive(Debug, PartialEq, Eq)]
enum Ack {
    /// Every byte acknowledged by the register's TCP.
    Done,
    /// Bytes still in flight, or not sent yet (the register's receive
    /// window is full: it does not read).
    Waiting,
    /// The connection was reset: what was not acknowledged is lost.
    Reset,
}

/// The decision on one reading: `unacked` segments in flight (tcp_info)
/// and `queued` bytes the socket still holds, sent or not (SIOCOUTQ).
/// Both must be zero: a register whose window is closed leaves the answer
/// unsent with nothing in flight, and that is not a delivery.
fn ack_state(state: u8, unacked: u32, queued: Option<i32>) -> Ack {
    if state == TCP_CLOSE {
        return Ack::Reset;
    }
    match queued {
        Some(0) if unacked == 0 => Ack::Done,
        _ => Ack::Waiting,
    }
}

/// Waits until the register's TCP has acknowledged every byte of the
/// answer. A register that closed its socket before the answer resets the
/// connection instead; that is how a client gone is told apart from one
/// that only shut its sending side.
fn acknowledged(stream: &TcpStream) -> Result<(), String> {
    let fd = stream.as_raw_fd();
    let until = Instant::now() + LINGER;
    loop {
        // SAFETY: tcp_info is plain data; getsockopt writes at most len bytes.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error().to_string());
        }
        let mut queued: libc::c_int = 0;
        // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one int: the bytes in the send
        // queue, acknowledged or not.
        let q = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued as *mut libc::c_int) };
        if let Ok(Some(e)) = stream.take_error() {
            return Err(e.to_string());
        }
        match ack_state(
            info.tcpi_state,
            info.tcpi_unacked,
            (q == 0).then_some(queued),
        ) {
            Ack::Done => return Ok(()),
            Ack::Reset => return Err("connection reset by the register".into()),
            Ack::Waiting => {}
        }
        if Instant::now() >= until {
            return Err(format!(
                "answer not acknowledged: {} bytes not taken by the register",
                queued.max(0)
            ));
        }
        // Acknowledgements come within a round trip (or a delayed-ACK
        // period): check again shortly.
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn connection(stream: &mut TcpStream, peer: SocketAddr, shared: &Shared, held: &Held) {
    // No TCP_NODELAY: the answer is one write followed by a shutdown, which
    // Nagle's rule never holds back.
    let settings = shared.settings();
    let (a, reading) = match read_request(stream, &settings, peer, held) {
        Incoming::Request(a, r) => {
            held.requested();
            (a, r)
        }
        Incoming::Silent => {
            log::debug!("{peer}: closed without a request");
            return;
        }
        Incoming::Gone => return,
    };
    log::trace!("tcp {peer}: < {}", crate::link::trace(&a.body));
    let Some(out) = answer_for(&a, &reading, stream, shared, &settings, peer) else {
        return;
    };
    let Outgoing {
        mut bytes,
        tx,
        immediate,
        quirks,
        who,
        mut answered,
    } = out;
    let since = reading.since.unwrap_or_else(Instant::now);
    // What the register did with its answer, once known.
    let report = |answered: &mut Answered, delivered: Option<Result<(), String>>| {
        answered.delivered = delivered;
        shared.findings.answered(&who, answered);
    };
    let id = tx.unwrap_or_default();
    if let Some(late) = quirks.late() {
        log::info!(
            "tx {id}: answer {} late (late)",
            crate::config::fmt_duration(late)
        );
        std::thread::sleep(late);
    }
    let gone = match (
        quirks.withhold,
        quirks.has(Quirk::Silent),
        quirks.has(Quirk::Reset),
    ) {
        (Some(why), _, _) => Some(why),
        (None, true, _) => Some("simulator: silent, closed without an answer"),
        (None, false, true) => Some("simulator: reset instead of the answer"),
        (None, false, false) => None,
    };
    if let Some(why) = gone {
        // The outcome is journaled as decided; only its delivery fails,
        // and a status request (CD=T) returns it.
        log::info!("tx {id}: {why}");
        shared.worker.delivered(id, Err(why.to_string()));
        answered.withheld = true;
        report(&mut answered, Some(Err(why.to_string())));
        if quirks.has(Quirk::Reset) {
            reset(stream);
        } else {
            let _ = stream.shutdown(Shutdown::Both);
        }
        return;
    }
    if quirks.has(Quirk::Crlf) {
        log::info!("tx {id}: CR LF after the answer (crlf)");
        bytes.extend_from_slice(b"\r\n");
    }
    log::trace!("tcp {peer}: > {}", trace_answer(&bytes));
    if answered.closed_after.is_none() && tx.is_some() && peer_closed(stream) {
        answered.closed_after = Some(since.elapsed());
    }
    if bytes.len() > SURE_WRITE {
        // Only a large answer can find the send buffer full.
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    }
    let written = match quirks.split() {
        Some((n, gap)) => {
            // Each part in a segment of its own, as a slow terminal's.
            let _ = stream.set_nodelay(true);
            let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
            answered.split = true;
            let w = write_split(stream, &bytes, n, gap, &mut std::thread::sleep);
            if let Ok(k) = &w {
                log::info!(
                    "tx {id}: answer in {k} writes, {} apart (split)",
                    crate::config::fmt_duration(gap)
                );
            }
            w.map(drop)
        }
        None => stream.write_all(&bytes),
    }
    .map_err(|e| e.to_string());
    // A transaction's final answer is journaled delivered or not, and so
    // is the loss of its immediate answer: wait for the register's
    // acknowledgement. Other answers need no such record.
    let sent = match (tx, immediate) {
        (Some(_), _) | (_, Some(_)) => written.and_then(|()| acknowledged(stream)),
        (None, None) => written,
    };
    if let Some(id) = tx {
        shared.worker.delivered(id, sent.clone());
    }
    report(&mut answered, tx.map(|_| sent.clone()));
    if let Err(e) = sent {
        match immediate {
            // The register does not know its transaction runs: the worker
            // journals it and says it with the id.
            Some(id) => shared.worker.immediate_undelivered(id, e),
            None => log::debug!("tcp {peer}: answer not delivered: {e}"),
        }
        return;
    }
    if quirks.has(Quirk::Open) {
        return hold_open(stream, id, shared.worker.stage().open_limit());
    }
    // Close our side first, then read what the client still sends until it
    // closes: closing with unread bytes would reset the connection and could
    // destroy the answer before the client reads it.
    let _ = stream.shutdown(Shutdown::Write);
    let mut trailing = a.trailing;
    let mut drained = Vec::new();
    drain_until_closed(stream, Instant::now() + LINGER, |b| {
        if trailing.len() < 4096 {
            trailing.extend_from_slice(b);
            drained.extend_from_slice(b);
        }
    });
    report_trailing(shared, peer, &trailing);
    // Those that came with the request were reported with it.
    let after: Vec<u8> = drained
        .iter()
        .copied()
        .filter(|b| !matches!(*b, ACK | EOT))
        .collect();
    if !after.is_empty() {
        shared.findings.after(&who, &after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ESTABLISHED: u8 = 1;

    #[test]
    fn the_trace_of_a_v2_reply_keeps_its_digits() {
        // Register, result, amount, mode, currency and private data run
        // into 25 digits, windows of which pass Luhn.
        let reply = framing::wrap(b"0100000100019781234567890", Wrapping::Stx);
        assert_eq!(
            trace_answer(&reply),
            format!(
                "\\x0201|0|00001000|1|978|1234567890\\x03{}",
                pan::escape(&reply[reply.len() - 1..])
            )
        );
        // V3 answers, wrapped or not, are masked element by element.
        let v3 = b"CZ0040320AE00210AA0164970101234560674";
        let wrapped = framing::wrap(v3, Wrapping::Stx);
        assert_eq!(
            trace_answer(&wrapped),
            format!(
                "\\x02CZ0040320AE00210AA016497010######0674\\x03{}",
                pan::escape(&wrapped[wrapped.len() - 1..])
            )
        );
        assert_eq!(trace_answer(v3), "CZ0040320AE00210AA016497010######0674");
    }

    /// Records each write apart.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl Write for Writes {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.push(b.to_vec());
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_split_answer_goes_in_n_writes_gap_apart() {
        let answer = b"CZ0040320CA00201CB0041000AE00210";
        let mut w = Writes::default();
        let mut pauses = Vec::new();
        let gap = Duration::from_millis(50);
        let n = write_split(&mut w, answer, 3, gap, &mut |d| pauses.push(d)).unwrap();
        assert_eq!(n, 3);
        assert_eq!(w.0.len(), 3);
        assert_eq!(w.0.concat(), answer);
        assert!(w.0.iter().all(|p| p.len() >= 10), "{:?}", w.0);
        assert_eq!(pauses, [gap, gap]);
        // Shorter than the writes asked: one byte a write.
        let mut w = Writes::default();
        let n = write_split(&mut w, b"AB", 5, gap, &mut |_| {}).unwrap();
        assert_eq!((n, w.0), (2, vec![b"A".to_vec(), b"B".to_vec()]));
        let mut w = Writes::default();
        assert_eq!(write_split(&mut w, b"", 5, gap, &mut |_| {}).unwrap(), 1);
    }

    #[test]
    fn no_cb_drops_only_the_amount() {
        let f = crate::wire::tlv::Frame::decode(b"CZ0040320CA00201CB0041000AE00210").unwrap();
        assert_eq!(
            f.without(crate::wire::tlv::tags::CB).encode(),
            b"CZ0040320CA00201AE00210"
        );
    }

    #[test]
    fn delivered_only_when_nothing_is_left_to_send_or_acknowledge() {
        assert_eq!(ack_state(ESTABLISHED, 0, Some(0)), Ack::Done);
        // In flight.
        assert_eq!(ack_state(ESTABLISHED, 1, Some(1200)), Ack::Waiting);
        // The register's window is shut: nothing in flight, all unsent.
        assert_eq!(ack_state(ESTABLISHED, 0, Some(1200)), Ack::Waiting);
        // The queue could not be read: not known, so not delivered.
        assert_eq!(ack_state(ESTABLISHED, 0, None), Ack::Waiting);
        assert_eq!(ack_state(TCP_CLOSE, 0, Some(0)), Ack::Reset);
        assert_eq!(ack_state(TCP_CLOSE, 0, Some(1200)), Ack::Reset);
    }

    #[test]
    fn bytes_a_register_does_not_read_are_not_delivered() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let register = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut answer, _) = l.accept().unwrap();
        // Fill the register's window and our send queue: everything that
        // was sent is acknowledged, the rest waits, unsent.
        answer.set_nonblocking(true).unwrap();
        let chunk = [b'x'; 65536];
        while answer.write(&chunk).is_ok() {}
        answer.set_nonblocking(false).unwrap();
        let r = acknowledged(&answer);
        assert!(
            r.as_ref().is_err_and(|e| e.contains("not acknowledged")),
            "{r:?}"
        );
        drop(register);
    }
}
