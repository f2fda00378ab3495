//! Weak references to blocks: they do not keep a block alive, and give a new reference only
//! while the block still lives. A weak reference is a [`BlockHandle`] (an offset and the
//! block's generation), so it can be kept in a block's bytes too (a *weak link*, `Pod`), and
//! a place that has been freed and reused never passes for the block it named.

use std::fmt;

use crate::engine::heap::family::HeapRef;
use crate::error::{Error, Result};
use crate::{BlockHandle, MemoryBlock};

/// A reference to a block that does not keep it alive: [`WeakBlock::upgrade`] gives a new
/// [`MemoryBlock`] while the block lives, and `None` once it has been freed (whatever took its
/// place since). Made by [`MemoryBlock::downgrade`]; it keeps the manager's heap (its mapping)
/// as a manager handle does, not the block. It names the block by its handle, so a resize that
/// moves the block (which gives it a new handle) ends its weak references, as it ends its
/// handles. One made when its heap had no user left (no manager handle, no reference resolved
/// from a handle: only owners' blocks keep the heap then) never upgrades: nothing can be
/// resolved in a heap that nothing uses.
///
/// ```
/// use mmheap::{DefaultManager, MemoryManager};
///
/// fn main() -> mmheap::Result<()> {
///     let m = DefaultManager::new()?;
///     let mut block = m.allocate(16)?;
///     block.as_mut_slice()?.copy_from_slice(b"weakly referred!");
///     let weak = block.downgrade();
///     assert_eq!(weak.upgrade().unwrap().as_slice(), b"weakly referred!");
///     drop(block);
///     assert!(weak.upgrade().is_none(), "freed: the weak reference does not keep it");
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct WeakBlock {
    /// The heap the block is in; `None` if it had no user left when this was made (every
    /// manager handle and every hold gone): then nothing can be resolved in it any more.
    heap: Option<HeapRef>,
    handle: BlockHandle,
}

impl MemoryBlock {
    /// A weak reference to this block: it does not keep the block alive, and upgrades to a new
    /// reference only while the block lives. Publishes the block, as [`MemoryBlock::handle`]
    /// does: once a weak reference exists another reference can appear at any time, so the
    /// block is read-only from now on, for every holder. In a store too full or too damaged to
    /// record the publication, the weak reference never upgrades (as the handle would not
    /// resolve).
    pub fn downgrade(&self) -> WeakBlock {
        WeakBlock { heap: self.heap_user(), handle: self.handle() }
    }
}

impl WeakBlock {
    /// A new reference to the block if it still lives; `None` once it has been freed (or on a
    /// store error, which [`WeakBlock::try_upgrade`] reports).
    pub fn upgrade(&self) -> Option<MemoryBlock> {
        self.try_upgrade().ok().flatten()
    }

    /// A new reference to the block if it still lives, `Ok(None)` once it has been freed; an
    /// error if the store refused (I/O, damage, a store opened read-only).
    pub fn try_upgrade(&self) -> Result<Option<MemoryBlock>> {
        let Some(heap) = &self.heap else { return Ok(None) };
        alive(heap.resolve(self.handle).and_then(|got| MemoryBlock::from_obtained(heap, got)))
    }

    /// The handle this weak reference resolves: kept in a block's bytes, it is a weak link
    /// (`bytemuck::Pod`), which [`crate::MemoryManager::upgrade`] resolves in any process.
    pub fn handle(&self) -> BlockHandle {
        self.handle
    }
}

impl fmt::Debug for WeakBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakBlock").field("handle", &self.handle).finish_non_exhaustive()
    }
}

/// A resolution's outcome as an upgrade's: a block that has been freed (a stale handle) is
/// `None`, not an error.
pub(crate) fn alive(resolved: Result<MemoryBlock>) -> Result<Option<MemoryBlock>> {
    match resolved {
        Ok(block) => Ok(Some(block)),
        Err(Error::StaleHandle { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}
