//! A region's store words as model atomics, under `--cfg loom` (`src/sync.rs`).
//!
//! `loom` cannot watch atomics made from pointers into mapped bytes, so a region built for the
//! model checker keeps a `loom` word for each 8-byte and each 4-byte word it has handed out a
//! view of, made on first use with the value the bytes (or an existing word of the other width
//! over the same bytes) hold then. Regions over the same base (two "processes" of a model that
//! map the same memory) share their words. The byte accessors of the region copy to and from
//! the words they overlap, so a word written through a view and read as bytes (or the other way
//! round) agrees, but those copies are plain memory accesses for the model: no protocol may
//! rely on bytes for synchronization. A word viewed at both widths is two model words once both
//! exist (the u32 view's value made from the u64's at its first use); the protocols do not mix
//! widths on a word after setup.
//!
//! A word made by one model thread and then used by another without a happens-before edge
//! between the making and the use is a causality error in `loom`: a model makes (touches) the
//! words its threads share before it spawns them, which formatting and setting up the store
//! does for all the words of the structures it made.

use std::ptr::NonNull;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// The model words of one region's bytes.
pub(crate) struct Words {
    base: NonNull<u8>,
    w64: Box<[OnceLock<AtomicU64>]>,
    w32: Box<[OnceLock<AtomicU32>]>,
}

// SAFETY: `base` points to memory that lives as long as the regions over it (their contract);
// it is read and written here only while a model thread runs, and `loom` runs one at a time.
unsafe impl Send for Words {}
// SAFETY: as above.
unsafe impl Sync for Words {}

/// The live model words, by base address: regions over the same memory share them.
static LIVE: Mutex<Vec<(usize, Weak<Words>)>> = Mutex::new(Vec::new());

impl Words {
    /// The words of the region at `base` reserving `reserved` bytes, shared with any live
    /// region over the same base.
    pub(crate) fn at(base: NonNull<u8>, reserved: u64) -> Arc<Words> {
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|(_, w)| w.strong_count() > 0);
        let key = base.as_ptr() as usize;
        if let Some(words) = live.iter().find(|(b, _)| *b == key).and_then(|(_, w)| w.upgrade()) {
            return words;
        }
        let (n64, n32) = ((reserved / 8) as usize, (reserved / 4) as usize);
        let words = Arc::new(Words {
            base,
            w64: (0..n64).map(|_| OnceLock::new()).collect(),
            w32: (0..n32).map(|_| OnceLock::new()).collect(),
        });
        live.push((key, Arc::downgrade(&words)));
        words
    }

    /// Whether a region over the memory at `base` still lives: a model's memory must outlive
    /// its regions, and words left from one execution would be stale in the next (whose memory
    /// may come at the same address).
    #[cfg(test)]
    pub(crate) fn live(base: NonNull<u8>) -> bool {
        let live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        let key = base.as_ptr() as usize;
        live.iter().any(|(b, w)| *b == key && w.strong_count() > 0)
    }

    /// The plain bytes at `off`.
    fn plain<const N: usize>(&self, off: u64) -> [u8; N] {
        let mut out = [0; N];
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: callers pass offsets of words inside the region's checked limit.
            *b = unsafe { self.base.as_ptr().add(off as usize + i).read_volatile() };
        }
        out
    }

    /// Writes `bytes` plainly at `off`.
    fn put(&self, off: u64, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            // SAFETY: as in `plain`.
            unsafe { self.base.as_ptr().add(off as usize + i).write_volatile(*b) };
        }
    }

    /// The model word for the 8 bytes at `off` (in range and aligned: the caller checked).
    pub(crate) fn word(&self, off: u64) -> &AtomicU64 {
        self.w64[(off / 8) as usize].get_or_init(|| {
            self.flush32(off, 8);
            AtomicU64::new(u64::from_le_bytes(self.plain(off)))
        })
    }

    /// The model word for the 4 bytes at `off` (in range and aligned: the caller checked).
    pub(crate) fn word32(&self, off: u64) -> &AtomicU32 {
        self.w32[(off / 4) as usize].get_or_init(|| {
            self.flush64(off, 4);
            AtomicU32::new(u32::from_le_bytes(self.plain(off)))
        })
    }

    /// Copies the existing 8-byte words over `off .. off + len` into the plain bytes.
    fn flush64(&self, off: u64, len: u64) {
        for i in off / 8..(off + len).div_ceil(8) {
            if let Some(w) = self.w64.get(i as usize).and_then(OnceLock::get) {
                self.put(i * 8, &w.load(Ordering::Relaxed).to_le_bytes());
            }
        }
    }

    /// Copies the existing 4-byte words over `off .. off + len` into the plain bytes.
    fn flush32(&self, off: u64, len: u64) {
        for i in off / 4..(off + len).div_ceil(4) {
            if let Some(w) = self.w32.get(i as usize).and_then(OnceLock::get) {
                self.put(i * 4, &w.load(Ordering::Relaxed).to_le_bytes());
            }
        }
    }

    /// Before a byte access of `off .. off + len`: the plain bytes take the words' values.
    pub(crate) fn before_bytes(&self, off: u64, len: u64) {
        self.flush64(off, len);
        self.flush32(off, len);
    }

    /// After a byte write of `off .. off + len`: the words over it take the plain bytes' values.
    pub(crate) fn after_write(&self, off: u64, len: u64) {
        for i in off / 8..(off + len).div_ceil(8) {
            if let Some(w) = self.w64.get(i as usize).and_then(OnceLock::get) {
                w.store(u64::from_le_bytes(self.plain(i * 8)), Ordering::Relaxed);
            }
        }
        for i in off / 4..(off + len).div_ceil(4) {
            if let Some(w) = self.w32.get(i as usize).and_then(OnceLock::get) {
                w.store(u32::from_le_bytes(self.plain(i * 4)), Ordering::Relaxed);
            }
        }
    }
}
