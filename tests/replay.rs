//! A `simulator-script` replayed (issue 24, items 6 and 12): its file is
//! watched with the configuration, `reload` says what it did to it, and
//! `concertctl next rewind` starts it over; each command is logged once.

use crate::util::*;

const DEBIT: &str = "CZ0040320CA00201CB0041000CD0010CE003978";

/// A daemon with a control socket playing the script `text`; the script's
/// path.
fn scripted(text: &str, extra: &str) -> (Daemon, std::path::PathBuf) {
    let dir = temp_dir();
    let path = dir.join("scenario");
    std::fs::write(&path, text).unwrap();
    let d = Daemon::start(&format!(
        "control @DIR@/control.sock\nsimulator-script {}\n{extra}",
        path.display()
    ));
    (d, path)
}

fn ok(o: &std::process::Output) -> String {
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(o), stderr(o));
    stdout(o)
}

/// The AF of a declined debit, `10` for an approved one.
fn pay(d: &Daemon) -> String {
    let a = exchange(d.addr, DEBIT.as_bytes());
    get(&a, "AF").unwrap_or_else(|| get(&a, "AE").unwrap_or_default())
}

#[test]
fn reload_says_what_it_did_to_the_script_and_next_rewind_starts_it_over() {
    let (d, path) = scripted("refuse\n# a comment\napprove\nphone\n", "config-watch 0");
    let p = path.display();
    assert_eq!(pay(&d), "04");
    // Unchanged: kept at its place, and said so.
    let out = ok(&d.ctl(&["reload"]));
    assert!(out.contains("nothing changed"), "{out}");
    assert!(
        out.contains(&format!(
            "script {p} unchanged: step 2 of 3 (line 3) is next"
        )),
        "{out}"
    );
    assert_eq!(pay(&d), "10", "the script went on at step 2");
    // Changed: played from its first step, and said so (the configuration
    // itself is the same).
    std::fs::write(&path, "abandon\nphone\n").unwrap();
    let out = ok(&d.ctl(&["reload"]));
    assert!(
        out.contains(&format!("script {p} reloaded: 2 steps, starts at step 1")),
        "{out}"
    );
    assert!(!out.contains("nothing changed"), "{out}");
    assert_eq!(pay(&d), "06");
    assert_eq!(pay(&d), "02");
    assert_eq!(pay(&d), "10", "consumed: the amount table");
    // Rewound: from its first step again.
    let out = ok(&d.ctl(&["next", "rewind"]));
    assert_eq!(
        out,
        format!("script {p} rewound: 2 steps, starts at step 1\n")
    );
    assert!(ok(&d.ctl(&["status"])).contains("line 1 is next (abandon), 2 of 2 left"));
    assert_eq!(pay(&d), "06");
}

#[test]
fn next_rewind_without_a_script_is_refused() {
    let d = Daemon::start("control @DIR@/control.sock\n");
    let o = d.ctl(&["next", "rewind"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("no simulator-script to rewind"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn config_watch_sees_the_script_change_and_plays_it_from_the_start() {
    let (d, path) = scripted("refuse\napprove\n", "config-watch 100ms");
    assert_eq!(pay(&d), "04");
    std::fs::write(&path, "phone\n").unwrap();
    let p = path.display().to_string();
    d.wait_log(&format!("simulator-script {p}: changed on disk"));
    d.wait_log(&format!("script {p} reloaded: 1 step, starts at step 1"));
    assert_eq!(pay(&d), "02");
}

#[test]
fn a_plan_armed_is_logged_once_and_a_query_is_not_logged_as_armed() {
    let d = Daemon::start("control @DIR@/control.sock\n");
    ok(&d.ctl(&["next", "refuse", "crlf"]));
    assert_eq!(ok(&d.ctl(&["next"])), "armed: refuse crlf\n");
    ok(&d.ctl(&["next", "clear"]));
    // The last command's line is there: so are those before it.
    d.wait_log("control: next clear: disarmed: refuse crlf");
    let log = d.log_text();
    let info = |pat: &str| {
        log.lines()
            .filter(|l| l.contains(" INFO ") && l.contains(pat))
            .count()
    };
    assert_eq!(info(" armed: refuse crlf"), 1, "{log}");
    assert_eq!(info("control: next: "), 0, "{log}");
    assert_eq!(info("disarmed: refuse crlf"), 1, "{log}");
}
