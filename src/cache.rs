//! Per-thread caches of small blocks: allocation and release without the store lock.
//!
//! A block whose last reference goes is *parked* instead of freed when it is small (at most
//! [`CLASS_LIMIT`] bytes with its header) and default-aligned: it stays a used block in the
//! core, its reference word keeps the owner (this process) with a count of zero, and its offset
//! goes onto a stack in the releasing thread's cache. The next allocation of the same block
//! size on that thread pops it, writes a new generation, and publishes the fresh reference
//! word last (the length and check word follow when the block is published: `Heap::settle`).
//! Only refilling an empty stack (carving a batch of blocks) and spilling a full one take the
//! store lock.
//!
//! A released block too large for a stack is parked the same way on a short *deferred* list,
//! and freed the next time the thread takes the lock for anything (`Heap::lock`), or with the
//! rest of the list when the list is full: a thread that allocates and frees large blocks takes
//! the lock once per allocation instead of once per allocation and once per release, and one
//! that only releases takes it once per [`DEFERRED`] blocks. The thread's own next allocation
//! takes the lock, so the space is free again before it searches (SPEC's "freed space is
//! reused": a smaller block comes from the hole).
//!
//! Why this keeps recovery exact (ARCHITECTURE.md, "Block caches"):
//! - a parked block has count 0 and a living owner, so resolving a handle to it fails
//!   (count 0 refuses a reference) and recovery keeps it; when the owner dies, recovery drops
//!   the owner and frees it with the rest of the dead process's blocks;
//! - generations come from a range reserved under the lock, so every allocation still gets a
//!   generation never issued before; a handle resolves only to a published block (a reissued
//!   one starts unpublished) and re-reads the generation after its compare-and-swap
//!   (`Heap::acquire_locked`), which catches a block reissued and published again under it;
//! - each cache counts its parked blocks and bytes in a cell of a per-process table in the
//!   store (the slot's `SLOT_CACHES`), written only by the cache's thread, so `stats` of any
//!   process can leave parked blocks out without a lock.
//!
//! The stacks themselves are in process memory: nothing a peer writes can steer them.

use std::cell::{Cell, RefCell, UnsafeCell};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::core::header::rc;
use crate::core::tlsf::block_size;
use crate::error::Result;
use crate::family::Lives;
use crate::format::*;
use crate::heap::{Guard, Heap};
use crate::sync::{AtomicU64, AtomicU8, Ordering};

/// Largest block size (header included) that is cached.
pub(crate) const CLASS_LIMIT: u64 = 640;
const CLASSES: usize = (CLASS_LIMIT / GRANULE) as usize + 1;
/// Most blocks a stack keeps; a full stack spills half of them to the core.
const STACK: usize = 64;
/// Bytes a stack keeps at most (and at least [`MIN_STACK`] blocks).
const STACK_BYTES: u64 = 32 << 10;
const MIN_STACK: u64 = 4;
/// Bytes one cache keeps parked at most; beyond, released blocks are freed at once.
const CACHE_BYTES: u64 = 2 << 20;
/// Bytes a refill carves at most (and at least one block).
const REFILL_BYTES: u64 = 8 << 10;
/// Generations reserved at once.
const GEN_BATCH: u64 = 1 << 12;
/// Blocks the deferred list holds at most,
const DEFERRED: usize = 16;
/// each at most this large (larger ones are freed at once),
const DEFER_BLOCK_MAX: u64 = 256 << 10;
/// and this many bytes together.
const DEFER_BYTES: u64 = 1 << 20;

/// A thread's stacks of parked blocks for one heap. Touched only by the thread that has
/// claimed it, or by the heap's drop (when no thread can reach the heap any more).
pub(crate) struct ThreadCache {
    state: UnsafeCell<State>,
    /// Store offset of this cache's counter cell: `u64` parked bytes, then `u64` parked blocks.
    cell: u64,
    /// 1 while a thread has claimed the cache, 0 once that thread exited.
    claimed: AtomicU8,
    /// 1 once the heap was dropped: the cache is empty and never used again.
    gone: AtomicU8,
    /// Families of owner references begun minus ended on the claiming thread (wrapping; only
    /// that thread writes it, with plain stores; `family.rs`).
    families: AtomicU64,
    /// The heap's users and families; outlives the heap while this cache lives.
    lives: Arc<Lives>,
}

// SAFETY: `state` is reached only by the one thread that claimed the cache (the claim is an
// acquire/release handover through `claimed`) or by `Heap::drop`, which runs when no thread
// holds the heap; the remaining fields are atomics or immutable.
unsafe impl Sync for ThreadCache {}
// SAFETY: as above; nothing in it is tied to the creating thread.
unsafe impl Send for ThreadCache {}

struct State {
    stacks: [[u64; STACK]; CLASSES],
    depth: [u8; CLASSES],
    next_gen: u64,
    gen_end: u64,
    bytes: u64,
    blocks: u64,
    /// Parked blocks too large for a stack, freed when the thread next takes the lock.
    deferred: [u64; DEFERRED],
    n_deferred: u8,
    deferred_bytes: u64,
}

impl State {
    /// Puts the block at `off` (`size` bytes) on stack `c`, which has room.
    #[inline]
    fn push(&mut self, c: usize, off: u64, size: u64) {
        self.stacks[c][usize::from(self.depth[c])] = off;
        self.depth[c] += 1;
        self.bytes += size;
        self.blocks += 1;
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

/// The caches this thread has claimed, released when the thread exits.
struct Claims(Vec<(u64, Arc<ThreadCache>)>);

impl Drop for Claims {
    fn drop(&mut self) {
        let _ = LAST.try_with(|l| l.set((0, std::ptr::null())));
        for (_, c) in self.0.drain(..) {
            c.give_back_on_exit();
            c.claimed.store(0, Ordering::Release);
        }
    }
}

thread_local! {
    /// The cache used last: (heap id, cache). Checked before anything else.
    static LAST: Cell<(u64, *const ThreadCache)> = const { Cell::new((0, std::ptr::null())) };
    static CLAIMS: RefCell<Claims> = const { RefCell::new(Claims(Vec::new())) };
}

/// The cache class of a block size, if blocks of that size are cached.
#[inline]
fn class(size: u64) -> Option<usize> {
    (size <= CLASS_LIMIT).then_some((size / GRANULE) as usize)
}

/// How many blocks of `size` bytes a stack keeps at most (a table: a division on every
/// release cost more than the rest of `put`).
#[inline]
fn stack_limit(size: u64) -> usize {
    const LIMITS: [u8; CLASSES] = {
        let mut t = [0u8; CLASSES];
        let mut c = 1;
        while c < CLASSES {
            let n = STACK_BYTES / (c as u64 * GRANULE);
            t[c] = if n < MIN_STACK {
                MIN_STACK as u8
            } else if n > STACK as u64 {
                STACK as u8
            } else {
                n as u8
            };
            c += 1;
        }
        t
    };
    LIMITS.get((size / GRANULE) as usize).map_or(MIN_STACK as usize, |&n| usize::from(n))
}

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

    /// The heap's users and families.
    pub(crate) fn lives(&self) -> &Lives {
        &self.lives
    }

    /// Publishes the counters to the cell (plain stores: this thread is the only writer).
    #[inline]
    fn publish_counts(&self, heap: &Heap, s: &State) {
        // SAFETY: `claim_cache` range-checked both words of the cell when it made the cache.
        let (bytes, blocks) =
            unsafe { (heap.region.word_unchecked(self.cell), heap.region.word_unchecked(self.cell + 8)) };
        bytes.store(s.bytes + s.deferred_bytes, Ordering::Relaxed);
        blocks.store(s.blocks + u64::from(s.n_deferred), Ordering::Relaxed);
    }

    /// Pops a parked block of the size `len` needs and makes it a fresh allocation owned by
    /// this process, refilling the stack under the lock when it is empty. Returns its offset
    /// and size.
    #[inline]
    pub(crate) fn take(&self, heap: &Heap, len: u64) -> Result<Option<(u64, u64)>> {
        let Some(size) = block_size(len) else { return Ok(None) };
        let Some(c) = class(size) else { return Ok(None) };
        let s = self.state();
        if s.depth[c] == 0 || s.next_gen == s.gen_end {
            self.refill(heap, size)?;
        }
        let s = self.state();
        if s.depth[c] == 0 {
            return Ok(None);
        }
        s.depth[c] -= 1;
        let off = s.stacks[c][usize::from(s.depth[c])];
        debug_assert_eq!(heap.rc(off) & !rc::PUBLISHED, rc::parked(u64::from(heap.tag())), "take {off:#x}");
        let gen = s.next_gen;
        s.next_gen += 1;
        // A refill may have left a block a little larger than the class here.
        // SAFETY: every offset on a stack had its header range-checked before it was pushed
        // (`Heap::park_or_free`'s callers check the reference word, a refill carves and writes
        // the whole header).
        let got = unsafe { heap.reissue(off, gen) };
        s.bytes = s.bytes.saturating_sub(got);
        s.blocks -= 1;
        self.publish_counts(heap, s);
        Ok(Some((off, got)))
    }

    /// Parks the block at `off` (size `size`, count now zero, owner this process) if its
    /// stack has room or can make some. `false`: the caller frees it the usual way.
    #[inline]
    pub(crate) fn put(&self, heap: &Heap, off: u64, size: u64) -> bool {
        let Some(c) = class(size) else { return false };
        if self.state().bytes + size > CACHE_BYTES {
            return false;
        }
        if usize::from(self.state().depth[c]) >= stack_limit(size) && self.spill(heap, c).is_err() {
            return false;
        }
        let s = self.state();
        debug_assert!(!s.stacks[c][..usize::from(s.depth[c])].contains(&off), "parked twice: {off:#x}");
        debug_assert_eq!(heap.rc(off) & !rc::PUBLISHED, rc::parked(u64::from(heap.tag())), "put {off:#x}");
        s.push(c, off, size);
        self.publish_counts(heap, s);
        true
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
        debug_assert_eq!(heap.rc(off) & !rc::PUBLISHED, rc::parked(u64::from(heap.tag())), "defer {off:#x}");
        s.deferred[usize::from(s.n_deferred)] = off;
        s.n_deferred += 1;
        s.deferred_bytes += size;
        self.publish_counts(heap, s);
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
        (s.n_deferred, s.deferred_bytes) = (0, 0);
        self.publish_counts(heap, s);
    }

    /// Carves up to [`REFILL_BYTES`] of blocks of `size` bytes and reserves generations.
    fn refill(&self, heap: &Heap, size: u64) -> Result<()> {
        let g = heap.lock()?;
        let s = self.state();
        if s.next_gen == s.gen_end {
            (s.next_gen, s.gen_end) = heap.reserve_generations(&g, GEN_BATCH)?;
        }
        let want = (REFILL_BYTES / size).clamp(1, stack_limit(size) as u64 / 2) as usize;
        let mut carved = [(0u64, 0u64); STACK / 2];
        let mut n = 0;
        while n < want {
            if n > 0 && heap.region.load(SB_CAPACITY)? - heap.region.load(SB_USED_BYTES)? < 2 * REFILL_BYTES {
                break; // leave the last free space of the store to whoever needs it
            }
            let Some(block) = heap.carve_parked(&g, size - HEADER_SIZE)? else { break };
            carved[n] = block;
            n += 1;
        }
        // The first carved (lowest, where the best fit was) is handed out first. A carved
        // block can be up to 48 bytes larger than asked (the core does not split off less than
        // a minimal block); it serves this size all the same (a reissue's slack stays below
        // 64), and returns to the stack of its own size when it is released.
        let c = (size / GRANULE) as usize;
        for &(off, got) in carved[..n].iter().rev() {
            if usize::from(s.depth[c]) < stack_limit(size) {
                s.push(c, off, got);
            } else {
                heap.free_owned_locked(&g, off)?;
            }
        }
        self.publish_counts(heap, s);
        Ok(())
    }

    /// Frees the older half of stack `c` (under the lock). A block the core refuses to free
    /// (a corrupt store) is dropped from the stack all the same: leaked, never reissued.
    fn spill(&self, heap: &Heap, c: usize) -> Result<()> {
        let g = heap.lock()?;
        let s = self.state();
        let half = usize::from(s.depth[c]) / 2;
        for i in 0..half {
            let off = s.stacks[c][i];
            let size = heap.core().tag(off).map_or(0, |t| t.size());
            let _ = heap.free_owned_locked(&g, off);
            s.bytes -= size.min(s.bytes);
            s.blocks -= 1;
        }
        s.stacks[c].copy_within(half..usize::from(s.depth[c]), 0);
        s.depth[c] -= half as u8;
        self.publish_counts(heap, s);
        Ok(())
    }

    /// The claiming thread is exiting: frees what the cache keeps parked (under the lock), so
    /// that an exited thread holds no space back from the others. Nothing to do if the heap is
    /// gone (it freed every cache's blocks) or the cache keeps nothing.
    fn give_back_on_exit(&self) {
        let s = self.state();
        if s.blocks == 0 && s.n_deferred == 0 {
            return;
        }
        // The strong count keeps the heap (and its drop, which drains every cache) away while
        // this runs; if it is the last, the heap is dropped here, after.
        let Some(heap) = self.lives.heap() else { return };
        if self.gone.load(Ordering::Acquire) != 0 {
            return;
        }
        if let Ok(g) = heap.lock() {
            self.drain(&heap, &g);
        };
    }

    /// Frees every parked block (under the lock): the heap is going away, or the store is full.
    /// Returns whether there was any.
    fn drain(&self, heap: &Heap, g: &Guard<'_>) -> bool {
        self.free_deferred(heap, g);
        let s = self.state();
        let had = s.blocks > 0;
        for c in 0..CLASSES {
            for &off in &s.stacks[c][..usize::from(s.depth[c])] {
                // An error means a corrupt store; the block stays for recovery.
                let _ = heap.free_owned_locked(g, off);
            }
            s.depth[c] = 0;
        }
        (s.bytes, s.blocks) = (0, 0);
        self.publish_counts(heap, s);
        had
    }
}

impl Heap {
    /// This thread's cache for this heap, claiming or making one if needed. `None` when the
    /// thread cannot have one (all cells taken, the thread is exiting, or we are being called
    /// from inside the claiming itself).
    #[inline]
    pub(crate) fn cache(&self) -> Option<&ThreadCache> {
        self.cache_in_use().or_else(|| self.cache_slow())
    }

    /// This thread's cache for this heap if it is the one the thread used last; never makes
    /// or claims one.
    #[inline]
    pub(crate) fn cache_in_use(&self) -> Option<&ThreadCache> {
        let (id, p) = LAST.try_with(Cell::get).ok()?;
        // SAFETY: `LAST` names a cache this thread claimed for the heap with this id; the
        // heap (alive: we are in its method) keeps it in `caches`, and the claim keeps it too.
        (id == self.id).then(|| unsafe { &*p })
    }

    /// Frees every block this thread's cache keeps (under the lock), when the store is full.
    /// Returns whether there was any. Other threads' caches are theirs alone: at most
    /// `CACHE_BYTES` each stay parked. Looks the cache up without making one (that would take
    /// the lock we hold).
    pub(crate) fn give_back_cache(&self, g: &Guard<'_>) -> bool {
        let found = CLAIMS.try_with(|claims| {
            let claims = claims.try_borrow().ok()?;
            claims.0.iter().find(|(id, _)| *id == self.id).map(|(_, c)| Arc::as_ptr(c))
        });
        let Some(p) = found.ok().flatten() else { return false };
        // SAFETY: as in `cache`: claimed by this thread for this heap, kept alive by it.
        unsafe { &*p }.drain(self, g)
    }

    #[cold]
    fn cache_slow(&self) -> Option<&ThreadCache> {
        let found = CLAIMS.try_with(|claims| {
            let mut claims = claims.try_borrow_mut().ok()?;
            if let Some((_, c)) = claims.0.iter().find(|(id, _)| *id == self.id) {
                return Some(Arc::as_ptr(c));
            }
            claims.0.retain(|(_, c)| c.gone.load(Ordering::Acquire) == 0);
            let c = self.claim_cache()?;
            let p = Arc::as_ptr(&c);
            claims.0.push((self.id, c));
            Some(p)
        });
        let p = found.ok().flatten()?;
        let _ = LAST.try_with(|l| l.set((self.id, p)));
        // SAFETY: as in `cache`: claimed by this thread, kept alive by `self.caches`.
        Some(unsafe { &*p })
    }

    /// Claims a cache an exited thread left, or makes a new one.
    fn claim_cache(&self) -> Option<Arc<ThreadCache>> {
        let mut all = self.caches();
        if let Some(c) = all
            .iter()
            .find(|c| c.claimed.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed).is_ok())
        {
            return Some(c.clone());
        }
        if all.len() as u64 == CELLS {
            return None;
        }
        let mut table = self.caches.table.load(Ordering::Acquire);
        if table == 0 {
            table = self.make_cell_table().ok()?;
            self.caches.table.store(table, Ordering::Release);
        }
        let cell = table + HEADER_SIZE + all.len() as u64 * CELL_SIZE;
        self.region.word(cell)?;
        self.region.word(cell + 8)?;
        let state = State {
            stacks: [[0; STACK]; CLASSES],
            depth: [0; CLASSES],
            next_gen: 0,
            gen_end: 0,
            bytes: 0,
            blocks: 0,
            deferred: [0; DEFERRED],
            n_deferred: 0,
            deferred_bytes: 0,
        };
        let c = Arc::new(ThreadCache {
            state: UnsafeCell::new(state),
            cell,
            claimed: AtomicU8::new(1),
            gone: AtomicU8::new(0),
            families: AtomicU64::new(0),
            lives: self.lives.clone(),
        });
        all.push(c.clone());
        Some(c)
    }

    /// Live families of owner references: the sum of every cache's count and the homeless one
    /// (exact once the heap is orphaned and every ending is seen; `family.rs`).
    pub(crate) fn families_alive(&self) -> u64 {
        let caches = self.caches();
        caches.iter().fold(self.lives.homeless(), |n, c| n.wrapping_add(c.families.load(Ordering::Acquire)))
    }

    pub(crate) fn caches(&self) -> MutexGuard<'_, Vec<Arc<ThreadCache>>> {
        self.caches.all.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Allocates the zeroed counter table and names it in our registry slot.
    fn make_cell_table(&self) -> Result<u64> {
        let g = self.lock()?;
        let table = self.allocate_locked(&g, CELLS * CELL_SIZE, 6)?;
        self.region.zero(table + HEADER_SIZE, CELLS * CELL_SIZE)?;
        if let Some(slot) = self.slot() {
            self.region.store(slot_offset(u64::from(slot)) + SLOT_CACHES, table)?;
        }
        Ok(table)
    }

    /// Bytes and blocks that are no user's: parked in the caches of every attached process, the
    /// cache counter tables and the hold tables, as the registry names them. A heap without a
    /// registry slot (in-process) names its own counter table nowhere but here.
    /// Cells are read without the lock; a value being changed is off by one block at most.
    pub(crate) fn bookkeeping(&self) -> Result<(u64, u64)> {
        let (mut bytes, mut blocks) = (0u64, 0u64);
        let mut tables = Vec::new();
        for i in 0..SLOT_COUNT {
            let holds = self.region.load(slot_offset(i) + SLOT_HOLDS)?;
            if holds != 0 {
                bytes = bytes.wrapping_add(self.core().block_at(holds)?.size());
                blocks = blocks.wrapping_add(1);
            }
            tables.push(self.region.load(slot_offset(i) + SLOT_CACHES)?);
        }
        if self.slot().is_none() {
            tables.push(self.caches.table.load(Ordering::Acquire));
        }
        for t in tables.into_iter().filter(|&t| t != 0) {
            bytes = bytes.wrapping_add(self.core().block_at(t)?.size());
            blocks = blocks.wrapping_add(1);
            for i in 0..CELLS {
                let cell = t + HEADER_SIZE + i * CELL_SIZE;
                bytes = bytes.wrapping_add(self.region.load(cell)?);
                blocks = blocks.wrapping_add(self.region.load(cell + 8)?);
            }
        }
        Ok((bytes, blocks))
    }

    /// Makes the parked block at `off` a fresh allocation with generation `gen`, owned by this
    /// process. The reference word is stored last: until then the block has count zero and no
    /// resolve can take a reference to it. The tag keeps its old slack and the header its old
    /// check word until the block is about to be named by others (`Heap::settle`): a handle
    /// resolves only to a published block, and computing the check word (two multiply-xorshift
    /// rounds) would cost several nanoseconds per allocation. Returns the block's size.
    ///
    /// # Safety
    /// The header at `off` was range-checked before (see `Region::word_unchecked`).
    #[inline]
    pub(crate) unsafe fn reissue(&self, off: u64, gen: u64) -> u64 {
        // SAFETY: the caller checked the header's range; tag, generation and reference word
        // lie inside it.
        let (tag, gen_word, rc_word) = unsafe {
            (
                self.region.word_unchecked(off + HDR_TAG),
                self.region.word_unchecked(off + HDR_GEN),
                self.region.word_unchecked(off + HDR_RC),
            )
        };
        gen_word.store(gen, Ordering::Relaxed);
        rc_word.store(rc::fresh(u64::from(self.tag())), Ordering::Release);
        crate::core::header::Tag(tag.load(Ordering::Relaxed)).size()
    }
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
