//! Stage 6: payment programs and a relay upstream that print without
//! end; concertd's RSS sampled while they run.

use crate::daemon::{start_in, subdir};
use crate::report::Stage;
use crate::tcp::{check_approved, debit, exchange, field, ms, status};
use crate::util::{rss_kb, text, PATIENCE};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The memory a flood must not take concertd past.
const FLOOD_RSS_LIMIT_KB: u64 = 64 * 1024;

/// A payment program that floods, by amount; any other amount approves.
const FLOOD_SH: &str = r#"#!/bin/sh
case "$CONCERT_AMOUNT" in
# Endless lines on standard output.
101) exec yes X=1 ;;
# Standard error without a newline.
102) exec tr '\0' e < /dev/zero >&2 ;;
# Endless lines on standard error.
103) exec yes 'flood line' >&2 ;;
# 32 MB of keys on standard output, then an approval past what is read.
104) yes X=1 | head -c 32000000; echo AE=10 ;;
*) echo AE=10; echo AC=123456 ;;
esac
"#;

/// Samples concertd's RSS every 20 ms until stopped; past
/// `FLOOD_RSS_LIMIT_KB` kills it, which fails the stage, before a
/// regression takes the machine's memory. `stop()` gives the peak in kB.
struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            while !s.load(Ordering::Relaxed) {
                let Some(kb) = rss_kb(pid) else { break };
                peak = peak.max(kb);
                if kb >= FLOOD_RSS_LIMIT_KB {
                    // SAFETY: kill(2) on our own child's pid.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        });
        RssSampler { stop, handle }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or(u64::MAX)
    }
}

/// A V3 upstream on loopback that answers each register's status with its
/// previous sale until that register's sale comes, and every other request
/// with bytes without end: the sales, then each status the resolvers ask.
/// Counts the connections it streamed to.
fn streaming_upstream(streamed: Arc<std::sync::atomic::AtomicU64>) -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let addr = l.local_addr().expect("upstream address");
    let sold = Arc::new(Mutex::new(HashSet::<String>::new()));
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let (sold, streamed) = (Arc::clone(&sold), Arc::clone(&streamed));
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(PATIENCE));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while concert::wire::request::parse(&buf, &[978]).is_err() {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let ca = field(&buf, "CA").unwrap_or_default();
                let status = field(&buf, "CD").as_deref() == Some("T");
                let first = !sold.lock().unwrap().contains(&ca);
                if status && first {
                    let prev = format!("{}AE00201AF00204", debit(&ca, 700));
                    let _ = s.write_all(prev.as_bytes());
                    return;
                }
                if !status {
                    sold.lock().unwrap().insert(ca);
                }
                streamed.fetch_add(1, Ordering::Relaxed);
                let flood = "CF003abc".repeat(1024);
                while s.write_all(flood.as_bytes()).is_ok() {}
            });
        }
    });
    addr
}

pub fn stage_flood(root: &Path) -> Stage {
    let mut st = Stage::new("flood", "floods from exec programs and a relay upstream");
    let dir = subdir(root, "flood");
    let script = dir.join("flood.sh");
    std::fs::write(&script, FLOOD_SH).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut peak_all = 0;
    let d = start_in(
        &dir,
        &format!("terminal exec {}\ntransaction-timeout 3s", script.display()),
    );
    st.fig("rss_start_kb", d.rss_kb().unwrap_or(0));
    // Each flood ends in AF07: killed at transaction-timeout, or, for the
    // approval past 64 KiB of keys, unknown at the exit.
    for (amount, name, says) in [
        (
            101,
            "exec_stdout_lines",
            "more than 65536 bytes on standard output",
        ),
        (102, "exec_stderr_no_newline", " [cut at 1024 bytes]"),
        (103, "exec_stderr_lines", "lines of standard error logged"),
        (
            104,
            "exec_ae_past_64k",
            "more than 65536 bytes on standard output",
        ),
    ] {
        st.tried += 1;
        let req = debit("01", amount);
        let mark = d.mark();
        let sampler = RssSampler::start(d.pid());
        let t = Instant::now();
        let answer = exchange(d.addr, req.as_bytes(), false, PATIENCE);
        let peak = sampler.stop();
        peak_all = peak_all.max(peak);
        st.fig(&format!("{name}_peak_rss_kb"), peak);
        st.fig(&format!("{name}_ms"), ms(t.elapsed()));
        if peak >= FLOOD_RSS_LIMIT_KB {
            st.lose(format!("{name}: RSS {peak} kB, killed"));
            break;
        }
        if d.wait_log_since(mark, says).is_none() {
            st.lose(format!("{name}: no log line with {says:?}"));
        }
        match answer {
            Ok(a) if a == format!("{req}AE00201AF00207").as_bytes() => {}
            Ok(a) => {
                st.wrong += 1;
                st.evidence(format!("{name}: not AF07: {:?}", text(&a)));
            }
            Err(e) => st.lose(format!("{name}: no answer: {e}")),
        }
    }
    // Still a terminal: the next sale is approved.
    st.tried += 1;
    let req = debit("01", 100);
    match exchange(d.addr, req.as_bytes(), false, PATIENCE) {
        Ok(a) => {
            if let Err(e) = check_approved(&req, &a) {
                st.lose(format!("after the floods: {e}"));
            }
        }
        Err(e) => st.lose(format!("after the floods: no answer: {e}")),
    }
    st.daemon_log(&d);
    drop(d);

    // A relay whose upstream streams: each register's sale is lost
    // (cut at 8 KiB), and its resolver's status reads are streamed too.
    let streamed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let up = streaming_upstream(Arc::clone(&streamed));
    let rdir = subdir(root, "flood-relay");
    let d = start_in(
        &rdir,
        &format!("terminal relay tcp {up} v3\ntransaction-timeout 20s"),
    );
    let sampler = RssSampler::start(d.pid());
    let t = Instant::now();
    let registers = 5;
    for r in 1..=registers {
        st.tried += 1;
        let ca = format!("{r:02}");
        let req = debit(&ca, 1000 + r);
        match exchange(d.addr, req.as_bytes(), false, PATIENCE) {
            Ok(a) if a == format!("{req}AE00201AF00207").as_bytes() => {}
            Ok(a) => {
                st.wrong += 1;
                st.evidence(format!("relay: not AF07: {:?}", text(&a)));
            }
            Err(e) => st.lose(format!("relay {ca}: no answer: {e}")),
        }
    }
    // The resolvers ask every 2 s; the registers ask too.
    let resolving = Instant::now();
    while resolving.elapsed() < Duration::from_secs(6) {
        for r in 1..=registers {
            let _ = exchange(
                d.addr,
                status(&format!("{r:02}")).as_bytes(),
                false,
                PATIENCE,
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let peak = sampler.stop();
    peak_all = peak_all.max(peak);
    st.fig("relay_ms", ms(t.elapsed()));
    st.fig("relay_peak_rss_kb", peak);
    st.fig("relay_streams", streamed.load(Ordering::Relaxed));
    let cut = d.count_log("answer longer than 8192 bytes");
    st.fig("relay_answers_cut", cut);
    if peak >= FLOOD_RSS_LIMIT_KB {
        st.lose(format!("relay: RSS {peak} kB, killed"));
    } else if cut < registers as usize {
        st.lose(format!("relay: {cut} answers cut for {registers} sales"));
    }
    st.daemon_log(&d);
    st.fig("rss_peak_kb", peak_all);
    st.fig("peak_rss_mb", format!("{:.1}", peak_all as f64 / 1024.0));
    st.summary = format!(
        "4 exec floods and {registers} relay sales to an endless upstream \
         ({} streams read and cut), peak RSS {:.1} MB",
        streamed.load(Ordering::Relaxed),
        peak_all as f64 / 1024.0
    );
    st
}
