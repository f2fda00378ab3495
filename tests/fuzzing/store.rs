//! What every store target does with a file: the read-only paths (`open_read_only`, the
//! inspection `Snapshot` that `mmheap stat/check/dump/inspect` use), the repairs, and a short
//! sequence of operations on whatever opened; and the properties checked after a repair.

use std::path::Path;

use arbitrary::{Arbitrary, Unstructured};
use mmheap::inspect::{BlockInfo, BlockKind, Snapshot};
use mmheap::{MappedManager, MemoryBlock, MemoryManager};

/// One operation on an opened store. Indices pick among the blocks held so far (modulo).
#[derive(Arbitrary, Debug)]
pub enum StoreOp {
    Alloc(u16),
    AllocLinked(u8, u16),
    Free(u8),
    SetRoot(u8, u8),
    Root(u8),
    RemoveRoot(u8),
    Resize(u8, u16),
    Link(u8, u8, u8),
    ViaHandle(u8),
    Send(u8),
    Recv,
    Roots,
}

const NAMES: [&str; 4] = ["a", "b", "rooted", "other"];

/// Reads the store at `path` through every read-only path: no panic, whatever it holds.
pub fn read_only_paths(path: &Path) {
    if let Ok(ro) = MappedManager::open_read_only(path) {
        let _ = ro.check();
        if let Ok(roots) = ro.roots() {
            for (name, handle) in roots.iter().take(8) {
                let _ = ro.read(*handle);
                let _ = ro.read_root(name);
            }
        }
    }
    if let Ok(mut snap) = Snapshot::take(path) {
        inspect(&snap);
        let _ = snap.recover_dry_run();
        let _ = snap.salvage_dry_run();
    }
}

/// What `mmheap stat`, `check`, `dump` and `inspect` ask of a snapshot.
fn inspect(snap: &Snapshot) {
    let _ = snap.info();
    let _ = snap.unreferenced();
    let _ = snap.processes();
    let _ = snap.roots();
    let (blocks, _) = snap.blocks(|_| {});
    let _ = snap.spans();
    let _ = snap.size_classes();
    let _ = snap.check();
    for b in blocks.iter().take(16) {
        let _ = snap.payload(b.id);
        let _ = snap.handle(b.id);
    }
}

/// After a repair said it succeeded: the store opens, `check` finds it sound, a recovery (of
/// a copy) accepts it as `check` does, and no two of its blocks (or slots) overlap.
pub fn assert_repaired(path: &Path, what: &str) {
    let mut snap =
        Snapshot::take(path).unwrap_or_else(|e| panic!("{what} succeeded, the store does not load: {e}"));
    let report = snap.check().expect("check of a snapshot");
    assert!(report.is_sound(), "{what} succeeded, check finds {:?}", report.problems);
    let (blocks, err) = snap.blocks(|_| {});
    assert!(err.is_none(), "{what} succeeded, the heap does not walk: {err:?}");
    assert_disjoint(&blocks);
    if let Err(e) = snap.recover_dry_run() {
        panic!("{what} succeeded and check finds the store sound, but recovery refuses it: {e}");
    }
}

/// No two blocks overlap; every slot lies inside a span, and no two slots overlap.
pub fn assert_disjoint(blocks: &[BlockInfo]) {
    let mut top: Vec<(u64, u64)> =
        blocks.iter().filter(|b| b.kind != BlockKind::Slot).map(|b| (b.offset, b.offset + b.size)).collect();
    let mut slots: Vec<(u64, u64)> =
        blocks.iter().filter(|b| b.kind == BlockKind::Slot).map(|b| (b.offset, b.offset + b.size)).collect();
    top.sort_unstable();
    slots.sort_unstable();
    for pair in top.windows(2).chain(slots.windows(2)) {
        assert!(pair[0].1 <= pair[1].0, "blocks overlap: {:?} and {:?}", pair[0], pair[1]);
    }
    let spans: Vec<(u64, u64)> =
        blocks.iter().filter(|b| b.kind == BlockKind::Span).map(|b| (b.offset, b.offset + b.size)).collect();
    for s in &slots {
        assert!(spans.iter().any(|sp| sp.0 <= s.0 && s.1 <= sp.1), "slot {s:?} is in no span");
    }
}

/// Runs `ops` on `store`: any error is an outcome, a panic is a failure.
pub fn run_ops(store: &MappedManager, ops: &[StoreOp]) {
    let mut held: Vec<MemoryBlock> = Vec::new();
    let channel = store.channel("fuzz", 4).ok();
    let sender = channel.as_ref().and_then(|c| c.sender().ok());
    let receiver = channel.as_ref().and_then(|c| c.receiver().ok());
    for op in ops {
        let pick = |i: &u8| (!held.is_empty()).then(|| *i as usize % held.len());
        match op {
            StoreOp::Alloc(len) => held.extend(store.allocate(*len as usize).ok()),
            StoreOp::AllocLinked(n, len) => {
                held.extend(store.allocate_linked(*n as usize % 4, *len as usize).ok())
            }
            StoreOp::Free(i) => drop(pick(i).map(|i| held.swap_remove(i))),
            StoreOp::SetRoot(n, i) => drop(pick(i).map(|i| store.set_root(NAMES[*n as usize % 4], &held[i]))),
            StoreOp::Root(n) => held.extend(store.root(NAMES[*n as usize % 4]).ok().flatten()),
            StoreOp::RemoveRoot(n) => drop(store.remove_root(NAMES[*n as usize % 4])),
            StoreOp::Resize(i, len) => drop(pick(i).map(|i| held[i].resize(*len as usize))),
            StoreOp::Link(p, k, c) => {
                drop(pick(p).zip(pick(c)).map(|(p, c)| held[p].set_link(*k as usize % 4, Some(&held[c]))))
            }
            StoreOp::ViaHandle(i) => {
                held.extend(pick(i).and_then(|i| store.block_from_handle(held[i].handle()).ok()))
            }
            StoreOp::Send(i) => {
                drop(pick(i).zip(sender.as_ref()).map(|(i, s)| s.try_send(held.swap_remove(i))))
            }
            StoreOp::Recv => held.extend(receiver.as_ref().and_then(|r| r.try_recv().ok())),
            StoreOp::Roots => drop(store.roots()),
        }
    }
    let _ = store.check();
}

/// Up to 32 operations taken from `u`.
pub fn ops(u: &mut Unstructured<'_>) -> Vec<StoreOp> {
    let mut out = Vec::new();
    while out.len() < 32 {
        match StoreOp::arbitrary(u) {
            Ok(op) => out.push(op),
            Err(_) => break,
        }
    }
    out
}

/// Opens the store at `path` (which runs the recovery an open runs), checks it and runs `ops`
/// on it; then the repairs: after a recovery or a salvage that succeeded the store must be
/// sound, and stay sound through `ops`.
pub fn open_repair_and_use(path: &Path, ops: &[StoreOp], after_repair: impl Fn(&str)) {
    if let Ok(store) = MappedManager::open(path) {
        let _ = store.check();
        run_ops(&store, ops);
    }
    if MappedManager::recover_file(path).is_ok() {
        assert_repaired(path, "recover");
        after_repair("recover");
    }
    if MappedManager::salvage(path).is_ok() {
        assert_repaired(path, "salvage");
        after_repair("salvage");
        let store = MappedManager::open(path).expect("a salvaged store opens");
        run_ops(&store, ops);
        let report = store.check().expect("check");
        assert!(report.is_sound(), "operations on a salvaged store made it unsound: {:?}", report.problems);
        drop(store);
        assert_repaired(path, "operations after salvage");
    }
}
