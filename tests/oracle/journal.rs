//! concertd's journal as the oracle reads it, with its own small reader
//! (never concertd's): followed line by line as it grows, across
//! rotations, and read whole, generations included, after a restart.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct JLine {
    pub id: u64,
    pub event: String,
    /// The verdict of ended and resolved records.
    pub verdict: String,
    /// The last field: the request of begun, the answer of ended and
    /// resolved.
    pub frame: String,
}

impl JLine {
    /// The records that close a transaction: `ended` (its answer), or
    /// `withdrawn` (serial: NAKed before it was taken, never started).
    pub fn closes(&self) -> bool {
        self.event == "ended" || self.event == "withdrawn"
    }
}

/// Whether a frame as the journal (or a payment program) has it is
/// `real` as sent: the journal masks what may be a card number, digit by
/// digit into `#` (concertd.8 "Card numbers"), so a `#` stands for any
/// digit; everything else must be the same byte.
pub fn same_masked(journal: &str, real: &str) -> bool {
    journal.len() == real.len()
        && journal
            .bytes()
            .zip(real.bytes())
            .all(|(j, r)| j == r || (j == b'#' && r.is_ascii_digit()))
}

fn parse(line: &str) -> Option<JLine> {
    let mut it = line.splitn(4, ' ');
    let _time = it.next()?;
    let id = it.next()?.parse().ok()?;
    let event = it.next()?.to_string();
    let rest = it.next().unwrap_or("");
    let frame = rest.rsplit(' ').next().unwrap_or("").to_string();
    let verdict = match event.as_str() {
        "ended" | "resolved" => rest.split(' ').next().unwrap_or("").to_string(),
        _ => String::new(),
    };
    Some(JLine {
        id,
        event,
        verdict,
        frame,
    })
}

/// Every record of the journal and its kept generations, oldest first.
pub fn read_all(path: &Path) -> Vec<JLine> {
    let mut out = Vec::new();
    for g in (1..=8).rev() {
        let p = PathBuf::from(format!("{}.{g}", path.display()));
        out.extend(read_file(&p));
    }
    out.extend(read_file(path));
    out
}

fn read_file(p: &Path) -> Vec<JLine> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(parse)
        .collect()
}

/// The records appended since the last look.
pub struct Tail {
    path: PathBuf,
    offset: usize,
    ino: u64,
    seen: HashSet<String>,
    pub lines: Vec<JLine>,
}

impl Tail {
    pub fn new(path: PathBuf) -> Tail {
        Tail {
            path,
            offset: 0,
            ino: 0,
            seen: HashSet::new(),
            lines: Vec::new(),
        }
    }

    pub fn refresh(&mut self) {
        let Ok(meta) = std::fs::metadata(&self.path) else {
            return;
        };
        if meta.ino() != self.ino {
            // A new generation: its copies are records already seen.
            self.ino = meta.ino();
            self.offset = 0;
        }
        if (meta.len() as usize) < self.offset {
            self.offset = 0;
        }
        let mut bytes = Vec::new();
        let read = std::fs::File::open(&self.path).and_then(|mut f| {
            use std::io::{Read, Seek};
            f.seek(std::io::SeekFrom::Start(self.offset as u64))?;
            f.read_to_end(&mut bytes)
        });
        if read.is_err() {
            return;
        }
        let new = &bytes[..];
        let Some(end) = new.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        for line in String::from_utf8_lossy(&new[..end]).lines() {
            // The time stamp aside, a copy is the same record.
            let key = line.split_once(' ').map(|(_, r)| r).unwrap_or(line);
            if !self.seen.insert(key.to_string()) {
                continue;
            }
            if let Some(l) = parse(line) {
                self.lines.push(l);
            }
        }
        self.offset += end + 1;
    }
}
