//! The allocator core: TLSF over a plain byte region, with no system calls.
//!
//! The same core serves the in-process manager (anonymous memory) and the mapped manager (a
//! store file), and its tests run under Miri over a `Vec`-backed region.

pub(crate) mod check;
pub(crate) mod header;
pub(crate) mod region;
pub(crate) mod scan;
pub(crate) mod span;
pub(crate) mod tlsf;

#[cfg(test)]
mod tests;
