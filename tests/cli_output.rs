//! The `mmheap` tool's output: quiet on a broken pipe, never over a store or an input or an
//! existing file, exact `dump --offset` answers, one size parser with named limits, exit codes
//! on damaged stores as `docs/cli.md` gives them, and that document's examples against the
//! real output.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use mmheap::{MappedManager, MemoryBlock, MemoryManager, Options};

fn mmheap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmheap")).args(args).output().expect("run mmheap")
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A store at `dir/s.mmheap` with `n` live blocks, held by the returned manager and blocks.
fn busy_store(dir: &Path, n: usize) -> (PathBuf, MappedManager, Vec<MemoryBlock>) {
    let path = dir.join("s.mmheap");
    let m = MappedManager::create(&path, &Options::new().max_size(1 << 30)).unwrap();
    let blocks: Vec<MemoryBlock> = (0..n).map(|i| m.allocate(16 + (i % 40) * 24).unwrap()).collect();
    let mut named = m.allocate(100).unwrap();
    for (i, b) in named.as_mut_slice().unwrap().iter_mut().enumerate() {
        *b = b'a' + (i % 26) as u8;
    }
    m.set_root("letters", &named).unwrap();
    (path, m, blocks)
}

/// Runs `mmheap args` with standard output a pipe whose reader goes away after `keep` lines.
fn through_closed_pipe(args: &[&str], keep: usize) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mmheap"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mmheap");
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    for _ in 0..keep {
        lines.next().expect("a line").expect("read a line");
    }
    drop(lines); // the reader goes, as `head -1` does
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    (child.wait().unwrap(), err)
}

#[test]
fn a_closed_pipe_ends_the_tool_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _m, _blocks) = busy_store(dir.path(), 4000);
    let p = path.to_str().unwrap();
    // `dump` writes far more than a pipe holds, so it must meet the closed pipe.
    for (args, keep) in
        [(&["dump", p, "--limit", "100000"][..], 1), (&["stat", p], 0), (&["dump", p, "--json"], 0)]
    {
        let (status, err) = through_closed_pipe(args, keep);
        assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{args:?}: {err}");
        assert_ne!(status.code(), Some(101), "{args:?}: {err}");
        assert!(status.success() || status.signal() == Some(libc::SIGPIPE), "{args:?}: {status}, {err}");
    }
}

/// The read-only commands look at a store in place (under its lock) and need no copy of it:
/// under an address-space limit that leaves room for the store's mapping but not for a copy as
/// large they work. A command that needs a private copy (a dry run changes one) and cannot have
/// it is an error that names it, exit 2, with the store lock given back; not an abort that
/// leaves the lock word set.
#[test]
fn a_copy_that_does_not_fit_in_memory_is_an_error_not_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.mmheap");
    let m = MappedManager::create(&path, &Options::new().initial_size(3 << 30).max_size(3 << 30)).unwrap();
    m.set_root("r", &m.allocate(8).unwrap()).unwrap();
    drop(m);
    let limit = format!("--as={}", 5u64 << 30);
    let limited = |args: &[&str]| {
        Command::new("prlimit")
            .arg(limit.as_str())
            .arg(env!("CARGO_BIN_EXE_mmheap"))
            .args(args)
            .output()
            .expect("prlimit (util-linux)")
    };
    let p = path.to_str().unwrap();
    for cmd in ["stat", "check", "dump", "roots"] {
        let o = limited(&[cmd, p]);
        assert_eq!(code(&o), 0, "{cmd}: {}", stderr(&o));
    }
    let o = limited(&["recover", p, "--dry-run"]);
    assert_eq!(code(&o), 2, "recover --dry-run: {}", stderr(&o));
    assert!(stderr(&o).contains("private copy of the store"), "recover --dry-run: {}", stderr(&o));
    // The lock was given back: a writer opens without taking over from anyone.
    let m = MappedManager::open(&path).unwrap();
    assert_eq!(m.stats().unwrap().recoveries, 0);
}

/// Under an address-space limit below the store's capacity, each read-only command says what
/// the library's open says (`Error::MapFailed`: the bytes asked for, and `ulimit -v`), exit 2.
#[test]
fn a_refused_mapping_is_named_as_the_library_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.mmheap");
    let size = 1u64 << 30;
    drop(MappedManager::create(&path, &Options::new().initial_size(size).max_size(size)).unwrap());
    let limit = format!("--as={}", 512u64 << 20);
    let p = path.to_str().unwrap();
    let runs: [&[&str]; 6] = [
        &["stat", p],
        &["check", p],
        &["dump", p],
        &["roots", p],
        &["map", p, "-o", "/dev/null/x.svg"],
        &["recover", p, "--dry-run"],
    ];
    for args in runs {
        let o = Command::new("prlimit")
            .arg(limit.as_str())
            .arg(env!("CARGO_BIN_EXE_mmheap"))
            .args(args)
            .output()
            .expect("prlimit (util-linux)");
        let text = stderr(&o);
        assert_eq!(code(&o), 2, "{args:?}: {text}");
        assert!(text.contains(&format!("could not map {size} bytes")), "{args:?}: {text}");
        assert!(text.contains("ulimit -v"), "{args:?}: {text}");
    }
}

/// What recovery repairs beyond reclaiming (here a count it derives anew from the references) is
/// said, as `repaired:` lines naming what check saw, and `--dry-run` says it would; neither is
/// done silently any more.
#[test]
fn recover_says_what_it_repaired_and_dry_run_what_it_would() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.mmheap");
    let m = MappedManager::create(&path, &Options::new()).unwrap();
    m.set_root("r", &m.allocate(1000).unwrap()).unwrap();
    let off = m.roots().unwrap()[0].1.offset;
    drop(m);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[(off + mmheap::format::HDR_RC + 2) as usize] ^= 1; // 65,536 owner references, no owner
    std::fs::write(&path, &bytes).unwrap();
    let p = path.to_str().unwrap();
    let o = mmheap(&["check", p]);
    let seen = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(code(&o), 1, "{seen}");
    let what = "owner references without a valid owner";
    assert!(seen.contains(what), "{seen}");
    let o = mmheap(&["recover", "--dry-run", p]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains(&format!("would repair: {what} at {off:#x}")), "{text}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "a dry run changes nothing");
    let o = mmheap(&["recover", p]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(code(&o), 0, "{text}");
    assert!(
        text.contains(&format!("repaired: {what} at {off:#x}")) && text.contains("check: 0 problem(s)"),
        "{text}"
    );
}

/// Standard output that cannot be written (`>/dev/full`): exit 3 and one line on standard error,
/// never a panic (exit 101); what the command did is done (the store is made).
#[test]
fn lost_output_is_exit_3_and_the_work_stands() {
    let dir = tempfile::tempdir().unwrap();
    let full = || std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
    let path = dir.path().join("new.mmheap");
    let p = path.to_str().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mmheap")).args(args).stdout(full()).output().unwrap()
    };
    let o = run(&["create", p]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).starts_with("mmheap: cannot write standard output"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    let m = MappedManager::open(&path).expect("the store was made");
    m.set_root("r", &m.allocate(8).unwrap()).unwrap(); // so that `roots` has a line to print
    drop(m);
    for args in [&["stat", p][..], &["check", p], &["dump", p], &["roots", p]] {
        let o = run(args);
        assert_eq!(code(&o), 3, "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn map_never_writes_over_an_input_a_store_or_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _m, _blocks) = busy_store(dir.path(), 10);
    let p = path.to_str().unwrap();
    let before = std::fs::read(&path).unwrap();
    let link = dir.path().join("hard-link.mmheap");
    std::fs::hard_link(&path, &link).unwrap();
    let sym = dir.path().join("sym.svg");
    std::os::unix::fs::symlink(&path, &sym).unwrap();
    let other_path = dir.path().join("sub/../s.mmheap");
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    for out in [path.clone(), link, sym, other_path] {
        for force in [false, true] {
            let mut args = vec!["map", p, "-o", out.to_str().unwrap()];
            args.extend(force.then_some("--force"));
            let o = mmheap(&args);
            assert_eq!(code(&o), 2, "{args:?}");
            assert!(stderr(&o).contains("refusing to write over an input"), "{args:?}: {}", stderr(&o));
        }
    }
    assert!(std::fs::read(&path).unwrap() == before, "the store was written");

    // Another store: refused even with --force.
    let other = dir.path().join("other.mmheap");
    drop(MappedManager::create(&other, &Options::new()).unwrap());
    let other_before = std::fs::read(&other).unwrap();
    let o = mmheap(&["map", p, "-o", other.to_str().unwrap(), "--force"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("is an mmheap store"), "{}", stderr(&o));
    assert!(std::fs::read(&other).unwrap() == other_before);

    // An existing file: refused without --force, replaced (by rename) with it.
    let svg = dir.path().join("heap.svg");
    std::fs::write(&svg, b"keep me").unwrap();
    let o = mmheap(&["map", p, "-o", svg.to_str().unwrap()]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("exists") && stderr(&o).contains("--force"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&svg).unwrap(), b"keep me");
    let o = mmheap(&["map", p, "-o", svg.to_str().unwrap(), "--force"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));

    // A FIFO (or any file that is not a regular one) is refused before anything reads it: a
    // read of a FIFO nobody writes blocks for ever.
    let fifo = dir.path().join("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    for force in [false, true] {
        let mut args = vec!["map", p, "-o", fifo.to_str().unwrap()];
        if force {
            args.push("--force");
        }
        let o = mmheap(&args);
        assert_eq!(code(&o), 2, "{args:?}");
        assert!(stderr(&o).contains("not a regular file"), "{}", stderr(&o));
    }

    // A new file, and no temporary file left behind.
    let fresh = dir.path().join("fresh.svg");
    assert_eq!(code(&mmheap(&["map", p, "-o", fresh.to_str().unwrap()])), 0);
    assert!(std::fs::read_to_string(&fresh).unwrap().starts_with("<svg"));
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

#[test]
fn dump_offset_says_when_no_block_starts_there_and_limit_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (path, m, _blocks) = busy_store(dir.path(), 10);
    let p = path.to_str().unwrap();
    let letters = m.root("letters").unwrap().unwrap();
    let at = letters.handle().offset;
    drop(letters);

    let o = mmheap(&["dump", p, "--offset", &format!("{:#x}", at + 8)]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("no block starts at {:#x}", at + 8)), "{}", stderr(&o));
    let o = mmheap(&["dump", p, "--offset", &(at + 8).to_string(), "--json"]);
    assert_eq!(code(&o), 1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["block"].is_null() && v["payload"].is_null(), "{v}");

    let o = mmheap(&["dump", p, "--offset", &format!("{at:#x}"), "--limit", "40"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    let bytes: usize = text
        .lines()
        .filter(|l| l.len() > 10 && l[..8].chars().all(|c| c.is_ascii_hexdigit()) && &l[8..10] == "  ")
        .map(|l| l[10..57].split_whitespace().count())
        .sum();
    assert_eq!(bytes, 40, "{text}");
    assert!(text.contains("abcdefghijklmn") && text.contains("60 more byte(s) of 100"), "{text}");
    let o = mmheap(&["dump", p, "--offset", &at.to_string(), "--limit", "40", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["payload"]["shown"], 40);
    assert_eq!(v["payload"]["hex"].as_str().map(str::len), Some(80));
}

#[test]
fn one_size_parser_with_named_limits() {
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    for (i, size) in ["1mb", "1MB", "1MiB", "1m", "1024kb", "1024KiB", "1048576"].into_iter().enumerate() {
        let p = path(&format!("ok{i}.mmheap"));
        let o = mmheap(&["create", &p, "--size", size, "--max-size", "1gb"]);
        assert_eq!(code(&o), 0, "{size}: {}", stderr(&o));
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 1 << 20, "{size}");
    }
    let refused = |args: &[&str], words: &[&str]| {
        let o = mmheap(args);
        assert_eq!(code(&o), 2, "{args:?}");
        for w in words {
            assert!(stderr(&o).contains(w), "{args:?}: {w:?} not in {}", stderr(&o));
        }
        assert!(!Path::new(args[1]).exists(), "{args:?} made a file");
    };
    refused(&["create", &path("a"), "--size", "0"], &["--size 0 bytes", "at least 36.0 KiB"]);
    refused(&["create", &path("b"), "--size", "16T"], &["16.0 TiB", "default maximum size, 64.0 GiB"]);
    refused(&["create", &path("c"), "--max-size", "64T"], &["64.0 TiB", "largest store size, 16.0 TiB"]);
    refused(
        &["create", &path("d"), "--size", "2G", "--max-size", "1G"],
        &["--size 2.0 GiB", "--max-size 1.0 GiB"],
    );
    refused(&["create", &path("e"), "--size", "12Q"], &["\"12Q\"", "unknown unit"]);
    let o = mmheap(&["create", &path("f"), "--size", "100000", "--max-size", "1g"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("100000 bytes rounded up to 100.0 KiB (102400 bytes)"), "{}", stderr(&o));
    assert_eq!(std::fs::metadata(path("f")).unwrap().len(), 102_400);
}

#[test]
fn a_large_mostly_free_store_is_read_only_where_used() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("large.mmheap");
    let m = MappedManager::create(&path, &Options::new().initial_size(1 << 30).max_size(2 << 30)).unwrap();
    let _blocks: Vec<MemoryBlock> = (0..1000).map(|i| m.allocate(16 + (i % 50) * 80).unwrap()).collect();
    let p = path.to_str().unwrap();
    for cmd in ["stat", "check", "dump", "roots"] {
        let (code, rss_kib) = common::measured(env!("CARGO_BIN_EXE_mmheap"), &[cmd, p]);
        assert_eq!(code, 0, "{cmd}");
        // The store's capacity is 1 GiB; its used part, well under 1 MiB.
        assert!(rss_kib < 50 << 10, "{cmd}: peak RSS {} MiB", rss_kib >> 10);
    }
}

/// A copy in `dir` of the golden store `golden` with the corruption `name` of `recipe` applied.
fn corrupt_copy(dir: &Path, golden: &str, recipe: &str, name: &str) -> PathBuf {
    let (_, edits) = common::recipes(recipe).into_iter().find(|(n, _)| n == name).expect("a recipe");
    let path = dir.join(format!("{name}.mmheap"));
    common::copy_store(common::fixture(golden), &path).unwrap();
    common::apply(&path, &edits);
    path
}

/// The exit codes of the read-only commands (docs/cli.md): 0 all read, 1 read in part (what
/// could be read is printed, what could not is named), 2 not a store. `stat` and `dump` exited 0
/// on a heap that does not walk, `stat` on roots that cannot be read.
#[test]
fn read_only_commands_exit_as_documented_on_damaged_stores() {
    let dir = tempfile::tempdir().unwrap();
    let golden = dir.path().join("golden.mmheap");
    common::copy_store(common::fixture("golden-v1.mmheap"), &golden).unwrap();
    let junk = dir.path().join("junk.mmheap");
    std::fs::write(&junk, b"not a store at all").unwrap();
    // The first block's tag zeroed: the heap does not walk; the roots still read.
    let unwalkable = corrupt_copy(dir.path(), "golden-v1.mmheap", "corrupt.recipe", "first-tag-zero");
    // A root naming no block: the heap walks; the roots cannot be listed.
    let rootless = corrupt_copy(dir.path(), "golden-v1.mmheap", "corrupt.recipe", "root-to-garbage");
    let exits = |path: &Path| -> Vec<i32> {
        let p = path.to_str().unwrap();
        ["stat", "dump", "roots", "check"].iter().map(|c| code(&mmheap(&[c, p]))).collect()
    };
    assert_eq!(exits(&golden), [0, 0, 0, 0], "a sound store");
    assert_eq!(exits(&junk), [2, 2, 2, 2], "not a store");
    assert_eq!(exits(&unwalkable), [1, 1, 0, 1], "a heap that does not walk");
    assert_eq!(exits(&rootless), [1, 0, 1, 1], "roots that cannot be read");

    let p = unwalkable.to_str().unwrap();
    let o = mmheap(&["stat", p]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("from the store's counters") && text.contains("unavailable"), "{text}");
    assert!(stderr(&o).contains("could not be read"), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&mmheap(&["stat", p, "--json"]).stdout).unwrap();
    assert!(v["size_classes"].is_null() && v["errors"].as_array().is_some_and(|e| !e.is_empty()), "{v}");
    assert_eq!(v["store"]["walked"], false, "{v}");
    let o = mmheap(&["dump", p, "--json"]);
    assert_eq!(code(&o), 1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["error"].is_string(), "{v}");
    assert!(String::from_utf8_lossy(&mmheap(&["dump", p]).stdout).contains("walk stopped"));
    // check says its figures were not counted, rather than "0 blocks".
    let v: serde_json::Value = serde_json::from_slice(&mmheap(&["check", p, "--json"]).stdout).unwrap();
    assert_eq!(v["walked"], false, "{v}");
    let text = String::from_utf8_lossy(&mmheap(&["check", p]).stdout).into_owned();
    assert!(text.contains("does not walk to its end") && !text.contains(" 0 blocks"), "{text}");

    // One damaged root hides no other: each is listed, the damaged one with what is wrong.
    let p = rootless.to_str().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&mmheap(&["stat", p, "--json"]).stdout).unwrap();
    let roots = v["roots"].as_array().expect("roots listed");
    let damaged: Vec<_> = roots.iter().filter(|r| !r["problem"].is_null()).collect();
    assert!(roots.len() == 3 && damaged.len() == 1 && v["size_classes"].is_array(), "{v}");
    assert_eq!(damaged[0]["problem"], "root names no live block", "{v}");
    let o = mmheap(&["roots", p]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.contains("damaged: root names no live block"), "{text}");
    assert!(stderr(&o).contains("1 root damaged"), "{}", stderr(&o));
}

/// The JSON example that follows the line `title` in docs/cli.md.
fn doc_example(doc: &str, title: &str) -> serde_json::Value {
    let after = &doc[doc.find(title).unwrap_or_else(|| panic!("{title} in docs/cli.md"))..];
    let start = after.find("```json\n").expect("a json block") + "```json\n".len();
    let block = &after[start..start + after[start..].find("```").expect("its end")];
    serde_json::from_str(block).unwrap_or_else(|e| panic!("{title}: the example is no JSON: {e}"))
}

/// Whether `doc` has the shape of `real`: the same keys, recursively; an array's elements
/// compared with the real array's first (when both have one).
fn same_shape(doc: &serde_json::Value, real: &serde_json::Value, at: &str) {
    use serde_json::Value::{Array, Object};
    match (doc, real) {
        (Object(d), Object(r)) => {
            let (dk, rk): (Vec<_>, Vec<_>) = (d.keys().collect(), r.keys().collect());
            assert_eq!(dk, rk, "{at}: the documented keys are not the real ones");
            for (k, v) in d {
                same_shape(v, &r[k], &format!("{at}.{k}"));
            }
        }
        (Array(d), Array(r)) => {
            if let Some(first) = r.first() {
                d.iter().for_each(|e| same_shape(e, first, &format!("{at}[]")));
            }
        }
        _ => {}
    }
}

/// docs/cli.md's JSON examples have the keys the real output has, its examples show the real
/// format version and the real `dump` header, and every block state is in its `dump` example.
#[test]
fn the_documented_output_is_the_real_one() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cli.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // This process holds blocks lent from its cache, keeps others parked, and roots a slot.
    let (path, m, _blocks) = busy_store(dir.path(), 200);
    let mut small = m.allocate(14).unwrap();
    small.as_mut_slice().unwrap().copy_from_slice(b"the first root");
    m.set_root("small", &small).unwrap();
    drop((0..50).map(|i| m.allocate(100 + i).unwrap()).collect::<Vec<_>>());
    let p = path.to_str().unwrap();
    let run = |args: &[&str]| -> serde_json::Value {
        let o = mmheap(args);
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", stderr(&o)))
    };
    let stat = run(&["stat", p, "--json"]);
    assert!(stat["unreferenced"].as_array().is_some_and(|u| !u.is_empty()), "{stat}");
    same_shape(&doc_example(&doc, "`mmheap stat FILE --json`:"), &stat, "stat");
    same_shape(&doc_example(&doc, "`mmheap check FILE --json`:"), &run(&["check", p, "--json"]), "check");
    let damaged = corrupt_copy(dir.path(), "golden-v1.mmheap", "corrupt.recipe", "alpha-refs-zero");
    let problems = run(&["check", damaged.to_str().unwrap(), "--json"]);
    assert!(problems["problems"].as_array().is_some_and(|a| !a.is_empty()), "{problems}");
    same_shape(&doc_example(&doc, "`mmheap check FILE --json`:"), &problems, "check with problems");
    same_shape(&doc_example(&doc, "`mmheap dump FILE --json`:"), &run(&["dump", p, "--json"]), "dump");
    let id = small.handle().offset.to_string();
    let one = run(&["dump", p, "--offset", &id, "--json"]);
    assert_eq!(one["block"]["kind"], "slot", "{one}");
    same_shape(&doc_example(&doc, "`mmheap dump FILE --offset X --json`:"), &one, "dump --offset");

    let version = mmheap::format::FORMAT_VERSION;
    assert_eq!(doc_example(&doc, "`mmheap stat FILE --json`:")["store"]["format_version"], version);
    assert!(doc.contains(&format!("(format v{version})")), "the stat example's version");
    let real_header = String::from_utf8(mmheap(&["dump", p]).stdout).unwrap();
    let real_header = real_header.lines().next().unwrap();
    let example = &doc[doc.find("$ mmheap dump").expect("a dump example")..];
    let example = &example[..example.find("```").unwrap()];
    assert!(example.lines().any(|l| l == real_header), "the dump example's header is not {real_header:?}");
    for state in ["live", "parked", "lent/parked", "free", "bookkeeping", "quarantined"] {
        let column = |l: &str| l.split_whitespace().nth(4) == Some(state);
        assert!(example.lines().any(column), "no {state} line in the dump example");
        assert!(doc.contains(&format!("| `{state}` |")), "{state} is not in the table of states");
    }
}

/// Ctrl-Z on a tool that holds the store lock stops it only once it has given the lock back,
/// however many threads it has: here `check`, drawing its progress on a terminal from a thread
/// of its own (the kernel hands a stop signal sent to the process to any thread that does not
/// block it: the drawing thread took it, and the tool stopped holding the lock, every writer
/// waiting until it was continued). The stop is sent while the lock word shows a holder; once the
/// tool is stopped, a writer of the store must get the lock.
#[test]
fn a_stop_from_the_terminal_never_stops_a_tool_holding_the_lock() {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::fs::FileExt;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.mmheap");
    let m = MappedManager::create(&path, &Options::new().initial_size(64 << 20).max_size(1 << 30)).unwrap();
    let m = std::sync::Arc::new(m);
    let _blocks: Vec<MemoryBlock> = (0..200_000).map(|i| m.allocate(80 + i % 200).unwrap()).collect();
    let (mut master, mut slave) = (0, 0);
    // SAFETY: valid pointers to two ints; no name, termios or window size asked for.
    let rc = unsafe {
        libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null())
    };
    assert_eq!(rc, 0, "openpty");
    // SAFETY: both descriptors were just opened by openpty and are owned here alone.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    // The terminal's reader: what the tool draws is read, as a terminal does.
    let mut screen = std::fs::File::from(master);
    std::thread::spawn(move || std::io::copy(&mut screen, &mut std::io::sink()));
    let file = std::fs::File::open(&path).unwrap();
    let lock_word = || {
        let mut w = [0u8; 4];
        file.read_exact_at(&mut w, mmheap::format::SB_LOCK).unwrap();
        u32::from_le_bytes(w)
    };
    let state = |pid: u32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rfind(')').and_then(|i| stat[i + 2..].chars().next()).unwrap_or('?')
    };
    let mut stopped_holding = 0;
    for _ in 0..20 {
        let mut tool = Command::new(env!("CARGO_BIN_EXE_mmheap"))
            .args(["check", path.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::from(slave.try_clone().unwrap()))
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = tool.id();
        while lock_word() == 0 && tool.try_wait().unwrap().is_none() {
            std::hint::spin_loop();
        }
        // SAFETY: sends a signal to our own child.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTSTP) };
        while state(pid) != 'T' && tool.try_wait().unwrap().is_none() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if state(pid) == 'T' {
            // A writer's turn at the lock, on a thread: a tool stopped holding it keeps it waiting.
            let (tx, rx) = std::sync::mpsc::channel();
            let writer = m.clone();
            std::thread::spawn(move || tx.send(writer.set_root("probe", &writer.allocate(300_000).unwrap())));
            let got = rx.recv_timeout(std::time::Duration::from_secs(20));
            stopped_holding += usize::from(got.is_err());
            // SAFETY: as above.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
            if got.is_err() {
                rx.recv().unwrap().unwrap();
            }
        }
        assert!(tool.wait().unwrap().code().is_some(), "the tool ended");
        if stopped_holding > 0 {
            break;
        }
    }
    assert_eq!(stopped_holding, 0, "the tool stopped holding the store lock");
}

/// A user who may read a store but not write it cannot take its lock, so the tool copies the
/// store without it; while other threads write the store, each copy may mix moments. The tool
/// must not show such a copy's tears as damage: it shows a copy that shows none (with a note),
/// or, when every copy shows damage, each a different one, it shows nothing and says why
/// (exit 2). It showed `malformed block header` and `N roots damaged` in 18 of 18 runs. Needs
/// root (to run the tool as `nobody` with `setpriv`); skipped, saying why, otherwise.
#[test]
fn a_reader_who_cannot_lock_a_busy_store_shows_no_damage_that_is_not_there() {
    use std::os::unix::fs::PermissionsExt;
    let Some((uid, gid)) = common::nobody() else { return };
    let (dir, tool) = tool_for_nobody();
    let path = dir.path().join("busy.mmheap");
    let m = std::sync::Arc::new(MappedManager::create(&path, &Options::new().max_size(64 << 20)).unwrap());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _kept: Vec<MemoryBlock> = (0..20_000).map(|i| m.allocate(16 + i % 700).unwrap()).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Microseconds each writing thread sleeps between two changes: none at first, then 2 ms (a
    // store that changes now and then, whose copies are torn only sometimes).
    let pause = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let churners: Vec<_> = (0..3)
        .map(|t| {
            let (m, stop, pause) = (m.clone(), stop.clone(), pause.clone());
            std::thread::spawn(move || {
                let mut keep: Vec<MemoryBlock> = Vec::new();
                let mut i = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let us = pause.load(std::sync::atomic::Ordering::Relaxed);
                    std::thread::sleep(std::time::Duration::from_micros(us));
                    i += 1;
                    keep.push(m.allocate(16 + (i * 37 + t) % 3000).unwrap());
                    if keep.len() > 400 {
                        keep.swap_remove(i % keep.len());
                    }
                    if i % 50 == 0 {
                        m.set_root(&format!("r{t}-{}", i % 7), &keep[i % keep.len()]).unwrap();
                    }
                }
            })
        })
        .collect();
    let mut exits = Vec::new();
    for round in 0..10 {
        if round == 4 {
            pause.store(2000, std::sync::atomic::Ordering::Relaxed);
        }
        for cmd in ["stat", "roots", "dump", "check"] {
            let o = as_user((&uid, &gid), &tool, cmd, &path);
            let (out, err) = (String::from_utf8_lossy(&o.stdout), stderr(&o));
            assert!(code(&o) != 1, "round {round}, {cmd}: exit 1\n{out}{err}");
            let torn = out.contains("damaged") || out.contains("does not walk") || err.contains("corrupt");
            assert!(!torn, "round {round}, {cmd}:\n{out}{err}");
            // A refusal says why: the store changed under every copy, not that it is in use.
            assert!(code(&o) != 2 || err.contains("changed under every copy"), "round {round}, {cmd}: {err}");
            exits.push(code(&o));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    churners.into_iter().for_each(|c| c.join().unwrap());
    println!("exits while the store was written: {exits:?}");
    // Quiet now: the reader's copy is settled, and sound.
    let o = as_user((&uid, &gid), &tool, "check", &path);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

/// A store the user may not even read: the tool's error names the path with the system's
/// answer. Needs root (to run the tool as `nobody` with `setpriv`); skipped, saying why,
/// otherwise.
#[test]
fn a_store_that_cannot_be_opened_is_named() {
    let Some((uid, gid)) = common::nobody() else { return };
    let (dir, tool) = tool_for_nobody();
    let path = dir.path().join("private.mmheap");
    drop(MappedManager::create(&path, &Options::new().max_size(1 << 20)).unwrap());
    for cmd in ["stat", "check", "recover"] {
        let o = as_user((&uid, &gid), &tool, cmd, &path);
        let text = stderr(&o);
        assert_eq!(code(&o), 2, "{cmd}: {text}");
        let said = format!("cannot open {}: Permission denied", path.display());
        assert!(text.contains(&said), "{cmd}: {text}");
    }
}

/// A directory `nobody` may enter, holding a copy of the tool it may run (the build directory
/// may be closed to other users).
fn tool_for_nobody() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let tool = dir.path().join("mmheap");
    std::fs::copy(env!("CARGO_BIN_EXE_mmheap"), &tool).unwrap();
    (dir, tool)
}

/// Runs the tool's `cmd` on `path` as the user and group `who` (with `setpriv`).
fn as_user(who: (&str, &str), tool: &Path, cmd: &str, path: &Path) -> Output {
    Command::new("setpriv")
        .args([format!("--reuid={}", who.0), format!("--regid={}", who.1)])
        .args(["--clear-groups", "--"])
        .arg(tool)
        .args([cmd, path.to_str().unwrap()])
        .output()
        .unwrap()
}
