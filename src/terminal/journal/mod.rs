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

use crate::config::files;
use crate::wire::clock;
use crate::wire::pan;
use crate::wire::tlv::{self, Frame};
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// How a transaction ended, as the journal says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Approved,
    Declined,
    /// Nobody knows whether money moved: the service stopped mid-way, or
    /// the backend could not say.
    Unknown,
    /// Settled later: the request never ran upstream, nothing was charged
    /// (a relay whose upstream still reported its previous transaction).
    /// The register's answer stays "not ended".
    NotDone,
}

impl Verdict {
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Approved => "approved",
            Verdict::Declined => "declined",
            Verdict::Unknown => "unknown",
            Verdict::NotDone => "not-done",
        }
    }

    fn parse(s: &str) -> Option<Verdict> {
        Some(match s {
            "approved" => Verdict::Approved,
            "declined" => Verdict::Declined,
            "unknown" => Verdict::Unknown,
            "not-done" => Verdict::NotDone,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Begun {
        channel: String,
        peer: String,
        register: u8,
        /// An opaque token the worker ties to the transaction (no space);
        /// optional, lines without it read as `None`.
        key: Option<String>,
        request: Vec<u8>,
    },
    Ended {
        verdict: Verdict,
        answer: Vec<u8>,
    },
    /// A later outcome for a transaction that ended unknown (a relay
    /// that asked its upstream).
    Resolved {
        verdict: Verdict,
        answer: Vec<u8>,
    },
    /// Closed at start-up: begun before a crash, never ended.
    Recovered {
        answer: Vec<u8>,
    },
    Delivered,
    Undelivered {
        reason: String,
    },
    /// A retry, from `peer`, answered with this transaction's answer.
    Replayed {
        peer: String,
    },
    /// A relay's upstream status answer taken before the request went
    /// upstream: what a later status answer is compared with.
    UpstreamStatus {
        answer: Vec<u8>,
    },
    /// What the simulator was told to do with the transaction (its plan,
    /// quirks, a manual decision, the red key). Lines without it: none.
    Simulated {
        text: String,
    },
    /// Begun on disk, then withdrawn before it started: the serial line
    /// NAKed the request, not taken in time. Nothing ran, no answer went
    /// out.
    Withdrawn {
        reason: String,
    },
}

impl Event {
    /// The event as a line written now reads back: card numbers masked.
    pub fn masked(&self) -> Event {
        let mut ev = self.clone();
        match &mut ev {
            Event::Begun { request: f, .. }
            | Event::Ended { answer: f, .. }
            | Event::Resolved { answer: f, .. }
            | Event::Recovered { answer: f }
            | Event::UpstreamStatus { answer: f } => *f = masked(f),
            Event::Delivered
            | Event::Undelivered { .. }
            | Event::Replayed { .. }
            | Event::Simulated { .. }
            | Event::Withdrawn { .. } => {}
        }
        ev
    }
}

/// One transaction as read back from the journal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub id: u64,
    pub begun_at: String,
    pub channel: String,
    pub peer: String,
    pub register: u8,
    /// See [`Event::Begun`]; carried over on rotation.
    pub key: Option<String>,
    pub request: Vec<u8>,
    pub ended_at: Option<String>,
    pub verdict: Option<Verdict>,
    pub answer: Option<Vec<u8>>,
    pub delivered: Option<bool>,
    /// Closed by recovery rather than by its backend.
    pub recovered: bool,
    /// A relay's upstream status before the request (masked).
    pub upstream_status: Option<Vec<u8>>,
    /// Its outcome came later than its end (a `resolved` line): what
    /// `concertctl totals` lists apart.
    pub resolved: bool,
    /// Withdrawn before it started (a `withdrawn` line): verdict
    /// `NotDone`, no answer.
    pub withdrawn: bool,
}

pub struct Journal {
    path: PathBuf,
    file: File,
    /// Bytes up to the end of the last whole line: where a failed append
    /// is cut back to.
    size: u64,
    /// Bytes of the records the last rotation carried over: they are not
    /// new, and do not count toward `max_size` (else a carried set larger
    /// than it would rotate at every record).
    carried: u64,
    /// A failed append could not be cut off: the file may end in a partial
    /// line, and nothing is appended until the cut succeeds.
    dirty: bool,
    /// Records written since the last fdatasync (`note`): on disk with the
    /// next sync.
    unsynced: bool,
    max_size: u64,
    keep: u32,
    /// Where time stamps come from: now, unless a generator set a clock.
    clock: Option<Box<dyn FnMut() -> String + Send>>,
    #[cfg(test)]
    injected: Injected,
}

/// Unit-test faults at the places a real disk fails.
#[cfg(test)]
#[derive(Default)]
struct Injected {
    /// The next append writes this many bytes, then fails.
    short_write: Option<usize>,
    /// This many cuts fail.
    cut_failures: u32,
}

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

/// The journal, opened for appending (created, mode 0600, when missing)
/// without following a link: see [`files`].
fn open_append(path: &Path) -> io::Result<File> {
    files::open(
        path,
        OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(0o600),
    )
}

pub(crate) fn generation(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// One journal, one concertd: an exclusive `flock(2)` held for the
/// daemon's life on the journal's directory, and one on `JOURNAL.lock`
/// beside the journal.
///
/// The directory's lock is the one that cannot be lost: the directory is
/// never renamed nor removed while it holds the journal, whereas the
/// journal file itself is renamed by every rotation (a lock follows the
/// file, not the name, so a second daemon would find the new journal
/// unlocked) and `JOURNAL.lock` can be deleted by hand (a second daemon
/// would then create and lock a new one). Its price: one journal per
/// directory. The lock file stays for the pid of the holder, which a
/// second daemon names in its message, and for a concertd of an older
/// version, which locks only it.
///
/// The locks belong to the open files, which a fork shares: the detached
/// daemon keeps them when its parent exits. Both are opened close-on-exec
/// (as every file std opens), so a payment program never holds them; but
/// a child between its fork and its exec still does, for a moment, after
/// the daemon that forked it died: a lock held is waited for a while
/// ([`LOCK_WAIT`]) before it is said to be in use.
pub struct Lock {
    /// The journal's directory, opened read-only: the lock that counts.
    _dir: File,
    /// `JOURNAL.lock`, holding the holder's pid.
    file: File,
    path: PathBuf,
}

/// How long a lock held by another process is waited for at start.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Why the lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds it; the pid it wrote, when readable and
    /// alive.
    Held(Option<i32>),
    /// The journal itself cannot be one (a link, not a regular file, no
    /// such directory): said of the journal, as its opening would.
    Journal(io::Error),
    /// The lock file cannot be opened or locked.
    Io(io::Error),
}

/// The directory a journal lives in.
pub fn directory_of(journal: &Path) -> &Path {
    match journal.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Tries an exclusive `flock` without blocking: false when another open
/// file holds it.
fn try_flock(f: &File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor `f` owns.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

impl Lock {
    /// The lock file of the journal at `journal`.
    pub fn path_of(journal: &Path) -> PathBuf {
        let mut s = journal.as_os_str().to_owned();
        s.push(".lock");
        PathBuf::from(s)
    }

    /// Takes the lock, waiting [`LOCK_WAIT`] at most for a holder to let
    /// it go, and writes our pid in it.
    pub fn take(journal: &Path) -> Result<Lock, LockError> {
        Lock::take_within(journal, LOCK_WAIT)
    }

    /// Takes the lock, waiting `wait` at most.
    pub fn take_within(journal: &Path, wait: std::time::Duration) -> Result<Lock, LockError> {
        // A journal that `open` would refuse is refused first, before a
        // lock file is made beside it (`journal /dev/null`: no
        // /dev/null.lock).
        files::no_link(journal).map_err(LockError::Journal)?;
        if fs::metadata(journal).is_ok_and(|m| !m.is_file()) {
            return Err(LockError::Journal(io::Error::other("not a regular file")));
        }
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(directory_of(journal))
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => LockError::Journal(e),
                _ => LockError::Io(io::Error::new(
                    e.kind(),
                    format!("{}: {e}", directory_of(journal).display()),
                )),
            })?;
        let path = Lock::path_of(journal);
        let mut file = files::open(
            &path,
            OpenOptions::new()
                .create(true)
                .read(true)
                .write(true)
                .mode(0o600),
        )
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => LockError::Journal(e),
            _ => LockError::Io(e),
        })?;
        if !file.metadata().map_err(LockError::Io)?.is_file() {
            return Err(LockError::Io(io::Error::other("not a regular file")));
        }
        let deadline = std::time::Instant::now() + wait;
        let (mut file_locked, mut said) = (false, false);
        loop {
            // The file first, then the directory, always in that order: a
            // daemon holding the directory holds its file already, so
            // nobody waits on a daemon that waits on them.
            if !file_locked {
                file_locked = try_flock(&file).map_err(LockError::Io)?;
            }
            if file_locked && try_flock(&dir).map_err(LockError::Io)? {
                break;
            }
            let mut text = String::new();
            let _ = file.seek(SeekFrom::Start(0));
            let _ = io::Read::read_to_string(&mut file, &mut text);
            let pid = text.trim().parse().ok().filter(|&p| files::alive(p));
            if std::time::Instant::now() >= deadline {
                return Err(LockError::Held(pid));
            }
            if !std::mem::replace(&mut said, true) {
                let by = pid.map_or("another process".to_string(), |p| format!("pid {p}"));
                log::warn!(
                    "journal {}: locked by {by}; waiting {}s at most for it to end",
                    journal.display(),
                    wait.as_secs_f32()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let mut lock = Lock {
            _dir: dir,
            file,
            path,
        };
        lock.mine().map_err(LockError::Io)?;
        Ok(lock)
    }

    /// Writes the calling process's pid: again in the detached daemon,
    /// which holds the lock after the fork under a pid of its own.
    pub fn mine(&mut self) -> io::Result<()> {
        let pid = format!("{}\n", std::process::id());
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(pid.as_bytes())
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Gives the lock file, by its descriptor, to `uid`:`gid`: a later
    /// start as that user opens it again.
    pub fn give(&self, uid: libc::uid_t, gid: libc::gid_t) -> io::Result<()> {
        files::fchown(&self.file, uid, gid)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))
    }
}

/// Now, in UTC: `2026-11-26T16:07:28.800Z`.
pub fn stamp() -> String {
    let (s, ms) = clock::unix_now();
    let c = clock::utc(s, ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second, c.millis
    )
}

/// Unix seconds of a journal time stamp.
pub fn unix_time(stamp: &str) -> Option<i64> {
    let b = stamp.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| stamp.get(r)?.parse::<i64>().ok();
    let days = clock::days_from_civil(num(0..4)?, num(5..7)?, num(8..10)?);
    Some(days * 86_400 + num(11..13)? * 3600 + num(14..16)? * 60 + num(17..19)?)
}

fn mask_once(raw: &[u8]) -> Vec<u8> {
    match Frame::decode(raw) {
        // Element by element, so that a digit run never straddles a
        // length field.
        Ok(f) => {
            let mut out = Frame::new();
            for e in f.elements() {
                let mut v = e.value.clone();
                pan::mask_element(e.tag, &mut v, None);
                out.push(e.tag, v);
            }
            out.encode()
        }
        Err(_) => {
            let mut v = raw.to_vec();
            pan::mask_in_place(&mut v);
            v
        }
    }
}

/// A frame with its card numbers masked. Masking again changes nothing
/// (masking can only shorten digit runs, so this ends), which is what lets
/// a line read back be written again as the same line.
pub fn masked(frame: &[u8]) -> Vec<u8> {
    let mut cur = frame.to_vec();
    loop {
        let next = mask_once(&cur);
        if next == cur {
            return cur;
        }
        cur = next;
    }
}

/// Bytes a field never holds as they are. `space`: the field is not the
/// last, so a space would end it.
fn escaped(b: u8, space: bool) -> bool {
    b < 0x20 || b == b'%' || b >= 0x7f || (space && b == b' ')
}

fn escape_into(out: &mut String, bytes: &[u8], space: bool) {
    for &b in bytes {
        if escaped(b, space) {
            let _ = write!(out, "%{b:02X}");
        } else {
            out.push(char::from(b));
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// The bytes of an escaped field. Only the escape of a byte the writer
/// escapes is one: any other `%` is that character, as c29c8b5 wrote it
/// (an IPv6 peer's `%scope`).
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                let v = h << 4 | l;
                if escaped(v, true) {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// A text field read back; `None` when its bytes are not UTF-8.
fn text(s: &str) -> Option<String> {
    String::from_utf8(unescape(s)).ok()
}

/// A frame as the last field of a line.
fn frame_into(out: &mut String, frame: &[u8]) {
    let plain = frame.first().is_none_or(u8::is_ascii_uppercase)
        && frame.iter().all(|&b| tlv::is_printable(b));
    if plain {
        // Printable ASCII: one char per byte.
        out.extend(frame.iter().map(|&b| char::from(b)));
    } else {
        out.push('%');
        escape_into(out, frame, false);
    }
}

fn frame_of(s: &str) -> Vec<u8> {
    match s.strip_prefix('%') {
        Some(e) => unescape(e),
        None => s.as_bytes().to_vec(),
    }
}

/// A line being written.
struct LineOut(String);

impl LineOut {
    fn new(time: &str, id: u64, event: &str) -> LineOut {
        let mut s = String::new();
        escape_into(&mut s, time.as_bytes(), true);
        let _ = write!(s, " {id} {event}");
        LineOut(s)
    }

    fn word(&mut self, w: &str) {
        self.0.push(' ');
        escape_into(&mut self.0, w.as_bytes(), true);
    }

    fn named(&mut self, name: &str, v: Option<&str>) {
        if let Some(v) = v {
            let _ = write!(self.0, " {name}=");
            escape_into(&mut self.0, v.as_bytes(), true);
        }
    }

    /// Text as the last field: spaces stay as they are.
    fn last_text(&mut self, t: &str) {
        self.0.push(' ');
        escape_into(&mut self.0, t.as_bytes(), false);
    }

    fn last_frame(&mut self, f: &[u8]) {
        self.0.push(' ');
        frame_into(&mut self.0, &masked(f));
    }
}

/// A line being read: its fields one by one.
struct LineIn<'a> {
    rest: Option<&'a str>,
}

impl<'a> LineIn<'a> {
    /// The next field as written; `None` past the end of the line.
    fn word(&mut self) -> Option<&'a str> {
        let r = self.rest?;
        Some(match r.split_once(' ') {
            Some((w, more)) => {
                self.rest = Some(more);
                w
            }
            None => {
                self.rest = None;
                r
            }
        })
    }

    /// An optional `name=value` field: taken when the next field is one.
    /// `None` for a value that is not UTF-8.
    fn named(&mut self, name: &str) -> Option<Option<String>> {
        let value = self
            .rest
            .and_then(|r| r.strip_prefix(name))
            .and_then(|r| r.strip_prefix('='));
        if value.is_none() {
            return Some(None);
        }
        self.word()
            .and_then(|w| w.split_once('='))
            .and_then(|(_, v)| text(v))
            .map(Some)
    }

    /// Everything after the fields read: the last field.
    fn last(&mut self) -> Option<&'a str> {
        self.rest.take()
    }
}

/// The text of one line, without its newline.
pub fn format_line(time: &str, id: u64, ev: &Event) -> String {
    let mut l;
    match ev {
        Event::Begun {
            channel,
            peer,
            register,
            key,
            request,
        } => {
            l = LineOut::new(time, id, "begun");
            l.word(channel);
            l.word(peer);
            l.word(&format!("{register:02}"));
            l.named("key", key.as_deref());
            l.last_frame(request);
        }
        Event::Ended { verdict, answer } => {
            l = LineOut::new(time, id, "ended");
            l.word(verdict.word());
            l.last_frame(answer);
        }
        Event::Recovered { answer } => {
            l = LineOut::new(time, id, "ended");
            l.word("unknown-recovered");
            l.last_frame(answer);
        }
        Event::Resolved { verdict, answer } => {
            l = LineOut::new(time, id, "resolved");
            l.word(verdict.word());
            l.last_frame(answer);
        }
        Event::Delivered => l = LineOut::new(time, id, "delivered"),
        Event::Undelivered { reason } => {
            l = LineOut::new(time, id, "undelivered");
            l.last_text(reason);
        }
        Event::Replayed { peer } => {
            l = LineOut::new(time, id, "replayed");
            l.last_text(peer);
        }
        Event::UpstreamStatus { answer } => {
            l = LineOut::new(time, id, "upstream-status");
            l.last_frame(answer);
        }
        Event::Simulated { text } => {
            l = LineOut::new(time, id, "simulated");
            l.last_text(text);
        }
        Event::Withdrawn { reason } => {
            l = LineOut::new(time, id, "withdrawn");
            l.last_text(reason);
        }
    }
    l.0
}

/// Reads one line back; `None` if it is not a journal line.
pub fn parse_line(line: &str) -> Option<(String, u64, Event)> {
    let mut l = LineIn { rest: Some(line) };
    let time = text(l.word()?)?;
    let id: u64 = l.word()?.parse().ok()?;
    let ev = match l.word()? {
        "begun" => {
            let channel = text(l.word()?)?;
            let peer = text(l.word()?)?;
            let register = l.word()?.parse().ok()?;
            let key = l.named("key")?;
            let request = frame_of(l.last()?);
            Event::Begun {
                channel,
                peer,
                register,
                key,
                request,
            }
        }
        "ended" => {
            let v = l.word()?;
            let answer = frame_of(l.last()?);
            if v == "unknown-recovered" {
                Event::Recovered { answer }
            } else {
                Event::Ended {
                    verdict: Verdict::parse(v)?,
                    answer,
                }
            }
        }
        "resolved" => {
            let verdict = Verdict::parse(l.word()?)?;
            Event::Resolved {
                verdict,
                answer: frame_of(l.last()?),
            }
        }
        "delivered" => Event::Delivered,
        "undelivered" => Event::Undelivered {
            reason: text(l.last().unwrap_or(""))?,
        },
        "replayed" => Event::Replayed {
            peer: text(l.last().unwrap_or(""))?,
        },
        "upstream-status" => Event::UpstreamStatus {
            answer: frame_of(l.last()?),
        },
        "simulated" => Event::Simulated {
            text: text(l.last().unwrap_or(""))?,
        },
        "withdrawn" => Event::Withdrawn {
            reason: text(l.last().unwrap_or(""))?,
        },
        _ => return None,
    };
    Some((time, id, ev))
}

/// Merges every line's event into the records, one per id: a carried-over
/// copy after rotation repeats a record, the first is kept. (For a read
/// that holds everything: tests, tools.)
pub(crate) fn apply(
    records: &mut Vec<Record>,
    index: &mut std::collections::HashMap<u64, usize>,
    time: String,
    id: u64,
    ev: Event,
) {
    match begun(time, id, ev) {
        Step::Begun(r) => {
            if index.contains_key(&id) {
                return;
            }
            index.insert(id, records.len());
            records.push(r);
        }
        Step::Then(time, ev) => {
            if let Some(&i) = index.get(&id) {
                apply_to(&mut records[i], time, ev);
            }
        }
    }
}

/// A line's event, as a reader takes it: a transaction's start, or what
/// changes one already started.
pub(crate) enum Step {
    Begun(Record),
    Then(String, Event),
}

/// The record a `begun` event starts; any other event back.
pub(crate) fn begun(time: String, id: u64, ev: Event) -> Step {
    match ev {
        Event::Begun {
            channel,
            peer,
            register,
            key,
            request,
        } => Step::Begun(Record {
            id,
            begun_at: time,
            channel,
            peer,
            register,
            key,
            request,
            ..Record::default()
        }),
        ev => Step::Then(time, ev),
    }
}

/// What a later event of its transaction changes in a record.
pub(crate) fn apply_to(r: &mut Record, time: String, ev: Event) {
    match ev {
        Event::Ended { verdict, answer } => {
            r.ended_at = Some(time);
            r.verdict = Some(verdict);
            r.answer = Some(answer);
        }
        Event::Recovered { answer } => {
            r.ended_at = Some(time);
            r.verdict = Some(Verdict::Unknown);
            r.answer = Some(answer);
            r.recovered = true;
        }
        Event::Resolved { verdict, answer } => {
            r.verdict = Some(verdict);
            r.answer = Some(answer);
            r.recovered = false;
            r.resolved = true;
        }
        Event::Delivered => r.delivered = Some(true),
        Event::Undelivered { .. } => r.delivered = Some(false),
        Event::UpstreamStatus { answer } => r.upstream_status = Some(answer),
        Event::Withdrawn { .. } => {
            r.ended_at = Some(time);
            r.verdict = Some(Verdict::NotDone);
            r.withdrawn = true;
        }
        Event::Begun { .. } | Event::Replayed { .. } | Event::Simulated { .. } => {}
    }
}

/// The first line of a generation that a rotation started: `TIME 0
/// rotated carried=BYTES last=ID [whole]`. Records carried over follow it
/// with their own, older, times; so it alone says from when on the
/// generation holds everything. `carried`: the bytes of the records carried
/// over, which follow it (readers know a carried copy by where it stands).
/// `last`: the highest transaction id given out before it, so that ids are
/// never given again whatever generation is read. `whole`: the records
/// carried over hold everything start-up needs from the older generations
/// (start-up may read this file alone). Generations written before these
/// fields existed have a bare `TIME 0 rotated`. (Id 0 is never a
/// transaction's: ids start at the start time x 1000.)
fn rotation_line(time: &str, carried: u64, last: u64, whole: bool) -> String {
    let whole = if whole { " whole" } else { "" };
    format!("{time} 0 rotated carried={carried} last={last}{whole}\n")
}

/// A generation's first line when a rotation started it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rotation {
    /// When the rotation was.
    pub at: String,
    /// Bytes of the carried records after this line, when said.
    pub carried: Option<u64>,
    /// The highest id given out before, when said.
    pub last: Option<u64>,
    /// Start-up may read this generation alone.
    pub whole: bool,
}

/// The rotation a line says, if it is a rotation line.
pub fn rotation(line: &[u8]) -> Option<Rotation> {
    let s = std::str::from_utf8(line).ok()?;
    let mut words = s.split(' ');
    let at = words.next().filter(|t| !t.is_empty())?;
    if words.next()? != "0" || words.next()? != "rotated" {
        return None;
    }
    let mut r = Rotation {
        at: at.to_string(),
        ..Rotation::default()
    };
    for w in words {
        match w.split_once('=') {
            Some(("carried", v)) => r.carried = Some(v.parse().ok()?),
            Some(("last", v)) => r.last = Some(v.parse().ok()?),
            None if w == "whole" => r.whole = true,
            _ => return None,
        }
    }
    Some(r)
}

/// The time of a rotation's first line.
#[cfg(test)]
fn rotated_at(line: &[u8]) -> Option<String> {
    rotation(line).map(|r| r.at)
}

/// Cuts off a torn last line (the bytes after the last newline), reading
/// only the file's tail. The length of the whole lines, and the torn line
/// (its first 4K, for the log).
fn cut_torn(file: &File) -> io::Result<(u64, Option<String>)> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    let mut end = len;
    let mut chunk = vec![0; 64 << 10];
    let mut whole = 0;
    while end > 0 {
        let n = end.min(chunk.len() as u64) as usize;
        file.read_exact_at(&mut chunk[..n], end - n as u64)?;
        if let Some(p) = chunk[..n].iter().rposition(|&b| b == b'\n') {
            whole = end - n as u64 + p as u64 + 1;
            break;
        }
        end -= n as u64;
    }
    if whole == len {
        return Ok((len, None));
    }
    let shown = (len - whole).min(4096) as usize;
    let mut torn = vec![0; shown];
    file.read_exact_at(&mut torn, whole)?;
    file.set_len(whole)?;
    Ok((whole, Some(String::from_utf8_lossy(&torn).into_owned())))
}

impl Journal {
    /// Opens (creating, mode 0600) the journal and cuts off a torn last
    /// line; what it holds is read by start-up from the returned
    /// [`Contents`], one line at a time.
    pub fn open(path: &Path, max_size: u64, keep: u32) -> io::Result<(Journal, Contents)> {
        // Refused before anything is created: a generation that is a link
        // (or has another name), as reading it later would refuse it.
        for n in 1..=keep {
            match files::open(&generation(path, n), OpenOptions::new().read(true)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        // Create it first so that an unwritable place fails here, at start.
        let mut file = open_append(path)?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        let (len, torn) = cut_torn(&file)?;
        let size = file.seek(SeekFrom::End(0))?;
        let contents = Contents {
            torn,
            source: Source::Files {
                path: path.to_path_buf(),
                keep,
                newest: file.try_clone()?,
                len,
            },
        };
        Ok((
            Journal {
                path: path.to_path_buf(),
                file,
                size,
                // Unknown after a restart: the whole file counts, so that
                // a file never grows past `max_size` plus one carried set.
                carried: 0,
                dirty: false,
                unsynced: false,
                #[cfg(test)]
                injected: Injected::default(),
                max_size,
                keep,
                clock: None,
            },
            contents,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Time stamps from `clock` from now on, instead of the time now: for
    /// a journal generated as if written over days (`make bench`).
    pub fn set_clock(&mut self, clock: impl FnMut() -> String + Send + 'static) {
        self.clock = Some(Box::new(clock));
    }

    fn now(&mut self) -> String {
        match &mut self.clock {
            Some(c) => c(),
            None => stamp(),
        }
    }

    /// Appends one event and waits until it is on disk. All or nothing:
    /// when the append fails (short write, full disk, `EFBIG` past a file
    /// size limit, failed `fdatasync`), what it wrote is cut off before the
    /// error is returned, so that the next record starts a line.
    pub fn record(&mut self, id: u64, ev: &Event) -> io::Result<()> {
        self.write(id, ev, true)
    }

    /// Appends one event now, and leaves it to the next sync: for records
    /// no answer depends on (a delivery report, a replay, an upstream
    /// status), so that a transaction costs two syncs, not three. A crash
    /// before that sync loses at most such records; the transaction's
    /// outcome is already on disk.
    pub fn note(&mut self, id: u64, ev: &Event) -> io::Result<()> {
        self.write(id, ev, false)
    }

    /// Whether records written by `note` still wait for a sync.
    pub fn unsynced(&self) -> bool {
        self.unsynced
    }

    /// Puts on disk what `note` wrote.
    /// A failed sync is not tried again: after a failed fdatasync the
    /// kernel may have dropped the pages, and trying again proves nothing.
    pub fn sync(&mut self) -> io::Result<()> {
        if !std::mem::take(&mut self.unsynced) {
            return Ok(());
        }
        self.file.sync_data()
    }

    fn write(&mut self, id: u64, ev: &Event, sync: bool) -> io::Result<()> {
        let name = match ev {
            Event::Begun { .. } => "begun",
            Event::Ended { .. } => "ended",
            Event::Withdrawn { .. } => "withdrawn",
            _ => "other",
        };
        if self.dirty {
            // Appending after a partial line would glue this record to it.
            self.cut().map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "{name} record refused: the journal still ends in a partial line \
                         that cannot be cut off ({e})"
                    ),
                )
            })?;
            self.dirty = false;
            log::warn!(
                "{}: partial line of a failed append cut off at last",
                self.path.display()
            );
        }
        let mut line = format_line(&self.now(), id, ev);
        line.push('\n');
        if let Err(e) = self.append(line.as_bytes(), sync) {
            return Err(match self.cut() {
                Ok(()) => io::Error::new(
                    e.kind(),
                    format!(
                        "{e} (the {name} record is not written: cut back to the last whole line)"
                    ),
                ),
                Err(c) => {
                    self.dirty = true;
                    io::Error::new(
                        e.kind(),
                        format!(
                            "{e}; cutting the {name} record back to the last whole line failed \
                             too ({c}): no record is appended until that cut succeeds"
                        ),
                    )
                }
            });
        }
        self.size += line.len() as u64;
        Ok(())
    }

    fn append(&mut self, line: &[u8], sync: bool) -> io::Result<()> {
        #[cfg(test)]
        if let Some(n) = self.injected.short_write.take() {
            self.file.write_all(&line[..n.min(line.len())])?;
            return Err(io::Error::other("injected short write"));
        }
        self.file.write_all(line)?;
        if sync {
            // Also puts on disk whatever `note` wrote before.
            self.file.sync_data()?;
            self.unsynced = false;
        } else {
            self.unsynced = true;
        }
        Ok(())
    }

    /// Cuts the file back to its last whole line, durably.
    fn cut(&mut self) -> io::Result<()> {
        #[cfg(test)]
        if self.injected.cut_failures > 0 {
            self.injected.cut_failures -= 1;
            return Err(io::Error::other("injected cut failure"));
        }
        self.file.set_len(self.size)?;
        self.file.sync_data()
    }

    /// Past `journal-size` of records appended since the last rotation.
    pub fn needs_rotation(&self) -> bool {
        self.size.saturating_sub(self.carried) > self.max_size
    }

    /// How much of a new generation the records carried over may fill
    /// before the optional ones (the retry window's) stop being carried:
    /// half of `journal-size`.
    pub fn carry_budget(&self) -> u64 {
        self.max_size / 2
    }

    /// Gives the journal, by its open descriptor, and its older
    /// generations, each opened without following a link, to `uid`:`gid`.
    pub fn give(&self, uid: libc::uid_t, gid: libc::gid_t) -> io::Result<()> {
        files::fchown(&self.file, uid, gid)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))?;
        for n in 1..=self.keep {
            let g = generation(&self.path, n);
            match files::give(&g, uid, gid) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) if files::is_refused(&e) => return Err(e),
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", g.display()))),
            }
        }
        Ok(())
    }

    /// Starts a new generation: journal.N-1 -> journal.N ... journal ->
    /// journal.1, then a fresh journal that starts with a `rotated` line
    /// (its start, for `concertctl totals`, and what `carry` says: see
    /// [`Carry`]) and then receives the records of `carry` (those that
    /// must outlive the oldest generation), in id order. The fresh file is
    /// written and synced under a temporary name and renamed into place,
    /// so that a crash leaves either the old journal or the complete new
    /// one.
    ///
    /// Nothing is written through a link: the temporary is created anew
    /// (`O_EXCL|O_NOFOLLOW`, whatever was at its name removed first), the
    /// renames move names, not what a link points to, and the descriptor
    /// of the temporary goes on as the journal, never opened again by
    /// name.
    pub fn rotate(&mut self, carry: Carry) -> io::Result<()> {
        // What `note` wrote goes to disk with the generation it is in.
        self.sync()?;
        let tmp = generation(&self.path, 0);
        let mut f = files::create_new(&tmp, OpenOptions::new().append(true).read(true), 0o600)?;
        let Carry {
            mut pieces,
            bytes,
            last,
            whole,
            ..
        } = carry;
        pieces.sort_by_key(|(id, _)| *id);
        let at = self.now();
        {
            let mut w = io::BufWriter::with_capacity(64 << 10, &mut f);
            w.write_all(rotation_line(&at, bytes, last, whole).as_bytes())?;
            for (_, text) in &pieces {
                w.write_all(text.as_bytes())?;
            }
            w.flush()?;
        }
        drop(pieces);
        f.sync_all()?;
        if self.keep == 0 {
            fs::rename(&tmp, &self.path)?;
        } else {
            for n in (1..self.keep).rev() {
                let from = generation(&self.path, n);
                if fs::symlink_metadata(&from).is_ok() {
                    fs::rename(&from, generation(&self.path, n + 1))?;
                }
            }
            fs::rename(&self.path, generation(&self.path, 1))?;
            fs::rename(&tmp, &self.path)?;
        }
        if let Some(dir) = self.path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        self.size = f.seek(SeekFrom::End(0))?;
        self.carried = self.size;
        self.file = f;
        // The new file holds whole lines only.
        self.dirty = false;
        Ok(())
    }
}

/// The records a rotation carries over, each formatted once, as the lines
/// that reproduce it: what they weigh is what is written.
#[derive(Debug, Default)]
pub struct Carry {
    pieces: Vec<(u64, String)>,
    ids: std::collections::HashSet<u64>,
    bytes: u64,
    /// The highest transaction id given out so far (see [`Rotation`]).
    pub last: u64,
    /// The records carried hold everything start-up needs from the older
    /// generations (see [`Rotation`]).
    pub whole: bool,
}

impl Carry {
    /// All of `records`, whatever they weigh.
    pub fn of(records: &[Record]) -> Carry {
        let mut c = Carry::default();
        for r in records {
            c.take(r);
        }
        c
    }

    /// Whether record `id` is carried.
    pub fn has(&self, id: u64) -> bool {
        self.ids.contains(&id)
    }

    /// Bytes of the records carried.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// How many records are carried.
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Carries `r`, once, whatever it weighs.
    pub fn take(&mut self, r: &Record) {
        if self.ids.insert(r.id) {
            let text = carry_lines(r);
            self.bytes += text.len() as u64;
            self.pieces.push((r.id, text));
        }
    }

    /// Carries the records of `group` not carried yet, all or none: all
    /// when `forced`, else only when the carried set stays within `budget`
    /// bytes. Whether they are carried. Each is formatted once.
    pub fn take_all(&mut self, group: &[&Record], budget: u64, forced: bool) -> bool {
        let mut seen = std::collections::HashSet::new();
        let texts: Vec<(u64, String)> = group
            .iter()
            .filter(|r| !self.ids.contains(&r.id) && seen.insert(r.id))
            .map(|r| (r.id, carry_lines(r)))
            .collect();
        let bytes: u64 = texts.iter().map(|(_, t)| t.len() as u64).sum();
        if !forced && self.bytes + bytes > budget {
            return false;
        }
        for (id, text) in texts {
            self.ids.insert(id);
            self.pieces.push((id, text));
        }
        self.bytes += bytes;
        true
    }
}

/// The bytes a record takes when carried over to a new generation.
pub fn carry_len(r: &Record) -> u64 {
    carry_lines(r).len() as u64
}

/// The lines that reproduce a record in a new generation.
fn carry_lines(r: &Record) -> String {
    let mut s = format_line(
        &r.begun_at,
        r.id,
        &Event::Begun {
            channel: r.channel.clone(),
            peer: r.peer.clone(),
            register: r.register,
            key: r.key.clone(),
            request: r.request.clone(),
        },
    );
    s.push('\n');
    if let Some(answer) = &r.upstream_status {
        let ev = Event::UpstreamStatus {
            answer: answer.clone(),
        };
        s.push_str(&format_line(&r.begun_at, r.id, &ev));
        s.push('\n');
    }
    if let (Some(at), Some(answer)) = (&r.ended_at, &r.answer) {
        let ev = if r.recovered {
            Event::Recovered {
                answer: answer.clone(),
            }
        } else {
            Event::Ended {
                verdict: r.verdict.unwrap_or(Verdict::Unknown),
                answer: answer.clone(),
            }
        };
        s.push_str(&format_line(at, r.id, &ev));
        s.push('\n');
        if r.resolved {
            // Still listed apart by `concertctl totals` once carried over.
            let ev = Event::Resolved {
                verdict: r.verdict.unwrap_or(Verdict::Unknown),
                answer: answer.clone(),
            };
            s.push_str(&format_line(at, r.id, &ev));
            s.push('\n');
        }
    }
    if let (true, Some(at)) = (r.withdrawn, &r.ended_at) {
        let ev = Event::Withdrawn {
            reason: "(carried over)".into(),
        };
        s.push_str(&format_line(at, r.id, &ev));
        s.push('\n');
    }
    match r.delivered {
        Some(true) => s.push_str(&format_line(
            r.ended_at.as_deref().unwrap_or(""),
            r.id,
            &Event::Delivered,
        )),
        Some(false) => s.push_str(&format_line(
            r.ended_at.as_deref().unwrap_or(""),
            r.id,
            &Event::Undelivered {
                reason: "(carried over)".into(),
            },
        )),
        None => return s,
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The journal opened, and everything it holds read whole.
    fn open(p: &Path, max_size: u64, keep: u32) -> io::Result<(Journal, Loaded)> {
        let (j, c) = Journal::open(p, max_size, keep)?;
        let l = crate::terminal::generations::load(&c)?;
        Ok((j, l))
    }

    fn dir() -> PathBuf {
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

    fn begun(reg: u8) -> Event {
        Event::Begun {
            channel: "tcp".into(),
            peer: "127.0.0.1:1".into(),
            register: reg,
            key: None,
            request: b"CZ0040320CA00201CB0041234CD0010CE003978CF003a b".to_vec(),
        }
    }

    const T: &str = "2026-11-26T16:00:00.000Z";

    fn round_trip(ev: &Event) -> String {
        let l = format_line(T, 42, ev);
        assert_eq!(parse_line(&l), Some((T.into(), 42, ev.clone())), "{l}");
        assert!(l.is_ascii() && !l.contains('\n'), "{l:?}");
        l
    }

    #[test]
    fn lines_round_trip() {
        for ev in [
            begun(1),
            Event::Ended {
                verdict: Verdict::Approved,
                answer: b"CZ0040320AE00210CF003a b".to_vec(),
            },
            Event::Recovered {
                answer: b"CZ0040320AE00201AF00207".to_vec(),
            },
            Event::Delivered,
            Event::Resolved {
                verdict: Verdict::Approved,
                answer: b"CZ0040320AE00210".to_vec(),
            },
            Event::Undelivered {
                reason: "Broken pipe".into(),
            },
            Event::Replayed {
                peer: "tcp 127.0.0.1:9".into(),
            },
            Event::UpstreamStatus {
                answer: b"CZ0040320CA00201CB003500CD0010CE003978AE00210AC006111111".to_vec(),
            },
            Event::Resolved {
                verdict: Verdict::NotDone,
                answer: b"CZ0040320CA00201AE00201AF00207".to_vec(),
            },
            Event::Withdrawn {
                reason: "not taken in time: NAKed, not started".into(),
            },
        ] {
            round_trip(&ev);
        }
        assert_eq!(parse_line("garbage"), None);
        assert_eq!(unix_time("2026-11-26T15:58:32.123Z"), Some(1_795_708_712));
        // The clock may cross a second between the readings: bracket it.
        let before = clock::unix_now().0;
        let t = unix_time(&stamp()).unwrap();
        let after = clock::unix_now().0;
        assert!(before <= t && t <= after, "{before} <= {t} <= {after}");
    }

    #[test]
    fn fields_with_spaces_newlines_and_odd_bytes_round_trip() {
        let l = round_trip(&Event::Begun {
            channel: "serial".into(),
            peer: "/dev/serial/by-id/usb-Ingenico A".into(),
            register: 1,
            key: None,
            request: b"CZ0040320CA00201CB0041000CD0010CE003978".to_vec(),
        });
        assert!(
            l.ends_with(" begun serial /dev/serial/by-id/usb-Ingenico%20A 01 CZ0040320CA00201CB0041000CD0010CE003978"),
            "{l}"
        );
        round_trip(&Event::Begun {
            channel: "a b%\n".into(),
            peer: "é\t\u{7f}".into(),
            register: 255,
            key: Some("k 1%".into()),
            request: b"CZ0040320CF004a\nb\xff".to_vec(),
        });
        // The key is optional, and can be empty, as can every field.
        let l = round_trip(&Event::Begun {
            channel: String::new(),
            peer: String::new(),
            register: 0,
            key: Some("tok-1".into()),
            request: Vec::new(),
        });
        assert!(l.ends_with(" begun   00 key=tok-1 "), "{l:?}");
        round_trip(&Event::Undelivered {
            reason: "line one\nline two 100%".into(),
        });
        let l = round_trip(&Event::Replayed {
            peer: "serial /dev/serial/by-id/usb-Ingenico A".into(),
        });
        assert!(l.ends_with(" replayed serial /dev/serial/by-id/usb-Ingenico A"));
        // A frame: not UTF-8, a newline, a leading `%` or a non-tag start.
        for f in [
            &b"CZ0040320ZT004\xc3\x28\n\r"[..],
            b"%41",
            b"key=x CZ0040320",
            b" CZ",
            b"cz0040320",
            b"\x00",
        ] {
            let l = round_trip(&Event::Ended {
                verdict: Verdict::Declined,
                answer: f.to_vec(),
            });
            assert!(l.contains(" ended declined %"), "{l}");
        }
        assert_eq!(
            format_line(T, 1, &Event::Delivered),
            format!("{T} 1 delivered")
        );
        // The time stamp is a field too.
        let l = format_line("a b", 7, &Event::Delivered);
        assert_eq!(parse_line(&l), Some(("a b".into(), 7, Event::Delivered)));
    }

    #[test]
    fn lines_written_before_escaping_read_as_before() {
        // As c29c8b5 wrote them: nothing escaped, spaces in last fields.
        let old = [
            (
                "2026-11-26T16:07:28.800Z 1795709248001 begun tcp 127.0.0.1:41240 01 CZ0040320CA00201CB003100CD0010CE003978CF005a b%c",
                Event::Begun {
                    channel: "tcp".into(),
                    peer: "127.0.0.1:41240".into(),
                    register: 1,
                    key: None,
                    request: b"CZ0040320CA00201CB003100CD0010CE003978CF005a b%c".to_vec(),
                },
            ),
            (
                "t 5 begun tcp [fe80::1%2]:80 07 CZ0040320",
                Event::Begun {
                    channel: "tcp".into(),
                    peer: "[fe80::1%2]:80".into(),
                    register: 7,
                    key: None,
                    request: b"CZ0040320".to_vec(),
                },
            ),
            (
                "t 5 ended unknown-recovered CZ0040320AE00201AF00207",
                Event::Recovered {
                    answer: b"CZ0040320AE00201AF00207".to_vec(),
                },
            ),
            (
                "t 5 undelivered Broken pipe (os error 32)",
                Event::Undelivered {
                    reason: "Broken pipe (os error 32)".into(),
                },
            ),
            (
                "t 5 undelivered 100%ok",
                Event::Undelivered {
                    reason: "100%ok".into(),
                },
            ),
            (
                "t 5 replayed tcp 127.0.0.1:9",
                Event::Replayed {
                    peer: "tcp 127.0.0.1:9".into(),
                },
            ),
            ("t 5 delivered", Event::Delivered),
        ];
        for (line, ev) in old {
            assert_eq!(parse_line(line).map(|(_, _, e)| e), Some(ev), "{line}");
        }
        for bad in [
            "t 5 begun tcp 127.0.0.1:1 01",
            "t 5 begun tcp 127.0.0.1:1 x1 CZ",
            "t 5 ended approved",
            "t 5 ended maybe CZ",
            "t x delivered",
            "t 5 begun tcp %FF 01 CZ",
            "t 5 begun tcp p 01 key=%C3",
        ] {
            assert_eq!(parse_line(bad), None, "{bad}");
        }
    }

    fn odd_text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just(' '),
                Just('%'),
                Just('\n'),
                Just('='),
                Just('é'),
                proptest::char::range('0', 'F'),
                any::<char>(),
            ],
            0..12,
        )
        .prop_map(|v| v.into_iter().collect())
    }

    fn odd_frame() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40),
            // Frames as concertd writes them, with digit runs that may be
            // card numbers.
            proptest::collection::vec(
                prop_oneof![
                    Just(b'C'),
                    Just(b' '),
                    Just(b'%'),
                    b'0'..=b'9',
                    0x20u8..0x7f
                ],
                0..60
            )
            .prop_map(|v| [b"CZ0040320CF".to_vec(), v].concat()),
        ]
    }

    fn any_verdict() -> impl Strategy<Value = Verdict> {
        prop_oneof![
            Just(Verdict::Approved),
            Just(Verdict::Declined),
            Just(Verdict::Unknown)
        ]
    }

    fn any_event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (
                odd_text(),
                odd_text(),
                any::<u8>(),
                proptest::option::of(odd_text()),
                odd_frame()
            )
                .prop_map(|(channel, peer, register, key, request)| Event::Begun {
                    channel,
                    peer,
                    register,
                    key,
                    request
                }),
            (any_verdict(), odd_frame())
                .prop_map(|(verdict, answer)| Event::Ended { verdict, answer }),
            (any_verdict(), odd_frame())
                .prop_map(|(verdict, answer)| Event::Resolved { verdict, answer }),
            odd_frame().prop_map(|answer| Event::Recovered { answer }),
            Just(Event::Delivered),
            odd_text().prop_map(|reason| Event::Undelivered { reason }),
            odd_text().prop_map(|peer| Event::Replayed { peer }),
            odd_text().prop_map(|text| Event::Simulated { text }),
        ]
    }

    #[test]
    fn a_simulated_note_reads_back_and_changes_no_record() {
        let ev = Event::Simulated {
            text: "next: approve split=3:50ms; bad-lrc not applied".into(),
        };
        let l = format_line("2026-12-01T04:00:00.000Z", 7, &ev);
        assert_eq!(
            l,
            "2026-12-01T04:00:00.000Z 7 simulated next: approve split=3:50ms; bad-lrc not applied"
        );
        assert_eq!(parse_line(&l).map(|(_, _, e)| e), Some(ev));
        let begun = "2026-12-01T04:00:00.000Z 7 begun tcp 127.0.0.1:9 01 CZ0040320";
        let d = dir();
        fs::write(d.join("with"), format!("{begun}\n{l}\n")).unwrap();
        fs::write(d.join("without"), format!("{begun}\n")).unwrap();
        let (_, with) = open(&d.join("with"), 1 << 20, 0).unwrap();
        let (_, without) = open(&d.join("without"), 1 << 20, 0).unwrap();
        assert_eq!(with.bad_lines, 0);
        assert_eq!(with.records, without.records);
    }

    proptest! {
        #[test]
        fn any_event_reads_back_as_written(
            ev in any_event(), time in odd_text(), id in any::<u64>()
        ) {
            let l = format_line(&time, id, &ev);
            prop_assert!(l.is_ascii() && !l.contains('\n'), "{:?}", l);
            let want = ev.masked();
            prop_assert_eq!(parse_line(&l), Some((time.clone(), id, want.clone())), "{}", l);
            // Written again, the same line.
            prop_assert_eq!(format_line(&time, id, &want), l);
        }

        #[test]
        fn any_line_parses_without_panic(line in odd_text()) {
            if let Some((time, id, ev)) = parse_line(&line) {
                let again = format_line(&time, id, &ev);
                prop_assert_eq!(parse_line(&again), Some((time, id, ev.masked())));
            }
        }
    }

    #[test]
    fn lines_not_utf8_count_as_unreadable() {
        let d = dir();
        let p = d.join("journal");
        let mut bytes = format_line(T, 1, &begun(1)).into_bytes();
        bytes.extend_from_slice(
            b"\n2026-11-26T16:00:00.000Z 1 ended approved CZ0040320AE002\xff\xfe\n",
        );
        bytes.extend_from_slice(b"\xc3\x28 2 delivered\r\n\n");
        fs::write(&p, bytes).unwrap();
        let (_, c) = open(&p, 1 << 20, 0).unwrap();
        assert_eq!(c.bad_lines, 2);
        assert_eq!(c.records.len(), 1);
        assert_eq!(c.records[0].answer, None);
    }

    fn ended() -> Event {
        Event::Ended {
            verdict: Verdict::Approved,
            answer: b"CZ0040320AE00210".to_vec(),
        }
    }

    /// Every line of the file parses, and the file ends with a newline.
    fn whole_lines(p: &Path) -> Vec<(u64, Event)> {
        let text = fs::read_to_string(p).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
        text.lines()
            .filter(|l| rotated_at(l.as_bytes()).is_none())
            .map(|l| parse_line(l).unwrap_or_else(|| panic!("glued or partial: {l:?}\n{text}")))
            .map(|(_, id, ev)| (id, ev))
            .collect()
    }

    #[test]
    fn failed_append_is_cut_back_to_the_last_whole_line() {
        let d = dir();
        let p = d.join("journal");
        let (mut j, _) = open(&p, 1 << 20, 0).unwrap();
        j.record(1, &begun(1)).unwrap();
        let size = fs::metadata(&p).unwrap().len();
        j.injected.short_write = Some(10);
        let e = j.record(1, &ended()).unwrap_err();
        assert!(
            e.to_string().contains("cut back to the last whole line"),
            "{e}"
        );
        assert_eq!(fs::metadata(&p).unwrap().len(), size);
        j.record(2, &begun(2)).unwrap();
        assert_eq!(whole_lines(&p), vec![(1, begun(1)), (2, begun(2))]);
    }

    #[test]
    fn no_append_after_a_partial_line_that_cannot_be_cut() {
        let d = dir();
        let p = d.join("journal");
        let (mut j, _) = open(&p, 1 << 20, 0).unwrap();
        j.record(1, &begun(1)).unwrap();
        j.injected.short_write = Some(7);
        j.injected.cut_failures = 2;
        let e = j.record(1, &ended()).unwrap_err();
        assert!(e.to_string().contains("no record is appended"), "{e}");
        // The partial line is still there: appends are refused while the
        // cut fails.
        let e = j.record(2, &begun(2)).unwrap_err();
        assert!(e.to_string().contains("partial line"), "{e}");
        assert!(!fs::read(&p).unwrap().ends_with(b"\n"));
        // Once the cut succeeds, records go on from a whole line.
        j.record(3, &begun(3)).unwrap();
        assert_eq!(whole_lines(&p), vec![(1, begun(1)), (3, begun(3))]);
    }

    #[test]
    fn key_and_odd_peer_survive_reopening_and_rotation() {
        let d = dir();
        let p = d.join("journal");
        let ev = Event::Begun {
            channel: "serial".into(),
            peer: "/dev/serial/by-id/usb-Ingenico A".into(),
            register: 3,
            key: Some("k-42".into()),
            request: b"CZ0040320CA00203CB0041000CD0010CE003978".to_vec(),
        };
        {
            let (mut j, _) = open(&p, 1 << 20, 1).unwrap();
            j.record(9, &ev).unwrap();
            j.record(9, &ended()).unwrap();
            j.record(
                9,
                &Event::Undelivered {
                    reason: "gone\naway".into(),
                },
            )
            .unwrap();
        }
        let (mut j, c) = open(&p, 1 << 20, 1).unwrap();
        assert_eq!(c.bad_lines, 0);
        let r = &c.records[0];
        assert_eq!(r.peer, "/dev/serial/by-id/usb-Ingenico A");
        assert_eq!(r.key.as_deref(), Some("k-42"));
        assert_eq!(r.delivered, Some(false));
        j.rotate(Carry::of(&c.records)).unwrap();
        drop(j);
        fs::remove_file(generation(&p, 1)).unwrap();
        let (_, c2) = open(&p, 1 << 20, 1).unwrap();
        assert_eq!(c2.records.len(), 1);
        assert_eq!(c2.records[0].key.as_deref(), Some("k-42"));
        assert_eq!(c2.records[0].peer, r.peer);
    }

    #[test]
    fn card_numbers_are_masked() {
        let l = format_line(
            "t",
            1,
            &Event::Ended {
                verdict: Verdict::Approved,
                answer: b"CZ0040320CF0164970101234560674".to_vec(),
            },
        );
        assert!(l.ends_with("CF016497010######0674"), "{l}");
    }

    #[test]
    fn notes_are_written_at_once_and_synced_with_the_next_record() {
        let d = dir();
        let p = d.join("journal");
        let (mut j, _) = open(&p, 1 << 20, 2).unwrap();
        j.record(1, &begun(1)).unwrap();
        assert!(!j.unsynced());
        j.note(1, &Event::Delivered).unwrap();
        // In the file at once, in order, for any reader.
        assert!(fs::read_to_string(&p).unwrap().ends_with(" 1 delivered\n"));
        assert!(j.unsynced());
        // The next synced record puts it on disk too.
        j.record(2, &begun(2)).unwrap();
        assert!(!j.unsynced());
        j.note(2, &Event::Delivered).unwrap();
        j.sync().unwrap();
        assert!(!j.unsynced());
        let (_, c) = open(&p, 1 << 20, 2).unwrap();
        assert_eq!(c.records.len(), 2);
        assert!(c.records.iter().all(|r| r.delivered == Some(true)));
    }

    #[test]
    fn torn_last_line_is_cut_and_reported() {
        let d = dir();
        let p = d.join("journal");
        {
            let (mut j, c) = open(&p, 1 << 20, 2).unwrap();
            assert!(c.records.is_empty());
            j.record(1, &begun(1)).unwrap();
            j.record(
                1,
                &Event::Ended {
                    verdict: Verdict::Declined,
                    answer: b"CZ0040320AE00201AF00204".to_vec(),
                },
            )
            .unwrap();
        }
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"2026-11-26T16:00:00.000 2 beg").unwrap();
        drop(f);
        let (_, c) = open(&p, 1 << 20, 2).unwrap();
        assert_eq!(c.torn.as_deref(), Some("2026-11-26T16:00:00.000 2 beg"));
        assert_eq!(c.records.len(), 1);
        assert_eq!(c.records[0].verdict, Some(Verdict::Declined));
        assert!(fs::read(&p).unwrap().ends_with(b"\n"));
        let mode = fs::metadata(&p).unwrap().permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
    }

    #[test]
    fn rotation_keeps_generations_and_carries_records() {
        let d = dir();
        let p = d.join("journal");
        let (mut j, _) = open(&p, 300, 2).unwrap();
        for id in 1..=12u64 {
            j.record(id, &begun((id % 3) as u8)).unwrap();
            j.record(
                id,
                &Event::Ended {
                    verdict: Verdict::Approved,
                    answer: b"CZ0040320AE00210".to_vec(),
                },
            )
            .unwrap();
            j.record(id, &Event::Delivered).unwrap();
            if j.needs_rotation() {
                let (_, c) = open(&p, 300, 2).unwrap();
                let mut last = std::collections::BTreeMap::new();
                for r in c.records {
                    last.insert(r.register, r);
                }
                let carry: Vec<Record> = last.into_values().collect();
                j.rotate(Carry::of(&carry)).unwrap();
            }
        }
        assert!(generation(&p, 1).exists());
        assert!(generation(&p, 2).exists());
        assert!(!generation(&p, 3).exists());
        let (_, c) = open(&p, 300, 2).unwrap();
        for reg in 0..3u8 {
            let last = c
                .records
                .iter()
                .filter(|r| r.register == reg)
                .max_by_key(|r| r.id)
                .unwrap();
            assert_eq!(last.verdict, Some(Verdict::Approved));
            assert_eq!(last.delivered, Some(true));
            assert!(last.id >= 10, "register {reg}: {}", last.id);
        }
    }

    #[test]
    fn upstream_status_and_not_done_survive_rotation() {
        let d = dir();
        let p = d.join("journal");
        let kept = b"CZ0040320CA00201CB003500CD0010CE003978AE00210AA016497010######0674".to_vec();
        let not_ended = b"CZ0040320CA00201CB0041234CD0010CE003978AE00201AF00207".to_vec();
        let (mut j, _) = open(&p, 1 << 20, 1).unwrap();
        j.record(7, &begun(1)).unwrap();
        // Masked again on the way in: a kept frame reads back unchanged.
        j.record(
            7,
            &Event::UpstreamStatus {
                answer: b"CZ0040320CA00201CB003500CD0010CE003978AE00210AA0164970101234560674"
                    .to_vec(),
            },
        )
        .unwrap();
        j.record(
            7,
            &Event::Ended {
                verdict: Verdict::Unknown,
                answer: not_ended.clone(),
            },
        )
        .unwrap();
        j.record(
            7,
            &Event::Resolved {
                verdict: Verdict::NotDone,
                answer: not_ended.clone(),
            },
        )
        .unwrap();
        let (_, c) = open(&p, 1 << 20, 1).unwrap();
        let r = c.records[0].clone();
        assert_eq!(r.upstream_status.as_deref(), Some(&kept[..]));
        assert_eq!(r.verdict, Some(Verdict::NotDone));
        assert_eq!(r.answer.as_deref(), Some(&not_ended[..]));
        j.rotate(Carry::of(std::slice::from_ref(&r))).unwrap();
        // Only the carried copy is left: the old generation is dropped.
        fs::remove_file(generation(&p, 1)).unwrap();
        let (_, c) = open(&p, 1 << 20, 1).unwrap();
        assert_eq!(c.records, vec![r]);
    }

    #[test]
    fn a_linked_journal_or_generation_is_refused_and_left_alone() {
        let d = dir();
        let target = d.join("shadow");
        fs::write(&target, "root:x:0:\n").unwrap();
        let p = d.join("journal");
        std::os::unix::fs::symlink(&target, &p).unwrap();
        let e = open(&p, 1 << 20, 1).err().unwrap();
        assert_eq!(
            e.to_string(),
            format!("{} is a symbolic link: refused", p.display())
        );
        fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink(&target, generation(&p, 1)).unwrap();
        let e = open(&p, 1 << 20, 1).err().unwrap();
        assert!(files::is_refused(&e), "{e}");
        assert!(
            e.to_string().contains("journal.1 is a symbolic link"),
            "{e}"
        );
        fs::remove_file(generation(&p, 1)).unwrap();
        fs::hard_link(&target, &p).unwrap();
        let e = open(&p, 1 << 20, 1).err().unwrap();
        assert!(e.to_string().contains("has 2 hard links: refused"), "{e}");
        assert_eq!(fs::read_to_string(&target).unwrap(), "root:x:0:\n");
    }

    #[test]
    fn rotation_never_writes_through_a_link_at_a_generation_name() {
        let d = dir();
        let p = d.join("journal");
        let (t0, t2) = (d.join("target0"), d.join("target2"));
        fs::write(&t0, "zero\n").unwrap();
        fs::write(&t2, "two\n").unwrap();
        let (mut j, _) = open(&p, 300, 2).unwrap();
        j.record(1, &begun(1)).unwrap();
        // Planted once the journal is open, as the service account could.
        std::os::unix::fs::symlink(&t0, generation(&p, 0)).unwrap();
        std::os::unix::fs::symlink(&t2, generation(&p, 2)).unwrap();
        fs::write(
            generation(&p, 1),
            format!("{}\n", format_line(T, 9, &begun(2))),
        )
        .unwrap();
        let (_, c) = open(&p, 300, 0).unwrap();
        j.rotate(Carry::of(&c.records)).unwrap();
        j.record(2, &ended()).unwrap();
        assert_eq!(fs::read_to_string(&t0).unwrap(), "zero\n");
        assert_eq!(fs::read_to_string(&t2).unwrap(), "two\n");
        assert!(fs::symlink_metadata(generation(&p, 0)).is_err());
        for f in [p.clone(), generation(&p, 1), generation(&p, 2)] {
            assert!(
                fs::symlink_metadata(&f).unwrap().is_file(),
                "{}",
                f.display()
            );
        }
        // The journal written is the file at its name.
        assert_eq!(whole_lines(&p), vec![(1, begun(1)), (2, ended())]);
        assert_eq!(whole_lines(&generation(&p, 1)), vec![(1, begun(1))]);
    }

    #[test]
    fn records_carried_over_do_not_count_toward_the_next_rotation() {
        let d = dir();
        let p = d.join("journal");
        let (mut j, _) = open(&p, 4096, 1).unwrap();
        // A carried set larger than journal-size.
        let carry: Vec<Record> = (1..=40)
            .map(|id| Record {
                id,
                begun_at: T.into(),
                channel: "tcp".into(),
                peer: "127.0.0.1:1".into(),
                register: 1,
                request: b"CZ0040320CA00201CB0041234CD0010CE003978CF003abc".to_vec(),
                ended_at: Some(T.into()),
                verdict: Some(Verdict::Approved),
                answer: Some(b"CZ0040320CA00201CB0041234CD0010CE003978AE00210".to_vec()),
                delivered: Some(true),
                ..Record::default()
            })
            .collect();
        let bytes: u64 = carry.iter().map(carry_len).sum();
        assert!(bytes > 4096, "{bytes}");
        j.rotate(Carry::of(&carry)).unwrap();
        let marker = rotation_line(T, bytes, 0, false).len() as u64;
        assert_eq!(fs::metadata(&p).unwrap().len(), bytes + marker);
        j.record(41, &begun(1)).unwrap();
        assert!(!j.needs_rotation());
        let mut n = 1;
        while !j.needs_rotation() {
            n += 1;
            j.record(41 + n, &begun(1)).unwrap();
        }
        // Rotated only once journal-size of new records was appended.
        let appended = fs::metadata(&p).unwrap().len() - bytes;
        assert!(appended > 4096 && appended < 4096 + 200, "{appended}");
        assert!(n > 20, "{n}");
        // After a restart the whole file counts: it never grows past
        // journal-size plus one carried set.
        drop(j);
        let (j, _) = open(&p, 4096, 1).unwrap();
        assert!(j.needs_rotation());
    }

    #[test]
    fn one_journal_one_lock_holder() {
        let d = dir();
        let p = d.join("journal");
        let now = std::time::Duration::ZERO;
        let lock = Lock::take_within(&p, now).unwrap();
        assert_eq!(lock.path(), d.join("journal.lock"));
        let me = std::process::id() as i32;
        // flock conflicts between two opens even in one process: a second
        // daemon is seen the same way.
        match Lock::take_within(&p, now) {
            Err(LockError::Held(Some(pid))) => assert_eq!(pid, me),
            other => panic!("{:?}", other.map(|_| ())),
        }
        // Unreadable pid: still held, pid unknown.
        fs::write(d.join("journal.lock"), "garbage").unwrap();
        assert!(matches!(
            Lock::take_within(&p, now),
            Err(LockError::Held(None))
        ));
        // The lock file removed by hand: the directory is still locked.
        fs::remove_file(d.join("journal.lock")).unwrap();
        assert!(matches!(
            Lock::take_within(&p, now),
            Err(LockError::Held(None))
        ));
        // One journal per directory.
        assert!(matches!(
            Lock::take_within(&d.join("other"), now),
            Err(LockError::Held(_))
        ));
        drop(lock);
        // Released with the holder; the stale content is replaced.
        let _again = Lock::take_within(&p, now).unwrap();
        assert_eq!(
            fs::read_to_string(d.join("journal.lock")).unwrap(),
            format!("{me}\n")
        );
    }

    #[test]
    fn the_lock_descriptors_are_close_on_exec() {
        use std::os::fd::AsRawFd;
        let d = dir();
        let lock = Lock::take_within(&d.join("journal"), std::time::Duration::ZERO).unwrap();
        for fd in [lock._dir.as_raw_fd(), lock.file.as_raw_fd()] {
            // SAFETY: F_GETFD on a descriptor the lock owns.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            assert!(flags >= 0 && flags & libc::FD_CLOEXEC != 0, "{fd}: {flags}");
        }
    }

    #[test]
    fn the_lock_file_is_never_followed() {
        let d = dir();
        let target = d.join("precious");
        fs::write(&target, "keep\n").unwrap();
        std::os::unix::fs::symlink(&target, d.join("journal.lock")).unwrap();
        let now = std::time::Duration::ZERO;
        match Lock::take_within(&d.join("journal"), now) {
            Err(LockError::Io(e)) => assert!(files::is_refused(&e), "{e}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep\n");
        // A journal that could not be one is said of the journal, and no
        // lock file is made beside it.
        for bad in [d.join("no-dir").join("journal"), d.clone()] {
            match Lock::take_within(&bad, now) {
                Err(LockError::Journal(_)) => {}
                other => panic!("{}: {:?}", bad.display(), other.map(|_| ())),
            }
        }
        assert!(!d.with_extension("lock").exists());
        let link = d.join("journal");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        match Lock::take_within(&link, now) {
            Err(LockError::Journal(e)) => assert!(files::is_refused(&e), "{e}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn unwritable_place_is_an_error() {
        assert!(open(Path::new("/nonexistent/dir/journal"), 1, 1).is_err());
    }

    /// What `show` and `totals` read: every record once, in id order
    /// (`show`'s reader, backwards, which takes the newest copy), the same
    /// transactions as `totals`' reader (forwards) finds, and when the
    /// oldest kept generation started.
    struct History {
        records: Vec<Record>,
        starts: Option<String>,
    }

    fn read_all(p: &Path, keep: u32) -> io::Result<History> {
        let records = crate::terminal::generations::newest(p, keep, 1000)?;
        let (mut forwards, read) = crate::terminal::generations::day(
            p,
            keep,
            |_| false,
            |_| true,
            Vec::new,
            |v, r| v.push(r),
        )?;
        // The same transactions, once each (a copy may say more than the
        // original only when made up, as below).
        let ids = |v: &[Record]| v.iter().map(|r| r.id).collect::<Vec<_>>();
        forwards.sort_by_key(|r| r.id);
        assert_eq!(ids(&forwards), ids(&records));
        Ok(History {
            records,
            starts: read.starts,
        })
    }

    #[test]
    fn read_all_merges_carried_copies_and_says_where_the_journal_starts() {
        let d = dir();
        let p = d.join("journal");
        let (mut j, _) = open(&p, 4096, 1).unwrap();
        j.record(1, &begun(1)).unwrap();
        j.record(1, &ended()).unwrap();
        j.record(2, &begun(1)).unwrap();
        j.record(2, &ended()).unwrap();
        // The first journal was never rotated into: it starts with its first
        // transaction, nothing is missing.
        let h = read_all(&p, 1).unwrap();
        assert_eq!(h.starts, None);
        assert_eq!(h.records.len(), 2);
        let (_, c) = open(&p, 4096, 1).unwrap();
        let mut last = c.records[1].clone();
        last.resolved = true;
        j.rotate(Carry::of(std::slice::from_ref(&last))).unwrap();
        j.record(3, &begun(1)).unwrap();
        // Tx 2 is in both generations: read once, still resolved.
        let h = read_all(&p, 1).unwrap();
        assert_eq!(h.starts, None);
        let ids: Vec<u64> = h.records.iter().map(|r| r.id).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert!(h.records[1].resolved);
        // A second rotation drops the first journal: what is kept now
        // starts at the first rotation, which Journal::open does not count
        // as an unreadable line.
        j.rotate(Carry::default()).unwrap();
        let h = read_all(&p, 1).unwrap();
        let starts = h.starts.expect("the journal starts at a rotation");
        assert!(unix_time(&starts).is_some(), "{starts}");
        let ids: Vec<u64> = h.records.iter().map(|r| r.id).collect();
        assert_eq!(ids, [2, 3]);
        let (_, c) = open(&p, 4096, 1).unwrap();
        assert_eq!(c.bad_lines, 0);
    }
}
