//! The properties the fuzz targets assert, one function per target. Each
//! panics when the property fails, which libFuzzer reports as a crash.
//!
//! `tests/fuzz_regressions.rs` includes this file by path, so that
//! `make test` replays every seed under `fuzz/seeds/` through exactly what
//! the fuzzer checks; keep it free of anything but `std` and `concert`.

use concert::config::Config;
use concert::front::serial::{self, Port};
use concert::wire::answer::{self, Af};
use concert::wire::assemble::{Assembled, Assembler, Progress};
use concert::wire::framing::{lrc, Wrapping, ACK, ENQ, EOT, ETB, ETX, NAK, STX};
use concert::wire::request::{self, mandatory_for_cd};
use concert::wire::tlv::{self, tags, Element, Frame, Step, Tag};
use concert::wire::v2;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Bytes shown in an assertion message.
fn show(b: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(b))
}

/// An answer concertd would send must be a well-formed V3 message.
fn assert_answer(a: &Frame, what: &str, input: &[u8]) {
    let bytes = a.encode();
    if let Err((_, e)) = Frame::decode(&bytes) {
        panic!(
            "{what} {} does not decode ({e}); input {}",
            show(&bytes),
            show(input)
        );
    }
}

/// `tlv_decode`: whatever decodes re-encodes to the same bytes, a request
/// that parses is that frame, and every error answer built from what could
/// be read is itself a valid message.
pub fn tlv_decode(data: &[u8]) {
    match Frame::decode(data) {
        Ok(f) => assert_eq!(
            f.encode(),
            data,
            "decoded frame does not re-encode to its input"
        ),
        Err((partial, _)) => {
            assert_answer(&answer::refusal(&partial, Some(Af::Format)), "AF09", data)
        }
    }
    match request::parse(data, &[978]) {
        Ok(req) => {
            assert_eq!(
                req.frame.encode(),
                data,
                "parsed request does not re-encode to its input"
            );
            assert_answer(&answer::refusal(&req.frame, None), "busy answer", data);
            assert_answer(&answer::done(&req.frame), "done answer", data);
            assert_answer(
                &answer::identification(&req.frame),
                "identification answer",
                data,
            );
        }
        Err(rej) => assert_answer(&answer::refusal(&rej.frame, Some(rej.af)), "refusal", data),
    }
}

/// `v2_decode`: the parsers never panic; a request that parses means a V3
/// frame that decodes, and its replies are 25 or 80 bytes that the reply
/// parser reads back.
pub fn v2_decode(data: &[u8]) {
    let _ = v2::parse_reply(data);
    let Ok(req) = v2::parse(data) else {
        return;
    };
    let frame = req.to_v3();
    let bytes = frame.encode();
    match Frame::decode(&bytes) {
        Ok(back) => assert_eq!(back, frame, "to_v3 {} decodes differently", show(&bytes)),
        Err((_, e)) => panic!("to_v3 of {} gives {} ({e})", show(data), show(&bytes)),
    }
    for (what, reply) in [
        ("reply_from_answer", v2::reply_from_answer(&req, &frame)),
        ("immediate_reply", v2::immediate_reply(&req)),
    ] {
        let want = if req.long_reply() { 80 } else { 25 };
        assert_eq!(
            reply.len(),
            want,
            "{what} of {} is {}",
            show(data),
            show(&reply)
        );
        match v2::parse_reply(&reply) {
            Ok(r) => {
                assert_eq!(r.pos, req.pos, "{what}: POS");
                assert_eq!(r.amount, req.amount, "{what}: amount");
                assert_eq!(r.currency, req.currency, "{what}: currency");
                assert_eq!(r.private, req.private, "{what}: private data");
            }
            Err(e) => panic!("{what} {} does not parse back ({e})", show(&reply)),
        }
    }
}

/// The elements of `body` when it is nothing but whole elements (in any
/// order, duplicates included).
fn whole_elements(body: &[u8]) -> Option<Vec<Element>> {
    let mut els = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        match tlv::step(&body[pos..], pos) {
            Step::Whole(el, n) => {
                els.push(el);
                pos += n;
            }
            _ => return None,
        }
    }
    Some(els)
}

/// What an assembled request without fault must be. A raw request is whole
/// TLV elements: `Frame::decode_any` accepts it, or refuses only a
/// duplicate tag, which the assembler does not look for (`request::parse`
/// answers it AF09). An STX frame may hold a V2 payload, so it is only
/// checked to be printable.
fn check_assembled(a: &Assembled, input: &[u8]) {
    if a.fault.is_some() {
        return;
    }
    match a.wrapping {
        Wrapping::Raw => {
            assert!(!a.body.is_empty(), "empty raw request from {}", show(input));
            match Frame::decode_any(&a.body) {
                Ok(_) | Err((_, tlv::DecodeError::Duplicate { .. })) => {}
                Err((_, e)) => panic!(
                    "raw request {} assembled without fault but does not decode ({e}); input {}",
                    show(&a.body),
                    show(input)
                ),
            }
        }
        Wrapping::Stx => assert!(
            a.body.iter().copied().all(tlv::is_printable),
            "STX body {} assembled without fault holds a control byte; input {}",
            show(&a.body),
            show(input)
        ),
    }
}

/// `assembler`: the first byte chooses the chunk sizes (low nibble, high
/// nibble, alternately, plus one; 0xff: all at once), the rest is fed in
/// those chunks until the assembler says `Done`; `finish` is called either
/// way. Beyond [`check_assembled`]: a `Done` request is the input's own
/// bytes (leading CR/LF, framing, CR/LF tail and trailing bytes put back
/// give the bytes fed), and `Whole { ready }` means whole elements that
/// hold every mandatory tag of CD.
pub fn assembler(data: &[u8]) {
    let Some((&ctl, input)) = data.split_first() else {
        return;
    };
    let sizes = [usize::from(ctl & 0x0f) + 1, usize::from(ctl >> 4) + 1];
    let mut asm = Assembler::default();
    let mut fed = 0;
    let mut last = None;
    let mut i = 0;
    while fed < input.len() {
        let n = if ctl == 0xff {
            input.len()
        } else {
            sizes[i % 2].min(input.len() - fed)
        };
        i += 1;
        let progress = asm.feed(&input[fed..fed + n]);
        fed += n;
        match progress {
            Progress::Done(a) => {
                check_assembled(&a, input);
                check_done(&a, &input[..fed]);
                last = None;
                break;
            }
            p => last = Some(p),
        }
    }
    if let Some(Progress::Whole { ready }) = last {
        let a = asm.finish().expect("whole elements but nothing to finish");
        assert_eq!(a.fault, None, "whole elements finished with a fault");
        let els = whole_elements(&a.body)
            .unwrap_or_else(|| panic!("Whole but {} is not whole elements", show(&a.body)));
        if ready {
            // The assembler goes by the last CD it saw.
            let has = |t: Tag| els.iter().any(|e| e.tag == t);
            let cd = els.iter().rev().find(|e| e.tag == tags::CD);
            let mandatory = cd.and_then(|e| mandatory_for_cd(&e.value));
            assert!(
                has(tags::CZ) && mandatory.is_some_and(|m| m.iter().all(|&t| has(t))),
                "ready without every mandatory tag: {}",
                show(&a.body)
            );
        }
    }
    if let Some(a) = asm.finish() {
        check_assembled(&a, input);
    }
}

/// A `Done` request put back together gives the bytes fed (after any
/// leading CR/LF).
fn check_done(a: &Assembled, fed: &[u8]) {
    let start = fed
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    let fed = &fed[start..];
    if a.fault.is_some() {
        return;
    }
    let mut again = match a.wrapping {
        Wrapping::Raw => {
            let mut v = a.body.clone();
            let tail = fed[a.body.len().min(fed.len())..]
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            assert!(tail > 0, "raw request done without a CR/LF tail");
            v.extend_from_slice(&fed[a.body.len()..a.body.len() + tail]);
            v
        }
        Wrapping::Stx => concert::wire::framing::wrap(&a.body, Wrapping::Stx),
    };
    again.extend_from_slice(&a.trailing);
    assert!(
        again == fed,
        "assembled request gives back {}, not the bytes fed {}",
        show(&again),
        show(fed)
    );
}

/// `config_parse`: a configuration that parses is described in the file's
/// own syntax, and that description parses to the same configuration.
/// Inputs that would make `listen` resolve a host name are skipped, so
/// that the fuzzer sends no DNS queries.
pub fn config_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if text.lines().any(needs_resolver) {
        return;
    }
    let Ok(c) = Config::parse(&text, "fuzz") else {
        return;
    };
    let d = c.describe();
    match Config::parse(&d, "d") {
        Ok(again) => assert_eq!(
            again,
            c,
            "description parses to another configuration:\n{d}\ninput {}",
            show(data)
        ),
        Err(e) => panic!("description does not parse: {e}\n{d}\ninput {}", show(data)),
    }
}

/// Whether this line is a `listen` line whose address only a resolver
/// can read (the last case of `config::parse_listen`). Words are split as
/// the configuration file splits them.
fn needs_resolver(line: &str) -> bool {
    let words = concert::config::words(line).unwrap_or_default();
    let [key, addr] = words.as_slice() else {
        return false;
    };
    if key != "listen"
        || addr.parse::<u16>().is_ok()
        || addr.starts_with("*:")
        || addr.parse::<std::net::SocketAddr>().is_ok()
    {
        return false;
    }
    matches!(addr.rsplit_once(':'), Some((h, _)) if !h.is_empty() && h != "localhost")
}

/// What the fake port saw.
#[derive(Default)]
struct Wire {
    /// One entry per `write` call (the link writes each send at once).
    writes: Vec<Vec<u8>>,
    /// Input bytes handed out.
    read: usize,
}

/// The register's end of a serial line, played from fuzz bytes: it hands
/// them out a few at a time, then fails with `UnexpectedEof`, which ends
/// `serve_port`. [`PAUSE_BYTE`] (a NUL with the parity bit set, which the
/// link ignores wherever it comes) stands for a pause on the line: one read
/// that times out after [`PAUSE`], long enough for the 1 ms link timers to
/// fire and for the worker to finish a transaction, then the byte alone. At
/// most [`PAUSES`] pauses per input keep a run fast.
struct FakePort {
    input: Vec<u8>,
    pos: usize,
    pauses: u32,
    paused: bool,
    reads: usize,
    wire: Arc<Mutex<Wire>>,
}

pub const PAUSE_BYTE: u8 = 0x80;
const PAUSES: u32 = 8;
thread_local! {
    /// How long a pause lasts, in ms, for exchanges run on this thread:
    /// short for fuzzing speed; a regression test that needs the worker to
    /// have finished sets it longer.
    pub static PAUSE_MS: std::cell::Cell<u64> = const { std::cell::Cell::new(3) };
}

impl Read for FakePort {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(&next) = self.input.get(self.pos) else {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "fuzz input exhausted",
            ));
        };
        let pause = next == PAUSE_BYTE && self.pauses < PAUSES;
        if pause && !self.paused {
            self.pauses += 1;
            self.paused = true;
            let ms = PAUSE_MS.with(std::cell::Cell::get);
            std::thread::sleep(Duration::from_millis(ms));
            return Err(io::Error::new(io::ErrorKind::TimedOut, "pause"));
        }
        self.paused = false;
        self.reads += 1;
        // A byte after a pause comes alone, else 1 to 4 bytes, never past
        // the next pause.
        let mut n = if pause {
            1
        } else {
            (self.reads % 4 + 1)
                .min(buf.len())
                .min(self.input.len() - self.pos)
        };
        if let Some(p) = self.input[self.pos + 1..self.pos + n]
            .iter()
            .position(|&b| b == PAUSE_BYTE)
        {
            n = p + 1;
        }
        buf[..n].copy_from_slice(&self.input[self.pos..self.pos + n]);
        self.pos += n;
        self.wire.lock().unwrap_or_else(|p| p.into_inner()).read = self.pos;
        Ok(n)
    }
}

impl Write for FakePort {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.wire
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .writes
            .push(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Port for FakePort {
    fn clear_input(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A worker on the simulator, over a journal already read, running in its
/// own thread; the control sender keeps it running until dropped.
type Running = (
    concert::terminal::worker::Handle,
    Box<dyn std::any::Any + Send + Sync>,
    std::thread::JoinHandle<()>,
);

fn simulator_worker(
    journal: concert::terminal::journal::Journal,
    contents: concert::terminal::journal::Contents,
    retry_window: Duration,
) -> Running {
    let (worker, handle, control) = concert::terminal::worker::Worker::new(
        Box::new(concert::backend::simulator::Simulator::new(Duration::ZERO)),
        concert::config::Terminal::Simulator,
        journal,
        contents,
        concert::terminal::worker::Settings {
            transaction_timeout: Duration::from_secs(5),
            retry_window,
            extensions: concert::config::AnswerExtensions::None,
            serial_number: "fuzz".into(),
        },
        std::sync::Arc::default(),
    );
    let t = std::thread::Builder::new()
        .name("worker".into())
        .spawn(move || worker.run())
        .expect("worker thread");
    (handle, Box::new(control), t)
}

/// A worker on the simulator answering at once, journaling to `path`, in
/// its own thread; with the control sender that keeps it running (it
/// stops when that is dropped).
pub fn start_worker(
    path: &std::path::Path,
) -> (
    concert::terminal::worker::Handle,
    Box<dyn std::any::Any + Send + Sync>,
) {
    let (journal, contents) = concert::terminal::journal::Journal::open(path, 1 << 20, 1)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (handle, control, _) = simulator_worker(journal, contents, Duration::ZERO);
    (handle, control)
}

const JOURNAL_PREFIX: &str = "concertd-fuzz-journal-";

/// Removes the journals (and their generations) left in `dir` by fuzz and
/// test runs whose process is gone, and this process's own; without /proc
/// to tell, only this process's own.
fn remove_stale_journals(dir: &std::path::Path) {
    let proc_fs = std::path::Path::new("/proc/self").exists();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(JOURNAL_PREFIX)) else {
            continue;
        };
        let Ok(pid) = rest.split('.').next().unwrap_or("").parse::<u32>() else {
            continue;
        };
        let gone = proc_fs && !std::path::Path::new(&format!("/proc/{pid}")).exists();
        if gone || pid == std::process::id() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The worker of the whole run, journaling to a file of this process in
/// the temporary directory (left there; a later run removes it).
fn worker() -> concert::terminal::worker::Handle {
    struct Shared {
        handle: concert::terminal::worker::Handle,
        _control: Box<dyn std::any::Any + Send + Sync>,
    }
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let tmp = std::env::temp_dir();
            remove_stale_journals(&tmp);
            let path = tmp.join(format!("{JOURNAL_PREFIX}{}", std::process::id()));
            let (handle, control) = start_worker(&path);
            Shared {
                handle,
                _control: control,
            }
        })
        .handle
        .clone()
}

/// `serial_link`: the terminal side of the serial link, fed arbitrary
/// bytes, returns once they are used up (no panic, no hang, no other
/// error), and everything it writes is well formed: single control bytes,
/// STX frames of at most 512 printable bytes with a right LRC (a V3 answer
/// that decodes, or a 25- or 80-byte V2 reply), or a raw V3 answer.
pub fn serial_link(data: &[u8]) {
    let writes = serial_exchange(data, &worker());
    check_written(&writes, data);
}

/// Serves a fake port that plays `data` with 1 ms link timers, on
/// `worker`; returns what the link wrote, one entry per write.
pub fn serial_exchange(data: &[u8], worker: &concert::terminal::worker::Handle) -> Vec<Vec<u8>> {
    let wire = Arc::new(Mutex::new(Wire::default()));
    let port = FakePort {
        input: data.to_vec(),
        pos: 0,
        pauses: 0,
        paused: false,
        reads: 0,
        wire: Arc::clone(&wire),
    };
    let ms = Duration::from_millis(1);
    let conf = serial::Conf {
        settings: concert::config::Serial {
            device: None,
            ack_timeout: ms,
            frame_timeout: ms,
            eot_timeout: ms,
            retry_pause: Duration::ZERO,
            ..Default::default()
        },
        currencies: vec![978],
        request_gap: ms,
        request_timeout: Duration::from_secs(5),
        profile: Default::default(),
    };
    let e = serial::serve_port(Box::new(port), conf, worker, "fuzz");
    assert_eq!(
        (e.kind(), e.to_string()),
        (io::ErrorKind::UnexpectedEof, "fuzz input exhausted".into()),
        "serve_port ended otherwise"
    );
    let mut wire = wire.lock().unwrap_or_else(|p| p.into_inner());
    assert_eq!(wire.read, data.len(), "serve_port left input unread");
    std::mem::take(&mut wire.writes)
}

fn check_written(writes: &[Vec<u8>], input: &[u8]) {
    // Blocks of the V3 answer being sent (ETB ... ETX), for decoding it
    // whole.
    let mut blocks: Vec<u8> = Vec::new();
    let mut last: &[u8] = &[];
    for w in writes {
        match w.as_slice() {
            [ACK] | [NAK] | [EOT] => {}
            [ENQ] => blocks.clear(),
            [STX, payload @ .., end, got] if [ETX, ETB].contains(end) => {
                let want = lrc(payload) ^ end;
                assert_eq!(*got, want, "LRC of {}; input {}", show(w), show(input));
                assert!(
                    payload.len() <= serial::MAX_FRAME,
                    "frame of {} bytes; input {}",
                    payload.len(),
                    show(input)
                );
                assert!(
                    payload.iter().copied().all(tlv::is_printable),
                    "control byte in {}; input {}",
                    show(w),
                    show(input)
                );
                if w.as_slice() == last {
                    // Sent again after a NAK or a timeout.
                    continue;
                }
                last = w;
                blocks.extend_from_slice(payload);
                if *end == ETB {
                    continue;
                }
                let whole = std::mem::take(&mut blocks);
                if whole.starts_with(b"CZ") {
                    if let Err((_, e)) = Frame::decode(&whole) {
                        panic!("V3 answer {} ({e}); input {}", show(&whole), show(input));
                    }
                } else if let Err(e) = v2::parse_reply(&whole) {
                    panic!("V2 reply {} ({e}); input {}", show(&whole), show(input));
                }
            }
            raw if raw.starts_with(b"CZ") => {
                if let Err((_, e)) = Frame::decode(raw) {
                    panic!("raw answer {} ({e}); input {}", show(raw), show(input));
                }
            }
            other => panic!("wrote {}; input {}", show(other), show(input)),
        }
    }
}

/// Requests a backend output is answered for, chosen by the input: tickets
/// of every layout, partial payment allowed or not, and a print.
const BACKEND_REQUESTS: [&[u8]; 8] = [
    b"CZ0040320CJ012247300123456CA00201CB0042500CD0010CE003978CK003100",
    b"CZ0040320CJ012247300123456CA00201CB0042500CD0010CE003978CK003110",
    b"CZ0040320CJ012247300123456CA00201CB0042500CD0010CE003978BF0011CK003121",
    b"CZ0040320CJ012247300123456CA00201CB0042500CD0011CE003978CK003111CF005ORD-1",
    b"CZ0040320CJ012247300123456CA00201CB003123CD0010CE003978BF0011",
    b"CZ0040320CJ012247300123456CA00201CB0042500CD0012CE003978CK003120CH003abc",
    b"CZ0040320CJ012247300123456CA00201CD001PZT008TU9OIFRJ",
    b"CZ0040320CA00201CB0011CD0010CE003978BF0011CK003101",
];

/// `backend_output`: what a backend hands the worker, turned into the
/// answer the register gets as the worker turns it (`worker::with_ticket`,
/// `answer::result`), never panics and gives an answer that decodes, whose
/// ticket's CK and AK decode too, with no amount above the one asked and a
/// different one only when the request allows partial payment; the same
/// holds for the answer rebuilt from it (what a restart does).
///
/// The first byte says what kind of output follows: `r` a V3 upstream's
/// answer to a relayed request, `v` a V2 upstream's reply, anything else an
/// exec program's standard output. For a relay, the second byte chooses
/// the request (low 3 bits) and the rest is the upstream's answer. For an
/// exec program, the second byte chooses the request (low 3 bits) and
/// whether the program exited with status 0 (high bit clear); the rest is
/// what it printed.
pub fn backend_output(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    match kind {
        b'r' | b'v' => relay_output(kind == b'v', rest),
        _ => exec_output(rest),
    }
}

fn relay_output(v2: bool, data: &[u8]) {
    let Some((&ctl, answer)) = data.split_first() else {
        return;
    };
    let raw = BACKEND_REQUESTS[usize::from(ctl & 7)];
    let req = request::parse(raw, &[978]).expect("a request of the table does not parse");
    // Not usable (the relay then reports an unknown outcome): nothing to check.
    if let Ok(outcome) = concert::backend::relay::outcome_from_answer(v2, &req, answer) {
        check_backend_answer(&req, outcome, data);
    }
}

fn exec_output(data: &[u8]) {
    let Some((&ctl, stdout)) = data.split_first() else {
        return;
    };
    let raw = BACKEND_REQUESTS[usize::from(ctl & 7)];
    let req = request::parse(raw, &[978]).expect("a request of the table does not parse");
    let exit_ok = ctl & 0x80 == 0;
    let outcome = concert::backend::exec::outcome_of(1, stdout, exit_ok, &req);
    check_backend_answer(&req, outcome, data);
}

/// The answer for `outcome`, and the one rebuilt from it, are valid.
fn check_backend_answer(req: &request::Request, mut outcome: answer::Outcome, input: &[u8]) {
    concert::terminal::worker::with_ticket(req, &mut outcome, "01/12/2026 10:00:00", false);
    let a = answer::result(&req.frame, &outcome);
    assert_answer(&a, "answer", input);
    if let Some(zt) = a.get(tags::ZT) {
        if let Err((_, e)) = Frame::decode_any(zt) {
            panic!(
                "ZT {} does not decode ({e}); input {}",
                show(zt),
                show(input)
            );
        }
    }
    let asked = req.frame.get(tags::CB);
    if let (Some(cb), Some(asked)) = (a.get(tags::CB), asked) {
        let n = |v: &[u8]| std::str::from_utf8(v).ok()?.parse::<u64>().ok();
        assert!(
            cb == asked || (req.partial_ok && n(cb) < n(asked) && n(cb).is_some()),
            "answer CB {} for CB {} (partial {}); input {}",
            show(cb),
            show(asked),
            req.partial_ok,
            show(input)
        );
    }
    let again = answer::result(&req.frame, &answer::Outcome::from_answer(&a, &req.frame));
    assert_answer(&again, "answer rebuilt from the journal", input);
}

/// `journal_read`: the bytes of a journal file. Every line that parses is
/// written back as a line that parses to the same event (card numbers
/// masked, as every written line is); a start on that file (reading,
/// recovery of transactions never ended, id choice, restoring each
/// register's last transaction) does not panic; and every answer rebuilt
/// from it decodes: the AF07 of a recovery, and the status and duplicata
/// answers of each register.
pub fn journal_read(data: &[u8]) {
    use concert::terminal::journal::{format_line, parse_line, Journal};
    use concert::terminal::worker::{self, Channel, Origin};
    for line in data.split(|&b| b == b'\n') {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        let line = line.strip_suffix('\r').unwrap_or(line);
        let Some((time, id, ev)) = parse_line(line) else {
            continue;
        };
        let again = format_line(&time, id, &ev);
        assert!(
            again.is_ascii() && !again.contains('\n'),
            "{line:?} written back as {again:?}"
        );
        assert_eq!(
            parse_line(&again),
            Some((time, id, ev.masked())),
            "{line:?} written back as {again:?}"
        );
    }
    let tmp = std::env::temp_dir();
    static CLEANED: OnceLock<()> = OnceLock::new();
    CLEANED.get_or_init(|| remove_stale_journals(&tmp));
    let path = tmp.join(format!("{JOURNAL_PREFIX}{}.read", std::process::id()));
    std::fs::write(&path, data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (journal, contents) =
        Journal::open(&path, 1 << 20, 0).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut registers: Vec<u8> = Vec::new();
    let loaded = concert::terminal::journal::read::load(&contents)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for r in &loaded.records {
        if r.answer.is_none() {
            let a = worker::recovery_answer(&r.request);
            match Frame::decode(&a) {
                Ok(f) => assert_answer(&f, "recovery answer", data),
                Err((_, e)) => panic!("recovery answer {} ({e}); input {}", show(&a), show(data)),
            }
        }
        if let Ok((_, answer)) = worker::reread(r) {
            assert_answer(&answer, "journaled answer", data);
        }
        if r.register < 100 && !registers.contains(&r.register) && registers.len() < 8 {
            registers.push(r.register);
        }
    }
    let (handle, control, t) = simulator_worker(journal, contents, Duration::from_secs(3600));
    for reg in registers {
        for cd in ["T", "3"] {
            let body = format!("CZ0040320CA002{reg:02}CD001{cd}");
            let req = request::parse(body.as_bytes(), &[978]).expect("status request");
            let origin = Origin {
                channel: Channel::Tcp,
                peer: "fuzz".into(),
                v2: false,
            };
            let Some(reply) = handle.submit(req, origin) else {
                panic!("no CD={cd} answer; input {}", show(data));
            };
            assert_answer(&reply.frame, &format!("CD={cd} answer"), data);
        }
    }
    drop(control);
    drop(handle);
    if t.join().is_err() {
        panic!("the worker panicked; input {}", show(data));
    }
}

/// A refusal or a reply read by an operator: it holds no control
/// character but line breaks (an echoed ESC would drive their terminal),
/// and it is short.
fn assert_readable(said: &str, what: &str, input: &[u8]) {
    assert!(
        !said.chars().any(|c| c.is_control() && c != '\n'),
        "{what} {said:?} holds a control character; input {}",
        show(input)
    );
    assert!(
        said.len() <= 4096,
        "{what} is {} bytes; input {}",
        said.len(),
        show(input)
    );
}

/// `control_command`: the bytes a client sends on the control socket. The
/// line taken from them (as `read_command` takes it) is refused or parsed;
/// a command that parses is written back as a line that parses to the
/// same command (`show N` within bounds, `totals` on a day that exists);
/// a simulator command is read by a stage, which never panics; every
/// refusal and reply is readable (see [`assert_readable`]).
pub fn control_command(data: &[u8]) {
    use concert::service::control::{self, Command, Day, MAX_COMMAND, MAX_SHOW};
    let received = &data[..data.len().min(MAX_COMMAND + 1)];
    let line = match control::command_line(received) {
        Ok(l) => l,
        Err(e) => return assert_readable(&e, "refusal", data),
    };
    assert!(
        line.len() <= MAX_COMMAND,
        "line {line:?} taken from {}",
        show(data)
    );
    let c = match Command::parse(&line) {
        Ok(c) => c,
        Err(e) => return assert_readable(&e, "refusal", data),
    };
    let text = match &c {
        Command::Status => "status".to_string(),
        Command::Reload => "reload".to_string(),
        Command::Watch => "watch".to_string(),
        Command::Show(n) => {
            assert!((1..=MAX_SHOW).contains(n), "show {n} from {}", show(data));
            format!("show {n}")
        }
        Command::Totals(None) => "totals".to_string(),
        Command::Totals(Some(d)) => {
            assert_eq!(Day::parse(&d.to_string()), Some(*d), "day {d}");
            format!("totals {d}")
        }
        Command::Simulator(s) => {
            assert!(
                !s.is_empty() && s.split(' ').all(|w| !w.is_empty()),
                "simulator command {s:?} is not words joined by single spaces"
            );
            s.clone()
        }
        Command::Registers => "registers".to_string(),
        Command::RegistersClear => "registers clear".to_string(),
        Command::Exam => "exam".to_string(),
    };
    assert_eq!(
        Command::parse(&text),
        Ok(c.clone()),
        "{c:?} written as {text:?}; input {}",
        show(data)
    );
    if let Command::Simulator(s) = &c {
        let stage = concert::backend::stage::Stage::new();
        stage.adopt();
        match stage.command(s) {
            Ok(said) => assert_readable(&said, "reply", data),
            Err(why) => assert_readable(&why, "refusal", data),
        }
    }
}

/// `simulator_plan`: the simulator's vocabulary. The bytes, as text, are
/// read as a `simulator-script`: a refusal names a line of the text; a
/// script's plans are its lines' own words, in order, each written back as
/// text that parses to the same plan; a stage given the script plays its
/// plans in order (a `busy` one as the busy answer, any other as the
/// outcome of a transaction, with the quirks of its channel), then the
/// amount table. Each line is also given as `next` and `decide`: armed
/// as it parses, refused as it parses not; `decide` is refused with no
/// transaction waiting. Every refusal is readable.
pub fn simulator_plan(data: &[u8]) {
    use concert::backend::stage::{Begin, Channel, Stage};
    use concert::config::plan::{Fate, Plan, Script};
    use std::path::Path;
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.lines().collect();
    let words_of = |raw: &str| -> Vec<String> {
        let before = raw.split_once('#').map_or(raw, |(l, _)| l);
        before.split_whitespace().map(str::to_string).collect()
    };
    match Script::parse(Path::new("fuzz.script"), &text) {
        Err((line, msg)) => {
            assert!(
                (1..=lines.len()).contains(&line),
                "refusal at line {line} of {} lines; input {}",
                lines.len(),
                show(data)
            );
            assert_readable(&msg, "script refusal", data);
        }
        Ok(script) => {
            let mut last = 0;
            for (line, plan) in &script.lines {
                assert!(
                    *line > last && *line <= lines.len(),
                    "line {line} after {last}"
                );
                last = *line;
                let words = words_of(lines[line - 1]);
                let words: Vec<&str> = words.iter().map(String::as_str).collect();
                assert_eq!(Plan::parse(&words).as_ref(), Ok(plan), "line {line}");
                let again = plan.to_string();
                assert_eq!(
                    again.parse::<Plan>().as_ref(),
                    Ok(plan),
                    "{plan:?} written as {again:?}"
                );
            }
            let stage = Stage::new();
            stage.adopt();
            stage.configure(true, Some(&script), Duration::from_secs(60));
            for (i, (line, plan)) in script.lines.iter().enumerate() {
                let at = format!("fuzz.script:{line}");
                if plan.fate == Fate::Busy {
                    let note = stage.take_busy();
                    assert!(
                        note.as_deref().is_some_and(|n| n.contains(&at)),
                        "busy at {at}: {note:?}"
                    );
                    continue;
                }
                let id = i as u64 + 1;
                match stage.begin(id, Channel::Tcp) {
                    Begin::Plan { fate, note } => {
                        assert_eq!(fate, plan.fate, "{at}");
                        assert!(note.contains(&at), "{at}: {note}");
                    }
                    other => panic!("{at} ({plan}) played as {other:?}"),
                }
                let quirks: Vec<_> = plan
                    .quirks
                    .iter()
                    .copied()
                    .filter(|q| q.channel() == Channel::Tcp && !q.before_request())
                    .collect();
                let answer = stage.answer(id);
                let want = (!quirks.is_empty() || plan.fate == Fate::Unknown)
                    .then_some((quirks, plan.fate == Fate::Unknown));
                assert_eq!(
                    answer.map(|a| (a.quirks, a.withhold.is_some())),
                    want,
                    "{at}: {plan}"
                );
            }
            assert_eq!(stage.begin(u64::MAX, Channel::Tcp), Begin::Table);
            assert!(stage.state().contains("consumed"), "{}", stage.state());
        }
    }
    for raw in lines.iter().take(32) {
        let words: Vec<&str> = raw.split_whitespace().collect();
        let parsed = Plan::parse(&words);
        let stage = Stage::new();
        stage.adopt();
        let next = stage.command(&format!("next {raw}"));
        match (&parsed, &next) {
            (_, Err(why)) => assert_readable(why, "next refusal", data),
            (_, Ok(said)) => assert_readable(said, "next reply", data),
        }
        match &parsed {
            // `next` alone asks what is armed; `next clear` disarms.
            _ if words.is_empty() || words == ["clear"] => {}
            Ok(p) => {
                assert!(next.is_ok(), "next {raw:?}: {next:?}");
                assert_eq!(stage.armed().as_ref(), Some(p), "next {raw:?}");
            }
            Err(_) => assert!(next.is_err(), "next {raw:?} armed"),
        }
        match stage.command(&format!("decide {raw}")) {
            Ok(said) => panic!("decide {raw:?} with nothing waiting: {said}"),
            Err(why) => assert_readable(&why, "decide refusal", data),
        }
    }
}

/// `request_findings`: the bytes a register sends, as the report card
/// reads them. Whatever they are, the tag findings never panic, and each
/// example is readable and holds no card number (the report cuts it
/// short after that). Every terminal profile shapes the answers concertd
/// builds for them into messages that decode, with the same outcome
/// (AE, and AF's code at its head) as concertd's own.
pub fn request_findings(data: &[u8]) {
    use concert::front::findings::tags as seen;
    use concert::wire::profile::{self, PROFILES};
    for (kind, example) in seen::findings(data) {
        assert_readable(&example, "finding example", data);
        // Checked on digits side by side only: masking the whole example
        // again would join a value's digits to the count after it, a
        // number the input never had (values are masked one by one).
        if let Some(pan) = luhn_run(example.as_bytes()) {
            panic!(
                "{kind:?} example {example:?} holds the card number {pan}; input {}",
                show(data)
            );
        }
    }
    let _ = seen::unpadded(data);
    let _ = seen::starts_request(data);
    let req = Frame::decode(data).unwrap_or_else(|(partial, _)| partial);
    let answers = [
        answer::refusal(&req, None),
        answer::refusal(&req, Some(Af::Refused)),
        answer::refusal(&req, Some(Af::Abandon)),
        answer::refusal(&req, Some(Af::NotEnded)),
        answer::result(&req, &answer::Outcome::approved()),
        answer::result(&req, &answer::Outcome::declined(Af::Forbidden)),
        answer::identification(&req),
    ];
    for a in &answers {
        for (name, p) in PROFILES {
            for asked in [Some(&req), None] {
                let shaped = profile::shape(*p, asked, a);
                assert_answer(&shaped, name, data);
                assert_eq!(
                    shaped.get(tags::AE),
                    a.get(tags::AE),
                    "profile {name} changed AE; input {}",
                    show(data)
                );
                let af = |f: &Frame| f.get(tags::AF).map(|v| v[..v.len().min(2)].to_vec());
                assert_eq!(
                    af(&shaped),
                    af(a),
                    "profile {name} changed AF's code; input {}",
                    show(data)
                );
            }
        }
    }
}

/// The first window of 13 to 19 digits side by side in `text` that passes
/// the Luhn check: a card number left whole.
fn luhn_run(text: &[u8]) -> Option<String> {
    for run in text.split(|b| !b.is_ascii_digit()) {
        for len in 13..=19.min(run.len()) {
            for w in run.windows(len) {
                let sum: u32 = w
                    .iter()
                    .rev()
                    .enumerate()
                    .map(|(k, d)| {
                        let v = u32::from(d - b'0') * if k % 2 == 1 { 2 } else { 1 };
                        if v > 9 {
                            v - 9
                        } else {
                            v
                        }
                    })
                    .sum();
                if sum.is_multiple_of(10) {
                    return Some(String::from_utf8_lossy(w).into_owned());
                }
            }
        }
    }
    None
}
