//! Slots in the heap engine: blocks of at most [`SLOT_MAX`] bytes that live in spans
//! (`core/span.rs`) and are named by ids (`SLOT_MARK`) wherever a block is named by its header
//! offset: in `MemoryBlock`s, handles, roots, hold tables and channel rings.
//!
//! What differs from a block: the reference word is in the span's table (same encoding, same
//! rules), the size is the span's slot size, and the generation and length of a published slot
//! are in its span's publication page, written under the lock when the slot is first
//! published (an unpublished slot's length is known only to its owner's `MemoryBlock`s, as a
//! lent block's is). Only `MemoryBlock` allocations of the default alignment in a store of
//! format version 2 get slots; raw allocations (`GlobalAlloc`) keep their headers, since
//! `dealloc` finds a block from its pointer alone.

use crate::engine::core::header::rc;
use crate::engine::core::span::{layout, slot_class, Slot, PAGE_GEN_MASK, STARTS};
use crate::engine::core::tlsf::Core;
use crate::engine::heap::{Guard, Heap};
use crate::error::{Error, Result};
use crate::format::*;
use crate::sync::{AtomicU64, Ordering};
use crate::BlockHandle;

/// Slots freed with one update of their span ([`Heap::free_slots_locked`]).
const RUN: usize = 64;

/// Slot sizes in granules are 1, 2, 3 and 4: 2^SHIFT * (1 or 3).
const SHIFT: [u32; SLOT_CLASSES as usize] = [0, 1, 0, 2];
/// The inverse modulo 2^64 of each size's odd factor.
const MUL: [u64; SLOT_CLASSES as usize] = [1, 1, 0xaaaa_aaaa_aaaa_aaab, 1];
const _: () = assert!(3u64.wrapping_mul(MUL[2]) == 1);

impl Heap {
    /// Offset of the reference word of slot `id`, a slot this process holds a reference to
    /// (its span and size were checked when the reference was obtained, and a span with a slot
    /// in use stays). Computed from the id alone: the span's header is not read (a hot word
    /// every span has at the same offset, so in the same cache set). For an id that names no
    /// place in the store the offset is out of range (it wraps), which the caller's range check
    /// refuses.
    #[inline]
    pub(crate) fn slot_rc_offset(&self, id: u64) -> u64 {
        let span = id & !(SPAN_SIZE - 1);
        let k = (id & (SLOT_CLASSES - 1)) as usize;
        // The slot's byte offset among the slots is a multiple of its size, 16 << SHIFT * MUL⁻¹:
        // dividing exactly by 3 is multiplying by its inverse modulo 2^64. Without a branch on
        // the size, which a mix of sizes would mispredict on every release.
        let from = (payload_of(id).wrapping_sub(span).wrapping_sub(STARTS[k]) >> 4) >> SHIFT[k];
        from.wrapping_mul(MUL[k]).wrapping_mul(8).wrapping_add(span + SPAN_RC)
    }

    /// The reference word of slot `id`, checked from scratch (for ids read from the store).
    pub(crate) fn slot_word(&self, id: u64) -> Result<&AtomicU64> {
        let slot = self.core().slot_at(self.key(), id)?;
        self.region.u64_at(slot.rc_offset())
    }

    /// Whether `id` names a slot in use (a root or a hold table may name it).
    pub(crate) fn slot_in_use(&self, id: u64) -> bool {
        self.slot_word(id).is_ok_and(|w| w.load(Ordering::Acquire) != 0)
    }

    /// Takes a slot of `class` bytes under the lock, making a span (and growing the heap for
    /// it) if no span of that size has a free one. The slot's reference word is set to `word`.
    fn take_slot_locked(&self, g: &Guard<'_>, class: u64, word: u64) -> Result<Slot> {
        loop {
            if let Some(slot) = self.core().take_slot(class)? {
                self.region.u64_at(slot.rc_offset())?.store(word, Ordering::Release);
                return Ok(slot);
            }
            self.with_room(g, SPAN_SIZE - HEADER_SIZE, SPAN_ALIGN_LOG2, |core, exact| {
                core.carve_span(self.key(), class, exact)
            })?;
        }
    }

    /// Allocates a slot for `len` bytes under the lock: one owner reference of this process.
    /// Returns its id. A block with a header of its own instead if `len` is above
    /// [`SLOT_MAX`], or if the store has no room left for a span (which needs 64 KiB in one
    /// piece) but has for the block.
    pub(crate) fn allocate_slot_locked(&self, g: &Guard<'_>, len: u64) -> Result<u64> {
        let Some(class) = slot_class(len) else { return self.allocate_locked(g, len, 4) };
        match self.take_slot_locked(g, class, rc::fresh(u64::from(self.tag()))) {
            Err(Error::OutOfSpace { .. }) => self.allocate_locked(g, len, 4),
            other => other.map(Slot::id),
        }
    }

    /// Takes up to `out.len()` slots of `class` bytes for a thread cache, parked (owned by this
    /// process, count zero), under the lock. Returns how many, each as (id, size).
    pub(crate) fn carve_parked_slots(
        &self,
        g: &Guard<'_>,
        class: u64,
        out: &mut [(u64, u64)],
    ) -> Result<usize> {
        let parked = rc::parked(u64::from(self.tag()));
        for (n, entry) in out.iter_mut().enumerate() {
            match self.take_slot_locked(g, class, parked) {
                Ok(slot) => *entry = (slot.id(), class),
                Err(Error::OutOfSpace { .. }) if n > 0 => return Ok(n),
                Err(e) => return Err(e),
            }
        }
        Ok(out.len())
    }

    /// Frees slot `id`, which nobody holds any more (count zero), under the lock.
    pub(crate) fn free_slot_locked(&self, g: &Guard<'_>, id: u64) -> Result<()> {
        self.free_slots_locked(g, &[id])
    }

    /// Frees the slots `ids` (distinct; nobody holds them any more), under the lock, a run of
    /// slots of one span at a time: the span's header (its check word, a keyed hash, and tag)
    /// is checked once per run, and its fields and the store's counters updated once
    /// (`Core::give_slots`). Returns the first error: a slot that is not one (a corrupt
    /// store) is left as it is, for recovery, and the others are freed.
    pub(crate) fn free_slots_locked(&self, _g: &Guard<'_>, ids: &[u64]) -> Result<()> {
        let core = self.core();
        let mut result = Ok(());
        let mut rest = ids;
        while let Some(&first) = rest.first() {
            let p = first & !(SPAN_SIZE - 1);
            let run = rest.iter().take(RUN).take_while(|&&id| id & !(SPAN_SIZE - 1) == p).count();
            let (this, next) = rest.split_at(run);
            rest = next;
            let freed = self.free_run(&core, p, this);
            if result.is_ok() {
                result = freed;
            }
        }
        result
    }

    /// Frees the slots `ids` (at most [`RUN`]) of the span at `p` ([`Heap::free_slots_locked`]).
    fn free_run(&self, core: &Core<'_>, p: u64, ids: &[u64]) -> Result<()> {
        let first = core.slot_at(self.key(), ids[0])?;
        let mut indices = [0u64; RUN];
        let mut n = 0;
        let mut bad = Ok(());
        for &id in ids {
            match core.slot_in(p, id) {
                Ok(slot) => {
                    self.region.u64_at(slot.rc_offset())?.store(0, Ordering::Release);
                    indices[n] = slot.index;
                    n += 1;
                }
                Err(e) => bad = Err(e),
            }
        }
        core.give_slots(p, first.class, &indices[..n])?;
        bad
    }

    /// Publishes slot `id` (held by the caller, `len` bytes long): records a new generation and
    /// the length in its span's page, then sets the published bit, all under the lock, so the
    /// page entry of a published slot never changes. Nothing to do if it is published already.
    /// Fails only when the store has no room left for the span's page.
    pub(crate) fn publish_slot_locked(&self, g: &Guard<'_>, id: u64, len: u64) -> Result<()> {
        let slot = self.core().slot_at(self.key(), id)?;
        let word = self.region.u64_at(slot.rc_offset())?;
        if rc::published(word.load(Ordering::Acquire)) {
            return Ok(());
        }
        let need = PAGE_ENTRIES + layout(slot.class).0 * 8;
        let page = self.with_room(g, need, 4, |core, exact| core.span_page(slot.span, slot.class, exact))?;
        let (gen, _) = self.reserve_generations(g, 1)?;
        let slack = slot.class - len.min(slot.class);
        self.region.store(page + PAGE_ENTRIES + slot.index * 8, gen | slack << 56)?;
        word.fetch_or(rc::PUBLISHED, Ordering::AcqRel);
        Ok(())
    }

    /// Changes the length a published slot's page records (a resize in place), under the lock.
    pub(crate) fn set_slot_len(&self, _g: &Guard<'_>, id: u64, len: u64) -> Result<()> {
        let core = self.core();
        let slot = core.slot_at(self.key(), id)?;
        if let Some(page) = core.page_of(slot.span)? {
            let entry = page + PAGE_ENTRIES + slot.index * 8;
            let gen = self.region.load(entry)? & PAGE_GEN_MASK;
            self.region.store(entry, gen | (slot.class - len) << 56)?;
        }
        Ok(())
    }

    /// Generation and length of published slot `id`, from its page.
    pub(crate) fn slot_record(&self, id: u64) -> Result<(u64, u64)> {
        self.record_of(self.core().slot_at(self.key(), id)?)
    }

    /// [`Heap::slot_record`] of a slot located already.
    fn record_of(&self, slot: Slot) -> Result<(u64, u64)> {
        let id = slot.id();
        let page =
            self.core().page_of(slot.span)?.ok_or(Error::corrupt("published slot without a page", id))?;
        let entry = self.region.load(page + PAGE_ENTRIES + slot.index * 8)?;
        let slack = entry >> 56;
        if slack > slot.class {
            return Err(Error::corrupt("slot length out of range", id));
        }
        Ok((entry & PAGE_GEN_MASK, slot.class - slack))
    }

    /// The length of slot `id` as a dump shows it: its record's if it was published, else its
    /// size. An error if it is free.
    pub(crate) fn slot_len_for_dump(&self, id: u64) -> Result<u64> {
        let slot = self.core().slot_at(self.key(), id)?;
        let w = self.region.load(slot.rc_offset())?;
        if w == 0 {
            return Err(Error::InvalidHandle { what: "the slot is free", offset: id });
        }
        match rc::published(w) {
            true => self.record_of(slot).map(|(_, len)| len),
            false => Ok(slot.class),
        }
    }

    /// Checks a handle that names a slot: a slot of a span, handed out, with that generation.
    pub(crate) fn validate_slot_handle(&self, h: BlockHandle) -> Result<u64> {
        let stale = Error::StaleHandle { offset: h.offset, generation: h.generation };
        // A slot id in the heap whose generation was issued, where no span is now, named a
        // slot whose span has been emptied and given back since: stale, as a freed block's.
        let Ok(slot) = self.core().slot_at(self.key(), h.offset) else { return Err(stale) };
        let w = self.region.load(slot.rc_offset())?;
        if !rc::published(w) || rc::count(w) == 0 {
            return Err(stale);
        }
        match self.record_of(slot) {
            Ok((gen, _)) if gen == h.generation => Ok(h.offset),
            _ => Err(stale),
        }
    }
}
