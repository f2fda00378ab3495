//! A block's reference word (`engine/heap/refs.rs`, `block.rs`): two threads ending the
//! lending of one lent block at once (`MemoryBlock::clone`'s `end_lending`), and a handle
//! resolved while the block's last owner reference goes. The heap is a real one over a model
//! store, with its thread caches (their thread-locals are per model thread: `sync::thread_local`).

use std::sync::Arc;

use loom::thread;

use super::Memory;
use crate::block::MemoryBlock;
use crate::engine::core::header::rc;
use crate::engine::core::region::Region;
use crate::engine::heap::family::HeapRef;
use crate::engine::heap::{format_region, Backing, Heap};
use crate::error::{Error, Result};

/// Room for the blocks, a cache's counter table and the refills of its stacks.
pub(super) const LEN: u64 = crate::format::MIN_STORE_SIZE + (64 << 10);
/// A block's length: above the slots' sizes, so that its reference word is in its header.
pub(super) const SIZE: usize = 100;
/// The model process's tag.
pub(super) const TAG: u32 = 2;

/// A model heap's backing: one process, nobody dies, the store does not grow. `store` makes it
/// a store's, whose process has registry slot `TAG - 1` (as channels need); else it is an
/// in-process heap's.
pub(super) struct Model {
    pub(super) store: bool,
}

impl Backing for Model {
    fn grow(&self, _region: &Region, new_cap: u64) -> Result<()> {
        Err(Error::corrupt("a model store does not grow", new_cap))
    }
    fn refresh(&self, _region: &Region, _cap: u64) -> Result<()> {
        Ok(())
    }
    fn owner_dead(&self, _tag: u32) -> bool {
        false
    }
    fn shared(&self) -> bool {
        self.store
    }
    fn attached(&self, _region: &Region) -> u64 {
        1
    }
    fn slot(&self) -> Option<u32> {
        self.store.then_some(TAG - 1)
    }
}

/// A registered heap (a user of it, as a manager is) over `mem`, formatted.
pub(super) fn heap(mem: &Memory) -> HeapRef {
    heap_over(mem, Box::new(Model { store: false }))
}

/// A registered heap over `mem`, formatted, with `backing`.
pub(super) fn heap_over(mem: &Memory, backing: Box<dyn Backing>) -> HeapRef {
    // SAFETY: every model drops its heap before the memory.
    let region = unsafe { mem.map() };
    format_region(&region, LEN, LEN, 0).unwrap();
    let heap = Heap::new(region, backing, TAG, crate::engine::kinds::recover_locked).unwrap();
    HeapRef::new(heap).unwrap()
}

/// A block lent from the calling thread's cache: allocated, parked by its drop, lent again.
/// Its reference word reads parked (the header counts nothing).
pub(super) fn lent(heap: &HeapRef) -> MemoryBlock {
    drop(MemoryBlock::allocate(heap, SIZE, 16).unwrap());
    let a = MemoryBlock::allocate(heap, SIZE, 16).unwrap();
    assert_eq!(heap.rc(a.header_offset()), rc::parked(u64::from(TAG)), "not lent");
    a
}

/// After every reference is gone: the block at `off` is parked in the calling thread's
/// cache exactly once (lent again by the next allocation, and not by the one after) and the
/// heap counts no live block.
pub(super) fn parked_once(heap: &HeapRef, off: u64) {
    assert_eq!(heap.rc(off), rc::parked(u64::from(TAG)), "the block is not parked");
    let again = MemoryBlock::allocate(heap, SIZE, 16).unwrap();
    assert_eq!(again.header_offset(), off, "the block was not parked in this thread's cache");
    let next = MemoryBlock::allocate(heap, SIZE, 16).unwrap();
    assert_ne!(next.header_offset(), off, "the block was parked twice");
    drop((again, next));
    sound(heap, 0);
}

/// The heap's check finds no problem, and `live` blocks in use.
pub(super) fn sound(heap: &HeapRef, live: u64) {
    let report = heap.check().unwrap();
    assert!(report.is_sound(), "{:?}", report.problems);
    assert_eq!(report.used_blocks, live, "blocks in use");
}

/// Two threads clone one lent block at once and drop their clones, while the original lives:
/// each clone ends the lending (`end_lending`: counts, then clears the size with a
/// compare-and-swap; the loser takes back what it added for the original). After its clone is
/// gone, a thread finds the original still counted in the header (never freed or parked while
/// held); at the end the header counts the original alone, and its drop parks the block
/// exactly once.
#[test]
fn lent_clones_race() {
    super::explore("lent_clones_race", || {
        let mem = Memory::new(LEN);
        let heap = heap(&mem);
        let a = Arc::new(lent(&heap));
        let off = a.header_offset();
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let a = a.clone();
                thread::spawn(move || {
                    drop(MemoryBlock::clone(&a));
                    let w = a.heap().rc(off);
                    assert!(rc::owner_refs(w) >= 1, "the original is not counted: {w:#x}");
                    super::exit_thread();
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let a = Arc::into_inner(a).expect("the threads' clones of the Arc are gone");
        assert_eq!(heap.rc(off), rc::fresh(u64::from(TAG)), "the header counts other than the original");
        assert_eq!(a.ref_count(), 1);
        drop(a);
        parked_once(&heap, off);
        drop(heap);
    });
}

/// A thread resolves the handle of a block while the main thread drops the block's last owner
/// reference. Either the resolve wins (an other hold: the release leaves the block to it, and
/// its release frees the block) or it finds the block parked (count 0: stale). Never both the
/// release and the hold free it, nor is it parked while the hold lives.
#[test]
fn resolve_races_last_release() {
    super::explore("resolve_races_last_release", || {
        let mem = Memory::new(LEN);
        let heap = heap(&mem);
        let a = lent(&heap);
        let off = a.header_offset();
        let h = a.handle();
        let resolver = {
            let heap = heap.clone();
            thread::spawn(move || {
                let resolved = match heap.resolve(h) {
                    Ok(got) => {
                        let w = heap.rc(off);
                        assert!(
                            rc::other(w) >= 1 && rc::published(w),
                            "a hold the header does not count: {w:#x}"
                        );
                        heap.release_hold(got.offset, got.hold_index).unwrap();
                        true
                    }
                    Err(Error::StaleHandle { .. }) => false,
                    Err(e) => panic!("resolve: {e}"),
                };
                drop(heap);
                super::exit_thread();
                resolved
            })
        };
        drop(a);
        let resolved = resolver.join().unwrap();
        let w = heap.rc(off);
        if w == rc::parked(u64::from(TAG)) {
            // The release was the last (the hold, if any, was given back before it): parked in
            // this thread's cache. (Parking while the hold lived would have failed the hold's
            // release: the parking store clears the word.)
            parked_once(&heap, off);
        } else {
            // The hold's release was the last: it freed the block.
            assert!(resolved, "the block left unparked with no hold: {w:#x}");
            assert!(heap.core().tag(off).is_ok_and(|t| t.is_free()), "the hold's release did not free it");
            sound(&heap, 0);
        }
        drop(heap);
    });
}
