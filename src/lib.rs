//! concertd: the terminal side of the Concert / Caisse-AP protocol.
//!
//! The map: one folder per concern, lowest layer first; a folder's code
//! names only its own folder and those listed before it (tests/layers.rs
//! fails on an import that points the other way, and on any cycle between
//! modules).

/// The protocol's bytes and values, no I/O: TLV, V2, framing, requests,
/// answers, tickets, currencies, dates, card-number masking.
pub mod wire;

/// concertd.conf, the allow-list, the simulator's script and stage, the
/// files concertd opens and the errors that stop it.
pub mod config;

/// Where log lines go, and the summaries of those a peer can cause.
pub mod logging;

/// The serial link layer, both sides, and the ports it opens.
pub mod link;

/// The register's side, for the `concert` client and the relay.
pub mod client;

/// The backends that perform transactions: simulator, exec, relay.
pub mod backend;

/// The one worker, its journal and what it remembers.
pub mod terminal;

/// The ways in: TCP, the serial line, one dispatch to the worker.
pub mod front;

/// The running service: threads and reloads, the control socket, daemon
/// mode, `config-watch`.
pub mod service;
