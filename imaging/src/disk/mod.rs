//! Disk survey: partition tables, file systems, boot pieces and used-block
//! maps.
//!
//! [`survey_disk`] reads a disk image file or a block device and returns a
//! [`DiskLayout`]: size, sector sizes, identity (model, serial, WWN from
//! sysfs under a given root), the partition table (GPT through the `gpt`
//! crate, MBR with its extended chain through `mbrman`, or none), each
//! partition with its role and the file system its superblock names, and
//! the boot pieces (the MBR boot code, the gap before the first partition
//! where GRUB's `core.img` lives on MBR disks, the ESP and the BIOS boot
//! partition). A disk without a partition table that holds a file system
//! is reported as one pseudo-partition (number 0) covering the disk.
//!
//! [`used_ranges`] says which bytes of a partition its file system uses,
//! from the allocation bitmaps of ext2/3/4 and the FAT of vfat; a capture
//! stores only those (plus [`BootArea::table_ranges`] and the boot gap),
//! and a restore writes zeros elsewhere.
//!
//! Everything is read with `pread` on a read-only descriptor, bounded by
//! sizes that were validated first: a damaged table, superblock, group
//! descriptor or FAT gives an [`Error::Corrupt`] naming the disk, the
//! partition and the byte offset, never a panic, and nothing is mounted or
//! run (no blkid, no mount). The layout is serialised into image manifests
//! (format version 1: fields are only ever added, with serde defaults).
//!
//! # Limits
//!
//! - GPT with 512- or 4096-byte logical sectors, 128-byte entries and at
//!   most [`table::MAX_GPT_ENTRIES`] entries; MBR with at most
//!   [`table::MAX_LOGICAL`] logical partitions.
//! - File systems detected: ext2/3/4, xfs, vfat (FAT12/16/32), swap, LVM2
//!   PV, LUKS 1 and 2, btrfs, ntfs. Used-block maps exist for ext2/3/4,
//!   vfat and swap; xfs, btrfs, ntfs, LVM and LUKS give `None` (capture
//!   everything). See [`Filesystem::supported_for_capture`].
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

mod checksum;
mod ext;
mod ext_used;
mod fat;
mod fat_used;
mod fields;
mod fs;
mod ranges;
mod region;
mod sysfs;
pub mod table;

pub use fs::{Filesystem, FsType};
pub use sysfs::{normalize_wwid, vpd_unit_serial};

use region::Region;

/// What a disk holds, as the survey found it. Goes into image manifests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskLayout {
    /// Size in bytes.
    pub size: u64,
    /// Logical sector size in bytes (the unit of LBAs); 512 for image files.
    pub logical_sector_size: u32,
    /// Physical sector size in bytes; 512 for image files.
    pub physical_sector_size: u32,
    /// The device's model (sysfs `device/model`), for block devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The device's serial number as udev puts it into by-id names (sysfs
    /// `device/serial` or `serial`, else SCSI VPD page 0x80 in
    /// `device/vpd_pg80`). Images captured before ferry read VPD page 0x80
    /// lack it for SCSI and ATA disks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// The device's world-wide name (sysfs `wwid` or `device/wwid`) in the
    /// form of [`normalize_wwid`], e.g. `naa.5000c500a1b2c3d4`,
    /// `eui.0025388b91b2c3d4` or, for an ATA disk without a WWN,
    /// `t10.ATA     QEMU HARDDISK …  QM00001` (fixed-width fields). Images
    /// captured earlier may hold upper-case hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
    /// The partition table.
    pub table: PartitionTable,
    /// The partitions in table order (GPT entry order; MBR primaries, then
    /// logical partitions in chain order), or one pseudo-partition numbered
    /// 0 for a file system on the whole disk.
    pub partitions: Vec<Partition>,
    /// Where the tables and boot loader pieces are.
    pub boot: BootArea,
}

/// The partition table of a disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum PartitionTable {
    /// No partition table (an empty disk, or a file system on the whole
    /// disk).
    None,
    /// A DOS/MBR table.
    Mbr {
        /// The 32-bit disk signature at byte 440, as 8 lowercase hex
        /// digits (blkid's `PTUUID`).
        disk_signature: String,
        /// The sector size its LBAs count in.
        sector_size: u32,
    },
    /// A GUID partition table.
    Gpt {
        /// The disk GUID (lowercase, hyphenated).
        disk_guid: String,
        /// The sector size its LBAs count in (512 or 4096).
        sector_size: u32,
        /// First LBA usable by partitions.
        first_usable_lba: u64,
        /// Last LBA usable by partitions.
        last_usable_lba: u64,
        /// Number of entries in the entry array.
        entry_count: u32,
        /// The primary header and its entries are valid.
        primary_valid: bool,
        /// The backup header (last LBA) and its entries are valid.
        backup_valid: bool,
    },
}

/// One partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    /// The number Linux gives it (`sda<N>`): GPT entry index + 1; MBR slot
    /// 1-4, logical partitions from 5; 0 for the whole-disk pseudo-partition.
    pub number: u32,
    /// Offset of its first byte on the disk.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// What the table says about it.
    pub kind: PartitionKind,
    /// What it is for, from its type.
    pub role: Role,
    /// The file system (or volume) its content starts with, if recognised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<Filesystem>,
}

impl Partition {
    /// True for an EFI system partition.
    pub fn is_esp(&self) -> bool {
        self.role == Role::Esp
    }

    /// True for a BIOS boot partition (GRUB's `core.img` on GPT).
    pub fn is_bios_boot(&self) -> bool {
        self.role == Role::BiosBoot
    }
}

/// The table entry of a partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "kebab-case")]
pub enum PartitionKind {
    /// A GPT entry.
    Gpt {
        /// The partition type GUID (lowercase, hyphenated).
        type_guid: String,
        /// The partition's own GUID (blkid's `PARTUUID`).
        unique_guid: String,
        /// The partition name (UTF-16 in the table), possibly empty.
        name: String,
        /// The attribute flags (bit 0 required, bit 2 legacy BIOS bootable,
        /// bits 48-63 type-specific).
        attributes: u64,
        /// First LBA.
        first_lba: u64,
        /// Last LBA (inclusive).
        last_lba: u64,
    },
    /// An MBR entry, primary or logical.
    Mbr {
        /// The system/type byte (0x83 Linux, 0xef ESP, 0x05 extended, …).
        type_code: u8,
        /// The boot indicator is 0x80.
        bootable: bool,
        /// A logical partition inside the extended partition.
        logical: bool,
        /// First LBA (absolute).
        first_lba: u64,
        /// Length in sectors.
        sectors: u64,
    },
    /// The whole disk (no partition table).
    Whole,
}

/// What a partition is for, from its type GUID or MBR code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// EFI system partition (C12A7328-F81F-11D2-BA4B-00A0C93EC93B, MBR 0xef).
    Esp,
    /// BIOS boot partition (21686148-6449-6E6F-744E-656564454649).
    BiosBoot,
    /// Linux data, root, /usr, /home, /srv, /var, /tmp or XBOOTLDR (MBR 0x83).
    Linux,
    /// Linux swap (0657FD6D-…, MBR 0x82).
    Swap,
    /// LVM physical volume (E6D6D379-…, MBR 0x8e).
    Lvm,
    /// Linux software RAID member (A19D880F-…, MBR 0xfd).
    Raid,
    /// An MBR extended partition (0x05, 0x0f, 0x85): a container of
    /// logical partitions.
    Extended,
    /// Anything else (including the whole-disk pseudo-partition).
    Other,
}

/// Where the partition tables and boot loader pieces are.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootArea {
    /// Byte ranges `[start, end)` that hold partition tables: the MBR
    /// sector, every EBR of the extended chain, the GPT headers and entry
    /// arrays. A capture must store them along with each partition's used
    /// ranges.
    pub table_ranges: Vec<(u64, u64)>,
    /// The bytes `[start, end)` between the MBR (or the GPT's last header
    /// or entry sector) and the first partition; `None` when there is no
    /// such gap or no table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<(u64, u64)>,
    /// The gap holds something other than zeros (on MBR disks, usually
    /// GRUB's `core.img`). Only the first [`table::GAP_SCAN_LIMIT`] bytes
    /// are looked at.
    pub gap_has_data: bool,
    /// The MBR's boot code area (bytes 0-439), when not all zeros.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mbr_boot_code: Option<BootCode>,
    /// The number of the EFI system partition, if there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub esp: Option<u32>,
    /// The number of the BIOS boot partition, if there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bios_boot: Option<u32>,
}

/// What the MBR boot code looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootCode {
    /// GRUB's `boot.img` (it contains the string "GRUB").
    Grub,
    /// Something else that is not all zeros.
    Other,
}

/// Surveys a disk image file or a block device.
///
/// Image files report 512-byte sectors; their GPT is looked for with 512-
/// and 4096-byte sectors (see [`PartitionTable::Gpt`]'s `sector_size`), as
/// on a block device whose sysfs entry gives no sector size.
///
/// For a block device, identity and sector sizes come from
/// `sys_root/sys/class/block/<name>/…` (`device/model`, `device/serial`,
/// `serial` or `device/vpd_pg80`, `wwid` or `device/wwid`,
/// `queue/logical_block_size`,
/// `queue/physical_block_size`; a partition's come from its parent), so
/// tests can pass a fixture root; production passes `/`. Image files are
/// 512/512 with no identity. The device is opened read-only and never
/// claimed, so a disk in use can be surveyed (its superblocks may then be
/// slightly stale).
pub fn survey_disk(path: &Path, sys_root: &Path) -> Result<DiskLayout> {
    let name = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| Error::io("opening", &name, e))?;
    let block = meta.file_type().is_block_device();
    if !block && !meta.file_type().is_file() {
        return Err(Error::Source {
            path: name,
            reason: "is neither a disk image file nor a block device".into(),
        });
    }
    let mut file = File::open(path).map_err(|e| Error::io("opening", &name, e))?;
    let size = if block {
        file.seek(SeekFrom::End(0))
            .map_err(|e| Error::io("sizing", &name, e))?
    } else {
        meta.len()
    };
    let ident = if block {
        sysfs::identity(path, &meta, sys_root)
    } else {
        sysfs::Identity::default()
    };
    let mut logical = ident.logical_sector_size.unwrap_or(512);

    let disk = Region::whole(&file, &name, size);
    // Without a sector size from sysfs, GPT is probed with 512 and 4096.
    let mut found = table::read(&disk, logical, ident.logical_sector_size.is_none())?;
    if let PartitionTable::Gpt { sector_size, .. } = found.table {
        if block && ident.logical_sector_size.is_none() {
            logical = sector_size;
        }
    }
    let physical = ident.physical_sector_size.unwrap_or(logical).max(logical);
    // An MBR without a single partition in front of a whole-disk file
    // system is a leftover signature: the file system wins.
    if matches!(found.table, PartitionTable::Mbr { .. })
        && found.partitions.is_empty()
        && fs::detect(&disk)?.is_some()
    {
        found.table = PartitionTable::None;
        found.boot = BootArea::default();
    }
    let mut partitions = Vec::with_capacity(found.partitions.len() + 1);
    for p in found.partitions {
        let region = disk.sub(p.start, p.size, p.number);
        let filesystem = if p.role == Role::Extended {
            None
        } else {
            fs::detect(&region)?
        };
        partitions.push(Partition { filesystem, ..p });
    }
    if found.table == PartitionTable::None {
        if let Some(filesystem) = fs::detect(&disk)? {
            partitions.push(Partition {
                number: 0,
                start: 0,
                size,
                kind: PartitionKind::Whole,
                role: Role::Other,
                filesystem: Some(filesystem),
            });
        }
    }
    let boot = BootArea {
        esp: partitions.iter().find(|p| p.is_esp()).map(|p| p.number),
        bios_boot: partitions
            .iter()
            .find(|p| p.is_bios_boot())
            .map(|p| p.number),
        ..found.boot
    };
    Ok(DiskLayout {
        size,
        logical_sector_size: logical,
        physical_sector_size: physical,
        model: ident.model,
        serial: ident.serial,
        wwn: ident.wwn,
        table: found.table,
        partitions,
        boot,
    })
}

/// The byte ranges `[start, end)` of `part` that its file system uses,
/// relative to the partition's start, sorted and merged; `None` when the
/// file system is not one whose allocation ferry reads (capture
/// everything).
///
/// - ext2/3/4: block 0 up to the superblock, every group's superblock
///   backup, descriptors, reserved GDT blocks, bitmaps and inode table (at
///   the locations the descriptors record, so `flex_bg` packing is
///   followed), and every block the group's bitmap marks. A group flagged
///   `BLOCK_UNINIT` (honoured only with `uninit_bg`/`metadata_csum`, as the
///   kernel does) has no bitmap on disk: only the metadata above counts in
///   it. Superblock, descriptor and bitmap checksums are verified. A file
///   system whose journal needs recovery is refused (its bitmaps may be
///   stale): replay it first.
/// - vfat: the reserved sectors, the FATs, the FAT12/16 root directory and
///   every allocated cluster (bad clusters are left out).
/// - swap: the first page only (the header with UUID and label).
/// - An extended partition: empty (its EBRs are in
///   [`BootArea::table_ranges`], its logical partitions are listed
///   separately).
/// - xfs, btrfs, ntfs, LVM, LUKS, unknown: `None`. (XFS's free space lives
///   in per-AG B+trees, which are not read yet.)
///
/// `disk` is the whole disk (the file or device [`survey_disk`] read).
pub fn used_ranges(disk: &File, part: &Partition) -> Result<Option<Vec<(u64, u64)>>> {
    let name = region::describe(disk);
    let whole = Region::whole(disk, &name, u64::MAX);
    let region = whole.sub(part.start, part.size, part.number);
    if part.role == Role::Extended {
        return Ok(Some(Vec::new()));
    }
    let Some(fs) = &part.filesystem else {
        return Ok(None);
    };
    match fs.fs_type {
        FsType::Ext2 | FsType::Ext3 | FsType::Ext4 => ext_used::used_ranges(&region).map(Some),
        FsType::Vfat => fat_used::used_ranges(&region).map(Some),
        FsType::Swap => fs::swap_header_range(&region).map(Some),
        FsType::Xfs | FsType::Btrfs | FsType::Ntfs | FsType::Lvm2Pv | FsType::Luks => Ok(None),
    }
}
