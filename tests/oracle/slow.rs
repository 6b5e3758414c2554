//! A slow disk for one step: strace attached to the daemon delays every
//! fdatasync(2) of every thread (`-e inject=fdatasync:delay_enter=`),
//! with no hook in concertd, until dropped. The idea of tests/serial.rs's
//! SlowDisk, with what a long run needs: when strace cannot attach
//! (missing, ptrace not permitted), the reason is printed once and the
//! step runs without the fault.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::Duration;

/// Past the register's ACK patience on the serial line (1 s, so the
/// request is NAKed) and its answer patience on TCP (1 s, so it gives up).
pub const DELAY: Duration = Duration::from_millis(1500);

pub struct SlowDisk {
    strace: Child,
}

static SAID: Once = Once::new();

impl SlowDisk {
    pub fn attach(pid: u32) -> Option<SlowDisk> {
        let inject = format!("inject=fdatasync:delay_enter={}", DELAY.as_micros());
        let spawned = Command::new("strace")
            .args(["-f", "-o", "/dev/null", "-e", "trace=fdatasync", "-e"])
            .arg(inject)
            .arg("-p")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let mut strace = match spawned {
            Ok(c) => c,
            Err(e) => return skipped(&format!("strace: {e}")),
        };
        let Some(err) = strace.stderr.take() else {
            return skipped("strace: no standard error");
        };
        let mut lines = std::io::BufReader::new(err).lines();
        let mut said = Vec::new();
        // "Process N attached with M threads" once every thread is traced.
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if line.contains(" attached") {
                // Drained, so that strace never blocks on a full pipe.
                std::thread::spawn(move || lines.for_each(drop));
                return Some(SlowDisk { strace });
            }
            said.push(line);
        }
        let _ = strace.wait();
        skipped(&said.join("; "))
    }
}

fn skipped(why: &str) -> Option<SlowDisk> {
    SAID.call_once(|| {
        println!(
            "oracle: SKIPPED the slow-disk fault: strace cannot attach to concertd ({why}); \
             those steps run with a fast disk"
        )
    });
    None
}

impl Drop for SlowDisk {
    fn drop(&mut self) {
        // SIGTERM: strace detaches, releasing a call it holds.
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.strace.id() as i32, libc::SIGTERM) };
        let _ = self.strace.wait();
    }
}
