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
//! handle (no cache yet, an empty slab, another thread's slab, a release that would retire a
//! slab or finds it off its queue) they leave to the general paths, untouched.

use std::ptr::NonNull;

use super::table::Raw;
use super::{class_of, Local, Slabs, SLAB_MAX};
use crate::sync::{AtomicPtr, AtomicUsize, Ordering};

/// The process-wide heap's slabs, once it is made (never unset: the heap lives for ever).
static GLOBAL: AtomicPtr<Slabs> = AtomicPtr::new(std::ptr::null_mut());
/// What a release needs of them, copied: the reservation (`LEN` 0 until published, and set
/// last) and the table's places, so that finding a block's slab starts from statics.
static BASE: AtomicUsize = AtomicUsize::new(0);
static LEN: AtomicUsize = AtomicUsize::new(0);
static HEADS: AtomicUsize = AtomicUsize::new(0);
static MAP: AtomicUsize = AtomicUsize::new(0);
static UNITS: AtomicUsize = AtomicUsize::new(0);

/// This thread's `Local` for the process-wide heap: set while the thread holds a claim on a
/// cache of that heap, null otherwise. A `thread_local!`.
#[cfg(not(all(feature = "initial-exec-tls", target_arch = "x86_64", target_os = "linux")))]
mod word {
    use std::cell::Cell;

    crate::sync::thread_local! {
        static MINE: Cell<*const super::Local> = const { Cell::new(std::ptr::null()) };
    }

    #[inline(always)]
    pub(super) fn get() -> *const super::Local {
        MINE.try_with(Cell::get).unwrap_or(std::ptr::null())
    }

    pub(super) fn set(p: *const super::Local) {
        let _ = MINE.try_with(|m| m.set(p));
    }
}

/// As above, with feature `initial-exec-tls` on x86-64 Linux: a word of the static TLS block,
/// reached with the initial-exec model (the thread pointer plus an offset the dynamic linker
/// writes into the GOT), one load. Stable Rust's `thread_local!` in a shared library uses the
/// general-dynamic model, a call to `__tls_get_addr` per access (glibc-simple through the
/// drop-in library: 0.33 s with it, 0.27 s with this word, mimalloc 0.24 s). A library with such a word is meant to be
/// loaded at program start (the static TLS block is laid out then): `dlopen` later works only
/// while glibc's spare static TLS space has room, and is not supported. The drop-in library is
/// preloaded or linked; the feature is its, not the crate's default.
#[cfg(all(feature = "initial-exec-tls", target_arch = "x86_64", target_os = "linux"))]
mod word {
    core::arch::global_asm!(
        ".pushsection .tbss,\"awT\",@nobits",
        ".p2align 3",
        ".globl mmheap_fast_mine_v1",
        ".hidden mmheap_fast_mine_v1",
        ".type mmheap_fast_mine_v1, @tls_object",
        ".size mmheap_fast_mine_v1, 8",
        "mmheap_fast_mine_v1:",
        ".zero 8",
        ".popsection",
    );

    #[inline(always)]
    pub(super) fn get() -> *const super::Local {
        let v: usize;
        // SAFETY: reads this thread's own word of the static TLS block: the GOT entry holds
        // its offset from the thread pointer (`fs`), which the dynamic linker wrote at load.
        unsafe {
            core::arch::asm!(
                "mov {v}, qword ptr [rip + mmheap_fast_mine_v1@GOTTPOFF]",
                "mov {v}, qword ptr fs:[{v}]",
                v = out(reg) v,
                options(nostack, preserves_flags, readonly),
            )
        };
        v as *const super::Local
    }

    pub(super) fn set(p: *const super::Local) {
        // SAFETY: writes this thread's own word of the static TLS block (as in `get`), which
        // nothing else aliases: only these two functions reach it.
        unsafe {
            core::arch::asm!(
                "mov {t}, qword ptr [rip + mmheap_fast_mine_v1@GOTTPOFF]",
                "mov qword ptr fs:[{t}], {v}",
                t = out(reg) _,
                v = in(reg) p,
                options(nostack, preserves_flags),
            )
        };
    }
}

/// Publishes the process-wide heap's slabs.
pub(crate) fn publish(slabs: &'static Slabs) {
    GLOBAL.store(slabs as *const Slabs as *mut Slabs, Ordering::Release);
    let raw = slabs.table.raw();
    BASE.store(slabs.base, Ordering::Relaxed);
    HEADS.store(raw.heads, Ordering::Relaxed);
    MAP.store(raw.map, Ordering::Relaxed);
    UNITS.store(raw.units, Ordering::Relaxed);
    LEN.store(slabs.len, Ordering::Release);
}

/// Whether `slabs` are the process-wide heap's.
pub(crate) fn is_global(slabs: &Slabs) -> bool {
    std::ptr::eq(GLOBAL.load(Ordering::Relaxed), slabs)
}

/// Records (or, with `None`, forgets) this thread's `Local` for the process-wide heap.
pub(crate) fn set_mine(local: Option<&Local>) {
    word::set(local.map_or(std::ptr::null(), |l| l as *const Local));
}

/// This thread's `Local` for the process-wide heap, if it has one.
#[inline(always)]
fn mine() -> Option<&'static Local> {
    let p = word::get();
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

/// The slab of the process-wide heap that `p` lies in, if any.
#[inline(always)]
fn slab_of(p: *const u8) -> Option<&'static super::Slab> {
    let len = LEN.load(Ordering::Acquire);
    let off = (p as usize).wrapping_sub(BASE.load(Ordering::Relaxed));
    if off >= len {
        return None; // not ours, or the heap is not published yet (`len` 0)
    }
    let raw = Raw {
        heads: HEADS.load(Ordering::Relaxed),
        map: MAP.load(Ordering::Relaxed),
        units: UNITS.load(Ordering::Relaxed),
    };
    // SAFETY: published (`len` read acquire after the rest was stored) from the process-wide
    // heap's table, which lives for ever.
    unsafe { raw.slab_at(off) }
}

/// A block of a slab of the process-wide heap, its slab looked up once ([`find`]): a
/// `realloc` asks its size and may then free it.
pub(crate) struct Found {
    slab: &'static super::Slab,
    p: *mut u8,
}

impl Found {
    /// The bytes usable in the block (its slab's block size).
    #[inline(always)]
    pub(crate) fn size(&self) -> usize {
        self.slab.size()
    }

    /// Frees the block if the calling thread owns its slab and the release needs nothing but
    /// the push; `false` (nothing done) otherwise.
    #[inline(always)]
    pub(crate) fn free(self) -> bool {
        match mine() {
            Some(l) if self.slab.owner.load(Ordering::Relaxed) == l as *const Local as usize => {
                l.free_quiet(self.slab, self.p as usize)
            }
            _ => false,
        }
    }
}

/// The block at `p`, if it is one of a slab of the process-wide heap.
#[inline(always)]
pub(crate) fn find(p: *mut u8) -> Option<Found> {
    slab_of(p).map(|slab| Found { slab, p })
}

/// Frees `p` if it is a block of a slab of the process-wide heap that the calling thread owns
/// and the release needs nothing but the push; `false` (nothing done) otherwise.
#[inline(always)]
pub(crate) fn free(p: *mut u8) -> bool {
    find(p).is_some_and(Found::free)
}
