//! Link-layer bytes shared by serial links and STX-wrapped TCP requests.

pub const STX: u8 = 0x02;
pub const ETX: u8 = 0x03;
pub const EOT: u8 = 0x04;
pub const ENQ: u8 = 0x05;
pub const ACK: u8 = 0x06;
pub const NAK: u8 = 0x15;
pub const ETB: u8 = 0x17;

/// XOR of every byte after STX up to and including ETX (or ETB).
pub fn lrc(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0, |a, b| a ^ b)
}

/// How a request came, so that its answer goes back the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wrapping {
    Raw,
    /// STX body ETX LRC.
    Stx,
}

pub fn wrap(body: &[u8], w: Wrapping) -> Vec<u8> {
    match w {
        Wrapping::Raw => body.to_vec(),
        Wrapping::Stx => block(body, ETX),
    }
}

/// STX, the bytes, `end` (ETX, or ETB for a block that another follows),
/// and the LRC.
pub fn block(body: &[u8], end: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 3);
    out.push(STX);
    out.extend_from_slice(body);
    out.push(end);
    out.push(lrc(&out[1..]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lrc_covers_body_and_etx() {
        let w = wrap(b"AB", Wrapping::Stx);
        assert_eq!(w, [STX, b'A', b'B', ETX, b'A' ^ b'B' ^ ETX]);
        assert_eq!(wrap(b"AB", Wrapping::Raw), b"AB");
    }
}
