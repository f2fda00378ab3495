//! `MemoryBlock`, the owning handle of one block, and `BlockHandle`, the plain value that
//! names a block across processes.

use std::fmt;
use std::num::NonZeroU64;
use std::ptr::NonNull;
use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use crate::engine::core::header::rc;
use crate::engine::core::span::is_slot;
use crate::engine::heap::family::{family_ends, HeapRef};
use crate::engine::heap::{table, Heap, Obtained, RefKind, Resizer};
use crate::error::{Error, Result};
use crate::format::{payload_of, GRANULE, HEADER_SIZE, PAGE_SIZE};
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
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
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
    /// The heap and the length. With bit 0 set, an *owner* reference, counted in the header:
    /// the heap's index in the process's heap table (`heap/table.rs`) in bits 48..64 and the
    /// length in bits 1..48 (blocks are shorter than the largest heap, 2^46 bytes); the heap
    /// is kept alive by the family of this process's owner references to the block (counted
    /// when the first is made, uncounted when the last goes; `family.rs`). With bit 0 clear,
    /// an `Arc<Hold>` made a raw pointer (`hold_meta`): one other hold in the header, shared
    /// by this process's clones, which keeps the heap alive and carries the length.
    meta: NonZeroU64,
    /// The header's offset in bits 0..48 (the payload follows it; its range was checked when
    /// the block was obtained, see `payload_ptr`) and, in bits 48..64, the block's size in
    /// 16-byte units while the block is *lent* to this handle, else 0. A block is lent iff it
    /// came from a thread cache with that size, this is its only reference (an owner one) and
    /// it was never published; its reference word then still reads *parked* (owner this
    /// process, count 0, not published): the header counts nothing, and the release parks the
    /// block again without touching the header. Everything that could make another reference
    /// first ends the lending (`end_lending`: `clone`, `handle`, `settle_len` for roots and
    /// channels, `resize`), counting this reference in the header. An atomic so that `&self`
    /// methods can end it; see `Drop`.
    at: AtomicU64,
}

// A handle is what users keep in their collections and move around: two words, which the
// compiler keeps in registers and copies as two scalars (`heap/table.rs` says why it matters).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<MemoryBlock>() == 16);

/// `meta`: an owner reference (an `Arc` pointer, aligned, has bit 0 clear).
const OWNER: u64 = 1;
const LEN_SHIFT: u32 = 1;
const LEN_MASK: u64 = (1 << 47) - 1;
const INDEX_SHIFT: u32 = 48;
/// `at`: the offset, then the size of a lent block.
const OFFSET_MASK: u64 = (1 << 48) - 1;
const LENT_SHIFT: u32 = 48;

/// One other hold on a block, shared by the clones that came from one resolve.
struct Hold {
    heap: HeapRef,
    offset: u64,
    /// Entry in this process's hold table.
    index: Option<u64>,
    /// Cleared when the block was freed by other means (a moving resize).
    armed: bool,
    /// The length, which only a resize by the hold's only clone changes.
    len: AtomicU64,
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

/// `meta` for an owner reference to a block of `len` bytes of `heap`.
#[inline]
fn owner_meta(heap: &Heap, len: u64) -> NonZeroU64 {
    // Every length was checked against the heap's size, at most 2^46 bytes, before it gets here.
    debug_assert!(len <= LEN_MASK && heap.index != 0);
    NonZeroU64::MIN | u64::from(heap.index) << INDEX_SHIFT | len << LEN_SHIFT
}

/// `meta` for a hold-kind reference: the hold's `Arc` pointer, which takes over its count.
fn hold_meta(hold: Arc<Hold>) -> NonZeroU64 {
    let p = Arc::into_raw(hold) as u64;
    debug_assert_eq!(p & OWNER, 0, "an `Arc<Hold>` is aligned");
    NonZeroU64::new(p).expect("an `Arc`'s pointer is not null")
}

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
        let meta = match got.kind {
            RefKind::Owner => return Ok(Self::from_owned(heap, got)),
            RefKind::Hold => {
                let hold = Arc::new(Hold {
                    heap: heap.clone(),
                    offset: got.offset,
                    index: got.hold_index,
                    armed: true,
                    len: AtomicU64::new(got.len),
                });
                hold_meta(hold)
            }
        };
        Ok(MemoryBlock { meta, at: AtomicU64::new(got.offset) })
    }

    /// The `MemoryBlock` of an owner reference obtained in `heap`, whose payload's range the
    /// caller checked (`payload_ptr` relies on it): an owner reference needs no user of the
    /// heap (its family keeps the heap).
    pub(crate) fn from_owned(heap: &Heap, got: Obtained) -> MemoryBlock {
        debug_assert_eq!(got.kind, RefKind::Owner);
        if got.new_family {
            heap.family_begins();
        }
        MemoryBlock { meta: owner_meta(heap, got.len), at: AtomicU64::new(got.offset) }
    }

    /// A new linked block of `heap`: `links` links after `len` bytes (`links.rs`).
    pub(crate) fn allocate_linked(heap: &Arc<Heap>, links: usize, len: usize) -> Result<Self> {
        let got = heap.allocate_linked(links as u64, len as u64)?;
        // The range check `payload_ptr` relies on was the allocation's (`make_linked`).
        Ok(Self::from_owned(heap, got))
    }

    /// A new block of `heap` with a shared area of `area` bytes after `len` bytes (`shared.rs`).
    pub(crate) fn allocate_shared(heap: &Arc<Heap>, len: usize, area: usize, atomic: bool) -> Result<Self> {
        let got = heap.allocate_shared(len as u64, area as u64, atomic)?;
        // The range check `payload_ptr` relies on was the allocation's (`make_shared`).
        Ok(Self::from_owned(heap, got))
    }

    /// A new block of `len` bytes aligned to `align`. Inlined into the caller's crate so that
    /// the handle can stay in registers there (`as_mut_slice` reads it without an atomic
    /// access for the same reason): a handle that goes through memory, written as 8-byte
    /// words and copied with 16-byte loads, makes the copy wait for every store before it,
    /// the header's and the payload's cold lines included (`heap/table.rs`).
    #[inline(always)]
    pub(crate) fn allocate(heap: &Arc<Heap>, len: usize, align: usize) -> Result<Self> {
        let align_log2 = align_log2(align)?;
        // The payload's range was checked by the allocation (`payload_ptr` relies on it), which
        // counted the new family too.
        let (offset, cached_size) = heap.allocate(len as u64, align_log2)?;
        let at = AtomicU64::new(offset | (cached_size / GRANULE) << LENT_SHIFT);
        Ok(MemoryBlock { meta: owner_meta(heap, len as u64), at })
    }

    /// As [`MemoryBlock::allocate`] (default alignment), the payload zeroed.
    pub(crate) fn allocate_zeroed(heap: &Arc<Heap>, len: usize) -> Result<Self> {
        let mut block = Self::allocate(heap, len, 16)?;
        block.as_mut_slice()?.fill(0);
        Ok(block)
    }

    #[inline]
    pub(crate) fn heap(&self) -> &Heap {
        match self.hold() {
            // SAFETY: an owner's `meta` names its heap's index, and the heap lives while this
            // block's family does (see the field).
            None => unsafe { table::get((self.meta.get() >> INDEX_SHIFT) as u16) },
            Some(hold) => &hold.heap,
        }
    }

    /// A user of this block's heap (`family.rs`), unless the heap has none left: a weak
    /// reference resolves through one.
    pub(crate) fn heap_user(&self) -> Option<HeapRef> {
        match self.hold() {
            Some(hold) => Some(hold.heap.clone()),
            None => HeapRef::another(self.heap().lives.heap()?),
        }
    }

    /// The hold this clone shares, for a hold-kind reference.
    #[inline]
    fn hold(&self) -> Option<&Hold> {
        // SAFETY: without the owner bit, `meta` is an `Arc<Hold>` pointer whose count this
        // block holds (`hold_meta`), so the hold lives as long as `self`.
        self.hold_ptr().map(|p| unsafe { &*p })
    }

    /// `meta` as the `Arc<Hold>` pointer it is for a hold-kind reference.
    #[inline]
    fn hold_ptr(&self) -> Option<*const Hold> {
        (self.meta.get() & OWNER == 0).then_some(self.meta.get() as *const Hold)
    }

    /// Takes this block's count of its hold back as an `Arc`, leaving `self` without one: the
    /// caller must not let `self` be dropped or cloned after (it forgets or overwrites it).
    fn take_hold(&mut self) -> Option<Arc<Hold>> {
        // SAFETY: the pointer came from `Arc::into_raw` and this block owns one count of it,
        // which the caller passes on to the returned `Arc` by not using `self`'s.
        self.hold_ptr().map(|p| unsafe { Arc::from_raw(p) })
    }

    /// The header's offset (or slot id).
    #[inline]
    pub(crate) fn off(&self) -> u64 {
        self.at.load(Ordering::Relaxed) & OFFSET_MASK
    }

    /// Completes the header (length, check word) before anyone else can name the block; see
    /// `Heap::settle`.
    pub(crate) fn settle_len(&self) -> Result<()> {
        self.end_lending(0)?;
        self.heap().settle(self.off(), self.len() as u64, false)
    }

    /// [`MemoryBlock::settle_len`] under the lock, which the caller holds.
    pub(crate) fn settle_len_locked(&self, g: &crate::engine::heap::Guard<'_>) -> Result<()> {
        self.end_lending(0)?;
        self.heap().settle_locked(g, self.off(), self.len() as u64)
    }

    /// The first payload byte.
    #[inline]
    pub(crate) fn payload_ptr(&self) -> *mut u8 {
        // SAFETY: the payload's range (`payload_of(offset)`, `len` bytes) was checked when
        // this block was obtained or last resized, and a region's limit only grows.
        unsafe { self.heap().region.at_unchecked(payload_of(self.off())) }.as_ptr()
    }

    /// Ends the lending of a lent block (see `at`): counts this reference in the header, plus
    /// `extra` new owner references (a clone's), so that other references may exist from now
    /// on. For a block not lent, only adds the `extra` ones. An error, nothing counted, if the
    /// header's count would overflow (a damaged store: `Heap::add_owner_refs`).
    #[inline]
    fn end_lending(&self, extra: u64) -> Result<()> {
        let at = self.at.load(Ordering::Relaxed);
        let (heap, off) = (self.heap(), at & OFFSET_MASK);
        if at <= OFFSET_MASK {
            if extra > 0 {
                heap.add_owner_refs(off, extra)?;
            }
            return Ok(());
        }
        // Count first, then clear the size, so the header never counts fewer references than
        // exist. A thread that clones this same block at once (`&MemoryBlock` is `Sync`) may
        // do the same; whoever loses the race to clear it takes back the one it added for
        // this reference (never the last: the winner's are counted before its clearing, which
        // the loser's acquire sees, and this reference lives while we borrow it).
        heap.add_owner_refs(off, 1 + extra)?;
        if self.at.compare_exchange(at, off, Ordering::Release, Ordering::Acquire).is_err() {
            heap.drop_counted_owner_ref(off);
        }
        Ok(())
    }

    /// Store offset of the block's header (or its slot id).
    pub(crate) fn header_offset(&self) -> u64 {
        self.off()
    }

    /// Length in bytes, as requested.
    #[inline]
    pub fn len(&self) -> usize {
        match self.hold() {
            None => (self.meta.get() >> LEN_SHIFT & LEN_MASK) as usize,
            Some(hold) => hold.len.load(Ordering::Relaxed) as usize,
        }
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
        let at = crate::sync::read_mut(&mut self.at);
        self.ensure_exclusive(at)?;
        // SAFETY: as in `as_slice`; additionally no other reference exists in any process
        // (count 1, never published, so no handle can name it) and `&mut self` excludes this
        // process's other uses.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.payload_ptr(), self.len()) })
    }

    /// Whether this is the only reference to a block never published, given the handle's
    /// `at` word.
    #[inline]
    fn ensure_exclusive(&self, at: u64) -> Result<()> {
        let off = at & OFFSET_MASK;
        if at > OFFSET_MASK {
            // Lent: the only reference, never published (the field's invariant; the header's
            // word, which a damaged store could have changed, is not consulted).
            return Ok(());
        }
        let w = self.heap().rc(off);
        let count = rc::count(w) + self.local_extra();
        if count != 1 || rc::published(w) {
            return Err(Error::Shared { count });
        }
        Ok(())
    }

    /// References to this block: every `MemoryBlock` of this process, and every hold elsewhere
    /// (another process's references, a named root), as counted in the block header. (Like
    /// `Arc::strong_count`, a count read while another thread clones or drops a clone may be
    /// out of date, by one more or less, as soon as it is read.)
    #[inline]
    pub fn ref_count(&self) -> u64 {
        let at = self.at.load(Ordering::Acquire);
        if at > OFFSET_MASK {
            return 1; // lent: the only reference, not counted in the header yet
        }
        rc::count(self.heap().rc(at & OFFSET_MASK)) + self.local_extra()
    }

    /// This process's clones of a hold beyond the one the header counts (0 for owners).
    #[inline]
    fn local_extra(&self) -> u64 {
        let Some(p) = self.hold_ptr() else { return 0 };
        // SAFETY: as in `take_hold`; the `Arc` is not dropped, so the count stays ours.
        let hold = std::mem::ManuallyDrop::new(unsafe { Arc::from_raw(p) });
        Arc::strong_count(&hold) as u64 - 1
    }

    /// Whether the block has been published (a handle taken, rooted or resolved elsewhere);
    /// published blocks are read-only for everyone.
    #[inline]
    pub fn is_published(&self) -> bool {
        rc::published(self.heap().rc(self.off()))
    }

    /// The handle that names this block, for another process. Publishes the block: from now
    /// on it is read-only everywhere. (In a store too full or too damaged to record the
    /// publication, the handle has generation 0 and resolves to nothing, and the block stays
    /// unpublished.)
    pub fn handle(&self) -> BlockHandle {
        let off = self.off();
        let failed = BlockHandle { offset: off, generation: 0 };
        if self.end_lending(0).is_err() {
            return failed;
        }
        let heap = self.heap();
        if heap.settle(off, self.len() as u64, true).is_err() {
            // A slot whose publication could not be recorded (no room for its span's page in a
            // full store), or a block that could not be given a generation (a damaged store):
            // it stays unpublished, its old generation naming nothing, and nothing can name it
            // with this handle. (Publishing it without a record would leave a store that
            // `check`, and recovery after a crash, must call damaged.)
            return failed;
        }
        heap.handle_of(off)
    }

    /// Offset of the first payload byte in the store: position-independent, valid in every
    /// process that maps the store.
    pub fn offset(&self) -> Offset<u8> {
        Offset::new(payload_of(self.off()))
    }

    /// A read-only view of the whole payload.
    pub fn segment(&self) -> MemorySegment<'_> {
        MemorySegment::new(self.as_slice(), payload_of(self.off()))
    }

    /// A writable view of the whole payload (same rule as [`MemoryBlock::as_mut_slice`]).
    pub fn segment_mut(&mut self) -> Result<MemorySegmentMut<'_>> {
        let start = payload_of(self.off());
        Ok(MemorySegmentMut::new(self.as_mut_slice()?, start))
    }

    /// Changes the length; see [`crate::MemoryManager::resize`].
    pub fn resize(&mut self, new_len: usize) -> Result<()> {
        if self.resize_within(new_len as u64) {
            return Ok(());
        }
        // The heap checks the count in the header, and may move the block.
        self.end_lending(0)?;
        let index = self.hold().and_then(|h| h.index);
        let who = Resizer::Block { local_extra: self.local_extra(), hold_index: index };
        let moved = self.heap().resize(self.off(), self.len() as u64, new_len as u64, who)?;
        let offset = match moved {
            None => self.off(),
            Some(new) => {
                if let Some(hold) = self.take_hold() {
                    // We now own the new block, an owner reference whose family takes over
                    // the keep-alive count.
                    self.meta = owner_meta(&hold.heap, 0);
                    hold.heap.family_begins();
                    // The old block is freed already; its hold must not be released again.
                    // The count was checked under the lock: this is the hold's last clone.
                    if let Some(mut hold) = Arc::into_inner(hold) {
                        hold.armed = false;
                    }
                }
                new
            }
        };
        self.heap().payload(offset, new_len as u64)?; // the range check `payload_ptr` relies on
        crate::sync::write_mut(&mut self.at, offset);
        match self.hold() {
            None => self.meta = owner_meta(self.heap(), new_len as u64),
            Some(hold) => hold.len.store(new_len as u64, Ordering::Relaxed),
        }
        Ok(())
    }

    /// Resizes without the heap's lock when nothing in the store has to change: this handle is
    /// the block's only reference, an owner one, never published (lent to it, or counted once
    /// in the header), and `new_len` fits the block's payload without leaving more than half
    /// of it unused (a larger shrink gives the tail back, under the lock). Only the length this
    /// handle keeps changes. `false`: nothing done.
    fn resize_within(&mut self, new_len: u64) -> bool {
        if self.hold().is_some() || new_len == 0 {
            return false;
        }
        let at = crate::sync::read_mut(&mut self.at);
        let off = at & OFFSET_MASK;
        let capacity = match at >> LENT_SHIFT {
            // The lending's size is the block's (a slot's is its payload's).
            0 => self.heap().sole_capacity(off),
            lent => (lent * GRANULE).checked_sub(if is_slot(off) { 0 } else { HEADER_SIZE }),
        };
        let fits = capacity.is_some_and(|c| new_len <= c && (new_len >= c / 2 || c <= 64));
        // The range check `payload_ptr` relies on, for the new length.
        if !fits || self.heap().payload_at(off, new_len).is_none() {
            return false;
        }
        self.meta = owner_meta(self.heap(), new_len);
        true
    }

    /// Turns this reference into an other hold of a store structure (a channel slot), under
    /// the lock; the `MemoryBlock` is consumed without releasing anything.
    pub(crate) fn donate_locked(self, g: &crate::engine::heap::Guard<'_>) -> Result<()> {
        // Nothing of `self` is released: its reference goes to the store, its hold count (if
        // any) is taken over here.
        let mut me = std::mem::ManuallyDrop::new(self);
        let heap = NonNull::from(me.heap());
        let off = me.off();
        let (kind, last) = match me.take_hold() {
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
        // SAFETY: the caller's channel is a user of the heap, so it outlives this call.
        if unsafe { heap.as_ref() }.donate_locked(g, off, kind, last)? {
            // SAFETY: this was the family's last owner reference, so its ending is ours to
            // count; the caller's channel is a user, so the heap (and `g`) outlive it.
            unsafe { family_ends(heap) };
        }
        Ok(())
    }

    /// Gives this block's reference to a channel ring without the lock, if it is the block's
    /// only reference and the block was never published ([`Heap::give_sole_to_ring`]): the
    /// header offset and the length to queue. The block comes back otherwise (the caller then
    /// sends under the lock). The caller holds the ring's send lock and a user of the heap.
    pub(crate) fn give_to_ring(self) -> std::result::Result<(u64, u64), MemoryBlock> {
        if self.hold_ptr().is_some() {
            return Err(self);
        }
        let at = self.at.load(Ordering::Relaxed);
        let (off, len) = (at & OFFSET_MASK, self.len() as u64);
        if !self.heap().give_sole_to_ring(off, at > OFFSET_MASK) {
            return Err(self);
        }
        let heap = NonNull::from(self.heap());
        std::mem::forget(self);
        // SAFETY: that was this process's only owner reference to the block, so its family
        // ends here and the ending is ours to count; the caller's channel is a user of the
        // heap, so the heap outlives this call.
        unsafe { family_ends(heap) };
        Ok((off, len))
    }

    /// Whether two blocks come from the same manager instance.
    pub(crate) fn same_heap(&self, heap: &Arc<Heap>) -> bool {
        std::ptr::eq(self.heap(), Arc::as_ptr(heap))
    }
}

impl Clone for MemoryBlock {
    /// Adds a reference. Aborts the process, as `Arc` does, if the block's count would
    /// overflow: 2^32 references in this process, or a count that a damaged store changed (a
    /// clone cannot fail, and a wrapped count would free the block while it is in use).
    #[inline]
    fn clone(&self) -> Self {
        match self.hold_ptr() {
            None => {
                if let Err(e) = self.end_lending(1) {
                    overflow(e)
                }
            }
            // SAFETY: `p` is the `Arc<Hold>` this block holds a count of (`hold_meta`); the new
            // block takes the added count.
            Some(p) => unsafe { Arc::increment_strong_count(p) },
        }
        MemoryBlock { meta: self.meta, at: AtomicU64::new(self.off()) }
    }
}

/// A clone whose count would overflow: says why, and aborts.
#[cold]
fn overflow(e: Error) -> ! {
    eprintln!("mmheap: cannot clone a block: {e} (a damaged store, or 2^32 clones); aborting");
    std::process::abort()
}

impl Drop for MemoryBlock {
    /// Passes the two words on by value: the caller's handle need not have an address, so its
    /// code can keep it in registers (an outlined drop taking `&mut self` makes every handle
    /// that might be dropped on an early return or a panic live in memory).
    #[inline(always)]
    fn drop(&mut self) {
        release(self.meta, crate::sync::read_mut(&mut self.at));
    }
}

/// Releases the reference of a dropped `MemoryBlock` with these words.
#[inline]
fn release(meta: NonZeroU64, at: u64) {
    // The dropped block again, to read its words with the methods; never dropped itself.
    let dropped = std::mem::ManuallyDrop::new(MemoryBlock { meta, at: AtomicU64::new(at) });
    if let Some(p) = dropped.hold_ptr() {
        // SAFETY: as in `take_hold`: the dropped block's count of its hold ends here.
        drop(unsafe { Arc::from_raw(p) });
        return;
    }
    let (off, lent) = (at & OFFSET_MASK, at >> LENT_SHIFT);
    let heap = dropped.heap();
    if lent != 0 {
        // The block's only reference, never published, its header counting nothing (the
        // field's invariant): parked again without touching the header.
        // SAFETY: as below: this was the family's last owner reference (it ends there).
        return unsafe { heap.release_lent(off, lent * GRANULE) };
    }
    if heap.release_owner(off) {
        // SAFETY: that was this process's last owner reference to the block, so the family's
        // ending is ours to count, and nothing uses the heap through it after.
        unsafe { family_ends(NonNull::from(heap)) };
    }
}

impl fmt::Debug for MemoryBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBlock")
            .field("offset", &self.off())
            .field("len", &self.len())
            .field("ref_count", &self.ref_count())
            .finish()
    }
}
