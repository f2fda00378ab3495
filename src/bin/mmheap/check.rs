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
    let snap = match snapshot(file) {
        Ok(s) => s,
        Err(e) => {
            match json {
                true => println!("{}", json!({ "readable": false, "error": e.to_string() })),
                false => eprintln!("mmheap: {} cannot be read as a store: {e}", file.display()),
            }
            return Ok(ExitCode::from(2));
        }
    };
    let (report, snap, copies) = with_bar(|| confirmed(file, snap))?;
    let note = match snap.view() {
        _ if report.is_sound() => None,
        View::Unsettled => Some(format!(
            "{}; the problems above were found in each of {copies} copies, and may be that \
             process's change in progress (a process stopped inside it, by a debugger or Ctrl-Z, \
             keeps them there): check again once it runs",
            unsettled(&snap)
        )),
        View::DeadHolder => Some(format!(
            "the process in slot {} died holding the store lock: the problems above may be its \
             unfinished change, which `mmheap recover` repairs (it refuses damage, leaving the \
             store as it was)",
            snap.info().lock_holder.map_or_else(|| "?".to_owned(), |s| s.to_string())
        )),
        _ => None,
    };
    match json {
        true => print_json(&report, snap.view(), note.as_deref()),
        false => print_text(file, &report, note.as_deref()),
    }
    Ok(if report.is_sound() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The check of `snap`; if that copy is unsettled and shows problems, of further copies, until
/// one is settled or [`COPIES`] were taken: then only the problems every copy showed.
fn confirmed(file: &Path, mut snap: Snapshot) -> Result<(CheckReport, Snapshot, usize), Error> {
    let mut report = snap.check()?;
    let mut copies = 1;
    while snap.view() == View::Unsettled && !report.problems.is_empty() && copies < COPIES {
        let again = snapshot(file)?;
        let next = again.check()?;
        copies += 1;
        if again.view() != View::Unsettled {
            return Ok((next, again, 1));
        }
        report.problems.retain(|p| next.problems.iter().any(|q| q.what == p.what && q.offset == p.offset));
        snap = again;
    }
    Ok((report, snap, copies))
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
        "{}: {} blocks ({} live, {} cached, {} bookkeeping, {} free), {} problem(s){dead}",
        file.display(),
        report.blocks,
        report.used_blocks,
        report.cached_blocks,
        report.bookkeeping_blocks,
        report.free_blocks,
        report.problems.len(),
    );
}
