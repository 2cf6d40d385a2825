//! The ext2/3/4 superblock and the group descriptor table: geometry,
//! features and where each group's inode table is.

use super::crc32c::crc32c;
use super::fault::{corrupt, unsupported, Parsed};
use super::raw::{le16, le32, us};
use super::source::ReadAt;

/// `s_magic`.
const EXT4_MAGIC: u16 = 0xef53;

/// Compatible features ferry looks at.
pub(crate) mod compat {
    /// A journal exists.
    pub(crate) const HAS_JOURNAL: u32 = 0x4;
    /// Directories may have hash indexes.
    pub(crate) const DIR_INDEX: u32 = 0x20;
    /// Superblock backups only in the two groups the superblock names.
    pub(crate) const SPARSE_SUPER2: u32 = 0x200;
}

/// Incompatible features.
pub(crate) mod incompat {
    /// The journal needs replaying.
    pub(crate) const RECOVER: u32 = 0x4;
    /// This is an external journal device.
    pub(crate) const JOURNAL_DEV: u32 = 0x8;
    /// Meta block groups.
    pub(crate) const META_BG: u32 = 0x10;
    /// 64-bit block numbers.
    pub(crate) const BIT64: u32 = 0x80;
    /// Large xattr values in their own inodes.
    pub(crate) const EA_INODE: u32 = 0x400;
    /// The checksum seed is stored in the superblock.
    pub(crate) const CSUM_SEED: u32 = 0x2000;
}

/// Read-only compatible features.
pub(crate) mod ro_compat {
    /// Superblock backups only in groups 0, 1 and powers of 3, 5 and 7.
    pub(crate) const SPARSE_SUPER: u32 = 0x1;
    /// `i_blocks` may count file-system blocks (with `HUGE_FILE_FL`).
    pub(crate) const HUGE_FILE: u32 = 0x8;
    /// Clusters of blocks.
    pub(crate) const BIGALLOC: u32 = 0x200;
    /// CRC32C checksums on all metadata.
    pub(crate) const METADATA_CSUM: u32 = 0x400;
}

/// Byte offset of `s_feature_incompat`.
const INCOMPAT_OFFSET: usize = 0x60;
/// Byte offset of `s_checksum`.
const CHECKSUM_OFFSET: usize = 0x3fc;

/// Parsed and validated superblock fields.
#[derive(Clone, Debug)]
pub(crate) struct Superblock {
    pub(crate) inodes_count: u32,
    pub(crate) blocks_count: u64,
    pub(crate) first_data_block: u32,
    pub(crate) block_size: u32,
    /// Allocation unit in bytes (the block size without bigalloc).
    pub(crate) cluster_size: u64,
    pub(crate) blocks_per_group: u32,
    pub(crate) inodes_per_group: u32,
    /// First descriptor block placed by `meta_bg`.
    pub(crate) first_meta_bg: u32,
    /// Groups with superblock backups under `sparse_super2`.
    pub(crate) backup_bgs: [u32; 2],
    pub(crate) inode_size: u16,
    pub(crate) first_ino: u32,
    /// `s_creator_os` is Linux (inode checksums and uid/gid high bits).
    pub(crate) linux: bool,
    pub(crate) compat: u32,
    pub(crate) incompat: u32,
    pub(crate) ro_compat: u32,
    pub(crate) uuid: [u8; 16],
    pub(crate) label: [u8; 16],
    pub(crate) journal_inum: u32,
    pub(crate) journal_uuid: [u8; 16],
    pub(crate) journal_dev: u32,
    /// Bytes per group descriptor.
    pub(crate) desc_size: u32,
    /// Seed for metadata checksums.
    pub(crate) csum_seed: u32,
    /// Number of block groups.
    pub(crate) groups: u32,
}

impl Superblock {
    /// Parses the 1024 bytes at byte 1024 of a file system whose area is
    /// `area_len` bytes long.
    pub(crate) fn parse(raw: &[u8], area_len: u64) -> Parsed<Superblock> {
        if raw.len() < 1024 {
            return corrupt!("superblock (byte 1024) is truncated");
        }
        let magic = le16(raw, 0x38);
        if magic != EXT4_MAGIC {
            return unsupported!(
                "no ext2/3/4 file system here (superblock magic at byte 1080 is {magic:#06x}, not {EXT4_MAGIC:#06x})"
            );
        }
        let ro_compat = le32(raw, 0x64);
        if ro_compat & ro_compat::METADATA_CSUM != 0 {
            let stored = le32(raw, CHECKSUM_OFFSET);
            let computed = crc32c(!0, &raw[..CHECKSUM_OFFSET]);
            if stored != computed {
                return corrupt!(
                    "superblock (byte 1024) checksum {stored:#010x} does not match its contents ({computed:#010x})"
                );
            }
        }
        let log_block = le32(raw, 0x18);
        if log_block > 6 {
            return corrupt!(
                "superblock: block size exponent {log_block} is out of range (at most 6)"
            );
        }
        let block_size = 1024u32 << log_block;
        let blocks_count = u64::from(le32(raw, 0x4));
        let incompat = le32(raw, INCOMPAT_OFFSET);
        let blocks_count = if incompat & incompat::BIT64 != 0 {
            blocks_count | u64::from(le32(raw, 0x150)) << 32
        } else {
            blocks_count
        };
        let fs_bytes = blocks_count.checked_mul(u64::from(block_size));
        if fs_bytes.is_none_or(|b| b > area_len) {
            return corrupt!(
                "superblock says {blocks_count} blocks of {block_size} bytes, but the source holds only {area_len} bytes; is the image truncated?"
            );
        }
        let first_data_block = le32(raw, 0x14);
        if first_data_block > 1
            || (block_size > 1024 && first_data_block != 0)
            || u64::from(first_data_block) >= blocks_count
        {
            return corrupt!(
                "superblock: first data block {first_data_block} does not fit block size {block_size} and {blocks_count} blocks"
            );
        }
        let blocks_per_group = le32(raw, 0x20);
        let inodes_per_group = le32(raw, 0x28);
        if blocks_per_group == 0 || inodes_per_group == 0 {
            return corrupt!(
                "superblock: {blocks_per_group} blocks and {inodes_per_group} inodes per group"
            );
        }
        let groups =
            (blocks_count - u64::from(first_data_block)).div_ceil(u64::from(blocks_per_group));
        let Ok(groups) = u32::try_from(groups) else {
            return corrupt!("superblock: {groups} block groups is too many");
        };
        let inodes_count = le32(raw, 0x0);
        if u64::from(inodes_count) > u64::from(groups) * u64::from(inodes_per_group) {
            return corrupt!(
                "superblock: {inodes_count} inodes do not fit {groups} groups of {inodes_per_group}"
            );
        }
        let rev_level = le32(raw, 0x4c);
        let (inode_size, first_ino) = if rev_level == 0 {
            (128, 11)
        } else {
            (le16(raw, 0x58), le32(raw, 0x54))
        };
        if inode_size < 128 || !inode_size.is_power_of_two() || u32::from(inode_size) > block_size {
            return corrupt!("superblock: inode size {inode_size} is invalid");
        }
        if first_ino < 11 || first_ino > inodes_count {
            return corrupt!(
                "superblock: first inode {first_ino} is invalid ({inodes_count} inodes)"
            );
        }
        let desc_size = if incompat & incompat::BIT64 != 0 {
            let d = u32::from(le16(raw, 0xfe));
            if !(64..=1024).contains(&d) || !d.is_power_of_two() {
                return corrupt!("superblock: group descriptor size {d} is invalid");
            }
            d
        } else {
            32
        };
        let cluster_size = if ro_compat & ro_compat::BIGALLOC != 0 {
            let log_cluster = le32(raw, 0x1c);
            if log_cluster < log_block || log_cluster > 19 {
                return corrupt!("superblock: cluster size exponent {log_cluster} is invalid");
            }
            1024u64 << log_cluster
        } else {
            u64::from(block_size)
        };
        let csum_seed = if incompat & incompat::CSUM_SEED != 0 {
            le32(raw, 0x270)
        } else {
            crc32c(!0, &raw[0x68..0x78])
        };
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&raw[0x68..0x78]);
        let mut label = [0u8; 16];
        label.copy_from_slice(&raw[0x78..0x88]);
        let mut journal_uuid = [0u8; 16];
        journal_uuid.copy_from_slice(&raw[0xd0..0xe0]);
        Ok(Superblock {
            inodes_count,
            blocks_count,
            first_data_block,
            block_size,
            cluster_size,
            blocks_per_group,
            inodes_per_group,
            first_meta_bg: le32(raw, 0x104),
            backup_bgs: [le32(raw, 0x24c), le32(raw, 0x250)],
            inode_size,
            first_ino,
            linux: le32(raw, 0x48) == 0,
            compat: le32(raw, 0x5c),
            incompat,
            ro_compat,
            uuid,
            label,
            journal_inum: le32(raw, 0xe0),
            journal_uuid,
            journal_dev: le32(raw, 0xe4),
            desc_size,
            csum_seed,
            groups,
        })
    }

    /// `ext4_bg_has_super`: whether group `g` starts with a superblock copy.
    pub(crate) fn group_has_super(&self, g: u32) -> bool {
        if g == 0 {
            return true;
        }
        if self.compat & compat::SPARSE_SUPER2 != 0 {
            return self.backup_bgs.contains(&g);
        }
        if g <= 1 || self.ro_compat & ro_compat::SPARSE_SUPER == 0 {
            return true;
        }
        g % 2 == 1 && [3u32, 5, 7].iter().any(|&b| power_of(g, b))
    }

    /// Metadata checksums are on.
    pub(crate) fn metadata_csum(&self) -> bool {
        self.ro_compat & ro_compat::METADATA_CSUM != 0
    }

    /// Block size as u64.
    pub(crate) fn bs(&self) -> u64 {
        u64::from(self.block_size)
    }

    /// Block size as usize.
    pub(crate) fn bsz(&self) -> usize {
        us(self.block_size)
    }

    /// Whether `block..block + count` lies inside the file system, past the
    /// boot block.
    pub(crate) fn valid_range(&self, block: u64, count: u64) -> bool {
        block >= u64::from(self.first_data_block)
            && block
                .checked_add(count)
                .is_some_and(|end| end <= self.blocks_count)
            && block != 0
    }

    /// The file-system label as text.
    pub(crate) fn label_text(&self) -> String {
        let end = self.label.iter().position(|&b| b == 0).unwrap_or(16);
        String::from_utf8_lossy(&self.label[..end]).into_owned()
    }

    /// Checks that `other` (the journal's newer superblock) describes the
    /// same layout, so inode locations computed from either agree.
    pub(crate) fn same_geometry(&self, other: &Superblock) -> bool {
        self.block_size == other.block_size
            && self.blocks_count == other.blocks_count
            && self.inodes_per_group == other.inodes_per_group
            && self.inode_size == other.inode_size
            && self.desc_size == other.desc_size
            && self.first_data_block == other.first_data_block
            && self.groups == other.groups
    }
}

/// Reads the group descriptor table: the first block of each group's
/// inode table.
pub(crate) fn inode_tables(r: &dyn ReadAt, sb: &Superblock, area_len: u64) -> Parsed<Vec<u64>> {
    let table_bytes = u64::from(sb.groups) * u64::from(sb.desc_size);
    if table_bytes > area_len {
        return corrupt!(
            "group descriptor table ({} groups, {table_bytes} bytes) is larger than the file system",
            sb.groups
        );
    }
    let per_block = sb.block_size / sb.desc_size;
    let d = us(sb.desc_size);
    let mut tables = Vec::with_capacity(us(sb.groups));
    let mut block = vec![0u8; sb.bsz()];
    for nr in 0..sb.groups.div_ceil(per_block) {
        let at = descriptor_block(sb, nr);
        if !sb.valid_range(at, 1) {
            return corrupt!(
                "group descriptor block {nr} would be at block {at}, outside the file system"
            );
        }
        let off = at * sb.bs();
        r.read_at(off, &mut block)
            .map_err(|f| f.context(format!("group descriptor block {nr} (byte {off})")))?;
        let wanted = us((sb.groups - nr * per_block).min(per_block));
        tables.extend(block.chunks_exact(d).take(wanted).map(|g| {
            let lo = u64::from(le32(g, 0x8));
            if d >= 64 {
                lo | u64::from(le32(g, 0x28)) << 32
            } else {
                lo
            }
        }));
    }
    Ok(tables)
}

/// `descriptor_loc`: where descriptor block `nr` lives. The table follows
/// the block holding the superblock (byte 1024), whatever
/// `s_first_data_block` says (it is 0 with bigalloc and 1 KiB blocks);
/// with `meta_bg`, blocks from `s_first_meta_bg` on sit at the start of
/// the first group they describe, after its superblock backup if any.
fn descriptor_block(sb: &Superblock, nr: u32) -> u64 {
    let sb_block = 1024 / sb.bs();
    if sb.incompat & incompat::META_BG == 0 || nr < sb.first_meta_bg {
        return sb_block + 1 + u64::from(nr);
    }
    let group = nr.saturating_mul(sb.block_size / sb.desc_size);
    let mut has_super = u64::from(sb.group_has_super(group));
    if sb.block_size == 1024 && nr == 0 && sb.first_data_block == 0 {
        has_super += 1;
    }
    has_super + u64::from(group) * u64::from(sb.blocks_per_group) + u64::from(sb.first_data_block)
}

/// Whether `n` is a power of `base`.
fn power_of(mut n: u32, base: u32) -> bool {
    while n % base == 0 && n > 1 {
        n /= base;
    }
    n == 1
}

/// Length of a group's inode table in blocks.
pub(crate) fn inode_table_blocks(sb: &Superblock) -> u64 {
    (u64::from(sb.inodes_per_group) * u64::from(sb.inode_size)).div_ceil(sb.bs())
}
