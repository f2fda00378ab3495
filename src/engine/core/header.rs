//! Encoding of the two packed words of a block header: the tag and the reference word.
//!
//! Tag (`HDR_TAG`, changed under the store lock, except the slack of a block its owner holds
//! alone, which the owner sets with a compare-and-swap before anyone else can name the block;
//! flag changes on used blocks are atomic read-modify-writes for that reason):
//!
//! | bits    | meaning                                                          |
//! |---------|------------------------------------------------------------------|
//! | 0       | `FREE`: set iff the block is on a free list                       |
//! | 1       | `PREV_FREE`: set iff the physically previous block is free        |
//! | 2       | `SPAN`: set iff the block is a span of slots (used; see `span.rs`)  |
//! | 3       | `PAGE`: set iff the block is a span's publication page (used)     |
//! | 4..48   | block size in bytes (a multiple of 16; 0 only for the sentinel)  |
//! | 48..56  | slack: payload capacity minus the requested length (used blocks) |
//! | 56..60  | log2(alignment) - 4 the block was allocated with (used blocks;   |
//! |         | at most 12 but for a span, whose is `SPAN_ALIGN_LOG2`)            |
//! | 60      | `QUARANTINE`: set iff the block is a damaged range that salvage   |
//! |         | fenced off (used, never handed out or freed; see `recovery/`)     |
//! | 61      | `LINKED`: set iff the block's length ends with a link table       |
//! |         | (used, plain; see `heap/links.rs`)                                |
//! | 62      | `SHARED`: set iff the block's length ends with a shared area      |
//! |         | (used, plain, not linked; see `heap/shared.rs`)                   |
//! | 63      | zero                                                             |
//!
//! Reference word (`HDR_RC`, changed atomically, see ARCHITECTURE.md "References"; the plain
//! stores are those that park a block whose count its owner took to 0, which nobody else can
//! change):
//!
//! | bits    | meaning                                                              |
//! |---------|----------------------------------------------------------------------|
//! | 0..32   | owner references: `MemoryBlock`s in the owner process                |
//! | 32..52  | other holds: a hold per resolving process, per named root            |
//! | 52..63  | owner: slot + 1 of the process whose references are counted in 0..32 |
//! | 63      | published: a handle was taken or the block was shared; cleared at count 0 |
//!
//! States: a free block has reference word 0. A used block has owner references > 0 (and then
//! a non-zero owner) or other holds > 0, except when its count is 0 and it has an owner: then
//! it is *parked* in a thread cache of that owner (`cache/`), or *lent* from there to a
//! `MemoryBlock` that is its only reference (`block.rs`), or its last holder is releasing it, or
//! (in an in-process heap only) it is a raw allocation in use (`Heap::alloc_raw`). Either
//! way the owner (or, if it died, recovery) frees or reuses it; nobody else may take a reference
//! to a block whose count is 0.

use crate::format::{GRANULE, HEADER_SIZE, SPAN_ALIGN_LOG2, SPAN_SIZE};

pub(crate) const FLAG_FREE: u64 = 1;
pub(crate) const FLAG_PREV_FREE: u64 = 2;
pub(crate) const FLAG_SPAN: u64 = 4;
pub(crate) const FLAG_PAGE: u64 = 8;
pub(crate) const FLAG_QUARANTINE: u64 = 1 << 60;
pub(crate) const FLAG_LINKED: u64 = 1 << 61;
pub(crate) const FLAG_SHARED: u64 = 1 << 62;
const SIZE_MASK: u64 = 0x0000_ffff_ffff_fff0;
const RESERVED_MASK: u64 = 0x8000_0000_0000_0000;
pub(crate) const MAX_SLACK: u64 = 0xff;

/// Decoded tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tag(pub(crate) u64);

impl Tag {
    pub(crate) fn used(size: u64, slack: u64, align_log2: u32) -> Tag {
        debug_assert!(size % GRANULE == 0 && size & !SIZE_MASK == 0);
        debug_assert!(
            slack <= MAX_SLACK && ((4..=12).contains(&align_log2) || align_log2 == SPAN_ALIGN_LOG2)
        );
        Tag(size | slack << 48 | u64::from(align_log2 - 4) << 56)
    }

    pub(crate) fn free(size: u64) -> Tag {
        Tag(size | FLAG_FREE)
    }

    /// A quarantined range of `size` bytes: a used block that nothing names, never handed
    /// out, never freed.
    pub(crate) fn quarantine(size: u64) -> Tag {
        Tag(size & SIZE_MASK | FLAG_QUARANTINE)
    }

    /// Whether this can be the tag of a block users hold: used, none of the structure flags,
    /// no reserved bit, at least a minimal block (a cheap test for the release path, which
    /// reads the tag of a block it holds; the full one is [`Tag::well_formed`]).
    #[inline]
    pub(crate) fn holdable(self) -> bool {
        self.is_plain_used() && self.0 & RESERVED_MASK == 0 && self.size() >= crate::format::MIN_BLOCK
    }

    /// Whether this is a quarantined range.
    pub(crate) fn is_quarantine(self) -> bool {
        self.0 & FLAG_QUARANTINE != 0
    }

    /// Whether this is a used block that users hold: not free, not a span, a page or a
    /// quarantined range.
    #[inline]
    pub(crate) fn is_plain_used(self) -> bool {
        self.0 & (FLAG_FREE | FLAG_SPAN | FLAG_PAGE | FLAG_QUARANTINE) == 0
    }

    #[inline]
    pub(crate) fn size(self) -> u64 {
        self.0 & SIZE_MASK
    }

    pub(crate) fn is_free(self) -> bool {
        self.0 & FLAG_FREE != 0
    }

    /// Whether the block's length ends with a link table (`heap/links.rs`).
    #[inline]
    pub(crate) fn is_linked(self) -> bool {
        self.0 & FLAG_LINKED != 0
    }

    /// Whether the block's length ends with a shared area (`heap/shared.rs`).
    #[inline]
    pub(crate) fn is_shared(self) -> bool {
        self.0 & FLAG_SHARED != 0
    }

    /// Whether the block's length ends with something its users do not see (a link table or a
    /// shared area): its length is fixed, and it is never parked in a cache.
    #[inline]
    pub(crate) fn has_trailer(self) -> bool {
        self.0 & (FLAG_LINKED | FLAG_SHARED) != 0
    }

    /// Whether this is a span of slots.
    #[inline]
    pub(crate) fn is_span(self) -> bool {
        self.0 & FLAG_SPAN != 0
    }

    /// Whether this is a span's publication page.
    pub(crate) fn is_page(self) -> bool {
        self.0 & FLAG_PAGE != 0
    }

    /// The same tag with `flag` (`FLAG_SPAN`, `FLAG_PAGE`, `FLAG_LINKED` or `FLAG_SHARED`) set.
    pub(crate) fn with(self, flag: u64) -> Tag {
        Tag(self.0 | flag)
    }

    pub(crate) fn prev_free(self) -> bool {
        self.0 & FLAG_PREV_FREE != 0
    }

    pub(crate) fn with_prev_free(self, on: bool) -> Tag {
        Tag(if on { self.0 | FLAG_PREV_FREE } else { self.0 & !FLAG_PREV_FREE })
    }

    pub(crate) fn slack(self) -> u64 {
        (self.0 >> 48) & MAX_SLACK
    }

    #[inline]
    pub(crate) fn align_log2(self) -> u32 {
        ((self.0 >> 56) & 0xf) as u32 + 4
    }

    /// Requested length of a used block.
    pub(crate) fn len(self) -> u64 {
        self.size().saturating_sub(HEADER_SIZE + self.slack())
    }

    /// Whether this is an end sentinel: size 0, no flag but `PREV_FREE`.
    pub(crate) fn is_sentinel(self) -> bool {
        self.0 & !FLAG_PREV_FREE == 0
    }

    /// Whether the bits that must be zero are zero and the fields are in range.
    pub(crate) fn well_formed(self) -> bool {
        let structure = self.0 & (FLAG_SPAN | FLAG_PAGE | FLAG_QUARANTINE);
        let span_shaped = self.align_log2() == SPAN_ALIGN_LOG2 && self.size() >= SPAN_SIZE;
        let shaped = match structure {
            // A block carved for a span whose `SPAN` flag is not set yet (the flag is the
            // commit of making a span) has the span's alignment.
            0 => self.align_log2() <= 12 || span_shaped,
            FLAG_PAGE => self.align_log2() <= 12,
            FLAG_SPAN => span_shaped,
            FLAG_QUARANTINE => !self.is_free() && self.0 >> 48 & 0xfff == 0,
            _ => false,
        };
        // Only a plain used block has a link table or a shared area, and not both.
        let trailer = self.0 & (FLAG_LINKED | FLAG_SHARED);
        let linked_ok =
            trailer == 0 || structure == 0 && !self.is_free() && trailer != FLAG_LINKED | FLAG_SHARED;
        self.0 & RESERVED_MASK == 0
            && linked_ok
            && shaped
            && (self.is_free() && self.0 >> 48 == 0 && structure == 0 || !self.is_free())
            && self.slack() + HEADER_SIZE <= self.size()
    }
}

/// The reference word.
pub(crate) mod rc {
    pub(crate) const OWNER_REFS_MASK: u64 = 0xffff_ffff;
    pub(crate) const OTHER_ONE: u64 = 1 << 32;
    pub(crate) const OTHER_MASK: u64 = 0xf_ffff << 32;
    pub(crate) const OWNER_SHIFT: u32 = 52;
    pub(crate) const OWNER_MASK: u64 = 0x7ff << OWNER_SHIFT;
    pub(crate) const PUBLISHED: u64 = 1 << 63;
    /// Largest number of other holds.
    pub(crate) const OTHER_MAX: u64 = 0xf_ffff;

    #[inline]
    pub(crate) fn owner_refs(w: u64) -> u64 {
        w & OWNER_REFS_MASK
    }
    #[inline]
    pub(crate) fn other(w: u64) -> u64 {
        (w & OTHER_MASK) >> 32
    }
    /// Owner slot + 1, or 0.
    #[inline]
    pub(crate) fn owner(w: u64) -> u64 {
        (w & OWNER_MASK) >> OWNER_SHIFT
    }
    #[inline]
    pub(crate) fn published(w: u64) -> bool {
        w & PUBLISHED != 0
    }
    /// Total references: the count users see.
    #[inline]
    pub(crate) fn count(w: u64) -> u64 {
        owner_refs(w) + other(w)
    }
    /// A fresh word: one owner reference held by `owner` (slot + 1).
    #[inline]
    pub(crate) fn fresh(owner: u64) -> u64 {
        owner << OWNER_SHIFT | 1
    }
    /// A parked block's word: owned by `owner` (slot + 1), no reference (see `cache/`).
    #[inline]
    pub(crate) fn parked(owner: u64) -> u64 {
        owner << OWNER_SHIFT
    }
}

/// The check word of a header at `offset` with generation `gen` in a store keyed `key`.
pub(crate) fn check_word(key: u64, offset: u64, gen: u64) -> u64 {
    crate::format::mix(key ^ crate::format::mix(offset ^ gen.rotate_left(32)))
}

/// The key under which `check` is the check word of a header at `offset` with generation
/// `gen` (the finaliser is a bijection): every check word seals the store's key, so salvage
/// can tell a damaged key from damaged headers.
pub(crate) fn key_of(check: u64, offset: u64, gen: u64) -> u64 {
    unmix(check) ^ crate::format::mix(offset ^ gen.rotate_left(32))
}

/// The inverse of `format::mix`.
fn unmix(mut x: u64) -> u64 {
    const fn inverse(a: u64) -> u64 {
        let mut x = a;
        let mut i = 0;
        while i < 6 {
            x = x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)));
            i += 1;
        }
        x
    }
    x ^= x >> 31 ^ x >> 62;
    x = x.wrapping_mul(inverse(0x94d0_49bb_1331_11eb));
    x ^= x >> 27 ^ x >> 54;
    x = x.wrapping_mul(inverse(0xbf58_476d_1ce4_e5b9));
    x ^= x >> 30 ^ x >> 60;
    x.wrapping_sub(0x9e37_79b9_7f4a_7c15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_round_trips() {
        let t = Tag::used(4096, 17, 12).with_prev_free(true);
        assert_eq!(t.size(), 4096);
        assert_eq!(t.slack(), 17);
        assert_eq!(t.align_log2(), 12);
        assert!(t.prev_free() && !t.is_free() && t.well_formed());
        assert_eq!(t.len(), 4096 - 32 - 17);
        let f = Tag::free(128);
        assert!(f.is_free() && f.well_formed() && f.size() == 128);
        assert!(!Tag(1 << 62).well_formed());
        let span = Tag::used(SPAN_SIZE, 0, SPAN_ALIGN_LOG2).with(FLAG_SPAN);
        assert!(span.is_span() && !span.is_page() && span.well_formed());
        assert!(!Tag::used(4096, 0, 12).with(FLAG_SPAN).well_formed(), "a span has the span's shape");
        assert!(!span.with(FLAG_PAGE).well_formed());
        assert!(Tag::used(4096, 0, 4).with(FLAG_PAGE).well_formed());
        assert!(!Tag(Tag::free(128).0 | FLAG_SPAN).well_formed());
        assert!(Tag::used(SPAN_SIZE, 0, SPAN_ALIGN_LOG2).well_formed(), "a span being made");
        let q = Tag::quarantine(4096);
        assert!(q.is_quarantine() && q.well_formed() && !q.is_free() && !q.is_plain_used());
        assert!(!Tag(q.0 | crate::engine::core::header::FLAG_FREE).well_formed());
        assert!(!Tag(q.0 | FLAG_SPAN).well_formed() && !Tag(q.0 | 1 << 48).well_formed());
        assert!(!Tag(1 << 61).well_formed());
    }

    #[test]
    fn a_check_word_gives_back_its_key() {
        for (key, off, gen) in
            [(0, 0, 0), (0x5eed, 0x8000, 7), (u64::MAX, 0x1234_5670, u64::MAX), (1 << 63, 16, 1)]
        {
            assert_eq!(key_of(check_word(key, off, gen), off, gen), key);
        }
    }

    #[test]
    fn rc_fields_are_disjoint() {
        let w = (rc::fresh(5) + 3 * rc::OTHER_ONE) | rc::PUBLISHED;
        assert_eq!(rc::owner_refs(w), 1);
        assert_eq!(rc::other(w), 3);
        assert_eq!(rc::owner(w), 5);
        assert!(rc::published(w));
        assert_eq!(rc::count(w), 4);
    }
}
