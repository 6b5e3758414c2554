//! The journal's lock: one journal, one concertd.

use crate::config::files;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// One journal, one concertd: an exclusive `flock(2)` held for the
/// daemon's life on the journal's directory, and one on `JOURNAL.lock`
/// beside the journal.
///
/// The directory's lock is the one that cannot be lost: the directory is
/// never renamed nor removed while it holds the journal, whereas the
/// journal file itself is renamed by every rotation (a lock follows the
/// file, not the name, so a second daemon would find the new journal
/// unlocked) and `JOURNAL.lock` can be deleted by hand (a second daemon
/// would then create and lock a new one). Its price: one journal per
/// directory. The lock file stays for the pid of the holder, which a
/// second daemon names in its message, and for a concertd of an older
/// version, which locks only it.
///
/// The locks belong to the open files, which a fork shares: the detached
/// daemon keeps them when its parent exits. Both are opened close-on-exec
/// (as every file std opens), so a payment program never holds them; but
/// a child between its fork and its exec still does, for a moment, after
/// the daemon that forked it died: a lock held is waited for a while
/// ([`LOCK_WAIT`]) before it is said to be in use.
pub struct Lock {
    /// The journal's directory, opened read-only: the lock that counts.
    _dir: File,
    /// `JOURNAL.lock`, holding the holder's pid.
    file: File,
    path: PathBuf,
}

/// How long a lock held by another process is waited for at start.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Why the lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds it; the pid it wrote, when readable and
    /// alive.
    Held(Option<i32>),
    /// The journal itself cannot be one (a link, not a regular file, no
    /// such directory): said of the journal, as its opening would.
    Journal(io::Error),
    /// The lock file cannot be opened or locked.
    Io(io::Error),
}

/// The directory a journal lives in.
pub fn directory_of(journal: &Path) -> &Path {
    match journal.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Tries an exclusive `flock` without blocking: false when another open
/// file holds it.
fn try_flock(f: &File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor `f` owns.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

impl Lock {
    /// The lock file of the journal at `journal`.
    pub fn path_of(journal: &Path) -> PathBuf {
        let mut s = journal.as_os_str().to_owned();
        s.push(".lock");
        PathBuf::from(s)
    }

    /// Takes the lock, waiting [`LOCK_WAIT`] at most for a holder to let
    /// it go, and writes our pid in it.
    pub fn take(journal: &Path) -> Result<Lock, LockError> {
        Lock::take_within(journal, LOCK_WAIT)
    }

    /// Takes the lock, waiting `wait` at most.
    pub fn take_within(journal: &Path, wait: std::time::Duration) -> Result<Lock, LockError> {
        // A journal that `open` would refuse is refused first, before a
        // lock file is made beside it (`journal /dev/null`: no
        // /dev/null.lock).
        files::no_link(journal).map_err(LockError::Journal)?;
        if fs::metadata(journal).is_ok_and(|m| !m.is_file()) {
            return Err(LockError::Journal(io::Error::other("not a regular file")));
        }
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(directory_of(journal))
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => LockError::Journal(e),
                _ => LockError::Io(io::Error::new(
                    e.kind(),
                    format!("{}: {e}", directory_of(journal).display()),
                )),
            })?;
        let path = Lock::path_of(journal);
        let mut file = files::open(
            &path,
            OpenOptions::new()
                .create(true)
                .read(true)
                .write(true)
                .mode(0o600),
        )
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => LockError::Journal(e),
            _ => LockError::Io(e),
        })?;
        if !file.metadata().map_err(LockError::Io)?.is_file() {
            return Err(LockError::Io(io::Error::other("not a regular file")));
        }
        let deadline = std::time::Instant::now() + wait;
        let (mut file_locked, mut said) = (false, false);
        loop {
            // The file first, then the directory, always in that order: a
            // daemon holding the directory holds its file already, so
            // nobody waits on a daemon that waits on them.
            if !file_locked {
                file_locked = try_flock(&file).map_err(LockError::Io)?;
            }
            if file_locked && try_flock(&dir).map_err(LockError::Io)? {
                break;
            }
            let mut text = String::new();
            let _ = file.seek(SeekFrom::Start(0));
            let _ = io::Read::read_to_string(&mut file, &mut text);
            let pid = text.trim().parse().ok().filter(|&p| files::alive(p));
            if std::time::Instant::now() >= deadline {
                return Err(LockError::Held(pid));
            }
            if !std::mem::replace(&mut said, true) {
                let by = pid.map_or("another process".to_string(), |p| format!("pid {p}"));
                log::warn!(
                    "journal {}: locked by {by}; waiting {}s at most for it to end",
                    journal.display(),
                    wait.as_secs_f32()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let mut lock = Lock {
            _dir: dir,
            file,
            path,
        };
        lock.mine().map_err(LockError::Io)?;
        Ok(lock)
    }

    /// Writes the calling process's pid: again in the detached daemon,
    /// which holds the lock after the fork under a pid of its own.
    pub fn mine(&mut self) -> io::Result<()> {
        let pid = format!("{}\n", std::process::id());
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(pid.as_bytes())
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Gives the lock file, by its descriptor, to `uid`:`gid`: a later
    /// start as that user opens it again.
    pub fn give(&self, uid: libc::uid_t, gid: libc::gid_t) -> io::Result<()> {
        files::fchown(&self.file, uid, gid)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::terminal::journal::testing::dir;

    #[test]
    fn one_journal_one_lock_holder() {
        let d = dir();
        let p = d.join("journal");
        let now = std::time::Duration::ZERO;
        let lock = Lock::take_within(&p, now).unwrap();
        assert_eq!(lock.path(), d.join("journal.lock"));
        let me = std::process::id() as i32;
        // flock conflicts between two opens even in one process: a second
        // daemon is seen the same way.
        match Lock::take_within(&p, now) {
            Err(LockError::Held(Some(pid))) => assert_eq!(pid, me),
            other => panic!("{:?}", other.map(|_| ())),
        }
        // Unreadable pid: still held, pid unknown.
        fs::write(d.join("journal.lock"), "garbage").unwrap();
        assert!(matches!(
            Lock::take_within(&p, now),
            Err(LockError::Held(None))
        ));
        // The lock file removed by hand: the directory is still locked.
        fs::remove_file(d.join("journal.lock")).unwrap();
        assert!(matches!(
            Lock::take_within(&p, now),
            Err(LockError::Held(None))
        ));
        // One journal per directory.
        assert!(matches!(
            Lock::take_within(&d.join("other"), now),
            Err(LockError::Held(_))
        ));
        drop(lock);
        // Released with the holder; the stale content is replaced.
        let _again = Lock::take_within(&p, now).unwrap();
        assert_eq!(
            fs::read_to_string(d.join("journal.lock")).unwrap(),
            format!("{me}\n")
        );
    }

    #[test]
    fn the_lock_descriptors_are_close_on_exec() {
        use std::os::fd::AsRawFd;
        let d = dir();
        let lock = Lock::take_within(&d.join("journal"), std::time::Duration::ZERO).unwrap();
        for fd in [lock._dir.as_raw_fd(), lock.file.as_raw_fd()] {
            // SAFETY: F_GETFD on a descriptor the lock owns.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            assert!(flags >= 0 && flags & libc::FD_CLOEXEC != 0, "{fd}: {flags}");
        }
    }

    #[test]
    fn the_lock_file_is_never_followed() {
        let d = dir();
        let target = d.join("precious");
        fs::write(&target, "keep\n").unwrap();
        std::os::unix::fs::symlink(&target, d.join("journal.lock")).unwrap();
        let now = std::time::Duration::ZERO;
        match Lock::take_within(&d.join("journal"), now) {
            Err(LockError::Io(e)) => assert!(files::is_refused(&e), "{e}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep\n");
        // A journal that could not be one is said of the journal, and no
        // lock file is made beside it.
        for bad in [d.join("no-dir").join("journal"), d.clone()] {
            match Lock::take_within(&bad, now) {
                Err(LockError::Journal(_)) => {}
                other => panic!("{}: {:?}", bad.display(), other.map(|_| ())),
            }
        }
        assert!(!d.with_extension("lock").exists());
        let link = d.join("journal");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        match Lock::take_within(&link, now) {
            Err(LockError::Journal(e)) => assert!(files::is_refused(&e), "{e}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}
