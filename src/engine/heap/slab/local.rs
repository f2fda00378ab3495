//! A thread's slabs for one heap (`Local`): its queues, the owner's allocation and release,
//! and the blocks remote frees delayed for it (the module above says how they fit).

use std::cell::UnsafeCell;
use std::ptr::NonNull;

use super::{next_of, set_next, Slab, Slabs, CLASSES};
use crate::engine::heap::Heap;
use crate::sync::{AtomicBool, AtomicUsize, Ordering};

/// One thread's slabs for one heap: a queue per class of slabs that may have free blocks
/// (the first is the one allocated from), and the blocks remote frees delayed for it.
pub(crate) struct Local {
    /// First slab of each class's queue (address, 0 if none): touched by the owning thread
    /// only (the one that claimed the thread cache this lives in, or whoever holds the
    /// overflow mutex).
    queues: UnsafeCell<[usize; CLASSES]>,
    /// Blocks of full slabs freed by other threads, pushed with a compare-and-swap and taken
    /// whole by the owner.
    delayed: AtomicUsize,
    /// Set while no thread owns this `Local` (its thread exited; cleared when a thread claims
    /// its cache): remote frees into its slabs then count towards a sweep.
    pub(crate) orphaned: AtomicBool,
}

// SAFETY: `queues` is reached only by the one thread that owns the `Local` (see the field);
// `delayed` is atomic.
unsafe impl Sync for Local {}
// SAFETY: as above; nothing in it is tied to a thread.
unsafe impl Send for Local {}

impl Default for Local {
    fn default() -> Self {
        Local {
            queues: UnsafeCell::new([0; CLASSES]),
            delayed: AtomicUsize::new(0),
            orphaned: AtomicBool::new(false),
        }
    }
}

impl Local {
    #[allow(clippy::mut_from_ref)]
    #[inline]
    fn queues(&self) -> &mut [usize; CLASSES] {
        // SAFETY: only the owning thread calls this and keeps no reference across calls.
        unsafe { &mut *self.queues.get() }
    }

    pub(super) fn push_delayed(&self, b: usize) {
        let mut head = self.delayed.load(Ordering::Relaxed);
        loop {
            // SAFETY: `b` is a block being freed: nobody else touches it.
            unsafe { set_next(b, head) };
            match self.delayed.compare_exchange_weak(head, b, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    /// Owner: allocates a block of class `c`.
    #[inline]
    pub(crate) fn alloc(&self, heap: &Heap, slabs: &Slabs, c: usize) -> Option<NonNull<u8>> {
        self.alloc_ready(c).or_else(|| self.alloc_slow(heap, slabs, c))
    }

    /// Owner: a block of class `c` from the free list of the first slab of its queue, if it
    /// has one (the fast path).
    #[inline(always)]
    pub(super) fn alloc_ready(&self, c: usize) -> Option<NonNull<u8>> {
        let first = self.queues()[c];
        if first == 0 {
            return None;
        }
        // SAFETY: slabs on our queues are live slabs we own.
        let s = unsafe { &*(first as *const Slab) };
        let b = Slab::get(&s.free);
        if b == 0 {
            return None;
        }
        // SAFETY: `b` is on our slab's free list: a free block only we touch.
        Slab::set(&s.free, unsafe { next_of(b) });
        s.used.store(s.used.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        NonNull::new(b as *mut u8)
    }

    #[cold]
    fn alloc_slow(&self, heap: &Heap, slabs: &Slabs, c: usize) -> Option<NonNull<u8>> {
        self.take_delayed(heap, slabs);
        loop {
            let first = self.queues()[c];
            if first == 0 {
                let s = slabs.fresh(heap, self, c)?;
                self.enqueue(s);
                continue;
            }
            // SAFETY: as in `alloc`.
            let s = unsafe { &*(first as *const Slab) };
            if s.refill() {
                return self.alloc(heap, slabs, c);
            }
            // Full: off the queue, unless a remote free came in the meantime. A slab goes back
            // on a queue only in state `NORMAL` (as `free_local_slow` puts it back): were it
            // left asking to be told, nothing would collect it and this loop would not end.
            self.dequeue(s);
            if !s.ask_notify() {
                s.stop_notify();
                self.enqueue_front(s);
            }
        }
    }

    /// Owner: frees the delayed blocks as our own.
    fn take_delayed(&self, heap: &Heap, slabs: &Slabs) {
        if self.delayed.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut b = self.delayed.swap(0, Ordering::Acquire);
        while b != 0 {
            // SAFETY: delayed blocks are free blocks pushed for us (release, taken acquire).
            let next = unsafe { next_of(b) };
            if let Some(s) = slabs.slab_of_addr(b) {
                self.free_local(heap, slabs, s, b);
            }
            b = next;
        }
    }

    /// Owner: frees block `b` of our slab `s`.
    #[inline]
    pub(super) fn free_local(&self, heap: &Heap, slabs: &Slabs, s: &Slab, b: usize) {
        if !self.free_quiet(s, b) {
            self.push_local(s, b);
            self.free_local_slow(heap, slabs, s);
        }
    }

    /// Owner: frees block `b` of our slab `s` if that needs nothing but the push (the slab is
    /// on its queue and keeps a block in use, or is the first of its queue, which is never
    /// retired); `false` (nothing done) otherwise.
    #[inline(always)]
    pub(super) fn free_quiet(&self, s: &Slab, b: usize) -> bool {
        let used = s.used.load(Ordering::Relaxed);
        if s.listed.load(Ordering::Relaxed) == 0 || used == 0 {
            return false;
        }
        if used == 1 && self.queues()[s.class.load(Ordering::Relaxed) as usize % CLASSES] != s.addr() {
            return false;
        }
        self.push_local(s, b);
        true
    }

    /// Owner: puts block `b` of our slab `s` on its `local_free` list.
    #[inline(always)]
    fn push_local(&self, s: &Slab, b: usize) {
        // SAFETY: `b` is a block of our slab being freed: only we touch it now.
        unsafe { set_next(b, Slab::get(&s.local_free)) };
        Slab::set(&s.local_free, b);
        s.used.store(s.used.load(Ordering::Relaxed).wrapping_sub(1), Ordering::Relaxed);
    }

    #[cold]
    fn free_local_slow(&self, heap: &Heap, slabs: &Slabs, s: &Slab) {
        if s.listed.load(Ordering::Relaxed) == 0 {
            s.stop_notify();
            self.enqueue(s);
        }
        let c = s.class.load(Ordering::Relaxed) as usize;
        if s.used.load(Ordering::Relaxed) == 0 && self.queues()[c] != s.addr() {
            self.dequeue(s);
            slabs.retire(heap, s);
        }
    }

    /// Puts `s` on its queue, second (after the one being allocated from), or first if alone.
    fn enqueue(&self, s: &Slab) {
        let c = s.class.load(Ordering::Relaxed) as usize;
        let first = self.queues()[c];
        if first == 0 {
            return self.enqueue_front(s);
        }
        // SAFETY: slabs on our queues are live slabs we own.
        let f = unsafe { &*(first as *const Slab) };
        let after = Slab::get(&f.next);
        Slab::set(&s.prev, first);
        Slab::set(&s.next, after);
        if after != 0 {
            // SAFETY: as above.
            Slab::set(&unsafe { &*(after as *const Slab) }.prev, s.addr());
        }
        Slab::set(&f.next, s.addr());
        s.listed.store(1, Ordering::Relaxed);
    }

    fn enqueue_front(&self, s: &Slab) {
        let c = s.class.load(Ordering::Relaxed) as usize;
        let first = self.queues()[c];
        Slab::set(&s.prev, 0);
        Slab::set(&s.next, first);
        if first != 0 {
            // SAFETY: slabs on our queues are live slabs we own.
            Slab::set(&unsafe { &*(first as *const Slab) }.prev, s.addr());
        }
        self.queues()[c] = s.addr();
        s.listed.store(1, Ordering::Relaxed);
    }

    fn dequeue(&self, s: &Slab) {
        let (prev, next) = (Slab::get(&s.prev), Slab::get(&s.next));
        if prev != 0 {
            // SAFETY: slabs on our queues are live slabs we own.
            Slab::set(&unsafe { &*(prev as *const Slab) }.next, next);
        } else {
            self.queues()[s.class.load(Ordering::Relaxed) as usize] = next;
        }
        if next != 0 {
            // SAFETY: as above.
            Slab::set(&unsafe { &*(next as *const Slab) }.prev, prev);
        }
        s.listed.store(0, Ordering::Relaxed);
    }

    /// Owner, when its thread exits or trims: takes delayed and remote frees and retires every
    /// slab with no block in use, the first of each queue included.
    pub(crate) fn tidy(&self, heap: &Heap, slabs: &Slabs) {
        self.take_delayed(heap, slabs);
        for c in 0..CLASSES {
            let mut at = self.queues()[c];
            while at != 0 {
                // SAFETY: slabs on our queues are live slabs we own.
                let s = unsafe { &*(at as *const Slab) };
                at = Slab::get(&s.next);
                s.collect();
                if s.used.load(Ordering::Relaxed) == 0 {
                    self.dequeue(s);
                    slabs.retire(heap, s);
                }
            }
        }
    }
}
