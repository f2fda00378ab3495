//! The heap shared by both managers: the core, under the store lock, over a backing that knows
//! how to grow and who is alive; allocation (thread caches first), resize and trim here, growth
//! in `growth.rs`, the reference protocol in `refs.rs`, raw blocks in `raw.rs`, what the heap
//! keeps of recoveries in `recovering.rs`; its machinery below it (`cache/`, `slab/`,
//! `holds.rs`, `family.rs`, `purge.rs`, `table.rs`). Recovery itself is above the heap
//! (`engine/recovery/`).

use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use crate::engine::core::header::{check_word, rc, Tag, MAX_SLACK};
use crate::engine::core::region::Region;
use crate::engine::core::span::{id_class, is_slot};
use crate::engine::core::tlsf::Core;
use crate::engine::heap::holds::HoldTable;
use crate::error::{Error, Result};
use crate::format::*;
use crate::hooks::pause;
use crate::lock::{self, Acquired};
use crate::sync::{fence, AtomicU64, Ordering};
use crate::BlockHandle;

pub(crate) mod cache;
mod durable;
pub(crate) mod family;
mod growth;
pub(crate) mod holds;
pub(crate) mod links;
mod lost;
mod purge;
mod raw;
mod recovering;
pub(crate) mod shared;
pub(crate) use recovering::or_give_back;
mod refs;
pub(crate) mod slab;
pub(crate) mod table;

/// How long recovery waits for a living process to give back a lock kept in a store word (a
/// ring's send or receive lock, a stack of the exchange) before it leaves what the lock guards
/// as it is: such a lock is held for a microsecond or less, so only a stopped or descheduled
/// process (or a damaged word naming a living one) keeps it this long.
pub(crate) const HOLDER_PATIENCE: std::time::Duration = std::time::Duration::from_millis(20);

/// Recovery, as a heap runs it when it takes the lock over from a dead holder (with the lock
/// held; `reclaim_own`: this process's own slot counts as a dead process's). Every heap is made
/// with `kinds::recover_locked`: the heap is below recovery, which reads everything that
/// holds references (roots, channels, hold tables), so it reaches it through this.
pub(crate) type Recovery = fn(&Heap, &Guard<'_>, bool) -> Result<crate::engine::reports::RecoveryReport>;

/// What a manager's memory comes from.
pub(crate) trait Backing: Send + Sync {
    /// Makes the first `new_cap` bytes of the region backed (called under the lock), then
    /// raises the region's limit.
    fn grow(&self, region: &Region, new_cap: u64) -> Result<()>;
    /// Makes a capacity that another process published reachable here.
    fn refresh(&self, region: &Region, cap: u64) -> Result<()>;
    /// [`Error::Truncated`] if the memory behind the region's limit is gone: a store file that
    /// someone truncated while this process has it mapped (a touch of the lost pages would
    /// raise SIGBUS). A system call: asked on the slow paths only (growth, a lock taken over).
    fn check_length(&self, _region: &Region) -> Result<()> {
        Ok(())
    }
    /// The store file's length now (`None`: memory that is not a store's file).
    fn file_len(&self) -> Option<u64> {
        None
    }
    /// Whether the lock holder tagged `tag` is dead.
    fn owner_dead(&self, tag: u32) -> bool;
    /// Whether other processes share the memory (selects shared or private futexes).
    fn shared(&self) -> bool;
    /// Processes attached now.
    fn attached(&self, region: &Region) -> u64;
    /// Writes dirty pages to the file and the file to disk (nothing to write: memory that is
    /// not a store's file, a read-only mapping).
    fn flush(&self) -> Result<()> {
        Ok(())
    }
    /// Makes bytes `offset..offset + len` of the store durable before it returns (a barrier
    /// between two steps whose order must survive a power loss); nothing for memory that is
    /// not a store's file.
    fn persist(&self, _offset: u64, _len: u64) -> Result<()> {
        Ok(())
    }
    /// Leaves the store (under the lock, before the memory goes away); nothing for a backing
    /// that never attached.
    fn detach(&self, _region: &Region) {}
    /// Gives up this process's registry slot without touching the store (a lost heap whose
    /// last user went while blocks keep it, `Heap::lost`); nothing for a backing that holds
    /// none.
    fn give_up_slot(&self) {}
    /// This process's registry slot, for stores shared between processes; `None` for a
    /// backing that holds none (in-process memory, a copy, a read-only mapping).
    fn slot(&self) -> Option<u32> {
        None
    }
}

/// A reference to a block obtained from the heap: how this process counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RefKind {
    /// Counted in the header's owner references (this process is the block's owner).
    Owner,
    /// One of the header's other holds, shared by this process's clones.
    Hold,
}

/// A freshly obtained reference.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Obtained {
    pub(crate) offset: u64,
    pub(crate) len: u64,
    pub(crate) kind: RefKind,
    /// For an other hold: its entry in this process's hold table.
    pub(crate) hold_index: Option<u64>,
    /// For an owner reference: whether it is this process's first on the block (its
    /// `MemoryBlock`s then form a new family, which keeps the heap alive: `family.rs`).
    pub(crate) new_family: bool,
}

/// The engine.
pub(crate) struct Heap {
    pub(crate) region: Region,
    backing: Box<dyn Backing>,
    /// The store's key (`SB_KEY`), read once; salvage sets it again when it finds the
    /// superblock's was damaged.
    key: AtomicU64,
    /// This process's lock and owner tag: registry slot + 1 (1 in-process).
    tag: u32,
    /// What runs on a takeover of a dead holder's lock.
    recovery: Recovery,
    /// This process's hold table (stores shared between processes only). Taken only while the
    /// store lock is held.
    holds: Mutex<HoldTable>,
    /// Unique among the heaps of this process (thread caches are looked up by it).
    pub(crate) id: u64,
    /// Index in the process's heap table (`table.rs`), by which `MemoryBlock`s name the heap;
    /// 0 for a heap never registered (which has no blocks: a snapshot being inspected).
    pub(crate) index: u16,
    /// The per-thread block caches made for this heap.
    pub(crate) caches: crate::engine::heap::cache::Caches,
    /// Its users and families (`family.rs`).
    pub(crate) lives: Arc<crate::engine::heap::family::Lives>,
    /// Whether small blocks are allocated as slots of spans (a store of format version 2).
    spans: bool,
    /// Reports of recoveries this process ran on taking the lock over from a dead holder,
    /// summed, until `recover` hands them to its caller.
    recovered: Mutex<crate::engine::reports::RecoveryReport>,
    /// Set when the heap was given up as found (`abandon`): dropping it writes nothing.
    abandoned: bool,
    /// How this process may touch the store (a writer, a reader, an inspector).
    access: Access,
    /// Small raw blocks (in-process heaps only: `slab/`).
    pub(crate) slabs: Option<crate::engine::heap::slab::Slabs>,
    /// Free space waiting to go back to the system (in-process heaps only: `purge.rs`).
    purges: Option<purge::Purges>,
    /// Stacks of this store's exchange that threads of this process hold now
    /// (`cache/exchange.rs`): a stack word naming this process while none does was left by
    /// damage.
    pub(crate) exchange_held: crate::sync::AtomicUsize,
    /// The file's length when a truncation was seen (`Error::Truncated`), plus one; 0 while
    /// none was. From then on nothing here touches the store (`Heap::lost`).
    lost: AtomicU64,
}

/// How a heap may touch its memory.
enum Access {
    /// As a process of the store (or the in-process heap): takes the lock, writes, leaves.
    Normal,
    /// Opened read-only (`mapped/read_only.rs`), with the store's path: its memory is mapped
    /// read-only, so the lock is refused (`Error::ReadOnly`) and dropping writes nothing.
    ReadOnly(std::path::PathBuf),
    /// Inspected in place (`inspect/take.rs`): an inspector holds the store lock for the
    /// heap's whole life, so `lock` neither takes nor gives it (nor repairs anything: the
    /// holder it found was not dead), and dropping writes nothing. Only read paths run on it.
    Inspected,
}

/// Who resizes a block ([`Heap::resize`]).
#[derive(Clone, Copy)]
pub(crate) enum Resizer {
    /// A `MemoryBlock`: its count must be 1 with `local_extra` of this process's clones of a
    /// hold added (their hold-table entry is `hold_index`); a moved block may become a slot.
    Block { local_extra: u64, hold_index: Option<u64> },
    /// A raw allocator interface: the block carries no count (`Heap::alloc_raw`); a moved one
    /// is parked like the rest.
    Raw,
}

/// Proof of holding the store lock.
pub(crate) struct Guard<'h> {
    heap: &'h Heap,
    /// The word to give the lock back as, instead of releasing it (`lock::restore`): set when
    /// the repair owed to a dead holder failed.
    give_back: std::cell::Cell<Option<u32>>,
}

crate::sync::thread_local! {
    /// The heap whose lock this thread holds, if any (our code never holds two at once). The
    /// global allocator reads it to avoid taking a lock its own thread holds.
    static LOCKED: std::cell::Cell<*const Heap> = const { std::cell::Cell::new(std::ptr::null()) };
}

impl<'h> Guard<'h> {
    /// Records that this thread has just taken `heap`'s lock.
    fn new(heap: &'h Heap) -> Guard<'h> {
        LOCKED.with(|l| l.set(heap));
        Guard { heap, give_back: std::cell::Cell::new(None) }
    }

    /// Makes the guard give the lock back as the word `was` when it goes (the dead holder's
    /// tag, as it was before this process took the lock over), instead of releasing it.
    pub(crate) fn restore_on_drop(&self, was: u32) {
        self.give_back.set(Some(was));
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        LOCKED.with(|l| l.set(std::ptr::null()));
        if let Access::Inspected = self.heap.access {
            return; // the inspector's to give back
        }
        if let Ok(word) = self.heap.region.u32_at(SB_LOCK) {
            match self.give_back.get() {
                Some(was) => lock::restore(word, was, self.heap.backing.shared()),
                None => lock::release(word, self.heap.backing.shared()),
            }
        }
    }
}

impl Heap {
    /// Wraps a validated region. `tag` is this process's owner tag; `recovery` runs on a
    /// takeover of a dead holder's lock.
    pub(crate) fn new(
        region: Region,
        backing: Box<dyn Backing>,
        tag: u32,
        recovery: Recovery,
    ) -> Result<Heap> {
        let key = region.load(SB_KEY)?;
        static NEXT_ID: crate::sync::local::AtomicU64 = crate::sync::local::AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let lives = crate::engine::heap::family::Lives::new();
        let spans = region.load32(SB_VERSION)? >= 2;
        Ok(Heap {
            region,
            backing,
            key: AtomicU64::new(key),
            tag,
            recovery,
            holds: Mutex::default(),
            id,
            index: 0,
            caches: Default::default(),
            lives,
            spans,
            recovered: Mutex::default(),
            abandoned: false,
            access: Access::Normal,
            slabs: None,
            purges: None,
            exchange_held: Default::default(),
            lost: AtomicU64::new(0),
        })
    }

    /// A heap over a store mapped read-only, for `ReadOnlyStore`: nothing may write through it.
    /// Its lock is refused (`Error::ReadOnly`), so that a write path reached by mistake fails
    /// instead of faulting, and dropping it writes nothing. Only the read paths that
    /// `mapped/read_only.rs` calls, which make relaxed loads, run on it.
    pub(crate) fn read_only(
        region: Region,
        backing: Box<dyn Backing>,
        path: &std::path::Path,
        recovery: Recovery,
    ) -> Result<Heap> {
        let mut heap = Heap::new(region, backing, READ_ONLY_TAG, recovery)?;
        heap.access = Access::ReadOnly(path.to_owned());
        Ok(heap)
    }

    /// A heap over a store whose lock the caller holds (with `tag`, not this heap's) for as
    /// long as the heap lives, to inspect it in place (`inspect/take.rs`): its `lock` only
    /// stands for the caller's, and dropping it writes nothing. Only read paths run on it.
    pub(crate) fn inspected(
        region: Region,
        backing: Box<dyn Backing>,
        tag: u32,
        recovery: Recovery,
    ) -> Result<Heap> {
        let mut heap = Heap::new(region, backing, tag, recovery)?;
        heap.access = Access::Inspected;
        Ok(heap)
    }

    /// An in-process heap (before it is shared with any thread): small raw allocations come
    /// from slabs, and free space goes back to the system.
    pub(crate) fn in_process(mut self) -> Heap {
        self.slabs = crate::engine::heap::slab::Slabs::new(&self.region).ok();
        self.purges = Some(Default::default());
        self
    }

    /// Whether other processes can attach to the heap (a store).
    pub(crate) fn shared(&self) -> bool {
        self.backing.shared()
    }

    /// This process's owner tag.
    #[inline]
    pub(crate) fn tag(&self) -> u32 {
        self.tag
    }

    /// The store's key (check words).
    #[inline]
    pub(crate) fn key(&self) -> u64 {
        self.key.load(Ordering::Relaxed)
    }

    /// Salvage: the store's key is `key` from now on (`SB_KEY` is rewritten with it).
    pub(crate) fn set_key(&self, key: u64) -> Result<()> {
        self.region.store(SB_KEY, key)?;
        self.key.store(key, Ordering::Relaxed);
        Ok(())
    }

    /// Whether an allocation of `len` bytes aligned to `1 << align_log2` for a `MemoryBlock`
    /// is a slot.
    #[inline]
    pub(crate) fn slot_for(&self, len: u64, align_log2: u32) -> bool {
        self.spans && align_log2 == 4 && len <= SLOT_MAX
    }

    /// This process's registry slot, if the memory is shared between processes.
    pub(crate) fn slot(&self) -> Option<u32> {
        self.backing.slot()
    }

    /// Whether the process attached to `slot` is gone (a slot that does not exist: yes).
    pub(crate) fn slot_dead(&self, slot: u32) -> bool {
        self.backing.owner_dead(slot + 1)
    }

    /// Whether the process tagged `holder` (0: nobody) holds a lock kept in a store word (a
    /// ring's send or receive lock, a stack of the exchange) that recovery must wait for: not
    /// in a copy (nobody finishes anything there), nor a process in `dead` (registry slots) or
    /// dead since; for this process's own tag, as `own_holds` says whether a thread of it holds
    /// one (else the word names us by damage).
    pub(crate) fn holder_lives(&self, holder: u32, dead: &[u64], own_holds: impl FnOnce() -> bool) -> bool {
        match holder {
            0 => false,
            h if !self.shared() || dead.contains(&(u64::from(h) - 1)) => false,
            h if h == self.tag => own_holds(),
            h => !self.slot_dead(h - 1),
        }
    }

    /// A core over the heap as it is now. A capacity beyond what this process can touch is
    /// another process's growth (outside the lock, nothing else made it reachable here): it is
    /// followed first, else the core would take the capacity for damage.
    pub(crate) fn core(&self) -> Core<'_> {
        let core = Core::new(&self.region);
        if core.knows_capacity() {
            return core;
        }
        // An error leaves the core without a capacity, which its users report as damage.
        let _ = self.follow_growth();
        Core::new(&self.region)
    }

    /// Takes the store lock, repairs the heap if its last holder died, and makes any growth by
    /// another process reachable. A repair that finds the store damaged leaves it as it was,
    /// gives the lock back to the dead holder (so that the next taker finds it and tries again
    /// rather than proceed on a half-changed store) and is this call's error. A repair's report
    /// is kept for [`Heap::take_recovered`].
    pub(crate) fn lock(&self) -> Result<Guard<'_>> {
        let (guard, was) = self.lock_as_is()?;
        if was.is_some() {
            let report = or_give_back(&guard, was, self.run_recovery(&guard, false))?;
            self.note_recovered(&report);
        }
        // What this thread deferred goes back now, before whatever the lock was taken for.
        if let Some(c) = self.cache_in_use() {
            c.free_deferred(self, &guard);
        }
        self.purge_waiting();
        Ok(guard)
    }

    /// Takes the store lock without repairing anything, and makes any growth by another
    /// process reachable. With the lock word it was taken from if its holder had died (the
    /// caller owes a recovery, and gives the word back if that fails).
    pub(crate) fn lock_as_is(&self) -> Result<(Guard<'_>, Option<u32>)> {
        if let Some(e) = self.lost_error() {
            return Err(e);
        }
        if let Access::ReadOnly(path) = &self.access {
            return Err(Error::ReadOnly { path: path.clone() });
        }
        if self.locked_here() {
            return Err(Error::Reentrant);
        }
        if let Access::Inspected = self.access {
            // Held by the inspector, which found a living or no holder: nothing to repair,
            // and the capacity cannot change while it is held.
            return Ok((Guard::new(self), None));
        }
        let word = self.region.u32_at(SB_LOCK)?;
        let before = word.load(Ordering::Relaxed);
        let how = lock::acquire(word, self.tag, self.backing.shared(), |t| self.backing.owner_dead(t));
        let guard = Guard::new(self);
        let was = match how {
            // The word as this process first saw it if the dead holder is the same (the
            // waiters' `CONTENDED` bit aside): a failed repair then leaves it as it was.
            Acquired::TakenOver(was) if (before ^ was) & !lock::CONTENDED == 0 => Some(before),
            Acquired::TakenOver(was) => Some(was),
            Acquired::Normally => None,
        };
        if let Some(was) = was {
            guard.restore_on_drop(was); // until the caller's repair succeeds
                                        // The repair reads what the dead holder left, anywhere in the heap.
            self.check_length()?;
        }
        self.follow_growth()?;
        guard.give_back.set(None);
        Ok((guard, was))
    }

    /// Makes a capacity that another process published reachable here (under the lock, or
    /// for a store opened read-only, which grows only by others).
    pub(crate) fn follow_growth(&self) -> Result<()> {
        let cap = self.region.load(SB_CAPACITY)?;
        if cap > self.region.limit() {
            self.backing.refresh(&self.region, cap).inspect_err(|e| self.note_lost(e))?;
        }
        Ok(())
    }

    /// The reference word of the block or slot `off` this process holds (for ids read from
    /// the store, slots are checked from scratch: [`Heap::slot_word`]).
    fn rc_word(&self, off: u64) -> Result<&AtomicU64> {
        if is_slot(off) {
            return self.slot_word(off);
        }
        // An offset read from the store may be anything: one near `u64::MAX` is out of range.
        let at = off.checked_add(HDR_RC).ok_or(Error::corrupt("block offset out of range", off))?;
        self.region.u64_at(at)
    }

    /// As [`Heap::rc_word`] for a block or slot this process holds a reference to, `None` when
    /// out of range (the hot paths' form, `Region::word`).
    #[inline]
    pub(crate) fn rc_ref(&self, off: u64) -> Option<&AtomicU64> {
        // A select, not a branch: blocks and slots come mixed, at random.
        // An offset near `u64::MAX` (read from a damaged store) is out of range, not wrapped.
        let at = if is_slot(off) { Some(self.slot_rc_offset(off)) } else { off.checked_add(HDR_RC) };
        self.region.word(at?)
    }

    /// Whether this thread holds this heap's lock (then allocating from it would deadlock).
    #[inline]
    pub(crate) fn locked_here(&self) -> bool {
        LOCKED.with(|l| std::ptr::eq(l.get(), self))
    }

    /// A default-aligned block of `len` bytes from this thread's cache, its payload's range
    /// checked, and its size, its family counted in the cache; `None` when the size is not
    /// cached or the cache cannot serve it (the caller then takes the lock, which also reports
    /// any error).
    #[inline]
    fn take_cached(&self, len: u64, slot: bool) -> Option<(u64, u64)> {
        if len >= crate::engine::heap::cache::CLASS_LIMIT || self.lost() {
            return None;
        }
        let c = self.cache()?;
        let (off, size) = c.take(self, len, slot).ok()??;
        self.payload_at(off, len)?;
        c.count_family(1);
        Some((off, size))
    }

    /// Parks a block whose count is zero (it has just reached zero, or it is a raw block being
    /// released) in this thread's cache, or frees it. Its owner field still names this process.
    ///
    /// # Safety
    /// The block's reference word (`off + HDR_RC`) was range-checked: the tag before it is in
    /// range too.
    #[inline]
    unsafe fn park_or_free(&self, off: u64) {
        if is_slot(off) {
            return self.park_or_free_sized(off, id_class(off), 4, true);
        }
        // SAFETY: `off + HDR_TAG .. + 8` lies below the checked reference word and shares its
        // alignment (the caller's contract); the limit only grows.
        let t = Tag(unsafe { self.region.word_unchecked(off + HDR_TAG) }.load(Ordering::Relaxed));
        if !t.holdable() {
            // The header was damaged while we held the block (a store is never trusted): its
            // size cannot be believed, so the block is leaked rather than parked or freed.
            return;
        }
        if t.has_trailer() {
            // Never parked: what it links is released as it is freed (`links.rs`), and a cache
            // reuses a block without rewriting its tag.
            return self.free_parked_now(off);
        }
        self.park_or_free_sized(off, t.size(), t.align_log2(), false);
    }

    /// As [`Heap::park_or_free`], for a block or slot (`slot`) whose size and alignment the
    /// caller knows.
    #[inline]
    fn park_or_free_sized(&self, off: u64, size: u64, align_log2: u32, slot: bool) {
        if let Some(c) = self.cache() {
            // A default-aligned block parks on a stack if its class has room, else (or if it
            // is aligned: the stacks serve default alignment only) on the deferred list.
            if align_log2 == 4 && c.put(self, off, size, slot) || c.defer(self, off, size) {
                return;
            }
        }
        self.free_parked_now(off);
    }

    /// Frees a block this process owns with count zero, under the lock (no cache could keep it).
    #[cold]
    fn free_parked_now(&self, off: u64) {
        if let Ok(g) = self.lock() {
            // An error means a corrupt heap; the block is leaked rather than risk more.
            let _ = self.free_owned_locked(&g, off);
        }
    }

    // ---- allocation -------------------------------------------------------------------

    /// Allocates a block of `len` bytes aligned to `1 << align_log2` for a new `MemoryBlock`,
    /// owned by this process (a slot if it is small enough, `slot_for`), and counts the new
    /// family (`family.rs`): from this thread's cache if it can (counted there, no second
    /// lookup of the cache), else under the lock, its payload's range checked. Returns its
    /// offset, and its size if it came from the cache, else 0. A block from the cache is
    /// *lent*: its reference word stays parked (count 0) until the `MemoryBlock` ends the
    /// lending, and with the size its release parks it again without touching its header
    /// ([`Heap::release_lent`]). One carved under the lock has one owner reference counted.
    #[inline]
    pub(crate) fn allocate(&self, len: u64, align_log2: u32) -> Result<(u64, u64)> {
        let slot = self.slot_for(len, align_log2);
        if align_log2 == 4 {
            if let Some(got) = self.take_cached(len, slot) {
                return Ok(got);
            }
        }
        let offset = self.allocate_uncached(len, align_log2, slot)?;
        self.payload(offset, len)?;
        self.family_begins();
        Ok((offset, 0))
    }

    /// Allocates under the lock (the thread's cache could not serve the request).
    fn allocate_uncached(&self, len: u64, align_log2: u32, slot: bool) -> Result<u64> {
        let g = self.lock()?;
        match slot {
            true => self.allocate_slot_locked(&g, len),
            false => self.allocate_locked(&g, len, align_log2),
        }
    }

    pub(crate) fn allocate_locked(&self, g: &Guard<'_>, len: u64, align_log2: u32) -> Result<u64> {
        let carved = self.carve_locked(g, len, align_log2)?;
        let off = carved.offset;
        pause("alloc-carved");
        self.stamp_or_undo(g, off, rc::fresh(u64::from(self.tag)))?;
        Ok(off)
    }

    /// As [`Heap::allocate_locked`] with default alignment, from the free space there is:
    /// `OutOfSpace` rather than growth.
    pub(crate) fn allocate_without_growth(&self, g: &Guard<'_>, len: u64) -> Result<u64> {
        let max = self.max_size()?;
        let c = self.core().alloc_fit(len, 4)?.ok_or_else(|| Error::out_of_space(len, max))?;
        self.stamp_or_undo(g, c.offset, rc::fresh(u64::from(self.tag)))?;
        Ok(c.offset)
    }

    /// [`Heap::stamp`], and if it fails (no generation left: a damaged store), the block
    /// just carved is freed again, so the heap is as it was.
    fn stamp_or_undo(&self, g: &Guard<'_>, off: u64, word: u64) -> Result<()> {
        let stamped = self.stamp(g, off, word);
        if stamped.is_err() {
            let _ = self.core().free(off);
        }
        stamped
    }

    /// Writes a new generation, the check word and the reference word `word` into the header
    /// of a block just carved (under the lock).
    fn stamp(&self, g: &Guard<'_>, off: u64, word: u64) -> Result<()> {
        let (gen, _) = self.reserve_generations(g, 1)?;
        self.region.store(off + HDR_GEN, gen)?;
        self.region.store(off + HDR_CHECK, check_word(self.key(), off, gen))?;
        self.rc_word(off)?.store(word, Ordering::Release);
        Ok(())
    }

    /// Reserves `n` generations never issued before: returns the range `[start, end)`.
    pub(crate) fn reserve_generations(&self, _g: &Guard<'_>, n: u64) -> Result<(u64, u64)> {
        let gen = self.region.load(SB_NEXT_GEN)?;
        let next = gen.checked_add(n).ok_or(Error::corrupt("generation counter exhausted", SB_NEXT_GEN))?;
        self.region.store(SB_NEXT_GEN, next)?;
        Ok((gen, next))
    }

    /// Carves a block for `len` bytes from the free space there is (no growth) and leaves it
    /// parked: owned by this process, count zero. Returns its offset and size.
    pub(crate) fn carve_parked(&self, g: &Guard<'_>, len: u64) -> Result<Option<(u64, u64)>> {
        let Some(c) = self.core().alloc(len, 4)? else { return Ok(None) };
        self.stamp_or_undo(g, c.offset, rc::parked(u64::from(self.tag)))?;
        Ok(Some((c.offset, c.size)))
    }

    /// The store's maximum size (`SB_MAX_SIZE`).
    pub(crate) fn max_size(&self) -> Result<u64> {
        self.region.load(SB_MAX_SIZE)
    }

    /// Processes attached to the store now (1 for memory that is not a store's).
    pub(crate) fn attached(&self) -> u64 {
        self.backing.attached(&self.region)
    }

    /// Carves a block of `len` bytes aligned to `1 << align_log2` (under the lock): see
    /// [`Heap::with_room`].
    fn carve_locked(
        &self,
        g: &Guard<'_>,
        len: u64,
        align_log2: u32,
    ) -> Result<crate::engine::core::tlsf::Carved> {
        self.with_room(g, len, align_log2, |core, exact| core.alloc_either(len, align_log2, exact))
    }

    // ---- resize -----------------------------------------------------------------------

    /// Resizes the block at `off` (`old_len` bytes long) for `who`, which must hold it as its
    /// only reference. Returns the new offset when it moved, in which case `who` holds the new
    /// block as it held the old one.
    pub(crate) fn resize(&self, off: u64, old_len: u64, new_len: u64, who: Resizer) -> Result<Option<u64>> {
        let g = self.lock()?;
        let w = self.rc(off);
        if let Resizer::Block { local_extra, .. } = who {
            let count = rc::count(w) + local_extra;
            if count != 1 {
                return Err(Error::Shared { count });
            }
        }
        let align_log2 = match is_slot(off) {
            true if new_len <= id_class(off) => {
                if rc::published(w) {
                    self.set_slot_len(&g, off, new_len)?;
                }
                return Ok(None);
            }
            true => 4,
            false => {
                let old = self.core().block_at(off)?;
                if old.has_trailer() {
                    return Err(Error::LinkLayout(
                        "the length of a block with links or a shared area is fixed",
                    ));
                }
                // A published block's tag slack is its published length: it gets no room.
                let room = old.size().saturating_sub(HEADER_SIZE);
                let roomy = new_len > room && !rc::published(w);
                if roomy && self.core().resize_in_place(off, with_room(new_len))? {
                    return Ok(None);
                }
                if self.core().resize_in_place(off, new_len)? {
                    return Ok(None);
                }
                old.align_log2()
            }
        };
        let new = match who {
            Resizer::Block { .. } if self.slot_for(new_len, align_log2) => {
                self.allocate_slot_locked(&g, new_len)?
            }
            // Room only from free space there is: never a growth of the heap for it.
            _ => match (align_log2 == 4).then(|| self.allocate_without_growth(&g, with_room(new_len))) {
                Some(Ok(new)) => new,
                _ => self.allocate_locked(&g, new_len, align_log2)?,
            },
        };
        let keep = old_len.min(new_len) as usize;
        let src = self.region.ptr(payload_of(off), keep as u64)?;
        let dst = self.region.ptr(payload_of(new), keep as u64)?;
        // SAFETY: both payloads are inside the region, distinct blocks (so they do not
        // overlap), and solely ours: the old one has exactly one holder (the caller) and
        // the new one was just carved under the lock we hold.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_ptr(), keep) };
        pause("resize-copied");
        self.free_owned_locked(&g, off)?;
        match (who, self.slot()) {
            (Resizer::Raw, _) => self.rc_word(new)?.store(rc::parked(u64::from(self.tag)), Ordering::Release),
            (Resizer::Block { hold_index: Some(i), .. }, Some(slot)) => {
                self.hold_table().erase(self, &g, slot, i)?
            }
            _ => {}
        }
        Ok(Some(new))
    }

    /// A pointer to the payload of the block at `off`.
    pub(crate) fn payload(&self, off: u64, len: u64) -> Result<NonNull<u8>> {
        self.region.ptr(payload_of(off), len)
    }

    /// As [`Heap::payload`], `None` when out of range (for the hot paths).
    #[inline]
    pub(crate) fn payload_at(&self, off: u64, len: u64) -> Option<NonNull<u8>> {
        self.region.bytes(payload_of(off), len)
    }

    // ---- whole-heap -------------------------------------------------------------------

    /// Frees what this thread keeps parked (`MemoryManager::trim`): taking the lock frees its
    /// deferred list, then its stacks go, and what waits on the store's exchange.
    pub(crate) fn trim(&self) -> Result<()> {
        if let (Some(slabs), Some(c)) = (&self.slabs, self.cache_in_use()) {
            c.slabs.tidy(self, slabs);
        }
        self.tidy_orphans();
        let g = self.lock()?;
        self.give_back_cache(&g);
        self.purge_all(&g);
        if let Some(slabs) = &self.slabs {
            slabs.purge_pools();
        }
        Ok(())
    }
}

impl Drop for Heap {
    fn drop(&mut self) {
        table::unregister(self.index);
        if self.abandoned || !matches!(self.access, Access::Normal) {
            return;
        }
        // A truncation this process did not notice would make the drain below die of SIGBUS:
        // one `fstat` first. A lost heap leaves its slot to the next opener's recovery.
        if self.lost() || self.check_length().is_err() {
            return;
        }
        let Ok(g) = self.lock() else { return };
        crate::engine::heap::cache::drain(self, &g);
        if self.backing.attached(&self.region) <= 1 {
            // The last process leaves no block waiting on the exchange.
            crate::engine::heap::cache::exchange::drain(self, &g);
        }
        self.backing.detach(&self.region);
    }
}

/// The lock and owner tag of a heap opened read-only: no registry slot has it, and it never
/// takes the lock.
const READ_ONLY_TAG: u32 = 0x7fff_fffe;

/// The first generation of a new store or heap is drawn from `1..=FIRST_GEN_RANGE` (2^40: a
/// store can issue 2^56 - 2^40 generations after it, `PAGE_GEN_MASK`).
const FIRST_GEN_RANGE: u64 = 1 << 40;

/// Writes a fresh superblock and an empty heap into `region` (which must reach `capacity`).
pub(crate) fn format_region(region: &Region, capacity: u64, max_size: u64, flags: u32) -> Result<()> {
    region.write_bytes(SB_MAGIC, &MAGIC)?;
    region.store32(SB_VERSION, FORMAT_VERSION)?;
    region.store32(SB_FLAGS, flags)?;
    region.store(SB_FINGERPRINT, fingerprint())?;
    region.store(SB_KEY, random_u64())?;
    region.store(SB_MAX_SIZE, max_size)?;
    // Generations start at a random place: a handle of another store (or another in-process
    // heap), whose generations run in a range of their own, is then no handle here.
    region.store(SB_NEXT_GEN, 1 + random_u64() % FIRST_GEN_RANGE)?;
    region.store32(SB_LOCK, 0)?;
    region.store(SB_GROWTHS, 0)?;
    Core::new(region).init(capacity)
}

/// A random number from the standard library's per-process hash seed (no extra dependency).
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// What a resize that grows a block asks the core for: a quarter more than `len` (at least 64
/// bytes more), so that a block grown step by step (a buffer appended to) grows again within
/// its own payload, without the lock (`MemoryBlock::resize_within`), as often as not. The
/// room is the block's until it is published, when `settle_locked` gives back what the tag's
/// slack cannot hold.
fn with_room(len: u64) -> u64 {
    len.saturating_add((len / 4).max(64)).checked_next_multiple_of(GRANULE).unwrap_or(len)
}
