//! Slabs: the in-process manager's small raw blocks, without headers, freed from any thread
//! without the heap lock.
//!
//! A raw allocation (`GlobalAlloc`, `allocator_api2`, the drop-in `malloc`) of at most
//! [`SLAB_MAX`] bytes with at most 16-byte alignment is a block of a *slab*: a used block of
//! the core (64 KiB for classes up to 1 KiB, 512 KiB above), aligned to 64 KiB, that holds
//! blocks of one size class, with no per-block header. A byte per 64 KiB of the heap (the *slab
//! map*) says whether a pointer is in a slab and where it starts, so `free` finds the block's
//! slab from the pointer alone; the slab's 128-byte head is kept out of line, in a table beside
//! the map (`table.rs` says why). Slabs exist only in process memory: a store never has one.
//!
//! Each slab belongs to one thread's [`Local`] (its *owner*: a thread cache's, `cache/`).
//! The owner allocates from the slab's `free` list and puts what it frees on `local_free`,
//! with plain loads and stores. Any other thread pushes what it frees onto the slab's
//! `thread_free` list with one compare-and-swap, and the owner takes that whole list when its
//! other lists are empty (as mimalloc and snmalloc do): a block freed by another thread never
//! takes a lock, and the owner allocates it again.
//!
//! A slab with no block left is taken off its class's queue (it is *full*): the owner sets
//! the state bits of `thread_free` to [`NOTIFY`] in the same compare-and-swap that finds the
//! list empty. The next remote free then moves the state to [`NOTIFYING`], pushes its block on
//! the owner's `delayed` list instead, and sets the state back to [`NORMAL`]; the owner frees
//! the delayed blocks as its own at its next slow allocation, which puts the slab back on its
//! queue. So a full slab is found again without the owner ever walking the full ones, and
//! because a delayed block still counts as used, the slab cannot be retired (or its owner
//! change) while a remote free is telling its owner about it; retiring also waits out
//! `NOTIFYING`, the only moment a freer touches a slab after its block is pushed.
//!
//! A slab whose blocks are all free again is *retired* when it is not the first of its queue:
//! it goes to the heap's pool of empty slabs, which another thread takes before carving a new
//! one. Slabs that stay in the pool for [`PURGE_DELAY`] have their memory given back to the
//! system (`madvise(MADV_DONTNEED)`), and beyond a few the pool gives them back to the core,
//! where they merge with free neighbours into space for anything.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::engine::core::region::Region;
use crate::engine::heap::Heap;
use crate::format::{HEADER_SIZE, SPAN_SIZE};
use crate::sync::local::AtomicU32;
use crate::sync::{AtomicUsize, Ordering};

/// Largest raw allocation served by a slab.
pub(crate) const SLAB_MAX: u64 = 8 << 10;
/// Size classes: one per 16 bytes up to 256, then eight per power of two.
pub(crate) const CLASSES: usize = 16 + 5 * 8;
pub(crate) mod fast;
mod local;
mod table;
pub(crate) use local::Local;
use table::Table;

/// Bytes of a slab's head (in the table).
const HEAD: u64 = 128;
/// The slab map's unit, and the alignment of every slab.
const CHUNK_LOG2: u32 = 16;
const CHUNK: u64 = 1 << CHUNK_LOG2;
const _: () = assert!(CHUNK == SPAN_SIZE);
/// Classes above this many bytes live in large slabs.
const SMALL_SLAB_MAX: u64 = 1024;
const LARGE_SLAB: u64 = 8 * CHUNK;
/// How long an empty slab waits in the pool before its memory goes back to the system.
pub(crate) const PURGE_DELAY: Duration = Duration::from_millis(10);
/// Empty slabs the pool keeps (per slab size: 1 MiB of small ones, 2 MiB of large ones); more
/// go back to the core.
const POOL_KEEP: usize = 16;
const POOL_KEEP_LARGE: usize = 4;
/// Remote frees into orphaned slabs between two sweeps of the orphans.
const ORPHAN_SWEEP: usize = 4096;
/// Bytes of fresh blocks a slab links into its free list at a time (so a slab's memory is
/// touched as it is used, not all at its carving).
const EXTEND_BYTES: u64 = 4096;

/// States of a slab's `thread_free` word (its low bits).
const NORMAL: usize = 0;
/// The owner took the slab off its queue (full) and asks the next remote free to tell it.
const NOTIFY: usize = 1;
/// A remote free is pushing its block on the owner's `delayed` list; others wait.
const NOTIFYING: usize = 2;
const STATE: usize = 3;
/// The rest of the word: the first block's offset in its slab plus 16 (a multiple of 16; 0 for
/// none) in bits 4..48, and how many blocks the list holds from bit 48 (a slab has fewer than
/// 2^16).
const FIRST: usize = (1 << 48) - 16;
const COUNT_SHIFT: u32 = 48;

/// The block size of class `c`.
pub(crate) const fn class_size(c: usize) -> u64 {
    if c < 16 {
        return (c as u64 + 1) * 16;
    }
    let (g, sub) = ((c - 16) / 8, (c - 16) % 8);
    (256 << g) + (sub as u64 + 1) * (32 << g)
}

/// The class of a request of `len` bytes (`len <= SLAB_MAX`).
#[inline]
pub(crate) fn class_of(len: u64) -> usize {
    if len <= 256 {
        return (len.max(1) as usize).div_ceil(16) - 1;
    }
    let l = 63 - (len - 1).leading_zeros();
    16 + (l as usize - 8) * 8 + ((len - 1) >> (l - 3)) as usize % 8
}

/// Bytes of the slab that holds blocks of class `c` (its core block's payload, less the next
/// block's header, which lies in its last 32 bytes).
const fn slab_bytes(c: usize) -> u64 {
    if class_size(c) <= SMALL_SLAB_MAX {
        CHUNK
    } else {
        LARGE_SLAB
    }
}

/// A slab's head, in the table (`table.rs`). Every field is an atomic so that a `&Slab` can be
/// shared (and so that the table's zeros are a valid head); the owner's fields are touched with
/// relaxed loads and stores by the owner alone.
#[repr(C, align(64))]
struct Slab {
    /// Owner: blocks ready to hand out (a list through each block's first word).
    free: AtomicUsize,
    /// Owner: blocks the owner freed, handed out again once `free` is empty.
    local_free: AtomicUsize,
    /// Owner: blocks handed out and not back on `free` or `local_free` (remote and delayed
    /// frees count until the owner takes them).
    used: AtomicU32,
    /// Owner: blocks from index `bump` on were never handed out.
    bump: AtomicU32,
    capacity: AtomicU32,
    class: AtomicU32,
    /// Owner: 1 while the slab is on its class's queue.
    listed: AtomicU32,
    /// Owner: the queue's links (addresses of slabs, 0 at the ends).
    next: AtomicUsize,
    prev: AtomicUsize,
    /// The owning `Local`, 0 while the slab is in the pool. Set by the owner; read by a remote
    /// free in state `NOTIFYING`, when it cannot change.
    owner: AtomicUsize,
    /// On its own line, with what remote frees read.
    remote: Remote,
}

#[repr(C, align(64))]
struct Remote {
    /// Blocks freed by other threads: the state (low bits), the first block's offset in the
    /// slab plus 16, and their count ([`FIRST`], [`COUNT_SHIFT`]).
    thread_free: AtomicUsize,
    /// Address of the slab's memory (its core block's payload); set before the slab map names
    /// the slab and unchanged while it does.
    mem: AtomicUsize,
}

const _: () = assert!(std::mem::size_of::<Slab>() as u64 == HEAD);

/// A block's link on a free list: its first word.
///
/// # Safety
/// `b` is a free block of a slab (at least 16 bytes, 16-byte aligned) that nobody else touches.
#[inline]
unsafe fn next_of(b: usize) -> usize {
    // SAFETY: the caller's precondition.
    unsafe { (b as *const usize).read() }
}

/// # Safety
/// As [`next_of`].
#[inline]
unsafe fn set_next(b: usize, next: usize) {
    // SAFETY: the caller's precondition.
    unsafe { (b as *mut usize).write(next) }
}

impl Slab {
    #[inline]
    fn get(a: &AtomicUsize) -> usize {
        a.load(Ordering::Relaxed)
    }
    #[inline]
    fn set(a: &AtomicUsize, v: usize) {
        a.store(v, Ordering::Relaxed)
    }
    #[inline]
    fn addr(&self) -> usize {
        self as *const Slab as usize
    }
    /// Address of the slab's memory, where its first block is.
    #[inline]
    fn mem(&self) -> usize {
        Slab::get(&self.remote.mem)
    }
    /// Block `b`'s link in `thread_free`: its offset in the slab plus 16, never 0.
    #[inline]
    fn link_of(&self, b: usize) -> usize {
        b - self.mem() + 16
    }
    /// The block a non-zero `thread_free` link names.
    #[inline]
    fn at_link(&self, link: usize) -> usize {
        self.mem() + link - 16
    }
    #[inline]
    fn size(&self) -> usize {
        class_size(self.class.load(Ordering::Relaxed) as usize) as usize
    }

    /// Prepares the head of a fresh (or pooled) slab of class `c` at address `mem` for `owner`.
    fn init(&self, c: usize, mem: usize, bytes: u64, owner: &Local) {
        let capacity = (bytes - HEADER_SIZE) / class_size(c);
        Slab::set(&self.remote.mem, mem);
        Slab::set(&self.free, 0);
        Slab::set(&self.local_free, 0);
        self.used.store(0, Ordering::Relaxed);
        self.bump.store(0, Ordering::Relaxed);
        self.capacity.store(capacity as u32, Ordering::Relaxed);
        self.class.store(c as u32, Ordering::Relaxed);
        self.listed.store(0, Ordering::Relaxed);
        Slab::set(&self.next, 0);
        Slab::set(&self.prev, 0);
        self.remote.thread_free.store(NORMAL, Ordering::Relaxed);
        self.owner.store(owner as *const Local as usize, Ordering::Release);
    }

    /// Owner: refills `free` from `local_free`, then from `thread_free`, then from the blocks
    /// never handed out. Returns whether `free` has a block.
    fn refill(&self) -> bool {
        let local = Slab::get(&self.local_free);
        if local != 0 {
            Slab::set(&self.free, local);
            Slab::set(&self.local_free, 0);
            return true;
        }
        self.collect() || self.extend()
    }

    /// Owner, slab on its queue (state `NORMAL`): takes the blocks other threads freed. The
    /// word counts them, so the list is not walked (its blocks were written last by other
    /// threads: walking it waited for each line in turn, 97% of a slow allocation when one
    /// thread frees what another allocates), unless `free` has blocks to append it to.
    fn collect(&self) -> bool {
        if self.remote.thread_free.load(Ordering::Relaxed) & FIRST == 0 {
            return false;
        }
        let w = self.remote.thread_free.swap(NORMAL, Ordering::Acquire);
        let head = self.at_link(w & FIRST);
        let free = Slab::get(&self.free);
        if free != 0 {
            let mut tail = head;
            // SAFETY: the blocks on `thread_free` are free blocks of this slab, pushed by
            // their freers (release) and taken whole here (acquire): nobody else touches them.
            while let next @ 1.. = unsafe { next_of(tail) } {
                tail = next;
            }
            // SAFETY: as above; `tail` ends the list taken.
            unsafe { set_next(tail, free) };
        }
        Slab::set(&self.free, head);
        let n = (w >> COUNT_SHIFT) as u32;
        self.used.store(self.used.load(Ordering::Relaxed).wrapping_sub(n), Ordering::Relaxed);
        true
    }

    /// Owner: links up to [`EXTEND_BYTES`] of never-used blocks into `free`.
    fn extend(&self) -> bool {
        let (bump, cap) = (self.bump.load(Ordering::Relaxed), self.capacity.load(Ordering::Relaxed));
        if bump >= cap {
            return false;
        }
        let size = self.size();
        let n = (EXTEND_BYTES as usize / size).clamp(1, (cap - bump) as usize);
        let first = self.mem() + bump as usize * size;
        for i in 0..n {
            let b = first + i * size;
            let next = if i + 1 < n { b + size } else { Slab::get(&self.free) };
            // SAFETY: `b` is a block of this slab never handed out: nobody else knows it.
            unsafe { set_next(b, next) };
        }
        Slab::set(&self.free, first);
        self.bump.store(bump + n as u32, Ordering::Relaxed);
        true
    }

    /// Owner: asks to be told of the next remote free, if none came since the last collect.
    /// `false` (and nothing changed) if blocks are waiting on `thread_free`.
    fn ask_notify(&self) -> bool {
        self.remote.thread_free.compare_exchange(NORMAL, NOTIFY, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// Owner: back to `NORMAL` (the slab goes back on its queue), waiting out a remote free
    /// that is telling us about it.
    fn stop_notify(&self) {
        loop {
            let w = self.remote.thread_free.load(Ordering::Acquire);
            match w & STATE {
                NOTIFY => {
                    if self
                        .remote
                        .thread_free
                        .compare_exchange(w, w & !STATE, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                    {
                        return;
                    }
                }
                NOTIFYING => std::hint::spin_loop(),
                _ => return,
            }
        }
    }

    /// Any thread but the owner: frees block `b` of this slab.
    #[inline]
    fn free_remote(&self, b: usize) {
        let tf = &self.remote.thread_free;
        let mut w = tf.load(Ordering::Relaxed);
        loop {
            match w & STATE {
                NOTIFY => match tf.compare_exchange_weak(
                    w,
                    w ^ NOTIFY ^ NOTIFYING,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        let owner = self.owner.load(Ordering::Acquire);
                        // SAFETY: in `NOTIFYING` the slab cannot be retired or change owner
                        // (`stop_notify`, `Local::retire`), and `Local`s live as long as their
                        // heap, which the caller's block keeps alive.
                        unsafe { &*(owner as *const Local) }.push_delayed(b);
                        tf.fetch_and(!STATE, Ordering::Release);
                        return;
                    }
                    Err(now) => w = now,
                },
                NOTIFYING => {
                    std::hint::spin_loop();
                    w = tf.load(Ordering::Relaxed);
                }
                _ => {
                    let next = if w & FIRST == 0 { 0 } else { self.at_link(w & FIRST) };
                    // SAFETY: `b` is a block being freed: its caller gave it up.
                    unsafe { set_next(b, next) };
                    let pushed = (((w >> COUNT_SHIFT) + 1) << COUNT_SHIFT) | self.link_of(b) | (w & STATE);
                    match tf.compare_exchange_weak(w, pushed, Ordering::Release, Ordering::Relaxed) {
                        Ok(_) => return,
                        Err(now) => w = now,
                    }
                }
            }
        }
    }
}

/// An empty slab in the pool.
#[derive(Clone, Copy)]
struct Pooled {
    addr: usize,
    since: Option<Instant>,
    purged: bool,
}

/// Empty slabs of one size, oldest first. A fixed array: the pool is used from inside the
/// allocator, which must not allocate.
pub(crate) struct Pool {
    slabs: [Pooled; POOL_KEEP + 1],
    n: usize,
}

impl Default for Pool {
    fn default() -> Self {
        Pool { slabs: [Pooled { addr: 0, since: None, purged: false }; POOL_KEEP + 1], n: 0 }
    }
}

impl Pool {
    fn pop(&mut self) -> Option<usize> {
        self.n = self.n.checked_sub(1)?;
        Some(self.slabs[self.n].addr)
    }

    /// Adds a slab; returns the oldest if the pool holds more than `keep`.
    fn push(&mut self, addr: usize, now: Instant, keep: usize) -> Option<usize> {
        self.slabs[self.n] = Pooled { addr, since: Some(now), purged: false };
        self.n += 1;
        if self.n <= keep {
            return None;
        }
        let oldest = self.slabs[0].addr;
        self.slabs.copy_within(1..self.n, 0);
        self.n -= 1;
        Some(oldest)
    }
}

/// The heap's side: the slab map, the pool of empty slabs, and the `Local` of threads that
/// have no thread cache.
pub(crate) struct Slabs {
    /// The heap's reservation: its address and length.
    base: usize,
    len: usize,
    /// The slab map and the heads.
    table: Table,
    /// Empty slabs, small ones and large ones, oldest first.
    pool: [Mutex<Pool>; 2],
    /// Remote frees into orphaned `Local`s' slabs (`count_orphan_free`).
    orphan_frees: AtomicUsize,
    /// One past the highest unit a slab was ever carved at (bounds [`Slabs::totals`]).
    high: AtomicUsize,
    /// For threads without a thread cache (all taken), under its mutex.
    pub(crate) overflow: Mutex<Local>,
}

impl Slabs {
    /// Slabs over `region` (the reservation's whole length is mapped). Fails only when the
    /// table cannot be mapped.
    pub(crate) fn new(region: &Region) -> std::io::Result<Slabs> {
        Ok(Slabs {
            base: region.base_addr(),
            len: usize::try_from(region.reserved()).map_err(std::io::Error::other)?,
            table: Table::new(region.reserved())?,
            pool: [Mutex::default(), Mutex::default()],
            orphan_frees: AtomicUsize::new(0),
            high: AtomicUsize::new(0),
            overflow: Mutex::default(),
        })
    }

    /// The slab holding the block at heap offset `off`, if any.
    #[inline]
    fn slab_at(&self, off: u64) -> Option<&Slab> {
        // SAFETY: the raw places of our own table, which lives as long as `self`.
        unsafe { self.table.raw().slab_at(usize::try_from(off).ok()?) }
    }

    fn slab_of_addr(&self, b: usize) -> Option<&Slab> {
        self.slab_at(b.checked_sub(self.base)? as u64)
    }

    /// Whether `off` is in a slab, with its block's usable size.
    #[inline]
    pub(crate) fn usable(&self, off: u64) -> Option<u64> {
        self.slab_at(off).map(|s| s.size() as u64)
    }

    /// Frees the slab block at heap offset `off` (its address `p`): as the owner's own if the
    /// calling thread's cache holds the slab's `Local`, else as a remote free. `false` if
    /// `off` is not in a slab.
    #[inline]
    pub(crate) fn free(&self, heap: &Heap, off: u64, p: usize) -> bool {
        let Some(s) = self.slab_at(off) else { return false };
        let owner = s.owner.load(Ordering::Relaxed);
        match heap.cache().map(|c| &c.slabs) {
            Some(l) if owner == l as *const Local as usize => l.free_local(heap, self, s, p),
            _ => {
                s.free_remote(p);
                self.count_orphan_free(heap, owner);
            }
        }
        true
    }

    /// After a remote free: if the slab's owner is orphaned (its thread exited and nobody has
    /// claimed its cache since), counts it, and every [`ORPHAN_SWEEP`] such frees tidies the
    /// orphaned `Local`s, so that what a program frees of an exited thread's blocks is reused
    /// and given back rather than stranded until a new thread claims the cache.
    #[inline]
    fn count_orphan_free(&self, heap: &Heap, owner: usize) {
        // SAFETY: `Local`s live as long as their heap (as in `free_remote`), which the freed
        // block kept alive; a pooled slab's owner is 0.
        let orphaned = owner != 0 && unsafe { &*(owner as *const Local) }.orphaned.load(Ordering::Relaxed);
        if orphaned && self.orphan_frees.fetch_add(1, Ordering::Relaxed) % ORPHAN_SWEEP == ORPHAN_SWEEP - 1 {
            heap.tidy_orphans();
        }
    }

    /// A slab for class `c` owned by `owner`: from the pool, else carved from the core.
    fn fresh(&self, heap: &Heap, owner: &Local, c: usize) -> Option<&Slab> {
        let bytes = slab_bytes(c);
        let large = usize::from(bytes == LARGE_SLAB);
        let pooled = lock(&self.pool[large]).pop();
        let addr = match pooled {
            Some(a) => a,
            None => {
                let off = heap.carve_slab(bytes - HEADER_SIZE)?;
                self.base + off as usize
            }
        };
        // `addr` is the payload of a slab-sized core block we carved (or that the pool kept),
        // 64 KiB aligned, that nobody else uses: so is the head of its unit.
        let s = self.table.head((addr - self.base) >> CHUNK_LOG2);
        s.init(c, addr, bytes, owner);
        self.mark(addr - self.base, bytes);
        Some(s)
    }

    /// Sets the map bytes of the slab at heap offset `off` (`bytes` long; 0 when `clear`).
    fn mark_units(&self, off: usize, bytes: u64, clear: bool) {
        let first = off >> CHUNK_LOG2;
        for i in 0..(bytes >> CHUNK_LOG2) as usize {
            if let Some(m) = self.table.map(first + i) {
                m.store(if clear { 0 } else { i as u8 + 1 }, Ordering::Release);
            }
        }
    }

    fn mark(&self, off: usize, bytes: u64) {
        self.high.fetch_max((off >> CHUNK_LOG2) + (bytes >> CHUNK_LOG2) as usize, Ordering::Release);
        self.mark_units(off, bytes, false);
    }

    /// Puts the empty slab `s` (off every queue, no block in use) in the pool; purges what
    /// waited there long enough, and gives the core what the pool does not keep.
    fn retire(&self, heap: &Heap, s: &Slab) {
        while s.remote.thread_free.load(Ordering::Acquire) & STATE == NOTIFYING {
            std::hint::spin_loop();
        }
        s.owner.store(0, Ordering::Relaxed);
        let bytes = slab_bytes(s.class.load(Ordering::Relaxed) as usize);
        let now = Instant::now();
        let give = {
            let mut pool = lock(&self.pool[usize::from(bytes == LARGE_SLAB)]);
            let keep = if bytes == LARGE_SLAB { POOL_KEEP_LARGE } else { POOL_KEEP };
            let give = pool.push(s.mem(), now, keep);
            purge_old(&mut pool, Some(now), bytes);
            give
        };
        if let Some(a) = give {
            self.give_back(heap, a, bytes);
        }
    }

    /// Gives the memory of every slab in the pools back to the system now, however long it
    /// waited there (`trim`, and the exit of a thread that leaves the heap to one thread).
    pub(crate) fn purge_pools(&self) {
        for (i, bytes) in [CHUNK, LARGE_SLAB].into_iter().enumerate() {
            purge_old(&mut lock(&self.pool[i]), None, bytes);
        }
    }

    /// Returns an empty slab to the core (under the heap's lock).
    #[cold]
    fn give_back(&self, heap: &Heap, addr: usize, bytes: u64) {
        self.mark_units(addr - self.base, bytes, true);
        heap.free_slab((addr - self.base) as u64);
    }

    /// What the slabs hold, read without stopping their owners (exact when they are quiet):
    /// the core bytes and blocks of every slab carved and not given back, and the bytes and
    /// blocks handed out from them. A block freed by another thread counts until its slab's
    /// owner takes it back (its next allocation that finds its slab empty, or its exit).
    pub(crate) fn totals(&self) -> SlabTotals {
        let mut t = SlabTotals::default();
        for unit in self.starts() {
            let s = self.table.head(unit);
            let large = self.table.map(unit + 1).is_some_and(|n| n.load(Ordering::Relaxed) == 2);
            let used = u64::from(s.used.load(Ordering::Relaxed).min(s.capacity.load(Ordering::Relaxed)));
            t.core_bytes += if large { LARGE_SLAB } else { CHUNK };
            t.core_blocks += 1;
            t.live_blocks += used;
            t.live_bytes += used * s.size() as u64;
        }
        t
    }

    /// In a child just forked (`fork.rs`): a remote free that was telling a slab's owner about
    /// it (`NOTIFYING`) ran on a thread that did not come along, and would leave the slab
    /// waited on for ever; it goes back to `NORMAL` (its block, if it was not pushed yet, is
    /// lost to the child: one block).
    pub(crate) fn after_fork_in_child(&self) {
        for s in self.starts().map(|unit| self.table.head(unit)) {
            if s.remote.thread_free.load(Ordering::Relaxed) & STATE == NOTIFYING {
                s.remote.thread_free.fetch_and(!STATE, Ordering::Relaxed);
            }
        }
    }

    /// The units where a live slab starts (marked 1 in the map).
    fn starts(&self) -> impl Iterator<Item = usize> + '_ {
        let high = self.high.load(Ordering::Acquire).min(self.table.units());
        (0..high).filter(|&u| self.table.map(u).is_some_and(|m| m.load(Ordering::Acquire) == 1))
    }

    /// Takes every pool mutex (fork: held across it, see `fork.rs`).
    pub(crate) fn lock_all(&self) -> [std::sync::MutexGuard<'_, Pool>; 2] {
        [lock(&self.pool[0]), lock(&self.pool[1])]
    }
}

/// Gives the memory of slabs that waited [`PURGE_DELAY`] in `pool` by `now` back to the
/// system, or of every slab in it for `None`.
fn purge_old(pool: &mut Pool, now: Option<Instant>, bytes: u64) {
    let n = pool.n;
    for p in pool.slabs[..n].iter_mut() {
        let old = now.is_none_or(|now| p.since.is_some_and(|t| now.duration_since(t) >= PURGE_DELAY));
        if old && !p.purged {
            // The last page holds the next core block's header: kept.
            crate::sys::purge(p.addr, (bytes - crate::format::PAGE_SIZE) as usize);
            p.purged = true;
        }
    }
}

/// [`Slabs::totals`].
#[derive(Default, Clone, Copy, Debug)]
pub(crate) struct SlabTotals {
    pub(crate) core_bytes: u64,
    pub(crate) core_blocks: u64,
    pub(crate) live_bytes: u64,
    pub(crate) live_blocks: u64,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_ordered_and_cover_every_size() {
        for c in 1..CLASSES {
            assert!(class_size(c) > class_size(c - 1));
            assert_eq!(class_size(c) % 16, 0);
        }
        assert_eq!(class_size(CLASSES - 1), SLAB_MAX);
        for len in 1..=SLAB_MAX {
            let c = class_of(len);
            assert!(class_size(c) >= len, "{len} -> {c}");
            assert!(c == 0 || class_size(c - 1) < len, "{len} -> {c} is not the smallest");
        }
    }

    #[test]
    fn slabs_hold_enough_blocks() {
        for c in 0..CLASSES {
            let n = (slab_bytes(c) - HEADER_SIZE) / class_size(c);
            assert!(n >= 7, "class {c}: {n} blocks");
        }
    }
}
