//! Rules about the source that the compiler and clippy cannot express.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// All atomics go through `src/sync.rs`, the one door (STYLE.md): a change of atomic backend
/// or an audit of orderings then has one place to look.
#[test]
fn atomics_only_through_the_sync_module() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 10);
    for f in files {
        if f.ends_with("sync.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            !text.contains("std::sync::atomic"),
            "{} names std::sync::atomic; use crate::sync",
            f.display()
        );
    }
}
