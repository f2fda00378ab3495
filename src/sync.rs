//! The one door to atomics.
//!
//! Everything that touches an atomic imports it from here, never from `std` directly
//! (`tests/source_rules.rs` fails on a `std::sync::atomic` path anywhere else). Words that live in a store are reached only
//! through [`crate::engine::core::region::Region`], which hands out `&AtomicU64` / `&AtomicU32` views of
//! the store's words.
//!
//! Built with `--cfg loom`, those two types and [`fence`] are `loom`'s model atomics, and a
//! `Region` keeps a model word for each store word it hands out (`engine/core/region_model.rs`),
//! so the real protocols on store words (the store lock, guarded areas' robust locks, channel
//! rings, reference words, thread caches) run unchanged inside `loom`'s model checker (`src/models/`,
//! `scripts/loom`); the heap's per-thread state is declared with `thread_local!` (below), a model
//! thread's own there. Futex waits become yields there ([`yield_now`], `sys`), and spinning loops
//! yield through [`spin_loop`]. Atomics that are process-local, never a store's (statics made
//! with a `const` `new`, counters of this process), come from [`local`] and stay `std`'s in
//! every build. What the models cannot see: bytes reached as bytes (payloads, names), which in
//! a model region are plain memory that no protocol may rely on for synchronization, and a
//! process dying (a model holder stops after its k-th atomic operation instead, and the
//! model's `owner_dead` says so). Protocols across real processes are checked in
//! `tests/multiprocess.rs` and `tests/crash.rs`.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::fence;
/// The model's store words (`--cfg loom`): `loom`'s atomics, counted so that a model thread
/// can stop after its k-th operation.
#[cfg(loom)]
#[path = "sync_model.rs"]
pub(crate) mod model;
#[cfg(loom)]
pub(crate) use model::{AtomicU32, AtomicU64};
pub(crate) use std::sync::atomic::{compiler_fence, AtomicBool, AtomicPtr, AtomicU8, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64};

/// `thread_local!`: `std`'s, or under `--cfg loom` `loom`'s, whose values are per model thread
/// (`loom` runs every model thread on one OS thread, so `std`'s would be shared between them).
/// State the protocols keep per thread (the store lock's holder, thread caches and their
/// claims, the slabs' fast word, faults, guarded areas held) is declared with it.
#[cfg(not(loom))]
pub(crate) use std::thread_local;

/// `loom`'s `thread_local!` behind a [`ModelLocal`], taking `std`'s `const { ... }`
/// initializers too (`loom`'s takes an expression, which in this edition's macros is not a
/// `const` block).
#[cfg(loom)]
macro_rules! loom_thread_local {
    () => {};
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = const { $init:expr }; $($rest:tt)*) => {
        $crate::sync::thread_local!($(#[$attr])* $vis static $name: $t = $init; $($rest)*);
    };
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = const { $init:expr }) => {
        $crate::sync::thread_local!($(#[$attr])* $vis static $name: $t = $init);
    };
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = $init:expr; $($rest:tt)*) => {
        $crate::sync::thread_local!($(#[$attr])* $vis static $name: $t = $init);
        $crate::sync::thread_local!($($rest)*);
    };
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = $init:expr) => {
        $(#[$attr])* $vis static $name: $crate::sync::ModelLocal<$t> = {
            loom::thread_local!(static KEY: $t = $init);
            $crate::sync::ModelLocal(&KEY, || $init)
        };
    };
}
#[cfg(loom)]
pub(crate) use loom_thread_local as thread_local;

/// A model thread's thread-local (`--cfg loom`). `loom` destroys all of a thread's
/// thread-locals at once when it ends, so the destructor of one (a thread cache's claims, which
/// take the store lock to give the cache back) would find the others gone, where `std`'s
/// `const`-initialized ones without destructors stay usable: [`ModelLocal::with`] then gives
/// the closure a new value.
#[cfg(loom)]
pub(crate) struct ModelLocal<T: 'static>(pub(crate) &'static loom::thread::LocalKey<T>, pub(crate) fn() -> T);

#[cfg(loom)]
impl<T: 'static> ModelLocal<T> {
    /// As `LocalKey::with`, on a new value if the thread's is gone.
    pub(crate) fn with<R>(&'static self, f: impl FnOnce(&T) -> R) -> R {
        let mut f = Some(f);
        match self.0.try_with(|v| f.take().map(|f| f(v))) {
            Ok(Some(r)) => r,
            _ => f.take().expect("not called yet")(&(self.1)()),
        }
    }

    /// As `LocalKey::try_with`.
    pub(crate) fn try_with<R>(
        &'static self,
        f: impl FnOnce(&T) -> R,
    ) -> Result<R, loom::thread::AccessError> {
        self.0.try_with(f)
    }
}

/// A process-wide mutex in a `static`: `std`'s, or under `--cfg loom` `loom`'s, made on first
/// use in each execution (`loom::lazy_static!`: `loom`'s `new` is not `const`), so that model
/// threads, which `loom` runs on one OS thread, wait for one another on it (on `std`'s, a
/// second model thread would block that OS thread for ever). Lock it with [`lock`].
#[cfg(not(loom))]
macro_rules! static_mutex {
    ($(#[$attr:meta])* static $name:ident: $t:ty = $init:expr;) => {
        $(#[$attr])* static $name: std::sync::Mutex<$t> = std::sync::Mutex::new($init);
    };
}
#[cfg(loom)]
macro_rules! static_mutex {
    ($(#[$attr:meta])* static $name:ident: $t:ty = $init:expr;) => {
        loom::lazy_static! {
            $(#[$attr])* static ref $name: loom::sync::Mutex<$t> = loom::sync::Mutex::new($init);
        }
    };
}
pub(crate) use static_mutex;

/// The mutex of a [`static_mutex!`], and its guard.
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};

/// Locks a [`static_mutex!`], going on past a panic of a holder (the value is then as it left it).
pub(crate) fn lock<T>(m: &'static Mutex<T>) -> MutexGuard<'static, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Process-local atomics of the store words' widths: `std`'s in every
/// build (a `static` needs a `const` `new`, which `loom`'s atomics have not).
pub(crate) mod local {
    pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64};
}

/// The integer atomics users view in a block's atomic area (`shared.rs`), as `std` has them.
pub(crate) mod views {
    pub(crate) use std::sync::atomic::{
        AtomicI16, AtomicI32, AtomicI64, AtomicI8, AtomicU16, AtomicU32, AtomicU64, AtomicU8,
    };
}

/// One turn of a loop that waits for a store word to change: a spin hint (in a model, a yield,
/// without which the model checker would explore the spinning for ever).
#[inline]
pub(crate) fn spin_loop() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

/// Gives the processor to another thread while waiting for a store word to change.
#[inline]
pub(crate) fn yield_now() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::thread::yield_now();
}

/// The value of an atomic no other thread can reach (`&mut`): a plain read.
#[inline(always)]
pub(crate) fn read_mut(a: &mut AtomicU64) -> u64 {
    #[cfg(loom)]
    return a.with_mut(|v| *v);
    #[cfg(not(loom))]
    *a.get_mut()
}

/// Sets an atomic no other thread can reach (`&mut`): a plain write.
#[inline(always)]
pub(crate) fn write_mut(a: &mut AtomicU64, v: u64) {
    #[cfg(loom)]
    a.with_mut(|w| *w = v);
    #[cfg(not(loom))]
    {
        *a.get_mut() = v;
    }
}
