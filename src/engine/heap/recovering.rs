//! What the heap keeps of recovery: the lock taken as it is found, the reports of recoveries
//! that ran inside other calls (a takeover), a store given up as found. Recovery itself, and its
//! entry points, are `recovery/`'s; the heap reaches it on a takeover through the function it
//! was made with ([`super::Recovery`]).

use super::*;

impl Heap {
    /// Runs the recovery this heap was made with (under the lock `g`): see [`super::Recovery`].
    pub(crate) fn run_recovery(
        &self,
        g: &Guard<'_>,
        reclaim_own: bool,
    ) -> Result<crate::engine::reports::RecoveryReport> {
        (self.recovery)(self, g, reclaim_own)
    }

    /// Registry slots whose process is gone: not free, and nobody holds the liveness lock.
    /// This process's own is counted dead too when `reclaim_own` (it just took over a slot a
    /// dead process left).
    pub(crate) fn dead_slots(&self, reclaim_own: bool) -> Result<Vec<u64>> {
        let me = self.slot().map(u64::from);
        let mut dead = Vec::new();
        for i in 0..SLOT_COUNT {
            if self.region.load32(slot_offset(i) + SLOT_STATE)? == SLOT_FREE {
                continue;
            }
            let gone = if Some(i) == me { reclaim_own } else { self.slot_dead(i as u32) };
            if gone {
                dead.push(i);
            }
        }
        Ok(dead)
    }

    /// [`Heap::lock_as_is`], and whether the word named this process's own fresh tag: a
    /// lock word naming our fresh slot can only be left over from an earlier holder of the
    /// slot that died (or from corruption), so it is taken over as such, and our slot's
    /// leftovers recovered as a dead process's.
    pub(crate) fn lock_as_found(&self) -> Result<(Guard<'_>, Option<u32>, bool)> {
        let word = self.region.u32_at(SB_LOCK)?;
        let cur = word.load(Ordering::Acquire);
        if cur & !lock::CONTENDED == self.tag
            && word
                .compare_exchange(cur, self.tag | lock::CONTENDED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            return Ok((Guard::new(self), Some(cur), true));
        }
        let (guard, was) = self.lock_as_is()?;
        Ok((guard, was, false))
    }

    /// Keeps the report of a recovery that no caller asked for (a takeover), for
    /// [`Heap::take_recovered`].
    pub(crate) fn note_recovered(&self, report: &crate::engine::reports::RecoveryReport) {
        self.recovered.lock().unwrap_or_else(|p| p.into_inner()).add(report);
    }

    /// The sum of the recoveries this process ran on takeovers since it was last asked.
    pub(crate) fn take_recovered(&self) -> crate::engine::reports::RecoveryReport {
        std::mem::take(&mut *self.recovered.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Gives up the store as it was found, after a recovery at open refused it: this
    /// process's registry slot gets `slot_bytes` back (what it held before this process
    /// claimed it), and dropping the heap then writes nothing.
    pub(crate) fn abandon(&mut self, slot_bytes: &[u8]) {
        if let Some(slot) = self.slot() {
            let _ = self.region.write_bytes(slot_offset(u64::from(slot)), slot_bytes);
        }
        self.abandoned = true;
    }

    /// Makes a store of format version 1 a version 2 store (which may hold spans) when this is
    /// the only process attached: version 2 adds to version 1 only fields that are zero in it.
    /// Processes of a build that knows only version 1 refuse the store from then on; with one
    /// attached, the store stays at version 1 and this process makes no spans in it.
    pub(crate) fn upgrade_if_alone(&mut self) -> Result<()> {
        if self.region.load32(SB_VERSION)? == 1 && self.backing.attached(&self.region) == 1 {
            self.region.store32(SB_VERSION, FORMAT_VERSION)?;
            self.region.store(SB_FINGERPRINT, fingerprint())?;
            self.spans = true;
        }
        Ok(())
    }
}

/// `done`, the repair owed to a dead lock holder, run under `guard`: if it failed, the lock
/// goes back to the dead holder as the word `was` was (`Guard::restore_on_drop`), so that the
/// next taker tries again rather than proceed on a half-changed store.
pub(crate) fn or_give_back<T>(guard: &Guard<'_>, was: Option<u32>, done: Result<T>) -> Result<T> {
    if let (Err(_), Some(was)) = (&done, was) {
        guard.restore_on_drop(was);
    }
    done
}
