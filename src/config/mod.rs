//! concertd.conf(5): one `keyword value...` per line, `#` comments, double
//! quotes group words. Durations take `ms`, `s` or `m` (a bare number is
//! seconds); sizes take `K` or `M`.

// What the configuration reads and names: the allow-list, the simulator's
// script (its stage, which a reload replaces), the files it opens and the
// errors that stop concertd from starting.
pub mod allow;
pub mod error;
pub mod files;
pub mod stage;

use crate::config::allow::Net;
use crate::config::error::Error;
use crate::wire::currency;
// Here first; the simulator's vocabulary, below the configuration, reads
// them too.
pub use crate::wire::clock::{fmt_duration, parse_duration};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Baud rates a serial line may be set to.
pub const SPEEDS: std::ops::RangeInclusive<u32> = 50..=4_000_000;

pub const DEFAULT_PIDFILE: &str = "/run/concertd/concertd.pid";

/// The control socket (`concertctl`); a template instance names its own.
pub const DEFAULT_CONTROL: &str = "/run/concertd/concertd.sock";

pub const DEFAULT_JOURNAL: &str = "/var/lib/concertd/journal";

/// Where a daemon sends its log lines (`syslog-socket`).
pub const DEFAULT_SYSLOG_SOCKET: &str = "/dev/log";

/// The directory concertd started in, remembered before it detaches.
pub fn start_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")))
}

pub const DEFAULT_FILE: &str = "/etc/concertd.conf";
pub const DEFAULT_PORT: u16 = 8888;
/// The largest `journal-size`: a generation is what start-up and `totals`
/// may have to read whole.
pub const MAX_JOURNAL_SIZE: u64 = 1 << 30;
/// The most generations `journal-keep` keeps: each is a file a read of an
/// old day may open.
pub const MAX_JOURNAL_KEEP: u32 = 1000;

/// What performs the transactions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Terminal {
    Simulator,
    /// A program run for each transaction.
    Exec {
        program: PathBuf,
        args: Vec<String>,
    },
    /// An upstream Concert terminal.
    Relay {
        link: Upstream,
        v2: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upstream {
    Tcp(String),
    Serial {
        device: PathBuf,
        speed: u32,
        format: Format,
    },
}

fn quote(w: &str) -> String {
    if w.is_empty() || w.contains(char::is_whitespace) || w.contains('#') {
        format!("\"{w}\"")
    } else {
        w.to_string()
    }
}

impl Terminal {
    fn parse(args: &[String]) -> Result<Terminal, String> {
        let words: Vec<&str> = args.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["simulator"] => Ok(Terminal::Simulator),
            ["exec", program, rest @ ..] => Ok(Terminal::Exec {
                program: PathBuf::from(program),
                args: rest.iter().map(|a| a.to_string()).collect(),
            }),
            ["relay", "tcp", addr, rest @ ..] => {
                let v2 = match rest {
                    [] | ["v3"] => false,
                    ["v2"] => true,
                    _ => return Err("terminal relay tcp HOST:PORT [v2|v3]".into()),
                };
                if !addr.contains(':') {
                    return Err(format!("{addr:?} is not HOST:PORT"));
                }
                Ok(Terminal::Relay {
                    link: Upstream::Tcp(addr.to_string()),
                    v2,
                })
            }
            ["relay", "serial", device, rest @ ..] => {
                let (v2, rest) = match rest {
                    ["v3", r @ ..] => (false, r),
                    ["v2", r @ ..] => (true, r),
                    r => (true, r),
                };
                let speed = |sp: &str| match sp.parse::<u32>() {
                    Ok(n) if SPEEDS.contains(&n) => Ok(n),
                    _ => Err(format!("bad speed {sp:?}")),
                };
                let (speed, format) = match rest {
                    [] => (9600, Format::parse("7E1")?),
                    [sp] => (speed(sp)?, Format::parse("7E1")?),
                    [sp, f] => (
                        speed(sp)?,
                        Format::parse(f)?,
                    ),
                    _ => return Err("terminal relay serial DEVICE [v2|v3] [SPEED [FORMAT]]".into()),
                };
                Ok(Terminal::Relay {
                    link: Upstream::Serial {
                        device: PathBuf::from(device),
                        speed,
                        format,
                    },
                    v2,
                })
            }
            ["exec"] => Err("terminal exec needs a PROGRAM".into()),
            ["relay", ..] => Err(
                "terminal relay tcp HOST:PORT [v2|v3] or relay serial DEVICE [v2|v3] [SPEED [FORMAT]]".into(),
            ),
            [] => Err("terminal takes simulator, exec PROGRAM... or relay tcp|serial ...".into()),
            [t, ..] => Err(format!("terminal {t:?} is not simulator, exec or relay")),
        }
    }

    /// As logs, `status` and errors show it: a value of the file, its card
    /// numbers masked like any value from outside (concertd-logging.7, Card numbers).
    pub fn shown(&self) -> String {
        crate::wire::pan::masked_text(&self.line())
    }

    /// As written in the file.
    pub fn line(&self) -> String {
        match self {
            Terminal::Simulator => "simulator".into(),
            Terminal::Exec { program, args } => {
                let mut w = vec!["exec".to_string(), quote(&program.display().to_string())];
                w.extend(args.iter().map(|a| quote(a)));
                w.join(" ")
            }
            Terminal::Relay { link, v2 } => {
                let p = if *v2 { "v2" } else { "v3" };
                match link {
                    Upstream::Tcp(a) => format!("relay tcp {} {p}", quote(a)),
                    Upstream::Serial {
                        device,
                        speed,
                        format,
                    } => {
                        format!(
                            "relay serial {} {p} {speed} {format}",
                            quote(&device.display().to_string())
                        )
                    }
                }
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    /// Empty: loopback only.
    pub allow: Vec<Net>,
    pub currencies: Vec<u16>,
    pub terminal: Terminal,
    pub simulator_delay: Duration,
    /// Plans for the next transactions, one a line (`simulator-script`);
    /// its lines are read by [`Config::read_script`].
    pub simulator_script: Option<crate::config::stage::Script>,
    pub transaction_timeout: Duration,
    pub request_gap: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    /// Connections one client address may hold at once.
    pub max_connections_per_peer: usize,
    pub journal: PathBuf,
    pub journal_size: u64,
    pub journal_keep: u32,
    pub retry_window: Duration,
    /// PayXpert's ID AP AQ in approved debit answers.
    pub answer_extensions: AnswerExtensions,
    /// AQ; `None`: [`default_serial_number`].
    pub serial_number: Option<String>,
    pub serial: Serial,
    /// How often the file is checked for changes; zero: never.
    pub config_watch: Duration,
    pub user: Option<String>,
    pub group: Option<String>,
    pub pidfile: PathBuf,
    pub log_file: Option<PathBuf>,
    /// The syslog socket a daemon logs to; missing: `log_file`.
    pub syslog_socket: PathBuf,
    /// The control socket; `None`: no socket (`control none`).
    pub control: Option<PathBuf>,
}

/// Parity of the serial line's characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parity {
    None,
    Even,
    Odd,
}

impl Parity {
    /// The letter of `serial-format`, either case.
    pub fn from_letter(b: u8) -> Option<Parity> {
        match b.to_ascii_uppercase() {
            b'N' => Some(Parity::None),
            b'E' => Some(Parity::Even),
            b'O' => Some(Parity::Odd),
            _ => None,
        }
    }

    pub fn letter(self) -> char {
        match self {
            Parity::None => 'N',
            Parity::Even => 'E',
            Parity::Odd => 'O',
        }
    }
}

/// Character format of the serial line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Format {
    pub data_bits: u8,
    pub parity: Parity,
    pub stop_bits: u8,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format, String> {
        let b = s.as_bytes();
        let bad = || format!("serial-format {s:?} is not like 7E1 or 8N1");
        if b.len() != 3 {
            return Err(bad());
        }
        let f = Format {
            data_bits: b[0].wrapping_sub(b'0'),
            parity: Parity::from_letter(b[1]).ok_or_else(bad)?,
            stop_bits: b[2].wrapping_sub(b'0'),
        };
        if !(5..=8).contains(&f.data_bits) || !(1..=2).contains(&f.stop_bits) {
            return Err(bad());
        }
        Ok(f)
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}{}{}",
            self.data_bits,
            self.parity.letter(),
            self.stop_bits
        )
    }
}

/// Tags beyond the standard ones in answers (`answer-extensions`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerExtensions {
    /// Answers as standard clients expect them, byte for byte.
    None,
    /// PayXpert's ID, AP and AQ in approved debit answers.
    PayXpert,
}

const EXTENSIONS: &[(&str, AnswerExtensions)] = &[
    ("none", AnswerExtensions::None),
    ("payxpert", AnswerExtensions::PayXpert),
];

/// `serial-number`: 2 to 20 printable characters, as PayXpert's AQ holds.
fn serial_number(key: &str, args: &[String]) -> Result<String, String> {
    let v = one(key, args)?;
    // (A value never holds `"`: the file's quotes only group words.)
    if !(2..=20).contains(&v.len()) || !crate::wire::tlv::is_valid_value(v.as_bytes()) {
        return Err(format!(
            "{key} {v:?} is not 2 to 20 printable ASCII characters"
        ));
    }
    Ok(v.to_string())
}

/// The largest configuration file concertd reads: some 2,000 lines, far
/// more than any `allow` list needs.
pub const MAX_CONFIG_FILE: u64 = 64 * 1024;
/// The most read of /etc/machine-id or the host name (a few dozen bytes).
const MAX_ID_FILE: u64 = 4096;

/// The serial concertd gives as AQ when `serial-number` is not set: the
/// first 20 characters of /etc/machine-id (unique per installation, kept
/// across reboots), else of the host name, else `concertd`.
pub fn default_serial_number() -> String {
    let usable = |s: &str| {
        let s: String = s
            .trim()
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(20)
            .collect();
        (s.len() >= 2).then_some(s)
    };
    ["/etc/machine-id", "/proc/sys/kernel/hostname"]
        .iter()
        .find_map(|p| {
            crate::config::files::read_regular(Path::new(p), MAX_ID_FILE)
                .ok()
                .as_deref()
                .and_then(usable)
        })
        .unwrap_or_else(|| "concertd".to_string())
}

impl Config {
    /// The AQ value: `serial-number`, or its default.
    pub fn serial_number(&self) -> String {
        self.serial_number
            .clone()
            .unwrap_or_else(default_serial_number)
    }
}

/// Which protocol a serial request speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SerialProtocol {
    /// Told from each frame: V3 starts with `CZ`, anything else is V2.
    Auto,
    V2,
    V3,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Serial {
    /// None: no serial line.
    pub device: Option<PathBuf>,
    pub speed: u32,
    pub format: Format,
    pub rtscts: bool,
    pub protocol: SerialProtocol,
    /// Send answers over 512 bytes in ETB blocks rather than drop tickets.
    pub split: bool,
    pub retry: Duration,
    pub ack_timeout: Duration,
    pub frame_timeout: Duration,
    pub eot_timeout: Duration,
    pub retry_pause: Duration,
}

impl Default for Serial {
    fn default() -> Serial {
        Serial {
            device: None,
            speed: 9600,
            format: Format {
                data_bits: 7,
                parity: Parity::Even,
                stop_bits: 1,
            },
            rtscts: false,
            protocol: SerialProtocol::Auto,
            split: false,
            retry: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(3),
            frame_timeout: Duration::from_secs(3),
            eot_timeout: Duration::from_secs(3),
            retry_pause: Duration::from_secs(1),
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: vec![SocketAddr::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                DEFAULT_PORT,
            )],
            allow: Vec::new(),
            currencies: vec![978],
            terminal: Terminal::Simulator,
            simulator_delay: Duration::from_secs(2),
            simulator_script: None,
            transaction_timeout: Duration::from_secs(100),
            request_gap: Duration::from_millis(100),
            request_timeout: Duration::from_secs(5),
            max_connections: 1024,
            max_connections_per_peer: 16,
            journal: PathBuf::from(DEFAULT_JOURNAL),
            journal_size: 8 << 20,
            journal_keep: 4,
            retry_window: Duration::ZERO,
            answer_extensions: AnswerExtensions::None,
            serial_number: None,
            serial: Serial::default(),
            config_watch: Duration::from_secs(2),
            user: None,
            group: None,
            pidfile: PathBuf::from(DEFAULT_PIDFILE),
            log_file: None,
            syslog_socket: PathBuf::from(DEFAULT_SYSLOG_SOCKET),
            control: Some(PathBuf::from(DEFAULT_CONTROL)),
        }
    }
}

/// Splits a line into words: blanks separate, `"..."` groups, `#` outside
/// quotes starts a comment.
pub fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '#' if !quoted => break,
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// `8M`, `512K`, `4096` (bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mul) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 1024),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 1024 * 1024),
        Some(b'G' | b'g') => (&s[..s.len() - 1], 1024 * 1024 * 1024),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .ok_or_else(|| format!("{s:?} is not a size"))
}

/// `ADDR:PORT`, `[V6]:PORT`, `*:PORT`, `localhost:PORT` or a bare `PORT`.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    if let Some(port) = s.strip_prefix("*:") {
        let port = port.parse().map_err(|_| format!("{s:?}: bad port"))?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    match s.rsplit_once(':') {
        Some(("localhost", p)) => p
            .parse()
            .map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p))
            .map_err(|_| format!("{s:?}: bad port")),
        Some((h, p)) if !h.is_empty() => {
            // Checked first: the resolver would call a bad port a name it
            // cannot resolve.
            p.parse::<u16>().map_err(|_| format!("{s:?}: bad port"))?;
            s.to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| format!("{s:?}: cannot resolve"))
        }
        _ => Err(format!("{s:?} is not ADDRESS:PORT")),
    }
}

fn one<'a>(key: &str, args: &'a [String]) -> Result<&'a str, String> {
    match args {
        [v] => Ok(v),
        _ => Err(format!("{key} takes one value")),
    }
}

fn positive(key: &str, d: Duration) -> Result<Duration, String> {
    if d.is_zero() {
        return Err(format!("{key} must be more than 0"));
    }
    Ok(d)
}

fn duration(key: &str, args: &[String]) -> Result<Duration, String> {
    one(key, args).and_then(parse_duration)
}

fn positive_duration(key: &str, args: &[String]) -> Result<Duration, String> {
    positive(key, duration(key, args)?)
}

fn positive_count(key: &str, args: &[String]) -> Result<usize, String> {
    let v = one(key, args)?;
    match v.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{key} {v:?} is not a positive number")),
    }
}

/// One of a few words, each standing for a value.
fn choice<T: Copy>(key: &str, args: &[String], words: &[(&str, T)]) -> Result<T, String> {
    let v = one(key, args)?;
    words
        .iter()
        .find(|(w, _)| *w == v)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let names: Vec<&str> = words.iter().map(|(w, _)| *w).collect();
            let names = match names.split_last() {
                Some((last, [])) => last.to_string(),
                Some((last, rest)) if rest.len() == 1 => format!("{} or {last}", rest[0]),
                Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                None => String::new(),
            };
            format!("{key} {v:?} is not {names}")
        })
}

/// The word of `words` that stands for `t`.
fn word_of<T: PartialEq>(words: &[(&'static str, T)], t: &T) -> &'static str {
    words.iter().find(|(_, v)| v == t).map_or("?", |(w, _)| w)
}

const FLOW: &[(&str, bool)] = &[("none", false), ("rtscts", true)];
const PROTOCOLS: &[(&str, SerialProtocol)] = &[
    ("auto", SerialProtocol::Auto),
    ("v2", SerialProtocol::V2),
    ("v3", SerialProtocol::V3),
];
const YES_NO: &[(&str, bool)] = &[("yes", true), ("no", false)];

/// A file being read. `listen` and `currency` lines add up, and the
/// first one replaces the default rather than adding to it.
struct Draft {
    c: Config,
    listen: Vec<SocketAddr>,
    currencies: Vec<u16>,
}

/// What a reload does with a changed keyword.
#[derive(Clone, Copy, Debug)]
pub enum Reload {
    /// Applied by the reload.
    Live,
    /// Kept at its running value until a restart (said in the log): this
    /// takes the running value back.
    Restart(fn(&mut Config, &Config)),
}

impl Reload {
    pub fn needs_restart(self) -> bool {
        matches!(self, Reload::Restart(_))
    }
}

/// One keyword of the file. Everything that lists the keywords (the
/// parser, `-n`, the reload's restart-only set, the man page's test)
/// reads this table, so a keyword is added in one place.
pub struct Key {
    pub name: &'static str,
    pub reload: Reload,
    /// Reads one line's values (the keyword is passed for the messages).
    apply: fn(&mut Draft, &str, &[String]) -> Result<(), String>,
    /// Writes the keyword's lines as `-n` prints them, which `apply` reads
    /// back to the same value.
    show: fn(&Config, &str, &mut String),
}

fn line(s: &mut String, key: &str, v: impl std::fmt::Display) {
    let _ = writeln!(s, "{key} {v}");
}

fn path_line(s: &mut String, key: &str, p: &Path) {
    let _ = writeln!(s, "{key} \"{}\"", p.display());
}

/// The keywords, in the order `-n` prints them.
pub static KEYS: &[Key] = &[
    Key {
        name: "listen",
        reload: Reload::Live,
        apply: |d, k, a| parse_listen(one(k, a)?).map(|l| d.listen.push(l)),
        show: |c, k, s| c.listen.iter().for_each(|l| line(s, k, l)),
    },
    Key {
        name: "allow",
        reload: Reload::Live,
        apply: |d, _, a| {
            if a.is_empty() {
                return Err("allow takes one or more ADDRESS[/PREFIX]".into());
            }
            for a in a {
                d.c.allow.push(a.parse()?);
            }
            Ok(())
        },
        show: |c, k, s| {
            if c.allow.is_empty() {
                s.push_str("# no allow line: loopback clients only\n");
            }
            c.allow.iter().for_each(|a| line(s, k, a));
        },
    },
    Key {
        name: "currency",
        reload: Reload::Live,
        apply: |d, _, a| {
            if a.is_empty() {
                return Err("currency takes one or more codes".into());
            }
            for a in a {
                let n = currency::parse(a)
                    .ok_or_else(|| format!("{a:?} is not an ISO 4217 currency"))?;
                d.currencies.push(n);
            }
            Ok(())
        },
        show: |c, k, s| {
            let cur: Vec<String> = c.currencies.iter().map(|c| format!("{c:03}")).collect();
            line(s, k, cur.join(" "));
        },
    },
    Key {
        name: "terminal",
        reload: Reload::Live,
        apply: |d, _, a| Terminal::parse(a).map(|v| d.c.terminal = v),
        show: |c, k, s| line(s, k, c.terminal.line()),
    },
    Key {
        name: "simulator-delay",
        reload: Reload::Live,
        apply: |d, k, a| duration(k, a).map(|v| d.c.simulator_delay = v),
        show: |c, k, s| line(s, k, fmt_duration(c.simulator_delay)),
    },
    Key {
        name: "simulator-script",
        reload: Reload::Live,
        apply: |d, k, a| {
            let path = PathBuf::from(one(k, a)?);
            d.c.simulator_script = Some(crate::config::stage::Script {
                path,
                lines: Vec::new(),
            });
            Ok(())
        },
        show: |c, k, s| {
            if let Some(script) = &c.simulator_script {
                path_line(s, k, &script.path);
            }
        },
    },
    Key {
        name: "transaction-timeout",
        reload: Reload::Live,
        apply: |d, k, a| positive_duration(k, a).map(|v| d.c.transaction_timeout = v),
        show: |c, k, s| line(s, k, fmt_duration(c.transaction_timeout)),
    },
    Key {
        name: "request-gap",
        reload: Reload::Live,
        apply: |d, k, a| positive_duration(k, a).map(|v| d.c.request_gap = v),
        show: |c, k, s| line(s, k, fmt_duration(c.request_gap)),
    },
    Key {
        name: "request-timeout",
        reload: Reload::Live,
        apply: |d, k, a| positive_duration(k, a).map(|v| d.c.request_timeout = v),
        show: |c, k, s| line(s, k, fmt_duration(c.request_timeout)),
    },
    Key {
        name: "max-connections",
        reload: Reload::Live,
        apply: |d, k, a| positive_count(k, a).map(|v| d.c.max_connections = v),
        show: |c, k, s| line(s, k, c.max_connections),
    },
    Key {
        name: "max-connections-per-peer",
        reload: Reload::Live,
        apply: |d, k, a| positive_count(k, a).map(|v| d.c.max_connections_per_peer = v),
        show: |c, k, s| line(s, k, c.max_connections_per_peer),
    },
    Key {
        name: "journal",
        reload: Reload::Restart(|c, r| c.journal = r.journal.clone()),
        apply: |d, k, a| one(k, a).map(|v| d.c.journal = PathBuf::from(v)),
        show: |c, k, s| path_line(s, k, &c.journal),
    },
    Key {
        name: "journal-size",
        reload: Reload::Restart(|c, r| c.journal_size = r.journal_size),
        apply: |d, k, a| {
            let v = parse_size(one(k, a)?)?;
            if v < 4096 {
                return Err("journal-size must be at least 4K".into());
            }
            if v > MAX_JOURNAL_SIZE {
                return Err("journal-size must be at most 1G".into());
            }
            d.c.journal_size = v;
            Ok(())
        },
        show: |c, k, s| line(s, k, fmt_size(c.journal_size)),
    },
    Key {
        name: "journal-keep",
        reload: Reload::Restart(|c, r| c.journal_keep = r.journal_keep),
        apply: |d, k, a| {
            let v = one(k, a)?;
            let n: u32 = v
                .parse()
                .map_err(|_| format!("journal-keep {v:?} is not a number"))?;
            if n > MAX_JOURNAL_KEEP {
                return Err(format!("journal-keep must be at most {MAX_JOURNAL_KEEP}"));
            }
            d.c.journal_keep = n;
            Ok(())
        },
        show: |c, k, s| line(s, k, c.journal_keep),
    },
    Key {
        name: "retry-window",
        reload: Reload::Live,
        apply: |d, k, a| duration(k, a).map(|v| d.c.retry_window = v),
        show: |c, k, s| line(s, k, fmt_duration(c.retry_window)),
    },
    Key {
        name: "answer-extensions",
        reload: Reload::Live,
        apply: |d, k, a| choice(k, a, EXTENSIONS).map(|v| d.c.answer_extensions = v),
        show: |c, k, s| line(s, k, word_of(EXTENSIONS, &c.answer_extensions)),
    },
    Key {
        name: "serial-number",
        reload: Reload::Live,
        apply: |d, k, a| serial_number(k, a).map(|v| d.c.serial_number = Some(v)),
        show: |c, k, s| match &c.serial_number {
            Some(v) => line(s, k, format!("\"{v}\"")),
            None => {
                let _ = writeln!(
                    s,
                    "# no serial-number: machine id (or host name), first 20 characters: {:?}",
                    default_serial_number()
                );
            }
        },
    },
    Key {
        name: "serial",
        reload: Reload::Live,
        apply: |d, k, a| one(k, a).map(|v| d.c.serial.device = Some(PathBuf::from(v))),
        show: |c, k, s| match &c.serial.device {
            Some(p) => path_line(s, k, p),
            None => s.push_str("# no serial line\n"),
        },
    },
    Key {
        name: "serial-speed",
        reload: Reload::Live,
        apply: |d, k, a| {
            let v = one(k, a)?;
            d.c.serial.speed = match v.parse::<u32>() {
                Ok(n) if SPEEDS.contains(&n) => n,
                _ => return Err(format!("serial-speed {v:?} is not a baud rate")),
            };
            Ok(())
        },
        show: |c, k, s| line(s, k, c.serial.speed),
    },
    Key {
        name: "serial-format",
        reload: Reload::Live,
        apply: |d, k, a| Format::parse(one(k, a)?).map(|v| d.c.serial.format = v),
        show: |c, k, s| line(s, k, c.serial.format),
    },
    Key {
        name: "serial-flow",
        reload: Reload::Live,
        apply: |d, k, a| choice(k, a, FLOW).map(|v| d.c.serial.rtscts = v),
        show: |c, k, s| line(s, k, word_of(FLOW, &c.serial.rtscts)),
    },
    Key {
        name: "serial-protocol",
        reload: Reload::Live,
        apply: |d, k, a| choice(k, a, PROTOCOLS).map(|v| d.c.serial.protocol = v),
        show: |c, k, s| line(s, k, word_of(PROTOCOLS, &c.serial.protocol)),
    },
    Key {
        name: "serial-split",
        reload: Reload::Live,
        apply: |d, k, a| choice(k, a, YES_NO).map(|v| d.c.serial.split = v),
        show: |c, k, s| line(s, k, word_of(YES_NO, &c.serial.split)),
    },
    Key {
        name: "serial-retry",
        reload: Reload::Live,
        apply: |d, k, a| positive_duration(k, a).map(|v| d.c.serial.retry = v),
        show: |c, k, s| line(s, k, fmt_duration(c.serial.retry)),
    },
    Key {
        name: "serial-ack-timeout",
        reload: Reload::Live,
        apply: |d, k, a| positive_duration(k, a).map(|v| d.c.serial.ack_timeout = v),
        show: |c, k, s| line(s, k, fmt_duration(c.serial.ack_timeout)),
    },
    Key {
        name: "serial-frame-timeout",
        reload: Reload::Live,
        apply: |d, k, a| positive_duration(k, a).map(|v| d.c.serial.frame_timeout = v),
        show: |c, k, s| line(s, k, fmt_duration(c.serial.frame_timeout)),
    },
    Key {
        name: "serial-eot-timeout",
        reload: Reload::Live,
        apply: |d, k, a| positive_duration(k, a).map(|v| d.c.serial.eot_timeout = v),
        show: |c, k, s| line(s, k, fmt_duration(c.serial.eot_timeout)),
    },
    Key {
        name: "serial-retry-pause",
        reload: Reload::Live,
        apply: |d, k, a| duration(k, a).map(|v| d.c.serial.retry_pause = v),
        show: |c, k, s| line(s, k, fmt_duration(c.serial.retry_pause)),
    },
    Key {
        name: "config-watch",
        reload: Reload::Live,
        apply: |d, k, a| duration(k, a).map(|v| d.c.config_watch = v),
        show: |c, k, s| line(s, k, fmt_duration(c.config_watch)),
    },
    Key {
        name: "user",
        reload: Reload::Restart(|c, r| c.user = r.user.clone()),
        apply: |d, k, a| one(k, a).map(|v| d.c.user = Some(v.to_string())),
        show: |c, k, s| match &c.user {
            Some(u) => line(s, k, format!("\"{u}\"")),
            None => s.push_str("# no user: runs as the user that started it\n"),
        },
    },
    Key {
        name: "group",
        reload: Reload::Restart(|c, r| c.group = r.group.clone()),
        apply: |d, k, a| one(k, a).map(|v| d.c.group = Some(v.to_string())),
        show: |c, k, s| {
            if let Some(g) = &c.group {
                line(s, k, format!("\"{g}\""));
            }
        },
    },
    Key {
        name: "pidfile",
        reload: Reload::Restart(|c, r| c.pidfile = r.pidfile.clone()),
        apply: |d, k, a| one(k, a).map(|v| d.c.pidfile = PathBuf::from(v)),
        show: |c, k, s| path_line(s, k, &c.pidfile),
    },
    Key {
        name: "log-file",
        reload: Reload::Restart(|c, r| c.log_file = r.log_file.clone()),
        apply: |d, k, a| one(k, a).map(|v| d.c.log_file = Some(PathBuf::from(v))),
        show: |c, k, s| {
            if let Some(l) = &c.log_file {
                path_line(s, k, l);
            }
        },
    },
    Key {
        name: "syslog-socket",
        reload: Reload::Restart(|c, r| c.syslog_socket = r.syslog_socket.clone()),
        apply: |d, k, a| match one(k, a)? {
            "" => Err("syslog-socket takes a PATH".into()),
            v => {
                d.c.syslog_socket = PathBuf::from(v);
                Ok(())
            }
        },
        show: |c, k, s| path_line(s, k, &c.syslog_socket),
    },
    Key {
        name: "control",
        reload: Reload::Restart(|c, r| c.control = r.control.clone()),
        apply: |d, k, a| {
            d.c.control = match one(k, a)? {
                "none" => None,
                "" => return Err("control takes a PATH or none".into()),
                v => Some(PathBuf::from(v)),
            };
            Ok(())
        },
        show: |c, k, s| match &c.control {
            Some(p) => path_line(s, k, p),
            None => line(s, k, "none"),
        },
    },
];

/// An error about a line of the file, as logs and replies show it: the
/// line is a value from outside, masked whole (a card number may be cut
/// into words), and each word the message quotes, as it is or as `{:?}`
/// writes it, is shown as the masked line has it (concertd-logging.7, Card numbers).
fn masked_words(raw: &str, msg: String) -> String {
    // Masking turns digits into `#`, which would start a comment: the
    // masked line is split with a stand-in where a digit was masked, so
    // that its words are the line's words, one for one.
    const STAND_IN: char = '\u{e000}';
    let masked: String = raw
        .chars()
        .zip(crate::wire::pan::masked_text(raw).chars())
        .map(|(r, m)| if r == m { r } else { STAND_IN })
        .collect();
    let (Ok(real), Ok(shown)) = (words(raw), words(&masked)) else {
        return crate::wire::pan::masked_text(&msg);
    };
    let shown: Vec<String> = shown.iter().map(|w| w.replace(STAND_IN, "#")).collect();
    let mut msg = msg;
    for (r, s) in real.iter().zip(&shown).filter(|(r, s)| r != s) {
        msg = msg
            .replace(&format!("{r:?}"), &format!("{s:?}"))
            .replace(r.as_str(), s);
    }
    crate::wire::pan::masked_text(&msg)
}

impl Config {
    pub fn parse(text: &str, file: &str) -> Result<Config, Error> {
        let mut d = Draft {
            c: Config::default(),
            listen: Vec::new(),
            currencies: Vec::new(),
        };
        let mut script_line = 0;
        for (i, raw) in text.lines().enumerate() {
            let err = |msg: String| Error::Config {
                file: file.to_string(),
                line: i + 1,
                msg: masked_words(raw, msg),
            };
            let w = words(raw).map_err(err)?;
            let Some((key, args)) = w.split_first() else {
                continue;
            };
            let k = KEYS
                .iter()
                .find(|k| k.name == key)
                .ok_or_else(|| err(format!("unknown keyword {key:?}")))?;
            (k.apply)(&mut d, key, args).map_err(err)?;
            if k.name == "simulator-script" {
                script_line = i + 1;
            }
        }
        let mut c = d.c;
        if c.simulator_script.is_some() && c.terminal != Terminal::Simulator {
            return Err(Error::Config {
                file: file.to_string(),
                line: script_line,
                msg: format!(
                    "simulator-script needs terminal simulator, not terminal {}",
                    c.terminal.shown()
                ),
            });
        }
        if !d.listen.is_empty() {
            c.listen = d.listen;
        }
        if !d.currencies.is_empty() {
            c.currencies = d.currencies;
        }
        Ok(c)
    }

    pub fn load(path: &Path) -> Result<Config, Error> {
        let file = path.display().to_string();
        let text = crate::config::files::read_regular(path, MAX_CONFIG_FILE).map_err(|source| {
            Error::ConfigRead {
                file: file.clone(),
                source,
            }
        })?;
        let mut c = Config::parse(&text, &file)?;
        c.absolute_paths();
        c.read_script()?;
        Ok(c)
    }

    /// Reads the lines of the `simulator-script` named: a line that is not
    /// a plan is a configuration error at that line of the script.
    pub fn read_script(&mut self) -> Result<(), Error> {
        let Some(script) = &mut self.simulator_script else {
            return Ok(());
        };
        let read = crate::config::stage::Script::read(&script.path)?;
        script.lines = read.lines;
        Ok(())
    }

    /// Relative paths are taken from the directory concertd started in,
    /// also after it has detached (which moves it to `/`) and on reloads.
    pub fn absolute_paths(&mut self) {
        // Rebuilt from its components, which drop `.`: `./pay.sh` is shown
        // as `/dir/pay.sh`, not `/dir/./pay.sh`. (`..` stays: a link may
        // stand before it.)
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = start_dir().join(&*p).components().collect();
            }
        };
        abs(&mut self.journal);
        abs(&mut self.pidfile);
        if let Some(s) = &mut self.simulator_script {
            abs(&mut s.path);
        }
        if let Some(l) = &mut self.log_file {
            abs(l);
        }
        abs(&mut self.syslog_socket);
        if let Some(c) = &mut self.control {
            abs(c);
        }
        if let Some(d) = &mut self.serial.device {
            abs(d);
        }
        match &mut self.terminal {
            Terminal::Exec { program, .. } if program.components().count() > 1 => abs(program),
            Terminal::Relay {
                link: Upstream::Serial { device, .. },
                ..
            } => abs(device),
            _ => {}
        }
    }

    /// The allow-list in force: the configured one, or loopback only.
    pub fn allow_list(&self) -> Vec<Net> {
        if self.allow.is_empty() {
            allow::default_list()
        } else {
            self.allow.clone()
        }
    }

    /// Keywords whose change only a restart applies, with their values
    /// as `-n` prints them.
    pub fn restart_only(&self) -> Vec<(&'static str, String)> {
        KEYS.iter()
            .filter(|k| k.reload.needs_restart())
            .map(|k| {
                let mut s = String::new();
                (k.show)(self, k.name, &mut s);
                (k.name, s)
            })
            .collect()
    }

    /// A reload: the keywords that need a restart take their running
    /// values back; the names of those the file changed.
    pub fn keep_restart_only(&mut self, running: &Config) -> Vec<&'static str> {
        let changed = running
            .restart_only()
            .into_iter()
            .zip(self.restart_only())
            .filter(|((_, old), (_, new))| old != new)
            .map(|((key, _), _)| key)
            .collect();
        for k in KEYS {
            if let Reload::Restart(keep) = k.reload {
                keep(self, running);
            }
        }
        changed
    }

    /// One line for the log: what is running.
    pub fn summary(&self) -> String {
        let listen: Vec<String> = self.listen.iter().map(ToString::to_string).collect();
        let allow: Vec<String> = self.allow_list().iter().map(ToString::to_string).collect();
        let serial = match &self.serial.device {
            Some(d) => format!(
                "{} {} {}{}",
                crate::wire::pan::masked_text(&d.display().to_string()),
                self.serial.speed,
                self.serial.format,
                if self.serial.rtscts { " rtscts" } else { "" }
            ),
            None => "none".into(),
        };
        format!(
            "listen {}; allow {}; serial {}; terminal {}; journal {}",
            listen.join(" "),
            allow.join(" "),
            serial,
            match self.terminal {
                Terminal::Simulator =>
                    format!("simulator (delay {})", fmt_duration(self.simulator_delay)),
                ref t => t.shown(),
            },
            crate::wire::pan::masked_text(&self.journal.display().to_string())
        )
    }

    /// The effective configuration, in the file's own syntax: what `-n`
    /// prints, and reads back to the same configuration.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for k in KEYS {
            (k.show)(self, k.name, &mut s);
        }
        s
    }
}

pub fn fmt_size(n: u64) -> String {
    if n.is_multiple_of(1 << 20) {
        format!("{}M", n >> 20)
    } else if n.is_multiple_of(1 << 10) {
        format!("{}K", n >> 10)
    } else {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text, "t.conf").unwrap_err().to_string()
    }

    #[test]
    fn answer_extensions_and_serial_number() {
        let c = Config::parse("", "t").unwrap();
        assert_eq!(c.answer_extensions, AnswerExtensions::None);
        let d = default_serial_number();
        assert!((2..=20).contains(&d.len()) && crate::wire::tlv::is_valid_value(d.as_bytes()));
        assert_eq!(c.serial_number(), d);
        let c = Config::parse("answer-extensions payxpert\nserial-number \"T 42\"", "t").unwrap();
        assert_eq!(c.answer_extensions, AnswerExtensions::PayXpert);
        assert_eq!(c.serial_number(), "T 42");
        for bad in ["x", "123456789012345678901", "é1"] {
            let e = err(&format!("serial-number '{bad}'").replace('\'', "\""));
            assert!(e.contains("serial-number"), "{bad}: {e}");
        }
        assert!(err("answer-extensions hipay").contains("is not none or payxpert"));
    }

    #[test]
    fn a_simulator_script_is_the_simulators_and_read_with_its_lines() {
        let c = Config::parse("simulator-script \"/x/s\"", "t").unwrap();
        assert_eq!(Config::parse(&c.describe(), "d").unwrap(), c);
        assert!(err("terminal exec /bin/true\nsimulator-script s")
            .starts_with("t.conf:2: simulator-script needs terminal simulator"));
        let dir = std::env::temp_dir().join(format!("concertd-script-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        std::fs::write(&path, "approve crlf\n\nrefuse split=x\n").unwrap();
        let mut c = Config::parse(&format!("simulator-script {}", path.display()), "t").unwrap();
        let e = c.read_script().unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}:3: split=x:", path.display())),
            "{e}"
        );
        std::fs::write(&path, "approve crlf\n").unwrap();
        c.read_script().unwrap();
        assert_eq!(c.simulator_script.unwrap().lines.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn parity_is_parsed_with_the_format() {
        for (text, parity) in [
            ("7E1", Parity::Even),
            ("8n1", Parity::None),
            ("7o2", Parity::Odd),
        ] {
            let f = Format::parse(text).unwrap();
            assert_eq!(f.parity, parity, "{text}");
            assert_eq!(f.to_string(), text.to_ascii_uppercase());
        }
        for bad in ["7X1", "7M1", "7S1", "7 1"] {
            assert!(Format::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn full_file() {
        let c = Config::parse(
            "# comment\n\nlisten 127.0.0.1:0\nlisten [::1]:8888   # v6\nallow 10.0.0.0/8 192.168.1.2\n\
             currency EUR 953\nterminal simulator\nsimulator-delay 0\ntransaction-timeout 1m\n\
             request-gap 250ms\nrequest-timeout 1.5s\nmax-connections 10\n\
             journal \"/tmp/my journal\"\njournal-size 64K\njournal-keep 2\nretry-window 2h\n\
             serial /dev/ttyACM0\nserial-speed 19200\nserial-format 8N1\nserial-flow rtscts\n\
             serial-protocol v2\nserial-split yes\nserial-retry 2s\nserial-ack-timeout 500ms\n\
             serial-frame-timeout 1s\nserial-eot-timeout 2s\nserial-retry-pause 250ms\n",
            "t.conf",
        )
        .unwrap();
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.allow.len(), 2);
        assert_eq!(c.currencies, vec![978, 953]);
        assert_eq!(c.simulator_delay, Duration::ZERO);
        assert_eq!(c.transaction_timeout, Duration::from_secs(60));
        assert_eq!(c.request_gap, Duration::from_millis(250));
        assert_eq!(c.request_timeout, Duration::from_millis(1500));
        assert_eq!(c.max_connections, 10);
        assert_eq!(c.journal, PathBuf::from("/tmp/my journal"));
        assert_eq!((c.journal_size, c.journal_keep), (64 << 10, 2));
        assert_eq!(c.retry_window, Duration::from_secs(7200));
        assert_eq!(c.serial.device, Some(PathBuf::from("/dev/ttyACM0")));
        assert_eq!(
            (c.serial.speed, c.serial.format.to_string()),
            (19200, "8N1".to_string())
        );
        assert!(c.serial.rtscts && c.serial.split);
        assert_eq!(c.serial.protocol, SerialProtocol::V2);
        assert_eq!(c.serial.ack_timeout, Duration::from_millis(500));
        let again = Config::parse(&c.describe(), "d").unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn every_keyword_is_parsed_and_printed_by_its_entry() {
        let d = Config::default().describe();
        for line in d.lines().filter(|l| !l.starts_with('#')) {
            let k = line.split_whitespace().next().unwrap();
            assert!(KEYS.iter().any(|key| key.name == k), "{k}");
        }
        for (i, k) in KEYS.iter().enumerate() {
            assert!(
                !KEYS[..i].iter().any(|o| o.name == k.name),
                "{} twice",
                k.name
            );
            let e = Config::parse(k.name, "t")
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(!e.contains("unknown keyword"), "{}: {e}", k.name);
        }
    }

    #[test]
    fn a_reload_keeps_every_restart_only_keyword() {
        let running = Config::parse(
            "user a\ngroup a\npidfile /a/pid\njournal /a/j\njournal-size 64K\n\
             journal-keep 1\nlog-file /a/log\nsyslog-socket /a/s\ncontrol /a/sock\nlisten 127.0.0.1:1\n",
            "t",
        )
        .unwrap();
        let mut new = Config::parse(
            "user b\ngroup b\npidfile /b/pid\njournal /b/j\njournal-size 128K\n\
             journal-keep 2\nlog-file /b/log\nsyslog-socket /b/s\ncontrol none\nlisten 127.0.0.1:2\n",
            "t",
        )
        .unwrap();
        let restart: Vec<&str> = KEYS
            .iter()
            .filter(|k| k.reload.needs_restart())
            .map(|k| k.name)
            .collect();
        assert_eq!(new.keep_restart_only(&running), restart);
        assert_eq!(new.restart_only(), running.restart_only());
        // What a reload applies is the new file's.
        let mut applied = running.clone();
        applied.listen = new.listen.clone();
        assert_eq!(new, applied);
    }

    #[test]
    fn defaults() {
        let c = Config::parse("", "t").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.listen[0].port(), 8888);
        assert_eq!(Config::parse(&c.describe(), "d").unwrap(), c);
    }

    #[test]
    fn errors_name_file_and_line() {
        assert_eq!(err("\nfoo bar\n"), "t.conf:2: unknown keyword \"foo\"");
        assert!(err("request-gap 5x").starts_with("t.conf:1:"));
        assert!(err("request-gap 0").contains("more than 0"));
        assert!(err("listen nowhere").starts_with("t.conf:1:"));
        assert!(err("allow 300.1.1.1").starts_with("t.conf:1:"));
        assert!(err("currency EURO").starts_with("t.conf:1:"));
        assert!(err("terminal pos").contains("not simulator, exec or relay"));
        assert!(err("terminal relay tcp nowhere").starts_with("t.conf:1:"));
        assert!(err("terminal relay tcp h:1 v4").starts_with("t.conf:1:"));
        for t in [
            "exec /usr/bin/pay --test \"two words\"",
            "relay tcp 10.0.0.5:8888 v3",
            "relay tcp 10.0.0.5:8888 v2",
            "relay serial /dev/ttyUSB0 v2 9600 7E1",
        ] {
            let c = Config::parse(&format!("terminal {t}"), "t").unwrap();
            let again = Config::parse(&c.describe(), "d").unwrap();
            assert_eq!(again.terminal, c.terminal, "{t}");
        }
        assert!(err("max-connections 0").starts_with("t.conf:1:"));
        assert!(err("listen \"127.0.0.1:1").contains("quote"));
        assert!(err("simulator-delay 1 2").contains("one value"));
        assert!(err("serial-format 7X1").contains("7E1"));
        assert!(err("serial-flow xon").starts_with("t.conf:1:"));
        assert!(err("serial-speed fast").starts_with("t.conf:1:"));
    }

    #[test]
    fn words_and_units() {
        assert_eq!(words("a \"b c\" d # e").unwrap(), vec!["a", "b c", "d"]);
        assert_eq!(words("a \"#x\"").unwrap(), vec!["a", "#x"]);
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(
            parse_duration("-1s").unwrap_err(),
            "\"-1s\": a duration must not be negative"
        );
        assert_eq!(parse_size("8M").unwrap(), 8 << 20);
        assert_eq!(parse_size("512K").unwrap(), 512 << 10);
        assert!(parse_size("x").is_err());
        assert_eq!(parse_listen("8888").unwrap().port(), 8888);
        assert_eq!(parse_listen("*:99").unwrap().to_string(), "0.0.0.0:99");
        for bad in ["127.0.0.1:99999", "[::1]:65536", "127.0.0.1:"] {
            assert_eq!(parse_listen(bad).unwrap_err(), format!("{bad:?}: bad port"));
        }
        assert_eq!(
            parse_listen("localhost:7").unwrap().to_string(),
            "127.0.0.1:7"
        );
    }
}
