//! One conformance suite, run against both managers: every test is a generic function over
//! `MemoryManager`, instantiated for `DefaultManager` and `MappedManager` by `suite!`.

use mmheap::format::payload_of;
use mmheap::{CheckReport, DefaultManager, Error, MappedManager, MemoryBlock, MemoryManager, Options};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// What the suite needs beyond the trait: a fresh manager of a given maximum size, and a
/// consistency check.
trait Subject: MemoryManager + Sized + Sync {
    /// Bytes one thread's stacks keep parked at most in a heap of 64 MiB (ARCHITECTURE.md,
    /// "Block caches": a store's 2 MiB, an in-process heap's sixteenth of its maximum size).
    const BUDGET: u64;
    fn make(max_size: u64) -> Self;
    fn report(&self) -> CheckReport;
    fn sound(&self) -> bool {
        self.report().is_sound()
    }
}

impl Subject for DefaultManager {
    const BUDGET: u64 = 4 << 20;
    fn make(max_size: u64) -> Self {
        DefaultManager::with_max_size(max_size).unwrap()
    }
    fn report(&self) -> CheckReport {
        self.check().unwrap()
    }
}

impl Subject for MappedManager {
    const BUDGET: u64 = 2 << 20;
    fn make(max_size: u64) -> Self {
        MappedManager::temporary(&Options::new().initial_size(64 << 10).max_size(max_size)).unwrap()
    }
    fn report(&self) -> CheckReport {
        self.check().unwrap()
    }
}

fn addr(b: &MemoryBlock) -> usize {
    b.as_slice().as_ptr() as usize
}

fn every_size_reports_its_length<M: Subject>() {
    let m = M::make(64 << 20);
    let blocks: Vec<_> = (1..=4096).map(|n| m.allocate(n).unwrap()).collect();
    for (i, b) in blocks.iter().enumerate() {
        assert_eq!(b.len(), i + 1);
        assert_eq!(addr(b) % 16, 0, "every block is 16-aligned");
    }
    let mut spans: Vec<_> = blocks.iter().map(|b| (addr(b), addr(b) + b.len())).collect();
    spans.sort();
    assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0), "blocks overlap");
    assert_eq!(m.stats().unwrap().live_blocks, 4096);
    drop(blocks);
    assert_eq!(m.stats().unwrap().live_blocks, 0);
    assert!(m.sound());
}

fn alignment_of_every_block<M: Subject>() {
    let m = M::make(64 << 20);
    let mut rng = SmallRng::seed_from_u64(1);
    let mut keep = Vec::new();
    for shift in 0..=12 {
        let align = 1usize << shift;
        for _ in 0..20 {
            let b = m.allocate_aligned(rng.gen_range(0..3000), align).unwrap();
            assert_eq!(addr(&b) % align.max(16), 0, "align {align}");
            keep.push(b);
        }
    }
    for bad in [0, 3, 24, 8192] {
        assert!(matches!(m.allocate_aligned(8, bad), Err(Error::InvalidAlignment(a)) if a == bad));
    }
    drop(keep);
    assert!(m.sound());
    assert_eq!(m.stats().unwrap().live_blocks, 0);
}

fn freed_hole_is_reused<M: Subject>() {
    // Sizes the thread caches keep: the released block is parked on its class's stack, and the
    // refill for the smaller class frees it before it carves.
    for (large, small) in [(1000, 400), (20_000, 5_000), (20_000, 300)] {
        let m = M::make(64 << 20);
        let _a = m.allocate(large).unwrap();
        let b = m.allocate(large).unwrap();
        let _c = m.allocate(large).unwrap();
        let hole = b.offset();
        drop(b);
        let d = m.allocate(small).unwrap();
        assert_eq!(d.offset(), hole, "the {small}-byte block comes from the {large}-byte hole");
        assert_eq!(m.stats().unwrap().live_blocks, 3);
        assert!(m.sound());
    }
}

fn a_published_block_says_its_length<M: Subject>() {
    // Above 640 bytes a block comes from a class up to an eighth larger than asked: 4,100
    // bytes take a 4,608-byte block, whose tag cannot hold the difference (476 bytes of slack,
    // the field has 8 bits) until publishing gives the excess back to the heap.
    let m = M::make(64 << 20);
    drop(m.allocate(1 << 20).unwrap()); // room to carve from (a refill does not grow the store)
    for len in [700, 4_100, 70_000, 131_000] {
        let mut b = m.allocate(len).unwrap();
        b.as_mut_slice().unwrap().fill(3);
        let used = m.stats().unwrap().used_bytes;
        let h = b.handle();
        let r = m.block_from_handle(h).unwrap();
        assert_eq!(r.len(), len, "length through a handle");
        assert!(r.as_slice().iter().all(|&x| x == 3));
        let now = m.stats().unwrap().used_bytes;
        if let 4_100 | 70_000 = len {
            assert!(now < used, "the excess is given back ({len}: {used} -> {now})");
        } else {
            assert_eq!(now, used, "a block whose slack fits keeps its size ({len})");
        }
    }
    assert!(m.sound());
}

fn freed_large_hole_is_reused<M: Subject>() {
    // Blocks too large for the thread caches' stacks: the released one waits on the thread's
    // deferred list, and the next allocation, which takes the lock, gives it back to the heap
    // first.
    let m = M::make(64 << 20);
    let _a = m.allocate(150_000).unwrap();
    let b = m.allocate(150_000).unwrap();
    let _c = m.allocate(150_000).unwrap();
    let hole = b.offset();
    drop(b);
    let d = m.allocate(40_000).unwrap();
    assert_eq!(d.offset(), hole, "the smaller block comes from the hole");
    assert_eq!(m.stats().unwrap().live_blocks, 3);
    assert!(m.sound());
}

fn a_thread_keeps_no_more_than_its_budget<M: Subject>() {
    // Eight blocks of every size class from 704 bytes to 128 KiB: 14 MiB released by one
    // thread, which keeps at most its budget on its stacks and 1 MiB on its deferred list.
    let m = M::make(64 << 20);
    drop(m.allocate(1 << 20).unwrap()); // the cache and its counter table exist now
    let r0 = m.report();
    let sizes = (0..62).map(|i| ((8 + (i + 3) % 8) << ((i + 3) / 8 + 6)) - 32);
    let blocks: Vec<MemoryBlock> =
        sizes.flat_map(|n| (0..8).map(move |_| n)).map(|n| m.allocate(n).unwrap()).collect();
    let total: u64 = blocks.iter().map(|b| b.len() as u64 + 32).sum();
    assert!(total > 2 * M::BUDGET, "{total} bytes: enough to fill the budget");
    drop(blocks);
    let parked = m.report().cached_bytes - r0.cached_bytes;
    assert!(parked > 0, "some are parked");
    assert!(parked <= M::BUDGET + (1 << 20), "{parked} bytes parked");
    m.trim().unwrap();
    assert_eq!(held(&m.report()), held(&r0), "trim gives them all back");
    assert!(m.sound());
}

fn a_thread_that_only_releases_gives_back_in_batches<M: Subject>() {
    // A thread that never allocates takes the lock when its deferred list (1 MiB: six of
    // these blocks) has no room for the next, and that frees the whole list: of 17 releases,
    // the first 14 are free space again while the thread lives, and all 17 once it exits.
    const SIZE: u64 = 150_032; // block size of 150,000 bytes
    let m = M::make(64 << 20);
    let mut run: Vec<MemoryBlock> = (0..17).map(|_| m.allocate(150_000).unwrap()).collect();
    let _fence = m.allocate(100).unwrap();
    run.sort_by_key(|b| b.offset().get());
    assert!(run.windows(2).all(|w| w[1].offset().get() == w[0].offset().get() + SIZE), "side by side");
    let before = m.report();
    let step = std::sync::Barrier::new(2);
    let mut during = None;
    std::thread::scope(|s| {
        let releaser = s.spawn(|| {
            drop(run);
            step.wait(); // released
            step.wait(); // seen
        });
        step.wait();
        during = Some(m.report());
        step.wait();
        releaser.join().unwrap(); // the OS thread's end, its thread-local destructors included
    });
    let after = m.report();
    assert_eq!(during.unwrap().free_bytes - before.free_bytes, 14 * SIZE, "two batches of seven are free");
    assert_eq!(after.free_bytes - before.free_bytes, 17 * SIZE, "all 17 are free");
    assert!(m.sound());
}

/// Blocks and bytes live or cached (`Stats`' categories): what users hold and what caches keep.
fn held(r: &CheckReport) -> (u64, u64) {
    (r.used_blocks + r.cached_blocks, r.used_bytes + r.cached_bytes)
}

/// Allocates and releases what a thread's cache keeps: 50 small blocks and 3 large ones on
/// their class stacks, 3 larger ones on the deferred list.
fn allocate_and_release_some<M: Subject>(m: &M) {
    let small: Vec<MemoryBlock> = (0..50).map(|_| m.allocate(100).unwrap()).collect();
    let large: Vec<MemoryBlock> =
        [20_000, 150_000].iter().cycle().take(6).map(|&n| m.allocate(n).unwrap()).collect();
    drop((small, large));
}

fn trim_gives_back_what_the_thread_keeps<M: Subject>() {
    // Another thread's parked blocks are out of reach until that thread trims.
    let m = M::make(64 << 20);
    drop(m.allocate(100).unwrap()); // this thread's cache (and the counter table) exist now
    let r0 = m.report();
    let step = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        s.spawn(|| {
            allocate_and_release_some(&m);
            step.wait(); // released
            step.wait(); // seen parked
            m.trim().unwrap();
            step.wait(); // trimmed
            step.wait(); // seen given back (before this thread's exit would give them back)
        });
        // Asserted after the last step, so that a failure cannot leave the thread waiting.
        step.wait();
        let (r1, live) = (m.report(), m.stats().unwrap().live_blocks);
        step.wait();
        step.wait();
        let r2 = m.report();
        step.wait();
        assert!(r1.cached_blocks >= r0.cached_blocks + 55, "released, but parked in the thread's cache");
        assert_eq!(live, 0, "parked blocks are no user's");
        assert_eq!(held(&r2), held(&r0), "all given back");
    });
    assert!(m.sound());
}

fn an_exiting_thread_gives_back_what_it_keeps<M: Subject>() {
    let m = M::make(64 << 20);
    drop(m.allocate(100).unwrap()); // this thread's cache (and the counter table) exist now
    let r0 = m.report();
    std::thread::scope(|s| {
        s.spawn(|| {
            allocate_and_release_some(&m);
        })
        .join() // the OS thread's end, its thread-local destructors included
        .unwrap();
    });
    assert_eq!(held(&m.report()), held(&r0), "all given back");
    assert!(m.sound());
}

fn releasing_one_of_two_clones_keeps_the_block<M: Subject>() {
    // A block from a thread cache, cloned, then the original dropped first: the block must
    // stay the clone's, not go back to the cache to be handed out again.
    let m = M::make(64 << 20);
    drop(m.allocate(100).unwrap());
    let mut a = m.allocate(100).unwrap(); // from the cache
    a.as_mut_slice().unwrap().fill(7);
    let b = a.clone();
    drop(a);
    let others: Vec<MemoryBlock> = (0..100)
        .map(|_| {
            let mut o = m.allocate(100).unwrap();
            o.as_mut_slice().unwrap().fill(9);
            o
        })
        .collect();
    assert!(others.iter().all(|o| o.offset() != b.offset()), "handed out while held");
    assert!(b.as_slice().iter().all(|&x| x == 7));
    assert_eq!(b.ref_count(), 1);
    drop((b, others));
    assert_eq!(m.stats().unwrap().live_blocks, 0);
    assert!(m.sound());
}

fn reference_count_lifecycle<M: Subject>() {
    let m = M::make(64 << 20);
    let a = m.allocate(32).unwrap();
    let handle = a.handle();
    assert_eq!(a.ref_count(), 1);
    let b = a.clone();
    assert_eq!((a.ref_count(), b.ref_count()), (2, 2));
    drop(b);
    assert_eq!(a.ref_count(), 1);
    assert_eq!(m.stats().unwrap().live_blocks, 1);
    drop(a);
    assert_eq!(m.stats().unwrap().live_blocks, 0, "freed at zero");
    assert!(matches!(m.block_from_handle(handle), Err(Error::StaleHandle { .. })));
}

fn resize_keeps_content_in_place_or_moving<M: Subject>() {
    let m = M::make(64 << 20);
    // Sizes above what the thread caches keep, so that the three blocks lie side by side and
    // the released neighbour is free at once (a neighbour parked in a cache is in use).
    let mut a = m.allocate(200_000).unwrap();
    a.as_mut_slice().unwrap().iter_mut().enumerate().for_each(|(i, x)| *x = i as u8);
    let neighbour = m.allocate(300_000).unwrap();
    let _fence = m.allocate(200_000).unwrap();
    drop(neighbour);
    let before = a.offset();
    m.resize(&mut a, 400_000).unwrap();
    assert_eq!(a.offset(), before, "grows in place into the free neighbour");
    assert_eq!(a.len(), 400_000);
    assert!(a.as_slice()[..1000].iter().enumerate().all(|(i, x)| *x == i as u8));
    m.resize(&mut a, 5_000_000).unwrap();
    assert_ne!(a.offset(), before, "no room next to it: moves");
    assert!(a.as_slice()[..1000].iter().enumerate().all(|(i, x)| *x == i as u8));
    m.resize(&mut a, 10).unwrap();
    assert_eq!(a.as_slice(), &(0..10).collect::<Vec<u8>>()[..]);
    assert!(m.sound());
}

/// A block grown step by step (a buffer appended to) gets room to grow into, so that it
/// rarely moves; shrinking by less than half stays in place; the length it has when it is
/// published is the one another reference sees.
fn resize_by_steps_rarely_moves_and_publishes_its_length<M: Subject>() {
    let m = M::make(64 << 20);
    let mut a = m.allocate(1000).unwrap();
    a.as_mut_slice().unwrap().iter_mut().enumerate().for_each(|(i, x)| *x = i as u8);
    let mut moves = 0;
    for len in (1016..=4000).step_by(16) {
        let before = a.offset();
        m.resize(&mut a, len).unwrap();
        moves += usize::from(a.offset() != before);
        assert_eq!(a.len(), len);
        let s = a.as_mut_slice().unwrap();
        s[len - 1] = 7;
    }
    assert!(moves <= 8, "{moves} moves in 188 steps of 16 bytes");
    assert!(a.as_slice()[..1000].iter().enumerate().all(|(i, x)| *x == i as u8));
    let before = a.offset();
    m.resize(&mut a, 3000).unwrap();
    assert_eq!(a.offset(), before, "a shrink by less than half stays in place");
    let b = m.block_from_handle(a.handle()).unwrap();
    assert_eq!(b.len(), 3000, "the published length is the last one");
    assert_eq!(b.as_slice()[..1000], a.as_slice()[..1000]);
    drop(b);
    // Published, then grown (in place or moved): others see exactly the new length.
    for len in [3100, 3500, 9000] {
        m.resize(&mut a, len).unwrap();
        let c = m.block_from_handle(a.handle()).unwrap();
        assert_eq!(c.len(), len, "a published block's length after a resize");
    }
    assert!(m.sound());
}

fn resize_of_a_shared_block_is_an_error<M: Subject>() {
    let m = M::make(64 << 20);
    let mut a = m.allocate(100).unwrap();
    let b = a.clone();
    assert!(matches!(m.resize(&mut a, 200), Err(Error::Shared { count: 2 })));
    assert_eq!(a.len(), 100);
    drop(b);
    m.resize(&mut a, 200).unwrap();
    let mut c = m.block_from_handle(a.handle()).unwrap();
    assert!(matches!(m.resize(&mut c, 10), Err(Error::Shared { count: 2 })));
}

fn zero_length_rule<M: Subject>() {
    let m = M::make(64 << 20);
    let a = m.allocate(0).unwrap();
    let b = m.allocate(0).unwrap();
    assert!(a.is_empty() && b.is_empty());
    assert_ne!(a.offset(), b.offset(), "zero-length blocks are distinct");
    assert_eq!(m.stats().unwrap().live_blocks, 2, "zero-length blocks are real blocks");
    drop((a, b));
    assert_eq!(m.stats().unwrap().live_blocks, 0);
    let mut d = m.allocate_zeroed(0).unwrap();
    m.resize(&mut d, 10).unwrap();
    assert_eq!(d.len(), 10);
}

fn out_of_space_leaves_the_heap_unchanged<M: Subject>() {
    let m = M::make(1 << 20);
    let keep = m.allocate(1000).unwrap();
    let before = m.stats().unwrap();
    let err = m.allocate(2 << 20).unwrap_err();
    assert!(matches!(err, Error::OutOfSpace { requested, .. } if requested == 2 << 20), "{err}");
    let after = m.stats().unwrap();
    assert_eq!(
        after.capacity, before.capacity,
        "a request the maximum cannot hold is refused before any growth"
    );
    assert_eq!((after.used_bytes, after.live_blocks), (before.used_bytes, before.live_blocks));
    // Filling up with small blocks also ends in a typed error.
    let many = fill_up(&m, 10_000);
    assert!(many.len() > 50);
    assert!(m.sound());
    drop(many);
    assert_eq!(m.stats().unwrap().live_blocks, 1);
    drop(keep);
}

/// Allocates blocks of `len` bytes until the store is full (which must be a typed error).
fn fill_up<M: Subject>(m: &M, len: usize) -> Vec<MemoryBlock> {
    let mut many = Vec::new();
    loop {
        match m.allocate(len) {
            Ok(b) => many.push(b),
            Err(Error::OutOfSpace { .. }) => return many,
            Err(e) => panic!("{e}"),
        }
    }
}

/// Small blocks a thread has released stay parked for its next allocations; when the store is
/// full, they make way for a larger request instead of failing it.
fn parked_blocks_make_way_when_the_store_is_full<M: Subject>() {
    let m = M::make(1 << 20);
    let mut many = fill_up(&m, 500);
    let parked = many.split_off(many.len() - 10);
    drop(parked);
    let big = m.allocate(2000).expect("the parked blocks give way");
    assert_eq!(big.len(), 2000);
    assert!(m.sound());
    drop((many, big));
    assert_eq!(m.stats().unwrap().live_blocks, 0);
}

fn zeroed_memory_is_zero_even_when_reused<M: Subject>() {
    let m = M::make(64 << 20);
    let mut a = m.allocate(4096).unwrap();
    a.as_mut_slice().unwrap().fill(0xaa);
    drop(a);
    let z = m.allocate_zeroed(4096).unwrap();
    assert!(z.as_slice().iter().all(|b| *b == 0));
}

fn handles_validate<M: Subject>() {
    let m = M::make(64 << 20);
    // Slots of a span (0 and 64 bytes) and a block with a header of its own (200).
    for len in [0, 64, 200] {
        let a = m.allocate(len).unwrap();
        let h = a.handle();
        assert!(a.is_published());
        let again = m.block_from_handle(h).unwrap();
        assert_eq!(addr(&again), addr(&a));
        assert_eq!(again.len(), len);
        // The owner's release comes last: it keeps the block for the next allocation of its size.
        drop(again);
        drop(a);
        let b = m.allocate(len).unwrap();
        assert_eq!(b.offset().get(), payload_of(h.offset), "same place reused");
        assert!(matches!(m.block_from_handle(h), Err(Error::StaleHandle { .. })), "old generation refused");
        assert!(!b.is_published(), "a new allocation in a published block's place starts unpublished");
        let h2 = b.handle();
        assert_ne!(h2.generation, h.generation, "published again: a new generation");
        assert!(matches!(m.block_from_handle(h), Err(Error::StaleHandle { .. })), "still refused");
        assert_eq!(addr(&m.block_from_handle(h2).unwrap()), addr(&b));
        let forged = [
            mmheap::BlockHandle { offset: h.offset + 16, generation: h.generation },
            mmheap::BlockHandle { offset: h.offset + 8, generation: h.generation },
            mmheap::BlockHandle { offset: 3, generation: 1 },
            mmheap::BlockHandle { offset: u64::MAX - 15, generation: 1 },
            mmheap::BlockHandle { offset: u64::MAX - 7, generation: 1 },
            mmheap::BlockHandle { offset: h.offset, generation: u64::MAX },
            mmheap::BlockHandle::default(),
        ];
        for f in forged {
            let e = m.block_from_handle(f).unwrap_err();
            assert!(matches!(e, Error::StaleHandle { .. } | Error::InvalidHandle { .. }), "{e}");
        }
    }
}

fn statistics_stay_consistent<M: Subject>() {
    let m = M::make(256 << 20);
    let mut rng = SmallRng::seed_from_u64(7);
    let mut live: Vec<MemoryBlock> = Vec::new();
    for i in 0..10_000u32 {
        match rng.gen_range(0..10) {
            0..=4 => {
                let len = rng.gen_range(0..5000);
                let mut b = m.allocate(len).unwrap();
                b.as_mut_slice().unwrap().fill(i as u8);
                live.push(b);
            }
            5..=7 if !live.is_empty() => {
                let b = live.swap_remove(rng.gen_range(0..live.len()));
                let stamp = b.as_slice().first().copied();
                assert!(b.as_slice().iter().all(|x| Some(*x) == stamp), "content survived");
            }
            _ if !live.is_empty() => {
                let k = rng.gen_range(0..live.len());
                let len = rng.gen_range(0..8000);
                let stamp = live[k].as_slice().first().copied().unwrap_or(0);
                m.resize(&mut live[k], len).unwrap();
                live[k].as_mut_slice().unwrap().fill(stamp);
            }
            _ => {}
        }
    }
    let s = m.stats().unwrap();
    assert_eq!(s.live_blocks, live.len() as u64);
    let payload: u64 = live.iter().map(|b| b.len() as u64).sum();
    assert!(s.used_bytes >= payload + 32 * live.len() as u64);
    // Live, cached, bookkeeping, free and quarantined make up the heap (`Stats`' definitions).
    let parts = s.used_bytes + s.cached_bytes + s.bookkeeping_bytes + s.free_bytes + s.quarantined_bytes;
    assert_eq!(parts + 32 + 32768, s.capacity);
    assert_eq!(parts - s.free_bytes, s.heap_bytes);
    assert!(s.largest_free <= s.free_bytes);
    assert!(m.sound());
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod default_manager {
            use super::*;
            $( #[test] fn $name() { super::$name::<DefaultManager>(); } )*
        }
        mod mapped_manager {
            use super::*;
            $( #[test] fn $name() { super::$name::<MappedManager>(); } )*
        }
    };
}

suite!(
    every_size_reports_its_length,
    alignment_of_every_block,
    freed_hole_is_reused,
    freed_large_hole_is_reused,
    a_published_block_says_its_length,
    a_thread_keeps_no_more_than_its_budget,
    a_thread_that_only_releases_gives_back_in_batches,
    trim_gives_back_what_the_thread_keeps,
    releasing_one_of_two_clones_keeps_the_block,
    an_exiting_thread_gives_back_what_it_keeps,
    reference_count_lifecycle,
    resize_keeps_content_in_place_or_moving,
    resize_of_a_shared_block_is_an_error,
    resize_by_steps_rarely_moves_and_publishes_its_length,
    zero_length_rule,
    out_of_space_leaves_the_heap_unchanged,
    parked_blocks_make_way_when_the_store_is_full,
    zeroed_memory_is_zero_even_when_reused,
    handles_validate,
    statistics_stay_consistent,
);
