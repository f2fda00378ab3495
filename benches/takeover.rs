//! Lock takeover: how long after a lock holder is killed a process waiting for the lock has it
//! (and has run the recovery it owes). A child opens the store and stops inside the lock (the
//! `alloc-carved` pause point); the parent starts an allocation that waits for the lock on
//! another thread, lets it wait 1 to 20 ms (so it is asleep, at any point of its naps), kills
//! the child, and measures from just before the kill to the allocation's return.
//!
//!     cargo bench --bench takeover            # MMHEAP_TAKEOVERS rounds (200), MMHEAP_BUSY busy
//!                                             # processes competing for the cores (0)
//!     MMHEAP_TAKEOVER_OF=mutex cargo bench --bench takeover
//!         # the same for the robust lock of a guarded area (`MemoryBlock::lock`): the child
//!         # holds it, the waiter's `lock` returns (told the holder died)
//!
//! This binary is its own child: `MMHEAP_TAKEOVER_ROLE` selects the child's part.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mmheap::{MappedManager, MemoryManager, Options};
use rand::{Rng, SeedableRng};

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn env(k: &str, default: u64) -> u64 {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> Res {
    match std::env::var("MMHEAP_TAKEOVER_ROLE").as_deref() {
        Ok("holder") => {
            let m = MappedManager::open(std::env::var("MMHEAP_TAKEOVER_AT")?)?;
            let _b = m.allocate(300_000)?; // pauses inside the lock
            return Err("the pause point was never reached".into());
        }
        Ok("mutex-holder") => {
            let m = MappedManager::open(std::env::var("MMHEAP_TAKEOVER_AT")?)?;
            let block = m.root("m")?.ok_or("no root")?;
            let _g = block.lock()?.guard();
            println!("paused holding the lock");
            std::thread::sleep(Duration::from_secs(600));
            return Err("never killed".into());
        }
        Ok("busy") => loop {
            std::hint::black_box(0u64);
        },
        _ => {}
    }
    let rounds = env("MMHEAP_TAKEOVERS", 200);
    let busy: Vec<Child> =
        (0..env("MMHEAP_BUSY", 0)).map(|_| spawn("busy", Path::new("")).unwrap()).collect();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("takeover.mmheap");
    let m = MappedManager::create(&path, &Options::new().initial_size(8 << 20).max_size(1 << 30))?;
    let mutex = std::env::var("MMHEAP_TAKEOVER_OF").as_deref() == Ok("mutex");
    m.set_root("m", &m.allocate_guarded(0, 64)?)?;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
    let mut took = Vec::new();
    for _ in 0..rounds {
        let mut child = spawn(if mutex { "mutex-holder" } else { "holder" }, &path)?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().ok_or("stdout")?).read_line(&mut line)?;
        if !line.starts_with("paused") {
            return Err(format!("child said {line:?}").into());
        }
        let waiter = {
            let m = m.clone();
            std::thread::spawn(move || -> mmheap::Result<Instant> {
                if mutex {
                    let block = m.root("m")?.ok_or(mmheap::Error::NotAStore)?;
                    let locked = block.lock()?;
                    let done = Instant::now();
                    assert!(locked.holder_died(), "the waiter is told the holder died");
                    locked.guard().mark_consistent()?;
                    return Ok(done);
                }
                let b = m.allocate(300_000)?;
                let done = Instant::now();
                drop(b);
                Ok(done)
            })
        };
        std::thread::sleep(Duration::from_micros(rng.gen_range(1_000..20_000)));
        let killed = Instant::now();
        child.kill()?;
        let done = waiter.join().map_err(|_| "waiter panicked")??;
        child.wait()?;
        took.push(done.saturating_duration_since(killed));
    }
    for mut b in busy {
        b.kill()?;
        b.wait()?;
    }
    took.sort();
    let at = |q: f64| took[((took.len() - 1) as f64 * q).round() as usize];
    println!(
        "{} takeover, kill to waiter done, {} rounds, {} busy processes: median {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        if mutex { "robust lock" } else { "store lock" },
        took.len(),
        env("MMHEAP_BUSY", 0),
        at(0.5).as_secs_f64() * 1e3,
        at(0.9).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3
    );
    Ok(())
}

fn spawn(role: &str, at: &Path) -> Res<Child> {
    Ok(Command::new(std::env::current_exe()?)
        .env("MMHEAP_TAKEOVER_ROLE", role)
        .env("MMHEAP_TAKEOVER_AT", at)
        .env("MMHEAP_TEST_PAUSE", "alloc-carved")
        .stdout(Stdio::piped())
        .spawn()?)
}
