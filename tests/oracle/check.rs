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
//! (f) nothing answered is missing from the journal after a restart;
//! (g) a retry after a restart that the journal keeps masked (not
//!     provably the same request) is neither replayed nor run: unknown,
//!     the backend never asked;
//! (h) a second register's transaction while one runs gets the busy
//!     answer at once (a NAK on the serial line), never runs;
//! (n) on the serial line, a request the register counted as not taken
//!     (NAKed, or no ACK within its 1 s) is never charged, and one NAKed
//!     never starts; one ACKed is never withdrawn.

use super::journal::{same_masked, JLine};
use super::ledger::{Entry, Target};
use super::line::Took;
use super::model::{Backend, Op, Via};
use super::run::{Obs, Rig};
use concert::wire::tlv::Frame;
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
pub fn expected_frame(backend: Backend, req: &str) -> String {
    if backend != Backend::Relay {
        return req.to_string();
    }
    match Frame::decode(req.as_bytes()) {
        Ok(f) => String::from_utf8_lossy(&f.without(concert::wire::tlv::Tag(*b"IM")).encode())
            .into_owned(),
        Err(_) => req.to_string(),
    }
}

/// The journal's records of transaction `id`.
fn records(rig: &mut Rig, id: Option<u64>) -> Vec<JLine> {
    let Some(id) = id else { return Vec::new() };
    rig.tail.refresh();
    rig.tail
        .lines
        .iter()
        .filter(|l| l.id == id)
        .cloned()
        .collect()
}

/// Two element lists alike, values compared as the journal masks them.
fn same_elements(journal: &[(String, String)], real: &[(String, String)]) -> bool {
    journal.len() == real.len()
        && journal
            .iter()
            .zip(real)
            .all(|((jt, jv), (rt, rv))| jt == rt && same_masked(jv, rv))
}

/// A V2 reply read as the elements it stands for: result 0 is AE=10,
/// any other AE=01 with the journal's AF (V2 does not tell a refusal
/// from an unknown outcome: the journal says which the terminal meant).
fn v2_elements(
    rig: &mut Rig,
    o: &Obs,
    name: &str,
    rels: &[(String, String)],
) -> Option<Vec<(String, String)>> {
    let a = &o.answer;
    let bad = |why: &str| {
        format!(
            "(e) {name}: V2 reply {why}: {:?}",
            String::from_utf8_lossy(a)
        )
    };
    if a.len() != 25 && a.len() != 80 {
        violate(rig, bad("of a length other than 25 or 80"));
        return None;
    }
    let amount = std::str::from_utf8(&a[3..11])
        .ok()
        .filter(|v| v.bytes().all(|b| b.is_ascii_digit()));
    let (Some(amount), true) = (amount, matches!(a[2], b'0' | b'7')) else {
        violate(rig, bad("without a result 0 or 7 and an amount"));
        return None;
    };
    let journal = records(rig, o.tx)
        .into_iter()
        .find(|l| l.event == "ended")
        .and_then(|l| decode(l.frame.as_bytes()));
    let jae = journal.as_ref().and_then(|j| tag(j, "AE"));
    let ae = if a[2] == b'0' { "10" } else { "01" };
    if jae.as_deref().is_some_and(|j| j != ae) {
        violate(
            rig,
            bad(&format!("disagrees with the journal's answer (AE={jae:?})")),
        );
    }
    let mut els = vec![
        (
            "CA".to_string(),
            String::from_utf8_lossy(&a[0..2]).into_owned(),
        ),
        ("CB".to_string(), amount.trim_start_matches('0').to_string()),
        ("CD".to_string(), tag(rels, "CD").unwrap_or_default()),
        ("AE".to_string(), ae.to_string()),
    ];
    if let Some(af) = journal.as_ref().and_then(|j| tag(j, "AF")) {
        els.push(("AF".to_string(), af));
    }
    Some(els)
}

/// (h) The second register of a busy step. When the step's transaction
/// had ended (in the journal) before the second request went, there was
/// nothing to be busy with: (h) does not apply, and the second request,
/// if it began a transaction, is judged as an ordinary one (its own
/// observation, after the step's).
fn busy(rig: &mut Rig, o: &Obs, name: &str) {
    let Some(b) = &o.busy else { return };
    if b.first_ended {
        rig.busy_na += 1;
        return;
    }
    let who = format!("{name}: a second register's debit by {:?}", b.via);
    if let Some(tx) = b.tx {
        violate(
            rig,
            format!("(h) {who} while the transaction ran began one of its own, tx {tx} (queued, not refused busy)"),
        );
    }
    if b.via == Via::Tcp {
        let els = decode(&b.answer);
        let ok = els.as_ref().is_some_and(|e| {
            tag(e, "AE").as_deref() == Some("01")
                && tag(e, "AF").is_none()
                && crate::util::elements(b.req.as_bytes())
                    .iter()
                    .all(|r| e.contains(r))
        });
        if ok {
            rig.busy_refused += 1;
        } else {
            violate(
                rig,
                format!(
                    "(h) {who} got {:?}, not the busy answer (its request's elements, AE=01, no AF)",
                    String::from_utf8_lossy(&b.answer)
                ),
            );
        }
    } else if b.took == Some(Took::Nak) {
        rig.busy_refused += 1;
    } else {
        violate(rig, format!("(h) {who} was {:?}, not NAKed busy", b.took));
    }
}

/// (n) The serial register's view of its session against the journal
/// and the ledger. True when the register counted it not taken (there
/// is then no answer to judge).
fn taken(rig: &mut Rig, o: &Obs, name: &str, ledger: &[Entry]) -> bool {
    let recs = records(rig, o.tx);
    let withdrawn = recs.iter().any(|l| l.event == "withdrawn");
    let ended = recs.iter().find(|l| l.event == "ended").cloned();
    match o.took {
        None | Some(Took::Ack) => {
            if withdrawn {
                violate(
                    rig,
                    format!(
                        "(n) {name}: {} yet journaled withdrawn",
                        if o.took.is_some() { "ACKed" } else { "on TCP" }
                    ),
                );
            }
            false
        }
        Some(t) => {
            if withdrawn {
                rig.withdrawn += 1;
            }
            let done = performed(ledger, o);
            if !done.is_empty() {
                violate(
                    rig,
                    format!(
                        "(n) {name}: the register counted it not taken ({t:?}), the backend charged {}",
                        done[0].charged
                    ),
                );
            }
            if let (Took::Nak, Some(e)) = (t, ended) {
                violate(
                    rig,
                    format!(
                        "(n) {name}: NAKed, yet it started (tx {} ended {})",
                        e.id, e.verdict
                    ),
                );
            }
            true
        }
    }
}

/// (g) A retry after a restart of a request the journal keeps masked,
/// whose earlier attempts all predate the restart and were approved:
/// not provably the same request, so neither replayed nor run.
fn unproven(
    rig: &mut Rig,
    i: usize,
    o: &Obs,
    name: &str,
    req: &str,
    els: Option<&[(String, String)]>,
) {
    if !rig.plan.window || o.step.via == Via::SerialV2 {
        return;
    }
    let cf = tag(&crate::util::elements(req.as_bytes()), "CF").unwrap_or_default();
    // What the journal masks: the harness's card-like CF.
    if !cf.bytes().filter(u8::is_ascii_digit).count().ge(&13) {
        return;
    }
    let earlier: Vec<Obs> = rig.obs[..i]
        .iter()
        .filter(|p| p.tx.is_some() && p.req.as_deref() == Some(req))
        .cloned()
        .collect();
    let Some(last) = earlier.last() else { return };
    // A register that sent one CF with two amounts broke the contract:
    // concertd.8 then stops replaying for it, and a retry runs anew.
    let reg = tag(&crate::util::elements(req.as_bytes()), "CA");
    let broke = rig.obs.iter().any(|p| {
        p.req.as_deref().is_some_and(|r| {
            let e = crate::util::elements(r.as_bytes());
            tag(&e, "CA") == reg && tag(&e, "CF").as_deref() == Some(super::model::CONSTANT_CF)
        })
    });
    if broke {
        return;
    }
    if earlier
        .iter()
        .any(|p| p.restarts_before >= o.restarts_before)
    {
        return;
    }
    let recs = records(rig, last.tx);
    let approved = recs
        .iter()
        .any(|l| l.event == "ended" && l.verdict == "approved")
        && !recs.iter().any(|l| l.event == "resolved");
    if !approved {
        return;
    }
    let ae = els.and_then(|e| tag(e, "AE"));
    if ae.as_deref() == Some("10") {
        violate(
            rig,
            format!(
                "(g) {name}: a retry the journal keeps masked, of tx {:?} from before a restart, was replayed approved: not provably the same request",
                last.tx
            ),
        );
    }
    // The simulator's ledger is the harness's model of its decisions,
    // made for every transaction: it cannot say the backend was not asked.
    if !o.entries.is_empty() && rig.plan.backend != Backend::Simulator {
        violate(
            rig,
            format!(
                "(g) {name}: a retry not provably the same as tx {:?} (masked, before a restart) was run on the backend",
                last.tx
            ),
        );
    }
    let unknown = records(rig, o.tx)
        .iter()
        .any(|l| l.event == "ended" && l.verdict == "unknown");
    let unasked = o.entries.is_empty() || rig.plan.backend == Backend::Simulator;
    if o.tx.is_some() && unknown && unasked {
        rig.unproven += 1;
    }
}

/// Checks observation `i`, just played.
pub fn step(rig: &mut Rig, i: usize) {
    let o = rig.obs[i].clone();
    let Some(req) = o.req.clone() else { return };
    let name = format!("{}", o.step);
    let rels = crate::util::elements(req.as_bytes());
    let cd = tag(&rels, "CD").unwrap_or_default();
    let backend = rig.plan.backend;
    busy(rig, &o, &name);
    if let Some(e) = &o.line_error {
        violate(
            rig,
            format!("(e) {name}: the answer's session on the serial line broke: {e}"),
        );
    }
    let ledger = rig.ledger().to_vec();
    if taken(rig, &o, &name, &ledger) {
        return check_sums(rig);
    }
    // (e)
    let els = if o.answer.is_empty() {
        None
    } else if o.step.via == Via::SerialV2 {
        match v2_elements(rig, &o, &name, &rels) {
            Some(e) => Some(e),
            None => return check_sums(rig),
        }
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
    unproven(rig, i, &o, &name, &req, els.as_deref());
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
            approval(rig, i, &o, &name, &els, &done, &ledger, backend, &req);
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
    i: usize,
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
            if !same_masked(&e.frame, &want) {
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
            let source = rig.obs[..i]
                .iter()
                .rev()
                .find(|p| {
                    p.tx.is_some()
                        && p.req.as_deref() == Some(req)
                        && matches!(p.took, None | Some(Took::Ack))
                })
                .cloned();
            let backed = o.tx.is_none()
                && rig.plan.window
                && source.as_ref().is_some_and(|p| {
                    performed(ledger, p).len() == 1
                        && decode(&p.answer).is_none_or(|a| {
                            // The same answer again; or, for a request first
                            // answered unknown (AF07) and resolved since, the
                            // resolution, which names that very transaction.
                            tag(&a, "AC") == tag(els, "AC")
                                || (tag(&a, "AF").as_deref() == Some("07")
                                    && tag(els, "ID") == p.tx.map(|t| t.to_string()))
                        })
                });
            if !backed {
                let other = rig.obs[..i]
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
    rig.tail.refresh();
    // A withdrawn request never became a register's last payment.
    let withdrawn: std::collections::HashSet<u64> = rig
        .tail
        .lines
        .iter()
        .filter(|l| l.event == "withdrawn")
        .map(|l| l.id)
        .collect();
    let target = rig.obs[..i]
        .iter()
        .rev()
        .find(|p| {
            p.tx.is_some_and(|t| !withdrawn.contains(&t))
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
    let same_cf = match (tag(els, "CF"), tag(&treq, "CF")) {
        (Some(a), Some(b)) => same_masked(&a, &b),
        (a, b) => a == b,
    };
    if tag(els, "CD") != tag(&treq, "CD") || !same_cf {
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
        if !journaled.as_ref().is_some_and(|j| same_elements(j, &a)) {
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
                if !same_masked(&e.frame, &want) {
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
