//! `make install` and `make uninstall` into a staging directory.

use crate::util::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn make(args: &[&str]) -> std::process::Output {
    let target = Path::new(CONCERTD).parent().unwrap();
    Command::new("make")
        .arg("-s")
        .args(args)
        .arg(format!("TARGET={}", target.display()))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("make")
}

fn files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn install_and_uninstall_into_destdir() {
    let dest = temp_dir();
    let d = format!("DESTDIR={}", dest.display());
    let o = make(&["install", &d]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        files(&dest),
        [
            "etc/concertd.conf",
            "usr/local/bin/concert",
            "usr/local/bin/concertctl",
            "usr/local/lib/systemd/system/concertd.service",
            "usr/local/lib/systemd/system/concertd@.service",
            "usr/local/sbin/concertd",
            "usr/local/share/doc/concertd/concertd-pay.example",
            "usr/local/share/doc/concertd/exam.script",
            "usr/local/share/man/man1/concert.1",
            "usr/local/share/man/man5/concertd-journal.5",
            "usr/local/share/man/man5/concertd.conf.5",
            "usr/local/share/man/man7/concertd-backends.7",
            "usr/local/share/man/man7/concertd-exec.7",
            "usr/local/share/man/man7/concertd-logging.7",
            "usr/local/share/man/man7/concertd-protocol.7",
            "usr/local/share/man/man7/concertd-relay.7",
            "usr/local/share/man/man8/concertctl.8",
            "usr/local/share/man/man8/concertd.8",
        ]
    );
    assert_eq!(mode(&dest.join("usr/local/sbin/concertd")), 0o755);
    assert_eq!(mode(&dest.join("usr/local/bin/concert")), 0o755);
    assert_eq!(mode(&dest.join("usr/local/bin/concertctl")), 0o755);
    assert!(
        unit_has_group(&dest),
        "the unit names the control socket's group"
    );
    // A staged install leaves the group to the target.
    assert!(
        stdout(&o).contains("DESTDIR set: group concertd not created"),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        mode(&dest.join("usr/local/share/man/man8/concertd.8")),
        0o644
    );
    assert_eq!(mode(&dest.join("etc/concertd.conf")), 0o644);
    // The default journal's directory, not readable by everyone.
    let state = dest.join("var/lib/concertd");
    assert!(state.is_dir());
    assert_eq!(mode(&state), 0o750);
    let unit = std::fs::read_to_string(dest.join("usr/local/lib/systemd/system/concertd.service"))
        .unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/sbin/concertd -d -f /etc/concertd.conf"),
        "{unit}"
    );
    assert!(!unit.contains("@SBINDIR@"), "{unit}");
    let lanes =
        std::fs::read_to_string(dest.join("usr/local/lib/systemd/system/concertd@.service"))
            .unwrap();
    assert!(
        lanes.contains("ExecStart=/usr/local/sbin/concertd -d -f /etc/concertd/%i.conf"),
        "{lanes}"
    );
    assert!(lanes.contains("StateDirectory=concertd/%i\n"), "{lanes}");
    assert!(lanes.contains("RuntimeDirectory=concertd/%i\n"), "{lanes}");
    assert!(
        !lanes.contains("@SBINDIR@") && !lanes.contains("@SYSCONFDIR@"),
        "{lanes}"
    );
    assert_eq!(
        mode(&dest.join("usr/local/lib/systemd/system/concertd@.service")),
        0o644
    );
    // A journal is never removed by uninstall; an empty directory is.
    std::fs::write(state.join("journal"), "a record\n").unwrap();
    let o = make(&["uninstall", &d]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("holds the journal: kept"),
        "{}",
        stdout(&o)
    );
    assert_eq!(files(&dest), ["var/lib/concertd/journal"]);
    std::fs::remove_file(state.join("journal")).unwrap();
    let o = make(&["uninstall", &d]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(!state.exists());
    assert!(files(&dest).is_empty(), "{:?}", files(&dest));
    // Its own documentation directory goes with its last file.
    assert!(!dest.join("usr/local/share/doc/concertd").exists());
    assert!(dest.join("usr/local/share/doc").exists());
}

/// `make` with no TARGET, in an environment of the test's choosing.
fn make_env(args: &[&str], env: &[(&str, &Path)]) -> std::process::Output {
    let mut c = Command::new("make");
    c.arg("-s")
        .args(args)
        .env_remove("TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("MAKEFLAGS")
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("make")
}

#[test]
fn install_finds_the_build_directory_as_cargo_does() {
    // A build directory elsewhere, as CARGO_TARGET_DIR makes it.
    let build = temp_dir();
    std::fs::create_dir(build.join("release")).unwrap();
    let bin = Path::new(CONCERTD).parent().unwrap();
    for b in ["concertd", "concert", "concertctl"] {
        std::os::unix::fs::symlink(bin.join(b), build.join("release").join(b)).unwrap();
    }
    let dest = temp_dir();
    let d = format!("DESTDIR={}", dest.display());
    let o = make_env(&["install", &d], &[("CARGO_TARGET_DIR", &build)]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(dest.join("usr/local/sbin/concertd").is_file());
    // Under sudo, CARGO_TARGET_DIR is gone: the message says what to do.
    let elsewhere = temp_dir();
    let o = make_env(&["install", &d], &[("CARGO_TARGET_DIR", &elsewhere)]);
    assert!(!o.status.success());
    let out = stdout(&o);
    assert!(
        out.contains(&format!(
            "{}/release/concertd missing: run make first",
            elsewhere.display()
        )),
        "{out}"
    );
    assert!(out.contains("pass TARGET="), "{out}");
}

/// `make run` on the test's binaries, run directory and a loopback port
/// of the system's choosing; nothing is built (cargo holds the build
/// directory while tests run).
fn make_run(run_dir: &Path) -> std::process::Child {
    make_run_with(run_dir, &[])
}

fn make_run_with(run_dir: &Path, args: &[&str]) -> std::process::Child {
    use std::process::Stdio;
    let bin = Path::new(CONCERTD).parent().unwrap();
    let _g = SPAWN.lock().unwrap_or_else(|p| p.into_inner());
    Command::new("make")
        .args(["-s", "run", "RUN_BUILD=true", "RUN_LISTEN=127.0.0.1:0"])
        .arg(format!("RUN_BIN={}", bin.display()))
        .arg(format!("RUN_DIR={}", run_dir.display()))
        .args(args)
        .env_remove("MAKEFLAGS")
        .env_remove("RUST_LOG")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("make run")
}

const PING: &[u8] = b"CZ0040320CA00201CD001I";

/// Whatever happens, the concertd of a test's `make run` does not outlive
/// it: its pid is in the journal's lock file.
struct StopRun(std::path::PathBuf);

impl Drop for StopRun {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(self.0.join("journal.lock")).unwrap_or_default();
        if let Ok(pid) = pid.trim().parse::<i32>() {
            // SAFETY: kill(2) on the concertd this test's `make run` started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

#[test]
fn make_run_then_a_second_make_run_fails_on_the_journal_lock() {
    use std::io::BufRead;
    use std::os::unix::fs::MetadataExt;
    let run_dir = temp_dir();
    let mut first = make_run(&run_dir);
    let _stop = StopRun(run_dir.clone());
    let mut lines = std::io::BufReader::new(first.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let addr: std::net::SocketAddr = loop {
        let l = match lines.next() {
            Some(Ok(l)) => l,
            _ => panic!("make run ended:\n{log}"),
        };
        log.push_str(&l);
        log.push('\n');
        if let Some(a) = l.split("listening on ").nth(1) {
            break a.trim().parse().unwrap();
        }
    };
    assert!(addr.ip().is_loopback());
    assert_eq!(text(&exchange(addr, PING)), "CZ0040320CA00201CD001IAE00210");
    let conf = run_dir.join("concertd.conf");
    let text_before = std::fs::read_to_string(&conf).unwrap();
    assert!(
        text_before.contains("listen 127.0.0.1:0\n"),
        "{text_before}"
    );
    assert!(
        text_before.ends_with(&format!(
            "journal \"{}\"\n",
            run_dir.join("journal").display()
        )),
        "{text_before}"
    );
    // make run's control socket is in its directory, and answers.
    let sock = run_dir.join("concertd.sock");
    assert!(
        text_before.contains(&format!("control \"{}\"\n", sock.display())),
        "{text_before}"
    );
    let o = run(CONCERTCTL, &["-s", sock.to_str().unwrap(), "status"]);
    assert!(
        stdout(&o).contains(&addr.to_string()),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    let before = std::fs::metadata(&conf).unwrap();
    // The second fails at once, on the lock, and leaves the file that the
    // first one watches as it was.
    let o = make_run(&run_dir).wait_with_output().unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    let said = format!(
        "concertd: journal {} in use by pid ",
        run_dir.join("journal").display()
    );
    let pid: i32 = err
        .lines()
        .find_map(|l| l.strip_prefix(&said))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap()
            .trim(),
        "concertd"
    );
    let after = std::fs::metadata(&conf).unwrap();
    assert_eq!(
        (before.ino(), before.mtime(), before.mtime_nsec()),
        (after.ino(), after.mtime(), after.mtime_nsec())
    );
    assert!(!std::fs::read_dir(&run_dir).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains(".conf.")));
    // SAFETY: kill(2) on the concertd that the test's `make run` started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(first.wait().unwrap().success());
}

#[test]
fn install_keeps_an_existing_configuration() {
    let dest = temp_dir();
    std::fs::create_dir_all(dest.join("etc")).unwrap();
    std::fs::write(dest.join("etc/concertd.conf"), "# mine\n").unwrap();
    let d = format!("DESTDIR={}", dest.display());
    let o = make(&["install", &d, "PREFIX=/usr"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        std::fs::read_to_string(dest.join("etc/concertd.conf")).unwrap(),
        "# mine\n"
    );
    let unit =
        std::fs::read_to_string(dest.join("usr/lib/systemd/system/concertd.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/sbin/concertd -d"), "{unit}");
    let o = make(&["uninstall", &d, "PREFIX=/usr"]);
    assert!(o.status.success());
    assert_eq!(files(&dest), ["etc/concertd.conf"]);
}

fn unit_has_group(dest: &Path) -> bool {
    ["concertd.service", "concertd@.service"].iter().all(|u| {
        std::fs::read_to_string(dest.join("usr/local/lib/systemd/system").join(u))
            .is_ok_and(|t| t.contains("\nGroup=concertd\n"))
    })
}

/// A host of the test's making for `make install`: first in PATH, a
/// `groupadd` that records its arguments instead of making a group, a
/// `getent` that knows no group and an `id -u` that says `uid`.
struct FakeHost {
    bin: std::path::PathBuf,
    calls: std::path::PathBuf,
}

impl FakeHost {
    fn new(uid: u32) -> FakeHost {
        let bin = temp_dir();
        let calls = bin.join("groupadd.calls");
        let script = |name: &str, body: &str| {
            let p = bin.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        script("groupadd", &format!("echo \"$*\" >> '{}'", calls.display()));
        script("getent", "exit 2");
        script(
            "id",
            &format!("[ \"$1\" = -u ] && {{ echo {uid}; exit 0; }}; exec /usr/bin/id \"$@\""),
        );
        FakeHost { bin, calls }
    }

    /// `make -s ARGS` with the fakes first in PATH.
    fn make(&self, args: &[&str]) -> std::process::Output {
        let target = Path::new(CONCERTD).parent().unwrap();
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Command::new("make")
            .arg("-s")
            .args(args)
            .arg(format!("TARGET={}", target.display()))
            .env("PATH", path)
            .env_remove("MAKEFLAGS")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("make")
    }

    /// What groupadd was asked, a line per call.
    fn groupadd_calls(&self) -> String {
        std::fs::read_to_string(&self.calls).unwrap_or_default()
    }
}

/// Every directory of an install under `root`, without DESTDIR.
fn under(root: &Path) -> Vec<String> {
    let r = root.display();
    vec![
        format!("PREFIX={r}/usr"),
        format!("SYSCONFDIR={r}/etc"),
        format!("STATEDIR={r}/var/lib/concertd"),
    ]
}

#[test]
fn install_never_makes_a_group_when_staged_or_not_root_and_says_how() {
    // Staged, even as root: the target's group is the target's business.
    let host = FakeHost::new(0);
    let dest = temp_dir();
    let o = host.make(&[
        "install",
        &format!("DESTDIR={}", dest.display()),
        "GROUP=lanes",
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(host.groupadd_calls(), "", "groupadd run with DESTDIR");
    assert!(
        stdout(&o).contains(
            "DESTDIR set: group lanes not created; on the target, as root: groupadd --system lanes"
        ),
        "{}",
        stdout(&o)
    );
    // A user installing under a PREFIX of theirs: everything installed,
    // no group, and the command root runs.
    let host = FakeHost::new(1000);
    let root = temp_dir();
    let mut args = vec!["install".to_string()];
    args.extend(under(&root));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = host.make(&args);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(root.join("usr/sbin/concertd").is_file());
    assert!(root.join("etc/concertd.conf").is_file());
    assert_eq!(host.groupadd_calls(), "", "groupadd run by a user");
    assert!(
        stdout(&o)
            .contains("not root: group concertd not created; as root: groupadd --system concertd"),
        "{}",
        stdout(&o)
    );
    // Root on the machine itself makes the group the units name: the
    // fake groupadd is the one make runs.
    let host = FakeHost::new(0);
    let root = temp_dir();
    let mut args = vec!["install".to_string()];
    args.extend(under(&root));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = host.make(&args);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(host.groupadd_calls(), "--system concertd\n");
}

#[test]
fn make_run_v_2_logs_the_wire_trace() {
    use std::io::BufRead;
    let run_dir = temp_dir();
    let mut child = make_run_with(&run_dir, &["V=2"]);
    let _stop = StopRun(run_dir.clone());
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let mut next = |log: &mut String| match lines.next() {
        Some(Ok(l)) => {
            log.push_str(&l);
            log.push('\n');
            l
        }
        _ => panic!("make run V=2 ended:\n{log}"),
    };
    let addr: std::net::SocketAddr = loop {
        if let Some(a) = next(&mut log).split("listening on ").nth(1) {
            break a.trim().parse().unwrap();
        }
    };
    // -v's debug messages, from the start.
    assert!(log.contains(" DEBUG "), "{log}");
    assert_eq!(text(&exchange(addr, PING)), "CZ0040320CA00201CD001IAE00210");
    // -vv's: the frame as it came.
    while !next(&mut log).contains(": < CZ0040320CA00201CD001I") {}
    drop(_stop);
    let _ = child.wait();
    // Any other level is refused before anything runs.
    let o = make_run_with(&temp_dir(), &["V=3"])
        .wait_with_output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("V=3: make run takes V=1 (concertd -v) or V=2 (concertd -vv)"),
        "{}",
        stderr(&o)
    );
}

/// The rows of the README's table whose first cell starts with `first`:
/// that cell, without its backquotes.
fn readme_table_cells(first: &str) -> Vec<String> {
    let readme =
        std::fs::read_to_string(format!("{}/README.md", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let section = &readme[readme.find("\n## Install\n").expect("README's Install")..];
    let section = &section[..section[1..].find("\n## ").map_or(section.len(), |e| e + 1)];
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|c| c.starts_with(first))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_readme_lists_what_install_puts_in_place_and_its_variables() {
    // Every file and directory `make install` makes is a row of the
    // README's table (`concertd-*.7` standing for several), and every row
    // is made.
    let dest = temp_dir();
    let o = make(&["install", &format!("DESTDIR={}", dest.display())]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let mut made = files(&dest);
    made.push("var/lib/concertd".to_string());
    let rows: Vec<String> = readme_table_cells("/")
        .iter()
        .map(|r| r.trim_start_matches('/').to_string())
        .collect();
    let matches = |row: &str, f: &str| match row.split_once('*') {
        Some((a, b)) => f.starts_with(a) && f.ends_with(b) && f.len() >= a.len() + b.len(),
        None => row == f,
    };
    for f in &made {
        assert!(
            rows.iter().any(|r| matches(r, f)),
            "/{f} is installed but not in the README's table"
        );
    }
    for r in &rows {
        assert!(
            made.iter().any(|f| matches(r, f)),
            "/{r} is in the README's table but not installed"
        );
    }
    // Every variable the install rule reads that a user may set (`?=`) is
    // a row of the README's variables table.
    let make_file =
        std::fs::read_to_string(format!("{}/Makefile", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let rule = &make_file[make_file.find("\ninstall:\n").unwrap()..];
    let rule = &rule[..rule[1..].find("\n\n").unwrap()];
    let settable: Vec<&str> = make_file
        .lines()
        .filter_map(|l| l.split_once(" ?= ").map(|(v, _)| v))
        .collect();
    let documented = readme_table_cells("");
    let mut used = vec!["DESTDIR", "PREFIX"];
    used.extend(
        settable
            .iter()
            .filter(|v| rule.contains(&format!("$({v})")) && **v != "CARGO"),
    );
    for v in used {
        assert!(
            documented.iter().any(|d| d == v),
            "{v}, which make install reads, is not in the README's variables table"
        );
    }
}
