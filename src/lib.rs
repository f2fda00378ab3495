//! mmheap
#![deny(unsafe_op_in_unsafe_fn)]
#![allow(dead_code)]

mod core;
mod error;
mod format;
mod sync;

pub use crate::core::check::{CheckReport, Problem};
pub use crate::error::{Error, Result};
