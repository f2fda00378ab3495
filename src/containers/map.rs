//! `SharedBytesMap` and `SharedMap<K, V>`: hash maps in a heap.
//!
//! The state is a *directory*: a linked block of `n` links (a power of two), link `i` the
//! *segment* of the keys whose hash modulo `n` is `i` (clear when it has none). A segment is a
//! block of entries (`docs/format.md`, "Containers"): a change copies the one segment it
//! touches; when the map holds more than `MAP_LOAD` entries per segment, a directory of `2n`
//! links is built from split segments and swapped in. The entry count is kept in the lock
//! block's guarded area, changed after each swap and recounted when a holder died.

use std::marker::PhantomData;

use bytemuck::Pod;

use super::{type_print, Core, Identity};
use crate::error::{Error, Result};
use crate::fields::{get_u32, get_u64, put_u32, put_u64};
use crate::format::{
    CONTAINER_BYTES_MAP, CONTAINER_COUNT, CONTAINER_MAP, MAP_ENTRY_HASH, MAP_ENTRY_HEADER, MAP_ENTRY_KEY_LEN,
    MAP_ENTRY_VALUE_LEN, MAP_LOAD, MAP_SEG_COUNT, MAP_SEG_ENTRIES,
};
use crate::hooks::pause;
use crate::shared::SharedGuard;
use crate::{MemoryBlock, MemoryManager};

/// Segments of a new map's directory.
const FIRST_SEGMENTS: usize = 8;

/// A hash map from byte strings to byte strings that lives in a heap (a store, for several
/// processes), reachable from a root. Writers (`insert`, `remove`, `get_or_insert_with`) are
/// serialized by a robust lock; readers (`get`, `entries`) take none and never see a torn
/// entry; a writer killed at any instruction leaves each change whole or absent, and nothing
/// leaks. Keys and values are copied in and out; each is at most 4 GiB - 1. A change copies the
/// segment it touches (about 8 entries): keep large values in blocks of their own ([`Value`],
/// links) and their handles in the map.
///
/// [`Value`]: crate::Value
///
/// ```
/// use mmheap::{MappedManager, Options, SharedBytesMap};
///
/// let store = MappedManager::temporary(&Options::new())?;
/// let map = SharedBytesMap::new_in(&store)?;
/// map.insert(b"apple", b"red")?;
/// map.insert(b"banana", b"yellow")?;
/// store.set_root("colours", map.block())?;
///
/// // ... any process:
/// let map = SharedBytesMap::open(store.root("colours")?.expect("set above"))?;
/// assert_eq!(map.get(b"banana")?.as_deref(), Some(&b"yellow"[..]));
/// assert_eq!(map.remove(b"apple")?.as_deref(), Some(&b"red"[..]));
/// assert_eq!(map.len()?, 1);
/// # Ok::<(), mmheap::Error>(())
/// ```
pub struct SharedBytesMap {
    core: Core,
}

/// One entry of a segment, as parsed (borrowed from the segment's bytes).
struct Entry<'a> {
    hash: u64,
    key: &'a [u8],
    value: &'a [u8],
}

impl SharedBytesMap {
    const WHAT: &'static str = "not a SharedBytesMap";

    /// A new, empty map in `manager`.
    pub fn new_in<M: MemoryManager + ?Sized>(manager: &M) -> Result<Self> {
        Self::create(manager, Identity { kind: CONTAINER_BYTES_MAP, types: 0, param: 0 })
    }

    /// The map `block` is the top block of ([`SharedBytesMap::block`]): [`Error::NotAContainer`]
    /// if it is no byte-string map.
    pub fn open(block: MemoryBlock) -> Result<Self> {
        Self::open_as(block, Identity { kind: CONTAINER_BYTES_MAP, types: 0, param: 0 }, Self::WHAT)
    }

    fn create<M: MemoryManager + ?Sized>(manager: &M, who: Identity) -> Result<Self> {
        let core = Core::create(manager, who, |core| core.allocate_linked(FIRST_SEGMENTS, 8))?;
        Ok(SharedBytesMap { core })
    }

    fn open_as(block: MemoryBlock, who: Identity, what: &'static str) -> Result<Self> {
        Ok(SharedBytesMap { core: Core::open(block, who, what)? })
    }

    /// The top block: set a root (or a link) to it to keep the map.
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

    /// A copy of the value of `key`, if the map has it.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let hash = hash(key);
        let dir = self.core.state()?;
        let Some(segment) = dir.link(index(hash, &dir))? else { return Ok(None) };
        let found = entries(&segment)?.into_iter().find(|e| e.hash == hash && e.key == key);
        Ok(found.map(|e| e.value.to_vec()))
    }

    /// Whether the map has `key`.
    pub fn contains_key(&self, key: &[u8]) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    /// Sets `key` to `value`; returns the value it had.
    pub fn insert(&self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>> {
        check_lengths(key, value)?;
        self.core.write(|guard, died| {
            let old = self.put(guard, died, key, Some(value))?;
            if old.is_none() {
                self.grow_if_loaded(guard)?;
            }
            Ok(old)
        })
    }

    /// Removes `key`; returns its value.
    pub fn remove(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.core.write(|guard, died| self.put(guard, died, key, None))
    }

    /// The value of `key`; if the map has none, `make()`'s, inserted first (one step under the
    /// writers' lock: of several processes asking at once, one inserts, all get its value).
    pub fn get_or_insert_with(&self, key: &[u8], make: impl FnOnce() -> Vec<u8>) -> Result<Vec<u8>> {
        if let Some(v) = self.get(key)? {
            return Ok(v);
        }
        self.core.write(|guard, died| {
            if let Some(v) = self.get(key)? {
                return Ok(v);
            }
            let value = make();
            check_lengths(key, &value)?;
            self.put(guard, died, key, Some(&value))?;
            self.grow_if_loaded(guard)?;
            Ok(value)
        })
    }

    /// The number of entries: kept under the writers' lock, so this waits for a writer that
    /// holds it.
    pub fn len(&self) -> Result<u64> {
        self.core.write(|guard, died| self.counted(guard, died))
    }

    /// Whether the map has no entries.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Every entry, segment by segment (in no particular order): each key once, each entry as
    /// one change left it (a segment changed meanwhile is read as before or after the change).
    pub fn entries(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let dir = self.core.state()?;
        let mut out = Vec::new();
        for i in 0..dir.link_count() {
            if let Some(segment) = dir.link(i)? {
                out.extend(entries(&segment)?.iter().map(|e| (e.key.to_vec(), e.value.to_vec())));
            }
        }
        Ok(out)
    }

    /// The entry count in the guarded area; recounted first if the last holder died.
    fn counted(&self, guard: &mut SharedGuard<'_>, died: bool) -> Result<u64> {
        if died {
            let dir = self.core.state()?;
            let mut n = 0;
            for i in 0..dir.link_count() {
                n += dir.link(i)?.map_or(Ok(0), |s| segment_count(&s))?;
            }
            put_u64(guard, CONTAINER_COUNT, n);
        }
        Ok(get_u64(guard, CONTAINER_COUNT).unwrap_or(0))
    }

    /// Sets (`Some`) or removes (`None`) `key` in a copy of its segment, swapped in; then the
    /// count. Returns the old value.
    fn put(
        &self,
        guard: &mut SharedGuard<'_>,
        died: bool,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<Option<Vec<u8>>> {
        let count = self.counted(guard, died)?;
        let hash = hash(key);
        let dir = self.core.state()?;
        let i = index(hash, &dir);
        let segment = dir.link(i)?;
        let mut kept: Vec<Entry<'_>> = Vec::new();
        let mut old = None;
        if let Some(s) = &segment {
            for e in entries(s)? {
                match e.hash == hash && e.key == key {
                    true => old = Some(e.value.to_vec()),
                    false => kept.push(e),
                }
            }
        }
        if value.is_none() && old.is_none() {
            return Ok(None);
        }
        if let Some(value) = value {
            kept.push(Entry { hash, key, value });
        }
        let new = if kept.is_empty() { None } else { Some(self.new_segment(&kept)?) };
        pause("map-segment-made");
        dir.set_link(i, new.as_ref())?;
        pause("map-segment-linked");
        let count = match (&old, value) {
            (None, Some(_)) => count + 1,
            (Some(_), None) => count.saturating_sub(1),
            _ => count,
        };
        put_u64(guard, CONTAINER_COUNT, count);
        Ok(old)
    }

    /// Doubles the directory when the entries outnumber `MAP_LOAD` per segment.
    fn grow_if_loaded(&self, guard: &SharedGuard<'_>) -> Result<()> {
        let count = get_u64(guard, CONTAINER_COUNT).unwrap_or(0);
        let dir = self.core.state()?;
        let n = dir.link_count();
        if count <= n as u64 * MAP_LOAD || n * 2 > crate::format::LINK_MAX as usize {
            return Ok(());
        }
        let bigger = self.core.allocate_linked(n * 2, 8)?;
        for i in 0..n {
            let Some(segment) = dir.link(i)? else { continue };
            let all = entries(&segment)?;
            let (low, high): (Vec<_>, Vec<_>) = all.into_iter().partition(|e| e.hash as usize & n == 0);
            for (at, part) in [(i, low), (i + n, high)] {
                if !part.is_empty() {
                    bigger.set_link(at, Some(&self.new_segment(&part)?))?;
                }
            }
        }
        pause("map-directory-built");
        self.core.set_state(&bigger)
    }

    fn new_segment(&self, entries: &[Entry<'_>]) -> Result<MemoryBlock> {
        let size: usize = entries.iter().map(|e| entry_size(e.key.len(), e.value.len())).sum();
        let mut block = self.core.allocate(MAP_SEG_ENTRIES as usize + size)?;
        let out = block.as_mut_slice()?;
        out.fill(0);
        put_u64(out, MAP_SEG_COUNT, entries.len() as u64);
        let mut at = MAP_SEG_ENTRIES as usize;
        for e in entries {
            let here = &mut out[at..];
            put_u64(here, MAP_ENTRY_HASH, e.hash);
            put_u32(here, MAP_ENTRY_KEY_LEN, e.key.len() as u32);
            put_u32(here, MAP_ENTRY_VALUE_LEN, e.value.len() as u32);
            let k = MAP_ENTRY_HEADER as usize;
            here[k..k + e.key.len()].copy_from_slice(e.key);
            here[k + e.key.len()..k + e.key.len() + e.value.len()].copy_from_slice(e.value);
            at += entry_size(e.key.len(), e.value.len());
        }
        Ok(block)
    }
}

impl std::fmt::Debug for SharedBytesMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBytesMap").field("top", &self.core.top).finish_non_exhaustive()
    }
}

fn check_lengths(key: &[u8], value: &[u8]) -> Result<()> {
    match key.len() < u32::MAX as usize && value.len() < u32::MAX as usize {
        true => Ok(()),
        false => Err(Error::InvalidOptions("a SharedBytesMap key or value of 4 GiB or more")),
    }
}

fn entry_size(key: usize, value: usize) -> usize {
    (MAP_ENTRY_HEADER as usize + key + value).next_multiple_of(8)
}

/// FNV-1a of the key, finished with splitmix64 so that its low bits (the segment) mix well.
fn hash(key: &[u8]) -> u64 {
    crate::format::mix(crate::format::fnv1a(crate::format::FNV_BASIS, key))
}

/// The directory link of `hash`: the directory has a power of two links.
fn index(hash: u64, dir: &MemoryBlock) -> usize {
    hash as usize & (dir.link_count().max(1) - 1)
}

fn segment_count(segment: &MemoryBlock) -> Result<u64> {
    Ok(entries(segment)?.len() as u64)
}

/// The entries of `segment`, each checked to lie within it ([`Error::Corrupt`] for a segment
/// that does not parse: nothing read from a store is trusted).
fn entries(segment: &MemoryBlock) -> Result<Vec<Entry<'_>>> {
    let bytes = segment.as_slice();
    let damaged = || Error::corrupt("a shared map's segment does not parse", segment.header_offset());
    let count = get_u64(bytes, MAP_SEG_COUNT).ok_or_else(damaged)?;
    let mut parsed = Vec::new();
    let mut at = MAP_SEG_ENTRIES as usize;
    for _ in 0..count {
        let here = bytes.get(at..).ok_or_else(damaged)?;
        let hash = get_u64(here, MAP_ENTRY_HASH).ok_or_else(damaged)?;
        let k = get_u32(here, MAP_ENTRY_KEY_LEN).ok_or_else(damaged)? as usize;
        let v = get_u32(here, MAP_ENTRY_VALUE_LEN).ok_or_else(damaged)? as usize;
        let h = MAP_ENTRY_HEADER as usize;
        let key = here.get(h..h + k).ok_or_else(damaged)?;
        let value = here.get(h + k..h + k + v).ok_or_else(damaged)?;
        parsed.push(Entry { hash, key, value });
        at += entry_size(k, v);
    }
    Ok(parsed)
}

/// A hash map from `K` to `V` (Pod types: keys compared and hashed by their bytes) that lives
/// in a heap: a [`SharedBytesMap`] whose header names the two types, so it opens only as the
/// same `SharedMap<K, V>`. Zero-sized types are keys or values as any (a `SharedMap<u64, ()>`
/// is a set; a map keyed by `()` holds one entry at most).
///
/// ```
/// use mmheap::{DefaultManager, SharedMap};
///
/// let m = DefaultManager::new()?;
/// let map = SharedMap::<u32, [u8; 4]>::new_in(&m)?;
/// for i in 0..1000u32 {
///     map.insert(&i, &i.to_le_bytes())?;
/// }
/// assert_eq!(map.get(&7)?, Some(7u32.to_le_bytes()));
/// assert_eq!(map.len()?, 1000);
/// # Ok::<(), mmheap::Error>(())
/// ```
pub struct SharedMap<K, V> {
    bytes: SharedBytesMap,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K: Pod, V: Pod> SharedMap<K, V> {
    fn identity() -> Identity {
        Identity {
            kind: CONTAINER_MAP,
            types: type_print::<K>() ^ type_print::<V>().rotate_left(1),
            param: 0,
        }
    }

    /// A new, empty map in `manager`.
    pub fn new_in<M: MemoryManager + ?Sized>(manager: &M) -> Result<Self> {
        Ok(SharedMap { bytes: SharedBytesMap::create(manager, Self::identity())?, _types: PhantomData })
    }

    /// The map `block` is the top block of: [`Error::NotAContainer`] if it is no `SharedMap<K, V>`.
    pub fn open(block: MemoryBlock) -> Result<Self> {
        let bytes =
            SharedBytesMap::open_as(block, Self::identity(), "not a SharedMap of these key and value types")?;
        Ok(SharedMap { bytes, _types: PhantomData })
    }

    /// The top block: set a root (or a link) to it to keep the map.
    pub fn block(&self) -> &MemoryBlock {
        self.bytes.block()
    }

    /// Makes this map durable in its store file (see [`SharedBytesMap::flush`]).
    pub fn flush(&self) -> Result<()> {
        self.bytes.flush()
    }

    /// The value of `key`, if the map has it.
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        self.bytes.get(bytemuck::bytes_of(key))?.map(|v| self.value(&v)).transpose()
    }

    /// Whether the map has `key`.
    pub fn contains_key(&self, key: &K) -> Result<bool> {
        self.bytes.contains_key(bytemuck::bytes_of(key))
    }

    /// Sets `key` to `value`; returns the value it had.
    pub fn insert(&self, key: &K, value: &V) -> Result<Option<V>> {
        let old = self.bytes.insert(bytemuck::bytes_of(key), bytemuck::bytes_of(value))?;
        old.map(|v| self.value(&v)).transpose()
    }

    /// Removes `key`; returns its value.
    pub fn remove(&self, key: &K) -> Result<Option<V>> {
        self.bytes.remove(bytemuck::bytes_of(key))?.map(|v| self.value(&v)).transpose()
    }

    /// The value of `key`, or `make()`'s, inserted first (see
    /// [`SharedBytesMap::get_or_insert_with`]).
    pub fn get_or_insert_with(&self, key: &K, make: impl FnOnce() -> V) -> Result<V> {
        let v = self
            .bytes
            .get_or_insert_with(bytemuck::bytes_of(key), || bytemuck::bytes_of(&make()).to_vec())?;
        self.value(&v)
    }

    /// The number of entries.
    pub fn len(&self) -> Result<u64> {
        self.bytes.len()
    }

    /// Whether the map has no entries.
    pub fn is_empty(&self) -> Result<bool> {
        self.bytes.is_empty()
    }

    /// Every entry (see [`SharedBytesMap::entries`]).
    pub fn entries(&self) -> Result<Vec<(K, V)>> {
        let all = self.bytes.entries()?;
        all.iter().map(|(k, v)| Ok((self.key(k)?, self.value(v)?))).collect()
    }

    fn value(&self, bytes: &[u8]) -> Result<V> {
        bytemuck::try_pod_read_unaligned(bytes).map_err(|_| self.damaged())
    }

    fn key(&self, bytes: &[u8]) -> Result<K> {
        bytemuck::try_pod_read_unaligned(bytes).map_err(|_| self.damaged())
    }

    fn damaged(&self) -> Error {
        Error::corrupt("a SharedMap entry of the wrong size", self.block().header_offset())
    }
}

impl<K, V> std::fmt::Debug for SharedMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMap").field("map", &self.bytes).finish()
    }
}
