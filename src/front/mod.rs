//! The ways in: TCP (with its per-peer limits) and the serial line, and
//! the one dispatch from their bytes to the worker and back.

pub mod dispatch;
pub mod exam;
pub mod findings;
pub mod net;
pub mod peers;
pub mod serial;
