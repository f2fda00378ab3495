//! Channels between real processes: delivery, zero copy, blocking and waking, disconnection
//! (dead processes included), and a kill matrix over send and receive.
//! `MMHEAP_CHANNEL_KILLS` overrides the number of kills (300 by default).

mod common;

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use libtest_mimic::{Failed, Trial};
use mmheap::format::*;
use mmheap::{Error, MappedManager, MemoryBlock, MemoryManager, Options, RecvError, SendError};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn main() {
    child_or_tests(child, || {
        vec![
            Trial::test("send_receive_and_their_errors", semantics),
            Trial::test("a_store_holds_hundreds_of_channels", many_channels),
            Trial::test("a_channel_is_removed_when_no_end_is_open", removed),
            Trial::test("a_kill_while_a_channel_is_removed_leaks_nothing", removed_kill),
            Trial::test("a_value_kept_across_a_removal_elsewhere_makes_no_end", removed_elsewhere),
            Trial::test("messages_cross_processes_without_copy", cross_process),
            Trial::test("a_sleeping_receiver_wakes_on_send", wakes),
            Trial::test("dead_ends_disconnect", dead_ends_disconnect),
            Trial::test("channel_values_of_one_name_share_their_ends", values_share_ends),
            Trial::test("kill_matrix_over_send_and_receive", kill_matrix),
            Trial::test("killed_inside_send_or_receive", killed_inside),
            Trial::test("sole_and_shared_blocks_take_their_own_ways_in_order", two_ways),
            Trial::test("check_of_a_store_with_channel_traffic_finds_nothing", live_check),
            Trial::test("a_recovery_beside_a_stopped_ring_lock_holder_completes", stopped_holder),
            Trial::test("a_stopped_sender_and_a_dead_lock_holder_leave_the_store_usable", stopped_and_dead),
            Trial::test("a_dead_ring_lock_holder_beside_a_stopped_one_keeps_its_slot", dead_beside_stopped),
            Trial::test("try_and_timeout_calls_keep_their_word_beside_a_stopped_holder", stopped_deadlines),
            Trial::test("a_receive_follows_a_growth_made_by_the_sender", receive_after_growth),
            Trial::test("a_ring_lock_word_naming_this_process_by_damage_is_taken_over", own_tag_lock),
        ]
    });
}

// ---- children ---------------------------------------------------------------------------

fn child(role: &str, store: &Path) -> Res {
    let m = MappedManager::open(store)?;
    match role {
        "hold-end" => {
            let _rx = m.channel("gone", 4)?.receiver()?;
            println!("open");
            std::io::Write::flush(&mut std::io::stdout())?;
            thread::sleep(Duration::from_secs(600));
            return Ok(());
        }
        "remove" => {
            m.remove_channel("gone")?;
            return Ok(());
        }
        "recreate" => {
            m.remove_channel("gone")?;
            m.channel("gone", 2)?;
            return Ok(());
        }
        _ => {}
    }
    let ch = m.channel("pipe", 8)?;
    let count = env_u64("MMHEAP_COUNT", u64::MAX);
    let first = env_u64("MMHEAP_FIRST", 0);
    match role {
        // Sends stamped blocks `first..first+count`, printing each id once `send` returned.
        "sender" => {
            let tx = ch.sender()?;
            let delay = env_u64("MMHEAP_DELAY_MS", 0);
            thread::sleep(Duration::from_millis(delay));
            for id in first..first.saturating_add(count) {
                let mut b = m.allocate(100 + (id % 50) as usize)?;
                stamp(&mut b, id, 0)?;
                if id % 3 == 0 {
                    // Published: this one goes under the store lock (the others without it).
                    let _ = b.handle();
                }
                let off = b.offset().get();
                tx.send(b)?;
                println!("sent {id} {off}");
                std::io::stdout().flush()?;
            }
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?; // stay until told
            Ok(())
        }
        // Receives, verifies and prints every id; holds nothing between messages.
        "receiver" => {
            let rx = ch.receiver()?;
            for _ in 0..count {
                let b = match rx.recv() {
                    Err(RecvError::Disconnected) => return Ok(()), // the sender is gone
                    other => other?,
                };
                let id = u64::from_le_bytes(first_id(&b)?);
                verify(&b, id, b.len())?;
                println!("got {id}");
                std::io::stdout().flush()?;
            }
            Ok(())
        }
        // Sends and receives sole blocks (the way without the store lock) on two threads
        // until killed, saying "pumping" once both run.
        "pump" => {
            let rx = ch.receiver()?;
            let tx = ch.sender()?;
            let m2 = m.clone();
            let sending = thread::spawn(move || -> Result<(), String> {
                for id in 0u64.. {
                    let mut b = m2.allocate(64 + (id % 4000) as usize).map_err(|e| e.to_string())?;
                    stamp(&mut b, id, 0).map_err(|e| format!("{e:?}"))?;
                    tx.send(b).map_err(|e| e.to_string())?;
                }
                Ok(())
            });
            println!("pumping");
            std::io::stdout().flush()?;
            loop {
                let b = rx.recv()?;
                let id = u64::from_le_bytes(first_id(&b)?);
                verify(&b, id, b.len())?;
                if sending.is_finished() {
                    return Err("the sending thread stopped".into());
                }
            }
        }
        // Grows the store to four times its size, then sends sole blocks of 100, 40, 0 and
        // 5,000 bytes, says "sent" and stays until told.
        "grower" => {
            let tx = ch.sender()?;
            let start = m.stats()?.capacity;
            let mut kept = Vec::new();
            while m.stats()?.capacity < 4 * start {
                kept.push(m.allocate(64 << 10)?);
            }
            for (i, len) in [100usize, 40, 0, 5000].into_iter().enumerate() {
                let mut b = m.allocate(len)?;
                b.as_mut_slice()?.fill(i as u8 + 1);
                tx.send(b)?;
            }
            println!("sent");
            std::io::stdout().flush()?;
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?; // stay until told
            drop(kept);
            Ok(())
        }
        // Attached and doing nothing: says "idle" and stays until told.
        "idle" => {
            println!("idle");
            std::io::stdout().flush()?;
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            Ok(())
        }
        // Allocates a block of 100,000 bytes (under the store lock: "alloc-carved" pauses).
        "big-alloc" => {
            let _b = m.allocate(100_000)?;
            Err("no pause point reached".into())
        }
        // Pauses inside the lock in a send or a receive (MMHEAP_TEST_PAUSE).
        "stuck" => {
            let tx = ch.sender()?;
            let rx = ch.receiver()?;
            let mut b = m.allocate(64)?;
            stamp(&mut b, first, 0)?;
            tx.send(b)?; // send-slotted / send-counted pause here
            let _ = rx.recv()?; // recv-between / recv-taken pause here
            Err("no pause point reached".into())
        }
        _ => Err(format!("unknown role {role}").into()),
    }
}

/// The stamp of id `i` starts with bytes we can invert: the test stores the id itself in the
/// first 8 bytes instead of reading the stamp back.
fn first_id(b: &MemoryBlock) -> Result<[u8; 8], String> {
    // Find the id whose stamp matches the first 8 bytes: stamp_byte(id, i) for i < 8 is
    // byte i of id * K, so id * K is the first 8 bytes read as little-endian.
    let k = 0x9e37_79b9_7f4a_7c15u64;
    let bytes: [u8; 8] = b.as_slice().get(..8).and_then(|s| s.try_into().ok()).ok_or("short message")?;
    let product = u64::from_le_bytes(bytes);
    Ok((product.wrapping_mul(modinv(k))).to_le_bytes())
}

/// Inverse of an odd number modulo 2^64 (Newton's iteration).
fn modinv(a: u64) -> u64 {
    let mut x = a;
    for _ in 0..6 {
        x = x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)));
    }
    x
}

/// Reads all of a child's output, to its end, on a thread.
fn all_lines(kid: &mut Kid) -> Result<thread::JoinHandle<Vec<String>>, Failed> {
    let out = kid.get().stdout.take().ok_or("child stdout")?;
    Ok(thread::spawn(move || BufReader::new(out).lines().map_while(Result::ok).collect()))
}

/// The ids in lines like `word id ...`.
fn ids(lines: thread::JoinHandle<Vec<String>>) -> Result<Vec<u64>, Failed> {
    let lines = lines.join().map_err(|_| "reader thread panicked")?;
    Ok(lines.iter().filter_map(|l| l.split(' ').nth(1)?.parse().ok()).collect())
}

fn store() -> Result<(tempfile::TempDir, std::path::PathBuf, MappedManager), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("chan.mmheap");
    let m = MappedManager::create(&path, &Options::new().max_size(1 << 30))?;
    Ok((dir, path, m))
}

fn block(m: &MappedManager, text: &[u8]) -> Result<MemoryBlock, Failed> {
    let mut b = m.allocate(text.len())?;
    b.as_mut_slice()?.copy_from_slice(text);
    Ok(b)
}

// ---- tests ------------------------------------------------------------------------------

fn removed() -> Result<(), Failed> {
    let (_dir, path, m) = store()?;
    let ch = m.channel("gone", 4)?;
    let tx = ch.sender()?;
    for text in [&b"one"[..], b"two", b"three"] {
        tx.send(block(&m, text)?)?;
    }
    let kept = block(&m, b"kept")?;
    tx.send(kept.clone())?;
    ensure(matches!(m.remove_channel("gone"), Err(Error::ChannelInUse(_))), "an end is open")?;
    // Another process with an end open keeps it too.
    drop(tx);
    let mut holder = spawn("hold-end", &path, &[]);
    ensure(lines_of(&mut holder)?.recv_timeout(Duration::from_secs(30))? == "open", "the other end")?;
    ensure(matches!(m.remove_channel("gone"), Err(Error::ChannelInUse(_))), "another process's end")?;
    kill(holder)?;
    m.recover()?; // the killed process's end counts until then
    ensure(m.remove_channel("gone")?, "removed")?;
    ensure(!m.remove_channel("gone")?, "once")?;
    ensure(matches!(ch.receiver(), Err(Error::ChannelRemoved(_))), "a value of it makes no ends")?;
    ensure(kept.ref_count() == 1 && kept.as_slice() == b"kept", "a message we hold stays ours")?;
    drop(kept);
    let report = m.check()?;
    ensure(report.is_sound() && report.used_blocks == 0, format!("messages and ring freed: {report:?}"))?;
    let again = m.channel("gone", 2)?;
    ensure(again.is_empty()? && again.receiver().is_ok(), "the name makes a new channel")?;
    // A value from before the removal makes no end of the new channel, though its ring may have
    // taken the old one's place (it has another capacity: its ends would write past it).
    let old = m.channel("other", 64)?;
    ensure(m.remove_channel("other")?, "removed")?;
    let new = m.channel("other", 1)?;
    ensure(matches!(old.sender(), Err(Error::ChannelRemoved(_))), "the old value is refused")?;
    new.sender()?.send(block(&m, b"one")?)?;
    ensure(m.check()?.is_sound(), "sound")?;
    Ok(())
}

fn removed_kill() -> Result<(), Failed> {
    let (_dir, path, m) = store()?;
    {
        let tx = m.channel("gone", 4)?.sender()?;
        tx.send(block(&m, b"queued")?)?;
    }
    drop(m);
    kill(paused("remove", &path, "channel-unnamed", &[])?)?;
    let m = MappedManager::open(&path)?;
    let report = m.check()?;
    ensure(report.is_sound() && report.used_blocks == 0, format!("{report:?}"))?;
    ensure(!m.remove_channel("gone")?, "gone")?;
    Ok(())
}

/// A `Channel` value kept while another process removes its channel and makes one of the same
/// name (whose ring takes the freed one's place, smaller): its ends would write past the new
/// ring (an outside review saw the heap corrupted for good); they are refused.
fn removed_elsewhere() -> Result<(), Failed> {
    let (_dir, path, m) = store()?;
    let jobs = m.channel("gone", 1024)?; // no end yet
    wait_ok(spawn("recreate", &path, &[]), "the other process")?;
    ensure(matches!(jobs.sender(), Err(Error::ChannelRemoved(_))), "the old value makes no end")?;
    let now = m.channel("gone", 1024)?;
    ensure(now.sender()?.try_send(block(&m, b"fits")?).is_ok(), "the new channel works")?;
    ensure(m.check()?.is_sound(), "sound")
}

fn many_channels() -> Result<(), Failed> {
    let (_dir, path, m) = store()?;
    let n = 300;
    for i in 0..n {
        let tx = m.channel(&format!("topic {i}"), 4)?.sender()?;
        tx.send(block(&m, format!("message {i}").as_bytes())?)?;
    }
    ensure(m.check()?.is_sound(), "sound")?;
    drop(m);
    // Another process finds every one, and what each holds.
    let m = MappedManager::open(&path)?;
    for i in (0..n).rev() {
        let rx = m.channel(&format!("topic {i}"), 4)?.receiver()?;
        let got = rx.try_recv().map_err(|e| format!("topic {i}: {e}"))?;
        ensure(got.as_slice() == format!("message {i}").as_bytes(), format!("topic {i}'s message"))?;
    }
    let report = m.check()?;
    ensure(report.is_sound() && report.used_blocks == 0, format!("{report:?}"))?;
    Ok(())
}

fn semantics() -> Result<(), Failed> {
    let (_d, _p, m) = store()?;
    let ch = m.channel("q", 2)?;
    ensure(m.channel("q", 99)?.capacity() == 2, "an existing channel keeps its capacity")?;
    let rx = ch.receiver()?;
    ensure(matches!(rx.try_recv(), Err(RecvError::Empty)), "empty before any sender")?;
    ensure(matches!(rx.recv_timeout(Duration::from_millis(20)), Err(RecvError::Timeout)), "timeout")?;
    let tx = ch.sender()?;
    tx.send(block(&m, b"one")?)?;
    tx.send(block(&m, b"two")?)?;
    ensure(ch.len()? == 2, "two queued")?;
    let third = block(&m, b"three")?;
    let third = match tx.try_send(third) {
        Err(SendError::Full(b)) => b,
        other => return Err(format!("try_send on a full ring: {other:?}").into()),
    };
    let third = match tx.send_timeout(third, Duration::from_millis(20)) {
        Err(SendError::Timeout(b)) => b,
        other => return Err(format!("send_timeout on a full ring: {other:?}").into()),
    };
    ensure(rx.recv()?.as_slice() == b"one" && rx.recv()?.as_slice() == b"two", "FIFO")?;
    tx.send(third)?;
    let got = rx.recv()?;
    ensure(got.as_slice() == b"three" && got.ref_count() == 1, "the reference moved, no copy kept")?;
    drop(got);
    drop(tx);
    ensure(matches!(rx.recv(), Err(RecvError::Disconnected)), "all senders gone")?;
    let tx = ch.sender()?;
    drop(rx);
    tx.send(block(&m, b"a")?)?;
    tx.send(block(&m, b"b")?)?;
    ensure(matches!(tx.send(block(&m, b"c")?), Err(SendError::Disconnected(_))), "full, all receivers gone")?;
    ensure(tx.is_disconnected()?, "is_disconnected")?;
    drop(tx);
    ensure(m.check()?.is_sound(), "sound")?;
    let s = m.stats()?;
    ensure(s.live_blocks == 2, "its two queued messages are live")?;
    ensure(s.bookkeeping_blocks >= 1, "the ring is bookkeeping")?;
    let other = MappedManager::temporary(&Options::new())?;
    let foreign = other.allocate(1)?;
    ensure(matches!(ch.sender()?.send(foreign), Err(SendError::WrongManager(_))), "wrong manager")
}

fn cross_process() -> Result<(), Failed> {
    let (_d, path, m) = store()?;
    let rx = m.channel("pipe", 8)?.receiver()?;
    let n = 2000u64;
    let mut kid = spawn("sender", &path, &[("MMHEAP_COUNT", n.to_string()), ("MMHEAP_FIRST", "1".into())]);
    let lines = lines_of(&mut kid)?;
    for id in 1..=n {
        let b = rx.recv_timeout(Duration::from_secs(30))?;
        let line = lines.recv_timeout(Duration::from_secs(30))?;
        let mut it = line.split(' ').skip(1).map(str::parse::<u64>);
        let (sent, off) = (it.next().ok_or("id")??, it.next().ok_or("offset")??);
        ensure(sent == id, format!("out of order: {sent} != {id}"))?;
        ensure(b.offset().get() == off, "the receiver sees the very block the sender wrote")?;
        verify(&b, id, b.len())?;
    }
    writeln!(kid.get().stdin.take().ok_or("stdin")?)?;
    wait_ok(kid, "sender")?;
    ensure(matches!(rx.recv(), Err(RecvError::Disconnected)), "sender exited")?;
    ensure(m.stats()?.live_blocks == 0, "only the ring is left, which is bookkeeping")?;
    ensure(m.check()?.is_sound(), "sound")
}

fn wakes() -> Result<(), Failed> {
    let (_d, path, m) = store()?;
    let rx = m.channel("pipe", 8)?.receiver()?;
    let kid = spawn("sender", &path, &[("MMHEAP_COUNT", "1".into()), ("MMHEAP_DELAY_MS", "200".into())]);
    let t = Instant::now();
    let b = rx.recv()?; // sleeps on the futex well before the message comes
    println!("woke after {:?} (message sent after 200 ms)", t.elapsed());
    verify(&b, 0, b.len())?;
    drop(kid);
    Ok(())
}

fn dead_ends_disconnect() -> Result<(), Failed> {
    let (_d, path, m) = store()?;
    let ch = m.channel("pipe", 8)?;
    let rx = ch.receiver()?;
    let mut kid = spawn("sender", &path, &[("MMHEAP_COUNT", "3".into()), ("MMHEAP_FIRST", "10".into())]);
    let lines = lines_of(&mut kid)?;
    for _ in 0..3 {
        lines.recv_timeout(Duration::from_secs(30))?;
    }
    kill(kid)?;
    for id in 10..13 {
        let b = rx.recv()?;
        verify(&b, id, b.len()).map_err(|e| format!("a dead sender's message: {e}"))?;
    }
    ensure(matches!(rx.recv(), Err(RecvError::Disconnected)), "a dead sender disconnects")?;
    drop(rx);

    let tx = ch.sender()?;
    let kid = spawn("receiver", &path, &[("MMHEAP_COUNT", "0".into())]);
    wait_ok(kid, "receiver")?; // attached a receiver once, then left
    let listener = spawn("receiver", &path, &[("MMHEAP_COUNT", "1000000".into())]);
    thread::sleep(Duration::from_millis(100));
    kill(listener)?;
    for i in 0..8 {
        tx.send(block(&m, &[i])?)?;
    }
    ensure(
        matches!(tx.send(block(&m, b"x")?), Err(SendError::Disconnected(_))),
        "a dead receiver disconnects",
    )?;
    drop(tx);
    m.recover()?;
    ensure(m.check()?.is_sound(), "sound")
}

/// Two `Channel` values for one name in one process (and on several threads) behave as one:
/// dropping the only sender of one does not disconnect a receiver while the other's lives.
fn values_share_ends() -> Result<(), Failed> {
    let (_d, _p, m) = store()?;
    let (a, b) = (m.channel("x", 4)?, m.channel("x", 4)?);
    let tx_b = b.sender()?;
    let rx = b.receiver()?;
    drop(a.sender()?);
    ensure(matches!(rx.try_recv(), Err(RecvError::Empty)), "a sender of the other value is alive")?;
    ensure(!rx.is_disconnected()? && !tx_b.is_disconnected()?, "nobody is disconnected")?;
    // The same from other threads, each with a value of its own, ends made and dropped at once.
    thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let c = m.channel("x", 4).expect("channel");
                for _ in 0..200 {
                    drop((c.sender().expect("sender"), c.receiver().expect("receiver").clone()));
                }
            });
        }
    });
    ensure(!rx.is_disconnected()? && !tx_b.is_disconnected()?, "still connected after the threads")?;
    tx_b.send(block(&m, b"still here")?)?;
    ensure(rx.recv()?.as_slice() == b"still here", "delivered")?;
    drop(tx_b);
    ensure(matches!(rx.try_recv(), Err(RecvError::Disconnected)), "the last sender is gone")?;
    let rx2 = a.receiver()?;
    drop(rx);
    ensure(!a.sender()?.is_disconnected()?, "a receiver of the other value is alive")?;
    drop(rx2);
    Ok(())
}

/// A sender and a receiver run concurrently; one of them is killed at a random moment.
/// Every message whose send returned is received exactly once (by the child or, after, by
/// the parent), except at most one per killed receiver (the one in its hands); nothing leaks.
fn kill_matrix() -> Result<(), Failed> {
    let kills = env_u64("MMHEAP_CHANNEL_KILLS", 300);
    let (_d, path, m) = store()?;
    let rx = m.channel("pipe", 8)?.receiver()?;
    let baseline = m.stats()?;
    let mut rng = SmallRng::seed_from_u64(env_u64("MMHEAP_SEED", 5));
    let mut next = 1u64;
    let (mut sent_total, mut lost_to_dead_receivers) = (0u64, 0u64);
    for k in 0..kills {
        let first = next;
        next += 100_000;
        let mut sender = spawn("sender", &path, &[("MMHEAP_FIRST", first.to_string())]);
        let mut receiver = spawn("receiver", &path, &[("MMHEAP_FIRST", first.to_string())]);
        let (sent_lines, got_lines) = (all_lines(&mut sender)?, all_lines(&mut receiver)?);
        thread::sleep(Duration::from_micros(rng.gen_range(0..20_000)));
        let kill_receiver = rng.gen_bool(0.5);
        let (victim, survivor) = if kill_receiver { (receiver, sender) } else { (sender, receiver) };
        kill(victim)?;
        thread::sleep(Duration::from_micros(rng.gen_range(0..5_000)));
        kill(survivor)?;
        m.recover()?;
        let sent: BTreeSet<u64> = ids(sent_lines)?.into_iter().collect();
        let mut got = ids(got_lines)?;
        loop {
            let b = match rx.try_recv() {
                Ok(b) => b,
                Err(RecvError::Empty | RecvError::Disconnected) => break,
                Err(e) => return Err(format!("kill {k}: draining: {e}").into()),
            };
            let id = u64::from_le_bytes(first_id(&b)?);
            verify(&b, id, b.len())?;
            got.push(id);
        }
        let unique: HashSet<u64> = got.iter().copied().collect();
        ensure(unique.len() == got.len(), format!("kill {k}: a message was delivered twice"))?;
        let lost: Vec<u64> = sent.iter().filter(|id| !unique.contains(id)).copied().collect();
        let missing = lost.len() as u64;
        // The receiver (killed once per round) may have taken one message and died before
        // printing it.
        ensure(
            missing <= 1,
            format!(
                "kill {k}: {missing} sent messages lost: {lost:?}; sent {}..={}, received {} (receiver killed first: {kill_receiver}); {:?}",
                sent.first().unwrap_or(&0),
                sent.last().unwrap_or(&0),
                got.len(),
                m.stats()?
            ),
        )?;
        lost_to_dead_receivers += missing;
        sent_total += sent.len() as u64;
        let report = m.check()?;
        ensure(report.is_sound(), format!("kill {k}: {:?}", report.problems))?;
        let s = m.stats()?;
        ensure(
            s.live_blocks == baseline.live_blocks && s.used_bytes == baseline.used_bytes,
            format!(
                "kill {k}: leak: {} blocks, expected {}; {s:?} vs {baseline:?}",
                s.live_blocks, baseline.live_blocks
            ),
        )?;
    }
    println!(
        "channel kill matrix: {kills} kills, {sent_total} messages sent, {lost_to_dead_receivers} taken by receivers as they died, 0 duplicates, 0 leaks"
    );
    Ok(())
}

/// A sole, never published block goes without the store lock and stays unpublished (the
/// receiver may write it); a published, shared or long one goes under the lock. Both ways
/// keep one order, and the counts and the check come out right.
fn two_ways() -> Result<(), Failed> {
    let (_d, _p, m) = store()?;
    let baseline = m.stats()?;
    let ch = m.channel("ways", 8)?;
    let (tx, rx) = (ch.sender()?, ch.receiver()?);
    let sole = block(&m, b"sole")?;
    let published = block(&m, b"published")?;
    let handle = published.handle();
    let shared = block(&m, b"shared")?;
    let kept = shared.clone();
    let mut long = m.allocate(40_000)?;
    long.as_mut_slice()?.fill(7);
    for b in [sole, published, shared, long] {
        tx.send(b)?;
    }
    let mut first = rx.recv()?;
    ensure(first.as_slice() == b"sole", "the sole block first")?;
    ensure(first.ref_count() == 1, "the receiver holds the only reference")?;
    first.as_mut_slice()?.copy_from_slice(b"SOLE");
    ensure(first.as_slice() == b"SOLE", "and may write it: it was never published")?;
    let mut second = rx.recv()?;
    ensure(second.as_slice() == b"published", "the published block second")?;
    ensure(second.as_mut_slice().is_err(), "a published block stays read-only")?;
    ensure(m.block_from_handle(handle)?.as_slice() == b"published", "its handle still resolves")?;
    let third = rx.recv()?;
    ensure(third.as_slice() == b"shared" && third.ref_count() == 2, "the shared block keeps its clone")?;
    ensure(kept.as_slice() == b"shared", "the kept clone reads the same bytes")?;
    let fourth = rx.recv()?;
    ensure(fourth.len() == 40_000 && fourth.as_slice().iter().all(|&x| x == 7), "the long block last")?;
    ensure(m.check()?.is_sound(), "sound with all four received")?;
    drop((first, second, third, fourth, kept, tx, rx, ch));
    let s = m.stats()?;
    ensure(s.live_blocks == baseline.live_blocks, format!("no leak: {s:?} vs {baseline:?}"))?;
    ensure(m.check()?.is_sound(), "sound")
}

/// `check` of a store whose channel a child pumps blocks through without the store lock
/// finds no problem (it may look between a receive's steps); after the child is killed,
/// recovery leaves it sound with nothing leaked.
fn live_check() -> Result<(), Failed> {
    let (_d, path, m) = store()?;
    let baseline = m.stats()?;
    let mut kid = spawn("pump", &path, &[]);
    let line = lines_of(&mut kid)?.recv_timeout(Duration::from_secs(30))?;
    ensure(line == "pumping", format!("child said {line:?}"))?;
    for i in 0..5_000 {
        let report = m.check()?;
        ensure(report.is_sound(), format!("check {i} of a live store: {:?}", report.problems))?;
    }
    kill(kid)?;
    m.recover()?;
    ensure(m.check()?.is_sound(), "sound after the kill")?;
    // What is still queued is the ring's; once received and dropped, nothing is left.
    let ch = m.channel("pipe", 8)?;
    let queued = ch.len()?;
    let s = m.stats()?;
    ensure(
        s.live_blocks == baseline.live_blocks + queued,
        format!("after the kill: {s:?}, {queued} queued"),
    )?;
    let rx = ch.receiver()?;
    for _ in 0..queued {
        let b = rx.try_recv()?;
        verify(&b, u64::from_le_bytes(first_id(&b)?), b.len())?;
    }
    drop((rx, ch));
    let s = m.stats()?;
    ensure(s.live_blocks == baseline.live_blocks, format!("leak after the kill: {s:?} vs {baseline:?}"))
}

/// A process stopped inside a send holds the ring's send lock: another sender waits (asleep,
/// not spinning), a recovery completes beside it (leaving that ring as it is), and once the
/// holder is killed the waiting send goes through.
fn stopped_holder() -> Result<(), Failed> {
    let (_d, path, m) = store()?;
    let ch = m.channel("pipe", 8)?;
    let kid = paused("stuck", &path, "send-slotted", &[])?;
    m.recover().map_err(|e| format!("recovery beside a stopped holder: {e}"))?;
    ensure(m.check()?.is_sound(), "sound beside the stopped holder")?;
    let tx = ch.sender()?;
    let probe = block(&m, b"probe")?;
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let sending = thread::spawn(move || {
        let sent = tx.send(probe).map_err(|e| e.to_string());
        let _ = done_tx.send(());
        sent
    });
    ensure(done_rx.recv_timeout(Duration::from_millis(300)).is_err(), "a send waits for the holder")?;
    kill(kid)?;
    done_rx.recv_timeout(Duration::from_secs(60)).map_err(|_| "the send still waits after the kill")?;
    sending.join().map_err(|_| "the sending thread panicked")??;
    let rx = ch.receiver()?;
    let mut got = Vec::new();
    while let Ok(b) = rx.try_recv() {
        got.push(b.as_slice().to_vec());
    }
    ensure(got.last().is_some_and(|b| b == b"probe"), format!("the probe arrives last: {got:?}"))?;
    ensure(m.check()?.is_sound(), "sound after the kill")
}

/// With a process stopped inside a send (holding the ring's send lock) or a receive (its
/// receive lock), `try_send` and `try_recv` answer now and the timeouts keep their deadline,
/// a long block (the locked way) included, and the store lock stays free meanwhile.
fn stopped_deadlines() -> Result<(), Failed> {
    let (_d, path, m) = store()?;
    for point in ["send-slotted", "recv-owned"] {
        let ch = m.channel("pipe", 8)?;
        let (tx, rx) = (ch.sender()?, ch.receiver()?);
        let kid = paused("stuck", &path, point, &[])?;
        let limit = Duration::from_secs(20);
        if point == "send-slotted" {
            for len in [8, 40_000] {
                let (m1, tx1) = (m.clone(), tx.clone());
                let r =
                    returns("try_send", limit, move || block(&m1, &vec![1; len]).map(|b| tx1.try_send(b)))?;
                ensure(matches!(r?, Err(SendError::Full(_))), format!("try_send of {len} bytes: Full"))?;
                let (m2, tx2) = (m.clone(), tx.clone());
                let r = returns("send_timeout", limit, move || {
                    block(&m2, &vec![2; len]).map(|b| tx2.send_timeout(b, Duration::from_millis(20)))
                })?;
                ensure(
                    matches!(r?, Err(SendError::Timeout(_))),
                    format!("send_timeout of {len} bytes: Timeout"),
                )?;
            }
            // The long block's send gave the store lock back while it waited.
            let m3 = m.clone();
            returns("an allocation", limit, move || m3.allocate(1 << 20).map(drop))??;
        } else {
            let rx1 = rx.clone();
            let r = returns("try_recv", limit, move || rx1.try_recv().map(drop))?;
            ensure(matches!(r, Err(RecvError::Empty)), format!("try_recv: Empty, not {r:?}"))?;
            let rx2 = rx.clone();
            let r = returns("recv_timeout", limit, move || {
                rx2.recv_timeout(Duration::from_millis(20)).map(drop)
            })?;
            ensure(matches!(r, Err(RecvError::Timeout)), format!("recv_timeout: Timeout, not {r:?}"))?;
        }
        kill(kid)?;
        while rx.try_recv().is_ok() {}
        tx.send(block(&m, b"after")?)?;
        ensure(rx.recv()?.as_slice() == b"after", "the channel works once the holder is gone")?;
    }
    ensure(m.check()?.is_sound(), "sound")
}

/// A receiver that never takes the store lock still finds blocks that another process
/// allocated in space it grew the store into.
fn receive_after_growth() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("grow.mmheap");
    let m = MappedManager::create(&path, &Options::new().initial_size(1 << 20).max_size(1 << 30))?;
    let rx = m.channel("pipe", 8)?.receiver()?;
    let mut kid = spawn("grower", &path, &[]);
    let line = lines_of(&mut kid)?.recv_timeout(Duration::from_secs(60))?;
    ensure(line == "sent", format!("child said {line:?}"))?;
    for (i, len) in [100usize, 40, 0, 5000].into_iter().enumerate() {
        let b = rx.try_recv().map_err(|e| format!("message {i}: {e}"))?;
        ensure(b.len() == len && b.as_slice().iter().all(|&x| x == i as u8 + 1), format!("message {i}"))?;
    }
    kill(kid)?;
    ensure(m.check()?.is_sound(), "sound")
}

/// A ring's send lock that names this very process while none of its threads holds it (a
/// damaged word) is taken over by recovery, not waited for for ever.
fn own_tag_lock() -> Result<(), Failed> {
    let (_d, path, m) = store()?;
    let ch = m.channel("pipe", 8)?;
    let (tx, rx) = (ch.sender()?, ch.receiver()?);
    let file = std::fs::read(&path)?;
    let word = |at: u64| u64::from_le_bytes(file[at as usize..][..8].try_into().unwrap());
    // The channels' table (`docs/format.md`, "Named roots") names the one ring.
    let table = payload_of(word(SB_CHANNEL_TABLE));
    let ring = (0..word(table + ROOT_TABLE_CAPACITY))
        .map(|i| word(table + ROOT_TABLE_ENTRIES + i * ROOT_SIZE + CHANNEL_RING))
        .find(|&r| r != 0)
        .ok_or("the ring")?;
    let flags = ring + HEADER_SIZE + RING_FLAGS;
    // This process is the store's only one: registry slot 0, tag 1.
    let poked = (word(flags) | 1 << 16 | 1 << 32).to_le_bytes();
    // In place (the store is open and mapped here): no truncation, not a byte else.
    std::os::unix::fs::FileExt::write_all_at(
        &std::fs::OpenOptions::new().write(true).open(&path)?,
        &poked,
        flags,
    )?;
    let m1 = m.clone();
    returns("a send", Duration::from_secs(30), move || block(&m1, b"through").map(|b| tx.send(b)))???;
    ensure(rx.recv()?.as_slice() == b"through", "delivered")?;
    ensure(m.check()?.is_sound(), "sound")
}

/// One process stopped inside a send (holding the ring's send lock) and another killed
/// holding the store lock: the next user of the store takes the lock over and its recovery
/// completes, leaving the stopped sender's ring as it is; once the sender is killed too, a
/// recovery settles that ring, and nothing is left over.
fn stopped_and_dead() -> Result<(), Failed> {
    let (_d, path, m) = store()?;
    let ch = m.channel("pipe", 8)?;
    let baseline = m.stats()?;
    let stuck = paused("stuck", &path, "send-slotted", &[])?;
    let locker = paused("big-alloc", &path, "alloc-carved", &[])?;
    kill(locker)?;
    let m1 = m.clone();
    let b = returns("an allocation after the takeover", Duration::from_secs(30), move || m1.allocate(1000))??;
    ensure(m.check()?.is_sound(), "sound beside the stopped sender")?;
    drop(b);
    kill(stuck)?;
    m.recover()?;
    ensure(m.check()?.is_sound(), "sound once both are gone")?;
    ensure(ch.is_empty()?, "the stopped sender's message never was")?;
    let s = m.stats()?;
    ensure(s.live_blocks == baseline.live_blocks, format!("leak: {s:?} vs {baseline:?}"))
}

/// A receiver stopped inside a receive keeps the ring busy while a sender dies inside a send:
/// calls with deadlines keep them (each recovery leaves the dead sender's lock where it is),
/// the dead sender's registry slot is not given to the next process (which would pass for the
/// lock's living holder), and once the receiver is gone too a recovery frees both locks.
fn dead_beside_stopped() -> Result<(), Failed> {
    let (_d, path, m) = store()?;
    let baseline = m.stats()?;
    let ch = m.channel("pipe", 8)?;
    let (tx, rx) = (ch.sender()?, ch.receiver()?);
    let receiving = paused("stuck", &path, "recv-owned", &[])?;
    let sending = paused("stuck", &path, "send-slotted", &[])?;
    kill(sending)?;
    let limit = Duration::from_secs(30);
    let (m1, tx1) = (m.clone(), tx.clone());
    let r = returns("try_send", limit, move || block(&m1, b"now").map(|b| tx1.try_send(b)))??;
    ensure(matches!(r, Err(SendError::Full(_))), "try_send: Full while the dead sender's lock stays")?;
    drop(r);
    let (m2, tx2) = (m.clone(), tx.clone());
    let r = returns("send_timeout", limit, move || {
        block(&m2, b"soon").map(|b| tx2.send_timeout(b, Duration::from_millis(50)))
    })??;
    ensure(matches!(r, Err(SendError::Timeout(_))), "send_timeout: Timeout")?;
    drop(r);
    let mut idle = spawn("idle", &path, &[]);
    ensure(lines_of(&mut idle)?.recv_timeout(limit)? == "idle", "a new process attached")?;
    kill(receiving)?;
    m.recover()?;
    let (m3, tx3) = (m.clone(), tx.clone());
    returns("a send once both are gone", limit, move || {
        block(&m3, b"later").map(|b| tx3.send_timeout(b, Duration::from_secs(10)))
    })???;
    let mut got = Vec::new();
    while let Ok(b) = rx.try_recv() {
        got.push(b.as_slice().to_vec());
    }
    ensure(got.last().is_some_and(|b| b == b"later"), format!("the last message arrives: {got:?}"))?;
    drop((tx, rx, ch));
    kill(idle)?;
    m.recover()?;
    ensure(m.check()?.is_sound(), "sound")?;
    let s = m.stats()?;
    ensure(s.live_blocks == baseline.live_blocks, format!("leak: {s:?} vs {baseline:?}"))?;
    // The receiver, the sender and the idle process died; the sender's slot, kept while the
    // ring was busy, is counted once.
    ensure(s.recovered_processes == 3, format!("{} processes recovered, not 3", s.recovered_processes))
}

fn killed_inside() -> Result<(), Failed> {
    let (_d, path, m) = store()?;
    let baseline = m.stats()?;
    let rounds = env_u64("MMHEAP_CHANNEL_LOCK_KILLS", 40);
    for k in 0..rounds {
        let point =
            ["send-slotted", "send-counted", "recv-owned", "recv-between", "recv-taken"][k as usize % 5];
        let kid = paused("stuck", &path, point, &[("MMHEAP_FIRST", k.to_string())])?;
        kill(kid)?;
        // The channel stays usable: our own round trip goes through after the takeover.
        let ch = m.channel("pipe", 8)?;
        let (tx, rx) = (ch.sender()?, ch.receiver()?);
        while rx.try_recv().is_ok() {} // a message the dead sender completed is delivered
        tx.send(block(&m, b"probe")?)?;
        ensure(rx.recv()?.as_slice() == b"probe", "probe")?;
        drop((tx, rx));
        ensure(m.check()?.is_sound(), format!("{point}: unsound"))?;
        let s = m.stats()?;
        // The ring the first round made is bookkeeping, not live.
        ensure(s.live_blocks == baseline.live_blocks, format!("{point}: leak ({} blocks)", s.live_blocks))?;
    }
    println!("killed {rounds} times inside send or receive; the channel stayed usable, nothing leaked");
    Ok(())
}
