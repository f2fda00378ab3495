//! The engine: the heap and everything that keeps blocks in it, shared by both managers.

pub(crate) mod cache;
pub(crate) mod channel;
pub(crate) mod core;
pub(crate) mod directory;
pub(crate) mod family;
pub(crate) mod heap;
pub(crate) mod holds;
pub(crate) mod recovery;
pub(crate) mod slab;
pub(crate) mod slots;
