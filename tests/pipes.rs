//! Standard output closed by its reader (`| head -1`, `| true`): each
//! binary ends its output there and exits with the status its work
//! earned, with no panic and nothing on standard error.
//!
//! The pipe's read end is closed before the binary starts, so that its
//! first write meets EPIPE whatever the timing: a reader that closes
//! later may do so after the whole output fit in the pipe, and the test
//! would prove nothing.

use crate::util::*;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Output, Stdio};

/// The write end of a pipe nobody reads.
fn reader_gone() -> Stdio {
    let mut fds = [0; 2];
    // SAFETY: pipe2(2) fills two descriptors; each is owned exactly once.
    let (read, write) = unsafe {
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0);
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    };
    drop(read);
    Stdio::from(write)
}

fn piped(bin: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(reader_gone())
        .stderr(Stdio::piped())
        .output()
        .expect("run")
}

/// Exit `code`, and not a word on standard error (a panic would say
/// "failed printing to stdout" there, and exit 101).
fn ends_quietly(o: &Output, code: i32, what: &str) {
    assert_eq!(stderr(o), "", "{what}");
    assert_eq!(o.status.code(), Some(code), "{what}");
}

#[test]
fn concertd_output_piped_to_a_reader_gone() {
    let dir = temp_dir();
    let conf = dir.join("c.conf");
    std::fs::write(&conf, "listen 127.0.0.1:0\ncontrol none\n").unwrap();
    let conf = conf.to_str().unwrap();
    ends_quietly(&piped(CONCERTD, &["-h"]), 0, "concertd -h");
    ends_quietly(&piped(CONCERTD, &["-V"]), 0, "concertd -V");
    ends_quietly(&piped(CONCERTD, &["-n", "-f", conf]), 0, "concertd -n");
    // A wrong file still fails the check: the exit status is the check's.
    std::fs::write(dir.join("c.conf"), "listen nowhere\n").unwrap();
    let o = piped(CONCERTD, &["-n", "-f", conf]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("c.conf:1"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}

#[test]
fn concert_piped_to_a_reader_gone_exits_with_the_outcome() {
    let d = Daemon::start("");
    let port = d.port();
    // Approved, its ticket printed to nobody: still approved, exit 0.
    let o = piped(CONCERT, &["-p", &port, "-k", "100", "pay", "5"]);
    ends_quietly(&o, 0, "approved");
    d.wait_log("debit approved");
    // 10.51 is declined by the simulator's amount table: exit 1.
    let o = piped(CONCERT, &["-p", &port, "pay", "10.51"]);
    ends_quietly(&o, 1, "declined");
    ends_quietly(&piped(CONCERT, &["--help"]), 0, "concert --help");
    ends_quietly(&piped(CONCERT, &["-V"]), 0, "concert -V");
    // Both payments ran: the output lost is only output.
    let j = d.journal();
    assert_eq!(j.matches(" begun ").count(), 2, "{j}");
}

#[test]
fn concertctl_piped_to_a_reader_gone() {
    let d = Daemon::start("control @DIR@/control.sock\n");
    for _ in 0..3 {
        assert!(d.concert(&["pay", "1"]).status.success());
    }
    let sock = d.control_socket();
    let sock = sock.to_str().unwrap();
    for cmd in [&["show", "1000"][..], &["status"], &["totals"]] {
        let mut args = vec!["-s", sock];
        args.extend_from_slice(cmd);
        ends_quietly(&piped(CONCERTCTL, &args), 0, &cmd.join(" "));
    }
    ends_quietly(&piped(CONCERTCTL, &["-h"]), 0, "concertctl -h");
    ends_quietly(&piped(CONCERTCTL, &["-V"]), 0, "concertctl -V");
    // Refused: its status stays the refusal's.
    let o = piped(CONCERTCTL, &["-s", sock, "show", "x"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}
