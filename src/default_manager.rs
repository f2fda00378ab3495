//! `DefaultManager`: the same heap over this process's own memory.

use std::ptr::NonNull;
use std::sync::{Arc, OnceLock};

use crate::core::region::Region;
use crate::error::{Error, Result};
use crate::format::{MIN_STORE_SIZE, PAGE_SIZE};
use crate::heap::{format_region, Backing, Heap};
use crate::sys;

/// Address space the in-process manager reserves by default (no memory is committed until
/// used).
pub const DEFAULT_RESERVE: u64 = 64 << 30;
const INITIAL: u64 = 1 << 20;

/// The in-process manager: the `MemoryManager` API over anonymous process memory.
///
/// It runs the same allocator core as [`crate::MappedManager`], over a private address range
/// reserved up front (so blocks never move) and committed as the heap grows. Handles it gives
/// out are meaningful only inside this process and this manager.
///
/// ```
/// use mmheap::{DefaultManager, MemoryManager};
///
/// let block = DefaultManager::global().allocate(100)?;
/// assert_eq!(block.len(), 100);
/// # Ok::<(), mmheap::Error>(())
/// ```
#[derive(Clone)]
pub struct DefaultManager {
    pub(crate) heap: Arc<Heap>,
}

impl std::fmt::Debug for DefaultManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DefaultManager").finish_non_exhaustive()
    }
}

struct Anonymous {
    base: NonNull<u8>,
    reserved: u64,
}

// SAFETY: the reservation is plain memory owned by this value; all access goes through the
// Region, which is itself Send + Sync.
unsafe impl Send for Anonymous {}
// SAFETY: as above.
unsafe impl Sync for Anonymous {}

impl Backing for Anonymous {
    fn grow(&self, region: &Region, new_cap: u64) -> Result<()> {
        if new_cap > self.reserved {
            return Err(Error::corrupt("growth past the reservation", new_cap));
        }
        // SAFETY: `[0, new_cap)` lies inside our own live reservation.
        unsafe { sys::commit(self.base, new_cap as usize) }.map_err(|e| Error::io("commit memory", e))?;
        // SAFETY: the range was just made readable and writable and stays so until drop.
        unsafe { region.raise_limit(new_cap) };
        Ok(())
    }
    fn refresh(&self, _region: &Region, cap: u64) -> Result<()> {
        Err(Error::corrupt("capacity changed behind the manager's back", cap))
    }
    fn owner_dead(&self, _tag: u32) -> bool {
        false
    }
    fn shared(&self) -> bool {
        false
    }
    fn attached(&self, _region: &Region) -> u64 {
        1
    }
    fn flush(&self) -> Result<()> {
        Ok(())
    }
    fn detach(&self, _region: &Region) {}
    fn slot(&self) -> Option<u32> {
        None
    }
}

impl Drop for Anonymous {
    fn drop(&mut self) {
        // SAFETY: this is exactly our reservation, and the Heap that used it is gone.
        unsafe { sys::release(self.base, self.reserved as usize) };
    }
}

impl DefaultManager {
    /// A new, private heap with the default reservation.
    pub fn new() -> Result<Self> {
        Self::with_max_size(DEFAULT_RESERVE)
    }

    /// A new, private heap that may grow to `max_size` bytes.
    pub fn with_max_size(max_size: u64) -> Result<Self> {
        let max = max_size.next_multiple_of(PAGE_SIZE);
        if !(MIN_STORE_SIZE..=1 << 46).contains(&max) {
            return Err(Error::InvalidOptions("max_size out of range"));
        }
        let base = sys::reserve(max as usize).map_err(|e| Error::io("reserve address space", e))?;
        let backing = Anonymous { base, reserved: max };
        let initial = INITIAL.min(max);
        // SAFETY: the reservation is `max` bytes, page-aligned, owned by `backing` which the
        // Heap keeps until after the region is gone; nothing is touched until `grow` commits it.
        let region = unsafe { Region::new(base, 0, max) };
        backing.grow(&region, initial)?;
        format_region(&region, initial, max, 0)?;
        let heap = Heap::new(region, Box::new(backing), 1)?;
        Ok(DefaultManager { heap: Arc::new(heap) })
    }

    /// The process-wide manager, created on first use.
    ///
    /// # Panics
    /// If the first use cannot reserve address space (as a global allocator would abort).
    pub fn global() -> &'static DefaultManager {
        static GLOBAL: OnceLock<DefaultManager> = OnceLock::new();
        GLOBAL.get_or_init(|| DefaultManager::new().expect("reserve the global heap"))
    }

    /// Walks the heap and reports every inconsistency.
    pub fn check(&self) -> Result<crate::CheckReport> {
        self.heap.check()
    }
}
