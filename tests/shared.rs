//! Shared mutable state: atomic areas updated in place by every holder, and guarded areas
//! behind a robust lock that lives in the store: exclusive across threads and processes, taken
//! over from a holder killed with SIGKILL (and the next locker told, every time), never from a
//! stopped one, given back by recovery; a counter kept under it by four processes that are
//! killed again and again ends exactly at the increments that completed.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::atomic::{AtomicI16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

use common::*;
use libtest_mimic::{Failed, Trial};
use mmheap::{Error, Locked, MappedManager, MemoryBlock, MemoryManager, Options};

fn main() {
    child_or_tests(child, || {
        let mut trials = Vec::new();
        for (name, make) in managers() {
            let per_manager: [(&str, Test); 5] = [
                ("atomics_over_a_plain_block_s_bytes_count_exactly", |make| in_bytes(make()?.as_ref())),
                ("atomic_views_count_exactly_across_threads", |make| atomics(make()?.as_ref())),
                ("the_lock_excludes_threads_and_the_area_is_writable_when_shared", |make| {
                    guarded(make()?.as_ref())
                }),
                ("misuse_is_a_typed_error", |make| misuse(make()?.as_ref())),
                ("a_shared_area_is_not_part_of_the_block_s_bytes", |make| apart(make()?.as_ref())),
            ];
            for (test, run) in per_manager {
                trials.push(Trial::test(format!("{name}::{test}"), move || run(make)));
            }
        }
        trials
            .push(Trial::test("store::holders_killed_500_times_are_taken_over_and_reported", killed_holders));
        trials.push(Trial::test("store::a_stopped_holder_is_never_overtaken", stopped_holder));
        trials.push(Trial::test("store::recovery_gives_back_a_dead_holder_s_lock", recovery_releases));
        trials.push(Trial::test("store::four_processes_count_exactly_through_kills", counting_through_kills));
        trials.push(Trial::test("store::atomic_views_are_shared_between_processes", atomics_across));
        trials.push(Trial::test(
            "store::a_leaked_guard_does_not_pass_for_the_next_process_in_its_slot",
            leaked,
        ));
        trials.push(Trial::test("store::a_lock_word_naming_no_living_holder_is_taken_over", stray_word));
        trials.push(Trial::test("store::a_forked_child_s_copy_of_a_guard_lets_nothing_go", forked));
        trials
    });
}

fn atomics(m: &dyn MemoryManager) -> Result<(), Failed> {
    let block = m.allocate_atomic(3, 20)?;
    ensure(block.shared_len() == 24 && block.len() == 3, "20 rounded up to 24, after 3 bytes")?;
    ensure(block.view_atomic::<AtomicU64>(16)?.load(Ordering::Relaxed) == 0, "zeroed")?;
    std::thread::scope(|s| {
        for _ in 0..4 {
            let b = block.clone();
            s.spawn(move || {
                for _ in 0..50_000 {
                    b.view_atomic::<AtomicU64>(8).unwrap().fetch_add(1, Ordering::Relaxed);
                    b.view_atomic::<AtomicU8>(0).unwrap().fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    ensure(block.view_atomic::<AtomicU64>(8)?.load(Ordering::Relaxed) == 200_000, "every increment")?;
    ensure(block.view_atomic::<AtomicU8>(0)?.load(Ordering::Relaxed) == (200_000 % 256) as u8, "bytes wrap")?;
    ensure(block.view_atomic::<AtomicI16>(2)?.fetch_sub(1, Ordering::Relaxed) == 0, "another width")?;
    Ok(())
}

/// Atomics over a plain block's own bytes (`unsafe`: the caller keeps `&[u8]` views away).
fn in_bytes(m: &dyn MemoryManager) -> Result<(), Failed> {
    let block = m.allocate_zeroed(16)?;
    std::thread::scope(|s| {
        for _ in 0..4 {
            let b = block.clone();
            s.spawn(move || {
                for _ in 0..10_000 {
                    // SAFETY: this test never views the block's bytes as a slice.
                    unsafe { b.view_atomic_in_bytes::<AtomicU64>(8) }
                        .unwrap()
                        .fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    // SAFETY: as above.
    let counted = unsafe { block.view_atomic_in_bytes::<AtomicU64>(8) }?.load(Ordering::Relaxed);
    ensure(counted == 40_000, format!("{counted} of 40,000"))?;
    // SAFETY: refused before any view is made.
    let beyond = unsafe { block.view_atomic_in_bytes::<AtomicU64>(12) };
    ensure(matches!(beyond, Err(Error::Misaligned { .. }) | Err(Error::OutOfBounds { .. })), "beyond")?;
    // SAFETY: as above.
    let misaligned = unsafe { block.view_atomic_in_bytes::<AtomicU32>(6) };
    ensure(matches!(misaligned, Err(Error::Misaligned { .. })), "misaligned")?;
    Ok(())
}

fn guarded(m: &dyn MemoryManager) -> Result<(), Failed> {
    let block = m.allocate_guarded(0, 16)?;
    let published = block.clone();
    let _handle = published.handle();
    std::thread::scope(|s| {
        for _ in 0..4 {
            let b = block.clone();
            s.spawn(move || {
                for _ in 0..20_000 {
                    let mut g = b.lock().unwrap().guard();
                    // A plain read-modify-write, exact only if the lock excludes.
                    let v = u64::from_le_bytes(g[..8].try_into().unwrap());
                    g[..8].copy_from_slice(&(v + 1).to_le_bytes());
                }
            });
        }
    });
    let locked = block.lock()?;
    ensure(!locked.holder_died(), "nobody died")?;
    let counted = locked.guard()[..8] == 80_000u64.to_le_bytes();
    ensure(counted, "every increment under the lock")?;
    // A thread that panics holding the lock leaves the area marked, as a dead holder does.
    let b = block.clone();
    let panicked = std::thread::spawn(move || {
        let _g = b.lock().unwrap().guard();
        panic!("while holding the lock");
    })
    .join();
    ensure(panicked.is_err(), "the thread panicked")?;
    let Locked::HolderDied(mut g) = block.lock()? else { return Err("the panic was not reported".into()) };
    g.mark_consistent()?;
    drop(g);
    let again = block.lock()?.holder_died();
    ensure(!again, "consistent again")
}

fn misuse(m: &dyn MemoryManager) -> Result<(), Failed> {
    let plain = m.allocate(64)?;
    let atomic = m.allocate_atomic(0, 16)?;
    let guarded = m.allocate_guarded(0, 16)?;
    ensure(matches!(plain.view_atomic::<AtomicU64>(0), Err(Error::NoSharedArea(_))), "no area")?;
    ensure(matches!(guarded.view_atomic::<AtomicU64>(0), Err(Error::NoSharedArea(_))), "a guarded one")?;
    ensure(matches!(plain.lock(), Err(Error::NoSharedArea(_))), "no lock")?;
    ensure(matches!(atomic.lock(), Err(Error::NoSharedArea(_))), "an atomic area has none")?;
    ensure(matches!(atomic.view_atomic::<AtomicU64>(4), Err(Error::Misaligned { .. })), "misaligned")?;
    ensure(
        matches!(
            atomic.view_atomic::<AtomicU64>(9),
            Err(Error::Misaligned { .. }) | Err(Error::OutOfBounds { .. })
        ),
        "beyond",
    )?;
    ensure(matches!(atomic.view_atomic::<AtomicU32>(16), Err(Error::OutOfBounds { .. })), "past the end")?;
    ensure(matches!(atomic.view_atomic::<AtomicU8>(usize::MAX), Err(Error::OutOfBounds { .. })), "far past")?;
    let mut fixed = m.allocate_guarded(10, 8)?;
    ensure(matches!(fixed.resize(100), Err(Error::LinkLayout(_))), "a fixed length")?;
    ensure(matches!(m.allocate_atomic(0, usize::MAX), Err(Error::OutOfSpace { .. })), "too large")?;
    ensure(plain.shared_len() == 0, "a plain block has no area")?;
    // Taking a lock this thread holds is refused, through the block or a clone; another
    // block's lock, and the same lock once given back, are taken.
    {
        let held = guarded.lock()?.guard();
        ensure(matches!(guarded.lock(), Err(Error::Reentrant)), "the same lock again")?;
        ensure(matches!(guarded.clone().lock(), Err(Error::Reentrant)), "through a clone")?;
        ensure(fixed.lock().is_ok(), "another block's lock")?;
        drop(held);
    }
    ensure(guarded.lock().is_ok(), "given back, taken again")?;
    Ok(())
}

fn apart(m: &dyn MemoryManager) -> Result<(), Failed> {
    let live = m.stats()?.live_blocks;
    let mut block = m.allocate_guarded(5, 8)?;
    block.as_mut_slice()?.copy_from_slice(b"plain");
    ensure(block.len() == 5 && block.as_slice() == b"plain", "the block's own bytes")?;
    block.lock()?.guard().copy_from_slice(b"guarded!");
    ensure(block.as_slice() == b"plain", "the area is not among them")?;
    let again = block.clone();
    ensure(block.as_mut_slice().is_err(), "the plain bytes are read-only once shared")?;
    ensure(&again.lock()?.guard()[..] == b"guarded!", "the area still writable")?;
    drop((block, again));
    ensure(m.stats()?.live_blocks == live, "freed")?;
    // A freed block with an area is never handed out again with its tag: a fresh block of
    // that size has no area.
    let fresh = m.allocate(5 + 3 + 8 + 16)?;
    ensure(fresh.shared_len() == 0 && matches!(fresh.lock(), Err(Error::NoSharedArea(_))), "no area")
}

/// A store with a guarded block under root "m" (a counter record) and an atomic one under "a".
fn store_with_lock(path: &Path) -> Result<MappedManager, Failed> {
    let m = MappedManager::create(path, &Options::default())?;
    m.set_root("m", &m.allocate_guarded(0, 64)?)?;
    m.set_root("a", &m.allocate_atomic(0, 8)?)?;
    Ok(m)
}

fn root(m: &MappedManager, name: &str) -> Result<MemoryBlock, Failed> {
    Ok(m.root(name)?.ok_or(format!("no root {name}"))?)
}

/// A child that holds the lock of "m" and says so.
fn holder(path: &Path) -> Result<(Kid, std::sync::mpsc::Receiver<String>), Failed> {
    let mut kid = spawn("hold", path, &[]);
    let lines = lines_of(&mut kid)?;
    let line = lines.recv_timeout(Duration::from_secs(30))?;
    ensure(line == "locked", format!("the holder said {line:?}"))?;
    Ok((kid, lines))
}

fn killed_holders() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("k.mmheap");
    let m = store_with_lock(&path)?;
    let block = root(&m, "m")?;
    let rounds = env_u64("MMHEAP_HOLDER_KILLS", 500);
    for round in 0..rounds {
        let (kid, _lines) = holder(&path)?;
        // Half the time we wait already when the holder dies; half the time we come after.
        let waiter = (round % 2 == 0).then(|| {
            let b = block.clone();
            std::thread::spawn(move || b.lock().map(|l| l.holder_died()).map_err(|e| e.to_string()))
        });
        if waiter.is_some() {
            std::thread::sleep(Duration::from_millis(1));
        }
        kill(kid)?;
        let died = match waiter {
            Some(w) => w.join().map_err(|_| "the waiter panicked")??,
            None => block.lock()?.holder_died(),
        };
        ensure(died, format!("round {round}: the next locker was not told the holder died"))?;
        let Locked::HolderDied(mut g) = block.lock()? else {
            return Err(format!("round {round}: told once, then no more").into());
        };
        g.mark_consistent()?;
        drop(g);
        ensure(!block.lock()?.holder_died(), "consistent again")?;
    }
    ensure(m.check()?.is_sound(), "sound")
}

fn stopped_holder() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("t.mmheap");
    let m = store_with_lock(&path)?;
    let block = root(&m, "m")?;
    let (mut kid, lines) = holder(&path)?;
    let pid = kid.get().id() as libc::pid_t;
    // SAFETY: a signal to our own child, which we reap.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let waiter = std::thread::spawn(move || block.lock().map(|l| l.holder_died()).map_err(|e| e.to_string()));
    std::thread::sleep(Duration::from_millis(1500));
    ensure(!waiter.is_finished(), "a stopped holder's lock was taken")?;
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    writeln!(kid.get().stdin.as_mut().ok_or("stdin")?)?; // let go
    ensure(lines.recv_timeout(Duration::from_secs(30))? == "released", "the holder let go")?;
    let died = waiter.join().map_err(|_| "the waiter panicked")??;
    ensure(!died, "a living holder let go: nothing to report")?;
    wait_ok(kid, "the holder")?;
    drop(m);
    Ok(())
}

fn recovery_releases() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("r.mmheap");
    drop(store_with_lock(&path)?);
    let (kid, _lines) = holder(&path)?;
    kill(kid)?;
    // Opening runs recovery (a dead process), which gives the lock back; then a new process may
    // be given the dead one's registry slot, and must not pass for the holder.
    let m = MappedManager::open(&path)?;
    ensure(m.opening_recovery().is_some_and(|r| r.dead_processes == 1), "recovered at open")?;
    let (kid, _lines) = holder(&path)?; // takes the lock: it was given back
    kill(kid)?;
    let block = root(&m, "m")?;
    ensure(block.lock()?.holder_died(), "the second holder's death is reported too")?;
    ensure(m.check()?.is_sound(), "sound")
}

/// The counter record in the guarded area: [counter][done by child 0..4][undo: child + 1,
/// counter before, done before].
const CHILDREN: u64 = 4;

fn word(g: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(g[i * 8..i * 8 + 8].try_into().unwrap())
}

fn set(g: &mut [u8], i: usize, v: u64) {
    g[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
}

/// Undoes a half-done increment (a holder died in it): the record says whose and from what.
fn repair(g: &mut [u8]) {
    let who = word(g, 5);
    if who != 0 {
        let (counter, done) = (word(g, 6), word(g, 7));
        set(g, 0, counter);
        set(g, who as usize, done);
        set(g, 5, 0);
    }
}

fn counting_through_kills() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("c.mmheap");
    let m = store_with_lock(&path)?;
    let block = root(&m, "m")?;
    let each = env_u64("MMHEAP_COUNT_EACH", 100_000);
    let mut kids: Vec<Option<Kid>> = (0..CHILDREN).map(|_| None).collect();
    let mut kills = 0;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    loop {
        let mut running = 0;
        for (i, kid) in kids.iter_mut().enumerate() {
            let done = word(&block.lock()?.guard(), i + 1);
            match kid.as_mut().map(|k| k.get().try_wait()) {
                Some(Ok(Some(status))) => {
                    ensure(status.success(), format!("counter {i} failed: {status}"))?;
                    *kid = None;
                }
                Some(_) => running += 1,
                None if done < each => {
                    *kid = Some(spawn(
                        "count",
                        &path,
                        &[("MMHEAP_CHILD", (i + 1).to_string()), ("MMHEAP_COUNT_EACH", each.to_string())],
                    ));
                    running += 1;
                }
                None => {}
            }
        }
        if running == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let victim = (rng % CHILDREN) as usize;
        if kills < 60 && rng % 3 == 0 {
            if let Some(kid) = kids[victim].take() {
                kill(kid)?;
                kills += 1;
            }
        }
    }
    ensure(kills > 0, "no counter was killed")?;
    let mut g = block.lock()?.guard();
    repair(&mut g);
    let done: u64 = (1..=CHILDREN as usize).map(|i| word(&g, i)).sum();
    ensure(done == CHILDREN * each, format!("{done} increments completed"))?;
    ensure(
        word(&g, 0) == done,
        format!("the counter says {}, {done} completed ({kills} kills)", word(&g, 0)),
    )?;
    drop(g);
    ensure(m.check()?.is_sound(), "sound")
}

fn atomics_across() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("a.mmheap");
    let m = store_with_lock(&path)?;
    let kids: Vec<Kid> = (0..2).map(|_| spawn("add", &path, &[])).collect();
    for _ in 0..10_000 {
        root(&m, "a")?.view_atomic::<AtomicU64>(0)?.fetch_add(1, Ordering::Relaxed);
    }
    for kid in kids {
        wait_ok(kid, "an adder")?;
    }
    let total = root(&m, "a")?.view_atomic::<AtomicU64>(0)?.load(Ordering::Relaxed);
    ensure(total == 30_000, format!("{total} of 30,000 additions"))
}

/// A child that locks "m" once and says whether it was told a holder died.
fn lock_once(path: &Path) -> Result<String, Failed> {
    let mut kid = spawn("lock-once", path, &[]);
    let line = lines_of(&mut kid)?.recv_timeout(Duration::from_secs(30)).map_err(|_| "the locker hangs")?;
    wait_ok(kid, "the locker")?;
    Ok(line)
}

fn leaked() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("l.mmheap");
    drop(store_with_lock(&path)?);
    // A process forgets its guard and detaches cleanly: nobody died, nothing recovers; the next
    // process given its registry slot must not take the word for its own.
    wait_ok(spawn("leak", &path, &[]), "the leaker")?;
    ensure(lock_once(&path)? == "holder died", "the leaked lock is taken over and reported")?;
    ensure(lock_once(&path)? == "consistent", "then given back")
}

fn stray_word() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("w.mmheap");
    let m = store_with_lock(&path)?;
    let lock_word = root(&m, "m")?.handle().offset + 32 + 64; // after the 64-byte area
    m.flush()?;
    drop(m);
    // A damaged word naming registry slot 0 (the next opener's own slot) with no nonce.
    let mut bytes = std::fs::read(&path)?;
    bytes[lock_word as usize..lock_word as usize + 4].copy_from_slice(&1u32.to_le_bytes());
    std::fs::write(&path, &bytes)?;
    ensure(lock_once(&path)? == "holder died", "taken over, not waited for")
}

fn forked() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("f.mmheap");
    drop(store_with_lock(&path)?);
    let mut kid = spawn("fork", &path, &[]);
    let line = lines_of(&mut kid)?.recv_timeout(Duration::from_secs(30)).map_err(|_| "no answer")?;
    ensure(line == "still held", format!("after the child dropped its copy: {line}"))?;
    wait_ok(kid, "the forker")
}

fn child(role: &str, path: &Path) -> Res {
    let m = MappedManager::open(path)?;
    match role {
        "hold" => {
            let block = m.root("m")?.ok_or("no root")?;
            let g = block.lock()?.guard();
            println!("locked");
            std::io::stdout().flush()?;
            let mut line = String::new();
            BufReader::new(std::io::stdin()).read_line(&mut line)?;
            drop(g);
            println!("released");
        }
        "leak" => {
            let block = m.root("m")?.ok_or("no root")?;
            std::mem::forget(block.lock()?.guard());
        }
        "lock-once" => {
            let block = m.root("m")?.ok_or("no root")?;
            let locked = block.lock()?;
            println!("{}", if locked.holder_died() { "holder died" } else { "consistent" });
            locked.guard().mark_consistent()?;
        }
        "fork" => {
            let block = m.root("m")?.ok_or("no root")?;
            let guard = block.lock()?.guard();
            // SAFETY: the child only drops its copy of the guard and leaves with `_exit`.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                drop(guard);
                // SAFETY: ends the forked child without running anything of the parent's.
                unsafe { libc::_exit(0) };
            }
            let mut status = 0;
            // SAFETY: waits for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            let other = block.clone();
            let waiter = std::thread::spawn(move || drop(other.lock()));
            std::thread::sleep(Duration::from_millis(300));
            println!("{}", if waiter.is_finished() { "released by the child" } else { "still held" });
            std::io::stdout().flush()?;
            drop(guard);
            waiter.join().map_err(|_| "the waiter panicked")?;
        }
        "add" => {
            let block = m.root("a")?.ok_or("no root")?;
            for _ in 0..10_000 {
                block.view_atomic::<AtomicU64>(0)?.fetch_add(1, Ordering::Relaxed);
            }
        }
        "count" => {
            let me = std::env::var("MMHEAP_CHILD")?.parse::<usize>()?;
            let each = std::env::var("MMHEAP_COUNT_EACH")?.parse::<u64>()?;
            let block = m.root("m")?.ok_or("no root")?;
            loop {
                let locked = block.lock()?;
                let died = locked.holder_died();
                let mut g = locked.guard();
                if died {
                    repair(&mut g);
                    g.mark_consistent()?;
                }
                let done = word(&g, me);
                if done >= each {
                    return Ok(());
                }
                // Undo record first, then the two words, then the record cleared: a death
                // anywhere in between is undone by the next holder.
                let counter = word(&g, 0);
                set(&mut g, 6, counter);
                set(&mut g, 7, done);
                set(&mut g, 5, me as u64);
                set(&mut g, 0, counter + 1);
                set(&mut g, me, done + 1);
                set(&mut g, 5, 0);
            }
        }
        _ => return Err(format!("no role {role}").into()),
    }
    Ok(())
}
