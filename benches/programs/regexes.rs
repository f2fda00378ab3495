//! `regex`: ~20 MB of log lines are scanned with `captures_iter` (a `String` key per match
//! counted in a `HashMap`), rewritten twice with `replace_all` and a closure that builds a
//! `String` per match, and split into owned fields; then everything is dropped.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::fmt::Write;
use std::hash::BuildHasherDefault;

use regex::{Captures, Regex};

use crate::{hash_bytes, scaled, Rng};

const NAMES: [&str; 12] = [
    "ada", "alan", "grace", "linus", "ken", "dennis", "barbara", "edsger", "donald", "radia", "niklaus",
    "frances",
];
const LEVELS: [&str; 4] = ["INFO", "WARN", "ERROR", "DEBUG"];
const DOMAINS: [&str; 6] = ["alpha", "beta", "gamma", "delta", "omega", "sigma"];
const WORDS: [&str; 10] =
    ["request", "served", "cache", "miss", "retry", "timeout", "queue", "flush", "ok", "slow"];

pub fn run(scale: f64) -> u64 {
    let text = generate(scaled(20 << 20, scale));
    let line = Regex::new(
        r"(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2}) (?P<level>[A-Z]+) user=(?P<first>[a-z]+)\.(?P<last>[a-z]+)@(?P<dom>[a-z]+)\.example",
    )
    .expect("a valid pattern");
    let mut counts: HashMap<String, u64, BuildHasherDefault<DefaultHasher>> = HashMap::default();
    let mut years = 0u64;
    for c in line.captures_iter(&text) {
        *counts.entry(format!("{}:{}:{}", &c["level"], &c["dom"], &c["m"])).or_default() += 1;
        years += c["y"].parse::<u64>().unwrap_or(0);
    }
    let email = Regex::new(r"([a-z]+)\.([a-z]+)@([a-z]+)\.example").expect("a valid pattern");
    let renamed =
        email.replace_all(&text, |c: &Captures| format!("{}_{}@{}.test", &c[2], c[1].to_uppercase(), &c[3]));
    let took = Regex::new(r"took=(\d+)ms").expect("a valid pattern");
    let micros = took
        .replace_all(&renamed, |c: &Captures| format!("took={}us", c[1].parse::<u64>().unwrap_or(0) * 1000));
    let fields: Vec<String> = micros.split(' ').filter(|f| f.contains('=')).map(str::to_owned).collect();
    let by_key =
        counts.iter().map(|(k, v)| hash_bytes(k.as_bytes()).wrapping_mul(*v)).fold(0, u64::wrapping_add);
    hash_bytes(micros.as_bytes()) ^ by_key ^ years ^ (fields.len() as u64).rotate_left(48)
}

/// Log lines until `bytes` bytes: date, level, user's address, ip, duration and a message.
fn generate(bytes: usize) -> String {
    let mut rng = Rng::new(3);
    let mut s = String::with_capacity(bytes + 256);
    while s.len() < bytes {
        let pick = |rng: &mut Rng, of: &[&'static str]| of[rng.below(of.len() as u64) as usize];
        let _ = write!(
            s,
            "{}-{:02}-{:02} {} user={}.{}@{}.example ip=10.{}.{}.{} took={}ms msg=\"",
            2015 + rng.below(10),
            1 + rng.below(12),
            1 + rng.below(28),
            pick(&mut rng, &LEVELS),
            pick(&mut rng, &NAMES),
            pick(&mut rng, &NAMES),
            pick(&mut rng, &DOMAINS),
            rng.below(256),
            rng.below(256),
            rng.below(256),
            rng.below(5000),
        );
        for i in 0..1 + rng.below(8) {
            s.push_str(if i > 0 { " " } else { "" });
            s.push_str(pick(&mut rng, &WORDS));
        }
        s.push_str("\"\n");
    }
    s
}
