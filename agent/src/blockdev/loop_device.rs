//! A loop device over a byte range of an image file, detached on drop.

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::sysfs;
use super::BlockdevError;
use crate::tool::Tool;

const LOSETUP: Tool = Tool {
    program: "losetup",
    package: "mount",
};
const PARTX: Tool = Tool {
    program: "partx",
    package: "util-linux",
};
/// `losetup -d` can briefly fail right after an unmount; it is retried
/// this many times, this far apart.
const DETACH_TRIES: u32 = 5;
const DETACH_PAUSE: Duration = Duration::from_millis(200);

/// A loop device attached to a range of an image file (`losetup --find
/// --show --offset --sizelimit`), detached when dropped (partitions added
/// to it with `partx` are deleted first). Use [`LoopDevice::detach`] to
/// see detach errors; a drop only logs them.
#[derive(Debug)]
pub struct LoopDevice {
    path: PathBuf,
    attached: bool,
}

impl LoopDevice {
    /// Attaches `size` bytes of `file` from byte `offset` (`size` 0: to
    /// the end of the file) to a free loop device.
    pub fn attach(file: &Path, offset: u64, size: u64) -> Result<LoopDevice, BlockdevError> {
        let (off, len) = (offset.to_string(), size.to_string());
        let args: [&OsStr; 7] = [
            "--find".as_ref(),
            "--show".as_ref(),
            "--offset".as_ref(),
            off.as_ref(),
            "--sizelimit".as_ref(),
            len.as_ref(),
            file.as_os_str(),
        ];
        let out = LOSETUP.run(file, &args, &[0])?;
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        tracing::debug!(loop_device = %path.display(), file = %file.display(), offset, size, "attached");
        Ok(LoopDevice {
            path,
            attached: true,
        })
    }

    /// The loop device's node (`/dev/loop3`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Detaches the loop device now, reporting failure.
    pub fn detach(mut self) -> Result<(), BlockdevError> {
        self.detach_inner()
    }

    fn detach_inner(&mut self) -> Result<(), BlockdevError> {
        if !std::mem::replace(&mut self.attached, false) {
            return Ok(());
        }
        if self.has_partitions() {
            PARTX.run(&self.path, &[OsStr::new("-d"), self.path.as_os_str()], &[0])?;
        }
        let args = [OsStr::new("-d"), self.path.as_os_str()];
        LOSETUP.run_retrying(&self.path, &args, DETACH_TRIES, DETACH_PAUSE)?;
        Ok(())
    }

    /// The kernel knows partitions of this loop device (added by `partx`).
    fn has_partitions(&self) -> bool {
        std::fs::metadata(&self.path)
            .ok()
            .and_then(|m| sysfs::node(Path::new("/sys"), &sysfs::dev_string(m.rdev())).ok())
            .and_then(|n| sysfs::partitions(&n).ok())
            .is_some_and(|p| !p.is_empty())
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if let Err(e) = self.detach_inner() {
            tracing::warn!(loop_device = %self.path.display(), error = %e, "detaching failed");
        }
    }
}
