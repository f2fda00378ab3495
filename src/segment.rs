//! `MemorySegment` and `MemorySegmentMut`: views of a block's bytes, or of any part of them.
//!
//! A segment is a (start, length) view; it borrows the block it came from, so it cannot
//! outlive it, and it is not a block (it holds no reference of its own). Typed views check
//! size and alignment and need `bytemuck::Pod` types, for which every bit pattern is valid.

use std::mem::{align_of, size_of};
use std::ops::{Bound, RangeBounds};

use bytemuck::Pod;

use crate::error::{Error, Result};
use crate::Offset;

fn resolve_range(range: impl RangeBounds<usize>, len: usize) -> Result<(usize, usize)> {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => len,
    };
    if start > end || end > len {
        return Err(Error::OutOfBounds { start: start as u64, end: end as u64, len: len as u64 });
    }
    Ok((start, end))
}

fn check_view<T>(bytes: &[u8], count: usize) -> Result<()> {
    let need = size_of::<T>().saturating_mul(count);
    if need > bytes.len() {
        return Err(Error::OutOfBounds { start: 0, end: need as u64, len: bytes.len() as u64 });
    }
    let address = bytes.as_ptr() as usize;
    if address % align_of::<T>() != 0 {
        return Err(Error::Misaligned { address, align: align_of::<T>() });
    }
    Ok(())
}

fn whole_elements<T>(len: usize) -> Result<usize> {
    let size = size_of::<T>().max(1);
    if len % size != 0 {
        let end = (len - len % size) as u64;
        return Err(Error::OutOfBounds { start: end, end: len as u64, len: end });
    }
    Ok(len / size)
}

/// A read-only view of bytes in a block.
///
/// ```
/// use mmheap::{DefaultManager, MemoryManager};
///
/// let m = DefaultManager::new()?;
/// let mut block = m.allocate(16)?;
/// block.segment_mut()?.view_slice_mut::<u32>()?.copy_from_slice(&[1, 2, 3, 4]);
/// let seg = block.segment();
/// let (head, tail) = seg.split_at(8)?;
/// assert_eq!(head.view_slice::<u32>()?, &[1, 2]);
/// assert_eq!(*tail.view::<u32>()?, 3);
/// assert!(seg.slice(4..20).is_err());
/// # Ok::<(), mmheap::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct MemorySegment<'a> {
    bytes: &'a [u8],
    start: u64,
}

impl<'a> MemorySegment<'a> {
    pub(crate) fn new(bytes: &'a [u8], start: u64) -> Self {
        MemorySegment { bytes, start }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the segment is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Store offset of the segment's first byte.
    pub fn offset(&self) -> Offset<u8> {
        Offset::new(self.start)
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// A sub-segment.
    pub fn slice(&self, range: impl RangeBounds<usize>) -> Result<MemorySegment<'a>> {
        let (s, e) = resolve_range(range, self.len())?;
        Ok(MemorySegment::new(&self.bytes[s..e], self.start + s as u64))
    }

    /// The segment cut in two at `mid`.
    pub fn split_at(&self, mid: usize) -> Result<(MemorySegment<'a>, MemorySegment<'a>)> {
        Ok((self.slice(..mid)?, self.slice(mid..)?))
    }

    /// The first `size_of::<T>()` bytes as a `T`.
    pub fn view<T: Pod>(&self) -> Result<&'a T> {
        check_view::<T>(self.bytes, 1)?;
        Ok(bytemuck::from_bytes(&self.bytes[..size_of::<T>()]))
    }

    /// The whole segment as a slice of `T` (its length must be a multiple of `T`'s size).
    pub fn view_slice<T: Pod>(&self) -> Result<&'a [T]> {
        let n = whole_elements::<T>(self.len())?;
        check_view::<T>(self.bytes, n)?;
        Ok(bytemuck::cast_slice(self.bytes))
    }

    /// A copy of the `T` at byte `at` (no alignment needed).
    pub fn read<T: Pod>(&self, at: usize) -> Result<T> {
        let s = self.slice(at..at.saturating_add(size_of::<T>()))?;
        Ok(bytemuck::pod_read_unaligned(s.bytes))
    }

    /// The `T` at store offset `off`, which must lie inside this segment and be aligned.
    pub fn get<T: Pod>(&self, off: Offset<T>) -> Result<&'a T> {
        let rel = off.get().checked_sub(self.start).and_then(|r| usize::try_from(r).ok());
        let rel = rel.ok_or(Error::OutOfBounds {
            start: off.get(),
            end: off.get().saturating_add(size_of::<T>() as u64),
            len: self.len() as u64,
        })?;
        self.slice(rel..)?.view()
    }

    /// Copies the bytes into `out`, which must have the same length.
    pub fn copy_to_slice(&self, out: &mut [u8]) -> Result<()> {
        if out.len() != self.len() {
            return Err(Error::OutOfBounds { start: 0, end: out.len() as u64, len: self.len() as u64 });
        }
        out.copy_from_slice(self.bytes);
        Ok(())
    }

    /// The bytes as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        self.bytes.to_vec()
    }
}

/// A writable view of bytes in a block that the caller owns solely.
#[derive(Debug)]
pub struct MemorySegmentMut<'a> {
    bytes: &'a mut [u8],
    start: u64,
}

impl<'a> MemorySegmentMut<'a> {
    pub(crate) fn new(bytes: &'a mut [u8], start: u64) -> Self {
        MemorySegmentMut { bytes, start }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the segment is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Store offset of the segment's first byte.
    pub fn offset(&self) -> Offset<u8> {
        Offset::new(self.start)
    }

    /// A read-only view of the same bytes.
    pub fn as_segment(&self) -> MemorySegment<'_> {
        MemorySegment::new(self.bytes, self.start)
    }

    /// The bytes.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        self.bytes
    }

    /// A writable sub-segment.
    pub fn slice_mut(&mut self, range: impl RangeBounds<usize>) -> Result<MemorySegmentMut<'_>> {
        let (s, e) = resolve_range(range, self.len())?;
        Ok(MemorySegmentMut::new(&mut self.bytes[s..e], self.start + s as u64))
    }

    /// The segment cut in two writable halves at `mid`.
    pub fn split_at_mut(self, mid: usize) -> Result<(MemorySegmentMut<'a>, MemorySegmentMut<'a>)> {
        resolve_range(..mid, self.bytes.len())?;
        let start = self.start;
        let (a, b) = self.bytes.split_at_mut(mid);
        Ok((MemorySegmentMut::new(a, start), MemorySegmentMut::new(b, start + mid as u64)))
    }

    /// The first `size_of::<T>()` bytes as a mutable `T`.
    pub fn view_mut<T: Pod>(&mut self) -> Result<&mut T> {
        check_view::<T>(self.bytes, 1)?;
        Ok(bytemuck::from_bytes_mut(&mut self.bytes[..size_of::<T>()]))
    }

    /// The whole segment as a mutable slice of `T`.
    pub fn view_slice_mut<T: Pod>(&mut self) -> Result<&mut [T]> {
        let n = whole_elements::<T>(self.len())?;
        check_view::<T>(self.bytes, n)?;
        Ok(bytemuck::cast_slice_mut(self.bytes))
    }

    /// Writes `value` at byte `at` (no alignment needed).
    pub fn write<T: Pod>(&mut self, at: usize, value: &T) -> Result<()> {
        let s = self.slice_mut(at..at.saturating_add(size_of::<T>()))?;
        s.bytes.copy_from_slice(bytemuck::bytes_of(value));
        Ok(())
    }

    /// Copies `src`, which must have the segment's length, into the segment.
    pub fn copy_from_slice(&mut self, src: &[u8]) -> Result<()> {
        if src.len() != self.len() {
            return Err(Error::OutOfBounds { start: 0, end: src.len() as u64, len: self.len() as u64 });
        }
        self.bytes.copy_from_slice(src);
        Ok(())
    }

    /// Sets every byte to `value`.
    pub fn fill(&mut self, value: u8) {
        self.bytes.fill(value);
    }
}
