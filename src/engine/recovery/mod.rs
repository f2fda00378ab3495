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

use crate::engine::core::header::Tag;
use crate::engine::heap::{Guard, Heap};
use crate::engine::holders::{Kind, Reference, Session};
use crate::engine::reports::{NamedReference, RecoveryReport, SalvageReport};
use crate::error::{Error, Result};
use crate::format::*;

pub(crate) use plan::Mode;
use plan::Plan;

/// Whether a process that has just attached must run recovery before it does anything else.
pub(crate) fn needed(heap: &Heap, reclaimed_slot: bool) -> Result<bool> {
    Ok(reclaimed_slot || !heap.dead_slots(false)?.is_empty())
}

/// Opens a session on every kind of reference (`holders.rs`); on an error, closes those
/// opened, as found.
fn open(heap: &Heap, dead: &[u64], kinds: &[&dyn Kind]) -> Result<Vec<Box<dyn Session>>> {
    let mut sessions: Vec<Box<dyn Session>> = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        match kind.open(heap, dead, i) {
            Ok(s) => sessions.push(s),
            Err(e) => {
                close(heap, sessions, false);
                return Err(e);
            }
        }
    }
    Ok(sessions)
}

/// Closes the sessions: `done`, the recovery completed.
fn close(heap: &Heap, sessions: Vec<Box<dyn Session>>, done: bool) {
    for s in sessions.into_iter().rev() {
        s.close(heap, done);
    }
}

/// Runs recovery over the references of `kinds`; the caller holds the store lock. Damage
/// stops it before anything is written, with the error naming it.
pub(crate) fn recover_locked(
    heap: &Heap,
    g: &Guard<'_>,
    reclaim_own: bool,
    kinds: &[&dyn Kind],
) -> Result<RecoveryReport> {
    run(heap, g, reclaim_own, kinds, false)
}

/// [`recover_locked`], and the blocks that only cycles of links keep (nothing but links from
/// blocks no root, channel, hold or living owner reaches) are freed too.
pub(crate) fn collect_cycles_locked(
    heap: &Heap,
    g: &Guard<'_>,
    kinds: &[&dyn Kind],
) -> Result<RecoveryReport> {
    run(heap, g, false, kinds, true)
}

fn run(
    heap: &Heap,
    g: &Guard<'_>,
    reclaim_own: bool,
    kinds: &[&dyn Kind],
    collect_cycles: bool,
) -> Result<RecoveryReport> {
    let dead = heap.dead_slots(reclaim_own)?;
    // No change of a reference without the store lock (a channel's send or receive) runs from
    // here to the end.
    let mut sessions = open(heap, &dead, kinds)?;
    // Nor any give to or take from the exchange.
    let exchange = crate::engine::heap::cache::exchange::freeze(heap, &dead);
    let done = Plan::make(heap, dead, &mut sessions, Mode::Recover).and_then(|mut plan| {
        plan.keep_exchange = !exchange.all();
        plan.collect_cycles = collect_cycles;
        plan.apply(heap, g, &sessions)
    });
    exchange.thaw(heap, done.is_ok());
    close(heap, sessions, done.is_ok());
    done
}

/// Runs salvage; the caller holds the store lock. `alone`: no other living process may be
/// attached ([`Error::StoreInUse`]), as a salvage a user asks for requires. Without it (the
/// salvage at the first open after a reboot, `entry.rs`), other living processes may be
/// attached: they are still in their own opens, waiting for this lock, and hold nothing yet.
pub(crate) fn salvage_locked(
    heap: &Heap,
    g: &Guard<'_>,
    kinds: &[&dyn Kind],
    alone: bool,
) -> Result<SalvageReport> {
    let dead = heap.dead_slots(false)?;
    let others = if alone { living_others(heap, &dead)? } else { 0 };
    if others > 0 {
        return Err(Error::StoreInUse { processes: others });
    }
    let mut sessions = open(heap, &dead, kinds)?;
    let exchange = crate::engine::heap::cache::exchange::freeze(heap, &dead);
    let done = salvage_frozen(heap, g, dead, &mut sessions, !exchange.all());
    exchange.thaw(heap, done.is_ok());
    close(heap, sessions, done.is_ok());
    done
}

/// Attached processes that are alive, this one aside.
fn living_others(heap: &Heap, dead: &[u64]) -> Result<u64> {
    let me = heap.slot().map(u64::from);
    let mut others = 0;
    for i in (0..SLOT_COUNT).filter(|i| Some(*i) != me && !dead.contains(i)) {
        others += u64::from(heap.region.load32(slot_offset(i) + SLOT_STATE)? != SLOT_FREE);
    }
    Ok(others)
}

/// [`salvage_locked`] once no reference changes without the store lock, and no move on the
/// exchange runs.
fn salvage_frozen(
    heap: &Heap,
    g: &Guard<'_>,
    dead: Vec<u64>,
    sessions: &mut [Box<dyn Session>],
    keep_exchange: bool,
) -> Result<SalvageReport> {
    let mut plan = Plan::make(heap, dead, sessions, Mode::Salvage)?;
    plan.keep_exchange = keep_exchange;
    let core = heap.core();
    // A range an earlier salvage fenced off has a quarantine header of its size, and zeros
    // for the header's other words; any other bytes there (a block's payload that happens to
    // have the quarantine bit set, say) were fenced off now.
    let mut quarantined = Vec::new();
    for b in plan.blocks.iter().filter(|b| b.tag.is_quarantine()) {
        let stored = core.tag(b.offset)?.with_prev_free(false);
        let before = stored == Tag::quarantine(b.tag.size()) && plan::header_words_zero(&core, b.offset);
        if !before {
            quarantined.push((b.offset, b.tag.size()));
        }
    }
    let ends_at_quarantine = |r: &Reference| {
        let end = plan.blocks.iter().find(|b| b.offset == r.target).map(|b| b.offset + b.tag.size());
        end.is_some_and(|e| quarantined.iter().any(|&(q, _)| q == e))
    };
    let mut bordering = Vec::new();
    for r in plan.references.iter().filter(|r| ends_at_quarantine(r)) {
        bordering.push(named(heap, sessions, r)?);
    }
    let kept: std::collections::HashSet<u64> = plan.references.iter().map(|r| r.target).collect();
    let (mut dropped, mut cleared) = (Vec::new(), Vec::new());
    for r in &plan.dropped {
        match kept.contains(&r.target) {
            true => cleared.push(named(heap, sessions, r)?),
            false => dropped.push(named(heap, sessions, r)?),
        }
    }
    let renewed_ids: Vec<u64> =
        plan.renew_blocks.iter().copied().chain(plan.renew_slots.iter().map(|s| s.id())).collect();
    let mut renewed = Vec::new();
    let mut resized = Vec::new();
    for r in &plan.references {
        if renewed_ids.contains(&r.target) {
            renewed.push(named(heap, sessions, r)?);
        }
        if plan.resized.contains(&r.target) {
            resized.push(named(heap, sessions, r)?);
        }
    }
    let gone = |h: &crate::engine::holders::Holder| plan.dropped.iter().any(|r| r.holder == *h);
    let (mut renamed, mut names_moved) = (Vec::new(), Vec::new());
    for (h, name) in plan.renamed.iter().filter(|(h, _)| !gone(h)) {
        match plan.moved_names.contains(h) {
            false => renamed.push(name.clone()),
            true => {
                let target = plan.references.iter().find(|r| r.holder == *h).map_or(0, |r| r.target);
                names_moved.push(NamedReference {
                    kind: sessions[h.kind].what(h),
                    name: name.clone(),
                    target,
                });
            }
        }
    }
    let unshared = plan.unshared.clone();
    let mut rings_repaired = Vec::new();
    for r in sessions.iter().flat_map(|s| s.repaired()) {
        rings_repaired.push(named(heap, sessions, &r)?);
    }
    let key_restored = plan.new_key.is_some();
    let generation_counter_restored = plan.counter_restored;
    let lost_tables = sessions.iter().flat_map(|s| s.lost_tables()).collect();
    let recovery = plan.apply(heap, g, sessions)?;
    Ok(SalvageReport {
        recovery,
        quarantined,
        dropped,
        cleared,
        bordering,
        renamed,
        names_moved,
        renewed,
        resized,
        unshared,
        rings_repaired,
        key_restored,
        generation_counter_restored,
        lost_tables,
    })
}

/// A reference as a report names it: its kind and its root's or channel's name as far as it
/// can be read (before salvage renames anything).
fn named(heap: &Heap, sessions: &[Box<dyn Session>], r: &Reference) -> Result<NamedReference> {
    let session = &sessions[r.holder.kind];
    Ok(NamedReference {
        kind: session.what(&r.holder),
        name: session.name(heap, &r.holder)?,
        target: r.target,
    })
}
