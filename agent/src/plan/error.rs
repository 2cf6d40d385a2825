//! Why a plan is refused.

use imaging::disk::FsType;

/// A deploy that cannot be planned, with the numbers that say why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// The image has no disks.
    #[error("the image has no disks")]
    NoDisks,
    /// A mapping names a disk that does not exist.
    #[error("the mapping names {what} disk {index}, but there are only {count}")]
    NoSuchDisk {
        /// `source` or `target`.
        what: &'static str,
        /// The index named.
        index: usize,
        /// How many there are.
        count: usize,
    },
    /// A mapping uses a disk twice.
    #[error("the mapping uses {what} disk {index} twice")]
    MappedTwice {
        /// `source` or `target`.
        what: &'static str,
        /// The index used twice.
        index: usize,
    },
    /// A source disk is left out of an explicit mapping.
    #[error("the mapping leaves source disk {index} out")]
    Unmapped {
        /// The source disk's index.
        index: usize,
    },
    /// More source disks than target disks, mapping by order.
    #[error("the image has {sources} disks but the target has only {targets}")]
    TooFewTargets {
        /// Source disks.
        sources: usize,
        /// Target disks.
        targets: usize,
    },
    /// A conversion names a partition that does not exist.
    #[error("there is no partition {number} on source disk {disk} to convert")]
    NoSuchPartition {
        /// The source disk's index.
        disk: usize,
        /// The partition number named.
        number: u32,
    },
    /// A conversion ferry cannot do.
    #[error("partition {number} of source disk {disk} cannot become {to:?}: {why}")]
    BadConversion {
        /// The source disk's index.
        disk: usize,
        /// The source partition's number.
        number: u32,
        /// The type asked for.
        to: FsType,
        /// Why not.
        why: String,
    },
    /// The image's disk is inconsistent (a partition without its stream).
    #[error("source disk {disk}: {why}")]
    BadImage {
        /// The source disk's index.
        disk: usize,
        /// What is wrong.
        why: String,
    },
    /// A target disk's sector size is not 512 or 4096.
    #[error("{target} has {sector_size}-byte sectors; ferry writes tables for 512 and 4096")]
    SectorSize {
        /// The target's path.
        target: String,
        /// Its logical sector size.
        sector_size: u32,
    },
    /// The content does not fit the target disk.
    #[error(
        "source disk {disk} needs {needed} bytes on {target} but only {available} are usable: \
         {short} more bytes ({short_mib} MiB) are needed{detail}",
        short = needed - available,
        short_mib = (needed - available).div_ceil(1 << 20)
    )]
    DoesNotFit {
        /// The source disk's index.
        disk: usize,
        /// The target's path.
        target: String,
        /// Bytes the plan needs, from the start of the disk.
        needed: u64,
        /// Bytes the target can hold partitions in.
        available: u64,
        /// What the needed bytes are made of.
        detail: String,
    },
    /// A partition would have to shrink but its content cannot.
    #[error(
        "partition {number} of source disk {disk} ({what}, {size} bytes) would have to shrink \
         to {room} bytes on {target}, and {what} cannot shrink: {short} more bytes are needed",
        short = needed - available
    )]
    CannotShrink {
        /// The source disk's index.
        disk: usize,
        /// The source partition's number.
        number: u32,
        /// What it holds (`xfs`, `unknown content`).
        what: String,
        /// Its size.
        size: u64,
        /// The room the target leaves it.
        room: u64,
        /// The target's path.
        target: String,
        /// Bytes the plan needs, from the start of the disk.
        needed: u64,
        /// Bytes the target can hold partitions in.
        available: u64,
    },
    /// The table cannot be written in the chosen scheme.
    #[error("source disk {disk} on {target}: {why}")]
    Scheme {
        /// The source disk's index.
        disk: usize,
        /// The target's path.
        target: String,
        /// What does not fit the scheme.
        why: String,
    },
}
