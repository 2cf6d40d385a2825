//! Image manifests: what an image holds, as versioned JSON.
//!
//! A manifest lives at `images/<name>.json` and is written last, after every
//! pack, index file and chunk list it refers to, so a manifest that exists is
//! complete. Format version 1:
//!
//! ```json
//! {
//!   "format": "ferry-image",
//!   "version": 1,
//!   "name": "web01-2026-11-23",
//!   "created": "2026-11-23T18:00:00Z",
//!   "parent": "web01-2026-11-20",
//!   "chunker": { "algorithm": "fastcdc-v2020", "crate_version": "5.0.0",
//!                "min_size": 16384, "avg_size": 65536, "max_size": 262144,
//!                "normalization": 1, "zero_run_min": 65536 },
//!   "disks": [
//!     { "name": "disk0", "source": "/dev/sda", "size": 2147483648,
//!       "content": { "kind": "whole",
//!                    "stream": { "size": 2147483648, "list": "<blake3 hex>",
//!                                "extents": 9120, "chunks": 12850,
//!                                "data_bytes": 812000000, "hole_bytes": 1335483648 } } }
//!   ],
//!   "stats": { "bytes_read": 812000000, "chunks": 12850, "chunks_new": 12850,
//!              "bytes_new": 812000000, "stored_new": 313000000, "seconds": 4.1 }
//! }
//! ```
//!
//! The shape is that of a whole server: a list of disks, each with content.
//! Version 1 knows one kind of content, `whole` (the disk as one block
//! stream). Partition tables with one stream per partition, file-tree streams
//! and survey data arrive as further `kind`s and optional fields; readers
//! refuse a kind they do not know. Optional fields may be added without a new
//! version; any change an older reader must not ignore bumps `version`.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::chunk::ObjectId;
use crate::chunker::ChunkerParams;
use crate::disk::DiskLayout;

/// The manifest format version this build writes and reads.
pub const MANIFEST_VERSION: u32 = 1;
/// The `format` tag of a manifest.
pub const MANIFEST_FORMAT: &str = "ferry-image";
/// Manifests larger than this are refused before parsing.
pub const MAX_MANIFEST: usize = 16 << 20;

/// One image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// [`MANIFEST_VERSION`].
    pub version: u32,
    /// The image's name, also its key.
    pub name: String,
    /// When the capture finished.
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// The image this one was captured as a successor of.
    #[serde(default)]
    pub parent: Option<String>,
    /// How the streams were cut.
    pub chunker: ChunkerParams,
    /// The disks, in capture order.
    #[serde(default)]
    pub disks: Vec<Disk>,
    /// File trees (directory or unmounted file-system captures).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trees: Vec<Tree>,
    /// What the capture cost.
    pub stats: CaptureStats,
}

/// One disk of an image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    /// Name within the image (`disk0`, …).
    pub name: String,
    /// Where it was captured from.
    pub source: String,
    /// Size in bytes.
    pub size: u64,
    /// What it holds.
    pub content: DiskContent,
}

impl Disk {
    /// The disk's block streams with the disk offset each one starts at:
    /// one for a `whole` disk; the head and one per stored partition for a
    /// `partitioned` one.
    pub fn streams(&self) -> Vec<(u64, &BlockStream)> {
        match &self.content {
            DiskContent::Whole { stream } => vec![(0, stream)],
            DiskContent::Partitioned {
                layout,
                head,
                partitions,
            } => std::iter::once((0, head))
                .chain(partitions.iter().filter_map(|p| {
                    let start = layout
                        .partitions
                        .iter()
                        .find(|l| l.number == p.number)?
                        .start;
                    Some((start, p.content.stream()?))
                }))
                .collect(),
        }
    }
}

impl Disk {
    /// Checks that the streams fit the disk: a whole stream is the disk's
    /// size; every partition stream is its partition's size and lies inside
    /// the disk, and the head ends before the first partition.
    pub(crate) fn check(&self) -> Result<(), String> {
        match &self.content {
            DiskContent::Whole { stream } if stream.size != self.size => Err(format!(
                "the disk is {} bytes but its stream is {}",
                self.size, stream.size
            )),
            DiskContent::Whole { .. } => Ok(()),
            DiskContent::Partitioned {
                layout,
                head,
                partitions,
            } => {
                if layout.size != self.size {
                    return Err(format!(
                        "the disk is {} bytes but its layout says {}",
                        self.size, layout.size
                    ));
                }
                if partitions.len() != layout.partitions.len() {
                    return Err(format!(
                        "{} partition streams for {} partitions",
                        partitions.len(),
                        layout.partitions.len()
                    ));
                }
                for (p, l) in partitions.iter().zip(&layout.partitions) {
                    if p.number != l.number {
                        return Err(format!(
                            "partition stream {} is listed where partition {} is",
                            p.number, l.number
                        ));
                    }
                    if l.start
                        .checked_add(l.size)
                        .is_none_or(|end| end > self.size)
                    {
                        return Err(format!(
                            "partition {} ({} bytes at {}) runs past the end of the disk",
                            l.number, l.size, l.start
                        ));
                    }
                    if l.number != 0 && l.start < head.size {
                        return Err(format!(
                            "partition {} starts at {}, inside the {}-byte head",
                            l.number, l.start, head.size
                        ));
                    }
                    if let Some(s) = p.content.stream() {
                        if s.size != l.size {
                            return Err(format!(
                                "partition {} is {} bytes but its stream is {}",
                                l.number, l.size, s.size
                            ));
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

/// What a disk image holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[allow(clippy::large_enum_variant)]
pub enum DiskContent {
    /// The whole disk as one block stream, every byte (a raw capture).
    Whole {
        /// The stream.
        stream: BlockStream,
    },
    /// A server's disk: its survey, the bytes in front of the first
    /// partition, and one stream per partition.
    Partitioned {
        /// The disk as surveyed at capture: table, partitions, file systems
        /// (UUIDs, labels, bytes used) and boot pieces.
        layout: DiskLayout,
        /// Bytes `[0, head.size)` of the disk: the MBR with its boot code,
        /// the GPT's primary header and entries, and the gap up to the first
        /// partition where GRUB's `core.img` lives on MBR disks. EBRs of
        /// logical partitions and the GPT backup are not in it: a deploy
        /// writes tables from its plan.
        head: BlockStream,
        /// One entry per partition of `layout.partitions`, in that order.
        partitions: Vec<PartitionImage>,
    },
}

/// What an image holds for one partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionImage {
    /// The partition's number in [`DiskLayout::partitions`].
    pub number: u32,
    /// Its content.
    pub content: PartitionContent,
}

/// How a partition's content was stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum PartitionContent {
    /// Only the bytes its file system uses (ext2/3/4 block bitmaps, vfat's
    /// FAT); the rest is [`Extent::Unused`](crate::chunklist::Extent::Unused).
    UsedBlocks {
        /// The partition's bytes.
        stream: BlockStream,
        /// Bytes the allocation map marks used.
        used_bytes: u64,
    },
    /// Every byte (a file system whose allocation ferry does not read).
    Full {
        /// The partition's bytes.
        stream: BlockStream,
    },
    /// Swap: nothing stored; a deploy runs `mkswap` with the surveyed UUID
    /// and label.
    Swap,
    /// An MBR extended partition: a container whose logical partitions are
    /// listed on their own.
    Extended,
}

impl PartitionContent {
    /// The stored stream, if any.
    pub fn stream(&self) -> Option<&BlockStream> {
        match self {
            PartitionContent::UsedBlocks { stream, .. } | PartitionContent::Full { stream } => {
                Some(stream)
            }
            PartitionContent::Swap | PartitionContent::Extended => None,
        }
    }
}

/// A byte stream stored as a chunk list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockStream {
    /// Length in bytes.
    pub size: u64,
    /// The chunk list object.
    pub list: ObjectId,
    /// Extents in the list.
    pub extents: u64,
    /// Chunks (counting repeats).
    pub chunks: u64,
    /// Bytes in chunks.
    pub data_bytes: u64,
    /// Bytes in holes (zeros).
    pub hole_bytes: u64,
    /// Bytes the file system does not use (not stored, content irrelevant).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unused_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A captured file tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// Name within the image (`tree0`, …).
    pub name: String,
    /// Where it was captured from.
    pub source: String,
    /// The stream.
    pub stream: TreeStream,
}

/// A file-tree stream: a metadata stream of entries (JSON lines, see
/// [`crate::tree::entry`]) stored as a chunk list, whose file entries refer
/// to content chunks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeStream {
    /// The chunk list of the metadata stream.
    pub metadata: ObjectId,
    /// Bytes in the metadata stream.
    pub metadata_bytes: u64,
    /// Entries in the tree.
    pub entries: u64,
    /// Regular files with content (hard links counted once).
    pub files: u64,
    /// Bytes of file content.
    pub data_bytes: u64,
    /// Identity of the source for the files cache: the device of a
    /// directory, or the UUID of a file system read unmounted.
    #[serde(default)]
    pub source_id: String,
    /// File-system facts when captured from an unmounted file system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FsInfo>,
}

/// An unmounted file system's identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsInfo {
    /// `ext4`, `ext3`, `ext2`.
    pub kind: String,
    /// Its UUID.
    pub uuid: String,
    /// Its label.
    pub label: String,
}

/// Figures of one capture.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CaptureStats {
    /// Bytes read from the source (holes of sparse files are not read).
    pub bytes_read: u64,
    /// Chunks in the image.
    pub chunks: u64,
    /// Chunks this capture stored (not already in the library).
    pub chunks_new: u64,
    /// Raw bytes of those chunks.
    pub bytes_new: u64,
    /// Bytes they take in packs.
    pub stored_new: u64,
    /// Wall time in seconds.
    pub seconds: f64,
}

impl Manifest {
    /// A manifest of the current format, created now.
    pub fn new(
        name: String,
        parent: Option<String>,
        chunker: ChunkerParams,
        disks: Vec<Disk>,
        trees: Vec<Tree>,
        stats: CaptureStats,
    ) -> Self {
        Manifest {
            format: MANIFEST_FORMAT.into(),
            version: MANIFEST_VERSION,
            name,
            created: OffsetDateTime::now_utc(),
            parent,
            chunker,
            disks,
            trees,
            stats,
        }
    }

    /// Total size of all disks, plus the file content of all trees.
    pub fn size(&self) -> u64 {
        self.disks.iter().map(|d| d.size).sum::<u64>()
            + self.trees.iter().map(|t| t.stream.data_bytes).sum::<u64>()
    }

    /// Every block stream, with its disk.
    pub fn streams(&self) -> impl Iterator<Item = (&Disk, &BlockStream)> {
        self.disks
            .iter()
            .flat_map(|d| d.streams().into_iter().map(move |(_, s)| (d, s)))
    }

    /// Parses and checks a manifest's bytes.
    pub fn decode(data: &[u8]) -> Result<Manifest, String> {
        if data.len() > MAX_MANIFEST {
            return Err(format!(
                "{} bytes is larger than any manifest ({MAX_MANIFEST})",
                data.len()
            ));
        }
        // Check the header first, so a newer format gets a clear message
        // rather than a field error.
        #[derive(Deserialize)]
        struct Head {
            format: Option<String>,
            version: Option<u32>,
        }
        let head: Head = serde_json::from_slice(data).map_err(|e| format!("not JSON: {e}"))?;
        if head.format.as_deref() != Some(MANIFEST_FORMAT) {
            return Err(format!(
                "not a ferry image manifest (format {:?})",
                head.format
            ));
        }
        match head.version {
            Some(MANIFEST_VERSION) => {}
            v => {
                return Err(format!(
                    "manifest version {v:?} is not supported (this build reads {MANIFEST_VERSION})"
                ))
            }
        }
        let m: Manifest = serde_json::from_slice(data).map_err(|e| e.to_string())?;
        crate::library::check_name(&m.name).map_err(|e| e.to_string())?;
        for (d, s) in m.streams() {
            let sum = s
                .data_bytes
                .checked_add(s.hole_bytes)
                .and_then(|n| n.checked_add(s.unused_bytes));
            if sum != Some(s.size) {
                return Err(format!(
                    "disk {}: stream sizes do not add up ({} + {} + {} != {})",
                    d.name, s.data_bytes, s.hole_bytes, s.unused_bytes, s.size
                ));
            }
        }
        for d in &m.disks {
            d.check().map_err(|e| format!("disk {}: {e}", d.name))?;
        }
        if m.disks.is_empty() && m.trees.is_empty() {
            return Err("the image holds neither disks nor trees".into());
        }
        Ok(m)
    }

    /// Serialises for storage.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a manifest always serialises");
        v.push(b'\n');
        v
    }
}
