//! Stage 5: noise bursts on a serial line (a pty pair) between V2 E+
//! sessions.

use crate::daemon::{start_in, subdir};
use crate::journal::read_journal;
use crate::report::Stage;
use crate::rng::{env_num, Rng};
use crate::tcp::{ms, percentile};
use crate::util::{pty_pair, text};
use concert::wire::framing::{lrc, ACK, ENQ, EOT, ETB, ETX, NAK, STX};
use serialport::{SerialPort, TTYPort};
use std::io::{ErrorKind, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// Serial timers of stage 5, short as in tests/serial.rs.
const FRAME_TIMEOUT_MS: u64 = 200;
const SERIAL_TIMERS: &str = "serial-ack-timeout 400ms\nserial-frame-timeout 200ms\n\
     serial-eot-timeout 200ms\nserial-retry-pause 50ms\nserial-retry 100ms\n";

/// The cash register on the master side of a pty pair; concertd opens the
/// slave through a symlink.
struct Register {
    master: TTYPort,
    _slave: TTYPort,
}

fn pty(link: &Path) -> Register {
    let (mut master, slave) = pty_pair(link);
    master.set_timeout(Duration::from_millis(20)).unwrap();
    Register {
        master,
        _slave: slave,
    }
}

fn serial_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![STX];
    f.extend_from_slice(payload);
    f.push(ETX);
    f.push(lrc(&f[1..]));
    f
}

impl Register {
    fn send(&mut self, b: &[u8]) -> Result<(), String> {
        self.master
            .write_all(b)
            .and_then(|()| self.master.flush())
            .map_err(|e| format!("pty write: {e}"))
    }

    fn byte_within(&mut self, d: Duration) -> Result<Option<u8>, String> {
        let until = Instant::now() + d;
        let mut b = [0u8; 1];
        while Instant::now() < until {
            match self.master.read(&mut b) {
                Ok(1) => return Ok(Some(b[0])),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::TimedOut => {}
                Err(e) => return Err(format!("pty read: {e}")),
            }
        }
        Ok(None)
    }

    fn expect(&mut self, want: u8, what: &str, d: Duration) -> Result<(), String> {
        match self.byte_within(d)? {
            Some(b) if b == want => Ok(()),
            Some(b) => Err(format!("{what}: got 0x{b:02x}, expected 0x{want:02x}")),
            None => Err(format!("{what}: nothing within {d:?}")),
        }
    }

    /// Reads for `d`, then until the line is quiet; what came.
    fn drain(&mut self, d: Duration) -> Result<Vec<u8>, String> {
        let until = Instant::now() + d;
        let mut got = Vec::new();
        while Instant::now() < until {
            if let Some(b) = self.byte_within(until - Instant::now())? {
                got.push(b);
            }
        }
        while let Some(b) = self.byte_within(Duration::from_millis(50))? {
            got.push(b);
        }
        Ok(got)
    }

    /// A V2 E+ session, strictly: ENQ/ACK, request/ACK, EOT; then the
    /// terminal's ENQ/ACK, its 83-byte frame/ACK, its EOT.
    fn session(&mut self, amount: u64) -> Result<(), String> {
        let step = Duration::from_secs(3);
        let req = format!("01{amount:08}110978          A010B010");
        self.send(&[ENQ])?;
        self.expect(ACK, "ACK to our ENQ", step)?;
        self.send(&serial_frame(req.as_bytes()))?;
        match self.byte_within(step)? {
            Some(ACK) => {}
            Some(NAK) => return Err("request NAKed".into()),
            Some(b) => return Err(format!("request: got 0x{b:02x}, expected ACK")),
            None => return Err("request: no ACK".into()),
        }
        self.send(&[EOT])?;
        self.expect(ENQ, "terminal's ENQ", step)?;
        self.send(&[ACK])?;
        let mut wire = Vec::new();
        self.expect(STX, "STX of the answer", step)?;
        wire.push(STX);
        let mut payload = Vec::new();
        let end = loop {
            match self.byte_within(step)? {
                Some(b @ (ETX | ETB)) => break b,
                Some(b) => payload.push(b),
                None => return Err(format!("answer cut after {:?}", text(&payload))),
            }
        };
        wire.extend_from_slice(&payload);
        wire.push(end);
        let l = self
            .byte_within(step)?
            .ok_or_else(|| "no LRC".to_string())?;
        wire.push(l);
        if end != ETX || l != lrc(&payload) ^ ETX {
            return Err(format!("bad answer frame {:?}", text(&wire)));
        }
        self.send(&[ACK])?;
        self.expect(EOT, "terminal's EOT", step)?;
        if wire.len() != 83 {
            return Err(format!("answer of {} bytes, 83 expected", wire.len()));
        }
        let head = format!("010{amount:08}");
        if !payload.starts_with(head.as_bytes()) || &payload[67..70] != b"978" {
            return Err(format!("unexpected answer {:?}", text(&payload)));
        }
        Ok(())
    }
}

pub fn stage_serial(mut rng: Rng, root: &Path) -> Stage {
    let mut st = Stage::new("serial", "serial noise bursts between V2 E+ sessions");
    let dir = subdir(root, "serial");
    let link = dir.join("tty");
    let mut reg = pty(&link);
    let d = start_in(
        &dir,
        &format!(
            "serial {}\nsimulator-delay 0\n{SERIAL_TIMERS}",
            link.display()
        ),
    );
    if d.wait_log_since(0, ": open, 9600 baud 7E1").is_none() {
        st.lose("the serial line was never opened".into());
        return st;
    }
    let rounds = env_num("STRESS_SERIAL_ROUNDS", 100);
    // After arbitrary noise, concertd may be inside a session it thinks
    // the register opened: wait until every timer has fired.
    let quiet = Duration::from_millis(3 * FRAME_TIMEOUT_MS + 150);
    let (mut idle_noise, mut any_noise, mut noise_bytes, mut echoed) = (0u64, 0u64, 0u64, 0u64);
    let mut times = Vec::new();
    for i in 0..rounds {
        st.tried += 1;
        let n = rng.range(1, 200) as usize;
        noise_bytes += n as u64;
        let result = if rng.chance(50) {
            // Noise an idle line ignores: no ENQ, no 'C' (masked to 7 bits).
            idle_noise += 1;
            let noise: Vec<u8> = (0..n)
                .map(|_| loop {
                    let b = rng.next() as u8;
                    if !matches!(b & 0x7f, 0x05 | b'C') {
                        break b;
                    }
                })
                .collect();
            reg.send(&noise)
        } else {
            any_noise += 1;
            let noise = rng.bytes(n);
            reg.send(&noise).and_then(|()| {
                let got = reg.drain(quiet)?;
                if !got.is_empty() {
                    echoed += 1;
                }
                Ok(())
            })
        };
        let amount = 100 + rng.below(9_900) * 100 + rng.below(50);
        let t = Instant::now();
        let result = result.and_then(|()| reg.session(amount));
        times.push(t.elapsed());
        if let Err(e) = result {
            st.lose(format!("round {i}: session failed: {e}"));
            // Let the line settle before the next round.
            let _ = reg.drain(quiet);
        }
    }
    // Each session is one transaction, ended and delivered; noise made
    // none. Delivery records follow the register's last ACK: wait a little.
    let until = Instant::now() + Duration::from_secs(3);
    let (recs, problems) = loop {
        let (recs, problems) = read_journal(&dir.join("journal"));
        let delivered = recs.values().filter(|r| r.delivered.is_some()).count();
        if delivered >= recs.len() || Instant::now() >= until {
            break (recs, problems);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for p in problems {
        st.lose(format!("journal: {p}"));
    }
    let ended = recs.values().filter(|r| r.ended.is_some()).count();
    let delivered = recs.values().filter(|r| r.delivered == Some(true)).count();
    let failed = st.lost;
    if failed == 0
        && (recs.len() as u64 != rounds || ended != recs.len() || delivered != recs.len())
    {
        st.lose(format!(
            "journal: {} transactions, {ended} ended, {delivered} delivered, for {rounds} sessions",
            recs.len()
        ));
    }
    st.fig("journal_transactions", recs.len());
    st.fig("journal_delivered", delivered);
    st.daemon_log(&d);
    // What the noise did to the link layer, as concertd logged it.
    st.fig("daemon_bad_frames", d.count_log("bad frame ("));
    st.fig(
        "daemon_back_to_idle",
        d.count_log("bad frames, back to idle"),
    );
    st.fig(
        "daemon_frame_timeouts",
        d.count_log("fired waiting for the request frame"),
    );
    st.fig("daemon_raw_requests", d.count_log("bad raw request"));
    times.sort();
    st.fig("rounds", rounds);
    st.fig("idle_noise_rounds", idle_noise);
    st.fig("random_noise_rounds", any_noise);
    st.fig("noise_bytes", noise_bytes);
    st.fig("noise_answered", echoed);
    st.fig("session_p50_ms", ms(percentile(&times, 0.5)));
    st.fig(
        "session_max_ms",
        ms(*times.last().unwrap_or(&Duration::ZERO)),
    );
    st.summary = format!(
        "{} sessions after {noise_bytes} noise bytes ({idle_noise} idle-safe bursts, \
         {any_noise} random), session p50 {} ms",
        rounds - st.lost,
        ms(percentile(&times, 0.5))
    );
    st
}
