//! Recovery after a process died: reclaim what it held, repair what it left half done.
//!
//! Recovery runs under the store lock and is a pure function of what the living hold, so it is
//! idempotent: dying in the middle of it and running it again gives the same result.
//!
//! 1. **Who is dead**: every slot that is not free and whose liveness lock nobody holds (and,
//!    when a process has just claimed a slot a dead process left, that slot too).
//! 2. **Repair**: `Core::rebuild` recomputes the free lists, flags, footers and counters from
//!    the block headers, so any core operation the dead lock holder was in the middle of is
//!    finished or undone (its single committing tag store either happened or not).
//! 3. **Recount**: a block's other holds are, by definition, its entries in the hold tables of
//!    the living plus its named roots. Every used block's reference word is set to that count;
//!    owner references of a dead owner are dropped with its owner field in the same atomic
//!    update. Entries in a dead process's table simply stop counting.
//! 4. **Free** every block left with no reference and no living owner, and the dead slots.
//!
//! Other holds change only under the store lock, so the recount cannot race with them; owner
//! references change lock-free, so the reference word is updated with a compare-and-swap that
//! keeps them.

use std::collections::HashMap;

use crate::core::header::rc;
use crate::error::{Error, Result};
use crate::format::*;
use crate::heap::{Guard, Heap};
use crate::holds;
use crate::sync::Ordering;

/// What a recovery did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Registry slots of dead processes that were reclaimed.
    pub dead_processes: u64,
    /// Blocks freed because nobody living held them any more. Among them the blocks a dead
    /// process held as their only, unpublished reference, lent from its thread caches (their
    /// reference words read like parked ones: the caches' counters tell how many were parked).
    pub blocks_freed: u64,
    /// Bytes in those blocks and in the cached ones below, headers included.
    pub bytes_freed: u64,
    /// Blocks freed from dead processes' thread caches (parked, nobody's; their counter
    /// tables included).
    pub cached_blocks_freed: u64,
    /// Owner references of dead processes that were dropped (a lent block's reference is not
    /// counted in its header, so it adds none).
    pub owner_refs_released: u64,
    /// Other holds that were dropped (dead processes' hold-table entries).
    pub holds_released: u64,
}

/// Slots whose process is gone: not free, and nobody holds the liveness lock. `me` is
/// counted dead too when `reclaim_own` (we just took over a slot a dead process left).
pub(crate) fn dead_slots(heap: &Heap, reclaim_own: bool) -> Result<Vec<u64>> {
    let me = heap.slot().map(u64::from);
    let mut dead = Vec::new();
    for i in 0..SLOT_COUNT {
        if heap.region.load32(slot_offset(i) + SLOT_STATE)? == SLOT_FREE {
            continue;
        }
        let gone = if Some(i) == me { reclaim_own } else { heap.slot_dead(i as u32) };
        if gone {
            dead.push(i);
        }
    }
    Ok(dead)
}

/// Whether a process that has just attached must run recovery before it does anything else.
pub(crate) fn needed(heap: &Heap, reclaimed_slot: bool) -> Result<bool> {
    Ok(reclaimed_slot || !dead_slots(heap, false)?.is_empty())
}

/// Counts, per block, the other holds the living have: named roots and the hold tables of
/// every slot not in `dead`.
fn living_holds(heap: &Heap, dead: &[u64]) -> Result<HashMap<u64, u64>> {
    let mut holds: HashMap<u64, u64> = HashMap::new();
    for i in 0..ROOT_COUNT {
        let block = heap.region.load(ROOTS_OFFSET + i * ROOT_SIZE + ROOT_BLOCK)?;
        if block != 0 && heap.names_live(block) {
            *holds.entry(block).or_default() += 1;
        }
    }
    for i in (0..SLOT_COUNT).filter(|i| !dead.contains(i)) {
        if heap.region.load32(slot_offset(i) + SLOT_STATE)? == SLOT_FREE {
            continue;
        }
        let table = heap.region.load(slot_offset(i) + SLOT_HOLDS)?;
        for block in holds::entries(heap, table)? {
            *holds.entry(block).or_default() += 1;
        }
    }
    crate::channel::holds(heap, &mut |block| *holds.entry(block).or_default() += 1)?;
    Ok(holds)
}

/// Runs recovery; the caller holds the store lock.
pub(crate) fn recover_locked(heap: &Heap, g: &Guard<'_>, reclaim_own: bool) -> Result<RecoveryReport> {
    let dead = dead_slots(heap, reclaim_own)?;
    heap.core().rebuild()?;
    heap.core().rebuild_spans(heap.key())?;
    let holds = living_holds(heap, &dead)?;
    let mut report = RecoveryReport { dead_processes: dead.len() as u64, ..RecoveryReport::default() };
    let mut doomed = Vec::new();
    let dead_tables: Vec<u64> =
        dead.iter().map(|&i| heap.region.load(slot_offset(i) + SLOT_CACHES)).collect::<Result<_>>()?;
    let mut spans = Vec::new();
    heap.core().walk(|b| {
        if b.tag.is_free() || b.tag.is_page() {
            return Ok(()); // a page lives and dies with its span
        }
        if b.tag.is_span() {
            spans.push(b.offset + HEADER_SIZE);
            return Ok(());
        }
        let word = heap.region.u64_at(b.offset + HDR_RC)?;
        if let Some(cached) = recount(word, b.offset, &holds, &dead, &mut report) {
            doomed.push((b.offset, b.tag.size(), cached || dead_tables.contains(&b.offset)));
        }
        Ok(())
    })?;
    for span in spans {
        for slot in heap.core().slots_handed_out(span)? {
            let word = heap.region.u64_at(slot.rc_offset())?;
            if word.load(Ordering::Acquire) == 0 {
                continue; // free
            }
            if let Some(cached) = recount(word, slot.id(), &holds, &dead, &mut report) {
                doomed.push((slot.id(), slot.class, cached));
            }
        }
    }
    crate::hooks::pause("recovery-midway");
    for &(block, size, _) in &doomed {
        heap.free_owned_locked(g, block)?;
        report.bytes_freed += size;
    }
    // A dead process's parked reference words are its caches' blocks, their counter tables,
    // and the blocks lent from its caches to its `MemoryBlock`s (held, never shared): the
    // caches' own counters tell how many are the first. Only a report: a table out of range
    // (a corrupt store) counts nothing rather than stop the recovery.
    let parked = doomed.iter().filter(|&&(_, _, cached)| cached).count() as u64;
    let mut in_caches = 0u64;
    for &t in dead_tables.iter().filter(|&&t| t != 0) {
        let blocks = heap.parked_in(t).map_or(0, |(_, blocks)| blocks);
        in_caches = in_caches.saturating_add(blocks).saturating_add(1);
    }
    report.cached_blocks_freed = parked.min(in_caches);
    report.blocks_freed = doomed.len() as u64 - report.cached_blocks_freed;
    crate::channel::forget_endpoints(heap, &dead)?;
    for &i in &dead {
        release_slot(heap, i, Some(i) == heap.slot().map(u64::from))?;
    }
    let n = heap.region.load(SB_RECOVERIES)?;
    heap.region.store(SB_RECOVERIES, n.wrapping_add(1))?;
    Ok(report)
}

/// Sets the other holds of the block or slot `id` (reference word `word`) to what the living
/// hold, and drops its owner references if its owner is dead. Returns, if nobody living holds
/// it any more, whether it was parked in a cache (else it was held by the dead only).
fn recount(
    word: &crate::sync::AtomicU64,
    id: u64,
    holds: &HashMap<u64, u64>,
    dead: &[u64],
    report: &mut RecoveryReport,
) -> Option<bool> {
    let other = holds.get(&id).copied().unwrap_or(0).min(rc::OTHER_MAX);
    let mut w = word.load(Ordering::Acquire);
    let new = loop {
        let owner = rc::owner(w);
        let owner_gone = owner == 0 || owner > SLOT_COUNT || dead.contains(&(owner - 1));
        let mut new = (w & !rc::OTHER_MASK) | (other << 32);
        if owner_gone {
            new &= !(rc::OWNER_MASK | rc::OWNER_REFS_MASK);
        }
        match word.compare_exchange_weak(w, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => break new,
            Err(now) => w = now,
        }
    };
    report.owner_refs_released += rc::owner_refs(w) - rc::owner_refs(new);
    report.holds_released += rc::other(w).saturating_sub(rc::other(new));
    (rc::count(new) == 0 && rc::owner(new) == 0).then_some(rc::count(w) == 0 && rc::owner(w) != 0)
}

/// Clears a dead process's slot; a slot we reclaimed for ourselves stays attached.
fn release_slot(heap: &Heap, i: u64, ours: bool) -> Result<()> {
    let s = slot_offset(i);
    heap.region.store(s + SLOT_HOLDS, 0)?;
    heap.region.store(s + SLOT_CACHES, 0)?;
    if ours {
        return heap.region.store32(s + SLOT_STATE, SLOT_ATTACHED);
    }
    heap.region.store32(s + SLOT_PID, 0)?;
    heap.region.store(s + SLOT_START_TIME, 0)?;
    heap.region.store(s + SLOT_NONCE, 0)?;
    heap.region.store32(s + SLOT_STATE, SLOT_FREE)
}

/// Problems a check finds in the hold tables of the living: entries naming no live block.
pub(crate) fn check_holds(heap: &Heap) -> Result<Vec<crate::Problem>> {
    let dead = dead_slots(heap, false)?;
    let mut out = Vec::new();
    for i in (0..SLOT_COUNT).filter(|i| !dead.contains(i)) {
        if heap.region.load32(slot_offset(i) + SLOT_STATE)? == SLOT_FREE {
            continue;
        }
        let table = heap.region.load(slot_offset(i) + SLOT_HOLDS)?;
        let entries = match holds::entries(heap, table) {
            Ok(e) => e,
            Err(Error::Corrupt { what, offset }) => {
                out.push(crate::Problem { what, offset });
                continue;
            }
            Err(e) => return Err(e),
        };
        for block in entries {
            if !heap.names_live(block) || rc::other(heap.rc(block)) == 0 {
                out.push(crate::Problem { what: "hold table names no held block", offset: table });
            }
        }
    }
    Ok(out)
}
