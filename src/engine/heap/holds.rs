//! Per-process hold tables: every "other hold" a process takes on a block (by resolving a
//! handle or reading a root) is written into a table the process owns in the store, so that
//! recovery knows exactly which references a dead process held.
//!
//! The table is an ordinary block owned by the process (so a dead process's table is reclaimed
//! with its other owned blocks); its payload is an array of `u64` header offsets, 0 = unused.
//! The slot's `SLOT_HOLDS` field names it. All changes happen under the store lock. The table
//! and the blocks' reference words are not updated atomically together; recovery does not
//! need them to be, because it recounts every block's other holds from the tables of the
//! living and the roots (see `recovery.rs`).

use crate::engine::core::header::rc;
use crate::engine::heap::{Guard, Heap};
use crate::error::Result;
use crate::format::{slot_offset, HEADER_SIZE, SLOT_HOLDS};
use crate::sync::Ordering;

/// This process's view of its table; the table itself is in the store.
#[derive(Debug, Default)]
pub(crate) struct HoldTable {
    /// Header offset of the table block, 0 when there is none.
    block: u64,
    /// Entries the table has room for.
    cap: u64,
    /// Unused entry indices.
    free: Vec<u64>,
    /// Entries in use.
    used: u64,
}

const FIRST_CAPACITY: u64 = 16;

impl HoldTable {
    fn entry(&self, i: u64) -> u64 {
        self.block + HEADER_SIZE + 8 * i
    }

    /// Writes `target` into a free entry, growing the table if needed; returns the index.
    pub(crate) fn record(&mut self, heap: &Heap, g: &Guard<'_>, slot: u32, target: u64) -> Result<u64> {
        if self.free.is_empty() {
            self.grow(heap, g, slot)?;
        }
        let i = self.free.pop().expect("grow leaves free entries");
        heap.region.store(self.entry(i), target)?;
        self.used += 1;
        Ok(i)
    }

    /// Clears entry `i`; frees the table when it holds nothing any more.
    pub(crate) fn erase(&mut self, heap: &Heap, g: &Guard<'_>, slot: u32, i: u64) -> Result<()> {
        heap.region.store(self.entry(i), 0)?;
        self.free.push(i);
        self.used -= 1;
        if self.used == 0 {
            heap.region.store(slot_offset(u64::from(slot)) + SLOT_HOLDS, 0)?;
            let old = std::mem::take(self);
            heap.free_owned_locked(g, old.block)?;
        }
        Ok(())
    }

    /// Moves the entries into a table twice as large (the new one is published with one store).
    fn grow(&mut self, heap: &Heap, g: &Guard<'_>, slot: u32) -> Result<()> {
        let cap = (self.cap * 2).max(FIRST_CAPACITY);
        let block = heap.allocate_locked(g, cap * 8, 4)?;
        let new = HoldTable { block, cap, free: Vec::new(), used: self.used };
        for i in 0..cap {
            let v = if i < self.cap { heap.region.load(self.entry(i))? } else { 0 };
            heap.region.store(new.entry(i), v)?;
        }
        heap.region.store(slot_offset(u64::from(slot)) + SLOT_HOLDS, block)?;
        let old = std::mem::replace(self, new);
        self.free = old.free;
        self.free.extend((old.cap..cap).rev());
        if old.block != 0 {
            heap.free_owned_locked(g, old.block)?;
        }
        Ok(())
    }
}

/// The entries of a table block at `block` (0 = none): the header offsets it records.
pub(crate) fn entries(heap: &Heap, block: u64) -> Result<Vec<u64>> {
    entry_offsets(heap, block)?.into_iter().map(|e| heap.region.load(e)).collect()
}

/// Where the used entries of the table block at `block` (0 = none) lie in the store; the
/// table must be a used block with an owner.
pub(crate) fn entry_offsets(heap: &Heap, block: u64) -> Result<Vec<u64>> {
    if block == 0 {
        return Ok(Vec::new());
    }
    let t = heap.core().block_at(block)?;
    if t.is_free()
        || rc::owner(heap.region.u64_at(block + crate::format::HDR_RC)?.load(Ordering::Acquire)) == 0
    {
        return Err(crate::Error::corrupt("hold table is not an owned block", block));
    }
    let mut out = Vec::new();
    for e in (0..t.len() / 8).map(|i| block + HEADER_SIZE + 8 * i) {
        if heap.region.load(e)? != 0 {
            out.push(e);
        }
    }
    Ok(out)
}
