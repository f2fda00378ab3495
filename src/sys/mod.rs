//! System calls that no dependency wraps: futexes, record locks as liveness, and address space
//! reservation for the in-process manager. Everything else (file mappings, disk preallocation)
//! goes through `memmap2` and `fs2`.

#[cfg_attr(unix, path = "unix.rs")]
mod imp;

pub(crate) use imp::*;
