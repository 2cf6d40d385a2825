//! The ext2/3/4 superblock: detection, naming (ext2/ext3/ext4 by
//! features, as blkid does) and the geometry the used-block map needs,
//! validated against the partition before anything is sized from it.

use crate::error::Result;

use super::checksum::crc32c;
use super::fields::{label, le16, le32, uuid};
use super::fs::{Filesystem, FsType};
use super::region::Region;

/// `s_magic`.
const MAGIC: u16 = 0xef53;
/// The superblock's offset in the file system and its size.
pub(crate) const SB_OFFSET: u64 = 1024;
const SB_SIZE: usize = 1024;

pub(crate) mod compat {
    pub(crate) const HAS_JOURNAL: u32 = 0x4;
    pub(crate) const SPARSE_SUPER2: u32 = 0x200;
}

pub(crate) mod incompat {
    pub(crate) const FILETYPE: u32 = 0x2;
    pub(crate) const RECOVER: u32 = 0x4;
    pub(crate) const JOURNAL_DEV: u32 = 0x8;
    pub(crate) const META_BG: u32 = 0x10;
    pub(crate) const BIT64: u32 = 0x80;
    pub(crate) const CSUM_SEED: u32 = 0x2000;
    /// Every incompatible feature the kernel knows (compression 0x1,
    /// filetype, recover, journal_dev, meta_bg, extents 0x40, 64bit, mmp
    /// 0x100, flex_bg 0x200, ea_inode 0x400, dirdata 0x1000, csum_seed,
    /// largedir 0x4000, inline_data 0x8000, encrypt 0x10000, casefold
    /// 0x20000). Of these only meta_bg, 64bit and journal_dev change where
    /// allocation metadata is; the others are fine for a block map.
    pub(crate) const KNOWN: u32 = 0x1
        | 0x2
        | 0x4
        | 0x8
        | 0x10
        | 0x40
        | 0x80
        | 0x100
        | 0x200
        | 0x400
        | 0x1000
        | 0x2000
        | 0x4000
        | 0x8000
        | 0x10000
        | 0x20000;
}

pub(crate) mod ro_compat {
    pub(crate) const SPARSE_SUPER: u32 = 0x1;
    pub(crate) const LARGE_FILE: u32 = 0x2;
    pub(crate) const BTREE_DIR: u32 = 0x4;
    pub(crate) const GDT_CSUM: u32 = 0x10;
    pub(crate) const BIGALLOC: u32 = 0x200;
    pub(crate) const METADATA_CSUM: u32 = 0x400;
}

/// The superblock fields ferry uses.
#[derive(Clone, Debug)]
pub(crate) struct Superblock {
    pub(crate) raw: Vec<u8>,
    pub(crate) inodes_count: u32,
    pub(crate) blocks_count: u64,
    pub(crate) free_blocks: u64,
    pub(crate) first_data_block: u64,
    pub(crate) log_block_size: u32,
    pub(crate) log_cluster_size: u32,
    pub(crate) blocks_per_group: u64,
    pub(crate) clusters_per_group: u64,
    pub(crate) inodes_per_group: u32,
    pub(crate) rev_level: u32,
    pub(crate) inode_size: u64,
    pub(crate) compat: u32,
    pub(crate) incompat: u32,
    pub(crate) ro_compat: u32,
    pub(crate) uuid: [u8; 16],
    pub(crate) reserved_gdt_blocks: u64,
    pub(crate) desc_size: u64,
    pub(crate) first_meta_bg: u64,
    pub(crate) backup_bgs: [u64; 2],
    pub(crate) checksum_seed: u32,
}

impl Superblock {
    /// Parses the 1024 bytes at [`SB_OFFSET`]; `None` without the magic.
    pub(crate) fn parse(raw: &[u8]) -> Option<Superblock> {
        if raw.len() < SB_SIZE || le16(raw, 0x38) != MAGIC {
            return None;
        }
        let incompat = le32(raw, 0x60);
        let bit64 = incompat & incompat::BIT64 != 0;
        let hi = |at: usize| {
            if bit64 {
                u64::from(le32(raw, at)) << 32
            } else {
                0
            }
        };
        let rev_level = le32(raw, 0x4c);
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&raw[0x68..0x78]);
        Some(Superblock {
            inodes_count: le32(raw, 0),
            blocks_count: u64::from(le32(raw, 4)) | hi(0x150),
            free_blocks: u64::from(le32(raw, 0xc)) | hi(0x158),
            first_data_block: u64::from(le32(raw, 0x14)),
            log_block_size: le32(raw, 0x18),
            log_cluster_size: le32(raw, 0x1c),
            blocks_per_group: u64::from(le32(raw, 0x20)),
            clusters_per_group: u64::from(le32(raw, 0x24)),
            inodes_per_group: le32(raw, 0x28),
            rev_level,
            inode_size: if rev_level == 0 {
                128
            } else {
                u64::from(le16(raw, 0x58))
            },
            compat: le32(raw, 0x5c),
            incompat,
            ro_compat: le32(raw, 0x64),
            uuid,
            reserved_gdt_blocks: u64::from(le16(raw, 0xce)),
            desc_size: if bit64 {
                u64::from(le16(raw, 0xfe))
            } else {
                32
            },
            first_meta_bg: u64::from(le32(raw, 0x104)),
            backup_bgs: [u64::from(le32(raw, 0x24c)), u64::from(le32(raw, 0x250))],
            checksum_seed: le32(raw, 0x270),
            raw: raw[..SB_SIZE].to_vec(),
        })
    }

    /// Reads and parses the superblock of `part`; `None` without the magic.
    pub(crate) fn read(part: &Region) -> Result<Option<Superblock>> {
        let mut raw = vec![0u8; SB_SIZE];
        if !part.probe(SB_OFFSET, &mut raw)? {
            return Ok(None);
        }
        Ok(Superblock::parse(&raw))
    }

    pub(crate) fn has_compat(&self, f: u32) -> bool {
        self.compat & f != 0
    }

    pub(crate) fn has_incompat(&self, f: u32) -> bool {
        self.incompat & f != 0
    }

    pub(crate) fn has_ro_compat(&self, f: u32) -> bool {
        self.ro_compat & f != 0
    }

    /// Block size in bytes (valid after [`Self::check`]).
    pub(crate) fn block_size(&self) -> u64 {
        1024u64 << self.log_block_size.min(6)
    }

    /// Allocation unit in bytes: the cluster with bigalloc, else the block.
    pub(crate) fn cluster_size(&self) -> u64 {
        if self.has_ro_compat(ro_compat::BIGALLOC) {
            1024u64 << self.log_cluster_size.min(30)
        } else {
            self.block_size()
        }
    }

    /// Blocks per cluster.
    pub(crate) fn cluster_ratio(&self) -> u64 {
        self.cluster_size() / self.block_size()
    }

    /// Number of block groups (valid after [`Self::check`]).
    pub(crate) fn groups(&self) -> u64 {
        (self.blocks_count - self.first_data_block).div_ceil(self.blocks_per_group)
    }

    /// Metadata checksums (`metadata_csum`).
    pub(crate) fn metadata_csum(&self) -> bool {
        self.has_ro_compat(ro_compat::METADATA_CSUM)
    }

    /// Group descriptors carry checksums and the `*_UNINIT` flags count.
    pub(crate) fn group_desc_csum(&self) -> bool {
        self.metadata_csum() || self.has_ro_compat(ro_compat::GDT_CSUM)
    }

    /// The seed of metadata checksums.
    pub(crate) fn csum_seed(&self) -> u32 {
        if self.has_incompat(incompat::CSUM_SEED) {
            self.checksum_seed
        } else {
            crc32c(!0, &self.uuid)
        }
    }

    /// ext2, ext3 or ext4, by blkid's rules: ext4 when any feature beyond
    /// ext3's is present, ext3 with a journal, ext2 otherwise.
    pub(crate) fn fs_type(&self) -> FsType {
        let ext3_incompat = incompat::FILETYPE | incompat::RECOVER | incompat::META_BG;
        let ext3_ro = ro_compat::SPARSE_SUPER | ro_compat::LARGE_FILE | ro_compat::BTREE_DIR;
        if self.incompat & !ext3_incompat != 0 || self.ro_compat & !ext3_ro != 0 {
            FsType::Ext4
        } else if self.has_compat(compat::HAS_JOURNAL) {
            FsType::Ext3
        } else {
            FsType::Ext2
        }
    }

    /// Checks that the geometry is consistent and fits in `len` bytes;
    /// the reason when it does not.
    pub(crate) fn check(&self, len: u64) -> std::result::Result<(), String> {
        if self.log_block_size > 6 {
            return Err(format!("block size 2^(10+{})", self.log_block_size));
        }
        let bs = self.block_size();
        if self.has_ro_compat(ro_compat::BIGALLOC) {
            if self.log_cluster_size < self.log_block_size || self.log_cluster_size > 29 {
                return Err(format!(
                    "cluster size 2^(10+{}) with block size {bs}",
                    self.log_cluster_size
                ));
            }
            if self.first_data_block != 0 {
                return Err("bigalloc with first data block 1".into());
            }
        } else if self.clusters_per_group != self.blocks_per_group {
            return Err(format!(
                "{} clusters but {} blocks per group without bigalloc",
                self.clusters_per_group, self.blocks_per_group
            ));
        }
        let ratio = self.cluster_ratio();
        // mke2fs accepts 256 to 8 × block size blocks per group; fewer would
        // let a damaged superblock ask for millions of descriptors.
        if self.clusters_per_group == 0
            || self.blocks_per_group < 256
            || self.clusters_per_group > 8 * bs
            || self.clusters_per_group % 8 != 0
            || self.blocks_per_group != self.clusters_per_group.saturating_mul(ratio)
        {
            return Err(format!(
                "{} blocks and {} clusters per group with {bs}-byte blocks",
                self.blocks_per_group, self.clusters_per_group
            ));
        }
        if self.first_data_block > 1 || self.first_data_block == 1 && (bs != 1024 || ratio != 1) {
            return Err(format!(
                "first data block {} with {bs}-byte blocks",
                self.first_data_block
            ));
        }
        if self.blocks_count <= self.first_data_block {
            return Err(format!("{} blocks", self.blocks_count));
        }
        match self.blocks_count.checked_mul(bs) {
            Some(size) if size <= len => {}
            _ => {
                return Err(format!(
                    "{} blocks of {bs} bytes do not fit the {len}-byte partition (truncated \
                     image?)",
                    self.blocks_count
                ))
            }
        }
        if self.free_blocks > self.blocks_count {
            return Err(format!(
                "{} free blocks of {}",
                self.free_blocks, self.blocks_count
            ));
        }
        if self.inodes_per_group == 0 || u64::from(self.inodes_per_group) > 8 * bs {
            return Err(format!("{} inodes per group", self.inodes_per_group));
        }
        if u64::from(self.inodes_count) != self.groups() * u64::from(self.inodes_per_group) {
            return Err(format!(
                "{} inodes but {} groups of {}",
                self.inodes_count,
                self.groups(),
                self.inodes_per_group
            ));
        }
        if !self.inode_size.is_power_of_two() || self.inode_size < 128 || self.inode_size > bs {
            return Err(format!("inode size {}", self.inode_size));
        }
        if self.has_incompat(incompat::BIT64)
            && (self.desc_size < 64 || self.desc_size > 1024 || !self.desc_size.is_power_of_two())
        {
            return Err(format!("group descriptor size {}", self.desc_size));
        }
        if self.desc_size > bs {
            return Err(format!(
                "group descriptor size {} > block size",
                self.desc_size
            ));
        }
        Ok(())
    }
}

/// The ext2/3/4 detector.
pub(crate) fn detect(part: &Region) -> Result<Option<Filesystem>> {
    let Some(sb) = Superblock::read(part)? else {
        return Ok(None);
    };
    if sb.has_incompat(incompat::JOURNAL_DEV) {
        // An external journal device: blkid calls it jbd; ferry does not
        // handle it specially (captured whole).
        return Ok(None);
    }
    let mut fs = Filesystem {
        fs_type: sb.fs_type(),
        version: Some(format!("{}.{}", sb.rev_level, le16(&sb.raw, 0x3e))),
        uuid: uuid(&sb.uuid),
        label: label(&sb.raw[0x78..0x88]),
        size: None,
        used: None,
        block_size: None,
        problem: None,
    };
    match sb.check(part.len()) {
        Ok(()) => {
            fs.block_size = u32::try_from(sb.block_size()).ok();
            fs.size = Some(sb.blocks_count * sb.block_size());
            fs.used = Some((sb.blocks_count - sb.free_blocks) * sb.block_size());
        }
        Err(why) => fs.problem = Some(format!("superblock at byte {}: {why}", part.abs(SB_OFFSET))),
    }
    Ok(Some(fs))
}
