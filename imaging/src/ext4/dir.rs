//! Directory contents: every live entry of a directory, read block by
//! block in file order.
//!
//! Hashed (htree) directories are read the same way: their index blocks
//! look like one empty entry spanning the block (or `.` and `..` followed
//! by the index root), so a linear scan sees exactly the leaf entries.
//! With metadata checksums, each leaf block ends in a 12-byte tail entry
//! whose CRC32C is verified, and index blocks end in a `dx_tail`. Inline
//! directories keep their entries in `i_block` (after the parent's inode
//! number) and in the `system.data` xattr.

use super::blocks::runs;
use super::crc32c::crc32c;
use super::fault::{corrupt, unsupported, Fault, Parsed};
use super::inode::{flags, Inode, I_BLOCK_LEN};
use super::raw::{byte, le16, le32, u64_of};
use super::superblock::compat;
use super::xattr::inline_data;
use super::{Budget, Vol};

/// One name in a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DirEntry {
    /// The name (never empty, no `/` or NUL, not `.` or `..`).
    pub(crate) name: Vec<u8>,
    /// Inode it names.
    pub(crate) ino: u32,
}

/// The entries of directory `dir` (without `.` and `..`), sorted by name.
pub(crate) fn read_dir(v: Vol<'_>, dir: &Inode, budget: &Budget) -> Parsed<Vec<DirEntry>> {
    let ino = dir.ino;
    if dir.has(flags::ENCRYPT) {
        return unsupported!("directory inode {ino} is encrypted");
    }
    let sb = v.sb;
    let bs = sb.bs();
    if dir.size > sb.blocks_count.saturating_mul(bs) {
        return corrupt!(
            "directory inode {ino} claims {} bytes, more than the file system holds",
            dir.size
        );
    }
    let nblocks = dir.size.div_ceil(bs);
    let mut entries = Vec::new();
    if dir.has(flags::INLINE_DATA) {
        // `i_block` starts with the parent's inode number; entries fill the
        // rest of it and all of `system.data`.
        let data = inline_data(dir)?;
        let (first, second) = data.split_at(I_BLOCK_LEN);
        let at = |off: usize| {
            format!(
                "directory inode {ino}, inline entries at byte {}",
                dir.offset + u64_of(off)
            )
        };
        parse_entries(v, &first[4..], &|off| at(0x28 + 4 + off), &mut entries)?;
        parse_entries(
            v,
            second,
            &|off| format!("{} (system.data offset {off})", at(0)),
            &mut entries,
        )?;
        return finish(ino, entries);
    }
    let mut block = vec![0u8; sb.bsz()];
    for run in runs(v, dir, nblocks, budget)? {
        if run.unwritten {
            continue;
        }
        for i in 0..run.len {
            budget.take(1, ino)?;
            let physical = run.physical + i;
            let logical = run.logical + i;
            let off = physical * bs;
            v.r.read_at(off, &mut block).map_err(|f| {
                f.context(format!(
                    "directory inode {ino}: block {logical} (block {physical}, byte {off})"
                ))
            })?;
            parse_block(v, dir, &block, logical, physical, &mut entries)?;
        }
    }
    finish(ino, entries)
}

/// Sorts the entries and rejects duplicate names.
fn finish(ino: u32, mut entries: Vec<DirEntry>) -> Parsed<Vec<DirEntry>> {
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(w) = entries.windows(2).find(|w| w[0].name == w[1].name) {
        return corrupt!(
            "directory inode {ino} holds the name {:?} twice",
            String::from_utf8_lossy(&w[0].name)
        );
    }
    Ok(entries)
}

/// `ext4_rec_len_from_disk`.
fn rec_len(raw: u16, block_size: usize) -> usize {
    let len = usize::from(raw);
    if block_size >= 65536 && (len == 65535 || len == 0) {
        block_size
    } else {
        (len & 65532) | ((len & 3) << 16)
    }
}

/// Where the count/limit header of an htree index block starts, if
/// `block` (logical block `logical` of an indexed directory) is one: the
/// root is block 0 with `.` (12 bytes), `..` spanning the rest and an
/// 8-byte `dx_root_info`; interior nodes are one empty entry spanning the
/// block (`__ext4_read_dirblock`'s test).
fn dx_count_offset(block: &[u8], logical: u64) -> Option<usize> {
    let bs = block.len();
    let first = rec_len(le16(block, 4), bs);
    if logical == 0 {
        let dotdot = rec_len(le16(block, 16), bs);
        let info_len = byte(block, 0x1d);
        (first == 12 && dotdot == bs - 12 && le32(block, 0x18) == 0 && info_len == 8)
            .then_some(0x20)
    } else {
        (first == bs && le32(block, 0) == 0).then_some(8)
    }
}

/// `ext4_dx_csum_verify`: the 8-byte tail after `limit` entries holds a
/// CRC32C of the header, the `count` used entries and the tail's first
/// four bytes.
fn verify_dx(dir: &Inode, block: &[u8], count_offset: usize) -> Result<(), String> {
    let limit = usize::from(le16(block, count_offset));
    let count = usize::from(le16(block, count_offset + 2));
    let tail = count_offset + 8 * limit;
    if count > limit || tail + 8 > block.len() {
        return Err(format!(
            "index block has {count} of {limit} entries, more than fit with a checksum"
        ));
    }
    let mut c = crc32c(dir.csum_seed, &block[..count_offset + 8 * count]);
    c = crc32c(c, &block[tail..tail + 4]);
    c = crc32c(c, &[0; 4]);
    let stored = le32(block, tail + 4);
    if stored == c {
        Ok(())
    } else {
        Err(format!(
            "index block checksum {stored:#010x} does not match its contents ({c:#010x})"
        ))
    }
}

/// Whether the last 12 bytes of `block` are a checksum tail entry.
fn has_tail(block: &[u8]) -> bool {
    let t = block.len() - 12;
    le32(block, t) == 0
        && le16(block, t + 4) == 12
        && byte(block, t + 6) == 0
        && byte(block, t + 7) == 0xde
}

fn parse_block(
    v: Vol<'_>,
    dir: &Inode,
    block: &[u8],
    logical: u64,
    physical: u64,
    out: &mut Vec<DirEntry>,
) -> Parsed<()> {
    let ino = dir.ino;
    let bs = block.len();
    let at = |off: usize| {
        format!(
            "directory inode {ino}, block {logical} (byte {} of the file system)",
            physical * u64_of(bs) + u64_of(off)
        )
    };
    let htree = dir.has(flags::INDEX) && v.sb.compat & compat::DIR_INDEX != 0;
    if htree {
        if let Some(count_offset) = dx_count_offset(block, logical) {
            // An index block: no entries besides `.` and `..`.
            if v.sb.metadata_csum() {
                verify_dx(dir, block, count_offset)
                    .map_err(|why| Fault::Corrupt(format!("{}: {why}", at(0))))?;
            }
            return Ok(());
        }
    }
    if v.sb.metadata_csum() {
        if !has_tail(block) {
            return corrupt!("{}: leaf block has no checksum", at(0));
        }
        let stored = le32(block, bs - 4);
        let computed = crc32c(dir.csum_seed, &block[..bs - 12]);
        if stored != computed {
            return corrupt!(
                "{}: checksum {stored:#010x} does not match its contents ({computed:#010x})",
                at(0)
            );
        }
    }
    parse_entries(v, block, &at, out)
}

/// Parses the directory entries filling `region`.
fn parse_entries(
    v: Vol<'_>,
    region: &[u8],
    at: &dyn Fn(usize) -> String,
    out: &mut Vec<DirEntry>,
) -> Parsed<()> {
    let block = region;
    let bs = region.len();
    let mut off = 0usize;
    while off < bs {
        if bs - off < 12 {
            return corrupt!("{}: entry at offset {off} runs past the block", at(off));
        }
        let child = le32(block, off);
        let len = rec_len(le16(block, off + 4), bs);
        let name_len = usize::from(byte(block, off + 6));
        if len < 12 || len % 4 != 0 || len < (8 + name_len + 3) & !3 || len > bs - off {
            return corrupt!(
                "{}: entry at offset {off} has record length {len} (name length {name_len})",
                at(off)
            );
        }
        if child != 0 {
            let name = &block[off + 8..off + 8 + name_len];
            if name != b"." && name != b".." {
                if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
                    return corrupt!(
                        "{}: entry at offset {off} has an invalid name {:?}",
                        at(off),
                        String::from_utf8_lossy(name)
                    );
                }
                if child > v.sb.inodes_count || (child < v.sb.first_ino && child != 2) {
                    return corrupt!(
                        "{}: entry {:?} names inode {child}, which is out of range or reserved",
                        at(off),
                        String::from_utf8_lossy(name)
                    );
                }
                out.push(DirEntry {
                    name: name.to_vec(),
                    ino: child,
                });
            }
        }
        off += len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::rec_len;

    #[test]
    fn record_lengths() {
        assert_eq!(rec_len(12, 4096), 12);
        assert_eq!(rec_len(4096, 4096), 4096);
        assert_eq!(rec_len(0, 65536), 65536);
        assert_eq!(rec_len(65535, 65536), 65536);
    }
}
