//! Stage 1: kill -9 at random points of debits, restarts on the same
//! journal, the journal and `CD=T` checked against each other and against
//! what the client was told.

use crate::daemon::{restart, start_in, subdir};
use crate::journal::read_journal;
use crate::report::Stage;
use crate::rng::{env_num, Rng};
use crate::tcp::{debit, exchange, field, ms, percentile, status};
use crate::util::{text, PATIENCE};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

/// Registers of the kill stage.
const REGISTERS: [&str; 3] = ["01", "02", "03"];

pub fn stage_kill(mut rng: Rng, root: &Path) -> Stage {
    let mut st = Stage::new("kill", "kill -9 at random points, restart, CD=T vs journal");
    let dir = subdir(root, "kill");
    let journal = dir.join("journal");
    let n = env_num("STRESS_KILLS", 100);
    let mut delay = rng.range(0, 200);
    let mut d = start_in(&dir, &format!("simulator-delay {delay}ms"));
    let mut starts = vec![d.started];
    let (mut before, mut during, mut after) = (0u64, 0u64, 0u64);
    let (mut not_accepted, mut answered, mut recovered, mut ended_unanswered) = (0u64, 0, 0, 0);
    let mut verdicts: BTreeMap<String, u64> = BTreeMap::new();
    // Each problem counted once, however many restarts still show it.
    let mut flagged: HashSet<String> = HashSet::new();
    let mut status_checks = 0u64;
    for i in 0..n {
        st.tried += 1;
        let reg = REGISTERS[(i % 3) as usize];
        // Mostly approved; some refused (51), abandoned (53), not ended (54).
        let ending = match rng.below(10) {
            0 => 51,
            1 => 53,
            2 => 54,
            _ => rng.below(50),
        };
        let amount = (i + 1) * 100 + ending;
        let req = debit(reg, amount);
        let addr = d.addr;
        let r2 = req.clone();
        let moment = rng.below(3);
        let client = std::thread::spawn(move || {
            exchange(addr, r2.as_bytes(), false, Duration::from_secs(10)).unwrap_or_default()
        });
        // Before: 0-1.5 ms after the client starts, racing its connection
        // and the begun record. During: 1 ms to the simulated delay + 10 ms
        // (begun, backend, ended, answer, delivered). After: 0-5 ms after
        // the client has its answer (around the delivery record).
        match moment {
            0 => {
                before += 1;
                std::thread::sleep(Duration::from_micros(rng.range(0, 1500)));
                d.kill9();
            }
            1 => {
                during += 1;
                std::thread::sleep(Duration::from_millis(rng.range(1, delay + 10)));
                d.kill9();
            }
            _ => {
                after += 1;
                while !client.is_finished() {
                    std::thread::sleep(Duration::from_millis(1));
                }
                std::thread::sleep(Duration::from_micros(rng.range(0, 5000)));
                d.kill9();
            }
        }
        let got = client.join().unwrap_or_default();
        st.daemon_log(&d);
        delay = rng.range(0, 200);
        restart(&mut d, &format!("simulator-delay {delay}ms"));
        starts.push(d.started);

        // The journal after recovery.
        let (recs, problems) = read_journal(&journal);
        for p in problems {
            if flagged.insert(p.clone()) {
                st.lose(format!("journal: {p}"));
            }
        }
        for (id, r) in &recs {
            if r.ended.is_none() && flagged.insert(format!("open {id}")) {
                st.lose(format!("tx {id} begun and never ended after recovery"));
            }
            if r.begun > 1 && flagged.insert(format!("dup {id}")) {
                st.lose(format!("tx id {id} begun {} times", r.begun));
            }
        }
        // CD=T for each register equals the journal's latest answer.
        for reg in REGISTERS {
            status_checks += 1;
            let want = recs
                .values()
                .rfind(|r| r.register == reg)
                .and_then(|r| r.last.clone())
                .unwrap_or_else(|| format!("{}AE00201AF00200", status(reg)));
            let got_status = exchange(d.addr, status(reg).as_bytes(), false, PATIENCE)
                .map(|a| text(&a))
                .unwrap_or_else(|e| format!("(error {e})"));
            if let Some(a) = field(got_status.as_bytes(), "CB").and_then(|c| c.parse().ok()) {
                st.outcome(a, got_status.as_bytes(), true);
            }
            if got_status != want && flagged.insert(format!("status {reg} {want}")) {
                st.lose(format!(
                    "CD=T contradicts the journal for register {reg} after kill {i}: \
                     CD=T {got_status:?}, journal {want:?}"
                ));
            }
        }
        // What the client was told agrees with the journal.
        let mine = recs.iter().find(|(_, r)| r.request == req);
        match (mine, got.is_empty()) {
            (None, true) => not_accepted += 1,
            (None, false) => st.lose(format!(
                "kill {i}: the client got {:?} but the journal has no begun record",
                text(&got)
            )),
            (Some((id, r)), got_nothing) => {
                let v = r.verdict.clone().unwrap_or_else(|| "none".into());
                *verdicts.entry(v.clone()).or_default() += 1;
                if got_nothing {
                    if v == "unknown-recovered" {
                        recovered += 1;
                    } else {
                        ended_unanswered += 1;
                    }
                } else {
                    answered += 1;
                    st.outcome(amount, &got, false);
                    if v == "unknown-recovered" {
                        st.lose(format!(
                            "tx {id}: the client got {:?} but the journal closed it as \
                             unknown-recovered",
                            text(&got)
                        ));
                    } else if r.ended.as_deref() != Some(&text(&got)) {
                        st.lose(format!(
                            "tx {id}: the client got {:?}, the journal ended it with {:?}",
                            text(&got),
                            r.ended
                        ));
                    }
                }
            }
        }
    }
    st.daemon_log(&d);
    drop(d);
    let (recs, _) = read_journal(&journal);
    starts.sort();
    st.fig("kill_before", before);
    st.fig("kill_during", during);
    st.fig("kill_after", after);
    st.fig("not_accepted", not_accepted);
    st.fig("answered", answered);
    st.fig("recovered_unknown", recovered);
    st.fig("ended_unanswered", ended_unanswered);
    for (v, c) in &verdicts {
        st.fig(&format!("verdict_{}", v.replace('-', "_")), c);
    }
    st.fig("journal_transactions", recs.len());
    st.fig("status_checks", status_checks);
    st.fig("restart_p50_ms", ms(percentile(&starts, 0.5)));
    st.fig("restart_max_ms", ms(*starts.last().unwrap()));
    st.summary = format!(
        "{before}/{during}/{after} kills before/during/after; {answered} answered, \
         {recovered} recovered AF07, {not_accepted} not accepted; {status_checks} CD=T checked"
    );
    st
}
