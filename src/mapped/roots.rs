//! Named roots: a fixed directory of (name, block) entries in the store.
//!
//! Every change happens under the store lock, so it is atomic with respect to other
//! processes. An entry is empty iff its block field is 0; setting a new root writes the name
//! first and the block last, so a reader never sees a half-written entry. Each root holds one
//! of its block's other holds.

use crate::engine::core::check::{CheckReport, Problem};
use crate::engine::core::header::rc;
use crate::engine::directory::{valid_name, Entry, ROOTS};
use crate::engine::heap::{Heap, Obtained};
use crate::error::{Error, Result};
use crate::format::*;
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

/// One used entry of the directory, read as it is, with what is wrong with it.
pub(crate) struct Surveyed {
    /// The name, bytes that are not UTF-8 replaced.
    pub(crate) name: String,
    /// The block it names.
    pub(crate) target: u64,
    /// What is wrong with the entry, each at the offset a check reports.
    pub(crate) problems: Vec<Problem>,
}

/// Every used entry of the directory, each checked on its own (a malformed name, a block that
/// is not live, an unpublished block), so that one damaged entry hides no other.
pub(crate) fn survey(heap: &Heap) -> Result<Vec<Surveyed>> {
    let _g = heap.lock()?;
    let mut out = Vec::new();
    for i in 0..ROOT_COUNT {
        let e = ROOTS.entry(i);
        let target = heap.region.load(e + ROOT_BLOCK)?;
        if target == 0 {
            continue;
        }
        let mut problems = Vec::new();
        if !ROOTS.name_ok(heap, i)? {
            problems.push(Problem { what: "root name is malformed", offset: e });
        }
        let word = heap.rc(target);
        if !heap.names_live(target) || rc::count(word) == 0 {
            problems.push(Problem { what: "root names no live block", offset: e });
        } else if !rc::published(word) {
            // A root publishes its block before it names it (recovery refuses this as damage).
            problems.push(Problem { what: "root names an unpublished block", offset: target });
        }
        out.push(Surveyed { name: ROOTS.name_lossy(heap, i)?, target, problems });
    }
    Ok(out)
}

/// Adds a problem for every root entry that is malformed or names something that is not a
/// live block.
pub(super) fn check(heap: &Heap, report: &mut CheckReport) -> Result<()> {
    report.problems.extend(survey(heap)?.into_iter().flat_map(|s| s.problems));
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
