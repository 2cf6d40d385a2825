//! Which physical blocks hold an inode's data: extent trees (ext4) and
//! direct/indirect block maps (ext2/3).
//!
//! Every metadata block read here (extent tree nodes, indirect blocks) is
//! charged to the walk's [`Budget`], so a corrupt tree that revisits the
//! same blocks, or claims more of them than the file system has, ends in
//! an error instead of a hang.

use super::crc32c::crc32c;
use super::fault::{corrupt, Parsed};
use super::inode::{flags, Inode, I_BLOCK_LEN};
use super::raw::{le16, le32, us};
use super::{Budget, Vol};

/// Magic number of an extent tree node header.
const EXTENT_MAGIC: u16 = 0xf30a;
/// The kernel never builds deeper trees.
const MAX_EXTENT_DEPTH: u16 = 5;
/// Lengths above this in a leaf mark an unwritten (preallocated) extent.
const INIT_MAX_LEN: u16 = 32768;

/// A run of logical blocks stored contiguously on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    /// First logical block in the file.
    pub(crate) logical: u64,
    /// First physical block.
    pub(crate) physical: u64,
    /// Number of blocks.
    pub(crate) len: u64,
    /// Preallocated, reads as zeros.
    pub(crate) unwritten: bool,
}

/// The runs of `inode` that intersect logical blocks `0..nblocks`, in
/// logical order, clipped to that range. Holes are simply absent.
pub(crate) fn runs(v: Vol<'_>, inode: &Inode, nblocks: u64, budget: &Budget) -> Parsed<Vec<Run>> {
    let mut out = Vec::new();
    if nblocks == 0 {
        return Ok(out);
    }
    let mut mapper = Mapper {
        v,
        inode,
        nblocks,
        budget,
        out: &mut out,
        mapped: 0,
    };
    if inode.has(flags::EXTENTS) {
        mapper.extent_node(inode.i_block(), None, None)?;
    } else {
        mapper.indirect_map()?;
    }
    Ok(out)
}

struct Mapper<'a, 'b> {
    v: Vol<'a>,
    inode: &'b Inode,
    nblocks: u64,
    budget: &'b Budget,
    out: &'b mut Vec<Run>,
    /// Blocks mapped so far: never more than the file system has.
    mapped: u64,
}

impl Mapper<'_, '_> {
    fn push(&mut self, logical: u64, physical: u64, len: u64, unwritten: bool) -> Parsed<()> {
        if logical >= self.nblocks || len == 0 {
            return Ok(());
        }
        if !self.v.sb.valid_range(physical, len) {
            return corrupt!(
                "inode {}: logical block {logical} maps to blocks {physical}..{} outside the file system ({} blocks)",
                self.inode.ino,
                physical.saturating_add(len),
                self.v.sb.blocks_count
            );
        }
        let len = len.min(self.nblocks - logical);
        let ino = self.inode.ino;
        if let Some(last) = self.out.last() {
            if logical < last.logical + last.len {
                return corrupt!(
                    "inode {ino}: logical block {logical} is mapped twice (extents overlap or run backwards)"
                );
            }
        }
        self.mapped += len;
        if self.mapped > self.v.sb.blocks_count {
            return corrupt!(
                "inode {ino} maps more blocks than the file system has ({})",
                self.v.sb.blocks_count
            );
        }
        if let Some(last) = self.out.last_mut() {
            if last.logical + last.len == logical
                && last.physical + last.len == physical
                && last.unwritten == unwritten
            {
                last.len += len;
                return Ok(());
            }
        }
        self.out.push(Run {
            logical,
            physical,
            len,
            unwritten,
        });
        Ok(())
    }

    /// Reads a tree block (extent node or indirect block), charging the budget.
    fn read_block(&mut self, block: u64, what: &str) -> Parsed<Vec<u8>> {
        let ino = self.inode.ino;
        if !self.v.sb.valid_range(block, 1) {
            return corrupt!("inode {ino}: {what} block {block} lies outside the file system");
        }
        self.budget.take(1, ino)?;
        let mut buf = vec![0u8; self.v.sb.bsz()];
        let off = block * self.v.sb.bs();
        self.v
            .r
            .read_at(off, &mut buf)
            .map_err(|f| f.context(format!("inode {ino}: {what} block {block} (byte {off})")))?;
        Ok(buf)
    }

    /// One extent tree node: the root in `i_block` (`at` None) or a block.
    fn extent_node(
        &mut self,
        node: &[u8],
        at: Option<u64>,
        depth_wanted: Option<u16>,
    ) -> Parsed<()> {
        let ino = self.inode.ino;
        let place = match at {
            Some(b) => format!("extent block {b} (byte {})", b * self.v.sb.bs()),
            None => "extent root in i_block".to_string(),
        };
        let magic = le16(node, 0);
        let entries = usize::from(le16(node, 2));
        let max = usize::from(le16(node, 4));
        let depth = le16(node, 6);
        if magic != EXTENT_MAGIC {
            return corrupt!("inode {ino}: {place} has bad magic {magic:#06x}");
        }
        if entries > max || 12 + 12 * max > node.len() {
            return corrupt!(
                "inode {ino}: {place} claims {entries} of {max} entries, more than fit"
            );
        }
        if depth > MAX_EXTENT_DEPTH || depth_wanted.is_some_and(|d| d != depth) {
            return corrupt!("inode {ino}: {place} has depth {depth}, expected {depth_wanted:?} (at most {MAX_EXTENT_DEPTH})");
        }
        if let Some(b) = at {
            if self.v.sb.metadata_csum() {
                let tail = 12 + 12 * max;
                if tail + 4 > node.len() {
                    return corrupt!("inode {ino}: {place} has no room for its checksum");
                }
                let stored = le32(node, tail);
                let computed = crc32c(self.inode.csum_seed, &node[..tail]);
                if stored != computed {
                    return corrupt!(
                        "inode {ino}: extent block {b} checksum {stored:#010x} does not match its contents ({computed:#010x})"
                    );
                }
            }
        }
        let mut next_start = 0u64;
        for i in 0..entries {
            let e = &node[12 + 12 * i..24 + 12 * i];
            let first = u64::from(le32(e, 0));
            if i > 0 && first < next_start {
                return corrupt!("inode {ino}: {place} entry {i} (logical block {first}) overlaps or is out of order");
            }
            if first >= self.nblocks {
                break;
            }
            if depth == 0 {
                let raw_len = le16(e, 4);
                let (len, unwritten) = if raw_len > INIT_MAX_LEN {
                    (raw_len - INIT_MAX_LEN, true)
                } else {
                    (raw_len, false)
                };
                if len == 0 {
                    return corrupt!("inode {ino}: {place} entry {i} has length 0");
                }
                let physical = u64::from(le16(e, 6)) << 32 | u64::from(le32(e, 8));
                self.push(first, physical, u64::from(len), unwritten)?;
                next_start = first + u64::from(len);
            } else {
                let child = u64::from(le32(e, 4)) | u64::from(le16(e, 8)) << 32;
                let block = self.read_block(child, "extent")?;
                self.extent_node(&block, Some(child), Some(depth - 1))?;
                next_start = first + 1;
            }
        }
        Ok(())
    }

    /// ext2/3 block map: 12 direct pointers, then single, double and triple
    /// indirect blocks of `block_size / 4` pointers each.
    fn indirect_map(&mut self) -> Parsed<()> {
        let i_block: [u8; I_BLOCK_LEN] = self
            .inode
            .i_block()
            .try_into()
            .expect("i_block is 60 bytes");
        for i in 0..12 {
            let p = u64::from(le32(&i_block, 4 * i));
            if p != 0 {
                self.push(i as u64, p, 1, false)?;
            }
        }
        let per = self.v.sb.bs() / 4;
        let mut start = 12u64;
        let mut span = per;
        for level in 1..=3u32 {
            let p = u64::from(le32(&i_block, 44 + 4 * us(level)));
            if start >= self.nblocks {
                break;
            }
            if p != 0 {
                self.indirect(p, level, start, span / per)?;
            }
            start = start.saturating_add(span);
            span = span.saturating_mul(per);
        }
        Ok(())
    }

    /// An indirect block at `level` (1 = pointers to data) whose first
    /// pointer covers logical block `start`; each pointer covers `each`
    /// blocks.
    fn indirect(&mut self, block: u64, level: u32, start: u64, each: u64) -> Parsed<()> {
        let data = self.read_block(block, "indirect")?;
        let per = self.v.sb.bs() / 4;
        for i in 0..per {
            let first = start + i * each;
            if first >= self.nblocks {
                break;
            }
            let p = u64::from(le32(
                &data,
                usize::try_from(4 * i).expect("below the block size"),
            ));
            if p == 0 {
                continue;
            }
            if level == 1 {
                self.push(first, p, 1, false)?;
            } else {
                self.indirect(p, level - 1, first, each / per)?;
            }
        }
        Ok(())
    }
}
