//! The in-process manager's paths at sizes Miri runs (`cargo +nightly miri test --lib
//! default_manager::`): allocate, clone, drop, resize, handles, the raw allocator interfaces,
//! giving memory back, and threads that pass blocks to each other. Under Miri the heap's
//! memory is an ordinary allocation (`sys/memory_miri.rs`), so these run the same heap code
//! with every access checked.

use std::sync::mpsc;

use crate::{BlockHandle, DefaultManager, MemoryBlock, MemoryManager};

/// Heaps of a few MiB: under Miri every byte of the reservation is host memory.
fn manager() -> DefaultManager {
    DefaultManager::with_max_size(8 << 20).unwrap()
}

/// The heap is sound and holds exactly `live` blocks.
fn assert_sound(m: &DefaultManager, live: u64) {
    let report = m.check().unwrap();
    assert!(report.is_sound(), "{report:?}");
    assert_eq!(m.stats().unwrap().live_blocks, live);
}

fn stamped(m: &DefaultManager, len: usize, stamp: u8) -> MemoryBlock {
    let mut b = m.allocate(len).unwrap();
    b.as_mut_slice().unwrap().fill(stamp);
    b
}

/// Compared as slices (a `memcmp`, which Miri runs at once; a loop over the bytes is slow there).
fn holds(b: &MemoryBlock, stamp: u8) -> bool {
    b.as_slice() == vec![stamp; b.len()].as_slice()
}

/// Blocks of sizes around the thread cache's classes and the core's, written, read and freed
/// in an order that mixes reuse of parked and core blocks.
#[test]
fn blocks_of_many_sizes_keep_their_bytes() {
    let m = manager();
    let sizes = [0, 1, 15, 16, 17, 100, 255, 1000, 4096, 5000, 30_000];
    let mut live: Vec<(MemoryBlock, u8)> = Vec::new();
    for round in 0..3u8 {
        for (i, &len) in sizes.iter().enumerate() {
            let stamp = round * 16 + i as u8;
            live.push((stamped(&m, len, stamp), stamp));
        }
        // Free every other block, oldest first, so that the next round reuses holes.
        let mut k = 0;
        live.retain(|(b, s)| {
            k += 1;
            assert!(holds(b, *s));
            k % 2 == 0
        });
    }
    assert!(live.iter().all(|(b, s)| holds(b, *s)));
    assert_sound(&m, live.len() as u64);
    drop(live);
    assert_sound(&m, 0);
}

/// Clones count references; the last drop frees; a shared block is read-only and becomes
/// writable again when its clones are gone.
#[test]
fn clones_count_and_the_last_drop_frees() {
    let m = manager();
    let mut a = stamped(&m, 300, 7);
    assert_eq!(a.ref_count(), 1);
    let b = a.clone();
    let c = b.clone();
    assert_eq!(a.ref_count(), 3);
    assert!(a.as_mut_slice().is_err(), "a shared block is read-only");
    drop(b);
    assert_eq!(c.ref_count(), 2);
    drop(c);
    assert_eq!(a.ref_count(), 1);
    a.as_mut_slice().unwrap()[0] = 9;
    assert_eq!(a.as_slice()[..2], [9, 7]);
    assert_sound(&m, 1);
    drop(a);
    assert_sound(&m, 0);
}

/// A handle resolves to the same bytes while the block lives, and no longer once it is freed.
#[test]
fn handles_resolve_while_the_block_lives() {
    let m = manager();
    let a = stamped(&m, 40, 3);
    let h: BlockHandle = a.handle();
    assert!(a.is_published());
    let again = m.block_from_handle(h).unwrap();
    assert_eq!(again.offset(), a.offset());
    assert!(holds(&again, 3));
    assert_eq!(a.ref_count(), 2);
    drop((a, again));
    assert!(m.block_from_handle(h).is_err(), "a freed block's handle is stale");
    assert_sound(&m, 0);
}

/// Growing and shrinking keeps the bytes that stay, in place or moved.
#[test]
fn resize_keeps_the_bytes_that_stay() {
    let m = manager();
    let mut a = stamped(&m, 100, 5);
    let _neighbour = stamped(&m, 100, 6); // so that a large growth must move
    for (len, want) in [(50, 50), (3000, 50), (20, 20), (100_000, 20), (0, 0)] {
        m.resize(&mut a, len).unwrap();
        assert_eq!(a.len(), len);
        assert!(holds_prefix(&a, want, 5), "resize to {len}");
        a.as_mut_slice().unwrap().fill(5);
    }
    let b = a.clone();
    assert!(m.resize(&mut a, 10).is_err(), "a shared block keeps its size");
    drop(b);
    assert_sound(&m, 2);
}

fn holds_prefix(b: &MemoryBlock, n: usize, stamp: u8) -> bool {
    b.as_slice()[..n] == *vec![stamp; n]
}

/// Aligned and zeroed blocks, reusing memory that held other bytes.
#[test]
fn aligned_and_zeroed_blocks() {
    let m = manager();
    drop((0..8).map(|i| stamped(&m, 64 * i + 8, 0xff)).collect::<Vec<_>>());
    for align in [16, 64, 256, 4096] {
        let b = m.allocate_aligned(24, align).unwrap();
        assert_eq!(b.as_slice().as_ptr() as usize % align, 0, "{align}");
    }
    let z = m.allocate_zeroed(500).unwrap();
    assert!(holds(&z, 0));
    assert!(m.allocate_aligned(8, 3).is_err());
    drop(z);
    assert_sound(&m, 0);
}

/// The segment views of a block read and write through the same memory.
#[test]
fn segments_view_the_blocks_bytes() {
    let m = manager();
    let mut a = m.allocate(64).unwrap();
    {
        let mut s = a.segment_mut().unwrap();
        s.fill(0);
        s.write(8, &0x1122_3344_5566_7788u64).unwrap();
        let (head, mut tail) = s.split_at_mut(32).unwrap();
        assert_eq!(head.len(), 32);
        tail.view_slice_mut::<u32>().unwrap()[0] = 0xdead_beef;
    }
    let s = a.segment();
    assert_eq!(s.read::<u64>(8).unwrap(), 0x1122_3344_5566_7788);
    assert_eq!(s.slice(32..36).unwrap().view::<u32>().unwrap(), &0xdead_beef);
    assert_eq!(s.view_slice::<u64>().unwrap().len(), 8);
    assert!(s.read::<u64>(60).is_err(), "past the end");
    assert!(s.slice(10..70).is_err());
    assert_eq!(s.to_vec().len(), 64);
}

/// The raw interfaces (`GlobalAlloc` and `Allocator`) of a private heap, with a collection
/// that grows through `realloc`.
#[test]
fn raw_blocks_through_the_allocator_interfaces() {
    use std::alloc::{GlobalAlloc, Layout};
    let m = manager();
    let mut v = allocator_api2::vec::Vec::new_in(&m);
    for i in 0..600u32 {
        v.push(i);
    }
    assert_eq!(v.iter().map(|&x| u64::from(x)).sum::<u64>(), 179_700);
    let layout = Layout::from_size_align(200, 32).unwrap();
    // SAFETY: a non-zero layout; the block is written within its size and freed once.
    unsafe {
        let p = m.alloc(layout);
        assert!(!p.is_null() && p as usize % 32 == 0);
        assert!(m.usable_size(p).is_some_and(|n| n >= 200));
        p.write_bytes(1, 200);
        let q = m.realloc(p, layout, 5000);
        assert_eq!(std::slice::from_raw_parts(q, 200), [1; 200]);
        m.dealloc(q, Layout::from_size_align(5000, 32).unwrap());
    }
    drop(v);
    assert_sound(&m, 0);
}

/// Large freed blocks are given back to the system (under Miri: zeroed, `sys::purge`) and the
/// heap stays sound; `trim` gives back what threads keep.
#[test]
fn memory_given_back_is_reusable() {
    let m = manager();
    for round in 0..3u8 {
        let big = stamped(&m, 1 << 20, round);
        let small: Vec<_> = (0..20).map(|_| stamped(&m, 48, round)).collect();
        drop(big);
        m.trim().unwrap();
        assert!(small.iter().all(|b| holds(b, round)));
    }
    assert_sound(&m, 0);
}

/// Threads allocate, send clones and handles to the next thread, which checks and drops them;
/// blocks freed by a thread other than their allocator's, thread caches of exiting threads,
/// and the heap's lock under contention. Every block is freed once.
#[test]
fn threads_pass_blocks_around() {
    const THREADS: usize = 3;
    let m = manager();
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..THREADS).map(|_| mpsc::channel::<(MemoryBlock, BlockHandle, u8)>()).unzip();
    std::thread::scope(|s| {
        for (t, from_prev) in receivers.into_iter().enumerate() {
            let (m, to_next) = (&m, senders[(t + 1) % THREADS].clone());
            s.spawn(move || {
                let mut live = Vec::new();
                for i in 0..30usize {
                    let stamp = (t * 40 + i) as u8;
                    let b = stamped(m, 8 + (i * 37 + t * 11) % 400, stamp);
                    if i % 3 == 0 {
                        to_next.send((b.clone(), b.handle(), stamp)).unwrap();
                    }
                    live.push((b, stamp));
                    if i % 4 == 3 {
                        let (b, stamp) = live.swap_remove(i % live.len());
                        assert!(holds(&b, stamp));
                    }
                    while let Ok((b, h, stamp)) = from_prev.try_recv() {
                        assert!(holds(&b, stamp));
                        assert_eq!(m.block_from_handle(h).unwrap().offset(), b.offset());
                    }
                }
                drop(to_next);
                from_prev.iter().for_each(|(b, _, stamp)| assert!(holds(&b, stamp)));
            });
        }
        drop(senders);
    });
    assert_sound(&m, 0);
}

/// Two threads clone the same fresh blocks at once (blocks lent from the thread cache count
/// nothing in their headers until shared): every clone counts once.
#[test]
fn racing_clones_count_once() {
    let m = manager();
    let blocks: Vec<MemoryBlock> = (0..6).map(|i| stamped(&m, 32 + i * 16, 1)).collect();
    let (mine, theirs) = std::thread::scope(|s| {
        let other = s.spawn(|| blocks.iter().map(MemoryBlock::clone).collect::<Vec<_>>());
        let mine: Vec<_> = blocks.iter().map(MemoryBlock::clone).collect();
        (mine, other.join().unwrap())
    });
    assert!(blocks.iter().all(|b| b.ref_count() == 3));
    drop((mine, theirs));
    assert!(blocks.iter().all(|b| b.ref_count() == 1));
    assert_sound(&m, 6);
    drop(blocks);
    assert_sound(&m, 0);
}

/// Two threads take the first handle of the same blocks at once: they agree, and it resolves.
#[test]
fn racing_first_handles_agree() {
    let m = manager();
    let blocks: Vec<MemoryBlock> = (0..6).map(|i| stamped(&m, 32 + i * 16, 1)).collect();
    let (mine, theirs) = std::thread::scope(|s| {
        let other = s.spawn(|| blocks.iter().map(MemoryBlock::handle).collect::<Vec<_>>());
        (blocks.iter().map(MemoryBlock::handle).collect::<Vec<_>>(), other.join().unwrap())
    });
    assert_eq!(mine, theirs);
    for (b, h) in blocks.iter().zip(mine) {
        assert_eq!(m.block_from_handle(h).unwrap().offset(), b.offset());
    }
    drop(blocks);
    assert_sound(&m, 0);
}
