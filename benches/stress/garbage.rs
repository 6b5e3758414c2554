//! Stage 4: garbage and valid frames mixed on many connections: the
//! daemon stays up, answers, and its memory stays flat.

use crate::daemon::{connections_open, start_in, subdir};
use crate::journal::read_journal;
use crate::report::Stage;
use crate::rng::{env_num, Rng};
use crate::tcp::{abort, check_outcome, connect, debit, exchange, field, ping, read_all, status};
use crate::util::{text, PATIENCE};
use concert::wire::framing::{ETX, STX};
use concert::wire::tlv::Frame;
use std::io::{ErrorKind, Write};
use std::net::{Shutdown, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KINDS: [&str; 10] = [
    "random_bytes",
    "tlv_junk",
    "truncated",
    "debit",
    "ping",
    "stx_junk",
    "reset",
    "status",
    "oversize",
    "split_ping",
];

#[derive(Default)]
struct Tally {
    sent: [u64; KINDS.len()],
    /// Valid requests without a well-formed answer.
    bad: u64,
    /// Connections concertd neither answered nor closed in time.
    hung: u64,
    connect_errors: u64,
    debit_approved: u64,
    debit_busy: u64,
    debit_other: u64,
    garbage_answered: u64,
    /// Debit outcomes that disagree with the simulator's table.
    wrong: u64,
    evidence: Vec<String>,
}

impl Tally {
    fn note(&mut self, s: String) {
        if self.evidence.len() < 4 {
            self.evidence.push(s);
        }
    }
}

fn garbage_client(addr: SocketAddr, mut rng: Rng, stop: Arc<AtomicBool>) -> Tally {
    let mut t = Tally::default();
    // Over request-timeout (5 s) and concertd's linger (2 s).
    let timeout = Duration::from_secs(12);
    while !stop.load(Ordering::Relaxed) {
        let kind = rng.below(KINDS.len() as u64) as usize;
        t.sent[kind] += 1;
        let reg = format!("{:02}", rng.range(1, 20));
        let mut s = match connect(addr, timeout) {
            Ok(s) => s,
            Err(e) => {
                t.connect_errors += 1;
                t.note(format!("connect: {e}"));
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        // What to send, whether to shut our side, what a valid one expects.
        let (bytes, shut, valid): (Vec<u8>, bool, Option<String>) = match kind {
            0 => {
                let n = rng.range(1, 600) as usize;
                (rng.bytes(n), true, None)
            }
            1 => {
                let mut b = b"CZ0040320".to_vec();
                for _ in 0..rng.range(0, 12) {
                    let tag = [b'A' + rng.below(26) as u8, b'A' + rng.below(26) as u8];
                    let len = rng.range(0, 30) as usize;
                    // Sometimes the length lies.
                    let said = if rng.chance(20) {
                        rng.below(1000) as usize
                    } else {
                        len
                    };
                    b.extend_from_slice(&tag);
                    b.extend_from_slice(format!("{said:03}").as_bytes());
                    b.extend_from_slice(&rng.printable(len));
                }
                (b, true, None)
            }
            2 => {
                let full = debit(&reg, rng.range(1, 99_999));
                let cut = rng.range(1, full.len() as u64 - 1) as usize;
                (full.as_bytes()[..cut].to_vec(), true, None)
            }
            3 => {
                let req = debit(&reg, rng.range(1, 99_999));
                (req.clone().into_bytes(), false, Some(req))
            }
            4 | 9 => {
                let req = ping(&reg);
                (req.clone().into_bytes(), false, Some(req))
            }
            5 => {
                let mut b = vec![STX];
                let n = rng.range(0, 80) as usize;
                if rng.chance(50) {
                    b.extend_from_slice(b"0100001000110978          A010B010");
                    b.truncate(1 + n.min(34));
                } else {
                    b.extend_from_slice(&rng.bytes(n));
                }
                b.push(ETX);
                b.push(rng.next() as u8);
                (b, true, None)
            }
            6 => {
                let n = rng.range(0, 100) as usize;
                (rng.bytes(n), false, None)
            }
            7 => {
                let req = status(&reg);
                (req.clone().into_bytes(), false, Some(req))
            }
            _ => {
                let n = rng.range(1000, 6000) as usize;
                (rng.printable(n), true, None)
            }
        };
        if kind == 6 {
            let _ = s.write_all(&bytes);
            abort(s);
            continue;
        }
        let wrote = if kind == 9 {
            // A valid request in pieces, within request-gap.
            let cut = rng.range(1, bytes.len() as u64 - 1) as usize;
            s.write_all(&bytes[..cut]).and_then(|()| {
                std::thread::sleep(Duration::from_millis(rng.range(0, 20)));
                s.write_all(&bytes[cut..])
            })
        } else {
            s.write_all(&bytes)
        };
        if shut {
            let _ = s.shutdown(Shutdown::Write);
        }
        let answer = match (wrote, read_all(&mut s)) {
            (_, Ok(a)) => a,
            (_, Err(e)) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                t.hung += 1;
                t.note(format!(
                    "{}: no answer nor close within {timeout:?}",
                    KINDS[kind]
                ));
                continue;
            }
            (_, Err(e)) => {
                if valid.is_some() {
                    t.bad += 1;
                    t.note(format!("{}: read: {e}", KINDS[kind]));
                }
                continue;
            }
        };
        let Some(req) = valid else {
            if !answer.is_empty() {
                t.garbage_answered += 1;
            }
            continue;
        };
        let fault = match kind {
            4 | 9 => {
                (answer != format!("{req}AE00210").as_bytes()).then_some("not the ping answer")
            }
            7 => (Frame::decode(&answer).is_err() || field(&answer, "AE").is_none())
                .then_some("malformed status answer"),
            _ => {
                if Frame::decode(&answer).is_err() || !answer.starts_with(req.as_bytes()) {
                    Some("malformed debit answer")
                } else {
                    match (
                        field(&answer, "AE").as_deref(),
                        field(&answer, "AF").is_some(),
                    ) {
                        (Some("10"), _) => t.debit_approved += 1,
                        (Some("01"), false) => t.debit_busy += 1,
                        (Some("01"), true) => t.debit_other += 1,
                        _ => {}
                    }
                    let busy = field(&answer, "AE").as_deref() == Some("01")
                        && field(&answer, "AF").is_none();
                    let amount = Frame::decode(req.as_bytes()).ok().and_then(|f| {
                        std::str::from_utf8(f.get(concert::wire::tlv::tags::CB)?)
                            .ok()?
                            .parse()
                            .ok()
                    });
                    if let (false, Some(amount)) = (busy, amount) {
                        if let Err(e) = check_outcome(amount, &answer, false) {
                            t.wrong += 1;
                            t.note(format!("wrong outcome: {e}"));
                        }
                    }
                    None
                }
            }
        };
        if let Some(f) = fault {
            t.bad += 1;
            t.note(format!("{f}: {req} -> {:?}", text(&answer)));
        }
    }
    t
}

pub fn stage_garbage(mut rng: Rng, root: &Path) -> Stage {
    let mut st = Stage::new("garbage", "garbage and valid frames mixed, 16 connections");
    let dir = subdir(root, "garbage");
    let mut d = start_in(&dir, "simulator-delay 10ms");
    let secs = env_num("STRESS_GARBAGE_SECS", 60);
    let threads = 16;
    std::thread::sleep(Duration::from_millis(200));
    let rss_start = d.rss_kb().unwrap_or(0);
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for _ in 0..threads {
        let (r, s, a) = (rng.fork(), Arc::clone(&stop), d.addr);
        handles.push(std::thread::spawn(move || garbage_client(a, r, s)));
    }
    let t0 = Instant::now();
    let mut rss_peak = rss_start;
    let mut rss_10s = 0;
    let mut died = false;
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(500));
        if !d.alive() {
            died = true;
            break;
        }
        let r = d.rss_kb().unwrap_or(0);
        rss_peak = rss_peak.max(r);
        if rss_10s == 0 && t0.elapsed() >= Duration::from_secs(10.min(secs)) {
            rss_10s = r;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let load_time = t0.elapsed();
    let mut t = Tally::default();
    for h in handles {
        let x = h.join().expect("garbage client");
        for k in 0..KINDS.len() {
            t.sent[k] += x.sent[k];
        }
        t.bad += x.bad;
        t.hung += x.hung;
        t.connect_errors += x.connect_errors;
        t.debit_approved += x.debit_approved;
        t.debit_busy += x.debit_busy;
        t.debit_other += x.debit_other;
        t.garbage_answered += x.garbage_answered;
        t.wrong += x.wrong;
        for e in x.evidence {
            st.evidence(e);
        }
    }
    let total: u64 = t.sent.iter().sum();
    st.tried = total;
    st.lost = t.bad + t.hung;
    st.wrong = t.wrong;
    // Every connection closed again, then the memory once more.
    let mut open_after = usize::MAX;
    let until = Instant::now() + Duration::from_secs(15);
    while !died && Instant::now() < until {
        open_after = connections_open(&d).unwrap_or(usize::MAX);
        if open_after == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let rss_end = d.rss_kb().unwrap_or(0);
    if died || !d.alive() {
        st.lose(format!(
            "concertd died under garbage; log tail:\n{}",
            d.log_tail(20)
        ));
    } else {
        st.tried += 1;
        let p = ping("01");
        match exchange(d.addr, p.as_bytes(), false, PATIENCE) {
            Ok(a) if a == format!("{p}AE00210").as_bytes() => {}
            Ok(a) => st.lose(format!("final ping: {:?}", text(&a))),
            Err(e) => st.lose(format!("final ping: {e}")),
        }
    }
    let growth = rss_end as i64 - rss_start as i64;
    let flat = growth <= 20 * 1024;
    if !flat {
        st.lose(format!(
            "memory grew by {} kB ({rss_start} -> {rss_end} kB), over 20 MB",
            growth
        ));
    }
    if open_after != 0 {
        st.evidence(format!(
            "{open_after} connections still open 15 s after the load"
        ));
    }
    // Every transaction the load started has its outcome.
    let (recs, problems) = read_journal(&dir.join("journal"));
    for p in problems {
        st.lose(format!("journal: {p}"));
    }
    let open = recs.values().filter(|r| r.ended.is_none()).count();
    if open > 0 {
        st.lose(format!("{open} transactions begun and never ended"));
    }
    st.fig("journal_transactions", recs.len());
    st.daemon_log(&d);
    st.fig("load_seconds", format!("{:.1}", load_time.as_secs_f64()));
    st.fig("threads", threads);
    st.fig("connections", total);
    st.fig(
        "conn_per_s",
        format!("{:.0}", total as f64 / load_time.as_secs_f64()),
    );
    for (k, name) in KINDS.iter().enumerate() {
        st.fig(&format!("sent_{name}"), t.sent[k]);
    }
    st.fig("debit_approved", t.debit_approved);
    st.fig("debit_busy", t.debit_busy);
    st.fig("debit_declined", t.debit_other);
    st.fig("garbage_answered", t.garbage_answered);
    st.fig("valid_bad", t.bad);
    st.fig("hung", t.hung);
    st.fig("connect_errors", t.connect_errors);
    st.fig("open_after", open_after);
    st.fig("rss_start_kb", rss_start);
    st.fig("rss_10s_kb", rss_10s);
    st.fig("rss_peak_kb", rss_peak);
    st.fig("rss_end_kb", rss_end);
    st.fig("rss_growth_kb", growth);
    st.fig("memory_flat", u8::from(flat));
    st.fig("alive", u8::from(!died));
    st.summary = format!(
        "{total} connections in {:.0} s ({:.0}/s), {} hung, {} valid unanswered; \
         RSS {rss_start} -> {rss_end} kB (peak {rss_peak})",
        load_time.as_secs_f64(),
        total as f64 / load_time.as_secs_f64(),
        t.hung,
        t.bad
    );
    st
}
