//! Fuzz target `simulator_plan`: the property is `concertd_fuzz::simulator_plan`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| concertd_fuzz::simulator_plan(data));
