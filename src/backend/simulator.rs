//! The built-in simulated terminal: a cardholder who takes
//! `simulator-delay` to pay, and outcomes chosen by the last two digits of
//! the amount so that integrators can reach every branch of their code;
//! or, on demand, what the [`Stage`] says (an armed plan, a script line, a
//! manual decision, the red key).

use crate::backend::stage::{Begin, Cmd, Stage};
use crate::backend::{Backend, Done, Note, Transaction};
use crate::config::plan::Fate;
use crate::wire::answer::{Af, Outcome};
use crate::wire::currency;
use crate::wire::request::Operation;
use crate::wire::ticket;
use crate::wire::tlv::tags;
use crossbeam_channel::{after, never, select, unbounded, Sender};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Contactless is offered up to 50 units of the currency, as the French
/// 50 EUR contactless limit; above it the card goes in the reader.
const CONTACTLESS_LIMIT: u64 = 50;
const CONTRACT: &str = "1999403";

struct Card {
    masked: &'static str,
    aid: &'static str,
}

static CARDS: &[Card] = &[
    Card {
        masked: "497010######0674",
        aid: "A0000000421010",
    },
    Card {
        masked: "513100######4242",
        aid: "A0000000041010",
    },
    Card {
        masked: "400000######0002",
        aid: "A0000000031010",
    },
];

/// Approved sums since the last telecollection, per currency.
#[derive(Default)]
struct Ledger {
    totals: BTreeMap<u16, (u64, i128)>,
}

pub struct Simulator {
    delay: Duration,
    ledger: Arc<Mutex<Ledger>>,
    rng: Rng,
    /// What the simulator is told to do; it holds the running
    /// transaction's command sender, whose drop (abort) stops its thread.
    stage: Arc<Stage>,
    /// This simulator's claim on the stage: only the latest simulator
    /// built gives it up when dropped.
    owner: u64,
}

/// xorshift64*: enough to vary authorisation numbers and cards.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The table of outcomes by the last two digits of the amount.
pub fn outcome_for(amount: u64, partial_ok: bool) -> Result<Option<u64>, Af> {
    match amount % 100 {
        51 => Err(Af::Refused),
        52 => Err(Af::Forbidden),
        53 => Err(Af::Abandon),
        54 => Err(Af::NotEnded),
        55 => Err(Af::InputTimeout),
        56 => Err(Af::Phone),
        57 if partial_ok => Ok(Some(amount / 2)),
        57 => Err(Af::Refused),
        _ => Ok(None),
    }
}

impl Simulator {
    /// A simulator on a stage of its own, with the amount table only.
    pub fn new(delay: Duration) -> Simulator {
        Simulator::on_stage(delay, Arc::new(Stage::new()))
    }

    /// The simulator a configuration names, on the service's stage: its
    /// script is played.
    pub fn configured(cfg: &crate::config::Config, stage: Arc<Stage>) -> Simulator {
        let mut s = Simulator::on_stage(cfg.simulator_delay, stage);
        s.reload(cfg);
        s
    }

    /// A simulator that takes its orders from `stage`.
    pub fn on_stage(delay: Duration, stage: Arc<Stage>) -> Simulator {
        let (s, ns) = crate::wire::clock::unix_now();
        Simulator {
            delay,
            ledger: Arc::new(Mutex::new(Ledger::default())),
            rng: Rng((s as u64) << 20 ^ u64::from(ns) ^ 0x9e37_79b9_7f4a_7c15),
            owner: stage.adopt(),
            stage,
        }
    }
}

fn card_data(rng: &mut Rng, o: &mut Outcome, amount: u64, cur: u16) {
    let card = &CARDS[(rng.next() % CARDS.len() as u64) as usize];
    let year = crate::wire::clock::now().year % 100 + 3;
    o.auth = Some(format!("{:06}", rng.next() % 1_000_000));
    o.pan = Some(card.masked.to_string());
    o.expiry = Some(format!("{:02}{:02}", year % 100, rng.next() % 12 + 1));
    o.aid = Some(card.aid.to_string());
    let limit = CONTACTLESS_LIMIT * 10u64.pow(u32::from(currency::exponent(cur)));
    let contactless = amount <= limit;
    o.application = Some(if contactless { "00B" } else { "001" }.to_string());
    o.read_mode = Some(if contactless { "2" } else { "1" }.to_string());
    o.contract = Some(CONTRACT.to_string());
}

/// The outcome of a transaction: the amount table's (`fate` none), or the
/// one a plan gives.
fn conclude(
    rng: &mut Rng,
    ledger: &Mutex<Ledger>,
    tx: &Transaction,
    fate: Option<Fate>,
) -> Outcome {
    // `busy` armed after the worker's check, once the transaction had
    // started: too late to refuse it, so the amount table decides.
    let fate = fate.filter(|f| *f != Fate::Busy);
    let declined = match fate {
        Some(Fate::Refuse) => Some(Af::Refused),
        Some(Fate::Forbidden) => Some(Af::Forbidden),
        Some(Fate::Abandon) => Some(Af::Abandon),
        Some(Fate::NotEnded | Fate::Unknown) => Some(Af::NotEnded),
        Some(Fate::Timeout) => Some(Af::InputTimeout),
        Some(Fate::Phone) => Some(Af::Phone),
        None | Some(Fate::Approve | Fate::Partial(_) | Fate::Busy) => None,
    };
    if let Some(af) = declined {
        return Outcome::declined(af);
    }
    match tx.request.op {
        Operation::Print => Simulator::print(tx),
        Operation::Telecollect => telecollect(ledger, tx),
        _ => payment(rng, tx, fate),
    }
}

fn payment(rng: &mut Rng, tx: &Transaction, fate: Option<Fate>) -> Outcome {
    let r = &tx.request;
    let amount = r.amount.unwrap_or(0);
    if r.op == Operation::Cancel {
        let Some(orig) = &tx.original else {
            log::info!(
                "tx {}: no approved debit to cancel for register {:02}",
                tx.id,
                r.register
            );
            return Outcome::declined(Af::Refused);
        };
        if orig.amount != amount || Some(orig.currency) != r.currency {
            log::info!(
                "tx {}: cancellation amount {} does not match debit {} ({})",
                tx.id,
                amount,
                orig.id,
                orig.amount
            );
            return Outcome::declined(Af::Refused);
        }
        let mut o = Outcome::approved();
        o.auth = Some(format!("{:06}", rng.next() % 1_000_000));
        o.pan = orig.outcome.pan.clone();
        o.aid = orig.outcome.aid.clone();
        o.application = orig.outcome.application.clone();
        o.read_mode = orig.outcome.read_mode.clone();
        o.contract = orig.outcome.contract.clone();
        return o;
    }
    let decided = match fate {
        None => outcome_for(amount, r.partial_ok),
        Some(Fate::Partial(p)) if !r.partial_ok => {
            // As a real terminal: without BF=1 it may not charge less.
            log::info!(
                "tx {}: simulator: partial={p} without partial payment (BF=1): refused",
                tx.id
            );
            Err(Af::Refused)
        }
        Some(Fate::Partial(p)) if p >= amount => {
            log::info!(
                "tx {}: simulator: partial={p} is not less than the amount {amount}: approved in full",
                tx.id
            );
            Ok(None)
        }
        Some(Fate::Partial(p)) => Ok(Some(p)),
        Some(_) => Ok(None),
    };
    match decided {
        Err(af) => Outcome::declined(af),
        Ok(partial) => {
            let mut o = Outcome::approved();
            if let Some(p) = partial {
                let width = r.amount_text().map_or(2, str::len);
                o.amount = Some(format!("{p:0width$}"));
            }
            if r.cheque {
                o.application = Some("00C".to_string());
            } else {
                card_data(rng, &mut o, amount, r.currency.unwrap_or(978));
            }
            o
        }
    }
}

impl Simulator {
    fn print(tx: &Transaction) -> Outcome {
        let zt = tx.request.frame.get(tags::ZT).unwrap_or_default();
        match ticket::decode_zt(zt) {
            Some((_, mut doc)) => {
                // The register's document: card numbers masked, and each of
                // its lines escaped and indented, so that none can pass for
                // a log line of ours.
                crate::wire::pan::mask_in_place(&mut doc);
                let text: String = doc.iter().map(|&b| b as char).collect();
                let lines: Vec<String> = text
                    .trim_end()
                    .split('\n')
                    .map(|l| crate::wire::pan::escape_str(l.strip_suffix('\r').unwrap_or(l)))
                    .collect();
                log::info!(
                    "tx {}: print {} bytes:\n    {}",
                    tx.id,
                    doc.len(),
                    lines.join("\n    ")
                );
                Outcome::approved()
            }
            None => {
                log::warn!("tx {}: print buffer is not base64, nothing printed", tx.id);
                Outcome::declined(Af::Format)
            }
        }
    }
}

fn telecollect(ledger: &Mutex<Ledger>, tx: &Transaction) -> Outcome {
    let mut ledger = match ledger.lock() {
        Ok(l) => l,
        Err(p) => p.into_inner(),
    };
    if ledger.totals.is_empty() {
        log::info!(
            "tx {}: telecollection: no transaction since the last one",
            tx.id
        );
    }
    for (cur, (count, total)) in &ledger.totals {
        let sign = if *total < 0 { "-" } else { "" };
        let amount = currency::format_amount(total.unsigned_abs() as u64, *cur, false);
        log::info!(
            "tx {}: telecollection: {count} transactions, total {sign}{amount} {}",
            tx.id,
            currency::label(*cur)
        );
    }
    ledger.totals.clear();
    Outcome::approved()
}

/// Books an approved payment for the next telecollection.
fn book(ledger: &Mutex<Ledger>, tx: &Transaction, o: &Outcome) {
    let r = &tx.request;
    if !o.is_approved() || !r.op.is_payment() {
        return;
    }
    let amount = o.charged(r.amount);
    let signed = match r.op {
        op if op.is_debit() => i128::from(amount),
        _ => -i128::from(amount),
    };
    let mut l = match ledger.lock() {
        Ok(l) => l,
        Err(p) => p.into_inner(),
    };
    let e = l.totals.entry(r.currency.unwrap_or(978)).or_default();
    e.0 += 1;
    e.1 += signed;
}

/// Books an outcome in the ledger and reports it.
fn end(ledger: &Mutex<Ledger>, tx: &Transaction, outcome: Outcome, done: &Sender<Done>) {
    book(ledger, tx, &outcome);
    let _ = done.send(Done {
        id: tx.id,
        outcome,
        resolved: false,
        note: None,
    });
}

/// Journals and logs what the stage decided for transaction `id`.
fn tell(id: u64, note: String, done: &Sender<Done>) {
    log::info!("tx {id}: simulator: {note}");
    let _ = done.send(Done {
        id,
        // Means nothing with this note: the worker only journals it.
        outcome: Outcome::approved(),
        resolved: false,
        note: Some(Note::Simulated(note)),
    });
}

impl Drop for Simulator {
    fn drop(&mut self) {
        // Another backend takes over: the ways in are refused from now on,
        // unless a newer simulator (a second reload) has the stage already.
        self.stage.release(self.owner);
    }
}

impl Backend for Simulator {
    fn name(&self) -> &'static str {
        "simulator"
    }

    fn start(&mut self, tx: &Transaction, done: Sender<Done>) {
        let r = &tx.request;
        let to = match (&r.receipt_email, &r.receipt_phone) {
            (Some(e), _) => Some(("e-mail", tags::BI, e)),
            (None, Some(p)) => Some(("SMS", tags::BH, p)),
            (None, None) => None,
        };
        if let (Some((how, tag, v)), true) = (to, r.op.is_payment()) {
            let masked = crate::wire::pan::mask_personal(tag, v.as_bytes()).unwrap_or_default();
            log::info!(
                "tx {}: simulator: receipt sent by {how} to {}",
                tx.id,
                crate::wire::pan::escape(&masked)
            );
        }
        let mut rng = Rng(self.rng.next());
        // An immediate answer (BA=1, V2 A011) goes out instead of the
        // outcome's: no quirk of the answer can act.
        let answered = !tx.request.immediate;
        let first = match self.stage.begin_answered(tx.id, tx.channel, answered) {
            Begin::Table => Some(conclude(&mut rng, &self.ledger, tx, None)),
            Begin::Plan { fate, note } => {
                tell(tx.id, note, &done);
                Some(conclude(&mut rng, &self.ledger, tx, Some(fate)))
            }
            Begin::Hold => {
                crate::logging::events::publish(crate::logging::events::Event::Waiting {
                    id: tx.id,
                });
                log::info!(
                    "tx {}: simulator: waiting for a decision (hold on), at most until \
                     transaction-timeout",
                    tx.id
                );
                None
            }
        };
        // Only payments wait for the simulated cardholder.
        let delay = if tx.request.op.is_payment() {
            self.delay
        } else {
            Duration::ZERO
        };
        let id = tx.id;
        let first = match first {
            Some(o) if delay.is_zero() => return end(&self.ledger, tx, o, &done),
            other => other,
        };
        let tx = tx.clone();
        let (cmd_tx, cmd_rx) = unbounded::<Cmd>();
        let stage = Arc::clone(&self.stage);
        let ledger = Arc::clone(&self.ledger);
        let answer = done.clone();
        let waiting = first.is_none();
        // Known to the stage before the thread can end and say so.
        self.stage.running(id, tx.channel, cmd_tx, waiting);
        let spawned = std::thread::Builder::new()
            .name("simulator".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let timer = if waiting { never() } else { after(delay) };
                let (outcome, note) = select! {
                    recv(cmd_rx) -> c => match c {
                        // Aborted at transaction-timeout, or the simulator
                        // is no longer the backend: nothing to report.
                        Err(_) => return,
                        Ok(Cmd::Red) => (
                            Outcome::declined(Af::Abandon),
                            Some("press red: abandoned (AF06)".to_string()),
                        ),
                        Ok(Cmd::Decide(fate, note)) => {
                            (conclude(&mut rng, &ledger, &tx, Some(fate)), Some(note))
                        }
                        Ok(Cmd::Release) => (
                            conclude(&mut rng, &ledger, &tx, None),
                            Some("hold off: the amount table decides".to_string()),
                        ),
                    },
                    recv(timer) -> _ => match first {
                        Some(o) => (o, None),
                        None => return,
                    },
                };
                stage.ended(id);
                if let Some(n) = note {
                    tell(id, n, &done);
                }
                end(&ledger, &tx, outcome, &done);
            });
        if let Err(e) = spawned {
            self.stage.ended(id);
            crate::backend::decline_unstarted(id, "the simulator", &e, &answer);
        }
    }

    fn reload(&mut self, cfg: &crate::config::Config) {
        self.delay = cfg.simulator_delay;
        self.stage
            .configure(true, cfg.simulator_script.as_ref(), cfg.transaction_timeout);
    }

    fn abort(&mut self, id: u64) -> Outcome {
        self.stage.ended(id);
        // The simulated cardholder never finished: nothing was charged.
        Outcome::declined(Af::InputTimeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Channel;
    use crate::config::plan::Plan;
    use crossbeam_channel::Receiver;

    fn tx(id: u64, body: &str) -> Transaction {
        Transaction {
            id,
            request: crate::wire::request::parse(body.as_bytes(), &[978]).unwrap(),
            channel: Channel::Tcp,
            original: None,
        }
    }

    const DEBIT: &str = "CZ0040320CA00201CB0041000CD0010CE003978";

    /// A reload builds the next simulator before the previous one is
    /// dropped: dropping the older one must not take the stage from the
    /// newer.
    #[test]
    fn only_the_latest_simulator_gives_the_stage_up() {
        let stage = Arc::new(Stage::new());
        let a = Simulator::on_stage(Duration::ZERO, Arc::clone(&stage));
        let b = Simulator::on_stage(Duration::ZERO, Arc::clone(&stage));
        drop(a);
        assert!(stage.command("next approve").is_ok());
        drop(b);
        assert!(stage.command("next approve").is_err());
    }

    fn sim(delay: Duration) -> (Simulator, Arc<Stage>, Sender<Done>, Receiver<Done>) {
        let stage = Arc::new(Stage::new());
        let s = Simulator::on_stage(delay, Arc::clone(&stage));
        let (done, got) = unbounded();
        (s, stage, done, got)
    }

    /// The notes, then the outcome, of one transaction.
    fn ending(got: &Receiver<Done>) -> (Vec<String>, Outcome) {
        let mut notes = Vec::new();
        loop {
            let d = got
                .recv_timeout(Duration::from_secs(10))
                .expect("an outcome");
            match d.note {
                Some(Note::Simulated(n)) => notes.push(n),
                _ => return (notes, d.outcome),
            }
        }
    }

    fn plan(s: &str) -> Plan {
        s.parse().unwrap()
    }

    #[test]
    fn a_plan_overrides_the_amount_table_once() {
        let (mut s, stage, done, got) = sim(Duration::ZERO);
        stage.arm(plan("refuse crlf")).unwrap();
        s.start(&tx(1, DEBIT), done.clone());
        let (notes, o) = ending(&got);
        assert_eq!(notes, ["next: refuse crlf"]);
        assert_eq!(o.status, crate::wire::answer::Status::Declined(Af::Refused));
        // 10.51 is refused by the table; approved on demand.
        let d1051 = "CZ0040320CA00201CB0041051CD0010CE003978";
        stage.arm(plan("approve")).unwrap();
        s.start(&tx(2, d1051), done.clone());
        assert!(ending(&got).1.is_approved());
        s.start(&tx(3, d1051), done.clone());
        assert!(!ending(&got).1.is_approved(), "the table again");
        for (word, af) in [
            ("forbidden", Af::Forbidden),
            ("abandon", Af::Abandon),
            ("not-ended", Af::NotEnded),
            ("unknown", Af::NotEnded),
            ("timeout", Af::InputTimeout),
            ("phone", Af::Phone),
        ] {
            stage.arm(plan(word)).unwrap();
            s.start(&tx(4, DEBIT), done.clone());
            let o = ending(&got).1;
            assert_eq!(
                o.status,
                crate::wire::answer::Status::Declined(af),
                "{word}"
            );
        }
    }

    #[test]
    fn partial_only_with_bf1() {
        let (mut s, stage, done, got) = sim(Duration::ZERO);
        stage.arm(plan("partial=400")).unwrap();
        s.start(&tx(1, DEBIT), done.clone());
        assert_eq!(
            ending(&got).1.status,
            crate::wire::answer::Status::Declined(Af::Refused)
        );
        stage.arm(plan("partial=400")).unwrap();
        s.start(&tx(2, &format!("{DEBIT}BF0011")), done.clone());
        let o = ending(&got).1;
        assert!(o.is_approved());
        assert_eq!(o.amount.as_deref(), Some("0400"));
        stage.arm(plan("partial=1000")).unwrap();
        s.start(&tx(3, &format!("{DEBIT}BF0011")), done.clone());
        let o = ending(&got).1;
        assert!(o.is_approved());
        assert_eq!(o.amount, None, "not less: the whole amount");
    }

    #[test]
    fn hold_waits_for_a_decision_and_the_red_key_ends_it() {
        let (mut s, stage, done, got) = sim(Duration::ZERO);
        stage.hold(true).unwrap();
        s.start(&tx(1, DEBIT), done.clone());
        assert!(got.try_recv().is_err(), "waiting");
        assert_eq!(stage.waiting(), Some(1));
        assert_eq!(stage.decide(plan("phone")).unwrap(), 1);
        let (notes, o) = ending(&got);
        assert_eq!(notes, ["decide: phone"]);
        assert_eq!(o.status, crate::wire::answer::Status::Declined(Af::Phone));
        s.start(&tx(2, DEBIT), done.clone());
        assert_eq!(stage.press_red().unwrap(), 2);
        let (notes, o) = ending(&got);
        assert_eq!(notes, ["press red: abandoned (AF06)"]);
        assert_eq!(o.status, crate::wire::answer::Status::Declined(Af::Abandon));
        // Aborted at transaction-timeout: its thread reports nothing.
        s.start(&tx(3, DEBIT), done.clone());
        assert_eq!(
            s.abort(3).status,
            crate::wire::answer::Status::Declined(Af::InputTimeout)
        );
        assert!(stage.press_red().is_err());
        // hold off while one waits: the table decides it.
        s.start(&tx(4, DEBIT), done.clone());
        stage.hold(false).unwrap();
        let (notes, o) = ending(&got);
        assert_eq!(notes, ["hold off: the amount table decides"]);
        assert!(o.is_approved());
        assert!(got.try_recv().is_err(), "nothing from the aborted one");
    }

    #[test]
    fn the_red_key_cuts_the_cardholders_delay() {
        let (mut s, stage, done, got) = sim(Duration::from_secs(600));
        s.start(&tx(1, DEBIT), done);
        assert_eq!(stage.press_red().unwrap(), 1);
        assert_eq!(
            ending(&got).1.status,
            crate::wire::answer::Status::Declined(Af::Abandon)
        );
    }

    #[test]
    fn busy_is_said_once_by_the_stage_while_the_simulator_is_in_use() {
        let (s, stage, _done, _got) = sim(Duration::ZERO);
        assert_eq!(stage.take_busy(), None);
        stage.arm(plan("busy")).unwrap();
        assert!(stage.take_busy().is_some());
        assert_eq!(stage.take_busy(), None);
        stage.arm(plan("busy")).unwrap();
        drop(s);
        assert_eq!(stage.take_busy(), None, "another backend: never busy");
    }

    #[test]
    fn another_backend_takes_the_stage_away() {
        let (s, stage, _done, _got) = sim(Duration::ZERO);
        assert!(stage.arm(plan("approve")).is_ok());
        drop(s);
        assert!(stage.arm(plan("approve")).is_err());
    }

    #[test]
    fn outcome_table() {
        assert_eq!(outcome_for(1234, false), Ok(None));
        assert_eq!(outcome_for(1251, false), Err(Af::Refused));
        assert_eq!(outcome_for(1252, false), Err(Af::Forbidden));
        assert_eq!(outcome_for(1253, false), Err(Af::Abandon));
        assert_eq!(outcome_for(1254, false), Err(Af::NotEnded));
        assert_eq!(outcome_for(1255, false), Err(Af::InputTimeout));
        assert_eq!(outcome_for(1256, false), Err(Af::Phone));
        assert_eq!(outcome_for(1257, false), Err(Af::Refused));
        assert_eq!(outcome_for(1257, true), Ok(Some(628)));
        assert_eq!(outcome_for(57, true), Ok(Some(28)));
    }
}
