//! IPC between two processes: mmheap channels against a Unix domain socket, in one run.
//!
//! - latency: 64-byte ping-pong, so that each message finds its receiver waiting (blocked in
//!   `recv` / `read`). The replying side stamps the reply with `CLOCK_MONOTONIC` (one clock for
//!   all processes) just before `send` / `write`; the other takes the difference as soon as
//!   `recv` / `read` returns: the one-way latency of the transport. Median of many.
//! - throughput: a stream of 1 MiB messages from a child to the parent. With mmheap the child
//!   allocates a block, touches its first and last byte and sends its reference; the parent
//!   touches the same two bytes and drops it. With the socket the child writes a prefilled
//!   1 MiB buffer and the parent reads it whole (the payload is copied twice in the kernel).
//!
//! - handover: a producer process allocates blocks of 64 B to 4 KiB, writes their first and last
//!   byte and sends them; the consumer (the parent) reads the two bytes and drops each block, so
//!   every block is freed by the process that did not allocate it: the store's normal case in
//!   IPC. Against one process doing both, through a channel to itself (same work, no second
//!   process) and without a channel (allocate, write, read, drop, in the same batches).
//!
//!   `MMHEAP_IPC_PIN=1` pins the handover's consumer to the last CPU and its producer to the
//!   first (one process doing both runs on the last CPU too), so that every run measures the
//!   same placement: left to the scheduler, two processes sometimes share a core and a run
//!   falls to half the rate. Pinned runs suffer more from other load on the machine.
//!
//!   cargo bench --bench ipc                   # MMHEAP_IPC_ROUNDS, MMHEAP_IPC_MESSAGES adjust
//!   MMHEAP_IPC_ONLY=handover cargo bench --bench ipc
//!
//! This binary is its own child: `MMHEAP_IPC_ROLE` selects the child's part.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use mmheap::{MappedManager, MemoryManager, Options, RecvError};

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

const MIB: usize = 1 << 20;

fn env(k: &str, default: usize) -> usize {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> Res {
    if let Ok(role) = std::env::var("MMHEAP_IPC_ROLE") {
        let at = std::env::var("MMHEAP_IPC_AT")?;
        return child(&role, Path::new(&at));
    }
    let rounds = env("MMHEAP_IPC_ROUNDS", 20_000);
    let messages = env("MMHEAP_IPC_MESSAGES", 10_000);
    let dir = tempfile::tempdir()?;
    let trials = env("MMHEAP_IPC_TRIALS", 3);
    println!("IPC between two processes: {trials} alternating trials of {rounds} round trips of 64 B and {messages} messages of 1 MiB; medians");
    let only = std::env::var("MMHEAP_IPC_ONLY").unwrap_or_default();
    if only.is_empty() || only == "handover" {
        handover(dir.path(), trials, env("MMHEAP_IPC_HANDOVERS", 400_000))?;
    }
    if only == "handover" {
        return Ok(());
    }
    let (mut lat, mut tp) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
    for _ in 0..trials {
        lat.0.push(mmheap_latency(dir.path(), rounds)?.as_nanos() as f64);
        lat.1.push(uds_latency(dir.path(), rounds)?.as_nanos() as f64);
        tp.0.push(mmheap_throughput(dir.path(), messages)?);
        tp.1.push(uds_throughput(dir.path(), messages)?);
    }
    let mid = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (ml, ul, mt, ut) = (mid(lat.0), mid(lat.1), mid(tp.0), mid(tp.1));
    println!(
        "one-way latency, median:   mmheap {:>8.2} µs   unix socket {:>8.2} µs   ratio {:.1}x",
        ml / 1e3,
        ul / 1e3,
        ul / ml
    );
    println!(
        "1 MiB messages per second: mmheap {:>8.0}      unix socket {:>8.0}      ratio {:.1}x",
        mt,
        ut,
        mt / ut
    );
    Ok(())
}

/// `CLOCK_MONOTONIC` in nanoseconds: comparable between processes.
fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec, which lives on our stack for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Runs the calling thread (and the threads and processes it starts after) on CPU `cpu` only,
/// or on every CPU for `None`. Nothing happens when the handover is not pinned.
fn pin(cpu: Option<usize>) -> Res {
    if env("MMHEAP_IPC_PIN", 0) == 0 {
        return Ok(());
    }
    // SAFETY: a cpu_set_t is plain data, all zero is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let cpus = std::thread::available_parallelism()?.get();
    for c in 0..cpus {
        if cpu.is_none_or(|only| only == c) {
            // SAFETY: `c` is below the number of CPUs, well inside the set.
            unsafe { libc::CPU_SET(c, &mut set) };
        }
    }
    // SAFETY: the set lives on our stack for the call; 0 names the calling thread.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// The CPUs the handover's consumer and producer run on.
fn handover_cpus() -> Res<(usize, usize)> {
    let cpus = std::thread::available_parallelism()?.get();
    Ok((cpus - 1, 0))
}

fn spawn(role: &str, at: &Path, extra: &[(&str, String)]) -> Res<Child> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env("MMHEAP_IPC_ROLE", role).env("MMHEAP_IPC_AT", at);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    Ok(cmd.spawn()?)
}

fn child(role: &str, at: &Path) -> Res {
    match role {
        "mm-echo" => {
            let store = MappedManager::open(at)?;
            let (rx, tx) = (store.channel("ping", 4)?.receiver()?, store.channel("pong", 4)?.sender()?);
            loop {
                let ping = match rx.recv() {
                    Ok(b) => b,
                    Err(RecvError::Disconnected) => return Ok(()),
                    Err(e) => return Err(e.into()),
                };
                let mut pong = store.allocate(64)?;
                pong.as_mut_slice()?[0] = ping.as_slice()[0];
                drop(ping);
                pong.as_mut_slice()?[8..16].copy_from_slice(&now_ns().to_le_bytes());
                tx.send(pong)?;
            }
        }
        "uds-echo" => {
            let mut s = UnixStream::connect(at)?;
            let mut buf = [0u8; 64];
            while s.read_exact(&mut buf).is_ok() {
                buf[8..16].copy_from_slice(&now_ns().to_le_bytes());
                s.write_all(&buf)?;
            }
            Ok(())
        }
        "mm-stream" => {
            let store = MappedManager::open(at)?;
            let tx = store.channel("stream", 64)?.sender()?;
            for i in 0..env("MMHEAP_IPC_MESSAGES", 2_000) {
                let mut b = store.allocate(MIB)?;
                let s = b.as_mut_slice()?;
                s[0] = i as u8;
                s[MIB - 1] = i as u8;
                tx.send(b)?;
            }
            Ok(())
        }
        "mm-produce" => {
            pin(Some(handover_cpus()?.1))?;
            let store = MappedManager::open(at)?;
            let tx = store.channel("handover", HANDOVER_CAPACITY)?.sender()?;
            for i in 0..env("MMHEAP_IPC_HANDOVERS", 1_000) {
                tx.send(produce(&store, i)?)?;
            }
            Ok(())
        }
        "uds-stream" => {
            let mut s = UnixStream::connect(at)?;
            let buf = vec![7u8; MIB];
            for _ in 0..env("MMHEAP_IPC_MESSAGES", 2_000) {
                s.write_all(&buf)?;
            }
            Ok(())
        }
        _ => Err(format!("unknown role {role}").into()),
    }
}

fn median(mut v: Vec<u64>) -> Duration {
    v.sort_unstable();
    Duration::from_nanos(v[v.len() / 2])
}

fn stamp_of(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[8..16].try_into().expect("8 bytes"))
}

fn mmheap_latency(dir: &Path, rounds: usize) -> Res<Duration> {
    let path = dir.join("latency.mmheap");
    let _ = std::fs::remove_file(&path); // from an earlier trial
    let store = MappedManager::create(&path, &Options::new().max_size(1 << 30))?;
    let (tx, rx) = (store.channel("ping", 4)?.sender()?, store.channel("pong", 4)?.receiver()?);
    let mut kid = spawn("mm-echo", &path, &[])?;
    let mut one_way = Vec::with_capacity(rounds);
    for i in 0..rounds + 1000 {
        let mut ping = store.allocate(64)?;
        ping.as_mut_slice()?[0] = i as u8;
        tx.send(ping)?;
        let pong = rx.recv()?;
        let arrived = now_ns();
        if i >= 1000 {
            one_way.push(arrived - stamp_of(pong.as_slice()));
        }
        assert_eq!(pong.as_slice()[0], i as u8);
    }
    drop(tx);
    kid.wait()?;
    Ok(median(one_way))
}

fn uds_latency(dir: &Path, rounds: usize) -> Res<Duration> {
    let path = dir.join("latency.sock");
    let _ = std::fs::remove_file(&path); // from an earlier trial
    let listener = UnixListener::bind(&path)?;
    let mut kid = spawn("uds-echo", &path, &[])?;
    let (mut s, _) = listener.accept()?;
    let mut buf = [0u8; 64];
    let mut one_way = Vec::with_capacity(rounds);
    for i in 0..rounds + 1000 {
        buf[0] = i as u8;
        s.write_all(&buf)?;
        s.read_exact(&mut buf)?;
        let arrived = now_ns();
        if i >= 1000 {
            one_way.push(arrived - stamp_of(&buf));
        }
        assert_eq!(buf[0], i as u8);
    }
    drop(s);
    kid.wait()?;
    Ok(median(one_way))
}

fn mmheap_throughput(dir: &Path, messages: usize) -> Res<f64> {
    let path = dir.join("stream.mmheap");
    let _ = std::fs::remove_file(&path); // from an earlier trial
    let store = MappedManager::create(&path, &Options::new().initial_size(64 << 20).max_size(1 << 30))?;
    let rx = store.channel("stream", 64)?.receiver()?;
    let mut kid = spawn("mm-stream", &path, &[("MMHEAP_IPC_MESSAGES", messages.to_string())])?;
    let first = rx.recv()?; // start timing once the child is up
    let t = Instant::now();
    drop(first);
    for _ in 1..messages {
        let b = rx.recv()?;
        let s = b.as_slice();
        std::hint::black_box((s[0], s[MIB - 1]));
    }
    let rate = (messages - 1) as f64 / t.elapsed().as_secs_f64();
    kid.wait()?;
    Ok(rate)
}

fn uds_throughput(dir: &Path, messages: usize) -> Res<f64> {
    let path = dir.join("stream.sock");
    let _ = std::fs::remove_file(&path); // from an earlier trial
    let listener = UnixListener::bind(&path)?;
    let mut kid = spawn("uds-stream", &path, &[("MMHEAP_IPC_MESSAGES", messages.to_string())])?;
    let (mut s, _) = listener.accept()?;
    let mut buf = vec![0u8; MIB];
    s.read_exact(&mut buf)?;
    let t = Instant::now();
    for _ in 1..messages {
        s.read_exact(&mut buf)?;
        std::hint::black_box((buf[0], buf[MIB - 1]));
    }
    let rate = (messages - 1) as f64 / t.elapsed().as_secs_f64();
    kid.wait()?;
    Ok(rate)
}

/// The handover's channel capacity, and the batch of the one-process runs (half of it).
const HANDOVER_CAPACITY: usize = 64;

/// The size of the handover's `i`th block: 64 B..=4 KiB, spread evenly (the same sequence in
/// every run and process).
fn handover_size(i: usize) -> usize {
    let x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    64 + (x % (4096 - 64 + 1)) as usize
}

/// The handover's `i`th block, allocated and written (first and last byte).
fn produce(store: &MappedManager, i: usize) -> Res<mmheap::MemoryBlock> {
    let len = handover_size(i);
    let mut b = store.allocate(len)?;
    let s = b.as_mut_slice()?;
    s[0] = i as u8;
    s[len - 1] = i as u8;
    Ok(b)
}

/// Reads what `produce` wrote into block `i` and drops (frees) it.
fn consume(b: mmheap::MemoryBlock, i: usize) -> Res {
    let s = b.as_slice();
    if s.len() != handover_size(i) || s[0] != i as u8 || s[s.len() - 1] != i as u8 {
        return Err(format!("handover block {i} is not what was sent").into());
    }
    Ok(())
}

/// Blocks per second from a producer process to a consumer process, and in one process doing
/// both (through a channel to itself, and without one); medians of `trials` alternating runs.
fn handover(dir: &Path, trials: usize, n: usize) -> Res {
    let (mut two, mut chan, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    pin(Some(handover_cpus()?.0))?;
    for t in 0..trials {
        let path = dir.join(format!("handover-{t}.mmheap"));
        let store = MappedManager::create(&path, &Options::new().initial_size(64 << 20).max_size(1 << 30))?;
        two.push(handover_two(&store, &path, n)?);
        chan.push(handover_one(&store, n, true)?);
        plain.push(handover_one(&store, n, false)?);
        drop(store);
        std::fs::remove_file(&path)?;
    }
    let mid = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    pin(None)?;
    let (two, chan, plain) = (mid(two), mid(chan), mid(plain));
    println!(
        "handover of 64 B-4 KiB blocks, blocks per second: producer and consumer processes {two:>9.0} | one process through a channel {chan:>9.0} ({:.2}x) | one process, no channel {plain:>9.0} ({:.2}x)",
        two / chan,
        two / plain
    );
    Ok(())
}

fn handover_two(store: &MappedManager, path: &Path, n: usize) -> Res<f64> {
    let rx = store.channel("handover", HANDOVER_CAPACITY)?.receiver()?;
    let mut kid = spawn("mm-produce", path, &[("MMHEAP_IPC_HANDOVERS", n.to_string())])?;
    consume(rx.recv()?, 0)?; // start timing once the producer is up
    let t = Instant::now();
    for i in 1..n {
        consume(rx.recv()?, i)?;
    }
    let rate = (n - 1) as f64 / t.elapsed().as_secs_f64();
    if !kid.wait()?.success() {
        return Err("the producer failed".into());
    }
    Ok(rate)
}

fn handover_one(store: &MappedManager, n: usize, through_channel: bool) -> Res<f64> {
    let ch = store.channel("handover-self", HANDOVER_CAPACITY)?;
    let (tx, rx) = (ch.sender()?, ch.receiver()?);
    let batch = HANDOVER_CAPACITY / 2;
    let mut held = std::collections::VecDeque::with_capacity(batch);
    let t = Instant::now();
    for start in (0..n).step_by(batch) {
        let end = (start + batch).min(n);
        for i in start..end {
            let b = produce(store, i)?;
            match through_channel {
                true => tx.send(b)?,
                false => held.push_back(b),
            }
        }
        for i in start..end {
            let b = match through_channel {
                true => rx.recv()?,
                false => held.pop_front().ok_or("nothing held")?,
            };
            consume(b, i)?;
        }
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}
