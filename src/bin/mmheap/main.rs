//! `mmheap`: look inside a store file, check it, recover it, draw it.
//!
//! Read-only commands (`stat`, `check`, `dump`, `roots`, `map`, `recover --dry-run`) work on a
//! private copy of the store (`mmheap::inspect::Snapshot`), taken under the store's lock so
//! that it shows one moment of a store in use: they never register as a process of the store
//! or write to it, but for the lock word they take and give back. Only `create` and `recover`
//! write a store; `map` writes its picture, never over an input, a store or (without
//! `--force`) an existing file.
//! The `--json` shapes are documented in `docs/cli.md`.

mod check;
mod dump;
mod map;
mod output;
mod sizes;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use mmheap::inspect::{Snapshot, View};
use mmheap::{Error, MappedManager, Options, RecoveryReport, SalvageReport};
use serde_json::json;

#[derive(Parser)]
#[command(name = "mmheap", version, about = "Inspect, check and repair mmheap store files")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new store (fails if FILE exists).
    Create {
        file: PathBuf,
        /// Initial size, e.g. 1M, 64MiB, 2gb (default 1 MiB; at least 36 KiB; whole pages).
        #[arg(long, value_parser = sizes::parse_size)]
        size: Option<u64>,
        /// Maximum size the store may grow to, e.g. 1G (default 64 GiB; at most 16 TiB).
        #[arg(long, value_parser = sizes::parse_size)]
        max_size: Option<u64>,
    },
    /// Figures, size classes, attached processes, roots, and whether shutdown was clean.
    Stat {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Full integrity check. Exit 0: sound; 1: problems found; 2: not readable as a store.
    Check {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Reclaim what dead processes left (locks, blocks, references, slots). A damaged store is
    /// refused and left as it was (exit 2); `--salvage` fences the damage off instead. Exit 0:
    /// done and the store is sound; 1: done but the closing check found problems.
    Recover {
        file: PathBuf,
        /// Say what would be done, on a copy, without touching the store.
        #[arg(long)]
        dry_run: bool,
        /// Salvage a damaged store: quarantine what cannot be parsed, keep every block that
        /// roots and channels name whose header checks out, drop references to what is lost.
        /// Needs the store to itself.
        #[arg(long)]
        salvage: bool,
    },
    /// List blocks (offset, size, length, state, references, owner), or show one block.
    Dump {
        file: PathBuf,
        /// Show the block whose header is at this offset (decimal or 0x hex), with a hex dump.
        #[arg(long, value_parser = parse_offset)]
        offset: Option<u64>,
        /// At most this many blocks listed (default 1000), or payload bytes dumped (default 256).
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// The named roots and their blocks.
    Roots { file: PathBuf },
    /// Draw the heap as an SVG picture: address on the axes, colour by state and size class.
    Map {
        file: PathBuf,
        /// Where to write the SVG (a new file; never the store itself).
        #[arg(short, long)]
        output: PathBuf,
        /// Replace OUTPUT if it exists (never a store).
        #[arg(long)]
        force: bool,
        /// Cells per row.
        #[arg(long, default_value_t = 256)]
        columns: u64,
    },
}

/// Parses an offset: decimal, or hex with `0x`.
fn parse_offset(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    match t.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => t.parse().ok(),
    }
    .ok_or_else(|| format!("{s:?} is not an offset (decimal, or hex with 0x)"))
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A progress bar on standard error, drawn only when it is a terminal.
fn progress(total: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

/// A copy of the store. One taken without the lock while processes were alive (unsettled)
/// whose heap does not walk is likely torn by a change in progress: it is taken again, up to
/// three times in all, and a note says that the copy may mix moments.
fn snapshot(file: &Path) -> Result<Snapshot, Error> {
    let mut snap = take(file)?;
    for _ in 1..3 {
        if snap.view() != View::Unsettled || snap.blocks(|_| {}).1.is_none() {
            break;
        }
        snap = take(file)?;
    }
    if snap.view() == View::Unsettled {
        eprintln!("mmheap: note: {}", unsettled(&snap));
    }
    Ok(snap)
}

fn take(file: &Path) -> Result<Snapshot, Error> {
    let bar = progress(0, "reading");
    let snap = Snapshot::take_with_progress(file, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    snap
}

/// Why a copy may mix moments.
fn unsettled(snap: &Snapshot) -> String {
    let why = match snap.info().lock_holder {
        Some(slot) => format!("the living process in slot {slot} kept the store lock for 2 s"),
        None => "the store file is not writable here, so its lock could not be taken".to_owned(),
    };
    format!("{why}: the copy was taken without it while processes were alive, and may mix moments")
}

/// What stops a command: the store's error, or the tool's own (a refused output, sizes).
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Store(#[from] Error),
    #[error("{0}")]
    Refused(String),
}

/// Dies of `SIGPIPE` when standard output is a pipe whose reader has gone (`mmheap dump | head`),
/// quietly, as other Unix tools do: Rust ignores the signal, and `println!` would then panic.
fn die_on_broken_pipe() {
    // SAFETY: `signal` with `SIG_DFL` installs no handler of ours; it runs before any thread
    // is started, and nothing in the tool relies on SIGPIPE being ignored (it writes only to
    // its standard streams, files and the store's mapping; no socket).
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    die_on_broken_pipe();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mmheap: {e}");
            ExitCode::from(2)
        }
    }
}

/// `Options::new()`'s initial size.
const DEFAULT_INITIAL_SIZE: u64 = 1 << 20;

fn run(cmd: Command) -> Result<ExitCode, CliError> {
    match cmd {
        Command::Create { file, size, max_size } => {
            let default_max = Options::new().get_max_size();
            let sizes = sizes::store_sizes(size, max_size, DEFAULT_INITIAL_SIZE, default_max)
                .map_err(CliError::Refused)?;
            sizes.notes.iter().for_each(|n| eprintln!("mmheap: note: {n}"));
            let opts = Options::new().initial_size(sizes.initial).max_size(sizes.max);
            let m = MappedManager::create(&file, &opts)?;
            let s = mmheap::MemoryManager::stats(&m)?;
            println!("created {} ({} now, up to {})", file.display(), human(s.capacity), human(s.max_size));
        }
        Command::Stat { file, json } => stat(&file, json)?,
        Command::Check { file, json } => return Ok(check::run(&file, json)?),
        Command::Recover { file, dry_run, salvage } => return Ok(recover(&file, dry_run, salvage)?),
        Command::Dump { file, offset: Some(off), limit, json } => {
            return Ok(dump::one(&file, off, limit, json)?)
        }
        Command::Dump { file, offset: None, limit, json } => dump::list(&file, limit, json)?,
        Command::Roots { file } => {
            let snap = snapshot(&file)?;
            for r in snap.roots()? {
                println!(
                    "{:<48} block {:#x}  generation {}  {} bytes",
                    r.name, r.offset, r.generation, r.len
                );
            }
        }
        Command::Map { file, output, force, columns } => return map::run(&file, &output, force, columns),
    }
    Ok(ExitCode::SUCCESS)
}

fn stat(file: &Path, json: bool) -> Result<(), Error> {
    let snap = snapshot(file)?;
    let info = snap.info();
    let classes = snap.size_classes();
    let procs = snap.processes();
    let roots = snap.roots();
    if json {
        let errors: Vec<String> = [classes.as_ref().err(), roots.as_ref().err()]
            .into_iter()
            .flatten()
            .map(|e| e.to_string())
            .collect();
        let v = json!({
            "path": file.display().to_string(),
            "store": info,
            "size_classes": classes.as_ref().ok(),
            "processes": procs,
            "roots": roots.as_ref().ok(),
            "errors": errors,
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return Ok(());
    }
    println!("store       {} (format v{})", file.display(), info.format_version);
    println!(
        "capacity    {} of at most {}, grown {} times",
        human(info.capacity),
        human(info.max_size),
        info.growths
    );
    println!("used        {} in {} blocks", human(info.used_bytes), info.live_blocks);
    println!(
        "free        {}, largest free block {}, fragmentation {:.1}%",
        human(info.free_bytes),
        human(info.largest_free),
        info.fragmentation * 100.0
    );
    let dead = procs.iter().filter(|p| !p.alive).count();
    if info.clean {
        println!("shutdown    clean");
    } else {
        println!("shutdown    NOT clean: {dead} dead process(es) left state behind (run `mmheap recover`)");
    }
    match (info.lock_holder, info.view) {
        (None, View::Locked) => println!("lock        free (taken for the copy, and given back)"),
        (None, _) => println!("lock        free"),
        (Some(s), View::DeadHolder) => println!("lock        held by slot {s}, which is dead"),
        (Some(s), _) => println!("lock        held by slot {s}"),
    }
    println!("recoveries  {} ({} dead process(es) reclaimed)", info.recoveries, info.recovered_processes);
    if info.quarantined_bytes > 0 {
        println!(
            "quarantine  {} of damage fenced off by salvage (never handed out)",
            human(info.quarantined_bytes)
        );
    }
    match &classes {
        Ok(classes) => {
            println!("live blocks per size class:");
            for c in classes {
                println!("  <= {:>10}  {:>10} blocks  {:>10}", human(c.max_size), c.blocks, human(c.bytes));
            }
        }
        Err(e) => println!("live blocks per size class: unavailable ({e})"),
    }
    println!("processes ({}):", procs.len());
    for p in &procs {
        let state = if p.alive { "alive" } else { "DEAD" };
        println!("  slot {:>3}  pid {:>8}  {state:<5}  {} holds", p.slot, p.pid, p.holds);
    }
    match &roots {
        Ok(roots) => {
            println!("roots ({}):", roots.len());
            for r in roots {
                println!("  {:<40} block {:#x}  {} bytes", r.name, r.offset, r.len);
            }
        }
        Err(e) => println!("roots: unavailable ({e})"),
    }
    Ok(())
}

fn describe(r: &RecoveryReport) -> String {
    format!(
        "{} dead process(es), {} block(s) freed and {} from caches ({}), {} owner reference(s) and {} hold(s) released",
        r.dead_processes,
        r.blocks_freed,
        r.cached_blocks_freed,
        human(r.bytes_freed),
        r.owner_refs_released,
        r.holds_released
    )
}

fn describe_salvage(r: &SalvageReport) -> Vec<String> {
    let mut lines = vec![format!("recovery: {}", describe(&r.recovery))];
    for &(offset, size) in &r.quarantined {
        lines.push(format!("quarantined {} at {offset:#x}", human(size)));
    }
    for d in &r.dropped {
        lines.push(format!("dropped {} {:?}: it named {:#x}, which is lost", d.kind, d.name, d.target));
    }
    for b in &r.bordering {
        lines.push(format!(
            "kept {} {:?} ({:#x}): a quarantined range starts where it ends; if its size was what was hit, its last bytes are there",
            b.kind, b.name, b.target
        ));
    }
    for name in &r.renamed {
        lines.push(format!("renamed a damaged name to {name:?}"));
    }
    for n in &r.renewed {
        lines.push(format!(
            "renewed {} {:?} ({:#x}): its generation or record was damaged; its old handles are stale",
            n.kind, n.name, n.target
        ));
    }
    for n in &r.resized {
        lines.push(format!(
            "gave {} {:?} ({:#x}) back the size a damaged header cut short",
            n.kind, n.name, n.target
        ));
    }
    if r.key_restored {
        lines.push("the store's key was damaged: restored from the blocks' check words".to_owned());
    }
    if !r.found_damage() {
        lines.push("no damage found".to_owned());
    }
    lines
}

fn recover(file: &Path, dry_run: bool, salvage: bool) -> Result<ExitCode, Error> {
    if dry_run {
        let mut snap = snapshot(file)?;
        match salvage {
            true => describe_salvage(&snap.salvage_dry_run()?).iter().for_each(|l| println!("would do: {l}")),
            false => println!("would reclaim: {}", describe(&snap.recover_dry_run()?)),
        }
        return Ok(ExitCode::SUCCESS);
    }
    if salvage {
        describe_salvage(&MappedManager::salvage(file)?).iter().for_each(|l| println!("{l}"));
    } else {
        match MappedManager::recover_file(file) {
            Ok(r) => println!("reclaimed: {}", describe(&r)),
            Err(e @ Error::Corrupt { .. }) => {
                eprintln!("mmheap: {e}");
                eprintln!(
                    "mmheap: the store is damaged, not only interrupted; it was left as it was. \
                     `mmheap recover --salvage` fences the damage off (see `mmheap check`)."
                );
                return Ok(ExitCode::from(2));
            }
            Err(e) => return Err(e),
        }
    }
    let report = MappedManager::open(file)?.check()?;
    for p in &report.problems {
        println!("problem at {:#x}: {}", p.offset, p.what);
    }
    println!("check: {} problem(s)", report.problems.len());
    Ok(if report.is_sound() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse_in_decimal_and_hex() {
        assert_eq!(parse_offset("4096"), Ok(4096));
        assert_eq!(parse_offset("0x8000"), Ok(0x8000));
        assert_eq!(parse_offset("0X8a00"), Ok(0x8a00));
        assert!(parse_offset("64K").is_err());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(64 << 30), "64.0 GiB");
    }
}
