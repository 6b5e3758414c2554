//! Fuzz target `config_parse`: the property is `concertd_fuzz::config_parse`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| concertd_fuzz::config_parse(data));
