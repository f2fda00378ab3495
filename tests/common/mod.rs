//! Helpers for tests with real child processes. A test binary that uses them is its own child:
//! `main` checks `ROLE` first and plays that role instead of running tests.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::Path;
use std::process::{Child, Command, Stdio};

use libtest_mimic::Failed;
use mmheap::{BlockHandle, MemoryBlock};

pub const ROLE: &str = "MMHEAP_CHILD_ROLE";
pub type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// A child process that is killed and reaped if a test gives up on it early.
pub struct Kid(Option<Child>);

impl Kid {
    pub fn get(&mut self) -> &mut Child {
        self.0.as_mut().expect("child present until waited for")
    }

    pub fn take(mut self) -> Child {
        self.0.take().expect("child present until waited for")
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts this test binary as a child playing `role` on the store at `store`.
pub fn spawn(role: &str, store: &Path, env: &[(&str, String)]) -> Kid {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary path"));
    cmd.env(ROLE, role).env("MMHEAP_STORE", store).stdin(Stdio::piped()).stdout(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Kid(Some(cmd.spawn().expect("spawn child")))
}

pub fn env_u64(k: &str, default: u64) -> u64 {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

pub fn ensure(cond: bool, what: impl Into<String>) -> Result<(), Failed> {
    if cond {
        Ok(())
    } else {
        Err(what.into().into())
    }
}

/// Kills a child with SIGKILL and reaps it.
pub fn kill(kid: Kid) -> Result<(), Failed> {
    let mut c = kid.take();
    let killed = c.kill();
    c.wait()?;
    Ok(killed?)
}

pub fn wait_ok(kid: Kid, what: &str) -> Result<(), Failed> {
    let status = kid.take().wait().map_err(|e| e.to_string())?;
    ensure(status.success(), format!("{what} exited with {status}"))
}

/// Byte `i` of block `id`'s stamp.
pub fn stamp_byte(id: u64, i: usize) -> u8 {
    (id.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (8 * (i % 8))) as u8 ^ (i / 8) as u8
}

/// Writes block `id`'s stamp from byte `from` on.
pub fn stamp(b: &mut MemoryBlock, id: u64, from: usize) -> mmheap::Result<()> {
    for (i, x) in b.as_mut_slice()?.iter_mut().enumerate().skip(from) {
        *x = stamp_byte(id, i);
    }
    Ok(())
}

/// Checks block `id`'s stamp on its first `upto` bytes.
pub fn verify(b: &MemoryBlock, id: u64, upto: usize) -> Result<(), String> {
    match b.as_slice()[..upto].iter().enumerate().find(|(i, x)| **x != stamp_byte(id, *i)) {
        Some((i, _)) => Err(format!("block {id} corrupted at byte {i}")),
        None => Ok(()),
    }
}

pub fn format_handle(h: BlockHandle) -> String {
    format!("{} {}", h.offset, h.generation)
}

pub fn parse_handle(text: &str) -> Res<BlockHandle> {
    let mut it = text.split_whitespace().map(str::parse::<u64>);
    match (it.next(), it.next()) {
        (Some(Ok(offset)), Some(Ok(generation))) => Ok(BlockHandle { offset, generation }),
        _ => Err(format!("bad handle {text:?}").into()),
    }
}
