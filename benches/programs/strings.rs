//! `strings`: 12,000,000 small `String`s (8..40 bytes) are made in batches of 1,000,000; half
//! of each batch is dropped (every other one), as many again are made, then the batch is
//! dropped. Then 600 buffers of 1 MiB are allocated zeroed, written on every page, summed and
//! dropped, the last 8 kept alive at any time.

use std::collections::VecDeque;

use crate::{scaled, Rng};

const TEXT: &str = "the quick brown fox jumps over the lazy dog while five boxing wizards jump quickly";

fn small(rng: &mut Rng) -> String {
    let len = rng.range(8, 41);
    if rng.below(2) == 0 {
        let at = rng.below((TEXT.len() - len) as u64) as usize;
        TEXT[at..at + len].to_string()
    } else {
        let mut s = format!("item-{}-", rng.below(1 << 30));
        s.truncate(len);
        while s.len() < len {
            s.push('x');
        }
        s
    }
}

pub fn run(scale: f64) -> u64 {
    let mut rng = Rng::new(5);
    let mut sum = 0u64;
    let mut left = scaled(12_000_000, scale);
    while left > 0 {
        let k = left.min(1_000_000);
        let mut batch: Vec<String> = (0..k).map(|_| small(&mut rng)).collect();
        let mut keep = false;
        batch.retain(|_| {
            keep = !keep;
            keep
        });
        batch.extend((0..k / 2).map(|_| small(&mut rng)));
        sum += batch.iter().map(|s| s.len() as u64 + s.as_bytes()[s.len() / 2] as u64).sum::<u64>();
        left -= k;
    }
    let mut live = VecDeque::new();
    for i in 0..scaled(600, scale) {
        let mut buf = vec![0u8; 1 << 20];
        for (p, b) in buf.iter_mut().step_by(4096).enumerate() {
            *b = (i + p) as u8;
        }
        sum += buf.iter().step_by(4096).map(|&b| b as u64).sum::<u64>();
        live.push_back(buf);
        if live.len() > 8 {
            live.pop_front();
        }
    }
    sum
}
