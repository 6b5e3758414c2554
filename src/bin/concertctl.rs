//! concertctl: asks a running concertd one command over its control
//! socket. Exit 0: done; 1: refused (by concertd, or a wrong command
//! line); 2: concertd could not be reached. `watch` prints events until
//! concertd or the reader goes; `web` serves the terminal's page (see
//! concertctl/web.rs).

#[path = "concertctl/web.rs"]
mod web;

use concert::config::DEFAULT_CONTROL;
use concert::logging::stdout;
use concert::service::control::{access, Command, COMMANDS, MAX_COMMAND};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str =
    "usage: concertctl [-hV] [-s | --socket socket] command [argument ...]\n       \
                     concertctl [-s | --socket socket] web [address]";

/// Longer than concertd's own wait for a reload (30 s).
const ANSWER_WAIT: Duration = Duration::from_secs(40);

const REFUSED: u8 = 1;
const UNREACHABLE: u8 = 2;

fn main() -> ExitCode {
    let mut o = getopts::Options::new();
    o.optopt("s", "socket", "the control socket", "PATH");
    o.optflag("h", "help", "print this help and exit");
    o.optflag("V", "version", "print the version and exit");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let m = match o.parse(&args) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("concertctl: {e}\n{USAGE}");
            return ExitCode::from(REFUSED);
        }
    };
    if m.opt_present("h") {
        stdout::print(&format!(
            "{}\ncommands: {COMMANDS}, web [ADDRESS] (the terminal's page)\n",
            o.usage(USAGE)
        ));
        return ExitCode::SUCCESS;
    }
    if m.opt_present("V") {
        stdout::line(&format!("concertctl {}", env!("CARGO_PKG_VERSION")));
        return ExitCode::SUCCESS;
    }
    let socket = m
        .opt_str("s")
        .map_or_else(|| PathBuf::from(DEFAULT_CONTROL), PathBuf::from);
    // Not a command of concertd's: a server of its own, its client.
    if m.free.first().map(String::as_str) == Some("web") {
        return match m.free.get(1..).unwrap_or_default() {
            [] => web::serve(&socket, web::DEFAULT_ADDRESS),
            [address] => web::serve(&socket, address),
            _ => {
                eprintln!("concertctl: web takes at most one address\n{USAGE}");
                ExitCode::from(REFUSED)
            }
        };
    }
    let line = m.free.join(" ");
    // Checked here too: a typo is said without bothering the daemon.
    if let Err(e) = Command::parse(&line) {
        eprintln!("concertctl: {e}\n{USAGE}");
        return ExitCode::from(REFUSED);
    }
    if line.len() >= MAX_COMMAND {
        eprintln!("concertctl: command longer than {MAX_COMMAND} bytes");
        return ExitCode::from(REFUSED);
    }
    let unreachable = |what: String| {
        eprintln!(
            "concertctl: cannot reach concertd at {}: {what}; check that concertd runs, \
             that its control keyword names this socket (else give it with -s), and that \
             you may open it (the members of its group may)",
            socket.display()
        );
        ExitCode::from(UNREACHABLE)
    };
    let mut conn = match UnixStream::connect(&socket) {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            eprintln!(
                "concertctl: cannot reach concertd at {}: {e}: {}",
                socket.display(),
                access::denied(&socket)
            );
            return ExitCode::from(UNREACHABLE);
        }
        Err(e) => return unreachable(e.to_string()),
    };
    if line.split_ascii_whitespace().eq(["watch"]) {
        if let Err(e) = send(&mut conn, &line) {
            return unreachable(e);
        }
        return match watch(conn) {
            Ok(()) => ExitCode::SUCCESS,
            Err(Watch::Refused(why)) => {
                eprint!("concertctl: {why}");
                ExitCode::from(REFUSED)
            }
            Err(Watch::Lost(why)) => unreachable(why),
        };
    }
    match exchange(conn, &line) {
        Ok(Ok(text)) => {
            stdout::print(&text);
            ExitCode::SUCCESS
        }
        Ok(Err(text)) => {
            eprint!("concertctl: {text}");
            ExitCode::from(REFUSED)
        }
        Err(why) => unreachable(why),
    }
}

/// Why `watch` ended before its reader did.
enum Watch {
    Refused(String),
    Lost(String),
}

/// `watch`: each event line as it comes, until concertd closes (it
/// stops) or our reader does (`concertctl watch | head`).
fn watch(conn: UnixStream) -> Result<(), Watch> {
    // Events come when they come: no wait is too long.
    let _ = conn.set_read_timeout(None);
    let mut lines = BufReader::new(conn);
    let mut first = String::new();
    match lines.read_line(&mut first) {
        Ok(_) if first == "ok\n" => {}
        Ok(_) if first == "refused\n" => {
            let mut why = String::new();
            let _ = lines.read_to_string(&mut why);
            return Err(Watch::Refused(why));
        }
        Ok(_) => {
            return Err(Watch::Lost(
                "it closed the connection without an answer".into(),
            ))
        }
        Err(e) => return Err(Watch::Lost(format!("reading the answer: {e}"))),
    }
    let mut out = std::io::stdout().lock();
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line) {
            Ok(0) => return Ok(()),
            Ok(_) => {
                if out
                    .write_all(line.as_bytes())
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    return Ok(());
                }
            }
            Err(e) => return Err(Watch::Lost(format!("reading events: {e}"))),
        }
    }
}

/// One command asked of concertd at `socket`: its answer's text, `Ok` when
/// concertd said ok, `Err` when it refused; the outer `Err` when it could
/// not be reached.
pub fn ask(socket: &Path, line: &str) -> Result<Result<String, String>, String> {
    let conn = UnixStream::connect(socket).map_err(|e| e.to_string())?;
    exchange(conn, line)
}

/// Writes the command `line` on `conn` (with the patience of a reload).
fn send(conn: &mut UnixStream, line: &str) -> Result<(), String> {
    let _ = conn.set_read_timeout(Some(ANSWER_WAIT));
    let _ = conn.set_write_timeout(Some(ANSWER_WAIT));
    conn.write_all(format!("{line}\n").as_bytes())
        .map_err(|e| format!("sending the command: {e}"))
}

/// One command on a connection made: as [`ask`].
fn exchange(mut conn: UnixStream, line: &str) -> Result<Result<String, String>, String> {
    send(&mut conn, line)?;
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer)
        .map_err(|e| format!("reading the answer: {e}"))?;
    let answer = String::from_utf8_lossy(&answer);
    match answer.split_once('\n') {
        Some(("ok", text)) => Ok(Ok(text.to_string())),
        Some(("refused", text)) => Ok(Err(text.to_string())),
        _ => Err("it closed the connection without an answer".into()),
    }
}
