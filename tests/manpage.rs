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
    use concert::config::KEYS;
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
            key.reload.needs_restart(),
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
    for p in installed_pages() {
        let man = page(&p);
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
        "simulator-delay 2 s",
        "journal a b",
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
        "terminal-profile hipay",
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
        ".It Fl s Ar socket , Fl \\-socket Ns = Ns Ar socket",
        ".It Fl h , Fl \\-help",
        ".It Fl V , Fl \\-version",
    ] {
        assert!(man.lines().any(|l| l == item), "{item} not in concertctl.8");
    }
}

#[test]
fn the_sample_configuration_shows_every_keyword_in_order() {
    use concert::config::{Config, KEYS};
    let sample =
        std::fs::read_to_string(format!("{}/etc/concertd.conf", env!("CARGO_MANIFEST_DIR")))
            .unwrap();
    // Each keyword's first line, active or commented out, in the order of
    // the table (that of `-n` and of concertd.conf(5)).
    let mut at = Vec::new();
    for k in KEYS {
        let pos = sample.lines().position(|l| {
            let l = l.strip_prefix('#').unwrap_or(l);
            l.strip_prefix(k.name).is_some_and(|v| v.starts_with(' '))
        });
        let pos = pos.unwrap_or_else(|| panic!("{} not in etc/concertd.conf", k.name));
        // A commented-out line is one a user can take as it is.
        let line = sample.lines().nth(pos).unwrap();
        let line = line.strip_prefix('#').unwrap_or(line);
        if let Err(e) = Config::parse(line, "etc/concertd.conf") {
            panic!("{line:?}: {e}");
        }
        at.push((pos, k.name));
    }
    let mut sorted = at.clone();
    sorted.sort();
    assert_eq!(at, sorted, "keywords out of the table's order");
}

/// The pages `make install` puts in place: the Makefile's MANPAGES, by
/// file name (`concertd-protocol.7`).
fn installed_pages() -> Vec<String> {
    let make = std::fs::read_to_string(format!("{}/Makefile", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let start = make
        .find("\nMANPAGES = ")
        .expect("MANPAGES in the Makefile")
        + 1;
    let mut words = Vec::new();
    for line in make[start..].lines() {
        let (body, more) = match line.strip_suffix('\\') {
            Some(b) => (b, true),
            None => (line, false),
        };
        words.extend(body.split_whitespace().map(str::to_string));
        if !more {
            break;
        }
    }
    let pages: Vec<String> = words
        .iter()
        .skip(2) // `MANPAGES =`
        .map(|w| w.strip_prefix("man/").unwrap_or(w).to_string())
        .collect();
    assert!(pages.len() >= 4, "MANPAGES parsed wrong: {words:?}");
    pages
}

/// Pages of the system a page may send the reader to: the project's own
/// are those it installs.
const STANDARD: &[&str] = &[
    "accept.2",
    "fchown.2",
    "fdatasync.2",
    "flock.2",
    "fstat.2",
    "poll.2",
    "setrlimit.2",
    "setsid.2",
    "initgroups.3",
    "sd-daemon.3",
    "syslog.3",
    "inotify.7",
    "systemd.1",
    "systemd.service.5",
    "systemd.unit.5",
    "systemd.exec.5",
];

/// The mdoc words of the macro lines of a page, with their line numbers.
fn macro_lines(man: &str) -> Vec<(usize, Vec<&str>)> {
    man.lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with('.'))
        .map(|(i, l)| (i + 1, l[1..].split_whitespace().collect()))
        .collect()
}

#[test]
fn every_page_in_man_is_installed() {
    let installed = installed_pages();
    let dir = format!("{}/man", env!("CARGO_MANIFEST_DIR"));
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut listed = installed.clone();
    listed.sort();
    assert_eq!(found, listed, "man/ and the Makefile's MANPAGES");
}

#[test]
fn every_cross_reference_names_a_page_that_exists() {
    let installed = installed_pages();
    let mut seen = 0;
    for p in &installed {
        let man = page(p);
        for (n, words) in macro_lines(&man) {
            for (i, _) in words.iter().enumerate().filter(|(_, w)| **w == "Xr") {
                let (Some(name), Some(sec)) = (words.get(i + 1), words.get(i + 2)) else {
                    panic!("{p}:{n}: Xr without a name and a section");
                };
                let target = format!("{name}.{sec}");
                seen += 1;
                assert!(
                    installed.contains(&target) || STANDARD.contains(&target.as_str()),
                    "{p}:{n}: Xr {name} {sec}: neither a page make install puts in place \
                     nor a standard one"
                );
            }
        }
    }
    assert!(seen > 50, "Xr parsed wrong: {seen}");
}

/// Words that end the name an `Sx` gives: the mdoc macros the pages call
/// on a line, and lone punctuation.
fn ends_a_name(w: &str) -> bool {
    const MACROS: &[&str] = &[
        "Ar", "Cm", "Dq", "Dv", "Em", "Ev", "Fl", "Ic", "Li", "Nm", "No", "Ns", "Op", "Pa", "Pc",
        "Po", "Pq", "Ql", "Sq", "Sx", "Xr",
    ];
    MACROS.contains(&w) || w.chars().all(|c| ".,;:()!?".contains(c))
}

/// The section titles (`.Sh`, `.Ss`) of a page.
fn titles(man: &str) -> Vec<&str> {
    man.lines()
        .filter_map(|l| l.strip_prefix(".Sh ").or_else(|| l.strip_prefix(".Ss ")))
        .collect()
}

#[test]
fn every_section_reference_names_a_section_where_it_points() {
    // `Sx Safe retry` names a section of the same page; followed by `in Xr
    // concertd-protocol 7`, on its line or on the next ones (`in`, `.Xr`),
    // a section of that page. So text that moved to another page cannot
    // leave a reference pointing where it no longer is.
    let installed = installed_pages();
    let mut seen = 0;
    for p in &installed {
        let man = page(p);
        let lines: Vec<&str> = man.lines().collect();
        for (n, words) in macro_lines(&man) {
            for (i, _) in words.iter().enumerate().filter(|(_, w)| **w == "Sx") {
                let name: Vec<&str> = words[i + 1..]
                    .iter()
                    .take_while(|w| !ends_a_name(w))
                    .copied()
                    .collect();
                assert!(!name.is_empty(), "{p}:{n}: Sx without a name");
                let name = name.join(" ");
                let after = &words[i + 1..];
                // `... in Xr page section` later on the same line.
                let same_line = after
                    .windows(4)
                    .find(|w| w[0] == "in" && w[1] == "Xr")
                    .map(|w| format!("{}.{}", w[2], w[3]));
                // Or the line ends the name and the next lines say it:
                // `and` / `.Sx other` lines, then `in`, then `.Xr page section`.
                let next_lines = || {
                    let mut k = n; // the next line's index in `lines`
                    while lines
                        .get(k)
                        .is_some_and(|l| *l == "and" || l.starts_with(".Sx "))
                    {
                        k += 1;
                    }
                    if lines.get(k) != Some(&"in") {
                        return None;
                    }
                    let xr: Vec<&str> = lines
                        .get(k + 1)?
                        .strip_prefix(".Xr ")?
                        .split_whitespace()
                        .collect();
                    Some(format!("{}.{}", xr.first()?, xr.get(1)?))
                };
                let ends_line = i + 1 + name.split(' ').count() == words.len();
                let target = same_line
                    .or_else(|| if ends_line { next_lines() } else { None })
                    .unwrap_or_else(|| p.clone());
                assert!(
                    installed.contains(&target),
                    "{p}:{n}: Sx {name} in {target}, which make install does not put in place"
                );
                seen += 1;
                assert!(
                    titles(&page(&target)).contains(&name.as_str()),
                    "{p}:{n}: Sx {name}: {target} has no such section"
                );
            }
        }
    }
    assert!(seen > 50, "Sx parsed wrong: {seen}");
}

#[test]
fn concertd_8_is_about_running_the_daemon() {
    // The page an operator opens for a signal or an option stays short:
    // the protocol, the journal's format, the backends and what is logged
    // have pages of their own. Measured as the issue measures it, with
    // mandoc at 80 columns, where mandoc is installed.
    let out = match std::process::Command::new("mandoc")
        .args(["-T", "ascii", "-O", "width=80"])
        .arg(format!("{}/man/concertd.8", env!("CARGO_MANIFEST_DIR")))
        .output()
    {
        Ok(o) if o.status.success() => o,
        _ => {
            eprintln!("mandoc not installed: concertd.8's length not measured");
            return;
        }
    };
    let lines = String::from_utf8_lossy(&out.stdout).lines().count();
    assert!(
        lines <= 410,
        "concertd.8 renders to {lines} lines, over about 400"
    );
    // And it keeps the sections of a daemon's page.
    let man = page("concertd.8");
    for s in [
        "SYNOPSIS",
        "DESCRIPTION",
        "SIGNALS",
        "FILES",
        "EXIT STATUS",
        "EXAMPLES",
        "SEE ALSO",
    ] {
        assert!(titles(&man).contains(&s), "concertd.8 has no {s}");
    }
}

/// concertd.conf.5 FILES names every file the keywords default to, the
/// control socket included (issue 24, item 12).
#[test]
fn the_configuration_files_section_names_every_default_path() {
    use concert::config::{DEFAULT_CONTROL, DEFAULT_FILE, DEFAULT_JOURNAL, DEFAULT_PIDFILE};
    let man = page("concertd.conf.5");
    let files = section(&man, "FILES");
    for path in [
        DEFAULT_FILE,
        DEFAULT_PIDFILE,
        DEFAULT_JOURNAL,
        DEFAULT_CONTROL,
    ] {
        assert!(
            files.lines().any(|l| l == format!(".It Pa {path}")),
            "{path} not in concertd.conf.5 FILES"
        );
    }
}

#[test]
fn the_operations_the_protocol_page_calls_unsupported_are_refused_and_no_other() {
    // concertd-protocol.7, Operations: "Other values, such as R, C, ...,
    // are not supported and answered AE=01 AF=12"; the table's values are.
    let man = page("concertd-protocol.7");
    let ops = section(&man, "PROTOCOL");
    let ops = &ops[ops
        .find(".Ss Operations")
        .expect("Operations in concertd-protocol.7")..];
    let from = ops
        .find("\nOther values, such as\n")
        .expect("Other values, such as");
    let to = ops[from..]
        .find("are not supported")
        .expect("are not supported")
        + from;
    let unsupported: Vec<&str> = ops[from..to]
        .lines()
        .filter_map(|l| l.strip_prefix(".Li "))
        .flat_map(|l| l.split_whitespace())
        .filter(|w| *w != ",")
        .collect();
    assert!(unsupported.len() >= 3, "{unsupported:?}");
    let supported: Vec<&str> = ops[..from]
        .lines()
        .filter_map(|l| l.strip_prefix(".It Li "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(supported.contains(&"0"), "{supported:?}");
    let d = Daemon::start("");
    for cd in unsupported.iter().chain(&supported) {
        let req = format!("CZ0040320CA00201CB0041000CD001{cd}CE003978ZT004text");
        let answer = text(&exchange(d.addr, req.as_bytes()));
        let refused = get(answer.as_bytes(), "AF").as_deref() == Some("12");
        assert_eq!(
            refused,
            unsupported.contains(cd),
            "CD={cd}: {answer} (the page lists {unsupported:?} as not supported)"
        );
    }
}

/// concertd.8 FINDINGS is the one table of findings (issue 25, item 2):
/// each kind `concertctl registers` can show, with the severity it shows
/// it with, and the sources the table cites; concertd-protocol.7 only
/// points there.
#[test]
fn concertd_8_findings_list_every_kind_with_its_severity_and_sources() {
    use concert::front::findings::Kind;
    let man = page("concertd.8");
    let findings = section(&man, "FINDINGS");
    let items: Vec<&str> = findings.lines().filter(|l| l.starts_with(".It ")).collect();
    for k in Kind::ALL {
        let item = format!(".It Cm {} Pq {} :", k.name(), k.severity());
        assert!(
            items.contains(&item.as_str()),
            "{item:?} not in concertd.8 FINDINGS: {items:?}"
        );
    }
    assert_eq!(items.len(), Kind::ALL.len(), "{items:?}");
    // The sources, each where the terminals' behaviour is told.
    let text = findings.replace('\n', " ");
    for source in [
        "HiPay's Local API for Nepting page (Troubleshooting)",
        "PayXpert's Concert V2 page",
        "OCA/l10n-france PR 645 to 648",
        "OCA/l10n-france PR 787, 797, 798",
        "OCA/pos PR 550",
        "OCA/l10n-france PR 669 to 672",
    ] {
        assert!(text.contains(source), "{source} not in concertd.8 FINDINGS");
    }
    let protocol = section(&page("concertd-protocol.7"), "FINDINGS").to_string();
    for k in Kind::ALL {
        assert!(
            !protocol.contains(k.name()),
            "concertd-protocol.7 FINDINGS keeps a copy: {}",
            k.name()
        );
    }
}

/// concertd.conf.5 SYSTEMD UNITS says what the units `make install`
/// writes hold: each directive it gives them (`Cm Key=value`) is a line
/// of etc/concertd.service.in or etc/concertd@.service.in, and those it
/// offers for a drop-in, or says the units leave out, are not.
#[test]
fn the_units_section_says_what_the_units_hold() {
    let root = env!("CARGO_MANIFEST_DIR");
    let units: Vec<String> = ["concertd.service.in", "concertd@.service.in"]
        .iter()
        .flat_map(|u| {
            std::fs::read_to_string(format!("{root}/etc/{u}"))
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let man = page("concertd.conf.5");
    let mut said = 0;
    // Set from "drop-in" to the end of its paragraph: directives offered.
    let mut drop_in = false;
    for line in section(&man, "SYSTEMD UNITS").lines() {
        if line == ".Pp" {
            drop_in = false;
        }
        if line.contains("drop-in") {
            drop_in = true;
        }
        let Some(mac) = line.strip_prefix('.') else {
            continue;
        };
        let words: Vec<&str> = mac.split_whitespace().collect();
        for (i, _) in words.iter().enumerate().filter(|(_, w)| **w == "Cm") {
            let directive = words[i + 1..]
                .iter()
                .take_while(|w| !ends_a_name(w))
                .copied()
                .collect::<Vec<_>>()
                .join(" ");
            let Some((key, value)) = directive.split_once('=') else {
                continue;
            };
            said += 1;
            if drop_in {
                assert!(
                    !units.contains(&directive),
                    "{directive} offered for a drop-in, but the units have it"
                );
            } else if value.is_empty() {
                // "no PrivateDevices=": the units leave it out.
                assert!(
                    !units.iter().any(|l| l.starts_with(&format!("{key}="))),
                    "{key}= said absent, but the units have it"
                );
            } else {
                assert!(
                    units.contains(&directive),
                    "{directive}: no unit has this line"
                );
            }
        }
    }
    assert!(said >= 12, "directives parsed wrong: {said}");
}
