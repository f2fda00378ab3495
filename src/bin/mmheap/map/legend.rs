//! The map's legend: what each paint means, every shade of every size class, and how spans and
//! other cells are shaded.

use std::fmt::Write;

use super::cells::{Cell, Paint, CLASSES, LEVELS};
use super::escape;
use crate::human;

/// Width of the legend in pixels.
pub const WIDTH: u64 = 390;

/// The hatch of the part of a damaged heap that could not be walked.
pub const DEFS: &str = concat!(
    r##"<defs><pattern id="unwalked" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">"##,
    r##"<rect width="6" height="6" fill="#fde0dd"/><path d="M0 0v6" stroke="#c51b7d" stroke-width="2"/></pattern></defs>"##,
    "\n"
);

/// Swatch size and the distance between two shades.
const SWATCH: u64 = 14;
const SHADE_DX: u64 = 42;

const NOTES: [&str; 8] = [
    "Small blocks (at most 64 B) are slots in 64 KiB",
    "spans: a span is shaded by the share of its slots",
    "in use (0%: an empty span kept for small blocks).",
    "Any other cell takes the colour of the size class",
    "with the most bytes in it, shaded by the share of",
    "the cell in use: pale cells amid colour are holes.",
    "A white tick marks where a large block starts.",
    "Hover over a run of cells for what it is.",
];

/// The legend at (`x`, `top`) for a picture with `paints` of a store whose bytes are `totals`;
/// returns it and where it ends.
pub fn draw(x: u64, top: u64, paints: &[Paint], totals: &Cell) -> (String, u64) {
    let mut svg = String::new();
    let mut y = top;
    let amount = |svg: &mut String, y: u64, bytes: f64| {
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{}" text-anchor="end" fill="#333">{}</text>"##,
            x + WIDTH - 10,
            y + 11,
            human(bytes.round() as u64)
        );
    };
    let mut item = |svg: &mut String, paint: Paint, text: &str, bytes: f64| {
        swatch(svg, x, y, paint);
        let _ = writeln!(svg, r#"<text x="{}" y="{}">{}</text>"#, x + SWATCH + 8, y + 11, escape(text));
        amount(svg, y, bytes);
        y += 20;
    };
    item(&mut svg, Paint::Meta, "metadata of the store", totals.meta);
    item(&mut svg, Paint::Free, "free", totals.free);
    if paints.contains(&Paint::Quarantined) {
        item(&mut svg, Paint::Quarantined, "quarantined: damage fenced off", totals.quarantined);
    }
    if paints.contains(&Paint::Unwalked) {
        item(&mut svg, Paint::Unwalked, "not walked: the heap is damaged", totals.unwalked);
    }
    let room: f64 = totals.room.iter().sum();
    if room > 0.0 {
        item(&mut svg, Paint::Used { class: 0, level: 0 }, "slots of spans not in use", room);
    }
    y += 14;
    let _ = writeln!(svg, r#"<text x="{x}" y="{y}">in use, by block size, and how much:</text>"#);
    y += 18;
    for (i, level) in LEVELS.iter().enumerate() {
        let cx = x + i as u64 * SHADE_DX + SWATCH / 2;
        let _ = writeln!(
            svg,
            r#"<text x="{cx}" y="{y}" text-anchor="middle" font-size="10">{}</text>"#,
            escape(level)
        );
    }
    y += 6;
    for (class, (_, _, label)) in CLASSES.iter().enumerate() {
        // Only spans (of the first class) can be empty.
        let first = if class == 0 { 0 } else { 1 };
        for level in first..LEVELS.len() {
            let paint = Paint::Used { class: class as u8, level: level as u8 };
            swatch(&mut svg, x + level as u64 * SHADE_DX, y, paint);
        }
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}">{}</text>"#,
            x + LEVELS.len() as u64 * SHADE_DX,
            y + 11,
            escape(label)
        );
        amount(&mut svg, y, totals.used[class]);
        y += 20;
    }
    y += 10;
    for note in NOTES {
        y += 15;
        let _ = writeln!(svg, r##"<text x="{x}" y="{y}" fill="#333">{}</text>"##, escape(note));
    }
    (svg, y)
}

fn swatch(svg: &mut String, x: u64, y: u64, paint: Paint) {
    let _ = writeln!(
        svg,
        r##"<rect x="{x}" y="{y}" width="{SWATCH}" height="{SWATCH}" fill="{}" stroke="#999"><title>{}</title></rect>"##,
        paint.fill(),
        escape(&paint.name())
    );
}
