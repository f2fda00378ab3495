//! Per-thread caches of blocks: allocation and release without the store lock.
//!
//! A block whose last reference goes is *parked* instead of freed when it is at most
//! [`CLASS_LIMIT`] bytes with its header and default-aligned: it stays a used block in the
//! core, its reference word keeps the owner (this process) with a count of zero, and its offset
//! and size go onto a stack of its size class in the releasing thread's cache. Classes are exact
//! up to [`EXACT_LIMIT`] bytes and an eighth of a power of two apart above. The next
//! allocation of that class on the thread pops it, writes a new generation, and publishes the
//! fresh reference word last (the length and check word follow when the block is published:
//! `Heap::settle`, which also gives back what a class's bound has beyond the length when the
//! tag's slack cannot say it). Only refilling an empty stack (carving a batch of blocks) and
//! spilling a full one take the store lock; a refill first frees one parked block of a larger
//! class, so a smaller request finds the hole a released block left (SPEC's "freed space is
//! reused"). How much a cache keeps depends on whether other processes share the heap
//! ([`Budget`]).
//!
//! Slots of spans (`core/span.rs`) park the same way on stacks of their own, one per slot
//! size, after the blocks' classes: a parked slot's reference word is in its span's table, and
//! a slot request finds a parked slot of a larger size before a refill takes new ones from the
//! spans (the hole rule among slots).
//!
//! A released block too large for a stack is parked the same way on a short *deferred* list,
//! and freed the next time the thread takes the lock for anything (`Heap::lock`), or with the
//! rest of the list when the list is full: a thread that allocates and frees large blocks takes
//! the lock once per allocation instead of once per allocation and once per release, and one
//! that only releases takes it once per batch. The thread's own next allocation takes the
//! lock, so the space is free again before it searches.
//!
//! Why this keeps recovery exact (ARCHITECTURE.md, "Block caches"):
//! - a parked block has count 0 and a living owner, so resolving a handle to it fails
//!   (count 0 refuses a reference) and recovery keeps it; when the owner dies, recovery drops
//!   the owner and frees it with the rest of the dead process's blocks;
//! - a block handed out from a cache is *lent* (`block.rs`, `MemoryBlock`'s `at`): its word
//!   stays parked, so the same holds for it until its `MemoryBlock` counts itself in the header
//!   (before any second reference can exist); it keeps its old generation until it is
//!   published, when it gets one never issued before (under the lock, `Heap::settle_locked`); a
//!   handle resolves only to a published block (a lent one is not) and re-reads the generation
//!   after its compare-and-swap (`Heap::acquire_locked`), which catches a block lent and
//!   published again under it;
//! - each cache counts its parked blocks and bytes in a cell of a per-process table in the
//!   store (the slot's `SLOT_CACHES`), written only by the cache's thread, so `stats` of any
//!   process can leave parked blocks out without a lock.
//!
//! The stacks themselves are in process memory: nothing a peer writes can steer them. (The
//! cell's byte count, the cache's only one, bounds the stacks' budget: a peer writing it could
//! make the cache keep fewer or more blocks within its fixed stacks, nothing else.)

use std::cell::UnsafeCell;
use std::sync::{Arc, Mutex};

use crate::engine::core::span::{is_slot, slot_class};
use crate::engine::core::tlsf::block_size;
use crate::engine::heap::family::Lives;
use crate::engine::heap::{Guard, Heap};
use crate::error::Result;
use crate::format::*;
use crate::sync::{AtomicU64, AtomicU8, Ordering};

mod claims;
#[cfg(all(loom, test))]
pub(crate) use claims::release_thread_claims;
pub(crate) mod exchange;

/// Largest block size (header included) with a class of its own per granule.
const EXACT_LIMIT: u64 = 640;
const EXACT_CLASSES: usize = (EXACT_LIMIT / GRANULE) as usize + 1;
/// Largest block size (header included) that is cached. Between [`EXACT_LIMIT`] and this, a
/// class per eighth of a power of two: class bounds `(8 + sub) << (lg - 3)`, counted by `g`
/// from 512 (`lg` 9) on; 640 is `g` 2, so the geometric classes start at `g` 3.
pub(crate) const CLASS_LIMIT: u64 = 128 << 10;
const FIRST_G: usize = 3;
const LAST_G: usize = 64;
const CLASSES: usize = EXACT_CLASSES + LAST_G - FIRST_G + 1;
/// Stacks of slots (`core/span.rs`) follow the blocks' classes, one per slot size.
const SLOT_BASE: usize = CLASSES;
/// Stacks in all.
const STACKS: usize = CLASSES + SLOT_CLASSES as usize;
/// Most blocks a stack keeps; a full stack spills half of them to the core.
const STACK: usize = 64;
/// Bytes a refill carves at most (and at least one block).
const REFILL_BYTES: u64 = 8 << 10;
/// Blocks the deferred list holds at most,
const DEFERRED: usize = 16;
/// each at most this large (larger ones are freed at once),
const DEFER_BLOCK_MAX: u64 = 256 << 10;
/// and this many bytes together.
const DEFER_BYTES: u64 = 1 << 20;

/// The block size of class `c`: every block on its stack is at least this large (for a slot
/// stack, the slot size).
const fn bound(c: usize) -> u64 {
    if c >= SLOT_BASE {
        return (c - SLOT_BASE + 1) as u64 * GRANULE;
    }
    if c < EXACT_CLASSES {
        return c as u64 * GRANULE;
    }
    let g = c - EXACT_CLASSES + FIRST_G;
    (8 + (g % 8) as u64) << (g / 8 + 6)
}

/// The geometric class number `g` whose range holds `size` (> 512).
#[inline]
const fn geometric(size: u64) -> usize {
    let lg = 63 - size.leading_zeros();
    (lg as usize - 9) * 8 + ((size >> (lg - 3)) & 7) as usize
}

/// The class whose blocks can serve a block of `size` bytes (the smallest bound at least
/// `size`), if that size is cached. An allocation takes a block of the class's bound.
#[inline]
fn class_for_take(size: u64) -> Option<usize> {
    if size <= EXACT_LIMIT {
        return Some((size / GRANULE) as usize);
    }
    let g = geometric(size - 1) + 1;
    (g <= LAST_G).then(|| g - FIRST_G + EXACT_CLASSES)
}

/// The stack of slots of `size` bytes.
#[inline]
fn slot_stack(size: u64) -> usize {
    SLOT_BASE + (size / GRANULE) as usize - 1
}

/// The stack a released block of `size` bytes parks on (its class: the largest bound at most
/// `size`), or with `slot` a slot of `size` bytes. Slots are at most 64 bytes: for them, and for
/// blocks up to [`EXACT_LIMIT`], the stack is picked without a branch on which it is (blocks and
/// slots come mixed, at random, and a branch would be mispredicted).
#[inline]
fn stack_for_put(size: u64, slot: bool) -> Option<usize> {
    if size <= EXACT_LIMIT {
        return Some((size / GRANULE) as usize + usize::from(slot) * (SLOT_BASE - 1));
    }
    geometric_class_for_put(size)
}

/// [`stack_for_put`] above [`EXACT_LIMIT`] (out of line: the small path inlines into drops).
#[inline(never)]
fn geometric_class_for_put(size: u64) -> Option<usize> {
    match geometric(size) {
        g if g < FIRST_G => Some(EXACT_CLASSES - 1),
        g if g <= LAST_G => Some(g - FIRST_G + EXACT_CLASSES),
        _ => None,
    }
}

/// How much a cache keeps parked: what a thread holds back from the others (and, in a store,
/// from other processes) in exchange for allocating and releasing without the lock.
pub(crate) struct Budget {
    /// Bytes one cache keeps parked at most; beyond, released blocks are freed at once.
    bytes: u64,
    /// How many blocks stack `c` keeps at most.
    limits: [u8; STACKS],
}

impl Budget {
    /// Stacks of `stack_bytes` (at least `min` blocks, at most [`STACK`]), `bytes` in all.
    const fn new(bytes: u64, stack_bytes: u64, min: u64) -> Budget {
        let mut limits = [0u8; STACKS];
        let mut c = 1;
        while c < STACKS {
            let n = stack_bytes / bound(c);
            limits[c] = if n < min {
                min as u8
            } else if n > STACK as u64 {
                STACK as u8
            } else {
                n as u8
            };
            c += 1;
        }
        Budget { bytes, limits }
    }
}

/// A store's caches: several processes share its space, so each thread keeps little.
pub(crate) static SHARED: Budget = Budget::new(2 << 20, 32 << 10, 4);
/// An in-process heap's caches keep more (as mimalloc's thread-local pages do), up to a
/// sixteenth of the heap's maximum size.
pub(crate) static PRIVATE: Budget = PRIVATE_BUDGET;
/// [`PRIVATE`] as a constant, which [`STARTS`] reads (a constant may not read a static before
/// Rust 1.83, and the crate builds with older ones: README, "Minimum Rust version").
const PRIVATE_BUDGET: Budget = Budget::new(16 << 20, 128 << 10, 32);

/// Where stack `c` starts in [`State::slots`].
const STARTS: [u16; STACKS + 1] = {
    let mut t = [0u16; STACKS + 1];
    let mut c = 0;
    while c < STACKS {
        t[c + 1] = t[c] + PRIVATE_BUDGET.limits[c] as u16;
        c += 1;
    }
    t
};
const SLOTS: usize = STARTS[STACKS] as usize;
// A cache's stacks stay under 64 KiB of process memory.
const _: () = assert!(SLOTS * 8 <= 64 << 10);

/// A thread's stacks of parked blocks for one heap. Touched only by the thread that has
/// claimed it, or by the heap's drop (when no thread can reach the heap any more).
pub(crate) struct ThreadCache {
    state: UnsafeCell<State>,
    /// Store offset of this cache's counter cell: `u64` parked bytes, then `u64` parked blocks,
    /// stacks and deferred list together ([`ThreadCache::count`]).
    cell: u64,
    /// Bytes the cache keeps parked at most, and blocks per stack (its heap's [`Budget`]).
    bytes_max: u64,
    limits: &'static [u8; STACKS],
    /// 1 while a thread has claimed the cache, 0 once that thread exited.
    claimed: AtomicU8,
    /// 1 once the heap was dropped: the cache is empty and never used again.
    gone: AtomicU8,
    /// Families of owner references begun minus ended on the claiming thread (wrapping; only
    /// that thread writes it, with plain stores; `family.rs`).
    families: AtomicU64,
    /// The heap's users and families; outlives the heap while this cache lives.
    lives: Arc<Lives>,
    /// The thread's slabs of small raw blocks (in-process heaps: `slab/`).
    pub(crate) slabs: crate::engine::heap::slab::Local,
}

// SAFETY: `state` is reached only by the one thread that claimed the cache (the claim is an
// acquire/release handover through `claimed`) or by `Heap::drop`, which runs when no thread
// holds the heap; the remaining fields are atomics or immutable.
unsafe impl Sync for ThreadCache {}
// SAFETY: as above; nothing in it is tied to the creating thread.
unsafe impl Send for ThreadCache {}

struct State {
    /// The stacks, one after the other: stack `c` is `slots[STARTS[c]..STARTS[c + 1]]`,
    /// its first `depth[c]` entries in use (oldest first), each a [`Parked`] block.
    /// Boxed on its own: made on the stack (as a field of the cache being built) it took up to
    /// 64 KiB of it, several times over in a debug build, and overflowed the small stack of a
    /// thread at its first allocation.
    slots: Box<[Parked; SLOTS]>,
    depth: [u8; STACKS],
    /// Parked blocks too large for a stack, freed when the thread next takes the lock.
    deferred: [u64; DEFERRED],
    n_deferred: u8,
    deferred_bytes: u64,
}

impl State {
    /// Stack `c`, the whole of its room.
    #[inline]
    fn stack(&mut self, c: usize) -> &mut [Parked] {
        &mut self.slots[usize::from(STARTS[c])..usize::from(STARTS[c + 1])]
    }

    /// Stack `c`'s entries in use.
    fn parked(&mut self, c: usize) -> &mut [Parked] {
        let d = usize::from(self.depth[c]);
        &mut self.stack(c)[..d]
    }

    /// Takes the block parked last off stack `c`, which has one.
    #[inline]
    fn pop(&mut self, c: usize) -> Parked {
        self.depth[c] -= 1;
        self.slots[usize::from(STARTS[c]) + usize::from(self.depth[c])]
    }

    /// Puts the block at `off` (`size` bytes) on stack `c`, which has room.
    #[inline]
    fn push(&mut self, c: usize, off: u64, size: u64) {
        self.slots[usize::from(STARTS[c]) + usize::from(self.depth[c])] = Parked::new(off, size);
        self.depth[c] += 1;
    }

    /// Whether the stacks keep no block.
    fn stacks_empty(&self) -> bool {
        self.depth.iter().all(|&d| d == 0)
    }
}

/// A parked block on a stack: its offset (below 2^48, like every store offset) and its size in
/// granules above it. The size is known when the block is parked, and keeping it here spares
/// the allocation that lends the block a load of its header, whose line has long left the
/// processor's cache by then (and which another process could change: this copy it cannot).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Parked(u64);

impl Parked {
    #[inline]
    fn new(off: u64, size: u64) -> Parked {
        debug_assert!(off >> 48 == 0 && size / GRANULE <= 0xffff && size % GRANULE == 0);
        Parked(off | (size / GRANULE) << 48)
    }
    #[inline]
    fn off(self) -> u64 {
        self.0 & ((1 << 48) - 1)
    }
    #[inline]
    fn size(self) -> u64 {
        (self.0 >> 48) * GRANULE
    }
}

/// The heap's side: every cache made for it and the table of their counter cells.
#[derive(Default)]
pub(crate) struct Caches {
    all: Mutex<Vec<Arc<ThreadCache>>>,
    /// Header offset of the counter table block, 0 before the first cache. Set once, under
    /// `all`'s lock; read without it (`stats` holds the store lock, which the claiming thread
    /// may be waiting for while it holds `all`'s).
    table: AtomicU64,
}

/// Caches per process and heap (one counter cell each); further threads take the lock path.
pub(crate) const CELLS: u64 = 64;
const CELL_SIZE: u64 = 64;

impl ThreadCache {
    #[allow(clippy::mut_from_ref)]
    #[inline]
    fn state(&self) -> &mut State {
        // SAFETY: only the claiming thread (or the heap's drop, exclusively) calls this, and
        // no caller keeps the reference across another call (see the `Sync` impl).
        unsafe { &mut *self.state.get() }
    }

    /// Adds `delta` (wrapping) to the thread's family count: a load and a release store, no
    /// read-modify-write (only this thread writes it).
    #[inline]
    pub(crate) fn count_family(&self, delta: u64) {
        let n = self.families.load(Ordering::Relaxed);
        self.families.store(n.wrapping_add(delta), Ordering::Release);
    }

    /// Counts the end of a family on this thread, then checks whether its heap was orphaned
    /// (`family.rs`). The heap may be gone after this: the cache is kept alive by this
    /// thread's claim (`CLAIMS`), not only by the heap.
    #[inline]
    pub(crate) fn end_family(&self) {
        self.count_family(1u64.wrapping_neg());
        self.lives.after_ending();
    }

    /// The cell's counters: bytes and blocks parked on the stacks and the deferred list. They
    /// are the cache's only count of its parked bytes, written by its thread alone (plain
    /// stores) and read by `stats` in any process: one store each per parked or lent block.
    /// The bytes on the stacks (the cell's less the deferred list's) bound the stacks'
    /// budget; a peer that wrote the cell against the protocol could only make the cache
    /// keep fewer or more blocks within its fixed stacks.
    #[inline]
    fn counters<'h>(&self, heap: &'h Heap) -> (&'h AtomicU64, &'h AtomicU64) {
        // SAFETY: `claim_cache` range-checked both words of the cell when it made the cache.
        unsafe { (heap.region.word_unchecked(self.cell), heap.region.word_unchecked(self.cell + 8)) }
    }

    /// Adds `bytes` and `blocks` (wrapping: a negative change is a `wrapping_neg`) to the
    /// cell's counters.
    #[inline]
    fn count(&self, heap: &Heap, bytes: u64, blocks: u64) {
        let (b, n) = self.counters(heap);
        b.store(b.load(Ordering::Relaxed).wrapping_add(bytes), Ordering::Relaxed);
        n.store(n.load(Ordering::Relaxed).wrapping_add(blocks), Ordering::Relaxed);
    }

    /// Pops a parked block of the class `len` needs, refilling the stack under the lock when it
    /// is empty. Returns its offset and size (the class's bound or a little more: up to an
    /// eighth more than `len` needs for a block above [`EXACT_LIMIT`]; `Heap::settle` gives the
    /// excess back if the block is published). Its header is not touched: the block stays
    /// parked there (owned by this process, count 0, unpublished) while the caller lends it to
    /// a `MemoryBlock` (`block.rs`, `at`) or uses it raw (`Heap::alloc_raw`).
    ///
    /// With `slot`, a slot of the size `len` needs (`len` is at most `SLOT_MAX`), or of a
    /// larger size parked here, before a refill makes new ones: the hole rule among slots.
    #[inline(always)]
    pub(crate) fn take(&self, heap: &Heap, len: u64, slot: bool) -> Result<Option<(u64, u64)>> {
        let c = match slot {
            true => slot_stack(slot_class(len).unwrap_or(SLOT_MAX)),
            false => {
                let Some(c) = block_size(len).and_then(class_for_take) else { return Ok(None) };
                c
            }
        };
        let s = self.state();
        let c = match s.depth[c] {
            0 if slot => (c..STACKS).find(|&a| s.depth[a] > 0).unwrap_or(c),
            _ => c,
        };
        self.pop(heap, c)
    }

    /// Pops the block parked last on stack `c`, refilling the stack under the lock first when
    /// it is empty. Returns its offset and size; `None` if the refill found no space.
    #[inline(always)]
    fn pop(&self, heap: &Heap, c: usize) -> Result<Option<(u64, u64)>> {
        let s = self.state();
        if s.depth[c] == 0 {
            self.refill(heap, c)?;
        }
        let s = self.state();
        if s.depth[c] == 0 {
            return Ok(None);
        }
        let p = s.pop(c);
        let (off, got) = (p.off(), p.size());
        self.count(heap, got.wrapping_neg(), 1u64.wrapping_neg());
        Ok(Some((off, got)))
    }

    /// Parks the block at `off` (size `size`, count now zero, owner this process) if its
    /// stack has room or can make some. `false`: the caller frees it the usual way.
    #[inline(always)]
    pub(crate) fn put(&self, heap: &Heap, off: u64, size: u64, slot: bool) -> bool {
        debug_assert_eq!(slot, is_slot(off));
        let Some(c) = stack_for_put(size, slot) else { return false };
        let s = self.state();
        let stacked = self.counters(heap).0.load(Ordering::Relaxed).wrapping_sub(s.deferred_bytes);
        if stacked.wrapping_add(size) > self.bytes_max {
            return false;
        }
        if s.depth[c] >= self.limits[c] {
            return self.spill_and_put(heap, c, off, size);
        }
        self.push(heap, c, off, size);
        true
    }

    /// Makes room on the full stack `c` (under the lock) and puts the block there.
    #[cold]
    fn spill_and_put(&self, heap: &Heap, c: usize, off: u64, size: u64) -> bool {
        if self.spill(heap, c).is_err() {
            return false;
        }
        self.push(heap, c, off, size);
        true
    }

    /// Puts the block at `off` (`size` bytes) on stack `c`, which has room.
    #[inline]
    fn push(&self, heap: &Heap, c: usize, off: u64, size: u64) {
        let s = self.state();
        debug_assert!(!s.parked(c).iter().any(|p| p.off() == off), "parked twice: {off:#x}");
        s.push(c, off, size);
        self.count(heap, size, 1);
    }

    /// Parks the block at `off` (`size` bytes, count now zero, owner this process, too large
    /// for a stack) on the deferred list. `false` when the block is too large for the list or
    /// the list is full: the caller frees the block under the lock, and taking the lock frees
    /// the list first (`Heap::lock`).
    pub(crate) fn defer(&self, heap: &Heap, off: u64, size: u64) -> bool {
        if size > DEFER_BLOCK_MAX {
            return false;
        }
        let s = self.state();
        if usize::from(s.n_deferred) == DEFERRED || s.deferred_bytes + size > DEFER_BYTES {
            // Taking the lock frees the list (`Heap::lock`); the caller frees this block.
            return false;
        }
        debug_assert!(!s.deferred[..usize::from(s.n_deferred)].contains(&off), "deferred twice: {off:#x}");
        s.deferred[usize::from(s.n_deferred)] = off;
        s.n_deferred += 1;
        s.deferred_bytes += size;
        self.count(heap, size, 1);
        true
    }

    /// Frees the blocks on the deferred list (under the lock). A block the core refuses to
    /// free (a corrupt store) is dropped from the list all the same: leaked, never reused.
    pub(crate) fn free_deferred(&self, heap: &Heap, g: &Guard<'_>) {
        let s = self.state();
        if s.n_deferred == 0 {
            return;
        }
        for &off in &s.deferred[..usize::from(s.n_deferred)] {
            let _ = heap.free_owned_locked(g, off);
        }
        self.count(heap, s.deferred_bytes.wrapping_neg(), u64::from(s.n_deferred).wrapping_neg());
        (s.n_deferred, s.deferred_bytes) = (0, 0);
    }

    /// Fills stack `c` from the store's exchange (`exchange.rs`: what other caches spilled,
    /// without the lock) or else carves up to [`REFILL_BYTES`] of blocks for it.
    fn refill(&self, heap: &Heap, c: usize) -> Result<()> {
        if exchange::covers(heap, c) {
            let mut got = [(0u64, 0u64); STACK / 2];
            let want = (usize::from(self.limits[c]) / 2).max(1);
            let n = exchange::take(heap, c, &mut got[..want], true);
            for &(off, size) in &got[..n] {
                self.push(heap, c, off, size);
            }
            if n > 0 {
                return Ok(());
            }
        }
        self.carve_for(heap, c)
    }

    /// Carves up to [`REFILL_BYTES`] of blocks for stack `c` and reserves generations.
    fn carve_for(&self, heap: &Heap, c: usize) -> Result<()> {
        let g = heap.lock()?;
        self.free_one_above(heap, &g, c);
        let size = bound(c);
        let want = (REFILL_BYTES / size).clamp(1, u64::from(self.limits[c]) / 2) as usize;
        let mut carved = [(0u64, 0u64); STACK / 2];
        let mut n = 0;
        if c >= SLOT_BASE {
            n = heap.carve_parked_slots(&g, size, &mut carved[..want])?;
        }
        while n < want && c < SLOT_BASE {
            let room = heap.region.load(SB_CAPACITY)?.saturating_sub(heap.region.load(SB_USED_BYTES)?);
            if n > 0 && room < 2 * REFILL_BYTES {
                break; // leave the last free space of the store to whoever needs it
            }
            let Some(block) = heap.carve_parked(&g, size - HEADER_SIZE)? else { break };
            carved[n] = block;
            n += 1;
        }
        // The first carved (lowest, where the best fit was) is handed out first. A carved
        // block can be up to 48 bytes larger than asked (the core does not split off less than
        // a minimal block); it serves this class all the same, and returns to the stack of its
        // own size when it is released.
        for &(off, got) in carved[..n].iter().rev() {
            if self.state().depth[c] < self.limits[c] {
                self.push(heap, c, off, got);
            } else {
                heap.free_owned_locked(&g, off)?;
            }
        }
        Ok(())
    }

    /// Frees the block parked last on the stack of the largest class above `c` that has one
    /// (under the lock), before a refill for `c` carves: the space a released larger block
    /// held is found by the carving (SPEC's "freed space is reused": allocate three blocks,
    /// release the middle one, allocate a smaller one, and it comes from the hole), and a
    /// thread whose sizes drift downwards does not keep its larger blocks parked for good.
    /// The largest, not the nearest: a stack that loses a block misses sooner, and its refill
    /// would take one from the stack above it, and so on up (BENCHMARKS.md).
    fn free_one_above(&self, heap: &Heap, g: &Guard<'_>, c: usize) {
        let s = self.state();
        let Some(above) = (c + 1..CLASSES).rev().find(|&a| s.depth[a] > 0) else { return };
        let p = s.pop(above);
        self.free_parked(heap, g, p);
    }

    /// Frees a block just taken off a stack and counts it gone. A block the core refuses to
    /// free (a corrupt store) is counted gone all the same: leaked, never lent again.
    fn free_parked(&self, heap: &Heap, g: &Guard<'_>, p: Parked) {
        let _ = heap.free_owned_locked(g, p.off());
        self.count(heap, p.size().wrapping_neg(), 1u64.wrapping_neg());
    }

    /// Gives the older half of stack `c` to the store's exchange (`exchange.rs`), or frees it
    /// (under the lock) as far as the exchange takes none.
    fn spill(&self, heap: &Heap, c: usize) -> Result<()> {
        let half = usize::from(self.state().depth[c]) / 2;
        let (given, bytes) = match exchange::covers(heap, c) {
            true => exchange::give(heap, c, &self.state().stack(c)[..half]),
            false => (0, 0),
        };
        if given > 0 {
            self.count(heap, bytes.wrapping_neg(), (given as u64).wrapping_neg());
        }
        // The lock is taken before anything is freed: if it fails, only what the exchange
        // took has left the stack.
        let freed = match given < half {
            true => self.free_older(heap, c, given, half),
            false => Ok(()),
        };
        let gone = if freed.is_ok() { half } else { given };
        let s = self.state();
        let d = usize::from(s.depth[c]);
        s.stack(c).copy_within(gone..d, 0);
        s.depth[c] -= gone as u8;
        freed
    }

    /// Frees the entries `from..to` of stack `c` (under the lock).
    fn free_older(&self, heap: &Heap, c: usize, from: usize, to: usize) -> Result<()> {
        let g = heap.lock()?;
        if c < SLOT_BASE {
            for i in from..to {
                self.free_parked(heap, &g, self.state().stack(c)[i]);
            }
            return Ok(());
        }
        // Slots, a run of one span at a time. A corrupt store's slot stays for recovery, as in
        // `free_parked`, and is counted gone.
        let mut ids = [0u64; STACK];
        let mut bytes = 0;
        for (i, p) in self.state().stack(c)[from..to].iter().enumerate() {
            ids[i] = p.off();
            bytes += p.size();
        }
        let _ = heap.free_slots_locked(&g, &ids[..to - from]);
        self.count(heap, bytes.wrapping_neg(), ((to - from) as u64).wrapping_neg());
        Ok(())
    }

    /// The claiming thread is exiting: frees what the cache keeps parked (under the lock), so
    /// that an exited thread holds no space back from the others. Nothing to do if the heap is
    /// gone (it freed every cache's blocks) or the cache keeps nothing.
    fn give_back_on_exit(&self) {
        // The strong count keeps the heap (and its drop, which drains every cache) away while
        // this runs; if it is the last, the heap is dropped here, after.
        let Some(heap) = self.lives.heap() else { return };
        if self.gone.load(Ordering::Acquire) != 0 {
            return;
        }
        if let Some(slabs) = &heap.slabs {
            self.slabs.tidy(&heap, slabs);
            // What this thread freed of exited threads' blocks since the last sweep would
            // otherwise wait for the next 4,096 such frees, which may never come (the last
            // consumers of a program exit after freeing what the producers made).
            heap.tidy_orphans();
        }
        let s = self.state();
        if s.stacks_empty() && s.n_deferred == 0 {
            return;
        }
        if let Ok(g) = heap.lock() {
            self.drain(&heap, &g);
        };
    }

    /// After its thread gave this cache back (`claimed` cleared): if at most one thread still
    /// has a cache of the heap (a program's workers are done), what waits to be given back to
    /// the system (empty slabs kept for reuse, noted free runs) goes now, since the thread left
    /// may make no call that would look at it (a program that ends, or idles); at most once a
    /// second (`Heap::purge_on_leaving`). Threads leaving
    /// at once each clear their flag before they count, so the last to count sees the others
    /// gone, and what they gave back is in the pools by then.
    pub(crate) fn purge_if_last(&self) {
        let Some(heap) = self.lives.heap() else { return };
        if self.gone.load(Ordering::Acquire) != 0 {
            return;
        }
        let others = heap.caches().iter().filter(|c| c.claimed.load(Ordering::SeqCst) != 0).count();
        if others > 1 {
            return;
        }
        let Ok(g) = heap.lock() else { return };
        if heap.purge_on_leaving(&g) {
            if let Some(slabs) = &heap.slabs {
                slabs.purge_pools();
            }
        }
    }

    /// Frees every parked block (under the lock): the heap is going away, or the store is full.
    /// Returns whether there was any.
    fn drain(&self, heap: &Heap, g: &Guard<'_>) -> bool {
        self.free_deferred(heap, g);
        let s = self.state();
        let had = !s.stacks_empty();
        for c in 0..STACKS {
            for p in s.parked(c) {
                // An error means a corrupt store; the block stays for recovery.
                let _ = heap.free_owned_locked(g, p.off());
            }
            s.depth[c] = 0;
        }
        let (bytes, blocks) = self.counters(heap);
        bytes.store(0, Ordering::Relaxed);
        blocks.store(0, Ordering::Relaxed);
        had
    }
}

impl Heap {
    /// Allocates the zeroed counter table and names it in our registry slot. Default
    /// alignment, the cells aligned inside it ([`cells_of`]): a table allocated with the
    /// cells' alignment leaves a free sliver before it at the start of a fresh heap.
    fn make_cell_table(&self, grow: bool) -> Result<u64> {
        let g = self.lock()?;
        let len = CELLS * CELL_SIZE + CELL_SIZE - GRANULE;
        let table = match grow {
            true => self.allocate_locked(&g, len, 4)?,
            false => self.allocate_without_growth(&g, len)?,
        };
        self.region.zero(table + HEADER_SIZE, len)?;
        if let Some(slot) = self.slot() {
            self.region.store(slot_offset(u64::from(slot)) + SLOT_CACHES, table)?;
        }
        Ok(table)
    }

    /// Makes this process's counter table now if it has none: when a store is created (or an
    /// in-process heap made), so that in the fresh heap it sits at the bottom, before any
    /// block, rather than wherever the heap's used part ends when the first thread cache is
    /// made, where it would split the free space around it for as long as the process is
    /// attached. A store
    /// with no room for it is no error, and does not grow for it (a store made at its minimum
    /// size stays so): the first cache makes it later, growing the store if it must.
    pub(crate) fn prepare_caches(&self) {
        let _all = self.caches();
        if self.caches.table.load(Ordering::Acquire) == 0 {
            if let Ok(table) = self.make_cell_table(false) {
                self.caches.table.store(table, Ordering::Release);
            }
        }
    }

    /// The header offset of this heap's own counter table, 0 before the first cache (an
    /// in-process heap names it nowhere else; a store's registry slot names its process's).
    pub(crate) fn own_counter_table(&self) -> u64 {
        self.caches.table.load(Ordering::Acquire)
    }

    /// Bytes and blocks that the caches counting in the counter table `table` keep parked, as
    /// their cells say (read without the lock: a value being changed is off by one block at
    /// most; read from the store, so only a report, never trusted further).
    pub(crate) fn parked_in(&self, table: u64) -> Result<(u64, u64)> {
        // `table` was read from the store: the cells' offsets are checked before one is formed.
        let first = table
            .checked_add(HEADER_SIZE)
            .and_then(|p| p.checked_next_multiple_of(CELL_SIZE))
            .filter(|f| f.checked_add(CELLS * CELL_SIZE).is_some())
            .ok_or(crate::error::Error::Corrupt {
                what: "cache counter table out of range",
                offset: table,
            })?;
        let (mut bytes, mut blocks) = (0u64, 0u64);
        for i in 0..CELLS {
            let cell = first + i * CELL_SIZE;
            bytes = bytes.wrapping_add(self.region.load(cell)?);
            blocks = blocks.wrapping_add(self.region.load(cell + 8)?);
        }
        Ok((bytes, blocks))
    }
}

/// Whether a used block of `size` bytes can be a counter table (it holds every cell).
pub(crate) fn can_be_counter_table(size: u64) -> bool {
    size >= HEADER_SIZE + CELLS * CELL_SIZE
}

/// The first cell of the counter table whose header is at `table`: the first 64-byte
/// boundary in its payload (`docs/format.md`, "Cache counter table").
fn cells_of(table: u64) -> u64 {
    (table + HEADER_SIZE).next_multiple_of(CELL_SIZE)
}

/// Frees every cache's parked blocks and the counter table: the heap is being dropped (no
/// thread can reach it any more), under the lock.
pub(crate) fn drain(heap: &Heap, g: &Guard<'_>) {
    for c in std::mem::take(&mut *heap.caches()) {
        let _ = c.drain(heap, g);
        c.gone.store(1, Ordering::Release);
    }
    let table = heap.caches.table.swap(0, Ordering::AcqRel);
    if table != 0 {
        if let Some(slot) = heap.slot() {
            let _ = heap.region.store(slot_offset(u64::from(slot)) + SLOT_CACHES, 0);
        }
        let _ = heap.free_owned_locked(g, table);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_every_cached_size() {
        let mut last = 0;
        for size in (GRANULE..=CLASS_LIMIT).step_by(GRANULE as usize) {
            let take = class_for_take(size).unwrap();
            assert!(bound(take) >= size, "{size}: a taken block is large enough");
            assert!(take >= last, "{size}: classes grow with the size");
            last = take;
            if size > EXACT_LIMIT {
                // At most an eighth larger, so at most an eighth of any block is slack.
                assert!((bound(take) - size) * 8 <= size, "{size} takes {}", bound(take));
            } else {
                assert_eq!(bound(take), size, "exact below the limit");
            }
            let put = stack_for_put(size, false).unwrap();
            assert!(bound(put) <= size, "{size}: a parked block serves its whole class");
            assert!(put == take || put + 1 == take || size < bound(EXACT_CLASSES), "{size}");
        }
        assert_eq!(bound(CLASSES - 1), CLASS_LIMIT);
        assert_eq!(class_for_take(CLASS_LIMIT + GRANULE), None);
        for size in (1..=SLOT_CLASSES).map(|k| k * GRANULE) {
            let c = slot_stack(size);
            assert_eq!(stack_for_put(size, true), Some(c), "a slot parks on its size's stack");
            assert!((SLOT_BASE..STACKS).contains(&c) && bound(c) == size);
        }
        // Up to the next class's bound, a released block parks in the last class.
        assert_eq!(stack_for_put(CLASS_LIMIT / 8 * 9 - GRANULE, false), Some(CLASSES - 1));
        assert_eq!(stack_for_put(CLASS_LIMIT / 8 * 9, false), None);
        // A carved block up to 48 bytes over its bound parks in the class it was carved for.
        for c in EXACT_CLASSES..CLASSES {
            assert_eq!(stack_for_put(bound(c) + MIN_BLOCK - GRANULE, false), Some(c));
        }
    }

    #[test]
    fn the_exchange_covers_blocks_of_4_kib() {
        let c = block_size(4096).and_then(class_for_take).unwrap();
        assert!(c < EXCHANGE_CLASSES as usize && bound(c) >= 4096 + HEADER_SIZE);
        assert_eq!(bound(EXCHANGE_CLASSES as usize - 1), 4608);
    }

    #[test]
    fn stacks_fit_their_limits() {
        for budget in [&SHARED, &PRIVATE] {
            assert!((1..STACKS).all(|c| (4..=STACK as u8).contains(&budget.limits[c])));
        }
        assert!((0..STACKS).all(|c| SHARED.limits[c] <= PRIVATE.limits[c]), "room for both");
        assert_eq!(usize::from(STARTS[STACKS]), SLOTS);
    }
}
