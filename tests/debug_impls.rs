//! Every public type a user holds prints with `{:?}`, so it can sit in a `#[derive(Debug)]`
//! struct of theirs.

use mmheap::inspect::Snapshot;
use mmheap::{MappedManager, MemoryManager, Options};

#[test]
fn channel_ends_and_snapshots_print() {
    let store = MappedManager::temporary(&Options::new()).unwrap();
    let ch = store.channel("jobs", 8).unwrap();
    let (tx, rx) = (ch.sender().unwrap(), ch.receiver().unwrap());
    assert_eq!(format!("{tx:?}"), r#"Sender { name: "jobs", capacity: 8 }"#);
    assert_eq!(format!("{rx:?}"), r#"Receiver { name: "jobs", capacity: 8 }"#);
    let block = store.allocate(10).unwrap();
    store.set_root("r", &block).unwrap();
    let snap = Snapshot::take(store.path()).unwrap();
    let shown = format!("{snap:?}");
    assert!(shown.starts_with("Snapshot { capacity: 1048576, view: Locked, lock_holder: None"), "{shown}");
}
