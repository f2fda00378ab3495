//! `mmheap map`: the heap as a picture. The store is cut into at most `columns x 128` cells of
//! a power-of-two number of bytes, in rows of readable height, addresses on both axes; a cell
//! is painted by what its bytes are (`cells.rs`): metadata, free, or the size class with the
//! most bytes in it, shaded by how much of it is in use. Spans are shaded by the share of
//! their slots in use, so small blocks show where they are and how full their spans are.
//! Legible for millions of blocks: runs of equal cells in a row, and whole rows of one paint,
//! are one rectangle.

mod cells;
mod legend;

use std::fmt::Write;
use std::path::Path;
use std::process::ExitCode;

use mmheap::format::HEAP_START;
use mmheap::inspect::{BlockInfo, BlockKind, SpanInfo, StoreInfo};
use mmheap::Error;

use self::cells::{runs, Cell, Grid, Paint, Run, CLASSES};
use crate::{human, look, output, with_bar, CliError};

/// Most rows of cells, and their height in pixels.
const MAX_ROWS: u64 = 128;
const ROW_PX: u64 = 8;
/// About how wide the cells are in all, in pixels.
const HEAP_PX: u64 = 1024;
/// Fewest and most cells in a row.
pub const COLUMNS: (u64, u64) = (16, 1024);
/// Height of the bar of shares of the store.
const BAR_PX: u64 = 10;
/// A block at least this many cells and pixels wide gets a tick where it starts (narrower
/// ones would streak a picture of a huge store).
const TICKED: (u64, f64) = (4, 8.0);
/// Font size, and the advance of one character of the monospace font (0.6 em and a little).
const FONT: f64 = 11.0;
const CHAR_PX: f64 = 6.7;

/// `mmheap map FILE -o OUTPUT`: exit 0 drawn, 1 drawn only up to where the heap stops walking.
pub fn run(file: &Path, out: &Path, force: bool, columns: u64) -> Result<ExitCode, CliError> {
    output::may_write(out, &[file], force).map_err(CliError::Refused)?;
    // The walk's progress is drawn by `with_bar`'s own thread: the store lock may be held.
    let (info, (blocks, err), (spans, _)) =
        with_bar(|| look(file, |snap| (snap.info(), snap.blocks(|_| {}), snap.spans())))?;
    let heap = Heap { name: file.display().to_string(), info, blocks, spans, stopped: err };
    let drawn = columns.clamp(COLUMNS.0, COLUMNS.1);
    if drawn != columns {
        eprintln!(
            "mmheap: note: --columns {columns} is outside {} to {}: drawing {drawn} cells to a row",
            COLUMNS.0, COLUMNS.1
        );
    }
    let svg = render(&heap, drawn);
    output::write_new(out, &[file], force, svg.as_bytes()).map_err(CliError::Refused)?;
    println!("wrote {} ({})", out.display(), crate::count(heap.blocks.len() as u64, "block"));
    match &heap.stopped {
        Some(e) => {
            let at = heap.walked_end();
            eprintln!("mmheap: the heap could not be walked past {at:#x} ({e}): drawn up to there");
            Ok(ExitCode::from(1))
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

/// What the picture is drawn from.
pub struct Heap {
    pub name: String,
    pub info: StoreInfo,
    /// Blocks (and slots) in address order, as far as the heap walks.
    pub blocks: Vec<BlockInfo>,
    pub spans: Vec<SpanInfo>,
    /// Why the walk stopped before the heap's end, if it did.
    pub stopped: Option<Error>,
}

impl Heap {
    /// Where the walked blocks end.
    fn walked_end(&self) -> u64 {
        self.blocks
            .iter()
            .filter(|b| b.kind != BlockKind::Slot)
            .map(|b| b.offset.saturating_add(b.size))
            .max()
            .unwrap_or(HEAP_START)
    }
}

/// Where things are in the picture, in pixels, and what a cell is.
struct Layout {
    columns: u64,
    rows: u64,
    cell_bytes: u64,
    cell_px: u64,
    /// Hex digits of an address.
    digits: usize,
    left: u64,
    /// Where the bar of shares is, under the header's lines.
    bar_y: u64,
    top: u64,
}

impl Layout {
    fn new(capacity: u64, columns: u64, header_lines: u64) -> Layout {
        let cell_bytes = capacity.div_ceil(columns * MAX_ROWS).next_power_of_two().max(16);
        let digits = (64 - capacity.saturating_sub(1).leading_zeros()).div_ceil(4).max(6) as usize;
        let bar_y = 16 + 18 * header_lines;
        Layout {
            columns,
            rows: capacity.div_ceil(cell_bytes * columns),
            cell_bytes,
            cell_px: (HEAP_PX / columns).max(1),
            digits,
            left: 20 + text_px(digits + 2),
            bar_y,
            top: bar_y + BAR_PX + 44,
        }
    }

    fn right(&self) -> u64 {
        self.left + self.columns * self.cell_px
    }

    fn bottom(&self) -> u64 {
        self.top + self.rows * ROW_PX
    }
}

/// Pixels `chars` characters take.
fn text_px(chars: usize) -> u64 {
    (chars as f64 * CHAR_PX).ceil() as u64
}

/// Renders the SVG.
pub fn render(heap: &Heap, columns: u64) -> String {
    let capacity = heap.info.capacity.max(HEAP_START);
    let lines = header(heap);
    let l = Layout::new(capacity, columns, lines.len() as u64);
    let walked_end = if heap.stopped.is_some() { heap.walked_end() } else { u64::MAX };
    let grid = Grid::new(capacity, l.cell_bytes, &heap.blocks, &heap.spans, walked_end);
    let (paints, totals) = (grid.paints(), grid.totals());
    let legend_x = l.right() + 32;
    let (legend, legend_bottom) = legend::draw(legend_x, l.top, &paints, &totals);
    let width = legend_x + legend::WIDTH;
    let height = l.bottom().max(legend_bottom) + 24;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="DejaVu Sans Mono, monospace" font-size="{FONT}">"#
    );
    svg.push_str(legend::DEFS);
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (i, (text, colour)) in lines.iter().enumerate() {
        let (y, size) = (22 + 18 * i, if i == 0 { 15 } else { 12 });
        let _ = writeln!(
            svg,
            r#"<text x="10" y="{y}" font-size="{size}" fill="{colour}">{}</text>"#,
            escape(text)
        );
    }
    shares(&mut svg, &l, &totals, capacity);
    axes(&mut svg, &l);
    cells(&mut svg, &l, &runs(&paints, columns), capacity);
    starts(&mut svg, &l, &heap.blocks);
    svg.push_str(&legend);
    svg.push_str("</svg>\n");
    svg
}

/// The lines above the picture, with their colour: what is where, in sizes people read.
fn header(heap: &Heap) -> Vec<(String, &'static str)> {
    let info = &heap.info;
    let mut lines = vec![(
        format!(
            "{}: {} in use in {} blocks, {} free, of {}",
            heap.name,
            human(info.used_bytes),
            thousands(info.live_blocks),
            human(info.free_bytes),
            human(info.capacity)
        ),
        "black",
    )];
    let free: Vec<u64> =
        heap.blocks.iter().filter(|b| b.free && b.kind == BlockKind::Block).map(|b| b.size).collect();
    let mut figures = format!(
        "free space in {} piece(s), the largest {} (fragmentation {:.0}%)",
        thousands(free.len() as u64),
        human(free.iter().copied().max().unwrap_or(0)),
        info.fragmentation * 100.0
    );
    if !heap.spans.is_empty() {
        let (used, slots) = heap.spans.iter().fold((0, 0), |(u, n), s| (u + s.used, n + s.slots));
        let _ = write!(
            figures,
            "; {} span(s) of small blocks ({}), {} of their slots in use",
            thousands(heap.spans.len() as u64),
            human(heap.spans.iter().map(|s| s.size).sum()),
            percent(used, slots)
        );
    }
    lines.push((figures, "#333333"));
    if let Some(e) = &heap.stopped {
        let at = heap.walked_end();
        lines.push((
            format!("the heap could not be walked past {at:#x} ({e}): the rest is hatched"),
            "#b2182b",
        ));
    }
    lines
}

/// Address labels: of each row's first byte on the left, of the offset in the row on top,
/// spaced so that they never overlap.
fn axes(svg: &mut String, l: &Layout) {
    let top_text = |c: u64| format!("+{:#x}", c * l.cell_bytes);
    let widest = text_px(top_text(l.columns - 1).len());
    let mut step = 1;
    while step * l.cell_px < widest + 12 {
        step *= 2;
    }
    for c in (0..l.columns).step_by(step as usize) {
        let x = l.left + c * l.cell_px;
        let _ = writeln!(svg, r#"<text x="{x}" y="{}">{}</text>"#, l.top - 9, top_text(c));
        let _ = writeln!(svg, r##"<path d="M{x}.5 {}v5" stroke="#888"/>"##, l.top - 6);
    }
    let mut every = 1;
    while every * ROW_PX < 28 {
        every *= 2;
    }
    for r in (0..l.rows).step_by(every as usize) {
        let y = l.top + r * ROW_PX;
        let addr = r * l.cell_bytes * l.columns;
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{addr:#0w$x}</text>"#,
            l.left - 8,
            y + ROW_PX / 2 + 4,
            w = l.digits + 2
        );
        let _ = writeln!(svg, r##"<path d="M{} {y}.5h5" stroke="#888"/>"##, l.left - 6);
    }
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="{}" fill="#555">one cell = {}, one row = {}; addresses grow left to right, top to bottom</text>"##,
        l.left,
        l.top - 28,
        human(l.cell_bytes),
        human(l.cell_bytes * l.columns)
    );
}

/// The cells, one group per paint (the attributes let a reader of the file find its scale).
fn cells(svg: &mut String, l: &Layout, runs: &[Run], capacity: u64) {
    let _ = writeln!(
        svg,
        r##"<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="#bbb"/>"##,
        l.left as f64 - 0.5,
        l.top as f64 - 0.5,
        l.columns * l.cell_px + 1,
        l.rows * ROW_PX + 1
    );
    let _ = writeln!(
        svg,
        r#"<g id="cells" data-x="{}" data-y="{}" data-cell-width="{}" data-row-height="{ROW_PX}" data-cell-bytes="{}" data-columns="{}" data-capacity="{capacity}">"#,
        l.left, l.top, l.cell_px, l.cell_bytes, l.columns
    );
    let mut by_paint: Vec<&Run> = runs.iter().collect();
    by_paint.sort_by_key(|r| r.paint);
    let mut current: Option<Paint> = None;
    for r in by_paint {
        if current != Some(r.paint) {
            if current.is_some() {
                svg.push_str("</g>\n");
            }
            let name = escape(&r.paint.name());
            let _ =
                writeln!(svg, r#"<g fill="{}" data-paint="{name}"><title>{name}</title>"#, r.paint.fill());
            current = Some(r.paint);
        }
        let _ = writeln!(
            svg,
            r#"<rect x="{}" y="{}" width="{}" height="{}"/>"#,
            l.left + r.column * l.cell_px,
            l.top + r.row * ROW_PX,
            r.width * l.cell_px,
            r.height * ROW_PX
        );
    }
    if current.is_some() {
        svg.push_str("</g>\n");
    }
    svg.push_str("</g>\n");
}

/// A bar as wide as the cells: the store's bytes by what they are, in the cells' colours.
fn shares(svg: &mut String, l: &Layout, t: &Cell, capacity: u64) {
    let mut parts = vec![(Paint::Meta, t.meta)];
    for (class, &bytes) in t.used.iter().enumerate() {
        parts.push((Paint::Used { class: class as u8, level: 4 }, bytes));
    }
    let room = t.room.iter().sum();
    parts.extend([
        (Paint::Used { class: 0, level: 0 }, room),
        (Paint::Quarantined, t.quarantined),
        (Paint::Unwalked, t.unwalked),
        (Paint::Free, t.free),
    ]);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="end">the store</text>"#,
        l.left - 8,
        l.bar_y + BAR_PX
    );
    let (width, mut x) = ((l.columns * l.cell_px) as f64, l.left as f64);
    for (paint, bytes) in parts.into_iter().filter(|p| p.1 > 0.0) {
        let w = bytes / capacity as f64 * width;
        let what = match paint {
            Paint::Used { level: 0, .. } => "slots of spans not in use".to_owned(),
            Paint::Used { class, .. } => format!("in use {}", CLASSES[class as usize].2),
            other => other.name(),
        };
        let _ = writeln!(
            svg,
            r#"<rect x="{x:.1}" y="{}" width="{w:.1}" height="{BAR_PX}" fill="{}"><title>{}</title></rect>"#,
            l.bar_y,
            paint.fill(),
            escape(&format!(
                "{what}: {} ({})",
                human(bytes.round() as u64),
                percent(bytes.round() as u64, capacity)
            ))
        );
        x += w;
    }
}

/// A white tick where each block wide enough in the picture starts, so that neighbours of one
/// size class are told apart.
fn starts(svg: &mut String, l: &Layout, blocks: &[BlockInfo]) {
    let row_bytes = l.cell_bytes * l.columns;
    let px = |bytes: u64| bytes as f64 / l.cell_bytes as f64 * l.cell_px as f64;
    let mut d = String::new();
    let ticked = |b: &&BlockInfo| {
        !b.free && b.kind != BlockKind::Slot && b.size >= TICKED.0 * l.cell_bytes && px(b.size) >= TICKED.1
    };
    for b in blocks.iter().filter(ticked) {
        let x = l.left as f64 + px(b.offset % row_bytes);
        let _ = write!(d, "M{:.1} {}v{ROW_PX}", x.floor() + 0.5, l.top + b.offset / row_bytes * ROW_PX);
    }
    if !d.is_empty() {
        let _ = writeln!(svg, r#"<path d="{d}" stroke="white" stroke-opacity="0.8"/>"#);
    }
}

/// `part` of `whole` in whole percents, but never 0% or 100% when it is not.
fn percent(part: u64, whole: u64) -> String {
    match part as f64 * 100.0 / whole.max(1) as f64 {
        p if p > 0.0 && p < 1.0 => "< 1%".to_owned(),
        p if p > 99.0 && p < 100.0 => "> 99%".to_owned(),
        p => format!("{p:.0}%"),
    }
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// `s` as XML text or attribute value.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn percents_are_never_rounded_to_nothing_or_all() {
        assert_eq!(percent(0, 10), "0%");
        assert_eq!(percent(1, 1000), "< 1%");
        assert_eq!(percent(500, 1000), "50%");
        assert_eq!(percent(999, 1000), "> 99%");
        assert_eq!(percent(7, 7), "100%");
    }

    #[test]
    fn a_small_store_gets_small_cells_and_a_huge_one_large() {
        let small = Layout::new(256 << 10, 256, 2);
        assert_eq!((small.cell_bytes, small.rows), (16, 64));
        let huge = Layout::new(1 << 40, 256, 2);
        assert_eq!((huge.cell_bytes, huge.rows), (32 << 20, 128));
        assert_eq!(huge.digits, 10);
    }
}
