//! Crash safety with real processes killed by SIGKILL.
//!
//! Counts are set for CI; `MMHEAP_KILLS`, `MMHEAP_LOCK_KILLS`, `MMHEAP_RECOVERY_KILLS`,
//! `MMHEAP_RACE_ROUNDS` and `MMHEAP_SEED` override them (`scripts/soak` runs 100,000 kills).
//! Times are measured and printed, never asserted, except as a guard against hangs.

mod common;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use libtest_mimic::{Failed, Trial};
use mmheap::{BlockHandle, Error, MappedManager, MemoryBlock, MemoryManager, Options};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn main() {
    child_or_tests(child, || {
        vec![
            Trial::test("kill_matrix", kill_matrix),
            Trial::test("lock_holder_killed_at_pause_points", lock_holder_killed),
            Trial::test("a_takeover_that_finds_damage_changes_nothing", takeover_finds_damage),
            Trial::test("killed_during_recovery", killed_during_recovery),
            Trial::test("create_race", create_race),
            Trial::test("pid_reuse_is_judged_dead", pid_reuse),
            Trial::test("open_after_unclean_shutdown_recovers_clean_open_does_not", open_recovers),
        ]
    });
}

// ---- children ---------------------------------------------------------------------------

fn child(role: &str, store: &Path) -> Res {
    match role {
        "crashy" => crashy(store),
        "pause" => pause_child(store),
        "holder" => {
            let m = MappedManager::open_or_create(store, &Options::new())?;
            let (_mine, _theirs) = grab(&m)?;
            println!("ready");
            thread::sleep(Duration::from_secs(600));
            Ok(())
        }
        "recoverer" => {
            let m = MappedManager::open(store)?; // recovery runs in here, and pauses
            drop(m);
            Ok(())
        }
        "racer" => {
            let m = MappedManager::open_or_create(store, &Options::new().initial_size(64 << 10))?;
            let sound = m.check()?.is_sound();
            println!("{} {}", if m.created() { "created" } else { "opened" }, sound);
            Ok(())
        }
        _ => Err(format!("unknown role {role}").into()),
    }
}

/// The parent's published blocks, passed to children as `off gen id;...`.
fn parent_handles() -> Vec<(BlockHandle, u64)> {
    let text = std::env::var("MMHEAP_PARENT_BLOCKS").unwrap_or_default();
    text.split(';')
        .filter(|s| !s.is_empty())
        .filter_map(|s| {
            let (h, id) = s.rsplit_once(' ')?;
            Some((parse_handle(h).ok()?, id.parse().ok()?))
        })
        .collect()
}

/// Some blocks of our own and some holds on the parent's: what a dead child leaves behind.
fn grab(m: &MappedManager) -> Res<(Vec<MemoryBlock>, Vec<MemoryBlock>)> {
    let mut mine = Vec::new();
    for i in 0..10 {
        let mut b = m.allocate(100 * (i + 1))?;
        stamp(&mut b, 7_000 + i as u64, 0)?;
        mine.push(b);
    }
    let theirs = parent_handles().iter().map(|(h, _)| m.block_from_handle(*h)).collect::<Result<_, _>>()?;
    Ok((mine, theirs))
}

/// Random allocate (small, large, aligned) / resize / free / share-with-parent / acquire-by-handle / release, until
/// killed.
fn crashy(store: &Path) -> Res {
    let m = MappedManager::open(store)?;
    let seed = env_u64("MMHEAP_SEED", 0);
    let mut rng = SmallRng::seed_from_u64(seed);
    let parents = parent_handles();
    let mut mine: Vec<(MemoryBlock, u64)> = Vec::new();
    let mut theirs: Vec<MemoryBlock> = Vec::new();
    let mut next_id = seed << 24;
    loop {
        match rng.gen_range(0..12) {
            0..=3 if mine.len() < 200 => {
                next_id += 1;
                // Blocks up to 128 KiB go through the thread cache (exact classes to 608 bytes,
                // geometric above; sharing one shrinks it), larger ones through the deferred
                // list; aligned ones split off a gap.
                let len = match rng.gen_range(0..8) {
                    0..=3 => rng.gen_range(0..600),
                    4..=6 => rng.gen_range(0..4096),
                    _ => rng.gen_range(0..200_000),
                };
                let mut b = match rng.gen_range(0..4) {
                    0 => m.allocate_aligned(len, 1 << rng.gen_range(5..=12))?,
                    _ => m.allocate(len)?,
                };
                stamp(&mut b, next_id, 0)?;
                mine.push((b, next_id));
            }
            4..=5 if !mine.is_empty() => {
                let (b, id) = mine.swap_remove(rng.gen_range(0..mine.len()));
                verify(&b, id, b.len())?;
            }
            6 if !mine.is_empty() => {
                let k = rng.gen_range(0..mine.len());
                let (b, id) = &mut mine[k];
                if !b.is_published() {
                    let old = b.len();
                    m.resize(b, rng.gen_range(0..8192))?;
                    verify(b, *id, old.min(b.len()))?;
                    stamp(b, *id, old.min(b.len()))?;
                }
            }
            7 if !mine.is_empty() => {
                let (b, id) = &mine[rng.gen_range(0..mine.len())];
                println!("share {} {id}", format_handle(b.handle()));
            }
            8..=9 if !parents.is_empty() => {
                let (h, id) = parents[rng.gen_range(0..parents.len())];
                let b = m.block_from_handle(h)?;
                verify(&b, id, b.len())?;
                theirs.push(b);
            }
            10..=11 if !theirs.is_empty() => drop(theirs.swap_remove(rng.gen_range(0..theirs.len()))),
            _ => {}
        }
    }
}

/// Reaches the pause point named in `MMHEAP_TEST_PAUSE` while holding the store lock.
fn pause_child(store: &Path) -> Res {
    let m = MappedManager::open(store)?;
    let mut a = m.allocate(1000)?; // "alloc-carved" pauses here
    let _fence = m.allocate(10)?;
    m.resize(&mut a, 100_000)?; // "resize-copied" pauses here (the block must move)
    let (h, _) = parent_handles()[0];
    let _b = m.block_from_handle(h)?; // "hold-counted" pauses here
    Err("the pause point was never reached".into())
}

// ---- the parent's side ------------------------------------------------------------------

/// A store with the parent's own stamped, published blocks.
struct Scene {
    _dir: tempfile::TempDir,
    path: PathBuf,
    m: MappedManager,
    own: Vec<(MemoryBlock, u64)>,
    used0: u64,
    live0: u64,
}

impl Scene {
    fn new() -> Result<Scene, Failed> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("crash.mmheap");
        let m = MappedManager::create(&path, &Options::new().initial_size(4 << 20).max_size(1 << 30))?;
        let mut own = Vec::new();
        for id in 1..=16u64 {
            let mut b = m.allocate(64 * id as usize)?;
            stamp(&mut b, id, 0)?;
            let _ = b.handle();
            own.push((b, id));
        }
        let s = m.stats()?;
        Ok(Scene { _dir: dir, path, m, own, used0: s.used_bytes, live0: s.live_blocks })
    }

    fn env(&self) -> (&'static str, String) {
        let list: Vec<String> =
            self.own.iter().map(|(b, id)| format!("{} {id}", format_handle(b.handle()))).collect();
        ("MMHEAP_PARENT_BLOCKS", list.join(";"))
    }

    /// After a death: sound, own blocks intact, and (once `held` is dropped) nothing leaked.
    fn assert_clean(&self, held: Vec<(MemoryBlock, u64)>, what: &str) -> Result<(), Failed> {
        let report = self.m.check()?;
        ensure(report.is_sound(), format!("{what}: check found {:?}", report.problems))?;
        ensure(report.dead_processes == 0, format!("{what}: {} dead slots left", report.dead_processes))?;
        for (b, id) in self.own.iter().chain(held.iter()) {
            verify(b, *id, b.len()).map_err(|e| format!("{what}: {e}"))?;
        }
        drop(held);
        let s = self.m.stats()?;
        ensure(
            s.used_bytes == self.used0 && s.live_blocks == self.live0,
            format!(
                "{what}: leak: {} blocks / {} bytes, expected {} / {}",
                s.live_blocks, s.used_bytes, self.live0, self.used0
            ),
        )?;
        ensure(s.attached_processes == 1, format!("{what}: {} attached", s.attached_processes))
    }
}

/// Waits for a line from a child, with a deadline (a guard against hangs, not a timing test).
fn expect_line(lines: &mpsc::Receiver<String>, want: &str) -> Result<(), Failed> {
    let line = lines.recv_timeout(Duration::from_secs(60)).map_err(|_| format!("no {want:?} from child"))?;
    ensure(line.starts_with(want), format!("child said {line:?}, expected {want:?}"))
}

fn kill_matrix() -> Result<(), Failed> {
    let kills = env_u64("MMHEAP_KILLS", 1000);
    let seed = env_u64("MMHEAP_SEED", 1);
    let scene = Scene::new()?;
    let mut rng = SmallRng::seed_from_u64(seed);
    let (mut slowest, mut handed, mut recovered_blocks) = (Duration::ZERO, 0u64, 0u64);
    for k in 0..kills {
        let mut kid =
            spawn("crashy", &scene.path, &[scene.env(), ("MMHEAP_SEED", (seed << 32 | k).to_string())]);
        let lines = lines_of(&mut kid)?;
        let deadline = Instant::now() + Duration::from_micros(rng.gen_range(0..20_000));
        let mut held = Vec::new();
        while Instant::now() < deadline {
            match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    let (h, id) =
                        line.strip_prefix("share ").and_then(|r| r.rsplit_once(' ')).ok_or("bad line")?;
                    match scene.m.block_from_handle(parse_handle(h).map_err(|e| e.to_string())?) {
                        Ok(b) => held.push((b, id.parse::<u64>()?)),
                        Err(Error::StaleHandle { .. }) => {}
                        Err(e) => return Err(format!("kill {k}: resolving a shared block: {e}").into()),
                    }
                }
                Err(_) => break,
            }
        }
        // The child loops until killed: one that stopped by itself hit an error.
        let mut child = kid.take();
        if let Some(status) = child.try_wait()? {
            return Err(format!("kill {k} (seed {seed}): the child stopped by itself: {status}").into());
        }
        child.kill()?;
        child.wait()?;
        let t = Instant::now();
        let report = scene.m.recover()?;
        slowest = slowest.max(t.elapsed());
        recovered_blocks += report.blocks_freed;
        handed += held.len() as u64;
        ensure(t.elapsed() < Duration::from_secs(30), "recovery hung")?;
        scene.assert_clean(held, &format!("kill {k} (seed {seed})"))?;
    }
    println!(
        "kill matrix: {kills} kills survived, {handed} blocks handed over intact, {recovered_blocks} blocks reclaimed, 0 leaks; slowest carry-on {slowest:?}"
    );
    Ok(())
}

fn lock_holder_killed() -> Result<(), Failed> {
    let kills = env_u64("MMHEAP_LOCK_KILLS", 210);
    let scene = Scene::new()?;
    let points = ["alloc-carved", "resize-copied", "hold-counted"];
    let mut slowest = Duration::ZERO;
    for k in 0..kills {
        let point = points[k as usize % points.len()];
        let mut kid = spawn("pause", &scene.path, &[scene.env(), ("MMHEAP_TEST_PAUSE", point.to_string())]);
        let lines = lines_of(&mut kid)?;
        expect_line(&lines, &format!("paused {point}"))?;
        kill(kid)?;
        // The next operation finds the holder dead, takes the lock over and recovers.
        let t = Instant::now();
        let probe = scene.m.allocate(100)?;
        slowest = slowest.max(t.elapsed());
        ensure(t.elapsed() < Duration::from_secs(30), "takeover hung")?;
        drop(probe);
        // Whichever call took the lock over, its recovery's report reaches `recover`.
        let report = scene.m.recover()?;
        ensure(report.dead_processes == 1, format!("lock kill {k}: the takeover's report: {report:?}"))?;
        let s = scene.m.stats()?;
        ensure(s.recovered_processes == k + 1, format!("lock kill {k}: stats count it: {s:?}"))?;
        scene.assert_clean(Vec::new(), &format!("lock kill {k} at {point}"))?;
    }
    println!("lock holder killed {kills} times inside the lock; longest takeover {slowest:?}");
    Ok(())
}

/// A lock holder dies; the store is damaged meanwhile. The next caller takes the lock over,
/// its recovery refuses the damage, and the file is byte for byte as it was (the lock given
/// back to the dead holder, so the next caller tries again). Once the damage is gone, the next
/// caller recovers.
fn takeover_finds_damage() -> Result<(), Failed> {
    use std::os::unix::fs::FileExt;
    let scene = Scene::new()?;
    let mut kid = spawn("pause", &scene.path, &[scene.env(), ("MMHEAP_TEST_PAUSE", "alloc-carved".into())]);
    expect_line(&lines_of(&mut kid)?, "paused alloc-carved")?;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&scene.path)?;
    let header = scene.own[3].0.offset().get() - mmheap::format::HEADER_SIZE;
    let mut tag = [0u8; 8];
    file.read_exact_at(&mut tag, header)?;
    let mut bad = tag;
    bad[1] ^= 0x40; // a bit of the size
    file.write_all_at(&bad, header)?;
    let before = std::fs::read(&scene.path)?;
    kill(kid)?;
    for _ in 0..2 {
        match scene.m.allocate(200_000) {
            Err(Error::Corrupt { .. }) => {}
            other => return Err(format!("a damaged store after a takeover: {other:?}").into()),
        }
        ensure(std::fs::read(&scene.path)? == before, "the refused takeover changed the file")?;
    }
    file.write_all_at(&tag, header)?;
    let b = scene.m.allocate(200_000)?;
    drop(b);
    ensure(scene.m.recover()?.dead_processes == 1, "the repaired store recovers the dead holder")?;
    scene.assert_clean(Vec::new(), "takeover after damage")
}

fn killed_during_recovery() -> Result<(), Failed> {
    let kills = env_u64("MMHEAP_RECOVERY_KILLS", 110);
    let scene = Scene::new()?;
    for k in 0..kills {
        let mut holder = spawn("holder", &scene.path, &[scene.env()]);
        expect_line(&lines_of(&mut holder)?, "ready")?;
        kill(holder)?;
        let env = [scene.env(), ("MMHEAP_TEST_PAUSE", "recovery-midway".to_string())];
        let mut recoverer = spawn("recoverer", &scene.path, &env);
        expect_line(&lines_of(&mut recoverer)?, "paused recovery-midway")?;
        kill(recoverer)?;
        // Two dead processes now: the holder (half recovered) and the recoverer, which died
        // holding the lock. Our next call takes over and finishes the job.
        scene.m.recover()?;
        scene.assert_clean(Vec::new(), &format!("recovery kill {k}"))?;
    }
    println!("recovering process killed {kills} times; every next recovery succeeded");
    Ok(())
}

fn create_race() -> Result<(), Failed> {
    let rounds = env_u64("MMHEAP_RACE_ROUNDS", 200);
    let dir = tempfile::tempdir()?;
    for r in 0..rounds {
        let path = dir.path().join(format!("race-{r}.mmheap"));
        let kids: Vec<Kid> = (0..16).map(|_| spawn("racer", &path, &[])).collect();
        let mut created = 0;
        for kid in kids {
            let out = kid.take().wait_with_output()?;
            ensure(out.status.success(), format!("round {r}: racer failed"))?;
            let text = String::from_utf8(out.stdout)?;
            ensure(text.ends_with(" true\n"), format!("round {r}: a racer saw an unsound store: {text}"))?;
            created += usize::from(text.starts_with("created"));
        }
        ensure(created == 1, format!("round {r}: {created} processes created the store"))?;
        let leftovers = std::fs::read_dir(dir.path())?.count() as u64;
        ensure(leftovers == r + 1, format!("round {r}: temporary files left behind"))?;
    }
    println!("create race: {rounds} rounds of 16 processes, exactly one creator each");
    Ok(())
}

fn pid_reuse() -> Result<(), Failed> {
    use mmheap::format::{slot_offset, SLOT_COUNT, SLOT_PID, SLOT_START_TIME};
    use std::os::unix::fs::FileExt;
    let scene = Scene::new()?;
    let mut holder = spawn("holder", &scene.path, &[scene.env()]);
    let child_pid = holder.get().id();
    expect_line(&lines_of(&mut holder)?, "ready")?;
    kill(holder)?;
    // Give the dead child's slot a pid that is alive (ours) and a wrong start time.
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&scene.path)?;
    let mut planted = false;
    for i in 0..SLOT_COUNT {
        let mut pid = [0u8; 4];
        file.read_exact_at(&mut pid, slot_offset(i) + SLOT_PID)?;
        if u32::from_le_bytes(pid) == child_pid {
            file.write_all_at(&std::process::id().to_le_bytes(), slot_offset(i) + SLOT_PID)?;
            file.write_all_at(&12345u64.to_le_bytes(), slot_offset(i) + SLOT_START_TIME)?;
            planted = true;
        }
    }
    ensure(planted, "found the child's slot")?;
    ensure(scene.m.stats()?.attached_processes == 1, "a live pid does not make a slot alive")?;
    let report = scene.m.recover()?;
    ensure(report.dead_processes == 1, format!("{report:?}"))?;
    // its 10 blocks and its hold table; its 16 holds on our blocks
    ensure(report.blocks_freed == 11 && report.holds_released == 16, format!("{report:?}"))?;
    scene.assert_clean(Vec::new(), "pid reuse")
}

fn open_recovers() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("unclean.mmheap");
    // The only process using the store dies holding blocks: an unclean shutdown.
    let mut holder = spawn("holder", &path, &[]);
    expect_line(&lines_of(&mut holder)?, "ready")?;
    kill(holder)?;
    let m = MappedManager::open(&path)?;
    let s = m.stats()?;
    ensure(s.recoveries == 1, format!("recovery ran at open: {s:?}"))?;
    ensure(
        s.live_blocks == 0 && s.used_bytes == 0,
        format!("the dead process's blocks were reclaimed: {s:?}"),
    )?;
    ensure(m.check()?.is_sound(), "sound")?;
    drop(m);
    // Clean shutdown: reopening runs no recovery (and so walks no heap).
    let m = MappedManager::open(&path)?;
    ensure(m.stats()?.recoveries == 1, "no recovery after a clean shutdown")?;
    Ok(())
}
