//! The journal's kept generations read one line at a time, never whole:
//! start-up folds records into the worker's state as they are read,
//! `concertctl show N` keeps N records, `totals` sums as it goes. What a
//! read holds is bounded by what it keeps (and one buffer), whatever the
//! journal's size.
//!
//! A generation started by a rotation begins with its rotation line, then
//! the records carried over (see [`journal::Rotation`]): copies of records
//! an older generation holds too. A reader that also reads that older
//! generation knows a copy by where it stands, in the carried block after
//! the rotation line (its length is on the rotation line; a generation
//! written before it was, by the times of its lines, no later than the
//! rotation's), never by a set of every id read.

use crate::config::files;
use crate::terminal::journal::{
    self, Contents, Event, Loaded, Record, Rotation, Source, Step, Verdict,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Bytes read at once.
const CHUNK: usize = 128 << 10;
/// A line still without its newline past this many bytes is no journal
/// line (a frame is at most a few KB): skipped, and counted unreadable.
const MAX_LINE: usize = 1 << 20;
/// Start-up holds a record back until this many later ones have begun, so
/// that the events that follow its end (a delivery report after the next
/// transaction began) are in it when it is folded in.
const HOLD: usize = 16;

/// One file of the journal, opened for reading.
pub struct Part {
    file: File,
    /// Bytes of whole lines to read.
    len: u64,
    pub rotation: Option<Rotation>,
    /// Where the lines after the rotation line start.
    head: u64,
    /// Where the carried block ends (`head` when there is none).
    block_end: u64,
}

impl Part {
    /// `len` bytes of `file`, whole lines.
    fn new(file: File, len: u64) -> io::Result<Part> {
        let mut first = vec![0; 4096.min(len as usize)];
        file.read_exact_at(&mut first, 0)?;
        let line_end = first.iter().position(|&b| b == b'\n');
        let rotation = line_end.and_then(|e| journal::rotation(&first[..e]));
        let head = match (&rotation, line_end) {
            (Some(_), Some(e)) => e as u64 + 1,
            _ => 0,
        };
        let mut part = Part {
            file,
            len,
            rotation,
            head,
            block_end: head,
        };
        part.block_end = part.find_block_end()?;
        Ok(part)
    }

    /// The file at `path`, opened without following a link; `None` when
    /// missing. Whole lines only: a line being appended is left out.
    pub fn open(path: &Path) -> io::Result<Option<Part>> {
        let file = match files::open(path, OpenOptions::new().read(true)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        let whole = whole_len(&file, len)?;
        Part::new(file, whole).map(Some)
    }

    fn find_block_end(&self) -> io::Result<u64> {
        let Some(rot) = &self.rotation else {
            return Ok(self.head);
        };
        if let Some(n) = rot.carried {
            let end = self.head.saturating_add(n);
            let mut last = [0u8];
            let ends_a_line = n == 0
                || (end <= self.len && self.file.read_exact_at(&mut last, end - 1).is_ok())
                    && last[0] == b'\n';
            if ends_a_line {
                return Ok(end);
            }
        }
        // Written before the length was said: the lines that follow the
        // rotation line with a time no later than it are the carried ones.
        let mut end = self.head;
        let mut r = Forward::new(&self.file, self.head, self.len);
        while let Some((at, line)) = r.line()? {
            match peek(line) {
                Some((time, _, _)) if time <= rot.at.as_bytes() => end = at + line.len() as u64 + 1,
                _ => break,
            }
        }
        Ok(end)
    }

    fn carried(&self, at: u64) -> bool {
        at >= self.head && at < self.block_end
    }

    /// When a rotation started this generation.
    pub fn started(&self) -> Option<&str> {
        self.rotation.as_ref().map(|r| r.at.as_str())
    }
}

/// The length of `file`'s whole lines (`len` bytes long).
fn whole_len(file: &File, len: u64) -> io::Result<u64> {
    let mut end = len;
    let mut buf = vec![0; 4096];
    while end > 0 {
        let n = (end as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], end - n as u64)?;
        if let Some(p) = buf[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(end - n as u64 + p as u64 + 1);
        }
        end -= n as u64;
    }
    Ok(0)
}

/// A line's time, id and event word, without decoding anything.
pub fn peek(line: &[u8]) -> Option<(&[u8], u64, &[u8])> {
    let mut w = line.splitn(4, |&b| b == b' ');
    let time = w.next()?;
    let id = w.next()?;
    let event = w.next()?;
    if id.is_empty() || id.len() > 20 || !id.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let id = std::str::from_utf8(id).ok()?.parse().ok()?;
    Some((time, id, event))
}

/// A line decoded; `None` when it is not a journal line. A CR before the
/// newline goes, as `BufRead::lines` took it.
fn decode(line: &[u8]) -> Option<(String, u64, Event)> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    std::str::from_utf8(line).ok().and_then(journal::parse_line)
}

/// Lines of a file from `from` to `end`, first to last, with their offset.
pub struct Forward<'a> {
    file: &'a File,
    /// The file offset of `buf[0]`.
    pos: u64,
    end: u64,
    buf: Vec<u8>,
    at: usize,
    filled: usize,
    /// Inside a line longer than `MAX_LINE`: dropped up to its newline.
    skipping: bool,
    /// Lines dropped for their length.
    pub overlong: usize,
}

impl<'a> Forward<'a> {
    pub fn new(file: &'a File, from: u64, end: u64) -> Forward<'a> {
        Forward {
            file,
            pos: from,
            end,
            buf: Vec::new(),
            at: 0,
            filled: 0,
            skipping: false,
            overlong: 0,
        }
    }

    /// The next line, without its newline, and where it starts.
    pub fn line(&mut self) -> io::Result<Option<(u64, &[u8])>> {
        loop {
            if let Some(i) = self.buf[self.at..self.filled]
                .iter()
                .position(|&b| b == b'\n')
            {
                let start = self.at;
                self.at += i + 1;
                if std::mem::take(&mut self.skipping) {
                    continue;
                }
                return Ok(Some((self.pos + start as u64, &self.buf[start..start + i])));
            }
            let next = self.pos + self.filled as u64;
            if next >= self.end {
                return Ok(None);
            }
            // The partial line to the front, then more after it.
            self.buf.copy_within(self.at..self.filled, 0);
            self.pos += self.at as u64;
            self.filled -= self.at;
            self.at = 0;
            if self.filled >= MAX_LINE {
                if !self.skipping {
                    self.overlong += 1;
                }
                self.skipping = true;
                self.pos += self.filled as u64;
                self.filled = 0;
            }
            let room = (self.filled + CHUNK).min(self.filled + MAX_LINE);
            if self.buf.len() < room {
                self.buf.resize(room, 0);
            }
            let want = (self.buf.len() - self.filled).min((self.end - next) as usize);
            let n = self
                .file
                .read_at(&mut self.buf[self.filled..self.filled + want], next)?;
            if n == 0 {
                return Ok(None);
            }
            self.filled += n;
        }
    }
}

/// Lines of a file from `end` back to `start`, last to first.
pub struct Backward<'a> {
    file: &'a File,
    start: u64,
    /// The file offset of `buf[0]`; `buf` holds the lines not yet given,
    /// each with its newline.
    lo: u64,
    buf: Vec<u8>,
    /// What the last line given left: `buf` is cut here first.
    cut: Option<usize>,
    /// Inside a line longer than `MAX_LINE`: dropped back to its start.
    skipping: bool,
    pub overlong: usize,
}

impl<'a> Backward<'a> {
    pub fn new(file: &'a File, start: u64, end: u64) -> Backward<'a> {
        Backward {
            file,
            start,
            lo: end,
            buf: Vec::new(),
            cut: None,
            skipping: false,
            overlong: 0,
        }
    }

    pub fn line(&mut self) -> io::Result<Option<(u64, &[u8])>> {
        if let Some(c) = self.cut.take() {
            self.buf.truncate(c);
        }
        loop {
            if self.buf.is_empty() && self.lo <= self.start {
                return Ok(None);
            }
            // While skipping, `buf` holds only the start of the long line
            // read so far (no newline of its own).
            let body = if self.skipping {
                self.buf.len()
            } else {
                self.buf.len().saturating_sub(1)
            };
            if let Some(p) = self.buf[..body].iter().rposition(|&b| b == b'\n') {
                if std::mem::take(&mut self.skipping) {
                    self.buf.truncate(p + 1);
                    continue;
                }
                self.cut = Some(p + 1);
                return Ok(Some((self.lo + p as u64 + 1, &self.buf[p + 1..body])));
            }
            if self.lo <= self.start {
                if self.skipping {
                    self.buf.clear();
                    continue;
                }
                self.cut = Some(0);
                return Ok(Some((self.lo, &self.buf[..body])));
            }
            if self.buf.len() >= MAX_LINE {
                // No journal line: dropped back to its start.
                if !self.skipping {
                    self.overlong += 1;
                }
                self.skipping = true;
                self.buf.clear();
            }
            let n = (self.lo - self.start).min(CHUNK as u64) as usize;
            let tail = self.buf.len();
            self.buf.resize(tail + n, 0);
            self.buf.copy_within(0..tail, n);
            self.lo -= n as u64;
            self.file.read_exact_at(&mut self.buf[..n], self.lo)?;
        }
    }
}

/// What start-up folds in, in order.
pub enum Item {
    /// A transaction, with every event of it read so far.
    Record(Record),
    /// An event of a transaction already folded in (a late outcome), or
    /// of none read.
    Late(u64, Event),
}

/// What start-up read.
#[derive(Debug, Default)]
pub struct Restored {
    /// Unreadable lines (reported, skipped).
    pub bad_lines: usize,
    /// The highest id the rotation lines read say was given out.
    pub last: u64,
    /// Files read.
    pub files: usize,
    /// Only the newest file was read: its rotation carried everything the
    /// state needs.
    pub newest_only: bool,
}

/// Every record of the kept generations, read whole: for tests and tools,
/// never for the daemon.
pub fn load(c: &Contents) -> io::Result<Loaded> {
    let mut out = Loaded {
        torn: c.torn.clone(),
        ..Loaded::default()
    };
    match &c.source {
        Source::Given(r) => out.records = r.clone(),
        Source::Files { .. } => {
            let mut index = HashMap::new();
            let parts = parts_of(c)?;
            out.bad_lines = each_event(&parts, |time, id, event| {
                journal::apply(&mut out.records, &mut index, time, id, event)
            })?;
            out.records.sort_by_key(|r| r.id);
        }
    }
    Ok(out)
}

/// The kept generations, oldest first, then the journal itself (through
/// its descriptor at start-up).
pub fn parts_of(c: &Contents) -> io::Result<Vec<Part>> {
    let Source::Files {
        path,
        keep,
        newest,
        len,
    } = &c.source
    else {
        return Ok(Vec::new());
    };
    let mut parts = Vec::new();
    for n in (1..=*keep).rev() {
        if let Some(p) = Part::open(&journal::generation(path, n))? {
            parts.push(p);
        }
    }
    parts.push(Part::new(newest.try_clone()?, *len)?);
    Ok(parts)
}

/// Every event of `parts` (carried blocks included), in file order; the
/// number of unreadable lines.
pub fn each_event(parts: &[Part], mut f: impl FnMut(String, u64, Event)) -> io::Result<usize> {
    let mut bad = 0;
    for p in parts {
        let mut r = Forward::new(&p.file, p.head, p.len);
        while let Some((_, line)) = r.line()? {
            match decode(line) {
                Some((time, id, ev)) => f(time, id, ev),
                None if line.is_empty() || journal::rotation(line).is_some() => {}
                None => bad += 1,
            }
        }
        bad += r.overlong;
    }
    Ok(bad)
}

/// Start-up: the records the state needs, folded in by `each` in id order
/// as they are read. The journal alone when its rotation carried
/// everything (`whole`), else every kept generation, oldest first. A
/// record is handed over once, when `HOLD` later ones have begun (or at
/// the end): events that come later still (an outcome resolved later) are
/// handed over as [`Item::Late`].
pub fn restore(c: &Contents, mut each: impl FnMut(Item)) -> io::Result<Restored> {
    let Source::Files {
        path,
        keep,
        newest,
        len,
    } = &c.source
    else {
        if let Source::Given(records) = &c.source {
            let mut v = records.clone();
            v.sort_by_key(|r| r.id);
            v.into_iter().for_each(|r| each(Item::Record(r)));
        }
        return Ok(Restored::default());
    };
    let newest = Part::new(newest.try_clone()?, *len)?;
    let whole = newest.rotation.as_ref().is_some_and(|r| r.whole);
    let mut out = Restored {
        newest_only: whole,
        ..Restored::default()
    };
    let mut fold = Fold {
        held: BTreeMap::new(),
        first_new: None,
        from_blocks: HashSet::new(),
        max_seen: 0,
        each: &mut each,
    };
    if !whole {
        // Oldest first, one open at a time.
        for n in (1..=*keep).rev() {
            if let Some(p) = Part::open(&journal::generation(path, n))? {
                fold.part(&p, out.files > 0, &mut out)?;
                out.files += 1;
            }
        }
    }
    let later = out.files > 0;
    fold.part(&newest, later, &mut out)?;
    out.files += 1;
    for (_, r) in std::mem::take(&mut fold.held) {
        (fold.each)(Item::Record(r));
    }
    Ok(out)
}

struct Fold<'a> {
    /// Records begun and not handed over yet, by id.
    held: BTreeMap<u64, Record>,
    /// The first transaction begun in a generation's own records (not a
    /// carried copy): every id from there on was read where it began.
    first_new: Option<u64>,
    /// Ids handed over from carried blocks, older than `first_new`: a copy
    /// of one in a later block is skipped. At most the carried records.
    from_blocks: HashSet<u64>,
    /// The highest id begun in what was read.
    max_seen: u64,
    each: &'a mut dyn FnMut(Item),
}

impl Fold<'_> {
    /// Folds one generation in; `later`: an older one was read before it,
    /// so its carried copies may repeat what was read.
    fn part(&mut self, p: &Part, later: bool, out: &mut Restored) -> io::Result<()> {
        if let Some(last) = p.rotation.as_ref().and_then(|r| r.last) {
            out.last = out.last.max(last);
        }
        let mut r = Forward::new(&p.file, p.head, p.len);
        // The carried copy being skipped.
        let mut skipping = None;
        while let Some((at, line)) = r.line()? {
            let Some((time, id, ev)) = decode(line) else {
                if !line.is_empty() && journal::rotation(line).is_none() {
                    out.bad_lines += 1;
                }
                continue;
            };
            let carried = p.carried(at);
            if carried && matches!(ev, Event::Begun { .. }) {
                // (Past every id read, it is no copy: only a generation
                // written before the carried length was said can have a
                // new record there.)
                let known = id <= self.max_seen
                    && (self.first_new.is_some_and(|f| id >= f) || self.from_blocks.contains(&id));
                if later && known {
                    skipping = Some(id);
                    continue;
                }
                skipping = None;
                if self.first_new.is_none_or(|f| id < f) {
                    self.from_blocks.insert(id);
                }
            } else if carried && skipping == Some(id) {
                continue;
            } else if !carried && matches!(ev, Event::Begun { .. }) && self.first_new.is_none() {
                self.first_new = Some(id);
            }
            if matches!(ev, Event::Begun { .. }) {
                self.max_seen = self.max_seen.max(id);
            }
            self.event(time, id, ev);
        }
        out.bad_lines += r.overlong;
        Ok(())
    }

    fn event(&mut self, time: String, id: u64, ev: Event) {
        match journal::begun(time, id, ev) {
            Step::Begun(rec) => {
                // A second begun of one id: the first is kept.
                if self.held.contains_key(&id) {
                    return;
                }
                self.held.insert(id, rec);
                if self.held.len() > HOLD {
                    if let Some((_, r)) = self.held.pop_first() {
                        (self.each)(Item::Record(r));
                    }
                }
            }
            Step::Then(time, ev) => match self.held.get_mut(&id) {
                Some(r) => journal::apply_to(r, time, ev),
                None => (self.each)(Item::Late(id, ev)),
            },
        }
    }
}

/// Whether start-up reads the journal alone: its rotation line says the
/// records carried over hold everything the state needs.
pub fn whole(c: &Contents) -> bool {
    match &c.source {
        Source::Files { newest, len, .. } => newest
            .try_clone()
            .and_then(|f| Part::new(f, *len))
            .is_ok_and(|p| p.rotation.is_some_and(|r| r.whole)),
        Source::Given(_) => false,
    }
}

/// The journal, then its kept generations, newest first, read backwards
/// one at a time: each record once its `begun` line is reached, with the
/// events after it, until `each` says it has enough. For what start-up
/// wants of the newest transactions only (the relay's history of
/// authorisations and CFs), without folding in every one.
pub fn back_through(c: &Contents, mut each: impl FnMut(Record) -> bool) -> io::Result<()> {
    let Source::Files {
        path,
        keep,
        newest,
        len,
    } = &c.source
    else {
        return Ok(());
    };
    let mut later: HashMap<u64, Vec<(String, Event)>> = HashMap::new();
    for n in 0..=*keep {
        let part = match n {
            0 => Some(Part::new(newest.try_clone()?, *len)?),
            n => Part::open(&journal::generation(path, n))?,
        };
        let Some(p) = part else {
            continue;
        };
        let mut r = Backward::new(&p.file, p.head, p.len);
        while let Some((_, line)) = r.line()? {
            let Some((time, id, ev)) = decode(line) else {
                continue;
            };
            match journal::begun(time, id, ev) {
                Step::Begun(mut rec) => {
                    for (t, e) in later.remove(&id).unwrap_or_default().into_iter().rev() {
                        journal::apply_to(&mut rec, t, e);
                    }
                    if !each(rec) {
                        return Ok(());
                    }
                }
                Step::Then(t, e) => later.entry(id).or_default().push((t, e)),
            }
        }
    }
    Ok(())
}

/// The journal's files by name, newest first: the journal, then its kept
/// generations.
fn names(path: &Path, keep: u32) -> impl Iterator<Item = PathBuf> + '_ {
    std::iter::once(path.to_path_buf()).chain((1..=keep).map(move |n| journal::generation(path, n)))
}

fn inode(p: &Path) -> Option<u64> {
    std::fs::symlink_metadata(p).map(|m| m.ino()).ok()
}

/// Runs `read` over the journal's files, again when a rotation renamed
/// them meanwhile (the journal's inode changed), so that no generation is
/// missed nor read twice; at most three times.
fn stable<T>(path: &Path, mut read: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let mut tries = 0;
    loop {
        let before = inode(path);
        let got = read()?;
        tries += 1;
        if before == inode(path) || tries >= 3 {
            return Ok(got);
        }
    }
}

/// `show N`: the `n` newest transactions (by id), oldest first, each with
/// every event of it. The files are read backwards from the end, one at a
/// time, until no older line can be one of the `n`.
pub fn newest(path: &Path, keep: u32, n: usize) -> io::Result<Vec<Record>> {
    stable(path, || newest_once(path, keep, n))
}

fn newest_once(path: &Path, keep: u32, n: usize) -> io::Result<Vec<Record>> {
    // Kept: the n highest ids met, whole.
    let mut kept: BTreeMap<u64, Record> = BTreeMap::new();
    // Events read before their begun line (backwards: after it in time).
    let mut later: HashMap<u64, Vec<(String, Event)>> = HashMap::new();
    let full = |kept: &BTreeMap<u64, Record>| kept.len() >= n;
    let floor = |kept: &BTreeMap<u64, Record>| {
        if kept.len() >= n {
            kept.keys().next().copied()
        } else {
            None
        }
    };
    for name in names(path, keep) {
        let Some(p) = Part::open(&name)? else {
            continue;
        };
        let mut r = Backward::new(&p.file, p.head, p.len);
        // The first transaction begun here, not carried: everything older
        // (its carried block, older generations) has a lower id.
        let mut first_new = None;
        let done = |kept: &BTreeMap<u64, Record>, first_new: Option<u64>| {
            full(kept) && first_new.is_some_and(|f| kept.keys().next().is_some_and(|&k| k >= f))
        };
        while let Some((at, line)) = r.line()? {
            let Some((_, id, word)) = peek(line) else {
                continue;
            };
            if p.carried(at) && done(&kept, first_new) {
                break;
            }
            if word == b"begun" && !p.carried(at) {
                first_new = Some(id);
                // Begun before every kept one: so is everything before it.
                if done(&kept, first_new) {
                    break;
                }
            }
            if floor(&kept).is_some_and(|f| id <= f) || kept.contains_key(&id) {
                // Older than every kept one, or older than the copy kept.
                continue;
            }
            let Some((time, id, ev)) = decode(line) else {
                continue;
            };
            match journal::begun(time, id, ev) {
                Step::Begun(mut rec) => {
                    for (t, e) in later.remove(&id).unwrap_or_default().into_iter().rev() {
                        journal::apply_to(&mut rec, t, e);
                    }
                    kept.insert(id, rec);
                    if kept.len() > n {
                        kept.pop_first();
                    }
                    if let Some(f) = floor(&kept) {
                        later.retain(|&i, _| i > f);
                    }
                }
                Step::Then(t, e) => later.entry(id).or_default().push((t, e)),
            }
        }
        if done(&kept, first_new) {
            break;
        }
    }
    Ok(kept.into_values().collect())
}

/// What `totals` read: the transactions begun on the day.
pub struct DayRead {
    /// When the oldest kept generation was started by a rotation, if it
    /// was and it was read: before then only carried records are left.
    pub starts: Option<String>,
}

/// `totals DAY`: each transaction begun on the day, handed to `each` once
/// its outcome is final (approved, declined, withdrawn) or at the end (an
/// unknown one may be resolved later, one never ended is not). Only the
/// generations from the newest one started before the day are read (an
/// older one holds nothing of it); in each newer one the carried block
/// repeats what was read, and is skipped. `started_before`: whether a
/// rotation time is before the day; `on_day`: whether a begun line's time
/// is on it.
pub fn day<A>(
    path: &Path,
    keep: u32,
    started_before: impl Fn(&str) -> bool,
    mut on_day: impl FnMut(&[u8]) -> bool,
    mut init: impl FnMut() -> A,
    mut each: impl FnMut(&mut A, Record),
) -> io::Result<(A, DayRead)> {
    // Read again from nothing when a rotation came in between.
    stable(path, || {
        let mut acc = init();
        let read = day_once(path, keep, &started_before, &mut on_day, &mut |r| {
            each(&mut acc, r)
        })?;
        Ok((acc, read))
    })
}

fn day_once(
    path: &Path,
    keep: u32,
    started_before: &impl Fn(&str) -> bool,
    on_day: &mut impl FnMut(&[u8]) -> bool,
    each: &mut impl FnMut(Record),
) -> io::Result<DayRead> {
    // Newest first, the first line of each, down to one started before
    // the day.
    let mut chosen = Vec::new();
    let mut starts = None;
    for name in names(path, keep) {
        let Some(p) = Part::open(&name)? else {
            continue;
        };
        let before = p.started().is_none_or(&started_before);
        starts = p.started().map(str::to_string);
        chosen.push(name);
        if before {
            starts = None;
            break;
        }
    }
    let mut open: BTreeMap<u64, Record> = BTreeMap::new();
    // The highest id begun in what was read: a carried copy repeats one.
    let mut max_seen = 0;
    for (i, name) in chosen.iter().rev().enumerate() {
        let Some(p) = Part::open(name)? else {
            continue;
        };
        let mut r = Forward::new(&p.file, p.head, p.len);
        let mut copy = None;
        while let Some((at, line)) = r.line()? {
            let Some((time, id, word)) = peek(line) else {
                continue;
            };
            if i > 0 && p.carried(at) {
                // A copy of what an older generation read holds: skipped
                // with its events. (Only a generation written before the
                // carried length was said can have a new record there.)
                if word == b"begun" {
                    copy = (id <= max_seen).then_some(id);
                }
                if copy == Some(id) {
                    continue;
                }
            }
            if word == b"begun" {
                max_seen = max_seen.max(id);
            }
            let wanted = if word == b"begun" {
                !open.contains_key(&id) && on_day(time)
            } else {
                open.contains_key(&id)
            };
            if !wanted {
                continue;
            }
            let Some((time, id, ev)) = decode(line) else {
                continue;
            };
            match journal::begun(time, id, ev) {
                Step::Begun(rec) => {
                    open.insert(id, rec);
                }
                Step::Then(time, ev) => {
                    let Some(rec) = open.get_mut(&id) else {
                        continue;
                    };
                    journal::apply_to(rec, time, ev);
                    let done = rec.withdrawn
                        || matches!(rec.verdict, Some(Verdict::Approved | Verdict::Declined))
                            && !rec.resolved;
                    if done {
                        if let Some(rec) = open.remove(&id) {
                            each(rec);
                        }
                    }
                }
            }
        }
    }
    for (_, r) in open {
        each(r);
    }
    Ok(DayRead { starts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::terminal::journal::testing::{begun, ended, open};
    use crate::terminal::journal::{format_line, unix_time};
    use crate::terminal::journal::{Carry, Journal};
    use std::fs;
    use std::io::Write as _;

    const T: &str = "2026-11-26T16:00:00.000Z";

    fn dir() -> PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "concertd-generations-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// Debit `id` of register `reg`, approved, as the worker writes it.
    fn debit(j: &mut Journal, id: u64, reg: u8) -> Record {
        let request = format!("CZ0040320CA002{reg:02}CB0041000CD0010CE003978").into_bytes();
        let mut answer = request.clone();
        answer.extend_from_slice(b"AE00210");
        j.record(
            id,
            &Event::Begun {
                channel: "tcp".into(),
                peer: "127.0.0.1:1".into(),
                register: reg,
                key: None,
                request: request.clone(),
            },
        )
        .unwrap();
        j.record(
            id,
            &Event::Ended {
                verdict: Verdict::Approved,
                answer: answer.clone(),
            },
        )
        .unwrap();
        j.note(id, &Event::Delivered).unwrap();
        Record {
            id,
            begun_at: T.into(),
            channel: "tcp".into(),
            peer: "127.0.0.1:1".into(),
            register: reg,
            request,
            ended_at: Some(T.into()),
            verdict: Some(Verdict::Approved),
            answer: Some(answer),
            delivered: Some(true),
            ..Record::default()
        }
    }

    fn restored(p: &Path, keep: u32) -> (Vec<u64>, Vec<u64>, Restored) {
        let (_, c) = Journal::open(p, 1 << 20, keep).unwrap();
        let (mut records, mut late) = (Vec::new(), Vec::new());
        let read = restore(&c, |item| match item {
            Item::Record(r) => records.push(r.id),
            Item::Late(id, _) => late.push(id),
        })
        .unwrap();
        (records, late, read)
    }

    #[test]
    fn start_up_reads_the_journal_alone_when_its_rotation_carried_everything() {
        let d = dir();
        let p = d.join("journal");
        let (mut j, _) = Journal::open(&p, 1 << 20, 2).unwrap();
        let kept = debit(&mut j, 10, 1);
        debit(&mut j, 11, 2);
        // An unreadable line in the older generation: counted only if read.
        j.note(12, &Event::Delivered).unwrap();
        let mut carry = Carry::of(&[kept]);
        carry.last = 12_345;
        carry.whole = true;
        j.rotate(carry).unwrap();
        fs::OpenOptions::new()
            .append(true)
            .open(journal::generation(&p, 1))
            .unwrap()
            .write_all(b"not a journal line\n")
            .unwrap();
        debit(&mut j, 20, 2);
        drop(j);
        let (records, late, read) = restored(&p, 2);
        assert!(read.newest_only);
        assert_eq!((read.files, read.bad_lines, read.last), (1, 0, 12_345));
        assert_eq!(records, [10, 20]);
        assert!(late.is_empty(), "{late:?}");
        // The same rotation, not said whole: every generation is read, the
        // copy of tx 10 once.
        let text = fs::read_to_string(&p)
            .unwrap()
            .replacen(" whole\n", "\n", 1);
        fs::write(&p, text).unwrap();
        let (records, late, read) = restored(&p, 2);
        assert!(!read.newest_only);
        assert_eq!((read.files, read.bad_lines), (2, 1));
        assert_eq!(records, [10, 11, 20]);
        // The stray delivery report of tx 12, never begun.
        assert_eq!(late, [12]);
    }

    #[test]
    fn copies_are_known_by_where_they_stand_and_readers_stop_where_they_may() {
        let d = dir();
        let p = d.join("journal");
        let (mut j, _) = Journal::open(&p, 1 << 20, 2).unwrap();
        let one = debit(&mut j, 1, 1);
        debit(&mut j, 2, 1);
        j.rotate(Carry::of(&[one])).unwrap();
        debit(&mut j, 3, 1);
        let three = debit(&mut j, 4, 2);
        j.rotate(Carry::of(&[three])).unwrap();
        for id in 5..=7 {
            debit(&mut j, id, 1);
        }
        drop(j);
        let all = |keep| {
            let (v, read) =
                day(&p, keep, |_| false, |_| true, Vec::new, |v, r| v.push(r.id)).unwrap();
            let mut v = v;
            v.sort_unstable();
            (v, read.starts)
        };
        // Every transaction once: the copies of tx 1 and tx 4 are skipped.
        let (ids, starts) = all(2);
        assert_eq!(ids, [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(starts, None, "journal.2 was the first journal");
        assert_eq!(
            newest(&p, 2, 100)
                .unwrap()
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 6, 7]
        );
        // With journal.2 gone, journal.1's copy of tx 1 is what is left of it.
        let (ids, starts) = all(1);
        assert_eq!(ids, [1, 3, 4, 5, 6, 7]);
        assert!(starts.is_some());
        // The three newest are in the journal itself: nothing older is
        // opened (journal.1 would be refused, a link).
        let one = journal::generation(&p, 1);
        fs::rename(&one, d.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(d.join("elsewhere"), &one).unwrap();
        let shown: Vec<u64> = newest(&p, 2, 3).unwrap().iter().map(|r| r.id).collect();
        assert_eq!(shown, [5, 6, 7]);
        assert!(
            newest(&p, 2, 4).is_err(),
            "the fourth newest is in journal.1"
        );
        // A day the journal itself started before: the older files are not
        // opened either.
        let (ids, _) = day(&p, 2, |_| true, |_| true, Vec::new, |v, r| v.push(r.id)).unwrap();
        assert_eq!(ids, [4, 5, 6, 7]);
        assert!(day(&p, 2, |_| false, |_| true, Vec::new, |v, r| v.push(r.id)).is_err());
    }

    #[test]
    fn lines_read_forwards_and_backwards_alike() {
        let d = dir();
        let p = d.join("f");
        // Lines across chunk ends, an empty one, one past MAX_LINE.
        let mut text = Vec::new();
        let mut want = Vec::new();
        for i in 0..3000 {
            let l = format!("{i} {}", "x".repeat(i * 37 % 500));
            text.extend_from_slice(l.as_bytes());
            text.push(b'\n');
            want.push(l);
        }
        text.extend_from_slice(&vec![b'y'; 3 * MAX_LINE]);
        text.extend_from_slice(b"\n\nlast\n");
        want.push(String::new());
        want.push("last".into());
        fs::write(&p, &text).unwrap();
        let f = File::open(&p).unwrap();
        let mut fw = Forward::new(&f, 0, text.len() as u64);
        let mut got = Vec::new();
        while let Some((at, l)) = fw.line().unwrap() {
            assert_eq!(&text[at as usize..at as usize + l.len()], l);
            got.push(String::from_utf8(l.to_vec()).unwrap());
        }
        assert_eq!(fw.overlong, 1);
        assert_eq!(got, want);
        let mut bw = Backward::new(&f, 0, text.len() as u64);
        let mut back = Vec::new();
        while let Some((at, l)) = bw.line().unwrap() {
            assert_eq!(&text[at as usize..at as usize + l.len()], l);
            back.push(String::from_utf8(l.to_vec()).unwrap());
        }
        back.reverse();
        assert_eq!(bw.overlong, 1);
        assert_eq!(back, want);
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

    /// What `show` and `totals` read: every record once, in id order
    /// (`show`'s reader, backwards, which takes the newest copy), the same
    /// transactions as `totals`' reader (forwards) finds, and when the
    /// oldest kept generation started.
    struct History {
        records: Vec<Record>,
        starts: Option<String>,
    }

    fn read_all(p: &Path, keep: u32) -> io::Result<History> {
        let records = crate::terminal::journal::read::newest(p, keep, 1000)?;
        let (mut forwards, read) = crate::terminal::journal::read::day(
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
