//! `SharedVec<T>`: a growable array of Pod values in a heap.
//!
//! The state is a *chunk table*: a linked block whose link 0 is the *tail chunk* and links 1 to
//! `f` the full chunks, each of `per` elements (`VEC_CHUNK_BYTES` of them, at least one). A
//! chunk is a block of `VEC_CHUNK_ELEMENTS` header bytes and its elements; the tail's header
//! holds the vector's length `len`, so `len` and the tail change in one link swap, and
//! `f = (len - t) / per` where `t` (1 to `per`, or 0 when empty) is the tail's elements.

use std::marker::PhantomData;

use bytemuck::Pod;

use super::{type_print, Core, Identity};
use crate::error::{Error, Result};
use crate::fields::{get_u64, put_u64};
use crate::format::{CONTAINER_VEC, VEC_CHUNK_BYTES, VEC_CHUNK_ELEMENTS, VEC_CHUNK_LEN, VEC_TAIL_LINK};
use crate::hooks::pause;
use crate::{MemoryBlock, MemoryManager};

/// A growable array of `T` that lives in a heap (a store, for several processes), reachable
/// from a root: `push`, `pop`, `set` by any holder, serialized by a robust lock; `get`, `len`
/// and `to_vec` without it. A change is whole or absent after a crash at any instruction, and
/// a reader never sees a torn element (the module `mmheap::containers` says how).
///
/// ```
/// use mmheap::{MappedManager, Options, SharedVec};
///
/// let store = MappedManager::temporary(&Options::new())?;
/// let v = SharedVec::<u64>::new_in(&store)?;
/// for i in 0..1000 {
///     v.push(i * i)?;
/// }
/// store.set_root("squares", v.block())?;
///
/// // ... any process:
/// let v = SharedVec::<u64>::open(store.root("squares")?.expect("set above"))?;
/// assert_eq!(v.len()?, 1000);
/// assert_eq!(v.get(12)?, Some(144));
/// assert_eq!(v.pop()?, Some(999 * 999));
/// # Ok::<(), mmheap::Error>(())
/// ```
pub struct SharedVec<T> {
    core: Core,
    per: u64,
    _type: PhantomData<fn() -> T>,
}

/// A consistent view: the chunk table, its tail and what they say.
struct View {
    table: MemoryBlock,
    tail: Option<MemoryBlock>,
    len: u64,
    /// Elements in the tail.
    t: u64,
    /// Full chunks (links 1 to `f`).
    f: u64,
}

impl<T: Pod> SharedVec<T> {
    /// A new, empty vector in `manager`. Zero-sized `T` is refused ([`Error::InvalidOptions`]).
    pub fn new_in<M: MemoryManager + ?Sized>(manager: &M) -> Result<Self> {
        let who = Self::identity()?;
        let core = Core::create(manager, who, |core| core.allocate_linked(2, 8))?;
        Ok(SharedVec { core, per: who.param, _type: PhantomData })
    }

    /// The vector `block` is the top block of ([`SharedVec::block`]): [`Error::NotAContainer`]
    /// if it is no vector of `T`.
    pub fn open(block: MemoryBlock) -> Result<Self> {
        let who = Self::identity()?;
        let core = Core::open(block, who, "not a SharedVec of this element type")?;
        Ok(SharedVec { core, per: who.param, _type: PhantomData })
    }

    fn identity() -> Result<Identity> {
        let size = std::mem::size_of::<T>() as u64;
        if size == 0 {
            return Err(Error::InvalidOptions("a SharedVec of a zero-sized type"));
        }
        Ok(Identity { kind: CONTAINER_VEC, types: type_print::<T>(), param: (VEC_CHUNK_BYTES / size).max(1) })
    }

    /// The top block: set a root (or a link) to it to keep the vector.
    pub fn block(&self) -> &MemoryBlock {
        &self.core.top
    }

    /// Makes this container durable in its store file, cheaper than the store's
    /// [`crate::MappedManager::flush`] when only it changed: its parts' pages, then the blocks
    /// that link them, each written and waited for (msync), under the writers' lock. After a
    /// power loss it reads as at this call, if the root (or link) naming it was made durable by
    /// an earlier store flush and it did not change since. Nothing to do for an in-process
    /// heap. An I/O error (EIO) is this call's error.
    pub fn flush(&self) -> Result<()> {
        self.core.flush()
    }

    /// The number of elements.
    pub fn len(&self) -> Result<u64> {
        Ok(self.view()?.len)
    }

    /// Whether the vector has no elements.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Element `index`, or `None` past the end.
    pub fn get(&self, index: u64) -> Result<Option<T>> {
        loop {
            let v = self.view()?;
            if index >= v.len {
                return Ok(None);
            }
            let chunk = index / self.per;
            // A pop may have emptied the chunk since the view was taken: look again.
            let Some(block) = self.chunk(&v, chunk)? else { continue };
            return self.element(&block, index % self.per).map(Some);
        }
    }

    /// Every element, in order: the chunks as the view taken first names them.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        'again: loop {
            let v = self.view()?;
            let mut out = Vec::with_capacity(v.len as usize);
            for c in 0..=v.f {
                match self.chunk(&v, c)? {
                    Some(block) => out.extend_from_slice(&self.elements(&block)),
                    None if c == v.f && v.t == 0 => {}
                    None => continue 'again,
                }
            }
            return Ok(out);
        }
    }

    /// Appends `value`.
    pub fn push(&self, value: T) -> Result<()> {
        self.core.write(|_, died| {
            let mut v = self.repaired(died)?;
            if v.t < self.per {
                let mut tail = self.elements_of(v.tail.as_ref());
                tail.push(value);
                return self.set_tail(&v.table, v.len + 1, &tail);
            }
            let old_tail = v.tail.take().ok_or_else(|| self.damaged(&v.table))?;
            if v.f + 1 >= v.table.link_count() as u64 {
                v.table = self.grow(&v)?;
            }
            // Two swaps: the full tail becomes chunk f + 1 (a stray link until the second), then
            // the new tail says the new length.
            v.table.set_link((v.f + 1) as usize, Some(&old_tail))?;
            pause("vec-chunk-linked");
            self.set_tail(&v.table, v.len + 1, &[value])
        })
    }

    /// Removes and returns the last element.
    pub fn pop(&self) -> Result<Option<T>> {
        self.core.write(|_, died| {
            let v = self.repaired(died)?;
            let tail = self.elements_of(v.tail.as_ref());
            let Some(&last) = tail.last() else { return Ok(None) };
            if tail.len() > 1 || v.f == 0 {
                self.set_tail(&v.table, v.len - 1, &tail[..tail.len() - 1])?;
                return Ok(Some(last));
            }
            // The last full chunk becomes the tail (a copy: the tail says the length), then its
            // link, now stray, is cleared.
            let full = self.chunk(&v, v.f - 1)?.ok_or_else(|| self.damaged(&v.table))?;
            self.set_tail(&v.table, v.len - 1, &self.elements(&full))?;
            pause("vec-tail-moved-down");
            v.table.set_link(v.f as usize, None)?;
            Ok(Some(last))
        })
    }

    /// Replaces element `index` ([`Error::OutOfBounds`] past the end); returns the old one.
    pub fn set(&self, index: u64, value: T) -> Result<T> {
        self.core.write(|_, died| {
            let v = self.repaired(died)?;
            if index >= v.len {
                return Err(Error::OutOfBounds { start: index, end: index + 1, len: v.len });
            }
            let c = index / self.per;
            let block = self.chunk(&v, c)?.ok_or_else(|| self.damaged(&v.table))?;
            let mut elements = self.elements(&block);
            let old = std::mem::replace(&mut elements[(index % self.per) as usize], value);
            if c == v.f {
                self.set_tail(&v.table, v.len, &elements)?;
            } else {
                let copy = self.new_chunk(0, &elements)?;
                v.table.set_link((c + 1) as usize, Some(&copy))?;
            }
            Ok(old)
        })
    }

    /// The view, after the repair a holder's death may call for: a push or pop killed between
    /// its two swaps left link `f + 1` set; it is cleared.
    fn repaired(&self, died: bool) -> Result<View> {
        let v = self.view()?;
        let stray = (v.f + 1) as usize;
        if died && stray < v.table.link_count() && v.table.link(stray)?.is_some() {
            v.table.set_link(stray, None)?;
        }
        Ok(v)
    }

    fn view(&self) -> Result<View> {
        let table = self.core.state()?;
        let tail = table.link(VEC_TAIL_LINK as usize)?;
        let (len, t) = match &tail {
            None => (0, 0),
            Some(b) => (get_u64(b.as_slice(), VEC_CHUNK_LEN).unwrap_or(0), self.count(b)?),
        };
        let whole = len.checked_sub(t).filter(|w| w % self.per == 0);
        let f = whole.map(|w| w / self.per).ok_or_else(|| self.damaged(&table))?;
        if (t == 0) != (len == 0) || t > self.per || f + 1 > table.link_count() as u64 {
            return Err(self.damaged(&table));
        }
        Ok(View { table, tail, len, t, f })
    }

    /// Chunk `c` of the view (the tail if `c == f`).
    fn chunk(&self, v: &View, c: u64) -> Result<Option<MemoryBlock>> {
        if c == v.f {
            return Ok(v.tail.clone());
        }
        let block = v.table.link((c + 1) as usize)?;
        match &block {
            Some(b) if self.count(b)? != self.per => Err(self.damaged(&v.table)),
            _ => Ok(block),
        }
    }

    fn count(&self, chunk: &MemoryBlock) -> Result<u64> {
        let bytes = (chunk.len() as u64).checked_sub(VEC_CHUNK_ELEMENTS);
        let size = std::mem::size_of::<T>() as u64;
        bytes.filter(|b| b % size == 0).map(|b| b / size).ok_or_else(|| self.damaged(chunk))
    }

    /// The elements of `chunk` (a copy).
    fn elements(&self, chunk: &MemoryBlock) -> Vec<T> {
        let bytes = chunk.as_slice().get(VEC_CHUNK_ELEMENTS as usize..).unwrap_or_default();
        bytes.chunks_exact(std::mem::size_of::<T>()).map(bytemuck::pod_read_unaligned).collect()
    }

    fn elements_of(&self, chunk: Option<&MemoryBlock>) -> Vec<T> {
        chunk.map_or_else(Vec::new, |c| self.elements(c))
    }

    /// Element `k` of `chunk`, read alone.
    fn element(&self, chunk: &MemoryBlock, k: u64) -> Result<T> {
        let size = std::mem::size_of::<T>();
        let at = VEC_CHUNK_ELEMENTS as usize + k as usize * size;
        let bytes = chunk.as_slice().get(at..at + size);
        bytes.map(bytemuck::pod_read_unaligned).ok_or_else(|| self.damaged(chunk))
    }

    fn new_chunk(&self, len: u64, elements: &[T]) -> Result<MemoryBlock> {
        let bytes: &[u8] = bytemuck::cast_slice(elements);
        let mut block = self.core.allocate(VEC_CHUNK_ELEMENTS as usize + bytes.len())?;
        let out = block.as_mut_slice()?;
        out[..VEC_CHUNK_ELEMENTS as usize].fill(0);
        put_u64(out, VEC_CHUNK_LEN, len);
        out[VEC_CHUNK_ELEMENTS as usize..].copy_from_slice(bytes);
        Ok(block)
    }

    /// Makes `elements` the tail, the vector `len` long (clears the tail for an empty vector).
    fn set_tail(&self, table: &MemoryBlock, len: u64, elements: &[T]) -> Result<()> {
        let tail = if elements.is_empty() { None } else { Some(self.new_chunk(len, elements)?) };
        pause("vec-tail-made");
        table.set_link(VEC_TAIL_LINK as usize, tail.as_ref())
    }

    /// A chunk table with twice the links, the same chunks linked, made the state.
    fn grow(&self, v: &View) -> Result<MemoryBlock> {
        let links = v.table.link_count();
        let table = self.core.allocate_linked(links * 2, 8)?;
        for i in 0..=v.f as usize {
            let chunk = if i == 0 { v.tail.clone() } else { v.table.link(i)? };
            table.set_link(i, chunk.as_ref())?;
        }
        pause("vec-table-built");
        self.core.set_state(&table)?;
        Ok(table)
    }

    fn damaged(&self, block: &MemoryBlock) -> Error {
        Error::corrupt("a SharedVec's chunks disagree", block.header_offset())
    }
}

impl<T> std::fmt::Debug for SharedVec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedVec").field("top", &self.core.top).finish_non_exhaustive()
    }
}
