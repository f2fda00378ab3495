//! Named roots: a fixed directory of (name, block) entries in the store.
//!
//! Every change happens under the store lock, so it is atomic with respect to other
//! processes. An entry is empty iff its block field is 0; setting a new root writes the name
//! first and the block last, so a reader never sees a half-written entry. Each root holds one
//! of its block's other holds.

use crate::engine::directory::{valid_name, Directory, Entry};
use crate::engine::heap::{Guard, Heap, Obtained};
use crate::engine::roots::{survey_roots, Surveyed};
use crate::engine::tables::{self as table, ROOT_NAMES};
use crate::error::{Error, Result};
use crate::BlockHandle;

fn check_name(name: &str) -> Result<&[u8]> {
    let b = name.as_bytes();
    if !valid_name(b) {
        return Err(Error::InvalidRootName(name.to_owned()));
    }
    Ok(b)
}

/// The used entries of `dir`, each checked to name a used block.
fn entries(heap: &Heap, dir: &Directory) -> Result<Vec<Entry>> {
    let entries = dir.entries(heap)?;
    for e in &entries {
        if !heap.names_live(e.target) {
            return Err(Error::corrupt("root names a free block", dir.entry(e.index)));
        }
    }
    Ok(entries)
}

/// The entry of root `name` in `dir` (index, block), its block checked to be used.
fn find(heap: &Heap, dir: &Directory, name: &[u8]) -> Result<Option<(u64, u64)>> {
    let Some(e) = dir.find(heap, name)? else { return Ok(None) };
    if !heap.names_live(e.target) {
        return Err(Error::corrupt("root names a free block", dir.entry(e.index)));
    }
    Ok(Some((e.index, e.target)))
}

/// Every used entry of the roots, each checked on its own (`roots::survey_roots`), under
/// the store lock.
pub(crate) fn survey(heap: &Heap) -> Result<Vec<Surveyed>> {
    let _g = heap.lock()?;
    survey_roots(heap)
}

pub(super) fn set(heap: &Heap, name: &str, block: u64) -> Result<()> {
    let name = check_name(name)?;
    let g = heap.lock()?;
    let dir = ROOT_NAMES.directory(heap)?;
    match find(heap, &dir, name)? {
        Some((_, old)) if old == block => Ok(()),
        Some((i, old)) => {
            heap.add_hold_locked(block)?;
            dir.set_target(heap, i, block)?;
            heap.release_hold_locked(&g, old)
        }
        None => insert(heap, &g, name, block),
    }
}

/// A new root `name` (not there) for `block`, which it holds from now on. Under the lock `g`.
fn insert(heap: &Heap, g: &Guard<'_>, name: &[u8], block: u64) -> Result<()> {
    let dir = ROOT_NAMES.with_room(heap, g)?;
    heap.add_hold_locked(block)?;
    table::insert(heap, &dir, name, block)
}

/// A new reference to `block`, which entry `i` of `dir` names. Under the lock `g`.
fn acquire(heap: &Heap, g: &Guard<'_>, dir: &Directory, i: u64, block: u64) -> Result<Obtained> {
    let got = heap.acquire_locked(g, block, None);
    got.ok_or(Error::corrupt("root names a block with no references", dir.entry(i)))?
}

/// Sets root `name` to `block` unless it exists; returns a new reference to what it names if
/// it did (`block` untouched then). One hold of the store lock: of several processes racing to
/// make a root, one sets it and all get its block.
pub(super) fn set_if_absent(heap: &Heap, name: &str, block: u64) -> Result<Option<Obtained>> {
    let name = check_name(name)?;
    let g = heap.lock()?;
    let dir = ROOT_NAMES.directory(heap)?;
    if let Some((i, old)) = find(heap, &dir, name)? {
        return acquire(heap, &g, &dir, i, old).map(Some);
    }
    insert(heap, &g, name, block)?;
    Ok(None)
}

pub(super) fn get(heap: &Heap, name: &str) -> Result<Option<Obtained>> {
    let name = check_name(name)?;
    let g = heap.lock()?;
    let dir = ROOT_NAMES.directory(heap)?;
    let Some((i, block)) = find(heap, &dir, name)? else {
        return Ok(None);
    };
    acquire(heap, &g, &dir, i, block).map(Some)
}

pub(super) fn remove(heap: &Heap, name: &str) -> Result<bool> {
    let name = check_name(name)?;
    let g = heap.lock()?;
    let dir = ROOT_NAMES.directory(heap)?;
    let Some((i, block)) = find(heap, &dir, name)? else {
        return Ok(false);
    };
    table::remove(heap, &dir, i)?;
    heap.release_hold_locked(&g, block)?;
    Ok(true)
}

pub(super) fn list(heap: &Heap) -> Result<Vec<(String, BlockHandle)>> {
    let _g = heap.lock()?;
    let dir = ROOT_NAMES.directory(heap)?;
    entries(heap, &dir)?
        .into_iter()
        .map(|e| {
            let name = String::from_utf8(e.name)
                .map_err(|_| Error::corrupt("root name is not UTF-8", dir.entry(e.index)))?;
            Ok((name, heap.handle_of(e.target)))
        })
        .collect::<Result<Vec<_>>>()
        .map(|mut roots| {
            roots.sort_by(|a, b| a.0.cmp(&b.0));
            roots
        })
}
