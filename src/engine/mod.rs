//! The engine: the heap and everything that keeps blocks in it, shared by both managers.
//!
//! Its modules import one way, from the bottom up (`tests/source_rules.rs` checks it):
//!
//! - `core`: the bytes (region, headers, TLSF, spans, the core's check); no system calls.
//! - `reports`: what recoveries did, as callers are told.
//! - `heap`: the store lock, growth, allocation and resize, the reference protocol, and the
//!   heap's own machinery (thread caches, slabs, hold tables, families, purging). It runs
//!   recovery on a takeover through the function it is made with ([`heap::Recovery`]).
//! - `holders`: the one interface through which recovery, the census and the check learn every
//!   kind of reference the store holds (and the hold tables, as one).
//! - `directory`, `tables`, `roots`, `slots`, `channel`, `links`: what uses blocks (named roots and channels,
//!   small blocks as slots of spans, rings of references between processes, links kept in
//!   blocks' bytes); roots, channels and links are kinds of reference; `shared`: the locks of
//!   shared areas, which recovery gives back when their holder died.
//! - `recovery`: recovery and salvage over the kinds it is given, entered at open, on demand,
//!   or from the heap's takeover.
//! - `kinds`: every kind of reference in one list, and recovery over it (what heaps are made
//!   with); `census`: statistics and the check, with the kinds' bookkeeping blocks.

pub(crate) mod census;
pub(crate) mod channel;
pub(crate) mod core;
pub(crate) mod directory;
pub(crate) mod heap;
pub(crate) mod holders;
pub(crate) mod kinds;
pub(crate) mod links;
pub(crate) mod recovery;
pub(crate) mod reports;
pub(crate) mod roots;
pub(crate) mod shared;
pub(crate) mod slots;
pub(crate) mod tables;
