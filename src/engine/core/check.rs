//! The consistency check: a full walk of the heap and the free structures.

use std::collections::HashSet;

use crate::engine::core::header::{check_word, rc};
use crate::engine::core::tlsf::Core;
use crate::error::Result;
use crate::format::*;

/// One inconsistency found by a check.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// What is wrong.
    pub what: &'static str,
    /// Store offset where it was found.
    pub offset: u64,
}

/// What a consistency check found, and the heap's blocks counted by category: *live*,
/// *cached*, *bookkeeping*, *free* and *quarantined*, as the documentation of [`crate::Stats`]
/// defines them (the same figures `stats` gives from the store's counters, here from a walk of
/// every block and slot; `used` means live, as in `Stats`).
///
/// A store is sound when [`CheckReport::is_sound`]; a structure too broken to walk at all is
/// reported as [`crate::Error::Corrupt`] instead.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckReport {
    /// Blocks in the heap: live, cached, bookkeeping and free (slots in use count as blocks
    /// of their slot size, spans and pages as bookkeeping blocks; quarantined ranges not).
    pub blocks: u64,
    /// Live blocks: blocks and slots users hold.
    pub used_blocks: u64,
    /// Free blocks.
    pub free_blocks: u64,
    /// Bytes in live blocks, headers included (a slot counts its size).
    pub used_bytes: u64,
    /// Bytes in free blocks.
    pub free_bytes: u64,
    /// Cached blocks: parked in thread caches for their owner's next allocations.
    pub cached_blocks: u64,
    /// Bytes in them.
    pub cached_bytes: u64,
    /// The store's own blocks: hold tables, cache counter tables, channel rings, spans and
    /// their publication pages.
    pub bookkeeping_blocks: u64,
    /// Bytes in them (a span's less its slots in use).
    pub bookkeeping_bytes: u64,
    /// Registry slots of processes that died and have not been recovered yet (their blocks
    /// are not problems, but leaks until `recover` runs).
    pub dead_processes: u64,
    /// Quarantined ranges: damage that salvage fenced off (not problems: never handed out,
    /// never freed; not counted in `blocks`).
    pub quarantined_blocks: u64,
    /// Bytes in them.
    pub quarantined_bytes: u64,
    /// Blocks kept alive only by cycles of links that no root, channel, hold or living process
    /// reaches (and what only such cycles link): not problems, but leaks until a recovery that
    /// collects them runs (`MappedManager::collect_cycles`, `DefaultManager::collect_cycles`).
    /// Header offsets or slot ids, as [`crate::BlockHandle::offset`] (a `MemoryBlock`'s
    /// `offset()` is its payload's, 32 bytes further for a block with a header).
    pub cycle_blocks: Vec<u64>,
    /// The inconsistencies, in address order of discovery.
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// Whether no problem was found.
    pub fn is_sound(&self) -> bool {
        self.problems.is_empty()
    }

    pub(super) fn flag(&mut self, what: &'static str, offset: u64) {
        self.problems.push(Problem { what, offset });
    }
}

impl Core<'_> {
    /// Walks the heap and the free lists and reports every inconsistency. `key` is the store
    /// key for the header check words.
    pub(crate) fn check(&self, key: u64) -> Result<CheckReport> {
        let mut rep = CheckReport::default();
        let mut free_set = HashSet::new();
        let mut prev_free = false;
        let (mut spans, mut pages) = (Vec::new(), Vec::new());
        let mut ticker = crate::progress::Ticker::new("checking", self.capacity()?);
        self.walk(|b| {
            ticker.tick(b.offset);
            rep.blocks += 1;
            let (off, t) = (b.offset, b.tag);
            if t.prev_free() != prev_free {
                rep.flag("previous-free flag disagrees with the previous block", off);
            }
            if t.is_free() {
                rep.free_blocks += 1;
                rep.free_bytes += t.size();
                free_set.insert(off);
                if prev_free {
                    rep.flag("two adjacent free blocks", off);
                }
                if self.read(off + t.size() - 8)? != t.size() {
                    rep.flag("free block footer disagrees with its size", off);
                }
            } else {
                rep.used_blocks += 1;
                rep.used_bytes += t.size();
                if t.is_span() {
                    spans.push(off + HEADER_SIZE);
                } else if t.is_quarantine() {
                    rep.quarantined_blocks += 1;
                    rep.quarantined_bytes += t.size();
                } else if t.is_page() {
                    pages.push(off);
                } else {
                    self.check_used(key, off, &mut rep)?;
                }
            }
            prev_free = t.is_free();
            Ok(())
        })?;
        ticker.finish();
        let end = self.capacity()? - SENTINEL_SIZE;
        if self.tag(end)?.prev_free() != prev_free {
            rep.flag("previous-free flag disagrees with the previous block", end);
        }
        self.check_lists(&free_set, &mut rep)?;
        let totals = self.check_spans(key, &spans, &pages, &mut rep)?;
        if self.read(SB_USED_BYTES)? != rep.used_bytes {
            rep.flag("used-bytes counter disagrees with the blocks", SB_USED_BYTES);
        }
        if self.read(SB_LIVE_BLOCKS)? != rep.used_blocks {
            rep.flag("live-blocks counter disagrees with the blocks", SB_LIVE_BLOCKS);
        }
        if self.read(SB_QUARANTINE_BLOCKS)? != rep.quarantined_blocks
            || self.read(SB_QUARANTINE_BYTES)? != rep.quarantined_bytes
        {
            rep.flag("quarantine counters disagree with the blocks", SB_QUARANTINE_BYTES);
        }
        // Generations must fit a slot's page record (`recover` refuses a counter beyond that,
        // salvage sets it again).
        let next_gen = self.read(SB_NEXT_GEN)?;
        if next_gen == 0 || next_gen > crate::engine::core::span::PAGE_GEN_MASK {
            rep.flag("generation counter out of range", SB_NEXT_GEN);
        }
        if self.read(SB_GROW_FROM)? != 0 {
            rep.flag("growth left unfinished", SB_GROW_FROM);
        }
        // Slots in use are blocks; spans and their pages are bookkeeping but for those slots;
        // quarantined ranges are apart (as `stats` counts them). A store's tables, rings and
        // parked blocks are sorted out by `Heap::check`, which knows them.
        rep.used_blocks =
            (rep.used_blocks + totals.slots).saturating_sub(totals.span_blocks + rep.quarantined_blocks);
        rep.used_bytes =
            (rep.used_bytes + totals.slot_bytes).saturating_sub(totals.span_bytes + rep.quarantined_bytes);
        rep.bookkeeping_blocks = totals.span_blocks;
        rep.bookkeeping_bytes = totals.span_bytes.saturating_sub(totals.slot_bytes);
        rep.blocks = rep.used_blocks + rep.bookkeeping_blocks + rep.free_blocks;
        Ok(rep)
    }

    fn check_used(&self, key: u64, off: u64, rep: &mut CheckReport) -> Result<()> {
        let gen = self.read(off + HDR_GEN)?;
        let w = self.read(off + HDR_RC)?;
        self.check_rc(w, off, rep);
        // The check word guards handles, which name only published blocks; a block lent from a
        // thread cache gets its own when it is published.
        if rc::published(w) && self.read(off + HDR_CHECK)? != check_word(key, off, gen) {
            rep.flag("header check word is wrong", off);
        }
        if gen >= self.read(SB_NEXT_GEN)? {
            rep.flag("generation from the future", off);
        }
        Ok(())
    }

    /// The rules every used block's (and slot's) reference word follows.
    pub(super) fn check_rc(&self, w: u64, off: u64, rep: &mut CheckReport) {
        // A count of zero with an owner is a release in flight (the owner frees it next, or
        // recovery does if the owner died); with no owner nobody ever would.
        if rc::count(w) == 0 && rc::owner(w) == 0 {
            rep.flag("live block with reference count zero", off);
        }
        if rc::owner_refs(w) > 0 && (rc::owner(w) == 0 || rc::owner(w) > SLOT_COUNT) {
            rep.flag("owner references without a valid owner", off);
        }
    }

    fn check_lists(&self, free_set: &HashSet<u64>, rep: &mut CheckReport) -> Result<()> {
        let fl = self.read(TLSF_FL_BITMAP)?;
        let mut on_lists = 0u64;
        for f in 0..FL_COUNT {
            let sl = self.read32(TLSF_SL_BITMAPS + f * 4)?;
            if (sl != 0) != (fl >> f & 1 == 1) {
                rep.flag("first-level bitmap disagrees with second level", TLSF_FL_BITMAP);
            }
            for s in 0..SL_COUNT {
                let head_off = TLSF_HEADS + (f * SL_COUNT + s) * 8;
                let head = self.read(head_off)?;
                if (head != 0) != (sl >> s & 1 == 1) {
                    rep.flag("second-level bitmap disagrees with the list", head_off);
                }
                on_lists += self.check_list(head, (f, s), free_set, rep)?;
            }
        }
        if fl >> FL_COUNT != 0 {
            rep.flag("first-level bitmap has bits past the last row", TLSF_FL_BITMAP);
        }
        if on_lists != free_set.len() as u64 {
            rep.flag("a free block is on no list", HEAP_START);
        }
        Ok(())
    }

    /// Follows one list; returns how many blocks it holds. Stops at anything that is not a
    /// free block of the heap, and at a cycle.
    fn check_list(
        &self,
        head: u64,
        class: (u64, u64),
        free_set: &HashSet<u64>,
        rep: &mut CheckReport,
    ) -> Result<u64> {
        let (mut cur, mut prev, mut n) = (head, 0, 0u64);
        let mut pace = crate::progress::Pace::default();
        while cur != 0 {
            pace.tick();
            if !free_set.contains(&cur) {
                rep.flag("free list points at something that is not a free block", cur);
                break;
            }
            if n > free_set.len() as u64 {
                rep.flag("free list has a cycle", cur);
                break;
            }
            if self.read(cur + FREE_PREV)? != prev {
                rep.flag("free list back link is wrong", cur);
            }
            if crate::engine::core::tlsf::mapping(self.tag(cur)?.size()) != class {
                rep.flag("free block on the wrong list", cur);
            }
            n += 1;
            prev = cur;
            cur = self.read(cur + FREE_NEXT)?;
        }
        Ok(n)
    }
}
