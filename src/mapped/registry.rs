//! The process registry: which processes are attached, and whether they are alive.
//!
//! Attaching takes slot `i`'s liveness lock (an exclusive record lock on byte
//! `LIVENESS_LOCK_BASE + i` of the store file, an OFD lock on Linux) and only then marks the
//! slot attached. The kernel drops the lock when the process dies, however it dies, so
//! "is slot `i` alive" is "does anyone hold byte `i`'s lock": never a pid, which may be reused.
//! The pid and start time in the slot are for people reading `stat`, not for decisions.

use std::fs::File;

use crate::engine::core::region::Region;
use crate::engine::heap::random_u64;
use crate::error::{Error, Result};
use crate::format::*;
use crate::sync::Ordering;
use crate::sys;

/// Claims a slot for this process; returns its index and whether it was taken from a dead
/// process (whose leftovers the caller must then recover before using the slot).
pub(crate) fn attach(file: &File, region: &Region) -> Result<(u32, bool)> {
    let lock_err = |e| Error::io("lock a registry slot", e);
    for i in 0..SLOT_COUNT {
        let state = region.u32_at(slot_offset(i) + SLOT_STATE)?;
        if state.load(Ordering::Acquire) != SLOT_FREE
            || !sys::try_lock_byte(file, LIVENESS_LOCK_BASE + i).map_err(lock_err)?
        {
            continue;
        }
        if state.compare_exchange(SLOT_FREE, SLOT_ATTACHED, Ordering::AcqRel, Ordering::Acquire).is_err() {
            sys::unlock_byte(file, LIVENESS_LOCK_BASE + i)
                .map_err(|e| Error::io("unlock a registry slot", e))?;
            continue;
        }
        claim(region, i, false)?;
        return Ok((i as u32, false));
    }
    // Every slot is taken: take one whose process is dead. Holding its liveness lock makes it
    // ours; its state stays "attached" until our recovery, under the store lock, reclaims
    // what the dead process left.
    for i in 0..SLOT_COUNT {
        if sys::try_lock_byte(file, LIVENESS_LOCK_BASE + i).map_err(lock_err)? {
            claim(region, i, true)?;
            return Ok((i as u32, true));
        }
    }
    Err(Error::RegistryFull)
}

fn claim(region: &Region, i: u64, reclaimed: bool) -> Result<()> {
    region.store32(slot_offset(i) + SLOT_PID, std::process::id())?;
    region.store(slot_offset(i) + SLOT_START_TIME, sys::process_start_time())?;
    region.store(slot_offset(i) + SLOT_NONCE, random_u64())?;
    if !reclaimed {
        // A free slot names no tables (whatever a damaged store says): this process has none
        // yet. A slot taken from a dead process keeps its tables for the recovery that
        // reclaims them.
        region.store(slot_offset(i) + SLOT_HOLDS, 0)?;
        region.store(slot_offset(i) + SLOT_CACHES, 0)?;
    }
    Ok(())
}

/// Marks the slot free (under the store lock). The liveness lock goes when the file closes.
pub(crate) fn detach(region: &Region, slot: u32) {
    let off = slot_offset(u64::from(slot));
    let _ = region.store32(off + SLOT_PID, 0);
    let _ = region.store(off + SLOT_START_TIME, 0);
    let _ = region.store(off + SLOT_NONCE, 0);
    if let Ok(state) = region.u32_at(off + SLOT_STATE) {
        state.store(SLOT_FREE, Ordering::Release);
    }
}

/// Gives up `slot`'s liveness lock without touching the store (one truncated under this
/// process, which keeps its descriptor open while blocks of it are held): the next opener's
/// recovery then reclaims the slot as a dead process's.
pub(crate) fn give_up(file: &File, slot: u32) {
    // An error leaves the lock to the descriptor's close, at the latest the process's exit.
    let _ = sys::unlock_byte(file, LIVENESS_LOCK_BASE + u64::from(slot));
}

/// Whether the process in slot `tag - 1` is gone (or the tag names no slot at all).
pub(crate) fn owner_dead(file: &File, tag: u32) -> bool {
    let slot = u64::from(tag).wrapping_sub(1);
    if slot >= SLOT_COUNT {
        return true;
    }
    // An error asking the kernel is taken as "alive": waiting longer is safe, a wrong
    // takeover is not.
    !sys::byte_locked(file, LIVENESS_LOCK_BASE + slot).unwrap_or(true)
}

/// Processes attached and alive, counting this one.
pub(crate) fn attached(file: &File, region: &Region, me: u32) -> u64 {
    (0..SLOT_COUNT)
        .filter(|&i| {
            let attached = region.load32(slot_offset(i) + SLOT_STATE).ok() == Some(SLOT_ATTACHED);
            attached && (i == u64::from(me) || !owner_dead(file, i as u32 + 1))
        })
        .count() as u64
}
