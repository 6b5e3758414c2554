//! Tickets: what `CK` asks for, and the base64 text the terminal returns
//! in `ZT` (`CK` + `AK`).

use crate::wire::answer::Af;
use crate::wire::base64;
use crate::wire::operation::Operation;
use crate::wire::tlv::{tags, Frame};

/// Longest AK value: 900 base64 characters, i.e. 675 bytes of ticket.
pub const MAX_AK: usize = 900;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Copies {
    Customer,
    Merchant,
    Both,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketSpec {
    pub ck: [u8; 3],
    pub copies: Copies,
    pub html: bool,
}

impl TicketSpec {
    /// `CK` position 1 `1` asks for a ticket; position 2 picks the copies
    /// (`0` customer, `1` merchant, `2` both, anything else customer);
    /// position 3 `1` asks for HTML, anything else Latin-1 text.
    pub fn from_ck(ck: &[u8]) -> Option<TicketSpec> {
        let ck: [u8; 3] = ck.try_into().ok()?;
        if ck[0] != b'1' {
            return None;
        }
        Some(TicketSpec {
            ck,
            copies: match ck[1] {
                b'1' => Copies::Merchant,
                b'2' => Copies::Both,
                _ => Copies::Customer,
            },
            html: ck[2] == b'1',
        })
    }
}

/// A card application (`CC`), as a ticket prints it and as people say it.
pub struct Application {
    pub cc: &'static str,
    pub ticket: &'static str,
    pub name: &'static str,
}

pub const APPLICATIONS: &[Application] = &[
    Application {
        cc: "001",
        ticket: "CARTE BANCAIRE",
        name: "CB contact",
    },
    Application {
        cc: "00B",
        ticket: "CB SANS CONTACT",
        name: "CB contactless",
    },
    Application {
        cc: "002",
        ticket: "AMERICAN EXPRESS",
        name: "American Express contact",
    },
    Application {
        cc: "00D",
        ticket: "AMEX SANS CONTACT",
        name: "American Express contactless",
    },
    Application {
        cc: "00C",
        ticket: "CHEQUE",
        name: "cheque",
    },
];

pub fn application(cc: &str) -> Option<&'static Application> {
    APPLICATIONS.iter().find(|a| a.cc == cc)
}

/// What a ticket shows.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub op: Option<Operation>,
    pub approved: bool,
    pub af: Option<Af>,
    pub amount: String,
    pub cheque: bool,
    pub application: String,
    pub aid: Option<String>,
    pub pan: Option<String>,
    pub auth: Option<String>,
    pub contract: Option<String>,
    pub register: u8,
    pub when: String,
    pub duplicata: bool,
    /// Made by the simulator: no card was charged.
    pub simulated: bool,
    /// How the simulator sent the shopper's receipt: `E-MAIL` or `SMS`.
    pub receipt: Option<&'static str>,
}

/// First line of every copy of a simulated ticket: first, so that a ticket
/// cut to fit ZT never loses it.
pub const SIMULATED: &[u8] = b"SIMULATION - AUCUN PAIEMENT REEL";

fn status_line(f: &Facts) -> &'static [u8] {
    if f.approved {
        return b"TRANSACTION ACCEPT\xc9E";
    }
    match f.af {
        Some(Af::Abandon) | Some(Af::OperatorAbandon) => b"ABANDON",
        Some(Af::Forbidden) => b"CARTE INTERDITE",
        Some(Af::NotEnded) => b"TRANSACTION NON ABOUTIE",
        Some(Af::InputTimeout) => b"TIME-OUT SAISIE",
        Some(Af::Phone) => b"APPEL PHONIE",
        _ => b"TRANSACTION REFUS\xc9E",
    }
}

/// One copy as Latin-1 lines ending in LF.
fn copy_text(f: &Facts, merchant: bool) -> Vec<u8> {
    let mut t: Vec<u8> = Vec::with_capacity(320);
    let mut line = |s: &[u8]| {
        t.extend_from_slice(s);
        t.push(b'\n');
    };
    if f.simulated {
        line(SIMULATED);
    }
    if f.duplicata {
        line(b"*** DUPLICATA ***");
    }
    line(if f.cheque {
        b"CHEQUE"
    } else {
        f.application.as_bytes()
    });
    if let Some(aid) = &f.aid {
        line(aid.as_bytes());
    }
    line(format!("LE {}", f.when).as_bytes());
    if let Some(c) = &f.contract {
        line(format!("CONTRAT {c}").as_bytes());
    }
    line(format!("CAISSE {:02}", f.register).as_bytes());
    if let Some(p) = &f.pan {
        line(p.as_bytes());
    }
    line(match f.op {
        Some(Operation::Credit) => b"CREDIT",
        Some(Operation::Cancel) => b"ANNULATION",
        Some(Operation::DeferredDebit) => b"DEBIT DIFFERE",
        _ => b"DEBIT",
    });
    line(format!("MONTANT : {}", f.amount).as_bytes());
    if let Some(a) = &f.auth {
        line(format!("AUTORISATION : {a}").as_bytes());
    }
    line(status_line(f));
    line(if merchant {
        b"TICKET COMMERCANT"
    } else {
        b"TICKET CLIENT"
    });
    if !merchant {
        line(b"A CONSERVER");
        if let Some(how) = f.receipt {
            line(format!("TICKET ENVOYE PAR {how}").as_bytes());
        }
    }
    t
}

fn html_escape(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 16);
    for &b in text {
        match b {
            b'<' => out.extend_from_slice(b"&lt;"),
            b'>' => out.extend_from_slice(b"&gt;"),
            b'&' => out.extend_from_slice(b"&amp;"),
            0x80..=0xff => out.extend_from_slice(format!("&#{b};").as_bytes()),
            _ => out.push(b),
        }
    }
    out
}

/// The ticket document before base64: Latin-1 text, or HTML whose only
/// non-ASCII characters are written as character references.
pub fn document(spec: &TicketSpec, f: &Facts) -> Vec<u8> {
    let copies: Vec<Vec<u8>> = match spec.copies {
        Copies::Customer => vec![copy_text(f, false)],
        Copies::Merchant => vec![copy_text(f, true)],
        Copies::Both => vec![copy_text(f, false), copy_text(f, true)],
    };
    if !spec.html {
        return copies.join(&b"\n"[..]);
    }
    let mut doc = b"<html><body>".to_vec();
    for (i, c) in copies.iter().enumerate() {
        if i > 0 {
            doc.extend_from_slice(b"<hr>");
        }
        doc.extend_from_slice(b"<pre>");
        doc.extend_from_slice(&html_escape(c));
        doc.extend_from_slice(b"</pre>");
    }
    doc.extend_from_slice(b"</body></html>");
    doc
}

/// The ZT value: `CK` as asked, then `AK` with the base64 ticket. A document
/// too long for AK is cut at a line end so that ZT stays within 999 bytes.
pub fn zt(spec: &TicketSpec, f: &Facts) -> Vec<u8> {
    // A ticket made here always has lines; were it ever empty, the answer
    // drops the empty ZT (`answer::result`).
    zt_of(spec, document(spec, f)).unwrap_or_default()
}

/// The ZT value for a ticket document made elsewhere (a payment
/// application's own ticket); none for an empty document, which AK cannot
/// carry (an element holds 1 to 999 bytes).
pub fn zt_of(spec: &TicketSpec, mut doc: Vec<u8>) -> Option<Vec<u8>> {
    if doc.is_empty() {
        return None;
    }
    let max = MAX_AK / 4 * 3;
    if doc.len() > max {
        let cut = doc[..max]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(max, |p| p + 1);
        doc.truncate(cut);
    }
    let mut z = Frame::new();
    z.push(tags::CK, spec.ck.to_vec());
    z.push(tags::AK, base64::encode(&doc).into_bytes());
    Some(z.encode())
}

/// The ticket text inside a ZT value, for the `concert` client and for
/// the print operation: AK decoded, or the whole value decoded as base64.
pub fn decode_zt(zt: &[u8]) -> Option<(Option<[u8; 3]>, Vec<u8>)> {
    if let Ok(inner) = Frame::decode_any(zt) {
        if let Some(ak) = inner.get(tags::AK) {
            let ck = inner.get(tags::CK).and_then(|c| c.try_into().ok());
            return base64::decode(ak).map(|d| (ck, d));
        }
    }
    base64::decode(zt).map(|d| (None, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            op: Some(Operation::Debit),
            approved: true,
            amount: "123 456 789,01 EUR".into(),
            application: "CB SANS CONTACT".into(),
            aid: Some("A0000000421010".into()),
            pan: Some("497010######0674".into()),
            auth: Some("123456".into()),
            contract: Some("1999403".into()),
            register: 1,
            when: "26/11/2026 15:58:32".into(),
            ..Facts::default()
        }
    }

    #[test]
    fn ck_positions() {
        assert_eq!(TicketSpec::from_ck(b"000"), None);
        let s = TicketSpec::from_ck(b"121").unwrap();
        assert_eq!((s.copies, s.html), (Copies::Both, true));
        let s = TicketSpec::from_ck(b"110").unwrap();
        assert_eq!((s.copies, s.html), (Copies::Merchant, false));
    }

    #[test]
    fn both_copies_in_html_fit_in_one_zt() {
        let spec = TicketSpec::from_ck(b"121").unwrap();
        let mut f = facts();
        f.duplicata = true;
        let z = zt(&spec, &f);
        assert!(z.len() <= 999, "{}", z.len());
        let (ck, doc) = decode_zt(&z).unwrap();
        assert_eq!(ck, Some(*b"121"));
        let doc = String::from_utf8(doc).unwrap();
        assert!(doc.contains("TICKET CLIENT"), "{doc}");
        assert!(
            doc.find("TICKET CLIENT") < doc.find("TICKET COMMERCANT"),
            "{doc}"
        );
        assert!(doc.contains("ACCEPT&#201;E"), "{doc}");
    }

    #[test]
    fn a_simulated_ticket_says_so_and_still_fits_whole() {
        let spec = TicketSpec::from_ck(b"121").unwrap();
        let mut f = facts();
        f.duplicata = true;
        f.simulated = true;
        f.receipt = Some("E-MAIL");
        // Both copies, in HTML, duplicata, receipt sent: the longest ticket
        // concertd makes.
        let doc = document(&spec, &f);
        assert!(doc.len() <= MAX_AK / 4 * 3, "cut: {} bytes", doc.len());
        let (_, back) = decode_zt(&zt(&spec, &f)).unwrap();
        assert_eq!(back, doc);
        let n = back
            .windows(SIMULATED.len())
            .filter(|w| *w == SIMULATED)
            .count();
        assert_eq!(n, 2, "{}", String::from_utf8_lossy(&back));
        // On the customer's copy only.
        let text = String::from_utf8_lossy(&back);
        assert_eq!(
            text.matches("TICKET ENVOYE PAR E-MAIL").count(),
            1,
            "{text}"
        );
        assert!(text.find("TICKET ENVOYE") < text.find("TICKET COMMERCANT"));
    }

    #[test]
    fn latin1_text() {
        let spec = TicketSpec::from_ck(b"100").unwrap();
        let (_, doc) = decode_zt(&zt(&spec, &facts())).unwrap();
        assert!(doc.windows(2).any(|w| w == b"\xc9E"));
        assert!(!doc.windows(13).any(|w| w == b"TICKET COMMER"));
    }

    #[test]
    fn an_empty_document_makes_no_zt() {
        let spec = TicketSpec::from_ck(b"110").unwrap();
        assert_eq!(zt_of(&spec, Vec::new()), None);
        let z = zt_of(&spec, b"x".to_vec()).unwrap();
        assert_eq!(decode_zt(&z), Some((Some(*b"110"), b"x".to_vec())));
    }

    #[test]
    fn oversize_documents_are_cut_to_fit() {
        let spec = TicketSpec::from_ck(b"121").unwrap();
        let mut f = facts();
        f.application = "X".repeat(300);
        let z = zt(&spec, &f);
        assert!(z.len() <= 999, "{}", z.len());
    }
}
