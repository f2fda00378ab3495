//! Read-only inspection of a store: what the `mmheap` command-line tool is built on.
//!
//! A [`Snapshot`] shows a store file at one moment even while other processes write it: the
//! store looked at in place while its lock is held ([`Snapshot::in_place`], which costs the
//! walk's memory, not a copy of the data), or a private in-memory copy of it taken under the
//! lock ([`Snapshot::take`]). The lock is taken without registering as a process of the store
//! (`take.rs` says how, and what an inspector that dies holding it leaves); nothing else is
//! written: the lock word is put back. When one living holder keeps the lock for 2 s, a copy is
//! taken without it and says so ([`View`]). Liveness of the registered processes is asked of
//! the kernel (their record locks) on the real file.
//!
//! ```
//! use mmheap::inspect::Snapshot;
//! use mmheap::{MappedManager, MemoryManager, Options};
//!
//! let store = MappedManager::temporary(&Options::new())?;
//! let block = store.allocate(100)?;
//! store.set_root("first", &block)?;
//! let snap = Snapshot::take(store.path())?;
//! assert_eq!(snap.info().live_blocks, 1);
//! assert_eq!(snap.processes().iter().filter(|p| p.alive).count(), 1);
//! assert!(snap.check()?.is_sound());
//! assert_eq!(snap.view(), mmheap::inspect::View::Locked);
//! # Ok::<(), mmheap::Error>(())
//! ```

mod spans;
mod take;
mod types;

use std::path::Path;
use std::ptr::NonNull;
use std::sync::OnceLock;

use crate::engine::census::{Census, Item, Seen};
use crate::engine::core::header::rc;
use crate::engine::core::region::Region;
use crate::engine::core::span::is_slot;
use crate::engine::heap::Heap;
use crate::error::{Error, Result};
use crate::format::*;
use crate::mapped::CopyBacking;
use crate::{BlockHandle, CheckReport, RecoveryReport};

pub use crate::progress::with_progress;

/// The terminal's stop signals (`SIGTSTP`, `SIGTTIN`, `SIGTTOU`) held back on the calling
/// thread while this lives ([`hold_stop_signals`]); one that arrives meanwhile takes effect
/// when it drops.
pub struct StopSignalsHeld {
    // Puts the thread's mask back when it drops.
    _held: crate::sys::StopSignalsHeld,
}

impl std::fmt::Debug for StopSignalsHeld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StopSignalsHeld")
    }
}

/// Holds back the terminal's stop signals on this thread until the guard drops. The kernel
/// hands a stop signal sent to the process to any thread that does not block it, and
/// [`Snapshot::in_place`] holds them back only on its own thread: a program with other threads
/// that inspects a store in place spawns them while it holds this guard (a thread inherits its
/// maker's mask, and keeps it), so that Ctrl-Z cannot stop the process while it holds the store
/// lock, every writer of the store waiting with it.
///
/// ```
/// let helper = {
///     let _held = mmheap::inspect::hold_stop_signals();
///     std::thread::spawn(|| { /* never takes SIGTSTP */ })
/// };
/// helper.join().unwrap();
/// ```
pub fn hold_stop_signals() -> StopSignalsHeld {
    StopSignalsHeld { _held: crate::sys::hold_stop_signals() }
}
pub use spans::SpanInfo;
pub use take::View;
pub use types::*;

/// A private copy of a store, taken without disturbing its users.
pub struct Snapshot {
    heap: Heap,
    /// Whether it looks at the store in place (else at a copy of it).
    in_place: bool,
    lock_holder: Option<u32>,
    view: View,
    /// The census of the copy, made by the first call that needs it.
    census: OnceLock<Counted>,
}

/// A census of the copy, and what it found per size class.
struct Counted {
    census: Census,
    classes: Vec<SizeClass>,
    /// Where the walk stopped, if it did not reach the end.
    error: Option<(&'static str, u64)>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("capacity", &self.load(SB_CAPACITY))
            .field("view", &self.view)
            .field("lock_holder", &self.lock_holder)
            .finish_non_exhaustive()
    }
}

/// Adds a block or slot of `size` bytes to its power-of-two class.
fn add_to_class(classes: &mut Vec<SizeClass>, size: u64) {
    let max_size = size.next_power_of_two();
    match classes.iter_mut().find(|c| c.max_size == max_size) {
        Some(c) => {
            c.blocks += 1;
            c.bytes += size;
        }
        None => classes.push(SizeClass { max_size, blocks: 1, bytes: size }),
    }
}

/// The lock tag a snapshot uses on its own copy: no registry slot has it.
const SNAPSHOT_TAG: u32 = 0x7fff_ffff;

impl Snapshot {
    /// Copies the store at `path` into memory, under its lock when it can be had within a
    /// short wait ([`Snapshot::view`] says), and validates it as `MappedManager::open` would.
    pub fn take(path: impl AsRef<Path>) -> Result<Snapshot> {
        Self::take_with_progress(path, |_, _| {})
    }

    /// As [`Snapshot::take`], calling `progress(bytes_read, total)` as the copy proceeds.
    pub fn take_with_progress(path: impl AsRef<Path>, progress: impl FnMut(u64, u64)) -> Result<Snapshot> {
        Self::over_copy(take::copy(path.as_ref(), progress)?)
    }

    /// A snapshot over a copy of the store.
    fn over_copy(copy: take::StoreCopy) -> Result<Snapshot> {
        let take::StoreCopy { file, mut words, capacity, view, lock_holder } = copy;
        let base = NonNull::new(words.as_mut_ptr().cast::<u8>()).expect("vec pointer");
        // SAFETY: the Vec owns `capacity` bytes aligned to 8 and moves into the backing, which
        // the Heap drops after the region; nothing else refers to it.
        let region = unsafe { Region::new(base, capacity, capacity) };
        // The copy's lock word (ours, or a holder's) must not hold up the checks run on it.
        region.u32_at(SB_LOCK)?.store(0, crate::sync::Ordering::Relaxed);
        let heap = Heap::new(
            region,
            Box::new(CopyBacking { file, _memory: words }),
            SNAPSHOT_TAG,
            crate::engine::kinds::recover_locked,
        )?;
        Ok(Snapshot { heap, in_place: false, lock_holder, view, census: OnceLock::new() })
    }

    /// Runs `look` on the store at `path` inspected in place: under its lock, held for the
    /// whole call, the snapshot reads the store's own pages instead of a copy, so that looking
    /// at a large store costs about what the walk keeps (its metadata), not a copy of its data.
    /// The price is that every process of the store that needs its lock waits meanwhile (as
    /// for a process's own `check`): for as long as `look` runs, so gather what you need and
    /// return. A holder that gets little CPU (niced, on a loaded machine) or is stopped with
    /// `SIGSTOP` keeps them waiting that much longer. This thread's stop signals (`SIGTSTP`,
    /// `SIGTTIN`, `SIGTTOU`) are held back until the call returns, so that Ctrl-Z does not stop
    /// the holder; the kernel gives them to any thread of the process that does not block them,
    /// so a program with other threads must block them there too (the `mmheap` tool does).
    ///
    /// `look` must not use a manager of the same store in this process (allocate, open a root):
    /// it would wait for the lock this call holds, for ever.
    ///
    /// When the lock cannot be had (see [`View`]), `look` gets a copy, as [`Snapshot::take`]
    /// makes. On a snapshot in place, the dry runs (`recover_dry_run`, `salvage_dry_run`),
    /// which need a copy to change, are out of reach: `look` gets it shared.
    ///
    /// ```
    /// use mmheap::inspect::{Snapshot, View};
    /// use mmheap::{MappedManager, MemoryManager, Options};
    ///
    /// let store = MappedManager::temporary(&Options::new())?;
    /// let block = store.allocate(100)?;
    /// let (live, sound, view) = Snapshot::in_place(store.path(), |snap| {
    ///     Ok::<_, mmheap::Error>((snap.info().live_blocks, snap.check()?.is_sound(), snap.view()))
    /// })??;
    /// assert_eq!((live, sound, view), (1, true, View::Locked));
    /// drop(block);
    /// # Ok::<(), mmheap::Error>(())
    /// ```
    pub fn in_place<R>(path: impl AsRef<Path>, look: impl FnOnce(&Snapshot) -> R) -> Result<R> {
        Self::in_place_with_progress(path, |_, _| {}, look)
    }

    /// As [`Snapshot::in_place`], calling `progress(bytes_read, total)` if a copy is made.
    pub fn in_place_with_progress<R>(
        path: impl AsRef<Path>,
        mut progress: impl FnMut(u64, u64),
        look: impl FnOnce(&Snapshot) -> R,
    ) -> Result<R> {
        match take::hold(path.as_ref(), &mut progress)? {
            take::Found::Copied(copy) => Ok(look(&Self::over_copy(copy)?)),
            take::Found::Held(held, _no_stop) => {
                let (region, backing) = take::map_held(held)?;
                let heap =
                    Heap::inspected(region, backing, SNAPSHOT_TAG, crate::engine::kinds::recover_locked)?;
                let snap = Snapshot {
                    heap,
                    in_place: true,
                    lock_holder: None,
                    view: View::Locked,
                    census: OnceLock::new(),
                };
                Ok(take::trimmed(&snap.heap.region, || look(&snap)))
            }
        }
    }

    /// Whether this and `other` are copies of the same bytes. Two copies taken one after the
    /// other without the lock ([`View::Unsettled`]) that are the same show the store at a
    /// moment when nothing changed it (or when what changes it was stopped), which one copy
    /// alone cannot: a copy read while a process writes the store may mix moments. False when
    /// either looks at the store in place.
    pub fn same_copy_as(&self, other: &Snapshot) -> bool {
        let (a, b) = (&self.heap.region, &other.heap.region);
        if self.in_place || other.in_place || a.limit() != b.limit() {
            return false;
        }
        let len = a.limit() as usize;
        // SAFETY: a copy's region is the whole of its private buffer (`limit` bytes, which the
        // snapshot owns and nothing else writes while it is borrowed here), plain bytes.
        let (x, y) = unsafe {
            (
                std::slice::from_raw_parts(a.base_addr() as *const u8, len),
                std::slice::from_raw_parts(b.base_addr() as *const u8, len),
            )
        };
        x == y
    }

    /// How far the copy shows the store at one moment (see [`View`]).
    pub fn view(&self) -> View {
        self.view
    }

    fn load(&self, off: u64) -> u64 {
        self.heap.region.load(off).unwrap_or(0)
    }

    /// The census of the copy (a walk of every block and slot), made once.
    fn counted(&self) -> &Counted {
        self.census.get_or_init(|| {
            let mut classes: Vec<SizeClass> = Vec::new();
            let (census, error) = self.heap.census(|item| {
                if matches!(item.seen, Seen::Held | Seen::Ownerless0 | Seen::CountZero(_)) {
                    add_to_class(&mut classes, item.size);
                }
            });
            classes.sort_by_key(|c| c.max_size);
            let error = error.map(|e| match e {
                Error::Corrupt { what, offset } => (what, offset),
                _ => ("the heap could not be walked", 0),
            });
            Counted { census, classes, error }
        })
    }

    /// The heap's figures by category (defined in [`crate::Stats`]), from a walk of every block
    /// and slot: the same as the store's counters give a manager's `stats` when they are right.
    /// Where the walk stops at damage, the counters' figures instead (`walked` false).
    pub fn info(&self) -> StoreInfo {
        let counted = self.counted();
        let walked = counted.error.is_none();
        let f = match walked {
            true => counted.census.figures,
            false => self.heap.figures().unwrap_or_default(),
        };
        let largest_free = self.heap.core().largest_free().unwrap_or(0);
        let free_bytes = f.free.bytes;
        let dead = self.processes().iter().any(|p| !p.alive);
        StoreInfo {
            format_version: self.heap.region.load32(SB_VERSION).unwrap_or(0),
            capacity: self.load(SB_CAPACITY),
            max_size: self.load(SB_MAX_SIZE),
            used_bytes: f.live.bytes,
            free_bytes,
            largest_free,
            fragmentation: if free_bytes == 0 { 0.0 } else { 1.0 - largest_free as f64 / free_bytes as f64 },
            live_blocks: f.live.blocks,
            growths: self.load(SB_GROWTHS),
            recoveries: self.load(SB_RECOVERIES),
            recovered_processes: self.load(SB_RECOVERED_PROCESSES),
            quarantined_bytes: f.quarantined.bytes,
            lock_holder: self.lock_holder,
            view: self.view,
            clean: !dead && self.lock_holder.is_none_or(|s| !self.heap.slot_dead(s)),
            cached_blocks: f.cached.blocks,
            cached_bytes: f.cached.bytes,
            bookkeeping_blocks: f.bookkeeping.blocks,
            bookkeeping_bytes: f.bookkeeping.bytes,
            free_blocks: walked.then_some(f.free.blocks),
            walked,
        }
    }

    /// The blocks and slots without a reference count of each owner process, and how many of
    /// them its caches keep parked (see [`BlockState::LentOrParked`]).
    pub fn unreferenced(&self) -> Vec<Unreferenced> {
        let mut out: Vec<Unreferenced> = (self.counted().census.splits.iter())
            .filter(|(owner, _)| (1..=SLOT_COUNT).contains(owner))
            .map(|&(owner, s)| Unreferenced {
                owner: owner as u32 - 1,
                blocks: s.count_zero.blocks,
                bytes: s.count_zero.bytes,
                parked_blocks: s.cached().blocks,
                parked_bytes: s.cached().bytes,
            })
            .collect();
        out.sort_by_key(|u| u.owner);
        out
    }

    /// The registry slots in use, with the liveness of each.
    pub fn processes(&self) -> Vec<ProcessInfo> {
        let r = &self.heap.region;
        (0..SLOT_COUNT)
            .filter(|&i| r.load32(slot_offset(i) + SLOT_STATE).is_ok_and(|s| s != SLOT_FREE))
            .map(|i| {
                let s = slot_offset(i);
                let table = self.load(s + SLOT_HOLDS);
                ProcessInfo {
                    slot: i as u32,
                    pid: r.load32(s + SLOT_PID).unwrap_or(0),
                    start_time: self.load(s + SLOT_START_TIME),
                    alive: !self.heap.slot_dead(i as u32),
                    holds: crate::engine::heap::holds::entries(&self.heap, table)
                        .map_or(0, |e| e.len() as u64),
                }
            })
            .collect()
    }

    /// The named roots, sorted by name, each read on its own: a damaged entry is listed
    /// with what is wrong with it ([`RootInfo::problem`]). An error only if the directory
    /// itself cannot be read.
    pub fn roots(&self) -> Result<Vec<RootInfo>> {
        let surveyed = crate::mapped::survey_roots(&self.heap)?;
        Ok(surveyed.into_iter().map(|s| self.root_info(s)).collect())
    }

    fn root_info(&self, s: crate::mapped::SurveyedRoot) -> RootInfo {
        let h = self.heap.handle_of(s.target);
        let read = || Ok::<_, Error>((self.heap.published_len(s.target)?, h.generation));
        let (len, generation, problem) = match (s.problems.first(), read()) {
            (None, Ok((len, generation))) => (len, generation, None),
            (Some(p), _) => (0, 0, Some(p.what)),
            (None, Err(Error::Corrupt { what, .. })) => (0, 0, Some(what)),
            (None, Err(_)) => (0, 0, Some("root's block cannot be read")),
        };
        RootInfo { name: s.name, offset: s.target, generation, len, problem }
    }

    /// Every block in address order, each span followed by its slots in use, up to the first
    /// block that cannot be parsed (reported as the error beside the list). `progress` is
    /// called with each block's offset.
    pub fn blocks(&self, mut progress: impl FnMut(u64)) -> (Vec<BlockInfo>, Option<Error>) {
        let mut out = Vec::new();
        let (census, err) = self.heap.census(|item| {
            progress(item.id);
            out.push(self.block_info(item));
        });
        for b in out.iter_mut().filter(|b| b.state == BlockState::Live && b.ref_count == 0) {
            b.state = match b.owner.map(|o| census.split(u64::from(o) + 1)) {
                Some(s) if s.none_parked() => BlockState::Live,
                Some(s) if s.all_parked() => BlockState::Parked,
                Some(_) => BlockState::LentOrParked,
                None => BlockState::Live,
            };
        }
        (out, err)
    }

    /// What the census passed, as a [`BlockInfo`] (a block without a count is live until
    /// [`Snapshot::blocks`] knows its owner's split).
    fn block_info(&self, item: &Item) -> BlockInfo {
        let w = item.word;
        let exchange = rc::count(w) == 0 && rc::owner(w) == EXCHANGE_OWNER;
        let owner = (rc::owner(w) != 0 && !exchange).then(|| rc::owner(w) as u32 - 1);
        let (kind, state) = match (item.slot, item.seen) {
            (Some(_), _) => (BlockKind::Slot, BlockState::Live),
            (None, Seen::Free) => (BlockKind::Block, BlockState::Free),
            (None, Seen::Quarantined) => (BlockKind::Quarantined, BlockState::Quarantined),
            (None, Seen::Bookkeeping) if item.tag.is_span() => (BlockKind::Span, BlockState::Bookkeeping),
            (None, Seen::Bookkeeping) if item.tag.is_page() => (BlockKind::Page, BlockState::Bookkeeping),
            (None, Seen::Bookkeeping) => (BlockKind::Block, BlockState::Bookkeeping),
            (None, _) if exchange => (BlockKind::Block, BlockState::Parked),
            (None, _) => (BlockKind::Block, BlockState::Live),
        };
        let (offset, len, generation) = match item.slot {
            Some(slot) => {
                let record = rc::published(w).then(|| self.heap.slot_record(item.id).ok()).flatten();
                let (generation, len) = record.unwrap_or((0, slot.class));
                (slot.payload(), len, generation)
            }
            None if item.tag.is_free() => (item.id, 0, 0),
            None => (item.id, item.tag.len(), self.load(item.id + HDR_GEN)),
        };
        BlockInfo {
            offset,
            id: item.id,
            kind,
            state,
            size: item.size,
            len,
            free: item.tag.is_free(),
            ref_count: rc::count(w),
            owner,
            published: rc::published(w),
            generation,
        }
    }

    /// Live and cached blocks (and slots in use) per power-of-two size class, as many as the
    /// figures of [`Snapshot::info`] count; bookkeeping (spans and pages among it) is not in
    /// the table. An error if the heap could not be walked to its end.
    pub fn size_classes(&self) -> Result<Vec<SizeClass>> {
        let counted = self.counted();
        match counted.error {
            None => Ok(counted.classes.clone()),
            Some((what, offset)) => Err(Error::Corrupt { what, offset }),
        }
    }

    /// The payload of the used block whose header is at `offset`, or of the slot `offset`
    /// names (as a handle does; its length is known if it was published, else the slot's
    /// size is shown).
    pub fn payload(&self, offset: u64) -> Result<Vec<u8>> {
        let len = match is_slot(offset) {
            true => self.heap.slot_len_for_dump(offset)?,
            false => {
                let t = self.heap.core().block_at(offset)?;
                if t.is_free() {
                    return Err(Error::InvalidHandle { what: "the block is free", offset });
                }
                t.len()
            }
        };
        let mut out = vec![0; len as usize];
        self.heap.region.read_bytes(payload_of(offset), &mut out)?;
        Ok(out)
    }

    /// The full consistency check (heap, free structures, roots, hold tables). A heap that
    /// cannot even be walked is reported as a single problem at the offset where it breaks.
    pub fn check(&self) -> Result<CheckReport> {
        match crate::mapped::full_check(&self.heap) {
            Err(Error::Corrupt { what, offset }) => {
                let mut report = CheckReport::default();
                report.problems.push(crate::Problem { what, offset });
                Ok(report)
            }
            other => other,
        }
    }

    /// What a recovery would do now, computed on the copy (the store is not touched). An
    /// error if the store is damaged: a recovery would refuse it too.
    pub fn recover_dry_run(&mut self) -> Result<RecoveryReport> {
        self.heap.recover_as_found(false)
    }

    /// What a salvage would do now, computed on the copy (the store is not touched).
    pub fn salvage_dry_run(&mut self) -> Result<crate::SalvageReport> {
        self.heap.salvage()
    }

    /// The handle of the used block at `offset`, as a user would name it.
    pub fn handle(&self, offset: u64) -> BlockHandle {
        self.heap.handle_of(offset)
    }
}
