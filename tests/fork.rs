//! `fork()` while other threads allocate: the child's first allocation must not wait for a lock
//! a thread that does not exist in the child held (`src/fork.rs`). And what a child may do
//! with a store its parent opened: open it anew.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mmheap::{DefaultManager, MappedManager, MemoryManager, Options};

#[global_allocator]
static GLOBAL: DefaultManager = DefaultManager::GLOBAL;

/// Waits for `pid` up to 20 s; its exit status, or `None` if it hung (it is then killed).
fn wait_for(pid: libc::pid_t) -> Option<i32> {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: `pid` is our child; `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Some(if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 });
        }
        if start.elapsed() > Duration::from_secs(20) {
            // SAFETY: our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // SAFETY: as above.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Forks; the child runs `f` and exits with its result (0 when it returns true), never
/// returning into the test harness.
fn fork_and(f: impl FnOnce() -> bool) -> Option<i32> {
    // SAFETY: the child only runs `f` (which allocates through the heap under test: what the
    // test is about) and then `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(false);
        // SAFETY: ends the child without running the parent's destructors or test harness.
        unsafe { libc::_exit(if ok { 0 } else { 3 }) };
    }
    wait_for(pid)
}

/// Work a child does with the global heap: small and large blocks, other threads' frees.
fn allocate_in_child() -> bool {
    let v: Vec<String> = (0..10_000).map(|i| format!("child string {i}")).collect();
    let big = vec![7u8; 1 << 20];
    let t = std::thread::spawn(move || v.len() + big.len());
    t.join().map(|n| n == 10_000 + (1 << 20)).unwrap_or(false)
        && DefaultManager::global().check().is_ok_and(|r| r.is_sound())
}

#[test]
fn a_child_forked_while_threads_allocate_can_allocate() {
    let stop = Arc::new(AtomicBool::new(false));
    let churners: Vec<_> = (0..3)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut kept: Vec<Vec<u8>> = Vec::new();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    kept.push(vec![t as u8; 1 + i % 5000]);
                    if kept.len() > 500 {
                        kept.drain(..250);
                    }
                    // Large blocks take the heap's lock at allocation and release.
                    let large = vec![t as u8; 300_000 + i % 700_000];
                    std::hint::black_box(&large);
                    if i % 64 == 0 {
                        let b = DefaultManager::global().allocate(1 + i % 300_000).unwrap();
                        drop(b);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let results: Vec<_> = (0..50).map(|_| fork_and(allocate_in_child)).collect();
    stop.store(true, Ordering::Relaxed);
    churners.into_iter().for_each(|c| c.join().unwrap());
    assert!(results.iter().all(|r| *r == Some(0)), "children: {results:?} (None: hung)");
    assert!(DefaultManager::global().check().unwrap().is_sound());
}

#[test]
fn a_child_opens_its_parents_store_anew() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.mmheap");
    let store = MappedManager::create(&path, &Options::default()).unwrap();
    let mut b = store.allocate(64).unwrap();
    b.as_mut_slice().unwrap().fill(9);
    store.set_root("parent", &b).unwrap();
    let child_path = path.clone();
    let status = fork_and(move || {
        // The parent's manager is not ours to use; a fresh open is.
        let mine = MappedManager::open(&child_path).unwrap();
        let seen = mine.root("parent").unwrap().is_some_and(|r| r.as_slice().iter().all(|&x| x == 9));
        let mut c = mine.allocate(100).unwrap();
        c.as_mut_slice().unwrap().fill(4);
        mine.set_root("child", &c).unwrap();
        seen
    });
    assert_eq!(status, Some(0));
    let from_child = store.root("child").unwrap().expect("the child's root");
    assert!(from_child.as_slice().iter().all(|&x| x == 4));
    assert!(store.check().unwrap().is_sound());
}
