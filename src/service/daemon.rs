//! Running as a daemon: detaching from the terminal with a readiness
//! handshake, the pid file, and dropping root.

use crate::config::error::Error;
use crate::config::files;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

fn last_error(what: &str) -> Error {
    Error::io(what, io::Error::last_os_error())
}

static DETACHED: AtomicBool = AtomicBool::new(false);

/// True in the detached daemon, whose stderr goes nowhere.
pub fn detached() -> bool {
    DETACHED.load(Ordering::Relaxed)
}

/// The detached child's end of the readiness pipe: the parent waits on it
/// and exits 0 only when told the service is listening.
pub struct Ready {
    pipe: File,
}

impl Ready {
    pub fn ok(mut self) {
        let _ = self.pipe.write_all(b"ok\n");
    }

    pub fn fail(mut self, msg: &str) {
        let _ = self.pipe.write_all(msg.as_bytes());
    }
}

/// Forks. The parent waits for the child's word and exits with it; the
/// child starts a new session, leaves the working directory, points stdio
/// at /dev/null and returns. Must be called before any thread exists: a
/// fork copies only the calling thread.
pub fn detach() -> Result<Ready, Error> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(last_error("pipe"));
    }
    // SAFETY: freshly created, owned here.
    let (read, write) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    // SAFETY: no other thread runs yet (the caller's contract).
    match unsafe { libc::fork() } {
        -1 => Err(last_error("fork")),
        0 => {
            drop(read);
            DETACHED.store(true, Ordering::Relaxed);
            // SAFETY: plain system calls on our own process.
            if unsafe { libc::setsid() } == -1 {
                return Err(last_error("setsid"));
            }
            let _ = std::env::set_current_dir("/");
            let null = OpenOptions::new().read(true).write(true).open("/dev/null");
            if let Ok(null) = null {
                let fd: OwnedFd = null.into();
                for target in 0..=2 {
                    // SAFETY: dup2 onto the standard descriptors.
                    unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&fd), target) };
                }
            }
            Ok(Ready { pipe: write })
        }
        child => {
            drop(write);
            let mut word = String::new();
            let mut read = read;
            let _ = read.read_to_string(&mut word);
            if word == "ok\n" {
                std::process::exit(0);
            }
            if word.is_empty() {
                eprintln!("concertd: the daemon (pid {child}) died during start-up");
            } else {
                eprintln!("concertd: {word}");
            }
            std::process::exit(1);
        }
    }
}

/// Refuses to start when the pid file names a live process, or is a
/// link (refused here, in the foreground, rather than after the fork).
pub fn check_pidfile(path: &Path) -> Result<(), Error> {
    let mut text = String::new();
    // Without blocking (a FIFO left at the path must not hang the start)
    // and only from a regular file, of a pid's length at most.
    match files::open_nofollow_nonblock(path) {
        Ok(f) => {
            if f.metadata().is_ok_and(|m| m.is_file()) {
                let _ = f.take(64).read_to_string(&mut text);
            }
        }
        Err(e) if files::is_refused(&e) => return Err(files::error("pid file", path, e)),
        Err(_) => return Ok(()),
    }
    match text.trim().parse::<i32>() {
        Ok(pid) if pid != std::process::id() as i32 && files::alive(pid) => {
            Err(Error::AlreadyRunning {
                pid,
                pidfile: path.to_path_buf(),
            })
        }
        _ => Ok(()),
    }
}

/// The pid file, removed when dropped.
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    pub fn write(path: &Path) -> Result<PidFile, Error> {
        check_pidfile(path)?;
        let ctx = || format!("pid file {}", path.display());
        // /run/concertd does not survive a reboot; under systemd the unit's
        // RuntimeDirectory makes it, under a plain init this does.
        if let Some(dir) = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && !d.exists())
        {
            files::create_dir(dir).map_err(|e| Error::io(ctx(), e))?;
        }
        // Written as root, in a directory the service account may own: a
        // link left there is refused, and a stale file is replaced by a
        // new one rather than truncated (it could be a hard link).
        let mut f = files::no_link(path)
            .and_then(|()| files::create_new(path, OpenOptions::new().write(true), 0o644))
            .map_err(|e| files::error("pid file", path, e))?;
        writeln!(f, "{}", std::process::id()).map_err(|e| Error::io(ctx(), e))?;
        Ok(PidFile {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// A user to run as.
pub struct Account {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
}

fn cstring(s: &str) -> Result<CString, Error> {
    CString::new(s).map_err(|_| Error::Account(format!("{s:?}: bad name")))
}

pub fn lookup(user: &str, group: Option<&str>) -> Result<Account, Error> {
    let name = cstring(user)?;
    // SAFETY: getpwnam returns a pointer to static storage or null; read at
    // once, before any other call could overwrite it (no threads yet).
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(Error::Account(format!(
            "user {user:?} does not exist: create it (useradd --system {user}), or name \
             another user"
        )));
    }
    let (uid, mut gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    if let Some(g) = group {
        let gname = cstring(g)?;
        // SAFETY: as above.
        let gr = unsafe { libc::getgrnam(gname.as_ptr()) };
        if gr.is_null() {
            return Err(Error::Account(format!(
                "group {g:?} does not exist: create it (groupadd --system {g}), or name \
                 another group"
            )));
        }
        gid = unsafe { (*gr).gr_gid };
    }
    Ok(Account {
        name: user.to_string(),
        uid,
        gid,
    })
}

fn root() -> bool {
    // SAFETY: plain system call.
    unsafe { libc::geteuid() == 0 }
}

/// Gives the journal and its generations to the account, when we are
/// root.
pub fn give_journal(j: &crate::terminal::journal::Journal, a: &Account) {
    if !root() {
        return;
    }
    if let Err(e) = j.give(a.uid, a.gid) {
        log::warn!("journal: cannot give it to {}: {e}", a.name);
    }
}

/// Gives the journal's lock file to the account, when we are root, so
/// that a later start as that user can open it.
pub fn give_lock(l: &crate::terminal::journal::Lock, a: &Account) {
    if !root() {
        return;
    }
    if let Err(e) = l.give(a.uid, a.gid) {
        log::warn!("journal lock: cannot give it to {}: {e}", a.name);
    }
}

/// Becomes the account for good: supplementary groups (dialout for the
/// serial line), group, then user; and checks root cannot come back.
pub fn drop_to(a: &Account) -> Result<(), Error> {
    // SAFETY: plain system calls on our own process.
    unsafe {
        if libc::geteuid() != 0 {
            if libc::geteuid() == a.uid {
                return Ok(());
            }
            return Err(Error::Account(format!(
                "cannot become user {}: not started as root",
                a.name
            )));
        }
        let name = cstring(&a.name)?;
        if libc::initgroups(name.as_ptr(), a.gid) != 0 {
            return Err(last_error("initgroups"));
        }
        if libc::setgid(a.gid) != 0 {
            return Err(last_error("setgid"));
        }
        if libc::setuid(a.uid) != 0 {
            return Err(last_error("setuid"));
        }
        if a.uid != 0 && libc::setuid(0) == 0 {
            return Err(Error::Account(
                "root privileges could be regained after the drop".into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("concertd-daemon-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_pid_file_never_writes_through_a_link() {
        let d = dir();
        let target = d.join("root-file");
        fs::write(&target, "precious\n").unwrap();
        // A symbolic link: refused, by name, before and after the fork.
        let p = d.join("concertd.pid");
        std::os::unix::fs::symlink(&target, &p).unwrap();
        let e = check_pidfile(&p).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("pid file: {} is a symbolic link: refused", p.display())
        );
        let e = PidFile::write(&p).err().unwrap().to_string();
        assert!(e.contains("is a symbolic link: refused"), "{e}");
        assert_eq!(fs::read_to_string(&target).unwrap(), "precious\n");
        // A hard link left as a stale pid file: replaced, not truncated.
        fs::remove_file(&p).unwrap();
        fs::hard_link(&target, &p).unwrap();
        let pid = PidFile::write(&p).unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "precious\n");
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            format!("{}\n", std::process::id())
        );
        drop(pid);
        assert!(!p.exists());
        // Its directory, made when missing, is 0750 at most.
        let _p = PidFile::write(&d.join("concertd").join("concertd.pid")).unwrap();
        let mode = fs::metadata(d.join("concertd"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7027, 0, "{mode:o}");
        let _ = fs::remove_dir_all(&d);
    }
}
