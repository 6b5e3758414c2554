//! Errors that stop concertd (or one of its tools) from starting or running.

use std::fmt;
use std::io;
use std::net::SocketAddr;

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
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) => f.write_str(m),
            Error::ConfigRead { file, source } => write!(f, "{file}: {source}"),
            Error::Config { file, line, msg } => write!(f, "{file}:{line}: {msg}"),
            Error::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
        }
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
