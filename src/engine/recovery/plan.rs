//! Recovery's plan: everything a recovery (or a salvage) will change, worked out from the store
//! without writing a byte of it. A recovery that cannot plan stops there, with the store as it
//! was; applying a plan (`apply.rs`) touches only what the plan validated.
//!
//! What a crash can leave (ARCHITECTURE.md, "Crash safety") is derived state out of step: free
//! lists, flags, footers, counters, span lists, holds counted in headers, a page no span names,
//! growth between two stores. Recovery repairs that. Anything else, a header that does not
//! parse, a block whose check word is wrong, a root naming no block, is *damage*: in
//! [`Mode::Recover`] the plan refuses it, naming what and where; in [`Mode::Salvage`] it is
//! fenced off or dropped, and reported, so that everything the store's references name and
//! whose own headers check out keeps its offset and its bytes.

use std::collections::{BTreeMap, HashMap};

use crate::engine::core::header::{check_word, key_of, rc, Tag, FLAG_PAGE, FLAG_QUARANTINE, FLAG_SHARED};
use crate::engine::core::scan::{ScannedSpan, SpanDamage};
use crate::engine::core::span::{is_slot, layout, Slot, PAGE_GEN_MASK};
use crate::engine::core::tlsf::{BlockInfo, Core};
use crate::engine::heap::Heap;
use crate::engine::holders::{Holder, Reading, Reference, Session};
use crate::error::{Error, Result};
use crate::format::*;

/// What the plan does with damage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Refuse it: the plan is an error naming the first damage found.
    Recover,
    /// Fence it off and report it (`MappedManager::salvage`).
    Salvage,
}

/// Everything a recovery will do.
pub(crate) struct Plan {
    pub(crate) mode: Mode,
    /// Registry slots of dead processes.
    pub(crate) dead: Vec<u64>,
    /// The heap's tiling (quarantined ranges included, as blocks with quarantine tags).
    pub(crate) blocks: Vec<BlockInfo>,
    /// Every span kept, as checked (their counts clamped, page pointers as decided).
    pub(crate) spans: Vec<ScannedSpan>,
    /// Pages no kept span names: freed.
    pub(crate) orphans: Vec<u64>,
    /// The references kept.
    pub(crate) references: Vec<Reference>,
    /// Blocks left as they are, counted or not: a living process kept out of the recovery's
    /// reach what may be moving them (a ring whose lock it held: `channel/held.rs`). With any
    /// such (`Session::pending`), so is every block whose word says it is between a sender and
    /// its ring (one hold, no owner, unpublished) that nothing else counts.
    pub(crate) untouchable: std::collections::BTreeSet<u64>,
    /// Whether blocks on the exchange (`cache/exchange.rs`) are left as they are: a living
    /// process kept one of its stacks (`exchange::Frozen::all`). Otherwise they are freed.
    pub(crate) keep_exchange: bool,
    /// Unpublished blocks whose generation was never issued (it names nothing): zeroed.
    pub(crate) stale_generations: Vec<u64>,
    /// Salvage: published blocks whose generation or check word is wrong, given new ones.
    pub(crate) renew_blocks: Vec<u64>,
    /// Salvage: published slots whose page record is wrong, given new ones.
    pub(crate) renew_slots: Vec<Slot>,
    /// Salvage: references that name nothing valid, dropped.
    pub(crate) dropped: Vec<Reference>,
    /// Salvage: roots and channels whose name is damaged, renamed `salvaged-<offset>`, and
    /// table entries that their names do not find, moved under those names (`moved_names`).
    pub(crate) renamed: Vec<(Holder, String)>,
    /// Salvage: the entries of `renamed` that keep their names (moved only).
    pub(crate) moved_names: Vec<Holder>,
    /// The store's next generation after the recovery: above every one issued.
    pub(crate) next_gen: u64,
    /// Generations below this are issued ones (the store's next generation, unless that was
    /// damaged; for salvage, any a check word seals: see `Plan::make`).
    gen_limit: u64,
    /// An unpublished block's generation at or above this was never issued by the counter as
    /// read (the store's next generation): it names nothing, and is zeroed. If the counter was
    /// damaged, every unpublished block's generation is (1): the counter salvage sets again is
    /// known only after the scan, and an unpublished block needs none (it gets a new one when
    /// it is published).
    stale_limit: u64,
    /// Salvage: the store's generation counter was out of range and was set again.
    pub(crate) counter_restored: bool,
    /// Salvage: pages given back to their spans, (page header, span payload): the page's
    /// pointer to its span is written again.
    pub(crate) page_spans: Vec<(u64, u64)>,
    /// Salvage: used blocks whose tag it repairs, with their new tags.
    pub(crate) retags: Vec<(u64, Tag)>,
    /// Salvage: reference words of blocks and slots that references name but that are not
    /// published: published (after their records are renewed).
    pub(crate) publish: Vec<u64>,
    /// The store's key the plan checks against: the superblock's, or the one salvage found
    /// the check words agree on.
    key: u64,
    /// Salvage: the key the superblock gets again, if its own was damaged.
    pub(crate) new_key: Option<u64>,
    /// Salvage: referenced blocks whose size salvage gave back (a size cut short by less than
    /// a minimal block).
    pub(crate) resized: Vec<u64>,
    /// Salvage: blocks whose shared area's footer did not fit them: the shared flag is
    /// cleared, and the area's bytes read as the end of the block's own.
    pub(crate) unshared: Vec<u64>,
    /// Free the blocks that only cycles of links reach, too (`recovery::collect_cycles_locked`).
    pub(crate) collect_cycles: bool,
}

/// The plan's view of the tiling: used blocks by header offset, and the spans.
struct Index {
    used: BTreeMap<u64, Tag>,
    spans: HashMap<u64, ScannedSpan>,
}

impl Index {
    /// The slot `id` names in a span the scan kept, if it names one that was handed out.
    fn slot(&self, id: u64) -> Option<Slot> {
        self.spans.get(&(id & !(SPAN_SIZE - 1))).and_then(|s| s.slot(id))
    }

    /// Whether `target` (read from the store) names a used block users hold, or a slot in
    /// use, as the scan found them.
    fn holds(&self, core: &Core<'_>, target: u64) -> Result<bool> {
        if is_slot(target) {
            let Some(slot) = self.slot(target) else { return Ok(false) };
            return Ok(core.read(slot.rc_offset())? != 0);
        }
        Ok(self.used.get(&target).is_some_and(|t| t.is_plain_used()))
    }
}

impl Plan {
    /// Plans a recovery (or a salvage) of `heap` for the processes in `dead`. Reads only. In
    /// [`Mode::Recover`] an error means damage (nothing was, or will be, written).
    pub(crate) fn make(
        heap: &Heap,
        dead: Vec<u64>,
        sessions: &mut [Box<dyn Session>],
        mode: Mode,
    ) -> Result<Plan> {
        let core = heap.core();
        let next_gen = heap.region.load(SB_NEXT_GEN)?;
        let mut plan = Plan {
            mode,
            dead,
            blocks: Vec::new(),
            spans: Vec::new(),
            orphans: Vec::new(),
            references: Vec::new(),
            untouchable: Default::default(),
            keep_exchange: false,
            stale_generations: Vec::new(),
            renew_blocks: Vec::new(),
            renew_slots: Vec::new(),
            dropped: Vec::new(),
            renamed: Vec::new(),
            moved_names: Vec::new(),
            next_gen,
            gen_limit: next_gen,
            stale_limit: next_gen,
            counter_restored: false,
            page_spans: Vec::new(),
            retags: Vec::new(),
            publish: Vec::new(),
            key: heap.key(),
            new_key: None,
            resized: Vec::new(),
            unshared: Vec::new(),
            collect_cycles: false,
        };
        // Generations must fit a slot's page record: a counter beyond that was damaged.
        // Salvage takes the highest generation it finds sealed or recorded instead (handles
        // to blocks freed before the damage could then name new blocks again: salvage is for
        // a store that is damaged).
        if next_gen == 0 || next_gen > PAGE_GEN_MASK {
            plan.damage("generation counter out of range", SB_NEXT_GEN)?;
            plan.next_gen = 1;
            plan.gen_limit = PAGE_GEN_MASK;
            plan.stale_limit = 1;
            plan.counter_restored = true;
        }
        // Salvage takes a generation at or above the counter as the counter's fault, not the
        // block's (or slot's), when the block's check word seals it (for a slot, its record is
        // well formed): a power loss keeps a header written after a flush and not the
        // superblock's counter. Such blocks anchor the tiling and keep their records; the
        // counter is raised above them (`check_blocks`).
        // The counter it then sets must be in range too: a generation of `PAGE_GEN_MASK` or
        // more is the generation's fault.
        if mode == Mode::Salvage {
            plan.gen_limit = PAGE_GEN_MASK;
        }
        let mut candidates = Vec::new();
        for session in sessions.iter_mut() {
            session.read(heap, &mut plan, &mut candidates)?;
        }
        if mode == Mode::Salvage {
            plan.check_key(&core, &candidates)?;
        }
        plan.blocks = match mode {
            Mode::Recover => core.scan()?,
            Mode::Salvage => {
                let anchors = anchors(&core, plan.key, &candidates)?;
                let blocks = core.scan_salvage(&anchors)?;
                plan.note_resized(&core, &blocks, &candidates)?;
                blocks
            }
        };
        let index = plan.check_blocks(heap)?;
        // Kinds whose references are kept inside blocks read them from this tiling, as checked
        // (salvage gives a block whose quarantine bit a flip set its tag back).
        let blocks = std::mem::take(&mut plan.blocks);
        for (kind, session) in sessions.iter_mut().enumerate() {
            if let Some(refs) = session.tiled(heap, &blocks, &mut plan)? {
                candidates.retain(|r| r.holder.kind != kind);
                candidates.extend(refs);
            }
        }
        plan.blocks = blocks;
        plan.keep_references(&core, &index, sessions, candidates)?;
        if mode == Mode::Salvage {
            plan.room_for_pages(&index);
            // Tags the tolerant scan or the checks changed (quarantined ranges have theirs
            // written by the rebuild).
            for b in plan.blocks.iter().filter(|b| !b.tag.is_free() && !b.tag.is_quarantine()) {
                if core.tag(b.offset)?.with_prev_free(false) != b.tag.with_prev_free(false) {
                    plan.retags.push((b.offset, b.tag));
                }
            }
        }
        Ok(plan)
    }

    /// Damage found at `offset`: an error in [`Mode::Recover`], else `Ok` (the caller records
    /// the repair).
    fn damage(&self, what: &'static str, offset: u64) -> Result<()> {
        match self.mode {
            Mode::Recover => Err(Error::corrupt(what, offset)),
            Mode::Salvage => Ok(()),
        }
    }

    /// Checks every block of the tiling and every span; decides what happens to pages, to
    /// generations and check words, and to spans that are damaged. Returns the index the
    /// references are checked against.
    fn check_blocks(&mut self, heap: &Heap) -> Result<Index> {
        let core = heap.core();
        let mut top_gen = 0;
        for i in 0..self.blocks.len() {
            let b = self.blocks[i];
            if b.tag.is_quarantine() {
                self.check_quarantine(&core, i)?;
            }
            if self.blocks[i].tag.is_plain_used() {
                top_gen = top_gen.max(self.check_block(&core, self.key, b.offset)?);
                self.check_shared_area(heap, i)?;
            }
        }
        let mut used: BTreeMap<u64, Tag> =
            self.blocks.iter().filter(|b| !b.tag.is_free()).map(|b| (b.offset, b.tag)).collect();
        let spans = self.check_spans(&core, self.key, &mut used, &mut top_gen)?;
        let named: Vec<u64> = spans.values().map(|s| s.page).collect();
        self.orphans =
            used.iter().filter(|(o, t)| t.is_page() && !named.contains(o)).map(|(o, _)| *o).collect();
        let mut kept: Vec<ScannedSpan> = spans.values().copied().collect();
        kept.sort_by_key(|s| s.p);
        self.spans = kept;
        if self.mode == Mode::Salvage {
            self.next_gen = self.next_gen.max(top_gen.saturating_add(1));
        }
        Ok(Index { used, spans })
    }

    /// A used block's generation and check word. Returns its generation if a check word
    /// seals it (for salvage's next generation), else 0.
    fn check_block(&mut self, core: &Core<'_>, key: u64, off: u64) -> Result<u64> {
        let (gen, w) = (core.read(off + HDR_GEN)?, core.read(off + HDR_RC)?);
        if !rc::published(w) {
            if gen >= self.stale_limit {
                self.stale_generations.push(off);
            }
            return Ok(0);
        }
        // A check word that matches its generation seals both (it is a keyed hash): then a
        // generation not below the store's next one says the next one is what is wrong.
        let sealed = gen != 0 && core.read(off + HDR_CHECK)? == check_word(key, off, gen);
        if !sealed {
            self.damage("header check word is wrong", off)?;
            self.renew_blocks.push(off);
            return Ok(0);
        }
        if gen >= self.gen_limit {
            // Salvage: a generation no counter in range can stand above (one issued while the
            // counter was damaged) is renewed, and does not raise the counter.
            self.damage("generation from the future", off)?;
            self.renew_blocks.push(off);
            return Ok(0);
        }
        Ok(gen)
    }

    /// A used block's shared area must fit it (its footer is read from the block's last
    /// bytes). Salvage clears the shared flag of one that does not: the block keeps its bytes,
    /// the area's among them, and nothing is lost that was not already unreadable.
    fn check_shared_area(&mut self, heap: &Heap, i: usize) -> Result<()> {
        let b = self.blocks[i];
        if !b.tag.is_shared() || heap.shared_area(b.offset, b.tag).is_ok() {
            return Ok(());
        }
        self.damage("shared area does not fit its block", b.offset)?;
        self.blocks[i].tag = Tag(b.tag.0 & !FLAG_SHARED);
        self.unshared.push(b.offset);
        Ok(())
    }

    /// A quarantined range in the store has generation, reference and check words 0 (salvage
    /// wrote them so): one that has others is a block whose quarantine bit a flip set. Salvage
    /// clears the bit if the block then parses as a block users hold.
    fn check_quarantine(&mut self, core: &Core<'_>, i: usize) -> Result<()> {
        let b = self.blocks[i];
        let stored = core.tag(b.offset)?;
        if !stored.is_quarantine() {
            return Ok(()); // fenced off by this salvage's scan
        }
        if header_words_zero(core, b.offset) {
            return Ok(());
        }
        self.damage("quarantined range with a block's header", b.offset)?;
        let plain = Tag(stored.0 & !FLAG_QUARANTINE).with_prev_free(false);
        if plain.well_formed() && plain.is_plain_used() && plain.size() == b.tag.size() {
            self.blocks[i].tag = plain;
        }
        Ok(())
    }

    /// Checks every span (`used` holds the tiling's used blocks): its header, its page, its
    /// published slots' records. Salvage fences off a span whose header is damaged (where its
    /// slots lie is unknown), gives a span back a page that only its page's header lost, or
    /// renews the records a damaged page held.
    fn check_spans(
        &mut self,
        core: &Core<'_>,
        key: u64,
        used: &mut BTreeMap<u64, Tag>,
        top_gen: &mut u64,
    ) -> Result<HashMap<u64, ScannedSpan>> {
        let mut spans = HashMap::new();
        let hdrs: Vec<u64> = used.iter().filter(|(_, t)| t.is_span()).map(|(o, _)| *o).collect();
        for hdr in hdrs {
            let p = hdr + HEADER_SIZE;
            let is_page = |page: u64| used.get(&page).is_some_and(|t: &Tag| t.is_page());
            let span = match core.scan_span(key, p, is_page)? {
                Ok(span) => span,
                Err(SpanDamage::Page(mut span)) => {
                    self.damage("span names no page of its own", p)?;
                    span.page = self.restore_page(core, p, span.class, used)?;
                    span
                }
                Err(SpanDamage::Header) => {
                    self.damage("span header is wrong", p)?;
                    self.retag(hdr, Tag::quarantine(used[&hdr].size()), used);
                    continue;
                }
            };
            for slot in core.bad_records(&span, self.gen_limit)? {
                self.damage("published slot without a valid record", slot.id())?;
                self.renew_slots.push(slot);
            }
            *top_gen = (*top_gen).max(core.top_record(&span, self.gen_limit)?);
            spans.insert(p, span);
        }
        Ok(spans)
    }

    /// Salvage: the page of the span at `p`, if its pointer names a block of the tiling that
    /// can be it, whose header alone was damaged: big enough, holding no one's data (a
    /// quarantined range, a free block, a page, or a used block with no reference word), and
    /// naming the span back, or a page naming no span of its own. It becomes the span's page
    /// again, its records intact. Returns its header offset, 0 if there is none.
    fn restore_page(
        &mut self,
        core: &Core<'_>,
        p: u64,
        class: u64,
        used: &mut BTreeMap<u64, Tag>,
    ) -> Result<u64> {
        let page = core.read(p + SPAN_PAGE)?;
        let Some(b) = self.blocks.iter().find(|b| b.offset == page).copied() else { return Ok(0) };
        let fits = b.tag.size() >= HEADER_SIZE + PAGE_ENTRIES + layout(class).0 * 8;
        let names = core.read(page + HEADER_SIZE + PAGE_SPAN)? == p;
        let nobodys = b.tag.is_quarantine()
            || b.tag.is_free()
            || b.tag.is_page()
            || b.tag.is_plain_used() && core.read(page + HDR_RC)? == 0;
        if !fits || !nobodys || !(names || b.tag.is_page()) {
            return Ok(0);
        }
        // Not another span's page.
        for (&hdr, _) in used.iter().filter(|(o, t)| t.is_span() && **o != p - HEADER_SIZE) {
            if core.read(hdr + HEADER_SIZE + SPAN_PAGE)? == page {
                return Ok(0);
            }
        }
        self.page_spans.push((page, p));
        self.retag(page, Tag::used(b.tag.size(), 0, 4).with(FLAG_PAGE), used);
        Ok(page)
    }

    /// Salvage: the block at `off` gets tag `tag` (in the tiling, in `used`, and in the store
    /// when the plan is applied).
    fn retag(&mut self, off: u64, tag: Tag, used: &mut BTreeMap<u64, Tag>) {
        used.insert(off, tag);
        if let Some(b) = self.blocks.iter_mut().find(|b| b.offset == off) {
            b.tag = tag;
        }
    }

    /// Salvage: the store's key, which every check word seals. If no check word of what the
    /// references name agrees with the superblock's key and at least two agree on another,
    /// the superblock's was damaged: salvage checks against theirs and writes it back. (Else
    /// every published header would read as damaged, and every span be fenced off.)
    fn check_key(&mut self, core: &Core<'_>, references: &[Reference]) -> Result<()> {
        let mut votes: HashMap<u64, u64> = HashMap::new();
        for r in references {
            let vote = match is_slot(r.target) {
                true => {
                    let p = r.target & !(SPAN_SIZE - 1);
                    match p.checked_sub(HEADER_SIZE).map(|h| core.block_at(h)) {
                        Some(Ok(t)) if t.is_span() && !t.is_free() => {
                            Some(key_of(core.read(p + SPAN_CHECK)?, p, SPAN_CHECK_GEN))
                        }
                        _ => None,
                    }
                }
                false => match core.block_at(r.target) {
                    Ok(t) if t.is_plain_used() && rc::published(core.read(r.target + HDR_RC)?) => {
                        let gen = core.read(r.target + HDR_GEN)?;
                        Some(key_of(core.read(r.target + HDR_CHECK)?, r.target, gen))
                    }
                    _ => None,
                },
            };
            if let Some(k) = vote {
                *votes.entry(k).or_default() += 1;
            }
        }
        let best = votes.iter().max_by_key(|(_, &n)| n).map(|(&k, &n)| (k, n));
        if let Some((k, _)) = best.filter(|&(k, n)| k != self.key && n >= 2 && !votes.contains_key(&self.key))
        {
            self.damage("store key does not match its check words", SB_KEY)?;
            self.key = k;
            self.new_key = Some(k);
        }
        Ok(())
    }

    /// Salvage: the referenced blocks whose size its scan gave back (their tags in `blocks`
    /// are longer than in the store).
    fn note_resized(
        &mut self,
        core: &Core<'_>,
        blocks: &[BlockInfo],
        references: &[Reference],
    ) -> Result<()> {
        for b in blocks.iter().filter(|b| b.tag.is_plain_used()) {
            if core.tag(b.offset)?.size() != b.tag.size() && references.iter().any(|r| r.target == b.offset) {
                self.resized.push(b.offset);
            }
        }
        Ok(())
    }

    /// Keeps the references that name a block users hold (or a slot in use) as the scan found
    /// it; the others are damage (salvage drops them, with every reference that goes with them:
    /// a channel's queued messages with its entry).
    fn keep_references(
        &mut self,
        core: &Core<'_>,
        index: &Index,
        sessions: &[Box<dyn Session>],
        candidates: Vec<Reference>,
    ) -> Result<()> {
        // A block queued unpublished by a sole send has the ring's one hold and no other: a
        // second reference to it (a slot word or a root hit so that it names it) is damage,
        // and salvage drops it (the sole one is what the block's word agrees with), before
        // anything is decided from it (its block published, say).
        let sole: std::collections::HashSet<u64> = candidates
            .iter()
            .filter(|r| sessions[r.holder.kind].sole(r) && !sessions[r.holder.kind].gone(&r.holder))
            .map(|r| r.target)
            .collect();
        let mut seen = std::collections::HashSet::new();
        for r in candidates {
            let session = &sessions[r.holder.kind];
            let gone = session.gone(&r.holder);
            if !gone && sole.contains(&r.target) && !(session.sole(&r) && seen.insert(r.target)) {
                self.damage("a block queued unpublished is named twice", r.target)?;
                self.dropped.push(r);
                continue;
            }
            if !gone && index.holds(core, r.target)? {
                self.check_published(core, index, session.as_ref(), r)?;
                self.references.push(r);
                continue;
            }
            if !gone {
                self.damage(session.names_nothing(&r.holder), r.target)?;
            }
            self.dropped.push(r);
        }
        // What goes with a dropped reference goes too.
        let dropped = self.dropped.clone();
        let goes = |r: &Reference| {
            dropped.iter().any(|d| {
                d.holder.kind == r.holder.kind && sessions[d.holder.kind].goes_with(&d.holder, &r.holder)
            })
        };
        let (lost, kept): (Vec<Reference>, Vec<Reference>) = self.references.drain(..).partition(goes);
        self.references = kept;
        self.dropped.extend(lost);
        let dropped = self.dropped.clone();
        self.renamed.retain(|(h, _)| sessions[h.kind].renames(h, &dropped));
        Ok(())
    }

    /// A root, a channel's ring and a hold name only published blocks (setting a root,
    /// making a channel and resolving a handle publish them first); a queued message's block
    /// may be unpublished when its slot word carries its length (a send of a sole reference
    /// queues it so) and, for a block, when it does not (the locked send publishes it by its
    /// last step; a slot, though, is published first). Another unpublished one is damage (its
    /// reference word was hit): salvage publishes it with a new generation.
    fn check_published(
        &mut self,
        core: &Core<'_>,
        index: &Index,
        session: &dyn Session,
        r: Reference,
    ) -> Result<()> {
        if session.may_be_unpublished(&r) {
            return Ok(());
        }
        let slot = index.slot(r.target);
        let word = match (is_slot(r.target), slot) {
            (true, Some(slot)) => slot.rc_offset(),
            (true, None) => return Ok(()), // not held: dropped by the caller
            (false, _) => r.target + HDR_RC,
        };
        if rc::published(core.read(word)?) || self.publish.contains(&word) {
            return Ok(());
        }
        self.damage("a root, channel or hold names an unpublished block", r.target)?;
        self.publish.push(word);
        match slot {
            Some(slot) if !self.renew_slots.contains(&slot) => self.renew_slots.push(slot),
            None if !self.renew_blocks.contains(&r.target) => self.renew_blocks.push(r.target),
            _ => {}
        }
        Ok(())
    }

    /// Salvage: a renewed record needs its span's page; a span left without one gets a new
    /// page from the free space. Where the free space has no room for it, the references to
    /// that span's slots are dropped (reported; the slots are freed) rather than leave a slot
    /// published without a record.
    fn room_for_pages(&mut self, index: &Index) {
        let mut runs: Vec<u64> = Vec::new();
        let mut run = 0;
        for b in &self.blocks {
            if b.tag.is_free() {
                run += b.tag.size();
            } else if run > 0 {
                runs.push(std::mem::take(&mut run));
            }
        }
        runs.push(run);
        let mut pageless: Vec<u64> = self
            .renew_slots
            .iter()
            .map(|s| s.span)
            .filter(|p| index.spans.get(p).is_some_and(|s| s.page == 0))
            .collect();
        pageless.dedup();
        for p in pageless {
            let class = index.spans[&p].class;
            let need =
                crate::engine::core::tlsf::block_size(PAGE_ENTRIES + layout(class).0 * 8).unwrap_or(u64::MAX);
            if let Some(r) = runs.iter_mut().find(|r| **r >= need) {
                *r -= need;
                continue;
            }
            let lost: Vec<Slot> = self.renew_slots.iter().copied().filter(|s| s.span == p).collect();
            self.renew_slots.retain(|s| s.span != p);
            self.publish.retain(|w| !lost.iter().any(|s| s.rc_offset() == *w));
            let (gone, kept): (Vec<Reference>, Vec<Reference>) =
                self.references.drain(..).partition(|r| lost.iter().any(|s| s.id() == r.target));
            self.references = kept;
            self.dropped.extend(gone);
        }
    }

    /// Other holds per block or slot: one per kept reference.
    pub(crate) fn holds(&self) -> HashMap<u64, u64> {
        let mut holds = HashMap::new();
        for r in &self.references {
            *holds.entry(r.target).or_default() += 1;
        }
        holds
    }
}

impl Reading for Plan {
    fn damage(&mut self, what: &'static str, offset: u64) -> Result<()> {
        Plan::damage(self, what, offset)
    }

    fn rename(&mut self, holder: Holder, target: u64) {
        let mut name = format!("salvaged-{target:#x}");
        if self.renamed.iter().any(|(_, n)| *n == name) {
            name = format!("{name}-{}", holder.entry);
        }
        self.renamed.push((holder, name));
    }

    fn keep_name(&mut self, holder: Holder, target: u64, name: String) {
        match self.renamed.iter().any(|(_, n)| *n == name) {
            true => self.rename(holder, target),
            false => {
                self.moved_names.push(holder);
                self.renamed.push((holder, name));
            }
        }
    }

    fn leave_alone(&mut self, target: u64) {
        self.untouchable.insert(target);
    }

    fn salvaging(&self) -> bool {
        self.mode == Mode::Salvage
    }

    fn dead(&self) -> &[u64] {
        &self.dead
    }
}

/// Salvage's anchors: the header offsets of the blocks that references name (for a slot, its
/// span's and its span's page), each whose own header checks out without the tiling: it parses
/// as a block users hold (a span or a page, for a slot) that fits in the heap, and a published
/// block's check word matches. Sorted, without duplicates.
fn anchors(core: &Core<'_>, key: u64, references: &[Reference]) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for r in references {
        match is_slot(r.target) {
            true => out.extend(span_anchor(core, key, r.target)?),
            false => out.extend(block_anchor(core, key, r.target)?),
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The header offset of the block `target` names, if its header checks out on its own (a
/// generation the counter has not reached yet is the counter's fault when the check word seals
/// it: see `Plan::make`).
fn block_anchor(core: &Core<'_>, key: u64, target: u64) -> Result<Option<u64>> {
    let Ok(t) = core.block_at(target) else { return Ok(None) };
    if !t.is_plain_used() {
        return Ok(None);
    }
    let (gen, w) = (core.read(target + HDR_GEN)?, core.read(target + HDR_RC)?);
    let sealed =
        gen != 0 && gen <= PAGE_GEN_MASK && core.read(target + HDR_CHECK)? == check_word(key, target, gen);
    Ok((!rc::published(w) || sealed).then_some(target))
}

/// The header offsets of the span of the slot `id` and of its page, if the span's header
/// checks out and the slot was handed out and is in use (the page, if it checks out too).
fn span_anchor(core: &Core<'_>, key: u64, id: u64) -> Result<Vec<u64>> {
    let p = id & !(SPAN_SIZE - 1);
    let Some(hdr) = p.checked_sub(HEADER_SIZE).filter(|&h| h >= HEAP_START) else { return Ok(Vec::new()) };
    match core.block_at(hdr) {
        Ok(t) if t.is_span() && !t.is_free() => {}
        _ => return Ok(Vec::new()),
    }
    // The page pointer is not followed here (`|_| false`), only below, checked.
    let span = match core.scan_span(key, p, |_| false)? {
        Ok(span) | Err(SpanDamage::Page(span)) => span,
        Err(SpanDamage::Header) => return Ok(Vec::new()),
    };
    let in_use = span.slot(id).map(|s| core.read(s.rc_offset())).transpose()?.is_some_and(|w| w != 0);
    if !in_use {
        return Ok(Vec::new());
    }
    // The span's page holds the slot's record: an anchor too, if it checks out as the span's.
    let page = core.read(p + SPAN_PAGE)?;
    let page_ok = page != 0
        && core.block_at(page).is_ok_and(|t| t.is_page() && !t.is_free())
        && core.read(page + HEADER_SIZE + PAGE_SPAN)? == p;
    Ok(if page_ok { vec![hdr, page] } else { vec![hdr] })
}

/// Whether the generation, reference and check words of the header at `off` are all 0, as
/// salvage writes them for a quarantined range.
pub(crate) fn header_words_zero(core: &Core<'_>, off: u64) -> bool {
    [HDR_GEN, HDR_RC, HDR_CHECK].iter().all(|&w| matches!(core.read(off + w), Ok(0)))
}
