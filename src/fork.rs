//! `fork()`: the child gets a copy of every lock as it was, and only the forking thread. A lock
//! another thread held at the fork would stay held in the child for ever, so its first
//! allocation would wait for ever. Handlers registered with `pthread_atfork` (once, when the
//! first in-process heap is made) take, before the fork, every lock the in-process heaps'
//! allocation paths take (the heap table's mutex, then per heap: its caches' mutex, its slabs'
//! overflow and pool mutexes, and its lock word, in the order those paths nest them), and give
//! them back after it in the parent and in the child. In the child the thread caches that
//! other threads had claimed are released (those threads do not exist there), so the child's
//! threads claim them with their blocks and slabs, and a slab that a remote free on another
//! thread was in the middle of notifying (`slab/`, `NOTIFYING`) is put back to `NORMAL`.
//!
//! A store (`MappedManager`) opened before the fork is not the child's to use: the child shares
//! the parent's registry slot and liveness lock (ARCHITECTURE.md, "Known limits"); it opens the
//! store anew. The handlers take no store's lock.

use std::cell::RefCell;
use std::sync::{Arc, MutexGuard, Once};

use crate::sync::local::AtomicU32;
use crate::sync::Ordering;

use crate::engine::heap::{Guard, Heap};

/// One heap's locks, in the order they were taken (dropped in reverse: the lock word first).
struct HeapHeld {
    lock: Option<Guard<'static>>,
    pools: Option<[MutexGuard<'static, crate::engine::heap::slab::Pool>; 2]>,
    overflow: Option<MutexGuard<'static, crate::engine::heap::slab::Local>>,
    caches: Option<MutexGuard<'static, Vec<Arc<crate::engine::heap::cache::ThreadCache>>>>,
    heap: &'static Heap,
}

/// Every heap's locks, then the table's (its guard, type-erased).
type Held = (Vec<HeapHeld>, Box<dyn std::any::Any>);

thread_local! {
    /// What the forking thread holds across the fork: every heap's locks, then the table's.
    static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
}

/// Registers the handlers, once per process.
pub(crate) fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: the three handlers are `extern "C"` functions that live for the whole
        // program; registering them has no other precondition.
        unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    });
}

extern "C" fn prepare() {
    // The thread-local's first use may register its destructor, which allocates: before any
    // lock is taken.
    if HELD.try_with(|_| ()).is_err() {
        return;
    }
    let (table, heaps) = crate::engine::heap::table::all_held();
    let table: Box<dyn std::any::Any> = Box::new(table);
    let mut held: Vec<HeapHeld> = Vec::with_capacity(heaps.len());
    // Everything is allocated above: from here on nothing allocates until the locks go.
    for heap in heaps.into_iter().filter(|h| !h.shared()) {
        let caches = Some(heap.caches());
        let (overflow, pools) = match &heap.slabs {
            Some(s) => (Some(crate::engine::heap::slab::lock(&s.overflow)), Some(s.lock_all())),
            None => (None, None),
        };
        let lock = heap.lock().ok();
        held.push(HeapHeld { lock, pools, overflow, caches, heap });
    }
    let _ = HELD.try_with(|h| *h.borrow_mut() = Some((held, table)));
}

/// Gives back what `prepare` took; in the child, first releases the caches of the threads
/// that did not come along.
fn release(in_child: bool) {
    let Ok(Some((held, table))) = HELD.try_with(|h| h.borrow_mut().take()) else { return };
    for mut h in held {
        drop(h.lock.take());
        if in_child {
            if let Some(caches) = &h.caches {
                h.heap.caches_after_fork(caches);
            }
            if let Some(slabs) = &h.heap.slabs {
                slabs.after_fork_in_child();
            }
        }
        drop(h.pools.take());
        drop(h.overflow.take());
        drop(h.caches.take());
    }
    drop(table);
}

extern "C" fn parent() {
    release(false);
}

extern "C" fn child() {
    PID.store(0, Ordering::Relaxed);
    release(true);
}

/// This process's id, once asked for; 0 until then and again in a forked child (whose handler
/// clears it).
static PID: AtomicU32 = AtomicU32::new(0);

/// This process's id without a system call each time (glibc does not keep it): read once, and
/// again after a fork, whose child handler forgets it.
pub(crate) fn process_id() -> u32 {
    match PID.load(Ordering::Relaxed) {
        0 => {
            register();
            let pid = std::process::id();
            PID.store(pid, Ordering::Relaxed);
            pid
        }
        pid => pid,
    }
}
