//! `DefaultManager` as this test binary's `#[global_allocator]`: every allocation of the test
//! harness, the standard library and mmheap itself goes through the process-wide heap, and the
//! whole conformance suite runs on top of it. Also `allocator_api2::Allocator`.

use mmheap::{DefaultManager, MemoryManager};

#[global_allocator]
static GLOBAL: DefaultManager = DefaultManager::GLOBAL;

#[path = "conformance.rs"]
mod conformance;

#[test]
fn ordinary_allocations_come_from_the_global_heap() {
    let heap = DefaultManager::global();
    let before = heap.stats().unwrap().live_blocks;
    let boxes: Vec<Box<[u8; 100]>> = (0..1000u32).map(|i| Box::new([i as u8; 100])).collect();
    assert!(heap.stats().unwrap().live_blocks >= before + 1000);
    assert!(boxes.iter().enumerate().all(|(i, b)| b[99] == i as u8));
    let mut grown = vec![1u64; 10];
    grown.resize(100_000, 2); // realloc: in place or moved
    assert_eq!(grown.iter().sum::<u64>(), 10 + 2 * 99_990);
    drop(boxes);
    assert!(heap.stats().unwrap().live_blocks < before + 1000);
    assert!(heap.check().unwrap().is_sound(), "check allocates under the heap's lock: served by System");
    let page_aligned = std::alloc::Layout::from_size_align(100, 8192).unwrap();
    // SAFETY: non-zero size; freed below with the same layout.
    let p = unsafe { std::alloc::alloc(page_aligned) };
    assert!(!p.is_null() && p as usize % 8192 == 0, "alignments past a page go to the system allocator");
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(p, page_aligned) };
}

/// `realloc` of the process-wide heap's small blocks (a `String` growing, shrinking, moving
/// between slabs of other sizes) keeps their content, whichever way it goes.
#[test]
fn small_blocks_of_the_global_heap_reallocate_keeping_their_content() {
    use std::alloc::{alloc, dealloc, realloc, Layout};
    let mut sizes =
        [1usize, 7, 16, 17, 24, 40, 64, 65, 100, 128, 200, 500, 1000, 1500, 3000, 100, 8, 1].iter().cycle();
    for round in 0..200u32 {
        let mut layout = Layout::from_size_align(*sizes.next().unwrap(), 8).unwrap();
        // SAFETY: non-zero size; reallocated and released below with the current layout.
        let mut p = unsafe { alloc(layout) };
        assert!(!p.is_null());
        // SAFETY: `p` has `layout.size()` bytes nobody else uses.
        unsafe { p.write_bytes(round as u8, layout.size()) };
        for _ in 0..6 {
            let new_size = *sizes.next().unwrap();
            // SAFETY: `p` is live with `layout`; the new size is non-zero.
            let q = unsafe { realloc(p, layout, new_size) };
            assert!(!q.is_null() && q as usize % 8 == 0);
            let keep = layout.size().min(new_size);
            // SAFETY: `q` has `new_size` bytes, the first `keep` kept from `p`.
            let bytes = unsafe { std::slice::from_raw_parts_mut(q, new_size) };
            assert!(bytes[..keep].iter().all(|&b| b == round as u8), "content kept by realloc");
            bytes.fill(round as u8);
            (p, layout) = (q, Layout::from_size_align(new_size, 8).unwrap());
        }
        // SAFETY: live with `layout`, released once.
        unsafe { dealloc(p, layout) };
    }
    assert!(DefaultManager::global().check().unwrap().is_sound());
}

/// A raw block that `realloc` moves stays a block with a header (small `MemoryBlock`s are slots
/// of spans, which `dealloc` could not find from a pointer alone).
#[test]
fn small_reallocations_that_move_stay_raw_blocks() {
    let heap = DefaultManager::global();
    let mut kept = Vec::new();
    for i in 0..200u8 {
        let mut v: Vec<u8> = Vec::with_capacity(16);
        let neighbour = vec![i; 16]; // likely right after `v`: `v` cannot grow in place
        v.extend_from_slice(&[i; 16]);
        v.reserve_exact(40); // 16 -> 56 bytes: moved
        v.extend_from_slice(&[i; 40]);
        assert!(v.iter().all(|&b| b == i));
        kept.push((v, neighbour));
    }
    drop(kept);
    assert!(heap.check().unwrap().is_sound());
}

#[test]
fn allocator_api2_collections_use_a_manager() {
    let m = DefaultManager::new().unwrap();
    {
        let mut v = allocator_api2::vec::Vec::new_in(&m);
        v.extend(0..10_000u32);
        assert_eq!(v.iter().map(|x| u64::from(*x)).sum::<u64>(), 49_995_000);
        assert_eq!(m.stats().unwrap().live_blocks, 1);
        let empty: allocator_api2::vec::Vec<u8, _> = allocator_api2::vec::Vec::with_capacity_in(0, &m);
        assert_eq!(empty.capacity(), 0);
    }
    assert_eq!(m.stats().unwrap().live_blocks, 0);
    assert!(m.check().unwrap().is_sound());
}

/// Raw blocks (`GlobalAlloc` on a private manager): allocated, grown and shrunk in place or
/// moved, released in random order, mixed with `MemoryBlock`s that reuse what they release.
/// A raw block's reference word stays parked (count 0) while it is in use: contents survive
/// every `realloc` (which checks no count for raw blocks), the heap checks sound throughout,
/// and the statistics are exact whichever way a block went.
#[test]
fn raw_blocks_reallocate_and_release_in_any_order() {
    use std::alloc::{GlobalAlloc, Layout};
    let m = DefaultManager::new().unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
    for round in 0..4_000u32 {
        let tag = round as u8;
        match next(4) {
            0 | 1 => {
                let layout = Layout::from_size_align(1 + next(700) as usize, 1 << next(6)).unwrap();
                // SAFETY: non-zero size; released below with the same layout.
                let p = unsafe { m.alloc(layout) };
                assert!(!p.is_null() && p as usize % layout.align() == 0);
                // SAFETY: `p` has `layout.size()` bytes that nobody else uses.
                unsafe { p.write_bytes(tag, layout.size()) };
                live.push((p, layout, tag));
            }
            2 if !live.is_empty() => {
                let i = next(live.len() as u64) as usize;
                let (p, layout, tag) = live[i];
                let new_size = 1 + next(900) as usize;
                // SAFETY: `p` is live with `layout`; the new size is non-zero.
                let q = unsafe { m.realloc(p, layout, new_size) };
                assert!(!q.is_null());
                let keep = layout.size().min(new_size);
                // SAFETY: `q` has `new_size` bytes, the first `keep` kept from `p`.
                let bytes = unsafe { std::slice::from_raw_parts_mut(q, new_size) };
                assert!(bytes[..keep].iter().all(|&b| b == tag), "content kept by realloc");
                bytes.fill(tag);
                live[i] = (q, Layout::from_size_align(new_size, layout.align()).unwrap(), tag);
            }
            _ if !live.is_empty() => {
                let (p, layout, tag) = live.swap_remove(next(live.len() as u64) as usize);
                // SAFETY: `p` is live with `layout`.
                assert!(unsafe { std::slice::from_raw_parts(p, layout.size()) }.iter().all(|&b| b == tag));
                // SAFETY: as above; released once.
                unsafe { m.dealloc(p, layout) };
            }
            _ => {}
        }
        if round % 7 == 0 {
            // A `MemoryBlock` takes what raw releases parked, and parks it again when dropped.
            let mut b = m.allocate(1 + next(600) as usize).unwrap();
            b.as_mut_slice().unwrap().fill(tag);
            assert_eq!(b.ref_count(), 1);
        }
        if round % 1000 == 0 {
            assert!(m.check().unwrap().is_sound(), "round {round}");
        }
    }
    assert_eq!(m.stats().unwrap().live_blocks, live.len() as u64);
    for (p, layout, _) in live.drain(..) {
        // SAFETY: live with `layout`, released once.
        unsafe { m.dealloc(p, layout) };
    }
    let parked = m.stats().unwrap();
    assert_eq!((parked.used_bytes, parked.live_blocks), (0, 0), "parked blocks are no user's");
    m.trim().unwrap();
    let trimmed = m.stats().unwrap();
    assert_eq!((trimmed.used_bytes, trimmed.live_blocks), (0, 0));
    assert!(m.check().unwrap().is_sound());
}

/// The fast paths (`slab/fast.rs`) know a thread's slabs only while it holds its cache. A
/// thread's last allocations and releases, made by destructors that run after it gave its cache
/// back (a `pthread_key_create` destructor runs after every Rust thread-local's), go the general
/// way, while new threads claim the caches exited ones left and use their slabs. Blocks keep
/// their bytes throughout.
#[test]
fn threads_allocate_after_giving_their_cache_back_while_others_take_it() {
    /// What each thread hands its key's destructor: blocks it allocated.
    type Late = Vec<Vec<u64>>;
    extern "C" fn late(p: *mut libc::c_void) {
        // SAFETY: the value set below: a `Box<Late>` turned into a raw pointer, once.
        let kept = unsafe { Box::from_raw(p.cast::<Late>()) };
        for (i, v) in kept.iter().enumerate() {
            assert!(v.iter().all(|&x| x == i as u64), "a block changed under its owner");
        }
        for round in 0..20u64 {
            let again: Vec<Box<[u64; 4]>> = (0..500u64).map(|i| Box::new([i + round; 4])).collect();
            assert!(again.iter().enumerate().all(|(i, b)| b.iter().all(|&x| x == i as u64 + round)));
        }
    }
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is writable; `late` is a valid destructor for the values set below.
    assert_eq!(unsafe { libc::pthread_key_create(&mut key, Some(late)) }, 0);
    for _ in 0..8 {
        let handed: Vec<Vec<Vec<u64>>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..6u64)
                .map(|t| {
                    s.spawn(move || {
                        let kept: Late = (0..300).map(|i| vec![i as u64; 1 + (i % 9) as usize]).collect();
                        // SAFETY: a live key; the value is a leaked box its destructor takes.
                        unsafe { libc::pthread_setspecific(key, Box::into_raw(Box::new(kept)).cast()) };
                        (0..200).map(|i| vec![t * 1000 + i; 3]).collect()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        for (t, vs) in handed.iter().enumerate() {
            assert!(vs.iter().enumerate().all(|(i, v)| v.iter().all(|&x| x == t as u64 * 1000 + i as u64)));
        }
    }
    assert!(DefaultManager::global().check().unwrap().is_sound());
}
