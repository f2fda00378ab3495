//! The examples' default stores go to the temporary directory, never into the directory they
//! run in (a repository root collected `ipc.mmheap` and `notes.mmheap`, which `cargo package`
//! then listed): each example runs with no store argument in an empty directory, with
//! `TMPDIR` pointing elsewhere, and leaves the directory empty (`consumer` takes its default as
//! `producer` does, and waits for messages for ever).

use std::path::{Path, PathBuf};
use std::process::Command;

/// An example's binary: `cargo test` builds the examples before the integration tests, beside
/// them (`target/<profile>/examples/`); `cargo test --test examples` alone does not (build them
/// with `cargo build --examples` first).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let path = dir.join(name);
    assert!(path.exists(), "{} not built", path.display());
    path
}

fn run_in(dir: &Path, tmp: &Path, name: &str, args: &[&str]) -> String {
    let out = Command::new(example(name)).args(args).current_dir(dir).env("TMPDIR", tmp).output().unwrap();
    assert!(out.status.success(), "{name}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn examples_keep_their_default_stores_out_of_the_working_directory() {
    let (cwd, tmp) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = run_in(cwd.path(), tmp.path(), "persist", &[]);
    let second = run_in(cwd.path(), tmp.path(), "persist", &[]);
    assert!(first.contains("run 1") && second.contains("run 2"), "{first}{second}");
    // 20 messages, 0.1 s apart; they stay queued in the store (the consumer, which takes the
    // same default, would wait for more for ever).
    let sent = run_in(cwd.path(), tmp.path(), "producer", &[]);
    assert!(sent.contains("store: ") && sent.contains("done"), "{sent}");
    run_in(cwd.path(), tmp.path(), "linked", &["add", "pear"]);
    run_in(cwd.path(), tmp.path(), "linked", &["add", "apple"]);
    let linked = run_in(cwd.path(), tmp.path(), "linked", &["pop"]);
    assert!(
        linked.contains("popped: apple") && linked.contains(r#"list, newest first: ["pear"]"#),
        "{linked}"
    );
    assert!(
        linked.contains(r#"tree, in order: ["apple", "pear"]"#) && linked.contains("sound: true"),
        "{linked}"
    );
    let cleared = run_in(cwd.path(), tmp.path(), "linked", &["clear"]);
    assert!(cleared.contains("live blocks: 0; sound: true"), "{cleared}");
    let left: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "the examples wrote {left:?} where they ran");
    assert!(tmp.path().join("mmheap-example-notes.mmheap").exists());
    assert!(tmp.path().join("mmheap-example-ipc.mmheap").exists());
    assert!(tmp.path().join("mmheap-example-linked.mmheap").exists());
}

fn kv(store: &Path, args: &[&str]) -> std::process::Output {
    Command::new(example("kv")).arg(store).args(args).output().unwrap()
}

fn kv_out(store: &Path, args: &[&str]) -> String {
    let out = kv(store, args);
    assert!(out.status.success(), "kv {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The `kv` example's interface, as a script drives it: exit codes, output, several processes
/// at once, and a writer killed with SIGKILL.
#[test]
fn kv_works_as_scripts_use_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("kv.mmheap");
    assert!(!store.exists());
    kv_out(&store, &["put", "colour", "blue"]);
    kv_out(&store, &["put", "shape", "round"]);
    kv_out(&store, &["put", "colour", "green"]);
    assert_eq!(kv_out(&store, &["get", "colour"]), "green\n");
    assert_eq!(kv(&store, &["get", "size"]).status.code(), Some(1), "an absent key exits 1");
    assert_eq!(kv_out(&store, &["list"]), "colour\tgreen\nshape\tround\n");
    kv_out(&store, &["delete", "colour"]);
    assert_eq!(kv(&store, &["delete", "colour"]).status.code(), Some(1));
    assert_eq!(kv(&store, &["frobnicate"]).status.code(), Some(2), "usage");
    let nothing = dir.path().join("never.mmheap");
    assert_eq!(kv(&nothing, &["get"]).status.code(), Some(2));
    assert!(!nothing.exists(), "a usage error creates no store");
    // Arguments that are not UTF-8 are keys and values as any bytes are.
    use std::os::unix::ffi::OsStrExt;
    let odd = std::ffi::OsStr::from_bytes(b"k\xff");
    let put = Command::new(example("kv")).arg(&store).arg("put").arg(odd).arg("v").status().unwrap();
    assert!(put.success());
    let got = Command::new(example("kv")).arg(&store).arg("get").arg(odd).output().unwrap();
    assert_eq!(got.stdout, b"v\n");
    assert_eq!(
        Command::new(example("kv")).arg(&store).arg("delete").arg(odd).status().unwrap().code(),
        Some(0)
    );

    // Three processes filling at once: every key of every one.
    let fills: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|p| Command::new(example("kv")).arg(&store).args(["fill", "2000", p]).spawn().unwrap())
        .collect();
    for mut f in fills {
        assert!(f.wait().unwrap().success());
    }
    let list = kv_out(&store, &["list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 6001, "6,000 filled keys and shape");
    assert!(lines.windows(2).all(|w| w[0] < w[1]), "sorted, each key once");
    assert!(lines.iter().filter(|l| !l.starts_with("shape")).all(|l| {
        let (k, v) = l.split_once('\t').unwrap();
        k == v
    }));

    // A writer killed at some instant: the store opens, every key reads as written, the map
    // takes more.
    let mut killed = Command::new(example("kv")).arg(&store).args(["fill", "10000000", "z"]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    killed.kill().unwrap();
    killed.wait().unwrap();
    kv_out(&store, &["put", "after", "kill"]);
    let list = kv_out(&store, &["list"]);
    let z = list.lines().filter(|l| l.starts_with('z')).count();
    assert!(list
        .lines()
        .filter(|l| l.starts_with('z'))
        .all(|l| l.split_once('\t').is_some_and(|(k, v)| k == v)));
    assert_eq!(list.lines().count(), 6001 + 1 + z);
    let m = mmheap::MappedManager::open(&store).unwrap();
    assert!(m.check().unwrap().is_sound());
}
