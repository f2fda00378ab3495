//! Named roots: a fixed directory of (name, block) entries in the store.
//!
//! Every change happens under the store lock, so it is atomic with respect to other
//! processes. An entry is empty iff its block field is 0; setting a new root writes the name
//! first and the block last, so a reader never sees a half-written entry. Each root holds one
//! of its block's other holds.

use crate::engine::directory::{survey_roots, valid_name, Entry, Surveyed, ROOTS};
use crate::engine::heap::{Heap, Obtained};
use crate::error::{Error, Result};
use crate::BlockHandle;

fn check_name(name: &str) -> Result<&[u8]> {
    let b = name.as_bytes();
    if !valid_name(b) {
        return Err(Error::InvalidRootName(name.to_owned()));
    }
    Ok(b)
}

/// The used entries, each checked to name a used block.
fn entries(heap: &Heap) -> Result<Vec<Entry>> {
    let entries = ROOTS.entries(heap)?;
    for e in &entries {
        if !heap.names_live(e.target) {
            return Err(Error::corrupt("root names a free block", ROOTS.entry(e.index)));
        }
    }
    Ok(entries)
}

fn find(heap: &Heap, name: &[u8]) -> Result<Option<(u64, u64)>> {
    Ok(entries(heap)?.into_iter().find(|e| e.name == name).map(|e| (e.index, e.target)))
}

/// Every used entry of the roots, each checked on its own (`directory::survey_roots`), under
/// the store lock.
pub(crate) fn survey(heap: &Heap) -> Result<Vec<Surveyed>> {
    let _g = heap.lock()?;
    survey_roots(heap)
}

pub(super) fn set(heap: &Heap, name: &str, block: u64) -> Result<()> {
    let name = check_name(name)?;
    let g = heap.lock()?;
    match find(heap, name)? {
        Some((_, old)) if old == block => Ok(()),
        Some((i, old)) => {
            heap.add_hold_locked(block)?;
            ROOTS.set_target(heap, i, block)?;
            heap.release_hold_locked(&g, old)
        }
        None => {
            let i = ROOTS.free_entry(heap).ok_or(Error::RootsFull)?;
            heap.add_hold_locked(block)?;
            ROOTS.write(heap, i, name, block)
        }
    }
}

pub(super) fn get(heap: &Heap, name: &str) -> Result<Option<Obtained>> {
    let name = check_name(name)?;
    let g = heap.lock()?;
    let Some((i, block)) = find(heap, name)? else {
        return Ok(None);
    };
    let got = heap.acquire_locked(&g, block, None);
    got.ok_or(Error::corrupt("root names a block with no references", ROOTS.entry(i)))?.map(Some)
}

pub(super) fn remove(heap: &Heap, name: &str) -> Result<bool> {
    let name = check_name(name)?;
    let g = heap.lock()?;
    let Some((i, block)) = find(heap, name)? else {
        return Ok(false);
    };
    ROOTS.set_target(heap, i, 0)?;
    heap.release_hold_locked(&g, block)?;
    Ok(true)
}

pub(super) fn list(heap: &Heap) -> Result<Vec<(String, BlockHandle)>> {
    let _g = heap.lock()?;
    entries(heap)?
        .into_iter()
        .map(|e| {
            let name = String::from_utf8(e.name)
                .map_err(|_| Error::corrupt("root name is not UTF-8", ROOTS.entry(e.index)))?;
            Ok((name, heap.handle_of(e.target)))
        })
        .collect()
}
