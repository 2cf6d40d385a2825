//! Block devices during a deploy: re-reading a partition table, loop
//! devices for image files, and refusing disks that are in use.
//!
//! - [`reread_partitions`] makes the kernel see a table [`write_table`]
//!   just wrote (`BLKRRPART`, or `partx` where that is refused, as on loop
//!   devices without partition scanning) and waits for the partition
//!   device nodes; [`partition_device`] names them.
//! - [`LoopDevice`] attaches a byte range of an image file (a partition of
//!   a disk image) and detaches it when dropped.
//! - [`check_not_in_use`] refuses a disk that is mounted, swapped on, held
//!   by device-mapper/LVM/dm-crypt/md (sysfs `holders`), or, for an image
//!   file, attached to a loop device.
//!
//! sysfs and procfs are read under a root (`/sys`, `/proc` in production)
//! so the parsing can be tested on fixture trees.
//!
//! [`write_table`]: crate::table::write_table

mod in_use;
mod loop_device;
mod reread;
mod sysfs;

use std::io;

pub use in_use::{check_not_in_use, InUse, Use};
pub use loop_device::LoopDevice;
pub use reread::{partition_device, reread_partitions};

use crate::tool::ToolError;

/// What went wrong handling a block device.
#[derive(Debug, thiserror::Error)]
pub enum BlockdevError {
    /// A file or sysfs attribute could not be read.
    #[error("{device}: {action} {path}: {source}")]
    Io {
        /// The device worked on.
        device: String,
        /// What was being done ("reading", …).
        action: &'static str,
        /// The file involved.
        path: String,
        /// The error.
        source: io::Error,
    },
    /// `BLKRRPART` failed for a reason `partx` cannot work around.
    #[error("{device}: re-reading the partition table (BLKRRPART): {source}")]
    Reread {
        /// The disk.
        device: String,
        /// The errno.
        source: nix::Error,
    },
    /// Partition device nodes did not appear in time.
    #[error("{device}: partition device nodes {missing} did not appear within {seconds} s")]
    Timeout {
        /// The disk.
        device: String,
        /// The nodes still missing, comma-separated.
        missing: String,
        /// How long was waited.
        seconds: u64,
    },
    /// A tool (`partx`, `losetup`) failed or is missing.
    #[error(transparent)]
    Tool(#[from] ToolError),
}
