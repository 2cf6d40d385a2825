//! Field access on untrusted on-disk bytes.
//!
//! Every reader returns 0 when the field lies outside the slice instead of
//! panicking; callers check lengths first, so a 0 from a short slice only
//! ever shows up in a later validation error, never as a crash.

/// Little-endian u16 at `off`.
pub(crate) fn le16(b: &[u8], off: usize) -> u16 {
    field::<2>(b, off).map_or(0, u16::from_le_bytes)
}

/// Little-endian u32 at `off`.
pub(crate) fn le32(b: &[u8], off: usize) -> u32 {
    field::<4>(b, off).map_or(0, u32::from_le_bytes)
}

/// Big-endian u16 at `off` (jbd2 is big-endian).
pub(crate) fn be16(b: &[u8], off: usize) -> u16 {
    field::<2>(b, off).map_or(0, u16::from_be_bytes)
}

/// Big-endian u32 at `off`.
pub(crate) fn be32(b: &[u8], off: usize) -> u32 {
    field::<4>(b, off).map_or(0, u32::from_be_bytes)
}

/// The byte at `off`.
pub(crate) fn byte(b: &[u8], off: usize) -> u8 {
    b.get(off).copied().unwrap_or(0)
}

fn field<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    let end = off.checked_add(N)?;
    b.get(off..end)?.try_into().ok()
}

/// `u32` to `usize`; ferry only builds for targets where this is lossless.
pub(crate) fn us(v: u32) -> usize {
    usize::try_from(v).expect("usize is at least 32 bits on every supported target")
}

/// `usize` to `u64`, lossless on every supported target.
pub(crate) fn u64_of(v: usize) -> u64 {
    u64::try_from(v).expect("usize fits in u64 on every supported target")
}
