//! The drop-in library under real programs: python3, sqlite3 and git run their workloads with
//! `LD_PRELOAD=libmmheap_malloc.so` and print exactly what they print without it; a C program
//! uses the C API (`include/mmheap.h`) and the malloc family, linked against the library.
//! The programs must be installed (`.ci/run` installs sqlite3 and git when missing).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The library cargo built for this test. `cargo test` leaves it beside the test binary
/// (`target/<profile>/deps/`) and copies it up to `target/<profile>/` only on `cargo build`.
fn library() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let candidates = [deps.join("libmmheap_malloc.so"), deps.parent().unwrap().join("libmmheap_malloc.so")];
    let found = candidates.iter().find(|so| so.exists());
    found.unwrap_or_else(|| panic!("libmmheap_malloc.so not built: looked at {candidates:?}")).clone()
}

fn run(program: &str, args: &[&str], dir: &Path, preload: bool) -> Output {
    let mut c = Command::new(program);
    c.args(args).current_dir(dir).env("GIT_CONFIG_NOSYSTEM", "1").env("HOME", dir);
    if preload {
        c.env("LD_PRELOAD", library());
    }
    let out = c.output().unwrap_or_else(|e| panic!("{program} could not run ({e}): is it installed?"));
    assert!(out.status.success(), "{program} {args:?} (preload {preload}): {out:?}");
    out
}

/// Runs the program with and without the library and compares what it prints.
fn same_output(program: &str, args: &[&str], dir: &Path) -> String {
    let plain = run(program, args, dir, false);
    let ours = run(program, args, dir, true);
    assert_eq!(String::from_utf8_lossy(&ours.stdout), String::from_utf8_lossy(&plain.stdout), "{program}");
    String::from_utf8_lossy(&ours.stdout).into_owned()
}

#[test]
fn python_runs_on_mmheap() {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
import ctypes, json, threading, collections
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc_usable_size.argtypes = [ctypes.c_void_p]
p = libc.malloc(24)
# 32 under mmheap (its 32-byte class), 24 under glibc: printed apart from the compared output
import sys; print(libc.malloc_usable_size(p), file=sys.stderr)
docs = [{"id": i, "name": "item %d" % i, "tags": ["t%d" % (i % 7)] * (i % 5)} for i in range(200000)]
text = json.dumps(docs)
back = json.loads(text)
counts = collections.Counter(t for d in back for t in d["tags"])
def work(k, out):
    out[k] = sum(len(str(x)) for x in range(k * 100000, (k + 1) * 100000))
out = {}
ts = [threading.Thread(target=work, args=(k, out)) for k in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
print(len(text), sorted(counts.items()), sorted(out.items()))
"#;
    same_output("python3", &["-c", script], dir.path());
    let ours = run("python3", &["-c", script], dir.path(), true);
    assert_eq!(String::from_utf8_lossy(&ours.stderr).trim(), "32", "malloc is mmheap's under LD_PRELOAD");
}

#[test]
fn sqlite_runs_on_mmheap() {
    let dir = tempfile::tempdir().unwrap();
    let sql = "create table t(a integer primary key, b text, c blob);
        with recursive n(x) as (select 1 union all select x + 1 from n where x < 200000)
        insert into t select x, printf('row %d', x), zeroblob(x % 300) from n;
        create index tb on t(b);
        delete from t where a % 3 = 0;
        vacuum;
        select count(*), sum(a), sum(length(c)), max(b) from t;";
    let (plain, ours) = (dir.path().join("plain.db"), dir.path().join("ours.db"));
    let expected = run("sqlite3", &[plain.to_str().unwrap(), sql], dir.path(), false);
    let got = run("sqlite3", &[ours.to_str().unwrap(), sql], dir.path(), true);
    assert_eq!(String::from_utf8_lossy(&got.stdout), String::from_utf8_lossy(&expected.stdout));
    assert!(got.stdout.starts_with(b"133334|"), "{got:?}");
}

#[test]
fn git_runs_on_mmheap() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    let git = |args: &[&str]| run("git", args, repo, true);
    git(&["init", "-q", "-b", "main"]);
    for i in 0..300 {
        std::fs::write(repo.join(format!("f{i}.txt")), format!("file {i}\n").repeat(i % 50 + 1)).unwrap();
        if i % 30 == 29 {
            git(&["add", "."]);
            git(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", &format!("c{i}")]);
        }
    }
    git(&["gc", "-q"]);
    let log = same_output("git", &["log", "--stat", "--format=%s"], repo);
    assert!(log.contains("c299") && log.contains("f0.txt"));
    same_output("git", &["fsck", "--full"], repo);
}

#[test]
fn c_programs_use_the_library_and_its_api() {
    let dir = tempfile::tempdir().unwrap();
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = library();
    let exe = dir.path().join("capi");
    let status = Command::new("cc")
        .args(["-O1", "-Wall", "-Wextra", "-Werror", "-pthread", "-o"])
        .arg(&exe)
        .arg(here.join("tests/capi.c"))
        .arg("-I")
        .arg(here.join("include"))
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.parent().unwrap().display()))
        .status()
        .expect("a C compiler (cc)");
    assert!(status.success());
    let out = Command::new(&exe).arg(dir.path().join("s.mmheap")).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
}
