//! `mmheap dump`: the blocks of a store, or one block with its bytes.
//!
//! Each block and each slot in use has a state (`docs/cli.md`, "Block states"): live, parked,
//! lent/parked, free, bookkeeping or quarantined. Exit 0 when the whole heap was listed, 1 when
//! the walk stopped at damage (what came before is listed, and where it stopped), 2 when the
//! file is not readable as a store.

use std::path::Path;
use std::process::ExitCode;

use mmheap::inspect::{BlockInfo, BlockKind, Unreferenced};
use mmheap::Error;
use serde_json::json;

use crate::{human, look};

/// Lists at most `limit` (default 1000) blocks in address order.
pub fn list(file: &Path, limit: Option<usize>, json: bool) -> Result<ExitCode, Error> {
    let ((blocks, err), unreferenced) = match look(file, |snap| (snap.blocks(|_| {}), snap.unreferenced())) {
        Err(e) if json => return Ok(crate::unreadable_json(&e)),
        looked => looked?,
    };
    let shown = &blocks[..blocks.len().min(limit.unwrap_or(1000))];
    let code = if err.is_some() { ExitCode::from(1) } else { ExitCode::SUCCESS };
    if json {
        let v = json!({
            "blocks": shown,
            "total": blocks.len(),
            "unreferenced": unreferenced,
            "error": err.as_ref().map(|e| e.to_string()),
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        if let Some(e) = err {
            eprintln!("mmheap: the heap could not be walked to its end: {e}");
        }
        return Ok(code);
    }
    println!("{}", header());
    for b in shown {
        println!("{}", block_line(b));
    }
    if shown.len() < blocks.len() {
        println!("... {} more (use --limit)", blocks.len() - shown.len());
    }
    for u in unreferenced.iter().filter(|u| u.parked_blocks > 0 && u.parked_blocks < u.blocks) {
        println!("{}", split_line(u));
    }
    if let Some(e) = err {
        println!("walk stopped: {e}");
        eprintln!("mmheap: the heap could not be walked to its end: {e}");
    }
    Ok(code)
}

/// Why some blocks are `lent/parked`: how many of the process's are which.
fn split_line(u: &Unreferenced) -> String {
    format!(
        "slot {}: of its {} blocks without a count ({}), its thread caches keep {} parked ({}); \
         the other {} are lent to its MemoryBlocks (the store does not record which is which)",
        u.owner,
        u.blocks,
        human(u.bytes),
        u.parked_blocks,
        human(u.parked_bytes),
        u.blocks.saturating_sub(u.parked_blocks)
    )
}

/// Shows the block (or slot) at `offset` and the first `limit` (default 256) bytes of its
/// payload. Exit 1 if no block starts there.
pub fn one(file: &Path, offset: u64, limit: Option<usize>, json: bool) -> Result<ExitCode, Error> {
    let found = look(file, |snap| {
        let (blocks, err) = snap.blocks(|_| {});
        // A slot is named by its id (as handles and roots name it) or found where it starts.
        let found = (blocks.iter())
            .find(|b| b.id == offset)
            .or_else(|| blocks.iter().find(|b| b.offset == offset && b.kind == BlockKind::Slot))
            .map(|b| (b.clone(), snap.payload(b.id)));
        (found, err)
    });
    let (found, err) = match found {
        Err(e) if json => return Ok(crate::unreadable_json(&e)),
        looked => looked?,
    };
    let Some((block, payload)) = found else {
        let mut why = format!("no block starts at {offset:#x}");
        if let Some(e) = err {
            why += &format!(" (the walk of the heap stopped before its end: {e})");
        }
        match json {
            true => println!("{}", json!({ "block": null, "payload": null, "error": why })),
            false => eprintln!("mmheap: {why}"),
        }
        return Ok(ExitCode::from(1));
    };
    let limit = limit.unwrap_or(256);
    if json {
        let error = payload.as_ref().err().map(|e| e.to_string());
        let payload = payload.as_ref().ok().map(|b| {
            let hex: String = b.iter().take(limit).map(|x| format!("{x:02x}")).collect();
            json!({ "len": b.len(), "shown": b.len().min(limit), "hex": hex })
        });
        let v = json!({ "block": block, "payload": payload, "error": error });
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}", block_line(&block));
    match payload {
        Ok(bytes) => hex_dump(&bytes, limit),
        Err(e) => println!("no payload to show: {e}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the first `limit` bytes of `bytes`, 16 to a row, and how many were left out.
fn hex_dump(bytes: &[u8], limit: usize) {
    let shown = &bytes[..bytes.len().min(limit)];
    for (i, row) in shown.chunks(16).enumerate() {
        let hex: Vec<String> = row.iter().map(|x| format!("{x:02x}")).collect();
        let text: String =
            row.iter().map(|&x| if x.is_ascii_graphic() || x == b' ' { x as char } else { '.' }).collect();
        println!("{:08x}  {:<47}  {text}", i * 16, hex.join(" "));
    }
    if shown.len() < bytes.len() {
        println!("... {} more byte(s) of {} (use --limit)", bytes.len() - shown.len(), bytes.len());
    }
}

fn header() -> String {
    format!(
        "{:>14} {:>5} {:>10} {:>10} {:>11} {:>5} {:>5} {:>4} {:>10}",
        "offset", "kind", "size", "len", "state", "refs", "owner", "pub", "generation"
    )
}

fn block_line(b: &BlockInfo) -> String {
    let owner = b.owner.map_or("-".to_owned(), |o| o.to_string());
    let kind = match b.kind {
        BlockKind::Span => "span",
        BlockKind::Page => "page",
        BlockKind::Slot => "slot",
        BlockKind::Quarantined => "range",
        _ => "block",
    };
    let mut line = format!(
        "{:>#14x} {kind:>5} {:>10} {:>10} {:>11} {:>5} {:>5} {:>4} {:>10}",
        b.offset,
        b.size,
        b.len,
        b.state.as_str(),
        b.ref_count,
        owner,
        if b.published { "yes" } else { "no" },
        b.generation
    );
    if b.id != b.offset {
        line += &format!("  id {:#x}", b.id);
    }
    line
}
