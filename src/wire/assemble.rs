//! Where a request ends on TCP. Concert V3 has no terminator and no length
//! header, so a request is complete when the client shuts its sending side,
//! when CR and/or LF follows a whole element, when the whole elements hold
//! every mandatory tag of the operation and nothing more is waiting, or when
//! nothing more comes within `request-gap`. A request wrapped as
//! STX..ETX+LRC ends with its LRC byte.

use crate::wire::framing::{lrc, Wrapping, ETX, STX};
use crate::wire::request::mandatory_for_cd;
use crate::wire::tlv::{self, tags, Step, Tag};

/// Largest request accepted.
pub const MAX_REQUEST: usize = 8 * 1024;

/// A request ready to be decoded, or bytes that cannot be one.
#[derive(Debug, PartialEq, Eq)]
pub struct Assembled {
    /// The TLV body, without framing or CR/LF tail.
    pub body: Vec<u8>,
    pub wrapping: Wrapping,
    /// Bytes after the end of the request (after the CR/LF tail, or after
    /// the LRC); the caller logs them.
    pub trailing: Vec<u8>,
    /// Why the bytes are not a request; `None` when they are.
    pub fault: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Nothing but CR/LF so far.
    Empty,
    /// Cut inside an element or before the end of an STX frame.
    Partial,
    /// Whole elements; `ready` when they hold every mandatory tag of the
    /// operation named by CD.
    Whole {
        ready: bool,
    },
    Done(Assembled),
}

pub struct Assembler {
    buf: Vec<u8>,
    /// Leading CR/LF dropped before the request starts.
    start: usize,
    /// End of the whole elements read so far (raw requests).
    scanned: usize,
    seen: Vec<Tag>,
    cd: Option<Vec<u8>>,
    max: usize,
}

impl Default for Assembler {
    fn default() -> Self {
        Assembler::new(MAX_REQUEST)
    }
}

fn crlf(b: u8) -> bool {
    b == b'\r' || b == b'\n'
}

impl Assembler {
    pub fn new(max: usize) -> Assembler {
        Assembler {
            buf: Vec::with_capacity(256),
            start: 0,
            scanned: 0,
            seen: Vec::new(),
            cd: None,
            max,
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn done(
        &self,
        body: Vec<u8>,
        wrapping: Wrapping,
        trailing: &[u8],
        fault: Option<String>,
    ) -> Progress {
        Progress::Done(Assembled {
            body,
            wrapping,
            trailing: trailing.to_vec(),
            fault,
        })
    }

    pub fn feed(&mut self, data: &[u8]) -> Progress {
        self.buf.extend_from_slice(data);
        while self.start < self.buf.len() && crlf(self.buf[self.start]) && self.scanned == 0 {
            self.start += 1;
        }
        if self.start == self.buf.len() {
            return Progress::Empty;
        }
        if self.buf[self.start] == STX {
            return self.feed_stx();
        }
        self.feed_raw()
    }

    fn feed_stx(&mut self) -> Progress {
        let frame = &self.buf[self.start + 1..];
        let Some(end) = frame.iter().position(|&b| b == ETX) else {
            if let Some(b) = frame.iter().find(|&&b| !tlv::is_printable(b)) {
                let why = format!("byte 0x{b:02x} inside an STX frame");
                return self.done(frame.to_vec(), Wrapping::Stx, &[], Some(why));
            }
            if self.len() > self.max {
                return self.done(frame.to_vec(), Wrapping::Stx, &[], Some(self.oversize()));
            }
            return Progress::Partial;
        };
        let Some(&got) = frame.get(end + 1) else {
            return Progress::Partial;
        };
        let body = frame[..end].to_vec();
        let trailing = &frame[end + 2..];
        let want = lrc(&frame[..=end]);
        let fault = if let Some(b) = body.iter().find(|&&b| !tlv::is_printable(b)) {
            Some(format!("byte 0x{b:02x} inside an STX frame"))
        } else if got != want {
            Some(format!("bad LRC 0x{got:02x}, expected 0x{want:02x}"))
        } else if body.len() > self.max {
            Some(self.oversize())
        } else {
            None
        };
        self.done(body, Wrapping::Stx, trailing, fault)
    }

    fn oversize(&self) -> String {
        format!("request longer than {} bytes", self.max)
    }

    fn feed_raw(&mut self) -> Progress {
        loop {
            let pos = self.start + self.scanned;
            let rest = &self.buf[pos..];
            if rest.is_empty() {
                break;
            }
            if crlf(rest[0]) {
                let tail = rest.iter().take_while(|&&b| crlf(b)).count();
                let body = self.buf[self.start..pos].to_vec();
                return self.done(body, Wrapping::Raw, &rest[tail..], None);
            }
            match tlv::step(rest, self.scanned) {
                Step::Whole(el, n) => {
                    if el.tag == tags::CD {
                        self.cd = Some(el.value);
                    }
                    self.seen.push(el.tag);
                    self.scanned += n;
                }
                Step::Cut => break,
                Step::Invalid(e) => {
                    let body = self.buf[self.start..].to_vec();
                    return self.done(body, Wrapping::Raw, &[], Some(e.to_string()));
                }
            }
        }
        if self.len() > self.max {
            let body = self.buf[self.start..].to_vec();
            return self.done(body, Wrapping::Raw, &[], Some(self.oversize()));
        }
        if self.start + self.scanned < self.buf.len() {
            return Progress::Partial;
        }
        let ready = self.seen.contains(&tags::CZ)
            && self
                .cd
                .as_deref()
                .and_then(mandatory_for_cd)
                .is_some_and(|m| m.iter().all(|t| self.seen.contains(t)));
        Progress::Whole { ready }
    }

    /// The client stopped sending (shut down, went quiet for
    /// `request-gap`, or reached `request-timeout`). `None` when it sent
    /// nothing at all.
    pub fn finish(&self) -> Option<Assembled> {
        if self.is_empty() {
            return None;
        }
        let body = self.buf[self.start..].to_vec();
        if self.buf[self.start] == STX {
            return Some(Assembled {
                body: body[1..].to_vec(),
                wrapping: Wrapping::Stx,
                trailing: Vec::new(),
                fault: Some("STX frame without ETX and LRC".into()),
            });
        }
        let fault = if self.start + self.scanned < self.buf.len() {
            Some("request cut inside an element".to_string())
        } else {
            None
        };
        Some(Assembled {
            body,
            wrapping: Wrapping::Raw,
            trailing: Vec::new(),
            fault,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::framing::wrap;
    use proptest::prelude::*;

    const DEBIT: &[u8] = b"CZ0040320CJ012247300123456CA00201CB00512345CD0010CE003978";

    fn done(p: Progress) -> Assembled {
        match p {
            Progress::Done(a) => a,
            other => panic!("not done: {other:?}"),
        }
    }

    #[test]
    fn whole_request_with_every_mandatory_tag_is_ready() {
        let mut a = Assembler::default();
        assert_eq!(a.feed(DEBIT), Progress::Whole { ready: true });
        assert_eq!(a.finish().unwrap().body, DEBIT);
    }

    #[test]
    fn missing_mandatory_tag_waits_for_the_gap() {
        let mut a = Assembler::default();
        assert_eq!(a.feed(&DEBIT[..49]), Progress::Whole { ready: false });
        let f = a.finish().unwrap();
        assert_eq!(f.fault, None);
    }

    #[test]
    fn cut_element_completed_by_a_second_write() {
        let mut a = Assembler::default();
        assert_eq!(a.feed(&DEBIT[..30]), Progress::Partial);
        assert_eq!(
            a.finish().unwrap().fault.as_deref(),
            Some("request cut inside an element")
        );
        assert_eq!(a.feed(&DEBIT[30..]), Progress::Whole { ready: true });
    }

    #[test]
    fn crlf_tail_ends_the_request() {
        let mut a = Assembler::default();
        let mut v = DEBIT[..49].to_vec();
        v.extend_from_slice(b"\r\nXX");
        let d = done(a.feed(&v));
        assert_eq!(d.body, &DEBIT[..49]);
        assert_eq!(d.trailing, b"XX");
        assert_eq!(d.fault, None);
    }

    #[test]
    fn leading_crlf_is_ignored() {
        let mut a = Assembler::default();
        assert_eq!(a.feed(b"\r\n"), Progress::Empty);
        assert_eq!(a.feed(DEBIT), Progress::Whole { ready: true });
    }

    #[test]
    fn stx_wrapped() {
        let mut a = Assembler::default();
        let w = wrap(DEBIT, Wrapping::Stx);
        assert_eq!(a.feed(&w[..w.len() - 1]), Progress::Partial);
        let d = done(a.feed(&w[w.len() - 1..]));
        assert_eq!(
            (d.body.as_slice(), d.wrapping, d.fault),
            (DEBIT, Wrapping::Stx, None)
        );
        let mut bad = w.clone();
        *bad.last_mut().unwrap() ^= 1;
        let d = done(Assembler::default().feed(&bad));
        assert!(d.fault.unwrap().starts_with("bad LRC"));
    }

    #[test]
    fn garbage_and_control_bytes_are_faults_at_once() {
        let d = done(Assembler::default().feed(b"hello"));
        assert!(d.fault.is_some());
        let d = done(Assembler::default().feed(b"CZ004032\x00"));
        assert!(d.fault.unwrap().contains("0x00"));
    }

    #[test]
    fn oversize_is_a_fault() {
        let mut a = Assembler::default();
        let mut p = Progress::Empty;
        let mut v = b"CZ0040320".to_vec();
        for _ in 0..10 {
            v.extend_from_slice(b"XX999");
            v.extend(std::iter::repeat_n(b'a', 999));
        }
        for c in v.chunks(100) {
            p = a.feed(c);
            if matches!(p, Progress::Done(_)) {
                break;
            }
        }
        assert!(done(p).fault.unwrap().contains("longer than"));
    }

    proptest! {
        #[test]
        fn any_split_assembles_the_same(cut in 1usize..56) {
            let mut a = Assembler::default();
            let first = a.feed(&DEBIT[..cut]);
            prop_assert!(!matches!(first, Progress::Done(_)));
            prop_assert_eq!(a.feed(&DEBIT[cut..]), Progress::Whole { ready: true });
        }

        #[test]
        fn never_panics(chunks in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..64), 0..8)) {
            let mut a = Assembler::new(256);
            for c in chunks {
                if let Progress::Done(_) = a.feed(&c) { break; }
            }
            let _ = a.finish();
        }
    }
}
