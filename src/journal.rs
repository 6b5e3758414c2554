//! The journal: an append-only text file with one line per event of every
//! transaction, so that no outcome is ever lost. Lines look like
//!
//! ```text
//! 2026-11-26T16:07:28.800 1795709248001 begun tcp 127.0.0.1:41240 01 CZ0040320...
//! 2026-11-26T16:07:29.100 1795709248001 ended approved CZ0040320...AE00210...
//! 2026-11-26T16:07:29.101 1795709248001 delivered
//! 2026-11-26T16:07:29.101 1795709248002 undelivered Broken pipe (os error 32)
//! ```
//!
//! time, transaction id, event, then the event's fields; a frame is always
//! the last field (it may hold spaces). Card numbers are masked before a
//! line is written.

use crate::clock;
use crate::pan;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The environment variable of the fault-injection test hook.
pub const FAULT_ENV: &str = "CONCERTD_TEST_JOURNAL_FAULT";

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
}

/// One transaction as read back from the journal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub id: u64,
    pub begun_at: String,
    pub channel: String,
    pub peer: String,
    pub register: u8,
    pub request: Vec<u8>,
    /// The retry key's journaled part, for a transaction that may be
    /// replayed (see the worker).
    pub key: Option<String>,
    pub ended_at: Option<String>,
    pub verdict: Option<Verdict>,
    pub answer: Option<Vec<u8>>,
    pub delivered: Option<bool>,
    /// Closed by recovery rather than by its backend.
    pub recovered: bool,
    /// A relay's upstream status before the request (masked).
    pub upstream_status: Option<Vec<u8>>,
}

pub struct Journal {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    keep: u32,
    /// Test hook: records refused as if the disk failed (`begun`, `ended`),
    /// to show what happens then.
    faults: String,
}

/// What `open` found.
#[derive(Debug, Default)]
pub struct Contents {
    /// Transactions in id order, from the oldest kept generation on.
    pub records: Vec<Record>,
    /// Lines that could not be read (reported, skipped).
    pub bad_lines: usize,
    /// A torn last line, cut off at start-up.
    pub torn: Option<String>,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .mode(0o600)
        .open(path)
}

fn generation(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
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

fn masked(frame: &[u8]) -> String {
    pan::scrub(frame)
}

/// The text of one line, without its newline.
pub fn format_line(time: &str, id: u64, ev: &Event) -> String {
    let body = match ev {
        Event::Begun {
            channel,
            peer,
            register,
            request,
        } => format!("begun {channel} {peer} {register:02} {}", masked(request)),
        Event::Ended { verdict, answer } => format!("ended {} {}", verdict.word(), masked(answer)),
        Event::Recovered { answer } => format!("ended unknown-recovered {}", masked(answer)),
        Event::Resolved { verdict, answer } => {
            format!("resolved {} {}", verdict.word(), masked(answer))
        }
        Event::Delivered => "delivered".to_string(),
        Event::Undelivered { reason } => format!("undelivered {}", reason.replace('\n', " ")),
        Event::Replayed { peer } => format!("replayed {peer}"),
        Event::UpstreamStatus { answer } => format!("upstream-status {}", masked(answer)),
    };
    format!("{time} {id} {body}")
}

/// Reads one line back; `None` if it is not a journal line.
pub fn parse_line(line: &str) -> Option<(String, u64, Event)> {
    let mut it = line.splitn(4, ' ');
    let time = it.next()?.to_string();
    let id: u64 = it.next()?.parse().ok()?;
    let event = it.next()?;
    let rest = it.next().unwrap_or("");
    let ev = match event {
        "begun" => {
            let mut f = rest.splitn(4, ' ');
            let channel = f.next()?.to_string();
            let peer = f.next()?.to_string();
            let register = f.next()?.parse().ok()?;
            let request = f.next()?.as_bytes().to_vec();
            Event::Begun {
                channel,
                peer,
                register,
                request,
            }
        }
        "ended" => {
            let (v, answer) = rest.split_once(' ')?;
            let answer = answer.as_bytes().to_vec();
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
            let (v, answer) = rest.split_once(' ')?;
            Event::Resolved {
                verdict: Verdict::parse(v)?,
                answer: answer.as_bytes().to_vec(),
            }
        }
        "delivered" => Event::Delivered,
        "undelivered" => Event::Undelivered {
            reason: rest.to_string(),
        },
        "replayed" => Event::Replayed {
            peer: rest.to_string(),
        },
        "upstream-status" => Event::UpstreamStatus {
            answer: rest.as_bytes().to_vec(),
        },
        _ => return None,
    };
    Some((time, id, ev))
}

fn apply(
    records: &mut Vec<Record>,
    index: &mut std::collections::HashMap<u64, usize>,
    time: String,
    id: u64,
    ev: Event,
) {
    if let Event::Begun {
        channel,
        peer,
        register,
        request,
    } = ev
    {
        // A carried-over copy after rotation repeats a record: keep one.
        if index.contains_key(&id) {
            return;
        }
        index.insert(id, records.len());
        records.push(Record {
            id,
            begun_at: time,
            channel,
            peer,
            register,
            request,
            ..Record::default()
        });
        return;
    }
    let Some(&i) = index.get(&id) else { return };
    let r = &mut records[i];
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
        }
        Event::Delivered => r.delivered = Some(true),
        Event::Undelivered { .. } => r.delivered = Some(false),
        Event::UpstreamStatus { answer } => r.upstream_status = Some(answer),
        Event::Begun { .. } | Event::Replayed { .. } => {}
    }
}

/// Reads a journal file. A last line without its newline is torn: it is
/// returned apart and the file is cut back to the last whole line.
fn read_file(path: &Path, cut_torn: bool, out: &mut Contents) -> io::Result<()> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    if whole < bytes.len() {
        let torn = String::from_utf8_lossy(&bytes[whole..]).into_owned();
        if cut_torn {
            OpenOptions::new()
                .write(true)
                .open(path)?
                .set_len(whole as u64)?;
        }
        out.torn = Some(torn);
    }
    let mut index: std::collections::HashMap<u64, usize> = out
        .records
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id, i))
        .collect();
    for line in BufReader::new(&bytes[..whole]).lines() {
        let line = line.unwrap_or_default();
        if line.is_empty() {
            continue;
        }
        match parse_line(&line) {
            Some((time, id, ev)) => apply(&mut out.records, &mut index, time, id, ev),
            None => out.bad_lines += 1,
        }
    }
    Ok(())
}

impl Journal {
    /// Opens (creating, mode 0600) the journal and reads back every kept
    /// generation, oldest first.
    pub fn open(path: &Path, max_size: u64, keep: u32) -> io::Result<(Journal, Contents)> {
        let mut contents = Contents::default();
        for n in (1..=keep).rev() {
            read_file(&generation(path, n), false, &mut contents)?;
        }
        // Create it first so that an unwritable place fails here, at start.
        let mut file = open_append(path)?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        read_file(path, true, &mut contents)?;
        let size = file.seek(SeekFrom::End(0))?;
        contents.records.sort_by_key(|r| r.id);
        Ok((
            Journal {
                path: path.to_path_buf(),
                file,
                size,
                max_size,
                keep,
                faults: std::env::var(FAULT_ENV).unwrap_or_default(),
            },
            contents,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event and waits until it is on disk.
    pub fn record(&mut self, id: u64, ev: &Event) -> io::Result<()> {
        let name = match ev {
            Event::Begun { .. } => "begun",
            Event::Ended { .. } => "ended",
            _ => "other",
        };
        if self.faults.split(',').any(|f| f == name) {
            return Err(io::Error::other(format!(
                "{name} record refused by {FAULT_ENV}"
            )));
        }
        let mut line = format_line(&stamp(), id, ev);
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.file.sync_data()?;
        self.size += line.len() as u64;
        Ok(())
    }

    pub fn needs_rotation(&self) -> bool {
        self.size > self.max_size
    }

    /// Starts a new generation: journal.N-1 -> journal.N ... journal ->
    /// journal.1, then a fresh journal that first receives `carry` (the
    /// records that must outlive the oldest generation: each register's
    /// last transaction). The fresh file is written and synced under a
    /// temporary name and renamed into place, so that a crash leaves either
    /// the old journal or the complete new one.
    pub fn rotate(&mut self, carry: &[Record]) -> io::Result<()> {
        let tmp = generation(&self.path, 0);
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        let mut text = String::new();
        for r in carry {
            text.push_str(&carry_lines(r));
        }
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        if self.keep == 0 {
            fs::rename(&tmp, &self.path)?;
        } else {
            for n in (1..self.keep).rev() {
                let from = generation(&self.path, n);
                if from.exists() {
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
        self.file = open_append(&self.path)?;
        self.size = self.file.seek(SeekFrom::End(0))?;
        Ok(())
    }
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
            request: b"CZ0040320CA00201CB0041234CD0010CE003978CF003a b".to_vec(),
        }
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
        ] {
            let l = format_line("2026-11-26T16:00:00.000", 42, &ev);
            assert_eq!(
                parse_line(&l),
                Some(("2026-11-26T16:00:00.000".into(), 42, ev)),
                "{l}"
            );
        }
        assert_eq!(parse_line("garbage"), None);
        assert_eq!(unix_time("2026-11-26T15:58:32.123Z"), Some(1_795_708_712));
        assert_eq!(unix_time(&stamp()), Some(clock::unix_now().0));
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
    fn torn_last_line_is_cut_and_reported() {
        let d = dir();
        let p = d.join("journal");
        {
            let (mut j, c) = Journal::open(&p, 1 << 20, 2).unwrap();
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
        let (_, c) = Journal::open(&p, 1 << 20, 2).unwrap();
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
        let (mut j, _) = Journal::open(&p, 300, 2).unwrap();
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
                let (_, c) = Journal::open(&p, 300, 2).unwrap();
                let mut last = std::collections::BTreeMap::new();
                for r in c.records {
                    last.insert(r.register, r);
                }
                let carry: Vec<Record> = last.into_values().collect();
                j.rotate(&carry).unwrap();
            }
        }
        assert!(generation(&p, 1).exists());
        assert!(generation(&p, 2).exists());
        assert!(!generation(&p, 3).exists());
        let (_, c) = Journal::open(&p, 300, 2).unwrap();
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
        let (mut j, _) = Journal::open(&p, 1 << 20, 1).unwrap();
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
        let (_, c) = Journal::open(&p, 1 << 20, 1).unwrap();
        let r = c.records[0].clone();
        assert_eq!(r.upstream_status.as_deref(), Some(&kept[..]));
        assert_eq!(r.verdict, Some(Verdict::NotDone));
        assert_eq!(r.answer.as_deref(), Some(&not_ended[..]));
        j.rotate(std::slice::from_ref(&r)).unwrap();
        // Only the carried copy is left: the old generation is dropped.
        fs::remove_file(generation(&p, 1)).unwrap();
        let (_, c) = Journal::open(&p, 1 << 20, 1).unwrap();
        assert_eq!(c.records, vec![r]);
    }

    #[test]
    fn unwritable_place_is_an_error() {
        assert!(Journal::open(Path::new("/nonexistent/dir/journal"), 1, 1).is_err());
    }
}
