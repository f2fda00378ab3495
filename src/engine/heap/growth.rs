//! Growth: room for a request, found in the core or made by growing the store (doubling, up
//! to its maximum), with the exact search and the thread's own cache given back before a
//! request fails with `OutOfSpace`.

use super::{Guard, Heap};
use crate::engine::core::tlsf::Core;
use crate::error::{Error, Result};
use crate::format::*;

impl Heap {
    /// Runs `carve` (which makes something of `len` bytes aligned to `1 << align_log2` in the
    /// core, `None` when no free block can hold it) until it succeeds, under the lock: a good
    /// fit in constant time if there is one (`exact` false); else the store grows and `carve`
    /// runs again; once the store cannot grow, an exact search (`exact` true: every free
    /// block that can hold it); and before giving up, what this thread keeps parked goes back
    /// to the heap and the search runs once more. So `OutOfSpace` means that no free block can
    /// hold the request (other threads' and processes' caches aside: `MemoryManager::trim`).
    pub(crate) fn with_room<T>(
        &self,
        g: &Guard<'_>,
        len: u64,
        align_log2: u32,
        mut carve: impl FnMut(&Core<'_>, bool) -> Result<Option<T>>,
    ) -> Result<T> {
        let mut drained = false;
        loop {
            if let Some(t) = carve(&self.core(), false)? {
                return Ok(t);
            }
            match self.grow_for(len, align_log2) {
                Ok(()) => continue,
                Err(e @ Error::OutOfSpace { .. }) => {
                    if let Some(t) = carve(&self.core(), true)? {
                        return Ok(t);
                    }
                    if drained || !self.give_back_cache(g) {
                        return Err(e);
                    }
                    drained = true;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Grows the store towards room for a block of `len` bytes (doubling, up to the maximum).
    /// Fails with the heap unchanged when it is at its maximum already, and, before growing at
    /// all, when even the maximum could not hold the request: the new space joins a free block
    /// at the end of the heap, so room for it is that block plus what the store may still
    /// grow by.
    pub(crate) fn grow_for(&self, len: u64, align_log2: u32) -> Result<()> {
        // Growth reads the heap's last block, and would extend a truncated file with zeros
        // where the lost pages were.
        self.check_length()?;
        let max = self.max_size()?;
        let core = self.core();
        let cap = core.capacity()?;
        let out = Error::out_of_space(len, max);
        let Some(room) = crate::engine::core::tlsf::room_for(len, align_log2) else { return Err(out) };
        let tail = core.tail_free()?;
        if cap >= max || tail.saturating_add(max - cap) < room {
            return Err(out);
        }
        // Doubling, or what the request needs beyond the free tail if that is more.
        let need = room - tail.min(room);
        let to =
            |step: u64| cap.saturating_add(step).checked_next_multiple_of(PAGE_SIZE).unwrap_or(max).min(max);
        let new_cap = self.grow_to(cap, to(need.max(cap)), to(need)).map_err(|e| match e {
            Error::OutOfSpace { disk_full, .. } => {
                Error::OutOfSpace { requested: len, max_size: max, disk_full }
            }
            e => e,
        })?;
        self.core().extend(new_cap)?;
        self.region.store(SB_GROWTHS, self.region.load(SB_GROWTHS)?.wrapping_add(1))
    }

    /// Makes the store (`cap` bytes now) `new_cap` bytes long, or `least` (at most `new_cap`:
    /// what the request needs beyond the free tail) if the disk, a quota or the file size limit
    /// has no room for `new_cap`, so that `disk_full` means even the least growth that serves
    /// the request failed. None is tried when the tail holds the request already (`least` is
    /// `cap`: the good-fit search skipped it, the exact search after `OutOfSpace` finds it).
    /// Returns the capacity reached.
    fn grow_to(&self, cap: u64, new_cap: u64, least: u64) -> Result<u64> {
        let grown = match self.backing.grow(&self.region, new_cap) {
            Err(Error::OutOfSpace { disk_full: true, .. }) if cap < least && least < new_cap => {
                self.backing.grow(&self.region, least).map(|()| least)
            }
            other => other.map(|()| new_cap),
        };
        grown.inspect_err(|e| self.note_lost(e))
    }
}
