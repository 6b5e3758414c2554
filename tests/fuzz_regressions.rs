//! The fuzz properties (fuzz/src/lib.rs, included here as is) replayed on
//! every seed under fuzz/seeds/, so that `make test` checks what `make
//! fuzz` asserts without cargo-fuzz; and inputs the fuzzer found, as plain
//! regression tests.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod properties;

use std::path::PathBuf;

/// Every seed of one target, in name order.
fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "{}: no seeds", dir.display());
    paths
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).unwrap();
            (p, data)
        })
        .collect()
}

/// Runs `property` on every seed of `target`, naming the seed that fails.
fn replay(target: &str, property: fn(&[u8])) {
    for (path, data) in seeds(target) {
        if let Err(e) = std::panic::catch_unwind(|| property(&data)) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{}: {msg}", path.display());
        }
    }
}

#[test]
fn seeds_tlv_decode() {
    replay("tlv_decode", properties::tlv_decode);
}

#[test]
fn seeds_v2_decode() {
    replay("v2_decode", properties::v2_decode);
}

#[test]
fn seeds_assembler() {
    replay("assembler", properties::assembler);
}

#[test]
fn seeds_config_parse() {
    replay("config_parse", properties::config_parse);
}

#[test]
fn seeds_serial_link() {
    replay("serial_link", properties::serial_link);
}
