//! Typed values (rkyv archives in blocks): made and read on both managers, read in another
//! process through a typed root, refused as another type, validated before use (damaged and
//! hostile bytes are typed errors, never undefined behaviour), split across linked blocks and
//! updated in parts.

mod common;

use std::path::Path;

use common::*;
use libtest_mimic::{Failed, Trial};
use mmheap::{Error, MappedManager, MemoryManager, Options, Value};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq, Clone)]
struct Order {
    id: u64,
    customer: String,
    lines: Vec<Line>,
    note: Option<String>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq, Clone)]
struct Line {
    sku: u32,
    quantity: u16,
    price_cents: i64,
}

/// A value whose parts live in other blocks: `parts[i]` is the link index of a `Chapter`.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
struct Book {
    title: String,
    parts: Vec<u32>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
struct Chapter {
    heading: String,
    words: u32,
}

fn order(id: u64, lines: usize) -> Order {
    Order {
        id,
        customer: format!("customer-{id}"),
        lines: (0..lines)
            .map(|i| Line { sku: i as u32, quantity: (i % 7) as u16, price_cents: -(i as i64) })
            .collect(),
        note: (id % 2 == 0).then(|| "leave at the door".to_owned()),
    }
}

fn main() {
    child_or_tests(child, || {
        let mut trials = Vec::new();
        for (name, make) in managers() {
            let per_manager: [(&str, Test); 4] = [
                ("a_value_reads_back_in_place", |make| round_trip(make()?.as_ref())),
                ("another_type_is_refused", |make| wrong_type(make()?.as_ref())),
                ("hostile_bytes_are_refused", |make| hostile(make()?.as_ref())),
                ("a_value_split_across_linked_blocks_is_updated_in_parts", |make| parts(make()?.as_ref())),
            ];
            for (test, run) in per_manager {
                trials.push(Trial::test(format!("{name}::{test}"), move || run(make)));
            }
        }
        trials.push(Trial::test("store::a_typed_root_is_read_in_another_process", across));
        trials.push(Trial::test("store::flipped_bits_in_a_stored_value_never_pass_unnoticed_as_ub", flipped));
        trials
    });
}

fn round_trip(m: &dyn MemoryManager) -> Result<(), Failed> {
    for lines in [0, 1, 10, 20_000] {
        let o = order(lines as u64, lines);
        let v = Value::new_in(m, &o)?;
        let a = v.get();
        ensure(a.id == o.id && a.customer == o.customer.as_str(), "fields in place")?;
        ensure(a.lines.len() == lines && a.note.is_some() == o.note.is_some(), "the vector and the option")?;
        ensure(v.deserialize()? == o, "deserialized whole")?;
        // Another reference to the block is checked, and reads the same.
        let again = Value::<Order>::from_block(v.block().clone())?;
        ensure(again.deserialize()? == o, "checked and read again")?;
        // The block is exactly the archive plus the 16-byte value header.
        let plain = rkyv::to_bytes::<rkyv::rancor::Error>(&o)?;
        ensure(v.block().len() == plain.len() + 16, "serialized straight in, at its size")?;
    }
    Ok(())
}

fn wrong_type(m: &dyn MemoryManager) -> Result<(), Failed> {
    let v = Value::new_in(m, &order(1, 2))?;
    let as_line = Value::<Line>::from_block(v.block().clone());
    ensure(matches!(as_line, Err(Error::WrongType { .. })), "an Order is no Line")?;
    let plain = m.allocate(64)?;
    ensure(matches!(Value::<Order>::from_block(plain), Err(Error::WrongType { .. })), "plain bytes")?;
    let short = m.allocate(3)?;
    ensure(matches!(Value::<u64>::from_block(short), Err(Error::WrongType { found: 0, .. })), "too short")?;
    Ok(())
}

/// A block written by hand with the right fingerprint and bytes that are no archive.
fn forged(m: &dyn MemoryManager, archive: &[u8]) -> mmheap::Result<mmheap::MemoryBlock> {
    let mut b = m.allocate(16 + archive.len())?;
    let bytes = b.as_mut_slice()?;
    bytes[..8].copy_from_slice(&mmheap::value::fingerprint::<Order>().to_le_bytes());
    bytes[8..12].copy_from_slice(&(archive.len() as u32).to_le_bytes());
    bytes[12..16].copy_from_slice(&1u32.to_le_bytes());
    bytes[16..].copy_from_slice(archive);
    Ok(b)
}

fn hostile(m: &dyn MemoryManager) -> Result<(), Failed> {
    let good = rkyv::to_bytes::<rkyv::rancor::Error>(&order(2, 3))?.to_vec();
    let invalid = |b| matches!(Value::<Order>::from_block(b), Err(Error::InvalidValue(_)));
    // Too short for the root, relative pointers sent out of bounds, invalid UTF-8.
    ensure(invalid(forged(m, &good[..4])?), "a truncated archive")?;
    let mut far = good.clone();
    let n = far.len();
    for b in &mut far[n - 48..] {
        *b = 0x7f;
    }
    ensure(invalid(forged(m, &far)?), "pointers out of bounds")?;
    let mut text = good.clone();
    let at = text.windows(10).position(|w| w == b"customer-2").ok_or("the name's bytes")?;
    text[at] = 0xff;
    ensure(invalid(forged(m, &text)?), "a string that is not UTF-8")?;
    ensure(Value::<Order>::from_block(forged(m, &good)?)?.deserialize()? == order(2, 3), "the good one")?;
    // A length field that disagrees with the block.
    let mut b = forged(m, &good)?;
    b.as_mut_slice()?[8] ^= 1;
    ensure(invalid(b), "a length that disagrees")?;
    // Random bytes: refused or read, never a crash.
    let mut rng = SmallRng::seed_from_u64(3);
    for _ in 0..500 {
        let mut junk = good.clone();
        for _ in 0..rng.gen_range(1..6) {
            let i = rng.gen_range(0..junk.len());
            junk[i] ^= 1 << rng.gen_range(0..8);
        }
        if let Ok(v) = Value::<Order>::from_block(forged(m, &junk)?) {
            let _ = v.get().customer.len() + v.get().lines.len();
        }
    }
    Ok(())
}

fn parts(m: &dyn MemoryManager) -> Result<(), Failed> {
    let chapters = ["Loomings", "The Carpet-Bag", "The Spouter-Inn"];
    let book = Book { title: "Moby-Dick".into(), parts: (0..chapters.len() as u32).collect() };
    let whole = Value::new_linked_in(m, &book, chapters.len())?;
    for (i, heading) in chapters.iter().enumerate() {
        let c = Value::new_in(m, &Chapter { heading: (*heading).into(), words: 1000 + i as u32 })?;
        whole.block().set_link(i, Some(c.block()))?;
    }
    let heading = |i: usize| -> Result<String, Failed> {
        let c = whole.link_value::<Chapter>(whole.get().parts[i].to_native() as usize)?.ok_or("a part")?;
        Ok(c.get().heading.to_string())
    };
    ensure(heading(1)? == "The Carpet-Bag", "a part read through its link")?;
    // Replace one part: the others, and the book's own archive, are untouched.
    let new = Value::new_in(m, &Chapter { heading: "The Carpet-Bag (revised)".into(), words: 7 })?;
    whole.block().set_link(1, Some(new.block()))?;
    ensure(
        heading(1)? == "The Carpet-Bag (revised)" && heading(2)? == "The Spouter-Inn",
        "one part replaced",
    )?;
    ensure(whole.get().title == "Moby-Dick", "the book itself")?;
    ensure(matches!(whole.link_value::<Order>(0), Err(Error::WrongType { .. })), "a part of another type")?;
    Ok(())
}

fn across() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("v.mmheap");
    {
        let m = MappedManager::create(&path, &Options::new())?;
        m.set_root("order", Value::new_in(&m, &order(42, 100))?.block())?;
    }
    wait_ok(spawn("reader", &path, &[]), "the reading process")?;
    Ok(())
}

fn flipped() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("f.mmheap");
    let (start, len) = {
        let m = MappedManager::create(&path, &Options::new())?;
        let v = Value::new_in(&m, &order(7, 30))?;
        m.set_root("order", v.block())?;
        (v.block().offset().get() as usize, v.block().len())
    };
    let pristine = std::fs::read(&path)?;
    let mut rng = SmallRng::seed_from_u64(9);
    let (mut refused, mut read) = (0, 0);
    for _ in 0..200 {
        let mut bytes = pristine.clone();
        let i = start + 16 + rng.gen_range(0..len - 16);
        bytes[i] ^= 1 << rng.gen_range(0..8);
        std::fs::write(&path, &bytes)?;
        let m = MappedManager::open(&path)?;
        match m.root_value::<Order>("order") {
            Err(Error::InvalidValue(_)) => refused += 1,
            Ok(Some(v)) => {
                let _ = v.deserialize();
                read += 1
            }
            other => return Err(format!("unexpected {other:?}").into()),
        }
    }
    ensure(refused > 0 && refused + read == 200, format!("{refused} refused, {read} read"))?;
    Ok(())
}

fn child(role: &str, path: &Path) -> Res {
    let m = MappedManager::open(path)?;
    match role {
        "reader" => {
            let v = m.root_value::<Order>("order")?.ok_or("the root")?;
            if v.deserialize()? != order(42, 100) || v.get().lines[99].sku != 99 {
                return Err("the order read back differs".into());
            }
            if !matches!(m.root_value::<Chapter>("order"), Err(Error::WrongType { .. })) {
                return Err("read as another type".into());
            }
            Ok(())
        }
        _ => Err(format!("no role {role}").into()),
    }
}
