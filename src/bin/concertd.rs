//! concertd: the Concert / Caisse-AP terminal service.

use concert::config::error::Error;
use concert::config::{self, Config};
use concert::logging::{self, stdout};
use concert::service::control;
use concert::service::daemon::{self, PidFile};
use concert::service::{self, Service};
use concert::terminal::journal::{Journal, Lock, LockError};
use crossbeam_channel::{after, at, never, select, unbounded};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

struct Args {
    foreground: bool,
    check: bool,
    verbosity: usize,
    file: Option<PathBuf>,
}

const USAGE: &str = "usage: concertd [-dhnVv] [-f file]";

/// What the command line asks for.
enum Action {
    Run(Args),
    /// Text for standard output, then exit 0 (`-h`, `-V`).
    Print(String),
}

fn parse_args() -> Result<Action, Error> {
    let mut o = getopts::Options::new();
    o.optflag("d", "", "stay in the foreground, log to stderr");
    o.optopt("f", "", "configuration file", "FILE");
    o.optflag("h", "help", "print this help and exit");
    o.optflag("n", "", "check the configuration, print it and exit");
    o.optflag("V", "version", "print the version and exit");
    o.optflagmulti("v", "", "more verbose (-vv: wire trace)");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let m = o
        .parse(&args)
        .map_err(|e| Error::Usage(format!("{e}\n{USAGE}")))?;
    if m.opt_present("h") {
        return Ok(Action::Print(o.usage(USAGE)));
    }
    if m.opt_present("V") {
        return Ok(Action::Print(format!(
            "concertd {}\n",
            env!("CARGO_PKG_VERSION")
        )));
    }
    if let Some(extra) = m.free.first() {
        return Err(Error::Usage(format!(
            "unexpected argument {extra:?}\n{USAGE}"
        )));
    }
    Ok(Action::Run(Args {
        foreground: m.opt_present("d"),
        check: m.opt_present("n"),
        verbosity: m.opt_count("v"),
        file: m.opt_str("f").map(PathBuf::from),
    }))
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
    // Absolute: a daemon runs in /, and reloads and the watch must still
    // find the file.
    let f = config::start_dir().join(f);
    Ok((Config::load(&f)?, Some(f)))
}

/// Where logs go once detached: syslog, else `log-file`, else nowhere
/// (said on stderr while there still is one).
fn destination(cfg: &Config) -> Result<Option<logging::Destination>, Error> {
    if let Ok(s) = logging::syslog_socket(&cfg.syslog_socket) {
        return Ok(Some(logging::Destination::Syslog(s)));
    }
    match &cfg.log_file {
        Some(p) => logging::open_log_file(p)
            .map(|f| Some(logging::Destination::File(f)))
            .map_err(|e| concert::config::files::error("log-file", p, e)),
        None => {
            eprintln!(
                "concertd: warning: no syslog ({}) and no log-file: once detached, nothing is logged",
                cfg.syslog_socket.display()
            );
            Ok(None)
        }
    }
}

/// `-n`: what start-up would refuse in the file, else the effective
/// configuration. A wrong file shows only its errors, all of them, the
/// last one returned for `main` to print like any other.
fn check(cfg: &Config, file: Option<&Path>) -> Result<(), Error> {
    let mut errors = Vec::new();
    // The backend as start-up would build it: a program that cannot run
    // fails the check too.
    if let Err(msg) = concert::backend::build(cfg, &Default::default()) {
        errors.push(Error::Terminal {
            line: cfg.terminal.line(),
            msg,
        });
    }
    // Without `user`, `group` is not used, so not looked up (as at start).
    if let Some(u) = &cfg.user {
        if let Err(e) = daemon::lookup(u, cfg.group.as_deref()) {
            errors.push(account_error(file, e));
        }
    }
    match errors.pop() {
        None => {
            stdout::print(&cfg.describe());
            stdout::line("configuration OK");
            Ok(())
        }
        Some(last) => {
            for e in errors {
                eprintln!("concertd: {e}");
            }
            Err(last)
        }
    }
}

/// The journal's directory, made when it is the default one; started as
/// root with `user`, the directories concertd writes in after the drop
/// made when missing and handed over, or checked writable by that user
/// (see `concert::service::dirs`). Before any thread and before anything is
/// written, in the foreground.
fn directories(
    cfg: &Config,
    foreground: bool,
    account: Option<&daemon::Account>,
) -> Result<(), Error> {
    use concert::service::dirs::{self, Role};
    let user = account.map(|a| a.name.as_str());
    let journal = dirs::journal_dir(&cfg.journal, user)?;
    // SAFETY: plain system call.
    let root = unsafe { libc::geteuid() } == 0;
    let Some(a) = account.filter(|_| root) else {
        return Ok(());
    };
    let mut all = vec![journal];
    if !foreground {
        all.extend(dirs::parent_of(&cfg.pidfile, Role::PidFile, 0o750));
    }
    if let Some(c) = &cfg.control {
        // Only a way in: the socket's own mode is the gate (see control).
        all.extend(dirs::parent_of(c, Role::Control, 0o755));
    }
    dirs::hand_over(&all, a)
}

/// A `user` or `group` that cannot be taken on, reported at the line of
/// the file that names it (the file read again: only on this error).
fn account_error(file: Option<&Path>, e: Error) -> Error {
    let Error::Account(msg) = &e else {
        return e;
    };
    let key = if msg.starts_with("group ") {
        "group"
    } else {
        "user"
    };
    let Some(f) = file else {
        return e;
    };
    let text = concert::config::files::read_regular(f, config::MAX_CONFIG_FILE);
    match text.ok().and_then(|t| config::line_of(&t, key)) {
        Some(line) => Error::Config {
            file: f.display().to_string(),
            line,
            msg: concert::wire::pan::masked_text(msg),
        },
        None => e,
    }
}

fn lock_error(journal: &Path, e: LockError) -> Error {
    match e {
        LockError::Held(pid) => Error::JournalInUse {
            journal: journal.to_path_buf(),
            pid,
        },
        LockError::Journal(e) => journal_error("journal", journal, journal, e),
        LockError::Io(e) => journal_error("journal lock", &Lock::path_of(journal), journal, e),
    }
}

/// A journal file (`path`: the journal or its lock) that cannot be
/// opened: refused for want of permission, what to do about it.
fn journal_error(what: &str, path: &Path, journal: &Path, e: std::io::Error) -> Error {
    // (A link or odd file refused by concertd itself says so already.)
    let denied = !concert::config::files::is_refused(&e)
        && (e.kind() == std::io::ErrorKind::PermissionDenied
            || e.raw_os_error() == Some(libc::EPERM));
    if !denied {
        return concert::config::files::error(what, path, e);
    }
    let dir = concert::terminal::journal::directory_of(journal);
    Error::Directory(format!(
        "{what} {}: {e}: concertd may not write in {}; give that directory to the user \
         concertd runs as (chown), or set journal to a file in a directory it may write",
        path.display(),
        dir.display()
    ))
}

fn run(args: Args) -> Result<(), Error> {
    let (cfg, file) = load(&args)?;
    if args.check {
        return check(&cfg, file.as_deref());
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
    let account = match &cfg.user {
        Some(u) => Some(
            daemon::lookup(u, cfg.group.as_deref())
                .map_err(|e| account_error(file.as_deref(), e))?,
        ),
        None => None,
    };
    directories(&cfg, args.foreground, account.as_ref())?;
    // One journal, one concertd: taken before anything is bound or
    // written, so that a second daemon on the same journal (a second `make
    // run`) says so, rather than "address in use" or writing under the
    // first one. Held until `run` returns. A journal that cannot be used
    // at all is reported after the listen addresses, as it always was.
    let lock = match Lock::take(&cfg.journal) {
        Err(e @ LockError::Held(_)) => return Err(lock_error(&cfg.journal, e)),
        other => other,
    };
    let bound = service::bind_all(&cfg.listen)?;
    let mut lock = lock.map_err(|e| lock_error(&cfg.journal, e))?;
    let (journal, contents) = Journal::open(&cfg.journal, cfg.journal_size, cfg.journal_keep)
        .map_err(|e| journal_error("journal", &cfg.journal, &cfg.journal, e))?;
    if let Some(torn) = &contents.torn {
        // Its second field, the transaction id, is no card number.
        let shown = match torn.split(' ').nth(1).and_then(|f| f.parse().ok()) {
            Some(id) => concert::wire::pan::scrub_except(torn.as_bytes(), id),
            None => concert::wire::pan::scrub(torn.as_bytes()),
        };
        log::warn!(
            "{}: torn last line skipped (cut by a crash): {shown}",
            cfg.journal.display()
        );
    }
    // Unreadable lines are counted, and said, as start-up reads them.
    // What the simulator is told to do: one for the service's life, given
    // to every simulator a reload builds.
    let stage = std::sync::Arc::new(concert::backend::stage::Stage::new());
    let backend = concert::backend::build(&cfg, &stage).map_err(|msg| Error::Terminal {
        line: cfg.terminal.line(),
        msg,
    })?;
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
        // The parent that took the lock exits; the lock stays with this
        // process, which must be the pid a second daemon is told.
        if let Err(e) = lock.mine() {
            let e = concert::config::files::error("journal lock", lock.path(), e);
            r.fail(&e.to_string());
            return Err(e);
        }
        ready = Some(r);
    }
    if let Some(a) = &account {
        // Their directories were given or checked at start (`directories`).
        daemon::give_journal(&journal, a);
        daemon::give_lock(&lock, a);
        if let Err(e) = daemon::drop_to(a) {
            if let Some(r) = ready.take() {
                r.fail(&e.to_string());
            }
            return Err(e);
        }
        log::info!("running as user {}", a.name);
    }
    // After the drop, so that the socket is the service user's own; before
    // any thread, as binding it sets the umask for a moment.
    let control = cfg.control.as_deref().and_then(|p| match control::bind(p) {
        Ok(s) => Some(s),
        Err(why) => {
            log::warn!(
                "control {}: {why}; no control socket, concertctl cannot reach this concertd: \
                 set control to a path in a directory concertd's user may write (or control \
                 none), and restart",
                p.display()
            );
            None
        }
    });
    let journal_files = control::Journal {
        path: cfg.journal.clone(),
        keep: cfg.journal_keep,
    };
    let ctl_stage = std::sync::Arc::clone(&stage);
    let (mut service, stopped) =
        match Service::start(cfg, file, bound, backend, stage, journal, contents) {
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
    // The sender stays here: without a socket, `asks` must not close (a
    // closed channel is always ready, and the loop would spin).
    let (ask_tx, asks) = unbounded();
    if let Some(s) = &control {
        let turned_away = control::serve(
            s,
            journal_files,
            ask_tx.clone(),
            ctl_stage,
            service.findings(),
        )
        .map_err(|e| Error::io("cannot start the control thread", e))?;
        service.control_served(turned_away);
    }
    // config-watch: inotify says when the file changed, and the change is
    // applied once no other has come for one config-watch period; without
    // inotify the file is polled every period. Watching starts before
    // "ready", and one check follows the first period, so that a change
    // made while starting is not missed.
    let mut changes = service.file().and_then(concert::service::watch::watch);
    watch_script(&service, changes.as_ref());
    let mut settle: Option<Instant> = Some(Instant::now() + service.config().config_watch);
    log::info!("ready");
    if let Some(r) = ready.take() {
        r.ok();
    }
    let mut stopping = false;
    loop {
        let watch = service.config().config_watch;
        let tick = match (&changes, watch.is_zero(), settle) {
            (_, true, _) => never(),
            (Some(_), false, Some(when)) => at(when),
            (Some(_), false, None) => never(),
            (None, false, _) => after(watch),
        };
        let changed = changes.as_ref().map_or_else(never, |w| w.changes.clone());
        select! {
            recv(sig_rx) -> sig => match sig {
                Ok(SIGHUP) => {
                    log::info!("SIGHUP: reading the configuration again");
                    let _ = service.reload();
                    watch_script(&service, changes.as_ref());
                }
                Ok(SIGUSR1) => service.report(),
                Ok(sig) if !stopping => {
                    log::info!("signal {sig}: stopping once the running transaction has ended");
                    stopping = true;
                    service.stop();
                }
                Ok(sig) => {
                    service.flush_logs();
                    log::warn!("signal {sig} again: exiting at once");
                    return Err(Error::StoppedEarly);
                }
                Err(_) => return Ok(()),
            },
            recv(asks) -> a => match a {
                Ok(control::Ask::Status(to)) => {
                    let _ = to.send(service.status());
                }
                Ok(control::Ask::Reload(to)) => {
                    let _ = to.send(service.reload());
                    watch_script(&service, changes.as_ref());
                }
                Err(_) => {}
            },
            recv(changed) -> c => match c {
                Ok(()) => {
                    if let Some(f) = service.file() {
                        log::debug!(
                            "{}: changed on disk; applied once it stays unchanged",
                            f.display()
                        );
                    }
                    settle = Some(Instant::now() + watch);
                }
                Err(_) => {
                    log::warn!("config-watch: inotify stopped; polling the file instead");
                    changes = None;
                }
            },
            recv(tick) -> _ => {
                if changes.is_some() {
                    settle = None;
                    service.apply_if_changed();
                } else {
                    service.check_file();
                }
                watch_script(&service, changes.as_ref());
            }
            recv(stopped) -> _ => {
                service.flush_logs();
                log::info!("stopped");
                return Ok(());
            }
        }
    }
}

/// config-watch follows the `simulator-script` the running configuration
/// names, as it follows the file: a reload may name another one.
fn watch_script(service: &Service, watch: Option<&concert::service::watch::Watch>) {
    let Some(w) = watch else { return };
    for f in service.watched().iter().skip(1) {
        if let Err(e) = w.add(f) {
            log::warn!(
                "config-watch: cannot watch {}: {e}",
                concert::wire::pan::masked_text(&f.display().to_string())
            );
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Action::Run(a)) => a,
        Ok(Action::Print(text)) => {
            stdout::print(&text);
            return ExitCode::SUCCESS;
        }
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
