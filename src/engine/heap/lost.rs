//! A store file truncated under this process (`Error::Truncated`): once a check of the file's
//! length has seen it, the heap is *lost* and touches nothing in the store any more
//! (`Heap::lost`), so that the calls and drops after it return instead of dying of SIGBUS.

use super::*;

impl Heap {
    /// [`Error::Truncated`] if the store file is shorter than what this process maps
    /// (`Backing::check_length`), which is then noted (`Heap::lost`).
    pub(super) fn check_length(&self) -> Result<()> {
        self.backing.check_length(&self.region).inspect_err(|e| self.note_lost(e))
    }

    /// Notes a truncation that `e` reports: from then on the heap is lost.
    pub(super) fn note_lost(&self, e: &Error) {
        if let Error::Truncated { actual, .. } = *e {
            self.lost.store(actual.saturating_add(1), Ordering::Relaxed);
        }
    }

    /// Whether a truncation of the store file was seen. A lost heap touches nothing in the
    /// store any more: every call that takes the lock is [`Error::Truncated`], allocation
    /// skips the thread's cache, dropping a block ends its family without parking or freeing
    /// it (its count word aside, [`Heap::release_owner_lost`]), and dropping the heap leaves
    /// without taking the lock, detaching or draining: the process's registry slot, holds and
    /// parked blocks are reclaimed by the next opener's recovery, as a dead process's (its
    /// liveness lock is given up when the last user goes, `family.rs`, else with the file's
    /// descriptor).
    #[inline]
    pub(crate) fn lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed) != 0
    }

    /// The error every call of a lost heap answers.
    pub(super) fn lost_error(&self) -> Option<Error> {
        match self.lost.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Error::Truncated { expected: self.region.limit(), actual: n - 1 }),
        }
    }

    /// The store file's length now, for a lost heap's slow paths.
    pub(crate) fn file_len(&self) -> Option<u64> {
        self.backing.file_len()
    }

    /// [`Heap::release_owner`] on a lost heap (`Heap::lost`): the count word is taken down
    /// only if the file still holds it (one `fstat`), without the lock and without parking or
    /// freeing the block, which the next opener's recovery finds owned by a dead process.
    /// Else the reference is leaked, and with it the heap, whose family stays counted.
    #[cold]
    pub(super) fn release_owner_lost(&self, off: u64, word: &AtomicU64) -> bool {
        let at = if is_slot(off) { self.slot_rc_offset(off) } else { off.saturating_add(HDR_RC) };
        match self.file_len() {
            Some(len) if at.saturating_add(8) <= len => {
                let prev = word.fetch_sub(1, Ordering::Release);
                rc::owner_refs(prev) == 1 && rc::owner(prev) == u64::from(self.tag)
            }
            _ => false,
        }
    }
}
