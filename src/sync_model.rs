//! The store words' atomics in the model checker (`--cfg loom`): `loom`'s, each operation
//! counted against the running model thread's budget, so that a model can stop a thread (a
//! process "dying") right after its k-th atomic operation on store words ([`die_after`]).
//!
//! The operation that spends the last of the budget happens; then the thread unwinds with
//! [`Died`], and from then on its stores and read-modify-writes (those its destructors make
//! while it unwinds) do not happen, as a dead process makes none: a compare-and-swap fails, a
//! read-modify-write returns the value without changing it. Loads still happen.

// Not every operation is used by the crate outside the models (the library built with
// `--cfg loom` but without its tests calls fewer).
#![allow(dead_code)]

use crate::sync::Ordering;
use std::cell::Cell;

/// The panic payload of a model thread whose budget ran out.
#[derive(Debug)]
pub(crate) struct Died;

crate::sync::thread_local! {
    /// Operations the thread may still make (`None`: no limit), and whether it died.
    static BUDGET: Cell<(Option<u64>, bool)> = Cell::new((None, false));
}

/// Stops the calling model thread after its next `k` atomic operations on store words.
pub(crate) fn die_after(k: u64) {
    BUDGET.with(|b| b.set((Some(k), false)));
}

/// Lifts the calling model thread's limit (and its death: a model that ran a process's death
/// on its main thread goes on as the model).
pub(crate) fn no_limit() {
    BUDGET.with(|b| b.set((None, false)));
}

/// Whether the calling model thread died.
fn dead() -> bool {
    BUDGET.with(|b| b.get().1)
}

/// Counts an operation that happened; unwinds with [`Died`] if it was the last allowed.
fn spent() {
    let last = BUDGET.with(|b| match b.get() {
        (Some(1), false) => {
            b.set((Some(0), true));
            true
        }
        (Some(n), false) => {
            b.set((Some(n - 1), false));
            false
        }
        _ => false,
    });
    if last && !std::thread::panicking() {
        std::panic::panic_any(Died);
    }
}

macro_rules! counted {
    ($name:ident, $inner:ty, $int:ty) => {
        /// A store word in the model: `loom`'s atomic, counted (module docs).
        #[derive(Debug)]
        pub(crate) struct $name($inner);

        impl Default for $name {
            fn default() -> Self {
                Self::new(0)
            }
        }

        impl $name {
            pub(crate) fn new(v: $int) -> Self {
                Self(<$inner>::new(v))
            }
            pub(crate) fn with_mut<R>(&mut self, f: impl FnOnce(&mut $int) -> R) -> R {
                self.0.with_mut(f)
            }
            pub(crate) fn load(&self, o: Ordering) -> $int {
                let v = self.0.load(o);
                spent();
                v
            }
            pub(crate) fn store(&self, v: $int, o: Ordering) {
                if !dead() {
                    self.0.store(v, o);
                    spent();
                }
            }
            /// A read-modify-write `f` unless the thread died (then a load).
            fn rmw(&self, o: Ordering, f: impl FnOnce(&$inner) -> $int) -> $int {
                if dead() {
                    return self.0.load(load_part(o));
                }
                let v = f(&self.0);
                spent();
                v
            }
            pub(crate) fn swap(&self, v: $int, o: Ordering) -> $int {
                self.rmw(o, |a| a.swap(v, o))
            }
            pub(crate) fn fetch_add(&self, v: $int, o: Ordering) -> $int {
                self.rmw(o, |a| a.fetch_add(v, o))
            }
            pub(crate) fn fetch_sub(&self, v: $int, o: Ordering) -> $int {
                self.rmw(o, |a| a.fetch_sub(v, o))
            }
            pub(crate) fn fetch_or(&self, v: $int, o: Ordering) -> $int {
                self.rmw(o, |a| a.fetch_or(v, o))
            }
            pub(crate) fn fetch_and(&self, v: $int, o: Ordering) -> $int {
                self.rmw(o, |a| a.fetch_and(v, o))
            }
            pub(crate) fn fetch_max(&self, v: $int, o: Ordering) -> $int {
                self.rmw(o, |a| a.fetch_max(v, o))
            }
            pub(crate) fn compare_exchange(
                &self,
                cur: $int,
                new: $int,
                s: Ordering,
                f: Ordering,
            ) -> Result<$int, $int> {
                if dead() {
                    return Err(self.0.load(f));
                }
                let r = self.0.compare_exchange(cur, new, s, f);
                spent();
                r
            }
            pub(crate) fn compare_exchange_weak(
                &self,
                cur: $int,
                new: $int,
                s: Ordering,
                f: Ordering,
            ) -> Result<$int, $int> {
                self.compare_exchange(cur, new, s, f)
            }
            pub(crate) fn fetch_update(
                &self,
                s: Ordering,
                f: Ordering,
                mut g: impl FnMut($int) -> Option<$int>,
            ) -> Result<$int, $int> {
                let mut cur = self.load(f);
                while let Some(new) = g(cur) {
                    match self.compare_exchange(cur, new, s, f) {
                        Ok(v) => return Ok(v),
                        Err(v) => cur = v,
                    }
                }
                Err(cur)
            }
        }
    };
}

/// The load half of a read-modify-write's ordering.
fn load_part(o: Ordering) -> Ordering {
    match o {
        Ordering::Release => Ordering::Relaxed,
        Ordering::AcqRel => Ordering::Acquire,
        o => o,
    }
}

counted!(AtomicU64, loom::sync::atomic::AtomicU64, u64);
counted!(AtomicU32, loom::sync::atomic::AtomicU32, u32);
