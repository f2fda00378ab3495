//! The name -> block directories: the fixed ones in the metadata area (the channels, and the
//! named roots of a store that has no roots table yet) and the roots table, a hash table in a
//! heap block (`roots.rs`). All have the same entry layout (`docs/format.md`): a target header
//! offset (0 = empty entry), a name length and the name. A new entry is written name first and
//! target last, so a reader (always under the store lock, as are writers) never sees a
//! half-written one. A table is probed from the name's hash on: an entry with target 0 and
//! name length 0 ends a probe, one with target 0 and a name (an emptied one) does not.

use crate::engine::heap::Heap;
use crate::engine::holders::{Holder, Reading, Reference};
use crate::error::{Error, Result};
use crate::format::*;

/// One directory.
#[derive(Clone, Copy)]
pub(crate) struct Directory {
    base: u64,
    count: u64,
    /// The corruption reported for a name length out of range.
    bad_length: &'static str,
    /// The damage a malformed name is.
    bad_name: &'static str,
    /// The damage a table entry is that its name does not find.
    misplaced_name: &'static str,
    /// A hash table (`count` a power of two), probed from the name's hash; else a list.
    hashed: bool,
}

/// The named roots.
pub(crate) const ROOTS: Directory = Directory {
    base: ROOTS_OFFSET,
    count: ROOT_COUNT,
    bad_length: "root name length out of range",
    bad_name: "root name is malformed",
    misplaced_name: "root name does not find its entry",
    hashed: false,
};
/// The channels.
pub(crate) const CHANNELS: Directory = Directory {
    base: CHANNELS_OFFSET,
    count: CHANNEL_COUNT,
    bad_length: "channel name length out of range",
    bad_name: "channel name is malformed",
    misplaced_name: "channel name does not find its entry",
    hashed: false,
};

// One layout serves both directories.
const _: () = {
    assert!(ROOT_SIZE == CHANNEL_SIZE && ROOT_BLOCK == CHANNEL_RING);
    assert!(ROOT_NAME_LEN == CHANNEL_NAME_LEN && ROOT_NAME == CHANNEL_NAME);
    assert!(ROOT_NAME_MAX == CHANNEL_NAME_MAX);
};

/// A used entry.
pub(crate) struct Entry {
    pub(crate) index: u64,
    pub(crate) name: Vec<u8>,
    pub(crate) target: u64,
}

/// Whether `name` can name an entry: 1..=48 bytes, no NUL.
pub(crate) fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name.len() as u64 <= ROOT_NAME_MAX && !name.contains(&0)
}

/// FNV-1a, 64 bits: where a name's probe starts in a roots table (`docs/format.md`).
pub(crate) fn name_hash(name: &[u8]) -> u64 {
    crate::format::fnv1a(crate::format::FNV_BASIS, name)
}

impl Directory {
    /// The name table of this directory's kind whose `count` entries (a power of two) start at
    /// `base` (`tables.rs`).
    pub(crate) fn table(&self, base: u64, count: u64) -> Directory {
        Directory { base, count, hashed: true, ..*self }
    }

    /// Number of entries.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// A table's header (its block's payload), where its counts are; `None` for a list.
    pub(crate) fn header(&self) -> Option<u64> {
        self.hashed.then(|| self.base - ROOT_TABLE_ENTRIES)
    }

    /// Whether entry `i` of a table was emptied: no target, a name length (a probe goes on).
    pub(crate) fn is_emptied(&self, heap: &Heap, i: u64) -> bool {
        let e = self.entry(i);
        heap.region.load(e + ROOT_BLOCK).ok() == Some(0)
            && heap.region.load32(e + ROOT_NAME_LEN).is_ok_and(|len| len != 0)
    }

    /// Store offset of entry `i`.
    pub(crate) fn entry(&self, i: u64) -> u64 {
        self.base + i * ROOT_SIZE
    }

    /// The targets of the used entries, their names unread (a damaged name hides no target).
    pub(crate) fn targets(&self, heap: &Heap) -> Vec<u64> {
        let at = |i| heap.region.load(self.entry(i) + ROOT_BLOCK).unwrap_or(0);
        (0..self.count).map(at).filter(|&t| t != 0).collect()
    }

    /// The used entries, in directory order.
    pub(crate) fn entries(&self, heap: &Heap) -> Result<Vec<Entry>> {
        let r = &heap.region;
        let mut out = Vec::new();
        for index in 0..self.count {
            let e = self.entry(index);
            let target = r.load(e + ROOT_BLOCK)?;
            if target == 0 {
                continue;
            }
            let len = u64::from(r.load32(e + ROOT_NAME_LEN)?);
            if len == 0 || len > ROOT_NAME_MAX {
                return Err(Error::corrupt(self.bad_length, e + ROOT_NAME_LEN));
            }
            let mut name = vec![0; len as usize];
            r.read_bytes(e + ROOT_NAME, &mut name)?;
            out.push(Entry { index, name, target });
        }
        Ok(out)
    }

    /// The name bytes of entry `i`, as many as its length says (at most the longest name),
    /// and that length.
    fn raw_name(&self, heap: &Heap, i: u64) -> Result<(Vec<u8>, u64)> {
        let e = self.entry(i);
        let len = u64::from(heap.region.load32(e + ROOT_NAME_LEN)?);
        let mut name = vec![0; len.min(ROOT_NAME_MAX) as usize];
        heap.region.read_bytes(e + ROOT_NAME, &mut name)?;
        Ok((name, len))
    }

    /// Whether entry `i` has a well-formed name: 1 to 48 bytes of UTF-8, no NUL.
    pub(crate) fn name_ok(&self, heap: &Heap, i: u64) -> Result<bool> {
        let (name, len) = self.raw_name(heap, i)?;
        Ok(len <= ROOT_NAME_MAX && valid_name(&name) && std::str::from_utf8(&name).is_ok())
    }

    /// Whether used entry `i` of a table, whose name is well formed, is not found by that
    /// name: the probe from the name's hash ends before it (an entry on the way was damaged
    /// into an empty one), or finds another entry of that name first, or the name was damaged
    /// into another whose probe starts elsewhere. A list finds every entry.
    pub(crate) fn misplaced(&self, heap: &Heap, i: u64) -> Result<bool> {
        if !self.hashed || !self.name_ok(heap, i)? {
            return Ok(false);
        }
        let (name, _) = self.raw_name(heap, i)?;
        Ok(self.probe(heap, &name)?.0.map(|e| e.index) != Some(i))
    }

    /// Makes entry `i` of a table, whose target is 0 now, an emptied one: its name zeroed, a
    /// name length other than 0 (an emptied entry's mark, which probes go past).
    fn tombstone(&self, heap: &Heap, i: u64) -> Result<()> {
        heap.region.zero(self.entry(i) + ROOT_NAME, ROOT_NAME_MAX)?;
        heap.region.store32(self.entry(i) + ROOT_NAME_LEN, 1)
    }

    /// Sets a table's counts of used and emptied entries from its entries (they are derived).
    pub(crate) fn recount(&self, heap: &Heap) -> Result<()> {
        let Some(at) = self.header() else { return Ok(()) };
        let used = self.targets(heap).len() as u64;
        let emptied = (0..self.count).filter(|&i| self.is_emptied(heap, i)).count() as u64;
        heap.region.store(at + ROOT_TABLE_USED, used)?;
        heap.region.store(at + ROOT_TABLE_EMPTIED, emptied)
    }

    /// The name of entry `i` as far as it can be read (damaged bytes replaced), for reports.
    pub(crate) fn name_lossy(&self, heap: &Heap, i: u64) -> Result<String> {
        let (name, _) = self.raw_name(heap, i)?;
        Ok(String::from_utf8_lossy(&name).trim_end_matches('\0').to_owned())
    }

    /// The entry named `name`.
    pub(crate) fn find(&self, heap: &Heap, name: &[u8]) -> Result<Option<Entry>> {
        match self.hashed {
            true => self.probe(heap, name).map(|(found, _)| found),
            false => Ok(self.entries(heap)?.into_iter().find(|e| e.name == name)),
        }
    }

    /// The entry a new `name` (not in the directory) goes to: the first emptied or empty one
    /// of its probe in a table, the first empty one in a list; `None` if there is none.
    pub(crate) fn place_for(&self, heap: &Heap, name: &[u8]) -> Result<Option<u64>> {
        match self.hashed {
            true => self.probe(heap, name).map(|(_, place)| place),
            false => {
                Ok((0..self.count).find(|&i| heap.region.load(self.entry(i) + ROOT_BLOCK).ok() == Some(0)))
            }
        }
    }

    /// A table's probe for `name`: its entry if there is one, and where it would go.
    fn probe(&self, heap: &Heap, name: &[u8]) -> Result<(Option<Entry>, Option<u64>)> {
        let (r, mask) = (&heap.region, self.count.wrapping_sub(1));
        let (mut i, mut place) = (name_hash(name) & mask, None);
        let mut stored = [0u8; ROOT_NAME_MAX as usize];
        for _ in 0..self.count {
            let e = self.entry(i);
            let (target, len) = (r.load(e + ROOT_BLOCK)?, u64::from(r.load32(e + ROOT_NAME_LEN)?));
            if target == 0 && len == 0 {
                return Ok((None, place.or(Some(i))));
            }
            if target == 0 {
                place.get_or_insert(i);
            } else if len == name.len() as u64 {
                r.read_bytes(e + ROOT_NAME, &mut stored[..name.len()])?;
                if stored[..name.len()] == *name {
                    return Ok((Some(Entry { index: i, name: name.to_vec(), target }), None));
                }
            }
            i = (i + 1) & mask;
        }
        Ok((None, place))
    }

    /// Fills the empty entry `i`: the name, then the target.
    pub(crate) fn write(&self, heap: &Heap, i: u64, name: &[u8], target: u64) -> Result<()> {
        let (r, e) = (&heap.region, self.entry(i));
        r.zero(e + ROOT_NAME, ROOT_NAME_MAX)?;
        r.write_bytes(e + ROOT_NAME, name)?;
        r.store32(e + ROOT_NAME_LEN, name.len() as u32)?;
        self.set_target(heap, i, target)
    }

    /// Points entry `i` at `target` (0 empties it).
    pub(crate) fn set_target(&self, heap: &Heap, i: u64, target: u64) -> Result<()> {
        heap.region.store(self.entry(i) + ROOT_BLOCK, target)
    }

    /// A recovery's reading of the entries: each used entry's reference (as `kind`'s, at its
    /// index), a damaged name reported and, for salvage, renamed; `then` reads what the entry
    /// holds besides (a channel's queued messages).
    pub(crate) fn read_references(
        &self,
        heap: &Heap,
        kind: usize,
        plan: &mut dyn Reading,
        out: &mut Vec<Reference>,
        mut then: impl FnMut(u64, u64, &mut dyn Reading, &mut Vec<Reference>) -> Result<()>,
    ) -> Result<()> {
        for index in 0..self.count {
            let target = heap.region.load(self.entry(index) + ROOT_BLOCK)?;
            if target == 0 {
                continue;
            }
            let holder = Holder { kind, entry: index, message: None };
            if !self.name_ok(heap, index)? {
                plan.damage(self.bad_name, self.entry(index))?;
                plan.rename(holder, target);
            } else if self.misplaced(heap, index)? {
                // Salvage moves it to where its name leads, under that name, unless another
                // entry is found by it (then it gets a new one).
                plan.damage(self.misplaced_name, self.entry(index))?;
                let (name, _) = self.raw_name(heap, index)?;
                match self.probe(heap, &name)?.0 {
                    Some(_) => plan.rename(holder, target),
                    None => plan.keep_name(holder, target, String::from_utf8_lossy(&name).into_owned()),
                }
            }
            out.push(Reference { holder, target });
            then(index, target, plan, out)?;
        }
        Ok(())
    }

    /// A recovery's repair of the entries: the dropped references' entries emptied, the
    /// renamed ones given their new names.
    pub(crate) fn repair(
        &self,
        heap: &Heap,
        dropped: &[Reference],
        renamed: &[(Holder, String)],
    ) -> Result<()> {
        for r in dropped.iter().filter(|r| r.holder.message.is_none()) {
            self.set_target(heap, r.holder.entry, 0)?;
            if self.hashed {
                // Emptied, not empty: a probe goes on past it (a name length of 0, which a
                // damaged entry may have, would end the probes of the entries after it).
                self.tombstone(heap, r.holder.entry)?;
            }
        }
        if !self.hashed {
            for (holder, name) in renamed {
                let target = heap.region.load(self.entry(holder.entry) + ROOT_BLOCK)?;
                self.write(heap, holder.entry, name.as_bytes(), target)?;
            }
            return Ok(());
        }
        // A table finds an entry by its name's probe: a renamed (or misplaced) entry is emptied
        // where it is, and written again where its name leads (its old entry, now emptied,
        // is a place too, so there is always one).
        let mut moved = Vec::new();
        for (holder, name) in renamed {
            let target = heap.region.load(self.entry(holder.entry) + ROOT_BLOCK)?;
            if target != 0 {
                self.set_target(heap, holder.entry, 0)?;
                self.tombstone(heap, holder.entry)?;
                moved.push((name, target));
            }
        }
        for (name, target) in moved {
            let place = self.place_for(heap, name.as_bytes())?;
            let i = place.ok_or_else(|| Error::corrupt("name table has no place for a name", self.base))?;
            self.write(heap, i, name.as_bytes(), target)?;
        }
        self.recount(heap)
    }
}
