//! `mmheap check`: the full integrity check, on a copy that shows the store at one moment.
//!
//! A copy taken under the store lock (or while nothing could change the store) is checked as
//! it is. One taken while a living process kept the lock for the whole wait may mix moments:
//! its problems are reported only if every one of [`COPIES`] copies shows them.

use std::path::Path;
use std::process::ExitCode;

use mmheap::inspect::{Snapshot, View};
use mmheap::{CheckReport, Error};
use serde_json::json;

use crate::{snapshot, unsettled, with_bar};

/// Copies a problem must be found in when none could be taken settled.
const COPIES: usize = 3;

pub fn run(file: &Path, json: bool) -> Result<ExitCode, Error> {
    let looked = with_bar(|| crate::look(file, looked).and_then(|l| l).and_then(|l| confirmed(file, l)));
    let (looked, copies) = match looked {
        Ok(l) => l,
        Err(e) => {
            match json {
                true => println!("{}", json!({ "readable": false, "error": e.to_string() })),
                false => eprintln!("mmheap: {} cannot be read as a store: {e}", file.display()),
            }
            return Ok(ExitCode::from(2));
        }
    };
    let Looked { report, view, holder } = looked;
    let note = match view {
        _ if report.is_sound() => None,
        View::Unsettled => Some(format!(
            "{}; the problems above were found in each of {copies} copies, and may be that \
             process's change in progress (a process stopped inside it, by a debugger or Ctrl-Z, \
             keeps them there): check again once it runs",
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

/// `first`; if its look was unsettled and it shows problems, the checks of further copies,
/// until one is settled or [`COPIES`] were taken: then only the problems every copy showed.
fn confirmed(file: &Path, mut first: Looked) -> Result<(Looked, usize), Error> {
    let mut copies = 1;
    while first.view == View::Unsettled && !first.report.problems.is_empty() && copies < COPIES {
        let again = looked(&snapshot(file)?)?;
        copies += 1;
        if again.view != View::Unsettled {
            return Ok((again, 1));
        }
        first
            .report
            .problems
            .retain(|p| again.report.problems.iter().any(|q| q.what == p.what && q.offset == p.offset));
        first.holder = again.holder;
    }
    Ok((first, copies))
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
    let dead = match report.dead_processes {
        0 => String::new(),
        n => format!("; {n} dead process(es) awaiting recovery"),
    };
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
