//! A fake upstream V3 terminal on 127.0.0.1:0 for `terminal relay tcp`:
//! it performs what it receives by the amount table, keeps a ledger in
//! the order requests came, answers CD=T with the register's last
//! transaction as a real terminal does, and has the faults of a real one:
//! it loses a request, performs and loses the answer, holds the answer
//! (past transaction-timeout, or until the harness lets it go), and its
//! status answers may vary between asks (a duplicate ticket with a
//! counter in it).
//!
//! Its entries are tied to the step being played when they are recorded
//! (mod.rs): so a step ends only once every connection concertd made to
//! it has been read (`quiesce`), lest a request concertd sent and gave up
//! on before a starved upstream thread read it be recorded during, and
//! taken for, the next step.

use super::ledger::{Entry, Target};
use super::model::{el, Fault};
use crate::util::elements;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    entries: Vec<Entry>,
    /// For the next payment request.
    fault: Option<Fault>,
    /// Each register's last payment's answer.
    last: HashMap<u8, String>,
    /// Each register's last approved debit not cancelled: entry, amount.
    last_debit: HashMap<u8, (usize, u64)>,
    vary: bool,
    asks: u64,
    auth: u64,
    /// Set by the harness: a held answer may go.
    released: bool,
    stopped: bool,
    /// Connections accepted whose request is not yet read and recorded.
    pending: u64,
    /// The harness's probes read (`quiesce`).
    probes: u64,
}

/// What the harness's probe connection sends.
const PROBE: &[u8] = b"PROBE";

pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Upstream {
    pub fn start(vary: bool) -> Upstream {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            vary,
            auth: 100_000,
            ..State::default()
        }));
        let st = Arc::clone(&state);
        std::thread::spawn(move || {
            for s in l.incoming() {
                if st.lock().unwrap().stopped {
                    return;
                }
                let Ok(s) = s else { continue };
                // Counted in accept order, which is the order concertd
                // connected in.
                st.lock().unwrap().pending += 1;
                let st = Arc::clone(&st);
                std::thread::spawn(move || serve(s, &st));
            }
        });
        Upstream { addr, state }
    }

    pub fn arm(&self, f: Fault) {
        let mut g = self.state.lock().unwrap();
        g.fault = Some(f);
        g.released = false;
    }

    pub fn disarm(&self) {
        self.state.lock().unwrap().fault = None;
    }

    pub fn release(&self) {
        self.state.lock().unwrap().released = true;
    }

    /// Status requests served so far.
    pub fn asks(&self) -> u64 {
        self.state.lock().unwrap().asks
    }

    pub fn len(&self) -> usize {
        self.state.lock().unwrap().entries.len()
    }

    pub fn entries(&self, from: usize) -> Vec<Entry> {
        self.state.lock().unwrap().entries[from..].to_vec()
    }

    /// Returns once every connection made to the upstream before this
    /// call has had its request read (and recorded, for a payment): a
    /// probe connection goes after them; connections are accepted in the
    /// order they came, so once the probe is read, those before it are
    /// all counted in `pending`, which is then waited to empty.
    pub fn quiesce(&self, patience: Duration) {
        let probes = self.state.lock().unwrap().probes;
        let mut s = TcpStream::connect(self.addr).expect("connect to the upstream");
        let _ = s.write_all(PROBE);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let deadline = Instant::now() + patience;
        loop {
            {
                let g = self.state.lock().unwrap();
                if g.probes > probes && g.pending == 0 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the upstream never read the requests sent to it"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.state.lock().unwrap().stopped = true;
        let _ = TcpStream::connect(self.addr);
    }
}

fn read_request(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while concert::wire::request::parse(&buf, &[978]).is_err() {
        match s.read(&mut chunk) {
            // EINTR (stopped and continued, signal(7)): read again.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf
}

fn get(els: &[(String, String)], tag: &str) -> Option<String> {
    els.iter().find(|(t, _)| t == tag).map(|(_, v)| v.clone())
}

fn serve(mut s: TcpStream, st: &Mutex<State>) {
    let buf = read_request(&mut s);
    {
        // Read: no longer pending. A payment is recorded below under the
        // same lock it is taken out under, before anyone can look.
        let mut g = st.lock().unwrap();
        if buf == PROBE {
            g.probes += 1;
            g.pending -= 1;
            return;
        }
        let payment = String::from_utf8(buf.clone()).ok().is_some_and(|r| {
            concert::wire::tlv::Frame::decode(r.as_bytes()).is_ok()
                && get(&elements(r.as_bytes()), "CD").as_deref() != Some("T")
        });
        if !payment {
            g.pending -= 1;
        }
    }
    let Ok(req) = String::from_utf8(buf) else {
        return;
    };
    if concert::wire::tlv::Frame::decode(req.as_bytes()).is_err() {
        return;
    }
    let els = elements(req.as_bytes());
    let reg: u8 = get(&els, "CA").and_then(|v| v.parse().ok()).unwrap_or(0);
    let cd = get(&els, "CD").unwrap_or_default();
    if cd == "T" {
        let answer = {
            let mut g = st.lock().unwrap();
            g.asks += 1;
            let head = format!(
                "{}{}{}",
                el("CZ", "0320"),
                el("CA", &format!("{reg:02}")),
                el("CD", "T")
            );
            match g.last.get(&reg) {
                Some(a) if g.vary => {
                    let ticket =
                        concert::wire::base64::encode(format!("DUPLICATA {}", g.asks).as_bytes());
                    format!(
                        "{a}{}",
                        el("ZT", &format!("{}{}", el("CK", "100"), el("AK", &ticket)))
                    )
                }
                Some(a) => a.clone(),
                None => format!("{head}AE00201AF00200"),
            }
        };
        let _ = s.write_all(answer.as_bytes());
        return;
    }
    let amount: u64 = get(&els, "CB").and_then(|v| v.parse().ok()).unwrap_or(0);
    let partial = get(&els, "BF").as_deref() == Some("1");
    let (fault, answer, performed_entry) = {
        let mut g = st.lock().unwrap();
        g.pending -= 1;
        let fault = g.fault.take().unwrap_or(Fault::None);
        let seq = g.entries.len();
        let op = match cd.as_str() {
            "0" => "debit",
            "7" => "deferred-debit",
            "1" => "credit",
            "2" => "cancel",
            _ => "other",
        }
        .to_string();
        let mut e = Entry {
            seq,
            performed: false,
            tx: None,
            op: op.clone(),
            reg,
            charged: 0,
            refund_of: None,
            of: None,
            frame: req.clone(),
        };
        if fault == Fault::LoseRequest {
            g.entries.push(e);
            drop(g);
            return;
        }
        let mut charged = amount;
        let decline = match op.as_str() {
            "cancel" => match g.last_debit.get(&reg) {
                Some(&(idx, a)) if a == amount => {
                    e.of = Some(Target::Entry(idx));
                    None
                }
                _ => Some("04"),
            },
            "other" => Some("12"),
            _ => match amount % 100 {
                51 => Some("04"),
                52 => Some("05"),
                53 => Some("06"),
                55 => Some("08"),
                56 => Some("02"),
                57 if partial => {
                    charged = amount / 2;
                    None
                }
                57 => Some("04"),
                _ => None,
            },
        };
        let answer = match decline {
            Some(af) => format!("{req}AE00201{}", el("AF", af)),
            None => {
                e.performed = true;
                e.charged = charged;
                g.auth += 1;
                let mut a = req.clone();
                if charged != amount {
                    a = a.replace(
                        &el("CB", &amount.to_string()),
                        &el("CB", &charged.to_string()),
                    );
                }
                if amount % 100 == 54 {
                    // Charged, and the terminal itself does not know.
                    format!("{a}AE00201AF00207")
                } else {
                    format!("{a}AE00210{}", el("AC", &g.auth.to_string()))
                }
            }
        };
        if e.performed {
            match op.as_str() {
                "debit" | "deferred-debit" => {
                    g.last_debit.insert(reg, (seq, charged));
                }
                "cancel" => {
                    g.last_debit.remove(&reg);
                }
                _ => {}
            }
        }
        // The status answer about it, its own CD kept.
        g.last.insert(reg, answer.clone());
        let performed = e.performed;
        g.entries.push(e);
        (fault, answer, performed)
    };
    let _ = performed_entry;
    match fault {
        Fault::LoseAnswer => {}
        Fault::Slow | Fault::KillMid | Fault::Reload => {
            // Held until the harness lets it go or concertd gives up.
            let _ = s.set_read_timeout(Some(Duration::from_millis(2)));
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut b = [0u8; 64];
            loop {
                if st.lock().unwrap().released {
                    let _ = s.write_all(answer.as_bytes());
                    break;
                }
                match s.read(&mut b) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock
                                | std::io::ErrorKind::TimedOut
                                | std::io::ErrorKind::Interrupted
                        ) => {}
                    Err(_) => break,
                }
                if Instant::now() > deadline {
                    break;
                }
            }
        }
        _ => {
            let _ = s.write_all(answer.as_bytes());
        }
    }
}
