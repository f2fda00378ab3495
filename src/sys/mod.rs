//! System calls that no dependency wraps (or wraps wrongly): futexes, record locks as
//! liveness, address space reservation for the in-process manager, and disk preallocation (fs2
//! 0.4's reports a full disk as success: `preallocate` says why). File mappings go through
//! `memmap2`.

#[cfg_attr(unix, path = "unix.rs")]
mod imp;

pub(crate) use imp::*;
