//! `docs/format.md` and `src/format.rs` must agree: every constant named in a table of the doc
//! has the value (or offset) the doc gives, and every constant is documented.

use mmheap::format::*;

macro_rules! constants {
    ($($name:ident),* $(,)?) => { vec![$((stringify!($name), $name as u64)),*] };
}

#[test]
fn format_doc_matches_constants() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/format.md")).unwrap();
    let all = constants![
        SUPERBLOCK_SIZE,
        TLSF_OFFSET,
        TLSF_END,
        REGISTRY_OFFSET,
        ROOTS_OFFSET,
        HEAP_START,
        MIN_STORE_SIZE,
        PAGE_SIZE,
        SB_MAGIC,
        SB_VERSION,
        SB_FLAGS,
        SB_FINGERPRINT,
        SB_KEY,
        SB_MAX_SIZE,
        SB_CAPACITY,
        SB_NEXT_GEN,
        SB_LOCK,
        SB_USED_BYTES,
        SB_LIVE_BLOCKS,
        SB_GROWTHS,
        SB_RECOVERIES,
        SB_SPAN_LISTS,
        SB_LIVE_SLOTS,
        SB_SLOT_BYTES,
        SB_SPAN_BLOCKS,
        SB_SPAN_BYTES,
        SB_GROW_FROM,
        SB_QUARANTINE_BYTES,
        SB_QUARANTINE_BLOCKS,
        SB_RECOVERED_PROCESSES,
        SB_RECOVERED_BLOCKS,
        SB_EXCHANGE_BLOCKS,
        SB_EXCHANGE_BYTES,
        EXCHANGE_OFFSET,
        EXCHANGE_CLASSES,
        EXCHANGE_HOLDER_SHIFT,
        EXCHANGE_NEXT,
        EXCHANGE_SEAL,
        EXCHANGE_OWNER,
        FORMAT_VERSION,
        OLDEST_VERSION,
        SB_FLAG_TEMPORARY,
        TLSF_FL_BITMAP,
        TLSF_SL_BITMAPS,
        TLSF_HEADS,
        FL_COUNT,
        SL_COUNT,
        SL_LOG,
        SMALL_LIMIT,
        SLOT_STATE,
        SLOT_PID,
        SLOT_START_TIME,
        SLOT_NONCE,
        SLOT_HOLDS,
        SLOT_CACHES,
        CHANNELS_OFFSET,
        CHANNEL_COUNT,
        CHANNEL_SIZE,
        CHANNEL_RING,
        CHANNEL_NAME_LEN,
        CHANNEL_NAME,
        CHANNEL_NAME_MAX,
        RING_CAPACITY,
        RING_HEAD,
        RING_TAIL,
        RING_NOT_EMPTY,
        RING_NOT_FULL,
        RING_SENDERS,
        RING_RECEIVERS,
        RING_RX_SLEEPERS,
        RING_TX_SLEEPERS,
        RING_FLAGS,
        RING_SLOTS,
        SLOT_COUNT,
        SLOT_SIZE,
        SLOT_FREE,
        SLOT_ATTACHED,
        LIVENESS_LOCK_BASE,
        ROOT_BLOCK,
        ROOT_NAME_LEN,
        ROOT_NAME,
        ROOT_COUNT,
        ROOT_SIZE,
        ROOT_NAME_MAX,
        SB_ROOT_TABLE,
        SB_CHANNEL_TABLE,
        SB_BOOT_ID,
        ROOT_TABLE_KIND,
        ROOT_TABLE_CAPACITY,
        ROOT_TABLE_USED,
        ROOT_TABLE_EMPTIED,
        ROOT_TABLE_ENTRIES,
        ROOT_TABLE_FIRST,
        HDR_TAG,
        HDR_GEN,
        HDR_RC,
        HDR_CHECK,
        FREE_NEXT,
        FREE_PREV,
        GRANULE,
        HEADER_SIZE,
        MIN_BLOCK,
        SENTINEL_SIZE,
        LINK_FOOTER,
        LINK_CHAIN,
        LINK_CELL,
        LINK_MAX,
        SPAN_SIZE,
        SPAN_ALIGN_LOG2,
        SPAN_CHECK,
        SPAN_CHECK_GEN,
        SPAN_CLASS,
        SPAN_BUMP,
        SPAN_USED,
        SPAN_FREE_HEAD,
        SPAN_NEXT,
        SPAN_PREV,
        SPAN_PAGE,
        SPAN_RC,
        SLOT_CLASSES,
        SLOT_MAX,
        SLOT_MARK,
        PAGE_SPAN,
        PAGE_ENTRIES,
    ];
    let mut documented = std::collections::HashMap::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // table rows look like `| `NAME` | number | ...`
        if cells.len() < 4 || !cells[1].starts_with('`') {
            continue;
        }
        let name = cells[1].trim_matches('`');
        if let Ok(v) = cells[2].parse::<u64>() {
            documented.insert(name.to_owned(), v);
        }
    }
    for (name, value) in &all {
        assert_eq!(documented.get(*name), Some(value), "docs/format.md disagrees on {name}");
    }
    assert_eq!(MAGIC, *b"\x89MMHEAP\n");
    assert!(doc.contains("`89 4D 4D 48 45 41 50 0A`"));
}

#[test]
fn fingerprints_are_stable() {
    // Changing any layout number changes these values: then bump FORMAT_VERSION, add a row to
    // the version history and a golden store for the new version.
    assert_eq!(fingerprint_of(1), 0xba54_5668_aac7_1f66, "version 1 changed: {:#x}", fingerprint_of(1));
    assert_eq!(fingerprint(), fingerprint_of(FORMAT_VERSION));
    assert_ne!(fingerprint_of(2), fingerprint_of(1));
    assert_eq!(fingerprint_of(2), 0x535f_9fd4_376b_f5ee, "version 2 changed: {:#x}", fingerprint_of(2));
}
