//! On-disk inodes: reading one from its group's inode table, verifying its
//! checksum, and decoding the fields `lstat` reports.
//!
//! Layout (all little-endian): `i_mode` 0x00, `i_uid` 0x02, `i_size_lo`
//! 0x04, `i_ctime` 0x0c, `i_mtime` 0x10, `i_gid` 0x18, `i_links_count`
//! 0x1a, `i_blocks_lo` 0x1c, `i_flags` 0x20, `i_block[15]` 0x28,
//! `i_generation` 0x64, `i_file_acl_lo` 0x68, `i_size_high` 0x6c, osd2
//! (`l_i_blocks_high` 0x74, `l_i_file_acl_high` 0x76, `l_i_uid_high`
//! 0x78, `l_i_gid_high` 0x7a, `l_i_checksum_lo` 0x7c), then in large
//! inodes `i_extra_isize` 0x80, `i_checksum_hi` 0x82, `i_ctime_extra`
//! 0x84, `i_mtime_extra` 0x88.

use super::crc32c::crc32c;
use super::fault::{corrupt, Parsed};
use super::raw::{le16, le32, us};
use super::superblock::{incompat, inode_table_blocks, ro_compat, Superblock};
use super::Vol;
use crate::tree::Kind;

/// `i_flags` bits ferry acts on.
pub(crate) mod flags {
    /// Encrypted contents and names.
    pub(crate) const ENCRYPT: u32 = 0x800;
    /// Hashed directory index.
    pub(crate) const INDEX: u32 = 0x1000;
    /// `i_blocks` counts file-system blocks, not 512-byte sectors.
    pub(crate) const HUGE_FILE: u32 = 0x4_0000;
    /// Data mapped by an extent tree.
    pub(crate) const EXTENTS: u32 = 0x8_0000;
    /// This inode holds a large xattr value.
    pub(crate) const EA_INODE: u32 = 0x20_0000;
    /// Data stored in the inode itself.
    pub(crate) const INLINE_DATA: u32 = 0x1000_0000;
}

/// Size of the original (rev 0) inode.
pub(crate) const GOOD_OLD_INODE_SIZE: usize = 128;
/// Offset of `i_block`.
pub(crate) const I_BLOCK: usize = 0x28;
/// Length of `i_block` in bytes.
pub(crate) const I_BLOCK_LEN: usize = 60;
const L_I_CHECKSUM_LO: usize = 0x7c;
const I_CHECKSUM_HI: usize = 0x82;

/// An inode read from disk; `raw` holds all `inode_size` bytes.
#[derive(Clone, Debug)]
pub(crate) struct Inode {
    /// Inode number.
    pub(crate) ino: u32,
    /// Byte offset of the inode in the file system (for messages).
    pub(crate) offset: u64,
    /// The on-disk bytes.
    pub(crate) raw: Vec<u8>,
    /// `i_mode`: type and permission bits.
    pub(crate) mode: u16,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Size in bytes (`ext4_isize`).
    pub(crate) size: u64,
    pub(crate) links: u16,
    pub(crate) flags: u32,
    /// `i_blocks` in 512-byte units.
    pub(crate) sectors: u64,
    /// Block holding the shared xattr block, 0 for none.
    pub(crate) file_acl: u64,
    /// Modification time (seconds, nanoseconds).
    pub(crate) mtime: (i64, u32),
    /// Change time (seconds, nanoseconds).
    pub(crate) ctime: (i64, u32),
    /// `i_extra_isize`: bytes used past 128 (0 for small inodes).
    pub(crate) extra_isize: usize,
    /// Seed for this inode's directory, extent and xattr checksums.
    pub(crate) csum_seed: u32,
}

impl Inode {
    /// The 60 bytes of `i_block`.
    pub(crate) fn i_block(&self) -> &[u8] {
        &self.raw[I_BLOCK..I_BLOCK + I_BLOCK_LEN]
    }

    /// Object kind from the mode; `None` for a socket.
    pub(crate) fn kind(&self) -> Parsed<Option<Kind>> {
        Ok(Some(match self.mode & 0xf000 {
            0x4000 => Kind::Dir,
            0x8000 => Kind::File,
            0xa000 => Kind::Symlink,
            0x2000 => Kind::Char,
            0x6000 => Kind::Block,
            0x1000 => Kind::Fifo,
            0xc000 => return Ok(None),
            t => {
                return corrupt!(
                    "inode {}: invalid file type {t:#o} in mode {:#o}",
                    self.ino,
                    self.mode
                )
            }
        }))
    }

    /// Whether a flag is set.
    pub(crate) fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    /// Device number (major, minor), decoding both encodings the kernel
    /// writes into `i_block`: the old 8:8 one in word 0, or the new 12:20
    /// one in word 1 when word 0 is zero.
    pub(crate) fn rdev(&self) -> (u32, u32) {
        decode_rdev(le32(self.i_block(), 0), le32(self.i_block(), 4))
    }
}

/// `old_decode_dev` / `new_decode_dev` of the kernel.
pub(crate) fn decode_rdev(word0: u32, word1: u32) -> (u32, u32) {
    if word0 != 0 {
        ((word0 >> 8) & 0xff, word0 & 0xff)
    } else {
        (
            (word1 & 0xf_ff00) >> 8,
            (word1 & 0xff) | ((word1 >> 12) & 0xf_ff00),
        )
    }
}

/// Decodes a timestamp: the signed 32-bit seconds plus, when the extra
/// field exists, two epoch bits (bits 32-33 of the seconds) and 30 bits of
/// nanoseconds. Nanoseconds past 999,999,999 (never written by Linux) are
/// clamped so the value can be restored.
pub(crate) fn decode_time(lo: u32, extra: Option<u32>) -> (i64, u32) {
    let mut secs = i64::from(i32::from_le_bytes(lo.to_le_bytes()));
    let mut nanos = 0;
    if let Some(extra) = extra {
        secs += i64::from(extra & 3) << 32;
        nanos = (extra >> 2).min(999_999_999);
    }
    (secs, nanos)
}

/// Reads and checks inode `ino`.
pub(crate) fn read_inode(v: Vol<'_>, ino: u32) -> Parsed<Inode> {
    let sb = v.sb;
    if ino == 0 || ino > sb.inodes_count {
        return corrupt!(
            "inode number {ino} is out of range (1..={})",
            sb.inodes_count
        );
    }
    let group = (ino - 1) / sb.inodes_per_group;
    let index = (ino - 1) % sb.inodes_per_group;
    let Some(&table) = v.tables.get(us(group)) else {
        return corrupt!("inode {ino}: group {group} has no descriptor");
    };
    if !sb.valid_range(table, inode_table_blocks(sb)) {
        return corrupt!(
            "inode {ino}: inode table of group {group} (block {table}) lies outside the file system"
        );
    }
    let offset = table * sb.bs() + u64::from(index) * u64::from(sb.inode_size);
    let mut raw = vec![0u8; usize::from(sb.inode_size)];
    v.r.read_at(offset, &mut raw)
        .map_err(|f| f.context(format!("inode {ino} (byte {offset})")))?;
    parse(sb, ino, offset, raw)
}

fn parse(sb: &Superblock, ino: u32, offset: u64, raw: Vec<u8>) -> Parsed<Inode> {
    let isize = raw.len();
    let extra_isize = if isize > GOOD_OLD_INODE_SIZE {
        let e = usize::from(le16(&raw, 0x80));
        if GOOD_OLD_INODE_SIZE + e > isize || e % 4 != 0 {
            return corrupt!(
                "inode {ino} (byte {offset}): i_extra_isize {e} does not fit a {isize}-byte inode"
            );
        }
        e
    } else {
        0
    };
    let fits = |field_end: usize| field_end <= GOOD_OLD_INODE_SIZE + extra_isize;
    let generation = le32(&raw, 0x64);
    let seed = crc32c(sb.csum_seed, &ino.to_le_bytes());
    let csum_seed = crc32c(seed, &generation.to_le_bytes());
    if sb.metadata_csum() && sb.linux {
        verify_checksum(&raw, csum_seed, fits(I_CHECKSUM_HI + 2))
            .map_err(|(stored, computed)| {
                super::fault::Fault::Corrupt(format!(
                    "inode {ino} (byte {offset}): checksum {stored:#x} does not match its contents ({computed:#x})"
                ))
            })?;
    }
    let mode = le16(&raw, 0x0);
    let uid = u32::from(le16(&raw, 0x2)) | u32::from(le16(&raw, 0x78)) << 16;
    let gid = u32::from(le16(&raw, 0x18)) | u32::from(le16(&raw, 0x7a)) << 16;
    let size_lo = u64::from(le32(&raw, 0x4));
    let large_dir = sb.incompat & 0x4000 != 0;
    let size = if mode & 0xf000 == 0x8000 || large_dir {
        size_lo | u64::from(le32(&raw, 0x6c)) << 32
    } else {
        size_lo
    };
    let flags = le32(&raw, 0x20);
    let mut sectors = u64::from(le32(&raw, 0x1c));
    if sb.ro_compat & ro_compat::HUGE_FILE != 0 {
        sectors |= u64::from(le16(&raw, 0x74)) << 32;
        if flags & flags::HUGE_FILE != 0 {
            sectors = sectors.saturating_mul(sb.bs() / 512);
        }
    }
    let mut file_acl = u64::from(le32(&raw, 0x68));
    if sb.incompat & incompat::BIT64 != 0 {
        file_acl |= u64::from(le16(&raw, 0x76)) << 32;
    }
    let extra = |off: usize| fits(off + 4).then(|| le32(&raw, off));
    let mtime = decode_time(le32(&raw, 0x10), extra(0x88));
    let ctime = decode_time(le32(&raw, 0xc), extra(0x84));
    for x in [extra(0x88), extra(0x84)].into_iter().flatten() {
        if x >> 2 > 999_999_999 {
            tracing::warn!(
                ino,
                "inode timestamp has more than 999999999 nanoseconds; clamped"
            );
        }
    }
    Ok(Inode {
        ino,
        offset,
        mode,
        uid,
        gid,
        size,
        links: le16(&raw, 0x1a),
        flags,
        sectors,
        file_acl,
        mtime,
        ctime,
        extra_isize,
        csum_seed,
        raw,
    })
}

/// `ext4_inode_csum_verify`: CRC32C of the inode with the checksum fields
/// zeroed; only the low 16 bits count when `i_checksum_hi` is absent.
fn verify_checksum(raw: &[u8], seed: u32, has_hi: bool) -> Result<(), (u32, u32)> {
    let zero = [0u8; 2];
    let mut c = crc32c(seed, &raw[..L_I_CHECKSUM_LO]);
    c = crc32c(c, &zero);
    c = crc32c(c, &raw[L_I_CHECKSUM_LO + 2..GOOD_OLD_INODE_SIZE]);
    if raw.len() > GOOD_OLD_INODE_SIZE {
        c = crc32c(c, &raw[GOOD_OLD_INODE_SIZE..I_CHECKSUM_HI]);
        let mut rest = I_CHECKSUM_HI;
        if has_hi {
            c = crc32c(c, &zero);
            rest += 2;
        }
        c = crc32c(c, &raw[rest..]);
    }
    let mut stored = u32::from(le16(raw, L_I_CHECKSUM_LO));
    if raw.len() > GOOD_OLD_INODE_SIZE && has_hi {
        stored |= u32::from(le16(raw, I_CHECKSUM_HI)) << 16;
    } else {
        c &= 0xffff;
    }
    if stored == c {
        Ok(())
    } else {
        Err((stored, c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_with_epoch_bits_and_nanoseconds() {
        // Before 1970: the 32-bit seconds are negative, epoch bits 0.
        assert_eq!(decode_time(0xed31_8525, Some(1 << 2)), (-315_521_755, 1));
        // 2100-01-02: seconds wrap past 2^31, epoch bits 1.
        assert_eq!(
            decode_time(0xf487_d3a5, Some(500_000_000 << 2 | 1)),
            (4_102_542_245, 500_000_000)
        );
        // No extra field: plain signed seconds.
        assert_eq!(decode_time(0x8000_0000, None), (-2_147_483_648, 0));
        // Garbage nanoseconds are clamped.
        assert_eq!(decode_time(0, Some(!3)).1, 999_999_999);
    }

    #[test]
    fn device_numbers_old_and_new() {
        assert_eq!(decode_rdev(0x0801, 0), (8, 1));
        // major 259, minor 0x12345 in the new encoding.
        let major = 259u32;
        let minor = 0x12345u32;
        let new = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
        assert_eq!(decode_rdev(0, new), (major, minor));
    }
}
