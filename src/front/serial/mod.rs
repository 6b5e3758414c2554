//! The serial line, terminal side. One thread owns the port and drives the
//! half-duplex link layer of Concert (`link`): the register opens a
//! session with ENQ, sends STX payload ETX LRC, and closes with EOT; when
//! the answer is ready the terminal opens its own session the same way.
//! Requests go to the same worker as TCP, so the one-transaction rule
//! holds across both.
//!
//! This file is the port's thread and what it runs with; `exchange.rs` is
//! what it says on the line.

mod exchange;

use crate::config::Serial as Settings;
use crate::front::findings::Findings;
use crate::link::session::Timers;
pub use crate::link::{trace, Port};
use crate::link::{Patience, Timer};
use crate::logging::floodgate::Floodgate;
use crate::terminal::worker::Handle;
use crossbeam_channel::{Receiver, Sender};
use exchange::{Line, Waiting};
use serialport::TTYPort;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

/// Most data bytes a frame may carry on a serial line.
pub const MAX_FRAME: usize = 512;
/// How often the idle line looks for a finished transaction to answer.
const POLL: Duration = Duration::from_millis(20);
/// How long a good request frame may wait for the terminal to take it
/// before it is NAKed and withdrawn: within the shortest wait for that ACK
/// of the registers in use (0.5 s; pyTeliumManager's is 1 s), so that a
/// register never gives up on a request the terminal then runs.
pub const TAKE_WITHIN: Duration = Duration::from_millis(400);
/// The link's timers, named after their keywords so that the log says
/// which one fired.
fn timers(s: &Settings) -> Timers {
    Timers {
        ack: Timer {
            wait: s.ack_timeout,
            name: "serial-ack-timeout",
        },
        frame: Timer {
            wait: s.frame_timeout,
            name: "serial-frame-timeout",
        },
        eot: Timer {
            wait: s.eot_timeout,
            name: "serial-eot-timeout",
        },
        pause: s.retry_pause,
    }
}

/// The whole of a request, from its first byte, as on TCP.
fn request_timer(c: &Conf) -> Timer {
    Timer {
        wait: c.request_timeout,
        name: "request-timeout",
    }
}

/// A write waits for the register to read for its time on the wire plus
/// `serial-ack-timeout`, the time the register is given to answer anyway.
fn patience(s: &Settings) -> Patience {
    Patience::new(s.ack_timeout, s.speed, s.format)
}

/// The part of the configuration the serial thread follows; a reload sends
/// a new one.
#[derive(Clone, Debug, PartialEq)]
pub struct Conf {
    pub settings: Settings,
    pub currencies: Vec<u16>,
    /// Silence that ends a raw (unframed) V3 request.
    pub request_gap: Duration,
    /// How long a request may take from its first byte.
    pub request_timeout: Duration,
    /// The shape of V3 answers (`terminal-profile`).
    pub profile: crate::wire::profile::Profile,
}

/// What the serial thread needs.
pub struct Context {
    pub conf: Conf,
    pub updates: Receiver<Conf>,
    /// Rung with each update, so that an idle line blocked in poll(2)
    /// takes it.
    pub bell: Arc<Bell>,
    pub worker: Handle,
    /// Where bad frames, noise and link errors are counted, with TCP's
    /// bad requests.
    pub floodgate: Arc<Floodgate>,
    /// What each register on the line does wrong.
    pub findings: Arc<Findings>,
    /// What the line is doing, in words (`concertctl status`).
    pub state: State,
}

/// A pipe that wakes the serial thread out of poll(2): the thread blocks
/// on its device and on this, with no timeout, while nothing is pending.
pub struct Bell {
    read: OwnedFd,
    write: OwnedFd,
}

impl Bell {
    pub fn new() -> io::Result<Bell> {
        let mut fds = [0; 2];
        // SAFETY: pipe2(2) fills two descriptors this struct then owns.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just opened and belong to nobody.
        Ok(unsafe {
            Bell {
                read: OwnedFd::from_raw_fd(fds[0]),
                write: OwnedFd::from_raw_fd(fds[1]),
            }
        })
    }

    pub fn ring(&self) {
        // A full pipe is already ringing.
        // SAFETY: write(2) of one byte to our own pipe.
        let _ = unsafe { libc::write(self.write.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
    }

    fn drain(&self) {
        let mut buf = [0u8; 64];
        // SAFETY: read(2) into a buffer of that size, non-blocking.
        while unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {
        }
    }
}

/// The line's state in words, written by the serial thread.
pub type State = Arc<std::sync::Mutex<String>>;

fn set(state: &State, text: String) {
    *state.lock().unwrap_or_else(|p| p.into_inner()) = text;
}

/// The service's side: new configurations for the serial thread.
pub struct Updates {
    tx: Sender<Conf>,
    bell: Arc<Bell>,
    state: State,
}

impl Updates {
    /// What the line is doing now.
    pub fn state(&self) -> String {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn send(&self, c: Conf) {
        let _ = self.tx.send(c);
        self.bell.ring();
    }
}

/// Starts the serial thread; what it returns sends it new configurations.
/// The service starts it only once a configuration names a device.
pub fn spawn(
    conf: Conf,
    worker: Handle,
    floodgate: Arc<Floodgate>,
    findings: Arc<Findings>,
) -> io::Result<Updates> {
    let (tx, updates) = crossbeam_channel::unbounded();
    let bell = Arc::new(Bell::new()?);
    let state = State::default();
    let ctx = Context {
        conf,
        updates,
        bell: Arc::clone(&bell),
        worker,
        floodgate,
        findings,
        state: Arc::clone(&state),
    };
    std::thread::Builder::new()
        .name("serial".into())
        .spawn(move || run(ctx))?;
    Ok(Updates { tx, bell, state })
}

/// The line's own port: a tty whose descriptor poll(2) can wait on.
fn open(s: &Settings, path: &str) -> serialport::Result<TTYPort> {
    crate::link::builder(path, s.speed, s.format, s.rtscts, POLL).open_native()
}

/// The settings that need the device opened again when they change.
fn port_settings(s: &Settings) -> (Option<std::path::PathBuf>, u32, String, bool) {
    (s.device.clone(), s.speed, s.format.to_string(), s.rtscts)
}

/// Opens the device, serves it until it fails or its settings change, and
/// opens it again every `serial-retry`: a USB cable pulled out and plugged
/// back is picked up. Without a device it waits for a reload that names one.
fn run(ctx: Context) {
    let Context {
        mut conf,
        updates,
        bell,
        worker,
        floodgate,
        findings,
        state,
    } = ctx;
    let mut reported = false;
    let mut waiting: Vec<Waiting> = Vec::new();
    loop {
        let Some(device) = conf.settings.device.clone() else {
            set(&state, "no device".into());
            match updates.recv() {
                Ok(c) => conf = c,
                Err(_) => return,
            }
            continue;
        };
        let path = device.display().to_string();
        // A configuration value, shown masked like any other (the log,
        // the status, the journal's peer): the device is opened by its name.
        let shown = crate::wire::pan::masked_text(&path);
        match open(&conf.settings, &path) {
            Ok(port) => {
                reported = false;
                set(
                    &state,
                    format!(
                        "{shown} open, {} baud {}",
                        conf.settings.speed, conf.settings.format
                    ),
                );
                log::info!(
                    "serial {shown}: open, {} baud {}{}",
                    conf.settings.speed,
                    conf.settings.format,
                    if conf.settings.rtscts { " rtscts" } else { "" }
                );
                let mut line = Line::new(
                    Box::new(port),
                    conf.clone(),
                    &updates,
                    Some(&bell),
                    &worker,
                    &floodgate,
                    &findings,
                    &shown,
                    std::mem::take(&mut waiting),
                );
                let e = line.serve();
                waiting = std::mem::take(&mut line.desk.waiting);
                let changed = line.desk.conf != conf;
                conf = line.desk.conf;
                if changed {
                    log::info!("serial {shown}: closed for the new configuration ({e})");
                    continue;
                }
                set(
                    &state,
                    format!(
                        "{shown} failed ({e}); opened again every {}",
                        crate::config::fmt_duration(conf.settings.retry)
                    ),
                );
                log::warn!(
                    "serial {shown}: {e}; trying to open it again every {}",
                    crate::config::fmt_duration(conf.settings.retry)
                );
            }
            Err(e) if !reported => {
                set(
                    &state,
                    format!(
                        "{shown} cannot be opened ({e}); tried again every {}",
                        crate::config::fmt_duration(conf.settings.retry)
                    ),
                );
                log::warn!(
                    "serial {shown}: cannot open: {e}; trying again every {}",
                    crate::config::fmt_duration(conf.settings.retry)
                );
                reported = true;
            }
            Err(_) => {}
        }
        // Wait for the retry, or for a new configuration.
        if let Ok(c) = updates.recv_timeout(conf.settings.retry) {
            conf = c;
        }
    }
}

/// Serves one port until it fails, with this configuration: for the fuzz
/// target, which passes a fake port that fails once its bytes are read.
#[doc(hidden)]
pub fn serve_port(port: Box<dyn Port>, conf: Conf, worker: &Handle, path: &str) -> io::Error {
    let (_keep, updates) = crossbeam_channel::unbounded();
    let floodgate = Arc::new(Floodgate::default());
    let findings = Arc::new(Findings::new());
    let mut line = Line::new(
        port,
        conf,
        &updates,
        None,
        worker,
        &floodgate,
        &findings,
        path,
        Vec::new(),
    );
    line.serve()
}
