//! concertd.conf(5): one `keyword value...` per line, `#` comments, double
//! quotes group words. Durations take `ms`, `s` or `m` (a bare number is
//! seconds); sizes take `K` or `M`.

// What the configuration reads and names: the allow-list, the simulator's
// script (its plans; the stage that plays them is the simulator's, in
// backend/), the files it opens and the errors that stop concertd from
// starting.
pub mod allow;
pub mod error;
pub mod files;
pub mod plan;
// The keywords and their parsers, and the values they make: the file's
// vocabulary, named from here.
mod keys;
mod types;

use keys::Draft;
pub use keys::{fmt_size, parse_listen, parse_size, Key, Reload, KEYS};
pub use types::{AnswerExtensions, Format, Parity, Serial, SerialProtocol, Terminal, Upstream};

use crate::config::allow::Net;
use crate::config::error::Error;
// Here first; the simulator's vocabulary, below the configuration, reads
// them too.
pub use crate::wire::clock::{fmt_duration, parse_duration};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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
    pub simulator_script: Option<crate::config::plan::Script>,
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
    /// Whose answer shapes concertd plays (`terminal-profile`).
    pub terminal_profile: crate::wire::profile::Profile,
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

    /// The profile answers take: `terminal-profile`, except with `terminal
    /// relay`, where the terminal is the upstream and concertd carries its
    /// outcome in the generic shape rather than put another terminal's
    /// words (a CZ, AF details) in its mouth.
    pub fn profile(&self) -> crate::wire::profile::Profile {
        match self.terminal {
            Terminal::Relay { .. } => crate::wire::profile::Profile::Generic,
            _ => self.terminal_profile,
        }
    }

    /// Whether approved debit answers end with PayXpert's ID AP AQ:
    /// `answer-extensions payxpert`, or the `payxpress` profile in effect
    /// (`answer-extensions none` does not take them from it).
    pub fn extensions(&self) -> AnswerExtensions {
        if self.profile().payxpert_tags() {
            AnswerExtensions::PayXpert
        } else {
            self.answer_extensions
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
            terminal_profile: crate::wire::profile::Profile::Generic,
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

/// The number of the line of `text` that sets `key` last, the one in
/// force: where an error found after the file was read (a script that
/// cannot be read, a user that does not exist) is reported.
pub fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| words(l).is_ok_and(|w| w.first().is_some_and(|k| k == key)))
        .map(|(i, _)| i + 1)
        .last()
}

/// A `simulator-script` that cannot be read, reported at the line of the
/// file that names it, with what would do; an error in the script's own
/// lines names the script's file and line already.
pub fn script_error(text: &str, file: &str, e: Error) -> Error {
    match (e, line_of(text, "simulator-script")) {
        (Error::ConfigRead { file: what, source }, Some(line)) => Error::Config {
            file: file.to_string(),
            line,
            msg: crate::wire::pan::masked_text(&format!(
                "{what}: {source}; name a regular file of at most 64K that concertd may \
                 read, or remove the line"
            )),
        },
        (e, _) => e,
    }
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
        c.read_script().map_err(|e| script_error(&text, &file, e))?;
        Ok(c)
    }

    /// Reads the lines of the `simulator-script` named: a line that is not
    /// a plan is a configuration error at that line of the script.
    pub fn read_script(&mut self) -> Result<(), Error> {
        let Some(script) = &mut self.simulator_script else {
            return Ok(());
        };
        let read = crate::config::plan::Script::read(&script.path)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text, "t.conf").unwrap_err().to_string()
    }

    #[test]
    fn payxpress_implies_the_payxpert_tags_and_a_relay_takes_no_profile() {
        use crate::wire::profile::Profile;
        let c = Config::parse("terminal-profile payxpress\nanswer-extensions none", "t").unwrap();
        assert_eq!(c.profile(), Profile::PayXpress);
        assert_eq!(c.extensions(), AnswerExtensions::PayXpert);
        let c = Config::parse("terminal-profile nepting\nanswer-extensions payxpert", "t").unwrap();
        assert_eq!(c.extensions(), AnswerExtensions::PayXpert);
        let c = Config::parse(
            "terminal-profile payxpress\nterminal relay tcp 127.0.0.1:9",
            "t",
        )
        .unwrap();
        assert_eq!(
            (c.terminal_profile, c.profile()),
            (Profile::PayXpress, Profile::Generic)
        );
        assert_eq!(c.extensions(), AnswerExtensions::None);
        assert_eq!(Config::default().profile(), Profile::Generic);
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
