//! The `MemoryManager` trait: one API over both managers.

use crate::{BlockHandle, MemoryBlock, Result};

/// What a heap holds, read from the store's own counters.
///
/// # What the figures mean
///
/// These definitions are the crate's and the `mmheap` tool's, for [`Stats`], [`CheckReport`]
/// (which counts the same categories by walking every block), `mmheap stat` and `mmheap check`
/// (`docs/cli.md`). Every byte of the heap (the store less its metadata and end sentinel) is in
/// exactly one of five categories; sizes include the 32-byte header, a slot (a small block
/// inside a span) counts as a block of its slot size.
///
/// | category | what it is | fields |
/// |---|---|---|
/// | **live** | blocks and slots that users hold: counted in their reference word (`MemoryBlock`s of the owner, other processes' holds, named roots, queued channel messages), or *lent*: taken from the owner's thread cache by a `MemoryBlock` that is their only reference | `used_bytes`, `live_blocks` |
/// | **cached** | blocks and slots with no reference that a thread cache keeps (*parked*) for its process's next allocation of that size, or that wait in a store's *exchange* for any process's (ARCHITECTURE.md, "Block caches") | `cached_bytes`, `cached_blocks` |
/// | **bookkeeping** | the store's own blocks: hold tables, cache counter tables, channel rings, and spans and their publication pages less the slots in use in them (a span's header, reference words and free slots); in an in-process heap, also its slabs less their blocks in use | `bookkeeping_bytes`, `bookkeeping_blocks` |
/// | **free** | free blocks: what any allocation can take | `free_bytes` |
/// | **quarantined** | damage that salvage fenced off: never handed out or freed | `quarantined_bytes` |
///
/// So `used_bytes + cached_bytes + bookkeeping_bytes + free_bytes + quarantined_bytes` is the
/// heap, and all but `free_bytes` is `heap_bytes`. ("Used" in a field name means live.)
///
/// A lent block and a parked one look the same in the store (count zero, owned by its process:
/// lending writes nothing, ARCHITECTURE.md "References"); what the store records is how many
/// blocks and bytes each thread cache keeps parked. So of a process's blocks with count zero,
/// as many as its caches say are cached, and the rest live. A block whose owner process died is
/// counted as its words say until recovery frees it.
///
/// [`CheckReport`]: crate::CheckReport
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Bytes the heap spans now (the store file's length, for a mapped store).
    pub capacity: u64,
    /// Bytes the heap may grow to.
    pub max_size: u64,
    /// Bytes in live blocks (see "What the figures mean").
    pub used_bytes: u64,
    /// Bytes in free blocks, headers included.
    pub free_bytes: u64,
    /// Bytes of the heap in use for anything: live, cached, bookkeeping and quarantined. Its
    /// capacity less this (and less the metadata and sentinel) is free.
    pub heap_bytes: u64,
    /// Size of the largest free block, header included: an allocation of up to this size less
    /// 32 bytes (the header) succeeds without growth (cached blocks aside), and no larger one
    /// does once the store is at its maximum size.
    pub largest_free: u64,
    /// Number of live blocks.
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
    /// Bytes in cached blocks: parked in thread caches for reuse
    /// ([`MemoryManager::trim`] gives a thread's back).
    pub cached_bytes: u64,
    /// Number of cached blocks.
    pub cached_blocks: u64,
    /// Bytes of bookkeeping: the store's own blocks.
    pub bookkeeping_bytes: u64,
    /// Number of bookkeeping blocks (spans and pages included).
    pub bookkeeping_blocks: u64,
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
    /// Allocates a *linked* block: `len` bytes (content unspecified) and `links` counted links
    /// to other blocks of the same manager, all empty (1 to [`crate::format::LINK_MAX`]). A
    /// linked block keeps the blocks it links alive, and releases them when it is freed; see
    /// [`MemoryBlock::set_link`]. Its length is fixed: resizing it is refused.
    fn allocate_linked(&self, links: usize, len: usize) -> Result<MemoryBlock>;
    /// Allocates a block with a *guarded area*: `len` bytes (content unspecified, under the
    /// usual rule: writable only while sole and unpublished) and then `guarded` bytes (rounded
    /// up to 8, zeroed) that any holder, in any process, reads and writes while it holds the
    /// area's robust lock ([`MemoryBlock::lock`]), shared or not. Its length is fixed.
    fn allocate_guarded(&self, len: usize, guarded: usize) -> Result<MemoryBlock>;
    /// Allocates a block with an *atomic area*: `len` bytes, then `atomic` bytes (rounded up to
    /// 8, zeroed) that any holder, in any process, updates in place through atomic views
    /// ([`MemoryBlock::view_atomic`]), shared or not. Its length is fixed.
    fn allocate_atomic(&self, len: usize, atomic: usize) -> Result<MemoryBlock>;
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
    /// when it goes idle after releasing much. Blocks other threads keep are theirs; what
    /// waits in a store's exchange (up to 4 MiB that any process's caches may take) goes back
    /// too. Takes the store lock once.
    fn trim(&self) -> Result<()>;
    /// A new reference to the block a handle names; stale or forged handles are refused.
    fn block_from_handle(&self, handle: BlockHandle) -> Result<MemoryBlock>;
    /// Resolves a weak link (a handle kept in a block's bytes, [`crate::WeakBlock::handle`]):
    /// a new reference to the block if it still lives, `Ok(None)` once it has been freed
    /// (whatever took its place since: generations are never reused). A handle that names
    /// nothing this store ever issued is an error, as with [`MemoryManager::block_from_handle`];
    /// a link into another store or heap gives `None` or that error (every store draws its
    /// generations from a range of its own, chosen at random among 2^40).
    fn upgrade(&self, link: BlockHandle) -> Result<Option<MemoryBlock>> {
        crate::weak::alive(self.block_from_handle(link))
    }
}
