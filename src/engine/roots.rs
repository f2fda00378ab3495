//! Named roots without a fixed limit: a hash table of directory entries in a heap block, the
//! *roots table*, named by the superblock (`SB_ROOT_TABLE`; `docs/format.md`, "Named roots").
//! A store made before it (or that never had a root) keeps its roots in the fixed directory of
//! 256 entries; the first root that needs a new entry moves them into a new table.
//!
//! The table grows by copying: a new block twice the size (or the same size, to drop emptied
//! entries) is filled with the entries, rehashed; then the superblock names it (the commit,
//! one store under the store lock); then the old one is released. Every root's hold stays with
//! its block throughout (an entry is copied, never counted twice), so a crash before the commit
//! leaves the old table and a new block nothing names, which recovery frees, and a crash after
//! it the new table and an old block nothing names, freed likewise. The table block is held by
//! the superblock's reference (one other hold), a reference of the `Roots` kind; it is the
//! store's own (bookkeeping), not a user's block. A move from the fixed directory is the same:
//! copies, the commit, then the fixed entries cleared (leftovers of a crash before that are
//! cleared by recovery: with a table, the fixed directory is not read).

use crate::engine::core::check::Problem;
use crate::engine::core::header::{check_word, rc};
use crate::engine::directory::{Directory, ROOTS};
use crate::engine::heap::{Guard, Heap};
use crate::engine::holders::{Holder, Kind, Reading, Reference, Session};
use crate::error::{Error, Result};
use crate::format::*;
use crate::sync::Ordering;

/// The holder entry of the superblock's reference to the roots table.
const TABLE_ENTRY: u64 = u64::MAX;

/// The store's roots table, checked: (its block, its number of entries). `None`: none yet.
pub(crate) fn table(heap: &Heap) -> Result<Option<(u64, u64)>> {
    let Some((block, capacity, field)) = table_as_found(heap)? else { return Ok(None) };
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
fn table_as_found(heap: &Heap) -> Result<Option<(u64, u64, u64)>> {
    let block = heap.region.load(SB_ROOT_TABLE)?;
    if block == 0 {
        return Ok(None);
    }
    let bad = || Error::corrupt("roots table does not fit its block", SB_ROOT_TABLE);
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
pub(crate) fn directory(heap: &Heap) -> Result<Directory> {
    Ok(match table(heap)? {
        Some((block, capacity)) => directory_at(block, capacity),
        None => ROOTS,
    })
}

/// The directory with room for one more root (under the lock): the table, made (the fixed
/// directory's roots moved into it) or grown first if it has to be.
pub(crate) fn with_room(heap: &Heap, g: &Guard<'_>) -> Result<Directory> {
    let Some((block, capacity)) = table(heap)? else {
        let moved = ROOTS.entries(heap)?;
        let capacity = ROOT_TABLE_FIRST.max(((moved.len() as u64 + 1) * 2).next_power_of_two());
        let table = make_table(heap, g, capacity)?;
        let dir = directory_at(table, capacity);
        for e in &moved {
            insert(heap, &dir, &e.name, e.target)?;
        }
        commit(heap, g, table, 0)?;
        for e in &moved {
            ROOTS.set_target(heap, e.index, 0)?;
            heap.region.store32(ROOTS.entry(e.index) + ROOT_NAME_LEN, 0)?;
        }
        return Ok(dir);
    };
    let at = payload_of(block);
    let (used, emptied) =
        (heap.region.load(at + ROOT_TABLE_USED)?, heap.region.load(at + ROOT_TABLE_EMPTIED)?);
    // At most three quarters taken, emptied entries counted (they lengthen probes).
    if (used + emptied + 1) * 4 <= capacity * 3 {
        return Ok(directory_at(block, capacity));
    }
    let old = directory_at(block, capacity);
    let entries = old.entries(heap)?;
    let new_capacity = ((entries.len() as u64 + 1) * 2).next_power_of_two().max(ROOT_TABLE_FIRST);
    let table = make_table(heap, g, new_capacity)?;
    let dir = directory_at(table, new_capacity);
    for e in &entries {
        insert(heap, &dir, &e.name, e.target)?;
    }
    commit(heap, g, table, block)?;
    Ok(dir)
}

/// The directory of the table block `table`, of `capacity` entries.
fn directory_at(table: u64, capacity: u64) -> Directory {
    Directory::table(payload_of(table) + ROOT_TABLE_ENTRIES, capacity)
}

/// A new, empty table of `capacity` entries, held by nothing yet but one other hold (the
/// superblock's, once it names it): until then, recovery frees it.
fn make_table(heap: &Heap, g: &Guard<'_>, capacity: u64) -> Result<u64> {
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
    // The superblock's reference, not this process, will hold it.
    heap.region.u64_at(block + HDR_RC)?.store(rc::OTHER_ONE | rc::PUBLISHED, Ordering::Release);
    Ok(block)
}

/// Makes `table` the roots table (the commit) and releases the one it replaces (0: none).
fn commit(heap: &Heap, g: &Guard<'_>, table: u64, old: u64) -> Result<()> {
    crate::hooks::pause("roots-table-filled");
    heap.region.store(SB_ROOT_TABLE, table)?;
    crate::hooks::pause("roots-table-named");
    if old != 0 {
        heap.release_hold_locked(g, old)?;
    }
    Ok(())
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
pub(crate) fn remove(heap: &Heap, dir: &Directory, i: u64) -> Result<()> {
    dir.set_target(heap, i, 0)?;
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

/// The one block of the heap laid out as a roots table (its count of entries what its length
/// holds, a power of two, held by one other hold and nothing else), if exactly one is.
fn lone_table(heap: &Heap) -> Result<Option<u64>> {
    let core = heap.core();
    let blocks = core.scan().or_else(|_| core.scan_salvage(&[]))?;
    let mut found = None;
    for b in blocks.iter().filter(|b| b.tag.is_plain_used() && !b.tag.has_trailer()) {
        let capacity = b.tag.len().saturating_sub(ROOT_TABLE_ENTRIES) / ROOT_SIZE;
        let laid_out = capacity >= ROOT_TABLE_FIRST
            && capacity.is_power_of_two()
            && heap.region.load(payload_of(b.offset) + ROOT_TABLE_CAPACITY)? == capacity
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
fn hit_table(heap: &Heap) -> Result<Option<Directory>> {
    let block = heap.region.load(SB_ROOT_TABLE)?;
    let end = heap.core().capacity()?;
    if block < HEAP_START || block % GRANULE != 0 || block >= end {
        return Ok(None);
    }
    let gen = heap.region.load(block + HDR_GEN)?;
    let sealed = gen != 0 && heap.region.load(block + HDR_CHECK)? == check_word(heap.key(), block, gen);
    let capacity = heap.region.load(payload_of(block) + ROOT_TABLE_CAPACITY)?;
    let fits =
        capacity.checked_mul(ROOT_SIZE).and_then(|b| b.checked_add(payload_of(block) + ROOT_TABLE_ENTRIES));
    if !sealed || !capacity.is_power_of_two() || capacity < ROOT_TABLE_FIRST || fits.map_or(true, |f| f > end)
    {
        return Ok(None);
    }
    Ok(Some(directory_at(block, capacity)))
}

/// One used entry of the roots, read as it is, with what is wrong with it.
pub(crate) struct Surveyed {
    /// The name, bytes that are not UTF-8 replaced.
    pub(crate) name: String,
    /// The block it names.
    pub(crate) target: u64,
    /// What is wrong with the entry, each at the offset a check reports.
    pub(crate) problems: Vec<Problem>,
}

/// Every used entry of the roots, sorted by name, each checked on its own (a malformed name, a
/// block that is not live, an unpublished block), so that one damaged entry hides no other. The caller holds
/// the store lock. A roots table that does not fit its block is an error.
pub(crate) fn survey_roots(heap: &Heap) -> Result<Vec<Surveyed>> {
    let dir = directory(heap)?;
    let mut out = Vec::new();
    for i in 0..dir.count() {
        let e = dir.entry(i);
        let target = heap.region.load(e + ROOT_BLOCK)?;
        if target == 0 {
            continue;
        }
        let mut problems = Vec::new();
        if !dir.name_ok(heap, i)? {
            problems.push(Problem { what: "root name is malformed", offset: e });
        }
        let word = heap.rc(target);
        if !heap.names_live(target) || rc::count(word) == 0 {
            problems.push(Problem { what: "root names no live block", offset: e });
        } else if !rc::published(word) {
            // A root publishes its block before it names it (recovery refuses this as damage).
            problems.push(Problem { what: "root names an unpublished block", offset: target });
        }
        out.push(Surveyed { name: dir.name_lossy(heap, i)?, target, problems });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The named roots as a kind of reference: each holds one of its block's other holds, and the
/// superblock holds the roots table.
pub(crate) struct Roots;

impl Kind for Roots {
    fn open(&self, _heap: &Heap, _dead: &[u64], kind: usize) -> Result<Box<dyn Session>> {
        Ok(Box::new(RootSession {
            kind,
            dir: None,
            counts: (0, 0),
            capacity: None,
            relink: None,
            rebuild: None,
            changes: Default::default(),
        }))
    }

    fn check(&self, heap: &Heap) -> Result<Vec<Problem>> {
        let surveyed = match survey_roots(heap) {
            Ok(s) => s,
            Err(Error::Corrupt { what, offset }) => return Ok(vec![Problem { what, offset }]),
            Err(e) => return Err(e),
        };
        Ok(surveyed.into_iter().flat_map(|s| s.problems).collect())
    }

    fn bookkeeping(&self, heap: &Heap, out: &mut Vec<u64>) -> Result<()> {
        out.extend(table(heap).ok().flatten().map(|(block, _)| block));
        Ok(())
    }

    fn named(&self, heap: &Heap) -> Result<Vec<u64>> {
        let Ok(dir) = directory(heap) else { return Ok(Vec::new()) };
        let mut out = dir.targets(heap);
        out.extend(table(heap).ok().flatten().map(|(block, _)| block));
        Ok(out)
    }
}

/// What salvage's repair decided for the entries of a table to rebuild: those dropped (by
/// index) and those renamed.
type Changes = (Vec<u64>, Vec<(u64, String)>);

struct RootSession {
    kind: usize,
    /// The directory read (the table, or the fixed one), for the repair.
    dir: Option<Directory>,
    /// A table's used and emptied entries, as read.
    counts: (u64, u64),
    /// Salvage: a table whose header's count of entries was damaged, and the right one.
    capacity: Option<(u64, u64)>,
    /// Salvage: the table found in the heap when the superblock's field was damaged.
    relink: Option<u64>,
    /// Salvage: the entries of a table whose block's header was hit, for a new table.
    rebuild: Option<Directory>,
    /// Salvage: the entries the repair dropped or renamed, for the rebuild.
    changes: std::cell::RefCell<Changes>,
}

impl Session for RootSession {
    fn read(&mut self, heap: &Heap, plan: &mut dyn Reading, out: &mut Vec<Reference>) -> Result<()> {
        let mut found = table_as_found(heap);
        if found.is_err() && plan.salvaging() {
            // The superblock's field was hit: the one block that is laid out as a roots table
            // (and held as one) is it; the repair names it again.
            if let Some(block) = lone_table(heap)? {
                self.relink = Some(block);
                let capacity = heap.region.load(payload_of(block) + ROOT_TABLE_CAPACITY)?;
                found = Ok(Some((block, capacity, capacity)));
            } else if let Some(dir) = hit_table(heap)? {
                // The table's own header was hit: salvage fences the block off, so its entries
                // go into a new table (`rebuild`), their names as read.
                plan.damage("roots table's header is damaged", heap.region.load(SB_ROOT_TABLE)?)?;
                dir.read_references(heap, self.kind, plan, out, |_, _, _, _| Ok(()))?;
                self.rebuild = Some(dir);
                return Ok(());
            }
        }
        if let Ok(Some((block, capacity, field))) = found {
            if field != capacity {
                // Salvage: the header's count is written again from the block's length.
                plan.damage("roots table's size disagrees with its block", payload_of(block))?;
                self.capacity = Some((block, capacity));
            }
        }
        let dir = match found.map(|t| t.map(|(block, capacity, _)| (block, capacity))) {
            Ok(Some((block, capacity))) => {
                let holder = Holder { kind: self.kind, entry: TABLE_ENTRY, message: None };
                out.push(Reference { holder, target: block });
                directory_at(block, capacity)
            }
            Ok(None) => ROOTS,
            Err(Error::Corrupt { what, offset }) => {
                // Salvage: the roots are lost with their table (the superblock's field cleared).
                plan.damage(what, offset)?;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let before = out.len();
        dir.read_references(heap, self.kind, plan, out, |_, _, _, _| Ok(()))?;
        if dir.header().is_some() {
            let used = (out.len() - before) as u64;
            let emptied = (0..dir.count()).filter(|&i| dir.is_emptied(heap, i)).count() as u64;
            self.counts = (used, emptied);
        }
        self.dir = Some(dir);
        Ok(())
    }

    fn what(&self, holder: &Holder) -> &'static str {
        match holder.entry {
            TABLE_ENTRY => "roots table",
            _ => "root",
        }
    }

    fn names_nothing(&self, _holder: &Holder) -> &'static str {
        "root names no live block"
    }

    fn name(&self, heap: &Heap, holder: &Holder) -> Result<String> {
        match (holder.entry, &self.dir) {
            (TABLE_ENTRY, _) | (_, None) => Ok(String::new()),
            (i, Some(dir)) => dir.name_lossy(heap, i),
        }
    }

    /// Salvage: the roots of a table whose header was hit, in a new table (its entries' holds
    /// are counted by the recount as any root's; the old block stays fenced off).
    fn rebuild(&self, heap: &Heap, g: &Guard<'_>) -> Result<()> {
        let Some(old) = &self.rebuild else { return Ok(()) };
        let (dropped, renamed) = &*self.changes.borrow();
        let mut kept = Vec::new();
        for e in (0..old.count()).filter(|i| !dropped.contains(i)) {
            let target = heap.region.load(old.entry(e) + ROOT_BLOCK)?;
            if target == 0 {
                continue;
            }
            let name = match renamed.iter().find(|(i, _)| *i == e) {
                Some((_, n)) => n.as_bytes().to_vec(),
                None => old.name_lossy(heap, e)?.into_bytes(),
            };
            kept.push((name, target));
        }
        let capacity = ROOT_TABLE_FIRST.max(((kept.len() as u64 + 1) * 2).next_power_of_two());
        let table = make_table(heap, g, capacity)?;
        let dir = directory_at(table, capacity);
        for (name, target) in &kept {
            insert(heap, &dir, name, *target)?;
        }
        heap.region.store(SB_ROOT_TABLE, table)
    }

    /// The dropped entries emptied, the renamed ones renamed; a table's counts set again, and
    /// the fixed directory's leftovers of a move into the table cleared; a table that could
    /// not be read (salvage) forgotten.
    fn repair(&self, heap: &Heap, dropped: &[Reference], renamed: &[(Holder, String)]) -> Result<()> {
        if self.rebuild.is_some() {
            let dropped = dropped.iter().map(|r| r.holder.entry).collect();
            let renamed = renamed.iter().map(|(h, n)| (h.entry, n.clone())).collect();
            *self.changes.borrow_mut() = (dropped, renamed);
            return Ok(());
        }
        let Some(dir) = &self.dir else {
            return heap.region.store(SB_ROOT_TABLE, 0);
        };
        if dropped.iter().any(|r| r.holder.entry == TABLE_ENTRY) {
            return heap.region.store(SB_ROOT_TABLE, 0);
        }
        let entries: Vec<Reference> =
            dropped.iter().copied().filter(|r| r.holder.entry != TABLE_ENTRY).collect();
        dir.repair(heap, &entries, renamed)?;
        if let Some(block) = self.relink {
            heap.region.store(SB_ROOT_TABLE, block)?;
        }
        if let Some((block, capacity)) = self.capacity {
            heap.region.store(payload_of(block) + ROOT_TABLE_CAPACITY, capacity)?;
        }
        if let Some(at) = dir.header() {
            let dropped = entries.len() as u64;
            heap.region.store(at + ROOT_TABLE_USED, self.counts.0 - dropped.min(self.counts.0))?;
            heap.region.store(at + ROOT_TABLE_EMPTIED, self.counts.1 + dropped)?;
            for i in 0..ROOTS.count() {
                ROOTS.set_target(heap, i, 0)?;
            }
        }
        Ok(())
    }
}
