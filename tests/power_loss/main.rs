//! Simulated power loss (ARCHITECTURE.md, "Durability and power loss").
//!
//! A store is a `MAP_SHARED` file mapping, so the kernel may write back any dirty page, in any
//! order, at any time; a sector (512 bytes) is the unit a disk writes atomically. After power
//! loss the file therefore holds what the last completed `flush` made durable (`D_k`) plus ANY
//! subset of the 512-byte sectors that changed since (towards the current contents `C_p`).
//! Dropped, torn and reordered writes are all such subsets.
//!
//! A deterministic workload (allocate 16 B .. 64 KiB, write known bytes, resize, set, replace
//! and remove named roots, hold and drop blocks, flush every few operations; more names than
//! the fixed directory holds, so the roots table grows) keeps a model of its roots. At each
//! *point* (some operations after a flush) it builds images from `D_k` and `C_p` (no sector,
//! every sector, random fractions of the changed sectors, whole pages only, all but one, just
//! one, with the file length of either), and requires of every image, opened as after a reboot
//! (`MMHEAP_TEST_BOOT_ID` names another boot than the one the store records):
//!
//! - `MappedManager::open` succeeds, and says it salvaged (`opening_salvage`);
//! - `check()` is sound afterwards;
//! - every root of the model as flushed (`M_k`) whose name no operation touched between the
//!   flush and the point reads back exactly;
//! - no root exists that neither `M_k` nor those operations made, but for the ones the salvage
//!   says it renamed (`salvaged-<offset>`: an entry whose name was torn).
//!
//! A root *touched* after the flush (set, replaced or removed) is guaranteed nothing but to
//! read without an error: any value it had from the flush to the point, missing (its entry or
//! its block did not persist whole, and the salvage dropped it), or, when its block's bytes
//! were torn but its header persisted, other bytes. The figures are printed.
//!
//! Environment: `MMHEAP_PL_POINTS` (default 200), `MMHEAP_PL_IMAGES` (per point, default 10),
//! `MMHEAP_PL_SEED`, `MMHEAP_PL_REPORT_ONLY=1` to print the statistics without failing,
//! `MMHEAP_PL_MINIMIZE` (failures per cause to shrink to a minimal set of sectors, default 3).
//! `scripts/power-loss` runs a long version (more points, more images, several seeds).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use mmheap::format::*;
use mmheap::{Error, MappedManager, MemoryBlock, MemoryManager, Options, SharedBytesMap};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

mod boot;
mod workload;

use workload::Workload;

const SECTOR: usize = 512;
const PAGE: usize = 4096;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The bytes of value `id`, `len` long.
fn content(id: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(&mix(id.wrapping_mul(0x1_0000_0001) ^ i).to_le_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

/// The root of the workload's container, a `SharedBytesMap`: its model value is
/// `(MAP_MARK | version, 0)`, and it reads as its entries, sorted and laid end to end.
const MAP_ROOT: &str = "map";
const MAP_MARK: u64 = 1 << 62;
/// The container's entries at each version, as `map_bytes` lays them out.
static MAP_STATES: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

/// Entries laid end to end (lengths first), in key order.
fn map_bytes(mut entries: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<u8> {
    entries.sort();
    let mut out = Vec::new();
    for (k, v) in entries {
        out.extend_from_slice(&(k.len() as u64).to_le_bytes());
        out.extend_from_slice(&(v.len() as u64).to_le_bytes());
        out.extend(k);
        out.extend(v);
    }
    out
}

/// What a root of value `id`, `len` long, reads as: its bytes, `content(id, len)`, and for a
/// linked value (every third id) its child's, which link 0 names; the container's entries.
fn expected(id: u64, len: usize) -> Vec<u8> {
    if id & MAP_MARK != 0 {
        return MAP_STATES.lock().unwrap_or_else(|p| p.into_inner())[(id & !MAP_MARK) as usize].clone();
    }
    let mut out = content(id, len);
    if let Some((child, child_len)) = child_of(id) {
        out.extend(content(child, child_len));
    }
    out
}

/// The child of value `id` (id and length) if it is a linked value: links must survive a power
/// loss as roots do (a container is blocks that links hold).
fn child_of(id: u64) -> Option<(u64, usize)> {
    (id % 3 == 0).then(|| (id | 1 << 40, 16 + (mix(id) % 6000) as usize))
}

/// A value a root names: (id, length); it reads as `expected(id, len)`.
type Value = (u64, usize);
type Model = BTreeMap<String, Value>;

/// How an image was made.
#[derive(Clone, Copy, Debug)]
enum Recipe {
    /// Each changed sector taken with probability p.
    Sectors(f64),
    /// Each changed 4 KiB page taken whole with probability p.
    Pages(f64),
    /// Every changed sector but one.
    AllButOne,
    /// One changed sector.
    JustOne,
}

#[derive(Clone)]
struct Image {
    #[allow(dead_code)]
    recipe: Recipe,
    /// The file length: C_p's (true) or D_k's.
    long: bool,
    /// Which changed sectors were taken from C_p.
    taken: Vec<bool>,
}

fn build(d: &[u8], c: &[u8], changed: &[usize], img: &Image) -> Vec<u8> {
    let len = if img.long { c.len() } else { d.len() };
    let mut out = vec![0u8; len];
    let n = d.len().min(len);
    out[..n].copy_from_slice(&d[..n]);
    for (i, &s) in changed.iter().enumerate() {
        if img.taken[i] {
            let (a, b) = (s * SECTOR, ((s + 1) * SECTOR).min(len));
            if a < b {
                let cb = c.len().min(b);
                if a < cb {
                    out[a..cb].copy_from_slice(&c[a..cb]);
                }
                // Beyond C_p's length (a shrink never happens, but be exact): zeros.
                for x in out[cb.max(a)..b].iter_mut() {
                    *x = 0;
                }
            }
        }
    }
    out
}

fn changed_sectors(d: &[u8], c: &[u8]) -> Vec<usize> {
    let n = d.len().max(c.len()).div_ceil(SECTOR);
    let at = |v: &[u8], s: usize| -> Vec<u8> {
        let mut buf = vec![0u8; SECTOR];
        let a = s * SECTOR;
        if a < v.len() {
            let b = (a + SECTOR).min(v.len());
            buf[..b - a].copy_from_slice(&v[a..b]);
        }
        buf
    };
    (0..n).filter(|&s| at(d, s) != at(c, s)).collect()
}

/// Names the structure an offset lies in.
fn region(offset: u64) -> &'static str {
    match offset {
        o if o < EXCHANGE_OFFSET => "superblock",
        o if o < TLSF_OFFSET => "exchange",
        o if o < CHANNELS_OFFSET => "TLSF index",
        o if o < REGISTRY_OFFSET => "channel directory",
        o if o < ROOTS_OFFSET => "registry",
        o if o < HEAP_START => "fixed roots directory",
        _ => "heap",
    }
}

/// What became of one image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Ok,
    /// `open` refused: the error, and (for Corrupt) what and the region.
    OpenRefused(String),
    /// Opened in a new boot without the recovery that calls for.
    NotRecovered,
    /// Opened, but `check` found problems (the first problem's what and region).
    Unsound(String),
    /// `check` itself failed.
    CheckError(String),
    /// A root unchanged since the flush is missing or reads other bytes.
    LostRoot(String),
    /// A root touched since the flush could not be read.
    TouchedUnreadable(String),
    /// A root exists that neither the flushed model nor the operations since made, and that
    /// the salvage did not rename.
    PhantomRoot(String),
}

impl Outcome {
    fn is_failure(&self) -> bool {
        *self != Outcome::Ok
    }
}

fn describe(e: &Error) -> String {
    match e {
        Error::Corrupt { what, offset } => format!("Corrupt: {what} [{}]", region(*offset)),
        other => {
            let s = format!("{other:?}");
            s.split([' ', '{', '(']).next().unwrap_or("?").to_string()
        }
    }
}

/// Per-point context for judging an image.
struct Expect<'a> {
    /// Roots as flushed, untouched since: must read back exactly.
    fixed: BTreeMap<&'a str, Value>,
    /// Roots touched since the flush: every value each had from the flush to the point, and
    /// whether it was missing at some time.
    touched: BTreeMap<&'a str, (BTreeSet<Value>, bool)>,
}

/// What became of the roots touched since the flush, and what the salvages did.
#[derive(Default)]
struct Figures {
    old_or_new: u64,
    missing: u64,
    missing_though_present: u64,
    other_bytes: u64,
    quarantined: u64,
    quarantined_bytes: u64,
    dropped: u64,
    renamed: u64,
    /// Images the strict recovery opened, and images it refused that salvage opened.
    recovered: u64,
    salvaged: u64,
}

struct Judged {
    outcome: Outcome,
    figures: Figures,
}

fn read_root(m: &MappedManager, name: &str) -> Result<Option<Vec<u8>>, Error> {
    let Some(b) = m.root(name)? else { return Ok(None) };
    if name == MAP_ROOT {
        // A container that reads as damaged is other bytes: allowed if it changed since the flush.
        let entries = SharedBytesMap::open(b).and_then(|map| map.entries());
        return Ok(Some(entries.map_or_else(|_| b"<unreadable container>".to_vec(), map_bytes)));
    }
    let mut bytes = b.as_slice().to_vec();
    if b.link_count() > 0 {
        bytes.extend_from_slice(b.link(0)?.map(|c| c.as_slice().to_vec()).unwrap_or_default().as_slice());
    }
    Ok(Some(bytes))
}

/// Held while a test pretends a boot id (or must not meet a pretended one): the tests of this
/// file run on threads of one process, which share the environment.
static BOOT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Opens the image at `path` as the first process after a reboot would.
fn open_after_reboot(path: &Path) -> Result<MappedManager, Error> {
    in_boot(Some("a-boot-after-the-power-loss"), || MappedManager::open(path))
}

/// Runs `f` as a process of the boot `boot` pretends would (`None`: the real one), holding
/// [`BOOT`].
fn in_boot<T>(boot: Option<&str>, f: impl FnOnce() -> T) -> T {
    let _held = BOOT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(boot) = boot {
        std::env::set_var("MMHEAP_TEST_BOOT_ID", boot);
    }
    let done = f();
    std::env::remove_var("MMHEAP_TEST_BOOT_ID");
    done
}

/// The boot id a store file records.
fn recorded_boot(path: &Path) -> u64 {
    let bytes = std::fs::read(path).expect("read the store");
    u64::from_le_bytes(bytes[SB_BOOT_ID as usize..SB_BOOT_ID as usize + 8].try_into().unwrap())
}

fn judge(path: &Path, bytes: &[u8], exp: &Expect<'_>) -> Judged {
    std::fs::write(path, bytes).expect("write image");
    let mut f = Figures::default();
    let outcome = judge_opened(path, exp, &mut f);
    Judged { outcome, figures: f }
}

fn judge_opened(path: &Path, exp: &Expect<'_>, f: &mut Figures) -> Outcome {
    let m = match open_after_reboot(path) {
        Ok(m) => m,
        Err(e) => return Outcome::OpenRefused(describe(&e)),
    };
    // The strict recovery runs first in a new boot; salvage only if it refuses the image.
    if m.opening_recovery().is_none() {
        return Outcome::NotRecovered;
    }
    let renamed: Vec<String> = m.opening_salvage().map(|s| s.renamed.clone()).unwrap_or_default();
    match m.opening_salvage() {
        Some(salvage) => {
            f.salvaged += 1;
            f.quarantined += salvage.quarantined.len() as u64;
            f.quarantined_bytes += salvage.quarantined.iter().map(|q| q.1).sum::<u64>();
            f.dropped += salvage.dropped.len() as u64;
        }
        None => f.recovered += 1,
    }
    f.renamed += renamed.len() as u64;
    match m.check() {
        Ok(r) if r.is_sound() => {}
        Ok(r) => {
            let p = &r.problems[0];
            return Outcome::Unsound(format!(
                "{} [{}] (+{} more)",
                p.what,
                region(p.offset),
                r.problems.len() - 1
            ));
        }
        Err(e) => return Outcome::CheckError(describe(&e)),
    }
    for (name, &(id, len)) in &exp.fixed {
        match read_root(&m, name) {
            Ok(Some(v)) if v == expected(id, len) => {}
            Ok(Some(_)) if m.opening_salvage().is_some() => {
                return Outcome::LostRoot("reads other bytes (salvaged)".into())
            }
            Ok(Some(_)) => return Outcome::LostRoot("reads other bytes (recovered)".into()),
            Ok(None) => return Outcome::LostRoot("missing".into()),
            Err(e) => return Outcome::LostRoot(format!("root() failed: {}", describe(&e))),
        }
    }
    for (name, (values, may_miss)) in &exp.touched {
        match read_root(&m, name) {
            Ok(Some(v)) if values.iter().any(|&(id, len)| v == expected(id, len)) => f.old_or_new += 1,
            Ok(Some(_)) => f.other_bytes += 1,
            Ok(None) if *may_miss => f.missing += 1,
            Ok(None) => f.missing_though_present += 1,
            Err(e) => return Outcome::TouchedUnreadable(describe(&e)),
        }
    }
    match m.roots() {
        Ok(all) => {
            let known = |n: &str| {
                exp.fixed.contains_key(n) || exp.touched.contains_key(n) || renamed.iter().any(|r| r == n)
            };
            if let Some((n, _)) = all.iter().find(|(n, _)| !known(n)) {
                return Outcome::PhantomRoot(n.clone());
            }
        }
        Err(e) => return Outcome::LostRoot(format!("roots() failed: {}", describe(&e))),
    }
    Outcome::Ok
}

/// The cause a failure is counted under.
fn cause(o: &Outcome) -> String {
    match o {
        Outcome::Ok => "ok".into(),
        Outcome::OpenRefused(s) => format!("open refused: {s}"),
        Outcome::NotRecovered => "opened without recovery".into(),
        Outcome::TouchedUnreadable(s) => format!("touched root unreadable: {s}"),
        Outcome::Unsound(s) => {
            let s = s.split(" (+").next().unwrap_or(s);
            format!("check unsound: {s}")
        }
        Outcome::CheckError(s) => format!("check error: {s}"),
        Outcome::LostRoot(s) => format!("unchanged root {s}"),
        Outcome::PhantomRoot(_) => "phantom root".into(),
    }
}

/// Shrinks a failing image to a minimal set of differences from D_k: greedily gives back to
/// D_k each taken sector, then takes from C_p each untaken one, keeping the change when the
/// image still fails with the same cause. Returns the taken and the untaken sectors that
/// matter (the rest could go either way).
fn minimize(
    dir: &Path,
    d: &[u8],
    c: &[u8],
    changed: &[usize],
    img: &Image,
    exp: &Expect<'_>,
    want: &str,
) -> (Image, Vec<usize>, Vec<usize>) {
    let path = dir.join("min.mmheap");
    let fails = |im: &Image| cause(&judge(&path, &build(d, c, changed, im), exp).outcome) == want;
    let mut cur = img.clone();
    for i in 0..changed.len() {
        if cur.taken[i] {
            cur.taken[i] = false;
            if !fails(&cur) {
                cur.taken[i] = true;
            }
        }
    }
    for i in 0..changed.len() {
        if !cur.taken[i] {
            cur.taken[i] = true;
            if !fails(&cur) {
                cur.taken[i] = false;
            }
        }
    }
    // Which of the remaining differences matter: flipping them alone repairs the image.
    let mut need_taken = Vec::new();
    let mut need_untaken = Vec::new();
    for (i, &sector) in changed.iter().enumerate() {
        let mut t = cur.clone();
        t.taken[i] = !t.taken[i];
        if !fails(&t) {
            if cur.taken[i] {
                need_taken.push(sector)
            } else {
                need_untaken.push(sector)
            }
        }
    }
    (cur, need_taken, need_untaken)
}

/// The 8-byte words of sector `s` that differ between D_k and C_p.
fn word_diff(d: &[u8], c: &[u8], s: usize) -> String {
    let get = |v: &[u8], o: usize| -> u64 {
        if o + 8 <= v.len() {
            u64::from_le_bytes(v[o..o + 8].try_into().unwrap())
        } else {
            0
        }
    };
    let mut out = Vec::new();
    for o in (s * SECTOR..(s + 1) * SECTOR).step_by(8) {
        let (a, b) = (get(d, o), get(c, o));
        if a != b {
            out.push(format!("{o:#x}: {a:#x} -> {b:#x}"));
        }
    }
    let n = out.len();
    out.truncate(12);
    if n > 12 {
        out.push(format!("... {} more words", n - 12));
    }
    out.join("; ")
}

fn recipes() -> Vec<(Recipe, bool)> {
    vec![
        (Recipe::Sectors(0.0), true),
        (Recipe::Sectors(0.0), false),
        (Recipe::Sectors(1.0), true),
        (Recipe::Sectors(0.1), true),
        (Recipe::Sectors(0.5), true),
        (Recipe::Sectors(0.9), true),
        (Recipe::Pages(0.5), true),
        (Recipe::Pages(0.2), true),
        (Recipe::Pages(0.8), true),
        (Recipe::AllButOne, true),
        (Recipe::JustOne, true),
        (Recipe::Sectors(0.5), false),
    ]
}

fn make_image(rng: &mut SmallRng, changed: &[usize], recipe: Recipe, long: bool) -> Image {
    let n = changed.len();
    let taken: Vec<bool> = match recipe {
        Recipe::Sectors(p) => (0..n).map(|_| p >= 1.0 || (p > 0.0 && rng.gen_bool(p))).collect(),
        Recipe::Pages(p) => {
            let pages: BTreeSet<usize> = changed.iter().map(|s| s * SECTOR / PAGE).collect();
            let chosen: BTreeSet<usize> = pages.into_iter().filter(|_| rng.gen_bool(p)).collect();
            changed.iter().map(|s| chosen.contains(&(s * SECTOR / PAGE))).collect()
        }
        Recipe::AllButOne => {
            let skip = if n > 0 { rng.gen_range(0..n) } else { 0 };
            (0..n).map(|i| i != skip).collect()
        }
        Recipe::JustOne => {
            let one = if n > 0 { rng.gen_range(0..n) } else { 0 };
            (0..n).map(|i| i == one).collect()
        }
    };
    Image { recipe, long, taken }
}

/// Running totals over every image.
#[derive(Default)]
struct Totals {
    stats: BTreeMap<String, u64>,
    by_recipe: BTreeMap<String, (u64, u64)>,
    figures: Figures,
    minimized: BTreeMap<String, usize>,
    examples: Vec<String>,
}

impl Totals {
    fn add(&mut self, key: String, j: &Judged) -> String {
        let e = self.by_recipe.entry(key).or_default();
        e.0 += 1;
        e.1 += u64::from(j.outcome.is_failure());
        let (t, g) = (&mut self.figures, &j.figures);
        t.old_or_new += g.old_or_new;
        t.missing += g.missing;
        t.missing_though_present += g.missing_though_present;
        t.other_bytes += g.other_bytes;
        t.quarantined += g.quarantined;
        t.quarantined_bytes += g.quarantined_bytes;
        t.dropped += g.dropped;
        t.renamed += g.renamed;
        t.recovered += g.recovered;
        t.salvaged += g.salvaged;
        let cz = cause(&j.outcome);
        *self.stats.entry(cz.clone()).or_default() += 1;
        cz
    }

    fn print(&self) {
        println!("outcomes:");
        for (k, v) in &self.stats {
            println!("  {v:6}  {k}");
        }
        println!("failures by recipe (failed / images):");
        for (k, (n, f)) in &self.by_recipe {
            println!("  {f:5} / {n:5}  {k}");
        }
        let f = &self.figures;
        println!(
            "roots touched after the flush, over opened images: {} an old or new value, {} missing \
             (missing at some time), {} missing (present throughout: dropped by the salvage), {} other bytes",
            f.old_or_new, f.missing, f.missing_though_present, f.other_bytes
        );
        println!(
            "opened by the strict recovery: {}; refused by it and salvaged: {}: {} ranges quarantined ({} bytes), {} references dropped, {} renamed",
            f.recovered, f.salvaged, f.quarantined, f.quarantined_bytes, f.dropped, f.renamed
        );
        println!("minimized examples:");
        for e in &self.examples {
            println!("{e}");
        }
    }
}

/// The images of one point.
struct Point<'a> {
    number: usize,
    d: &'a [u8],
    c: &'a [u8],
    changed: Vec<usize>,
    exp: Expect<'a>,
}

fn judge_point(
    p: &Point<'_>,
    dir: &Path,
    irng: &mut SmallRng,
    images: usize,
    minimize_per: usize,
    t: &mut Totals,
) {
    let recipes = recipes();
    for k in 0..images {
        // Ten images a point at the least; the recipes rotate from point to point.
        let (recipe, long) = recipes[(k + p.number) % recipes.len()];
        let img = make_image(irng, &p.changed, recipe, long);
        let bytes = build(p.d, p.c, &p.changed, &img);
        let j = judge(&dir.join("image.mmheap"), &bytes, &p.exp);
        let key = format!("{recipe:?}{}", if long { "" } else { " short" });
        let cz = t.add(key.clone(), &j);
        if !j.outcome.is_failure() {
            continue;
        }
        let count = t.minimized.entry(cz.clone()).or_default();
        if *count >= minimize_per {
            continue;
        }
        *count += 1;
        let (_, need_t, need_u) = minimize(dir, p.d, p.c, &p.changed, &img, &p.exp, &cz);
        let hex = |v: &[usize]| v.iter().map(|s| format!("{:#x}", s * SECTOR)).collect::<Vec<_>>();
        let mut ex = format!(
            "== {cz}\n   point {} ({} changed sectors, len D {} C {}), {key}: {:?}\n   needs taken from C_p: {:?}\n   needs kept from D_k: {:?}",
            p.number,
            p.changed.len(),
            p.d.len(),
            p.c.len(),
            j.outcome,
            hex(&need_t),
            hex(&need_u),
        );
        for &s in need_t.iter().chain(&need_u).take(6) {
            let at = s * SECTOR;
            ex.push_str(&format!(
                "\n     sector {at:#x} ({}): {}",
                region(at as u64),
                word_diff(p.d, p.c, s)
            ));
        }
        t.examples.push(ex);
    }
}

/// What the operations since the flush did to the roots: every value each touched name had,
/// and the names that were missing at some time.
#[derive(Default)]
struct Since {
    values: BTreeMap<String, BTreeSet<Value>>,
    absent: BTreeSet<String>,
}

impl Since {
    fn touch(&mut self, name: &str, flushed: &Model, now: &Model) {
        let e = self.values.entry(name.to_string()).or_default();
        for m in [flushed, now] {
            match m.get(name) {
                Some(v) => _ = e.insert(*v),
                None => _ = self.absent.insert(name.to_string()),
            }
        }
    }

    /// `name` was made durable as it is now: untouched since.
    fn forget(&mut self, name: &str) {
        self.values.remove(name);
        self.absent.remove(name);
    }

    fn expect<'a>(&'a self, flushed: &'a Model) -> Expect<'a> {
        Expect {
            fixed: flushed
                .iter()
                .filter(|(n, _)| !self.values.contains_key(*n))
                .map(|(n, v)| (n.as_str(), *v))
                .collect(),
            touched: self
                .values
                .iter()
                .map(|(n, vals)| (n.as_str(), (vals.clone(), self.absent.contains(n))))
                .collect(),
        }
    }
}

/// The pages the store's barriers made durable during one operation, with the file's length
/// then (which the barrier's `fdatasync` of the range makes durable too), read when they were
/// made durable: (the store's path, pages).
type Captured = (std::path::PathBuf, u64, Vec<(u64, Vec<u8>)>);
static CAPTURE: std::sync::Mutex<Option<Captured>> = std::sync::Mutex::new(None);

fn capture_persisted(offset: u64, len: u64) {
    use std::os::unix::fs::FileExt;
    let mut guard = CAPTURE.lock().unwrap_or_else(|p| p.into_inner());
    let Some((path, file_len, pages)) = guard.as_mut() else { return };
    let file = std::fs::File::open(&*path).expect("open the store");
    *file_len = file.metadata().expect("stat").len();
    let mut bytes = vec![0u8; len.min(file_len.saturating_sub(offset)) as usize];
    file.read_exact_at(&mut bytes, offset).expect("read the persisted pages");
    pages.push((offset, bytes));
}

/// One operation of the workload, with what its barriers made durable added to `d`.
fn step_durably(w: &mut Workload, path: &Path, d: &mut Vec<u8>) -> Option<String> {
    *CAPTURE.lock().unwrap_or_else(|p| p.into_inner()) = Some((path.to_owned(), 0, Vec::new()));
    let touched = w.step();
    let captured = CAPTURE.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some((_, len, pages)) = captured.filter(|c| !c.2.is_empty()) {
        d.resize(d.len().max(len as usize), 0);
        for (offset, bytes) in pages {
            d[offset as usize..offset as usize + bytes.len()].copy_from_slice(&bytes);
        }
    }
    touched
}

#[test]
fn power_loss_images_open_check_sound_and_keep_flushed_roots() {
    let started = Instant::now();
    let seed = env_u64("MMHEAP_PL_SEED", 0x5eed_0ff1_u64);
    let points_wanted = env_u64("MMHEAP_PL_POINTS", 200) as usize;
    let images_per_point = (env_u64("MMHEAP_PL_IMAGES", 10) as usize).max(10);
    let minimize_per_cause = env_u64("MMHEAP_PL_MINIMIZE", 3) as usize;
    let report_only = std::env::var("MMHEAP_PL_REPORT_ONLY").is_ok_and(|v| v == "1");

    // In memory where there is some (/dev/shm): every open after a "reboot" flushes its repairs.
    let shm = Path::new("/dev/shm");
    let dir = match shm.is_dir() {
        true => tempfile::tempdir_in(shm).or_else(|_| tempfile::tempdir()),
        false => tempfile::tempdir(),
    }
    .expect("tempdir");
    mmheap::test_hooks::observe_persist(Some(capture_persisted));
    let path = dir.path().join("store.mmheap");
    let store = in_boot(None, || MappedManager::create(&path, &Options::new()).expect("create"));
    let mut w = Workload {
        rng: SmallRng::seed_from_u64(seed),
        store,
        model: Model::new(),
        next_id: 1,
        held: Vec::new(),
        // More names than the fixed directory has entries: the roots move to a table, which grows.
        names: (0..320).map(|i| format!("root-{i}")).collect(),
        map_flushed: false,
    };
    let mut irng = SmallRng::seed_from_u64(seed ^ 0xdead_beef);
    let mut t = Totals::default();
    let (mut points, mut flushes, mut map_flushes) = (0usize, 0usize, 0usize);

    w.store.flush().expect("flush");
    let mut d_k = std::fs::read(&path).expect("read store");
    let mut m_k = w.model.clone();
    let mut since = Since::default();
    while points < points_wanted {
        let interval = w.rng.gen_range(3..14);
        for op in 0..interval {
            if let Some(name) = step_durably(&mut w, &path, &mut d_k) {
                since.touch(&name, &m_k, &w.model);
            }
            // A container made durable by its own flush, under a root the last store flush made
            // durable, reads back as at its flush: as if flushed with the store.
            if std::mem::take(&mut w.map_flushed) && m_k.contains_key(MAP_ROOT) {
                m_k.insert(MAP_ROOT.to_owned(), w.model[MAP_ROOT]);
                since.forget(MAP_ROOT);
                map_flushes += 1;
            }
            // A point after roughly a third of the operations, and always before the flush.
            if op + 1 < interval && !w.rng.gen_ratio(1, 3) {
                continue;
            }
            points += 1;
            let c_p = std::fs::read(&path).expect("read store");
            let p = Point {
                number: points,
                d: &d_k,
                c: &c_p,
                changed: changed_sectors(&d_k, &c_p),
                exp: since.expect(&m_k),
            };
            judge_point(&p, dir.path(), &mut irng, images_per_point, minimize_per_cause, &mut t);
        }
        w.store.flush().expect("flush");
        flushes += 1;
        d_k = std::fs::read(&path).expect("read store");
        m_k = w.model.clone();
        since = Since::default();
    }

    let images: u64 = t.stats.values().sum();
    let failed: u64 = t.stats.iter().filter(|(k, _)| *k != "ok").map(|(_, v)| v).sum();
    println!(
        "power loss: {points} points, {images} images, {flushes} flushes ({map_flushes} of the container alone), {} roots at the end, store {} bytes, {:.1}s",
        w.model.len(),
        std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
        started.elapsed().as_secs_f64()
    );
    t.print();
    assert!(points >= points_wanted && images >= 10 * points as u64);
    if !report_only {
        assert_eq!(failed, 0, "{failed} of {images} power-loss images failed (see above)");
    }
}
