//! Shared areas: bytes of a block that every holder may change after it was shared, in any
//! process (ARCHITECTURE.md, "Shared mutable state"). A block made with one (tag bit `SHARED`,
//! set once when the block is made) ends its length with it, after the bytes its users see
//! (`docs/format.md`, "Shared areas"):
//!
//! ```text
//! | user bytes | pad 0..8 | area (8-byte aligned) | lock word | state word | footer |
//! ```
//!
//! The area is either *atomic* (reached only through atomic views, lock-free) or *guarded*
//! (reached only while its robust lock is held): no `&[u8]` of the block covers it, so nothing
//! that Rust assumes frozen is ever written. The lock word follows `lock.rs`'s states (the
//! holder's tag, the waiters' bit), so a holder that dies is taken over by the next locker, which
//! is told; recovery gives back a lock a dead process held (`engine/shared.rs`).

use super::*;

/// The area is reached through atomic views only (footer bit).
pub(crate) const AREA_ATOMIC: u64 = 1 << 63;
/// The state word's bit: a holder died holding the lock, and nobody has said the area is
/// consistent again since.
pub(crate) const STATE_INCONSISTENT: u32 = 1;
const AREA_LEN_MASK: u64 = (1 << 40) - 1;
/// A guarded area's lock word: the holder's registry slot + 1 in bits 0..8.
const AREA_SLOT_MASK: u32 = 0xff;
/// A guarded area's lock word: the holder's nonce (`area_nonce`) from bit 8 to bit 31.
const AREA_NONCE_SHIFT: u32 = 8;
const _: () = assert!(SLOT_COUNT <= AREA_SLOT_MASK as u64);

/// The 23 bits of a registry nonce a lock word holds, never all 0.
fn area_nonce(nonce: u64) -> u32 {
    (nonce as u32 & 0x7f_ffff) | 1
}
/// Largest area: 2^40 - 8 bytes.
pub(crate) const AREA_MAX: u64 = AREA_LEN_MASK & !7;
/// Bytes after the area: lock word, state word, footer.
const TRAILER: u64 = 16;

/// Where a block's shared area is, checked against the block.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SharedArea {
    /// Offset of the area's first byte.
    pub(crate) start: u64,
    /// Its length.
    pub(crate) len: u64,
    /// Whether it is reached through atomic views (else under its lock).
    pub(crate) atomic: bool,
    /// Offset of the lock word (`u32`); the state word (`u32`) follows it.
    pub(crate) lock: u64,
    /// The length the block's users see.
    pub(crate) user_len: u64,
}

impl SharedArea {
    /// The state word's offset.
    pub(crate) fn state(&self) -> u64 {
        self.lock + 4
    }
}

impl Heap {
    /// The shared area of the used block at `off` whose tag is `t`, checked against the block:
    /// a footer that does not fit it is damage.
    pub(crate) fn shared_area(&self, off: u64, t: Tag) -> Result<SharedArea> {
        let bad = Error::corrupt("shared area does not fit its block", off);
        let len = t.len();
        if !t.is_shared() || len < TRAILER {
            return Err(bad);
        }
        let end = payload_of(off) + len;
        let footer = self.region.load(end - 8)?;
        let (area, pad) = (footer & AREA_LEN_MASK, footer >> 40 & 0xff);
        if footer & !(AREA_LEN_MASK | 0xff << 40 | AREA_ATOMIC) != 0 || area % 8 != 0 || pad >= 8 {
            return Err(bad);
        }
        let user_len = len.checked_sub(TRAILER + area + pad).ok_or(bad)?;
        if (user_len + pad) % 8 != 0 {
            return Err(Error::corrupt("shared area does not fit its block", off));
        }
        let start = end - TRAILER - area;
        Ok(SharedArea { start, len: area, atomic: footer & AREA_ATOMIC != 0, lock: end - TRAILER, user_len })
    }

    /// The shared area of a block a caller holds, or `None` if it has none.
    pub(crate) fn area_of(&self, off: u64) -> Result<Option<SharedArea>> {
        if is_slot(off) {
            return Ok(None);
        }
        let t = self.core().block_at(off)?;
        match t.is_shared() {
            true => self.shared_area(off, t).map(Some),
            false => Ok(None),
        }
    }

    /// Makes a block with a shared area of `area` bytes (rounded up to 8, zeroed; `atomic`:
    /// reached through atomic views, else under its lock) after `user_len` bytes; owned by this
    /// process, one owner reference, never lent.
    pub(crate) fn allocate_shared(&self, user_len: u64, area: u64, atomic: bool) -> Result<Obtained> {
        let area = area.checked_next_multiple_of(8).filter(|&a| a <= AREA_MAX);
        let max = self.max_size()?;
        let Some(area) = area else { return Err(Error::out_of_space(user_len, max)) };
        let pad = (8 - user_len % 8) % 8;
        let len =
            user_len.checked_add(pad + area + TRAILER).ok_or_else(|| Error::out_of_space(user_len, max))?;
        let g = self.lock()?;
        let off = self.allocate_locked(&g, len, 4)?;
        let made = self.make_shared(&g, off, len, area, pad, atomic);
        if let Err(e) = made {
            let _ = self.free_owned_locked(&g, off);
            return Err(e);
        }
        Ok(Obtained { offset: off, len: user_len, kind: RefKind::Owner, hold_index: None, new_family: true })
    }

    /// Writes the zeroed area, the free lock and the footer of a block just carved, then sets
    /// its `SHARED` bit: a tag with the bit always has its trailer.
    fn make_shared(
        &self,
        g: &Guard<'_>,
        off: u64,
        len: u64,
        area: u64,
        pad: u64,
        atomic: bool,
    ) -> Result<()> {
        self.payload(off, len)?;
        // The exact length into the tag (see `links.rs`'s `make_linked`).
        self.settle_locked(g, off, len)?;
        let end = payload_of(off) + len;
        self.region.zero(end - TRAILER - area, area)?;
        self.region.store(end - TRAILER, 0)?;
        let kind = if atomic { AREA_ATOMIC } else { 0 };
        self.region.store(end - 8, area | pad << 40 | kind)?;
        self.region
            .u64_at(off + HDR_TAG)?
            .fetch_or(crate::engine::core::header::FLAG_SHARED, Ordering::Release);
        Ok(())
    }

    /// This process's tag in a guarded area's lock word: its registry slot + 1 in bits 0..8 and
    /// 23 bits of its registry nonce above them (never all 0), so that a word an earlier process
    /// in the same slot left (a guard it leaked), or that damage wrote, names no living holder
    /// (it would pass for this process, which would wait for itself). 1 in process memory.
    fn area_tag(&self) -> u32 {
        match self.slot() {
            Some(slot) => self.tag | area_nonce(self.slot_nonce(u64::from(slot))) << AREA_NONCE_SHIFT,
            None => self.tag,
        }
    }

    /// The registry nonce of slot `slot` (0 for a slot that cannot be read).
    fn slot_nonce(&self, slot: u64) -> u64 {
        self.region.load(slot_offset(slot) + SLOT_NONCE).unwrap_or(0)
    }

    /// Whether the holder `tag` of an area's lock word is gone: its slot names no process, or
    /// another process than the one with that nonce, or that process died.
    fn area_holder_gone(&self, tag: u32) -> bool {
        let slot = u64::from(tag & AREA_SLOT_MASK);
        if self.slot().is_none() {
            return self.backing.owner_dead(tag);
        }
        if slot == 0 || slot > SLOT_COUNT {
            return true;
        }
        tag >> AREA_NONCE_SHIFT != area_nonce(self.slot_nonce(slot - 1))
            || self.backing.owner_dead(slot as u32)
    }

    /// Takes the lock of the guarded area `area`: `true` if a holder died holding it (then, or
    /// before, without the area being marked consistent since). Waits while a living process
    /// holds it, however long (a stopped one too); takes it over from a dead one.
    pub(crate) fn lock_area(&self, area: &SharedArea) -> Result<bool> {
        if let Access::ReadOnly(path) = &self.access {
            return Err(Error::ReadOnly { path: path.clone() });
        }
        let (word, state) = (self.region.u32_at(area.lock)?, self.region.u32_at(area.state())?);
        let how = lock::acquire(word, self.area_tag(), self.backing.shared(), |t| self.area_holder_gone(t));
        if let Acquired::TakenOver(_) = how {
            state.fetch_or(STATE_INCONSISTENT, Ordering::Relaxed);
        }
        Ok(state.load(Ordering::Relaxed) & STATE_INCONSISTENT != 0)
    }

    /// Releases the lock of `area` (which this process holds).
    pub(crate) fn unlock_area(&self, area: &SharedArea) {
        if let Ok(word) = self.region.u32_at(area.lock) {
            lock::release(word, self.backing.shared());
        }
    }

    /// Gives back the lock of `area` held by a dead process (tag `holder`): free, the area marked
    /// inconsistent, every waiter woken. Nothing if a waiter took it over first.
    pub(crate) fn release_dead_holder(&self, area: &SharedArea, dead: &[u64]) -> Result<()> {
        let (word, state) = (self.region.u32_at(area.lock)?, self.region.u32_at(area.state())?);
        let w = word.load(Ordering::Acquire);
        let holder = u64::from(w & AREA_SLOT_MASK);
        if holder == 0 || holder > SLOT_COUNT || !dead.contains(&(holder - 1)) {
            return Ok(());
        }
        state.fetch_or(STATE_INCONSISTENT, Ordering::Relaxed);
        if word.compare_exchange(w, 0, Ordering::Release, Ordering::Relaxed).is_ok() {
            crate::sys::futex_wake(word, i32::MAX, self.backing.shared());
        }
        Ok(())
    }

    /// Marks the guarded area `area` (whose lock this process holds) inconsistent: a holder
    /// panicked while changing it.
    pub(crate) fn mark_inconsistent(&self, area: &SharedArea) {
        if let Ok(state) = self.region.u32_at(area.state()) {
            state.fetch_or(STATE_INCONSISTENT, Ordering::Relaxed);
        }
    }

    /// Says the guarded area `area` (whose lock this process holds) is consistent again.
    pub(crate) fn mark_consistent(&self, area: &SharedArea) -> Result<()> {
        self.region.u32_at(area.state())?.fetch_and(!STATE_INCONSISTENT, Ordering::Relaxed);
        Ok(())
    }
}
