//! The golden stores in `fixtures/` (one per format version) must open in every later version,
//! and every corrupted variant of them (recipes in `fixtures/corrupt*.recipe`) must give a
//! typed error or a valid open, never a panic, a crash, a hang or an out-of-bounds access.
//!
//! `MMHEAP_WRITE_FIXTURES=1 cargo test --test bad_files` rewrites the golden store of the
//! current version (only when the format version changes: old goldens stay, new ones are added
//! beside them).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;

use common::{apply, copy_store, fixture, recipes, Edit};
use mmheap::format::{
    FORMAT_VERSION, HEADER_SIZE, ROOT_TABLE_EMPTIED, ROOT_TABLE_USED, SB_ROOT_TABLE, SB_SPAN_LISTS,
    SB_VERSION, SLOT_MARK, SPAN_SIZE, SPAN_USED,
};
use mmheap::{Error, MappedManager, MemoryManager, Options};

/// The first format's golden store: no spans (its small roots have headers).
const GOLDEN: &str = "golden-v1.mmheap";
/// The current format's: its small roots ("alpha", "empty") are slots of spans.
const GOLDEN_V2: &str = "golden-v2.mmheap";

fn golden_roots() -> Vec<(String, Vec<u8>)> {
    vec![
        ("alpha".into(), b"the first root".to_vec()),
        ("beta".into(), (0..300u32).map(|i| (i * 7) as u8).collect()),
        ("empty".into(), Vec::new()),
    ]
}

fn write_golden(path: &Path) -> mmheap::Result<()> {
    let m = MappedManager::create(path, &Options::new().initial_size(64 << 10).max_size(1 << 20))?;
    let spacers: Vec<_> = (0..6).map(|i| m.allocate(100 * (i + 1))).collect::<Result<_, _>>()?;
    for (name, bytes) in golden_roots() {
        let mut b = m.allocate(bytes.len())?;
        b.as_mut_slice()?.copy_from_slice(&bytes);
        m.set_root(&name, &b)?;
    }
    drop(spacers); // leaves free holes between the rooted blocks
    m.flush()
}

/// Copies a fixture into a temporary directory (opening a store writes to it).
fn scratch(from: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("store.mmheap");
    copy_store(from, &to).unwrap();
    (dir, to)
}

#[test]
fn golden_stores_open_with_their_roots() {
    let current = fixture(GOLDEN_V2);
    if std::env::var_os("MMHEAP_WRITE_FIXTURES").is_some() {
        let _ = std::fs::remove_file(&current);
        write_golden(&current).unwrap();
    }
    for (golden, version) in [(GOLDEN, 1), (GOLDEN_V2, 2)] {
        assert_eq!(read_u32(&fixture(golden), SB_VERSION), version, "{golden}");
        let (_dir, copy) = scratch(&fixture(golden));
        let m = MappedManager::open(&copy).unwrap();
        assert!(m.check().unwrap().is_sound(), "{golden}");
        let names: Vec<String> = m.roots().unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["alpha", "beta", "empty"], "{golden}");
        for (name, bytes) in golden_roots() {
            assert_eq!(m.root(&name).unwrap().unwrap().as_slice(), &bytes[..], "{golden}: {name}");
        }
        let s = m.stats().unwrap();
        assert_eq!((s.live_blocks, s.attached_processes), (3, 1), "{golden}");
        // Opened alone, a version 1 store became version 2: small blocks are slots now.
        assert_eq!(read_u32(&copy, SB_VERSION), FORMAT_VERSION, "{golden} upgraded");
        let small = m.allocate(24).unwrap();
        let h = small.handle();
        assert_eq!(h.offset % 16, SLOT_MARK + 1, "{golden}: a small block is a slot (of 32 bytes)");
        assert_eq!(m.block_from_handle(h).unwrap().len(), 24);
        let grown = m.allocate(512 << 10).unwrap();
        assert!(m.stats().unwrap().capacity > 64 << 10, "{golden} still grows");
        drop((grown, small));
        assert!(m.check().unwrap().is_sound(), "{golden}");
        drop(m);
        let again = MappedManager::open(&copy).unwrap();
        assert_eq!(again.root("alpha").unwrap().unwrap().as_slice(), b"the first root");
    }
}

fn read_u32(path: &Path, at: u64) -> u32 {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 4];
    std::fs::File::open(path).unwrap().read_exact_at(&mut b, at).unwrap();
    u32::from_le_bytes(b)
}

/// Everything a user might do with a store, each step allowed to fail with a typed error.
/// Returns whether the first check found the store sound.
fn exercise(path: &Path) -> Result<bool, Error> {
    let m = MappedManager::open(path)?;
    let report = m.check();
    let _ = m.stats();
    let _ = m.roots();
    if let Ok(Some(b)) = m.root("alpha") {
        let _ = b.as_slice().iter().map(|x| *x as u64).sum::<u64>();
    }
    let mut blocks = Vec::new();
    for len in [0, 10, 1000, 100_000] {
        if let Ok(b) = m.allocate(len) {
            blocks.push(b);
        }
    }
    if let Some(b) = blocks.last_mut() {
        let _ = m.resize(b, 20);
    }
    drop(blocks);
    let _ = m.remove_root("beta");
    report.map(|r| r.is_sound())
}

#[test]
fn corrupt_variants_give_typed_errors_or_valid_opens() {
    for (golden, file, at_least) in [(GOLDEN, "corrupt.recipe", 50), (GOLDEN_V2, "corrupt-v2.recipe", 20)] {
        let recipes = recipes(file);
        assert!(recipes.len() >= at_least, "{file}: at least {at_least} variants, have {}", recipes.len());
        let (mut sound, mut flagged, mut refused) = (0, 0, 0);
        for (name, edits) in &recipes {
            let (_dir, path) = scratch(&fixture(golden));
            apply(&path, edits);
            let start = Instant::now();
            let outcome = exercise(&path);
            println!("{file} {name}: {outcome:?}");
            match outcome {
                Ok(true) => sound += 1,
                Ok(false) => flagged += 1,
                Err(e) => {
                    refused += 1;
                    // Every refusal is one of the typed variants, with a readable message.
                    assert!(!e.to_string().is_empty(), "{name}");
                }
            }
            assert!(start.elapsed() < Duration::from_secs(10), "{name} took too long");
        }
        println!(
            "{file}: {sound} opened sound (or repaired), {flagged} opened with problems reported, {refused} refused"
        );
        assert!(refused > 0 && flagged > 0 && sound > 0, "{file}");
    }
}

/// A file cut inside its superblock is truncated, not a foreign file: empty or a part of the
/// magic ("truncated or empty", no header to quote), or cut after the capacity, which the error
/// quotes.
#[test]
fn a_file_cut_inside_its_superblock_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    drop(MappedManager::create(&whole, &Options::new().initial_size(1 << 20)).unwrap());
    let bytes = std::fs::read(&whole).unwrap();
    let cut = dir.path().join("cut");
    for len in [0, 5, 8, 47] {
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let e = MappedManager::open(&cut).unwrap_err();
        assert!(matches!(e, Error::Truncated { actual, .. } if actual == len as u64), "{len}: {e:?}");
        assert!(e.to_string().contains("truncated or empty"), "{len}: {e}");
    }
    for len in [48, 200, 511] {
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let e = MappedManager::open(&cut).unwrap_err();
        assert!(matches!(e, Error::Truncated { expected: 1_048_576, .. }), "{len}: {e:?}");
        assert!(e.to_string().contains("header says 1048576 bytes"), "{len}: {e}");
    }
    std::fs::write(&cut, b"mmhea?").unwrap();
    assert!(matches!(MappedManager::open(&cut), Err(Error::NotAStore)));
}

#[test]
fn open_refuses_what_is_not_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    assert!(matches!(MappedManager::open(&missing), Err(Error::NotFound(_))));
    let junk = dir.path().join("junk");
    std::fs::write(&junk, b"definitely not a store").unwrap();
    assert!(matches!(MappedManager::open(&junk), Err(Error::NotAStore)));
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(MappedManager::open(&empty), Err(Error::Truncated { actual: 0, .. })));
    let (_d, v) = scratch(&fixture(GOLDEN));
    apply(&v, &[Edit::Set32(8, 99)]);
    assert!(matches!(MappedManager::open(&v), Err(Error::UnsupportedVersion { found: 99, .. })));
    let (_d, f) = scratch(&fixture(GOLDEN));
    apply(&f, &[Edit::Flip(16, 0)]);
    assert!(matches!(MappedManager::open(&f), Err(Error::LayoutMismatch { .. })));
    let (_d, t) = scratch(&fixture(GOLDEN));
    apply(&t, &[Edit::Truncate(40_000)]);
    assert!(matches!(MappedManager::open(&t), Err(Error::Truncated { .. })));
}

#[test]
fn create_refuses_an_existing_path_and_sets_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.mmheap");
    let m = MappedManager::create(&path, &Options::new()).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(matches!(MappedManager::create(&path, &Options::new()), Err(Error::AlreadyExists(_))));
    drop(m);
    let other = dir.path().join("o.mmheap");
    drop(MappedManager::create(&other, &Options::new().mode(0o640)).unwrap());
    assert_eq!(std::fs::metadata(&other).unwrap().permissions().mode() & 0o777, 0o640);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().filter_map(|e| e.ok()).collect();
    assert_eq!(leftovers.len(), 2, "no temporary files left behind");
}

fn read_u64(path: &Path, at: u64) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    u64::from_le_bytes(bytes[at as usize..at as usize + 8].try_into().unwrap())
}

/// A roots table's counts of used and emptied entries are read from the store: counts too
/// large to add up (a flip, a hostile file) make the table full, so the next new root grows it
/// (which counts its entries again), never an overflow.
#[test]
fn a_roots_table_with_counts_too_large_to_add_grows() {
    for (used, emptied) in [(u64::MAX, 0), (u64::MAX / 2, u64::MAX / 2), (1 << 62, 0)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.mmheap");
        {
            let m = MappedManager::create(&path, &Options::new()).unwrap();
            let b = m.allocate(10).unwrap();
            m.set_root("first", &b).unwrap();
        }
        let table = read_u64(&path, SB_ROOT_TABLE);
        assert_ne!(table, 0, "the first root made a table");
        apply(
            &path,
            &[
                Edit::Set64(table + HEADER_SIZE + ROOT_TABLE_USED, used),
                Edit::Set64(table + HEADER_SIZE + ROOT_TABLE_EMPTIED, emptied),
            ],
        );
        let m = MappedManager::open(&path).unwrap();
        let b = m.allocate(20).unwrap();
        m.set_root("second", &b).unwrap();
        assert_ne!(read_u64(&path, SB_ROOT_TABLE), table, "{used:#x} {emptied:#x}: the table grew");
        assert_eq!(m.root("first").unwrap().map(|b| b.len()), Some(10));
        assert_eq!(m.root("second").unwrap().map(|b| b.len()), Some(20));
        drop(b);
        assert!(m.check().unwrap().is_sound(), "{used:#x} {emptied:#x}");
    }
}

/// The head of a list of spans is read from the store: a slot freed from a full span links the
/// span at the head of its list, and a head past the end is refused there (the store is
/// damaged), never an overflow forming the offset of its back link.
#[test]
fn a_span_list_head_past_the_end_is_refused_when_a_full_span_is_linked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.mmheap");
    let id = {
        let m = MappedManager::create(&path, &Options::new()).unwrap();
        let b = m.allocate(10).unwrap();
        m.set_root("slot", &b).unwrap();
        b.handle().offset
    };
    assert_eq!(id & 15, SLOT_MARK, "a 10-byte block is a slot");
    // The span is full (2726 16-byte slots), so freeing one links it; the 16-byte list's head
    // is hit.
    let span = id & !(SPAN_SIZE - 1);
    apply(&path, &[Edit::Set64(span + SPAN_USED, 2726), Edit::Set64(SB_SPAN_LISTS, 0xffff_ffff_ffff_fff0)]);
    {
        let m = MappedManager::open(&path).unwrap();
        let b = m.root("slot").unwrap().expect("the root is there");
        let _ = m.remove_root("slot");
        drop(b);
        assert!(!m.check().unwrap().is_sound(), "the damage is reported");
    }
    let _ = MappedManager::salvage(&path);
}
