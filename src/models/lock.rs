//! The store lock (`lock.rs`): acquire, takeover from a holder that died, release.

use std::sync::Arc;

use loom::cell::UnsafeCell;
use loom::sync::atomic::AtomicBool;
use loom::thread;

use super::{die_after, explore, Memory};
use crate::engine::core::region::Region;
use crate::format::SB_LOCK;
use crate::lock::{acquire, release, Acquired, CONTENDED};
use crate::sync::Ordering;

/// Two words the lock guards, written one after the other by a holder.
const X: u64 = 64;
const Y: u64 = 72;
const LEN: u64 = 4096;

/// Makes the model words the threads share before they start (`region_model.rs`).
fn touch(region: &Region) {
    region.u32_at(SB_LOCK).unwrap();
    region.u64_at(X).unwrap();
    region.u64_at(Y).unwrap();
}

/// Two threads take and give back the lock around a plain counter: `loom` fails the model on
/// any access of the counter not ordered by the lock, and the count is exact.
#[test]
fn lock_excludes() {
    explore("lock_excludes", || {
        let mem = Arc::new(Memory::new(LEN));
        // SAFETY: `mem` outlives the region (dropped after it in every thread).
        let region = Arc::new(unsafe { mem.map() });
        touch(&region);
        let counter = loom::sync::Arc::new(UnsafeCell::new(0u32));
        let threads: Vec<_> = [1u32, 2]
            .into_iter()
            .map(|tag| {
                let (region, counter, mem) = (region.clone(), counter.clone(), mem.clone());
                thread::spawn(move || {
                    let word = region.u32_at(SB_LOCK).unwrap();
                    assert_eq!(acquire(word, tag, false, |_| false), Acquired::Normally);
                    // SAFETY: the lock excludes other accesses (what the model checks).
                    counter.with_mut(|c| unsafe { *c += 1 });
                    release(word, false);
                    drop((region, mem));
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        // SAFETY: every thread is joined.
        assert_eq!(counter.with(|c| unsafe { *c }), 2);
        assert_eq!(region.load32(SB_LOCK).unwrap(), 0);
    });
}

/// What the holder (tag 7) does: takes the lock, writes X then Y, releases.
fn hold(region: &Region) {
    let word = region.u32_at(SB_LOCK).unwrap();
    acquire(word, 7, false, |_| false);
    region.store(X, 1).unwrap();
    region.store(Y, 1).unwrap();
    release(word, false);
}

/// A taker (`tag`): takes the lock while the holder may be alive or dead. If it gets it
/// normally it finds X and Y both written or neither (never half); if it takes it over it
/// finds the dead holder's tag in the word and repairs; the lock excludes the takers from each other
/// (`counter`, which counts takeovers).
fn take(region: &Region, tag: u32, dead: &AtomicBool, counter: &UnsafeCell<u32>) {
    let word = region.u32_at(SB_LOCK).unwrap();
    let how = acquire(word, tag, false, |t| t == 7 && dead.load(Ordering::SeqCst));
    let (x, y) = (region.load(X).unwrap(), region.load(Y).unwrap());
    match how {
        Acquired::Normally => assert_eq!(x, y, "a live hand-over left X and Y half written"),
        Acquired::TakenOver(w) => {
            assert_eq!(w & !CONTENDED, 7, "taken over from someone else");
            assert!(dead.load(Ordering::SeqCst), "taken over from a living holder");
            // The repair a taker owes (the store lock's recovery): X and Y agree again.
            region.store(Y, x).unwrap();
        }
    }
    // SAFETY: the lock excludes other accesses (what the model checks).
    counter.with_mut(|c| unsafe { *c += u32::from(matches!(how, Acquired::TakenOver(_))) });
    release(word, false);
}

/// One taker against a holder that dies right after its k-th atomic operation, for each k
/// (1..=6: its acquire's load and compare-and-swap, its two writes, its release's swap, or
/// none), running at the same time. The lock ends free or held by the dead holder.
#[test]
fn lock_takeover_one_taker() {
    for k in 1..=6 {
        explore(&format!("lock_takeover_one_taker k={k}"), move || {
            let mem = Arc::new(Memory::new(LEN));
            // SAFETY: `mem` outlives the region (each thread drops its clone after it).
            let region = Arc::new(unsafe { mem.map() });
            touch(&region);
            let dead = Arc::new(AtomicBool::new(false));
            let counter = loom::sync::Arc::new(UnsafeCell::new(0u32));
            let holder = {
                let (region, dead, mem) = (region.clone(), dead.clone(), mem.clone());
                thread::spawn(move || {
                    let died = die_after(k, || hold(&region));
                    // The kernel drops a dead process's liveness lock: from now on it is dead.
                    dead.store(died, Ordering::SeqCst);
                    drop((region, mem));
                })
            };
            let taker = {
                let (region, dead, counter, mem) =
                    (region.clone(), dead.clone(), counter.clone(), mem.clone());
                thread::spawn(move || {
                    take(&region, 3, &dead, &counter);
                    drop((region, mem));
                })
            };
            holder.join().unwrap();
            taker.join().unwrap();
            let left = region.load32(SB_LOCK).unwrap();
            assert!(
                left == 0 || (left & !CONTENDED == 7 && dead.load(Ordering::SeqCst)),
                "lock left held: {left:#x}"
            );
        });
    }
}

/// Two takers (tags 3, 5) racing for the lock of a holder that died right after its k-th
/// atomic operation (each k of `lock_takeover_one_taker`'s), before they start: only one
/// takes it over, the other gets it after, and it ends free. (The holder runs to its death
/// first: `loom`'s scheduler is not fair, so two waiters that yield to each other while the
/// dying holder runs are an unbounded schedule to it.)
#[test]
fn lock_takeover_two_takers() {
    for k in 1..=6 {
        explore(&format!("lock_takeover_two_takers k={k}"), move || {
            let mem = Arc::new(Memory::new(LEN));
            // SAFETY: `mem` outlives the region (each thread drops its clone after it).
            let region = Arc::new(unsafe { mem.map() });
            touch(&region);
            let died = die_after(k, || hold(&region));
            let dead = Arc::new(AtomicBool::new(died));
            let counter = loom::sync::Arc::new(UnsafeCell::new(0u32));
            let takers: Vec<_> = [3u32, 5]
                .into_iter()
                .map(|tag| {
                    let (region, dead, counter, mem) =
                        (region.clone(), dead.clone(), counter.clone(), mem.clone());
                    thread::spawn(move || {
                        take(&region, tag, &dead, &counter);
                        drop((region, mem));
                    })
                })
                .collect();
            takers.into_iter().for_each(|t| t.join().unwrap());
            // SAFETY: every thread is joined.
            assert!(counter.with(|c| unsafe { *c }) <= 1, "two takers took over the same dead holder");
            assert_eq!(region.load32(SB_LOCK).unwrap(), 0);
        });
    }
}
