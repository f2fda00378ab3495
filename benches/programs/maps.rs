//! `maps`: a `BTreeMap<String, u64>` and a `HashMap<String, Vec<u8>>` of 1,000,000 entries each
//! (values of 0..200 bytes) are built, queried 1,000,000 times, about as many hits as misses (each query key a
//! freshly formatted `String`, as parsed input would be), a quarter of the entries removed and
//! the BTreeMap walked in order; then both are dropped.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasherDefault;

use crate::{mix64, scaled, Rng};

/// SipHash with fixed keys: the same table layout in every run.
type Fixed = BuildHasherDefault<DefaultHasher>;

fn key(i: u64) -> String {
    format!("key-{:012x}", mix64(i) >> 16)
}

pub fn run(scale: f64) -> u64 {
    let n = scaled(1_000_000, scale) as u64;
    let mut rng = Rng::new(2);
    let mut tree = BTreeMap::new();
    let mut hash: HashMap<String, Vec<u8>, Fixed> = HashMap::default();
    for i in 0..n {
        tree.insert(key(i), i);
        let len = rng.below(200) as usize;
        hash.insert(key(i), vec![i as u8; len]);
    }
    let mut sum = 0u64;
    for _ in 0..n {
        let k = key(rng.below(2 * n)); // below n: a hit; from n up: (almost always) a miss
        if let Some(v) = tree.get(&k) {
            sum = sum.wrapping_add(*v);
        }
        if let Some(v) = hash.get(&k) {
            sum = sum.wrapping_add(v.len() as u64 + v.first().map_or(0, |&b| b as u64));
        }
    }
    for i in (0..n).step_by(4) {
        let k = key(i);
        tree.remove(&k);
        sum = sum.wrapping_add(hash.remove(&k).map_or(1, |v| v.len() as u64));
    }
    for (i, (k, v)) in tree.iter().enumerate().step_by(97) {
        sum = sum.wrapping_add(mix64(i as u64 ^ v ^ k.len() as u64));
    }
    sum ^ ((tree.len() as u64) << 40) ^ ((hash.len() as u64) << 20)
}
