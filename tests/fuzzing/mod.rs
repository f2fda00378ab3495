//! The fuzz targets' logic, shared by the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`, which
//! include this directory with `#[path]`) and `tests/fuzz_corpus.rs`, which replays every
//! committed corpus file through the same code in `cargo test`.
//!
//! Each target is a `run(&[u8])` that panics when a property fails; every error the library
//! returns is an acceptable outcome (a hostile file is refused with a typed error).

#![allow(dead_code)] // each includer uses its own subset

pub mod api;
pub mod mutate;
pub mod open;
pub mod store;

use std::path::Path;
use std::sync::Once;

/// Largest store file `open` writes, and the file-size limit (RLIMIT_FSIZE) under which
/// every target runs: a hostile header may ask the library to extend a file (a capacity a
/// power loss could have left unextended), and the harness must not fill the disk.
pub const MAX_INPUT: usize = 1 << 20;
const FILE_LIMIT: u64 = 64 << 20;

/// Once per process: files may not grow past [`FILE_LIMIT`] (an extension beyond it fails with
/// EFBIG, SIGXFSZ ignored), so no input can make a target fill the disk.
pub fn guard() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let limit = libc::rlimit { rlim_cur: FILE_LIMIT, rlim_max: FILE_LIMIT };
        // SAFETY: plain system calls with a valid rlimit; SIG_IGN is a valid disposition.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
        }
    });
}

/// A fresh directory for one input's store (removed when dropped).
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("mmheap-fuzz-").tempdir().expect("a temporary directory")
}

/// Writes `bytes` as a store file at `path`, mode 0600.
pub fn write_store(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).expect("create");
    std::io::Write::write_all(&mut f, bytes).expect("write the store file");
}
