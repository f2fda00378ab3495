//! Typed values: put and get of a 1 KiB and a 1 MiB structured value (`Value::new_in` into a
//! store, then `root_value` with its validation, reading a field), against what a user would
//! do without mmheap: serialize the same value with rkyv into a `Vec` and write it to a file,
//! then read the file back and validate it. Same run, interleaved trials, medians, in
//! microseconds per operation.
//!
//!     cargo bench --bench values

use std::time::Instant;

use mmheap::{MappedManager, Options, Value};

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

#[derive(rkyv::Archive, rkyv::Serialize)]
struct Order {
    id: u64,
    customer: String,
    lines: Vec<Line>,
}

#[derive(rkyv::Archive, rkyv::Serialize)]
struct Line {
    sku: u32,
    quantity: u16,
    price_cents: i64,
    label: String,
}

/// An order of about `bytes` bytes archived.
fn order(bytes: usize) -> Order {
    let n = bytes * 10 / 256; // about 25.6 archived bytes a line
    let lines = (0..n).map(|i| Line {
        sku: i as u32,
        quantity: 1,
        price_cents: i as i64,
        label: format!("item{i:04}"),
    });
    Order { id: 7, customer: "customer-7".into(), lines: lines.collect() }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Res {
    let dir = tempfile::tempdir()?;
    let store = MappedManager::create(dir.path().join("v.mmheap"), &Options::new().max_size(8 << 30))?;
    let file = dir.path().join("value.rkyv");
    println!("| value | archived bytes | put: mmheap | put: rkyv to Vec + write file | ratio | get: mmheap (validated) | get: read file + validate | ratio |");
    println!("|---|---|---|---|---|---|---|---|");
    for (label, bytes, reps) in [("1 KiB", 1024, 2000), ("1 MiB", 1 << 20, 20)] {
        let value = order(bytes);
        let size = rkyv::to_bytes::<rkyv::rancor::Error>(&value)?.len();
        let (mut put_m, mut put_f, mut get_m, mut get_f) = (vec![], vec![], vec![], vec![]);
        for _ in 0..7 {
            let t = Instant::now();
            for _ in 0..reps {
                let v = Value::new_in(&store, &value)?;
                store.set_root("order", v.block())?;
            }
            put_m.push(t.elapsed().as_secs_f64() * 1e6 / reps as f64);
            let t = Instant::now();
            for _ in 0..reps {
                let archive = rkyv::to_bytes::<rkyv::rancor::Error>(&value)?;
                std::fs::write(&file, &archive)?;
            }
            put_f.push(t.elapsed().as_secs_f64() * 1e6 / reps as f64);
            let t = Instant::now();
            let mut sum = 0u64;
            for _ in 0..reps {
                let v = store.root_value::<Order>("order")?.ok_or("root")?;
                sum += u64::from(v.get().lines.len() as u32) + v.get().id.to_native();
            }
            get_m.push(t.elapsed().as_secs_f64() * 1e6 / reps as f64);
            let t = Instant::now();
            for _ in 0..reps {
                let raw = std::fs::read(&file)?;
                let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(raw.len());
                aligned.extend_from_slice(&raw);
                let a = rkyv::access::<ArchivedOrder, rkyv::rancor::Error>(&aligned)?;
                sum -= u64::from(a.lines.len() as u32) + a.id.to_native();
            }
            get_f.push(t.elapsed().as_secs_f64() * 1e6 / reps as f64);
            assert_eq!(sum, 0);
        }
        let (pm, pf, gm, gf) = (median(put_m), median(put_f), median(get_m), median(get_f));
        println!(
            "| {label} | {size} | {pm:.2} us | {pf:.2} us | {:.2}x | {gm:.2} us | {gf:.2} us | {:.2}x |",
            pm / pf,
            gm / gf
        );
    }
    Ok(())
}
