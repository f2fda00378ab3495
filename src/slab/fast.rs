//! The process-wide heap's fast paths: a small allocation from the calling thread's slabs, and
//! the release of a block of a slab the calling thread owns, each with one thread-local read
//! and no lookup of the heap, its cache or its lock.
//!
//! The general paths (`Heap::alloc_raw`, `Heap::free_raw`) find the heap through
//! `DefaultManager`, the thread's cache through the heap's id, and then the slabs: some ninety
//! instructions and a dozen dependent loads for what is, most of the time, popping a list.
//! Here the process-wide heap's [`Slabs`] are published once in a static when the heap is made
//! (it lives as long as the process), and the thread's [`Local`] for it in a thread-local when
//! the thread claims its cache, cleared when the claim ends. Anything the fast paths do not
//! handle (no cache yet, an empty slab, another thread's slab, a release that empties a slab
//! or finds it off its queue) they leave to the general paths, untouched.

use std::cell::Cell;
use std::ptr::NonNull;

use super::{class_of, Local, Slabs, SLAB_MAX};
use crate::sync::{AtomicPtr, Ordering};

/// The process-wide heap's slabs, once it is made (never unset: the heap lives for ever).
static GLOBAL: AtomicPtr<Slabs> = AtomicPtr::new(std::ptr::null_mut());

thread_local! {
    /// This thread's `Local` for the process-wide heap: set while the thread holds a claim on
    /// a cache of that heap, null otherwise.
    static MINE: Cell<*const Local> = const { Cell::new(std::ptr::null()) };
}

/// Publishes the process-wide heap's slabs.
pub(crate) fn publish(slabs: &'static Slabs) {
    GLOBAL.store(slabs as *const Slabs as *mut Slabs, Ordering::Release);
}

/// Whether `slabs` are the process-wide heap's.
pub(crate) fn is_global(slabs: &Slabs) -> bool {
    std::ptr::eq(GLOBAL.load(Ordering::Relaxed), slabs)
}

/// Records (or, with `None`, forgets) this thread's `Local` for the process-wide heap.
pub(crate) fn set_mine(local: Option<&Local>) {
    let _ = MINE.try_with(|m| m.set(local.map_or(std::ptr::null(), |l| l as *const Local)));
}

/// This thread's `Local` for the process-wide heap, if it has one.
#[inline(always)]
fn mine() -> Option<&'static Local> {
    let p = MINE.try_with(Cell::get).ok()?;
    // SAFETY: `MINE` names the `Local` of a cache this thread claimed for the process-wide
    // heap and still holds (it is cleared when the claim ends); caches live as long as their
    // heap, which lives for ever, and only the claiming thread uses a `Local`'s queues.
    unsafe { p.as_ref() }
}

/// A block of `len` bytes (16-byte aligned) from the process-wide heap, if the calling thread's
/// slab of its class has one ready.
#[inline(always)]
pub(crate) fn alloc(len: usize) -> Option<NonNull<u8>> {
    if len as u64 > SLAB_MAX {
        return None;
    }
    mine()?.alloc_ready(class_of(len as u64))
}

/// Frees `p` if it is a block of a slab of the process-wide heap that the calling thread owns
/// and the release needs nothing but the push; `false` (nothing done) otherwise.
#[inline(always)]
pub(crate) fn free(p: *mut u8) -> bool {
    // SAFETY: `GLOBAL` is null or the process-wide heap's slabs, which live for ever.
    let Some(slabs) = (unsafe { GLOBAL.load(Ordering::Acquire).as_ref() }) else { return false };
    let off = (p as usize).wrapping_sub(slabs.base);
    if off >= slabs.len {
        return false;
    }
    let Some(s) = slabs.slab_at(off as u64) else { return false };
    match mine() {
        Some(l) if s.owner.load(Ordering::Relaxed) == l as *const Local as usize => {
            l.free_quiet(s, p as usize)
        }
        _ => false,
    }
}
