//! Named roots: a fixed directory of (name, block) entries in the store.
//!
//! Every change happens under the store lock, so it is atomic with respect to other
//! processes. An entry is empty iff its block field is 0; setting a new root writes the name
//! first and the block last, so a reader never sees a half-written entry. Each root holds one
//! of its block's other holds.

use crate::core::check::{CheckReport, Problem};
use crate::error::{Error, Result};
use crate::format::*;
use crate::heap::{Heap, Obtained};
use crate::BlockHandle;

fn entry_at(i: u64) -> u64 {
    ROOTS_OFFSET + i * ROOT_SIZE
}

fn check_name(name: &str) -> Result<&[u8]> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() as u64 > ROOT_NAME_MAX || b.contains(&0) {
        return Err(Error::InvalidRootName(name.to_owned()));
    }
    Ok(b)
}

/// One used entry: (index, name, block offset).
fn entries(heap: &Heap) -> Result<Vec<(u64, Vec<u8>, u64)>> {
    let r = &heap.region;
    let mut out = Vec::new();
    for i in 0..ROOT_COUNT {
        let e = entry_at(i);
        let block = r.load(e + ROOT_BLOCK)?;
        if block == 0 {
            continue;
        }
        let len = u64::from(r.load32(e + ROOT_NAME_LEN)?);
        if len == 0 || len > ROOT_NAME_MAX {
            return Err(Error::corrupt("root name length out of range", e + ROOT_NAME_LEN));
        }
        let mut name = vec![0; len as usize];
        r.read_bytes(e + ROOT_NAME, &mut name)?;
        let t = heap.core().block_at(block)?;
        if t.is_free() {
            return Err(Error::corrupt("root names a free block", e));
        }
        out.push((i, name, block));
    }
    Ok(out)
}

fn find(heap: &Heap, name: &[u8]) -> Result<Option<(u64, u64)>> {
    Ok(entries(heap)?.into_iter().find(|(_, n, _)| n == name).map(|(i, _, b)| (i, b)))
}

/// Adds a problem for every root entry that is malformed or names something that is not a
/// live block.
pub(super) fn check(heap: &Heap, report: &mut CheckReport) -> Result<()> {
    let _g = heap.lock()?;
    for i in 0..ROOT_COUNT {
        let e = entry_at(i);
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
        let live = heap.core().block_at(block).map(|t| !t.is_free()).unwrap_or(false);
        if !live || heap.rc(block) == 0 {
            report.problems.push(Problem { what: "root names no live block", offset: e });
        }
    }
    Ok(())
}

pub(super) fn set(heap: &Heap, name: &str, block: u64) -> Result<()> {
    let name = check_name(name)?;
    let _g = heap.lock()?;
    let r = &heap.region;
    match find(heap, name)? {
        Some((_, old)) if old == block => Ok(()),
        Some((i, old)) => {
            heap.add_hold_locked(block)?;
            r.store(entry_at(i) + ROOT_BLOCK, block)?;
            heap.release_hold_locked(old)
        }
        None => {
            let free = (0..ROOT_COUNT).find(|&i| r.load(entry_at(i) + ROOT_BLOCK).ok() == Some(0));
            let i = free.ok_or(Error::RootsFull)?;
            r.zero(entry_at(i) + ROOT_NAME, ROOT_NAME_MAX)?;
            r.write_bytes(entry_at(i) + ROOT_NAME, name)?;
            r.store32(entry_at(i) + ROOT_NAME_LEN, name.len() as u32)?;
            heap.add_hold_locked(block)?;
            r.store(entry_at(i) + ROOT_BLOCK, block)
        }
    }
}

pub(super) fn get(heap: &Heap, name: &str) -> Result<Option<Obtained>> {
    let name = check_name(name)?;
    let g = heap.lock()?;
    let Some((i, block)) = find(heap, name)? else {
        return Ok(None);
    };
    let got = heap.acquire_locked(&g, block);
    got.ok_or(Error::corrupt("root names a block with no references", entry_at(i)))?.map(Some)
}

pub(super) fn remove(heap: &Heap, name: &str) -> Result<bool> {
    let name = check_name(name)?;
    let _g = heap.lock()?;
    let Some((i, block)) = find(heap, name)? else {
        return Ok(false);
    };
    heap.region.store(entry_at(i) + ROOT_BLOCK, 0)?;
    heap.release_hold_locked(block)?;
    Ok(true)
}

pub(super) fn list(heap: &Heap) -> Result<Vec<(String, BlockHandle)>> {
    let _g = heap.lock()?;
    entries(heap)?
        .into_iter()
        .map(|(i, name, block)| {
            let name =
                String::from_utf8(name).map_err(|_| Error::corrupt("root name is not UTF-8", entry_at(i)))?;
            Ok((name, heap.handle_of(block)))
        })
        .collect()
}
