//! Allocation speed: the speed issue's workloads, mmheap against glibc malloc (Rust's
//! `System`) and mimalloc in the same run. A deterministic seeded generator drives every
//! allocator through the same sequence; the first and last byte of every block are touched.
//!
//!     cargo bench --bench alloc            # MMHEAP_ALLOC_OPS scales the churn workloads
//!
//! `MMHEAP_ALLOC_ONLY=small,mixed,fill,resize,clone,reopen,two` runs only the named workloads.
//!
//! Workloads: small churn (16..=512 B, live set capped at 10,000), mixed churn (log-uniform
//! 16 B..64 KiB, live set capped at 2,000), fill (1,000,000 blocks of 64 B, then free them:
//! time per allocate and per free, heap bytes per payload byte; untouched, then written), resize (1,000 blocks grown
//! 16 B at a time to 4 KiB and back, against glibc's `realloc`), reopen (a cleanly closed store
//! holding 1,000,000 blocks: open and find a root), `MemoryBlock` clone + drop, and two
//! processes churning one store at once (aggregate throughput against one process alone).
//! This binary is its own child for the last one and for reopen (`MMHEAP_ALLOC_ROLE`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::time::{Duration, Instant};

use mimalloc::MiMalloc;
use mmheap::{DefaultManager, MappedManager, MemoryBlock, MemoryManager, Options};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn env(k: &str, default: u64) -> u64 {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The size sequence of a churn workload.
#[derive(Clone, Copy)]
enum Sizes {
    Small,
    Mixed,
}

impl Sizes {
    fn next(self, rng: &mut SmallRng) -> usize {
        match self {
            Sizes::Small => rng.gen_range(16..=512),
            Sizes::Mixed => (2f64.powf(rng.gen_range(4.0..16.0))) as usize,
        }
    }
    fn cap(self) -> usize {
        match self {
            Sizes::Small => 10_000,
            Sizes::Mixed => 2_000,
        }
    }
}

/// Runs `ops` operations of a churn workload; returns nanoseconds per operation.
fn churn<T>(sizes: Sizes, ops: u64, mut alloc: impl FnMut(usize) -> T, mut free: impl FnMut(T)) -> f64 {
    let mut rng = SmallRng::seed_from_u64(42);
    let mut live: Vec<T> = Vec::with_capacity(sizes.cap());
    let t = Instant::now();
    for _ in 0..ops {
        if live.len() < sizes.cap() && (live.len() < sizes.cap() / 2 || rng.gen_bool(0.5)) {
            live.push(alloc(sizes.next(&mut rng)));
        } else {
            let i = rng.gen_range(0..live.len());
            free(live.swap_remove(i));
        }
    }
    let ns = t.elapsed().as_nanos() as f64 / ops as f64;
    live.into_iter().for_each(free);
    ns
}

fn touch(p: *mut u8, len: usize) {
    // SAFETY: callers pass a live allocation of `len >= 1` bytes that they own.
    unsafe {
        p.write_volatile(1);
        p.add(len - 1).write_volatile(1);
    }
}

fn raw(a: &'static dyn GlobalAlloc, sizes: Sizes, ops: u64) -> f64 {
    churn(
        sizes,
        ops,
        |n| {
            let l = Layout::from_size_align(n, 16).expect("layout");
            // SAFETY: non-zero size.
            let p = unsafe { a.alloc(l) };
            assert!(!p.is_null());
            touch(p, n);
            (p, l)
        },
        // SAFETY: each pointer came from this allocator with this layout, freed once.
        |(p, l)| unsafe { a.dealloc(p, l) },
    )
}

fn managed<M: MemoryManager>(m: &M, sizes: Sizes, ops: u64) -> f64 {
    churn(
        sizes,
        ops,
        |n| {
            let mut b = m.allocate(n).expect("allocate");
            touch(b.as_mut_slice().expect("sole owner").as_mut_ptr(), n);
            b
        },
        // Released as the raw workloads release theirs, directly: a `black_box` around the
        // handle would force it through memory, a store and a load the raw frees do not pay.
        drop,
    )
}

static MIMALLOC: MiMalloc = MiMalloc;
/// The in-process manager through its `GlobalAlloc` interface (raw pointers, no `MemoryBlock`).
static DEFAULT_GLOBAL: DefaultManager = DefaultManager::GLOBAL;
static SYSTEM: System = System;

fn main() -> Res {
    if let Ok(role) = std::env::var("MMHEAP_ALLOC_ROLE") {
        if role == "glibc" {
            println!("{}", raw(&SYSTEM, Sizes::Small, env("MMHEAP_ALLOC_OPS", 2_000_000)));
            return Ok(());
        }
        if role == "reopen" {
            return reopen_in_child(&std::env::var("MMHEAP_ALLOC_STORE")?);
        }
        let m = MappedManager::open(std::env::var("MMHEAP_ALLOC_STORE")?)?;
        let ns = managed(
            &m,
            if role == "small" { Sizes::Small } else { Sizes::Mixed },
            env("MMHEAP_ALLOC_OPS", 2_000_000),
        );
        println!("{ns}");
        return Ok(());
    }
    let ops = env("MMHEAP_ALLOC_OPS", 2_000_000);
    let only = std::env::var("MMHEAP_ALLOC_ONLY").ok();
    let want = |name: &str| only.as_deref().is_none_or(|o| o.split(',').any(|w| w == name));
    let store = MappedManager::temporary(&Options::new().max_size(4 << 30))?;
    let default = DefaultManager::new()?;
    println!("per operation, {ops} operations; ratio = mmheap / baseline (lower is better)");
    for (name, sizes) in [("small churn", Sizes::Small), ("mixed churn", Sizes::Mixed)] {
        if !want(name.split(' ').next().unwrap_or_default()) {
            continue;
        }
        // Three rounds, the four allocators interleaved in each; medians.
        let rounds: Vec<[f64; 5]> = (0..3)
            .map(|_| {
                [
                    raw(&SYSTEM, sizes, ops),
                    raw(&MIMALLOC, sizes, ops),
                    managed(&store, sizes, ops),
                    managed(&default, sizes, ops),
                    raw(&DEFAULT_GLOBAL, sizes, ops),
                ]
            })
            .collect();
        let [glibc, mi, mapped, dflt, as_global] =
            [0, 1, 2, 3, 4].map(|i| median([rounds[0][i], rounds[1][i], rounds[2][i]]));
        println!(
            "{name:<12} glibc {glibc:6.1} ns  mimalloc {mi:6.1} ns  MappedManager {mapped:6.1} ns ({:.2}x glibc)  DefaultManager {dflt:6.1} ns ({:.2}x mimalloc), as GlobalAlloc {as_global:6.1} ns ({:.2}x mimalloc)",
            mapped / glibc,
            dflt / mi,
            as_global / mi
        );
    }
    if want("fill") {
        fill(&store)?;
    }
    if want("resize") {
        resize(&store)?;
    }
    if want("clone") {
        clone_drop(&store)?;
    }
    if want("reopen") {
        reopen()?;
    }
    if want("two") {
        two_processes(ops)?;
    }
    Ok(())
}

/// Resize: 1,000 live blocks, each grown 16 B at a time from 16 B to 4 KiB and shrunk back
/// (a growing buffer, a string built up), against glibc's `realloc` of the same sizes; the
/// share of resizes that kept their place.
fn resize(store: &MappedManager) -> Res {
    const LIVE: usize = 1_000;
    let steps: Vec<usize> = (1..=256).map(|i| i * 16).chain((1..256).rev().map(|i| i * 16)).collect();
    let mut blocks: Vec<MemoryBlock> = (0..LIVE).map(|_| store.allocate(16)).collect::<Result<_, _>>()?;
    let (mut moved, mut n) = (0u64, 0u64);
    let t = Instant::now();
    for &len in &steps {
        for b in &mut blocks {
            let before = b.offset();
            store.resize(b, len)?;
            moved += u64::from(b.offset() != before);
            n += 1;
        }
    }
    let mm = t.elapsed().as_nanos() as f64 / n as f64;
    drop(blocks);
    let l = Layout::from_size_align(16, 16)?;
    // SAFETY: non-zero sizes; each pointer is reallocated with its current layout and freed
    // once below.
    let mut ptrs: Vec<(*mut u8, usize)> = (0..LIVE).map(|_| (unsafe { SYSTEM.alloc(l) }, 16)).collect();
    let (mut g_moved, t) = (0u64, Instant::now());
    for &len in &steps {
        for (p, cur) in &mut ptrs {
            // SAFETY: `p` is live with `cur` bytes, alignment 16; `len` is not zero.
            let q = unsafe { SYSTEM.realloc(*p, Layout::from_size_align_unchecked(*cur, 16), len) };
            g_moved += u64::from(q != *p);
            (*p, *cur) = (q, len);
        }
    }
    let glibc = t.elapsed().as_nanos() as f64 / n as f64;
    // SAFETY: as above.
    ptrs.into_iter()
        .for_each(|(p, cur)| unsafe { SYSTEM.dealloc(p, Layout::from_size_align_unchecked(cur, 16)) });
    println!(
        "resize       MappedManager {mm:.1} ns ({:.2}x glibc), {:.1}% in place | glibc realloc {glibc:.1} ns, {:.1}% in place",
        mm / glibc,
        100.0 * (n - moved) as f64 / n as f64,
        100.0 * (n - g_moved) as f64 / n as f64
    );
    Ok(())
}

fn median(mut v: [f64; 3]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[1]
}

/// 1,000,000 blocks of 64 B, then free them all.
fn fill(store: &MappedManager) -> Res {
    fill_once(store, false)?;
    fill_once(store, true)
}

/// 1,000,000 blocks of 64 B allocated, then freed, against glibc. Untouched: nothing is
/// written into the blocks (glibc's allocation writes its chunk headers beside the payloads,
/// so it takes their pages' first faults, which a slot's free pays here: its free-list link is
/// the first write into its payload). Written: the first and last byte of every block are
/// written after its allocation, as a program that allocates to use the block does (and as
/// the churns do).
fn fill_once(store: &MappedManager, written: bool) -> Res {
    const N: usize = 1_000_000;
    // What the heap consumes (blocks, spans with their headers and free slots, parked
    // blocks), not what users hold.
    let before = store.stats()?.heap_bytes;
    let t = Instant::now();
    let blocks: Vec<MemoryBlock> = (0..N)
        .map(|_| {
            let mut b = store.allocate(64)?;
            if written {
                touch(b.as_mut_slice()?.as_mut_ptr(), 64);
            }
            Ok(b)
        })
        .collect::<mmheap::Result<_>>()?;
    let alloc_ns = t.elapsed().as_nanos() as f64 / N as f64;
    let heap_bytes = store.stats()?.heap_bytes - before;
    let t = Instant::now();
    drop(blocks);
    let free_ns = t.elapsed().as_nanos() as f64 / N as f64;
    let l = Layout::from_size_align(64, 16)?;
    let t = Instant::now();
    let ptrs: Vec<*mut u8> = (0..N)
        .map(|_| {
            // SAFETY: non-zero size; each pointer is freed once below with the same layout.
            let p = unsafe { SYSTEM.alloc(l) };
            if written {
                touch(p, 64);
            }
            p
        })
        .collect();
    let glibc_alloc = t.elapsed().as_nanos() as f64 / N as f64;
    let span = ptrs.iter().max().copied().unwrap_or(std::ptr::null_mut()) as usize
        - ptrs.iter().min().copied().unwrap_or(std::ptr::null_mut()) as usize;
    let t = Instant::now();
    // SAFETY: as above.
    ptrs.into_iter().for_each(|p| unsafe { SYSTEM.dealloc(p, l) });
    let glibc_free = t.elapsed().as_nanos() as f64 / N as f64;
    let what = if written { "written  " } else { "untouched" };
    println!(
        "fill 64 B {what} mmheap alloc {alloc_ns:.1} ns, free {free_ns:.1} ns ({:.2}x glibc's free), {:.3} heap bytes per payload byte | glibc alloc {glibc_alloc:.1} ns, free {glibc_free:.1} ns, ~{:.3} (address span / payload)",
        free_ns / glibc_free,
        heap_bytes as f64 / (64 * N) as f64,
        span as f64 / (64 * N) as f64
    );
    Ok(())
}

/// Clone plus drop, against `Arc` (one atomic increment and decrement: the floor for a count
/// that threads share) and an `Rc` around a `MemoryBlock` (a count private to one thread).
fn clone_drop(store: &MappedManager) -> Res {
    const N: u32 = 10_000_000;
    fn per_op<T: Clone>(x: &T) -> f64 {
        let t = Instant::now();
        for _ in 0..N {
            drop(black_box(x.clone()));
        }
        t.elapsed().as_nanos() as f64 / f64::from(N)
    }
    let b = store.allocate(64)?;
    let ns = per_op(&b);
    let arc = per_op(&std::sync::Arc::new([0u8; 64]));
    let rc = per_op(&std::rc::Rc::new(b));
    // What any count that other threads may change costs here: one atomic add and one atomic
    // subtract on an uncontended word (the floor of a clone and a drop).
    let word = std::sync::atomic::AtomicU64::new(1);
    let t = Instant::now();
    for _ in 0..N {
        black_box(&word).fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        black_box(&word).fetch_sub(1, std::sync::atomic::Ordering::Release);
    }
    let rmw = t.elapsed().as_nanos() as f64 / f64::from(N);
    println!(
        "clone+drop   MemoryBlock {ns:.1} ns   (std Arc {arc:.1} ns; Rc<MemoryBlock> {rc:.1} ns; atomic add + sub {rmw:.1} ns)"
    );
    Ok(())
}

/// A store holding 1,000,000 live blocks, closed cleanly; an open finds a root. Both sides run
/// in processes of their own, alternating: a new process per open (what a program starting up
/// pays), and many opens in one process (the store's own cost, without the first-use costs of
/// a new process). Both files are synced first, so that no write-back of the making is in
/// progress (a write to a page under write-back waits for it).
fn reopen() -> Res {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("reopen.mmheap");
    {
        let m = MappedManager::create(&path, &Options::new().max_size(1 << 30))?;
        let index = m.allocate(8)?;
        m.set_root("index", &index)?;
        let ch = m.channel("keep", 1 << 20)?;
        let tx = ch.sender()?;
        for _ in 0..1_000_000 {
            tx.send(m.allocate(64)?).map_err(|e| e.to_string())?;
        }
    }
    let boost = boost_reopen(dir.path())?;
    std::fs::File::open(&path)?.sync_all()?;
    if let Some((_, file)) = &boost {
        std::fs::File::open(file)?.sync_all()?;
    }
    // Each line a child prints is one open's nanoseconds.
    let times = |cmd: &mut std::process::Command| -> Res<Vec<Duration>> {
        let out = cmd.output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().map(|l| Ok(Duration::from_nanos(l.trim().parse()?))).collect()
    };
    let ours = |n: usize| {
        let mut c = std::process::Command::new(std::env::current_exe().expect("exe"));
        c.env("MMHEAP_ALLOC_ROLE", "reopen")
            .env("MMHEAP_ALLOC_STORE", &path)
            .env("MMHEAP_REOPEN_TIMES", n.to_string());
        c
    };
    let theirs = |exe: &std::path::Path, file: &std::path::Path, n: usize| {
        let mut c = std::process::Command::new(exe);
        c.arg("open").arg(file).arg(n.to_string());
        c
    };
    for (what, per_process, processes) in
        [("a new process per open", 1, 21), ("100 opens per process", 100, 4)]
    {
        let (mut us, mut them) = (Vec::new(), Vec::new());
        for _ in 0..processes {
            us.extend(times(&mut ours(per_process))?);
            if let Some((exe, file)) = &boost {
                them.extend(times(&mut theirs(exe, file, per_process))?);
            }
        }
        let (us, them) = (median_of(us), median_of(them));
        match them {
            Some(b) => println!(
                "reopen       1,000,000 live blocks, {what}: open + find root {:?} | Boost.Interprocess managed_mapped_file open + find {b:?} ({:.2}x Boost's time; medians, alternating)",
                us.unwrap_or_default(),
                us.unwrap_or_default().as_secs_f64() / b.as_secs_f64()
            ),
            None => println!(
                "reopen       1,000,000 live blocks, {what}: open + find root {:?} (median; no Boost.Interprocess to compare: apt-get install libboost-dev)",
                us.unwrap_or_default()
            ),
        }
    }
    Ok(())
}

fn median_of(mut v: Vec<Duration>) -> Option<Duration> {
    v.sort();
    v.get(v.len() / 2).copied()
}

/// The child of [`reopen`]: `MMHEAP_REOPEN_TIMES` times opens the store and finds its root,
/// printing the nanoseconds of each (the manager is dropped outside the timed part).
fn reopen_in_child(path: &str) -> Res {
    for _ in 0..env("MMHEAP_REOPEN_TIMES", 1) {
        let t = Instant::now();
        let m = MappedManager::open(path)?;
        let root = m.root("index")?.ok_or("root")?;
        let took = t.elapsed();
        drop((root, m));
        println!("{}", took.as_nanos());
    }
    Ok(())
}

/// Builds benches/boost/reopen.cpp and makes its file of 1,000,000 live blocks in `dir`; `None`
/// when no C++ compiler or no Boost headers are there.
fn boost_reopen(dir: &std::path::Path) -> Res<Option<(std::path::PathBuf, std::path::PathBuf)>> {
    let exe = dir.join("boost-reopen");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/boost/reopen.cpp");
    let built = std::process::Command::new("c++")
        .args(["-O2", "-std=c++17", "-o"])
        .arg(&exe)
        .arg(src)
        .arg("-lpthread")
        .stderr(std::process::Stdio::null())
        .status();
    if !built.is_ok_and(|s| s.success()) {
        return Ok(None);
    }
    let file = dir.join("reopen.boost");
    let made = std::process::Command::new(&exe).arg("create").arg(&file).arg("1000000").status()?;
    Ok(made.success().then_some((exe, file)))
}

/// Two processes churning one store at once, against one alone.
fn two_processes(ops: u64) -> Res {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("two.mmheap");
    let _m = MappedManager::create(&path, &Options::new().max_size(4 << 30))?;
    let ops = 5 * ops; // long enough that starting the processes does not count
    let run = |n: usize, role: &str| -> Res<Duration> {
        let t = Instant::now();
        let kids: Vec<_> = (0..n)
            .map(|_| {
                std::process::Command::new(std::env::current_exe().expect("exe"))
                    .env("MMHEAP_ALLOC_ROLE", role)
                    .env("MMHEAP_ALLOC_STORE", &path)
                    .env("MMHEAP_ALLOC_OPS", ops.to_string())
                    .stdout(std::process::Stdio::null())
                    .spawn()
            })
            .collect::<Result<_, _>>()?;
        for mut k in kids {
            k.wait()?;
        }
        Ok(t.elapsed())
    };
    // Three alternating trials; medians. glibc in two separate processes shows what the
    // machine itself gives two processes.
    for (what, role) in [("mmheap, one store", "small"), ("glibc, for the machine", "glibc")] {
        let (mut ones, mut twos) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            ones.push(run(1, role)?);
            twos.push(run(2, role)?);
        }
        ones.sort();
        twos.sort();
        let (one, two) = (ones[1], twos[1]);
        let speedup = 2.0 * one.as_secs_f64() / two.as_secs_f64();
        println!(
            "two processes small churn ({what}): one alone {one:.2?}, two at once {two:.2?}: aggregate throughput {speedup:.2}x one alone (medians of 3)"
        );
    }
    Ok(())
}
