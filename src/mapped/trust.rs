//! Which files are opened as stores: a store is opened with `O_NOFOLLOW` (a symlink at the path
//! is refused, not followed), and what was opened is checked with `fstat` on the descriptor
//! itself, so nothing can be swapped in between a check and the open. Refused, unless the
//! options allow it ([`crate::Options::follow_symlinks`],
//! [`crate::Options::allow_shared_permissions`]):
//! - a symlink at the path;
//! - anything but a regular file (a directory, a fifo, a device, a socket): never allowed;
//! - for a process that opens the store to write it, a file another user owns, or that group
//!   or others may write: whoever else can write it can change, under this process, the free
//!   lists and reference counts this process trusts while it holds the lock.
//!
//! A read-only open ([`crate::MappedManager::open_read_only`]) checks the kind of file only: it
//! never writes, trusts none of the bytes it reads, and reading another user's store is what
//! it is for.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use crate::error::{Error, Result, UnsafeReason};

/// The checks an open relaxes (both off: the safe default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Trust {
    /// Open the file a symlink at the path names (which is then checked as any store).
    pub(crate) follow_symlinks: bool,
    /// Accept a store another user owns, or that group or others may write.
    pub(crate) shared_permissions: bool,
}

/// How a store is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// To attach and write: every check.
    Write,
    /// To read only: the kind of file only.
    Read,
}

/// Opens the store at `path` as `access` asks and checks the file (module docs). A file this
/// process may read but not write, opened to write, is [`Error::ReadOnly`].
pub(crate) fn open_store(path: &Path, access: Access, trust: Trust) -> Result<File> {
    let file = match open_raw(path, access == Access::Write, trust) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(Error::NotFound(path.to_owned())),
        Err(e) => return Err(refusal(path, access, trust, e)),
    };
    check_opened(path, &file, access, trust)?;
    blocking(file)
}

/// Opens the store at `path` for an inspection (`mmheap stat`, `check`, ...), which writes
/// nothing but the lock word: for reading and writing if this process may write it, else for
/// reading (`false`). Checked as a read-only open is (the kind of file: an administrator
/// inspects other users' stores).
pub(crate) fn open_to_inspect(path: &Path) -> Result<(File, bool)> {
    let trust = Trust::default();
    match open_raw(path, true, trust) {
        Ok(file) => {
            check_opened(path, &file, Access::Read, trust)?;
            Ok((blocking(file)?, true))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::NotFound(path.to_owned())),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM | libc::EROFS)) => {
            Ok((open_store(path, Access::Read, trust)?, false))
        }
        Err(e) => Err(refusal(path, Access::Read, trust, e)),
    }
}

/// `file` with `O_NONBLOCK` cleared: it was opened non-blocking so that a fifo or a device
/// could not hang the open; a regular file's reads do not block anyway, but the flag goes.
fn blocking(file: File) -> Result<File> {
    // SAFETY: fcntl on a descriptor we own, with integer arguments.
    let cleared = unsafe {
        let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
        flags >= 0 && libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) == 0
    };
    if !cleared {
        return Err(Error::io("set the store file's flags", std::io::Error::last_os_error()));
    }
    Ok(file)
}

fn open_raw(path: &Path, write: bool, trust: Trust) -> std::io::Result<File> {
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    if !trust.follow_symlinks {
        flags |= libc::O_NOFOLLOW;
    }
    OpenOptions::new().read(true).write(write).custom_flags(flags).open(path)
}

/// The error for an open that failed with `e`.
fn refusal(path: &Path, access: Access, trust: Trust, e: std::io::Error) -> Error {
    let unsafe_file = |reason| Error::UnsafeFile { path: path.to_owned(), reason };
    let is_symlink = || std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    match e.raw_os_error() {
        Some(libc::ELOOP) if !trust.follow_symlinks && is_symlink() => unsafe_file(UnsafeReason::Symlink),
        Some(libc::EISDIR | libc::ENXIO | libc::ENODEV) => unsafe_file(UnsafeReason::NotRegular),
        Some(libc::EACCES | libc::EPERM | libc::EROFS) if access == Access::Write => {
            // Readable but not writable here: checked as a read-only open would be, so that a
            // symlink or a fifo is not called a read-only store.
            match open_store(path, Access::Read, trust) {
                Ok(_) => Error::ReadOnly { path: path.to_owned() },
                Err(Error::UnsafeFile { path, reason }) => Error::UnsafeFile { path, reason },
                Err(_) => Error::CannotOpen { path: path.to_owned(), source: e },
            }
        }
        _ => Error::CannotOpen { path: path.to_owned(), source: e },
    }
}

/// Checks the opened file with `fstat` (module docs).
fn check_opened(path: &Path, file: &File, access: Access, trust: Trust) -> Result<()> {
    let meta = file.metadata().map_err(|e| Error::io("stat the store file", e))?;
    let refuse = |reason| Err(Error::UnsafeFile { path: path.to_owned(), reason });
    if !meta.file_type().is_file() {
        return refuse(UnsafeReason::NotRegular);
    }
    if access == Access::Read || trust.shared_permissions {
        return Ok(());
    }
    // SAFETY: geteuid takes nothing and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return refuse(UnsafeReason::OtherOwner { uid: meta.uid() });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return refuse(UnsafeReason::WritableByOthers { mode });
    }
    Ok(())
}
