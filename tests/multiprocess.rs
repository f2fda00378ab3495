//! Tests with real processes. This binary is its own child: when `MMHEAP_CHILD_ROLE` is set it
//! plays that role (see `child`) instead of running tests, so the tests spawn
//! `current_exe()` and talk to it through pipes and the store itself.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;

mod common;

use common::*;
use libtest_mimic::{Failed, Trial};
use mmheap::{Error, MappedManager, MemoryBlock, MemoryManager, Options};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn main() {
    child_or_tests(child, || {
        vec![
            Trial::test("four_children_churn_one_store", four_children_churn_one_store),
            Trial::test("roots_persist_across_processes", roots_persist_across_processes),
            Trial::test("roots_taken_by_a_killed_process_are_given_back", roots_of_a_killed_process),
            Trial::test("growth_keeps_another_process_blocks_in_place", growth_keeps_blocks_in_place),
            Trial::test("handle_through_a_pipe_resolves_and_stale_is_refused", handle_through_pipe),
            Trial::test(
                "cached_blocks_of_a_living_process_are_free_and_of_a_dead_one_reclaimed",
                cached_blocks,
            ),
        ]
    });
}

// ---- children ---------------------------------------------------------------------------

fn child(role: &str, store: &Path) -> Res {
    match role {
        "churn" => churn(store, env_u64("MMHEAP_SEED", 0), env_u64("MMHEAP_OPS", 0)),
        "write-roots" => {
            let m = MappedManager::create(store, &Options::new().initial_size(64 << 10))?;
            for i in 0..ROOTS {
                let mut b = m.allocate(root_content(i).len())?;
                b.as_mut_slice()?.copy_from_slice(&root_content(i));
                m.set_root(&format!("root-{i}"), &b)?;
            }
            m.flush()?;
            Ok(())
        }
        "grow" => grow(store),
        // Takes every root (the second twice), then waits to be killed.
        "hold-roots" => {
            let m = MappedManager::open(store)?;
            let mut held = Vec::new();
            for i in 0..ROOTS {
                held.push(m.root(&format!("root-{i}"))?.ok_or("root missing")?);
            }
            held.push(held[1].clone());
            println!("ready {}", held[1].ref_count());
            std::io::stdout().flush()?;
            std::thread::sleep(std::time::Duration::from_secs(60));
            drop(held);
            Ok(())
        }
        // Leaves blocks parked in its thread cache (allocated and dropped) and keeps 10 live
        // ones, then waits to be killed.
        "park" => {
            let m = MappedManager::open(store)?;
            let mut keep = Vec::new();
            for i in 0..3000usize {
                let b = m.allocate(16 + i % 500)?;
                if i % 300 == 0 {
                    keep.push(b);
                }
            }
            println!("ready");
            std::io::stdout().flush()?;
            std::thread::sleep(std::time::Duration::from_secs(60));
            drop(keep);
            Ok(())
        }
        "resolve" => {
            let m = MappedManager::open(store)?;
            for line in std::io::stdin().lock().lines() {
                let h = parse_handle(&line?)?;
                match m.block_from_handle(h) {
                    Ok(b) => println!("ok {}", hex(b.as_slice())),
                    Err(Error::StaleHandle { .. }) => println!("err stale"),
                    Err(e) => println!("err {e}"),
                }
            }
            Ok(())
        }
        _ => Err(format!("unknown role {role}").into()),
    }
}

fn churn(store: &Path, seed: u64, ops: u64) -> Res {
    let m = MappedManager::open(store)?;
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut live: Vec<(MemoryBlock, u64)> = Vec::new();
    let mut next_id = seed << 40;
    for _ in 0..ops {
        let roll = rng.gen_range(0..10);
        if (roll < 5 || live.is_empty()) && live.len() < 2000 {
            let len = if rng.gen_bool(0.95) { rng.gen_range(0..1024) } else { rng.gen_range(0..65536) };
            let mut b = m.allocate(len)?;
            next_id += 1;
            stamp(&mut b, next_id, 0)?;
            live.push((b, next_id));
        } else if roll < 8 {
            let (b, id) = live.swap_remove(rng.gen_range(0..live.len()));
            verify(&b, id, b.len())?;
        } else {
            let k = rng.gen_range(0..live.len());
            let (b, id) = &mut live[k];
            let (old, new) = (b.len(), rng.gen_range(0..4096));
            verify(b, *id, old)?;
            m.resize(b, new)?;
            verify(b, *id, old.min(new))?;
            stamp(b, *id, old.min(new))?;
        }
    }
    for (b, id) in &live {
        verify(b, *id, b.len())?;
    }
    Ok(())
}

fn grow(store: &Path) -> Res {
    let m = MappedManager::open(store)?;
    let mut mine = Vec::new();
    while m.stats()?.capacity <= 300 << 20 {
        let mut b = m.allocate(1 << 20)?;
        stamp(&mut b, 1000 + mine.len() as u64, 0)?;
        mine.push(b);
    }
    for b in mine.iter().step_by(50) {
        println!("{}", format_handle(b.handle()));
    }
    println!("ready");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(())
}

// ---- helpers ----------------------------------------------------------------------------

const ROOTS: usize = 20;

fn root_content(i: usize) -> Vec<u8> {
    // Every fifth a few KiB: a block of a cache class whose excess the tag's slack cannot say,
    // which setting the root gives back (the length the reader gets comes from the tag).
    let extra = if i % 5 == 4 { 4_000 } else { 0 };
    (0..100 + i * 37 + extra).map(|k| (k * 31 + i) as u8).collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---- tests ------------------------------------------------------------------------------

fn four_children_churn_one_store() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("churn.mmheap");
    let m = MappedManager::create(&path, &Options::new().max_size(1 << 30))?;
    let ops = std::env::var("MMHEAP_CHURN_OPS").unwrap_or_else(|_| "100000".into());
    let children: Vec<_> = (1..=4)
        .map(|seed| spawn("churn", &path, &[("MMHEAP_SEED", seed.to_string()), ("MMHEAP_OPS", ops.clone())]))
        .collect();
    for c in children {
        wait_ok(c, "churn child")?;
    }
    let report = m.check()?;
    ensure(report.is_sound(), format!("check found {:?}", report.problems))?;
    let s = m.stats()?;
    ensure(s.live_blocks == 0, format!("{} blocks leaked", s.live_blocks))?;
    ensure(s.attached_processes == 1, format!("{} attached", s.attached_processes))
}

fn roots_persist_across_processes() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("persist.mmheap");
    wait_ok(spawn("write-roots", &path, &[]), "writer")?;
    let m = MappedManager::open(&path)?;
    ensure(m.roots()?.len() == ROOTS, "all roots listed")?;
    for i in 0..ROOTS {
        let b = m.root(&format!("root-{i}"))?.ok_or("root missing")?;
        ensure(b.as_slice() == root_content(i), format!("root-{i} differs"))?;
    }
    ensure(m.check()?.is_sound(), "sound after reopen")
}

/// A root lookup makes the block the looking process's own reference when no process owns it
/// (no hold to record), or a hold when another does: either way a process killed while holding
/// roots gives every reference back at recovery, and nothing else.
fn roots_of_a_killed_process() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("roots.mmheap");
    wait_ok(spawn("write-roots", &path, &[]), "writer")?;
    let m = MappedManager::open(&path)?;
    let mine = m.root("root-0")?.ok_or("root-0")?; // this process owns root-0's references now
    let mut kid = spawn("hold-roots", &path, &[]);
    let line = lines_of(&mut kid)?.recv_timeout(std::time::Duration::from_secs(60))?;
    ensure(line == "ready 3", format!("child said {line:?}"))?;
    ensure(mine.ref_count() == 3, format!("root, this process, the child: {}", mine.ref_count()))?;
    kill(kid)?;
    let report = m.recover()?;
    ensure(report.dead_processes == 1, format!("{report:?}"))?;
    ensure(mine.ref_count() == 2, format!("the root and this process: {}", mine.ref_count()))?;
    for i in 1..ROOTS {
        let b = m.root(&format!("root-{i}"))?.ok_or("root missing")?;
        ensure(b.ref_count() == 2, format!("root-{i}: the root and this lookup: {}", b.ref_count()))?;
        ensure(b.as_slice() == root_content(i), format!("root-{i} differs"))?;
    }
    ensure(m.check()?.is_sound(), "sound after the recovery")?;
    drop((mine, m));
    let m = MappedManager::open(&path)?;
    ensure(
        m.stats()?.live_blocks == ROOTS as u64,
        format!("{} live, only the roots' blocks", m.stats()?.live_blocks),
    )?;
    ensure(m.check()?.is_sound(), "sound after reopen")
}

fn growth_keeps_blocks_in_place() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("grow.mmheap");
    let m = MappedManager::create(&path, &Options::new().initial_size(1 << 20).max_size(1 << 30))?;
    ensure(m.stats()?.capacity == 1 << 20, "starts at 1 MiB")?;
    let mut mine = Vec::new();
    for i in 0..30 {
        let mut b = m.allocate(10_000)?;
        stamp(&mut b, i, 0)?;
        mine.push(b);
    }
    let addrs: Vec<usize> = mine.iter().map(|b| b.as_slice().as_ptr() as usize).collect();
    let mut child = spawn("grow", &path, &[]);
    let mut out = BufReader::new(child.get().stdout.take().ok_or("stdout")?);
    let mut handles = Vec::new();
    loop {
        let mut line = String::new();
        ensure(out.read_line(&mut line)? > 0, "child ended early")?;
        if line.trim() == "ready" {
            break;
        }
        handles.push(parse_handle(line.trim()).map_err(|e| e.to_string())?);
    }
    ensure(m.stats()?.capacity > 256 << 20, "grew past 256 MiB")?;
    for (i, b) in mine.iter().enumerate() {
        ensure(b.as_slice().as_ptr() as usize == addrs[i], "block moved")?;
        verify(b, i as u64, b.len())?;
    }
    for (k, h) in handles.iter().enumerate() {
        let theirs = m.block_from_handle(*h)?;
        verify(&theirs, 1000 + 50 * k as u64, theirs.len())?;
    }
    let fresh = m.allocate(1 << 20)?;
    ensure(fresh.len() == 1 << 20, "allocates in the grown space")?;
    drop(fresh);
    writeln!(child.get().stdin.take().ok_or("stdin")?)?;
    wait_ok(child, "grow child")?;
    ensure(m.check()?.is_sound(), "sound after growth")
}

fn handle_through_pipe() -> Result<(), Failed> {
    let m = MappedManager::temporary(&Options::new())?;
    let mut b = m.allocate(12)?;
    b.as_mut_slice()?.copy_from_slice(b"across pipes");
    let good = b.handle();
    let mut doomed = m.allocate(8)?;
    doomed.as_mut_slice()?.copy_from_slice(b"old data");
    let stale = doomed.handle();
    drop(doomed);
    let reused = m.allocate(8)?;
    ensure(reused.handle().offset == stale.offset, "the freed block's place is reused")?;

    let mut child = spawn("resolve", m.path(), &[]);
    let mut stdin = child.get().stdin.take().ok_or("stdin")?;
    writeln!(stdin, "{} {}", good.offset, good.generation)?;
    writeln!(stdin, "{} {}", stale.offset, stale.generation)?;
    drop(stdin);
    let out = child.take().wait_with_output()?;
    let text = String::from_utf8(out.stdout)?;
    let lines: Vec<&str> = text.lines().collect();
    ensure(out.status.success(), format!("child failed: {}", out.status))?;
    ensure(lines == [format!("ok {}", hex(b"across pipes")).as_str(), "err stale"], format!("{lines:?}"))?;
    ensure(b.ref_count() == 1, "the child's reference was released when it exited")
}

/// Another process's thread cache: while it lives, its parked blocks count as free in our
/// stats (only its 10 live blocks are used); once it is killed, recovery frees its live and its
/// parked blocks, and the heap is back where it was.
fn cached_blocks() -> Result<(), Failed> {
    // The child's counter table lands where the parent's block ends: shifted a granule at a
    // time, its first cell takes each place modulo 64, one of them where a freed block's
    // free-list links go (recovery read the counters after freeing the table: 0 cached).
    for shift in 0..4 {
        cached_blocks_with(shift)?;
    }
    Ok(())
}

fn cached_blocks_with(shift: usize) -> Result<(), Failed> {
    let m = MappedManager::temporary(&Options::new())?;
    let _before = m.allocate(200_000 + shift * 16)?;
    let base = m.stats()?;
    let mut kid = spawn("park", m.path(), &[]);
    let lines = lines_of(&mut kid)?;
    ensure(lines.recv_timeout(std::time::Duration::from_secs(30))? == "ready", "child ready")?;
    let s = m.stats()?;
    ensure(s.live_blocks == base.live_blocks + 10, format!("live blocks while the child lives: {s:?}"))?;
    ensure(m.check()?.is_sound(), "check passes with another process's parked blocks")?;
    kill(kid)?;
    let report = m.recover()?;
    ensure(report.blocks_freed == 10, format!("its 10 live blocks: {report:?}"))?;
    // What the figures called cached while it lived, and its caches' counter table apart.
    let cached = s.cached_blocks - base.cached_blocks;
    ensure(
        cached > 10 && report.cached_blocks_freed == cached && report.bookkeeping_blocks_freed == 1,
        format!("shift {shift}: its {cached} parked blocks and its counter table: {report:?}"),
    )?;
    let s = m.stats()?;
    ensure(
        (s.live_blocks, s.used_bytes) == (base.live_blocks, base.used_bytes),
        format!("{s:?} vs {base:?}"),
    )?;
    ensure(m.check()?.is_sound(), "check passes after recovery")
}
