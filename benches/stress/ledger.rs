//! Stage 8: the ledger oracle's long form (issue 20). Generated plans of
//! operations and faults, each on a fresh daemon, the three backends in
//! turn, played by a few threads at once until `ORACLE_OPS` operations
//! (100,000) have run; every answer proved against the backends' ledgers
//! (tests/oracle), half the plans with a serial line (V2 and V3
//! registers with a 1 s ACK patience), with the slow disk (strace), a
//! second register while one runs and masked retries after restarts
//! among the faults. A violation is reduced to its shortest sequence and
//! printed with its seed.

use crate::oracle::model::generate;
use crate::oracle::model::Backend;
use crate::oracle::{figures, play, report, Outcome};
use crate::report::Stage;
use crate::rng::env_num;
use crate::rng::Rng;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Operations per daemon: enough for restarts, rotations and retries to
/// meet, few enough for a reduction to start small.
const PLAN_OPS: u64 = 400;

pub fn stage_ledger(mut rng: Rng) -> Stage {
    let mut st = Stage::new("oracle", "ledger oracle");
    let total = env_num("ORACLE_OPS", 100_000);
    let threads = env_num("ORACLE_THREADS", 3).max(1);
    // ORACLE_SEED repeats one plan: the one a violation printed.
    let one = std::env::var("ORACLE_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    let done = AtomicU64::new(0);
    let next = AtomicU64::new(0);
    let base = rng.next();
    let sum = Mutex::new((Outcome::default(), Vec::<String>::new()));
    // Each class of violation, (a) to (f), is reduced once: a known
    // defect found again and again must not spend the run reducing it.
    let reduced = Mutex::new(HashSet::<String>::new());
    let backends = [Backend::Exec, Backend::Relay, Backend::Simulator];
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let (seed, backend, ops) = match one {
                    Some(seed) => {
                        if k > 0 {
                            return;
                        }
                        (
                            seed,
                            backends[(seed % 3) as usize],
                            total.min(PLAN_OPS * 50),
                        )
                    }
                    None => {
                        if done.fetch_add(PLAN_OPS, Ordering::Relaxed) >= total {
                            return;
                        }
                        let seed = base.wrapping_add(k * 3 + k % 3);
                        (seed, backends[(seed % 3) as usize], PLAN_OPS)
                    }
                };
                let plan = generate(&mut Rng::new(seed), backend, ops as usize);
                let o = play(&plan);
                println!("{}", figures(Some(seed), &o));
                if let Some(v) = o.violations.first() {
                    let class = v.get(..3).unwrap_or("").to_string();
                    let budget = if reduced.lock().unwrap().insert(class) {
                        Duration::from_secs(120)
                    } else {
                        Duration::ZERO
                    };
                    report(seed, &plan, &o, budget);
                }
                let mut g = sum.lock().unwrap();
                g.0.add(&o);
                for v in &o.violations {
                    g.1.push(format!("seed {seed} ({backend:?}): {v}"));
                }
            });
        }
    });
    let (o, notes) = sum.into_inner().unwrap();
    println!("{}", figures(one, &o));
    st.tried = o.ops;
    st.wrong = o.violations.len() as u64;
    for n in notes {
        st.evidence(n);
    }
    st.fig("ops", o.ops);
    st.fig("faults", o.faults);
    st.fig("restarts", o.restarts);
    st.fig("replays", o.replays);
    st.fig("serial", o.serial);
    st.fig("busy", o.busy);
    st.fig("not_taken", o.not_taken);
    st.fig("withdrawn", o.withdrawn);
    st.fig("slow_disk", o.slowed);
    st.fig("unproven", o.unproven);
    st.fig("violations", o.violations.len());
    st.summary = format!(
        "oracle.ops={} oracle.faults={} oracle.violations={} ({} restarts, {} replays, {} serial, \
         {} busy, {} not taken, {} withdrawn, {} slow disk, {} unproven)",
        o.ops,
        o.faults,
        o.violations.len(),
        o.restarts,
        o.replays,
        o.serial,
        o.busy,
        o.not_taken,
        o.withdrawn,
        o.slowed,
        o.unproven
    );
    st
}
