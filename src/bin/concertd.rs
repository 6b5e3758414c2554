//! concertd: the Concert / Caisse-AP terminal service.

use concert::config::{self, Config};
use concert::daemon::{self, PidFile};
use concert::error::Error;
use concert::journal::Journal;
use concert::logging;
use concert::service::{self, Service};
use crossbeam_channel::{after, never, select, unbounded};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use std::path::PathBuf;
use std::process::ExitCode;

struct Args {
    foreground: bool,
    check: bool,
    verbosity: usize,
    file: Option<PathBuf>,
}

const USAGE: &str = "usage: concertd [-dnv] [-f file]";

fn parse_args() -> Result<Args, Error> {
    let mut o = getopts::Options::new();
    o.optflag("d", "", "stay in the foreground, log to stderr");
    o.optopt("f", "", "configuration file", "FILE");
    o.optflag("n", "", "check the configuration, print it and exit");
    o.optflagmulti("v", "", "more verbose (-vv: wire trace)");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let m = o
        .parse(&args)
        .map_err(|e| Error::Usage(format!("{e}\n{USAGE}")))?;
    if let Some(extra) = m.free.first() {
        return Err(Error::Usage(format!(
            "unexpected argument {extra:?}\n{USAGE}"
        )));
    }
    Ok(Args {
        foreground: m.opt_present("d"),
        check: m.opt_present("n"),
        verbosity: m.opt_count("v"),
        file: m.opt_str("f").map(PathBuf::from),
    })
}

/// The configuration, and the file it came from (none: the defaults).
fn load(args: &Args) -> Result<(Config, Option<PathBuf>), Error> {
    let f = args
        .file
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_FILE));
    if args.file.is_none() && !f.exists() {
        log::info!("{}: not found, using the defaults", f.display());
        return Ok((Config::default(), None));
    }
    Ok((Config::load(&f)?, Some(f)))
}

/// Where logs go once detached: syslog, else `log-file`, else nowhere
/// (said on stderr while there still is one).
fn destination(cfg: &Config) -> Result<Option<logging::Destination>, Error> {
    if let Ok(s) = logging::syslog_socket() {
        return Ok(Some(logging::Destination::Syslog(s)));
    }
    match &cfg.log_file {
        Some(p) => logging::open_log_file(p)
            .map(|f| Some(logging::Destination::File(f)))
            .map_err(|e| concert::files::error("log-file", p, e)),
        None => {
            eprintln!(
                "concertd: warning: no syslog ({}) and no log-file: once detached, nothing is logged",
                logging::SYSLOG_SOCKET
            );
            Ok(None)
        }
    }
}

fn run(args: Args) -> Result<(), Error> {
    let (cfg, file) = load(&args)?;
    if args.check {
        print!("{}", cfg.describe());
        // The backend as start-up would build it: a program that cannot
        // run fails the check too.
        concert::backend::build(&cfg)
            .map_err(|e| Error::Usage(format!("terminal {}: {e}", cfg.terminal.line())))?;
        println!("configuration OK");
        return Ok(());
    }
    // Past a file size limit (systemd's LimitFSIZE) a write must fail with
    // EFBIG, which the journal undoes, rather than kill the terminal in
    // the middle of a transaction. Before any thread, so all inherit it.
    // SAFETY: signal(2) with SIG_IGN, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    // Everything that can fail at start is done here, in the foreground,
    // so that the error reaches the terminal with a non-zero exit.
    if !args.foreground {
        daemon::check_pidfile(&cfg.pidfile)?;
    }
    let bound = service::bind_all(&cfg.listen)?;
    let (journal, contents) = Journal::open(&cfg.journal, cfg.journal_size, cfg.journal_keep)
        .map_err(|e| concert::files::error("journal", &cfg.journal, e))?;
    if let Some(torn) = &contents.torn {
        log::warn!(
            "{}: torn last line skipped (cut by a crash): {}",
            cfg.journal.display(),
            concert::pan::scrub(torn.as_bytes())
        );
    }
    if contents.bad_lines > 0 {
        log::warn!(
            "{}: {} unreadable lines skipped",
            cfg.journal.display(),
            contents.bad_lines
        );
    }
    let backend = concert::backend::build(&cfg)
        .map_err(|e| Error::Usage(format!("terminal {}: {e}", cfg.terminal.line())))?;
    let account = match &cfg.user {
        Some(u) => Some(daemon::lookup(u, cfg.group.as_deref())?),
        None => None,
    };
    // Handlers first: a signal during start-up is queued, not fatal. They
    // start no thread, so the fork below still copies everything.
    let signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])
        .map_err(|e| Error::io("cannot install signal handlers", e))?;
    let mut ready = None;
    let mut _pidfile = None;
    if !args.foreground {
        let dest = destination(&cfg)?;
        // No thread exists yet: the fork copies the whole service.
        let r = daemon::detach()?;
        if let Some(d) = dest {
            logging::detach_to(d);
        }
        match PidFile::write(&cfg.pidfile) {
            Ok(p) => _pidfile = Some(p),
            Err(e) => {
                r.fail(&e.to_string());
                return Err(e);
            }
        }
        ready = Some(r);
    }
    if let Some(a) = &account {
        // The journal directory and the pid file's stay the service's own,
        // so that rotation and removal work after the drop.
        // Only directories of concertd's own (…/concertd): giving away a
        // shared one such as /run would be a gift to that user.
        let pid_dir = if args.foreground {
            None
        } else {
            cfg.pidfile.parent()
        };
        for p in [cfg.journal.parent(), pid_dir].into_iter().flatten() {
            if p.file_name().is_some_and(|n| n == "concertd") {
                daemon::give(p, a);
            }
        }
        daemon::give_journal(&journal, a);
        if let Err(e) = daemon::drop_to(a) {
            if let Some(r) = ready.take() {
                r.fail(&e.to_string());
            }
            return Err(e);
        }
        log::info!("running as user {}", a.name);
    }
    let (mut service, stopped) = match Service::start(cfg, file, bound, backend, journal, contents)
    {
        Ok(s) => s,
        Err(e) => {
            if let Some(r) = ready.take() {
                r.fail(&e.to_string());
            }
            return Err(e);
        }
    };
    let (sig_tx, sig_rx) = unbounded();
    let mut signals = signals;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig_tx.send(sig).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| Error::io("cannot start the signal thread", e))?;
    log::info!("ready");
    if let Some(r) = ready.take() {
        r.ok();
    }
    let mut stopping = false;
    loop {
        let watch = service.config().config_watch;
        let tick = if watch.is_zero() {
            never()
        } else {
            after(watch)
        };
        select! {
            recv(sig_rx) -> sig => match sig {
                Ok(SIGHUP) => {
                    log::info!("SIGHUP: reading the configuration again");
                    service.reload();
                }
                Ok(SIGUSR1) => service.report(),
                Ok(sig) if !stopping => {
                    log::info!("signal {sig}: stopping once the running transaction has ended");
                    stopping = true;
                    service.stop();
                }
                Ok(sig) => {
                    log::warn!("signal {sig} again: exiting at once");
                    return Err(Error::Usage("stopped before the running transaction ended".into()));
                }
                Err(_) => return Ok(()),
            },
            recv(tick) -> _ => service.check_file(),
            recv(stopped) -> _ => {
                log::info!("stopped");
                return Ok(());
            }
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("concertd: {e}");
            return ExitCode::from(1);
        }
    };
    logging::init(args.verbosity);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Straight to stderr: a startup error must be seen even when
            // logging is turned down. A detached daemon's stderr goes
            // nowhere: its log has it.
            if daemon::detached() {
                log::error!("{e}");
            }
            eprintln!("concertd: {e}");
            ExitCode::from(1)
        }
    }
}
