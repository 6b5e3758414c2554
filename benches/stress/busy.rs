//! Stage 2: concurrent debits while one runs: every one a well-formed
//! busy answer, the running one approved.

use crate::daemon::{start_in, subdir};
use crate::report::Stage;
use crate::tcp::{
    check_approved, check_busy, connect, debit, exchange, field, ms, percentile, read_all,
};
use crate::util::PATIENCE;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Instant;

pub fn stage_busy(root: &Path) -> Stage {
    let mut st = Stage::new("busy", "512 concurrent debits while one runs");
    let dir = subdir(root, "busy");
    let d = start_in(&dir, "simulator-delay 3s");
    let running_req = debit("01", 4200);
    let mark = d.mark();
    let addr = d.addr;
    let r2 = running_req.clone();
    let running = std::thread::spawn(move || {
        let t = Instant::now();
        let a = exchange(addr, r2.as_bytes(), false, PATIENCE);
        (a, t.elapsed())
    });
    if d.wait_log_since(mark, "debit 42.00 EUR register 01 from tcp")
        .is_none()
    {
        st.lose("the running debit never started".into());
    }
    let n = 512usize;
    let barrier = Arc::new(Barrier::new(n + 1));
    let mut handles = Vec::new();
    for i in 0..n {
        let req = debit(&format!("{:02}", 2 + i % 98), 100 + i as u64);
        let b = Arc::clone(&barrier);
        let h = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                let s = connect(addr, PATIENCE);
                b.wait();
                let t = Instant::now();
                let r = s.and_then(|mut s| {
                    s.write_all(req.as_bytes())?;
                    read_all(&mut s)
                });
                (req, r, t.elapsed())
            })
            .expect("thread");
        handles.push(h);
    }
    barrier.wait();
    let storm = Instant::now();
    let mut lat = Vec::new();
    let (mut ok, mut exact) = (0u64, 0u64);
    for h in handles {
        st.tried += 1;
        let (req, r, t) = h.join().expect("client thread");
        lat.push(t);
        match r {
            Ok(a) => match check_busy(&req, &a) {
                Ok(()) => {
                    ok += 1;
                    if a == format!("{req}AE00201").as_bytes() {
                        exact += 1;
                    }
                }
                Err(e) => st.lose(format!("{req}: {e}")),
            },
            Err(e) => st.lose(format!("{req}: no answer: {e}")),
        }
    }
    let storm_time = storm.elapsed();
    st.tried += 1;
    let (ra, rt) = running.join().expect("running client");
    match ra {
        Ok(a) => {
            if let Err(e) = check_approved(&running_req, &a) {
                st.lose(format!("running debit: {e}"));
            }
            if let Some(amount) = field(&a, "CB").and_then(|c| c.parse().ok()) {
                st.outcome(amount, &a, false);
            }
        }
        Err(e) => st.lose(format!("running debit: no answer: {e}")),
    }
    let journal = std::fs::read_to_string(dir.join("journal")).unwrap_or_default();
    let begun = journal.lines().filter(|l| l.contains(" begun ")).count();
    if begun != 1 {
        st.lose(format!(
            "{begun} transactions begun, 1 expected: a busy client got a transaction"
        ));
    }
    st.daemon_log(&d);
    lat.sort();
    st.fig("clients", n);
    st.fig("busy_ok", ok);
    st.fig("busy_exact", exact);
    st.fig("storm_ms", ms(storm_time));
    st.fig("answer_p50_ms", ms(percentile(&lat, 0.5)));
    st.fig("answer_p99_ms", ms(percentile(&lat, 0.99)));
    st.fig("answer_max_ms", ms(*lat.last().unwrap()));
    st.fig("running_ms", ms(rt));
    st.summary = format!(
        "{ok}/{n} busy answers well-formed, all within {} ms; running debit approved after {} ms",
        ms(*lat.last().unwrap()),
        ms(rt)
    );
    st
}
