//! Helpers shared by the integration tests of this directory.

/// `len` deterministic pseudo-random bytes (xorshift64) from seed `x`
/// (not 0).
pub fn xorshift(len: usize, mut x: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
