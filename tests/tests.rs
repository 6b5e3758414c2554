//! Integration tests: the real `concertd` and `concert` binaries.

mod util;

mod backends;
mod cli;
mod control;
mod daemon;
mod durability;
mod examples;
mod fuzz_regressions;
#[cfg(feature = "hardware-tests")]
mod hardware;
mod install;
mod journal;
mod layers;
mod links;
mod manpage;
mod masking;
#[allow(dead_code)]
mod oracle;
mod peers;
mod quirks;
mod retry;
mod serial;
mod service;
mod tcp;
