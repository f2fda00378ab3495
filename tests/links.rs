//! Links: blocks that own blocks. A link counts its block, in every process; replacing or
//! clearing it releases the old one; freeing a block releases what it links, iteratively; a
//! cycle nothing reaches is reported by the check and collected on request; and a `kill -9` at
//! any step of a link update leaves counts exact after recovery. Both managers where it applies.

mod common;

use std::path::Path;

use common::*;
use libtest_mimic::{Failed, Trial};
use mmheap::{DefaultManager, Error, MappedManager, MemoryBlock, MemoryManager, Options};

fn main() {
    child_or_tests(child, || {
        let mut trials = Vec::new();
        for (name, make) in managers() {
            let per_manager: [(&str, Test); 5] = [
                ("a_link_keeps_its_block_until_replaced_or_cleared", |make| keeps(make()?.as_ref())),
                ("a_long_list_is_freed_without_recursion", |make| long_list(make()?.as_ref())),
                ("a_tree_is_freed_whole_with_its_root", |make| tree_freed(make()?.as_ref())),
                ("misuse_is_a_typed_error", |make| misuse(make()?.as_ref(), make()?.as_ref())),
                ("take_link_moves_the_link_s_count_to_the_caller", |make| take(make()?.as_ref())),
            ];
            for (test, run) in per_manager {
                trials.push(Trial::test(format!("{name}::{test}"), move || run(make)));
            }
        }
        trials.push(Trial::test("default::a_cycle_is_reported_by_the_check", default_cycle));
        trials.push(Trial::test("store::a_cycle_nothing_reaches_is_reported_and_collected", store_cycle));
        trials.push(Trial::test("store::a_list_and_a_tree_outlive_the_process_that_built_them", across));
        trials.push(Trial::test("store::check_finds_a_damaged_link", damaged));
        for (role, point) in KILLS {
            trials.push(Trial::test(
                format!("store::killed_at_{point}_while_{role}_leaves_counts_exact"),
                move || killed(role, point),
            ));
        }
        trials
    });
}

/// A block of `len` bytes holding `value` in its first 8.
fn valued(m: &dyn MemoryManager, links: usize, len: usize, value: u64) -> mmheap::Result<MemoryBlock> {
    let mut b = if links == 0 { m.allocate(len)? } else { m.allocate_linked(links, len)? };
    b.as_mut_slice()?[..8].copy_from_slice(&value.to_le_bytes());
    Ok(b)
}

fn value(b: &MemoryBlock) -> u64 {
    u64::from_le_bytes(b.as_slice()[..8].try_into().unwrap())
}

fn keeps(m: &dyn MemoryManager) -> Result<(), Failed> {
    let live = m.stats()?.live_blocks;
    let parent = valued(m, 3, 24, 7)?;
    ensure(parent.link_count() == 3 && parent.len() == 24, "three links after 24 bytes")?;
    ensure((0..3).all(|i| parent.link(i).is_ok_and(|l| l.is_none())), "every link starts empty")?;
    // A small child (a slot of a span in a store) and a large one.
    let small = valued(m, 0, 16, 1)?;
    let large = valued(m, 0, 5000, 2)?;
    parent.set_link(0, Some(&small))?;
    parent.set_link(1, Some(&large))?;
    ensure(small.ref_count() == 2 && large.ref_count() == 2, "a link counts its block")?;
    ensure(small.is_published(), "linking publishes")?;
    drop((small, large));
    ensure(m.stats()?.live_blocks == live + 3, "the links keep both")?;
    ensure(value(&parent.link(0)?.ok_or("link 0")?) == 1, "link 0 reads its block")?;
    ensure(value(&parent.link(1)?.ok_or("link 1")?) == 2, "link 1 reads its block")?;
    // Two links to one block count twice.
    let shared = parent.link(1)?.ok_or("link 1")?;
    parent.set_link(2, Some(&shared))?;
    ensure(shared.ref_count() == 3, "two links and ours")?;
    drop(shared);
    parent.set_link(1, None)?;
    ensure(m.stats()?.live_blocks == live + 3, "link 2 still holds the large block")?;
    // Replacing releases the old block, and frees it when nothing else holds it.
    let other = valued(m, 0, 100, 3)?;
    parent.set_link(2, Some(&other))?;
    drop(other);
    ensure(m.stats()?.live_blocks == live + 3, "large freed, other kept")?;
    parent.set_link(0, None)?;
    ensure(m.stats()?.live_blocks == live + 2, "clearing frees")?;
    ensure(value(&parent) == 7 && parent.as_slice().len() == 24, "the parent's own bytes are untouched")?;
    drop(parent);
    ensure(m.stats()?.live_blocks == live, "freeing the parent releases what it links")?;
    Ok(())
}

/// A list of `n` nodes (node i holds i), linked through link 0; returns its head.
fn list(m: &dyn MemoryManager, n: u64) -> mmheap::Result<MemoryBlock> {
    let mut head: Option<MemoryBlock> = None;
    for i in (0..n).rev() {
        let node = valued(m, 1, 8, i)?;
        node.set_link(0, head.as_ref())?;
        head = Some(node);
    }
    head.ok_or(Error::LinkLayout("empty list"))
}

fn long_list(m: &dyn MemoryManager) -> Result<(), Failed> {
    let live = m.stats()?.live_blocks;
    let n = env_u64("MMHEAP_LIST_LEN", 200_000);
    let head = list(m, n)?;
    ensure(m.stats()?.live_blocks == live + n, "every node lives")?;
    // Freed on a thread with a small stack: a recursive release of 200,000 nodes would need
    // far more (a frame per node).
    let dropper = std::thread::Builder::new().stack_size(128 * 1024).spawn(move || drop(head))?;
    dropper.join().map_err(|_| "the release overflowed its stack")?;
    ensure(m.stats()?.live_blocks == live, "the whole list is freed")?;
    Ok(())
}

/// A complete binary tree of `depth` levels, keys in order; returns its root.
fn tree(m: &dyn MemoryManager, depth: u32, first: u64) -> mmheap::Result<MemoryBlock> {
    let key = first + (1 << (depth - 1)) - 1;
    let node = valued(m, 2, 8, key)?;
    if depth > 1 {
        node.set_link(0, Some(&tree(m, depth - 1, first)?))?;
        node.set_link(1, Some(&tree(m, depth - 1, key + 1)?))?;
    }
    Ok(node)
}

/// The keys of a tree in order.
fn in_order(node: &MemoryBlock, out: &mut Vec<u64>) -> mmheap::Result<()> {
    if let Some(left) = node.link(0)? {
        in_order(&left, out)?;
    }
    out.push(value(node));
    if let Some(right) = node.link(1)? {
        in_order(&right, out)?;
    }
    Ok(())
}

fn tree_freed(m: &dyn MemoryManager) -> Result<(), Failed> {
    let live = m.stats()?.live_blocks;
    let root = tree(m, 10, 0)?;
    ensure(m.stats()?.live_blocks == live + 1023, "1,023 nodes")?;
    let mut keys = Vec::new();
    in_order(&root, &mut keys)?;
    ensure(keys == (0..1023).collect::<Vec<_>>(), "the tree's keys in order")?;
    root.set_link(0, None)?;
    ensure(m.stats()?.live_blocks == live + 512, "the left subtree freed")?;
    drop(root);
    ensure(m.stats()?.live_blocks == live, "the whole tree freed")?;
    Ok(())
}

fn misuse(m: &dyn MemoryManager, other: &dyn MemoryManager) -> Result<(), Failed> {
    let plain = m.allocate(32)?;
    let linked = m.allocate_linked(2, 10)?;
    let child = m.allocate(10)?;
    ensure(plain.link_count() == 0, "a plain block has no links")?;
    let no_link = |r: mmheap::Result<()>, index, links| matches!(r, Err(Error::NoSuchLink { index: i, links: l }) if i == index && l == links);
    ensure(no_link(plain.set_link(0, Some(&child)), 0, 0), "a plain block has no link 0")?;
    ensure(no_link(linked.set_link(2, Some(&child)), 2, 2), "index 2 of 2")?;
    ensure(matches!(linked.link(5), Err(Error::NoSuchLink { .. })), "reading beyond")?;
    let foreign = other.allocate(10)?;
    ensure(
        matches!(linked.set_link(0, Some(&foreign)), Err(Error::WrongManager)),
        "another manager's block",
    )?;
    ensure(matches!(m.allocate_linked(0, 10), Err(Error::LinkLayout(_))), "no links")?;
    ensure(matches!(m.allocate_linked(usize::MAX, 10), Err(Error::LinkLayout(_))), "too many links")?;
    ensure(matches!(m.allocate_linked(1, usize::MAX - 8), Err(Error::OutOfSpace { .. })), "too long")?;
    let mut resized = m.allocate_linked(1, 10)?;
    ensure(matches!(resized.resize(100), Err(Error::LinkLayout(_))), "growing is refused")?;
    ensure(matches!(resized.resize(4), Err(Error::LinkLayout(_))), "shrinking is refused")?;
    ensure(resized.len() == 10, "and the length stays")?;
    ensure(child.ref_count() == 1, format!("failed links counted nothing: {}", child.ref_count()))?;
    ensure(!child.is_published(), "failed links published nothing")?;
    Ok(())
}

fn take(m: &dyn MemoryManager) -> Result<(), Failed> {
    let live = m.stats()?.live_blocks;
    let parent = m.allocate_linked(1, 0)?;
    parent.set_link(0, Some(&valued(m, 0, 40, 9)?))?;
    let taken = parent.take_link(0)?.ok_or("a block")?;
    ensure(value(&taken) == 9 && taken.ref_count() == 1, "the link's count is ours now")?;
    ensure(parent.take_link(0)?.is_none() && parent.link(0)?.is_none(), "the link is empty")?;
    drop((parent, taken));
    ensure(m.stats()?.live_blocks == live, "nothing kept")?;
    Ok(())
}

fn default_cycle() -> Result<(), Failed> {
    let m = DefaultManager::new()?;
    let (a, b) = (m.allocate_linked(1, 8)?, m.allocate_linked(1, 8)?);
    a.set_link(0, Some(&b))?;
    b.set_link(0, Some(&a))?;
    ensure(m.check()?.cycle_blocks.is_empty(), "held by us: no cycle to report")?;
    let offsets = [a.offset().get(), b.offset().get()];
    drop((a, b));
    let report = m.check()?;
    ensure(report.is_sound(), format!("a cycle is no damage: {:?}", report.problems))?;
    let mut want: Vec<u64> = offsets.iter().map(|o| o - 32).collect();
    want.sort_unstable();
    ensure(report.cycle_blocks == want, format!("both reported: {:?} vs {want:?}", report.cycle_blocks))?;
    let live = m.stats()?.live_blocks;
    ensure(m.collect_cycles()?.blocks_freed == 2, "both collected")?;
    ensure(m.stats()?.live_blocks == live - 2 && m.check()?.cycle_blocks.is_empty(), "gone")
}

fn store_cycle() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let m = MappedManager::create(dir.path().join("c.mmheap"), &Options::default())?;
    let live = m.stats()?.live_blocks;
    // A cycle of three with a tail, nothing else holding it; a self-link; and a rooted cycle.
    let (a, b, c) = (m.allocate_linked(2, 8)?, m.allocate_linked(1, 8)?, m.allocate_linked(1, 8)?);
    a.set_link(0, Some(&b))?;
    b.set_link(0, Some(&c))?;
    c.set_link(0, Some(&a))?;
    a.set_link(1, Some(&m.allocate(20)?))?;
    let me = m.allocate_linked(1, 8)?;
    me.set_link(0, Some(&me))?;
    let (r1, r2) = (m.allocate_linked(1, 8)?, m.allocate_linked(1, 8)?);
    r1.set_link(0, Some(&r2))?;
    r2.set_link(0, Some(&r1))?;
    m.set_root("rooted", &r1)?;
    drop((a, b, c, me, r1, r2));
    let report = m.check()?;
    ensure(report.is_sound(), format!("{:?}", report.problems))?;
    ensure(
        report.cycle_blocks.len() == 5,
        format!("four in cycles and the tail: {:?}", report.cycle_blocks),
    )?;
    ensure(m.stats()?.live_blocks == live + 7, "all kept until collected")?;
    let collected = m.collect_cycles()?;
    ensure(collected.blocks_freed == 5, format!("five freed: {collected:?}"))?;
    let report = m.check()?;
    ensure(report.is_sound() && report.cycle_blocks.is_empty(), format!("{report:?}"))?;
    ensure(m.stats()?.live_blocks == live + 2, "the rooted cycle stays")?;
    let r1 = m.root("rooted")?.ok_or("root")?;
    ensure(r1.link(0)?.ok_or("r2")?.link(0)?.ok_or("r1")?.offset() == r1.offset(), "intact")?;
    Ok(())
}

fn across() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("p.mmheap");
    drop(MappedManager::create(&path, &Options::default())?);
    wait_ok(spawn("build", &path, &[]), "the builder")?;
    let m = MappedManager::open(&path)?;
    ensure(exact(&m)? == 1000 + 1023, "the list and the tree, nothing else")?;
    // Walk the list and drop its odd nodes; cut the tree's left half.
    let mut node = m.root("list")?.ok_or("list root")?;
    let mut values = Vec::new();
    loop {
        values.push(value(&node));
        let Some(next) = node.link(0)? else { break };
        node.set_link(0, next.link(0)?.as_ref())?;
        values.push(value(&next));
        drop(next);
        match node.link(0)? {
            Some(n) => node = n,
            None => break,
        }
    }
    ensure(values == (0..1000).collect::<Vec<_>>(), "the list, in order")?;
    drop(node);
    m.root("tree")?.ok_or("tree root")?.set_link(0, None)?;
    ensure(exact(&m)? == 500 + 512, "odd nodes and the left subtree freed")?;
    drop(m);
    wait_ok(spawn("walk", &path, &[]), "the walker")?;
    let m = MappedManager::open(&path)?;
    m.remove_root("list")?;
    m.remove_root("tree")?;
    ensure(exact(&m)? == 0, "everything freed")?;
    Ok(())
}

fn damaged() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("d.mmheap");
    let m = MappedManager::create(&path, &Options::default())?;
    let parent = m.allocate_linked(1, 8)?;
    parent.set_link(0, Some(&m.allocate(100)?))?;
    m.set_root("p", &parent)?;
    let cell = parent.offset().get() + 8; // link 0: after the 8 user bytes (no padding)
    drop(parent);
    m.flush()?;
    drop(m);
    let mut bytes = std::fs::read(&path)?;
    bytes[cell as usize] ^= 0x40;
    std::fs::write(&path, &bytes)?;
    let m = MappedManager::open(&path)?;
    let report = m.check()?;
    ensure(report.problems.iter().any(|p| p.what.contains("link")), format!("{:?}", report.problems))?;
    ensure(matches!(m.recover(), Err(Error::Corrupt { .. })), "recovery refuses the damage")?;
    let p = m.root("p")?.ok_or("root")?;
    ensure(matches!(p.link(0), Err(Error::Corrupt { .. })), "reading the link is an error")?;
    drop((p, m));
    // Salvage drops the damaged link (and the block only it held is freed).
    let report = MappedManager::salvage(&path)?;
    ensure(report.dropped.iter().any(|d| d.kind == "link"), format!("{report:?}"))?;
    let m = MappedManager::open(&path)?;
    ensure(exact(&m)? == 1, "the rooted block, nothing else")?;
    ensure(m.root("p")?.ok_or("root")?.link(0)?.is_none(), "the link is empty")?;
    // A footer that does not fit: recovery refuses, salvage keeps the block without its links.
    let parent = m.root("p")?.ok_or("root")?;
    parent.set_link(0, Some(&m.allocate(100)?))?;
    let footer = parent.offset().get() + 8 + 8 + 8;
    drop(parent);
    m.flush()?;
    drop(m);
    let mut bytes = std::fs::read(&path)?;
    bytes[footer as usize + 5] = 0xff;
    std::fs::write(&path, &bytes)?;
    ensure(matches!(MappedManager::recover_file(&path), Err(Error::Corrupt { .. })), "refused")?;
    ensure(std::fs::read(&path)? == bytes, "and left as it was")?;
    MappedManager::salvage(&path)?;
    let m = MappedManager::open(&path)?;
    ensure(exact(&m)? == 1, "the block kept, the child it alone held freed")?;
    ensure(m.root("p")?.ok_or("root")?.link_count() == 0, "no links any more")?;
    Ok(())
}

/// Kill points: a child playing `role` is killed at `point`.
const KILLS: [(&str, &str); 11] = [
    ("making", "linked-made"),
    ("setting", "link-counted"),
    ("setting", "link-written"),
    ("replacing", "link-counted"),
    ("replacing", "link-written"),
    ("replacing", "link-releasing"),
    ("replacing", "link-released"),
    ("clearing", "link-releasing"),
    ("clearing", "link-released"),
    ("taking", "link-taken"),
    ("unrooting", "link-releasing"),
];

/// The store the kill children change: root "list" -> A (2 links) -> B (1 link) -> C, root
/// "spare" -> D.
fn kill_store(path: &Path) -> Result<(), Failed> {
    let m = MappedManager::create(path, &Options::default())?;
    let a = valued(&m, 2, 8, 1)?;
    let b = valued(&m, 1, 8, 2)?;
    b.set_link(0, Some(&valued(&m, 0, 300, 3)?))?;
    a.set_link(0, Some(&b))?;
    m.set_root("list", &a)?;
    m.set_root("spare", &valued(&m, 0, 50, 4)?)?;
    Ok(())
}

fn killed(role: &str, point: &str) -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("k.mmheap");
    kill_store(&path)?;
    kill(paused(role, &path, point, &[])?)?;
    let m = MappedManager::open(&path)?;
    let reached = exact(&m)?;
    // Before the step and after it are the only states there may be.
    let (before, after) = match role {
        "making" => (4, 4),
        "setting" => (4, 5),
        "replacing" | "clearing" | "taking" => (4, 2),
        _ => (4, 1),
    };
    ensure(reached == before || reached == after, format!("{reached} blocks, not {before} or {after}"))?;
    // (Unrooting removes the root before it frees what it named.)
    if let Some(a) = m.root("list")? {
        ensure(value(&a) == 1, "the root block's bytes are intact")?;
        if let Some(b) = a.link(0)? {
            ensure([2, 4].contains(&value(&b)), "link 0 names B, or the spare after a replace")?;
        }
    }
    Ok(())
}

fn child(role: &str, path: &Path) -> Res {
    let m = MappedManager::open(path)?;
    match role {
        "build" => {
            m.set_root("list", &list(&m, 1000)?)?;
            m.set_root("tree", &tree(&m, 10, 0)?)?;
        }
        "walk" => {
            let mut values = Vec::new();
            let mut node = m.root("list")?;
            while let Some(n) = node {
                values.push(value(&n));
                node = n.link(0)?;
            }
            if values != (0..1000).step_by(2).collect::<Vec<_>>() {
                return Err(format!("the list is {values:?}").into());
            }
            let mut keys = Vec::new();
            in_order(&m.root("tree")?.ok_or("tree")?, &mut keys)?;
            if keys != (511..1023).collect::<Vec<_>>() {
                return Err(format!("the tree holds {keys:?}").into());
            }
        }
        "making" => drop(m.allocate_linked(4, 100)?),
        "setting" => m.root("list")?.ok_or("list")?.set_link(1, Some(&m.allocate(70)?))?,
        "replacing" => {
            let spare = m.root("spare")?.ok_or("spare")?;
            m.root("list")?.ok_or("list")?.set_link(0, Some(&spare))?
        }
        "clearing" => m.root("list")?.ok_or("list")?.set_link(0, None)?,
        "taking" => drop(m.root("list")?.ok_or("list")?.take_link(0)?),
        "unrooting" => drop(m.remove_root("list")?),
        _ => return Err(format!("no role {role}").into()),
    }
    Ok(())
}
