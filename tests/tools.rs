//! The three binaries as Unix tools: what they say on a command line
//! gone wrong, and standard output closed by its reader (`| head -1`,
//! `| true`): each binary ends its output there and exits with the status
//! its work earned, with no panic and nothing on standard error.
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

/// Run as `nobody`, with no supplementary group: the caller a socket's
/// mode keeps out. None, the reason printed, when the test is not root.
fn as_nobody(args: &[&str]) -> Option<Output> {
    use std::os::unix::process::CommandExt;
    // SAFETY: plain system calls; getpwnam's result is read at once.
    let ids = unsafe {
        let pw = libc::getpwnam(c"nobody".as_ptr());
        (libc::geteuid() == 0 && !pw.is_null()).then(|| ((*pw).pw_uid, (*pw).pw_gid))
    };
    let Some((uid, gid)) = ids else {
        eprintln!("not root, or no user nobody: skipped");
        return None;
    };
    // A copy that nobody may run: the build's own may lie in a directory
    // only its owner may enter (a checkout under mktemp -d, or /root).
    static COPY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let copy = COPY.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let copy = dir.join("concertctl");
        std::fs::copy(CONCERTCTL, &copy).expect("copy concertctl");
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        copy
    });
    // std drops the supplementary groups when root sets a uid.
    Some(
        Command::new(copy)
            .args(args)
            .uid(uid)
            .gid(gid)
            .output()
            .expect("run concertctl"),
    )
}

#[test]
fn concertctl_denied_names_the_sockets_real_group_and_what_to_do() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::launch({
        let mut s = Spec::new("control @DIR@/ctl/control.sock\n");
        s.dir = Some(dir.clone());
        s
    });
    let sock = dir.join("ctl").join("control.sock");
    let shown = sock.to_str().unwrap();
    // The long option is the short one's.
    let o = run(CONCERTCTL, &["--socket", shown, "status"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("running: none"), "{}", stdout(&o));
    let Some(o) = as_nobody(&["--socket", shown, "status"]) else {
        return;
    };
    // The daemon runs as root: its socket's group is root's, not the
    // concertd of the shipped units.
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("Permission denied"), "{e}");
    assert!(
        e.contains(&format!(
            "the socket {shown} is root's, group root, mode 0660"
        )),
        "{e}"
    );
    assert!(e.contains("usermod -aG root $USER"), "{e}");
    assert!(!e.contains("concertd when installed"), "{e}");
    // Given to another group: that one is named.
    let adm = c"adm";
    // SAFETY: getgrnam with a NUL-terminated name; its result read at once.
    let gid = unsafe {
        let g = libc::getgrnam(adm.as_ptr());
        (!g.is_null()).then(|| (*g).gr_gid)
    };
    if let Some(gid) = gid {
        std::os::unix::fs::chown(&sock, None, Some(gid)).unwrap();
        let e = stderr(&as_nobody(&["-s", shown, "status"]).unwrap());
        assert!(e.contains("is root's, group adm, mode 0660"), "{e}");
        assert!(e.contains("usermod -aG adm $USER"), "{e}");
    }
    // A directory closed on the way: that is what is named.
    let ctl = dir.join("ctl");
    std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o700)).unwrap();
    let e = stderr(&as_nobody(&["-s", shown, "status"]).unwrap());
    assert!(
        e.contains(&format!(
            "the directory {} is root's, group root, mode 0700: its mode lets no group in",
            ctl.display()
        )),
        "{e}"
    );
    assert!(e.contains(&format!("chmod g+x {}", ctl.display())), "{e}");
    std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    drop(d);
}

#[test]
fn concert_h_is_the_host_and_says_where_help_is() {
    let o = run(CONCERT, &["-h"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.starts_with(
            "concert: -h takes the terminal's host (-h HOST); for help, run concert --help\n"
        ),
        "{e}"
    );
    assert!(!e.contains("Argument to option"), "{e}");
    // Taken for help before a command: the command is not a host.
    let o = run(CONCERT, &["-h", "pay", "5"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with(
            "concert: -h takes the terminal's host, not the command \"pay\"; \
             for help, run concert --help\n"
        ),
        "{}",
        stderr(&o)
    );
}

#[test]
fn concert_partial_sends_bf1_and_says_a_partial_approval_with_a_status_of_its_own() {
    let dir = temp_dir();
    let script = dir.join("scenario");
    std::fs::write(&script, "partial=500\npartial=500\n").unwrap();
    let d = Daemon::start(&format!("simulator-script {}\n", script.display()));
    // Without --partial the terminal may not charge less: refused.
    let o = d.concert(&["pay", "10"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    d.wait_log("without partial payment (BF=1): refused");
    // With it, BF=1 goes out, and 5.00 of 10.00 is charged.
    let o = d.concert(&["--partial", "pay", "10"]);
    assert_eq!(o.status.code(), Some(4), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).starts_with("approved for 5.00 of 10.00 EUR (partial): debit, register 01\n"),
        "{}",
        stdout(&o)
    );
    assert_eq!(stderr(&o), "");
    // The script done, the amount table: 10.57 is approved for half with
    // BF=1, also when the outcome is polled for (-i).
    let o = d.concert(&["-i", "--partial", "pay", "10.57"]);
    assert_eq!(o.status.code(), Some(4), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        stdout(&o).lines().take(2).collect::<Vec<_>>(),
        [
            "accepted, waiting for the outcome",
            "approved for 5.28 of 10.57 EUR (partial): debit, register 01"
        ],
        "{}",
        stdout(&o)
    );
    // --raw prints the frame, and the status still says partial.
    let o = d.concert(&["--raw", "--partial", "defer", "10.57"]);
    assert_eq!(o.status.code(), Some(4), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("CB0040528"), "{}", stdout(&o));
    // A whole approval is still 0.
    let o = d.concert(&["--partial", "pay", "10"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).starts_with("approved: debit 10.00 EUR, register 01\n"));
    // Where BF means nothing.
    for (args, why) in [
        (
            &["--partial", "refund", "1"][..],
            "--partial goes with pay and defer only",
        ),
        (
            &["--partial", "status"],
            "--partial goes with pay and defer only",
        ),
        (
            &["--partial", "-s", "/dev/null", "--v2", "pay", "1"],
            "Concert V2 has no BF: --partial needs V3",
        ),
    ] {
        let o = d.concert(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&o).starts_with(&format!("concert: {why}\n")),
            "{}",
            stderr(&o)
        );
    }
}

/// The register's end of a relayed pty pair whose other end concertd
/// opens as its serial line, with `extra` configuration.
fn serial_pair(extra: &str) -> (Daemon, crate::serial::Relay, String) {
    use crate::serial::{pty, relay, TIMERS};
    let dir = temp_dir();
    let (tpe, ecr) = (dir.join("ttyTPE"), dir.join("ttyECR"));
    let relayed = relay(pty(&tpe), pty(&ecr));
    let d = Daemon::start(&format!("serial {}\n{TIMERS}\n{extra}", tpe.display()));
    d.wait_log(": open, 9600 baud 7E1");
    (d, relayed, ecr.to_str().unwrap().to_string())
}

#[test]
fn concert_s_sends_a_nakked_request_again() {
    let dir = temp_dir();
    let script = dir.join("scenario");
    std::fs::write(&script, "approve nak-first\n").unwrap();
    let (d, _relay, ecr) = serial_pair(&format!("simulator-script {}", script.display()));
    // The first frame NAKed, the second taken: approved, as if nothing
    // had happened.
    let o = d.concert(&["-s", &ecr, "pay", "10"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).starts_with("approved: debit 10.00 EUR, register 01\n"),
        "{}",
        stdout(&o)
    );
    assert_eq!(stderr(&o), "");
    d.wait_log("simulator nak-first: NAK");
    // One debit, run once.
    d.wait_log("debit approved");
    let j = d.journal();
    assert_eq!(j.matches(" begun ").count(), 1, "{j}");
}

#[test]
fn concert_s_gives_up_after_three_naks() {
    let gate = Gate::new();
    let (d, _relay, ecr) = serial_pair(&gate.terminal());
    // A TCP debit holds the terminal: each serial request is NAKed, busy.
    let addr = d.addr;
    let held =
        std::thread::spawn(move || exchange(addr, b"CZ0040320CA00202CB003500CD0010CE003978"));
    d.wait_log("debit 5.00 EUR register 02 from tcp");
    let o = d.concert(&["-s", &ecr, "pay", "10"]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        stderr(&o),
        format!(
            "concert: {ecr}: request refused: NAKed 3 times, so not taken (the terminal is \
             busy, or the line garbles the frame); nothing was done\n"
        )
    );
    assert_eq!(stdout(&o), "");
    // Three sessions, three NAKs; the serial debit never ran.
    d.wait_log_n("refused busy: NAK", 3);
    gate.release();
    assert!(text(&held.join().unwrap()).contains("AE00210"));
    d.wait_log("debit approved");
    let j = d.journal();
    assert_eq!(j.matches(" begun ").count(), 1, "{j}");
}

/// AF 07 is the terminal saying it does not know how a payment ended: the
/// cashier is told "unknown", with the status of an unknown outcome (3),
/// never "declined" (1), which would invite charging the card again.
#[test]
fn concert_says_unknown_when_the_terminal_answers_af07() {
    let d = Daemon::start("");
    // The simulator's amount table: ..54 is answered AE=01 AF=07.
    let o = d.concert(&["pay", "12.54"]);
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).starts_with(
            "unknown: debit 12.54 EUR, register 01: the terminal does not know the outcome, \
             it may have been approved (AF 07)\n"
        ),
        "{}",
        stdout(&o)
    );
    assert!(
        stderr(&o).contains("run `concert status`"),
        "{}",
        stderr(&o)
    );
    // The status request that follows says the same word.
    let o = d.concert(&["status"]);
    assert!(stdout(&o).starts_with("unknown: "), "{}", stdout(&o));
}
