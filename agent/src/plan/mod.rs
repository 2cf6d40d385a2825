//! Deploy planning: how a server image goes onto the target's disks.
//!
//! [`plan`] takes the disks of an image (their surveyed layouts), the
//! target's disks and the operator's [`PlanOptions`], and returns a
//! [`DeployPlan`]: for every target disk the partition table to write
//! ([`TableSpec`]), what of the source's head to copy ([`HeadCopy`]) and one
//! [`PartitionStep`] per target partition saying how its content is made
//! ([`Method`]). It does no I/O; `ferry plan` prints the plan (as a table or
//! as JSON) and the deploy executes it.
//!
//! # Rules
//!
//! - **Disk mapping.** Source disk *i* goes onto target disk *i* unless an
//!   explicit mapping is given. Every source disk must land on a distinct
//!   target; unmapped targets are left alone.
//! - **Boot disk and firmware.** The boot disk is the first source disk
//!   (by index) with an ESP, a BIOS boot partition or MBR boot code, else
//!   the first mapped disk. The source firmware is UEFI when the boot disk
//!   has an ESP, BIOS otherwise; [`PlanOptions::firmware`] may change it.
//!   UEFI on an MBR source converts the table to GPT and adds a fresh ESP
//!   (see [`NEW_ESP_SIZE`]) placed first; BIOS on a GPT disk without a
//!   BIOS boot partition adds one ([`BIOS_BOOT_SIZE`]). Nothing is dropped
//!   except a BIOS boot partition when a table becomes MBR (GRUB then
//!   lives in the post-MBR gap).
//! - **Identity.** The disk GUID or MBR signature and every GPT partition
//!   GUID are kept (fstab and GRUB may name them as `PARTUUID`), and so are
//!   partition numbers when the scheme is kept, and when MBR becomes GPT
//!   (logical partition 5 stays 5, the new ESP takes the lowest free
//!   number). A conversion to MBR renumbers (1-3 primary, 4 the extended
//!   container, 5 and up logical when there are more than four).
//!   File systems keep their UUID and label whatever the method.
//! - **Placement.** Every partition starts on a 1 MiB boundary ([`ALIGN`]),
//!   the first at 1 MiB (later when GRUB's `core.img` in the source's
//!   post-MBR gap needs more room), in the source's physical order, with a
//!   1 MiB lead before each logical partition for its EBR. GPT keeps its
//!   backup header and entries (33 sectors of 512 bytes) free at the end;
//!   MBR addresses at most 2³² sectors (2 TiB with 512-byte sectors): the
//!   rest of a larger disk stays unused, with a note.
//! - **Sizes.** Every partition keeps its size except one *elastic*
//!   partition, which takes whatever the target has beyond the others: the
//!   Linux data partition (ext2/3/4 or xfs) with the most used bytes. The
//!   root file system cannot be told from a layout (that needs its fstab),
//!   but on a server it is almost always the one holding the most data.
//!   Without one, nothing grows and the rest of the disk stays free. A
//!   target that cannot hold the fixed partitions, or the elastic one at
//!   its minimum, is refused with the number of bytes missing.
//! - **Method.** A file system whose target partition is at least as large
//!   as the source's is written block for block and grown
//!   ([`Method::Block`]); one that shrinks, changes type
//!   ([`PlanOptions::convert`]) or meets a sector size larger than its block
//!   size is made fresh and filled from the file tree derived from the
//!   stored stream ([`Method::Tree`]), which only ext2/3/4 sources allow.
//!   A shrunk file system needs room for its used bytes plus headroom
//!   ([`tree_min_size`]).
#![warn(missing_docs)]

mod disk;
mod display;
mod error;
mod layout;
mod method;
mod partition_type;
mod partitioned;
#[cfg(test)]
mod tests;

use imaging::disk::FsType;
use imaging::manifest::Disk;
use serde::{Deserialize, Serialize};

use crate::table::TableSpec;

pub use error::PlanError;
pub use layout::{ALIGN, BIOS_BOOT_SIZE, NEW_ESP_SIZE};
pub use method::tree_min_size;

/// A disk of the machine being deployed to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetDisk {
    /// Its device path (`/dev/nvme0n1`).
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its logical sector size (512 or 4096).
    pub logical_sector_size: u32,
}

/// How the target machine boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Firmware {
    /// Legacy BIOS (GRUB in the MBR gap or a BIOS boot partition).
    Bios,
    /// UEFI (a boot loader on the ESP).
    Uefi,
}

/// A partition-table scheme to force on the target disks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TableKind {
    /// GUID partition table.
    Gpt,
    /// DOS/MBR table.
    Mbr,
}

/// A file-system type change for one source partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsConvert {
    /// The source disk's index in the image.
    pub disk: usize,
    /// The source partition's number.
    pub number: u32,
    /// The file system to make instead (ext2/3/4 or xfs).
    pub to: FsType,
}

/// What the operator decides.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanOptions {
    /// The target's firmware; `None` keeps the source's.
    pub firmware: Option<Firmware>,
    /// The table scheme for every partitioned target disk; `None` keeps
    /// the source's (or GPT when UEFI needs it on an MBR source).
    pub scheme: Option<TableKind>,
    /// `(source disk, target disk)` indices; `None` maps by order.
    pub mapping: Option<Vec<(usize, usize)>>,
    /// File-system type changes.
    pub convert: Vec<FsConvert>,
}

/// What a deploy does, disk by disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployPlan {
    /// The firmware the target will boot with.
    pub firmware: Firmware,
    /// One entry per source disk, in mapping order.
    pub disks: Vec<DiskPlan>,
}

/// What a deploy does to one target disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskPlan {
    /// The source disk's index in the image.
    pub source: usize,
    /// The source disk's name in the image (`disk0`).
    pub source_name: String,
    /// The target disk's device path.
    pub target: String,
    /// The target disk's size in bytes.
    pub target_size: u64,
    /// This is the disk the machine boots from.
    pub boot: bool,
    /// The partition table to write; `None` for a disk without one (a
    /// whole-disk file system or a raw copy).
    pub table: Option<TableSpec>,
    /// What of the source's head (the bytes before its first partition)
    /// to write at the same offsets, after the table.
    pub copy_head: HeadCopy,
    /// One step per target partition, in table order.
    pub steps: Vec<PartitionStep>,
    /// What the operator should know: identifiers that change, space left
    /// unused, boot pieces that must be reinstalled.
    pub notes: Vec<String>,
}

/// The parts of the source's head block stream that a deploy writes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadCopy {
    /// The MBR boot code, bytes `[0, 440)` (GRUB's `boot.img`).
    pub boot_code: bool,
    /// Bytes `[start, end)` after the MBR, before the first partition:
    /// GRUB's `core.img` on an MBR disk. They fit before the target's first
    /// partition.
    pub gap: Option<(u64, u64)>,
}

impl HeadCopy {
    /// The byte ranges `[start, end)` of the head to write, in order.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        let code = self.boot_code.then_some((0, layout::MBR_BOOT_CODE));
        code.into_iter().chain(self.gap).collect()
    }
}

/// How one target partition gets its content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStep {
    /// Its number on the target (`sdaN`); 0 for a whole disk.
    pub number: u32,
    /// Its first byte on the target.
    pub start: u64,
    /// Its size in bytes.
    pub size: u64,
    /// The source partition whose content it gets (on the disk plan's
    /// source disk); `None` for a partition the plan adds.
    pub source: Option<u32>,
    /// How the content is made.
    pub method: Method,
    /// The file system it will hold, with the UUID and label to keep.
    pub fs: Option<FsTarget>,
}

/// How a partition's content is made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "kebab-case")]
pub enum Method {
    /// Write the stored block stream at the partition's start; then, when
    /// `grow`, grow the file system to the partition (resize2fs,
    /// xfs_growfs). vfat is never grown.
    Block {
        /// The partition is larger than the source's and its file system
        /// can grow.
        grow: bool,
    },
    /// Make a fresh file system with the source's UUID and label and fill
    /// it with the file tree derived from the stored ext2/3/4 stream.
    Tree {
        /// The file system to make.
        mkfs: FsType,
    },
    /// `mkswap` with the source's UUID and label.
    Swap,
    /// A fresh FAT32 EFI system partition (BIOS → UEFI).
    NewEsp,
    /// A new, empty BIOS boot partition for GRUB's `core.img` (BIOS on
    /// GPT).
    NewBiosBoot,
    /// Write the stored stream as it is (content ferry does not know).
    Raw,
    /// Nothing: an MBR extended partition, a container of logical ones.
    None,
}

/// The file system a target partition will hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsTarget {
    /// Its type.
    pub fs_type: FsType,
    /// Its UUID in blkid's form (the source's, or a new one).
    pub uuid: Option<String>,
    /// Its label.
    pub label: Option<String>,
}

/// Plans the deploy of an image's `disks` onto `targets`.
///
/// Refuses (with what is wrong and by how much) a mapping that names a
/// missing or repeated disk, a target too small for the content, a
/// partition that would have to shrink but cannot (xfs, vfat, unknown
/// content), a file-system conversion from anything but ext2/3/4, and a
/// table the chosen scheme cannot express.
pub fn plan(
    disks: &[Disk],
    targets: &[TargetDisk],
    options: &PlanOptions,
) -> Result<DeployPlan, PlanError> {
    let pairs = disk::mapping(disks.len(), targets.len(), options.mapping.as_deref())?;
    for c in &options.convert {
        method::check_convert(disks, c)?;
    }
    let boot = disk::boot_disk(disks, &pairs);
    let source_firmware = disk::firmware_of(&disks[boot]);
    let firmware = options.firmware.unwrap_or(source_firmware);
    let plans = pairs
        .iter()
        .map(|&(s, t)| {
            let ctx = disk::Context {
                index: s,
                disk: &disks[s],
                target: &targets[t],
                boot: s == boot,
                firmware,
                scheme: options.scheme,
                convert: &options.convert,
            };
            disk::plan_disk(&ctx)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DeployPlan {
        firmware,
        disks: plans,
    })
}
