//! The directories concertd writes in after it started: the journal's
//! (rotation makes and renames files there), the pid file's (removed at
//! exit) and the control socket's (made there). Started as root with
//! `user`, each must be that user's once root is given up, or rotation,
//! the pid file's removal and the socket fail one by one while the
//! service runs on, half working. So, before anything is written:
//!
//! - a directory concertd makes (the pid file's or the socket's when
//!   missing, the default journal directory) is made as root and given
//!   to the user, whatever its name;
//! - an existing one named `concertd`, such as the `/var/lib/concertd`
//!   that `make install` makes, is concertd's own: given too;
//! - any other existing one must let the user write in it, or concertd
//!   refuses to start, naming it and the command that fixes it. Giving it
//!   away instead could give a shared directory (`/run`, `/srv`) to the
//!   service account.
//!
//! A missing journal directory is made only when it is the default one,
//! as systemd's StateDirectory would: a mistyped `journal` line would
//! otherwise start an empty journal elsewhere, and the retry window and
//! refunds by reference would not see the transactions already journaled.

use crate::config;
use crate::config::error::Error;
use crate::config::files;
use crate::service::daemon::Account;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What a directory is for, as the messages say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Journal,
    PidFile,
    Control,
}

impl Role {
    fn what(self) -> &'static str {
        match self {
            Role::Journal => "journal directory",
            Role::PidFile => "pid file directory",
            Role::Control => "control socket directory",
        }
    }

    /// What fails when the user cannot write there.
    fn needs(self) -> &'static str {
        match self {
            Role::Journal => "the journal's rotation",
            Role::PidFile => "the pid file's removal at exit",
            Role::Control => "the control socket",
        }
    }
}

/// A directory concertd writes in.
#[derive(Debug)]
pub struct Dir {
    pub path: PathBuf,
    pub role: Role,
    /// Made by this start, or to be made with this mode: missing.
    pub make: Make,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Make {
    /// It was there.
    Found,
    /// This start made it.
    Made,
    /// Missing: to be made with this mode.
    Missing(u32),
}

/// The default journal's directory, `/var/lib/concertd`.
pub fn default_journal_dir() -> &'static Path {
    Path::new(config::DEFAULT_JOURNAL)
        .parent()
        .unwrap_or(Path::new("/"))
}

fn made_by_install(dir: &Path, user: Option<&str>) -> String {
    match user {
        Some(u) => format!("install -d -m 0750 -o {u} {}", dir.display()),
        None => format!("install -d -m 0750 {}", dir.display()),
    }
}

/// The journal's directory, made (mode 0750) when it is the default one
/// and missing; any other missing one is an error that says how to make
/// it. `user`: the account it will be given to, for the message.
pub fn journal_dir(journal: &Path, user: Option<&str>) -> Result<Dir, Error> {
    let dir = crate::terminal::journal::directory_of(journal).to_path_buf();
    let make = match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => Make::Found,
        Ok(_) => {
            return Err(Error::Directory(format!(
                "journal directory {}: not a directory",
                dir.display()
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if dir != default_journal_dir() {
                return Err(Error::Directory(format!(
                    "journal directory {} does not exist: make it ({}), or name another \
                     journal",
                    dir.display(),
                    made_by_install(&dir, user)
                )));
            }
            files::create_dir(&dir).map_err(|e| {
                Error::Directory(format!(
                    "cannot make the journal directory {}: {e}; make it as root ({}), or \
                     name another journal",
                    dir.display(),
                    made_by_install(&dir, user)
                ))
            })?;
            log::info!("journal directory {}: made, mode 0750", dir.display());
            Make::Made
        }
        // Said by the lock or the journal's opening, with its context.
        Err(_) => Make::Found,
    };
    Ok(Dir {
        path: dir,
        role: Role::Journal,
        make,
    })
}

/// The directory of `file` (the pid file, the control socket), to be
/// made with `mode` when missing.
pub fn parent_of(file: &Path, role: Role, mode: u32) -> Option<Dir> {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty())?;
    let make = match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Make::Missing(mode),
        _ => Make::Found,
    };
    Some(Dir {
        path: dir.to_path_buf(),
        role,
        make,
    })
}

/// Started as root with `user`: checks that `a` can write in every
/// directory found that is not concertd's own (the first that it cannot
/// is the error, with the command that fixes it), then makes the missing
/// ones and gives `a` those made and those named `concertd`, by the
/// descriptor opened (a link refused).
pub fn hand_over(dirs: &[Dir], a: &Account) -> Result<(), Error> {
    let own =
        |d: &Dir| d.make != Make::Found || d.path.file_name().is_some_and(|n| n == "concertd");
    let others: Vec<&Dir> = dirs.iter().filter(|d| !own(d)).collect();
    let paths: Vec<&Path> = others.iter().map(|d| d.path.as_path()).collect();
    let ok = writable_by(&paths, a)
        .map_err(|e| Error::io("cannot check the directories as the service user", e))?;
    if let Some((d, _)) = others.iter().zip(ok).find(|(_, ok)| !ok) {
        return Err(refusal(d, a));
    }
    for d in dirs.iter().filter(|d| own(d)) {
        if let Make::Missing(mode) = d.make {
            match std::fs::DirBuilder::new().mode(mode).create(&d.path) {
                Ok(()) => {}
                // Named twice (the pid file's and the socket's): made once.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(Error::Directory(format!(
                        "cannot make the {} {}: {e}",
                        d.role.what(),
                        d.path.display()
                    )))
                }
            }
        }
        files::give(&d.path, a.uid, a.gid).map_err(|e| {
            Error::Directory(format!(
                "{} {}: cannot give it to {}: {e}",
                d.role.what(),
                d.path.display(),
                a.name
            ))
        })?;
    }
    Ok(())
}

fn refusal(d: &Dir, a: &Account) -> Error {
    let shown = d.path.display();
    let mut fix = format!("chown {} {shown}", a.name);
    if std::fs::metadata(&d.path).is_ok_and(|m| m.mode() & 0o300 != 0o300) {
        fix.push_str(&format!(" && chmod u+wx {shown}"));
    }
    Error::Directory(format!(
        "{} {shown}: user {} cannot write in it, which {} needs; concertd gives \
         away only the directories it makes: give it ({fix}) or name one of its own",
        d.role.what(),
        a.name,
        d.role.needs()
    ))
}

/// Whether `a` may write in (and search) each of `paths`: asked by a
/// child that becomes `a`, so that groups, ACLs and the file system's
/// own rules count as they will after the drop. Needs root; called
/// before any thread exists.
fn writable_by(paths: &[&Path], a: &Account) -> io::Result<Vec<bool>> {
    let mut out = Vec::new();
    // The answer is the child's exit status, one bit a path.
    for some in paths.chunks(6) {
        out.extend(writable_by_child(some, a)?);
    }
    Ok(out)
}

fn writable_by_child(paths: &[&Path], a: &Account) -> io::Result<Vec<bool>> {
    let c: Vec<CString> = paths
        .iter()
        .map(|p| CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other))
        .collect::<io::Result<_>>()?;
    let name = CString::new(a.name.as_bytes()).map_err(io::Error::other)?;
    // SAFETY: fork with no other thread running (the caller's contract);
    // the child only makes system calls and exits with _exit.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => unsafe {
            if libc::initgroups(name.as_ptr(), a.gid) != 0
                || libc::setgid(a.gid) != 0
                || libc::setuid(a.uid) != 0
            {
                libc::_exit(64);
            }
            let mut bits = 0;
            for (i, p) in c.iter().enumerate() {
                if libc::access(p.as_ptr(), libc::W_OK | libc::X_OK) != 0 {
                    bits |= 1 << i;
                }
            }
            libc::_exit(bits)
        },
        child => {
            let mut status = 0;
            // SAFETY: waitpid on the child just forked.
            while unsafe { libc::waitpid(child, &mut status, 0) } == -1 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
            match code {
                Some(bits) if bits < 64 => {
                    Ok((0..paths.len()).map(|i| bits & (1 << i) == 0).collect())
                }
                _ => Err(io::Error::other(format!(
                    "cannot become user {} to check",
                    a.name
                ))),
            }
        }
    }
}
