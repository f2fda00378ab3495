//! Recovery never turns a damaged store into a "sound" one that has lost data: on damage it
//! refuses and leaves the file byte for byte as it was; salvage, when asked, fences the damage
//! off and keeps every rooted block whose own header was not hit, at its offset, with its
//! bytes; afterwards `check` is sound and filling the heap never hands out a surviving root's
//! memory.
//!
//! `MMHEAP_FLIPS` sets the number of random flips (2,000 by default) and `MMHEAP_SEED` their
//! seed.

mod common;

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use common::*;
use libtest_mimic::{Failed, Trial};
use mmheap::format::*;
use mmheap::inspect::{BlockKind, Snapshot};
use mmheap::{Error, MappedManager, MemoryBlock, MemoryManager, Options};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn main() {
    child_or_tests(child, || {
        vec![
            Trial::test("a_flipped_size_is_refused_unchanged_then_salvaged", flipped_size),
            Trial::test("random_flips_are_refused_unchanged_or_repaired_and_never_lose_a_root", random_flips),
            Trial::test("corrupt_fixtures_are_refused_unchanged_or_recovered_soundly", fixtures),
            Trial::test("salvage_needs_the_store_to_itself", salvage_needs_the_store),
        ]
    });
}

/// A child that opens the store, takes holds on the roots named in `MMHEAP_ROOTS`, allocates
/// blocks of its own (some parked, some lent, some published), and waits to be killed.
fn child(role: &str, store: &Path) -> Res {
    match role {
        "leaver" => {
            let m = MappedManager::open(store)?;
            let mut held = Vec::new();
            for name in std::env::var("MMHEAP_ROOTS").unwrap_or_default().split(',').filter(|n| !n.is_empty())
            {
                let h = m.root(name)?.ok_or("root")?.handle();
                held.push(m.block_from_handle(h)?);
            }
            let mut mine: Vec<MemoryBlock> = Vec::new();
            for i in 0..60u64 {
                let mut b = m.allocate([24, 100, 700, 3000][i as usize % 4])?;
                stamp(&mut b, 90_000 + i, 0)?;
                if i % 3 == 0 {
                    let _ = b.handle(); // published
                }
                mine.push(b);
            }
            mine.truncate(30); // the rest parked in the thread's cache
            println!("ready");
            std::io::Write::flush(&mut std::io::stdout())?;
            thread::sleep(Duration::from_secs(600));
            Ok(())
        }
        _ => Err(format!("unknown role {role}").into()),
    }
}

/// A root of the pristine store: what it must still read back, and the bytes that are its own
/// (its directory entry, its header; for a slot, its span's header, its reference word and its
/// page record): a flip there may lose it.
struct Root {
    name: String,
    bytes: Vec<u8>,
    own: Vec<Range<u64>>,
}

/// A populated store left by a killed process, with what it holds.
struct Pristine {
    _dir: tempfile::TempDir,
    path: PathBuf,
    bytes: Vec<u8>,
    roots: Vec<Root>,
    /// Ranges of the file where the flips land.
    targets: Vec<Range<u64>>,
}

const CAPACITY: u64 = 512 << 10;

fn root_bytes(i: u64, len: usize) -> Vec<u8> {
    (0..len).map(|j| stamp_byte(i, j)).collect()
}

/// Roots of many sizes (slots and blocks) with freed holes between them, a channel with queued
/// messages, and a process killed while it held roots and blocks of its own.
fn populate() -> Result<Pristine, Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("store.mmheap");
    let m = MappedManager::create(&path, &Options::new().initial_size(CAPACITY).max_size(CAPACITY))?;
    let mut rng = SmallRng::seed_from_u64(11);
    let mut spacers = Vec::new();
    let mut names = Vec::new();
    for i in 0..24u64 {
        spacers.push(m.allocate(rng.gen_range(1..4000))?);
        let len = match i % 4 {
            0 => rng.gen_range(0..=64),
            1 => rng.gen_range(65..600),
            2 => rng.gen_range(600..9000),
            _ => rng.gen_range(1..120),
        };
        let mut b = m.allocate(len)?;
        b.as_mut_slice()?.copy_from_slice(&root_bytes(i, len));
        let name = format!("root-{i}");
        m.set_root(&name, &b)?;
        names.push(name);
    }
    let ch = m.channel("queue", 8)?;
    let tx = ch.sender()?;
    for i in 0..3 {
        let mut b = m.allocate(40 + i * 300)?;
        stamp(&mut b, 500 + i as u64, 0)?;
        tx.send(b)?;
    }
    drop((tx, spacers));
    let held: Vec<String> = names.iter().step_by(3).cloned().collect();
    let mut kid = spawn("leaver", &path, &[("MMHEAP_ROOTS", held.join(","))]);
    let line = lines_of(&mut kid)?.recv_timeout(Duration::from_secs(30))?;
    ensure(line == "ready", format!("child said {line:?}"))?;
    kill(kid)?;
    let mut roots = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let b = m.root(name)?.ok_or("root")?;
        ensure(b.as_slice() == root_bytes(i as u64, b.len()), "root bytes")?;
        roots.push(Root { name: name.clone(), bytes: b.as_slice().to_vec(), own: Vec::new() });
    }
    drop(m);
    let snap = Snapshot::take(&path)?;
    let (blocks, err) = snap.blocks(|_| {});
    ensure(err.is_none(), "the pristine store walks")?;
    let listed = snap.roots()?;
    roots.sort_by(|a, b| a.name.cmp(&b.name));
    let bytes = std::fs::read(&path)?;
    for (r, info) in roots.iter_mut().zip(&listed) {
        ensure(r.name == info.name, "roots listed sorted by name")?;
        r.own.extend(root_entry(&bytes, &r.name).ok_or("no table entry")?);
        r.own.extend(own_bytes(&blocks, info.offset));
    }
    let targets = flip_targets(&blocks, &bytes);
    Ok(Pristine { _dir: dir, path, bytes, roots, targets })
}

/// The bytes of the roots table that root `name` needs: its entry (found by the table's probe,
/// `docs/format.md`), the table block's header and its count of entries (a root is found
/// through them).
fn root_entry(bytes: &[u8], name: &str) -> Option<[Range<u64>; 3]> {
    let word = |at: u64| u64::from_le_bytes(bytes[at as usize..at as usize + 8].try_into().unwrap());
    let table = word(SB_ROOT_TABLE);
    let capacity = word(payload_of(table) + ROOT_TABLE_CAPACITY);
    let hash =
        name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    (0..capacity).map(|k| (hash + k) & (capacity - 1)).find_map(|i| {
        let e = payload_of(table) + ROOT_TABLE_ENTRIES + i * ROOT_SIZE;
        let len = word(e + ROOT_NAME_LEN) as u32 as usize;
        let at = (e + ROOT_NAME) as usize;
        (word(e + ROOT_BLOCK) != 0 && bytes[at..at + len] == *name.as_bytes())
            .then(|| [e..e + ROOT_SIZE, table..table + HEADER_SIZE, payload_of(table)..payload_of(table) + 8])
    })
}

/// The bytes that describe the block or slot `id` (what salvage needs to check out).
fn own_bytes(blocks: &[mmheap::inspect::BlockInfo], id: u64) -> Vec<Range<u64>> {
    if id % GRANULE == 0 {
        return std::iter::once(id..id + HEADER_SIZE).collect();
    }
    let p = id & !(SPAN_SIZE - 1);
    let class = (id % GRANULE - SLOT_MARK + 1) * GRANULE;
    let start = (SPAN_RC + 8 * span_slots(class)).next_multiple_of(GRANULE);
    let index = (payload_of(id) - p - start) / class;
    let mut own = vec![p - HEADER_SIZE..p + SPAN_RC, p + SPAN_RC + 8 * index..p + SPAN_RC + 8 * index + 8];
    // The span's page: a page block whose first word names the span.
    for b in blocks.iter().filter(|b| b.kind == BlockKind::Page) {
        own.push(b.offset..b.offset + HEADER_SIZE + 8);
        let e = b.offset + HEADER_SIZE + PAGE_ENTRIES + 8 * index;
        own.push(e..e + 8);
    }
    own
}

/// Slots in a span of `class`-byte slots (docs/format.md).
fn span_slots(class: u64) -> u64 {
    let room = SPAN_SIZE - HEADER_SIZE;
    let mut n = (room - SPAN_RC) / (class + 8);
    while (SPAN_RC + n * 8).next_multiple_of(GRANULE) + n * class > room {
        n -= 1;
    }
    n
}

/// Where flips land: block headers, free blocks' links and footers, spans' headers and
/// reference words, pages, the channel's ring, the dead process's hold and counter tables, the
/// directories, the registry, the TLSF index and the superblock's counters. (Never the
/// payload of a block users hold: that is data, which no check can tell from other data.)
fn flip_targets(blocks: &[mmheap::inspect::BlockInfo], bytes: &[u8]) -> Vec<Range<u64>> {
    let word = |at: u64| u64::from_le_bytes(bytes[at as usize..at as usize + 8].try_into().unwrap());
    let mut t = vec![
        SB_NEXT_GEN..SB_NEXT_GEN + 8,
        SB_USED_BYTES..SB_SPAN_BYTES + 8,
        TLSF_OFFSET..TLSF_END,
        CHANNELS_OFFSET..CHANNELS_OFFSET + CHANNEL_SIZE,
        REGISTRY_OFFSET..REGISTRY_OFFSET + 4 * SLOT_SIZE,
        ROOTS_OFFSET..ROOTS_OFFSET + 24 * ROOT_SIZE,
        SB_ROOT_TABLE..SB_ROOT_TABLE + 8,
    ];
    // The roots table: its header, counts and entries.
    let table = word(SB_ROOT_TABLE);
    let capacity = word(payload_of(table) + ROOT_TABLE_CAPACITY);
    t.push(table..payload_of(table) + ROOT_TABLE_ENTRIES + capacity * ROOT_SIZE);
    // The ring block's payload, and the dead process's tables (metadata in blocks).
    let mut meta = vec![word(CHANNELS_OFFSET + CHANNEL_RING)];
    for i in 0..SLOT_COUNT {
        meta.push(word(slot_offset(i) + SLOT_HOLDS));
        meta.push(word(slot_offset(i) + SLOT_CACHES));
    }
    for b in blocks {
        match b.kind {
            BlockKind::Span => {
                t.push(b.offset..b.offset + HEADER_SIZE + SPAN_RC);
                t.push(b.offset + HEADER_SIZE + SPAN_RC..b.offset + HEADER_SIZE + SPAN_RC + 8 * 64);
            }
            BlockKind::Page => t.push(b.offset..b.offset + HEADER_SIZE + PAGE_ENTRIES + 8 * 64),
            BlockKind::Block if b.free => {
                t.push(b.offset..b.offset + HEADER_SIZE + 16);
                t.push(b.offset + b.size - 8..b.offset + b.size);
            }
            BlockKind::Block if b.offset != 0 && meta.contains(&b.offset) => {
                t.push(b.offset..b.offset + HEADER_SIZE + b.len.min(512))
            }
            BlockKind::Block => t.push(b.offset..b.offset + HEADER_SIZE),
            _ => {}
        }
    }
    t.retain(|r| r.end > r.start);
    t
}

/// One flip: a bit, or a whole word replaced.
#[derive(Debug, Clone, Copy)]
enum Flip {
    Bit(u64, u8),
    Word(u64, u64),
}

impl Flip {
    fn apply(self, bytes: &mut [u8]) {
        match self {
            Flip::Bit(at, bit) => bytes[at as usize] ^= 1 << bit,
            Flip::Word(at, v) => bytes[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes()),
        }
    }

    fn range(self) -> Range<u64> {
        match self {
            Flip::Bit(at, _) => at..at + 1,
            Flip::Word(at, _) => at..at + 8,
        }
    }
}

fn random_flip(rng: &mut SmallRng, targets: &[Range<u64>]) -> Flip {
    let r = &targets[rng.gen_range(0..targets.len())];
    let at = rng.gen_range(r.clone());
    if rng.gen_bool(0.6) {
        Flip::Bit(at, rng.gen_range(0..8))
    } else {
        let v = match rng.gen_range(0..4) {
            0 => 0,
            1 => rng.gen(),
            2 => rng.gen_range(0..CAPACITY),
            _ => u64::MAX,
        };
        Flip::Word(at & !7, v)
    }
}

/// What happened to one damaged copy.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
enum Outcome {
    Recovered,
    RefusedThenSalvaged,
}

/// Recovers the damaged store at `path` (salvaging it if recovery refuses, which must leave it
/// byte for byte as it was), then requires: it opens, `check` is sound, every root not in
/// `lost` reads back its bytes, and a fill of the heap never overlaps a surviving root.
fn recover_and_verify(path: &Path, roots: &[Root], lost: &BTreeSet<String>) -> Result<Outcome, Failed> {
    let damaged = std::fs::read(path)?;
    let outcome = match MappedManager::recover_file(path) {
        Ok(_) => Outcome::Recovered,
        Err(e) => {
            ensure(std::fs::read(path)? == damaged, format!("a refused recovery ({e}) changed the file"))?;
            MappedManager::salvage(path)
                .map_err(|s| format!("recovery refused ({e}), salvage failed: {s}"))?;
            Outcome::RefusedThenSalvaged
        }
    };
    let m = MappedManager::open(path)?;
    let report = m.check()?;
    ensure(report.is_sound(), format!("{outcome:?}, then check: {:?}", report.problems))?;
    let mut survivors = Vec::new();
    for r in roots.iter().filter(|r| !lost.contains(&r.name)) {
        let b = m.root(&r.name)?.ok_or_else(|| format!("{outcome:?}: root {} is gone", r.name))?;
        ensure(b.as_slice() == r.bytes, format!("{outcome:?}: root {} changed", r.name))?;
        survivors.push(b);
    }
    let spans: Vec<Range<u64>> =
        survivors.iter().map(|b| b.offset().get()..b.offset().get() + b.len() as u64).collect();
    let mut rng = SmallRng::seed_from_u64(damaged.len() as u64);
    let mut fill = Vec::new();
    loop {
        let len = if rng.gen_bool(0.5) { rng.gen_range(0..=64) } else { rng.gen_range(65..6000) };
        let mut b = match m.allocate(len) {
            Ok(b) => b,
            Err(Error::OutOfSpace { .. }) => break,
            Err(e) => return Err(format!("{outcome:?}: filling: {e}").into()),
        };
        let at = b.offset().get()..b.offset().get() + len as u64;
        if let Some(s) = spans.iter().find(|s| s.start < at.end.max(at.start + 1) && at.start < s.end) {
            return Err(format!("{outcome:?}: a new block {at:x?} overlaps a root's {s:x?}").into());
        }
        b.as_mut_slice()?.fill(0xee);
        fill.push(b);
    }
    for (b, r) in survivors.iter().zip(roots.iter().filter(|r| !lost.contains(&r.name))) {
        ensure(b.as_slice() == r.bytes, format!("{outcome:?}: root {} overwritten by the fill", r.name))?;
    }
    drop(fill);
    ensure(m.check()?.is_sound(), "sound after the fill")?;
    drop((survivors, m));
    // What check finds sound, recovery accepts.
    MappedManager::recover_file(path).map_err(|e| format!("{outcome:?}: then recovery refuses: {e}"))?;
    Ok(outcome)
}

/// The case: two roots, one bit flipped in the size of the first one's header.
fn flipped_size() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("s.mmheap");
    let (first, second) = {
        let m = MappedManager::create(&path, &Options::new().initial_size(1 << 20).max_size(1 << 20))?;
        let mut a = m.allocate(5000)?;
        a.as_mut_slice()?.fill(1);
        let mut b = m.allocate(8000)?;
        b.as_mut_slice()?.fill(2);
        m.set_root("first", &a)?;
        m.set_root("second", &b)?;
        (a.offset().get() - HEADER_SIZE, b.offset().get())
    };
    let mut bytes = std::fs::read(&path)?;
    bytes[first as usize + 1] ^= 0x80; // bit 15 of the tag: the size
    std::fs::write(&path, &bytes)?;
    let err = MappedManager::recover_file(&path).expect_err("a damaged header is refused");
    ensure(matches!(err, Error::Corrupt { .. }), format!("typed: {err}"))?;
    ensure(std::fs::read(&path)? == bytes, "the refused store is byte for byte as it was")?;
    // The CLI says the same, and exits 2.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mmheap")).arg("recover").arg(&path).output()?;
    ensure(out.status.code() == Some(2), format!("mmheap recover: {:?}", out.status))?;
    ensure(std::fs::read(&path)? == bytes, "mmheap recover left the store as it was")?;
    let report = MappedManager::salvage(&path)?;
    println!("salvage: {report:?}");
    ensure(report.found_damage() && !report.quarantined.is_empty(), "the damage is quarantined")?;
    ensure(
        report.quarantined.iter().all(|&(o, s)| o + s <= second - HEADER_SIZE || o >= second),
        "not the second",
    )?;
    let m = MappedManager::open(&path)?;
    ensure(m.check()?.is_sound(), "sound after salvage")?;
    let b = m.root("second")?.ok_or("the second root survives")?;
    ensure(b.offset().get() == second && b.as_slice() == [2u8; 8000], "at its offset, with its bytes")?;
    ensure(m.stats()?.quarantined_bytes > 0, "stats count the quarantine")?;
    let big = m.allocate(8000)?;
    let at = big.offset().get();
    ensure(at + 8000 <= second || at >= second + 8000, "a new block does not overlap the second root")?;
    Ok(())
}

fn random_flips() -> Result<(), Failed> {
    let p = populate()?;
    let flips = env_u64("MMHEAP_FLIPS", 2000);
    let mut rng = SmallRng::seed_from_u64(env_u64("MMHEAP_SEED", 17));
    let mut outcomes = std::collections::BTreeMap::new();
    let mut kept = 0usize;
    for k in 0..flips {
        let flip = random_flip(&mut rng, &p.targets);
        let mut bytes = p.bytes.clone();
        flip.apply(&mut bytes);
        std::fs::write(&p.path, &bytes)?;
        let hit = flip.range();
        let lost: BTreeSet<String> = p
            .roots
            .iter()
            .filter(|r| r.own.iter().any(|o| o.start < hit.end && hit.start < o.end))
            .map(|r| r.name.clone())
            .collect();
        let outcome = recover_and_verify(&p.path, &p.roots, &lost).map_err(|e| {
            if std::env::var_os("MMHEAP_DEBUG").is_some() {
                std::fs::write("/tmp/flip-damaged.mmheap", &bytes).unwrap();
                std::fs::write("/tmp/flip-pristine.mmheap", &p.bytes).unwrap();
            }
            format!("flip {k} {flip:x?}: {e:?}")
        })?;
        *outcomes.entry(outcome).or_insert(0u64) += 1;
        kept += p.roots.len() - lost.len();
    }
    println!(
        "{flips} flips: {outcomes:?}; {kept} rooted blocks whose own bytes were not hit all read back intact"
    );
    Ok(())
}

fn fixtures() -> Result<(), Failed> {
    let mut outcomes = std::collections::BTreeMap::new();
    for (golden, recipe) in
        [("golden-v1.mmheap", "corrupt.recipe"), ("golden-v2.mmheap", "corrupt-v2.recipe")]
    {
        for (name, edits) in recipes(recipe) {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("s.mmheap");
            copy_store(fixture(golden), &path)?;
            apply(&path, &edits);
            let before = std::fs::read(&path)?;
            let outcome = match MappedManager::recover_file(&path) {
                Ok(_) => "recovered",
                Err(e) => {
                    ensure(
                        std::fs::read(&path)? == before,
                        format!("{name}: refusal ({e}) changed the file"),
                    )?;
                    match MappedManager::salvage(&path) {
                        Ok(_) => "salvaged",
                        // What cannot even be opened (a bad superblock, a truncated file) is
                        // refused by salvage too, untouched.
                        Err(s) => {
                            ensure(
                                std::fs::read(&path)? == before,
                                format!("{name}: salvage ({s}) changed it"),
                            )?;
                            "unopenable"
                        }
                    }
                }
            };
            if outcome != "unopenable" {
                let m =
                    MappedManager::open(&path).map_err(|e| format!("{name}: {outcome}, then open: {e}"))?;
                let r = m.check()?;
                ensure(r.is_sound(), format!("{name}: {outcome}, then {:?}", r.problems))?;
            }
            *outcomes.entry(outcome).or_insert(0) += 1;
        }
    }
    println!("corrupt fixtures: {outcomes:?}");
    Ok(())
}

fn salvage_needs_the_store() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("s.mmheap");
    let m = MappedManager::create(&path, &Options::new())?;
    let before = std::fs::read(&path)?;
    let err = MappedManager::salvage(&path).expect_err("another process (this one) is attached");
    ensure(matches!(err, Error::StoreInUse { processes: 1 }), format!("{err}"))?;
    ensure(std::fs::read(&path)? == before, "refused untouched")?;
    drop(m);
    let report = MappedManager::salvage(&path)?;
    ensure(!report.found_damage(), "nothing to salvage in a sound store")?;
    Ok(())
}
