//! A channel ring's send and receive locks (`engine/channel/ring.rs`): two fields of the ring's
//! flags word, taken with `try_lock` and given back when the `SideLock` drops.

use std::sync::Arc;

use loom::cell::UnsafeCell;
use loom::thread;

use super::{explore, Memory};
use crate::engine::channel::ring::{try_lock, Side};
use crate::engine::core::region::Region;
use crate::sync::Ordering;

/// The flags word, and a bit of it that is no lock's (the locks must leave it alone).
const FLAGS: u64 = 64;
const OTHER: u64 = 1;

/// Takes `side`'s lock for `tag` (trying again while another holds it), checks the word names
/// it, counts in `count` (which only the lock orders), and gives it back.
fn with_lock(region: &Region, side: Side, tag: u32, count: &UnsafeCell<u32>) {
    let flags = region.u64_at(FLAGS).unwrap();
    let lock = loop {
        match try_lock(flags, side, tag) {
            Ok(lock) => break lock,
            Err(holder) => {
                assert_ne!(holder, tag, "the word names this thread, which holds nothing");
                crate::sync::yield_now();
            }
        }
    };
    assert_eq!(side.holder(flags.load(Ordering::Relaxed)), tag);
    // SAFETY: the side's lock excludes the other threads of this side (what the model checks).
    count.with_mut(|c| unsafe { *c += 1 });
    drop(lock);
}

/// Two senders (tags 3, 5) and a receiver (tag 7) take their side's lock at once: senders
/// exclude each other, the receiver's lock is independent of theirs, giving a lock back clears
/// its field only, and the word ends with no holder and its other bits as they were.
#[test]
fn ring_side_locks() {
    explore("ring_side_locks", || {
        let mem = Arc::new(Memory::new(4096));
        // SAFETY: `mem` outlives the region (each thread drops its clone after it).
        let region = Arc::new(unsafe { mem.map() });
        region.store(FLAGS, OTHER).unwrap();
        let sends = loom::sync::Arc::new(UnsafeCell::new(0u32));
        let recvs = loom::sync::Arc::new(UnsafeCell::new(0u32));
        let threads: Vec<_> = [(Side::Send, 3u32), (Side::Send, 5), (Side::Recv, 7)]
            .into_iter()
            .map(|(side, tag)| {
                let (region, mem) = (region.clone(), mem.clone());
                let count = if side == Side::Send { sends.clone() } else { recvs.clone() };
                thread::spawn(move || {
                    with_lock(&region, side, tag, &count);
                    drop((region, mem));
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        // SAFETY: every thread is joined.
        assert_eq!((sends.with(|c| unsafe { *c }), recvs.with(|c| unsafe { *c })), (2, 1));
        assert_eq!(region.load(FLAGS).unwrap(), OTHER);
        assert!(!crate::engine::channel::ring::held_here());
    });
}
