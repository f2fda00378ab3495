//! A channel (`engine/channel/`) over a real heap: one thread sends messages (blocks allocated
//! in the model heap, each sent unpublished under the ring's send lock) while another receives
//! them, and one side leaves (its end dropped: the process's endpoint bit cleared under the
//! store lock, the other side's futex word bumped) while the other still works. Both ends are
//! the same model process's (one heap, tag [`super::refs::TAG`]): the endpoint bits are per process, so the
//! last `Sender` of the process going is the senders' disconnection.

use loom::thread;

use super::refs::{heap_over, sound, Model, LEN, SIZE};
use super::{exit_thread, explore_up_to, Memory};
use crate::block::MemoryBlock;
use crate::engine::channel::{self, ring, Channel, RecvError, SendError};
use crate::engine::heap::family::HeapRef;
use crate::engine::tables::CHANNEL_NAMES;

/// The channel's name.
const NAME: &str = "m";

/// A message: a block of the model heap whose first byte is its number.
fn message(heap: &HeapRef, n: u8) -> MemoryBlock {
    let mut b = MemoryBlock::allocate(heap, SIZE, 16).unwrap();
    b.as_mut_slice().unwrap()[0] = n;
    b
}

/// Sends messages `0..n` with `try_send`, yielding while the ring is full; stops when it is
/// still full once the receivers are gone (the block then goes back to the heap with its
/// drop). Returns how many went into the ring.
fn send_all(tx: &channel::Sender, heap: &HeapRef, n: u8) -> u8 {
    for i in 0..n {
        let mut b = message(heap, i);
        loop {
            // Whether the receivers were gone before this try: then nobody makes room.
            let gone = tx.is_disconnected().unwrap();
            match tx.try_send(b) {
                Ok(()) => break,
                Err(SendError::Full(back)) if gone => {
                    drop(back);
                    return i;
                }
                Err(SendError::Full(back)) => {
                    b = back;
                    crate::sync::yield_now();
                }
                Err(e) => panic!("send {i}: {e}"),
            }
        }
    }
    n
}

/// Receives with `try_recv` (yielding while empty) until `Disconnected`, or until it has
/// `until` messages: their numbers, in the order received.
fn receive(rx: &channel::Receiver, until: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < until {
        match rx.try_recv() {
            Ok(b) => got.push(b.as_slice()[0]),
            Err(RecvError::Empty) => crate::sync::yield_now(),
            Err(RecvError::Disconnected) => break,
            Err(e) => panic!("recv: {e}"),
        }
    }
    got
}

/// A sender thread that sends `0..sends` ([`send_all`]) and a receiver thread that takes up to
/// `receives` messages ([`receive`]), each dropping its end (and the sender its heap) as it
/// finishes. Returns how many went into the ring, and what was received.
fn both_sides(heap: &HeapRef, ch: &Channel, sends: u8, receives: usize) -> (u8, Vec<u8>) {
    let (tx, rx, heap) = (ch.sender().unwrap(), ch.receiver().unwrap(), heap.clone());
    let sender = thread::spawn(move || {
        let sent = send_all(&tx, &heap, sends);
        drop((tx, heap));
        exit_thread();
        sent
    });
    let receiver = thread::spawn(move || {
        let got = receive(&rx, receives);
        drop(rx);
        exit_thread();
        got
    });
    (sender.join().unwrap(), receiver.join().unwrap())
}

/// The model's heap (a store's, with registry slot `TAG - 1`) and a channel of `capacity`.
fn setup(mem: &Memory, capacity: usize) -> (HeapRef, Channel) {
    let heap = heap_over(mem, Box::new(Model { store: true }));
    let ch = channel::open(&heap, NAME, capacity).unwrap();
    (heap, ch)
}

/// After both threads: the ring's locks are free (and no thread of the process counts one),
/// `queued` messages are in the ring, removing the channel releases them and frees the ring,
/// and then the heap is sound with no block in use but the channels' directory table (no
/// message lost, none freed twice).
fn finish(heap: HeapRef, ch: Channel, queued: u64) {
    let ring = CHANNEL_NAMES.directory(&heap).unwrap().find(&heap, NAME.as_bytes()).unwrap().unwrap().target;
    assert_eq!(ring::lock_holders(&heap, ring), [0, 0], "a ring lock is held");
    assert!(!ring::held_here(), "a thread counts a ring lock");
    assert_eq!(ch.len().unwrap(), queued, "messages in the ring");
    drop(ch);
    assert!(channel::remove(&heap, NAME).unwrap(), "the channel is gone");
    // The one block in use is the process's counter table of parked blocks (`heap/cache/`),
    // named in its registry slot until it detaches.
    sound(&heap, 1);
    drop(heap);
}

/// The sender sends message 0 through a ring of one slot and drops its `Sender` (the
/// process's last: the senders' bit goes) while the receiver loops on `try_recv`. The
/// receiver gets the message exactly once, and then `Disconnected` (not `Empty` for ever: it
/// would spin until the model's branch limit); nothing is left in the ring. (Before the last
/// look in `try_recv`, a receiver whose take found the ring empty, then the sender sending and
/// leaving, reported `Disconnected` with the message queued.)
#[test]
fn channel_sender_leaves() {
    explore_up_to("channel_sender_leaves", 1, || {
        let mem = Memory::new(LEN);
        let (heap, ch) = setup(&mem, 1);
        let (sent, got) = both_sides(&heap, &ch, 1, usize::MAX);
        assert_eq!(sent, 1, "a send failed");
        assert_eq!(got, [0], "a message lost or repeated");
        finish(heap, ch, 0);
    });
}

/// The receiver takes one message and drops its `Receiver` (the receivers' bit goes) while the
/// sender sends 0, 1, 2 through a ring of one slot, stopping when the ring is full and the
/// receivers are gone. The receiver got message 0; every other message the sender queued is
/// still in the ring, and removing the channel releases it; one it could not queue went back
/// with its drop: at the end no block is in use.
#[test]
fn channel_receiver_leaves() {
    explore_up_to("channel_receiver_leaves", 1, || {
        let mem = Memory::new(LEN);
        let (heap, ch) = setup(&mem, 1);
        let (sent, got) = both_sides(&heap, &ch, 3, 1);
        assert_eq!(got, [0], "the first message lost or another first");
        // With the receiver gone the ring fills: its one slot holds the last message queued.
        assert_eq!(sent, 2, "the sender stopped before the ring filled, or sent past it");
        finish(heap, ch, u64::from(sent) - 1);
    });
}
