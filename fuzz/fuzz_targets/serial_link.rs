//! Fuzz target `serial_link`: the property is `concertd_fuzz::serial_link`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| concertd_fuzz::serial_link(data));
