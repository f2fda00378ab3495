//! The global heap's small raw blocks (slabs, `src/engine/slab/`) under cross-thread frees, with
//! threads coming and going: in a binary of its own, since it reads the global heap's
//! statistics, which other tests' allocations would move.

use mmheap::{DefaultManager, MemoryManager};

#[global_allocator]
static GLOBAL: DefaultManager = DefaultManager::GLOBAL;

/// The tests here run one at a time: one reads statistics the others would move.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Small raw blocks are blocks of slabs owned by the thread that allocated them; blocks freed
/// by other threads go back to their owner without the lock. Producers allocate blocks of
/// every slab class and of core sizes, consumers check and free them, threads come and go
/// (their slabs pass to the threads after them), and every byte arrives as written.
#[test]
fn blocks_freed_by_other_threads_come_back_intact() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    use std::sync::mpsc;
    let before = DefaultManager::global().stats().unwrap();
    for generation in 0..4u64 {
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(256);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let producers: Vec<_> = (0..3u64)
            .map(|t| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ (generation << 8 | t);
                    for i in 0..6_000u64 {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        let len = match i % 16 {
                            0 => 8193 + (seed % 60_000) as usize,
                            _ => 1 + (seed % 8192) as usize,
                        };
                        tx.send(vec![(seed % 251) as u8; len]).unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let rx = rx.clone();
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while let Ok(v) = { rx.lock().unwrap().recv() } {
                        assert!(v.iter().all(|&b| b == v[0]), "a block changed in flight");
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        producers.into_iter().for_each(|p| p.join().unwrap());
        let got: u64 = consumers.into_iter().map(|c| c.join().unwrap()).sum();
        assert_eq!(got, 18_000);
    }
    let heap = DefaultManager::global();
    assert!(heap.check().unwrap().is_sound());
    // Every thread that allocated has exited, and its slabs were tidied then: what the
    // producers allocated is free again.
    let after = heap.stats().unwrap();
    assert!(after.live_blocks < before.live_blocks + 1_000, "{before:?} -> {after:?}");
}

/// A thousand threads alive at once: most have no thread cache (a heap makes 64) and allocate
/// through the shared one, or the heap's lock when that is busy; each frees some blocks itself
/// and hands the rest to the main thread. Nothing is lost or torn, and the heap stays sound.
#[test]
fn a_thousand_threads_at_once() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const THREADS: usize = 1000;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let barrier = barrier.clone();
            std::thread::Builder::new()
                .stack_size(64 << 10)
                .spawn(move || {
                    barrier.wait();
                    let mut mine: Vec<Box<[u8]>> = (0..60)
                        .map(|i| vec![(t + i) as u8; 1 + (t * 31 + i * 7) % 3000].into_boxed_slice())
                        .collect();
                    mine.retain(|b| b.len() % 2 == 0);
                    mine
                })
                .unwrap()
        })
        .collect();
    let mut kept = 0;
    for (t, h) in threads.into_iter().enumerate() {
        for b in h.join().unwrap() {
            assert!(b.iter().all(|&x| x == b[0]), "thread {t}'s block changed");
            kept += 1;
        }
    }
    assert!(kept > THREADS * 20);
    assert!(DefaultManager::global().check().unwrap().is_sound());
}
