//! Programs the way users write them, each run with glibc malloc, mimalloc or mmheap as the
//! global allocator (issue 18). One binary: the allocator is chosen once, at startup, from
//! `MMHEAP_BENCH_ALLOC` = `glibc` | `mimalloc` | `mmheap`, so every allocator runs exactly the
//! same machine code around its calls.
//!
//!     MMHEAP_BENCH_ALLOC=mmheap cargo bench --bench programs -- <workload> [scale]
//!     scripts/bench-programs                 # every workload, every allocator, interleaved
//!
//! Workloads: `json`, `maps`, `regex`, `channels`, `rayon`, `strings` (see each module). A
//! `scale` (default 1.0) shrinks each for smoke tests. Each prints one JSON line: workload,
//! allocator, scale, seconds, peak_rss_kib (VmHWM), final_rss_kib (VmRSS once everything the
//! workload built is dropped) and a checksum of its results, which must be the same whatever
//! the allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use mimalloc::MiMalloc;
use mmheap::DefaultManager;

#[path = "programs/channels.rs"]
mod channels;
#[path = "programs/json.rs"]
mod json;
#[path = "programs/maps.rs"]
mod maps;
#[path = "programs/par.rs"]
mod par;
#[path = "programs/regexes.rs"]
mod regexes;
#[path = "programs/strings.rs"]
mod strings;

const UNSET: u8 = 0;
const GLIBC: u8 = 1;
const MIMALLOC: u8 = 2;
const MMHEAP: u8 = 3;
/// `MMHEAP_BENCH_ALLOC` names no allocator: glibc serves, `main` refuses to run.
const INVALID: u8 = 4;
const NAMES: [&str; 5] = ["unset", "glibc", "mimalloc", "mmheap", "invalid"];

/// The allocator every call goes to; `UNSET` only until the constructor below or the first
/// allocation, whichever comes first, has read the environment. Never changes after that.
static CHOICE: AtomicU8 = AtomicU8::new(UNSET);
static MIMALLOC_ALLOC: MiMalloc = MiMalloc;
static MMHEAP_ALLOC: DefaultManager = DefaultManager::GLOBAL;

/// Reads `MMHEAP_BENCH_ALLOC` with `getenv`, which does not allocate (std's `env::var` would
/// allocate, and so call back into the allocator being chosen).
fn read_choice() -> u8 {
    // SAFETY: the name is NUL-terminated; nothing in this process calls setenv, so the
    // returned pointer, if any, stays valid while we read it.
    let p = unsafe { libc::getenv(c"MMHEAP_BENCH_ALLOC".as_ptr()) };
    if p.is_null() {
        return INVALID;
    }
    // SAFETY: getenv returned a NUL-terminated string that lives in the environment block.
    match unsafe { std::ffi::CStr::from_ptr(p) }.to_bytes() {
        b"glibc" => GLIBC,
        b"mimalloc" => MIMALLOC,
        b"mmheap" => MMHEAP,
        _ => INVALID,
    }
}

extern "C" fn choose_at_startup() {
    CHOICE.store(read_choice(), Ordering::Relaxed);
}

/// Runs before `main` (and before std's own setup allocates), so the choice is made while the
/// process has one thread; `choice` still reads it on its own if an allocation comes first.
#[used]
#[link_section = ".init_array"]
static CHOOSE_AT_STARTUP: extern "C" fn() = choose_at_startup;

#[inline]
fn choice() -> u8 {
    match CHOICE.load(Ordering::Relaxed) {
        UNSET => {
            let c = read_choice();
            CHOICE.store(c, Ordering::Relaxed);
            c
        }
        c => c,
    }
}

/// Sends every call to the allocator `MMHEAP_BENCH_ALLOC` names.
struct Dispatch;

#[inline]
fn target() -> &'static dyn GlobalAlloc {
    match choice() {
        MIMALLOC => &MIMALLOC_ALLOC,
        MMHEAP => &MMHEAP_ALLOC,
        _ => &System,
    }
}

// SAFETY: every call is passed unchanged to one allocator, the same one for the whole life of
// the process (the choice never changes once made), so each block is freed or resized by the
// allocator that made it.
unsafe impl GlobalAlloc for Dispatch {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe { target().alloc(layout) }
    }
    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe { target().alloc_zeroed(layout) }
    }
    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract; `ptr` came from this same target.
        unsafe { target().dealloc(ptr, layout) }
    }
    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract; `ptr` came from this same target.
        unsafe { target().realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Dispatch = Dispatch;

/// A small deterministic generator (splitmix64): the same sequence on every allocator.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x2545_f491_4f6c_dd1d)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo) as u64) as usize
    }
}

/// A bijective scramble of a word (splitmix64's finalizer).
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A fast hash of bytes for checksums (not for hash tables).
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(8);
    let mut h = bytes.len() as u64;
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    for &b in chunks.remainder() {
        h = (h.rotate_left(5) ^ b as u64).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    mix64(h)
}

/// `base` shrunk by `scale`, at least 1.
pub fn scaled(base: usize, scale: f64) -> usize {
    ((base as f64 * scale).round() as usize).max(1)
}

/// A field of /proc/self/status in KiB (`VmHWM`, `VmRSS`), 0 where there is none.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A workload: runs at `scale` and returns its checksum.
type Workload = fn(f64) -> u64;

const WORKLOADS: [(&str, Workload); 6] = [
    ("json", json::run),
    ("maps", maps::run),
    ("regex", regexes::run),
    ("channels", channels::run),
    ("rayon", par::run),
    ("strings", strings::run),
];

fn usage() -> ! {
    let names: Vec<&str> = WORKLOADS.iter().map(|w| w.0).collect();
    eprintln!("usage: MMHEAP_BENCH_ALLOC=glibc|mimalloc|mmheap programs <{}> [scale]", names.join("|"));
    std::process::exit(2);
}

fn main() {
    // `cargo bench` passes `--bench`; the workload is the first other argument.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    if args.is_empty() {
        // A plain `cargo bench` runs every bench: this one needs a workload and an allocator.
        eprintln!("programs: nothing to run without a workload; scripts/bench-programs runs them all");
        return;
    }
    let allocator = NAMES[choice() as usize];
    if allocator == "invalid" {
        eprintln!("MMHEAP_BENCH_ALLOC must be glibc, mimalloc or mmheap");
        usage();
    }
    let Some(&(name, run)) = args.first().and_then(|w| WORKLOADS.iter().find(|(n, _)| n == w)) else {
        usage()
    };
    let scale = match args.get(1).map(|s| s.parse::<f64>()) {
        None => 1.0,
        Some(Ok(s)) if s > 0.0 => s,
        Some(_) => usage(),
    };
    let started = Instant::now();
    let checksum = run(scale);
    let seconds = started.elapsed().as_secs_f64();
    let (peak, now) = (status_kib("VmHWM"), status_kib("VmRSS"));
    let line = serde_json::json!({
        "workload": name,
        "allocator": allocator,
        "scale": scale,
        "seconds": (seconds * 1e4).round() / 1e4,
        "peak_rss_kib": peak,
        "final_rss_kib": now,
        "checksum": format!("{checksum:016x}"),
    });
    println!("{line}");
}
