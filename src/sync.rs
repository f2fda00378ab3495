//! The one door to atomics.
//!
//! Everything that touches an atomic imports it from here, never from `std` directly
//! (`tests/source_rules.rs` fails on a `std::sync::atomic` path anywhere else). Words that live in a store are reached only
//! through [`crate::engine::core::region::Region`], which hands out `&AtomicU64` / `&AtomicU32` views of
//! mapped bytes; a model checker such as `loom` cannot stand in for those (its atomics are not
//! layout-compatible with bytes in a file), so the protocols on them are instead checked with
//! real processes in `tests/multiprocess.rs`.

pub(crate) use std::sync::atomic::{
    compiler_fence, fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};
/// The integer atomics users view in a block's atomic area (`shared.rs`), as `std` has them.
pub(crate) mod views {
    pub(crate) use std::sync::atomic::{
        AtomicI16, AtomicI32, AtomicI64, AtomicI8, AtomicU16, AtomicU32, AtomicU64, AtomicU8,
    };
}
