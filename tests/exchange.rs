//! The exchange between processes' thread caches (`src/engine/cache/exchange.rs`): what one process
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
            Trial::test("damaged_blocks_on_a_stack_are_refused", damaged_blocks),
            Trial::test("a_stack_word_naming_this_process_by_damage_is_repaired", own_tag),
            Trial::test("a_dead_holder_beside_a_stopped_one_loses_no_stack", dead_beside_stopped),
            Trial::test("damaged_totals_make_up_nothing_and_stop_nothing", damaged_totals),
            Trial::test("a_stack_held_in_one_store_hides_no_damage_in_another", two_stores),
        ]
    });
}

/// Bytes of the blocks the tests move: a class the exchange covers.
const LEN: usize = 200;
/// Blocks a giver releases: enough for its stack to spill several times.
const BLOCKS: usize = 300;

/// The block size a child moves: `MMHEAP_LEN`, else [`LEN`].
fn len() -> usize {
    env_u64("MMHEAP_LEN", LEN as u64) as usize
}

fn child(role: &str, store: &Path) -> Res {
    let m = MappedManager::open(store)?;
    match role {
        // Allocates and releases BLOCKS blocks (its cache spills to the exchange), then prints
        // their offsets and "given", and stays until told.
        "giver" => {
            let blocks: Vec<_> = (0..BLOCKS).map(|_| m.allocate(len())).collect::<Result<_, _>>()?;
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
        // stamps each whole with its own id, and says "took" if no block overlapped another.
        "taker" => {
            let mut kept = Vec::new();
            for id in 0..BLOCKS as u64 {
                let mut b = m.allocate(len())?;
                stamp(&mut b, id, 0)?;
                kept.push(b);
            }
            for (id, b) in kept.iter().enumerate() {
                verify(b, id as u64, b.len())?;
            }
            println!("took");
            Ok(())
        }
        // With `store` and a second store (`MMHEAP_OTHER`) open: a thread gives to the other
        // store's exchange and pauses there, holding a stack ("exchange-giving"); once told,
        // recovers `store` and prints how many blocks it keeps cached after a trim.
        "two-stores" => {
            let other = MappedManager::open(std::env::var("MMHEAP_OTHER")?)?;
            let other2 = other.clone();
            std::thread::spawn(move || {
                let blocks: Vec<_> = (0..BLOCKS).filter_map(|_| other2.allocate(LEN).ok()).collect();
                drop(blocks); // pauses in here, holding a stack of `other`
            });
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            m.recover()?;
            m.trim()?;
            println!("cached {}", m.stats()?.cached_blocks);
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

/// [`settled`] after a recovery and a trim of this thread's cache.
fn recovered(m: &MappedManager, live: u64, what: &str) -> Result<(), Failed> {
    m.recover()?;
    m.trim()?;
    settled(m, live, what)
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
    recovered(&m, live, "after the holder died")
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

/// Runs a taker to its end: it allocates, stamps and verifies [`BLOCKS`] blocks.
fn take(path: &Path) -> Result<(), Failed> {
    let mut taker = spawn("taker", path, &[]);
    let said = lines_of(&mut taker)?.recv_timeout(Duration::from_secs(30))?;
    ensure(said == "took", format!("taker said {said:?}"))?;
    wait_ok(taker, "taker")
}

/// The classes whose stacks hold blocks, with their words, read from the file.
fn stacks(path: &Path) -> Result<Vec<(u64, u64)>, Failed> {
    let bytes = std::fs::read(path)?;
    let word = |c: u64| {
        let at = (EXCHANGE_OFFSET + 8 * c) as usize;
        u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
    };
    Ok((1..EXCHANGE_CLASSES).map(|c| (c, word(c))).filter(|&(_, w)| w != 0).collect())
}

fn write_u64(path: &Path, at: u64, v: u64) -> Result<(), Failed> {
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    std::os::unix::fs::FileExt::write_all_at(&file, &v.to_le_bytes(), at)?;
    Ok(())
}

/// A block on a stack whose header a flipped bit made larger (it would overlap its neighbour),
/// and a "header" that user bytes make up inside a rooted block, are refused: a taker gets
/// neither, and the rooted bytes stay.
fn damaged_blocks() -> Result<(), Failed> {
    let (_d, path, m) = store()?;
    give(&path)?;
    let found = stacks(&path)?;
    ensure(found.len() == 1, format!("stacks: {found:?}"))?;
    let top = found[0].1 & ((1 << EXCHANGE_HOLDER_SHIFT) - 1);
    let tag = u64::from_le_bytes(std::fs::read(&path)?[top as usize..top as usize + 8].try_into()?);
    write_u64(&path, top + HDR_TAG, tag + 0x40)?;
    ensure(m.check().map_or(true, |r| !r.is_sound()), "check reports the grown block")?;
    take(&path)?;
    // (The heap's tiling is damaged now: the rest goes on in a store of its own.)
    drop(m);
    let (_d, path, m) = store()?;
    // A rooted block whose bytes read as a header on the exchange (tag: used, 256 bytes; word:
    // the exchange's; no next), which every stack names.
    let mut kept = m.allocate(4000)?;
    let bytes = kept.as_mut_slice()?;
    bytes.fill(0x5A);
    bytes[64..72].copy_from_slice(&256u64.to_le_bytes());
    bytes[80..88].copy_from_slice(&(EXCHANGE_OWNER << 52).to_le_bytes());
    bytes[96..104].copy_from_slice(&0u64.to_le_bytes());
    let before = bytes.to_vec();
    m.set_root("kept", &kept)?;
    let fake = kept.offset().get() + 64;
    drop(kept);
    for c in 1..EXCHANGE_CLASSES {
        write_u64(&path, EXCHANGE_OFFSET + 8 * c, fake)?;
    }
    let report = m.check()?;
    let named = report.problems.iter().filter(|p| p.what.contains("exchange")).count();
    ensure(named as u64 == EXCHANGE_CLASSES - 1, format!("{named} stacks reported: {:?}", report.problems))?;
    take(&path)?;
    let root = m.root("kept")?.ok_or("root gone")?;
    ensure(root.as_slice() == &before[..], "the rooted block was handed out")?;
    drop(root);
    m.recover()?;
    let report = m.check()?;
    ensure(report.is_sound(), format!("after recover: {:?}", report.problems))
}

/// A stack word that names this process as its holder while no thread of it holds one (a
/// flipped bit, or a process that had its registry slot) is reported, and recovery takes the
/// stack over and frees its blocks.
fn own_tag() -> Result<(), Failed> {
    let (_d, path, m) = store()?;
    let live = m.stats()?.live_blocks;
    give(&path)?;
    let (c, w) = stacks(&path)?[0];
    // The store's creator has registry slot 0: tag 1.
    write_u64(&path, EXCHANGE_OFFSET + 8 * c, w | 1 << EXCHANGE_HOLDER_SHIFT)?;
    let report = m.check()?;
    ensure(
        report.problems.iter().any(|p| p.what.contains("held by no process")),
        format!("problems: {:?}", report.problems),
    )?;
    recovered(&m, live, "recovered")
}

/// A process stopped holding one stack while another dies holding another: recovery leaves the
/// first as it is, and the second keeps every block that was on it but those the dead process
/// had taken (they go with its other blocks), so later refills find them.
fn dead_beside_stopped() -> Result<(), Failed> {
    let (_d, path, m) = store()?;
    let live = m.stats()?.live_blocks;
    let released = give(&path)?;
    let stopped = paused("giver", &path, "exchange-giving", &[("MMHEAP_LEN", "1000".into())])?;
    kill(paused("taker", &path, "exchange-taking", &[])?)?;
    let m2 = m.clone();
    returns("a recovery beside a held stack", Duration::from_secs(60), move || m2.recover())??;
    ensure(m.check()?.is_sound(), "sound beside the stopped holder")?;
    let mine: Vec<_> = (0..16).map(|_| m.allocate(LEN)).collect::<Result<_, _>>()?;
    let from_stack = mine.iter().filter(|b| released.contains(&b.offset().get())).count();
    ensure(
        from_stack == mine.len(),
        format!("{from_stack} of {} came from the dead holder's stack", mine.len()),
    )?;
    drop(mine);
    kill(stopped)?;
    recovered(&m, live, "after the stopped holder died")
}

/// The superblock's totals of the exchange are a report: damaged, they make `stats` count no
/// more cached blocks than the heap has, and a take that finds them too small leaves them at
/// zero, not wrapped to a total that would refuse every later give.
fn damaged_totals() -> Result<(), Failed> {
    let (_d, path, m) = store()?;
    give(&path)?;
    write_u64(&path, SB_EXCHANGE_BLOCKS, u64::MAX)?;
    write_u64(&path, SB_EXCHANGE_BYTES, 0)?;
    let s = m.stats()?;
    ensure(s.cached_blocks < BLOCKS as u64, format!("{} cached blocks", s.cached_blocks))?;
    ensure(s.cached_bytes <= s.heap_bytes, format!("{} cached bytes", s.cached_bytes))?;
    let taken: Vec<_> = (0..32).map(|_| m.allocate(LEN)).collect::<Result<_, _>>()?;
    drop(taken);
    let bytes = |path: &Path| -> Result<u64, Failed> {
        let b = std::fs::read(path)?;
        Ok(u64::from_le_bytes(b[SB_EXCHANGE_BYTES as usize..][..8].try_into()?))
    };
    ensure(bytes(&path)? == 0, format!("bytes on the exchange after the take: {}", bytes(&path)?))?;
    // Enough releases for this thread's stack to spill: the exchange takes them.
    let more: Vec<_> = (0..BLOCKS).map(|_| m.allocate(LEN)).collect::<Result<_, _>>()?;
    drop(more);
    ensure(bytes(&path)? > 0, "a give after the damage")?;
    m.recover()?;
    ensure(m.check()?.is_sound(), "sound")
}

/// A process that holds a stack of one store's exchange (a thread of it stopped in a give)
/// takes a stack word of another store that names it, by damage, for what it is: recovery
/// there takes the stack over and frees its blocks.
fn two_stores() -> Result<(), Failed> {
    let (_d, path, _m) = store()?;
    let (_d2, other, _m2) = store()?;
    give(&path)?;
    let env =
        [("MMHEAP_TEST_PAUSE", "exchange-giving".to_string()), ("MMHEAP_OTHER", other.display().to_string())];
    let mut kid = spawn("two-stores", &path, &env);
    let lines = lines_of(&mut kid)?;
    let paused = lines.recv_timeout(Duration::from_secs(30))?;
    ensure(paused == "paused exchange-giving", format!("the child said {paused:?}"))?;
    // The child's tag in `path`'s store: its registry slot + 1, found by its pid.
    let pid = kid.get().id();
    let bytes = std::fs::read(&path)?;
    let slot = (0..SLOT_COUNT)
        .find(|&i| {
            let at = (slot_offset(i) + SLOT_PID) as usize;
            u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) == pid
        })
        .ok_or("the child's registry slot")?;
    let (c, w) = stacks(&path)?[0];
    write_u64(&path, EXCHANGE_OFFSET + 8 * c, w | (slot + 1) << EXCHANGE_HOLDER_SHIFT)?;
    writeln!(kid.get().stdin.as_mut().ok_or("stdin")?)?;
    let said = lines.recv_timeout(Duration::from_secs(30))?;
    kill(kid)?;
    ensure(said.trim() == "cached 0", format!("the child said {said:?}"))
}
