//! The edges users meet first: sizes near `u64::MAX`, a full disk, a full store, a request no
//! store could hold, bookkeeping that must not split the heap, and blocks whose headers were
//! damaged while they were held.

mod common;

use std::path::Path;

use common::*;
use libtest_mimic::{Failed, Trial};
use mmheap::format::HEADER_SIZE;
use mmheap::{DefaultManager, Error, MappedManager, MemoryManager, Options};

fn main() {
    child_or_tests(child, || {
        vec![
            Trial::test("sizes_near_u64_max_are_typed_errors", huge_sizes),
            Trial::test("a_full_disk_is_out_of_space_and_the_store_stays_usable", full_disk),
            Trial::test("a_hopeless_request_is_refused_before_any_growth", hopeless_request),
            Trial::test("out_of_space_means_no_free_block_is_large_enough", exact_fit),
            Trial::test("the_largest_allocation_of_a_fresh_store_is_its_whole_heap", largest_of_fresh_store),
            Trial::test("a_full_store_takes_back_what_the_thread_parked_first", parked_make_way),
            Trial::test("bookkeeping_does_not_split_the_heap", bookkeeping_low),
            Trial::test("releasing_blocks_whose_headers_were_damaged_does_not_panic", damaged_release),
            Trial::test("using_blocks_whose_headers_were_damaged_gives_errors", damaged_use),
            Trial::test("a_handle_a_full_store_cannot_record_publishes_nothing", full_store_handle),
            Trial::test("a_store_made_at_its_minimum_size_stays_there", minimum_store),
            Trial::test("a_growth_by_another_process_is_followed_without_the_lock", growth_elsewhere),
            Trial::test("flush_block_takes_blocks_of_every_form", flush_forms),
        ]
    });
}

/// A child that creates a store under a file size limit of `MMHEAP_FSIZE` bytes (the kernel's
/// answer to growing past it is `EFBIG`, as a full disk's is `ENOSPC`) and fills it. Or one
/// that grows a store (`grow`), keeping what it allocated under a root.
fn child(role: &str, store: &Path) -> Res {
    match role {
        "grow" => {
            let m = MappedManager::open(store)?;
            m.set_root("big", &m.allocate(8 << 20)?)?;
            Ok(())
        }
        "limited" => {
            let limit = env_u64("MMHEAP_FSIZE", 8 << 20);
            // SIGXFSZ is left as it is (it kills the process): the library must not provoke it.
            // SAFETY: a plain system call on this process's own limits, with a valid struct.
            unsafe {
                let rl = libc::rlimit { rlim_cur: limit, rlim_max: limit };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &rl) != 0 {
                    return Err("setrlimit".into());
                }
            }
            // A store whose initial size is past the limit is not made, and leaves nothing.
            let dir = store.parent().ok_or("dir")?;
            let too_big =
                MappedManager::create(dir.join("big.mmheap"), &Options::new().initial_size(limit * 2));
            if !matches!(too_big, Err(Error::OutOfSpace { disk_full: true, .. })) {
                return Err(format!("creating past the limit: {too_big:?}").into());
            }
            if std::fs::read_dir(dir)?.count() != 0 {
                return Err("a file was left behind".into());
            }
            let m = MappedManager::create(store, &Options::new().initial_size(1 << 20).max_size(1 << 30))?;
            let mut blocks = Vec::new();
            let err = loop {
                match m.allocate(256 << 10) {
                    Ok(mut b) => {
                        b.as_mut_slice()?.fill(7);
                        blocks.push(b);
                    }
                    Err(e) => break e,
                }
            };
            println!("{err}");
            if !matches!(err, Error::OutOfSpace { disk_full: true, .. }) {
                return Err(format!("not a full disk: {err:?}").into());
            }
            if !m.check()?.is_sound() {
                return Err("unsound after a full disk".into());
            }
            // Still usable: what is freed is used again, and the data is intact.
            drop(blocks.split_off(blocks.len() / 2));
            let again = m.allocate(256 << 10)?;
            if blocks.iter().any(|b| b.as_slice().iter().any(|&x| x != 7)) || again.len() != 256 << 10 {
                return Err("data changed".into());
            }
            println!("usable: {} blocks kept, capacity {}", blocks.len(), m.stats()?.capacity);
            Ok(())
        }
        _ => Err(format!("unknown role {role}").into()),
    }
}

fn huge_sizes() -> Result<(), Failed> {
    for max in [u64::MAX, u64::MAX - 1, u64::MAX - 4095, 1 << 63] {
        let err = DefaultManager::with_max_size(max).map(drop).expect_err("too large");
        ensure(matches!(err, Error::InvalidOptions(_)), format!("DefaultManager {max:#x}: {err}"))?;
    }
    let dir = tempfile::tempdir()?;
    for (i, opts) in [
        Options::new().max_size(u64::MAX),
        Options::new().initial_size(u64::MAX),
        Options::new().initial_size(u64::MAX - 1).max_size(u64::MAX),
        Options::new().max_size(u64::MAX - 4095),
    ]
    .iter()
    .enumerate()
    {
        let path = dir.path().join(format!("{i}.mmheap"));
        let err = MappedManager::create(&path, opts).map(drop).expect_err("too large");
        ensure(matches!(err, Error::InvalidOptions(_)), format!("options {i}: {err}"))?;
        ensure(!path.exists(), "nothing created")?;
    }
    // Requests near the top of the address space are out of space, never an overflow.
    let m = MappedManager::temporary(&Options::new().max_size(16 << 20))?;
    let d = DefaultManager::new()?;
    for len in [usize::MAX, usize::MAX - 15, usize::MAX / 2, 1 << 47] {
        ensure(matches!(m.allocate(len), Err(Error::OutOfSpace { .. })), format!("store {len:#x}"))?;
        ensure(matches!(d.allocate(len), Err(Error::OutOfSpace { .. })), format!("in-process {len:#x}"))?;
        let mut b = m.allocate(10)?;
        ensure(matches!(m.resize(&mut b, len), Err(Error::OutOfSpace { .. })), "resize")?;
    }
    ensure(m.check()?.is_sound(), "sound")
}

fn full_disk() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("limited.mmheap");
    let kid = spawn("limited", &path, &[("MMHEAP_FSIZE", (8u64 << 20).to_string())]);
    let out = kid.take().wait_with_output()?;
    let text = String::from_utf8(out.stdout)?;
    print!("{text}");
    ensure(out.status.success(), format!("the child: {}", out.status))?;
    ensure(text.contains("disk is full"), "the error says the disk is full")?;
    let m = MappedManager::open(&path)?;
    ensure(m.check()?.is_sound(), "sound when reopened")
}

fn hopeless_request() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("s.mmheap");
    let m = MappedManager::create(&path, &Options::new().initial_size(1 << 20).max_size(64 << 20))?;
    let before = (m.stats()?.capacity, std::fs::metadata(&path)?.len());
    let err = m.allocate(100 << 20).map(drop).expect_err("more than the maximum");
    ensure(matches!(err, Error::OutOfSpace { disk_full: false, .. }), format!("{err}"))?;
    let after = (m.stats()?.capacity, std::fs::metadata(&path)?.len());
    ensure(before == after, format!("no growth for a hopeless request: {before:?} -> {after:?}"))?;
    // One that fits only once grown does grow.
    let b = m.allocate(40 << 20)?;
    ensure(m.stats()?.capacity > before.0, "grew for one that fits")?;
    drop(b);
    ensure(m.check()?.is_sound(), "sound")
}

/// In a full store, a freed block of exactly the size asked for is found, whatever list
/// rounding would skip it; `largest_free` is what can be allocated.
fn exact_fit() -> Result<(), Failed> {
    for m in [
        Box::new(MappedManager::temporary(&Options::new().initial_size(8 << 20).max_size(8 << 20))?)
            as Box<dyn Subject>,
        Box::new(DefaultManager::with_max_size(8 << 20)?),
    ] {
        let mut big = Vec::new();
        while let Ok(b) = m.mm().allocate(1 << 20) {
            big.push(b);
        }
        let mut small = Vec::new();
        while let Ok(b) = m.mm().allocate(2000) {
            small.push(b);
        }
        m.mm().trim()?;
        ensure(big.len() >= 4, format!("{} 1 MiB blocks", big.len()))?;
        drop(big.swap_remove(1));
        m.mm().trim()?;
        let s = m.mm().stats()?;
        ensure(s.largest_free == (1 << 20) + HEADER_SIZE, format!("largest free {}", s.largest_free))?;
        let again = m.mm().allocate(1 << 20).map_err(|e| format!("a freed 1 MiB hole refuses 1 MiB: {e}"))?;
        ensure(again.len() == 1 << 20, "the whole hole")?;
        drop(again);
        m.mm().trim()?;
        ensure(matches!(m.mm().allocate((1 << 20) + 1), Err(Error::OutOfSpace { .. })), "but no more")?;
        ensure(m.sound()?, "sound")?;
    }
    Ok(())
}

/// Both managers, through the same calls.
trait Subject {
    fn mm(&self) -> &dyn MemoryManager;
    fn sound(&self) -> mmheap::Result<bool>;
}

impl Subject for MappedManager {
    fn mm(&self) -> &dyn MemoryManager {
        self
    }
    fn sound(&self) -> mmheap::Result<bool> {
        Ok(self.check()?.is_sound())
    }
}

impl Subject for DefaultManager {
    fn mm(&self) -> &dyn MemoryManager {
        self
    }
    fn sound(&self) -> mmheap::Result<bool> {
        Ok(self.check()?.is_sound())
    }
}

fn largest_of_fresh_store() -> Result<(), Failed> {
    let max = 64u64 << 20;
    let m = MappedManager::temporary(&Options::new().initial_size(1 << 20).max_size(max))?;
    // The heap spans the store less the metadata area and the end sentinel; this process's
    // counter table (bookkeeping) is the one block in it.
    let r = m.check()?;
    let used = r.used_bytes + r.cached_bytes + r.bookkeeping_bytes;
    let largest = (max - mmheap::format::HEAP_START - 32 - used - HEADER_SIZE) as usize;
    ensure(matches!(m.allocate(largest + 16), Err(Error::OutOfSpace { .. })), "one granule more fails")?;
    let b = m.allocate(largest).map_err(|e| format!("the whole heap ({largest} bytes): {e}"))?;
    ensure(m.stats()?.capacity == max, "grown to the maximum")?;
    drop(b);
    ensure(m.check()?.is_sound(), "sound")
}

/// A full store whose free space is in holes this thread's parked blocks sit in: what the
/// thread keeps parked goes back before `OutOfSpace`, for an allocation and for a resize that
/// moves.
fn parked_make_way() -> Result<(), Failed> {
    for resize in [false, true] {
        let m = MappedManager::temporary(&Options::new().initial_size(2 << 20).max_size(2 << 20))?;
        let mut keep = Vec::new();
        while let Ok(b) = m.allocate(64 << 10) {
            keep.push(b);
        }
        for i in [9, 6, 3] {
            drop(keep.remove(i));
        }
        // Fill the holes with blocks of many sizes, then release them: each size class keeps
        // up to 32 KiB parked, scattered over the holes.
        let mut small = Vec::new();
        let mut len = 700;
        while let Ok(b) = m.allocate(len) {
            small.push(b);
            len = if len > 4000 { 700 } else { len + 97 };
        }
        drop(small);
        let want = (64 << 10) - 64;
        let what = if resize { "a moving resize" } else { "an allocation" };
        let done = match resize {
            true => m.allocate(100).and_then(|mut b| m.resize(&mut b, want)),
            false => m.allocate(want).map(drop),
        };
        done.map_err(|e| format!("{what} in a store whose holes hold parked blocks: {e}"))?;
        ensure(m.check()?.is_sound(), "sound")?;
    }
    Ok(())
}

fn bookkeeping_low() -> Result<(), Failed> {
    let m = MappedManager::temporary(&Options::new())?;
    let blocks: Vec<_> = (0..3).map(|_| m.allocate(300 << 10)).collect::<Result<_, _>>()?;
    let [a, b, c] = <[_; 3]>::try_from(blocks).map_err(|_| "three")?;
    drop(a);
    drop(c);
    drop(b);
    m.trim()?;
    let r = m.check()?;
    ensure(
        r.free_blocks == 1,
        format!("one free block, not {}: the process's tables split the heap", r.free_blocks),
    )?;
    let d = DefaultManager::new()?;
    let blocks: Vec<_> = (0..3).map(|_| d.allocate(300 << 10)).collect::<Result<_, _>>()?;
    drop(blocks);
    d.trim()?;
    ensure(d.check()?.free_blocks == 1, "in process too")
}

/// A peer against the protocol (or a flipped bit) changes the headers of blocks this process
/// holds: releasing them leaks or refuses, never panics.
fn damaged_release() -> Result<(), Failed> {
    use std::os::unix::fs::FileExt;
    let m = MappedManager::temporary(&Options::new())?;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(m.path())?;
    for garbage in [0u64, u64::MAX, 1, 0x8000_0000_0000_0001, 0x0010_0000_0000_0000] {
        let mut held = Vec::new();
        for len in [8, 64, 100, 1000, 5000, 200_000] {
            let lent = m.allocate(len)?; // from the thread's cache, or carved
            let cloned = m.allocate(len)?;
            let shared = cloned.clone();
            let published = m.allocate(len)?;
            let _ = published.handle();
            held.extend([lent, cloned, shared, published]);
        }
        for (i, b) in held.iter().enumerate() {
            // A block's reference word and tag (for a slot, the bytes before its payload: its
            // neighbour's, or its span's reference words).
            let at = b.offset().get() - if i % 2 == 0 { 16 } else { 32 };
            file.write_all_at(&garbage.to_le_bytes(), at)?;
        }
        drop(held);
        let _ = m.check();
        let _ = m.trim();
    }
    Ok(())
}

/// Blocks this process holds whose reference words a damaged store changed (overflowing
/// counts, zero counts): rooting, sending, publishing and resizing them are errors or leave
/// them as they are; nothing panics. (A clone whose count would overflow aborts, as `Arc`'s
/// does: it cannot fail.) A span whose count of slots in use is out of range is refused too.
fn damaged_use() -> Result<(), Failed> {
    use std::os::unix::fs::FileExt;
    let m = MappedManager::temporary(&Options::new())?;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(m.path())?;
    let tx = m.channel("q", 64)?.sender()?;
    for garbage in [u64::MAX, 0, 0xffff_ffff, 0x7ff0_0000_ffff_ffff] {
        for len in [100, 1000, 5000] {
            let (mut a, b, c, d) = (m.allocate(len)?, m.allocate(len)?, m.allocate(len)?, m.allocate(len)?);
            for x in [&a, &b, &c, &d] {
                file.write_all_at(&garbage.to_le_bytes(), x.offset().get() - 16)?;
            }
            let _ = m.set_root("r", &b);
            let _ = tx.try_send(c);
            let _ = d.handle();
            let _ = m.resize(&mut a, len * 3);
            drop((a, b, d));
        }
    }
    // A span's count of slots in use at its maximum: taking a slot from it is refused.
    let probe = m.allocate(40)?;
    let span = probe.offset().get() & !0xffff;
    file.write_all_at(&u64::MAX.to_le_bytes(), span + mmheap::format::SPAN_USED)?;
    drop(probe);
    m.trim()?;
    for _ in 0..5000 {
        let _ = m.allocate(40);
    }
    let _ = m.check();
    Ok(())
}

/// In a store with no room for a span's publication page, a small block's handle cannot be
/// recorded: it has generation 0, the block stays unpublished (and writable), and the store
/// stays sound, so a crash now leaves nothing recovery would call damage.
fn full_store_handle() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("s.mmheap");
    let m = MappedManager::create(&path, &Options::new().initial_size(256 << 10).max_size(256 << 10))?;
    let mut small = m.allocate(40)?;
    let mut fill = Vec::new();
    while let Ok(b) = m.allocate(1000) {
        fill.push(b);
    }
    while let Ok(b) = m.allocate(100) {
        fill.push(b);
    }
    let h = small.handle();
    ensure(h.generation == 0, format!("no record, no generation: {h:?}"))?;
    ensure(!small.is_published() && small.as_mut_slice().is_ok(), "unpublished, writable")?;
    ensure(m.check()?.is_sound(), "sound")?;
    std::mem::forget(fill); // as a crash would leave them
    std::mem::forget(small);
    std::mem::forget(m);
    MappedManager::recover_file(&path).map_err(|e| format!("recovery after it: {e}"))?;
    ensure(MappedManager::open(&path)?.check()?.is_sound(), "sound after recovery")
}

fn minimum_store() -> Result<(), Failed> {
    let m = MappedManager::temporary(&Options::new().initial_size(0))?;
    let s = m.stats()?;
    ensure(s.capacity == mmheap::format::MIN_STORE_SIZE, format!("made at its minimum: {s:?}"))?;
    let b = m.allocate(100)?;
    ensure(m.check()?.is_sound(), "usable")?;
    drop(b);
    Ok(())
}

/// Another process grows the store; this one then uses a block without taking the store lock
/// first (resolving a handle, reading a link table): the larger capacity is another process's
/// growth to follow, not damage. (Found by a container test, one run in about 80: a writer
/// process failed with "capacity out of range" while others grew the store.)
fn growth_elsewhere() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("g.mmheap");
    let m = MappedManager::create(&path, &Options::new().initial_size(1 << 20).max_size(64 << 20))?;
    let parent = m.allocate_linked(1, 8)?;
    let child = m.allocate(100)?;
    parent.set_link(0, Some(&child))?;
    let handle = parent.handle();
    let guarded = m.allocate_guarded(16, 8)?;
    let before = m.stats()?.capacity;
    let mut kid = spawn("grow", &path, &[]);
    let status = kid.get().wait()?;
    ensure(status.success(), "the growing process")?;
    // No store lock taken here since the growth: these read the larger capacity first.
    ensure(parent.link_count() == 1, "the link table is read")?;
    ensure(guarded.lock()?.guard().len() == 8, "the guarded area is locked")?;
    let again = m.block_from_handle(handle)?;
    ensure(again.link(0)?.is_some_and(|c| c.len() == 100), "the link is followed")?;
    ensure(m.stats()?.capacity > before, "the store grew")?;
    Ok(())
}

/// `flush_block` of a slot (a published one: its span has a page of records), a large block, a
/// linked and a guarded one; and of another manager's block, refused.
fn flush_forms() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let m = MappedManager::create(dir.path().join("f.mmheap"), &Options::new())?;
    let mut small = m.allocate(40)?;
    small.as_mut_slice()?.fill(1);
    let _handle = small.handle(); // published: its record is on its span's page
    let mut large = m.allocate(100_000)?;
    large.as_mut_slice()?.fill(2);
    let linked = m.allocate_linked(2, 10)?;
    linked.set_link(0, Some(&small))?;
    let guarded = m.allocate_guarded(8, 8)?;
    for b in [&small, &large, &linked, &guarded] {
        m.flush_block(b)?;
    }
    let other = MappedManager::temporary(&Options::new())?;
    ensure(
        matches!(m.flush_block(&other.allocate(8)?), Err(mmheap::Error::WrongManager)),
        "another manager's",
    )?;
    Ok(())
}
