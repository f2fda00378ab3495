//! The channels as a kind of reference (`engine/holders.rs`): each channel's entry holds one of
//! its ring's other holds, and each queued message one of its block's. A recovery's session
//! takes both locks of every ring first (`ring::freeze`), so no send or receive runs without
//! the store lock while it plans and repairs; a ring whose lock a living process keeps is left
//! as it is, with every block its slots name.

use super::ring::{
    self, carried_len, forget_endpoints, lock_holders, requeue, ring_shape, slot_word, strays, target,
    Frozen, Side, SlotWord,
};
use crate::engine::core::check::Problem;
use crate::engine::core::span::is_slot;
use crate::engine::directory::Directory;
use crate::engine::heap::Heap;
use crate::engine::holders::{Holder, Kind, Reading, Reference, Session};
use crate::engine::tables::CHANNEL_NAMES;
use crate::error::Result;
use crate::format::*;

/// The channels, as a kind of reference.
pub(crate) struct Channels;

impl Kind for Channels {
    fn open(&self, heap: &Heap, dead: &[u64], kind: usize) -> Result<Box<dyn Session>> {
        let frozen = ring::freeze(heap, dead)?;
        // A channels' table that cannot be read is the roots kind's damage: no channels then.
        let dir = CHANNEL_NAMES.directory(heap).ok();
        let (rings, carrying, lost) = (Vec::new(), Vec::new(), Vec::new());
        let (restored, repaired) = (Vec::new(), Vec::new());
        Ok(Box::new(ChannelSession { kind, frozen, dir, rings, carrying, lost, restored, repaired }))
    }

    fn check(&self, heap: &Heap) -> Result<Vec<Problem>> {
        ring::check(heap)
    }

    /// The rings, as far as the directory can be read.
    fn bookkeeping(&self, heap: &Heap, out: &mut Vec<u64>) -> Result<()> {
        let dir = CHANNEL_NAMES.directory(heap);
        out.extend(
            dir.map(|d| d.entries(heap).unwrap_or_default())
                .unwrap_or_default()
                .into_iter()
                .map(|e| e.target),
        );
        Ok(())
    }
}

/// A channel's ring as the plan read it.
struct Ring {
    index: u64,
    /// 0: the ring could not be read (the channel goes whole).
    ring: u64,
    head: u64,
    tail: u64,
}

struct ChannelSession {
    kind: usize,
    /// The ring locks taken, and the rings a living process kept busy.
    frozen: Frozen,
    /// The channels' directory (its table, or the fixed one), as at the session's opening.
    dir: Option<Directory>,
    /// The rings read.
    rings: Vec<Ring>,
    /// Queued messages whose slot word carries their length: a send of a sole reference
    /// queues its block unpublished (`channel/ring.rs`), so these may be. (channel, position)
    carrying: Vec<(u64, u64)>,
    /// Salvage: queued messages that go whatever they name, (channel, position): found outside
    /// a ring's queue, or naming a block not as their send left it (`ring::slot_word`).
    lost: Vec<(u64, u64)>,
    /// Salvage: slot words written again, (ring, position, word), as `ring::slot_word` told
    /// them back.
    restored: Vec<(u64, u64, u64)>,
    /// Salvage: the channels whose rings it repaired (`head` or `tail` moved, a slot word
    /// restored), as references to their rings.
    repaired: Vec<Reference>,
}

impl ChannelSession {
    fn busy(&self) -> &[u64] {
        self.frozen.busy()
    }

    /// Reads the ring of channel `index` and adds its queued messages to `out`; a ring whose
    /// shape is wrong is damage (salvage drops the channel, and the ring's block keeps only
    /// what the entry's hold gave it).
    fn read_ring(
        &mut self,
        heap: &Heap,
        index: u64,
        ring: u64,
        plan: &mut dyn Reading,
        out: &mut Vec<Reference>,
    ) -> Result<()> {
        if self.busy().contains(&ring) {
            // Its shape was sound when `freeze` looked (it skips those that are not).
            let cap = heap.region.load(ring + HEADER_SIZE + RING_CAPACITY)?;
            for pos in 0..cap {
                let word = heap.region.load(ring + HEADER_SIZE + RING_SLOTS + 8 * pos)?;
                if word != 0 {
                    plan.leave_alone(target(word));
                }
            }
            return Ok(());
        }
        let (mut head, mut tail, cap) = match ring_shape(heap, ring) {
            Ok(shape) => shape,
            Err(_) => {
                let entry = self.dir.map_or(0, |d| d.entry(index));
                plan.damage("channel ring is malformed", entry)?;
                // Salvage: a ring whose block and capacity are sound had `head` or `tail` hit;
                // its queue is the run of messages its slots hold (`ring::requeue`).
                match plan.salvaging().then(|| requeue(heap, ring)).transpose()?.flatten() {
                    Some(shape) => {
                        self.note_repaired(index, ring);
                        shape
                    }
                    None => {
                        // Its entry is dropped: the ring does not pass as a held block.
                        self.rings.push(Ring { index, ring: 0, head: 0, tail: 0 });
                        return Ok(());
                    }
                }
            }
        };
        let slot = |pos: u64| heap.region.load(ring + HEADER_SIZE + RING_SLOTS + 8 * (pos % cap));
        // A receiver that died holding the receive lock may have taken the message at `head`
        // (its reference moved, the slot not yet cleared), or cleared its slot.
        let taker = self.frozen.found(ring).map(|f| u64::from(Side::Recv.holder(f)));
        let taker = taker.filter(|&t| t != 0 && plan.dead().contains(&(t - 1)));
        // A receive clears its slot before it moves `head`: a cleared slot at `head` whose
        // receiver died is a receive cut short, whose message is the dead receiver's (a zero
        // names nothing, so stepping over it loses nothing). Any other is a hole (below).
        if head < tail && slot(head)? == 0 && taker.is_some() {
            head += 1;
        }
        // Outside the queue a slot is 0 but for the one a crash can leave
        // (`ring::strays`); others mean `head` or `tail` was damaged. Salvage moves
        // them over the runs of messages next to the queue (`tail` forward, `head`
        // back) and drops what is still outside (named in its report; repair clears
        // the slots).
        if strays(head, tail, cap, slot)? {
            plan.damage("channel ring holds messages outside its queue", ring)?;
            let found = (head, tail);
            while tail - head < cap && tail < u64::MAX && slot(tail)? != 0 {
                tail += 1;
            }
            while tail - head < cap && head > 0 && slot(head - 1)? != 0 {
                head -= 1;
            }
            if (head, tail) != found {
                self.note_repaired(index, ring);
            }
            for pos in tail..tail.saturating_add(cap - (tail - head)) {
                let word = slot(pos)?;
                if word != 0 {
                    self.lost.push((index, pos));
                    let holder = Holder { kind: self.kind, entry: index, message: Some(pos) };
                    out.push(Reference { holder, target: target(word) });
                }
            }
        }
        for pos in head..tail {
            let word = slot(pos)?;
            if word == 0 {
                // A hole in the queue names nothing: salvage closes it (no message was there).
                plan.damage("channel ring holds an empty slot in its queue", ring)?;
                self.lost.push((index, pos));
                self.note_repaired(index, ring);
                continue;
            }
            let holder = Holder { kind: self.kind, entry: index, message: Some(pos) };
            // A word naming no live block is the plan's to judge (it names nothing).
            let judged = match heap.names_live(target(word)) {
                true => slot_word(heap, word, taker.filter(|_| pos == head)),
                false => SlotWord::Intact,
            };
            let word = match judged {
                SlotWord::Intact => word,
                SlotWord::Restored(restored) => {
                    plan.damage("channel slot word is malformed", ring)?;
                    self.restored.push((ring, pos, restored));
                    self.note_repaired(index, ring);
                    restored
                }
                SlotWord::Damaged(what) => {
                    plan.damage(what, target(word))?;
                    self.lost.push((index, pos));
                    word
                }
            };
            if carried_len(word).is_some() {
                self.carrying.push((index, pos));
            }
            out.push(Reference { holder, target: target(word) });
        }
        self.rings.push(Ring { index, ring, head, tail });
        Ok(())
    }

    /// Salvage repaired the ring of channel `index` (its `head`, `tail` or a slot word).
    fn note_repaired(&mut self, index: u64, ring: u64) {
        if !self.repaired.iter().any(|r| r.target == ring) {
            let holder = Holder { kind: self.kind, entry: index, message: None };
            self.repaired.push(Reference { holder, target: ring });
        }
    }

    /// Whether the channel at `index` goes whole: its entry's reference is dropped.
    fn dropped(index: u64, dropped: &[Reference]) -> bool {
        dropped.iter().any(|r| r.holder.entry == index && r.holder.message.is_none())
    }
}

impl Session for ChannelSession {
    fn read(&mut self, heap: &Heap, plan: &mut dyn Reading, out: &mut Vec<Reference>) -> Result<()> {
        let (kind, Some(dir)) = (self.kind, self.dir) else { return Ok(()) };
        dir.read_references(heap, kind, plan, out, |index, ring, plan, out| {
            self.read_ring(heap, index, ring, plan, out)
        })
    }

    fn what(&self, holder: &Holder) -> &'static str {
        match holder.message {
            None => "channel",
            Some(_) => "message",
        }
    }

    fn names_nothing(&self, _holder: &Holder) -> &'static str {
        "channel holds no live block"
    }

    fn name(&self, heap: &Heap, holder: &Holder) -> Result<String> {
        self.dir.map_or(Ok(String::new()), |d| d.name_lossy(heap, holder.entry))
    }

    fn gone(&self, holder: &Holder) -> bool {
        let message = holder.message.is_some_and(|pos| self.lost.contains(&(holder.entry, pos)));
        message || self.rings.iter().any(|r| r.ring == 0 && r.index == holder.entry)
    }

    fn repaired(&self) -> Vec<Reference> {
        self.repaired.clone()
    }

    fn goes_with(&self, dropped: &Holder, holder: &Holder) -> bool {
        dropped.message.is_none() && holder.message.is_some() && dropped.entry == holder.entry
    }

    fn may_be_unpublished(&self, r: &Reference) -> bool {
        match r.holder.message {
            Some(pos) => !is_slot(r.target) || self.carrying.contains(&(r.holder.entry, pos)),
            None => false,
        }
    }

    fn sole(&self, r: &Reference) -> bool {
        r.holder.message.is_some_and(|pos| self.carrying.contains(&(r.holder.entry, pos)))
    }

    fn renames(&self, holder: &Holder, dropped: &[Reference]) -> bool {
        !Self::dropped(holder.entry, dropped)
    }

    /// Clears the ring slot a receiver that died took its message from; for salvage, drops the
    /// references that name nothing valid (compacting the rings that lose messages, moving a
    /// `tail` that was damaged) and renames entries whose names are damaged.
    fn repair(&self, heap: &Heap, dropped: &[Reference], renamed: &[(Holder, String)]) -> Result<()> {
        if let Some(dir) = self.dir {
            dir.repair(heap, dropped, renamed)?;
        }
        let busy = self.busy();
        let rings = self
            .rings
            .iter()
            .filter(|r| r.ring != 0 && !Self::dropped(r.index, dropped) && !busy.contains(&r.ring));
        for ring in rings {
            // Dropped messages, and holes (which name nothing, so no reference was dropped).
            let lost = |pos: u64| {
                self.lost.contains(&(ring.index, pos))
                    || dropped.iter().any(|r| r.holder.entry == ring.index && r.holder.message == Some(pos))
            };
            let p = ring.ring + HEADER_SIZE;
            let cap = heap.region.load(p + RING_CAPACITY)?;
            // The queue's `i`-th slot from `head`.
            let slot = |i: u64| p + RING_SLOTS + 8 * ((ring.head % cap + i) % cap);
            for &(_, pos, word) in self.restored.iter().filter(|&&(r, ..)| r == ring.ring) {
                heap.region.store(slot(pos - ring.head), word)?;
            }
            let mut kept = Vec::new();
            for pos in (ring.head..ring.tail).filter(|&pos| !lost(pos)) {
                kept.push(heap.region.load(slot(pos - ring.head))?);
            }
            for (i, &msg) in kept.iter().enumerate() {
                store_changed(heap, slot(i as u64), msg)?;
            }
            // Outside the queue every slot is 0: the one a sender that died wrote before moving
            // `tail`, the ones a compaction left, and what salvage found outside are cleared.
            for i in kept.len() as u64..cap {
                store_changed(heap, slot(i), 0)?;
            }
            // A receive cut short after clearing its slot (`read_ring`) is completed.
            store_changed(heap, p + RING_HEAD, ring.head)?;
            store_changed(heap, p + RING_TAIL, ring.head + kept.len() as u64)?;
        }
        Ok(())
    }

    fn forget(&self, heap: &Heap, dead: &[u64]) -> Result<()> {
        forget_endpoints(heap, dead)
    }

    fn pending(&self) -> bool {
        !self.busy().is_empty()
    }

    fn keeps_slot(&self, heap: &Heap, slot: u64) -> bool {
        self.busy().iter().any(|&r| lock_holders(heap, r).contains(&(slot as u32 + 1)))
    }

    fn close(self: Box<Self>, heap: &Heap, done: bool) {
        self.frozen.thaw(heap, done);
    }
}

/// Writes `value` at `at` unless it is there already (a recovery dirties no page it need not).
fn store_changed(heap: &Heap, at: u64, value: u64) -> Result<()> {
    match heap.region.load(at)? == value {
        true => Ok(()),
        false => heap.region.store(at, value),
    }
}
