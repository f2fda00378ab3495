//! Tests of the core against a shadow model of the heap. They run under Miri
//! (`cargo +nightly miri test --lib core::`), so they use a `Vec`-backed region and modest sizes.

use std::collections::BTreeMap;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::header::{check_word, rc, Tag};
use super::region::TestRegion;
use super::tlsf::{Carved, Core};
use crate::format::*;

const KEY: u64 = 0x5eed;

struct Harness {
    mem: TestRegion,
    /// offset -> (block size, payload length, stamp byte)
    live: BTreeMap<u64, (u64, u64, u8)>,
}

impl Harness {
    fn new(capacity: u64, reserved: u64) -> Self {
        let mem = TestRegion::new(reserved, capacity);
        mem.region.store(SB_NEXT_GEN, 1).unwrap();
        Core::new(&mem.region).init(capacity).unwrap();
        Harness { mem, live: BTreeMap::new() }
    }

    fn core(&self) -> Core<'_> {
        Core::new(&self.mem.region)
    }

    /// Allocates, stamps the header as the heap engine would, and fills the payload.
    fn alloc(&mut self, len: u64, align_log2: u32, stamp: u8) -> Option<Carved> {
        let c = self.core().alloc(len, align_log2).unwrap()?;
        let r = &self.mem.region;
        let gen = r.load(SB_NEXT_GEN).unwrap();
        r.store(SB_NEXT_GEN, gen + 1).unwrap();
        r.store(c.offset + HDR_GEN, gen).unwrap();
        r.store(c.offset + HDR_RC, rc::fresh(1)).unwrap();
        r.store(c.offset + HDR_CHECK, check_word(KEY, c.offset, gen)).unwrap();
        assert_eq!((c.offset + HEADER_SIZE) % (1 << align_log2), 0, "alignment");
        assert_eq!(self.core().tag(c.offset).unwrap().len(), len);
        self.fill(c.offset, len, stamp);
        self.assert_disjoint(c.offset, c.size);
        self.live.insert(c.offset, (c.size, len, stamp));
        Some(c)
    }

    fn fill(&self, off: u64, len: u64, stamp: u8) {
        let p = self.mem.region.ptr(off + HEADER_SIZE, len).unwrap();
        // SAFETY: the payload belongs to a block this test allocated and nobody else touches.
        unsafe { p.as_ptr().write_bytes(stamp, len as usize) };
    }

    fn verify(&self, off: u64) {
        let (_, len, stamp) = self.live[&off];
        let mut buf = vec![0u8; len as usize];
        self.mem.region.read_bytes(off + HEADER_SIZE, &mut buf).unwrap();
        assert!(buf.iter().all(|b| *b == stamp), "payload of {off:#x} was overwritten");
    }

    fn assert_disjoint(&self, off: u64, size: u64) {
        if let Some((&o, &(s, _, _))) = self.live.range(..off).next_back() {
            assert!(o + s <= off, "block {off:#x} overlaps {o:#x}");
        }
        if let Some((&o, _)) = self.live.range(off + 1..).next() {
            assert!(off + size <= o, "block {off:#x} overlaps {o:#x}");
        }
    }

    fn free(&mut self, off: u64) {
        self.verify(off);
        self.live.remove(&off);
        self.core().free(off).unwrap();
    }

    fn check(&self) {
        let rep = self.core().check(KEY).unwrap();
        assert!(rep.is_sound(), "{:?}", rep.problems);
        assert_eq!(rep.used_blocks, self.live.len() as u64);
        let used: u64 = self.live.values().map(|v| v.0).sum();
        assert_eq!(rep.used_bytes, used);
    }
}

#[test]
fn fresh_heap_is_one_free_block() {
    let h = Harness::new(MIN_STORE_SIZE, MIN_STORE_SIZE);
    let rep = h.core().check(KEY).unwrap();
    assert!(rep.is_sound());
    assert_eq!((rep.blocks, rep.free_blocks), (1, 1));
    assert_eq!(rep.free_bytes, MIN_STORE_SIZE - HEAP_START - SENTINEL_SIZE);
    assert_eq!(h.core().largest_free().unwrap(), rep.free_bytes);
}

#[test]
fn freed_hole_is_reused_by_a_smaller_block() {
    let mut h = Harness::new(64 * 1024, 64 * 1024);
    let a = h.alloc(1000, 4, 1).unwrap();
    let b = h.alloc(1000, 4, 2).unwrap();
    let c = h.alloc(1000, 4, 3).unwrap();
    h.free(b.offset);
    let d = h.alloc(500, 4, 4).unwrap();
    assert_eq!(d.offset, b.offset);
    h.check();
    h.free(a.offset);
    h.free(c.offset);
    h.free(d.offset);
    h.check();
    assert_eq!(h.core().check(KEY).unwrap().blocks, 1, "everything coalesced back");
}

#[test]
fn grows_in_place_into_a_free_neighbour_and_shrinks_back() {
    let mut h = Harness::new(64 * 1024, 64 * 1024);
    let a = h.alloc(100, 4, 1).unwrap();
    let b = h.alloc(3000, 4, 2).unwrap();
    let _c = h.alloc(100, 4, 3).unwrap();
    h.free(b.offset);
    assert!(h.core().resize_in_place(a.offset, 2000).unwrap());
    h.live.get_mut(&a.offset).unwrap().0 = h.core().tag(a.offset).unwrap().size();
    h.live.get_mut(&a.offset).unwrap().1 = 100; // only the first 100 bytes are stamped
    h.verify(a.offset);
    h.check();
    assert!(!h.core().resize_in_place(a.offset, 10_000).unwrap(), "no room: unchanged");
    h.check();
    assert!(h.core().resize_in_place(a.offset, 40).unwrap());
    h.live.get_mut(&a.offset).unwrap().0 = h.core().tag(a.offset).unwrap().size();
    h.live.get_mut(&a.offset).unwrap().1 = 40;
    h.check();
}

#[test]
fn out_of_space_leaves_the_heap_unchanged_and_extend_adds_room() {
    let mut h = Harness::new(64 * 1024, 256 * 1024);
    let before = h.core().check(KEY).unwrap();
    assert!(h.alloc(100 * 1024, 4, 1).is_none());
    assert_eq!(h.core().check(KEY).unwrap(), before);
    h.mem.grow(256 * 1024);
    h.core().extend(256 * 1024).unwrap();
    h.check();
    let c = h.alloc(100 * 1024, 4, 1).unwrap();
    h.free(c.offset);
    h.check();
    assert_eq!(h.core().check(KEY).unwrap().blocks, 1);
}

#[test]
fn rebuild_restores_a_scrambled_index() {
    let mut h = Harness::new(128 * 1024, 128 * 1024);
    let offs: Vec<u64> = (0..40).map(|i| h.alloc(64 + i * 37, 4, i as u8).unwrap().offset).collect();
    for o in offs.iter().step_by(3) {
        h.free(*o);
    }
    let r = &h.mem.region;
    r.zero(TLSF_OFFSET, TLSF_END - TLSF_OFFSET).unwrap();
    r.store(SB_USED_BYTES, 12345).unwrap();
    assert!(!h.core().check(KEY).unwrap().is_sound());
    h.core().rebuild().unwrap();
    h.check();
}

/// Two free blocks of 1088 bytes, on the list an allocation of 1000 bytes searches:
/// `(first on the list, second)`.
fn two_free_on_one_list(h: &mut Harness) -> (u64, u64) {
    let a = h.alloc(1056, 4, 1).unwrap();
    let _fence1 = h.alloc(100, 4, 2).unwrap();
    let b = h.alloc(1056, 4, 3).unwrap();
    let _fence2 = h.alloc(100, 4, 4).unwrap();
    h.free(a.offset);
    h.free(b.offset); // pushed last: the head
    (b.offset, a.offset)
}

fn is_corrupt<T: std::fmt::Debug>(r: crate::error::Result<T>) -> bool {
    matches!(r, Err(crate::error::Error::Corrupt { .. }))
}

#[test]
fn free_list_links_out_of_the_heap_are_corruption_not_accesses() {
    for bad in [1 << 40, u64::MAX - 7, 9, MIN_STORE_SIZE + 64 * 1024] {
        let mut h = Harness::new(64 * 1024, 64 * 1024);
        let (head, _) = two_free_on_one_list(&mut h);
        h.mem.region.store(head + FREE_NEXT, bad).unwrap();
        // Taking the head off its list rewrites its successor's link: refused.
        assert!(is_corrupt(h.core().alloc(1000, 4)), "next link {bad:#x}");
        assert!(!h.core().check(KEY).unwrap().is_sound());
    }
}

#[test]
fn a_link_to_a_used_block_is_corruption() {
    let mut h = Harness::new(64 * 1024, 64 * 1024);
    let (head, second) = two_free_on_one_list(&mut h);
    let used = *h.live.keys().next().unwrap();
    h.mem.region.store(head + FREE_NEXT, used).unwrap();
    assert!(is_corrupt(h.core().alloc(1000, 4)));
    // The used block's header is as it was.
    assert!(!h.core().tag(used).unwrap().is_free());
    assert_ne!(used, second);
}

#[test]
fn a_footer_out_of_the_heap_is_corruption() {
    let mut h = Harness::new(64 * 1024, 64 * 1024);
    let a = h.alloc(1000, 4, 1).unwrap();
    let b = h.alloc(1000, 4, 2).unwrap();
    let _fence = h.alloc(100, 4, 3).unwrap();
    h.free(a.offset);
    // `b` finds the free block before it through that block's footer.
    h.mem.region.store(b.offset - 8, b.offset + 4096).unwrap();
    assert!(is_corrupt(h.core().free(b.offset)));
}

#[test]
fn an_access_past_the_limit_is_reported_once_and_touches_nothing() {
    let h = Harness::new(64 * 1024, 128 * 1024);
    let limit = h.mem.region.limit();
    // Past the limit lies reserved memory the region may not touch yet.
    assert!(matches!(
        h.core().read(limit),
        Err(crate::error::Error::Corrupt { offset, .. }) if offset == limit
    ));
    assert!(is_corrupt(h.core().read(3)), "misaligned");
    // The fault was reported; the next operation starts clean.
    assert_eq!(h.core().read(SB_CAPACITY).unwrap(), 64 * 1024);
    // A fault belongs to the operation it happened in: not to a later core on the thread...
    let c = h.core();
    let _ = c.load_for_test(limit + 8);
    assert_eq!(h.core().read(SB_CAPACITY).unwrap(), 64 * 1024);
    // ...and a core made (and done) inside an operation does not hide the operation's.
    assert!(matches!(
        c.read(SB_CAPACITY),
        Err(crate::error::Error::Corrupt { offset, .. }) if offset == limit + 8
    ));
    h.mem.grow(128 * 1024);
    let mut buf = [0u8; 8];
    h.mem.region.read_bytes(limit, &mut buf).unwrap();
    assert_eq!(buf, [0; 8], "nothing was written past the old limit");
}

#[test]
fn random_operations_match_the_model() {
    let ops = if cfg!(miri) { 400 } else { 30_000 };
    for seed in 0..if cfg!(miri) { 2 } else { 8 } {
        random_run(seed, ops);
    }
}

fn random_run(seed: u64, ops: usize) {
    let reserved = 4 << 20;
    let mut h = Harness::new(64 * 1024, reserved);
    let mut rng = SmallRng::seed_from_u64(seed);
    for i in 0..ops {
        let roll = rng.gen_range(0..100);
        if roll < 50 || h.live.is_empty() {
            let len = if rng.gen_bool(0.9) { rng.gen_range(0..600) } else { rng.gen_range(0..20_000) };
            let align = if rng.gen_bool(0.1) { rng.gen_range(5..=12) } else { 4 };
            if h.alloc(len, align, (i % 251) as u8).is_none() {
                let cap = h.core().capacity().unwrap();
                if cap * 2 <= reserved {
                    h.mem.grow(cap * 2);
                    h.core().extend(cap * 2).unwrap();
                }
            }
        } else if roll < 85 {
            let k = rng.gen_range(0..h.live.len());
            let off = *h.live.keys().nth(k).unwrap();
            h.free(off);
        } else {
            let k = rng.gen_range(0..h.live.len());
            let off = *h.live.keys().nth(k).unwrap();
            let (_, len, stamp) = h.live[&off];
            let new_len = rng.gen_range(0..3000);
            if h.core().resize_in_place(off, new_len).unwrap() {
                let size = h.core().tag(off).unwrap().size();
                h.live.insert(off, (size, len.min(new_len), stamp));
                h.verify(off);
                h.fill(off, new_len, stamp);
                h.live.insert(off, (size, new_len, stamp));
                h.assert_disjoint(off, size);
            }
        }
        if i % 500 == 0 {
            h.check();
        }
    }
    h.check();
    for off in h.live.keys().copied().collect::<Vec<_>>() {
        h.free(off);
    }
    h.check();
    assert_eq!(h.core().check(KEY).unwrap().blocks, 1);
}

/// A freed block of exactly the size asked for sits on the request's own list, which the good
/// fit skips (it rounds up to the next list); the exact search finds it.
#[test]
fn exact_fit_finds_what_the_good_fit_skips() {
    let mut h = Harness::new(64 * 1024, 64 * 1024);
    // 1,104 bytes of block: inside the list [1088, 1152), not at its start.
    let a = h.alloc(1072, 4, 1).unwrap();
    let _fence = h.alloc(100, 4, 2).unwrap();
    while h.alloc(2000, 4, 3).is_some() {}
    while h.alloc(100, 4, 4).is_some() {}
    h.free(a.offset);
    assert!(h.core().alloc(1072, 4).unwrap().is_none(), "the good fit rounds up past it");
    assert!(h.core().alloc_fit(1088, 4).unwrap().is_none(), "nothing larger is there");
    let c = h.core().alloc_fit(1072, 4).unwrap().expect("the exact search finds it");
    assert_eq!(c.offset, a.offset);
}

/// Growth interrupted between publishing the capacity and writing the new free block leaves
/// the old sentinel (a zero tag) in the heap: the scan reads it as free space only where
/// `SB_GROW_FROM` says growth left it.
#[test]
fn scan_reads_a_zero_tag_as_free_only_where_growth_left_it() {
    let mut h = Harness::new(64 * 1024, 128 * 1024);
    let a = h.alloc(20_000, 4, 1).unwrap();
    let old_cap = 64 * 1024;
    h.mem.grow(128 * 1024);
    let r = &h.mem.region;
    // What `Core::extend` has done when it is interrupted: the journal, the new sentinel,
    // the capacity; not yet the free block over the old sentinel.
    r.store(SB_GROW_FROM, old_cap).unwrap();
    r.store(128 * 1024 - SENTINEL_SIZE, 2).unwrap();
    r.store(SB_CAPACITY, 128 * 1024).unwrap();
    let blocks = h.core().scan().unwrap();
    let last = blocks.last().unwrap();
    assert!(last.tag.is_free() && last.offset + last.tag.size() == 128 * 1024 - SENTINEL_SIZE);
    // Without the journal, or elsewhere, a zero tag is damage.
    r.store(SB_GROW_FROM, 0).unwrap();
    assert!(is_corrupt(h.core().scan()));
    r.store(SB_GROW_FROM, old_cap + 4096).unwrap();
    assert!(is_corrupt(h.core().scan()));
    r.store(SB_GROW_FROM, old_cap).unwrap();
    h.core().rebuild().unwrap();
    assert_eq!(h.core().read(SB_GROW_FROM).unwrap(), 0, "the rebuild ends the journal");
    h.check();
    h.verify(a.offset);
}

/// Salvage's scan keeps anchors where they are and fences off what does not parse, up to
/// where parsing resumes; nothing is written.
#[test]
fn salvage_scan_quarantines_around_anchors() {
    let mut h = Harness::new(64 * 1024, 64 * 1024);
    let offs: Vec<u64> = (0..8).map(|i| h.alloc(200 + i * 50, 4, i as u8).unwrap().offset).collect();
    let r = &h.mem.region;
    let tag = r.load(offs[2]).unwrap();
    r.store(offs[2], tag | 1 << 63).unwrap(); // a reserved bit: does not parse
    assert!(is_corrupt(h.core().scan()), "recovery refuses it");
    let before: Vec<u8> = {
        let mut b = vec![0u8; 64 * 1024];
        r.read_bytes(0, &mut b).unwrap();
        b
    };
    let anchors = [offs[1], offs[5]];
    let blocks = h.core().scan_salvage(&anchors).unwrap();
    let at = |o: u64| blocks.iter().find(|b| b.offset == o).map(|b| b.tag);
    assert!(at(offs[1]).is_some_and(|t| !t.is_quarantine()) && at(offs[5]).is_some());
    let q = at(offs[2]).expect("the damaged block starts a quarantine");
    assert!(q.is_quarantine());
    assert_eq!(offs[2] + q.size(), offs[3], "parsing resumes at the next good header");
    let tiled: u64 = blocks.iter().map(|b| b.tag.size()).sum();
    assert_eq!(HEAP_START + tiled, 64 * 1024 - SENTINEL_SIZE, "the tiling covers the heap");
    let mut after = vec![0u8; 64 * 1024];
    r.read_bytes(0, &mut after).unwrap();
    assert!(before == after, "the scan wrote nothing");
    // A block that would swallow an anchor is not believed.
    r.store(offs[2], tag).unwrap();
    let big = Tag::used(offs[4] + 64 - offs[3], 0, 4);
    r.store(offs[3], big.0).unwrap();
    let blocks = h.core().scan_salvage(&[offs[4]]).unwrap();
    let t = blocks.iter().find(|b| b.offset == offs[3]).unwrap().tag;
    assert!(t.is_quarantine() && offs[3] + t.size() == offs[4], "fenced off up to the anchor");
}
