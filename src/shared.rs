//! Shared mutable state: bytes of a block that any holder, in any process, may change after
//! the block was shared. A block made by [`crate::MemoryManager::allocate_guarded`] has a
//! *guarded area* behind a robust lock that lives in the store ([`MemoryBlock::lock`]); one
//! made by [`crate::MemoryManager::allocate_atomic`] has an *atomic area* of integers updated
//! in place ([`MemoryBlock::view_atomic`]). Neither area is part of the block's bytes
//! ([`MemoryBlock::as_slice`] ends before it), so nothing Rust assumes frozen is ever written.
//! ARCHITECTURE.md, "Shared mutable state", gives the rules; `docs/format.md` the bytes.

use std::ops::{Deref, DerefMut};

use crate::engine::heap::shared::SharedArea;
use crate::error::{Error, Result};
use crate::sync::views as atomic;
use crate::MemoryBlock;

mod sealed {
    pub trait Sealed {}
}

/// An integer atomic type that may live in an atomic area: the 8-, 16-, 32- and 64-bit atomics
/// of the standard library (`AtomicU64` and the others), signed and unsigned (their size is the same in every process).
pub trait AtomicView: sealed::Sealed + Sync {}

macro_rules! atomic_views {
    ($($t:ident),*) => {$(
        impl sealed::Sealed for atomic::$t {}
        impl AtomicView for atomic::$t {}
    )*};
}
atomic_views!(AtomicU8, AtomicI8, AtomicU16, AtomicI16, AtomicU32, AtomicI32, AtomicU64, AtomicI64);

impl MemoryBlock {
    /// The length of this block's guarded or atomic area (0 for a block made without one).
    pub fn shared_len(&self) -> usize {
        self.area().ok().flatten().map_or(0, |a| a.len as usize)
    }

    /// The shared area of this block, if it has one.
    fn area(&self) -> Result<Option<SharedArea>> {
        self.heap().area_of(self.off())
    }

    /// An atomic at byte `offset` of this block's atomic area, which every holder in every
    /// process may update at any time. Fails with [`Error::NoSharedArea`] for a block without
    /// an atomic area, [`Error::OutOfBounds`] beyond it and [`Error::Misaligned`] at an offset
    /// that is not a multiple of the atomic's size.
    ///
    /// ```
    /// use core::sync::atomic::{AtomicU64, Ordering};
    /// use mmheap::{DefaultManager, MemoryManager};
    ///
    /// let m = DefaultManager::new()?;
    /// let counters = m.allocate_atomic(0, 16)?; // no plain bytes, two u64 counters
    /// let shared = counters.clone();
    /// counters.view_atomic::<AtomicU64>(8)?.fetch_add(5, Ordering::Relaxed);
    /// assert_eq!(shared.view_atomic::<AtomicU64>(8)?.load(Ordering::Relaxed), 5);
    /// # Ok::<(), mmheap::Error>(())
    /// ```
    pub fn view_atomic<A: AtomicView>(&self, offset: usize) -> Result<&A> {
        let area = self.area()?.filter(|a| a.atomic).ok_or(Error::NoSharedArea("an atomic area"))?;
        let size = std::mem::size_of::<A>() as u64;
        let (start, end) = (offset as u64, (offset as u64).saturating_add(size));
        if end > area.len {
            return Err(Error::OutOfBounds { start, end, len: area.len });
        }
        let p = self.heap().region.ptr(area.start + start, size)?;
        if p.as_ptr() as usize % std::mem::align_of::<A>() != 0 {
            return Err(Error::Misaligned { address: p.as_ptr() as usize, align: std::mem::align_of::<A>() });
        }
        // SAFETY: `p` is in the mapping (range-checked) and aligned for `A`, and lives as long as
        // `self` (the block is held, the mapping never moves). The atomic area's bytes are
        // reached only as atomics of this family, in every process (`as_slice` ends before the
        // area, and a guard is refused on it), and an integer atomic is valid for any bits.
        Ok(unsafe { &*p.as_ptr().cast::<A>() })
    }

    /// An atomic at byte `offset` of this block's own bytes (any block, shared or not), for
    /// data a block's holders agree to change only through atomics. Fails as
    /// [`MemoryBlock::view_atomic`] does beyond the block or at a misaligned offset.
    ///
    /// # Safety
    ///
    /// While the returned reference lives, no `&[u8]` of these bytes may be used anywhere (this
    /// block's [`MemoryBlock::as_slice`], a segment, a `&mut` from `as_mut_slice`, in this
    /// process or, for a store, another), and nobody may write them but through atomics: Rust
    /// assumes the bytes behind a `&[u8]` do not change. A block made with an atomic area
    /// ([`crate::MemoryManager::allocate_atomic`]) gives the same without `unsafe`.
    ///
    /// ```
    /// use core::sync::atomic::{AtomicU32, Ordering};
    /// use mmheap::{DefaultManager, MemoryManager};
    ///
    /// let m = DefaultManager::new()?;
    /// let flags = m.allocate_zeroed(8)?; // its bytes are only ever read through atomics
    /// // SAFETY: nothing views these bytes as a slice while the atomic is in use.
    /// let word = unsafe { flags.view_atomic_in_bytes::<AtomicU32>(4)? };
    /// word.fetch_or(1, Ordering::Relaxed);
    /// assert_eq!(word.load(Ordering::Relaxed), 1);
    /// # Ok::<(), mmheap::Error>(())
    /// ```
    pub unsafe fn view_atomic_in_bytes<A: AtomicView>(&self, offset: usize) -> Result<&A> {
        let size = std::mem::size_of::<A>();
        let (start, end) = (offset as u64, (offset as u64).saturating_add(size as u64));
        if end > self.len() as u64 {
            return Err(Error::OutOfBounds { start, end, len: self.len() as u64 });
        }
        // A raw pointer: no `&[u8]` of the bytes is made here either.
        let p = self.payload_ptr().wrapping_add(offset);
        if p as usize % std::mem::align_of::<A>() != 0 {
            return Err(Error::Misaligned { address: p as usize, align: std::mem::align_of::<A>() });
        }
        // SAFETY: `p .. p + size` lies in this block's bytes (checked above), which live as long
        // as `self`, and is aligned for `A`; an integer atomic is valid for any bits. That no
        // `&[u8]` of them is used meanwhile is the caller's contract.
        Ok(unsafe { &*p.cast::<A>() })
    }

    /// Takes the robust lock of this block's guarded area, waiting while another thread or a
    /// living process holds it (however long: a stopped process keeps it), and taking it over
    /// from a process that died holding it. The area is then this guard's to read and write,
    /// whether or not the block was shared. [`Locked::HolderDied`] says a holder died holding it,
    /// or a thread panicked holding it (now, or earlier without the area being marked consistent
    /// since): the area may be half changed; repair it and call [`SharedGuard::mark_consistent`], as after pthread's
    /// `EOWNERDEAD`. Not reentrant: a thread that holds the lock and asks for it again (through
    /// this block, a clone, or the same block resolved by another manager of the same store)
    /// gets [`Error::Reentrant`] rather than wait for ever. Fails with [`Error::NoSharedArea`]
    /// for a block without a guarded area and [`Error::ReadOnly`] in a store opened read-only.
    ///
    /// ```
    /// use mmheap::{DefaultManager, MemoryManager};
    ///
    /// let m = DefaultManager::new()?;
    /// let block = m.allocate_guarded(0, 8)?;
    /// let other = block.clone(); // shared: still writable under the lock
    /// other.lock()?.guard()[..3].copy_from_slice(b"abc");
    /// assert_eq!(&block.lock()?.guard()[..3], b"abc");
    /// # Ok::<(), mmheap::Error>(())
    /// ```
    pub fn lock(&self) -> Result<Locked<'_>> {
        let area = self.area()?.filter(|a| !a.atomic).ok_or(Error::NoSharedArea("a guarded area"))?;
        let held = (self.heap().key(), area.lock);
        if HELD.with(|h| h.borrow().contains(&held)) {
            return Err(Error::Reentrant);
        }
        let died = self.heap().lock_area(&area)?;
        HELD.with(|h| h.borrow_mut().push(held));
        let guard = SharedGuard {
            block: self,
            area,
            pid: crate::fork::process_id(),
            _thread: std::marker::PhantomData,
        };
        Ok(if died { Locked::HolderDied(guard) } else { Locked::Consistent(guard) })
    }
}

crate::sync::thread_local! {
    /// The guarded areas this thread holds the lock of: (the store's key, the lock word's
    /// offset), the same in every mapping of a store.
    static HELD: std::cell::RefCell<Vec<(u64, u64)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What [`MemoryBlock::lock`] gives: the guard, and whether a holder died holding the lock.
#[derive(Debug)]
pub enum Locked<'a> {
    /// The area is as the last holder left it when it let go.
    Consistent(SharedGuard<'a>),
    /// A holder died holding the lock, and the area has not been marked consistent since: it
    /// may be half changed.
    HolderDied(SharedGuard<'a>),
}

impl<'a> Locked<'a> {
    /// The guard, whatever the state of the area (see [`Locked::holder_died`]).
    pub fn guard(self) -> SharedGuard<'a> {
        match self {
            Locked::Consistent(g) | Locked::HolderDied(g) => g,
        }
    }

    /// Whether a holder died holding the lock (the area may be half changed).
    pub fn holder_died(&self) -> bool {
        matches!(self, Locked::HolderDied(_))
    }
}

/// The robust lock of a guarded area, held: the area's bytes, to read and write. Releases the
/// lock when dropped, on the thread that took it (it is not `Send`, as `std::sync::MutexGuard`
/// is not: the thread's record of the locks it holds, which turns a second `lock` into
/// [`Error::Reentrant`], goes with it).
///
/// ```compile_fail
/// use mmheap::{DefaultManager, MemoryManager};
/// fn needs_send<T: Send>(_: T) {}
/// let m = DefaultManager::new().unwrap();
/// let block = m.allocate_guarded(0, 8).unwrap();
/// needs_send(block.lock().unwrap().guard()); // a guard stays on its thread
/// ```
pub struct SharedGuard<'a> {
    block: &'a MemoryBlock,
    area: SharedArea,
    /// The process that took the lock: a copy of the guard in a `fork()`ed child lets nothing
    /// go (the lock is the parent's).
    pid: u32,
    /// Not `Send`: dropped on the thread that holds it.
    _thread: std::marker::PhantomData<*const ()>,
}

impl SharedGuard<'_> {
    /// Says the area is consistent again (after a holder died and the caller repaired it): the
    /// next lockers are not told of that death any more.
    pub fn mark_consistent(&mut self) -> Result<()> {
        self.block.heap().mark_consistent(&self.area)
    }

    /// The area's bytes, range-checked when the guard was made.
    fn bytes(&self) -> *mut u8 {
        // The area lies inside the block, whose payload's range was checked when it was obtained.
        self.block
            .heap()
            .region
            .ptr(self.area.start, self.area.len)
            .map_or(std::ptr::null_mut(), |p| p.as_ptr())
    }
}

impl Deref for SharedGuard<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let p = self.bytes();
        if p.is_null() {
            return &[];
        }
        // SAFETY: the area is in the mapping (`bytes` checked its range) and lives while the
        // block is held; the lock this guard holds excludes every other access to it, in every
        // thread and process (the area is reached only under the lock: `as_slice` ends before it).
        unsafe { std::slice::from_raw_parts(p, self.area.len as usize) }
    }
}

impl DerefMut for SharedGuard<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        let p = self.bytes();
        if p.is_null() {
            return &mut [];
        }
        // SAFETY: as in `deref`; `&mut self` makes this the only view through the guard.
        unsafe { std::slice::from_raw_parts_mut(p, self.area.len as usize) }
    }
}

impl Drop for SharedGuard<'_> {
    /// Releases the lock; a guard dropped while its thread panics leaves the area marked
    /// inconsistent, as a holder that died would (std's `Mutex` poisons itself likewise).
    fn drop(&mut self) {
        if crate::fork::process_id() != self.pid {
            return; // a forked child's copy: the parent holds the lock
        }
        let heap = self.block.heap();
        if std::thread::panicking() {
            heap.mark_inconsistent(&self.area);
        }
        heap.unlock_area(&self.area);
        let held = (heap.key(), self.area.lock);
        HELD.with(|h| h.borrow_mut().retain(|l| *l != held));
    }
}

impl std::fmt::Debug for SharedGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedGuard").field("len", &self.area.len).finish_non_exhaustive()
    }
}
