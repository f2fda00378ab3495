//! Receives what the `producer` example sends. It waits (asleep, costing nothing) for a
//! producer to appear, and again when one goes away.
//!
//!     cargo run --example consumer -- [STORE] [COUNT]      # default $TMPDIR/mmheap-example-ipc.mmheap, forever

use std::time::Duration;

use mmheap::{MappedManager, Options, RecvError};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    // By default in the temporary directory (the same for every process), never in the
    // directory it runs in.
    let path = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("mmheap-example-ipc.mmheap"));
    println!("store: {}", path.display());
    let count: u64 = args.next().map(|c| c.parse()).transpose()?.unwrap_or(u64::MAX);
    let store = MappedManager::open_or_create(&path, &Options::new())?;
    let rx = store.channel("messages", 64)?.receiver()?;
    let me = std::process::id();
    let mut waiting = false;
    let mut received = 0;
    while received < count {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(block) => {
                received += 1;
                waiting = false;
                let text = String::from_utf8_lossy(block.as_slice());
                println!("[consumer {me}] got {text:?} (block at {:#x})", block.offset().get());
            }
            Err(RecvError::Timeout | RecvError::Disconnected) => {
                if !waiting {
                    println!("[consumer {me}] waiting for a producer...");
                    waiting = true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
