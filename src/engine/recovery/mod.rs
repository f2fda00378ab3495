//! Recovery after a process died: reclaim what it held, repair what it left half done; and
//! salvage of a damaged store, on request.
//!
//! Recovery runs under the store lock and is a pure function of what the living hold, so it is
//! idempotent: dying in the middle of it and running it again gives the same result. It runs
//! in two steps: a plan (`plan.rs`) that reads the whole store and decides everything without
//! writing, and its application (`apply.rs`). What a crash can leave is repaired; damage (a
//! header that does not parse, a check word that does not match, a reference to nothing) stops
//! the plan with a typed error and nothing written: recovery never frees, merges or overwrites
//! what it cannot prove free. Salvage ([`Mode::Salvage`]) is the same plan fencing damage off
//! instead (quarantined ranges, dropped references), for a user who asks for it.
//!
//! 1. **Who is dead**: every slot that is not free and whose liveness lock nobody holds (and,
//!    when a process has just claimed a slot a dead process left, that slot too).
//! 2. **Plan**: the tiling, the spans, the references (roots, channels, hold tables of the
//!    living), all checked.
//! 3. **Apply**: repair the derived state, recount every block's holds from the references,
//!    free what nobody living holds, release the dead slots.

mod apply;
mod entry;
mod plan;

use crate::engine::core::header::rc;
use crate::engine::heap::holds;
use crate::engine::heap::{Guard, Heap};
use crate::engine::reports::{NamedReference, RecoveryReport, SalvageReport};
use crate::error::{Error, Result};
use crate::format::*;

pub(crate) use plan::Mode;
use plan::{Holder, Plan};

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

/// Runs recovery; the caller holds the store lock. Damage stops it before anything is
/// written, with the error naming it.
pub(crate) fn recover_locked(heap: &Heap, g: &Guard<'_>, reclaim_own: bool) -> Result<RecoveryReport> {
    let dead = dead_slots(heap, reclaim_own)?;
    // No send or receive without the store lock runs from here to the end.
    let frozen = crate::engine::channel::freeze(heap, &dead)?;
    // Nor any give to or take from the exchange.
    let exchange = crate::engine::heap::cache::exchange::freeze(heap, &dead);
    let done = Plan::make(heap, dead, frozen.busy(), Mode::Recover).and_then(|mut plan| {
        plan.keep_exchange = !exchange.all();
        plan.apply(heap, g)
    });
    exchange.thaw(heap, done.is_ok());
    frozen.thaw(heap, done.is_ok());
    done
}

/// Runs salvage; the caller holds the store lock and has no other living process beside it.
pub(crate) fn salvage_locked(heap: &Heap, g: &Guard<'_>) -> Result<SalvageReport> {
    let dead = dead_slots(heap, false)?;
    let me = heap.slot().map(u64::from);
    let mut others = 0;
    for i in (0..SLOT_COUNT).filter(|i| Some(*i) != me && !dead.contains(i)) {
        others += u64::from(heap.region.load32(slot_offset(i) + SLOT_STATE)? != SLOT_FREE);
    }
    if others > 0 {
        return Err(Error::StoreInUse { processes: others });
    }
    let frozen = crate::engine::channel::freeze(heap, &dead)?;
    let exchange = crate::engine::heap::cache::exchange::freeze(heap, &dead);
    let done = salvage_frozen(heap, g, dead, frozen.busy(), !exchange.all());
    exchange.thaw(heap, done.is_ok());
    frozen.thaw(heap, done.is_ok());
    done
}

/// [`salvage_locked`] once no send or receive, and no move on the exchange, runs.
fn salvage_frozen(
    heap: &Heap,
    g: &Guard<'_>,
    dead: Vec<u64>,
    busy: &[u64],
    keep_exchange: bool,
) -> Result<SalvageReport> {
    let mut plan = Plan::make(heap, dead, busy, Mode::Salvage)?;
    plan.keep_exchange = keep_exchange;
    let core = heap.core();
    let mut quarantined = Vec::new();
    for b in plan.blocks.iter().filter(|b| b.tag.is_quarantine()) {
        if !core.tag(b.offset)?.is_quarantine() {
            quarantined.push((b.offset, b.tag.size()));
        }
    }
    let ends_at_quarantine = |r: &plan::Reference| {
        let end = plan.blocks.iter().find(|b| b.offset == r.target).map(|b| b.offset + b.tag.size());
        end.is_some_and(|e| quarantined.iter().any(|&(q, _)| q == e))
    };
    let mut bordering = Vec::new();
    for r in plan.references.iter().filter(|r| ends_at_quarantine(r)) {
        bordering.push(named(heap, r)?);
    }
    let dropped = plan.dropped.iter().map(|r| named(heap, r)).collect::<Result<_>>()?;
    let renewed_ids: Vec<u64> =
        plan.renew_blocks.iter().copied().chain(plan.renew_slots.iter().map(|s| s.id())).collect();
    let mut renewed = Vec::new();
    let mut resized = Vec::new();
    for r in &plan.references {
        if renewed_ids.contains(&r.target) {
            renewed.push(named(heap, r)?);
        }
        if plan.resized.contains(&r.target) {
            resized.push(named(heap, r)?);
        }
    }
    let gone = |h: &Holder| plan.dropped.iter().any(|r| r.holder == *h);
    let renamed = plan.renamed.iter().filter(|(h, _)| !gone(h)).map(|(_, n)| n.clone()).collect();
    let key_restored = plan.new_key.is_some();
    let recovery = plan.apply(heap, g)?;
    Ok(SalvageReport { recovery, quarantined, dropped, bordering, renamed, renewed, resized, key_restored })
}

/// A reference as a report names it: its kind and its root's or channel's name as far as it
/// can be read (before salvage renames anything).
fn named(heap: &Heap, r: &plan::Reference) -> Result<NamedReference> {
    let (kind, name) = match r.holder {
        Holder::Root(i) => ("root", crate::engine::directory::ROOTS.name_lossy(heap, i)?),
        Holder::Channel(i) => ("channel", crate::engine::directory::CHANNELS.name_lossy(heap, i)?),
        Holder::Message { index, .. } => {
            ("message", crate::engine::directory::CHANNELS.name_lossy(heap, index)?)
        }
        Holder::Table { .. } => ("hold", String::new()),
    };
    Ok(NamedReference { kind, name, target: r.target })
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
