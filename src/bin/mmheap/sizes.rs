//! The one size parser of the tool, and the checks of a new store's sizes against the limits.
//!
//! A size is a whole decimal number with an optional unit, case-insensitive: `B`,
//! `K`/`KB`/`KiB`, `M`/`MB`/`MiB`, `G`/`GB`/`GiB`, `T`/`TB`/`TiB`; or a `0x` hex number of bytes,
//! which takes no unit (`0x1B` is 27 bytes: `b` is a hex digit). Every unit is binary (`1KB` is
//! 1024 bytes, as in `ls -h`): a store's sizes are whole pages, and pages are binary.

use mmheap::format::{MIN_STORE_SIZE, PAGE_SIZE};
use mmheap::MAX_STORE_SIZE;

use crate::human;

/// The units a size may carry, each with its power of two.
const UNITS: [(&[&str], u32); 5] = [
    (&["", "b"], 0),
    (&["k", "kb", "kib"], 10),
    (&["m", "mb", "mib"], 20),
    (&["g", "gb", "gib"], 30),
    (&["t", "tb", "tib"], 40),
];

/// Parses a size (see the module's comment) into bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| c.is_ascii_alphabetic() && !t.starts_with("0x")).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let (digits, unit) = (digits.trim(), unit.trim());
    let shift =
        UNITS.iter().find(|(names, _)| names.contains(&unit)).map(|&(_, shift)| shift).ok_or_else(|| {
            format!("{s:?}: unknown unit {unit:?} (use B, K, KB, KiB, M, MB, MiB, G, GB, GiB, T, TB or TiB)")
        })?;
    if t.starts_with("0x") && !t[2..].chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "{s:?}: a 0x hex size is a number of bytes and takes no unit (write 0x4000, or 16K)"
        ));
    }
    let n = match digits.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => digits.parse::<u64>().ok(),
    }
    .ok_or_else(|| {
        format!("{s:?} is not a size (a whole number of bytes, or with a unit: 64K, 16MiB, 2gb)")
    })?;
    n.checked_mul(1 << shift).ok_or_else(|| format!("{s:?} is more than 2^64 bytes"))
}

/// A size for people: `64.0 MiB (67108864 bytes)`.
fn both(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} bytes")
    } else {
        format!("{} ({bytes} bytes)", human(bytes))
    }
}

/// The checked sizes of a new store, and a note for each one that was rounded.
#[derive(Debug, PartialEq, Eq)]
pub struct StoreSizes {
    /// Initial size in bytes, whole pages.
    pub initial: u64,
    /// Maximum size in bytes, whole pages.
    pub max: u64,
    /// What was rounded, for standard error.
    pub notes: Vec<String>,
}

/// Checks `--size` and `--max-size` (defaults `default_initial`, `default_max`) against the
/// store's limits; errors name the value and the limit it breaks.
pub fn store_sizes(
    size: Option<u64>,
    max_size: Option<u64>,
    default_initial: u64,
    default_max: u64,
) -> Result<StoreSizes, String> {
    let mut notes = Vec::new();
    let initial = whole_pages("--size", size.unwrap_or(default_initial), &mut notes)?;
    let max = whole_pages("--max-size", max_size.unwrap_or(default_max), &mut notes)?;
    if initial > max {
        return Err(match max_size {
            Some(_) => format!("--size {} is above --max-size {}", both(initial), both(max)),
            None => format!(
                "--size {} is above the default maximum size, {}: give --max-size as well",
                both(initial),
                both(max)
            ),
        });
    }
    Ok(StoreSizes { initial, max, notes })
}

/// `bytes` rounded up to whole pages, refused outside the store's limits.
fn whole_pages(flag: &str, bytes: u64, notes: &mut Vec<String>) -> Result<u64, String> {
    if bytes < MIN_STORE_SIZE {
        return Err(format!(
            "{flag} {}: a store needs at least {}: its superblock, registry and one page of heap",
            both(bytes),
            both(MIN_STORE_SIZE)
        ));
    }
    if bytes > MAX_STORE_SIZE {
        return Err(format!(
            "{flag} {} is above the largest store size, {}",
            both(bytes),
            both(MAX_STORE_SIZE)
        ));
    }
    let rounded = bytes.next_multiple_of(PAGE_SIZE);
    if rounded != bytes {
        notes.push(format!(
            "{flag} {bytes} bytes rounded up to {}, a whole number of {} pages",
            both(rounded),
            human(PAGE_SIZE)
        ));
    }
    Ok(rounded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_usual_spelling_in_any_case() {
        for (s, n) in [
            ("4096", 4096u64),
            ("0x8000", 0x8000),
            ("0X1F", 0x1f),
            ("512b", 512),
            ("64K", 64 << 10),
            ("64k", 64 << 10),
            ("64KB", 64 << 10),
            ("64kb", 64 << 10),
            ("64KiB", 64 << 10),
            ("64kib", 64 << 10),
            ("1M", 1 << 20),
            ("1mb", 1 << 20),
            ("1MiB", 1 << 20),
            ("2G", 2 << 30),
            ("2gib", 2 << 30),
            ("2 GB", 2 << 30),
            ("1T", 1 << 40),
            ("1tb", 1 << 40),
        ] {
            assert_eq!(parse_size(s), Ok(n), "{s}");
        }
    }

    #[test]
    fn malformed_sizes_are_named() {
        for s in ["12Q", "1.5G", "", "M", "0x10K", "-1", "1kk", "0x10 M"] {
            let e = parse_size(s).expect_err(s);
            assert!(e.contains(&format!("{s:?}")), "{s}: {e}");
        }
        // Hex takes no unit, and says so; its digits include b, which is not read as bytes.
        assert!(parse_size("0x10K").unwrap_err().contains("takes no unit"));
        assert_eq!(parse_size("0x9000B"), Ok(0x9000b));
        assert_eq!(parse_size("0x1B"), Ok(27));
        assert!(parse_size("99999999999T").unwrap_err().contains("2^64"));
    }

    #[test]
    fn limits_are_named_with_the_value() {
        let (d_init, d_max) = (1 << 20, 64 << 30);
        let e = store_sizes(Some(0), None, d_init, d_max).unwrap_err();
        assert!(e.contains("--size 0 bytes") && e.contains("at least 36.0 KiB"), "{e}");
        let e = store_sizes(None, Some(64 << 40), d_init, d_max).unwrap_err();
        assert!(e.contains("64.0 TiB") && e.contains("largest store size, 16.0 TiB"), "{e}");
        let e = store_sizes(Some(16 << 40), None, d_init, d_max).unwrap_err();
        assert!(e.contains("--size 16.0 TiB") && e.contains("default maximum size, 64.0 GiB"), "{e}");
        let e = store_sizes(Some(2 << 30), Some(1 << 30), d_init, d_max).unwrap_err();
        assert!(e.contains("--size 2.0 GiB") && e.contains("--max-size 1.0 GiB"), "{e}");
    }

    #[test]
    fn rounding_is_noted() {
        let s = store_sizes(Some(100_000), Some(1 << 30), 1 << 20, 64 << 30).unwrap();
        assert_eq!((s.initial, s.max), (102_400, 1 << 30));
        assert_eq!(s.notes.len(), 1);
        assert!(s.notes[0].contains("100000 bytes rounded up to 100.0 KiB (102400 bytes)"), "{:?}", s.notes);
        let s = store_sizes(None, None, 1 << 20, 64 << 30).unwrap();
        assert!(s.notes.is_empty());
    }
}
