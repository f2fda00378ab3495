//! `MappedManager`: the heap inside a memory-mapped store file.

pub(crate) mod copy;
mod open;
mod read_only;
mod registry;
mod roots;
mod trust;

pub(crate) use trust::open_to_inspect;

pub(crate) use crate::engine::roots::Surveyed as SurveyedRoot;
pub(crate) use read_only::{zeroed_words, CopyBacking};
pub use read_only::{ReadOnlyBlock, ReadOnlyStore};

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::MmapRaw;

use crate::engine::core::region::Region;
use crate::engine::heap::family::HeapRef;
use crate::engine::heap::{Backing, Heap};
use crate::error::{Error, Result};
use crate::format::{MIN_STORE_SIZE, PAGE_SIZE};
use crate::{BlockHandle, CheckReport, MemoryBlock};

/// Largest `max_size` accepted: far below the 128 TiB of user address space.
pub const MAX_STORE_SIZE: u64 = 1 << 44;

/// Rounds of open, then create, `open_or_create` makes before it gives up on a path where a
/// file keeps appearing and going away.
const OPEN_OR_CREATE_ROUNDS: usize = 16;

/// How to create a store.
///
/// ```
/// use mmheap::Options;
/// let opts = Options::new().initial_size(4 << 20).max_size(1 << 30).mode(0o640);
/// assert_eq!(opts.get_max_size(), 1 << 30);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    initial_size: u64,
    max_size: u64,
    mode: u32,
    trust: trust::Trust,
}

impl Default for Options {
    fn default() -> Self {
        Options { initial_size: 1 << 20, max_size: 64 << 30, mode: 0o600, trust: trust::Trust::default() }
    }
}

impl Options {
    /// 1 MiB to start, 64 GiB at most, mode 0600.
    pub fn new() -> Self {
        Self::default()
    }

    /// Size of the file when created (rounded up to a page; at least 36 KiB).
    pub fn initial_size(mut self, bytes: u64) -> Self {
        self.initial_size = bytes;
        self
    }

    /// Size the store may grow to. Every process that opens the store reserves this much
    /// address space, so that blocks never move while the store grows.
    pub fn max_size(mut self, bytes: u64) -> Self {
        self.max_size = bytes;
        self
    }

    /// Permission bits of a new store file (default 0600), applied exactly: the process's
    /// umask does not narrow them (the temporary file the store is built in is given them with
    /// `fchmod` before it is linked into place). `create` and `open_or_create` refuse with
    /// [`Error::InvalidOptions`] a mode with bits outside `0o777` (setuid, setgid, sticky), one
    /// that does not let the owner read and write, and one that lets group or others write
    /// unless [`Options::allow_shared_permissions`] is set too (without it every writer's open
    /// would refuse the store made).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Whether an open (`open_with`, `open_or_create`, `open_read_only_with`, `recover_file_with`,
    /// `salvage_with`) follows a symlink at the path to the store it names, which is then
    /// checked as any store file (default: a symlink is refused, [`Error::UnsafeFile`] with
    /// [`crate::UnsafeReason::Symlink`], and the file is opened with `O_NOFOLLOW`). Only the
    /// last component of the path is checked either way: a symlink to a directory above it is
    /// followed.
    pub fn follow_symlinks(mut self, follow: bool) -> Self {
        self.trust.follow_symlinks = follow;
        self
    }

    /// Whether an open that writes the store accepts a file that another user owns, or that
    /// group or others may write: a store shared by the users of one group (create it with
    /// `.mode(0o660)` and this option, and give it the group). By default such a file is refused
    /// ([`Error::UnsafeFile`]): whoever else may write it can change, under this process, the
    /// free lists and counts it relies on, and so make it write where it should not.
    pub fn allow_shared_permissions(mut self, allow: bool) -> Self {
        self.trust.shared_permissions = allow;
        self
    }

    /// The maximum size set.
    pub fn get_max_size(&self) -> u64 {
        self.max_size
    }

    /// Checks the mode of a new store (`Options::mode`).
    fn check_mode(&self) -> Result<()> {
        if self.mode & !0o777 != 0 {
            return Err(Error::InvalidOptions("mode has bits outside 0o777 (setuid, setgid or sticky)"));
        }
        if self.mode & 0o600 != 0o600 {
            return Err(Error::InvalidOptions("mode does not let the owner read and write the store"));
        }
        if self.mode & 0o022 != 0 && !self.trust.shared_permissions {
            return Err(Error::InvalidOptions(
                "a mode that lets group or others write needs Options::allow_shared_permissions(true)",
            ));
        }
        Ok(())
    }

    /// Checked, page-rounded (initial, max) sizes, after checking the mode.
    fn sizes(&self) -> Result<(u64, u64)> {
        self.check_mode()?;
        // Sizes near `u64::MAX` do not round up to a page: they are above every limit anyway.
        let round = |n: u64| n.checked_next_multiple_of(PAGE_SIZE).unwrap_or(u64::MAX);
        let (initial, max) = (round(self.initial_size.max(MIN_STORE_SIZE)), round(self.max_size));
        if initial > MAX_STORE_SIZE {
            return Err(Error::InvalidOptions("initial_size is above MAX_STORE_SIZE"));
        }
        if max > MAX_STORE_SIZE {
            return Err(Error::InvalidOptions("max_size is above MAX_STORE_SIZE"));
        }
        if max < initial {
            return Err(Error::InvalidOptions("max_size is below initial_size"));
        }
        Ok((initial, max))
    }
}

/// A heap inside a memory-mapped store file, shared by every process that opens it.
///
/// Block headers, reference counts, free lists and named roots all live in the file, so
/// blocks can be allocated in one process, handed to another by [`BlockHandle`], and found
/// again after a restart through named roots. The store grows by itself up to its maximum size
/// while processes are attached; block addresses never move inside a process.
///
/// ```
/// use mmheap::{MappedManager, MemoryManager, Options};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("data.mmheap");
/// {
///     let store = MappedManager::create(&path, &Options::new())?;
///     let mut block = store.allocate(5)?;
///     block.as_mut_slice()?.copy_from_slice(b"hello");
///     store.set_root("greeting", &block)?;
/// }
/// let store = MappedManager::open(&path)?;
/// let block = store.root("greeting")?.expect("root survives reopening");
/// assert_eq!(block.as_slice(), b"hello");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct MappedManager {
    pub(crate) heap: HeapRef,
    path: Arc<PathBuf>,
    created: bool,
    opening_recovery: Option<crate::RecoveryReport>,
    opening_salvage: Option<Arc<crate::SalvageReport>>,
}

impl std::fmt::Debug for MappedManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedManager").field("path", &self.path).finish_non_exhaustive()
    }
}

/// The store file, its mapping and our registry slot.
struct FileBacking {
    file: File,
    map: MmapRaw,
    slot: u32,
    /// Removed when the backing goes (temporary stores).
    remove_on_drop: Option<PathBuf>,
    /// The directory that names the store file, fsynced by the first flush (a store is created
    /// in a temporary file and renamed into place: the new name is durable once its directory
    /// is); `None` once done.
    directory: std::sync::Mutex<Option<PathBuf>>,
}

/// Raises `region`'s limit to a capacity `cap` that the store file has reached (a growth, here
/// or published by another process): refused unless the file is that long, `cap` whole pages
/// and within the mapping.
fn reach_capacity(file: &File, region: &Region, cap: u64) -> Result<()> {
    let len = file.metadata().map_err(|e| Error::io("stat the store file", e))?.len();
    if cap > len || cap > region.reserved() || cap % crate::format::PAGE_SIZE != 0 {
        return Err(Error::Truncated { expected: cap, actual: len });
    }
    // SAFETY: the region is a mapping (read-write, or read-only for a read-only store that
    // only reads through it) of `reserved` bytes of `file`, which is at least `cap` bytes long,
    // so the first `cap` bytes of the mapping are backed.
    unsafe { region.raise_limit(cap) };
    Ok(())
}

/// [`Error::Truncated`] if `file` is shorter than `region`'s limit: someone truncated it while
/// this process has it mapped (ours never shrink).
fn check_length(file: &File, region: &Region) -> Result<()> {
    let len = file.metadata().map_err(|e| Error::io("stat the store file", e))?.len();
    match len < region.limit() {
        true => Err(Error::Truncated { expected: region.limit(), actual: len }),
        false => Ok(()),
    }
}

impl Backing for FileBacking {
    fn grow(&self, region: &Region, new_cap: u64) -> Result<()> {
        // posix_fallocate would refill a truncated file with zeros where its pages were.
        check_length(&self.file, region)?;
        // Preallocating makes a full disk an error here rather than a SIGBUS on first touch
        // (`Error::OutOfSpace` with `disk_full`; the caller fills in what was requested).
        crate::sys::preallocate(&self.file, new_cap).map_err(|e| {
            Error::growth("grow the store file", e, 0, region.load(crate::format::SB_MAX_SIZE).unwrap_or(0))
        })?;
        self.refresh(region, new_cap)
    }

    fn refresh(&self, region: &Region, cap: u64) -> Result<()> {
        reach_capacity(&self.file, region, cap)
    }

    fn check_length(&self, region: &Region) -> Result<()> {
        check_length(&self.file, region)
    }

    fn file_len(&self) -> Option<u64> {
        self.file.metadata().ok().map(|m| m.len())
    }

    fn owner_dead(&self, tag: u32) -> bool {
        registry::owner_dead(&self.file, tag)
    }

    fn shared(&self) -> bool {
        true
    }

    fn attached(&self, region: &Region) -> u64 {
        registry::attached(&self.file, region, self.slot)
    }

    fn flush(&self) -> Result<()> {
        let len = self.file.metadata().map_err(|e| Error::io("stat the store file", e))?.len();
        self.map.flush_range(0, len as usize).map_err(|e| Error::io("msync the store", e))?;
        self.file.sync_all().map_err(|e| Error::io("fsync the store", e))?;
        let mut directory = self.directory.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(dir) = directory.as_ref() {
            let synced = File::open(dir).and_then(|d| d.sync_all());
            synced.map_err(|e| Error::io("fsync the store's directory", e))?;
            *directory = None;
        }
        Ok(())
    }

    /// `msync(MS_SYNC)` of the pages holding the range: on Linux that writes them and waits,
    /// as `fdatasync` does for the whole file (`vfs_fsync_range` of the range, with the disk's
    /// cache flushed), without writing the rest of the store's dirty pages.
    fn persist(&self, offset: u64, len: u64) -> Result<()> {
        let (offset, len) = (usize::try_from(offset), usize::try_from(len));
        let (Ok(offset), Ok(len)) = (offset, len) else {
            return Err(Error::corrupt("range to make durable out of range", 0));
        };
        self.map.flush_range(offset, len).map_err(|e| Error::io("msync part of the store", e))?;
        let page = PAGE_SIZE as usize;
        let start = offset / page * page;
        crate::hooks::persisted(
            start as u64,
            (offset + len).next_multiple_of(page).saturating_sub(start) as u64,
        );
        Ok(())
    }

    fn detach(&self, region: &Region) {
        registry::detach(region, self.slot);
    }

    fn give_up_slot(&self) {
        registry::give_up(&self.file, self.slot);
    }

    fn slot(&self) -> Option<u32> {
        Some(self.slot)
    }
}

impl Drop for FileBacking {
    fn drop(&mut self) {
        if let Some(path) = &self.remove_on_drop {
            let _ = std::fs::remove_file(path);
        }
    }
}

pub(crate) use open::validate_superblock;
pub(crate) use registry::owner_dead;

pub(crate) use crate::engine::kinds::full_check;

/// Every used entry of the roots directory, each checked on its own.
pub(crate) fn survey_roots(heap: &Heap) -> Result<Vec<SurveyedRoot>> {
    roots::survey(heap)
}

impl MappedManager {
    /// Creates a new store at `path`; fails with [`Error::AlreadyExists`] if anything is
    /// there. The store is built whole in a temporary file beside `path` and linked into place,
    /// so no process ever sees a half-made store.
    pub fn create(path: impl AsRef<Path>, options: &Options) -> Result<Self> {
        open::create(path.as_ref(), options, false)
    }

    /// Opens an existing store. Fails with [`Error::NotFound`], [`Error::NotAStore`],
    /// [`Error::UnsupportedVersion`], [`Error::LayoutMismatch`], [`Error::Truncated`] or
    /// [`Error::Corrupt`] as the file warrants, and with [`Error::ReadOnly`] on a store this
    /// process may read but not write (or whose mode has no write bit, such as 0400): open
    /// that with [`MappedManager::open_read_only`].
    ///
    /// The file must be a regular file (not a symlink: it is opened with `O_NOFOLLOW`) that
    /// this process's user owns and that neither group nor others may write, else
    /// [`Error::UnsafeFile`] says which; [`MappedManager::open_with`] relaxes that.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        open::open(path.as_ref(), &Options::new())
    }

    /// Opens an existing store as [`MappedManager::open`] does, accepting what `options` allow
    /// ([`Options::follow_symlinks`], [`Options::allow_shared_permissions`]; the sizes and mode
    /// are the store's own and not used).
    pub fn open_with(path: impl AsRef<Path>, options: &Options) -> Result<Self> {
        open::open(path.as_ref(), options)
    }

    /// Opens the store at `path`, creating it with `options` if there is none. Safe to race:
    /// exactly one of several processes creates it, the others open what it made (checked as
    /// [`MappedManager::open_with`] checks it, with `options`). The options are checked first,
    /// whether or not the store exists ([`Error::InvalidOptions`]).
    ///
    /// A dangling symlink at the path, followed ([`Options::follow_symlinks`]), names no store
    /// to open, and the store is not created through it (as [`MappedManager::create`] does
    /// not): [`Error::AlreadyExists`]. So is a path at which a file keeps appearing and going
    /// away between the open and the create, after a few rounds.
    pub fn open_or_create(path: impl AsRef<Path>, options: &Options) -> Result<Self> {
        let path = path.as_ref();
        options.sizes()?;
        let mut last = Error::AlreadyExists(path.to_owned());
        for _ in 0..OPEN_OR_CREATE_ROUNDS {
            match open::open(path, options) {
                Err(Error::NotFound(_)) => {}
                other => return other,
            }
            let symlink = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
            if symlink && std::fs::metadata(path).is_err() {
                // Followed, it named nothing; create would refuse it after building a store.
                return Err(Error::AlreadyExists(path.to_owned()));
            }
            match open::create(path, options, false) {
                Err(e @ Error::AlreadyExists(_)) => last = e,
                other => return other,
            }
        }
        Err(last)
    }

    /// A store in a fresh file in the system's temporary directory, removed when this manager
    /// (and every clone and block of it) is dropped. Other processes can [`MappedManager::open`]
    /// it by [`MappedManager::path`] meanwhile: the way to share memory with a child process.
    pub fn temporary(options: &Options) -> Result<Self> {
        let name = format!("mmheap-{}-{:016x}.store", std::process::id(), crate::engine::heap::random_u64());
        open::create(&std::env::temp_dir().join(name), options, true)
    }

    pub(crate) fn from_parts(
        heap: Heap,
        path: PathBuf,
        created: bool,
        opening_recovery: Option<crate::RecoveryReport>,
        opening_salvage: Option<crate::SalvageReport>,
    ) -> Result<Self> {
        let heap = HeapRef::new(heap)?;
        let opening_salvage = opening_salvage.map(Arc::new);
        Ok(MappedManager { heap, path: Arc::new(path), created, opening_recovery, opening_salvage })
    }

    /// What the recovery that ran while opening the store did, if one ran (some process had
    /// died leaving things behind, or the machine went down with the store open: then
    /// [`MappedManager::opening_salvage`] says more).
    pub fn opening_recovery(&self) -> Option<crate::RecoveryReport> {
        self.opening_recovery
    }

    /// What the salvage that ran while opening the store did, if one ran: this process was the
    /// first of its boot to open the store (which records the kernel's boot id of its last
    /// users), so the machine may have gone down with it open (a power loss, an operating
    /// system crash) and pages that were not flushed may have been lost or torn; the open ran
    /// the strict recovery, which refused the store as damaged, and salvaged it instead: what did
    /// not survive whole is quarantined or dropped and listed here; what a completed
    /// [`MappedManager::flush`] made durable and nothing changed since is kept
    /// (ARCHITECTURE.md, "Durability and power loss"). Damage done while the machine was down
    /// is salvaged so too, and listed here.
    pub fn opening_salvage(&self) -> Option<&crate::SalvageReport> {
        self.opening_salvage.as_deref()
    }

    /// Whether this manager created the store file (with `create`, `temporary`, or the
    /// creating branch of `open_or_create`) rather than opening an existing one.
    pub fn created(&self) -> bool {
        self.created
    }

    pub(crate) fn heap(&self) -> &HeapRef {
        &self.heap
    }

    /// Path of the store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes everything written so far durable: msync of the mapping, then fsync of the file.
    /// When it returns `Ok`, the store file on disk holds everything written before the call;
    /// an I/O error of either (EIO: the disk failed to write some page) is its error, and then
    /// nothing is promised of what was written since the last flush that succeeded.
    pub fn flush(&self) -> Result<()> {
        self.heap.flush()
    }

    /// Makes the bytes of `block` durable (its header, its bytes, its link table or shared
    /// area): msync of the pages it spans, which waits for the disk. Cheaper than
    /// [`MappedManager::flush`] when one block that a flush already made durable changed since;
    /// the heap's own records (free lists, counters, a root set since the last flush) are not
    /// included, so a block made since needs a `flush` (ARCHITECTURE.md, "Durability and power
    /// loss"). Of a container, it covers the top block alone. An I/O error (EIO) is this call's
    /// error.
    pub fn flush_block(&self, block: &MemoryBlock) -> Result<()> {
        if !block.same_heap(&self.heap) {
            return Err(Error::WrongManager);
        }
        self.heap.flush_block(block.header_offset(), block.len() as u64)
    }

    /// Walks the heap, the free structures and the named roots and reports every
    /// inconsistency.
    pub fn check(&self) -> Result<CheckReport> {
        full_check(&self.heap)
    }

    /// Reclaims what dead processes left: their registry slots, the blocks they owned and
    /// never shared, and the references they held on shared blocks; repairs any operation a
    /// dead lock holder left half done. It runs by itself when a waiter finds the lock's
    /// holder dead and when a store is opened after a process died; calling it is always
    /// safe (it is idempotent). The report sums this recovery and every other this process
    /// ran since it was last asked (those run when one of its threads took the lock over
    /// from a dead holder; the one run at open is [`MappedManager::opening_recovery`]).
    ///
    /// Recovery repairs what a crash leaves; it never makes damage worse. On a store that is
    /// damaged (a block header that does not parse, a check word that does not match, a root
    /// that names no block, ...) it stops with [`Error::Corrupt`] naming the first damage
    /// found, and the store is as it was: nothing was freed, merged or overwritten.
    /// [`MappedManager::salvage`] then fences the damage off, if asked.
    pub fn recover(&self) -> Result<crate::RecoveryReport> {
        self.heap.recover()
    }

    /// Recovers as [`MappedManager::recover`] does, and frees the blocks that only cycles of
    /// links keep: a mark pass from the roots, the channels, every process's holds and every
    /// living process's own references, through links; what it does not reach (blocks that
    /// link each other in a cycle nothing else holds, and what only they link) is freed, its
    /// links released. [`crate::CheckReport::cycle_blocks`] lists them beforehand. Reference
    /// counting alone never frees a cycle: break cycles with [`MemoryBlock::set_link`]`(i,
    /// None)`, or use weak links ([`MemoryBlock::downgrade`]) for back references.
    pub fn collect_cycles(&self) -> Result<crate::RecoveryReport> {
        self.heap.collect_cycles()
    }

    /// Recovers the store at `path` without keeping it open (`mmheap recover`): attaches,
    /// runs the recovery [`MappedManager::recover`] describes, and detaches. If the store is
    /// damaged, or anything else fails, it is left exactly as it was, byte for byte.
    ///
    /// ```
    /// use mmheap::{MappedManager, Options};
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("s.mmheap");
    /// drop(MappedManager::create(&path, &Options::new())?);
    /// let report = MappedManager::recover_file(&path)?;
    /// assert_eq!(report.dead_processes, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recover_file(path: impl AsRef<Path>) -> Result<crate::RecoveryReport> {
        Self::recover_file_with(path, &Options::new())
    }

    /// [`MappedManager::recover_file`] of a file that `options` allow
    /// ([`MappedManager::open_with`]).
    pub fn recover_file_with(path: impl AsRef<Path>, options: &Options) -> Result<crate::RecoveryReport> {
        open::repair(path.as_ref(), options, |heap, reclaimed| heap.recover_as_found(reclaimed))
    }

    /// Salvages the damaged store at `path`: what recovery refuses to touch, fenced off.
    /// Every block that a named root, a channel (its ring, its queued messages) or a living
    /// process's hold names, and whose own header checks out, keeps its offset and its bytes.
    /// A range whose headers cannot be parsed is *quarantined*: it becomes one used block that
    /// nothing names, never handed out and never freed, its bytes as they were (but for its
    /// first 32, its new header); `check` counts it and `mmheap stat` shows it. References to
    /// what was lost are dropped, damaged root and channel names replaced
    /// (`salvaged-<offset>`), damaged generations renewed; the report lists all of it. Then it
    /// recovers as [`MappedManager::recover`] does, and the store is sound.
    ///
    /// Salvage needs the store to itself: [`Error::StoreInUse`] if another process that is
    /// alive is attached (their blocks could lie in a damaged range). If it fails, the store is
    /// as it was. On a store that is not damaged it does what recovery does.
    pub fn salvage(path: impl AsRef<Path>) -> Result<crate::SalvageReport> {
        Self::salvage_with(path, &Options::new())
    }

    /// [`MappedManager::salvage`] of a file that `options` allow ([`MappedManager::open_with`]).
    pub fn salvage_with(path: impl AsRef<Path>, options: &Options) -> Result<crate::SalvageReport> {
        open::repair(path.as_ref(), options, |heap, _| heap.salvage())
    }

    /// The channel `name`, made with room for `capacity` messages if it does not exist yet
    /// (an existing channel keeps its capacity). See [`crate::Channel`].
    pub fn channel(&self, name: &str, capacity: usize) -> Result<crate::Channel> {
        crate::engine::channel::open(&self.heap, name, capacity)
    }

    /// Removes the channel `name` when no process has an end of it open ([`Error::ChannelInUse`]
    /// otherwise; the ends of a process that died count until [`MappedManager::recover`] runs):
    /// the messages still queued are released, and its ring is freed. `Channel` values of it
    /// make no ends any more ([`Error::ChannelRemoved`]). Returns whether it existed.
    pub fn remove_channel(&self, name: &str) -> Result<bool> {
        crate::engine::channel::remove(&self.heap, name)
    }

    /// Sets the named root `name` to `block` (replacing what it named before). The root holds a
    /// reference: the block stays alive, across processes and reopening, until the root is
    /// removed or replaced. Atomic with respect to other processes.
    pub fn set_root(&self, name: &str, block: &MemoryBlock) -> Result<()> {
        if !block.same_heap(&self.heap) {
            return Err(Error::WrongManager);
        }
        block.settle_len()?;
        roots::set(&self.heap, name, block.header_offset())
    }

    /// The block root `name` names, after setting it to `block` if there was none: one step
    /// under the store lock, so of several processes making the same root at once, exactly one
    /// sets it and every one gets the same block (compare with `block` to know which).
    ///
    /// ```
    /// use mmheap::{MappedManager, MemoryManager, Options};
    ///
    /// let store = MappedManager::temporary(&Options::new())?;
    /// let first = store.root_or_set("config", &store.allocate(8)?)?;
    /// let second = store.root_or_set("config", &store.allocate(8)?)?;
    /// assert_eq!(first.handle(), second.handle()); // the second block was not used
    /// # Ok::<(), mmheap::Error>(())
    /// ```
    pub fn root_or_set(&self, name: &str, block: &MemoryBlock) -> Result<MemoryBlock> {
        if !block.same_heap(&self.heap) {
            return Err(Error::WrongManager);
        }
        block.settle_len()?;
        match roots::set_if_absent(&self.heap, name, block.header_offset())? {
            Some(got) => MemoryBlock::from_obtained(&self.heap, got),
            None => Ok(block.clone()),
        }
    }

    /// A new reference to the block named `name`, if there is one.
    pub fn root(&self, name: &str) -> Result<Option<MemoryBlock>> {
        roots::get(&self.heap, name)?.map(|got| MemoryBlock::from_obtained(&self.heap, got)).transpose()
    }

    /// The typed value named `name`, if there is one: checked to be a `T`
    /// ([`Error::WrongType`] for a root of another type or of plain bytes) and validated
    /// ([`Error::InvalidValue`] for bytes that are no valid archive of it). Set such a root with
    /// [`MappedManager::set_root`]`(name, value.block())`; see [`crate::Value`].
    pub fn root_value<T: crate::Storable>(&self, name: &str) -> Result<Option<crate::Value<T>>> {
        self.root(name)?.map(crate::Value::from_block).transpose()
    }

    /// Removes the root `name`, releasing its reference. Returns whether it existed.
    pub fn remove_root(&self, name: &str) -> Result<bool> {
        roots::remove(&self.heap, name)
    }

    /// Every named root with the handle of its block, sorted by name.
    pub fn roots(&self) -> Result<Vec<(String, BlockHandle)>> {
        roots::list(&self.heap)
    }
}
