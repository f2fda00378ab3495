//! Data structures in a store: a list and a sorted binary tree of words, built from named roots
//! with counted links (`allocate_linked`, `set_link`). Each run is another process that finds,
//! walks and changes what the earlier runs built; freeing a root frees everything it links.
//!
//!     cargo run --example linked -- [STORE] add WORD   # push WORD on the list, insert it in the tree
//!     cargo run --example linked -- [STORE] pop        # drop the newest word from the list
//!     cargo run --example linked -- [STORE] clear      # remove both roots: every node is freed
//!     cargo run --example linked -- [STORE]            # print both
//!
//! The default store is $TMPDIR/mmheap-example-linked.mmheap.

use mmheap::{MappedManager, MemoryBlock, MemoryManager, Options};

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// A node: `links` links (list: next; tree: left, right), then the word's bytes.
fn node(store: &MappedManager, links: usize, word: &str) -> Res<MemoryBlock> {
    let mut block = store.allocate_linked(links, word.len())?;
    block.as_mut_slice()?.copy_from_slice(word.as_bytes()); // before linking: then it is shared
    Ok(block)
}

fn word(block: &MemoryBlock) -> String {
    String::from_utf8_lossy(block.as_slice()).into_owned()
}

/// Pushes a word on the list: the new head links the old one.
fn push(store: &MappedManager, w: &str) -> Res {
    let head = node(store, 1, w)?;
    head.set_link(0, store.root("list")?.as_ref())?;
    store.set_root("list", &head)?; // replaces the root: the old head is now kept by the link
    Ok(())
}

/// Inserts a word in the tree (duplicates go right).
fn insert(store: &MappedManager, w: &str) -> Res {
    let new = node(store, 2, w)?;
    let Some(mut at) = store.root("tree")? else { return Ok(store.set_root("tree", &new)?) };
    loop {
        let side = usize::from(w >= word(&at).as_str());
        match at.link(side)? {
            Some(next) => at = next,
            None => return Ok(at.set_link(side, Some(&new))?),
        }
    }
}

/// Drops the newest word: the root moves to the second node; the old head, held by nothing
/// else, is freed when `head` goes.
fn pop(store: &MappedManager) -> Res<Option<String>> {
    let Some(head) = store.root("list")? else { return Ok(None) };
    match head.take_link(0)? {
        Some(next) => store.set_root("list", &next)?,
        None => drop(store.remove_root("list")?),
    }
    Ok(Some(word(&head)))
}

/// The tree's words in order (a loop with an explicit stack: trees may be deep).
fn in_order(store: &MappedManager) -> Res<Vec<String>> {
    let (mut out, mut stack, mut at) = (Vec::new(), Vec::new(), store.root("tree")?);
    while at.is_some() || !stack.is_empty() {
        while let Some(n) = at {
            at = n.link(0)?;
            stack.push(n);
        }
        let Some(n) = stack.pop() else { break };
        out.push(word(&n));
        at = n.link(1)?;
    }
    Ok(out)
}

fn main() -> Res {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let default = std::env::temp_dir().join("mmheap-example-linked.mmheap");
    let path = match args.first().map(String::as_str) {
        Some("add" | "pop" | "clear") | None => default,
        Some(_) => std::path::PathBuf::from(args.remove(0)),
    };
    let store = MappedManager::open_or_create(&path, &Options::new())?;
    match args.first().map(String::as_str) {
        Some("add") => {
            let w = args.get(1).ok_or("add needs a word")?;
            push(&store, w)?;
            insert(&store, w)?;
        }
        Some("pop") => println!("popped: {}", pop(&store)?.unwrap_or_else(|| "(nothing)".into())),
        Some("clear") => {
            store.remove_root("list")?;
            store.remove_root("tree")?;
        }
        Some(other) => return Err(format!("unknown command {other:?}").into()),
        None => {}
    }
    let mut list = Vec::new();
    let mut at = store.root("list")?;
    while let Some(n) = at {
        list.push(word(&n));
        at = n.link(0)?;
    }
    println!("store: {}", path.display());
    println!("list, newest first: {list:?}");
    println!("tree, in order: {:?}", in_order(&store)?);
    let check = store.check()?;
    println!("live blocks: {}; sound: {}", check.used_blocks, check.is_sound());
    store.flush()?;
    Ok(())
}
