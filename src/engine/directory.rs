//! The fixed name -> block directories in the metadata area: named roots and channels. Both
//! have the same entry layout (`docs/format.md`): a target header offset (0 = empty entry), a
//! name length and the name. A new entry is written name first and target last, so a reader
//! (always under the store lock, as are writers) never sees a half-written one.

use crate::engine::core::check::Problem;
use crate::engine::core::header::rc;
use crate::engine::heap::Heap;
use crate::engine::holders::{Holder, Kind, Reading, Reference, Session};
use crate::error::{Error, Result};
use crate::format::*;

/// One directory.
pub(crate) struct Directory {
    base: u64,
    count: u64,
    /// The corruption reported for a name length out of range.
    bad_length: &'static str,
    /// The damage a malformed name is.
    bad_name: &'static str,
}

/// The named roots.
pub(crate) const ROOTS: Directory = Directory {
    base: ROOTS_OFFSET,
    count: ROOT_COUNT,
    bad_length: "root name length out of range",
    bad_name: "root name is malformed",
};
/// The channels.
pub(crate) const CHANNELS: Directory = Directory {
    base: CHANNELS_OFFSET,
    count: CHANNEL_COUNT,
    bad_length: "channel name length out of range",
    bad_name: "channel name is malformed",
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

impl Directory {
    /// Number of entries.
    pub(crate) fn count(&self) -> u64 {
        self.count
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

    /// The name of entry `i` as far as it can be read (damaged bytes replaced), for reports.
    pub(crate) fn name_lossy(&self, heap: &Heap, i: u64) -> Result<String> {
        let (name, _) = self.raw_name(heap, i)?;
        Ok(String::from_utf8_lossy(&name).trim_end_matches('\0').to_owned())
    }

    /// The entry named `name`.
    pub(crate) fn find(&self, heap: &Heap, name: &[u8]) -> Result<Option<Entry>> {
        Ok(self.entries(heap)?.into_iter().find(|e| e.name == name))
    }

    /// The first empty entry, if any.
    pub(crate) fn free_entry(&self, heap: &Heap) -> Option<u64> {
        (0..self.count).find(|&i| heap.region.load(self.entry(i) + ROOT_BLOCK).ok() == Some(0))
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
        }
        for (holder, name) in renamed {
            let target = heap.region.load(self.entry(holder.entry) + ROOT_BLOCK)?;
            self.write(heap, holder.entry, name.as_bytes(), target)?;
        }
        Ok(())
    }
}

/// One used entry of the roots, read as it is, with what is wrong with it.
pub(crate) struct Surveyed {
    /// The name, bytes that are not UTF-8 replaced.
    pub(crate) name: String,
    /// The block it names.
    pub(crate) target: u64,
    /// What is wrong with the entry, each at the offset a check reports.
    pub(crate) problems: Vec<Problem>,
}

/// Every used entry of the roots, each checked on its own (a malformed name, a block that is
/// not live, an unpublished block), so that one damaged entry hides no other. The caller holds
/// the store lock.
pub(crate) fn survey_roots(heap: &Heap) -> Result<Vec<Surveyed>> {
    let mut out = Vec::new();
    for i in 0..ROOT_COUNT {
        let e = ROOTS.entry(i);
        let target = heap.region.load(e + ROOT_BLOCK)?;
        if target == 0 {
            continue;
        }
        let mut problems = Vec::new();
        if !ROOTS.name_ok(heap, i)? {
            problems.push(Problem { what: "root name is malformed", offset: e });
        }
        let word = heap.rc(target);
        if !heap.names_live(target) || rc::count(word) == 0 {
            problems.push(Problem { what: "root names no live block", offset: e });
        } else if !rc::published(word) {
            // A root publishes its block before it names it (recovery refuses this as damage).
            problems.push(Problem { what: "root names an unpublished block", offset: target });
        }
        out.push(Surveyed { name: ROOTS.name_lossy(heap, i)?, target, problems });
    }
    Ok(out)
}

/// The named roots as a kind of reference: each holds one of its block's other holds.
pub(crate) struct Roots;

impl Kind for Roots {
    fn open(&self, _heap: &Heap, _dead: &[u64], kind: usize) -> Result<Box<dyn Session>> {
        Ok(Box::new(RootSession { kind }))
    }

    fn check(&self, heap: &Heap) -> Result<Vec<Problem>> {
        Ok(survey_roots(heap)?.into_iter().flat_map(|s| s.problems).collect())
    }

    fn bookkeeping(&self, _heap: &Heap, _out: &mut Vec<u64>) -> Result<()> {
        Ok(())
    }
}

struct RootSession {
    kind: usize,
}

impl Session for RootSession {
    fn read(&mut self, heap: &Heap, plan: &mut dyn Reading, out: &mut Vec<Reference>) -> Result<()> {
        ROOTS.read_references(heap, self.kind, plan, out, |_, _, _, _| Ok(()))
    }

    fn what(&self, _holder: &Holder) -> &'static str {
        "root"
    }

    fn names_nothing(&self, _holder: &Holder) -> &'static str {
        "root names no live block"
    }

    fn name(&self, heap: &Heap, holder: &Holder) -> Result<String> {
        ROOTS.name_lossy(heap, holder.entry)
    }

    fn repair(&self, heap: &Heap, dropped: &[Reference], renamed: &[(Holder, String)]) -> Result<()> {
        ROOTS.repair(heap, dropped, renamed)
    }
}
