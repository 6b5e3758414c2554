//! Fuzz target `backend_output`: the property is `concertd_fuzz::backend_output`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| concertd_fuzz::backend_output(data));
