//! `Offset<T>`: a typed, position-independent pointer into a store.

use std::fmt;
use std::marker::PhantomData;

use bytemuck::{Pod, Zeroable};

/// A typed offset from the start of a store.
///
/// Every process maps a store at a different address, so data structures that live inside
/// the heap link to each other by offset, never by pointer. An `Offset<T>` is plain data (it
/// can itself be stored in a block) and becomes a reference only through a segment that
/// contains it ([`crate::MemorySegment::get`]), which checks range and alignment.
///
/// ```
/// use mmheap::{DefaultManager, MemoryManager, Offset};
///
/// let m = DefaultManager::new()?;
/// let mut block = m.allocate_zeroed(64)?;
/// let base = block.offset();
/// let field: Offset<u32> = base.cast::<u32>().byte_add(8);
/// block.segment_mut()?.write(8, &7u32)?;
/// assert_eq!(*block.segment().get(field)?, 7);
/// # Ok::<(), mmheap::Error>(())
/// ```
#[repr(transparent)]
pub struct Offset<T> {
    raw: u64,
    _type: PhantomData<fn() -> T>,
}

impl<T> Offset<T> {
    /// The offset `raw` bytes from the start of the store.
    pub const fn new(raw: u64) -> Self {
        Offset { raw, _type: PhantomData }
    }

    /// The null offset (0 is never a payload: the superblock lives there).
    pub const fn null() -> Self {
        Offset::new(0)
    }

    /// Whether this is the null offset.
    pub const fn is_null(self) -> bool {
        self.raw == 0
    }

    /// The byte offset.
    pub const fn get(self) -> u64 {
        self.raw
    }

    /// The same offset, typed as `U`.
    pub const fn cast<U>(self) -> Offset<U> {
        Offset::new(self.raw)
    }

    /// The offset `bytes` further on.
    pub const fn byte_add(self, bytes: u64) -> Self {
        Offset::new(self.raw + bytes)
    }

    /// The offset of element `index` of an array of `T` starting here.
    pub const fn index(self, index: u64) -> Self {
        Offset::new(self.raw + index * std::mem::size_of::<T>() as u64)
    }
}

impl<T> Clone for Offset<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Offset<T> {}
impl<T> PartialEq for Offset<T> {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}
impl<T> Eq for Offset<T> {}
impl<T> std::hash::Hash for Offset<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.raw.hash(state)
    }
}
impl<T> Default for Offset<T> {
    fn default() -> Self {
        Offset::null()
    }
}
impl<T> fmt::Debug for Offset<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Offset<{}>({:#x})", std::any::type_name::<T>(), self.raw)
    }
}

// SAFETY: `Offset<T>` is `repr(transparent)` over a `u64` (the PhantomData is a zero-sized
// field), so all-zero is a valid value.
unsafe impl<T: 'static> Zeroable for Offset<T> {}
// SAFETY: as above: no padding, every bit pattern is a valid u64, and it is Copy; `T` is only a
// marker and never stored.
unsafe impl<T: 'static> Pod for Offset<T> {}
