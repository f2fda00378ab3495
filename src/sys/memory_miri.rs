//! Address space for the in-process manager under Miri, which runs neither `PROT_NONE`
//! mappings nor `madvise`: a reservation is one zeroed allocation from the Rust allocator, so
//! that the same heap code (`DefaultManager`, the slab table) runs on memory Miri checks.
//!
//! What differs from `memory_unix.rs`, and so what Miri does not check: a reservation is
//! readable and writable before it is committed (Miri would not catch a touch past the heap's
//! committed limit; the region's bounds checks and the real-memory tests do), and it is
//! committed memory from the start, so the tests keep their heaps small.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::ptr::NonNull;

/// The largest reservation made: Miri keeps every allocation's bytes in the host's memory, so
/// a default 64 GiB reservation is refused (`DefaultManager::new` and the process-wide heap
/// fail under Miri; tests make heaps with `DefaultManager::with_max_size`).
const MAX_RESERVATION: usize = 256 << 20;

fn layout(len: usize) -> io::Result<Layout> {
    Layout::from_size_align(len.max(1), 4096).map_err(io::Error::other)
}

/// Reserves `len` bytes (zeroed, as an anonymous mapping reads).
pub(crate) fn reserve(len: usize) -> io::Result<NonNull<u8>> {
    if len > MAX_RESERVATION {
        return Err(io::Error::from(io::ErrorKind::OutOfMemory));
    }
    // SAFETY: the layout's size is not zero.
    let p = unsafe { alloc_zeroed(layout(len)?) };
    NonNull::new(p).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))
}

/// Nothing to do: the whole reservation is readable and writable.
///
/// # Safety
/// The range must lie inside a reservation made by [`reserve`] that is still live (as on
/// Unix; nothing here relies on it).
pub(crate) unsafe fn commit(_base: NonNull<u8>, _len: usize) -> io::Result<()> {
    Ok(())
}

/// Zeroes the whole pages of `[addr, addr + len)`, as `madvise(MADV_DONTNEED)` leaves them: so
/// Miri sees the purge as the write it is to whoever might still read the range.
pub(crate) fn purge(addr: usize, len: usize) {
    let page = 4096;
    let (start, end) = (addr.next_multiple_of(page), (addr + len) / page * page);
    if end > start {
        let p = std::ptr::with_exposed_provenance_mut::<u8>(start);
        // SAFETY: callers pass free memory inside a reservation of ours (whose address the
        // region exposed) that nobody reads until it is handed out again.
        unsafe { p.write_bytes(0, end - start) };
    }
}

/// Frees a reservation.
///
/// # Safety
/// `base, len` must be exactly a reservation from [`reserve`], and nothing may use it after.
pub(crate) unsafe fn release(base: NonNull<u8>, len: usize) {
    let Ok(layout) = layout(len) else { return };
    // SAFETY: the caller hands over the whole allocation, made with this layout.
    unsafe { dealloc(base.as_ptr(), layout) };
}
