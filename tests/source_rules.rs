//! Rules about the source that the compiler and clippy cannot express.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// All atomics go through `src/sync.rs`, the one door (STYLE.md): a change of atomic backend
/// or an audit of orderings then has one place to look.
#[test]
fn atomics_only_through_the_sync_module() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 10);
    for f in files {
        if f.ends_with("sync.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            !text.contains("std::sync::atomic"),
            "{} names std::sync::atomic; use crate::sync",
            f.display()
        );
    }
}

/// The manifests' `license = "MIT OR Apache-2.0"` needs both texts beside each package's
/// manifest (mmheap-malloc's are links to the repository's).
#[test]
fn both_licence_texts_stand_beside_each_manifest() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in [root.to_path_buf(), root.join("mmheap-malloc")] {
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("\nlicense = \"MIT OR Apache-2.0\"\n"), "{}", dir.display());
        let mit = std::fs::read_to_string(dir.join("LICENSE-MIT")).unwrap();
        assert!(mit.starts_with("MIT License\n\nCopyright (c) The mmheap developers\n"), "{}", dir.display());
        assert!(mit.contains("Permission is hereby granted, free of charge"));
        let apache = std::fs::read_to_string(dir.join("LICENSE-APACHE")).unwrap();
        assert!(apache.contains("Apache License\n                        Version 2.0, January 2004"));
        assert!(apache.trim_end().ends_with("END OF TERMS AND CONDITIONS"));
    }
}

/// What `cargo package` would upload: the licence texts, and nothing that is not the crate's
/// (a store left by a run, build output, the peers' sources, CI and benchmark scripts).
#[test]
fn the_package_carries_the_licences_and_nothing_stray() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(env!("CARGO"))
        .args(["package", "--list", "--allow-dirty", "--offline", "-p", "mmheap"])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list = String::from_utf8(out.stdout).unwrap();
    let files: Vec<&str> = list.lines().collect();
    for needed in ["LICENSE-MIT", "LICENSE-APACHE", "README.md", "Cargo.toml", "src/lib.rs"] {
        assert!(files.contains(&needed), "{needed} missing from the package: {files:?}");
    }
    let stray = |f: &str| {
        f.ends_with(".mmheap")
            || ["target/", "peers/", ".ci/", "scripts/", "mmheap-malloc/"].iter().any(|d| f.starts_with(d))
    };
    let found: Vec<&str> = files.iter().copied().filter(|f| stray(f)).collect();
    assert!(found.is_empty(), "stray files in the package: {found:?}");
}

/// The README is read on the repository page too, where rustdoc's hidden lines (`# ...`) show:
/// every line of its Rust examples must make sense there as written, so each is a whole
/// program with a visible `main` (the README is also a doctest, `src/lib.rs`, which runs them).
#[test]
fn readme_examples_hide_no_lines_and_are_whole_programs() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let (mut lang, mut block, mut blocks) = (None::<String>, String::new(), 0);
    for (n, line) in readme.lines().enumerate() {
        match (&lang, line.strip_prefix("```")) {
            (None, Some(tag)) => lang = Some(tag.to_owned()),
            (Some(_), Some("")) => {
                if lang.as_deref() == Some("rust") {
                    assert!(
                        block.contains("\nfn main() "),
                        "README example ending at line {} has no main",
                        n + 1
                    );
                    blocks += 1;
                }
                (lang, block) = (None, String::new());
            }
            (Some(l), _) if l == "rust" => {
                let t = line.trim_start();
                assert!(
                    t != "#" && !t.starts_with("# "),
                    "README line {} is hidden by rustdoc: {line}",
                    n + 1
                );
                block.push('\n');
                block.push_str(line);
            }
            _ => {}
        }
    }
    assert!(lang.is_none(), "a code block of the README is not closed");
    assert!(blocks >= 9, "only {blocks} Rust examples found");
}
