//! Command lines of both binaries, and configuration checking.

use crate::util::*;

#[test]
fn check_prints_the_effective_configuration() {
    let dir = temp_dir();
    let conf = dir.join("c.conf");
    std::fs::write(
        &conf,
        "listen 127.0.0.1:9999\ncurrency EUR XPF\nrequest-gap 250ms\n",
    )
    .unwrap();
    let o = run(CONCERTD, &["-n", "-f", conf.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("listen 127.0.0.1:9999"), "{out}");
    assert!(out.contains("currency 978 953"), "{out}");
    assert!(out.contains("request-gap 250ms"), "{out}");
    assert!(out.contains("simulator-delay 2s"), "{out}");
    assert!(out.ends_with("configuration OK\n"), "{out}");
}

/// Every keyword, each away from its default, and what `-n` printed for
/// it before the keywords were one table: the output is pinned byte for
/// byte.
const FULL_CONF: &str = r#"# every keyword
listen 127.0.0.1:9999
listen [::1]:8888
allow 10.0.0.0/8 192.168.1.2
allow ::1
currency EUR XPF
terminal exec /bin/true --flag "two words"
simulator-delay 500ms
transaction-timeout 2m
request-gap 250ms
request-timeout 1.5s
max-connections 64
max-connections-per-peer 4
journal "/tmp/my journal"
journal-size 64K
journal-keep 2
retry-window 24h
terminal-profile nepting
answer-extensions payxpert
serial-number "TERM 42"
serial /dev/ttyUSB0
serial-speed 19200
serial-format 8n1
serial-flow rtscts
serial-protocol v3
serial-split yes
serial-retry 10s
serial-ack-timeout 500ms
serial-frame-timeout 1s
serial-eot-timeout 2s
serial-retry-pause 0
config-watch 0
user root
group root
pidfile /tmp/x/concertd.pid
log-file /tmp/x/concertd.log
syslog-socket /tmp/x/syslog
control /tmp/x/concertd.sock
"#;

const FULL_DESCRIBED: &str = r#"listen 127.0.0.1:9999
listen [::1]:8888
allow 10.0.0.0/8
allow 192.168.1.2/32
allow ::1/128
currency 978 953
terminal exec /bin/true --flag "two words"
simulator-delay 500ms
transaction-timeout 120s
request-gap 250ms
request-timeout 1500ms
max-connections 64
max-connections-per-peer 4
journal "/tmp/my journal"
journal-size 64K
journal-keep 2
retry-window 24h
terminal-profile nepting
answer-extensions payxpert
serial-number "TERM 42"
serial "/dev/ttyUSB0"
serial-speed 19200
serial-format 8N1
serial-flow rtscts
serial-protocol v3
serial-split yes
serial-retry 10s
serial-ack-timeout 500ms
serial-frame-timeout 1s
serial-eot-timeout 2s
serial-retry-pause 0s
config-watch 0s
user "root"
group "root"
pidfile "/tmp/x/concertd.pid"
log-file "/tmp/x/concertd.log"
syslog-socket "/tmp/x/syslog"
control "/tmp/x/concertd.sock"
configuration OK
"#;

#[test]
fn check_prints_a_full_file_exactly() {
    let dir = temp_dir();
    let conf = dir.join("full.conf");
    std::fs::write(&conf, FULL_CONF).unwrap();
    let o = run(CONCERTD, &["-n", "-f", conf.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), FULL_DESCRIBED);
}

#[test]
fn bad_configuration_names_file_and_line() {
    let dir = temp_dir();
    let conf = dir.join("bad.conf");
    std::fs::write(&conf, "# ok\nlisten 127.0.0.1:0\nrequest-gap soon\n").unwrap();
    let path = conf.to_str().unwrap();
    for flags in [&["-n", "-f", path][..], &["-d", "-f", path][..]] {
        let o = run(CONCERTD, flags);
        assert_eq!(o.status.code(), Some(1));
        assert!(
            stderr(&o).contains(&format!("{path}:3: ")),
            "{}",
            stderr(&o)
        );
    }
    let o = run(CONCERTD, &["-n", "-f", "/nonexistent/concertd.conf"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("/nonexistent/concertd.conf"));
}

#[test]
fn unknown_flag_prints_usage() {
    let o = run(CONCERTD, &["-x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("usage: concertd"), "{}", stderr(&o));
}

#[test]
fn port_in_use_is_a_startup_error() {
    let d = Daemon::start("");
    let dir = temp_dir();
    let conf = dir.join("c.conf");
    // A journal of its own: the default one is this machine's.
    std::fs::write(
        &conf,
        format!(
            "listen {}\njournal {}\n",
            d.addr,
            dir.join("journal").display()
        ),
    )
    .unwrap();
    let o = run(CONCERTD, &["-d", "-f", conf.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!("cannot listen on {}", d.addr)),
        "{}",
        stderr(&o)
    );
}

#[test]
fn client_tour() {
    let d = Daemon::start("");
    let o = d.concert(&["pay", "12.34"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("approved: debit 12.34 EUR, register 01\n"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("authorisation"));
    let o = d.concert(&["pay", "12.51"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("refused (AF 04)"), "{}", stdout(&o));
    let o = d.concert(&["-k", "100", "-r", "7", "-P", "order-42", "refund", "3"]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(
        out.contains("approved: credit 3.00 EUR, register 07"),
        "{out}"
    );
    assert!(out.contains("order-42"), "{out}");
    assert!(
        out.contains("| CREDIT") && out.contains("| MONTANT : 3,00 EUR"),
        "{out}"
    );
    let o = d.concert(&["--raw", "ping"]);
    assert_eq!(
        stdout(&o),
        "CZ0040320CJ012247300123456CA00201CD001IAE00210\n"
    );
    let o = d.concert(&["send", "CZ0040320CA00201CD001X"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("unknown operation (AF 12)"),
        "{}",
        stdout(&o)
    );
    let o = d.concert(&["-c", "XPF", "pay", "1.5"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn client_without_terminal_is_an_error() {
    let closed = ClosedPort::new();
    let o = run(CONCERT, &["-p", &closed.addr.port().to_string(), "ping"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("concert: 127.0.0.1:"), "{}", stderr(&o));
}

#[test]
fn client_refuses_values_it_cannot_send() {
    for args in [
        &["-k", "", "ping"][..],
        &["-k", "1000", "pay", "1"],
        &["-P", "", "pay", "1"],
        &["-P", "commande n°7", "pay", "1"],
        &["-z", "", "ping"],
        &["-t", "0", "ping"],
        &["print", ""],
    ] {
        let o = run(CONCERT, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("usage: concert"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    let long = "x".repeat(700);
    let o = run(CONCERT, &["print", &long]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(CONCERT, &["--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("usage: concert"));
}

#[test]
fn immediate_flag_only_polls_payments() {
    let d = Daemon::start("");
    assert_eq!(d.concert(&["pay", "3"]).status.code(), Some(0));
    let o = d.concert(&["-i", "ping"]);
    assert_eq!(stdout(&o), "approved: identification, register 01\n");
}

#[test]
fn concertd_help_lists_every_option_and_exits_0() {
    for flag in ["-h", "--help"] {
        let o = run(CONCERTD, &[flag]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let out = stdout(&o);
        assert!(out.starts_with("usage: concertd"), "{out}");
        for opt in ["-d", "-f FILE", "-h, --help", "-n", "-V, --version", "-v"] {
            assert!(
                out.lines().any(|l| l.trim_start().starts_with(opt)),
                "{opt} not on a line of its own: {out}"
            );
        }
        assert!(stderr(&o).is_empty(), "{}", stderr(&o));
    }
}

#[test]
fn concertd_version_prints_name_and_version() {
    for flag in ["-V", "--version"] {
        let o = run(CONCERTD, &[flag]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(
            stdout(&o),
            format!("concertd {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
}

/// `-n` on a file whose `rest` is wrong beyond its syntax: exit 1, the
/// errors on stderr, and no configuration on stdout.
fn check_fails(rest: &str) -> String {
    let dir = temp_dir();
    let conf = dir.join("c.conf");
    std::fs::write(&conf, format!("listen 127.0.0.1:9999\n{rest}")).unwrap();
    let o = run(CONCERTD, &["-n", "-f", conf.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert_eq!(
        stdout(&o),
        "",
        "-n printed the configuration of a wrong file"
    );
    stderr(&o)
}

#[test]
fn check_refuses_a_user_or_group_that_does_not_exist() {
    let err = check_fails("user concertd-no-such-user\n");
    assert!(
        err.contains("user \"concertd-no-such-user\" does not exist"),
        "{err}"
    );
    let err = check_fails("user root\ngroup concertd-no-such-group\n");
    assert!(
        err.contains("group \"concertd-no-such-group\" does not exist"),
        "{err}"
    );
}

#[test]
fn check_prints_every_error_and_only_them() {
    let dir = temp_dir();
    let err = check_fails(&format!(
        "terminal exec {}\nuser concertd-no-such-user\n",
        dir.join("no-such-program").display()
    ));
    assert!(err.contains("no-such-program"), "{err}");
    assert!(err.contains("does not exist"), "{err}");
    assert_eq!(err.lines().count(), 2, "{err}");
    assert!(err.lines().all(|l| l.starts_with("concertd: ")), "{err}");
    // A syntax error too prints nothing but itself.
    let err = check_fails("request-gap soon\n");
    assert!(err.contains(":2: \"soon\""), "{err}");
}

/// Every error of `concert` starts with its name and says what to do.
#[test]
fn client_errors_say_what_happened_and_what_to_do() {
    let not_allowed = Daemon::start("allow 127.0.0.2\n");
    let o = not_allowed.concert(&["ping"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(
            ": the terminal closed the connection without answering: is this address allowed \
             (`allow` in concertd.conf)?"
        ),
        "{}",
        stderr(&o)
    );
    let gate = Gate::new();
    let d = Daemon::start(&gate.terminal());
    let o = d.concert(&["-t", "1", "pay", "2"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains(
            "no answer in time; the request went out: the outcome is unknown (it may have been \
             approved); run `concert status` to fetch it before trying again"
        ),
        "{}",
        stderr(&o)
    );
    gate.release();
    d.wait_log("delivered");
    let o = d.concert(&["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("approved: debit 2.00 EUR"),
        "{}",
        stdout(&o)
    );
    let fresh = Daemon::start("");
    let o = fresh.concert(&["-r", "7", "duplicate"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stdout(&o),
        "declined: duplicata: no transaction known for register 07 (AF 00)\n"
    );
    for (args, says) in [
        (
            &["pay", "-5"][..],
            "concert: amount -5 is negative: amounts are positive; to give money back, use refund",
        ),
        (
            &["pay", "99999999999999"],
            "concert: amount 99999999999999 is too large: a Concert amount has 12 digits at most",
        ),
        (
            &["pay", "0.001"],
            "concert: amount 0.001 has 3 decimals, and EUR has 2",
        ),
        (
            &["-c", "XPF", "pay", "1.5"],
            "concert: amount 1.5 has decimals, and XPF has none",
        ),
        (&["pay", "ten"], "concert: amount \"ten\" is not a number"),
        (&["-x", "ping"], "concert: Unrecognized option: 'x'"),
        (&["frobnicate"], "concert: bad command \"frobnicate\""),
    ] {
        let o = run(CONCERT, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).starts_with(says), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn client_version_and_protocol_version_options() {
    for flag in ["-V", "--version"] {
        let o = run(CONCERT, &[flag]);
        assert_eq!(o.status.code(), Some(0));
        assert_eq!(
            stdout(&o),
            format!("concert {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
    let d = Daemon::start("");
    for args in [
        &["-z", "0321", "--raw", "ping"][..],
        &["--protocol-version", "0321", "--raw", "ping"],
    ] {
        let o = d.concert(args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(stdout(&o).starts_with("CZ0040321"), "{}", stdout(&o));
    }
}

/// `send` reaches an IPv6 terminal as every other command does.
#[test]
fn client_sends_a_raw_frame_to_an_ipv6_terminal() {
    let d = Daemon::start("listen [::1]:0\n");
    let line = d.wait_log("listening on [::1]:");
    let port = line.rsplit(':').next().unwrap().trim().to_string();
    let o = run(
        CONCERT,
        &[
            "-h",
            "::1",
            "-p",
            &port,
            "--raw",
            "send",
            "CZ0040320CA00201CD001I",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "CZ0040320CA00201CD001IAE00210\n");
}

#[test]
fn a_payment_cut_by_a_killed_terminal_is_unknown() {
    let gate = Gate::new();
    let mut d = Daemon::start(&gate.terminal());
    let port = d.port();
    let pay = std::thread::spawn(move || {
        std::process::Command::new(CONCERT)
            .args(["-p", &port, "pay", "6"])
            .output()
            .unwrap()
    });
    d.wait_log("held 600");
    d.kill9();
    let o = pay.join().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(
            "the request went out: the outcome is unknown (it may have been approved); run \
             `concert status` to fetch it before trying again"
        ),
        "{e}"
    );
    assert!(!e.contains("is this address allowed"), "{e}");
    drop(gate);
}

#[test]
fn a_refused_connection_says_so_for_a_payment_too() {
    // Nothing listens: nothing was sent, nothing can have been charged.
    let closed = ClosedPort::new();
    let port = closed.addr.port().to_string();
    for cmd in [&["pay", "6"][..], &["refund", "6"], &["ping"]] {
        let o = run(CONCERT, &[&["-p", &port][..], cmd].concat());
        assert_eq!(o.status.code(), Some(2), "{cmd:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(
                "Connection refused (os error 111): is concertd running, and listening on this \
                 address (`listen` in concertd.conf)?"
            ),
            "{cmd:?}: {}",
            stderr(&o)
        );
    }
}

/// `concertd -n` on a file with one line at fault (line 3): its stderr.
fn check_error(line: &str) -> String {
    let dir = temp_dir();
    let conf = dir.join("c.conf");
    let text = format!(
        "listen 127.0.0.1:0\njournal {}\n{line}\n",
        dir.join("j").display()
    );
    std::fs::write(&conf, text).unwrap();
    let o = run(CONCERTD, &["-n", "-f", conf.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{line}: {}", stdout(&o));
    let e = stderr(&o);
    let at = format!("concertd: {}:3: ", conf.display());
    assert!(e.starts_with(&at), "{line}: {e}");
    e[at.len()..].trim_end().to_string()
}

/// Every configuration error says its file and line and what would be
/// accepted (issue 24, item 12), also those found once the file is read.
#[test]
fn configuration_errors_say_file_line_and_what_would_do() {
    assert_eq!(
        check_error("user nosuchuser24"),
        "user \"nosuchuser24\" does not exist: create it (useradd --system nosuchuser24), \
         or name another user"
    );
    // `group` is looked up with `user`: root exists everywhere.
    let dir = temp_dir();
    let conf = dir.join("c.conf");
    std::fs::write(
        &conf,
        "listen 127.0.0.1:0\nuser root\ngroup nosuchgroup24\n",
    )
    .unwrap();
    let o = run(CONCERTD, &["-n", "-f", conf.to_str().unwrap()]);
    assert_eq!(
        stderr(&o).trim_end(),
        format!(
            "concertd: {}:3: group \"nosuchgroup24\" does not exist: create it \
             (groupadd --system nosuchgroup24), or name another group",
            conf.display()
        )
    );
    assert_eq!(
        check_error("simulator-script /nonexistent/scenario"),
        "simulator-script /nonexistent/scenario: No such file or directory (os error 2); \
         name a regular file of at most 64K that concertd may read, or remove the line"
    );
    assert_eq!(
        check_error("journal-size 8X"),
        "journal-size \"8X\" is not a size: bytes, or a number with K, M or G, from 4K to 1G"
    );
    assert_eq!(
        check_error("simulator-delay 2 s"),
        "simulator-delay takes one value, a duration written without a space: \"2s\""
    );
    assert_eq!(
        check_error("simulator-delay 1 2"),
        "simulator-delay takes one value, a duration such as 2s, 500ms or 1m"
    );
}
