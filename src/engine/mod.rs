//! The engine: the heap and everything that keeps blocks in it, shared by both managers.

pub(crate) mod census;
pub(crate) mod channel;
pub(crate) mod core;
pub(crate) mod directory;
pub(crate) mod heap;
pub(crate) mod recovery;
pub(crate) mod reports;
pub(crate) mod slots;
