//! The simulator's vocabulary: what the next simulated transaction does,
//! `OUTCOME [QUIRK...]` (its [`Fate`] and [`Quirk`]s, a [`Plan`]), and a
//! `simulator-script` of plans, read at start and at each reload.

use crate::wire::channel::Channel;
use crate::wire::clock::{fmt_duration, parse_duration};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `split` without a gap: long enough for a client that reads once to get
/// only the first part, short enough not to reach its timeouts.
pub const DEFAULT_GAP: Duration = Duration::from_millis(50);
/// At most this many writes: past it a split says nothing more.
pub const MAX_SPLIT: u32 = 64;
/// No quirk waits longer: past it a register has long given up.
pub const MAX_WAIT: Duration = Duration::from_secs(600);
/// Script lines longer than this are not a plan but a wrong file.
const MAX_LINE: usize = 1024;
/// The largest `simulator-script`: thousands of plans, more than a test
/// session plays.
pub const MAX_SCRIPT: u64 = 64 * 1024;

/// What a simulated transaction ends with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Approve,
    /// AF04.
    Refuse,
    /// AF05.
    Forbidden,
    /// AF06.
    Abandon,
    /// AF07, said as such (the answer goes out).
    NotEnded,
    /// AF08.
    Timeout,
    /// AF02: call the issuer.
    Phone,
    /// Approved for this amount (minor units), when the register allowed
    /// partial payment (`BF=1`); refused otherwise.
    Partial(u64),
    /// The answer is lost: journaled unknown (AF07), as a transaction
    /// begun before a crash, and never sent. The register gets nothing on
    /// this connection (or serial session) and must ask with a status
    /// request (`CD=T`), which returns AF07: what it would get had the
    /// terminal crashed.
    Unknown,
    /// The busy answer, though the terminal is idle: no transaction.
    Busy,
}

impl fmt::Display for Fate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fate::Approve => f.write_str("approve"),
            Fate::Refuse => f.write_str("refuse"),
            Fate::Forbidden => f.write_str("forbidden"),
            Fate::Abandon => f.write_str("abandon"),
            Fate::NotEnded => f.write_str("not-ended"),
            Fate::Timeout => f.write_str("timeout"),
            Fate::Phone => f.write_str("phone"),
            Fate::Partial(a) => write!(f, "partial={a}"),
            Fate::Unknown => f.write_str("unknown"),
            Fate::Busy => f.write_str("busy"),
        }
    }
}

/// How the answer (or the link session) misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quirk {
    /// TCP: the answer in this many writes, this far apart.
    Split(u32, Duration),
    /// TCP: CR LF after the answer.
    Crlf,
    /// TCP: the answer only after this extra wait.
    Late(Duration),
    /// TCP: closed without an answer (the outcome is journaled as decided).
    Silent,
    /// TCP: a reset instead of the answer.
    Reset,
    /// TCP: the connection stays open after the answer until the register
    /// closes it (at most `transaction-timeout`).
    Open,
    /// TCP: the answer without its amount (CB), as a red-key cancel on some
    /// terminals.
    NoCb,
    /// Serial: the register's first frame is NAKed.
    NakFirst,
    /// Serial: the register's ENQ is not ACKed, once.
    NoAck,
    /// Serial: the answer's first try has a wrong LRC.
    BadLrc,
    /// Serial: our ENQ (opening the answer's session) after this wait.
    SlowEnq(Duration),
}

impl Quirk {
    /// The channel this quirk acts on.
    pub fn channel(self) -> Channel {
        match self {
            Quirk::NakFirst | Quirk::NoAck | Quirk::BadLrc | Quirk::SlowEnq(_) => Channel::Serial,
            _ => Channel::Tcp,
        }
    }

    /// Acts before the request is taken (on the serial line), so before
    /// any transaction exists.
    pub fn before_request(self) -> bool {
        matches!(self, Quirk::NakFirst | Quirk::NoAck)
    }

    /// Its name, without a value, as the vocabulary spells it.
    pub fn name(self) -> &'static str {
        match self {
            Quirk::Split(..) => "split",
            Quirk::Crlf => "crlf",
            Quirk::Late(_) => "late",
            Quirk::Silent => "silent",
            Quirk::Reset => "reset",
            Quirk::Open => "open",
            Quirk::NoCb => "no-cb",
            Quirk::NakFirst => "nak-first",
            Quirk::NoAck => "no-ack",
            Quirk::BadLrc => "bad-lrc",
            Quirk::SlowEnq(_) => "slow-enq",
        }
    }

    /// The same quirk, whatever its value: two of a kind are one too
    /// many.
    fn same_kind(self, other: Quirk) -> bool {
        std::mem::discriminant(&self) == std::mem::discriminant(&other)
    }

    /// Shapes the bytes of an answer that is sent: meaningless when none
    /// is.
    fn shapes_answer(self) -> bool {
        matches!(
            self,
            Quirk::Split(..) | Quirk::Crlf | Quirk::Open | Quirk::NoCb | Quirk::BadLrc
        )
    }
}

impl fmt::Display for Quirk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quirk::Split(n, gap) => write!(f, "split={n}:{}", fmt_duration(*gap)),
            Quirk::Late(d) => write!(f, "late={}", fmt_duration(*d)),
            Quirk::SlowEnq(d) => write!(f, "slow-enq={}", fmt_duration(*d)),
            q => f.write_str(q.name()),
        }
    }
}

/// One transaction's script: an outcome and its quirks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub fate: Fate,
    pub quirks: Vec<Quirk>,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.fate)?;
        for q in &self.quirks {
            write!(f, " {q}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Plan {
    type Err = String;

    fn from_str(s: &str) -> Result<Plan, String> {
        let words: Vec<&str> = s.split_whitespace().collect();
        Plan::parse(&words)
    }
}

/// The words every error lists, so that an operator need not open the
/// manual to correct a typo.
const OUTCOMES: &str = "approve, refuse, forbidden, abandon, not-ended, timeout, phone, \
                        partial=AMOUNT, unknown or busy";
const QUIRKS: &str = "split=N[:GAP], crlf, late=DURATION, silent, reset, open, no-cb, \
                      nak-first, no-ack, bad-lrc or slow-enq=DURATION";

fn wait(word: &str, v: &str) -> Result<Duration, String> {
    let d = parse_duration(v).map_err(|e| format!("{word}: {e}"))?;
    if d > MAX_WAIT {
        return Err(format!("{word}: at most {}", fmt_duration(MAX_WAIT)));
    }
    Ok(d)
}

fn fate(word: &str) -> Result<Fate, String> {
    Ok(match word.split_once('=') {
        None => match word {
            "approve" => Fate::Approve,
            "refuse" => Fate::Refuse,
            "forbidden" => Fate::Forbidden,
            "abandon" => Fate::Abandon,
            "not-ended" => Fate::NotEnded,
            "timeout" => Fate::Timeout,
            "phone" => Fate::Phone,
            "unknown" => Fate::Unknown,
            "busy" => Fate::Busy,
            "partial" => return Err("partial takes an amount: partial=AMOUNT".into()),
            w if quirk(w).is_ok() => {
                return Err(format!(
                    "{w:?} is a quirk: the outcome comes first ({OUTCOMES})"
                ))
            }
            w => return Err(format!("{w:?} is not an outcome ({OUTCOMES})")),
        },
        Some(("partial", a)) => {
            // Minor units, as CB carries them: at most 12 digits.
            let ok = !a.is_empty() && a.len() <= 12 && a.bytes().all(|b| b.is_ascii_digit());
            match a.parse::<u64>() {
                Ok(v) if ok && v > 0 => Fate::Partial(v),
                _ => {
                    return Err(format!(
                        "partial={}: the amount is 1 to 12 digits in minor units, not 0",
                        a.escape_debug()
                    ))
                }
            }
        }
        Some(_) if quirk(word).is_ok() => {
            return Err(format!(
                "{word:?} is a quirk: the outcome comes first ({OUTCOMES})"
            ))
        }
        Some(_) => return Err(format!("{word:?} is not an outcome ({OUTCOMES})")),
    })
}

fn quirk(word: &str) -> Result<Quirk, String> {
    let (name, value) = match word.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (word, None),
    };
    let plain = |q: Quirk| match value {
        None => Ok(q),
        Some(_) => Err(format!("{name} takes no value")),
    };
    let needs = |what: &str| value.ok_or_else(|| format!("{name} takes a value: {name}={what}"));
    match name {
        "split" => {
            let v = needs("N[:GAP]")?;
            let (n, gap) = match v.split_once(':') {
                Some((n, g)) => (n, wait("split gap", g)?),
                None => (v, DEFAULT_GAP),
            };
            match n.parse::<u32>() {
                Ok(n) if (2..=MAX_SPLIT).contains(&n) => Ok(Quirk::Split(n, gap)),
                // Escaped: the reply goes to an operator's terminal.
                _ => Err(format!(
                    "split={}: N is a number of writes from 2 to {MAX_SPLIT}",
                    v.escape_debug()
                )),
            }
        }
        "late" => Ok(Quirk::Late(wait("late", needs("DURATION")?)?)),
        "slow-enq" => Ok(Quirk::SlowEnq(wait("slow-enq", needs("DURATION")?)?)),
        "crlf" => plain(Quirk::Crlf),
        "silent" => plain(Quirk::Silent),
        "reset" => plain(Quirk::Reset),
        "open" => plain(Quirk::Open),
        "no-cb" => plain(Quirk::NoCb),
        "nak-first" => plain(Quirk::NakFirst),
        "no-ack" => plain(Quirk::NoAck),
        "bad-lrc" => plain(Quirk::BadLrc),
        _ => Err(format!("{word:?} is not a quirk ({QUIRKS})")),
    }
}

impl Plan {
    /// `OUTCOME [QUIRK...]`, each a word. The error says which word is
    /// wrong and what would be right.
    pub fn parse(words: &[&str]) -> Result<Plan, String> {
        let Some((first, rest)) = words.split_first() else {
            return Err(format!("an outcome is needed ({OUTCOMES})"));
        };
        let fate = fate(first)?;
        let mut quirks: Vec<Quirk> = Vec::new();
        for w in rest {
            let q = quirk(w)?;
            if quirks.iter().any(|o| q.same_kind(*o)) {
                return Err(format!("{} is given twice", q.name()));
            }
            quirks.push(q);
        }
        let has = |q: Quirk| quirks.contains(&q);
        if has(Quirk::Silent) && has(Quirk::Reset) {
            return Err("silent and reset: the connection ends one way only".into());
        }
        // What shapes an answer has nothing to act on when none goes out.
        let gone = match fate {
            Fate::Unknown => Some("unknown (the answer is lost)"),
            Fate::Busy => Some("busy (no transaction)"),
            _ if has(Quirk::Silent) => Some("silent"),
            _ if has(Quirk::Reset) => Some("reset"),
            _ => None,
        };
        if let Some(why) = gone {
            if let Some(q) = quirks.iter().find(|q| {
                q.shapes_answer()
                    || (fate == Fate::Busy && !q.before_request())
                    || (fate == Fate::Unknown && matches!(q, Quirk::Silent | Quirk::Reset))
            }) {
                return Err(format!(
                    "{q} with {why}: no answer goes out for it to act on"
                ));
            }
        }
        Ok(Plan { fate, quirks })
    }
}

/// A `simulator-script`: its path and its plans with their line numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Script {
    pub path: PathBuf,
    pub lines: Vec<(usize, Plan)>,
}

impl Script {
    /// Reads the script at `path` (at start and at each reload): a regular
    /// file of at most [`MAX_SCRIPT`] bytes, opened without blocking (see
    /// [`crate::config::files::read_regular`]), whose lines are plans.
    pub fn read(path: &Path) -> Result<Script, crate::config::error::Error> {
        use crate::config::error::Error;
        let file = path.display().to_string();
        let text = crate::config::files::read_regular(path, MAX_SCRIPT).map_err(|source| {
            Error::ConfigRead {
                file: format!("simulator-script {file}"),
                source,
            }
        })?;
        Script::parse(path, &text).map_err(|(line, msg)| Error::Config { file, line, msg })
    }

    /// Reads a script: one plan a line, `#` starts a comment, blank lines
    /// skipped. The error is the line number and what is wrong with it.
    pub fn parse(path: &Path, text: &str) -> Result<Script, (usize, String)> {
        let mut lines = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            if raw.len() > MAX_LINE {
                return Err((i + 1, format!("line longer than {MAX_LINE} bytes")));
            }
            let line = raw.split_once('#').map_or(raw, |(l, _)| l);
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.is_empty() {
                continue;
            }
            let plan = Plan::parse(&words).map_err(|e| (i + 1, e))?;
            lines.push((i + 1, plan));
        }
        Ok(Script {
            path: path.to_path_buf(),
            lines,
        })
    }

    pub(crate) fn at(&self, line: usize) -> String {
        format!("{}:{line}", self.shown())
    }

    /// Its path as the log, the journal and the control replies show it:
    /// a configuration value, masked like any other.
    pub(crate) fn shown(&self) -> String {
        crate::wire::pan::masked_text(&self.path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn plan(s: &str) -> Plan {
        s.parse().unwrap()
    }

    fn err(s: &str) -> String {
        s.parse::<Plan>().unwrap_err()
    }

    #[test]
    fn the_vocabulary_reads_back_as_written() {
        for text in [
            "approve",
            "refuse",
            "forbidden",
            "abandon",
            "not-ended",
            "timeout",
            "phone",
            "partial=500",
            "unknown",
            "busy",
            "approve split=3:50ms crlf late=2s open no-cb",
            "refuse silent late=100ms",
            "approve reset",
            "approve nak-first no-ack bad-lrc slow-enq=1.5s",
            "unknown nak-first",
            "busy no-ack",
        ] {
            let p = plan(text);
            assert_eq!(p.to_string().parse::<Plan>().unwrap(), p, "{text}");
        }
        assert_eq!(
            plan("approve split=4"),
            Plan {
                fate: Fate::Approve,
                quirks: vec![Quirk::Split(4, DEFAULT_GAP)]
            }
        );
        assert_eq!(plan("partial=0100").fate, Fate::Partial(100));
        assert_eq!(plan("approve split=2:1s").to_string(), "approve split=2:1s");
    }

    #[test]
    fn wrong_words_are_said_with_what_would_be_right() {
        assert!(err("").contains("an outcome is needed (approve,"));
        assert!(err("ok").contains("\"ok\" is not an outcome (approve,"));
        assert!(err("crlf").contains("is a quirk: the outcome comes first"));
        assert!(err("split=2").contains("is a quirk"));
        assert!(err("partial").contains("partial=AMOUNT"));
        assert!(err("partial=0").contains("not 0"));
        assert!(err("partial=12x").contains("1 to 12 digits"));
        assert!(err("partial=1234567890123").contains("1 to 12 digits"));
        assert!(err("approve wobble").contains("\"wobble\" is not a quirk (split=N[:GAP]"));
        assert!(err("approve split").contains("split=N[:GAP]"));
        assert!(err("approve split=1").contains("from 2 to 64"));
        assert!(err("approve split=65").contains("from 2 to 64"));
        assert!(err("approve split=3:fast").contains("split gap"));
        assert!(err("approve late").contains("late=DURATION"));
        assert!(err("approve late=11m").contains("at most 600s"));
        assert!(err("approve late=-1s").contains("negative"));
        assert!(err("approve crlf=1").contains("crlf takes no value"));
        assert!(err("approve crlf crlf").contains("crlf is given twice"));
        assert!(err("approve split=2 split=3").contains("split is given twice"));
        assert!(err("approve silent reset").contains("one way only"));
        assert!(err("approve silent split=2").contains("no answer goes out"));
        assert!(err("approve reset crlf").contains("no answer goes out"));
        assert!(err("unknown crlf").contains("unknown (the answer is lost)"));
        assert!(err("unknown silent").contains("no answer goes out"));
        assert!(err("busy late=1s").contains("busy (no transaction)"));
    }

    proptest! {
        #[test]
        fn any_words_parse_or_fail_without_panic(words in proptest::collection::vec(
            prop_oneof![
                "[a-z=:.0-9-]{0,12}",
                Just("split=".to_string()),
                Just("partial=".to_string()),
                "split=[0-9]{1,25}:[0-9.]{0,25}[a-z]{0,2}",
                "(late|slow-enq)=[0-9.]{0,30}(ms|s|m|h)?",
                "partial=[0-9]{0,30}",
                any::<String>(),
            ],
            0..6,
        )) {
            let w: Vec<&str> = words.iter().map(String::as_str).collect();
            if let Ok(p) = Plan::parse(&w) {
                // What parses reads back to itself.
                prop_assert_eq!(p.to_string().parse::<Plan>(), Ok(p));
            }
        }

        #[test]
        fn any_script_parses_or_names_its_line(text in "(.{0,40}\n){0,6}") {
            match Script::parse(Path::new("s"), &text) {
                Ok(s) => prop_assert!(s.lines.len() <= text.lines().count()),
                Err((line, _)) => prop_assert!(line >= 1 && line <= text.lines().count()),
            }
        }
    }

    #[test]
    fn scripts_skip_comments_and_name_the_bad_line() {
        let s = Script::parse(
            Path::new("t.script"),
            "# a scenario\n\napprove split=2  # two writes\n  refuse\n",
        )
        .unwrap();
        assert_eq!(
            s.lines,
            vec![(3, plan("approve split=2")), (4, plan("refuse"))]
        );
        let (line, e) =
            Script::parse(Path::new("t"), "approve\n\nrefuse crlf bogus\n").unwrap_err();
        assert_eq!(line, 3);
        assert!(e.contains("\"bogus\" is not a quirk"), "{e}");
    }
}
