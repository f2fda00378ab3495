//! System calls that no dependency wraps (or wraps wrongly): futexes, record locks as
//! liveness, address space reservation for the in-process manager, and disk preallocation (fs2
//! 0.4's reports a full disk as success: `preallocate` says why). File mappings go through
//! `memmap2`.

#[cfg_attr(unix, path = "unix.rs")]
mod imp;
// Address space for the in-process manager: `mmap`ped, or under Miri (which runs no
// `PROT_NONE` mapping nor `madvise`) allocated, so that the same heap code runs there.
#[cfg_attr(all(unix, not(miri)), path = "memory_unix.rs")]
#[cfg_attr(miri, path = "memory_miri.rs")]
mod memory;

pub(crate) use imp::*;
pub(crate) use memory::*;
