//! Where recovery is entered: at open, on demand, and on a takeover of a dead holder's lock,
//! each through the function the heap was made with (`engine/kinds.rs`'s `recover_locked`,
//! which gives recovery every kind of reference). Salvage is entered from `kinds.rs` too.

use crate::engine::heap::{or_give_back, Heap};
use crate::engine::reports::RecoveryReport;
use crate::error::Result;
use crate::format::SB_LOCK;
use crate::lock::CONTENDED;

impl Heap {
    /// Called right after attaching, before anything else: recovers what dead processes left,
    /// if anything. `reclaimed_slot` says our slot was taken from a dead process. Constant time
    /// on a store that was shut down cleanly: a scan of the registry, no heap walk. On an
    /// error (a damaged store) nothing was written and the lock is as it was.
    pub(crate) fn recover_at_open(&self, reclaimed_slot: bool) -> Result<Option<RecoveryReport>> {
        let held = self.region.load32(SB_LOCK)? & !CONTENDED;
        if held != self.tag() && !super::needed(self, reclaimed_slot)? {
            return Ok(None);
        }
        self.recover_as_found(reclaimed_slot).map(Some)
    }

    /// Recovers under the lock taken as it is found (no repair on the way in). On an error (a
    /// damaged store) nothing was written and the lock word is given back as it was.
    /// `reclaimed_slot` says our slot was taken from a dead process.
    pub(crate) fn recover_as_found(&self, reclaimed_slot: bool) -> Result<RecoveryReport> {
        let (guard, was, own) = self.lock_as_found()?;
        or_give_back(&guard, was, self.run_recovery(&guard, reclaimed_slot || own))
    }

    /// Runs recovery now (under the lock), whether or not anyone is known to have died. The
    /// report adds every recovery this process ran since it was last asked (when a thread
    /// took the lock over from a dead holder).
    pub(crate) fn recover(&self) -> Result<RecoveryReport> {
        let g = self.lock()?;
        let mut report = self.run_recovery(&g, false)?;
        report.add(&self.take_recovered());
        Ok(report)
    }

    /// Runs recovery now (taking the lock), keeping its report for [`Heap::take_recovered`]:
    /// for a caller that found a dead process holding a channel ring's lock (`channel/`),
    /// which recovery takes over.
    pub(crate) fn recover_now(&self) -> Result<()> {
        let g = self.lock()?;
        let report = self.run_recovery(&g, false)?;
        self.note_recovered(&report);
        Ok(())
    }
}
