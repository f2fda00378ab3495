//! Every byte offset and size of the store format, in one place.
//!
//! `docs/format.md` documents the same numbers for people; the test
//! `format_doc_matches_constants` in `tests/format_doc.rs` reads the doc and checks the two
//! agree. All integers in the file are little-endian and fixed width; nothing here is `usize`.
//!
//! The layout, from offset 0:
//!
//! | range                | what                                          |
//! |----------------------|-----------------------------------------------|
//! | `0 .. 512`           | superblock (magic, version, sizes, lock, stats) |
//! | `512 .. 1024`        | the exchange: stacks of parked blocks by class |
//! | `1024 .. 6400`       | TLSF index (bitmaps and free-list heads)      |
//! | `8192 .. 16384`      | process registry: [`SLOT_COUNT`] slots        |
//! | `16384 .. 32768`     | named roots: [`ROOT_COUNT`] entries           |
//! | `32768 .. capacity`  | the heap: blocks, then a 32-byte end sentinel  |

/// The first eight bytes of every store file.
pub const MAGIC: [u8; 8] = *b"\x89MMHEAP\n";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format version this build opens (and upgrades: `docs/format.md`).
pub const OLDEST_VERSION: u32 = 1;
/// Page size the layout assumes; also the largest alignment `allocate_aligned` accepts.
pub const PAGE_SIZE: u64 = 4096;

// ---- superblock -------------------------------------------------------------------------
/// `[u8; 8]` magic.
pub const SB_MAGIC: u64 = 0;
/// `u32` format version.
pub const SB_VERSION: u64 = 8;
/// `u32` flag bits ([`SB_FLAG_TEMPORARY`]).
pub const SB_FLAGS: u64 = 12;
/// `u64` layout fingerprint, see [`fingerprint`].
pub const SB_FINGERPRINT: u64 = 16;
/// `u64` random key of this store, folded into every block header's check word.
pub const SB_KEY: u64 = 24;
/// `u64` maximum size the store may grow to, in bytes.
pub const SB_MAX_SIZE: u64 = 32;
/// `u64` current capacity: the file is at least this long and the heap ends here.
pub const SB_CAPACITY: u64 = 40;
/// `u64` next block generation to hand out (never reused).
pub const SB_NEXT_GEN: u64 = 48;
/// `u32` the store lock word, see `crate::lock`.
pub const SB_LOCK: u64 = 56;
/// `u64` bytes in used blocks, headers included.
pub const SB_USED_BYTES: u64 = 64;
/// `u64` number of used (live) blocks.
pub const SB_LIVE_BLOCKS: u64 = 72;
/// `u64` number of times the store has grown.
pub const SB_GROWTHS: u64 = 80;
/// `u64` number of recoveries run on the store (after a process died).
pub const SB_RECOVERIES: u64 = 88;
/// `[u64; SLOT_CLASSES]` per slot size, the payload offset of the first span with a free
/// slot (0 = none), linked through `SPAN_NEXT`.
pub const SB_SPAN_LISTS: u64 = 96;
/// `u64` slots in use in all spans.
pub const SB_LIVE_SLOTS: u64 = 128;
/// `u64` bytes of the slots in use (their sizes; their reference words are the span's).
pub const SB_SLOT_BYTES: u64 = 136;
/// `u64` spans and publication pages (counted in [`SB_LIVE_BLOCKS`] as blocks).
pub const SB_SPAN_BLOCKS: u64 = 144;
/// `u64` bytes of spans and publication pages (counted in [`SB_USED_BYTES`]).
pub const SB_SPAN_BYTES: u64 = 152;
/// `u64` while the heap grows: the capacity it grows from (the old end sentinel, a zero tag,
/// lies inside the heap until the new free block is written), else 0.
pub const SB_GROW_FROM: u64 = 160;
/// `u64` bytes in quarantined ranges (damage that salvage fenced off; counted in
/// [`SB_USED_BYTES`]).
pub const SB_QUARANTINE_BYTES: u64 = 168;
/// `u64` quarantined ranges (counted in [`SB_LIVE_BLOCKS`]).
pub const SB_QUARANTINE_BLOCKS: u64 = 176;
/// `u64` dead processes whose leftovers recoveries have reclaimed, over the store's life.
pub const SB_RECOVERED_PROCESSES: u64 = 184;
/// `u64` blocks recoveries have freed for dead processes, over the store's life.
pub const SB_RECOVERED_BLOCKS: u64 = 192;
/// `u64` blocks on the exchange ([`EXCHANGE_OFFSET`]), all classes together; a report
/// (`stats`' cached figures), set again by recovery.
pub const SB_EXCHANGE_BLOCKS: u64 = 200;
/// `u64` bytes of the blocks on the exchange, headers included.
pub const SB_EXCHANGE_BYTES: u64 = 208;
/// `u64` header offset of the roots table (a block holding the named roots as a hash table,
/// `docs/format.md`, "Named roots"); 0 = none yet: the roots are in the fixed directory at
/// [`ROOTS_OFFSET`].
pub const SB_ROOT_TABLE: u64 = 216;
/// `u64` header offset of the channels' table (laid out as the roots table); 0 = none yet: the
/// channels are in the fixed directory at [`CHANNELS_OFFSET`].
pub const SB_CHANNEL_TABLE: u64 = 224;
/// `u64` the boot the store was last opened in: a hash of the kernel's boot id
/// (`/proc/sys/kernel/random/boot_id`), never 0; 0 = none recorded (a store from before the
/// field). An open that finds another boot's id knows the machine went down with the store
/// open, its page cache lost: unflushed pages may be torn, and recovery tolerates what that
/// leaves (ARCHITECTURE.md, "Durability and power loss").
pub const SB_BOOT_ID: u64 = 232;
/// Size of the superblock area that is read as fields; what follows up to [`TLSF_OFFSET`] is
/// the exchange.
pub const SUPERBLOCK_SIZE: u64 = 512;

// ---- exchange ---------------------------------------------------------------------------
/// Start of the exchange: [`EXCHANGE_CLASSES`] words, word `c` the stack of parked blocks of
/// thread-cache class `c` that any process's caches give their spills to and take their
/// refills from (word 0 is unused). Bits 0..48: header offset of the top block (0 = empty);
/// bits 48..64: tag of the process that holds the stack (0 = nobody).
pub const EXCHANGE_OFFSET: u64 = 512;
/// Words of the exchange: classes `1..EXCHANGE_CLASSES` have a stack.
pub const EXCHANGE_CLASSES: u64 = 64;
/// Exchange word: the holder's tag starts at this bit.
pub const EXCHANGE_HOLDER_SHIFT: u64 = 48;
/// Block on the exchange, payload field: `u64` header offset of the next block down (0 = the
/// last).
pub const EXCHANGE_NEXT: u64 = HEADER_SIZE;
/// Block on the exchange, payload field: `u64` seal, the keyed hash of the block's offset and
/// size (`exchange::seal`), written by the give: a take and `check` accept only a block whose
/// seal, tag and reference word agree.
pub const EXCHANGE_SEAL: u64 = HEADER_SIZE + 8;
/// Owner field of the reference word of a block on the exchange: no registry slot + 1.
pub const EXCHANGE_OWNER: u64 = 0x7ff;

/// Superblock flag: the store was made by `MappedManager::temporary` (informational).
pub const SB_FLAG_TEMPORARY: u32 = 1;

// ---- TLSF index -------------------------------------------------------------------------
/// Start of the TLSF index.
pub const TLSF_OFFSET: u64 = 1024;
/// `u64` first-level bitmap: bit `f` set iff some list in row `f` is non-empty.
pub const TLSF_FL_BITMAP: u64 = TLSF_OFFSET;
/// `[u32; FL_COUNT]` second-level bitmaps: bit `s` of word `f` set iff list `(f, s)` is non-empty.
pub const TLSF_SL_BITMAPS: u64 = TLSF_OFFSET + 8;
/// `[[u64; SL_COUNT]; FL_COUNT]` heads of the free lists (block offsets, 0 = empty).
pub const TLSF_HEADS: u64 = TLSF_OFFSET + 256;
/// log2 of the number of second-level lists per first-level row.
pub const SL_LOG: u32 = 4;
/// Second-level lists per first-level row.
pub const SL_COUNT: u64 = 1 << SL_LOG;
/// First-level rows. Row 0 holds sizes below [`SMALL_LIMIT`] in 16-byte steps; row `f >= 1`
/// holds sizes in `[2^(f+7), 2^(f+8))`, so the largest block is below `2^47` bytes.
pub const FL_COUNT: u64 = 40;
/// Blocks smaller than this are classed linearly in row 0.
pub const SMALL_LIMIT: u64 = SL_COUNT * GRANULE;
/// End of the TLSF index.
pub const TLSF_END: u64 = TLSF_HEADS + FL_COUNT * SL_COUNT * 8;

// ---- channel directory ------------------------------------------------------------------
/// Start of the channel directory (between the TLSF index and the registry).
pub const CHANNELS_OFFSET: u64 = 6400;
/// Number of channel entries.
pub const CHANNEL_COUNT: u64 = 28;
/// Bytes per channel entry.
pub const CHANNEL_SIZE: u64 = 64;
/// Channel field: `u64` header offset of the channel's ring block, 0 when the entry is empty.
/// Written last when a channel is made; the entry holds one reference on the ring.
pub const CHANNEL_RING: u64 = 0;
/// Channel field: `u32` name length in bytes.
pub const CHANNEL_NAME_LEN: u64 = 8;
/// Channel field: name bytes (UTF-8), zero-padded.
pub const CHANNEL_NAME: u64 = 16;
/// Longest channel name in bytes.
pub const CHANNEL_NAME_MAX: u64 = CHANNEL_SIZE - CHANNEL_NAME;

// Ring block payload (offsets from the payload start).
/// Ring field: `u64` number of slots.
pub const RING_CAPACITY: u64 = 0;
/// Ring field: `u64` count of messages ever received (the next slot to read is `head % capacity`).
pub const RING_HEAD: u64 = 8;
/// Ring field: `u64` count of messages ever sent (the next slot to write is `tail % capacity`).
pub const RING_TAIL: u64 = 16;
/// Ring field: `u32` futex word receivers sleep on; bumped by every send and sender departure.
pub const RING_NOT_EMPTY: u64 = 24;
/// Ring field: `u32` futex word senders sleep on; bumped by every receive and receiver departure.
pub const RING_NOT_FULL: u64 = 28;
/// Ring field: `[u64; 2]` bit `i` set iff the process in registry slot `i` has a `Sender`.
pub const RING_SENDERS: u64 = 32;
/// Ring field: `[u64; 2]` bit `i` set iff the process in registry slot `i` has a `Receiver`.
pub const RING_RECEIVERS: u64 = 48;
/// Ring field: `u32` receivers asleep (or about to sleep) on `RING_NOT_EMPTY`; a hint.
pub const RING_RX_SLEEPERS: u64 = 64;
/// Ring field: `u32` senders asleep (or about to sleep) on `RING_NOT_FULL`; a hint.
pub const RING_TX_SLEEPERS: u64 = 68;
/// Ring field: `u64` bit 0 set once a sender ever attached, bit 1 once a receiver ever did.
pub const RING_FLAGS: u64 = 72;
/// Ring field: `[u64; capacity]` header offsets of the queued message blocks.
pub const RING_SLOTS: u64 = 80;

// ---- process registry -------------------------------------------------------------------
/// Start of the process registry.
pub const REGISTRY_OFFSET: u64 = 8192;
/// Number of process slots: at most this many processes are attached at once.
pub const SLOT_COUNT: u64 = 128;
/// Bytes per slot.
pub const SLOT_SIZE: u64 = 64;
/// Slot field: `u32` state ([`SLOT_FREE`], [`SLOT_ATTACHED`]).
pub const SLOT_STATE: u64 = 0;
/// Slot field: `u32` process id (informational; liveness never rests on it).
pub const SLOT_PID: u64 = 4;
/// Slot field: `u64` process start time in clock ticks since boot (informational).
pub const SLOT_START_TIME: u64 = 8;
/// Slot field: `u64` random nonce of this attachment.
pub const SLOT_NONCE: u64 = 16;
/// Slot field: `u64` header offset of the process's hold table (0 = none): a block it owns whose
/// payload is an array of `u64` header offsets, one per other hold the process has (0 = unused).
pub const SLOT_HOLDS: u64 = 24;
/// Slot field: `u64` header offset of the process's cache counter table (0 = none): a block it
/// owns holding 64 cells of 64 bytes, one per thread cache: `u64` bytes and `u64` blocks parked
/// in that cache (written only by the cache's thread).
pub const SLOT_CACHES: u64 = 32;
/// Slot state: nobody.
pub const SLOT_FREE: u32 = 0;
/// Slot state: a process has attached and holds the slot's liveness lock.
pub const SLOT_ATTACHED: u32 = 1;
/// Store offset of registry slot `i`.
pub const fn slot_offset(i: u64) -> u64 {
    REGISTRY_OFFSET + i * SLOT_SIZE
}
/// Byte offset of slot 0's liveness lock: an advisory record lock on the store file, far past
/// its end, held by the attached process. The kernel drops it when the process dies.
pub const LIVENESS_LOCK_BASE: u64 = 1 << 62;

// ---- named roots ------------------------------------------------------------------------
/// Start of the roots directory.
pub const ROOTS_OFFSET: u64 = 16384;
/// Number of root entries.
pub const ROOT_COUNT: u64 = 256;
/// Bytes per root entry.
pub const ROOT_SIZE: u64 = 64;
/// Root field: `u64` block offset, 0 when the entry is empty. Written last when a root is set.
pub const ROOT_BLOCK: u64 = 0;
/// Root field: `u32` name length in bytes.
pub const ROOT_NAME_LEN: u64 = 8;
/// Root field: name bytes (UTF-8), zero-padded.
pub const ROOT_NAME: u64 = 16;
/// Longest root name in bytes.
pub const ROOT_NAME_MAX: u64 = ROOT_SIZE - ROOT_NAME;
/// Roots table payload field: `u64` number of entries, a power of two (at least
/// [`ROOT_TABLE_FIRST`]); the entries (each [`ROOT_SIZE`] bytes, laid out as the fixed
/// directory's) start at [`ROOT_TABLE_ENTRIES`].
pub const ROOT_TABLE_CAPACITY: u64 = 0;
/// Roots table payload field: `u64` used entries (derived: recovery sets it again).
pub const ROOT_TABLE_USED: u64 = 8;
/// Roots table payload field: `u64` emptied entries (their block 0, their name length not:
/// a probe goes on past them; derived too).
pub const ROOT_TABLE_EMPTIED: u64 = 16;
/// Roots table payload field: `u64` which table it is: 1 the roots', 2 the channels'.
pub const ROOT_TABLE_KIND: u64 = 24;
/// Roots table payload: where the entries start.
pub const ROOT_TABLE_ENTRIES: u64 = 32;
/// Entries of a new roots table.
pub const ROOT_TABLE_FIRST: u64 = 64;

// ---- heap and block headers -------------------------------------------------------------
/// First block of the heap.
pub const HEAP_START: u64 = 32768;
/// Every block offset and size is a multiple of this.
pub const GRANULE: u64 = 16;
/// Bytes of a block header; the payload starts right after it.
pub const HEADER_SIZE: u64 = 32;
/// Smallest block: header, two free-list links and a footer, rounded to the granule.
pub const MIN_BLOCK: u64 = 64;
/// Header field: `u64` tag (size, flags, slack, alignment).
pub const HDR_TAG: u64 = 0;
/// Header field: `u64` generation, unique per allocation in the store's life.
pub const HDR_GEN: u64 = 8;
/// Header field: `u64` reference word (owner references, other holds, owner slot, published).
pub const HDR_RC: u64 = 16;
/// Header field: `u64` check word: keyed hash of (offset, generation).
pub const HDR_CHECK: u64 = 24;
/// Free block payload field: `u64` offset of the next block in the same free list (0 = none).
pub const FREE_NEXT: u64 = HEADER_SIZE;
/// Free block payload field: `u64` offset of the previous block in the free list (0 = none).
pub const FREE_PREV: u64 = HEADER_SIZE + 8;
/// Bytes of the end sentinel (a header whose size is 0) at `capacity - SENTINEL_SIZE`.
pub const SENTINEL_SIZE: u64 = HEADER_SIZE;

// ---- link tables: the end of a linked block's length ----------------------------------

/// Link table field, counted back from the end of a linked block's length: `u64` footer, the
/// number of link cells in bits 0..32 and the padding between the user's bytes and the cells
/// (0..8) in bits 32..36.
pub const LINK_FOOTER: u64 = 8;
/// Link table field, counted back from the end of the length: `u64` chain word, 0 but while
/// the block is being freed (the next block whose links wait to be released).
pub const LINK_CHAIN: u64 = 16;
/// Bytes of one link cell (the cells end where the chain word starts): 0, or the header
/// offset (or slot id) of the block the link counts.
pub const LINK_CELL: u64 = 8;
/// Most link cells one block may have.
pub const LINK_MAX: u64 = 1 << 24;

// ---- typed values: a block holding an rkyv archive (src/value.rs) -------------------

/// Value field: `u64` fingerprint of the archived type (`mmheap::value::fingerprint`).
pub const VALUE_FINGERPRINT: u64 = 0;
/// Value field: `u32` length of the archive in bytes (the block's length less [`VALUE_ARCHIVE`]).
pub const VALUE_LEN: u64 = 8;
/// Value field: `u32` value layout version, [`VALUE_VERSION_1`].
pub const VALUE_VERSION: u64 = 12;
/// Where the archive starts (16-aligned, as rkyv's archives want), and the value header's size.
pub const VALUE_ARCHIVE: u64 = 16;
/// The value layout version this crate writes and reads.
pub const VALUE_VERSION_1: u32 = 1;

// ---- containers: SharedVec, SharedMap, SharedBytesMap (src/containers) ---------------

/// Container field (the top block's bytes): `u64` magic, [`CONTAINER_MAGIC_WORD`].
pub const CONTAINER_MAGIC: u64 = 0;
/// The container magic: "mmhcont1", little-endian.
pub const CONTAINER_MAGIC_WORD: u64 = u64::from_le_bytes(*b"mmhcont1");
/// Container field: `u32` kind: [`CONTAINER_VEC`], [`CONTAINER_MAP`] or [`CONTAINER_BYTES_MAP`].
pub const CONTAINER_KIND: u64 = 8;
/// Container field: `u32` layout version, 1.
pub const CONTAINER_VERSION: u64 = 12;
/// Container field: `u64` fingerprint of the element (or key and value) types.
pub const CONTAINER_TYPES: u64 = 16;
/// Container field: `u64` elements per chunk (a vector's); 0 for a map.
pub const CONTAINER_PARAM: u64 = 24;
/// Bytes of the container header (the top block's user bytes; its 2 links follow).
pub const CONTAINER_HEADER: u64 = 32;
/// Container kind: a `SharedVec`.
pub const CONTAINER_VEC: u32 = 1;
/// Container kind: a `SharedMap` (Pod keys and values).
pub const CONTAINER_MAP: u32 = 2;
/// Container kind: a `SharedBytesMap` (byte-string keys and values).
pub const CONTAINER_BYTES_MAP: u32 = 3;
/// The top block's link to the lock block (a block with a guarded area).
pub const CONTAINER_LOCK_LINK: u64 = 0;
/// The top block's link to the current state: a vector's chunk table, a map's directory.
pub const CONTAINER_STATE_LINK: u64 = 1;
/// Guarded area field of the lock block: `u64` a map's entry count (kept under the lock;
/// recounted from the segments after a holder died).
pub const CONTAINER_COUNT: u64 = 0;
/// Bytes of the lock block's guarded area.
pub const CONTAINER_GUARDED: u64 = 8;
/// A vector's chunk table's link to its tail chunk; full chunks are links 1 to `f`.
pub const VEC_TAIL_LINK: u64 = 0;
/// Chunk field: `u64` the vector's length (read from the tail chunk only).
pub const VEC_CHUNK_LEN: u64 = 0;
/// Where a chunk's elements start.
pub const VEC_CHUNK_ELEMENTS: u64 = 16;
/// Bytes of elements a chunk holds at most (elements per chunk: this over the element size).
pub const VEC_CHUNK_BYTES: u64 = 1024;
/// Segment field: `u64` number of entries.
pub const MAP_SEG_COUNT: u64 = 0;
/// Where a segment's entries start.
pub const MAP_SEG_ENTRIES: u64 = 8;
/// Entry field (from the entry's start): `u64` the key's hash.
pub const MAP_ENTRY_HASH: u64 = 0;
/// Entry field: `u32` key length.
pub const MAP_ENTRY_KEY_LEN: u64 = 8;
/// Entry field: `u32` value length.
pub const MAP_ENTRY_VALUE_LEN: u64 = 12;
/// Bytes of an entry's header; key and value follow, the entry padded to 8 bytes.
pub const MAP_ENTRY_HEADER: u64 = 16;
/// Entries per segment, on average, at which a map's directory doubles.
pub const MAP_LOAD: u64 = 8;

// ---- spans: blocks of small slots -------------------------------------------------------
/// Bytes of a span block, header included. Its payload starts at a multiple of this, so the
/// span of a slot is found by rounding the slot's id down to it.
pub const SPAN_SIZE: u64 = 65536;
/// log2 of the alignment a span's payload is carved with ([`SPAN_SIZE`]).
pub const SPAN_ALIGN_LOG2: u32 = 16;
/// Span field (from the span's payload): `u64` check word, the keyed hash of the payload's
/// offset (`check_word(key, offset, SPAN_CHECK_GEN)`).
pub const SPAN_CHECK: u64 = 0;
/// Span field: `u64` slot size in bytes, one of [`SLOT_CLASSES`] sizes (16, 32, 48, 64).
pub const SPAN_CLASS: u64 = 8;
/// Span field: `u64` slots handed out at least once since the span was made: slots at this
/// index and above have never been used, and their reference words are not read.
pub const SPAN_BUMP: u64 = 16;
/// Span field: `u64` slots in use (a reference word that is not zero).
pub const SPAN_USED: u64 = 24;
/// Span field: `u64` index + 1 of the first slot on the span's free list (0 = empty); a free
/// slot's first eight payload bytes hold the next one's index + 1.
pub const SPAN_FREE_HEAD: u64 = 32;
/// Span field: `u64` payload offset of the next span of the same class with a free slot
/// (0 = none); the list starts at [`SB_SPAN_LISTS`].
pub const SPAN_NEXT: u64 = 40;
/// Span field: `u64` payload offset of the previous span on that list (0 = it is the first).
pub const SPAN_PREV: u64 = 48;
/// Span field: `u64` header offset of the span's publication page (0 = none yet).
pub const SPAN_PAGE: u64 = 56;
/// Span field: `[u64; slots]` the slots' reference words (as a block header's `HDR_RC`).
pub const SPAN_RC: u64 = 64;
/// The generation folded into a span's check word (no block is ever given it).
pub const SPAN_CHECK_GEN: u64 = u64::MAX;
/// Number of slot sizes: 16, 32, 48 and 64 bytes.
pub const SLOT_CLASSES: u64 = 4;
/// Largest payload a slot holds.
pub const SLOT_MAX: u64 = SLOT_CLASSES * GRANULE;
/// Bit 3 of a slot's id: a slot is named by `payload - HEADER_SIZE + SLOT_MARK + size / 16 - 1`,
/// so its payload is found as a block's is (the id rounded down to the granule, plus the header
/// size), ids of slots and block header offsets never coincide, and the id says the slot's
/// size (bits 0..2) without a look at its span.
pub const SLOT_MARK: u64 = 8;
/// Publication page field (from the page's payload): `u64` payload offset of its span.
pub const PAGE_SPAN: u64 = 0;
/// Publication page field: `[u64; slots]` per slot, written when the slot is published: its
/// generation in bits 0..56, its slot size minus its length in bits 56..64.
pub const PAGE_ENTRIES: u64 = 8;

/// The payload offset of the block or slot named `id` (a block's header offset, or a slot's
/// id, which lies [`SLOT_MARK`] bytes above where the slot's header would be).
#[inline]
pub const fn payload_of(id: u64) -> u64 {
    (id & !(GRANULE - 1)) + HEADER_SIZE
}

/// Smallest store: the metadata, a minimal block and the sentinel, rounded to a page.
pub const MIN_STORE_SIZE: u64 = HEAP_START + PAGE_SIZE;

/// The layout fingerprint stored in the superblock: a hash of every number two builds must
/// agree on to share a store. A build that changes any of them writes a different
/// fingerprint and refuses stores with the old one (in the manner of LMDB's lock format).
pub const fn fingerprint() -> u64 {
    fingerprint_of(FORMAT_VERSION)
}

/// The fingerprint of format `version` (1 or 2): version 2 folds in the numbers of spans.
pub const fn fingerprint_of(version: u32) -> u64 {
    let parts = [
        version as u64,
        PAGE_SIZE,
        SUPERBLOCK_SIZE,
        TLSF_OFFSET,
        TLSF_HEADS,
        SL_COUNT,
        FL_COUNT,
        REGISTRY_OFFSET,
        SLOT_COUNT,
        SLOT_SIZE,
        ROOTS_OFFSET,
        ROOT_COUNT,
        ROOT_SIZE,
        HEAP_START,
        GRANULE,
        HEADER_SIZE,
        MIN_BLOCK,
        LIVENESS_LOCK_BASE,
        SPAN_SIZE,
        SPAN_RC,
        SLOT_CLASSES,
        SLOT_MARK,
    ];
    let n = if version >= 2 { parts.len() } else { parts.len() - 4 };
    let mut h: u64 = FNV_BASIS;
    let mut i = 0;
    while i < n {
        h = mix(h ^ parts[i]);
        i += 1;
    }
    h
}

/// FNV-1a's 64-bit offset basis: where [`fnv1a`] starts.
pub(crate) const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a, 64 bits, of `bytes` continued from `h` ([`FNV_BASIS`] to start): the hash of names in
/// roots tables, of keys in shared maps, of type names in value and container fingerprints.
pub(crate) fn fnv1a(h: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// A 64-bit finaliser (splitmix64's); used for the fingerprint and the header check word.
pub const fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

const _: () = {
    assert!(TLSF_SL_BITMAPS + FL_COUNT * 4 <= TLSF_HEADS);
    assert!(TLSF_END <= CHANNELS_OFFSET);
    assert!(CHANNELS_OFFSET + CHANNEL_COUNT * CHANNEL_SIZE <= REGISTRY_OFFSET);
    assert!(SLOT_COUNT <= 128, "ring endpoint bitmaps have 128 bits");
    assert!(REGISTRY_OFFSET + SLOT_COUNT * SLOT_SIZE <= ROOTS_OFFSET);
    assert!(ROOTS_OFFSET + ROOT_COUNT * ROOT_SIZE <= HEAP_START);
    assert!(HEAP_START % PAGE_SIZE == 0);
    assert!(HEADER_SIZE % GRANULE == 0 && MIN_BLOCK % GRANULE == 0);
    assert!(HEADER_SIZE + 16 + 8 <= MIN_BLOCK);
    assert!(SB_SPAN_BYTES + 8 <= SUPERBLOCK_SIZE);
    assert!(SB_RECOVERIES + 8 <= SB_SPAN_LISTS && SB_SPAN_LISTS + SLOT_CLASSES * 8 <= SB_LIVE_SLOTS);
    assert!(SLOT_MARK < GRANULE && HEADER_SIZE >= SLOT_MARK);
    assert!(SB_EXCHANGE_BYTES + 8 <= SB_ROOT_TABLE && SB_RECOVERED_BLOCKS + 8 <= SB_EXCHANGE_BLOCKS);
    assert!(SB_CHANNEL_TABLE == SB_ROOT_TABLE + 8 && SB_CHANNEL_TABLE + 8 <= SUPERBLOCK_SIZE);
    assert!(SB_BOOT_ID == SB_CHANNEL_TABLE + 8 && SB_BOOT_ID + 8 <= SUPERBLOCK_SIZE);
    assert!(SUPERBLOCK_SIZE <= EXCHANGE_OFFSET && EXCHANGE_OFFSET + EXCHANGE_CLASSES * 8 <= TLSF_OFFSET);
    assert!(EXCHANGE_OWNER > SLOT_COUNT && EXCHANGE_SEAL + 8 <= MIN_BLOCK);
    assert!(SL_COUNT <= 32);
};
