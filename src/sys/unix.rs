//! Unix implementation. Futexes on Linux; a sleeping fallback elsewhere.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use crate::sync::{compiler_fence, fence, AtomicBool, AtomicU32, Ordering};

/// Takes the pages of `[addr, addr + len)`, part of a shared mapping of a file, out of this
/// process (`MADV_DONTNEED`): the file and the page cache keep their bytes, and a later touch
/// maps them again. `addr` is rounded up and the end down to pages; a failure is ignored (the
/// pages stay mapped, which costs memory, not correctness).
pub(crate) fn release_mapped(addr: usize, len: usize) {
    let page = 4096;
    let (start, end) = (addr.next_multiple_of(page), (addr + len) / page * page);
    if end > start {
        // SAFETY: callers pass a range of a shared file mapping of theirs; DONTNEED on a
        // shared mapping changes no byte of the file nor any byte read through the mapping: it
        // only unmaps the pages, and a later touch maps the same page-cache pages again.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}

/// Makes sure the first `len` bytes of `file` are allocated on disk, so that touching them
/// through a mapping can never fault for lack of space: `posix_fallocate` (which never shrinks
/// the file). A full disk, an exhausted quota or a file size limit is `ErrorKind::StorageFull`
/// (`ENOSPC`, `EDQUOT`) or `ErrorKind::FileTooLarge` (`EFBIG`); the caller maps both to
/// `Error::OutOfSpace`.
///
/// The one place the store file is preallocated. `fs2::FileExt::allocate` would do, but fs2
/// 0.4 reads `errno` after `posix_fallocate`, which returns its error instead of setting
/// `errno`, so a full disk came back as "Success (os error 0)".
pub(crate) fn preallocate(file: &File, len: u64) -> io::Result<()> {
    if len > file_size_limit() {
        // Past the process's file size limit the kernel would send SIGXFSZ, which kills the
        // process unless it ignores the signal: answer as the call would, without asking.
        return Err(io::Error::from_raw_os_error(libc::EFBIG));
    }
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    loop {
        // SAFETY: the descriptor is open for the call's duration; the call takes integers only.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
        match rc {
            0 => return Ok(()),
            libc::EINTR => continue,
            // A file system without fallocate (some network ones): extend the file instead;
            // a later write through the mapping may then still find the disk full.
            libc::EOPNOTSUPP if file.metadata()?.len() < len as u64 => return file.set_len(len as u64),
            libc::EOPNOTSUPP => return Ok(()),
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// The process's file size limit (`RLIMIT_FSIZE`, `ulimit -f`) in bytes; `u64::MAX` if none.
fn file_size_limit() -> u64 {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the one struct we pass, which outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut rl) } != 0 || rl.rlim_cur == libc::RLIM_INFINITY {
        return u64::MAX;
    }
    #[allow(clippy::unnecessary_cast)] // `rlim_t` is `u64` on Linux, not on every Unix
    let limit = rl.rlim_cur as u64;
    limit
}

/// Whether an error from [`preallocate`] means the disk (or quota, or size limit) is full.
pub(crate) fn is_out_of_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG))
}

/// Sleeps while `*word == expected`, at most `timeout`. Returns early on a wake-up, a change
/// of the word, or a signal; callers re-check their condition.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration, shared: bool) {
    // In the model checker a sleep is a yield (a futex wait may return at any time anyway).
    #[cfg(loom)]
    {
        let _ = (timeout, shared);
        if word.load(crate::sync::Ordering::Relaxed) == expected {
            crate::sync::yield_now();
        }
    }
    #[cfg(all(target_os = "linux", not(loom)))]
    {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        let op = if shared { libc::FUTEX_WAIT } else { libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG };
        // SAFETY: `word` is a live, aligned 4-byte atomic; the kernel only reads it and the
        // timespec, which outlives the call.
        unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), op, expected, &ts as *const libc::timespec) };
    }
    #[cfg(all(not(target_os = "linux"), not(loom)))]
    {
        let _ = shared;
        if word.load(crate::sync::Ordering::Relaxed) == expected {
            std::thread::sleep(timeout.min(Duration::from_micros(200)));
        }
    }
}

/// Wakes up to `n` waiters on `word`.
pub(crate) fn futex_wake(word: &AtomicU32, n: i32, shared: bool) {
    // In the model checker nobody sleeps (`futex_wait`): nothing to wake.
    #[cfg(loom)]
    let _ = (word, n, shared);
    #[cfg(all(target_os = "linux", not(loom)))]
    {
        let op = if shared { libc::FUTEX_WAKE } else { libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG };
        // SAFETY: wake takes the address only as a key; no memory is accessed.
        unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), op, n) };
    }
    #[cfg(all(not(target_os = "linux"), not(loom)))]
    let _ = (word, n, shared);
}

#[cfg(target_os = "linux")]
const SETLK: libc::c_int = libc::F_OFD_SETLK;
#[cfg(target_os = "linux")]
const GETLK: libc::c_int = libc::F_OFD_GETLK;
// Elsewhere, classic process-owned record locks: they are dropped when the process closes any
// descriptor of the file, so a process must not open one store twice (ARCHITECTURE.md).
#[cfg(not(target_os = "linux"))]
const SETLK: libc::c_int = libc::F_SETLK;
#[cfg(not(target_os = "linux"))]
const GETLK: libc::c_int = libc::F_GETLK;

/// A one-byte record lock request; `kind` is `F_WRLCK` or `F_UNLCK` (a `c_short` on some systems).
fn flock_of(kind: impl Into<i32>, offset: u64) -> libc::flock {
    // SAFETY: `flock` is plain old data; all-zero is a valid value (and required for OFD locks'
    // `l_pid`).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind.into() as _;
    fl.l_whence = libc::SEEK_SET as _;
    fl.l_start = offset as libc::off_t;
    fl.l_len = 1;
    fl
}

fn fcntl_lock(file: &File, cmd: libc::c_int, fl: &mut libc::flock) -> io::Result<()> {
    // SAFETY: the descriptor is open for the call's duration and `fl` is a valid flock.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), cmd, fl as *mut libc::flock) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Takes an exclusive lock on the one byte at `offset` without waiting. `Ok(false)` when
/// another holder has it.
pub(crate) fn try_lock_byte(file: &File, offset: u64) -> io::Result<bool> {
    let mut fl = flock_of(libc::F_WRLCK, offset);
    match fcntl_lock(file, SETLK, &mut fl) {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Drops the lock on the byte at `offset`.
pub(crate) fn unlock_byte(file: &File, offset: u64) -> io::Result<()> {
    let mut fl = flock_of(libc::F_UNLCK, offset);
    fcntl_lock(file, SETLK, &mut fl)
}

/// Whether some other open file description holds a lock on the byte at `offset`.
pub(crate) fn byte_locked(file: &File, offset: u64) -> io::Result<bool> {
    let mut fl = flock_of(libc::F_WRLCK, offset);
    fcntl_lock(file, GETLK, &mut fl)?;
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

/// This process's start time in clock ticks since boot (Linux), or 0 where unknown. Recorded
/// beside the pid so that a reader can tell a reused pid; liveness itself rests on locks.
/// Read from `/proc` once per process (a fifth of the time of an open): remembered with the
/// pid it was read for, so that a child made by `fork` reads its own.
pub(crate) fn process_start_time() -> u64 {
    static PID: crate::sync::local::AtomicU32 = crate::sync::local::AtomicU32::new(0);
    static START: crate::sync::local::AtomicU64 = crate::sync::local::AtomicU64::new(0);
    let pid = std::process::id();
    if PID.load(Ordering::Acquire) == pid {
        return START.load(Ordering::Relaxed);
    }
    let start = read_start_time();
    // Two threads may both read it: they read the same value. The pid is stored last, so a
    // reader that sees it sees the start time stored before it.
    START.store(start, Ordering::Relaxed);
    PID.store(pid, Ordering::Release);
    start
}

/// Field 22 of `/proc/self/stat`, read with one `read` into a buffer on the stack (the line is
/// well under 1 KiB): opening a store in a new process pays for this, and a growing
/// `read_to_string` costs a `statx` and six reads.
fn read_start_time() -> u64 {
    use std::io::Read;
    let mut buf = [0u8; 1024];
    let Ok(n) = std::fs::File::open("/proc/self/stat").and_then(|mut f| f.read(&mut buf)) else {
        return 0;
    };
    let line = std::str::from_utf8(&buf[..n]).unwrap_or("");
    line.rfind(')')
        .and_then(|end| line.get(end + 2..))
        .and_then(|after| after.split(' ').nth(19)?.parse().ok())
        .unwrap_or(0)
}

/// The boot this process runs in: the kernel's boot id (`/proc/sys/kernel/random/boot_id`,
/// a random UUID drawn at each boot) hashed to a word that is never 0; 0 where there is none
/// (not Linux, no `/proc`), which no store records as a boot. Read once per process. Under the
/// `test-hooks` feature, `MMHEAP_TEST_BOOT_ID` stands for it (read at every call): a test
/// pretends a reboot with it (`hooks::boot_id`).
pub(crate) fn boot_id() -> u64 {
    static BOOT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    if let Some(id) = crate::hooks::boot_id() {
        return hash_boot_id(id.as_bytes());
    }
    *BOOT.get_or_init(|| match std::fs::read("/proc/sys/kernel/random/boot_id") {
        Ok(text) if !text.trim_ascii().is_empty() => hash_boot_id(text.trim_ascii()),
        _ => 0,
    })
}

/// FNV-1a 64 of `text`, finished with the splitmix64 mixer; never 0.
fn hash_boot_id(text: &[u8]) -> u64 {
    crate::format::mix(crate::format::fnv1a(crate::format::FNV_BASIS, text)).max(1)
}

/// Whether this process is registered for expedited private memory barriers, so that
/// [`light_barrier`] may be a compiler fence (set once, before any heap exists).
static EXPEDITED: AtomicBool = AtomicBool::new(false);

// Commands of membarrier(2), from <linux/membarrier.h>.
#[cfg(target_os = "linux")]
const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
#[cfg(target_os = "linux")]
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
#[cfg(all(target_os = "linux", not(miri)))]
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

#[cfg(target_os = "linux")]
fn membarrier(cmd: libc::c_long) -> bool {
    // SAFETY: membarrier takes integer arguments only (command, flags, cpu) and touches no
    // memory of ours.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0 as libc::c_long, 0 as libc::c_long) == 0 }
}

/// Registers the process for [`heavy_barrier`]'s fast form; called once before the first
/// heap is made. Without it (not Linux, or an old or filtered kernel) both barriers are full
/// fences; so under Miri, which has no `membarrier`, and whose checks then see the full fences.
pub(crate) fn register_barriers() {
    // In the model checker both sides stay full fences, which `loom` models.
    #[cfg(all(target_os = "linux", not(miri)))]
    if !cfg!(loom) && membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) {
        EXPEDITED.store(true, Ordering::Release);
    }
}

/// The frequent side of an asymmetric fence: orders this thread's earlier stores before its
/// later loads *as seen by a thread that runs [`heavy_barrier`]*. A compiler fence when the
/// process is registered (the heavy side then makes every running thread execute a full
/// barrier), else a full fence.
#[inline]
pub(crate) fn light_barrier() {
    if EXPEDITED.load(Ordering::Relaxed) {
        compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
}

/// The rare side of an asymmetric fence (see [`light_barrier`]): after it, every store a
/// thread made before its light barrier is visible here, or that thread's loads after its
/// light barrier see this thread's stores before this call. `false` if the kernel refused
/// (the caller must then assume nothing).
pub(crate) fn heavy_barrier() -> bool {
    fence(Ordering::SeqCst);
    if !EXPEDITED.load(Ordering::Acquire) {
        return true;
    }
    #[cfg(target_os = "linux")]
    {
        // A child made by fork is not registered: the slow global form needs no registration.
        membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) || membarrier(MEMBARRIER_CMD_GLOBAL)
    }
    #[cfg(not(target_os = "linux"))]
    false
}

/// Arms `hook` to run when the calling thread exits, after its thread-locals' destructors:
/// through a pthread key's destructor, which, unlike a thread-local's, also runs for a thread
/// that arms it from inside another key's destructor (glibc runs key destructors again while
/// keys are set, up to `PTHREAD_DESTRUCTOR_ITERATIONS` rounds; a thread-local destructor
/// registered at that point never runs). Every arming runs `hook` once. `false` if no key
/// could be made.
#[cfg_attr(loom, allow(dead_code))] // thread caches do not arm it in a model (`cache/claims.rs`)
pub(crate) fn at_thread_exit(hook: extern "C" fn()) -> bool {
    static KEY: std::sync::OnceLock<Option<libc::pthread_key_t>> = std::sync::OnceLock::new();
    extern "C" fn run(hook: *mut libc::c_void) {
        // SAFETY: the value was set below from an `extern "C" fn()`, and function pointers
        // round-trip through data pointers on the platforms libc supports.
        let hook: extern "C" fn() =
            unsafe { std::mem::transmute::<*mut libc::c_void, extern "C" fn()>(hook) };
        hook();
    }
    let key = KEY.get_or_init(|| {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is writable; `run` is a valid destructor for the values set below.
        (unsafe { libc::pthread_key_create(&mut key, Some(run)) } == 0).then_some(key)
    });
    // SAFETY: a key made above; the value is a function pointer, which `run` takes back.
    key.is_some_and(|key| unsafe { libc::pthread_setspecific(key, hook as *mut libc::c_void) } == 0)
}

/// The terminal's stop signals (`SIGTSTP`, `SIGTTIN`, `SIGTTOU`) held back on the calling
/// thread while this lives; one that arrives meanwhile takes effect when it drops. A reader
/// that holds the store lock for a copy would, stopped from the keyboard, stop every writer
/// of the store with it.
pub(crate) struct StopSignalsHeld {
    old: libc::sigset_t,
    /// Not `Send`: the mask is the thread's that made the guard.
    _thread: std::marker::PhantomData<*const ()>,
}

/// Holds back the stop signals (see [`StopSignalsHeld`]).
pub(crate) fn hold_stop_signals() -> StopSignalsHeld {
    // SAFETY: all-zero is a valid `sigset_t` to initialise; the calls get valid pointers to
    // sets on this stack and change only this thread's signal mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        StopSignalsHeld { old, _thread: std::marker::PhantomData }
    }
}

impl Drop for StopSignalsHeld {
    fn drop(&mut self) {
        // SAFETY: restores the mask `hold_stop_signals` saved, on the thread that saved it (the
        // guard is not `Send`).
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    /// The start time read with one `read` is the 22nd field of the whole line, and positive.
    #[test]
    fn start_time_is_the_stat_lines_field() {
        let line = std::fs::read_to_string("/proc/self/stat").expect("procfs");
        let after = &line[line.rfind(')').expect("comm ends") + 2..];
        let want: u64 = after.split(' ').nth(19).expect("field 22").parse().expect("a number");
        assert!(want > 0);
        assert_eq!(super::read_start_time(), want);
    }
}
