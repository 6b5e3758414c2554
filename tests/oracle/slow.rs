//! A slow disk for one step: tests/util.rs's SlowDisk, with what a long
//! run needs: when strace cannot attach (missing, ptrace not permitted),
//! the reason is printed once and the step runs without the fault.

use crate::util::{SlowDisk, Unslowed};
use std::sync::Once;
use std::time::Duration;

/// Past the register's ACK patience on the serial line (1 s, so the
/// request is NAKed) and its answer patience on TCP (1 s, so it gives up).
pub const DELAY: Duration = Duration::from_millis(1500);

static SAID: Once = Once::new();

pub fn attach(pid: u32) -> Option<SlowDisk> {
    let why = match SlowDisk::attach(pid, DELAY) {
        Ok(s) => return Some(s),
        Err(Unslowed::Missing(e)) => format!("strace: {e}"),
        Err(Unslowed::Refused(said)) => said,
    };
    SAID.call_once(|| {
        println!(
            "oracle: SKIPPED the slow-disk fault: strace cannot attach to concertd ({why}); \
             those steps run with a fast disk"
        )
    });
    None
}
