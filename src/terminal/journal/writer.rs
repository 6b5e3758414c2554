//! The journal written: appends all or nothing, notes and syncs, and
//! rotation with the records still needed carried into the new
//! generation.

use super::format::rotation_line;
use super::{format_line, stamp, Event, Record, Verdict};
use super::{generation, Contents, Source};
use crate::config::files;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

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
    /// The highest transaction id given out so far (see [`Rotation`](super::Rotation)).
    pub last: u64,
    /// The records carried hold everything start-up needs from the older
    /// generations (see [`Rotation`](super::Rotation)).
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
    use crate::terminal::journal::format::rotated_at;
    use crate::terminal::journal::parse_line;
    use crate::terminal::journal::testing::{begun, dir, ended, open, T};

    /// A transaction closed unknown at start, then resolved: read back,
    /// and carried over by a rotation, it is still one whose register got
    /// no answer at the time (what `concertctl show` says of it).
    #[test]
    fn a_recovered_then_resolved_record_stays_recovered_when_carried() {
        let t = "2026-12-01T04:00:00.000Z";
        let lines = format!(
            "{t} 7 begun tcp 127.0.0.1:9 01 CZ0040320CA00201CB003100CD0010CE003978\n\
             {t} 7 ended unknown-recovered CZ0040320AE00201AF00207\n\
             {t} 7 resolved approved CZ0040320AE00210\n"
        );
        let d = dir();
        fs::write(d.join("j"), &lines).unwrap();
        let (_, read) = open(&d.join("j"), 1 << 20, 0).unwrap();
        let r = &read.records[0];
        assert!(r.recovered && r.resolved, "{r:?}");
        assert_eq!(r.verdict, Some(Verdict::Approved));
        fs::write(d.join("c"), carry_lines(r)).unwrap();
        let (_, carried) = open(&d.join("c"), 1 << 20, 0).unwrap();
        assert_eq!(&carried.records[0], r);
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
    fn unwritable_place_is_an_error() {
        assert!(open(Path::new("/nonexistent/dir/journal"), 1, 1).is_err());
    }
}
