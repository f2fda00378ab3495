//! Pause points for the crash tests, compiled only with the `test-hooks` feature (which the
//! crate's own tests turn on through a dev-dependency on itself). When the environment
//! variable `MMHEAP_TEST_PAUSE` names a point, the process prints `paused <point>` on standard
//! output when it reaches it and sleeps, so a test can kill it exactly there.

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
