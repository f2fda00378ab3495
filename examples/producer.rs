//! Sends messages to the `consumer` example through a channel in a store file. Start either
//! one first, in two terminals; stop and restart either at will: queued messages wait in the
//! store.
//!
//!     cargo run --example producer -- [STORE] [COUNT]      # default $TMPDIR/mmheap-example-ipc.mmheap, 20

use std::time::Duration;

use mmheap::{MappedManager, MemoryManager, Options};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    // By default in the temporary directory (the same for every process), never in the
    // directory it runs in.
    let path = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("mmheap-example-ipc.mmheap"));
    println!("store: {}", path.display());
    let count: u64 = args.next().map(|c| c.parse()).transpose()?.unwrap_or(20);
    let store = MappedManager::open_or_create(&path, &Options::new())?;
    let tx = store.channel("messages", 64)?.sender()?;
    let me = std::process::id();
    for i in 1..=count {
        let text = format!("message {i} of {count} from producer {me}");
        let mut block = store.allocate(text.len())?;
        block.as_mut_slice()?.copy_from_slice(text.as_bytes()); // written once, in the store
        let at = block.offset().get();
        tx.send(block)?; // the reference moves into the channel; no byte is copied
        println!("[producer {me}] sent #{i} (block at {at:#x})");
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("[producer {me}] done");
    Ok(())
}
