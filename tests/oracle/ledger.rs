//! What the backends really did: one entry per charge, refund or
//! cancellation performed, or declined, or (the upstream) lost before
//! performing. The payment program and the fake upstream write them
//! before they answer; nothing here comes from concertd.

/// A cancellation's debit, as the backend itself knew it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The transaction id the payment program was given for the debit.
    Tx(u64),
    /// The position of the debit's entry in the same ledger.
    Entry(usize),
}

#[derive(Clone, Debug)]
pub struct Entry {
    /// Position in its backend's ledger.
    pub seq: usize,
    /// Money moved (a charge, a refund, a cancellation).
    pub performed: bool,
    /// The transaction id concertd gave the payment program.
    pub tx: Option<u64>,
    /// debit, deferred-debit, credit, cancel.
    pub op: String,
    pub reg: u8,
    /// What moved, in cents (the approved amount after a partial one).
    pub charged: u64,
    /// The payment program's CONCERT_REFUND_OF.
    pub refund_of: Option<u64>,
    pub of: Option<Target>,
    /// The request as the backend got it.
    pub frame: String,
}

impl Entry {
    /// Parses one line of the payment program's ledger:
    /// `performed|declined ID OP REG CHARGED REFUND_OF|- OF|- FRAME`.
    pub fn from_exec_line(seq: usize, line: &str) -> Option<Entry> {
        let mut f = line.splitn(8, ' ');
        let kind = f.next()?;
        let tx = f.next()?.parse().ok();
        let op = f.next()?.to_string();
        let reg = f.next()?.parse().ok()?;
        let charged = f.next()?.parse().ok()?;
        let refund_of = f.next()?.parse().ok();
        let of = f.next()?.parse().ok().map(Target::Tx);
        let frame = f.next()?.to_string();
        Some(Entry {
            seq,
            performed: kind == "performed",
            tx,
            op,
            reg,
            charged,
            refund_of,
            of,
            frame,
        })
    }
}

/// Reads the lines a payment program appended since the last call.
pub struct ExecLedger {
    path: std::path::PathBuf,
    offset: usize,
    pub entries: Vec<Entry>,
    pub bad: Vec<String>,
}

impl ExecLedger {
    pub fn new(path: std::path::PathBuf) -> ExecLedger {
        ExecLedger {
            path,
            offset: 0,
            entries: Vec::new(),
            bad: Vec::new(),
        }
    }

    pub fn refresh(&mut self) {
        let bytes = std::fs::read(&self.path).unwrap_or_default();
        if bytes.len() <= self.offset {
            return;
        }
        let new = &bytes[self.offset..];
        // Only whole lines: the program may be writing one now.
        let Some(end) = new.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        for line in String::from_utf8_lossy(&new[..end]).lines() {
            let seq = self.entries.len();
            match Entry::from_exec_line(seq, line) {
                Some(e) => self.entries.push(e),
                None => self.bad.push(line.to_string()),
            }
        }
        self.offset += end + 1;
    }
}
