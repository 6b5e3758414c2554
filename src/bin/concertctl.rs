//! concertctl: asks a running concertd one command over its control
//! socket. Exit 0: done; 1: refused (by concertd, or a wrong command
//! line); 2: concertd could not be reached.

use concert::config::DEFAULT_CONTROL;
use concert::logging::stdout;
use concert::service::control::{access, Command, COMMANDS, MAX_COMMAND};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: concertctl [-hV] [-s | --socket socket] command [argument ...]";

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
        stdout::print(&format!("{}\ncommands: {COMMANDS}\n", o.usage(USAGE)));
        return ExitCode::SUCCESS;
    }
    if m.opt_present("V") {
        stdout::line(&format!("concertctl {}", env!("CARGO_PKG_VERSION")));
        return ExitCode::SUCCESS;
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
    let socket = m
        .opt_str("s")
        .map_or_else(|| PathBuf::from(DEFAULT_CONTROL), PathBuf::from);
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
    let _ = conn.set_read_timeout(Some(ANSWER_WAIT));
    let _ = conn.set_write_timeout(Some(ANSWER_WAIT));
    if let Err(e) = conn.write_all(format!("{line}\n").as_bytes()) {
        return unreachable(format!("sending the command: {e}"));
    }
    let mut answer = Vec::new();
    if let Err(e) = conn.read_to_end(&mut answer) {
        return unreachable(format!("reading the answer: {e}"));
    }
    let answer = String::from_utf8_lossy(&answer);
    let (status, text) = answer.split_once('\n').unwrap_or((&answer, ""));
    match status {
        "ok" => {
            stdout::print(text);
            ExitCode::SUCCESS
        }
        "refused" => {
            eprint!("concertctl: {text}");
            ExitCode::from(REFUSED)
        }
        _ => unreachable("it closed the connection without an answer".into()),
    }
}
