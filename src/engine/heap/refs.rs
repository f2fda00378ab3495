//! The reference protocol on block headers (and slots' reference words): owner references
//! and other holds, releasing, publishing, resolving handles and moving references into and
//! out of store structures. ARCHITECTURE.md, "References", gives the rules.

use super::*;
use crate::engine::heap::family::family_ends;

impl Heap {
    /// Adds `n` owner references to a block this process holds one of (cloning an owner-kind
    /// `MemoryBlock`, or counting a lent one's: `MemoryBlock::end_lending`). An error, with
    /// the word as it was, if the count would overflow: 2^32 references, or a word a damaged
    /// store changed (overflowing would let the block be freed while in use).
    #[inline]
    pub(crate) fn add_owner_refs(&self, off: u64, n: u64) -> Result<()> {
        let word = self.rc_ref(off).expect("a held block is in range");
        let prev = word.fetch_add(n, Ordering::Relaxed);
        if rc::owner_refs(prev) > rc::OWNER_REFS_MASK - n {
            word.fetch_sub(n, Ordering::Relaxed);
            return Err(Error::corrupt("reference count out of range", off));
        }
        Ok(())
    }

    /// Takes back one owner reference that [`Heap::add_owner_refs`] added while more are
    /// counted (a lost race to end a lending): never the last, so nothing is released.
    pub(crate) fn drop_counted_owner_ref(&self, off: u64) {
        let word = self.rc_ref(off).expect("a held block is in range");
        // The protocol makes it never the last (a word a damaged store changed could say
        // otherwise; nothing here depends on it).
        word.fetch_sub(1, Ordering::Relaxed);
    }

    /// Releases the reference of a block lent from this thread's cache with `size` bytes
    /// (`MemoryBlock`'s `at`; the caller's handle knows both): its only reference, never
    /// published, its reference word still parked, so it parks again without touching its
    /// header, whose line a block released long after its allocation has left the cache. Then
    /// ends the reference's family (`family.rs`), counted in the cache that parks the block.
    ///
    /// # Safety
    ///
    /// As for [`crate::engine::heap::family::family_ends`]: the caller's reference was its family's last (a
    /// lent one is), and the caller does not use the heap after this call.
    #[inline]
    pub(crate) unsafe fn release_lent(&self, off: u64, size: u64) {
        // The header is not read: the handle's size is the proof of the lending (a word that a
        // damaged store changed meanwhile changes nothing here).
        // `park_or_free_sized` for a default-aligned block, written out so that the stack
        // push inlines into the caller's drop. A lost heap parks nothing: the block stays
        // parked in the store for the next opener's recovery.
        if self.lost() {
            // SAFETY: the caller's contract.
            return unsafe { family_ends(NonNull::from(self)) };
        }
        if let Some(c) = self.cache() {
            if c.put(self, off, size, is_slot(off)) || c.defer(self, off, size) {
                // Nothing touches the heap after this: the ending may let it go.
                return c.end_family();
            }
        }
        self.free_parked_now(off);
        // SAFETY: the caller's contract.
        unsafe { family_ends(NonNull::from(self)) }
    }

    /// Drops an owner reference; the last one clears ownership and frees the block if nobody
    /// else holds it (or parks it). Returns whether it was this process's last owner
    /// reference to the block.
    #[inline]
    pub(crate) fn release_owner(&self, off: u64) -> bool {
        let Some(word) = self.rc_ref(off) else { return false };
        if self.lost() {
            return self.release_owner_lost(off, word);
        }
        let sole = rc::fresh(u64::from(self.tag));
        if word.load(Ordering::Acquire) == sole {
            // The only reference, never published: nobody else can change the word now (no
            // handle names the block, no other reference exists to clone or publish it, and
            // a stale resolver's compare-and-swap expects the published bit), so a plain store
            // releases it; the acquire load ordered the releases of earlier clones before us.
            word.store(rc::parked(u64::from(self.tag)), Ordering::Release);
            // SAFETY: `word` was range-checked above.
            unsafe { self.park_or_free(off) };
            return true;
        }
        let prev = word.fetch_sub(1, Ordering::Release);
        if rc::owner_refs(prev) > 1 {
            return false;
        }
        if rc::owner_refs(prev) == 0 || rc::owner(prev) != u64::from(self.tag) {
            // We held an owner reference, so the word was damaged (a store is never trusted):
            // give the unit back and leak the block rather than free what others may hold, and
            // keep the family (and so the heap) alive rather than risk ending it early.
            word.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        fence(Ordering::Acquire);
        if rc::count(prev) == 1 {
            // Nobody else holds it: it stays ours, parked (or freed). Nobody can change a word
            // whose count is 0, so a plain store clears the published bit: a block is parked
            // unpublished, and lent so (see `MemoryBlock`'s `at`).
            word.store(rc::parked(u64::from(self.tag)), Ordering::Relaxed);
            // SAFETY: `word` was range-checked above.
            unsafe { self.park_or_free(off) };
            return true;
        }
        if let Ok(g) = self.lock() {
            let w = word.fetch_and(!rc::OWNER_MASK, Ordering::AcqRel) & !rc::OWNER_MASK;
            if rc::count(w) == 0 {
                // Errors mean a corrupt store; the block is leaked rather than risk more damage.
                let _ = self.free_unheld_locked(&g, off);
            }
        }
        true
    }

    /// Frees a block the caller holds as its only reference (under the lock).
    pub(crate) fn free_owned_locked(&self, g: &Guard<'_>, off: u64) -> Result<()> {
        if is_slot(off) {
            return self.free_slot_locked(g, off); // zeroes the word itself
        }
        self.rc_word(off)?.store(0, Ordering::Release);
        self.free_unheld_locked(g, off)
    }

    /// Frees a block recovery found held by nobody living, as it is: recovery counted what it
    /// links (`engine/recovery/apply.rs`), so its links are not released again. Under the lock.
    pub(crate) fn free_doomed_locked(&self, g: &Guard<'_>, off: u64) -> Result<()> {
        if !is_slot(off) {
            self.rc_word(off)?.store(0, Ordering::Release);
        }
        self.free_unlinked_locked(g, off)
    }

    /// Frees a block or slot whose reference word is 0 (under the lock), and, for a linked
    /// block, releases what it links (`links.rs`).
    fn free_unheld_locked(&self, g: &Guard<'_>, off: u64) -> Result<()> {
        if !is_slot(off) && self.core().block_at(off)?.is_linked() {
            return self.free_linked_locked(g, off);
        }
        self.free_unlinked_locked(g, off)
    }

    /// Frees a block or slot whose reference word is 0, leaving whatever its bytes link alone.
    pub(crate) fn free_unlinked_locked(&self, g: &Guard<'_>, off: u64) -> Result<()> {
        match is_slot(off) {
            true => self.free_slot_locked(g, off),
            false => {
                let (freed, start, size) = self.core().free_merging(off)?;
                self.note_free(off, freed, start, size);
                Ok(())
            }
        }
    }

    /// Drops this process's other hold on a block (the last clone of a hold-kind
    /// `MemoryBlock`), clearing its hold-table entry and freeing the block if that was the
    /// last reference.
    pub(crate) fn release_hold(&self, off: u64, index: Option<u64>) -> Result<()> {
        let g = self.lock()?;
        self.release_hold_locked(&g, off)?;
        match (index, self.slot()) {
            (Some(i), Some(slot)) => self.hold_table().erase(self, &g, slot, i),
            _ => Ok(()),
        }
    }

    pub(super) fn hold_table(&self) -> std::sync::MutexGuard<'_, HoldTable> {
        self.holds.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn release_hold_locked(&self, g: &Guard<'_>, off: u64) -> Result<()> {
        if self.drop_hold_locked(off)? {
            self.free_unheld_locked(g, off)?;
        }
        Ok(())
    }

    /// Drops one other hold on `off` (under the lock). Returns whether nobody holds the block
    /// now (count 0, no owner): the caller frees it.
    pub(crate) fn drop_hold_locked(&self, off: u64) -> Result<bool> {
        let word = self.rc_word(off)?;
        let mut w = word.load(Ordering::Acquire);
        loop {
            if rc::other(w) == 0 {
                return Err(Error::corrupt("releasing a hold the block does not have", off));
            }
            match word.compare_exchange_weak(w, w - rc::OTHER_ONE, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => w = now,
            }
        }
        let w = w - rc::OTHER_ONE;
        Ok(rc::count(w) == 0 && rc::owner(w) == 0)
    }

    /// Adds an other hold to a block this process holds already (for roots); under the lock.
    pub(crate) fn add_hold_locked(&self, off: u64) -> Result<()> {
        let word = self.rc_word(off)?;
        word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
            (rc::other(w) < rc::OTHER_MAX).then(|| (w + rc::OTHER_ONE) | rc::PUBLISHED)
        })
        .map(drop)
        .map_err(|_| Error::TooManyHolds { offset: off })
    }

    /// Completes the header of the held block at `off` before others can name it (a root, a
    /// channel, a handle): `len` into the tag (as its slack), a new generation and its check
    /// word, and with `publish` (taking a handle) sets the published bit in the same hold of
    /// the lock (see [`Heap::settle_locked`]). A block lent from a thread cache keeps
    /// the slack, generation and check word of its previous allocation until then: only its
    /// owner can name it, the owner's `MemoryBlock` knows the length, and no handle resolves to
    /// an unpublished block, so the old generation names nothing. A published block was settled
    /// when it was published: nothing to do, no lock.
    ///
    /// A slot is published here outright ([`Heap::publish_slot_locked`]), which fails when the
    /// store has no room for its span's publication page.
    pub(crate) fn settle(&self, off: u64, len: u64, publish: bool) -> Result<()> {
        if let Some(e) = self.lost_error() {
            return Err(e); // the header may be in a lost page
        }
        if rc::published(self.rc(off)) {
            return Ok(());
        }
        let g = self.lock()?;
        self.settle_locked(&g, off, len)?;
        if publish {
            self.publish(off);
        }
        Ok(())
    }

    /// [`Heap::settle`] under the lock. The generation changes only here, under the lock and
    /// while the block is unpublished, and every publication happens under the lock too, so
    /// the generation a handle reads after publishing never changes while the block lives
    /// (two threads may publish one allocation at once: a `MemoryBlock` is `Sync`).
    pub(crate) fn settle_locked(&self, g: &Guard<'_>, off: u64, len: u64) -> Result<()> {
        if is_slot(off) {
            return self.publish_slot_locked(g, off, len);
        }
        if rc::published(self.rc_word(off)?.load(Ordering::Acquire)) {
            return Ok(());
        }
        let word = self.region.u64_at(off + HDR_TAG)?;
        let t = Tag(word.load(Ordering::Relaxed));
        // The slack of a block with links or a shared area was settled when it was made
        // (`links.rs`, `shared.rs`): the length its users see is shorter than the block's.
        let len = if t.has_trailer() { t.len() } else { len };
        let slack = t
            .size()
            .checked_sub(HEADER_SIZE + len)
            .ok_or(Error::corrupt("block shorter than its length", off))?;
        if slack > MAX_SLACK {
            // A block of a cache class above `len`'s size (up to an eighth larger): its slack
            // does not fit the tag, so the excess goes back to the heap, and the shrink
            // writes the slack. Nobody else can name the block yet, and the caller's
            // references all have length `len`.
            self.core().resize_in_place(off, len)?;
        } else if slack != t.slack() {
            // An atomic read-modify-write, as every change to a used block's tag is
            // (`docs/format.md`).
            let _ = word.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                Some(w & !(MAX_SLACK << 48) | slack << 48)
            });
        }
        let (gen, _) = self.reserve_generations(g, 1)?;
        self.region.store(off + HDR_GEN, gen)?;
        self.region.store(off + HDR_CHECK, check_word(self.key(), off, gen))
    }

    /// The payload capacity of the block (or slot) at `off` if the caller's is its only
    /// reference, an owner one of this process, and it was never published: nobody else can
    /// then change its header, so a resize within that capacity changes nothing in the store
    /// (the slack in the tag is settled if the block is ever published, `settle_locked`).
    /// `None` otherwise, or if the header is not one a holder could have.
    pub(crate) fn sole_capacity(&self, off: u64) -> Option<u64> {
        let w = self.rc_ref(off)?.load(Ordering::Acquire);
        if rc::count(w) != 1 || rc::published(w) || rc::owner(w) != u64::from(self.tag) {
            return None;
        }
        if is_slot(off) {
            return Some(id_class(off));
        }
        // A link table or shared area follows the bytes its users see: no room to grow into.
        let t = self.core().block_at(off).ok().filter(|t| t.holdable() && !t.has_trailer())?;
        t.size().checked_sub(HEADER_SIZE)
    }

    /// Turns this process's only reference to a block that was never published into a
    /// channel ring's hold, without the lock: the reference word becomes one other hold, no
    /// owner, still unpublished (so no handle resolves to it, and nothing but the ring reaches
    /// it). `lent`: the caller's handle says the block is lent (its word still parked). `false`,
    /// with nothing changed, when the reference is not alone: the caller takes the locked way.
    /// The caller holds the ring's send lock and queues the block before letting it go, so
    /// recovery, which takes that lock first, finds the word and the ring in step
    /// (`channel/ring.rs`).
    pub(crate) fn give_sole_to_ring(&self, off: u64, lent: bool) -> bool {
        let Some(word) = self.rc_ref(off) else { return false };
        // A lent block's word is parked and nobody else can change it (`MemoryBlock`'s `at`);
        // a counted one is alone when the word says one owner reference, ours, unpublished:
        // then too no other reference exists to change it.
        if !lent && word.load(Ordering::Acquire) != rc::fresh(u64::from(self.tag)) {
            return false;
        }
        word.store(rc::OTHER_ONE, Ordering::Release);
        true
    }

    /// Takes a block queued unpublished (`give_sole_to_ring`) out of a ring as this process's
    /// owner reference, without the lock; `len` is the length the ring carried, checked
    /// against the block's room (nothing read from the store is trusted). The caller holds the
    /// ring's receive lock.
    pub(crate) fn take_from_ring(&self, off: u64, len: u64) -> Result<Obtained> {
        let damaged = Error::corrupt("channel slot names no block queued unpublished", off);
        let word = self.rc_ref(off).filter(|_| self.carries(off, len)).ok_or(damaged)?;
        let mine = rc::fresh(u64::from(self.tag));
        word.compare_exchange(rc::OTHER_ONE, mine, Ordering::AcqRel, Ordering::Acquire)
            .map_err(|_| Error::corrupt("channel message's reference word is not the ring's", off))?;
        Ok(Obtained { offset: off, len, kind: RefKind::Owner, hold_index: None, new_family: true })
    }

    /// Whether the block (or slot) at `off` is one a holder could have with room for `len`
    /// bytes: what a ring's slot word that carries `len` must name.
    pub(crate) fn carries(&self, off: u64, len: u64) -> bool {
        let room = if is_slot(off) {
            self.slot_in_use(off).then(|| id_class(off))
        } else {
            self.core()
                .block_at(off)
                .ok()
                .filter(|t| t.holdable())
                .and_then(|t| t.size().checked_sub(HEADER_SIZE))
        };
        room.is_some_and(|r| len <= r)
    }

    /// Marks the block as published: from now on everyone sees it read-only.
    pub(crate) fn publish(&self, off: u64) {
        if let Ok(word) = self.rc_word(off) {
            word.fetch_or(rc::PUBLISHED, Ordering::AcqRel);
        }
    }

    /// The reference word of a held block.
    #[inline]
    pub(crate) fn rc(&self, off: u64) -> u64 {
        self.rc_ref(off).map_or(0, |w| w.load(Ordering::Acquire))
    }

    /// Turns a handle into a new reference, checking range, header and generation.
    pub(crate) fn resolve(&self, h: BlockHandle) -> Result<Obtained> {
        let g = self.lock()?;
        let off = self.validate_handle(h)?;
        let stale = Error::StaleHandle { offset: h.offset, generation: h.generation };
        self.acquire_locked(&g, off, Some(h.generation)).ok_or(stale)?
    }

    /// Adds a reference to the used block at `off` for this process (under the lock): an
    /// owner reference if this process owns it, or no process does, and this is not a handle
    /// (`expect_gen` is `None`: a root), else an other hold, recorded in this process's hold
    /// table. `None` if the block is being freed, parked or lent, or (with
    /// `expect_gen`) now carries another generation.
    ///
    /// A handle resolves only to a published block (taking a handle publishes). Its generation
    /// is read again after the hold is counted: the block's owner may have parked, lent
    /// and published it again (lock-free: a lent block starts unpublished, and its
    /// publication replaces the generation before it sets the published bit, `settle`) since
    /// the handle was validated; the published bit our compare-and-swap saw then synchronises
    /// with that publication, so the new generation is seen and the hold given back. The
    /// passing count can only be seen on a block its owner has published again (read-only for
    /// it anyway), and never under the lock. (A handle never joins the owner's references, so
    /// giving back never ends them.)
    pub(crate) fn acquire_locked(
        &self,
        g: &Guard<'_>,
        off: u64,
        expect_gen: Option<u64>,
    ) -> Option<Result<Obtained>> {
        let word = match self.rc_word(off) {
            Ok(w) => w,
            Err(e) => return Some(Err(e)),
        };
        let me = u64::from(self.tag);
        let mut w = word.load(Ordering::Acquire);
        let (kind, new_family) = loop {
            let mine = rc::owner(w) == me && expect_gen.is_none();
            // A block nobody owns (only roots, rings and holds keep it) becomes this process's
            // own, as a channel's take does: no hold to record. Not for a handle, whose
            // generation is checked after the count (a hold is what that check gives back).
            let unowned = rc::owner(w) == 0 && rc::owner_refs(w) == 0 && expect_gen.is_none();
            if expect_gen.is_some() && !rc::published(w) {
                // Every handle was taken from a published block. An unpublished one is a new
                // allocation in the place of the block the handle named (or never had a handle):
                // stale, and its owner may be writing it, so not even a passing count.
                return None;
            }
            let (new, kind) = if mine && rc::owner_refs(w) > 0 && rc::owner_refs(w) < rc::OWNER_REFS_MASK {
                (w + 1, RefKind::Owner)
            } else if unowned && rc::other(w) > 0 {
                ((w | me << rc::OWNER_SHIFT) + 1, RefKind::Owner)
            } else if rc::count(w) > 0 && rc::other(w) < rc::OTHER_MAX {
                (w + rc::OTHER_ONE, RefKind::Hold)
            } else if rc::count(w) > 0 {
                return Some(Err(Error::corrupt("too many holds on one block", off)));
            } else {
                return None;
            };
            match word.compare_exchange_weak(w, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break (kind, rc::owner(w) == 0 && kind == RefKind::Owner),
                Err(now) => w = now,
            }
        };
        let gen = match self.generation(off) {
            Ok(gen) => gen,
            Err(e) => return Some(Err(e)),
        };
        if expect_gen.is_some_and(|e| e != gen) {
            debug_assert_eq!(kind, RefKind::Hold);
            return self.release_hold_locked(g, off).err().map(Err);
        }
        if kind == RefKind::Hold {
            self.publish(off);
        }
        Some(self.finish_acquire(g, off, kind, new_family))
    }

    /// Takes over an other hold that a store structure (a channel slot) gave up. When nobody
    /// else owns the block (or this process does), the hold becomes an owner reference of this
    /// process, one compare-and-swap; otherwise it is recorded in this process's hold table.
    /// Under the lock.
    pub(crate) fn take_hold_locked(&self, g: &Guard<'_>, off: u64) -> Result<Obtained> {
        let len = self.published_len(off)?;
        let word = self.rc_word(off)?;
        let me = u64::from(self.tag);
        let mut w = word.load(Ordering::Acquire);
        while rc::other(w) > 0
            && (rc::owner(w) == 0 || rc::owner(w) == me && rc::owner_refs(w) > 0)
            && rc::owner_refs(w) < rc::OWNER_REFS_MASK
        {
            let new = ((w - rc::OTHER_ONE + 1) & !rc::OWNER_MASK) | (me << rc::OWNER_SHIFT);
            match word.compare_exchange_weak(w, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    let new_family = rc::owner(w) == 0;
                    return Ok(Obtained {
                        offset: off,
                        len,
                        kind: RefKind::Owner,
                        hold_index: None,
                        new_family,
                    });
                }
                Err(now) => w = now,
            }
        }
        let hold_index = self.record_hold(g, off)?;
        Ok(Obtained { offset: off, len, kind: RefKind::Hold, hold_index, new_family: false })
    }

    /// Records this process's new other hold on `off` in its hold table (stores shared
    /// between processes only); if that fails, the hold is given back. Under the lock.
    fn record_hold(&self, g: &Guard<'_>, off: u64) -> Result<Option<u64>> {
        let Some(slot) = self.slot() else {
            return Ok(None);
        };
        let recorded = self.hold_table().record(self, g, slot, off);
        match recorded {
            Ok(i) => Ok(Some(i)),
            Err(e) => {
                self.release_hold_locked(g, off)?;
                Err(e)
            }
        }
    }

    /// Gives up this process's reference of the given kind on `off` and makes it an other
    /// hold of a store structure (a channel slot). `last_hold` says, for a hold, whether it was
    /// this process's last clone of it (then the hold itself moves and its table entry is
    /// cleared); otherwise a new hold is added. Under the lock. Returns whether an owner
    /// reference given up was this process's last on the block.
    pub(crate) fn donate_locked(
        &self,
        g: &Guard<'_>,
        off: u64,
        kind: RefKind,
        last_hold: Option<(bool, Option<u64>)>,
    ) -> Result<bool> {
        let word = self.rc_word(off)?;
        match (kind, last_hold) {
            (RefKind::Hold, Some((true, index))) => {
                if let (Some(i), Some(slot)) = (index, self.slot()) {
                    self.hold_table().erase(self, g, slot, i)?;
                }
                Ok(false)
            }
            (RefKind::Owner, _) => {
                let mut w = word.load(Ordering::Acquire);
                loop {
                    if rc::other(w) == rc::OTHER_MAX {
                        return Err(Error::corrupt("too many holds on one block", off));
                    }
                    if rc::owner_refs(w) == 0 {
                        // We hold an owner reference: the word was damaged.
                        return Err(Error::corrupt("owner reference missing from the header", off));
                    }
                    let mut new = ((w - 1) + rc::OTHER_ONE) | rc::PUBLISHED;
                    if rc::owner_refs(new) == 0 {
                        new &= !rc::OWNER_MASK;
                    }
                    match word.compare_exchange_weak(w, new, Ordering::AcqRel, Ordering::Acquire) {
                        Ok(_) => return Ok(rc::owner_refs(new) == 0),
                        Err(now) => w = now,
                    }
                }
            }
            (RefKind::Hold, _) => self.add_hold_locked(off).map(|()| false),
        }
    }

    /// Records a new other hold in this process's hold table (undoing it if that fails).
    fn finish_acquire(&self, g: &Guard<'_>, off: u64, kind: RefKind, new_family: bool) -> Result<Obtained> {
        let len = self.published_len(off)?;
        let hold_index = match kind {
            RefKind::Hold => {
                pause("hold-counted");
                self.record_hold(g, off)?
            }
            RefKind::Owner => None,
        };
        // An owner reference here joins references this process holds already, or begins them.
        Ok(Obtained { offset: off, len, kind, hold_index, new_family })
    }

    /// Checks that a handle names a live, published block (or slot) with its generation, and
    /// returns its offset. Relaxed loads only (a store opened read-only uses it too).
    pub(crate) fn validate_handle(&self, h: BlockHandle) -> Result<u64> {
        let off = h.offset;
        let stale = Error::StaleHandle { offset: off, generation: h.generation };
        let end = self.core().capacity()? - SENTINEL_SIZE;
        if off < HEAP_START || off >= end || off % GRANULE != 0 && !is_slot(off) {
            return Err(Error::InvalidHandle { what: "offset outside the heap", offset: off });
        }
        if h.generation == 0 || h.generation >= self.region.load(SB_NEXT_GEN)? {
            return Err(Error::InvalidHandle { what: "generation never issued", offset: off });
        }
        if is_slot(off) {
            return self.validate_slot_handle(h);
        }
        let t = Tag(self.region.load(off + HDR_TAG)?);
        let fits = t.well_formed() && t.size() >= MIN_BLOCK && t.size() <= end - off;
        if !fits || t.is_free() || self.region.load(off + HDR_GEN)? != h.generation {
            return Err(stale);
        }
        if self.region.load(off + HDR_CHECK)? != check_word(self.key(), off, h.generation) {
            return Err(stale);
        }
        Ok(off)
    }

    /// The handle of a held block (generation 0, which no handle resolves with, for a slot
    /// that could not be published).
    pub(crate) fn handle_of(&self, off: u64) -> BlockHandle {
        BlockHandle { offset: off, generation: self.generation(off).unwrap_or(0) }
    }

    /// The generation of a block, or of a published slot.
    fn generation(&self, off: u64) -> Result<u64> {
        match is_slot(off) {
            true => self.slot_record(off).map(|(gen, _)| gen),
            // A root or link read from a damaged store may name an offset near `u64::MAX`.
            false => self
                .region
                .load(off.checked_add(HDR_GEN).ok_or(Error::corrupt("block offset out of range", off))?),
        }
    }

    /// The length of a published block or slot, as its header or page records it.
    pub(crate) fn published_len(&self, off: u64) -> Result<u64> {
        match is_slot(off) {
            true => self.slot_record(off).map(|(_, len)| len),
            false => {
                let t = self.core().tag(off)?;
                if t.is_linked() {
                    return self.link_table(off, t).map(|l| l.user_len);
                }
                match t.is_shared() {
                    true => self.shared_area(off, t).map(|a| a.user_len),
                    false => Ok(t.len()),
                }
            }
        }
    }

    /// Whether `off` (read from the store: a root, a hold table) names a used block or a slot in
    /// use.
    pub(crate) fn names_live(&self, off: u64) -> bool {
        match is_slot(off) {
            true => self.slot_in_use(off),
            false => self.core().block_at(off).is_ok_and(|t| !t.is_free()),
        }
    }
}
