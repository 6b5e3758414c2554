//! Fuzz target `journal_read`: the property is `concertd_fuzz::journal_read`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| concertd_fuzz::journal_read(data));
