//! Requests as a register sends them, and what a right answer is.

use crate::util::text;
use concert::wire::tlv::Frame;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

pub fn debit(ca: &str, amount: u64) -> String {
    let a = amount.to_string();
    format!(
        "CZ0040320CJ012247300123456CA002{ca}CB{:03}{a}CD0010CE003978",
        a.len()
    )
}

pub fn status(ca: &str) -> String {
    format!("CZ0040320CA002{ca}CD001T")
}

pub fn ping(ca: &str) -> String {
    format!("CZ0040320CA002{ca}CD001I")
}

pub fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Reads until the terminal closes; a reset keeps what came before it.
pub fn read_all(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(v),
            Ok(n) => v.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(v),
            Err(e) => return Err(e),
        }
    }
}

/// One request on a fresh connection; `shut` closes our sending side
/// after it (else concertd finds the request's end and closes first).
pub fn exchange(
    addr: SocketAddr,
    req: &[u8],
    shut: bool,
    timeout: Duration,
) -> std::io::Result<Vec<u8>> {
    let mut s = connect(addr, timeout)?;
    s.write_all(req)?;
    if shut {
        s.shutdown(Shutdown::Write)?;
    }
    read_all(&mut s)
}

/// Closes with a reset rather than a FIN.
pub fn abort(s: TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt with a linger struct on a socket we own.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(s);
}

/// The value of `tag` in a decodable answer.
pub fn field(answer: &[u8], tag: &str) -> Option<String> {
    let f = Frame::decode(answer).ok()?;
    f.elements()
        .iter()
        .find(|e| e.tag.as_str() == tag)
        .map(|e| text(&e.value))
}

/// A well-formed busy answer to `req`: decodes, echoes the request,
/// `AE=01` and no `AF`.
pub fn check_busy(req: &str, answer: &[u8]) -> Result<(), String> {
    if let Err((_, e)) = Frame::decode(answer) {
        return Err(format!("does not decode ({e}): {:?}", text(answer)));
    }
    if !answer.starts_with(req.as_bytes()) {
        return Err(format!("no request echo: {:?}", text(answer)));
    }
    if field(answer, "AE").as_deref() != Some("01") || field(answer, "AF").is_some() {
        return Err(format!("not AE=01 without AF: {:?}", text(answer)));
    }
    Ok(())
}

/// An approved answer to `req`.
pub fn check_approved(req: &str, answer: &[u8]) -> Result<(), String> {
    if Frame::decode(answer).is_err() || !answer.starts_with(req.as_bytes()) {
        return Err(format!("malformed: {:?}", text(answer)));
    }
    if field(answer, "AE").as_deref() != Some("10") {
        return Err(format!("not approved: {:?}", text(answer)));
    }
    Ok(())
}

/// Does this final answer to a debit of `amount` (no partial payment
/// allowed) say what the simulator did? Its table: by the last two digits
/// of the amount. `unknown_ok`: an answer read back after a kill, where
/// AF07 (closed as unknown at recovery) is also true.
pub fn check_outcome(amount: u64, answer: &[u8], unknown_ok: bool) -> Result<(), String> {
    use concert::wire::answer::Af;
    let f = Frame::decode(answer).map_err(|_| format!("does not decode: {:?}", text(answer)))?;
    let cb = field(answer, "CB").and_then(|c| c.parse::<u64>().ok());
    if cb != Some(amount) {
        return Err(format!("CB {cb:?} for {amount}: {:?}", text(answer)));
    }
    let ae = field(answer, "AE");
    let af = field(answer, "AF");
    if unknown_ok && af.as_deref() == Some("07") && ae.as_deref() == Some("01") {
        return Ok(());
    }
    let want = concert::backend::simulator::outcome_for(amount, false);
    let ok = match (&want, ae.as_deref(), af.as_deref()) {
        (Ok(None), Some("10"), None) => f.get(concert::wire::tlv::tags::AC).is_some(),
        (Err(w), Some("01"), Some(got)) => Af::from_code(got.as_bytes()) == Some(*w),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{amount}: the simulator did {want:?}, the answer says AE {ae:?} AF {af:?}: {:?}",
            text(answer)
        ))
    }
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

pub fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}
