//! Which thread uses which cache: claiming one (or making it) on a thread's first use of a
//! heap, finding it again through a thread-local, giving it back when the thread exits, and
//! what `fork` and exited threads leave (`fork.rs`, `slab/`).

use std::cell::{Cell, RefCell, UnsafeCell};
use std::sync::{Arc, MutexGuard};

use super::*;

/// The caches this thread has claimed, released when the thread exits: by its destructor, or,
/// for a thread whose first claim came from inside a pthread-key destructor (C libraries
/// allocate there) and whose destructor is then never run, by the exit hook armed at each claim
/// (`release_claims`). Without the hook such a thread's cache stayed claimed for good, and
/// after 64 of them no thread had a cache (every allocation through the drop-in library took
/// the slow path: 40 times slower, found by an outside review).
struct Claims(Vec<(u64, Arc<ThreadCache>)>);

impl Claims {
    /// Gives every claimed cache back (what an exiting thread leaves).
    fn release(&mut self) {
        let _ = LAST.try_with(|l| l.set((0, std::ptr::null())));
        crate::engine::heap::slab::fast::set_mine(None);
        for (_, c) in self.0.drain(..) {
            c.give_back_on_exit();
            c.slabs.orphaned.store(true, Ordering::Relaxed);
            // Sequentially consistent with the counting in `purge_if_last`.
            c.claimed.store(0, Ordering::SeqCst);
            c.purge_if_last();
        }
    }
}

impl Drop for Claims {
    fn drop(&mut self) {
        // A model (`--cfg loom`) that failed drops its threads' thread-locals outside the model
        // while it unwinds, where nothing of the model can be reached: the failure is the news.
        #[cfg(loom)]
        if std::thread::panicking() {
            return;
        }
        self.release();
    }
}

/// Gives back the calling model thread's claims, as its exit does (`--cfg loom`): a model
/// thread calls it last, because `loom`'s `join` returns before the joined thread's
/// thread-locals are destroyed (`std`'s returns after), and the model's main thread must not
/// check or drop the heap while they give the caches back.
#[cfg(all(loom, test))]
pub(crate) fn release_thread_claims() {
    let _ = CLAIMS.try_with(|claims| {
        if let Ok(mut claims) = claims.try_borrow_mut() {
            claims.release();
        }
    });
}

/// The exit hook (`sys::at_thread_exit`): gives back the claims if the thread-local's
/// destructor has not (it has, and emptied them, unless it was registered too late to run).
#[cfg_attr(loom, allow(dead_code))]
extern "C" fn release_claims() {
    let _ = CLAIMS.try_with(|claims| {
        if let Ok(mut claims) = claims.try_borrow_mut() {
            claims.release();
        }
    });
}

crate::sync::thread_local! {
    /// The cache used last: (heap id, cache). Checked before anything else.
    static LAST: Cell<(u64, *const ThreadCache)> = const { Cell::new((0, std::ptr::null())) };
    static CLAIMS: RefCell<Claims> = const { RefCell::new(Claims(Vec::new())) };
    /// Set while this thread claims a cache (`Heap::cache_slow`).
    static CLAIMING: Cell<bool> = const { Cell::new(false) };
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

    /// Frees every block this thread's cache keeps, and the store's exchange (`exchange.rs`),
    /// under the lock, when the store is full. Returns whether there was any. Other threads'
    /// caches are theirs alone: at most their budget's bytes each stay parked. Looks the cache
    /// up without making one (that would take the lock we hold).
    pub(crate) fn give_back_cache(&self, g: &Guard<'_>) -> bool {
        let found = CLAIMS.try_with(|claims| {
            let claims = claims.try_borrow().ok()?;
            claims.0.iter().find(|(id, _)| *id == self.id).map(|(_, c)| Arc::as_ptr(c))
        });
        // SAFETY: as in `cache`: claimed by this thread for this heap, kept alive by it.
        let mine = found.ok().flatten().is_some_and(|p| unsafe { &*p }.drain(self, g));
        super::exchange::drain(self, g) | mine
    }

    #[cold]
    fn cache_slow(&self) -> Option<&ThreadCache> {
        // Claiming allocates (the claim list, the cache), and the first use of `CLAIMS`
        // registers its destructor, which allocates inside the C library: when this crate is
        // `malloc` (the drop-in library) those allocations come back here. They are served
        // without a cache (`None`) rather than claim again, which would recurse.
        if CLAIMING.with(|c| c.replace(true)) {
            return None;
        }
        let p = self.claim_for_thread();
        CLAIMING.with(|c| c.set(false));
        p
    }

    fn claim_for_thread(&self) -> Option<&ThreadCache> {
        let found = CLAIMS.try_with(|claims| {
            let mut claims = claims.try_borrow_mut().ok()?;
            if let Some((_, c)) = claims.0.iter().find(|(id, _)| *id == self.id) {
                return Some(Arc::as_ptr(c));
            }
            claims.0.retain(|(_, c)| c.gone.load(Ordering::Acquire) == 0);
            let c = self.claim_cache()?;
            let p = Arc::as_ptr(&c);
            claims.0.push((self.id, c));
            // A model thread's (`--cfg loom`) thread-locals die with it, and the hook would run
            // at the OS thread's exit, outside any model, where `loom`'s cannot be reached.
            #[cfg(not(loom))]
            crate::sys::at_thread_exit(release_claims);
            Some(p)
        });
        let p = found.ok().flatten()?;
        let _ = LAST.try_with(|l| l.set((self.id, p)));
        // SAFETY: as in `cache`: claimed by this thread, kept alive by `self.caches`.
        let c = unsafe { &*p };
        if self.slabs.as_ref().is_some_and(crate::engine::heap::slab::fast::is_global) {
            crate::engine::heap::slab::fast::set_mine(Some(&c.slabs));
        }
        Some(c)
    }

    /// Claims a cache an exited thread left, or makes a new one.
    fn claim_cache(&self) -> Option<Arc<ThreadCache>> {
        let mut all = self.caches();
        if let Some(c) = all
            .iter()
            .find(|c| c.claimed.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed).is_ok())
        {
            c.slabs.orphaned.store(false, Ordering::Relaxed);
            return Some(c.clone());
        }
        if all.len() as u64 == CELLS {
            return None;
        }
        let mut table = self.caches.table.load(Ordering::Acquire);
        if table == 0 {
            table = self.make_cell_table(true).ok()?;
            self.caches.table.store(table, Ordering::Release);
        }
        let cell = cells_of(table) + all.len() as u64 * CELL_SIZE;
        self.region.word(cell)?;
        self.region.word(cell + 8)?;
        let state = State {
            slots: vec![Parked(0); SLOTS].into_boxed_slice().try_into().ok()?,
            depth: [0; STACKS],
            deferred: [0; DEFERRED],
            n_deferred: 0,
            deferred_bytes: 0,
        };
        let budget = if self.shared() { &SHARED } else { &PRIVATE };
        let c = Arc::new(ThreadCache {
            state: UnsafeCell::new(state),
            cell,
            bytes_max: budget.bytes.min(self.region.load(SB_MAX_SIZE).ok()? / 16),
            limits: &budget.limits,
            claimed: AtomicU8::new(1),
            gone: AtomicU8::new(0),
            families: AtomicU64::new(0),
            lives: self.lives.clone(),
            slabs: Default::default(),
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

    /// In a child just forked (`fork.rs`): releases the caches claimed by threads other than
    /// this one, which did not come along; the child's threads claim them, blocks and slabs.
    pub(crate) fn caches_after_fork(&self, all: &[Arc<ThreadCache>]) {
        let mine = |c: &Arc<ThreadCache>| {
            CLAIMS
                .try_with(|cl| cl.try_borrow().is_ok_and(|cl| cl.0.iter().any(|(_, m)| Arc::ptr_eq(m, c))))
                .unwrap_or(false)
        };
        for c in all.iter().filter(|c| !mine(c)) {
            c.slabs.orphaned.store(true, Ordering::Relaxed);
            c.claimed.store(0, Ordering::Release);
        }
    }

    /// Tidies the slabs of every cache no thread has claimed (`slab/`: remote frees into
    /// them are taken, empty slabs retired), claiming each for the while. Skipped when the
    /// caches' mutex is busy: this runs from inside a release, which may come from code that
    /// holds it (a claim growing its list).
    pub(crate) fn tidy_orphans(&self) {
        let Some(slabs) = &self.slabs else { return };
        let Ok(all) = self.caches.all.try_lock() else { return };
        for c in all.iter() {
            if c.claimed.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                c.slabs.tidy(self, slabs);
                c.claimed.store(0, Ordering::Release);
            }
        }
    }

    pub(crate) fn caches(&self) -> MutexGuard<'_, Vec<Arc<ThreadCache>>> {
        self.caches.all.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use crate::DefaultManager;

    static HEAP: OnceLock<DefaultManager> = OnceLock::new();

    /// A pthread-key destructor that makes the thread's first allocation from `HEAP`, so its
    /// first claim: by then glibc has run the thread-locals' destructors, and the claims'
    /// destructor, registered now, would never run.
    extern "C" fn allocate_late(_: *mut libc::c_void) {
        let heap = HEAP.get().expect("made before the threads").heap();
        let p = heap.alloc_raw(64, 4).expect("a block");
        assert!(heap.free_raw(p.as_ptr()));
    }

    extern "C" fn arm(key: *mut libc::c_void) -> *mut libc::c_void {
        // SAFETY: the key made below, passed as the thread's argument; any non-null value.
        unsafe {
            libc::pthread_setspecific(
                key as usize as libc::pthread_key_t,
                std::ptr::dangling_mut::<libc::c_void>(),
            )
        };
        std::ptr::null_mut()
    }

    #[test]
    fn a_first_claim_from_a_key_destructor_is_given_back_at_exit() {
        let heap = HEAP.get_or_init(|| DefaultManager::with_max_size(64 << 20).unwrap()).heap();
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is writable; `allocate_late` is a valid destructor.
        assert_eq!(unsafe { libc::pthread_key_create(&mut key, Some(allocate_late)) }, 0);
        // Raw threads: nothing of std's runs in them before the key's destructor.
        for _ in 0..100 {
            let mut t: libc::pthread_t = 0;
            // SAFETY: `arm` takes the key as its argument and returns null.
            let made = unsafe {
                libc::pthread_create(&mut t, std::ptr::null(), arm, key as usize as *mut libc::c_void)
            };
            assert_eq!(made, 0);
            // SAFETY: a thread made above, joined once.
            assert_eq!(unsafe { libc::pthread_join(t, std::ptr::null_mut()) }, 0);
        }
        let caches = heap.caches();
        assert!(!caches.is_empty(), "the threads claimed caches");
        let held = caches.iter().filter(|c| c.claimed.load(super::Ordering::Acquire) != 0).count();
        assert_eq!(held, 0, "caches still claimed by exited threads");
    }
}
