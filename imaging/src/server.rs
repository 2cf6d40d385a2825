//! Server images: a server's disks captured partition by partition.
//!
//! `ferry capture --disk` surveys each disk ([`crate::disk::survey_disk`])
//! and stores, per disk:
//!
//! - the **head**: every byte in front of the first partition. On MBR disks
//!   that is the MBR with its boot code (GRUB's `boot.img`) and the gap
//!   where GRUB's `core.img` lives; on GPT disks the protective MBR and the
//!   primary header and entries. A BIOS boot partition is a partition and is
//!   stored in full like any other partition whose file system ferry does not
//!   read.
//! - **one stream per partition**:
//!   - ext2/3/4 and vfat: only the blocks the allocation map (block
//!     bitmaps, FAT) marks used ([`crate::disk::used_ranges`]); the rest is
//!     recorded as unused ([`crate::chunklist::Extent::Unused`]), so a
//!     16 GiB disk holding 1 GiB of data costs 1 GiB of reading;
//!   - swap: nothing but its survey (size, UUID, label): a deploy runs
//!     `mkswap` again;
//!   - an MBR extended partition: nothing (its logical partitions are
//!     partitions of their own; its EBRs are rewritten by a deploy);
//!   - anything else (xfs, ntfs, unknown data, a BIOS boot partition,
//!     RAID members): every byte.
//! - the **layout**: the survey itself (table, partition types, GUIDs,
//!   names, flags, file-system UUIDs, labels and bytes used), which the
//!   deploy planner maps onto the target disks.
//!
//! LVM physical volumes, LUKS containers and btrfs are detected and refused
//! with a message: their content cannot be resized or re-created faithfully
//! yet, and storing them opaque would produce an image that deploys only
//! onto identical disks. A raw capture (`ferry capture <DISK>`) still
//! stores such a disk byte for byte.
//!
//! **File trees are derived at deploy time**, not stored: when a plan must
//! shrink a partition or change its file-system type, the deploy reads the
//! stored used-blocks stream through the library (ferry's own ext4 reader
//! over [`crate::stream`]) and populates a fresh file system. Storing a
//! tree as well would double the capture's reading and the library's size
//! for the rare deploy that needs it.

use std::path::Path;

use crate::capture::Segment;
use crate::device::Source;
use crate::disk::{survey_disk, used_ranges, DiskLayout, FsType, PartitionTable, Role};
use crate::error::{Error, Result};
use crate::manifest::{BlockStream, DiskContent, PartitionContent, PartitionImage};

/// What one disk's capture reads, and how the streams become its content.
pub(crate) struct DiskPlan {
    /// The streams to capture, in order.
    pub(crate) segments: Vec<Segment>,
    shape: Shape,
}

enum Shape {
    Raw,
    Server {
        layout: Box<DiskLayout>,
        parts: Vec<PartShape>,
    },
}

/// How a partition is stored; `seg` indexes [`DiskPlan::segments`].
enum PartShape {
    Used { seg: usize, used_bytes: u64 },
    Full { seg: usize },
    Swap,
    Extended,
}

impl DiskPlan {
    /// Every byte of the disk as one stream.
    pub(crate) fn raw(src: &Source) -> DiskPlan {
        DiskPlan {
            segments: vec![Segment {
                base: 0,
                len: src.size,
                used: None,
            }],
            shape: Shape::Raw,
        }
    }

    /// The head and one stream per partition, used blocks only where the
    /// file system's allocation can be read.
    pub(crate) fn server(src: &Source) -> Result<DiskPlan> {
        let layout = survey_disk(Path::new(&src.path), Path::new("/"))?;
        let refuse = |number: u32, what: &str| Error::Source {
            path: src.path.clone(),
            reason: format!(
                "partition {number} holds {what}, which ferry cannot capture per partition yet; \
                 capture the disk byte for byte instead with `ferry capture {}`",
                src.path
            ),
        };
        let head = head_len(&layout);
        let mut segments = vec![Segment {
            base: 0,
            len: head,
            used: None,
        }];
        let mut parts = Vec::with_capacity(layout.partitions.len());
        for p in &layout.partitions {
            let fs = p.filesystem.as_ref();
            match fs.map(|f| f.fs_type) {
                Some(FsType::Lvm2Pv) => return Err(refuse(p.number, "an LVM2 physical volume")),
                Some(FsType::Luks) => return Err(refuse(p.number, "a LUKS container")),
                Some(FsType::Btrfs) => return Err(refuse(p.number, "a btrfs file system")),
                _ => {}
            }
            if p.role == Role::Extended {
                parts.push(PartShape::Extended);
                continue;
            }
            if fs.is_some_and(|f| f.fs_type == FsType::Swap && f.problem.is_none()) {
                parts.push(PartShape::Swap);
                continue;
            }
            let seg = segments.len();
            let readable = fs.is_some_and(|f| {
                f.problem.is_none()
                    && matches!(
                        f.fs_type,
                        FsType::Ext2 | FsType::Ext3 | FsType::Ext4 | FsType::Vfat
                    )
            });
            let used = if readable {
                used_ranges(&src.file, p)?
            } else {
                None
            };
            parts.push(match &used {
                Some(u) => PartShape::Used {
                    seg,
                    used_bytes: u
                        .iter()
                        .map(|(s, e)| e.min(&p.size).saturating_sub(*s))
                        .sum(),
                },
                None => PartShape::Full { seg },
            });
            segments.push(Segment {
                base: p.start,
                len: p.size,
                used,
            });
        }
        Ok(DiskPlan {
            segments,
            shape: Shape::Server {
                layout: Box::new(layout),
                parts,
            },
        })
    }

    /// The disk's manifest content, from the captured streams (one per
    /// segment, in order).
    pub(crate) fn content(&self, mut streams: Vec<BlockStream>) -> DiskContent {
        match &self.shape {
            Shape::Raw => DiskContent::Whole {
                stream: streams.remove(0),
            },
            Shape::Server { layout, parts } => {
                let take = |seg: usize| streams[seg].clone();
                let partitions = layout
                    .partitions
                    .iter()
                    .zip(parts)
                    .map(|(p, shape)| PartitionImage {
                        number: p.number,
                        content: match *shape {
                            PartShape::Used { seg, used_bytes } => PartitionContent::UsedBlocks {
                                stream: take(seg),
                                used_bytes,
                            },
                            PartShape::Full { seg } => PartitionContent::Full { stream: take(seg) },
                            PartShape::Swap => PartitionContent::Swap,
                            PartShape::Extended => PartitionContent::Extended,
                        },
                    })
                    .collect();
                DiskContent::Partitioned {
                    head: take(0),
                    layout: (**layout).clone(),
                    partitions,
                }
            }
        }
    }
}

/// Bytes in front of the first partition: everything up to it, or with no
/// partitions the area a table reserves (GPT: up to the first usable LBA;
/// MBR: the first MiB). A disk without a table has no head.
fn head_len(layout: &DiskLayout) -> u64 {
    let first = layout
        .partitions
        .iter()
        .filter(|p| p.number != 0)
        .map(|p| p.start)
        .min();
    let reserved = match &layout.table {
        PartitionTable::None => 0,
        PartitionTable::Mbr { .. } => 1 << 20,
        PartitionTable::Gpt {
            sector_size,
            first_usable_lba,
            ..
        } => first_usable_lba.saturating_mul(u64::from(*sector_size)),
    };
    first.unwrap_or(reserved).min(layout.size)
}
