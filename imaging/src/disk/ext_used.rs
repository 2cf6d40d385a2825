//! The used-block map of an ext2/3/4 file system, from its group
//! descriptors and block bitmaps.
//!
//! Used = (every group's metadata) ∪ (every bit set in an initialised block
//! bitmap). The metadata is block 0 up to the superblock; in each group
//! that has a superblock backup (all groups without `sparse_super`; 0, 1
//! and powers of 3, 5, 7 with it; 0 and the two `s_backup_bgs` with
//! `sparse_super2`) the backup, the descriptor blocks and the reserved GDT
//! blocks (`meta_bg` groups instead hold one descriptor block in the first,
//! second and last group of each meta group); and each group's block
//! bitmap, inode bitmap and inode table **at the locations its descriptor
//! records**, wherever `flex_bg` put them.
//!
//! A group with `BLOCK_UNINIT` (honoured only when the descriptors carry
//! checksums, `uninit_bg` or `metadata_csum`, as in the kernel) has no
//! bitmap on disk; its used blocks are exactly the metadata above that lies
//! in it, which the union already holds. mke2fs clears `BLOCK_UNINIT` on a
//! group that receives other groups' tables, and the union covers them even
//! if it did not.
//!
//! Checks: the superblock (geometry, and its CRC32C with
//! `metadata_csum`), each descriptor's checksum (CRC16 with `uninit_bg`,
//! CRC32C with `metadata_csum`), each bitmap's CRC32C with `metadata_csum`,
//! and that every recorded location lies inside the file system. A file
//! system whose journal needs recovery is refused: recovery may change the
//! bitmaps.

use crate::error::{Error, Result};

use super::checksum::{crc16, crc32c};
use super::ext::{compat, incompat, ro_compat, Superblock, SB_OFFSET};
use super::fields::{le16, le32};
use super::ranges::{normalize, push};
use super::region::Region;

/// `bg_flags`: the block bitmap is not initialised.
const BLOCK_UNINIT: u16 = 0x2;
/// Offset of `bg_checksum` in a descriptor.
const DESC_CSUM: usize = 0x1e;
/// End of `bg_block_bitmap_csum_hi`: descriptors at least this long carry
/// the high half of the bitmap checksum.
const BITMAP_CSUM_HI_END: u64 = 0x3a;

/// One group's descriptor, the fields used here.
struct Group {
    block_bitmap: u64,
    inode_bitmap: u64,
    inode_table: u64,
    flags: u16,
    bitmap_csum: u32,
}

/// The geometry derived from a checked superblock.
struct Geometry<'a> {
    sb: &'a Superblock,
    bs: u64,
    groups: u64,
    desc_per_block: u64,
    gdt_blocks: u64,
    meta_bg: bool,
    inode_table_blocks: u64,
}

impl Geometry<'_> {
    /// First block of group `g`.
    fn group_start(&self, g: u64) -> u64 {
        self.sb.first_data_block + g * self.sb.blocks_per_group
    }

    /// Does group `g` hold a superblock backup?
    fn has_super(&self, g: u64) -> bool {
        if g == 0 {
            return true;
        }
        if self.sb.has_compat(compat::SPARSE_SUPER2) {
            return g == self.sb.backup_bgs[0] || g == self.sb.backup_bgs[1];
        }
        if g == 1 || !self.sb.has_ro_compat(ro_compat::SPARSE_SUPER) {
            return true;
        }
        if g % 2 == 0 {
            return false;
        }
        [3u64, 5, 7].iter().any(|&b| {
            let mut p = b;
            while p < g {
                p *= b;
            }
            p == g
        })
    }

    /// Extra block before the superblock in group 0 (1 KiB blocks with
    /// first data block 0, as with bigalloc: block 0 is the boot block).
    fn boot_block(&self, g: u64) -> u64 {
        u64::from(g == 0 && self.bs == 1024 && self.sb.first_data_block == 0)
    }

    /// Is group `g` in the `meta_bg` part of the file system?
    fn in_meta_bg(&self, g: u64) -> bool {
        self.meta_bg && g / self.desc_per_block >= self.sb.first_meta_bg
    }

    /// The block of descriptor block `i`.
    fn desc_block(&self, i: u64) -> u64 {
        if !self.meta_bg || i < self.sb.first_meta_bg {
            // Right after the superblock's block.
            SB_OFFSET / self.bs + 1 + i
        } else {
            let g = i * self.desc_per_block;
            self.group_start(g) + self.boot_block(g) + u64::from(self.has_super(g))
        }
    }

    /// The superblock backup, descriptor and reserved GDT blocks at the
    /// start of group `g`: `(first block, count)`.
    fn base_meta(&self, g: u64) -> (u64, u64) {
        let sup = u64::from(self.has_super(g));
        let n = if !self.in_meta_bg(g) {
            if sup == 1 {
                let gdb = if self.meta_bg {
                    self.sb.first_meta_bg
                } else {
                    self.gdt_blocks
                };
                1 + gdb + self.sb.reserved_gdt_blocks
            } else {
                0
            }
        } else {
            let i = g % self.desc_per_block;
            let gdb = u64::from(i == 0 || i == 1 || i == self.desc_per_block - 1);
            sup + gdb
        };
        (self.group_start(g), self.boot_block(g) + n)
    }
}

/// The used byte ranges of the ext2/3/4 file system in `part`.
pub(crate) fn used_ranges(part: &Region) -> Result<Vec<(u64, u64)>> {
    let sb_at = part.abs(SB_OFFSET);
    let sb = Superblock::read(part)?.ok_or_else(|| {
        part.corrupt(format!(
            "no ext2/3/4 superblock (magic 0xef53) at byte {sb_at}"
        ))
    })?;
    let bad_sb = |why: String| part.corrupt(format!("ext superblock at byte {sb_at}: {why}"));
    sb.check(part.len()).map_err(bad_sb)?;
    if sb.metadata_csum() {
        let stored = le32(&sb.raw, 0x3fc);
        if crc32c(!0, &sb.raw[..0x3fc]) != stored {
            return Err(bad_sb("fails its metadata_csum checksum".into()));
        }
    }
    // Not damage, but nothing a block map can be made from.
    let refuse = |why: String| Error::Source {
        path: part.label(),
        reason: format!("ext superblock at byte {sb_at}: {why}"),
    };
    if sb.has_incompat(incompat::JOURNAL_DEV) {
        return Err(refuse(
            "is an external journal device, not a file system".into(),
        ));
    }
    let unknown = sb.incompat & !incompat::KNOWN;
    if unknown != 0 {
        return Err(refuse(format!(
            "has unknown incompatible features {unknown:#x}; its blocks cannot be mapped"
        )));
    }
    if sb.has_incompat(incompat::RECOVER) {
        return Err(refuse(
            "its journal needs recovery, so the bitmaps may be stale; replay it \
             (e2fsck -p, or mount and unmount) or capture the whole partition"
                .into(),
        ));
    }

    let bs = sb.block_size();
    let groups = sb.groups();
    let desc_per_block = bs / sb.desc_size;
    let geo = Geometry {
        sb: &sb,
        bs,
        groups,
        desc_per_block,
        gdt_blocks: groups.div_ceil(desc_per_block),
        meta_bg: sb.has_incompat(incompat::META_BG),
        inode_table_blocks: (u64::from(sb.inodes_per_group) * sb.inode_size).div_ceil(bs),
    };
    if geo.meta_bg && sb.first_meta_bg > geo.gdt_blocks {
        return Err(bad_sb(format!(
            "first meta block group {} beyond the {} descriptor blocks",
            sb.first_meta_bg, geo.gdt_blocks
        )));
    }

    let descs = read_descriptors(part, &geo)?;

    // Metadata, in blocks.
    let mut meta: Vec<(u64, u64)> = Vec::with_capacity(descs.len() * 4 + 1);
    meta.push((0, (SB_OFFSET + 1024).div_ceil(bs)));
    let in_fs = |what: &str, g: u64, start: u64, n: u64| -> Result<(u64, u64)> {
        match start.checked_add(n) {
            Some(end) if start > 0 && end <= sb.blocks_count => Ok((start, end)),
            _ => Err(part.corrupt(format!(
                "ext group {g}: its {what} at block {start} ({n} blocks) lies outside the \
                 {}-block file system (descriptor at byte {})",
                sb.blocks_count,
                part.abs(
                    geo.desc_block(g / desc_per_block) * bs + (g % desc_per_block) * sb.desc_size
                )
            ))),
        }
    };
    for g in 0..groups {
        let (s, n) = geo.base_meta(g);
        meta.push((s, (s + n).min(sb.blocks_count)));
    }
    for (g, d) in descs.iter().enumerate() {
        let g = g as u64;
        meta.push(in_fs("block bitmap", g, d.block_bitmap, 1)?);
        meta.push(in_fs("inode bitmap", g, d.inode_bitmap, 1)?);
        meta.push(in_fs(
            "inode table",
            g,
            d.inode_table,
            geo.inode_table_blocks,
        )?);
    }
    // The descriptor blocks themselves (already in base_meta for groups with
    // a superblock; listed again so a damaged layout cannot drop them).
    for i in 0..geo.gdt_blocks {
        let b = geo.desc_block(i);
        meta.push((b, b + 1));
    }

    // Bitmaps, in blocks, ascending.
    let ratio = sb.cluster_ratio();
    let cpg = sb.clusters_per_group;
    let total_clusters = (sb.blocks_count - sb.first_data_block).div_ceil(ratio);
    let mut used: Vec<(u64, u64)> = Vec::new();
    let mut bitmap = vec![0u8; bs as usize];
    let seed = sb.csum_seed();
    for (g, d) in descs.iter().enumerate() {
        let g = g as u64;
        if sb.group_desc_csum() && d.flags & BLOCK_UNINIT != 0 {
            continue;
        }
        part.read(d.block_bitmap * bs, &mut bitmap, &|| {
            format!("the block bitmap of ext group {g}")
        })?;
        if sb.metadata_csum() {
            let c = crc32c(seed, &bitmap[..(cpg / 8) as usize]);
            let want = if sb.desc_size >= BITMAP_CSUM_HI_END {
                c
            } else {
                c & 0xffff
            };
            if want != d.bitmap_csum {
                return Err(part.corrupt(format!(
                    "ext group {g}: the block bitmap at byte {} fails its checksum",
                    part.abs(d.block_bitmap * bs)
                )));
            }
        }
        let first = g * cpg;
        let n = cpg.min(total_clusters - first);
        let base = sb.first_data_block;
        let mut i = 0u64;
        while i < n {
            let byte = bitmap[(i / 8) as usize];
            if i % 8 == 0 && n - i >= 8 && (byte == 0 || byte == 0xff) {
                if byte == 0xff {
                    let s = base + (first + i) * ratio;
                    push(&mut used, s, s + 8 * ratio);
                }
                i += 8;
                continue;
            }
            if byte >> (i % 8) & 1 != 0 {
                let s = base + (first + i) * ratio;
                push(&mut used, s, s + ratio);
            }
            i += 1;
        }
    }

    used.extend(meta);
    let end = sb.blocks_count;
    Ok(normalize(used)
        .into_iter()
        .map(|(s, e)| (s * bs, e.min(end) * bs))
        .filter(|r| r.0 < r.1)
        .collect())
}

/// Reads and checks every group descriptor.
fn read_descriptors(part: &Region, geo: &Geometry) -> Result<Vec<Group>> {
    let sb = geo.sb;
    let bs = geo.bs;
    let ds = sb.desc_size as usize;
    let bit64 = sb.has_incompat(incompat::BIT64);
    let mut out = Vec::with_capacity(geo.groups as usize);
    let mut block = vec![0u8; bs as usize];
    for i in 0..geo.gdt_blocks {
        let b = geo.desc_block(i);
        if b >= sb.blocks_count {
            return Err(part.corrupt(format!(
                "ext descriptor block {i} would be at block {b}, beyond the {}-block file system",
                sb.blocks_count
            )));
        }
        part.read(b * bs, &mut block, &|| {
            format!("ext group descriptor block {i}")
        })?;
        for j in 0..geo.desc_per_block {
            let g = i * geo.desc_per_block + j;
            if g >= geo.groups {
                break;
            }
            let d = &block[j as usize * ds..(j as usize + 1) * ds];
            if sb.group_desc_csum() {
                let want = desc_checksum(sb, g as u32, d);
                let have = le16(d, DESC_CSUM);
                if want != have {
                    return Err(part.corrupt(format!(
                        "ext group {g}: its descriptor at byte {} fails its checksum \
                         ({have:#06x}, expected {want:#06x})",
                        part.abs(b * bs + (j as usize * ds) as u64)
                    )));
                }
            }
            let hi = |at: usize| {
                if bit64 {
                    u64::from(le32(d, at)) << 32
                } else {
                    0
                }
            };
            let csum_hi = if bit64 && sb.desc_size >= BITMAP_CSUM_HI_END {
                u32::from(le16(d, 0x38)) << 16
            } else {
                0
            };
            out.push(Group {
                block_bitmap: u64::from(le32(d, 0)) | hi(0x20),
                inode_bitmap: u64::from(le32(d, 4)) | hi(0x24),
                inode_table: u64::from(le32(d, 8)) | hi(0x28),
                flags: le16(d, 0x12),
                bitmap_csum: u32::from(le16(d, 0x18)) | csum_hi,
            });
        }
    }
    Ok(out)
}

/// A group descriptor's checksum (`ext4_group_desc_csum`).
fn desc_checksum(sb: &Superblock, group: u32, d: &[u8]) -> u16 {
    let g = group.to_le_bytes();
    let ds = sb.desc_size as usize;
    if sb.metadata_csum() {
        let mut c = crc32c(sb.csum_seed(), &g);
        c = crc32c(c, &d[..DESC_CSUM]);
        c = crc32c(c, &[0, 0]);
        if ds > DESC_CSUM + 2 {
            c = crc32c(c, &d[DESC_CSUM + 2..ds]);
        }
        (c & 0xffff) as u16
    } else {
        let mut c = crc16(!0, &sb.uuid);
        c = crc16(c, &g);
        c = crc16(c, &d[..DESC_CSUM]);
        if sb.has_incompat(incompat::BIT64) && ds > DESC_CSUM + 2 {
            c = crc16(c, &d[DESC_CSUM + 2..ds]);
        }
        c
    }
}
