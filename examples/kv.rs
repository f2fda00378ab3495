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
//! The store is created on first use. Exit status 2 for a usage error or a store that fails.
//!
//! ```text
//! cargo run --example kv -- /tmp/kv.mmheap put colour blue
//! cargo run --example kv -- /tmp/kv.mmheap get colour
//! ```

use std::io::Write;
use std::process::ExitCode;

use mmheap::{MappedManager, Options, SharedBytesMap};

const USAGE: &str = "usage: kv STORE (put KEY VALUE | get KEY | delete KEY | list | fill N PREFIX)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(found) => ExitCode::from(if found { 0 } else { 1 }),
        Err(e) => {
            eprintln!("kv: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs one command; `Ok(false)` for a key that is absent (exit status 1).
fn run(args: &[String]) -> Result<bool, Box<dyn std::error::Error>> {
    let [path, command, rest @ ..] = args else { return Err(USAGE.into()) };
    let (store, map) = open(path)?;
    match (command.as_str(), rest) {
        ("put", [key, value]) => {
            map.insert(key.as_bytes(), value.as_bytes())?;
            store.flush()?;
        }
        ("get", [key]) => match map.get(key.as_bytes())? {
            Some(value) => {
                let mut out = std::io::stdout().lock();
                out.write_all(&value)?;
                out.write_all(b"\n")?;
            }
            None => return Ok(false),
        },
        ("delete", [key]) => {
            let had = map.remove(key.as_bytes())?.is_some();
            store.flush()?;
            return Ok(had);
        }
        ("list", []) => {
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
        ("fill", [n, prefix]) => {
            for i in 0..n.parse::<u64>()? {
                let key = format!("{prefix}{i}");
                map.insert(key.as_bytes(), key.as_bytes())?;
            }
            store.flush()?;
        }
        _ => return Err(USAGE.into()),
    }
    Ok(true)
}

/// The store at `path` and its map, each made if it is not there yet (by exactly one of several
/// processes starting at once).
fn open(path: &str) -> mmheap::Result<(MappedManager, SharedBytesMap)> {
    let store = MappedManager::open_or_create(path, &Options::new().max_size(1 << 34))?;
    let top = match store.root("kv")? {
        Some(top) => top,
        None => store.root_or_set("kv", SharedBytesMap::new_in(&store)?.block())?,
    };
    Ok((store, SharedBytesMap::open(top)?))
}
