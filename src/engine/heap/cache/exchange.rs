//! The exchange: per class, a stack in the store of parked blocks that any process's thread
//! caches give their spills to and take their refills from, without the store lock.
//!
//! In IPC the consumer releases what the producer allocated: the consumer's cache fills and
//! spills, the producer's empties and refills. Through the core, every such block was freed
//! into the TLSF heap (merging) and carved out of it again (splitting), both under the store
//! lock, so the two processes took turns on that lock for every batch. On the exchange a
//! spill is one push of half a stack and a refill one pop of as many blocks: the blocks go
//! from one cache to another as they are.
//!
//! The stack of class `c` is one word (`EXCHANGE_OFFSET + 8 * c`): the header offset of the
//! top block, and the tag of the process that *holds* the stack. Every change takes the stack
//! first (compare-and-swap of a zero holder to the taker's tag) and gives it back with the new
//! top in one release store, so a stack is changed by one thread at a time and recovery can
//! tell what a dead holder left. Nobody waits for a held stack: a give or take that finds it
//! held goes to the core as before.
//!
//! A block on the exchange is a used block with count zero whose owner is
//! [`EXCHANGE_OWNER`] (no registry slot), its payload's first word the next block down. So:
//! - nothing resolves to it (count zero refuses a reference), and `check` and `stats` count
//!   it *cached*;
//! - the word changes only while its stack is held: a give tags the holder's own parked blocks
//!   for the exchange and links them before it gives the stack back; a take checks each block
//!   it pops (in range, used, of the class, tagged for the exchange: nothing read from the
//!   store is trusted) and tags it as its own parked block before it gives the stack back.
//!   Outside a held stack, the blocks tagged for the exchange are exactly those on a stack;
//! - recovery holds every stack while it runs ([`freeze`]): it waits for living holders and
//!   takes over dead ones, and then frees every block tagged for the exchange (an owner that
//!   names no slot is nobody's: `recovery/apply.rs`), those on the stacks and those a dead
//!   holder was moving, and empties the stacks. A block a dead taker had already tagged as
//!   its own is freed with the rest of the dead process's parked blocks.

use super::{bound, Parked};
use crate::engine::core::header::{check_word, rc};
use crate::engine::core::span::is_slot;
use crate::engine::heap::{Guard, Heap, HOLDER_PATIENCE};
use crate::error::{Error, Result};
use crate::format::*;
use crate::hooks::pause;
use crate::sync::{AtomicU64, AtomicUsize, Ordering};

const HEAD_MASK: u64 = (1 << EXCHANGE_HOLDER_SHIFT) - 1;
/// Bytes the exchange keeps at most (and at most a sixteenth of the store's capacity):
/// beyond, spills go to the core, where the space can merge and serve any size.
const MAX_BYTES: u64 = 4 << 20;

/// Whether the stacks of class `c` are on the exchange of `heap`: block classes up to
/// `bound(EXCHANGE_CLASSES - 1)` bytes, in a store shared between processes.
#[inline]
pub(super) fn covers(heap: &Heap, c: usize) -> bool {
    (1..EXCHANGE_CLASSES as usize).contains(&c) && heap.slot().is_some()
}

/// Held stacks that were found held (a hint for when to look for a dead holder).
static FOUND_HELD: AtomicUsize = AtomicUsize::new(0);

fn word(heap: &Heap, c: usize) -> Result<&AtomicU64> {
    heap.region.u64_at(w_at(c))
}

fn holder(w: u64) -> u32 {
    (w >> EXCHANGE_HOLDER_SHIFT) as u32
}

/// A stack this thread holds: given back with its new top ([`Held::give_back`]), or as it was
/// found when dropped.
struct Held<'a> {
    word: &'a AtomicU64,
    top: u64,
    /// The heap's count of stacks held (`Heap::exchange_held`).
    count: &'a AtomicUsize,
}

impl Held<'_> {
    fn give_back(self, top: u64) {
        // Release: whoever takes the stack next sees the links and tags written under it.
        self.word.store(top & HEAD_MASK, Ordering::Release);
        self.count.fetch_sub(1, Ordering::Relaxed);
        std::mem::forget(self);
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.word.store(self.top, Ordering::Release);
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Takes stack `c` if nobody holds it; `Err(holder)` otherwise. `Heap::exchange_held` counts
/// it before the compare-and-swap, so a thread that sees the stack name this process sees it
/// counted.
fn try_hold(heap: &Heap, c: usize) -> std::result::Result<Held<'_>, u32> {
    let w = word(heap, c).map_err(|_| 0u32)?;
    let cur = w.load(Ordering::Relaxed);
    if holder(cur) != 0 {
        return Err(holder(cur));
    }
    heap.exchange_held.fetch_add(1, Ordering::Relaxed);
    let mine = cur | u64::from(heap.tag() as u16) << EXCHANGE_HOLDER_SHIFT;
    match w.compare_exchange(cur, mine, Ordering::AcqRel, Ordering::Relaxed) {
        Ok(_) => Ok(Held { word: w, top: cur, count: &heap.exchange_held }),
        Err(now) => {
            heap.exchange_held.fetch_sub(1, Ordering::Relaxed);
            Err(holder(now))
        }
    }
}

/// A stack was found held by `tag`: now and then, whether its holder died (or the word names
/// this process by damage), in which case recovery runs and takes the stack over. Never under
/// the store lock.
fn found_held(heap: &Heap, tag: u32) {
    if tag == 0 || FOUND_HELD.fetch_add(1, Ordering::Relaxed) % 256 != 255 {
        return;
    }
    if !heap.holder_lives(tag, &[], || heap.exchange_held.load(Ordering::Acquire) > 0) {
        let _ = heap.recover_now();
    }
}

/// Whether a block of `size` bytes can be on the stack of class `c`: large enough for the
/// class (what a take hands out must hold what was asked), and no larger than a block parked
/// there can be (the next class's bound, or a carving's 48 bytes over its own).
fn serves(c: usize, size: u64) -> bool {
    size >= bound(c) && size < bound(c + 1).max(bound(c) + MIN_BLOCK)
}

/// Adds `blocks` and `bytes` (negative: taken away, never below zero: the words are the
/// store's, and a damaged one must not turn a take into a huge total) to the totals.
fn add_totals(heap: &Heap, blocks: i64, bytes: i64) {
    for (at, delta) in [(SB_EXCHANGE_BLOCKS, blocks), (SB_EXCHANGE_BYTES, bytes)] {
        if let Ok(w) = heap.region.u64_at(at) {
            let _ = w
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_add_signed(delta)));
        }
    }
}

/// Blocks and bytes on the exchange, as the superblock counts them (a report).
pub(crate) fn totals(heap: &Heap) -> (u64, u64) {
    let n = heap.region.load(SB_EXCHANGE_BLOCKS).unwrap_or(0);
    let b = heap.region.load(SB_EXCHANGE_BYTES).unwrap_or(0);
    (n, b)
}

/// Puts the first blocks of `blocks` (parked by this process: count zero, owner us) on stack
/// `c`. Returns how many went, and their bytes: none when the stack is held or the exchange is
/// full; fewer than all only in a damaged store. The caller frees the rest the usual way.
pub(super) fn give(heap: &Heap, c: usize, blocks: &[Parked]) -> (usize, u64) {
    let bytes: u64 = blocks.iter().map(|p| p.size()).sum();
    let cap = heap.region.load(SB_CAPACITY).unwrap_or(0) / 16;
    if totals(heap).1.saturating_add(bytes) > MAX_BYTES.min(cap) {
        return (0, 0);
    }
    let held = match try_hold(heap, c) {
        Ok(h) => h,
        Err(tag) => {
            found_held(heap, tag);
            return (0, 0);
        }
    };
    let mine = u64::from(heap.tag() as u16) << EXCHANGE_HOLDER_SHIFT;
    let (mut top, mut n, mut given) = (held.top & HEAD_MASK, 0, 0);
    for p in blocks {
        // Our own parked blocks: in range unless the store is damaged.
        let (Ok(rc_word), Ok(next), Ok(sealed)) = (
            heap.region.u64_at(p.off() + HDR_RC),
            heap.region.u64_at(p.off() + EXCHANGE_NEXT),
            heap.region.u64_at(p.off() + EXCHANGE_SEAL),
        ) else {
            break;
        };
        // Linked and sealed, then on top (still ours: if we die here, recovery frees it with
        // our parked blocks and steps over it, `repaired_top`), then tagged for the exchange.
        next.store(top, Ordering::Relaxed);
        sealed.store(seal(heap.key(), p.off(), p.size()), Ordering::Relaxed);
        held.word.store(p.off() | mine, Ordering::Relaxed);
        rc_word.store(rc::parked(EXCHANGE_OWNER), Ordering::Relaxed);
        top = p.off();
        (n, given) = (n + 1, given + p.size());
        if n == 1 {
            pause("exchange-giving");
        }
    }
    add_totals(heap, n as i64, given as i64);
    held.give_back(top);
    (n, given)
}

/// Takes up to `out.len()` blocks off stack `c`, each made this process's parked block, into
/// `out` as (offset, size). Returns how many. A block that is not what the stack says (a
/// damaged store) ends the take, and the stack below it is dropped: its blocks stay tagged for
/// the exchange until a recovery frees them. `notice`: a held stack may be looked at for a dead
/// holder (not under the store lock).
pub(super) fn take(heap: &Heap, c: usize, out: &mut [(u64, u64)], notice: bool) -> usize {
    match word(heap, c) {
        Ok(w) if w.load(Ordering::Relaxed) & HEAD_MASK != 0 => {}
        _ => return 0,
    }
    let held = match try_hold(heap, c) {
        Ok(h) => h,
        Err(tag) => {
            if notice {
                found_held(heap, tag);
            }
            return 0;
        }
    };
    // A block given by a process that grew the store may lie beyond what we have mapped.
    let _ = heap.follow_growth();
    let me = rc::parked(u64::from(heap.tag()));
    let (mut top, mut n, mut taken) = (held.top & HEAD_MASK, 0, 0);
    while top != 0 && n < out.len() {
        match claim(heap, c, top, me) {
            Ok((size, next)) => {
                out[n] = (top, size);
                (n, taken, top) = (n + 1, taken + size, next);
            }
            Err(_) => top = 0,
        }
        if n == 1 {
            pause("exchange-taking");
        }
    }
    add_totals(heap, -(n as i64), -(taken as i64));
    held.give_back(top);
    n
}

/// Checks that `off` is a block stack `c` can hold, tagged for the exchange, and makes it a
/// parked block of ours (`me`). Returns its size and the next block down.
fn claim(heap: &Heap, c: usize, off: u64, me: u64) -> Result<(u64, u64)> {
    let (size, next) = on_stack(heap, c, off)?;
    let w = heap.region.u64_at(off + HDR_RC)?;
    match w.compare_exchange(rc::parked(EXCHANGE_OWNER), me, Ordering::AcqRel, Ordering::Relaxed) {
        Ok(_) => Ok((size, next)),
        Err(_) => Err(Error::corrupt("the exchange names a block that is not on it", off)),
    }
}

/// The size of `off` and the block below it, if `off` is on stack `c`: tagged for the exchange
/// (read only).
fn on_stack(heap: &Heap, c: usize, off: u64) -> Result<(u64, u64)> {
    let (size, next, word) = linked(heap, c, off)?;
    if word != rc::parked(EXCHANGE_OWNER) {
        return Err(Error::corrupt("the exchange names a block that is not on it", off));
    }
    Ok((size, next))
}

/// The size of `off`, the block below it and its reference word, if `off` was linked into
/// stack `c` by a give: a used block of a size the class holds, sealed for its offset and size
/// (`seal`: a header that user bytes or a flipped bit made up does not pass).
fn linked(heap: &Heap, c: usize, off: u64) -> Result<(u64, u64, u64)> {
    if is_slot(off) {
        return Err(Error::corrupt("the exchange names a slot", off));
    }
    let tag = heap.core().block_at(off)?;
    if !tag.is_plain_used() || !serves(c, tag.size()) {
        return Err(Error::corrupt("the exchange names a block of another size", off));
    }
    if heap.region.load(off + EXCHANGE_SEAL)? != seal(heap.key(), off, tag.size()) {
        return Err(Error::corrupt("the exchange names a block it did not seal", off));
    }
    Ok((tag.size(), heap.region.load(off + EXCHANGE_NEXT)?, heap.region.load(off + HDR_RC)?))
}

/// The seal of a block at `off` of `size` bytes on the exchange of a store keyed `key`: a
/// check word (`core/header.rs`) over a value no generation takes (generations are below
/// 2^56).
fn seal(key: u64, off: u64, size: u64) -> u64 {
    check_word(key, off, size | 0xE5C4 << 48)
}

/// The top a stack that `holder` (a dead process, or damage naming this one) held should have
/// once recovery has freed that process's parked blocks: a give puts each block on top before
/// it tags it for the exchange, and a take tags the blocks it pops as its own from the top
/// down, so the blocks above the first one tagged for the exchange are the holder's, and go
/// with it. 0 when the stack does not read as one (damage: its blocks wait for a recovery
/// that holds every stack, which frees them all).
fn repaired_top(heap: &Heap, c: usize, found: u64, holder: u32) -> u64 {
    let theirs = rc::parked(u64::from(holder));
    let mut at = found & HEAD_MASK;
    for _ in 0..=STEP_MAX {
        if at == 0 {
            return 0;
        }
        match linked(heap, c, at) {
            Ok((_, _, word)) if word == rc::parked(EXCHANGE_OWNER) => return at,
            Ok((_, next, word)) if word == theirs => at = next,
            _ => return 0,
        }
    }
    0
}

/// Most blocks a give or take moves while it holds a stack (half the largest stack).
const STEP_MAX: usize = 32;

/// Frees every block on the exchange into the core (under the lock): the store is full, the
/// last process leaves, or a user trims. Stacks held by others stay as they are. Returns
/// whether there was any.
pub(crate) fn drain(heap: &Heap, g: &Guard<'_>) -> bool {
    if heap.slot().is_none() {
        return false;
    }
    let mut any = false;
    let mut got = [(0u64, 0u64); 64];
    for c in 1..EXCHANGE_CLASSES as usize {
        loop {
            let n = take(heap, c, &mut got, false);
            for &(off, _) in &got[..n] {
                // An error means a corrupt store; the block stays for recovery.
                let _ = heap.free_owned_locked(g, off);
            }
            any |= n > 0;
            if n < got.len() {
                break;
            }
        }
    }
    any
}

/// The stacks recovery holds ([`freeze`]): (class, word as found, its top once the dead
/// holder's blocks are freed).
pub(crate) struct Frozen {
    taken: Vec<(usize, u64, u64)>,
    /// Whether every stack was taken: a living process kept none past [`HOLDER_PATIENCE`].
    all: bool,
}

/// Takes every stack of the exchange for recovery, under the store lock: waits for a living
/// holder to give its stack back, takes over one whose holder is in `dead` (registry slots),
/// has died since, or is this process by damage. A heap over a copy takes them as they are.
pub(crate) fn freeze(heap: &Heap, dead: &[u64]) -> Frozen {
    let mut frozen = Frozen { taken: Vec::new(), all: true };
    let mine = u64::from(heap.tag() as u16) << EXCHANGE_HOLDER_SHIFT;
    for c in 1..EXCHANGE_CLASSES as usize {
        let Ok(w) = word(heap, c) else { continue };
        let since = std::time::Instant::now();
        loop {
            let cur = w.load(Ordering::Acquire);
            // Our own tag is a living holder's while a thread of ours holds a stack (the
            // stacks taken here count in `Heap::exchange_held` too); else it is damage.
            let taken = frozen.taken.len();
            let ours = || heap.exchange_held.load(Ordering::Acquire) > taken;
            let living = heap.holder_lives(holder(cur), dead, ours);
            if !living {
                if w.compare_exchange(cur, cur & HEAD_MASK | mine, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    heap.exchange_held.fetch_add(1, Ordering::Relaxed);
                    let repaired = match holder(cur) {
                        0 => cur,
                        h => repaired_top(heap, c, cur, h),
                    };
                    frozen.taken.push((c, cur, repaired));
                    break;
                }
                continue;
            }
            if since.elapsed() > HOLDER_PATIENCE {
                frozen.all = false;
                break;
            }
            crate::sync::yield_now();
        }
    }
    frozen
}

impl Frozen {
    /// Whether recovery may free every block tagged for the exchange: it holds every stack,
    /// so none is being moved. Otherwise it frees none of them (which stack a block is on
    /// cannot be told from its size alone), and they wait for a later recovery.
    pub(crate) fn all(&self) -> bool {
        self.all
    }

    /// Gives the stacks back: empty if recovery completed and freed their blocks (`done` and
    /// [`Frozen::all`]); else each with its top as found, but for a stack a dead process held,
    /// whose top steps over the blocks recovery freed with that process (`repaired_top`),
    /// holders cleared; or, if recovery refused, exactly as found.
    pub(crate) fn thaw(self, heap: &Heap, done: bool) {
        let emptied = done && self.all;
        for &(c, found, repaired) in &self.taken {
            let back = match (done, emptied) {
                (false, _) => found,
                (true, true) => 0,
                (true, false) => repaired,
            };
            if let Ok(w) = word(heap, c) {
                w.store(back, Ordering::Release);
            }
            heap.exchange_held.fetch_sub(1, Ordering::Relaxed);
        }
        if emptied {
            let _ = heap.region.store(SB_EXCHANGE_BLOCKS, 0);
            let _ = heap.region.store(SB_EXCHANGE_BYTES, 0);
        }
    }
}

/// Check problems: a stack that names what cannot be on it, or loops. Stacks change without
/// the store lock, so a stack is reported only when it is free and its word is the same
/// after two walks that found the same problem; a held stack is not looked at.
pub(crate) fn check(heap: &Heap) -> Vec<crate::Problem> {
    let mut out = Vec::new();
    for c in 1..EXCHANGE_CLASSES as usize {
        let Ok(w) = word(heap, c) else { continue };
        let before = w.load(Ordering::Acquire);
        if holder(before) != 0 {
            if !could_hold(heap, holder(before)) {
                out.push(crate::Problem {
                    what: "a stack of the exchange is held by no process",
                    offset: w_at(c),
                });
            }
            continue; // being changed, or left by a dead process for recovery
        }
        if before == 0 {
            continue;
        }
        let first = walk(heap, c, before);
        if first.is_some() && first == walk(heap, c, before) && w.load(Ordering::Acquire) == before {
            out.extend(first);
        }
    }
    out
}

/// Whether a process tagged `tag` may hold a stack now: a registry slot that is taken, and
/// for this process's own tag, a thread of ours holding one.
fn could_hold(heap: &Heap, tag: u32) -> bool {
    let taken = |slot: u64| heap.region.load32(slot_offset(slot) + SLOT_STATE).is_ok_and(|s| s != SLOT_FREE);
    match u64::from(tag) {
        t if t > SLOT_COUNT => false,
        _ if tag == heap.tag() && heap.slot().is_some() => heap.exchange_held.load(Ordering::Acquire) > 0,
        t => taken(t - 1),
    }
}

/// The store offset of stack `c`'s word.
fn w_at(c: usize) -> u64 {
    EXCHANGE_OFFSET + 8 * c as u64
}

/// The first problem of stack `c` from `top` down, if any.
fn walk(heap: &Heap, c: usize, top: u64) -> Option<crate::Problem> {
    let mut seen = std::collections::HashSet::new();
    let mut pace = crate::progress::Pace::default();
    let mut at = top & HEAD_MASK;
    while at != 0 {
        pace.tick(); // each block may map a large folio
        if !seen.insert(at) {
            return Some(crate::Problem { what: "a stack of the exchange loops", offset: at });
        }
        match on_stack(heap, c, at) {
            Ok((_, next)) => at = next,
            Err(Error::Corrupt { what, offset }) => return Some(crate::Problem { what, offset }),
            Err(_) => {
                return Some(crate::Problem {
                    what: "the exchange names a block outside the heap",
                    offset: at,
                })
            }
        }
    }
    None
}
