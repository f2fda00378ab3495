//! Target `open`: arbitrary bytes (up to 1 MiB) as a store file. Every read-only path, `open`,
//! `recover`, `salvage` and a few operations run on it: no panic, no out-of-bounds access (the
//! fuzzer's AddressSanitizer), no hang (its timeout); after a recovery or salvage that
//! succeeded, `check` is sound and no two blocks overlap.
//!
//! Input: one byte saying how many bytes at the end are operations (`x % 64`), the operations,
//! then the file.

use arbitrary::Unstructured;

use super::store;

pub fn run(data: &[u8]) {
    super::guard();
    let Some((&n, rest)) = data.split_first() else { return };
    let (file, ops) = rest.split_at(rest.len() - (n as usize % 64).min(rest.len()));
    let file = &file[..file.len().min(super::MAX_INPUT)];
    let ops = store::ops(&mut Unstructured::new(ops));
    let dir = super::scratch();
    let path = dir.path().join("s.mmheap");
    super::write_store(&path, file);
    store::read_only_paths(&path);
    store::open_repair_and_use(&path, &ops, |_| {});
}
