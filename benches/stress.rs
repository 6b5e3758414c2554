//! `make stress`: the load and fault suite (issue 7, item 3). Not part of
//! `make test`; a release build of the real `concertd`, driven from outside
//! the way registers and crashes drive it:
//!
//! 1. kill -9 at random points of 100 debits, restarts on the same journal,
//!    and after each restart the journal and `CD=T` checked against each
//!    other and against what the client was told;
//! 2. 512 concurrent debits while one runs: every one a well-formed busy
//!    answer, the running one approved;
//! 3. 300 idle connections held open while a real debit gets its answer;
//! 4. garbage and valid frames mixed on 16 connections at a time for 60 s:
//!    the daemon stays up, answers, and its memory stays flat;
//! 5. noise bursts on a serial line (a pty pair) between V2 E+ sessions;
//! 6. floods: payment programs printing without end (standard output
//!    lines, standard error without a newline or in lines, 32 MB of keys
//!    before the outcome) and a relay upstream streaming bytes without end,
//!    concertd's RSS sampled while they run: each ends AF07, and
//!    `stress.peak_rss_mb` is the most any stage took.
//! 7. 1,500 debits with a 24 h retry window and a 16K journal-size:
//!    rotations follow the new records, not the carried ones.
//!
//! It prints what each stage tried and lost, a summary table, and lines
//! `stress.<name>=<value>`, ending with `stress.tried=N`,
//! `stress.wrong=W` and `stress.lost=M`; it exits 1 when something was
//! lost or an answer was wrong. A wrong answer disagrees with what the
//! backend (the simulator, whose outcome follows from the amount) did: an
//! approval for a refused amount, another amount, another outcome.
//!
//! Environment: `STRESS_SEED` repeats a run, `STRESS_KILLS` (100),
//! `STRESS_GARBAGE_SECS` (60) and `STRESS_SERIAL_ROUNDS` (100) shorten one.

use concert::framing::{lrc, ACK, ENQ, EOT, ETB, ETX, NAK, STX};
use concert::tlv::Frame;
use serialport::{SerialPort, TTYPort};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const CONCERTD: &str = env!("CARGO_BIN_EXE_concertd");

/// Generous: only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(30);

/// Registers of the kill stage.
const REGISTERS: [&str; 3] = ["01", "02", "03"];

/// Serial timers of stage 5, short as in tests/serial.rs.
const FRAME_TIMEOUT_MS: u64 = 200;
const SERIAL_TIMERS: &str = "serial-ack-timeout 400ms\nserial-frame-timeout 200ms\n\
     serial-eot-timeout 200ms\nserial-retry-pause 50ms\nserial-retry 100ms\n";

/// Most evidence lines kept per stage.
const EVIDENCE: usize = 12;

// ---------------------------------------------------------------- random

/// xorshift64*: cheap, and a run is repeated from its seed.
#[derive(Clone)]
struct Rng(u64);

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(splitmix(seed) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// 0..n
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// lo..=hi
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn fork(&mut self) -> Rng {
        Rng::new(self.next())
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    fn printable(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| 0x20 + self.below(0x5f) as u8).collect()
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------- daemon

/// Marks a descriptor close-on-exec (pty pairs are not opened so).
fn cloexec(fd: i32) {
    // SAFETY: fcntl on a descriptor the caller owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
    }
}

/// The daemon's log, read line by line from its standard error. Only the
/// last lines are kept: the garbage stage logs a lot.
#[derive(Default)]
struct Log {
    lines: VecDeque<String>,
    /// Number of the first line kept.
    first: usize,
    closed: bool,
    panics: Vec<String>,
    errors: Vec<String>,
    error_count: usize,
}

const KEEP_LINES: usize = 20_000;

type SharedLog = Arc<(Mutex<Log>, Condvar)>;

/// One concertd process, killed when dropped.
struct Daemon {
    child: Child,
    addr: SocketAddr,
    log: SharedLog,
    /// Time from exec to `ready`.
    start_time: Duration,
}

impl Daemon {
    /// Writes `dir/concertd.conf` (`listen 127.0.0.1:0`, the journal in
    /// `dir`, then `extra`) and starts concertd on it.
    fn start(dir: &Path, extra: &str) -> Daemon {
        let conf = dir.join("concertd.conf");
        write_conf(dir, extra);
        Daemon::spawn(&conf)
    }

    fn spawn(conf: &Path) -> Daemon {
        let mut cmd = Command::new(CONCERTD);
        cmd.args(["-d", "-v", "-f"])
            .arg(conf)
            .env_remove("RUST_LOG")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Killed with us, even if we are: every daemon is started from the
        // main thread, which lives as long as the program.
        // SAFETY: prctl is async-signal-safe; nothing else runs in the child.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let t0 = Instant::now();
        let mut child = cmd.spawn().expect("spawn concertd");
        let log: SharedLog = Arc::new((Mutex::new(Log::default()), Condvar::new()));
        let stderr = child.stderr.take().expect("stderr piped");
        let l2 = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let (m, c) = &*l2;
                let mut g = m.lock().unwrap();
                if line.contains("panicked") {
                    g.panics.push(line.clone());
                }
                if line.contains(" ERROR ") {
                    g.error_count += 1;
                    if g.errors.len() < 5 {
                        g.errors.push(line.clone());
                    }
                }
                g.lines.push_back(line);
                if g.lines.len() > KEEP_LINES {
                    g.lines.pop_front();
                    g.first += 1;
                }
                c.notify_all();
            }
            let (m, c) = &*l2;
            m.lock().unwrap().closed = true;
            c.notify_all();
        });
        let mut d = Daemon {
            child,
            addr: "127.0.0.1:1".parse().unwrap(),
            log,
            start_time: Duration::ZERO,
        };
        d.wait_log(0, "INFO  ready")
            .unwrap_or_else(|| panic!("concertd not ready; log:\n{}", d.log_tail(40)));
        d.start_time = t0.elapsed();
        let line = d.wait_log(0, "listening on ").expect("listening line");
        let addr = line.rsplit("listening on ").next().unwrap().trim();
        d.addr = addr.parse().expect("bound address");
        d
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// SIGKILL, and the process reaped.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Number of the next log line.
    fn mark(&self) -> usize {
        let g = self.log.0.lock().unwrap();
        g.first + g.lines.len()
    }

    /// The first line from line number `since` on that contains `pat`.
    fn wait_log(&self, since: usize, pat: &str) -> Option<String> {
        let (m, c) = &*self.log;
        let deadline = Instant::now() + PATIENCE;
        let mut g = m.lock().unwrap();
        let mut next = since;
        loop {
            let from = next.max(g.first) - g.first;
            if let Some(l) = g.lines.iter().skip(from).find(|l| l.contains(pat)) {
                return Some(l.clone());
            }
            next = g.first + g.lines.len();
            let now = Instant::now();
            if g.closed || now >= deadline {
                return None;
            }
            g = c.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    fn log_tail(&self, n: usize) -> String {
        let g = self.log.0.lock().unwrap();
        let skip = g.lines.len().saturating_sub(n);
        g.lines
            .iter()
            .skip(skip)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn panics(&self) -> Vec<String> {
        self.log.0.lock().unwrap().panics.clone()
    }

    fn errors(&self) -> (usize, Vec<String>) {
        let g = self.log.0.lock().unwrap();
        (g.error_count, g.errors.clone())
    }

    /// VmRSS in kB.
    fn rss_kb(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Log lines kept that contain `pat`.
    fn count_log(&self, pat: &str) -> usize {
        let g = self.log.0.lock().unwrap();
        g.lines.iter().filter(|l| l.contains(pat)).count()
    }

    /// The connection count of a SIGUSR1 state report.
    fn connections_open(&self) -> Option<usize> {
        let mark = self.mark();
        self.signal(libc::SIGUSR1);
        let line = self.wait_log(mark, " connections open")?;
        let head = line.split(" connections open").next()?;
        head.rsplit(' ').next()?.parse().ok()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Every stage plays its registers from one address, 127.0.0.1: the cap
/// per peer is raised to the global one, which the stages exercise.
fn write_conf(dir: &Path, extra: &str) {
    let text = format!(
        "listen 127.0.0.1:0\njournal {}\nconfig-watch 0\nmax-connections-per-peer 1024\n{extra}\n",
        dir.join("journal").display()
    );
    std::fs::write(dir.join("concertd.conf"), text).unwrap();
}

fn subdir(root: &Path, name: &str) -> PathBuf {
    let d = root.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

// ---------------------------------------------------------------- tcp

fn debit(ca: &str, amount: u64) -> String {
    let a = amount.to_string();
    format!(
        "CZ0040320CJ012247300123456CA002{ca}CB{:03}{a}CD0010CE003978",
        a.len()
    )
}

fn status(ca: &str) -> String {
    format!("CZ0040320CA002{ca}CD001T")
}

fn ping(ca: &str) -> String {
    format!("CZ0040320CA002{ca}CD001I")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Reads until the terminal closes; a reset keeps what came before it.
fn read_all(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(v),
            Ok(n) => v.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(v),
            Err(e) => return Err(e),
        }
    }
}

/// One request on a fresh connection; `shut` closes our sending side
/// after it (else concertd finds the request's end and closes first).
fn exchange(
    addr: SocketAddr,
    req: &[u8],
    shut: bool,
    timeout: Duration,
) -> std::io::Result<Vec<u8>> {
    let mut s = connect(addr, timeout)?;
    s.write_all(req)?;
    if shut {
        s.shutdown(Shutdown::Write)?;
    }
    read_all(&mut s)
}

/// Closes with a reset rather than a FIN.
fn abort(s: TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt with a linger struct on a socket we own.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(s);
}

/// The value of `tag` in a decodable answer.
fn field(answer: &[u8], tag: &str) -> Option<String> {
    let f = Frame::decode(answer).ok()?;
    f.elements()
        .iter()
        .find(|e| e.tag.as_str() == tag)
        .map(|e| text(&e.value))
}

/// A well-formed busy answer to `req`: decodes, echoes the request,
/// `AE=01` and no `AF`.
fn check_busy(req: &str, answer: &[u8]) -> Result<(), String> {
    if let Err((_, e)) = Frame::decode(answer) {
        return Err(format!("does not decode ({e}): {:?}", text(answer)));
    }
    if !answer.starts_with(req.as_bytes()) {
        return Err(format!("no request echo: {:?}", text(answer)));
    }
    if field(answer, "AE").as_deref() != Some("01") || field(answer, "AF").is_some() {
        return Err(format!("not AE=01 without AF: {:?}", text(answer)));
    }
    Ok(())
}

/// An approved answer to `req`.
fn check_approved(req: &str, answer: &[u8]) -> Result<(), String> {
    if Frame::decode(answer).is_err() || !answer.starts_with(req.as_bytes()) {
        return Err(format!("malformed: {:?}", text(answer)));
    }
    if field(answer, "AE").as_deref() != Some("10") {
        return Err(format!("not approved: {:?}", text(answer)));
    }
    Ok(())
}

/// Does this final answer to a debit of `amount` (no partial payment
/// allowed) say what the simulator did? Its table: by the last two digits
/// of the amount. `unknown_ok`: an answer read back after a kill, where
/// AF07 (closed as unknown at recovery) is also true.
fn check_outcome(amount: u64, answer: &[u8], unknown_ok: bool) -> Result<(), String> {
    use concert::answer::Af;
    let f = Frame::decode(answer).map_err(|_| format!("does not decode: {:?}", text(answer)))?;
    let cb = field(answer, "CB").and_then(|c| c.parse::<u64>().ok());
    if cb != Some(amount) {
        return Err(format!("CB {cb:?} for {amount}: {:?}", text(answer)));
    }
    let ae = field(answer, "AE");
    let af = field(answer, "AF");
    if unknown_ok && af.as_deref() == Some("07") && ae.as_deref() == Some("01") {
        return Ok(());
    }
    let want = concert::simulator::outcome_for(amount, false);
    let ok = match (&want, ae.as_deref(), af.as_deref()) {
        (Ok(None), Some("10"), None) => f.get(concert::tlv::tags::AC).is_some(),
        (Err(w), Some("01"), Some(got)) => Af::from_code(got.as_bytes()) == Some(*w),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{amount}: the simulator did {want:?}, the answer says AE {ae:?} AF {af:?}: {:?}",
            text(answer)
        ))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

// ---------------------------------------------------------------- stages

/// What a stage reports.
#[derive(Default)]
struct Stage {
    key: &'static str,
    title: &'static str,
    tried: u64,
    lost: u64,
    /// Answers that disagree with what the backend did.
    wrong: u64,
    secs: f64,
    /// `stress.<key>.<name>=<value>`, in order.
    figures: Vec<(String, String)>,
    /// Evidence of what was lost, and remarks.
    notes: Vec<String>,
    /// One line for the summary table.
    summary: String,
}

impl Stage {
    fn new(key: &'static str, title: &'static str) -> Stage {
        Stage {
            key,
            title,
            ..Stage::default()
        }
    }

    fn fig(&mut self, name: &str, value: impl ToString) {
        self.figures.push((name.to_string(), value.to_string()));
    }

    fn evidence(&mut self, s: String) {
        if self.notes.len() < EVIDENCE {
            self.notes.push(s);
        }
    }

    fn lose(&mut self, s: String) {
        self.lost += 1;
        self.evidence(s);
    }

    /// Counts a wrong outcome: checked for every final answer to a debit.
    fn outcome(&mut self, amount: u64, answer: &[u8], unknown_ok: bool) {
        if let Err(e) = check_outcome(amount, answer, unknown_ok) {
            self.wrong += 1;
            self.evidence(format!("wrong outcome: {e}"));
        }
    }

    /// Panics and errors in the daemon's log are reported; a panic is a
    /// failure.
    fn daemon_log(&mut self, d: &Daemon) {
        for p in d.panics() {
            self.lose(format!("concertd panicked: {p}"));
        }
        let (n, errors) = d.errors();
        for e in errors {
            self.evidence(format!("daemon error: {e}"));
        }
        let prev = self.figures.iter().position(|(k, _)| k == "daemon_errors");
        let total = prev.map_or(0, |i| self.figures[i].1.parse::<usize>().unwrap_or(0)) + n;
        match prev {
            Some(i) => self.figures[i].1 = total.to_string(),
            None => self.fig("daemon_errors", total),
        }
    }
}

// ---------------------------------------------------------------- 1: kill -9

/// One transaction as the journal tells it.
#[derive(Clone, Debug, Default)]
struct JRec {
    register: String,
    request: String,
    begun: usize,
    /// `approved`, `declined`, `unknown`, `unknown-recovered` or
    /// `not-done`.
    verdict: Option<String>,
    /// The answer of the `ended` line.
    ended: Option<String>,
    /// The answer a status request must return: `ended`, or a later
    /// `resolved`.
    last: Option<String>,
    delivered: Option<bool>,
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
fn read_journal(path: &Path) -> (BTreeMap<u64, JRec>, Vec<String>) {
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

fn stage_kill(mut rng: Rng, root: &Path) -> Stage {
    let mut st = Stage::new("kill", "kill -9 at random points, restart, CD=T vs journal");
    let dir = subdir(root, "kill");
    let conf = dir.join("concertd.conf");
    let journal = dir.join("journal");
    let n = env_num("STRESS_KILLS", 100);
    let mut delay = rng.range(0, 200);
    write_conf(&dir, &format!("simulator-delay {delay}ms"));
    let mut d = Daemon::spawn(&conf);
    let mut starts = vec![d.start_time];
    let (mut before, mut during, mut after) = (0u64, 0u64, 0u64);
    let (mut not_accepted, mut answered, mut recovered, mut ended_unanswered) = (0u64, 0, 0, 0);
    let mut verdicts: BTreeMap<String, u64> = BTreeMap::new();
    // Each problem counted once, however many restarts still show it.
    let mut flagged: HashSet<String> = HashSet::new();
    let mut status_checks = 0u64;
    for i in 0..n {
        st.tried += 1;
        let reg = REGISTERS[(i % 3) as usize];
        // Mostly approved; some refused (51), abandoned (53), not ended (54).
        let ending = match rng.below(10) {
            0 => 51,
            1 => 53,
            2 => 54,
            _ => rng.below(50),
        };
        let amount = (i + 1) * 100 + ending;
        let req = debit(reg, amount);
        let addr = d.addr;
        let r2 = req.clone();
        let moment = rng.below(3);
        let client = std::thread::spawn(move || {
            exchange(addr, r2.as_bytes(), false, Duration::from_secs(10)).unwrap_or_default()
        });
        // Before: 0-1.5 ms after the client starts, racing its connection
        // and the begun record. During: 1 ms to the simulated delay + 10 ms
        // (begun, backend, ended, answer, delivered). After: 0-5 ms after
        // the client has its answer (around the delivery record).
        match moment {
            0 => {
                before += 1;
                std::thread::sleep(Duration::from_micros(rng.range(0, 1500)));
                d.kill9();
            }
            1 => {
                during += 1;
                std::thread::sleep(Duration::from_millis(rng.range(1, delay + 10)));
                d.kill9();
            }
            _ => {
                after += 1;
                while !client.is_finished() {
                    std::thread::sleep(Duration::from_millis(1));
                }
                std::thread::sleep(Duration::from_micros(rng.range(0, 5000)));
                d.kill9();
            }
        }
        let got = client.join().unwrap_or_default();
        st.daemon_log(&d);
        delay = rng.range(0, 200);
        write_conf(&dir, &format!("simulator-delay {delay}ms"));
        d = Daemon::spawn(&conf);
        starts.push(d.start_time);

        // The journal after recovery.
        let (recs, problems) = read_journal(&journal);
        for p in problems {
            if flagged.insert(p.clone()) {
                st.lose(format!("journal: {p}"));
            }
        }
        for (id, r) in &recs {
            if r.ended.is_none() && flagged.insert(format!("open {id}")) {
                st.lose(format!("tx {id} begun and never ended after recovery"));
            }
            if r.begun > 1 && flagged.insert(format!("dup {id}")) {
                st.lose(format!("tx id {id} begun {} times", r.begun));
            }
        }
        // CD=T for each register equals the journal's latest answer.
        for reg in REGISTERS {
            status_checks += 1;
            let want = recs
                .values()
                .rfind(|r| r.register == reg)
                .and_then(|r| r.last.clone())
                .unwrap_or_else(|| format!("{}AE00201AF00200", status(reg)));
            let got_status = exchange(d.addr, status(reg).as_bytes(), false, PATIENCE)
                .map(|a| text(&a))
                .unwrap_or_else(|e| format!("(error {e})"));
            if let Some(a) = field(got_status.as_bytes(), "CB").and_then(|c| c.parse().ok()) {
                st.outcome(a, got_status.as_bytes(), true);
            }
            if got_status != want && flagged.insert(format!("status {reg} {want}")) {
                st.lose(format!(
                    "CD=T contradicts the journal for register {reg} after kill {i}: \
                     CD=T {got_status:?}, journal {want:?}"
                ));
            }
        }
        // What the client was told agrees with the journal.
        let mine = recs.iter().find(|(_, r)| r.request == req);
        match (mine, got.is_empty()) {
            (None, true) => not_accepted += 1,
            (None, false) => st.lose(format!(
                "kill {i}: the client got {:?} but the journal has no begun record",
                text(&got)
            )),
            (Some((id, r)), got_nothing) => {
                let v = r.verdict.clone().unwrap_or_else(|| "none".into());
                *verdicts.entry(v.clone()).or_default() += 1;
                if got_nothing {
                    if v == "unknown-recovered" {
                        recovered += 1;
                    } else {
                        ended_unanswered += 1;
                    }
                } else {
                    answered += 1;
                    st.outcome(amount, &got, false);
                    if v == "unknown-recovered" {
                        st.lose(format!(
                            "tx {id}: the client got {:?} but the journal closed it as \
                             unknown-recovered",
                            text(&got)
                        ));
                    } else if r.ended.as_deref() != Some(&text(&got)) {
                        st.lose(format!(
                            "tx {id}: the client got {:?}, the journal ended it with {:?}",
                            text(&got),
                            r.ended
                        ));
                    }
                }
            }
        }
    }
    st.daemon_log(&d);
    drop(d);
    let (recs, _) = read_journal(&journal);
    starts.sort();
    st.fig("kill_before", before);
    st.fig("kill_during", during);
    st.fig("kill_after", after);
    st.fig("not_accepted", not_accepted);
    st.fig("answered", answered);
    st.fig("recovered_unknown", recovered);
    st.fig("ended_unanswered", ended_unanswered);
    for (v, c) in &verdicts {
        st.fig(&format!("verdict_{}", v.replace('-', "_")), c);
    }
    st.fig("journal_transactions", recs.len());
    st.fig("status_checks", status_checks);
    st.fig("restart_p50_ms", ms(percentile(&starts, 0.5)));
    st.fig("restart_max_ms", ms(*starts.last().unwrap()));
    st.summary = format!(
        "{before}/{during}/{after} kills before/during/after; {answered} answered, \
         {recovered} recovered AF07, {not_accepted} not accepted; {status_checks} CD=T checked"
    );
    st
}

// ---------------------------------------------------------------- 2: busy storm

fn stage_busy(root: &Path) -> Stage {
    let mut st = Stage::new("busy", "512 concurrent debits while one runs");
    let dir = subdir(root, "busy");
    let d = Daemon::start(&dir, "simulator-delay 3s");
    let running_req = debit("01", 4200);
    let mark = d.mark();
    let addr = d.addr;
    let r2 = running_req.clone();
    let running = std::thread::spawn(move || {
        let t = Instant::now();
        let a = exchange(addr, r2.as_bytes(), false, PATIENCE);
        (a, t.elapsed())
    });
    if d.wait_log(mark, "debit 42.00 EUR register 01 from tcp")
        .is_none()
    {
        st.lose("the running debit never started".into());
    }
    let n = 512usize;
    let barrier = Arc::new(Barrier::new(n + 1));
    let mut handles = Vec::new();
    for i in 0..n {
        let req = debit(&format!("{:02}", 2 + i % 98), 100 + i as u64);
        let b = Arc::clone(&barrier);
        let h = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                let s = connect(addr, PATIENCE);
                b.wait();
                let t = Instant::now();
                let r = s.and_then(|mut s| {
                    s.write_all(req.as_bytes())?;
                    read_all(&mut s)
                });
                (req, r, t.elapsed())
            })
            .expect("thread");
        handles.push(h);
    }
    barrier.wait();
    let storm = Instant::now();
    let mut lat = Vec::new();
    let (mut ok, mut exact) = (0u64, 0u64);
    for h in handles {
        st.tried += 1;
        let (req, r, t) = h.join().expect("client thread");
        lat.push(t);
        match r {
            Ok(a) => match check_busy(&req, &a) {
                Ok(()) => {
                    ok += 1;
                    if a == format!("{req}AE00201").as_bytes() {
                        exact += 1;
                    }
                }
                Err(e) => st.lose(format!("{req}: {e}")),
            },
            Err(e) => st.lose(format!("{req}: no answer: {e}")),
        }
    }
    let storm_time = storm.elapsed();
    st.tried += 1;
    let (ra, rt) = running.join().expect("running client");
    match ra {
        Ok(a) => {
            if let Err(e) = check_approved(&running_req, &a) {
                st.lose(format!("running debit: {e}"));
            }
            if let Some(amount) = field(&a, "CB").and_then(|c| c.parse().ok()) {
                st.outcome(amount, &a, false);
            }
        }
        Err(e) => st.lose(format!("running debit: no answer: {e}")),
    }
    let journal = std::fs::read_to_string(dir.join("journal")).unwrap_or_default();
    let begun = journal.lines().filter(|l| l.contains(" begun ")).count();
    if begun != 1 {
        st.lose(format!(
            "{begun} transactions begun, 1 expected: a busy client got a transaction"
        ));
    }
    st.daemon_log(&d);
    lat.sort();
    st.fig("clients", n);
    st.fig("busy_ok", ok);
    st.fig("busy_exact", exact);
    st.fig("storm_ms", ms(storm_time));
    st.fig("answer_p50_ms", ms(percentile(&lat, 0.5)));
    st.fig("answer_p99_ms", ms(percentile(&lat, 0.99)));
    st.fig("answer_max_ms", ms(*lat.last().unwrap()));
    st.fig("running_ms", ms(rt));
    st.summary = format!(
        "{ok}/{n} busy answers well-formed, all within {} ms; running debit approved after {} ms",
        ms(*lat.last().unwrap()),
        ms(rt)
    );
    st
}

// ---------------------------------------------------------------- 3: idle connections

fn stage_idle(root: &Path) -> Stage {
    let mut st = Stage::new("idle", "300 idle connections held, a real debit answered");
    let dir = subdir(root, "idle");
    let d = Daemon::start(&dir, "simulator-delay 1s\nrequest-timeout 60s");
    let n = 300usize;
    let mut idle = Vec::new();
    for _ in 0..n {
        match connect(d.addr, PATIENCE) {
            Ok(s) => idle.push(s),
            Err(e) => st.lose(format!("idle connection refused: {e}")),
        }
    }
    // Wait until concertd holds them all.
    let until = Instant::now() + Duration::from_secs(10);
    let mut held = 0;
    while Instant::now() < until {
        held = d.connections_open().unwrap_or(0);
        if held >= n {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    st.fig("held_before", held);
    if held < n {
        st.evidence(format!(
            "concertd reported {held} connections open, {n} expected"
        ));
    }
    let req = debit("01", 1234);
    st.tried += 1;
    let t = Instant::now();
    match exchange(d.addr, req.as_bytes(), false, PATIENCE) {
        Ok(a) => {
            if let Err(e) = check_approved(&req, &a) {
                st.lose(format!("debit: {e}"));
            }
            st.outcome(1234, &a, false);
        }
        Err(e) => st.lose(format!("debit: no answer: {e}")),
    }
    let debit_time = t.elapsed();
    st.tried += 1;
    let p = ping("01");
    let t = Instant::now();
    match exchange(d.addr, p.as_bytes(), false, PATIENCE) {
        Ok(a) if a == format!("{p}AE00210").as_bytes() => {}
        Ok(a) => st.lose(format!("ping: {:?}", text(&a))),
        Err(e) => st.lose(format!("ping: {e}")),
    }
    let ping_time = t.elapsed();
    // The idle connections are still open: nothing to read, no EOF.
    let mut still = 0u64;
    for s in &idle {
        st.tried += 1;
        let _ = s.set_nonblocking(true);
        let mut b = [0u8; 16];
        match (&*s).read(&mut b) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => still += 1,
            Ok(0) => st.lose("an idle connection was closed before request-timeout".into()),
            Ok(k) => st.lose(format!("an idle connection got {:?}", text(&b[..k]))),
            Err(e) => st.lose(format!("an idle connection: {e}")),
        }
    }
    let held_after = d.connections_open().unwrap_or(0);
    drop(idle);
    st.daemon_log(&d);
    st.fig("idle", n);
    st.fig("idle_still_open", still);
    st.fig("held_after", held_after);
    st.fig("debit_ms", ms(debit_time));
    st.fig("ping_ms", ms(ping_time));
    st.summary = format!(
        "{still}/{n} idle held; debit approved in {} ms (1 s simulated), ping {} ms",
        ms(debit_time),
        ms(ping_time)
    );
    st
}

// ---------------------------------------------------------------- 4: garbage

const KINDS: [&str; 10] = [
    "random_bytes",
    "tlv_junk",
    "truncated",
    "debit",
    "ping",
    "stx_junk",
    "reset",
    "status",
    "oversize",
    "split_ping",
];

#[derive(Default)]
struct Tally {
    sent: [u64; KINDS.len()],
    /// Valid requests without a well-formed answer.
    bad: u64,
    /// Connections concertd neither answered nor closed in time.
    hung: u64,
    connect_errors: u64,
    debit_approved: u64,
    debit_busy: u64,
    debit_other: u64,
    garbage_answered: u64,
    /// Debit outcomes that disagree with the simulator's table.
    wrong: u64,
    evidence: Vec<String>,
}

impl Tally {
    fn note(&mut self, s: String) {
        if self.evidence.len() < 4 {
            self.evidence.push(s);
        }
    }
}

fn garbage_client(addr: SocketAddr, mut rng: Rng, stop: Arc<AtomicBool>) -> Tally {
    let mut t = Tally::default();
    // Over request-timeout (5 s) and concertd's linger (2 s).
    let timeout = Duration::from_secs(12);
    while !stop.load(Ordering::Relaxed) {
        let kind = rng.below(KINDS.len() as u64) as usize;
        t.sent[kind] += 1;
        let reg = format!("{:02}", rng.range(1, 20));
        let mut s = match connect(addr, timeout) {
            Ok(s) => s,
            Err(e) => {
                t.connect_errors += 1;
                t.note(format!("connect: {e}"));
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        // What to send, whether to shut our side, what a valid one expects.
        let (bytes, shut, valid): (Vec<u8>, bool, Option<String>) = match kind {
            0 => {
                let n = rng.range(1, 600) as usize;
                (rng.bytes(n), true, None)
            }
            1 => {
                let mut b = b"CZ0040320".to_vec();
                for _ in 0..rng.range(0, 12) {
                    let tag = [b'A' + rng.below(26) as u8, b'A' + rng.below(26) as u8];
                    let len = rng.range(0, 30) as usize;
                    // Sometimes the length lies.
                    let said = if rng.chance(20) {
                        rng.below(1000) as usize
                    } else {
                        len
                    };
                    b.extend_from_slice(&tag);
                    b.extend_from_slice(format!("{said:03}").as_bytes());
                    b.extend_from_slice(&rng.printable(len));
                }
                (b, true, None)
            }
            2 => {
                let full = debit(&reg, rng.range(1, 99_999));
                let cut = rng.range(1, full.len() as u64 - 1) as usize;
                (full.as_bytes()[..cut].to_vec(), true, None)
            }
            3 => {
                let req = debit(&reg, rng.range(1, 99_999));
                (req.clone().into_bytes(), false, Some(req))
            }
            4 | 9 => {
                let req = ping(&reg);
                (req.clone().into_bytes(), false, Some(req))
            }
            5 => {
                let mut b = vec![STX];
                let n = rng.range(0, 80) as usize;
                if rng.chance(50) {
                    b.extend_from_slice(b"0100001000110978          A010B010");
                    b.truncate(1 + n.min(34));
                } else {
                    b.extend_from_slice(&rng.bytes(n));
                }
                b.push(ETX);
                b.push(rng.next() as u8);
                (b, true, None)
            }
            6 => {
                let n = rng.range(0, 100) as usize;
                (rng.bytes(n), false, None)
            }
            7 => {
                let req = status(&reg);
                (req.clone().into_bytes(), false, Some(req))
            }
            _ => {
                let n = rng.range(1000, 6000) as usize;
                (rng.printable(n), true, None)
            }
        };
        if kind == 6 {
            let _ = s.write_all(&bytes);
            abort(s);
            continue;
        }
        let wrote = if kind == 9 {
            // A valid request in pieces, within request-gap.
            let cut = rng.range(1, bytes.len() as u64 - 1) as usize;
            s.write_all(&bytes[..cut]).and_then(|()| {
                std::thread::sleep(Duration::from_millis(rng.range(0, 20)));
                s.write_all(&bytes[cut..])
            })
        } else {
            s.write_all(&bytes)
        };
        if shut {
            let _ = s.shutdown(Shutdown::Write);
        }
        let answer = match (wrote, read_all(&mut s)) {
            (_, Ok(a)) => a,
            (_, Err(e)) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                t.hung += 1;
                t.note(format!(
                    "{}: no answer nor close within {timeout:?}",
                    KINDS[kind]
                ));
                continue;
            }
            (_, Err(e)) => {
                if valid.is_some() {
                    t.bad += 1;
                    t.note(format!("{}: read: {e}", KINDS[kind]));
                }
                continue;
            }
        };
        let Some(req) = valid else {
            if !answer.is_empty() {
                t.garbage_answered += 1;
            }
            continue;
        };
        let fault = match kind {
            4 | 9 => {
                (answer != format!("{req}AE00210").as_bytes()).then_some("not the ping answer")
            }
            7 => (Frame::decode(&answer).is_err() || field(&answer, "AE").is_none())
                .then_some("malformed status answer"),
            _ => {
                if Frame::decode(&answer).is_err() || !answer.starts_with(req.as_bytes()) {
                    Some("malformed debit answer")
                } else {
                    match (
                        field(&answer, "AE").as_deref(),
                        field(&answer, "AF").is_some(),
                    ) {
                        (Some("10"), _) => t.debit_approved += 1,
                        (Some("01"), false) => t.debit_busy += 1,
                        (Some("01"), true) => t.debit_other += 1,
                        _ => {}
                    }
                    let busy = field(&answer, "AE").as_deref() == Some("01")
                        && field(&answer, "AF").is_none();
                    let amount = Frame::decode(req.as_bytes()).ok().and_then(|f| {
                        std::str::from_utf8(f.get(concert::tlv::tags::CB)?)
                            .ok()?
                            .parse()
                            .ok()
                    });
                    if let (false, Some(amount)) = (busy, amount) {
                        if let Err(e) = check_outcome(amount, &answer, false) {
                            t.wrong += 1;
                            t.note(format!("wrong outcome: {e}"));
                        }
                    }
                    None
                }
            }
        };
        if let Some(f) = fault {
            t.bad += 1;
            t.note(format!("{f}: {req} -> {:?}", text(&answer)));
        }
    }
    t
}

fn stage_garbage(mut rng: Rng, root: &Path) -> Stage {
    let mut st = Stage::new("garbage", "garbage and valid frames mixed, 16 connections");
    let dir = subdir(root, "garbage");
    let mut d = Daemon::start(&dir, "simulator-delay 10ms");
    let secs = env_num("STRESS_GARBAGE_SECS", 60);
    let threads = 16;
    std::thread::sleep(Duration::from_millis(200));
    let rss_start = d.rss_kb().unwrap_or(0);
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for _ in 0..threads {
        let (r, s, a) = (rng.fork(), Arc::clone(&stop), d.addr);
        handles.push(std::thread::spawn(move || garbage_client(a, r, s)));
    }
    let t0 = Instant::now();
    let mut rss_peak = rss_start;
    let mut rss_10s = 0;
    let mut died = false;
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(500));
        if !d.alive() {
            died = true;
            break;
        }
        let r = d.rss_kb().unwrap_or(0);
        rss_peak = rss_peak.max(r);
        if rss_10s == 0 && t0.elapsed() >= Duration::from_secs(10.min(secs)) {
            rss_10s = r;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let load_time = t0.elapsed();
    let mut t = Tally::default();
    for h in handles {
        let x = h.join().expect("garbage client");
        for k in 0..KINDS.len() {
            t.sent[k] += x.sent[k];
        }
        t.bad += x.bad;
        t.hung += x.hung;
        t.connect_errors += x.connect_errors;
        t.debit_approved += x.debit_approved;
        t.debit_busy += x.debit_busy;
        t.debit_other += x.debit_other;
        t.garbage_answered += x.garbage_answered;
        t.wrong += x.wrong;
        for e in x.evidence {
            st.evidence(e);
        }
    }
    let total: u64 = t.sent.iter().sum();
    st.tried = total;
    st.lost = t.bad + t.hung;
    st.wrong = t.wrong;
    // Every connection closed again, then the memory once more.
    let mut open_after = usize::MAX;
    let until = Instant::now() + Duration::from_secs(15);
    while !died && Instant::now() < until {
        open_after = d.connections_open().unwrap_or(usize::MAX);
        if open_after == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let rss_end = d.rss_kb().unwrap_or(0);
    if died || !d.alive() {
        st.lose(format!(
            "concertd died under garbage; log tail:\n{}",
            d.log_tail(20)
        ));
    } else {
        st.tried += 1;
        let p = ping("01");
        match exchange(d.addr, p.as_bytes(), false, PATIENCE) {
            Ok(a) if a == format!("{p}AE00210").as_bytes() => {}
            Ok(a) => st.lose(format!("final ping: {:?}", text(&a))),
            Err(e) => st.lose(format!("final ping: {e}")),
        }
    }
    let growth = rss_end as i64 - rss_start as i64;
    let flat = growth <= 20 * 1024;
    if !flat {
        st.lose(format!(
            "memory grew by {} kB ({rss_start} -> {rss_end} kB), over 20 MB",
            growth
        ));
    }
    if open_after != 0 {
        st.evidence(format!(
            "{open_after} connections still open 15 s after the load"
        ));
    }
    // Every transaction the load started has its outcome.
    let (recs, problems) = read_journal(&dir.join("journal"));
    for p in problems {
        st.lose(format!("journal: {p}"));
    }
    let open = recs.values().filter(|r| r.ended.is_none()).count();
    if open > 0 {
        st.lose(format!("{open} transactions begun and never ended"));
    }
    st.fig("journal_transactions", recs.len());
    st.daemon_log(&d);
    st.fig("load_seconds", format!("{:.1}", load_time.as_secs_f64()));
    st.fig("threads", threads);
    st.fig("connections", total);
    st.fig(
        "conn_per_s",
        format!("{:.0}", total as f64 / load_time.as_secs_f64()),
    );
    for (k, name) in KINDS.iter().enumerate() {
        st.fig(&format!("sent_{name}"), t.sent[k]);
    }
    st.fig("debit_approved", t.debit_approved);
    st.fig("debit_busy", t.debit_busy);
    st.fig("debit_declined", t.debit_other);
    st.fig("garbage_answered", t.garbage_answered);
    st.fig("valid_bad", t.bad);
    st.fig("hung", t.hung);
    st.fig("connect_errors", t.connect_errors);
    st.fig("open_after", open_after);
    st.fig("rss_start_kb", rss_start);
    st.fig("rss_10s_kb", rss_10s);
    st.fig("rss_peak_kb", rss_peak);
    st.fig("rss_end_kb", rss_end);
    st.fig("rss_growth_kb", growth);
    st.fig("memory_flat", u8::from(flat));
    st.fig("alive", u8::from(!died));
    st.summary = format!(
        "{total} connections in {:.0} s ({:.0}/s), {} hung, {} valid unanswered; \
         RSS {rss_start} -> {rss_end} kB (peak {rss_peak})",
        load_time.as_secs_f64(),
        total as f64 / load_time.as_secs_f64(),
        t.hung,
        t.bad
    );
    st
}

// ---------------------------------------------------------------- 5: serial noise

/// The cash register on the master side of a pty pair; concertd opens the
/// slave through a symlink.
struct Register {
    master: TTYPort,
    _slave: TTYPort,
}

fn pty(link: &Path) -> Register {
    let (mut master, slave) = TTYPort::pair().expect("pty pair");
    // Not close-on-exec as opened: concertd must not inherit them.
    cloexec(master.as_raw_fd());
    cloexec(slave.as_raw_fd());
    master.set_timeout(Duration::from_millis(20)).unwrap();
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(slave.name().unwrap(), link).unwrap();
    Register {
        master,
        _slave: slave,
    }
}

fn serial_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![STX];
    f.extend_from_slice(payload);
    f.push(ETX);
    f.push(lrc(&f[1..]));
    f
}

impl Register {
    fn send(&mut self, b: &[u8]) -> Result<(), String> {
        self.master
            .write_all(b)
            .and_then(|()| self.master.flush())
            .map_err(|e| format!("pty write: {e}"))
    }

    fn byte_within(&mut self, d: Duration) -> Result<Option<u8>, String> {
        let until = Instant::now() + d;
        let mut b = [0u8; 1];
        while Instant::now() < until {
            match self.master.read(&mut b) {
                Ok(1) => return Ok(Some(b[0])),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::TimedOut => {}
                Err(e) => return Err(format!("pty read: {e}")),
            }
        }
        Ok(None)
    }

    fn expect(&mut self, want: u8, what: &str, d: Duration) -> Result<(), String> {
        match self.byte_within(d)? {
            Some(b) if b == want => Ok(()),
            Some(b) => Err(format!("{what}: got 0x{b:02x}, expected 0x{want:02x}")),
            None => Err(format!("{what}: nothing within {d:?}")),
        }
    }

    /// Reads for `d`, then until the line is quiet; what came.
    fn drain(&mut self, d: Duration) -> Result<Vec<u8>, String> {
        let until = Instant::now() + d;
        let mut got = Vec::new();
        while Instant::now() < until {
            if let Some(b) = self.byte_within(until - Instant::now())? {
                got.push(b);
            }
        }
        while let Some(b) = self.byte_within(Duration::from_millis(50))? {
            got.push(b);
        }
        Ok(got)
    }

    /// A V2 E+ session, strictly: ENQ/ACK, request/ACK, EOT; then the
    /// terminal's ENQ/ACK, its 83-byte frame/ACK, its EOT.
    fn session(&mut self, amount: u64) -> Result<(), String> {
        let step = Duration::from_secs(3);
        let req = format!("01{amount:08}110978          A010B010");
        self.send(&[ENQ])?;
        self.expect(ACK, "ACK to our ENQ", step)?;
        self.send(&serial_frame(req.as_bytes()))?;
        match self.byte_within(step)? {
            Some(ACK) => {}
            Some(NAK) => return Err("request NAKed".into()),
            Some(b) => return Err(format!("request: got 0x{b:02x}, expected ACK")),
            None => return Err("request: no ACK".into()),
        }
        self.send(&[EOT])?;
        self.expect(ENQ, "terminal's ENQ", step)?;
        self.send(&[ACK])?;
        let mut wire = Vec::new();
        self.expect(STX, "STX of the answer", step)?;
        wire.push(STX);
        let mut payload = Vec::new();
        let end = loop {
            match self.byte_within(step)? {
                Some(b @ (ETX | ETB)) => break b,
                Some(b) => payload.push(b),
                None => return Err(format!("answer cut after {:?}", text(&payload))),
            }
        };
        wire.extend_from_slice(&payload);
        wire.push(end);
        let l = self
            .byte_within(step)?
            .ok_or_else(|| "no LRC".to_string())?;
        wire.push(l);
        if end != ETX || l != lrc(&payload) ^ ETX {
            return Err(format!("bad answer frame {:?}", text(&wire)));
        }
        self.send(&[ACK])?;
        self.expect(EOT, "terminal's EOT", step)?;
        if wire.len() != 83 {
            return Err(format!("answer of {} bytes, 83 expected", wire.len()));
        }
        let head = format!("010{amount:08}");
        if !payload.starts_with(head.as_bytes()) || &payload[67..70] != b"978" {
            return Err(format!("unexpected answer {:?}", text(&payload)));
        }
        Ok(())
    }
}

fn stage_serial(mut rng: Rng, root: &Path) -> Stage {
    let mut st = Stage::new("serial", "serial noise bursts between V2 E+ sessions");
    let dir = subdir(root, "serial");
    let link = dir.join("tty");
    let mut reg = pty(&link);
    let d = Daemon::start(
        &dir,
        &format!(
            "serial {}\nsimulator-delay 0\n{SERIAL_TIMERS}",
            link.display()
        ),
    );
    if d.wait_log(0, ": open, 9600 baud 7E1").is_none() {
        st.lose("the serial line was never opened".into());
        return st;
    }
    let rounds = env_num("STRESS_SERIAL_ROUNDS", 100);
    // After arbitrary noise, concertd may be inside a session it thinks
    // the register opened: wait until every timer has fired.
    let quiet = Duration::from_millis(3 * FRAME_TIMEOUT_MS + 150);
    let (mut idle_noise, mut any_noise, mut noise_bytes, mut echoed) = (0u64, 0u64, 0u64, 0u64);
    let mut times = Vec::new();
    for i in 0..rounds {
        st.tried += 1;
        let n = rng.range(1, 200) as usize;
        noise_bytes += n as u64;
        let result = if rng.chance(50) {
            // Noise an idle line ignores: no ENQ, no 'C' (masked to 7 bits).
            idle_noise += 1;
            let noise: Vec<u8> = (0..n)
                .map(|_| loop {
                    let b = rng.next() as u8;
                    if !matches!(b & 0x7f, 0x05 | b'C') {
                        break b;
                    }
                })
                .collect();
            reg.send(&noise)
        } else {
            any_noise += 1;
            let noise = rng.bytes(n);
            reg.send(&noise).and_then(|()| {
                let got = reg.drain(quiet)?;
                if !got.is_empty() {
                    echoed += 1;
                }
                Ok(())
            })
        };
        let amount = 100 + rng.below(9_900) * 100 + rng.below(50);
        let t = Instant::now();
        let result = result.and_then(|()| reg.session(amount));
        times.push(t.elapsed());
        if let Err(e) = result {
            st.lose(format!("round {i}: session failed: {e}"));
            // Let the line settle before the next round.
            let _ = reg.drain(quiet);
        }
    }
    // Each session is one transaction, ended and delivered; noise made
    // none. Delivery records follow the register's last ACK: wait a little.
    let until = Instant::now() + Duration::from_secs(3);
    let (recs, problems) = loop {
        let (recs, problems) = read_journal(&dir.join("journal"));
        let delivered = recs.values().filter(|r| r.delivered.is_some()).count();
        if delivered >= recs.len() || Instant::now() >= until {
            break (recs, problems);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for p in problems {
        st.lose(format!("journal: {p}"));
    }
    let ended = recs.values().filter(|r| r.ended.is_some()).count();
    let delivered = recs.values().filter(|r| r.delivered == Some(true)).count();
    let failed = st.lost;
    if failed == 0
        && (recs.len() as u64 != rounds || ended != recs.len() || delivered != recs.len())
    {
        st.lose(format!(
            "journal: {} transactions, {ended} ended, {delivered} delivered, for {rounds} sessions",
            recs.len()
        ));
    }
    st.fig("journal_transactions", recs.len());
    st.fig("journal_delivered", delivered);
    st.daemon_log(&d);
    // What the noise did to the link layer, as concertd logged it.
    st.fig("daemon_bad_frames", d.count_log("bad frame ("));
    st.fig(
        "daemon_back_to_idle",
        d.count_log("bad frames, back to idle"),
    );
    st.fig(
        "daemon_frame_timeouts",
        d.count_log("fired waiting for the request frame"),
    );
    st.fig("daemon_raw_requests", d.count_log("bad raw request"));
    times.sort();
    st.fig("rounds", rounds);
    st.fig("idle_noise_rounds", idle_noise);
    st.fig("random_noise_rounds", any_noise);
    st.fig("noise_bytes", noise_bytes);
    st.fig("noise_answered", echoed);
    st.fig("session_p50_ms", ms(percentile(&times, 0.5)));
    st.fig(
        "session_max_ms",
        ms(*times.last().unwrap_or(&Duration::ZERO)),
    );
    st.summary = format!(
        "{} sessions after {noise_bytes} noise bytes ({idle_noise} idle-safe bursts, \
         {any_noise} random), session p50 {} ms",
        rounds - st.lost,
        ms(percentile(&times, 0.5))
    );
    st
}

// ---------------------------------------------------------------- 6: floods

/// The memory a flood must not take concertd past.
const FLOOD_RSS_LIMIT_KB: u64 = 64 * 1024;

/// A payment program that floods, by amount; any other amount approves.
const FLOOD_SH: &str = r#"#!/bin/sh
case "$CONCERT_AMOUNT" in
# Endless lines on standard output.
101) exec yes X=1 ;;
# Standard error without a newline.
102) exec tr '\0' e < /dev/zero >&2 ;;
# Endless lines on standard error.
103) exec yes 'flood line' >&2 ;;
# 32 MB of keys on standard output, then an approval past what is read.
104) yes X=1 | head -c 32000000; echo AE=10 ;;
*) echo AE=10; echo AC=123456 ;;
esac
"#;

/// Samples concertd's RSS every 20 ms until stopped; past
/// `FLOOD_RSS_LIMIT_KB` kills it, which fails the stage, before a
/// regression takes the machine's memory. `stop()` gives the peak in kB.
struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    fn start(pid: i32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            while !s.load(Ordering::Relaxed) {
                let Some(kb) = rss_of(pid) else { break };
                peak = peak.max(kb);
                if kb >= FLOOD_RSS_LIMIT_KB {
                    // SAFETY: kill(2) on our own child's pid.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        });
        RssSampler { stop, handle }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or(u64::MAX)
    }
}

/// VmRSS of a process in kB.
fn rss_of(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A V3 upstream on loopback that answers each register's status with its
/// previous sale until that register's sale comes, and every other request
/// with bytes without end: the sales, then each status the resolvers ask.
/// Counts the connections it streamed to.
fn streaming_upstream(streamed: Arc<std::sync::atomic::AtomicU64>) -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let addr = l.local_addr().expect("upstream address");
    let sold = Arc::new(Mutex::new(HashSet::<String>::new()));
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let (sold, streamed) = (Arc::clone(&sold), Arc::clone(&streamed));
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(PATIENCE));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while concert::request::parse(&buf, &[978]).is_err() {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let ca = field(&buf, "CA").unwrap_or_default();
                let status = field(&buf, "CD").as_deref() == Some("T");
                let first = !sold.lock().unwrap().contains(&ca);
                if status && first {
                    let prev = format!("{}AE00201AF00204", debit(&ca, 700));
                    let _ = s.write_all(prev.as_bytes());
                    return;
                }
                if !status {
                    sold.lock().unwrap().insert(ca);
                }
                streamed.fetch_add(1, Ordering::Relaxed);
                let flood = "CF003abc".repeat(1024);
                while s.write_all(flood.as_bytes()).is_ok() {}
            });
        }
    });
    addr
}

fn stage_flood(root: &Path) -> Stage {
    let mut st = Stage::new("flood", "floods from exec programs and a relay upstream");
    let dir = subdir(root, "flood");
    let script = dir.join("flood.sh");
    std::fs::write(&script, FLOOD_SH).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut peak_all = 0;
    let d = Daemon::start(
        &dir,
        &format!("terminal exec {}\ntransaction-timeout 3s", script.display()),
    );
    st.fig("rss_start_kb", d.rss_kb().unwrap_or(0));
    // Each flood ends in AF07: killed at transaction-timeout, or, for the
    // approval past 64 KiB of keys, unknown at the exit.
    for (amount, name, says) in [
        (
            101,
            "exec_stdout_lines",
            "more than 65536 bytes on standard output",
        ),
        (102, "exec_stderr_no_newline", " [cut at 1024 bytes]"),
        (103, "exec_stderr_lines", "lines of standard error logged"),
        (
            104,
            "exec_ae_past_64k",
            "more than 65536 bytes on standard output",
        ),
    ] {
        st.tried += 1;
        let req = debit("01", amount);
        let mark = d.mark();
        let sampler = RssSampler::start(d.pid());
        let t = Instant::now();
        let answer = exchange(d.addr, req.as_bytes(), false, PATIENCE);
        let peak = sampler.stop();
        peak_all = peak_all.max(peak);
        st.fig(&format!("{name}_peak_rss_kb"), peak);
        st.fig(&format!("{name}_ms"), ms(t.elapsed()));
        if peak >= FLOOD_RSS_LIMIT_KB {
            st.lose(format!("{name}: RSS {peak} kB, killed"));
            break;
        }
        if d.wait_log(mark, says).is_none() {
            st.lose(format!("{name}: no log line with {says:?}"));
        }
        match answer {
            Ok(a) if a == format!("{req}AE00201AF00207").as_bytes() => {}
            Ok(a) => {
                st.wrong += 1;
                st.evidence(format!("{name}: not AF07: {:?}", text(&a)));
            }
            Err(e) => st.lose(format!("{name}: no answer: {e}")),
        }
    }
    // Still a terminal: the next sale is approved.
    st.tried += 1;
    let req = debit("01", 100);
    match exchange(d.addr, req.as_bytes(), false, PATIENCE) {
        Ok(a) => {
            if let Err(e) = check_approved(&req, &a) {
                st.lose(format!("after the floods: {e}"));
            }
        }
        Err(e) => st.lose(format!("after the floods: no answer: {e}")),
    }
    st.daemon_log(&d);
    drop(d);

    // A relay whose upstream streams: each register's sale is lost
    // (cut at 8 KiB), and its resolver's status reads are streamed too.
    let streamed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let up = streaming_upstream(Arc::clone(&streamed));
    let rdir = subdir(root, "flood-relay");
    let d = Daemon::start(
        &rdir,
        &format!("terminal relay tcp {up} v3\ntransaction-timeout 20s"),
    );
    let sampler = RssSampler::start(d.pid());
    let t = Instant::now();
    let registers = 5;
    for r in 1..=registers {
        st.tried += 1;
        let ca = format!("{r:02}");
        let req = debit(&ca, 1000 + r);
        match exchange(d.addr, req.as_bytes(), false, PATIENCE) {
            Ok(a) if a == format!("{req}AE00201AF00207").as_bytes() => {}
            Ok(a) => {
                st.wrong += 1;
                st.evidence(format!("relay: not AF07: {:?}", text(&a)));
            }
            Err(e) => st.lose(format!("relay {ca}: no answer: {e}")),
        }
    }
    // The resolvers ask every 2 s; the registers ask too.
    let resolving = Instant::now();
    while resolving.elapsed() < Duration::from_secs(6) {
        for r in 1..=registers {
            let _ = exchange(
                d.addr,
                status(&format!("{r:02}")).as_bytes(),
                false,
                PATIENCE,
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let peak = sampler.stop();
    peak_all = peak_all.max(peak);
    st.fig("relay_ms", ms(t.elapsed()));
    st.fig("relay_peak_rss_kb", peak);
    st.fig("relay_streams", streamed.load(Ordering::Relaxed));
    let cut = d.count_log("answer longer than 8192 bytes");
    st.fig("relay_answers_cut", cut);
    if peak >= FLOOD_RSS_LIMIT_KB {
        st.lose(format!("relay: RSS {peak} kB, killed"));
    } else if cut < registers as usize {
        st.lose(format!("relay: {cut} answers cut for {registers} sales"));
    }
    st.daemon_log(&d);
    st.fig("rss_peak_kb", peak_all);
    st.fig("peak_rss_mb", format!("{:.1}", peak_all as f64 / 1024.0));
    st.summary = format!(
        "4 exec floods and {registers} relay sales to an endless upstream \
         ({} streams read and cut), peak RSS {:.1} MB",
        streamed.load(Ordering::Relaxed),
        peak_all as f64 / 1024.0
    );
    st
}

// ---------------------------------------------------------------- 7: rotation

/// Debits of the rotation stage, each its own CF: all in the retry window.
const ROTATION_TX: u64 = 1500;
const ROTATION_SIZE: u64 = 16 * 1024;

/// With a 24 h retry window every transaction is carried over at each
/// rotation, so the carried set soon outgrows a small journal-size. Each
/// debit appends about 500 bytes (begun, ended, delivered): one rotation
/// per journal-size of them, some 30 debits. More than one per 2 debits
/// means the carried records count toward journal-size again (before the
/// fix: more rotations than debits, each new file only carried records);
/// a journal file past 1.5 x journal-size plus a few records means the
/// carried set is not capped.
fn stage_rotation(root: &Path) -> Stage {
    let mut st = Stage::new("rotation", "rotation with a 24 h retry window");
    let dir = subdir(root, "rotation");
    let d = Daemon::start(
        &dir,
        &format!(
            "simulator-delay 0\nretry-window 24h\njournal-size {ROTATION_SIZE}\njournal-keep 2"
        ),
    );
    let mut largest = 0;
    for i in 0..ROTATION_TX {
        // Ending in 00: approved, so held for replay.
        let amount = 1000 + 100 * (i % 50);
        let head = debit("01", amount);
        let req = format!("{head}CF010tx{i:08}");
        st.tried += 1;
        match exchange(d.addr, req.as_bytes(), false, PATIENCE) {
            Ok(a) => {
                if let Err(e) = check_approved(&head, &a) {
                    st.lose(format!("debit {i}: {e}"));
                }
                st.outcome(amount, &a, false);
            }
            Err(e) => st.lose(format!("debit {i}: no answer: {e}")),
        }
        if let Ok(m) = std::fs::metadata(dir.join("journal")) {
            largest = largest.max(m.len());
        }
    }
    let rotations = d.count_log(": rotated,") as u64;
    if rotations > ROTATION_TX / 2 {
        st.lose(format!(
            "{rotations} rotations for {ROTATION_TX} debits: carried records count again"
        ));
    }
    let bound = ROTATION_SIZE * 3 / 2 + 4096;
    if largest > bound {
        st.lose(format!(
            "journal grew to {largest} bytes, past {bound}: the carried set is not capped"
        ));
    }
    st.daemon_log(&d);
    st.fig("rotations", rotations);
    st.fig("transactions", ROTATION_TX);
    st.fig("journal_size", ROTATION_SIZE);
    st.fig("largest_journal_bytes", largest);
    st.summary = format!(
        "{rotations} rotations for {ROTATION_TX} debits (journal-size {}K), largest journal {largest} bytes",
        ROTATION_SIZE / 1024
    );
    st
}

// ---------------------------------------------------------------- main

fn run_stage(n: usize, f: impl FnOnce() -> Stage, key: &'static str, title: &'static str) -> Stage {
    println!("\n== stage {n}: {title}");
    let t = Instant::now();
    let mut st = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(s) => s,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let mut s = Stage::new(key, title);
            s.lose(format!("stage aborted: {msg}"));
            s.summary = "aborted".into();
            s
        }
    };
    st.secs = t.elapsed().as_secs_f64();
    println!(
        "   tried {}, lost {}, {:.1} s: {}",
        st.tried, st.lost, st.secs, st.summary
    );
    for note in &st.notes {
        println!("   ! {note}");
    }
    st
}

fn main() {
    let t0 = Instant::now();
    let seed = std::env::var("STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            now.as_nanos() as u64 ^ u64::from(std::process::id())
        });
    println!("stress: concertd {CONCERTD}");
    println!("stress: seed {seed} (STRESS_SEED={seed} repeats this run)");
    let root = std::env::temp_dir().join(format!("concertd-stress-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let mut rng = Rng::new(seed);
    let (r1, r4, r5) = (rng.fork(), rng.fork(), rng.fork());
    let stages = vec![
        run_stage(
            1,
            || stage_kill(r1, &root),
            "kill",
            "kill -9 at random points",
        ),
        run_stage(2, || stage_busy(&root), "busy", "512 concurrent clients"),
        run_stage(3, || stage_idle(&root), "idle", "300 idle connections"),
        run_stage(
            4,
            || stage_garbage(r4, &root),
            "garbage",
            "garbage and valid frames",
        ),
        run_stage(
            5,
            || stage_serial(r5, &root),
            "serial",
            "serial noise between sessions",
        ),
        run_stage(
            6,
            || stage_flood(&root),
            "flood",
            "floods from exec and a relay upstream",
        ),
        run_stage(
            7,
            || stage_rotation(&root),
            "rotation",
            "rotation with a 24 h retry window",
        ),
    ];
    let tried: u64 = stages.iter().map(|s| s.tried).sum();
    let lost: u64 = stages.iter().map(|s| s.lost).sum();
    let wrong: u64 = stages.iter().map(|s| s.wrong).sum();
    let mut table = String::new();
    let _ = writeln!(
        table,
        "\n{:<3} {:<52} {:>7} {:>5} {:>7}",
        "#", "stage", "tried", "lost", "time s"
    );
    for (i, s) in stages.iter().enumerate() {
        let _ = writeln!(
            table,
            "{:<3} {:<52} {:>7} {:>5} {:>7.1}",
            i + 1,
            s.title,
            s.tried,
            s.lost,
            s.secs
        );
        let _ = writeln!(table, "    {}", s.summary);
    }
    let _ = writeln!(
        table,
        "{:<3} {:<52} {:>7} {:>5} {:>7.1}",
        "",
        "total",
        tried,
        lost,
        t0.elapsed().as_secs_f64()
    );
    print!("{table}");
    println!();
    println!("stress.seed={seed}");
    for s in &stages {
        for (k, v) in &s.figures {
            println!("stress.{}.{k}={v}", s.key);
        }
        println!("stress.{}.seconds={:.1}", s.key, s.secs);
        println!("stress.{}.tried={}", s.key, s.tried);
        println!("stress.{}.lost={}", s.key, s.lost);
        println!("stress.{}.wrong={}", s.key, s.wrong);
    }
    // The most memory concertd took in any stage that measured it.
    let peak_kb = stages
        .iter()
        .flat_map(|s| &s.figures)
        .filter(|(k, _)| k == "rss_peak_kb")
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    println!("stress.peak_rss_mb={:.1}", peak_kb as f64 / 1024.0);
    println!("stress.seconds={:.1}", t0.elapsed().as_secs_f64());
    println!("stress.tried={tried}");
    println!("stress.wrong={wrong}");
    println!("stress.lost={lost}");
    if lost == 0 && wrong == 0 {
        let _ = std::fs::remove_dir_all(&root);
    } else {
        eprintln!(
            "stress: journals and configurations kept in {}",
            root.display()
        );
        std::process::exit(1);
    }
}
