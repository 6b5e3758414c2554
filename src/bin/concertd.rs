//! concertd: the Concert / Caisse-AP terminal service.

use concert::config::{self, Config, Terminal};
use concert::error::Error;
use concert::journal::Journal;
use concert::net::{self, Settings, Shared};
use concert::simulator::Simulator;
use concert::worker::{self, Control, Worker};
use crossbeam_channel::{select, unbounded};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

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
    if !m.free.is_empty() {
        return Err(Error::Usage(format!(
            "unexpected argument {:?}\n{USAGE}",
            m.free[0]
        )));
    }
    Ok(Args {
        foreground: m.opt_present("d"),
        check: m.opt_present("n"),
        verbosity: m.opt_count("v"),
        file: m.opt_str("f").map(PathBuf::from),
    })
}

fn load(args: &Args) -> Result<Config, Error> {
    match &args.file {
        Some(f) => Config::load(f),
        None => {
            let f = PathBuf::from(config::DEFAULT_FILE);
            if f.exists() {
                Config::load(&f)
            } else {
                log::info!("{}: not found, using the defaults", f.display());
                Ok(Config::default())
            }
        }
    }
}

fn run(args: Args) -> Result<(), Error> {
    let cfg = load(&args)?;
    if args.check {
        print!("{}", cfg.describe());
        println!("configuration OK");
        return Ok(());
    }
    if !args.foreground {
        log::debug!("detaching is not implemented yet: staying in the foreground");
    }
    // Bind everything before starting any thread, so that a bad address is
    // a startup error and nothing half-runs.
    let mut listeners = Vec::new();
    for addr in &cfg.listen {
        let l = TcpListener::bind(addr).map_err(|source| Error::Bind {
            addr: *addr,
            source,
        })?;
        listeners.push(l);
    }
    let (journal, contents) = Journal::open(&cfg.journal, cfg.journal_size, cfg.journal_keep)
        .map_err(|e| Error::io(format!("journal {}", cfg.journal.display()), e))?;
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
    let backend = match cfg.terminal {
        Terminal::Simulator => Box::new(Simulator::new(cfg.simulator_delay)),
    };
    let settings = worker::Settings {
        transaction_timeout: cfg.transaction_timeout,
        retry_window: cfg.retry_window,
    };
    let (worker, handle, control) = Worker::new(backend, journal, contents, settings);
    let (stopped_tx, stopped) = unbounded::<()>();
    std::thread::Builder::new()
        .name("worker".into())
        .spawn(move || {
            worker.run();
            let _ = stopped_tx.send(());
        })
        .map_err(|e| Error::io("cannot start the worker", e))?;
    let shared = Arc::new(Shared {
        settings: Settings {
            allow: cfg.allow_list(),
            currencies: cfg.currencies.clone(),
            request_gap: cfg.request_gap,
            request_timeout: cfg.request_timeout,
            max_connections: cfg.max_connections,
        },
        worker: handle,
        active: AtomicUsize::new(0),
    });
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(|e| Error::io("cannot install signal handlers", e))?;
    if cfg.serial.device.is_some() {
        concert::serial::spawn(concert::serial::Context {
            settings: cfg.serial.clone(),
            worker: shared.worker.clone(),
            currencies: cfg.currencies.clone(),
            request_gap: cfg.request_gap,
        })
        .map_err(|e| Error::io("cannot start the serial thread", e))?;
    }
    for l in listeners {
        let addr = l.local_addr().map_err(|e| Error::io("listener", e))?;
        net::spawn_listener(l, Arc::clone(&shared))
            .map_err(|e| Error::io(format!("cannot start the listener on {addr}"), e))?;
        log::info!("listening on {addr}");
    }
    let allow: Vec<String> = shared
        .settings
        .allow
        .iter()
        .map(ToString::to_string)
        .collect();
    log::info!(
        "ready: terminal simulator (delay {}), journal {}, allow {}",
        config::fmt_duration(cfg.simulator_delay),
        cfg.journal.display(),
        allow.join(" ")
    );
    let (sig_tx, sig_rx) = unbounded();
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
    let mut stopping = false;
    loop {
        select! {
            recv(sig_rx) -> sig => match sig {
                Ok(signal_hook::consts::SIGHUP) => log::warn!(
                    "SIGHUP: configuration reload is not implemented yet; restart to apply changes"
                ),
                Ok(sig) if !stopping => {
                    log::info!("signal {sig}: stopping once the running transaction has ended");
                    stopping = true;
                    let _ = control.send(Control::Stop);
                }
                Ok(sig) => {
                    log::warn!("signal {sig} again: exiting at once");
                    return Err(Error::Usage("stopped before the running transaction ended".into()));
                }
                Err(_) => return Ok(()),
            },
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
    concert::logging::init(args.verbosity);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Straight to stderr: a startup error must be seen even when
            // logging is turned down.
            eprintln!("concertd: {e}");
            ExitCode::from(1)
        }
    }
}
