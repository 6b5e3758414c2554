//! The built-in simulated terminal: a cardholder who takes
//! `simulator-delay` to pay, and outcomes chosen by the last two digits of
//! the amount so that integrators can reach every branch of their code.

use crate::answer::{Af, Outcome};
use crate::backend::{Backend, Done, Transaction};
use crate::currency;
use crate::request::Operation;
use crate::ticket;
use crate::tlv::tags;
use crossbeam_channel::{after, bounded, select, Sender};
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
    /// Dropping it tells the delay thread of the running transaction to stop.
    running: Option<(u64, Sender<()>)>,
    seed: u64,
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
    pub fn new(delay: Duration) -> Simulator {
        let (s, ns) = crate::clock::unix_now();
        Simulator {
            delay,
            ledger: Arc::new(Mutex::new(Ledger::default())),
            running: None,
            seed: (s as u64) << 20 ^ u64::from(ns) ^ 0x9e37_79b9_7f4a_7c15,
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: enough to vary authorisation numbers and cards.
        self.seed ^= self.seed >> 12;
        self.seed ^= self.seed << 25;
        self.seed ^= self.seed >> 27;
        self.seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn card_data(&mut self, o: &mut Outcome, amount: u64, cur: u16) {
        let card = &CARDS[(self.random() % CARDS.len() as u64) as usize];
        let year = crate::clock::now().year % 100 + 3;
        o.auth = Some(format!("{:06}", self.random() % 1_000_000));
        o.pan = Some(card.masked.to_string());
        o.expiry = Some(format!("{:02}{:02}", year % 100, self.random() % 12 + 1));
        o.aid = Some(card.aid.to_string());
        let limit = CONTACTLESS_LIMIT * 10u64.pow(u32::from(currency::exponent(cur)));
        let contactless = amount <= limit;
        o.application = Some(if contactless { "00B" } else { "001" }.to_string());
        o.read_mode = Some(if contactless { "2" } else { "1" }.to_string());
        o.contract = Some(CONTRACT.to_string());
    }

    fn payment(&mut self, tx: &Transaction) -> Outcome {
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
            o.auth = Some(format!("{:06}", self.random() % 1_000_000));
            o.pan = orig.outcome.pan.clone();
            o.aid = orig.outcome.aid.clone();
            o.application = orig.outcome.application.clone();
            o.read_mode = orig.outcome.read_mode.clone();
            o.contract = orig.outcome.contract.clone();
            return o;
        }
        match outcome_for(amount, r.partial_ok) {
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
                    self.card_data(&mut o, amount, r.currency.unwrap_or(978));
                }
                o
            }
        }
    }

    fn print(tx: &Transaction) -> Outcome {
        let zt = tx.request.frame.get(tags::ZT).unwrap_or_default();
        match ticket::decode_zt(zt) {
            Some((_, mut doc)) => {
                // The register's document: card numbers masked, and each of
                // its lines escaped and indented, so that none can pass for
                // a log line of ours.
                crate::pan::mask_in_place(&mut doc);
                let text: String = doc.iter().map(|&b| b as char).collect();
                let lines: Vec<String> = text
                    .trim_end()
                    .split('\n')
                    .map(|l| crate::pan::escape_str(l.strip_suffix('\r').unwrap_or(l)))
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

    fn telecollect(&self, tx: &Transaction) -> Outcome {
        let mut ledger = match self.ledger.lock() {
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

impl Backend for Simulator {
    fn name(&self) -> &'static str {
        "simulator"
    }

    fn start(&mut self, tx: &Transaction, done: Sender<Done>) {
        let outcome = match tx.request.op {
            Operation::Print => Simulator::print(tx),
            Operation::Telecollect => self.telecollect(tx),
            _ => self.payment(tx),
        };
        let r = &tx.request;
        let to = match (&r.receipt_email, &r.receipt_phone) {
            (Some(e), _) => Some(("e-mail", tags::BI, e)),
            (None, Some(p)) => Some(("SMS", tags::BH, p)),
            (None, None) => None,
        };
        if let (Some((how, tag, v)), true) = (to, r.op.is_payment()) {
            let masked = crate::pan::mask_personal(tag, v.as_bytes()).unwrap_or_default();
            log::info!(
                "tx {}: simulator: receipt sent by {how} to {}",
                tx.id,
                crate::pan::escape(&masked)
            );
        }
        // Only payments wait for the simulated cardholder.
        let delay = if tx.request.op.is_payment() {
            self.delay
        } else {
            Duration::ZERO
        };
        let ledger = Arc::clone(&self.ledger);
        let tx = tx.clone();
        let (id, answer) = (tx.id, done.clone());
        // Booked in the ledger and reported: now, or after the delay.
        let end = move || {
            book(&ledger, &tx, &outcome);
            let _ = done.send(Done {
                id: tx.id,
                outcome,
                resolved: false,
                note: None,
            });
        };
        if delay.is_zero() {
            return end();
        }
        let (stop_tx, stop_rx) = bounded::<()>(0);
        self.running = Some((id, stop_tx));
        let spawned = std::thread::Builder::new()
            .name("simulator".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                select! {
                    recv(stop_rx) -> _ => {}
                    recv(after(delay)) -> _ => end(),
                }
            });
        if let Err(e) = spawned {
            self.running = None;
            crate::backend::decline_unstarted(id, "the simulator", &e, &answer);
        }
    }

    fn reload(&mut self, cfg: &crate::config::Config) {
        self.delay = cfg.simulator_delay;
    }

    fn abort(&mut self, id: u64) -> Outcome {
        if self.running.as_ref().is_some_and(|(r, _)| *r == id) {
            self.running = None;
        }
        // The simulated cardholder never finished: nothing was charged.
        Outcome::declined(Af::InputTimeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
