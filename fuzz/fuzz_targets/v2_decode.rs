//! Fuzz target `v2_decode`: the property is `concertd_fuzz::v2_decode`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| concertd_fuzz::v2_decode(data));
