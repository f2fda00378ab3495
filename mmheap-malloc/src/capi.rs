//! The C API of `include/mmheap.h`: the "legacy" allocation calls over the process-wide heap,
//! and the "modern" ones over a chosen manager (the process-wide one, or a store file), with
//! counted blocks, handles and roots. Errors are null (or a non-zero return) with a message
//! kept for the calling thread (`mmheap_last_error`). Nothing here panics across the C
//! boundary: every Rust error becomes one of those.

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr;

use mmheap::{BlockHandle, DefaultManager, MappedManager, MemoryBlock, MemoryManager, Options};

/// A manager as C holds it.
pub enum Manager {
    Default(DefaultManager),
    Store(MappedManager),
}

impl Manager {
    fn as_dyn(&self) -> &dyn MemoryManager {
        match self {
            Manager::Default(m) => m,
            Manager::Store(m) => m,
        }
    }
}

/// A counted reference to one block, as C holds it.
pub struct Block(MemoryBlock);

/// A handle as C sees it: the same two words as [`BlockHandle`].
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Handle {
    pub offset: u64,
    pub generation: u64,
}

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

/// Forgets the calling thread's last error: every call that can fail starts with it, so that
/// a null from `mmheap_root` with no error set means "absent", whatever failed before.
fn clear_error() {
    let _ = LAST_ERROR.try_with(|l| *l.borrow_mut() = None);
}

/// `p` as a reference, or the error recorded (a null manager or block is an error, not a
/// crash: `m = mmheap_store_open(p); mmheap_alloc_with(m, n);` without a check is common).
///
/// # Safety
/// `p` is null or points to a live `T`.
unsafe fn arg<'a, T>(p: *const T, what: &str) -> Option<&'a T> {
    clear_error();
    // SAFETY: the caller's contract.
    let r = unsafe { p.as_ref() };
    if r.is_none() {
        fail::<()>(format!("null {what}"));
    }
    r
}

fn fail<T>(e: impl std::fmt::Display) -> *mut T {
    let msg = CString::new(e.to_string().replace('\0', " ")).unwrap_or_default();
    let _ = LAST_ERROR.try_with(|l| *l.borrow_mut() = Some(msg));
    ptr::null_mut()
}

fn boxed<T>(r: mmheap::Result<T>) -> *mut T {
    match r {
        Ok(v) => Box::into_raw(Box::new(v)),
        Err(e) => fail(e),
    }
}

/// `s` as a `&str`, or the error recorded.
///
/// # Safety
/// `s` is null or a NUL-terminated string.
unsafe fn text<'a>(s: *const c_char) -> Option<&'a str> {
    if s.is_null() {
        fail::<()>("null string");
        return None;
    }
    // SAFETY: the caller's contract.
    match unsafe { CStr::from_ptr(s) }.to_str() {
        Ok(t) => Some(t),
        Err(e) => {
            fail::<()>(e);
            None
        }
    }
}

/// The message of the calling thread's last error, or null. Valid until its next error.
#[no_mangle]
pub extern "C" fn mmheap_last_error() -> *const c_char {
    LAST_ERROR.try_with(|l| l.borrow().as_ref().map_or(ptr::null(), |m| m.as_ptr())).unwrap_or(ptr::null())
}

// ---- legacy -----------------------------------------------------------------------------

/// # Safety
/// As `malloc`.
#[no_mangle]
pub unsafe extern "C" fn mmheap_alloc(n: usize) -> *mut c_void {
    // SAFETY: same contract.
    unsafe { crate::malloc(n) }
}

/// # Safety
/// As `realloc`.
#[no_mangle]
pub unsafe extern "C" fn mmheap_realloc(p: *mut c_void, n: usize) -> *mut c_void {
    // SAFETY: same contract.
    unsafe { crate::realloc(p, n) }
}

/// # Safety
/// As `free`.
#[no_mangle]
pub unsafe extern "C" fn mmheap_free(p: *mut c_void) {
    // SAFETY: same contract.
    unsafe { crate::free(p) }
}

// ---- managers ---------------------------------------------------------------------------

/// The process-wide in-process manager. Release with `mmheap_manager_release`.
#[no_mangle]
pub extern "C" fn mmheap_default() -> *mut Manager {
    Box::into_raw(Box::new(Manager::Default(DefaultManager::global().clone())))
}

/// Creates a store file at `path` that may grow to `max_size` bytes (0: the default).
///
/// # Safety
/// `path` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn mmheap_store_create(path: *const c_char, max_size: u64) -> *mut Manager {
    clear_error();
    // SAFETY: the caller's contract.
    let Some(path) = (unsafe { text(path) }) else { return ptr::null_mut() };
    let mut options = Options::new();
    if max_size != 0 {
        options = options.max_size(max_size);
    }
    boxed(MappedManager::create(path, &options).map(Manager::Store))
}

/// Opens the store file at `path`.
///
/// # Safety
/// `path` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn mmheap_store_open(path: *const c_char) -> *mut Manager {
    clear_error();
    // SAFETY: the caller's contract.
    let Some(path) = (unsafe { text(path) }) else { return ptr::null_mut() };
    boxed(MappedManager::open(path).map(Manager::Store))
}

/// Releases a manager (its blocks keep the heap alive as long as they live).
///
/// # Safety
/// `m` is null or from `mmheap_default` / `mmheap_store_*`, released once.
#[no_mangle]
pub unsafe extern "C" fn mmheap_manager_release(m: *mut Manager) {
    if !m.is_null() {
        // SAFETY: the caller's contract.
        drop(unsafe { Box::from_raw(m) });
    }
}

// ---- blocks -----------------------------------------------------------------------------

/// Allocates a counted block of `len` bytes from `m`.
///
/// # Safety
/// `m` is a live manager.
#[no_mangle]
pub unsafe extern "C" fn mmheap_alloc_with(m: *const Manager, len: usize) -> *mut Block {
    // SAFETY: the caller's contract.
    let Some(m) = (unsafe { arg(m, "manager") }) else { return ptr::null_mut() };
    boxed(m.as_dyn().allocate(len).map(Block))
}

/// Releases one reference; the block is freed when the last one, in any process, goes.
///
/// # Safety
/// `b` is null or a live block reference, released once.
#[no_mangle]
pub unsafe extern "C" fn mmheap_free_with(b: *mut Block) {
    if !b.is_null() {
        // SAFETY: the caller's contract.
        drop(unsafe { Box::from_raw(b) });
    }
}

/// Another reference to the same block.
///
/// # Safety
/// `b` is a live block reference.
#[no_mangle]
pub unsafe extern "C" fn mmheap_block_clone(b: *const Block) -> *mut Block {
    // SAFETY: the caller's contract.
    let Some(b) = (unsafe { arg(b, "block") }) else { return ptr::null_mut() };
    Box::into_raw(Box::new(Block(b.0.clone())))
}

/// The block's bytes, read-only.
///
/// # Safety
/// `b` is a live block reference; the bytes are valid while it lives.
#[no_mangle]
pub unsafe extern "C" fn mmheap_block_data(b: *const Block) -> *const c_void {
    // SAFETY: the caller's contract.
    let Some(b) = (unsafe { arg(b, "block") }) else { return ptr::null() };
    b.0.as_slice().as_ptr().cast()
}

/// The block's bytes for writing, or null when the block may be seen by others (it was
/// shared: a handle taken, rooted, or another reference exists).
///
/// # Safety
/// `b` is a live block reference, used by one thread at a time.
#[no_mangle]
pub unsafe extern "C" fn mmheap_block_data_mut(b: *mut Block) -> *mut c_void {
    clear_error();
    // SAFETY: the caller's contract.
    let Some(b) = (unsafe { b.as_mut() }) else { return fail("null block") };
    match b.0.as_mut_slice() {
        Ok(s) => s.as_mut_ptr().cast(),
        Err(e) => fail(e),
    }
}

/// The block's length in bytes.
///
/// # Safety
/// `b` is a live block reference.
#[no_mangle]
pub unsafe extern "C" fn mmheap_block_len(b: *const Block) -> usize {
    // SAFETY: the caller's contract.
    unsafe { arg(b, "block") }.map_or(0, |b| b.0.len())
}

/// A handle naming the block, for another process (publishes it: read-only from now on).
///
/// # Safety
/// `b` is a live block reference.
#[no_mangle]
pub unsafe extern "C" fn mmheap_block_handle(b: *const Block) -> Handle {
    // SAFETY: the caller's contract.
    let Some(b) = (unsafe { arg(b, "block") }) else { return Handle { offset: 0, generation: 0 } };
    let h = b.0.handle();
    Handle { offset: h.offset, generation: h.generation }
}

/// A new reference to the block `h` names in `m`, or null (stale or invalid handle).
///
/// # Safety
/// `m` is a live manager.
#[no_mangle]
pub unsafe extern "C" fn mmheap_resolve(m: *const Manager, h: Handle) -> *mut Block {
    // SAFETY: the caller's contract.
    let Some(m) = (unsafe { arg(m, "manager") }) else { return ptr::null_mut() };
    let handle = BlockHandle { offset: h.offset, generation: h.generation };
    boxed(m.as_dyn().block_from_handle(handle).map(Block))
}

/// Names `b` `name` in the store `m` (0), or fails (-1; not a store, bad name, ...).
///
/// # Safety
/// `m` is a live manager, `name` a NUL-terminated string, `b` a live block reference.
#[no_mangle]
pub unsafe extern "C" fn mmheap_set_root(m: *const Manager, name: *const c_char, b: *const Block) -> i32 {
    // SAFETY: the caller's contract.
    let (Some(m), Some(b)) = (unsafe { (arg(m, "manager"), arg(b, "block")) }) else { return -1 };
    // SAFETY: the caller's contract.
    let Some(name) = (unsafe { text(name) }) else { return -1 };
    let Manager::Store(s) = m else {
        fail::<()>("roots live in stores: this is the in-process manager");
        return -1;
    };
    match s.set_root(name, &b.0) {
        Ok(()) => 0,
        Err(e) => {
            fail::<()>(e);
            -1
        }
    }
}

/// A new reference to the block named `name` in the store `m`, or null (absent: no error
/// recorded; or an error).
///
/// # Safety
/// `m` is a live manager, `name` a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn mmheap_root(m: *const Manager, name: *const c_char) -> *mut Block {
    // SAFETY: the caller's contract.
    let Some(m) = (unsafe { arg(m, "manager") }) else { return ptr::null_mut() };
    // SAFETY: the caller's contract.
    let Some(name) = (unsafe { text(name) }) else { return ptr::null_mut() };
    let Manager::Store(s) = m else { return fail("roots live in stores: this is the in-process manager") };
    match s.root(name) {
        Ok(Some(b)) => Box::into_raw(Box::new(Block(b))),
        Ok(None) => ptr::null_mut(),
        Err(e) => fail(e),
    }
}
