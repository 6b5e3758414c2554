//! Plays a plan against one real concertd: the registers' requests, the
//! faults, and after each step what the register got, which transaction
//! the journal gave the request, and which ledger entries the backend
//! wrote for it. The invariants (check.rs) judge it.

use super::exec::PayProgram;
use super::journal::{self, Tail};
use super::ledger::{Entry, ExecLedger, Target};
use super::model::{request, Backend, Fault, Op, Plan, Step};
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
}

pub struct Rig {
    pub plan: Plan,
    pub d: Daemon,
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
        let mut spec = Spec::new(&extra);
        spec.keep_lines = Some(4000);
        spec.die_with_parent = true;
        let d = Daemon::launch(spec);
        let exec_ledger = pay.as_ref().map(|p| ExecLedger::new(p.ledger_path()));
        let tail = Tail::new(d.dir.join("journal"));
        Rig {
            plan: plan.clone(),
            d,
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
        }
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
            .find(|l| l.event == "begun" && l.frame == req)
            .map(|l| l.id)
    }

    fn ended(&mut self, id: u64) -> bool {
        self.tail.refresh();
        self.tail
            .lines
            .iter()
            .rev()
            .any(|l| l.id == id && l.event == "ended")
    }

    /// Plays one step; the invariants are checked by the caller.
    pub fn step(&mut self, step: &Step) {
        if let Op::Settle { reg } = step.op {
            self.settle(reg);
            return;
        }
        let req = match &step.op {
            Op::Retry { of } => self
                .obs
                .iter()
                .find(|o| o.step.id == *of)
                .and_then(|o| o.req.clone()),
            _ => {
                let tx_of = |i: u32| self.tx_of(i);
                request(step, &tx_of)
            }
        };
        let Some(req) = req else {
            self.obs.push(Obs {
                step: step.clone(),
                req: None,
                answer: Vec::new(),
                tx: None,
                entries: Vec::new(),
            });
            return;
        };
        if step.fault.is_fault() {
            self.faults += 1;
        }
        self.arm(step.fault);
        self.tail.refresh();
        let jfrom = self.tail.lines.len();
        let bfrom = self.backend_len();
        let up_from = self.up.as_ref().map(|u| u.len()).unwrap_or(0);
        let fsize = (step.fault == Fault::FullDisk).then(|| {
            let size = std::fs::metadata(self.d.dir.join("journal"))
                .map(|m| m.len())
                .unwrap_or(0);
            // Room for the begun record (the request and 60 bytes), not
            // for the ended one (the request, again, and more).
            crate::util::set_fsize(self.d.pid(), size + req.len() as u64 + 80)
        });
        let mut s = TcpStream::connect(self.d.addr).expect("connect");
        s.set_nodelay(true).unwrap();
        let _ = s.write_all(req.as_bytes());
        let _ = s.shutdown(Shutdown::Write);
        let mut answer = Vec::new();
        let mut restarted = false;
        match step.fault {
            Fault::GiveUp => {
                // Closes once the transaction began, or at once when the
                // answer comes first (refused before the backend).
                let _ = self.wait_until(&mut s, &mut answer, |r| {
                    r.begun_since(jfrom, &req).is_some()
                });
                answer.clear();
                drop(s);
            }
            Fault::KillMid | Fault::Reload => {
                // The simulator keeps no ledger to wait on: its
                // transaction, delay 0, may be over already.
                let reached = self.plan.backend == Backend::Simulator
                    || self.wait_until(&mut s, &mut answer, |r| r.backend_len() > bfrom);
                if reached {
                    if step.fault == Fault::KillMid {
                        self.restart();
                        restarted = true;
                        self.release();
                    } else {
                        let mark = self.d.mark();
                        self.d.signal(libc::SIGHUP);
                        self.d
                            .wait_log_since(mark, "reloaded: ")
                            .expect("reloaded after SIGHUP");
                        self.release();
                    }
                }
                read_rest(&mut s, &mut answer);
            }
            _ => read_rest(&mut s, &mut answer),
        }
        self.disarm();
        if let Some(old) = fsize {
            crate::util::restore_fsize(self.d.pid(), old);
        }
        if matches!(step.fault, Fault::KillAfter | Fault::FullDisk) {
            self.restart();
            restarted = true;
        }
        // The transaction this request began, and its end.
        let tx = self.begun_since(jfrom, &req);
        if let Some(id) = tx {
            let deadline = Instant::now() + PATIENCE;
            while !self.ended(id) {
                assert!(
                    Instant::now() < deadline,
                    "tx {id} never ended in the journal"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let entries = self.attribute(step, &req, tx, &answer, up_from);
        self.obs.push(Obs {
            step: step.clone(),
            req: Some(req),
            answer,
            tx,
            entries,
        });
        if restarted {
            super::check::after_restart(self);
        }
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
                Fault::KillMid | Fault::Reload => p.arm("gate"),
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

    fn release(&self) {
        if let Some(p) = &self.pay {
            // The program may not have opened its gate yet.
            let deadline = Instant::now() + Duration::from_secs(2);
            while !p.try_release() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
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
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return cond(self),
            }
            assert!(Instant::now() < deadline, "neither answer nor progress");
        }
    }

    /// Which ledger entries the backend wrote for this request.
    fn attribute(
        &mut self,
        step: &Step,
        req: &str,
        tx: Option<u64>,
        answer: &[u8],
        up_from: usize,
    ) -> Vec<usize> {
        match self.plan.backend {
            Backend::Exec => {
                let l = self.exec_ledger.as_mut().unwrap();
                l.refresh();
                match tx {
                    Some(id) => l
                        .entries
                        .iter()
                        .filter(|e| e.tx == Some(id))
                        .map(|e| e.seq)
                        .collect(),
                    None => Vec::new(),
                }
            }
            Backend::Relay => {
                let new = self.up.as_ref().unwrap().entries(up_from);
                let im = crate::util::elements(req.as_bytes())
                    .into_iter()
                    .find(|(t, _)| t == "IM")
                    .and_then(|(_, v)| v.parse().ok());
                let mut idx = Vec::new();
                for mut e in new {
                    // The upstream knows neither concertd's id nor IM:
                    // they come from the request it arrived for.
                    e.tx = tx;
                    e.refund_of = im;
                    idx.push(self.up_entries.len());
                    self.up_entries.push(e);
                }
                idx
            }
            Backend::Simulator => self.simulate(step, req, tx, answer),
        }
    }

    /// What the simulator decided for a transaction: the plan the harness
    /// armed, else the amount table; a cancellation takes the register's
    /// last approved debit of its amount.
    fn simulate(&mut self, step: &Step, req: &str, tx: Option<u64>, _answer: &[u8]) -> Vec<usize> {
        let Some(id) = tx else { return Vec::new() };
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

fn read_rest(s: &mut TcpStream, answer: &mut Vec<u8>) {
    let _ = s.set_read_timeout(Some(PATIENCE));
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(_) => return,
        }
    }
}
