//! What the heap's space is: the five categories every figure of the crate and the tool uses,
//! *live*, *cached*, *bookkeeping*, *free* and *quarantined*, defined once in the
//! documentation of [`crate::Stats`]. Here they are derived, from the store's counters
//! ([`Heap::figures`], for `stats`) or from a walk of every block and slot ([`Heap::census`],
//! for checks and inspection).
//!
//! What the store records, and so what can be told (`core/header.rs`, `cache/`):
//! - a reference word with a count above zero: a block users hold (*live*);
//! - count zero with the exchange's owner (`cache/exchange.rs`): parked on the exchange
//!   (*cached*), as the superblock counts them;
//! - count zero with an owner: parked in one of the owner's thread caches (*cached*), or lent
//!   from there to a `MemoryBlock` of the owner that is its only reference (*live*), or being
//!   released. Lending writes nothing into the header, by design (ARCHITECTURE.md, "Lent
//!   blocks"), so the two look the same; what the store does record is how many blocks and
//!   bytes each thread cache keeps parked, in its counter cell. So of an owner's blocks with
//!   count zero, as many as its cells say are cached and the rest live; a block is known to be
//!   parked only when all of them are, known to be lent only when none is parked;
//! - the store's own blocks are named from outside the heap: hold tables and cache counter
//!   tables by the registry, channel rings by the channel directory; spans by their tag,
//!   publication pages by theirs. A span's bytes are bookkeeping but for its slots in use,
//!   which are blocks of their slot size, live or cached as above.

use crate::engine::core::check::CheckReport;
use crate::engine::core::header::{rc, Tag};
use crate::engine::core::span::Slot;
use crate::engine::heap::Heap;
use crate::error::{Error, Result};
use crate::format::*;
use crate::manager::Stats;

/// Blocks and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Amount {
    pub(crate) blocks: u64,
    pub(crate) bytes: u64,
}

impl Amount {
    fn add(&mut self, blocks: u64, bytes: u64) {
        self.blocks = self.blocks.saturating_add(blocks);
        self.bytes = self.bytes.saturating_add(bytes);
    }

    fn plus(self, o: Amount) -> Amount {
        Amount { blocks: self.blocks.saturating_add(o.blocks), bytes: self.bytes.saturating_add(o.bytes) }
    }

    fn minus(self, o: Amount) -> Amount {
        Amount { blocks: self.blocks.saturating_sub(o.blocks), bytes: self.bytes.saturating_sub(o.bytes) }
    }

    fn min(self, o: Amount) -> Amount {
        Amount { blocks: self.blocks.min(o.blocks), bytes: self.bytes.min(o.bytes) }
    }
}

/// The heap's space by category.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Figures {
    pub(crate) live: Amount,
    pub(crate) cached: Amount,
    pub(crate) bookkeeping: Amount,
    pub(crate) free: Amount,
    pub(crate) quarantined: Amount,
}

impl Figures {
    /// Puts the figures into a check's report (`CheckReport`'s fields say which goes where).
    pub(crate) fn fill(&self, r: &mut CheckReport) {
        (r.used_blocks, r.used_bytes) = (self.live.blocks, self.live.bytes);
        (r.cached_blocks, r.cached_bytes) = (self.cached.blocks, self.cached.bytes);
        (r.bookkeeping_blocks, r.bookkeeping_bytes) = (self.bookkeeping.blocks, self.bookkeeping.bytes);
        (r.free_blocks, r.free_bytes) = (self.free.blocks, self.free.bytes);
        (r.quarantined_blocks, r.quarantined_bytes) = (self.quarantined.blocks, self.quarantined.bytes);
        r.blocks = [self.live, self.cached, self.bookkeeping, self.free]
            .iter()
            .fold(0, |n, a| n.saturating_add(a.blocks));
    }
}

/// The store's own blocks that the registry and the channel directory name, and what the
/// thread caches keep parked, by owner.
pub(crate) struct Own {
    /// Hold tables, cache counter tables and channel rings: (header offset, size), sorted,
    /// each a used block users could hold (checked only that far: this is a report).
    pub(crate) blocks: Vec<(u64, u64)>,
    /// (owner field: registry slot + 1, what its caches' cells say they keep parked).
    pub(crate) parked: Vec<(u64, Amount)>,
}

impl Own {
    fn tables(&self) -> Amount {
        let mut a = Amount::default();
        self.blocks.iter().for_each(|&(_, size)| a.add(1, size));
        a
    }

    fn parked_total(&self) -> Amount {
        self.parked.iter().fold(Amount::default(), |a, &(_, p)| a.plus(p))
    }

    /// Whether the block whose header is at `off` is one of the store's own.
    pub(crate) fn names(&self, off: u64) -> bool {
        self.blocks.binary_search_by_key(&off, |&(o, _)| o).is_ok()
    }

    fn parked_by(&self, owner: u64) -> Amount {
        self.parked.iter().filter(|&&(o, _)| o == owner).fold(Amount::default(), |a, &(_, p)| a.plus(p))
    }
}

/// What one block or slot in use is, as far as its own words tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    Free,
    Quarantined,
    /// One of the store's own blocks (a table, a ring, a span or a page).
    Bookkeeping,
    /// Counted in its reference word.
    Held,
    /// Neither a count nor an owner: nobody's, a problem a check reports (counted live, as the
    /// counters count it).
    Ownerless0,
    /// Count zero with this owner (registry slot + 1): parked, lent or being released.
    CountZero(u64),
}

/// How an owner's blocks with count zero split, from its caches' cells.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Split {
    /// Its blocks and slots with count zero.
    pub(crate) count_zero: Amount,
    /// What its caches' cells say they keep parked.
    pub(crate) parked: Amount,
}

impl Split {
    /// The cached part: as much as the cells say, at most all of them.
    pub(crate) fn cached(&self) -> Amount {
        self.parked.min(self.count_zero)
    }

    /// Whether every block of the owner with count zero is parked (then each is known to be).
    pub(crate) fn all_parked(&self) -> bool {
        self.parked.blocks >= self.count_zero.blocks
    }

    /// Whether none is (then each is known to be lent).
    pub(crate) fn none_parked(&self) -> bool {
        self.parked.blocks == 0
    }
}

/// One block, or one slot in use, as a census passes it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Item {
    /// Header offset of a block, id of a slot.
    pub(crate) id: u64,
    /// The block's tag (for a slot, its span's).
    pub(crate) tag: Tag,
    /// The slot, for a slot.
    pub(crate) slot: Option<Slot>,
    /// Block size with the header, or the slot size.
    pub(crate) size: u64,
    /// The reference word (0 for free blocks, quarantined ranges, spans and pages).
    pub(crate) word: u64,
    pub(crate) seen: Seen,
}

/// The result of a walk: the figures, and how each owner's blocks with count zero split.
#[derive(Clone, Debug, Default)]
pub(crate) struct Census {
    pub(crate) figures: Figures,
    /// By owner field (registry slot + 1).
    pub(crate) splits: Vec<(u64, Split)>,
}

impl Census {
    /// How the blocks with count zero of `owner` (registry slot + 1) split.
    pub(crate) fn split(&self, owner: u64) -> Split {
        self.splits.iter().find(|&&(o, _)| o == owner).map(|&(_, s)| s).unwrap_or_default()
    }
}

impl Heap {
    /// The store's own blocks and the caches' parked counts, as the registry, the channel
    /// directory and the counter tables say (read from the store: only a report; a name that
    /// is no used block counts nothing).
    pub(crate) fn own(&self) -> Result<Own> {
        let used = |t: u64| self.core().block_at(t).ok().filter(|t| t.is_plain_used()).map(|t| t.size());
        let (mut blocks, mut parked) = (Vec::new(), Vec::new());
        let mut counter_table = |owner: u64, t: u64, blocks: &mut Vec<(u64, u64)>| {
            if let Some(size) = used(t).filter(|&s| crate::engine::heap::cache::can_be_counter_table(s)) {
                blocks.push((t, size));
                let (bytes, n) = self.parked_in(t).unwrap_or((0, 0));
                parked.push((owner, Amount { blocks: n, bytes }));
            }
        };
        for i in 0..SLOT_COUNT {
            if self.region.load32(slot_offset(i) + SLOT_STATE)? == SLOT_FREE {
                continue;
            }
            counter_table(i + 1, self.region.load(slot_offset(i) + SLOT_CACHES)?, &mut blocks);
        }
        if self.slot().is_none() {
            counter_table(u64::from(self.tag()), self.own_counter_table(), &mut blocks);
        }
        // The exchange's blocks are cached for whichever cache takes them next.
        let (n, bytes) = crate::engine::heap::cache::exchange::totals(self);
        parked.push((EXCHANGE_OWNER, Amount { blocks: n, bytes }));
        // What the kinds of reference keep for themselves: hold tables, channel rings.
        let mut kept = Vec::new();
        for kind in crate::engine::kinds::KINDS {
            kind.bookkeeping(self, &mut kept)?;
        }
        blocks.extend(kept.into_iter().filter_map(|b| used(b).map(|size| (b, size))));
        blocks.sort_unstable();
        blocks.dedup_by_key(|&mut (o, _)| o);
        Ok(Own { blocks, parked })
    }

    /// The figures from the store's counters, without a walk (what `stats` reports): the
    /// cached blocks are what the cells say, all of them.
    pub(crate) fn figures(&self) -> Result<Figures> {
        let own = self.own()?;
        let r = &self.region;
        let core_used = Amount { blocks: r.load(SB_LIVE_BLOCKS)?, bytes: r.load(SB_USED_BYTES)? };
        let slots = Amount { blocks: r.load(SB_LIVE_SLOTS)?, bytes: r.load(SB_SLOT_BYTES)? };
        let spans = Amount { blocks: r.load(SB_SPAN_BLOCKS)?, bytes: r.load(SB_SPAN_BYTES)? };
        let quarantined =
            Amount { blocks: r.load(SB_QUARANTINE_BLOCKS)?, bytes: r.load(SB_QUARANTINE_BYTES)? };
        let tables = own.tables();
        // Spans and pages are bookkeeping but for their slots in use (`Amount::minus` keeps
        // the spans' count: slots are not taken from it).
        let span_room = Amount { blocks: spans.blocks, bytes: spans.bytes.saturating_sub(slots.bytes) };
        let users = core_used.plus(slots).minus(tables).minus(spans).minus(quarantined);
        // What the cells and the exchange's totals say, within what users have (the counts
        // are the store's: damaged ones must not make up blocks).
        let cached = own.parked_total().min(users);
        let heap = self.core().capacity()?.saturating_sub(HEAP_START + SENTINEL_SIZE);
        let mut f = Figures {
            live: users.minus(cached),
            cached,
            bookkeeping: tables.plus(span_room),
            free: Amount { blocks: 0, bytes: heap.saturating_sub(core_used.bytes) },
            quarantined,
        };
        self.count_slabs(&mut f);
        Ok(f)
    }

    /// An in-process heap's slabs are core blocks to the core (counted live so far, as raw
    /// blocks are); their blocks in use are the users', the rest of them bookkeeping.
    fn count_slabs(&self, f: &mut Figures) {
        let Some(slabs) = &self.slabs else { return };
        let t = slabs.totals();
        let core = Amount { blocks: t.core_blocks, bytes: t.core_bytes };
        let live = Amount { blocks: t.live_blocks, bytes: t.live_bytes };
        f.live = f.live.minus(core).plus(live);
        f.bookkeeping =
            f.bookkeeping.plus(Amount { blocks: core.blocks, bytes: core.bytes.saturating_sub(live.bytes) });
    }

    /// Walks every block and every slot in use, in address order (a span's slots after it),
    /// passing each to `each`, and counts them by category. A heap that does not walk to its
    /// end stops the census there: the figures count what came before, and the error says
    /// where.
    pub(crate) fn census(&self, mut each: impl FnMut(&Item)) -> (Census, Option<Error>) {
        let own = match self.own() {
            Ok(own) => own,
            Err(e) => return (Census::default(), Some(e)),
        };
        let mut tally = Tally::default();
        let mut ticker = crate::progress::Ticker::new("counting", self.core().capacity().unwrap_or(0));
        let walked = self.core().walk(|b| {
            ticker.tick(b.offset);
            let item = self.item(&own, b.offset, b.tag);
            tally.count(&item);
            each(&item);
            if b.tag.is_span() && !b.tag.is_free() {
                self.slots_of(b.offset, b.tag, &mut tally, &mut each)?;
            }
            Ok(())
        });
        ticker.finish();
        let mut census = tally.resolve(&own);
        self.count_slabs(&mut census.figures);
        (census, walked.err())
    }

    /// The block whose header is at `off`, as its words tell.
    fn item(&self, own: &Own, off: u64, tag: Tag) -> Item {
        let (word, seen) = if tag.is_free() {
            (0, Seen::Free)
        } else if tag.is_quarantine() {
            (0, Seen::Quarantined)
        } else if !tag.is_plain_used() {
            (0, Seen::Bookkeeping)
        } else {
            let w = self.region.load(off + HDR_RC).unwrap_or(0);
            (w, if own.names(off) { Seen::Bookkeeping } else { seen_in(w) })
        };
        Item { id: off, tag, slot: None, size: tag.size(), word, seen }
    }

    /// The slots in use of the span whose header is at `off`: each to `each`, counted (their
    /// bytes are taken from the span's, which [`Tally::count`] counted as bookkeeping).
    fn slots_of(&self, off: u64, tag: Tag, tally: &mut Tally, each: &mut impl FnMut(&Item)) -> Result<()> {
        for slot in self.core().slots_handed_out(off + HEADER_SIZE)? {
            let w = self.region.load(slot.rc_offset())?;
            if w == 0 {
                continue;
            }
            let item =
                Item { id: slot.id(), tag, slot: Some(slot), size: slot.class, word: w, seen: seen_in(w) };
            tally.figures.bookkeeping.bytes = tally.figures.bookkeeping.bytes.saturating_sub(slot.class);
            tally.count(&item);
            each(&item);
        }
        Ok(())
    }
}

/// What a reference word of a block or slot in use says of it.
fn seen_in(w: u64) -> Seen {
    match (rc::count(w), rc::owner(w)) {
        (0, 0) => Seen::Ownerless0,
        (0, owner) => Seen::CountZero(owner),
        _ => Seen::Held,
    }
}

/// A census in progress.
#[derive(Default)]
struct Tally {
    /// Live but for the blocks with count zero, which `resolve` shares out.
    figures: Figures,
    count_zero: Vec<(u64, Amount)>,
}

impl Tally {
    fn count(&mut self, item: &Item) {
        let f = &mut self.figures;
        let size = item.size;
        match item.seen {
            Seen::Free => f.free.add(1, size),
            Seen::Quarantined => f.quarantined.add(1, size),
            Seen::Bookkeeping => f.bookkeeping.add(1, size),
            Seen::Held | Seen::Ownerless0 => f.live.add(1, size),
            Seen::CountZero(owner) => match self.count_zero.iter_mut().find(|(o, _)| *o == owner) {
                Some((_, a)) => a.add(1, size),
                None => self.count_zero.push((owner, Amount { blocks: 1, bytes: size })),
            },
        }
    }

    /// Each owner's blocks with count zero: as many cached as its cells say, the rest live.
    fn resolve(self, own: &Own) -> Census {
        let mut figures = self.figures;
        let mut splits = Vec::new();
        for (owner, count_zero) in self.count_zero {
            let split = Split { count_zero, parked: own.parked_by(owner) };
            figures.cached = figures.cached.plus(split.cached());
            figures.live = figures.live.plus(count_zero.minus(split.cached()));
            splits.push((owner, split));
        }
        Census { figures, splits }
    }
}

/// The whole-heap reports: statistics and the check, with the blocks counted by category.
impl Heap {
    pub(crate) fn stats(&self) -> Result<Stats> {
        let _g = self.lock()?;
        self.stats_unlocked()
    }

    /// The figures [`Heap::stats`] reports, read as they are (the caller holds the lock, or
    /// accepts figures from different moments: a store opened read-only).
    pub(crate) fn stats_unlocked(&self) -> Result<Stats> {
        let f = self.figures()?;
        Ok(Stats {
            capacity: self.core().capacity()?,
            max_size: self.max_size()?,
            used_bytes: f.live.bytes,
            live_blocks: f.live.blocks,
            cached_bytes: f.cached.bytes,
            cached_blocks: f.cached.blocks,
            bookkeeping_bytes: f.bookkeeping.bytes,
            bookkeeping_blocks: f.bookkeeping.blocks,
            free_bytes: f.free.bytes,
            heap_bytes: self.region.load(SB_USED_BYTES)?,
            largest_free: self.core().largest_free()?,
            attached_processes: self.attached(),
            growths: self.region.load(SB_GROWTHS)?,
            recoveries: self.region.load(SB_RECOVERIES)?,
            recovered_processes: self.region.load(SB_RECOVERED_PROCESSES)?,
            quarantined_bytes: f.quarantined.bytes,
        })
    }

    /// The core's check, with the blocks counted by category ([`Heap::census`]; a heap the
    /// census cannot walk to its end keeps the core's counts, and the core reported why).
    pub(crate) fn check(&self) -> Result<CheckReport> {
        let _g = self.lock()?;
        let mut report = self.core().check(self.key())?;
        if let (census, None) = self.census(|_| {}) {
            census.figures.fill(&mut report);
        }
        Ok(report)
    }
}
