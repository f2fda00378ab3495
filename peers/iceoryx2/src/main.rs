//! 64-byte one-way latency between two processes, mmheap channels against iceoryx2
//! publish-subscribe, in one run, by the method of `benches/ipc.rs`: ping-pong, the replying side
//! stamps `CLOCK_MONOTONIC` into the reply just before sending, the other takes the difference
//! when it has it. Both sides wait by polling (iceoryx2's subscriber has no blocking receive;
//! mmheap's `recv` spins before it would sleep). Median of alternating trials.
//!
//!     cargo run --release --manifest-path peers/iceoryx2/Cargo.toml

use std::process::Command;

use iceoryx2::prelude::*;
use mmheap::{MappedManager, MemoryManager, Options};

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;
type Msg = [u64; 8]; // 64 bytes
const STOP: u64 = u64::MAX;

fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec, which lives on our stack for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn median(mut v: Vec<u64>) -> f64 {
    v.sort_unstable();
    v[v.len() / 2] as f64
}

fn main() -> Res {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "ice-echo" {
        return ice_echo(&args[2]);
    }
    if args.len() == 3 && args[1] == "mm-echo" {
        return mm_echo(&args[2]);
    }
    let rounds = 20_000;
    let (mut mm, mut ice) = (Vec::new(), Vec::new());
    for trial in 0..3 {
        mm.push(mm_latency(rounds)?);
        ice.push(ice_latency(rounds, trial)?);
    }
    let mid = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (m, i) = (mid(mm), mid(ice));
    println!("64 B one-way latency, median of 3 trials x {rounds} round trips:");
    println!(
        "  mmheap channel {:.2} µs   iceoryx2 publish-subscribe {:.2} µs   ratio (iceoryx2 / mmheap) {:.2}",
        m / 1e3,
        i / 1e3,
        i / m
    );
    Ok(())
}

fn service_names(tag: &str) -> (ServiceName, ServiceName) {
    let ping = format!("mmheap-bench/{tag}/ping").as_str().try_into().expect("service name");
    let pong = format!("mmheap-bench/{tag}/pong").as_str().try_into().expect("service name");
    (ping, pong)
}

fn ice_latency(rounds: usize, trial: usize) -> Res<f64> {
    let tag = format!("{}-{trial}", std::process::id());
    let node = NodeBuilder::new().create::<ipc::Service>()?;
    let (ping_name, pong_name) = service_names(&tag);
    let ping = node.service_builder(&ping_name).publish_subscribe::<Msg>().open_or_create()?;
    let pong = node.service_builder(&pong_name).publish_subscribe::<Msg>().open_or_create()?;
    let publisher = ping.publisher_builder().create()?;
    let subscriber = pong.subscriber_builder().create()?;
    let mut kid = Command::new(std::env::current_exe()?).args(["ice-echo", &tag]).spawn()?;
    // Until the echo has subscribed, pings are lost: repeat a first ping until answered.
    let mut answered = false;
    while !answered {
        publisher.loan_uninit()?.write_payload([0; 8]).send()?;
        std::thread::sleep(std::time::Duration::from_millis(10));
        while let Some(_s) = subscriber.receive()? {
            answered = true;
        }
    }
    let mut one_way = Vec::with_capacity(rounds);
    for i in 1..=(rounds + 1000) as u64 {
        publisher.loan_uninit()?.write_payload([i, 0, 0, 0, 0, 0, 0, 0]).send()?;
        let reply = loop {
            if let Some(s) = subscriber.receive()? {
                if s[0] == i {
                    break *s;
                }
            }
        };
        let arrived = now_ns();
        if i > 1000 {
            one_way.push(arrived - reply[1]);
        }
    }
    publisher.loan_uninit()?.write_payload([STOP; 8]).send()?;
    kid.wait()?;
    Ok(median(one_way))
}

fn ice_echo(tag: &str) -> Res {
    let node = NodeBuilder::new().create::<ipc::Service>()?;
    let (ping_name, pong_name) = service_names(tag);
    let ping = node.service_builder(&ping_name).publish_subscribe::<Msg>().open_or_create()?;
    let pong = node.service_builder(&pong_name).publish_subscribe::<Msg>().open_or_create()?;
    let subscriber = ping.subscriber_builder().create()?;
    let publisher = pong.publisher_builder().create()?;
    loop {
        if let Some(s) = subscriber.receive()? {
            if s[0] == STOP {
                return Ok(());
            }
            let mut reply = *s;
            drop(s);
            reply[1] = now_ns();
            publisher.loan_uninit()?.write_payload(reply).send()?;
        }
    }
}

fn mm_latency(rounds: usize) -> Res<f64> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("latency.mmheap");
    let store = MappedManager::create(&path, &Options::new().max_size(1 << 30))?;
    let (tx, rx) = (store.channel("ping", 4)?.sender()?, store.channel("pong", 4)?.receiver()?);
    let mut kid =
        Command::new(std::env::current_exe()?).args(["mm-echo", path.to_str().ok_or("path")?]).spawn()?;
    let mut one_way = Vec::with_capacity(rounds);
    for i in 0..rounds + 1000 {
        let mut ping = store.allocate(64)?;
        ping.as_mut_slice()?[0] = i as u8;
        tx.send(ping)?;
        let pong = rx.recv()?;
        let arrived = now_ns();
        if i >= 1000 {
            one_way.push(arrived - u64::from_le_bytes(pong.as_slice()[8..16].try_into()?));
        }
    }
    drop(tx);
    kid.wait()?;
    Ok(median(one_way))
}

fn mm_echo(path: &str) -> Res {
    let store = MappedManager::open(path)?;
    let (rx, tx) = (store.channel("ping", 4)?.receiver()?, store.channel("pong", 4)?.sender()?);
    while let Ok(ping) = rx.recv() {
        let mut pong = store.allocate(64)?;
        pong.as_mut_slice()?[0] = ping.as_slice()[0];
        drop(ping);
        pong.as_mut_slice()?[8..16].copy_from_slice(&now_ns().to_le_bytes());
        tx.send(pong)?;
    }
    Ok(())
}
