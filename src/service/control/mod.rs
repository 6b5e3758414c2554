//! The control socket, the OpenBSD `relayctl` way: a Unix stream socket
//! that `concertctl` opens to ask one command and read one answer. Its
//! mode, 0660, is the gate: whoever may open it may run every command,
//! and every command reads only, but `reload`, which does what SIGHUP does.
//!
//! A connection sends one line, at most [`MAX_COMMAND`] bytes; the answer
//! is `ok` or `refused` on a line of its own, then its text, then the
//! connection is closed. At most [`MAX_CONNECTIONS`] are served at once;
//! one more is answered `refused` at once. The whole line must come within
//! [`COMMAND_DEADLINE`] of the accept, however it is trickled: else a few
//! slow clients would hold every place for minutes.
//!
//! `watch` is the exception: its connection streams events until the
//! client closes (see [`watch`]), in one of the watchers' own places
//! ([`crate::logging::events::MAX_WATCHERS`]): it gives its ordinary
//! place back as soon as the command is read, so that watchers never keep
//! `status` out.
//!
//! `show` and `totals` read the journal files on the connection's own
//! thread, never on the worker: a register asking while someone reads a
//! month of journal still gets its busy answer at once.

mod commands;
mod watch;

// Why concertctl may not open the socket: read from its files.
pub mod access;

use commands::run;

pub use commands::{show, totals, Command, Day, Totals, COMMANDS, DEFAULT_SHOW, MAX_SHOW};

use crate::backend::stage::Stage;
use crate::front::findings::Findings;
use crossbeam_channel::Sender;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Control connections served at once.
pub const MAX_CONNECTIONS: usize = 4;
/// The longest command line, its newline included.
pub const MAX_COMMAND: usize = 256;
/// A client must have sent its whole command this long after its accept,
/// or it is closed: it must not hold one of the few connections. Once the
/// command is read, only [`IDLE`] applies, so an answer that streams is not
/// cut by it.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(5);
/// A client that reads no part of its answer for this long is dropped.
const IDLE: Duration = Duration::from_secs(5);
/// Closed or refused connections logged in full per kind and minute (as
/// many as there are places: every slow client that filled the socket is
/// seen); the others are counted (`status`) and summed up in the next line
/// logged.
const SHOWN: u32 = MAX_CONNECTIONS as u32;
const WINDOW: Duration = Duration::from_secs(60);
/// What a connection asks of the main thread, which owns the service.
pub enum Ask {
    Status(Sender<String>),
    Reload(Sender<Result<String, String>>),
}

/// The bound socket. Its file is removed when this is dropped, if it is
/// still ours (same inode): a daemon started since may have replaced it.
pub struct Socket {
    listener: UnixListener,
    path: PathBuf,
    ino: u64,
}

impl Drop for Socket {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Socket {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Why there is no socket: said as a warning, the service runs without.
pub type NoSocket = String;

/// Binds the control socket, mode 0660. Its directory is made (0755) when
/// missing; when that fails (a foreground run by a user who may not write
/// in /run), there is no socket. A file already at `path` is removed only
/// when it is a socket nobody answers on: a live one belongs to another
/// concertd. Must run while no other thread exists (it sets the umask).
pub fn bind(path: &Path) -> Result<Socket, NoSocket> {
    let shown = path.display();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            // The directory is only a way in; the socket's mode is the gate.
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(dir)
                .map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => {
            return Err(format!("{shown} exists and is not a socket: left alone"));
        }
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => {
                return Err(format!(
                    "{shown} is answered by another process (another concertd?): left alone"
                ))
            }
            Err(_) => {
                log::info!("control {shown}: stale socket (nobody answers), removed");
                std::fs::remove_file(path)
                    .map_err(|e| format!("cannot remove the stale socket {shown}: {e}"))?;
            }
        },
        Err(_) => {}
    }
    // bind(2) makes the file with the umask's mode: 0660 from the start,
    // never wider for a moment. No other thread exists yet to be affected.
    // SAFETY: umask(2) only swaps the process's mask.
    let old = unsafe { libc::umask(0o117) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above, the mask back.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(|e| format!("cannot bind {shown}: {e}"))?;
    let ino = std::fs::symlink_metadata(path)
        .map(|m| m.ino())
        .map_err(|e| format!("{shown}: {e}"))?;
    Ok(Socket {
        listener,
        path: path.to_path_buf(),
        ino,
    })
}

/// Where `show` and `totals` read.
#[derive(Clone)]
pub struct Journal {
    pub path: PathBuf,
    pub keep: u32,
}

/// Serves the socket on a thread of its own, each connection on one more.
/// The caller keeps `socket`, whose file goes when it is dropped; what it
/// gets back counts the connections turned away, for the live state.
pub fn serve(
    socket: &Socket,
    journal: Journal,
    ask: Sender<Ask>,
    stage: Arc<Stage>,
    findings: Arc<Findings>,
) -> io::Result<Arc<TurnedAway>> {
    let active = Arc::new(AtomicUsize::new(0));
    let turned_away = Arc::new(TurnedAway::default());
    let counted = Arc::clone(&turned_away);
    let listener = socket.listener.try_clone()?;
    log::info!("control socket {}", socket.path.display());
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let accepted = Instant::now();
                let _ = conn.set_write_timeout(Some(IDLE));
                if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                    active.fetch_sub(1, Ordering::SeqCst);
                    turned_away.note(Away::Refused);
                    let _ = conn.write_all(
                        format!(
                            "refused\ntoo many control connections (at most {MAX_CONNECTIONS})\n"
                        )
                        .as_bytes(),
                    );
                    continue;
                }
                let (journal, ask, done) = (journal.clone(), ask.clone(), Arc::clone(&active));
                let (stage, away) = (Arc::clone(&stage), Arc::clone(&turned_away));
                let findings = Arc::clone(&findings);
                let spawned = std::thread::Builder::new()
                    .name("control-conn".into())
                    .spawn(move || {
                        let mut conn = conn;
                        // The place is free before the client sees its
                        // connection end (`connection` gives it back
                        // before it returns), and before the log says so:
                        // a script that asks again at once, or whoever
                        // reads that line, finds it free.
                        let place = Place(done);
                        let late = connection(
                            &mut conn, accepted, &journal, &ask, &stage, &findings, place,
                        );
                        drop(conn);
                        if late {
                            away.note(Away::Late);
                        }
                    });
                if let Err(e) = spawned {
                    log::error!("control: cannot start a connection thread: {e}");
                    // Its closure, and the count it would have given back, are gone.
                    active.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })
        .map(|_| counted)
}

/// An ordinary connection's place, given back when dropped.
struct Place(Arc<AtomicUsize>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Why a connection was turned away, for the log and `status`.
#[derive(Clone, Copy)]
enum Away {
    /// No whole command within [`COMMAND_DEADLINE`] of its accept.
    Late,
    /// [`MAX_CONNECTIONS`] already open.
    Refused,
}

/// Connections turned away: every one counted, the first [`SHOWN`] of each
/// kind a minute logged. Whoever may open the socket could otherwise write
/// a line to the log per connection.
#[derive(Default)]
pub struct TurnedAway {
    counts: [AtomicU64; 2],
    window: Mutex<Option<Window>>,
}

/// The minute being counted: since when, per kind how many logged and how
/// many only counted.
type Window = (Instant, [u32; 2], [u64; 2]);

impl TurnedAway {
    fn note(&self, why: Away) {
        let k = why as usize;
        let total = self.counts[k].fetch_add(1, Ordering::Relaxed) + 1;
        let now = Instant::now();
        let mut g = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let (since, shown, hidden) = g.get_or_insert((now, [0; 2], [0; 2]));
        if now.saturating_duration_since(*since) >= WINDOW {
            if *hidden != [0; 2] {
                log::warn!(
                    "control: {} more connections closed without a whole command, {} more \
                     refused, in {} s (not logged one by one)",
                    hidden[0],
                    hidden[1],
                    now.saturating_duration_since(*since).as_secs()
                );
            }
            (*since, *shown, *hidden) = (now, [0; 2], [0; 2]);
        }
        if shown[k] >= SHOWN {
            hidden[k] += 1;
            return;
        }
        shown[k] += 1;
        drop(g);
        match why {
            Away::Late => log::warn!(
                "control: connection closed: no whole command within {} s of its accept \
                 ({total} since start)",
                COMMAND_DEADLINE.as_secs()
            ),
            Away::Refused => log::warn!(
                "control: {MAX_CONNECTIONS} connections open, one more refused \
                 ({total} since start)"
            ),
        }
    }

    /// Its line in the live state (`status`, SIGUSR1).
    pub fn status(&self) -> String {
        format!(
            "control connections closed without a whole command within {} s: {}; \
             refused (more than {MAX_CONNECTIONS} at once): {}",
            COMMAND_DEADLINE.as_secs(),
            self.counts[Away::Late as usize].load(Ordering::Relaxed),
            self.counts[Away::Refused as usize].load(Ordering::Relaxed)
        )
    }
}

/// Why no command was read.
enum Unread {
    /// The deadline passed first.
    Late,
    /// Too long, not UTF-8, a failed read: said to the client.
    Bad(String),
}

/// The command line in what a connection sent (its first `MAX_COMMAND` + 1
/// bytes at most): up to its first newline, or all of it when there is
/// none. Longer than `MAX_COMMAND` bytes, or not UTF-8: refused, saying
/// why.
pub fn command_line(received: &[u8]) -> Result<String, String> {
    let line = match received.iter().position(|&b| b == b'\n') {
        Some(nl) => &received[..=nl],
        None => received,
    };
    if line.len() > MAX_COMMAND || (line.len() == MAX_COMMAND && !line.ends_with(b"\n")) {
        return Err(format!("command longer than {MAX_COMMAND} bytes"));
    }
    String::from_utf8(line.to_vec()).map_err(|_| "the command is not UTF-8".into())
}

/// Reads one line of at most `MAX_COMMAND` bytes, whole by `deadline`:
/// each read waits only for what is left of it, so a byte now and then
/// does not keep the connection.
fn read_command(mut conn: &UnixStream, deadline: Instant) -> Result<String, Unread> {
    let mut buf = [0u8; MAX_COMMAND + 1];
    let mut len = 0;
    while len < buf.len() && !buf[..len].contains(&b'\n') {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Unread::Late);
        }
        let _ = conn.set_read_timeout(Some(left));
        match conn.read(&mut buf[len..]) {
            // The client has sent all it will: what came is the command.
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(Unread::Bad(format!("reading the command: {e}"))),
        }
    }
    command_line(&buf[..len]).map_err(Unread::Bad)
}

/// A command line is a value from outside, masked like any other before
/// it is shown (concertd-logging.7, Card numbers). No command holds a card number, so
/// one that does is refused before it runs, shown masked in the log and
/// the reply: it cannot reach either whole through an error that quotes
/// a word of it.
fn unmasked(line: &str) -> Result<(), String> {
    let masked = crate::wire::pan::masked_text(line);
    if masked == line {
        return Ok(());
    }
    let shown = crate::wire::pan::escape_str(masked.trim_end_matches(['\r', '\n']));
    log::warn!("control: a command holding a card number refused, not run: {shown}");
    Err(format!(
        "the command holds a card number: not run ({shown})"
    ))
}

/// Serves one connection; true when it was closed for sending no whole
/// command in time.
fn connection(
    conn: &mut UnixStream,
    accepted: Instant,
    journal: &Journal,
    ask: &Sender<Ask>,
    stage: &Stage,
    findings: &Findings,
    place: Place,
) -> bool {
    let answer = match read_command(conn, accepted + COMMAND_DEADLINE) {
        Err(Unread::Late) => {
            // A person typing into socat learns why; a slow client is only
            // closed.
            let _ = conn.write_all(
                format!(
                    "refused\nno whole command within {} s of connecting\n",
                    COMMAND_DEADLINE.as_secs()
                )
                .as_bytes(),
            );
            return true;
        }
        Err(Unread::Bad(why)) => Err(why),
        Ok(line) => match unmasked(&line).and_then(|()| Command::parse(&line)) {
            Ok(Command::Watch) => {
                drop(place);
                watch::watch(conn);
                return false;
            }
            parsed => parsed.and_then(|c| run(c, journal, ask, stage, findings)),
        },
    };
    let text = match answer {
        Ok(t) => format!("ok\n{t}"),
        Err(e) => format!("refused\n{e}"),
    };
    let text = if text.ends_with('\n') {
        text
    } else {
        text + "\n"
    };
    // A client gone before reading its answer loses only that answer.
    let _ = conn.write_all(text.as_bytes());
    drop(text);
    give_back();
    false
}

/// Returns the free memory of the allocator's arenas to the system, once
/// a command's answer is written and freed: a read's buffers, records and
/// answer would otherwise stay resident in the arena of the connection's
/// thread, and the daemon's RSS would keep the high-water mark of every
/// `show` and `totals`.
fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}
