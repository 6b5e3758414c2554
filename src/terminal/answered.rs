//! What a register got of a transaction whose outcome is unknown, said as
//! a fact in the words the log, `concertctl show` and `concertctl status`
//! share: one word for the outcome, "unknown" (the journal's `ended
//! unknown`), and whether the register was answered AF07 or got nothing,
//! from what the journal knows of the answer's delivery.

use crate::terminal::journal::Record;

/// The word for an outcome nobody knows, everywhere.
pub const UNKNOWN: &str = "unknown";

/// How the unknown outcome's answer (AF07) reached the register, or did
/// not. `immediate`: the request asked for an immediate answer (`BA=1`),
/// so the final answer waits for a status request.
pub fn reached(r: &Record, immediate: bool) -> &'static str {
    if r.recovered {
        return "the register got no answer: concertd stopped before the transaction ended";
    }
    match r.delivered {
        Some(true) => "the register was answered AF07",
        Some(false) => "the register got no answer: AF07 undelivered",
        None if immediate => {
            "the register got only the immediate acknowledgement; a status request returns AF07"
        }
        None => "the register was sent AF07, its delivery not reported",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_fact_in_its_own_words() {
        let mut r = Record {
            delivered: Some(true),
            ..Record::default()
        };
        assert_eq!(reached(&r, false), "the register was answered AF07");
        r.delivered = Some(false);
        assert!(reached(&r, false).starts_with("the register got no answer"));
        r.delivered = None;
        assert!(reached(&r, true).contains("immediate acknowledgement"));
        assert!(reached(&r, false).contains("not reported"));
        r.recovered = true;
        assert!(reached(&r, false).contains("concertd stopped"));
    }
}
