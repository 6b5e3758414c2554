//! concertd: the terminal side of the Concert / Caisse-AP protocol.

pub mod allow;
pub mod answer;
pub mod assemble;
pub mod backend;
pub mod base64;
pub mod client;
pub mod clock;
pub mod config;
pub mod currency;
pub mod daemon;
pub mod error;
pub mod files;
pub mod floodgate;
pub mod framing;
pub mod journal;
pub mod logging;
pub mod net;
pub mod operation;
pub mod pan;
pub mod peers;
pub mod port;
pub mod request;
pub mod serial;
pub mod service;
pub mod ticket;
pub mod tlv;
pub mod v2;
pub mod watch;
pub mod worker;

// The backends live under backend/; their old paths stay valid.
pub use backend::{exec, relay, simulator};
