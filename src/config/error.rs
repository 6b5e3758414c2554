//! Errors that stop concertd (or one of its tools) from starting or running.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug)]
pub enum Error {
    /// Bad command line.
    Usage(String),
    /// A configuration file that cannot be read.
    ConfigRead { file: String, source: io::Error },
    /// A line of a configuration file that is wrong.
    Config {
        file: String,
        line: usize,
        msg: String,
    },
    /// A `listen` address that cannot be bound.
    Bind { addr: SocketAddr, source: io::Error },
    /// Any other I/O failure, with what was being done.
    Io { context: String, source: io::Error },
    /// The configured terminal cannot work (a program that cannot run):
    /// the `terminal` line and why.
    Terminal { line: String, msg: String },
    /// Another concertd is alive under the pid file.
    AlreadyRunning { pid: i32, pidfile: PathBuf },
    /// Another concertd holds the journal's lock: the journal, and the
    /// holder's pid when its lock file says it.
    JournalInUse { journal: PathBuf, pid: Option<i32> },
    /// The user or group to run as cannot be taken on.
    Account(String),
    /// A directory concertd must write in is missing or not the service
    /// user's: which one, and how to fix it.
    Directory(String),
    /// A second stop signal came before the running transaction ended: its
    /// outcome may be missing from the journal.
    StoppedEarly,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) => f.write_str(m),
            Error::ConfigRead { file, source } => write!(f, "{file}: {source}"),
            Error::Config { file, line, msg } => write!(f, "{file}:{line}: {msg}"),
            Error::Bind { addr, source } => {
                write!(f, "cannot listen on {addr}: {source}")?;
                f.write_str(&bind_hint(addr, source))
            }
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            // Values of the configuration file: masked (concertd-logging.7, Card numbers).
            Error::Terminal { line, msg } => write!(
                f,
                "terminal {}: {}",
                crate::wire::pan::masked_text(line),
                crate::wire::pan::masked_text(msg)
            ),
            Error::AlreadyRunning { pid, pidfile } => write!(
                f,
                "already running as pid {pid} (pid file {})",
                pidfile.display()
            ),
            Error::JournalInUse { journal, pid } => match pid {
                Some(pid) => write!(f, "journal {} in use by pid {pid}", journal.display()),
                None => write!(
                    f,
                    "journal {} in use by another process (pid unknown)",
                    journal.display()
                ),
            },
            Error::Account(m) | Error::Directory(m) => f.write_str(m),
            Error::StoppedEarly => f.write_str("stopped before the running transaction ended"),
        }
    }
}

/// What to do about a `listen` address that cannot be bound.
fn bind_hint(addr: &SocketAddr, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => {
            format!("; another process listens on {addr}: stop it, or set listen to another port")
        }
        io::ErrorKind::PermissionDenied if addr.port() < 1024 => {
            "; ports below 1024 need root or CAP_NET_BIND_SERVICE: start concertd as root \
             (it drops to user), grant it the capability, or set listen to a port from 1024"
                .into()
        }
        io::ErrorKind::PermissionDenied => {
            "; the system refuses this address to concertd's user: set listen to another".into()
        }
        io::ErrorKind::AddrNotAvailable => format!(
            "; {} is not an address of this machine: set listen to one of its own, or 0.0.0.0",
            addr.ip()
        ),
        _ => String::new(),
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::ConfigRead { source, .. }
            | Error::Bind { source, .. }
            | Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl Error {
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runtime failures have variants of their own, and say what they said
    /// when they were usage errors.
    #[test]
    fn runtime_failures_are_not_usage_errors() {
        let shown = [
            (
                Error::Terminal {
                    line: "exec /nonexistent".into(),
                    msg: "no such file".into(),
                },
                "terminal exec /nonexistent: no such file",
            ),
            (
                Error::AlreadyRunning {
                    pid: 42,
                    pidfile: PathBuf::from("/run/concertd.pid"),
                },
                "already running as pid 42 (pid file /run/concertd.pid)",
            ),
            (
                Error::JournalInUse {
                    journal: PathBuf::from("/var/lib/concertd/journal"),
                    pid: Some(42),
                },
                "journal /var/lib/concertd/journal in use by pid 42",
            ),
            (
                Error::Account("user \"nobody2\" does not exist".into()),
                "user \"nobody2\" does not exist",
            ),
            (
                Error::StoppedEarly,
                "stopped before the running transaction ended",
            ),
        ];
        for (e, text) in shown {
            assert!(!matches!(e, Error::Usage(_)));
            assert_eq!(e.to_string(), text);
        }
    }

    /// A `listen` address that cannot be bound says what to do: the
    /// cases a test run as root cannot provoke through the binary.
    #[test]
    fn bind_errors_say_the_next_step() {
        let bind = |addr: &str, kind| {
            Error::Bind {
                addr: addr.parse().unwrap(),
                source: io::Error::from(kind),
            }
            .to_string()
        };
        let low = bind("0.0.0.0:80", io::ErrorKind::PermissionDenied);
        assert!(low.starts_with("cannot listen on 0.0.0.0:80: "), "{low}");
        assert!(
            low.contains("ports below 1024 need root or CAP_NET_BIND_SERVICE"),
            "{low}"
        );
        let used = bind("127.0.0.1:8888", io::ErrorKind::AddrInUse);
        assert!(
            used.ends_with(
                "; another process listens on 127.0.0.1:8888: stop it, or set listen to another port"
            ),
            "{used}"
        );
        let away = bind("10.9.9.9:8888", io::ErrorKind::AddrNotAvailable);
        assert!(
            away.contains("10.9.9.9 is not an address of this machine"),
            "{away}"
        );
    }
}
