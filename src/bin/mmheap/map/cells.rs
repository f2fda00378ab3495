//! The heap cut into cells of a power-of-two number of bytes, and what paints each cell.
//!
//! Every byte of the store is counted in one cell as one of: store metadata, free, quarantined,
//! not walked (past where a damaged heap stops walking), or a size class's bytes, *in use* or
//! *room* (a span's slots not in use: reserved for small blocks, not free for others). A span
//! spreads its slots in use evenly over its bytes, so it is shaded by its occupancy.

use mmheap::format::{HEAP_START, SENTINEL_SIZE};
use mmheap::inspect::{BlockInfo, BlockKind, SpanInfo};

/// Size classes for colour: upper bound of the block size (header included; a slot's size for
/// a slot), colour, label. The first is that of slots, the blocks of spans.
pub const CLASSES: [(u64, &str, &str); 8] = [
    (64, "#1f5fb4", "≤ 64 B"),
    (256, "#17a8c4", "≤ 256 B"),
    (1 << 10, "#2a9d3a", "≤ 1 KiB"),
    (4 << 10, "#a3a81a", "≤ 4 KiB"),
    (16 << 10, "#f28e1c", "≤ 16 KiB"),
    (64 << 10, "#d62728", "≤ 64 KiB"),
    (1 << 20, "#9467bd", "≤ 1 MiB"),
    (u64::MAX, "#8c564b", "> 1 MiB"),
];
pub const META: &str = "#7a7a7a";
pub const FREE: &str = "#f1f1ec";
pub const QUARANTINED: &str = "#1a1a1a";
/// A hatch pattern the picture defines.
pub const UNWALKED: &str = "url(#unwalked)";

/// Share of a class's colour (over [`FREE`]) at each occupancy level: 0 is an empty span.
const STRENGTH: [f64; 5] = [0.2, 0.4, 0.6, 0.8, 1.0];
/// What each occupancy level means.
pub const LEVELS: [&str; 5] = ["0%", "≤ 25%", "≤ 50%", "≤ 75%", "> 75%"];

/// What a cell is drawn as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Paint {
    Meta,
    Free,
    Quarantined,
    Unwalked,
    /// The class with the most bytes in the cell, and the share of the cell (not counting
    /// metadata) in use, in quarters rounded up (0: nothing in use, only a span's room).
    Used {
        class: u8,
        level: u8,
    },
}

impl Paint {
    pub fn fill(self) -> String {
        match self {
            Paint::Meta => META.to_owned(),
            Paint::Free => FREE.to_owned(),
            Paint::Quarantined => QUARANTINED.to_owned(),
            Paint::Unwalked => UNWALKED.to_owned(),
            Paint::Used { class, level } => blend(CLASSES[class as usize].1, FREE, STRENGTH[level as usize]),
        }
    }

    /// What the paint means, for people and for the tests that read the picture back.
    pub fn name(self) -> String {
        match self {
            Paint::Meta => "metadata".to_owned(),
            Paint::Free => "free".to_owned(),
            Paint::Quarantined => "quarantined".to_owned(),
            Paint::Unwalked => "not walked".to_owned(),
            Paint::Used { class, level } => {
                format!("used {}, {} in use", CLASSES[class as usize].2, LEVELS[level as usize])
            }
        }
    }
}

/// Bytes of one cell (or of the whole store) by what they are (fractions: a span's bytes in use
/// are its bytes times the share of its slots in use).
#[derive(Clone, Copy, Default)]
pub struct Cell {
    pub meta: f64,
    pub free: f64,
    pub quarantined: f64,
    pub unwalked: f64,
    pub used: [f64; CLASSES.len()],
    /// A span's slots not in use.
    pub room: [f64; CLASSES.len()],
}

impl Cell {
    fn paint(&self) -> Paint {
        let (used, room): (f64, f64) = (self.used.iter().sum(), self.room.iter().sum());
        let total = self.meta + self.free + self.quarantined + self.unwalked + used + room;
        if self.unwalked * 2.0 >= total {
            return Paint::Unwalked;
        }
        if self.meta * 2.0 >= total {
            return Paint::Meta;
        }
        if self.quarantined * 2.0 >= total {
            return Paint::Quarantined;
        }
        if used + room == 0.0 {
            return Paint::Free;
        }
        let bytes = |c: usize| self.used[c] + self.room[c];
        let class = (0..CLASSES.len()).fold(0, |best, c| if bytes(c) > bytes(best) { c } else { best });
        let level = (used * 4.0 / (used + room + self.free)).ceil().clamp(0.0, 4.0);
        Paint::Used { class: class as u8, level: level as u8 }
    }
}

fn class_of(size: u64) -> usize {
    CLASSES.iter().position(|(max, _, _)| size <= *max).unwrap_or(CLASSES.len() - 1)
}

fn hex_rgb(c: &str) -> (u8, u8, u8) {
    let v = c.get(1..).and_then(|h| u32::from_str_radix(h, 16).ok()).unwrap_or(0);
    ((v >> 16) as u8, (v >> 8) as u8, v as u8)
}

/// `a` over `b` by `f` in 0..=1.
pub fn blend(a: &str, b: &str, f: f64) -> String {
    let ((ar, ag, ab), (br, bg, bb)) = (hex_rgb(a), hex_rgb(b));
    let mix = |x: u8, y: u8| (x as f64 * f + y as f64 * (1.0 - f)).round() as u8;
    format!("#{:02x}{:02x}{:02x}", mix(ar, br), mix(ag, bg), mix(ab, bb))
}

/// The cells of a heap of `capacity` bytes, `cell_bytes` each.
pub struct Grid {
    cell_bytes: u64,
    cells: Vec<Cell>,
}

impl Grid {
    /// Counts every byte of the store: `blocks` as walked (up to `walked_end`, past which the
    /// heap is not walked), spans by `spans`.
    pub fn new(
        capacity: u64,
        cell_bytes: u64,
        blocks: &[BlockInfo],
        spans: &[SpanInfo],
        walked_end: u64,
    ) -> Grid {
        let cells = vec![Cell::default(); capacity.div_ceil(cell_bytes) as usize];
        let mut g = Grid { cell_bytes, cells };
        let heap_end = capacity.saturating_sub(SENTINEL_SIZE);
        g.add(0, HEAP_START.min(capacity), |c, n| c.meta += n);
        g.add(heap_end, capacity, |c, n| c.meta += n);
        g.add(walked_end.min(heap_end), heap_end, |c, n| c.unwalked += n);
        let mut spans = spans.iter().peekable();
        for b in blocks.iter().filter(|b| b.kind != BlockKind::Slot) {
            let (start, end) = (b.offset, b.offset.saturating_add(b.size).min(heap_end));
            match b.kind {
                _ if b.free => g.add(start, end, |c, n| c.free += n),
                BlockKind::Quarantined => g.add(start, end, |c, n| c.quarantined += n),
                BlockKind::Page => g.add(start, end, |c, n| c.meta += n),
                BlockKind::Span => {
                    while spans.next_if(|s| s.offset < b.offset).is_some() {}
                    let span = spans.next_if(|s| s.offset == b.offset);
                    // A span whose slots could not be counted is drawn as room.
                    let share = span.map_or(0.0, |s| s.used.min(s.slots) as f64 / s.slots.max(1) as f64);
                    let class = class_of(span.map_or(64, |s| s.slot_size));
                    g.add(start, end, |c, n| {
                        c.used[class] += n * share;
                        c.room[class] += n * (1.0 - share);
                    });
                }
                _ => {
                    let class = class_of(b.size);
                    g.add(start, end, |c, n| c.used[class] += n)
                }
            }
        }
        g
    }

    /// Adds the bytes `start..end` to the cells they fall in.
    fn add(&mut self, start: u64, end: u64, mut put: impl FnMut(&mut Cell, f64)) {
        let mut at = start;
        while at < end {
            let i = at / self.cell_bytes;
            let cell_end = ((i + 1) * self.cell_bytes).min(end);
            if let Some(c) = self.cells.get_mut(i as usize) {
                put(c, (cell_end - at) as f64);
            }
            at = cell_end;
        }
    }

    /// The bytes of the whole store by what they are.
    pub fn totals(&self) -> Cell {
        let mut t = Cell::default();
        for c in &self.cells {
            t.meta += c.meta;
            t.free += c.free;
            t.quarantined += c.quarantined;
            t.unwalked += c.unwalked;
            for k in 0..CLASSES.len() {
                t.used[k] += c.used[k];
                t.room[k] += c.room[k];
            }
        }
        t
    }

    /// The paints of the cells, in address order.
    pub fn paints(&self) -> Vec<Paint> {
        self.cells.iter().map(Cell::paint).collect()
    }
}

/// One rectangle of the picture, in cells: runs of equal cells in a row are one, and so are
/// whole rows of one paint in a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub paint: Paint,
    pub column: u64,
    pub row: u64,
    pub width: u64,
    pub height: u64,
}

/// The rectangles that draw `paints`, `columns` to a row.
pub fn runs(paints: &[Paint], columns: u64) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    for (row, cells) in paints.chunks(columns as usize).enumerate() {
        let row = row as u64;
        let mut start = 0;
        for i in 1..=cells.len() {
            if i < cells.len() && cells[i] == cells[start] {
                continue;
            }
            let run =
                Run { paint: cells[start], column: start as u64, row, width: (i - start) as u64, height: 1 };
            match out.last_mut() {
                Some(last) if run.width == columns && last.width == columns && last.paint == run.paint => {
                    last.height += 1
                }
                _ => out.push(run),
            }
            start = i;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_is_shaded_by_the_share_in_use() {
        let mut c = Cell { free: 300.0, ..Cell::default() };
        c.used[2] = 100.0;
        assert_eq!(c.paint(), Paint::Used { class: 2, level: 1 });
        c.used[0] = 200.0;
        c.room[0] = 200.0;
        // Class 0 has the most bytes (400); 300 of 800 in use.
        assert_eq!(c.paint(), Paint::Used { class: 0, level: 2 });
        let mut span = Cell::default();
        span.room[0] = 64.0;
        assert_eq!(span.paint(), Paint::Used { class: 0, level: 0 });
        // A span with a slot in use in a thousand is not empty.
        span.used[0] = 0.064;
        assert_eq!(span.paint(), Paint::Used { class: 0, level: 1 });
        assert_eq!(Cell { meta: 10.0, free: 10.0, ..Cell::default() }.paint(), Paint::Meta);
        assert_eq!(Cell { free: 10.0, ..Cell::default() }.paint(), Paint::Free);
    }

    #[test]
    fn runs_merge_cells_and_whole_rows() {
        let (f, m) = (Paint::Free, Paint::Meta);
        let runs = runs(&[m, m, f, f, f, f, f, f, f, f, f, f, m, f], 4);
        let shape: Vec<_> = runs.iter().map(|r| (r.paint, r.column, r.row, r.width, r.height)).collect();
        assert_eq!(
            shape,
            [(m, 0, 0, 2, 1), (f, 2, 0, 2, 1), (f, 0, 1, 4, 2), (m, 0, 3, 1, 1), (f, 1, 3, 1, 1)]
        );
    }
}
