//! What recoveries and salvages did, as their callers are told: the reports are the engine's
//! answer to `recover` and `salvage`, and the heap sums those of recoveries that ran inside other
//! calls (a takeover of a dead holder's lock) until a caller asks.

/// What a recovery did (or, summed, several: `recoveries` says how many).
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// How many recoveries this report sums (0: none ran).
    pub recoveries: u64,
    /// Registry slots of dead processes that were reclaimed.
    pub dead_processes: u64,
    /// Blocks freed because nobody living held them any more. Among them the blocks a dead
    /// process held as their only, unpublished reference, lent from its thread caches (their
    /// reference words read like parked ones: the caches' counters tell how many were parked).
    pub blocks_freed: u64,
    /// Bytes in those blocks and in the cached ones below, headers included.
    pub bytes_freed: u64,
    /// Blocks freed from dead processes' thread caches (parked, nobody's): as many as the
    /// caches' counters held, the figure `Stats` and `mmheap stat` call cached.
    pub cached_blocks_freed: u64,
    /// Bookkeeping blocks of dead processes freed: their caches' counter tables.
    pub bookkeeping_blocks_freed: u64,
    /// Owner references of dead processes that were dropped (a lent block's reference is not
    /// counted in its header, so it adds none).
    pub owner_refs_released: u64,
    /// Other holds that were dropped (dead processes' hold-table entries).
    pub holds_released: u64,
}

impl RecoveryReport {
    /// Adds what `other` did to this report.
    pub fn add(&mut self, other: &RecoveryReport) {
        self.recoveries += other.recoveries;
        self.dead_processes += other.dead_processes;
        self.blocks_freed += other.blocks_freed;
        self.bytes_freed += other.bytes_freed;
        self.cached_blocks_freed += other.cached_blocks_freed;
        self.bookkeeping_blocks_freed += other.bookkeeping_blocks_freed;
        self.owner_refs_released += other.owner_refs_released;
        self.holds_released += other.holds_released;
    }
}

/// A reference the store holds, as a salvage report names it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NamedReference {
    /// What held it: `"root"`, `"channel"` (a channel's hold on its ring), `"message"` (a
    /// queued message) or `"hold"` (a living process's hold-table entry).
    pub kind: &'static str,
    /// The root's or channel's name, as far as it could be read (empty for a hold).
    pub name: String,
    /// The header offset (or slot id) it named.
    pub target: u64,
}

/// What a salvage did ([`crate::MappedManager::salvage`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SalvageReport {
    /// The recovery it ran (dead processes reclaimed, blocks freed).
    pub recovery: RecoveryReport,
    /// The ranges this salvage quarantined, as (offset, bytes): damage fenced off as a used
    /// block that nothing names, never handed out and never freed. Its bytes are as they were
    /// (but for the first 32, which now say it is quarantined). `Stats::quarantined_bytes`
    /// counts every quarantined range of the store, those of earlier salvages too.
    pub quarantined: Vec<(u64, u64)>,
    /// References dropped because what they named was damaged or gone.
    pub dropped: Vec<NamedReference>,
    /// References dropped whose blocks other references keep: copies a flip made (a slot word
    /// outside its ring's queue naming a block that is queued or rooted, a second reference
    /// to a block queued unpublished). Nothing was lost with them.
    pub cleared: Vec<NamedReference>,
    /// References kept whose block ends right where a range this salvage quarantined begins:
    /// if what was damaged was that block's own size field, its last bytes are in the
    /// quarantine and its length reads shorter than it was.
    pub bordering: Vec<NamedReference>,
    /// Roots and channels whose names were damaged, under the names they have now
    /// (`salvaged-<offset of their block>`).
    pub renamed: Vec<String>,
    /// Roots and channels of a name table that their names did not find (an entry on the way
    /// damaged into an empty one, or the name flipped into another well-formed one), moved to
    /// where those names lead: found again under the names they have.
    pub names_moved: Vec<NamedReference>,
    /// References whose blocks had their generation, check word, publication or length record
    /// damaged and were given new ones: their old handles are stale (roots and channels keep
    /// naming them), and a small block whose length record was lost now reads as long as its
    /// slot (16, 32, 48 or 64 bytes).
    pub renewed: Vec<NamedReference>,
    /// References whose blocks' size field had been cut short (by less than a minimal block,
    /// so nothing else fits where the rest was) and was given back.
    pub resized: Vec<NamedReference>,
    /// Blocks (header offsets) whose shared area's footer was damaged, so that the area did
    /// not fit the block: the block is now a plain one, and the area's bytes (and its lock and
    /// state words) read as the last bytes of the block's own, which grew by them.
    pub unshared: Vec<u64>,
    /// Channels whose ring salvage repaired: it held messages outside its queue (its `head`
    /// or `tail` was damaged), and the queue was moved over the messages next to it, so they
    /// are received again (what was still outside is in [`SalvageReport::dropped`]); or a
    /// queued message's slot word was damaged in bits its block's reference word tells back,
    /// and was written again. The target is the ring.
    pub rings_repaired: Vec<NamedReference>,
    /// Whether the store's key (in the superblock) was damaged and was given back from the
    /// blocks' check words, which all seal it.
    pub key_restored: bool,
    /// Whether the store's generation counter (in the superblock) was out of range and was
    /// set again, above every generation a check word or a slot's record seals. Unpublished
    /// blocks lose their old generations (they get new ones when they are published).
    pub generation_counter_restored: bool,
    /// Name tables that could not be read (damaged, or in a range a truncation took): every
    /// root or channel they named is gone with them, and is in no other list here.
    pub lost_tables: Vec<LostTable>,
}

/// A name table salvage could not read ([`SalvageReport::lost_tables`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LostTable {
    /// `"roots table"` or `"channels table"`.
    pub kind: &'static str,
    /// The table's block, as the superblock named it.
    pub offset: u64,
    /// How many names it held, as the table's header said, if that could be read and said
    /// any (`None`: unknown; a table past a truncation reads as zeros).
    pub names: Option<u64>,
}

impl SalvageReport {
    /// Whether salvage found nothing but what a crash leaves (then it did what recovery does).
    pub fn found_damage(&self) -> bool {
        !self.quarantined.is_empty()
            || !self.dropped.is_empty()
            || !self.cleared.is_empty()
            || !self.renamed.is_empty()
            || !self.names_moved.is_empty()
            || !self.renewed.is_empty()
            || !self.resized.is_empty()
            || !self.unshared.is_empty()
            || !self.rings_repaired.is_empty()
            || self.key_restored
            || self.generation_counter_restored
            || !self.lost_tables.is_empty()
    }
}
