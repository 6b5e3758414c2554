//! concert: play the cash register against a Concert terminal.

use concert::client::{self, NoAnswer, Options, Verdict};
use concert::logging::stdout;
use concert::wire::currency;
use concert::wire::pan;
use concert::wire::tlv::tags;
use concert::wire::tlv::Frame;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str =
    "usage: concert [-i] [-v] [--raw] [--partial] [-h host] [-p port] [-c currency]\n\
\x20              [-r register] [-k ck] [-m id] [-P private] [-t timeout] [-z version]\n\
\x20              [-s device [--speed baud] [--format 7E1] [--v2 | --v3]] command [argument]\n\
\x20      concert --help | -V\n\
commands: pay AMOUNT | defer AMOUNT | refund AMOUNT | cancel AMOUNT | duplicate\n\
\x20         ping | status | telecollect | print TEXT | send FRAME";

/// Said to whom took `-h` for help: here it names the host.
const HELP: &str = "for help, run concert --help";

/// What `concert status` is for, said whenever an outcome may have been
/// missed.
const STATUS_HINT: &str =
    "the answer may still come: run `concert status` to fetch the outcome of the last transaction";

/// A request that may move money went out and no answer was read: the
/// cashier must not be told it failed, and must not simply try again.
const UNKNOWN: &str = "the request went out: the outcome is unknown (it may have been approved); \
                       run `concert status` to fetch it before trying again";

/// The same, for Concert V2, which has no status request.
const UNKNOWN_V2: &str =
    "the request went out: the outcome is unknown (it may have been approved); \
                          check it on the terminal before trying again";

/// The exit status of an unknown outcome.
const EXIT_UNKNOWN: u8 = 3;

/// The exit status of an approval for less than asked (`--partial`): money
/// moved, but not all of it; the rest is still to be paid.
const EXIT_PARTIAL: u8 = 4;

/// Between two status requests of `--immediate`.
const POLL: Duration = Duration::from_millis(500);

/// A serial line to play the register on, instead of TCP.
struct SerialTarget {
    path: String,
    speed: u32,
    format: concert::config::Format,
}

struct Run {
    options: Options,
    serial: Option<SerialTarget>,
    /// The request is a Concert V2 (E+) payload (serial only).
    v2: bool,
    /// After an immediate acknowledgement, poll the status for the outcome.
    poll: bool,
    /// A missed answer may be fetched with `concert status`.
    hint: bool,
    /// The request may move money: an answer lost after it went out
    /// leaves the outcome unknown.
    money: bool,
    /// Says on standard error what of an answer was ignored.
    verbose: bool,
    addr: String,
    raw: bool,
    timeout: Duration,
    request: Vec<u8>,
}

fn usage(msg: impl std::fmt::Display) -> String {
    format!("concert: {msg}\n{USAGE}")
}

/// getopts reads `-5` as an option; a negative amount must reach the
/// amount check, which says what is wrong with it. Such words are marked
/// before getopts and unmarked after.
const MARK: char = '\u{1}';

fn shield(a: String) -> String {
    let negative = a.len() > 1 && a.starts_with('-') && a.as_bytes()[1].is_ascii_digit();
    if negative {
        format!("{MARK}{a}")
    } else {
        a
    }
}

fn unshield(a: String) -> String {
    match a.strip_prefix(MARK) {
        Some(v) => v.to_string(),
        None => a,
    }
}

/// A tag value from the command line: printable ASCII of a legal length.
fn value(opt: &str, v: &str, len: std::ops::RangeInclusive<usize>) -> Result<String, String> {
    if !len.contains(&v.len()) || !v.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        let (lo, hi) = (len.start(), len.end());
        let size = if lo == hi {
            format!("{lo}")
        } else {
            format!("{lo} to {hi}")
        };
        return Err(usage(format!(
            "{opt} takes {size} printable ASCII characters, not {v:?}"
        )));
    }
    Ok(v.to_string())
}

fn parse() -> Result<Run, String> {
    let mut o = getopts::Options::new();
    o.optopt("h", "host", "terminal host (default 127.0.0.1)", "HOST");
    o.optopt("p", "port", "terminal port (default 8888)", "PORT");
    o.optopt(
        "c",
        "currency",
        "currency, numeric or alphabetic (default EUR)",
        "CUR",
    );
    o.optopt("r", "register", "register number CA (default 01)", "N");
    o.optopt("k", "ticket", "ticket selection CK, e.g. 100", "CK");
    o.optopt("P", "private", "private data CF", "TEXT");
    o.optopt(
        "t",
        "timeout",
        "seconds to wait for the answer (default 180)",
        "SECS",
    );
    o.optopt(
        "z",
        "protocol-version",
        "protocol version CZ (default 0320)",
        "CZ",
    );
    o.optopt(
        "m",
        "refund-of",
        "with refund: the transaction id (ID) of the debit it refunds, sent as IM",
        "ID",
    );
    o.optflag("V", "version", "print the version and exit");
    o.optflag("i", "immediate", "ask for an immediate answer (BA=1)");
    o.optflag(
        "v",
        "verbose",
        "say what of an answer is ignored (bytes after its last element)",
    );
    o.optflag("", "raw", "print the answer frame as it came");
    o.optflag(
        "",
        "partial",
        "with pay or defer: accept an approval for less (BF=1)",
    );
    o.optopt(
        "s",
        "serial",
        "play the register on this serial device",
        "DEVICE",
    );
    o.optopt("", "speed", "serial speed (default 9600)", "BAUD");
    o.optopt("", "format", "serial character format (default 7E1)", "7E1");
    o.optflag("", "v2", "on serial: send Concert V2 (E+) instead of V3");
    o.optflag("", "v3", "on serial: send Concert V3 (the default)");
    o.optflag("", "help", "this help");
    let args: Vec<String> = std::env::args().skip(1).map(shield).collect();
    let m = o.parse(&args).map_err(|e| match e {
        getopts::Fail::ArgumentMissing(o) if o == "h" => {
            usage(format!("-h takes the terminal's host (-h HOST); {HELP}"))
        }
        e => usage(unshield(e.to_string())),
    })?;
    if m.opt_present("help") {
        stdout::print(&o.usage(USAGE));
        std::process::exit(0);
    }
    if m.opt_present("V") {
        stdout::line(&format!("concert {}", env!("CARGO_PKG_VERSION")));
        std::process::exit(0);
    }
    let opt = |name: &str| m.opt_str(name).map(unshield);
    let free: Vec<String> = m.free.iter().cloned().map(unshield).collect();
    let host = opt("h").unwrap_or_else(|| "127.0.0.1".into());
    // A command word, which no terminal is called, in the host's place.
    let command_word = |w: &str| {
        [None, Some("1")]
            .iter()
            .any(|&a| client::Command::parse(w, a, 978).is_ok())
    };
    if command_word(&host) {
        return Err(usage(format!(
            "-h takes the terminal's host, not the command {host:?}; {HELP}"
        )));
    }
    let port: u16 = match opt("p") {
        Some(p) => p.parse().map_err(|_| usage(format!("bad port {p:?}")))?,
        None => 8888,
    };
    let mut opts = Options::default();
    if let Some(c) = opt("c") {
        opts.currency =
            currency::parse(&c).ok_or_else(|| usage(format!("unknown currency {c:?}")))?;
    }
    if let Some(r) = opt("r") {
        if r.is_empty() || r.len() > 2 || !r.bytes().all(|b| b.is_ascii_digit()) {
            return Err(usage(format!("register must be 1 or 2 digits, not {r:?}")));
        }
        opts.register = format!("{:02}", r.parse::<u8>().unwrap_or(0));
    }
    opts.ticket = opt("k").map(|v| value("-k", &v, 3..=3)).transpose()?;
    opts.private = m
        .opt_str("P")
        .map(|v| value("-P", &v, 1..=999))
        .transpose()?;
    opts.immediate = m.opt_present("i");
    opts.partial = m.opt_present("partial");
    if let Some(z) = opt("z") {
        opts.version = value("-z", &z, 4..=4)?;
    }
    let timeout = match opt("t") {
        Some(t) => match t.parse::<u64>() {
            Ok(n) if n > 0 => Duration::from_secs(n),
            _ => {
                return Err(usage(format!(
                    "bad timeout {t:?}: whole seconds, at least 1"
                )))
            }
        },
        None => Duration::from_secs(180),
    };
    let serial = match opt("s") {
        None => None,
        Some(path) => Some(SerialTarget {
            path,
            speed: match opt("speed") {
                Some(v) => match v.parse::<u32>() {
                    Ok(n) if concert::config::SPEEDS.contains(&n) => n,
                    _ => return Err(usage(format!("bad speed {v:?}"))),
                },
                None => 9600,
            },
            format: match opt("format") {
                Some(f) => concert::config::Format::parse(&f).map_err(usage)?,
                None => concert::config::Format::parse("7E1").map_err(usage)?,
            },
        }),
    };
    let v2 = m.opt_present("v2");
    if v2 && m.opt_present("v3") {
        return Err(usage("--v2 and --v3 exclude each other"));
    }
    if v2 && serial.is_none() {
        return Err(usage("--v2 needs -s DEVICE"));
    }
    let (cmd, arg) = match free.as_slice() {
        [c] => (c.as_str(), None),
        [c, a] => (c.as_str(), Some(a.as_str())),
        [] => return Err(usage("no command")),
        _ => return Err(usage("too many arguments")),
    };
    let command = client::Command::parse(cmd, arg, opts.currency).map_err(usage)?;
    if let Some(im) = opt("m") {
        if !matches!(command, client::Command::Refund(_)) {
            return Err(usage("-m/--refund-of goes with refund only"));
        }
        if v2 {
            return Err(usage("Concert V2 has no IM: -m/--refund-of needs V3"));
        }
        opts.refund_of = Some(value("-m", &im, 1..=999)?);
    }
    if opts.partial {
        if !matches!(command, client::Command::Pay(_) | client::Command::Defer(_)) {
            return Err(usage("--partial goes with pay and defer only"));
        }
        if v2 {
            return Err(usage("Concert V2 has no BF: --partial needs V3"));
        }
    }
    let hint = !matches!(command, client::Command::Status | client::Command::Ping);
    let money = command.moves_money();
    let verbose = m.opt_present("v");
    if v2 {
        let request = command.v2(&opts).map_err(usage)?;
        return Ok(Run {
            options: opts.clone(),
            serial,
            v2: true,
            poll: false,
            hint: false,
            money,
            verbose,
            addr: String::new(),
            raw: m.opt_present("raw"),
            timeout,
            request,
        });
    }
    let addr = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Ok(Run {
        serial,
        v2: false,
        poll: opts.immediate && command.is_payment(),
        hint,
        money,
        verbose,
        request: command.v3(&opts),
        options: opts,
        addr,
        raw: m.opt_present("raw"),
        timeout,
    })
}

/// One exchange, the answer decoded; errors already printed.
fn target(run: &Run) -> &str {
    match &run.serial {
        Some(s) => &s.path,
        None => &run.addr,
    }
}

/// One request and its answer over the chosen transport. `money`: the
/// exchange decides a payment's outcome (the payment itself, or a status
/// request polling for it).
fn exchange(run: &Run, request: &[u8], money: bool) -> Result<Vec<u8>, ExitCode> {
    let answer = match &run.serial {
        None => client::exchange_tcp(&run.addr, request, run.timeout),
        Some(s) => client::serial_link::Line::open(&s.path, s.speed, s.format)
            .map_err(NoAnswer::Unsent)
            .and_then(|mut l| {
                l.send(request)?;
                match l.receive_answer(run.timeout) {
                    Ok(a) if a.is_empty() => Err(NoAnswer::Unanswered(std::io::Error::other(
                        "the terminal closed the session without answering",
                    ))),
                    Ok(a) => Ok(a),
                    Err(e) => Err(NoAnswer::Unanswered(e)),
                }
            }),
    };
    let e = match answer {
        Ok(a) => return Ok(a),
        Err(e) => e,
    };
    if money && e.sent() {
        return unknown(run, &e.to_string());
    }
    use std::io::ErrorKind as K;
    let e = e.into_error();
    let why = match e.kind() {
        K::ConnectionReset | K::NotConnected | K::BrokenPipe | K::UnexpectedEof
            if run.serial.is_none() =>
        {
            closed(run)
        }
        K::ConnectionRefused => format!(
            "{e}: is concertd running, and listening on this address (`listen` in \
             concertd.conf)?"
        ),
        K::TimedOut if run.hint => format!("{e}; {STATUS_HINT}"),
        _ => e.to_string(),
    };
    fail(run, &why)
}

fn fail<T>(run: &Run, why: &str) -> Result<T, ExitCode> {
    eprintln!("concert: {}: {why}", target(run));
    Err(ExitCode::from(2))
}

/// A payment's request went out, and no answer that says its outcome
/// came back.
fn unknown<T>(run: &Run, why: &str) -> Result<T, ExitCode> {
    let what = if run.v2 { UNKNOWN_V2 } else { UNKNOWN };
    eprintln!("concert: {}: {why}; {what}", target(run));
    Err(ExitCode::from(EXIT_UNKNOWN))
}

/// Before the request was written, a terminal that closes has most often
/// refused the register's address; concertd says so only in its own log.
fn closed(run: &Run) -> String {
    match run.serial {
        Some(_) => "the terminal closed the session without answering".into(),
        None => "the terminal closed the connection without answering: is this address \
                 allowed (`allow` in concertd.conf)?"
            .into(),
    }
}

/// The V2 flow: one request, one fixed-position reply.
fn run_v2(run: &Run) -> ExitCode {
    let answer = match exchange(run, &run.request, true) {
        Ok(a) => a,
        Err(code) => return code,
    };
    if run.raw {
        stdout::line(&String::from_utf8_lossy(&answer));
    }
    let r = match concert::wire::v2::parse_reply(&answer) {
        Ok(r) => r,
        Err(e) => {
            let why = format!("bad V2 reply ({e}): {}", pan::scrub(&answer));
            return unknown::<()>(run, &why).unwrap_err();
        }
    };
    let cur: u16 = std::str::from_utf8(&r.currency)
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(978);
    let amount = format!(
        "{} {}",
        currency::format_amount(r.amount, cur, false),
        currency::label(cur)
    );
    let reg = String::from_utf8_lossy(&r.pos);
    if !run.raw {
        let verdict = match r.stat {
            b'0' => "approved",
            b'9' => "accepted, outcome not reported (immediate answer)",
            _ => "declined",
        };
        stdout::line(&format!(
            "{verdict}: {amount}, register {reg} (V2 result {})",
            r.stat as char
        ));
        if let Some(rep) = &r.rep {
            stdout::line(&format!("  card           {rep}"));
        }
        let private = String::from_utf8_lossy(&r.private);
        if !private.trim().is_empty() {
            stdout::line(&format!("  private data   {}", private.trim_end()));
        }
    }
    match r.stat {
        b'0' | b'9' => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}

/// One V3 exchange, its answer read as registers should read one. For a
/// payment (`money`), an answer that does not say approved or declined
/// leaves the outcome unknown.
fn ask(run: &Run, request: &[u8], money: bool) -> Result<(Vec<u8>, Frame), ExitCode> {
    let answer = exchange(run, request, money)?;
    match client::read_answer(&answer) {
        Ok(a) => {
            if run.verbose && !a.ignored.is_empty() {
                eprintln!(
                    "concert: ignored {} bytes after the answer's last element: {}",
                    a.ignored.len(),
                    pan::scrub(&a.ignored)
                );
            }
            Ok((answer, a.frame))
        }
        Err(e) => {
            let why = format!("bad answer ({e}): {}", pan::scrub(&answer));
            if money {
                return unknown(run, &why);
            }
            eprintln!("concert: {why}");
            Err(ExitCode::from(2))
        }
    }
}

/// After an immediate acknowledgement, asks for the transaction status
/// until the outcome is final (a status answer that no longer echoes
/// `CD=T`).
fn poll_outcome(run: &Run) -> Result<(Vec<u8>, Frame), ExitCode> {
    let deadline = Instant::now() + run.timeout;
    let status = client::simple(b'T', &run.options).encode();
    loop {
        std::thread::sleep(POLL);
        let (raw, f) = ask(run, &status, true)?;
        if f.get(tags::CD) != Some(b"T") {
            return Ok((raw, f));
        }
        if Instant::now() >= deadline {
            return unknown(run, "no final outcome within the timeout");
        }
    }
}

fn main() -> ExitCode {
    let run = match parse() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if run.v2 {
        return run_v2(&run);
    }
    let (mut answer, mut frame) = match ask(&run, &run.request, run.money) {
        Ok(a) => a,
        Err(code) => return code,
    };
    if run.poll && client::verdict(&frame) == Verdict::Approved {
        if !run.raw {
            stdout::line("accepted, waiting for the outcome");
        }
        (answer, frame) = match poll_outcome(&run) {
            Ok(a) => a,
            Err(code) => return code,
        };
    }
    // What was asked, to tell an approval for less (`send` of a frame
    // that cannot be read asks nothing known).
    let asked = client::read_answer(&run.request).ok().map(|a| a.frame);
    if run.raw {
        stdout::line(&String::from_utf8_lossy(&answer));
    } else {
        stdout::print(&client::describe(&frame, asked.as_ref()));
    }
    // Neither approved nor declined: a payment's fate is not said.
    if run.money && !matches!(frame.get(tags::AE), Some(b"10" | b"01")) {
        let ae = frame.text(tags::AE).unwrap_or("none");
        return unknown::<()>(&run, &format!("answer status AE={ae}")).unwrap_err();
    }
    match client::verdict(&frame) {
        Verdict::Approved if asked.is_some_and(|a| client::partial(&a, &frame).is_some()) => {
            ExitCode::from(EXIT_PARTIAL)
        }
        Verdict::Approved => ExitCode::SUCCESS,
        // The terminal itself says it does not know (AF 07): for a payment
        // that is the unknown outcome, whose status is its own.
        Verdict::Unknown if run.money => {
            unknown::<()>(&run, "the terminal answered AF 07").unwrap_err()
        }
        Verdict::Unknown | Verdict::Declined => ExitCode::from(1),
    }
}
