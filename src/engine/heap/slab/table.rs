//! The slab map and the slabs' heads, side by side in one anonymous mapping of their own.
//!
//! Per 64 KiB unit of the heap's reservation the table has a 128-byte head (used when a slab
//! starts at that unit) and a map byte. The heads are out of line, not at the start of each
//! slab: slabs are 64 KiB aligned, so heads there would all fall in the same few sets of the
//! processor's caches (every 64 KiB-aligned line maps to one set of an 8-way L1 and L2), and a
//! thread using more than eight size classes missed its caches on every allocation and free.
//! Side by side, consecutive units' heads fill consecutive lines.
//!
//! The mapping is anonymous and reserved without a commit charge: it reads as zeros, and only
//! the pages of heads and map bytes that slabs have touched take memory (a `Box` of the map
//! alone cost 1 MiB of resident memory for the process-wide heap's 64 GiB reservation).

use std::io;
use std::ptr::NonNull;

use super::{Slab, CHUNK_LOG2, HEAD};
use crate::sync::{AtomicU8, Ordering};

pub(super) struct Table {
    base: NonNull<u8>,
    len: usize,
    units: usize,
}

// SAFETY: the table is a private mapping of atomics only (heads and map bytes), reached only
// through `&Slab` and `&AtomicU8`.
unsafe impl Send for Table {}
// SAFETY: as above.
unsafe impl Sync for Table {}

impl Table {
    /// A table for a reservation of `reserved` bytes.
    pub(super) fn new(reserved: u64) -> io::Result<Table> {
        let units = usize::try_from(reserved >> CHUNK_LOG2).map_err(io::Error::other)? + 1;
        let len = units * (HEAD as usize + 1);
        let base = crate::sys::reserve(len)?;
        // SAFETY: `[base, base + len)` is the reservation just made, still mapped (it is
        // released only by `drop`).
        if let Err(e) = unsafe { crate::sys::commit(base, len) } {
            // SAFETY: as above; nothing refers to it yet.
            unsafe { crate::sys::release(base, len) };
            return Err(e);
        }
        Ok(Table { base, len, units })
    }

    /// How many units the table covers.
    pub(super) fn units(&self) -> usize {
        self.units
    }

    /// The head of a slab starting at `unit` (`unit < units()`; a larger one is clamped to
    /// the last head, so the access stays in bounds whatever the caller passes).
    #[inline]
    pub(super) fn head(&self, unit: usize) -> &Slab {
        let unit = unit.min(self.units - 1);
        // SAFETY: in bounds (above) of a mapping that lives as long as `self`, 128-byte
        // aligned (page-aligned base, 128-byte heads); a `Slab` is atomics only, for which
        // zeros (an untouched page) are a valid value, shared through `&` only.
        unsafe { &*self.base.as_ptr().add(unit * HEAD as usize).cast::<Slab>() }
    }

    /// The map byte of `unit`: 0 if no slab starts at or covers it, else 1 + how many units
    /// before it its slab starts. `None` past the table.
    #[inline]
    pub(super) fn map(&self, unit: usize) -> Option<&AtomicU8> {
        if unit >= self.units {
            return None;
        }
        // SAFETY: in bounds (above) of the mapping, after the heads; `AtomicU8` has no
        // alignment requirement and zero is a valid value; shared through `&` only.
        Some(unsafe { &*self.base.as_ptr().add(self.units * HEAD as usize + unit).cast::<AtomicU8>() })
    }
}

/// Where a table's heads and map lie, for lookups through copies kept in statics (`fast.rs`:
/// one dependent load fewer than through the `Slabs`).
#[derive(Clone, Copy)]
pub(super) struct Raw {
    pub(super) heads: usize,
    pub(super) map: usize,
    pub(super) units: usize,
}

impl Table {
    pub(super) fn raw(&self) -> Raw {
        let heads = self.base.as_ptr() as usize;
        Raw { heads, map: heads + self.units * HEAD as usize, units: self.units }
    }
}

impl Raw {
    /// The slab holding heap offset `off`, as `Slabs::slab_at`.
    ///
    /// # Safety
    /// `self` is the [`Table::raw`] of a table that outlives `'a`.
    #[inline(always)]
    pub(super) unsafe fn slab_at<'a>(self, off: usize) -> Option<&'a Slab> {
        let unit = off >> CHUNK_LOG2;
        if unit >= self.units {
            return None;
        }
        // SAFETY: a map byte of a live table (`unit < units`, the caller's contract); zero is
        // a valid `AtomicU8`, shared through `&` only.
        let back = unsafe { &*((self.map + unit) as *const AtomicU8) }.load(Ordering::Acquire);
        if back == 0 {
            return None;
        }
        let start = unit.checked_sub(usize::from(back - 1))?;
        // SAFETY: `start <= unit < units`: a head of the live table, 128-byte aligned; zeros
        // are a valid `Slab`, shared through `&` only. The map names only live slabs, whose
        // heads were initialised before the map byte was set (release, read acquire above).
        Some(unsafe { &*((self.heads + start * HEAD as usize) as *const Slab) })
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        // SAFETY: our own mapping; the `Slabs` owning the table is being dropped with its
        // heap, so no reference into it remains.
        unsafe { crate::sys::release(self.base, self.len) };
    }
}
