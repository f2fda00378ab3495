//! Property test against a shadow model of the heap, for both managers: random sequences of
//! allocate, free, resize, clone and handle round trips; after every step no two live blocks
//! overlap, every block holds exactly what was written into it, and the heap's accounting
//! matches the model.

use std::collections::BTreeMap;

use mmheap::{DefaultManager, MappedManager, MemoryBlock, MemoryManager, Options};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Alloc { len: usize, align_shift: u32 },
    Free(usize),
    Resize(usize, usize),
    Clone(usize),
    ViaHandle(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..3000, prop_oneof![9 => Just(4u32), 1 => 0u32..=12])
            .prop_map(|(len, align_shift)| Op::Alloc { len, align_shift }),
        3 => any::<usize>().prop_map(Op::Free),
        2 => (any::<usize>(), 0usize..6000).prop_map(|(i, n)| Op::Resize(i, n)),
        1 => any::<usize>().prop_map(Op::Clone),
        1 => any::<usize>().prop_map(Op::ViaHandle),
    ]
}

/// The model: for each live reference, the bytes its block must hold. Several references may
/// name one block (clones, handle round trips); they share an id.
struct Model {
    refs: Vec<(MemoryBlock, u64)>,
    content: BTreeMap<u64, Vec<u8>>,
    next: u64,
}

fn run<M: MemoryManager>(m: &M, ops: Vec<Op>, check: impl Fn() -> bool) {
    let mut model = Model { refs: Vec::new(), content: BTreeMap::new(), next: 0 };
    for op in ops {
        apply(m, &mut model, op);
        assert_model(m, &model);
    }
    assert!(check(), "consistency check");
    drop(model);
    assert_eq!(m.stats().unwrap().live_blocks, 0);
    assert!(check());
}

fn apply<M: MemoryManager>(m: &M, model: &mut Model, op: Op) {
    let n = model.refs.len();
    match op {
        Op::Alloc { len, align_shift } => {
            let mut b = m.allocate_aligned(len, 1 << align_shift).unwrap();
            model.next += 1;
            let bytes: Vec<u8> = (0..len).map(|i| (model.next as usize * 7 + i) as u8).collect();
            b.as_mut_slice().unwrap().copy_from_slice(&bytes);
            model.content.insert(model.next, bytes);
            model.refs.push((b, model.next));
        }
        Op::Free(i) if n > 0 => {
            let (_, id) = model.refs.swap_remove(i % n);
            if !model.refs.iter().any(|(_, other)| *other == id) {
                model.content.remove(&id);
            }
        }
        Op::Resize(i, new_len) if n > 0 => {
            let (b, id) = &mut model.refs[i % n];
            let shared = b.ref_count() > 1;
            match m.resize(b, new_len) {
                Ok(()) => {
                    assert!(!shared, "resize of a shared block must fail");
                    let c = model.content.get_mut(id).unwrap();
                    c.resize(new_len, 0);
                    if let Ok(s) = b.as_mut_slice() {
                        s.copy_from_slice(c);
                    } else {
                        // published blocks stay read-only: the new tail is whatever was there
                        c.copy_from_slice(b.as_slice());
                    }
                }
                Err(mmheap::Error::Shared { .. }) => assert!(shared),
                Err(e) => panic!("{e}"),
            }
        }
        Op::Clone(i) if n > 0 => {
            let (b, id) = &model.refs[i % n];
            let pair = (b.clone(), *id);
            model.refs.push(pair);
        }
        Op::ViaHandle(i) if n > 0 => {
            let (b, id) = &model.refs[i % n];
            let again = m.block_from_handle(b.handle()).unwrap();
            let pair = (again, *id);
            model.refs.push(pair);
        }
        _ => {}
    }
}

fn assert_model<M: MemoryManager>(m: &M, model: &Model) {
    let mut spans = BTreeMap::new();
    for (b, id) in &model.refs {
        assert_eq!(b.as_slice(), &model.content[id][..], "content of block {id}");
        let start = b.as_slice().as_ptr() as usize;
        if let Some((other, _)) = spans.insert(start, (*id, b.len())) {
            assert_eq!(other, *id, "two blocks at one address");
        }
    }
    let mut end = 0;
    for (start, (_, len)) in &spans {
        assert!(*start >= end, "blocks overlap");
        end = start + len;
    }
    let s = m.stats().unwrap();
    assert_eq!(s.live_blocks, model.content.len() as u64);
    let payload: u64 = model.content.values().map(|c| c.len() as u64).sum();
    assert!(s.used_bytes >= payload);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn default_manager_matches_the_model(ops in prop::collection::vec(op(), 1..300)) {
        let m = DefaultManager::with_max_size(64 << 20).unwrap();
        run(&m, ops, || m.check().unwrap().is_sound());
    }

    #[test]
    fn mapped_manager_matches_the_model(ops in prop::collection::vec(op(), 1..300)) {
        let m = MappedManager::temporary(&Options::new().initial_size(64 << 10).max_size(64 << 20)).unwrap();
        run(&m, ops, || m.check().unwrap().is_sound());
    }
}
