//! The values the configuration is made of: what performs the transactions,
//! the upstream link, the serial line's settings and its character format.

use super::SPEEDS;
use std::path::PathBuf;
use std::time::Duration;

/// What performs the transactions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Terminal {
    Simulator,
    /// A program run for each transaction.
    Exec {
        program: PathBuf,
        args: Vec<String>,
    },
    /// An upstream Concert terminal.
    Relay {
        link: Upstream,
        v2: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upstream {
    Tcp(String),
    Serial {
        device: PathBuf,
        speed: u32,
        format: Format,
    },
}

fn quote(w: &str) -> String {
    if w.is_empty() || w.contains(char::is_whitespace) || w.contains('#') {
        format!("\"{w}\"")
    } else {
        w.to_string()
    }
}

impl Terminal {
    pub(super) fn parse(args: &[String]) -> Result<Terminal, String> {
        let words: Vec<&str> = args.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["simulator"] => Ok(Terminal::Simulator),
            ["exec", program, rest @ ..] => Ok(Terminal::Exec {
                program: PathBuf::from(program),
                args: rest.iter().map(|a| a.to_string()).collect(),
            }),
            ["relay", "tcp", addr, rest @ ..] => {
                let v2 = match rest {
                    [] | ["v3"] => false,
                    ["v2"] => true,
                    _ => return Err("terminal relay tcp HOST:PORT [v2|v3]".into()),
                };
                if !addr.contains(':') {
                    return Err(format!("{addr:?} is not HOST:PORT"));
                }
                Ok(Terminal::Relay {
                    link: Upstream::Tcp(addr.to_string()),
                    v2,
                })
            }
            ["relay", "serial", device, rest @ ..] => {
                let (v2, rest) = match rest {
                    ["v3", r @ ..] => (false, r),
                    ["v2", r @ ..] => (true, r),
                    r => (true, r),
                };
                let speed = |sp: &str| match sp.parse::<u32>() {
                    Ok(n) if SPEEDS.contains(&n) => Ok(n),
                    _ => Err(format!("bad speed {sp:?}")),
                };
                let (speed, format) = match rest {
                    [] => (9600, Format::parse("7E1")?),
                    [sp] => (speed(sp)?, Format::parse("7E1")?),
                    [sp, f] => (
                        speed(sp)?,
                        Format::parse(f)?,
                    ),
                    _ => return Err("terminal relay serial DEVICE [v2|v3] [SPEED [FORMAT]]".into()),
                };
                Ok(Terminal::Relay {
                    link: Upstream::Serial {
                        device: PathBuf::from(device),
                        speed,
                        format,
                    },
                    v2,
                })
            }
            ["exec"] => Err("terminal exec needs a PROGRAM".into()),
            ["relay", ..] => Err(
                "terminal relay tcp HOST:PORT [v2|v3] or relay serial DEVICE [v2|v3] [SPEED [FORMAT]]".into(),
            ),
            [] => Err("terminal takes simulator, exec PROGRAM... or relay tcp|serial ...".into()),
            [t, ..] => Err(format!("terminal {t:?} is not simulator, exec or relay")),
        }
    }

    /// As logs, `status` and errors show it: a value of the file, its card
    /// numbers masked like any value from outside (concertd-logging.7, Card numbers).
    pub fn shown(&self) -> String {
        crate::wire::pan::masked_text(&self.line())
    }

    /// As written in the file.
    pub fn line(&self) -> String {
        match self {
            Terminal::Simulator => "simulator".into(),
            Terminal::Exec { program, args } => {
                let mut w = vec!["exec".to_string(), quote(&program.display().to_string())];
                w.extend(args.iter().map(|a| quote(a)));
                w.join(" ")
            }
            Terminal::Relay { link, v2 } => {
                let p = if *v2 { "v2" } else { "v3" };
                match link {
                    Upstream::Tcp(a) => format!("relay tcp {} {p}", quote(a)),
                    Upstream::Serial {
                        device,
                        speed,
                        format,
                    } => {
                        format!(
                            "relay serial {} {p} {speed} {format}",
                            quote(&device.display().to_string())
                        )
                    }
                }
            }
        }
    }
}

/// Parity of the serial line's characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parity {
    None,
    Even,
    Odd,
}

impl Parity {
    /// The letter of `serial-format`, either case.
    pub fn from_letter(b: u8) -> Option<Parity> {
        match b.to_ascii_uppercase() {
            b'N' => Some(Parity::None),
            b'E' => Some(Parity::Even),
            b'O' => Some(Parity::Odd),
            _ => None,
        }
    }

    pub fn letter(self) -> char {
        match self {
            Parity::None => 'N',
            Parity::Even => 'E',
            Parity::Odd => 'O',
        }
    }
}

/// Character format of the serial line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Format {
    pub data_bits: u8,
    pub parity: Parity,
    pub stop_bits: u8,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format, String> {
        let b = s.as_bytes();
        let bad = || format!("serial-format {s:?} is not like 7E1 or 8N1");
        if b.len() != 3 {
            return Err(bad());
        }
        let f = Format {
            data_bits: b[0].wrapping_sub(b'0'),
            parity: Parity::from_letter(b[1]).ok_or_else(bad)?,
            stop_bits: b[2].wrapping_sub(b'0'),
        };
        if !(5..=8).contains(&f.data_bits) || !(1..=2).contains(&f.stop_bits) {
            return Err(bad());
        }
        Ok(f)
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}{}{}",
            self.data_bits,
            self.parity.letter(),
            self.stop_bits
        )
    }
}

/// Tags beyond the standard ones in answers (`answer-extensions`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerExtensions {
    /// Answers as standard clients expect them, byte for byte.
    None,
    /// PayXpert's ID, AP and AQ in approved debit answers.
    PayXpert,
}

/// Which protocol a serial request speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SerialProtocol {
    /// Told from each frame: V3 starts with `CZ`, anything else is V2.
    Auto,
    V2,
    V3,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Serial {
    /// None: no serial line.
    pub device: Option<PathBuf>,
    pub speed: u32,
    pub format: Format,
    pub rtscts: bool,
    pub protocol: SerialProtocol,
    /// Send answers over 512 bytes in ETB blocks rather than drop tickets.
    pub split: bool,
    pub retry: Duration,
    pub ack_timeout: Duration,
    pub frame_timeout: Duration,
    pub eot_timeout: Duration,
    pub retry_pause: Duration,
}

impl Default for Serial {
    fn default() -> Serial {
        Serial {
            device: None,
            speed: 9600,
            format: Format {
                data_bits: 7,
                parity: Parity::Even,
                stop_bits: 1,
            },
            rtscts: false,
            protocol: SerialProtocol::Auto,
            split: false,
            retry: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(3),
            frame_timeout: Duration::from_secs(3),
            eot_timeout: Duration::from_secs(3),
            retry_pause: Duration::from_secs(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parity_is_parsed_with_the_format() {
        for (text, parity) in [
            ("7E1", Parity::Even),
            ("8n1", Parity::None),
            ("7o2", Parity::Odd),
        ] {
            let f = Format::parse(text).unwrap();
            assert_eq!(f.parity, parity, "{text}");
            assert_eq!(f.to_string(), text.to_ascii_uppercase());
        }
        for bad in ["7X1", "7M1", "7S1", "7 1"] {
            assert!(Format::parse(bad).is_err(), "{bad}");
        }
    }
}
