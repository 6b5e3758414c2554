//! Where log lines go: stderr in the foreground (`-d`), syslog once
//! detached (facility daemon, through `syslog-socket`, /dev/log by
//! default), or a `log-file` where there is no syslog. The destination
//! can change once, when concertd detaches, so one logger serves the
//! whole life of the process.
//!
//! On stderr under systemd (stderr connected to the journal, which sets
//! JOURNAL_STREAM) each line starts with its sd-daemon(3) priority;
//! otherwise with a local timestamp and the level.

// What `concertctl watch` streams.
pub mod events;
// Log lines a peer can cause, summarised.
pub mod floodgate;

// The tools' standard output, which a closed pipe ends.
pub mod stdout;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

/// `-v` count to a level: info by default, debug at `-v`, the wire trace
/// (every frame in and out, card numbers masked) at `-vv`.
pub fn level(verbosity: usize) -> log::LevelFilter {
    match verbosity {
        0 => log::LevelFilter::Info,
        1 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

fn priority(l: log::Level) -> u8 {
    match l {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

enum Sink {
    Stderr { journal: bool },
    Syslog(UnixDatagram),
    File(File),
}

struct Logger {
    /// The level from `-v`, refined by RUST_LOG.
    filter: env_logger::Logger,
    sink: Mutex<Sink>,
}

static LOGGER: OnceLock<&'static Logger> = OnceLock::new();

/// Syslog's facility "daemon".
const DAEMON: u8 = 3 << 3;

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        self.filter.enabled(m)
    }

    fn log(&self, r: &log::Record<'_>) {
        if !self.filter.matches(r) {
            return;
        }
        let mut sink = match self.sink.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        // The last line of defence: whatever a caller forgot to escape, no
        // control or format character reaches the log (see pan::escape_line).
        let args = r.args().to_string();
        let text = crate::wire::pan::escape_line(&args);
        // Each line is formatted first and written in one call: one system
        // call per line, and a line is never split by a crash or by another
        // writer of the same file.
        let line = match &*sink {
            Sink::Stderr { journal: true } => format!("<{}>{text}\n", priority(r.level())),
            Sink::Syslog(_) => format!(
                "<{}>concertd[{}]: {text}",
                DAEMON | priority(r.level()),
                std::process::id(),
            ),
            Sink::Stderr { journal: false } | Sink::File(_) => {
                format!(
                    "{} {:<5} {text}\n",
                    crate::wire::clock::now().stamp(),
                    r.level(),
                )
            }
        };
        // A log line that cannot be written is dropped: logging must never
        // stop the service.
        let _ = match &mut *sink {
            Sink::Stderr { .. } => io::stderr().write_all(line.as_bytes()),
            Sink::Syslog(sock) => {
                // Syslog daemons take datagrams of at least 1024 bytes.
                let cut = floor_char_boundary(&line, 1024);
                sock.send(&line.as_bytes()[..cut]).map(|_| ())
            }
            Sink::File(f) => f.write_all(line.as_bytes()),
        };
    }

    fn flush(&self) {}
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    (0..=max)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

pub fn init(verbosity: usize) {
    let mut b = env_logger::Builder::new();
    b.filter_level(level(verbosity));
    if let Ok(spec) = std::env::var("RUST_LOG") {
        b.parse_filters(&spec);
    }
    let filter = b.build();
    let max = filter.filter();
    let logger: &'static Logger = Box::leak(Box::new(Logger {
        filter,
        sink: Mutex::new(Sink::Stderr {
            journal: std::env::var_os("JOURNAL_STREAM").is_some(),
        }),
    }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(max);
        let _ = LOGGER.set(logger);
    }
}

fn set_sink(s: Sink) {
    if let Some(l) = LOGGER.get() {
        match l.sink.lock() {
            Ok(mut g) => *g = s,
            Err(p) => *p.into_inner() = s,
        }
    }
}

/// A connected syslog socket at `path` (`syslog-socket`), if this
/// machine has one there.
pub fn syslog_socket(path: &Path) -> io::Result<UnixDatagram> {
    let s = UnixDatagram::unbound()?;
    s.connect(path)?;
    Ok(s)
}

/// Opened as root, before the privilege drop, possibly in a directory the
/// service account can write: a link there is refused (see
/// [`crate::config::files`]).
pub fn open_log_file(path: &Path) -> io::Result<File> {
    crate::config::files::open(
        path,
        OpenOptions::new().create(true).append(true).mode(0o640),
    )
}

/// Where logs go once detached.
pub enum Destination {
    Syslog(UnixDatagram),
    File(File),
}

pub fn detach_to(d: Destination) {
    set_sink(match d {
        Destination::Syslog(s) => Sink::Syslog(s),
        Destination::File(f) => Sink::File(f),
    });
}
