//! Raw allocation: blocks without a `MemoryBlock` and without a count, for the in-process
//! manager's allocator interfaces (`GlobalAlloc`, `allocator_api2`, the drop-in `malloc`).
//!
//! Small ones are blocks of slabs (`slab/`): no header, freed from any thread without the
//! lock. Larger ones are blocks of the core whose reference word stays *parked* (owner this
//! process, count 0) from their allocation to their release: nobody can take a reference to a
//! block with count 0, and a raw block is never published, so no other reader needs the count.
//! An allocation from this thread's cache then writes nothing into the header and a release
//! stores nothing there (it reads the tag): stores to a line long gone from the processor's
//! cache are what a churn waits for.

use std::ptr::NonNull;

use crate::engine::core::header::rc;
use crate::engine::heap::slab::{class_of, SLAB_MAX};
use crate::format::*;
use crate::sync::Ordering;

use super::{Heap, Resizer};

impl Heap {
    /// Allocates `len` bytes aligned to `1 << align_log2` for raw use.
    #[inline]
    pub(crate) fn alloc_raw(&self, len: u64, align_log2: u32) -> Option<NonNull<u8>> {
        if align_log2 == 4 {
            if let (Some(slabs), true) = (&self.slabs, len <= SLAB_MAX) {
                return match self.cache() {
                    Some(c) => c.slabs.alloc(self, slabs, class_of(len)),
                    None => self.alloc_overflow(len),
                };
            }
            if let Some((off, _)) = self.cache().and_then(|c| c.take(self, len, false).ok().flatten()) {
                return self.payload_at(off, len);
            }
        }
        self.alloc_raw_uncached(len, align_log2)
    }

    /// A slab block for a thread without a cache of its own (all taken, or this allocation is
    /// made while its cache is being made): from the shared `Local`, under its mutex; when
    /// that is taken (by another thread, or by this one further up: an allocation made while
    /// it serves one), a core block under the heap's lock.
    #[cold]
    fn alloc_overflow(&self, len: u64) -> Option<NonNull<u8>> {
        let slabs = self.slabs.as_ref()?;
        match slabs.overflow.try_lock() {
            Ok(local) => local.alloc(self, slabs, class_of(len)),
            Err(_) => self.alloc_raw_uncached(len, 4),
        }
    }

    /// [`Heap::alloc_raw`] under the lock: carved with one owner reference, then parked.
    #[cold]
    pub(super) fn alloc_raw_uncached(&self, len: u64, align_log2: u32) -> Option<NonNull<u8>> {
        let off = self.allocate_uncached(len, align_log2, false).ok()?;
        // Nobody else knows the block yet: a plain store makes its count 0 (see the module).
        self.rc_word(off).ok()?.store(rc::parked(u64::from(self.tag)), Ordering::Release);
        self.payload_at(off, len)
    }

    /// Carves the core block of a slab: `len` payload bytes aligned to 64 KiB, parked like a
    /// raw block. Returns its payload offset.
    pub(crate) fn carve_slab(&self, len: u64) -> Option<u64> {
        let p = self.alloc_raw_uncached(len, SPAN_ALIGN_LOG2)?;
        self.region.offset_of(p.as_ptr())
    }

    /// Gives a slab's core block (payload offset `p`) back to the core.
    pub(crate) fn free_slab(&self, p: u64) {
        self.free_parked_now(p - HEADER_SIZE);
    }

    /// Whether `p` is in this heap.
    #[inline]
    pub(crate) fn owns(&self, p: *const u8) -> bool {
        self.region.offset_of(p).is_some()
    }

    /// The header offset of the core block whose payload starts at heap offset `off`.
    fn header_of(off: u64) -> Option<u64> {
        off.checked_sub(HEADER_SIZE).filter(|&h| h >= HEAP_START)
    }

    /// Frees a block from [`Heap::alloc_raw`] at `p`; `false` (nothing done) if `p` is not in
    /// this heap, so that callers route by address with the one range check. A slab block
    /// goes back to its slab; a core block's header is only read (its tag, for size and
    /// alignment) before it is parked or freed.
    #[inline]
    pub(crate) fn free_raw(&self, p: *mut u8) -> bool {
        let Some(off) = self.region.offset_of(p) else { return false };
        if self.slabs.as_ref().is_some_and(|slabs| slabs.free(self, off, p as usize)) {
            return true;
        }
        // Raw core blocks are never slots: the block-only path, after the range check that
        // `park_or_free` asks for.
        if let Some(h) = Self::header_of(off).filter(|&h| self.region.word(h + HDR_RC).is_some()) {
            // SAFETY: the reference word was just range-checked.
            unsafe { self.park_or_free(h) }
        }
        true
    }

    /// Bytes usable at `p`, a block from [`Heap::alloc_raw`].
    pub(crate) fn usable_raw(&self, p: *const u8) -> Option<u64> {
        let off = self.region.offset_of(p)?;
        if let Some(n) = self.slabs.as_ref().and_then(|s| s.usable(off)) {
            return Some(n);
        }
        let h = Self::header_of(off)?;
        Some(self.core().block_at(h).ok()?.size() - HEADER_SIZE)
    }

    /// Resizes the raw block at `p` (`old` bytes in use, default alignment) to `new` bytes:
    /// in place when its block already has room and would not waste more than half, else a
    /// new block from the fast paths, the bytes copied, the old one freed; only a large core
    /// block goes through the locked resize (which may grow it in place). `None`: no memory
    /// (the old block is untouched).
    pub(crate) fn realloc_raw(&self, p: *mut u8, old: u64, new: u64) -> Option<NonNull<u8>> {
        let room = self.usable_raw(p)?;
        if new <= room && (new >= room / 2 || room <= 64) {
            return NonNull::new(p);
        }
        if room < crate::engine::heap::cache::CLASS_LIMIT || new <= SLAB_MAX {
            let q = self.alloc_raw(new, 4)?;
            // SAFETY: both are live raw blocks of this heap, distinct, each at least
            // `min(old, new)` bytes long (`old` is the caller's length of `p`).
            unsafe { std::ptr::copy_nonoverlapping(p, q.as_ptr(), old.min(new) as usize) };
            self.free_raw(p);
            return Some(q);
        }
        let off = Self::header_of(self.region.offset_of(p)?)?;
        let moved = self.resize(off, old, new, Resizer::Raw).ok()?;
        self.payload_at(moved.unwrap_or(off), new)
    }
}
