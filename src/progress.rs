//! Progress of the long walks over a heap (a check, a recovery's scan and rebuild), reported
//! to whoever asked on this thread: the `mmheap` tool draws its progress bars from it.
//!
//! A walk calls [`Ticker::tick`] for each block it passes; every [`EVERY`]th call, and only
//! while a sink is set on the thread ([`with_progress`]), reports how far it is. Without a sink
//! a tick costs a counter increment and a compare.

use std::cell::RefCell;

/// Blocks between two reports.
const EVERY: u32 = 1024;

/// A sink: called with what is being done, how far it is and where it ends (in the same
/// unit, bytes of the heap for the walks).
type Sink = Box<dyn FnMut(&'static str, u64, u64)>;

/// Work that keeps pace with a walk ([`with_step`]).
type Step = Box<dyn FnMut()>;

thread_local! {
    static SINK: RefCell<Option<Sink>> = const { RefCell::new(None) };
    static STEP: RefCell<Option<Step>> = const { RefCell::new(None) };
}

/// Runs `body` with `sink` told of the progress of the heap walks it makes on this thread
/// (checks, recoveries): `sink(what, done, total)`, with `what` a word for the phase
/// (`"checking"`, `"counting"`, `"scanning"`, `"rebuilding"`) and `done` of `total` bytes of the
/// heap walked in that phase. Reports come every thousand blocks or so, and at each phase's end.
///
/// ```
/// use std::cell::Cell;
/// use std::rc::Rc;
/// use mmheap::inspect::{with_progress, Snapshot};
/// use mmheap::{MappedManager, MemoryManager, Options};
///
/// let store = MappedManager::temporary(&Options::new())?;
/// let _block = store.allocate(100)?;
/// let snap = Snapshot::take(store.path())?;
/// let reports = Rc::new(Cell::new(0));
/// let seen = reports.clone();
/// let report = with_progress(move |_what, done, total| {
///     assert!(done <= total);
///     seen.set(seen.get() + 1);
/// }, || snap.check())?;
/// assert!(report.is_sound() && reports.get() > 0);
/// # Ok::<(), mmheap::Error>(())
/// ```
pub fn with_progress<R>(sink: impl FnMut(&'static str, u64, u64) + 'static, body: impl FnOnce() -> R) -> R {
    with_set(&SINK, Box::new(sink), body)
}

/// Runs `body` with `step` called as the walks it makes on this thread go (every few MiB of a
/// walk in address order, every few blocks of one that jumps), sink or no sink: for work that
/// must keep pace with a walk, such as letting go of the pages of a mapping it has passed. The
/// step set before is put back after.
pub(crate) fn with_step<R>(step: impl FnMut() + 'static, body: impl FnOnce() -> R) -> R {
    with_set(&STEP, Box::new(step), body)
}

/// Runs `body` with `value` in the thread-local cell `key`, and puts back what was there
/// before, however `body` ends.
fn with_set<T: 'static, R>(
    key: &'static std::thread::LocalKey<RefCell<Option<T>>>,
    value: T,
    body: impl FnOnce() -> R,
) -> R {
    struct Restore<T: 'static>(&'static std::thread::LocalKey<RefCell<Option<T>>>, Option<T>);
    impl<T: 'static> Drop for Restore<T> {
        fn drop(&mut self) {
            let before = self.1.take();
            self.0.with(|s| {
                if let Ok(mut s) = s.try_borrow_mut() {
                    *s = before;
                }
            });
        }
    }
    let before = key.with(|s| s.try_borrow_mut().ok().and_then(|mut s| s.replace(value)));
    let _restore = Restore(key, before);
    body()
}

/// Runs the step set on this thread ([`with_step`]), if any.
fn step() {
    STEP.with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            if let Some(step) = s.as_mut() {
                step();
            }
        }
    });
}

/// Counts the items of a walk that reports no progress of its own and jumps about the heap (a
/// free list followed, the spans checked one by one), and runs the step ([`with_step`]) every
/// [`PACE`]th: each item may have mapped a large folio.
#[derive(Default)]
pub(crate) struct Pace(u32);

/// Items between two steps of a walk that jumps.
const PACE: u32 = 4;

impl Pace {
    /// The walk has passed one more item.
    #[inline]
    pub(crate) fn tick(&mut self) {
        self.0 += 1;
        if self.0 == PACE {
            self.0 = 0;
            step();
        }
    }
}

/// Bytes of the heap between two steps of a walk in address order.
const STEP_BYTES: u64 = 4 << 20;

/// Tells the sink, if one is set on this thread, that `what` is at `done` of `total`.
fn report(what: &'static str, done: u64, total: u64) {
    SINK.with(|s| {
        // A sink that walks a heap itself would find its own cell borrowed: not told again.
        if let Ok(mut s) = s.try_borrow_mut() {
            if let Some(sink) = s.as_mut() {
                sink(what, done.min(total), total);
            }
        }
    });
}

/// Counts the blocks of one walk and reports every [`EVERY`]th.
pub(crate) struct Ticker {
    what: &'static str,
    total: u64,
    n: u32,
    /// Where the step ([`with_step`]) last ran.
    stepped: u64,
}

impl Ticker {
    /// A walk called `what` over `total` bytes (its end offset): reports that it starts.
    pub(crate) fn new(what: &'static str, total: u64) -> Ticker {
        report(what, 0, total);
        Ticker { what, total, n: 0, stepped: 0 }
    }

    /// The walk has come to `at`.
    #[inline]
    pub(crate) fn tick(&mut self, at: u64) {
        if at >= self.stepped + STEP_BYTES {
            self.stepped = at;
            step();
        }
        self.n += 1;
        if self.n == EVERY {
            self.n = 0;
            report(self.what, at, self.total);
        }
    }

    /// The walk has come to its end.
    pub(crate) fn finish(&self) {
        report(self.what, self.total, self.total);
    }
}
