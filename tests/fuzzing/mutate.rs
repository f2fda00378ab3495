//! Target `mutate`: a populated store (blocks of several sizes, slots of several classes,
//! roots, a linked block, a container, a channel with messages in it) built once per process,
//! then a list of mutations of its bytes (bit flips, bytes and words written at offsets, some
//! near the headers and tables the store has) and a short sequence of operations. The
//! properties of `open`, and: **rooted data whose header was not hit reads back intact.**
//!
//! The fair form of that property: for a root whose block has a header of its own (slots are
//! not covered: their span's header and publication page would have to be left alone too), if
//! no mutation touched the superblock (`0..512`: the key the check words fold in, the roots
//! table pointer, the sizes), the roots' directory (the fixed one at `16384..32768`, and the
//! roots table block the superblock names, where the template's roots are: header and
//! entries) or the block outside its payload (its header, its trailer), then after a
//! recovery or a salvage that succeeded the root still names that block, at the same offset and
//! length, and its payload is byte-identical to what the mutated file held (a mutation of the
//! payload itself is data, which no repair may change). The registry, hold tables, free lists,
//! channels and every other block may be hit: damage there must not reach the root.

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use mmheap::format::{HEADER_SIZE, ROOTS_OFFSET, ROOT_COUNT, ROOT_SIZE, SB_ROOT_TABLE, SUPERBLOCK_SIZE};
use mmheap::inspect::{BlockKind, Snapshot};
use mmheap::{MappedManager, MemoryManager, Options, SharedVec};

use super::store;

#[derive(Arbitrary, Debug)]
enum Mutation {
    Flip { at: u32, bit: u8 },
    Byte { at: u32, value: u8 },
    Word { at: u32, value: u64 },
    NearFlip { anchor: u8, delta: u8, bit: u8 },
    NearWord { anchor: u8, delta: u8, value: u64 },
}

/// A rooted block the intact property covers.
struct Rooted {
    name: String,
    header: u64,
    size: u64,
    len: u64,
}

pub struct Template {
    bytes: Vec<u8>,
    /// Offsets worth hitting: block headers, tables.
    anchors: Vec<u64>,
    rooted: Vec<Rooted>,
    /// The roots table block (header offset, size), `(0, 0)` if the store has none.
    roots_table: (u64, u64),
}

/// The populated store, built once per process (deterministic but for the store's random key
/// and generation seeds).
pub fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(build)
}

fn fill(b: &mut mmheap::MemoryBlock, seed: u8) {
    for (i, x) in b.as_mut_slice().expect("a new block is writable").iter_mut().enumerate() {
        *x = seed.wrapping_add(i as u8).wrapping_mul(31);
    }
}

fn populate(store: &MappedManager) -> mmheap::Result<()> {
    for (i, len) in [16usize, 40, 64, 100, 1000, 5000].into_iter().enumerate() {
        let mut b = store.allocate(len)?;
        fill(&mut b, i as u8);
        store.set_root(&format!("t{len}"), &b)?;
    }
    drop(store.allocate(3000)?); // a hole in the middle
    let parent = store.allocate_linked(2, 50)?;
    let mut child = store.allocate(300)?;
    fill(&mut child, 9);
    parent.set_link(0, Some(&child))?;
    store.set_root("tparent", &parent)?;
    let v = SharedVec::<u64>::new_in(store)?;
    for x in 0..40 {
        v.push(x * 3)?;
    }
    store.set_root("tvec", v.block())?;
    let ch = store.channel("tch", 4)?;
    let tx = ch.sender()?;
    for (i, len) in [30usize, 200, 2000].into_iter().enumerate() {
        let mut m = store.allocate(len)?;
        fill(&mut m, 20 + i as u8);
        tx.try_send(m).map_err(|_| mmheap::Error::InvalidOptions("channel send"))?;
    }
    Ok(())
}

fn build() -> Template {
    let dir = super::scratch();
    let path = dir.path().join("t.mmheap");
    let store = MappedManager::create(&path, &Options::new().initial_size(320 << 10).max_size(4 << 20))
        .expect("create");
    populate(&store).expect("populate the template");
    drop(store);
    let bytes = std::fs::read(&path).expect("read the template");
    let snap = Snapshot::take(&path).expect("snapshot of the template");
    let (blocks, err) = snap.blocks(|_| {});
    assert!(err.is_none());
    let mut anchors: Vec<u64> = blocks.iter().map(|b| b.id).collect();
    anchors.extend([0, 512, 1024, 6400, 8192, ROOTS_OFFSET]);
    let rooted = snap
        .roots()
        .expect("roots")
        .into_iter()
        .filter_map(|r| {
            let b = blocks.iter().find(|b| b.id == r.offset && b.kind == BlockKind::Block)?;
            Some(Rooted { name: r.name, header: r.offset, size: b.size, len: r.len })
        })
        .collect();
    let table = u64::from_le_bytes(bytes[SB_ROOT_TABLE as usize..][..8].try_into().expect("8 bytes"));
    let roots_table = blocks.iter().find(|b| b.id == table).map_or((0, 0), |b| (b.offset, b.size));
    Template { bytes, anchors, rooted, roots_table }
}

/// Applies `m` to `bytes`; returns the range it touched.
fn apply(t: &Template, bytes: &mut [u8], m: &Mutation) -> (u64, u64) {
    let len = bytes.len() as u64;
    let near = |anchor: &u8, delta: &u8| t.anchors[*anchor as usize % t.anchors.len()] + u64::from(*delta);
    let (at, width, value) = match m {
        Mutation::Flip { at, bit } => (u64::from(*at), 1, 1u64 << (bit % 8)),
        Mutation::Byte { at, value } => (u64::from(*at), 1, u64::from(*value)),
        Mutation::Word { at, value } => (u64::from(*at), 8, *value),
        Mutation::NearFlip { anchor, delta, bit } => (near(anchor, delta), 1, 1u64 << (bit % 8)),
        Mutation::NearWord { anchor, delta, value } => (near(anchor, delta), 8, *value),
    };
    let at = at % (len - 8);
    let flip = matches!(m, Mutation::Flip { .. } | Mutation::NearFlip { .. });
    for (i, v) in value.to_le_bytes()[..width].iter().enumerate() {
        let b = &mut bytes[at as usize + i];
        *b = if flip { *b ^ v } else { *v };
    }
    (at, at + width as u64)
}

pub fn run(data: &[u8]) {
    super::guard();
    let t = template();
    let mut u = Unstructured::new(data);
    let mut bytes = t.bytes.clone();
    let mut touched = Vec::new();
    for _ in 0..u.int_in_range(0..=8u8).unwrap_or(0) {
        let Ok(m) = Mutation::arbitrary(&mut u) else { break };
        touched.push(apply(t, &mut bytes, &m));
    }
    let ops = store::ops(&mut u);
    let dir = super::scratch();
    let path = dir.path().join("s.mmheap");
    super::write_store(&path, &bytes);
    store::read_only_paths(&path);
    let intact = |what: &str| assert_intact(t, &bytes, &touched, &path, what);
    store::open_repair_and_use(&path, &ops, intact);
}

/// The property the module's documentation states, for every covered root.
fn assert_intact(t: &Template, bytes: &[u8], touched: &[(u64, u64)], path: &std::path::Path, what: &str) {
    let hit = |a: u64, b: u64| touched.iter().any(|&(x, y)| x < b && a < y);
    let roots_dir = (ROOTS_OFFSET, ROOTS_OFFSET + ROOT_COUNT * ROOT_SIZE);
    let table = (t.roots_table.0, t.roots_table.0 + t.roots_table.1);
    if hit(0, SUPERBLOCK_SIZE) || hit(roots_dir.0, roots_dir.1) || hit(table.0, table.1) {
        return;
    }
    let snap = Snapshot::take(path).expect("a repaired store loads");
    let roots = snap.roots().expect("roots of a repaired store");
    for r in &t.rooted {
        let payload = r.header + HEADER_SIZE;
        if hit(r.header, payload) || hit(payload + r.len, r.header + r.size) {
            continue;
        }
        let found = roots.iter().find(|x| x.name == r.name);
        let found = found.unwrap_or_else(|| panic!("{what}: root {} is gone", r.name));
        assert_eq!((found.offset, found.len), (r.header, r.len), "{what}: root {} moved", r.name);
        let expected = &bytes[payload as usize..(payload + r.len) as usize];
        let got = snap.payload(r.header).unwrap_or_else(|e| panic!("{what}: root {}: {e}", r.name));
        // The payload a dump shows ends with the link table of a linked block: metadata.
        assert!(got.get(..expected.len()) == Some(expected), "{what}: the bytes of root {} changed", r.name);
    }
}

/// The template's bytes (the `open` target's seed corpus holds them).
pub fn template_bytes() -> &'static [u8] {
    &template().bytes
}
