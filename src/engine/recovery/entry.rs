//! Where recovery is entered: at open, on demand, as a salvage, and on a takeover of a dead
//! holder's lock (the function every heap is made with, [`recover_locked`] itself).

use crate::engine::heap::{or_give_back, Heap};
use crate::engine::reports::{RecoveryReport, SalvageReport};
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
        or_give_back(&guard, was, super::recover_locked(self, &guard, reclaimed_slot || own))
    }

    /// Runs salvage under the lock taken as it is found: see `MappedManager::salvage`.
    pub(crate) fn salvage(&self) -> Result<SalvageReport> {
        let (guard, was, _) = self.lock_as_found()?;
        or_give_back(&guard, was, super::salvage_locked(self, &guard))
    }

    /// Runs recovery now (under the lock), whether or not anyone is known to have died. The
    /// report adds every recovery this process ran since it was last asked (when a thread
    /// took the lock over from a dead holder).
    pub(crate) fn recover(&self) -> Result<RecoveryReport> {
        let g = self.lock()?;
        let mut report = super::recover_locked(self, &g, false)?;
        report.add(&self.take_recovered());
        Ok(report)
    }

    /// Runs recovery now (taking the lock), keeping its report for [`Heap::take_recovered`]:
    /// for a caller that found a dead process holding a channel ring's lock (`channel/`),
    /// which recovery takes over.
    pub(crate) fn recover_now(&self) -> Result<()> {
        let g = self.lock()?;
        let report = super::recover_locked(self, &g, false)?;
        self.note_recovered(&report);
        Ok(())
    }
}
