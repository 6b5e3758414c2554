//! The terminal: the one worker that runs the backend under the
//! one-transaction rule, its journal, and what it remembers between
//! transactions (last payments, refunds by reference, safe retries).

pub mod answered;
pub mod handover;
pub mod journal;
pub mod memory;
pub mod refunds;
pub mod retry;
pub mod worker;
