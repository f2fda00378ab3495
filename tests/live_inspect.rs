//! The read-only commands on a store that another process is writing right now: `check` never
//! reports a problem that is not there, while damage planted in the live store is still found;
//! `stat`, `dump` and `roots` read the heap whole. This binary is its own child (the writer).
//!
//! `stat`, `dump` and `check` also tell a live process's blocks apart (live, parked, lent or
//! parked, bookkeeping, slots where they start) with figures that add up (this binary is then a
//! process that holds blocks).
//!
//! `MMHEAP_LIVE_RUNS` sets how many `check`s run against the writer (default 100).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use libtest_mimic::{Failed, Trial};
use mmheap::{MappedManager, MemoryBlock, MemoryManager, Options};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

const PLANTED: &[u8] = b"planted-root-for-the-live-check";

fn main() {
    child_or_tests(child, || {
        vec![
            Trial::test("read_only_commands_tell_the_truth_on_a_store_being_written", live_store_truth),
            Trial::test("an_inspector_killed_holding_the_store_lock_leaves_it_free", killed_inspector),
            Trial::test(
                "an_inspector_stopped_from_the_terminal_gives_the_lock_back_first",
                stopped_inspector,
            ),
            Trial::test("dump_and_stat_tell_live_parked_and_slots_apart", held_blocks_told_apart),
        ]
    });
}

/// The writer: two threads churn blocks (allocate, write, verify, clone, take a handle and
/// resolve it, resize, release) until standard input closes; "ready" once both have started.
fn child(role: &str, store: &Path) -> Res {
    if role == "holder" {
        return holder(store);
    }
    if role != "churn" {
        return Err(format!("unknown role {role}").into());
    }
    let m = MappedManager::open(store)?;
    let stop = AtomicBool::new(false);
    let started = std::sync::Barrier::new(3);
    std::thread::scope(|s| -> Res {
        let workers: Vec<_> = (0..2u64)
            .map(|t| {
                let (m, stop, started) = (&m, &stop, &started);
                s.spawn(move || -> Result<u64, String> {
                    started.wait();
                    churn(m, t, stop).map_err(|e| e.to_string())
                })
            })
            .collect();
        started.wait();
        println!("ready");
        std::io::stdout().flush()?;
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            let ops = w.join().map_err(|_| "a churn thread panicked")??;
            eprintln!("churn thread: {ops} operations");
        }
        Ok(())
    })
}

fn churn(m: &MappedManager, seed: u64, stop: &AtomicBool) -> Res<u64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    // (block, stamp id, whether it was ever shared: then it is read-only and never resized)
    let mut live: Vec<(MemoryBlock, u64, bool)> = Vec::new();
    let mut next_id = (seed + 1) << 40;
    let mut ops = 0;
    while !stop.load(Ordering::Relaxed) {
        ops += 1;
        let roll = rng.gen_range(0..20);
        if (roll < 9 || live.is_empty()) && live.len() < 3000 {
            let len = if rng.gen_bool(0.95) { rng.gen_range(0..1024) } else { rng.gen_range(0..200_000) };
            let mut b = m.allocate(len)?;
            next_id += 1;
            mark(&mut b, next_id)?;
            live.push((b, next_id, false));
        } else if roll < 15 {
            let (b, id, _) = live.swap_remove(rng.gen_range(0..live.len()));
            check_mark(&b, id)?;
        } else if roll < 17 {
            let k = rng.gen_range(0..live.len());
            let (b, id, shared) = &mut live[k];
            if !*shared {
                m.resize(b, rng.gen_range(0..4096))?;
                mark(b, *id)?;
            }
        } else {
            let k = rng.gen_range(0..live.len());
            live[k].2 = true;
            let other = match roll {
                17 | 18 => live[k].0.clone(),
                _ => m.block_from_handle(live[k].0.handle())?,
            };
            live.push((other, live[k].1, true));
        }
    }
    Ok(ops)
}

/// Writes `id` at both ends of the block (where it has room): enough to see that blocks keep
/// their bytes, cheap enough that the churn spends its time in the allocator.
fn mark(b: &mut MemoryBlock, id: u64) -> Res {
    let bytes = b.as_mut_slice()?;
    let n = bytes.len();
    if n >= 16 {
        bytes[..8].copy_from_slice(&id.to_le_bytes());
        bytes[n - 8..].copy_from_slice(&id.to_le_bytes());
    }
    Ok(())
}

fn check_mark(b: &MemoryBlock, id: u64) -> Res {
    let bytes = b.as_slice();
    let n = bytes.len();
    if n >= 16 && (bytes[..8] != id.to_le_bytes() || bytes[n - 8..] != id.to_le_bytes()) {
        return Err(format!("block {id} lost its bytes").into());
    }
    Ok(())
}

fn mmheap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmheap")).args(args).output().expect("run mmheap")
}

fn json(o: &Output) -> Result<Value, Failed> {
    Ok(serde_json::from_slice(&o.stdout)
        .map_err(|e| format!("bad JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))?)
}

/// Problems as (what, offset).
type Problems = Vec<(String, u64)>;

/// `check --json`: exit code, problems, and what the copy was worth.
fn check(p: &str) -> Result<(i32, Problems, String), Failed> {
    let o = mmheap(&["check", p, "--json"]);
    let v = json(&o)?;
    let problems = v["problems"].as_array().cloned().unwrap_or_default();
    let problems = problems
        .iter()
        .map(|p| (p["what"].as_str().unwrap_or("").to_owned(), p["offset"].as_u64().unwrap_or(0)))
        .collect();
    let code = o.status.code().unwrap_or(-1);
    if code == 2 {
        return Err(format!("check could not read the store: {v}").into());
    }
    Ok((code, problems, v["view"].as_str().unwrap_or("").to_owned()))
}

/// Offset of `needle` in the file.
fn find_in_file(path: &Path, needle: &[u8]) -> Result<u64, Failed> {
    let bytes = std::fs::read(path)?;
    let at = bytes.windows(needle.len()).position(|w| w == needle).ok_or("the planted root's name")?;
    Ok(at as u64)
}

fn live_store_truth() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("live.mmheap");
    let p = path.to_str().unwrap();
    {
        let m = MappedManager::create(&path, &Options::new().initial_size(4 << 20).max_size(1 << 30))?;
        let mut b = m.allocate(300)?;
        b.as_mut_slice()?.fill(7);
        m.set_root(std::str::from_utf8(PLANTED)?, &b)?;
    }
    let mut writer = spawn("churn", &path, &[]);
    let lines = lines_of(&mut writer)?;
    ensure(lines.recv_timeout(Duration::from_secs(30))? == "ready", "the writer is ready")?;
    std::thread::sleep(Duration::from_millis(200));

    let runs = env_u64("MMHEAP_LIVE_RUNS", 100);
    let started = Instant::now();
    let mut false_problems = Vec::new();
    let mut views = std::collections::BTreeMap::new();
    for i in 0..runs {
        let (code, problems, view) = check(p)?;
        *views.entry(view).or_insert(0) += 1;
        if code != 0 || !problems.is_empty() {
            false_problems.push((i, code, problems.into_iter().take(3).collect::<Vec<_>>()));
        }
    }
    let per_check = started.elapsed() / runs.max(1) as u32;
    eprintln!(
        "live check: {} of {runs} runs reported problems that are not there ({per_check:?} a check; copies {views:?})",
        false_problems.len()
    );
    ensure(false_problems.is_empty(), format!("false problems on a live store: {false_problems:?}"))?;
    for args in [&["stat", p, "--json"][..], &["dump", p, "--json", "--limit", "1"]] {
        for _ in 0..10 {
            let v = json(&mmheap(args))?;
            ensure(
                v["errors"].as_array().is_none_or(Vec::is_empty) && v["error"].is_null(),
                format!("{args:?} on the live store: {v}"),
            )?;
        }
    }
    let roots = String::from_utf8(mmheap(&["roots", p]).stdout)?;
    ensure(roots.starts_with(std::str::from_utf8(PLANTED)?), format!("roots: {roots}"))?;

    // Damage the writer never touches: the planted root's name is no longer UTF-8.
    let name_at = find_in_file(&path, PLANTED)?;
    let f = std::fs::OpenOptions::new().write(true).open(&path)?;
    std::os::unix::fs::FileExt::write_all_at(&f, &[0xff], name_at)?;
    let mut missed = 0;
    for _ in 0..10 {
        let (code, problems, _) = check(p)?;
        let found = problems.iter().any(|(w, _)| w == "root name is malformed");
        ensure(
            problems.iter().all(|(w, _)| w == "root name is malformed"),
            format!("false problems beside the planted one: {problems:?}"),
        )?;
        if code != 1 || !found {
            missed += 1;
        }
    }

    drop(f);
    drop(writer.get().stdin.take());
    let status = writer.take().wait()?;
    ensure(status.success(), format!("the writer failed: {status}"))?;
    eprintln!("live check: the planted damage was missed {missed} of 10 times");
    ensure(missed == 0, format!("the planted damage was missed {missed} of 10 times"))
}

/// The store lock word, read from the file.
fn lock_word(path: &Path) -> Result<u32, Failed> {
    let mut b = [0u8; 4];
    std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::open(path)?, &mut b, mmheap::format::SB_LOCK)?;
    Ok(u32::from_le_bytes(b))
}

/// `mmheap check` holds the store lock while it copies a large store (600 MiB of used blocks,
/// which it copies whole); killed then, it leaves the lock word naming it, and the next
/// process to need the lock takes it over (the tool's record lock went with it) and finds the
/// store sound.
fn killed_inspector() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("big.mmheap");
    let m = MappedManager::create(&path, &Options::new().initial_size(1 << 30).max_size(2 << 30))?;
    let big = (0..600).map(|_| m.allocate(1 << 20)).collect::<Result<Vec<_>, _>>()?;
    let p = path.to_str().unwrap();
    let mut caught = None;
    for _ in 0..10 {
        let mut tool = Command::new(env!("CARGO_BIN_EXE_mmheap")).args(["check", p]).spawn()?;
        let held = loop {
            let w = lock_word(&path)?;
            if w != 0 || tool.try_wait()?.is_some() {
                break w;
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        let _ = tool.kill();
        tool.wait()?;
        let after = lock_word(&path)?;
        if held != 0 && after != 0 {
            caught = Some(after);
            break;
        }
    }
    ensure(caught.is_some(), "never caught the tool holding the lock")?;
    let started = Instant::now();
    let b = m.allocate(1000)?;
    drop(b);
    ensure(m.check()?.is_sound(), "sound after the takeover")?;
    // Not a timing test: a lock left stuck would never be taken at all.
    eprintln!("killed inspector: lock taken over and store checked in {:?}", started.elapsed());
    drop(big);
    drop(m);
    ensure(lock_word(&path)? == 0, "the lock is free")?;
    let o = mmheap(&["check", p]);
    ensure(o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned())
}

/// `mmheap check` told to stop (`SIGTSTP`, Ctrl-Z) while it holds the store lock for a copy
/// stops only after it has given the lock back: writers are not stopped with it.
fn stopped_inspector() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("big.mmheap");
    let m = MappedManager::create(&path, &Options::new().initial_size(1 << 30).max_size(2 << 30))?;
    let _big = (0..600).map(|_| m.allocate(1 << 20)).collect::<Result<Vec<_>, _>>()?;
    let p = path.to_str().unwrap();
    for _ in 0..10 {
        let mut tool = Command::new(env!("CARGO_BIN_EXE_mmheap"))
            .args(["check", p])
            .stdout(std::process::Stdio::null())
            .spawn()?;
        let pid = tool.id() as libc::pid_t;
        while lock_word(&path)? == 0 && tool.try_wait()?.is_none() {
            std::thread::sleep(Duration::from_micros(200));
        }
        // SAFETY: `pid` is our child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTSTP) };
        let held_at_stop = lock_word(&path)? != 0;
        let since = Instant::now();
        while lock_word(&path)? != 0 && since.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let freed = lock_word(&path)? == 0;
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
        let status = tool.wait()?;
        ensure(freed, "the stopped tool kept the store lock")?;
        ensure(status.success(), format!("check: {status}"))?;
        if held_at_stop {
            // Also a writer can use the store meanwhile: it did, since the lock went free.
            drop(m.allocate(100)?);
            return Ok(());
        }
    }
    Err("never caught the tool holding the lock".into())
}

/// Sizes the holder allocates, three of each: slots (up to 64 bytes), cached blocks, and one
/// too large for a thread cache (counted in its header from the start).
const HELD_SIZES: [usize; 9] = [8, 16, 33, 64, 100, 700, 3000, 20_000, 150_000];

/// The holder: a process whose blocks are live (lent from its thread cache, or counted),
/// parked in its cache, or both, as the parent asks on standard input. After each step it
/// prints its own `stats` and its blocks (payload offset, length, published) as one JSON line.
/// - `lent`: allocates `HELD_SIZES` and keeps them (lent: no count in their headers), sends a
///   30-byte message on a channel (a ring, and a queued slot), then trims: nothing parked;
/// - `parked`: publishes every block it holds (a handle each: counted now), and allocates and
///   drops blocks of every size: those are parked;
/// - `mixed`: allocates `HELD_SIZES` again and keeps them unpublished: lent beside the parked.
fn holder(store: &Path) -> Res {
    let m = MappedManager::open(store)?;
    let mut held: Vec<(MemoryBlock, bool)> = Vec::new();
    let tx = m.channel("q", 4)?.sender()?;
    for line in std::io::stdin().lines() {
        match line?.as_str() {
            "lent" => {
                for &n in HELD_SIZES.iter().cycle().take(3 * HELD_SIZES.len()) {
                    held.push((m.allocate(n)?, false));
                }
                tx.send(m.allocate(30)?).map_err(|e| e.to_string())?;
                m.trim()?;
            }
            "parked" => {
                for (b, published) in held.iter_mut() {
                    b.handle();
                    *published = true;
                }
                for &n in HELD_SIZES.iter().cycle().take(2 * HELD_SIZES.len()) {
                    drop(m.allocate(n)?);
                }
            }
            "mixed" => {
                for &n in HELD_SIZES.iter().cycle().take(3 * HELD_SIZES.len()) {
                    held.push((m.allocate(n)?, false));
                }
            }
            other => return Err(format!("unknown step {other}").into()),
        }
        let blocks: Vec<Value> = held
            .iter()
            .map(|(b, published)| serde_json::json!([b.offset().get(), b.len(), published]))
            .collect();
        let line = serde_json::json!({ "stats": m.stats()?, "held": blocks });
        println!("{line}");
        std::io::stdout().flush()?;
    }
    Ok(())
}

/// A field of a JSON object as a number.
fn num(v: &Value, key: &str) -> Result<u64, Failed> {
    v[key].as_u64().ok_or_else(|| format!("no number {key} in {v}").into())
}

/// Runs `mmheap args` on a store that must read whole (exit 0); its JSON.
fn read_whole(args: &[&str]) -> Result<Value, Failed> {
    let o = mmheap(args);
    ensure(o.status.success(), format!("{args:?}: {}", String::from_utf8_lossy(&o.stderr)))?;
    json(&o)
}

/// What the tool says of a store that the holder holds after one step: the figures of `stat`,
/// `check` and the process's own `stats` agree and add up to the heap, the size classes add
/// up to the live and cached figures, `dump` lists each block the holder holds where it starts
/// as a slot or a block with the state its words allow, and its states add up to the figures.
/// Returns the dump's blocks of the holder (registry slot `owner`) by state.
fn told(p: &str, step: &Value) -> Result<(Value, Vec<Value>), Failed> {
    let own = &step["stats"];
    let stat = read_whole(&["stat", p, "--json"])?;
    let store = &stat["store"];
    for (key, want) in [
        ("used_bytes", "used_bytes"),
        ("live_blocks", "live_blocks"),
        ("cached_bytes", "cached_bytes"),
        ("cached_blocks", "cached_blocks"),
        ("bookkeeping_bytes", "bookkeeping_bytes"),
        ("bookkeeping_blocks", "bookkeeping_blocks"),
        ("free_bytes", "free_bytes"),
    ] {
        ensure(
            store[key] == own[want],
            format!("stat {key} {} but the process's stats {}", store[key], own[want]),
        )?;
    }
    let heap = num(store, "capacity")? - mmheap::format::HEAP_START - mmheap::format::SENTINEL_SIZE;
    let parts: u64 = ["used_bytes", "cached_bytes", "bookkeeping_bytes", "free_bytes", "quarantined_bytes"]
        .iter()
        .map(|k| store[*k].as_u64().unwrap_or(0))
        .sum();
    ensure(parts == heap, format!("live + cached + bookkeeping + free = {parts}, the heap is {heap}"))?;
    let classes = stat["size_classes"].as_array().ok_or("size classes")?;
    let class_blocks: u64 = classes.iter().map(|c| c["blocks"].as_u64().unwrap_or(0)).sum();
    let class_bytes: u64 = classes.iter().map(|c| c["bytes"].as_u64().unwrap_or(0)).sum();
    let (live, cached) = (num(store, "live_blocks")?, num(store, "cached_blocks")?);
    ensure(
        class_blocks == live + cached
            && class_bytes == num(store, "used_bytes")? + num(store, "cached_bytes")?,
        format!(
            "size classes hold {class_blocks} blocks ({class_bytes} bytes), live + cached {live} + {cached}"
        ),
    )?;

    let check = read_whole(&["check", p, "--json"])?;
    ensure(check["sound"] == true, format!("{check}"))?;
    for (key, want) in [
        ("used_blocks", "live_blocks"),
        ("used_bytes", "used_bytes"),
        ("cached_blocks", "cached_blocks"),
        ("bookkeeping_blocks", "bookkeeping_blocks"),
        ("free_bytes", "free_bytes"),
    ] {
        ensure(
            check[key] == store[want],
            format!("check {key} {} but stat {want} {}", check[key], store[want]),
        )?;
    }

    let dump = read_whole(&["dump", p, "--json", "--limit", "1000000"])?;
    let blocks = dump["blocks"].as_array().ok_or("blocks")?.clone();
    let count =
        |states: &[&str]| blocks.iter().filter(|b| states.iter().any(|s| b["state"] == *s)).count() as u64;
    ensure(
        count(&["live", "parked", "lent/parked"]) == live + cached,
        "dump's users' blocks are live + cached",
    )?;
    ensure(count(&["bookkeeping"]) == num(store, "bookkeeping_blocks")?, "dump's bookkeeping")?;
    ensure(Some(count(&["free"])) == store["free_blocks"].as_u64(), "dump's free blocks")?;
    ensure(
        count(&["parked"]) <= cached && cached <= count(&["parked", "lent/parked"]),
        "parked ones are cached",
    )?;
    let mut mine = Vec::new();
    for h in step["held"].as_array().ok_or("held")? {
        let (payload, len) = (h[0].as_u64().ok_or("payload")?, h[1].as_u64().ok_or("len")?);
        let (kind, start) = if len <= 64 { ("slot", payload) } else { ("block", payload - 32) };
        let b = blocks
            .iter()
            .find(|b| b["offset"] == start && b["kind"] == kind)
            .ok_or_else(|| format!("no {kind} at {start:#x} for a held block of {len} bytes"))?;
        ensure(start % 16 == 0, format!("{b} starts unaligned"))?;
        if kind == "slot" {
            ensure(num(b, "id")? / 16 * 16 + 32 == start, format!("a slot's id names it: {b}"))?;
        }
        mine.push(b.clone());
    }
    Ok((stat, mine))
}

fn held_blocks_told_apart() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("held.mmheap");
    let p = path.to_str().unwrap();
    drop(MappedManager::create(&path, &Options::new().max_size(1 << 30))?);
    let mut kid = spawn("holder", &path, &[]);
    let lines = lines_of(&mut kid)?;
    let mut stdin = kid.get().stdin.take().ok_or("stdin")?;
    let mut step = |what: &str| -> Result<Value, Failed> {
        writeln!(stdin, "{what}")?;
        let line = lines.recv_timeout(Duration::from_secs(60)).map_err(|_| format!("{what}: no answer"))?;
        Ok(serde_json::from_str(&line)?)
    };
    let states = |mine: &[Value]| -> Vec<String> {
        mine.iter().map(|b| b["state"].as_str().unwrap_or("").to_owned()).collect()
    };

    // Lent blocks, nothing parked: every block it holds is live, though no count is in its
    // header (before, `dump` called them parked).
    let (stat, mine) = told(p, &step("lent")?)?;
    ensure(states(&mine).iter().all(|s| s == "live"), format!("lent: {:?}", states(&mine)))?;
    ensure(num(&stat["store"], "cached_blocks")? == 0, "nothing parked after trim")?;
    ensure(num(&stat["store"], "live_blocks")? == 3 * 9 + 1, "its 27 blocks and the queued message")?;

    // Everything held is counted, the rest parked: parked blocks are known to be parked.
    let (stat, mine) = told(p, &step("parked")?)?;
    ensure(states(&mine).iter().all(|s| s == "live"), format!("published: {:?}", states(&mine)))?;
    let dump = read_whole(&["dump", p, "--json", "--limit", "1000000"])?;
    let parked = dump["blocks"].as_array().ok_or("blocks")?.iter().filter(|b| b["state"] == "parked").count();
    let cached = num(&stat["store"], "cached_blocks")?;
    ensure(cached > 0 && parked as u64 == cached, format!("{parked} parked in the dump, {cached} cached"))?;
    ensure(
        dump["blocks"].as_array().ok_or("blocks")?.iter().all(|b| b["state"] != "lent/parked"),
        "no doubt",
    )?;

    // Lent beside parked: the store cannot say which is which, and says how many of each.
    let step3 = step("mixed")?;
    let (stat, mine) = told(p, &step3)?;
    let lent = step3["held"].as_array().ok_or("held")?.iter().filter(|h| h[2] == false && h[1] != 150_000);
    let lent = lent.count() as u64;
    let unsure = states(&mine).iter().filter(|s| *s == "lent/parked").count() as u64;
    ensure(unsure == lent, format!("{unsure} lent/parked of its {lent} lent blocks"))?;
    let owner = &stat["processes"][0];
    let split = &stat["unreferenced"][0];
    ensure(split["owner"] == owner["slot"], format!("{split}"))?;
    ensure(
        num(split, "parked_blocks")? == num(&stat["store"], "cached_blocks")?
            && num(split, "blocks")? - num(split, "parked_blocks")? == lent,
        format!("split {split}, {lent} lent"),
    )?;
    drop(stdin);
    wait_ok(kid, "the holder")
}
