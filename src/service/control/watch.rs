//! `watch`: a control connection that streams the terminal's events (see
//! [`crate::logging::events`]) as lines, after `ok`, until the client
//! closes it. Its thread waits on the watcher's queue, never on the
//! worker; a write that cannot go out within [`WRITE_WAIT`] (a client
//! that stopped reading) ends the watch.

use crate::logging::events::hub;
use crossbeam_channel::RecvTimeoutError;
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// How often a quiet watch looks whether its client is still there: a
/// closed watcher's place is free again within this.
const CHECK: Duration = Duration::from_millis(500);
/// A watcher whose socket stays full this long (its client stopped
/// reading altogether) is dropped; one that only reads slowly loses
/// events meanwhile and is told how many when it catches up.
const WRITE_WAIT: Duration = Duration::from_secs(60);

/// Serves a watcher until its client goes.
pub(super) fn watch(conn: &mut UnixStream) {
    let w = match hub().subscribe() {
        Ok(w) => w,
        Err(full) => {
            let _ = conn.write_all(format!("refused\n{full}\n").as_bytes());
            return;
        }
    };
    let _ = conn.set_write_timeout(Some(WRITE_WAIT));
    log::info!("control: a watcher came ({} watching)", hub().watchers());
    if conn.write_all(b"ok\n").is_err() {
        return;
    }
    let mut out = String::new();
    loop {
        match w.lines().recv_timeout(CHECK) {
            Ok(line) => {
                // What came meanwhile goes in the same write.
                out.clear();
                for l in std::iter::once(line).chain(w.lines().try_iter()) {
                    out.push_str(&l);
                    out.push('\n');
                }
                match w.take_lost() {
                    0 => {}
                    n => out.push_str(&format!("lost {n}\n")),
                }
                if let Err(e) = conn.write_all(out.as_bytes()) {
                    log::info!("control: a watcher dropped: {e}");
                    return;
                }
            }
            Err(RecvTimeoutError::Timeout) if gone(conn) => break,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    log::info!("control: a watcher left");
}

/// The client closed its end (what it sends is read and ignored).
fn gone(conn: &UnixStream) -> bool {
    let mut buf = [0u8; 64];
    loop {
        // SAFETY: recv(2) into a buffer of ours, on a descriptor we hold;
        // MSG_DONTWAIT keeps the socket's blocking mode for the writes.
        let n = unsafe {
            libc::recv(
                conn.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        match n {
            0 => return true,
            n if n > 0 => return false,
            _ => {
                let e = std::io::Error::last_os_error();
                return match e.kind() {
                    std::io::ErrorKind::WouldBlock => false,
                    std::io::ErrorKind::Interrupted => continue,
                    _ => true,
                };
            }
        }
    }
}
