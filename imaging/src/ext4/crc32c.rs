//! CRC32C (Castagnoli), as ext4 and jbd2 use it for metadata checksums.
//!
//! The kernel's `crc32c(seed, data)` neither inverts the seed nor the
//! result; ext4 passes `~0` as the first seed and stores the raw value.
//! [`crc32c`] behaves the same way, so on-disk checksums compare directly.

/// Reflected Castagnoli polynomial.
const POLY: u32 = 0x82f6_3b78;

/// Slicing-by-8 tables, built at compile time.
const TABLES: [[u32; 256]; 8] = build_tables();

const fn build_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut s = 1;
    while s < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            i += 1;
        }
        s += 1;
    }
    t
}

/// Continues a CRC32C over `data` from `seed`, kernel style (no inversion).
pub(crate) fn crc32c(seed: u32, data: &[u8]) -> u32 {
    let mut crc = seed;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = crc ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        crc = TABLES[7][(lo & 0xff) as usize]
            ^ TABLES[6][((lo >> 8) & 0xff) as usize]
            ^ TABLES[5][((lo >> 16) & 0xff) as usize]
            ^ TABLES[4][(lo >> 24) as usize]
            ^ TABLES[3][usize::from(c[4])]
            ^ TABLES[2][usize::from(c[5])]
            ^ TABLES[1][usize::from(c[6])]
            ^ TABLES[0][usize::from(c[7])];
    }
    for &b in chunks.remainder() {
        crc = (crc >> 8) ^ TABLES[0][((crc ^ u32::from(b)) & 0xff) as usize];
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::crc32c;

    #[test]
    fn standard_check_value() {
        // CRC-32C("123456789") = 0xe3069283 with init and final inversion.
        assert_eq!(!crc32c(!0, b"123456789"), 0xe306_9283);
    }

    #[test]
    fn chunking_does_not_matter() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        let whole = crc32c(!0, &data);
        let (a, b) = data.split_at(333);
        assert_eq!(crc32c(crc32c(!0, a), b), whole);
    }
}
