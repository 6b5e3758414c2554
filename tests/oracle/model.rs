//! What the registers do: operations and faults, drawn from a seed or
//! written by hand (the seed scenarios), and the request bytes each one
//! sends.

use super::rng::Rng;
use std::fmt;

/// The backend a run's daemon uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Simulator,
    Exec,
    Relay,
}

/// How a payment's private data (CF) is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cf {
    /// A new one for every payment attempt, as "Safe retry" in concertd-protocol.7 asks.
    Unique,
    /// The same for every payment, as some JavaScript clients send.
    Constant,
    Absent,
    /// A unique one holding a 16-digit number that passes Luhn (an order
    /// number a JavaScript client builds from a card-like counter): the
    /// journal masks it, so after a restart a retry of it cannot be
    /// proved the same request (concertd.8 "Safe retry": not run, AF07).
    Masked,
}

/// How a step's register reaches concertd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Tcp,
    /// A V3 message in a frame on the serial line (a pty pair).
    SerialV3,
    /// A Concert V2 E+ fixed frame on the serial line.
    SerialV2,
}

impl Via {
    pub fn serial(self) -> bool {
        self != Via::Tcp
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Debit {
        reg: u8,
        amount: u64,
        cf: Cf,
        deferred: bool,
        partial: bool,
    },
    /// `im`: the step id of the debit refunded by reference (its tx id
    /// is put in IM when the request is sent).
    Credit {
        reg: u8,
        amount: u64,
        cf: Cf,
        im: Option<u32>,
    },
    Cancel {
        reg: u8,
        amount: u64,
    },
    Status {
        reg: u8,
    },
    Duplicata {
        reg: u8,
    },
    Ident {
        reg: u8,
    },
    /// The request of step `of` again, byte for byte: a register's retry.
    Retry {
        of: u32,
    },
    /// No request: waits until the relay has settled the register's
    /// last transaction, or has asked its upstream twice more about it.
    Settle {
        reg: u8,
    },
    /// A hand-written request whose CF is `cf` (for a seed scenario that
    /// needs a CF the generator would not draw), a credit when `im` is set.
    Custom {
        reg: u8,
        cd: char,
        amount: u64,
        cf: String,
        im: Option<u32>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// The register closes its connection once the transaction has begun.
    GiveUp,
    /// concertd killed -9 after the answer, restarted on the same journal.
    KillAfter,
    /// concertd killed -9 once the backend performed (or lost) the
    /// request and before the answer, restarted.
    KillMid,
    /// SIGHUP with the same configuration while the backend holds the
    /// transaction.
    Reload,
    /// The backend takes longer than transaction-timeout (after charging).
    Slow,
    /// The payment program charges, then dies without printing.
    Die,
    /// The upstream closes without performing the request.
    LoseRequest,
    /// The upstream performs the request and closes without answering.
    LoseAnswer,
    /// The journal's file size limit lets the begun record in and not
    /// the ended one (a full disk); concertd restarted after.
    FullDisk,
    /// A simulator quirk or plan, armed with `concertctl next`.
    Sim(&'static str),
    /// The disk slow for the step: fdatasync(2) delayed (strace's fault
    /// injection) past the register's patience, the ACK on the serial
    /// line (1 s), the answer on TCP (the register gives up at 1 s).
    SlowDisk,
    /// While the step's transaction is held at the backend, a second
    /// register sends a debit by this way: it must get the busy answer
    /// (a NAK on the serial line) at once, never queued, never charged.
    Busy(Via),
}

impl Fault {
    pub fn is_fault(&self) -> bool {
        *self != Fault::None
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Stable across shrinking: CF values and references use it.
    pub id: u32,
    pub op: Op,
    pub fault: Fault,
    /// A retry goes the way of the step it repeats.
    pub via: Via,
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub backend: Backend,
    /// `retry-window 1h` when set.
    pub window: bool,
    /// The fake upstream's status answers carry a counter (a duplicate
    /// ticket printed with the time).
    pub vary_status: bool,
    /// The daemon has a serial line, a pty pair the harness's serial
    /// register holds (steps by `Via::SerialV3` and `Via::SerialV2`).
    pub serial: bool,
    pub steps: Vec<Step>,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} {:?}", self.id, self.op)?;
        if self.via != Via::Tcp {
            write!(f, " by {:?}", self.via)?;
        }
        if self.fault.is_fault() {
            write!(f, " + {:?}", self.fault)?;
        }
        Ok(())
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "backend {:?}{}, retry-window {}, upstream status {}",
            self.backend,
            if self.serial { ", serial line" } else { "" },
            if self.window { "1h" } else { "off" },
            if self.vary_status {
                "varies"
            } else {
                "constant"
            }
        )?;
        for s in &self.steps {
            writeln!(f, "  {s}")?;
        }
        Ok(())
    }
}

impl Op {
    pub fn reg(&self) -> Option<u8> {
        match self {
            Op::Debit { reg, .. }
            | Op::Credit { reg, .. }
            | Op::Cancel { reg, .. }
            | Op::Status { reg }
            | Op::Duplicata { reg }
            | Op::Ident { reg }
            | Op::Settle { reg }
            | Op::Custom { reg, .. } => Some(*reg),
            Op::Retry { .. } => None,
        }
    }

    /// The step ids this one needs.
    pub fn refers(&self) -> Option<u32> {
        match self {
            Op::Credit { im: Some(i), .. } | Op::Custom { im: Some(i), .. } => Some(*i),
            Op::Retry { of } => Some(*of),
            _ => None,
        }
    }
}

pub fn el(tag: &str, v: &str) -> String {
    format!("{tag}{:03}{v}", v.len())
}

pub const CONSTANT_CF: &str = "0123456789";

/// The request of an operation (None for a retry, which repeats another
/// step's bytes). `tx_of` gives the transaction id a step's request got.
pub fn request(step: &Step, tx_of: &dyn Fn(u32) -> Option<u64>) -> Option<String> {
    let head = |reg: u8, cd: &str| {
        format!(
            "{}{}{}{}",
            el("CZ", "0320"),
            el("CJ", "247300123456"),
            el("CA", &format!("{reg:02}")),
            ""
        ) + &el("CD", cd)
    };
    let cf = |c: Cf, what: &str| match c {
        Cf::Unique => el("CF", &format!("{what}{:06}", step.id)),
        Cf::Constant => el("CF", CONSTANT_CF),
        Cf::Absent => String::new(),
        Cf::Masked => el("CF", &card_like(step.id)),
    };
    // A referenced step that got no transaction: an id no journal holds.
    let im = |i: u32| el("IM", &tx_of(i).unwrap_or(1).to_string());
    let pay = |reg: u8, cd: &str, amount: u64| {
        let mut s = head(reg, cd);
        // Tags in a register's usual order: CB before CD.
        s = s.replace(
            &el("CD", cd),
            &format!("{}{}", el("CB", &amount.to_string()), el("CD", cd)),
        );
        s + &el("CE", "978")
    };
    Some(match &step.op {
        Op::Debit {
            reg,
            amount,
            cf: c,
            deferred,
            partial,
        } => {
            let mut s = pay(*reg, if *deferred { "7" } else { "0" }, *amount) + &cf(*c, "S");
            if *partial {
                s += &el("BF", "1");
            }
            s
        }
        Op::Credit {
            reg,
            amount,
            cf: c,
            im: r,
        } => {
            let mut s = pay(*reg, "1", *amount) + &cf(*c, "R");
            if let Some(r) = r {
                s += &im(*r);
            }
            s
        }
        Op::Cancel { reg, amount } => pay(*reg, "2", *amount),
        Op::Status { reg } => head(*reg, "T"),
        Op::Duplicata { reg } => head(*reg, "3"),
        Op::Ident { reg } => head(*reg, "I"),
        Op::Retry { .. } | Op::Settle { .. } => return None,
        Op::Custom {
            reg,
            cd,
            amount,
            cf: c,
            im: r,
        } => {
            let mut s = pay(*reg, &cd.to_string(), *amount) + &el("CF", c);
            if let Some(r) = r {
                s += &im(*r);
            }
            s
        }
    })
}

/// A 16-digit number that passes Luhn, different for every step: what
/// the journal masks as a card number.
pub fn card_like(id: u32) -> String {
    let body = format!("497010{:09}", id);
    let digits: Vec<u32> = body.bytes().map(|b| u32::from(b - b'0')).collect();
    // The check digit: doubling every second digit from the right, the
    // check digit's place counting as the first.
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 0 {
                if d * 2 > 9 {
                    d * 2 - 9
                } else {
                    d * 2
                }
            } else {
                d
            }
        })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

/// Whether a step can be sent as a V2 E+ request: a debit (not deferred,
/// no partial approval), a credit without IM, a cancellation.
pub fn v2_able(op: &Op) -> bool {
    match op {
        Op::Debit {
            deferred, partial, ..
        } => !deferred && !partial,
        Op::Credit { im, .. } => im.is_none(),
        Op::Cancel { .. } => true,
        Op::Custom { cd, im, .. } => matches!(cd, '0' | '1' | '2') && im.is_none(),
        _ => false,
    }
}

/// A V2 E+ request (34 characters, the long reply asked, card mode) and
/// the V3 request it means, as concertd.8 "V2 request" spells it (the
/// harness's own reading: the journal's begun record and the payment
/// program's CONCERT_FRAME must be that).
pub fn v2_request(step: &Step) -> Option<(String, String)> {
    let (reg, cd, amount, private) = match &step.op {
        Op::Debit {
            reg, amount, cf, ..
        } => (*reg, '0', *amount, v2_private(*cf, step.id)),
        Op::Credit {
            reg, amount, cf, ..
        } => (*reg, '1', *amount, v2_private(*cf, step.id)),
        Op::Cancel { reg, amount } => (*reg, '2', *amount, v2_private(Cf::Absent, step.id)),
        Op::Custom {
            reg,
            cd,
            amount,
            cf,
            ..
        } => (*reg, *cd, *amount, format!("{cf:<10.10}")),
        _ => return None,
    };
    if !v2_able(&step.op) {
        return None;
    }
    let wire = format!("{reg:02}{amount:08}11{cd}978{private}A010B010");
    let mut v3 = el("CZ", "0320")
        + &el("CA", &format!("{reg:02}"))
        + &el("CB", &format!("{amount:02}"))
        + &el("CD", &cd.to_string())
        + &el("CE", "978");
    if private.bytes().any(|b| b != b' ') {
        v3 += &el("CF", &private);
    }
    Some((wire, v3))
}

fn v2_private(cf: Cf, id: u32) -> String {
    match cf {
        Cf::Unique | Cf::Masked => format!("V2S{id:07}"),
        Cf::Constant => CONSTANT_CF.to_string(),
        Cf::Absent => " ".repeat(10),
    }
}

/// Amounts in cents: a few approved ones that repeat (the common case of
/// two sales of one amount), and the simulator table's special endings.
const AMOUNTS: &[u64] = &[
    500, 800, 1000, 1000, 1000, 1250, 4200, 1051, 1052, 1053, 1054, 1055, 1056, 1057,
];

/// `ops` operations with faults for one daemon, drawn from `rng`.
pub fn generate(rng: &mut Rng, backend: Backend, ops: usize) -> Plan {
    generate_on(rng, backend, ops, None)
}

/// As `generate`, with or without a serial line when `serial` says.
pub fn generate_on(rng: &mut Rng, backend: Backend, ops: usize, serial: Option<bool>) -> Plan {
    let window = rng.chance(50);
    let vary_status = backend == Backend::Relay && rng.chance(70);
    let drawn = rng.chance(50);
    let serial = serial.unwrap_or(drawn);
    let mut steps: Vec<Step> = Vec::new();
    // Debit steps per register, to refund and cancel them.
    let mut debits: Vec<(u32, u8, u64)> = Vec::new();
    let regs = 1 + rng.below(3) as u8;
    for id in 0..ops as u32 {
        let reg = 1 + rng.below(regs as u64) as u8;
        let amount = rng.pick(AMOUNTS);
        let cf = match rng.below(10) {
            0..=4 => Cf::Unique,
            5 => Cf::Masked,
            6 | 7 => Cf::Absent,
            // Constant CF: mostly with the window off, the man page's
            // warning checked with it on.
            _ => Cf::Constant,
        };
        let last_debit = debits.iter().rev().find(|d| d.1 == reg).copied();
        let op = match rng.below(100) {
            0..=34 => Op::Debit {
                reg,
                amount,
                cf,
                deferred: rng.chance(15),
                partial: amount % 100 == 57 && rng.chance(60),
            },
            35..=44 => Op::Credit {
                reg,
                amount,
                cf,
                im: None,
            },
            45..=56 if !debits.is_empty() => {
                let d = debits[rng.below(debits.len() as u64) as usize];
                let amount = match rng.below(4) {
                    0 => d.2,
                    1 => d.2 / 2,
                    2 => 300,
                    _ => d.2 + 100,
                };
                Op::Credit {
                    reg,
                    amount: amount.max(1),
                    cf,
                    im: Some(d.0),
                }
            }
            57..=64 => Op::Cancel {
                reg,
                amount: match last_debit {
                    Some(d) if rng.chance(80) => d.2,
                    _ => amount,
                },
            },
            65..=76 => Op::Status { reg },
            77..=80 => Op::Duplicata { reg },
            81..=83 => Op::Ident { reg },
            84..=93 if !steps.is_empty() => {
                // A retry of a recent payment.
                let recent: Vec<u32> = steps
                    .iter()
                    .rev()
                    .take(6)
                    .filter(|s| {
                        matches!(
                            s.op,
                            Op::Debit { .. } | Op::Credit { .. } | Op::Cancel { .. }
                        )
                    })
                    .map(|s| s.id)
                    .collect();
                match recent.first() {
                    Some(&of) => Op::Retry { of },
                    None => Op::Status { reg },
                }
            }
            _ => Op::Debit {
                reg,
                amount,
                cf,
                deferred: false,
                partial: false,
            },
        };
        if let Op::Debit { amount, .. } = op {
            debits.push((id, reg, amount));
        }
        let payment = matches!(
            op,
            Op::Debit { .. } | Op::Credit { .. } | Op::Cancel { .. } | Op::Retry { .. }
        );
        // A retry goes the way its request went; V2 carries only some
        // payments, and no status, duplicata nor identification.
        let via = match op {
            Op::Retry { of } => steps
                .iter()
                .find(|s| s.id == of)
                .map(|s| s.via)
                .unwrap_or(Via::Tcp),
            _ if !serial || rng.chance(55) => Via::Tcp,
            _ if v2_able(&op) && rng.chance(50) => Via::SerialV2,
            _ => Via::SerialV3,
        };
        let fault = if rng.below(1000) < SLOW_DISK_PER_MILLE && !matches!(op, Op::Settle { .. }) {
            Fault::SlowDisk
        } else if payment && rng.chance(25) {
            draw_fault(rng, backend, serial, via)
        } else if rng.chance(2) {
            Fault::KillAfter
        } else {
            Fault::None
        };
        steps.push(Step { id, op, fault, via });
    }
    Plan {
        backend,
        window,
        vary_status,
        serial,
        steps,
    }
}

/// Steps with a slow disk, per thousand: each costs a few seconds (two
/// syncs past the register's patience, strace attached and detached).
pub const SLOW_DISK_PER_MILLE: u64 = 2;

/// A second register, while the step's transaction is held: by TCP, or
/// by the serial line when the step itself is not on it.
fn busy(rng: &mut Rng, serial: bool, via: Via) -> Fault {
    Fault::Busy(if serial && !via.serial() && rng.chance(60) {
        rng.pick(&[Via::SerialV3, Via::SerialV2])
    } else {
        Via::Tcp
    })
}

fn draw_fault(rng: &mut Rng, backend: Backend, serial: bool, via: Via) -> Fault {
    let common = [Fault::GiveUp, Fault::KillAfter];
    // The backends whose transaction the harness can hold.
    if backend != Backend::Simulator && rng.chance(15) {
        return busy(rng, serial, via);
    }
    match backend {
        Backend::Simulator => match rng.below(8) {
            0 | 1 => rng.pick(&common),
            2 => Fault::Reload,
            _ => Fault::Sim(rng.pick(&[
                "approve silent",
                "approve reset",
                "approve crlf",
                "unknown",
                "refuse silent",
                "approve late=5ms",
                "not-ended",
            ])),
        },
        Backend::Exec => rng.pick(&[
            Fault::GiveUp,
            Fault::KillAfter,
            Fault::KillMid,
            Fault::Reload,
            Fault::Slow,
            Fault::Die,
        ]),
        Backend::Relay => rng.pick(&[
            Fault::GiveUp,
            Fault::KillAfter,
            Fault::KillMid,
            Fault::Reload,
            Fault::Slow,
            Fault::LoseRequest,
            Fault::LoseAnswer,
            Fault::LoseRequest,
            Fault::LoseAnswer,
        ]),
    }
}
