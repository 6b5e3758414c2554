//! The serial link on pty pairs: the test plays the cash register on the
//! master side, concertd opens the slave through a symlink (so the device
//! can be removed and created again).

use crate::util::*;
use concert::wire::framing::{lrc, ACK, ENQ, EOT, ETB, ETX, NAK, STX};
use serialport::{SerialPort, TTYPort};
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

pub const TIMERS: &str =
    "serial-ack-timeout 400ms\nserial-frame-timeout 400ms\nserial-eot-timeout 200ms\n\
                      serial-retry-pause 50ms\nserial-retry 100ms";

pub struct Register {
    master: TTYPort,
    _slave: TTYPort,
}

pub fn pty(link: &Path) -> Register {
    let (mut master, slave) = pty_pair(link);
    master.set_timeout(Duration::from_millis(50)).unwrap();
    Register {
        master,
        _slave: slave,
    }
}

pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![STX];
    f.extend_from_slice(payload);
    f.push(ETX);
    f.push(lrc(&f[1..]));
    f
}

impl Register {
    pub fn send(&mut self, b: &[u8]) {
        self.master.write_all(b).unwrap();
        self.master.flush().unwrap();
    }

    /// The next byte within `d`.
    fn byte_within(&mut self, d: Duration) -> Option<u8> {
        let until = Instant::now() + d;
        let mut b = [0u8; 1];
        while Instant::now() < until {
            match self.master.read(&mut b) {
                Ok(1) => return Some(b[0]),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("pty read: {e}"),
            }
        }
        None
    }

    pub fn byte(&mut self) -> u8 {
        self.byte_within(PATIENCE).expect("a byte from concertd")
    }

    /// Session 1: ENQ, ACK, frame; returns what the terminal said to the
    /// frame (and closes with EOT after an ACK).
    pub fn request(&mut self, payload: &[u8]) -> u8 {
        self.send(&[ENQ]);
        assert_eq!(self.byte(), ACK, "ACK to ENQ");
        self.send(&frame(payload));
        let r = self.byte();
        if r == ACK {
            self.send(&[EOT]);
        }
        r
    }

    /// Session 2: the terminal's ENQ, our ACK, its frame(s), our ACKs, its
    /// EOT. Returns the payload, ETB blocks joined.
    pub fn answer(&mut self) -> Vec<u8> {
        assert_eq!(self.byte(), ENQ, "terminal opens its session");
        self.answer_opened()
    }

    /// Session 2 once its ENQ is read.
    fn answer_opened(&mut self) -> Vec<u8> {
        self.send(&[ACK]);
        let mut payload = Vec::new();
        loop {
            assert_eq!(self.byte(), STX);
            let start = payload.len();
            let end = loop {
                match self.byte() {
                    ETX => break ETX,
                    ETB => break ETB,
                    b => payload.push(b),
                }
            };
            assert!(payload.len() - start <= 512, "frame over 512 data bytes");
            let got = self.byte();
            assert_eq!(got, lrc(&payload[start..]) ^ end, "LRC");
            self.send(&[ACK]);
            if end == ETX {
                break;
            }
        }
        assert_eq!(self.byte(), EOT);
        payload
    }
}

fn serial_daemon(extra: &str) -> (Daemon, Register) {
    let dir = temp_dir();
    let link = dir.join("tty");
    let reg = pty(&link);
    let d = Daemon::start(&format!("serial {}\n{TIMERS}\n{extra}", link.display()));
    d.wait_log(": open, 9600 baud 7E1");
    (d, reg)
}

/// pyTeliumManager's E+ request for 10.00 EUR: long reply, wait for the end.
const PTM: &[u8] = b"0100001000110978          A010B010";

#[test]
fn v2_eplus_long_reply_approved_and_refused() {
    let (d, mut r) = serial_daemon("");
    assert_eq!(r.request(PTM), ACK);
    let a = r.answer();
    assert_eq!(a.len(), 80, "{}", text(&a));
    assert!(a.starts_with(b"010000010001"), "{}", text(&a));
    let rep = &a[12..67];
    let pan = text(rep).trim_end().to_string();
    assert!(pan.len() == 16 && &pan[6..12] == "######", "{pan:?}");
    assert!(rep[16..].iter().all(|&b| b == b' '));
    assert_eq!(&a[67..], b"978          ");
    let refused = b"0100001051110978          A010B010";
    assert_eq!(r.request(refused), ACK);
    let mut want = b"017000010511".to_vec();
    want.extend_from_slice(&[b' '; 55]);
    want.extend_from_slice(b"978          ");
    assert_eq!(r.answer(), want);
    // A V2 transaction is journaled in V3 form, and status answers it so.
    let s = exchange(d.addr, b"CZ0040320CA00201CD001T");
    assert_eq!(
        text(&s),
        "CZ0040320CA00201CB0041051CD0010CE003978AE00201AF00204"
    );
}

#[test]
fn v2_e_short_reply_is_28_bytes_on_the_wire() {
    let (_d, mut r) = serial_daemon("");
    assert_eq!(r.request(b"0100001000010978ORDER00042"), ACK);
    assert_eq!(r.answer(), b"010000010001978ORDER00042");
}

#[test]
fn v2_immediate_answer_then_the_outcome_is_journaled() {
    let (d, mut r) = serial_daemon("simulator-delay 1s");
    // pypostelium's request: A011, short reply.
    assert_eq!(r.request(b"0100001000010978          A011B010"), ACK);
    assert_eq!(r.answer(), b"019000010001978          ");
    d.wait_log("debit approved");
    let s = exchange(d.addr, b"CZ0040320CA00201CD001T");
    assert!(
        text(&s).starts_with("CZ0040320CA00201CB0041000CD0010CE003978AE00210"),
        "{}",
        text(&s)
    );
}

#[test]
fn v2_unsupported_type_and_bad_length() {
    let (_d, mut r) = serial_daemon("");
    // Pre-authorisation (4) is refused, not run.
    assert_eq!(r.request(b"0100001000014978          "), ACK);
    assert_eq!(r.answer(), b"017000010001978          ");
    // A 33-character frame is not a V2 request.
    assert_eq!(r.request(b"010000100001097800000000000A010B0"), NAK);
}

#[test]
fn v3_over_serial_and_raw_v3() {
    let (_d, mut r) = serial_daemon("");
    let req = b"CZ0040320CJ012247300123456CA00201CB0041234CD0010CE003978";
    assert_eq!(r.request(req), ACK);
    let a = r.answer();
    assert!(
        a.starts_with(&[&req[..], b"AE00210"].concat()),
        "{}",
        text(&a)
    );
    // Raw: no ENQ, no STX; answered raw.
    r.send(b"CZ0040320CA00201CD001I");
    // As many bytes as the answer has, however long they take; anything
    // else first would show in the comparison.
    let want = "CZ0040320CA00201CD001IAE00210";
    let got: Vec<u8> = (0..want.len()).map(|_| r.byte()).collect();
    assert_eq!(text(&got), want);
    // Nothing trails the raw answer: the next session starts clean.
    assert_eq!(r.request(PTM), ACK);
    assert_eq!(r.answer()[..12], *b"010000010001");
}

#[test]
fn bad_lrc_is_naked_and_a_retransmission_accepted() {
    let (d, mut r) = serial_daemon("");
    r.send(&[ENQ]);
    assert_eq!(r.byte(), ACK);
    let mut bad = frame(PTM);
    *bad.last_mut().unwrap() ^= 1;
    r.send(&bad);
    assert_eq!(r.byte(), NAK);
    r.send(&frame(PTM));
    assert_eq!(r.byte(), ACK);
    r.send(&[EOT]);
    assert_eq!(r.answer()[..12], *b"010000010001");
    d.wait_log("bad LRC");
}

#[test]
fn three_bad_frames_then_idle_and_noise_is_ignored() {
    let (d, mut r) = serial_daemon("");
    r.send(&[ENQ]);
    assert_eq!(r.byte(), ACK);
    for _ in 0..3 {
        let mut bad = frame(PTM);
        *bad.last_mut().unwrap() ^= 1;
        r.send(&bad);
        assert_eq!(r.byte(), NAK);
    }
    d.wait_log("NAK (3/3), back to idle");
    // Noise while idle, then a normal session.
    r.send(b"\x00garbage\x7f\x03\x06");
    assert_eq!(r.request(PTM), ACK);
    assert_eq!(r.answer()[..12], *b"010000010001");
}

#[test]
fn enq_then_silence_goes_back_to_idle() {
    let (d, mut r) = serial_daemon("");
    r.send(&[ENQ]);
    assert_eq!(r.byte(), ACK);
    d.wait_log("serial-frame-timeout fired waiting for the request frame");
    assert_eq!(r.request(PTM), ACK);
    assert_eq!(r.answer().len(), 80);
}

#[test]
fn no_ack_to_our_enq_three_tries_then_idle() {
    let (d, mut r) = serial_daemon("");
    assert_eq!(r.request(PTM), ACK);
    for _ in 0..3 {
        assert_eq!(r.byte(), ENQ);
        // Say nothing: the terminal gives up on this try with EOT.
        assert_eq!(r.byte(), EOT);
    }
    undelivered_then_idle(&d, &mut r, "no ACK to 3 ENQ");
}

/// An answer the link could not deliver for `why`: said in the log and
/// journaled, its outcome kept for a status request, and the link idle
/// again for the next request.
fn undelivered_then_idle(d: &Daemon, r: &mut Register, why: &str) {
    d.wait_log(&format!("answer not delivered: {why}"));
    // The worker journals it once the link has reported it.
    d.wait_log("answer not delivered to");
    assert!(
        d.journal().contains(&format!(" undelivered {why}")),
        "{}",
        d.journal()
    );
    let s = exchange(d.addr, b"CZ0040320CA00201CD001T");
    assert!(text(&s).contains("AE00210"), "{}", text(&s));
    assert_eq!(r.request(PTM), ACK);
    assert_eq!(r.answer().len(), 80);
}

#[test]
fn long_answers_drop_the_ticket_or_split_in_etb_blocks() {
    let req = b"CZ0040320CJ012247300123456CA00201CB0041234CD0010CE003978CK003121";
    let (d, mut r) = serial_daemon("");
    assert_eq!(r.request(req), ACK);
    let a = r.answer();
    assert!(a.len() <= 512 && !text(&a).contains("ZT"), "{}", text(&a));
    d.wait_log("ticket dropped (serial-split no)");
    let (_d, mut r) = serial_daemon("serial-split yes");
    assert_eq!(r.request(req), ACK);
    let a = r.answer();
    assert!(a.len() > 512, "{}", a.len());
    let zt = get(&a, "ZT").unwrap();
    let (_, doc) = concert::wire::ticket::decode_zt(zt.as_bytes()).unwrap();
    assert!(String::from_utf8_lossy(&doc).contains("TICKET COMMERCANT"));
}

#[test]
fn busy_across_tcp_and_serial() {
    let gate = Gate::new();
    let (d, mut r) = serial_daemon(&gate.terminal());
    // A TCP debit runs: the serial request is NAKed, never ACKed.
    let addr = d.addr;
    let t = std::thread::spawn(move || exchange(addr, b"CZ0040320CA00202CB003500CD0010CE003978"));
    d.wait_log("debit 5.00 EUR register 02 from tcp");
    assert_eq!(r.request(PTM), NAK);
    d.wait_log("refused busy: NAK");
    gate.release();
    assert!(text(&t.join().unwrap()).contains("AE00210"));
    // A serial debit runs: TCP gets the busy answer.
    assert_eq!(r.request(PTM), ACK);
    let busy = b"CZ0040320CA00202CB003500CD0010CE003978";
    assert_eq!(
        text(&exchange(d.addr, busy)),
        format!("{}AE00201", text(busy))
    );
    gate.release();
    assert_eq!(r.answer().len(), 80);
}

#[test]
fn device_removed_and_created_again() {
    let dir = temp_dir();
    let link = dir.join("tty");
    let r = pty(&link);
    let d = Daemon::start(&format!("serial {}\n{TIMERS}", link.display()));
    d.wait_log(": open, 9600 baud 7E1");
    drop(r);
    std::fs::remove_file(&link).unwrap();
    d.wait_log("trying to open it again");
    d.wait_log("cannot open");
    // TCP keeps serving meanwhile.
    assert_eq!(
        text(&exchange(d.addr, b"CZ0040320CA00201CD001I")),
        "CZ0040320CA00201CD001IAE00210"
    );
    let mut r = pty(&link);
    d.wait_log_n(": open, 9600 baud 7E1", 2);
    assert_eq!(r.request(PTM), ACK);
    assert_eq!(r.answer().len(), 80);
}

#[test]
fn device_missing_at_start_is_retried() {
    let dir = temp_dir();
    let link = dir.join("tty");
    let d = Daemon::start(&format!("serial {}\n{TIMERS}", link.display()));
    d.wait_log("cannot open");
    let mut r = pty(&link);
    d.wait_log(": open, 9600 baud 7E1");
    assert_eq!(r.request(PTM), ACK);
    assert_eq!(r.answer().len(), 80);
}

/// Joins two pty masters the way socat joins two ptys, until dropped.
pub struct Relay {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    _ends: (TTYPort, TTYPort),
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

pub fn relay(a: Register, b: Register) -> Relay {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = std::sync::Arc::clone(&stop);
    let (mut am, mut bm) = (a.master, b.master);
    am.set_timeout(Duration::from_millis(5)).unwrap();
    bm.set_timeout(Duration::from_millis(5)).unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(n) = am.read(&mut buf) {
                let _ = bm.write_all(&buf[..n]);
            }
            if let Ok(n) = bm.read(&mut buf) {
                let _ = am.write_all(&buf[..n]);
            }
        }
    });
    Relay {
        stop,
        _ends: (a._slave, b._slave),
    }
}

#[test]
fn concert_plays_the_register_on_a_serial_line() {
    let dir = temp_dir();
    let (tpe, ecr) = (dir.join("ttyTPE"), dir.join("ttyECR"));
    let _relay = relay(pty(&tpe), pty(&ecr));
    let d = Daemon::start(&format!(
        "serial {}\nserial-split yes\n{TIMERS}",
        tpe.display()
    ));
    d.wait_log(": open, 9600 baud 7E1");
    let dev = ecr.to_str().unwrap();
    let o = d.concert(&["-s", dev, "-k", "121", "pay", "12.34"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("approved: debit 12.34 EUR, register 01"),
        "{out}"
    );
    assert!(out.contains("TICKET COMMERCANT"), "{out}");
    let o = d.concert(&["-s", dev, "--v2", "pay", "10"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).starts_with("approved: 10.00 EUR, register 01 (V2 result 0)"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("######"), "{}", stdout(&o));
    let o = d.concert(&["-s", dev, "--v2", "pay", "10.51"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).starts_with("declined: 10.51 EUR"),
        "{}",
        stdout(&o)
    );
    let o = d.concert(&["-s", dev, "ping"]);
    assert_eq!(stdout(&o), "approved: identification, register 01\n");
}

#[test]
fn identification_sessions_are_never_naked() {
    // The worker answers these at once and starts nothing: a race between
    // "not started" and "answered" once NAKed about one request in twenty.
    let (_d, mut r) = serial_daemon("");
    for _ in 0..100 {
        assert_eq!(r.request(b"CZ0040320CA00201CD001I"), ACK);
        assert_eq!(r.answer(), b"CZ0040320CA00201CD001IAE00210");
    }
}

#[test]
fn register_naks_our_answer_three_times() {
    let (d, mut r) = serial_daemon("");
    assert_eq!(r.request(PTM), ACK);
    assert_eq!(r.byte(), ENQ, "terminal opens its session");
    r.send(&[ACK]);
    // The same frame each time, NAKed each time; then the terminal gives up.
    let mut first = None;
    for _ in 0..3 {
        assert_eq!(r.byte(), STX);
        let mut f = vec![STX];
        loop {
            let b = r.byte();
            f.push(b);
            if b == ETX {
                break;
            }
        }
        f.push(r.byte());
        assert_eq!(f[f.len() - 1], lrc(&f[1..f.len() - 1]), "LRC");
        assert_eq!(*first.get_or_insert_with(|| f.clone()), f, "resent as is");
        r.send(&[NAK]);
    }
    assert_eq!(r.byte(), EOT);
    undelivered_then_idle(&d, &mut r, "frame not acknowledged after 3 tries");
}

/// The ids of the journal's transactions whose request holds `pat`.
fn ids_with(journal: &str, pat: &str) -> Vec<String> {
    journal
        .lines()
        .filter(|l| l.contains(" begun ") && l.contains(pat))
        .map(|l| l.split(' ').nth(1).unwrap().to_string())
        .collect()
}

/// The events journaled for transaction `id`, begun left out.
fn events_of(journal: &str, id: &str) -> Vec<String> {
    journal
        .lines()
        .filter(|l| l.split(' ').nth(1) == Some(id))
        .map(|l| l.split(' ').nth(2).unwrap().to_string())
        .filter(|e| e != "begun")
        .collect()
}

/// A disk so slow that the begun record is not on it before the register
/// gives up waiting for its ACK (pyTeliumManager: 1 s): the request is
/// NAKed within that time and never runs, even once the disk catches up;
/// the register's second attempt, the disk fast again, is ACKed and
/// approved. One charge, the one the register knows of.
#[test]
fn a_request_the_terminal_cannot_take_in_time_is_naked_and_never_runs() {
    let (mut d, mut r) = serial_daemon("");
    // pyTeliumManager's E+ request for 80.00 EUR.
    const SALE: &[u8] = b"0100008000110978          A010B010";
    let slow = match SlowDisk::attach(d.pid(), Duration::from_millis(1500)) {
        Ok(s) => s,
        Err(Unslowed::Missing(e)) => panic!("strace: the slow-disk tests need it installed: {e}"),
        Err(Unslowed::Refused(why)) => {
            eprintln!(
                "SKIPPED: strace cannot attach to concertd, so the disk cannot be slowed: {why}"
            );
            return;
        }
    };
    r.send(&[ENQ]);
    assert_eq!(r.byte(), ACK, "ACK to ENQ");
    r.send(&frame(SALE));
    let sent = Instant::now();
    let said = r.byte();
    let waited = sent.elapsed();
    assert_eq!(
        said, NAK,
        "answered 0x{said:02x} after {waited:?}: a request the terminal cannot take in time \
         must be NAKed"
    );
    assert!(
        waited < Duration::from_secs(1),
        "NAK after {waited:?}: the register gave up at 1 s"
    );
    // The disk fast again: the worker, back from it, drops the request.
    drop(slow);
    // Begun on disk, it is journaled withdrawn; a worker that had not
    // even reached it by then (a very loaded machine) journals nothing.
    d.wait_log("not started");
    let j = d.journal();
    let first = ids_with(&j, "CB0048000");
    assert!(first.len() <= 1, "{j}");
    for id in &first {
        assert_eq!(events_of(&j, id), ["withdrawn"], "{j}");
    }
    // Nothing comes for it: the terminal opens no session.
    r.send(&[ENQ]);
    assert_eq!(
        r.byte(),
        ACK,
        "the line is idle, and takes the next request"
    );
    r.send(&frame(SALE));
    assert_eq!(r.byte(), ACK, "the second attempt is taken");
    r.send(&[EOT]);
    let a = r.answer();
    assert_eq!(&a[..12], b"010000080001", "{}", text(&a));
    // Its delivery report is journaled without a log line.
    let j = loop_until(|| Some(d.journal()).filter(|j| j.contains(" delivered")));
    let ids = ids_with(&j, "CB0048000");
    assert_eq!(ids.len(), first.len() + 1, "{j}");
    assert_eq!(ids[..first.len()], first[..], "{j}");
    assert_eq!(
        events_of(&j, &ids[first.len()]),
        ["ended", "delivered"],
        "{j}"
    );
    assert_eq!(j.matches(" ended approved ").count(), 1, "{j}");
    // Read back at a restart: closed as withdrawn, not an unknown outcome,
    // and the register's last transaction is its approved sale.
    d.kill9();
    d.spawn();
    assert_eq!(d.journal(), j, "the restart added records");
    assert!(!d.log_text().contains("never ended"), "{}", d.log_text());
    let s = exchange(d.addr, b"CZ0040320CA00201CD001T");
    assert!(
        text(&s).starts_with("CZ0040320CA00201CB0048000CD0010CE003978AE00210"),
        "{}",
        text(&s)
    );
}

/// Writes all of `bytes` to the register's end, however long the terminal
/// takes to read them (its input full while it is busy writing).
fn send_all(r: &mut Register, mut bytes: &[u8]) {
    let until = Instant::now() + PATIENCE;
    while !bytes.is_empty() {
        match r.master.write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("pty write: {e}"),
        }
        assert!(Instant::now() < until, "the terminal stopped reading");
    }
}

/// A request sent whole, ENQ to EOT, after a flood: the ACKs and NAKs the
/// terminal still owes the flood come first and are skipped, in bulk, up
/// to the ENQ of its answer, the last byte it sends before our ACK.
/// Returns the answer.
fn request_after_flood(r: &mut Register, payload: &[u8]) -> Vec<u8> {
    let mut session = vec![ENQ];
    session.extend(frame(payload));
    session.push(EOT);
    send_all(r, &session);
    let until = Instant::now() + PATIENCE;
    let mut buf = [0u8; 4096];
    loop {
        assert!(Instant::now() < until, "no answer after the flood");
        let n = match r.master.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(e) => panic!("pty read: {e}"),
        };
        let got = &buf[..n];
        // An ENQ of the terminal left without ACK is followed by its EOT.
        if let Some(b) = got.iter().find(|b| ![ACK, NAK, ENQ, EOT].contains(b)) {
            panic!("stray byte 0x{b:02x} from the terminal");
        }
        if got.last() == Some(&ENQ) {
            return r.answer_opened();
        }
    }
}

/// Log lines from line number `since` on that the serial line logged
/// (`serial /path: ...`), at any level.
fn line_lines(d: &Daemon, since: usize) -> Vec<String> {
    d.log_text()
        .lines()
        .skip(since)
        .filter(|l| l.split_whitespace().nth(3) == Some("serial"))
        .map(str::to_string)
        .collect()
}

/// `05 02 03 00` as fast as the pty takes it: a session with an empty frame
/// and a wrong LRC, each NAKed. Every one used to log a line (5,067 lines
/// in 20 s at 9600 baud); they go through TCP's floodgate now: a few lines
/// a minute, the rest counted, and the line serves a good request after.
#[test]
fn a_flood_of_bad_frames_logs_a_few_lines_and_a_count() {
    let (mut d, mut r) = serial_daemon("");
    let since = d.mark();
    // The terminal's ACKs and NAKs are read and dropped meanwhile, so
    // that its writes never wait.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut reader = r.master.try_clone_native().expect("clone the pty");
    let stop2 = std::sync::Arc::clone(&stop);
    let drain = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = reader.read(&mut buf);
        }
    });
    let group = [ENQ, STX, ETX, 0x00];
    let chunk = group.repeat(256);
    let mut groups = 0usize;
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        send_all(&mut r, &chunk);
        groups += 256;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drain.join().unwrap();
    assert!(groups >= 2000, "only {groups} bad frames sent");
    // At most 3 lines of each kind (bad requests; link errors, should the
    // flood pause past serial-frame-timeout), and the good request's.
    assert_eq!(request_after_flood(&mut r, PTM).len(), 80);
    let lines = line_lines(&d, since);
    assert!(
        lines.len() <= 10,
        "{groups} bad frames wrote {} lines:\n{}",
        lines.len(),
        lines[..lines.len().min(20)].join("\n")
    );
    assert!(
        lines.iter().any(|l| l.contains("bad frame (bad LRC 0x00")),
        "the first ones are logged in full:\n{}",
        lines.join("\n")
    );
    // The count of those not logged is said at stop (or when the minute
    // is over): every bad frame is in it.
    d.signal(libc::SIGTERM);
    d.wait_exit();
    let summary = d.wait_log("more bad requests in ");
    let hidden: usize = summary
        .split(": ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{summary}"));
    assert!(summary.contains(" serial /"), "{summary}");
    assert!(
        hidden + 3 >= groups,
        "{hidden} counted for {groups}: {summary}"
    );
}

/// A register that stops reading: the pty's buffer fills with the ACKs of
/// its ENQs until the terminal cannot write. Its 20 ms port write timeout
/// used to be taken for a device failure (a warning and the device opened
/// again every serial-retry); now the write waits serial-ack-timeout, that
/// session ends, and the line stays open and serves the next request.
#[test]
fn a_register_that_does_not_read_ends_the_session_not_the_line() {
    let (d, mut r) = serial_daemon("");
    let chunk = [ENQ, EOT].repeat(2048);
    let until = Instant::now() + PATIENCE;
    let mut pending: &[u8] = &chunk;
    loop {
        let log = d.log_text();
        if log.contains("does not read") || log.contains("trying to open it again") {
            break;
        }
        assert!(Instant::now() < until, "the writes never blocked:\n{log}");
        if pending.is_empty() {
            pending = &chunk;
        }
        match r.master.write(pending) {
            Ok(n) => pending = &pending[n..],
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("pty write: {e}"),
        }
    }
    // What was cut of the last chunk is sent, so that no half session
    // waits for its frame.
    send_all(&mut r, pending);
    assert_eq!(request_after_flood(&mut r, PTM).len(), 80);
    let log = d.log_text();
    assert!(
        log.contains("the register does not read: output blocked for ")
            && log.contains("session ended, line kept open"),
        "{log}"
    );
    assert!(!log.contains("trying to open it again"), "{log}");
    assert_eq!(d.count_log(": open, 9600 baud 7E1"), 1, "{log}");
}

/// Each byte well within serial-frame-timeout, the whole past
/// request-timeout.
const TRICKLE: &str = "serial-frame-timeout 1s\nrequest-timeout 1500ms";

/// Sets or clears IXON on the line: with it, an XOFF from the register
/// stops the terminal's output the way CTS held low does with rtscts.
fn ixon(r: &Register, on: bool) {
    use std::os::fd::AsRawFd;
    let fd = r._slave.as_raw_fd();
    // SAFETY: tcgetattr(3) and tcsetattr(3) on the test's own descriptor of
    // the pty, with a termios it filled.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(fd, &mut t), 0);
        if on {
            t.c_iflag |= libc::IXON;
        } else {
            t.c_iflag &= !libc::IXON;
        }
        assert_eq!(libc::tcsetattr(fd, libc::TCSANOW, &t), 0);
    }
}

/// Can the terminal's side of the pty be written?
fn writable(r: &Register) -> bool {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: r._slave.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: poll(2) on one valid descriptor, no wait.
    unsafe { libc::poll(&mut p, 1, 0) == 1 && p.revents & libc::POLLOUT != 0 }
}

/// The answer's own session cannot start: the register has stopped the
/// terminal's output (XOFF, as CTS low would) while its transaction ran.
/// The ENQ's write waits serial-ack-timeout, the answer is journaled
/// undelivered, and the line stays open for the next request.
#[test]
fn an_answer_the_register_does_not_take_is_undelivered_and_the_line_stays_open() {
    let gate = Gate::new();
    let (d, mut r) = serial_daemon(&gate.terminal());
    assert_eq!(r.request(PTM), ACK);
    ixon(&r, true);
    r.send(&[0x13]);
    let until = Instant::now() + PATIENCE;
    while writable(&r) {
        assert!(Instant::now() < until, "XOFF did not stop the line");
        std::thread::yield_now();
    }
    gate.release();
    let line = d.wait_log("answer not delivered: ");
    assert!(
        line.contains("answer not delivered: the register does not read: output blocked for "),
        "{line}"
    );
    d.wait_log("session ended, line kept open");
    d.wait_log("answer not delivered to");
    assert!(
        d.journal()
            .contains(" undelivered the register does not read"),
        "{}",
        d.journal()
    );
    ixon(&r, false);
    assert_eq!(r.request(PTM), ACK);
    gate.release();
    assert_eq!(r.answer().len(), 80);
    let log = d.log_text();
    assert!(!log.contains("trying to open it again"), "{log}");
    assert_eq!(d.count_log(": open, 9600 baud 7E1"), 1, "{log}");
}

/// A frame trickled one byte every 250 ms, each within
/// serial-frame-timeout (1 s), used to hold the line for as long as the
/// register liked; it is NAKed at request-timeout from its ENQ.
#[test]
fn a_trickled_frame_is_naked_at_request_timeout() {
    let (d, mut r) = serial_daemon(TRICKLE);
    r.send(&[ENQ]);
    assert_eq!(r.byte(), ACK);
    let start = Instant::now();
    let mut said = None;
    for &b in &frame(b"0100001000010978ORDER00042") {
        r.send(&[b]);
        // The pace of the trickle: the terminal's word, or 250 ms.
        if let Some(x) = r.byte_within(Duration::from_millis(250)) {
            said = Some((x, start.elapsed()));
            break;
        }
    }
    let (b, at) = said.expect("the terminal said nothing");
    assert_eq!(b, NAK, "answered 0x{b:02x} after {at:?}");
    assert!(at < Duration::from_secs(3), "NAKed after {at:?}");
    d.wait_log("request-timeout fired: request not whole within 1500ms of its ENQ: NAK");
    assert_eq!(r.request(PTM), ACK);
    assert_eq!(r.answer().len(), 80);
}

/// The same for a raw V3 request trickled inside an element (of 24
/// characters: 6 s at that pace): at request-timeout it is what has come,
/// a cut element, answered AF09.
#[test]
fn a_trickled_raw_request_ends_at_request_timeout() {
    let (d, mut r) = serial_daemon(TRICKLE);
    let start = Instant::now();
    r.send(b"CZ0040320ZZ024");
    let mut first = None;
    for &b in b"ABCDEFGHIJKLMNOPQRSTUVWX" {
        r.send(&[b]);
        if let Some(x) = r.byte_within(Duration::from_millis(250)) {
            first = Some((x, start.elapsed()));
            break;
        }
    }
    let (b, at) = first.expect("the terminal said nothing");
    assert!(at < Duration::from_secs(3), "answered after {at:?}");
    let mut answer = vec![b];
    while !text(&answer).contains("AF00209") {
        assert!(answer.len() < 200, "{}", text(&answer));
        answer.push(r.byte());
    }
    assert!(text(&answer).starts_with("CZ0040320"), "{}", text(&answer));
    d.wait_log("request-timeout fired: raw request taken as it is");
    assert_eq!(r.request(PTM), ACK);
    assert_eq!(r.answer().len(), 80);
}

/// The register's end closed: the log says what concertd-protocol.7 says,
/// "device hung up", not the "Broken pipe" of poll(2)'s POLLHUP.
#[test]
fn a_device_whose_other_end_closes_has_hung_up() {
    let (d, r) = serial_daemon("");
    drop(r);
    let line = d.wait_log("trying to open it again every");
    assert!(
        line.contains(": device hung up; trying to open it again every 100ms"),
        "{line}"
    );
    assert!(!d.log_text().contains("Broken pipe"), "{}", d.log_text());
}
