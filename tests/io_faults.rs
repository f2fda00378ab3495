//! The system refusing what a store needs: the disk full or the quota exhausted while the store
//! grows, the mapping refused (no address space for `max_size` under `RLIMIT_AS`, the
//! per-process map count reached), the file size limit (`RLIMIT_FSIZE`). Each is a typed error,
//! the store is sound and holds everything it held, and the same operation succeeds once the
//! cause is gone. Faults are injected in a child, from outside the library: an `LD_PRELOAD`
//! library whose `posix_fallocate` (and `fallocate`, `ftruncate`) fails with the errno in
//! `MMHEAP_FAIL_GROW` (only for a file made longer than `MMHEAP_FAIL_GROW_ABOVE` if that is
//! set), and whose `mmap` of a file fails with ENOMEM while `MMHEAP_FAIL_MAP` is
//! `1` (the map count limit, `vm.max_map_count`, is a global setting and is not changed); or by
//! `setrlimit` in the child. A real full disk is a 2 MiB tmpfs, where the test may mount one.
//! The library never calls `mremap`: a store maps its whole maximum size at open and never
//! remaps.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use libtest_mimic::{Failed, Trial};
use mmheap::{Error, MappedManager, MemoryBlock, MemoryManager, Options};

const SHIM: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/types.h>

/* The errno in MMHEAP_FAIL_GROW for a file made `end` bytes long, only above the size in
   MMHEAP_FAIL_GROW_ABOVE if that is set. */
static int grow_errno(off_t end) {
    const char *v = getenv("MMHEAP_FAIL_GROW");
    const char *above = getenv("MMHEAP_FAIL_GROW_ABOVE");
    if (v == NULL || (above != NULL && end <= atoll(above))) return 0;
    return atoi(v);
}

static int map_failing(void) {
    const char *v = getenv("MMHEAP_FAIL_MAP");
    return v != NULL && v[0] == '1';
}

#define NEXT(name, type) ((type)dlsym(RTLD_NEXT, name))

int posix_fallocate(int fd, off_t off, off_t len) {
    if (grow_errno(off + len)) return grow_errno(off + len);
    return NEXT("posix_fallocate", int (*)(int, off_t, off_t))(fd, off, len);
}
int posix_fallocate64(int fd, off_t off, off_t len) {
    if (grow_errno(off + len)) return grow_errno(off + len);
    return NEXT("posix_fallocate64", int (*)(int, off_t, off_t))(fd, off, len);
}
int fallocate(int fd, int mode, off_t off, off_t len) {
    if (grow_errno(off + len)) { errno = grow_errno(off + len); return -1; }
    return NEXT("fallocate", int (*)(int, int, off_t, off_t))(fd, mode, off, len);
}
int fallocate64(int fd, int mode, off_t off, off_t len) {
    if (grow_errno(off + len)) { errno = grow_errno(off + len); return -1; }
    return NEXT("fallocate64", int (*)(int, int, off_t, off_t))(fd, mode, off, len);
}
int ftruncate(int fd, off_t len) {
    if (grow_errno(len)) { errno = grow_errno(len); return -1; }
    return NEXT("ftruncate", int (*)(int, off_t))(fd, len);
}
int ftruncate64(int fd, off_t len) {
    if (grow_errno(len)) { errno = grow_errno(len); return -1; }
    return NEXT("ftruncate64", int (*)(int, off_t))(fd, len);
}
void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
    if (fd >= 0 && map_failing()) { errno = ENOMEM; return MAP_FAILED; }
    return NEXT("mmap", void *(*)(void *, size_t, int, int, int, off_t))(addr, len, prot, flags, fd, off);
}
void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
    if (fd >= 0 && map_failing()) { errno = ENOMEM; return MAP_FAILED; }
    return NEXT("mmap64", void *(*)(void *, size_t, int, int, int, off_t))(addr, len, prot, flags, fd, off);
}
"#;

fn main() {
    child_or_tests(child, || {
        vec![
            Trial::test("faults::no_space_or_quota_while_growing_is_out_of_space", || shimmed("space")),
            Trial::test("faults::a_refused_mapping_is_map_failed", || shimmed("map")),
            Trial::test("faults::rlimit_as_below_max_size_is_map_failed", || plain("address-space")),
            Trial::test("faults::rlimit_fsize_is_out_of_space_not_sigxfsz", || plain("file-size")),
            Trial::test("faults::a_full_tmpfs_is_out_of_space", tmpfs),
            Trial::test("faults::no_room_to_double_grows_by_what_is_needed", || shimmed("least")),
            Trial::test("faults::a_nearly_full_tmpfs_grows_by_what_is_needed", tmpfs_least),
        ]
    });
}

const MAX: u64 = 64 << 20;

/// A store with `n` stamped blocks of 10,000 bytes, each rooted.
fn populated(path: &Path, n: u64) -> Result<(), Failed> {
    let m = MappedManager::create(path, &Options::new().initial_size(1 << 20).max_size(MAX))?;
    for id in 0..n {
        let mut b = m.allocate(10_000)?;
        stamp(&mut b, id, 0)?;
        m.set_root(&format!("b{id}"), &b)?;
    }
    Ok(())
}

/// The store sound, and every stamped block as written.
fn intact(m: &MappedManager, n: u64) -> Res {
    if !m.check()?.is_sound() {
        return Err("the store is not sound".into());
    }
    for id in 0..n {
        let b = m.root(&format!("b{id}"))?.ok_or("a root is gone")?;
        verify(&b, id, 10_000)?;
    }
    Ok(())
}

fn plain(role: &str) -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("f.mmheap");
    populated(&path, 20)?;
    wait_ok(spawn(role, &path, &[]), role)?;
    intact(&MappedManager::open(&path)?, 20).map_err(|e| e.to_string().into())
}

fn shimmed(role: &str) -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let (source, shim) = (dir.path().join("faults.c"), dir.path().join("libfaults.so"));
    std::fs::write(&source, SHIM)?;
    let cc =
        Command::new("cc").args(["-shared", "-fPIC", "-o"]).arg(&shim).arg(&source).arg("-ldl").status()?;
    ensure(cc.success(), "cc builds the fault library")?;
    let path = dir.path().join("f.mmheap");
    populated(&path, 20)?;
    wait_ok(spawn(role, &path, &[("LD_PRELOAD", shim.display().to_string())]), role)?;
    intact(&MappedManager::open(&path)?, 20).map_err(|e| e.to_string().into())
}

fn disk_full(r: mmheap::Result<MemoryBlock>) -> bool {
    matches!(r, Err(Error::OutOfSpace { disk_full: true, requested: 8_000_000, max_size: MAX }))
}

fn map_failed(r: mmheap::Result<impl Sized>, max: u64) -> bool {
    matches!(r, Err(Error::MapFailed { max_size, ref source }) if max_size == max && source.raw_os_error() == Some(libc::ENOMEM))
}

fn set_limit(resource: libc::__rlimit_resource_t, soft: u64) -> Res {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write the one struct passed, which outlives them.
    let ok = unsafe {
        libc::getrlimit(resource, &mut rl) == 0 && {
            rl.rlim_cur = soft;
            libc::setrlimit(resource, &rl) == 0
        }
    };
    match ok {
        true => Ok(()),
        false => Err(format!("setrlimit: {}", std::io::Error::last_os_error()).into()),
    }
}

fn child(role: &str, path: &Path) -> Res {
    match role {
        "space" => no_space(path),
        "map" => map_refused(path),
        "address-space" => address_space(path),
        "file-size" => file_size(path),
        "least" => least_growth(path),
        _ => Err(format!("no role {role}").into()),
    }
}

/// ENOSPC, then EDQUOT, from the growth's preallocation: out of space, the disk named as the
/// cause; then the growth succeeds.
fn no_space(path: &Path) -> Res {
    let m = MappedManager::open(path)?;
    for errno in [libc::ENOSPC, libc::EDQUOT] {
        std::env::set_var("MMHEAP_FAIL_GROW", errno.to_string());
        let got = m.allocate(8_000_000);
        std::env::remove_var("MMHEAP_FAIL_GROW");
        if !disk_full(got) {
            return Err(format!("errno {errno} while growing was not OutOfSpace with disk_full").into());
        }
        intact(&m, 20)?;
    }
    let mut b = m.allocate(8_000_000)?;
    stamp(&mut b, 99, 0)?;
    intact(&m, 20)
}

/// No room to double the store (ENOSPC above a size the request's growth fits under): the
/// growth falls back to what the request needs, rounded to a page; with room again, it doubles.
fn least_growth(path: &Path) -> Res {
    let m = MappedManager::open(path)?;
    let cap = m.stats()?.capacity;
    let room = cap + (400 << 10);
    std::env::set_var("MMHEAP_FAIL_GROW_ABOVE", room.to_string());
    std::env::set_var("MMHEAP_FAIL_GROW", libc::ENOSPC.to_string());
    // More than the free tail (the store holds 200 KB of its 1 MiB), less than 400 KiB more.
    let got = m.allocate(1_000_000);
    let grown = m.stats()?.capacity;
    let beyond = m.allocate(1_000_000);
    std::env::remove_var("MMHEAP_FAIL_GROW");
    let mut b = got.map_err(|e| format!("a growth that fits the disk failed: {e}"))?;
    stamp(&mut b, 98, 0)?;
    if grown <= cap || grown > room || grown % 4096 != 0 {
        return Err(format!("grew from {cap} to {grown}, not within {room}, by pages").into());
    }
    if !matches!(beyond, Err(Error::OutOfSpace { disk_full: true, requested: 1_000_000, .. })) {
        return Err(format!("a request past the disk's room: {beyond:?}").into());
    }
    intact(&m, 20)?;
    verify(&b, 98, 1_000_000)?;
    m.allocate(1_000_000)?;
    if m.stats()?.capacity < 2 * grown {
        return Err("with room again, the store did not double".into());
    }
    intact(&m, 20)
}

/// mmap refused (ENOMEM, as at the map count limit): open, read-only open and create fail with
/// `MapFailed`, create leaving no file; all succeed once mmap does.
fn map_refused(path: &Path) -> Res {
    let new = path.with_extension("new");
    std::env::set_var("MMHEAP_FAIL_MAP", "1");
    let (opened, read, created) = (
        MappedManager::open(path),
        MappedManager::open_read_only(path),
        MappedManager::create(&new, &Options::new().max_size(MAX)),
    );
    std::env::remove_var("MMHEAP_FAIL_MAP");
    if !map_failed(opened, MAX) || !map_failed(read, MAX) || !map_failed(created, MAX) {
        return Err("a refused mmap was not MapFailed naming max_size".into());
    }
    if new.exists() || std::fs::read_dir(path.parent().ok_or("dir")?)?.count() != 3 {
        return Err("a failed create left a file behind".into());
    }
    intact(&MappedManager::open(path)?, 20)?;
    MappedManager::open_read_only(path)?;
    drop(MappedManager::create(&new, &Options::new().max_size(MAX))?);
    Ok(())
}

/// An address-space limit below the store's max_size: `MapFailed` naming it; raised again, the
/// open succeeds.
fn address_space(path: &Path) -> Res {
    let big = path.with_extension("big");
    drop(MappedManager::create(&big, &Options::new().max_size(16 << 30))?);
    set_limit(libc::RLIMIT_AS, 8 << 30)?;
    if !map_failed(MappedManager::open(&big), 16 << 30) {
        return Err("open under RLIMIT_AS below max_size was not MapFailed naming max_size".into());
    }
    let m = MappedManager::open(path)?; // 64 MiB fits
    intact(&m, 20)?;
    set_limit(libc::RLIMIT_AS, libc::RLIM_INFINITY)?;
    MappedManager::open(&big)?;
    Ok(())
}

/// A file size limit below the growth: out of space, the process alive (the library does not
/// ask the kernel, whose answer is SIGXFSZ); raised, the growth succeeds.
fn file_size(path: &Path) -> Res {
    let m = MappedManager::open(path)?;
    set_limit(libc::RLIMIT_FSIZE, 4 << 20)?;
    if !disk_full(m.allocate(8_000_000)) {
        return Err("growth past RLIMIT_FSIZE was not OutOfSpace with disk_full".into());
    }
    let refused = MappedManager::create(path.with_extension("new"), &Options::new().initial_size(8 << 20));
    if !matches!(refused, Err(Error::OutOfSpace { disk_full: true, .. })) {
        return Err(format!("create past RLIMIT_FSIZE: {refused:?}").into());
    }
    intact(&m, 20)?;
    set_limit(libc::RLIMIT_FSIZE, libc::RLIM_INFINITY)?;
    m.allocate(8_000_000)?;
    intact(&m, 20)
}

/// Mounts a tmpfs of `size` at `dir`; the error (as the system gave it) if refused.
fn mount(dir: &Path, options: &str) -> Result<(), String> {
    let out = Command::new("mount").args(["-t", "tmpfs", "-o", options, "tmpfs"]).arg(dir).output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// Unmounts the tmpfs when dropped.
struct Mounted<'a>(&'a Path);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

/// The reviewer's case on a real disk: a store on a 2 MiB tmpfs beside a 640 KiB filler grows
/// until the disk is full; with the filler gone there is room for what the next requests need,
/// though not for doubling the store, and they are served.
fn tmpfs_least() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    if let Err(e) = mount(dir.path(), "size=2m") {
        println!("skipped: cannot mount a tmpfs here: {e}");
        return Ok(());
    }
    let mounted = Mounted(dir.path());
    let filler = dir.path().join("filler");
    std::fs::write(&filler, vec![1u8; 640 << 10])?;
    let m = MappedManager::create(
        dir.path().join("f.mmheap"),
        &Options::new().initial_size(64 << 10).max_size(MAX),
    )?;
    let mut blocks = Vec::new();
    let full = loop {
        match m.allocate(50_000) {
            Ok(b) => blocks.push(b),
            Err(e) => break e,
        }
        ensure(blocks.len() < 100, "a 2 MiB tmpfs held 5 MB")?;
    };
    ensure(matches!(full, Error::OutOfSpace { disk_full: true, .. }), format!("{full:?}"))?;
    // Full means no room for what the request needed (50,000 bytes and a header, less the free
    // tail), not for doubling the store.
    let free = free_bytes(dir.path())?;
    ensure(free < 60_000, format!("OutOfSpace with {free} bytes free on the disk"))?;
    let cap = m.stats()?.capacity;
    std::fs::remove_file(&filler)?;
    for n in [30_000, 8_000, 300_000] {
        blocks.push(m.allocate(n).map_err(|e| format!("allocate({n}) with room on the disk: {e}"))?);
    }
    ensure(m.stats()?.capacity < 2 * cap, "the store did not double")?;
    ensure(m.check()?.is_sound(), "sound after the least growths")?;
    drop((blocks, m));
    drop(mounted);
    Ok(())
}

/// Bytes free on the file system of `dir` for an unprivileged user.
fn free_bytes(dir: &Path) -> Result<u64, Failed> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: `statvfs` is plain integers, for which all zeros is a valid value.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and one struct to write, both outliving the call.
    ensure(unsafe { libc::statvfs(c.as_ptr(), &mut s) } == 0, "statvfs")?;
    Ok(s.f_bavail as u64 * s.f_frsize as u64)
}

/// A real full disk: a store on a 2 MiB tmpfs grows until the tmpfs is full; out of space,
/// sound, every block intact; what is freed is allocated again; with more room, it grows.
fn tmpfs() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    if let Err(e) = mount(dir.path(), "size=2m") {
        println!("skipped: cannot mount a tmpfs here: {e}");
        return Ok(());
    }
    let mounted = Mounted(dir.path());
    let path = dir.path().join("full.mmheap");
    let m = MappedManager::create(&path, &Options::new().initial_size(64 << 10).max_size(MAX))?;
    let mut blocks = Vec::new();
    let full = loop {
        match m.allocate(60_000) {
            Ok(mut b) => {
                stamp(&mut b, blocks.len() as u64, 0)?;
                blocks.push(b);
            }
            Err(e) => break e,
        }
        ensure(blocks.len() < 100, "a 2 MiB tmpfs held 6 MB")?;
    };
    ensure(matches!(full, Error::OutOfSpace { disk_full: true, .. }), format!("{full:?}"))?;
    ensure(m.check()?.is_sound(), "sound when full")?;
    let n = blocks.len();
    let kept: Vec<_> = blocks.into_iter().enumerate().filter(|(i, _)| i % 2 == 0).collect();
    for _ in 0..(n - kept.len()) {
        m.allocate(60_000)?;
    }
    for (id, b) in &kept {
        verify(b, *id as u64, 60_000)?;
    }
    mount(dir.path(), "remount,size=16m")?;
    m.allocate(4 << 20)?;
    ensure(m.check()?.is_sound(), "sound after growing")?;
    drop((kept, m));
    drop(mounted);
    Ok(())
}
