//! Fuzz target `request_findings`: the property is `concertd_fuzz::request_findings`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| concertd_fuzz::request_findings(data));
