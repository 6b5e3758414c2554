//! The man pages keep up with the code: every flag and keyword documented.

use crate::util::*;

fn page(name: &str) -> String {
    std::fs::read_to_string(format!("{}/man/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn every_concertd_flag_is_documented() {
    // The options are those `concertd -h` lists, one a line, so a new one
    // cannot be missed here.
    let o = run(CONCERTD, &["-h"]);
    let help = stdout(&o);
    let man = page("concertd.8");
    let mut flags = 0;
    for opt in help
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix('-'))
    {
        let mut names = opt.split_whitespace().next().unwrap_or("").split(',');
        let short = names.next().unwrap_or("");
        let mut item = format!(".It Fl {short}");
        // `-h, --help` is documented as `.It Fl h , Fl \-help`.
        if let Some(long) = opt
            .split_whitespace()
            .nth(1)
            .and_then(|w| w.strip_prefix("--"))
        {
            item.push_str(&format!(" , Fl \\-{long}"));
        }
        flags += 1;
        assert!(
            man.lines()
                .any(|l| l == item || l.starts_with(&format!("{item} "))),
            "-{short} not in concertd.8 as {item:?}"
        );
    }
    assert!(flags >= 6, "-h parsed wrong: {help}");
}

/// The section of a page from its `.Sh` title to the next.
fn section<'a>(man: &'a str, title: &str) -> &'a str {
    let head = format!(".Sh {title}\n");
    let start = man
        .find(&head)
        .unwrap_or_else(|| panic!("no {title} section"))
        + head.len();
    let rest = &man[start..];
    &rest[..rest.find("\n.Sh ").unwrap_or(rest.len())]
}

#[test]
fn the_keyword_list_is_the_table() {
    use concert::config::{Reload, KEYS};
    let man = page("concertd.conf.5");
    // Each `.It Ic keyword ...` entry of KEYWORDS, with its text.
    let entries: Vec<(&str, &str)> = section(&man, "KEYWORDS")
        .split("\n.It Ic ")
        .skip(1)
        .map(|e| (e.split_whitespace().next().unwrap_or(""), e))
        .collect();
    let documented: Vec<&str> = entries.iter().map(|(k, _)| *k).collect();
    let table: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
    // Both ways, and in the order `-n` prints them.
    assert_eq!(documented, table);
    for (key, (_, text)) in KEYS.iter().zip(&entries) {
        assert_eq!(
            text.contains("\nA change needs a restart.\n"),
            key.reload == Reload::Restart,
            "{}: whether a change needs a restart",
            key.name
        );
    }
}

#[test]
fn every_concert_option_is_documented() {
    // The flags and commands are those concert's own usage prints, so a
    // new one cannot be missed here.
    let o = run(CONCERT, &["-?"]);
    let usage = stderr(&o);
    let start = usage
        .find("usage: concert")
        .unwrap_or_else(|| panic!("no usage: {usage}"));
    let usage = &usage[start..];
    let (options, commands) = usage.split_once("commands:").expect("a commands list");
    let man = page("concert.1");
    let mut flags = 0;
    for word in options.split(|c: char| c.is_whitespace() || "[]|".contains(c)) {
        let item = if let Some(long) = word.strip_prefix("--") {
            format!(".It Fl \\-{long}")
        } else if let Some(short) = word.strip_prefix('-') {
            format!(".It Fl {short}")
        } else {
            continue;
        };
        flags += 1;
        assert!(
            man.lines()
                .any(|l| l == item || l.starts_with(&format!("{item} "))),
            "{word} not in concert.1"
        );
    }
    assert!(flags >= 14, "usage parsed wrong: {usage}");
    let mut cmds = 0;
    for cmd in commands
        .split(|c: char| c.is_whitespace() || c == '|')
        .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase()))
    {
        cmds += 1;
        assert!(
            man.lines()
                .any(|l| l == format!(".It Cm {cmd}") || l.starts_with(&format!(".It Cm {cmd} "))),
            "{cmd} not in concert.1"
        );
    }
    assert!(cmds >= 9, "usage parsed wrong: {usage}");
}

#[test]
fn no_merge_conflict_is_left_in_the_pages() {
    for p in ["concertd.8", "concertd.conf.5", "concert.1"] {
        let man = page(p);
        for marker in ["<<<<<<< ", ">>>>>>> ", "======="] {
            assert!(
                !man.lines().any(|l| l.starts_with(marker)),
                "{p}: a merge conflict marker {marker:?}"
            );
        }
    }
}

/// One piece of a DIAGNOSTICS message as the page writes it.
#[derive(Debug)]
enum Piece {
    Text(String),
    /// `Ar value`: the word at fault, in double quotes.
    Value,
    /// `Ar keyword`: a keyword of the file.
    Keyword,
}

/// The mdoc words of a line: blanks separate, `"..."` groups.
fn mdoc_words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let (word, next) = if let Some(q) = rest.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (q[..end].to_string(), q.get(end + 1..).unwrap_or(""))
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            (rest[..end].to_string(), &rest[end..])
        };
        out.push(word);
        rest = next.trim_start();
    }
    out
}

/// The messages of one `.It` line of DIAGNOSTICS: alternatives are
/// separated by a lone comma.
fn templates(item: &str) -> Vec<Vec<Piece>> {
    let mut all = vec![Vec::new()];
    let mut glue = false;
    let mut arg = false;
    for w in mdoc_words(item) {
        match w.as_str() {
            "," => {
                all.push(Vec::new());
                glue = false;
                continue;
            }
            "Ns" => {
                glue = true;
                continue;
            }
            "Li" | "Ic" | "Cm" => {
                arg = false;
                continue;
            }
            "Ar" => {
                arg = true;
                continue;
            }
            _ => {}
        }
        let t = all.last_mut().unwrap();
        if !t.is_empty() && !glue {
            t.push(Piece::Text(" ".into()));
        }
        glue = false;
        t.push(match (arg, w.as_str()) {
            (true, "value") => Piece::Value,
            (true, "keyword") => Piece::Keyword,
            (true, other) => panic!("DIAGNOSTICS: unknown placeholder Ar {other}"),
            (false, _) => Piece::Text(w),
        });
    }
    all
}

fn matches(pieces: &[Piece], s: &str) -> bool {
    match pieces.split_first() {
        None => s.is_empty(),
        Some((Piece::Text(t), rest)) => {
            s.strip_prefix(t.as_str()).is_some_and(|s| matches(rest, s))
        }
        Some((Piece::Value, rest)) => s
            .strip_prefix('"')
            .and_then(|v| v.find('"').map(|end| &v[end + 1..]))
            .is_some_and(|s| matches(rest, s)),
        Some((Piece::Keyword, rest)) => concert::config::KEYS
            .iter()
            .any(|k| s.strip_prefix(k.name).is_some_and(|s| matches(rest, s))),
    }
}

#[test]
fn configuration_errors_are_those_of_diagnostics() {
    let man = page("concertd.conf.5");
    let documented: Vec<(String, Vec<Piece>)> = section(&man, "DIAGNOSTICS")
        .lines()
        .filter_map(|l| l.strip_prefix(".It "))
        .flat_map(|item| {
            templates(item)
                .into_iter()
                .map(move |t| (item.to_string(), t))
        })
        .collect();
    assert!(documented.len() >= 25, "DIAGNOSTICS parsed wrong");
    // A bad line for each message the parser can give.
    let bad = [
        "lisen 127.0.0.1:1",
        "simulator-delay 1 2",
        "listen \"127.0.0.1:1",
        "request-gap 5x",
        "request-gap 1.2.3s",
        "simulator-delay -1s",
        "request-gap 0",
        "listen nowhere",
        "listen 127.0.0.1:99999",
        "listen nosuchhost.invalid:80",
        "allow 300.1.1.1",
        "allow 10.0.0.0/33",
        "allow",
        "currency",
        "terminal",
        "currency EURO",
        "terminal pos",
        "terminal exec",
        "terminal relay",
        "terminal relay tcp h:1 v4",
        "terminal relay tcp nowhere",
        "terminal relay serial /dev/ttyS0 v2 9600 7E1 x",
        "terminal relay serial /dev/ttyS0 v2 fast",
        "max-connections-per-peer 0",
        "journal-size big",
        "journal-size 1K",
        "journal-size 2G",
        "journal-keep -1",
        "journal-keep 1001",
        "serial-speed 10",
        "serial-format 7X1",
        "serial-flow xon",
        "serial-protocol v4",
        "serial-split maybe",
        "answer-extensions hipay",
        "serial-number x",
    ];
    let mut used = vec![false; documented.len()];
    for line in bad {
        let e = match concert::config::Config::parse(line, "t.conf") {
            Ok(_) => panic!("{line:?} is accepted"),
            Err(e) => e.to_string(),
        };
        let msg = e
            .strip_prefix("t.conf:1: ")
            .unwrap_or_else(|| panic!("{line:?}: {e}"));
        let i = documented
            .iter()
            .position(|(_, t)| matches(t, msg))
            .unwrap_or_else(|| panic!("{line:?} says {msg:?}, which DIAGNOSTICS does not"));
        used[i] = true;
    }
    for ((item, t), used) in documented.iter().zip(used) {
        assert!(used, "no bad line gives {t:?} of .It {item}");
    }
}

#[test]
fn every_concertctl_command_and_option_is_documented() {
    let man = page("concertctl.8");
    // The commands are those concertctl -h lists, from the parser's own list.
    let help = stdout(&run(CONCERTCTL, &["-h"]));
    let list = help
        .split("commands:")
        .nth(1)
        .unwrap_or_else(|| panic!("{help}"));
    let mut n = 0;
    for cmd in list.split(',').filter_map(|c| c.split_whitespace().next()) {
        n += 1;
        assert!(
            man.lines()
                .any(|l| l == format!(".It Cm {cmd}") || l.starts_with(&format!(".It Cm {cmd} "))),
            "{cmd} not in concertctl.8"
        );
    }
    assert!(n >= 4, "{help}");
    for item in [
        ".It Fl s Ar socket",
        ".It Fl h , Fl \\-help",
        ".It Fl V , Fl \\-version",
    ] {
        assert!(man.lines().any(|l| l == item), "{item} not in concertctl.8");
    }
}
