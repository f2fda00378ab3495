//! The one error type of the crate.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong, one variant per thing a caller can act on.
///
/// Corruption of the store ([`Error::Corrupt`] and the open-time variants) is kept apart from
/// I/O ([`Error::Io`]): the first means the bytes are wrong, the second that the system refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call failed.
    #[error("{op} failed: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The error from the system.
        #[source]
        source: io::Error,
    },
    /// `create` found a file already at the path.
    #[error("{0} already exists")]
    AlreadyExists(PathBuf),
    /// `open` found no file at the path.
    #[error("{0} does not exist")]
    NotFound(PathBuf),
    /// The file does not start with the store magic.
    #[error("not an mmheap store (bad magic)")]
    NotAStore,
    /// The store was written by a format version this build does not read.
    #[error("store format version {found} is not supported (this build reads {supported})")]
    UnsupportedVersion {
        /// Version in the file.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// The store was written by a build whose layout constants differ.
    #[error("store layout fingerprint {found:#x} does not match this build's {expected:#x}")]
    LayoutMismatch {
        /// Fingerprint in the file.
        found: u64,
        /// Fingerprint of this build.
        expected: u64,
    },
    /// The file is shorter than its superblock says: found by an open, or, by a process that
    /// has the store open, when someone else truncated the file under it (checked before a
    /// growth, when a lock is taken over from a dead holder, and when another process's growth
    /// is followed; README, "Faults from outside", says which accesses are not checked).
    #[error("{}", truncated_text(*expected, *actual))]
    Truncated {
        /// Bytes the superblock claims (the smallest store's size, 36 KiB, for a file too short
        /// to say: an empty one, or one cut inside its superblock before its capacity).
        expected: u64,
        /// Bytes in the file.
        actual: u64,
    },
    /// A structure in the store is inconsistent; `offset` is where it was found.
    #[error("store is corrupt: {what} at offset {offset:#x}")]
    Corrupt {
        /// What is wrong.
        what: &'static str,
        /// Store offset of the bad bytes.
        offset: u64,
    },
    /// No free block is large enough for the request and the heap cannot grow enough: it is
    /// at its maximum size (or the request could not fit even then, which is refused before
    /// any growth), or the disk refused the space (`disk_full`: no space left, quota exceeded,
    /// or the file size limit reached). The heap is unchanged and stays usable.
    ///
    /// Before answering this, the heap takes back every block the calling thread keeps parked
    /// for reuse and searches every free block, so a request of `Stats::largest_free` less
    /// the 32-byte header succeeds. Other threads' caches (and, in a store, other processes')
    /// may still keep space parked: up to 3 MiB per thread in a store, 17 MiB in process,
    /// until they release more, exit, or call [`crate::MemoryManager::trim`].
    #[error("out of space: {requested} bytes requested; {}", space_cause(*disk_full, *max_size))]
    OutOfSpace {
        /// Bytes asked for.
        requested: u64,
        /// The store's maximum size.
        max_size: u64,
        /// Whether the disk (not the store's maximum size) ran out.
        disk_full: bool,
    },
    /// The alignment is not a power of two, or exceeds the page size.
    #[error("alignment {0} is not a power of two no larger than the page size")]
    InvalidAlignment(usize),
    /// The operation needs the caller to be the block's only holder, and it is not.
    #[error("block is shared ({count} references) or published; the operation needs sole ownership")]
    Shared {
        /// References counted when the operation was refused.
        count: u64,
    },
    /// A handle names a block that has been freed (and perhaps reallocated).
    #[error("stale handle: no live block with generation {generation} at offset {offset:#x}")]
    StaleHandle {
        /// Offset in the handle.
        offset: u64,
        /// Generation in the handle.
        generation: u64,
    },
    /// A handle does not name a block of this store at all (out of range, misaligned, or the
    /// header does not check out).
    #[error("invalid handle: {what} (offset {offset:#x})")]
    InvalidHandle {
        /// What is wrong with it.
        what: &'static str,
        /// Offset in the handle.
        offset: u64,
    },
    /// A range or typed view does not fit inside the segment.
    #[error("range {start}..{end} is out of bounds of a segment of {len} bytes")]
    OutOfBounds {
        /// Start of the requested range.
        start: u64,
        /// End of the requested range.
        end: u64,
        /// Length of the segment.
        len: u64,
    },
    /// A typed view would be misaligned.
    #[error("address {address:#x} is not aligned to {align} for the requested type")]
    Misaligned {
        /// The address.
        address: usize,
        /// Alignment the type needs.
        align: usize,
    },
    /// A root name is empty, longer than [`crate::ROOT_NAME_MAX`] bytes, or contains NUL.
    #[error("invalid root name {0:?}")]
    InvalidRootName(String),
    /// Every root entry is taken.
    #[error("the roots directory is full")]
    RootsFull,
    /// Every process slot of the store is taken.
    #[error("all process slots of the store are taken")]
    RegistryFull,
    /// The block belongs to another manager.
    #[error("the block belongs to another manager")]
    WrongManager,
    /// A link index at or beyond the block's number of links (0 for a block made without
    /// links: [`crate::MemoryManager::allocate_linked`]).
    #[error("no link {index}: the block has {links} links")]
    NoSuchLink {
        /// The index asked for.
        index: u64,
        /// The block's number of links.
        links: u64,
    },
    /// What a linked block cannot be or do: it has 1 to [`crate::format::LINK_MAX`] links, and
    /// its length is fixed when it is made.
    #[error("linked block: {0}")]
    LinkLayout(&'static str),
    /// The block has no shared area of the kind asked for: [`crate::MemoryBlock::lock`] needs
    /// a guarded area ([`crate::MemoryManager::allocate_guarded`]),
    /// [`crate::MemoryBlock::view_atomic`] an atomic one
    /// ([`crate::MemoryManager::allocate_atomic`]).
    #[error("the block has no {0}")]
    NoSharedArea(&'static str),
    /// The block has as many other holds as one block can have, 2^20 - 1 (a root, a link, a
    /// channel slot and each process that resolved it count one): the root or link is refused.
    #[error("the block at {offset:#x} has the most holds a block can have (2^20 - 1)")]
    TooManyHolds {
        /// The block's header offset.
        offset: u64,
    },
    /// A process has an end (a `Sender` or `Receiver`) of the channel open, so it is not
    /// removed. The ends of a process that died count until recovery runs.
    #[error("the channel {0:?} has ends open")]
    ChannelInUse(String),
    /// The channel was removed (`MappedManager::remove_channel`): a `Channel` value of it
    /// makes no ends any more. Open it again by name for a new one.
    #[error("the channel {0:?} was removed")]
    ChannelRemoved(String),
    /// Every handle of the block's manager was dropped, and no reference resolved through it
    /// is left: only owners' blocks keep its heap then, and no new reference can be made in
    /// it (keep a manager handle to follow links or upgrade weak references).
    #[error("the block's manager was dropped: no new reference can be made in its heap")]
    ManagerGone,
    /// This process has as many managers (stores opened, in-process managers) alive as it can
    /// name, 65,535: a manager is alive while it, a clone of it or a block of it is.
    #[error("too many managers alive in this process")]
    TooManyManagers,
    /// The operation needs the store to itself (salvage; the check of a store opened
    /// read-only, which cannot take the store lock), and other processes are attached and
    /// alive.
    #[error("{processes} other process(es) are attached to the store; the operation needs it to itself")]
    StoreInUse {
        /// Living processes attached besides the caller.
        processes: u64,
    },
    /// A store that could not be locked here (its file is not writable by this process) changed
    /// under every copy taken of it: its processes are writing it, and nothing read without
    /// its lock shows one moment (`mmheap` refuses to report from such copies).
    #[error("the store cannot be locked here and changed under every copy taken of it: {processes} process(es) are writing it")]
    StoreChanging {
        /// Living processes attached to the store.
        processes: u64,
    },
    /// The store can only be read here. [`crate::MappedManager::open`] (and `open_or_create`,
    /// `recover_file`, `salvage`) found the file readable but not writable by this process: a
    /// file with no write permission bit (mode 0400, 0444: refused even where root could write
    /// it), another user's store, a read-only file system;
    /// [`crate::MappedManager::open_read_only`] opens it for reading. Or a write (allocate,
    /// resize, a counted reference) was asked of a [`crate::ReadOnlyStore`], which never writes.
    #[error("{} is read-only here: MappedManager::open_read_only reads it without writing", path.display())]
    ReadOnly {
        /// The store file.
        path: PathBuf,
    },
    /// The store file could not be mapped: a process maps a store's whole maximum size when it
    /// opens it (so that blocks never move as the store grows), and the system refused that much
    /// address space (`RLIMIT_AS`, `ulimit -v`, too small for `max_size`; the per-process limit
    /// of mappings, `vm.max_map_count`, reached; no memory for the kernel's records). Nothing
    /// was changed; the open succeeds once the cause is gone. [`crate::inspect`] (and so the
    /// `mmheap` tool's read-only commands) maps only the store's capacity, and says so the same
    /// way when that is refused.
    #[error("could not map {max_size} bytes of address space for the store (an open maps its whole max_size, an inspection its capacity): {source}; raise RLIMIT_AS (ulimit -v) or use a store with a smaller max_size")]
    MapFailed {
        /// The length of the mapping refused: the store's maximum size for an open, its
        /// capacity (or less) for an inspection.
        max_size: u64,
        /// The error from `mmap`.
        #[source]
        source: io::Error,
    },
    /// The file at the path is not one this process opens as a store unless told to
    /// ([`crate::Options::follow_symlinks`], [`crate::Options::allow_shared_permissions`]):
    /// a symlink, not a regular file, or, for an open that writes, a file another user owns
    /// or that group or others may write. Nothing was read from it or written to it.
    #[error("{} is not opened as a store: {reason}{}", path.display(), reason.override_hint())]
    UnsafeFile {
        /// The path given.
        path: PathBuf,
        /// What is wrong with the file.
        reason: UnsafeReason,
    },
    /// The block does not hold a value of the type asked for: its type fingerprint (the
    /// first 8 bytes of a value block, `docs/format.md` "Typed values") is another type's, or
    /// the block is no value at all. `expected` is the asked type's fingerprint.
    #[error(
        "the block holds a value of another type (fingerprint {found:#018x}, expected {expected:#018x})"
    )]
    WrongType {
        /// The fingerprint of the type asked for.
        expected: u64,
        /// The fingerprint found in the block (0 if the block is too short to hold one).
        found: u64,
    },
    /// A value's bytes do not validate as an archive of its type (rkyv's bytecheck): written
    /// damaged, or by a process that does not follow the protocol. Nothing of it was handed out.
    #[error("the value's bytes are not a valid archive of its type: {0}")]
    InvalidValue(String),
    /// A value could not be serialized (rkyv reported an error, such as a length that does not
    /// fit its archived form).
    #[error("the value could not be serialized: {0}")]
    Serialize(String),
    /// A container (`SharedVec`, `SharedMap`, `SharedBytesMap`) was opened from a block that
    /// is not one of its kind (another container, another key or value type, plain bytes).
    #[error("the block is not a container of this kind: {0}")]
    NotAContainer(&'static str),
    /// The store file could not be opened (no permission to read it, too many open files, an
    /// I/O error): the system's answer, with the path.
    #[error("cannot open {}: {source}", path.display())]
    CannotOpen {
        /// The path given.
        path: PathBuf,
        /// The error from the system.
        #[source]
        source: io::Error,
    },
    /// Options are inconsistent.
    #[error("invalid options: {0}")]
    InvalidOptions(&'static str),
    /// The calling thread already holds the lock asked for: the heap's (an allocation made
    /// from inside the allocator itself, as the global allocator or the drop-in `malloc`, which
    /// is then served elsewhere), or a guarded area's ([`crate::MemoryBlock::lock`], such as a
    /// container's writers' lock taken again from inside `get_or_insert_with`'s closure),
    /// rather than wait for ever on itself.
    #[error("this thread already holds the lock")]
    Reentrant,
}

/// Why a file is not opened as a store ([`Error::UnsafeFile`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnsafeReason {
    /// The path is a symlink (refused unless [`crate::Options::follow_symlinks`]).
    #[error("it is a symlink")]
    Symlink,
    /// A directory, fifo, socket or device: never a store.
    #[error("it is not a regular file")]
    NotRegular,
    /// Another user owns the file (refused to a writer unless
    /// [`crate::Options::allow_shared_permissions`]).
    #[error("it is owned by uid {uid}, not by this process's user")]
    OtherOwner {
        /// The file's owner.
        uid: u32,
    },
    /// Group or others may write the file (refused to a writer unless
    /// [`crate::Options::allow_shared_permissions`]).
    #[error("group or others may write it (mode {mode:04o})")]
    WritableByOthers {
        /// The file's permission bits.
        mode: u32,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, source: io::Error) -> Self {
        Error::Io { op, source }
    }

    pub(crate) fn corrupt(what: &'static str, offset: u64) -> Self {
        Error::Corrupt { what, offset }
    }

    /// A request the heap cannot hold within its maximum size.
    pub(crate) fn out_of_space(requested: u64, max_size: u64) -> Self {
        Error::OutOfSpace { requested, max_size, disk_full: false }
    }

    /// A failed preallocation of the store file: out of space if the disk is full, else I/O.
    pub(crate) fn growth(op: &'static str, e: io::Error, requested: u64, max_size: u64) -> Self {
        match crate::sys::is_out_of_space(&e) {
            true => Error::OutOfSpace { requested, max_size, disk_full: true },
            false => Error::io(op, e),
        }
    }
}

impl UnsafeReason {
    /// How an open is told to accept such a file, if it can be, for [`Error::UnsafeFile`]'s text.
    fn override_hint(&self) -> &'static str {
        match self {
            UnsafeReason::Symlink => " (Options::follow_symlinks(true) opens the file it names)",
            UnsafeReason::OtherOwner { .. } | UnsafeReason::WritableByOthers { .. } => {
                " (Options::allow_shared_permissions(true) accepts it)"
            }
            UnsafeReason::NotRegular => "",
        }
    }
}

fn truncated_text(expected: u64, actual: u64) -> String {
    match actual < crate::format::SUPERBLOCK_SIZE && expected == crate::format::MIN_STORE_SIZE {
        true => format!(
            "store is truncated or empty: the file has {actual} bytes, too few to hold a store's superblock (a store has at least {expected})"
        ),
        false => format!("store is truncated: header says {expected} bytes, file has {actual}"),
    }
}

fn space_cause(disk_full: bool, max_size: u64) -> String {
    match disk_full {
        true => "the disk is full (no space, quota or file size limit)".to_owned(),
        false => format!("no free block is large enough within the maximum of {max_size} bytes"),
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
