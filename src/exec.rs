//! `terminal exec PROGRAM [ARGS...]`: a payment application plugged in as
//! a program. For each transaction concertd runs it in its own process
//! group with the request in the environment, and reads the outcome from
//! its standard output as `KEY=value` lines.

use crate::answer::{Af, Outcome, Status};
use crate::backend::{Backend, Done, Transaction};
use crate::base64;
use crate::pan;
use crate::request::Operation;
use crate::tlv::tags;
use crossbeam_channel::Sender;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Longest line read from the program.
const MAX_LINE: usize = 4096;

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
    /// The running transaction and its process group.
    running: Option<(u64, i32)>,
}

impl Exec {
    pub fn new(program: &Path, args: &[String]) -> Result<Exec, String> {
        Ok(Exec {
            program: resolve(program)?,
            args: args.to_vec(),
            running: None,
        })
    }
}

fn operation(op: Operation) -> &'static str {
    match op {
        Operation::Debit => "debit",
        Operation::Credit => "credit",
        Operation::Cancel => "cancel",
        Operation::Print => "print",
        Operation::Telecollect => "telecollection",
        // Answered by the worker itself, never handed to a backend.
        Operation::Duplicata | Operation::Identify | Operation::Status => "other",
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
    problems: Vec<String>,
}

fn printable(v: &str, max: usize) -> bool {
    !v.is_empty() && v.len() <= max && v.bytes().all(|b| (0x20..0x7f).contains(&b))
}

impl Output {
    fn line(&mut self, id: u64, line: &str) {
        let Some((key, value)) = line.split_once('=') else {
            if !line.trim().is_empty() {
                self.problems
                    .push(format!("not KEY=value: {}", pan::scrub(line.as_bytes())));
            }
            return;
        };
        let key = key.trim();
        let mut value = value.trim_end().to_string();
        if key != "TICKET" {
            let mut bytes = value.clone().into_bytes();
            if pan::mask_in_place(&mut bytes) {
                log::warn!("tx {id}: the program printed a full card number in {key}: masked");
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
            "TICKET" => match base64::decode(value.as_bytes()) {
                Some(mut doc) => {
                    if pan::mask_in_place(&mut doc) {
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
            self.problems
                .push(format!("{key}: bad or unknown value ignored"));
        }
    }

    /// The outcome, from the exit status and what was read.
    fn outcome(mut self, id: u64, exit_ok: bool, why: &str) -> Outcome {
        for p in &self.problems {
            log::warn!("tx {id}: program output: {p}");
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
            .env("CONCERT_CHANNEL", &tx.channel)
            .env(
                "CONCERT_FRAME",
                String::from_utf8_lossy(&r.frame.encode()).into_owned(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so that a time-out kills it and its children.
            .process_group(0);
        let id = tx.id;
        let (partial_ok, requested) = (r.partial_ok, r.amount);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                log::error!("tx {id}: cannot run {}: {e}", self.program.display());
                let _ = done.send(Done {
                    id,
                    outcome: Outcome::declined(Af::Unknown),
                    resolved: false,
                    note: None,
                });
                return;
            }
        };
        self.running = Some((id, child.id() as i32));
        let name = self.program.display().to_string();
        if let Some(err) = child.stderr.take() {
            let name = name.clone();
            let _ = std::thread::Builder::new()
                .name("exec-stderr".into())
                .spawn(move || {
                    for line in BufReader::new(err).lines().map_while(Result::ok) {
                        log::info!("tx {id}: {name}: {}", pan::scrub(line.as_bytes()));
                    }
                });
        }
        let stdout = child.stdout.take();
        let spawned = std::thread::Builder::new()
            .name("exec".into())
            .spawn(move || {
                let mut out = Output::default();
                if let Some(s) = stdout {
                    let mut reader = BufReader::new(s);
                    let mut buf = Vec::new();
                    loop {
                        buf.clear();
                        match (&mut reader)
                            .take(MAX_LINE as u64)
                            .read_until(b'\n', &mut buf)
                        {
                            Ok(0) | Err(_) => break,
                            Ok(_) => out.line(
                                id,
                                String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']),
                            ),
                        }
                    }
                }
                let (ok, why) = match child.wait() {
                    Ok(st) if st.success() => (true, "exit 0".to_string()),
                    Ok(st) => (false, st.to_string()),
                    Err(e) => (false, e.to_string()),
                };
                let mut outcome = out.outcome(id, ok, &why);
                // A smaller amount only when the register accepts partial
                // payment; never a larger one.
                let cb = outcome
                    .amount
                    .as_deref()
                    .and_then(|a| a.parse::<u64>().ok());
                if let Some(cb) = cb {
                    if !partial_ok || requested.is_some_and(|r| cb > r) {
                        log::warn!(
                            "tx {id}: the program's CB={cb} ignored (partial payment not accepted)"
                        );
                        outcome.amount = None;
                    }
                }
                let _ = done.send(Done {
                    id,
                    outcome,
                    resolved: false,
                    note: None,
                });
            });
        if let Err(e) = spawned {
            log::error!("tx {id}: cannot start a thread for {name}: {e}");
        }
    }

    fn abort(&mut self, id: u64) -> Outcome {
        if let Some((rid, pgid)) = self.running.take() {
            if rid == id {
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
    fn programs_are_checked() {
        assert!(resolve(Path::new("sh")).is_ok());
        assert!(resolve(Path::new("/nonexistent/pay")).is_err());
        assert!(resolve(Path::new("/etc/passwd"))
            .unwrap_err()
            .contains("not an executable"));
    }
}
