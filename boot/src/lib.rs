//! boot: the media that bring the ferry agent onto a machine (issue 6).
//!
//! - [`initramfs`]: the agent's ramdisk, a compressed newc cpio ([`cpio`])
//!   with the static ferry as `/init`, busybox, the deploy tools and their
//!   libraries ([`elf_deps`]) and the kernel modules chosen with drivers-db
//!   ([`modules`]).
//! - [`iso`]: a hybrid ISO (BIOS and UEFI, CD and disk) with the kernel,
//!   the ramdisk and grub, made with xorriso.
//! - [`pxe`]: a network-boot directory: kernel, ramdisk, an iPXE script, a
//!   grub network config and a pxelinux config.
//!
//! - [`swap`]: the ramdisk swap, which moves a running Linux machine onto
//!   the agent by kexec or a one-shot grub entry.
//!
//! Programs run: busybox (`--list-full`) while building a ramdisk;
//! grub-mkimage, mkfs.fat, mtools and xorriso while building an ISO.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cpio;
pub mod elf_deps;
pub mod initramfs;
pub mod iso;
pub mod modules;
pub mod pxe;
pub mod swap;

use std::path::{Path, PathBuf};

/// Why boot media could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// A file operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A kernel module tree could not be read.
    #[error("kernel module tree {}: {source}", tree.display())]
    Modules {
        /// The tree.
        tree: PathBuf,
        /// The cause.
        #[source]
        source: drivers_db::ModulesError,
    },
    /// The subset's indexes could not be written.
    #[error("indexing the ramdisk's modules in {}: {source}", tree.display())]
    Depmod {
        /// The staged tree.
        tree: PathBuf,
        /// The cause.
        #[source]
        source: drivers_db::LibraryError,
    },
    /// A program's libraries could not be found.
    #[error(transparent)]
    Elf(#[from] elf_deps::ElfDepsError),
    /// A program the ramdisk needs is not installed on the build host.
    #[error("{} is not installed on this host (see initramfs/binaries.txt)", path.display())]
    MissingProgram {
        /// The program.
        path: PathBuf,
    },
    /// The agent or busybox binary is dynamically linked.
    #[error("{} is dynamically linked; the ramdisk needs a static build (for ferry: boot/build-agent.sh)", path.display())]
    NotStatic {
        /// The binary.
        path: PathBuf,
    },
    /// No kernel with a module tree was found.
    #[error("no kernel in {} with a module tree in lib/modules (install linux-image-amd64, or pass --kernel and --modules)", boot.display())]
    NoKernel {
        /// The directory searched.
        boot: PathBuf,
    },
    /// An external tool failed.
    #[error("{tool} failed ({status}): {stderr}")]
    Tool {
        /// The command line.
        tool: String,
        /// Its exit status.
        status: String,
        /// The end of what it printed on stderr.
        stderr: String,
    },
}

impl BootError {
    /// Wraps an I/O error with what was being done and to which path.
    pub fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BootError {
        let path = path.to_path_buf();
        move |source| BootError::Io {
            action,
            path,
            source,
        }
    }
}

/// Runs a tool, turning failure into [`BootError::Tool`] with its stderr.
pub(crate) fn run_tool(cmd: &mut std::process::Command) -> Result<(), BootError> {
    let line = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|e| BootError::Tool {
        tool: line.clone(),
        status: "not started".into(),
        stderr: e.to_string(),
    })?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let tail: String = err
        .chars()
        .rev()
        .take(2000)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Err(BootError::Tool {
        tool: line,
        status: out.status.to_string(),
        stderr: tail.trim().to_string(),
    })
}

/// The kernel command line every medium passes: a serial and a VGA console
/// (the last one named is /dev/console), kernel timestamps, quiet.
pub const BASE_CMDLINE: &str = "console=tty0 console=ttyS0,115200n8 printk.time=1 quiet loglevel=4";
