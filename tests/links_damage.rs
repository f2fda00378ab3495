//! Damaged links, as an outside review found them mishandled (each failed before its fix):
//! salvage after damage in and around linked blocks leaves a sound store every link of which
//! reads (a table read from the tiling salvage settled on, not another; a repair that cannot
//! fail part-way), the check sees a count lower than a block's references of all kinds
//! together, and the hold limit is a typed error, not corruption.

use std::path::Path;

use mmheap::{Error, MappedManager, MemoryBlock, MemoryManager, Options};

fn word(b: &[u8], at: u64) -> u64 {
    u64::from_le_bytes(b[at as usize..at as usize + 8].try_into().unwrap())
}
fn put(b: &mut [u8], at: u64, v: u64) {
    b[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
}
fn valued(m: &MappedManager, links: usize, len: usize, v: u8) -> MemoryBlock {
    let mut b = if links == 0 { m.allocate(len).unwrap() } else { m.allocate_linked(links, len).unwrap() };
    b.as_mut_slice().unwrap().fill(v);
    b
}

/// A block named by a root AND by a link whose count is one too low: the check called the store
/// sound (it compared a block's holds with the links naming it, and separately with the roots,
/// never with their sum), and removing the root then freed a block a link still named. Now every
/// kind's references are summed (`Kind::named`).
#[test]
fn a_count_below_a_root_and_a_link_together_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("u.mmheap");
    let x_off;
    {
        let m = MappedManager::create(&path, &Options::default()).unwrap();
        let p = valued(&m, 1, 8, 1);
        let x = valued(&m, 0, 200, 2);
        p.set_link(0, Some(&x)).unwrap();
        m.set_root("p", &p).unwrap();
        m.set_root("x", &x).unwrap();
        assert_eq!(x.ref_count(), 3); // ours + link + root
        x_off = x.handle().offset;
        drop((p, x));
        m.flush().unwrap();
    }
    // damage: X's other holds 2 -> 1
    let mut bytes = std::fs::read(&path).unwrap();
    let rc = word(&bytes, x_off + 16);
    assert_eq!((rc >> 32) & 0xfffff, 2);
    put(&mut bytes, x_off + 16, rc - (1 << 32));
    std::fs::write(&path, &bytes).unwrap();

    let m = MappedManager::open(&path).unwrap();
    let report = m.check().unwrap();
    eprintln!("check after the damage: sound={} {:?}", report.is_sound(), report.problems);
    let undetected = report.is_sound();
    // ordinary use: drop the root x
    m.remove_root("x").unwrap();
    let report = m.check().unwrap();
    eprintln!("after remove_root(x): sound={} {:?}", report.is_sound(), report.problems);
    // the space is reused: a new block of the same size, rooted
    let mut y = m.allocate(200).unwrap();
    y.as_mut_slice().unwrap().fill(0x77);
    m.set_root("y", &y).unwrap();
    eprintln!("y at {:#x}, x was at {:#x}", y.handle().offset, x_off);
    drop(y);
    let p = m.root("p").unwrap().unwrap();
    let got = p.link(0);
    eprintln!(
        "p.link(0) = {:?}",
        got.as_ref().map(|b| b.as_ref().map(|b| (b.handle().offset, b.as_slice()[0])))
    );
    let report = m.check().unwrap();
    eprintln!("check now: sound={} {:?}", report.is_sound(), report.problems);
    assert!(!undetected, "the check called a count lower than its references sound");
}

/// Builds: root "list" -> A(2 links) -> B(1 link); A's link 1 -> C (a large block).
fn small_store(path: &Path) -> (u64, u64, u64) {
    let m = MappedManager::create(path, &Options::default()).unwrap();
    let a = valued(&m, 2, 8, 1);
    let b = valued(&m, 1, 8, 2);
    let c = valued(&m, 0, 3000, 3);
    a.set_link(0, Some(&b)).unwrap();
    a.set_link(1, Some(&c)).unwrap();
    m.set_root("list", &a).unwrap();
    let offs = (a.handle().offset, b.handle().offset, c.handle().offset);
    drop((a, b, c));
    m.flush().unwrap();
    offs
}

/// A damaged header of a linked target (its size): salvage says the store is sound after it,
/// but the link to the lost block is kept: the check finds "link names no held block" and
/// `link()` fails with Corrupt. The doc says salvage drops references to what was lost.
#[test]
fn salvage_drops_links_to_what_it_lost() {
    for (what, bit) in [("size bit 5", 5u32), ("size bit 8", 8), ("QUARANTINE bit 60", 60)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.mmheap");
        let (_a, b, _c) = small_store(&path);
        let mut bytes = std::fs::read(&path).unwrap();
        let t = word(&bytes, b);
        put(&mut bytes, b, t ^ (1 << bit));
        std::fs::write(&path, &bytes).unwrap();
        let rep = MappedManager::salvage(&path);
        eprintln!("{what}: salvage = {:?}", rep.as_ref().map(|r| (&r.quarantined, &r.dropped)));
        let m = MappedManager::open(&path).unwrap();
        let report = m.check().unwrap();
        let a = m.root("list").unwrap().unwrap();
        let l0 = a.link(0).map(|b| b.map(|b| b.len()));
        eprintln!(
            "{what}: after salvage: sound={} {:?}; a.link(0) = {l0:?}",
            report.is_sound(),
            report.problems
        );
        assert!(report.is_sound() && l0.is_ok(), "{what}: salvage left a link to a lost block");
    }
}

/// Salvage fails (Corrupt "link table does not fit its block") when a cell names an offset
/// inside a linked block's own payload; the file must be as it was.
#[test]
fn salvage_of_a_cell_naming_inside_a_block_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.mmheap");
    let m = MappedManager::create(&path, &Options::default()).unwrap();
    let leaf = valued(&m, 2, 10, 1);
    let node = valued(&m, 2, 10, 2);
    node.set_link(0, Some(&leaf)).unwrap();
    m.set_root("t", &node).unwrap();
    let node_off = node.handle().offset;
    drop((leaf, node));
    m.flush().unwrap();
    drop(m);
    let mut bytes = std::fs::read(&path).unwrap();
    // node: payload node_off+32, 10 user bytes + 6 pad, then cell 0
    let cell = node_off + 32 + 16;
    let inside = node_off + 48; // a 16-aligned offset inside the node's own payload
    eprintln!("cell 0 was {:#x}, now {inside:#x}", word(&bytes, cell));
    put(&mut bytes, cell, inside);
    std::fs::write(&path, &bytes).unwrap();
    let r = MappedManager::recover_file(&path);
    eprintln!("recover_file: {r:?}");
    let r = MappedManager::salvage(&path);
    eprintln!("salvage: {:?}", r.as_ref().map(|r| (&r.quarantined, &r.dropped)));
    let same = std::fs::read(&path).unwrap() == bytes;
    eprintln!("file unchanged after the failed salvage: {same}");
    assert!(r.is_ok(), "salvage failed: {r:?}");
}

/// 2^20 - 1 links to one block are allowed; the next one is refused with `TooManyHolds` (it was
/// `Corrupt`, which says the store is damaged, though it is only a limit).
#[test]
fn the_hold_limit_is_a_typed_error() {
    let m = mmheap::DefaultManager::new().unwrap();
    let p = m.allocate_linked(1 << 20, 0).unwrap();
    let c = m.allocate(8).unwrap();
    for i in 0..(1 << 20) - 1 {
        p.set_link(i, Some(&c)).unwrap();
    }
    let r = p.set_link((1 << 20) - 1, Some(&c));
    eprintln!("link number 2^20: {r:?}");
    assert!(matches!(r, Err(Error::TooManyHolds { .. })), "the limit: {r:?}");
    assert!(p.link((1 << 20) - 1).unwrap().is_none(), "the refused link stays empty");
}

// The store of tests/review_links_damage.rs: root "list" (6 linked nodes, a slot and a large
// block linked from nodes 1 and 3), root "tree" (7 linked nodes).
/// Builds the store; returns the header offsets of its linked blocks and of a few targets.
fn build(path: &Path) -> (Vec<u64>, Vec<u64>) {
    let m = MappedManager::create(path, &Options::default()).unwrap();
    let mut linked = Vec::new();
    let mut targets = Vec::new();
    // list of 6, lens 0..6 (paddings), last links a slot and a large block
    let mut head: Option<MemoryBlock> = None;
    for i in 0..6 {
        let n = valued(&m, 1 + (i % 2), i * 3, i as u8 + 1);
        n.set_link(0, head.as_ref()).unwrap();
        if i == 1 {
            let s = valued(&m, 0, 20, 0x33);
            n.set_link(1, Some(&s)).unwrap();
            targets.push(s.handle().offset);
        }
        if i == 3 {
            let big = valued(&m, 0, 3000, 0x44);
            n.set_link(1, Some(&big)).unwrap();
            targets.push(big.handle().offset);
        }
        linked.push(n.handle().offset);
        head = Some(n);
    }
    m.set_root("list", &head.unwrap()).unwrap();
    // a tree of 7
    fn tree(m: &MappedManager, d: u32, linked: &mut Vec<u64>) -> MemoryBlock {
        let n = valued(m, 2, 10, d as u8);
        if d > 1 {
            n.set_link(0, Some(&tree(m, d - 1, linked))).unwrap();
            n.set_link(1, Some(&tree(m, d - 1, linked))).unwrap();
        }
        linked.push(n.handle().offset);
        n
    }
    let t = tree(&m, 3, &mut linked);
    m.set_root("tree", &t).unwrap();
    drop(t);
    let r = m.check().unwrap();
    assert!(r.is_sound() && r.cycle_blocks.is_empty(), "{r:?}");
    m.flush().unwrap();
    drop(m);
    (linked, targets)
}

/// Salvage of that store after one flipped bit in a linked block's header.
fn salvage_after(block: usize, at: u64, xor: u64) -> (String, bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.mmheap");
    let (linked, _targets) = build(&path);
    let mut bytes = std::fs::read(&path).unwrap();
    let h = linked[block];
    let w = word(&bytes, h + at);
    put(&mut bytes, h + at, w ^ xor);
    std::fs::write(&path, &bytes).unwrap();
    let rep = MappedManager::salvage(&path);
    let unchanged = std::fs::read(&path).unwrap() == bytes;
    let rep = match rep {
        Err(e) => {
            let now = std::fs::read(&path).unwrap();
            let diff: Vec<usize> = (0..now.len().min(bytes.len())).filter(|&i| now[i] != bytes[i]).collect();
            let words: std::collections::BTreeSet<usize> = diff.iter().map(|i| i / 8 * 8).collect();
            let shown: Vec<String> = words
                .iter()
                .take(12)
                .map(|&w| format!("{w:#x}: {:#x} -> {:#x}", word(&bytes, w as u64), word(&now, w as u64)))
                .collect();
            return (format!("salvage failed: {e:?} (file unchanged: {unchanged}; len {} -> {}; changed words {shown:?})", bytes.len(), now.len()), false);
        }
        Ok(r) => r,
    };
    let m = MappedManager::open(&path).unwrap();
    let report = m.check().unwrap();
    let mut err = None;
    let mut work: Vec<MemoryBlock> = ["list", "tree"].iter().filter_map(|n| m.root(n).unwrap()).collect();
    let mut seen = std::collections::HashSet::new();
    while let Some(b) = work.pop() {
        if !seen.insert(b.handle().offset) {
            continue;
        }
        for i in 0..b.link_count() {
            match b.link(i) {
                Ok(x) => work.extend(x),
                Err(e) => err = Some(e),
            }
        }
    }
    let ok = report.is_sound() && err.is_none();
    (
        format!(
            "quarantined {:?} dropped {:?}; then check sound={} {:?}; walk error {err:?}",
            rep.quarantined,
            rep.dropped.iter().map(|d| d.name.clone()).collect::<Vec<_>>(),
            report.is_sound(),
            report.problems
        ),
        ok,
    )
}

#[test]
fn salvage_after_damage_in_linked_blocks_leaves_every_link_readable() {
    let mut bad = 0;
    for (block, at, xor, what) in [
        (0usize, 0u64, 1u64 << 4, "block 0 tag bit 4 (size)"),
        (1, 0, 1 << 5, "block 1 tag bit 5 (size)"),
        (1, 0, 1 << 60, "block 1 tag bit 60 (QUARANTINE)"),
        (11, 0, 1 << 60, "block 11 tag bit 60 (QUARANTINE)"),
        (11, 32 + 16, 1 << 5, "block 11 cell 0 bit 5"),
        (12, 32 + 16, 1 << 5, "block 12 cell 0 bit 5"),
    ] {
        let (s, ok) = salvage_after(block, at, xor);
        eprintln!("{what}: {s}");
        bad += usize::from(!ok);
    }
    assert_eq!(bad, 0, "salvage left an unsound store or failed");
}
