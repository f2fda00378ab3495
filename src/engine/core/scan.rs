//! Reading the heap's tiling for recovery and salvage, without writing anything.
//!
//! [`Core::scan`] is recovery's: the tiling exactly as the headers give it, or an error (the
//! store is damaged, not merely interrupted). [`Core::scan_salvage`] is salvage's: a tiling
//! that keeps every block the store's references name (*anchors*: roots, channel slots, holds
//! of the living, whose own headers check out) where it is, and fences off what it cannot
//! parse as quarantined ranges. For spans, [`Core::scan_span`] and [`Core::bad_records`] check
//! what recovery relies on, and [`Core::rebuild_spans_from`] derives the rest again.

use crate::engine::core::header::{check_word, rc, Tag};
use crate::engine::core::span::{
    id_class, is_slot, layout, list_head, start, valid_class, Slot, PAGE_GEN_MASK,
};
use crate::engine::core::tlsf::{BlockInfo, Core};
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
        let mut blocks = Vec::new();
        let mut off = HEAP_START;
        let mut ticker = crate::progress::Ticker::new("scanning", end);
        while off < end {
            ticker.tick(off);
            if self.growth_left_at(off, end) {
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
        ticker.finish();
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
        let mut blocks: Vec<BlockInfo> = Vec::new();
        let mut off = HEAP_START;
        while off < end {
            let beyond = anchors.partition_point(|&a| a <= off) == anchors.len();
            if beyond && self.growth_left_at(off, end) {
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
            // it until it can; an anchor before it was cut short by a damaged size field, and
            // is given back what it lost.
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
            blocks.push(BlockInfo { offset: from, tag: self.fenced(from, resume) });
            off = resume;
        }
        self.done(blocks)
    }

    /// Whether growth was interrupted with the old end sentinel (a zero tag) at `off`, which
    /// [`SB_GROW_FROM`] then names: the space from there to the end is free.
    fn growth_left_at(&self, off: u64, end: u64) -> bool {
        off + SENTINEL_SIZE == self.load(SB_GROW_FROM)
            && self.tag_at(off).is_sentinel()
            && end - off >= MIN_BLOCK
    }

    /// The tag for the damaged range `[from, to)`: a quarantine, unless the range was a free
    /// block whose header alone was hit (its footer, its last word, holds its size, and the
    /// block after it, or the sentinel, says its predecessor is free), which holds no data and
    /// is free again.
    fn fenced(&self, from: u64, to: u64) -> Tag {
        let size = to - from;
        if self.load(to - 8) == size && self.tag_at(to).prev_free() {
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

/// `tag` with its block `by` bytes longer: the size field was what was cut short, so the
/// length it gives grows back too (the slack, a field of its own, was not hit).
fn lengthened(tag: Tag, by: u64) -> Tag {
    Tag(tag.0 + by)
}

/// Spans, as recovery reads and rebuilds them.
impl Core<'_> {
    /// Checks the span whose payload is at `p` (a used block with `SPAN` that a scan found)
    /// for recovery, reading only: its header (slot size, check word) and its page pointer,
    /// which is 0 or names a page block the scan found (`is_page`) that names the span back.
    /// Its count of slots handed out is clamped to its number of slots.
    pub(crate) fn scan_span(
        &self,
        key: u64,
        p: u64,
        is_page: impl Fn(u64) -> bool,
    ) -> Result<std::result::Result<ScannedSpan, SpanDamage>> {
        let class = self.load(p + SPAN_CLASS);
        if !valid_class(class) || self.load(p + SPAN_CHECK) != check_word(key, p, SPAN_CHECK_GEN) {
            return self.done(Err(SpanDamage::Header));
        }
        let bump = self.load(p + SPAN_BUMP).min(layout(class).0);
        let page = self.load(p + SPAN_PAGE);
        let names_back = || {
            let fits = self.tag_at(page).size() - HEADER_SIZE >= PAGE_ENTRIES + layout(class).0 * 8;
            fits && self.load(page + HEADER_SIZE + PAGE_SPAN) == p
        };
        if page != 0 && !(is_page(page) && names_back()) {
            return self.done(Err(SpanDamage::Page(ScannedSpan { p, class, bump, page: 0 })));
        }
        self.done(Ok(ScannedSpan { p, class, bump, page }))
    }

    /// The published slots in use of `span` whose page record is not valid: no page, a
    /// generation never issued (0, or not below `next_gen`), or a length longer than the slot.
    pub(crate) fn bad_records(&self, span: &ScannedSpan, next_gen: u64) -> Result<Vec<Slot>> {
        let mut bad = Vec::new();
        for index in 0..span.bump {
            let slot = Slot { span: span.p, index, class: span.class };
            if !rc::published(self.load(slot.rc_offset())) {
                continue;
            }
            let entry = match span.page {
                0 => 0,
                page => self.load(page + HEADER_SIZE + PAGE_ENTRIES + index * 8),
            };
            let gen = entry & PAGE_GEN_MASK;
            if gen == 0 || gen >= next_gen || entry >> 56 > span.class {
                bad.push(slot);
            }
        }
        self.done(bad)
    }

    /// The highest generation among the valid records (below `next_gen`) of `span`'s
    /// published slots, 0 if none.
    pub(crate) fn top_record(&self, span: &ScannedSpan, next_gen: u64) -> Result<u64> {
        let mut top = 0;
        if span.page != 0 {
            for index in 0..span.bump {
                let slot = Slot { span: span.p, index, class: span.class };
                if rc::published(self.load(slot.rc_offset())) {
                    let gen = self.load(span.page + HEADER_SIZE + PAGE_ENTRIES + index * 8) & PAGE_GEN_MASK;
                    if gen < next_gen {
                        top = top.max(gen);
                    }
                }
            }
        }
        self.done(top)
    }

    /// Derives every span's free list and count, the class lists and the slot counters again
    /// from the slots' reference words, for `spans` (checked by [`Core::scan_span`]: every
    /// span of the heap, their counts and page pointers as recovery decided), after freeing
    /// `orphans`, pages no span names (their maker died before linking them). Recovery runs it
    /// after [`Core::rebuild_from`], so the frees find consistent free lists.
    pub(crate) fn rebuild_spans_from(&self, spans: &[ScannedSpan], orphans: &[u64]) -> Result<()> {
        for &page in orphans {
            self.free(page)?;
        }
        for c in 1..=SLOT_CLASSES {
            self.store(list_head(c * GRANULE), 0);
        }
        let (mut live, mut slot_bytes, mut blocks, mut span_bytes) = (0u64, 0u64, 0u64, 0u64);
        for span in spans {
            let (p, class) = (span.p, span.class);
            let (n, _) = layout(class);
            self.store(p + SPAN_BUMP, span.bump);
            self.store(p + SPAN_PAGE, span.page);
            blocks += 1;
            span_bytes += self.tag_at(p - HEADER_SIZE).size();
            if span.page != 0 {
                blocks += 1;
                span_bytes += self.tag_at(span.page).size();
            }
            let (mut head, mut used) = (0u64, 0u64);
            for index in (0..span.bump).rev() {
                let slot = Slot { span: p, index, class };
                if self.load(slot.rc_offset()) == 0 {
                    self.store(slot.payload(), head);
                    head = index + 1;
                } else {
                    used += 1;
                }
            }
            self.store(p + SPAN_FREE_HEAD, head);
            self.store(p + SPAN_USED, used);
            if used < n {
                self.link_span(p, class)?;
            }
            live += used;
            slot_bytes += used * class;
        }
        self.store(SB_SPAN_BLOCKS, blocks);
        self.store(SB_SPAN_BYTES, span_bytes);
        self.store(SB_LIVE_SLOTS, live);
        self.store(SB_SLOT_BYTES, slot_bytes);
        self.done(())
    }

    /// For tests: scans every span and rebuilds them, as recovery does, treating a page
    /// pointer that names no page of the span's own as none (salvage's repair) and freeing
    /// pages no span names.
    #[cfg(test)]
    pub(crate) fn rebuild_spans(&self, key: u64) -> Result<()> {
        let mut blocks = Vec::new();
        self.walk(|b| {
            blocks.push(b);
            Ok(())
        })?;
        let is_page =
            |hdr: u64| blocks.iter().any(|b| b.offset == hdr && !b.tag.is_free() && b.tag.is_page());
        let mut spans = Vec::new();
        for b in blocks.iter().filter(|b| !b.tag.is_free() && b.tag.is_span()) {
            match self.scan_span(key, b.offset + HEADER_SIZE, is_page)? {
                Ok(span) | Err(SpanDamage::Page(span)) => spans.push(span),
                Err(SpanDamage::Header) => return Err(Error::corrupt("span header", b.offset)),
            }
        }
        let named: Vec<u64> = spans.iter().map(|s| s.page).collect();
        let orphans: Vec<u64> = blocks
            .iter()
            .filter(|b| is_page(b.offset) && !named.contains(&b.offset))
            .map(|b| b.offset)
            .collect();
        self.rebuild_spans_from(&spans, &orphans)
    }
}

/// A span as recovery found it ([`Core::scan_span`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ScannedSpan {
    /// Payload offset.
    pub(crate) p: u64,
    /// Slot size.
    pub(crate) class: u64,
    /// Slots handed out at least once, at most the span's number of slots.
    pub(crate) bump: u64,
    /// Header offset of its publication page, 0 = none.
    pub(crate) page: u64,
}

impl ScannedSpan {
    /// The slot `id` names in this span, if it names one that was handed out (in use or
    /// not): the id's size bits agree with the span's slot size, its payload is a slot's.
    pub(crate) fn slot(&self, id: u64) -> Option<Slot> {
        if !is_slot(id) || id & !(SPAN_SIZE - 1) != self.p || id_class(id) != self.class {
            return None;
        }
        let from = payload_of(id).checked_sub(self.p + start(self.class))?;
        let index = from / self.class;
        (from % self.class == 0 && index < self.bump).then_some(Slot {
            span: self.p,
            index,
            class: self.class,
        })
    }
}

/// What is wrong with a span recovery found ([`Core::scan_span`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SpanDamage {
    /// Its slot size or check word: where its slots lie is unknown.
    Header,
    /// Its page pointer names no page of its own; the span is as given, without a page.
    Page(ScannedSpan),
}
