//! Small-allocation churn: random allocate/free with sizes uniform in 16..=512 bytes and a
//! live set capped at 10,000 blocks, touching the first and last byte of every block. The same
//! seeded sequence runs against glibc malloc (Rust's `System`), `DefaultManager` and
//! `MappedManager`, so the ratios in one run compare like with like.
//!
//!     cargo bench --bench churn

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mmheap::{DefaultManager, MappedManager, MemoryBlock, MemoryManager, Options};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const LIVE_CAP: usize = 10_000;
const OPS: u64 = 10_000;

/// One step of the workload: allocate (size from the generator) or free a random live block.
fn step<T>(
    rng: &mut SmallRng,
    live: &mut Vec<T>,
    alloc: &mut impl FnMut(usize) -> T,
    free: &mut impl FnMut(T),
) {
    if live.len() < LIVE_CAP && (live.len() < LIVE_CAP / 2 || rng.gen_bool(0.5)) {
        live.push(alloc(rng.gen_range(16..=512)));
    } else {
        let i = rng.gen_range(0..live.len());
        free(live.swap_remove(i));
    }
}

fn touch(p: *mut u8, len: usize) {
    // SAFETY: callers pass a live allocation of `len >= 1` bytes that they own.
    unsafe {
        p.write_volatile(1);
        p.add(len - 1).write_volatile(1);
    }
}

fn churn_mmheap<M: MemoryManager>(c: &mut Criterion, name: &str, m: &M) {
    let mut rng = SmallRng::seed_from_u64(42);
    let mut live: Vec<MemoryBlock> = Vec::with_capacity(LIVE_CAP);
    let mut alloc = |n: usize| {
        let mut b = m.allocate(n).expect("allocate");
        let s = b.as_mut_slice().expect("sole owner");
        touch(s.as_mut_ptr(), n);
        b
    };
    let mut free = |b: MemoryBlock| drop(black_box(b));
    let mut g = c.benchmark_group("small_churn");
    g.throughput(Throughput::Elements(OPS));
    g.bench_function(name, |bench| {
        bench.iter(|| {
            for _ in 0..OPS {
                step(&mut rng, &mut live, &mut alloc, &mut free);
            }
        })
    });
    g.finish();
}

fn churn_system(c: &mut Criterion) {
    let mut rng = SmallRng::seed_from_u64(42);
    let mut live: Vec<(*mut u8, Layout)> = Vec::with_capacity(LIVE_CAP);
    let mut alloc = |n: usize| {
        let layout = Layout::from_size_align(n, 16).expect("layout");
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { System.alloc(layout) };
        assert!(!p.is_null());
        touch(p, n);
        (p, layout)
    };
    // SAFETY: every pointer came from `System.alloc` with this layout and is freed once.
    let mut free = |(p, l): (*mut u8, Layout)| unsafe { System.dealloc(p, l) };
    let mut g = c.benchmark_group("small_churn");
    g.throughput(Throughput::Elements(OPS));
    g.bench_function("glibc_malloc", |bench| {
        bench.iter(|| {
            for _ in 0..OPS {
                step(&mut rng, &mut live, &mut alloc, &mut free);
            }
        })
    });
    g.finish();
    for (p, l) in live {
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) };
    }
}

fn benches(c: &mut Criterion) {
    churn_system(c);
    churn_mmheap(c, "default_manager", &DefaultManager::new().expect("default manager"));
    let store = MappedManager::temporary(&Options::new().max_size(1 << 30)).expect("store");
    churn_mmheap(c, "mapped_manager", &store);
}

criterion_group!(churn, benches);
criterion_main!(churn);
