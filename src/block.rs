//! `MemoryBlock`, the owning handle of one block, and `BlockHandle`, the plain value that
//! names a block across processes.

use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use crate::core::header::rc;
use crate::error::{Error, Result};
use crate::family::{family_ends, HeapRef};
use crate::format::{payload_of, GRANULE, PAGE_SIZE};
use crate::heap::{Heap, Obtained, RefKind, Resizer};
use crate::segment::{MemorySegment, MemorySegmentMut};
use crate::sync::{AtomicU64, Ordering};
use crate::Offset;

/// Names a block inside a store: its offset and the generation it was allocated with.
///
/// A handle is plain data (`Pod`): send it through a pipe, a socket or another block. Turning
/// it back into a [`MemoryBlock`] with [`crate::MemoryManager::block_from_handle`] checks that
/// the offset is in range, that a valid header is there and that the generation matches, so
/// a handle to a block that has since been freed (and perhaps reallocated) is refused with
/// [`Error::StaleHandle`], and a made-up one with [`Error::InvalidHandle`] or
/// [`Error::StaleHandle`], never undefined behaviour.
///
/// A handle does not keep its block alive: the sender must hold the block until the receiver
/// has resolved it (or use a named root or, later, a channel, which hold a reference).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
#[repr(C)]
pub struct BlockHandle {
    /// Store offset of the block's header, or for a block of at most 64 bytes (a slot of a
    /// span, `docs/format.md`) its slot id: an offset whose low four bits are 8 to 11.
    pub offset: u64,
    /// Generation of the allocation.
    pub generation: u64,
}

/// An owning, reference-counted handle to one allocated block.
///
/// The count lives in the block's header inside the heap, so for a mapped store it is shared by
/// every process: [`Clone`] adds a reference, dropping releases one, and the block is freed when
/// the last reference anywhere is released.
///
/// Access follows the loan-write-publish rule (ARCHITECTURE.md, "Who may write"): the bytes are
/// writable through [`MemoryBlock::as_mut_slice`] only while this is the block's only
/// reference and it has never been published (no [`MemoryBlock::handle`] taken, never rooted
/// or resolved by another process). After that everyone sees it read-only.
///
/// ```
/// use mmheap::{DefaultManager, MemoryManager};
///
/// let m = DefaultManager::new()?;
/// let mut a = m.allocate(5)?;
/// a.as_mut_slice()?.copy_from_slice(b"hello");
/// let b = a.clone();
/// assert_eq!(a.ref_count(), 2);
/// assert!(a.as_mut_slice().is_err(), "shared blocks are read-only");
/// drop(b);
/// assert_eq!(a.ref_count(), 1);
/// assert_eq!(a.as_slice(), b"hello");
/// # Ok::<(), mmheap::Error>(())
/// ```
pub struct MemoryBlock {
    /// Kept alive: for an owner reference, by the family of this process's owner references to
    /// the block (counted when the first is made, uncounted when the last goes; `family.rs`);
    /// for a hold, by the `Hold`'s user reference.
    heap: NonNull<Heap>,
    /// The header's offset; the payload follows it (its range was checked when the block was
    /// obtained, see `payload_ptr`), so the handle carries no pointer of its own: 32 bytes.
    offset: u64,
    /// The length in bits 0..48 and, in bits 48..64, the block's size in 16-byte units while
    /// this handle may release the block without reading its header, else 0. Set iff the block
    /// came from a thread cache with that size, this is its only reference (an owner one; the
    /// count is 1) and it was never published; cleared by everything that could make it
    /// otherwise (`clone`, `handle`, `settle_len` for roots and channels, `resize`,
    /// `donate_locked`). An atomic so that `&self` methods can clear it; see `Drop`.
    len_sole: AtomicU64,
    /// `None`: an owner reference, counted in the header. `Some`: one other hold in the
    /// header, shared by this process's clones.
    hold: Option<Arc<Hold>>,
}

// A handle is what users keep in their collections and move around: keep it small.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<MemoryBlock>() == 32);

const LEN_MASK: u64 = (1 << 48) - 1;
const SOLE_SHIFT: u32 = 48;

/// One other hold on a block, shared by the clones that came from one resolve.
struct Hold {
    heap: HeapRef,
    offset: u64,
    /// Entry in this process's hold table.
    index: Option<u64>,
    /// Cleared when the block was freed by other means (a moving resize).
    armed: bool,
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.armed {
            // An error means a corrupt store; the hold is leaked rather than risk more damage.
            let _ = self.heap.release_hold(self.offset, self.index);
        }
    }
}

// SAFETY: the payload pointer is into a mapping owned by the heap that the block's family (or
// hold) keeps alive whichever thread drops it (`family.rs` counts families begun on one thread
// and ended on another), header words are touched only atomically, and mutable access needs
// `&mut self`, so moving or sharing a MemoryBlock between threads is as safe as for
// `Arc<Vec<u8>>`.
unsafe impl Send for MemoryBlock {}
// SAFETY: as above; `&MemoryBlock` gives only shared, read-only access to the payload.
unsafe impl Sync for MemoryBlock {}

/// Checks an alignment and returns its log2 (at least 4: every block is 16-aligned).
#[inline]
pub(crate) fn align_log2(align: usize) -> Result<u32> {
    if !align.is_power_of_two() || align as u64 > PAGE_SIZE {
        return Err(Error::InvalidAlignment(align));
    }
    Ok(align.trailing_zeros().max(4))
}

impl MemoryBlock {
    pub(crate) fn from_obtained(heap: &HeapRef, got: Obtained) -> Result<MemoryBlock> {
        heap.payload(got.offset, got.len)?; // the range check `payload_ptr` relies on
        let hold = match got.kind {
            RefKind::Owner => {
                if got.new_family {
                    heap.family_begins();
                }
                None
            }
            RefKind::Hold => Some(Arc::new(Hold {
                heap: heap.clone(),
                offset: got.offset,
                index: got.hold_index,
                armed: true,
            })),
        };
        Ok(MemoryBlock {
            heap: NonNull::from(&***heap),
            offset: got.offset,
            len_sole: AtomicU64::new(got.len),
            hold,
        })
    }

    /// A new block of `len` bytes aligned to `align`. Inlined into the caller's crate so that
    /// the handle can stay in registers there (`as_mut_slice` reads it without an atomic
    /// access for the same reason): a handle returned through memory, written as four 8-byte
    /// words and copied with 16-byte loads, makes the copy wait for every store before it,
    /// the header's and the payload's cold lines included (`BENCHMARKS.md`).
    #[inline(always)]
    pub(crate) fn allocate(heap: &Arc<Heap>, len: usize, align: usize) -> Result<Self> {
        let align_log2 = align_log2(align)?;
        // The payload's range was checked by the allocation (`payload_ptr` relies on it).
        let (offset, _, cached_size) = heap.allocate(len as u64, align_log2)?;
        heap.family_begins();
        let len_sole = AtomicU64::new(len as u64 | (cached_size / GRANULE) << SOLE_SHIFT);
        Ok(MemoryBlock { heap: NonNull::from(&**heap), offset, len_sole, hold: None })
    }

    /// As [`MemoryBlock::allocate`] (default alignment), the payload zeroed.
    pub(crate) fn allocate_zeroed(heap: &Arc<Heap>, len: usize) -> Result<Self> {
        let mut block = Self::allocate(heap, len, 16)?;
        block.as_mut_slice()?.fill(0);
        Ok(block)
    }

    #[inline]
    fn heap(&self) -> &Heap {
        // SAFETY: the heap lives in an `Arc` allocation with at least one count that this
        // block's family or hold holds until this block is gone (see the field).
        unsafe { self.heap.as_ref() }
    }

    /// Completes the header (length, check word) before anyone else can name the block; see
    /// `Heap::settle`.
    pub(crate) fn settle_len(&self) -> Result<()> {
        self.not_sole();
        self.heap().settle(self.offset, self.len() as u64)
    }

    /// The first payload byte.
    #[inline]
    fn payload_ptr(&self) -> *mut u8 {
        // SAFETY: the payload's range (`payload_of(offset)`, `len` bytes) was checked when
        // this block was obtained or last resized, and a region's limit only grows.
        unsafe { self.heap().region.at_unchecked(payload_of(self.offset)) }.as_ptr()
    }

    /// Clears the sole-release size: another reference may exist from now on.
    #[inline]
    fn not_sole(&self) {
        if self.len_sole.load(Ordering::Relaxed) > LEN_MASK {
            self.len_sole.fetch_and(LEN_MASK, Ordering::Relaxed);
        }
    }

    /// Store offset of the block's header (or its slot id).
    pub(crate) fn header_offset(&self) -> u64 {
        self.offset
    }

    /// Length in bytes, as requested.
    #[inline]
    pub fn len(&self) -> usize {
        (self.len_sole.load(Ordering::Relaxed) & LEN_MASK) as usize
    }

    /// Whether the length is zero.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payload, read-only.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the payload lies inside the mapping that `self.heap` keeps alive, `len`
        // bytes were range-checked when the block was obtained, and by the publication rule
        // nobody writes these bytes while a shared reference exists: writers need the sole,
        // unpublished reference and `&mut self` (see `as_mut_slice`).
        unsafe { std::slice::from_raw_parts(self.payload_ptr(), self.len()) }
    }

    /// The payload, writable: only while this is the only reference and the block has never
    /// been published. Otherwise [`Error::Shared`].
    #[inline]
    pub fn as_mut_slice(&mut self) -> Result<&mut [u8]> {
        // A plain read: `&mut self` excludes every other access to the field, and no atomic
        // access on the hot path lets the compiler keep the handle in registers.
        let len_sole = *self.len_sole.get_mut();
        self.ensure_exclusive(len_sole)?;
        let len = (len_sole & LEN_MASK) as usize;
        // SAFETY: as in `as_slice`; additionally no other reference exists in any process
        // (count 1, never published, so no handle can name it) and `&mut self` excludes this
        // process's other uses.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.payload_ptr(), len) })
    }

    /// Whether this is the only reference to a block never published, given the handle's
    /// `len_sole` word.
    #[inline]
    fn ensure_exclusive(&self, len_sole: u64) -> Result<()> {
        if len_sole > LEN_MASK {
            // The only reference, never published (the field's invariant).
            debug_assert_eq!(rc::count(self.heap().rc(self.offset)), 1);
            return Ok(());
        }
        let w = self.heap().rc(self.offset);
        let count = rc::count(w) + self.local_extra();
        if count != 1 || rc::published(w) {
            return Err(Error::Shared { count });
        }
        Ok(())
    }

    /// References to this block: every `MemoryBlock` of this process, and every hold elsewhere
    /// (another process's references, a named root), as counted in the block header.
    #[inline]
    pub fn ref_count(&self) -> u64 {
        rc::count(self.heap().rc(self.offset)) + self.local_extra()
    }

    /// This process's clones of a hold beyond the one the header counts (0 for owners).
    #[inline]
    fn local_extra(&self) -> u64 {
        self.hold.as_ref().map_or(0, |h| Arc::strong_count(h) as u64 - 1)
    }

    /// Whether the block has been published (a handle taken, rooted or resolved elsewhere);
    /// published blocks are read-only for everyone.
    #[inline]
    pub fn is_published(&self) -> bool {
        rc::published(self.heap().rc(self.offset))
    }

    /// The handle that names this block, for another process. Publishes the block: from now
    /// on it is read-only everywhere.
    pub fn handle(&self) -> BlockHandle {
        self.not_sole();
        // A slot that cannot be published (no room for its span's page in a full store) gets
        // a handle with generation 0, which resolves to `InvalidHandle`.
        let _ = self.heap().settle(self.offset, self.len() as u64);
        self.heap().publish(self.offset);
        self.heap().handle_of(self.offset)
    }

    /// Offset of the first payload byte in the store: position-independent, valid in every
    /// process that maps the store.
    pub fn offset(&self) -> Offset<u8> {
        Offset::new(payload_of(self.offset))
    }

    /// A read-only view of the whole payload.
    pub fn segment(&self) -> MemorySegment<'_> {
        MemorySegment::new(self.as_slice(), payload_of(self.offset))
    }

    /// A writable view of the whole payload (same rule as [`MemoryBlock::as_mut_slice`]).
    pub fn segment_mut(&mut self) -> Result<MemorySegmentMut<'_>> {
        let start = payload_of(self.offset);
        Ok(MemorySegmentMut::new(self.as_mut_slice()?, start))
    }

    /// Changes the length; see [`crate::MemoryManager::resize`].
    pub fn resize(&mut self, new_len: usize) -> Result<()> {
        let index = self.hold.as_ref().and_then(|h| h.index);
        let who = Resizer::Block { local_extra: self.local_extra(), hold_index: index };
        let moved = self.heap().resize(self.offset, self.len() as u64, new_len as u64, who)?;
        let offset = match moved {
            None => self.offset,
            Some(new) => {
                // The old block is freed already; its hold must not be released again. The
                // count was checked under the lock, so this is the hold's last clone. We now
                // own the new block: its family takes over the keep-alive count.
                if let Some(mut hold) = self.hold.take().and_then(Arc::into_inner) {
                    hold.armed = false;
                    hold.heap.family_begins();
                }
                new
            }
        };
        self.heap().payload(offset, new_len as u64)?; // the range check `payload_ptr` relies on
        self.offset = offset;
        // The block may have another size now: releases read the header again.
        *self.len_sole.get_mut() = new_len as u64;
        Ok(())
    }

    /// Turns this reference into an other hold of a store structure (a channel slot), under
    /// the lock; the `MemoryBlock` is consumed without releasing anything.
    pub(crate) fn donate_locked(mut self, g: &crate::heap::Guard<'_>) -> Result<()> {
        let (kind, last) = match self.hold.take() {
            None => (RefKind::Owner, None),
            Some(hold) => {
                let index = hold.index;
                match Arc::into_inner(hold) {
                    Some(mut h) => {
                        h.armed = false;
                        (RefKind::Hold, Some((true, index)))
                    }
                    None => (RefKind::Hold, Some((false, index))),
                }
            }
        };
        let off = self.offset;
        self.offset = 0;
        *self.len_sole.get_mut() &= LEN_MASK;
        if self.heap().donate_locked(g, off, kind, last)? {
            // SAFETY: this was the family's last owner reference, so its ending is ours to
            // count; the caller's channel is a user, so the heap (and `g`) outlive it.
            unsafe { family_ends(self.heap) };
        }
        Ok(())
    }

    /// Whether two blocks come from the same manager instance.
    pub(crate) fn same_heap(&self, heap: &Arc<Heap>) -> bool {
        std::ptr::eq(self.heap.as_ptr(), Arc::as_ptr(heap))
    }
}

impl Clone for MemoryBlock {
    #[inline]
    fn clone(&self) -> Self {
        if self.hold.is_none() {
            self.not_sole();
            self.heap().clone_owner(self.offset);
        }
        MemoryBlock {
            heap: self.heap,
            offset: self.offset,
            len_sole: AtomicU64::new(self.len() as u64),
            hold: self.hold.clone(),
        }
    }
}

impl Drop for MemoryBlock {
    #[inline]
    fn drop(&mut self) {
        let sole = *self.len_sole.get_mut() >> SOLE_SHIFT;
        if sole != 0 {
            // The block's only reference, never published, from a thread cache (the field's
            // invariant): parked again without reading its header.
            self.heap().release_sole(self.offset, sole * GRANULE);
            // SAFETY: as below: this was the family's last owner reference.
            unsafe { family_ends(self.heap) };
            return;
        }
        // Offset 0 marks a reference that was donated to the store (`donate_locked`).
        if self.hold.is_none() && self.offset != 0 && self.heap().release_owner(self.offset) {
            // SAFETY: that was this process's last owner reference to the block, so the
            // family's ending is ours to count, and nothing uses the heap through it after.
            unsafe { family_ends(self.heap) };
        }
    }
}

impl fmt::Debug for MemoryBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBlock")
            .field("offset", &self.offset)
            .field("len", &self.len())
            .field("ref_count", &self.ref_count())
            .finish()
    }
}
