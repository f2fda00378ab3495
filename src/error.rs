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
    /// The file is shorter than its superblock says.
    #[error("store is truncated: header says {expected} bytes, file has {actual}")]
    Truncated {
        /// Bytes the superblock claims.
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
    /// No free block is large enough and the store is at its maximum size. The heap is
    /// unchanged.
    #[error("out of space: {requested} bytes requested, store at its maximum of {max_size} bytes")]
    OutOfSpace {
        /// Bytes asked for.
        requested: u64,
        /// The store's maximum size.
        max_size: u64,
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
    /// This process has as many managers (stores opened, in-process managers) alive as it can
    /// name, 65,535: a manager is alive while it, a clone of it or a block of it is.
    #[error("too many managers alive in this process")]
    TooManyManagers,
    /// Options are inconsistent.
    #[error("invalid options: {0}")]
    InvalidOptions(&'static str),
}

impl Error {
    pub(crate) fn io(op: &'static str, source: io::Error) -> Self {
        Error::Io { op, source }
    }

    pub(crate) fn corrupt(what: &'static str, offset: u64) -> Self {
        Error::Corrupt { what, offset }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
