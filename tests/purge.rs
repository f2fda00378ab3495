//! Memory given back: an in-process heap returns what a program frees to the system (large
//! blocks at once, slabs and smaller runs after a short delay, everything on `trim`), and
//! reuses it afterwards. In a binary of its own, so that no other test's allocations move the
//! resident size it reads.

use std::alloc::{GlobalAlloc, Layout};

use mmheap::{DefaultManager, MemoryManager};

/// The tests here run one at a time: one reads the resident size the other would move.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// This process's resident bytes (`/proc/self/statm`).
fn resident() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
}

#[test]
fn freed_memory_goes_back_to_the_system() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
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

/// A block grown in place over its free neighbour keeps its bytes when the neighbour's place
/// had been noted for purging: the purge must see that the neighbour is no longer a free block
/// (its header, left in the grown payload, once read as one, and the pages of the live block
/// were given back: zeros where the program had written).
#[test]
fn a_block_grown_over_a_noted_neighbour_keeps_its_bytes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let m = DefaultManager::new().unwrap();
    let l = |n: usize| Layout::from_size_align(n, 16).unwrap();
    for round in 0..20 {
        // SAFETY: non-zero sizes; each block is written within its size and freed once.
        unsafe {
            let a = m.alloc(l(200 << 10));
            let b = m.alloc(l(600 << 10));
            let fence = m.alloc(l(300 << 10)); // keeps `b` from merging with the free tail
            assert!(!a.is_null() && !b.is_null() && !fence.is_null());
            m.dealloc(b, l(600 << 10)); // a free block of 600 KiB: noted for a later purge
            let grown = m.realloc(a, l(200 << 10), 700 << 10);
            assert_eq!(grown, a, "grown in place over `b`");
            // The program writes its block but for the 32 bytes where `b`'s header was (a
            // program writes what it needs, when it needs it).
            let hole = b as usize - 32 - a as usize;
            let bytes = std::slice::from_raw_parts_mut(a, 700 << 10);
            bytes[..hole].fill(0xa5);
            bytes[hole + 32..].fill(0xa5);
            std::thread::sleep(std::time::Duration::from_millis(15));
            // Another free under the lock purges what is due.
            let other = m.alloc(l(300 << 10));
            m.dealloc(other, l(300 << 10));
            let kept = bytes[..hole].iter().chain(&bytes[hole + 32..]).all(|&x| x == 0xa5);
            assert!(kept, "round {round}: a live block was purged");
            m.dealloc(a, l(700 << 10));
            m.dealloc(fence, l(300 << 10));
        }
    }
    assert!(m.check().unwrap().is_sound());
}

/// When a program's worker threads are done and only one thread is left using the heap, what
/// waits to be given back (empty slabs kept for reuse, noted free runs) goes back at the last
/// worker's exit: the one thread left may make no call that would look at it.
#[test]
fn the_last_worker_leaving_gives_the_waiting_memory_back() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const MIB: u64 = 1 << 20;
    let m = std::sync::Arc::new(DefaultManager::new().unwrap());
    let mine = Layout::from_size_align(64, 8).unwrap();
    // SAFETY: a non-zero size; freed once below.
    let kept = unsafe { m.alloc(mine) }; // this thread uses the heap too
    let start = resident();
    let workers: Vec<_> = (0..3)
        .map(|w| {
            let m = m.clone();
            std::thread::spawn(move || {
                let sizes = [48, 200, 1000, 3000];
                let l = Layout::from_size_align(sizes[w % 4], 8).unwrap();
                // SAFETY: non-zero sizes; every block is written within its size and freed once.
                let blocks: Vec<*mut u8> = (0..20_000).map(|_| unsafe { m.alloc(l) }).collect();
                // SAFETY: as above.
                blocks.iter().for_each(|&p| unsafe { p.write_bytes(3, l.size()) });
                // SAFETY: as above.
                blocks.iter().for_each(|&p| unsafe { m.dealloc(p, l) });
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let after = resident();
    assert!(after < start + 2 * MIB, "resident {start} -> {after} once the workers left");
    // SAFETY: allocated above with this layout.
    unsafe { m.dealloc(kept, mine) };
    assert!(m.check().unwrap().is_sound());
}
