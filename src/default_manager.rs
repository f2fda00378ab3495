//! `DefaultManager`: the same heap over this process's own memory.

use std::alloc::{GlobalAlloc, Layout};
use std::ptr::NonNull;
use std::sync::OnceLock;

use crate::engine::core::region::Region;
use crate::engine::heap::family::HeapRef;
use crate::engine::heap::{format_region, Backing, Heap};
use crate::error::{Error, Result};
use crate::format::{MIN_STORE_SIZE, PAGE_SIZE};
use crate::sync::{AtomicU8, Ordering};
use crate::sys;

/// Address space the in-process manager reserves by default (no memory is committed until
/// used).
pub const DEFAULT_RESERVE: u64 = 64 << 30;
const INITIAL: u64 = 1 << 20;

/// The in-process manager: the `MemoryManager` API over anonymous process memory.
///
/// It runs the same allocator core as [`crate::MappedManager`], over a private address range
/// reserved up front (so blocks never move) and committed as the heap grows. Handles it gives
/// out are meaningful only inside this process and this manager.
///
/// ```
/// use mmheap::{DefaultManager, MemoryManager};
///
/// let block = DefaultManager::global().allocate(100)?;
/// assert_eq!(block.len(), 100);
/// # Ok::<(), mmheap::Error>(())
/// ```
///
/// It is also a Rust allocator: [`GlobalAlloc`] (so it can be the `#[global_allocator]`) and
/// `allocator_api2::alloc::Allocator` (for collections that take an allocator):
///
/// ```
/// use mmheap::DefaultManager;
///
/// #[global_allocator]
/// static GLOBAL: DefaultManager = DefaultManager::GLOBAL;
///
/// let v: Vec<u64> = (0..1000).collect();
/// assert_eq!(v.iter().sum::<u64>(), 499_500);
///
/// let m = DefaultManager::new()?;
/// let mut w = allocator_api2::vec::Vec::new_in(&m);
/// w.extend_from_slice(&[1, 2, 3]);
/// assert_eq!(w.iter().sum::<i32>(), 6);
/// # Ok::<(), mmheap::Error>(())
/// ```
#[derive(Clone)]
pub struct DefaultManager {
    /// `None`: the process-wide heap, made on first use.
    heap: Option<HeapRef>,
}

impl std::fmt::Debug for DefaultManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DefaultManager").finish_non_exhaustive()
    }
}

struct Anonymous {
    base: NonNull<u8>,
    reserved: u64,
}

// SAFETY: the reservation is plain memory owned by this value; all access goes through the
// Region, which is itself Send + Sync.
unsafe impl Send for Anonymous {}
// SAFETY: as above.
unsafe impl Sync for Anonymous {}

impl Backing for Anonymous {
    fn grow(&self, region: &Region, new_cap: u64) -> Result<()> {
        if new_cap > self.reserved {
            return Err(Error::corrupt("growth past the reservation", new_cap));
        }
        // SAFETY: `[0, new_cap)` lies inside our own live reservation.
        unsafe { sys::commit(self.base, new_cap as usize) }.map_err(|e| Error::io("commit memory", e))?;
        // SAFETY: the range was just made readable and writable and stays so until drop.
        unsafe { region.raise_limit(new_cap) };
        Ok(())
    }
    fn refresh(&self, _region: &Region, cap: u64) -> Result<()> {
        Err(Error::corrupt("capacity changed behind the manager's back", cap))
    }
    fn owner_dead(&self, _tag: u32) -> bool {
        false
    }
    fn shared(&self) -> bool {
        false
    }
    fn attached(&self, _region: &Region) -> u64 {
        1
    }
}

impl Drop for Anonymous {
    fn drop(&mut self) {
        // SAFETY: this is exactly our reservation, and the Heap that used it is gone.
        unsafe { sys::release(self.base, self.reserved as usize) };
    }
}

/// The process-wide heap and how far it is made: 0 not yet, 1 being made, 2 ready, 3 failed.
static GLOBAL_HEAP: OnceLock<HeapRef> = OnceLock::new();
static GLOBAL_STATE: AtomicU8 = AtomicU8::new(0);

/// The process-wide heap, waiting while another thread makes it (for `DefaultManager::GLOBAL`).
#[cold]
fn global_heap_or_wait() -> &'static HeapRef {
    loop {
        if let Some(h) = global_heap_if_ready() {
            break h;
        }
        assert!(GLOBAL_STATE.load(Ordering::Acquire) != 3, "could not reserve the global heap");
        std::thread::yield_now();
    }
}

/// The process-wide heap if it is ready, making it if nobody is. `None` while it is being made
/// (allocations made meanwhile, including the ones that make it, go to the system allocator)
/// and if it could not be made.
#[inline]
fn global_heap_if_ready() -> Option<&'static HeapRef> {
    match GLOBAL_STATE.load(Ordering::Acquire) {
        2 => GLOBAL_HEAP.get(),
        _ => make_global_heap(),
    }
}

/// Makes the process-wide heap if nobody is making it yet.
#[cold]
fn make_global_heap() -> Option<&'static HeapRef> {
    if GLOBAL_STATE.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire).is_err() {
        return None;
    }
    match DefaultManager::with_max_size(DEFAULT_RESERVE) {
        Ok(DefaultManager { heap: Some(h) }) => {
            let _ = GLOBAL_HEAP.set(h);
            if let Some(slabs) = GLOBAL_HEAP.get().and_then(|h| h.slabs.as_ref()) {
                crate::engine::heap::slab::fast::publish(slabs);
            }
            GLOBAL_STATE.store(2, Ordering::Release);
            GLOBAL_HEAP.get()
        }
        _ => {
            GLOBAL_STATE.store(3, Ordering::Release);
            None
        }
    }
}

impl DefaultManager {
    /// The process-wide manager as a constant, for `static` items such as a
    /// `#[global_allocator]`. Its heap is made on first use.
    pub const GLOBAL: DefaultManager = DefaultManager { heap: None };

    /// The heap behind this manager.
    ///
    /// # Panics
    /// For [`DefaultManager::GLOBAL`], if the process-wide heap cannot be made (no address
    /// space), as a global allocator would abort.
    #[inline]
    pub(crate) fn heap(&self) -> &HeapRef {
        match &self.heap {
            Some(h) => h,
            None => global_heap_or_wait(),
        }
    }

    /// The heap to serve a raw allocation from, if it is made.
    #[inline]
    fn raw_heap(&self) -> Option<&HeapRef> {
        match &self.heap {
            Some(h) => Some(h),
            None => global_heap_if_ready(),
        }
    }

    /// The heap that may have handed out a raw block (the process-wide one only once made).
    #[inline]
    fn made_heap(&self) -> Option<&HeapRef> {
        match &self.heap {
            Some(h) => Some(h),
            None => GLOBAL_HEAP.get(),
        }
    }

    /// The heap that handed out `p`, if this manager's heap did.
    #[inline]
    fn owner_of(&self, p: *const u8) -> Option<&HeapRef> {
        self.made_heap().filter(|h| h.owns(p))
    }

    /// Bytes usable at `p`, a block this manager's raw interfaces handed out (`None`: not
    /// one of this manager's).
    pub fn usable_size(&self, p: *const u8) -> Option<usize> {
        self.owner_of(p)?.usable_raw(p).map(|n| n as usize)
    }

    /// A new, private heap with the default reservation.
    pub fn new() -> Result<Self> {
        Self::with_max_size(DEFAULT_RESERVE)
    }

    /// A new, private heap that may grow to `max_size` bytes.
    pub fn with_max_size(max_size: u64) -> Result<Self> {
        let max = max_size.checked_next_multiple_of(PAGE_SIZE).unwrap_or(u64::MAX);
        if !(MIN_STORE_SIZE..=1 << 46).contains(&max) {
            return Err(Error::InvalidOptions("max_size out of range"));
        }
        let base = sys::reserve(max as usize).map_err(|e| Error::io("reserve address space", e))?;
        let backing = Anonymous { base, reserved: max };
        let initial = INITIAL.min(max);
        // SAFETY: the reservation is `max` bytes, page-aligned, owned by `backing` which the
        // Heap keeps until after the region is gone; nothing is touched until `grow` commits it.
        let region = unsafe { Region::new(base, 0, max) };
        backing.grow(&region, initial)?;
        format_region(&region, initial, max, 0)?;
        let heap = HeapRef::new(
            Heap::new(region, Box::new(backing), 1, crate::engine::kinds::recover_locked)?.in_process(),
        )?;
        heap.prepare_caches();
        crate::fork::register();
        Ok(DefaultManager { heap: Some(heap) })
    }

    /// The process-wide manager; its heap is made on first use.
    ///
    /// # Panics
    /// On first use, if address space cannot be reserved (as a global allocator would abort).
    pub fn global() -> &'static DefaultManager {
        static GLOBAL: DefaultManager = DefaultManager::GLOBAL;
        &GLOBAL
    }

    /// Walks the heap and reports every inconsistency (and the blocks only cycles of links
    /// keep, [`crate::CheckReport::cycle_blocks`]).
    pub fn check(&self) -> Result<crate::CheckReport> {
        crate::engine::kinds::full_check(self.heap())
    }

    /// Frees the blocks that only cycles of links keep ([`crate::CheckReport::cycle_blocks`]):
    /// what no `MemoryBlock` of this process reaches through links. As
    /// `MappedManager::collect_cycles`, in process memory.
    pub fn collect_cycles(&self) -> Result<crate::RecoveryReport> {
        self.heap().collect_cycles()
    }
}

/// Where allocations the heap cannot serve go (see the `GlobalAlloc` impl): the system
/// allocator, or, when this crate *is* the system allocator (the drop-in `malloc` library,
/// feature `libc-fallback`), glibc's own functions under their internal names, which calling
/// `malloc` would not reach.
#[cfg(not(feature = "libc-fallback"))]
use std::alloc::System as Fallback;

#[cfg(feature = "libc-fallback")]
struct Fallback;

#[cfg(feature = "libc-fallback")]
extern "C" {
    fn __libc_memalign(align: usize, size: usize) -> *mut libc::c_void;
    fn __libc_free(p: *mut libc::c_void);
}

// SAFETY: glibc's allocator behind its internal names: `__libc_memalign` returns null or
// `size` bytes aligned to `align` (a power of two), released by `__libc_free`.
#[cfg(feature = "libc-fallback")]
unsafe impl GlobalAlloc for Fallback {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain C calls with a valid alignment (a `Layout`'s is a power of two).
        unsafe { __libc_memalign(layout.align().max(16), layout.size()).cast() }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above.
        unsafe { __libc_free(ptr.cast()) }
    }
}

/// `align` as a log2 the heap serves (16..=4096), or `None`.
#[inline]
fn servable(layout: Layout) -> Option<u32> {
    (layout.align() <= PAGE_SIZE as usize).then(|| layout.align().trailing_zeros().max(4))
}

// SAFETY: `alloc` returns null or a block of at least `layout.size()` bytes aligned to
// `layout.align()` that nobody else uses until `dealloc`; blocks the heap cannot serve (larger
// alignments, allocations made while this thread holds the heap's lock or while the global
// heap is being made) come from the system allocator, and `dealloc`/`realloc` tell the two
// apart by address (the heap's reservation is its own mapping).
unsafe impl GlobalAlloc for DefaultManager {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if self.heap.is_none() && layout.align() <= 16 {
            if let Some(p) = crate::engine::heap::slab::fast::alloc(layout.size()) {
                return p.as_ptr();
            }
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { self.alloc_general(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if self.heap.is_none() && crate::engine::heap::slab::fast::free(ptr) {
            return;
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { self.dealloc_general(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A slab block of the process-wide heap (a `String` or `Vec` growing by doubling):
        // kept if its slab's block size holds the new size without wasting more than half,
        // else moved through the fast paths.
        if self.heap.is_none() && layout.align() <= 16 {
            if let Some(old) = crate::engine::heap::slab::fast::find(ptr) {
                let room = old.size();
                if new_size <= room && (new_size >= room / 2 || room <= 64) {
                    return ptr;
                }
                if let Some(q) = crate::engine::heap::slab::fast::alloc(new_size) {
                    // SAFETY: `ptr` holds `layout.size()` bytes (the caller's contract), `q`
                    // at least `new_size`; distinct live blocks.
                    unsafe { std::ptr::copy_nonoverlapping(ptr, q.as_ptr(), layout.size().min(new_size)) };
                    if !old.free() {
                        // SAFETY: the caller's contract: `ptr` is ours with `layout`, freed
                        // once (the fast release above did nothing).
                        unsafe { self.dealloc_general(ptr, layout) };
                    }
                    return q.as_ptr();
                }
            }
        }
        if let Some(h) = self.owner_of(ptr) {
            if layout.align() <= 16 {
                match h.realloc_raw(ptr, layout.size() as u64, new_size as u64) {
                    Some(p) => return p.as_ptr(),
                    None if !h.locked_here() => return std::ptr::null_mut(),
                    None => {} // `Error::Reentrant`: as below, through the fallback
                }
            }
        }
        // SAFETY: the caller's contract; `alloc` and `dealloc` route by address.
        unsafe {
            let new = self.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

impl DefaultManager {
    /// [`GlobalAlloc::alloc`] beyond the process-wide heap's fast path (`slab/fast.rs`).
    ///
    /// # Safety
    /// As [`GlobalAlloc::alloc`].
    #[inline(never)]
    unsafe fn alloc_general(&self, layout: Layout) -> *mut u8 {
        if let (Some(h), Some(a)) = (self.raw_heap(), servable(layout)) {
            match h.alloc_raw(layout.size() as u64, a) {
                Some(p) => return p.as_ptr(),
                // A private heap is out of memory, unless it could not be used from here (this
                // thread holds its lock: `Error::Reentrant`); then the fallback serves it. The
                // process-wide heap falls back too when its reservation (64 GiB) is full, as
                // the system allocator would still serve.
                None if self.heap.is_some() && !h.locked_here() => return std::ptr::null_mut(),
                None => {}
            }
        }
        // SAFETY: the caller's layout contract is passed on unchanged.
        unsafe { Fallback.alloc(layout) }
    }

    /// [`GlobalAlloc::dealloc`] beyond the process-wide heap's fast path.
    ///
    /// # Safety
    /// As [`GlobalAlloc::dealloc`].
    #[inline(never)]
    unsafe fn dealloc_general(&self, ptr: *mut u8, layout: Layout) {
        // A release that would need the lock this thread holds leaks the block instead
        // (`Error::Reentrant`): nothing of ours is freed there, but if it were, leaking is the
        // safe answer.
        if !self.made_heap().is_some_and(|h| h.free_raw(ptr)) {
            // SAFETY: not ours, so it came from `Fallback.alloc` with this layout.
            unsafe { Fallback.dealloc(ptr, layout) }
        }
    }
}

// SAFETY: `allocate` returns fresh blocks of at least the layout's size and alignment (a
// dangling, aligned pointer for zero sizes) that stay valid until `deallocate`, which frees
// exactly the blocks this manager's heap handed out; clones share the heap.
unsafe impl allocator_api2::alloc::Allocator for DefaultManager {
    #[inline]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, allocator_api2::alloc::AllocError> {
        let err = allocator_api2::alloc::AllocError;
        if layout.size() == 0 {
            // SAFETY: an alignment is never zero, so the pointer is non-null and aligned.
            let dangling = unsafe { NonNull::new_unchecked(layout.align() as *mut u8) };
            return Ok(NonNull::slice_from_raw_parts(dangling, 0));
        }
        let (h, a) = (self.raw_heap().ok_or(err)?, servable(layout).ok_or(err)?);
        let p = h.alloc_raw(layout.size() as u64, a).ok_or(err)?;
        Ok(NonNull::slice_from_raw_parts(p, layout.size()))
    }

    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            if let Some(h) = self.made_heap() {
                h.free_raw(ptr.as_ptr());
            }
        }
    }
}

#[cfg(test)]
mod tests;
