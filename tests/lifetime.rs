//! What keeps a store attached in this process: its managers, channels and blocks. The last of
//! them to go detaches it (releases its registry slot and mapping), on whichever thread it goes,
//! and not before: blocks stay readable after every manager is gone. A second manager on the
//! same file watches the slot count.

use std::sync::{mpsc, Arc, Barrier};
use std::thread;

use mmheap::{MappedManager, MemoryBlock, MemoryManager, Options};

/// A fresh store file and a second manager on it that watches how many are attached.
fn store() -> (tempfile::TempDir, MappedManager, MappedManager) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let m = MappedManager::create(&path, &Options::new()).unwrap();
    let watcher = MappedManager::open(&path).unwrap();
    (dir, m, watcher)
}

fn attached(watcher: &MappedManager) -> u64 {
    watcher.stats().unwrap().attached_processes
}

fn filled(m: &MappedManager, len: usize, stamp: u8) -> MemoryBlock {
    let mut b = m.allocate(len).unwrap();
    b.as_mut_slice().unwrap().fill(stamp);
    b
}

#[test]
fn blocks_keep_the_store_attached_after_the_manager_is_gone() {
    let (_dir, m, watcher) = store();
    let small = filled(&m, 100, 7);
    let large = filled(&m, 5000, 9);
    let clone = small.clone();
    drop(m);
    assert_eq!(attached(&watcher), 2, "blocks keep their store attached");
    assert!(small.as_slice().iter().all(|&x| x == 7) && large.as_slice().iter().all(|&x| x == 9));
    drop(small);
    drop(large);
    assert_eq!(attached(&watcher), 2, "a clone is still alive");
    assert!(clone.as_slice().iter().all(|&x| x == 7));
    drop(clone);
    assert_eq!(attached(&watcher), 1, "the last block detached the store");
    assert!(watcher.check().unwrap().is_sound());
    assert_eq!(watcher.stats().unwrap().live_blocks, 0, "nothing leaked");
}

#[test]
fn the_last_block_detaches_the_store_from_another_thread() {
    let (_dir, m, watcher) = store();
    let blocks: Vec<MemoryBlock> = (0..50).map(|i| filled(&m, 16 + 40 * i, i as u8)).collect();
    let (tx, rx) = mpsc::channel::<()>();
    let worker = thread::spawn(move || {
        rx.recv().unwrap();
        for (i, b) in blocks.into_iter().enumerate() {
            assert!(b.as_slice().iter().all(|&x| x == i as u8));
        }
    });
    drop(m);
    assert_eq!(attached(&watcher), 2);
    tx.send(()).unwrap();
    worker.join().unwrap();
    assert_eq!(attached(&watcher), 1, "detached by the thread that dropped the last block");
    assert_eq!(watcher.stats().unwrap().live_blocks, 0);
}

#[test]
fn a_channel_keeps_the_store_attached() {
    let (_dir, m, watcher) = store();
    let ch = m.channel("jobs", 4).unwrap();
    let (tx, rx) = (ch.sender().unwrap(), ch.receiver().unwrap());
    drop(ch);
    tx.send(filled(&m, 64, 3)).unwrap();
    drop(m);
    drop(tx);
    assert_eq!(attached(&watcher), 2, "the receiving end holds it");
    let got = rx.recv().unwrap();
    drop(rx);
    assert_eq!(attached(&watcher), 2, "the received block still holds it");
    assert!(got.as_slice().iter().all(|&x| x == 3));
    drop(got);
    assert_eq!(attached(&watcher), 1);
}

/// Threads drop their blocks while the manager goes on another thread, over and over: every
/// round ends with the store detached exactly once (the watcher sees one process) and intact.
#[test]
fn racing_the_last_manager_against_the_last_blocks() {
    let (_dir, first, watcher) = store();
    drop(first);
    let path = watcher.path().to_owned();
    for round in 0..100u32 {
        let m = MappedManager::open(&path).unwrap();
        let start = Arc::new(Barrier::new(4));
        let workers: Vec<_> = (0..3u32)
            .map(|t| {
                let blocks: Vec<MemoryBlock> =
                    (0..40).map(|i| filled(&m, 16 + (i * 97 + t as usize * 31) % 3000, t as u8)).collect();
                let start = start.clone();
                thread::spawn(move || {
                    start.wait();
                    for b in blocks {
                        assert!(b.as_slice().iter().all(|&x| x == t as u8));
                    }
                })
            })
            .collect();
        start.wait();
        drop(m);
        workers.into_iter().for_each(|w| w.join().unwrap());
        assert_eq!(attached(&watcher), 1, "round {round}: the store stayed attached");
    }
    assert_eq!(watcher.stats().unwrap().live_blocks, 0);
    assert!(watcher.check().unwrap().is_sound());
}

/// More threads than a heap has caches (64), all alive at once: the later ones count their
/// blocks without one. Blocks made on all of them are dropped on the main thread after the
/// manager, and the store detaches with the last.
#[test]
fn threads_beyond_the_caches_count_their_blocks_too() {
    let (_dir, m, watcher) = store();
    let threads = 80;
    let all_made = Arc::new(Barrier::new(threads + 1));
    let (tx, rx) = mpsc::channel::<(usize, MemoryBlock)>();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (m, tx, all_made) = (m.clone(), tx.clone(), all_made.clone());
            thread::spawn(move || {
                let blocks = [filled(&m, 32 + t, t as u8), filled(&m, 1000 + t, t as u8)];
                drop(m);
                all_made.wait(); // every thread holds its cache (if it got one) until all made theirs
                blocks.into_iter().for_each(|b| tx.send((t, b)).unwrap());
            })
        })
        .collect();
    drop(tx);
    all_made.wait();
    workers.into_iter().for_each(|w| w.join().unwrap());
    drop(m);
    let blocks: Vec<(usize, MemoryBlock)> = rx.iter().collect();
    assert_eq!(blocks.len(), 2 * threads);
    assert_eq!(attached(&watcher), 2);
    for (t, b) in blocks {
        assert!(b.as_slice().iter().all(|&x| x == t as u8));
    }
    assert_eq!(attached(&watcher), 1);
    assert_eq!(watcher.stats().unwrap().live_blocks, 0);
}

#[test]
fn a_resolved_hold_keeps_the_store_attached_and_moves_into_an_owner_reference() {
    let (_dir, m, watcher) = store();
    let a = filled(&m, 100, 5);
    let fence = filled(&m, 100, 6); // so that growing `a` must move it
    m.set_root("r", &a).unwrap();
    drop(a); // only the root holds it now: resolving it gives this process an other hold
    let mut held = m.root("r").unwrap().unwrap();
    let clone = held.clone();
    assert_eq!((held.len(), held.ref_count(), clone.ref_count()), (100, 3, 3));
    assert!(m.remove_root("r").unwrap());
    assert!(matches!(held.resize(50_000), Err(mmheap::Error::Shared { count: 2 })));
    drop(clone);
    drop(m);
    drop(fence);
    assert_eq!(attached(&watcher), 2, "the hold keeps the store attached");
    let before = held.offset();
    held.resize(50_000).unwrap();
    assert_ne!(held.offset(), before, "the block moved");
    assert_eq!((held.len(), held.ref_count()), (50_000, 1));
    assert!(held.as_slice()[..100].iter().all(|&x| x == 5));
    let again = held.clone();
    assert_eq!((again.len(), held.ref_count()), (50_000, 2));
    drop(again);
    assert_eq!(attached(&watcher), 2, "the moved block, an owner reference now, keeps it attached");
    drop(held);
    assert_eq!(attached(&watcher), 1);
    assert!(watcher.check().unwrap().is_sound());
    assert_eq!(watcher.stats().unwrap().live_blocks, 0, "nothing leaked");
}
