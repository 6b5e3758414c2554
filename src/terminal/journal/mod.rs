//! The journal: an append-only text file with one line per event of every
//! transaction, so that no outcome is ever lost. Lines look like
//!
//! ```text
//! 2026-11-26T16:07:28.800Z 1795709248001 begun tcp 127.0.0.1:41240 01 CZ0040320...
//! 2026-11-26T16:07:29.100Z 1795709248001 ended approved CZ0040320...AE00210...
//! 2026-11-26T16:07:29.101Z 1795709248001 delivered
//! 2026-11-26T16:07:29.101Z 1795709248002 undelivered Broken pipe (os error 32)
//! 2026-11-26T16:07:30.200Z 1795709248003 begun serial /dev/by-id/usb-Ingenico%20A 01 key=k1 CZ...
//! ```
//!
//! time, transaction id, event, then the event's fields, separated by one
//! space. A field escapes as `%XX` (two upper-case hex digits) every byte
//! that could break the line: control bytes, `%`, bytes outside ASCII and,
//! but in the last field, the space. Optional fields are written
//! `name=value` after the fixed ones (`begun`'s `key`). A frame is always
//! the last field: written as it is when it is printable ASCII starting
//! with a tag letter (every frame concertd builds), else as `%` followed
//! by the escaped bytes. Journals written before escaping existed (commit
//! c29c8b5) read the same: their fields had no space, their frames began
//! with `CZ`, and a `%` not followed by the escape of a byte the writer
//! escapes is taken literally. Card numbers are masked before a line is
//! written. Every line is ASCII.
//!
//! A generation started by a rotation begins with `TIME 0 rotated`, then
//! the records carried over, with their own times.
//!
//! An append is all or nothing: a line that fails part-way is cut off
//! before anything else is written, so a record never starts in the middle
//! of a line.

mod format;
mod lock;
pub mod read;
mod writer;

pub(crate) use format::{apply, apply_to, begun, Step};
pub use format::{
    format_line, masked, parse_line, rotation, stamp, unix_time, Event, Record, Rotation, Verdict,
};
pub use lock::{directory_of, Lock, LockError, LOCK_WAIT};
pub use writer::{carry_len, Carry, Journal};

use std::fs::File;
use std::path::{Path, PathBuf};

/// What `open` found: a torn last line, cut off, and where start-up reads
/// the records from (streamed, one line at a time: never held whole).
#[derive(Debug)]
pub struct Contents {
    /// A torn last line, cut off at start-up.
    pub torn: Option<String>,
    pub(crate) source: Source,
}

#[derive(Debug)]
pub(crate) enum Source {
    /// The journal's files: the journal (through a copy of its descriptor,
    /// `len` bytes of whole lines) and its kept generations, by name.
    Files {
        path: PathBuf,
        keep: u32,
        newest: File,
        len: u64,
    },
    /// Records given whole (tests, fuzzing).
    Given(Vec<Record>),
}

/// Every record of the kept generations, read whole: for tests and tools,
/// never for the daemon.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Transactions in id order, carried copies merged.
    pub records: Vec<Record>,
    /// Lines that could not be read, those that are not UTF-8 included.
    pub bad_lines: usize,
    pub torn: Option<String>,
}

impl Contents {
    /// Records to start from instead of the files.
    pub fn given(records: Vec<Record>) -> Contents {
        Contents {
            torn: None,
            source: Source::Given(records),
        }
    }
}

pub(crate) fn generation(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

#[cfg(test)]
mod testing {
    //! Helpers the journal's unit tests share.
    use super::*;
    use std::fs;
    use std::io;

    /// The journal opened, and everything it holds read whole.
    pub(super) fn open(p: &Path, max_size: u64, keep: u32) -> io::Result<(Journal, Loaded)> {
        let (j, c) = Journal::open(p, max_size, keep)?;
        let l = crate::terminal::journal::read::load(&c)?;
        Ok((j, l))
    }

    pub(super) fn dir() -> PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "concertd-journal-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    pub(super) fn begun(reg: u8) -> Event {
        Event::Begun {
            channel: "tcp".into(),
            peer: "127.0.0.1:1".into(),
            register: reg,
            key: None,
            request: b"CZ0040320CA00201CB0041234CD0010CE003978CF003a b".to_vec(),
        }
    }

    pub(super) const T: &str = "2026-11-26T16:00:00.000Z";

    pub(super) fn ended() -> Event {
        Event::Ended {
            verdict: Verdict::Approved,
            answer: b"CZ0040320AE00210".to_vec(),
        }
    }
}
