//! `mmheap stat`: the store's figures by category (live, cached, bookkeeping, free,
//! quarantined: `docs/cli.md`, "What the figures mean"), the size classes of the live and
//! cached blocks, the processes and the roots.
//!
//! Exit 0 when everything was read; 1 when the store was read but part of it could not be (the
//! heap does not walk to its end, or the roots cannot be listed: printed, with what could be);
//! 2 when it is not readable as a store.

use std::path::Path;
use std::process::ExitCode;

use mmheap::inspect::{ProcessInfo, SizeClass, StoreInfo, Unreferenced, View};
use mmheap::Error;
use serde_json::json;

use crate::{count, human, look};

pub fn run(file: &Path, json: bool) -> Result<ExitCode, Error> {
    // Gathered whole before anything is printed: a reader of our output that does not read
    // must not keep the store lock held.
    let looked = look(file, |snap| {
        (snap.info(), snap.size_classes(), snap.processes(), snap.roots(), snap.unreferenced())
    });
    let (info, classes, procs, roots, unreferenced) = match looked {
        Err(e) if json => return Ok(crate::unreadable_json(&e)),
        looked => looked?,
    };
    let mut errors: Vec<String> =
        [classes.as_ref().err(), roots.as_ref().err()].into_iter().flatten().map(|e| e.to_string()).collect();
    let damaged = roots.as_ref().map_or(0, |r| r.iter().filter(|r| r.problem.is_some()).count());
    if damaged > 0 {
        errors.push(format!("{} damaged (run `mmheap check`)", crate::count(damaged as u64, "root")));
    }
    let (mode, warnings) = file_warnings(file);
    if json {
        let v = json!({
            "path": file.display().to_string(),
            "file_mode": mode.map(|m| format!("{m:04o}")),
            "warnings": warnings,
            "store": info,
            "size_classes": classes.as_ref().ok(),
            "processes": procs,
            "unreferenced": unreferenced,
            "roots": roots.as_ref().ok(),
            "errors": errors,
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
    } else {
        figures(file, &info);
        for w in &warnings {
            println!("warning     {w}");
        }
        state(&info, &procs);
        match &classes {
            Ok(classes) => size_classes(classes),
            Err(e) => println!("live and cached blocks per size class: unavailable ({e})"),
        }
        processes(&procs, &unreferenced);
        match &roots {
            Ok(roots) => {
                println!("roots ({}):", roots.len());
                for r in roots {
                    println!("  {}", crate::root_line(r));
                }
            }
            Err(e) => println!("roots: unavailable ({e})"),
        }
    }
    for e in &errors {
        eprintln!("mmheap: part of the store could not be read: {e}");
    }
    Ok(if errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The store file's permission bits, and what they let users besides its owner do: a store
/// every user may read shows them every block; one group or others may write, a writer refuses
/// to open (`Error::UnsafeFile`) unless allowed.
fn file_warnings(file: &Path) -> (Option<u32>, Vec<String>) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(file) else { return (None, Vec::new()) };
    let mode = meta.permissions().mode() & 0o7777;
    let mut warnings = Vec::new();
    if mode & 0o004 != 0 {
        warnings.push(format!(
            "the store file is readable by every user (mode {mode:04o}): any process on the machine can read its blocks"
        ));
    }
    if mode & 0o022 != 0 {
        warnings.push(format!(
            "group or others may write the store file (mode {mode:04o}): a process opens it to write only with Options::allow_shared_permissions (recover: --allow-shared-permissions)"
        ));
    }
    (Some(mode), warnings)
}

/// The figures by category, which add up to the heap.
fn figures(file: &Path, info: &StoreInfo) {
    println!("store       {} (format v{})", file.display(), info.format_version);
    println!(
        "capacity    {} of at most {}, grown {}",
        human(info.capacity),
        human(info.max_size),
        count(info.growths, "time")
    );
    if !info.walked {
        println!("            (the heap does not walk to its end: figures from the store's counters)");
    }
    println!(
        "live        {} in {} (users hold them)",
        human(info.used_bytes),
        count(info.live_blocks, "block")
    );
    println!(
        "cached      {} in {} (parked in thread caches for reuse)",
        human(info.cached_bytes),
        count(info.cached_blocks, "block")
    );
    println!(
        "bookkeeping {} in {} (hold and cache counter tables, channel rings, spans and pages)",
        human(info.bookkeeping_bytes),
        count(info.bookkeeping_blocks, "block")
    );
    let blocks = info.free_blocks.map_or(String::new(), |n| format!(" in {}", count(n, "block")));
    println!(
        "free        {}{blocks}, largest {}, fragmentation {:.1}%",
        human(info.free_bytes),
        human(info.largest_free),
        info.fragmentation * 100.0
    );
    if info.quarantined_bytes > 0 {
        println!(
            "quarantine  {} of damage fenced off by salvage (never handed out)",
            human(info.quarantined_bytes)
        );
    }
}

/// Shutdown, lock and recoveries.
fn state(info: &StoreInfo, procs: &[ProcessInfo]) {
    let dead = procs.iter().filter(|p| !p.alive).count();
    if info.clean {
        println!("shutdown    clean");
    } else {
        println!("shutdown    NOT clean: {dead} dead process(es) left state behind (run `mmheap recover`)");
    }
    match (info.lock_holder, info.view) {
        (None, View::Locked) => println!("lock        free (taken for the look, and given back)"),
        (None, _) => println!("lock        free"),
        (Some(s), View::DeadHolder) => println!("lock        held by slot {s}, which is dead"),
        (Some(s), _) => println!("lock        held by slot {s}"),
    }
    println!("recoveries  {} ({} dead process(es) reclaimed)", info.recoveries, info.recovered_processes);
}

/// The table, with its sums: the live and cached figures above.
fn size_classes(classes: &[SizeClass]) {
    let blocks: u64 = classes.iter().map(|c| c.blocks).sum();
    let bytes: u64 = classes.iter().map(|c| c.bytes).sum();
    println!("live and cached blocks per size class ({}, {}):", count(blocks, "block"), human(bytes));
    for c in classes {
        let word = if c.blocks == 1 { "block " } else { "blocks" };
        println!("  <= {:>10}  {:>10} {word}  {:>10}", human(c.max_size), c.blocks, human(c.bytes));
    }
}

/// The processes, and for each how its blocks without a count split (parked or lent).
fn processes(procs: &[ProcessInfo], unreferenced: &[Unreferenced]) {
    println!("processes ({}):", procs.len());
    for p in procs {
        let state = if p.alive { "alive" } else { "DEAD" };
        let mut line =
            format!("  slot {:>3}  pid {:>8}  {state:<5}  {}", p.slot, p.pid, count(p.holds, "hold"));
        if let Some(u) = unreferenced.iter().find(|u| u.owner == p.slot) {
            line += &format!(
                "; {} without a count: {} parked (cached), {} lent (live)",
                count(u.blocks, "block"),
                u.parked_blocks,
                u.blocks.saturating_sub(u.parked_blocks)
            );
        }
        println!("{line}");
    }
}
