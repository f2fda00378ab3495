//! Writing a file the tool makes (the map's picture): never over one of its inputs, never over
//! a store, never over an existing file unless `--force` says so, and never half-written.
//!
//! The bytes go to a temporary file in the output's directory, which is then renamed into
//! place: without `--force` by a rename that refuses to replace anything, so a file that
//! appeared meanwhile is not lost either.

use std::fs::{File, Permissions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use mmheap::format::MAGIC;

/// Writes `bytes` to `output` as the module's comment says. `inputs` are the files the command
/// read; the error says, for people, why nothing was written.
pub fn write_new(output: &Path, inputs: &[&Path], force: bool, bytes: &[u8]) -> Result<(), String> {
    may_write(output, inputs, force)?;
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let shown = output.display();
    let fail = |what: &str, e: std::io::Error| format!("cannot {what} {shown}: {e}");
    let mut tmp = tempfile::Builder::new()
        .prefix(".mmheap-")
        .suffix(".tmp")
        .permissions(Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .map_err(|e| fail("make a temporary file beside", e))?;
    tmp.write_all(bytes).map_err(|e| fail("write the temporary file for", e))?;
    tmp.as_file().sync_all().map_err(|e| fail("write the temporary file for", e))?;
    let placed = if force { tmp.persist(output) } else { tmp.persist_noclobber(output) };
    placed.map(drop).map_err(|e| match e.error.kind() {
        std::io::ErrorKind::AlreadyExists => {
            format!("{shown} appeared meanwhile: left it alone (use --force)")
        }
        _ => fail("move the new file to", e.error),
    })
}

/// Refuses an output that is one of `inputs` (the same file, by device and inode, whatever
/// the path or link that names it), a store, or an existing file without `force`.
pub fn may_write(output: &Path, inputs: &[&Path], force: bool) -> Result<(), String> {
    let shown = output.display();
    let Ok(meta) = std::fs::metadata(output) else {
        return Ok(());
    };
    for input in inputs {
        if std::fs::metadata(input).is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino())) {
            return Err(format!("{shown} is {} itself: refusing to write over an input", input.display()));
        }
    }
    // Before anything is read from it: a FIFO or a terminal would block the read.
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file: refusing to replace it"));
    }
    if is_store(output) {
        return Err(format!("{shown} is an mmheap store: refusing to write over it, even with --force"));
    }
    if !force {
        return Err(format!("{shown} exists: refusing to replace it (use --force)"));
    }
    Ok(())
}

/// Whether the file at `path` starts with a store's magic.
fn is_store(path: &Path) -> bool {
    let mut head = [0u8; MAGIC.len()];
    File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok() && head == MAGIC
}
