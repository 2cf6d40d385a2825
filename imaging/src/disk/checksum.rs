//! The three CRCs the on-disk formats use: CRC-32 (GPT headers and
//! entries), CRC-32C (ext4 `metadata_csum`) and CRC-16 (ext4 `uninit_bg`
//! group descriptors). Byte-at-a-time tables built at compile time; the
//! amounts hashed here are small (headers, descriptors, one bitmap block
//! per group).

/// A reflected CRC table for `poly` (already bit-reversed).
const fn table32(poly: u32) -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ poly } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

const CRC32_TABLE: [u32; 256] = table32(0xedb8_8320);
const CRC32C_TABLE: [u32; 256] = table32(0x82f6_3b78);
const CRC16_TABLE: [u32; 256] = table32(0xa001);

fn update(table: &[u32; 256], mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = (crc >> 8) ^ table[((crc ^ u32::from(b)) & 0xff) as usize];
    }
    crc
}

/// The standard CRC-32 (IEEE, as zlib and the UEFI spec compute it).
pub(crate) fn crc32(data: &[u8]) -> u32 {
    !update(&CRC32_TABLE, !0, data)
}

/// The kernel's raw `crc32c(seed, data)`: no inversion in or out, as
/// ext4's `ext4_chksum` uses it.
pub(crate) fn crc32c(seed: u32, data: &[u8]) -> u32 {
    update(&CRC32C_TABLE, seed, data)
}

/// The kernel's `crc16(seed, data)` (polynomial 0x8005, reflected), as
/// ext4's `uninit_bg` descriptor checksum uses it.
pub(crate) fn crc16(seed: u16, data: &[u8]) -> u16 {
    update(&CRC16_TABLE, u32::from(seed), data) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(!crc32c(!0, b"123456789"), 0xe306_9283);
        // CRC-16/ARC ("123456789") starts from 0; the kernel's is the same
        // function with a caller-chosen seed.
        assert_eq!(crc16(0, b"123456789"), 0xbb3d);
    }
}
