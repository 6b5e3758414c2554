//! Delta debugging: drops steps (and then faults) while the violation
//! remains, within a time budget, so that a failure is reported as the
//! shortest sequence found.

use super::model::{Fault, Plan, Step};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Steps whose reference (IM, a retry) was dropped go too.
fn closed(steps: Vec<Step>) -> Vec<Step> {
    let mut kept: Vec<Step> = Vec::new();
    let mut ids: HashSet<u32> = HashSet::new();
    for s in steps {
        if s.op.refers().is_none_or(|r| ids.contains(&r)) {
            ids.insert(s.id);
            kept.push(s);
        }
    }
    kept
}

/// The smallest plan found for which `fails` holds.
pub fn shrink(plan: &Plan, budget: Duration, fails: &dyn Fn(&Plan) -> bool) -> Plan {
    let t0 = Instant::now();
    let mut best = plan.clone();
    let mut n = 2usize;
    while best.steps.len() >= 2 && t0.elapsed() < budget {
        let len = best.steps.len();
        let chunk = len.div_ceil(n);
        let mut reduced = false;
        let parts = n;
        for i in 0..parts {
            if t0.elapsed() >= budget {
                break;
            }
            let (a, b) = (i * chunk, ((i + 1) * chunk).min(len));
            if a >= b {
                continue;
            }
            let mut steps = best.steps.clone();
            steps.drain(a..b);
            let steps = closed(steps);
            if steps.len() == len {
                continue;
            }
            let cand = Plan {
                steps,
                ..best.clone()
            };
            if fails(&cand) {
                best = cand;
                n = (n - 1).max(2);
                reduced = true;
                break;
            }
        }
        if !reduced {
            if n >= len {
                break;
            }
            n = (2 * n).min(len);
        }
    }
    for i in 0..best.steps.len() {
        if t0.elapsed() >= budget {
            break;
        }
        if best.steps[i].fault == Fault::None {
            continue;
        }
        let mut cand = best.clone();
        cand.steps[i].fault = Fault::None;
        if fails(&cand) {
            best = cand;
        }
    }
    best
}
