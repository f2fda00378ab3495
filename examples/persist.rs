//! A small persistent record: a list of notes with a run counter, kept under a named root.
//! Run it several times; every run finds what the earlier ones wrote.
//!
//!     cargo run --example persist -- [STORE] ["note text"]   # default $TMPDIR/mmheap-example-notes.mmheap
//!     cargo run --example persist -- /tmp/notes.mmheap "buy milk"

use mmheap::{MappedManager, MemoryBlock, MemoryManager, Options};

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// Layout of the "notes" block: `runs: u64`, `count: u64`, then `count` notes, each a `u32`
/// length and that many UTF-8 bytes.
struct Notes {
    runs: u64,
    notes: Vec<String>,
}

impl Notes {
    fn read(block: &MemoryBlock) -> Res<Notes> {
        let seg = block.segment();
        let (runs, count) = (seg.read::<u64>(0)?, seg.read::<u64>(8)?);
        let mut at = 16;
        let mut notes = Vec::new();
        for _ in 0..count {
            let len = seg.read::<u32>(at)? as usize;
            notes.push(String::from_utf8(seg.slice(at + 4..at + 4 + len)?.to_vec())?);
            at += 4 + len;
        }
        Ok(Notes { runs, notes })
    }

    fn write(&self, store: &MappedManager) -> Res<MemoryBlock> {
        let size = 16 + self.notes.iter().map(|n| 4 + n.len()).sum::<usize>();
        let mut block = store.allocate(size)?;
        let mut seg = block.segment_mut()?;
        seg.write(0, &self.runs)?;
        seg.write(8, &(self.notes.len() as u64))?;
        let mut at = 16;
        for n in &self.notes {
            seg.write(at, &(n.len() as u32))?;
            seg.slice_mut(at + 4..at + 4 + n.len())?.copy_from_slice(n.as_bytes())?;
            at += 4 + n.len();
        }
        Ok(block)
    }
}

fn main() -> Res {
    let mut args = std::env::args().skip(1);
    // By default in the temporary directory (the same for every process), never in the
    // directory it runs in.
    let path = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("mmheap-example-notes.mmheap"));
    let note = args.next();
    let store = MappedManager::open_or_create(&path, &Options::new())?;
    let mut notes = match store.root("notes")? {
        Some(block) => Notes::read(&block)?,
        None => Notes { runs: 0, notes: Vec::new() },
    };
    notes.runs += 1;
    if let Some(n) = note {
        notes.notes.push(n);
    }
    // Write the new version whole, then swing the root to it: a crash leaves either the old
    // or the new list, never half of one.
    let block = notes.write(&store)?;
    store.set_root("notes", &block)?;
    store.flush()?;
    println!("{}: run {} with {} notes", path.display(), notes.runs, notes.notes.len());
    for (i, n) in notes.notes.iter().enumerate() {
        println!("  {}. {n}", i + 1);
    }
    Ok(())
}
