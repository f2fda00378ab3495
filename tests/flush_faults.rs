//! An msync or fsync that fails (EIO: the disk could not write a page) is the caller's error,
//! never a silent success; the same calls succeed once the fault is gone. The fault is
//! injected from outside the library: a child runs with `LD_PRELOAD` of a small C library
//! whose `msync`, `fsync` and `fdatasync` fail with EIO while `MMHEAP_FAIL_SYNC` is `1`.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use libtest_mimic::{Failed, Trial};
use mmheap::{Error, MappedManager, MemoryManager, Options, SharedBytesMap};

const SHIM: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <stddef.h>

static int failing(void) {
    const char *v = getenv("MMHEAP_FAIL_SYNC");
    return v != NULL && v[0] == '1';
}

int msync(void *addr, size_t len, int flags) {
    if (failing()) { errno = EIO; return -1; }
    int (*real)(void *, size_t, int) = (int (*)(void *, size_t, int))dlsym(RTLD_NEXT, "msync");
    return real(addr, len, flags);
}

int fsync(int fd) {
    if (failing()) { errno = EIO; return -1; }
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return real(fd);
}

int fdatasync(int fd) {
    if (failing()) { errno = EIO; return -1; }
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return real(fd);
}
"#;

fn main() {
    child_or_tests(child, || {
        vec![Trial::test("store::a_failed_msync_or_fsync_is_an_error_to_the_caller", eio)]
    });
}

fn eio() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("failsync.c");
    let shim = dir.path().join("libfailsync.so");
    std::fs::write(&source, SHIM)?;
    let cc =
        Command::new("cc").args(["-shared", "-fPIC", "-o"]).arg(&shim).arg(&source).arg("-ldl").status()?;
    ensure(cc.success(), "cc builds the fault library")?;
    let path = dir.path().join("f.mmheap");
    drop(MappedManager::create(&path, &Options::new())?);
    let kid = spawn("flush", &path, &[("LD_PRELOAD", shim.display().to_string())]);
    wait_ok(kid, "the flushing process")?;
    let m = MappedManager::open(&path)?;
    let map = SharedBytesMap::open(m.root("map")?.ok_or("the map")?)?;
    ensure(map.get(b"k")?.as_deref() == Some(&b"v"[..]), "the data written")?;
    ensure(m.check()?.is_sound(), "sound")
}

fn is_eio(r: mmheap::Result<()>) -> bool {
    matches!(r, Err(Error::Io { ref source, .. }) if source.raw_os_error() == Some(libc::EIO))
}

fn child(role: &str, path: &Path) -> Res {
    if role != "flush" {
        return Err(format!("no role {role}").into());
    }
    let m = MappedManager::open(path)?;
    let map = SharedBytesMap::new_in(&m)?;
    map.insert(b"k", b"v")?;
    m.set_root("map", map.block())?;
    let mut block = m.allocate(10_000)?;
    block.as_mut_slice()?.fill(7);
    std::env::set_var("MMHEAP_FAIL_SYNC", "1");
    let (flush, range) = (m.flush(), m.flush_block(&block));
    std::env::set_var("MMHEAP_FAIL_SYNC", "0");
    if !is_eio(flush) || !is_eio(range) {
        return Err("a failed msync or fsync was not reported as EIO".into());
    }
    m.flush()?;
    m.flush_block(&block)?;
    m.flush_block(map.block())?;
    Ok(())
}
