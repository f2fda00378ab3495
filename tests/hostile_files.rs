//! Files that are not what a store should be, at the path of a store: `create` never writes
//! through a symlink; opens refuse (`Error::UnsafeFile`) a symlink, anything but a regular file,
//! and, to a writer, a file another user owns or that group or others may write, unless the
//! options allow it. Nothing is written to a refused file.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use mmheap::{Error, MappedManager, Options, UnsafeReason};

fn store(path: &Path) {
    drop(MappedManager::create(path, &Options::new()).unwrap());
}

fn reason<T>(r: mmheap::Result<T>) -> Option<UnsafeReason> {
    match r {
        Err(Error::UnsafeFile { reason, .. }) => Some(reason),
        _ => None,
    }
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A dangling symlink at the path: `create` refuses it (the new store is linked into place
/// with a rename that replaces nothing) and writes nothing where it points.
#[test]
fn create_refuses_a_dangling_symlink_and_writes_nothing_through_it() {
    let dir = tempfile::tempdir().unwrap();
    let (link, target) = (dir.path().join("s.mmheap"), dir.path().join("elsewhere"));
    symlink(&target, &link).unwrap();
    assert!(matches!(MappedManager::create(&link, &Options::new()), Err(Error::AlreadyExists(_))));
    assert!(matches!(MappedManager::open_or_create(&link, &Options::new()), Err(Error::UnsafeFile { .. })));
    assert!(!target.exists(), "a file was made through the symlink");
    assert_eq!(std::fs::read_link(&link).unwrap(), target);
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "a temporary file was left behind: {names:?}");
}

/// A symlink to a real store: refused by every open, and opened when allowed.
#[test]
fn a_symlink_is_refused_unless_followed() {
    let dir = tempfile::tempdir().unwrap();
    let (real, link) = (dir.path().join("real.mmheap"), dir.path().join("link.mmheap"));
    store(&real);
    symlink(&real, &link).unwrap();
    let symlink_refused = Some(UnsafeReason::Symlink);
    assert_eq!(reason(MappedManager::open(&link)), symlink_refused);
    assert_eq!(reason(MappedManager::open_or_create(&link, &Options::new())), symlink_refused);
    assert_eq!(reason(MappedManager::open_read_only(&link)), symlink_refused);
    assert_eq!(reason(MappedManager::recover_file(&link)), symlink_refused);
    assert_eq!(reason(MappedManager::salvage(&link)), symlink_refused);
    assert_eq!(reason(mmheap::inspect::Snapshot::take(&link)), symlink_refused);
    let follow = Options::new().follow_symlinks(true);
    assert!(MappedManager::open_with(&link, &follow).unwrap().check().unwrap().is_sound());
    assert!(MappedManager::open_read_only_with(&link, &follow).is_ok());
    assert!(MappedManager::recover_file_with(&link, &follow).is_ok());
}

/// A directory, a fifo (whose open must not wait for a writer) and a device are never stores.
#[test]
fn what_is_not_a_regular_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let lax = Options::new().follow_symlinks(true).allow_shared_permissions(true);
    for path in [fifo.as_path(), sub.as_path(), Path::new("/dev/null")] {
        let not_regular = Some(UnsafeReason::NotRegular);
        assert_eq!(reason(MappedManager::open(path)), not_regular, "{path:?}");
        assert_eq!(reason(MappedManager::open_with(path, &lax)), not_regular, "{path:?}");
        assert_eq!(reason(MappedManager::open_read_only(path)), not_regular, "{path:?}");
        assert_eq!(reason(MappedManager::open_or_create(path, &Options::new())), not_regular, "{path:?}");
        assert_eq!(reason(MappedManager::recover_file(path)), not_regular, "{path:?}");
        assert_eq!(reason(mmheap::inspect::Snapshot::take(path)), not_regular, "{path:?}");
    }
}

/// A store group or others may write is refused to a writer, and opened when allowed (a store
/// shared by a group); a reader opens it.
#[test]
fn a_store_others_may_write_is_refused_to_a_writer_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.mmheap");
    store(&path);
    for mode in [0o660, 0o602, 0o666] {
        chmod(&path, mode);
        let before = std::fs::read(&path).unwrap();
        assert_eq!(reason(MappedManager::open(&path)), Some(UnsafeReason::WritableByOthers { mode }));
        assert_eq!(
            reason(MappedManager::open_or_create(&path, &Options::new())),
            Some(UnsafeReason::WritableByOthers { mode })
        );
        assert_eq!(reason(MappedManager::salvage(&path)), Some(UnsafeReason::WritableByOthers { mode }));
        assert!(before == std::fs::read(&path).unwrap(), "a refused open wrote the file");
        assert!(MappedManager::open_read_only(&path).is_ok());
        let shared = Options::new().allow_shared_permissions(true);
        assert!(MappedManager::open_with(&path, &shared).unwrap().check().unwrap().is_sound());
    }
    chmod(&path, 0o644);
    assert!(MappedManager::open(&path).is_ok(), "readable by others is no reason to refuse");
}

/// A store another user owns is refused to a writer (even to root), opened when allowed, and
/// read by a reader. Needs root, to give the file away; skipped, saying why, otherwise.
#[test]
fn a_store_another_user_owns_is_refused_to_a_writer_unless_allowed() {
    // SAFETY: geteuid takes nothing and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: giving a file to another user needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.mmheap");
    store(&path);
    std::os::unix::fs::chown(&path, Some(54_321), None).unwrap();
    let other = Some(UnsafeReason::OtherOwner { uid: 54_321 });
    assert_eq!(reason(MappedManager::open(&path)), other);
    assert_eq!(reason(MappedManager::recover_file(&path)), other);
    assert!(MappedManager::open_read_only(&path).is_ok());
    assert!(mmheap::inspect::Snapshot::take(&path).is_ok(), "an administrator inspects it");
    let shared = Options::new().allow_shared_permissions(true);
    assert!(MappedManager::open_with(&path, &shared).unwrap().check().unwrap().is_sound());
}

/// The error names the path and says what is wrong, in words a user can act on.
#[test]
fn the_refusal_says_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.mmheap");
    store(&path);
    chmod(&path, 0o620);
    let text = MappedManager::open(&path).unwrap_err().to_string();
    assert!(text.contains("s.mmheap") && text.contains("mode 0620"), "{text}");
    assert!(text.contains("Options::allow_shared_permissions(true)"), "the override is named: {text}");
    let link = dir.path().join("link.mmheap");
    symlink(&path, &link).unwrap();
    let text = MappedManager::open(&link).unwrap_err().to_string();
    assert!(text.contains("it is a symlink") && text.contains("Options::follow_symlinks(true)"), "{text}");
}

fn tool(args: &[&std::ffi::OsStr]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_mmheap")).args(args).output().unwrap()
}

/// `mmheap stat` warns of a store every user may read (and in JSON: `file_mode`, `warnings`);
/// of one only its owner may read it says nothing.
#[test]
fn stat_warns_of_a_store_every_user_may_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.mmheap");
    store(&path);
    let stat = |json: bool| {
        let mut args = vec!["stat".as_ref(), path.as_os_str()];
        if json {
            args.push("--json".as_ref());
        }
        let out = tool(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(!stat(false).contains("warning"));
    let quiet: serde_json::Value = serde_json::from_str(&stat(true)).unwrap();
    assert_eq!(quiet["file_mode"], "0600");
    assert_eq!(quiet["warnings"], serde_json::json!([]));
    chmod(&path, 0o644);
    let text = stat(false);
    assert!(text.contains("warning     the store file is readable by every user (mode 0644)"), "{text}");
    let loud: serde_json::Value = serde_json::from_str(&stat(true)).unwrap();
    assert_eq!(loud["file_mode"], "0644");
    assert!(loud["warnings"][0].as_str().unwrap().contains("readable by every user"), "{loud}");
}

/// The tool refuses a symlink and a store others may write as the library does (exit 2, the
/// reason said); `recover --allow-shared-permissions` recovers a group's store.
#[test]
fn the_tool_refuses_as_the_library_does() {
    let dir = tempfile::tempdir().unwrap();
    let (path, link) = (dir.path().join("s.mmheap"), dir.path().join("link.mmheap"));
    store(&path);
    symlink(&path, &link).unwrap();
    for cmd in ["stat", "check", "dump", "roots"] {
        let out = tool(&[cmd.as_ref(), link.as_os_str()]);
        assert_eq!(out.status.code(), Some(2));
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains("it is a symlink") && text.contains("give the tool the path it names"),
            "{text}"
        );
        assert!(!text.contains("Options::"), "a library hint in the tool: {text}");
        assert_eq!(text.matches("link.mmheap").count(), 1, "the path said once: {text}");
    }
    chmod(&path, 0o660);
    let out = tool(&["recover".as_ref(), path.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("group or others may write it (mode 0660)"), "{text}");
    assert!(text.contains("`mmheap recover --allow-shared-permissions` accepts it"), "{text}");
    assert!(!text.contains("Options::"), "a library hint in the tool: {text}");
    let out = tool(&["recover".as_ref(), path.as_os_str(), "--allow-shared-permissions".as_ref()]);
    assert!(out.status.success(), "{out:?}");
}

/// Runs `f` on a thread; `None` if it has not returned after `limit` (a call that must not spin
/// for ever: the limit is far above what it takes, so this asserts no time).
fn within<T: Send + 'static>(
    limit: std::time::Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok()
}

/// `open_or_create` following a dangling symlink: the open finds nothing, and the store is not
/// created through the symlink (as `create` does not): `AlreadyExists`, at once (not a loop of
/// creating and discarding temporary stores), with nothing made where it points or beside it.
#[test]
fn open_or_create_following_a_dangling_symlink_is_already_exists() {
    let dir = tempfile::tempdir().unwrap();
    let (link, target) = (dir.path().join("s.mmheap"), dir.path().join("nowhere.mmheap"));
    symlink(&target, &link).unwrap();
    let follow = Options::new().follow_symlinks(true);
    let at = link.clone();
    let got = within(std::time::Duration::from_secs(60), move || MappedManager::open_or_create(&at, &follow));
    let got = got.expect("open_or_create on a followed dangling symlink did not return");
    assert!(matches!(got, Err(Error::AlreadyExists(ref p)) if *p == link), "{got:?}");
    assert!(!target.exists(), "a store was made through the symlink");
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "a temporary file was left behind: {names:?}");
}

fn invalid_options<T>(r: mmheap::Result<T>) -> Option<&'static str> {
    match r {
        Err(Error::InvalidOptions(what)) => Some(what),
        _ => None,
    }
}

/// A mode with setuid, setgid or sticky bits (or anything above 0o7777), or one that does not
/// let the owner read and write (a store its creator could not open again to write), is refused
/// by `create` and `open_or_create`, which make nothing.
#[test]
fn a_mode_outside_0o777_or_without_owner_read_write_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.mmheap");
    for mode in [0o4700, 0o2700, 0o1700, 0o7777, 0o77777777, 0, 0o400, 0o200, 0o500, 0o070] {
        let options = Options::new().mode(mode).allow_shared_permissions(true);
        let what = invalid_options(MappedManager::create(&path, &options));
        assert!(what.is_some_and(|w| w.contains("mode")), "mode {mode:o}: {what:?}");
        assert!(invalid_options(MappedManager::open_or_create(&path, &options)).is_some(), "mode {mode:o}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "mode {mode:o} made a file");
    }
}

/// A mode that lets group or others write makes a store every writer's default open refuses:
/// asked for without `allow_shared_permissions`, it is refused (naming that option), whether or
/// not the store already exists; with it, the store is made.
#[test]
fn a_shared_mode_needs_allow_shared_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.mmheap");
    for mode in [0o660, 0o620, 0o602, 0o666] {
        let what = invalid_options(MappedManager::create(&path, &Options::new().mode(mode)));
        assert!(what.is_some_and(|w| w.contains("allow_shared_permissions")), "mode {mode:o}: {what:?}");
        assert!(invalid_options(MappedManager::open_or_create(&path, &Options::new().mode(mode))).is_some());
    }
    assert!(!path.exists());
    store(&path);
    let refused = MappedManager::open_or_create(&path, &Options::new().mode(0o660));
    assert!(invalid_options(refused).is_some(), "refused only when the store is missing");
    let shared = Options::new().mode(0o660).allow_shared_permissions(true);
    std::fs::remove_file(&path).unwrap();
    assert!(MappedManager::open_or_create(&path, &shared).unwrap().check().unwrap().is_sound());
    assert!(MappedManager::open_with(&path, &shared).is_ok());
}

/// The mode asked for is the store's mode exactly, whatever the umask (here one that takes
/// group write and every bit of others away): a group's store is writable by the group.
#[test]
fn the_mode_is_applied_exactly_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    // SAFETY: umask only sets the process's file-creation mask; restored below.
    let old = unsafe { libc::umask(0o027) };
    let made = |name: &str, options: &Options| {
        let path = dir.path().join(name);
        drop(MappedManager::create(&path, options).unwrap());
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777
    };
    let shared = Options::new().allow_shared_permissions(true);
    let modes = [made("a", &shared.mode(0o660)), made("b", &shared.mode(0o666)), made("c", &Options::new())];
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    assert_eq!(modes, [0o660, 0o666, 0o600]);
}

/// `mmheap recover` on a store it may not write says what the tool can do (its read-only
/// commands read it), not what the library's API does.
#[test]
fn the_tool_names_its_own_read_only_commands() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.mmheap");
    store(&path);
    chmod(&path, 0o400);
    let out = tool(&["recover".as_ref(), path.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("is read-only here") && text.contains("stat, check, dump, roots and map read it"),
        "{text}"
    );
    assert!(!text.contains("MappedManager"), "a library hint in the tool: {text}");
}

/// `--json` commands refused the file print, on standard output, the JSON error object
/// `check --json` prints (`{"readable": false, "error": ...}`), and exit 2.
#[test]
fn json_commands_refused_the_file_print_a_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let (path, link) = (dir.path().join("s.mmheap"), dir.path().join("link.mmheap"));
    store(&path);
    symlink(&path, &link).unwrap();
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cli.md")).unwrap();
    let after = &doc[doc.find("**Errors in JSON.**").expect("the section in docs/cli.md")..];
    let start = after.find("```json\n").expect("its example") + "```json\n".len();
    let documented: serde_json::Value =
        serde_json::from_str(&after[start..start + after[start..].find("```").unwrap()]).unwrap();
    let runs: [&[&str]; 4] = [
        &["stat", "--json"],
        &["check", "--json"],
        &["dump", "--json"],
        &["dump", "--json", "--offset", "0x9000"],
    ];
    for args in runs {
        let mut all: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        all.insert(1, link.as_os_str());
        let out = tool(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {out:?}"));
        let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&v), keys(&documented), "{args:?}: {v}");
        assert_eq!(v["readable"], false, "{args:?}: {v}");
        assert!(v["error"].as_str().unwrap().contains("it is a symlink"), "{args:?}: {v}");
    }
}
