//! concertd as the stages start it: the integration tests' harness, set
//! for a run that logs a lot and must not leave daemons behind.

use crate::util::{Daemon, Spec};
use std::path::{Path, PathBuf};

/// The garbage stage logs a lot: only the last lines are kept.
const KEEP_LINES: usize = 20_000;

/// Every stage plays its registers from one address, 127.0.0.1: the cap
/// per peer is raised to the global one, which the stages exercise.
fn conf(extra: &str) -> String {
    format!("config-watch 0\nmax-connections-per-peer 1024\n{extra}")
}

/// Starts concertd on `dir/concertd.conf` (`listen 127.0.0.1:0`, the
/// journal in `dir`, then `extra`). The directory stays when the daemon
/// is dropped: `main` removes the whole run's only when nothing was lost.
pub fn start_in(dir: &Path, extra: &str) -> Daemon {
    let mut spec = Spec::new(&conf(extra));
    spec.dir = Some(dir.to_path_buf());
    spec.keep_dir = true;
    spec.keep_lines = Some(KEEP_LINES);
    // Every daemon is started from the main thread, which lives as long as
    // the program: killed with us, even if we are.
    spec.die_with_parent = true;
    Daemon::launch(spec)
}

/// Kills the daemon and starts it again on the same journal, with other
/// extra configuration lines.
pub fn restart(d: &mut Daemon, extra: &str) {
    d.kill9();
    d.set_extra(&conf(extra));
    d.spawn();
}

/// The connection count of a SIGUSR1 state report.
pub fn connections_open(d: &Daemon) -> Option<usize> {
    let mark = d.mark();
    d.signal(libc::SIGUSR1);
    let line = d.wait_log_since(mark, " connections open")?;
    let head = line.split(" connections open").next()?;
    head.rsplit(' ').next()?.parse().ok()
}

pub fn subdir(root: &Path, name: &str) -> PathBuf {
    let d = root.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
