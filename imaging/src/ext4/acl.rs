//! POSIX ACLs: ext4's on-disk encoding to the kernel's xattr (VFS) format.
//!
//! ext4 stores `system.posix_acl_access` / `_default` compactly: a 4-byte
//! header `a_version = 1`, then entries `e_tag u16, e_perm u16` (4 bytes)
//! for `USER_OBJ`, `GROUP_OBJ`, `MASK` and `OTHER`, and `e_tag u16,
//! e_perm u16, e_id u32` (8 bytes) for `USER` and `GROUP`. `getxattr`
//! returns, and `setxattr` expects, the VFS format: `a_version = 2`, then
//! 8-byte entries for every tag, with `e_id = ACL_UNDEFINED_ID`
//! (0xffffffff) where the tag has no id. All fields are little-endian.

use super::raw::{le16, le32};

const EXT4_ACL_VERSION: u32 = 1;
const POSIX_ACL_XATTR_VERSION: u32 = 2;
const ACL_UNDEFINED_ID: u32 = 0xffff_ffff;

const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;

/// Converts an on-disk ext4 ACL to the VFS xattr format. `Ok(None)` for an
/// ACL without entries (the kernel reports no ACL then); `Err` says what is
/// malformed, as `ext4_acl_from_disk` would reject it.
pub(crate) fn disk_to_vfs(disk: &[u8]) -> Result<Option<Vec<u8>>, String> {
    if disk.len() < 4 {
        return Err(format!("ACL of {} bytes has no header", disk.len()));
    }
    let version = le32(disk, 0);
    if version != EXT4_ACL_VERSION {
        return Err(format!(
            "ACL has version {version}, expected {EXT4_ACL_VERSION}"
        ));
    }
    let count = acl_count(disk.len()).ok_or_else(|| {
        format!(
            "ACL of {} bytes is not a whole number of entries",
            disk.len()
        )
    })?;
    if count == 0 {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(4 + 2 * disk.len());
    out.extend_from_slice(&POSIX_ACL_XATTR_VERSION.to_le_bytes());
    let mut off = 4;
    for _ in 0..count {
        if disk.len() - off < 4 {
            return Err(format!("ACL entry at byte {off} is truncated"));
        }
        let tag = le16(disk, off);
        let perm = le16(disk, off + 2);
        let id = match tag {
            ACL_USER_OBJ | ACL_GROUP_OBJ | ACL_MASK | ACL_OTHER => {
                off += 4;
                ACL_UNDEFINED_ID
            }
            ACL_USER | ACL_GROUP => {
                if disk.len() - off < 8 {
                    return Err(format!("ACL entry at byte {off} is truncated"));
                }
                let id = le32(disk, off + 4);
                off += 8;
                id
            }
            _ => return Err(format!("ACL entry at byte {off} has unknown tag {tag:#x}")),
        };
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    if off != disk.len() {
        return Err(format!(
            "ACL has {} bytes after its {count} entries",
            disk.len() - off
        ));
    }
    Ok(Some(out))
}

/// `ext4_acl_count`: entries in an ACL of `size` bytes, assuming at most
/// four short entries; `None` when the size cannot be right.
fn acl_count(size: usize) -> Option<usize> {
    let size = size.checked_sub(4)?;
    match size.checked_sub(4 * 4) {
        None => (size % 4 == 0).then_some(size / 4),
        Some(long) => (long % 8 == 0).then_some(long / 8 + 4),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `setfacl -m u:1234:rw` leaves on disk (from debugfs) and what
    /// `getfattr` returns for it.
    #[test]
    fn converts_access_acl_like_the_kernel() {
        let disk = [
            1, 0, 0, 0, 1, 0, 6, 0, 2, 0, 6, 0, 0xd2, 4, 0, 0, 4, 0, 4, 0, 0x10, 0, 6, 0, 0x20, 0,
            4, 0,
        ];
        let vfs = [
            2, 0, 0, 0, 1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff, 2, 0, 6, 0, 0xd2, 4, 0, 0, 4, 0, 4, 0,
            0xff, 0xff, 0xff, 0xff, 0x10, 0, 6, 0, 0xff, 0xff, 0xff, 0xff, 0x20, 0, 4, 0, 0xff,
            0xff, 0xff, 0xff,
        ];
        assert_eq!(disk_to_vfs(&disk), Ok(Some(vfs.to_vec())));
    }

    #[test]
    fn rejects_what_the_kernel_rejects() {
        assert!(disk_to_vfs(&[]).is_err());
        assert!(disk_to_vfs(&[2, 0, 0, 0]).is_err());
        assert!(disk_to_vfs(&[1, 0, 0, 0, 2, 0, 6, 0]).is_err());
        assert!(disk_to_vfs(&[1, 0, 0, 0, 0x40, 0, 6, 0]).is_err());
        assert_eq!(disk_to_vfs(&[1, 0, 0, 0]), Ok(None));
    }
}
