//! Refunds by reference (PayXpert's `IM`): which approved debits a credit
//! may name, and how much of each is still refundable. The worker feeds it
//! every ended transaction (and, at start, every journaled one, in id
//! order), checks a credit carrying `IM` against it before the backend is
//! called, and carries its records over on journal rotation so that a
//! restart rebuilds the same sums.
//!
//! Bounded: the newest `cap` approved debits are kept; an older one is
//! forgotten and a refund naming it is refused as not known, which errs on
//! the side of never paying out twice. Each debit takes at most
//! [`MAX_REFUNDS`] refunds.

use crate::terminal::journal::Record;
use std::collections::BTreeMap;
use std::fmt;

/// Approved debits kept by default: about two weeks of a busy shop.
pub const MAX_DEBITS: usize = 5000;
/// Refunds one debit may take (they are records carried with it).
pub const MAX_REFUNDS: usize = 16;
/// Bytes of journal records the index may hold: past it the oldest debits
/// are forgotten first, whatever their number. Typical records weigh a
/// few hundred bytes, so [`MAX_DEBITS`] is what binds; a peer sending the
/// longest requests and tickets cannot make the index weigh more.
pub const MAX_BYTES: usize = 8 << 20;

/// What a record costs the index: its variable parts, plus a fixed share
/// for the rest.
fn weight(r: &Record) -> usize {
    256 + r.request.len()
        + r.answer.as_ref().map_or(0, Vec::len)
        + r.upstream_status.as_ref().map_or(0, Vec::len)
        + r.begun_at.len()
        + r.ended_at.as_ref().map_or(0, String::len)
        + r.channel.len()
        + r.peer.len()
        + r.key.as_ref().map_or(0, String::len)
}

#[derive(Debug)]
struct Refund {
    record: Record,
    amount: u64,
}

#[derive(Debug)]
struct Debit {
    record: Record,
    currency: Option<u16>,
    charged: u64,
    /// Approved refunds, and those whose outcome is unknown: money may
    /// have moved, so they count until a resolution says otherwise.
    refunds: Vec<Refund>,
    /// The approved cancellation (CD=2) that undid it, if any.
    cancel: Option<Record>,
}

impl Debit {
    fn weight(&self) -> usize {
        weight(&self.record)
            + self
                .refunds
                .iter()
                .map(|r| weight(&r.record))
                .sum::<usize>()
            + self.cancel.as_ref().map_or(0, weight)
    }

    fn refunded(&self) -> u64 {
        self.refunds
            .iter()
            .fold(0u64, |n, r| n.saturating_add(r.amount))
    }
}

/// Why a refund by reference is refused (AF04), as the log says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// IM is not one of our transaction ids.
    NotAnId(String),
    /// Not an approved debit of this terminal in the journal, or older
    /// than the index keeps.
    NotKnown(u64),
    Cancelled(u64),
    Currency {
        id: u64,
        debit: Option<u16>,
        asked: Option<u16>,
    },
    TooMuch {
        id: u64,
        charged: u64,
        refunded: u64,
        asked: u64,
    },
    TooMany(u64),
    /// A cancellation of a debit that has refunds by reference.
    Refunded {
        id: u64,
        refunds: Vec<u64>,
        refunded: u64,
    },
    /// A cancellation of an approved debit the index no longer keeps:
    /// its refunds, if any, are not known.
    NotKept(u64),
}

fn cur(c: Option<u16>) -> String {
    c.map_or_else(|| "none".into(), |c| format!("{c:03}"))
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // A value from the register, maybe a card number: masked.
            Refusal::NotAnId(im) => write!(
                f,
                "IM \"{}\" is not a transaction id of this terminal",
                crate::wire::pan::shown(im.as_bytes())
            ),
            // The register's IM, not one of our ids: maybe a card number.
            Refusal::NotKnown(id) => write!(
                f,
                "tx {} is not known as an approved debit (not in the journal, not an approved \
                 debit, or older than the approved debits kept)",
                crate::wire::pan::shown_element(
                    crate::wire::tlv::tags::IM,
                    id.to_string().as_bytes()
                )
            ),
            Refusal::Cancelled(id) => write!(
                f,
                "tx {id} was cancelled (or its cancellation's outcome is unknown)"
            ),
            Refusal::Currency { id, debit, asked } => write!(
                f,
                "tx {id} was in currency {}, the request asks {}",
                cur(*debit),
                cur(*asked)
            ),
            Refusal::TooMuch {
                id,
                charged,
                refunded,
                asked,
            } => write!(
                f,
                "tx {id} charged {charged}, {refunded} already refunded or unknown, \
                 {asked} more is past the amount charged"
            ),
            Refusal::TooMany(id) => write!(f, "tx {id} already has {MAX_REFUNDS} refunds"),
            Refusal::Refunded {
                id,
                refunds,
                refunded,
            } => {
                let ids: Vec<String> = refunds.iter().map(u64::to_string).collect();
                write!(
                    f,
                    "tx {id} has refunds by reference (tx {}: {refunded} approved or of unknown \
                     outcome); cancelling it would pay back more than it charged",
                    ids.join(", tx ")
                )
            }
            Refusal::NotKept(id) => write!(
                f,
                "tx {id} is older than the approved debits kept: its refunds by reference \
                 cannot be checked"
            ),
        }
    }
}

/// Our transaction id in an `IM` value: digits only, as we write them.
pub fn id_of(im: &str) -> Option<u64> {
    if im.is_empty() || !im.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    im.parse().ok()
}

pub struct Refunds {
    debits: BTreeMap<u64, Debit>,
    cap: usize,
    /// The weight of every record held, against `max_bytes`.
    bytes: usize,
    max_bytes: usize,
}

impl Default for Refunds {
    fn default() -> Refunds {
        Refunds::new(MAX_DEBITS)
    }
}

impl Refunds {
    pub fn new(cap: usize) -> Refunds {
        Refunds::bounded(cap, MAX_BYTES)
    }

    /// At most `cap` debits and `max_bytes` of records.
    pub fn bounded(cap: usize, max_bytes: usize) -> Refunds {
        Refunds {
            debits: BTreeMap::new(),
            cap: cap.max(1),
            bytes: 0,
            max_bytes,
        }
    }

    /// Changes debit `id`, keeping the byte count; whether it is kept.
    fn change(&mut self, id: u64, f: impl FnOnce(&mut Debit)) -> bool {
        let Some(d) = self.debits.get_mut(&id) else {
            return false;
        };
        let before = d.weight();
        f(d);
        self.bytes = self.bytes.saturating_sub(before).saturating_add(d.weight());
        true
    }

    /// Forgets the oldest debits while past either bound; the newest one
    /// stays, whatever it weighs, so that it can still be refunded.
    fn trim(&mut self) {
        while self.debits.len() > self.cap || (self.bytes > self.max_bytes && self.debits.len() > 1)
        {
            let Some((old, d)) = self.debits.pop_first() else {
                break;
            };
            self.bytes = self.bytes.saturating_sub(d.weight());
            log::debug!("tx {old}: no longer refundable by reference (index full)");
        }
    }

    /// The weight of the records held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether a credit of `amount` in `currency` may refund what `im`
    /// names; the debit's id when it may.
    pub fn check(&self, im: &str, currency: Option<u16>, amount: u64) -> Result<u64, Refusal> {
        let id = id_of(im).ok_or_else(|| Refusal::NotAnId(im.to_string()))?;
        let d = self.debits.get(&id).ok_or(Refusal::NotKnown(id))?;
        if d.cancel.is_some() {
            return Err(Refusal::Cancelled(id));
        }
        if d.currency != currency {
            return Err(Refusal::Currency {
                id,
                debit: d.currency,
                asked: currency,
            });
        }
        let refunded = d.refunded();
        if refunded.saturating_add(amount) > d.charged {
            return Err(Refusal::TooMuch {
                id,
                charged: d.charged,
                refunded,
                asked: amount,
            });
        }
        if d.refunds.len() >= MAX_REFUNDS {
            return Err(Refusal::TooMany(id));
        }
        Ok(id)
    }

    /// Whether a cancellation of `amount` in `currency` may undo approved
    /// debit `id`: not when refunds by reference or a cancellation count
    /// against it (approved or unknown: money may have gone back), nor for
    /// another currency or more than it charged (after a partial
    /// approval, the approved amount).
    pub fn check_cancel(&self, id: u64, currency: Option<u16>, amount: u64) -> Result<(), Refusal> {
        let d = self.debits.get(&id).ok_or(Refusal::NotKept(id))?;
        if d.cancel.is_some() {
            return Err(Refusal::Cancelled(id));
        }
        if !d.refunds.is_empty() {
            return Err(Refusal::Refunded {
                id,
                refunds: d.refunds.iter().map(|r| r.record.id).collect(),
                refunded: d.refunded(),
            });
        }
        if d.currency != currency {
            return Err(Refusal::Currency {
                id,
                debit: d.currency,
                asked: currency,
            });
        }
        if amount > d.charged {
            return Err(Refusal::TooMuch {
                id,
                charged: d.charged,
                refunded: 0,
                asked: amount,
            });
        }
        Ok(())
    }

    /// An approved debit (or deferred debit) of `charged` minor units.
    pub fn debit(&mut self, record: &Record, currency: Option<u16>, charged: u64) {
        let id = record.id;
        let known = self.change(id, |d| {
            d.record = record.clone();
            d.charged = charged;
            d.currency = currency;
        });
        if !known {
            let d = Debit {
                record: record.clone(),
                currency,
                charged,
                refunds: Vec::new(),
                cancel: None,
            };
            self.bytes = self.bytes.saturating_add(d.weight());
            self.debits.insert(id, d);
        }
        self.trim();
    }

    /// An approved cancellation of debit `id`, or one whose outcome is
    /// unknown: the money may be back on the card, so refunding it too
    /// could pay out twice.
    pub fn cancelled(&mut self, id: u64, cancel: &Record) {
        self.change(id, |d| d.cancel = Some(cancel.clone()));
    }

    /// The debit a cancellation was counted against, if it is kept.
    pub fn cancelled_by(&self, cancel: u64) -> Option<u64> {
        self.debits
            .iter()
            .find(|(_, d)| d.cancel.as_ref().is_some_and(|c| c.id == cancel))
            .map(|(id, _)| *id)
    }

    /// Cancellation `cancel` of debit `id` found declined, or never done,
    /// after all: the debit may be refunded again.
    pub fn cancel_undone(&mut self, id: u64, cancel: u64) {
        let by_it = |d: &Debit| d.cancel.as_ref().is_some_and(|c| c.id == cancel);
        if self.debits.get(&id).is_some_and(by_it) {
            self.change(id, |d| d.cancel = None);
        }
    }

    /// A refund of debit `of`: `amount` is what counts against it (the
    /// charged amount of an approved refund, the asked one of an unknown
    /// outcome), `None` when nothing moved (declined, not done). Called
    /// again when its outcome is resolved.
    pub fn refund(&mut self, of: u64, record: &Record, amount: Option<u64>) {
        let id = record.id;
        let kept = self.change(of, |d| {
            d.refunds.retain(|r| r.record.id != id);
            if let Some(amount) = amount {
                d.refunds.push(Refund {
                    record: record.clone(),
                    amount,
                });
            }
        });
        if kept {
            self.trim();
        }
    }

    /// The debit a refund counted against, if it is kept.
    #[cfg(test)]
    fn owner(&self, refund: u64) -> Option<u64> {
        self.debits
            .iter()
            .find(|(_, d)| d.refunds.iter().any(|r| r.record.id == refund))
            .map(|(id, _)| *id)
    }

    /// What counts against debit `id`: refunded or unknown.
    pub fn refunded(&self, id: u64) -> Option<u64> {
        self.debits.get(&id).map(Debit::refunded)
    }

    pub fn len(&self) -> usize {
        self.debits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.debits.is_empty()
    }

    /// The records that rebuild the index, newest debit first, each debit
    /// with its refunds and cancellation: carried over together or not at
    /// all, so that a restart never sees a debit without its refunds.
    pub fn groups(&self) -> impl Iterator<Item = Vec<&Record>> {
        self.debits.values().rev().map(|d| {
            let mut g = vec![&d.record];
            g.extend(d.refunds.iter().map(|r| &r.record));
            g.extend(d.cancel.as_ref());
            g
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u64) -> Record {
        Record {
            id,
            ..Record::default()
        }
    }

    #[test]
    fn a_cancellation_blocks_refunds_until_it_is_undone() {
        let mut x = Refunds::new(10);
        x.debit(&rec(1), Some(978), 1000);
        x.cancelled(1, &rec(2));
        assert_eq!(x.cancelled_by(2), Some(1));
        assert_eq!(x.check("1", Some(978), 1), Err(Refusal::Cancelled(1)));
        x.cancel_undone(1, 3);
        assert_eq!(x.check("1", Some(978), 1), Err(Refusal::Cancelled(1)));
        x.cancel_undone(1, 2);
        assert_eq!(
            (x.cancelled_by(2), x.check("1", Some(978), 1)),
            (None, Ok(1))
        );
    }

    #[test]
    fn a_cancellation_is_held_to_refunds_cancellations_and_the_charge() {
        let mut x = Refunds::new(10);
        x.debit(&rec(1), Some(978), 1000);
        assert_eq!(x.check_cancel(1, Some(978), 1000), Ok(()));
        // More than charged (a partial approval charges less), or in
        // another currency.
        x.debit(&rec(2), Some(978), 500);
        assert!(matches!(
            x.check_cancel(2, Some(978), 1000),
            Err(Refusal::TooMuch { charged: 500, .. })
        ));
        assert!(matches!(
            x.check_cancel(2, Some(840), 500),
            Err(Refusal::Currency { .. })
        ));
        // A refund, approved or unknown, counts until resolved declined.
        x.refund(1, &rec(3), Some(600));
        let refunded = Refusal::Refunded {
            id: 1,
            refunds: vec![3],
            refunded: 600,
        };
        assert_eq!(x.check_cancel(1, Some(978), 1000), Err(refunded.clone()));
        assert!(refunded
            .to_string()
            .contains("(tx 3: 600 approved or of unknown"));
        x.refund(1, &rec(3), None);
        assert_eq!(x.check_cancel(1, Some(978), 1000), Ok(()));
        // A cancellation approved or unknown: no second one.
        x.cancelled(1, &rec(4));
        assert_eq!(
            x.check_cancel(1, Some(978), 1000),
            Err(Refusal::Cancelled(1))
        );
        x.cancel_undone(1, 4);
        assert_eq!(x.check_cancel(1, Some(978), 1000), Ok(()));
        // A debit not kept: its refunds are not known.
        assert_eq!(x.check_cancel(9, Some(978), 1), Err(Refusal::NotKept(9)));
    }

    fn heavy(id: u64, bytes: usize) -> Record {
        Record {
            id,
            request: vec![b'x'; bytes],
            ..Record::default()
        }
    }

    #[test]
    fn the_index_weighs_at_most_its_byte_bound() {
        let mut x = Refunds::bounded(100, 10_000);
        for id in 1..=10 {
            x.debit(&heavy(id, 2_000), Some(978), 1000);
            assert!(x.bytes() <= 10_000, "{} bytes", x.bytes());
        }
        // The oldest went first; the newest are still refundable.
        assert_eq!(x.check("1", Some(978), 1), Err(Refusal::NotKnown(1)));
        assert_eq!(x.check("10", Some(978), 1), Ok(10));
        // Refunds weigh too, and are counted back when they go.
        let before = x.bytes();
        x.refund(10, &heavy(11, 100), Some(1));
        assert_eq!(x.bytes(), before + weight(&heavy(11, 100)));
        x.refund(10, &heavy(11, 100), None);
        assert_eq!(x.bytes(), before);
        // One debit heavier than the bound is still kept, alone.
        x.debit(&heavy(20, 50_000), Some(978), 1000);
        assert_eq!((x.len(), x.check("20", Some(978), 1)), (1, Ok(20)));
    }

    #[test]
    fn refunds_add_up_to_the_amount_charged() {
        let mut x = Refunds::new(10);
        x.debit(&rec(1), Some(978), 1000);
        assert_eq!(x.check("1", Some(978), 600), Ok(1));
        x.refund(1, &rec(2), Some(600));
        assert_eq!(x.check("1", Some(978), 400), Ok(1));
        assert_eq!(
            x.check("1", Some(978), 401),
            Err(Refusal::TooMuch {
                id: 1,
                charged: 1000,
                refunded: 600,
                asked: 401
            })
        );
        x.refund(1, &rec(3), Some(400));
        assert_eq!(x.refunded(1), Some(1000));
        assert!(matches!(
            x.check("1", Some(978), 1),
            Err(Refusal::TooMuch { .. })
        ));
    }

    #[test]
    fn unknown_ids_currencies_and_cancellations_are_refused() {
        let mut x = Refunds::new(10);
        x.debit(&rec(5), Some(978), 1000);
        assert_eq!(x.check("6", Some(978), 1), Err(Refusal::NotKnown(6)));
        assert_eq!(
            x.check("5x", Some(978), 1),
            Err(Refusal::NotAnId("5x".into()))
        );
        assert_eq!(x.check("", Some(978), 1), Err(Refusal::NotAnId("".into())));
        assert_eq!(
            x.check("99999999999999999999999", Some(978), 1),
            Err(Refusal::NotAnId("99999999999999999999999".into()))
        );
        assert!(matches!(
            x.check("5", Some(840), 1),
            Err(Refusal::Currency { .. })
        ));
        x.cancelled(5, &rec(7));
        assert_eq!(x.check("5", Some(978), 1), Err(Refusal::Cancelled(5)));
    }

    #[test]
    fn an_unknown_outcome_counts_until_resolved() {
        let mut x = Refunds::new(10);
        x.debit(&rec(1), Some(978), 1000);
        // Outcome unknown: the asked amount counts.
        x.refund(1, &rec(2), Some(1000));
        assert!(x.check("1", Some(978), 1).is_err());
        assert_eq!(x.owner(2), Some(1));
        // Resolved: declined, nothing moved.
        x.refund(1, &rec(2), None);
        assert_eq!(x.refunded(1), Some(0));
        assert_eq!(x.owner(2), None);
        // Resolved approved for less (partial).
        x.refund(1, &rec(2), Some(300));
        assert_eq!(x.refunded(1), Some(300));
    }

    #[test]
    fn the_index_is_bounded_oldest_out() {
        let mut x = Refunds::new(3);
        for id in 1..=5 {
            x.debit(&rec(id), Some(978), 100);
        }
        x.refund(5, &rec(6), Some(10));
        assert_eq!(x.len(), 3);
        assert_eq!(x.check("2", Some(978), 1), Err(Refusal::NotKnown(2)));
        assert_eq!(x.check("3", Some(978), 1), Ok(3));
        let ids: Vec<Vec<u64>> = x
            .groups()
            .map(|g| g.iter().map(|r| r.id).collect())
            .collect();
        assert_eq!(ids, vec![vec![5, 6], vec![4], vec![3]]);
        // A refund of a debit not kept is not counted anywhere.
        x.refund(1, &rec(7), Some(10));
        assert_eq!(x.owner(7), None);
    }

    #[test]
    fn refunds_per_debit_are_bounded() {
        let mut x = Refunds::new(3);
        x.debit(&rec(1), Some(978), 1000);
        for i in 0..MAX_REFUNDS as u64 {
            assert_eq!(x.check("1", Some(978), 1), Ok(1));
            x.refund(1, &rec(100 + i), Some(1));
        }
        assert_eq!(x.check("1", Some(978), 1), Err(Refusal::TooMany(1)));
    }

    proptest::proptest! {
        /// Whatever the sequence, what counts never passes what was charged
        /// when every refund went through `check` first.
        #[test]
        fn never_past_the_charge(asks in proptest::collection::vec(0u64..700, 0..40)) {
            let mut x = Refunds::new(4);
            x.debit(&rec(1), Some(978), 1000);
            for (i, a) in asks.into_iter().enumerate() {
                if x.check("1", Some(978), a).is_ok() {
                    x.refund(1, &rec(10 + i as u64), Some(a));
                }
                proptest::prop_assert!(x.refunded(1).unwrap_or(0) <= 1000);
            }
        }
    }
}
