//! Running the target's own tools (`update-initramfs`, `depmod`,
//! `update-grub`, `grub-install`) inside it: `/dev`, `/dev/pts`, `/proc`
//! and `/sys` bound from the host, `/run` a fresh tmpfs, and a minimal,
//! fixed environment. Nothing is started as a service; os-prober is
//! disabled so `update-grub` never scans the host's disks.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tool::{Tool, ToolError, MOUNT, UMOUNT};

use super::AdaptError;

const CHROOT: Tool = Tool {
    program: "chroot",
    package: "coreutils",
};

/// The target root with the host's pseudo file systems mounted in it;
/// unmounted, innermost first, on drop.
#[derive(Debug)]
pub struct Chroot {
    root: PathBuf,
    mounted: Vec<PathBuf>,
}

impl Chroot {
    /// Mounts `/dev`, `/dev/pts`, `/proc`, `/sys` and a tmpfs `/run` into
    /// `root`.
    pub fn enter(root: &Path) -> Result<Chroot, AdaptError> {
        let mut c = Chroot {
            root: root.to_path_buf(),
            mounted: Vec::new(),
        };
        let binds: [(&str, &[&str]); 5] = [
            ("dev", &["--bind", "/dev"]),
            ("dev/pts", &["--bind", "/dev/pts"]),
            ("proc", &["-t", "proc", "proc"]),
            ("sys", &["-t", "sysfs", "sysfs"]),
            (
                "run",
                &["-t", "tmpfs", "-o", "mode=0755,nosuid,nodev", "tmpfs"],
            ),
        ];
        for (dir, args) in binds {
            let at = root.join(dir);
            if std::fs::symlink_metadata(&at)
                .map(|m| !m.is_dir())
                .unwrap_or(true)
            {
                return Err(AdaptError::Internal(format!(
                    "{} is not a directory: the target root looks incomplete",
                    at.display()
                )));
            }
            let mut a: Vec<&std::ffi::OsStr> = args.iter().map(|s| s.as_ref()).collect();
            a.push(at.as_os_str());
            MOUNT.run(&at, &a, &[0])?;
            c.mounted.push(at);
        }
        Ok(c)
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Runs `program args…` inside the root; its output is returned on
    /// success, its stderr's end is in the error otherwise.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<std::process::Output, ToolError> {
        let mut a: Vec<&str> = vec![self.root.to_str().unwrap_or("/"), program];
        a.extend_from_slice(args);
        CHROOT.run_with(&self.root, &a, &[0], |cmd: &mut Command| {
            cmd.env_clear()
                .env(
                    "PATH",
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                )
                .env("LC_ALL", "C")
                .env("HOME", "/root")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .env("GRUB_DISABLE_OS_PROBER", "true");
        })
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        for m in self.mounted.drain(..).rev() {
            if UMOUNT.run(&m, &[m.as_os_str()], &[0]).is_err() {
                tracing::warn!(mount_point = %m.display(), "unmount failed; detaching lazily");
                let _ = UMOUNT.run(&m, &["-l".as_ref(), m.as_os_str()], &[0]);
            }
        }
    }
}
