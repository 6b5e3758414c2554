//! Standard output of the command-line tools (concertd's `-h`, `-V`, `-n`;
//! concert; concertctl). A reader that goes away (`| head -1`, `| true`)
//! ends the output, as for any Unix tool: what is left is dropped, and the
//! program goes on to exit with the status its work earned.
//!
//! Rust ignores SIGPIPE, so a write to a closed pipe fails with EPIPE, on
//! which `print!` panics (exit 101): for `concert`, an approved payment
//! would then look like a crash. The tools write through [`print`] instead.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a write failed: nothing more is written.
static ENDED: AtomicBool = AtomicBool::new(false);

/// Writes `text` on standard output, at once (a tool's output may be all
/// that tells a script what happened, and must not wait in a buffer for
/// an exit that may not flush it). Once the reader has gone, this and
/// every later call write nothing and say nothing. Any other write error
/// (a full disk under `> file`) is said once on standard error, and
/// ends the output the same way: the exit status stays the work's.
pub fn print(text: &str) {
    if ENDED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = io::stdout().lock();
    let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) else {
        return;
    };
    ENDED.store(true, Ordering::Relaxed);
    if e.kind() != io::ErrorKind::BrokenPipe {
        let name = std::env::args_os()
            .next()
            .and_then(|a| {
                std::path::Path::new(&a)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "concert".into());
        // Not eprintln!: a closed standard error must not panic either.
        let _ = writeln!(io::stderr(), "{name}: standard output: {e}");
    }
}

/// [`print`] of `text` and a newline.
pub fn line(text: &str) {
    print(&format!("{text}\n"));
}
