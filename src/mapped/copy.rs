//! A private copy of a store's used bytes, read through its mapping word by word: what a
//! snapshot looks at (`inspect/`), and what a read-only store's check reads.

use crate::engine::core::region::Region;
use crate::error::{Error, Result};
use crate::format::*;
use crate::sync::{AtomicU64, Ordering};
use crate::sys;

/// Bytes copied between two progress reports.
pub(crate) const CHUNK: u64 = 8 << 20;

/// A private copy of the first `capacity` bytes of `region`, a mapping of a store (read-write,
/// or read-only for a read-only store's check): what `inspect/take.rs`'s `copy_mapped` says is copied, read word
/// by word with atomic loads, the mapping's pages let go behind the copy.
pub(crate) fn copy_used(
    region: &Region,
    capacity: u64,
    progress: &mut impl FnMut(u64, u64),
) -> Result<Vec<u64>> {
    let mut words = crate::mapped::zeroed_words(capacity / 8)?;
    let ranges = used_ranges(region, capacity).unwrap_or_else(|_| vec![(0, capacity)]);
    let mut mapped_from = 0;
    for (start, end) in ranges {
        for at in (start..end).step_by(CHUNK as usize) {
            let len = CHUNK.min(end - at);
            copy_words(region, at, len, &mut words)?;
            let_go(region, &mut mapped_from, at + len);
            progress(at + len, capacity);
        }
    }
    Ok(words)
}

/// How much of the store's mapping a walk or a copy keeps mapped behind it before it lets the
/// pages go: what a snapshot costs in memory is its copy, not the copy and the file's pages too
/// (a full 1 GiB store took 2 GiB).
const WINDOW: u64 = 64 << 20;

/// Lets go of the mapping's pages from `*from` up to `to` (rounded down to a page) once they
/// make a [`WINDOW`]: the walk and the copy go forward, and what they passed is in the copy or
/// not needed (a later touch maps it again from the page cache).
fn let_go(region: &Region, from: &mut u64, to: u64) {
    let to = to / PAGE_SIZE * PAGE_SIZE;
    if to >= *from + WINDOW {
        sys::release_mapped(region.base_addr() + *from as usize, (to - *from) as usize);
        *from = to;
    }
}

/// Copies the `len` bytes at `at` (multiples of 8) from `region` into the same place of `out`.
fn copy_words(region: &Region, at: u64, len: u64, out: &mut [u64]) -> Result<()> {
    let src = region.ptr(at, len)?;
    // SAFETY: `ptr` checked that `len` bytes at `at` lie in the region, which outlives this
    // call; `at` and `len` are multiples of 8 and the region 8-aligned, so these are `len / 8`
    // aligned words, which every process only touches atomically.
    let words = unsafe { std::slice::from_raw_parts(src.as_ptr().cast::<AtomicU64>(), len as usize / 8) };
    let first = (at / 8) as usize;
    let dst =
        out.get_mut(first..first + words.len()).ok_or_else(|| Error::corrupt("copy out of range", at))?;
    for (d, w) in dst.iter_mut().zip(words) {
        *d = w.load(Ordering::Relaxed);
    }
    Ok(())
}

/// The byte ranges `[start, end)` of the store that a snapshot reads (see `inspect/take.rs`'s `copy_mapped`),
/// in order, neighbours merged.
fn used_ranges(region: &Region, capacity: u64) -> Result<Vec<(u64, u64)>> {
    let mut ranges: Vec<(u64, u64)> = vec![(0, HEAP_START)];
    let mut add = |start: u64, end: u64| match ranges.last_mut() {
        Some(last) if last.1 >= start => last.1 = last.1.max(end),
        _ => ranges.push((start, end)),
    };
    let mut mapped_from = 0;
    crate::engine::core::tlsf::Core::new(region).walk(|b| {
        let (off, size) = (b.offset, b.tag.size());
        let_go(region, &mut mapped_from, off);
        match b.tag.is_free() {
            // Header and free-list links, then the footer.
            true => {
                add(off, off + MIN_BLOCK.min(size));
                add(off + size - GRANULE, off + size);
            }
            false => add(off, off + size),
        }
        Ok(())
    })?;
    add(capacity - SENTINEL_SIZE, capacity);
    Ok(ranges)
}
