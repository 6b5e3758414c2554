//! Logs go to stderr. Under systemd (stderr connected to the journal, which
//! sets JOURNAL_STREAM) each line starts with its sd-daemon(3) priority;
//! otherwise with a local timestamp and the level.

use std::io::Write;

/// `-v` count to a level: info by default, debug at `-v`, the wire trace
/// (every frame in and out, card numbers masked) at `-vv`.
pub fn level(verbosity: usize) -> log::LevelFilter {
    match verbosity {
        0 => log::LevelFilter::Info,
        1 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

fn priority(l: log::Level) -> u8 {
    match l {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

pub fn init(verbosity: usize) {
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let mut b = env_logger::Builder::new();
    b.filter_level(level(verbosity));
    if let Ok(spec) = std::env::var("RUST_LOG") {
        b.parse_filters(&spec);
    }
    b.format(move |buf, r| {
        if journal {
            writeln!(buf, "<{}>{}", priority(r.level()), r.args())
        } else {
            writeln!(
                buf,
                "{} {:<5} {}",
                crate::clock::now().stamp(),
                r.level(),
                r.args()
            )
        }
    });
    b.target(env_logger::Target::Stderr);
    let _ = b.try_init();
}
