//! Replays every committed fuzz input through the fuzz targets' own logic
//! (`tests/fuzzing/`, which the cargo-fuzz targets in `fuzz/` include): the seed corpora in
//! `fuzz/corpus/<target>/` and the inputs that once failed, kept in `fuzz/regressions/<target>/`
//! with the fix that made them pass.

mod fuzzing;

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut count = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else { continue };
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let data = std::fs::read(&path).expect("read a corpus file");
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target}: {} fails", path.display());
            count += 1;
        }
    }
    assert!(count > 0, "{target}: no committed inputs under fuzz/corpus or fuzz/regressions");
}

#[test]
fn open_corpus() {
    replay("open", fuzzing::open::run);
}

#[test]
fn mutate_corpus() {
    replay("mutate", fuzzing::mutate::run);
}

#[test]
fn api_corpus() {
    replay("api", fuzzing::api::run);
}

/// What the crash countdown of the `api` target waits for once it has reaped its child
/// (`crash::wait_for_locks_released`): a dead process's liveness lock goes when the last
/// reference to its open file description does, and another task can hold one past its death
/// (the fuzzer met a `/proc` reader holding the child's address space, whose mapping of the
/// store holds the description). Here this process takes a duplicate of the killed child's
/// descriptor: the store takes the child for alive (its block stays live, nothing recovered)
/// while the duplicate is open; the wait returns once it is closed, and the next open recovers
/// the child. Opening without the wait (the harness before) finds the block live.
#[cfg(target_os = "linux")]
#[test]
fn a_dead_child_s_lock_lasts_as_long_as_its_file_description() {
    use mmheap::{MappedManager, MemoryManager, Options};
    let dir = fuzzing::scratch();
    let path = dir.path().join("s.mmheap");
    drop(MappedManager::create(&path, &Options::new()).expect("create"));
    let (pid, fd) = child_holding_a_block(&path);
    let dup = descriptor_of(pid, fd);
    // SAFETY: `pid` is our child, not reaped yet; it is killed and reaped here.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    let stats = |what: &str| {
        let store = MappedManager::open(&path).expect("open");
        let s = store.stats().expect("stats");
        println!("{what}: {s:?}");
        (s.attached_processes, s.live_blocks, s.recovered_processes)
    };
    assert_eq!(stats("held"), (2, 1, 0), "the dead child is taken for alive while its description is open");
    let closer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(dup);
    });
    fuzzing::api::crash::wait_for_locks_released(&path);
    assert_eq!(stats("after the wait"), (1, 0, 1), "the open after the wait recovers the dead child");
    closer.join().expect("the closing thread");
}

/// Forks a child that opens the store at `path`, allocates a block, says which descriptor
/// holds the store, and waits to be killed; its pid and that descriptor's number.
#[cfg(target_os = "linux")]
fn child_holding_a_block(path: &Path) -> (libc::pid_t, i32) {
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    // SAFETY: each descriptor is owned by exactly one File from here on, in each process.
    let (mut rd, mut wr) =
        unsafe { (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1])) };
    // SAFETY: the child opens the store, reports, and waits for its SIGKILL (or `_exit`s).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        drop(rd);
        let held = mmheap::MappedManager::open(path).and_then(|s| {
            let b = mmheap::MemoryManager::allocate(&s, 100)?;
            Ok((s, b))
        });
        let fd = std::fs::read_dir("/proc/self/fd").into_iter().flatten().flatten().find_map(|e| {
            let same = std::fs::read_link(e.path()).is_ok_and(|l| l == path);
            same.then(|| e.file_name().to_string_lossy().parse::<i32>().ok()).flatten()
        });
        if let (Ok(_held), Some(fd)) = (&held, fd) {
            let _ = wr.write_all(&fd.to_le_bytes());
            drop(wr);
            loop {
                // SAFETY: waits for a signal; the parent's SIGKILL ends the child here.
                unsafe { libc::pause() };
            }
        }
        // SAFETY: ends the forked child without running the parent's exit handlers.
        unsafe { libc::_exit(1) }
    }
    drop(wr);
    let mut got = Vec::new();
    let _ = rd.read_to_end(&mut got);
    let fd = got.try_into().map(i32::from_le_bytes);
    (pid, fd.expect("the child opened the store and found its descriptor"))
}

/// A duplicate of descriptor `fd` of process `pid`: the same open file description.
#[cfg(target_os = "linux")]
fn descriptor_of(pid: libc::pid_t, fd: i32) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: plain system calls; the pidfd is closed right after its one use.
    let dup = unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0) as i32;
        assert!(pidfd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
        let dup = libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) as i32;
        libc::close(pidfd);
        dup
    };
    assert!(dup >= 0, "pidfd_getfd: {}", std::io::Error::last_os_error());
    // SAFETY: `dup` is a new descriptor this process owns.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(dup) }
}
