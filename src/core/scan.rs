//! Reading the heap's tiling for recovery and salvage, without writing anything.
//!
//! [`Core::scan`] is recovery's: the tiling exactly as the headers give it, or an error (the
//! store is damaged, not merely interrupted). [`Core::scan_salvage`] is salvage's: a tiling
//! that keeps every block the store's references name (*anchors*: roots, channel slots, holds
//! of the living, whose own headers check out) where it is, and fences off what it cannot
//! parse as quarantined ranges.

use crate::core::header::Tag;
use crate::core::tlsf::{BlockInfo, Core};
use crate::error::{Error, Result};
use crate::format::*;

/// How many headers salvage may read looking for where parsing can resume after a damaged
/// one, per damaged range, before it fences off everything up to the next anchor instead.
const RESYNC_BUDGET: u64 = 1 << 22;

impl Core<'_> {
    /// Every block in address order, for recovery: the tiling as the headers give it, each
    /// header parsed and in range, ending exactly at the sentinel. It accepts the one state
    /// that a plain walk refuses and a crash can leave: growth interrupted between publishing
    /// the new capacity and writing the new free block, when the old end sentinel (a zero tag)
    /// lies at the capacity [`SB_GROW_FROM`] names; its space up to the end is free. A zero
    /// tag anywhere else, or any header that does not parse, is an error, and nothing is
    /// written.
    pub(crate) fn scan(&self) -> Result<Vec<BlockInfo>> {
        let end = self.sentinel()?;
        let grow_from = self.load(SB_GROW_FROM);
        let mut blocks = Vec::new();
        let mut off = HEAP_START;
        while off < end {
            if off + SENTINEL_SIZE == grow_from && self.tag_at(off).is_sentinel() && end - off >= MIN_BLOCK {
                blocks.push(BlockInfo { offset: off, tag: Tag::free(end - off) });
                off = end;
                break;
            }
            let tag = self.block_at(off)?;
            blocks.push(BlockInfo { offset: off, tag });
            off += tag.size();
        }
        if off != end || !self.tag_at(end).is_sentinel() {
            return Err(Error::corrupt("blocks do not end at the sentinel", off));
        }
        self.done(blocks)
    }

    /// Salvage's tiling of the heap, reading only. `anchors` are header offsets (sorted, no
    /// duplicates) of blocks that must stay blocks where they are: a block whose header does
    /// not parse, or that would swallow an anchor, starts a *quarantined* range, which ends
    /// where parsing can resume: the first place at least [`MIN_BLOCK`] further on from which
    /// well-formed headers lead exactly to the next anchor (or the end), else that anchor.
    /// Returns the tiling, quarantined ranges as blocks with [`Tag::quarantine`] tags.
    pub(crate) fn scan_salvage(&self, anchors: &[u64]) -> Result<Vec<BlockInfo>> {
        let end = self.sentinel()?;
        let grow_from = self.load(SB_GROW_FROM);
        let mut blocks: Vec<BlockInfo> = Vec::new();
        let mut off = HEAP_START;
        while off < end {
            let beyond = anchors.partition_point(|&a| a <= off) == anchors.len();
            if beyond && off + SENTINEL_SIZE == grow_from && self.tag_at(off).is_sentinel() {
                blocks.push(BlockInfo { offset: off, tag: Tag::free(end - off) });
                break;
            }
            if let Some(tag) = self.parses(off, end, anchors) {
                blocks.push(BlockInfo { offset: off, tag });
                off += tag.size();
                continue;
            }
            let target = anchors.get(anchors.partition_point(|&a| a <= off)).copied().unwrap_or(end);
            let mut from = off;
            // A range shorter than a block cannot stand alone: it takes in the blocks before
            // it until it can; an anchor before it was cut short by a damaged size, and is
            // given back what it lost.
            while target - from < MIN_BLOCK {
                match blocks.pop() {
                    Some(b) if anchors.binary_search(&b.offset).is_err() => from = b.offset,
                    Some(b) => {
                        blocks.push(BlockInfo { offset: b.offset, tag: lengthened(b.tag, target - from) });
                        from = target;
                        break;
                    }
                    None => return Err(Error::corrupt("damage before the first block", off)),
                }
            }
            if from == target {
                off = target;
                continue;
            }
            let resume = self.resync(from, target, anchors);
            blocks.push(BlockInfo { offset: from, tag: self.fenced(from, resume, end) });
            off = resume;
        }
        self.done(blocks)
    }

    /// The tag for the damaged range `[from, to)`: a quarantine, unless the range was a free
    /// block whose header alone was hit (its footer, its last word, holds its size, and the
    /// block after it says its predecessor is free), which holds no data and is free again.
    fn fenced(&self, from: u64, to: u64, end: u64) -> Tag {
        let size = to - from;
        let successor = if to == end { self.tag_at(end) } else { self.tag_at(to) };
        if self.load(to - 8) == size && successor.prev_free() {
            return Tag::free(size);
        }
        Tag::quarantine(size)
    }

    /// The header at `off` if it parses as a block that ends by `end` and swallows no anchor.
    fn parses(&self, off: u64, end: u64, anchors: &[u64]) -> Option<Tag> {
        let t = self.tag_at(off);
        let fits = t.well_formed() && t.size() >= MIN_BLOCK && t.size() <= end - off;
        (fits && !swallows(anchors, off, off + t.size())).then_some(t)
    }

    /// Where parsing can resume after a damaged header at `from`: see [`Core::scan_salvage`].
    fn resync(&self, from: u64, target: u64, anchors: &[u64]) -> u64 {
        let mut budget = RESYNC_BUDGET;
        let mut q = from + MIN_BLOCK;
        while q + MIN_BLOCK <= target && budget > 0 {
            if self.chains_to(q, target, anchors, &mut budget) {
                return q;
            }
            q += GRANULE;
        }
        target
    }

    /// Whether well-formed headers lead from `q` exactly to `target`.
    fn chains_to(&self, mut q: u64, target: u64, anchors: &[u64], budget: &mut u64) -> bool {
        while q < target {
            *budget = budget.saturating_sub(1);
            match self.parses(q, target, anchors) {
                Some(t) if *budget > 0 => q += t.size(),
                _ => return false,
            }
        }
        true
    }
}

/// Whether an anchor lies strictly inside `(from, to)`.
fn swallows(anchors: &[u64], from: u64, to: u64) -> bool {
    let i = anchors.partition_point(|&a| a <= from);
    anchors.get(i).is_some_and(|&a| a < to)
}

/// `tag` with its block `by` bytes longer, its length unchanged (the extra bytes are slack)
/// when the slack field can say so.
fn lengthened(tag: Tag, by: u64) -> Tag {
    let longer = Tag(tag.0 + by);
    if tag.is_free() || tag.slack() + by > crate::core::header::MAX_SLACK {
        return longer;
    }
    Tag(longer.0 + (by << 48))
}
