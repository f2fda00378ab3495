//! Address space for the in-process manager on Unix: reserved with no access (`mmap` with
//! `PROT_NONE`), committed as the heap grows (`mprotect`), its free pages given back
//! (`madvise`), and released (`munmap`).

use std::io;
use std::ptr::NonNull;

/// Reserves `len` bytes of address space with no access and no commit charge.
pub(crate) fn reserve(len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: an anonymous mapping at an address of the kernel's choosing touches no existing
    // memory; the result is checked before use.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))
}

/// Makes `[base, base + len)` of a reservation readable and writable.
///
/// # Safety
/// The range must lie inside a reservation made by [`reserve`] that is still mapped.
pub(crate) unsafe fn commit(base: NonNull<u8>, len: usize) -> io::Result<()> {
    // SAFETY: the caller guarantees the range is part of our own reservation.
    let rc = unsafe { libc::mprotect(base.as_ptr().cast(), len, libc::PROT_READ | libc::PROT_WRITE) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Gives the pages of `[addr, addr + len)` back to the system (`MADV_DONTNEED`): the range
/// stays mapped and reads as zeros when touched again. `addr` is rounded up and the end down
/// to pages; a failure (nothing to give) is ignored, as the memory is simply kept.
pub(crate) fn purge(addr: usize, len: usize) {
    let page = 4096;
    let (start, end) = (addr.next_multiple_of(page), (addr + len) / page * page);
    if end > start {
        // SAFETY: callers pass free memory inside a private anonymous reservation of ours that
        // nobody reads until it is handed out again; DONTNEED only replaces its pages by zero
        // pages.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}

/// Unmaps a reservation.
///
/// # Safety
/// `base, len` must be exactly a reservation from [`reserve`], and nothing may use it after.
pub(crate) unsafe fn release(base: NonNull<u8>, len: usize) {
    // SAFETY: the caller hands over the whole reservation.
    unsafe { libc::munmap(base.as_ptr().cast(), len) };
}
