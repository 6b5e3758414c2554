//! Integration tests: the real `concertd` and `concert` binaries.

mod util;

mod cli;
mod durability;
#[cfg(feature = "hardware-tests")]
mod hardware;
mod manpage;
mod serial;
mod tcp;
