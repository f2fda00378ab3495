//! With feature `serde` (which the tool's feature `cli` turns on), the statistics, the check and
//! recovery reports and block handles serialize, as the tool prints them in JSON and a user's
//! service may too.
#![cfg(feature = "serde")]

use mmheap::{MappedManager, MemoryManager, Options, RecoveryReport};

#[test]
fn reports_statistics_and_handles_serialize() {
    let store = MappedManager::temporary(&Options::new()).unwrap();
    let block = store.allocate(100).unwrap();
    let stats = serde_json::to_value(store.stats().unwrap()).unwrap();
    assert_eq!(stats["live_blocks"], 1, "{stats}");
    let check = serde_json::to_value(store.check().unwrap()).unwrap();
    assert!(check["problems"].as_array().is_some_and(|p| p.is_empty()), "{check}");
    assert!(check["used_blocks"].as_u64().is_some_and(|n| n >= 1), "{check}");
    let handle = block.handle();
    let h = serde_json::to_value(handle).unwrap();
    assert_eq!(
        (h["offset"].as_u64(), h["generation"].as_u64()),
        (Some(handle.offset), Some(handle.generation))
    );
    let recovered = serde_json::to_value(RecoveryReport::default()).unwrap();
    assert_eq!(recovered["recoveries"], 0, "{recovered}");
}
