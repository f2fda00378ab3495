//! The crash countdown of the `api` target: a forked child runs the first operations and is
//! killed with SIGKILL (see the module documentation of `api`).

use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::path::Path;

use super::{step, with_store, ApiOp, Model, NAMES};
use mmheap::{MappedManager, MemoryManager};

/// What survives the child by its model: each root's bytes (by name index), the queued
/// messages' bytes in order, and how many blocks roots and messages reach through links.
fn survivors(model: &Model) -> Vec<u8> {
    let mut out = Vec::new();
    let mut put = |bytes: &[u8]| {
        out.extend((bytes.len() as u32).to_le_bytes());
        out.extend(bytes);
    };
    for name in NAMES {
        put(&model
            .roots
            .get(name)
            .map(|id| model.content[id].clone())
            .unwrap_or_else(|| vec![0xff; 1 << 16]));
    }
    put(&(model.queue.len() as u32).to_le_bytes());
    for id in &model.queue {
        put(&model.content[id]);
    }
    put(&(model.reachable(false).len() as u64).to_le_bytes());
    out
}

fn child(path: &Path, ops: &[ApiOp], mut report: std::fs::File) -> ! {
    let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let store = MappedManager::open(path).expect("open in the child");
        with_store(&store, |u| {
            let mut model = Model::default();
            for op in ops {
                step(u, &mut model, op);
            }
            let _ = report.write_all(&survivors(&model));
            drop(report);
            // SAFETY: raise is async-signal-safe; SIGKILL ends the process here, everything held.
            unsafe { libc::raise(libc::SIGKILL) };
        })
    }));
    // Only a failed property gets here: the parent sees no report.
    drop(done);
    // SAFETY: ends the forked child without running the parent's exit handlers.
    unsafe { libc::_exit(1) }
}

pub fn run(path: &Path, ops: &[ApiOp]) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    // SAFETY: each descriptor is owned by exactly one File from here on, in each process.
    let (mut rd, wr) = unsafe { (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1])) };
    // SAFETY: the child only runs the model and ends with SIGKILL or _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        drop(rd);
        child(path, ops, wr);
    }
    drop(wr);
    let mut got = Vec::new();
    let _ = rd.read_to_end(&mut got);
    let mut status = 0;
    // SAFETY: `pid` is this process's child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(!got.is_empty(), "the child failed a property before its kill (status {status:#x})");
    wait_for_locks_released(path);
    after_crash(path, &got);
}

/// Waits until no process holds a record lock on the store file: until the kernel has dropped
/// the killed child's liveness lock (`src/mapped/registry.rs`). A reaped child can still hold
/// it: the lock belongs to the child's open file description, which its mapping of the store
/// keeps, and its address space is torn down by whichever task lets go of it last: another
/// task that held it as the child died (a `ps` or `top` reading `/proc/<pid>/stat`, a
/// debugger) tears it down, and so drops the lock, after the child is reaped. Until then the
/// store rightly takes the child for alive (waiting is safe, taking over from the living is
/// not) and an open does not recover it: the fuzzer twice found its block live after the
/// reopen that way. Gives up after a minute of looks (far above the milliseconds it takes).
pub fn wait_for_locks_released(path: &Path) {
    #[cfg(target_os = "linux")]
    const GETLK: libc::c_int = libc::F_OFD_GETLK;
    #[cfg(not(target_os = "linux"))]
    const GETLK: libc::c_int = libc::F_GETLK;
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).expect("the store file");
    for _ in 0..60_000 {
        // SAFETY: `flock` is plain old data; all-zero is valid (and required for OFD locks).
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as _;
        fl.l_whence = libc::SEEK_SET as _;
        // `l_start` and `l_len` 0: the whole file.
        // SAFETY: the descriptor is open for the call and `fl` is a valid flock.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), GETLK, &mut fl as *mut libc::flock) };
        assert_eq!(rc, 0, "ask for the store file's locks: {}", std::io::Error::last_os_error());
        if fl.l_type == libc::F_UNLCK as libc::c_short {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    panic!("the killed child's lock on the store was never released");
}

fn take<'a>(got: &mut &'a [u8]) -> &'a [u8] {
    let n = u32::from_le_bytes(got[..4].try_into().expect("4 bytes")) as usize;
    let (x, rest) = got[4..].split_at(n);
    *got = rest;
    x
}

/// The store after the child's death: opening it recovers; every root and queued message is
/// there with its bytes, nothing else is live, and the store is sound.
fn after_crash(path: &Path, mut got: &[u8]) {
    let store = MappedManager::open(path).expect("open after the crash");
    for name in NAMES {
        let want = take(&mut got);
        let root = store.root(name).expect("root after the crash");
        match root {
            Some(b) => assert!(b.as_slice() == want, "root {name} lost its bytes in the crash"),
            None => assert_eq!(want, &[0xff; 1 << 16][..], "root {name} lost in the crash"),
        }
    }
    let queued = u32::from_le_bytes(take(&mut got).try_into().expect("count"));
    let mut messages = Vec::new();
    for _ in 0..queued {
        messages.push(take(&mut got).to_vec());
    }
    let live = u64::from_le_bytes(take(&mut got).try_into().expect("live"));
    let stats = store.stats().expect("stats");
    assert_eq!(stats.live_blocks, live, "live blocks after recovering from the crash");
    let report = store.check().expect("check");
    assert!(report.is_sound(), "after the crash: {:?}", report.problems);
    let rx = store.channel("c", 4).expect("channel").receiver().expect("receiver");
    for m in messages {
        assert!(rx.try_recv().expect("a queued message survives").as_slice() == m.as_slice());
    }
}
