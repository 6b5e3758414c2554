//! The oracle: the journal read by this program's own reader, never by
//! concertd's, so that a bug in one is not hidden by the same bug in the
//! other.

use crate::util::text;
use std::collections::BTreeMap;
use std::path::Path;

/// One transaction as the journal tells it.
#[derive(Clone, Debug, Default)]
pub struct JRec {
    pub register: String,
    pub request: String,
    pub begun: usize,
    /// `approved`, `declined`, `unknown`, `unknown-recovered` or
    /// `not-done`.
    pub verdict: Option<String>,
    /// The answer of the `ended` line.
    pub ended: Option<String>,
    /// The answer a status request must return: `ended`, or a later
    /// `resolved`.
    pub last: Option<String>,
    pub delivered: Option<bool>,
}

/// A frame field as the journal writes it: as is, or `%` and the bytes
/// with `%XX` escapes.
fn journal_frame(field: &str) -> String {
    let Some(esc) = field.strip_prefix('%') else {
        return field.to_string();
    };
    let b = esc.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    text(&out)
}

/// Reads the journal independently of concertd's own reader.
pub fn read_journal(path: &Path) -> (BTreeMap<u64, JRec>, Vec<String>) {
    let mut recs: BTreeMap<u64, JRec> = BTreeMap::new();
    let mut problems = Vec::new();
    let bytes = std::fs::read(path).unwrap_or_default();
    if !bytes.is_empty() && bytes.last() != Some(&b'\n') {
        problems.push("journal does not end with a newline after a restart".into());
    }
    let mut lines = Vec::new();
    for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        match std::str::from_utf8(line) {
            Ok(l) => lines.push(l),
            Err(_) => problems.push(format!("line not UTF-8: {:?}", text(line))),
        }
    }
    for line in lines {
        let mut it = line.splitn(4, ' ');
        let (_time, id, event, rest) = (it.next(), it.next(), it.next(), it.next());
        let Some(id) = id.and_then(|i| i.parse::<u64>().ok()) else {
            problems.push(format!("unreadable line: {line:?}"));
            continue;
        };
        let rest = rest.unwrap_or("");
        match event {
            Some("begun") => {
                let mut f: Vec<&str> = rest.splitn(4, ' ').collect();
                // An optional `key=` field comes before the frame.
                if f.len() == 4 && f[3].starts_with("key=") {
                    match f[3].split_once(' ') {
                        Some((_, frame)) => f[3] = frame,
                        None => f.truncate(3),
                    }
                }
                let r = recs.entry(id).or_default();
                r.begun += 1;
                if f.len() == 4 {
                    r.register = f[2].to_string();
                    r.request = journal_frame(f[3]);
                } else {
                    problems.push(format!("short begun line: {line:?}"));
                }
            }
            Some("ended") | Some("resolved") => {
                let Some((verdict, answer)) = rest.split_once(' ') else {
                    problems.push(format!("short line: {line:?}"));
                    continue;
                };
                let answer = &journal_frame(answer);
                let Some(r) = recs.get_mut(&id) else {
                    problems.push(format!("tx {id} {} without begun", event.unwrap()));
                    continue;
                };
                if event == Some("ended") {
                    if r.ended.is_some() {
                        problems.push(format!("tx {id} ended twice"));
                    }
                    r.ended = Some(answer.to_string());
                }
                r.verdict = Some(verdict.to_string());
                r.last = Some(answer.to_string());
            }
            Some("delivered") => {
                if let Some(r) = recs.get_mut(&id) {
                    r.delivered = Some(true);
                }
            }
            Some("undelivered") => {
                if let Some(r) = recs.get_mut(&id) {
                    r.delivered = Some(false);
                }
            }
            Some("replayed") | Some("upstream-status") => {}
            _ => problems.push(format!("unknown event: {line:?}")),
        }
    }
    (recs, problems)
}
