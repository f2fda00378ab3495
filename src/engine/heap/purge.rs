//! Giving an in-process heap's free memory back to the system.
//!
//! When a free under the lock leaves a free block of at least [`PURGE_MIN`] bytes, its offset
//! is noted with the time. A noted block still free [`PURGE_DELAY`] later has its pages given
//! back (`madvise(MADV_DONTNEED)`, `sys::purge`): all but the page with its header and free
//! links and the page with its footer, which the core reads. The delay is what keeps a program
//! that allocates and frees large blocks in a loop from paying a system call and the page
//! faults after it on every round (mimalloc's `purge_delay` has the same purpose). A freed
//! block of [`PURGE_EAGER`] bytes or more (or of [`EAGER_PART`] bytes that leaves a free run of
//! [`EAGER_RUN`]) is given back at once, as glibc unmaps its large chunks, unless the same place
//! was given back eagerly less than [`PURGE_DELAY`] ago (then it is noted): so a program that drops large blocks gets their memory back without waiting for
//! a later free, and one that cycles a large buffer pays the faults at most once per delay. Notes are looked at on the next large
//! free and whenever the lock is taken while some are waiting; `trim` gives everything noted
//! back at once.
//! Pages given back read as zeros when touched again, which the core never relies on either
//! way. Stores are not purged: punching holes in the file would undo the preallocation that
//! makes a full disk an error at growth time rather than a `SIGBUS` later.

use std::sync::Mutex;
use std::time::Instant;

use super::{Guard, Heap};
use crate::engine::heap::slab::PURGE_DELAY;
use crate::format::{FREE_PREV, PAGE_SIZE};
use crate::sync::{AtomicUsize, Ordering};

/// Free blocks smaller than this are never purged.
pub(crate) const PURGE_MIN: u64 = 256 << 10;
/// A freed block this large is purged at once (unless its place was, just now)...
const PURGE_EAGER: u64 = 1 << 20;
/// ... and so is one this large that leaves a free run of [`EAGER_RUN`] bytes: a program
/// that frees many large blocks gets their memory back as glibc's unmapping would give it,
/// not only at its next call after the delay (a program that frees and then waits makes none).
const EAGER_PART: u64 = 64 << 10;
const EAGER_RUN: u64 = 2 << 20;
/// Places purged eagerly that are remembered.
const RECENT: usize = 32;
/// How often the last thread but one leaving gives everything back at most.
const LEAVING_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Notes kept; a note that does not fit purges the oldest at once.
const NOTES: usize = 32;

/// The noted free blocks: offset and when.
#[derive(Default)]
pub(crate) struct Purges {
    notes: Mutex<Notes>,
    /// How many notes wait (read without the mutex by `Heap::lock`).
    waiting: AtomicUsize,
}

#[derive(Default)]
struct Notes {
    at: [(u64, Option<Instant>); NOTES],
    n: usize,
    /// Places purged eagerly lately, and when (a ring).
    recent: [(u64, Option<Instant>); RECENT],
    next_recent: usize,
    /// When the last thread but one leaving last gave everything back (`purge_on_leaving`).
    left: Option<Instant>,
}

impl Notes {
    /// Notes `start`, unless it is noted already (its time stays the older one). Returns a
    /// note that no longer fits.
    fn note(&mut self, start: u64, now: Instant) -> Option<u64> {
        if self.at[..self.n].iter().any(|&(s, _)| s == start) {
            return None;
        }
        let evicted = (self.n == NOTES).then(|| self.take(0));
        self.at[self.n] = (start, Some(now));
        self.n += 1;
        evicted
    }

    fn take(&mut self, i: usize) -> u64 {
        let s = self.at[i].0;
        self.at.copy_within(i + 1..self.n, i);
        self.n -= 1;
        s
    }

    /// Whether `off` may be purged eagerly now (it was not, lately); remembers it if so.
    fn eager_ok(&mut self, off: u64, now: Instant) -> bool {
        let lately = |&(o, t): &(u64, Option<Instant>)| {
            o == off && t.is_some_and(|t| now.duration_since(t) < PURGE_DELAY)
        };
        if self.recent.iter().any(lately) {
            return false;
        }
        self.recent[self.next_recent] = (off, Some(now));
        self.next_recent = (self.next_recent + 1) % RECENT;
        true
    }

    /// Takes the oldest note if it is due.
    fn take_due(&mut self, now: Instant) -> Option<u64> {
        let due = self.n > 0 && self.at[0].1.is_some_and(|t| now.duration_since(t) >= PURGE_DELAY);
        due.then(|| self.take(0))
    }
}

impl Heap {
    /// After a free under the lock: the block at `off` (`freed` bytes) became part of the free
    /// block at `start` (`size` bytes). Purges it at once if it is large, else notes it, and
    /// purges the notes that are due.
    pub(super) fn note_free(&self, off: u64, freed: u64, start: u64, size: u64) {
        let Some(p) = &self.purges else { return };
        if size < PURGE_MIN {
            return;
        }
        let now = Instant::now();
        let mut notes = p.notes.lock().unwrap_or_else(|e| e.into_inner());
        let big = freed >= PURGE_EAGER || freed >= EAGER_PART && size >= EAGER_RUN;
        let eager = big && notes.eager_ok(off, now);
        if eager {
            self.purge_within(off, freed, start, size);
        }
        // A run with more in it than the block purged at once is noted too: the rest (freed
        // while the run was too small to note, or noted at a start this free merged away) is
        // purged with it later, not kept resident for good.
        if !eager || size > freed {
            if let Some(s) = notes.note(start, now) {
                self.purge_free(s);
            }
        }
        self.purge_due(p, &mut notes, now);
    }

    /// Purges the notes that are due, if any wait (taking the lock).
    pub(super) fn purge_waiting(&self) {
        let Some(p) = &self.purges else { return };
        if p.waiting.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut notes = p.notes.lock().unwrap_or_else(|e| e.into_inner());
        self.purge_due(p, &mut notes, Instant::now());
    }

    fn purge_due(&self, p: &Purges, notes: &mut Notes, now: Instant) {
        while let Some(s) = notes.take_due(now) {
            self.purge_free(s);
        }
        p.waiting.store(notes.n, Ordering::Relaxed);
    }

    /// Purges every noted block now, the workers of a program having left
    /// (`ThreadCache::purge_if_last`), unless that was done less than [`LEAVING_EVERY`] ago:
    /// a pool of threads that is made again and again would otherwise give everything back at
    /// each round and fault it all in again at the next (an outside review measured 4x the
    /// `madvise` calls and 3x the page faults of a Python thread-pool program). Returns
    /// whether it did, for the caller to purge the slab pool too.
    pub(crate) fn purge_on_leaving(&self, g: &Guard<'_>) -> bool {
        let Some(p) = &self.purges else { return false };
        let now = Instant::now();
        {
            let mut notes = p.notes.lock().unwrap_or_else(|e| e.into_inner());
            if notes.left.is_some_and(|t| now.duration_since(t) < LEAVING_EVERY) {
                return false;
            }
            notes.left = Some(now);
        }
        self.purge_all(g);
        true
    }

    /// Purges every noted block now (`trim`).
    pub(crate) fn purge_all(&self, _g: &Guard<'_>) {
        let Some(p) = &self.purges else { return };
        let mut notes = p.notes.lock().unwrap_or_else(|e| e.into_inner());
        while notes.n > 0 {
            let s = notes.take(0);
            self.purge_free(s);
        }
        p.waiting.store(0, Ordering::Relaxed);
    }

    /// Gives back the pages of the free block at `start`, if it is still one, on its free list
    /// (under the lock): a note can outlive its block, and only the lists tell a free block
    /// from bytes that look like one.
    fn purge_free(&self, start: u64) {
        if let Ok(Some(size)) = self.core().is_listed_free(start) {
            self.purge_range(start, size);
        }
    }

    /// Gives back the pages of the free block `[start, start + size)` but those with its
    /// header, free links and footer (under the lock).
    fn purge_range(&self, start: u64, size: u64) {
        self.purge_within(start, size, start, size);
    }

    /// Gives back the pages that `[off, off + len)` touches inside the free block `[start,
    /// start + size)` that contains it, but those with the block's header, free links and
    /// footer: whole pages, so that freeing many blocks one after another leaves none of
    /// theirs behind (only the free block's own first and last are kept).
    fn purge_within(&self, off: u64, len: u64, start: u64, size: u64) {
        let from = (off / PAGE_SIZE * PAGE_SIZE).max((start + FREE_PREV + 8).next_multiple_of(PAGE_SIZE));
        let to = (off + len).next_multiple_of(PAGE_SIZE).min((start + size - 8) / PAGE_SIZE * PAGE_SIZE);
        if to > from {
            crate::sys::purge(self.region.base_addr() + from as usize, (to - from) as usize);
        }
    }
}
