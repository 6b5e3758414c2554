//! The invariants of issue 20, judged against the backends' ledgers and
//! the journal, never against concertd's own word:
//! (a) an approval is backed by exactly one real charge or refund for
//!     that very request (a replay by the charge of the request it
//!     repeats byte for byte);
//! (b) a real charge is never answered as declined (unknown, AF07, is
//!     the only other answer allowed);
//! (c) a later resolution (a status answer, a `resolved` record) agrees
//!     with the ledger;
//! (d) refunds and cancellations of a debit never exceed what it charged;
//! (e) every answer is a valid frame that echoes the request;
//! (f) nothing answered is missing from the journal after a restart.

use super::ledger::{Entry, Target};
use super::model::{Backend, Op};
use super::run::{Obs, Rig};
use concert::tlv::Frame;
use std::collections::HashMap;

fn violate(rig: &mut Rig, what: String) {
    if !rig.violations.contains(&what) {
        rig.violations.push(what);
    }
}

/// The answer's elements, a CR LF tail (the crlf quirk) aside.
fn decode(answer: &[u8]) -> Option<Vec<(String, String)>> {
    let mut a = answer;
    while let Some(rest) = a.strip_suffix(b"\n").or_else(|| a.strip_suffix(b"\r")) {
        a = rest;
    }
    let f = Frame::decode(a).ok()?;
    Some(
        f.elements()
            .iter()
            .map(|e| {
                (
                    e.tag.to_string(),
                    String::from_utf8_lossy(&e.value).into_owned(),
                )
            })
            .collect(),
    )
}

fn tag(els: &[(String, String)], t: &str) -> Option<String> {
    els.iter().find(|(k, _)| k == t).map(|(_, v)| v.clone())
}

fn is_payment(cd: &str) -> bool {
    matches!(cd, "0" | "1" | "2" | "7")
}

/// The performed entries of a step.
fn performed<'a>(ledger: &'a [Entry], o: &Obs) -> Vec<&'a Entry> {
    o.entries
        .iter()
        .filter_map(|&i| ledger.get(i))
        .filter(|e| e.performed)
        .collect()
}

/// The request as the backend must get it: a relay's upstream gets no IM.
fn expected_frame(backend: Backend, req: &str) -> String {
    if backend != Backend::Relay {
        return req.to_string();
    }
    match Frame::decode(req.as_bytes()) {
        Ok(f) => {
            String::from_utf8_lossy(&f.without(concert::tlv::Tag(*b"IM")).encode()).into_owned()
        }
        Err(_) => req.to_string(),
    }
}

/// Checks the step just played.
pub fn step(rig: &mut Rig) {
    let i = rig.obs.len() - 1;
    let o = rig.obs[i].clone();
    let Some(req) = o.req.clone() else { return };
    let name = format!("{}", o.step);
    let rels = crate::util::elements(req.as_bytes());
    let cd = tag(&rels, "CD").unwrap_or_default();
    let backend = rig.plan.backend;
    // (e)
    let els = if o.answer.is_empty() {
        None
    } else {
        match decode(&o.answer) {
            Some(e) => Some(e),
            None => {
                violate(
                    rig,
                    format!(
                        "(e) {name}: answer is not a frame: {:?}",
                        String::from_utf8_lossy(&o.answer)
                    ),
                );
                return;
            }
        }
    };
    let Some(els) = els else {
        return check_sums(rig);
    };
    let ae = tag(&els, "AE").unwrap_or_default();
    let af = tag(&els, "AF").unwrap_or_default();
    if ae != "10" && ae != "01" {
        violate(
            rig,
            format!(
                "(e) {name}: answer without a valid AE: {:?}",
                String::from_utf8_lossy(&o.answer)
            ),
        );
    }
    if tag(&els, "CA").map(|v| v.parse::<u8>().ok())
        != tag(&rels, "CA").map(|v| v.parse::<u8>().ok())
    {
        violate(
            rig,
            format!(
                "(e) {name}: answer names another register: {:?}",
                String::from_utf8_lossy(&o.answer)
            ),
        );
    }
    let ledger = rig.ledger().to_vec();
    if is_payment(&cd) {
        if tag(&els, "CD").as_deref() != Some(cd.as_str()) {
            violate(
                rig,
                format!(
                    "(e) {name}: answer with another CD: {:?}",
                    String::from_utf8_lossy(&o.answer)
                ),
            );
        }
        let done = performed(&ledger, &o);
        if ae == "10" && tag(&els, "BA").is_none() {
            approval(rig, &o, &name, &els, &done, &ledger, backend, &req);
        }
        if ae == "01" && af != "07" && !done.is_empty() {
            violate(
                rig,
                format!(
                    "(b) {name}: the backend performed it (charged {}) but the register was told declined AF{af}",
                    done[0].charged
                ),
            );
        }
    } else if cd == "T" {
        status(rig, i, &name, &els, &ledger);
    }
    check_sums(rig);
}

#[allow(clippy::too_many_arguments)]
fn approval(
    rig: &mut Rig,
    o: &Obs,
    name: &str,
    els: &[(String, String)],
    done: &[&Entry],
    ledger: &[Entry],
    backend: Backend,
    req: &str,
) {
    let answer_cb: u64 = tag(els, "CB").and_then(|v| v.parse().ok()).unwrap_or(0);
    match done.len() {
        1 => {
            let e = done[0];
            let want = expected_frame(backend, req);
            if e.frame != want {
                violate(
                    rig,
                    format!(
                        "(a) {name}: approved, but the backend performed another request: {:?}",
                        e.frame
                    ),
                );
            }
            if e.charged != answer_cb {
                violate(
                    rig,
                    format!(
                        "(a) {name}: approved CB={answer_cb}, the backend moved {}",
                        e.charged
                    ),
                );
            }
            if let (Some(id), Some(tx)) = (tag(els, "ID"), o.tx) {
                if id != tx.to_string() {
                    violate(
                        rig,
                        format!("(a) {name}: approved with ID={id}, its transaction is {tx}"),
                    );
                }
            }
        }
        0 => {
            // A replay: backed by the charge of the request it repeats.
            let source = rig.obs[..rig.obs.len() - 1]
                .iter()
                .rev()
                .find(|p| p.tx.is_some() && p.req.as_deref() == Some(req))
                .cloned();
            let backed = o.tx.is_none()
                && rig.plan.window
                && source.as_ref().is_some_and(|p| {
                    performed(ledger, p).len() == 1
                        && decode(&p.answer).is_none_or(|a| tag(&a, "AC") == tag(els, "AC"))
                });
            if !backed {
                let other = rig.obs[..rig.obs.len() - 1]
                    .iter()
                    .rev()
                    .find(|p| {
                        p.req.as_deref() != Some(req)
                            && tag(els, "AC").is_some()
                            && decode(&p.answer).is_some_and(|a| tag(&a, "AC") == tag(els, "AC"))
                    })
                    .map(|p| format!(" (the answer of {})", p.step))
                    .unwrap_or_default();
                violate(
                    rig,
                    format!(
                        "(a) {name}: approved{}, but no backend charge or refund exists for this request{other}",
                        o.tx.map(|t| format!(" as tx {t}")).unwrap_or(" without a transaction".into())
                    ),
                );
            } else if let Some(p) = source {
                rig.replays_backed += 1;
                if !matches!(o.step.op, Op::Retry { .. }) {
                    // A new sale with an old CF: the man page's warning.
                    let _ = p;
                    rig.warning_held += 1;
                }
            }
        }
        n => violate(
            rig,
            format!("(a) {name}: approved once, the backend performed it {n} times"),
        ),
    }
}

/// (c) A status answer is about the register's last payment, and agrees
/// with what the backend did for it.
fn status(rig: &mut Rig, i: usize, name: &str, els: &[(String, String)], ledger: &[Entry]) {
    let reg = tag(els, "CA").and_then(|v| v.parse::<u8>().ok());
    let target = rig.obs[..i]
        .iter()
        .rev()
        .find(|p| {
            p.tx.is_some()
                && p.req
                    .as_ref()
                    .map(|r| crate::util::elements(r.as_bytes()))
                    .is_some_and(|r| tag(&r, "CA").and_then(|v| v.parse::<u8>().ok()) == reg)
        })
        .cloned();
    let ae = tag(els, "AE").unwrap_or_default();
    let af = tag(els, "AF").unwrap_or_default();
    let Some(t) = target else {
        if ae == "10" {
            violate(
                rig,
                format!("(c) {name}: status approved for a register that has no payment"),
            );
        }
        return;
    };
    let treq = crate::util::elements(t.req.as_deref().unwrap_or("").as_bytes());
    if tag(els, "CD").as_deref() == Some("T") {
        // Still running (AF07 with CD=T): nothing to judge.
        return;
    }
    if tag(els, "CD") != tag(&treq, "CD") || tag(els, "CF") != tag(&treq, "CF") {
        violate(
            rig,
            format!(
                "(c) {name}: status answered about another transaction than {} (tx {:?})",
                t.step, t.tx
            ),
        );
        return;
    }
    let done = performed(ledger, &t);
    if ae == "10" && done.len() != 1 {
        violate(
            rig,
            format!(
                "(c) {name}: status says {} (tx {:?}) approved, the backend performed it {} times",
                t.step,
                t.tx,
                done.len()
            ),
        );
    }
    if ae == "10" {
        if let (Some(id), Some(tx)) = (tag(els, "ID"), t.tx) {
            if id != tx.to_string() {
                violate(
                    rig,
                    format!("(c) {name}: status approval with ID={id} for tx {tx}"),
                );
            }
        }
    }
    if ae == "01" && af != "07" && !done.is_empty() {
        violate(
            rig,
            format!(
                "(c) {name}: status says {} declined AF{af}, the backend performed it",
                t.step
            ),
        );
    }
}

/// (d) What each debit charged bounds its refunds and cancellation.
fn check_sums(rig: &mut Rig) {
    let ledger = rig.ledger().to_vec();
    let mut back: HashMap<usize, u64> = HashMap::new();
    let by_tx: HashMap<u64, usize> = ledger
        .iter()
        .filter(|e| e.performed && (e.op == "debit" || e.op == "deferred-debit"))
        .filter_map(|e| e.tx.map(|t| (t, e.seq)))
        .collect();
    for e in ledger.iter().filter(|e| e.performed) {
        let debit = match (&e.op[..], &e.of, e.refund_of) {
            ("cancel", Some(Target::Tx(t)), _) => by_tx.get(t).copied(),
            ("cancel", Some(Target::Entry(s)), _) => Some(*s),
            ("credit", _, Some(t)) => by_tx.get(&t).copied(),
            _ => None,
        };
        if let Some(d) = debit {
            *back.entry(d).or_default() += e.charged;
        }
    }
    for (d, sum) in back {
        let charged = ledger[d].charged;
        if sum > charged {
            let what = format!(
                "(d) debit tx {:?} charged {charged}, its refunds and cancellation gave back {sum}",
                ledger[d].tx
            );
            violate(rig, what);
        }
    }
}

/// (f) After a restart, every answer given since the last check is in
/// the journal, as given.
pub fn after_restart(rig: &mut Rig) {
    let lines = rig.journal_all();
    let mut ended: HashMap<u64, String> = HashMap::new();
    for l in lines.iter().filter(|l| l.event == "ended") {
        ended.insert(l.id, l.frame.clone());
    }
    let from = rig.unchecked_from;
    let obs = rig.obs[from..].to_vec();
    for o in obs {
        let (Some(tx), Some(a)) = (o.tx, decode(&o.answer)) else {
            continue;
        };
        let journaled = ended.get(&tx).and_then(|f| decode(f.as_bytes()));
        if journaled.as_ref() != Some(&a) {
            violate(
                rig,
                format!(
                    "(f) {}: answered tx {tx}, the journal after a restart has {:?}",
                    o.step,
                    ended.get(&tx)
                ),
            );
        }
    }
    rig.unchecked_from = rig.obs.len();
}

/// At the end of a run: every backend entry belongs to a request the
/// registers sent, and every resolution agrees with the ledger.
pub fn at_end(rig: &mut Rig) {
    let ledger = rig.ledger().to_vec();
    let backend = rig.plan.backend;
    let owner: HashMap<usize, usize> = rig
        .obs
        .iter()
        .enumerate()
        .flat_map(|(i, o)| o.entries.iter().map(move |&e| (e, i)))
        .collect();
    for e in &ledger {
        match owner.get(&e.seq) {
            None => violate(
                rig,
                format!(
                    "(a) the backend {} ({} {}) for tx {:?}, which no request of the run began",
                    if e.performed { "performed" } else { "declined" },
                    e.op,
                    e.charged,
                    e.tx
                ),
            ),
            Some(&i) => {
                let want = expected_frame(backend, rig.obs[i].req.as_deref().unwrap_or(""));
                if e.frame != want {
                    violate(
                        rig,
                        format!(
                            "(a) {}: the backend got {:?}, the register sent {want:?}",
                            rig.obs[i].step, e.frame
                        ),
                    );
                }
            }
        }
    }
    let lines = rig.journal_all();
    for l in lines.iter().filter(|l| l.event == "resolved") {
        let Some(o) = rig.obs.iter().find(|o| o.tx == Some(l.id)).cloned() else {
            continue;
        };
        let done = performed(&ledger, &o);
        match l.verdict.as_str() {
            "approved" if done.len() != 1 => violate(
                rig,
                format!(
                    "(c) {}: tx {} resolved approved, the backend performed it {} times",
                    o.step,
                    l.id,
                    done.len()
                ),
            ),
            "declined" | "not-done" if !done.is_empty() => violate(
                rig,
                format!(
                    "(c) {}: tx {} resolved {}, the backend performed it",
                    o.step, l.id, l.verdict
                ),
            ),
            _ => {}
        }
    }
    after_restart(rig);
    check_sums(rig);
}
