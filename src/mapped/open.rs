//! Creating and opening store files: validation before anything is trusted.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::ptr::NonNull;

use memmap2::{MmapOptions, MmapRaw};

use super::trust::{self, Access};
use super::{registry, FileBacking, MappedManager, Options, MAX_STORE_SIZE};
use crate::engine::core::header::Tag;
use crate::engine::core::region::Region;
use crate::engine::heap::{format_region, Heap};
use crate::error::{Error, Result};
use crate::format::*;

/// Builds a store in a temporary file beside `path`, then links it into place without
/// overwriting anything.
pub(super) fn create(path: &Path, options: &Options, temporary: bool) -> Result<MappedManager> {
    let (initial, max) = options.sizes()?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // Created 0600 (never more open than asked, whatever the umask), then given the mode.
    let tmp = tempfile::Builder::new()
        .prefix(".mmheap-new-")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(|e| Error::io("create a temporary store file", e))?;
    // The mode asked for, exactly: the umask narrowed the one the file was created with.
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(options.mode))
        .map_err(|e| Error::io("set the store file's mode", e))?;
    crate::sys::preallocate(tmp.as_file(), initial)
        .map_err(|e| Error::growth("size the store file", e, initial, max))?;
    let map = map_file(tmp.as_file(), max)?;
    let region = region_of(&map, initial, max);
    let flags = if temporary { SB_FLAG_TEMPORARY } else { 0 };
    format_region(&region, initial, max, flags)?;
    region.store(SB_BOOT_ID, crate::sys::boot_id())?;
    let file = tmp.persist_noclobber(path).map_err(|e| match e.error.kind() {
        ErrorKind::AlreadyExists => Error::AlreadyExists(path.to_owned()),
        _ => Error::io("link the store file into place", e.error),
    })?;
    finish(file, map, region, path, temporary, true)
}

/// Opens and validates an existing store. One that another boot than this one used last (the
/// machine may have gone down with it open: `SB_BOOT_ID`) is opened as after a power loss: its
/// file is extended to its capacity if the new length did not persist, its end sentinel is not
/// required, and the strict recovery runs, then salvage if it refuses (`recover_on_open`).
pub(super) fn open(path: &Path, options: &Options) -> Result<MappedManager> {
    let (file, rebooted) = open_in_this_boot(path, options)?;
    let (file, map, region) = map_opened(path, file)?;
    if !rebooted {
        end_sentinel(&file, region.limit())?;
    }
    finish(file, map, region, path, false, false)
}

/// Opens the store file at `path` for writing; if it records another boot than this one,
/// extends it to a capacity whose length did not persist (`reach_recorded_capacity`), and says
/// so.
fn open_in_this_boot(path: &Path, options: &Options) -> Result<(File, bool)> {
    let file = trust::open_store(path, Access::Write, options.trust)?;
    let rebooted = another_boot(&file, crate::sys::boot_id())?;
    if rebooted {
        reach_recorded_capacity(&file)?;
    }
    Ok((file, rebooted))
}

/// Whether the store records a boot other than `boot` (0 for either: unknown, not another).
fn another_boot(file: &File, boot: u64) -> Result<bool> {
    let mut word = [0u8; 8];
    match file.read_exact_at(&mut word, SB_BOOT_ID) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(Error::io("read the superblock", e)),
    }
    let recorded = u64::from_le_bytes(word);
    Ok(recorded != 0 && boot != 0 && recorded != boot)
}

/// After a power loss the superblock may have persisted a capacity a growth published while
/// the file's new length did not: the file is extended to it (zeros, which the salvage at open
/// reads as damage or as growth's free space). A capacity out of range is left for
/// [`validate_superblock`] to refuse.
fn reach_recorded_capacity(file: &File) -> Result<()> {
    let mut sb = [0u8; 16];
    file.read_exact_at(&mut sb, SB_MAX_SIZE).map_err(|e| Error::io("read the superblock", e))?;
    let max = u64::from_le_bytes(sb[..8].try_into().unwrap_or_default());
    let capacity = u64::from_le_bytes(sb[8..].try_into().unwrap_or_default());
    let len = file.metadata().map_err(|e| Error::io("stat the store file", e))?.len();
    let plausible =
        (MIN_STORE_SIZE..=max.min(MAX_STORE_SIZE)).contains(&capacity) && capacity % PAGE_SIZE == 0;
    if plausible && capacity > len {
        crate::sys::preallocate(file, capacity)
            .map_err(|e| Error::growth("extend the store file", e, capacity, max))?;
    }
    Ok(())
}

/// Checks that the heap ends with its sentinel at `capacity`, or at the capacity the store has
/// grown to since it was read (a growth by another process moves the sentinel; a capacity that
/// does not change, or keeps changing, with no sentinel at its end is damage). Read from the
/// file, not through the mapping: a touch of the mapping's last page would fault in the (large)
/// folio around it, for one word that nothing else at open needs.
fn end_sentinel(file: &File, mut capacity: u64) -> Result<()> {
    for _ in 0..8 {
        let mut word = [0u8; 8];
        file.read_exact_at(&mut word, capacity - SENTINEL_SIZE)
            .map_err(|e| Error::io("read the store file", e))?;
        if Tag(u64::from_le_bytes(word)).is_sentinel() {
            return Ok(());
        }
        let len = file.metadata().map_err(|e| Error::io("stat the store file", e))?.len();
        let (now, _) = validate_superblock(file, len)?;
        if now == capacity {
            break;
        }
        capacity = now;
    }
    Err(Error::corrupt("end sentinel is missing", capacity - SENTINEL_SIZE))
}

/// Validates the superblock of `file`, the store at `path` opened for writing, and maps it.
fn map_opened(path: &Path, file: File) -> Result<(File, MmapRaw, Region)> {
    let meta = file.metadata().map_err(|e| Error::io("stat the store file", e))?;
    if meta.permissions().mode() & 0o222 == 0 {
        // No write permission bit at all (0400, 0444): whoever made it so meant the store to
        // be read only, even by a process (root) that the system would let write it.
        return Err(Error::ReadOnly { path: path.to_owned() });
    }
    let len = meta.len();
    let (capacity, max) = validate_superblock(&file, len)?;
    let map = map_file(&file, max)?;
    let region = region_of(&map, capacity, max);
    Ok((file, map, region))
}

/// Attaches to a validated store and recovers what dead processes left. A recovery that finds
/// the store damaged leaves it as it was (this process's registry slot included) and is the
/// error. Then a store of version 1 is upgraded if this process is alone, and a new store's
/// creator makes its bookkeeping before anything else (so it sits low in the fresh heap).
fn finish(
    file: File,
    map: MmapRaw,
    region: Region,
    path: &Path,
    temporary: bool,
    created: bool,
) -> Result<MappedManager> {
    let (mut heap, reclaimed, slot_bytes) = attach(file, map, region, path, temporary)?;
    let (recovery, salvage) = match recover_on_open(&heap, reclaimed, crate::sys::boot_id()) {
        Ok(r) => r,
        Err(e) => {
            heap.abandon(&slot_bytes);
            return Err(e);
        }
    };
    heap.upgrade_if_alone()?;
    let salvaged = salvage.is_some();
    let m = MappedManager::from_parts(heap, path.to_owned(), created, recovery, salvage)?;
    if salvaged {
        // The repairs made durable: a second power loss finds the store as salvaged.
        m.flush()?;
    }
    if created {
        // The creator's bookkeeping goes below every block (`prepare_caches`). A process that
        // opens an existing store makes its table when it first needs it: opening stays a
        // scan of the registry, with nothing allocated or zeroed.
        m.heap.prepare_caches();
    }
    Ok(m)
}

/// The recovery an open runs right after attaching. A store that records another boot than
/// `boot` may have been open when the machine went down, its unflushed pages lost or torn: the
/// first process of this boot to hold the lock runs the strict recovery, and salvage if that
/// refuses the store (`Heap::open_in_new_boot`). Otherwise the strict recovery runs if a process
/// died. A store that records no boot (one from before the field) is given this one, made
/// durable at once: a power loss before its first flush must find a boot recorded.
fn recover_on_open(
    heap: &Heap,
    reclaimed: bool,
    boot: u64,
) -> Result<(Option<crate::RecoveryReport>, Option<crate::SalvageReport>)> {
    let recorded = heap.region.load(SB_BOOT_ID)?;
    if boot != 0 && recorded != 0 && recorded != boot {
        if let Some((recovery, salvage)) = heap.open_in_new_boot(boot, reclaimed)? {
            return Ok((Some(recovery), salvage));
        }
    }
    let recovery = heap.recover_at_open(reclaimed)?;
    if boot != 0 && recorded == 0 {
        let word = heap.region.u64_at(SB_BOOT_ID)?;
        let ordering = (crate::sync::Ordering::AcqRel, crate::sync::Ordering::Acquire);
        if word.compare_exchange(0, boot, ordering.0, ordering.1).is_ok() {
            heap.persist(SB_BOOT_ID, 8)?;
        }
    }
    Ok((recovery, None))
}

/// Claims a registry slot and wraps the mapping of the store at `path` in a heap (`temporary`:
/// the file goes with it). Returns the heap, whether the slot was taken from a dead process,
/// and the slot's bytes from before this process claimed it.
fn attach(
    file: File,
    map: MmapRaw,
    region: Region,
    path: &Path,
    temporary: bool,
) -> Result<(Heap, bool, Vec<u8>)> {
    // Read from the file, not through the mapping: a copy taken through it faulted the
    // registry's page in before the claim did.
    let mut registry = vec![0; (SLOT_COUNT * SLOT_SIZE) as usize];
    file.read_exact_at(&mut registry, REGISTRY_OFFSET).map_err(|e| Error::io("read the store file", e))?;
    let (slot, reclaimed) = registry::attach(&file, &region)?;
    let at = (u64::from(slot) * SLOT_SIZE) as usize;
    let slot_bytes = registry[at..at + SLOT_SIZE as usize].to_vec();
    let remove_on_drop = temporary.then(|| path.to_owned());
    let directory = path.parent().map(|d| if d.as_os_str().is_empty() { Path::new(".") } else { d });
    let directory = std::sync::Mutex::new(directory.map(Path::to_path_buf));
    let backing = FileBacking { file, map, slot, remove_on_drop, directory };
    let heap = Heap::new(region, Box::new(backing), slot + 1, crate::engine::kinds::recover_locked)?;
    Ok((heap, reclaimed, slot_bytes))
}

/// Opens the store at `path` for a repair (`MappedManager::recover_file`, `salvage`): attaches
/// without recovering, runs `repair` on the heap, and detaches. If `repair` fails, the store is
/// left as it was found (the registry slot given back, the lock as it was), byte for byte. The
/// end sentinel is not required: salvage rewrites it.
pub(super) fn repair<T>(
    path: &Path,
    options: &Options,
    repair: impl FnOnce(&Heap, bool) -> Result<T>,
) -> Result<T> {
    let (file, _) = open_in_this_boot(path, options)?;
    let (file, map, region) = map_opened(path, file)?;
    let (mut heap, reclaimed, slot_bytes) = attach(file, map, region, path, false)?;
    let done = repair(&heap, reclaimed);
    if done.is_err() {
        heap.abandon(&slot_bytes);
    }
    done
}

fn map_file(file: &File, max: u64) -> Result<MmapRaw> {
    // Mapping past the end of the file is allowed; only touching those pages would fault, and
    // the region's limit keeps every access below the validated file length.
    MmapOptions::new()
        .len(max as usize)
        .map_raw(file)
        .map_err(|source| Error::MapFailed { max_size: max, source })
}

fn region_of(map: &MmapRaw, limit: u64, max: u64) -> Region {
    let base = NonNull::new(map.as_mut_ptr()).expect("mmap never returns null");
    // SAFETY: the mapping is `max` bytes, page-aligned and lives in the FileBacking, which the
    // Heap drops only after the region; the file is at least `limit` bytes long (checked by
    // the callers), so those bytes are backed.
    unsafe { Region::new(base, limit, max) }
}

/// Reads the superblock with plain file reads and checks everything the mapping depends on.
/// Returns (capacity, max_size).
pub(crate) fn validate_superblock(file: &File, len: u64) -> Result<(u64, u64)> {
    let mut sb = [0u8; SUPERBLOCK_SIZE as usize];
    let got = read_prefix(file, &mut sb)?;
    if sb[..got.min(MAGIC.len())] != MAGIC[..got.min(MAGIC.len())] {
        return Err(Error::NotAStore);
    }
    let u32_at = |o: u64| u32::from_le_bytes(sb[o as usize..o as usize + 4].try_into().unwrap_or_default());
    let u64_at = |o: u64| u64::from_le_bytes(sb[o as usize..o as usize + 8].try_into().unwrap_or_default());
    if got < sb.len() {
        // Empty, or cut inside the superblock: what its header says it should be, if it says.
        let said = if got as u64 >= SB_CAPACITY + 8 { u64_at(SB_CAPACITY) } else { 0 };
        let expected = if (MIN_STORE_SIZE..=MAX_STORE_SIZE).contains(&said) { said } else { MIN_STORE_SIZE };
        return Err(Error::Truncated { expected, actual: len });
    }
    let version = u32_at(SB_VERSION);
    if !(OLDEST_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(Error::UnsupportedVersion { found: version, supported: FORMAT_VERSION });
    }
    if u64_at(SB_FINGERPRINT) != fingerprint_of(version) {
        return Err(Error::LayoutMismatch {
            found: u64_at(SB_FINGERPRINT),
            expected: fingerprint_of(version),
        });
    }
    let (capacity, max) = (u64_at(SB_CAPACITY), u64_at(SB_MAX_SIZE));
    if !(MIN_STORE_SIZE..=MAX_STORE_SIZE).contains(&max) || max % PAGE_SIZE != 0 {
        return Err(Error::corrupt("maximum size out of range", SB_MAX_SIZE));
    }
    if capacity < MIN_STORE_SIZE || capacity > max || capacity % PAGE_SIZE != 0 {
        return Err(Error::corrupt("capacity out of range", SB_CAPACITY));
    }
    // A store grows its file before it publishes the larger capacity: a capacity beyond the
    // length the caller took may have grown since; the file's length now is what counts.
    let len = match capacity > len {
        true => file.metadata().map_err(|e| Error::io("stat the store file", e))?.len(),
        false => len,
    };
    if capacity > len {
        return Err(Error::Truncated { expected: capacity, actual: len });
    }
    Ok((capacity, max))
}

fn read_prefix(file: &File, buf: &mut [u8]) -> Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read the superblock", e)),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A length taken before another process grew the store (file extended, then the larger
    /// capacity published) is not a truncated file: the length is taken again.
    #[test]
    fn a_capacity_beyond_a_length_taken_before_a_growth_is_no_truncation() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("make a directory", e))?;
        let path = dir.path().join("s.mmheap");
        drop(MappedManager::create(&path, &Options::new().initial_size(1 << 20).max_size(16 << 20))?);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open", e))?;
        let (capacity, _) = validate_superblock(&file, 1 << 20)?;
        assert_eq!(capacity, 1 << 20);
        assert_eq!(validate_superblock(&file, 64 << 10)?.0, capacity);
        // Nothing maps the file now: it can be cut short.
        file.set_len(512 << 10).map_err(|e| Error::io("truncate", e))?;
        assert!(matches!(validate_superblock(&file, 64 << 10), Err(Error::Truncated { .. })));
        Ok(())
    }
}
