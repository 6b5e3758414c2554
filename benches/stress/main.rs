//! `make stress`: the load and fault suite (issue 7, item 3). Not part of
//! `make test`; a release build of the real `concertd`, driven from outside
//! the way registers and crashes drive it:
//!
//! 1. kill -9 at random points of 100 debits, restarts on the same journal,
//!    and after each restart the journal and `CD=T` checked against each
//!    other and against what the client was told;
//! 2. 512 concurrent debits while one runs: every one a well-formed busy
//!    answer, the running one approved;
//! 3. 300 idle connections held open while a real debit gets its answer;
//! 4. garbage and valid frames mixed on 16 connections at a time for 60 s:
//!    the daemon stays up, answers, and its memory stays flat;
//! 5. noise bursts on a serial line (a pty pair) between V2 E+ sessions;
//! 6. floods: payment programs printing without end (standard output
//!    lines, standard error without a newline or in lines, 32 MB of keys
//!    before the outcome) and a relay upstream streaming bytes without end,
//!    concertd's RSS sampled while they run: each ends AF07, and
//!    `stress.peak_rss_mb` is the most any stage took.
//! 7. 1,500 debits with a 24 h retry window and a 16K journal-size:
//!    rotations follow the new records, not the carried ones.
//! 8. the ledger oracle (tests/oracle): 100,000 generated operations with
//!    faults on the simulator, a payment program and a relay, every answer
//!    proved against what the backends really did (`ORACLE_OPS`,
//!    `ORACLE_SEED`, `ORACLE_THREADS`).
//!
//! It prints what each stage tried and lost, a summary table, and lines
//! `stress.<name>=<value>`, ending with `stress.tried=N`,
//! `stress.wrong=W` and `stress.lost=M`; it exits 1 when something was
//! lost or an answer was wrong. A wrong answer disagrees with what the
//! backend (the simulator, whose outcome follows from the amount) did: an
//! approval for a refused amount, another amount, another outcome.
//!
//! Environment: `STRESS_SEED` repeats a run, `STRESS_STAGES` (such as
//! `1,8`) runs only those stages, `STRESS_KILLS` (100),
//! `STRESS_GARBAGE_SECS` (60) and `STRESS_SERIAL_ROUNDS` (100) shorten one.
//!
//! One file per stage; `daemon.rs` starts concertd through the harness the
//! integration tests use (tests/util.rs).

use crate::busy::stage_busy;
use crate::flood::stage_flood;
use crate::garbage::stage_garbage;
use crate::idle::stage_idle;
use crate::kill::stage_kill;
use crate::ledger::stage_ledger;
use crate::report::Stage;
use crate::rng::Rng;
use crate::rotation::stage_rotation;
use crate::serial::stage_serial;
// One seeded source for every stage and the oracle.
use oracle::rng;
use std::fmt::Write as _;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[path = "../../tests/util.rs"]
#[allow(dead_code)]
mod util;

mod busy;
mod daemon;
mod flood;
mod garbage;
mod idle;
mod journal;
mod kill;
mod ledger;
#[path = "../../tests/oracle/mod.rs"]
#[allow(dead_code)]
mod oracle;
mod report;
mod rotation;
mod serial;
mod tcp;

use crate::util::CONCERTD;

fn run_stage(n: usize, f: impl FnOnce() -> Stage, key: &'static str, title: &'static str) -> Stage {
    // STRESS_STAGES=1,8 runs only those stages.
    if let Ok(only) = std::env::var("STRESS_STAGES") {
        if !only.split(',').any(|s| s.trim() == n.to_string()) {
            let mut s = Stage::new(key, title);
            s.summary = "skipped (STRESS_STAGES)".into();
            return s;
        }
    }
    println!("\n== stage {n}: {title}");
    let t = Instant::now();
    let mut st = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(s) => s,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let mut s = Stage::new(key, title);
            s.lose(format!("stage aborted: {msg}"));
            s.summary = "aborted".into();
            s
        }
    };
    st.secs = t.elapsed().as_secs_f64();
    println!(
        "   tried {}, lost {}, {:.1} s: {}",
        st.tried, st.lost, st.secs, st.summary
    );
    for note in &st.notes {
        println!("   ! {note}");
    }
    st
}

fn main() {
    let t0 = Instant::now();
    let seed = std::env::var("STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            now.as_nanos() as u64 ^ u64::from(std::process::id())
        });
    println!("stress: concertd {CONCERTD}");
    println!("stress: seed {seed} (STRESS_SEED={seed} repeats this run)");
    let root = std::env::temp_dir().join(format!("concertd-stress-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let mut rng = Rng::new(seed);
    let (r1, r4, r5, r8) = (rng.fork(), rng.fork(), rng.fork(), rng.fork());
    let stages = vec![
        run_stage(
            1,
            || stage_kill(r1, &root),
            "kill",
            "kill -9 at random points",
        ),
        run_stage(2, || stage_busy(&root), "busy", "512 concurrent clients"),
        run_stage(3, || stage_idle(&root), "idle", "300 idle connections"),
        run_stage(
            4,
            || stage_garbage(r4, &root),
            "garbage",
            "garbage and valid frames",
        ),
        run_stage(
            5,
            || stage_serial(r5, &root),
            "serial",
            "serial noise between sessions",
        ),
        run_stage(
            6,
            || stage_flood(&root),
            "flood",
            "floods from exec and a relay upstream",
        ),
        run_stage(
            7,
            || stage_rotation(&root),
            "rotation",
            "rotation with a 24 h retry window",
        ),
        run_stage(8, || stage_ledger(r8), "oracle", "ledger oracle"),
    ];
    let tried: u64 = stages.iter().map(|s| s.tried).sum();
    let lost: u64 = stages.iter().map(|s| s.lost).sum();
    let wrong: u64 = stages.iter().map(|s| s.wrong).sum();
    let mut table = String::new();
    let _ = writeln!(
        table,
        "\n{:<3} {:<52} {:>7} {:>5} {:>7}",
        "#", "stage", "tried", "lost", "time s"
    );
    for (i, s) in stages.iter().enumerate() {
        let _ = writeln!(
            table,
            "{:<3} {:<52} {:>7} {:>5} {:>7.1}",
            i + 1,
            s.title,
            s.tried,
            s.lost,
            s.secs
        );
        let _ = writeln!(table, "    {}", s.summary);
    }
    let _ = writeln!(
        table,
        "{:<3} {:<52} {:>7} {:>5} {:>7.1}",
        "",
        "total",
        tried,
        lost,
        t0.elapsed().as_secs_f64()
    );
    print!("{table}");
    println!();
    println!("stress.seed={seed}");
    for s in &stages {
        for (k, v) in &s.figures {
            println!("stress.{}.{k}={v}", s.key);
        }
        println!("stress.{}.seconds={:.1}", s.key, s.secs);
        println!("stress.{}.tried={}", s.key, s.tried);
        println!("stress.{}.lost={}", s.key, s.lost);
        println!("stress.{}.wrong={}", s.key, s.wrong);
    }
    // The most memory concertd took in any stage that measured it.
    let peak_kb = stages
        .iter()
        .flat_map(|s| &s.figures)
        .filter(|(k, _)| k == "rss_peak_kb")
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    println!("stress.peak_rss_mb={:.1}", peak_kb as f64 / 1024.0);
    println!("stress.seconds={:.1}", t0.elapsed().as_secs_f64());
    println!("stress.tried={tried}");
    println!("stress.wrong={wrong}");
    println!("stress.lost={lost}");
    if lost == 0 && wrong == 0 {
        let _ = std::fs::remove_dir_all(&root);
    } else {
        eprintln!(
            "stress: journals and configurations kept in {}",
            root.display()
        );
        std::process::exit(1);
    }
}
