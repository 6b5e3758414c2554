//! Plays a plan against one real concertd: the registers' requests, the
//! faults, and after each step what the register got, which transaction
//! the journal gave the request, and which ledger entries the backend
//! wrote for it. The invariants (check.rs) judge it.

use super::exec::PayProgram;
use super::journal::{self, same_masked, Tail};
use super::ledger::{Entry, ExecLedger, Target};
use super::line::{Line, Took};
use super::model::{request, v2_request, Backend, Fault, Op, Plan, Step, Via};
use super::upstream::Upstream;
use crate::util::{Daemon, Spec, CONCERTCTL};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// Only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(20);
/// Short, so that a slow backend costs little; a loaded machine that
/// outruns it turns an answer into AF07, which no invariant forbids.
pub const TX_TIMEOUT_MS: u64 = 600;
/// The transaction-timeout of a `Fault::Busy` step, reloaded before it
/// and undone after: the step's transaction, held at the backend, must
/// still run when the second register's request comes, however late a
/// loaded machine lets the harness send it. Past PATIENCE: only a
/// broken harness or daemon gets there.
pub const HELD_TIMEOUT: Duration = Duration::from_secs(60);

/// One step as it went.
#[derive(Clone, Debug)]
pub struct Obs {
    pub step: Step,
    /// The bytes sent; None when the step could not be built.
    pub req: Option<String>,
    /// What the register got (empty: nothing).
    pub answer: Vec<u8>,
    /// The transaction the journal began for this request.
    pub tx: Option<u64>,
    /// Indexes in the run's ledger of what the backend did for it.
    pub entries: Vec<usize>,
    /// The bytes on the wire when they are not `req`: a V2 request (`req`
    /// is then the V3 request it means, as the journal has it).
    pub wire: Option<String>,
    /// The serial register's view of its request session.
    pub took: Option<Took>,
    /// The second register of a `Fault::Busy` step.
    pub busy: Option<Busy>,
    /// The disk was slow for the step (strace attached).
    pub slowed: bool,
    /// Restarts before the step.
    pub restarts_before: u64,
    /// A serial session concertd broke (bad LRC, cut frame).
    pub line_error: Option<String>,
}

impl Obs {
    fn none(step: &Step) -> Obs {
        Obs {
            step: step.clone(),
            req: None,
            answer: Vec::new(),
            tx: None,
            entries: Vec::new(),
            wire: None,
            took: None,
            busy: None,
            slowed: false,
            restarts_before: 0,
            line_error: None,
        }
    }
}

/// A second register's request while a transaction runs.
#[derive(Clone, Debug)]
pub struct Busy {
    /// The second register's own step (register 07, a debit).
    pub step: Step,
    pub via: Via,
    /// As the journal would have it (V3).
    pub req: String,
    /// The bytes on the wire when they are not `req` (V2).
    pub wire: Option<String>,
    /// What it got (TCP), or the answer of a session (serial, ACKed).
    pub answer: Vec<u8>,
    pub took: Option<Took>,
    /// The transaction begun for it, if any.
    pub tx: Option<u64>,
    /// The step's own transaction had ended in the journal before the
    /// second request was sent: there was nothing to be busy with, and
    /// the second request is an ordinary one (judged as such).
    pub first_ended: bool,
}

pub struct Rig {
    pub plan: Plan,
    pub d: Daemon,
    /// The daemon's configuration lines (those of `Daemon::set_extra`).
    extra: String,
    pay: Option<PayProgram>,
    up: Option<Upstream>,
    exec_ledger: Option<ExecLedger>,
    /// The simulator's decisions, as the harness knows them (the amount
    /// table and the plans it armed).
    sim: Vec<Entry>,
    sim_last_debit: HashMap<u8, (usize, u64)>,
    /// The upstream's entries, attributed to steps by arrival.
    up_entries: Vec<Entry>,
    pub tail: Tail,
    pub obs: Vec<Obs>,
    pub faults: u64,
    pub restarts: u64,
    pub replays_backed: u64,
    pub warning_held: u64,
    /// First step whose answer a restart has not checked yet.
    pub unchecked_from: usize,
    pub violations: Vec<String>,
    /// The serial register, when the plan has a serial line.
    line: Option<Line>,
    /// Counted for the figures.
    pub serial_steps: u64,
    pub busy_refused: u64,
    pub not_taken: u64,
    pub withdrawn: u64,
    pub slowed: u64,
    pub unproven: u64,
    /// Second registers that found the step's transaction ended already.
    pub busy_na: u64,
}

impl Rig {
    pub fn new(plan: &Plan) -> Rig {
        let harness = crate::util::temp_dir();
        let mut extra = format!(
            "transaction-timeout {TX_TIMEOUT_MS}ms\nanswer-extensions payxpert\njournal-size 256K\n"
        );
        if plan.window {
            extra += "retry-window 1h\n";
        }
        let (mut pay, mut up) = (None, None);
        match plan.backend {
            Backend::Simulator => extra += "control @DIR@/control.sock\n",
            Backend::Exec => {
                let p = PayProgram::new(&harness);
                extra += &p.terminal();
                pay = Some(p);
            }
            Backend::Relay => {
                let u = Upstream::start(plan.vary_status);
                extra += &format!("terminal relay tcp {} v3\n", u.addr);
                up = Some(u);
            }
        }
        let line = plan.serial.then(|| Line::new(&harness));
        if let Some(l) = &line {
            extra += &l.config();
        }
        let mut spec = Spec::new(&extra);
        spec.keep_lines = Some(4000);
        spec.die_with_parent = true;
        let d = Daemon::launch(spec);
        if line.is_some() {
            d.wait_log(": open, ");
        }
        let exec_ledger = pay.as_ref().map(|p| ExecLedger::new(p.ledger_path()));
        let tail = Tail::new(d.dir.join("journal"));
        Rig {
            plan: plan.clone(),
            d,
            extra,
            pay,
            up,
            exec_ledger,
            sim: Vec::new(),
            sim_last_debit: HashMap::new(),
            up_entries: Vec::new(),
            tail,
            obs: Vec::new(),
            faults: 0,
            restarts: 0,
            replays_backed: 0,
            warning_held: 0,
            unchecked_from: 0,
            violations: Vec::new(),
            line,
            serial_steps: 0,
            busy_refused: 0,
            not_taken: 0,
            withdrawn: 0,
            slowed: 0,
            unproven: 0,
            busy_na: 0,
        }
    }

    /// ACKs and NAKs the serial register found only after its patience.
    pub fn late_looks(&self) -> u64 {
        self.line.as_ref().map_or(0, |l| l.late_looks)
    }

    /// Every entry of the run's backend.
    pub fn ledger(&self) -> &[Entry] {
        match self.plan.backend {
            Backend::Simulator => &self.sim,
            Backend::Exec => &self.exec_ledger.as_ref().unwrap().entries,
            Backend::Relay => &self.up_entries,
        }
    }

    pub fn tx_of(&self, id: u32) -> Option<u64> {
        self.obs.iter().find(|o| o.step.id == id).and_then(|o| o.tx)
    }

    fn restart(&mut self) {
        self.d.kill9();
        self.d.spawn();
        self.restarts += 1;
        if let Some(l) = &mut self.line {
            self.d.wait_log(": open, ");
            // A session the kill cut.
            l.drain();
        }
    }

    fn ctl(&self, args: &[&str]) {
        let sock = self.d.control_socket();
        let out = std::process::Command::new(CONCERTCTL)
            .arg("-s")
            .arg(&sock)
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .expect("concertctl");
        assert!(
            out.status.success(),
            "concertctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn backend_len(&mut self) -> usize {
        match self.plan.backend {
            Backend::Exec => {
                let l = self.exec_ledger.as_mut().unwrap();
                l.refresh();
                l.entries.len()
            }
            Backend::Relay => self.up.as_ref().unwrap().len(),
            Backend::Simulator => 0,
        }
    }

    /// The begun record of `req` appended since journal line `from`.
    fn begun_since(&mut self, from: usize, req: &str) -> Option<u64> {
        self.tail.refresh();
        self.tail.lines[from..]
            .iter()
            .find(|l| l.event == "begun" && same_masked(&l.frame, req))
            .map(|l| l.id)
    }

    /// Its ended record, or (serial) its withdrawn one.
    fn closed(&mut self, id: u64) -> bool {
        self.tail.refresh();
        self.tail
            .lines
            .iter()
            .rev()
            .any(|l| l.id == id && l.closes())
    }

    /// Plays one step; the invariants are checked by the caller.
    pub fn step(&mut self, step: &Step) {
        if let Op::Settle { reg } = step.op {
            self.settle(reg);
            return;
        }
        let built = match &step.op {
            Op::Retry { of } => self
                .obs
                .iter()
                .find(|o| o.step.id == *of)
                .and_then(|o| Some((o.wire.clone().or(o.req.clone())?, o.req.clone()?))),
            _ if step.via == Via::SerialV2 => v2_request(step),
            _ => {
                let tx_of = |i: u32| self.tx_of(i);
                request(step, &tx_of).map(|r| (r.clone(), r))
            }
        };
        let Some((wire, req)) = built else {
            self.obs.push(Obs::none(step));
            return;
        };
        if step.fault.is_fault() {
            self.faults += 1;
        }
        let mut o = Obs::none(step);
        o.restarts_before = self.restarts;
        if wire != req {
            o.wire = Some(wire.clone());
        }
        let held = matches!(step.fault, Fault::Busy(_));
        if held {
            self.reload_timeout(Some(HELD_TIMEOUT));
        }
        self.arm(step.fault);
        self.tail.refresh();
        let jfrom = self.tail.lines.len();
        let up_from = self.up.as_ref().map(|u| u.len()).unwrap_or(0);
        let fsize = (step.fault == Fault::FullDisk).then(|| {
            let size = std::fs::metadata(self.d.dir.join("journal"))
                .map(|m| m.len())
                .unwrap_or(0);
            // Room for the begun record (the request and 60 bytes), not
            // for the ended one (the request, again, and more).
            crate::util::set_fsize(self.d.pid(), size + req.len() as u64 + 80)
        });
        let slow = if step.fault == Fault::SlowDisk {
            super::slow::attach(self.d.pid())
        } else {
            None
        };
        o.slowed = slow.is_some();
        // Past this, concertd has decided on the request: it began a
        // transaction for it (its begun record is in the journal) or it
        // never will (an answer, a NAK, its connection closed, "not
        // started" logged).
        let mut restarted = if step.via.serial() {
            self.serial_step(step, &wire, &req, jfrom, &mut o)
        } else {
            self.tcp_step(step, &req, jfrom, &mut o)
        };
        self.disarm();
        if let Some(old) = fsize {
            crate::util::restore_fsize(self.d.pid(), old);
        }
        // A full disk keeps the ended record out until the restart.
        if matches!(step.fault, Fault::KillAfter | Fault::FullDisk) {
            self.restart();
            restarted = true;
        }
        // The transaction this request began, and its end (under the
        // slow disk too: its records are part of the step).
        let tx = self.begun_since(jfrom, &req);
        let second = o.busy.as_ref().and_then(|b| b.tx);
        for id in tx.iter().chain(second.iter()) {
            self.wait_closed(*id);
        }
        if held {
            self.reload_timeout(None);
        }
        // Every request concertd sent upstream for the step is recorded.
        if let Some(u) = &self.up {
            u.quiesce(PATIENCE);
        }
        drop(slow);
        if o.slowed {
            self.slowed += 1;
        }
        if step.via.serial() {
            self.serial_steps += 1;
        }
        let answer = o.answer.clone();
        let busy = o.busy.clone().filter(|b| b.tx.is_some());
        let mut claims = vec![(step.clone(), req.clone(), tx, answer)];
        if let Some(b) = &busy {
            claims.push((b.step.clone(), b.req.clone(), b.tx, b.answer.clone()));
        }
        let mut entries = self.attribute(&claims, up_from).into_iter();
        o.entries = entries.next().unwrap_or_default();
        o.tx = tx;
        o.req = Some(req);
        let restarts_before = o.restarts_before;
        self.obs.push(o);
        // A second register's request that began a transaction is judged
        // as one of its own, by every invariant (and by (h), when the
        // step's transaction still ran).
        if let Some(b) = busy {
            self.obs.push(Obs {
                step: b.step.clone(),
                req: Some(b.req.clone()),
                answer: b.answer.clone(),
                tx: b.tx,
                entries: entries.next().unwrap_or_default(),
                wire: b.wire.clone(),
                took: b.took,
                busy: None,
                slowed: false,
                restarts_before,
                line_error: None,
            });
        }
        if restarted {
            super::check::after_restart(self);
        }
    }

    /// A step by TCP; true when concertd was restarted.
    fn tcp_step(&mut self, step: &Step, req: &str, jfrom: usize, o: &mut Obs) -> bool {
        let bfrom = self.backend_len();
        let mark = self.d.mark();
        let mut s = TcpStream::connect(self.d.addr).expect("connect");
        s.set_nodelay(true).unwrap();
        let me = s.local_addr().expect("local address");
        let _ = s.write_all(req.as_bytes());
        let _ = s.shutdown(Shutdown::Write);
        let mut answer = Vec::new();
        let mut restarted = false;
        match step.fault {
            Fault::GiveUp => {
                // Closes once the transaction began, or at once when the
                // answer comes first (refused before the backend).
                let _ =
                    self.wait_until(&mut s, &mut answer, |r| r.begun_since(jfrom, req).is_some());
                answer.clear();
                drop(s);
            }
            Fault::KillMid | Fault::Reload | Fault::Busy(_) => {
                // The simulator keeps no ledger to wait on: its
                // transaction, delay 0, may be over already.
                let reached = self.plan.backend == Backend::Simulator
                    || self.wait_until(&mut s, &mut answer, |r| r.backend_len() > bfrom);
                if reached {
                    let tx = self.begun_since(jfrom, req);
                    restarted = self.mid(step, o, tx);
                }
                read_rest(&mut s, &mut answer, PATIENCE);
            }
            // The register's patience: 1 s, as on the serial line.
            Fault::SlowDisk => {
                read_rest(&mut s, &mut answer, super::line::ACK_PATIENCE);
                if answer.is_empty() {
                    // It gave up before the disk let the begun record in.
                    // Whether concertd begins a transaction for it all
                    // the same is known once it is done with the
                    // connection (it may refuse it without a record):
                    // its log says so, however slow the disk or the
                    // machine.
                    drop(s);
                    let done = format!("tcp {me}: closed");
                    assert!(
                        self.d.wait_log_since(mark, &done).is_some(),
                        "concertd never closed {me}"
                    );
                }
            }
            _ => read_rest(&mut s, &mut answer, PATIENCE),
        }
        o.answer = answer;
        restarted
    }

    /// While the backend holds the step's transaction: the kill, the
    /// reload or the second register; then the backend is let go.
    fn mid(&mut self, step: &Step, o: &mut Obs, tx: Option<u64>) -> bool {
        let mut restarted = false;
        match step.fault {
            Fault::KillMid => {
                self.restart();
                restarted = true;
            }
            Fault::Reload => {
                let mark = self.d.mark();
                self.d.signal(libc::SIGHUP);
                self.d
                    .wait_log_since(mark, "reloaded: listen ")
                    .expect("reloaded after SIGHUP");
            }
            Fault::Busy(via) => o.busy = Some(self.second(step, via, tx)),
            _ => {}
        }
        self.release(tx);
        restarted
    }

    /// A second register's debit (register 07, a CF of its own) while the
    /// step's transaction (`first`) runs.
    fn second(&mut self, step: &Step, via: Via, first: Option<u64>) -> Busy {
        let s2 = Step {
            id: step.id,
            op: Op::Custom {
                reg: 7,
                cd: '0',
                amount: 1000,
                // Ten characters: the whole private field of a V2 frame,
                // which the journal has without padding.
                cf: format!("B{:09}", step.id),
                im: None,
            },
            fault: Fault::None,
            via,
        };
        let built = match via {
            Via::SerialV2 => v2_request(&s2),
            _ => request(&s2, &|_| None).map(|r| (r.clone(), r)),
        };
        let (wire, req) = built.expect("a debit is a request");
        self.tail.refresh();
        let jfrom = self.tail.lines.len();
        // Read from the journal before the request goes: a step's
        // transaction already ended (by itself: the harness holds its
        // backend) leaves nothing to be busy with, whatever the timing.
        let first_ended = first.is_some_and(|id| self.closed(id));
        let mut b = Busy {
            step: s2,
            via,
            req: req.clone(),
            wire: (wire != req).then(|| wire.clone()),
            answer: Vec::new(),
            took: None,
            tx: None,
            first_ended,
        };
        if via.serial() {
            if let Some(mut line) = self.line.take() {
                let took = line.request(wire.as_bytes());
                b.took = Some(took);
                if took == Took::Ack {
                    // It was taken: its answer comes once it ran.
                    if let Ok(Some(a)) = self.session(&mut line, false, jfrom, &req) {
                        b.answer = a;
                    }
                }
                self.line = Some(line);
            }
        } else {
            let mut s = TcpStream::connect(self.d.addr).expect("connect");
            let _ = s.write_all(wire.as_bytes());
            let _ = s.shutdown(Shutdown::Write);
            read_rest(&mut s, &mut b.answer, PATIENCE);
        }
        b.tx = self.begun_since(jfrom, &req);
        b
    }

    /// A step on the serial line; true when concertd was restarted.
    fn serial_step(
        &mut self,
        step: &Step,
        wire: &str,
        req: &str,
        jfrom: usize,
        o: &mut Obs,
    ) -> bool {
        let bfrom = self.backend_len();
        let mark = self.d.mark();
        let Some(mut line) = self.line.take() else {
            return false;
        };
        let took = line.request(wire.as_bytes());
        o.took = Some(took);
        let mut restarted = false;
        let mut answer = None;
        if took == Took::Ack {
            let held = matches!(step.fault, Fault::KillMid | Fault::Reload | Fault::Busy(_))
                && self.plan.backend != Backend::Simulator;
            // ACKed once begun: a request that began no transaction (an
            // answer at once, a refusal) is not held by the backend; one
            // that did may still end before the backend (refused there).
            let tx = self.begun_since(jfrom, req);
            if let (true, Some(id)) = (held, tx) {
                let deadline = Instant::now() + PATIENCE;
                let mut reached = false;
                while Instant::now() < deadline {
                    reached = self.backend_len() > bfrom;
                    if reached || self.closed(id) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                if reached {
                    self.line = Some(line);
                    restarted = self.mid(step, o, Some(id));
                    line = self.line.take().expect("the serial line");
                }
            }
            if !restarted {
                answer = Some(self.session(&mut line, step.fault == Fault::GiveUp, jfrom, req));
            }
        } else {
            // Not taken, for the register. What concertd does with it is
            // waited for: the worker's "not started" (withdrawn), a busy
            // NAK, or a transaction that runs anyway, whose answer session
            // is taken off the line (the register ignores it) and judged.
            // A frame that never went (no ACK to the ENQ) leaves nothing
            // to wait for. Silence (no ACK in time) is followed by
            // concertd's word all the same, late: a NAK, or an ACK and
            // then the answer's session.
            let late = match took {
                Took::NoAck => line.late_word(PATIENCE),
                _ => None,
            };
            if late == Some(concert::wire::framing::ACK) {
                let _ = self.session(&mut line, false, jfrom, req);
            }
            let deadline = Instant::now() + PATIENCE;
            while took != Took::Unsent && late != Some(concert::wire::framing::ACK) {
                if self.d.log_has_since(mark, "not started")
                    || self.d.log_has_since(mark, "refused busy")
                    || Instant::now() > deadline
                {
                    break;
                }
                if let Some(id) = self.begun_since(jfrom, req) {
                    self.tail.refresh();
                    let ran = self
                        .tail
                        .lines
                        .iter()
                        .any(|l| l.id == id && l.event == "ended");
                    let gone = self
                        .tail
                        .lines
                        .iter()
                        .any(|l| l.id == id && l.event == "withdrawn");
                    if ran {
                        let _ = self.session(&mut line, false, jfrom, req);
                        break;
                    }
                    if gone {
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            self.not_taken += 1;
        }
        match answer {
            Some(Ok(Some(a))) => o.answer = a,
            Some(Err(e)) => o.line_error = Some(e),
            _ => {}
        }
        self.line = Some(line);
        restarted
    }

    /// The terminal's answer session for the step's request: waited for
    /// while its transaction runs, and briefly once it closed (or at
    /// once, for a request that began none: an identification, a
    /// status, a refusal).
    fn session(
        &mut self,
        line: &mut Line,
        refuse: bool,
        jfrom: usize,
        req: &str,
    ) -> Result<Option<Vec<u8>>, String> {
        let deadline = Instant::now() + PATIENCE;
        line.answer(refuse, || {
            let over = match self.begun_since(jfrom, req) {
                Some(id) => self.delivery_known(id),
                None => false,
            };
            !over && Instant::now() < deadline
        })
    }

    /// Whether the journal says how transaction `id`'s answer session
    /// ended: `delivered` (the register ACKed its last frame),
    /// `undelivered` (it did not), or `withdrawn` (there is none).
    fn delivery_known(&mut self, id: u64) -> bool {
        self.tail.refresh();
        self.tail.lines.iter().rev().any(|l| {
            l.id == id && matches!(l.event.as_str(), "delivered" | "undelivered" | "withdrawn")
        })
    }

    /// Waits for transaction `id`'s ended (or withdrawn) record.
    fn wait_closed(&mut self, id: u64) {
        let deadline = Instant::now() + PATIENCE;
        while !self.closed(id) {
            assert!(
                Instant::now() < deadline,
                "tx {id} never ended in the journal"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Reloads concertd with a transaction-timeout of `t` (None: the
    /// run's own), applied from the next transaction.
    fn reload_timeout(&mut self, t: Option<Duration>) {
        let extra = match t {
            Some(t) => format!("{}transaction-timeout {}ms\n", self.extra, t.as_millis()),
            None => self.extra.clone(),
        };
        self.d.set_extra(&extra);
        let mark = self.d.mark();
        self.d.signal(libc::SIGHUP);
        self.d
            .wait_log_since(mark, "reloaded: listen ")
            .expect("reloaded after SIGHUP");
    }

    /// Waits for the relay to settle the register's last transaction, or
    /// to ask its upstream twice more (each ask after the previous one
    /// was judged): no sleep, and bounded.
    fn settle(&mut self, reg: u8) {
        let Some(tx) = self
            .obs
            .iter()
            .rev()
            .find(|o| o.tx.is_some() && o.step.op.reg() == Some(reg))
            .and_then(|o| o.tx)
        else {
            return;
        };
        let Some(up) = &self.up else { return };
        let asks = up.asks();
        let deadline = Instant::now() + PATIENCE;
        loop {
            self.tail.refresh();
            let settled = self
                .tail
                .lines
                .iter()
                .any(|l| l.id == tx && l.event == "resolved");
            let up = self.up.as_ref().unwrap();
            if settled || up.asks() >= asks + 2 || Instant::now() > deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn arm(&self, f: Fault) {
        if let Some(p) = &self.pay {
            match f {
                Fault::Slow => p.arm("slow"),
                Fault::Die => p.arm("die"),
                Fault::KillMid | Fault::Reload | Fault::Busy(_) => p.arm("gate"),
                _ => {}
            }
        }
        if let Some(u) = &self.up {
            match f {
                Fault::Slow
                | Fault::LoseRequest
                | Fault::LoseAnswer
                | Fault::KillMid
                | Fault::Reload => u.arm(f),
                // Held like a reload's: until the harness lets it go.
                Fault::Busy(_) => u.arm(Fault::Reload),
                _ => {}
            }
        }
        if let Fault::Sim(plan) = f {
            let mut args = vec!["next"];
            args.extend(plan.split(' '));
            self.ctl(&args);
        }
    }

    fn disarm(&self) {
        if let Some(p) = &self.pay {
            p.disarm();
        }
        if let Some(u) = &self.up {
            u.disarm();
        }
        if matches!(self.plan.backend, Backend::Simulator) {
            // A plan no transaction took must not shape the next one.
            let sock = self.d.control_socket();
            let _ = std::process::Command::new(CONCERTCTL)
                .arg("-s")
                .arg(&sock)
                .args(["next", "clear"])
                .env_remove("RUST_LOG")
                .output();
        }
    }

    /// Lets the backend go on with transaction `tx`: at once, whether or
    /// not it reached its hold yet.
    fn release(&self, tx: Option<u64>) {
        if let (Some(p), Some(tx)) = (&self.pay, tx) {
            p.release(tx);
        }
        if let Some(u) = &self.up {
            u.release();
        }
    }

    /// Polls `cond` until it holds, or the answer ends first (true when
    /// `cond` held).
    fn wait_until(
        &mut self,
        s: &mut TcpStream,
        answer: &mut Vec<u8>,
        mut cond: impl FnMut(&mut Rig) -> bool,
    ) -> bool {
        let _ = s.set_read_timeout(Some(Duration::from_millis(1)));
        let deadline = Instant::now() + PATIENCE;
        let mut buf = [0u8; 4096];
        loop {
            if cond(self) {
                return true;
            }
            match s.read(&mut buf) {
                Ok(0) => return cond(self),
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                // EINTR: a read with a timeout is interrupted when the
                // harness is stopped and continued (signal(7)).
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => return cond(self),
            }
            assert!(Instant::now() < deadline, "neither answer nor progress");
        }
    }

    /// Which ledger entries the backend wrote for each of the requests
    /// of a step (the step's own, and a second register's that began a
    /// transaction): (step, request, its transaction, its answer).
    fn attribute(
        &mut self,
        claims: &[(Step, String, Option<u64>, Vec<u8>)],
        up_from: usize,
    ) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); claims.len()];
        match self.plan.backend {
            Backend::Exec => {
                let l = self.exec_ledger.as_mut().unwrap();
                l.refresh();
                for (k, (_, _, tx, _)) in claims.iter().enumerate() {
                    if let Some(id) = tx {
                        out[k] = l
                            .entries
                            .iter()
                            .filter(|e| e.tx == Some(*id))
                            .map(|e| e.seq)
                            .collect();
                    }
                }
            }
            Backend::Relay => {
                let new = self.up.as_ref().unwrap().entries(up_from);
                let frames: Vec<String> = claims
                    .iter()
                    .map(|(_, r, _, _)| super::check::expected_frame(Backend::Relay, r))
                    .collect();
                for mut e in new {
                    // The upstream knows neither concertd's id nor IM:
                    // they come from the request it arrived for, the
                    // step's own unless it is the second register's
                    // (which carries a CF of its own).
                    let k = (1..claims.len())
                        .find(|&k| same_masked(&e.frame, &frames[k]))
                        .unwrap_or(0);
                    let (_, req, tx, _) = &claims[k];
                    e.tx = *tx;
                    e.refund_of = crate::util::elements(req.as_bytes())
                        .into_iter()
                        .find(|(t, _)| t == "IM")
                        .and_then(|(_, v)| v.parse().ok());
                    out[k].push(self.up_entries.len());
                    self.up_entries.push(e);
                }
            }
            Backend::Simulator => {
                for (k, (step, req, tx, answer)) in claims.iter().enumerate() {
                    out[k] = self.simulate(step, req, *tx, answer);
                }
            }
        }
        out
    }

    /// What the simulator decided for a transaction: the plan the harness
    /// armed, else the amount table; a cancellation takes the register's
    /// last approved debit of its amount.
    fn simulate(&mut self, step: &Step, req: &str, tx: Option<u64>, _answer: &[u8]) -> Vec<usize> {
        let Some(id) = tx else { return Vec::new() };
        // Withdrawn (serial, NAKed before it was taken): the simulator
        // was never asked. Its model has no other way to know it.
        self.tail.refresh();
        if self
            .tail
            .lines
            .iter()
            .any(|l| l.id == id && l.event == "withdrawn")
        {
            return Vec::new();
        }
        let els = crate::util::elements(req.as_bytes());
        let get = |t: &str| els.iter().find(|(k, _)| k == t).map(|(_, v)| v.clone());
        let reg: u8 = get("CA").and_then(|v| v.parse().ok()).unwrap_or(0);
        let amount: u64 = get("CB").and_then(|v| v.parse().ok()).unwrap_or(0);
        let partial = get("BF").as_deref() == Some("1");
        let op = match get("CD").as_deref() {
            Some("0") => "debit",
            Some("7") => "deferred-debit",
            Some("1") => "credit",
            Some("2") => "cancel",
            _ => return Vec::new(),
        };
        let plan = match step.fault {
            Fault::Sim(p) => p.split(' ').next().unwrap_or(""),
            _ => "",
        };
        let mut charged = amount;
        let mut of = None;
        let performed = if op == "cancel" {
            match self.sim_last_debit.get(&reg) {
                Some(&(i, a)) if a == amount && matches!(plan, "" | "approve") => {
                    of = Some(Target::Entry(i));
                    true
                }
                _ => false,
            }
        } else {
            match plan {
                "approve" => true,
                "" => match amount % 100 {
                    51..=56 => false,
                    57 if partial => {
                        charged = amount / 2;
                        true
                    }
                    57 => false,
                    _ => true,
                },
                _ => false,
            }
        };
        let seq = self.sim.len();
        if performed {
            match op {
                "debit" | "deferred-debit" => {
                    self.sim_last_debit.insert(reg, (seq, charged));
                }
                "cancel" => {
                    self.sim_last_debit.remove(&reg);
                }
                _ => {}
            }
        }
        self.sim.push(Entry {
            seq,
            performed,
            tx: Some(id),
            op: op.to_string(),
            reg,
            charged: if performed { charged } else { 0 },
            refund_of: get("IM").and_then(|v| v.parse().ok()),
            of,
            frame: req.to_string(),
        });
        vec![seq]
    }

    /// The journal and its generations, read whole.
    pub fn journal_all(&self) -> Vec<journal::JLine> {
        journal::read_all(&self.d.dir.join("journal"))
    }
}

/// The answer until concertd closes, or the register's `patience` ends
/// (it then gives up, and closes).
fn read_rest(s: &mut TcpStream, answer: &mut Vec<u8>, patience: Duration) {
    let until = Instant::now() + patience;
    let mut buf = [0u8; 4096];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            // A read with a timeout fails with EINTR when the harness is
            // stopped and continued (signal(7)): not the end of anything.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
