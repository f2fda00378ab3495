//! Helpers for tests with real child processes. A test binary that uses them is its own child:
//! `main` checks `ROLE` first and plays that role instead of running tests.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use libtest_mimic::Failed;
use mmheap::{BlockHandle, MemoryBlock};

pub const ROLE: &str = "MMHEAP_CHILD_ROLE";

/// The `main` of a test binary that is its own child: plays the role named in `ROLE` if set
/// (exiting 1 if it fails), else runs `tests` with the standard test-harness arguments.
pub fn child_or_tests(child: fn(&str, &Path) -> Res, tests: impl FnOnce() -> Vec<libtest_mimic::Trial>) {
    if let Ok(role) = std::env::var(ROLE) {
        let store = PathBuf::from(std::env::var("MMHEAP_STORE").expect("MMHEAP_STORE"));
        if let Err(e) = child(&role, &store) {
            eprintln!("child {role} failed: {e}");
            std::process::exit(1);
        }
        return;
    }
    libtest_mimic::run(&libtest_mimic::Arguments::from_args(), tests()).exit();
}
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

/// A child's output lines as they come, from a reader thread.
pub fn lines_of(kid: &mut Kid) -> Result<mpsc::Receiver<String>, Failed> {
    let out = kid.get().stdout.take().ok_or("child stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(rx)
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

/// A file in `fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

/// Copies the store at `from` to `to` with mode 0600, as stores are made: `fs::copy` keeps the
/// source's mode, and a checkout made with umask 002 has group-writable fixtures, which a
/// writer's open refuses (`Error::UnsafeFile`).
pub fn copy_store(from: impl AsRef<Path>, to: impl AsRef<Path>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::copy(from, &to)?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600))
}

/// One corruption: how to turn the golden store into a variant.
#[derive(Debug)]
pub enum Edit {
    Truncate(u64),
    Flip(u64, u8),
    Set64(u64, u64),
    Set32(u64, u32),
}

pub fn parse_num(s: &str) -> u64 {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .unwrap_or_else(|_| panic!("bad number {s:?} in recipe"))
}

/// Reads a recipe file in `fixtures/`: `name: edit; edit; ...` per line, `#` comments.
pub fn recipes(file: &str) -> Vec<(String, Vec<Edit>)> {
    let text = std::fs::read_to_string(fixture(file)).unwrap();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (name, edits) = line.split_once(':').expect("name: edits");
        let edits = edits
            .split(';')
            .map(|e| {
                let w: Vec<&str> = e.split_whitespace().collect();
                match w.as_slice() {
                    ["truncate", n] => Edit::Truncate(parse_num(n)),
                    ["flip", o, b] => Edit::Flip(parse_num(o), parse_num(b) as u8),
                    ["set64", o, v] => Edit::Set64(parse_num(o), parse_num(v)),
                    ["set32", o, v] => Edit::Set32(parse_num(o), parse_num(v) as u32),
                    _ => panic!("bad edit {e:?} in {name}"),
                }
            })
            .collect();
        out.push((name.trim().to_owned(), edits));
    }
    out
}

pub fn apply(path: &Path, edits: &[Edit]) {
    let mut bytes = std::fs::read(path).unwrap();
    for e in edits {
        match *e {
            Edit::Truncate(n) => bytes.truncate(n as usize),
            Edit::Flip(o, bit) => bytes[o as usize] ^= 1 << bit,
            Edit::Set64(o, v) => bytes[o as usize..o as usize + 8].copy_from_slice(&v.to_le_bytes()),
            Edit::Set32(o, v) => bytes[o as usize..o as usize + 4].copy_from_slice(&v.to_le_bytes()),
        }
    }
    std::fs::write(path, bytes).unwrap();
}

/// The size of the `i`th block of a store filled as a program fills one: 70% of at most 64
/// bytes (slots of spans), 20% of 200 B to 1.4 KiB, 10% of 2 to 7 KiB, one in a hundred of 10 to
/// 90 KiB.
pub fn program_size(i: u64) -> usize {
    let len = match i % 10 {
        0..=6 => 16 + (i % 7) * 8,
        7..=8 => 200 + (i % 13) * 100,
        _ if i % 100 == 9 => 10_000 + (i % 5) * 20_000,
        _ => 2000 + (i % 11) * 500,
    };
    len as usize
}

/// Runs `exe args` to its end; its exit code and peak resident memory in KiB. The kernel counts
/// in a child's peak the memory it had before its `exec` (this process's, as the spawn shares
/// it): measure from a test process that holds little.
#[allow(clippy::zombie_processes)] // reaped by `wait4`, which also gives its peak memory
pub fn measured(exe: &str, args: &[&str]) -> (i32, i64) {
    let child =
        std::process::Command::new(exe).args(args).stdout(std::process::Stdio::null()).spawn().unwrap();
    let mut status = 0;
    // SAFETY: all-zero is a valid `rusage` (plain integers and timevals).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pid is our child's, not waited for yet (`Child` never waits on its own);
    // `status` and `usage` are valid for writes.
    let waited = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(waited, child.id() as libc::pid_t);
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 };
    (code, usage.ru_maxrss)
}

/// The uid and gid of `nobody`, to run a command as a user who may not write a root-owned
/// store, if this process can (it needs root and `setpriv`); else `None`, having said why the
/// test is skipped.
pub fn nobody() -> Option<(String, String)> {
    let id = |args: &[&str]| {
        let out = Command::new("id").args(args).output().ok().filter(|o| o.status.success())?;
        Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let setpriv = Command::new("setpriv").arg("--version").output().is_ok_and(|o| o.status.success());
    let (Some(me), Some(uid), Some(gid)) = (id(&["-u"]), id(&["-u", "nobody"]), id(&["-g", "nobody"])) else {
        println!("skipped: no user `nobody` to run as");
        return None;
    };
    if me != "0" || !setpriv {
        println!("skipped: running as another user needs root and setpriv (uid {me}, setpriv {setpriv})");
        return None;
    }
    Some((uid, gid))
}

/// A child in `role` that has reached the pause point `point` (`MMHEAP_TEST_PAUSE`) and waits
/// there; `extra` adds to its environment.
pub fn paused(
    role: &str,
    path: &std::path::Path,
    point: &str,
    extra: &[(&str, String)],
) -> Result<Kid, Failed> {
    let mut env = vec![("MMHEAP_TEST_PAUSE", point.to_string())];
    env.extend(extra.iter().cloned());
    let mut kid = spawn(role, path, &env);
    let line = lines_of(&mut kid)?.recv_timeout(std::time::Duration::from_secs(30))?;
    ensure(line == format!("paused {point}"), format!("{role} said {line:?}"))?;
    Ok(kid)
}

/// Runs `f` on a thread and fails if it has not returned within `limit` (a call that should
/// not wait for ever: the limit is far above what it takes, so this asserts no time). Once `f`
/// has returned, waits for the thread to end, so that what it leaves on its way out (its thread
/// cache, given back as the thread ends) is done when the caller looks: on a loaded machine the
/// thread's end could come after the caller's next look at the store.
pub fn returns<T: Send + 'static>(
    what: &str,
    limit: std::time::Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Failed> {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    let got = rx.recv_timeout(limit).map_err(|_| format!("{what} still waits after {limit:?}"))?;
    thread.join().map_err(|_| format!("{what}: its thread panicked on its way out"))?;
    Ok(got)
}

/// Makes a manager for a test that runs on both.
pub type Make = fn() -> Result<Box<dyn mmheap::MemoryManager>, Failed>;
/// A test run on the manager `Make` makes.
pub type Test = fn(Make) -> Result<(), Failed>;

/// Both managers, named: an in-process one, and a store in a directory that goes when the test
/// process ends (the store lives as long as the manager).
pub fn managers() -> Vec<(&'static str, Make)> {
    fn default() -> Result<Box<dyn mmheap::MemoryManager>, Failed> {
        Ok(Box::new(mmheap::DefaultManager::new()?))
    }
    fn store() -> Result<Box<dyn mmheap::MemoryManager>, Failed> {
        let dir = Box::leak(Box::new(tempfile::tempdir()?));
        Ok(Box::new(mmheap::MappedManager::create(dir.path().join("s.mmheap"), &mmheap::Options::default())?))
    }
    vec![("default", default as Make), ("store", store as Make)]
}

/// Every block reachable from the roots through links, by header offset; checks each node's
/// value against the offset map the walk builds (a node reached twice is the same block).
pub fn reachable(m: &mmheap::MappedManager) -> Result<std::collections::HashSet<u64>, Failed> {
    let mut seen = std::collections::HashSet::new();
    let mut work: Vec<MemoryBlock> = Vec::new();
    for (name, _) in m.roots()? {
        work.extend(m.root(&name)?);
    }
    while let Some(b) = work.pop() {
        if seen.insert(b.offset().get()) {
            for i in 0..b.link_count() {
                work.extend(b.link(i)?);
            }
        }
    }
    Ok(seen)
}

/// Sound, no cycle, and every live block users hold is reachable from a root.
pub fn exact(m: &mmheap::MappedManager) -> Result<usize, Failed> {
    let reached = reachable(m)?.len();
    let report = m.check()?;
    ensure(report.is_sound(), format!("check: {:?}", report.problems))?;
    ensure(report.cycle_blocks.is_empty(), "no cycle")?;
    ensure(
        report.used_blocks == reached as u64,
        format!("{} live, {reached} reachable", report.used_blocks),
    )?;
    Ok(reached)
}
