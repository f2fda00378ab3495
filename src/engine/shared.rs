//! Shared areas (`heap/shared.rs`) as recovery and the check see them: they hold no reference,
//! but a guarded area's lock word may name a process that died holding it. Recovery gives such a
//! lock back (free, the area marked inconsistent, the waiters woken) before the dead process's
//! registry slot can go to another process, which would then pass for the holder; a waiter may
//! have taken it over before, which is the same. The check verifies every area fits its block;
//! recovery refuses one that does not, and salvage clears its shared flag (`recovery/plan.rs`).

use crate::engine::heap::shared::SharedArea;
use crate::engine::heap::Heap;
use crate::engine::holders::{Holder, Kind, Reading, Reference, Session};
use crate::error::Result;
use crate::Problem;

/// The shared areas of every block that has one.
pub(crate) struct SharedAreas;

/// Every used block with a shared area, with the area or the damage it is.
fn shared_blocks(heap: &Heap) -> Result<Vec<(u64, Result<SharedArea>)>> {
    let blocks = heap.core().scan()?;
    let shared = blocks.into_iter().filter(|b| b.tag.is_plain_used() && b.tag.is_shared());
    Ok(shared.map(|b| (b.offset, heap.shared_area(b.offset, b.tag))).collect())
}

impl Kind for SharedAreas {
    fn open(&self, _heap: &Heap, _dead: &[u64], _kind: usize) -> Result<Box<dyn Session>> {
        Ok(Box::new(AreaSession))
    }

    /// Areas that do not fit their blocks.
    fn check(&self, heap: &Heap) -> Result<Vec<Problem>> {
        let bad = shared_blocks(heap)?.into_iter().filter(|(_, a)| a.is_err());
        Ok(bad.map(|(offset, _)| Problem { what: "shared area does not fit its block", offset }).collect())
    }

    fn bookkeeping(&self, _heap: &Heap, _out: &mut Vec<u64>) -> Result<()> {
        Ok(())
    }
}

struct AreaSession;

impl Session for AreaSession {
    /// No references.
    fn read(&mut self, _heap: &Heap, _plan: &mut dyn Reading, _out: &mut Vec<Reference>) -> Result<()> {
        Ok(())
    }

    fn what(&self, _holder: &Holder) -> &'static str {
        "shared area"
    }

    fn names_nothing(&self, _holder: &Holder) -> &'static str {
        "shared area names nothing"
    }

    fn name(&self, _heap: &Heap, _holder: &Holder) -> Result<String> {
        Ok(String::new())
    }

    fn repair(&self, _heap: &Heap, _dropped: &[Reference], _renamed: &[(Holder, String)]) -> Result<()> {
        Ok(())
    }

    /// Gives back the locks the dead held.
    fn forget(&self, heap: &Heap, dead: &[u64]) -> Result<()> {
        if dead.is_empty() {
            return Ok(());
        }
        for (_, area) in shared_blocks(heap)? {
            match area {
                Ok(area) if !area.atomic => heap.release_dead_holder(&area, dead)?,
                _ => {}
            }
        }
        Ok(())
    }
}
