//! Links: blocks that own blocks. A linked block (made by
//! [`crate::MemoryManager::allocate_linked`]) keeps, after the bytes its users see, a table of
//! counted references to other blocks of the same heap, so that a list, a tree or a graph lives
//! in a store: each link keeps its block alive as a root does, and freeing a block releases
//! what it links (iteratively: a list of any length is freed without deep recursion).
//! ARCHITECTURE.md, "Links", gives the rules; `docs/format.md` the bytes.

use crate::engine::heap::family::HeapRef;
use crate::engine::heap::Obtained;
use crate::error::{Error, Result};
use crate::MemoryBlock;

impl MemoryBlock {
    /// How many links this block has (0 for a block made without links).
    pub fn link_count(&self) -> usize {
        let table = self.heap().links_of(self.off());
        table.ok().flatten().map_or(0, |t| t.count as usize)
    }

    /// Sets link `index` to `child`, a block of the same manager, or clears it (`None`); what
    /// the link named before is released (and freed if nothing else holds it, with what it
    /// links in turn). The link counts as one of `child`'s references for as long as it names
    /// it, in every process, so `child` lives while linked; linking publishes it, as a root or
    /// a handle does, so from now on `child` is read-only for every holder: write its bytes
    /// first. Any holder of this block may change its links, whether or not it was shared:
    /// links change under the store lock, never through the block's bytes.
    ///
    /// Fails with [`Error::NoSuchLink`] for an index beyond [`MemoryBlock::link_count`],
    /// [`Error::WrongManager`] for a child of another manager, and [`Error::TooManyHolds`] for a
    /// child that already has 2^20 - 1 holds (links, roots, resolving processes).
    ///
    /// ```
    /// use mmheap::{DefaultManager, MemoryManager};
    ///
    /// let m = DefaultManager::new()?;
    /// let parent = m.allocate_linked(2, 8)?;
    /// let mut child = m.allocate(5)?;
    /// child.as_mut_slice()?.copy_from_slice(b"child");
    /// parent.set_link(0, Some(&child))?;
    /// drop(child); // the link keeps it
    /// assert_eq!(parent.link(0)?.unwrap().as_slice(), b"child");
    /// parent.set_link(0, None)?; // released, and freed: nothing else held it
    /// assert!(parent.link(0)?.is_none());
    /// # Ok::<(), mmheap::Error>(())
    /// ```
    pub fn set_link(&self, index: usize, child: Option<&MemoryBlock>) -> Result<()> {
        let heap = self.heap();
        if child.is_some_and(|c| !std::ptr::eq(c.heap(), heap)) {
            return Err(Error::WrongManager);
        }
        let g = heap.lock()?;
        // Nothing of the child changes for a link that does not exist (settling publishes a
        // small block).
        heap.link_cell(self.off(), index as u64)?;
        if let Some(c) = child {
            c.settle_len_locked(&g)?;
        }
        heap.set_link_locked(&g, self.off(), index as u64, child.map(MemoryBlock::off))
    }

    /// A new reference to the block link `index` names, or `None` if the link is empty.
    pub fn link(&self, index: usize) -> Result<Option<MemoryBlock>> {
        let user = self.heap_user().ok_or(Error::ManagerGone)?;
        let got = {
            let g = user.lock()?;
            user.link_locked(&g, self.off(), index as u64)?
        };
        obtained(&user, got)
    }

    /// Whether link `index` names `child` now, read without the store lock: the caller holds
    /// `child`, so no other block can have its offset meanwhile, and a link that names it at
    /// this load named it when the load was made (a container's check that the state it keeps
    /// is still the current one).
    pub(crate) fn links_to(&self, index: usize, child: &MemoryBlock) -> Result<bool> {
        let cell = self.heap().link_cell(self.off(), index as u64)?;
        Ok(self.heap().region.load(cell)? == child.off())
    }

    /// Empties link `index` and returns the block it named: the link's count becomes the
    /// returned reference (nothing is freed in between).
    pub fn take_link(&self, index: usize) -> Result<Option<MemoryBlock>> {
        let user = self.heap_user().ok_or(Error::ManagerGone)?;
        let got = {
            let g = user.lock()?;
            user.take_link_locked(&g, self.off(), index as u64)?
        };
        obtained(&user, got)
    }
}

/// The `MemoryBlock` of a reference a link gave.
fn obtained(user: &HeapRef, got: Option<Obtained>) -> Result<Option<MemoryBlock>> {
    got.map(|got| MemoryBlock::from_obtained(user, got)).transpose()
}
