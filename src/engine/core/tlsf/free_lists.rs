//! The segregated free lists: a free block is linked into the list of its size class
//! (`mapping`), the two-level bitmaps say which lists hold blocks, and a search finds the
//! first list whose blocks all fit a request (`mapping_search`).

use super::{head_at, mapping, mapping_search, Core};
use crate::error::{Error, Result};
use crate::format::*;

impl Core<'_> {
    /// Checks a list neighbour before its link is rewritten: a header in the heap, on the
    /// granule, marked free. Its size is not needed here (a block whose size is used is checked
    /// whole, by [`Core::free_at`], where it is found).
    #[inline]
    pub(super) fn linked(&self, off: u64) -> Result<()> {
        let end = self.sentinel()?;
        if off < HEAP_START || off >= end || off % GRANULE != 0 || !self.tag_at(off).is_free() {
            return Err(Error::corrupt("free list link to a block that is not free", off));
        }
        Ok(())
    }

    pub(super) fn insert(&self, off: u64, size: u64) -> Result<()> {
        let (f, s) = mapping(size);
        let head = self.load(head_at(f, s));
        self.store(off + FREE_NEXT, head);
        self.store(off + FREE_PREV, 0);
        if head != 0 {
            self.linked(head)?;
            self.store(head + FREE_PREV, off);
        }
        self.store(head_at(f, s), off);
        self.store32(TLSF_SL_BITMAPS + f * 4, self.load32(TLSF_SL_BITMAPS + f * 4) | 1 << s);
        self.store(TLSF_FL_BITMAP, self.load(TLSF_FL_BITMAP) | 1 << f);
        Ok(())
    }

    pub(super) fn remove(&self, off: u64, size: u64) -> Result<()> {
        let (f, s) = mapping(size);
        let next = self.load(off + FREE_NEXT);
        let prev = self.load(off + FREE_PREV);
        if prev != 0 {
            self.linked(prev)?;
            self.store(prev + FREE_NEXT, next);
        } else if self.load(head_at(f, s)) == off {
            self.store(head_at(f, s), next);
        } else {
            return Err(Error::corrupt("free block missing from its list", off));
        }
        if next != 0 {
            self.linked(next)?;
            self.store(next + FREE_PREV, prev);
        }
        if self.load(head_at(f, s)) == 0 {
            let sl = self.load32(TLSF_SL_BITMAPS + f * 4) & !(1 << s);
            self.store32(TLSF_SL_BITMAPS + f * 4, sl);
            if sl == 0 {
                self.store(TLSF_FL_BITMAP, self.load(TLSF_FL_BITMAP) & !(1 << f));
            }
        }
        Ok(())
    }

    /// A free block of at least `size` bytes, still on its list.
    pub(super) fn find(&self, size: u64) -> Result<Option<u64>> {
        let Some((mut f, s)) = mapping_search(size) else {
            return Ok(None);
        };
        let mut sl = self.load32(TLSF_SL_BITMAPS + f * 4) & (u32::MAX << s);
        if sl == 0 {
            let fl = self.load(TLSF_FL_BITMAP) & (u64::MAX << (f + 1));
            if fl == 0 {
                return Ok(None);
            }
            f = u64::from(fl.trailing_zeros());
            if f >= FL_COUNT {
                return Err(Error::corrupt("first-level bitmap out of range", TLSF_FL_BITMAP));
            }
            sl = self.load32(TLSF_SL_BITMAPS + f * 4);
        }
        if sl == 0 {
            return Err(Error::corrupt("bitmaps disagree", TLSF_SL_BITMAPS + f * 4));
        }
        let s = u64::from(sl.trailing_zeros());
        let head = self.load(head_at(f, s));
        if head == 0 {
            return Err(Error::corrupt("bitmap marks an empty list", head_at(f, s)));
        }
        let t = self.free_at(head)?;
        if t.size() < size || mapping(t.size()) != (f, s) {
            return Err(Error::corrupt("free block on the wrong list", head));
        }
        Ok(Some(head))
    }
}
