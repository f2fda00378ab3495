//! `MappedManager::open_read_only`: a store read without writing a byte of it, by a process
//! that may not write it (mode 0400, another user), while others may be writing it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mmheap::{BlockHandle, DefaultManager, Error, MappedManager, MemoryManager, Options, ReadOnlyStore};

/// A store with a 5000-byte block rooted as "big" and a 40-byte one (a slot) as "small".
fn populated(path: &Path) -> (BlockHandle, BlockHandle) {
    let m = MappedManager::create(path, &Options::new()).unwrap();
    let (mut big, mut small) = (m.allocate(5000).unwrap(), m.allocate(40).unwrap());
    big.as_mut_slice().unwrap().iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
    small.as_mut_slice().unwrap().fill(7);
    m.set_root("big", &big).unwrap();
    m.set_root("small", &small).unwrap();
    (big.handle(), small.handle())
}

fn big_bytes() -> Vec<u8> {
    (0..5000).map(|i| i as u8).collect()
}

/// The file's bytes and modification time, to compare before and after.
fn fingerprint(path: &Path) -> (Vec<u8>, std::time::SystemTime) {
    (std::fs::read(path).unwrap(), std::fs::metadata(path).unwrap().modified().unwrap())
}

fn is_read_only<T: std::fmt::Debug>(r: mmheap::Result<T>) -> bool {
    matches!(r, Err(Error::ReadOnly { .. }))
}

/// Every read a read-only store offers, and every write it refuses, on a store nobody else has
/// open: the file is byte for byte (and by its modification time) as it was.
#[test]
fn reads_and_refused_writes_leave_the_file_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.mmheap");
    let (big, small) = populated(&path);
    let before = fingerprint(&path);

    let ro = MappedManager::open_read_only(&path).unwrap();
    assert_eq!(ro.roots().unwrap(), vec![("big".to_owned(), big), ("small".to_owned(), small)]);
    assert_eq!(ro.root_handle("small").unwrap(), Some(small));
    assert_eq!(ro.root_handle("none").unwrap(), None);
    assert!(matches!(ro.root_handle(""), Err(Error::InvalidRootName(_))));
    assert_eq!(ro.read_root("big").unwrap(), Some(big_bytes()));
    assert_eq!(ro.read_root("none").unwrap(), None);
    assert_eq!(ro.read(small).unwrap(), vec![7; 40]);
    // SAFETY: nobody else has the store open, so the block stays allocated and unchanged.
    let view = unsafe { ro.view(big) }.unwrap();
    assert_eq!(view.as_slice(), &big_bytes()[..]);
    assert_eq!(view.segment().read::<u32>(4).unwrap(), u32::from_le_bytes([4, 5, 6, 7]));
    assert_eq!(view.handle(), big);
    let stale = BlockHandle { offset: big.offset, generation: big.generation + 1 };
    assert!(matches!(ro.read(stale), Err(Error::StaleHandle { .. } | Error::InvalidHandle { .. })));
    assert!(matches!(ro.read(BlockHandle { offset: 3, generation: 1 }), Err(Error::InvalidHandle { .. })));
    let stats = ro.stats().unwrap();
    assert_eq!((stats.live_blocks, stats.attached_processes), (2, 0), "{stats:?}");
    assert!(ro.check().unwrap().is_sound());

    // Every write is refused with the typed error, the counted reference of a handle too.
    assert!(is_read_only(ro.allocate(8)));
    assert!(is_read_only(ro.allocate_aligned(64, 64)));
    assert!(is_read_only(ro.allocate_zeroed(8)));
    assert!(is_read_only(ro.block_from_handle(big)));
    let mut elsewhere = DefaultManager::new().unwrap().allocate(8).unwrap();
    assert!(is_read_only(ro.resize(&mut elsewhere, 16)));
    ro.trim().unwrap();
    let err = ro.allocate(1).unwrap_err().to_string();
    assert!(err.contains("read-only") && err.contains("s.mmheap"), "{err}");
    drop(ro);

    assert!(before == fingerprint(&path), "the read-only open changed the file");
}

/// A file whose mode has no write bit is opened read-only; `open` (and everything else that
/// would write it) says why it refuses, even to root, who could write it.
#[test]
fn a_store_of_mode_0400_is_read_and_refused_for_writing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.mmheap");
    populated(&path);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    let before = fingerprint(&path);

    assert!(is_read_only(MappedManager::open(&path)));
    assert!(is_read_only(MappedManager::open_or_create(&path, &Options::new())));
    assert!(is_read_only(MappedManager::recover_file(&path)));
    assert!(is_read_only(MappedManager::salvage(&path)));
    let err = MappedManager::open(&path).unwrap_err().to_string();
    assert!(err.contains("open_read_only"), "{err}");

    let ro = MappedManager::open_read_only(&path).unwrap();
    assert_eq!(ro.read_root("big").unwrap(), Some(big_bytes()));
    assert!(ro.check().unwrap().is_sound());
    drop(ro);
    assert!(before == fingerprint(&path), "the read-only open changed the file");
}

#[test]
fn a_read_only_store_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync + std::fmt::Debug>() {}
    shareable::<ReadOnlyStore>();
    shareable::<mmheap::ReadOnlyBlock<'static>>();
}

#[test]
fn missing_and_foreign_files_are_refused_as_open_refuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.mmheap");
    assert!(matches!(MappedManager::open_read_only(&path), Err(Error::NotFound(_))));
    std::fs::write(&path, vec![0x5a; 1 << 16]).unwrap();
    assert!(matches!(MappedManager::open_read_only(&path), Err(Error::NotAStore)));
}

/// A writer in the same process: the reader is not one of the store's processes, counts no
/// reference, follows the store's growth, refuses a freed block's handle, and declines to check
/// a store with a living process (it cannot take the lock).
#[test]
fn a_living_writer_is_read_without_being_disturbed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.mmheap");
    let w = MappedManager::create(&path, &Options::new().initial_size(64 << 10).max_size(64 << 20)).unwrap();
    let ro = MappedManager::open_read_only(&path).unwrap();

    let mut a = w.allocate(300).unwrap();
    a.as_mut_slice().unwrap().fill(1);
    let ha = a.handle();
    assert_eq!(ro.read(ha).unwrap(), vec![1; 300]);
    assert_eq!(a.ref_count(), 1, "a read counts no reference");
    assert_eq!(w.stats().unwrap().attached_processes, 1, "the reader is not attached");
    assert_eq!(ro.stats().unwrap().attached_processes, 1);
    assert!(matches!(ro.check(), Err(Error::StoreInUse { processes: 1 })));
    drop(a);
    assert!(matches!(ro.read(ha), Err(Error::StaleHandle { .. })), "a freed block is stale");

    // The writer grows the store past what the reader mapped as backed at its open.
    let mut big = w.allocate(8 << 20).unwrap();
    big.as_mut_slice().unwrap().fill(9);
    w.set_root("big", &big).unwrap();
    assert!(w.stats().unwrap().capacity > 64 << 10);
    assert_eq!(ro.read_root("big").unwrap(), Some(vec![9; 8 << 20]));
    assert_eq!(big.ref_count(), 2, "owner and root: the reader adds none");
    w.remove_root("big").unwrap();
    assert_eq!(ro.read_root("big").unwrap(), None);
    drop((big, w));
    assert!(ro.check().unwrap().is_sound(), "nobody attached now");
}

/// Reads race a writer that replaces a rooted block again and again (freeing the old one,
/// whose space the next allocations reuse): every copy a read returns is a whole block as it
/// was written, never a mix of two; a read that loses the race says so.
#[test]
fn reads_racing_a_writer_return_whole_blocks_or_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.mmheap");
    let w = MappedManager::create(&path, &Options::new()).unwrap();
    let ro = MappedManager::open_read_only(&path).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (mut whole, mut refused) = (0u64, 0u64);
    let failed = std::thread::scope(|s| {
        s.spawn(|| {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                // A size that changes, so that freed blocks are split and reused.
                let len = 16 + (n as usize * 37) % 3000;
                let mut b = w.allocate(len).unwrap();
                b.as_mut_slice().unwrap().fill(n as u8);
                b.as_mut_slice().unwrap()[..8].copy_from_slice(&n.to_le_bytes());
                w.set_root("latest", &b).unwrap();
            }
        });
        let until = Instant::now() + Duration::from_millis(800);
        let mut failed = None;
        while failed.is_none() && Instant::now() < until {
            match ro.read_root("latest") {
                Ok(Some(bytes)) => {
                    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
                    if let Some(at) = bytes[8..].iter().position(|&x| x != n as u8) {
                        failed =
                            Some(format!("a torn copy of block {n}: byte {} is {}", at + 8, bytes[at + 8]));
                    }
                    whole += 1;
                }
                Ok(None) => {}
                Err(Error::StaleHandle { .. }) => refused += 1,
                Err(e) => failed = Some(format!("read_root: {e}")),
            }
            match ro.roots() {
                // A handle `roots` gives reads whole or is stale, never invalid (a generation of
                // 0 read from a block freed under a torn listing was).
                Ok(roots) if roots.len() <= 1 => {
                    for (_, h) in roots {
                        match ro.read(h) {
                            Ok(_) | Err(Error::StaleHandle { .. }) => {}
                            Err(e) => failed = Some(format!("read of {h:?} from roots: {e}")),
                        }
                    }
                }
                other => failed = Some(format!("roots: {other:?}")),
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        failed
    });
    assert!(failed.is_none(), "{failed:?} after {whole} whole copies");
    println!("{whole} whole copies, {refused} reads refused as stale");
    assert!(whole > 0);
}

/// The test binary copied where another user can run it.
fn runnable_copy(dir: &Path) -> PathBuf {
    let exe = dir.join("read_only_test");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    exe
}

const CHILD: &str = "MMHEAP_READ_ONLY_CHILD";

/// A user who may read the store but not write it (the file is root's, mode 0644): `open` says
/// it is read-only, `open_read_only` reads it, and the file is unchanged. Needs root (to run
/// the reader as `nobody` with `setpriv`); skipped, saying why, otherwise.
#[test]
fn a_user_without_write_permission_reads_the_store() {
    if let Ok(path) = std::env::var(CHILD) {
        return read_as_another_user(Path::new(&path));
    }
    let Some((uid, gid)) = common::nobody() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("s.mmheap");
    populated(&path);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = fingerprint(&path);
    let out = Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .args(["--clear-groups", "--"])
        .arg(runnable_copy(dir.path()))
        .args(["a_user_without_write_permission_reads_the_store", "--exact", "--nocapture"])
        .env(CHILD, &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("read as uid {uid}: 5000 bytes")), "{stdout}");
    assert!(before == fingerprint(&path), "the other user's read changed the file");
}

/// The child of [`a_user_without_write_permission_reads_the_store`].
fn read_as_another_user(path: &Path) {
    let writable = std::fs::OpenOptions::new().write(true).open(path);
    assert!(writable.is_err(), "the child may write the store: the test proves nothing");
    assert!(is_read_only(MappedManager::open(path)), "{:?}", MappedManager::open(path));
    let ro: ReadOnlyStore = MappedManager::open_read_only(path).unwrap();
    let big = ro.read_root("big").unwrap().unwrap();
    assert_eq!(big, big_bytes());
    assert!(ro.check().unwrap().is_sound());
    assert_eq!(ro.stats().unwrap().live_blocks, 2);
    let uid = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
    println!("read as uid {}: {} bytes", uid.trim(), big.len());
}
