//! Two-level segregated fit (TLSF) over a [`Region`]: O(1) allocate and free with immediate
//! coalescing, no system calls.
//!
//! Invariants (checked by [`Core::check`]):
//! - blocks tile `[HEAP_START, capacity - SENTINEL_SIZE)` exactly, and the sentinel follows;
//! - no two free blocks are adjacent (coalescing is immediate);
//! - a block's `PREV_FREE` flag is set iff the block before it is free, and then that block's
//!   last eight bytes (its footer) hold its size;
//! - a free block is on exactly the list `mapping(size)`; bit `(f, s)` of the bitmaps is set iff
//!   that list is non-empty;
//! - the superblock's used bytes and live blocks are the sums over used blocks.
//!
//! Every offset read from the region is checked before it is followed: a corrupt store yields
//! [`Error::Corrupt`], never a wild access or an endless loop. The free lists themselves are in
//! `tlsf/free_lists.rs`.

use crate::engine::core::header::{Tag, FLAG_PREV_FREE};
use crate::engine::core::region::{out_of_range, Region, Snapshot};
use crate::error::{Error, Result};
use crate::format::*;
use crate::sync::{AtomicU32, AtomicU64, Ordering};

mod free_lists;

/// Block size needed to hold `len` payload bytes, or `None` when it cannot be represented.
#[inline]
pub(crate) fn block_size(len: u64) -> Option<u64> {
    let raw = len.checked_add(HEADER_SIZE + GRANULE - 1)? & !(GRANULE - 1);
    let size = raw.max(MIN_BLOCK);
    (size < 1 << (FL_COUNT + 7)).then_some(size)
}

/// The block size a request of `len` bytes aligned to `1 << align_log2` needs, and the size
/// of free block that surely holds it wherever the block lies (the alignment gap included).
fn request_sizes(len: u64, align_log2: u32) -> Option<(u64, u64)> {
    let need = block_size(len)?;
    let search = match align_log2 <= 4 {
        true => need,
        false => need.checked_add((1 << align_log2) + MIN_BLOCK)?,
    };
    Some((need, search))
}

/// Bytes of heap (free block, header included) that surely hold a request of `len` bytes
/// aligned to `1 << align_log2`, wherever the free block lies; `None` when none can.
pub(crate) fn room_for(len: u64, align_log2: u32) -> Option<u64> {
    request_sizes(len, align_log2).map(|(_, search)| search)
}

/// The list a free block of `size` bytes lives on.
pub(crate) fn mapping(size: u64) -> (u64, u64) {
    if size < SMALL_LIMIT {
        (0, size / GRANULE)
    } else {
        let l = u64::from(63 - size.leading_zeros());
        (l - 7, (size >> (l - u64::from(SL_LOG))) & (SL_COUNT - 1))
    }
}

/// The first list whose every block is at least `size` bytes.
fn mapping_search(size: u64) -> Option<(u64, u64)> {
    let rounded = if size < SMALL_LIMIT {
        size
    } else {
        let l = 63 - size.leading_zeros();
        size.checked_add((1 << (l - SL_LOG)) - 1)?
    };
    let (f, s) = mapping(rounded);
    (f < FL_COUNT).then_some((f, s))
}

fn head_at(f: u64, s: u64) -> u64 {
    TLSF_HEADS + (f * SL_COUNT + s) * 8
}

/// One block seen by a heap walk.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlockInfo {
    pub(crate) offset: u64,
    pub(crate) tag: Tag,
}

/// A block carved out by [`Core::alloc`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Carved {
    pub(crate) offset: u64,
    pub(crate) size: u64,
}

/// The allocator core over one region, for one operation (or one walk).
///
/// It copies the region's base and limit once, when it is made ([`Snapshot`]), and reads and
/// validates the heap's end then too. Word accesses cannot fail: one out of range (which the
/// validation of every offset read from the store makes impossible; this is the backstop) goes
/// to a scratch word and is counted for the thread, and every operation reports a fault made
/// since its core was made as [`Error::Corrupt`] before it returns ([`Core::done`]). So an operation carries no error path
/// per access (an allocation or a free makes some forty), only where it validates what it read,
/// and the compiler keeps base and limit in registers. A core must be made after the region
/// grew, and not kept across a release of the store lock (another process may grow the heap).
pub(crate) struct Core<'r> {
    pub(crate) r: &'r Region,
    mem: Snapshot<'r>,
    /// The end sentinel's offset, from a capacity checked against the limit; 0 if the
    /// superblock's capacity is out of range.
    end: u64,
    /// The thread's fault count when this core was made.
    faults: u64,
}

/// Where out-of-range accesses go (any thread's: they are atomic, and their values unused).
#[cfg(not(loom))]
static SCRATCH: AtomicU64 = AtomicU64::new(0);
#[cfg(not(loom))]
static SCRATCH32: AtomicU32 = AtomicU32::new(0);
// Model atomics have no `const` `new`: made once per model execution.
#[cfg(loom)]
loom::lazy_static! {
    static ref SCRATCH: AtomicU64 = AtomicU64::new(0);
    static ref SCRATCH32: AtomicU32 = AtomicU32::new(0);
}

crate::sync::thread_local! {
    /// Out-of-range accesses by cores on this thread (never reset: a core compares it with
    /// the count it was made at, so cores made inside another's operation do not hide its
    /// faults), and the offset of the last one.
    static FAULTS: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

impl<'r> Core<'r> {
    #[inline]
    pub(crate) fn new(r: &'r Region) -> Self {
        let mem = r.snapshot();
        let cap = mem.word(SB_CAPACITY).map_or(0, |w| w.load(Ordering::Relaxed));
        let faults = FAULTS.with(|f| f.get().0);
        Core { r, mem, end: Self::end_of(cap, mem.limit()), faults }
    }

    /// Whether the superblock's capacity was in range (within what this process can touch).
    #[inline]
    pub(crate) fn knows_capacity(&self) -> bool {
        self.end != 0
    }

    /// The sentinel's offset for capacity `cap`, or 0 when `cap` is out of range.
    #[inline]
    fn end_of(cap: u64, limit: u64) -> u64 {
        if cap < MIN_STORE_SIZE || cap > limit || cap % PAGE_SIZE != 0 {
            return 0;
        }
        cap - SENTINEL_SIZE
    }

    /// The `u64` word at `off`: in the region if `off .. off + 8` is inside the snapshot and
    /// aligned, else the scratch word (and the thread is faulted).
    #[inline]
    fn word(&self, off: u64) -> &'r AtomicU64 {
        match self.mem.word(off) {
            Some(w) => w,
            None => {
                fault(off);
                &SCRATCH
            }
        }
    }

    /// The `u32` word at `off`, as [`Core::word`] (the bitmap words).
    #[inline]
    fn word32(&self, off: u64) -> &'r AtomicU32 {
        match self.mem.word32(off) {
            Some(w) => w,
            None => {
                fault(off);
                &SCRATCH32
            }
        }
    }

    /// `v`, or the corruption error if an access on this thread was out of range since this
    /// core was made. Every operation callers outside the core use ends with it.
    #[inline]
    pub(super) fn done<T>(&self, v: T) -> Result<T> {
        match FAULTS.with(|f| f.get()) {
            (n, _) if n == self.faults => Ok(v),
            (_, off) => Err(out_of_range(off)),
        }
    }

    /// Loads the `u64` at `off` (relaxed: callers hold the store lock).
    #[inline]
    pub(super) fn load(&self, off: u64) -> u64 {
        self.word(off).load(Ordering::Relaxed)
    }

    /// Stores `v` at `off` (relaxed: callers hold the store lock).
    #[inline]
    pub(super) fn store(&self, off: u64, v: u64) {
        self.word(off).store(v, Ordering::Relaxed);
    }

    #[inline]
    pub(super) fn load32(&self, off: u64) -> u32 {
        self.word32(off).load(Ordering::Relaxed)
    }

    #[inline]
    pub(super) fn store32(&self, off: u64, v: u32) {
        self.word32(off).store(v, Ordering::Relaxed);
    }

    /// Loads the `u64` at `off` for callers outside the core (the check).
    pub(crate) fn read(&self, off: u64) -> Result<u64> {
        let v = self.load(off);
        self.done(v)
    }

    /// A raw load that leaves a fault unreported (tests: a failed operation's leftover).
    #[cfg(test)]
    pub(crate) fn load_for_test(&self, off: u64) -> u64 {
        self.load(off)
    }

    /// As [`Core::read`], the `u32` at `off`.
    pub(crate) fn read32(&self, off: u64) -> Result<u32> {
        let v = self.load32(off);
        self.done(v)
    }

    /// Zeroes the `n` words from `off` (header words: atomic stores, like every other access).
    #[inline]
    pub(super) fn zero_words(&self, off: u64, n: u64) {
        for i in 0..n {
            self.store(off + i * 8, 0);
        }
    }

    /// The heap's capacity from the superblock, checked against what this process may touch.
    #[inline]
    pub(crate) fn capacity(&self) -> Result<u64> {
        Ok(self.sentinel()? + SENTINEL_SIZE)
    }

    #[inline]
    pub(super) fn sentinel(&self) -> Result<u64> {
        match self.end {
            0 => Err(Error::corrupt("capacity out of range", SB_CAPACITY)),
            end => Ok(end),
        }
    }

    /// Records the new capacity (under the lock) and takes it as this core's.
    fn set_capacity(&mut self, cap: u64) {
        self.store(SB_CAPACITY, cap);
        self.end = Self::end_of(cap, self.mem.limit());
    }

    /// The tag at `off`, for callers outside the core.
    pub(crate) fn tag(&self, off: u64) -> Result<Tag> {
        let t = self.tag_at(off);
        self.done(t)
    }

    #[inline]
    pub(super) fn tag_at(&self, off: u64) -> Tag {
        Tag(self.load(off + HDR_TAG))
    }

    #[inline]
    pub(super) fn set_tag(&self, off: u64, t: Tag) {
        self.store(off + HDR_TAG, t.0)
    }

    /// A block header inside the heap: range, granule and tag checked.
    #[inline]
    pub(crate) fn block_at(&self, off: u64) -> Result<Tag> {
        let end = self.sentinel()?;
        if off < HEAP_START || off >= end || off % GRANULE != 0 {
            return Err(Error::corrupt("block offset outside the heap", off));
        }
        let t = self.tag_at(off);
        let size = t.size();
        if !t.well_formed() || size < MIN_BLOCK || size > end - off {
            return Err(Error::corrupt("malformed block header", off));
        }
        Ok(t)
    }

    /// A free block on a list: as [`Core::block_at`], and it must be free.
    #[inline]
    pub(crate) fn free_at(&self, off: u64) -> Result<Tag> {
        let t = self.block_at(off)?;
        if !t.is_free() {
            return Err(Error::corrupt("free list points at a used block", off));
        }
        Ok(t)
    }

    /// Makes `[off, off + size)` a free block on its list. The tag store comes first; the
    /// generation, reference and check words are zeroed, so no handle can match a free header.
    fn write_free(&self, off: u64, size: u64) -> Result<()> {
        self.set_tag(off, Tag::free(size));
        self.zero_words(off + HDR_GEN, (HEADER_SIZE - HDR_GEN) / 8);
        self.store(off + size - 8, size);
        self.insert(off, size)
    }

    /// Turns a header that has been merged into a neighbour into plain bytes, so that a stale
    /// handle can never find it again.
    fn erase_header(&self, off: u64) {
        self.zero_words(off, HEADER_SIZE / 8)
    }

    /// Sets or clears `PREV_FREE` with one atomic read-modify-write: the block may be parked,
    /// and its owner may rewrite its slack at the same moment without the lock.
    fn set_prev_free(&self, off: u64, on: bool) {
        let word = self.word(off + HDR_TAG);
        if on {
            word.fetch_or(FLAG_PREV_FREE, Ordering::Relaxed);
        } else {
            word.fetch_and(!FLAG_PREV_FREE, Ordering::Relaxed);
        }
    }

    // ---- operations -------------------------------------------------------------------

    /// Lays out an empty heap over `capacity` bytes: the index cleared, one free block and
    /// the sentinel.
    pub(crate) fn init(&mut self, capacity: u64) -> Result<()> {
        self.r.zero(TLSF_OFFSET, TLSF_END - TLSF_OFFSET)?;
        self.set_capacity(capacity);
        self.store(SB_USED_BYTES, 0);
        self.store(SB_LIVE_BLOCKS, 0);
        let end = self.sentinel()?;
        self.set_tag(end, Tag(FLAG_PREV_FREE));
        self.write_free(HEAP_START, end - HEAP_START)?;
        self.done(())
    }

    pub(super) fn account(&self, bytes: i64, blocks: i64) {
        let used = self.load(SB_USED_BYTES).wrapping_add_signed(bytes);
        let live = self.load(SB_LIVE_BLOCKS).wrapping_add_signed(blocks);
        self.store(SB_USED_BYTES, used);
        self.store(SB_LIVE_BLOCKS, live)
    }

    /// Carves a used block for `len` payload bytes whose payload is aligned to
    /// `1 << align_log2`. `Ok(None)` when no free block is large enough; the heap is then
    /// unchanged. The new block's tag is written; the rest of its header is the caller's.
    ///
    /// Good fit in constant time: only lists whose every block is large enough are searched,
    /// so a block of the right size on the list of `len`'s own size is missed (TLSF rounds
    /// the request up to the next list); [`Core::alloc_fit`] finds it.
    pub(crate) fn alloc(&self, len: u64, align_log2: u32) -> Result<Option<Carved>> {
        let Some((need, search)) = request_sizes(len, align_log2) else {
            return Ok(None);
        };
        let Some(found) = self.find(search)? else {
            return Ok(None);
        };
        self.carve(found, need, len, align_log2)
    }

    /// As [`Core::alloc`], but exact: every free block that can hold the request is a
    /// candidate, including those on the lists `alloc` skips. It walks those lists when the
    /// good fit finds nothing, so it is for when the heap cannot grow: then `Ok(None)` means that no free block can hold the
    /// request (with default alignment: none is `len + HEADER_SIZE` bytes, rounded to the
    /// granule, or larger).
    pub(crate) fn alloc_fit(&self, len: u64, align_log2: u32) -> Result<Option<Carved>> {
        let Some((need, search)) = request_sizes(len, align_log2) else {
            return Ok(None);
        };
        if let Some(found) = self.find(search)? {
            return self.carve(found, need, len, align_log2);
        }
        let (f, s) = mapping(need);
        let (lf, ls) = mapping_search(search).unwrap_or((FL_COUNT - 1, SL_COUNT - 1));
        let mut budget = self.capacity()? / MIN_BLOCK;
        for list in f * SL_COUNT + s..=(lf * SL_COUNT + ls).min(FL_COUNT * SL_COUNT - 1) {
            let mut cur = self.load(TLSF_HEADS + list * 8);
            while cur != 0 {
                let size = self.free_at(cur)?.size();
                if size >= aligned_gap(cur + HEADER_SIZE, 1 << align_log2) + need {
                    return self.carve(cur, need, len, align_log2);
                }
                budget = budget.checked_sub(1).ok_or(Error::corrupt("free list cycle", cur))?;
                cur = self.load(cur + FREE_NEXT);
            }
        }
        self.done(None)
    }

    /// [`Core::alloc_fit`] if `exact`, else [`Core::alloc`].
    pub(crate) fn alloc_either(&self, len: u64, align_log2: u32, exact: bool) -> Result<Option<Carved>> {
        match exact {
            true => self.alloc_fit(len, align_log2),
            false => self.alloc(len, align_log2),
        }
    }

    /// Size of the free block that ends at the sentinel, 0 if the last block is used: growth
    /// adds to it.
    pub(crate) fn tail_free(&self) -> Result<u64> {
        let end = self.sentinel()?;
        if !self.tag_at(end).prev_free() {
            return self.done(0);
        }
        let p = self.prev_free_block(end)?;
        let size = self.tag_at(p).size();
        self.done(size)
    }

    /// Carves the request (`need` bytes of block, from [`request_sizes`]) out of the free
    /// block `found`, which can hold it.
    fn carve(&self, found: u64, need: u64, len: u64, align_log2: u32) -> Result<Option<Carved>> {
        let align = 1u64 << align_log2;
        let mut size = self.tag_at(found).size();
        self.remove(found, size)?;
        let gap = aligned_gap(found + HEADER_SIZE, align);
        let off = found + gap;
        size -= gap;
        let rest = size - need;
        if rest >= MIN_BLOCK {
            self.write_free(off + need, rest)?;
            size = need;
        } else {
            self.set_prev_free(off + size, false);
        }
        if gap > 0 {
            // This header lies inside the found block, over old payload bytes: clear its
            // generation, reference and check words, as every free header's are, so that a
            // crash before the caller writes them leaves a block nobody holds.
            self.zero_words(off + HDR_GEN, (HEADER_SIZE - HDR_GEN) / 8);
        }
        let tag = Tag::used(size, size - HEADER_SIZE - len, align_log2).with_prev_free(gap > 0);
        self.set_tag(off, tag);
        // The commit point when an alignment gap is split off: until this store the found
        // block's tag still spans everything written above, so a walk (and a rebuild after a
        // crash) sees one free block.
        if gap > 0 {
            self.write_free(found, gap)?;
        }
        self.account(size as i64, 1);
        self.done(Some(Carved { offset: off, size }))
    }

    /// Frees the used block at `off`, merging it with free neighbours. Returns its size.
    ///
    /// The store of the merged block's tag is the commit point: before it a heap walk sees
    /// the old blocks, after it one free block; swallowed headers are erased only after it.
    pub(crate) fn free(&self, off: u64) -> Result<u64> {
        self.free_merging(off).map(|(freed, _, _)| freed)
    }

    /// As [`Core::free`]; returns the freed block's size, and the offset and size of the free
    /// block it became part of.
    pub(crate) fn free_merging(&self, off: u64) -> Result<(u64, u64, u64)> {
        let t = self.block_at(off)?;
        if t.is_free() {
            return Err(Error::corrupt("double free", off));
        }
        if t.is_quarantine() {
            return Err(Error::corrupt("freeing a quarantined range", off));
        }
        let freed = t.size();
        self.zero_words(off + HDR_GEN, (HEADER_SIZE - HDR_GEN) / 8);
        self.account(-(freed as i64), -1);
        let (mut start, mut size) = (off, freed);
        let next = off + size;
        let nt = self.tag_at(next);
        let merged_next = nt.is_free();
        if merged_next {
            self.free_at(next)?;
            self.remove(next, nt.size())?;
            size += nt.size();
        }
        if t.prev_free() {
            let p = self.prev_free_block(off)?;
            let psize = self.tag_at(p).size();
            self.remove(p, psize)?;
            start = p;
            size += psize;
        }
        self.write_free(start, size)?;
        if merged_next {
            self.erase_header(next);
        }
        if start != off {
            self.erase_header(off);
        }
        self.set_prev_free(start + size, true);
        self.done((freed, start, size))
    }

    /// The free block before `off`, found through its footer and checked.
    fn prev_free_block(&self, off: u64) -> Result<u64> {
        let psize = self.load(off - 8);
        let p = off.checked_sub(psize).filter(|p| *p >= HEAP_START);
        match p {
            Some(p) if self.free_at(p)?.size() == psize => Ok(p),
            _ => Err(Error::corrupt("footer of the previous block is wrong", off - 8)),
        }
    }

    /// Changes the used block at `off` to hold `new_len` bytes without moving it: shrinks it
    /// (returning the tail to the heap) or grows it into a free neighbour. `Ok(false)` when it
    /// cannot grow in place; the heap is then unchanged. The store of the block's own tag is
    /// the commit point. A swallowed free neighbour's header is left as payload bytes: free
    /// headers carry generation 0, which no handle can match.
    pub(crate) fn resize_in_place(&self, off: u64, new_len: u64) -> Result<bool> {
        let t = self.block_at(off)?;
        let Some(need) = block_size(new_len) else {
            return Ok(false);
        };
        let old = t.size();
        let next = off + old;
        let mut nt = self.tag_at(next);
        if nt.is_free() {
            nt = self.free_at(next)?;
        }
        let take_next = if need > old {
            if !nt.is_free() || old + nt.size() < need {
                return Ok(false);
            }
            true
        } else {
            old - need >= MIN_BLOCK && nt.is_free()
        };
        let mut size = old;
        if take_next {
            self.remove(next, nt.size())?;
            size += nt.size();
        }
        let split = size - need >= MIN_BLOCK;
        if split {
            self.write_free(off + need, size - need)?;
        }
        let kept = if split { need } else { size };
        let tag = Tag::used(kept, kept - HEADER_SIZE - new_len, t.align_log2());
        self.set_tag(off, tag.with_prev_free(t.prev_free()));
        self.set_prev_free(off + size, split);
        // After the commit, as `free` does: a swallowed neighbour's header left in the grown
        // payload read as a free block to anyone who had noted its offset (the in-process
        // heap's purge did, and gave the pages of a live block back to the system).
        // Only what lies inside the grown block: a split's new free block may start inside the
        // swallowed header.
        if take_next && off + need > next {
            let words = if split { (off + need - next).min(HEADER_SIZE) / 8 } else { HEADER_SIZE / 8 };
            self.zero_words(next, words);
        }
        self.account(kept as i64 - old as i64, 0);
        self.done(true)
    }

    /// Whether `off` is a free block on its free list (not merely a free-looking header: one
    /// left in a payload is on no list), for the in-process heap's purge of noted blocks.
    pub(crate) fn is_listed_free(&self, off: u64) -> Result<Option<u64>> {
        let Ok(t) = self.free_at(off) else { return Ok(None) };
        let prev = self.load(off + FREE_PREV);
        let linked = match prev {
            0 => {
                let (f, s) = mapping(t.size());
                f < FL_COUNT && self.load(head_at(f, s)) == off
            }
            p => self.free_at(p).is_ok() && self.load(p + FREE_NEXT) == off,
        };
        self.done(linked.then_some(t.size()))
    }

    /// Adds `[old_cap, new_cap)` to the heap (the region must already reach `new_cap`).
    pub(crate) fn extend(&mut self, new_cap: u64) -> Result<()> {
        let old_end = self.sentinel()?;
        let new_end = new_cap - SENTINEL_SIZE;
        if new_cap > self.mem.limit() || new_end <= old_end {
            return Err(Error::corrupt("growth target out of range", SB_CAPACITY));
        }
        // The journal: from the capacity's store to the new free block's, the old sentinel (a
        // zero tag) lies inside the heap; a scan after a crash in between reads it as free
        // space up to the end because this names it, and refuses a zero tag anywhere else.
        self.store(SB_GROW_FROM, old_end + SENTINEL_SIZE);
        self.set_tag(new_end, Tag(FLAG_PREV_FREE));
        let mut start = old_end;
        if self.tag_at(old_end).prev_free() {
            start = self.prev_free_block(old_end)?;
            self.remove(start, self.tag_at(start).size())?;
            self.erase_header(old_end);
        }
        self.set_capacity(new_cap);
        self.write_free(start, new_end - start)?;
        self.store(SB_GROW_FROM, 0);
        self.done(())
    }

    /// Size of the largest free block.
    pub(crate) fn largest_free(&self) -> Result<u64> {
        let fl = self.load(TLSF_FL_BITMAP);
        if fl == 0 {
            return Ok(0);
        }
        let f = u64::from(63 - fl.leading_zeros());
        let sl = if f < FL_COUNT { self.load32(TLSF_SL_BITMAPS + f * 4) } else { 0 };
        if sl == 0 {
            return Err(Error::corrupt("bitmaps disagree", TLSF_SL_BITMAPS));
        }
        let s = u64::from(31 - sl.leading_zeros());
        let mut best = 0;
        let mut cur = self.load(head_at(f, s));
        let mut budget = self.capacity()? / MIN_BLOCK;
        while cur != 0 {
            best = best.max(self.free_at(cur)?.size());
            cur = self.load(cur + FREE_NEXT);
            budget = budget.checked_sub(1).ok_or(Error::corrupt("free list cycle", cur))?;
        }
        self.done(best)
    }

    /// Visits every block in address order, checking that the blocks tile the heap.
    pub(crate) fn walk(&self, mut visit: impl FnMut(BlockInfo) -> Result<()>) -> Result<()> {
        let end = self.sentinel()?;
        let mut off = HEAP_START;
        while off < end {
            let tag = self.block_at(off)?;
            visit(BlockInfo { offset: off, tag })?;
            off += tag.size();
        }
        if off != end || !self.tag_at(end).is_sentinel() {
            return Err(Error::corrupt("blocks do not end at the sentinel", off));
        }
        self.done(())
    }

    /// Rebuilds the free lists, bitmaps, flags, footers and accounting from `blocks` (a
    /// [`Core::scan`] of the heap, or salvage's tiling of it), merging free neighbours. Used
    /// after a process died holding the lock. Quarantined ranges stay used blocks, counted
    /// apart too.
    pub(crate) fn rebuild_from(&self, blocks: &[BlockInfo]) -> Result<()> {
        let end = self.sentinel()?;
        self.r.zero(TLSF_OFFSET, TLSF_END - TLSF_OFFSET)?;
        let (mut used, mut live, mut q_bytes, mut q_blocks) = (0u64, 0u64, 0u64, 0u64);
        let mut run: Option<(u64, u64)> = None;
        let mut prev_free = false;
        let mut ticker = crate::progress::Ticker::new("rebuilding", end);
        for b in blocks {
            ticker.tick(b.offset);
            if b.tag.is_free() {
                run = Some(match run {
                    Some((start, size)) => (start, size + b.tag.size()),
                    None => (b.offset, b.tag.size()),
                });
                continue;
            }
            if let Some((start, size)) = run.take() {
                self.write_free(start, size)?;
                prev_free = true;
            }
            if b.tag.is_quarantine() {
                self.rewrite_tag(b.offset, b.tag);
                q_bytes += b.tag.size();
                q_blocks += 1;
            }
            self.set_prev_free(b.offset, prev_free);
            prev_free = false;
            used += b.tag.size();
            live += 1;
        }
        if let Some((start, size)) = run {
            self.write_free(start, size)?;
            prev_free = true;
        }
        self.set_tag(end, Tag(0).with_prev_free(prev_free));
        ticker.finish();
        self.store(SB_USED_BYTES, used);
        self.store(SB_LIVE_BLOCKS, live);
        self.store(SB_QUARANTINE_BYTES, q_bytes);
        self.store(SB_QUARANTINE_BLOCKS, q_blocks);
        self.store(SB_GROW_FROM, 0);
        self.done(())
    }

    /// [`Core::scan`], then [`Core::rebuild_from`] (tests: recovery plans in between).
    #[cfg(test)]
    pub(crate) fn rebuild(&self) -> Result<()> {
        let blocks = self.scan()?;
        self.rebuild_from(&blocks)
    }

    /// Salvage's repair of the tag of the used block at `off` (a page given back its flag, a
    /// block given back the length a damaged size took, a quarantine bit a flip set).
    pub(crate) fn retag(&self, off: u64, tag: Tag) -> Result<()> {
        self.rewrite_tag(off, tag);
        self.done(())
    }

    /// Writes `tag` at `off`, keeping the `PREV_FREE` flag there. A page's and a quarantined
    /// range's other header words are zeroed, as they always are (nothing names either by
    /// them); a quarantined range's bytes after its header stay as they are.
    fn rewrite_tag(&self, off: u64, tag: Tag) {
        let keep = self.tag_at(off).0 & FLAG_PREV_FREE;
        self.set_tag(off, Tag(tag.0 | keep));
        if tag.is_page() || tag.is_quarantine() {
            self.zero_words(off + HDR_GEN, (HEADER_SIZE - HDR_GEN) / 8);
        }
    }
}

/// Counts an out-of-range access at `off` for this thread's cores.
#[cold]
fn fault(off: u64) {
    FAULTS.with(|f| f.set((f.get().0.wrapping_add(1), off)));
}

/// Bytes to skip from `payload` so that the payload is aligned to `align` and, when anything
/// is skipped, the skipped part can stand as a free block of its own.
fn aligned_gap(payload: u64, align: u64) -> u64 {
    let mut gap = payload.next_multiple_of(align) - payload;
    while gap != 0 && gap < MIN_BLOCK {
        gap += align;
    }
    gap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_is_monotonic_and_search_rounds_up() {
        let mut last = (0, 0);
        let top = if cfg!(miri) { 1 << 13 } else { 1 << 20 };
        for size in (MIN_BLOCK..top).step_by(16) {
            let m = mapping(size);
            assert!(m >= last, "{size}");
            last = m;
            let (f, s) = mapping_search(size).unwrap();
            // every block on the searched list is at least `size`
            let lower = if f == 0 { s * GRANULE } else { (SL_COUNT + s) << (f + 7 - u64::from(SL_LOG)) };
            assert!(lower >= size, "size {size} list ({f},{s}) starts at {lower}");
        }
    }

    #[test]
    fn aligned_gap_leaves_room_for_a_free_block() {
        for align in [32u64, 64, 128, 4096] {
            for p in (HEAP_START + HEADER_SIZE..HEAP_START + 4096).step_by(16) {
                let g = aligned_gap(p, align);
                assert_eq!((p + g) % align, 0);
                assert!(g == 0 || g >= MIN_BLOCK);
                assert!(g < MIN_BLOCK + align);
            }
        }
    }
}
