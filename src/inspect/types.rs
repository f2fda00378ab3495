//! What a [`super::Snapshot`] reports: plain values, `Serialize` with the `serde` feature (the
//! `mmheap` tool prints them as JSON; `docs/cli.md` has the shapes).

use super::View;

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
    /// Bytes in live blocks, headers included (as [`crate::Stats::used_bytes`]).
    pub used_bytes: u64,
    /// Bytes in free blocks.
    pub free_bytes: u64,
    /// Largest free block in bytes.
    pub largest_free: u64,
    /// `1 - largest_free / free_bytes`: 0 when all free space is one block.
    pub fragmentation: f64,
    /// Live blocks.
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
    /// Cached blocks: parked in thread caches for reuse.
    pub cached_blocks: u64,
    /// Bytes in them.
    pub cached_bytes: u64,
    /// The store's own blocks (hold tables, cache counter tables, channel rings, spans and
    /// pages; spans less their slots in use).
    pub bookkeeping_blocks: u64,
    /// Bytes in them.
    pub bookkeeping_bytes: u64,
    /// Free blocks (`None` when the heap could not be walked: the other figures are then the
    /// store's counters').
    pub free_blocks: Option<u64>,
    /// Whether the figures come from a walk of every block (else from the store's counters,
    /// because the walk stopped at damage).
    pub walked: bool,
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

/// What a block or slot is for, by the categories of [`crate::Stats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub enum BlockState {
    /// Held by users: counted in its reference word, or lent by its owner's thread cache to a
    /// `MemoryBlock` (known when the owner's caches keep nothing parked).
    #[cfg_attr(feature = "serde", serde(rename = "live"))]
    Live,
    /// Parked in a thread cache of its owner for reuse (known when every block of that owner
    /// without a count is: its caches' counters say how many they keep).
    #[cfg_attr(feature = "serde", serde(rename = "parked"))]
    Parked,
    /// Count zero with a living owner some of whose such blocks are parked and some lent: the
    /// store does not record which (lending writes nothing); [`Unreferenced`] has how many of
    /// each.
    #[cfg_attr(feature = "serde", serde(rename = "lent/parked"))]
    LentOrParked,
    /// A free block.
    #[cfg_attr(feature = "serde", serde(rename = "free"))]
    Free,
    /// One of the store's own blocks: a hold table, a cache counter table, a channel ring, a
    /// span or a publication page.
    #[cfg_attr(feature = "serde", serde(rename = "bookkeeping"))]
    Bookkeeping,
    /// A quarantined range.
    #[cfg_attr(feature = "serde", serde(rename = "quarantined"))]
    Quarantined,
}

impl BlockState {
    /// The word the tool shows (and the JSON carries).
    pub fn as_str(self) -> &'static str {
        match self {
            BlockState::Live => "live",
            BlockState::Parked => "parked",
            BlockState::LentOrParked => "lent/parked",
            BlockState::Free => "free",
            BlockState::Bookkeeping => "bookkeeping",
            BlockState::Quarantined => "quarantined",
        }
    }
}

/// One block of the heap, or one slot in use of a span.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct BlockInfo {
    /// Where it starts: a block's header offset, a slot's first byte.
    pub offset: u64,
    /// What names it, as handles, roots and `dump --offset` do: a block's header offset, a
    /// slot's id (its first byte less 24, plus its size in 16-byte units less one:
    /// `docs/format.md`, "Spans and slots").
    pub id: u64,
    /// What it is.
    pub kind: BlockKind,
    /// What it is for.
    pub state: BlockState,
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

/// The blocks and slots without a reference count that one process owns: parked in its
/// thread caches, or lent from there to its `MemoryBlock`s. The store records how many its
/// caches keep parked, not which: the rest are lent.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Unreferenced {
    /// Registry slot of the owner.
    pub owner: u32,
    /// Its blocks and slots whose reference count is zero.
    pub blocks: u64,
    /// Their bytes.
    pub bytes: u64,
    /// How many of them its caches keep parked (cached); the rest are lent (live).
    pub parked_blocks: u64,
    /// Their bytes.
    pub parked_bytes: u64,
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
    /// Length of its block (0 if it names no live block).
    pub len: u64,
    /// What is wrong with the entry, if anything (`mmheap check` reports it too): a damaged
    /// root is listed with the others, never hides them.
    pub problem: Option<&'static str>,
}

/// Live and cached blocks of one size class (block sizes in `(max_size / 2, max_size]`).
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct SizeClass {
    /// Upper bound of the class, a power of two.
    pub max_size: u64,
    /// Live and cached blocks (and slots) in the class: which of them are cached is recorded
    /// per process, not per block ([`Unreferenced`]).
    pub blocks: u64,
    /// Bytes in them.
    pub bytes: u64,
}
