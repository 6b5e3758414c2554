//! Integration tests: the real `concertd` and `concert` binaries.

mod util;

mod cli;
mod durability;
mod manpage;
mod serial;
mod tcp;
