//! The documentation's examples run. Each `console` block of README.md,
//! and each example in a man page's EXAMPLES that starts with a `$ `
//! prompt and shows output, is run command by command, in one shell per
//! document, against a fresh concertd; what each command prints is
//! compared with the lines shown under it.
//!
//! - What varies from run to run (authorisation numbers, cards, dates,
//!   transaction ids, the machine id) is matched by pattern: VARYING. A
//!   transaction id an example shows and a later command uses is the one
//!   the run printed.
//! - What a test machine lacks is substituted, and each substitution used
//!   is printed: port 8888 is the test daemon's port, /dev/ttyUSB0 is one
//!   end of a pty pair whose other end the daemon serves, hosts are
//!   loopback, the installed binaries are the build's. README.md's own
//!   `export PATH="$PWD/target/debug:$PATH"` finds them: the shell runs in
//!   a directory whose `target` is the build directory.
//! - A block that assumes a configuration (CONFIGS) or what came before it
//!   (SETUPS: a day's trade, a transaction running) gets it from the
//!   test, which prints what it did.
//! - A line `...` shown in an example stands for any number of lines.
//! - A block the test cannot run has a marker on the line before it, with
//!   the reason, which the test prints: `<!-- not run: REASON -->` in
//!   README.md, `.\" not run: REASON` in a page. Examples of a page whose
//!   commands show no output are not run either, and printed as such.
//!
//! A failure names the block, the line and what was expected and got, for
//! every block that failed, so that an output changed on purpose is quick
//! to carry into the documentation.

use crate::serial::{pty, relay, TIMERS};
use crate::util::*;
use regex::Regex;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// What varies from run to run: a name, a pattern whose first group finds
/// the varying part in an example's line, and the pattern the output must
/// show in its place. Only transaction ids are carried into later
/// commands (`concert refund -m ID`).
const VARYING: &[(&str, &str, &str)] = &[
    ("authorisation", r"authorisation +(\d{6})", r"\d{6}"),
    ("authorisation", r"AUTORISATION : (\d{6})", r"\d{6}"),
    ("authorisation", r"AC006(\d{6})", r"\d{6}"),
    ("card", r"(\d{6}#{6}\d{4})", r"\d{6}#{6}\d{4}"),
    ("card's AID", r"(A0000000\d{6})", r"A0000000\d{6}"),
    ("expiry", r"expiry \(YYMM\) +(\d{4})", r"\d{4}"),
    ("expiry", r"AB004(\d{4})", r"\d{4}"),
    (
        "time",
        r"(\d\d/\d\d/\d{4} \d\d:\d\d:\d\d)",
        r"\d\d/\d\d/\d{4} \d\d:\d\d:\d\d",
    ),
    (
        "time",
        r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)",
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d",
    ),
    ("date", r"\b(\d{4}-\d\d-\d\d)\b", r"\d{4}-\d\d-\d\d"),
    ("transaction id", r"\b(\d{13})\b", r"\d{13}"),
    (
        "machine id",
        r#"first 20 characters: "([^"]*)""#,
        r#"[ -~]{1,20}"#,
    ),
];

/// Blocks that need a daemon configured otherwise than their document's:
/// the file, a command of the block, the configuration lines.
const CONFIGS: &[(&str, &str, &str)] = &[(
    "man/concert.1",
    "concert refund -m",
    "answer-extensions payxpert\nserial-number TERM-0042\n",
)];

/// What some blocks assume, made before them and undone after: the
/// commands run there (printed, their output not compared, their status
/// 0), in the block's shell with its substitutions.
struct Setup {
    file: &'static str,
    /// A command of the block.
    block_has: &'static str,
    before: &'static [&'static str],
    after: &'static [&'static str],
}

const SETUPS: &[Setup] = &[
    // The day's trade whose totals the block shows.
    Setup {
        file: "man/concertctl.8",
        block_has: "concertctl totals",
        before: &[
            "concert pay 20.00",
            "concert pay 13.60",
            "concert pay 12.00",
            "concert cancel 12.00",
            "concert -r 2 pay 30.00",
            "concert -r 2 pay 10.10",
            "concert -r 2 refund 10.00",
            "concert -r 2 refund 20.00",
        ],
        after: &[],
    },
    // A transaction running on TCP, held at the keypad, while the block's
    // serial request comes.
    Setup {
        file: "man/concert.1",
        block_has: "the terminal is busy",
        before: &[
            "concertctl hold on",
            "concert pay 1.00 >/dev/null &",
            // Polled, for at most 30 s: the shell cannot read the log.
            "i=0; until concertctl status | grep -q '^running: tx'; do \
             i=$((i + 1)); [ $i -le 600 ] || break; sleep 0.05; done; \
             concertctl status | grep -q '^running: tx'",
        ],
        after: &["concertctl decide approve", "wait", "concertctl hold off"],
    },
];

/// One command of an example, and the lines shown under it with their
/// line numbers in the file.
struct Cmd {
    line: usize,
    text: String,
    shown: Vec<(usize, String)>,
}

struct Block {
    /// Line of the block's first command.
    line: usize,
    not_run: Option<String>,
    cmds: Vec<Cmd>,
}

fn commands(body: &[(usize, String)]) -> Vec<Cmd> {
    let mut cmds: Vec<Cmd> = Vec::new();
    for (n, l) in body {
        if let Some(c) = l.strip_prefix("$ ") {
            cmds.push(Cmd {
                line: *n,
                text: c.to_string(),
                shown: Vec::new(),
            });
        } else if let Some(c) = cmds.last_mut() {
            c.shown.push((*n, l.clone()));
        } else {
            panic!("line {n}: output before the first `$ ` command: {l:?}");
        }
    }
    cmds
}

/// The reason a marker line gives, if it is one.
fn marker(line: &str, open: &str, close: &str) -> Option<String> {
    let r = line.trim().strip_prefix(open)?.strip_suffix(close)?;
    Some(r.trim().to_string())
}

fn readme_blocks(text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_end() == "```console" {
            let not_run = i
                .checked_sub(1)
                .and_then(|p| marker(lines[p], "<!-- not run:", "-->"));
            let mut body = Vec::new();
            i += 1;
            while i < lines.len() && !lines[i].starts_with("```") {
                body.push((i + 1, lines[i].to_string()));
                i += 1;
            }
            let cmds = commands(&body);
            out.push(Block {
                line: cmds.first().map_or(i, |c| c.line),
                not_run,
                cmds,
            });
        }
        i += 1;
    }
    out
}

/// The text mdoc shows for a line of a literal display.
fn unescape(l: &str) -> String {
    l.replace("\\&", "")
        .replace("\\(dq", "\"")
        .replace("\\(aq", "'")
        .replace("\\-", "-")
        .replace("\\e", "\\")
}

/// The literal displays of a page's EXAMPLES that start with `$ `.
fn page_blocks(text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let Some(start) = lines.iter().position(|l| *l == ".Sh EXAMPLES") else {
        return Vec::new();
    };
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.starts_with(".Sh "))
        .map_or(lines.len(), |p| start + 1 + p);
    let mut out = Vec::new();
    let mut i = start;
    while i < end {
        if lines[i].starts_with(".Bd -literal") {
            let not_run = marker(lines[i - 1], ".\\\" not run:", "");
            let mut body = Vec::new();
            i += 1;
            while i < end && lines[i] != ".Ed" {
                body.push((i + 1, unescape(lines[i])));
                i += 1;
            }
            if body.first().is_some_and(|(_, l)| l.starts_with("$ ")) {
                let cmds = commands(&body);
                let not_run = not_run.or_else(|| {
                    cmds.iter()
                        .all(|c| c.shown.is_empty())
                        .then(|| "shows no output".to_string())
                });
                out.push(Block {
                    line: body[0].0,
                    not_run,
                    cmds,
                });
            }
        }
        i += 1;
    }
    out
}

/// A shell that runs one command at a time and says where its output
/// ends, so that `export` and `$?` carry from one command to the next.
struct Shell {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

/// The line that ends a command's output, followed by its status.
const END: &str = "@@concertd-example-end@@";

impl Shell {
    fn start(cwd: &Path, path: &str) -> Shell {
        let mut child = {
            let _g = SPAWN.lock().unwrap_or_else(|p| p.into_inner());
            Command::new("sh")
                .current_dir(cwd)
                .env("PATH", path)
                .env_remove("RUST_LOG")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("sh")
        };
        let mut stdin = child.stdin.take().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(out);
            let mut buf = Vec::new();
            while r.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                let l = String::from_utf8_lossy(&buf);
                if tx.send(l.trim_end_matches('\n').to_string()).is_err() {
                    break;
                }
                buf.clear();
            }
        });
        writeln!(stdin, "exec 2>&1; s=0").unwrap();
        Shell {
            child,
            stdin,
            lines,
        }
    }

    /// What the command printed, standard output and error together, a
    /// line each, and its exit status.
    fn run(&mut self, cmd: &str) -> Result<(Vec<String>, i32), String> {
        // `(exit $s)` gives the command the status of the one before, for
        // `echo $?`; the braces keep our input from its standard input.
        writeln!(
            self.stdin,
            "(exit $s); {{ {cmd}\n}} </dev/null; s=$?; printf '\\n%s %d\\n' '{END}' $s"
        )
        .map_err(|e| format!("the shell is gone: {e}"))?;
        let mut out = Vec::new();
        let status = loop {
            match self.lines.recv_timeout(PATIENCE) {
                Ok(l) if l.starts_with(END) => {
                    break l[END.len()..].trim().parse().unwrap_or(-1);
                }
                Ok(l) => out.push(l),
                Err(_) => {
                    return Err(format!(
                        "no end within {PATIENCE:?}; printed so far: {out:?}"
                    ))
                }
            }
        };
        // The line printf began: the output's last newline, or none.
        if out.last().is_some_and(|l| l.is_empty()) {
            out.pop();
        }
        Ok((out, status))
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A shown line as a pattern: literal but for its varying parts, each a
/// group, named.
fn pattern(shown: &str, varying: &[(&str, Regex, &str)]) -> (Regex, Vec<(&'static str, String)>) {
    let mut spans: Vec<(usize, usize, usize)> = Vec::new();
    for (k, (_, find, _)) in varying.iter().enumerate() {
        for c in find.captures_iter(shown) {
            let g = c.get(1).unwrap();
            if !spans.iter().any(|s| g.start() < s.1 && s.0 < g.end()) {
                spans.push((g.start(), g.end(), k));
            }
        }
    }
    spans.sort();
    let mut re = String::from("^");
    let mut at = 0;
    let mut names = Vec::new();
    for (s, e, k) in spans {
        re.push_str(&regex::escape(&shown[at..s]));
        re.push('(');
        re.push_str(varying[k].2);
        re.push(')');
        names.push((VARYING[k].0, shown[s..e].to_string()));
        at = e;
    }
    re.push_str(&regex::escape(&shown[at..]));
    re.push('$');
    (Regex::new(&re).unwrap(), names)
}

/// A line of the output that does not match, or is missing or extra.
struct Mismatch {
    /// The shown line (its number and text), None past the last one.
    shown: Option<(usize, String)>,
    got: Option<String>,
}

/// Compares what a command printed with the lines shown (`...` any lines);
/// the transaction ids it printed where the example shows others.
fn compare(
    shown: &[(usize, String)],
    got: &[String],
    varying: &[(&str, Regex, &str)],
) -> Result<Vec<(String, String)>, Mismatch> {
    let Some(((n, first), rest)) = shown.split_first() else {
        return match got.first() {
            None => Ok(Vec::new()),
            Some(g) => Err(Mismatch {
                shown: None,
                got: Some(g.clone()),
            }),
        };
    };
    if first.trim() == "..." {
        if rest.is_empty() {
            return Ok(Vec::new());
        }
        // The first place where the rest matches; else the mismatch of
        // the attempt that went furthest.
        let mut worst: Option<Mismatch> = None;
        for skip in 0..=got.len() {
            match compare(rest, &got[skip..], varying) {
                Ok(b) => return Ok(b),
                Err(m) => {
                    let further = |m: &Mismatch| m.shown.as_ref().map_or(usize::MAX, |s| s.0);
                    if worst.as_ref().is_none_or(|w| further(&m) > further(w)) {
                        worst = Some(m);
                    }
                }
            }
        }
        return Err(worst.unwrap());
    }
    let mismatch = |g: Option<&String>| Mismatch {
        shown: Some((*n, first.clone())),
        got: g.cloned(),
    };
    let Some((g, got_rest)) = got.split_first() else {
        return Err(mismatch(None));
    };
    let (re, names) = pattern(first, varying);
    let Some(c) = re.captures(g) else {
        return Err(mismatch(Some(g)));
    };
    let mut ids = compare(rest, got_rest, varying)?;
    for (i, (name, was)) in names.into_iter().enumerate() {
        let now = &c[i + 1];
        if name == "transaction id" && was != now {
            ids.push((was, now.to_string()));
        }
    }
    Ok(ids)
}

/// A daemon an example runs against, with the pty pair of its serial
/// line.
struct Terminal {
    d: Daemon,
    /// The register's end of the serial line.
    tty: PathBuf,
    _relay: crate::serial::Relay,
}

impl Terminal {
    fn start(extra: &str) -> Terminal {
        let dir = temp_dir();
        let (tpe, ecr) = (dir.join("ttyTPE"), dir.join("ttyECR"));
        let relay = relay(pty(&tpe), pty(&ecr));
        let d = Daemon::start(&format!(
            "control @DIR@/control.sock\nserial {}\n{TIMERS}\n{extra}",
            tpe.display()
        ));
        d.wait_log(": open, 9600 baud 7E1");
        Terminal {
            d,
            tty: ecr,
            _relay: relay,
        }
    }

    /// The command as it runs here, and what was substituted.
    /// The command as it runs here, what was substituted, and what to
    /// put back in its output (the pty's name, the device's).
    fn substitute(&self, cmd: &str) -> (String, Vec<String>, Vec<(String, String)>) {
        let mut c = cmd.to_string();
        let mut said = Vec::new();
        let mut back = Vec::new();
        let tty = Regex::new(r"/dev/ttyUSB\d+").unwrap();
        if let Some(dev) = tty.find(&c).map(|m| m.as_str().to_string()) {
            let pty = self.tty.display().to_string();
            c = tty.replace_all(&c, pty.as_str()).into_owned();
            said.push("/dev/ttyUSBn: a pty pair's end, the other served by the daemon".to_string());
            back.push((pty, dev));
        }
        let host = Regex::new(r"-h \d+\.\d+\.\d+\.\d+").unwrap();
        if host.is_match(&c) {
            c = host.replace_all(&c, "-h 127.0.0.1").into_owned();
            said.push("-h HOST: 127.0.0.1, tests use loopback only".to_string());
        }
        // Where the shell takes a word as a command's name.
        let tool = Regex::new(r"(^|[|;&]\s*|\b(?:until|while|do|then|if)\s+)(concertctl|concert) ")
            .unwrap();
        let port = self.d.port();
        let sock = self.d.control_socket().display().to_string();
        let mut said_port = false;
        let mut said_sock = false;
        c = tool
            .replace_all(&c, |m: &regex::Captures| {
                if &m[2] == "concert" {
                    said_port = true;
                    format!("{}concert -p {port} ", &m[1])
                } else {
                    said_sock = true;
                    format!("{}concertctl -s {sock} ", &m[1])
                }
            })
            .into_owned();
        if said_port {
            said.push("port 8888: the test daemon's".to_string());
        }
        if said_sock {
            said.push("the control socket: the test daemon's".to_string());
        }
        (c, said, back)
    }
}

/// Runs what a block assumes (`when` it runs: before, after); what failed.
fn prepare(
    sh: &mut Shell,
    t: &Terminal,
    at: &str,
    cmds: &[&str],
    when: &str,
) -> Result<(), String> {
    for cmd in cmds {
        println!("{at}: {when} the block: {cmd}");
        match sh.run(&t.substitute(cmd).0) {
            Ok((_, 0)) => {}
            Ok((out, s)) => {
                return Err(format!(
                    "{at}: {when} the block, `{cmd}` exited {s}: {out:?}"
                ))
            }
            Err(e) => return Err(format!("{at}: {when} the block, `{cmd}`: {e}")),
        }
    }
    Ok(())
}

/// Runs the blocks of a file; the failures, each naming its block and
/// line. `path` is the shell's PATH; `extra` configures the daemon.
fn run_file(file: &str, blocks: &[Block], path: &str, cwd: &Path) -> Vec<String> {
    let varying: Vec<(&str, Regex, &str)> = VARYING
        .iter()
        .map(|(n, f, c)| (*n, Regex::new(f).unwrap(), *c))
        .collect();
    let main = Terminal::start("");
    let mut sh = Shell::start(cwd, path);
    let mut ids: Vec<(String, String)> = Vec::new();
    let mut failures = Vec::new();
    let mut substituted: Vec<String> = Vec::new();
    let (mut run, mut not_run) = (0, 0);
    for b in blocks {
        let first = b.cmds.first().map_or("", |c| c.text.as_str());
        if let Some(why) = &b.not_run {
            println!("{file}:{}: `$ {first}`: not run: {why}", b.line);
            not_run += 1;
            continue;
        }
        run += 1;
        let own = CONFIGS
            .iter()
            .find(|(f, has, _)| *f == file && b.cmds.iter().any(|c| c.text.contains(has)))
            .map(|(_, _, extra)| {
                println!("{file}:{}: run against a daemon with:\n{extra}", b.line);
                Terminal::start(extra)
            });
        let t = own.as_ref().unwrap_or(&main);
        let setup = SETUPS.iter().find(|s| {
            s.file == file
                && b.cmds.iter().any(|c| {
                    c.text.contains(s.block_has)
                        || c.shown.iter().any(|l| l.1.contains(s.block_has))
                })
        });
        let at = format!("{file}:{}", b.line);
        let before = setup.map_or(&[][..], |s| s.before);
        if let Err(e) = prepare(&mut sh, t, &at, before, "before") {
            // The shell may be in the middle of it: nothing more runs.
            failures.push(e);
            return failures;
        }
        for c in &b.cmds {
            let mut text = c.text.clone();
            for (was, now) in &ids {
                text = text.replace(was, now);
            }
            let (text, said, back) = t.substitute(&text);
            for s in said {
                if !substituted.contains(&s) {
                    substituted.push(s);
                }
            }
            let got = match sh.run(&text) {
                Ok((g, _)) => g
                    .into_iter()
                    .map(|l| back.iter().fold(l, |l, (pty, dev)| l.replace(pty, dev)))
                    .collect::<Vec<_>>(),
                Err(e) => {
                    failures.push(format!(
                        "{file}:{}: `$ {}`: {e}; the daemon's last log lines:\n{}",
                        c.line,
                        c.text,
                        t.d.log_tail(20)
                    ));
                    return failures;
                }
            };
            let shown: Vec<(usize, String)> = c
                .shown
                .iter()
                .map(|(n, l)| {
                    let l = ids
                        .iter()
                        .fold(l.clone(), |l, (was, now)| l.replace(was, now));
                    (*n, l)
                })
                .collect();
            match compare(&shown, &got, &varying) {
                Ok(new) => ids.extend(new),
                Err(m) => {
                    let at = match &m.shown {
                        Some((n, l)) => format!("{file}:{n}: expected `{l}`"),
                        None => format!("{file}: past the last line shown, expected nothing more"),
                    };
                    let got_line = match &m.got {
                        Some(g) => format!("got `{g}`"),
                        None => "got nothing more".to_string(),
                    };
                    failures.push(format!(
                        "block at {file}:{}, `$ {}` (run as `{text}`):\n  {at}\n  {got_line}\n  \
                         the whole output:\n{}",
                        b.line,
                        c.text,
                        got.iter().map(|l| format!("    {l}\n")).collect::<String>()
                    ));
                    // The rest of the block builds on this command.
                    break;
                }
            }
        }
        let after = setup.map_or(&[][..], |s| s.after);
        if let Err(e) = prepare(&mut sh, t, &at, after, "after") {
            failures.push(e);
            return failures;
        }
    }
    println!("{file}: {run} blocks run, {not_run} not run");
    for s in substituted {
        println!("{file}: substituted: {s}");
    }
    failures
}

/// A directory for the shell: `target` is the build directory, as in a
/// checkout.
fn shell_dir() -> PathBuf {
    let dir = temp_dir();
    let build = Path::new(CONCERT).parent().unwrap().parent().unwrap();
    std::os::unix::fs::symlink(build, dir.join("target")).unwrap();
    dir
}

fn report(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} example(s) do not match what runs:\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_readme_console_blocks_run_as_shown() {
    let text = std::fs::read_to_string(format!("{ROOT}/README.md")).unwrap();
    let blocks = readme_blocks(&text);
    assert!(blocks.len() >= 5, "README.md's console blocks parsed wrong");
    let path = std::env::var("PATH").unwrap_or_default();
    // The README's own `export PATH=...` must find the binaries.
    report(run_file("README.md", &blocks, &path, &shell_dir()));
}

#[test]
fn the_man_pages_examples_run_as_shown() {
    let bin = Path::new(CONCERT).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    println!("PATH: the build's binaries first, as if installed");
    let mut failures = Vec::new();
    let mut pages: Vec<PathBuf> = std::fs::read_dir(format!("{ROOT}/man"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    pages.sort();
    let mut ran = 0;
    for p in pages {
        let file = format!("man/{}", p.file_name().unwrap().to_string_lossy());
        let blocks = page_blocks(&std::fs::read_to_string(&p).unwrap());
        if blocks.iter().all(|b| b.not_run.is_some()) {
            for b in &blocks {
                let first = b.cmds.first().map_or("", |c| c.text.as_str());
                println!(
                    "{file}:{}: `$ {first}`: not run: {}",
                    b.line,
                    b.not_run.as_deref().unwrap_or("")
                );
            }
            continue;
        }
        ran += blocks.iter().filter(|b| b.not_run.is_none()).count();
        let cwd = shell_dir();
        // `concertd -n -f concertd.conf` checks the sample a reader has.
        std::fs::copy(
            format!("{ROOT}/etc/concertd.conf"),
            cwd.join("concertd.conf"),
        )
        .unwrap();
        println!("{file}: concertd.conf: a copy of etc/concertd.conf");
        failures.extend(run_file(&file, &blocks, &path, &cwd));
    }
    assert!(ran >= 5, "man pages' examples parsed wrong: {ran} run");
    report(failures);
}

#[test]
fn a_changed_output_fails_with_its_block_and_line() {
    // The harness itself: a shown line that differs, one missing and one
    // extra each name the line; varying parts and `...` match.
    let varying: Vec<(&str, Regex, &str)> = VARYING
        .iter()
        .map(|(n, f, c)| (*n, Regex::new(f).unwrap(), *c))
        .collect();
    let shown = |ls: &[&str]| -> Vec<(usize, String)> {
        ls.iter()
            .enumerate()
            .map(|(i, l)| (10 + i, l.to_string()))
            .collect()
    };
    let got = |ls: &[&str]| -> Vec<String> { ls.iter().map(|l| l.to_string()).collect() };
    let ex = shown(&[
        "approved: debit 12.34 EUR, register 01",
        "  authorisation  588871",
        "  card           400000######0002",
        "...",
        "  transaction    1796098000001",
    ]);
    let ids = compare(
        &ex,
        &got(&[
            "approved: debit 12.34 EUR, register 01",
            "  authorisation  123456",
            "  card           513100######4242",
            "  expiry (YYMM)  2905",
            "  transaction    1796551204001",
        ]),
        &varying,
    )
    .unwrap_or_else(|m| panic!("{:?} {:?}", m.shown, m.got));
    assert_eq!(
        ids,
        [("1796098000001".to_string(), "1796551204001".to_string())]
    );
    let m = compare(
        &ex,
        &got(&[
            "approved: debit 12.34 EUR, register 01",
            "  authorisation  123456",
            "  card           513100######4242",
            "  transaction    see above",
        ]),
        &varying,
    )
    .err()
    .unwrap();
    assert_eq!(m.shown.map(|s| s.0), Some(14));
    assert_eq!(m.got.as_deref(), Some("  transaction    see above"));
    let m = compare(
        &ex[..2],
        &got(&[
            "approved: debit 12.34 EUR, register 01",
            "  authorisation  12345",
        ]),
        &varying,
    )
    .err()
    .unwrap();
    assert_eq!(m.shown.map(|s| s.0), Some(11));
    assert_eq!(m.got.as_deref(), Some("  authorisation  12345"));
    let m = compare(&ex[..1], &got(&[&ex[0].1, "extra"]), &varying)
        .err()
        .unwrap();
    assert!(m.shown.is_none());
    assert_eq!(m.got.as_deref(), Some("extra"));
}

#[test]
fn the_multi_lane_example_writes_files_concertd_accepts_with_an_allow_line() {
    // README.md, "Several terminals on one machine": its loop, run in a
    // directory of the test's (`sudo tee /etc/concertd/` becomes `tee `),
    // writes files that `concertd -n` accepts, each listening on the
    // network with an `allow` line the text tells the reader to edit.
    let text = std::fs::read_to_string(format!("{ROOT}/README.md")).unwrap();
    let sec = &text[text
        .find("## Several terminals on one machine")
        .expect("the multi-lane section")..];
    let sec = &sec[..sec[3..].find("\n## ").map_or(sec.len(), |e| e + 3)];
    let block = &sec[sec.find("```sh\n").expect("its sh block")..];
    let from = block.find("for n in ").expect("its loop");
    let to = block[from..].find("\ndone\n").expect("its loop's end") + from + 6;
    let script = block[from..to].replace("sudo tee /etc/concertd/", "tee ");
    println!("README.md's loop, run as:\n{script}");
    let dir = temp_dir();
    let o = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(&dir)
        .output()
        .expect("sh");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let mut lanes = 0;
    for n in 1.. {
        let conf = dir.join(format!("lane{n}.conf"));
        if !conf.exists() {
            break;
        }
        lanes += 1;
        let o = run(CONCERTD, &["-n", "-f", conf.to_str().unwrap()]);
        let out = stdout(&o);
        assert!(o.status.success(), "lane{n}.conf: {out}{}", stderr(&o));
        assert!(
            out.contains(&format!("listen 0.0.0.0:{}\n", 8887 + n)),
            "{out}"
        );
        let allow = out
            .lines()
            .find(|l| l.starts_with("allow "))
            .unwrap_or_else(|| panic!("lane{n}.conf lets in loopback only:\n{out}"));
        assert!(
            allow
                .split_whitespace()
                .skip(1)
                .any(|a| !a.starts_with("127.") && a != "::1/128"),
            "lane{n}.conf lets in loopback only: {allow}"
        );
    }
    assert_eq!(lanes, 2, "the loop writes lane1.conf and lane2.conf");
    assert!(
        sec.contains("**Edit the `allow` line**"),
        "the section tells the reader to edit the allow line"
    );
}
