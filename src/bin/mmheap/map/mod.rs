//! The heap as a picture: one cell per fixed number of bytes, rows of cells in address order,
//! coloured by what the cell holds. Legible for millions of blocks because blocks are
//! aggregated into at most `columns x 256` cells and runs of equal cells in a row are drawn as
//! one rectangle.

use std::fmt::Write;

use mmheap::format::{HEAP_START, SENTINEL_SIZE};
use mmheap::inspect::{BlockInfo, StoreInfo};

const CELL_PX: u64 = 3;
const MAX_ROWS: u64 = 256;
const LEFT: u64 = 120;
const TOP: u64 = 70;
const LEGEND_W: u64 = 330;

/// Size classes for colour: upper bound of the block size and its colour.
const CLASSES: [(u64, &str, &str); 8] = [
    (64, "#2166ac", "≤ 64 B"),
    (256, "#4393c3", "≤ 256 B"),
    (1 << 10, "#1b9e77", "≤ 1 KiB"),
    (4 << 10, "#66a61e", "≤ 4 KiB"),
    (16 << 10, "#e6ab02", "≤ 16 KiB"),
    (64 << 10, "#d95f02", "≤ 64 KiB"),
    (1 << 20, "#c51b7d", "≤ 1 MiB"),
    (u64::MAX, "#7b3294", "> 1 MiB"),
];
const META: &str = "#4d4d4d";
const FREE: &str = "#f0f0f0";

#[derive(Clone, Copy, Default)]
struct Cell {
    meta: u64,
    free: u64,
    /// Used bytes in the cell per size class.
    used: [u64; CLASSES.len()],
}

fn class_of(size: u64) -> usize {
    CLASSES.iter().position(|(max, _, _)| size <= *max).unwrap_or(CLASSES.len() - 1)
}

fn hex_rgb(c: &str) -> (u8, u8, u8) {
    let v = u32::from_str_radix(&c[1..], 16).unwrap_or(0);
    ((v >> 16) as u8, (v >> 8) as u8, v as u8)
}

/// `a` over `b` by `f` in 0..=1.
fn blend(a: &str, b: &str, f: f64) -> String {
    let ((ar, ag, ab), (br, bg, bb)) = (hex_rgb(a), hex_rgb(b));
    let mix = |x: u8, y: u8| (x as f64 * f + y as f64 * (1.0 - f)).round() as u8;
    format!("#{:02x}{:02x}{:02x}", mix(ar, br), mix(ag, bg), mix(ab, bb))
}

impl Cell {
    /// Metadata if that is most of the cell; else the colour of the size class with the most
    /// used bytes in it, paler as the cell is less used (in quarters, so that runs merge).
    fn colour(&self) -> String {
        let used: u64 = self.used.iter().sum();
        let total = self.meta + used + self.free;
        if total == 0 || self.meta * 2 >= total {
            return META.to_owned();
        }
        if used == 0 {
            return FREE.to_owned();
        }
        let class = (0..CLASSES.len()).max_by_key(|&c| self.used[c]).unwrap_or(0);
        let f = ((used as f64 / (used + self.free) as f64) * 4.0).ceil() / 4.0;
        blend(CLASSES[class].1, FREE, f)
    }
}

fn add(cells: &mut [Cell], cell_bytes: u64, start: u64, end: u64, mut put: impl FnMut(&mut Cell, u64)) {
    let mut at = start;
    while at < end {
        let i = (at / cell_bytes) as usize;
        let cell_end = ((i as u64 + 1) * cell_bytes).min(end);
        if let Some(c) = cells.get_mut(i) {
            put(c, cell_end - at);
        }
        at = cell_end;
    }
}

/// Renders the SVG.
pub fn render(name: &str, info: &StoreInfo, blocks: &[BlockInfo], columns: u64) -> String {
    let capacity = info.capacity.max(1);
    let cell_bytes = capacity.div_ceil(columns * MAX_ROWS).next_power_of_two().max(16);
    let rows = capacity.div_ceil(cell_bytes * columns);
    let mut cells = vec![Cell::default(); (rows * columns) as usize];
    add(&mut cells, cell_bytes, 0, HEAP_START, |c, n| c.meta += n);
    add(&mut cells, cell_bytes, capacity - SENTINEL_SIZE, capacity, |c, n| c.meta += n);
    for b in blocks {
        let class = class_of(b.size);
        add(&mut cells, cell_bytes, b.offset, b.offset + b.size, |c, n| {
            if b.free {
                c.free += n;
            } else {
                c.used[class] += n;
            }
        });
    }
    let width = LEFT + columns * CELL_PX + 20 + LEGEND_W;
    let height = (TOP + rows * CELL_PX + 40).max(TOP + 360);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" font-size="11">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="10" y="20" font-size="14">{}: {} blocks, {} of {} bytes used</text>"#,
        escape(name),
        info.live_blocks,
        info.used_bytes,
        info.capacity
    );
    let _ = writeln!(
        svg,
        r#"<text x="10" y="38">one cell = {} bytes; a row = {} bytes; address grows left to right, top to bottom</text>"#,
        cell_bytes,
        cell_bytes * columns
    );
    for c in (0..columns).step_by((columns / 4).max(1) as usize) {
        let x = LEFT + c * CELL_PX;
        let _ = writeln!(svg, r#"<text x="{x}" y="{}">+{:#x}</text>"#, TOP - 6, c * cell_bytes);
    }
    let label_every = (rows / 16).max(1);
    for r in 0..rows {
        let y = TOP + r * CELL_PX;
        if r % label_every == 0 {
            let _ = writeln!(
                svg,
                r#"<text x="10" y="{}">{:#012x}</text>"#,
                y + CELL_PX,
                r * cell_bytes * columns
            );
        }
        draw_row(&mut svg, &cells[(r * columns) as usize..((r + 1) * columns) as usize], y);
    }
    legend(&mut svg, LEFT + columns * CELL_PX + 20);
    svg.push_str("</svg>\n");
    svg
}

/// One row, with runs of equal colour merged into one rectangle.
fn draw_row(svg: &mut String, row: &[Cell], y: u64) {
    let mut start = 0;
    let colours: Vec<String> = row.iter().map(Cell::colour).collect();
    for i in 1..=colours.len() {
        if i == colours.len() || colours[i] != colours[start] {
            let _ = writeln!(
                svg,
                r#"<rect x="{}" y="{y}" width="{}" height="{CELL_PX}" fill="{}"/>"#,
                LEFT + start as u64 * CELL_PX,
                (i - start) as u64 * CELL_PX,
                colours[start]
            );
            start = i;
        }
    }
}

fn legend(svg: &mut String, x: u64) {
    let mut y = TOP;
    let mut item = |svg: &mut String, colour: &str, text: &str| {
        let _ = writeln!(
            svg,
            r##"<rect x="{x}" y="{}" width="14" height="14" fill="{colour}" stroke="#999"/>"##,
            y
        );
        let _ = writeln!(svg, r#"<text x="{}" y="{}">{}</text>"#, x + 20, y + 11, escape(text));
        y += 20;
    };
    item(svg, META, "metadata (superblock, index, slots, roots)");
    item(svg, FREE, "free");
    for (_, colour, label) in CLASSES {
        item(svg, colour, &format!("used, blocks {label}"));
    }
    item(svg, &blend(CLASSES[2].1, FREE, 0.5), "paler: cell partly free");
    let _ = writeln!(svg, r#"<text x="{x}" y="{}">a cell takes the colour of the size</text>"#, y + 12);
    let _ = writeln!(svg, r#"<text x="{x}" y="{}">class with most used bytes in it</text>"#, y + 26);
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
