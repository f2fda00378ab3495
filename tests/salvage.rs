//! Salvage's repairs, one kind of damage at a time, on a small store (two small roots, a larger
//! one, a channel with a small and a larger message): recovery refuses the damage and leaves
//! the file as it was; `check` reports what recovery refuses; salvage repairs it, says what it
//! did, and everything it did not name reads back. (`tests/recovery.rs` flips bits at random.)

mod common;

use std::path::{Path, PathBuf};

use common::*;
use libtest_mimic::{Failed, Trial};
use mmheap::format::*;
use mmheap::inspect::{BlockKind, Snapshot};
use mmheap::{Error, MappedManager, MemoryManager, Options};

fn main() {
    let tests = vec![
        Trial::test("a_damaged_page_header_is_given_back_to_its_span", damaged_page),
        Trial::test("a_root_whose_reference_word_was_zeroed_is_refused_then_renewed", zeroed_root_word),
        Trial::test("a_flipped_quarantine_bit_is_refused_then_cleared", quarantine_bit),
        Trial::test("a_rooted_block_left_unpublished_is_what_check_and_recover_both_see", unpublished_root),
        Trial::test("a_free_block_whose_header_was_hit_is_free_again", free_header_hit),
        Trial::test("a_shrunken_root_is_reported_beside_its_quarantine", shrunken_root),
        Trial::test("garbage_in_a_free_registry_slot_harms_nothing", free_slot_garbage),
        Trial::test("a_queued_small_message_left_unpublished_is_renewed", unpublished_message),
        Trial::test("a_size_cut_short_by_less_than_a_block_is_given_back", size_cut_short),
        Trial::test("a_damaged_store_key_is_restored_from_the_check_words", damaged_key),
        Trial::test("a_generation_counter_out_of_range_is_set_again", damaged_counter),
        Trial::test("a_damaged_ring_tail_is_refused_then_repaired", damaged_tail),
        Trial::test("a_shared_area_that_does_not_fit_is_dropped_and_named", unfit_shared_area),
        Trial::test("a_damaged_ring_head_is_found_then_moved_back", damaged_head),
        Trial::test("a_queued_message_whose_word_was_hit_is_found_then_dropped", hit_carried_word),
        Trial::test("a_damaged_slot_word_is_found_then_told_back", damaged_slot_word),
        Trial::test("check_finds_an_unpublished_ring_and_a_malformed_channel_name", ring_and_name),
        Trial::test("a_table_entry_its_name_does_not_find_is_moved_or_renamed", misplaced_name),
        Trial::test("a_ring_whose_head_or_tail_breaks_its_bounds_is_queued_again", requeued),
        Trial::test("a_second_reference_to_a_sole_message_is_cleared", sole_twice),
    ];
    libtest_mimic::run(&libtest_mimic::Arguments::from_args(), tests).exit();
}

/// A store with two small roots (slots of one span, published: the span has a page), a larger
/// one, and a channel holding a small message (a slot too) and a larger one.
struct Small {
    _dir: tempfile::TempDir,
    path: PathBuf,
    page: u64,
    big: u64,
}

fn small_store() -> Result<Small, Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("s.mmheap");
    let m = MappedManager::create(&path, &Options::new().initial_size(256 << 10).max_size(256 << 10))?;
    for (name, text) in [("a", &b"the first small root"[..]), ("b", b"another")] {
        let mut x = m.allocate(text.len())?;
        x.as_mut_slice()?.copy_from_slice(text);
        m.set_root(name, &x)?;
    }
    let mut big = m.allocate(3000)?;
    big.as_mut_slice()?.fill(9);
    m.set_root("big", &big)?;
    let tx = m.channel("q", 4)?.sender()?;
    for len in [30, 3000] {
        let mut b = m.allocate(len)?;
        b.as_mut_slice()?.fill(len as u8);
        if len == 30 {
            // Published, so the send takes the locked way and the ring names it plainly (a
            // sole reference's send queues it unpublished, its length in the slot word).
            let _ = b.handle();
        }
        tx.send(b)?;
    }
    let big = big.offset().get() - HEADER_SIZE;
    drop((tx, m));
    let snap = Snapshot::take(&path)?;
    let (blocks, _) = snap.blocks(|_| {});
    let page = blocks.iter().find(|b| b.kind == BlockKind::Page).ok_or("a page")?.offset;
    Ok(Small { _dir: dir, path, page, big })
}

/// After recovery or salvage: sound, every root and message reads back.
fn small_intact(path: &Path) -> Result<(), Failed> {
    let m = MappedManager::open(path)?;
    ensure(m.check()?.is_sound(), format!("unsound: {:?}", m.check()?.problems))?;
    for (name, text) in [("a", &b"the first small root"[..]), ("b", b"another")] {
        let b = m.root(name)?.ok_or(format!("root {name}"))?;
        ensure(b.as_slice() == text, format!("root {name}"))?;
    }
    ensure(m.root("big")?.ok_or("big")?.as_slice() == [9u8; 3000], "big")?;
    let rx = m.channel("q", 4)?.receiver()?;
    for len in [30, 3000] {
        let b = rx.try_recv().map_err(|e| format!("message of {len}: {e}"))?;
        ensure(b.as_slice().iter().all(|&x| x == len as u8), "message bytes")?;
    }
    ensure(m.check()?.is_sound(), "sound after reading everything")
}

fn poke(path: &Path, at: u64, bytes: &[u8]) -> Result<Vec<u8>, Failed> {
    let mut all = std::fs::read(path)?;
    all[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
    std::fs::write(path, &all)?;
    Ok(all)
}

/// The ring of the channel `name`, from its entry in the fixed directory or the channels'
/// table (whose entries are laid out as the directory's).
fn ring_of(path: &Path, name: &str) -> Result<u64, Failed> {
    Ok(channel_entry(path, name)?.1)
}

/// The entry of the channel `name` (as [`ring_of`] finds it) and its ring.
fn channel_entry(path: &Path, name: &str) -> Result<(u64, u64), Failed> {
    let bytes = std::fs::read(path)?;
    let word = |at: u64| u64::from_le_bytes(bytes[at as usize..][..8].try_into().unwrap_or_default());
    let table = word(SB_CHANNEL_TABLE);
    let fixed = (0..CHANNEL_COUNT).map(|i| CHANNELS_OFFSET + i * CHANNEL_SIZE);
    let entries = (0..word(table + HEADER_SIZE + ROOT_TABLE_CAPACITY).min(1024))
        .map(|i| table + HEADER_SIZE + ROOT_TABLE_ENTRIES + i * CHANNEL_SIZE)
        .filter(|_| table != 0);
    let named = |e: &u64| {
        let len =
            u32::from_le_bytes(bytes[(e + CHANNEL_NAME_LEN) as usize..][..4].try_into().unwrap_or_default());
        len as usize == name.len() && bytes[(e + CHANNEL_NAME) as usize..][..name.len()] == *name.as_bytes()
    };
    let entry = fixed.chain(entries).find(named).ok_or(format!("no channel {name:?}"))?;
    Ok((entry, word(entry + CHANNEL_RING)))
}

/// Refused untouched, then salvaged; returns the salvage's report.
fn refuse_then_salvage(path: &Path) -> Result<mmheap::SalvageReport, Failed> {
    let before = std::fs::read(path)?;
    let e = MappedManager::recover_file(path).map(|_| ()).expect_err("damage is refused");
    ensure(matches!(e, Error::Corrupt { .. }), format!("{e}"))?;
    ensure(std::fs::read(path)? == before, "refused untouched")?;
    Ok(MappedManager::salvage(path)?)
}

/// The page of the span that holds the small roots' and message's records loses its header
/// (zeroed, a flag flipped), its pointer back to the span, or a granule of its size: salvage
/// gives the page back to its span, records intact, and nothing is lost.
fn damaged_page() -> Result<(), Failed> {
    type Damage = fn(u64) -> Vec<u8>;
    let variants: [(&str, u64, Damage); 5] = [
        ("tag zeroed", 0, |_| vec![0; 8]),
        ("PAGE flag off", 0, |t| (t & !8).to_le_bytes().to_vec()),
        ("FREE flag on", 0, |t| (t | 1).to_le_bytes().to_vec()),
        ("size 16 short", 0, |t| (t - 16).to_le_bytes().to_vec()),
        ("span pointer flipped", HEADER_SIZE, |w| (w ^ 1 << 12).to_le_bytes().to_vec()),
    ];
    for (what, at, damage) in variants {
        let s = small_store()?;
        let word = u64::from_le_bytes(std::fs::read(&s.path)?[(s.page + at) as usize..][..8].try_into()?);
        poke(&s.path, s.page + at, &damage(word))?;
        let report = refuse_then_salvage(&s.path).map_err(|e| format!("{what}: {e:?}"))?;
        ensure(report.dropped.is_empty(), format!("{what}: nothing dropped: {report:?}"))?;
        small_intact(&s.path).map_err(|e| format!("{what}: {e:?}"))?;
    }
    Ok(())
}

/// A rooted block's reference and check words zeroed: it reads as an unpublished block that a
/// root names, which no crash leaves. Recovery refuses; salvage publishes it again with a new
/// generation, and reading the root keeps the store sound.
fn zeroed_root_word() -> Result<(), Failed> {
    let s = small_store()?;
    poke(&s.path, s.big + HDR_RC, &[0; 16])?;
    let report = refuse_then_salvage(&s.path)?;
    ensure(report.renewed.len() == 1 && report.renewed[0].name == "big", format!("{report:?}"))?;
    ensure(report.dropped.is_empty(), format!("{report:?}"))?;
    small_intact(&s.path)?;
    ensure(MappedManager::recover_file(&s.path).is_ok(), "and recovers cleanly after")
}

/// The published bit of a rooted block's reference word cleared: `check` reports what
/// recovery refuses (they disagreed: check said sound), at the block.
fn unpublished_root() -> Result<(), Failed> {
    let s = small_store()?;
    let word = u64::from_le_bytes(std::fs::read(&s.path)?[(s.big + HDR_RC) as usize..][..8].try_into()?);
    poke(&s.path, s.big + HDR_RC, &(word & !(1 << 63)).to_le_bytes())?;
    let report = Snapshot::take(&s.path)?.check()?;
    let seen =
        report.problems.iter().any(|p| p.what == "root names an unpublished block" && p.offset == s.big);
    ensure(seen, format!("check: {:?}", report.problems))?;
    ensure(MappedManager::recover_file(&s.path).is_err(), "recovery refuses it")
}

/// Bit 60 (the quarantine flag) set in a used block's tag: a quarantined range must have no
/// header words, so recovery refuses it and salvage clears the bit.
fn quarantine_bit() -> Result<(), Failed> {
    let s = small_store()?;
    let tag = u64::from_le_bytes(std::fs::read(&s.path)?[s.big as usize..][..8].try_into()?);
    poke(&s.path, s.big, &(tag | 1 << 60).to_le_bytes())?;
    let report = refuse_then_salvage(&s.path)?;
    ensure(report.quarantined.is_empty() && report.dropped.is_empty(), format!("{report:?}"))?;
    small_intact(&s.path).map_err(|e| {
        format!("{e:?}; {report:?}; roots {:?}", MappedManager::open(&s.path).and_then(|m| m.roots()))
    })?;
    ensure(MappedManager::open(&s.path)?.stats()?.quarantined_bytes == 0, "no quarantine left")
}

/// The size in a free block's header hit: salvage finds the block's footer and makes the range
/// free again instead of fencing off free space for good.
fn free_header_hit() -> Result<(), Failed> {
    let s = small_store()?;
    let snap = Snapshot::take(&s.path)?;
    let (blocks, _) = snap.blocks(|_| {});
    let last = blocks.iter().rev().find(|b| b.kind == BlockKind::Block).ok_or("last")?;
    ensure(last.free, "the store ends with free space")?;
    let tag = u64::from_le_bytes(std::fs::read(&s.path)?[last.offset as usize..][..8].try_into()?);
    poke(&s.path, last.offset, &(tag ^ 1 << 20).to_le_bytes())?;
    let report = refuse_then_salvage(&s.path)?;
    ensure(report.quarantined.is_empty(), format!("free space fenced off: {report:?}"))?;
    small_intact(&s.path)?;
    let m = MappedManager::open(&s.path)?;
    ensure(m.stats()?.largest_free >= last.size, "the free space is free")
}

/// A root's own size shrunk: its tail is quarantined and the report says which root may have
/// lost it.
/// Its bytes are also written with 0x5b (once with 9s): a word of those has the quarantine
/// bit set, so what salvage fences off reads as an old quarantine's header, which it must
/// still report as its own (found by an outside break attempt: the report was empty).
fn shrunken_root() -> Result<(), Failed> {
    for fill in [9u8, 0x5b] {
        let s = small_store()?;
        poke(&s.path, s.big + HEADER_SIZE, &[fill; 3000])?;
        let tag = u64::from_le_bytes(std::fs::read(&s.path)?[s.big as usize..][..8].try_into()?);
        poke(&s.path, s.big, &(tag - 1024).to_le_bytes())?;
        let report = refuse_then_salvage(&s.path)?;
        ensure(report.bordering.iter().any(|b| b.name == "big"), format!("{fill}: {report:?}"))?;
        let end = s.big + (tag & 0x0000_ffff_ffff_fff0) - 1024; // the size field (docs/format.md)
        let fenced = report.quarantined.iter().any(|&(at, len)| at == end && len >= 1024);
        ensure(fenced && report.found_damage(), format!("{fill}: {report:?}"))?;
        let m = MappedManager::open(&s.path)?;
        ensure(m.check()?.is_sound(), "sound")?;
        let left = m.root("big")?.ok_or("big")?;
        ensure(left.as_slice().iter().all(|&x| x == fill), "what is left of it reads back")?;
    }
    Ok(())
}

/// Table fields in a registry slot that is free name nothing: stats and check work, and a
/// recovery clears them.
fn free_slot_garbage() -> Result<(), Failed> {
    let s = small_store()?;
    let slot = REGISTRY_OFFSET + 5 * SLOT_SIZE;
    poke(&s.path, slot + SLOT_HOLDS, &0x0011_2233_4455_6677u64.to_le_bytes())?;
    poke(&s.path, slot + SLOT_CACHES, &0x8000u64.to_le_bytes())?;
    {
        let m = MappedManager::open(&s.path)?;
        let st = m.stats()?;
        ensure(st.live_blocks == 5, format!("stats still count the roots and messages: {st:?}"))?;
        ensure(m.check()?.is_sound(), "sound")?;
        m.recover()?;
    }
    let bytes = std::fs::read(&s.path)?;
    let field = |at: u64| u64::from_le_bytes(bytes[at as usize..][..8].try_into().unwrap());
    ensure(field(slot + SLOT_HOLDS) == 0 && field(slot + SLOT_CACHES) == 0, "cleared by recovery")?;
    small_intact(&s.path)
}

/// The ring's first queued message (a 30-byte slot): its reference word has its published bit
/// cleared, and its span's page pointer is garbage. A send publishes a slot before queueing
/// it, so this is damage: salvage renews the slot's record and the message is received.
fn unpublished_message() -> Result<(), Failed> {
    let s = small_store()?;
    let snap = Snapshot::take(&s.path)?;
    let (blocks, _) = snap.blocks(|_| {});
    // The slot that holds 30 bytes of 30s (the roots' slots hold text).
    let msg = blocks
        .iter()
        .filter(|b| b.kind == BlockKind::Slot)
        .find(|b| snap.payload(b.id).is_ok_and(|p| p.len() == 30 && p.iter().all(|&x| x == 30)))
        .ok_or("the message's slot")?
        .id;
    let p = msg & !(SPAN_SIZE - 1);
    let class = (msg % GRANULE - SLOT_MARK + 1) * GRANULE;
    let start = (SPAN_RC + 8 * span_slots(class)).next_multiple_of(GRANULE);
    let word = p + SPAN_RC + 8 * ((payload_of(msg) - p - start) / class);
    let w = u64::from_le_bytes(std::fs::read(&s.path)?[word as usize..][..8].try_into()?);
    poke(&s.path, word, &(w & !(1 << 63)).to_le_bytes())?;
    poke(&s.path, p + SPAN_PAGE, &0x1021_6300_0000_9100u64.to_le_bytes())?;
    let report = refuse_then_salvage(&s.path)?;
    ensure(report.dropped.is_empty(), format!("{report:?}"))?;
    ensure(report.renewed.iter().any(|r| r.kind == "message" && r.target == msg), format!("{report:?}"))?;
    let m = MappedManager::open(&s.path)?;
    let rx = m.channel("q", 4)?.receiver()?;
    let first = rx.try_recv().map_err(|e| format!("the renewed message: {e}"))?;
    ensure(first.as_slice().starts_with(&[30; 30]), "its bytes")?;
    ensure(rx.try_recv()?.as_slice() == [184u8; 3000], "the second message")?;
    ensure(m.check()?.is_sound(), "sound")
}

/// A root's size field cut by 16, 32 or 48 bytes: what is left before the next block cannot
/// be a block, so the size was what was hit: salvage gives it back, and says so.
fn size_cut_short() -> Result<(), Failed> {
    for cut in [16u64, 32, 48] {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("s.mmheap");
        let first = {
            let m = MappedManager::create(&path, &Options::new())?;
            let (mut a, mut b) = (m.allocate(512)?, m.allocate(512)?);
            a.as_mut_slice()?.fill(1);
            b.as_mut_slice()?.fill(2);
            m.set_root("a", &a)?;
            m.set_root("b", &b)?;
            a.offset().get() - HEADER_SIZE
        };
        let tag = u64::from_le_bytes(std::fs::read(&path)?[first as usize..][..8].try_into()?);
        poke(&path, first, &(tag - cut).to_le_bytes())?;
        let report = refuse_then_salvage(&path)?;
        ensure(report.resized.iter().any(|r| r.name == "a"), format!("cut {cut}: {report:?}"))?;
        let m = MappedManager::open(&path)?;
        ensure(m.root("a")?.ok_or("a")?.as_slice() == [1u8; 512], format!("cut {cut}: a whole again"))?;
        ensure(m.root("b")?.ok_or("b")?.as_slice() == [2u8; 512], "b")?;
        ensure(m.check()?.is_sound(), "sound")?;
    }
    Ok(())
}

/// The superblock's key damaged: every check word disagrees with it and agrees on another
/// key; salvage writes that one back, and nothing is quarantined, dropped or renewed.
fn damaged_key() -> Result<(), Failed> {
    for flip in [1u64, 1 << 40, u64::MAX] {
        let s = small_store()?;
        let key = u64::from_le_bytes(std::fs::read(&s.path)?[SB_KEY as usize..][..8].try_into()?);
        poke(&s.path, SB_KEY, &(key ^ flip).to_le_bytes())?;
        let report = refuse_then_salvage(&s.path)?;
        ensure(report.key_restored, format!("{report:?}"))?;
        ensure(
            report.quarantined.is_empty() && report.dropped.is_empty() && report.renewed.is_empty(),
            format!("nothing else: {report:?}"),
        )?;
        let now = u64::from_le_bytes(std::fs::read(&s.path)?[SB_KEY as usize..][..8].try_into()?);
        ensure(now == key, "the key is back")?;
        small_intact(&s.path)?;
    }
    Ok(())
}

/// The superblock's generation counter 0 or beyond what a slot's record holds: `check` says
/// so, recovery refuses, salvage sets it above every sealed generation and says so.
fn damaged_counter() -> Result<(), Failed> {
    for bad in [0u64, 1 << 56, u64::MAX] {
        let s = small_store()?;
        poke(&s.path, SB_NEXT_GEN, &bad.to_le_bytes())?;
        let found = Snapshot::take(&s.path)?.check()?;
        ensure(found.problems.iter().any(|p| p.offset == SB_NEXT_GEN), format!("check: {found:?}"))?;
        let report = refuse_then_salvage(&s.path)?;
        ensure(report.generation_counter_restored && report.found_damage(), format!("{report:?}"))?;
        small_intact(&s.path)?;
    }
    Ok(())
}

/// The ring's `tail` zeroed while two messages are queued: the ring then holds messages
/// outside its queue, which no crash leaves. Recovery refuses; salvage moves `tail` back over
/// them, and both are received.
fn damaged_tail() -> Result<(), Failed> {
    let s = small_store()?;
    let ring = ring_of(&s.path, "q")?;
    poke(&s.path, ring + HEADER_SIZE + RING_TAIL, &0u64.to_le_bytes())?;
    let report = refuse_then_salvage(&s.path)?;
    ensure(report.dropped.is_empty(), format!("{report:?}"))?;
    small_intact(&s.path)
}

/// A shared area whose footer does not fit its block, both ways a flip makes one: the shared
/// flag set in a plain rooted block's tag, and a real atomic area's footer hit. `check` says
/// so, recovery refuses, salvage clears the flag and names the block, and the bytes are kept.
fn unfit_shared_area() -> Result<(), Failed> {
    let s = small_store()?;
    let tag = u64::from_le_bytes(std::fs::read(&s.path)?[s.big as usize..][..8].try_into()?);
    poke(&s.path, s.big, &(tag | 1 << 62).to_le_bytes())?;
    let problems = Snapshot::take(&s.path)?.check()?.problems;
    let seen = problems.iter().any(|p| p.what == "shared area does not fit its block" && p.offset == s.big);
    ensure(seen, format!("check: {problems:?}"))?;
    let report = refuse_then_salvage(&s.path)?;
    ensure(report.unshared == [s.big] && report.found_damage(), format!("{report:?}"))?;
    ensure(report.dropped.is_empty() && report.quarantined.is_empty(), format!("{report:?}"))?;
    small_intact(&s.path)?;

    let s = small_store()?;
    let m = MappedManager::open(&s.path)?;
    let mut counters = m.allocate_atomic(24, 16)?;
    counters.as_mut_slice()?.fill(7);
    m.set_root("counters", &counters)?;
    let header = counters.offset().get() - HEADER_SIZE;
    // 24 bytes of its own, the 16-byte area, the lock and state words, then the footer.
    let footer_at = counters.offset().get() + 24 + 16 + 8;
    drop((counters, m));
    let footer = u64::from_le_bytes(std::fs::read(&s.path)?[footer_at as usize..][..8].try_into()?);
    ensure(footer == 1 << 63 | 16, format!("the footer of an atomic area of 16 bytes: {footer:#x}"))?;
    poke(&s.path, footer_at, &(footer | 1 << 39).to_le_bytes())?;
    let report = refuse_then_salvage(&s.path)?;
    ensure(report.unshared == [header], format!("{report:?}"))?;
    small_intact(&s.path)?;
    let m = MappedManager::open(&s.path)?;
    let kept = m.root("counters")?.ok_or("counters")?;
    ensure(kept.shared_len() == 0 && kept.len() > 24, format!("now plain, {} bytes", kept.len()))?;
    ensure(kept.as_slice()[..24] == [7; 24], "its own bytes are kept")
}

/// The ring's `head` moved forward by a flip (0 to 1): the message before it is outside the
/// queue (a receive clears its slot before `head` moves, so no crash leaves one there).
/// `check` finds it, recovery refuses, salvage moves `head` back, names the channel, and
/// both messages are received (found by an outside break attempt: salvage had freed the
/// message, saying no damage found, and left a store recovery refused).
fn damaged_head() -> Result<(), Failed> {
    let s = small_store()?;
    let ring = ring_of(&s.path, "q")?;
    poke(&s.path, ring + HEADER_SIZE + RING_HEAD, &1u64.to_le_bytes())?;
    let problems = Snapshot::take(&s.path)?.check()?.problems;
    let seen = problems.iter().any(|p| p.what == "channel ring holds messages outside its queue");
    ensure(seen, format!("check: {problems:?}"))?;
    let report = refuse_then_salvage(&s.path)?;
    ensure(report.dropped.is_empty() && report.found_damage(), format!("{report:?}"))?;
    ensure(report.rings_repaired.iter().any(|r| r.name == "q" && r.target == ring), format!("{report:?}"))?;
    small_intact(&s.path)?;
    ensure(MappedManager::recover_file(&s.path).is_ok(), "and recovers cleanly after")?;

    // A word outside the queue and not next to it (the last of four slots, while the queue
    // holds the first two): salvage clears it, named as a copy, since the block it names (a
    // root's) keeps its other holder.
    let s = small_store()?;
    let ring = ring_of(&s.path, "q")?;
    poke(&s.path, ring + HEADER_SIZE + RING_SLOTS + 3 * 8, &s.big.to_le_bytes())?;
    let report = refuse_then_salvage(&s.path)?;
    let cleared = report.cleared.iter().any(|d| d.kind == "message" && d.name == "q" && d.target == s.big);
    ensure(cleared && report.cleared.len() == 1 && report.dropped.is_empty(), format!("{report:?}"))?;
    ensure(report.rings_repaired.is_empty() && report.recovery.blocks_freed == 0, format!("{report:?}"))?;
    let slot3 = std::fs::read(&s.path)?[(ring + HEADER_SIZE + RING_SLOTS + 3 * 8) as usize..][..8].to_vec();
    ensure(slot3 == [0; 8], "the slot is cleared")?;
    small_intact(&s.path)?;
    ensure(MappedManager::recover_file(&s.path).is_ok(), "and recovers cleanly after")
}

/// The owner field of a queued message's reference word hit (a bit of it set: it names a
/// registry slot no process has), so that no receive can take it. `check` finds it as the
/// receive would, recovery refuses, salvage drops the message (named) and frees its block,
/// and the other message is received (found by an outside break attempt: check said sound,
/// salvage said no damage found, and every receive failed).
fn hit_carried_word() -> Result<(), Failed> {
    let s = small_store()?;
    let snap = Snapshot::take(&s.path)?;
    let (blocks, _) = snap.blocks(|_| {});
    let msg = blocks
        .iter()
        .filter(|b| b.kind == BlockKind::Block && !b.free)
        .find(|b| snap.payload(b.id).is_ok_and(|p| p.len() >= 3000 && p[..3000].iter().all(|&x| x == 184)))
        .ok_or("the 3000-byte message")?
        .offset;
    drop(snap);
    let w = u64::from_le_bytes(std::fs::read(&s.path)?[(msg + HDR_RC) as usize..][..8].try_into()?);
    ensure(w == 1 << 32, format!("queued as a sole reference: one other hold, {w:#x}"))?;
    poke(&s.path, msg + HDR_RC, &(w | 1 << 59).to_le_bytes())?;
    let problems = Snapshot::take(&s.path)?.check()?.problems;
    let what = "channel message's reference word is not the ring's";
    ensure(problems.iter().any(|p| p.what == what && p.offset == msg), format!("check: {problems:?}"))?;
    let report = refuse_then_salvage(&s.path)?;
    let dropped = report.dropped.iter().any(|d| d.kind == "message" && d.name == "q" && d.target == msg);
    ensure(dropped && report.dropped.len() == 1, format!("{report:?}"))?;
    ensure(report.recovery.blocks_freed == 1, format!("its block is freed: {report:?}"))?;
    let m = MappedManager::open(&s.path)?;
    ensure(m.check()?.is_sound(), format!("sound: {:?}", m.check()?.problems))?;
    let rx = m.channel("q", 4)?.receiver()?;
    ensure(rx.try_recv()?.as_slice().starts_with(&[30; 30]), "the other message")?;
    let more = rx.try_recv();
    ensure(matches!(more, Err(mmheap::RecvError::Empty | mmheap::RecvError::Disconnected)), "and no more")?;
    ensure(m.check()?.is_sound(), "sound after")
}

/// Slots in a span of `class`-byte slots (docs/format.md).
fn span_slots(class: u64) -> u64 {
    let room = SPAN_SIZE - HEADER_SIZE;
    let mut n = (room - SPAN_RC) / (class + 8);
    while (SPAN_RC + n * 8).next_multiple_of(GRANULE) + n * class > room {
        n -= 1;
    }
    n
}

/// A queued message's slot word hit where its block's reference word tells it back: a bit of
/// 48..63 set in the word of a published message (which is its block's offset alone), and bit
/// 63 cleared in the word of one a sole send queued (which carries its length). `check` finds
/// each as a receive would (it failed, while check said sound), recovery refuses, salvage
/// writes the word again and names the channel, and both messages are received (found by an
/// outside break attempt).
fn damaged_slot_word() -> Result<(), Failed> {
    for (what, pos, flip) in [("published, bit 50 set", 0, 1u64 << 50), ("sole, bit 63 cleared", 1, 1 << 63)]
    {
        let s = small_store()?;
        let ring = ring_of(&s.path, "q")?;
        let at = ring + HEADER_SIZE + RING_SLOTS + 8 * pos;
        let word = u64::from_le_bytes(std::fs::read(&s.path)?[at as usize..][..8].try_into()?);
        ensure((word >> 63 == 1) == (pos == 1), format!("{what}: the slot word {word:#x}"))?;
        poke(&s.path, at, &(word ^ flip).to_le_bytes())?;
        let problems = Snapshot::take(&s.path)?.check()?.problems;
        let seen = problems.iter().any(|p| p.what == "channel slot word is malformed" && p.offset == ring);
        ensure(seen, format!("{what}: check: {problems:?}"))?;
        let report = refuse_then_salvage(&s.path)?;
        ensure(report.dropped.is_empty(), format!("{what}: {report:?}"))?;
        ensure(report.rings_repaired.iter().any(|r| r.name == "q"), format!("{what}: {report:?}"))?;
        let now = u64::from_le_bytes(std::fs::read(&s.path)?[at as usize..][..8].try_into()?);
        ensure(now == word, format!("{what}: the word is {now:#x}, was {word:#x}"))?;
        small_intact(&s.path).map_err(|e| format!("{what}: {e:?}"))?;
    }
    Ok(())
}

/// Two things recovery refused while `check` called the store sound (found by an outside break
/// attempt): a channel's ring whose reference word lost its published bit (salvage publishes it
/// again), and a NUL in a channel's name (salvage gives the channel a new name).
fn ring_and_name() -> Result<(), Failed> {
    let s = small_store()?;
    let (entry, ring) = channel_entry(&s.path, "q")?;
    let w = u64::from_le_bytes(std::fs::read(&s.path)?[(ring + HDR_RC) as usize..][..8].try_into()?);
    poke(&s.path, ring + HDR_RC, &(w & !(1 << 63)).to_le_bytes())?;
    let problems = Snapshot::take(&s.path)?.check()?.problems;
    let what = "a root, channel or hold names an unpublished block";
    ensure(problems.iter().any(|p| p.what == what && p.offset == ring), format!("check: {problems:?}"))?;
    let report = refuse_then_salvage(&s.path)?;
    ensure(report.renewed.iter().any(|r| r.kind == "channel"), format!("{report:?}"))?;
    small_intact(&s.path)?;

    let s = small_store()?;
    let (entry2, _) = channel_entry(&s.path, "q")?;
    ensure(entry2 == entry, "the same layout")?;
    poke(&s.path, entry + CHANNEL_NAME, &[0])?;
    let problems = Snapshot::take(&s.path)?.check()?.problems;
    let what = "channel name is malformed";
    ensure(problems.iter().any(|p| p.what == what && p.offset == entry), format!("check: {problems:?}"))?;
    let report = refuse_then_salvage(&s.path)?;
    ensure(report.renamed.iter().any(|n| n.starts_with("salvaged-")), format!("{report:?}"))?;
    let m = MappedManager::open(&s.path)?;
    ensure(m.check()?.is_sound(), format!("sound: {:?}", m.check()?.problems))
}

/// A root in the roots table (a hash table: a name is found by probing from its hash) whose
/// name a flip turned into another: `r7` into `s7`, which nothing finds (its probe starts
/// elsewhere), and `r7` into `r6`, which finds the real `r6` first. `check` finds each (it
/// said sound, and the root was lost to every lookup: found by an outside break attempt),
/// recovery refuses, salvage moves `s7` to where its name leads, and gives the second `r6` a
/// new name; every root reads back under its name.
fn misplaced_name() -> Result<(), Failed> {
    for (new, kept) in [("s7", true), ("r6", false)] {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t.mmheap");
        let m = MappedManager::create(&path, &Options::new().initial_size(256 << 10).max_size(256 << 10))?;
        let bytes = |i: usize| format!("the bytes of root {i}").into_bytes();
        for i in 0..40 {
            let mut b = m.allocate(bytes(i).len())?;
            b.as_mut_slice()?.copy_from_slice(&bytes(i));
            m.set_root(&format!("r{i}"), &b)?;
        }
        drop(m);
        let file = std::fs::read(&path)?;
        let word = |at: u64| u64::from_le_bytes(file[at as usize..][..8].try_into().unwrap_or_default());
        let table = word(SB_ROOT_TABLE);
        ensure(table != 0, "the roots are in a table")?;
        let entries = table + HEADER_SIZE + ROOT_TABLE_ENTRIES;
        let entry = (0..word(table + HEADER_SIZE + ROOT_TABLE_CAPACITY))
            .map(|i| entries + i * ROOT_SIZE)
            .find(|&e| word(e + ROOT_BLOCK) != 0 && file[(e + ROOT_NAME) as usize..][..3] == *b"r7\0")
            .ok_or("r7's entry")?;
        poke(&path, entry + ROOT_NAME, new.as_bytes())?;
        let problems = Snapshot::take(&path)?.check()?.problems;
        let what = "root name does not find its entry";
        ensure(
            problems.iter().any(|p| p.what == what && p.offset == entry),
            format!("{new}: check: {problems:?}"),
        )?;
        let report = refuse_then_salvage(&path)?;
        ensure(report.dropped.is_empty(), format!("{new}: {report:?}"))?;
        let name = match kept {
            true => report.names_moved.iter().find(|n| n.kind == "root").map(|n| n.name.clone()),
            false => report.renamed.first().cloned(),
        };
        let name = name.ok_or(format!("{new}: {report:?}"))?;
        ensure(report.renamed.len() + report.names_moved.len() == 1, format!("{new}: {report:?}"))?;
        ensure((name == new) == kept, format!("{new}: renamed to {name}"))?;
        let m = MappedManager::open(&path)?;
        ensure(m.check()?.is_sound(), format!("{new}: sound: {:?}", m.check()?.problems))?;
        ensure(m.root(&name)?.ok_or("the moved root")?.as_slice() == bytes(7), format!("{new}: r7's bytes"))?;
        for i in (0..40).filter(|&i| i != 7) {
            let b = m.root(&format!("r{i}"))?.ok_or(format!("{new}: r{i}"))?;
            ensure(b.as_slice() == bytes(i), format!("{new}: r{i}'s bytes"))?;
        }
        drop(m);
        MappedManager::recover_file(&path).map_err(|e| format!("{new}: recovery after: {e}"))?;
    }
    Ok(())
}

/// One bit of the ring's `tail` or `head` flipped so that `head <= tail <= head + capacity`
/// no longer holds: salvage dropped the channel with every message (found by an outside break
/// attempt). The ring's block and capacity are sound, so its queue is the run of messages its
/// slots hold: both are received.
fn requeued() -> Result<(), Failed> {
    for (what, field, flip) in [("tail bit 3", RING_TAIL, 1u64 << 3), ("head bit 4", RING_HEAD, 1 << 4)] {
        let s = small_store()?;
        let ring = ring_of(&s.path, "q")?;
        let at = ring + HEADER_SIZE + field;
        let word = u64::from_le_bytes(std::fs::read(&s.path)?[at as usize..][..8].try_into()?);
        poke(&s.path, at, &(word ^ flip).to_le_bytes())?;
        let problems = Snapshot::take(&s.path)?.check()?.problems;
        ensure(
            problems.iter().any(|p| p.what == "channel ring is malformed"),
            format!("{what}: {problems:?}"),
        )?;
        let report = refuse_then_salvage(&s.path)?;
        ensure(report.dropped.is_empty(), format!("{what}: {report:?}"))?;
        ensure(report.rings_repaired.iter().any(|r| r.name == "q"), format!("{what}: {report:?}"))?;
        small_intact(&s.path).map_err(|e| format!("{what}: {e:?}"))?;
        MappedManager::recover_file(&s.path).map_err(|e| format!("{what}: recovery after: {e}"))?;
    }
    Ok(())
}

/// The ring's first slot word (a published 30-byte message) hit so that it names the second
/// message's block, which a sole send queued (its word says the ring's one hold): the block
/// is named twice, which no send leaves. `check` and recovery find it (salvage had left it,
/// and a receive then failed); salvage clears the copy, names it, and the block is received
/// once. The first message, which nothing names now, is freed.
fn sole_twice() -> Result<(), Failed> {
    let s = small_store()?;
    let ring = ring_of(&s.path, "q")?;
    let slots = ring + HEADER_SIZE + RING_SLOTS;
    let second = u64::from_le_bytes(std::fs::read(&s.path)?[(slots + 8) as usize..][..8].try_into()?);
    ensure(second >> 63 == 1, "the second message was queued by a sole send")?;
    let block = second & ((1 << 48) - 1);
    poke(&s.path, slots, &block.to_le_bytes())?;
    let problems = Snapshot::take(&s.path)?.check()?.problems;
    let what = "a block queued unpublished is named twice";
    ensure(problems.iter().any(|p| p.what == what && p.offset == block), format!("check: {problems:?}"))?;
    let report = refuse_then_salvage(&s.path)?;
    ensure(report.cleared.iter().any(|c| c.target == block && c.name == "q"), format!("{report:?}"))?;
    ensure(report.dropped.is_empty() && report.recovery.blocks_freed == 1, format!("{report:?}"))?;
    let m = MappedManager::open(&s.path)?;
    ensure(m.check()?.is_sound(), format!("sound: {:?}", m.check()?.problems))?;
    let rx = m.channel("q", 4)?.receiver()?;
    ensure(rx.try_recv()?.as_slice() == [184u8; 3000], "the second message, once")?;
    let more = rx.try_recv();
    ensure(matches!(more, Err(mmheap::RecvError::Empty | mmheap::RecvError::Disconnected)), "and no more")?;
    drop((rx, m));
    MappedManager::recover_file(&s.path).map_err(|e| format!("recovery after: {e}"))?;
    Ok(())
}
