//! Typed values: an [rkyv] archive of a Rust value, serialized straight into a block and read in
//! place, by any process, as `&Archived<T>`. A value block starts with the type's fingerprint
//! (`docs/format.md`, "Typed values"), so a block of another type is a typed error; bytes that
//! another process wrote are validated (rkyv's bytecheck) before anything of them is handed
//! out, so a damaged or hostile value is an error, never undefined behaviour. The check is made
//! once, when a `Value` is made from a block: a value's bytes never change after that in a
//! process that follows the protocol (ARCHITECTURE.md, "Trust model"); a process that writes a
//! published block's bytes behind the API (through the file, or a raw pointer) breaks it.
//!
//! ```
//! use mmheap::{MappedManager, Options, Value};
//!
//! #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
//! struct Point { x: i32, y: i32, label: String }
//!
//! let store = MappedManager::temporary(&Options::new())?;
//! let p = Value::new_in(&store, &Point { x: 3, y: -4, label: "corner".into() })?;
//! store.set_root("corner", p.block())?;
//!
//! // ... any process: the root, checked to be a valid `Point`
//! let again = store.root_value::<Point>("corner")?.expect("set above");
//! assert_eq!(again.get().x, 3);
//! assert_eq!(again.get().label, "corner");
//! // another type is refused
//! assert!(matches!(store.root_value::<u64>("corner"), Err(mmheap::Error::WrongType { .. })));
//! # Ok::<(), mmheap::Error>(())
//! ```

use std::marker::PhantomData;

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::ser::{Positional, Writer};
use rkyv::{Archive, Archived, Deserialize, Portable, Serialize};

use crate::error::{Error, Result};
use crate::fields::{get_u32, get_u64, put_u32, put_u64};
use crate::format::{
    fnv1a, FNV_BASIS, VALUE_ARCHIVE, VALUE_FINGERPRINT, VALUE_LEN, VALUE_VERSION, VALUE_VERSION_1,
};
use crate::{BlockHandle, MemoryBlock, MemoryManager};

/// A type that can be kept in a block as a [`Value`]: it archives with rkyv (derive
/// `rkyv::Archive` and `rkyv::Serialize`), and its archived form is checked with bytecheck
/// (rkyv derives that too). Implemented for every such type; nothing to implement by hand.
pub trait Storable:
    Archive<Archived: Portable + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>>
    + for<'a> Serialize<HighSerializer<ValueWriter, ArenaHandle<'a>, rancor::Error>>
{
}

impl<T> Storable for T where
    T: Archive<Archived: Portable + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>>
        + for<'a> Serialize<HighSerializer<ValueWriter, ArenaHandle<'a>, rancor::Error>>
{
}

/// The writer rkyv serializes a [`Value`] with: straight into the block's bytes. A first pass
/// with no block only counts the bytes, so the block is allocated at its exact size and nothing
/// is serialized into an intermediate buffer.
#[derive(Debug)]
pub struct ValueWriter {
    /// The bytes written into, or null for the counting pass.
    to: *mut u8,
    room: usize,
    pos: usize,
}

impl Positional for ValueWriter {
    fn pos(&self) -> usize {
        self.pos
    }
}

impl<E: rancor::Source> Writer<E> for ValueWriter {
    fn write(&mut self, bytes: &[u8]) -> std::result::Result<(), E> {
        if !self.to.is_null() {
            if bytes.len() > self.room - self.pos {
                return Err(E::new(Error::Serialize("the value grew between its two passes".into())));
            }
            // SAFETY: `to` has `room` writable bytes (`Value::serialize_into`) that nothing else
            // reads or writes meanwhile, and `pos + len <= room` was checked above.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.to.add(self.pos), bytes.len()) };
        }
        self.pos += bytes.len();
        Ok(())
    }
}

/// A block that holds an rkyv archive of a `T`. Made with [`Value::new_in`] (serialized into a
/// new block) or from a block another reference names ([`Value::from_block`], checked), it
/// reads as `&Archived<T>` with [`Value::get`], in place, without a copy. The block's bytes never
/// change after it is made, so the check is done once.
pub struct Value<T> {
    block: MemoryBlock,
    /// The archive's type: a `Value<T>` neither owns nor lends a `T`.
    _type: PhantomData<fn() -> T>,
}

impl<T: Storable> Value<T> {
    /// Serializes `value` into a new block of `manager` (of exactly the archive's size plus the
    /// 16-byte value header).
    pub fn new_in<M: MemoryManager + ?Sized>(manager: &M, value: &T) -> Result<Self> {
        Self::make(value, |len| manager.allocate(len))
    }

    /// As [`Value::new_in`], in a linked block with `links` links (see
    /// [`MemoryBlock::set_link`]): the value can name other values by link index (kept in the
    /// archive as an integer), so a large structure is split across blocks and its parts are
    /// replaced one by one with [`MemoryBlock::set_link`]; [`Value::link_value`] reads a part.
    pub fn new_linked_in<M: MemoryManager + ?Sized>(manager: &M, value: &T, links: usize) -> Result<Self> {
        Self::make(value, |len| manager.allocate_linked(links, len))
    }

    fn make(value: &T, allocate: impl FnOnce(usize) -> Result<MemoryBlock>) -> Result<Self> {
        let counter = ValueWriter { to: std::ptr::null_mut(), room: 0, pos: 0 };
        let len = serialize(value, counter)?.pos;
        let archive_len =
            u32::try_from(len).map_err(|_| Error::Serialize(format!("{len} bytes: over 4 GiB")))?;
        let mut block = allocate(VALUE_ARCHIVE as usize + len)?;
        let bytes = block.as_mut_slice()?;
        let (head, archive) = bytes.split_at_mut(VALUE_ARCHIVE as usize);
        let to = ValueWriter { to: archive.as_mut_ptr(), room: archive.len(), pos: 0 };
        if serialize(value, to)?.pos != len {
            return Err(Error::Serialize("the value changed size between its two passes".into()));
        }
        put_u64(head, VALUE_FINGERPRINT, fingerprint::<T>());
        put_u32(head, VALUE_LEN, archive_len);
        put_u32(head, VALUE_VERSION, VALUE_VERSION_1);
        Ok(Value { block, _type: PhantomData })
    }

    /// The value in `block`, checked: its fingerprint must be `T`'s ([`Error::WrongType`]) and
    /// its bytes a valid archive of `T` ([`Error::InvalidValue`]), whoever wrote them.
    pub fn from_block(block: MemoryBlock) -> Result<Self> {
        let archive = archive_of::<T>(&block)?;
        rkyv::access::<T::Archived, rancor::Error>(archive)
            .map_err(|e| Error::InvalidValue(e.to_string()))?;
        Ok(Value { block, _type: PhantomData })
    }

    /// The value in `block`, its fingerprint checked but its bytes not validated.
    ///
    /// # Safety
    /// The block's archive must be a valid archive of `T`: written by [`Value::new_in`] (in any
    /// process) and not damaged since. A block that is not gives undefined behaviour when read;
    /// [`Value::from_block`] checks it instead, at the cost of one pass over its bytes.
    pub unsafe fn from_block_unchecked(block: MemoryBlock) -> Result<Self> {
        archive_of::<T>(&block)?;
        Ok(Value { block, _type: PhantomData })
    }

    /// The archived value, in place in the block.
    pub fn get(&self) -> &Archived<T> {
        let archive = &self.block.as_slice()[VALUE_ARCHIVE as usize..][..self.archive_len()];
        // SAFETY: the archive was written by rkyv for `T` (`new_in`) or validated as one
        // (`from_block`; `from_block_unchecked`'s caller vouches for it), and a value block's
        // bytes never change after it is made: its maker wrote them before anyone else could
        // name the block, and a block another reference names is read-only for every holder.
        unsafe { rkyv::access_unchecked::<T::Archived>(archive) }
    }

    /// A copy of the value as a `T` (rkyv's deserialization).
    pub fn deserialize(&self) -> Result<T>
    where
        T::Archived: Deserialize<T, HighDeserializer<rancor::Error>>,
    {
        rkyv::deserialize::<T, rancor::Error>(self.get()).map_err(|e| Error::InvalidValue(e.to_string()))
    }

    /// The value that link `index` of this value's block names, checked as a `U`
    /// ([`Value::from_block`]), or `None` if the link is clear.
    pub fn link_value<U: Storable>(&self, index: usize) -> Result<Option<Value<U>>> {
        self.block.link(index)?.map(Value::from_block).transpose()
    }

    /// The block that holds the value: share it ([`MemoryBlock::handle`], a root, a link, a
    /// channel) as any block.
    pub fn block(&self) -> &MemoryBlock {
        &self.block
    }

    /// The block, giving up the typed view.
    pub fn into_block(self) -> MemoryBlock {
        self.block
    }

    /// The block's handle, for another process ([`crate::MemoryManager::block_from_handle`],
    /// then [`Value::from_block`]).
    pub fn handle(&self) -> BlockHandle {
        self.block.handle()
    }

    fn archive_len(&self) -> usize {
        self.block.len() - VALUE_ARCHIVE as usize
    }
}

impl<T> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value { block: self.block.clone(), _type: PhantomData }
    }
}

impl<T> std::fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Value")
            .field("type", &std::any::type_name::<T>())
            .field("block", &self.block)
            .finish()
    }
}

fn serialize<T: Storable>(value: &T, writer: ValueWriter) -> Result<ValueWriter> {
    rkyv::api::high::to_bytes_in::<_, rancor::Error>(value, writer)
        .map_err(|e| Error::Serialize(e.to_string()))
}

/// The archive bytes of `block`, once its value header says it holds a `T`'s.
fn archive_of<T: Storable>(block: &MemoryBlock) -> Result<&[u8]> {
    let bytes = block.as_slice();
    let expected = fingerprint::<T>();
    let found = get_u64(bytes, VALUE_FINGERPRINT).unwrap_or(0);
    if found != expected || bytes.len() < VALUE_ARCHIVE as usize {
        return Err(Error::WrongType { expected, found });
    }
    let len = get_u32(bytes, VALUE_LEN).unwrap_or(0);
    let version = get_u32(bytes, VALUE_VERSION).unwrap_or(0);
    let archive = &bytes[VALUE_ARCHIVE as usize..];
    if version != VALUE_VERSION_1 || len as usize != archive.len() {
        return Err(Error::InvalidValue(format!(
            "value header: version {version}, length {len} of {}",
            archive.len()
        )));
    }
    Ok(archive)
}

/// The fingerprint of `T`'s archives: FNV-1a over the type's name, its archived size and
/// alignment, and rkyv's format (`docs/format.md`, "Typed values"). A type renamed or changed
/// in shape gets another; `type_name` is the compiler's, so a value is read back as the same
/// type by programs built by the same compiler release, which is what values assume.
pub fn fingerprint<T: Archive>() -> u64 {
    let shape = [std::mem::size_of::<T::Archived>() as u64, std::mem::align_of::<T::Archived>() as u64];
    let mut h = fnv1a(FNV_BASIS, std::any::type_name::<T>().as_bytes());
    h = fnv1a(h, b"rkyv-0.8/little-endian/aligned/rel32");
    shape.iter().fold(h, |h, w| fnv1a(h, &w.to_le_bytes()))
}
