//! Many threads of one process allocating, resizing, sharing and freeing in one heap at once,
//! for both managers; blocks cross threads by clone and by handle.

use std::sync::mpsc;
use std::thread;

use mmheap::{BlockHandle, DefaultManager, MappedManager, MemoryBlock, MemoryManager, Options};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn fill(b: &mut MemoryBlock, stamp: u8) {
    b.as_mut_slice().expect("fresh block is writable").fill(stamp);
}

fn intact(b: &MemoryBlock) -> bool {
    let first = b.as_slice().first().copied();
    b.as_slice().iter().all(|x| Some(*x) == first)
}

/// Four threads churn; each also sends some blocks (as clones) and handles to the next thread,
/// which checks and drops them.
fn churn_and_pass<M: MemoryManager + Clone + Send + 'static>(m: M) {
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..4).map(|_| mpsc::channel::<(MemoryBlock, BlockHandle)>()).unzip();
    let mut receivers: Vec<Option<_>> = receivers.into_iter().map(Some).collect();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let m = m.clone();
            let to_next = senders[(t + 1) % 4].clone();
            let from_prev = receivers[t].take().expect("one receiver per thread");
            thread::spawn(move || {
                let mut rng = SmallRng::seed_from_u64(t as u64);
                let mut live: Vec<MemoryBlock> = Vec::new();
                for i in 0..20_000u32 {
                    match rng.gen_range(0..10) {
                        0..=4 => {
                            let mut b = m.allocate(rng.gen_range(0..2000)).unwrap();
                            fill(&mut b, (i % 251) as u8);
                            live.push(b);
                        }
                        5..=6 if !live.is_empty() => {
                            let b = live.swap_remove(rng.gen_range(0..live.len()));
                            assert!(intact(&b));
                        }
                        // Published blocks stay read-only, so a grown tail could not be stamped.
                        7 if !live.is_empty() && !live[live.len() - 1].is_published() => {
                            let k = live.len() - 1;
                            let stamp = live[k].as_slice().first().copied().unwrap_or(1);
                            if m.resize(&mut live[k], rng.gen_range(0..3000)).is_ok() {
                                if let Ok(s) = live[k].as_mut_slice() {
                                    s.fill(stamp);
                                }
                            }
                        }
                        8 if !live.is_empty() => {
                            let b = &live[rng.gen_range(0..live.len())];
                            let _ = to_next.send((b.clone(), b.handle()));
                        }
                        _ => {}
                    }
                    while let Ok((b, h)) = from_prev.try_recv() {
                        assert!(intact(&b));
                        let again = m.block_from_handle(h).unwrap();
                        assert_eq!(again.as_slice(), b.as_slice());
                    }
                }
                drop(to_next);
                live.iter().for_each(|b| assert!(intact(b)));
                from_prev
            })
        })
        .collect();
    drop(senders);
    let leftovers: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    drop(leftovers); // blocks still in flight are dropped here
    assert_eq!(m.stats().unwrap().live_blocks, 0, "every block freed once");
}

#[test]
fn default_manager_threads() {
    let m = DefaultManager::new().unwrap();
    churn_and_pass(m.clone());
    assert!(m.check().unwrap().is_sound());
}

#[test]
fn mapped_manager_threads() {
    let m = MappedManager::temporary(&Options::new().max_size(1 << 30)).unwrap();
    churn_and_pass(m.clone());
    assert!(m.check().unwrap().is_sound());
}

/// Small blocks a thread releases are kept in its cache; when the thread exits, they count as
/// free and the next thread that allocates takes the cache over and reuses them.
fn exited_thread_cache_is_reused<M: MemoryManager + Clone + Send + 'static>(m: M) {
    let before = m.stats().unwrap();
    let worker = m.clone();
    let freed: std::collections::HashSet<u64> = thread::spawn(move || {
        let blocks: Vec<MemoryBlock> = (0..1000).map(|_| worker.allocate(100).unwrap()).collect();
        blocks.iter().map(|b| b.offset().get()).collect()
    })
    .join()
    .unwrap();
    let after = m.stats().unwrap();
    assert_eq!((after.live_blocks, after.used_bytes), (before.live_blocks, before.used_bytes));
    let next = m.clone();
    let reused = thread::spawn(move || next.allocate(100).unwrap().offset().get()).join().unwrap();
    assert!(freed.contains(&reused), "the exited thread's parked blocks are reused");
}

#[test]
fn default_manager_exited_thread_cache() {
    let m = DefaultManager::new().unwrap();
    exited_thread_cache_is_reused(m.clone());
    assert!(m.check().unwrap().is_sound());
}

#[test]
fn mapped_manager_exited_thread_cache() {
    let m = MappedManager::temporary(&Options::new()).unwrap();
    exited_thread_cache_is_reused(m.clone());
    assert!(m.check().unwrap().is_sound());
}

/// Runs `f` on every block in two threads at once, the two meeting before each block, and
/// returns what each thread got. They meet by spinning on a counter, not at a `Barrier`: a
/// thread woken from a barrier starts microseconds after the other, far more than the races
/// these tests look for last. Even so the thread that arrives last leaves first (the other
/// sees its arrival a cache-line transfer later), so each then waits a little, the two
/// waits varying independently from block to block, for every lag between them to occur.
/// One race runs at a time: on two cores, two pairs of spinning threads would mostly take
/// turns on them instead of running at once.
fn in_two_threads_at_once<T: Send>(
    blocks: &[MemoryBlock],
    f: impl Fn(&MemoryBlock) -> T + Sync,
) -> (Vec<T>, Vec<T>) {
    static ONE_RACE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_RACE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let arrived = std::sync::atomic::AtomicUsize::new(0);
    let meet = |i: usize| {
        arrived.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut spins = 0u32;
        while arrived.load(std::sync::atomic::Ordering::SeqCst) < 2 * (i + 1) {
            spins += 1;
            match spins < 1000 {
                true => std::hint::spin_loop(),
                false => thread::yield_now(), // the other thread is not running
            }
        }
    };
    let run = |me: usize| -> Vec<T> {
        blocks
            .iter()
            .enumerate()
            .map(|(i, b)| {
                meet(i);
                for _ in 0..(i >> (4 * me)) % 16 {
                    std::hint::spin_loop();
                }
                f(b)
            })
            .collect()
    };
    thread::scope(|s| {
        let other = s.spawn(|| run(1));
        (run(0), other.join().unwrap())
    })
}

/// Two threads taking the first handle of the same block at once (a `MemoryBlock` is `Sync`)
/// get the same handle, and it resolves: the publication's new generation replaces the old one
/// only once. Blocks lent from the cache and fresh ones alike.
fn racing_first_handles_agree<M: MemoryManager + Sync>(m: &M) {
    const ROUNDS: usize = 3000;
    for round in 0..12 {
        let blocks: Vec<MemoryBlock> = (0..ROUNDS).map(|i| m.allocate(100 + i % 300).unwrap()).collect();
        let (mine, theirs): (Vec<BlockHandle>, _) = in_two_threads_at_once(&blocks, MemoryBlock::handle);
        for (i, b) in blocks.iter().enumerate() {
            assert_eq!(mine[i], theirs[i], "round {round}, block {i}");
            let again = m.block_from_handle(mine[i]).unwrap();
            assert_eq!(again.offset(), b.offset());
        }
        drop(blocks); // parked, to be lent again (with their old generations) next round
    }
}

#[test]
fn default_manager_racing_first_handles() {
    let m = DefaultManager::new().unwrap();
    racing_first_handles_agree(&m);
    assert!(m.check().unwrap().is_sound());
}

#[test]
fn mapped_manager_racing_first_handles() {
    let m = MappedManager::temporary(&Options::new().max_size(1 << 30)).unwrap();
    racing_first_handles_agree(&m);
    assert!(m.check().unwrap().is_sound());
}

/// Two threads cloning the same block at once (a `MemoryBlock` is `Sync`) while it is still lent
/// from the thread cache, its header counting nothing yet: each ends the lending, and the one
/// that loses the race takes back the reference it counted for the original, so every clone
/// counts once. When the clones are gone the original is the block's only reference again
/// (writable), and the block stayed out of the cache meanwhile.
fn racing_clones_count_once<M: MemoryManager + Sync>(m: &M) {
    const BLOCKS: usize = 3000;
    for round in 0..12 {
        let mut blocks: Vec<MemoryBlock> = (0..BLOCKS).map(|i| m.allocate(100 + i % 300).unwrap()).collect();
        let (mine, theirs) = in_two_threads_at_once(&blocks, MemoryBlock::clone);
        for (i, b) in blocks.iter().enumerate() {
            assert_eq!(b.ref_count(), 3, "round {round}, block {i}");
        }
        drop(theirs);
        let fresh: Vec<MemoryBlock> = (0..BLOCKS).map(|i| m.allocate(100 + i % 300).unwrap()).collect();
        let handed_out: std::collections::HashSet<_> = fresh.iter().map(MemoryBlock::offset).collect();
        for (i, (b, c)) in blocks.iter().zip(&mine).enumerate() {
            assert_eq!(b.ref_count(), 2, "round {round}, block {i}");
            assert!(!handed_out.contains(&b.offset()), "round {round}, block {i} handed out while held");
            assert_eq!(c.offset(), b.offset());
        }
        drop((mine, fresh));
        for (i, b) in blocks.iter_mut().enumerate() {
            assert_eq!(b.ref_count(), 1, "round {round}, block {i}");
            b.as_mut_slice().unwrap().fill(round as u8);
        }
        drop(blocks); // parked, to be lent again next round
    }
}

#[test]
fn default_manager_racing_clones() {
    let m = DefaultManager::new().unwrap();
    racing_clones_count_once(&m);
    assert!(m.check().unwrap().is_sound());
    assert_eq!(m.stats().unwrap().live_blocks, 0);
}

#[test]
fn mapped_manager_racing_clones() {
    let m = MappedManager::temporary(&Options::new().max_size(1 << 30)).unwrap();
    racing_clones_count_once(&m);
    assert!(m.check().unwrap().is_sound());
    assert_eq!(m.stats().unwrap().live_blocks, 0);
}

/// Threads of one process share a store channel: four senders and two receivers at once, so
/// that the ring's locks are contended between threads of the process that holds them (a
/// waiter must never take a lock its own process holds for a leftover of damage). Every
/// message arrives once and intact, and nothing is left.
#[test]
fn threads_of_one_process_share_a_channel() {
    let m = MappedManager::temporary(&Options::new().max_size(1 << 30)).unwrap();
    let before = m.stats().unwrap().live_blocks;
    let ch = m.channel("shared", 16).unwrap();
    const PER: u32 = 20_000;
    let senders: Vec<_> = (0..4u32)
        .map(|t| {
            let (m, tx) = (m.clone(), ch.sender().unwrap());
            thread::spawn(move || {
                for i in 0..PER {
                    let mut b = m.allocate(16 + (i % 200) as usize).unwrap();
                    b.as_mut_slice().unwrap()[..4].copy_from_slice(&(t * PER + i).to_le_bytes());
                    if i % 5 == 0 {
                        let _ = b.handle(); // published: the locked way
                    }
                    tx.send(b).unwrap();
                }
            })
        })
        .collect();
    let receivers: Vec<_> = (0..2)
        .map(|_| {
            let rx = ch.receiver().unwrap();
            thread::spawn(move || {
                let mut got = Vec::new();
                while let Ok(b) = rx.recv_timeout(std::time::Duration::from_secs(5)) {
                    got.push(u32::from_le_bytes(b.as_slice()[..4].try_into().unwrap()));
                }
                got
            })
        })
        .collect();
    senders.into_iter().for_each(|s| s.join().unwrap());
    let mut all: Vec<u32> = receivers.into_iter().flat_map(|r| r.join().unwrap()).collect();
    all.sort_unstable();
    assert_eq!(all, (0..4 * PER).collect::<Vec<_>>(), "every message once");
    drop(ch);
    assert!(m.check().unwrap().is_sound());
    assert_eq!(m.stats().unwrap().live_blocks, before);
}
