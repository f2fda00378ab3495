//! Fuzz target `mutate`: the logic is `tests/fuzzing/mutate.rs`, which `cargo test` replays
//! (`tests/fuzz_corpus.rs`).

#![no_main]

#[path = "../../tests/fuzzing/mod.rs"]
mod fuzzing;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::mutate::run(data));
