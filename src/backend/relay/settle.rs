//! Telling answers apart: which status answer is worth keeping before a
//! payment, what one taken after a loss says of the lost request (only
//! evidence that names it resolves it), the masking of what comes from
//! upstream, and the resolver that asks until the lost outcome is known.

use super::transport::{status_request, Link, Sent};
use super::Flights;
use crate::backend::history::{self, History};
use crate::backend::{Done, Note};
use crate::wire::answer::{Af, Outcome};
use crate::wire::pan;
use crate::wire::request::Request;
use crate::wire::tlv::{tags, Frame, Tag};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often, and how long, an unknown outcome is asked for upstream.
pub(super) const RESOLVE_EVERY: Duration = Duration::from_secs(2);
const RESOLVE_FOR: Duration = Duration::from_secs(3600);
/// How long one status request may take; a working terminal answers it at
/// once.
const STATUS_WAIT: Duration = Duration::from_secs(10);

/// What a resolver reads its status answers against.
pub(super) struct Evidence {
    /// The status answer kept before the request, masked.
    pub(super) kept: Vec<u8>,
    pub(super) history: history::Shared,
    pub(super) flights: Arc<Flights>,
}

/// The upstream's answer to a status request about a transaction it is
/// still running.
fn still_running(f: &Frame) -> bool {
    f.get(tags::CD) == Some(b"T")
        && f.get(tags::AE) == Some(b"01")
        && f.get(tags::AF) == Some(b"07")
}

/// Is this status answer, taken before a request, worth keeping? It must
/// describe a payment, approved or not performed for a reason; an upstream
/// that answers CD=T with a format or unknown-operation error (it does not
/// know the request) or busy says nothing that a later answer can be told
/// apart from. (A frame that decodes is printable: it fits a journal line.)
fn keepable(f: &Frame) -> bool {
    match (f.get(tags::AE), f.get(tags::AF)) {
        (Some(b"10"), _) => true,
        (Some(b"01"), Some(af)) => af != b"09" && af != b"12" && !still_running(f),
        _ => false,
    }
}

/// Before a payment goes upstream: the upstream's status answer, masked,
/// if it can be compared with one taken after a loss.
pub(super) fn status_before(
    link: &Link,
    id: u64,
    req: &Request,
    until: Instant,
) -> Option<Vec<u8>> {
    let by = until.min(Instant::now() + STATUS_WAIT);
    let answer = match link.exchange(&status_request(req), by) {
        Sent::Answer(a) => a,
        Sent::Refused(why) | Sent::Lost(why) => {
            log::info!("tx {id}: status before the request: {why}");
            return None;
        }
    };
    match Frame::decode(&answer) {
        Ok(f) if keepable(&f) => Some(pan::scrub(&answer).into_bytes()),
        _ => {
            log::info!(
                "tx {id}: the upstream's status answer describes no payment: {}",
                pan::scrub(&answer)
            );
            None
        }
    }
}

/// What a status answer taken after a loss says of the lost request.
#[derive(Debug)]
enum Settled {
    /// Nothing yet, and why: still running, not an answer, or nothing in
    /// it names the lost request. Asked again.
    NotYet(&'static str),
    /// It never ran there, or ran and was refused: nothing was charged
    /// either way, and why it is known.
    NotDone(&'static str),
    Outcome(Box<Outcome>),
}

/// What identifies a transaction in a status answer: values that stay the
/// same however often it is asked about and differ from one transaction to
/// the next (the authorisation, PayXpert's transaction id and date). A
/// ticket, a counter or the time of the answer are not among them.
const MARKS: [Tag; 3] = [tags::AC, tags::ID, tags::AP];

/// What a status answer says the transaction was, besides its marks.
const DESCRIBED: [Tag; 7] = [
    tags::CA,
    tags::CD,
    tags::CB,
    tags::CE,
    tags::CF,
    tags::AE,
    tags::AF,
];

fn marks(f: &Frame) -> Vec<(Tag, &[u8])> {
    MARKS
        .iter()
        .filter_map(|&t| f.get(t).filter(|v| !v.is_empty()).map(|v| (t, v)))
        .collect()
}

/// Reads a status answer taken after transaction `id`'s request was lost,
/// against the one `kept` (masked) before the request and what `history`
/// holds of other transactions. Only evidence that names this request
/// resolves it:
/// - every mark the answer carries differs from the kept answer's, and
///   its AC is no other transaction's: a transaction after the kept one,
///   and not one concertd journaled; or
/// - the answer echoes the request's CF, which no other request carried.
///
/// The kept transaction again, all its marks unchanged, means nothing ran
/// upstream since: not done. A refusal of a transaction like this one,
/// for this register, means no money moved, whichever transaction it was:
/// not done. Anything else cannot be told apart: not yet.
fn settle(answer: &[u8], id: u64, req: &Request, kept: &[u8], history: &History) -> Settled {
    let Ok(f) = Frame::decode(answer) else {
        return Settled::NotYet("not a frame");
    };
    if still_running(&f) {
        return Settled::NotYet("still running");
    }
    let approved = match f.get(tags::AE) {
        Some(b"10") => true,
        Some(b"01") if f.get(tags::AF) != Some(b"07") => false,
        _ => return Settled::NotYet("no outcome in it"),
    };
    // Compared masked, as the kept answer was.
    let scrubbed = pan::scrub(answer);
    let (Ok(seen), Ok(before)) = (Frame::decode(scrubbed.as_bytes()), Frame::decode(kept)) else {
        return Settled::NotYet("not comparable with the status kept before the request");
    };
    let (now, then) = (marks(&seen), marks(&before));
    let shared = now.iter().filter(|m| then.contains(m)).count();
    if shared > 0 {
        let same = |t: &Tag| seen.get(*t) == before.get(*t);
        // Two marks masked alike may have differed.
        let whole = marks(&f) == now;
        return if whole && shared == now.len() && shared == then.len() && DESCRIBED.iter().all(same)
        {
            Settled::NotDone(
                "the upstream's last transaction is still the one from before the request: \
                 it never ran there",
            )
        } else {
            Settled::NotYet("it shares marks with the status kept before the request")
        };
    }
    if !same_transaction(&f, req) {
        return Settled::NotYet("it describes another transaction");
    }
    let o = masked(Outcome::from_answer(&f, &req.frame));
    if o.auth
        .as_deref()
        .is_some_and(|ac| history.auth_elsewhere(ac.as_bytes(), id))
    {
        return Settled::NotYet("its authorisation (AC) is another transaction's");
    }
    let fresh_cf = req
        .frame
        .get(tags::CF)
        .filter(|cf| !cf.is_empty() && before.get(tags::CF) != Some(*cf))
        .is_some_and(|cf| !history.cf_elsewhere(cf, id));
    if !now.is_empty() || fresh_cf {
        return Settled::Outcome(Box::new(o));
    }
    match (approved, f.get(tags::CA)) {
        (false, Some(ca)) if Some(ca) == req.frame.get(tags::CA) => Settled::NotDone(
            "the upstream reports a refusal like the request, for this register: \
             whether it was the request's or an earlier one, nothing was charged",
        ),
        _ => Settled::NotYet("nothing in it names the request"),
    }
}

/// Can this status answer be about the lost request? Same register (when
/// it says), operation, currency and private data, and the same amount, or
/// less if approved when the request allowed a partial payment (BF=1).
fn same_transaction(answer: &Frame, req: &Request) -> bool {
    let digits = |v: Option<&[u8]>| -> Option<u64> {
        let v = v.filter(|v| !v.is_empty() && v.iter().all(u8::is_ascii_digit))?;
        std::str::from_utf8(v).ok()?.parse().ok()
    };
    let amount_ok = match (digits(answer.get(tags::CB)), req.amount) {
        (Some(a), Some(r)) => {
            a == r || (a < r && req.partial_ok && answer.get(tags::AE) == Some(b"10"))
        }
        (None, None) => true,
        _ => false,
    };
    answer
        .get(tags::CA)
        .is_none_or(|ca| Some(ca) == req.frame.get(tags::CA))
        && answer.get(tags::CD) == req.frame.get(tags::CD)
        && answer.get(tags::CE) == req.frame.get(tags::CE)
        && answer.get(tags::CF) == req.frame.get(tags::CF)
        && amount_ok
}

/// A card number from upstream never goes further whole, whatever field
/// it is in: each value is masked on its own (the amount, at most 12
/// digits, cannot hold one), and so is the ticket inside ZT.
pub(super) fn masked(mut o: Outcome) -> Outcome {
    let fields = [
        ("AC", &mut o.auth),
        ("AA", &mut o.pan),
        ("AB", &mut o.expiry),
        ("AI", &mut o.aid),
        ("CC", &mut o.application),
        ("CI", &mut o.read_mode),
        ("CG", &mut o.contract),
    ];
    for (tag, field) in fields {
        let Some(v) = field.as_mut() else { continue };
        let mut b = std::mem::take(v).into_bytes();
        if pan::mask_in_place(&mut b) {
            log::warn!("upstream sent a full card number in {tag}: masked");
        }
        *v = String::from_utf8_lossy(&b).into_owned();
    }
    if let Some(zt) = o.ticket.as_mut() {
        if masked_zt(zt) {
            log::warn!("upstream sent a full card number in its ticket: masked");
        }
    }
    o
}

/// Masks the card numbers of a ZT value in place: in the ticket text its
/// AK (or the whole value) carries in base64, then in the value as it is
/// (text that only looks like base64 included).
fn masked_zt(zt: &mut Vec<u8>) -> bool {
    let mut changed = false;
    let inner = Frame::decode_any(zt).ok();
    let ak = inner.as_ref().and_then(|f| f.get(tags::AK));
    if let Some(mut doc) = crate::wire::base64::decode(ak.unwrap_or(zt)) {
        if pan::mask_in_place(&mut doc) {
            let text = crate::wire::base64::encode(&doc).into_bytes();
            *zt = match (&inner, ak) {
                (Some(f), Some(_)) => {
                    let mut out = Frame::new();
                    for e in f.elements() {
                        let v = if e.tag == tags::AK { &text } else { &e.value };
                        out.push(e.tag, v.clone());
                    }
                    out.encode()
                }
                _ => text,
            };
            changed = true;
        }
    }
    let raw = pan::masked(zt, None);
    changed |= raw != *zt;
    *zt = raw;
    changed
}

/// Asks a V3 upstream for the status of the register's last transaction
/// until it says how the lost one ended, for up to RESOLVE_FOR from now
/// (also after a restart: the hour starts again). It asks every `every`
/// (RESOLVE_EVERY; a test passes an hour so that only a poke can ask).
pub(super) fn resolve(
    link: Link,
    id: u64,
    req: Request,
    ev: Evidence,
    pokes: Receiver<()>,
    done: Sender<Done>,
    every: Duration,
) {
    let status = status_request(&req);
    let until = Instant::now() + RESOLVE_FOR;
    let mut said = "";
    while Instant::now() < until {
        match pokes.recv_timeout(every) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let Some(began) = ev.flights.quiet() else {
            continue;
        };
        let Sent::Answer(a) = link.exchange(&status, Instant::now() + STATUS_WAIT) else {
            continue;
        };
        if ev.flights.quiet() != Some(began) {
            log::debug!(
                "tx {id}: another request went upstream meanwhile: status answer set aside"
            );
            continue;
        }
        let settled = history::with(&ev.history, |h| settle(&a, id, &req, &ev.kept, h));
        let (outcome, note) = match settled {
            Settled::NotYet(why) => {
                if why != said {
                    log::info!("tx {id}: the upstream's status answer: {why}: asking again");
                    said = why;
                }
                continue;
            }
            Settled::NotDone(why) => {
                log::info!("tx {id}: {why}");
                (Outcome::declined(Af::NotEnded), Some(Note::NotDone))
            }
            Settled::Outcome(o) => {
                log::info!("tx {id}: the upstream answered the status request");
                (*o, None)
            }
        };
        let _ = done.send(Done {
            id,
            outcome,
            resolved: true,
            note,
        });
        return;
    }
    log::warn!("tx {id}: outcome still unknown after asking the upstream for an hour");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::relay::transport::{outcome_from_answer, v2_request};
    use crate::wire::v2;

    fn req(body: &str) -> Request {
        crate::wire::request::parse(body.as_bytes(), &[978]).unwrap()
    }

    #[test]
    fn resolution_matches_only_the_lost_request() {
        let r = req("CZ0040320CA00201CB0041000CD0010CE003978CF003abc");
        let ok = Frame::decode(b"CZ0040320CA00201CB0041000CD0010CE003978AE00210CF003abc").unwrap();
        assert!(same_transaction(&ok, &r));
        let partial =
            Frame::decode(b"CZ0040320CA00201CB003500CD0010CE003978AE00210CF003abc").unwrap();
        // Less than asked is a partial approval only when the request
        // allowed one: otherwise it is an older, smaller sale.
        assert!(!same_transaction(&partial, &r));
        let r_bf = req("CZ0040320CA00201CB0041000CD0010CE003978CF003abcBF0011");
        assert!(same_transaction(&partial, &r_bf));
        let partial_refused =
            Frame::decode(b"CZ0040320CA00201CB003500CD0010CE003978AE00201AF00204CF003abc").unwrap();
        assert!(!same_transaction(&partial_refused, &r_bf));
        let older =
            Frame::decode(b"CZ0040320CA00201CB0042000CD0010CE003978AE00210CF003abc").unwrap();
        assert!(!same_transaction(&older, &r));
        let other_cf =
            Frame::decode(b"CZ0040320CA00201CB0041000CD0010CE003978AE00210CF003xyz").unwrap();
        assert!(!same_transaction(&other_cf, &r));
        let no_cf = Frame::decode(b"CZ0040320CA00201CB0041000CD0010CE003978AE00210").unwrap();
        assert!(!same_transaction(&no_cf, &r));
        let other_ce =
            Frame::decode(b"CZ0040320CA00201CB0041000CD0010CE003840AE00210CF003abc").unwrap();
        assert!(!same_transaction(&other_ce, &r));
        let signed =
            Frame::decode(b"CZ0040320CA00201CB005+1000CD0010CE003978AE00210CF003abc").unwrap();
        assert!(!same_transaction(&signed, &r));
    }

    #[test]
    fn only_a_payment_status_is_kept() {
        let keep = |a: &[u8]| keepable(&Frame::decode(a).unwrap());
        assert!(keep(
            b"CZ0040320CA00201CB003500CD0010CE003978AE00210AC006111111"
        ));
        assert!(keep(
            b"CZ0040320CA00201CB003500CD0010CE003978AE00201AF00204"
        ));
        // What a concertd upstream answers before any transaction.
        assert!(keep(b"CZ0040320CA00201CD001TAE00201AF00200"));
        // Does not know CD=T, or did not understand it.
        assert!(!keep(b"CZ0040320CA00201CD001TAE00201AF00212"));
        assert!(!keep(b"CZ0040320CA00201CD001TAE00201AF00209"));
        // Busy, still running, or no result at all.
        assert!(!keep(b"CZ0040320CA00201CD001TAE00201"));
        assert!(!keep(b"CZ0040320CA00201CD001TAE00201AF00207"));
        assert!(!keep(b"CZ0040320CA00201CD001T"));
    }

    /// `settle` for transaction 9, with `history`.
    fn settled(answer: &[u8], r: &Request, kept: &[u8], history: &History) -> Settled {
        settle(answer, 9, r, &pan::scrub(kept).into_bytes(), history)
    }

    fn approved_by(ac: &str) -> Outcome {
        let mut o = Outcome::approved();
        o.auth = Some(ac.into());
        o
    }

    #[test]
    fn a_lost_request_is_settled_against_the_kept_status() {
        let none = History::default();
        let r = req("CZ0040320CA00201CB0041000CD0010CE003978");
        let before =
            b"CZ0040320CA00201CB003500CD0010CE003978AE00210AC006111111AA0164970101234560674";
        // The previous 5.00 sale, as before the request: it never ran.
        assert!(matches!(
            settled(before, &r, before, &none),
            Settled::NotDone(_)
        ));
        // Still running, or not a whole answer: ask again.
        let running = b"CZ0040320CA00201CD001TAE00201AF00207";
        assert!(matches!(
            settled(running, &r, before, &none),
            Settled::NotYet(_)
        ));
        assert!(matches!(
            settled(b"CZ004", &r, before, &none),
            Settled::NotYet(_)
        ));
        // Another register's or an older sale, changed since: not this one.
        let other = b"CZ0040320CA00201CB003700CD0010CE003978AE00210AC006222222";
        assert!(matches!(
            settled(other, &r, before, &none),
            Settled::NotYet(_)
        ));
        let register_2 = b"CZ0040320CA00202CB0041000CD0010CE003978AE00210AC006222222";
        assert!(matches!(
            settled(register_2, &r, before, &none),
            Settled::NotYet(_)
        ));
        // The lost request itself, approved: its card number masked.
        let done =
            b"CZ0040320CA00201CB0041000CD0010CE003978AE00210AC006333333AA0164970101234560674";
        match settled(done, &r, before, &none) {
            Settled::Outcome(o) => {
                assert!(o.is_approved());
                assert_eq!(o.auth.as_deref(), Some("333333"));
                assert_eq!(o.pan.as_deref(), Some("497010######0674"));
            }
            s => panic!("{s:?}"),
        }
        // A refusal like the request, for this register: nothing charged,
        // whichever transaction it was.
        let refused = b"CZ0040320CA00201CB0041000CD0010CE003978AE00201AF00204";
        assert!(matches!(
            settled(refused, &r, before, &none),
            Settled::NotDone(_)
        ));
        // An upstream that does not know either: ask again.
        let unknown = b"CZ0040320CA00201CB0041000CD0010CE003978AE00201AF00207";
        assert!(matches!(
            settled(unknown, &r, before, &none),
            Settled::NotYet(_)
        ));
    }

    #[test]
    fn a_status_answer_that_varies_between_asks_names_no_transaction() {
        let none = History::default();
        // The previous 10.00 sale, asked before and after the lost 10.00
        // one: a duplicate ticket with the time in it, and a counter.
        let sale = "CZ0040320CA00201CB0041000CD0010CE003978AE00210AC006111111";
        let ticket = |t: &str| {
            let doc = crate::wire::base64::encode(format!("DUPLICATA {t}\n").as_bytes());
            format!("CK003100AK{:03}{doc}", doc.len())
        };
        let ask = |t: &str, n: u32| {
            let zt = ticket(t);
            format!("{sale}ZT{:03}{zt}ZZ003{n:03}", zt.len())
        };
        let kept = ask("10:41:07", 1);
        let again = ask("10:41:09", 2);
        for cf in ["", "CF003abc"] {
            let r = req(&format!("CZ0040320CA00201CB0041000CD0010CE003978{cf}"));
            let a = format!("{}{cf}", again);
            let k = format!("{}{cf}", kept);
            match settled(a.as_bytes(), &r, k.as_bytes(), &none) {
                Settled::NotDone(_) => {}
                s => panic!("{cf}: {s:?}"),
            }
            // Its AC, the same as before: the previous sale, whatever else
            // differs; with another amount it contradicts itself.
            let odd = format!("CZ0040320CA00201CB0041000CD0010CE003978AE00210AC006111111{cf}");
            let k = format!("CZ0040320CA00201CB003500CD0010CE003978AE00210AC006111111{cf}");
            assert!(matches!(
                settled(odd.as_bytes(), &r, k.as_bytes(), &none),
                Settled::NotYet(_)
            ));
        }
        // No mark at all: an approval of the same amount with no CF, or a
        // CF sent before, cannot be told from the previous sale.
        let bare = "CZ0040320CA00201CB0041000CD0010CE003978AE00210";
        let r = req("CZ0040320CA00201CB0041000CD0010CE003978");
        assert!(matches!(
            settled(
                format!("{bare}ZZ0012").as_bytes(),
                &r,
                format!("{bare}ZZ0011").as_bytes(),
                &none
            ),
            Settled::NotYet(_)
        ));
        let mut h = History::default();
        let r = req("CZ0040320CA00201CB0041000CD0010CE003978CF003abc");
        h.record(4, &r, &Outcome::approved());
        h.record(9, &r, &Outcome::declined(Af::NotEnded));
        let previous = b"CZ0040320CA00201CB003500CD0010CE003978AE00201AF00204";
        assert!(matches!(
            settled(format!("{bare}CF003abc").as_bytes(), &r, previous, &h),
            Settled::NotYet(_)
        ));
    }

    #[test]
    fn a_new_authorisation_no_other_transaction_holds_resolves() {
        let r = req("CZ0040320CA00201CB0041000CD0010CE003978");
        let kept = b"CZ0040320CA00201CB0041000CD0010CE003978AE00210AC006111111";
        let new = b"CZ0040320CA00201CB0041000CD0010CE003978AE00210AC006222222";
        let mut h = History::default();
        h.record(4, &r, &approved_by("111111"));
        h.record(9, &r, &Outcome::declined(Af::NotEnded));
        match settled(new, &r, kept, &h) {
            Settled::Outcome(o) => assert_eq!(o.auth.as_deref(), Some("222222")),
            s => panic!("{s:?}"),
        }
        // PayXpert's transaction id and date are marks too.
        let kept = b"CZ0040320CA00201CB0041000CD0010CE003978AE00210ID0011AP0132501011200000";
        let new = b"CZ0040320CA00201CB0041000CD0010CE003978AE00210ID0012AP0132501011201000";
        match settled(new, &r, kept, &h) {
            Settled::Outcome(o) => assert!(o.is_approved()),
            s => panic!("{s:?}"),
        }
        assert!(matches!(settled(kept, &r, kept, &h), Settled::NotDone(_)));
        // A mark that looks like a card number is masked in the kept
        // answer: two such marks masked alike may have differed.
        let card = b"CZ0040320CA00201CB0041000CD0010CE003978AE00210AP0164970101234560674";
        assert!(matches!(settled(card, &r, card, &h), Settled::NotYet(_)));
        // A new id with the old date: it cannot be told apart.
        let half = b"CZ0040320CA00201CB0041000CD0010CE003978AE00210ID0012AP0132501011200000";
        assert!(matches!(settled(half, &r, kept, &h), Settled::NotYet(_)));
    }

    #[test]
    fn an_authorisation_another_transaction_holds_never_resolves() {
        let r = req("CZ0040320CA00201CB0041000CD0010CE003978CF003new");
        let kept = b"CZ0040320CA00201CB003500CD0010CE003978AE00210AC006111111";
        // Register 02's sale through the same upstream, journaled with
        // AC 222222 after the lost one, reported as the last transaction
        // by an upstream that does not say which register; even with the
        // lost request's own, never sent before, CF.
        let mut h = History::default();
        let r2 = req("CZ0040320CA00202CB0041000CD0010CE003978");
        h.record(9, &r, &Outcome::declined(Af::NotEnded));
        h.record(10, &r2, &approved_by("222222"));
        let theirs = b"CZ0040320CB0041000CD0010CE003978AE00210AC006222222CF003new";
        match settled(theirs, &r, kept, &h) {
            Settled::NotYet(why) => assert!(why.contains("another transaction's"), "{why}"),
            s => panic!("{s:?}"),
        }
        // Transaction 9's own AC, once journaled, is not "elsewhere".
        h.record(9, &r, &approved_by("333333"));
        let own = b"CZ0040320CB0041000CD0010CE003978AE00210AC006333333CF003new";
        assert!(matches!(settled(own, &r, kept, &h), Settled::Outcome(_)));
    }

    #[test]
    fn a_cf_no_other_request_carried_names_the_request() {
        let r = req("CZ0040320CA00201CB0041000CD0010CE003978CF006ord-42");
        let kept = b"CZ0040320CA00201CB0041000CD0010CE003978AE00201AF00204CF006ord-41";
        let mut h = History::default();
        h.record(
            8,
            &req("CZ0040320CA00201CB0041000CD0010CE003978CF006ord-41"),
            &Outcome::declined(Af::Refused),
        );
        h.record(9, &r, &Outcome::declined(Af::NotEnded));
        // No AC at all (an upstream that gives none): the echo of a CF
        // only this request carried names it, approved or refused.
        let approved = b"CZ0040320CA00201CB0041000CD0010CE003978AE00210CF006ord-42";
        match settled(approved, &r, kept, &h) {
            Settled::Outcome(o) => assert!(o.is_approved()),
            s => panic!("{s:?}"),
        }
        let refused = b"CZ0040320CA00201CB0041000CD0010CE003978AE00201AF00205CF006ord-42";
        match settled(refused, &r, kept, &h) {
            Settled::Outcome(o) => {
                assert_eq!(
                    o.status,
                    crate::wire::answer::Status::Declined(Af::Forbidden)
                )
            }
            s => panic!("{s:?}"),
        }
        // The same CF sent by another request since: it names neither.
        h.record(
            10,
            &req("CZ0040320CA00202CB0041000CD0010CE003978CF006ord-42"),
            &Outcome::declined(Af::Refused),
        );
        assert!(matches!(
            settled(approved, &r, kept, &h),
            Settled::NotYet(_)
        ));
    }

    #[test]
    fn card_numbers_from_upstream_are_masked_in_every_field() {
        let r = req("CZ0040320CA00201CB0041000CD0010CE003978CF0164970101234560674CK003100");
        let ticket = crate::wire::base64::encode(b"CARTE 4970 1012 3456 0674\nMERCI\n");
        let zt = format!("CK003100AK{:03}{ticket}", ticket.len());
        let answer = format!(
            "CZ0040320CA00201CB0041000CD0010CE003978AE00210AC0061234 5\
             AA0194970 1012 3456 0674CG0194970-1012-3456-0674CF0164970101234560674\
             ZT{:03}{zt}",
            zt.len()
        );
        let o = outcome_from_answer(false, &r, answer.as_bytes()).unwrap();
        assert_eq!(o.auth.as_deref(), Some("1234 5"));
        assert_eq!(o.pan.as_deref(), Some("4970 10## #### 0674"));
        assert_eq!(o.contract.as_deref(), Some("4970-10##-####-0674"));
        let (ck, doc) = crate::wire::ticket::decode_zt(o.ticket.as_deref().unwrap()).unwrap();
        assert_eq!(ck, Some(*b"100"));
        assert_eq!(doc, b"CARTE 4970 10## #### 0674\nMERCI\n");
        // The answer to the register echoes its own CF, whatever it holds.
        let a = crate::wire::answer::result(&r.frame, &o);
        assert_eq!(a.get(tags::CF), Some(&b"4970101234560674"[..]));
        // A ZT in clear, and a V2 card field written in groups.
        let mut clear = b"CK003100AK025CARTE 4970 1012 3456 0674".to_vec();
        assert!(masked_zt(&mut clear));
        assert_eq!(clear, b"CK003100AK025CARTE 4970 10## #### 0674");
        let p = v2_request(1, &r).unwrap();
        let reply = v2::reply(
            &v2::parse(&p).unwrap(),
            b'0',
            1000,
            Some("4970-1012-3456-0674"),
        );
        let o = outcome_from_answer(true, &r, &reply).unwrap();
        assert_eq!(o.pan.as_deref(), Some("4970-10##-####-0674"));
    }
}
