//! mmheap as a drop-in `malloc`, and a small C API.
//!
//! Built as `libmmheap_malloc.so`, this library exports `malloc`, `free`, `calloc`, `realloc`,
//! `reallocarray`, `posix_memalign`, `aligned_alloc`, `memalign`, `valloc`, `pvalloc` and
//! `malloc_usable_size` over mmheap's process-wide in-process heap
//! ([`mmheap::DefaultManager::GLOBAL`]), so that a C or C++ program runs on mmheap unchanged:
//!
//! ```sh
//! cargo build --release -p mmheap-malloc
//! LD_PRELOAD=target/release/libmmheap_malloc.so python3 -c 'print(sum(range(10**6)))'
//! ```
//!
//! What mmheap's heap cannot serve goes to glibc under its internal names (`__libc_memalign`,
//! `__libc_free`, `__libc_realloc`; feature `libc-fallback` of mmheap): alignments above a page,
//! and allocations made while the heap is being made or while the allocating thread holds the
//! heap's lock. `free` and `realloc` tell the two apart by address. The library must be loaded
//! at program start (`LD_PRELOAD` or linked in), not with `dlopen`: its thread-locals are then
//! in the static TLS block, so reaching them never allocates.
//!
//! The C API (`include/mmheap.h`, `capi.rs`) adds the "legacy" calls `mmheap_alloc`,
//! `mmheap_realloc`, `mmheap_free` and the "modern" ones over a chosen manager, a store
//! included: `mmheap_alloc_with`, `mmheap_free_with`, handles, roots.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;
use std::ptr;

use mmheap::DefaultManager;

pub mod capi;

static HEAP: DefaultManager = DefaultManager::GLOBAL;

/// Every block's alignment when none is asked for (`max_align_t`).
const MIN_ALIGN: usize = 16;
/// Sizes `malloc` passes straight to the heap, with no layout checks (they cannot fail).
const SMALL: usize = 8 << 10;

extern "C" {
    fn __libc_realloc(p: *mut c_void, n: usize) -> *mut c_void;
}

fn set_errno(e: i32) {
    // SAFETY: `__errno_location` returns this thread's errno.
    unsafe { *libc::__errno_location() = e };
}

/// A block of `n` bytes aligned to `align` (a power of two), or null with `ENOMEM`.
fn alloc_aligned(n: usize, align: usize) -> *mut c_void {
    let Ok(layout) = Layout::from_size_align(n.max(1), align.max(MIN_ALIGN)) else {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    };
    // SAFETY: the layout's size is not zero.
    let p = unsafe { HEAP.alloc(layout) };
    if p.is_null() {
        set_errno(libc::ENOMEM);
    }
    p.cast()
}

/// # Safety
/// As C's `malloc`.
#[no_mangle]
pub unsafe extern "C" fn malloc(n: usize) -> *mut c_void {
    if n <= SMALL {
        // SAFETY: 1..=SMALL bytes at 16 is a valid layout, and not zero-sized.
        let p = unsafe { HEAP.alloc(Layout::from_size_align_unchecked(n.max(1), MIN_ALIGN)) };
        if !p.is_null() {
            return p.cast();
        }
    }
    alloc_aligned(n, MIN_ALIGN)
}

/// # Safety
/// As C's `free`: `p` is null or a live block from this library.
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    if !p.is_null() {
        // SAFETY: the caller's contract; `dealloc` routes by address (ours, or glibc's) and
        // neither side reads the layout's size.
        unsafe { HEAP.dealloc(p.cast(), Layout::from_size_align_unchecked(1, MIN_ALIGN)) };
    }
}

/// # Safety
/// As C's `calloc`.
#[no_mangle]
pub unsafe extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
    let Some(n) = count.checked_mul(size) else {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    };
    let p = alloc_aligned(n, MIN_ALIGN);
    if !p.is_null() {
        // SAFETY: `p` has at least `n` bytes.
        unsafe { ptr::write_bytes(p.cast::<u8>(), 0, n) };
    }
    p
}

/// # Safety
/// As C's `realloc`: `p` is null or a live block from this library.
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, n: usize) -> *mut c_void {
    if p.is_null() {
        return alloc_aligned(n, MIN_ALIGN);
    }
    if n == 0 {
        // glibc's behaviour: free, and return null.
        // SAFETY: the caller's contract.
        unsafe { free(p) };
        return ptr::null_mut();
    }
    let Some(old) = HEAP.usable_size(p.cast()) else {
        // Not ours: glibc's, from the fallback.
        // SAFETY: the caller's contract; glibc's own block.
        return unsafe { __libc_realloc(p, n) };
    };
    if Layout::from_size_align(n, MIN_ALIGN).is_err() {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    }
    // SAFETY: `p` is our live block of `old` usable bytes (all of which the caller may have
    // written), `n` is not zero and fits a layout.
    let q = unsafe { HEAP.realloc(p.cast(), Layout::from_size_align_unchecked(old, MIN_ALIGN), n) };
    if q.is_null() {
        set_errno(libc::ENOMEM);
    }
    q.cast()
}

/// # Safety
/// As glibc's `reallocarray`.
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, count: usize, size: usize) -> *mut c_void {
    match count.checked_mul(size) {
        // SAFETY: the caller's contract.
        Some(n) => unsafe { realloc(p, n) },
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// # Safety
/// As POSIX `posix_memalign`: `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, n: usize) -> i32 {
    if !align.is_power_of_two() || align % std::mem::size_of::<*mut c_void>() != 0 {
        return libc::EINVAL;
    }
    let p = alloc_aligned(n, align);
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: the caller's contract.
    unsafe { *out = p };
    0
}

/// # Safety
/// As C11's `aligned_alloc`.
#[no_mangle]
pub unsafe extern "C" fn aligned_alloc(align: usize, n: usize) -> *mut c_void {
    // As glibc's: an alignment that is not a power of two is rounded up to one.
    match align.max(1).checked_next_power_of_two() {
        Some(a) => alloc_aligned(n, a),
        None => {
            set_errno(libc::EINVAL);
            ptr::null_mut()
        }
    }
}

/// # Safety
/// As glibc's `memalign`.
#[no_mangle]
pub unsafe extern "C" fn memalign(align: usize, n: usize) -> *mut c_void {
    // SAFETY: same contract.
    unsafe { aligned_alloc(align, n) }
}

/// # Safety
/// As glibc's `valloc`.
#[no_mangle]
pub unsafe extern "C" fn valloc(n: usize) -> *mut c_void {
    alloc_aligned(n, page())
}

/// # Safety
/// As glibc's `pvalloc`.
#[no_mangle]
pub unsafe extern "C" fn pvalloc(n: usize) -> *mut c_void {
    match n.checked_next_multiple_of(page()) {
        Some(n) => alloc_aligned(n, page()),
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

fn page() -> usize {
    4096
}

/// # Safety
/// As glibc's `malloc_usable_size`: `p` is null or a live block from this library.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    if p.is_null() {
        return 0;
    }
    match HEAP.usable_size(p.cast()) {
        Some(n) => n,
        // SAFETY: the caller's contract: glibc's own block, from the fallback.
        None => unsafe { glibc_usable_size(p) },
    }
}

/// glibc's `malloc_usable_size`, for its own blocks (found once, with `dlsym`).
unsafe fn glibc_usable_size(p: *mut c_void) -> usize {
    type F = unsafe extern "C" fn(*mut c_void) -> usize;
    static FOUND: std::sync::OnceLock<Option<F>> = std::sync::OnceLock::new();
    let f = FOUND.get_or_init(|| {
        // SAFETY: a lookup of a C symbol by a NUL-terminated name.
        let s = unsafe { libc::dlsym(libc::RTLD_NEXT, b"malloc_usable_size\0".as_ptr().cast()) };
        // SAFETY: glibc's `malloc_usable_size` has this signature.
        (!s.is_null()).then(|| unsafe { std::mem::transmute::<*mut c_void, F>(s) })
    });
    // SAFETY: the caller's contract.
    f.map_or(0, |f| unsafe { f(p) })
}
