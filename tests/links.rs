//! Started as root with `user`, concertd opens its files in directories
//! that user can write: a symbolic link left there (`journal ->
//! /etc/shadow`) must be refused, never written through. O_NOFOLLOW needs
//! no root, so these run as any user.

use crate::util::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const SECRET: &str = "root:$6$secret:19000:0:99999:7:::\n";

/// A file standing for a root one, and a link to it at `link`.
fn plant(dir: &Path, link: &Path) -> PathBuf {
    let target = dir.join("shadow");
    std::fs::write(&target, SECRET).unwrap();
    std::os::unix::fs::symlink(&target, link).unwrap();
    target
}

/// Runs concertd on `conf` lines (on port 0), in daemon mode unless
/// `-d` is in `flags`, with no syslog so that `log-file` is used. A daemon
/// that started after all is stopped.
fn start(dir: &Path, conf: &str, flags: &[&str]) -> std::process::Output {
    let file = dir.join("concertd.conf");
    std::fs::write(
        &file,
        format!(
            "listen 127.0.0.1:0\nsimulator-delay 0\nsyslog-socket {}\n{conf}\n",
            dir.join("no-syslog").display()
        ),
    )
    .unwrap();
    let o = {
        let _g = SPAWN.lock().unwrap_or_else(|p| p.into_inner());
        Command::new(CONCERTD)
            .args(flags)
            .arg("-f")
            .arg(&file)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    if o.status.success() {
        for p in [dir.join("pid"), dir.join("shadow")] {
            let pid = std::fs::read_to_string(p).unwrap_or_default();
            if let Ok(pid) = pid.trim().parse::<i32>() {
                // SAFETY: kill(2) on the daemon this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    o
}

fn assert_refused(o: &std::process::Output, what: &str, link: &Path) {
    assert_eq!(o.status.code(), Some(1), "{}", stderr(o));
    let want = format!(
        "concertd: {what}: {} is a symbolic link: refused",
        link.display()
    );
    assert!(stderr(o).contains(&want), "{want:?} not in:\n{}", stderr(o));
}

#[test]
fn a_symlinked_journal_or_generation_is_refused() {
    let dir = temp_dir();
    let journal = dir.join("journal");
    let target = plant(&dir, &journal);
    let conf = format!("journal {}", journal.display());
    let o = start(&dir, &conf, &["-d"]);
    assert_refused(&o, "journal", &journal);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), SECRET);
    // An older generation, read at start, likewise.
    std::fs::remove_file(&journal).unwrap();
    let gen = dir.join("journal.2");
    std::os::unix::fs::symlink(&target, &gen).unwrap();
    let o = start(&dir, &format!("{conf}\njournal-keep 2"), &["-d"]);
    assert_refused(&o, "journal", &gen);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), SECRET);
    // Daemon mode: the same error, from the foreground.
    let o = start(
        &dir,
        &format!(
            "{conf}\njournal-keep 2\npidfile {}",
            dir.join("pid").display()
        ),
        &[],
    );
    assert_refused(&o, "journal", &gen);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), SECRET);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_symlinked_log_file_is_refused() {
    let dir = temp_dir();
    let log = dir.join("concertd.log");
    let target = plant(&dir, &log);
    let o = start(
        &dir,
        &format!(
            "journal {}\npidfile {}\nlog-file {}",
            dir.join("journal").display(),
            dir.join("pid").display(),
            log.display()
        ),
        &[],
    );
    assert_refused(&o, "log-file", &log);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), SECRET);
    assert!(!dir.join("pid").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_symlinked_pid_file_is_refused() {
    let dir = temp_dir();
    let pid = dir.join("pid");
    let target = plant(&dir, &pid);
    let o = start(
        &dir,
        &format!(
            "journal {}\npidfile {}\nlog-file {}",
            dir.join("journal").display(),
            pid.display(),
            dir.join("log").display()
        ),
        &[],
    );
    assert_refused(&o, "pid file", &pid);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), SECRET);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rotation_does_not_write_through_a_link_planted_at_a_generation_name() {
    let d = Daemon::start("journal-size 4K\njournal-keep 2");
    let j = d.dir.join("journal");
    let (t0, t2) = (d.dir.join("target0"), d.dir.join("target2"));
    std::fs::write(&t0, SECRET).unwrap();
    std::fs::write(&t2, SECRET).unwrap();
    std::os::unix::fs::symlink(&t0, d.dir.join("journal.0")).unwrap();
    std::os::unix::fs::symlink(&t2, d.dir.join("journal.2")).unwrap();
    let mut i = 0;
    // Two rotations: the second renames journal.1 over the link at journal.2.
    while d.log_text().matches(": rotated,").count() < 2 {
        i += 1;
        assert!(i < 400, "not rotated twice");
        let req = format!("CZ0040320CA00201CB004{}CD0010CE003978", 1000 + i);
        exchange(d.addr, req.as_bytes());
    }
    assert_eq!(std::fs::read_to_string(&t0).unwrap(), SECRET);
    assert_eq!(std::fs::read_to_string(&t2).unwrap(), SECRET);
    assert!(std::fs::symlink_metadata(d.dir.join("journal.0")).is_err());
    for f in [j.clone(), d.dir.join("journal.1"), d.dir.join("journal.2")] {
        let meta = std::fs::symlink_metadata(&f).unwrap();
        assert!(meta.is_file(), "{}", f.display());
    }
    // The daemon goes on in the new journal, a file of its own.
    let a = exchange(d.addr, b"CZ0040320CA00201CB0047777CD0010CE003978");
    assert!(text(&a).contains("AE00210"), "{}", text(&a));
    d.wait_log("debit 77.77 EUR");
    assert!(d.journal().contains("CB0047777"));
    assert_eq!(std::fs::read_to_string(&t0).unwrap(), SECRET);
    assert!(
        !d.log_text().contains("rotation failed"),
        "{}",
        d.log_text()
    );
}

/// The whole sequence as root with `user nobody`: what the account could
/// plant is refused, what it must own is given by descriptor, and the
/// rotation after the drop writes no link. Only as root (else skipped).
#[test]
fn as_root_with_user_nobody_links_are_refused_and_files_given() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // SAFETY: plain system calls; getpwnam's result is read at once.
    let nobody = unsafe {
        let pw = libc::getpwnam(c"nobody".as_ptr());
        (libc::geteuid() == 0 && !pw.is_null()).then(|| (*pw).pw_uid)
    };
    let Some(nobody) = nobody else {
        eprintln!("not root, or no user nobody: skipped");
        return;
    };
    let dir = temp_dir();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.join("concertd");
    std::fs::create_dir(&state).unwrap();
    std::fs::create_dir(dir.join("run")).unwrap();
    let shadow = dir.join("shadow");
    std::fs::write(&shadow, SECRET).unwrap();
    std::fs::set_permissions(&shadow, std::fs::Permissions::from_mode(0o600)).unwrap();
    let pid = dir.join("run").join("concertd").join("concertd.pid");
    let log = dir.join("log");
    let conf = format!(
        "journal {}\njournal-size 4K\njournal-keep 2\npidfile {}\nlog-file {}\nuser nobody",
        state.join("journal").display(),
        pid.display(),
        log.display()
    );
    let untouched = || {
        let m = std::fs::metadata(&shadow).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o777), (0, 0o600));
        assert_eq!(std::fs::read_to_string(&shadow).unwrap(), SECRET);
    };
    // Planted by the account in its own directory before a start.
    let gen = state.join("journal.1");
    std::os::unix::fs::symlink(&shadow, &gen).unwrap();
    let file = dir.join("concertd.conf");
    std::fs::write(
        &file,
        format!(
            "listen 127.0.0.1:0\nsimulator-delay 0\nsyslog-socket {}\n{conf}\n",
            dir.join("no-syslog").display()
        ),
    )
    .unwrap();
    let run = || {
        let _g = SPAWN.lock().unwrap_or_else(|p| p.into_inner());
        Command::new(CONCERTD)
            .arg("-f")
            .arg(&file)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let o = run();
    assert_refused(&o, "journal", &gen);
    untouched();
    std::fs::remove_file(&gen).unwrap();
    let o = run();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let reap = Reap::from_pid_file(&pid);
    let daemon = reap.0;
    let owner = |p: &Path| std::fs::metadata(p).unwrap().uid();
    assert_eq!(owner(&state), nobody);
    assert_eq!(owner(&state.join("journal")), nobody);
    let run_dir = pid.parent().unwrap();
    assert_eq!(owner(run_dir), nobody);
    let mode = std::fs::metadata(run_dir).unwrap().mode() & 0o7777;
    assert_eq!(mode & !0o750, 0, "{mode:o}");
    // Planted after the drop: the rotation's temporary.
    std::os::unix::fs::symlink(&shadow, state.join("journal.0")).unwrap();
    let addr = listening_in(&log);
    let mut i = 0;
    while std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches(": rotated,")
        .count()
        < 2
    {
        i += 1;
        assert!(i < 400, "not rotated twice");
        let req = format!("CZ0040320CA00201CB004{}CD0010CE003978", 1000 + i);
        let a = exchange(addr, req.as_bytes());
        assert!(text(&a).contains("AE00210"), "{}", text(&a));
    }
    untouched();
    for n in ["journal", "journal.1", "journal.2"] {
        let m = std::fs::symlink_metadata(state.join(n)).unwrap();
        assert!(m.is_file() && m.uid() == nobody, "{n}");
    }
    // SAFETY: kill(2) on the daemon this test started.
    unsafe { libc::kill(daemon, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + PATIENCE;
    while pid.exists() {
        assert!(std::time::Instant::now() < deadline, "pid file not removed");
        std::thread::yield_now();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
