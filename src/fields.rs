//! Little-endian fields of the structures that live in blocks' bytes (values, containers:
//! `docs/format.md`, "Typed values and containers"), read with their range checked.

/// The little-endian `u64` at `at` of `bytes`, if they are long enough.
pub(crate) fn get_u64(bytes: &[u8], at: u64) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at as usize..at as usize + 8)?.try_into().ok()?))
}

/// The little-endian `u32` at `at` of `bytes`, if they are long enough.
pub(crate) fn get_u32(bytes: &[u8], at: u64) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at as usize..at as usize + 4)?.try_into().ok()?))
}

/// Writes `v` at `at` of `bytes`, which the caller made long enough.
pub(crate) fn put_u64(bytes: &mut [u8], at: u64, v: u64) {
    bytes[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
}

/// Writes `v` at `at` of `bytes`, which the caller made long enough.
pub(crate) fn put_u32(bytes: &mut [u8], at: u64, v: u32) {
    bytes[at as usize..at as usize + 4].copy_from_slice(&v.to_le_bytes());
}
