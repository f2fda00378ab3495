//! `MappedManager::open_read_only`: a store read by a process that must not, or cannot, write
//! it (a file of mode 0400, another user's store, a read-only file system).
//!
//! The file is opened `O_RDONLY` and mapped `PROT_READ`, so nothing here can write a byte of
//! it: a write path reached by mistake would fault rather than write, and the heap's lock, the
//! door to every write, is refused before that with `Error::ReadOnly`. The reader does not
//! register in the store's registry, takes no lock and counts no reference: the writers cannot
//! tell it is there, and it leaves nothing behind when it dies. Every access to the mapping is
//! a byte read or a relaxed load of a word (`Region::new_read_only` says why).
//!
//! Nothing keeps a block alive for such a reader, so a writer may free a block, and reuse its
//! bytes, while it is being read. Hence two ways to read one:
//! - [`ReadOnlyStore::read`] copies the block and then checks that it is still the block the
//!   handle named, as a seqlock reader does: its header (generation, publication, count,
//!   length) is read before and after the copy, with acquire fences between. A block freed
//!   during the copy is refused ([`Error::StaleHandle`]); a copy returned holds the block's
//!   bytes, which never change while it lives (a published block is read-only to everyone).
//! - [`ReadOnlyStore::view`] lends the mapped bytes themselves, `unsafe`: Rust assumes them
//!   frozen while the borrow lives, which holds only while the block stays allocated, and only
//!   the caller can know that (nobody writes the store, or a root nobody removes keeps it).
//!
//! The roots directory is read without the lock, twice, and a listing is returned when both
//! reads agree. Statistics are read without the lock (on a live store they may mix moments).
//! `check` needs a store no living process is attached to: a read-only process cannot take the
//! lock, and a copy taken without it while others write could show a change in progress as a
//! problem. What dead processes left is not recovered (recovery writes); it stays, readable,
//! until a process opens the store to write.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use memmap2::{MmapOptions, MmapRaw};

use super::{full_check, registry, MappedManager};
use crate::engine::core::header::{rc, Tag};
use crate::engine::core::region::Region;
use crate::engine::core::span::is_slot;
use crate::engine::directory::valid_name;
use crate::engine::heap::{Backing, Heap};
use crate::engine::tables::ROOT_NAMES;
use crate::error::{Error, Result};
use crate::format::*;
use crate::segment::MemorySegment;
use crate::sync::{fence, Ordering};
use crate::{BlockHandle, CheckReport, MemoryBlock, MemoryManager, Offset, Stats};

/// How often a read that raced a writer (a listing that changed while it was read, figures
/// from a free list being changed) is tried again before its last result is returned.
const TRIES: usize = 16;

/// The lock tag of the private copy that [`ReadOnlyStore::check`] checks: no slot has it.
const COPY_TAG: u32 = 0x7fff_fffd;

/// A store opened for reading only, by [`MappedManager::open_read_only`]. It never writes the
/// file: it resolves roots and handles and reads blocks without registering as a process of
/// the store or counting a reference, and refuses every write with [`Error::ReadOnly`] (as a
/// [`MemoryManager`]: allocating, resizing, and [`MemoryManager::block_from_handle`], whose
/// counted reference would be a write).
///
/// Nothing keeps the blocks it reads alive: [`ReadOnlyStore::read`] returns a copy that it
/// checks against the block's header after copying (safe while other processes write the
/// store); [`ReadOnlyStore::view`] lends the mapped bytes, for a caller that knows the block
/// stays allocated (`unsafe`). ARCHITECTURE.md, "Trust model", has the rules.
///
/// ```
/// use mmheap::{MappedManager, MemoryManager, Options};
///
/// let path = std::env::temp_dir().join(format!("ro-doc-{}.mmheap", std::process::id()));
/// {
///     let store = MappedManager::create(&path, &Options::new())?;
///     let mut block = store.allocate(5)?;
///     block.as_mut_slice()?.copy_from_slice(b"hello");
///     store.set_root("greeting", &block)?;
/// }
/// let reader = MappedManager::open_read_only(&path)?; // O_RDONLY, PROT_READ: never writes
/// assert_eq!(reader.read_root("greeting")?.as_deref(), Some(&b"hello"[..]));
/// let handle = reader.root_handle("greeting")?.expect("rooted");
/// assert_eq!(reader.read(handle)?, b"hello");
/// // SAFETY: nobody writes this store now, so the block stays as it is while the view lives.
/// let view = unsafe { reader.view(handle)? };
/// assert_eq!(view.as_slice(), b"hello");
/// assert!(matches!(reader.allocate(8), Err(mmheap::Error::ReadOnly { .. })));
/// assert!(reader.check()?.is_sound());
/// std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ReadOnlyStore {
    /// The heap over the read-only mapping (`Heap::read_only`: its lock is refused).
    heap: Heap,
    /// The store file (a second descriptor), for the registry's liveness locks.
    file: File,
    path: PathBuf,
}

impl std::fmt::Debug for ReadOnlyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadOnlyStore").field("path", &self.path).finish_non_exhaustive()
    }
}

/// The read-only mapping: grows only as the writers grow the file.
struct ReadOnlyBacking {
    file: File,
    path: PathBuf,
    // Dropped after the heap's region, which points into it.
    _map: MmapRaw,
}

impl Backing for ReadOnlyBacking {
    fn grow(&self, _region: &Region, _new_cap: u64) -> Result<()> {
        Err(Error::ReadOnly { path: self.path.clone() })
    }

    fn refresh(&self, region: &Region, cap: u64) -> Result<()> {
        super::reach_capacity(&self.file, region, cap)
    }

    fn owner_dead(&self, tag: u32) -> bool {
        registry::owner_dead(&self.file, tag)
    }

    fn shared(&self) -> bool {
        true
    }

    fn attached(&self, region: &Region) -> u64 {
        registry::attached(&self.file, region, u32::MAX)
    }
}

impl MappedManager {
    /// Opens the store at `path` for reading only (see [`ReadOnlyStore`]): the file is opened
    /// read-only and mapped read-only, so a store of mode 0400, another user's store or one on
    /// a read-only file system can be read, and no byte of the file is ever written. Fails as
    /// [`MappedManager::open`] does on a missing file or one that is not a store.
    ///
    /// A symlink at the path, or a file that is not a regular file, is refused
    /// ([`Error::UnsafeFile`]); the owner and the permissions are not checked, as nothing is
    /// written and no byte read is trusted.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<ReadOnlyStore> {
        Self::open_read_only_with(path, &super::Options::new())
    }

    /// [`MappedManager::open_read_only`], following a symlink if `options` say so
    /// ([`crate::Options::follow_symlinks`]).
    pub fn open_read_only_with(path: impl AsRef<Path>, options: &super::Options) -> Result<ReadOnlyStore> {
        let path = path.as_ref();
        // A writer may grow the store between the superblock's read and the sentinel's.
        let mut tries = TRIES;
        loop {
            match ReadOnlyStore::open(path, options.trust) {
                Err(Error::Corrupt { what: SENTINEL_MISSING, .. }) if tries > 0 => tries -= 1,
                other => return other,
            }
        }
    }
}

const SENTINEL_MISSING: &str = "end sentinel is missing";

impl ReadOnlyStore {
    fn open(path: &Path, trust: super::trust::Trust) -> Result<ReadOnlyStore> {
        let file = super::trust::open_store(path, super::trust::Access::Read, trust)?;
        let len = file.metadata().map_err(|e| Error::io("stat the store file", e))?.len();
        let (capacity, max) = super::validate_superblock(&file, len)?;
        let map = MmapOptions::new()
            .len(max as usize)
            .map_raw_read_only(&file)
            .map_err(|source| Error::MapFailed { max_size: max, source })?;
        let base = NonNull::new(map.as_mut_ptr()).ok_or(Error::corrupt("mapped at address zero", 0))?;
        // SAFETY: the mapping is `max` bytes of address space, page-aligned, readable, and
        // moves into the backing, which the heap drops after its region; the file is at least
        // `capacity` bytes long (validated), so those bytes are backed. Only byte reads and
        // relaxed loads are made through the region (this module, and the heap's read paths it
        // calls).
        let region = unsafe { Region::new_read_only(base, capacity, max) };
        if !Tag(region.load(capacity - SENTINEL_SIZE)?).is_sentinel() {
            return Err(Error::corrupt(SENTINEL_MISSING, capacity - SENTINEL_SIZE));
        }
        let second = file.try_clone().map_err(|e| Error::io("duplicate the store's descriptor", e))?;
        let backing = ReadOnlyBacking { file: second, path: path.to_owned(), _map: map };
        let heap = Heap::read_only(region, Box::new(backing), path, crate::engine::kinds::recover_locked)?;
        Ok(ReadOnlyStore { heap, file, path: path.to_owned() })
    }

    /// Path of the store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn refused(&self) -> Error {
        Error::ReadOnly { path: self.path.clone() }
    }

    /// Every named root with the handle of its block, sorted by name: the directory as it
    /// was at one moment (read twice, until two reads agree). A root that a writer replaced
    /// under every read of it is left out (`root_handle` and `read_root` look for it alone).
    /// [`Error::StoreChanging`] when writers replaced the roots table under every read.
    pub fn roots(&self) -> Result<Vec<(String, BlockHandle)>> {
        self.heap.follow_growth()?;
        let read = || -> Result<(Option<Listed>, bool)> {
            // A writer may replace the roots table meanwhile: then the read is torn, and what
            // it read of the old one (freed, perhaps reused) may not even parse.
            let table = self.table_id();
            let replaced = || self.table_id() != table;
            let (mut roots, mut half_written) = (Vec::new(), false);
            let read = ROOT_NAMES.directory(&self.heap).and_then(|dir| {
                for e in dir.entries(&self.heap)? {
                    // A name a writer was removing (zeroing) or writing as it was read: no name a
                    // store holds, and read again.
                    if !valid_name(&e.name) {
                        half_written = true;
                        continue;
                    }
                    let name = String::from_utf8(e.name)
                        .map_err(|_| Error::corrupt("root name is not UTF-8", dir.entry(e.index)))?;
                    roots.push((name, self.entry_handle(dir.entry(e.index), e.target)?));
                }
                Ok(())
            });
            match read {
                Err(Error::Corrupt { .. }) if replaced() => Ok((None, true)),
                Err(e) => Err(e),
                Ok(()) => {
                    let torn = half_written || roots.iter().any(|(_, h)| h.is_none()) || replaced();
                    Ok((Some(roots), torn))
                }
            }
        };
        // A table replaced under every read: writers that never let it be read are no damage.
        let roots = settled(read)?.ok_or_else(|| Error::StoreChanging { processes: self.heap.attached() })?;
        // An entry still torn after the whole directory's reads is looked up again on its own.
        let mut out = Vec::with_capacity(roots.len());
        for (name, handle) in roots {
            let again = || self.find_root(&name).map(|f| f.and_then(|(h, torn)| (!torn).then_some(h)));
            let handle = match handle {
                Some(h) => Some(h),
                None => (0..TRIES).map(|_| again()).find(|h| !matches!(h, Ok(None))).transpose()?.flatten(),
            };
            out.extend(handle.filter(|h| h.offset != 0).map(|h| (name, h)));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The roots table as a reader finds it: its offset and its block's generation. A writer
    /// that replaces the table frees the old block, and a later table may be made at the same
    /// offset: its generation tells it from the one a read began with (0, 0: no table).
    fn table_id(&self) -> (u64, u64) {
        let r = &self.heap.region;
        let table = r.load(SB_ROOT_TABLE).unwrap_or(u64::MAX);
        let generation = match table {
            0 => 0,
            t => t.checked_add(HDR_GEN).and_then(|at| r.load(at).ok()).unwrap_or(u64::MAX),
        };
        (table, generation)
    }

    /// The handle of `target`, the block the root entry at `entry` named when read, if the
    /// entry still names it after the block's generation was read (a root's block is freed only
    /// after the entry names another, so the generation is then the block's); `None` if it
    /// changed.
    fn entry_handle(&self, entry: u64, target: u64) -> Result<Option<BlockHandle>> {
        let handle = self.heap.handle_of(target);
        fence(Ordering::Acquire);
        Ok((self.heap.region.load(entry + ROOT_BLOCK)? == target).then_some(handle))
    }

    /// The handle of the block the root `name` names, if there is such a root.
    /// [`Error::StoreChanging`] when writers replaced the roots table under every read.
    pub fn root_handle(&self, name: &str) -> Result<Option<BlockHandle>> {
        self.heap.follow_growth()?;
        let found = settled(|| Ok(self.find_root(name)?.map_or((None, false), |(h, torn)| (Some(h), torn))))?;
        match found {
            Some(h) if h.offset == 0 => Err(Error::StoreChanging { processes: self.heap.attached() }),
            found => Ok(found),
        }
    }

    /// The handle of root `name`'s block, and whether the entry changed while it was read (the
    /// generation is then perhaps another block's). Reads one entry's target, name and then
    /// the block's generation in a short window, so that a writer that replaces the root often
    /// rarely tears it.
    fn find_root(&self, name: &str) -> Result<Option<(BlockHandle, bool)>> {
        if !valid_name(name.as_bytes()) {
            return Err(Error::InvalidRootName(name.to_owned()));
        }
        let r = &self.heap.region;
        let table = self.table_id();
        let found = ROOT_NAMES
            .directory(&self.heap)
            .and_then(|dir| Ok((dir, dir.find(&self.heap, name.as_bytes())?)));
        let (dir, found) = match found {
            // What a reader read of a table a writer replaced meanwhile (freed, perhaps reused)
            // may not even parse: a torn read, read again.
            Err(Error::Corrupt { .. }) if self.table_id() != table => {
                return Ok(Some((BlockHandle { offset: 0, generation: 0 }, true)))
            }
            found => found?,
        };
        let Some(found) = found else { return Ok(None) };
        let (e, target) = (dir.entry(found.index), found.target);
        let handle = self.heap.handle_of(target);
        // The generation is the block's only if the entry still names it: a root's block is
        // freed only after the entry names another (and a replaced table tears the read).
        fence(Ordering::Acquire);
        Ok(Some((handle, r.load(e + ROOT_BLOCK)? != target || self.table_id() != table)))
    }

    /// A copy of the block the root `name` names, if there is such a root. If a writer replaces
    /// the root meanwhile, the block it names then; [`Error::StaleHandle`] if it replaced it
    /// under every one of several reads.
    pub fn read_root(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.heap.follow_growth()?;
        let mut tries = TRIES;
        loop {
            let Some((handle, torn)) = self.find_root(name)? else { return Ok(None) };
            if !torn {
                match self.read(handle) {
                    Ok(bytes) => return Ok(Some(bytes)),
                    // Refused while the root, read whole again, still names that block: the
                    // block is not what a root may name (damage), and that is the error.
                    Err(e @ (Error::StaleHandle { .. } | Error::InvalidHandle { .. }))
                        if self.find_root(name)? == Some((handle, false)) =>
                    {
                        return Err(e)
                    }
                    Err(Error::StaleHandle { .. } | Error::InvalidHandle { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            // The root was replaced under the read (its old block freed): read it again.
            if tries == 0 && handle.offset == 0 {
                return Err(Error::StoreChanging { processes: self.heap.attached() });
            }
            if tries == 0 {
                return Err(stale(handle));
            }
            tries -= 1;
            crate::sync::yield_now();
        }
    }

    /// A copy of the block `handle` names. Checked as [`MemoryManager::block_from_handle`]
    /// checks a handle, before the copy and again after it: a block freed (or freed and
    /// reused) meanwhile is [`Error::StaleHandle`], never a torn copy.
    pub fn read(&self, handle: BlockHandle) -> Result<Vec<u8>> {
        self.heap.follow_growth()?;
        let before = self.live(handle)?;
        // Pairs with the publication's release: the bytes written before it are seen.
        fence(Ordering::Acquire);
        let start = payload_of(before.off);
        // The length is checked against the mapping before anything is allocated for it: read
        // while a writer reuses the block, it may be anything (then the block is stale; if the
        // header still says it, the store is damaged).
        if let Err(e) = self.heap.region.ptr(start, before.len) {
            return match self.live(handle) {
                Ok(again) if again == before => Err(e),
                _ => Err(stale(handle)),
            };
        }
        let mut out = Vec::with_capacity(before.len as usize + 8);
        for at in (start..start + before.len).step_by(8) {
            // Whole words: a payload is a multiple of 16 bytes, so the last one is the block's.
            out.extend_from_slice(&self.heap.region.load(at)?.to_ne_bytes());
        }
        out.truncate(before.len as usize);
        // The copy's loads happen before the second look at the header.
        fence(Ordering::Acquire);
        match self.live(handle) {
            Ok(after) if after == before => Ok(out),
            _ => Err(stale(handle)),
        }
    }

    /// The mapped bytes of the block `handle` names, without a copy (checked as in
    /// [`ReadOnlyStore::read`]).
    ///
    /// # Safety
    /// The block must stay allocated while the view lives: no process may free it (or resize
    /// it). That holds when no process writes the store meanwhile (a store nobody has open, a
    /// file nobody may write), or when a reference nobody gives up meanwhile keeps the block (a
    /// root that no process removes or replaces while the view lives). A live block is
    /// published, and a published block is never written, so its bytes do not change. A block
    /// freed under a view would be reused, and its bytes written, behind a `&[u8]` that Rust
    /// assumes frozen: undefined behaviour. [`ReadOnlyStore::read`] needs no such promise.
    pub unsafe fn view(&self, handle: BlockHandle) -> Result<ReadOnlyBlock<'_>> {
        self.heap.follow_growth()?;
        let live = self.live(handle)?;
        fence(Ordering::Acquire); // as in `read`
        let start = payload_of(live.off);
        let p = self.heap.region.ptr(start, live.len)?;
        // SAFETY: `ptr` checked that the `len` bytes lie inside the mapping, which lives as long
        // as `self`; they are read-only here, and by the caller's contract the block stays
        // allocated, so published and unchanged, for the borrow.
        let bytes = unsafe { std::slice::from_raw_parts(p.as_ptr(), live.len as usize) };
        Ok(ReadOnlyBlock { bytes, start, handle })
    }

    /// The block `handle` names, as a handle resolves (range, header, generation, check word;
    /// a slot's span and record), and held by someone: published, with a count.
    fn live(&self, handle: BlockHandle) -> Result<Live> {
        let off = self.heap.validate_handle(handle)?;
        if !is_slot(off) {
            let w = self.heap.region.load(off + HDR_RC)?;
            if !rc::published(w) || rc::count(w) == 0 {
                return Err(stale(handle));
            }
        }
        match self.heap.published_len(off) {
            Ok(len) => Ok(Live { off, len }),
            // A writer that frees the block and reuses its space as this reads may leave
            // anything in the words the length is read from (a tag with the linked bit, a table
            // offset out of range): the block's generation tells that race (gone: stale) from
            // damage (the same block still there).
            Err(e @ Error::Corrupt { .. }) => match self.heap.validate_handle(handle) {
                Ok(again) if again == off => Err(e),
                _ => Err(stale(handle)),
            },
            Err(e) => Err(e),
        }
    }

    /// The full consistency check (heap, free structures, roots, channels, hold tables) of a
    /// store no living process is attached to; [`Error::StoreInUse`] otherwise (a read-only
    /// process cannot take the store lock, without which a live store's structures may be
    /// seen half changed). It checks a private copy of the store's used bytes.
    pub fn check(&self) -> Result<CheckReport> {
        self.heap.follow_growth()?;
        self.quiet()?;
        let copy = self.copy()?;
        self.quiet()?;
        let file = self.file.try_clone().map_err(|e| Error::io("duplicate the store's descriptor", e))?;
        let heap = copy.into_heap(file)?;
        match full_check(&heap) {
            Err(Error::Corrupt { what, offset }) => {
                let mut report = CheckReport::default();
                report.problems.push(crate::Problem { what, offset });
                Ok(report)
            }
            other => other,
        }
    }

    /// [`Error::StoreInUse`] if a living process is attached.
    fn quiet(&self) -> Result<()> {
        match registry::attached(&self.file, &self.heap.region, u32::MAX) {
            0 => Ok(()),
            processes => Err(Error::StoreInUse { processes }),
        }
    }

    /// The store's metadata and used blocks, and of each free block what the core reads, as a
    /// snapshot copies them (`mapped/copy.rs`).
    fn copy(&self) -> Result<PrivateCopy> {
        let cap = self.heap.region.limit();
        let words = crate::mapped::copy::copy_used(&self.heap.region, cap, &mut |_, _| {})?;
        Ok(PrivateCopy { words, cap })
    }
}

impl MemoryManager for ReadOnlyStore {
    /// Refused: [`Error::ReadOnly`].
    fn allocate(&self, _len: usize) -> Result<MemoryBlock> {
        Err(self.refused())
    }
    /// Refused: [`Error::ReadOnly`].
    fn allocate_aligned(&self, _len: usize, _align: usize) -> Result<MemoryBlock> {
        Err(self.refused())
    }
    /// Refused: [`Error::ReadOnly`].
    fn allocate_zeroed(&self, _len: usize) -> Result<MemoryBlock> {
        Err(self.refused())
    }
    /// Refused: [`Error::ReadOnly`].
    fn allocate_linked(&self, _links: usize, _len: usize) -> Result<MemoryBlock> {
        Err(self.refused())
    }
    /// Refused: [`Error::ReadOnly`].
    fn allocate_guarded(&self, _len: usize, _guarded: usize) -> Result<MemoryBlock> {
        Err(self.refused())
    }
    /// Refused: [`Error::ReadOnly`].
    fn allocate_atomic(&self, _len: usize, _atomic: usize) -> Result<MemoryBlock> {
        Err(self.refused())
    }
    /// Refused: [`Error::ReadOnly`] (no block is this store's).
    fn resize(&self, _block: &mut MemoryBlock, _new_len: usize) -> Result<()> {
        Err(self.refused())
    }
    /// The store's counters, read without the lock: on a store that others are changing, the
    /// figures may be from different moments (each one is right at its own).
    fn stats(&self) -> Result<Stats> {
        // A free list that a writer changes under the walk for the largest free block can look
        // broken for a moment: tried again before it is believed.
        let mut tries = TRIES;
        loop {
            match self.heap.follow_growth().and_then(|()| self.heap.stats_unlocked()) {
                Err(_) if tries > 0 => tries -= 1,
                other => return other,
            }
            crate::sync::yield_now();
        }
    }
    /// Nothing to give back: a read-only store parks no blocks.
    fn trim(&self) -> Result<()> {
        Ok(())
    }
    /// Refused: [`Error::ReadOnly`]: a [`MemoryBlock`] counts a reference in the store. Read
    /// the block with [`ReadOnlyStore::read`] or [`ReadOnlyStore::view`].
    fn block_from_handle(&self, _handle: BlockHandle) -> Result<MemoryBlock> {
        Err(self.refused())
    }
}

/// What a handle resolved to, compared before and after a copy.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Live {
    off: u64,
    len: u64,
}

fn stale(h: BlockHandle) -> Error {
    Error::StaleHandle { offset: h.offset, generation: h.generation }
}

/// `read()` until two results in a row agree and neither was torn (`read` says whether it
/// saw something change under it), or, after [`TRIES`], the last: what a reader that races
/// writers can see at one moment.
/// Roots as one read of the directory lists them: a name and, unless the entry changed under
/// the read, its block's handle.
type Listed = Vec<(String, Option<BlockHandle>)>;

fn settled<T: PartialEq>(read: impl Fn() -> Result<(T, bool)>) -> Result<T> {
    let mut last = read();
    for _ in 0..TRIES {
        let again = read();
        if matches!((&last, &again), (Ok((a, false)), Ok((b, false))) if a == b) {
            break;
        }
        last = again;
        crate::sync::yield_now();
    }
    last.map(|(value, _)| value)
}

/// A private copy of a store, for [`ReadOnlyStore::check`].
struct PrivateCopy {
    words: Vec<u64>,
    cap: u64,
}

impl PrivateCopy {
    /// A heap over the copy (private memory: the check may take its lock).
    fn into_heap(mut self, file: File) -> Result<Heap> {
        let base =
            NonNull::new(self.words.as_mut_ptr().cast::<u8>()).ok_or(Error::corrupt("empty copy", 0))?;
        // SAFETY: the Vec owns `cap` bytes aligned to 8, readable and writable, and moves into
        // the backing, which the heap drops after the region; nothing else refers to it.
        let region = unsafe { Region::new(base, self.cap, self.cap) };
        // The copy's lock word (a dead holder's, perhaps) must not hold up the check.
        region.store32(SB_LOCK, 0)?;
        Heap::new(
            region,
            Box::new(CopyBacking { file, _memory: self.words }),
            COPY_TAG,
            crate::engine::kinds::recover_locked,
        )
    }
}

/// `n` zeroed words for a private copy of a store, or an error when the memory cannot be had
/// (a copy is as large as the store's capacity: `vec!` would abort the process). The pages come
/// zero from the system and are taken only as they are written.
pub(crate) fn zeroed_words(n: u64) -> Result<Vec<u64>> {
    let too_big = || {
        let bytes = n.saturating_mul(8);
        Error::io(
            "make a private copy of the store in memory",
            std::io::Error::new(std::io::ErrorKind::OutOfMemory, format!("{bytes} bytes could not be had")),
        )
    };
    let len = usize::try_from(n).map_err(|_| too_big())?;
    if len == 0 {
        return Ok(Vec::new());
    }
    let layout = std::alloc::Layout::array::<u64>(len).map_err(|_| too_big())?;
    // SAFETY: the layout has a non-zero size (len > 0).
    let p = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<u64>();
    if p.is_null() {
        return Err(too_big());
    }
    // SAFETY: `p` was allocated by the global allocator with the layout of `len` u64s, all
    // zero (a valid u64), so it is a Vec of `len` initialised elements and that capacity.
    Ok(unsafe { Vec::from_raw_parts(p, len, len) })
}

/// The backing of a heap that only looks at a store: over a private copy of it (a read-only
/// store's check, an `inspect::Snapshot`; `memory` is the copy's words) or over its mapping
/// while an inspector holds its lock (`memory` is the mapping and the lock). Memory that never
/// grows meanwhile and that this heap never attaches to, with the liveness of the store's
/// processes asked of the store file.
pub(crate) struct CopyBacking<M> {
    pub(crate) file: File,
    pub(crate) _memory: M,
}

impl<M: Send + Sync> Backing for CopyBacking<M> {
    fn grow(&self, _region: &Region, new_cap: u64) -> Result<()> {
        Err(Error::corrupt("capacity beyond the inspected memory", new_cap))
    }
    fn refresh(&self, _region: &Region, cap: u64) -> Result<()> {
        Err(Error::corrupt("capacity beyond the inspected memory", cap))
    }
    fn owner_dead(&self, tag: u32) -> bool {
        registry::owner_dead(&self.file, tag)
    }
    fn shared(&self) -> bool {
        false
    }
    fn attached(&self, region: &Region) -> u64 {
        registry::attached(&self.file, region, u32::MAX)
    }
}

/// The bytes of a block of a [`ReadOnlyStore`], borrowed from the mapping
/// ([`ReadOnlyStore::view`]).
#[derive(Clone, Copy)]
pub struct ReadOnlyBlock<'a> {
    bytes: &'a [u8],
    start: u64,
    handle: BlockHandle,
}

impl std::fmt::Debug for ReadOnlyBlock<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadOnlyBlock").field("handle", &self.handle).field("len", &self.bytes.len()).finish()
    }
}

impl<'a> ReadOnlyBlock<'a> {
    /// The payload.
    pub fn as_slice(&self) -> &'a [u8] {
        self.bytes
    }

    /// A view of the whole payload, for typed reads.
    pub fn segment(&self) -> MemorySegment<'a> {
        MemorySegment::new(self.bytes, self.start)
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the length is zero.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The handle it was viewed by.
    pub fn handle(&self) -> BlockHandle {
        self.handle
    }

    /// Offset of the first payload byte in the store.
    pub fn offset(&self) -> Offset<u8> {
        Offset::new(self.start)
    }
}
