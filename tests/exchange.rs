//! The exchange between processes' thread caches (`src/cache/exchange.rs`): what one process
//! releases serves another's allocations without the store lock, and a process killed in the
//! middle of a give or a take, a process stopped there, or a damaged stack loses nothing and
//! hands out nothing in use.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::*;
use libtest_mimic::{Failed, Trial};
use mmheap::format::*;
use mmheap::{MappedManager, MemoryManager, Options};

fn main() {
    child_or_tests(child, || {
        vec![
            Trial::test("what_one_process_releases_serves_anothers_allocations", serves_another),
            Trial::test("killed_inside_a_give_or_a_take_leaves_nothing_behind", killed_inside),
            Trial::test("a_process_stopped_holding_a_stack_stops_nobody", stopped_holder),
            Trial::test("a_damaged_exchange_hands_out_nothing_in_use", damaged),
        ]
    });
}

/// Bytes of the blocks the tests move: a class the exchange covers.
const LEN: usize = 200;
/// Blocks a giver releases: enough for its stack to spill several times.
const BLOCKS: usize = 300;

fn child(role: &str, store: &Path) -> Res {
    let m = MappedManager::open(store)?;
    match role {
        // Allocates and releases BLOCKS blocks (its cache spills to the exchange), then prints
        // their offsets and "given", and stays until told.
        "giver" => {
            let blocks: Vec<_> = (0..BLOCKS).map(|_| m.allocate(LEN)).collect::<Result<_, _>>()?;
            let offsets: Vec<u64> = blocks.iter().map(|b| b.offset().get()).collect();
            drop(blocks); // "exchange-giving" pauses in here
            let mut out = std::io::stdout().lock();
            for off in offsets {
                writeln!(out, "off {off}")?;
            }
            writeln!(out, "given")?;
            out.flush()?;
            drop(out);
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            Ok(())
        }
        // Allocates blocks (its first refill takes from the exchange: "exchange-taking"),
        // writes them whole, and says "took".
        "taker" => {
            let mut kept = Vec::new();
            for _ in 0..BLOCKS {
                let mut b = m.allocate(LEN)?;
                b.as_mut_slice()?.fill(0xAA);
                kept.push(b);
            }
            println!("took");
            Ok(())
        }
        _ => Err(format!("unknown role {role}").into()),
    }
}

fn store() -> Result<(tempfile::TempDir, std::path::PathBuf, MappedManager), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("exchange.mmheap");
    let m = MappedManager::create(&path, &Options::new().initial_size(8 << 20).max_size(1 << 30))?;
    Ok((dir, path, m))
}

/// Runs a giver to its end (it exits; its exchange blocks stay, since we are attached) and
/// returns the offsets it released.
fn give(path: &Path) -> Result<HashSet<u64>, Failed> {
    let mut kid = spawn("giver", path, &[]);
    let lines = lines_of(&mut kid)?;
    let mut offsets = HashSet::new();
    loop {
        let line = lines.recv_timeout(Duration::from_secs(30))?;
        match line.strip_prefix("off ") {
            Some(off) => offsets.insert(off.parse::<u64>()?),
            None if line == "given" => break,
            None => return Err(format!("giver said {line:?}").into()),
        };
    }
    writeln!(kid.get().stdin.as_mut().ok_or("stdin")?)?;
    wait_ok(kid, "giver")?;
    Ok(offsets)
}

/// Everything back: sound, no live block beyond `live`, nothing cached anywhere (a recovery
/// frees the exchange's blocks with the dead process's).
fn settled(m: &MappedManager, live: u64, what: &str) -> Result<(), Failed> {
    let report = m.check()?;
    ensure(report.is_sound(), format!("{what}: {:?}", report.problems))?;
    let s = m.stats()?;
    ensure(s.live_blocks == live, format!("{what}: {} live blocks, not {live}", s.live_blocks))?;
    ensure(s.cached_blocks == 0, format!("{what}: {} blocks still cached", s.cached_blocks))
}

fn serves_another() -> Result<(), Failed> {
    let (_d, path, m) = store()?;
    let live = m.stats()?.live_blocks;
    let released = give(&path)?;
    ensure(released.len() == BLOCKS, "distinct blocks")?;
    let s = m.stats()?;
    // The giver's cache gave its blocks back when it left: what is cached now waits on the
    // exchange, counted as cached, not live.
    ensure(s.cached_blocks >= 64, format!("{} blocks on the exchange", s.cached_blocks))?;
    ensure(s.live_blocks == live, format!("{} live blocks", s.live_blocks))?;
    ensure(m.check()?.is_sound(), "a store with blocks on the exchange is sound")?;
    // The tool's view: the giver's blocks are parked, and owned by no process.
    let snap = mmheap::inspect::Snapshot::take(&path)?;
    let (blocks, err) = snap.blocks(|_| {});
    ensure(err.is_none(), format!("{err:?}"))?;
    // (What the giver's own cache kept went back to the heap when its thread exited: free.)
    let released_blocks = blocks.iter().filter(|b| released.contains(&(b.offset + HEADER_SIZE)));
    let on_exchange: Vec<_> =
        released_blocks.filter(|b| b.state != mmheap::inspect::BlockState::Free).collect();
    ensure(on_exchange.len() >= 64, format!("{} released blocks are not free", on_exchange.len()))?;
    for b in on_exchange {
        let parked = b.state == mmheap::inspect::BlockState::Parked && b.owner.is_none();
        ensure(parked, format!("a block on the exchange is dumped as {:?}, owner {:?}", b.state, b.owner))?;
    }
    let mine: Vec<_> = (0..32).map(|_| m.allocate(LEN)).collect::<Result<_, _>>()?;
    let from_giver = mine.iter().filter(|b| released.contains(&b.offset().get())).count();
    ensure(from_giver == mine.len(), format!("{from_giver} of {} blocks came from the giver", mine.len()))?;
    for mut b in mine {
        b.as_mut_slice()?.fill(7); // sole and writable, as any new block
    }
    // The last process to leave gives what waits on the exchange back to the heap.
    drop(m);
    let m = MappedManager::open(&path)?;
    settled(&m, live, "reopened")
}

fn killed_inside() -> Result<(), Failed> {
    let (_d, path, m) = store()?;
    let live = m.stats()?.live_blocks;
    let rounds = env_u64("MMHEAP_EXCHANGE_KILLS", 6);
    for k in 0..rounds {
        let point = ["exchange-giving", "exchange-taking"][k as usize % 2];
        if point == "exchange-taking" {
            give(&path)?;
        }
        let role = if point == "exchange-giving" { "giver" } else { "taker" };
        kill(paused(role, &path, point, &[])?)?;
        m.recover()?;
        settled(&m, live, point)?;
        // And the store serves as before.
        let b = m.allocate(LEN)?;
        drop(b);
        m.trim()?;
    }
    println!("killed {rounds} times inside a give or a take; nothing leaked");
    Ok(())
}

fn stopped_holder() -> Result<(), Failed> {
    let (_d, path, m) = store()?;
    let live = m.stats()?.live_blocks;
    // Paused inside a give: alive, holding a stack, half its blocks tagged for the exchange.
    let kid = paused("giver", &path, "exchange-giving", &[])?;
    let m2 = m.clone();
    returns("allocations beside a held stack", Duration::from_secs(60), move || -> mmheap::Result<()> {
        for _ in 0..4 {
            let blocks: Vec<_> = (0..BLOCKS).map(|_| m2.allocate(LEN)).collect::<Result<_, _>>()?;
            drop(blocks);
        }
        Ok(())
    })??;
    let m2 = m.clone();
    returns("a recovery beside a held stack", Duration::from_secs(60), move || m2.recover())??;
    let report = m.check()?;
    ensure(report.is_sound(), format!("beside a held stack: {:?}", report.problems))?;
    kill(kid)?;
    m.recover()?;
    m.trim()?;
    settled(&m, live, "after the holder died")
}

fn damaged() -> Result<(), Failed> {
    let (_d, path, m) = store()?;
    let mut kept = m.allocate(LEN)?;
    kept.as_mut_slice()?.fill(0x5A);
    m.set_root("kept", &kept)?;
    let header = kept.offset().get() - HEADER_SIZE;
    drop(kept);
    // Every stack names the rooted block, as a flipped bit or a hostile peer could.
    let file = std::fs::OpenOptions::new().write(true).open(&path)?;
    for c in 1..EXCHANGE_CLASSES {
        std::os::unix::fs::FileExt::write_all_at(&file, &header.to_le_bytes(), EXCHANGE_OFFSET + 8 * c)?;
    }
    let report = m.check()?;
    ensure(!report.is_sound(), "check reports the damaged stacks")?;
    ensure(
        report.problems.iter().any(|p| p.what.contains("exchange")),
        format!("problems: {:?}", report.problems),
    )?;
    // A process whose refills look at the exchange writes every block it gets.
    let mut taker = spawn("taker", &path, &[]);
    let said = lines_of(&mut taker)?.recv_timeout(Duration::from_secs(30))?;
    ensure(said == "took", format!("taker said {said:?}"))?;
    wait_ok(taker, "taker")?;
    let root = m.root("kept")?.ok_or("root gone")?;
    ensure(root.as_slice().iter().all(|&b| b == 0x5A), "the rooted block was handed out")?;
    m.recover()?;
    let report = m.check()?;
    ensure(report.is_sound(), format!("after recover: {:?}", report.problems))
}
