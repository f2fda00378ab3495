//! Applying a recovery plan (`plan.rs`), under the store lock. Everything read here was
//! validated by the plan, so applying does not fail part-way on what the store holds.
//!
//! 1. **Repair**: `Core::rebuild_from` recomputes the free lists, flags, footers and counters
//!    from the plan's tiling (any core operation a dead lock holder was in the middle of is
//!    finished or undone: its single committing tag store happened or not); salvage's
//!    quarantined ranges get their headers. `Core::rebuild_spans_from` derives the spans'
//!    free lists, counts and lists from the slots' reference words and frees pages no span
//!    names. Salvage also drops and renames the references it planned to, and gives damaged
//!    records new generations.
//! 2. **Recount**: a block's other holds are, by definition, the references the plan kept
//!    (roots, channel entries and queued messages, hold tables of the living). Every used
//!    block's reference word is set to that count; owner references of a dead owner are
//!    dropped with its owner field in the same atomic update (for salvage, which has the
//!    store to itself, those of an owner naming a free registry slot too).
//! 3. **Free** every block left with no reference and no living owner, and the dead slots.
//!
//! Other holds change only under the store lock, so the recount cannot race with them; owner
//! references change lock-free, so the reference word is updated with a compare-and-swap that
//! keeps them.

use std::collections::{HashMap, HashSet};

use super::plan::Plan;
use crate::engine::core::header::rc;
use crate::engine::heap::{Guard, Heap};
use crate::engine::holders::{Reference, Session};
use crate::engine::reports::RecoveryReport;
use crate::error::Result;
use crate::format::*;
use crate::sync::{AtomicU64, Ordering};

impl Plan {
    /// Applies the plan: repair, recount, free, release the dead slots. Returns what it did.
    pub(crate) fn apply(
        &self,
        heap: &Heap,
        g: &Guard<'_>,
        sessions: &[Box<dyn Session>],
    ) -> Result<RecoveryReport> {
        let core = heap.core();
        if let Some(key) = self.new_key {
            heap.set_key(key)?;
        }
        for &(off, tag) in &self.retags {
            core.retag(off, tag)?;
        }
        for &(page, span) in &self.page_spans {
            heap.region.store(page + HEADER_SIZE + PAGE_SPAN, span)?;
        }
        core.rebuild_from(&self.blocks)?;
        heap.region.store(SB_NEXT_GEN, self.next_gen)?;
        for &b in &self.stale_generations {
            heap.region.store(b + HDR_GEN, 0)?;
        }
        self.fix_references(heap, sessions)?;
        for s in sessions {
            s.rebuild(heap, g)?;
        }
        core.rebuild_spans_from(&self.spans, &self.orphans)?;
        self.renew(heap, g)?;
        let pending = sessions.iter().any(|s| s.pending());
        let holds = self.final_holds(heap, sessions, pending)?;
        let report = self.recount_and_free(heap, g, pending, &holds)?;
        for s in sessions {
            s.forget(heap, &self.dead)?;
        }
        let me = heap.slot().map(u64::from);
        // A dead process that a kind still names (a busy ring's lock holder) keeps its registry
        // slot (not its tables, freed above) until a recovery can settle that: a process given
        // the slot meanwhile would be taken for the lock's living holder.
        let named = |i: u64| sessions.iter().any(|s| s.keeps_slot(heap, i));
        for &i in &self.dead {
            let slot = match Some(i) == me {
                true => Release::Ours,
                false if named(i) => Release::Kept,
                false => Release::Free,
            };
            release_slot(heap, i, slot)?;
        }
        // A free slot names no tables: fields a damaged registry left there go (they name
        // nothing anyone holds; left, every reader would have to doubt them).
        for i in (0..SLOT_COUNT).filter(|i| !self.dead.contains(i) && Some(*i) != me) {
            let s = slot_offset(i);
            if heap.region.load32(s + SLOT_STATE)? == SLOT_FREE {
                heap.region.store(s + SLOT_HOLDS, 0)?;
                heap.region.store(s + SLOT_CACHES, 0)?;
            }
        }
        let r = &heap.region;
        r.store(SB_RECOVERIES, r.load(SB_RECOVERIES)?.wrapping_add(1))?;
        r.store(SB_RECOVERED_PROCESSES, r.load(SB_RECOVERED_PROCESSES)?.wrapping_add(report.dead_processes))?;
        let freed = report.blocks_freed + report.cached_blocks_freed + report.bookkeeping_blocks_freed;
        r.store(SB_RECOVERED_BLOCKS, r.load(SB_RECOVERED_BLOCKS)?.wrapping_add(freed))?;
        Ok(report)
    }

    /// Repairs of references, kind by kind (`Session::repair`): what a crash left half done
    /// (a ring's head and tail); for salvage, the references dropped and the entries renamed.
    fn fix_references(&self, heap: &Heap, sessions: &[Box<dyn Session>]) -> Result<()> {
        for (kind, session) in sessions.iter().enumerate() {
            let dropped: Vec<Reference> =
                self.dropped.iter().copied().filter(|r| r.holder.kind == kind).collect();
            let renamed: Vec<_> = self.renamed.iter().filter(|(h, _)| h.kind == kind).cloned().collect();
            session.repair(heap, &dropped, &renamed)?;
        }
        Ok(())
    }

    /// Salvage: new generations (and check words, or page records) for published blocks and
    /// slots whose own were damaged. A slot whose span has no page and no room for one is
    /// unpublished instead.
    fn renew(&self, heap: &Heap, g: &Guard<'_>) -> Result<()> {
        for &b in &self.renew_blocks {
            let (gen, _) = heap.reserve_generations(g, 1)?;
            heap.region.store(b + HDR_GEN, gen)?;
            heap.region.store(b + HDR_CHECK, crate::engine::core::header::check_word(heap.key(), b, gen))?;
        }
        let mut unrecorded = Vec::new();
        for slot in &self.renew_slots {
            // The plan found room for every page it needs (`Plan::room_for_pages`); should the
            // heap disagree, the slot stays unpublished, nothing naming it with a record.
            let Some(page) = heap.core().span_page(slot.span, slot.class, true)? else {
                heap.region.u64_at(slot.rc_offset())?.fetch_and(!rc::PUBLISHED, Ordering::AcqRel);
                unrecorded.push(slot.rc_offset());
                continue;
            };
            let entry = page + PAGE_ENTRIES + slot.index * 8;
            let slack = heap.region.load(entry)? >> 56;
            let (gen, _) = heap.reserve_generations(g, 1)?;
            let slack = if slack <= slot.class { slack } else { 0 };
            heap.region.store(entry, gen | slack << 56)?;
        }
        for &word in self.publish.iter().filter(|w| !unrecorded.contains(w)) {
            heap.region.u64_at(word)?.fetch_or(rc::PUBLISHED, Ordering::AcqRel);
        }
        Ok(())
    }

    /// The other holds the recount sets: one per kept reference, less the references kept
    /// inside blocks that this recovery frees (a freed block's links go with it, and may leave
    /// what they named held by nobody in turn: to a fixpoint, each freed block taken once).
    /// With `collect_cycles`, the blocks that only links from such blocks reach are freed too.
    fn final_holds(
        &self,
        heap: &Heap,
        sessions: &[Box<dyn Session>],
        pending: bool,
    ) -> Result<HashMap<u64, u64>> {
        let mut holds = self.holds();
        let mut inside: HashMap<u64, Vec<u64>> = HashMap::new();
        for r in &self.references {
            if let Some(b) = sessions[r.holder.kind].inside(&r.holder) {
                inside.entry(b).or_default().push(r.target);
            }
        }
        let mut work = Vec::new();
        for &b in inside.keys() {
            if self.frees(heap, b, &holds, pending)? {
                work.push(b);
            }
        }
        if self.collect_cycles {
            work.extend(self.unreached(heap, sessions, &inside)?);
        }
        let mut done = HashSet::new();
        while let Some(b) = work.pop() {
            if !done.insert(b) {
                continue;
            }
            for &t in inside.get(&b).into_iter().flatten() {
                if let Some(h) = holds.get_mut(&t) {
                    *h = h.saturating_sub(1);
                }
                if inside.contains_key(&t) && !done.contains(&t) && self.frees(heap, t, &holds, pending)? {
                    work.push(t);
                }
            }
        }
        Ok(holds)
    }

    /// Whether the recount leaves the block at `b` held by nobody living, given `holds`.
    fn frees(&self, heap: &Heap, b: u64, holds: &HashMap<u64, u64>, pending: bool) -> Result<bool> {
        let w = heap.region.load(b + HDR_RC)?;
        if self.untouchable.contains(&b) || self.keep_exchange && rc::owner(w) == EXCHANGE_OWNER {
            return Ok(false);
        }
        let other = holds.get(&b).copied().unwrap_or(0).min(rc::OTHER_MAX);
        Ok(recounted(w, other, &self.dead, pending).is_some_and(|n| rc::count(n) == 0 && rc::owner(n) == 0))
    }

    /// The blocks holding references inside them (`inside`: block -> what it names) that no
    /// reference kept elsewhere (a root, a channel, a hold) and no living owner reaches,
    /// through such references: cycles, and what only they reach.
    fn unreached(
        &self,
        heap: &Heap,
        sessions: &[Box<dyn Session>],
        inside: &HashMap<u64, Vec<u64>>,
    ) -> Result<Vec<u64>> {
        let mut work: Vec<u64> = Vec::new();
        for r in self.references.iter().filter(|r| sessions[r.holder.kind].inside(&r.holder).is_none()) {
            work.push(r.target);
        }
        for &b in inside.keys() {
            let w = heap.region.load(b + HDR_RC)?;
            let owner = rc::owner(w);
            let living = owner != 0 && owner <= SLOT_COUNT && !self.dead.contains(&(owner - 1));
            if living || owner == EXCHANGE_OWNER || self.untouchable.contains(&b) {
                work.push(b);
            }
        }
        let mut reached = HashSet::new();
        while let Some(b) = work.pop() {
            if reached.insert(b) {
                work.extend(inside.get(&b).into_iter().flatten().copied());
            }
        }
        Ok(inside.keys().copied().filter(|b| !reached.contains(b)).collect())
    }

    /// Sets every used block's and slot's other holds to `holds`, drops dead owners'
    /// references, and frees what nobody living holds.
    fn recount_and_free(
        &self,
        heap: &Heap,
        g: &Guard<'_>,
        pending: bool,
        holds: &HashMap<u64, u64>,
    ) -> Result<RecoveryReport> {
        // Slots in a state other than attached (a damaged registry) are released too, but were
        // no process.
        let mut attached = 0;
        for &i in &self.dead {
            let s = slot_offset(i);
            // A slot kept for a busy ring (`Release::Kept`) was counted when its process was.
            let kept = heap.region.load32(s + SLOT_PID)? == 0;
            attached += u64::from(heap.region.load32(s + SLOT_STATE)? == SLOT_ATTACHED && !kept);
        }
        let mut report = RecoveryReport { dead_processes: attached, ..RecoveryReport::default() };
        let dead_tables: Vec<u64> = self
            .dead
            .iter()
            .map(|&i| heap.region.load(slot_offset(i) + SLOT_CACHES))
            .collect::<Result<_>>()?;
        // Salvage has the store to itself: an owner field naming a free registry slot (which a
        // flip wrote) is no process's either, and what it kept is freed if nothing holds it.
        let mut gone = self.dead.clone();
        if self.mode == super::plan::Mode::Salvage {
            for i in 0..SLOT_COUNT {
                if heap.region.load32(slot_offset(i) + SLOT_STATE)? == SLOT_FREE {
                    gone.push(i);
                }
            }
        }
        let (mut doomed, mut doomed_tables) = (Vec::new(), Vec::new());
        let mut count = |word: &AtomicU64, id: u64, size: u64, table: bool, report: &mut RecoveryReport| {
            if self.untouchable.contains(&id) {
                return;
            }
            if self.keep_exchange && rc::owner(word.load(Ordering::Acquire)) == EXCHANGE_OWNER {
                return;
            }
            if let Some(cached) = recount(word, id, holds, &gone, pending, report) {
                match table {
                    true => doomed_tables.push((id, size)),
                    false => doomed.push((id, size, cached)),
                }
            }
        };
        for b in self.blocks.iter().filter(|b| b.tag.is_plain_used()) {
            let word = heap.region.u64_at(b.offset + HDR_RC)?;
            count(word, b.offset, b.tag.size(), dead_tables.contains(&b.offset), &mut report);
        }
        for span in &self.spans {
            for index in 0..span.bump {
                let slot = crate::engine::core::span::Slot { span: span.p, index, class: span.class };
                let word = heap.region.u64_at(slot.rc_offset())?;
                if word.load(Ordering::Acquire) != 0 {
                    count(word, slot.id(), slot.class, false, &mut report);
                }
            }
        }
        // A dead process's parked reference words (its counter tables aside) are its caches'
        // blocks and the blocks lent from its caches to its `MemoryBlock`s (held, never
        // shared): the caches' own counters tell how many are the first. They are read before
        // anything is freed (a freed table's cells become free-list links and footers). Only a
        // report: a table out of range (a corrupt store) counts nothing rather than stop the
        // recovery.
        let parked = doomed.iter().filter(|&&(_, _, cached)| cached).count() as u64;
        let mut in_caches = 0u64;
        for &t in dead_tables.iter().filter(|&&t| t != 0) {
            let blocks = heap.parked_in(t).map_or(0, |(_, blocks)| blocks);
            in_caches = in_caches.saturating_add(blocks);
        }
        if !self.keep_exchange {
            // The exchange's blocks are freed too (their owner is no process): cached ones.
            in_caches = in_caches.saturating_add(crate::engine::heap::cache::exchange::totals(heap).0);
        }
        crate::hooks::pause("recovery-midway");
        let blocks = doomed.iter().map(|&(id, size, _)| (id, size));
        for (block, size) in blocks.chain(doomed_tables.iter().copied()) {
            // Links inside what is freed were taken away by the recount (`final_holds`).
            heap.free_doomed_locked(g, block)?;
            report.bytes_freed += size;
        }
        report.cached_blocks_freed = parked.min(in_caches);
        report.bookkeeping_blocks_freed = doomed_tables.len() as u64;
        report.blocks_freed = doomed.len() as u64 - report.cached_blocks_freed;
        report.recoveries = 1;
        Ok(report)
    }
}

/// Sets the other holds of the block or slot `id` (reference word `word`) to what the living
/// hold, and drops its owner references if its owner is dead. Returns, if nobody living holds
/// it any more, whether it was parked in a cache (else it was held by the dead only).
fn recount(
    word: &AtomicU64,
    id: u64,
    holds: &HashMap<u64, u64>,
    dead: &[u64],
    pending: bool,
    report: &mut RecoveryReport,
) -> Option<bool> {
    let other = holds.get(&id).copied().unwrap_or(0).min(rc::OTHER_MAX);
    let mut w = word.load(Ordering::Acquire);
    let new = loop {
        let new = recounted(w, other, dead, pending)?;
        match word.compare_exchange_weak(w, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => break new,
            Err(now) => w = now,
        }
    };
    // Only a report: a word whose owner names no slot was damaged, and its count means nothing.
    if (1..=SLOT_COUNT).contains(&rc::owner(w)) {
        report.owner_refs_released += rc::owner_refs(w) - rc::owner_refs(new);
    }
    report.holds_released += rc::other(w).saturating_sub(rc::other(new));
    (rc::count(new) == 0 && rc::owner(new) == 0).then_some(rc::count(w) == 0 && rc::owner(w) != 0)
}

/// The reference word the recount gives a block or slot whose word is `w` and whose kept
/// references are `other`: other holds set, a dead owner's references dropped with it. `None`:
/// left as it is (perhaps on its way into a busy ring, `Session::pending`).
fn recounted(w: u64, other: u64, dead: &[u64], pending: bool) -> Option<u64> {
    if pending && other == 0 && w == rc::OTHER_ONE {
        return None;
    }
    let owner = rc::owner(w);
    let owner_gone = owner == 0 || owner > SLOT_COUNT || dead.contains(&(owner - 1));
    let mut new = (w & !rc::OTHER_MASK) | (other << 32);
    if owner_gone {
        new &= !(rc::OWNER_MASK | rc::OWNER_REFS_MASK);
    }
    Some(new)
}

/// What becomes of a dead process's registry slot once its tables are freed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Release {
    /// Free for the next process.
    Free,
    /// Ours: we took it over from the dead process, and it stays attached.
    Ours,
    /// Kept taken for a busy ring whose lock names it (`Session::keeps_slot`), but forgotten: pid 0,
    /// so that the next recovery's report does not count the process again.
    Kept,
}

/// Clears a dead process's slot as `how` says.
fn release_slot(heap: &Heap, i: u64, how: Release) -> Result<()> {
    let s = slot_offset(i);
    heap.region.store(s + SLOT_HOLDS, 0)?;
    heap.region.store(s + SLOT_CACHES, 0)?;
    if how == Release::Ours {
        return heap.region.store32(s + SLOT_STATE, SLOT_ATTACHED);
    }
    heap.region.store32(s + SLOT_PID, 0)?;
    heap.region.store(s + SLOT_START_TIME, 0)?;
    heap.region.store(s + SLOT_NONCE, 0)?;
    if how == Release::Kept {
        return Ok(());
    }
    heap.region.store32(s + SLOT_STATE, SLOT_FREE)
}
