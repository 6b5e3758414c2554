//! Stage 3: idle connections held open while a real debit gets its
//! answer.

use crate::daemon::{connections_open, start_in, subdir};
use crate::report::Stage;
use crate::tcp::{check_approved, connect, debit, exchange, ms, ping};
use crate::util::{text, PATIENCE};
use std::io::{ErrorKind, Read};
use std::path::Path;
use std::time::{Duration, Instant};

pub fn stage_idle(root: &Path) -> Stage {
    let mut st = Stage::new("idle", "300 idle connections held, a real debit answered");
    let dir = subdir(root, "idle");
    let d = start_in(&dir, "simulator-delay 1s\nrequest-timeout 60s");
    let n = 300usize;
    let mut idle = Vec::new();
    for _ in 0..n {
        match connect(d.addr, PATIENCE) {
            Ok(s) => idle.push(s),
            Err(e) => st.lose(format!("idle connection refused: {e}")),
        }
    }
    // Wait until concertd holds them all.
    let until = Instant::now() + Duration::from_secs(10);
    let mut held = 0;
    while Instant::now() < until {
        held = connections_open(&d).unwrap_or(0);
        if held >= n {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    st.fig("held_before", held);
    if held < n {
        st.evidence(format!(
            "concertd reported {held} connections open, {n} expected"
        ));
    }
    let req = debit("01", 1234);
    st.tried += 1;
    let t = Instant::now();
    match exchange(d.addr, req.as_bytes(), false, PATIENCE) {
        Ok(a) => {
            if let Err(e) = check_approved(&req, &a) {
                st.lose(format!("debit: {e}"));
            }
            st.outcome(1234, &a, false);
        }
        Err(e) => st.lose(format!("debit: no answer: {e}")),
    }
    let debit_time = t.elapsed();
    st.tried += 1;
    let p = ping("01");
    let t = Instant::now();
    match exchange(d.addr, p.as_bytes(), false, PATIENCE) {
        Ok(a) if a == format!("{p}AE00210").as_bytes() => {}
        Ok(a) => st.lose(format!("ping: {:?}", text(&a))),
        Err(e) => st.lose(format!("ping: {e}")),
    }
    let ping_time = t.elapsed();
    // The idle connections are still open: nothing to read, no EOF.
    let mut still = 0u64;
    for s in &idle {
        st.tried += 1;
        let _ = s.set_nonblocking(true);
        let mut b = [0u8; 16];
        match (&*s).read(&mut b) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => still += 1,
            Ok(0) => st.lose("an idle connection was closed before request-timeout".into()),
            Ok(k) => st.lose(format!("an idle connection got {:?}", text(&b[..k]))),
            Err(e) => st.lose(format!("an idle connection: {e}")),
        }
    }
    let held_after = connections_open(&d).unwrap_or(0);
    drop(idle);
    st.daemon_log(&d);
    st.fig("idle", n);
    st.fig("idle_still_open", still);
    st.fig("held_after", held_after);
    st.fig("debit_ms", ms(debit_time));
    st.fig("ping_ms", ms(ping_time));
    st.summary = format!(
        "{still}/{n} idle held; debit approved in {} ms (1 s simulated), ping {} ms",
        ms(debit_time),
        ms(ping_time)
    );
    st
}
