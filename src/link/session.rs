//! One link session, either way: the side with something to say sends
//! ENQ (three tries, EOT and a pause between), its payload as STX blocks
//! (ETB between blocks, ETX at the end, each ACKed or NAKed), and EOT; the
//! other side ACKs the ENQ, checks each block's LRC and NAKs a bad one, at
//! most three times.

use super::{trace, Link, Timer};
use crate::logging::floodgate::Kind;
use crate::wire::framing::{block, lrc, ACK, ENQ, EOT, ETB, ETX, NAK, STX};
use std::io;
use std::time::{Duration, Instant};

/// Sessions are retried this many times (ENQ, frame, bad frames).
pub const TRIES: u32 = 3;

/// The waits of a session: for an ACK (or NAK), for the next byte of a
/// frame, for the EOT that closes a session; and the pause between two
/// ENQ.
#[derive(Clone, Copy, Debug)]
pub struct Timers {
    pub ack: Timer,
    pub frame: Timer,
    pub eot: Timer,
    pub pause: Duration,
}

/// How sending a payload ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    Done,
    /// No ACK to any of the ENQ.
    Unopened,
    /// A block was NAKed on its last try.
    Refused,
    /// A block got no answer on its last try.
    Unanswered,
}

/// Sends `blocks` in one session, the last ended by ETX and the others by
/// ETB; each block is sent up to `frame_tries` times until ACKed. The
/// error is the device failing.
pub fn send(link: &mut Link, t: &Timers, blocks: &[Vec<u8>], frame_tries: u32) -> io::Result<Sent> {
    send_quirky(link, t, blocks, frame_tries, false)
}

/// [`send`], the first try of the first block with a wrong LRC when
/// `bad_lrc_first` (the simulator's `bad-lrc`): what a noisy line does, and
/// what the other side must NAK to get the block again.
pub fn send_quirky(
    link: &mut Link,
    t: &Timers,
    blocks: &[Vec<u8>],
    frame_tries: u32,
    bad_lrc_first: bool,
) -> io::Result<Sent> {
    if !open(link, t)? {
        return Ok(Sent::Unopened);
    }
    for (i, body) in blocks.iter().enumerate() {
        let end = if i + 1 == blocks.len() { ETX } else { ETB };
        let frame = block(body, end);
        log::trace!("{}: > {}", link.name(), trace(body));
        let mut last = None;
        for attempt in 1..=frame_tries {
            if bad_lrc_first && i == 0 && attempt == 1 {
                let mut bad = frame.clone();
                if let Some(l) = bad.last_mut() {
                    *l ^= 0x01;
                }
                log::info!("{}: first try with a wrong LRC (bad-lrc)", link.name());
                link.send(&bad)?;
            } else {
                link.send(&frame)?;
            }
            last = link.wait_for(&[ACK, NAK], t.ack)?;
            let name = link.name();
            match last {
                Some(ACK) => break,
                Some(_) => link.flood(Kind::LinkError, log::Level::Info, || {
                    format!("{name}: NAK to our frame ({attempt}/{frame_tries})")
                }),
                None => link.flood(Kind::LinkError, log::Level::Info, || {
                    format!(
                        "{name}: no ACK to our frame, {} fired ({attempt}/{frame_tries})",
                        t.ack.name
                    )
                }),
            }
        }
        match last {
            Some(ACK) => {}
            // The session ends either way: the other side goes back to idle.
            Some(_) => return link.send(&[EOT]).map(|()| Sent::Refused),
            None => return link.send(&[EOT]).map(|()| Sent::Unanswered),
        }
    }
    link.send(&[EOT])?;
    Ok(Sent::Done)
}

/// ENQ until ACKed, three times, EOT and a pause after each one that is
/// not.
fn open(link: &mut Link, t: &Timers) -> io::Result<bool> {
    for attempt in 1..=TRIES {
        link.clear_input();
        link.send(&[ENQ])?;
        if link.wait_for(&[ACK], t.ack)? == Some(ACK) {
            return Ok(true);
        }
        let name = link.name();
        link.flood(Kind::LinkError, log::Level::Info, || {
            format!(
                "{name}: no ACK to our ENQ, {} fired ({attempt}/{TRIES})",
                t.ack.name
            )
        });
        link.send(&[EOT])?;
        if attempt < TRIES {
            std::thread::sleep(t.pause);
        }
    }
    Ok(false)
}

/// One block as read.
enum Block {
    /// Its bytes, and whether it was the last (ETX) or another follows
    /// (ETB).
    Good(Vec<u8>, bool),
    /// To be NAKed: the other side sends it again.
    Bad(String),
    /// Silence in the middle of a block.
    Cut,
    /// More than the bytes allowed.
    Long,
    Eot,
    Silence,
}

/// STX, the bytes up to ETX (or ETB when `etb`), then exactly one LRC
/// byte (it may look like any control byte). An ENQ before the STX is the
/// other side asking again, having missed our ACK. Each byte is waited
/// for `frame`, and none past `until`; noise before the STX (at most `cap`
/// bytes, or three ENQs) is a bad block, so that the other side cannot
/// keep the read going without sending a frame.
fn read_block(
    link: &mut Link,
    frame: Timer,
    cap: usize,
    etb: bool,
    until: Option<Instant>,
) -> io::Result<Block> {
    let next = || {
        let per_byte = Instant::now() + frame.wait;
        until.map_or(per_byte, |u| u.min(per_byte))
    };
    let (mut noise, mut enqs) = (0, 0);
    loop {
        match link.byte(next())? {
            None => return Ok(Block::Silence),
            Some(STX) => break,
            Some(EOT) => return Ok(Block::Eot),
            Some(ENQ) if enqs < TRIES => {
                enqs += 1;
                link.send(&[ACK])?
            }
            Some(_) if noise < cap => noise += 1,
            Some(_) => return Ok(Block::Bad("no STX, only noise".into())),
        }
    }
    let mut payload = Vec::with_capacity(64);
    let end = loop {
        match link.byte(next())? {
            None => return Ok(Block::Cut),
            Some(ETX) => break ETX,
            Some(ETB) if etb => break ETB,
            Some(_) if payload.len() >= cap => return Ok(Block::Long),
            Some(b) => payload.push(b),
        }
    };
    let Some(got) = link.byte(next())? else {
        return Ok(Block::Bad(format!("no LRC, {} fired", frame.name)));
    };
    let want = lrc(&payload) ^ end;
    if got != want {
        return Ok(Block::Bad(format!(
            "bad LRC 0x{got:02x}, expected 0x{want:02x}"
        )));
    }
    Ok(Block::Good(payload, end == ETX))
}

/// What the taker of a frame makes of it.
pub enum Take<T> {
    /// ACK it; the session is over.
    Ack(T),
    /// NAK it, for this reason: the other side may send it again.
    Nak(String),
    /// NAK it and end the session (already logged): the other side must
    /// not count it as accepted.
    Refuse,
}

/// The terminal's side of the register's session, its ENQ just read: ACK
/// it, read one frame of at most `cap` printable bytes, and hand it to
/// `take`, which answers at once whether it is ACKed. A bad frame is NAKed
/// and read again, three times. The request must be whole by `deadline`
/// (from its ENQ): one still coming then is NAKed and the session ended,
/// however each of its bytes beat the frame timer. Returns what `take`
/// gave for the frame ACKed, if any, once the register has closed its
/// session.
pub fn take<T>(
    link: &mut Link,
    t: &Timers,
    cap: usize,
    deadline: Timer,
    mut take: impl FnMut(Vec<u8>) -> io::Result<Take<T>>,
) -> io::Result<Option<T>> {
    let until = Instant::now() + deadline.wait;
    link.send(&[ACK])?;
    let name = link.name().to_string();
    let late = |link: &mut Link| -> io::Result<Option<T>> {
        link.flood(Kind::BadRequest, log::Level::Info, || {
            format!(
                "{name}: {} fired: request not whole within {} of its ENQ: NAK, back to idle",
                deadline.name,
                crate::config::fmt_duration(deadline.wait)
            )
        });
        link.send(&[NAK])?;
        Ok(None)
    };
    for attempt in 1..=TRIES {
        let read = read_block(link, t.frame, cap, false, Some(until))?;
        if matches!(read, Block::Silence | Block::Cut) && Instant::now() >= until {
            return late(link);
        }
        let why = match read {
            Block::Eot => return Ok(None),
            Block::Silence => {
                link.flood(Kind::LinkError, log::Level::Info, || {
                    format!(
                        "{name}: {} fired waiting for the request frame",
                        t.frame.name
                    )
                });
                return Ok(None);
            }
            Block::Cut => format!("bad frame (frame cut, {} fired)", t.frame.name),
            Block::Long => format!("bad frame (frame longer than {cap} bytes)"),
            Block::Bad(why) => format!("bad frame ({why})"),
            Block::Good(payload, _) => {
                if let Some(b) = payload.iter().find(|b| !(0x20..0x7f).contains(*b)) {
                    format!("bad frame (control byte 0x{b:02x} in the frame)")
                } else {
                    log::trace!("{}: < {}", link.name(), trace(&payload));
                    match take(payload)? {
                        Take::Ack(v) => {
                            accept(link, t)?;
                            return Ok(Some(v));
                        }
                        Take::Refuse => {
                            link.send(&[NAK])?;
                            return Ok(None);
                        }
                        Take::Nak(why) => why,
                    }
                }
            }
        };
        // One line a bad frame: the last says the session is over.
        let then = if attempt == TRIES {
            ", back to idle"
        } else {
            ""
        };
        link.flood(Kind::BadRequest, log::Level::Info, || {
            format!("{name}: {why}: NAK ({attempt}/{TRIES}){then}")
        });
        link.send(&[NAK])?;
    }
    Ok(None)
}

/// ACK the frame and let the other side close its session.
fn accept(link: &mut Link, t: &Timers) -> io::Result<()> {
    link.send(&[ACK])?;
    if link.wait_for(&[EOT], t.eot)?.is_none() {
        let name = link.name();
        link.flood(Kind::LinkError, log::Level::Info, || {
            format!("{name}: no EOT, {} fired; going on", t.eot.name)
        });
    }
    Ok(())
}

/// The register's side of the terminal's session: waits up to `first` for
/// its ENQ, ACKs it, reads its frame or ETB blocks (NAKing a bad one, three
/// times in all), and returns the joined payload, of at most `cap` bytes.
/// The whole session ends within `first`: a terminal that trickles bytes
/// or sends empty blocks cannot hold the caller longer.
pub fn receive(link: &mut Link, t: &Timers, first: Timer, cap: usize) -> io::Result<Vec<u8>> {
    let err = |msg: String| Err(io::Error::other(msg));
    let until = Instant::now() + first.wait;
    if link.wait_for(&[ENQ], first)?.is_none() {
        return err("no answer in time".into());
    }
    link.send(&[ACK])?;
    let mut payload = Vec::new();
    let mut naks = 0;
    loop {
        let read = match read_block(link, t.frame, cap - payload.len(), true, Some(until))? {
            Block::Good(block, _) if block.is_empty() => Block::Bad("empty block".into()),
            other => other,
        };
        match read {
            Block::Good(block, last) => {
                link.send(&[ACK])?;
                payload.extend_from_slice(&block);
                if last {
                    break;
                }
            }
            Block::Bad(why) => {
                naks += 1;
                log::info!("{}: bad frame ({why}): NAK ({naks}/{TRIES})", link.name());
                link.send(&[NAK])?;
                if naks == TRIES && why.starts_with("bad LRC") {
                    return err(format!("answer frame with a bad LRC, {TRIES} times"));
                }
                if naks == TRIES {
                    return err(format!("bad answer frame, {TRIES} times (last: {why})"));
                }
            }
            Block::Long => return err(format!("answer longer than {cap} bytes")),
            Block::Cut if Instant::now() >= until => return err("no answer in time".into()),
            Block::Cut => return err("answer frame cut".into()),
            Block::Silence if Instant::now() >= until => return err("no answer in time".into()),
            Block::Eot | Block::Silence => return err("no frame after ACK".into()),
        }
    }
    let _ = link.wait_for(&[EOT], t.eot)?;
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::super::tests::Wire;
    use super::*;

    fn timers() -> Timers {
        let t = |name| Timer {
            wait: Duration::from_millis(30),
            name,
        };
        Timers {
            ack: t("ack"),
            frame: t("frame"),
            eot: t("eot"),
            pause: Duration::ZERO,
        }
    }

    /// A request deadline that the tests' frames never reach.
    fn whole() -> Timer {
        Timer {
            wait: Duration::from_secs(30),
            name: "request-timeout",
        }
    }

    #[test]
    fn a_payload_goes_in_blocks_each_acked() {
        let w = Wire::default();
        w.on(ENQ, &[ACK]);
        w.on(STX, &[ACK]);
        w.on(STX, &[ACK]);
        let sent = send(
            &mut w.link(),
            &timers(),
            &[b"AB".to_vec(), b"C".to_vec()],
            3,
        );
        assert_eq!(sent.unwrap(), Sent::Done);
        let mut want = vec![ENQ];
        want.extend(block(b"AB", ETB));
        want.extend(block(b"C", ETX));
        want.push(EOT);
        assert_eq!(w.written(), want);
    }

    #[test]
    fn bad_lrc_first_sends_the_block_again_once_nakked() {
        let w = Wire::default();
        w.on(ENQ, &[ACK]);
        w.on(STX, &[NAK]);
        w.on(STX, &[ACK]);
        let sent = send_quirky(&mut w.link(), &timers(), &[b"AB".to_vec()], 3, true);
        assert_eq!(sent.unwrap(), Sent::Done);
        let good = block(b"AB", ETX);
        let mut bad = good.clone();
        *bad.last_mut().unwrap() ^= 1;
        let mut want = vec![ENQ];
        want.extend(&bad);
        want.extend(&good);
        want.push(EOT);
        assert_eq!(w.written(), want);
    }

    #[test]
    fn three_unanswered_enq_end_the_session() {
        let w = Wire::default();
        let sent = send(&mut w.link(), &timers(), &[b"AB".to_vec()], 3);
        assert_eq!(sent.unwrap(), Sent::Unopened);
        assert_eq!(w.written(), [ENQ, EOT, ENQ, EOT, ENQ, EOT]);
    }

    #[test]
    fn a_frame_nakked_three_times_is_refused() {
        let w = Wire::default();
        w.on(ENQ, &[ACK]);
        for _ in 0..3 {
            w.on(STX, &[NAK]);
        }
        let sent = send(&mut w.link(), &timers(), &[b"AB".to_vec()], 3);
        assert_eq!(sent.unwrap(), Sent::Refused);
        let f = block(b"AB", ETX);
        let mut want = vec![ENQ];
        for _ in 0..3 {
            want.extend(&f);
        }
        want.push(EOT);
        assert_eq!(w.written(), want);
        // A NAK then an ACK: sent the second time.
        let w = Wire::default();
        w.on(ENQ, &[ACK]);
        w.on(STX, &[NAK]);
        w.on(STX, &[ACK]);
        let sent = send(&mut w.link(), &timers(), &[b"AB".to_vec()], 3);
        assert_eq!(sent.unwrap(), Sent::Done);
        // One try only (the register's request): a NAK refuses it.
        let w = Wire::default();
        w.on(ENQ, &[ACK]);
        w.on(STX, &[NAK]);
        let sent = send(&mut w.link(), &timers(), &[b"AB".to_vec()], 1);
        assert_eq!(sent.unwrap(), Sent::Refused);
        let mut want = vec![ENQ];
        want.extend(&f);
        want.push(EOT);
        assert_eq!(w.written(), want, "the session is closed all the same");
    }

    #[test]
    fn a_bad_lrc_is_nakked_and_the_good_frame_taken() {
        let w = Wire::default();
        let mut bad = block(b"AB", ETX);
        *bad.last_mut().unwrap() ^= 1;
        w.preload(&bad);
        // The retransmission comes after our NAK; the EOT after our ACK.
        w.on(NAK, &block(b"AB", ETX));
        w.on(ACK, &[EOT]);
        let got = take(&mut w.link(), &timers(), 512, whole(), |p| Ok(Take::Ack(p)));
        assert_eq!(got.unwrap(), Some(b"AB".to_vec()));
        assert_eq!(w.written(), [ACK, NAK, ACK]);
    }

    #[test]
    fn the_taker_decides_ack_or_nak() {
        // Three frames the taker will not have: three NAKs, then idle.
        let w = Wire::default();
        let f = block(b"AB", ETX);
        w.preload(&f);
        w.on(NAK, &f);
        w.on(NAK, &f);
        let mut seen = 0;
        let got = take::<()>(&mut w.link(), &timers(), 512, whole(), |_| {
            seen += 1;
            Ok(Take::Nak("no".into()))
        });
        assert_eq!(got.unwrap(), None);
        assert_eq!(seen, 3);
        assert_eq!(w.written(), [ACK, NAK, NAK, NAK]);
        // Refused (busy): one NAK and the session is over.
        let w = Wire::default();
        w.preload(&f);
        let got = take::<()>(&mut w.link(), &timers(), 512, whole(), |_| Ok(Take::Refuse));
        assert_eq!(got.unwrap(), None);
        assert_eq!(w.written(), [ACK, NAK]);
    }

    /// A register that sends one byte of its frame every `gap`, each
    /// within the frame timer.
    struct Trickle {
        bytes: std::collections::VecDeque<u8>,
        gap: Duration,
        written: Vec<u8>,
    }

    impl io::Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            std::thread::sleep(self.gap);
            match (self.bytes.pop_front(), buf.first_mut()) {
                (Some(b), Some(slot)) => {
                    *slot = b;
                    Ok(1)
                }
                _ => Err(io::ErrorKind::TimedOut.into()),
            }
        }
    }

    impl io::Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl crate::link::Port for Trickle {
        fn clear_input(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_trickled_frame_is_naked_at_the_deadline() {
        let port = Trickle {
            bytes: block(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", ETX).into(),
            gap: Duration::from_millis(10),
            written: Vec::new(),
        };
        let mut link = Link::new(Box::new(port), "test");
        let deadline = Timer {
            wait: Duration::from_millis(100),
            name: "request-timeout",
        };
        let t = Instant::now();
        let got = take(&mut link, &timers(), 512, deadline, |p| Ok(Take::Ack(p)));
        assert_eq!(got.unwrap(), None, "not taken");
        let took = t.elapsed();
        assert!(took < Duration::from_millis(250), "{took:?}");
    }

    #[test]
    fn a_request_frame_is_one_block_of_printable_bytes() {
        let w = Wire::default();
        // ETB is not the end of a request frame: a control byte in it.
        w.preload(&block(b"A\x17B", ETX));
        w.preload(&[EOT]);
        let got = take(&mut w.link(), &timers(), 512, whole(), |p| Ok(Take::Ack(p)));
        assert_eq!(got.unwrap(), None);
        assert_eq!(w.written(), [ACK, NAK]);
        // Longer than allowed.
        let w = Wire::default();
        w.preload(&block(b"ABCDE", ETX));
        w.preload(&[EOT]);
        let got = take(&mut w.link(), &timers(), 4, whole(), |p| Ok(Take::Ack(p)));
        assert_eq!(got.unwrap(), None);
        assert_eq!(w.written()[..2], [ACK, NAK]);
    }

    #[test]
    fn etb_blocks_are_joined_and_capped() {
        let w = Wire::default();
        w.preload(&[ENQ]);
        w.on(ACK, &block(b"AB", ETB));
        w.on(ACK, &block(b"CD", ETX));
        w.on(ACK, &[EOT]);
        let got = receive(&mut w.link(), &timers(), timers().ack, 100);
        assert_eq!(got.unwrap(), b"ABCD");
        assert_eq!(w.written(), [ACK, ACK, ACK]);
        // Past the cap, across blocks: an error, not a longer answer.
        let w = Wire::default();
        w.preload(&[ENQ]);
        w.on(ACK, &block(b"AB", ETB));
        w.on(ACK, &block(b"CD", ETX));
        let e = receive(&mut w.link(), &timers(), timers().ack, 3).unwrap_err();
        assert_eq!(e.to_string(), "answer longer than 3 bytes");
    }

    #[test]
    fn an_answer_with_a_bad_lrc_three_times_is_an_error() {
        let w = Wire::default();
        let mut bad = block(b"AB", ETX);
        *bad.last_mut().unwrap() ^= 1;
        w.preload(&[ENQ]);
        w.on(ACK, &bad);
        w.on(NAK, &bad);
        w.on(NAK, &bad);
        let e = receive(&mut w.link(), &timers(), timers().ack, 100).unwrap_err();
        assert_eq!(e.to_string(), "answer frame with a bad LRC, 3 times");
        assert_eq!(w.written(), [ACK, NAK, NAK, NAK]);
        // No ENQ at all.
        let w = Wire::default();
        let e = receive(&mut w.link(), &timers(), timers().ack, 100).unwrap_err();
        assert_eq!(e.to_string(), "no answer in time");
    }

    /// A terminal cannot keep the read going without a frame: empty ETB
    /// blocks are NAKed like bad ones, and noise before the STX counts.
    #[test]
    fn empty_blocks_and_endless_noise_end_the_session() {
        let first = Timer {
            wait: Duration::from_secs(30),
            name: "first",
        };
        let w = Wire::default();
        w.preload(&[ENQ]);
        w.on(ACK, &block(b"", ETB));
        for _ in 0..1000 {
            w.on(NAK, &block(b"", ETB));
        }
        let e = receive(&mut w.link(), &timers(), first, 100).unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad answer frame, 3 times (last: empty block)"
        );
        assert_eq!(w.written(), [ACK, NAK, NAK, NAK]);
        let w = Wire::default();
        w.preload(&[ENQ]);
        w.on(ACK, &[b'x'; 10_000]);
        let e = receive(&mut w.link(), &timers(), first, 100).unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad answer frame, 3 times (last: no STX, only noise)"
        );
    }
}
