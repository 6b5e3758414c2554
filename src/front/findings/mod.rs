//! The register's report card: what each register (peer address and CA)
//! does that real terminals or the specification punish, seen from the
//! terminal side, kept in memory and bounded: at most [`MAX_REGISTERS`]
//! registers (the one seen least recently is forgotten first), one entry
//! per [`Kind`] each, with a count, the first time and one masked example
//! of at most [`MAX_EXAMPLE`] characters. Every finding goes through
//! [`Findings::record`], which logs it the first time for its register and
//! kind, and only counts it after.
//!
//! The ways in report what they see ([`Findings::request`],
//! [`Findings::answered`], [`Findings::after`]); the per-register state
//! that spans requests (a lost answer, a busy answer, the last debit)
//! lives here, and so do the register's last episodes (requests that took
//! a `simulator-script` line, see [`episode`]), which the exam reads.

pub mod episode;
pub mod kind;
pub mod tags;

pub use episode::{Episode, Next};
pub use kind::{Kind, Severity};

use crate::backend::stage::Taken;
use crate::logging::floodgate::{self, Floodgate, Source};
use crate::wire::answer::Af;
use crate::wire::channel::Channel;
use crate::wire::clock;
use crate::wire::operation::Operation;
use crate::wire::pan;
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Registers kept; past it the one seen least recently is forgotten.
pub const MAX_REGISTERS: usize = 256;
/// The longest example kept, in characters.
pub const MAX_EXAMPLE: usize = 80;
/// A pause between two segments of one request longer than this is a
/// finding: the `request-gap` default, and about what terminals wait.
pub const SLOW_GAP: Duration = Duration::from_millis(100);
/// A retry after a busy answer sooner than this is a finding.
pub const BUSY_PAUSE: Duration = Duration::from_secs(1);
/// More retries after busy answers than this in a minute is a finding.
pub const BUSY_PER_MINUTE: usize = 10;

/// Which register: its channel, its peer (the TCP client's address
/// without the port, or the serial device) and its CA when it gave one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Who {
    pub channel: Channel,
    pub peer: String,
    pub ca: Option<u8>,
}

impl Who {
    /// `register 01 at tcp 127.0.0.1`, as `registers` and the log write it.
    pub fn label(&self) -> String {
        let ca = self
            .ca
            .map_or_else(|| "??".to_string(), |c| format!("{c:02}"));
        format!(
            "register {ca} at {} {}",
            self.channel,
            pan::escape_str(&self.peer)
        )
    }
}

/// A request as its way in read it.
#[derive(Clone, Debug, Default)]
pub struct Seen<'a> {
    /// The request's bytes, framing removed.
    pub body: &'a [u8],
    /// A Concert V2 request.
    pub v2: bool,
    /// Wrapped STX..ETX+LRC on TCP.
    pub stx_on_tcp: bool,
    /// Bytes that came with the request and are not part of it (a CR/LF
    /// tail, bytes after an LRC).
    pub extra: &'a [u8],
    /// TCP segments (reads) it came in, and the longest pause between two.
    pub segments: u32,
    pub gap: Duration,
    /// Its operation and amount, when it could be read.
    pub op: Option<Operation>,
    pub amount: Option<u64>,
}

/// What became of a request.
#[derive(Clone, Debug, Default)]
pub struct Answered {
    pub op: Option<Operation>,
    /// The answer's AE and AF.
    pub approved: bool,
    pub af: Option<Af>,
    /// The worker's busy answer (no transaction).
    pub busy: bool,
    /// A transaction's final answer (not a refusal or a status answer).
    pub transaction: bool,
    /// The amount approved (CB of an approval).
    pub amount: Option<u64>,
    /// Whether the answer reached the register: `None` when not measured.
    pub delivered: Option<Result<(), String>>,
    /// concertd itself kept the answer back (silent, reset, unknown): not
    /// the register's doing, but lost to it all the same.
    pub withheld: bool,
    /// The answer went in several writes (`split`).
    pub split: bool,
    /// The register closed its side this long after its request, before
    /// the answer was written.
    pub closed_after: Option<Duration>,
    /// The transaction, when one ran.
    pub tx: Option<u64>,
    /// The `simulator-script` line the request took, if any: the exam's
    /// step.
    pub taken: Option<Taken>,
    /// The amount the request asked (CB) and whether it allowed a partial
    /// approval (BF=1).
    pub requested: Option<u64>,
    pub partial_ok: bool,
}

/// One finding of a register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub count: u64,
    /// Unix seconds.
    pub first: i64,
    pub example: String,
}

/// Counts of a register's requests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub payments: u64,
    pub approved: u64,
    pub declined: u64,
    pub unknown: u64,
    pub busy: u64,
    pub status: u64,
    pub undelivered: u64,
}

struct Register {
    first: i64,
    last: i64,
    /// Order of last use, for forgetting the stalest.
    tick: u64,
    protocol: String,
    counts: Counts,
    findings: [Option<Finding>; Kind::ALL.len()],
    /// An answer it did not get, and no status request since.
    lost: Option<String>,
    /// When it was last answered busy.
    busy_at: Option<Instant>,
    /// Its retries after busy answers in the last minute.
    retries: VecDeque<Instant>,
    /// Its last approved debit's amount.
    last_debit: Option<u64>,
    /// Its requests that took a script line, for the exam.
    episodes: VecDeque<Episode>,
}

impl Register {
    fn new(now: i64, tick: u64) -> Register {
        Register {
            first: now,
            last: now,
            tick,
            protocol: String::new(),
            counts: Counts::default(),
            findings: Default::default(),
            lost: None,
            busy_at: None,
            retries: VecDeque::new(),
            last_debit: None,
            episodes: VecDeque::new(),
        }
    }
}

#[derive(Default)]
struct Table {
    registers: HashMap<Who, Register>,
    tick: u64,
}

impl Table {
    /// The register's entry, made (forgetting the stalest when full).
    fn entry(&mut self, who: &Who, now: i64) -> &mut Register {
        self.tick += 1;
        let tick = self.tick;
        if !self.registers.contains_key(who) && self.registers.len() >= MAX_REGISTERS {
            if let Some(old) = self
                .registers
                .iter()
                .min_by_key(|(_, r)| r.tick)
                .map(|(w, _)| w.clone())
            {
                self.registers.remove(&old);
            }
        }
        let r = self
            .registers
            .entry(who.clone())
            .or_insert_with(|| Register::new(now, tick));
        r.tick = tick;
        r.last = now;
        r
    }
}

/// The table, shared by the ways in and the control socket.
#[derive(Default)]
pub struct Findings {
    table: Mutex<Table>,
    /// Where the first of each kind is logged: a register is logged once
    /// per kind, but a peer that keeps changing its CA or address makes
    /// new registers, so the log lines pass the floodgate too.
    gate: Option<Arc<Floodgate>>,
}

fn unix_now() -> i64 {
    clock::unix_now().0
}

/// An example as kept: card numbers masked, control bytes escaped, cut
/// to [`MAX_EXAMPLE`] characters.
fn example(text: &str) -> String {
    let shown = pan::escape_str(&pan::masked_text(text));
    match shown.char_indices().nth(MAX_EXAMPLE) {
        Some((cut, _)) => format!("{}...", &shown[..cut]),
        None => shown,
    }
}

impl Findings {
    pub fn new() -> Findings {
        Findings::default()
    }

    /// Findings whose log lines pass `gate`, as other lines a peer can
    /// cause at will.
    pub fn with_gate(gate: Arc<Floodgate>) -> Findings {
        Findings {
            gate: Some(gate),
            ..Findings::default()
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // Plain counters: usable after a panic elsewhere.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The one recording point of a finding: counted, and logged the first
    /// time for its register and kind.
    pub fn record(&self, who: &Who, kind: Kind, text: &str) {
        let now = unix_now();
        let mut t = self.lock();
        let r = t.entry(who, now);
        let slot = &mut r.findings[kind.index()];
        if let Some(f) = slot {
            f.count += 1;
            return;
        }
        let ex = example(text);
        let line = format!(
            "{}: {} {}: {ex}: {}",
            who.label(),
            kind.severity(),
            kind.name(),
            kind.reason()
        );
        *slot = Some(Finding {
            count: 1,
            first: now,
            example: ex,
        });
        drop(t);
        let level = match kind.severity() {
            Severity::Note => log::Level::Info,
            _ => log::Level::Warn,
        };
        match &self.gate {
            Some(g) => {
                let source = who
                    .peer
                    .parse()
                    .map_or_else(|_| Source::Line(who.peer.as_str().into()), Source::Peer);
                g.note(source, floodgate::Kind::Finding, level, || {
                    format!("finding: {line}")
                });
            }
            None => log::log!(level, "finding: {line}"),
        }
        // Watchers (`concertctl watch`, the web page) hear of it when the
        // log does: once per register and kind.
        crate::logging::events::publish(crate::logging::events::Event::Finding(line));
    }

    /// A request read: framing, tags, and what it means after the
    /// register's last answers.
    pub fn request(&self, who: &Who, seen: &Seen) {
        self.request_at(who, seen, Instant::now());
    }

    fn request_at(&self, who: &Who, seen: &Seen, now: Instant) {
        let mut found: Vec<(Kind, String)> = Vec::new();
        if seen.v2 && who.channel == Channel::Tcp {
            found.push((Kind::V2OverTcp, "a V2 request in STX..ETX on TCP".into()));
        }
        if seen.stx_on_tcp {
            found.push((Kind::StxOnTcp, "STX ... ETX LRC around the TLV".into()));
        }
        if !seen.extra.is_empty() {
            found.push(extra_finding(seen.extra));
        }
        if seen.gap > SLOW_GAP {
            found.push((
                Kind::SlowSegments,
                format!(
                    "{} segments, up to {} ms apart",
                    seen.segments,
                    seen.gap.as_millis()
                ),
            ));
        }
        if !seen.v2 {
            found.extend(tags::findings(seen.body));
        }
        let unix = unix_now();
        {
            let mut t = self.lock();
            let r = t.entry(who, unix);
            r.counts.requests += 1;
            r.protocol = protocol(seen);
            if let Some(op) = seen
                .op
                .filter(|o| *o == Operation::Status || o.is_payment())
            {
                // Every answer not followed yet: one reported after a later
                // one (a split answer written slowly) is followed too.
                for e in &mut r.episodes {
                    e.followed(op == Operation::Status, now);
                }
            }
            match seen.op {
                Some(Operation::Status) => {
                    r.counts.status += 1;
                    r.lost = None;
                }
                Some(op) if op.occupies_terminal() => {
                    // Concert V2 has no status request: nothing to ask.
                    if op.is_payment() && !seen.v2 {
                        if let Some(lost) = r.lost.take() {
                            found.push((
                                Kind::NoStatusAfterLoss,
                                format!("a new {} after {lost}", op.name()),
                            ));
                        }
                    }
                    if let Some(at) = r.busy_at.take() {
                        let after = now.saturating_duration_since(at);
                        if after < BUSY_PAUSE {
                            found.push((
                                Kind::BusyRetrySoon,
                                format!("retried {} ms after a busy answer", after.as_millis()),
                            ));
                        }
                        r.retries.push_back(now);
                        while r
                            .retries
                            .front()
                            .is_some_and(|t| now.saturating_duration_since(*t) > MINUTE)
                        {
                            r.retries.pop_front();
                        }
                        if r.retries.len() > BUSY_PER_MINUTE {
                            found.push((
                                Kind::BusyRetryOften,
                                format!(
                                    "{} retries after busy answers in a minute",
                                    r.retries.len()
                                ),
                            ));
                            r.retries.clear();
                        }
                    }
                    if op == Operation::Cancel {
                        if let (Some(debit), Some(amount)) = (r.last_debit, seen.amount) {
                            if debit != amount {
                                found.push((
                                    Kind::CancelAmount,
                                    format!("cancellation CB={amount} after a debit of CB={debit}"),
                                ));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        for (k, ex) in found {
            self.record(who, k, &ex);
        }
    }

    /// What became of a request: counts, a lost answer to be asked for, a
    /// busy answer to be waited out, an answer the register did not read.
    pub fn answered(&self, who: &Who, a: &Answered) {
        let mut found: Vec<(Kind, String)> = Vec::new();
        let not_delivered = matches!(&a.delivered, Some(Err(_)));
        if let (true, false) = (not_delivered, a.withheld) {
            match a.closed_after {
                Some(d) if a.transaction => found.push((
                    Kind::GaveUp,
                    format!(
                        "closed {} s into a transaction (terminals take up to 180 s)",
                        d.as_secs()
                    ),
                )),
                _ => {
                    let why = a
                        .delivered
                        .as_ref()
                        .and_then(|d| d.as_ref().err())
                        .cloned()
                        .unwrap_or_default();
                    let split = if a.split { " of a split answer" } else { "" };
                    found.push((Kind::AnswerNotRead, format!("not all{split} read: {why}")));
                }
            }
        }
        {
            let mut t = self.lock();
            let r = t.entry(who, unix_now());
            let tick = r.tick;
            if a.busy {
                r.counts.busy += 1;
                r.busy_at = Some(Instant::now());
            }
            if a.transaction && a.op.is_some_and(Operation::is_payment) {
                r.counts.payments += 1;
                let unknown = a.withheld || a.af == Some(Af::NotEnded);
                if unknown {
                    r.counts.unknown += 1;
                } else if a.approved {
                    r.counts.approved += 1;
                } else {
                    r.counts.declined += 1;
                }
                if a.approved && a.op.is_some_and(Operation::is_debit) {
                    r.last_debit = a.amount;
                }
                if not_delivered || unknown {
                    let what = if unknown && !not_delivered {
                        "an unknown outcome (AF07)"
                    } else {
                        "an answer it did not get"
                    };
                    r.lost = Some(what.to_string());
                }
            }
            if not_delivered && a.transaction {
                r.counts.undelivered += 1;
            }
            if a.taken.is_some() {
                if r.episodes.len() >= episode::MAX_EPISODES {
                    r.episodes.pop_front();
                }
                r.episodes.push_back(Episode {
                    seq: tick,
                    answered: a.clone(),
                    at: Instant::now(),
                    next: None,
                });
            }
        }
        for (k, ex) in found {
            self.record(who, k, &ex);
        }
    }

    /// Bytes the register sent after its request was answered.
    pub fn after(&self, who: &Who, bytes: &[u8]) {
        let (k, ex) = extra_finding(bytes);
        self.record(who, k, &ex);
    }

    /// Forgets every register; how many there were.
    pub fn clear(&self) -> usize {
        let mut t = self.lock();
        let n = t.registers.len();
        t.registers.clear();
        n
    }

    /// How many registers are kept.
    pub fn len(&self) -> usize {
        self.lock().registers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A register's findings, by kind (for tests and the exam).
    pub fn of(&self, who: &Who) -> Vec<(Kind, Finding)> {
        let t = self.lock();
        let Some(r) = t.registers.get(who) else {
            return Vec::new();
        };
        Kind::ALL
            .iter()
            .filter_map(|k| r.findings[k.index()].clone().map(|f| (*k, f)))
            .collect()
    }

    /// Every register's episodes, for the exam.
    pub fn episodes(&self) -> Vec<(Who, Episode)> {
        let t = self.lock();
        t.registers
            .iter()
            .flat_map(|(w, r)| r.episodes.iter().map(move |e| (w.clone(), e.clone())))
            .collect()
    }

    /// `concertctl registers`: one block per register, oldest seen first.
    pub fn report(&self, local: impl Fn(i64) -> clock::Civil) -> String {
        let t = self.lock();
        let mut regs: Vec<(&Who, &Register)> = t.registers.iter().collect();
        regs.sort_by_key(|(w, r)| (r.first, w.ca, w.peer.clone()));
        if regs.is_empty() {
            return "no register seen\n".into();
        }
        let when = |s: i64| {
            let c = local(s);
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                c.year, c.month, c.day, c.hour, c.minute, c.second
            )
        };
        let mut out = String::new();
        for (who, r) in regs {
            let c = &r.counts;
            let _ = writeln!(
                out,
                "{}: first seen {}, last seen {}; {}; {} requests: {} payments \
                 ({} approved, {} declined, {} unknown), {} busy, {} status, {} answers undelivered",
                who.label(),
                when(r.first),
                when(r.last),
                r.protocol,
                c.requests,
                c.payments,
                c.approved,
                c.declined,
                c.unknown,
                c.busy,
                c.status,
                c.undelivered
            );
            for k in Kind::ALL {
                if let Some(f) = &r.findings[k.index()] {
                    let _ = writeln!(
                        out,
                        "  {} {} {} (first {}): {}: {}",
                        k.severity(),
                        f.count,
                        k.name(),
                        when(f.first),
                        f.example,
                        k.reason()
                    );
                }
            }
        }
        out
    }
}

const MINUTE: Duration = Duration::from_secs(60);

/// Bytes besides the request: another request, or a tail.
fn extra_finding(bytes: &[u8]) -> (Kind, String) {
    if tags::starts_request(bytes) {
        let n = bytes.len();
        return (
            Kind::SeveralRequests,
            format!(
                "{n} more bytes beginning a request: {}",
                pan::scrub_cut(bytes, 24)
            ),
        );
    }
    (
        Kind::BytesAfterRequest,
        format!("{} after the request", pan::scrub_cut(bytes, 24)),
    )
}

/// The protocol and version a request names.
fn protocol(seen: &Seen) -> String {
    if seen.v2 {
        return "Concert V2".into();
    }
    match crate::wire::tlv::Frame::decode(seen.body) {
        Ok(f) => match f.get(crate::wire::tlv::tags::CZ) {
            Some(cz) => format!("Concert V3 CZ {}", pan::shown(cz)),
            None => "Concert V3".into(),
        },
        Err(_) => "Concert V3 (unreadable)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(peer: &str, ca: u8) -> Who {
        Who {
            channel: Channel::Tcp,
            peer: peer.into(),
            ca: Some(ca),
        }
    }

    fn debit(body: &[u8]) -> Seen<'_> {
        Seen {
            body,
            segments: 1,
            op: Some(Operation::Debit),
            amount: Some(1000),
            ..Seen::default()
        }
    }

    const ODOO: &[u8] = b"CZ0040300CJ012012345678901CA00201CE003978CD0010CB00512345";

    #[test]
    fn bounded_with_ten_thousand_registers_and_every_kind() {
        let f = Findings::new();
        let pan = "4970101234560674";
        for i in 0..10_000u32 {
            let w = who(
                &format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
                (i % 100) as u8,
            );
            for k in Kind::ALL {
                // Every kind, twice, with a card number and a long text.
                let text = format!("{pan} {}", "x".repeat(500));
                f.record(&w, k, &text);
                f.record(&w, k, &text);
            }
        }
        assert_eq!(f.len(), MAX_REGISTERS);
        let t = f.lock();
        for (w, r) in &t.registers {
            let kept: Vec<_> = r.findings.iter().flatten().collect();
            assert_eq!(kept.len(), Kind::ALL.len(), "{w:?}");
            for fi in kept {
                assert_eq!(fi.count, 2);
                assert!(fi.example.chars().count() <= MAX_EXAMPLE + 3);
                assert!(!fi.example.contains(pan), "{}", fi.example);
            }
        }
        // The newest are kept, the oldest forgotten first.
        assert!(t.registers.keys().any(|w| w.peer == "10.0.39.15"));
        assert!(!t.registers.keys().any(|w| w.peer == "10.0.0.0"));
        drop(t);
        let report = f.report(|s| clock::utc(s, 0));
        assert!(!report.contains(pan));
        assert_eq!(
            report
                .lines()
                .filter(|l| l.starts_with("register "))
                .count(),
            256
        );
        assert_eq!(f.clear(), MAX_REGISTERS);
        assert!(f.is_empty());
    }

    #[test]
    fn a_register_recently_seen_is_not_forgotten() {
        let f = Findings::new();
        let keep = who("192.0.2.1", 1);
        f.record(&keep, Kind::NoCj, "first");
        for i in 0..(MAX_REGISTERS as u32 * 2) {
            f.record(
                &who(&format!("10.0.{}.{}", i >> 8, i & 255), 1),
                Kind::NoCj,
                "x",
            );
            if i % 100 == 0 {
                f.record(&keep, Kind::NoCj, "again");
            }
        }
        assert_eq!(f.of(&keep)[0].1.example, "first");
    }

    #[test]
    fn a_new_sale_after_a_lost_answer_without_status() {
        let f = Findings::new();
        let w = who("127.0.0.2", 1);
        f.request(&w, &debit(ODOO));
        f.answered(
            &w,
            &Answered {
                op: Some(Operation::Debit),
                transaction: true,
                approved: true,
                amount: Some(12345),
                delivered: Some(Err("simulator: silent".into())),
                withheld: true,
                ..Answered::default()
            },
        );
        // concertd withheld it: not the register's fault...
        assert!(f.of(&w).is_empty());
        // ...but a new sale without asking is.
        f.request(&w, &debit(ODOO));
        let k: Vec<Kind> = f.of(&w).into_iter().map(|(k, _)| k).collect();
        assert_eq!(k, [Kind::NoStatusAfterLoss]);
        // Asking first is right.
        let w2 = who("127.0.0.3", 1);
        f.answered(
            &w2,
            &Answered {
                op: Some(Operation::Debit),
                transaction: true,
                delivered: Some(Err("reset".into())),
                withheld: true,
                ..Answered::default()
            },
        );
        let status = Seen {
            body: b"CZ0040300CA00201CD001T",
            op: Some(Operation::Status),
            ..Seen::default()
        };
        f.request(&w2, &status);
        f.request(&w2, &debit(ODOO));
        assert!(f.of(&w2).is_empty());
    }

    #[test]
    fn busy_retries_and_cancellations() {
        let f = Findings::new();
        let w = who("127.0.0.4", 1);
        let busy = Answered {
            op: Some(Operation::Debit),
            busy: true,
            ..Answered::default()
        };
        let t0 = Instant::now();
        f.answered(&w, &busy);
        f.request_at(&w, &debit(ODOO), t0 + Duration::from_millis(200));
        assert_eq!(f.of(&w)[0].0, Kind::BusyRetrySoon);
        for i in 0..12u64 {
            f.answered(&w, &busy);
            f.request_at(&w, &debit(ODOO), t0 + Duration::from_secs(2 + 3 * i));
        }
        assert!(f.of(&w).iter().any(|(k, _)| *k == Kind::BusyRetryOften));

        let w = who("127.0.0.5", 1);
        f.answered(
            &w,
            &Answered {
                op: Some(Operation::Debit),
                transaction: true,
                approved: true,
                amount: Some(1500),
                delivered: Some(Ok(())),
                ..Answered::default()
            },
        );
        let mut cancel = debit(b"CZ0040320CJ012012345678901CA00201CE003978CD0012CB0041200");
        cancel.op = Some(Operation::Cancel);
        cancel.amount = Some(1200);
        f.request(&w, &cancel);
        let found = f.of(&w);
        assert_eq!(found[0].0, Kind::CancelAmount);
        assert!(found[0].1.example.contains("1500"), "{:?}", found[0]);
    }

    #[test]
    fn closed_early_or_gave_up() {
        let f = Findings::new();
        let w = who("127.0.0.6", 1);
        f.answered(
            &w,
            &Answered {
                op: Some(Operation::Debit),
                transaction: true,
                delivered: Some(Err("connection reset by the register".into())),
                split: true,
                ..Answered::default()
            },
        );
        f.answered(
            &w,
            &Answered {
                op: Some(Operation::Debit),
                transaction: true,
                delivered: Some(Err("connection reset by the register".into())),
                closed_after: Some(Duration::from_secs(7)),
                ..Answered::default()
            },
        );
        let found = f.of(&w);
        assert_eq!(found[0].0, Kind::AnswerNotRead);
        assert!(found[0].1.example.contains("split"), "{:?}", found[0]);
        assert_eq!(found[1].0, Kind::GaveUp);
        assert!(found[1].1.example.contains("7 s"), "{:?}", found[1]);
    }

    #[test]
    fn the_report_names_severity_count_example_and_reason() {
        let f = Findings::new();
        let w = who("127.0.0.7", 1);
        let seen = Seen {
            extra: b"\r\n",
            ..debit(b"CZ0040320CJ012012345678901CA00201CE003978CD0010CB0041000BF0010")
        };
        f.request(&w, &seen);
        f.request(&w, &seen);
        let r = f.report(|s| clock::utc(s, 0));
        let mut lines = r.lines();
        let head = lines.next().unwrap();
        assert!(
            head.starts_with("register 01 at tcp 127.0.0.7: first seen "),
            "{r}"
        );
        assert!(head.contains("Concert V3 CZ 0320; 2 requests"), "{r}");
        let rest: Vec<&str> = lines.collect();
        assert!(
            rest[0].starts_with("  warning 2 bytes-after-request (first "),
            "{r}"
        );
        assert!(rest[0].contains("\\x0d\\x0a after the request"), "{r}");
        assert!(rest[1].starts_with("  warning 2 bf-present "), "{r}");
        assert!(rest[1].contains("Ingenico"), "{r}");
    }
}
