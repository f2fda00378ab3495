//! `rayon`: on a pool of 4 threads, 10,000,000 `String`s (8..32 letters) are made in parallel,
//! sorted with `par_sort`, and folded in parallel into per-job `HashMap<String, u64>`s (one
//! new `String` key per item) and `Vec<u32>`s, reduced pairwise; then everything is dropped.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use rayon::prelude::*;

use crate::{hash_bytes, mix64, scaled};

type Counts = HashMap<String, u64, BuildHasherDefault<DefaultHasher>>;

fn word(i: u64) -> String {
    let mut h = mix64(i);
    let len = 8 + (h % 25) as usize;
    (0..len)
        .map(|k| {
            if k % 12 == 11 {
                h = mix64(h);
            }
            (b'a' + ((h >> ((k % 12) * 5)) % 26) as u8) as char
        })
        .collect()
}

pub fn run(scale: f64) -> u64 {
    let n = scaled(10_000_000, scale) as u64;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(4).build().expect("a pool of 4 threads");
    pool.install(|| {
        let mut words: Vec<String> = (0..n).into_par_iter().map(word).collect();
        words.par_sort();
        let sample = words.iter().step_by(1009).fold(0, |h, w| mix64(h ^ hash_bytes(w.as_bytes())));
        let (counts, lens) = words
            .par_iter()
            .fold(
                || (Counts::default(), Vec::new()),
                |(mut counts, mut lens), w| {
                    *counts.entry(w[..3].to_string()).or_default() += w.len() as u64;
                    lens.push(w.len() as u32);
                    (counts, lens)
                },
            )
            .reduce(|| (Counts::default(), Vec::new()), merge);
        let by_prefix =
            counts.iter().map(|(k, v)| hash_bytes(k.as_bytes()).wrapping_mul(*v)).fold(0, u64::wrapping_add);
        let total: u64 = lens.iter().map(|&l| l as u64).sum();
        sample ^ by_prefix ^ total.rotate_left(32) ^ counts.len() as u64
    })
}

fn merge(a: (Counts, Vec<u32>), b: (Counts, Vec<u32>)) -> (Counts, Vec<u32>) {
    let ((mut big, mut lens), (small, more)) = if a.0.len() >= b.0.len() { (a, b) } else { (b, a) };
    for (k, v) in small {
        *big.entry(k).or_default() += v;
    }
    lens.extend(more);
    (big, lens)
}
