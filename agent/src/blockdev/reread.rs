//! Making the kernel see a new partition table, and naming partition
//! device nodes.

use std::fs::File;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::sysfs;
use super::BlockdevError;
use crate::tool::Tool;

/// How long to wait for partition nodes (udev and devtmpfs usually take
/// milliseconds; a busy machine seconds).
const NODE_WAIT: Duration = Duration::from_secs(10);
const NODE_POLL: Duration = Duration::from_millis(50);

const PARTX: Tool = Tool {
    program: "partx",
    package: "util-linux",
};

mod ioctl {
    #![allow(unsafe_code)]
    use std::fs::File;
    use std::os::fd::AsRawFd;

    // BLKRRPART = _IO(0x12, 95)
    nix::ioctl_none!(blkrrpart, 0x12, 95);

    /// Asks the kernel to re-read the partition table of `disk`.
    pub(super) fn reread(disk: &File) -> nix::Result<()> {
        // SAFETY: BLKRRPART takes no argument and touches no user memory;
        // the descriptor stays open for the duration of the call.
        unsafe { blkrrpart(disk.as_raw_fd()) }.map(drop)
    }
}

/// Makes the kernel re-read the partition table of the block device `dev`
/// (opened from `path`) and waits up to 10 s for every partition's device
/// node; returns the partitions' numbers and nodes, by number.
///
/// `BLKRRPART` is refused with `EBUSY` when a partition is in use and with
/// `EINVAL` by loop devices attached without partition scanning; then
/// `partx -u` (falling back to `partx -a`) updates the kernel's view entry
/// by entry. Image files have no kernel partitions: nothing is done and
/// the list is empty (reach their partitions with
/// [`LoopDevice`](super::LoopDevice)).
pub fn reread_partitions(dev: &File, path: &Path) -> Result<Vec<(u32, PathBuf)>, BlockdevError> {
    let name = path.display().to_string();
    let io = |action, p: &Path, source| BlockdevError::Io {
        device: name.clone(),
        action,
        path: p.display().to_string(),
        source,
    };
    let meta = dev.metadata().map_err(|e| io("inspecting", path, e))?;
    if !meta.file_type().is_block_device() {
        return Ok(Vec::new());
    }
    match ioctl::reread(dev) {
        Ok(()) => {}
        Err(e @ (nix::Error::EBUSY | nix::Error::EINVAL)) => {
            tracing::debug!(device = %name, error = %e, "BLKRRPART refused; using partx");
            let d = path.as_os_str();
            if let Err(first) = PARTX.run(path, &["-u".as_ref(), d], &[0]) {
                PARTX
                    .run(path, &["-a".as_ref(), d], &[0])
                    .map_err(|_| first)?;
            }
        }
        Err(source) => {
            return Err(BlockdevError::Reread {
                device: name,
                source,
            })
        }
    }
    let sys = Path::new("/sys");
    let disk = sysfs::node(sys, &sysfs::dev_string(meta.rdev()))
        .map_err(|e| io("finding in sysfs", sys, e))?;
    let parts = sysfs::partitions(&disk).map_err(|e| io("listing partitions in", &disk.dir, e))?;
    let deadline = Instant::now() + NODE_WAIT;
    loop {
        let missing: Vec<String> = parts
            .iter()
            .filter(|p| !node_ready(&p.devnode(), &p.dev))
            .map(|p| p.devnode().display().to_string())
            .collect();
        if missing.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(BlockdevError::Timeout {
                device: name,
                missing: missing.join(", "),
                seconds: NODE_WAIT.as_secs(),
            });
        }
        std::thread::sleep(NODE_POLL);
    }
    Ok(parts
        .iter()
        .filter_map(|p| Some((p.number?, p.devnode())))
        .collect())
}

/// `node` exists and is the block device `dev` (`major:minor`).
fn node_ready(node: &Path, dev: &str) -> bool {
    std::fs::metadata(node)
        .is_ok_and(|m| m.file_type().is_block_device() && sysfs::dev_string(m.rdev()) == dev)
}

/// The device node of partition `number` of `disk`, as udev and the kernel
/// name it: `/dev/sda` → `/dev/sda1`; a name ending in a digit gets a `p`
/// (`/dev/nvme0n1p1`, `/dev/loop0p1`, `/dev/mmcblk0p1`); udev's persistent
/// links get `-part` (`/dev/disk/by-id/ata-X-part1`).
pub fn partition_device(disk: &Path, number: u32) -> PathBuf {
    let s = disk.as_os_str().to_string_lossy();
    if s.starts_with("/dev/disk/by-") {
        return PathBuf::from(format!("{s}-part{number}"));
    }
    if s.ends_with(|c: char| c.is_ascii_digit()) {
        PathBuf::from(format!("{s}p{number}"))
    } else {
        PathBuf::from(format!("{s}{number}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_nodes_are_named_like_the_kernel_does() {
        let n = |d: &str, k| partition_device(Path::new(d), k);
        assert_eq!(n("/dev/sda", 1), Path::new("/dev/sda1"));
        assert_eq!(n("/dev/vdb", 12), Path::new("/dev/vdb12"));
        assert_eq!(n("/dev/nvme0n1", 2), Path::new("/dev/nvme0n1p2"));
        assert_eq!(n("/dev/loop7", 5), Path::new("/dev/loop7p5"));
        assert_eq!(n("/dev/mmcblk0", 1), Path::new("/dev/mmcblk0p1"));
        assert_eq!(
            n("/dev/disk/by-id/ata-Disk_123", 3),
            Path::new("/dev/disk/by-id/ata-Disk_123-part3")
        );
    }

    #[test]
    fn image_files_have_nothing_to_reread() {
        let f = tempfile::tempfile().expect("tempfile");
        let got = reread_partitions(&f, Path::new("disk.img")).expect("no-op");
        assert!(got.is_empty());
    }
}
