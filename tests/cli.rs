//! End-to-end tests of the `mmheap` binary: exit codes, JSON shapes, planted corruption found
//! at the right offset, `recover` on a store left by a killed process, the map picture.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use libtest_mimic::{Failed, Trial};
use mmheap::format::{HDR_RC, HDR_TAG, SB_LOCK, SPAN_SIZE, SPAN_USED, TLSF_HEADS};
use mmheap::{MappedManager, MemoryBlock, MemoryManager, Options};
use serde_json::Value;

fn main() {
    child_or_tests(child, || {
        vec![
            Trial::test("create_stat_check_roots_dump", create_stat_check_roots_dump),
            Trial::test("check_exit_codes_on_fixtures", check_exit_codes_on_fixtures),
            Trial::test("check_finds_planted_corruption_at_its_offset", planted_corruption),
            Trial::test("recover_after_a_killed_process", recover_after_kill),
            Trial::test("a_full_store_costs_its_copy_not_twice_its_size", full_store_memory),
            Trial::test("read_only_commands_do_not_register_or_block", read_only_does_not_disturb),
            Trial::test("map_draws_the_heap", map_draws),
            Trial::test("check_lists_cycles_and_recover_collects_them", cycles),
            Trial::test("every_corrupt_fixture_gets_exit_1_or_2", corrupt_fixtures),
            Trial::test("check_and_recover_show_progress_on_a_terminal", progress_on_a_terminal),
        ]
    });
}

/// Fills a store with `MMHEAP_BLOCKS` blocks of mixed sizes (freeing every third), roots one,
/// says "ready" and holds everything until its standard input closes or it is killed.
fn child(role: &str, store: &Path) -> Res {
    if role == "pauser" {
        let m = MappedManager::open(store)?;
        let (_, alpha) = m.roots()?.into_iter().find(|(name, _)| name == "alpha").ok_or("no root alpha")?;
        let _alpha = m.block_from_handle(alpha)?; // a hold of another process's block: pauses inside the lock
        return Err("the pause point was never reached".into());
    }
    if role != "filler" {
        return Err(format!("unknown role {role}").into());
    }
    let m = MappedManager::open_or_create(store, &Options::new().max_size(4 << 30))?;
    let n = env_u64("MMHEAP_BLOCKS", 1000);
    let mut keep: Vec<MemoryBlock> = Vec::with_capacity(n as usize);
    for i in 0..n {
        let b = m.allocate(program_size(i))?;
        if i % 3 != 0 {
            keep.push(b);
        }
    }
    let mut greeting = m.allocate(5)?;
    greeting.as_mut_slice()?.copy_from_slice(b"hello");
    m.set_root("greeting", &greeting)?;
    println!("ready");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(())
}

fn mmheap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmheap")).args(args).output().expect("run mmheap")
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn json(o: &Output) -> Result<Value, Failed> {
    Ok(serde_json::from_slice(&o.stdout)
        .map_err(|e| format!("bad JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))?)
}

/// A store with a dead process's leftovers would need a kill; this one is made and closed
/// cleanly by this process: two rooted blocks.
fn small_store(dir: &Path) -> Result<PathBuf, Failed> {
    let path = dir.join("s.mmheap");
    let out = mmheap(&["create", path.to_str().unwrap(), "--size", "256K", "--max-size", "64M"]);
    ensure(code(&out) == 0, format!("create: {}", String::from_utf8_lossy(&out.stderr)))?;
    let m = MappedManager::open(&path)?;
    let mut a = m.allocate(14)?;
    a.as_mut_slice()?.copy_from_slice(b"the first root");
    m.set_root("alpha", &a)?;
    let b = m.allocate(3000)?;
    m.set_root("beta", &b)?;
    Ok(path)
}

fn create_stat_check_roots_dump() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = small_store(dir.path())?;
    let p = path.to_str().unwrap();
    ensure(code(&mmheap(&["create", p])) == 2, "create refuses an existing file")?;

    let stat = json(&mmheap(&["stat", p, "--json"]))?;
    ensure(stat["store"]["format_version"] == 2, "format_version")?;
    ensure(stat["store"]["capacity"] == 256 * 1024, format!("capacity {}", stat["store"]["capacity"]))?;
    ensure(stat["store"]["max_size"] == 64 << 20, "max_size")?;
    ensure(stat["store"]["live_blocks"] == 2 && stat["store"]["clean"] == true, "live blocks, clean")?;
    for key in ["used_bytes", "free_bytes", "largest_free", "fragmentation", "growths", "recoveries"] {
        ensure(!stat["store"][key].is_null(), format!("stat has store.{key}"))?;
    }
    ensure(stat["roots"].as_array().map(Vec::len) == Some(2), "two roots")?;
    ensure(stat["roots"][0]["name"] == "alpha" && stat["roots"][0]["len"] == 14, "root alpha")?;
    ensure(stat["processes"].as_array().map(Vec::len) == Some(0), "nobody attached")?;
    ensure(stat["size_classes"].as_array().is_some_and(|c| !c.is_empty()), "size classes")?;
    let text = String::from_utf8(mmheap(&["stat", p]).stdout)?;
    ensure(text.contains("shutdown    clean") && text.contains("alpha"), text.clone())?;

    let check = mmheap(&["check", p, "--json"]);
    ensure(code(&check) == 0, "check exit 0")?;
    let check = json(&check)?;
    ensure(check["sound"] == true && check["used_blocks"] == 2, format!("{check}"))?;
    ensure(check["view"] == "locked", format!("copied under the lock: {check}"))?;
    ensure(check["problems"].as_array().is_some_and(Vec::is_empty), "no problems")?;

    let roots = String::from_utf8(mmheap(&["roots", p]).stdout)?;
    ensure(roots.lines().count() == 2 && roots.starts_with("alpha"), roots.clone())?;

    let dump = json(&mmheap(&["dump", p, "--json"]))?;
    let blocks = dump["blocks"].as_array().ok_or("blocks")?;
    ensure(dump["total"] == blocks.len() && dump["error"].is_null(), "dump total")?;
    let alpha = blocks.iter().find(|b| b["len"] == 14).ok_or("alpha block in dump")?;
    ensure(
        alpha["free"] == false && alpha["ref_count"] == 1 && alpha["published"] == true,
        format!("{alpha}"),
    )?;
    ensure(alpha["kind"] == "slot" && alpha["size"] == 16, format!("14 bytes live in a slot: {alpha}"))?;
    ensure(blocks.iter().any(|b| b["kind"] == "span"), "the slot's span in the dump")?;
    ensure(alpha["owner"].is_null(), "the creator has gone: no owner")?;
    let off = alpha["offset"].as_u64().ok_or("offset")?;
    let one = json(&mmheap(&["dump", p, "--offset", &off.to_string(), "--json"]))?;
    ensure(one["payload"]["hex"] == hex::encode(b"the first root"), format!("{one}"))?;
    let text = String::from_utf8(mmheap(&["dump", p, "--offset", &format!("{off:#x}")]).stdout)?;
    ensure(text.contains("the first root"), text.clone())?;
    let limited = json(&mmheap(&["dump", p, "--limit", "1", "--json"]))?;
    ensure(limited["blocks"].as_array().map(Vec::len) == Some(1), "limit")
}

mod hex {
    pub fn encode(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}

fn check_exit_codes_on_fixtures() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let golden = dir.path().join("golden.mmheap");
    copy_store(fixture("golden-v1.mmheap"), &golden)?;
    ensure(code(&mmheap(&["check", golden.to_str().unwrap()])) == 0, "golden is sound")?;
    let junk = dir.path().join("junk");
    std::fs::write(&junk, b"not a store at all")?;
    let out = mmheap(&["check", junk.to_str().unwrap(), "--json"]);
    ensure(code(&out) == 2, "junk: exit 2")?;
    ensure(json(&out)?["readable"] == false, "junk: readable false")?;
    ensure(code(&mmheap(&["check", dir.path().join("missing").to_str().unwrap()])) == 2, "missing: exit 2")?;
    ensure(code(&mmheap(&["stat", junk.to_str().unwrap()])) == 2, "stat junk: exit 2")
}

/// Writes `value` at `at` in the file (the store must not be open).
fn poke(path: &Path, at: u64, value: u64) -> Result<(), Failed> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all_at(&value.to_le_bytes(), at)?;
    Ok(())
}

fn problems_at(path: &Path) -> Result<(i32, Vec<(String, u64)>), Failed> {
    let out = mmheap(&["check", path.to_str().unwrap(), "--json"]);
    let v = json(&out)?;
    let list = v["problems"].as_array().ok_or("problems")?;
    let problems = list
        .iter()
        .map(|p| (p["what"].as_str().unwrap_or("").to_owned(), p["offset"].as_u64().unwrap_or(0)))
        .collect();
    Ok((code(&out), problems))
}

fn planted_corruption() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let base = small_store(dir.path())?;
    let v = json(&mmheap(&["dump", base.to_str().unwrap(), "--json"]))?;
    let blocks = v["blocks"].as_array().ok_or("blocks")?.clone();
    let beta = blocks.iter().find(|b| b["len"] == 3000).and_then(|b| b["offset"].as_u64()).ok_or("beta")?;
    let beta_size =
        blocks.iter().find(|b| b["len"] == 3000).and_then(|b| b["size"].as_u64()).ok_or("size")?;
    let alpha = blocks.iter().find(|b| b["len"] == 14).and_then(|b| b["offset"].as_u64()).ok_or("alpha")?;
    let variant = |name: &str| -> Result<PathBuf, Failed> {
        let p = dir.path().join(name);
        copy_store(&base, &p)?;
        Ok(p)
    };

    // A copy of the store with `value` written at `at` must fail `check` with exit 1 and a
    // problem reported at one of `offsets` (whose description contains `what`).
    let planted = |name: &str, at: u64, value: u64, offsets: &[u64], what: &str| -> Result<(), Failed> {
        let path = variant(&format!("{name}.mmheap"))?;
        poke(&path, at, value)?;
        let (c, problems) = problems_at(&path)?;
        ensure(c == 1, format!("{name}: exit {c}"))?;
        ensure(
            problems.iter().any(|(w, o)| offsets.contains(o) && w.contains(what)),
            format!("{name}: {problems:?}"),
        )
    };
    // Overlapping blocks: beta claims more bytes than it has, running into its neighbour.
    planted("overlap", beta + HDR_TAG, beta_size + 64, &[beta + beta_size + 64, beta], "")?;
    // A broken free structure: a list head pointing into a used block.
    let head = (0..40 * 16)
        .map(|i| TLSF_HEADS + 8 * i)
        .find(|&h| read_u64(&base, h).unwrap_or(0) != 0)
        .ok_or("a head")?;
    planted("broken-list", head, beta, &[beta], "free list")?;
    // A count of zero on a live block.
    planted("zero-count", beta + HDR_RC, 0, &[beta], "count zero")?;
    // A span that miscounts its slots in use (alpha's: the span is its id rounded down).
    let span = alpha & !(SPAN_SIZE - 1);
    planted("span-count", span + SPAN_USED, 7, &[span], "slots in use")
}

fn read_u64(path: &Path, at: u64) -> Result<u64, Failed> {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 8];
    std::fs::File::open(path)?.read_exact_at(&mut b, at)?;
    Ok(u64::from_le_bytes(b))
}

fn recover_after_kill() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("killed.mmheap");
    let p = path.to_str().unwrap();
    let mut filler = spawn("filler", &path, &[("MMHEAP_BLOCKS", "500".into())]);
    let mut out = std::io::BufReader::new(filler.get().stdout.take().ok_or("stdout")?);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line)?;
    ensure(line.trim() == "ready", "filler ready")?;
    kill(filler)?;

    let stat = json(&mmheap(&["stat", p, "--json"]))?;
    ensure(stat["store"]["clean"] == false, "a killed writer: not clean")?;
    ensure(stat["processes"][0]["alive"] == false, "its slot is dead")?;
    let check = mmheap(&["check", p, "--json"]);
    ensure(json(&check)?["dead_processes"] == 1, "check counts the dead process")?;
    let dry = String::from_utf8(mmheap(&["recover", p, "--dry-run"]).stdout)?;
    ensure(dry.starts_with("would reclaim: 1 dead process(es), 333 block(s) freed"), dry.clone())?;
    ensure(json(&mmheap(&["stat", p, "--json"]))?["store"]["clean"] == false, "dry run changed nothing")?;

    let rec = mmheap(&["recover", p]);
    let text = String::from_utf8(rec.stdout.clone())?;
    ensure(
        code(&rec) == 0 && text.starts_with("reclaimed: 1 dead process(es), 333 block(s) freed"),
        text.clone(),
    )?;
    ensure(code(&mmheap(&["check", p])) == 0, "check passes after recover")?;
    let stat = json(&mmheap(&["stat", p, "--json"]))?;
    ensure(stat["store"]["clean"] == true && stat["store"]["live_blocks"] == 1, format!("{stat}"))
}

/// A store full of data costs `stat` and `check` about what they walk (its metadata: headers,
/// spans, tables), not its data: they look at the store in place, under its lock, and let go of
/// the mapping's pages as they go (a copy of the used bytes cost 1.04 GB for a 971 MiB store).
/// The store is filled and held by a child, so that this process stays small (see `measured`).
fn full_store_memory() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("full.mmheap");
    let mut filler = spawn("filler", &path, &[("MMHEAP_BLOCKS", "240000".into())]);
    let mut out = std::io::BufReader::new(filler.get().stdout.take().ok_or("stdout")?);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line)?;
    ensure(line.trim() == "ready", format!("filler said {line:?}"))?;
    let p = path.to_str().ok_or("path")?;
    let store = json(&mmheap(&["stat", p, "--json"]))?["store"].clone();
    let field = |name: &str| store[name].as_u64().ok_or(format!("{name} in {store}"));
    let used = field("used_bytes")?;
    ensure(used > 200 << 20, format!("{} MiB used", used >> 20))?;
    // A header per block, the bookkeeping blocks whole (spans with their slots, tables).
    let blocks = field("live_blocks")? + field("cached_blocks")? + field("free_blocks")?;
    let metadata = blocks * 32 + field("bookkeeping_bytes")?;
    for cmd in ["stat", "check"] {
        let (code, rss_kib) = measured(env!("CARGO_BIN_EXE_mmheap"), &[cmd, p]);
        ensure(code == 0, format!("{cmd} exit {code}"))?;
        // A few times the metadata, and the tool itself (a debug build, its libraries).
        let limit = (3 * metadata + (16 << 20)) >> 10; // KiB
        eprintln!(
            "{cmd}: peak RSS {} KiB; metadata {} KiB, used {} MiB",
            rss_kib,
            metadata >> 10,
            used >> 20
        );
        ensure(
            (rss_kib as u64) < limit,
            format!(
                "{cmd}: peak RSS {} MiB, metadata {} MiB, {} MiB used",
                rss_kib >> 10,
                metadata >> 20,
                used >> 20
            ),
        )?;
    }
    Ok(())
}

fn read_only_does_not_disturb() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = small_store(dir.path())?;
    let p = path.to_str().unwrap();
    // A writer that stops for good inside the store lock (a test pause point).
    let mut pauser = spawn("pauser", &path, &[("MMHEAP_TEST_PAUSE", "hold-counted".into())]);
    let mut out = std::io::BufReader::new(pauser.get().stdout.take().ok_or("stdout")?);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line)?;
    ensure(line.trim() == "paused hold-counted", format!("pauser said {line:?}"))?;
    let before = std::fs::read(&path)?;
    let svg = dir.path().join("m.svg");
    for args in [
        &["stat", p][..],
        &["check", p],
        &["dump", p],
        &["roots", p],
        &["map", p, "-o", svg.to_str().unwrap()],
    ] {
        let out = mmheap(args);
        ensure(
            code(&out) == 0,
            format!("{args:?} exit {}: {}", code(&out), String::from_utf8_lossy(&out.stderr)),
        )?;
    }
    unchanged_but_the_waiters_bit(&before, &std::fs::read(&path)?)?;
    let stat = json(&mmheap(&["stat", p, "--json"]))?;
    ensure(stat["processes"].as_array().map(Vec::len) == Some(1), "only the writer is registered")?;
    ensure(!stat["store"]["lock_holder"].is_null(), "the lock was held throughout")?;
    ensure(
        stat["store"]["view"] == "unsettled",
        format!("a copy without the lock: {}", stat["store"]["view"]),
    )?;
    let check = json(&mmheap(&["check", p, "--json"]))?;
    ensure(check["view"] == "unsettled" && check["sound"] == true, format!("{check}"))?;
    // Killed inside the lock: the copy is of the store as recovery will find it.
    drop(pauser);
    let stat = json(&mmheap(&["stat", p, "--json"]))?;
    ensure(stat["store"]["view"] == "dead_holder", format!("a dead holder: {}", stat["store"]["view"]))?;
    ensure(!stat["store"]["lock_holder"].is_null() && stat["store"]["clean"] == false, format!("{stat}"))?;
    unchanged_but_the_waiters_bit(&before, &std::fs::read(&path)?)
}

/// The store is byte for byte as `before`, but for the lock word's waiters bit (bit 31), which
/// a reader that waited for a living holder sets, as every waiter does.
fn unchanged_but_the_waiters_bit(before: &[u8], after: &[u8]) -> Result<(), Failed> {
    let lock = SB_LOCK as usize..SB_LOCK as usize + 4;
    let word = |b: &[u8]| u32::from_le_bytes(b[lock.clone()].try_into().unwrap()) & 0x7fff_ffff;
    ensure(before.len() == after.len() && word(before) == word(after), "the lock word's holder changed")?;
    let outside = |b: &[u8]| [&b[..lock.start], &b[lock.end..]].concat();
    ensure(outside(before) == outside(after), "read-only commands wrote to the store")
}

fn cycles() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = small_store(dir.path())?;
    let file = path.to_str().unwrap();
    {
        let m = MappedManager::open(&path)?;
        let (a, b) = (m.allocate_linked(1, 8)?, m.allocate_linked(1, 8)?);
        a.set_link(0, Some(&b))?;
        b.set_link(0, Some(&a))?;
    }
    let out = mmheap(&["check", file]);
    let text = String::from_utf8_lossy(&out.stdout);
    ensure(code(&out) == 0, format!("a cycle is a leak, not damage: {text}"))?;
    ensure(text.contains("2 blocks kept only by cycles of links"), format!("{text}"))?;
    let listed = json(&mmheap(&["check", file, "--json"]))?;
    ensure(listed["cycle_blocks"].as_array().map(Vec::len) == Some(2), format!("{listed}"))?;
    let out = mmheap(&["recover", file, "--collect-cycles"]);
    ensure(code(&out) == 0, format!("recover: {}", String::from_utf8_lossy(&out.stderr)))?;
    ensure(String::from_utf8_lossy(&out.stdout).contains("2 block(s) freed"), format!("{out:?}"))?;
    let after = json(&mmheap(&["check", file, "--json"]))?;
    ensure(
        after["cycle_blocks"].as_array().map(Vec::len) == Some(0) && after["used_blocks"] == 2,
        format!("{after}"),
    )?;
    let refused = mmheap(&["recover", file, "--collect-cycles", "--salvage"]);
    ensure(code(&refused) == 2, "--collect-cycles does not go with --salvage")
}

fn map_draws() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("map.mmheap");
    let blocks = env_u64("MMHEAP_MAP_BLOCKS", 20_000);
    let mut filler = spawn("filler", &path, &[("MMHEAP_BLOCKS", blocks.to_string())]);
    let mut out = std::io::BufReader::new(filler.get().stdout.take().ok_or("stdout")?);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line)?;
    ensure(line.trim() == "ready", "filler ready")?;
    let svg_path =
        std::env::var("MMHEAP_MAP_OUT").map(PathBuf::from).unwrap_or_else(|_| dir.path().join("heap.svg"));
    let o = mmheap(&["map", path.to_str().unwrap(), "-o", svg_path.to_str().unwrap()]);
    ensure(code(&o) == 0, format!("map: {}", String::from_utf8_lossy(&o.stderr)))?;
    let svg = std::fs::read_to_string(&svg_path)?;
    ensure(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "an SVG document")?;
    ensure(
        svg.contains("one cell = ") && svg.contains("metadata") && svg.contains("free"),
        "legend and scale",
    )?;
    ensure(svg.matches("<rect").count() < 200_000, "cells are aggregated")?;
    drop(filler);
    Ok(())
}

fn corrupt_fixtures() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let (mut problems, mut unreadable) = (0, 0);
    let all = [("golden-v1.mmheap", "corrupt.recipe"), ("golden-v2.mmheap", "corrupt-v2.recipe")];
    for (golden, name, edits) in
        all.iter().flat_map(|(golden, file)| recipes(file).into_iter().map(move |(n, e)| (golden, n, e)))
    {
        let path = dir.path().join(format!("{name}.mmheap"));
        copy_store(fixture(golden), &path)?;
        apply(&path, &edits);
        let p = path.to_str().unwrap();
        let out = mmheap(&["check", p, "--json"]);
        let v = json(&out)?;
        match code(&out) {
            0 => ensure(v["sound"] == true, format!("{name}: exit 0 but unsound"))?,
            1 => {
                problems += 1;
                ensure(
                    v["problems"].as_array().is_some_and(|a| !a.is_empty()),
                    format!("{name}: exit 1, no problems"),
                )?
            }
            2 => {
                unreadable += 1;
                ensure(v["readable"] == false, format!("{name}: exit 2 but readable"))?
            }
            c => {
                return Err(
                    format!("{name}: check exited {c}: {}", String::from_utf8_lossy(&out.stderr)).into()
                )
            }
        }
        // 0 all read, 1 read in part (and said so), 2 not a store (docs/cli.md).
        let stat = mmheap(&["stat", p, "--json"]);
        let v = if code(&stat) == 2 { Value::Null } else { json(&stat)? };
        let partial = v["errors"].as_array().is_some_and(|e| !e.is_empty());
        ensure(code(&stat) == [0, 1][usize::from(partial)] || code(&stat) == 2, format!("{name}: stat {v}"))?;
        let dump = mmheap(&["dump", p, "--json"]);
        let v = if code(&dump) == 2 { Value::Null } else { json(&dump)? };
        ensure(
            code(&dump) == [0, 1][usize::from(!v["error"].is_null())] || code(&dump) == 2,
            format!("{name}: dump {v}"),
        )?;
        let c = code(&mmheap(&["roots", p]));
        ensure(c <= 2, format!("{name}: roots exited {c}"))?;
    }
    ensure(problems > 20 && unreadable > 20, format!("{problems} with problems, {unreadable} unreadable"))
}

/// Runs `mmheap args` with its standard error a terminal (a pseudo-terminal of 24 x 100); its
/// exit code and what it drew there.
fn on_a_terminal(args: &[&str]) -> Result<(i32, String), Failed> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain calls on a descriptor this function owns; `ptsname_r` writes at most
    // `name.len()` bytes into `name`; `ws` is a valid winsize.
    let (master, slave) = unsafe {
        let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        ensure(fd >= 0, "posix_openpt")?;
        let master = std::fs::File::from_raw_fd(fd);
        let mut name = [0 as libc::c_char; 128];
        let ok = libc::grantpt(fd) == 0
            && libc::unlockpt(fd) == 0
            && libc::ptsname_r(fd, name.as_mut_ptr(), name.len()) == 0;
        ensure(ok, "a pseudo-terminal")?;
        let ws = libc::winsize { ws_row: 24, ws_col: 100, ws_xpixel: 0, ws_ypixel: 0 };
        libc::ioctl(fd, libc::TIOCSWINSZ, &ws);
        let path = std::ffi::CStr::from_ptr(name.as_ptr()).to_str()?.to_owned();
        (master, std::fs::OpenOptions::new().read(true).write(true).open(path)?)
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_mmheap"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(slave)
        .spawn()?;
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = std::io::Read::read_to_end(&mut &master, &mut out); // EIO once the child is gone
        out
    });
    let status = child.wait()?;
    let drawn = reader.join().map_err(|_| "reader")?;
    Ok((status.code().unwrap_or(-1), String::from_utf8_lossy(&drawn).into_owned()))
}

/// `check` and `recover` draw progress bars with real totals when standard error is a
/// terminal: `recover` drew none, and `check`'s read `0 B/0 B`.
fn progress_on_a_terminal() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("killed.mmheap");
    let p = path.to_str().unwrap();
    let mut filler = spawn("filler", &path, &[("MMHEAP_BLOCKS", "20000".into())]);
    let mut out = std::io::BufReader::new(filler.get().stdout.take().ok_or("stdout")?);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line)?;
    ensure(line.trim() == "ready", "filler ready")?;
    kill(filler)?;

    let (c, drawn) = on_a_terminal(&["check", p])?;
    ensure(c == 0, format!("check exit {c}: {drawn}"))?;
    ensure(drawn.contains("checking") && !drawn.contains("0 B/0 B"), format!("check drew {drawn:?}"))?;
    let (c, drawn) = on_a_terminal(&["recover", p])?;
    ensure(c == 0, format!("recover exit {c}: {drawn}"))?;
    ensure(drawn.contains("scanning") && drawn.contains("checking"), format!("recover drew {drawn:?}"))?;
    ensure(!drawn.contains("0 B/0 B"), format!("recover drew {drawn:?}"))?;
    // Not a terminal: nothing drawn.
    let o = mmheap(&["check", p]);
    ensure(o.stderr.is_empty(), String::from_utf8_lossy(&o.stderr).into_owned())
}
