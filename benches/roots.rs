//! Named roots at scale: a store with MMHEAP_ROOTS roots (1,000,000), then the time of a lookup
//! by name (`root`), and of opening the store again and finding one root (`open` + `root`), in
//! microseconds, beside the same with 100 roots.
//!
//!     cargo bench --bench roots

use std::time::{Duration, Instant};

use mmheap::{MappedManager, MemoryManager, Options};
use rand::{Rng, SeedableRng};

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res {
    let big = std::env::var("MMHEAP_ROOTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000u64);
    for n in [100, big] {
        measure(n)?;
    }
    Ok(())
}

fn name(i: u64) -> String {
    format!("users/{i:08}/profile")
}

fn measure(n: u64) -> Res {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("roots.mmheap");
    let m = MappedManager::create(&path, &Options::new().initial_size(64 << 20).max_size(8 << 30))?;
    let started = Instant::now();
    for i in 0..n {
        let mut b = m.allocate(8)?;
        b.as_mut_slice()?.copy_from_slice(&i.to_le_bytes());
        m.set_root(&name(i), &b)?;
    }
    let fill = started.elapsed();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(n);
    let lookups = 100_000;
    let mut took = Vec::with_capacity(lookups);
    for _ in 0..lookups {
        let i = rng.gen_range(0..n);
        let t = Instant::now();
        let b = m.root(&name(i))?.ok_or("missing root")?;
        took.push(t.elapsed());
        assert_eq!(b.as_slice(), i.to_le_bytes());
    }
    m.flush()?;
    drop(m);
    let mut reopen = Vec::new();
    for _ in 0..50 {
        let i = rng.gen_range(0..n);
        let t = Instant::now();
        let m = MappedManager::open(&path)?;
        let b = m.root(&name(i))?.ok_or("missing root")?;
        reopen.push(t.elapsed());
        assert_eq!(b.as_slice(), i.to_le_bytes());
    }
    println!(
        "{n} roots (set in {:.2} s, {:.2} us each): lookup median {:.2} us, p99 {:.2} us; open + find median {:.1} us, p90 {:.1} us",
        fill.as_secs_f64(),
        fill.as_secs_f64() * 1e6 / n as f64,
        us(quantile(&mut took, 0.5)),
        us(quantile(&mut took, 0.99)),
        us(quantile(&mut reopen, 0.5)),
        us(quantile(&mut reopen, 0.9)),
    );
    Ok(())
}

fn quantile(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
