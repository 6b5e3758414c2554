//! Integration tests: the real `concertd` and `concert` binaries.

mod util;

mod backends;
mod cli;
mod control;
mod daemon;
mod durability;
mod exam;
mod examples;
mod findings;
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
mod profiles;
mod quirks;
mod replay;
mod retry;
mod serial;
mod service;
mod tcp;
mod tools;
mod watch;
mod web;
