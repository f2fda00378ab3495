//! Links as a kind of reference (`holders.rs`): every non-empty cell of every linked block's
//! table (`heap/links.rs`) is one other hold of the block it names. A link is kept *inside* a
//! block, so it goes when recovery frees that block ([`Session::inside`]): recovery's recount
//! takes away the links of what it frees, and frees what that leaves unheld, to a fixpoint
//! (`recovery/apply.rs`). The check also finds the blocks that only links keep, from blocks
//! nothing else reaches: a cycle (`unreachable`).

use std::collections::{HashMap, HashSet};

use crate::engine::core::header::rc;
use crate::engine::heap::links::LinkTable;
use crate::engine::heap::Heap;
use crate::engine::holders::{Holder, Kind, Reading, Reference, Session};
use crate::error::Result;
use crate::Problem;

/// The links of every linked block.
pub(crate) struct Links;

/// Every used block with a link table, with the table or the damage it is. `tolerant`: a heap
/// whose tiling is damaged is walked as salvage walks it.
fn linked_blocks(heap: &Heap, tolerant: bool) -> Result<Vec<(u64, Result<LinkTable>)>> {
    let core = heap.core();
    let blocks = match (core.scan(), tolerant) {
        (Ok(blocks), _) => blocks,
        (Err(_), true) => core.scan_salvage(&[])?,
        (Err(e), false) => return Err(e),
    };
    let linked = blocks.into_iter().filter(|b| b.tag.is_plain_used() && b.tag.is_linked());
    Ok(linked.map(|b| (b.offset, heap.link_table(b.offset, b.tag))).collect())
}

/// The non-empty cells of a table: (index, target).
fn cells(heap: &Heap, table: &LinkTable) -> Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    for i in 0..table.count {
        let target = heap.region.load(table.cell(i))?;
        if target != 0 {
            out.push((i, target));
        }
    }
    Ok(out)
}

/// The non-empty cells of the block at `off` if a used, linked block's header is there (salvage's
/// anchors only: what they name is checked before anything is kept); nothing otherwise.
fn named_links(heap: &Heap, off: u64) -> Vec<(u64, u64)> {
    let Ok(tag) = heap.core().block_at(off) else { return Vec::new() };
    if !tag.is_plain_used() || !tag.is_linked() {
        return Vec::new();
    }
    let table = heap.link_table(off, tag);
    table.and_then(|t| cells(heap, &t)).unwrap_or_default()
}

impl Kind for Links {
    fn open(&self, _heap: &Heap, _dead: &[u64], kind: usize) -> Result<Box<dyn Session>> {
        Ok(Box::new(LinkSession { kind, tables: HashMap::new(), unreadable: Vec::new() }))
    }

    /// Tables that do not fit their blocks, links that name no held block.
    fn check(&self, heap: &Heap) -> Result<Vec<Problem>> {
        let mut out = Vec::new();
        for (off, table) in linked_blocks(heap, false)? {
            let table = match table {
                Ok(t) => t,
                Err(_) => {
                    out.push(Problem { what: "link table does not fit its block", offset: off });
                    continue;
                }
            };
            for (i, target) in cells(heap, &table)? {
                if !heap.names_live(target) || !rc::published(heap.rc(target)) {
                    out.push(Problem { what: "link names no held block", offset: table.cell(i) });
                }
            }
        }
        Ok(out)
    }

    fn named(&self, heap: &Heap) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for (_, table) in linked_blocks(heap, false)? {
            if let Ok(table) = table {
                out.extend(cells(heap, &table)?.into_iter().map(|(_, target)| target));
            }
        }
        Ok(out)
    }

    fn bookkeeping(&self, _heap: &Heap, _out: &mut Vec<u64>) -> Result<()> {
        Ok(())
    }

    /// Blocks only cycles of links keep ([`unreachable`]).
    fn leaks(&self, heap: &Heap) -> Result<Vec<u64>> {
        let mut all = Vec::new();
        for (off, table) in linked_blocks(heap, false)? {
            if let Ok(table) = table {
                all.extend(cells(heap, &table)?.into_iter().map(|(_, target)| (off, target)));
            }
        }
        Ok(unreachable(heap, &all))
    }
}

struct LinkSession {
    kind: usize,
    /// The tables read from the plan's tiling, by block: where the repair clears cells.
    tables: HashMap<u64, LinkTable>,
    /// Salvage: linked blocks whose table is damaged; they lose their `LINKED` bit.
    unreadable: Vec<u64>,
}

impl LinkSession {
    /// The references of the linked blocks of `blocks` (their tables recorded).
    fn read_blocks(
        &mut self,
        heap: &Heap,
        blocks: impl Iterator<Item = (u64, Result<LinkTable>)>,
        plan: &mut dyn Reading,
    ) -> Result<Vec<Reference>> {
        let mut out = Vec::new();
        for (off, table) in blocks {
            let Ok(table) = table else {
                plan.damage("link table does not fit its block", off)?;
                self.unreadable.push(off);
                continue;
            };
            for (i, target) in cells(heap, &table)? {
                let holder = Holder { kind: self.kind, entry: off, message: Some(i) };
                out.push(Reference { holder, target });
            }
            self.tables.insert(off, table);
        }
        Ok(out)
    }
}

impl Session for LinkSession {
    /// Salvage only: the links as a tolerant walk finds them, for the anchors of its tiling
    /// (`tiled` reads them again from that tiling). Recovery reads them from its scan there.
    ///
    /// A tolerant walk resyncs after a range it cannot parse at whatever header it finds next,
    /// so it can miss a linked block that a root (or another reference read before links) names
    /// exactly: the links of what those references name are read too, to a fixpoint, so that a
    /// linked block's children anchor the tiling whenever the block itself does.
    fn read(&mut self, heap: &Heap, plan: &mut dyn Reading, out: &mut Vec<Reference>) -> Result<()> {
        if plan.salvaging() {
            let walked = linked_blocks(heap, true)?;
            let mut seen: HashSet<u64> = walked.iter().map(|(off, _)| *off).collect();
            let mut refs = self.read_blocks(heap, walked.into_iter(), plan)?;
            let mut work: Vec<u64> = out.iter().chain(&refs).map(|r| r.target).collect();
            while let Some(target) = work.pop() {
                if !seen.insert(target) {
                    continue;
                }
                for (i, child) in named_links(heap, target) {
                    let holder = Holder { kind: self.kind, entry: target, message: Some(i) };
                    refs.push(Reference { holder, target: child });
                    work.push(child);
                }
            }
            out.extend(refs);
            (self.tables, self.unreadable) = (HashMap::new(), Vec::new());
        }
        Ok(())
    }

    fn tiled(
        &mut self,
        heap: &Heap,
        blocks: &[crate::engine::core::tlsf::BlockInfo],
        plan: &mut dyn Reading,
    ) -> Result<Option<Vec<Reference>>> {
        let linked = blocks.iter().filter(|b| b.tag.is_plain_used() && b.tag.is_linked());
        let tables = linked.map(|b| (b.offset, heap.link_table(b.offset, b.tag)));
        self.read_blocks(heap, tables, plan).map(Some)
    }

    fn what(&self, _holder: &Holder) -> &'static str {
        "link"
    }

    fn names_nothing(&self, _holder: &Holder) -> &'static str {
        "link names no held block"
    }

    fn name(&self, _heap: &Heap, holder: &Holder) -> Result<String> {
        Ok(format!("link {} of the block at {:#x}", holder.message.unwrap_or(0), holder.entry))
    }

    fn inside(&self, holder: &Holder) -> Option<u64> {
        Some(holder.entry)
    }

    /// Salvage: clears the cells of the links it dropped, and the `LINKED` bit of blocks whose
    /// table it could not read (their links are lost: what only they held is freed).
    fn repair(&self, heap: &Heap, dropped: &[Reference], _renamed: &[(Holder, String)]) -> Result<()> {
        for r in dropped {
            if let (Some(table), Some(i)) = (self.tables.get(&r.holder.entry), r.holder.message) {
                heap.region.store(table.cell(i), 0)?;
            }
        }
        for &off in &self.unreadable {
            let tag = heap.region.u64_at(off + crate::format::HDR_TAG)?;
            tag.fetch_and(!crate::engine::core::header::FLAG_LINKED, crate::sync::Ordering::AcqRel);
        }
        Ok(())
    }
}

/// The blocks that only links keep, from blocks nothing else reaches: a cycle that no root,
/// channel, hold or living process reaches (and what only such a cycle links), given every
/// link as (holder, target). A block is reached if it is held otherwise (owner references, or
/// more other holds than links naming it: a root's, a channel's, a process's hold) or linked
/// from a reached block.
pub(crate) fn unreachable(heap: &Heap, links: &[(u64, u64)]) -> Vec<u64> {
    let mut edges: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut named: HashMap<u64, u64> = HashMap::new();
    for &(holder, target) in links {
        edges.entry(holder).or_default().push(target);
        *named.entry(target).or_default() += 1;
    }
    let held_otherwise = |b: u64| {
        let w = heap.rc(b);
        rc::owner_refs(w) > 0 || rc::other(w) > named.get(&b).copied().unwrap_or(0)
    };
    let mut work: Vec<u64> =
        edges.keys().chain(named.keys()).copied().filter(|&b| held_otherwise(b)).collect();
    let mut reached: HashSet<u64> = HashSet::new();
    while let Some(b) = work.pop() {
        if reached.insert(b) {
            work.extend(edges.get(&b).into_iter().flatten().copied());
        }
    }
    let mut out: Vec<u64> = named.keys().copied().filter(|t| !reached.contains(t)).collect();
    out.sort_unstable();
    out
}
