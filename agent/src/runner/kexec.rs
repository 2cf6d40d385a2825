//! Loading a kernel for kexec with `kexec_file_load(2)` (no kexec-tools
//! needed): the kernel verifies and places the image itself, so this works
//! under lockdown when the kernel is signed. [`load`] only loads; booting
//! it is `reboot(RB_KEXEC)` (see [`super::PowerAction::Kexec`]), or
//! `systemctl kexec` on a running system.
// The one system call here has no safe wrapper in libc or nix.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// `KEXEC_FILE_NO_INITRAMFS` from linux/kexec.h.
const KEXEC_FILE_NO_INITRAMFS: libc::c_ulong = 0x4;

/// Where the kernel says whether kexec is disabled for good.
pub const KEXEC_LOAD_DISABLED: &str = "/proc/sys/kernel/kexec_load_disabled";

/// Why a kernel could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KexecError {
    /// The kernel or initramfs cannot be opened.
    #[error("opening {}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A command line with a NUL byte.
    #[error("the kernel command line holds a NUL byte")]
    Cmdline,
    /// kexec is disabled until the next reboot.
    #[error(
        "kexec is disabled on this machine ({KEXEC_LOAD_DISABLED} is 1, which only a reboot \
         undoes); use a one-shot boot entry instead (ferry boot swap --grub)"
    )]
    Disabled,
    /// The kernel refused the image.
    #[error("kexec_file_load of {} (initramfs {}) failed{}", kernel.display(), initrd.as_ref().map_or("none".into(), |p| p.display().to_string()), hint)]
    Load {
        /// The kernel.
        kernel: PathBuf,
        /// The initramfs.
        initrd: Option<PathBuf>,
        /// What the error number usually means here.
        hint: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Whether kexec is disabled (`kexec_load_disabled` = 1).
pub fn disabled() -> bool {
    std::fs::read_to_string(KEXEC_LOAD_DISABLED).is_ok_and(|s| s.trim() == "1")
}

fn open(path: &Path) -> Result<File, KexecError> {
    File::open(path).map_err(|source| KexecError::Open {
        path: path.to_path_buf(),
        source,
    })
}

/// Checks that the files can be opened (what a kexec would do first,
/// without loading anything).
pub fn check_files(kernel: &Path, initrd: Option<&Path>) -> Result<(), KexecError> {
    open(kernel)?;
    if let Some(i) = initrd {
        open(i)?;
    }
    Ok(())
}

/// Loads `kernel` (and `initrd`) with `cmdline` as the kernel to boot on
/// the next `reboot(RB_KEXEC)`.
pub fn load(kernel: &Path, initrd: Option<&Path>, cmdline: &str) -> Result<(), KexecError> {
    if disabled() {
        return Err(KexecError::Disabled);
    }
    let k = open(kernel)?;
    let i = initrd.map(open).transpose()?;
    let c = CString::new(cmdline).map_err(|_| KexecError::Cmdline)?;
    let bytes = c.as_bytes_with_nul();
    let flags = if i.is_none() {
        KEXEC_FILE_NO_INITRAMFS
    } else {
        0
    };
    let initrd_fd = i.as_ref().map_or(-1, |f| f.as_raw_fd());
    // SAFETY: kexec_file_load(kernel_fd, initrd_fd, cmdline_len, cmdline,
    // flags) reads two open file descriptors (alive until the end of this
    // function) and `cmdline_len` bytes of `cmdline`, a NUL-terminated
    // buffer of exactly that length borrowed for the call; it writes no
    // user memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            k.as_raw_fd(),
            initrd_fd,
            bytes.len() as libc::c_ulong,
            bytes.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let source = io::Error::last_os_error();
    let hint = match source.raw_os_error() {
        Some(libc::EPERM) => " (not root, or kexec is disabled)",
        Some(libc::ENOEXEC) => " (not a bzImage this kernel can boot)",
        Some(libc::EKEYREJECTED) | Some(libc::EBADMSG) => {
            " (the kernel requires a signed image: Secure Boot or lockdown)"
        }
        Some(libc::ENOSYS) => " (this kernel was built without CONFIG_KEXEC_FILE)",
        Some(libc::EBUSY) => " (a kexec image is already being loaded)",
        _ => "",
    };
    Err(KexecError::Load {
        kernel: kernel.to_path_buf(),
        initrd: initrd.map(Path::to_path_buf),
        hint: hint.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_named() {
        let e = check_files(Path::new("/nonexistent/vmlinuz"), None).expect_err("missing");
        assert!(e.to_string().contains("/nonexistent/vmlinuz"), "{e}");
    }

    #[test]
    fn a_nul_in_the_command_line_is_refused_before_any_syscall() {
        let k = tempfile::NamedTempFile::new().expect("temp");
        if disabled() {
            return;
        }
        let e = load(k.path(), None, "console=ttyS0\0x").expect_err("nul");
        assert!(matches!(e, KexecError::Cmdline), "{e}");
    }
}
