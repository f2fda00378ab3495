//! `channels`: two producer threads send 10,000,000 messages in all to two consumer threads
//! through a bounded crossbeam channel. Each message is a `Vec<u8>` of 16..2048 bytes (its
//! capacity) allocated by a producer, which writes a 16-byte header and the last byte, and
//! freed by whichever consumer receives it: every block is freed by another thread.

use std::thread;

use crossbeam_channel::bounded;

use crate::{mix64, scaled, Rng};

const PRODUCERS: u64 = 2;
const CONSUMERS: usize = 2;

pub fn run(scale: f64) -> u64 {
    let total = scaled(10_000_000, scale) as u64;
    let (tx, rx) = bounded::<Vec<u8>>(4096);
    thread::scope(|s| {
        for p in 0..PRODUCERS {
            let tx = tx.clone();
            let count = total / PRODUCERS + u64::from(p < total % PRODUCERS);
            s.spawn(move || produce(&tx, p, count));
        }
        drop(tx);
        let consumers: Vec<_> = (0..CONSUMERS)
            .map(|_| {
                let rx = rx.clone();
                s.spawn(move || rx.iter().map(|m| consume(&m)).fold(0, u64::wrapping_add))
            })
            .collect();
        consumers.into_iter().map(|c| c.join().expect("a consumer finished")).fold(0, u64::wrapping_add)
    })
}

fn produce(tx: &crossbeam_channel::Sender<Vec<u8>>, producer: u64, count: u64) {
    let mut rng = Rng::new(10 + producer);
    for i in 0..count {
        let len = rng.range(16, 2049);
        let mut m = Vec::with_capacity(len);
        m.extend_from_slice(&(producer << 40 | i).to_le_bytes());
        m.extend_from_slice(&(len as u64).to_le_bytes());
        if let Some(last) = m.spare_capacity_mut().last_mut() {
            last.write(i as u8);
        }
        tx.send(m).expect("the consumers outlive the producers");
    }
}

/// What a message adds to the checksum: the same whichever consumer gets it, in any order.
fn consume(m: &[u8]) -> u64 {
    let seq = u64::from_le_bytes(m[..8].try_into().expect("a header"));
    let len = u64::from_le_bytes(m[8..16].try_into().expect("a header"));
    mix64(seq ^ len << 48)
}
