//! Two processes share blocks through one store file.
//!
//! The parent creates a store, starts a copy of this program as its child, and the two hand
//! each other blocks by `BlockHandle` over a pipe: the bytes themselves are never copied, both
//! processes read them in the shared mapping.
//!
//!     cargo run --example share

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use mmheap::{BlockHandle, MappedManager, MemoryManager, Options};

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn send(out: &mut impl Write, h: BlockHandle) -> Res {
    writeln!(out, "{} {}", h.offset, h.generation)?;
    Ok(out.flush()?)
}

fn receive(input: &mut impl BufRead) -> Res<BlockHandle> {
    let mut line = String::new();
    input.read_line(&mut line)?;
    let mut nums = line.split_whitespace().map(str::parse::<u64>);
    match (nums.next(), nums.next()) {
        (Some(Ok(offset)), Some(Ok(generation))) => Ok(BlockHandle { offset, generation }),
        _ => Err(format!("expected a handle, got {line:?}").into()),
    }
}

fn parent() -> Res {
    let store = MappedManager::temporary(&Options::new())?;
    let me = std::process::id();
    println!("[parent {me}] created store {}", store.path().display());

    let mut greeting = store.allocate(64)?;
    let text = format!("hello from parent {me}");
    greeting.as_mut_slice()?[..text.len()].copy_from_slice(text.as_bytes());
    let mut numbers = store.allocate(4 * 8)?;
    numbers.segment_mut()?.view_slice_mut::<u32>()?.copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);

    let mut child = Command::new(std::env::current_exe()?)
        .arg("--child")
        .arg(store.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut to_child = child.stdin.take().ok_or("no stdin")?;
    let mut from_child = BufReader::new(child.stdout.take().ok_or("no stdout")?);

    send(&mut to_child, greeting.handle())?;
    send(&mut to_child, numbers.handle())?;
    let reply = store.block_from_handle(receive(&mut from_child)?)?;
    let text = String::from_utf8_lossy(reply.as_slice());
    println!("[parent {me}] child's block at offset {:#x} says: {text:?}", reply.offset().get());
    let stats = store.stats()?;
    println!(
        "[parent {me}] greeting has {} references; {} processes attached, {} live blocks",
        greeting.ref_count(),
        stats.attached_processes,
        stats.live_blocks
    );

    writeln!(to_child, "done")?;
    drop(to_child);
    child.wait()?;
    let stats = store.stats()?;
    println!(
        "[parent {me}] child gone: greeting has {} reference, {} process attached, {} live blocks",
        greeting.ref_count(),
        stats.attached_processes,
        stats.live_blocks
    );
    Ok(())
}

fn child(path: &str) -> Res {
    let store = MappedManager::open(path)?;
    let me = std::process::id();
    let mut input = std::io::stdin().lock();
    let greeting = store.block_from_handle(receive(&mut input)?)?;
    let numbers = store.block_from_handle(receive(&mut input)?)?;
    let text = String::from_utf8_lossy(greeting.as_slice()).trim_end_matches('\0').to_owned();
    eprintln!("[child  {me}] parent's block says: {text:?}");
    let sum: u32 = numbers.segment().view_slice::<u32>()?.iter().sum();
    eprintln!("[child  {me}] sum of the parent's numbers, read in place: {sum}");

    let answer = format!("hello back from child {me}; the sum is {sum}");
    let mut reply = store.allocate(answer.len())?;
    reply.as_mut_slice()?.copy_from_slice(answer.as_bytes());
    send(&mut std::io::stdout(), reply.handle())?;
    let mut done = String::new();
    input.read_line(&mut done)?; // keep our references until the parent has read the reply
    Ok(())
}

fn main() -> Res {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--child") => child(args.get(2).ok_or("--child needs the store path")?),
        _ => parent(),
    }
}
