//! Weak references (`WeakBlock`, and weak links: handles kept in a block's bytes): they keep
//! nothing alive, give a new reference only while the block lives, and never take a reused
//! place for the block they named, in both managers and across processes.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use libtest_mimic::{Failed, Trial};
use mmheap::{BlockHandle, DefaultManager, MappedManager, MemoryManager, Options};

fn main() {
    child_or_tests(child, || {
        let mut trials = Vec::new();
        for (name, make) in managers() {
            let per_manager: [(&str, Test); 4] = [
                ("a_weak_reference_upgrades_while_the_block_lives", |make| while_alive(make()?.as_ref())),
                ("a_reused_place_is_not_the_block_it_named", |make| reused_place(make()?.as_ref())),
                ("a_freed_small_block_s_emptied_span_is_no_error", |make| emptied_span(make()?.as_ref())),
                ("a_link_into_another_heap_is_not_its_block", |make| {
                    other_heap(make()?.as_ref(), make()?.as_ref())
                }),
            ];
            for (test, run) in per_manager {
                trials.push(Trial::test(format!("{name}::{test}"), move || run(make)));
            }
        }
        trials.push(Trial::test("store::a_weak_reference_from_a_resolved_handle_upgrades", from_a_hold));
        trials
            .push(Trial::test("store::weak_links_resolve_in_another_process_while_the_block_lives", across));
        trials.push(Trial::test(
            "default::a_weak_reference_made_after_the_manager_is_gone_upgrades_to_nothing",
            orphan,
        ));
        trials
    });
}

fn while_alive(m: &dyn MemoryManager) -> Result<(), Failed> {
    let live = m.stats()?.live_blocks;
    let mut block = m.allocate(100)?;
    block.as_mut_slice()?.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
    let weak = block.downgrade();
    ensure(block.is_published(), "a downgraded block is published (read-only from now on)")?;
    ensure(block.as_mut_slice().is_err(), "no writable view once a weak reference exists")?;
    let again = weak.upgrade().ok_or("no upgrade while the block lives")?;
    ensure(again.offset() == block.offset() && again.as_slice() == block.as_slice(), "the same block")?;
    ensure(weak.clone().upgrade().is_some(), "a clone upgrades too")?;
    drop(again);
    drop(block);
    ensure(m.stats()?.live_blocks == live, "the weak reference keeps nothing alive")?;
    ensure(weak.upgrade().is_none(), "no upgrade once the block is freed")?;
    ensure(weak.try_upgrade()?.is_none(), "freed is not an error")?;
    ensure(m.upgrade(weak.handle())?.is_none(), "nor as a weak link")
}

fn reused_place(m: &dyn MemoryManager) -> Result<(), Failed> {
    let block = m.allocate(200)?;
    let place = block.offset();
    let weak = block.downgrade();
    drop(block);
    // Blocks of the same size until one takes the freed place.
    let mut kept = Vec::new();
    let taker = loop {
        let b = m.allocate(200)?;
        if b.offset() == place {
            break b;
        }
        ensure(kept.len() < 100_000, "the freed place was never reused")?;
        kept.push(b);
    };
    let _published = taker.handle(); // a generation of its own
    ensure(weak.upgrade().is_none(), "a reused place is not the block the weak reference named")?;
    ensure(m.upgrade(weak.handle())?.is_none(), "nor is it as a weak link")?;
    Ok(())
}

fn from_a_hold() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let m = MappedManager::create(dir.path().join("w.mmheap"), &Options::default())?;
    let block = m.allocate(64)?;
    let handle = block.handle();
    // A reference resolved from a handle is an other hold, not the owner's.
    let held = m.block_from_handle(handle)?;
    let weak = held.downgrade();
    ensure(weak.handle() == handle, "the same handle")?;
    drop(held);
    ensure(weak.upgrade().is_some(), "the owner's reference keeps the block")?;
    drop(block);
    ensure(weak.upgrade().is_none(), "gone with the last reference")?;
    ensure(m.check()?.is_sound(), "sound")
}

/// Store layout of the test: root "links" names a block whose bytes are one weak link.
fn across() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("w.mmheap");
    let m = MappedManager::create(&path, &Options::default())?;
    let mut target = m.allocate(32)?;
    target.as_mut_slice()?.copy_from_slice(b"the block a weak link names....!");
    let link = target.downgrade().handle();
    let mut links = m.allocate(std::mem::size_of::<BlockHandle>())?;
    links.as_mut_slice()?.copy_from_slice(bytemuck::bytes_of(&link));
    m.set_root("links", &links)?;
    drop(links);
    ensure(upgrader(&path)? == "the block a weak link names....!", "upgraded in another process")?;
    drop(target);
    ensure(upgrader(&path)? == "gone", "freed: the weak link gives nothing")?;
    ensure(m.check()?.is_sound(), "sound")
}

/// Runs a child that resolves the weak link and says what it found.
fn upgrader(path: &Path) -> Result<String, Failed> {
    let mut kid = spawn("upgrader", path, &[]);
    let said = lines_of(&mut kid)?.recv_timeout(Duration::from_secs(30))?;
    wait_ok(kid, "upgrader")?;
    Ok(said)
}

fn child(role: &str, store: &Path) -> Res {
    let m = MappedManager::open(store)?;
    match role {
        "upgrader" => {
            let links = m.root("links")?.ok_or("no root")?;
            let link: BlockHandle = bytemuck::pod_read_unaligned(links.as_slice());
            match m.upgrade(link)? {
                Some(b) => println!("{}", String::from_utf8_lossy(b.as_slice())),
                None => println!("gone"),
            }
            Ok(())
        }
        other => Err(format!("no role {other}").into()),
    }
}

fn orphan() -> Result<(), Failed> {
    let m = DefaultManager::new()?;
    let block = m.allocate(16)?;
    drop(m);
    // The block keeps its heap, but nothing can be resolved in a heap no manager uses.
    let weak = block.downgrade();
    ensure(weak.upgrade().is_none(), "no manager, no new reference")?;
    ensure(block.as_slice().len() == 16, "the block itself lives on")
}

/// Found by an outside review: a small block's weak link, once the span the block was in had
/// been emptied and given back, was refused as an invalid handle instead of being `None`.
fn emptied_span(m: &dyn MemoryManager) -> Result<(), Failed> {
    for len in [16, 48, 64] {
        let blocks: Vec<_> = (0..5000).map(|_| m.allocate(len)).collect::<Result<_, _>>()?;
        let weak = blocks[0].downgrade();
        drop(blocks);
        m.trim()?;
        ensure(weak.try_upgrade()?.is_none(), format!("{len} B: freed, its span gone: None"))?;
        ensure(m.upgrade(weak.handle())?.is_none(), format!("{len} B: as a weak link too"))?;
    }
    Ok(())
}

/// Found by an outside review: a link made in one heap, resolved in another whose blocks lay
/// the same way, gave that heap's block. Every heap draws its generations from its own range.
fn other_heap(a: &dyn MemoryManager, b: &dyn MemoryManager) -> Result<(), Failed> {
    for len in [16, 64, 100, 5000] {
        let mut x = a.allocate(len)?;
        x.as_mut_slice()?.fill(0xAA);
        let mut y = b.allocate(len)?;
        y.as_mut_slice()?.fill(0xBB);
        let _published = y.downgrade(); // generations issued in both heaps
        let link = x.downgrade().handle();
        let got = b.upgrade(link).unwrap_or(None);
        ensure(got.is_none(), format!("{len} B: a link into another heap gave one of its blocks"))?;
    }
    Ok(())
}
