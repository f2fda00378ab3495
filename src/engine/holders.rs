//! Where the store holds references to blocks besides their owners' counts, as one interface:
//! every kind of reference (named roots, channels and their queued messages, the hold tables
//! of the living) is a [`Kind`], and recovery, salvage, the census and the check learn them
//! all through it, from the list `kinds.rs` makes. A new kind of reference is one more `Kind`
//! and one more entry in that list; recovery and the check do not name it.
//!
//! A recovery (or a salvage) opens a [`Session`] on every kind before it reads anything: a kind
//! whose references change without the store lock (a channel's lock-free send and receive)
//! stops those changes there. The session reads the kind's references into the plan, says how
//! its references depend on each other (a channel whose ring is dropped goes whole), repairs
//! what the plan decided, and is closed after, whether the recovery completed or refused.

use crate::engine::core::header::rc;
use crate::engine::heap::holds;
use crate::engine::heap::Heap;
use crate::error::{Error, Result};
use crate::format::*;

/// One reference the store holds: which kind keeps it (its index in the list of kinds), at
/// which of the kind's entries, and which message of that entry's ring, if it is one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Holder {
    pub(crate) kind: usize,
    pub(crate) entry: u64,
    pub(crate) message: Option<u64>,
}

/// One reference: who holds it and what it names (a header offset or a slot id).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reference {
    pub(crate) holder: Holder,
    pub(crate) target: u64,
}

/// What a session tells the plan while it reads its kind's references.
pub(crate) trait Reading {
    /// Damage found at `offset`: recovery's error, or `Ok` for salvage (which repairs it).
    fn damage(&mut self, what: &'static str, offset: u64) -> Result<()>;
    /// Salvage: the entry `holder` (whose name was damaged, naming `target`) gets a new name.
    fn rename(&mut self, holder: Holder, target: u64);
    /// Salvage: the entry `holder` (naming `target`), which its name does not find, is moved
    /// to where the name leads, keeping it (reported with the renamed ones, under that name),
    /// unless another entry moved keeps that name (then it is renamed).
    fn keep_name(&mut self, holder: Holder, target: u64, name: String);
    /// A block that is to be left as it is, counted or not (a living process may be moving it).
    fn leave_alone(&mut self, target: u64);
    /// Registry slots of the dead processes.
    fn dead(&self) -> &[u64];
    /// Whether this is a salvage (a damaged tiling is walked as salvage walks it).
    fn salvaging(&self) -> bool;
}

/// A kind of reference.
pub(crate) trait Kind: Sync {
    /// Opens a recovery's or salvage's look at this kind's references (under the store lock);
    /// `dead`: the dead processes' registry slots.
    fn open(&self, heap: &Heap, dead: &[u64], kind: usize) -> Result<Box<dyn Session>>;
    /// What a check finds wrong with this kind's references (under the store lock).
    fn check(&self, heap: &Heap) -> Result<Vec<crate::Problem>>;
    /// The blocks this kind keeps for itself (bookkeeping: channel rings, hold tables).
    fn bookkeeping(&self, heap: &Heap, out: &mut Vec<u64>) -> Result<()>;
    /// Blocks that only this kind's references keep, from blocks nothing else reaches (cycles
    /// of links): leaks, not damage (under the store lock).
    fn leaks(&self, _heap: &Heap) -> Result<Vec<u64>> {
        Ok(Vec::new())
    }
    /// What this kind's references name, one entry per reference, as the check reads them
    /// (under the store lock): every block has at least as many other holds as references
    /// naming it. Empty for a kind whose references change without the store lock.
    fn named(&self, _heap: &Heap) -> Result<Vec<u64>> {
        Ok(Vec::new())
    }
}

/// A recovery's look at one kind of reference.
pub(crate) trait Session {
    /// Reads the kind's references into `out`. What cannot even be read (a malformed ring, a
    /// hold table that is no block) is damage.
    fn read(&mut self, heap: &Heap, plan: &mut dyn Reading, out: &mut Vec<Reference>) -> Result<()>;
    /// What a report calls a reference of `holder`: `"root"`, `"channel"`, `"message"`, `"hold"`.
    fn what(&self, holder: &Holder) -> &'static str;
    /// The damage a reference of `holder` is when it names no live block.
    fn names_nothing(&self, holder: &Holder) -> &'static str;
    /// The name of `holder`'s entry as far as it can be read (empty: it has none).
    fn name(&self, heap: &Heap, holder: &Holder) -> Result<String>;
    /// The block in whose bytes `holder`'s reference is kept (a link's): the reference goes
    /// when recovery frees that block. `None`: it is kept elsewhere.
    fn inside(&self, _holder: &Holder) -> Option<u64> {
        None
    }
    /// For a kind whose references are kept inside blocks: reads them again from `blocks`, the
    /// tiling the plan settled on (salvage's may differ from what the store walks to), to
    /// replace those `read` gave. `None`: nothing to replace.
    fn tiled(
        &mut self,
        _heap: &Heap,
        _blocks: &[crate::engine::core::tlsf::BlockInfo],
        _plan: &mut dyn Reading,
    ) -> Result<Option<Vec<Reference>>> {
        Ok(None)
    }
    /// Salvage: the entries whose own structure it repaired (a ring's `head` or `tail` moved,
    /// a slot word restored), as references to the blocks that hold it.
    fn repaired(&self) -> Vec<Reference> {
        Vec::new()
    }
    /// Salvage: the name tables of this kind that `read` could not read (their names lost).
    fn lost_tables(&self) -> Vec<crate::engine::reports::LostTable> {
        Vec::new()
    }
    /// Whether `holder`'s reference goes whatever it names: what holds it could not be read
    /// (and that is the damage reported).
    fn gone(&self, _holder: &Holder) -> bool {
        false
    }
    /// Whether `holder`'s reference goes with `dropped`'s (a queued message with its channel).
    fn goes_with(&self, _dropped: &Holder, _holder: &Holder) -> bool {
        false
    }
    /// Whether the reference may name an unpublished block (a message queued by a send of a
    /// sole reference); every other reference names published ones.
    fn may_be_unpublished(&self, _reference: &Reference) -> bool {
        false
    }
    /// Whether the reference must be its block's only one: a message a send of a sole
    /// reference queued unpublished (its block's word says the ring's one hold).
    fn sole(&self, _reference: &Reference) -> bool {
        false
    }
    /// After the plan decided what it drops: whether a rename of `holder` still happens.
    fn renames(&self, _holder: &Holder, _dropped: &[Reference]) -> bool {
        true
    }
    /// Repairs the kind's entries as the plan decided: clears the `dropped` references, writes
    /// the new names, repairs what a crash left half done (a ring's head and tail).
    fn repair(&self, heap: &Heap, dropped: &[Reference], renamed: &[(Holder, String)]) -> Result<()>;
    /// After the repairs, under the lock: makes again what the kind keeps in a block that
    /// salvage could not keep (the roots table whose header was hit), from what `read` found.
    fn rebuild(&self, _heap: &Heap, _g: &crate::engine::heap::Guard<'_>) -> Result<()> {
        Ok(())
    }
    /// After the recount: forgets what the dead processes had of this kind (channel ends).
    fn forget(&self, _heap: &Heap, _dead: &[u64]) -> Result<()> {
        Ok(())
    }
    /// Whether a living process kept some of this kind's references out of the recovery's
    /// reach (a ring lock it held): blocks on their way may be counted nowhere.
    fn pending(&self) -> bool {
        false
    }
    /// Whether the dead process of registry slot `slot` must keep its slot for now: this kind
    /// still names it (a busy ring's lock), and a process given the slot would pass for it.
    fn keeps_slot(&self, _heap: &Heap, _slot: u64) -> bool {
        false
    }
    /// Ends the look: `done`, the recovery completed (what was stopped resumes as repaired);
    /// else it refused, and everything goes back as it was found.
    fn close(self: Box<Self>, _heap: &Heap, _done: bool) {}
}

/// The hold tables of the living: every other hold a process takes by resolving a handle or
/// reading a root is an entry of its table (`heap/holds.rs`).
pub(crate) struct HoldTables;

impl Kind for HoldTables {
    fn open(&self, _heap: &Heap, _dead: &[u64], kind: usize) -> Result<Box<dyn Session>> {
        Ok(Box::new(HoldSession { kind }))
    }

    /// Entries naming no held block.
    fn check(&self, heap: &Heap) -> Result<Vec<crate::Problem>> {
        let mut out = Vec::new();
        for (_, table) in living_tables(heap, &heap.dead_slots(false)?)? {
            let entries = match holds::entries(heap, table) {
                Ok(e) => e,
                Err(Error::Corrupt { what, offset }) => {
                    out.push(crate::Problem { what, offset });
                    continue;
                }
                Err(e) => return Err(e),
            };
            for block in entries {
                if !heap.names_live(block) || rc::other(heap.rc(block)) == 0 {
                    out.push(crate::Problem { what: "hold table names no held block", offset: table });
                }
            }
        }
        Ok(out)
    }

    fn named(&self, heap: &Heap) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for (_, table) in living_tables(heap, &heap.dead_slots(false)?)? {
            out.extend(holds::entries(heap, table).unwrap_or_default());
        }
        Ok(out)
    }

    fn bookkeeping(&self, heap: &Heap, out: &mut Vec<u64>) -> Result<()> {
        for i in 0..SLOT_COUNT {
            if heap.region.load32(slot_offset(i) + SLOT_STATE)? != SLOT_FREE {
                out.push(heap.region.load(slot_offset(i) + SLOT_HOLDS)?);
            }
        }
        Ok(())
    }
}

/// The hold tables of the processes that are not `dead`: (registry slot, table block; 0 for
/// none).
fn living_tables(heap: &Heap, dead: &[u64]) -> Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    for i in (0..SLOT_COUNT).filter(|i| !dead.contains(i)) {
        if heap.region.load32(slot_offset(i) + SLOT_STATE)? != SLOT_FREE {
            out.push((i, heap.region.load(slot_offset(i) + SLOT_HOLDS)?));
        }
    }
    Ok(out)
}

struct HoldSession {
    kind: usize,
}

impl Session for HoldSession {
    fn read(&mut self, heap: &Heap, plan: &mut dyn Reading, out: &mut Vec<Reference>) -> Result<()> {
        for (i, table) in living_tables(heap, plan.dead())? {
            // Salvage runs with no other process alive (`MappedManager::salvage`), and its own
            // process holds nothing: a table of the living is recovery's alone.
            match holds::entry_offsets(heap, table) {
                Ok(entries) => {
                    for e in entries {
                        let holder = Holder { kind: self.kind, entry: e, message: None };
                        out.push(Reference { holder, target: heap.region.load(e)? });
                    }
                }
                Err(_) => plan.damage("hold table is not an owned block", slot_offset(i) + SLOT_HOLDS)?,
            }
        }
        Ok(())
    }

    fn what(&self, _holder: &Holder) -> &'static str {
        "hold"
    }

    fn names_nothing(&self, _holder: &Holder) -> &'static str {
        "hold table names no held block"
    }

    fn name(&self, _heap: &Heap, _holder: &Holder) -> Result<String> {
        Ok(String::new())
    }

    fn repair(&self, heap: &Heap, dropped: &[Reference], _renamed: &[(Holder, String)]) -> Result<()> {
        for r in dropped {
            heap.region.store(r.holder.entry, 0)?;
        }
        Ok(())
    }
}
