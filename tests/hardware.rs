//! Real serial ports, 7E1 with parity: the one thing a pty cannot show.
//! Needs two ports joined by a null-modem cable: CONCERTD_TEST_PORT for
//! concertd and CONCERTD_TEST_PEER for the register.

use crate::util::*;
use concert::wire::framing::{lrc, ACK, ENQ, ETX, NAK, STX};
use std::io::{Read, Write};
use std::time::Duration;

fn ports() -> (String, String) {
    let p = std::env::var("CONCERTD_TEST_PORT").expect("CONCERTD_TEST_PORT names concertd's port");
    let q =
        std::env::var("CONCERTD_TEST_PEER").expect("CONCERTD_TEST_PEER names the register's port");
    (p, q)
}

#[test]
fn v2_payment_at_7e1() {
    let (port, peer) = ports();
    let d = Daemon::start(&format!("serial {port}\nserial-format 7E1"));
    d.wait_log(": open, 9600 baud 7E1");
    let o = d.concert(&["-s", &peer, "--format", "7E1", "--v2", "pay", "10"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).starts_with("approved: 10.00 EUR"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn parity_errors_are_naked() {
    let (port, peer) = ports();
    let d = Daemon::start(&format!("serial {port}\nserial-format 7E1"));
    d.wait_log(": open, 9600 baud 7E1");
    // The register's side at 7O1: every byte arrives with a parity error,
    // which the terminal's UART turns into 0x00, so the LRC cannot match.
    let mut r = serialport::new(&peer, 9600)
        .data_bits(serialport::DataBits::Seven)
        .parity(serialport::Parity::Odd)
        .timeout(Duration::from_secs(3))
        .open()
        .unwrap();
    r.write_all(&[ENQ]).unwrap();
    let mut b = [0u8; 1];
    // ENQ itself arrives garbled: no ACK. Switch to even parity for ENQ.
    let _ = r.read(&mut b);
    r.set_parity(serialport::Parity::Even).unwrap();
    r.write_all(&[ENQ]).unwrap();
    r.read_exact(&mut b).unwrap();
    assert_eq!(b[0] & 0x7f, ACK);
    r.set_parity(serialport::Parity::Odd).unwrap();
    let payload = b"0100001000110978          A010B010";
    let mut f = vec![STX];
    f.extend_from_slice(payload);
    f.push(ETX);
    f.push(lrc(&f[1..]));
    r.write_all(&f).unwrap();
    r.set_parity(serialport::Parity::Even).unwrap();
    r.read_exact(&mut b).unwrap();
    assert_eq!(b[0] & 0x7f, NAK);
}
