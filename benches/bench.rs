//! `make bench`: figures for concertd, each printed as a table row and as
//! a `name=value` line. The ping figures are set against a limit server run
//! by this program in the same run, the same as the independent load
//! client's (`../shared/tools/loadgen serve`: accept, read once, write a
//! fixed answer, close), and measured the way that client measures (an
//! answer is in once whole TLV elements holding AE have come), so the
//! ratio says how close concertd is to what this machine can do at all.
//! The debit rate is set against the disk's limit for two syncs per
//! transaction, measured in the same run.

use serialport::{SerialPort, TTYPort};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../tests/util.rs"]
#[allow(dead_code)]
mod util;

use util::{pty_pair, temp_dir, Daemon, Spec, CONCERTD};

const PING: &[u8] = b"CZ0040320CJ012247300123456CA00201CD001I";
const PING_ANSWER: &[u8] = b"CZ0040320CJ012247300123456CA00201CD001IAE00210";

/// A daemon as the figures need it: not verbose (a log line per request
/// would be part of what is measured), the log echoed with BENCH_LOG.
fn daemon(extra: &str) -> Daemon {
    let mut spec = Spec::new(&format!(
        // One address plays every client: the per-peer cap is raised to
        // the global one.
        "config-watch 0\nmax-connections-per-peer 1024\n{extra}"
    ))
    .flags(&[]);
    spec.echo_log = std::env::var_os("BENCH_LOG").is_some();
    // The log is only read for `ready` and the address.
    spec.keep_lines = Some(100);
    Daemon::launch(spec)
}

fn rss_kib(d: &Daemon) -> u64 {
    d.rss_kb().unwrap_or(0)
}

/// One request on a fresh connection, answer read until the server closes.
fn exchange(addr: SocketAddr, req: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(req)?;
    let mut a = Vec::new();
    s.read_to_end(&mut a)?;
    Ok(a)
}

struct Stats {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn stats(mut v: Vec<Duration>, total: Duration) -> Stats {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q) as usize];
    Stats {
        per_sec: v.len() as f64 / total.as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
        max: *v.last().unwrap(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The limit server, as loadgen's `serve`: accept, read once, write a
/// fixed answer, close. Runs until the program ends.
fn limit_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(PING_ANSWER);
        }
    });
    addr
}

/// Whole TLV elements, one of them AE: the answer is in (loadgen's rule).
fn complete(buf: &[u8]) -> bool {
    let mut i = 0;
    let mut ae = false;
    while i + 5 <= buf.len() {
        let Some(len) = std::str::from_utf8(&buf[i + 2..i + 5])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        else {
            return false;
        };
        ae |= &buf[i..i + 2] == b"AE";
        i += 5 + len;
    }
    i == buf.len() && ae
}

/// One request as loadgen sends it: connect, write, read until the answer
/// is whole, close.
fn one(addr: SocketAddr, req: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_nodelay(true)?;
    s.write_all(req)?;
    let mut buf = Vec::with_capacity(512);
    let mut tmp = [0u8; 4096];
    loop {
        match s.read(&mut tmp)? {
            0 => break,
            n => {
                buf.extend_from_slice(&tmp[..n]);
                if complete(&buf) {
                    break;
                }
            }
        }
    }
    let _ = s.shutdown(Shutdown::Both);
    Ok(buf)
}

/// `n` requests from `clients` threads, each waiting for its answer before
/// the next.
fn load(addr: SocketAddr, n: usize, clients: usize, req: &'static [u8]) -> (Stats, usize) {
    let next = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let next = Arc::clone(&next);
            std::thread::spawn(move || {
                let (mut lat, mut errors) = (Vec::new(), 0usize);
                while next.fetch_add(1, Ordering::Relaxed) < n as u64 {
                    let t = Instant::now();
                    match one(addr, req) {
                        Ok(a) if a.windows(7).any(|w| w == b"AE00210") => lat.push(t.elapsed()),
                        _ => errors += 1,
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let (mut lat, mut errors) = (Vec::new(), 0);
    for t in threads {
        let (l, e) = t.join().expect("client thread");
        lat.extend(l);
        errors += e;
    }
    (stats(lat, t0.elapsed()), errors)
}

fn row(name: &str, value: String) {
    println!("  {name:<34}{value}");
}

fn line(name: &str, value: impl std::fmt::Display) {
    println!("{name}={value}");
}

fn ping() {
    const N: usize = 20_000;
    let d = daemon("");
    let limit = limit_server();
    // Warm both up.
    load(d.addr, 500, 1, PING);
    load(limit, 500, 1, PING);
    println!("ping: {N} identification requests, one connection each, as loadgen sends them");
    for clients in [1usize, 8] {
        let (c, ce) = load(d.addr, N, clients, PING);
        let (l, _) = load(limit, N, clients, PING);
        let ratio = c.per_sec / l.per_sec;
        row(
            &format!("concertd, {clients} client(s)"),
            format!(
                "{:.0} req/s, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms, {ce} errors",
                c.per_sec,
                ms(c.p50),
                ms(c.p99),
                ms(c.max)
            ),
        );
        row(
            &format!("limit server, {clients} client(s)"),
            format!(
                "{:.0} req/s, p50 {:.3} ms, p99 {:.3} ms",
                l.per_sec,
                ms(l.p50),
                ms(l.p99)
            ),
        );
        row(
            &format!("ratio, {clients} client(s)"),
            format!("{ratio:.2}"),
        );
        let k = format!("ping.c{clients}");
        line(&format!("{k}.req_per_s"), format!("{:.0}", c.per_sec));
        line(&format!("{k}.p50_ms"), format!("{:.3}", ms(c.p50)));
        line(&format!("{k}.p99_ms"), format!("{:.3}", ms(c.p99)));
        line(&format!("{k}.limit_req_per_s"), format!("{:.0}", l.per_sec));
        line(&format!("{k}.limit_p99_ms"), format!("{:.3}", ms(l.p99)));
        line(&format!("{k}.ratio"), format!("{ratio:.2}"));
        line(&format!("{k}.errors"), ce);
    }
}

fn busy_storm() {
    let d = daemon("simulator-delay 600s\ntransaction-timeout 600s");
    let addr = d.addr;
    std::thread::spawn(move || exchange(addr, b"CZ0040320CA00201CB0041000CD0010CE003978"));
    // The running debit must be running before the storm: its status says so.
    let status = b"CZ0040320CA00201CD001T";
    while !exchange(addr, status)
        .unwrap_or_default()
        .ends_with(b"AE00201AF00207")
    {
        std::thread::yield_now();
    }
    println!("busy storm: a debit running, clients sending debits for 5 s");
    for clients in [64usize, 256, 512] {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let threads: Vec<_> = (0..clients)
            .map(|i| {
                let (stop, ok, bad) = (stop.clone(), ok.clone(), bad.clone());
                let req = format!("CZ0040320CA002{:02}CB0041000CD0010CE003978", 2 + i % 90);
                std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            match exchange(addr, req.as_bytes()) {
                                Ok(a) if a == [req.as_bytes(), b"AE00201"].concat() => {
                                    ok.fetch_add(1, Ordering::Relaxed)
                                }
                                _ => bad.fetch_add(1, Ordering::Relaxed),
                            };
                        }
                    })
                    .unwrap()
            })
            .collect();
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(5));
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            let _ = t.join();
        }
        let secs = t0.elapsed().as_secs_f64();
        let (ok, bad) = (ok.load(Ordering::Relaxed), bad.load(Ordering::Relaxed));
        row(
            &format!("{clients} clients"),
            format!("{:.0} busy answers/s, {bad} errors", ok as f64 / secs),
        );
        line(
            &format!("busy.c{clients}.answers_per_s"),
            format!("{:.0}", ok as f64 / secs),
        );
        line(&format!("busy.c{clients}.errors"), bad);
    }
}

/// The mean time of an fdatasync after appending a 150-byte line (a
/// journal record's size) to a file in `dir`.
fn sync_time(dir: &std::path::Path) -> Duration {
    use std::os::unix::fs::OpenOptionsExt;
    const N: u32 = 500;
    let p = dir.join("sync-probe");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&p)
        .unwrap();
    let line = [b'x'; 149];
    let t0 = Instant::now();
    for _ in 0..N {
        f.write_all(&line).unwrap();
        f.write_all(b"\n").unwrap();
        f.sync_data().unwrap();
    }
    let t = t0.elapsed() / N;
    let _ = std::fs::remove_file(p);
    t
}

fn transactions() {
    const N: usize = 2_000;
    let d = daemon("");
    let mut lat = Vec::with_capacity(N);
    let mut errors = 0;
    let t0 = Instant::now();
    for i in 0..N {
        let req = format!("CZ0040320CA00201CB004{:04}CD0010CE003978", 1000 + i % 40);
        let t = Instant::now();
        match one(d.addr, req.as_bytes()) {
            Ok(a) if a.windows(7).any(|w| w == b"AE00210") => {}
            _ => errors += 1,
        }
        lat.push(t.elapsed());
    }
    let s = stats(lat, t0.elapsed());
    // The disk's limit for two syncs a transaction, in the same run and
    // the same directory as the journal.
    let sync = sync_time(&d.dir);
    let limit = 1.0 / (2.0 * sync.as_secs_f64());
    let ratio = s.per_sec / limit;
    println!("transactions: {N} sequential debits, simulator-delay 0, journal on (fdatasync)");
    row(
        "debits",
        format!(
            "{:.0} tx/s, p50 {:.3} ms, p99 {:.3} ms, {errors} errors",
            s.per_sec,
            ms(s.p50),
            ms(s.p99)
        ),
    );
    row(
        "two-sync limit",
        format!(
            "{limit:.0} tx/s (fdatasync of a 150-byte append: {:.3} ms)",
            ms(sync)
        ),
    );
    row("ratio", format!("{ratio:.2}"));
    line("debit.rps", format!("{:.0}", s.per_sec));
    line("debit.p50_ms", format!("{:.3}", ms(s.p50)));
    line("debit.p99_ms", format!("{:.3}", ms(s.p99)));
    line("debit.sync_ms", format!("{:.3}", ms(sync)));
    line("debit.sync_limit_rps", format!("{limit:.0}"));
    line("debit.sync_limit_ratio", format!("{ratio:.2}"));
    line("debit.errors", errors);
}

/// Every thread's context switches: each time one wakes up and sleeps
/// again counts.
fn wakeups(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .map(|t| {
            std::fs::read_to_string(t.path().join("status"))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// Wakeups of the whole idle process over `secs` seconds: with
/// `config-watch` on (its default), without and with a serial line.
fn idle() {
    let secs = std::env::var("BENCH_IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30u64);
    let measure = |d: &Daemon| {
        // Settled after start.
        std::thread::sleep(Duration::from_secs(3));
        let w0 = wakeups(d.pid());
        std::thread::sleep(Duration::from_secs(secs));
        wakeups(d.pid()) - w0
    };
    let d = daemon("config-watch 2s");
    let plain = measure(&d);
    drop(d);
    let dir = temp_dir();
    let link = dir.join("tty");
    let (master, slave) = pty_pair(&link);
    let d = daemon(&format!("config-watch 2s\nserial {}", link.display()));
    let serial = measure(&d);
    drop(d);
    drop((master, slave));
    let _ = std::fs::remove_dir_all(&dir);
    println!("idle: wakeups of every thread in {secs} s, config-watch 2s");
    row("no serial line", format!("{plain}"));
    row("a serial line", format!("{serial}"));
    line(&format!("idle.wakeups_{secs}s"), plain);
    line(&format!("idle.serial_wakeups_{secs}s"), serial);
}

fn memory() {
    let d = daemon("request-timeout 120s\nrequest-gap 60s");
    // Let it settle after start.
    exchange(d.addr, PING).unwrap();
    let idle = rss_kib(&d);
    let held: Vec<TcpStream> = (0..500)
        .map(|_| TcpStream::connect(d.addr).unwrap())
        .collect();
    // Every connection has its thread once a ping behind them is answered
    // (accepts are served in order).
    exchange(d.addr, PING).unwrap();
    let busy = rss_kib(&d);
    drop(held);
    let size = std::fs::metadata(CONCERTD).map(|m| m.len()).unwrap_or(0);
    println!("memory");
    row("RSS idle", format!("{idle} KiB"));
    row("RSS with 500 idle connections", format!("{busy} KiB"));
    row("binary size (stripped)", format!("{} KiB", size / 1024));
    line("mem.rss_idle_kib", idle);
    line("mem.rss_500_conn_kib", busy);
    line("mem.binary_kib", size / 1024);
}

fn serial() {
    const ROUNDS: usize = 300;
    let dir = temp_dir();
    let link = dir.join("tty");
    let (mut master, _slave) = pty_pair(&link);
    let d = daemon(&format!("serial {}\nserial-format 8N1", link.display()));
    master.set_timeout(Duration::from_secs(5)).unwrap();
    let byte = |m: &mut TTYPort| {
        let mut b = [0u8; 1];
        m.read_exact(&mut b).map(|_| b[0])
    };
    // The serial thread opens the device shortly after "ready": wait for
    // the first ACK.
    loop {
        master.write_all(&[0x05]).unwrap();
        let mut b = [0u8; 1];
        master.set_timeout(Duration::from_millis(100)).unwrap();
        if master.read_exact(&mut b).is_ok() && b[0] == 0x06 {
            master.write_all(&[0x04]).unwrap();
            break;
        }
    }
    // ENQs sent before the device was open are all answered: drop the
    // extra ACKs before measuring.
    master.set_timeout(Duration::from_millis(200)).unwrap();
    let mut sink = [0u8; 64];
    while matches!(master.read(&mut sink), Ok(n) if n > 0) {}
    master.set_timeout(Duration::from_secs(5)).unwrap();
    let mut frame = vec![0x02];
    frame.extend_from_slice(PING);
    frame.push(0x03);
    let lrc = frame[1..].iter().fold(0, |a, b| a ^ b);
    frame.push(lrc);
    let (mut after_enq, mut after_lrc) = (Vec::new(), Vec::new());
    let mut errors = 0;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        master.write_all(&[0x05]).unwrap();
        let ack = byte(&mut master);
        after_enq.push(t.elapsed());
        let t = Instant::now();
        master.write_all(&frame).unwrap();
        let ack2 = byte(&mut master);
        after_lrc.push(t.elapsed());
        if ack.as_ref().ok() != Some(&0x06) || ack2.as_ref().ok() != Some(&0x06) {
            if errors < 3 {
                eprintln!("serial: ACKs {ack:?} {ack2:?}");
            }
            errors += 1;
            continue;
        }
        master.write_all(&[0x04]).unwrap();
        // The answer session: ENQ, our ACK, the frame, our ACK, EOT.
        let ok = (|| -> std::io::Result<bool> {
            if byte(&mut master)? != 0x05 {
                return Ok(false);
            }
            master.write_all(&[0x06])?;
            while byte(&mut master)? != 0x03 {}
            byte(&mut master)?;
            master.write_all(&[0x06])?;
            Ok(byte(&mut master)? == 0x04)
        })();
        if !matches!(ok, Ok(true)) {
            if errors < 3 {
                eprintln!("serial: answer session {ok:?}");
            }
            errors += 1;
        }
    }
    let total = Duration::from_secs(1);
    let (e, l) = (stats(after_enq, total), stats(after_lrc, total));
    println!("serial: {ROUNDS} identification sessions on a pty pair");
    row(
        "ACK after ENQ",
        format!("p50 {:.3} ms, p99 {:.3} ms", ms(e.p50), ms(e.p99)),
    );
    row(
        "ACK after LRC",
        format!(
            "p50 {:.3} ms, p99 {:.3} ms (target p99 < 5 ms)",
            ms(l.p50),
            ms(l.p99)
        ),
    );
    line("serial.ack_enq_p50_ms", format!("{:.3}", ms(e.p50)));
    line("serial.ack_enq_p99_ms", format!("{:.3}", ms(e.p99)));
    line("serial.ack_lrc_p50_ms", format!("{:.3}", ms(l.p50)));
    line("serial.ack_lrc_p99_ms", format!("{:.3}", ms(l.p99)));
    line("serial.errors", errors);
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

fn start() {
    let mut v: Vec<Duration> = (0..9).map(|_| daemon("").started).collect();
    v.sort();
    println!("start: exec to accepting connections (\"ready\" logged), median of 9");
    row("start", format!("{:.1} ms", ms(v[4])));
    line("start.ms", format!("{:.1}", ms(v[4])));
}

/// A journal time stamp of Unix milliseconds.
fn stamp_of(ms_since_epoch: i64) -> String {
    let c = concert::wire::clock::utc(
        ms_since_epoch.div_euclid(1000),
        ms_since_epoch.rem_euclid(1000) as u32,
    );
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second, c.millis
    )
}

/// Writes `n` debits spread over the `days` days before now into the
/// journal at `path`, through the journal's own writer (its lines, its
/// rotations at `size`, keeping `keep` generations), carrying over at each
/// rotation what the worker carries with a retry window of 0: each
/// register's last payment and the newest approved debits the refunds
/// index holds, within half of `size`. Not synced line by line: a
/// generator, not a terminal. The local day of the last debit.
fn generate(path: &std::path::Path, size: u64, keep: u32, n: u64, days: i64) -> String {
    use concert::terminal::journal::{Carry, Event, Journal, Record, Verdict};
    use std::collections::{BTreeMap, VecDeque};
    let (mut j, _) = Journal::open(path, size, keep).expect("journal");
    let now_ms = concert::wire::clock::unix_now().0 * 1000;
    let span = days * 86_400_000;
    let first = now_ms - span;
    let step = span / n as i64;
    let at = Arc::new(std::sync::atomic::AtomicI64::new(first));
    let clock = Arc::clone(&at);
    j.set_clock(move || stamp_of(clock.load(Ordering::Relaxed)));
    let base_id = (first / 1000) as u64 * 1000;
    let mut lasts: BTreeMap<u8, Record> = BTreeMap::new();
    let mut debits: VecDeque<Record> = VecDeque::new();
    for i in 0..n {
        let t = first + i as i64 * step;
        at.store(t, Ordering::Relaxed);
        let id = base_id + i + 1;
        let register = (i % 20) as u8 + 1;
        let amount = 100 + (i * 37) % 99_900;
        let el = |tag: &str, v: &str| format!("{tag}{:03}{v}", v.len());
        let request = format!(
            "CZ0040320{}{}CD0010CE003978{}",
            el("CA", &format!("{register:02}")),
            el("CB", &amount.to_string()),
            el("CF", &format!("sale{i:08}"))
        );
        let approved = i % 10 != 0;
        // A ticket as a payment program gives one: about 600 bytes a
        // transaction in all, as the journals of a busy shop.
        let ticket = el(
            "ZT",
            &format!(
                "MERCHANT DEMO SHOP / 12 RUE DE LA PAIX / 75001 PARIS / \
                 CARTE BANCAIRE SANS CONTACT / A0000000421010 / ######0674 / \
                 TRANSACTION {i:08} / DEBIT {amount:>9} EUR / TICKET CLIENT / \
                 A CONSERVER / MERCI DE VOTRE VISITE / A BIENTOT"
            ),
        );
        let answer = if approved {
            format!(
                "{request}AE00210AA016497010######0674AB0042812{}AI014A0000000421010CC0010CI0012{ticket}",
                el("AC", &format!("{:06}", i % 1_000_000))
            )
        } else {
            format!("{request}AE00201AF00204AA016497010######0674CI0012")
        };
        let begun = Event::Begun {
            channel: "tcp".into(),
            peer: format!("192.168.1.{register}:{}", 40_000 + i % 20_000),
            register,
            key: None,
            request: request.clone().into_bytes(),
        };
        j.note(id, &begun).expect("begun");
        let verdict = if approved {
            Verdict::Approved
        } else {
            Verdict::Declined
        };
        let ended = Event::Ended {
            verdict,
            answer: answer.clone().into_bytes(),
        };
        j.note(id, &ended).expect("ended");
        j.note(id, &Event::Delivered).expect("delivered");
        let stamp = stamp_of(t);
        let r = Record {
            id,
            begun_at: stamp.clone(),
            channel: "tcp".into(),
            peer: format!("192.168.1.{register}:{}", 40_000 + i % 20_000),
            register,
            request: request.into_bytes(),
            ended_at: Some(stamp),
            verdict: Some(verdict),
            answer: Some(answer.into_bytes()),
            delivered: Some(true),
            ..Record::default()
        };
        if approved {
            debits.push_back(r.clone());
            if debits.len() > concert::terminal::refunds::MAX_DEBITS {
                debits.pop_front();
            }
        }
        lasts.insert(register, r);
        if j.needs_rotation() {
            let mut carry = Carry::default();
            for r in lasts.values() {
                carry.take(r);
            }
            let mut all = true;
            for r in debits.iter().rev() {
                all &= carry.take_all(&[r], size / 2, false);
            }
            carry.last = id;
            carry.whole = all;
            j.rotate(carry).expect("rotation");
        }
    }
    j.sync().expect("sync");
    let last = at.load(Ordering::Relaxed);
    let c = concert::wire::clock::local(last / 1000, 0);
    format!("{:04}-{:02}-{:02}", c.year, c.month, c.day)
}

/// A kB figure of /proc/PID/status (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Resets the process's peak RSS (`VmHWM`) to its RSS now.
fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The daemon's start on a generated journal, then `concertctl totals`
/// of one day, `show 1000` and `show 5` beside it: time, the peak RSS and
/// the RSS left once each command is done.
fn history_case(prefix: &str, size: u64, keep: u32, n: u64, days: i64) {
    let mut d = daemon(&format!(
        "journal-size {size}\njournal-keep {keep}\ncontrol \"@DIR@/control.sock\""
    ));
    d.signal(libc::SIGTERM);
    d.wait_exit();
    for entry in std::fs::read_dir(&d.dir).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with("journal") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let t0 = Instant::now();
    let day = generate(&d.dir.join("journal"), size, keep, n, days);
    let generated = t0.elapsed();
    let bytes: u64 = std::fs::read_dir(&d.dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("journal"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    d.spawn();
    let pid = d.pid();
    let start_ms = ms(d.started);
    let start_peak = status_kib(pid, "VmHWM:");
    // One request answered: settled.
    exchange(d.addr, PING).unwrap();
    let measure = |args: &[&str]| {
        let before = status_kib(pid, "VmRSS:");
        reset_peak(pid);
        let t = Instant::now();
        let out = d.ctl(args);
        let took = t.elapsed();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let peak = status_kib(pid, "VmHWM:");
        let after = status_kib(pid, "VmRSS:");
        (took, before, peak, after)
    };
    let (totals_t, totals_before, totals_peak, totals_after) = measure(&["totals", &day]);
    let (show_t, show_before, show_peak, show_after) = measure(&["show", "1000"]);
    let (show5_t, _, _, show5_after) = measure(&["show", "5"]);
    println!(
        "history ({prefix}): {n} debits over {days} days, journal-size {}, journal-keep {keep}: \
         {:.0} MB in the files, generated in {:.1} s",
        concert::config::fmt_size(size),
        bytes as f64 / 1e6,
        generated.as_secs_f64()
    );
    row(
        "start",
        format!("{start_ms:.0} ms, peak RSS {:.1} MiB", mib(start_peak)),
    );
    row(
        &format!("totals {day}"),
        format!(
            "{:.0} ms, peak {:.1} MiB (+{:.1}), RSS after {:.1} MiB (was {:.1})",
            ms(totals_t),
            mib(totals_peak),
            mib(totals_peak.saturating_sub(totals_before)),
            mib(totals_after),
            mib(totals_before)
        ),
    );
    row(
        "show 1000",
        format!(
            "{:.0} ms, peak {:.1} MiB (+{:.1}), RSS after {:.1} MiB (was {:.1})",
            ms(show_t),
            mib(show_peak),
            mib(show_peak.saturating_sub(show_before)),
            mib(show_after),
            mib(show_before)
        ),
    );
    row("show 5", format!("{:.0} ms", ms(show5_t)));
    line(
        &format!("{prefix}.journal_mb"),
        format!("{:.0}", bytes as f64 / 1e6),
    );
    line(&format!("{prefix}.start_ms"), format!("{start_ms:.0}"));
    line(
        &format!("{prefix}.start_peak_mb"),
        format!("{:.1}", mib(start_peak)),
    );
    line(
        &format!("{prefix}.totals_ms"),
        format!("{:.0}", ms(totals_t)),
    );
    line(
        &format!("{prefix}.totals_peak_mb"),
        format!("{:.1}", mib(totals_peak)),
    );
    line(
        &format!("{prefix}.totals_added_mb"),
        format!("{:.1}", mib(totals_peak.saturating_sub(totals_before))),
    );
    line(
        &format!("{prefix}.show1000_ms"),
        format!("{:.0}", ms(show_t)),
    );
    line(
        &format!("{prefix}.show1000_added_mb"),
        format!("{:.1}", mib(show_peak.saturating_sub(show_before))),
    );
    line(&format!("{prefix}.show5_ms"), format!("{:.0}", ms(show5_t)));
    line(
        &format!("{prefix}.rss_before_mb"),
        format!("{:.1}", mib(totals_before)),
    );
    line(
        &format!("{prefix}.rss_after_mb"),
        format!("{:.1}", mib(show5_after.max(totals_after))),
    );
}

/// `history`: 500,000 transactions in a 300 MB journal (journal-size 64M,
/// journal-keep 4), then a full journal with the defaults (8M, 4).
fn history() {
    history_case("history", 64 << 20, 4, 500_000, 20);
    history_case("history.default", 8 << 20, 4, 100_000, 4);
}

fn main() {
    // HISTORY_GEN=DIR [HISTORY_N=N]: only writes the history figures'
    // journal there (N debits, 500,000 by default), for a look by hand.
    if let Ok(dir) = std::env::var("HISTORY_GEN") {
        let p = std::path::Path::new(&dir);
        std::fs::create_dir_all(p).unwrap();
        let n = std::env::var("HISTORY_N")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(500_000);
        println!("{}", generate(&p.join("journal"), 64 << 20, 4, n, 20));
        return;
    }
    // `cargo bench` passes --bench; BENCH_ONLY=name runs one part.
    if let Ok(only) = std::env::var("BENCH_ONLY") {
        match only.as_str() {
            "ping" => ping(),
            "busy" => busy_storm(),
            "tx" => transactions(),
            "memory" => memory(),
            "serial" => serial(),
            "start" => start(),
            "idle" => idle(),
            "history" => history(),
            _ => eprintln!("BENCH_ONLY: ping, busy, tx, memory, serial, start, idle or history"),
        }
        return;
    }
    println!(
        "concertd bench on {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    ping();
    busy_storm();
    transactions();
    memory();
    serial();
    start();
    idle();
    history();
}
