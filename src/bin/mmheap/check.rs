//! `mmheap check`: the full integrity check, of the store at one moment.
//!
//! The store is checked in place under its lock, or on a copy taken under it (or while nothing
//! could change the store). A copy taken while a living process kept the lock, or that could
//! not be locked here, may mix moments, and a check of it finds the tears (counters that
//! disagree with the blocks, free blocks on no list: the same problems at the same offsets in
//! every torn copy). Such a copy is checked only when the next copy is the same byte for byte
//! (nothing changed between them), trying up to [`COPIES`] copies; a store that never holds
//! still that long is not checked: exit 2, saying why.

use std::path::Path;
use std::process::ExitCode;

use mmheap::inspect::{Snapshot, View};
use mmheap::{CheckReport, Error};
use serde_json::json;

use crate::{take, unsettled, with_bar, BETWEEN_COPIES};

/// Copies taken at most, one after the other, for two that are the same.
const COPIES: usize = 6;

pub fn run(file: &Path, json: bool) -> Result<ExitCode, Error> {
    let looked = with_bar(|| {
        let first = Snapshot::in_place(file, |snap| (snap.view() != View::Unsettled).then(|| looked(snap)))?;
        match first {
            Some(looked) => Ok((looked?, 1)),
            None => held_still(file),
        }
    });
    let (looked, copies) = match looked {
        Ok(l) => l,
        Err(e) => {
            if json {
                return Ok(crate::unreadable_json(&e));
            }
            eprintln!("mmheap: {}", crate::told(&e));
            return Ok(ExitCode::from(2));
        }
    };
    let Looked { report, view, holder } = looked;
    let note = match view {
        _ if report.is_sound() => None,
        View::Unsettled => Some(format!(
            "{}; the problems above were found in a copy that the next one matched byte for byte \
             (of {copies} taken), so nothing changed between them: they may be a change that a \
             process stopped inside it (by a debugger or Ctrl-Z) keeps half made: check again \
             once it runs",
            unsettled(holder)
        )),
        View::DeadHolder => Some(format!(
            "the process in slot {} died holding the store lock: the problems above may be its \
             unfinished change, which `mmheap recover` repairs (it refuses damage, leaving the \
             store as it was)",
            holder.map_or_else(|| "?".to_owned(), |s| s.to_string())
        )),
        _ => None,
    };
    match json {
        true => print_json(&report, view, note.as_deref()),
        false => print_text(file, &report, note.as_deref()),
    }
    Ok(if report.is_sound() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// A check, how far the look it was made on shows one moment, and who held the lock then.
struct Looked {
    report: CheckReport,
    view: View,
    holder: Option<u32>,
}

/// The check of `snap`.
fn looked(snap: &Snapshot) -> Result<Looked, Error> {
    let holder = match snap.view() {
        View::Locked => None,
        _ => snap.info().lock_holder,
    };
    Ok(Looked { report: snap.check()?, view: snap.view(), holder })
}

/// The check of a copy of a store that could not be locked, once two copies taken one after
/// the other are the same (or one could be taken settled), and how many copies were taken; an
/// error (`StoreChanging`) if none of [`COPIES`] copies is the same as the one before.
fn held_still(file: &Path) -> Result<(Looked, usize), Error> {
    let mut before = take(file)?;
    for copies in 2..=COPIES {
        std::thread::sleep(BETWEEN_COPIES);
        let now = take(file)?;
        if before.view() != View::Unsettled {
            return Ok((looked(&before)?, copies));
        }
        if now.same_copy_as(&before) {
            let why = unsettled(before.info().lock_holder);
            eprintln!("mmheap: note: {why}; two copies taken one after the other were the same, and one was checked");
            return Ok((looked(&before)?, copies));
        }
        before = now;
    }
    let why = unsettled(before.info().lock_holder);
    eprintln!(
        "mmheap: {why}; no two of {COPIES} copies taken one after the other were the same, so the \
         store was changing while it was read, and a check of any of them would show the change \
         half made as problems: not checked (check again when it is quiet, or as a user who may \
         write the store)"
    );
    Err(crate::in_use(&before))
}

fn print_json(report: &CheckReport, view: View, note: Option<&str>) {
    let problems: Vec<_> =
        report.problems.iter().map(|p| json!({"what": p.what, "offset": p.offset})).collect();
    let v = json!({
        "readable": true,
        "sound": report.is_sound(),
        "blocks": report.blocks,
        "used_blocks": report.used_blocks,
        "free_blocks": report.free_blocks,
        "used_bytes": report.used_bytes,
        "free_bytes": report.free_bytes,
        "cached_blocks": report.cached_blocks,
        "cached_bytes": report.cached_bytes,
        "bookkeeping_blocks": report.bookkeeping_blocks,
        "bookkeeping_bytes": report.bookkeeping_bytes,
        "quarantined_blocks": report.quarantined_blocks,
        "quarantined_bytes": report.quarantined_bytes,
        "dead_processes": report.dead_processes,
        "cycle_blocks": report.cycle_blocks,
        // Blocks are counted by a whole walk: none counted means the heap does not walk.
        "walked": report.blocks > 0,
        "problems": problems,
        "view": view,
        "note": note,
    });
    println!("{}", serde_json::to_string_pretty(&v).expect("json"));
}

fn print_text(file: &Path, report: &CheckReport, note: Option<&str>) {
    for p in &report.problems {
        println!("problem at {:#x}: {}", p.offset, p.what);
    }
    if let Some(note) = note {
        println!("note: {note}");
    }
    let mut dead = match report.dead_processes {
        0 => String::new(),
        n => format!("; {n} dead process(es) awaiting recovery"),
    };
    if !report.cycle_blocks.is_empty() {
        dead += &format!(
            "; {} kept only by cycles of links (`mmheap recover --collect-cycles` frees them)",
            crate::count(report.cycle_blocks.len() as u64, "block")
        );
    }
    if report.blocks == 0 {
        // Blocks are counted by a whole walk: none counted means the heap does not walk.
        println!(
            "{}: the heap does not walk to its end, so its blocks were not counted; {} problem(s){dead}",
            file.display(),
            report.problems.len()
        );
        return;
    }
    println!(
        "{}: {} ({} live, {} cached, {} bookkeeping, {} free), {} problem(s){dead}",
        file.display(),
        crate::count(report.blocks, "block"),
        report.used_blocks,
        report.cached_blocks,
        report.bookkeeping_blocks,
        report.free_blocks,
        report.problems.len(),
    );
}
