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
