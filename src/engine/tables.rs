//! Name tables: directories of (name, block) entries without a fixed limit, each a hash table
//! in a heap block that a superblock field names (`docs/format.md`, "Named roots"): the named
//! roots' ([`ROOT_NAMES`]) and the channels' ([`CHANNEL_NAMES`]). A store made before them (or
//! that never named anything) keeps its names in the fixed directory of that kind; the first
//! name that needs a new entry moves them into a new table.
//!
//! A table grows by copying: a new block twice the size (or the same size, to drop emptied
//! entries) is filled with the entries, rehashed; then the superblock names it (the commit,
//! one store under the store lock); then the old one is released. Every entry's hold stays with
//! its block throughout (an entry is copied, never counted twice), so a crash before the commit
//! leaves the old table and a new block nothing names, which recovery frees, and a crash after
//! it the new table and an old block nothing names, freed likewise. A table block is held by its
//! superblock field's reference (one other hold, a reference of the `Roots` kind, `roots.rs`);
//! it is the store's own (bookkeeping), not a user's block. A move from the fixed directory is
//! the same: copies, the commit, then the fixed entries cleared (leftovers of a crash before
//! that are cleared by recovery: with a table, the fixed directory is not read).

use crate::engine::core::header::{check_word, rc};
use crate::engine::directory::{Directory, CHANNELS, ROOTS};
use crate::engine::heap::{Guard, Heap};
use crate::error::{Error, Result};
use crate::format::*;
use crate::sync::Ordering;

/// A kind of name table.
pub(crate) struct NameTable {
    /// The superblock field that names the table (0: none yet).
    pub(crate) field: u64,
    /// The fixed directory names are kept in before there is a table.
    pub(crate) fixed: Directory,
    /// The table's `ROOT_TABLE_KIND` word.
    kind: u64,
    /// Pause points of the commit (`hooks.rs`): before it, after it.
    filled: &'static str,
    named: &'static str,
}

/// The named roots' table.
pub(crate) const ROOT_NAMES: NameTable = NameTable {
    field: SB_ROOT_TABLE,
    fixed: ROOTS,
    kind: 1,
    filled: "roots-table-filled",
    named: "roots-table-named",
};

/// The channels' table.
pub(crate) const CHANNEL_NAMES: NameTable = NameTable {
    field: SB_CHANNEL_TABLE,
    fixed: CHANNELS,
    kind: 2,
    filled: "channels-table-filled",
    named: "channels-table-named",
};

impl NameTable {
    /// The store's roots table, checked: (its block, its number of entries). `None`: none yet.
    pub(crate) fn table(&self, heap: &Heap) -> Result<Option<(u64, u64)>> {
        let Some((block, capacity, field)) = self.table_as_found(heap)? else { return Ok(None) };
        let len = heap.core().tag(block)?.len();
        if field != capacity || len.saturating_sub(ROOT_TABLE_ENTRIES) / ROOT_SIZE != capacity {
            return Err(Error::corrupt("roots table's size disagrees with its block", payload_of(block)));
        }
        Ok(Some((block, capacity)))
    }

    /// The roots table as found: (block, its number of entries, the number its header says). The
    /// header's number is used if it fits the block, else the number the block's length gives (a
    /// table's block is as long as its entries, so both agree on a sound table); salvage writes it
    /// again. A size a flip made larger never gives entries that are not there.
    pub(crate) fn table_as_found(&self, heap: &Heap) -> Result<Option<(u64, u64, u64)>> {
        let block = heap.region.load(self.field)?;
        if block == 0 {
            return Ok(None);
        }
        let bad = || Error::corrupt("roots table does not fit its block", self.field);
        let tag = heap.core().block_at(block).map_err(|_| bad())?;
        if !tag.is_plain_used() || tag.has_trailer() {
            return Err(bad());
        }
        let derived = tag.len().saturating_sub(ROOT_TABLE_ENTRIES) / ROOT_SIZE;
        let shaped = |n: u64| n.is_power_of_two() && n >= ROOT_TABLE_FIRST && n <= derived;
        let field = heap.region.load(payload_of(block) + ROOT_TABLE_CAPACITY)?;
        match (shaped(field), shaped(derived)) {
            (true, _) => Ok(Some((block, field, field))),
            (false, true) => Ok(Some((block, derived, field))),
            (false, false) => Err(bad()),
        }
    }

    /// The directory the roots are in: the table, or the fixed directory if there is none yet.
    pub(crate) fn directory(&self, heap: &Heap) -> Result<Directory> {
        Ok(match self.table(heap)? {
            Some((block, capacity)) => self.directory_at(block, capacity),
            None => self.fixed,
        })
    }

    /// The directory with room for one more root (under the lock): the table, made (the fixed
    /// directory's roots moved into it) or grown first if it has to be.
    pub(crate) fn with_room(&self, heap: &Heap, g: &Guard<'_>) -> Result<Directory> {
        let Some((block, capacity)) = self.table(heap)? else {
            let moved = self.fixed.entries(heap)?;
            let capacity = ROOT_TABLE_FIRST.max(((moved.len() as u64 + 1) * 2).next_power_of_two());
            let table = self.make_table(heap, g, capacity)?;
            let dir = self.directory_at(table, capacity);
            for e in &moved {
                insert(heap, &dir, &e.name, e.target)?;
            }
            self.commit(heap, g, table, 0)?;
            for e in &moved {
                self.fixed.set_target(heap, e.index, 0)?;
                heap.region.store32(self.fixed.entry(e.index) + ROOT_NAME_LEN, 0)?;
            }
            return Ok(dir);
        };
        let at = payload_of(block);
        let (used, emptied) =
            (heap.region.load(at + ROOT_TABLE_USED)?, heap.region.load(at + ROOT_TABLE_EMPTIED)?);
        // At most three quarters taken, emptied entries counted (they lengthen probes). The
        // counts were read from the store: one too large to add up makes the table full, and
        // the growth below counts its entries again.
        let taken = used.saturating_add(emptied).saturating_add(1).saturating_mul(4);
        if taken <= capacity * 3 {
            return Ok(self.directory_at(block, capacity));
        }
        let old = self.directory_at(block, capacity);
        let entries = old.entries(heap)?;
        let new_capacity = ((entries.len() as u64 + 1) * 2).next_power_of_two().max(ROOT_TABLE_FIRST);
        let table = self.make_table(heap, g, new_capacity)?;
        let dir = self.directory_at(table, new_capacity);
        for e in &entries {
            insert(heap, &dir, &e.name, e.target)?;
        }
        self.commit(heap, g, table, block)?;
        Ok(dir)
    }

    /// The directory of the table block `table`, of `capacity` entries.
    pub(crate) fn directory_at(&self, table: u64, capacity: u64) -> Directory {
        self.fixed.table(payload_of(table) + ROOT_TABLE_ENTRIES, capacity)
    }

    /// A new, empty table of `capacity` entries, held by nothing yet but one other hold (the
    /// superblock's, once it names it): until then, recovery frees it.
    pub(crate) fn make_table(&self, heap: &Heap, g: &Guard<'_>, capacity: u64) -> Result<u64> {
        let len = capacity
            .checked_mul(ROOT_SIZE)
            .and_then(|b| b.checked_add(ROOT_TABLE_ENTRIES))
            .ok_or(Error::out_of_space(u64::MAX, heap.max_size()?))?;
        let block = heap.allocate_locked(g, len, 4)?;
        // Its exact length into its tag: the table's number of entries is what the block holds.
        heap.settle_locked(g, block, len)?;
        let at = payload_of(block);
        heap.region.zero(at, len)?;
        heap.region.store(at + ROOT_TABLE_CAPACITY, capacity)?;
        heap.region.store(at + ROOT_TABLE_KIND, self.kind)?;
        // The superblock's reference, not this process, will hold it.
        heap.region.u64_at(block + HDR_RC)?.store(rc::OTHER_ONE | rc::PUBLISHED, Ordering::Release);
        Ok(block)
    }

    /// Makes `table` the roots table (the commit) and releases the one it replaces (0: none).
    /// In a store file, with two barriers a power loss cannot reorder (ARCHITECTURE.md,
    /// "Durability and power loss"): the new table's bytes are durable before the superblock
    /// names it, and the superblock's field before the old table (or the fixed directory's
    /// entries) is let go, so a field that persisted names a whole table and a table that was
    /// let go is no longer named.
    fn commit(&self, heap: &Heap, g: &Guard<'_>, table: u64, old: u64) -> Result<()> {
        crate::hooks::pause(self.filled);
        heap.persist(table, heap.core().tag(table)?.size())?;
        heap.region.store(self.field, table)?;
        heap.persist(self.field, 8)?;
        crate::hooks::pause(self.named);
        if old != 0 {
            heap.release_hold_locked(g, old)?;
        }
        Ok(())
    }

    /// The one block of the heap laid out as a roots table (its count of entries what its length
    /// holds, a power of two, held by one other hold and nothing else), if exactly one is.
    /// Sets a table's counts of used and emptied entries again from its entries (they are
    /// derived: a crash between an entry and its count leaves them off by one).
    pub(crate) fn recount(&self, heap: &Heap) -> Result<()> {
        let Ok(Some((block, capacity))) = self.table(heap) else { return Ok(()) };
        self.directory_at(block, capacity).recount(heap)
    }

    pub(crate) fn lone_table(&self, heap: &Heap) -> Result<Option<u64>> {
        let core = heap.core();
        let blocks = core.scan().or_else(|_| core.scan_salvage(&[]))?;
        let mut found = None;
        for b in blocks.iter().filter(|b| b.tag.is_plain_used() && !b.tag.has_trailer()) {
            let capacity = b.tag.len().saturating_sub(ROOT_TABLE_ENTRIES) / ROOT_SIZE;
            let laid_out = capacity >= ROOT_TABLE_FIRST
                && capacity.is_power_of_two()
                && heap.region.load(payload_of(b.offset) + ROOT_TABLE_CAPACITY)? == capacity
                && heap.region.load(payload_of(b.offset) + ROOT_TABLE_KIND)? == self.kind
                && heap.region.load(b.offset + HDR_RC)? & !rc::PUBLISHED == rc::OTHER_ONE;
            if laid_out && found.replace(b.offset).is_some() {
                return Ok(None);
            }
        }
        Ok(found)
    }

    /// The roots table the superblock names when its block's header does not parse but its check
    /// word still seals it (a generation it was given, the store's key) and its count of entries
    /// fits the heap: the entries are where they were.
    pub(crate) fn hit_table(&self, heap: &Heap) -> Result<Option<Directory>> {
        let block = heap.region.load(self.field)?;
        let end = heap.core().capacity()?;
        if block < HEAP_START || block % GRANULE != 0 || block >= end {
            return Ok(None);
        }
        let gen = heap.region.load(block + HDR_GEN)?;
        let sealed = gen != 0 && heap.region.load(block + HDR_CHECK)? == check_word(heap.key(), block, gen);
        let capacity = heap.region.load(payload_of(block) + ROOT_TABLE_CAPACITY)?;
        let fits = capacity
            .checked_mul(ROOT_SIZE)
            .and_then(|b| b.checked_add(payload_of(block) + ROOT_TABLE_ENTRIES));
        if !sealed
            || !capacity.is_power_of_two()
            || capacity < ROOT_TABLE_FIRST
            || fits.is_none_or(|f| f > end)
        {
            return Ok(None);
        }
        Ok(Some(self.directory_at(block, capacity)))
    }
}

/// Puts `name` -> `target` into a table that has no such name, counting it in the table's
/// header (the caller counted `target`'s hold already).
pub(crate) fn insert(heap: &Heap, dir: &Directory, name: &[u8], target: u64) -> Result<()> {
    let i = dir.place_for(heap, name)?.ok_or(Error::RootsFull)?;
    let emptied = heap.region.load32(dir.entry(i) + ROOT_NAME_LEN)? != 0;
    dir.write(heap, i, name, target)?;
    count(heap, dir, 1, if emptied { -1 } else { 0 })
}

/// Empties entry `i` (a remove): in a table it becomes an emptied entry, which probes pass.
/// Its name's bytes are zeroed after (its length stays: an emptied entry's mark): a power loss
/// can keep part of an entry from before a flush and part from after, and an entry reused for
/// another name after the flush must not give a target of the new root under the old, removed
/// name (a zeroed name is no name: salvage renames such an entry).
pub(crate) fn remove(heap: &Heap, dir: &Directory, i: u64) -> Result<()> {
    dir.set_target(heap, i, 0)?;
    heap.region.zero(dir.entry(i) + ROOT_NAME, ROOT_NAME_MAX)?;
    count(heap, dir, -1, 1)
}

/// Adds to a table's counts of used and emptied entries (derived: recovery sets them again).
fn count(heap: &Heap, dir: &Directory, used: i64, emptied: i64) -> Result<()> {
    let Some(at) = dir.header() else { return Ok(()) };
    let add = |field: u64, n: i64| -> Result<()> {
        let v = heap.region.load(at + field)?;
        heap.region.store(at + field, v.wrapping_add_signed(n))
    };
    add(ROOT_TABLE_USED, used)?;
    add(ROOT_TABLE_EMPTIED, emptied)
}
