//! The ring's words: what a slot holds, the send and receive locks, and the ring as recovery
//! and `check` read it.
//!
//! A send or receive of a block that is its holder's only, never published reference runs
//! without the store lock, under the ring's *send lock* or *receive lock* instead: one
//! sender and one receiver at a time, each changing its own end of the ring and the block's
//! reference word. The locks are fields of `RING_FLAGS` naming the holder's tag (its registry
//! slot plus one), so that a holder that dies is known: a waiter that finds the holder dead runs
//! recovery, which takes the lock over. Recovery (and salvage) take both locks of every ring
//! before they read anything ([`freeze`]), so no send or receive runs while they plan and
//! apply. Nobody waits for the store lock while holding a ring lock (the locked way takes the
//! store lock first), so recovery's wait ends.

use crate::engine::core::header::rc;
use crate::engine::core::span::is_slot;
use crate::engine::heap::{Heap, HOLDER_PATIENCE};
use crate::engine::tables::CHANNEL_NAMES;
use crate::error::{Error, Result};
use crate::format::*;
use crate::sync::{AtomicU64, AtomicUsize, Ordering};

/// A slot word with this bit names a block queued unpublished, its length in bits 48..63
/// (`give_sole_to_ring`); without it, a published block whose header has its length.
const CARRIES_LEN: u64 = 1 << 63;
const LEN_SHIFT: u32 = 48;
/// The longest message a slot word can carry the length of (longer ones go the locked way).
pub(crate) const CARRIED_MAX: u64 = (1 << 15) - 1;
const TARGET_MASK: u64 = (1 << LEN_SHIFT) - 1;

/// The slot word for a block queued unpublished with `len` bytes.
pub(crate) fn carrying(off: u64, len: u64) -> u64 {
    CARRIES_LEN | len << LEN_SHIFT | off
}

/// The block (header offset or slot id) a slot word names.
pub(crate) fn target(word: u64) -> u64 {
    word & TARGET_MASK
}

/// The length a slot word carries, for a block queued unpublished.
pub(crate) fn carried_len(word: u64) -> Option<u64> {
    (word & CARRIES_LEN != 0).then_some((word >> LEN_SHIFT) & CARRIED_MAX)
}

/// Which end of the ring a lock serializes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Send,
    Recv,
}

impl Side {
    /// Where in `RING_FLAGS` the lock's holder tag is (16 bits; 0: nobody).
    fn shift(self) -> u32 {
        match self {
            Side::Send => 16,
            Side::Recv => 32,
        }
    }

    /// The holder's tag in a flags word.
    pub(crate) fn holder(self, flags: u64) -> u32 {
        (flags >> self.shift()) as u16 as u32
    }
}

/// A ring lock held; given back on drop.
pub(crate) struct SideLock<'a> {
    flags: &'a AtomicU64,
    side: Side,
}

impl Drop for SideLock<'_> {
    fn drop(&mut self) {
        self.flags.fetch_and(!(0xffff << self.side.shift()), Ordering::Release);
        HELD.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Ring locks the threads of this process hold now, of any ring of any store.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// Whether some thread of this process holds a ring lock: a lock word naming this process
/// while none does was left by damage (or by a process that had this registry slot before),
/// and waiting for it would never end.
pub(crate) fn held_here() -> bool {
    HELD.load(Ordering::Acquire) > 0
}

/// Takes the lock for `tag` if nobody holds it; the holder's tag otherwise. [`HELD`] counts
/// the lock before it is taken (and uncounts a failed try): a thread that sees the lock name
/// this process then sees it counted, and never takes it for a leftover of damage.
pub(crate) fn try_lock(flags: &AtomicU64, side: Side, tag: u32) -> std::result::Result<SideLock<'_>, u32> {
    HELD.fetch_add(1, Ordering::Relaxed);
    let mut cur = flags.load(Ordering::Acquire);
    loop {
        let holder = side.holder(cur);
        if holder != 0 {
            HELD.fetch_sub(1, Ordering::Relaxed);
            return Err(holder);
        }
        let new = cur | u64::from(tag as u16) << side.shift();
        // Release: whoever reads our tag here reads the count above too.
        match flags.compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Ok(SideLock { flags, side }),
            Err(now) => cur = now,
        }
    }
}

/// The tags holding the ring's send and receive locks (0: free), as far as they can be read.
pub(crate) fn lock_holders(heap: &Heap, ring: u64) -> [u32; 2] {
    let flags = flags_word(heap, ring).map_or(0, |f| f.load(Ordering::Acquire));
    [Side::Send.holder(flags), Side::Recv.holder(flags)]
}

/// The ring's flags word.
pub(crate) fn flags_word(heap: &Heap, ring: u64) -> Result<&AtomicU64> {
    heap.region.u64_at(ring + HEADER_SIZE + RING_FLAGS)
}

/// The ring locks recovery took ([`freeze`]), with what their fields held before, and the
/// rings it could not take.
pub(crate) struct Frozen {
    /// (ring, the flags word's lock fields when recovery took them).
    rings: Vec<(u64, u64)>,
    busy: Vec<u64>,
}

const LOCK_FIELDS: u64 = 0xffff << 16 | 0xffff << 32;

/// Takes both locks of every ring whose shape is sound, for recovery, under the store lock:
/// waits for a living holder to give a lock back, takes over one whose holder is in `dead`
/// (registry slots) or has died since. A ring whose lock a living process keeps past
/// [`HOLDER_PATIENCE`] is *busy*: recovery reads and writes nothing of it and leaves alone
/// every block it may be moving (`Session::pending`, `Plan::untouchable`), so a process stopped in a send stops no
/// recovery (and so no user of the store). A heap over a copy of a store (a dry run) takes
/// them all as they are: nobody finishes a send in a copy.
pub(crate) fn freeze(heap: &Heap, dead: &[u64]) -> Result<Frozen> {
    let mut frozen = Frozen { rings: Vec::new(), busy: Vec::new() };
    for ring in named_rings(heap) {
        if ring_shape(heap, ring).is_err() {
            continue; // the plan reports it, and nothing is written into it
        }
        let flags = match flags_word(heap, ring) {
            Ok(f) => f,
            Err(e) => {
                // Nothing is planned: the locks taken so far go back as they were found.
                frozen.thaw(heap, false);
                return Err(e);
            }
        };
        let since = std::time::Instant::now();
        loop {
            let cur = flags.load(Ordering::Acquire);
            let busy = |side: Side| heap.holder_lives(side.holder(cur), dead, held_here);
            if !busy(Side::Send) && !busy(Side::Recv) {
                let mine = u64::from(heap.tag() as u16);
                let new = cur & !LOCK_FIELDS | mine << Side::Send.shift() | mine << Side::Recv.shift();
                if flags.compare_exchange(cur, new, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                    // What a refusal gives back: the dead holders' tags, or nothing.
                    frozen.rings.push((ring, cur & LOCK_FIELDS));
                    break;
                }
                continue;
            }
            if since.elapsed() > HOLDER_PATIENCE {
                frozen.busy.push(ring);
                break;
            }
            crate::sync::yield_now();
        }
    }
    Ok(frozen)
}

impl Frozen {
    /// The lock fields of `ring`'s flags word as recovery found them, if it took its locks.
    pub(crate) fn found(&self, ring: u64) -> Option<u64> {
        self.rings.iter().find(|&&(r, _)| r == ring).map(|&(_, f)| f)
    }

    /// The rings recovery could not take.
    pub(crate) fn busy(&self) -> &[u64] {
        &self.busy
    }

    /// Gives the locks back: free (`done`: recovery completed and settled what their dead
    /// holders left) or as they were found (it refused, and the store stays as it was).
    /// Rings that are no longer named (salvage dropped them) are not written.
    pub(crate) fn thaw(self, heap: &Heap, done: bool) {
        let named = named_rings(heap);
        for (ring, found) in self.rings.into_iter().filter(|(r, _)| named.contains(r)) {
            if let Ok(flags) = flags_word(heap, ring) {
                let back = if done { 0 } else { found };
                let _ = flags
                    .fetch_update(Ordering::Release, Ordering::Relaxed, |w| Some(w & !LOCK_FIELDS | back));
            }
        }
    }
}

/// The messages a ring holds (the slot words, oldest first), with its shape checked.
pub(crate) fn ring_contents(heap: &Heap, ring: u64) -> Result<Vec<u64>> {
    let (head, tail, cap) = ring_shape(heap, ring)?;
    (head..tail).map(|i| heap.region.load(ring + HEADER_SIZE + RING_SLOTS + 8 * (i % cap))).collect()
}

/// The (head, tail, capacity) of the ring block at `ring`, checked against its header (a used
/// block that holds the slots) and each other. Sends and receives may run meanwhile (but for
/// recovery's, which holds the ring locks): `head` is read again after `tail`, and the pair is
/// taken when `head` did not move in between (a `head` older than `tail` may lag it by more
/// than the capacity, a newer one pass it).
pub(crate) fn ring_shape(heap: &Heap, ring: u64) -> Result<(u64, u64, u64)> {
    let malformed = || Error::corrupt("channel ring is malformed", ring);
    let cap = ring_capacity(heap, ring)?.ok_or_else(malformed)?;
    let p = ring + HEADER_SIZE;
    let (head_word, tail_word) = (heap.region.u64_at(p + RING_HEAD)?, heap.region.u64_at(p + RING_TAIL)?);
    let (mut head, mut tail) = (0, 0);
    for _ in 0..1000 {
        head = head_word.load(Ordering::Acquire);
        tail = tail_word.load(Ordering::Acquire);
        if head_word.load(Ordering::Acquire) == head {
            break;
        }
    }
    if head > tail || tail - head > cap {
        return Err(malformed());
    }
    Ok((head, tail, cap))
}

/// The capacity of the ring block at `ring` if the block is a used one that holds that many
/// slots (`None`: the block or the capacity is wrong).
fn ring_capacity(heap: &Heap, ring: u64) -> Result<Option<u64>> {
    let t = heap.core().block_at(ring)?;
    let cap = heap.region.load(ring + HEADER_SIZE + RING_CAPACITY)?;
    let fits = cap.checked_mul(8).and_then(|b| b.checked_add(RING_SLOTS)).is_some_and(|b| b <= t.len());
    Ok((!t.is_free() && cap != 0 && fits).then_some(cap))
}

/// Whether a ring holds messages outside its queue `head..tail` (`slot`: the word at a
/// position). Outside the queue a slot is 0 (a receive clears the slot it took before it moves
/// `head`, a ring is made zeroed) but for the one a send writes before it moves `tail`, which
/// a crash can leave. Any other means `head` or `tail` was damaged.
pub(crate) fn strays(head: u64, tail: u64, cap: u64, slot: impl Fn(u64) -> Result<u64>) -> Result<bool> {
    let (from, to) = (tail.saturating_add(1), head.saturating_add(cap));
    for pos in from..to.max(from) {
        if slot(pos)? != 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A queued message's slot word, judged against the block it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlotWord {
    /// As a send left it.
    Intact,
    /// Damaged in bits the block's own reference word tells back: the word restored.
    Restored(u64),
    /// Damaged beyond that: what is wrong.
    Damaged(&'static str),
}

/// Judges the slot word `word` of a queued message. A word that carries a length names a block
/// that a send of a sole reference queued: unpublished, no owner, the ring's one other hold
/// (`taker`: the tag of a receiver that may have taken it already, one that died at `head`,
/// whose fresh owner reference the word may then be), with room for that length; a receive
/// takes it only if so. Any other word is the block's offset alone (bits 48..64 clear): its
/// block, published or on its way to be (a locked send publishes it last), is checked where
/// every reference is (`recovery/plan.rs`). A flip in bits 48..64 is told back by the block's
/// reference word: one a sole send left (bit 63 lost) or a published one (bits set).
pub(crate) fn slot_word(heap: &Heap, word: u64, taker: Option<u64>) -> SlotWord {
    let off = target(word);
    let len = (word >> LEN_SHIFT) & CARRIED_MAX;
    if word >> LEN_SHIFT == 0 {
        return SlotWord::Intact;
    }
    let w = heap.rc(off);
    let sole = w == rc::OTHER_ONE || taker.is_some_and(|t| t != 0 && w == rc::fresh(t));
    let carried = carrying(off, len);
    match (sole && heap.carries(off, len), rc::published(w)) {
        (true, _) if word == carried => SlotWord::Intact,
        (true, _) => SlotWord::Restored(carried),
        (false, true) => SlotWord::Restored(off),
        (false, false) if carried_len(word).is_some() => {
            SlotWord::Damaged("channel message's reference word is not the ring's")
        }
        (false, false) => SlotWord::Damaged("channel slot word is malformed"),
    }
}

/// Salvage: the (head, tail, capacity) of a ring whose stored `head` and `tail` break
/// `head <= tail <= head + capacity` (a flip in either), while its block and capacity are
/// sound: the queue is the one run of messages (non-zero slots, around the end) its slots
/// hold, placed where the stored `tail` ends it, else where the stored `head` starts it, else
/// in the first round. `None` when the block or the capacity is what is wrong, or the slots
/// hold more than one run (nothing tells which is the queue).
pub(crate) fn requeue(heap: &Heap, ring: u64) -> Result<Option<(u64, u64, u64)>> {
    let Ok(Some(cap)) = ring_capacity(heap, ring) else { return Ok(None) };
    let p = ring + HEADER_SIZE;
    let (head, tail) = (heap.region.load(p + RING_HEAD)?, heap.region.load(p + RING_TAIL)?);
    let used = (0..cap)
        .map(|i| Ok(heap.region.load(p + RING_SLOTS + 8 * i)? != 0))
        .collect::<Result<Vec<bool>>>()?;
    let n = used.iter().filter(|&&u| u).count() as u64;
    let starts: Vec<u64> =
        (0..cap).filter(|&i| used[i as usize] && !used[((i + cap - 1) % cap) as usize]).collect();
    let start = match (n, starts.as_slice()) {
        (0, _) => return Ok(Some((head.min(tail), head.min(tail), cap))),
        (n, _) if n == cap => tail % cap,
        (_, &[start]) => start,
        _ => return Ok(None),
    };
    let at = if tail % cap == (start + n) % cap && tail >= n && tail - n <= u64::MAX - cap {
        tail - n
    } else if head % cap == start && head <= u64::MAX - 2 * cap {
        head
    } else {
        start
    };
    Ok(Some((at, at + n, cap)))
}

/// Whether the ring holds messages outside its queue, judged on a look at all its slots
/// during which neither `head` nor `tail` moved (sends and receives run without the store
/// lock; both only grow, so no send or receive completed meanwhile). A ring never seen still
/// is not judged: recovery, which stops its sends and receives first, judges it.
fn strays_seen_still(heap: &Heap, ring: u64) -> Result<bool> {
    let at = |i: u64| ring + HEADER_SIZE + RING_SLOTS + 8 * i;
    for _ in 0..100 {
        let (head, tail, cap) = ring_shape(heap, ring)?;
        let slots = (0..cap).map(|i| heap.region.load(at(i))).collect::<Result<Vec<u64>>>()?;
        if ring_shape(heap, ring)? == (head, tail, cap) {
            return strays(head, tail, cap, |pos| Ok(slots[(pos % cap) as usize]));
        }
        crate::sync::yield_now();
    }
    Ok(false)
}

/// The rings the channels' directory names (none if it cannot be read: the roots kind reports
/// that, and recovery refuses it).
fn named_rings(heap: &Heap) -> Vec<u64> {
    CHANNEL_NAMES.directory(heap).map(|d| d.targets(heap)).unwrap_or_default()
}

/// Clears the endpoint bits of dead processes in every ring (recovery, under the lock).
pub(crate) fn forget_endpoints(heap: &Heap, dead: &[u64]) -> Result<()> {
    for ring in named_rings(heap) {
        for &slot in dead {
            for field in [RING_SENDERS, RING_RECEIVERS] {
                // `ring` was read from the store: an offset whose words lie past the end is an
                // error, as one out of range is.
                let word = ring
                    .checked_add(HEADER_SIZE + field + 8 * (slot / 64))
                    .ok_or_else(|| Error::corrupt("channel ring out of range", ring))?;
                heap.region.store(word, heap.region.load(word)? & !(1 << (slot % 64)))?;
            }
        }
    }
    Ok(())
}

/// Check problems: directory entries that name no ring, queued messages that are not held or
/// whose blocks are not as their sends left them, messages outside a ring's queue. Receives
/// may run meanwhile (they do not take the store lock): a message that looks wrong is a
/// problem only if it is still queued after and not at the head of a ring whose receive lock
/// is held (that message is the receiver's already, its slot perhaps cleared: the receive
/// finishes, or recovery settles it). A receive holds the lock from before it changes the
/// message until after `head` has moved past it.
pub(crate) fn check(heap: &Heap) -> Result<Vec<crate::Problem>> {
    let mut out = Vec::new();
    // A channels' table that cannot be read is the roots kind's problem (`roots.rs`).
    let Ok(channels) = CHANNEL_NAMES.directory(heap) else { return Ok(out) };
    // Blocks queued by sole sends, and by locked ones: a block of the first kind has the
    // ring's one hold, so that no other message may name it.
    let (mut sole, mut locked) = (Vec::new(), Vec::new());
    for entry in channels.entries(heap)? {
        let ring = entry.target;
        let at = channels.entry(entry.index);
        if !channels.name_ok(heap, entry.index)? {
            out.push(crate::Problem { what: "channel name is malformed", offset: at });
        } else if channels.misplaced(heap, entry.index)? {
            out.push(crate::Problem { what: "channel name does not find its entry", offset: at });
        }
        // Made published (recovery refuses an unpublished ring as damage).
        if heap.names_live(ring) && !rc::published(heap.rc(ring)) {
            out.push(crate::Problem {
                what: "a root, channel or hold names an unpublished block",
                offset: ring,
            });
        }
        let Ok((head, tail, cap)) = ring_shape(heap, ring) else {
            out.push(crate::Problem {
                what: "channel ring is malformed",
                offset: channels.entry(entry.index),
            });
            continue;
        };
        let slot = |p: u64| heap.region.load(ring + HEADER_SIZE + RING_SLOTS + 8 * (p % cap));
        let unheld = |m: u64| !heap.names_live(target(m)) || rc::other(heap.rc(target(m))) == 0;
        let mut bad = Vec::new();
        for p in head..tail {
            let m = slot(p)?;
            if unheld(m) {
                bad.push((p, "channel holds no live block", ring));
                continue;
            }
            // A message queued as its block's offset alone is published, but for a block a
            // locked send publishes last (it holds the store lock, as the check does).
            let plain = carried_len(m).is_none();
            if plain && is_slot(target(m)) && !rc::published(heap.rc(target(m))) {
                bad.push((p, "a root, channel or hold names an unpublished block", target(m)));
                continue;
            }
            match carried_len(m) {
                Some(_) => sole.push((p, ring, target(m))),
                None => locked.push((p, ring, target(m))),
            }
            match slot_word(heap, m, None) {
                SlotWord::Intact => {}
                SlotWord::Restored(_) => bad.push((p, "channel slot word is malformed", ring)),
                SlotWord::Damaged(what) => bad.push((p, what, target(m))),
            }
        }
        if !bad.is_empty() {
            // The lock before `head`: a receive that changed a message holds the lock until
            // `head` has moved past it, so either it is seen holding it or `head` is seen moved.
            let receiving = Side::Recv.holder(flags_word(heap, ring)?.load(Ordering::Acquire)) != 0;
            let now = heap.region.u64_at(ring + HEADER_SIZE + RING_HEAD)?.load(Ordering::Acquire);
            for (_, what, offset) in bad.into_iter().filter(|&(p, ..)| p >= now && !(p == now && receiving)) {
                out.push(crate::Problem { what, offset });
            }
        }
        if strays_seen_still(heap, ring)? {
            out.push(crate::Problem { what: "channel ring holds messages outside its queue", offset: ring });
        }
    }
    // Receives may run meanwhile: a message counts only while it is still queued.
    let queued = |&(p, ring, _): &(u64, u64, u64)| {
        heap.region.u64_at(ring + HEADER_SIZE + RING_HEAD).is_ok_and(|h| h.load(Ordering::Acquire) <= p)
    };
    let (sole, locked): (Vec<_>, Vec<_>) =
        (sole.into_iter().filter(queued).collect(), locked.into_iter().filter(queued).collect());
    for (i, &(_, _, block)) in sole.iter().enumerate() {
        let twice = sole[..i].iter().chain(&locked).any(|&(_, _, other)| other == block);
        if twice {
            out.push(crate::Problem { what: "a block queued unpublished is named twice", offset: block });
        }
    }
    Ok(out)
}
