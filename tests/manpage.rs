//! The man pages keep up with the code: every flag and keyword documented.

use crate::util::*;

fn page(name: &str) -> String {
    std::fs::read_to_string(format!("{}/man/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn every_concertd_flag_is_documented() {
    let o = run(CONCERTD, &["-?"]);
    let usage = stderr(&o);
    let line = usage
        .lines()
        .find(|l| l.starts_with("usage: concertd"))
        .unwrap();
    let man = page("concertd.8");
    for flag in line
        .chars()
        .filter(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .replace("usageconcertd", "")
        .replace("file", "")
        .chars()
    {
        assert!(
            man.contains(&format!(".It Fl {flag}")),
            "-{flag} not in concertd.8"
        );
    }
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
