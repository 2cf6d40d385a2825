//! The used-byte map of a FAT12/16/32 file system: the reserved sectors
//! (boot sector, FSInfo, backup boot sector), every FAT copy, the FAT12/16
//! root directory, and every cluster the active FAT marks allocated (bad
//! clusters are left out: their content is meaningless and reading them
//! may fail).

use crate::error::Result;

use super::fat::{push_clusters, read_bpb, walk_fat};
use super::region::Region;

/// The used byte ranges of the FAT file system in `part`.
pub(crate) fn used_ranges(part: &Region) -> Result<Vec<(u64, u64)>> {
    let bpb = match read_bpb(part)? {
        Some(Ok(b)) => b,
        Some(Err(why)) => {
            return Err(part.corrupt(format!("FAT boot sector at byte {}: {why}", part.abs(0))))
        }
        None => return Err(part.corrupt(format!("no FAT boot sector at byte {}", part.abs(0)))),
    };
    let mut out = vec![(0, bpb.data_start * bpb.sector)];
    walk_fat(part, &bpb, |first, n| {
        push_clusters(&mut out, &bpb, first, n)
    })?;
    Ok(out)
}
