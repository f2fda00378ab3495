//! Read-only inspection of a store: what the `mmheap` command-line tool is built on.
//!
//! A [`Snapshot`] is a private in-memory copy of a store file, taken so that it shows the store
//! at one moment even while other processes write it: under the store lock, which it takes for
//! the copy without registering as a process of the store (`take.rs` says how, and what a
//! copier that dies holding it leaves). It writes nothing else: the lock word is put back.
//! When one living holder keeps the lock for 2 s, the copy is taken without it and says so
//! ([`View`]). Liveness of the registered processes is asked of the kernel (their record locks)
//! on the real file.
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

use std::fs::File;
use std::path::Path;
use std::ptr::NonNull;

use crate::core::header::rc;
use crate::core::region::Region;
use crate::error::{Error, Result};
use crate::format::*;
use crate::heap::{Backing, Heap};
use crate::{BlockHandle, CheckReport, RecoveryReport};

pub use spans::SpanInfo;
pub use take::View;

/// The store as a whole.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct StoreInfo {
    /// Format version in the superblock.
    pub format_version: u32,
    /// Current capacity (heap end) in bytes.
    pub capacity: u64,
    /// Maximum size in bytes.
    pub max_size: u64,
    /// Bytes in used blocks, headers included.
    pub used_bytes: u64,
    /// Bytes in free blocks.
    pub free_bytes: u64,
    /// Largest free block in bytes.
    pub largest_free: u64,
    /// `1 - largest_free / free_bytes`: 0 when all free space is one block.
    pub fragmentation: f64,
    /// Used blocks.
    pub live_blocks: u64,
    /// Times the store has grown.
    pub growths: u64,
    /// Recoveries run so far.
    pub recoveries: u64,
    /// Dead processes those recoveries reclaimed.
    pub recovered_processes: u64,
    /// Bytes in quarantined ranges (damage salvage fenced off).
    pub quarantined_bytes: u64,
    /// Registry slot of the process holding the store lock when the snapshot was taken
    /// (`None` when the snapshot took it for its copy).
    pub lock_holder: Option<u32>,
    /// How far the copy shows the store at one moment.
    pub view: View,
    /// Whether the last shutdown was clean: no dead process left anything behind.
    pub clean: bool,
}

/// One registry slot in use.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ProcessInfo {
    /// Registry slot.
    pub slot: u32,
    /// Process id recorded at attach (informational: pids are reused).
    pub pid: u32,
    /// Process start time recorded at attach, in clock ticks since boot.
    pub start_time: u64,
    /// Whether the process still holds its liveness lock.
    pub alive: bool,
    /// Entries in its hold table.
    pub holds: u64,
}

/// What a [`BlockInfo`] describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
#[non_exhaustive]
pub enum BlockKind {
    /// A block with its own header (free or used).
    Block,
    /// A span: a block that holds small blocks (slots) of one size.
    Span,
    /// A span's publication page (generations and lengths of its published slots).
    Page,
    /// A slot in use inside a span: a small block without a header of its own.
    Slot,
    /// A quarantined range: damage that salvage fenced off (never handed out or freed).
    Quarantined,
}

/// One block of the heap, or one slot of a span.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct BlockInfo {
    /// Header offset (for a slot, its id: what its handles carry).
    pub offset: u64,
    /// What it is.
    pub kind: BlockKind,
    /// Block size in bytes, header included (for a slot, the slot size).
    pub size: u64,
    /// Requested length (0 for free blocks; for an unpublished slot, whose length only its
    /// owner knows, the slot size).
    pub len: u64,
    /// Whether the block is free.
    pub free: bool,
    /// Reference count (owner references + other holds).
    pub ref_count: u64,
    /// Registry slot of the owner process, if any.
    pub owner: Option<u32>,
    /// Whether the block has been published.
    pub published: bool,
    /// Allocation generation (0 for free blocks).
    pub generation: u64,
}

/// A named root.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct RootInfo {
    /// The name.
    pub name: String,
    /// Header offset of its block (or its slot id).
    pub offset: u64,
    /// Generation of its block.
    pub generation: u64,
    /// Length of its block.
    pub len: u64,
}

/// Used blocks of one size class (block sizes in `(max_size / 2, max_size]`).
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct SizeClass {
    /// Upper bound of the class, a power of two.
    pub max_size: u64,
    /// Used blocks in the class.
    pub blocks: u64,
    /// Bytes in them.
    pub bytes: u64,
}

/// A private copy of a store, taken without disturbing its users.
pub struct Snapshot {
    heap: Heap,
    lock_holder: Option<u32>,
    view: View,
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

struct SnapshotBacking {
    file: File,
    _copy: Vec<u64>,
}

impl Backing for SnapshotBacking {
    fn grow(&self, _region: &Region, _new_cap: u64) -> Result<()> {
        Err(Error::InvalidOptions("a snapshot is read-only"))
    }
    fn refresh(&self, _region: &Region, cap: u64) -> Result<()> {
        Err(Error::corrupt("capacity beyond the snapshot", cap))
    }
    fn owner_dead(&self, tag: u32) -> bool {
        crate::mapped::owner_dead(&self.file, tag)
    }
    fn shared(&self) -> bool {
        false
    }
    fn attached(&self, region: &Region) -> u64 {
        crate::mapped::attached(&self.file, region, u32::MAX)
    }
    fn flush(&self) -> Result<()> {
        Ok(())
    }
    fn detach(&self, _region: &Region) {}
    fn slot(&self) -> Option<u32> {
        None
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
        let take::StoreCopy { file, mut words, capacity, view, lock_holder } =
            take::copy(path.as_ref(), progress)?;
        let base = NonNull::new(words.as_mut_ptr().cast::<u8>()).expect("vec pointer");
        // SAFETY: the Vec owns `capacity` bytes aligned to 8 and moves into the backing, which
        // the Heap drops after the region; nothing else refers to it.
        let region = unsafe { Region::new(base, capacity, capacity) };
        // The copy's lock word (ours, or a holder's) must not hold up the checks run on it.
        region.u32_at(SB_LOCK)?.store(0, crate::sync::Ordering::Relaxed);
        let heap = Heap::new(region, Box::new(SnapshotBacking { file, _copy: words }), SNAPSHOT_TAG)?;
        Ok(Snapshot { heap, lock_holder, view })
    }

    /// How far the copy shows the store at one moment (see [`View`]).
    pub fn view(&self) -> View {
        self.view
    }

    fn load(&self, off: u64) -> u64 {
        self.heap.region.load(off).unwrap_or(0)
    }

    /// The superblock's figures and whether the last shutdown was clean.
    pub fn info(&self) -> StoreInfo {
        let capacity = self.load(SB_CAPACITY);
        // Bookkeeping and blocks parked in thread caches are no user's: free, as in `stats`.
        let (used_bytes, live_blocks) = self.heap.user_totals().unwrap_or((0, 0));
        let free_bytes = capacity
            .saturating_sub(HEAP_START + SENTINEL_SIZE)
            .saturating_sub(used_bytes)
            .saturating_sub(self.load(SB_QUARANTINE_BYTES));
        let largest_free = self.heap.core().largest_free().unwrap_or(0);
        let dead = self.processes().iter().any(|p| !p.alive);
        StoreInfo {
            format_version: self.heap.region.load32(SB_VERSION).unwrap_or(0),
            capacity,
            max_size: self.load(SB_MAX_SIZE),
            used_bytes,
            free_bytes,
            largest_free,
            fragmentation: if free_bytes == 0 { 0.0 } else { 1.0 - largest_free as f64 / free_bytes as f64 },
            live_blocks,
            growths: self.load(SB_GROWTHS),
            recoveries: self.load(SB_RECOVERIES),
            recovered_processes: self.load(SB_RECOVERED_PROCESSES),
            quarantined_bytes: self.load(SB_QUARANTINE_BYTES),
            lock_holder: self.lock_holder,
            view: self.view,
            clean: !dead && self.lock_holder.map_or(true, |s| !self.heap.slot_dead(s)),
        }
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
                    holds: crate::holds::entries(&self.heap, table).map_or(0, |e| e.len() as u64),
                }
            })
            .collect()
    }

    /// The named roots.
    pub fn roots(&self) -> Result<Vec<RootInfo>> {
        let mut out = Vec::new();
        for (name, h) in crate::mapped::list_roots(&self.heap)? {
            let len = self.heap.published_len(h.offset)?;
            out.push(RootInfo { name, offset: h.offset, generation: h.generation, len });
        }
        Ok(out)
    }

    /// Every block in address order, up to the first one that cannot be parsed (reported as
    /// the error beside the list).
    pub fn blocks(&self, mut progress: impl FnMut(u64)) -> (Vec<BlockInfo>, Option<Error>) {
        let mut out = Vec::new();
        let walked = self.heap.core().walk(|b| {
            progress(b.offset);
            let kind = match b.tag {
                t if t.is_free() => BlockKind::Block,
                t if t.is_span() => BlockKind::Span,
                t if t.is_page() => BlockKind::Page,
                t if t.is_quarantine() => BlockKind::Quarantined,
                _ => BlockKind::Block,
            };
            let w =
                if b.tag.is_free() || kind != BlockKind::Block { 0 } else { self.load(b.offset + HDR_RC) };
            out.push(BlockInfo {
                offset: b.offset,
                kind,
                size: b.tag.size(),
                len: if b.tag.is_free() { 0 } else { b.tag.len() },
                free: b.tag.is_free(),
                ref_count: rc::count(w),
                owner: (rc::owner(w) != 0).then(|| rc::owner(w) as u32 - 1),
                published: rc::published(w),
                generation: self.load(b.offset + HDR_GEN),
            });
            if kind == BlockKind::Span {
                self.slots_into(b.offset + HEADER_SIZE, &mut out)?;
            }
            Ok(())
        });
        (out, walked.err())
    }

    /// Adds the slots in use of the span at `span` (payload offset) to `out`.
    fn slots_into(&self, span: u64, out: &mut Vec<BlockInfo>) -> Result<()> {
        for slot in self.heap.core().slots_handed_out(span)? {
            let w = self.load(slot.rc_offset());
            if w == 0 {
                continue;
            }
            let (generation, len) = match rc::published(w) {
                true => self.heap.slot_record(slot.id()).unwrap_or((0, slot.class)),
                false => (0, slot.class),
            };
            out.push(BlockInfo {
                offset: slot.id(),
                kind: BlockKind::Slot,
                size: slot.class,
                len,
                free: false,
                ref_count: rc::count(w),
                owner: (rc::owner(w) != 0).then(|| rc::owner(w) as u32 - 1),
                published: rc::published(w),
                generation,
            });
        }
        Ok(())
    }

    /// Used blocks (and slots in use) per power-of-two size class; spans and their pages are
    /// containers, not counted.
    pub fn size_classes(&self) -> Result<Vec<SizeClass>> {
        let (blocks, err) = self.blocks(|_| {});
        if let Some(e) = err {
            return Err(e);
        }
        let mut classes: Vec<SizeClass> = Vec::new();
        for b in blocks.iter().filter(|b| !b.free && matches!(b.kind, BlockKind::Block | BlockKind::Slot)) {
            let max_size = b.size.next_power_of_two();
            match classes.iter_mut().find(|c| c.max_size == max_size) {
                Some(c) => {
                    c.blocks += 1;
                    c.bytes += b.size;
                }
                None => classes.push(SizeClass { max_size, blocks: 1, bytes: b.size }),
            }
        }
        classes.sort_by_key(|c| c.max_size);
        Ok(classes)
    }

    /// The payload of the used block whose header is at `offset`, or of the slot `offset`
    /// names (as a handle does; its length is known if it was published, else the slot's
    /// size is shown).
    pub fn payload(&self, offset: u64) -> Result<Vec<u8>> {
        let len = match crate::core::span::is_slot(offset) {
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
