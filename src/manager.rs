//! The `MemoryManager` trait: one API over both managers.

use crate::{BlockHandle, MemoryBlock, Result};

/// What a heap holds, read from the store's own counters.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Bytes the heap spans now (the store file's length, for a mapped store).
    pub capacity: u64,
    /// Bytes the heap may grow to.
    pub max_size: u64,
    /// Bytes in the blocks users hold, headers included. The store's own bookkeeping blocks
    /// (hold tables, thread-cache counter tables) and blocks parked in thread caches for reuse
    /// count as free.
    pub used_bytes: u64,
    /// Bytes in free blocks, headers included.
    pub free_bytes: u64,
    /// Bytes of the heap in use for anything: users' blocks, spans of small blocks (with their
    /// free slots), blocks parked in thread caches and bookkeeping. What the heap consumes;
    /// its capacity less this is free space.
    pub heap_bytes: u64,
    /// Size of the largest free block, header included: an allocation of up to this size less
    /// 32 bytes (the header) succeeds without growth (parked blocks aside), and no larger one
    /// does once the store is at its maximum size.
    pub largest_free: u64,
    /// Number of blocks users hold (as for `used_bytes`).
    pub live_blocks: u64,
    /// Processes attached to the store (1 for the in-process manager).
    pub attached_processes: u64,
    /// How many times the heap has grown.
    pub growths: u64,
    /// How many recoveries have run on the store, over its life (each after some process
    /// died, or asked for), whichever process ran them.
    pub recoveries: u64,
    /// Dead processes whose leftovers those recoveries reclaimed.
    pub recovered_processes: u64,
    /// Bytes in quarantined ranges: damage that `MappedManager::salvage` fenced off. Neither
    /// used nor free: never handed out.
    pub quarantined_bytes: u64,
}

/// Allocates reference-counted blocks. Implemented by [`crate::DefaultManager`] (process
/// memory) and [`crate::MappedManager`] (a store file shared between processes), so code can
/// be generic over where its memory lives.
///
/// Rules common to both:
/// - every block's payload is aligned to at least 16 bytes;
/// - a zero-length allocation succeeds and returns a distinct block of length 0, which can be
///   shared, resized and freed like any other;
/// - running out of space returns [`crate::Error::OutOfSpace`] and leaves the heap unchanged.
///
/// ```
/// use mmheap::{DefaultManager, MemoryManager};
///
/// fn fill<M: MemoryManager>(m: &M) -> mmheap::Result<u8> {
///     let mut block = m.allocate_zeroed(64)?;
///     block.as_mut_slice()?[0] = 7;
///     m.resize(&mut block, 4096)?;
///     Ok(block.as_slice()[0])
/// }
/// assert_eq!(fill(&DefaultManager::new()?)?, 7);
/// # Ok::<(), mmheap::Error>(())
/// ```
pub trait MemoryManager {
    /// Allocates `len` bytes (content unspecified).
    fn allocate(&self, len: usize) -> Result<MemoryBlock>;
    /// Allocates `len` bytes whose start is aligned to `align`, a power of two up to 4096.
    fn allocate_aligned(&self, len: usize, align: usize) -> Result<MemoryBlock>;
    /// Allocates `len` zeroed bytes.
    fn allocate_zeroed(&self, len: usize) -> Result<MemoryBlock>;
    /// Changes a block's length, keeping its content up to the shorter length. Grows or
    /// shrinks in place when the neighbouring space allows, otherwise moves the block (its
    /// old handle then goes stale). Fails with [`crate::Error::Shared`] when the block has
    /// other references. Bytes beyond the old length are unspecified; a published block stays
    /// read-only, so grow a block before publishing it.
    fn resize(&self, block: &mut MemoryBlock, new_len: usize) -> Result<()>;
    /// The heap's counters.
    fn stats(&self) -> Result<Stats>;
    /// Gives back to the heap every block the calling thread keeps parked for reuse (its
    /// per-class stacks of blocks up to 128 KiB and its list of released larger ones), so that
    /// other threads and processes can use the space at once. A thread keeps up to 3 MiB
    /// parked in a store (17 MiB in an in-process heap) otherwise, until it exits; call this
    /// when it goes idle after releasing much. Blocks other threads keep are theirs. Takes
    /// the store lock once.
    fn trim(&self) -> Result<()>;
    /// A new reference to the block a handle names; stale or forged handles are refused.
    fn block_from_handle(&self, handle: BlockHandle) -> Result<MemoryBlock>;
}
