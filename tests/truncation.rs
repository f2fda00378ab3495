//! A store file truncated by someone else while a process has it mapped. A touch of a page
//! past the new end raises SIGBUS, which no library can turn into an error; what the library
//! does is look at the file's length where that is cheap and the next step would touch what may
//! be gone: before a growth (which reads the heap's last block, and would refill the file with
//! zeros), when it takes the lock over from a dead holder (the repair reads anywhere), and when
//! a store is opened. Each is then `Error::Truncated`, and the process lives. Children attached
//! before the truncation show it: they would die of SIGBUS if the check were missing.

mod common;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::*;
use libtest_mimic::{Failed, Trial};
use mmheap::{Error, MappedManager, MemoryManager, Options};

fn main() {
    child_or_tests(child, || {
        vec![
            Trial::test("truncated::open_refuses_a_file_shorter_than_its_header_says", open_refuses),
            Trial::test("truncated::growth_after_a_truncation_is_an_error", growth),
            Trial::test("truncated::a_lock_taken_over_after_a_truncation_is_an_error", takeover),
            Trial::test("truncated::after_truncated_every_call_returns_and_drops_finish", after_truncated),
            Trial::test("truncated::a_manager_dropped_after_an_unseen_truncation_lives", unseen),
            Trial::test("truncated::salvage_reports_a_roots_table_lost_past_the_cut", lost_roots),
        ]
    });
}

const CAPACITY: u64 = 1 << 20;

fn store(path: &Path) -> Res {
    let m = MappedManager::create(path, &Options::new().initial_size(CAPACITY).max_size(64 << 20))?;
    let mut b = m.allocate(1000)?;
    b.as_mut_slice()?.fill(9);
    m.set_root("kept", &b)?;
    Ok(())
}

fn truncated(r: mmheap::Result<impl Sized>, actual: u64) -> bool {
    matches!(r, Err(Error::Truncated { expected, actual: a }) if expected == CAPACITY && a == actual)
}

/// Open (the writer's, the reader's and the inspector's) reads the file's length against the
/// superblock's capacity before it maps anything.
fn open_refuses() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("t.mmheap");
    store(&path)?;
    let half = CAPACITY / 2;
    std::fs::OpenOptions::new().write(true).open(&path)?.set_len(half)?;
    ensure(truncated(MappedManager::open(&path), half), "open says Truncated")?;
    ensure(truncated(MappedManager::open_read_only(&path), half), "open_read_only says Truncated")?;
    ensure(truncated(mmheap::inspect::Snapshot::take(&path), half), "the inspector says Truncated")?;
    // Nothing was written: the length is as the truncation left it.
    ensure(std::fs::metadata(&path)?.len() == half, "the file's length unchanged")
}

/// Tells `kid` to go on and waits for its verdict.
fn go_on(mut kid: Kid) -> Result<(), Failed> {
    writeln!(kid.get().stdin.as_mut().ok_or("child stdin")?, "go")?;
    let status = kid.take().wait()?;
    ensure(status.success(), format!("the attached child exited with {status} (SIGBUS is signal 7)"))
}

/// A child `role` attached to the store at `path`, that has said `ready`.
fn attached(role: &str, path: &Path) -> Result<Kid, Failed> {
    let mut kid = spawn(role, path, &[]);
    let line = lines_of(&mut kid)?.recv_timeout(Duration::from_secs(30))?;
    ensure(line == "ready", format!("{role} said {line:?}"))?;
    Ok(kid)
}

fn growth() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("t.mmheap");
    store(&path)?;
    let kid = attached("grow", &path)?;
    std::fs::OpenOptions::new().write(true).open(&path)?.set_len(CAPACITY / 2)?;
    go_on(kid)?;
    ensure(std::fs::metadata(&path)?.len() == CAPACITY / 2, "the growth refilled the file")
}

fn takeover() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("t.mmheap");
    store(&path)?;
    let kid = attached("take-over", &path)?;
    kill(paused("big-alloc", &path, "alloc-carved", &[])?)?;
    std::fs::OpenOptions::new().write(true).open(&path)?.set_len(CAPACITY / 2)?;
    go_on(kid)
}

/// The reviewer's reproducer, in a child: a store cut to `CUT` bytes under its creator, which
/// sees `Truncated` on a growth; after it every call of the manager is `Truncated` and dropping
/// the blocks and the manager finishes (no SIGBUS). The next opener is refused (the file is
/// short); put back to its length, the store is salvaged, and the creator's registry slot is
/// reclaimed while the creator still lives (a block past the cut keeps its heap, and so its
/// descriptor, open: the slot was given up when the manager went).
fn after_truncated() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("t.mmheap");
    let mut kid = spawn("cut-small", &path, &[]);
    let said = lines_of(&mut kid)?.recv_timeout(Duration::from_secs(30));
    let full: u64 = said.as_deref().unwrap_or("").parse().map_err(|_| format!("the child said {said:?}"))?;
    ensure(std::fs::metadata(&path)?.len() == CUT, "nothing refilled the cut file")?;
    let refused = matches!(MappedManager::open(&path), Err(Error::Truncated { expected, actual: CUT }) if expected == full);
    ensure(refused, "the next open is refused as Truncated")?;
    std::fs::OpenOptions::new().write(true).open(&path)?.set_len(full)?;
    let report = MappedManager::salvage(&path)?;
    ensure(report.recovery.dead_processes == 1, format!("salvage reclaimed the creator's slot: {report:?}"))?;
    let m = MappedManager::open(&path)?;
    let check = m.check()?;
    ensure(check.problems.is_empty(), format!("the salvaged store checks clean: {:?}", check.problems))?;
    ensure(m.stats()?.attached_processes == 1, "the creator is not counted as attached")?;
    let b = m.allocate(20_000)?;
    ensure(b.len() == 20_000, "the salvaged store allocates")?;
    go_on(kid)
}

/// A manager whose process never noticed the truncation: its drop looks at the file's length
/// first (one `fstat`) and leaves without touching the store.
fn unseen() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("t.mmheap");
    wait_ok(spawn("cut-unseen", &path, &[]), "the child that drops its manager after a cut")
}

/// The reviewer's case: 96 roots whose table lay past a cut at 600,000 bytes; the file put back
/// to its length (zeros past the cut), salvage drops every root with the table, and says so
/// (the library's report and `mmheap recover --salvage`).
fn lost_roots() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("z.mmheap");
    {
        let m = MappedManager::create(&path, &Options::new().initial_size(65536).max_size(8 << 20))?;
        for i in 0..96 {
            m.set_root(&format!("g{i}"), &m.allocate(50_000)?)?;
        }
    }
    let full = std::fs::metadata(&path)?.len();
    let file = std::fs::OpenOptions::new().write(true).open(&path)?;
    file.set_len(600_000)?;
    file.set_len(full)?;
    let copy = dir.path().join("copy.mmheap");
    std::fs::copy(&path, &copy)?;
    let report = MappedManager::salvage(&path)?;
    let lost: Vec<_> = report.lost_tables.iter().map(|t| (t.kind, t.offset >= 600_000, t.names)).collect();
    ensure(
        lost == [("roots table", true, None)],
        format!("the lost table reported: {:?}", report.lost_tables),
    )?;
    ensure(report.found_damage(), "salvage found damage")?;
    ensure(MappedManager::open(&path)?.roots()?.is_empty(), "no roots left")?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mmheap"))
        .args(["recover", "--salvage"])
        .arg(&copy)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure(
        text.contains("lost the roots table at") && text.contains("an unknown number of name(s)"),
        format!("mmheap recover --salvage says the table was lost: {text}"),
    )
}

const CUT: u64 = 40_000;

fn cut_small(path: &Path) -> Res {
    let m = MappedManager::create(path, &Options::new().initial_size(65536).max_size(4 << 20))?;
    let a = m.allocate(100)?;
    let b = m.allocate(20_000)?;
    // A handle and a clone taken before the cut (each touches the block's header).
    let (handle, c) = (b.handle(), b.clone());
    let full = std::fs::metadata(path)?.len();
    std::fs::OpenOptions::new().write(true).open(path)?.set_len(CUT)?;
    let cut = |r: mmheap::Result<()>, what: &str| match r {
        Err(Error::Truncated { expected, actual: CUT }) if expected == full => Ok(()),
        other => Err(format!("{what} after the cut: {other:?}")),
    };
    cut(m.allocate(200_000).map(drop), "allocate(200000)")?;
    cut(m.stats().map(drop), "stats")?;
    cut(m.allocate(16).map(drop), "allocate(16)")?;
    cut(m.allocate(20_000).map(drop), "allocate(20000)")?;
    cut(m.trim(), "trim")?;
    cut(m.check().map(drop), "check")?;
    cut(m.recover().map(drop), "recover")?;
    cut(m.root("kept").map(drop), "root")?;
    cut(m.set_root("b", &b), "set_root")?;
    cut(m.block_from_handle(handle).map(drop), "block_from_handle")?;
    drop(b);
    drop(c);
    drop(a);
    drop(m);
    println!("{full}");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(())
}

fn cut_unseen(path: &Path) -> Res {
    let m = MappedManager::create(path, &Options::new().initial_size(65536).max_size(4 << 20))?;
    let mut blocks = Vec::new();
    for n in [100, 3000, 20_000, 100_000] {
        blocks.push(m.allocate(n)?);
    }
    drop(blocks);
    std::fs::OpenOptions::new().write(true).open(path)?.set_len(CUT)?;
    drop(m);
    Ok(())
}

fn child(role: &str, path: &Path) -> Res {
    match role {
        "cut-small" => return cut_small(path),
        "cut-unseen" => return cut_unseen(path),
        _ => {}
    }
    let m = MappedManager::open(path)?;
    if role == "big-alloc" {
        let _b = m.allocate(100_000)?;
        return Err("no pause point reached".into());
    }
    println!("ready");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let half = CAPACITY / 2;
    let opened = MappedManager::open(path);
    if !truncated(opened, half) {
        return Err("a second open of the truncated store was not Truncated".into());
    }
    let got = match role {
        // More than the store holds: no free block is searched, the heap must grow.
        "grow" => m.allocate(8 << 20),
        // The killed child holds the lock: this allocation takes it over.
        "take-over" => m.allocate(100_000),
        _ => return Err(format!("no role {role}").into()),
    };
    match got {
        Err(Error::Truncated { expected, actual }) if expected == CAPACITY && actual == half => Ok(()),
        other => Err(format!("{role} after the truncation: {other:?}").into()),
    }
}
