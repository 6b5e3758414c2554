//! Opening files in places the service account can write: the journal,
//! its generations, the pid file and the log file.
//!
//! Started as root with `user`, concertd opens these before it drops
//! root, in directories it gives to that user. The user could have left a
//! symbolic link there (`journal -> /etc/shadow`): root must never write
//! through it, nor give its target away. So these files are opened with
//! `O_NOFOLLOW`, a symbolic link is refused with an error naming it, a
//! regular file with another hard link is refused too (with
//! `fs.protected_hardlinks` off, a link is the other way to a root file),
//! and ownership is given with `fchown` on the descriptor opened, never by
//! path. Device paths (`serial`) do follow links, `/dev/serial/by-id/*`
//! being links: they do not come here.
//!
//! The files concertd only reads at start and at reload (the
//! configuration, the `simulator-script`) are read by [`read_regular`]:
//! regular files of bounded size, opened without blocking.

use crate::config::error::Error;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why a file was refused: carried inside an `io::Error`, so that callers
/// can tell it from an ordinary failure (see [`error`]).
#[derive(Debug)]
pub struct Refused {
    path: PathBuf,
    why: Why,
}

#[derive(Debug)]
enum Why {
    Symlink,
    Links(u64),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.why {
            Why::Symlink => write!(f, "{} is a symbolic link: refused", self.path.display()),
            Why::Links(n) => write!(
                f,
                "{} has {n} hard links: refused (concertd's files have one)",
                self.path.display()
            ),
        }
    }
}

impl std::error::Error for Refused {}

fn refused(path: &Path, why: Why) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        Refused {
            path: path.to_path_buf(),
            why,
        },
    )
}

/// True for an error of this module's refusals.
pub fn is_refused(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|r| r.is::<Refused>())
}

/// The startup error for the file `what` at `path`: a refusal names its
/// path itself, anything else gets it as context.
pub fn error(what: &str, path: &Path, e: io::Error) -> Error {
    if is_refused(&e) {
        Error::io(what, e)
    } else {
        Error::io(format!("{what} {}", path.display()), e)
    }
}

/// `O_NOFOLLOW` fails with ELOOP on Linux, EMLINK on the BSDs; ELOOP also
/// comes from a loop in the directories above, which is not this.
fn link_error(path: &Path, e: io::Error) -> io::Error {
    let loop_like = matches!(e.raw_os_error(), Some(libc::ELOOP | libc::EMLINK));
    let is_link = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if loop_like && is_link {
        refused(path, Why::Symlink)
    } else {
        e
    }
}

/// Opens `path` with `opts` and `O_NOFOLLOW`; a regular file must have no
/// other hard link. (A directory or device passes as it is.)
pub fn open(path: &Path, opts: &mut OpenOptions) -> io::Result<File> {
    let f = open_nofollow(path, opts)?;
    single(&f, path)?;
    Ok(f)
}

/// Opens `path` with `opts` and `O_NOFOLLOW`, whatever its link count:
/// for reading a file that is then replaced, not written.
pub fn open_nofollow(path: &Path, opts: &mut OpenOptions) -> io::Result<File> {
    opts.custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| link_error(path, e))
}

/// As [`open_nofollow`], for reading without blocking: a FIFO at `path`
/// opens at once instead of waiting for a writer.
pub fn open_nofollow_nonblock(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| link_error(path, e))
}

/// Refuses a regular file that has another name elsewhere.
pub fn single(f: &File, path: &Path) -> io::Result<()> {
    let m = f.metadata()?;
    if m.is_file() && m.nlink() > 1 {
        return Err(refused(path, Why::Links(m.nlink())));
    }
    Ok(())
}

/// The contents of a file opened for reading only; `None` when missing.
pub fn read(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let mut f = match open(path, OpenOptions::new().read(true)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut v = Vec::new();
    io::Read::read_to_end(&mut f, &mut v)?;
    Ok(Some(v))
}

/// Refuses `path` when it is a symbolic link.
pub fn no_link(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(refused(path, Why::Symlink)),
        _ => Ok(()),
    }
}

/// A new file, created here and now (`O_CREAT|O_EXCL|O_NOFOLLOW`): one
/// left at `path`, a link included, is removed first, never written
/// through. For files that are replaced whole: the pid file, the
/// journal's next generation.
pub fn create_new(path: &Path, opts: &mut OpenOptions, mode: u32) -> io::Result<File> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // Something put back in between makes this fail rather than follow it.
    opts.create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| link_error(path, e))
}

/// A directory concertd creates: mode 0750, not readable by everyone.
pub fn create_dir(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new().mode(0o750).create(path)
}

/// Whether the process a pid file (or lock file) names still exists,
/// ours or not.
pub fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

/// Gives the opened file to `uid`:`gid`.
pub fn fchown(f: &File, uid: libc::uid_t, gid: libc::gid_t) -> io::Result<()> {
    // SAFETY: fchown on a descriptor `f` owns.
    if unsafe { libc::fchown(f.as_raw_fd(), uid, gid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Gives the file or directory at `path`, opened without following a
/// link, to `uid`:`gid`.
pub fn give(path: &Path, uid: libc::uid_t, gid: libc::gid_t) -> io::Result<()> {
    let f = open(path, OpenOptions::new().read(true))?;
    fchown(&f, uid, gid)
}

/// Reads a text file of at most `limit` bytes that must be a regular file.
/// It is opened with `O_NONBLOCK` and checked with `fstat` before a byte
/// is read: a FIFO never blocks the thread that reloads (nobody need
/// write to it), and a device such as /dev/zero, which never ends, is
/// refused rather than read until memory runs out. A file that grows past
/// `limit` while it is read is refused too.
pub fn read_regular(path: &Path, limit: u64) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    let kind = meta.file_type();
    let other = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{what}, not a regular file: refused (concertd reads only regular files)"),
        )
    };
    if !kind.is_file() {
        return Err(other(if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "of another type"
        }));
    }
    let too_big = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("larger than {} KiB: refused", limit / 1024),
        )
    };
    if meta.len() > limit {
        return Err(too_big());
    }
    let mut text = String::new();
    file.take(limit + 1).read_to_string(&mut text)?;
    if text.len() as u64 > limit {
        return Err(too_big());
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_bound_are_read() {
        let dir = std::env::temp_dir().join(format!("concertd-regular-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo(3) with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let refused = |p: &Path, limit| read_regular(p, limit).unwrap_err().to_string();
        // Returns at once although nobody writes to it.
        assert!(refused(&fifo, 1024).starts_with("a FIFO, not a regular file"));
        assert!(refused(Path::new("/dev/zero"), 1024).starts_with("a character device"));
        assert!(refused(&dir, 1024).starts_with("a directory"));
        let f = dir.join("f");
        std::fs::write(&f, vec![b'a'; 1025]).unwrap();
        assert_eq!(refused(&f, 1024), "larger than 1 KiB: refused");
        std::fs::write(&f, vec![b'a'; 1024]).unwrap();
        assert_eq!(read_regular(&f, 1024).unwrap().len(), 1024);
        let _ = std::fs::remove_dir_all(&dir);
    }

    use std::os::unix::fs::PermissionsExt;

    fn dir() -> PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "concertd-files-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_symbolic_link_is_refused_by_name_and_its_target_untouched() {
        let d = dir();
        let target = d.join("target");
        fs::write(&target, "root's\n").unwrap();
        let link = d.join("journal");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = open(&link, OpenOptions::new().append(true).create(true)).unwrap_err();
        assert!(is_refused(&e));
        assert_eq!(
            e.to_string(),
            format!("{} is a symbolic link: refused", link.display())
        );
        assert_eq!(
            error("journal", &link, e).to_string(),
            format!("journal: {} is a symbolic link: refused", link.display())
        );
        // A dangling link is refused too, not created through.
        let dangling = d.join("log");
        std::os::unix::fs::symlink(d.join("nowhere"), &dangling).unwrap();
        let e = open(&dangling, OpenOptions::new().append(true).create(true)).unwrap_err();
        assert!(is_refused(&e), "{e}");
        assert!(!d.join("nowhere").exists());
        assert!(is_refused(&read(&link).unwrap_err()));
        assert!(is_refused(&give(&link, 0, 0).unwrap_err()));
        assert_eq!(fs::read_to_string(&target).unwrap(), "root's\n");
        // Ordinary errors keep their context.
        let e = open(&d.join("no/such"), OpenOptions::new().read(true)).unwrap_err();
        assert!(!is_refused(&e));
        assert_eq!(read(&d.join("missing")).unwrap(), None);
    }

    #[test]
    fn a_file_with_another_hard_link_is_refused() {
        let d = dir();
        let target = d.join("target");
        fs::write(&target, "x").unwrap();
        let link = d.join("journal");
        fs::hard_link(&target, &link).unwrap();
        let e = open(&link, OpenOptions::new().append(true)).unwrap_err();
        assert!(is_refused(&e));
        assert!(e.to_string().contains("has 2 hard links: refused"), "{e}");
    }

    #[test]
    fn create_new_replaces_a_link_without_writing_through_it() {
        let d = dir();
        let target = d.join("target");
        fs::write(&target, "keep\n").unwrap();
        let other = d.join("other");
        fs::write(&other, "keep too\n").unwrap();
        for (name, how) in [("sym", 0), ("hard", 1)] {
            let p = d.join(name);
            if how == 0 {
                std::os::unix::fs::symlink(&target, &p).unwrap();
            } else {
                fs::hard_link(&other, &p).unwrap();
            }
            let mut f = create_new(&p, OpenOptions::new().write(true), 0o600).unwrap();
            io::Write::write_all(&mut f, b"new\n").unwrap();
            assert!(fs::symlink_metadata(&p).unwrap().is_file());
            assert_eq!(fs::read_to_string(&p).unwrap(), "new\n");
            assert_eq!(
                fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep\n");
        assert_eq!(fs::read_to_string(&other).unwrap(), "keep too\n");
    }

    #[test]
    fn created_directories_are_0750_and_given_by_descriptor() {
        let d = dir();
        let sub = d.join("concertd");
        create_dir(&sub).unwrap();
        let mode = fs::metadata(&sub).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode & !0o750, 0, "{mode:o}");
        assert_eq!(mode & 0o700, 0o700, "{mode:o}");
        // Giving it to ourselves works unprivileged; a link in its place
        // is refused.
        // SAFETY: plain system calls.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        give(&sub, uid, gid).unwrap();
        let link = d.join("link");
        std::os::unix::fs::symlink(&sub, &link).unwrap();
        assert!(is_refused(&give(&link, uid, gid).unwrap_err()));
    }
}
