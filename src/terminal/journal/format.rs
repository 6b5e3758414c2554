//! The journal's lines: the events and the records they make, masking,
//! escaping, and each line written and read back (see the module's
//! documentation for the format), rotation lines included.

use crate::wire::clock;
use crate::wire::pan;
use crate::wire::tlv::{self, Frame};
use std::fmt::Write as _;

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
        // `recovered` stays: the register got no answer at the time,
        // whatever was learnt since.
        Event::Resolved { verdict, answer } => {
            r.verdict = Some(verdict);
            r.answer = Some(answer);
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
pub(super) fn rotation_line(time: &str, carried: u64, last: u64, whole: bool) -> String {
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
pub(super) fn rotated_at(line: &[u8]) -> Option<String> {
    rotation(line).map(|r| r.at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::terminal::journal::testing::{begun, dir, open, T};
    use proptest::prelude::*;
    use std::fs;

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
}
