//! The store lock: one `u32` word in the superblock, shared by every attached process.
//!
//! States of the word (`SB_LOCK`):
//!
//! | value                    | meaning                                                 |
//! |--------------------------|---------------------------------------------------------|
//! | `0`                      | free                                                    |
//! | `owner`                  | held by the process whose tag is `owner`, nobody waits   |
//! | `owner \| CONTENDED`     | held, and someone may be asleep on the futex             |
//!
//! `owner` is the holder's registry slot + 1 (1 for the in-process manager), never 0 and below
//! `CONTENDED`. A waiter spins briefly, then sleeps on the futex with a timeout (growing from
//! 0.25 ms to 2 ms); before its first sleep, and after each one across which the word did not
//! change, it asks the backing whether the owner is dead (its liveness lock is gone) and if so
//! takes the lock over with a compare-and-swap and reports it, so the new holder repairs what
//! the dead one left half done.

use std::time::Duration;

use crate::sync::{AtomicU32, Ordering};
use crate::sys;

/// Set in the lock word when a waiter may be sleeping.
pub(crate) const CONTENDED: u32 = 1 << 31;
/// Looks at the word (with growing pauses capped at 32, then yields) before a waiter sleeps:
/// critical sections are short, and a futex sleep and wake cost microseconds.
/// In the model checker (`--cfg loom`) a waiter looks twice: every look is a point where the
/// model may switch threads, and the spinning is no part of the protocol.
#[cfg(not(loom))]
const SPINS: u32 = 60;
#[cfg(loom)]
const SPINS: u32 = 2;
const SPINS_BEFORE_YIELD: u32 = 40;
/// How long a waiter sleeps, one nap after another, before it asks again whether the holder
/// is alive: short at first, so that a holder that died is taken over soon (a waiter also asks
/// once before its first nap), never longer than the last, which bounds the takeover time
/// (`BENCHMARKS.md`, "Lock takeover").
const NAPS: [Duration; 4] = [
    Duration::from_micros(250),
    Duration::from_micros(500),
    Duration::from_millis(1),
    Duration::from_millis(2),
];

/// How the lock was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// From a live holder or free.
    Normally,
    /// From a holder that died holding it; the protected state may be half-changed. The
    /// word as it was (the dead holder's tag), for a caller that must give it back as it found
    /// it ([`restore`]).
    TakenOver(u32),
}

/// Acquires the lock for `tag`. `owner_dead(t)` tells whether the holder tagged `t` is dead.
pub(crate) fn acquire(
    word: &AtomicU32,
    tag: u32,
    shared: bool,
    owner_dead: impl Fn(u32) -> bool,
) -> Acquired {
    debug_assert!(tag != 0 && tag & CONTENDED == 0);
    for i in 0..SPINS {
        if word.load(Ordering::Relaxed) == 0
            && word.compare_exchange_weak(0, tag, Ordering::Acquire, Ordering::Relaxed).is_ok()
        {
            return Acquired::Normally;
        }
        if i < SPINS_BEFORE_YIELD {
            for _ in 0..1 << i.min(5) {
                crate::sync::spin_loop();
            }
        } else {
            crate::sync::yield_now();
        }
    }
    // Whether the holder seen last is suspect: before the first nap, and after a nap across
    // which the word did not change (a hand-over changes it). Asking the kernel costs a system
    // call, so it is not asked otherwise.
    let mut suspect = true;
    let mut naps = 0;
    loop {
        let cur = word.load(Ordering::Relaxed);
        if cur == 0 {
            // Others may be asleep: keep the contended bit so our release wakes one.
            if word.compare_exchange(0, tag | CONTENDED, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                return Acquired::Normally;
            }
            continue;
        }
        if cur & CONTENDED == 0
            && word.compare_exchange(cur, cur | CONTENDED, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            continue;
        }
        let held = cur | CONTENDED;
        let owner = cur & !CONTENDED;
        if suspect
            && owner != tag
            && owner_dead(owner)
            && word.compare_exchange(held, tag | CONTENDED, Ordering::Acquire, Ordering::Relaxed).is_ok()
        {
            return Acquired::TakenOver(held);
        }
        sys::futex_wait(word, held, NAPS[naps.min(NAPS.len() - 1)], shared);
        naps += 1;
        suspect = word.load(Ordering::Relaxed) == held;
    }
}

/// Gives a lock taken over from a dead holder back to that holder, as the word was (`word`
/// from [`Acquired::TakenOver`]), and wakes every sleeper: the repair the taker owed failed,
/// so the next taker finds the dead holder and tries again rather than proceed on a store
/// left half-changed.
pub(crate) fn restore(word: &AtomicU32, was: u32, shared: bool) {
    word.store(was, Ordering::Release);
    sys::futex_wake(word, i32::MAX, shared);
}

/// Releases the lock and wakes one sleeper if any may be waiting.
pub(crate) fn release(word: &AtomicU32, shared: bool) {
    if word.swap(0, Ordering::Release) & CONTENDED != 0 {
        sys::futex_wake(word, 1, shared);
    }
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn excludes_threads_and_counts_exactly() {
        let word = Arc::new(AtomicU32::new(0));
        let plain = Arc::new(crate::sync::AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (word, plain) = (word.clone(), plain.clone());
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        acquire(&word, 1, false, |_| false);
                        // a non-atomic read-modify-write made safe only by the lock
                        let v = plain.load(Ordering::Relaxed);
                        plain.store(v + 1, Ordering::Relaxed);
                        release(&word, false);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(plain.load(Ordering::Relaxed), 80_000);
    }

    #[test]
    fn a_dead_holder_is_taken_over() {
        let word = AtomicU32::new(7);
        assert_eq!(acquire(&word, 3, false, |t| t == 7), Acquired::TakenOver(7 | CONTENDED));
        assert_eq!(word.load(Ordering::Relaxed) & !CONTENDED, 3);
        release(&word, false);
        assert_eq!(word.load(Ordering::Relaxed), 0);
    }
}
