//! Extended attributes: the in-inode area (after `i_extra_isize`), the
//! external block (`i_file_acl`) and values in their own inodes
//! (`ea_inode`), named and converted as `llistxattr`/`lgetxattr` report
//! them.
//!
//! Both areas start with the magic 0xea020000 (the block with a 32-byte
//! header: magic, refcount, `h_blocks` = 1, hash, checksum), then entries
//! `e_name_len u8, e_name_index u8, e_value_offs u16, e_value_inum u32,
//! e_value_size u32, e_hash u32, e_name[]`, each padded to 4 bytes, ended
//! by four zero bytes. Value offsets count from the first entry (inode) or
//! the block start. The name index selects the prefix; indexes the kernel
//! does not list (0, lustre 5, inline data 7, encryption 9) are skipped.

use super::acl::disk_to_vfs;
use super::blocks::runs;
use super::crc32c::crc32c;
use super::fault::{corrupt, Parsed};
use super::inode::{flags, read_inode, Inode, GOOD_OLD_INODE_SIZE};
use super::raw::{byte, le16, le32, u64_of, us};
use super::superblock::incompat;
use super::{Budget, Vol};

const XATTR_MAGIC: u32 = 0xea02_0000;
/// Size of the external block's header.
const BLOCK_HEADER: usize = 32;
/// `XATTR_SIZE_MAX`: the kernel refuses larger values.
const XATTR_SIZE_MAX: u32 = 65536;

/// Name index → prefix (or whole name for the ACLs), as the kernel lists.
fn prefix(index: u8) -> Option<&'static [u8]> {
    Some(match index {
        1 => b"user.",
        2 => b"system.posix_acl_access",
        3 => b"system.posix_acl_default",
        4 => b"trusted.",
        6 => b"security.",
        8 => b"system.richacl",
        10 => b"gnu.",
        _ => return None,
    })
}

struct RawEntry {
    index: u8,
    name: Vec<u8>,
    value_offs: usize,
    value_inum: u32,
    value_size: u32,
}

/// All xattrs of `inode`, full names, VFS-format values, sorted by name.
pub(crate) fn read_xattrs(
    v: Vol<'_>,
    inode: &Inode,
    budget: &Budget,
) -> Parsed<Vec<(Vec<u8>, Vec<u8>)>> {
    let ino = inode.ino;
    let mut out = Vec::new();
    if let Some((region, place)) = inode_area(inode) {
        collect(v, inode, region, 0, &place, budget, &mut out)?;
    }
    if inode.file_acl != 0 {
        let block = inode.file_acl;
        let bs = v.sb.bs();
        let place = format!(
            "inode {ino}: xattr block {block} (byte {})",
            block.saturating_mul(bs)
        );
        if !v.sb.valid_range(block, 1) {
            return corrupt!("{place} lies outside the file system");
        }
        let mut data = vec![0u8; v.sb.bsz()];
        v.r.read_at(block * bs, &mut data)
            .map_err(|f| f.context(&place))?;
        let magic = le32(&data, 0);
        let blocks = le32(&data, 8);
        if magic != XATTR_MAGIC || blocks != 1 {
            return corrupt!("{place} has magic {magic:#010x} and h_blocks {blocks}, expected {XATTR_MAGIC:#010x} and 1");
        }
        if v.sb.metadata_csum() {
            let stored = le32(&data, 0x10);
            let mut c = crc32c(v.sb.csum_seed, &block.to_le_bytes());
            c = crc32c(c, &data[..0x10]);
            c = crc32c(c, &[0; 4]);
            c = crc32c(c, &data[0x14..]);
            if stored != c {
                return corrupt!(
                    "{place}: checksum {stored:#010x} does not match its contents ({c:#010x})"
                );
            }
        }
        collect(v, inode, &data, BLOCK_HEADER, &place, budget, &mut out)?;
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The entries of one area (from offset `first`) and where the list ends
/// (after its four zero bytes); values may only follow that.
fn entries(region: &[u8], first: usize, place: &str) -> Parsed<(Vec<RawEntry>, usize)> {
    let mut entries = Vec::new();
    let mut off = first;
    loop {
        if off + 4 > region.len() {
            return corrupt!("{place}: entries run past the end of the area (offset {off})");
        }
        if le32(region, off) == 0 {
            break;
        }
        let name_len = usize::from(byte(region, off));
        if off + 16 + name_len > region.len() {
            return corrupt!("{place}: entry at offset {off} runs past the end of the area");
        }
        entries.push(RawEntry {
            index: byte(region, off + 1),
            name: region[off + 16..off + 16 + name_len].to_vec(),
            value_offs: usize::from(le16(region, off + 2)),
            value_inum: le32(region, off + 4),
            value_size: le32(region, off + 8),
        });
        off = (off + 16 + name_len + 3) & !3;
    }
    Ok((entries, off + 4))
}

/// The in-place value of entry `e`, checked to lie in the value area.
fn value<'r>(
    region: &'r [u8],
    entries_end: usize,
    e: &RawEntry,
    place: &str,
    shown: &str,
) -> Parsed<&'r [u8]> {
    if e.value_size == 0 {
        return Ok(&[]);
    }
    let size = us(e.value_size);
    match e.value_offs.checked_add(size) {
        Some(end) if e.value_offs >= entries_end && end <= region.len() => {
            Ok(&region[e.value_offs..end])
        }
        _ => corrupt!(
            "{place}: value of {shown} ({size} bytes at offset {}) lies outside the value area",
            e.value_offs
        ),
    }
}

/// The in-inode xattr area: the bytes after the magic, and a description.
fn inode_area(inode: &Inode) -> Option<(&[u8], String)> {
    let start = GOOD_OLD_INODE_SIZE + inode.extra_isize;
    (inode.raw.len() > GOOD_OLD_INODE_SIZE
        && start + 4 <= inode.raw.len()
        && le32(&inode.raw, start) == XATTR_MAGIC)
        .then(|| {
            (
                &inode.raw[start + 4..],
                format!(
                    "inode {}: in-inode xattrs (byte {})",
                    inode.ino,
                    inode.offset + u64_of(start)
                ),
            )
        })
}

/// Inline data (`inline_data` feature): the 60 bytes of `i_block`
/// followed by the value of the in-inode `system.data` xattr.
pub(crate) fn inline_data(inode: &Inode) -> Parsed<Vec<u8>> {
    let mut data = inode.i_block().to_vec();
    if let Some((region, place)) = inode_area(inode) {
        let (list, end) = entries(region, 0, &place)?;
        if let Some(e) = list.iter().find(|e| e.index == 7 && e.name == b"data") {
            if e.value_inum != 0 {
                return corrupt!("{place}: system.data lives in another inode");
            }
            data.extend_from_slice(value(region, end, e, &place, "system.data")?);
        }
    }
    Ok(data)
}

/// Appends the listed xattrs of one area to `out`.
fn collect(
    v: Vol<'_>,
    inode: &Inode,
    region: &[u8],
    first: usize,
    place: &str,
    budget: &Budget,
    out: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> Parsed<()> {
    let (entries, entries_end) = entries(region, first, place)?;
    for e in entries {
        let Some(prefix) = prefix(e.index) else {
            continue;
        };
        let mut name = prefix.to_vec();
        name.extend_from_slice(&e.name);
        let shown = String::from_utf8_lossy(&name).into_owned();
        let value = if e.value_inum != 0 {
            ea_inode_value(v, inode, &e, &shown, budget)?
        } else {
            value(region, entries_end, &e, place, &shown)?.to_vec()
        };
        let value = if (e.index == 2 || e.index == 3) && e.name.is_empty() {
            match disk_to_vfs(&value) {
                Ok(Some(acl)) => acl,
                Ok(None) => continue,
                Err(why) => return corrupt!("{place}: {shown}: {why}"),
            }
        } else {
            value
        };
        out.push((name, value));
    }
    Ok(())
}

/// A value stored in its own inode (`ea_inode` feature).
fn ea_inode_value(
    v: Vol<'_>,
    owner: &Inode,
    e: &RawEntry,
    shown: &str,
    budget: &Budget,
) -> Parsed<Vec<u8>> {
    let ino = owner.ino;
    let ea = e.value_inum;
    if v.sb.incompat & incompat::EA_INODE == 0 {
        return corrupt!(
            "inode {ino}: {shown} points to value inode {ea}, but the ea_inode feature is off"
        );
    }
    if e.value_size > XATTR_SIZE_MAX {
        return corrupt!(
            "inode {ino}: {shown} claims a {}-byte value, above the kernel's limit",
            e.value_size
        );
    }
    let ea_inode =
        read_inode(v, ea).map_err(|f| f.context(format!("inode {ino}: value of {shown}")))?;
    if !ea_inode.has(flags::EA_INODE) || ea_inode.size != u64::from(e.value_size) {
        return corrupt!(
            "inode {ino}: value inode {ea} of {shown} is not an xattr inode of {} bytes (flags {:#x}, size {})",
            e.value_size,
            ea_inode.flags,
            ea_inode.size
        );
    }
    let size = us(e.value_size);
    let bs = v.sb.bs();
    let mut value = vec![0u8; size];
    for run in runs(v, &ea_inode, ea_inode.size.div_ceil(bs), budget)? {
        if run.unwritten {
            continue;
        }
        let from = usize::try_from(run.logical * bs).expect("below XATTR_SIZE_MAX");
        let to = usize::try_from((run.logical + run.len) * bs)
            .expect("below XATTR_SIZE_MAX")
            .min(size);
        let off = run.physical * bs;
        v.r.read_at(off, &mut value[from..to]).map_err(|f| {
            f.context(format!(
                "inode {ino}: value inode {ea} of {shown} (byte {off})"
            ))
        })?;
    }
    Ok(value)
}
