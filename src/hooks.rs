//! Pause points for the crash tests, compiled only with the `test-hooks` feature (which the
//! crate's own tests turn on through a dev-dependency on itself). When the environment
//! variable `MMHEAP_TEST_PAUSE` names a point, the process prints `paused <point>` on standard
//! output when it reaches it and sleeps, so a test can kill it exactly there. And
//! `MMHEAP_TEST_BOOT_ID` pretends a boot id (`sys::boot_id`), so a test can open a store as
//! after a reboot.

#[cfg(feature = "test-hooks")]
pub(crate) fn pause(point: &str) {
    use std::io::Write;
    use std::sync::OnceLock;
    static WANTED: OnceLock<Option<String>> = OnceLock::new();
    if WANTED.get_or_init(|| std::env::var("MMHEAP_TEST_PAUSE").ok()).as_deref() == Some(point) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "paused {point}");
        let _ = out.flush();
        drop(out); // the process's other threads may still print
        std::thread::sleep(std::time::Duration::from_secs(600));
    }
}

#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub(crate) fn pause(_point: &str) {}

/// The boot id a test pretends the machine has (`MMHEAP_TEST_BOOT_ID`, read at every call, so
/// a test can "reboot" between two opens), `None` when it does not pretend.
#[cfg(feature = "test-hooks")]
pub(crate) fn boot_id() -> Option<String> {
    std::env::var("MMHEAP_TEST_BOOT_ID").ok().filter(|id| !id.is_empty())
}

#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub(crate) fn boot_id() -> Option<String> {
    None
}

/// A test's function called at each barrier of a store file: (offset, length) of the pages.
#[cfg(feature = "test-hooks")]
type PersistObserver = fn(u64, u64);

/// What a test runs at each barrier of a store file (`Backing::persist`).
#[cfg(feature = "test-hooks")]
static PERSIST_OBSERVER: std::sync::Mutex<Option<PersistObserver>> = std::sync::Mutex::new(None);

/// Has `observer` called with (offset, length) of the pages each barrier of a store file made
/// durable, right after it did (`None`: nothing). The power-loss test adds them to what it
/// takes as durable.
#[cfg(feature = "test-hooks")]
pub fn observe_persist(observer: Option<PersistObserver>) {
    *PERSIST_OBSERVER.lock().unwrap_or_else(|p| p.into_inner()) = observer;
}

/// A barrier made pages `offset..offset + len` durable.
#[cfg(feature = "test-hooks")]
pub(crate) fn persisted(offset: u64, len: u64) {
    let observer = *PERSIST_OBSERVER.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(observe) = observer {
        observe(offset, len);
    }
}

#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub(crate) fn persisted(_offset: u64, _len: u64) {}
