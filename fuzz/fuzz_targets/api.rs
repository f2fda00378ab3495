//! Fuzz target `api`: the logic is `tests/fuzzing/api.rs`, which `cargo test` replays
//! (`tests/fuzz_corpus.rs`).

#![no_main]

#[path = "../../tests/fuzzing/mod.rs"]
mod fuzzing;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::api::run(data));
