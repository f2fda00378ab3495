//! `mmheap recover`: reclaims what dead processes left, or salvages a damaged store, then
//! checks it. Progress bars on standard error (when it is a terminal) follow the walks of the
//! heap: scanning and rebuilding it, then checking and counting its blocks.
//!
//! Exit 0: recovered and sound; 1: recovered, but the closing check found problems; 2: refused
//! (a damaged store, left as it was) or failed.

use std::path::Path;
use std::process::ExitCode;

use mmheap::inspect::View;
use mmheap::{Error, MappedManager, Options, Problem, RecoveryReport, SalvageReport};

use crate::{human, look, snapshot, with_bar};

fn describe(r: &RecoveryReport) -> String {
    format!(
        "{} dead process(es), {} block(s) freed, {} from caches and {} of bookkeeping ({}), {} owner reference(s) and {} hold(s) released",
        r.dead_processes,
        r.blocks_freed,
        r.cached_blocks_freed,
        r.bookkeeping_blocks_freed,
        human(r.bytes_freed),
        r.owner_refs_released,
        r.holds_released
    )
}

fn describe_salvage(r: &SalvageReport) -> Vec<String> {
    let mut lines = vec![format!("recovery: {}", describe(&r.recovery))];
    for &(offset, size) in &r.quarantined {
        lines.push(format!("quarantined {} at {offset:#x}", human(size)));
    }
    for d in &r.dropped {
        lines.push(format!("dropped {} {:?}: it named {:#x}, which is lost", d.kind, d.name, d.target));
    }
    for c in &r.cleared {
        lines.push(format!(
            "cleared a copy of a reference to {:#x} (a {} of {:?}): the block is kept by its others",
            c.target, c.kind, c.name
        ));
    }
    for b in &r.bordering {
        lines.push(format!(
            "kept {} {:?} ({:#x}): a quarantined range starts where it ends; if its size was what was hit, its last bytes are there",
            b.kind, b.name, b.target
        ));
    }
    for name in &r.renamed {
        lines.push(format!("renamed a damaged root or channel name to {name:?}"));
    }
    for n in &r.names_moved {
        lines.push(format!(
            "moved {} {:?} ({:#x}) to where its name finds it: its name, or an entry on the way to it, was damaged",
            n.kind, n.name, n.target
        ));
    }
    for n in &r.renewed {
        lines.push(format!(
            "renewed {} {:?} ({:#x}): its generation or record was damaged; its old handles are stale",
            n.kind, n.name, n.target
        ));
    }
    for n in &r.resized {
        lines.push(format!(
            "gave {} {:?} ({:#x}) back the size a damaged header cut short",
            n.kind, n.name, n.target
        ));
    }
    for off in &r.unshared {
        lines.push(format!(
            "the block at {off:#x} lost its shared area (damaged): the area's bytes are now the end of its own"
        ));
    }
    for n in &r.rings_repaired {
        lines.push(format!(
            "repaired the ring of {} {:?} ({:#x}): its head or tail left messages outside its queue, or a slot word was damaged",
            n.kind, n.name, n.target
        ));
    }
    for t in &r.lost_tables {
        let names = t.names.map_or("an unknown number of".to_owned(), |n| n.to_string());
        lines.push(format!(
            "lost the {} at {:#x}, and with it {names} name(s): it could not be read",
            t.kind, t.offset
        ));
    }
    if r.key_restored {
        lines.push("the store's key was damaged: restored from the blocks' check words".to_owned());
    }
    if r.generation_counter_restored {
        lines.push(
            "the store's generation counter was out of range: set above every sealed generation".to_owned(),
        );
    }
    if !r.found_damage() {
        lines.push("no damage found".to_owned());
    }
    lines
}

/// `trust`: what files a writing open accepts (`--allow-shared-permissions`).
pub fn run(
    file: &Path,
    dry_run: bool,
    salvage: bool,
    collect_cycles: bool,
    trust: &Options,
) -> Result<ExitCode, Error> {
    if dry_run {
        let mut snap = snapshot(file)?;
        let before = problems(|| snap.check());
        let lines = match salvage {
            true => describe_salvage(&with_bar(|| snap.salvage_dry_run())?),
            false => vec![format!("reclaim: {}", describe(&with_bar(|| snap.recover_dry_run())?))],
        };
        let repaired = lines_repaired(&before, &problems(|| snap.check()));
        for l in only_damage_if_unrepaired(lines, &repaired) {
            match salvage {
                true => println!("would do: {l}"),
                false => println!("would {l}"),
            }
        }
        for l in &repaired {
            println!("would {}", l.replacen("repaired:", "repair:", 1));
        }
        return Ok(ExitCode::SUCCESS);
    }
    // What check sees before: what the recovery repairs is said, not done silently (the free
    // lists, counters and footers it derives anew from the blocks, a dead holder's half change).
    // Not from a copy that may mix moments (a living holder kept the lock): its problems may be
    // a change in progress, which nobody repairs.
    let before = problems(|| {
        look(file, |snap| match snap.view() {
            View::Unsettled => Ok(mmheap::CheckReport::default()),
            _ => snap.check(),
        })?
    });
    let lines = if salvage {
        describe_salvage(&with_bar(|| MappedManager::salvage_with(file, trust))?)
    } else {
        let recovered = match collect_cycles {
            // Recovery at the open, then the one that frees cycles too.
            true => with_bar(|| MappedManager::open_with(file, trust)?.collect_cycles()),
            false => with_bar(|| MappedManager::recover_file_with(file, trust)),
        };
        match recovered {
            Ok(r) => vec![format!("reclaimed: {}", describe(&r))],
            Err(e @ Error::Corrupt { .. }) => {
                eprintln!("mmheap: {}", crate::told(&e));
                eprintln!(
                    "mmheap: the store is damaged, not only interrupted; it was left as it was. \
                     `mmheap recover --salvage` fences the damage off (see `mmheap check`)."
                );
                return Ok(ExitCode::from(2));
            }
            Err(e) => return Err(e),
        }
    };
    let report = with_bar(|| MappedManager::open_with(file, trust)?.check())?;
    let repaired = lines_repaired(&before, &report.problems);
    for l in only_damage_if_unrepaired(lines, &repaired).iter().chain(&repaired) {
        println!("{l}");
    }
    for p in &report.problems {
        println!("problem at {:#x}: {}", p.offset, p.what);
    }
    println!("check: {} problem(s)", report.problems.len());
    Ok(if report.is_sound() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The problems a check finds, or none if it cannot run (the recovery then says why).
fn problems(check: impl FnOnce() -> Result<mmheap::CheckReport, Error>) -> Vec<Problem> {
    check().map(|r| r.problems).unwrap_or_default()
}

/// A line for each problem `before` showed that `after` does not: what the recovery repaired.
fn lines_repaired(before: &[Problem], after: &[Problem]) -> Vec<String> {
    before
        .iter()
        .filter(|p| !after.contains(p))
        .map(|p| format!("repaired: {} at {:#x}", p.what, p.offset))
        .collect()
}

/// Salvage's "no damage found" is true only if nothing was repaired either.
fn only_damage_if_unrepaired(mut lines: Vec<String>, repaired: &[String]) -> Vec<String> {
    if !repaired.is_empty() {
        lines.retain(|l| l != "no damage found");
    }
    lines
}
