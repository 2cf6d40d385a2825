//! Making, growing, checking and temporarily mounting file systems on a
//! deploy target, with the standard tools.
//!
//! | kind | make | grow | check (read-only) | Debian package |
//! |---|---|---|---|---|
//! | ext2/3/4 | `mke2fs -F -q -t extN -U -L` | `e2fsck -f -p`, `resize2fs` | `e2fsck -f -n` | e2fsprogs |
//! | xfs | `mkfs.xfs -f -q -m uuid= -L` | mount, `xfs_growfs`, unmount | `xfs_repair -n` | xfsprogs |
//! | vfat | `mkfs.vfat -F 32 -i -n` | — | `fsck.vfat -n` | dosfstools |
//! | swap | `mkswap -U -L` | — | the signature, read back | util-linux |
//!
//! The UUID and label a deploy keeps from the source are validated before
//! any tool runs (a tool would otherwise truncate a long label silently).
//! Every failure names the device, the command line and the tool's stderr.
//!
//! Limits: mkfs.xfs from xfsprogs 5.19 on refuses file systems smaller
//! than 300 MB; FAT32 needs about 33 MiB with 512-byte sectors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use imaging::disk::FsType;

use crate::tool::{Tool, ToolError, MOUNT, UMOUNT};

const MKE2FS: Tool = e2fsprogs("mke2fs");
const E2FSCK: Tool = e2fsprogs("e2fsck");
const RESIZE2FS: Tool = e2fsprogs("resize2fs");
const MKFS_XFS: Tool = xfsprogs("mkfs.xfs");
const XFS_GROWFS: Tool = xfsprogs("xfs_growfs");
const XFS_REPAIR: Tool = xfsprogs("xfs_repair");
const MKFS_VFAT: Tool = dosfstools("mkfs.vfat");
const FSCK_VFAT: Tool = dosfstools("fsck.vfat");
const MKSWAP: Tool = Tool {
    program: "mkswap",
    package: "util-linux",
};

const fn e2fsprogs(program: &'static str) -> Tool {
    Tool {
        program,
        package: "e2fsprogs",
    }
}

const fn xfsprogs(program: &'static str) -> Tool {
    Tool {
        program,
        package: "xfsprogs",
    }
}

const fn dosfstools(program: &'static str) -> Tool {
    Tool {
        program,
        package: "dosfstools",
    }
}

/// An unmount that fails (something still has a file open) is retried
/// this many times, this far apart, before a lazy unmount.
const UNMOUNT_TRIES: u32 = 5;
const UNMOUNT_PAUSE: Duration = Duration::from_millis(300);

/// A file system ferry can make on a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FsKind {
    /// ext2.
    Ext2,
    /// ext3.
    Ext3,
    /// ext4.
    Ext4,
    /// XFS.
    Xfs,
    /// FAT32.
    Vfat,
    /// Linux swap.
    Swap,
}

impl FsKind {
    /// The name `mount -t` and blkid use.
    pub fn name(self) -> &'static str {
        match self {
            FsKind::Ext2 => "ext2",
            FsKind::Ext3 => "ext3",
            FsKind::Ext4 => "ext4",
            FsKind::Xfs => "xfs",
            FsKind::Vfat => "vfat",
            FsKind::Swap => "swap",
        }
    }

    /// The longest label the format holds, in bytes.
    fn max_label(self) -> usize {
        match self {
            FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 | FsKind::Swap => 16,
            FsKind::Xfs => 12,
            FsKind::Vfat => 11,
        }
    }

    fn is_ext(self) -> bool {
        matches!(self, FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4)
    }
}

impl TryFrom<FsType> for FsKind {
    type Error = FsType;

    /// The kind to make for a surveyed file system; the type itself when
    /// ferry cannot make it (LVM, LUKS, btrfs, ntfs).
    fn try_from(t: FsType) -> Result<Self, FsType> {
        Ok(match t {
            FsType::Ext2 => FsKind::Ext2,
            FsType::Ext3 => FsKind::Ext3,
            FsType::Ext4 => FsKind::Ext4,
            FsType::Xfs => FsKind::Xfs,
            FsType::Vfat => FsKind::Vfat,
            FsType::Swap => FsKind::Swap,
            other => return Err(other),
        })
    }
}

/// Why a file-system operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// A tool failed or is missing.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// The UUID or label cannot be put on this file system.
    #[error("{device}: {reason}")]
    Invalid {
        /// The device.
        device: String,
        /// What is wrong.
        reason: String,
    },
    /// The operation does not exist for this kind.
    #[error("{device}: {kind} file systems cannot be {what}")]
    Unsupported {
        /// The device.
        device: String,
        /// The kind.
        kind: &'static str,
        /// "grown", "mounted".
        what: &'static str,
    },
    /// A mount point could not be made or removed, or the device surveyed.
    #[error("{device}: {action} {path}: {reason}")]
    Io {
        /// The device.
        device: String,
        /// What was being done.
        action: &'static str,
        /// The path involved.
        path: String,
        /// The error.
        reason: String,
    },
}

/// What a read-only check found.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FsckReport {
    /// No problem was found.
    pub clean: bool,
    /// The checker's output (stdout then stderr).
    pub output: String,
}

fn invalid(dev: &Path, reason: String) -> FsError {
    FsError::Invalid {
        device: dev.display().to_string(),
        reason,
    }
}

/// `uuid` as the tool for `fs` takes it: hyphenated lowercase for ext,
/// xfs and swap; 8 hex digits (the volume ID, blkid's `ABCD-1234` without
/// the dash) for vfat.
fn tool_uuid(dev: &Path, fs: FsKind, uuid: &str) -> Result<String, FsError> {
    if fs == FsKind::Vfat {
        let id = match uuid.split_once('-') {
            Some((a, b)) if a.len() == 4 && b.len() == 4 => format!("{a}{b}"),
            _ => uuid.to_string(),
        };
        if id.len() != 8 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(invalid(
                dev,
                format!("vfat volume ID {uuid:?} is not of the form ABCD-1234"),
            ));
        }
        return Ok(id.to_ascii_uppercase());
    }
    uuid::Uuid::parse_str(uuid)
        .map(|u| u.hyphenated().to_string())
        .map_err(|e| invalid(dev, format!("{} UUID {uuid:?}: {e}", fs.name())))
}

/// Makes a file system of kind `fs` on `dev` (a partition or loop device),
/// with `uuid` and `label` when given; anything on `dev` is overwritten.
pub fn make_fs(
    dev: &Path,
    fs: FsKind,
    uuid: Option<&str>,
    label: Option<&str>,
) -> Result<(), FsError> {
    let uuid = uuid.map(|u| tool_uuid(dev, fs, u)).transpose()?;
    if let Some(l) = label {
        if l.len() > fs.max_label() || l.contains('\0') {
            return Err(invalid(
                dev,
                format!(
                    "label {l:?} does not fit {} (at most {} bytes)",
                    fs.name(),
                    fs.max_label()
                ),
            ));
        }
    }
    let mut args: Vec<String> = Vec::new();
    let push = |args: &mut Vec<String>, flag: &str, v: Option<String>| {
        if let Some(v) = v {
            args.push(flag.into());
            args.push(v);
        }
    };
    let label = label.map(str::to_string);
    let tool = match fs {
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => {
            args.extend(["-F", "-q", "-t", fs.name()].map(String::from));
            push(&mut args, "-U", uuid);
            push(&mut args, "-L", label);
            MKE2FS
        }
        FsKind::Xfs => {
            args.extend(["-f", "-q"].map(String::from));
            push(&mut args, "-m", uuid.map(|u| format!("uuid={u}")));
            push(&mut args, "-L", label);
            MKFS_XFS
        }
        FsKind::Vfat => {
            args.extend(["-F", "32"].map(String::from));
            push(&mut args, "-i", uuid);
            push(&mut args, "-n", label);
            MKFS_VFAT
        }
        FsKind::Swap => {
            push(&mut args, "-U", uuid);
            push(&mut args, "-L", label);
            MKSWAP
        }
    };
    args.push(dev.display().to_string());
    tool.run(dev, &args, &[0])?;
    Ok(())
}

/// Grows the file system on `dev` to fill it: ext2/3/4 with a forced
/// `e2fsck -f -p` first (resize2fs insists) and `resize2fs`; xfs mounted
/// at a temporary directory, `xfs_growfs`, unmounted. vfat and swap cannot
/// be grown.
pub fn grow_fs(dev: &Path, fs: FsKind) -> Result<(), FsError> {
    let d = dev.as_os_str();
    if fs.is_ext() {
        // e2fsck: 0 clean, 1 errors corrected (preen only fixes safe ones).
        E2FSCK.run(dev, &["-f".as_ref(), "-p".as_ref(), d], &[0, 1])?;
        RESIZE2FS.run(dev, &[d], &[0])?;
        return Ok(());
    }
    if fs != FsKind::Xfs {
        return Err(FsError::Unsupported {
            device: dev.display().to_string(),
            kind: fs.name(),
            what: "grown",
        });
    }
    let m = mount_temp(dev, fs)?;
    XFS_GROWFS.run(dev, &[m.path().as_os_str()], &[0])?;
    m.unmount()
}

/// Checks the file system on `dev` without changing it (`e2fsck -f -n`,
/// `xfs_repair -n`, `fsck.vfat -n`; for swap, the signature is read back).
/// A checker that finds problems gives `clean: false`; one that cannot
/// run or check gives an error.
pub fn check_fs(dev: &Path, fs: FsKind) -> Result<FsckReport, FsError> {
    let d = dev.as_os_str();
    // (tool, args, exit code for clean, exit code for problems found)
    let (tool, args, dirty): (Tool, Vec<&std::ffi::OsStr>, i32) = match fs {
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => {
            (E2FSCK, vec!["-f".as_ref(), "-n".as_ref(), d], 4)
        }
        FsKind::Xfs => (XFS_REPAIR, vec!["-n".as_ref(), d], 1),
        FsKind::Vfat => (FSCK_VFAT, vec!["-n".as_ref(), d], 1),
        FsKind::Swap => return check_swap(dev),
    };
    let out = tool.run(dev, &args, &[0, dirty])?;
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok(FsckReport {
        clean: out.status.code() == Some(0),
        output,
    })
}

/// A swap area is clean when its signature and header read back.
fn check_swap(dev: &Path) -> Result<FsckReport, FsError> {
    let layout = imaging::disk::survey_disk(dev, Path::new("/")).map_err(|e| FsError::Io {
        device: dev.display().to_string(),
        action: "surveying",
        path: dev.display().to_string(),
        reason: e.to_string(),
    })?;
    let fs = layout
        .partitions
        .first()
        .and_then(|p| p.filesystem.as_ref());
    Ok(match fs {
        Some(f) if f.fs_type == FsType::Swap && f.problem.is_none() => FsckReport {
            clean: true,
            output: format!(
                "swap signature found (version {}, UUID {})",
                f.version.as_deref().unwrap_or("?"),
                f.uuid.as_deref().unwrap_or("none")
            ),
        },
        Some(f) => FsckReport {
            clean: false,
            output: format!(
                "expected swap, found {} ({})",
                f.fs_type.blkid_name(),
                f.problem.as_deref().unwrap_or("no problem noted")
            ),
        },
        None => FsckReport {
            clean: false,
            output: "no swap signature".into(),
        },
    })
}

/// A file system mounted at a fresh temporary directory; unmounted (with
/// retries, then lazily) and the directory removed on drop. Use
/// [`TempMount::unmount`] to see unmount errors.
#[derive(Debug)]
pub struct TempMount {
    device: PathBuf,
    dir: PathBuf,
    mounted: bool,
}

/// Mounts `dev` (of kind `fs`) at a new directory under the system's
/// temporary directory. Swap cannot be mounted.
pub fn mount_temp(dev: &Path, fs: FsKind) -> Result<TempMount, FsError> {
    if fs == FsKind::Swap {
        return Err(FsError::Unsupported {
            device: dev.display().to_string(),
            kind: fs.name(),
            what: "mounted",
        });
    }
    let dir = std::env::temp_dir().join(format!("ferry-mount-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&dir).map_err(|e| FsError::Io {
        device: dev.display().to_string(),
        action: "creating mount point",
        path: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let args = [
        "-t".as_ref(),
        fs.name().as_ref(),
        dev.as_os_str(),
        dir.as_os_str(),
    ];
    if let Err(e) = MOUNT.run(dev, &args, &[0]) {
        // Nothing is mounted there: removing the empty directory is safe.
        let _ = std::fs::remove_dir(&dir);
        return Err(e.into());
    }
    Ok(TempMount {
        device: dev.to_path_buf(),
        dir,
        mounted: true,
    })
}

impl TempMount {
    /// Where the file system is mounted.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Unmounts now and removes the directory, reporting failure.
    pub fn unmount(mut self) -> Result<(), FsError> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> Result<(), FsError> {
        if !std::mem::replace(&mut self.mounted, false) {
            return Ok(());
        }
        let d = self.dir.as_os_str();
        if let Err(e) = UMOUNT.run_retrying(&self.device, &[d], UNMOUNT_TRIES, UNMOUNT_PAUSE) {
            tracing::warn!(mount_point = %self.dir.display(), error = %e, "unmount failed; detaching lazily");
            UMOUNT.run(&self.device, &["-l".as_ref(), d], &[0])?;
        }
        // Only an empty directory is removed (never remove_dir_all: were the
        // unmount a lie, that would delete the file system's contents).
        std::fs::remove_dir(&self.dir).map_err(|e| FsError::Io {
            device: self.device.display().to_string(),
            action: "removing mount point",
            path: self.dir.display().to_string(),
            reason: e.to_string(),
        })
    }
}

impl Drop for TempMount {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_inner() {
            tracing::warn!(mount_point = %self.dir.display(), error = %e, "unmounting failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_take_each_tools_form() {
        let d = Path::new("/dev/x");
        assert_eq!(
            tool_uuid(d, FsKind::Vfat, "abcd-12EF").expect("vfat"),
            "ABCD12EF"
        );
        assert!(tool_uuid(d, FsKind::Vfat, "abcd-12E").is_err());
        assert!(tool_uuid(d, FsKind::Vfat, "0b5e55ed-1234-4abc-9def-0123456789ab").is_err());
        assert_eq!(
            tool_uuid(d, FsKind::Ext4, "0B5E55ED-1234-4ABC-9DEF-0123456789AB").expect("ext4"),
            "0b5e55ed-1234-4abc-9def-0123456789ab"
        );
        let e = tool_uuid(d, FsKind::Xfs, "nope").expect_err("bad");
        assert!(
            e.to_string().contains("/dev/x") && e.to_string().contains("xfs UUID"),
            "{e}"
        );
    }

    #[test]
    fn long_labels_and_impossible_operations_are_refused_before_any_tool_runs() {
        let d = Path::new("/nonexistent/dev");
        let e = make_fs(d, FsKind::Xfs, None, Some("thirteen-char")).expect_err("long");
        assert!(e.to_string().contains("at most 12 bytes"), "{e}");
        assert!(matches!(
            grow_fs(d, FsKind::Vfat),
            Err(FsError::Unsupported { .. })
        ));
        assert!(matches!(
            mount_temp(d, FsKind::Swap),
            Err(FsError::Unsupported { .. })
        ));
    }

    #[test]
    fn survey_types_map_to_kinds() {
        assert_eq!(FsKind::try_from(FsType::Ext4), Ok(FsKind::Ext4));
        assert_eq!(FsKind::try_from(FsType::Btrfs), Err(FsType::Btrfs));
    }
}
