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
