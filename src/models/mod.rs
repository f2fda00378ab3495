//! Models of the protocols on store words, run by the `loom` model checker over the real code
//! (`--cfg loom`: `src/sync.rs`). A model region's words are `loom`'s atomics
//! (`engine/core/region_model.rs`), futex sleeps are yields (`sys`), and a "process" that dies
//! is a model thread that stops right after its k-th atomic operation on store words
//! (`sync_model.rs`), after which the model's `owner_dead` says it is dead.
//!
//! The per-thread state of the heap (the store lock's holder, thread caches and their claims,
//! the slabs' fast word) is declared with `sync::thread_local!`, which is `loom`'s under the
//! model checker, so every model thread has its own, as every thread has (`loom` runs all of
//! them on one OS thread, where `std`'s would be shared). `loom`'s `join` returns before the
//! joined thread's thread-locals are destroyed (`std`'s after), so a model thread that may
//! have used a thread cache gives it back as its last act ([`exit_thread`]).
//!
//! The models, and what they explore at preemption bound 2 (CI's) / 3:
//!
//! | model | what races | interleavings |
//! |---|---|---|
//! | `lock::lock_excludes` | two threads taking the store lock | 68 / 138 |
//! | `lock::lock_takeover_one_taker` | a taker and a holder dying after each k = 1..=6 | 24-51 / 35-80 each |
//! | `lock::lock_takeover_two_takers` | two takers of a dead holder's lock, k = 1..=6 | 68 / 138-188 each |
//! | `mutex::robust_mutex_holder_dies` | a guarded area's lock, its holder dying at k = 1..=7 | 24-51 / 35-80 each |
//! | `ring::ring_side_locks` | two senders and a receiver taking a ring's side locks | 6,589 / 51,301 |
//! | `refs::lent_clones_race` | two clones ending one lent block's lending, and their drops | 210 / 716 |
//! | `refs::resolve_races_last_release` | a handle's resolve against the block's last release | 100 / 452 |
//! | `cache::cache_park_take_vs_release` | a cache parking and lending against another thread's release | 7 / 7 |
//! | `channel::channel_sender_leaves` | a receiver's `try_recv` loop against a sender's send and its leaving (bound capped at 1) | 12,479 |
//! | `channel::channel_receiver_leaves` | a sender's `try_send` loop against a receiver taking one message and leaving (bound capped at 1) | 13,885 |
//!
//! The heap models (`refs`, `cache`) run a whole heap over a model store; `loom`'s DPOR
//! explores only the orders of operations that touch the same words, and a thread cache's
//! stacks are its thread's alone, so the cache model's few interleavings are the orders of
//! the two releases of the shared block's reference word (and the releasing thread's cache).
//!
//! The channel models run a whole channel (`Channel`, `Sender`, `Receiver` over a model store
//! whose process has a registry slot) with its loops of `try_send` / `try_recv`; every load of
//! a store word in those loops may read more than one value, so they explore many more
//! executions than the others: their preemption bound is capped at 1 (at 0: 2,850 / 285).
//! `channel_sender_leaves` found `try_recv` and `recv` reporting `Disconnected` while a message
//! was queued (the ring looked empty, then the sender sent and left before the look at the
//! senders' bits).
//!
//! Run them with `scripts/loom` (a larger preemption bound) or
//! `RUSTFLAGS="--cfg loom" cargo test --release --lib models::`. Each prints how many
//! interleavings it explored.

use std::panic::AssertUnwindSafe;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::engine::core::region::Region;
use crate::sync::model::Died;
use crate::sync::{AtomicUsize, Ordering};

mod cache;
mod channel;
mod lock;
mod mutex;
mod refs;
mod ring;

/// The preemption bound when `LOOM_MAX_PREEMPTIONS` is not set.
const DEFAULT_PREEMPTIONS: usize = 2;
/// The branches (atomic operations and other scheduling points) one execution may make when
/// `LOOM_MAX_BRANCHES` is not set.
const MAX_BRANCHES: usize = 1 << 17;

/// Runs `f` under `loom` with the environment's bounds (`LOOM_MAX_PREEMPTIONS`, default
/// [`DEFAULT_PREEMPTIONS`]), prints how many interleavings it explored, and returns it.
pub(super) fn explore(name: &str, f: impl Fn() + Sync + Send + 'static) -> usize {
    explore_up_to(name, usize::MAX, f)
}

/// [`explore`] with the preemption bound at most `cap`: for a model whose interleavings at
/// CI's bound would take too long.
pub(super) fn explore_up_to(name: &str, cap: usize, f: impl Fn() + Sync + Send + 'static) -> usize {
    quiet_deaths();
    let count = Arc::new(AtomicUsize::new(0));
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(b.preemption_bound.unwrap_or(DEFAULT_PREEMPTIONS).min(cap));
    if std::env::var_os("LOOM_MAX_BRANCHES").is_none() {
        // A model over a whole heap makes thousands of atomic operations (formatting, claiming
        // a cache, checking the heap), each a branch: far more than `loom`'s default 1,000.
        b.max_branches = MAX_BRANCHES;
    }
    let bound = b.preemption_bound;
    let start = std::time::Instant::now();
    let c = count.clone();
    b.check(move || {
        c.fetch_add(1, Ordering::Relaxed);
        f();
    });
    let n = count.load(Ordering::Relaxed);
    eprintln!("loom model {name}: {n} interleavings, preemption bound {bound:?}, {:.1?}", start.elapsed());
    n
}

/// Keeps the panics that stop a model thread (`Died`) out of the test output.
fn quiet_deaths() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<Died>() {
                default(info);
            }
        }));
    });
}

/// What a model thread that may have used a thread cache does last: gives its caches back, as
/// its exit would (`cache/claims.rs`, `release_thread_claims`: `loom`'s `join` does not wait
/// for a thread's thread-locals to go).
pub(super) fn exit_thread() {
    crate::engine::heap::cache::release_thread_claims();
}

/// Runs `body` as a process that dies right after its `k`-th atomic operation on store words
/// (or finishes, if it makes fewer): `true` if it died.
pub(super) fn die_after(k: u64, body: impl FnOnce()) -> bool {
    crate::sync::model::die_after(k);
    let ran = std::panic::catch_unwind(AssertUnwindSafe(body));
    crate::sync::model::no_limit();
    match ran {
        Ok(()) => false,
        Err(p) if p.is::<Died>() => true,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// Zeroed memory for a model store, which several regions (processes) may map.
pub(super) struct Memory {
    buf: Vec<u64>,
}

impl Drop for Memory {
    /// Fails the model if a region over the memory outlives it: a heap the model leaked (a
    /// count that never reached zero), whose model words the next execution would find.
    fn drop(&mut self) {
        let base = NonNull::new(self.buf.as_mut_ptr().cast::<u8>()).expect("vec pointer");
        if crate::engine::core::region::model::Words::live(base) {
            // Kept, so that no later memory comes at its address and finds the leaked words.
            std::mem::forget(std::mem::take(&mut self.buf));
            if !std::thread::panicking() {
                panic!("a region over a model's memory outlives it (a heap leaked)");
            }
        }
    }
}

impl Memory {
    pub(super) fn new(len: u64) -> Memory {
        Memory { buf: vec![0; (len / 8) as usize] }
    }

    /// A region over the memory, as a process maps it: regions over the same memory share its
    /// model words.
    ///
    /// # Safety
    /// The memory must outlive the region.
    pub(super) unsafe fn map(&self) -> Region {
        let len = (self.buf.len() * 8) as u64;
        let base = NonNull::new(self.buf.as_ptr().cast_mut().cast::<u8>()).expect("vec pointer");
        // SAFETY: the Vec's `len` zeroed bytes, aligned to 8, outlive the region (the caller's
        // contract); the model touches them through the region only.
        unsafe { Region::new(base, len, len) }
    }
}
