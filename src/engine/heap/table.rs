//! The process's table of registered heaps, by which a `MemoryBlock` names its heap: a 16-bit
//! index packed beside the block's length, so that the handle is two words, which the compiler
//! passes and copies as two scalars (a four-word handle is copied as a block of memory with
//! wide loads, which wait for every store before them: `BENCHMARKS.md`, seventh session).
//!
//! An entry is set when its heap is wrapped for use ([`register`], from `HeapRef::new`) and
//! cleared when the heap is dropped ([`unregister`]). A heap lives as long as any block of it
//! (`family.rs`), so an index that a block carries always names that block's heap: an index is
//! reused only after its heap, and with it every block naming it, is gone.

use std::ptr;
use std::sync::{Arc, Mutex};

use super::Heap;
use crate::error::{Error, Result};
use crate::sync::{AtomicPtr, Ordering};

/// Entries; index 0 is never given out (it marks an unregistered heap).
const ENTRIES: usize = 1 << 16;

/// Registered heaps. Set iff the index is taken: the pointer is the `Arc` allocation of the
/// heap, which lives until its `Drop` clears the entry.
static HEAPS: [AtomicPtr<Heap>; ENTRIES] = [EMPTY; ENTRIES];
/// An empty entry: a constant to repeat (an inline `const` block needs Rust 1.79), copied
/// into each element, never used as a shared atomic itself.
#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: AtomicPtr<Heap> = AtomicPtr::new(ptr::null_mut());

/// Indices given back by dropped heaps, and the next never used.
struct Free {
    next: usize,
    released: Vec<u16>,
}

impl Free {
    const fn new() -> Free {
        Free { next: 1, released: Vec::new() }
    }

    fn take(&mut self) -> Option<u16> {
        if let Some(i) = self.released.pop() {
            return Some(i);
        }
        let i = u16::try_from(self.next).ok()?;
        self.next += 1;
        Some(i)
    }

    fn give(&mut self, index: u16) {
        debug_assert!(index != 0 && usize::from(index) < self.next && !self.released.contains(&index));
        self.released.push(index);
    }
}

static FREE: Mutex<Free> = Mutex::new(Free::new());

fn free() -> std::sync::MutexGuard<'static, Free> {
    FREE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Gives `heap` an index and wraps it in its `Arc`; [`Error::TooManyManagers`] if every index
/// is taken.
pub(crate) fn register(mut heap: Heap) -> Result<Arc<Heap>> {
    let index = free().take().ok_or(Error::TooManyManagers)?;
    heap.index = index;
    let heap = Arc::new(heap);
    HEAPS[usize::from(index)].store(Arc::as_ptr(&heap).cast_mut(), Ordering::Release);
    Ok(heap)
}

/// Clears a dropped heap's entry and gives its index back (nothing for an unregistered heap).
pub(crate) fn unregister(index: u16) {
    if index != 0 {
        HEAPS[usize::from(index)].store(ptr::null_mut(), Ordering::Release);
        free().give(index);
    }
}

/// The heap registered at `index`.
///
/// # Safety
///
/// `index` is a registered heap's, which the caller knows to be alive (a block of it lives).
#[inline]
pub(crate) unsafe fn get<'h>(index: u16) -> &'h Heap {
    // Relaxed: the entry was stored before the heap was handed to anyone, and every way the
    // caller came to know of the heap (the block, through the manager) happened after that.
    let p = HEAPS[usize::from(index)].load(Ordering::Relaxed);
    debug_assert!(!p.is_null(), "heap index {index} is not registered");
    // SAFETY: the caller's heap is alive and registered, so the entry points to it.
    unsafe { &*p }
}

/// The registered heaps, with the table's mutex held: no heap can be registered, and none can
/// leave the table (a heap's drop unregisters it first, so every heap listed stays valid while
/// the guard lives). For `fork.rs`.
pub(crate) fn all_held() -> (std::sync::MutexGuard<'static, impl Sized>, Vec<&'static Heap>) {
    let guard = free();
    let heaps = (1..guard.next.min(ENTRIES))
        .filter_map(|i| {
            let p = HEAPS[i].load(Ordering::Acquire);
            // SAFETY: a registered heap stays alive until it is unregistered, which waits for
            // the mutex we hold; the caller drops the references before the guard.
            (!p.is_null()).then(|| unsafe { &*p })
        })
        .collect();
    (guard, heaps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_but_zero_is_given_once_until_given_back() {
        let mut f = Free::new();
        let taken: Vec<u16> = std::iter::from_fn(|| f.take()).collect();
        assert_eq!(taken.len(), ENTRIES - 1);
        assert!(taken.iter().zip(1..).all(|(&i, want)| usize::from(i) == want));
        assert_eq!(f.take(), None, "exhausted");
        f.give(7);
        f.give(300);
        assert_eq!(f.take(), Some(300));
        assert_eq!(f.take(), Some(7));
        assert_eq!(f.take(), None);
    }

    #[test]
    fn a_registered_heap_is_found_by_its_index_until_dropped() {
        let m = crate::DefaultManager::with_max_size(1 << 22).unwrap();
        let heap = m.heap().clone();
        let index = heap.index;
        assert_ne!(index, 0);
        // SAFETY: `heap` is alive.
        assert!(std::ptr::eq(unsafe { get(index) }, &**heap));
        assert_eq!(heap.index, index);
        drop(m);
        drop(heap);
        // Given back with its entry cleared, unless a heap made meanwhile (another test) took it.
        let f = free();
        if f.released.contains(&index) {
            assert!(HEAPS[usize::from(index)].load(Ordering::Acquire).is_null());
        }
    }
}
