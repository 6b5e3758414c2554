//! The keywords of the file (the [`KEYS`] table) and the small parsers of
//! their values.

use super::{default_serial_number, Config, MAX_JOURNAL_KEEP, MAX_JOURNAL_SIZE, SPEEDS};
use super::{AnswerExtensions, Format, SerialProtocol, Terminal};
use crate::wire::clock::{fmt_duration, parse_duration};
use crate::wire::currency;
use crate::wire::profile::PROFILES;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// One duration; `2 s`, a number and its unit apart, is answered with
/// the value it means, written as it must be.
fn duration(key: &str, args: &[String]) -> Result<Duration, String> {
    match args {
        [_] => one(key, args).and_then(parse_duration),
        [n, unit]
            if !unit.is_empty()
                && unit.bytes().all(|b| b.is_ascii_alphabetic())
                && parse_duration(&format!("{n}{unit}")).is_ok() =>
        {
            Err(format!(
                "{key} takes one value, a duration written without a space: \"{n}{unit}\""
            ))
        }
        _ => Err(format!(
            "{key} takes one value, a duration such as 2s, 500ms or 1m"
        )),
    }
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
pub(super) struct Draft {
    pub(super) c: Config,
    pub(super) listen: Vec<SocketAddr>,
    pub(super) currencies: Vec<u16>,
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
    pub(super) apply: fn(&mut Draft, &str, &[String]) -> Result<(), String>,
    /// Writes the keyword's lines as `-n` prints them, which `apply` reads
    /// back to the same value.
    pub(super) show: fn(&Config, &str, &mut String),
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
            d.c.simulator_script = Some(crate::config::plan::Script {
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
            let v = one(k, a)?;
            let v = parse_size(v).map_err(|_| {
                format!("{k} {v:?} is not a size: bytes, or a number with K, M or G, from 4K to 1G")
            })?;
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
        name: "terminal-profile",
        reload: Reload::Live,
        apply: |d, k, a| choice(k, a, PROFILES).map(|v| d.c.terminal_profile = v),
        show: |c, k, s| {
            line(s, k, word_of(PROFILES, &c.terminal_profile));
            if c.profile() != c.terminal_profile {
                s.push_str("# not applied with terminal relay: answers in the generic shape\n");
            }
        },
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
}
