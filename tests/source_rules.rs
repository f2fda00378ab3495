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
            || ["target/", "peers/", ".ci/", "scripts/", "fuzz/", "mmheap-malloc/"]
                .iter()
                .any(|d| f.starts_with(d))
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

/// The crate's modules import one way: no module imports one that imports it, directly or
/// around a circle. A folder or a file under `src/` is one module, and so is each one under
/// `src/engine/`, the engine: its heap is below what uses blocks (directories, channels, slots),
/// which are below what reads everything (recovery, the census), and the heap reaches recovery
/// only through the function it is made with. Read from the source's `crate::` and `super::`
/// paths, test modules left out.
#[test]
fn the_crate_s_modules_import_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    // A file's module: `engine::x` under `src/engine/`, else the first name under `src/`.
    let unit_of = |parts: &[String]| match parts {
        [e, x, ..] if e == "engine" => format!("engine::{x}"),
        [x, ..] => x.clone(),
        [] => String::new(),
    };
    let names = |f: &Path| -> Vec<String> {
        f.strip_prefix(&src)
            .unwrap()
            .iter()
            .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
            .collect()
    };
    let modules: std::collections::BTreeSet<String> = files.iter().map(|f| unit_of(&names(f))).collect();
    let path = regex::Regex::new(r"\bcrate::(engine::)?([a-z_]+)").unwrap();
    let up = regex::Regex::new(r"\bsuper::([a-z_]+)").unwrap();
    let mut edges = std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
    for f in &files {
        let parts = names(f);
        if parts[0] == "bin" || parts == ["lib"] || parts == ["engine", "mod"] {
            continue; // another crate; the roots only declare the modules
        }
        let unit = unit_of(&parts);
        // A module at the engine's top (`engine/x.rs`, `engine/x/mod.rs`) reaches its siblings
        // through `super::`; other files reach their own module's parts.
        let engine_top =
            parts[0] == "engine" && (parts.len() == 2 || (parts.len() == 3 && parts[2] == "mod"));
        let text = std::fs::read_to_string(f).unwrap();
        let text = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        let code: String = text.lines().map(|l| l.split("//").next().unwrap()).collect::<Vec<_>>().join("\n");
        let mut targets: Vec<String> = path
            .captures_iter(&code)
            .map(|c| if c.get(1).is_some() { format!("engine::{}", &c[2]) } else { c[2].to_owned() })
            .collect();
        if engine_top {
            targets.extend(up.captures_iter(&code).map(|c| format!("engine::{}", &c[1])));
        }
        for t in targets.into_iter().filter(|t| *t != unit && modules.contains(t)) {
            edges.entry(unit.clone()).or_default().insert(t);
        }
    }
    assert!(
        edges.len() >= 15 && edges.keys().filter(|m| m.starts_with("engine::")).count() >= 6,
        "{edges:?}"
    );
    // A circle shows as a module reached again from itself.
    type Edges = std::collections::BTreeMap<String, std::collections::BTreeSet<String>>;
    fn reach(from: &str, edges: &Edges, path: &mut Vec<String>) -> Option<Vec<String>> {
        for next in edges.get(from).into_iter().flatten() {
            if path.first() == Some(next) {
                return Some(path.iter().cloned().chain([next.clone()]).collect());
            }
            if !path.contains(next) {
                path.push(next.clone());
                if let Some(circle) = reach(next, edges, path) {
                    return Some(circle);
                }
                path.pop();
            }
        }
        None
    }
    for unit in edges.keys() {
        let circle = reach(unit, &edges, &mut vec![unit.clone()]);
        assert!(circle.is_none(), "modules import each other in a circle: {}", circle.unwrap().join(" -> "));
    }
}
