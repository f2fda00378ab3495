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

thread_local! {
    static SINK: RefCell<Option<Sink>> = const { RefCell::new(None) };
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
    /// Puts back the sink that was set before, however `body` ends.
    struct Restore(Option<Sink>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let before = self.0.take();
            SINK.with(|s| {
                if let Ok(mut s) = s.try_borrow_mut() {
                    *s = before;
                }
            });
        }
    }
    let before = SINK.with(|s| s.try_borrow_mut().ok().and_then(|mut s| s.replace(Box::new(sink))));
    let _restore = Restore(before);
    body()
}

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
}

impl Ticker {
    /// A walk called `what` over `total` bytes (its end offset): reports that it starts.
    pub(crate) fn new(what: &'static str, total: u64) -> Ticker {
        report(what, 0, total);
        Ticker { what, total, n: 0 }
    }

    /// The walk has come to `at`.
    #[inline]
    pub(crate) fn tick(&mut self, at: u64) {
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
