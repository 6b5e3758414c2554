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

#[test]
fn every_keyword_is_documented() {
    let man = page("concertd.conf.5");
    for k in concert::config::KEYWORDS {
        assert!(
            man.lines()
                .any(|l| l.starts_with(".It Ic ") && l.split_whitespace().nth(2) == Some(k)),
            "{k} not in concertd.conf.5"
        );
    }
}

#[test]
fn every_concert_option_is_documented() {
    let man = page("concert.1");
    for flag in ["h", "p", "c", "r", "k", "P", "t", "z", "i"] {
        assert!(
            man.contains(&format!(".It Fl {flag}")),
            "-{flag} not in concert.1"
        );
    }
    for cmd in [
        "pay",
        "refund",
        "cancel",
        "duplicate",
        "ping",
        "telecollect",
        "print",
        "send",
    ] {
        assert!(
            man.contains(&format!(".Cm {cmd}")),
            "{cmd} not in concert.1"
        );
    }
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
