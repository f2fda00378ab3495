//! `mmheap map`: the picture shows where the memory is, how full the spans are and where the
//! holes are. Stores are filled by this process and held open while the tool (another process)
//! draws them; the SVG is then read back: its cells (`<g id="cells">`, one group per paint,
//! runs of equal cells as one rectangle), its axis labels and its title.
//!
//! `MMHEAP_MAP_DIR=dir cargo test --features cli --test map pictures` leaves the pictures of a
//! small, a fragmented and (with `MMHEAP_MAP_BIG=1`) a 1,000,000-block store in `dir`, for a
//! person to look at.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mmheap::inspect::{BlockKind, Snapshot};
use mmheap::{MappedManager, MemoryBlock, MemoryManager, Options};
use regex::Regex;

fn mmheap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmheap")).args(args).output().expect("run mmheap")
}

/// Draws `store` into `svg` (replacing it) with `extra` arguments; returns the exit code and
/// the picture.
fn draw(store: &Path, svg: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["map", store.to_str().unwrap(), "-o", svg.to_str().unwrap(), "--force"];
    args.extend_from_slice(extra);
    let o = mmheap(&args);
    let text = std::fs::read_to_string(svg).unwrap_or_default();
    (o.status.code().unwrap_or(-1), text, String::from_utf8_lossy(&o.stderr).into_owned())
}

/// A store with blocks as a program makes them: 70% of at most 64 bytes (slots of spans), 20% of
/// 200 B to 1.4 KiB, 10% of 2 to 7 KiB, and one in a hundred of 10 to 90 KiB; a third of them
/// freed as it goes. Returns the blocks that are kept.
fn filled(m: &MappedManager, n: u64) -> Vec<MemoryBlock> {
    let mut keep = Vec::with_capacity(n as usize);
    for i in 0..n {
        let b = m.allocate(common::program_size(i)).expect("allocate");
        if i % 3 != 0 {
            keep.push(b);
        }
    }
    keep
}

/// A store with holes everywhere: blocks of all sizes, then most of the small ones and every
/// other larger one freed, so spans are partly full and free space is cut into pieces.
fn fragmented(m: &MappedManager, n: u64) -> Vec<MemoryBlock> {
    let all = filled(m, n);
    all.into_iter()
        .enumerate()
        .filter(|(i, b)| match b.len() <= 64 {
            true => i % 5 == 0 || (i / 2000) % 3 == 0,
            false => i % 2 == 0,
        })
        .map(|(_, b)| b)
        .collect()
}

fn store(dir: &Path, name: &str, max: u64) -> (PathBuf, MappedManager) {
    let path = dir.join(name);
    let m = MappedManager::create(&path, &Options::new().max_size(max)).expect("create");
    (path, m)
}

/// The picture's cells: (paint, x, y, width, height) of each rectangle in `<g id="cells">`.
struct Cells {
    rects: Vec<(String, f64, f64, f64, f64)>,
}

impl Cells {
    fn of(svg: &str) -> Cells {
        let start = svg.find(r#"<g id="cells""#).expect("a cells group");
        let end = start + svg[start..].find("</g>\n</g>").expect("the cells group ends");
        let group = Regex::new(r#"<g fill="[^"]*" data-paint="([^"]*)">"#).unwrap();
        let rect =
            Regex::new(r#"<rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"/>"#).unwrap();
        let mut rects = Vec::new();
        let mut paint = String::new();
        for line in svg[start..end].lines() {
            if let Some(c) = group.captures(line) {
                paint = c[1].to_owned();
            } else if let Some(c) = rect.captures(line) {
                let n = |i: usize| c[i].parse::<f64>().unwrap();
                rects.push((paint.clone(), n(1), n(2), n(3), n(4)));
            }
        }
        Cells { rects }
    }

    /// Area of the cells whose paint starts with `prefix`.
    fn area(&self, prefix: &str) -> f64 {
        self.rects.iter().filter(|r| r.0.starts_with(prefix)).map(|r| r.3 * r.4).sum()
    }

    /// The paint of the cell at picture coordinates (x, y).
    fn paint_at(&self, x: f64, y: f64) -> Option<&str> {
        self.rects
            .iter()
            .find(|r| r.1 <= x && x < r.1 + r.3 && r.2 <= y && y < r.2 + r.4)
            .map(|r| r.0.as_str())
    }
}

/// What would stop an SVG reader: a `<` that starts no tag, an `&` that starts no entity.
fn well_formed(svg: &str) {
    let stray = Regex::new(r"<[^a-zA-Z/]|&[^a-z#]").unwrap();
    assert!(
        !stray.is_match(svg),
        "not well-formed: {:?}",
        stray.find(svg).map(|m| &svg[m.start()..m.start() + 40])
    );
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
}

/// A number attribute of the cells group (`data-cell-bytes`, ...).
fn attr(svg: &str, name: &str) -> f64 {
    let re = Regex::new(&format!(r#"<g id="cells"[^>]* {name}="([\d.]+)""#)).unwrap();
    re.captures(svg).unwrap_or_else(|| panic!("no {name}"))[1].parse().unwrap()
}

/// The texts of the picture with their position and font size: (x, y, size, anchor, text).
fn texts(svg: &str) -> Vec<(f64, f64, f64, String, String)> {
    let re = Regex::new(r#"<text x="([\d.]+)" y="([\d.]+)"([^>]*)>([^<]*)</text>"#).unwrap();
    let size = Regex::new(r#"font-size="([\d.]+)""#).unwrap();
    let anchor = Regex::new(r#"text-anchor="(\w+)""#).unwrap();
    let base: f64 = size.captures(svg).map_or(11.0, |c| c[1].parse().unwrap());
    re.captures_iter(svg)
        .map(|c| {
            let s = size.captures(&c[3]).map_or(base, |s| s[1].parse().unwrap());
            let a = anchor.captures(&c[3]).map_or("start".to_owned(), |a| a[1].to_owned());
            (c[1].parse().unwrap(), c[2].parse().unwrap(), s, a, c[4].to_owned())
        })
        .collect()
}

/// The horizontal extent of a text in a monospace font (0.6 em a character, as DejaVu Sans
/// Mono and most others; a little more to be safe).
fn extent(x: f64, size: f64, anchor: &str, text: &str) -> (f64, f64) {
    let w = text.chars().count() as f64 * size * 0.62;
    match anchor {
        "end" => (x - w, x),
        "middle" => (x - w / 2.0, x + w / 2.0),
        _ => (x, x + w),
    }
}

#[test]
fn spans_are_drawn_in_the_colour_of_their_slots() {
    let dir = tempfile::tempdir().unwrap();
    let (path, m) = store(dir.path(), "s.mmheap", 1 << 30);
    let _keep = filled(&m, 20_000);
    let svg_path = dir.path().join("s.svg");
    let (code, svg, err) = draw(&path, &svg_path, &[]);
    assert_eq!(code, 0, "{err}");
    well_formed(&svg);
    let cells = Cells::of(&svg);
    // Every span's middle is drawn as a span of slots of at most 64 bytes.
    let snap = Snapshot::take(&path).unwrap();
    let (blocks, walk) = snap.blocks(|_| {});
    assert!(walk.is_none());
    let spans: Vec<_> = blocks.iter().filter(|b| b.kind == BlockKind::Span).collect();
    assert!(spans.len() >= 4, "{} spans", spans.len());
    let (cell_bytes, columns) = (attr(&svg, "data-cell-bytes"), attr(&svg, "data-columns"));
    let (left, top) = (attr(&svg, "data-x"), attr(&svg, "data-y"));
    let (cell_w, row_h) = (attr(&svg, "data-cell-width"), attr(&svg, "data-row-height"));
    for s in &spans {
        let cell = ((s.offset + s.size / 2) as f64 / cell_bytes).floor();
        let (col, row) = (cell % columns, (cell / columns).floor());
        let paint = cells.paint_at(left + (col + 0.5) * cell_w, top + (row + 0.5) * row_h);
        assert!(paint.is_some_and(|p| p.starts_with("used ≤ 64 B")), "span at {:#x}: {paint:?}", s.offset);
    }
    // And they take as much of the picture as of the heap.
    let heap = attr(&svg, "data-capacity");
    let span_share = spans.len() as f64 * 65536.0 / heap;
    let drawn: f64 = cells.rects.iter().map(|r| r.3 * r.4).sum();
    assert!(cells.rects.len() as f64 <= columns * 128.0, "{} rectangles", cells.rects.len());
    let small_share = cells.area("used ≤ 64 B") / drawn;
    assert!(small_share > span_share * 0.8, "≤ 64 B: {small_share:.3} of the picture, spans {span_share:.3}");
}

#[test]
fn top_labels_do_not_overlap_and_rows_are_readable() {
    let dir = tempfile::tempdir().unwrap();
    let (path, m) = store(dir.path(), "s.mmheap", 1 << 30);
    let _keep = filled(&m, 3000);
    for columns in ["16", "64", "256", "1024"] {
        let svg_path = dir.path().join(format!("c{columns}.svg"));
        let (code, svg, err) = draw(&path, &svg_path, &["--columns", columns]);
        assert_eq!(code, 0, "{err}");
        well_formed(&svg);
        assert!(attr(&svg, "data-row-height") >= 8.0, "rows of {} px", attr(&svg, "data-row-height"));
        let top = attr(&svg, "data-y");
        let mut boxes: Vec<(f64, f64, String)> = texts(&svg)
            .into_iter()
            .filter(|t| t.1 < top && t.1 > top - 20.0)
            .map(|(x, _, size, anchor, text)| {
                let (a, b) = extent(x, size, &anchor, &text);
                (a, b, text)
            })
            .collect();
        assert!(boxes.len() >= 2, "--columns {columns}: {} top labels", boxes.len());
        boxes.sort_by(|a, b| a.0.total_cmp(&b.0));
        for w in boxes.windows(2) {
            assert!(w[0].1 + 4.0 <= w[1].0, "--columns {columns}: {:?} overlaps {:?}", w[0], w[1]);
        }
    }
}

#[test]
fn the_title_says_sizes_as_people_read_them() {
    let dir = tempfile::tempdir().unwrap();
    let (path, m) = store(dir.path(), "s.mmheap", 1 << 30);
    let _keep = filled(&m, 3000);
    let (code, svg, err) = draw(&path, &dir.path().join("s.svg"), &[]);
    assert_eq!(code, 0, "{err}");
    let title = &texts(&svg)[0].4;
    // What follows the store's name.
    let title = title.rsplit_once("s.mmheap: ").map_or(title.as_str(), |(_, figures)| figures);
    let human = Regex::new(r"\d+(\.\d)? (B|KiB|MiB|GiB)\b").unwrap();
    assert!(human.find_iter(title).count() >= 2, "{title}");
    let raw = Regex::new(r"\d{5,}").unwrap();
    assert!(!raw.is_match(title), "a raw byte count in {title:?}");
}

#[test]
fn a_heap_that_does_not_walk_to_its_end_is_drawn_as_far_as_it_goes_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corrupt.mmheap");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/golden-v1.mmheap");
    let mut bytes = std::fs::read(fixture).unwrap();
    // corrupt.recipe's beta-size-overlaps-next: "beta" (0x8960) claims 0xa00 bytes, so the walk
    // finds no header where it then looks (0x9360).
    bytes[0x8960..0x8968].copy_from_slice(&0xa00u64.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    let (code, svg, err) = draw(&path, &dir.path().join("c.svg"), &[]);
    assert_eq!(code, 1, "{err}");
    well_formed(&svg);
    assert!(err.contains("0x9360"), "{err}");
    let cells = Cells::of(&svg);
    assert!(cells.area("used") > 0.0 && cells.area("free") > 0.0, "what was walked is drawn");
    assert!(cells.area("not walked") > 0.0, "what was not walked is drawn as such");
    assert!(texts(&svg).iter().any(|t| t.4.contains("0x9360")), "the picture says where the walk stopped");
}

/// Draws a small, a fragmented and (with `MMHEAP_MAP_BIG=1`) a 1,000,000-block store; with
/// `MMHEAP_MAP_DIR` set, the pictures are left there for a person to look at.
#[test]
fn pictures_for_people() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::env::var("MMHEAP_MAP_DIR").map(PathBuf::from).unwrap_or_else(|_| dir.path().to_owned());
    type Fill = fn(&MappedManager, u64) -> Vec<MemoryBlock>;
    let mut stores: Vec<(&str, u64, Fill)> = vec![("small", 300, filled), ("fragmented", 60_000, fragmented)];
    if std::env::var("MMHEAP_MAP_BIG").is_ok_and(|v| v == "1") {
        stores.push(("big", 1_000_000, filled));
    }
    for (name, n, fill) in stores {
        let (path, m) = store(dir.path(), &format!("{name}.mmheap"), 8 << 30);
        let _keep = fill(&m, n);
        let svg = out.join(format!("map-{name}.svg"));
        let (code, _, err) = draw(&path, &svg, &[]);
        assert_eq!(code, 0, "{err}");
        println!("{}", svg.display());
    }
}
