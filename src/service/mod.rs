//! The running service: its threads, and a configuration that a reload
//! replaces without dropping a running transaction or a connection.

// The control socket, daemon mode and its directories, `config-watch`.
pub mod control;
pub mod daemon;
pub mod dirs;
pub mod watch;

use crate::config::error::Error;
use crate::config::Config;
use crate::front::net::{self, Listening, Shared};
use crate::front::serial;
use crate::terminal::journal::{Contents, Journal};
use crate::terminal::worker::{self, Control, Worker};
use crossbeam_channel::{unbounded, Receiver, Sender};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How long a reload waits for an old listener to let go of an address
/// that the new configuration binds again.
const REBIND: Duration = Duration::from_secs(2);

/// Binds every `listen` address: done before anything else, so that a bad
/// or busy address is a startup error.
pub fn bind_all(addrs: &[SocketAddr]) -> Result<Vec<(SocketAddr, TcpListener)>, Error> {
    addrs
        .iter()
        .map(|a| {
            TcpListener::bind(a)
                .map(|l| (*a, l))
                .map_err(|source| Error::Bind { addr: *a, source })
        })
        .collect()
}

fn net_settings(c: &Config) -> net::Settings {
    net::Settings {
        allow: c.allow_list(),
        currencies: c.currencies.clone(),
        request_gap: c.request_gap,
        request_timeout: c.request_timeout,
        max_connections: c.max_connections,
        max_connections_per_peer: c.max_connections_per_peer,
        profile: c.profile(),
    }
}

fn worker_settings(c: &Config) -> worker::Settings {
    worker::Settings {
        transaction_timeout: c.transaction_timeout,
        retry_window: c.retry_window,
        extensions: c.extensions(),
        serial_number: c.serial_number(),
    }
}

fn serial_conf(c: &Config) -> serial::Conf {
    serial::Conf {
        settings: c.serial.clone(),
        currencies: c.currencies.clone(),
        request_gap: c.request_gap,
        request_timeout: c.request_timeout,
        profile: c.profile(),
    }
}

/// The file's identity for `config-watch`: changed when any part changes
/// (a save by rename gives a new inode).
type Stamp = (SystemTime, u64, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// What `config-watch` compares: the configuration file's stamp and that
/// of the `simulator-script` it names, read with it.
type Stamps = (Option<Stamp>, Option<Stamp>);

fn stamps(file: &Path, cfg: &Config) -> Stamps {
    let script = cfg.simulator_script.as_ref().and_then(|s| stamp(&s.path));
    (stamp(file), script)
}

/// Why a file read for a reload is not applied as it stands. An editor
/// saving in place truncates the file and then writes it: caught in
/// between, the file is empty or ends mid-line, and applying it would put
/// every keyword back to its default (the simulator, which approves
/// everything, on 0.0.0.0:8888).
fn unfinished(text: &str) -> Option<&'static str> {
    let keyword = text
        .lines()
        .any(|l| crate::config::words(l).is_ok_and(|w| !w.is_empty()));
    if !keyword {
        return Some("it has no keyword line (empty, or being written)");
    }
    if !text.ends_with('\n') {
        return Some("its last line has no newline (being written)");
    }
    None
}

/// Which file `config-watch` saw change, for the log.
fn changed_on_disk(file: &Path, cfg: &Config, now: Stamps, was: Stamps) -> String {
    match &cfg.simulator_script {
        Some(s) if now.0 == was.0 => format!(
            "simulator-script {}: changed on disk",
            crate::wire::pan::masked_text(&s.path.display().to_string())
        ),
        _ => format!("{}: changed on disk", file.display()),
    }
}

/// Whether the file has a line of this keyword at all.
fn names(text: &str, keyword: &str) -> bool {
    text.lines()
        .any(|l| crate::config::words(l).is_ok_and(|w| w.first().is_some_and(|k| k == keyword)))
}

fn addresses(addrs: &[SocketAddr]) -> String {
    let a: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    a.join(" ")
}

/// Says what the simulator is whenever it is the backend: an operator
/// must never take its approvals for payments.
fn warn_if_simulator(cfg: &Config) {
    if cfg.terminal == crate::config::Terminal::Simulator {
        log::warn!("terminal simulator: no card is charged; every outcome is simulated");
    }
    if cfg.profile() != cfg.terminal_profile {
        log::warn!(
            "terminal-profile {}: not applied with terminal relay: answers carry the \
             upstream's outcome in the generic shape",
            cfg.terminal_profile.name()
        );
    }
}

pub struct Service {
    cfg: Config,
    file: Option<PathBuf>,
    file_stamp: Stamps,
    /// A change `config-watch` saw, applied once it has stayed the same
    /// for one more period.
    settling: Option<Stamps>,
    shared: Arc<Shared>,
    listeners: Vec<Listening>,
    control: Sender<Control>,
    /// The serial thread, once a configuration names a device.
    serial: Option<serial::Updates>,
    started: std::time::Instant,
    /// The control socket's connections turned away, once it is served.
    turned_away: Option<Arc<crate::service::control::TurnedAway>>,
}

impl Service {
    /// Starts the worker, the serial thread and the listeners. Returns the
    /// service and a channel that closes when the worker has stopped.
    pub fn start(
        cfg: Config,
        file: Option<PathBuf>,
        bound: Vec<(SocketAddr, TcpListener)>,
        backend: Box<dyn crate::backend::Backend>,
        stage: std::sync::Arc<crate::backend::stage::Stage>,
        journal: Journal,
        contents: Contents,
    ) -> Result<(Service, Receiver<()>), Error> {
        let (worker, handle, control) = Worker::new(
            backend,
            cfg.terminal.clone(),
            journal,
            contents,
            worker_settings(&cfg),
            stage,
        );
        let (stopped_tx, stopped) = unbounded::<()>();
        std::thread::Builder::new()
            .name("worker".into())
            .spawn(move || {
                worker.run();
                drop(stopped_tx);
            })
            .map_err(|e| Error::io("cannot start the worker", e))?;
        let shared = Arc::new(
            Shared::new(net_settings(&cfg), handle)
                .map_err(|e| Error::io("cannot start the log summary thread", e))?,
        );
        let serial = match cfg.serial.device {
            Some(_) => Some(
                serial::spawn(
                    serial_conf(&cfg),
                    shared.worker.clone(),
                    Arc::clone(&shared.floodgate),
                    Arc::clone(&shared.findings),
                )
                .map_err(|e| Error::io("cannot start the serial thread", e))?,
            ),
            None => None,
        };
        let mut listeners = Vec::new();
        for (configured, l) in bound {
            let listening = net::spawn_listener(l, configured, Arc::clone(&shared))
                .map_err(|e| Error::io(format!("cannot start the listener on {configured}"), e))?;
            log::info!("listening on {}", listening.local);
            listeners.push(listening);
        }
        let file_stamp = file.as_deref().map_or((None, None), |f| stamps(f, &cfg));
        let service = Service {
            cfg,
            file,
            file_stamp,
            settling: None,
            shared,
            listeners,
            control,
            serial,
            started: std::time::Instant::now(),
            turned_away: None,
        };
        log::info!("running: {}", service.cfg.summary());
        warn_if_simulator(&service.cfg);
        if !service.cfg.retry_window.is_zero() {
            // Replays used to be on by default: say that they are on here
            // because the file asks, and what that requires of registers.
            log::warn!(
                "retry-window {}: safe retry is on (the default is now 0, off); \
                 approved and unknown outcomes are replayed for a V3 debit or credit with the \
                 same CA CD CB CE CF, so every register must send a new CF for each payment attempt",
                crate::config::fmt_duration(service.cfg.retry_window)
            );
        }
        Ok((service, stopped))
    }

    /// The registers' findings, for the control socket.
    pub fn findings(&self) -> Arc<crate::front::findings::Findings> {
        Arc::clone(&self.shared.findings)
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The configuration file, when there is one.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The files `config-watch` watches: the configuration file and the
    /// script it names.
    pub fn watched(&self) -> Vec<PathBuf> {
        let Some(f) = &self.file else {
            return Vec::new();
        };
        let mut files = vec![f.clone()];
        files.extend(self.cfg.simulator_script.as_ref().map(|s| s.path.clone()));
        files
    }

    /// `config-watch` with inotify: the file has been quiet for a whole
    /// period since its last change; applied if it differs from what was
    /// last read.
    pub fn apply_if_changed(&mut self) {
        let Some(f) = &self.file else { return };
        let now = stamps(f, &self.cfg);
        if now != self.file_stamp {
            log::info!("{}", changed_on_disk(f, &self.cfg, now, self.file_stamp));
            let _ = self.reload();
        }
    }

    /// `config-watch`: reloads when the file changed on disk and has then
    /// stayed the same for one whole period, so that a file still being
    /// written is not read half-way.
    pub fn check_file(&mut self) {
        let Some(f) = &self.file else { return };
        let now = stamps(f, &self.cfg);
        if now == self.file_stamp {
            self.settling = None;
            return;
        }
        if self.settling != Some(now) {
            log::debug!(
                "{}: changed on disk; applied once it stays unchanged",
                f.display()
            );
            self.settling = Some(now);
            return;
        }
        self.settling = None;
        log::info!("{}", changed_on_disk(f, &self.cfg, now, self.file_stamp));
        let _ = self.reload();
    }

    /// Reads the file again and applies it. An invalid file changes
    /// nothing; keywords that need a restart keep their running values.
    /// Says what changed, or why nothing did (`concertctl reload`); the log
    /// has it too.
    pub fn reload(&mut self) -> Result<String, String> {
        let r = self.reload_file();
        crate::logging::events::publish(crate::logging::events::Event::Reload(r.clone()));
        r
    }

    fn reload_file(&mut self) -> Result<String, String> {
        let Some(file) = self.file.clone() else {
            let why = "concertd runs on its defaults, there is no file to read again";
            log::warn!("reload: {why}");
            return Err(why.into());
        };
        let refuse = |why: String| {
            log::error!("reload: {why}; the running configuration is kept");
            Err(format!("{why}; the running configuration is kept"))
        };
        // Until the files change again, config-watch leaves them alone.
        self.file_stamp = stamps(&file, &self.cfg);
        // Never blocks on a FIFO, never reads a device without end.
        let text = match crate::config::files::read_regular(&file, crate::config::MAX_CONFIG_FILE) {
            Ok(t) => t,
            Err(e) => return refuse(format!("{}: {e}", file.display())),
        };
        if let Some(why) = unfinished(&text) {
            return refuse(format!("{} not applied: {why}", file.display()));
        }
        if self.cfg.terminal != crate::config::Terminal::Simulator && !names(&text, "terminal") {
            return refuse(format!(
                "{} not applied: it has no terminal line, which would replace \
                 terminal {} with the simulator",
                file.display(),
                self.cfg.terminal.shown()
            ));
        }
        // The same for the addresses: a file that lost its `listen` lines
        // would move the registers' terminal to the default address.
        let default_listen = Config::default().listen;
        if self.cfg.listen != default_listen && !names(&text, "listen") {
            return refuse(format!(
                "{} not applied: it has no listen line, which would replace \
                 listen {} with the default, listen {}",
                file.display(),
                addresses(&self.cfg.listen),
                addresses(&default_listen)
            ));
        }
        let shown = file.display().to_string();
        let read = Config::parse(&text, &shown).and_then(|mut c| {
            c.absolute_paths();
            c.read_script()
                .map_err(|e| crate::config::script_error(&text, &shown, e))
                .map(|()| c)
        });
        let mut new = match read {
            Ok(c) => c,
            Err(e) => return refuse(e.to_string()),
        };
        let restart = new.keep_restart_only(&self.cfg);
        // What changed, as `-n` prints it: the lines gone, then the new ones,
        // their values masked (concertd-logging.7, Card numbers).
        let (old_lines, new_lines) = (self.cfg.describe(), new.describe());
        let shown = crate::wire::pan::masked_text;
        let mut said: Vec<String> = old_lines
            .lines()
            .filter(|o| !new_lines.lines().any(|l| l == *o))
            .map(|l| format!("was: {}", shown(l)))
            .chain(
                new_lines
                    .lines()
                    .filter(|l| !old_lines.lines().any(|o| o == *l))
                    .map(|l| format!("now: {}", shown(l))),
            )
            .collect();
        for key in restart {
            log::warn!("reload: {key} changed; that needs a restart, the running value is kept");
            said.push(format!("{key} changed: needs a restart, not applied"));
        }
        // Before anything else applies: a new address that cannot be bound
        // refuses the whole file, the old listeners still serving.
        if let Err(why) = self.rebind(&new.listen) {
            return refuse(why);
        }
        // The script first: the worker's simulator then finds it the same.
        let script = self
            .shared
            .worker
            .stage()
            .load_script(new.simulator_script.as_ref());
        if new.simulator_script.as_ref().map(|s| &s.path)
            != self.cfg.simulator_script.as_ref().map(|s| &s.path)
        {
            self.file_stamp.1 = new.simulator_script.as_ref().and_then(|s| stamp(&s.path));
        }
        self.shared.set_settings(net_settings(&new));
        let _ = self.control.send(Control::Reload(
            worker_settings(&new),
            Box::new(new.clone()),
        ));
        match (&self.serial, &new.serial.device) {
            (Some(s), _) => s.send(serial_conf(&new)),
            (None, Some(_)) => match serial::spawn(
                serial_conf(&new),
                self.shared.worker.clone(),
                Arc::clone(&self.shared.floodgate),
                Arc::clone(&self.shared.findings),
            ) {
                Ok(s) => self.serial = Some(s),
                Err(e) => {
                    log::error!("reload: cannot start the serial thread: {e}");
                    said.push(format!("cannot start the serial thread: {e}"));
                }
            },
            (None, None) => {}
        }
        self.cfg = new;
        log::info!("reloaded: {}", self.cfg.summary());
        warn_if_simulator(&self.cfg);
        if let Some(v) = script.as_ref().filter(|v| v.changed) {
            said.push(v.said.clone());
        }
        if said.is_empty() {
            said.push("nothing changed".into());
        }
        if let Some(v) = script.filter(|v| !v.changed) {
            said.push(v.said);
        }
        Ok(format!("reloaded {}\n{}", file.display(), said.join("\n")))
    }

    /// Moves the listeners to `wanted`, all or nothing. Every new address
    /// is bound before any old listener closes, so that no client finds
    /// the door shut; where a new address overlaps an old one on the same
    /// port, that old one closes first, and opens again if the move fails.
    /// On failure the listeners are those that ran before, and the error
    /// says which address could not be bound and why.
    fn rebind(&mut self, wanted: &[SocketAddr]) -> Result<(), String> {
        let (keep, mut old): (Vec<Listening>, Vec<Listening>) = self
            .listeners
            .drain(..)
            .partition(|l| wanted.contains(&l.configured));
        let mut fresh: Vec<SocketAddr> = Vec::new();
        for a in wanted {
            if !keep.iter().any(|l| l.configured == *a) && !fresh.contains(a) {
                fresh.push(*a);
            }
        }
        let mut bound: Vec<(SocketAddr, TcpListener)> = Vec::new();
        let mut overlapping = Vec::new();
        let mut failed = None;
        for addr in fresh {
            match TcpListener::bind(addr) {
                Ok(l) => bound.push((addr, l)),
                Err(e)
                    if e.kind() == io::ErrorKind::AddrInUse
                        && old.iter().any(|o| o.local.port() == addr.port()) =>
                {
                    overlapping.push(addr)
                }
                Err(e) => {
                    failed = Some(format!("cannot listen on {addr}: {e}"));
                    break;
                }
            }
        }
        // Only once every other new address is bound: an overlapping one
        // needs its old listener closed first.
        let mut reopen: Vec<(SocketAddr, SocketAddr)> = Vec::new();
        if failed.is_none() {
            for addr in overlapping {
                let Some(i) = old.iter().position(|o| o.local.port() == addr.port()) else {
                    failed = Some(format!("cannot listen on {addr}: address in use"));
                    break;
                };
                let o = old.remove(i);
                log::info!(
                    "reload: {addr} overlaps {}: closing that one first",
                    o.local
                );
                reopen.push((o.configured, o.local));
                o.close();
                match bind_retrying(&addr) {
                    Ok(l) => bound.push((addr, l)),
                    Err(e) => {
                        failed = Some(format!("cannot listen on {addr}: {e}"));
                        break;
                    }
                }
            }
        }
        let mut started = Vec::new();
        if failed.is_none() {
            for (addr, l) in bound.drain(..) {
                match net::spawn_listener(l, addr, Arc::clone(&self.shared)) {
                    Ok(l) => started.push(l),
                    Err(e) => {
                        failed = Some(format!("cannot start the listener on {addr}: {e}"));
                        break;
                    }
                }
            }
        }
        if let Some(why) = failed {
            // Back as it was: what was bound for the move lets go, and an
            // old listener closed for an overlap listens again.
            drop(bound);
            for l in started {
                l.close();
            }
            self.listeners = keep;
            self.listeners.append(&mut old);
            for (configured, local) in reopen {
                match bind_retrying(&local)
                    .and_then(|l| net::spawn_listener(l, configured, Arc::clone(&self.shared)))
                {
                    Ok(l) => {
                        log::info!("listening on {} again", l.local);
                        self.listeners.push(l);
                    }
                    Err(e) => log::error!(
                        "reload: cannot listen on {local} again: {e}; nothing listens there"
                    ),
                }
            }
            return Err(why);
        }
        for l in &started {
            log::info!("listening on {}", l.local);
        }
        for o in old {
            o.close();
        }
        self.listeners = keep;
        self.listeners.append(&mut started);
        Ok(())
    }

    /// The control socket is served: its connections turned away are
    /// part of the live state.
    pub fn control_served(&mut self, turned_away: Arc<crate::service::control::TurnedAway>) {
        self.turned_away = Some(turned_away);
    }

    /// SIGUSR1: the live state in the log, a line each, as `concertctl
    /// status` says it.
    pub fn report(&self) {
        for line in self.state() {
            log::info!("state: {line}");
        }
    }

    /// `concertctl status`: the live state.
    pub fn status(&self) -> String {
        self.state().join("\n")
    }

    /// The live state, one fact a line, for SIGUSR1 and `concertctl
    /// status` alike. The worker's part comes from the worker itself,
    /// which answers at once between jobs.
    fn state(&self) -> Vec<String> {
        let up = self.started.elapsed().as_secs();
        let mut out = vec![
            format!(
                "concertd {}, up {}h{:02}m{:02}s",
                env!("CARGO_PKG_VERSION"),
                up / 3600,
                up / 60 % 60,
                up % 60
            ),
            format!(
                "terminal: {}",
                match self.cfg.terminal {
                    crate::config::Terminal::Simulator => format!(
                        "simulator (delay {}; no card is charged)",
                        crate::config::fmt_duration(self.cfg.simulator_delay)
                    ),
                    ref t => t.shown(),
                }
            ),
        ];
        let listening: Vec<String> = self.listeners.iter().map(|l| l.local.to_string()).collect();
        out.push(format!(
            "listening on {}; {} connections open; {}",
            listening.join(" "),
            self.shared
                .peers
                .active
                .load(std::sync::atomic::Ordering::Relaxed),
            self.cfg.summary()
        ));
        out.push(format!(
            "serial: {}",
            match &self.serial {
                Some(s) => s.state(),
                None => "none".into(),
            }
        ));
        let (tx, rx) = crossbeam_channel::bounded(1);
        let _ = self.control.send(Control::Status(tx));
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(lines) => out.extend(lines),
            Err(_) => out.push("worker: no answer (stopped?)".into()),
        }
        if self.cfg.terminal == crate::config::Terminal::Simulator {
            out.extend(
                self.shared
                    .worker
                    .stage()
                    .state()
                    .lines()
                    .map(str::to_string),
            );
        }
        use crate::logging::floodgate::Kind;
        out.push(format!(
            "refused connections: {}; bad requests: {}",
            self.shared.floodgate.count(Kind::Refused),
            self.shared.floodgate.count(Kind::BadRequest)
        ));
        if let Some(t) = &self.turned_away {
            out.push(t.status());
        }
        out
    }

    /// Refuses new transactions and lets the running one end; the worker's
    /// channel closes once it has.
    pub fn stop(&self) {
        let _ = self.control.send(Control::Stop);
    }

    /// At exit: the refusals and bad requests counted but not logged yet.
    pub fn flush_logs(&self) {
        self.shared.floodgate.flush();
    }
}

/// An old listener's thread lets go of its socket as soon as it wakes;
/// until then the address is still taken.
fn bind_retrying(addr: &SocketAddr) -> io::Result<TcpListener> {
    let until = std::time::Instant::now() + REBIND;
    loop {
        match TcpListener::bind(addr) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && std::time::Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}
