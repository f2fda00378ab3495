//! A channel's two ends: `Sender` and `Receiver`, each counted in the ring's endpoint bits of
//! its process (`Inner::count_end`) while any is open, and their sends and receives: the
//! lock-free way of a sole reference and the locked way, the waits, the deadlines.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ring::{self, Side};
use super::{Inner, RecvError, SendError, Taken};
use crate::engine::heap::Obtained;
use crate::error::Result;
use crate::format::*;
use crate::sync::Ordering;
use crate::MemoryBlock;

/// The sending end. Cloning it adds another sender in this process.
pub struct Sender {
    pub(super) inner: Arc<Inner>,
}

/// The receiving end. Cloning it adds another receiver in this process.
pub struct Receiver {
    pub(super) inner: Arc<Inner>,
}

impl Sender {
    /// Puts `block` into the ring if there is room. `Ok(Some(block))` when full, or when a
    /// living process held the ring's send lock until `deadline`. A block that is its holder's
    /// only, never published reference goes under the ring's send lock alone (`ring.rs`); any
    /// other under the store lock.
    fn try_put(
        &self,
        block: MemoryBlock,
        deadline: Option<Instant>,
    ) -> std::result::Result<Option<MemoryBlock>, SendError> {
        let inner = &*self.inner;
        if !block.same_heap(&inner.heap) {
            return Err(SendError::WrongManager(block));
        }
        if block.len() as u64 > ring::CARRIED_MAX {
            return self.try_put_locked(block, deadline);
        }
        let side = match inner.lock_side(Side::Send, deadline) {
            Ok(Some(side)) => side,
            Ok(None) => return Ok(Some(block)),
            Err(e) => return Err(SendError::Store(e)),
        };
        let tail = match inner.room(&side) {
            Ok(Some(tail)) => tail,
            Ok(None) => return Ok(Some(block)),
            Err(e) => return Err(SendError::Store(e)),
        };
        let (off, len) = match block.give_to_ring() {
            Ok(given) => given,
            Err(block) => {
                drop(side);
                return self.try_put_locked(block, deadline);
            }
        };
        let queued = inner.queue(&side, tail, ring::carrying(off, len));
        drop(side);
        // The block is the ring's now: an error here is a damaged ring word, which recovery
        // reports; the message is then lost with it.
        queued.map_err(SendError::Store)?;
        inner.signal(RING_NOT_EMPTY, RING_RX_SLEEPERS).map_err(SendError::Store)?;
        Ok(None)
    }

    /// [`Sender::try_put`] under the store lock: the block is settled and published, and its
    /// reference moves into the ring as a hold (`Heap::donate_locked`). The ring's send lock
    /// is taken after the store lock, and never waited for while holding it: a busy one sends
    /// the store lock back and waits for the ring's to come free first (a process stopped in
    /// a send would otherwise stop every user of the store).
    fn try_put_locked(
        &self,
        block: MemoryBlock,
        deadline: Option<Instant>,
    ) -> std::result::Result<Option<MemoryBlock>, SendError> {
        let inner = &*self.inner;
        let flags = ring::flags_word(&inner.heap, inner.ring).map_err(SendError::Store)?;
        loop {
            let g = inner.heap.lock().map_err(SendError::Store)?;
            // The length goes into the header before the ring names the block: a receiver (or,
            // if we die between the two, recovery) takes it from there.
            if let Err(e) = block.settle_len_locked(&g) {
                drop(g); // before the block goes: dropping it may take the lock
                return Err(SendError::Store(e));
            }
            let Ok(side) = ring::try_lock(flags, Side::Send, inner.heap.tag()) else {
                drop(g);
                match inner.wait_side_free(Side::Send, deadline) {
                    Ok(true) => continue,
                    Ok(false) => return Ok(Some(block)),
                    Err(e) => return Err(SendError::Store(e)),
                }
            };
            let queued = match inner.room(&side) {
                Ok(Some(tail)) => inner.queue(&side, tail, block.header_offset()),
                Ok(None) => return Ok(Some(block)),
                Err(e) => Err(e),
            };
            if let Err(e) = queued {
                // Give the locks back before the block goes: dropping it takes the lock.
                drop((side, g));
                return Err(SendError::Store(e));
            }
            // Consumes the block without any release (which would take the lock again).
            let donated = block.donate_locked(&g);
            drop((side, g));
            donated.map_err(SendError::Store)?;
            inner.signal(RING_NOT_EMPTY, RING_RX_SLEEPERS).map_err(SendError::Store)?;
            return Ok(None);
        }
    }

    fn send_until(
        &self,
        mut block: MemoryBlock,
        deadline: Option<Instant>,
    ) -> std::result::Result<(), SendError> {
        let inner = &*self.inner;
        if !block.same_heap(&inner.heap) {
            return Err(SendError::WrongManager(block));
        }
        // Asking who is alive costs system calls: do it first, and after each quiet nap.
        let mut look = true;
        loop {
            let seq = inner.futex(RING_NOT_FULL).map_err(SendError::Store)?.load(Ordering::Acquire);
            // Take the store lock only when a look at the ring says there is room.
            if inner.queued().map_err(SendError::Store)? < inner.capacity {
                block = match self.try_put(block, deadline)? {
                    None => return Ok(()),
                    Some(b) => b,
                };
            }
            if look && inner.deserted(RING_RECEIVERS).map_err(SendError::Store)? {
                return Err(SendError::Disconnected(block));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(SendError::Timeout(block));
            }
            let room = || inner.queued().is_ok_and(|q| q < inner.capacity);
            look = !inner
                .wait(RING_NOT_FULL, RING_TX_SLEEPERS, seq, deadline, room)
                .map_err(SendError::Store)?;
        }
    }

    /// Sends `block`, waiting while the ring is full. The block's reference moves into the
    /// channel: no byte of the payload is copied. A block that is its holder's only reference
    /// and was never published (no clone, no handle, no root) and is at most 32,767 bytes long
    /// is sent without the store lock and arrives unpublished, so the receiver holds the only
    /// reference and may write it ([`MemoryBlock::as_mut_slice`]); any other arrives
    /// read-only. Fails with [`SendError::Disconnected`] when the ring is full and every
    /// receiver that ever attached is gone.
    pub fn send(&self, block: MemoryBlock) -> std::result::Result<(), SendError> {
        self.send_until(block, None)
    }

    /// As [`Sender::send`], giving up at `timeout`.
    pub fn send_timeout(&self, block: MemoryBlock, timeout: Duration) -> std::result::Result<(), SendError> {
        self.send_until(block, Some(Instant::now() + timeout))
    }

    /// Sends `block` only if there is room now.
    pub fn try_send(&self, block: MemoryBlock) -> std::result::Result<(), SendError> {
        match self.try_put(block, Some(Instant::now()))? {
            None => Ok(()),
            Some(b) => Err(SendError::Full(b)),
        }
    }

    /// Whether every receiver that ever attached is gone.
    pub fn is_disconnected(&self) -> Result<bool> {
        self.inner.deserted(RING_RECEIVERS)
    }
}

impl Receiver {
    /// Takes the oldest message if there is one: under the ring's receive lock alone for a
    /// block queued unpublished, under the store lock too for a published one (taken first,
    /// and the ring's lock never waited for while holding it, as in `try_put_locked`).
    /// `Ok(None)` when empty, or when a living process held the ring's receive lock until
    /// `deadline`.
    fn try_take(&self, deadline: Option<Instant>) -> std::result::Result<Option<MemoryBlock>, RecvError> {
        let inner = &*self.inner;
        let Some(side) = inner.lock_side(Side::Recv, deadline)? else { return Ok(None) };
        let got = match inner.take(&side, None)? {
            Taken::Empty => return Ok(None),
            Taken::Got(got) => {
                drop(side);
                got
            }
            Taken::Published => {
                drop(side);
                let Some(got) = self.take_locked(deadline)? else { return Ok(None) };
                got
            }
        };
        inner.signal(RING_NOT_FULL, RING_TX_SLEEPERS)?;
        Ok(Some(MemoryBlock::from_obtained(&inner.heap, got)?))
    }

    /// The oldest message, under the store lock and then the ring's receive lock.
    fn take_locked(&self, deadline: Option<Instant>) -> Result<Option<Obtained>> {
        let inner = &*self.inner;
        let flags = ring::flags_word(&inner.heap, inner.ring)?;
        loop {
            let g = inner.heap.lock()?;
            let Ok(side) = ring::try_lock(flags, Side::Recv, inner.heap.tag()) else {
                drop(g);
                match inner.wait_side_free(Side::Recv, deadline)? {
                    true => continue,
                    false => return Ok(None),
                }
            };
            return match inner.take(&side, Some(&g))? {
                Taken::Got(got) => Ok(Some(got)),
                _ => Ok(None), // taken meanwhile by another receiver
            };
        }
    }

    fn recv_until(&self, deadline: Option<Instant>) -> std::result::Result<MemoryBlock, RecvError> {
        let inner = &*self.inner;
        // Asking who is alive costs system calls: do it first, and after each quiet nap (a
        // departing sender bumps the futex word, and its absence is seen within a nap).
        let mut look = true;
        loop {
            let seq = inner.futex(RING_NOT_EMPTY)?.load(Ordering::Acquire);
            // Take the store lock only when a look at the ring says there is something.
            if inner.queued()? > 0 {
                if let Some(b) = self.try_take(deadline)? {
                    return Ok(b);
                }
            }
            if look && inner.deserted(RING_SENDERS)? {
                // Unless a sender sent and left since the look at the ring above (its
                // departure, seen here, comes after its sends): then take that first.
                if inner.queued()? == 0 {
                    return Err(RecvError::Disconnected);
                }
                continue;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(RecvError::Timeout);
            }
            let arrived = || inner.queued().is_ok_and(|q| q > 0);
            look = !inner.wait(RING_NOT_EMPTY, RING_RX_SLEEPERS, seq, deadline, arrived)?;
        }
    }

    /// Receives the oldest message, waiting until one arrives. Fails with
    /// [`RecvError::Disconnected`] when nothing is queued and every sender that ever attached
    /// is gone (dead processes included).
    pub fn recv(&self) -> std::result::Result<MemoryBlock, RecvError> {
        self.recv_until(None)
    }

    /// As [`Receiver::recv`], giving up at `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> std::result::Result<MemoryBlock, RecvError> {
        self.recv_until(Some(Instant::now() + timeout))
    }

    /// Receives a message only if one is queued now.
    pub fn try_recv(&self) -> std::result::Result<MemoryBlock, RecvError> {
        match self.try_take(Some(Instant::now()))? {
            Some(b) => Ok(b),
            // A last look: the ring was empty when the take looked, but a sender may have
            // sent and left since (its departure, seen here, comes after its sends).
            None if self.inner.deserted(RING_SENDERS)? => match self.try_take(Some(Instant::now()))? {
                Some(b) => Ok(b),
                None => Err(RecvError::Disconnected),
            },
            None => Err(RecvError::Empty),
        }
    }

    /// Whether every sender that ever attached is gone.
    pub fn is_disconnected(&self) -> Result<bool> {
        self.inner.deserted(RING_SENDERS)
    }
}

impl Clone for Sender {
    fn clone(&self) -> Self {
        // Not the first sender here: the count leaves no zero, so no bit changes (no error).
        let _ = self.inner.count_end(RING_SENDERS, 1);
        Sender { inner: self.inner.clone() }
    }
}

impl Clone for Receiver {
    fn clone(&self) -> Self {
        let _ = self.inner.count_end(RING_RECEIVERS, 1);
        Receiver { inner: self.inner.clone() }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        // Errors mean a corrupt store; the bit then stays until recovery clears it.
        let _ = self.inner.count_end(RING_SENDERS, -1);
        let _ = self.inner.announce(RING_NOT_EMPTY, RING_RX_SLEEPERS);
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.inner.count_end(RING_RECEIVERS, -1);
        let _ = self.inner.announce(RING_NOT_FULL, RING_TX_SLEEPERS);
    }
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.debug("Sender", f)
    }
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.debug("Receiver", f)
    }
}
