//! Fuzz target `open`: the logic is `tests/fuzzing/open.rs`, which `cargo test` replays
//! (`tests/fuzz_corpus.rs`).

#![no_main]

#[path = "../../tests/fuzzing/mod.rs"]
mod fuzzing;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::open::run(data));
