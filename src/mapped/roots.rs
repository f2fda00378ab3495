//! Named roots: a fixed directory of (name, block) entries in the store.
//!
//! Every change happens under the store lock, so it is atomic with respect to other
//! processes. An entry is empty iff its block field is 0; setting a new root writes the name
//! first and the block last, so a reader never sees a half-written entry. Each root holds one
//! of its block's other holds.

use crate::core::check::{CheckReport, Problem};
use crate::core::header::rc;
use crate::directory::{valid_name, Entry, ROOTS};
use crate::error::{Error, Result};
use crate::format::*;
use crate::heap::{Heap, Obtained};
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

/// Adds a problem for every root entry that is malformed or names something that is not a
/// live block.
pub(super) fn check(heap: &Heap, report: &mut CheckReport) -> Result<()> {
    let _g = heap.lock()?;
    for i in 0..ROOT_COUNT {
        let e = ROOTS.entry(i);
        let block = heap.region.load(e + ROOT_BLOCK)?;
        if block == 0 {
            continue;
        }
        let len = u64::from(heap.region.load32(e + ROOT_NAME_LEN)?);
        let mut name = vec![0; len.min(ROOT_NAME_MAX) as usize];
        heap.region.read_bytes(e + ROOT_NAME, &mut name)?;
        if len == 0 || len > ROOT_NAME_MAX || std::str::from_utf8(&name).is_err() {
            report.problems.push(Problem { what: "root name is malformed", offset: e });
        }
        let word = heap.rc(block);
        if !heap.names_live(block) || rc::count(word) == 0 {
            report.problems.push(Problem { what: "root names no live block", offset: e });
        } else if !rc::published(word) {
            // A root publishes its block before it names it (recovery refuses this as damage).
            report.problems.push(Problem { what: "root names an unpublished block", offset: block });
        }
    }
    Ok(())
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
