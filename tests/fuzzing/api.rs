//! Target `api`: sequences of API calls against a shadow model, on both managers (the
//! `DefaultManager` and a `MappedManager`): several references to a block (clones, handles
//! resolved back into blocks), resize, writes, links, and on the mapped store named roots and a
//! channel. After every step each reference reads what the model says its block holds; a
//! block is writable or resizable only while the model knows one holder; a handle of a block
//! the model knows freed resolves to an error; at the end, with everything let go, no block is
//! live and `check` is sound.
//!
//! Crash countdown (mapped store only): with `crash_after = Some(k)` a forked child opens the
//! store, runs the first k operations, reports what its model says survives it (roots and their
//! bytes, queued messages) through a pipe and kills itself with SIGKILL; the parent then opens
//! the store (the recovery at open runs) and finds every root with its bytes, the live blocks
//! exactly those that roots, messages and their links reach, and `check` sound. The kill falls
//! between two operations, not inside one: the points inside are the crash tests' (real
//! SIGKILL at each pause point of `src/hooks.rs`, `tests/crash.rs`); an in-process fuzzer
//! cannot choose them, as the pause point a process stops at is read once from its environment.

use std::collections::{HashMap, VecDeque};

use arbitrary::{Arbitrary, Unstructured};
use mmheap::{BlockHandle, DefaultManager, MappedManager, MemoryBlock, MemoryManager, Options};

#[derive(Arbitrary, Debug, Clone)]
pub enum ApiOp {
    Alloc { len: u16, align: u8 },
    AllocLinked { links: u8, len: u16 },
    Drop(u8),
    Clone(u8),
    ViaHandle(u8),
    Stale(u8),
    Resize(u8, u16),
    Write(u8, u8),
    SetLink { parent: u8, index: u8, child: Option<u8> },
    TakeLink { parent: u8, index: u8 },
    GetLink { parent: u8, index: u8 },
    SetRoot(u8, u8),
    GetRoot(u8),
    RemoveRoot(u8),
    Send(u8),
    Recv,
    Check,
}

#[derive(Arbitrary, Debug)]
struct Input {
    mapped: bool,
    crash_after: Option<u8>,
    ops: Vec<ApiOp>,
}

const NAMES: [&str; 3] = ["r0", "r1", "r2"];

/// What the model knows: every reference with the id of its block, and per id its bytes, its
/// handle and its links; the roots and the queued messages.
#[derive(Default)]
struct Model {
    refs: Vec<(MemoryBlock, u64)>,
    content: HashMap<u64, Vec<u8>>,
    handles: HashMap<u64, BlockHandle>,
    links: HashMap<(u64, usize), u64>,
    link_slots: HashMap<u64, usize>,
    roots: HashMap<&'static str, u64>,
    queue: VecDeque<u64>,
    dead: Vec<BlockHandle>,
    next: u64,
}

/// The managers' common ground, and the mapped store's roots and channel.
struct Under<'a> {
    m: &'a dyn MemoryManager,
    mapped: Option<(&'a MappedManager, mmheap::Sender, mmheap::Receiver)>,
}

impl Model {
    fn pick(&self, i: u8) -> Option<usize> {
        (!self.refs.is_empty()).then(|| i as usize % self.refs.len())
    }

    /// References the model knows to block `id`.
    fn holders(&self, id: u64) -> usize {
        self.refs.iter().filter(|r| r.1 == id).count()
            + self.roots.values().filter(|&&r| r == id).count()
            + self.queue.iter().filter(|&&q| q == id).count()
            + self.links.values().filter(|&&c| c == id).count()
    }

    fn add(&mut self, b: MemoryBlock, links: usize) -> u64 {
        self.next += 1;
        let id = self.next;
        self.content.insert(id, b.as_slice().to_vec());
        self.handles.insert(id, b.handle());
        self.link_slots.insert(id, links);
        self.refs.push((b, id));
        id
    }

    /// Ids reachable from the references, roots and queue through links.
    fn reachable(&self, with_refs: bool) -> Vec<u64> {
        let mut seen: Vec<u64> = self.roots.values().chain(self.queue.iter()).copied().collect();
        if with_refs {
            seen.extend(self.refs.iter().map(|r| r.1));
        }
        seen.sort_unstable();
        seen.dedup();
        let mut i = 0;
        while i < seen.len() {
            let p = seen[i];
            for ((q, _), c) in &self.links {
                if *q == p && !seen.contains(c) {
                    seen.push(*c);
                }
            }
            i += 1;
        }
        seen
    }

    /// Forgets the blocks nothing reaches any more; their handles become stale.
    fn collect(&mut self) {
        let live = self.reachable(true);
        let gone: Vec<u64> = self.content.keys().copied().filter(|id| !live.contains(id)).collect();
        for id in gone {
            self.content.remove(&id);
            self.dead.extend(self.handles.remove(&id));
            self.links.retain(|(p, _), _| *p != id);
        }
    }

    fn assert_matches(&self) {
        for (b, id) in &self.refs {
            assert!(b.as_slice() == self.content[id].as_slice(), "block {id} does not hold what was written");
        }
    }
}

fn step(u: &Under<'_>, model: &mut Model, op: &ApiOp) {
    match *op {
        ApiOp::Alloc { len, align } => {
            if let Ok(b) = u.m.allocate_aligned(len as usize % 3000, 1 << (align % 13)) {
                model.add(b, 0);
            }
        }
        ApiOp::AllocLinked { links, len } => {
            let links = links as usize % 4;
            if let Ok(b) = u.m.allocate_linked(links, len as usize % 3000) {
                model.add(b, links);
            }
        }
        ApiOp::Drop(i) => drop(model.pick(i).map(|i| model.refs.swap_remove(i))),
        ApiOp::Clone(i) => {
            if let Some(i) = model.pick(i) {
                let r = (model.refs[i].0.clone(), model.refs[i].1);
                model.refs.push(r);
            }
        }
        ApiOp::ViaHandle(i) => {
            if let Some(i) = model.pick(i) {
                let (h, id) = (model.refs[i].0.handle(), model.refs[i].1);
                let b = u.m.block_from_handle(h).expect("the handle of a live block resolves");
                model.refs.push((b, id));
            }
        }
        ApiOp::Stale(i) => {
            if !model.dead.is_empty() {
                let h = model.dead[i as usize % model.dead.len()];
                assert!(u.m.block_from_handle(h).is_err(), "a freed block's handle {h:?} resolved");
            }
        }
        ApiOp::Resize(i, len) => resize(u, model, i, len as usize % 6000),
        ApiOp::Write(i, v) => write(model, i, v),
        ApiOp::SetLink { parent, index, child } => set_link(model, parent, index, child),
        ApiOp::TakeLink { parent, index } | ApiOp::GetLink { parent, index } => {
            let Some(p) = model.pick(parent) else { return };
            let pid = model.refs[p].1;
            let k = index as usize % 4;
            let take = matches!(op, ApiOp::TakeLink { .. });
            let got = match take {
                true => model.refs[p].0.take_link(k),
                false => model.refs[p].0.link(k),
            };
            let want = model.links.get(&(pid, k)).copied();
            match (got, want) {
                (Ok(Some(b)), Some(c)) => {
                    assert_eq!(b.handle(), model.handles[&c], "link {k} of block {pid}");
                    if take {
                        model.links.remove(&(pid, k));
                    }
                    model.refs.push((b, c));
                }
                (Ok(None), None) | (Err(_), None) => {}
                (got, want) => panic!("link {k} of block {pid}: got {got:?}, model {want:?}"),
            }
        }
        ApiOp::SetRoot(n, i) => {
            let (Some((store, ..)), Some(i)) = (&u.mapped, model.pick(i)) else { return };
            store.set_root(NAMES[n as usize % 3], &model.refs[i].0).expect("set_root");
            model.roots.insert(NAMES[n as usize % 3], model.refs[i].1);
        }
        ApiOp::GetRoot(n) => {
            let Some((store, ..)) = &u.mapped else { return };
            let name = NAMES[n as usize % 3];
            let got = store.root(name).expect("root");
            match (got, model.roots.get(name)) {
                (Some(b), Some(&id)) => model.refs.push((b, id)),
                (None, None) => {}
                (got, want) => panic!("root {name}: got {got:?}, model {want:?}"),
            }
        }
        ApiOp::RemoveRoot(n) => {
            let Some((store, ..)) = &u.mapped else { return };
            let name = NAMES[n as usize % 3];
            assert_eq!(store.remove_root(name).expect("remove_root"), model.roots.remove(name).is_some());
        }
        ApiOp::Send(i) => {
            let (Some((_, tx, _)), Some(i)) = (&u.mapped, model.pick(i)) else { return };
            let (b, id) = model.refs.swap_remove(i);
            match tx.try_send(b) {
                Ok(()) => model.queue.push_back(id),
                Err(e) => assert!(model.queue.len() >= 4, "send failed with room in the ring: {e:?}"),
            }
        }
        ApiOp::Recv => {
            let Some((_, _, rx)) = &u.mapped else { return };
            match (rx.try_recv(), model.queue.pop_front()) {
                (Ok(b), Some(id)) => {
                    assert_eq!(b.handle(), model.handles[&id], "received another message than was sent");
                    model.refs.push((b, id));
                }
                (Err(_), None) => {}
                (got, want) => panic!("recv: got {got:?}, model {want:?}"),
            }
        }
        ApiOp::Check => check(u),
    }
    model.collect();
    model.assert_matches();
}

fn check(u: &Under<'_>) {
    let report = match &u.mapped {
        Some((store, ..)) => store.check(),
        None => return,
    };
    let report = report.expect("check");
    assert!(report.is_sound(), "check: {:?}", report.problems);
}

fn resize(u: &Under<'_>, model: &mut Model, i: u8, len: usize) {
    let Some(i) = model.pick(i) else { return };
    let id = model.refs[i].1;
    let shared = model.holders(id) > 1;
    let before = model.refs[i].0.handle();
    let result = u.m.resize(&mut model.refs[i].0, len);
    assert!(!(shared && result.is_ok()), "resized block {id}, which {} references hold", model.holders(id));
    if result.is_ok() {
        let b = &model.refs[i].0;
        let old = &model.content[&id];
        let keep = old.len().min(len);
        assert_eq!(b.len(), len);
        assert!(b.as_slice()[..keep] == old[..keep], "resize lost the content of block {id}");
        let now = b.handle();
        if now != before {
            model.dead.push(before);
        }
        let bytes = b.as_slice().to_vec();
        model.content.insert(id, bytes);
        model.handles.insert(id, now);
    }
}

fn write(model: &mut Model, i: u8, v: u8) {
    let Some(i) = model.pick(i) else { return };
    let id = model.refs[i].1;
    let holders = model.holders(id);
    if let Ok(bytes) = model.refs[i].0.as_mut_slice() {
        assert_eq!(holders, 1, "block {id} writable with {holders} references");
        bytes.fill(v);
        let bytes = bytes.to_vec();
        model.content.insert(id, bytes);
    }
}

/// Links only to an older block than the parent, so links never make a cycle.
fn set_link(model: &mut Model, parent: u8, index: u8, child: Option<u8>) {
    let Some(p) = model.pick(parent) else { return };
    let pid = model.refs[p].1;
    let k = index as usize % 4;
    let c = child.and_then(|c| model.pick(c)).filter(|&c| model.refs[c].1 < pid);
    let result = model.refs[p].0.set_link(k, c.map(|c| &model.refs[c].0));
    match (result, k < model.link_slots[&pid]) {
        (Ok(()), true) => match c {
            Some(c) => drop(model.links.insert((pid, k), model.refs[c].1)),
            None => drop(model.links.remove(&(pid, k))),
        },
        (Err(_), false) => {}
        (r, ok) => panic!(
            "set_link {k} of block {pid} with {} links: {r:?} (expected ok: {ok})",
            model.link_slots[&pid]
        ),
    }
}

pub fn run(data: &[u8]) {
    super::guard();
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else { return };
    let ops = &input.ops[..input.ops.len().min(64)];
    if !input.mapped {
        let m = DefaultManager::with_max_size(32 << 20).expect("a private heap");
        run_model(&Under { m: &m, mapped: None }, ops);
        let report = m.check().expect("check");
        assert!(report.is_sound(), "check: {:?}", report.problems);
        return;
    }
    let dir = super::scratch();
    let path = dir.path().join("s.mmheap");
    let options = Options::new().initial_size(64 << 10).max_size(32 << 20);
    drop(MappedManager::create(&path, &options).expect("create"));
    match input.crash_after {
        Some(k) => crash::run(&path, &ops[..(k as usize).min(ops.len())]),
        None => {
            let store = MappedManager::open(&path).expect("open");
            with_store(&store, |u| run_model(u, ops));
            check(&Under { m: &store, mapped: Some(parts(&store)) });
        }
    }
}

fn parts(store: &MappedManager) -> (&MappedManager, mmheap::Sender, mmheap::Receiver) {
    let ch = store.channel("c", 4).expect("channel");
    (store, ch.sender().expect("sender"), ch.receiver().expect("receiver"))
}

fn with_store<R>(store: &MappedManager, f: impl FnOnce(&Under<'_>) -> R) -> R {
    f(&Under { m: store, mapped: Some(parts(store)) })
}

/// Runs `ops`, then lets everything go: no block stays live.
fn run_model(u: &Under<'_>, ops: &[ApiOp]) {
    let mut model = Model::default();
    for op in ops {
        step(u, &mut model, op);
    }
    model.refs.clear();
    if let Some((store, _, rx)) = &u.mapped {
        for name in NAMES {
            let _ = store.remove_root(name);
        }
        while rx.try_recv().is_ok() {}
    }
    assert_eq!(u.m.stats().expect("stats").live_blocks, 0, "blocks left live with nothing holding them");
    check(u);
}

#[path = "crash.rs"]
pub mod crash;
