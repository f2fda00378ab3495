//! The fixed name -> block directories in the metadata area: named roots and channels. Both
//! have the same entry layout (`docs/format.md`): a target header offset (0 = empty entry), a
//! name length and the name. A new entry is written name first and target last, so a reader
//! (always under the store lock, as are writers) never sees a half-written one.

use crate::engine::heap::Heap;
use crate::error::{Error, Result};
use crate::format::*;

/// One directory.
pub(crate) struct Directory {
    base: u64,
    count: u64,
    /// The corruption reported for a name length out of range.
    bad_length: &'static str,
}

/// The named roots.
pub(crate) const ROOTS: Directory =
    Directory { base: ROOTS_OFFSET, count: ROOT_COUNT, bad_length: "root name length out of range" };
/// The channels.
pub(crate) const CHANNELS: Directory =
    Directory { base: CHANNELS_OFFSET, count: CHANNEL_COUNT, bad_length: "channel name length out of range" };

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

    /// Whether this is the roots directory (else the channels).
    pub(crate) fn is_roots(&self) -> bool {
        self.base == ROOTS_OFFSET
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
}
