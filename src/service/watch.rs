//! `config-watch` without polling: inotify on the configuration file and
//! on its directory (filtered by name), so that both an editor writing in
//! place and one saving by rename are seen, and an idle terminal does not
//! wake up; the same for each file it names that is read with it (the
//! `simulator-script`), added as a reload names it. Where inotify cannot
//! be had, the caller polls instead.

use crossbeam_channel::{bounded, Receiver, Sender};
use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Events on the file itself: written, closed after writing, its mode or
/// owner changed, replaced or removed.
const FILE_EVENTS: u32 = libc::IN_MODIFY
    | libc::IN_CLOSE_WRITE
    | libc::IN_ATTRIB
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF;
/// Events on the directory: a file of that name appears or goes.
const DIR_EVENTS: u32 = libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_DELETE | libc::IN_MOVED_FROM;

/// One file watched: its path, its name in its directory, and the watch
/// on that directory.
struct Watched {
    file: CString,
    name: Vec<u8>,
    dir_wd: i32,
}

struct Inotify {
    fd: i32,
    files: Mutex<Vec<Watched>>,
}

impl Drop for Inotify {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor this struct owns.
        unsafe { libc::close(self.fd) };
    }
}

impl Inotify {
    fn new(file: &Path) -> io::Result<Inotify> {
        // SAFETY: inotify_init1 returns a new descriptor or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let me = Inotify {
            fd,
            files: Mutex::new(Vec::new()),
        };
        me.add(file)?;
        Ok(me)
    }

    fn files(&self) -> std::sync::MutexGuard<'_, Vec<Watched>> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Watches `file` too (a watch on the same directory is shared: the
    /// kernel gives its descriptor again).
    fn add(&self, file: &Path) -> io::Result<()> {
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = file.file_name().map(OsStr::as_bytes).unwrap_or_default();
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_bytes()).map_err(|e| io::Error::other(e.to_string()))
        };
        let (cfile, cdir) = (c(file)?, c(&dir)?);
        if self.files().iter().any(|w| w.file == cfile) {
            return Ok(());
        }
        // SAFETY: a valid descriptor and a NUL-terminated path.
        let dir_wd = unsafe { libc::inotify_add_watch(self.fd, cdir.as_ptr(), DIR_EVENTS) };
        if dir_wd < 0 {
            return Err(io::Error::last_os_error());
        }
        let w = Watched {
            file: cfile,
            name: name.to_vec(),
            dir_wd,
        };
        self.watch_file(&w);
        self.files().push(w);
        Ok(())
    }

    /// (Re)arms the watch on the file: after a rename the name points to
    /// another inode. A missing file is no error: the directory watch says
    /// when it comes back.
    fn watch_file(&self, w: &Watched) {
        // SAFETY: a valid descriptor and a NUL-terminated path.
        unsafe { libc::inotify_add_watch(self.fd, w.file.as_ptr(), FILE_EVENTS) };
    }

    /// Blocks until something happened to the file; false when the
    /// descriptor fails.
    fn wait(&self) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: read(2) into a buffer of the given length.
            let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return false;
            }
            let mut hit = false;
            let mut off = 0usize;
            let head = std::mem::size_of::<libc::inotify_event>();
            while off + head <= n as usize {
                // SAFETY: the kernel wrote whole events; read_unaligned
                // copes with the byte buffer's alignment.
                let ev: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
                let len = ev.len as usize;
                let name = buf
                    .get(off + head..off + head + len)
                    .unwrap_or_default()
                    .split(|&b| b == 0)
                    .next()
                    .unwrap_or_default();
                let files = self.files();
                if !files.iter().any(|w| w.dir_wd == ev.wd) {
                    // A watched file's own watch.
                    hit = true;
                }
                for w in files.iter().filter(|w| w.dir_wd == ev.wd) {
                    if name == w.name.as_slice() {
                        hit = true;
                        self.watch_file(w);
                    }
                }
                off += head + len;
            }
            if hit {
                return true;
            }
        }
    }
}

/// Files watched, and the news that one of them may have changed.
pub struct Watch {
    inotify: Arc<Inotify>,
    /// A message each time a watched file may have changed (coalesced).
    pub changes: Receiver<()>,
}

impl Watch {
    /// Watches `file` too, from now on (the script a reload names).
    pub fn add(&self, file: &Path) -> io::Result<()> {
        self.inotify.add(file)
    }
}

/// Starts watching `file`. `None` when inotify cannot be had.
pub fn watch(file: &Path) -> Option<Watch> {
    let ino = match Inotify::new(file) {
        Ok(i) => Arc::new(i),
        Err(e) => {
            log::info!(
                "{}: no inotify ({e}): config-watch polls instead",
                file.display()
            );
            return None;
        }
    };
    let (tx, rx): (Sender<()>, Receiver<()>) = bounded(1);
    let reader = Arc::clone(&ino);
    let spawned = std::thread::Builder::new()
        .name("config-watch".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            while reader.wait() {
                if let Err(crossbeam_channel::TrySendError::Disconnected(_)) = tx.try_send(()) {
                    return;
                }
            }
        });
    spawned.ok().map(|_| Watch {
        inotify: ino,
        changes: rx,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn edits_in_place_and_by_rename_are_seen() {
        let d = std::env::temp_dir().join(format!("concertd-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("concertd.conf");
        std::fs::write(&f, "listen 127.0.0.1:0\n").unwrap();
        let w = watch(&f).expect("inotify");
        let rx = w.changes.clone();
        let seen = |rx: &Receiver<()>| rx.recv_timeout(Duration::from_secs(10)).is_ok();
        // Nothing happened: nothing to say.
        assert!(rx.try_recv().is_err());
        std::fs::write(&f, "listen 127.0.0.1:1\n").unwrap();
        assert!(seen(&rx));
        while rx.try_recv().is_ok() {}
        let tmp = d.join("concertd.conf.new");
        std::fs::write(&tmp, "listen 127.0.0.1:2\n").unwrap();
        std::fs::rename(&tmp, &f).unwrap();
        assert!(seen(&rx));
        while rx.try_recv().is_ok() {}
        // The new inode is watched too.
        std::fs::write(&f, "listen 127.0.0.1:3\n").unwrap();
        assert!(seen(&rx));
        while rx.try_recv().is_ok() {}
        // A file added later (a script), in another directory.
        let sub = d.join("scripts");
        std::fs::create_dir_all(&sub).unwrap();
        let script = sub.join("scenario");
        std::fs::write(&script, "approve\n").unwrap();
        w.add(&script).unwrap();
        // What the writes above left in flight goes first: then only the
        // script's change can be seen.
        while rx.recv_timeout(Duration::from_millis(300)).is_ok() {}
        std::fs::write(&script, "refuse\n").unwrap();
        assert!(seen(&rx));
        let _ = std::fs::remove_dir_all(&d);
    }
}
