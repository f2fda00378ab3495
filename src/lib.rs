//! # mmheap
//!
//! Memory that several processes share, or that outlives a process. A memory manager keeps
//! its block headers, reference counts and free lists inside a memory-mapped store file, so
//! several processes allocate, resize, share and free blocks in one heap at once, addressing
//! it by offset. Beside it, [`DefaultManager`] offers the same API over process memory.
//!
//! - [`MemoryManager`]: allocate, resize, statistics; implemented by both managers.
//! - [`MappedManager`]: a heap in a store file: create, open, grow, named roots, flush.
//! - [`ReadOnlyStore`]: a store read without writing a byte of it
//!   ([`MappedManager::open_read_only`]: mode 0400, another user's store).
//! - [`DefaultManager`]: the same heap over anonymous memory, with a process-wide
//!   [`DefaultManager::global`].
//! - [`MemoryBlock`]: an owning, reference-counted block; [`BlockHandle`]: the plain value
//!   that names it for another process; [`MemorySegment`]: a view of some of its bytes;
//!   [`Offset`]: a typed, position-independent link inside a store.
//!
//! ```
//! use mmheap::{MappedManager, MemoryManager, Options};
//!
//! let store = MappedManager::temporary(&Options::new())?;
//! let mut block = store.allocate(11)?;
//! block.as_mut_slice()?.copy_from_slice(b"hello world");
//! let handle = block.handle(); // plain data: send it to another process
//!
//! // ... in the other process: MappedManager::open(path)?.block_from_handle(handle)?
//! let again = store.block_from_handle(handle)?;
//! assert_eq!(again.as_slice(), b"hello world");
//! assert_eq!(block.ref_count(), 2);
//! # Ok::<(), mmheap::Error>(())
//! ```
//!
//! The layers, the trust model and the concurrency protocol are described in
//! `ARCHITECTURE.md`; the bytes on disk in `docs/format.md`.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

#[cfg(not(unix))]
compile_error!("mmheap needs a Unix system (Linux is the primary platform; see README \"Status\")");

mod block;
pub mod containers;
mod default_manager;
mod engine;
mod error;
mod fields;
mod fork;
pub mod format;
mod hooks;
/// Seams for the crate's own tests (feature `test-hooks`); not part of the API.
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub mod test_hooks {
    pub use crate::hooks::observe_persist;
}
pub mod inspect;
mod links;
mod lock;
mod manager;
mod mapped;
mod offset;
mod progress;
mod segment;
mod shared;
mod sync;
mod sys;
// The model checker's models of the protocols on store words (`--cfg loom`, `scripts/loom`).
#[cfg(all(test, loom))]
mod models;
pub mod value;
mod weak;

pub use crate::block::{BlockHandle, MemoryBlock};
pub use crate::containers::{SharedBytesMap, SharedMap, SharedVec};
pub use crate::default_manager::{DefaultManager, DEFAULT_RESERVE};
pub use crate::engine::channel::{Channel, Receiver, RecvError, SendError, Sender};
pub use crate::engine::core::check::{CheckReport, Problem};
pub use crate::engine::reports::{LostTable, NamedReference, RecoveryReport, SalvageReport};
pub use crate::error::{Error, Result, UnsafeReason};
pub use crate::format::ROOT_NAME_MAX;
pub use crate::manager::{MemoryManager, Stats};
pub use crate::mapped::{MappedManager, Options, ReadOnlyBlock, ReadOnlyStore, MAX_STORE_SIZE};
pub use crate::offset::Offset;
pub use crate::segment::{MemorySegment, MemorySegmentMut};
pub use crate::shared::{AtomicView, Locked, SharedGuard};
pub use crate::value::{Storable, Value};
pub use crate::weak::WeakBlock;

macro_rules! impl_memory_manager {
    ($t:ty) => {
        impl MemoryManager for $t {
            #[inline]
            fn allocate(&self, len: usize) -> Result<MemoryBlock> {
                MemoryBlock::allocate(self.heap(), len, 16)
            }
            fn allocate_aligned(&self, len: usize, align: usize) -> Result<MemoryBlock> {
                MemoryBlock::allocate(self.heap(), len, align)
            }
            fn allocate_zeroed(&self, len: usize) -> Result<MemoryBlock> {
                MemoryBlock::allocate_zeroed(self.heap(), len)
            }
            fn allocate_linked(&self, links: usize, len: usize) -> Result<MemoryBlock> {
                MemoryBlock::allocate_linked(self.heap(), links, len)
            }
            fn allocate_guarded(&self, len: usize, guarded: usize) -> Result<MemoryBlock> {
                MemoryBlock::allocate_shared(self.heap(), len, guarded, false)
            }
            fn allocate_atomic(&self, len: usize, atomic: usize) -> Result<MemoryBlock> {
                MemoryBlock::allocate_shared(self.heap(), len, atomic, true)
            }
            fn resize(&self, block: &mut MemoryBlock, new_len: usize) -> Result<()> {
                if !block.same_heap(self.heap()) {
                    return Err(Error::WrongManager);
                }
                block.resize(new_len)
            }
            fn stats(&self) -> Result<Stats> {
                self.heap().stats()
            }
            fn trim(&self) -> Result<()> {
                self.heap().trim()
            }
            fn block_from_handle(&self, handle: BlockHandle) -> Result<MemoryBlock> {
                let got = self.heap().resolve(handle)?;
                MemoryBlock::from_obtained(self.heap(), got)
            }
        }
    };
}

impl_memory_manager!(DefaultManager);
impl_memory_manager!(MappedManager);

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
