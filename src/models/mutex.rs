//! The robust lock of a guarded area (`engine/heap/shared.rs`, under `MemoryBlock::lock`):
//! two processes' heaps over one store, one of which dies holding the lock.

use std::sync::Arc;

use loom::sync::atomic::AtomicBool;
use loom::thread;

use super::{die_after, explore, Memory};
use crate::engine::core::region::Region;
use crate::engine::heap::{format_region, Backing, Heap};
use crate::error::{Error, Result};
use crate::sync::Ordering;

const LEN: u64 = crate::format::MIN_STORE_SIZE + 4096;

/// A process's view of who is alive: the process tagged `mortal` is dead once `dead` is set.
struct Liveness {
    mortal: u32,
    dead: Arc<AtomicBool>,
}

impl Backing for Liveness {
    fn grow(&self, _region: &Region, new_cap: u64) -> Result<()> {
        Err(Error::corrupt("a model store does not grow", new_cap))
    }
    fn refresh(&self, _region: &Region, _cap: u64) -> Result<()> {
        Ok(())
    }
    fn owner_dead(&self, tag: u32) -> bool {
        tag == self.mortal && self.dead.load(Ordering::SeqCst)
    }
    fn shared(&self) -> bool {
        true
    }
    fn attached(&self, _region: &Region) -> u64 {
        2
    }
}

/// A heap of the process tagged `tag` over `mem`.
fn heap(mem: &Memory, tag: u32, dead: &Arc<AtomicBool>) -> Heap {
    // SAFETY: every model drops its heaps before the memory.
    let region = unsafe { mem.map() };
    let liveness = Liveness { mortal: 2, dead: dead.clone() };
    Heap::new(region, Box::new(liveness), tag, crate::engine::kinds::recover_locked).unwrap()
}

/// Process 2 takes the area's lock, writes two words of the area and lets go, but dies right
/// after its k-th atomic operation on store words, for every k; process 3 takes the lock
/// meanwhile. Process 3 is told a holder died exactly when process 2 died holding it (or its
/// area was left marked inconsistent), and when it is not told, it finds both words written or
/// neither. After it marks the area consistent and lets go, the next lock is consistent.
#[test]
fn robust_mutex_holder_dies() {
    for k in 1..=7 {
        explore(&format!("robust_mutex_holder_dies k={k}"), move || {
            let mem = Memory::new(LEN);
            let dead = Arc::new(AtomicBool::new(false));
            let first = heap(&mem, 2, &dead);
            format_region(&first.region, LEN, LEN, 0).unwrap();
            let block = first.allocate_shared(8, 16, false).unwrap();
            let area = first.area_of(block.offset).unwrap().unwrap();
            // The model words the threads share, made before they start (`region_model.rs`).
            first.region.u32_at(area.lock).unwrap();
            first.region.u32_at(area.state()).unwrap();
            first.region.u64_at(area.start).unwrap();
            first.region.u64_at(area.start + 8).unwrap();
            let second = Arc::new(heap(&mem, 3, &dead));
            let first = Arc::new(first);
            let dies = {
                let (first, dead) = (first.clone(), dead.clone());
                thread::spawn(move || {
                    let died = die_after(k, || {
                        first.lock_area(&area).unwrap();
                        first.region.store(area.start, 1).unwrap();
                        first.region.store(area.start + 8, 1).unwrap();
                        first.unlock_area(&area);
                    });
                    dead.store(died, Ordering::SeqCst);
                })
            };
            let takes = {
                let (second, dead) = (second.clone(), dead.clone());
                thread::spawn(move || {
                    let told = second.lock_area(&area).unwrap();
                    let (x, y) = (
                        second.region.load(area.start).unwrap(),
                        second.region.load(area.start + 8).unwrap(),
                    );
                    if told {
                        assert!(dead.load(Ordering::SeqCst), "told of a death that did not happen");
                    } else {
                        assert_eq!(x, y, "a consistent area half written");
                    }
                    second.mark_consistent(&area).unwrap();
                    second.unlock_area(&area);
                    told
                })
            };
            dies.join().unwrap();
            let told = takes.join().unwrap();
            let died = dead.load(Ordering::SeqCst);
            if !died {
                assert!(!told, "told of a death with no death");
            }
            // Unless the holder died holding it after the taker let go, the lock is free and consistent.
            let word = second.region.load32(area.lock).unwrap();
            if word == 0 {
                assert!(!second.lock_area(&area).unwrap(), "inconsistent after mark_consistent");
                second.unlock_area(&area);
            } else {
                assert!(died && word & 0xff == 2, "lock left held by {word:#x}");
            }
            drop((first, second));
        });
    }
}
