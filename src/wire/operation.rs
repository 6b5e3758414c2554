//! The operations of Concert V3 (`CD`): what each needs and how it is
//! named, apart from requests so that tickets and requests both use it.

use crate::wire::tlv::{tags::*, Tag};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    Debit,
    /// `CD=7`, PayXpert's deferred debit: a debit whose capture the
    /// acquirer makes later; for the terminal, a debit in every other way.
    DeferredDebit,
    Credit,
    Cancel,
    Duplicata,
    Identify,
    Print,
    Telecollect,
    Status,
}

impl Operation {
    pub fn from_cd(cd: &[u8]) -> Option<Operation> {
        Some(match cd {
            b"0" => Operation::Debit,
            b"1" => Operation::Credit,
            b"2" => Operation::Cancel,
            b"7" => Operation::DeferredDebit,
            b"3" => Operation::Duplicata,
            b"I" => Operation::Identify,
            b"P" => Operation::Print,
            b"B" => Operation::Telecollect,
            b"T" => Operation::Status,
            _ => return None,
        })
    }

    /// Tags that must be present besides CZ.
    pub fn mandatory(self) -> &'static [Tag] {
        match self {
            Operation::Debit | Operation::DeferredDebit | Operation::Credit | Operation::Cancel => {
                &[CA, CB, CD, CE]
            }
            Operation::Duplicata
            | Operation::Identify
            | Operation::Telecollect
            | Operation::Status => &[CA, CD],
            Operation::Print => &[CA, CD, ZT],
        }
    }

    /// Operations that need the terminal itself and so obey the
    /// one-transaction rule. Identification and duplicata are answered from
    /// what concertd knows, even while a transaction runs.
    pub fn occupies_terminal(self) -> bool {
        !matches!(
            self,
            Operation::Identify | Operation::Duplicata | Operation::Status
        )
    }

    /// Money moves: these have outcomes kept per register.
    pub fn is_payment(self) -> bool {
        matches!(
            self,
            Operation::Debit | Operation::DeferredDebit | Operation::Credit | Operation::Cancel
        )
    }

    /// Money taken from the card: what a cancellation may undo and a
    /// refund may refer to.
    pub fn is_debit(self) -> bool {
        matches!(self, Operation::Debit | Operation::DeferredDebit)
    }

    /// The name in logs, the journal and the exec contract.
    pub fn name(self) -> &'static str {
        self.names().0
    }

    /// The name for people, as `concert` prints it.
    pub fn label(self) -> &'static str {
        self.names().1
    }

    fn names(self) -> (&'static str, &'static str) {
        match self {
            Operation::Debit => ("debit", "debit"),
            Operation::DeferredDebit => ("deferred-debit", "deferred debit"),
            Operation::Credit => ("credit", "credit"),
            Operation::Cancel => ("cancel", "cancellation"),
            Operation::Duplicata => ("duplicata", "duplicata"),
            Operation::Identify => ("identification", "identification"),
            Operation::Print => ("print", "print"),
            Operation::Telecollect => ("telecollection", "telecollection"),
            Operation::Status => ("status", "transaction status"),
        }
    }
}
