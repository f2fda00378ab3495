//! The short loom models, in `cargo test`: every protocol model of `src/models/` (built with
//! `--cfg loom`, by `scripts/loom`, in `<target>/loom`) at preemption bound 1, but for the two
//! channel models, which take about a minute there (CI's `scripts/loom 2` runs them all at
//! bound 2, `scripts/loom` with a larger bound when asked). The models run the real protocol
//! code; each prints the interleavings it explored.

use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
fn the_protocol_models_hold_at_preemption_bound_1() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let out = Command::new(root.join("scripts/loom"))
        .args(["1", "models::", "--skip", "models::channel"])
        .env("CARGO_TARGET_DIR", target.join("loom"))
        .output()
        .expect("run scripts/loom");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scripts/loom 1 failed:\n{stdout}\n{stderr}");
    let said = format!("{stdout}{stderr}");
    // Every model ran and explored interleavings (a filter that matched nothing would pass).
    let models = ["lock_excludes", "lock_takeover_one_taker", "lock_takeover_two_takers"];
    let models = models.iter().chain(&["robust_mutex_holder_dies", "ring_side_locks", "lent_clones_race"]);
    for model in models.chain(&["resolve_races_last_release", "cache_park_take_vs_release"]) {
        let line = said.lines().find(|l| l.contains(&format!("loom model {model}")));
        assert!(
            line.is_some_and(|l| l.contains(" interleavings")),
            "{model} did not report its interleavings:\n{said}"
        );
    }
    println!("{}", said.lines().filter(|l| l.contains("loom model")).collect::<Vec<_>>().join("\n"));
}
