//! Named roots without a fixed limit: a hash table in the heap that grows by copying, found by
//! name without a scan, crash-safe while it grows (a kill at its commit loses and duplicates
//! nothing), and stores made with the fixed directory moving their roots into it.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use libtest_mimic::{Failed, Trial};
use mmheap::format::{ROOTS_OFFSET, ROOT_COUNT, ROOT_SIZE, SB_ROOT_TABLE};
use mmheap::{MappedManager, MemoryManager, Options};

fn main() {
    child_or_tests(child, || {
        let mut trials = vec![
            Trial::test("many_roots_are_set_found_removed_and_listed", many),
            Trial::test("roots_of_the_fixed_directory_move_into_the_table", moved),
            Trial::test("names_that_collide_and_emptied_entries_are_probed_past", probing),
            Trial::test("a_read_only_reader_reads_while_a_writer_grows_the_table", reader),
            Trial::test("salvage_keeps_the_roots_of_a_table_whose_header_was_hit", table_hit),
        ];
        for point in ["roots-table-filled", "roots-table-named"] {
            for first in [true, false] {
                let what = if first { "made" } else { "grown" };
                trials.push(Trial::test(
                    format!("a_kill_at_{point}_while_the_table_is_{what}_loses_nothing"),
                    move || killed(point, first),
                ));
            }
        }
        trials
    });
}

fn options() -> Options {
    Options::new().initial_size(1 << 20).max_size(1 << 32)
}

/// Root `name`'s block holds `value`.
fn set(m: &MappedManager, name: &str, value: u64) -> mmheap::Result<()> {
    let mut b = m.allocate(8)?;
    b.as_mut_slice()?.copy_from_slice(&value.to_le_bytes());
    m.set_root(name, &b)
}

fn get(m: &MappedManager, name: &str) -> Result<Option<u64>, Failed> {
    Ok(m.root(name)?.map(|b| u64::from_le_bytes(b.as_slice().try_into().unwrap())))
}

/// Every root's value, by name; sound, and every live block a root's.
fn all(m: &MappedManager) -> Result<BTreeMap<String, u64>, Failed> {
    let mut out = BTreeMap::new();
    for (name, _) in m.roots()? {
        let v = get(m, &name)?.ok_or(format!("{name} listed but not found"))?;
        ensure(out.insert(name.clone(), v).is_none(), format!("{name} listed twice"))?;
    }
    let report = m.check()?;
    ensure(report.is_sound(), format!("{:?}", report.problems))?;
    ensure(
        report.used_blocks == out.len() as u64,
        format!("{} live, {} roots", report.used_blocks, out.len()),
    )?;
    Ok(out)
}

fn many() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("many.mmheap");
    let m = MappedManager::create(&path, &options())?;
    let n = env_u64("MMHEAP_ROOTS", 100_000);
    for i in 0..n {
        set(&m, &format!("root number {i}"), i)?;
    }
    for i in (0..n).step_by(97) {
        ensure(get(&m, &format!("root number {i}"))? == Some(i), format!("root {i}"))?;
    }
    ensure(get(&m, "root number x")?.is_none(), "no such root")?;
    // Replacing keeps one entry; removing every odd one leaves emptied entries behind.
    set(&m, "root number 0", 1_000_000)?;
    for i in (1..n).step_by(2) {
        ensure(m.remove_root(&format!("root number {i}"))?, format!("remove {i}"))?;
    }
    ensure(!m.remove_root("root number 1")?, "removed once")?;
    let roots = all(&m)?;
    ensure(roots.len() as u64 == n.div_ceil(2), format!("{} roots", roots.len()))?;
    ensure(roots["root number 0"] == 1_000_000 && roots["root number 2"] == 2, "values")?;
    drop(m);
    // Another process finds them, and adds some (reusing emptied entries).
    wait_ok(spawn("count", &path, &[("MMHEAP_ROOTS", n.to_string())]), "the counter")?;
    let m = MappedManager::open(&path)?;
    ensure(all(&m)?.len() as u64 == n.div_ceil(2) + 100, "the other process's hundred too")?;
    Ok(())
}

fn moved() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("golden.mmheap");
    copy_store(fixture("golden-v2.mmheap"), &path)?;
    ensure(read_u64(&path, SB_ROOT_TABLE)? == 0, "the golden store has no table")?;
    let m = MappedManager::open(&path)?;
    ensure(m.roots()?.len() == 3, "three roots in the fixed directory")?;
    set(&m, "delta", 4)?;
    let names: Vec<String> = m.roots()?.into_iter().map(|(n, _)| n).collect();
    ensure(names == ["alpha", "beta", "delta", "empty"], format!("{names:?}"))?;
    ensure(m.root("alpha")?.ok_or("alpha")?.as_slice() == b"the first root", "alpha's bytes")?;
    ensure(m.check()?.is_sound(), "sound")?;
    m.flush()?;
    drop(m);
    ensure(read_u64(&path, SB_ROOT_TABLE)? != 0, "a table now")?;
    for i in 0..ROOT_COUNT {
        ensure(read_u64(&path, ROOTS_OFFSET + i * ROOT_SIZE)? == 0, "the fixed directory is empty")?;
    }
    let m = MappedManager::open(&path)?;
    ensure(m.roots()?.len() == 4 && get(&m, "delta")? == Some(4), "as left")?;
    Ok(())
}

fn probing() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let m = MappedManager::create(dir.path().join("p.mmheap"), &options())?;
    // Enough names that many share a first entry in a 64-entry table; then remove and re-add.
    for round in 0..3 {
        for i in 0..40 {
            set(&m, &format!("n{i}"), i + round * 100)?;
        }
        for i in (0..40).filter(|i| i % 3 == round % 3) {
            m.remove_root(&format!("n{i}"))?;
        }
    }
    let roots = all(&m)?;
    for i in 0..40u64 {
        let want = (i % 3 != 2).then_some(i + 200);
        ensure(
            roots.get(&format!("n{i}")).copied() == want,
            format!("n{i}: {:?}", roots.get(&format!("n{i}"))),
        )?;
    }
    Ok(())
}

/// A child adds roots to a store with `start` of them and is killed at `point` of the table's
/// making (`first`: the first root of a store; else the root that makes the table grow).
fn killed(point: &str, first: bool) -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("k.mmheap");
    let start = if first { 0 } else { 48 }; // a 64-entry table grows at its 49th root
    {
        let m = MappedManager::create(&path, &options())?;
        for i in 0..start {
            set(&m, &format!("kept {i}"), i)?;
        }
    }
    kill(paused("add", &path, point, &[])?)?;
    let m = MappedManager::open(&path)?;
    // The child's block for its root, and the table nothing names: the new one before the
    // commit, the old one after it (none when the first table was made).
    let freed = m.opening_recovery().ok_or("recovered at open")?.blocks_freed;
    let tables = u64::from(point == "roots-table-filled" || !first);
    ensure(freed == 1 + tables, format!("{freed} blocks freed, not {}", 1 + tables))?;
    let roots = all(&m)?;
    let kept = (0..start).all(|i| roots.get(&format!("kept {i}")) == Some(&i));
    ensure(kept && roots.len() as u64 == start, format!("{} roots after the kill: {roots:?}", roots.len()))?;
    set(&m, "after", 1)?;
    ensure(all(&m)?.len() as u64 == start + 1, "and the table still takes roots")?;
    Ok(())
}

fn reader() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("r.mmheap");
    let m = MappedManager::create(&path, &options())?;
    for i in 0..10 {
        set(&m, &format!("stable {i}"), i)?;
    }
    let writer = spawn("churn", &path, &[]);
    let reader = MappedManager::open_read_only(&path)?;
    let (mut lists, mut changing) = (0, 0);
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(3) {
        match reader.roots() {
            Ok(roots) => {
                lists += 1;
                let stable = roots.iter().filter(|(n, _)| n.starts_with("stable ")).count();
                ensure(stable == 10, format!("a list without every stable root: {stable}"))?;
                ensure(roots.windows(2).all(|w| w[0].0 < w[1].0), "sorted, each once")?;
            }
            Err(mmheap::Error::StoreChanging { .. }) => changing += 1,
            Err(e) => return Err(format!("a reader of a healthy store got {e}").into()),
        }
        ensure(reader.root_handle("stable 3")?.is_some(), "a stable root is found")?;
    }
    kill(writer)?;
    ensure(lists + changing > 0, "read")?;
    drop(m);
    Ok(())
}

fn table_hit() -> Result<(), Failed> {
    for (what, at, bit) in [("size", 5, 5), ("size", 6, 1), ("flags", 0, 2), ("count of entries", 32 + 3, 4)]
    {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("h.mmheap");
        let m = MappedManager::create(&path, &options())?;
        for i in 0..300 {
            set(&m, &format!("r{i}"), i)?;
        }
        m.flush()?;
        drop(m);
        let mut bytes = std::fs::read(&path)?;
        let table = read_u64(&path, SB_ROOT_TABLE)?;
        bytes[(table + at) as usize] ^= 1 << bit;
        std::fs::write(&path, &bytes)?;
        ensure(MappedManager::recover_file(&path).is_err(), format!("{what}: recovery refuses"))?;
        ensure(std::fs::read(&path)? == bytes, format!("{what}: and leaves the file"))?;
        MappedManager::salvage(&path)?;
        let m = MappedManager::open(&path)?;
        let roots = all(&m)?;
        let intact = (0..300).all(|i| roots.get(&format!("r{i}")) == Some(&i));
        ensure(roots.len() == 300 && intact, format!("{what}: {} of 300 roots after salvage", roots.len()))?;
        set(&m, "after", 1)?;
        ensure(all(&m)?.len() == 301, format!("{what}: the table takes roots again"))?;
    }
    Ok(())
}

fn read_u64(path: &Path, at: u64) -> Result<u64, Failed> {
    let bytes = std::fs::read(path)?;
    Ok(u64::from_le_bytes(bytes[at as usize..at as usize + 8].try_into()?))
}

fn child(role: &str, path: &Path) -> Res {
    let m = MappedManager::open(path)?;
    match role {
        "add" => set(&m, "added", 99)?,
        "churn" => {
            // Grows the table again and again, and empties it: until killed.
            for round in 0u64.. {
                for i in 0..500 {
                    set(&m, &format!("churn {round} {i}"), i)?;
                }
                for i in 0..500 {
                    m.remove_root(&format!("churn {round} {i}"))?;
                }
            }
        }
        "count" => {
            let n: u64 = std::env::var("MMHEAP_ROOTS")?.parse()?;
            let listed = m.roots()?.len() as u64;
            if listed != n.div_ceil(2) {
                return Err(format!("{listed} roots listed").into());
            }
            for i in (0..n).step_by(2).take(1000) {
                if m.root(&format!("root number {i}"))?.is_none() {
                    return Err(format!("root {i} not found").into());
                }
            }
            for i in 0..100 {
                set(&m, &format!("root number {}", 2 * i + 1), i)?;
            }
        }
        _ => return Err(format!("no role {role}").into()),
    }
    Ok(())
}
