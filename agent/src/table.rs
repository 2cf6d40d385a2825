//! Partition tables to write: the target side of a deploy plan.
//!
//! A [`TableSpec`] says exactly what a target disk's table will hold: the
//! scheme with its disk identifier, and every partition with its byte range
//! and its type, GUIDs, name and flags. The planner (`plan`) produces one
//! per target disk; the writer in this module puts it on the disk with the
//! `gpt` crate (protective MBR, primary and backup headers and entries) or
//! `mbrman` (primary entries, and an extended partition with its EBR chain
//! for logical partitions).

use serde::{Deserialize, Serialize};

/// The table of one target disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSpec {
    /// GPT or MBR, with the disk identifier to keep.
    pub scheme: Scheme,
    /// The logical sector size the LBAs count in (512 or 4096).
    pub sector_size: u32,
    /// The target disk's size in bytes.
    pub disk_size: u64,
    /// The partitions, in table order (GPT entry order; MBR primaries
    /// 1-4, then logical partitions from 5).
    pub partitions: Vec<PartSpec>,
}

/// A partition-table scheme.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "kebab-case")]
pub enum Scheme {
    /// A GUID partition table.
    Gpt {
        /// The disk GUID (lowercase, hyphenated).
        disk_guid: String,
    },
    /// A DOS/MBR table.
    Mbr {
        /// The 32-bit disk signature as 8 lowercase hex digits.
        disk_signature: String,
    },
}

/// One partition to create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartSpec {
    /// The number Linux will give it (`sdaN`): GPT entry index + 1; MBR
    /// 1-4 primaries, 5 and up logical.
    pub number: u32,
    /// Byte offset of its first byte (a multiple of the sector size; the
    /// planner aligns to 1 MiB).
    pub start: u64,
    /// Size in bytes (a multiple of the sector size).
    pub size: u64,
    /// Its table entry.
    pub entry: EntrySpec,
}

/// What goes in the table entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum EntrySpec {
    /// A GPT entry.
    Gpt {
        /// Partition type GUID (lowercase, hyphenated).
        type_guid: String,
        /// The partition's own GUID (PARTUUID), kept from the source.
        unique_guid: String,
        /// The partition name.
        name: String,
        /// Attribute flags.
        attributes: u64,
    },
    /// An MBR entry.
    Mbr {
        /// The type byte.
        type_code: u8,
        /// The boot indicator (0x80).
        bootable: bool,
        /// A logical partition inside the extended partition (which the
        /// table lists as its own primary entry with type 0x05 or 0x0f).
        logical: bool,
    },
}
