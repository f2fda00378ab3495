//! Memory given back: an in-process heap returns what a program frees to the system (large
//! blocks at once, slabs and smaller runs after a short delay, everything on `trim`), and
//! reuses it afterwards. One test in its own binary, so that no other test's allocations move
//! the resident size it reads.

use std::alloc::{GlobalAlloc, Layout};

use mmheap::{DefaultManager, MemoryManager};

/// This process's resident bytes (`/proc/self/statm`).
fn resident() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
}

#[test]
fn freed_memory_goes_back_to_the_system() {
    const MIB: u64 = 1 << 20;
    let m = DefaultManager::new().unwrap();
    let big = Layout::from_size_align(2 << 20, 16).unwrap();
    let small = Layout::from_size_align(100, 8).unwrap();
    for round in 0..3 {
        let start = resident();
        // SAFETY: non-zero sizes; every block is written within its size and freed once below.
        let bigs: Vec<*mut u8> = (0..40).map(|_| unsafe { m.alloc(big) }).collect();
        // SAFETY: as above.
        let smalls: Vec<*mut u8> = (0..400_000).map(|_| unsafe { m.alloc(small) }).collect();
        for &p in bigs.iter().chain(&smalls) {
            assert!(!p.is_null());
        }
        // SAFETY: as above.
        bigs.iter().for_each(|&p| unsafe { p.write_bytes(1, big.size()) });
        // SAFETY: as above.
        smalls.iter().for_each(|&p| unsafe { p.write_bytes(2, small.size()) });
        let full = resident();
        assert!(full > start + 100 * MIB, "round {round}: {start} -> {full}");
        // SAFETY: each freed once, with its layout.
        bigs.iter().for_each(|&p| unsafe { m.dealloc(p, big) });
        let after_bigs = resident();
        assert!(
            after_bigs + 70 * MIB < full,
            "round {round}: large blocks are given back at once: {full} -> {after_bigs}"
        );
        // SAFETY: as above.
        smalls.iter().for_each(|&p| unsafe { m.dealloc(p, small) });
        m.trim().unwrap();
        let trimmed = resident();
        assert!(trimmed < start + 8 * MIB, "round {round}: {start} -> {full} -> {trimmed} after trim");
        drop((bigs, smalls));
    }
    assert!(m.check().unwrap().is_sound());
    assert_eq!(m.stats().unwrap().live_blocks, 0);
}
