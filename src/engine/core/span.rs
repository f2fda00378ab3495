//! Spans: one block that holds many small blocks (*slots*) of one size, each described by one
//! reference word in the span's table instead of a 32-byte header of its own.
//!
//! A block of 64 bytes with a header takes 96; in a span it takes 72 (its slot and its
//! reference word), and the span's own header and table are shared by some 900 slots.
//!
//! Layout (`docs/format.md`, "Spans"): a span is a used block of [`SPAN_SIZE`] bytes whose
//! payload `p` is aligned to [`SPAN_SIZE`] and whose tag has `FLAG_SPAN`. From `p`: a 64-byte
//! span header, the slots' reference words, then the slots. A slot is named by its *id*,
//! `payload - HEADER_SIZE + SLOT_MARK + size / 16 - 1`: its payload is found as a block's is,
//! its span by rounding the id down to [`SPAN_SIZE`], and its size from the id's low bits.
//!
//! What is true of a span (and checked by `Core::check_spans`):
//! - slots at index `SPAN_BUMP` and above have never been handed out; their reference words are
//!   never read;
//! - below it, a slot is *free* iff its reference word is 0, and then it is on the span's free
//!   list exactly once; `SPAN_USED` counts the others;
//! - a span is on its class's list (`SB_SPAN_LISTS`) iff it has a free slot (or never-used ones).
//!
//! The reference words are the truth; free lists, counts and class lists are derived from them,
//! and `Core::rebuild_spans` derives them again after a process died holding the lock. All of
//! this changes under the store lock but the reference words, which follow the rules of a
//! block's reference word (`header.rs`).

use crate::engine::core::check::CheckReport;
use crate::engine::core::header::{check_word, rc, FLAG_PAGE, FLAG_SPAN};
use crate::engine::core::tlsf::Core;
use crate::error::{Error, Result};
use crate::format::*;

/// Number of slots in a span of `class`-byte slots, and the offset of slot 0 from the span's
/// payload (after the header and the reference words, aligned to the granule).
pub(crate) const fn layout(class: u64) -> (u64, u64) {
    let room = SPAN_SIZE - HEADER_SIZE;
    let mut n = (room - SPAN_RC) / (class + 8);
    loop {
        let start = (SPAN_RC + n * 8).next_multiple_of(GRANULE);
        if start + n * class <= room {
            return (n, start);
        }
        n -= 1;
    }
}

/// Where slot 0 starts (from the span's payload) for each slot size, 16 to 64.
pub(crate) const STARTS: [u64; SLOT_CLASSES as usize] =
    [layout(16).1, layout(32).1, layout(48).1, layout(64).1];

/// Where slot 0 starts for `class`-byte slots (a slot size).
#[inline]
pub(super) fn start(class: u64) -> u64 {
    STARTS[(class / GRANULE - 1) as usize]
}

/// The slot size for a payload of `len` bytes, if a slot can hold it.
#[inline]
pub(crate) fn slot_class(len: u64) -> Option<u64> {
    (len <= SLOT_MAX).then(|| len.max(1).next_multiple_of(GRANULE))
}

/// Whether `id` names a slot (else it is a block's header offset).
#[inline]
pub(crate) fn is_slot(id: u64) -> bool {
    id & (GRANULE - 1) & !(SLOT_CLASSES - 1) == SLOT_MARK
}

/// The slot size an id says (for a slot id).
#[inline]
pub(crate) fn id_class(id: u64) -> u64 {
    ((id & (SLOT_CLASSES - 1)) + 1) * GRANULE
}

/// Whether `class` is a slot size.
pub(super) fn valid_class(class: u64) -> bool {
    class % GRANULE == 0 && (GRANULE..=SLOT_MAX).contains(&class)
}

/// Where the list of spans of `class`-byte slots with a free slot starts.
pub(super) fn list_head(class: u64) -> u64 {
    SB_SPAN_LISTS + (class / GRANULE - 1) * 8
}

/// What the spans hold, as a check counts it.
pub(crate) struct SpanTotals {
    /// Slots in use.
    pub(crate) slots: u64,
    /// Their bytes.
    pub(crate) slot_bytes: u64,
    /// Spans and pages.
    pub(crate) span_blocks: u64,
    /// Their bytes.
    pub(crate) span_bytes: u64,
}

/// A slot: its span's payload offset, its index in the span, and its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) span: u64,
    pub(crate) index: u64,
    pub(crate) class: u64,
}

impl Slot {
    /// The slot's id: what names it where a block is named by its header offset.
    pub(crate) fn id(self) -> u64 {
        self.payload() - HEADER_SIZE + SLOT_MARK + self.class / GRANULE - 1
    }

    /// Offset of the slot's payload.
    pub(crate) fn payload(self) -> u64 {
        self.span + start(self.class) + self.index * self.class
    }

    /// Offset of the slot's reference word.
    pub(crate) fn rc_offset(self) -> u64 {
        self.span + SPAN_RC + self.index * 8
    }
}

impl Core<'_> {
    /// Carves a span of `class`-byte slots and puts it on its class's list; returns its payload
    /// offset, or `None` when no free block is large enough (the heap is then unchanged).
    /// With `exact`, every free block that can hold the span is a candidate
    /// ([`Core::alloc_fit`]).
    pub(crate) fn carve_span(&self, key: u64, class: u64, exact: bool) -> Result<Option<u64>> {
        debug_assert!(valid_class(class));
        let Some(c) = self.alloc_either(SPAN_SIZE - HEADER_SIZE, SPAN_ALIGN_LOG2, exact)? else {
            return Ok(None);
        };
        let p = c.offset + HEADER_SIZE;
        self.zero_words(c.offset + HDR_GEN, (HEADER_SIZE - HDR_GEN) / 8);
        self.store(p + SPAN_CHECK, check_word(key, p, SPAN_CHECK_GEN));
        self.store(p + SPAN_CLASS, class);
        self.store(p + SPAN_BUMP, 0);
        self.store(p + SPAN_USED, 0);
        self.store(p + SPAN_FREE_HEAD, 0);
        self.store(p + SPAN_PAGE, 0);
        // The commit point: until the flag is set a walk sees a used block nobody holds (which
        // recovery frees), after it a span with no slot in use.
        self.set_tag(c.offset, self.tag_at(c.offset).with(FLAG_SPAN));
        self.link_span(p, class)?;
        self.count_span_block(1, c.size);
        self.done(Some(p))
    }

    /// Hands out a free slot of the first span on `class`'s list (`None`: the list is empty).
    /// The caller writes the slot's reference word.
    pub(crate) fn take_slot(&self, class: u64) -> Result<Option<Slot>> {
        let p = self.load(list_head(class));
        if p == 0 {
            return Ok(None);
        }
        self.span_of_class(p, class)?;
        let (n, _) = layout(class);
        let (bump, used) = (self.load(p + SPAN_BUMP), self.load(p + SPAN_USED));
        if used >= n || bump > n {
            return Err(Error::corrupt("span's counts are out of range", p));
        }
        let head = self.load(p + SPAN_FREE_HEAD);
        let index = if head != 0 {
            let slot = Slot { span: p, index: head - 1, class };
            if slot.index >= bump {
                return Err(Error::corrupt("span free list names an unused slot", p));
            }
            if self.load(slot.rc_offset()) != 0 {
                return Err(Error::corrupt("span free list names a slot in use", slot.id()));
            }
            let next = self.load(slot.payload());
            if next > bump {
                return Err(Error::corrupt("span free list link out of range", slot.id()));
            }
            self.store(p + SPAN_FREE_HEAD, next);
            slot.index
        } else if bump < n {
            self.store(p + SPAN_BUMP, bump + 1);
            bump
        } else {
            return Err(Error::corrupt("full span on its class's list", p));
        };
        if used + 1 >= n {
            self.unlink_span(p, class)?;
        }
        self.store(p + SPAN_USED, used + 1);
        self.account_slots(1, class as i64);
        self.done(Some(Slot { span: p, index, class }))
    }

    /// Gives back the slots at `indices` (distinct) of the span at `p` (of slot size `class`,
    /// checked by the caller), whose reference words the caller has just set to 0: one update
    /// of the span's fields and the store's counters for all of them (a cache's spill gives
    /// back runs of slots of one span). A span left with no slot in use is freed, unless it is
    /// the only one of its class with free slots. Returns whether the span was freed.
    pub(crate) fn give_slots(&self, p: u64, class: u64, indices: &[u64]) -> Result<bool> {
        let (n, _) = layout(class);
        let k = indices.len() as u64;
        let used = self.load(p + SPAN_USED);
        let bump = self.load(p + SPAN_BUMP);
        if used < k || used > n || indices.iter().any(|&i| i >= bump) {
            return Err(Error::corrupt("freeing a slot not in use", p));
        }
        let mut head = self.load(p + SPAN_FREE_HEAD);
        for &index in indices {
            self.store(Slot { span: p, index, class }.payload(), head);
            head = index + 1;
        }
        self.store(p + SPAN_FREE_HEAD, head);
        self.store(p + SPAN_USED, used - k);
        self.account_slots(-(k as i64), -((k * class) as i64));
        if used == n && k > 0 {
            self.link_span(p, class)?;
        }
        let alone = self.load(p + SPAN_PREV) == 0 && self.load(p + SPAN_NEXT) == 0;
        let emptied = used == k && k > 0 && !alone;
        if emptied {
            self.free_span(p, class)?;
        }
        self.done(emptied)
    }

    /// Frees an empty span (on its class's list) and its publication page.
    fn free_span(&self, p: u64, class: u64) -> Result<()> {
        self.unlink_span(p, class)?;
        if let Some(page) = self.page_of(p)? {
            self.store(p + SPAN_PAGE, 0);
            let size = self.free(page - HEADER_SIZE)?;
            self.count_span_block(-1, size);
        }
        let size = self.free(p - HEADER_SIZE)?;
        self.count_span_block(-1, size);
        Ok(())
    }

    /// The publication page of the span at `p` (its payload offset), made if the span has none
    /// yet; `None` when no free block is large enough for it (the caller grows the heap and
    /// asks again). Entries are written when a slot is published and read only for published
    /// slots, so a new page's are left as they are.
    pub(crate) fn span_page(&self, p: u64, class: u64, exact: bool) -> Result<Option<u64>> {
        if let Some(page) = self.page_of(p)? {
            return Ok(Some(page));
        }
        let Some(c) = self.alloc_either(PAGE_ENTRIES + layout(class).0 * 8, 4, exact)? else {
            return Ok(None);
        };
        self.zero_words(c.offset + HDR_GEN, (HEADER_SIZE - HDR_GEN) / 8);
        self.store(c.offset + HEADER_SIZE + PAGE_SPAN, p);
        // Until the span names it, a walk sees a page nobody names, which recovery frees.
        self.set_tag(c.offset, self.tag_at(c.offset).with(FLAG_PAGE));
        self.store(p + SPAN_PAGE, c.offset);
        self.count_span_block(1, c.size);
        self.done(Some(c.offset + HEADER_SIZE))
    }

    /// The publication page (payload offset) of the span at `p`, if it has one.
    pub(crate) fn page_of(&self, p: u64) -> Result<Option<u64>> {
        let hdr = self.load(p + SPAN_PAGE);
        if hdr == 0 {
            return Ok(None);
        }
        let class = self.load(p + SPAN_CLASS);
        let t = self.block_at(hdr)?;
        let fits = valid_class(class) && t.size() - HEADER_SIZE >= PAGE_ENTRIES + layout(class).0 * 8;
        if t.is_free() || !t.is_page() || !fits || self.load(hdr + HEADER_SIZE + PAGE_SPAN) != p {
            return Err(Error::corrupt("span names no page of its own", p));
        }
        self.done(Some(hdr + HEADER_SIZE))
    }

    /// Counts a span or page of `size` bytes made (`delta` 1) or freed (-1).
    fn count_span_block(&self, delta: i64, size: u64) {
        self.store(SB_SPAN_BLOCKS, self.load(SB_SPAN_BLOCKS).wrapping_add_signed(delta));
        self.store(SB_SPAN_BYTES, self.load(SB_SPAN_BYTES).wrapping_add_signed(delta * size as i64));
    }

    /// The slot `id` names, everything about it checked against the span (for ids read from a
    /// handle, a root, a table: anything but this process's own references). A slot handed
    /// out at least once is found whether or not it is in use now.
    pub(crate) fn slot_at(&self, key: u64, id: u64) -> Result<Slot> {
        let bad = || Error::corrupt("not a slot", id);
        if !is_slot(id) {
            return Err(bad());
        }
        let p = id & !(SPAN_SIZE - 1);
        if !self.is_span_at(p)? || self.load(p + SPAN_CHECK) != check_word(key, p, SPAN_CHECK_GEN) {
            return Err(bad());
        }
        self.slot_in(p, id)
    }

    /// As [`Core::slot_at`] for an id of the span at `p`, whose header the caller checked
    /// under the lock it still holds (so it is still a span: only a give that empties it frees
    /// it). The slot's own fields are checked.
    pub(crate) fn slot_in(&self, p: u64, id: u64) -> Result<Slot> {
        let bad = || Error::corrupt("not a slot", id);
        if !is_slot(id) || id & !(SPAN_SIZE - 1) != p {
            return Err(bad());
        }
        let class = self.load(p + SPAN_CLASS);
        if !valid_class(class) {
            return Err(Error::corrupt("span slot size", p));
        }
        if id_class(id) != class {
            return Err(bad());
        }
        let from = payload_of(id).checked_sub(p + start(class)).ok_or_else(bad)?;
        let index = from / class;
        if from % class != 0 || index >= self.load(p + SPAN_BUMP) {
            return Err(bad());
        }
        self.done(Slot { span: p, index, class })
    }

    /// The slots of the span at `p` that were ever handed out (recovery walks their
    /// reference words); the span's header is checked first.
    pub(crate) fn slots_handed_out(&self, p: u64) -> Result<Vec<Slot>> {
        let class = self.load(p + SPAN_CLASS);
        if !valid_class(class) {
            return Err(Error::corrupt("span slot size", p));
        }
        let bump = self.load(p + SPAN_BUMP).min(layout(class).0);
        self.done((0..bump).map(|index| Slot { span: p, index, class }).collect())
    }

    /// Whether `p` is the payload of a span: aligned, after a used block header with `SPAN`.
    /// An error only when the header there is not a block header at all.
    fn is_span_at(&self, p: u64) -> Result<bool> {
        let Some(hdr) = p.checked_sub(HEADER_SIZE).filter(|&h| h >= HEAP_START) else { return Ok(false) };
        let tag = self.block_at(hdr)?;
        Ok(p % SPAN_SIZE == 0 && !tag.is_free() && tag.is_span())
    }

    /// Checks that `p` is the payload of a span of `class`-byte slots.
    fn span_of_class(&self, p: u64, class: u64) -> Result<()> {
        let bad = || Error::corrupt("span list names no span of its size", p);
        if !self.is_span_at(p).map_err(|_| bad())? || self.load(p + SPAN_CLASS) != class {
            return Err(bad());
        }
        Ok(())
    }

    pub(super) fn link_span(&self, p: u64, class: u64) -> Result<()> {
        let head = list_head(class);
        let first = self.load(head);
        // Read from the store: checked before a word of it is formed (as free lists' links are).
        if first != 0 {
            self.span_of_class(first, class)?;
        }
        self.store(p + SPAN_PREV, 0);
        self.store(p + SPAN_NEXT, first);
        if first != 0 {
            self.store(first + SPAN_PREV, p);
        }
        self.store(head, p);
        Ok(())
    }

    fn unlink_span(&self, p: u64, class: u64) -> Result<()> {
        let (prev, next) = (self.load(p + SPAN_PREV), self.load(p + SPAN_NEXT));
        // Read from the store: checked before a word of either is formed, nothing written yet.
        for link in [prev, next].into_iter().filter(|&l| l != 0) {
            self.span_of_class(link, class)?;
        }
        match prev {
            0 => self.store(list_head(class), next),
            _ => self.store(prev + SPAN_NEXT, next),
        }
        if next != 0 {
            self.store(next + SPAN_PREV, prev);
        }
        self.store(p + SPAN_PREV, 0);
        self.store(p + SPAN_NEXT, 0);
        Ok(())
    }

    /// Adds `slots` to the slots in use and `bytes` to their bytes.
    fn account_slots(&self, slots: i64, bytes: i64) {
        let live = self.load(SB_LIVE_SLOTS).wrapping_add_signed(slots);
        let used = self.load(SB_SLOT_BYTES).wrapping_add_signed(bytes);
        self.store(SB_LIVE_SLOTS, live);
        self.store(SB_SLOT_BYTES, used);
    }
}

/// The generation bits of a publication page entry (the slot size minus the length is above).
pub(crate) const PAGE_GEN_MASK: u64 = (1 << 56) - 1;

impl Core<'_> {
    /// Checks every span (payload offsets `spans`) against what is true of a span (module
    /// docs), every page (header offsets `pages`) against its span, the slots' reference
    /// words and publication records, and the slot counters.
    pub(crate) fn check_spans(
        &self,
        key: u64,
        spans: &[u64],
        pages: &[u64],
        rep: &mut CheckReport,
    ) -> Result<SpanTotals> {
        let (mut live, mut slot_bytes, mut blocks) = (0u64, 0u64, spans.len() as u64);
        let mut span_bytes = 0;
        let mut named_pages = Vec::new();
        let mut pace = crate::progress::Pace::default();
        for &p in spans {
            pace.tick();
            let class = self.read(p + SPAN_CLASS)?;
            if !valid_class(class) || self.read(p + SPAN_CHECK)? != check_word(key, p, SPAN_CHECK_GEN) {
                rep.flag("span header is wrong", p);
                continue;
            }
            let page = match self.page_of(p) {
                Ok(page) => page,
                Err(_) => {
                    rep.flag("span names no page of its own", p);
                    None
                }
            };
            span_bytes += self.tag(p - HEADER_SIZE)?.size();
            if let Some(page) = page {
                named_pages.push(page - HEADER_SIZE);
                span_bytes += self.tag(page - HEADER_SIZE)?.size();
                blocks += 1;
            }
            let used = self.check_span_slots(p, class, page, rep)?;
            live += used;
            slot_bytes += used * class;
        }
        for &page in pages.iter().filter(|p| !named_pages.contains(p)) {
            rep.flag("publication page of no span", page);
        }
        for class in (1..=SLOT_CLASSES).map(|c| c * GRANULE) {
            self.check_span_list(class, spans, rep)?;
        }
        for (field, want, what) in [
            (SB_LIVE_SLOTS, live, "live-slots counter disagrees with the spans"),
            (SB_SLOT_BYTES, slot_bytes, "slot-bytes counter disagrees with the spans"),
            (SB_SPAN_BLOCKS, blocks, "span-blocks counter disagrees with the spans"),
            (SB_SPAN_BYTES, span_bytes, "span-bytes counter disagrees with the spans"),
        ] {
            if self.read(field)? != want {
                rep.flag(what, field);
            }
        }
        Ok(SpanTotals { slots: live, slot_bytes, span_blocks: blocks, span_bytes })
    }

    /// Checks the slots, free list, count and list membership of one span; returns the slots
    /// in use.
    fn check_span_slots(&self, p: u64, class: u64, page: Option<u64>, rep: &mut CheckReport) -> Result<u64> {
        let (n, _) = layout(class);
        let bump = self.read(p + SPAN_BUMP)?;
        if bump > n {
            rep.flag("span hands out more slots than it has", p);
            return Ok(0);
        }
        let mut free = vec![false; bump as usize];
        let next_gen = self.read(SB_NEXT_GEN)?;
        for index in 0..bump {
            let slot = Slot { span: p, index, class };
            let w = self.read(slot.rc_offset())?;
            free[index as usize] = w == 0;
            if w == 0 {
                continue;
            }
            self.check_rc(w, slot.id(), rep);
            if rc::published(w) {
                let entry = match page {
                    Some(page) => self.read(page + PAGE_ENTRIES + index * 8)?,
                    None => u64::MAX,
                };
                let gen = entry & PAGE_GEN_MASK;
                if gen == 0 || gen >= next_gen || entry >> 56 > class {
                    rep.flag("published slot without a valid record", slot.id());
                }
            }
        }
        let used = free.iter().filter(|f| !**f).count() as u64;
        let mut i = self.read(p + SPAN_FREE_HEAD)?;
        let mut seen = 0;
        while i != 0 {
            let index = i - 1;
            if index >= bump || !free[index as usize] || seen > bump {
                rep.flag("span free list is wrong", p);
                break;
            }
            free[index as usize] = false;
            seen += 1;
            i = self.read(Slot { span: p, index, class }.payload())?;
        }
        if seen != bump - used {
            rep.flag("a free slot is on no free list", p);
        }
        if self.read(p + SPAN_USED)? != used {
            rep.flag("span's count of slots in use is wrong", p);
        }
        if self.listed(p, class)? != (used < n) {
            rep.flag("span with free slots not listed, or full span listed", p);
        }
        Ok(used)
    }

    /// Checks the list of spans of `class`-byte slots: only spans of that size (of `spans`),
    /// each once, with back links that match.
    fn check_span_list(&self, class: u64, spans: &[u64], rep: &mut CheckReport) -> Result<()> {
        let head = list_head(class);
        let (mut q, mut prev, mut seen) = (self.read(head)?, 0, Vec::new());
        while q != 0 {
            if !spans.contains(&q) || self.read(q + SPAN_CLASS)? != class || seen.contains(&q) {
                rep.flag("span list names no span of its size, or one twice", head);
                break;
            }
            if self.read(q + SPAN_PREV)? != prev {
                rep.flag("span list back link is wrong", q);
            }
            seen.push(q);
            (prev, q) = (q, self.read(q + SPAN_NEXT)?);
        }
        Ok(())
    }

    /// Whether the span at `p` is on its class's list (stops at anything but a span).
    fn listed(&self, p: u64, class: u64) -> Result<bool> {
        let mut q = self.read(list_head(class))?;
        for _ in 0..self.capacity()? / SPAN_SIZE + 1 {
            if q == 0 || q == p {
                return Ok(q == p);
            }
            if q % SPAN_SIZE != 0 || self.span_of_class(q, class).is_err() {
                return Ok(false);
            }
            q = self.read(q + SPAN_NEXT)?;
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::engine::core::region::TestRegion;

    const KEY: u64 = 0x5eed;
    const CAP: u64 = 1 << 20;

    fn region() -> TestRegion {
        let mem = TestRegion::new(CAP, CAP);
        Core::new(&mem.region).init(CAP).unwrap();
        mem
    }

    /// Takes a slot and marks it in use, as the heap does.
    fn take(core: &Core<'_>, class: u64) -> Option<Slot> {
        let s = core.take_slot(class).unwrap().or_else(|| {
            core.carve_span(KEY, class, false).unwrap()?;
            core.take_slot(class).unwrap()
        })?;
        core.r.store(s.rc_offset(), 1).unwrap();
        Some(s)
    }

    fn give(core: &Core<'_>, s: Slot) {
        core.r.store(s.rc_offset(), 0).unwrap();
        core.give_slots(s.span, s.class, &[s.index]).unwrap();
    }

    #[test]
    fn slots_given_back_together_are_taken_again_and_counted_once_each() {
        let mem = region();
        let core = Core::new(&mem.region);
        let slots: Vec<Slot> = (0..10).map(|_| take(&core, 32).unwrap()).collect();
        let live = core.load(SB_LIVE_SLOTS);
        let given: Vec<u64> = slots[2..7].iter().map(|s| s.index).collect();
        for s in &slots[2..7] {
            core.r.store(s.rc_offset(), 0).unwrap();
        }
        assert!(!core.give_slots(slots[0].span, 32, &given).unwrap());
        assert_eq!(core.load(SB_LIVE_SLOTS), live - 5);
        assert_eq!(core.load(SB_SLOT_BYTES), (live - 5) * 32);
        let mut again: Vec<u64> = (0..5).map(|_| take(&core, 32).unwrap().index).collect();
        again.sort_unstable();
        assert_eq!(again, given, "the free list holds exactly the slots given back");
        // More than are in use is refused, the span unchanged.
        let used = core.load(slots[0].span + SPAN_USED);
        let all: Vec<u64> = (0..used + 1).collect();
        assert!(core.give_slots(slots[0].span, 32, &all).is_err());
        assert_eq!(core.load(slots[0].span + SPAN_USED), used);
    }

    #[test]
    fn layouts_fit_the_span_and_a_64_byte_slot_costs_under_73_bytes() {
        for class in (1..=SLOT_CLASSES).map(|c| c * GRANULE) {
            let (n, start) = layout(class);
            assert_eq!(start % GRANULE, 0);
            assert!(start >= SPAN_RC + n * 8, "slots after the reference words");
            assert!(start + n * class <= SPAN_SIZE - HEADER_SIZE);
            assert!(start + (n + 1) * class > SPAN_SIZE - HEADER_SIZE - 8, "no room for one more");
        }
        assert_eq!([16, 32, 48, 64].map(|c| layout(c).0), [2726, 1636, 1168, 908], "docs/format.md");
        let (n, _) = layout(64);
        assert!(SPAN_SIZE as f64 / (n * 64) as f64 <= 1.13, "{n} slots");
        assert_eq!(slot_class(0), Some(16));
        assert_eq!(slot_class(17), Some(32));
        assert_eq!(slot_class(64), Some(64));
        assert_eq!(slot_class(65), None);
    }

    #[test]
    fn slots_are_distinct_aligned_and_found_again_from_their_ids() {
        let mem = region();
        let core = Core::new(&mem.region);
        let (n, _) = layout(48);
        let slots: Vec<Slot> = (0..n + 3).map(|_| take(&core, 48).unwrap()).collect();
        let payloads: BTreeSet<u64> = slots.iter().map(|s| s.payload()).collect();
        assert_eq!(payloads.len(), slots.len());
        for s in &slots {
            assert_eq!(s.payload() % GRANULE, 0);
            assert!(is_slot(s.id()) && id_class(s.id()) == s.class);
            assert_eq!(payload_of(s.id()), s.payload());
            assert_eq!(core.slot_at(KEY, s.id()).unwrap(), *s);
            assert_eq!(s.id() & !(SPAN_SIZE - 1), s.span);
        }
        assert_ne!(slots[0].span, slots[n as usize].span, "a full span makes way for a new one");
        assert_eq!(core.read(SB_LIVE_SLOTS).unwrap(), n + 3);
        assert_eq!(core.read(SB_SLOT_BYTES).unwrap(), (n + 3) * 48);
        assert_eq!(core.read(SB_SPAN_BYTES).unwrap(), 2 * SPAN_SIZE);
    }

    #[test]
    fn ids_that_name_no_slot_are_refused() {
        let mem = region();
        let core = Core::new(&mem.region);
        let s = take(&core, 64).unwrap();
        let block = core.alloc(100, 4).unwrap().unwrap().offset;
        for id in [
            s.id() + 64,                      // a slot never handed out
            s.payload() - HEADER_SIZE,        // the header offset the payload would have as a block
            s.id() - 3,                       // the id of a 16-byte slot in its place
            s.id() + 4,                       // not a slot id
            block + SLOT_MARK,                // in a block that is not a span
            s.span - HEADER_SIZE + SLOT_MARK, // the span's own header
            HEAP_START + SLOT_MARK,
            u64::MAX - 7,
        ] {
            assert!(core.slot_at(KEY, id).is_err(), "{id:#x}");
        }
        assert!(core.slot_at(KEY ^ 1, s.id()).is_err(), "another store's key");
    }

    /// Takes and gives slots of every size at random against a model; the accounting, the
    /// lists and a rebuild from the reference words agree with it throughout.
    #[test]
    fn random_takes_and_gives_match_a_model_and_a_rebuild() {
        let mem = region();
        let core = Core::new(&mem.region);
        let mut rng = SmallRng::seed_from_u64(7);
        let mut live: Vec<Slot> = Vec::new();
        let steps = if cfg!(miri) { 300 } else { 6000 };
        for step in 0..steps {
            if live.len() < 2500 && (live.is_empty() || rng.gen_bool(0.55)) {
                let class = rng.gen_range(1..=SLOT_CLASSES) * GRANULE;
                let s = take(&core, class).unwrap();
                assert!(!live.contains(&s), "handed out twice");
                live.push(s);
            } else {
                let s = live.swap_remove(rng.gen_range(0..live.len()));
                give(&core, s);
            }
            if step % 500 == 0 {
                check_against(&core, &live);
                core.rebuild_spans(KEY).unwrap();
                check_against(&core, &live);
            }
        }
        for s in live.drain(..) {
            give(&core, s);
        }
        check_against(&core, &live);
        let spans = spans(&core);
        assert!(spans.len() <= SLOT_CLASSES as usize, "empty spans are freed but one per size");
    }

    #[test]
    fn pages_live_and_die_with_their_spans() {
        let mem = region();
        let core = Core::new(&mem.region);
        let a = take(&core, 32).unwrap();
        let (n, _) = layout(32);
        let rest: Vec<Slot> = (0..n).map(|_| take(&core, 32).unwrap()).collect();
        let b = rest[rest.len() - 1];
        assert_ne!(a.span, b.span);
        assert_eq!(core.page_of(a.span).unwrap(), None);
        let page = core.span_page(a.span, 32, false).unwrap().unwrap();
        assert_eq!(core.span_page(a.span, 32, false).unwrap(), Some(page), "made once");
        assert_eq!(core.page_of(a.span).unwrap(), Some(page));
        assert_eq!(core.read(SB_SPAN_BLOCKS).unwrap(), 3);
        // A page no span names (its maker died before linking it) goes at a rebuild; one whose
        // span names another block is forgotten.
        let orphan = core.span_page(b.span, 32, false).unwrap().unwrap();
        core.r.store(b.span + SPAN_PAGE, 0).unwrap();
        core.rebuild_spans(KEY).unwrap();
        assert!(!used_at(&core, orphan - HEADER_SIZE), "orphan page freed");
        assert_eq!(core.read(SB_SPAN_BLOCKS).unwrap(), 3);
        core.r.store(a.span + SPAN_PAGE, b.span - HEADER_SIZE).unwrap();
        assert!(core.page_of(a.span).is_err());
        core.rebuild_spans(KEY).unwrap();
        assert_eq!(core.page_of(a.span).unwrap(), None);
        assert_eq!(core.read(SB_SPAN_BLOCKS).unwrap(), 2);
        let page = core.span_page(a.span, 32, false).unwrap().unwrap();
        // Emptying a span that is not alone on its list frees it with its page.
        give(&core, a);
        for s in rest.into_iter().filter(|s| s.span == a.span) {
            give(&core, s);
        }
        assert!(!used_at(&core, a.span - HEADER_SIZE), "empty span freed");
        assert!(!used_at(&core, page - HEADER_SIZE), "its page freed");
        assert_eq!(core.read(SB_SPAN_BLOCKS).unwrap(), 1);
    }

    /// Whether a used block starts at `off`.
    fn used_at(core: &Core<'_>, off: u64) -> bool {
        let mut found = false;
        core.walk(|b| {
            found |= b.offset == off && !b.tag.is_free();
            Ok(())
        })
        .unwrap();
        found
    }

    fn spans(core: &Core<'_>) -> Vec<u64> {
        let mut v = Vec::new();
        core.walk(|b| {
            if !b.tag.is_free() && b.tag.is_span() {
                v.push(b.offset + HEADER_SIZE);
            }
            Ok(())
        })
        .unwrap();
        v
    }

    /// Everything derived agrees with `live`: counters, per-span counts, free lists, lists.
    fn check_against(core: &Core<'_>, live: &[Slot]) {
        assert_eq!(core.read(SB_LIVE_SLOTS).unwrap(), live.len() as u64);
        assert_eq!(core.read(SB_SLOT_BYTES).unwrap(), live.iter().map(|s| s.class).sum::<u64>());
        assert_eq!(core.read(SB_SPAN_BYTES).unwrap(), spans(core).len() as u64 * SPAN_SIZE);
        for p in spans(core) {
            let class = core.read(p + SPAN_CLASS).unwrap();
            let (n, _) = layout(class);
            let mine: BTreeSet<u64> = live.iter().filter(|s| s.span == p).map(|s| s.index).collect();
            assert_eq!(core.read(p + SPAN_USED).unwrap(), mine.len() as u64);
            let bump = core.read(p + SPAN_BUMP).unwrap();
            let mut on_list = BTreeSet::new();
            let mut i = core.read(p + SPAN_FREE_HEAD).unwrap();
            while i != 0 {
                let s = Slot { span: p, index: i - 1, class };
                assert!(on_list.insert(s.index), "free list cycle");
                i = core.read(s.payload()).unwrap();
            }
            let expect: BTreeSet<u64> = (0..bump).filter(|i| !mine.contains(i)).collect();
            assert_eq!(on_list, expect, "free list of {p:#x}");
            let listed = {
                let mut q = core.read(list_head(class)).unwrap();
                let mut found = false;
                while q != 0 {
                    found |= q == p;
                    q = core.read(q + SPAN_NEXT).unwrap();
                }
                found
            };
            assert_eq!(listed, (mine.len() as u64) < n, "listed iff it has a free slot");
        }
    }
}
