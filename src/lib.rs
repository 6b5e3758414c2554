//! concertd: the terminal side of the Concert / Caisse-AP protocol.
//!
//! The map: modules grouped by layer, lowest first; a module uses modules
//! of its own layer or of lower ones (tests/layers.rs fails on any import
//! cycle).

// Bytes and values: no I/O.
pub mod answer;
pub mod assemble;
pub mod base64;
pub mod channel;
pub mod clock;
pub mod currency;
pub mod framing;
pub mod operation;
pub mod pan;
pub mod request;
pub mod ticket;
pub mod tlv;
pub mod v2;

// The configuration and the files it names.
pub mod allow;
pub mod config;
pub mod error;
pub mod files;

// The serial link layer, both sides, and the ports it opens.
pub mod link;

// The register's side, for the `concert` client and the relay.
pub mod client;

// Backends (simulator, exec, relay) and the one worker that runs them.
pub mod backend;
pub mod generations;
pub mod handover;
pub mod journal;
pub mod memory;
pub mod refunds;
pub mod retry;
pub mod stage;
pub mod worker;

// The ways in: TCP and the serial line, one dispatch to the worker.
pub mod dispatch;
pub mod floodgate;
pub mod net;
pub mod peers;
pub mod serial;

// The running service: reloads, logs, daemon mode, the control socket.
pub mod control;
pub mod daemon;
pub mod logging;
pub mod service;
pub mod watch;

// The backends live under backend/; their old paths stay valid.
pub use backend::{exec, relay, simulator};
// The ports moved into link/.
pub use link::port;
