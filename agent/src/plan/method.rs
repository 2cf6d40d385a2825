//! How a partition's content is made on the target, and the least room
//! each way needs.

use imaging::disk::{FsType, Partition};
use imaging::manifest::{Disk, DiskContent, PartitionContent};

use crate::plan::{FsConvert, FsTarget, Method, PlanError};

/// Headroom of a file tree in a fresh file system, in percent of the used
/// bytes: directories and small files round up to whole blocks, a fresh
/// file system allocates differently from an aged one, and the system must
/// still have room to boot and write its logs.
const TREE_HEADROOM_PERCENT: u64 = 15;
/// Fixed headroom of a fresh file system: its journal (mke2fs makes a
/// 64 MiB one up to 16 GiB; above that the percentage covers the larger
/// ones), superblock backups and the first inode tables.
const TREE_FIXED: u64 = 64 << 20;
/// The smallest xfs mkfs.xfs makes (xfsprogs 5.19 and later).
const XFS_MIN: u64 = 300 << 20;
/// xfs labels hold at most 12 bytes.
const XFS_LABEL_MAX: usize = 12;

/// The least size of a fresh `to` file system that holds a file tree
/// whose source used `used` bytes: used × 1.15 + 64 MiB (see the
/// constants), and at least 300 MiB for xfs.
pub fn tree_min_size(used: u64, to: FsType) -> u64 {
    let need = used
        .saturating_add(used / 100 * TREE_HEADROOM_PERCENT)
        .saturating_add(TREE_FIXED);
    if to == FsType::Xfs {
        need.max(XFS_MIN)
    } else {
        need
    }
}

/// A source partition with its stored content and what becomes of it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Source<'a> {
    /// The surveyed partition.
    pub(crate) part: &'a Partition,
    /// What the image holds for it.
    pub(crate) content: &'a PartitionContent,
    /// The file system to convert it to, if asked.
    pub(crate) convert: Option<FsType>,
    /// The target's logical sector size.
    pub(crate) target_sector: u64,
}

impl Source<'_> {
    /// The file system, when the survey read a sound superblock.
    fn fs_type(&self) -> Option<FsType> {
        self.part
            .filesystem
            .as_ref()
            .filter(|f| f.problem.is_none())
            .map(|f| f.fs_type)
    }

    /// Its file tree can be derived from the stored stream (ext2/3/4).
    pub(crate) fn derivable(&self) -> bool {
        self.content.stream().is_some() && self.fs_type().is_some_and(is_ext)
    }

    /// Bytes in use: what the allocation map marks, else what the
    /// superblock says, else all of it.
    pub(crate) fn used(&self) -> u64 {
        match self.content {
            PartitionContent::UsedBlocks { used_bytes, .. } => *used_bytes,
            _ => self
                .part
                .filesystem
                .as_ref()
                .and_then(|f| f.used)
                .unwrap_or(self.part.size),
        }
    }

    /// The file system a Tree step makes, when only a Tree will do: a
    /// conversion, or an ext file system whose blocks are smaller than the
    /// target's sectors (the kernel cannot mount those).
    pub(crate) fn tree_only(&self) -> Option<FsType> {
        if self.convert.is_some() {
            return self.convert;
        }
        let fs = self.part.filesystem.as_ref()?;
        let small = fs
            .block_size
            .is_some_and(|b| u64::from(b) < self.target_sector);
        (self.derivable() && small).then_some(fs.fs_type)
    }

    /// The least target size this content accepts: its own size, or the
    /// room for its file tree when that may be smaller (or is the only
    /// way).
    pub(crate) fn min_size(&self) -> u64 {
        let own = self.part.size;
        if let Some(to) = self.tree_only() {
            return tree_min_size(self.used(), to);
        }
        match self.fs_type() {
            Some(t) if self.derivable() => own.min(tree_min_size(self.used(), t)),
            _ => own,
        }
    }

    /// What a shrink-refusal calls the content.
    pub(crate) fn what(&self) -> String {
        match self.fs_type() {
            Some(t) => t.blkid_name().to_string(),
            None => "unknown content".to_string(),
        }
    }

    /// The method for a target partition of `size` bytes (at least
    /// [`min_size`](Self::min_size)) and the file system it ends with.
    pub(crate) fn method(&self, size: u64) -> (Method, Option<FsTarget>) {
        let keep = |fs_type| FsTarget {
            fs_type,
            uuid: self.part.filesystem.as_ref().and_then(|f| f.uuid.clone()),
            label: self.part.filesystem.as_ref().and_then(|f| f.label.clone()),
        };
        match self.content {
            PartitionContent::Extended => return (Method::None, None),
            PartitionContent::Swap => return (Method::Swap, Some(keep(FsType::Swap))),
            PartitionContent::UsedBlocks { .. } | PartitionContent::Full { .. } => {}
        }
        if let Some(to) = self.tree_only() {
            return (Method::Tree { mkfs: to }, Some(keep(to)));
        }
        match self.fs_type() {
            Some(t) if size < self.part.size => (Method::Tree { mkfs: t }, Some(keep(t))),
            Some(t) => {
                let grow = size > self.part.size && (is_ext(t) || t == FsType::Xfs);
                (Method::Block { grow }, Some(keep(t)))
            }
            None => (Method::Raw, None),
        }
    }
}

/// ext2, ext3 or ext4: what the ext4 reader derives trees from.
fn is_ext(t: FsType) -> bool {
    matches!(t, FsType::Ext2 | FsType::Ext3 | FsType::Ext4)
}

/// Checks that a conversion names an existing ext2/3/4 partition and a
/// type ferry makes, and that the label survives it.
pub(crate) fn check_convert(disks: &[Disk], c: &FsConvert) -> Result<(), PlanError> {
    let disk = disks.get(c.disk).ok_or(PlanError::NoSuchDisk {
        what: "source",
        index: c.disk,
        count: disks.len(),
    })?;
    let missing = PlanError::NoSuchPartition {
        disk: c.disk,
        number: c.number,
    };
    let DiskContent::Partitioned {
        layout, partitions, ..
    } = &disk.content
    else {
        return Err(missing);
    };
    let part = layout.partitions.iter().find(|p| p.number == c.number);
    let content = partitions.iter().find(|p| p.number == c.number);
    let (Some(part), Some(content)) = (part, content) else {
        return Err(missing);
    };
    let bad = |why: String| PlanError::BadConversion {
        disk: c.disk,
        number: c.number,
        to: c.to,
        why,
    };
    let src = Source {
        part,
        content: &content.content,
        convert: None,
        target_sector: 512,
    };
    if !src.derivable() {
        return Err(bad(format!(
            "only ext2/3/4 file systems can be read as a file tree, and it holds {}",
            src.what()
        )));
    }
    if !(is_ext(c.to) || c.to == FsType::Xfs) {
        return Err(bad(
            "ferry makes ext2, ext3, ext4 and xfs file systems".into()
        ));
    }
    let label = part.filesystem.as_ref().and_then(|f| f.label.as_deref());
    if let Some(label) = label.filter(|l| c.to == FsType::Xfs && l.len() > XFS_LABEL_MAX) {
        return Err(bad(format!(
            "its label {label:?} is {} bytes, xfs keeps at most {XFS_LABEL_MAX}",
            label.len()
        )));
    }
    Ok(())
}
