//! `mmheap dump`: the blocks of a store, or one block with its bytes.

use std::path::Path;
use std::process::ExitCode;

use mmheap::inspect::{BlockInfo, BlockKind};
use mmheap::Error;
use serde_json::json;

use crate::snapshot;

/// Lists at most `limit` (default 1000) blocks in address order.
pub fn list(file: &Path, limit: Option<usize>, json: bool) -> Result<(), Error> {
    let snap = snapshot(file)?;
    let (blocks, err) = snap.blocks(|_| {});
    let shown = &blocks[..blocks.len().min(limit.unwrap_or(1000))];
    if json {
        let v =
            json!({ "blocks": shown, "total": blocks.len(), "error": err.as_ref().map(|e| e.to_string()) });
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return Ok(());
    }
    println!(
        "{:>14} {:>10} {:>10} {:>6} {:>5} {:>5} {:>4} {:>10}",
        "offset", "size", "len", "state", "refs", "owner", "pub", "generation"
    );
    for b in shown {
        println!("{}", block_line(b));
    }
    if shown.len() < blocks.len() {
        println!("... {} more (use --limit)", blocks.len() - shown.len());
    }
    if let Some(e) = err {
        println!("walk stopped: {e}");
    }
    Ok(())
}

/// Shows the block (or slot) at `offset` and the first `limit` (default 256) bytes of its
/// payload. Exit 1 if no block starts there.
pub fn one(file: &Path, offset: u64, limit: Option<usize>, json: bool) -> Result<ExitCode, Error> {
    let snap = snapshot(file)?;
    let (blocks, err) = snap.blocks(|_| {});
    let Some(block) = blocks.iter().find(|b| b.offset == offset) else {
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
    let payload = snap.payload(offset);
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
    println!("{}", block_line(block));
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

fn block_line(b: &BlockInfo) -> String {
    let owner = b.owner.map_or("-".to_owned(), |o| o.to_string());
    // A used block with no reference but an owner is parked in that process's thread cache.
    let state = match (b.kind, b.free, b.ref_count, b.owner) {
        (BlockKind::Span, ..) => "span",
        (BlockKind::Page, ..) => "page",
        (BlockKind::Quarantined, ..) => "quarantined",
        (_, true, _, _) => "free",
        (_, false, 0, Some(_)) => "parked",
        (BlockKind::Slot, ..) => "slot",
        _ => "used",
    };
    format!(
        "{:>#14x} {:>10} {:>10} {:>6} {:>5} {:>5} {:>4} {:>10}",
        b.offset,
        b.size,
        b.len,
        state,
        b.ref_count,
        owner,
        if b.published { "yes" } else { "no" },
        b.generation
    )
}
