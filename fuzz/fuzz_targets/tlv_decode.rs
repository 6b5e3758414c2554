//! Fuzz target `tlv_decode`: the property is `concertd_fuzz::tlv_decode`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| concertd_fuzz::tlv_decode(data));
