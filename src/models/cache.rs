//! A thread cache (`engine/heap/cache/`) parking and lending blocks on its thread while another
//! thread releases a reference to one of them: the release may be the block's last (then the
//! releasing thread parks it in its own cache) or not (then the cache's thread parks it when
//! its own reference goes).

use loom::thread;

use super::refs::{heap, lent, sound, SIZE, TAG};
use super::{exit_thread, explore, Memory};
use crate::block::MemoryBlock;
use crate::engine::core::header::rc;

/// The main thread lends a block from its cache, clones it and hands the clone to another
/// thread, which drops it while the main thread drops its own reference and then takes blocks
/// from its cache and parks them again, twice. Every block the cache lends reads parked (no
/// other reference counted: a block is never handed out while another holds it), and at the
/// end the heap counts no block in use (none lost: each is parked in a cache, or freed by the
/// other thread's exit, which gives its cache back).
#[test]
fn cache_park_take_vs_release() {
    explore("cache_park_take_vs_release", || {
        let mem = Memory::new(super::refs::LEN);
        let heap = heap(&mem);
        let x = lent(&heap);
        let other = x.clone();
        let releaser = thread::spawn(move || {
            drop(other);
            exit_thread();
        });
        drop(x);
        for _ in 0..2 {
            let y = MemoryBlock::allocate(&heap, SIZE, 16).unwrap();
            let w = heap.rc(y.header_offset());
            assert_eq!(w, rc::parked(u64::from(TAG)), "lent while another reference is counted: {w:#x}");
            drop(y);
        }
        releaser.join().unwrap();
        sound(&heap, 0);
        drop(heap);
    });
}
