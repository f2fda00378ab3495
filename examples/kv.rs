//! A persistent key-value store on a store file, safe to run from several processes at once and
//! after `kill -9` (a `SharedBytesMap` under the root `kv`):
//!
//! ```text
//! kv STORE put KEY VALUE     sets KEY (flushed before it returns)
//! kv STORE get KEY           prints VALUE and a newline; exit 1 if KEY is absent
//! kv STORE delete KEY        removes KEY (exit 1 if it was absent)
//! kv STORE list              one KEY<TAB>VALUE a line, sorted by key
//! kv STORE fill N PREFIX     puts PREFIX0 .. PREFIX{N-1}, each its own value; flushes at the end
//! ```
//!
//! The store is created on first use (a usage error creates nothing). Keys and values are the
//! arguments' bytes, UTF-8 or not; `list` prints them as they are, so a key or value holding a
//! tab or a newline makes its line ambiguous. Exit status 2 for a usage error or a store that
//! fails (one this user may not write included: kv opens the store for writing).
//!
//! ```text
//! cargo run --example kv -- /tmp/kv.mmheap put colour blue
//! cargo run --example kv -- /tmp/kv.mmheap get colour
//! ```

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;

use mmheap::{MappedManager, Options, SharedBytesMap};

const USAGE: &str = "usage: kv STORE (put KEY VALUE | get KEY | delete KEY | list | fill N PREFIX)";

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match run(&args) {
        Ok(found) => ExitCode::from(if found { 0 } else { 1 }),
        Err(e) => {
            eprintln!("kv: {e}");
            ExitCode::from(2)
        }
    }
}

/// One command, parsed: the words are bytes.
enum Command<'a> {
    Put(&'a [u8], &'a [u8]),
    Get(&'a [u8]),
    Delete(&'a [u8]),
    List,
    Fill(u64, &'a [u8]),
}

fn parse(args: &[OsString]) -> Option<(&OsString, Command<'_>)> {
    let [path, command, rest @ ..] = args else { return None };
    let words: Vec<&[u8]> = rest.iter().map(|a| a.as_bytes()).collect();
    let command = match (command.as_bytes(), words.as_slice()) {
        (b"put", [key, value]) => Command::Put(key, value),
        (b"get", [key]) => Command::Get(key),
        (b"delete", [key]) => Command::Delete(key),
        (b"list", []) => Command::List,
        (b"fill", [n, prefix]) => Command::Fill(std::str::from_utf8(n).ok()?.parse().ok()?, prefix),
        _ => return None,
    };
    Some((path, command))
}

/// Runs one command; `Ok(false)` for a key that is absent (exit status 1).
fn run(args: &[OsString]) -> Result<bool, Box<dyn std::error::Error>> {
    let (path, command) = parse(args).ok_or(USAGE)?;
    let (store, map) = open(path)?;
    match command {
        Command::Put(key, value) => {
            map.insert(key, value)?;
            store.flush()?;
        }
        Command::Get(key) => match map.get(key)? {
            Some(value) => {
                let mut out = std::io::stdout().lock();
                out.write_all(&value)?;
                out.write_all(b"\n")?;
            }
            None => return Ok(false),
        },
        Command::Delete(key) => {
            let had = map.remove(key)?.is_some();
            store.flush()?;
            return Ok(had);
        }
        Command::List => {
            let mut entries = map.entries()?;
            entries.sort();
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for (key, value) in entries {
                out.write_all(&key)?;
                out.write_all(b"\t")?;
                out.write_all(&value)?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
        }
        Command::Fill(n, prefix) => {
            for i in 0..n {
                let mut key = prefix.to_vec();
                key.extend_from_slice(i.to_string().as_bytes());
                map.insert(&key, &key)?;
            }
            store.flush()?;
        }
    }
    Ok(true)
}

/// The store at `path` and its map, each made if it is not there yet (by exactly one of several
/// processes starting at once).
fn open(path: &OsString) -> mmheap::Result<(MappedManager, SharedBytesMap)> {
    let store = MappedManager::open_or_create(path, &Options::new().max_size(1 << 34))?;
    let top = match store.root("kv")? {
        Some(top) => top,
        None => store.root_or_set("kv", SharedBytesMap::new_in(&store)?.block())?,
    };
    Ok((store, SharedBytesMap::open(top)?))
}
