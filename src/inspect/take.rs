//! Taking a snapshot's copy so that it shows the store at one moment, even while other
//! processes write it.
//!
//! Everything the heap's structure is made of (tags, free lists, counters, roots, hold tables,
//! spans) changes only under the store lock; what changes without it (reference words,
//! parked blocks, cache counters) changes one word at a time, and a check under the lock
//! already reads those words while their owners move them. So a copy taken *while the store
//! lock is held for it*, each word read whole (an atomic load through a mapping, not a
//! `read` that may tear a word), is what a check under the lock would see: it can show no
//! problem that a check in a writing process would not.
//!
//! The copier holds the lock without registering as a process of the store: it takes the
//! liveness lock (a record lock, which writes nothing) of a *free* registry slot and uses
//! that slot's tag. Waiters judge it alive by that record lock, as any holder; if the copier
//! dies holding the store lock, the kernel drops its record lock and the next waiter takes
//! the store lock over and runs recovery, which finds the slot free and nothing to reclaim
//! (the case of a process killed while attaching). The store lock word is the one word the
//! copier writes: it gives it back free, and while it waits for a living holder it sets the
//! waiters bit, as every waiter does.
//!
//! When the lock cannot be had, the copy says why ([`View`]): a dead holder that nobody took
//! over while the copy was made (nothing under the lock changed), no living process at all
//! (nothing changed), or neither: then the copy may mix moments, and a caller that finds
//! problems in it must confirm them.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use memmap2::{MmapOptions, MmapRaw};

use crate::engine::core::region::Region;
use crate::engine::heap::Backing;
use crate::error::{Error, Result};
use crate::format::*;
use crate::lock::CONTENDED;
use crate::mapped::copy::{copy_used, CHUNK};
use crate::mapped::CopyBacking;
use crate::sync::{AtomicBool, Ordering};
use crate::sys;

/// How long one holder may keep the store lock before a copier copies without it. Critical
/// sections last microseconds (unless the holder is descheduled on a busy machine); a
/// writer's own full check of a large heap holds the lock for the whole walk.
const LOCK_STUCK: Duration = Duration::from_secs(2);
/// How long a copier waits for the store lock in all, however often it changes hands.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// How far a snapshot can be trusted to show the store at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum View {
    /// Looked at (in place, or copied) under the store lock, taken for it and given back: what
    /// a check under the lock would see.
    Locked,
    /// The lock was held, before and after the copy, by a process that is dead: nothing that
    /// needs the lock changed meanwhile (what a recovery would start from).
    DeadHolder,
    /// No process was alive in the store before or after the copy: nothing changed.
    Quiet,
    /// Processes were alive and the lock could not be had (a living holder kept it for 2 s,
    /// 30 s passed, or the file is not writable by us): parts of the copy may be from different
    /// moments, so a problem found in it may be a change in progress.
    Unsettled,
}

/// A private copy of the store's first `capacity` bytes, and what it shows.
pub(super) struct StoreCopy {
    pub(super) file: File,
    pub(super) words: Vec<u64>,
    pub(super) capacity: u64,
    pub(super) view: View,
    /// The store lock's holder (registry slot) while the copy was made, if not us.
    pub(super) lock_holder: Option<u32>,
}

/// Copies the store at `path` as the module's comment says, calling `progress(done, total)`.
pub(super) fn copy(path: &Path, mut progress: impl FnMut(u64, u64)) -> Result<StoreCopy> {
    match hold(path, &mut progress)? {
        // No progress is reported under the lock: drawing it may block on a terminal.
        Found::Held(held, _no_stop) => {
            let (words, capacity) = copy_mapped(&held.file, &mut |_, _| {})?;
            Ok(StoreCopy { file: held.into_file(), words, capacity, view: View::Locked, lock_holder: None })
        }
        Found::Copied(copy) => Ok(copy),
    }
}

/// What [`hold`] found.
pub(super) enum Found {
    /// The store lock, taken (a [`View::Locked`] look), and this thread's stop signals held
    /// back until it is given back (a stopped holder would keep every writer waiting).
    Held(Held, sys::StopSignalsHeld),
    /// A copy made without the lock, which could not be had: its view says why.
    Copied(StoreCopy),
}

/// The store lock of a store, held until this drops.
pub(super) struct Held {
    pub(super) file: File,
    lock: StoreLock,
}

impl Held {
    /// The store file, the lock given back.
    fn into_file(self) -> File {
        let Held { file, lock } = self;
        drop(lock);
        file
    }
}

/// The store under a [`Held`] lock, mapped whole for a heap that inspects it in place: the
/// mapping as a region, and the backing that keeps the mapping and gives the lock back when
/// the heap drops.
pub(super) fn map_held(held: Held) -> Result<(Region, Box<dyn Backing>)> {
    let len = held.file.metadata().map_err(|e| Error::io("stat the store file", e))?.len();
    // Read again under the lock: the store may have grown since the first look.
    let (capacity, _) = crate::mapped::validate_superblock(&held.file, len)?;
    let Mapping { region, _map: map } = Mapping::new(&held.file, capacity)?;
    let Held { file, lock } = held;
    Ok((region, Box::new(CopyBacking { file, _memory: (map, lock) })))
}

/// Runs `body`, letting go of every store page mapped in `region` each time the walks it makes
/// report their progress (`progress::with_step`: every few MiB of a walk in address order,
/// every few blocks of one that jumps). An inspection in place walks the whole store, whose
/// pages are the store's (in the page cache), not the inspector's memory, and a touch may map
/// a whole large folio (2 MiB) at once: what stays mapped is what the last few steps touched,
/// and a later touch maps a page again.
pub(super) fn trimmed<R>(region: &Region, body: impl FnOnce() -> R) -> R {
    let (base, len) = (region.base_addr(), region.limit() as usize);
    crate::progress::with_step(move || sys::release_mapped(base, len), body)
}

/// Takes the store lock at `path` for an inspection, as the module's comment says; when it
/// cannot be had, copies the store without it (calling `progress(done, total)`) and says why.
pub(super) fn hold(path: &Path, progress: &mut impl FnMut(u64, u64)) -> Result<Found> {
    let (file, writable) = open(path)?;
    let len = file.metadata().map_err(|e| Error::io("stat the store file", e))?.len();
    // Junk, or a store this version cannot read, is refused before any lock is touched.
    crate::mapped::validate_superblock(&file, len)?;
    if !writable {
        return copy_unlocked(file, progress).map(Found::Copied);
    }
    // Held back until the lock is given back (below, by the caller of a `Held`, or when an
    // error drops the lock first).
    let no_stop = sys::hold_stop_signals();
    let lock = StoreLock::new(&file)?;
    let (word, dead) = match lock.take()? {
        Taken::Ours => return Ok(Found::Held(Held { file, lock }, no_stop)),
        Taken::Dead(w) => (w, true),
        Taken::Live(w) => (w, false),
    };
    // Whether nothing could change the store meanwhile: asked only when the lock is not ours.
    let quiet_before = !anyone_alive(&file);
    let (words, capacity) = copy_mapped(&file, progress)?;
    let quiet = quiet_before && !anyone_alive(&file);
    let view = match () {
        _ if dead && lock.word()? == word => View::DeadHolder,
        _ if quiet => View::Quiet,
        _ => View::Unsettled,
    };
    let lock_holder = holder(word);
    drop(lock);
    Ok(Found::Copied(StoreCopy { file, words, capacity, view, lock_holder }))
}

/// Opens the store for reading and, if allowed, writing (the lock word); a symlink or a file
/// that is not a regular one is refused (`mapped::open_to_inspect`).
fn open(path: &Path) -> Result<(File, bool)> {
    crate::mapped::open_to_inspect(path)
}

/// The registry slot named by a lock word's tag.
fn holder(word: u32) -> Option<u32> {
    let tag = word & !CONTENDED;
    (tag != 0).then(|| tag.wrapping_sub(1))
}

/// Whether any process holds the liveness lock of a registry slot (other than ours).
fn anyone_alive(file: &File) -> bool {
    (0..SLOT_COUNT).any(|i| sys::byte_locked(file, LIVENESS_LOCK_BASE + i).unwrap_or(true))
}

/// Copies a store we may not write (so cannot lock): settled if nobody was alive before and
/// after, else unsettled.
fn copy_unlocked(file: File, progress: &mut impl FnMut(u64, u64)) -> Result<StoreCopy> {
    let quiet_before = !anyone_alive(&file);
    let (words, capacity) = read_copy(&file, progress)?;
    let quiet = quiet_before && !anyone_alive(&file);
    let view = if quiet { View::Quiet } else { View::Unsettled };
    Ok(StoreCopy { file, words, capacity, view, lock_holder: None })
}

/// The store's bytes read with plain reads (a word another process is changing may tear).
fn read_copy(file: &File, progress: &mut impl FnMut(u64, u64)) -> Result<(Vec<u64>, u64)> {
    let len = file.metadata().map_err(|e| Error::io("stat the store file", e))?.len();
    let (capacity, _) = crate::mapped::validate_superblock(file, len)?;
    let mut words = crate::mapped::zeroed_words(capacity / 8)?;
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    let mut reader = file;
    for (i, chunk) in bytes.chunks_mut(CHUNK as usize).enumerate() {
        reader.read_exact(chunk).map_err(|e| Error::io("read the store file", e))?;
        progress((i as u64 * CHUNK + chunk.len() as u64).min(capacity), capacity);
    }
    Ok((words, capacity))
}

/// The store's bytes read word by word through a mapping; the capacity, which grows only
/// under the lock, is read anew (the lock may have been taken since the first look).
///
/// Only what is used is copied: the metadata before the heap, every used block whole, and of
/// each free block what the core reads (its header, free-list links and footer), found by a
/// walk of the heap's tiling. The rest of the copy stays zero, pages the allocator hands out
/// lazily, so a large store that is mostly free costs little time and memory. A heap that
/// cannot be walked is copied whole, for the check to say where it breaks.
fn copy_mapped(file: &File, progress: &mut impl FnMut(u64, u64)) -> Result<(Vec<u64>, u64)> {
    let len = file.metadata().map_err(|e| Error::io("stat the store file", e))?.len();
    let (capacity, _) = crate::mapped::validate_superblock(file, len)?;
    let whole = Mapping::new(file, capacity)?;
    Ok((copy_used(&whole.region, capacity, progress)?, capacity))
}

/// A shared, writable mapping of a store's first bytes, as a [`Region`].
struct Mapping {
    region: Region,
    // Dropped after `region`, which points into it.
    _map: MmapRaw,
}

impl Mapping {
    fn new(file: &File, len: u64) -> Result<Mapping> {
        let map = MmapOptions::new()
            .len(len as usize)
            .map_raw(file)
            .map_err(|source| Error::MapFailed { max_size: len, source })?;
        let base = NonNull::new(map.as_mut_ptr()).ok_or(Error::corrupt("mapped at address zero", 0))?;
        // SAFETY: the mapping is `len` bytes, readable and writable (the file is open for
        // both and at least `len` long: the superblock was validated against its length, and
        // a store never shrinks), page-aligned, and lives in `_map` as long as the region.
        // Only atomic words are read and written through the region.
        let region = unsafe { Region::new(base, len, len) };
        Ok(Mapping { region, _map: map })
    }
}

/// How the store lock was found.
enum Taken {
    /// We hold it (until the [`StoreLock`] drops).
    Ours,
    /// Held by a dead process, whose word this is.
    Dead(u32),
    /// Held by a living process too long (see [`StoreLock::take`]), or we have no tag to take
    /// it with.
    Live(u32),
}

/// The store lock, taken for a copy under a free registry slot's tag.
struct StoreLock {
    /// The store file, a second descriptor of the caller's open file (whose record locks it
    /// shares); closed after the lock is given back.
    file: File,
    meta: Mapping,
    /// Our tag (free slot + 1), whose liveness lock we hold.
    tag: Option<u32>,
    /// Whether we hold the store lock (and must give it back).
    held: AtomicBool,
}

impl StoreLock {
    fn new(file: &File) -> Result<StoreLock> {
        let file = file.try_clone().map_err(|e| Error::io("open the store file again", e))?;
        let meta = Mapping::new(&file, HEAP_START)?;
        let word = meta.region.load32(SB_LOCK)?;
        let tag = claim_free_slot(&file, &meta.region, holder(word))?;
        Ok(StoreLock { file, meta, tag, held: AtomicBool::new(false) })
    }

    fn word(&self) -> Result<u32> {
        self.meta.region.load32(SB_LOCK)
    }

    /// Takes the lock as any waiter does (the futex, woken by the holder's release), or says
    /// who holds it: a dead holder at once (taking over is recovery's business, not ours), a
    /// living one when the word has not changed for [`LOCK_STUCK`] (a paused holder, a long
    /// operation), or when [`LOCK_WAIT`] has passed in all.
    fn take(&self) -> Result<Taken> {
        let word = self.meta.region.u32_at(SB_LOCK)?;
        let Some(tag) = self.tag else { return Ok(Taken::Live(word.load(Ordering::Acquire))) };
        let started = Instant::now();
        let (mut seen, mut since) = (u32::MAX, started);
        loop {
            let cur = word.load(Ordering::Acquire);
            if cur == 0 {
                // Others may sleep on the word: keep the bit, so that our release wakes one.
                if word.compare_exchange(0, tag | CONTENDED, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                    self.held.store(true, Ordering::Relaxed);
                    return Ok(Taken::Ours);
                }
                continue;
            }
            if cur != seen {
                (seen, since) = (cur, Instant::now());
            }
            if crate::mapped::owner_dead(&self.file, cur & !CONTENDED) {
                return Ok(Taken::Dead(cur));
            }
            if since.elapsed() >= LOCK_STUCK || started.elapsed() >= LOCK_WAIT {
                return Ok(Taken::Live(cur));
            }
            if cur & CONTENDED != 0
                || word.compare_exchange(cur, cur | CONTENDED, Ordering::Relaxed, Ordering::Relaxed).is_ok()
            {
                sys::futex_wait(word, cur | CONTENDED, Duration::from_millis(2), true);
            }
        }
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        let Some(tag) = self.tag else { return };
        if self.held.load(Ordering::Relaxed) {
            if let Ok(word) = self.meta.region.u32_at(SB_LOCK) {
                // As the heap releases it: wake a sleeper if one may be waiting.
                crate::lock::release(word, true);
            }
        }
        let _ = sys::unlock_byte(&self.file, LIVENESS_LOCK_BASE + u64::from(tag - 1));
    }
}

/// Takes the liveness lock of a free registry slot that the lock word does not name (`busy`:
/// a process may have died holding the store lock while it attached or left), highest first
/// (attaching processes take the lowest), and returns its tag; `None` if there is none.
fn claim_free_slot(file: &File, registry: &Region, busy: Option<u32>) -> Result<Option<u32>> {
    let free = |i: u64| registry.load32(slot_offset(i) + SLOT_STATE).is_ok_and(|s| s == SLOT_FREE);
    for i in (0..SLOT_COUNT).rev().filter(|&i| busy != Some(i as u32)) {
        if !free(i)
            || !sys::try_lock_byte(file, LIVENESS_LOCK_BASE + i)
                .map_err(|e| Error::io("lock a registry slot", e))?
        {
            continue;
        }
        // An attacher takes the liveness lock before it marks the slot: with ours held, the
        // slot stays free; but one may have attached and left between our two looks.
        if free(i) {
            return Ok(Some(i as u32 + 1));
        }
        sys::unlock_byte(file, LIVENESS_LOCK_BASE + i).map_err(|e| Error::io("unlock a registry slot", e))?;
    }
    Ok(None)
}
