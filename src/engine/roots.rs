//! Named roots as a kind of reference: each root holds one of its block's other holds, and
//! the superblock's fields hold the name tables (`tables.rs`: the roots' and the channels'),
//! which this kind counts, and which salvage takes care of (a table a flip hid is found again,
//! one whose header was hit is rebuilt).

use crate::engine::core::check::Problem;
use crate::engine::core::header::rc;
use crate::engine::directory::{Directory, CHANNELS, ROOTS};
use crate::engine::heap::{Guard, Heap};
use crate::engine::holders::{Holder, Kind, Reading, Reference, Session};
use crate::engine::tables::{insert, CHANNEL_NAMES, ROOT_NAMES};
use crate::error::{Error, Result};
use crate::format::*;

/// The holder entry of the superblock's reference to the roots table.
const TABLE_ENTRY: u64 = u64::MAX;
/// The holder entry of the superblock's reference to the channels' table.
const CHANNEL_TABLE_ENTRY: u64 = u64::MAX - 1;

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
    let dir = ROOT_NAMES.directory(heap)?;
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
        } else if dir.misplaced(heap, i)? {
            problems.push(Problem { what: "root name does not find its entry", offset: e });
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
            channels_lost: false,
            lost: Vec::new(),
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
        let mut out: Vec<Problem> = surveyed.into_iter().flat_map(|s| s.problems).collect();
        if let Err(Error::Corrupt { what, offset }) = CHANNEL_NAMES.table(heap) {
            out.push(Problem { what, offset });
        }
        Ok(out)
    }

    /// The name tables.
    fn bookkeeping(&self, heap: &Heap, out: &mut Vec<u64>) -> Result<()> {
        for names in [&ROOT_NAMES, &CHANNEL_NAMES] {
            out.extend(names.table(heap).ok().flatten().map(|(block, _)| block));
        }
        Ok(())
    }

    fn named(&self, heap: &Heap) -> Result<Vec<u64>> {
        let mut out = ROOT_NAMES.directory(heap).map(|dir| dir.targets(heap)).unwrap_or_default();
        self.bookkeeping(heap, &mut out)?;
        Ok(out)
    }
}

/// The table the superblock's `field` names, which could not be read: how many names its header
/// says it held, if it can be read and says any.
fn lost_table(heap: &Heap, kind: &'static str, field: u64) -> Result<crate::engine::reports::LostTable> {
    let offset = heap.region.load(field)?;
    let used = offset.checked_add(HEADER_SIZE + ROOT_TABLE_USED).and_then(|at| heap.region.load(at).ok());
    Ok(crate::engine::reports::LostTable { kind, offset, names: used.filter(|&n| n > 0) })
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
    /// Salvage: the used entries of a table whose block's header was hit, as read (index,
    /// name, target), for a new table: the old block's bytes are not read again, since the
    /// repairs before the rebuild may write over them (a range fenced off, a free block's
    /// links).
    rebuild: Option<Vec<(u64, Vec<u8>, u64)>>,
    /// Salvage: the entries the repair dropped or renamed, for the rebuild.
    changes: std::cell::RefCell<Changes>,
    /// Salvage: the channels' table could not be read (the channels are lost with it).
    channels_lost: bool,
    /// Salvage: the tables that could not be read, for the report.
    lost: Vec<crate::engine::reports::LostTable>,
}

impl Session for RootSession {
    fn read(&mut self, heap: &Heap, plan: &mut dyn Reading, out: &mut Vec<Reference>) -> Result<()> {
        match CHANNEL_NAMES.table(heap) {
            Ok(Some((block, _))) => {
                let holder = Holder { kind: self.kind, entry: CHANNEL_TABLE_ENTRY, message: None };
                out.push(Reference { holder, target: block });
            }
            Ok(None) => {}
            Err(Error::Corrupt { what, offset }) => {
                plan.damage(what, offset)?;
                self.channels_lost = true;
                self.lost.push(lost_table(heap, "channels table", SB_CHANNEL_TABLE)?);
            }
            Err(e) => return Err(e),
        }
        let mut found = ROOT_NAMES.table_as_found(heap);
        if found.is_err() && plan.salvaging() {
            // The superblock's field was hit: the one block that is laid out as a roots table
            // (and held as one) is it; the repair names it again.
            if let Some(block) = ROOT_NAMES.lone_table(heap)? {
                self.relink = Some(block);
                let capacity = heap.region.load(payload_of(block) + ROOT_TABLE_CAPACITY)?;
                found = Ok(Some((block, capacity, capacity)));
            } else if let Some(dir) = ROOT_NAMES.hit_table(heap)? {
                // The table's own header was hit: salvage fences the block off, so its entries
                // go into a new table (`rebuild`), their names as read.
                plan.damage("roots table's header is damaged", heap.region.load(SB_ROOT_TABLE)?)?;
                dir.read_references(heap, self.kind, plan, out, |_, _, _, _| Ok(()))?;
                let mut entries = Vec::new();
                for e in 0..dir.count() {
                    let target = heap.region.load(dir.entry(e) + ROOT_BLOCK)?;
                    if target != 0 {
                        entries.push((e, dir.name_lossy(heap, e)?.into_bytes(), target));
                    }
                }
                self.rebuild = Some(entries);
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
                ROOT_NAMES.directory_at(block, capacity)
            }
            Ok(None) => ROOTS,
            Err(Error::Corrupt { what, offset }) => {
                // Salvage: the roots are lost with their table (the superblock's field cleared).
                plan.damage(what, offset)?;
                self.lost.push(lost_table(heap, "roots table", SB_ROOT_TABLE)?);
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

    fn lost_tables(&self) -> Vec<crate::engine::reports::LostTable> {
        self.lost.clone()
    }

    fn what(&self, holder: &Holder) -> &'static str {
        match holder.entry {
            TABLE_ENTRY => "roots table",
            CHANNEL_TABLE_ENTRY => "channels table",
            _ => "root",
        }
    }

    fn names_nothing(&self, _holder: &Holder) -> &'static str {
        "root names no live block"
    }

    fn name(&self, heap: &Heap, holder: &Holder) -> Result<String> {
        match (holder.entry, &self.dir) {
            (TABLE_ENTRY | CHANNEL_TABLE_ENTRY, _) | (_, None) => Ok(String::new()),
            (i, Some(dir)) => dir.name_lossy(heap, i),
        }
    }

    /// Salvage: the roots of a table whose header was hit, in a new table (its entries' holds
    /// are counted by the recount as any root's; the old block stays fenced off).
    fn rebuild(&self, heap: &Heap, g: &Guard<'_>) -> Result<()> {
        let Some(old) = &self.rebuild else { return Ok(()) };
        let (dropped, renamed) = &*self.changes.borrow();
        let mut kept = Vec::new();
        for (e, name, target) in old.iter().filter(|(i, ..)| !dropped.contains(i)) {
            let name = match renamed.iter().find(|(i, _)| i == e) {
                Some((_, n)) => n.as_bytes().to_vec(),
                None => name.clone(),
            };
            kept.push((name, *target));
        }
        let capacity = ROOT_TABLE_FIRST.max(((kept.len() as u64 + 1) * 2).next_power_of_two());
        let table = ROOT_NAMES.make_table(heap, g, capacity)?;
        let dir = ROOT_NAMES.directory_at(table, capacity);
        for (name, target) in &kept {
            insert(heap, &dir, name, *target)?;
        }
        heap.region.store(SB_ROOT_TABLE, table)
    }

    /// The dropped entries emptied, the renamed ones renamed; a table's counts set again, and
    /// the fixed directory's leftovers of a move into the table cleared; a table that could
    /// not be read (salvage) forgotten.
    fn repair(&self, heap: &Heap, dropped: &[Reference], renamed: &[(Holder, String)]) -> Result<()> {
        if self.channels_lost || dropped.iter().any(|r| r.holder.entry == CHANNEL_TABLE_ENTRY) {
            // The fixed directory becomes the channels' again: what it holds are leftovers of
            // the move into the table, which this salvage did not count (their rings would be
            // named with no hold), as the roots' fixed directory's are (`forget_table`).
            heap.region.store(SB_CHANNEL_TABLE, 0)?;
            for i in 0..CHANNELS.count() {
                CHANNELS.set_target(heap, i, 0)?;
            }
        } else {
            CHANNEL_NAMES.recount(heap)?;
        }
        let dropped: Vec<Reference> =
            dropped.iter().copied().filter(|r| r.holder.entry != CHANNEL_TABLE_ENTRY).collect();
        let dropped = &dropped[..];
        if self.rebuild.is_some() {
            let dropped = dropped.iter().map(|r| r.holder.entry).collect();
            let renamed = renamed.iter().map(|(h, n)| (h.entry, n.clone())).collect();
            *self.changes.borrow_mut() = (dropped, renamed);
            return Ok(());
        }
        let Some(dir) = &self.dir else {
            return forget_table(heap);
        };
        if dropped.iter().any(|r| r.holder.entry == TABLE_ENTRY) {
            return forget_table(heap);
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
        if dir.header().is_some() {
            dir.recount(heap)?;
            clear_fixed(heap)?;
        }
        Ok(())
    }
}

/// Salvage: a roots table that could not be read, or whose block is gone, is forgotten, and
/// the roots with it. The fixed directory is cleared too: it holds the leftovers of the move
/// into the table, never counted as references, which would otherwise read as the roots (the
/// open fuzz target found a salvaged store whose check then found them malformed).
fn forget_table(heap: &Heap) -> Result<()> {
    heap.region.store(SB_ROOT_TABLE, 0)?;
    clear_fixed(heap)
}

/// Empties every entry of the fixed directory (the roots' home before a table held them).
fn clear_fixed(heap: &Heap) -> Result<()> {
    for i in 0..ROOTS.count() {
        ROOTS.set_target(heap, i, 0)?;
    }
    Ok(())
}
