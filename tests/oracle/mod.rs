//! The ledger oracle (issue 20): registers play generated sequences of
//! operations and faults against the real `concertd`, whose backends keep
//! the truth, and every answer is proved against the money.
//!
//! Backends that keep a ledger (ledger.rs): a payment program written by
//! the harness (exec.rs), a fake upstream V3 terminal over TCP for the
//! relay (upstream.rs), and the simulator, whose truth is what the
//! harness knows it decides (its amount table, the plans armed with
//! `concertctl next`): the weakest of the three.
//!
//! Identity, how a backend's record is tied to the request it served:
//! - the payment program writes CONCERT_ID and CONCERT_FRAME in each
//!   ledger line; the entry belongs to the request whose journal `begun`
//!   record has that id, and only if the frame is the bytes that request
//!   sent (every generated request differs from every other unless it is
//!   a retry: unique CF, or the step's own id in it; constant and absent
//!   CF sales differ by the id concertd gave them, which the answer's ID
//!   echoes with `answer-extensions payxpert`);
//! - the fake upstream knows neither ids nor IM: its entries belong to
//!   the request being played when they arrived (the registers play one
//!   step at a time, the next only once the journal ended the previous
//!   transaction), and again only if the frame is that request's (IM
//!   removed, as the relay sends it);
//! - on the serial line (line.rs), a V2 E+ request is journaled and
//!   handed to the backend as the V3 request it means (concertd.8 "V2
//!   request"): the harness writes that V3 request itself and ties the
//!   records to it as above; a V2 reply's result 0 or 7 is read against
//!   the journal's answer for that transaction (V2 does not tell a
//!   refusal from an unknown outcome). The serial register's view is
//!   its ACK: a NAK, or no ACK within its 1 s patience, is "not taken",
//!   and such a request is never to be charged;
//! - the journal masks card-like digits (a `#` for a digit): frames are
//!   compared with `#` standing for any digit (journal::same_masked);
//! - a second register (register 07, a CF of its own) that fires while
//!   a step's transaction is held at the backend must get the busy
//!   answer and begin nothing: any begun record for its request, or a
//!   ledger entry no request of the run began, is a violation. The step
//!   runs with a transaction-timeout of 60 s (reloaded for it, undone
//!   after), so that its transaction is still held when the second
//!   request goes however late the harness is scheduled; should the
//!   journal show it ended before the second request went, there was
//!   nothing to be busy with: (h) does not apply (`busy_na`). Either way
//!   a second request that began a transaction is judged as one of its
//!   own (an observation after the step's, its ledger entries tied by
//!   its transaction id or, upstream, by its CF);
//! - no verdict rests on the harness's clock: a register's silence is
//!   proved by a look at the line after its patience, the end of a
//!   session by the journal's `delivered`/`undelivered`, a connection
//!   given up on by concertd's own "closed" log line, a gate's release
//!   by a line that waits in the FIFO for the program;
//! - a retry (a request sent again byte for byte, `retry-window` on)
//!   that got no transaction of its own is backed by the charge of the
//!   request it repeats, and by nothing else.
//!
//! An approval that cannot be tied this way to exactly one performed
//! entry is a violation; where the truth cannot be tied to one request
//! only an unknown outcome (AF07) is allowed.
//!
//! The invariants are in check.rs; shrink.rs reduces a failing sequence.
//! Entry points: `play` (one plan), `generated` (a seeded run, reduced
//! and printed on a violation), `scenario` plans for the seed tests.
//! `ORACLE_SEED=` repeats a generated run, `ORACLE_OPS=` sets its length.

pub mod check;
pub mod exec;
pub mod journal;
pub mod ledger;
pub mod line;
pub mod model;
pub mod rng;
pub mod run;
pub mod shrink;
pub mod slow;
pub mod upstream;

#[cfg(test)]
mod tests;

use model::{Backend, Plan};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct Outcome {
    pub ops: u64,
    pub faults: u64,
    pub restarts: u64,
    /// Replays backed by the request they repeat.
    pub replays: u64,
    /// New sales with a constant CF that got an earlier sale's answer:
    /// the man page's warning, holding.
    pub warning_held: u64,
    /// Steps on the serial line.
    pub serial: u64,
    /// Second registers answered busy (NAKed on the serial line).
    pub busy: u64,
    /// Serial requests the register counted as not taken (NAK, no ACK
    /// within 1 s), and of those, withdrawn in the journal.
    pub not_taken: u64,
    pub withdrawn: u64,
    /// Steps run with the disk slowed by strace.
    pub slowed: u64,
    /// Retries after a restart that could not be proved the same request
    /// (masked CF): journaled unknown, the backend never asked.
    pub unproven: u64,
    /// Second registers that found the step's transaction already ended
    /// in the journal: (h) not applicable, judged as ordinary requests.
    pub busy_na: u64,
    /// Serial ACKs and NAKs the register found only at a look after its
    /// patience: the harness scheduled late (a harness artefact, taken as
    /// a register takes what is on its line), not a violation.
    pub late_looks: u64,
    pub violations: Vec<String>,
    pub secs: f64,
}

impl Outcome {
    /// Adds a run's figures to a sum.
    pub fn add(&mut self, o: &Outcome) {
        self.ops += o.ops;
        self.faults += o.faults;
        self.restarts += o.restarts;
        self.replays += o.replays;
        self.warning_held += o.warning_held;
        self.serial += o.serial;
        self.busy += o.busy;
        self.not_taken += o.not_taken;
        self.withdrawn += o.withdrawn;
        self.slowed += o.slowed;
        self.unproven += o.unproven;
        self.busy_na += o.busy_na;
        self.late_looks += o.late_looks;
        self.violations.extend(o.violations.iter().cloned());
    }
}

/// Plays a plan on a fresh daemon and judges it.
pub fn play(plan: &Plan) -> Outcome {
    let t0 = Instant::now();
    let mut rig = run::Rig::new(plan);
    let trace = std::env::var_os("ORACLE_TRACE").is_some();
    for s in &plan.steps {
        let from = rig.obs.len();
        rig.step(s);
        // The step's own observation, and a second register's that began
        // a transaction.
        for i in from..rig.obs.len() {
            check::step(&mut rig, i);
            if trace {
                let o = &rig.obs[i];
                println!(
                    "oracle: {} tx={:?} entries={:?} -> {}",
                    o.step,
                    o.tx,
                    o.entries,
                    String::from_utf8_lossy(&o.answer)
                );
            }
        }
    }
    check::at_end(&mut rig);
    Outcome {
        ops: plan.steps.len() as u64,
        faults: rig.faults,
        restarts: rig.restarts,
        replays: rig.replays_backed,
        warning_held: rig.warning_held,
        serial: rig.serial_steps,
        busy: rig.busy_refused,
        not_taken: rig.not_taken,
        withdrawn: rig.withdrawn,
        slowed: rig.slowed,
        unproven: rig.unproven,
        busy_na: rig.busy_na,
        late_looks: rig.late_looks(),
        violations: rig.violations.clone(),
        secs: t0.elapsed().as_secs_f64(),
    }
}

pub fn figures(seed: Option<u64>, o: &Outcome) -> String {
    format!(
        "{}oracle.ops={} oracle.faults={} oracle.violations={} oracle.restarts={} oracle.replays={} \
         oracle.serial={} oracle.busy={} oracle.not_taken={} oracle.withdrawn={} oracle.slow_disk={} \
         oracle.unproven={} oracle.busy_na={} oracle.late_looks={} ({:.1} s)",
        seed.map(|s| format!("oracle.seed={s} ")).unwrap_or_default(),
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
        o.unproven,
        o.busy_na,
        o.late_looks,
        o.secs
    )
}

/// A seeded run of `ops` operations on one backend; on a violation, the
/// shortest sequence found within `shrink_budget` is printed.
pub fn generated(
    seed: u64,
    backend: Backend,
    ops: usize,
    serial: Option<bool>,
    shrink_budget: Duration,
) -> Outcome {
    let mut rng = rng::Rng::new(seed);
    let plan = model::generate_on(&mut rng, backend, ops, serial);
    let o = play(&plan);
    println!("{}", figures(Some(seed), &o));
    if !o.violations.is_empty() {
        report(seed, &plan, &o, shrink_budget);
    }
    o
}

pub fn report(seed: u64, plan: &Plan, o: &Outcome, budget: Duration) {
    for v in &o.violations {
        println!("oracle: VIOLATION {v}");
    }
    // The class of the first violation, (a) to (f), must remain.
    let class = o.violations[0].get(..3).unwrap_or("").to_string();
    let small = shrink::shrink(plan, budget, &|p| {
        play(p).violations.iter().any(|v| v.starts_with(&class))
    });
    let again = play(&small);
    println!(
        "oracle: seed {seed} ({:?}): reduced from {} to {} steps (ORACLE_SEED={seed} ORACLE_OPS={} repeats the run):\n{small}",
        plan.backend,
        plan.steps.len(),
        small.steps.len(),
        plan.steps.len()
    );
    for v in &again.violations {
        println!("oracle:   reduced: {v}");
    }
}

/// The seed from ORACLE_SEED, else `default`.
pub fn seed_or(default: u64) -> u64 {
    std::env::var("ORACLE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
