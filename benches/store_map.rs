//! The store's hash map against what a user would pick instead, same run: `SharedMap<u64, u64>`
//! in a store file, `std::collections::HashMap` in process, and redb (an embedded, crash-safe
//! key-value store) on a file. Insert N keys, get them all (random order), iterate, flush (a
//! store `flush`, a redb commit), and reopen (open the file, find the map, one get).
//! Milliseconds for each step, medians of interleaved trials; MMHEAP_MAP_KEYS sets N (100,000).
//!
//!     cargo bench --bench store_map

use std::collections::HashMap;
use std::time::Instant;

use mmheap::{MappedManager, Options, SharedMap};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

const TABLE: TableDefinition<u64, u64> = TableDefinition::new("map");

/// Milliseconds of each step: insert, get, iterate, flush, reopen.
type Steps = [f64; 5];

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn mmheap_map(dir: &std::path::Path, keys: &[u64], order: &[u64]) -> Res<Steps> {
    let path = dir.join("m.mmheap");
    let _ = std::fs::remove_file(&path);
    let store = MappedManager::create(&path, &Options::new().max_size(8 << 30))?;
    let map = SharedMap::<u64, u64>::new_in(&store)?;
    store.set_root("map", map.block())?;
    let t = Instant::now();
    for &k in keys {
        map.insert(&k, &(k ^ 1))?;
    }
    let insert = ms(t);
    let t = Instant::now();
    for k in order {
        assert_eq!(map.get(k)?, Some(k ^ 1));
    }
    let get = ms(t);
    let t = Instant::now();
    let sum: u64 = map.entries()?.iter().map(|(k, v)| k ^ v).sum();
    assert_eq!(sum, keys.len() as u64);
    let iterate = ms(t);
    let t = Instant::now();
    store.flush()?;
    let flush = ms(t);
    drop((map, store));
    let t = Instant::now();
    let store = MappedManager::open(&path)?;
    let map = SharedMap::<u64, u64>::open(store.root("map")?.ok_or("root")?)?;
    assert_eq!(map.get(&keys[0])?, Some(keys[0] ^ 1));
    Ok([insert, get, iterate, flush, ms(t)])
}

fn std_map(keys: &[u64], order: &[u64]) -> Steps {
    let t = Instant::now();
    let mut map = HashMap::new();
    for &k in keys {
        map.insert(k, k ^ 1);
    }
    let insert = ms(t);
    let t = Instant::now();
    for k in order {
        assert_eq!(map.get(k), Some(&(k ^ 1)));
    }
    let get = ms(t);
    let t = Instant::now();
    let sum: u64 = map.iter().map(|(k, v)| k ^ v).sum();
    assert_eq!(sum, keys.len() as u64);
    [insert, get, ms(t), 0.0, 0.0]
}

fn redb_map(dir: &std::path::Path, keys: &[u64], order: &[u64]) -> Res<Steps> {
    let path = dir.join("m.redb");
    let _ = std::fs::remove_file(&path);
    let db = redb::Database::create(&path)?;
    let t = Instant::now();
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(TABLE)?;
        for &k in keys {
            table.insert(k, k ^ 1)?;
        }
    }
    let insert = ms(t);
    let t = Instant::now();
    txn.commit()?;
    let flush = ms(t);
    let t = Instant::now();
    let read = db.begin_read()?;
    let table = read.open_table(TABLE)?;
    for &k in order {
        assert_eq!(table.get(k)?.map(|v| v.value()), Some(k ^ 1));
    }
    let get = ms(t);
    let t = Instant::now();
    let mut sum = 0;
    for entry in table.iter()? {
        let (k, v) = entry?;
        sum += k.value() ^ v.value();
    }
    assert_eq!(sum, keys.len() as u64);
    let iterate = ms(t);
    drop((table, read, db));
    let t = Instant::now();
    let db = redb::Database::open(&path)?;
    let read = db.begin_read()?;
    assert_eq!(read.open_table(TABLE)?.get(keys[0])?.map(|v| v.value()), Some(keys[0] ^ 1));
    Ok([insert, get, iterate, flush, ms(t)])
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Res {
    let n = std::env::var("MMHEAP_MAP_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000u64);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
    let keys: Vec<u64> = (0..n).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).collect();
    let mut order = keys.clone();
    order.shuffle(&mut rng);
    let dir = tempfile::tempdir()?;
    let mut runs: [Vec<Steps>; 3] = [vec![], vec![], vec![]];
    for _ in 0..5 {
        runs[0].push(mmheap_map(dir.path(), &keys, &order)?);
        runs[1].push(std_map(&keys, &order));
        runs[2].push(redb_map(dir.path(), &keys, &order)?);
    }
    let med = |r: &Vec<Steps>, i: usize| median(r.iter().map(|s| s[i]).collect());
    println!("{n} u64 -> u64 entries, ms (medians of 5 interleaved trials)");
    println!("| step | SharedMap (store) | std HashMap | redb | SharedMap / HashMap | SharedMap / redb |");
    println!("|---|---|---|---|---|---|");
    for (i, step) in ["insert all", "get all", "iterate", "flush / commit", "reopen + get"].iter().enumerate()
    {
        let (m, s, r) = (med(&runs[0], i), med(&runs[1], i), med(&runs[2], i));
        let vs_std = if s > 0.0 { format!("{:.1}x", m / s) } else { "-".into() };
        println!("| {step} | {m:.2} | {s:.2} | {r:.2} | {vs_std} | {:.2}x |", m / r);
    }
    Ok(())
}
