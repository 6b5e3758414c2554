//! Fuzz target `control_command`: the property is `concertd_fuzz::control_command`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| concertd_fuzz::control_command(data));
