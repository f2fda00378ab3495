//! The one place where store offsets become pointers.
//!
//! A [`Region`] is a range of bytes, mapped from a file or taken from anonymous memory, that
//! may be shared with other processes. Every access names an offset; the region checks it
//! against the validated limit and hands back an atomic view, so bytes that another process
//! may write are never behind a plain reference. Metadata words are read and written with
//! `Relaxed` ordering under the store lock (whose acquire/release orders them); the reference
//! word of a block header is the exception and states its own orderings where it is used.

use std::marker::PhantomData;
use std::ptr::NonNull;

use crate::error::{Error, Result};
use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// Model words for the model checker (`--cfg loom`, `src/sync.rs`).
#[cfg(loom)]
#[path = "region_model.rs"]
pub(crate) mod model;

/// A byte range addressed by offset, with a limit that only grows.
pub(crate) struct Region {
    base: NonNull<u8>,
    /// Bytes from `base` that are backed and may be touched. Only grows. Process-local.
    limit: crate::sync::local::AtomicU64,
    /// Bytes of address space reserved at `base`; `limit` never passes it.
    reserved: u64,
    /// The model words its views are (`--cfg loom` only).
    #[cfg(loom)]
    words: std::sync::Arc<model::Words>,
}

// SAFETY: a Region is a pointer to memory that is only accessed through atomics or through
// byte ranges whose exclusive use the heap protocol guarantees; it carries no thread-bound
// state.
unsafe impl Send for Region {}
// SAFETY: as above; shared use goes through atomic views.
unsafe impl Sync for Region {}

impl Region {
    /// Wraps `reserved` bytes of address space at `base`, of which the first `limit` are usable.
    ///
    /// # Safety
    /// `base .. base + reserved` must stay reserved for the life of the region, aligned to 8,
    /// and `base .. base + limit` (and every later limit passed to [`Region::raise_limit`])
    /// must be readable and writable. Nobody may hold a plain Rust reference to those bytes
    /// except as the heap protocol allows (payloads of blocks the holder owns).
    pub(crate) unsafe fn new(base: NonNull<u8>, limit: u64, reserved: u64) -> Self {
        debug_assert!(limit <= reserved);
        debug_assert!(base.as_ptr() as usize % 8 == 0);
        Region {
            base,
            limit: crate::sync::local::AtomicU64::new(limit),
            reserved,
            #[cfg(loom)]
            words: model::Words::at(base, reserved),
        }
    }

    /// As [`Region::new`] over memory mapped read-only (a store opened with
    /// `MappedManager::open_read_only`).
    ///
    /// # Safety
    /// As for [`Region::new`], but `base .. base + limit` (and every later limit) need only be
    /// readable, and the caller must make no access through the region but byte reads and
    /// `Relaxed` loads of words: a store or read-modify-write would fault, and Rust promises
    /// only relaxed atomic loads of at most a word to work on read-only memory
    /// (`core::sync::atomic`, "Atomic accesses to read-only memory").
    pub(crate) unsafe fn new_read_only(base: NonNull<u8>, limit: u64, reserved: u64) -> Self {
        // SAFETY: the caller's contract is `new`'s, but for writability, which `new` needs only
        // for the accesses the caller promises not to make.
        unsafe { Self::new(base, limit, reserved) }
    }

    /// Bytes that may be touched now.
    #[inline]
    pub(crate) fn limit(&self) -> u64 {
        self.limit.load(Ordering::Acquire)
    }

    /// Bytes of address space reserved.
    /// The address of offset 0.
    pub(crate) fn base_addr(&self) -> usize {
        self.base.as_ptr() as usize
    }

    pub(crate) fn reserved(&self) -> u64 {
        self.reserved
    }

    /// Raises the limit to `new` (never lowers it).
    ///
    /// # Safety
    /// `base .. base + new` must be readable and writable for the rest of the region's life
    /// (readable, for a region made by [`Region::new_read_only`]).
    pub(crate) unsafe fn raise_limit(&self, new: u64) {
        assert!(new <= self.reserved, "limit beyond reservation");
        self.limit.fetch_max(new, Ordering::AcqRel);
    }

    /// Whether `off .. off + len` lies inside the limit and `off` is aligned to `align`.
    #[inline]
    fn fits(&self, off: u64, len: u64, align: u64) -> bool {
        off % align == 0 && off.checked_add(len).is_some_and(|e| e <= self.limit())
    }

    /// The `u64` word at `off`, or `None` when it is out of range or misaligned. The hot paths
    /// use this form: an `Option` of a reference comes back in a register, a `Result` through
    /// memory.
    #[inline]
    pub(crate) fn word(&self, off: u64) -> Option<&AtomicU64> {
        self.snapshot().word(off)
    }

    /// The `u64` word at `off`, without the range check.
    ///
    /// # Safety
    /// `off .. off + 8` must have been range-checked on this region before (by [`Region::word`]
    /// or a check of a range containing it) and `off` be aligned to 8: the limit only grows, so
    /// it is still in range.
    #[inline]
    pub(crate) unsafe fn word_unchecked(&self, off: u64) -> &AtomicU64 {
        debug_assert!(self.fits(off, 8, 8));
        #[cfg(loom)]
        return self.words.word(off);
        // SAFETY: in range and aligned per the contract; as in `Snapshot::word`.
        #[cfg(not(loom))]
        unsafe {
            AtomicU64::from_ptr(self.base.as_ptr().add(off as usize).cast())
        }
    }

    /// The `u64` word at `off`.
    #[inline]
    pub(crate) fn u64_at(&self, off: u64) -> Result<&AtomicU64> {
        self.word(off).ok_or_else(|| out_of_range(off))
    }

    /// The `u32` word at `off`.
    pub(crate) fn u32_at(&self, off: u64) -> Result<&AtomicU32> {
        self.snapshot().word32(off).ok_or_else(|| out_of_range(off))
    }

    /// Loads the `u64` at `off` (relaxed: callers hold the store lock).
    pub(crate) fn load(&self, off: u64) -> Result<u64> {
        Ok(self.u64_at(off)?.load(Ordering::Relaxed))
    }

    /// Stores `v` at `off` (relaxed: callers hold the store lock).
    pub(crate) fn store(&self, off: u64, v: u64) -> Result<()> {
        self.u64_at(off)?.store(v, Ordering::Relaxed);
        Ok(())
    }

    /// Loads the `u32` at `off`.
    pub(crate) fn load32(&self, off: u64) -> Result<u32> {
        Ok(self.u32_at(off)?.load(Ordering::Relaxed))
    }

    /// Stores the `u32` `v` at `off`.
    pub(crate) fn store32(&self, off: u64, v: u32) -> Result<()> {
        self.u32_at(off)?.store(v, Ordering::Relaxed);
        Ok(())
    }

    /// The offset of `p` if it points into the limit of this region.
    #[inline]
    pub(crate) fn offset_of(&self, p: *const u8) -> Option<u64> {
        let off = (p as usize).checked_sub(self.base.as_ptr() as usize)? as u64;
        (off < self.limit()).then_some(off)
    }

    /// A pointer to `len` bytes at `off`, range-checked. Dereferencing it is the caller's
    /// business (payload bytes follow the ownership rules in ARCHITECTURE.md).
    pub(crate) fn ptr(&self, off: u64, len: u64) -> Result<NonNull<u8>> {
        self.bytes(off, len).ok_or_else(|| out_of_range(off))
    }

    /// A pointer to the byte at `off`, without the range check.
    ///
    /// # Safety
    /// `off` must lie inside a range checked on this region before (by [`Region::ptr`] or
    /// [`Region::bytes`], a length-0 range included): the limit only grows, so it still does.
    #[inline]
    pub(crate) unsafe fn at_unchecked(&self, off: u64) -> NonNull<u8> {
        debug_assert!(off <= self.limit());
        // SAFETY: inside the limit per the contract, so inside the reservation and non-null.
        unsafe { NonNull::new_unchecked(self.base.as_ptr().add(off as usize)) }
    }

    /// As [`Region::ptr`], `None` when out of range (the hot paths' form, see [`Region::word`]).
    #[inline]
    pub(crate) fn bytes(&self, off: u64, len: u64) -> Option<NonNull<u8>> {
        if !self.fits(off, len, 1) {
            return None;
        }
        // SAFETY: `off` is within the reservation (checked above), so the offset pointer stays
        // in the same allocation and is non-null.
        Some(unsafe { NonNull::new_unchecked(self.base.as_ptr().add(off as usize)) })
    }

    /// Copies bytes out of the region (for reading headers of an unknown file).
    pub(crate) fn read_bytes(&self, off: u64, out: &mut [u8]) -> Result<()> {
        let p = self.ptr(off, out.len() as u64)?;
        #[cfg(loom)]
        self.words.before_bytes(off, out.len() as u64);
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: `i < len`, so the byte is inside the checked range; the bytes are plain
            // data; a concurrent writer in another process can only make the copy stale, and
            // `read_volatile` keeps the compiler from assuming otherwise.
            *b = unsafe { p.as_ptr().add(i).read_volatile() };
        }
        Ok(())
    }

    /// Writes bytes into the region (metadata only, under the store lock).
    pub(crate) fn write_bytes(&self, off: u64, data: &[u8]) -> Result<()> {
        let p = self.ptr(off, data.len() as u64)?;
        #[cfg(loom)]
        self.words.before_bytes(off, data.len() as u64);
        for (i, b) in data.iter().enumerate() {
            // SAFETY: `i < len`, so the byte is inside the checked range, which is metadata
            // guarded by the store lock: no Rust reference to it exists anywhere.
            unsafe { p.as_ptr().add(i).write_volatile(*b) };
        }
        #[cfg(loom)]
        self.words.after_write(off, data.len() as u64);
        Ok(())
    }

    /// Fills `len` bytes at `off` with zero (metadata only, under the store lock).
    pub(crate) fn zero(&self, off: u64, len: u64) -> Result<()> {
        let p = self.ptr(off, len)?;
        #[cfg(loom)]
        self.words.before_bytes(off, len);
        // SAFETY: range checked; the bytes are metadata or a payload the caller owns solely.
        unsafe { p.as_ptr().write_bytes(0, len as usize) };
        #[cfg(loom)]
        self.words.after_write(off, len);
        Ok(())
    }
}

/// A region's base and limit copied out, for a run of accesses that should not load the limit
/// atomically each time (the allocator core's operations, under the store lock). It is plain
/// data, so the compiler keeps it in registers across the stores it makes (a `&Region` holds an
/// atomic, so every store might have changed it). The limit only grows, so a snapshot is never
/// too generous.
#[derive(Clone, Copy)]
pub(crate) struct Snapshot<'r> {
    #[cfg_attr(loom, allow(dead_code))]
    base: NonNull<u8>,
    limit: u64,
    _region: PhantomData<&'r Region>,
    #[cfg(loom)]
    words: &'r model::Words,
}

impl<'r> Snapshot<'r> {
    /// The limit when the snapshot was taken.
    #[inline]
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// The `u64` word at `off`, or `None` when it is out of range or misaligned.
    #[inline]
    pub(crate) fn word(&self, off: u64) -> Option<&'r AtomicU64> {
        if off % 8 != 0 || off > self.limit.saturating_sub(8) {
            return None;
        }
        #[cfg(loom)]
        return Some(self.words.word(off));
        // SAFETY: `off .. off + 8` lies inside a limit the region had (it only grows) and is
        // aligned to 8; the constructor's contract says those bytes are valid for the region's
        // life and touched by others only atomically.
        #[cfg(not(loom))]
        Some(unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(off as usize).cast()) })
    }

    /// The `u32` word at `off`, or `None` when it is out of range or misaligned.
    #[inline]
    pub(crate) fn word32(&self, off: u64) -> Option<&'r AtomicU32> {
        if off % 4 != 0 || off > self.limit.saturating_sub(4) {
            return None;
        }
        #[cfg(loom)]
        return Some(self.words.word32(off));
        // SAFETY: as in `word`, with 4 bytes aligned to 4.
        #[cfg(not(loom))]
        Some(unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(off as usize).cast()) })
    }
}

impl Region {
    /// The base and the current limit, copied (see [`Snapshot`]).
    #[inline]
    pub(crate) fn snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            base: self.base,
            limit: self.limit(),
            _region: PhantomData,
            #[cfg(loom)]
            words: &self.words,
        }
    }
}

#[cold]
pub(crate) fn out_of_range(off: u64) -> Error {
    Error::corrupt("offset out of range or misaligned", off)
}

/// A region over ordinary heap memory, for tests (and Miri, which has no `mmap`).
#[cfg(test)]
pub(crate) struct TestRegion {
    _buf: Vec<u64>,
    pub(crate) region: Region,
}

#[cfg(test)]
impl TestRegion {
    pub(crate) fn new(reserved: u64, limit: u64) -> Self {
        let mut buf = vec![0u64; (reserved / 8) as usize];
        let base = NonNull::new(buf.as_mut_ptr().cast::<u8>()).expect("vec pointer");
        // SAFETY: the Vec owns `reserved` zeroed bytes aligned to 8 and lives as long as the
        // region (same struct, never reallocated).
        let region = unsafe { Region::new(base, limit, reserved) };
        TestRegion { _buf: buf, region }
    }

    pub(crate) fn grow(&self, new: u64) {
        // SAFETY: the whole reservation is backed by the Vec.
        unsafe { self.region.raise_limit(new) }
    }
}
