//! Containers in a heap: `SharedVec`, `SharedMap`, `SharedBytesMap`. Each against a model on
//! both managers; Tomate's dictionary behaviour, in one process and across processes; several
//! writer processes at once with readers checking every entry whole; and a writer killed at
//! every step of insert, remove, push, pop and growth (and at random instants) leaves the
//! container with each change whole or absent, the store sound and nothing leaked.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::*;
use libtest_mimic::{Failed, Trial};
use mmheap::{Error, MappedManager, MemoryManager, Options, SharedBytesMap, SharedMap, SharedVec};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn main() {
    child_or_tests(child, || {
        let mut trials = Vec::new();
        for (name, make) in managers() {
            let per_manager: [(&str, Test); 6] = [
                ("a_vec_follows_a_model", |make| vec_model(make()?.as_ref())),
                ("a_map_follows_a_model", |make| map_model(make()?.as_ref())),
                ("tomate_s_dictionary_behaviour", |make| tomate(make()?.as_ref()).map(drop)),
                ("a_container_opens_only_as_its_own_kind", |make| kinds(make()?.as_ref())),
                ("threads_write_and_read_at_once", |make| threads(make()?.as_ref())),
                ("empty_keys_values_and_large_ones", |make| edges(make()?.as_ref())),
            ];
            for (test, run) in per_manager {
                trials.push(Trial::test(format!("{name}::{test}"), move || run(make)));
            }
        }
        trials.push(Trial::test("store::tomate_s_dictionary_after_reopen_in_another_process", tomate_across));
        trials.push(Trial::test("store::writer_processes_at_once_and_readers_see_whole_entries", writers));
        for (role, point) in KILLS {
            trials.push(Trial::test(
                format!("store::{role}_killed_at_{point}_is_whole_or_absent"),
                move || killed(role, point),
            ));
        }
        trials.push(Trial::test("store::writers_killed_at_random_instants_leave_it_whole", random_kills));
        trials
    });
}

fn vec_model(m: &dyn MemoryManager) -> Result<(), Failed> {
    let v = SharedVec::<u64>::new_in(m)?;
    let mut model: Vec<u64> = Vec::new();
    let mut rng = SmallRng::seed_from_u64(7);
    // Pushes outnumber pops, so chunks fill (128 u64 a chunk) and the chunk table grows.
    for step in 0..6000u64 {
        match rng.gen_range(0..10) {
            0..=5 => {
                v.push(step)?;
                model.push(step);
            }
            6..=7 => ensure(v.pop()? == model.pop(), format!("pop at step {step}"))?,
            8 if !model.is_empty() => {
                let i = rng.gen_range(0..model.len());
                let old = v.set(i as u64, !step)?;
                ensure(old == std::mem::replace(&mut model[i], !step), "set returns the old element")?;
            }
            _ => {
                let i = rng.gen_range(0..model.len() as u64 + 2);
                ensure(v.get(i)? == model.get(i as usize).copied(), format!("get {i}"))?;
            }
        }
        if step % 997 == 0 {
            ensure(v.to_vec()? == model, format!("to_vec at step {step}"))?;
        }
    }
    v.flush()?;
    ensure(v.len()? == model.len() as u64 && v.to_vec()? == model, "the whole vector")?;
    ensure(matches!(v.set(model.len() as u64, 0), Err(Error::OutOfBounds { .. })), "set past the end")?;
    while v.pop()?.is_some() {}
    ensure(v.is_empty()? && v.to_vec()?.is_empty(), "emptied")?;
    Ok(())
}

fn map_model(m: &dyn MemoryManager) -> Result<(), Failed> {
    let map = SharedMap::<u64, [u32; 3]>::new_in(m)?;
    let mut model: HashMap<u64, [u32; 3]> = HashMap::new();
    let mut rng = SmallRng::seed_from_u64(11);
    for step in 0..8000u32 {
        let key = rng.gen_range(0..3000u64);
        match rng.gen_range(0..4) {
            0 | 1 => ensure(map.insert(&key, &[step, 1, 2])? == model.insert(key, [step, 1, 2]), "insert")?,
            2 => ensure(map.remove(&key)? == model.remove(&key), "remove")?,
            _ => ensure(map.get(&key)? == model.get(&key).copied(), "get")?,
        }
    }
    ensure(map.len()? == model.len() as u64, "len")?;
    map.flush()?; // small segments are slots of spans with pages: those go too
    let mut entries = map.entries()?;
    entries.sort();
    let mut expected: Vec<_> = model.into_iter().collect();
    expected.sort();
    ensure(entries == expected, "entries")
}

/// 1,000 inserts -> 1,000; the 500 odd keys removed -> 500; 250 get-or-add of absent keys ->
/// 750; enumeration yields 750 unique keys. Returns the map's top block.
fn tomate(m: &dyn MemoryManager) -> Result<mmheap::MemoryBlock, Failed> {
    let map = SharedBytesMap::new_in(m)?;
    for i in 0..1000 {
        map.insert(format!("key{i}").as_bytes(), format!("value{i}").as_bytes())?;
    }
    ensure(map.len()? == 1000, "1,000 entries")?;
    for i in (1..1000).step_by(2) {
        ensure(map.remove(format!("key{i}").as_bytes())?.is_some(), "an odd key removed")?;
    }
    ensure(map.len()? == 500, "500 entries")?;
    for i in (1..500).step_by(2) {
        let v = map.get_or_insert_with(format!("key{i}").as_bytes(), || format!("again{i}").into_bytes())?;
        ensure(v == format!("again{i}").into_bytes(), "get-or-add adds")?;
    }
    let v = map.get_or_insert_with(b"key0", || b"never".to_vec())?;
    ensure(v == b"value0", "get-or-add of a present key gets")?;
    tomate_check(&map)?;
    Ok(map.block().clone())
}

fn tomate_check(map: &SharedBytesMap) -> Result<(), Failed> {
    ensure(map.len()? == 750, format!("750 entries, not {}", map.len()?))?;
    let entries = map.entries()?;
    let keys: std::collections::HashSet<_> = entries.iter().map(|(k, _)| k.clone()).collect();
    ensure(entries.len() == 750 && keys.len() == 750, "enumeration yields 750 unique keys")?;
    for (k, v) in &entries {
        let i: u32 = std::str::from_utf8(&k[3..])?.parse()?;
        let want = if i % 2 == 0 { format!("value{i}") } else { format!("again{i}") };
        ensure(v == want.as_bytes(), format!("value of key{i}"))?;
    }
    Ok(())
}

fn kinds(m: &dyn MemoryManager) -> Result<(), Failed> {
    let v = SharedVec::<u32>::new_in(m)?;
    let map = SharedMap::<u32, u32>::new_in(m)?;
    let not = |r: mmheap::Result<()>| matches!(r, Err(Error::NotAContainer(_)));
    ensure(not(SharedVec::<u64>::open(v.block().clone()).map(drop)), "a vec of u32 is no vec of u64")?;
    ensure(not(SharedMap::<u32, u32>::open(v.block().clone()).map(drop)), "a vec is no map")?;
    ensure(not(SharedMap::<u32, u64>::open(map.block().clone()).map(drop)), "another value type")?;
    ensure(not(SharedBytesMap::open(map.block().clone()).map(drop)), "a typed map is no bytes map")?;
    ensure(not(SharedBytesMap::open(m.allocate(100)?).map(drop)), "plain bytes")?;
    ensure(not(SharedBytesMap::open(m.allocate_linked(2, 32)?).map(drop)), "a zeroed linked block")?;
    ensure(SharedVec::<u32>::open(v.block().clone()).is_ok(), "the same kind opens")?;
    ensure(matches!(SharedVec::<()>::new_in(m), Err(Error::InvalidOptions(_))), "zero-sized elements")?;
    Ok(())
}

/// The value every writer gives `key`: a reader checks each entry it sees is whole.
fn value_of(key: u64, version: u64) -> [u64; 4] {
    let x = key.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ version;
    [key, version, x, !x]
}

fn whole(key: u64, v: &[u64; 4]) -> bool {
    v[0] == key && v[2] == key.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ v[1] && v[3] == !v[2]
}

fn threads(m: &dyn MemoryManager) -> Result<(), Failed> {
    let map = SharedMap::<u64, [u64; 4]>::new_in(m)?;
    let v = SharedVec::<[u64; 2]>::new_in(m)?;
    std::thread::scope(|s| -> Result<(), Failed> {
        let mut writers = Vec::new();
        for t in 0..3u64 {
            let (map, v) = (&map, &v);
            writers.push(s.spawn(move || -> mmheap::Result<()> {
                for i in 0..600u64 {
                    map.insert(&(t * 1000 + i), &value_of(t * 1000 + i, i))?;
                    map.insert(&(t * 1000 + i / 2), &value_of(t * 1000 + i / 2, i + 7))?;
                    v.push([t, i])?;
                }
                Ok(())
            }));
        }
        let reader = s.spawn(|| -> Result<u64, String> {
            let mut seen = 0;
            for round in 0..200u64 {
                for (k, val) in map.entries().map_err(|e| e.to_string())? {
                    if !whole(k, &val) {
                        return Err(format!("torn entry {k}: {val:?}"));
                    }
                    seen += 1;
                }
                let got = map.get(&(round % 3 * 1000 + round)).map_err(|e| e.to_string())?;
                if got.is_some_and(|val| !whole(round % 3 * 1000 + round, &val)) {
                    return Err("torn get".into());
                }
            }
            Ok(seen)
        });
        for w in writers {
            w.join().map_err(|_| "writer panicked")??;
        }
        reader.join().map_err(|_| "reader panicked")??;
        Ok(())
    })?;
    ensure(map.len()? == 1800 && v.len()? == 1800, "every insert and push")?;
    let mut per_thread = [0u64; 3];
    for [t, i] in v.to_vec()? {
        ensure(i == per_thread[t as usize], "each thread's pushes in order")?;
        per_thread[t as usize] += 1;
    }
    Ok(())
}

fn edges(m: &dyn MemoryManager) -> Result<(), Failed> {
    let map = SharedBytesMap::new_in(m)?;
    ensure(map.insert(b"", b"")?.is_none() && map.get(b"")? == Some(vec![]), "an empty key and value")?;
    let big = vec![0xa5u8; 300_000];
    map.insert(b"big", &big)?;
    ensure(map.get(b"big")?.as_deref() == Some(&big[..]), "a 300 KB value")?;
    ensure(map.remove(b"missing")?.is_none(), "removing what is not there")?;
    ensure(map.len()? == 2, "two entries")?;
    // A closure that writes the same map from inside its writers' lock is refused, not a hang;
    // reading it, or writing another map, is fine.
    let other = SharedBytesMap::new_in(m)?;
    let v = map.get_or_insert_with(b"fresh", || {
        let again = map.insert(b"zz", b"1");
        let read = map.get(b"big").map(|v| v.map(|v| v.len()));
        let elsewhere = other.insert(b"k", b"v");
        let ok =
            matches!(again, Err(Error::Reentrant)) && matches!(read, Ok(Some(300_000))) && elsewhere.is_ok();
        if ok {
            b"made".to_vec()
        } else {
            b"wrong".to_vec()
        }
    })?;
    ensure(v == b"made", "a reentrant write is Error::Reentrant; reads and other maps work")?;
    ensure(map.get(b"zz")?.is_none() && other.len()? == 1, "what was refused did not happen")?;
    Ok(())
}

fn store_at(path: &Path) -> Result<MappedManager, Failed> {
    Ok(MappedManager::open_or_create(path, &Options::new())?)
}

fn tomate_across() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("t.mmheap");
    {
        let m = store_at(&path)?;
        let top = tomate(&m)?;
        m.set_root("dict", &top)?;
    }
    wait_ok(spawn("tomate-check", &path, &[]), "the checking process")?;
    let m = MappedManager::open(&path)?;
    exact(&m)?;
    Ok(())
}

fn writers() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("w.mmheap");
    {
        let m = store_at(&path)?;
        m.set_root("map", SharedMap::<u64, [u64; 4]>::new_in(&m)?.block())?;
        m.set_root("vec", SharedVec::<[u64; 2]>::new_in(&m)?.block())?;
    }
    let kids: Vec<Kid> = (0..3).map(|t| spawn("writer", &path, &[("WRITER", t.to_string())])).collect();
    let reader = spawn("reader", &path, &[]);
    for kid in kids {
        wait_ok(kid, "a writer")?;
    }
    wait_ok(reader, "the reader")?;
    let m = MappedManager::open(&path)?;
    let map = SharedMap::<u64, [u64; 4]>::open(m.root("map")?.ok_or("map root")?)?;
    let v = SharedVec::<[u64; 2]>::open(m.root("vec")?.ok_or("vec root")?)?;
    ensure(map.len()? == 3 * WRITES && v.len()? == 3 * WRITES, "every write of every process")?;
    for (k, val) in map.entries()? {
        ensure(whole(k, &val) && val[1] == WRITES - 1, format!("entry {k} is the last write"))?;
    }
    exact(&m)?;
    Ok(())
}

const WRITES: u64 = 400;

/// Kill points: (what the child does, where it stops).
const KILLS: [(&str, &str); 10] = [
    ("insert", "map-segment-made"),
    ("insert", "map-segment-linked"),
    ("remove", "map-segment-linked"),
    ("grow", "map-directory-built"),
    ("push", "vec-tail-made"),
    ("pop", "vec-tail-made"),
    ("push-full", "vec-chunk-linked"),
    ("push-grow", "vec-table-built"),
    ("pop-chunk", "vec-tail-made"),
    ("pop-chunk", "vec-tail-moved-down"),
];

/// The store the kill children change: a map of `MAP_KEYS` keys (the next insert grows its
/// directory) and a vector of `VEC_LEN` elements (a full tail, and a full chunk table: the next
/// push grows it).
fn kill_store(path: &Path, role: &str) -> Result<(), Failed> {
    let m = MappedManager::create(path, &Options::new())?;
    let map = SharedMap::<u64, [u64; 4]>::new_in(&m)?;
    for k in 0..MAP_KEYS {
        map.insert(&k, &value_of(k, 0))?;
    }
    let v = SharedVec::<u64>::new_in(&m)?;
    for i in 0..VEC_LEN {
        v.push(i)?;
    }
    match role {
        "push" => drop(v.pop()?),        // a tail with room
        "pop-chunk" => v.push(VEC_LEN)?, // a tail of one element
        _ => {}
    }
    m.set_root("map", map.block())?;
    m.set_root("vec", v.block())?;
    Ok(())
}

/// 8 segments x 8 entries: one more and the directory doubles.
const MAP_KEYS: u64 = 64;
/// 128 u64 a chunk; a chunk table of 2 links (tail, one full chunk) is full at 2 chunks.
const VEC_LEN: u64 = 256;

/// What the child does once the store is made; it pauses (and is killed) inside.
fn kill_op(role: &str, m: &MappedManager) -> Res {
    let map = SharedMap::<u64, [u64; 4]>::open(m.root("map")?.ok_or("map")?)?;
    let v = SharedVec::<u64>::open(m.root("vec")?.ok_or("vec")?)?;
    match role {
        "insert" => drop(map.insert(&1000, &value_of(1000, 0))?),
        "remove" => drop(map.remove(&5)?),
        "grow" => drop(map.insert(&1000, &value_of(1000, 0))?),
        "push" => v.push(VEC_LEN - 1)?,
        "pop" | "pop-chunk" => drop(v.pop()?),
        "push-full" | "push-grow" => v.push(VEC_LEN)?,
        _ => return Err(format!("no kill role {role}").into()),
    }
    Ok(())
}

fn killed(role: &'static str, point: &'static str) -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("k.mmheap");
    kill_store(&path, role)?;
    kill(paused(role, &path, point, &[])?)?;
    let m = MappedManager::open(&path)?;
    exact(&m)?;
    let map = SharedMap::<u64, [u64; 4]>::open(m.root("map")?.ok_or("map")?)?;
    let v = SharedVec::<u64>::open(m.root("vec")?.ok_or("vec")?)?;
    consistent(&map, &v)?;
    // The next writer repairs what the death left and works.
    map.insert(&2000, &value_of(2000, 0))?;
    v.push(7)?;
    consistent(&map, &v)?;
    exact(&m)?;
    Ok(())
}

/// The map's entries are whole and its count right; the vector is `0, 1, 2, ...` but for its
/// last element (7 after `killed`'s own push).
fn consistent(map: &SharedMap<u64, [u64; 4]>, v: &SharedVec<u64>) -> Result<(), Failed> {
    let entries = map.entries()?;
    ensure(entries.iter().all(|(k, val)| whole(*k, val)), "every entry whole")?;
    ensure(map.len()? == entries.len() as u64, format!("count {} of {} entries", map.len()?, entries.len()))?;
    let all = v.to_vec()?;
    ensure(v.len()? == all.len() as u64, "the vector's length")?;
    let n = all.len().saturating_sub(1);
    ensure(all[..n].iter().enumerate().all(|(i, x)| *x == i as u64), "the vector's elements")?;
    Ok(())
}

fn random_kills() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("r.mmheap");
    kill_store(&path, "churn")?;
    let mut rng = SmallRng::seed_from_u64(env_u64("MMHEAP_SEED", 5));
    let rounds = env_u64("MMHEAP_KILL_ROUNDS", 12);
    for round in 0..rounds {
        let mut kid = spawn("churn", &path, &[("ROUND", round.to_string())]);
        let lines = lines_of(&mut kid)?;
        lines.recv_timeout(std::time::Duration::from_secs(30))?; // started
        std::thread::sleep(std::time::Duration::from_micros(rng.gen_range(200..30_000)));
        kill(kid)?;
        let m = MappedManager::open(&path)?;
        exact(&m)?;
        let map = SharedMap::<u64, [u64; 4]>::open(m.root("map")?.ok_or("map")?)?;
        let v = SharedVec::<u64>::open(m.root("vec")?.ok_or("vec")?)?;
        consistent(&map, &v)?;
    }
    Ok(())
}

fn child(role: &str, path: &Path) -> Res {
    let m = MappedManager::open(path)?;
    match role {
        "tomate-check" => tomate_check(&SharedBytesMap::open(m.root("dict")?.ok_or("dict root")?)?)
            .map_err(|e| format!("{e:?}").into()),
        "writer" => {
            let t: u64 = std::env::var("WRITER")?.parse()?;
            let map = SharedMap::<u64, [u64; 4]>::open(m.root("map")?.ok_or("map")?)?;
            let v = SharedVec::<[u64; 2]>::open(m.root("vec")?.ok_or("vec")?)?;
            for i in 0..WRITES {
                map.insert(&(t * 10_000 + i), &value_of(t * 10_000 + i, i))?;
                v.push([t, i])?;
            }
            // Rewrite every key: its last version is WRITES - 1.
            for i in 0..WRITES {
                map.insert(&(t * 10_000 + i), &value_of(t * 10_000 + i, WRITES - 1))?;
            }
            Ok(())
        }
        "reader" => {
            let map = SharedMap::<u64, [u64; 4]>::open(m.root("map")?.ok_or("map")?)?;
            for _ in 0..100 {
                for (k, val) in map.entries()? {
                    if !whole(k, &val) {
                        return Err(format!("torn entry {k}: {val:?}").into());
                    }
                }
            }
            Ok(())
        }
        "churn" => {
            let map = SharedMap::<u64, [u64; 4]>::open(m.root("map")?.ok_or("map")?)?;
            let v = SharedVec::<u64>::open(m.root("vec")?.ok_or("vec")?)?;
            let round: u64 = std::env::var("ROUND")?.parse()?;
            println!("started");
            let mut rng = SmallRng::seed_from_u64(round);
            // The vector stays 0, 1, 2, ...
            loop {
                let k = rng.gen_range(0..5000u64);
                match rng.gen_range(0..5) {
                    0 | 1 => drop(map.insert(&k, &value_of(k, round))?),
                    2 => drop(map.remove(&k)?),
                    3 => v.push(v.len()?)?,
                    _ => drop(v.pop()?),
                }
            }
        }
        role => {
            kill_op(role, &m)?;
            Err("the kill op returned without pausing".into())
        }
    }
}
