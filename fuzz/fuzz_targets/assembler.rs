//! Fuzz target `assembler`: the property is `concertd_fuzz::assembler`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| concertd_fuzz::assembler(data));
