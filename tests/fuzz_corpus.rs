//! Replays every committed fuzz input through the fuzz targets' own logic
//! (`tests/fuzzing/`, which the cargo-fuzz targets in `fuzz/` include): the seed corpora in
//! `fuzz/corpus/<target>/` and the inputs that once failed, kept in `fuzz/regressions/<target>/`
//! with the fix that made them pass.

mod fuzzing;

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut count = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else { continue };
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let data = std::fs::read(&path).expect("read a corpus file");
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target}: {} fails", path.display());
            count += 1;
        }
    }
    assert!(count > 0, "{target}: no committed inputs under fuzz/corpus or fuzz/regressions");
}

#[test]
fn open_corpus() {
    replay("open", fuzzing::open::run);
}

#[test]
fn mutate_corpus() {
    replay("mutate", fuzzing::mutate::run);
}

#[test]
fn api_corpus() {
    replay("api", fuzzing::api::run);
}
