//! What keeps a heap (its mapping, its registry slot) alive in this process: its *users*
//! (managers, channels, other holds; [`HeapRef`]) and its *families* (the owner references this
//! process holds to one block, see `block.rs`).
//!
//! Users are few and long-lived: an atomic count. Families start and end on every allocation
//! and release, so they are counted without atomic read-modify-writes: each thread cache keeps
//! a count of the families begun minus the families ended on its thread (only that thread
//! writes it; it may go below zero when blocks move between threads), and a thread without a
//! cache counts in a shared atomic ([`Lives::homeless`]). The sum over all of them is the
//! number of live families; nobody can read it cheaply, and nobody needs to until the last
//! user is gone:
//!
//! - When the last user goes, the heap is *orphaned*: no family can begin any more (a family
//!   begins only through a user: allocating, resolving, receiving). [`Lives::orphan`] sets the
//!   flag, runs a heavy barrier (`membarrier`) and sums the counts; at zero it lets the heap go.
//! - A family that ends stores its thread's count, runs a light barrier (a compiler fence) and
//!   reads the flag; if it is set, it sums the counts itself ([`Lives::settle`]) and lets the
//!   heap go at zero. The barrier pair guarantees that of the orphaning and each ending at least
//!   one sees the other, so whoever sums last sees every ending; summing under a mutex makes
//!   exactly one of them let the heap go.
//! - A sum can only over-count: every beginning happened before the orphaning (through the
//!   users' count) and is seen by any sum after it; an ending it misses makes the sum too
//!   large, never too small. So the heap is never let go while a family lives.
//!
//! "Letting go" drops the `Arc<Heap>` count that all families share, kept in [`Lives::keep`]
//! from the heap's creation. After a thread stores its ending, it touches only its cache (kept
//! alive by the thread's claim) and [`Lives`] (kept alive by the cache), never the heap.

use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use crate::engine::heap::Heap;
use crate::error::Result;
use crate::sync::{AtomicU64, AtomicU8, Ordering};
use crate::sys;

/// How a heap's families are counted, and the count that keeps the heap alive for them.
pub(crate) struct Lives {
    /// Live [`HeapRef`]s. Only goes up while it is above zero.
    users: AtomicU64,
    /// 1 once `users` reached zero (never cleared).
    orphaned: AtomicU8,
    /// Families begun minus ended on threads without a cache (wrapping).
    homeless: AtomicU64,
    /// The `Arc<Heap>` count all families share; taken (dropped) when the heap is orphaned and
    /// no family is left.
    keep: Mutex<Option<Arc<Heap>>>,
}

impl Lives {
    pub(crate) fn new() -> Arc<Lives> {
        sys_registered();
        Arc::new(Lives {
            users: AtomicU64::new(0),
            orphaned: AtomicU8::new(0),
            homeless: AtomicU64::new(0),
            keep: Mutex::new(None),
        })
    }

    /// The last user is gone: from now on every ending family checks whether it was the last.
    fn orphan(&self) {
        self.orphaned.store(1, Ordering::SeqCst);
        if sys::heavy_barrier() {
            self.settle();
        }
        // Else the kernel refused the barrier: a sum now could miss an ending whose thread
        // did not see the flag; the heap stays (leaked, never freed while in use).
    }

    /// The heap, if anything keeps it alive still (a strong count: the heap is dropped, if this
    /// turns out to be the last, when the caller lets it go).
    pub(crate) fn heap(&self) -> Option<Arc<Heap>> {
        self.keep.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Lets the heap go if no family is left (under the mutex, so only one caller does).
    #[cold]
    fn settle(&self) {
        let mut keep = self.keep.lock().unwrap_or_else(|p| p.into_inner());
        let last = keep.as_ref().is_some_and(|heap| heap.families_alive() == 0);
        let gone = if last { keep.take() } else { None };
        drop(keep);
        drop(gone); // may drop the heap: outside the mutex, which the heap's drop does not need
    }

    /// Counts an ending on a thread without a cache, then checks for orphaning.
    fn end_homeless(self: Arc<Self>) {
        self.homeless.fetch_sub(1, Ordering::SeqCst);
        if self.orphaned.load(Ordering::SeqCst) != 0 {
            self.settle();
        }
    }

    /// Families begun minus ended on threads without a cache.
    pub(crate) fn homeless(&self) -> u64 {
        self.homeless.load(Ordering::SeqCst)
    }

    /// Checks for orphaning after an ending stored in a thread cache's count.
    #[inline]
    pub(crate) fn after_ending(&self) {
        sys::light_barrier();
        if self.orphaned.load(Ordering::Acquire) != 0 {
            self.settle();
        }
    }
}

/// Registers the process for the barriers once, before the first heap.
fn sys_registered() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(sys::register_barriers);
}

/// A user of a heap: an `Arc<Heap>` that also counts in [`Lives`]. Managers, channels and
/// other holds keep their heap through one.
pub(crate) struct HeapRef(Arc<Heap>);

impl HeapRef {
    /// Registers a new heap (`heap/table.rs`) and wraps it: its first user, and the
    /// families' shared count.
    pub(crate) fn new(heap: Heap) -> Result<HeapRef> {
        let heap = crate::engine::heap::table::register(heap)?;
        heap.lives.users.store(1, Ordering::Relaxed);
        *heap.lives.keep.lock().unwrap_or_else(|p| p.into_inner()) = Some(heap.clone());
        Ok(HeapRef(heap))
    }
}

impl HeapRef {
    /// A new user of `heap`, unless it has none left (it is orphaned: only its families keep it,
    /// and no reference can be made through it any more).
    pub(crate) fn another(heap: Arc<Heap>) -> Option<HeapRef> {
        let users = &heap.lives.users;
        users.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n > 0).then_some(n + 1)).ok()?;
        Some(HeapRef(heap))
    }
}

impl Deref for HeapRef {
    type Target = Arc<Heap>;
    fn deref(&self) -> &Arc<Heap> {
        &self.0
    }
}

impl Clone for HeapRef {
    fn clone(&self) -> HeapRef {
        let before = self.0.lives.users.fetch_add(1, Ordering::Relaxed);
        debug_assert!(before > 0, "a user made from an orphaned heap");
        HeapRef(self.0.clone())
    }
}

impl Drop for HeapRef {
    fn drop(&mut self) {
        if self.0.lives.users.fetch_sub(1, Ordering::AcqRel) == 1 {
            if self.0.lost() {
                // Blocks of a lost heap may keep it (and its descriptor) until the process
                // exits (`release_owner_lost`): its slot goes to the next opener now.
                self.0.backing.give_up_slot();
            }
            // Our own `Arc` count keeps the heap alive through this.
            self.0.lives.orphan();
        }
    }
}

impl Heap {
    /// Counts a new family of owner references. The caller holds a user (`HeapRef`): no family
    /// begins once the heap is orphaned.
    #[inline]
    pub(crate) fn family_begins(&self) {
        match self.cache_in_use() {
            Some(c) => c.count_family(1),
            None => {
                self.lives.homeless.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// Counts the end of a family of owner references: after this, the heap may be gone.
///
/// # Safety
///
/// `heap` points to a live heap, and the caller held a family that [`Heap::family_begins`]
/// counted, whose last owner reference has just gone; the caller does not use the heap after.
#[inline]
pub(crate) unsafe fn family_ends(heap: NonNull<Heap>) {
    // SAFETY: the caller's family is still counted, so the heap is alive.
    let h = unsafe { heap.as_ref() };
    match h.cache_in_use() {
        // The cache is kept alive by this thread's claim (`cache/claims.rs`, `CLAIMS`), not only by
        // the heap, so it outlives the heap if this ending lets the heap go.
        Some(c) => c.end_family(),
        None => h.lives.clone().end_homeless(),
    }
}
