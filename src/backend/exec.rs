//! `terminal exec PROGRAM [ARGS...]`: a payment application plugged in as
//! a program. For each transaction concertd runs it in its own process
//! group with the request in the environment, and reads the outcome from
//! its standard output as `KEY=value` lines.

use crate::backend::{Backend, Done, Transaction};
use crate::wire::answer::{Af, Outcome, Status};
use crate::wire::base64;
use crate::wire::pan;
use crate::wire::request::{Operation, Request};
use crate::wire::tlv::tags;
use crossbeam_channel::{bounded, Sender};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest line of standard output taken into account; a longer one is
/// ignored whole, as a cut value is not the program's value.
const MAX_LINE: usize = 4096;
/// Longest line of standard error logged: a program that never writes a
/// newline gets its first KiB logged, the rest counted.
pub const MAX_STDERR_LINE: usize = 1024;
/// Read past `MAX_STDERR_LINE` before cutting, so that a card number
/// straddling the cut is masked whole, however its digits are separated.
const PAN_SPAN: usize = pan::SPAN;
/// After the program exits, how long its pipes are still read. A child it
/// left behind may hold them open for as long as it runs: what it writes
/// later is not the program's outcome, and waiting for it would turn an
/// outcome into a time-out.
pub const GRACE: Duration = Duration::from_millis(100);
/// While the pipes are open, how often to look whether the program has
/// exited (a child may keep them open past its exit).
const TICK_MS: i32 = 50;
/// Standard output taken into account; the rest is read and dropped, so
/// that a program stuck printing cannot fill memory or block on the pipe.
pub const MAX_STDOUT: usize = 64 * 1024;
/// Standard error lines logged per transaction; the rest are read,
/// counted and dropped, and one line gives their number at the end.
pub const MAX_STDERR_LINES: usize = 100;
/// Output problems reported per transaction.
const MAX_PROBLEMS: usize = 20;

/// Finds PROGRAM (in PATH when it has no slash) and checks it can run:
/// a missing or non-executable program is a startup error.
pub fn resolve(program: &Path) -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = if program.components().count() > 1 || program.is_absolute() {
        vec![program.to_path_buf()]
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join(program)).collect())
            .unwrap_or_default()
    };
    for c in &candidates {
        if let Ok(m) = std::fs::metadata(c) {
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                // Absolute: concertd may run from / once detached.
                return Ok(crate::config::start_dir().join(c));
            }
            return Err(format!("{} is not an executable file", c.display()));
        }
    }
    Err(format!("{}: no such program", program.display()))
}

pub struct Exec {
    program: PathBuf,
    args: Vec<String>,
    /// The running transaction, its process group, and the flag that says
    /// it was killed at transaction-timeout.
    running: Option<(u64, i32, Arc<AtomicBool>)>,
    spawn: crate::backend::Spawn,
}

impl Exec {
    pub fn new(program: &Path, args: &[String]) -> Result<Exec, String> {
        Ok(Exec {
            program: resolve(program)?,
            args: args.to_vec(),
            running: None,
            spawn: crate::backend::spawn_thread,
        })
    }
}

fn operation(op: Operation) -> &'static str {
    if op.occupies_terminal() {
        op.name()
    } else {
        // Answered by the worker itself, never handed to a backend.
        "other"
    }
}

/// What the program printed, read line by line.
#[derive(Default)]
struct Output {
    outcome: Option<Outcome>,
    ae: Option<String>,
    /// Any recognised key seen: from then on a failure is not a clean
    /// refusal but an outcome nobody knows.
    attempted: bool,
    /// Standard output went past `MAX_STDOUT`: an AE may have come after.
    cut: bool,
    problems: Vec<String>,
    /// Problems past `MAX_PROBLEMS`, only counted.
    more_problems: usize,
}

fn printable(v: &str, max: usize) -> bool {
    !v.is_empty() && v.len() <= max && v.bytes().all(|b| (0x20..0x7f).contains(&b))
}

impl Output {
    fn problem(&mut self, p: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(p);
        } else {
            self.more_problems += 1;
        }
    }

    /// A line longer than `MAX_LINE`, of which only the start was read.
    fn long_line(&mut self, start: &[u8]) {
        // It may have said how the payment went: nobody knows now.
        if start.contains(&b'=') {
            self.attempted = true;
        }
        self.problem(format!("a line longer than {MAX_LINE} bytes ignored"));
    }

    fn line(&mut self, id: u64, line: &str) {
        let Some((key, value)) = line.split_once('=') else {
            if !line.trim().is_empty() {
                let shown = pan::scrub_except(line.as_bytes(), id);
                self.problem(format!("not KEY=value: {shown}"));
            }
            return;
        };
        let key = key.trim();
        // The key too may hold a card number, or bytes that would forge a
        // log line: logs show it scrubbed.
        let shown = pan::scrub_except(key.as_bytes(), id);
        let mut value = value.trim_end().to_string();
        if key != "TICKET" {
            let mut bytes = value.clone().into_bytes();
            if pan::mask_except(&mut bytes, id) {
                log::warn!("tx {id}: the program printed a full card number in {shown}: masked");
                value = String::from_utf8_lossy(&bytes).into_owned();
            }
        }
        let o = self.outcome.get_or_insert_with(Outcome::approved);
        let ok = match key {
            "AE" => {
                let good = value == "10" || value == "01";
                if good {
                    self.ae = Some(value.clone());
                }
                good
            }
            "AF" => match Af::from_code(value.as_bytes()) {
                Some(af) if value.len() == 2 => {
                    o.status = Status::Declined(af);
                    true
                }
                _ => false,
            },
            "CB" if !value.is_empty()
                && value.len() <= 12
                && value.bytes().all(|b| b.is_ascii_digit()) =>
            {
                o.amount = Some(value.clone());
                true
            }
            "AC" if printable(&value, 10) => set(&mut o.auth, &value),
            "AA" if printable(&value, 64) => set(&mut o.pan, &value),
            "AB" if printable(&value, 4) => set(&mut o.expiry, &value),
            "AI" if printable(&value, 32) => set(&mut o.aid, &value),
            "CC" if printable(&value, 3) => set(&mut o.application, &value),
            "CI" if printable(&value, 1) => set(&mut o.read_mode, &value),
            "CG" if printable(&value, 10) => set(&mut o.contract, &value),
            // An empty ticket cannot be sent (an element holds 1 to 999
            // bytes): concertd makes its own instead.
            "TICKET" => match base64::decode(value.as_bytes()).filter(|d| !d.is_empty()) {
                Some(mut doc) => {
                    if pan::mask_except(&mut doc, id) {
                        log::warn!("tx {id}: the program's ticket held a full card number: masked");
                    }
                    o.document = Some(doc);
                    true
                }
                None => false,
            },
            "ATTEMPTED" => true,
            _ => false,
        };
        if ok {
            self.attempted = true;
        } else {
            self.problem(format!("{shown}: bad or unknown value ignored"));
        }
    }

    /// The outcome, from the exit status and what was read.
    fn outcome(mut self, id: u64, exit_ok: bool, why: &str) -> Outcome {
        for p in &self.problems {
            log::warn!("tx {id}: program output: {p}");
        }
        if self.more_problems > 0 {
            log::warn!(
                "tx {id}: program output: {} more problems not logged",
                self.more_problems
            );
        }
        match (exit_ok, self.ae.as_deref(), self.outcome.take()) {
            (true, Some(ae), Some(mut o)) => {
                if ae == "10" {
                    o.status = Status::Approved;
                } else if o.status == Status::Approved {
                    // AE=01 without AF: not performed, reason unknown.
                    o.status = Status::Declined(Af::Unknown);
                }
                o
            }
            // What came past the limit may have been the outcome, whatever
            // came before it: a decline could hide a payment made.
            _ if self.cut => {
                log::warn!(
                    "tx {id}: the program ended ({why}) without an AE in the first \
                     {MAX_STDOUT} bytes of its output: outcome unknown"
                );
                Outcome::declined(Af::NotEnded)
            }
            _ if self.attempted => {
                log::warn!("tx {id}: the program failed ({why}) after starting the payment: outcome unknown");
                Outcome::declined(Af::NotEnded)
            }
            _ => {
                log::warn!("tx {id}: the program failed ({why}) before the payment: declined");
                Outcome::declined(Af::Unknown)
            }
        }
    }
}

fn set(field: &mut Option<String>, v: &str) -> bool {
    *field = Some(v.to_string());
    true
}

/// Cuts a byte stream into lines, without their LF, in a buffer of at most
/// `max` bytes: a longer line comes out once, its first `max` bytes flagged
/// as cut, and the rest of it is dropped as it comes, up to its LF.
struct Lines {
    buf: Vec<u8>,
    max: usize,
    /// Inside a line already given out cut.
    skipping: bool,
    /// Bytes dropped that way.
    dropped: u64,
}

impl Lines {
    fn new(max: usize) -> Lines {
        Lines {
            buf: Vec::new(),
            max,
            skipping: false,
            dropped: 0,
        }
    }

    /// Calls `f(line, cut)` for each line ended, or cut, in `bytes`.
    fn feed(&mut self, mut bytes: &[u8], f: &mut impl FnMut(&[u8], bool)) {
        while !bytes.is_empty() {
            if self.skipping {
                let n = bytes.iter().position(|&b| b == b'\n');
                let skip = n.unwrap_or(bytes.len());
                self.dropped += skip as u64;
                if n.is_some() {
                    self.skipping = false;
                    bytes = &bytes[skip + 1..];
                } else {
                    return;
                }
                continue;
            }
            if self.buf.len() == self.max {
                // Full: the next byte tells whether the line was longer.
                if bytes[0] == b'\n' {
                    f(&self.buf, false);
                    bytes = &bytes[1..];
                } else {
                    f(&self.buf, true);
                    self.skipping = true;
                }
                self.buf.clear();
                continue;
            }
            let room = self.max - self.buf.len();
            let chunk = &bytes[..bytes.len().min(room)];
            match chunk.iter().position(|&b| b == b'\n') {
                Some(p) => {
                    self.buf.extend_from_slice(&chunk[..p]);
                    f(&self.buf, false);
                    self.buf.clear();
                    bytes = &bytes[p + 1..];
                }
                None => {
                    self.buf.extend_from_slice(chunk);
                    bytes = &bytes[chunk.len()..];
                }
            }
        }
    }

    /// Drops the line being read, which is not whole.
    fn abandon(&mut self) {
        self.dropped += self.buf.len() as u64;
        self.buf.clear();
        self.skipping = true;
    }

    /// The last line, when the output does not end with LF.
    fn finish(&mut self, f: &mut impl FnMut(&[u8], bool)) {
        if !self.buf.is_empty() {
            f(&self.buf, false);
            self.buf.clear();
        }
    }
}

/// Standard output, read into an `Output` as it comes, up to `MAX_STDOUT`;
/// the rest is read and counted.
struct Stdout {
    id: u64,
    lines: Lines,
    seen: usize,
    /// Bytes past `MAX_STDOUT`.
    ignored: u64,
    out: Output,
}

impl Stdout {
    fn new(id: u64) -> Stdout {
        Stdout {
            id,
            lines: Lines::new(MAX_LINE),
            seen: 0,
            ignored: 0,
            out: Output::default(),
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        let (take, rest) = bytes.split_at(bytes.len().min(MAX_STDOUT - self.seen));
        self.seen += take.len();
        let (id, out) = (self.id, &mut self.out);
        self.lines.feed(take, &mut |l, cut| {
            if cut {
                out.long_line(l)
            } else {
                out.line(id, &text(l))
            }
        });
        if rest.is_empty() {
            return;
        }
        if !self.out.cut {
            self.out.cut = true;
            // The line cut at the limit is not the program's value.
            self.lines.abandon();
            log::warn!(
                "tx {}: the program wrote more than {MAX_STDOUT} bytes on standard output: \
                 the rest is read and ignored",
                self.id
            );
        }
        self.ignored += rest.len() as u64;
    }

    fn finish(mut self) -> Output {
        let (id, out) = (self.id, &mut self.out);
        self.lines.finish(&mut |l, _| out.line(id, &text(l)));
        if self.ignored > 0 {
            log::warn!(
                "tx {id}: {} bytes of standard output past {MAX_STDOUT} ignored",
                self.ignored
            );
        }
        self.out
    }
}

/// Standard error, logged a line at a time as it comes, each cut at
/// `MAX_STDERR_LINE`, up to `MAX_STDERR_LINES` lines; the rest counted.
struct Stderr<'a> {
    id: u64,
    name: &'a str,
    lines: Lines,
    count: ErrCount,
}

#[derive(Default)]
struct ErrCount {
    logged: usize,
    /// Lines past `MAX_STDERR_LINES`.
    more: u64,
    /// Lines logged cut.
    cut: u64,
    /// Bytes read in all.
    total: u64,
}

impl Stderr<'_> {
    fn new(id: u64, name: &str) -> Stderr<'_> {
        Stderr {
            id,
            name,
            lines: Lines::new(MAX_STDERR_LINE + PAN_SPAN),
            count: ErrCount::default(),
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        let (id, name, count) = (self.id, self.name, &mut self.count);
        count.total += bytes.len() as u64;
        self.lines
            .feed(bytes, &mut |l, cut| log_stderr(id, name, count, l, cut));
    }

    fn finish(mut self) {
        let (id, name, count) = (self.id, self.name, &mut self.count);
        self.lines
            .finish(&mut |l, cut| log_stderr(id, name, count, l, cut));
        let mut what = Vec::new();
        if count.more > 0 {
            what.push(format!("{} more lines not logged", count.more));
        }
        if count.cut > 0 {
            what.push(format!("{} cut at {MAX_STDERR_LINE} bytes", count.cut));
        }
        if !what.is_empty() {
            log::warn!(
                "tx {id}: {name}: standard error: {} ({} bytes in all)",
                what.join(", "),
                count.total
            );
        }
    }
}

fn log_stderr(id: u64, name: &str, count: &mut ErrCount, line: &[u8], cut: bool) {
    if count.logged >= MAX_STDERR_LINES {
        count.more += 1;
        return;
    }
    count.logged += 1;
    let (text, cut) = stderr_text(id, line, cut);
    count.cut += u64::from(cut);
    log::info!("tx {id}: {name}: {text}");
    if count.logged == MAX_STDERR_LINES {
        log::warn!(
            "tx {id}: {name}: {MAX_STDERR_LINES} lines of standard error logged: \
             the rest counted, not logged"
        );
    }
}

/// Ends a line of standard error logged cut.
const CUT_MARK: &str = " [cut at 1024 bytes]";

/// A line of standard error as logged: masked whole, then cut, so that a
/// card number across the cut is masked too.
fn stderr_text(id: u64, line: &[u8], cut: bool) -> (String, bool) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut text = pan::scrub_except(line, id);
    let cut = cut || text.len() > MAX_STDERR_LINE;
    if cut {
        let mut end = MAX_STDERR_LINE.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(CUT_MARK);
    }
    (text, cut)
}

fn text(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    String::from_utf8_lossy(line).into_owned()
}

/// Reads one chunk from a pipe that poll(2) found ready; `None` closes it
/// (end of file, or an error that will not go away).
fn read_ready(pipe: &mut impl Read, buf: &mut [u8]) -> Option<usize> {
    loop {
        match pipe.read(buf) {
            Ok(0) => return None,
            Ok(n) => return Some(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
}

/// Reads the program's standard output and error until it has exited and
/// both pipes are closed, or `GRACE` after its exit, whichever comes first;
/// then closes them and reaps the program. One thread does it all, so that
/// a child the program left behind costs neither a thread nor a descriptor
/// once the transaction is over.
fn watch(
    id: u64,
    name: &str,
    mut child: Child,
    mut out_pipe: Option<ChildStdout>,
    mut err_pipe: Option<ChildStderr>,
) -> (Output, std::io::Result<ExitStatus>) {
    let mut stdout = Stdout::new(id);
    let mut stderr = Stderr::new(id, name);
    let mut status: Option<std::io::Result<ExitStatus>> = None;
    let mut grace_end: Option<Instant> = None;
    let mut buf = vec![0u8; 8192];
    while out_pipe.is_some() || err_pipe.is_some() {
        if status.is_none() {
            match child.try_wait() {
                Ok(None) => {}
                Ok(Some(st)) => status = Some(Ok(st)),
                Err(e) => status = Some(Err(e)),
            }
            if status.is_some() {
                grace_end = Some(Instant::now() + GRACE);
            }
        }
        let timeout = match grace_end {
            None => TICK_MS,
            Some(end) => {
                let left = end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                // Rounded up: poll(2) counts whole milliseconds.
                (left.as_micros().div_ceil(1000)).min(i32::MAX as u128) as i32
            }
        };
        let fd = |p: Option<i32>| libc::pollfd {
            fd: p.unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        };
        let mut fds = [
            fd(out_pipe.as_ref().map(AsRawFd::as_raw_fd)),
            fd(err_pipe.as_ref().map(AsRawFd::as_raw_fd)),
        ];
        // SAFETY: poll(2) on an array we own; a negative fd is skipped.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            log::error!("tx {id}: cannot wait for the output of {name}: {e}");
            break;
        }
        if fds[0].revents != 0 {
            match out_pipe.as_mut().and_then(|p| read_ready(p, &mut buf)) {
                Some(n) => stdout.feed(&buf[..n]),
                None => out_pipe = None,
            }
        }
        if fds[1].revents != 0 {
            match err_pipe.as_mut().and_then(|p| read_ready(p, &mut buf)) {
                Some(n) => stderr.feed(&buf[..n]),
                None => err_pipe = None,
            }
        }
    }
    if out_pipe.is_some() || err_pipe.is_some() {
        log::info!(
            "tx {id}: {name} has exited; a child of it still holds its output, no longer read"
        );
    }
    drop((out_pipe, err_pipe));
    // Pipes closed before the exit: the program is still running, and
    // transaction-timeout kills it if need be.
    let status = status.unwrap_or_else(|| child.wait());
    stderr.finish();
    (stdout.finish(), status)
}

/// The outcome from what was read and how the program ended, with the
/// partial-payment rule applied.
fn settle(id: u64, out: Output, exit_ok: bool, why: &str, request: &Request) -> Outcome {
    let outcome = out.outcome(id, exit_ok, why);
    crate::backend::amount_rule(id, "the program", outcome, request)
}

/// The outcome concertd takes from a program that printed `stdout` and
/// exited with status 0 (`exit_ok`) or otherwise, for `request`: what the
/// reading thread makes of the same bytes (for the fuzz target and tests).
pub fn outcome_of(id: u64, stdout: &[u8], exit_ok: bool, request: &Request) -> Outcome {
    let mut s = Stdout::new(id);
    s.feed(stdout);
    let why = if exit_ok { "exit 0" } else { "exit status: 1" };
    settle(id, s.finish(), exit_ok, why, request)
}

impl Backend for Exec {
    fn name(&self) -> &'static str {
        "exec"
    }

    fn start(&mut self, tx: &Transaction, done: Sender<Done>) {
        let r = &tx.request;
        let text = |t| r.frame.text(t).unwrap_or("").to_string();
        let flag = |b: bool| if b { "1" } else { "0" };
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .env("CONCERT_ID", tx.id.to_string())
            .env("CONCERT_OPERATION", operation(r.op))
            .env(
                "CONCERT_AMOUNT",
                r.amount.map(|a| a.to_string()).unwrap_or_default(),
            )
            .env("CONCERT_CURRENCY", text(tags::CE))
            .env("CONCERT_REGISTER", format!("{:02}", r.register))
            .env("CONCERT_PRIVATE", text(tags::CF))
            .env("CONCERT_TICKET", text(tags::CK))
            .env("CONCERT_FORCE_AUTH", flag(r.force_auth))
            .env("CONCERT_PARTIAL_OK", flag(r.partial_ok))
            .env("CONCERT_CHANNEL", tx.channel.to_string())
            .env(
                "CONCERT_RECEIPT_PHONE",
                r.receipt_phone.clone().unwrap_or_default(),
            )
            .env(
                "CONCERT_RECEIPT_EMAIL",
                r.receipt_email.clone().unwrap_or_default(),
            )
            .env("CONCERT_REFUND_OF", r.refund_of.clone().unwrap_or_default())
            .env(
                "CONCERT_FRAME",
                String::from_utf8_lossy(&r.frame.encode()).into_owned(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so that a time-out kills it and its children.
            .process_group(0);
        // concertd ignores SIGXFSZ for its journal; the program gets the
        // default disposition back, as any program expects.
        // SAFETY: signal(2) is async-signal-safe, as pre_exec requires.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGXFSZ, libc::SIG_DFL);
                Ok(())
            });
        }
        let id = tx.id;
        let request = tx.request.clone();
        let killed = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&killed);
        let name = self.program.display().to_string();
        // The thread that reads and reaps the program starts before the
        // program does: a thread that cannot start then leaves nothing run
        // and nobody to reap, and the refusal is definite.
        let (hand, handed) = bounded::<Child>(1);
        let late = done.clone();
        let spawned = (self.spawn)(
            std::thread::Builder::new().name("exec".into()),
            Box::new(move || {
                // The program could not run: `start` answered already.
                let Ok(mut child) = handed.recv() else {
                    return;
                };
                let (out_pipe, err_pipe) = (child.stdout.take(), child.stderr.take());
                let (out, status) = watch(id, &name, child, out_pipe, err_pipe);
                let (ok, why) = match status {
                    Ok(st) if st.success() => (true, "exit 0".to_string()),
                    Ok(st) => (false, st.to_string()),
                    Err(e) => (false, e.to_string()),
                };
                // Read after the reaping: a kill of ours, if any, is in the
                // status by now.
                if seen.load(Ordering::SeqCst) && !(ok && out.ae.is_some()) {
                    log::info!(
                        "tx {id}: the program ended ({why}) after transaction-timeout: \
                         its output resolves nothing"
                    );
                    return;
                }
                let outcome = settle(id, out, ok, &why, &request);
                // Answered AF07 at the timeout, yet it exited by itself with
                // an outcome: the worker takes it as the resolution.
                let _ = late.send(Done {
                    id,
                    outcome,
                    resolved: false,
                    note: None,
                });
            }),
        );
        if let Err(e) = spawned {
            crate::backend::decline_unstarted(id, &self.program.display().to_string(), &e, &done);
            return;
        }
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                log::error!("tx {id}: cannot run {}: {e}", self.program.display());
                // Dropping `hand` ends the waiting thread.
                let _ = done.send(Done {
                    id,
                    outcome: Outcome::declined(Af::Unknown),
                    resolved: false,
                    note: None,
                });
                return;
            }
        };
        self.running = Some((id, child.id() as i32, killed));
        let _ = hand.send(child);
    }

    fn abort(&mut self, id: u64) -> Outcome {
        if let Some((rid, pgid, killed)) = self.running.take() {
            if rid == id {
                killed.store(true, Ordering::SeqCst);
                // SAFETY: kill(2) on the process group we created.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
                log::warn!(
                    "tx {id}: {} killed at transaction-timeout",
                    self.program.display()
                );
            }
        }
        // Money may have moved: nobody knows.
        Outcome::declined(Af::NotEnded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(lines: &[&str], ok: bool) -> Outcome {
        let mut o = Output::default();
        for l in lines {
            o.line(1, l);
        }
        o.outcome(1, ok, "test")
    }

    #[test]
    fn approved_with_card_data_and_ticket() {
        let o = read(
            &[
                "AE=10",
                "AC=123456",
                "AA=497010######0674",
                "CC=001",
                "TICKET=SGVsbG8K",
            ],
            true,
        );
        assert_eq!(o.status, Status::Approved);
        assert_eq!(o.auth.as_deref(), Some("123456"));
        assert_eq!(o.document.as_deref(), Some(&b"Hello\n"[..]));
    }

    #[test]
    fn refusals_failures_and_unknowns() {
        assert_eq!(
            read(&["AE=01", "AF=04"], true).status,
            Status::Declined(Af::Refused)
        );
        assert_eq!(read(&["AE=01"], true).status, Status::Declined(Af::Unknown));
        // Nothing printed, or garbage, then a failure: a clean refusal.
        assert_eq!(read(&[], false).status, Status::Declined(Af::Unknown));
        assert_eq!(
            read(&["garbage"], true).status,
            Status::Declined(Af::Unknown)
        );
        // The payment had started: unknown.
        assert_eq!(
            read(&["ATTEMPTED=1"], false).status,
            Status::Declined(Af::NotEnded)
        );
        assert_eq!(
            read(&["AC=123456"], false).status,
            Status::Declined(Af::NotEnded)
        );
    }

    #[test]
    fn full_card_numbers_are_masked() {
        let o = read(&["AE=10", "AA=4970101234560674"], true);
        assert_eq!(o.pan.as_deref(), Some("497010######0674"));
    }

    #[test]
    fn grouped_card_numbers_are_masked_in_values_and_keys() {
        let o = read(&["AE=10", "AA=4970 1012 3456 0674"], true);
        assert_eq!(o.pan.as_deref(), Some("4970 10## #### 0674"));
        let o = read(&["AE=10", "AA=4970-1012-3456-0674"], true);
        assert_eq!(o.pan.as_deref(), Some("4970-10##-####-0674"));
        // What reaches the log of a bad line: neither the key nor the line
        // whole, nor a raw control byte.
        let mut out = Output::default();
        out.line(1, "4970 1012 3456 0674\x1b[2K=x");
        out.line(1, "pan 4970-1012-3456-0674\r");
        assert_eq!(
            out.problems,
            [
                "4970 10## #### 0674\\x1b[2K: bad or unknown value ignored",
                "not KEY=value: pan 4970-10##-####-0674\\x0d",
            ]
        );
    }

    #[test]
    fn the_transaction_id_is_no_card_number() {
        // 1796089883005 passes Luhn; printed back by the program, it stays.
        let mut out = Output::default();
        out.line(1_796_089_883_005, "AA=1796089883005");
        assert_eq!(
            out.outcome.and_then(|o| o.pan).as_deref(),
            Some("1796089883005")
        );
    }

    fn debit(extra: &str) -> Request {
        let raw = format!("CZ0040320CA00201CB0042500CD0010CE003978{extra}");
        crate::wire::request::parse(raw.as_bytes(), &[978]).unwrap()
    }

    #[test]
    fn an_empty_ticket_is_a_bad_value() {
        let o = read(&["AE=10", "TICKET="], true);
        assert_eq!((o.status, o.document), (Status::Approved, None));
        assert_eq!(read(&["AE=10", "TICKET=="], true).document, None);
    }

    #[test]
    fn long_lines_are_cut_once() {
        let mut lines = Lines::new(MAX_LINE);
        let mut got = Vec::new();
        let mut f = |l: &[u8], cut: bool| got.push((l.len(), cut));
        lines.feed(&[b'a'; 5000], &mut f);
        lines.feed(b"\nAE=10\r\n", &mut f);
        // A line of exactly the limit is whole.
        lines.feed(&[b'b'; MAX_LINE], &mut f);
        lines.feed(b"\nAC=1", &mut f);
        lines.finish(&mut f);
        assert_eq!(
            got,
            [(MAX_LINE, true), (6, false), (MAX_LINE, false), (4, false)]
        );
        assert_eq!(lines.dropped, 5000 - MAX_LINE as u64);
    }

    #[test]
    fn the_rest_of_a_long_line_is_not_a_key() {
        // Once read as a line of its own, and taken as the outcome.
        let mut out = vec![b'x'; MAX_LINE];
        out.extend_from_slice(b"AE=10\n");
        let o = outcome_of(1, &out, true, &debit(""));
        assert_eq!(o.status, Status::Declined(Af::Unknown));
        let mut out = b"TICKET=".to_vec();
        out.extend_from_slice(&[b'A'; MAX_LINE]);
        out.extend_from_slice(b"\nAE=10\n");
        let o = outcome_of(1, &out, true, &debit(""));
        assert_eq!((o.status, o.document), (Status::Approved, None));
    }

    #[test]
    fn crlf_lines_and_a_last_line_without_lf() {
        let o = outcome_of(1, b"AE=10\r\nAC=123456", true, &debit(""));
        assert_eq!(o.status, Status::Approved);
        assert_eq!(o.auth.as_deref(), Some("123456"));
    }

    #[test]
    fn standard_output_is_bounded() {
        let mut out = "X=1\n".repeat(MAX_STDOUT / 4 - 1).into_bytes();
        out.extend_from_slice(b"AE=10\n");
        let mut s = Stdout::new(1);
        s.feed(&out);
        // Read and counted, not kept.
        for _ in 0..1000 {
            s.feed(&[b'y'; 8192]);
        }
        assert!(s.lines.buf.capacity() <= 2 * MAX_LINE);
        assert_eq!(s.ignored, 2 + 1000 * 8192);
        let o = s.finish();
        // AE=10 straddles the limit: cut, so not taken.
        assert_eq!(o.ae, None);
        assert!(o.cut);
        assert_eq!(o.problems.len(), MAX_PROBLEMS);
        assert!(o.more_problems > 1000);
        assert!(o.problems[0].contains("X: bad or unknown value"));
    }

    #[test]
    fn an_ae_past_the_limit_is_an_unknown_outcome() {
        let flood = |line: &str, then: &str| {
            let mut out = line.repeat(2 * MAX_STDOUT / line.len()).into_bytes();
            out.extend_from_slice(then.as_bytes());
            out
        };
        let unknown = Status::Declined(Af::NotEnded);
        // Keys, then the outcome where it is no longer read.
        let o = outcome_of(1, &flood("X=1\n", "AE=10\nAC=1\n"), true, &debit(""));
        assert_eq!(o.status, unknown);
        let o = outcome_of(1, &flood("DEBUG=", "AE=10\n"), false, &debit(""));
        assert_eq!(o.status, unknown);
        // No key at all in what was kept: the AE past the limit may still
        // say a payment was made.
        let o = outcome_of(1, &flood("hello\n", "AE=10\n"), true, &debit(""));
        assert_eq!(o.status, unknown);
        // The outcome before the limit stands.
        let mut out = b"AE=10\nAC=123456\n".to_vec();
        out.extend_from_slice(&flood("X=1\n", "AE=01\n"));
        let o = outcome_of(1, &out, true, &debit(""));
        assert_eq!(o.status, Status::Approved);
        assert_eq!(o.auth.as_deref(), Some("123456"));
        // Exactly the limit is not past it.
        let mut out = "X=1\n".repeat(MAX_STDOUT / 4 - 2).into_bytes();
        out.extend_from_slice(b"AE=10\n\n\n");
        assert_eq!(out.len(), MAX_STDOUT);
        assert_eq!(
            outcome_of(1, &out, true, &debit("")).status,
            Status::Approved
        );
    }

    #[test]
    fn standard_error_is_bounded() {
        // Without a newline: one line, cut, the rest counted.
        let mut e = Stderr::new(1, "pay");
        for _ in 0..1000 {
            e.feed(&[b'e'; 8192]);
        }
        assert!(e.lines.buf.capacity() <= 2 * (MAX_STDERR_LINE + PAN_SPAN));
        let c = &e.count;
        assert_eq!((c.logged, c.more, c.cut, c.total), (1, 0, 1, 1000 * 8192));
        // Lines: the first ones logged, the others counted.
        e.feed(b"\n");
        for _ in 0..1000 {
            e.feed(b"a line\n");
        }
        let c = &e.count;
        assert_eq!(
            (c.logged, c.more),
            (MAX_STDERR_LINES, 1001 - MAX_STDERR_LINES as u64)
        );
        e.finish();
    }

    #[test]
    fn standard_error_lines_are_masked_then_cut() {
        assert_eq!(CUT_MARK, format!(" [cut at {MAX_STDERR_LINE} bytes]"));
        let text = |l: &[u8], cut| stderr_text(1, l, cut).0;
        assert_eq!(text(b"paying 1234\r", false), "paying 1234");
        // A card number across the cut shows no more than its first 6.
        let mut line = vec![b'x'; MAX_STDERR_LINE - 12];
        line.extend_from_slice(b"4970101234560674 more");
        let t = text(&line, false);
        assert!(t.ends_with(&format!("x497010######{CUT_MARK}")), "{t}");
        let long = vec![b'y'; MAX_STDERR_LINE + PAN_SPAN];
        let t = text(&long, true);
        assert_eq!(t.len(), MAX_STDERR_LINE + CUT_MARK.len());
    }

    #[test]
    fn partial_amounts_only_when_allowed() {
        // A smaller amount the register did not allow, or a larger one:
        // what was charged contradicts the request, so nobody knows.
        let o = outcome_of(1, b"AE=10\nCB=1000\n", true, &debit(""));
        assert_eq!(o.status, Status::Declined(Af::NotEnded));
        let o = outcome_of(1, b"AE=10\nCB=1000\n", true, &debit("BF0011"));
        assert_eq!(o.status, Status::Approved);
        assert_eq!(o.amount.as_deref(), Some("1000"));
        let o = outcome_of(1, b"AE=10\nCB=3000\n", true, &debit("BF0011"));
        assert_eq!(o.status, Status::Declined(Af::NotEnded));
        // A refusal's CB is the request's.
        let o = outcome_of(1, b"AE=01\nAF=04\nCB=1000\n", true, &debit(""));
        assert_eq!((o.status, o.amount), (Status::Declined(Af::Refused), None));
        // Found by the backend_output fuzz target: the whole amount written
        // otherwise was sent as another CB.
        let o = outcome_of(1, b"AE=10\nCB=02500\n", true, &debit("BF0011"));
        assert_eq!(o.amount, None);
    }

    #[test]
    fn programs_are_checked() {
        assert!(resolve(Path::new("sh")).is_ok());
        assert!(resolve(Path::new("/nonexistent/pay")).is_err());
        assert!(resolve(Path::new("/etc/passwd"))
            .unwrap_err()
            .contains("not an executable"));
    }

    /// A thread that cannot start: the program never runs, and the
    /// transaction is declined at once instead of waiting for
    /// transaction-timeout.
    #[test]
    fn a_thread_that_cannot_start_runs_nothing_and_declines() {
        let dir = std::env::temp_dir().join(format!("concertd-exec-spawn-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ran = dir.join("ran");
        let prog = dir.join("pay");
        std::fs::write(
            &prog,
            format!("#!/bin/sh\ntouch {}\necho AE=10\n", ran.display()),
        )
        .unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut e = Exec::new(&prog, &[]).unwrap();
        e.spawn = |_, _| Err(std::io::Error::other("no threads left"));
        let (done, finished) = crossbeam_channel::unbounded();
        let tx = Transaction {
            id: 7,
            request: debit(""),
            channel: crate::terminal::worker::Channel::Tcp,
            original: None,
        };
        e.start(&tx, done);
        let d = finished.try_recv().expect("an answer at once");
        assert_eq!(d.id, 7);
        assert_eq!(d.outcome, Outcome::declined(Af::Unknown));
        assert!(finished.try_recv().is_err());
        assert!(!ran.exists(), "the program ran");
        assert!(e.running.is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
