//! Named channels that carry blocks between processes, zero copy.
//!
//! A channel is a ring of block references in the store, named in the channel directory.
//! `send` moves the sender's reference to a block into the ring (the payload is never copied);
//! `recv` moves it out to the receiver. A block that is its holder's only, never published
//! reference (a fresh allocation) goes without the store lock, under the ring's send and
//! receive locks (`ring.rs`), and reaches the receiver still unpublished: the receiver may
//! write it. Any other block goes under the store lock as well. A process killed in the middle
//! of either leaves state that recovery repairs: the ring's slots between `head` and `tail` are
//! holds on their blocks, counted by the recovery recount like hold tables and roots.
//!
//! Waiting costs nothing while idle and little when busy: a waiter spins briefly watching the
//! ring, then sleeps on a futex word in the ring (`RING_NOT_EMPTY` / `RING_NOT_FULL`) that the
//! other side bumps and wakes; it also wakes every 10 ms to notice departed processes.
//!
//! ```
//! use mmheap::{MappedManager, MemoryManager, Options};
//!
//! let store = MappedManager::temporary(&Options::new())?;
//! let jobs = store.channel("jobs", 16)?;
//! let (tx, rx) = (jobs.sender()?, jobs.receiver()?);
//! let mut msg = store.allocate(5)?;
//! msg.as_mut_slice()?.copy_from_slice(b"hello");
//! tx.send(msg)?;
//! assert_eq!(rx.recv()?.as_slice(), b"hello");
//! assert!(rx.try_recv().is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod ends;
mod held;
pub(crate) mod ring;

use crate::engine::core::header::rc;
use crate::engine::directory::valid_name;
use crate::engine::heap::family::HeapRef;
use crate::engine::heap::{Guard, Heap, Obtained};
use crate::engine::tables::{insert, CHANNEL_NAMES};
use crate::error::{Error, Result};
use crate::format::*;
use crate::hooks::pause;
use crate::sync::{fence, AtomicU32, Ordering};
use crate::{sys, MemoryBlock};

pub use ends::{Receiver, Sender};
pub(crate) use held::Channels;
use ring::{ring_contents, Side, SideLock};

/// Set in `RING_FLAGS` once any process has had a `Sender` / a `Receiver`.
const EVER_SENDER: u64 = 1;
const EVER_RECEIVER: u64 = 2;
/// How long a waiter spins watching the ring before it sleeps.
/// Long enough that two processes passing messages back and forth both look busy to the
/// scheduler, which then keeps them on separate cores (shorter spins ending in sleeps let it
/// pack both onto one core, and every message then costs a context switch); short enough that
/// an idle waiter soon sleeps.
const SPIN: Duration = Duration::from_millis(1);
/// How long a waiter sleeps before it looks at who is still alive.
const NAP: Duration = Duration::from_millis(10);

/// Why a send failed; the block comes back to the caller.
#[non_exhaustive]
pub enum SendError {
    /// The ring is full (`try_send`).
    Full(MemoryBlock),
    /// The ring stayed full until the deadline (`send_timeout`).
    Timeout(MemoryBlock),
    /// The ring is full and every receiver that ever attached is gone (dead ones included).
    Disconnected(MemoryBlock),
    /// The block belongs to another manager.
    WrongManager(MemoryBlock),
    /// The store refused (corruption, I/O).
    Store(Error),
}

impl SendError {
    /// The block, if it came back.
    pub fn into_block(self) -> Option<MemoryBlock> {
        match self {
            SendError::Full(b)
            | SendError::Timeout(b)
            | SendError::Disconnected(b)
            | SendError::WrongManager(b) => Some(b),
            SendError::Store(_) => None,
        }
    }
}

impl fmt::Debug for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full(_) => f.write_str("the channel is full"),
            SendError::Timeout(_) => f.write_str("the channel stayed full until the deadline"),
            SendError::Disconnected(_) => f.write_str("the channel is full and every receiver is gone"),
            SendError::WrongManager(_) => f.write_str("the block belongs to another manager"),
            SendError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SendError {}

/// Why a receive failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// Nothing is queued (`try_recv`).
    #[error("the channel is empty")]
    Empty,
    /// Nothing arrived before the deadline (`recv_timeout`).
    #[error("nothing arrived before the deadline")]
    Timeout,
    /// Nothing is queued and every sender that ever attached is gone (dead ones included).
    #[error("the channel is empty and every sender is gone")]
    Disconnected,
    /// The store refused (corruption, I/O).
    #[error(transparent)]
    Store(#[from] Error),
}

/// A named channel in a store; make its ends with [`Channel::sender`] and
/// [`Channel::receiver`]. Obtained from [`crate::MappedManager::channel`].
#[derive(Clone)]
pub struct Channel {
    inner: Arc<Inner>,
}

struct Inner {
    heap: HeapRef,
    /// Header offset of the ring block; payload fields are at `ring + HEADER_SIZE + field`.
    ring: u64,
    /// The ring block's generation: a ring made after a removal may take the same place, never
    /// the same generation (`set_endpoint`).
    generation: u64,
    capacity: u64,
    name: String,
}

/// Live `Sender`s and `Receiver`s of one channel in this process, over every `Channel` value
/// that names it: the endpoint bits in the ring are per process (per registry slot), so the
/// counts behind them must be too.
#[derive(Default)]
struct Ends {
    senders: usize,
    receivers: usize,
}

crate::sync::static_mutex! {
    /// The end counts of every channel this process has ends of, by (heap id, ring). One mutex
    /// covers the counts and the updates of the endpoint bits, so a last drop and a new end (of
    /// any `Channel` value, on any thread) cannot interleave and leave a bit wrong.
    static ENDS: BTreeMap<(u64, u64), Ends> = BTreeMap::new();
}

fn ends() -> crate::sync::MutexGuard<'static, BTreeMap<(u64, u64), Ends>> {
    let ends: &'static crate::sync::Mutex<BTreeMap<(u64, u64), Ends>> = &ENDS;
    crate::sync::lock(ends)
}

/// Finds or makes the channel `name`.
pub(crate) fn open(heap: &HeapRef, name: &str, capacity: usize) -> Result<Channel> {
    let bytes = name.as_bytes();
    if !valid_name(bytes) {
        return Err(Error::InvalidOptions("channel names are 1..=48 bytes without NUL"));
    }
    if capacity == 0 || capacity > 1 << 24 {
        return Err(Error::InvalidOptions("channel capacity must be 1..=16777216"));
    }
    let g = heap.lock()?;
    let ring = match CHANNEL_NAMES.directory(heap)?.find(heap, bytes)? {
        Some(entry) => entry.target,
        None => make(heap, &g, bytes, capacity as u64)?,
    };
    let capacity =
        ring_contents(heap, ring).map(|_| heap.region.load(ring + HEADER_SIZE + RING_CAPACITY))??;
    let generation = heap.region.load(ring + HDR_GEN)?;
    drop(g);
    let inner = Inner { heap: heap.clone(), ring, generation, capacity, name: name.to_owned() };
    Ok(Channel { inner: Arc::new(inner) })
}

/// Removes the channel `name` if no process has an end of it open: its queued messages are
/// released (each freed if nothing else holds it), its entry emptied, then its ring freed. A
/// crash in between leaves a ring nothing names, whose messages nothing counts: recovery frees
/// them. `false` if there is no such channel.
pub(crate) fn remove(heap: &Heap, name: &str) -> Result<bool> {
    if !valid_name(name.as_bytes()) {
        return Err(Error::InvalidOptions("channel names are 1..=48 bytes without NUL"));
    }
    let g = heap.lock()?;
    let dir = CHANNEL_NAMES.directory(heap)?;
    let Some(entry) = dir.find(heap, name.as_bytes())? else { return Ok(false) };
    let ring = entry.target;
    for field in [RING_SENDERS, RING_RECEIVERS] {
        for half in 0..SLOT_COUNT.div_ceil(64) {
            if heap.region.load(ring + HEADER_SIZE + field + 8 * half)? != 0 {
                return Err(Error::ChannelInUse(name.to_owned()));
            }
        }
    }
    let messages = ring_contents(heap, ring)?;
    crate::engine::tables::remove(heap, &dir, entry.index)?;
    pause("channel-unnamed");
    for word in messages {
        heap.release_hold_locked(&g, ring::target(word))?;
    }
    heap.release_hold_locked(&g, ring)?;
    Ok(true)
}

fn make(heap: &Heap, g: &Guard<'_>, name: &[u8], capacity: u64) -> Result<u64> {
    let r = &heap.region;
    let dir = CHANNEL_NAMES.with_room(heap, g)?;
    let ring = heap.allocate_locked(g, RING_SLOTS + 8 * capacity, 4)?;
    r.zero(ring + HEADER_SIZE, RING_SLOTS + 8 * capacity)?;
    r.store(ring + HEADER_SIZE + RING_CAPACITY, capacity)?;
    // The directory entry, not this process, holds the ring.
    r.u64_at(ring + HDR_RC)?.store(rc::OTHER_ONE | rc::PUBLISHED, Ordering::Release);
    insert(heap, &dir, name, ring)?;
    Ok(ring)
}

impl Inner {
    /// Counts one more (`+1`) or one fewer (`-1`) end of a kind of this channel in this
    /// process, updating the process's bit in the ring when the count leaves or reaches zero.
    fn count_end(&self, field: u64, delta: isize) -> Result<()> {
        let mut all = ends();
        let key = (self.heap.id, self.ring);
        let ends = all.entry(key).or_default();
        let count = if field == RING_SENDERS { &mut ends.senders } else { &mut ends.receivers };
        let before = *count;
        let after = before.checked_add_signed(delta).expect("end counts stay balanced");
        if (before == 0) != (after == 0) {
            self.set_endpoint(field, after > 0)?;
        }
        *count = after;
        if ends.senders == 0 && ends.receivers == 0 {
            all.remove(&key);
        }
        Ok(())
    }

    fn field(&self, f: u64) -> u64 {
        self.ring + HEADER_SIZE + f
    }

    fn load(&self, f: u64) -> Result<u64> {
        self.heap.region.load(self.field(f))
    }

    fn futex(&self, f: u64) -> Result<&AtomicU32> {
        self.heap.region.u32_at(self.field(f))
    }

    fn queued(&self) -> Result<u64> {
        Ok(self.load(RING_TAIL)?.wrapping_sub(self.load(RING_HEAD)?))
    }

    /// Marks this process as having (or no longer having) an end of the given kind.
    fn set_endpoint(&self, field: u64, on: bool) -> Result<()> {
        let slot = u64::from(self.heap.slot().ok_or(Error::InvalidOptions("channels need a store"))?);
        let _g = self.heap.lock()?;
        // A first end of this process only if the directory still names this ring: a removed
        // channel's ring is freed, and a ring made since may be in its place, with another
        // capacity (checking under the lock orders this with removals).
        let named = CHANNEL_NAMES.directory(&self.heap)?.find(&self.heap, self.name.as_bytes())?;
        let same = named.is_some_and(|e| e.target == self.ring)
            && self.heap.region.load(self.ring + HDR_GEN)? == self.generation;
        if on && !same {
            return Err(Error::ChannelRemoved(self.name.clone()));
        }
        let word = self.field(field) + 8 * (slot / 64);
        let v = self.heap.region.load(word)?;
        let v = if on { v | 1 << (slot % 64) } else { v & !(1 << (slot % 64)) };
        // Release, with `any_alive`'s acquire: who sees an end gone sees what it sent (or
        // took) before it went.
        self.heap.region.u64_at(word)?.store(v, Ordering::Release);
        if on {
            let flag = if field == RING_SENDERS { EVER_SENDER } else { EVER_RECEIVER };
            // An atomic or: the ring's send and receive locks share the word.
            ring::flags_word(&self.heap, self.ring)?.fetch_or(flag, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Whether some living process has an end of this kind (this one included).
    fn any_alive(&self, field: u64) -> Result<bool> {
        let me = self.heap.slot().map(u64::from);
        for half in 0..2 {
            let mut bits = self.heap.region.u64_at(self.field(field + 8 * half))?.load(Ordering::Acquire);
            while bits != 0 {
                let slot = half * 64 + u64::from(bits.trailing_zeros());
                bits &= bits - 1;
                if Some(slot) == me || !self.heap.slot_dead(slot as u32) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Whether every end of this kind that ever attached is gone.
    fn deserted(&self, field: u64) -> Result<bool> {
        let flag = if field == RING_SENDERS { EVER_SENDER } else { EVER_RECEIVER };
        Ok(self.load(RING_FLAGS)? & flag != 0 && !self.any_alive(field)?)
    }

    /// After a send or a receive: bumps the futex word and wakes its sleepers, if any sleep.
    /// A waiter counts itself a sleeper and then looks at the ring again before it sleeps
    /// ([`Inner::wait`]), and this looks for sleepers after the ring changed, each behind a
    /// full fence: so either the waiter sees the change or this sees the waiter, and a send or
    /// receive with nobody asleep leaves the futex word (a line the other side reads) alone.
    fn signal(&self, word: u64, sleepers: u64) -> Result<()> {
        fence(Ordering::SeqCst);
        if self.futex(sleepers)?.load(Ordering::SeqCst) > 0 {
            self.announce(word, sleepers)?;
        }
        Ok(())
    }

    /// Bumps a futex word and wakes its sleepers, if any: an end leaving, which spinning
    /// waiters see by the word alone.
    fn announce(&self, word: u64, sleepers: u64) -> Result<()> {
        let w = self.futex(word)?;
        w.fetch_add(1, Ordering::SeqCst);
        if self.futex(sleepers)?.load(Ordering::SeqCst) > 0 {
            sys::futex_wake(w, i32::MAX, true);
        }
        Ok(())
    }

    /// Waits until the futex word moves from `seq` or `ready` says so: spins briefly, then
    /// sleeps (at most until `deadline`, and at most `NAP` at a time). Returns whether
    /// something changed (rather than the time running out).
    fn wait(
        &self,
        word: u64,
        sleepers: u64,
        seq: u32,
        deadline: Option<Instant>,
        ready: impl Fn() -> bool,
    ) -> Result<bool> {
        let w = self.futex(word)?;
        let spin_until = Instant::now() + SPIN;
        let mut spins = 0u32;
        while Instant::now() < spin_until {
            if w.load(Ordering::Acquire) != seq || ready() {
                return Ok(true);
            }
            // Spin on a free core; on a busy one, let the peer we are waiting for run first.
            spins += 1;
            if spins < 100 {
                crate::sync::spin_loop();
            } else {
                crate::sync::yield_now();
            }
        }
        let mut nap = NAP;
        if let Some(d) = deadline {
            nap = nap.min(d.saturating_duration_since(Instant::now()));
        }
        let s = self.futex(sleepers)?;
        s.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst); // pairs with `signal`'s
        if w.load(Ordering::SeqCst) == seq && !ready() {
            sys::futex_wait(w, seq, nap, true);
        }
        s.fetch_sub(1, Ordering::SeqCst);
        Ok(w.load(Ordering::Acquire) != seq || ready())
    }
}

/// What a look at the head of the ring found.
enum Taken {
    Empty,
    /// The oldest message, now the receiver's reference.
    Got(Obtained),
    /// The oldest message is a published block, which only the store lock may take.
    Published,
}

impl Inner {
    /// Takes the ring's lock for `side` without the store lock; `None` if a living holder
    /// kept it until `deadline` ([`Inner::wait_for`]).
    fn lock_side(&self, side: Side, deadline: Option<Instant>) -> Result<Option<SideLock<'_>>> {
        let flags = ring::flags_word(&self.heap, self.ring)?;
        self.wait_for(deadline, || ring::try_lock(flags, side, self.heap.tag()))
    }

    /// Waits, without the store lock, until nobody holds the ring's lock for `side` (the
    /// locked way, which must not wait for it while it holds the store lock); `false` if a
    /// living holder kept it until `deadline`.
    fn wait_side_free(&self, side: Side, deadline: Option<Instant>) -> Result<bool> {
        let flags = ring::flags_word(&self.heap, self.ring)?;
        let free = || match side.holder(flags.load(Ordering::Acquire)) {
            0 => Ok(()),
            holder => Err(holder),
        };
        Ok(self.wait_for(deadline, free)?.is_some())
    }

    /// Tries `attempt` (a ring lock: `Err` names its holder) until it succeeds: spins, then
    /// yields, then sleeps in naps growing to about 1 ms (a holder keeps a ring lock for a few
    /// hundred nanoseconds, unless it was stopped). A holder found dead (asked once the spinning
    /// is over, then every 16 naps: it is a system call), or named by a word that no thread of
    /// this process holds although it names this process (damage), is recovered from under the
    /// store lock, which takes its lock over. `None` once `deadline` has passed (after the
    /// spinning: a `try_` call waits that long, a few microseconds).
    fn wait_for<T>(
        &self,
        deadline: Option<Instant>,
        mut attempt: impl FnMut() -> std::result::Result<T, u32>,
    ) -> Result<Option<T>> {
        let (mut tries, mut asked_late) = (0u32, false);
        // The nap at which to ask next whether the holder died, and the naps between asks.
        let (mut ask_at, mut every) = (0u32, 16u32);
        loop {
            let holder = match attempt() {
                Ok(done) => return Ok(Some(done)),
                Err(holder) => holder,
            };
            tries = tries.saturating_add(1);
            if tries < 64 {
                crate::sync::spin_loop();
                continue;
            }
            if tries < 256 {
                crate::sync::yield_now();
                continue;
            }
            let naps = tries - 256;
            let gone = || match holder == self.heap.tag() {
                true => !ring::held_here(),
                false => self.heap.slot_dead(holder - 1),
            };
            let now = Instant::now();
            let late = deadline.is_some_and(|d| now >= d);
            // Asked every 16 naps, and once more at the deadline: a dead holder is no reason
            // to give up. A recovery that leaves the lock where it was (its ring was busy:
            // another holder, living, keeps the other lock) is tried again only after twice
            // as many naps as the last time, up to 1,024.
            if naps >= ask_at || late && !asked_late {
                asked_late = late;
                ask_at = naps + every;
                if gone() {
                    self.heap.recover_now()?;
                    every = (every * 2).min(1024);
                    continue;
                }
            }
            if late {
                return Ok(None);
            }
            let mut nap = Duration::from_micros(10 << naps.min(7));
            if let Some(d) = deadline {
                nap = nap.min(d - now);
            }
            std::thread::sleep(nap);
        }
    }

    /// The `tail` to send at if the ring has room (`None`: full), under the send lock.
    fn room(&self, _side: &SideLock<'_>) -> Result<Option<u64>> {
        // The acquire pairs with the receive's release of `head`: the slot it cleared is free.
        let head = self.heap.region.u64_at(self.field(RING_HEAD))?.load(Ordering::Acquire);
        let tail = self.load(RING_TAIL)?;
        match tail.wrapping_sub(head) {
            q if q > self.capacity => Err(Error::corrupt("channel ring is malformed", self.ring)),
            q if q == self.capacity => Ok(None),
            _ => Ok(Some(tail)),
        }
    }

    /// Writes `word` into the slot at `tail` and then moves `tail` past it (the message is
    /// queued from that store on), under the send lock.
    fn queue(&self, _side: &SideLock<'_>, tail: u64, word: u64) -> Result<()> {
        let slot = self.field(RING_SLOTS) + 8 * (tail % self.capacity);
        self.heap.region.store(slot, word)?;
        pause("send-slotted");
        // The release publishes the slot, the block's reference word and its payload.
        self.heap.region.u64_at(self.field(RING_TAIL))?.store(tail.wrapping_add(1), Ordering::Release);
        pause("send-counted");
        Ok(())
    }

    /// Takes the oldest message, under the receive lock (and the store lock `g`, which a
    /// published block needs). The reference moves first, then the slot is cleared, then
    /// `head` moves: a receiver that dies before the clearing leaves the message queued (its
    /// reference given back by recovery's recount), after it a cleared slot at `head`, which
    /// recovery steps over ("Crash safety" in ARCHITECTURE.md). Clearing before `head` moves
    /// keeps a sender, which may write the slot as soon as `head` has moved, from losing its
    /// message to the clearing.
    fn take(&self, _side: &SideLock<'_>, g: Option<&Guard<'_>>) -> Result<Taken> {
        let head = self.load(RING_HEAD)?;
        let tail = self.heap.region.u64_at(self.field(RING_TAIL))?.load(Ordering::Acquire);
        match tail.wrapping_sub(head) {
            0 => return Ok(Taken::Empty),
            q if q > self.capacity => return Err(Error::corrupt("channel ring is malformed", self.ring)),
            _ => {}
        }
        let slot = self.field(RING_SLOTS) + 8 * (head % self.capacity);
        let word = self.heap.region.load(slot)?;
        let got = match (ring::carried_len(word), g) {
            (Some(len), _) => {
                // The block may lie where another process grew the store since this one last
                // took the store lock (which is where growth is otherwise followed).
                self.heap.follow_growth()?;
                self.heap.take_from_ring(ring::target(word), len)?
            }
            (None, None) => return Ok(Taken::Published),
            (None, Some(g)) => {
                if !self.heap.names_live(word) {
                    return Err(Error::corrupt("channel slot names no live block", slot));
                }
                self.heap.take_hold_locked(g, word)?
            }
        };
        pause("recv-owned");
        self.heap.region.store(slot, 0)?;
        pause("recv-between");
        self.heap.region.u64_at(self.field(RING_HEAD))?.store(head.wrapping_add(1), Ordering::Release);
        pause("recv-taken");
        Ok(Taken::Got(got))
    }
}

impl Channel {
    /// The channel's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Number of slots.
    pub fn capacity(&self) -> u64 {
        self.inner.capacity
    }

    /// Messages queued now.
    pub fn len(&self) -> Result<u64> {
        self.inner.queued()
    }

    /// Whether nothing is queued now.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// A sending end for this process.
    pub fn sender(&self) -> Result<Sender> {
        self.inner.count_end(RING_SENDERS, 1)?;
        Ok(Sender { inner: self.inner.clone() })
    }

    /// A receiving end for this process.
    pub fn receiver(&self) -> Result<Receiver> {
        self.inner.count_end(RING_RECEIVERS, 1)?;
        Ok(Receiver { inner: self.inner.clone() })
    }
}

impl Inner {
    /// `what { name, capacity }`: the channel an end or value belongs to.
    fn debug(&self, what: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(what).field("name", &self.name).field("capacity", &self.capacity).finish()
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.debug("Channel", f)
    }
}
