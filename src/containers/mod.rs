//! Containers that live in a heap: [`SharedVec`], [`SharedMap`] and [`SharedBytesMap`]. Made
//! in any manager, reachable from a root (or a link, or a handle), used by several threads and
//! processes at once.
//!
//! Every container is a small tree of blocks (ARCHITECTURE.md, "Containers"; `docs/format.md`,
//! "Containers"): a *top* block with two links, one to a *lock block* whose guarded area is
//! the writers' robust lock, one to the current *state* (a vector's chunk table, a map's
//! directory), which links the *parts* (chunks, segments) that hold the data. Parts are never
//! changed once linked: a writer copies the part it changes into a new block, and one link
//! swap, under the store lock, makes the change. So:
//! - a reader never sees a torn entry, and takes no container lock (only the short store lock
//!   of each link it follows);
//! - a writer killed at any instruction leaves each change done or not: what it had made and
//!   not yet linked is its own unshared block, which recovery frees (with what it links);
//! - the one operation of two swaps (a vector's push onto a full tail, or pop of a chunk's last
//!   element) leaves at most one stray link, which the next writer clears when the lock tells
//!   it the last holder died.
//!
//! Durability: a container's data is in many blocks. [`crate::MappedManager::flush`] makes it
//! durable with everything else; a container's own `flush` (`SharedVec::flush`,
//! `SharedBytesMap::flush`) makes durable just its blocks, each part before what links it, once
//! the root that names it was made durable by a store flush (`flush_block` of its top block
//! covers that block alone).
//! After a power loss a container that nothing changed since the last flush reads back whole;
//! one changed since may have lost those changes, or read as damaged (`Error::Corrupt`)
//! (ARCHITECTURE.md, "Durability and power loss").

mod map;
mod vec;

pub use map::{SharedBytesMap, SharedMap};
pub use vec::SharedVec;

use crate::engine::heap::family::HeapRef;
use crate::error::{Error, Result};
use crate::fields::{get_u32, get_u64, put_u32, put_u64};
use crate::format::{
    CONTAINER_GUARDED, CONTAINER_HEADER, CONTAINER_KIND, CONTAINER_LOCK_LINK, CONTAINER_MAGIC,
    CONTAINER_MAGIC_WORD, CONTAINER_PARAM, CONTAINER_STATE_LINK, CONTAINER_TYPES, CONTAINER_VERSION,
};
use crate::shared::SharedGuard;
use crate::{MemoryBlock, MemoryManager};

/// What every container keeps: its heap, its top block and its lock block.
struct Core {
    heap: HeapRef,
    top: MemoryBlock,
    lock: MemoryBlock,
    /// The state as last read: used while the top block's state link still names it, which
    /// is read without the store lock (a state held here cannot be freed, so its offset is its).
    state: std::sync::Mutex<Option<MemoryBlock>>,
}

/// A container's identity, written in its top block's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Identity {
    kind: u32,
    types: u64,
    param: u64,
}

impl Core {
    /// A new container of `who` in `manager`, whose first state `state` makes.
    fn create<M: MemoryManager + ?Sized>(
        manager: &M,
        who: Identity,
        state: impl FnOnce(&Core) -> Result<MemoryBlock>,
    ) -> Result<Core> {
        let mut top = manager.allocate_linked(2, CONTAINER_HEADER as usize)?;
        write_identity(top.as_mut_slice()?, who);
        let lock = manager.allocate_guarded(0, CONTAINER_GUARDED as usize)?;
        let heap = top.heap_user().ok_or(Error::ManagerGone)?;
        let core = Core { heap, top, lock, state: std::sync::Mutex::new(None) };
        core.top.set_link(CONTAINER_LOCK_LINK as usize, Some(&core.lock))?;
        let first = state(&core)?;
        core.top.set_link(CONTAINER_STATE_LINK as usize, Some(&first))?;
        Ok(core)
    }

    /// The container of `who` that `top` is, or [`Error::NotAContainer`].
    fn open(top: MemoryBlock, who: Identity, what: &'static str) -> Result<Core> {
        let found = read_identity(top.as_slice()).ok_or(Error::NotAContainer(what))?;
        if found != who || top.link_count() != 2 {
            return Err(Error::NotAContainer(what));
        }
        let lock = top.link(CONTAINER_LOCK_LINK as usize)?.ok_or(Error::NotAContainer(what))?;
        if lock.shared_len() != CONTAINER_GUARDED as usize {
            return Err(Error::NotAContainer(what));
        }
        let heap = top.heap_user().ok_or(Error::ManagerGone)?;
        Ok(Core { heap, top, lock, state: std::sync::Mutex::new(None) })
    }

    /// The current state block.
    fn state(&self) -> Result<MemoryBlock> {
        let mut kept = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = kept.as_ref() {
            if self.top.links_to(CONTAINER_STATE_LINK as usize, state)? {
                return Ok(state.clone());
            }
        }
        let state = self.top.link(CONTAINER_STATE_LINK as usize)?;
        let state =
            state.ok_or_else(|| Error::corrupt("container without a state", self.top.offset().get()))?;
        *kept = Some(state.clone());
        Ok(state)
    }

    /// Replaces the state: the commit of a change that made a new one.
    fn set_state(&self, state: &MemoryBlock) -> Result<()> {
        self.top.set_link(CONTAINER_STATE_LINK as usize, Some(state))
    }

    /// Runs `f` under the writers' lock; `f` is told whether the last holder died holding it
    /// (it then repairs what such a death can leave), and the area is marked consistent after.
    fn write<R>(&self, f: impl FnOnce(&mut SharedGuard<'_>, bool) -> Result<R>) -> Result<R> {
        let locked = self.lock.lock()?;
        let died = locked.holder_died();
        let mut guard = locked.guard();
        let r = f(&mut guard, died)?;
        if died {
            guard.mark_consistent()?;
        }
        Ok(r)
    }

    /// Makes the container durable in a store file: each part's pages, then the state's (so a
    /// state made durable names only durable parts), then the lock block's and the top block's,
    /// under the writers' lock so that no change runs meanwhile. Nothing for an in-process heap.
    /// A holder's death is left for the next writer to repair (the lock is not marked
    /// consistent here).
    fn flush(&self) -> Result<()> {
        let _guard = self.lock.lock()?.guard();
        let state = self.state()?;
        for i in 0..state.link_count() {
            if let Some(part) = state.link(i)? {
                self.flush_block(&part)?;
            }
        }
        for block in [&state, &self.lock, &self.top] {
            self.flush_block(block)?;
        }
        Ok(())
    }

    fn flush_block(&self, block: &MemoryBlock) -> Result<()> {
        self.heap.flush_block(block.header_offset(), block.len() as u64)
    }

    fn allocate(&self, len: usize) -> Result<MemoryBlock> {
        MemoryBlock::allocate(&self.heap, len, 16)
    }

    fn allocate_linked(&self, links: usize, len: usize) -> Result<MemoryBlock> {
        MemoryBlock::allocate_linked(&self.heap, links, len)
    }
}

fn write_identity(bytes: &mut [u8], who: Identity) {
    put_u64(bytes, CONTAINER_MAGIC, CONTAINER_MAGIC_WORD);
    put_u32(bytes, CONTAINER_KIND, who.kind);
    put_u32(bytes, CONTAINER_VERSION, 1);
    put_u64(bytes, CONTAINER_TYPES, who.types);
    put_u64(bytes, CONTAINER_PARAM, who.param);
}

fn read_identity(bytes: &[u8]) -> Option<Identity> {
    if get_u64(bytes, CONTAINER_MAGIC)? != CONTAINER_MAGIC_WORD || get_u32(bytes, CONTAINER_VERSION)? != 1 {
        return None;
    }
    Some(Identity {
        kind: get_u32(bytes, CONTAINER_KIND)?,
        types: get_u64(bytes, CONTAINER_TYPES)?,
        param: get_u64(bytes, CONTAINER_PARAM)?,
    })
}

/// The fingerprint of a Pod type for a container's header: its name and size.
fn type_print<T>() -> u64 {
    let h = crate::format::fnv1a(crate::format::FNV_BASIS, std::any::type_name::<T>().as_bytes());
    crate::format::fnv1a(h, &(std::mem::size_of::<T>() as u64).to_le_bytes())
}
