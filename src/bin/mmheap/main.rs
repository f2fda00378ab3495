//! `mmheap`: look inside a store file, check it, recover it, draw it.
//!
//! Read-only commands (`stat`, `check`, `dump`, `roots`, `map`) look at the store in place
//! while they hold its lock, and `recover --dry-run` at a private copy taken under it
//! (`mmheap::inspect::Snapshot`), so that they see one moment of a store in use: they never
//! register as a process of the store or write to it, but for the lock word they take and give
//! back. Only `create` and `recover`
//! write a store; `map` writes its picture, never over an input, a store or (without
//! `--force`) an existing file.
//! The `--json` shapes are documented in `docs/cli.md`.

mod check;
mod dump;
mod map;
mod output;
mod recover;
mod sizes;
mod stat;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use mmheap::inspect::{Snapshot, View};
use mmheap::{Error, MappedManager, Options, UnsafeReason};

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
    /// Figures (live, cached, bookkeeping, free), size classes, attached processes, roots, and
    /// whether shutdown was clean. Exit 0: all read; 1: part of the store could not be read;
    /// 2: not readable as a store.
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
        /// Also free the blocks that only cycles of links keep (`mmheap check` lists them):
        /// what no root, channel, hold or living process reaches through links.
        #[arg(long, conflicts_with_all = ["dry_run", "salvage"])]
        collect_cycles: bool,
        /// Recover a store that another user owns, or that group or others may write (a store
        /// shared by a group); refused by default.
        #[arg(long)]
        allow_shared_permissions: bool,
    },
    /// List blocks and slots (offset, kind, size, length, state, references, owner), or show one.
    /// Exit 0: listed; 1: the walk stopped at damage, or no block starts at --offset; 2: not
    /// readable as a store.
    Dump {
        file: PathBuf,
        /// Show the block whose header is at this offset, or the slot that starts there or that
        /// this id names (decimal or 0x hex), with a hex dump.
        #[arg(long, value_parser = parse_offset)]
        offset: Option<u64>,
        /// At most this many blocks listed (default 1000), or payload bytes dumped (default 256).
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// The named roots and their blocks. Exit 0: listed; 1: the roots cannot be read; 2: not
    /// readable as a store.
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

/// A root's name as the tool prints it: as it is when every character is a visible one or a
/// plain space, else quoted with escapes (`"a\u{1b}[31m"`), so that a name cannot move the
/// cursor, colour the terminal, reverse the text or forge a line of output.
fn shown_name(name: &str) -> String {
    let plain = |c: char| c == ' ' || (!c.is_whitespace() && !c.is_control() && c.escape_debug().len() == 1);
    match name.chars().all(plain) && !name.starts_with('"') {
        true => name.to_owned(),
        false => format!("{name:?}"),
    }
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

/// A progress bar on standard error, drawn only when it is a terminal; nothing is drawn before
/// its first change (so never an empty `0 B/0 B`).
fn progress(total: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total).with_message(what.to_owned());
    match ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes}") {
        Ok(style) => bar.with_style(style.progress_chars("=> ")),
        Err(_) => bar,
    }
}

/// A copy of the store. One taken without the lock while processes were alive (unsettled) may
/// show damage that is a change in progress: while a copy shows damage (its heap does not walk,
/// a root is damaged), it is taken again, up to [`COPIES`] in all. A copy that shows none is
/// used, with a note that it may mix moments; damage that every copy shows alike is damage and
/// is shown; damage that changes from copy to copy is a store being written, and nothing that
/// may be wrong is shown: an error (`StoreChanging`), after a note that says why.
fn snapshot(file: &Path) -> Result<Snapshot, Error> {
    let mut snap = take(file)?;
    if snap.view() != View::Unsettled {
        return Ok(snap);
    }
    let (mut seen, mut alike) = (damage(&snap), true);
    for _ in 1..COPIES {
        if seen.is_empty() {
            break;
        }
        std::thread::sleep(BETWEEN_COPIES);
        snap = take(file)?;
        if snap.view() != View::Unsettled {
            return Ok(snap);
        }
        let now = damage(&snap);
        alike &= now == seen;
        seen = now;
    }
    let why = unsettled(snap.info().lock_holder);
    if !seen.is_empty() && !alike {
        eprintln!(
            "mmheap: {why}: each of {COPIES} copies showed damage, not the same in each, as a store \
             being written does; nothing is shown that may be wrong (look again when it is quiet, \
             or as a user who may write the store)"
        );
        return Err(in_use(&snap));
    }
    eprintln!("mmheap: note: {why}");
    Ok(snap)
}

/// The refusal of a store that changed under every copy: as many processes as it has alive.
fn in_use(snap: &Snapshot) -> Error {
    Error::StoreChanging { processes: snap.processes().iter().filter(|p| p.alive).count() as u64 }
}

/// Copies that may mix moments taken at most while they show damage, and the pause between two.
const COPIES: usize = 5;
pub(crate) const BETWEEN_COPIES: std::time::Duration = std::time::Duration::from_millis(20);

/// The damage a copy shows: where the walk of its heap stops, its damaged roots.
fn damage(snap: &Snapshot) -> Vec<String> {
    let mut out: Vec<String> = snap.blocks(|_| {}).1.map(|e| e.to_string()).into_iter().collect();
    match snap.roots() {
        Ok(roots) => out.extend(
            (roots.iter())
                .filter_map(|r| r.problem.map(|what| format!("{:?} at {:#x}: {what}", r.name, r.offset))),
        ),
        Err(e) => out.push(e.to_string()),
    }
    out
}

/// What `look` makes of the store: inspected in place under its lock when it can be had
/// (`Snapshot::in_place`: a large store costs the walk's memory, not a copy), else of a copy
/// as [`snapshot`] takes it.
fn look<R>(file: &Path, look: impl Fn(&Snapshot) -> R) -> Result<R, Error> {
    let bar = progress(0, "reading");
    let looked = Snapshot::in_place_with_progress(
        file,
        |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        },
        // A copy that may mix moments is taken again by `snapshot`, as often as it says.
        |snap| (snap.view() != View::Unsettled).then(|| look(snap)),
    );
    bar.finish_and_clear();
    match looked? {
        Some(r) => Ok(r),
        None => Ok(look(&snapshot(file)?)),
    }
}

/// Runs `body` with progress bars (on standard error, when it is a terminal) that the heap
/// walks it makes move (`inspect::with_progress`): one per phase (checking, counting,
/// scanning, rebuilding), its length the heap's end, its position how far the walk has come.
/// They are drawn by a thread of their own: a walk may hold the store lock (a recovery, a
/// manager's check), and a terminal that does not take output must not keep it held.
fn with_bar<R>(body: impl FnOnce() -> R) -> R {
    if !std::io::stderr().is_terminal() {
        return body();
    }
    let (tx, rx) = std::sync::mpsc::channel::<(&'static str, u64, u64)>();
    // Made with the stop signals blocked, which it keeps: see `spawn_holding_back_stops`.
    let drawer = spawn_holding_back_stops(move || {
        let mut shown: Option<(&'static str, ProgressBar)> = None;
        for (what, done, total) in rx {
            if shown.as_ref().is_none_or(|(w, _)| *w != what) {
                if let Some((_, bar)) = shown.take() {
                    bar.finish_and_clear();
                }
                shown = Some((what, progress(total, what)));
            }
            if let Some((_, bar)) = &shown {
                bar.set_length(total);
                bar.set_position(done);
            }
        }
        if let Some((_, bar)) = shown {
            bar.finish_and_clear();
        }
    });
    let r = mmheap::inspect::with_progress(
        move |what, done, total| {
            let _ = tx.send((what, done, total));
        },
        body,
    );
    let _ = drawer.join();
    r
}

/// Spawns a thread that never takes the terminal's stop signals (`SIGTSTP`, `SIGTTIN`,
/// `SIGTTOU`). They are sent to the process, and the kernel hands them to a thread that does
/// not block them: a drawing thread must not take one while the main thread holds them back
/// because it holds the store lock (the whole process would stop, the lock held, and every
/// writer of the store with it). The thread is made with them blocked, which it inherits (a
/// thread that blocked them itself could take one before its first instruction), and this
/// thread's mask is put back; the main thread takes them when it does not hold the lock.
fn spawn_holding_back_stops<T: Send + 'static>(
    body: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let _held = mmheap::inspect::hold_stop_signals();
    std::thread::spawn(body)
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
fn unsettled(lock_holder: Option<u32>) -> String {
    let why = match lock_holder {
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

/// Ends the tool with exit 3 and a line on standard error when its standard output cannot be
/// written (a full disk, `>/dev/full`): `println!` panics then, which would say so with a
/// backtrace hint and exit 101. The command's work, if it did any (a store made, a recovery),
/// is done by then; exit 3 says only that its report was lost.
fn fail_quietly_on_lost_output() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = match info.payload().downcast_ref::<String>() {
            Some(m) => m.as_str(),
            None => info.payload().downcast_ref::<&str>().copied().unwrap_or(""),
        };
        if let Some(why) = message.strip_prefix("failed printing to stdout: ") {
            eprintln!("mmheap: cannot write standard output: {why}");
            std::process::exit(3);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    die_on_broken_pipe();
    fail_quietly_on_lost_output();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(CliError::Store(e)) => {
            eprintln!("mmheap: {}", told(&e));
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("mmheap: {e}");
            ExitCode::from(2)
        }
    }
}

/// The store's error as the tool tells it: a refusal of the file names what the tool can do
/// about it (its options, not the library's).
pub(crate) fn told(e: &Error) -> String {
    match e {
        Error::UnsafeFile { path, reason } => {
            let what = match reason {
                UnsafeReason::Symlink => "; give the tool the path it names",
                UnsafeReason::OtherOwner { .. } | UnsafeReason::WritableByOthers { .. } => {
                    " (`mmheap recover --allow-shared-permissions` accepts it)"
                }
                _ => "",
            };
            format!("{} is not opened as a store: {reason}{what}", path.display())
        }
        Error::ReadOnly { path } => format!(
            "{} is read-only here: `mmheap recover` writes it (run it as a user who may);              stat, check, dump, roots and map read it without writing",
            path.display()
        ),
        _ => e.to_string(),
    }
}

/// A store that cannot be read, as a `--json` command prints it on standard output (exit 2).
pub(crate) fn unreadable_json(e: &Error) -> ExitCode {
    println!("{}", serde_json::json!({ "readable": false, "error": told(e) }));
    ExitCode::from(2)
}

/// `Options::new()`'s initial size.
const DEFAULT_INITIAL_SIZE: u64 = 1 << 20;

/// `mmheap roots`: exit 1 if the store is readable but its roots directory is not, or some
/// root is damaged (listed with the others, with what is wrong with it).
fn roots(file: &Path) -> Result<ExitCode, Error> {
    match look(file, |snap| snap.roots())? {
        Ok(roots) => {
            for r in &roots {
                println!("{}", root_line(r));
            }
            let damaged = roots.iter().filter(|r| r.problem.is_some()).count();
            if damaged > 0 {
                eprintln!("mmheap: {} damaged (run `mmheap check`)", count(damaged as u64, "root"));
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("mmheap: the roots cannot be listed: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// One root as `roots` and `stat` list it.
fn root_line(r: &mmheap::inspect::RootInfo) -> String {
    let name = shown_name(&r.name);
    match r.problem {
        None => format!("{name:<48} block {:#x}  generation {}  {} bytes", r.offset, r.generation, r.len),
        Some(what) => format!("{name:<48} block {:#x}  damaged: {what}", r.offset),
    }
}

/// `n` and `what`, plural when `n` is not 1 ("1 block", "2 blocks").
fn count(n: u64, what: &str) -> String {
    match n {
        1 => format!("1 {what}"),
        _ => format!("{n} {what}s"),
    }
}

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
        Command::Stat { file, json } => return Ok(stat::run(&file, json)?),
        Command::Check { file, json } => return Ok(check::run(&file, json)?),
        Command::Recover { file, dry_run, salvage, collect_cycles, allow_shared_permissions } => {
            let trust = Options::new().allow_shared_permissions(allow_shared_permissions);
            return Ok(recover::run(&file, dry_run, salvage, collect_cycles, &trust)?);
        }
        Command::Dump { file, offset: Some(off), limit, json } => {
            return Ok(dump::one(&file, off, limit, json)?)
        }
        Command::Dump { file, offset: None, limit, json } => return Ok(dump::list(&file, limit, json)?),
        Command::Roots { file } => return Ok(roots(&file)?),
        Command::Map { file, output, force, columns } => return map::run(&file, &output, force, columns),
    }
    Ok(ExitCode::SUCCESS)
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

    #[test]
    fn names_that_could_move_the_terminal_are_quoted() {
        assert_eq!(shown_name("config v2"), "config v2");
        assert_eq!(shown_name("données"), "données");
        for raw in ["\x1b[31mred", "tab\there", "line\nforged", "\u{202e}txt.exe", "\"quoted"] {
            let shown = shown_name(raw);
            assert!(shown.starts_with('"') && shown.is_ascii(), "{raw:?} shown as {shown}");
            assert!(!shown.chars().any(|c| c.is_control()), "{shown}");
        }
    }
}
