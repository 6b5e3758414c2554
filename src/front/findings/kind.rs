//! The kinds of finding: what a register does that real terminals or the
//! specification punish, each with its severity and why it matters, as
//! concertd.8 FINDINGS lists them (with their sources).

use std::fmt;

/// How much a finding matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Loses or doubles money, or fails on a real terminal.
    Error,
    /// Fails on some terminals.
    Warning,
    /// Worth knowing; nothing breaks.
    Note,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        })
    }
}

/// One kind of finding. A register holds at most one entry per kind, so
/// this enum bounds what a register can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    // Framing.
    /// CR/LF or other bytes after the request.
    BytesAfterRequest,
    /// STX..ETX+LRC around a V3 request on TCP.
    StxOnTcp,
    /// A request in several segments with a pause over 100 ms.
    SlowSegments,
    /// Another request on the same connection.
    SeveralRequests,
    /// A Concert V2 request over TCP.
    V2OverTcp,
    // Tags.
    NoCj,
    BfPresent,
    /// CZ other than 0300 or 0320.
    CzVersion,
    /// Lengths not written as three digits.
    UnpaddedLength,
    /// Tags concertd neither reads nor echoes.
    IgnoredTags,
    /// CE missing on an operation that needs it.
    NoCe,
    /// CB padded with zeros beyond what the currency needs.
    CbZeros,
    // Reading.
    /// Closed or reset before the whole answer was taken.
    AnswerNotRead,
    // Behaviour.
    /// A new payment after a lost answer, with no status request first.
    NoStatusAfterLoss,
    /// Retried sooner than 1 s after a busy answer.
    BusyRetrySoon,
    /// Retried more than 10 times a minute after busy answers.
    BusyRetryOften,
    /// Closed while its transaction ran.
    GaveUp,
    /// A cancellation whose amount is not the last debit's.
    CancelAmount,
}

impl Kind {
    /// Every kind, in the order `registers` lists them.
    pub const ALL: [Kind; 18] = [
        Kind::BytesAfterRequest,
        Kind::StxOnTcp,
        Kind::SlowSegments,
        Kind::SeveralRequests,
        Kind::V2OverTcp,
        Kind::NoCj,
        Kind::BfPresent,
        Kind::CzVersion,
        Kind::UnpaddedLength,
        Kind::IgnoredTags,
        Kind::NoCe,
        Kind::CbZeros,
        Kind::AnswerNotRead,
        Kind::NoStatusAfterLoss,
        Kind::BusyRetrySoon,
        Kind::BusyRetryOften,
        Kind::GaveUp,
        Kind::CancelAmount,
    ];

    /// Its place in [`Kind::ALL`].
    pub fn index(self) -> usize {
        Kind::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }

    /// The name `registers` and the log give it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::BytesAfterRequest => "bytes-after-request",
            Kind::StxOnTcp => "stx-on-tcp",
            Kind::SlowSegments => "slow-segments",
            Kind::SeveralRequests => "several-requests",
            Kind::V2OverTcp => "v2-over-tcp",
            Kind::NoCj => "no-cj",
            Kind::BfPresent => "bf-present",
            Kind::CzVersion => "cz-version",
            Kind::UnpaddedLength => "unpadded-length",
            Kind::IgnoredTags => "ignored-tags",
            Kind::NoCe => "no-ce",
            Kind::CbZeros => "cb-zeros",
            Kind::AnswerNotRead => "answer-not-read",
            Kind::NoStatusAfterLoss => "no-status-after-loss",
            Kind::BusyRetrySoon => "busy-retry-soon",
            Kind::BusyRetryOften => "busy-retry-often",
            Kind::GaveUp => "gave-up",
            Kind::CancelAmount => "cancel-amount",
        }
    }

    pub fn severity(self) -> Severity {
        match self {
            Kind::V2OverTcp
            | Kind::UnpaddedLength
            | Kind::NoCe
            | Kind::AnswerNotRead
            | Kind::NoStatusAfterLoss
            | Kind::GaveUp => Severity::Error,
            Kind::BytesAfterRequest
            | Kind::StxOnTcp
            | Kind::SlowSegments
            | Kind::SeveralRequests
            | Kind::NoCj
            | Kind::BfPresent
            | Kind::CzVersion
            | Kind::BusyRetrySoon
            | Kind::BusyRetryOften
            | Kind::CancelAmount => Severity::Warning,
            Kind::IgnoredTags | Kind::CbZeros => Severity::Note,
        }
    }

    /// Why it matters, in a few words (the man page has the sources).
    pub fn reason(self) -> &'static str {
        match self {
            Kind::BytesAfterRequest => {
                "terminals differ on CR/LF after a request: some wait for it, \
                 others read it as the next request"
            }
            Kind::StxOnTcp => "terminals on TCP read bare TLV: STX/ETX/LRC is serial framing",
            Kind::SlowSegments => {
                "a terminal that ends a request at a short silence reads it cut and \
                 answers AF09"
            }
            Kind::SeveralRequests => {
                "a terminal answers one request per connection and closes it: the next \
                 is lost"
            }
            Kind::V2OverTcp => "Concert V2 is a serial protocol: no terminal takes it over TCP",
            Kind::NoCj => {
                "CJ is mandatory in the specification: strict terminals refuse the request"
            }
            Kind::BfPresent => "newer Ingenico software refuses requests carrying BF",
            Kind::CzVersion => "terminals speak CZ 0300 or 0320: another version may be refused",
            Kind::UnpaddedLength => {
                "a TLV length is three digits: every terminal refuses this request (AF09)"
            }
            Kind::IgnoredTags => "tags a terminal ignores: they do nothing",
            Kind::NoCe => "a payment without its currency CE is refused (AF09)",
            Kind::CbZeros => "more leading zeros in CB than the amount needs: harmless",
            Kind::AnswerNotRead => {
                "the register did not read the whole answer: a payment the terminal \
                 approved may be shown failed (one recv of a split answer)"
            }
            Kind::NoStatusAfterLoss => {
                "after a lost answer the register must ask the last outcome (CD=T): \
                 a new sale may charge the card twice"
            }
            Kind::BusyRetrySoon => "a busy terminal needs time: retries under 1 s only add load",
            Kind::BusyRetryOften => "more than 10 retries a minute on a busy terminal",
            Kind::GaveUp => {
                "the register closed while the card was being read: terminals take up to \
                 180 s, and the outcome is lost to it"
            }
            Kind::CancelAmount => {
                "a cancellation names the last debit's amount: terminals refuse or cancel \
                 another amount"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_place_and_a_distinct_name() {
        for (i, k) in Kind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
            assert!(!k.reason().is_empty());
        }
        let mut names: Vec<_> = Kind::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Kind::ALL.len());
    }
}
