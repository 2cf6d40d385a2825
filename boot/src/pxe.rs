//! `ferry boot pxe`: a directory a TFTP or HTTPS server hands to machines
//! that boot from the network.
//!
//! It holds `vmlinuz`, `initrd.img`, `boot.ipxe` (an iPXE script that
//! loads both by relative name, so it works from wherever it was fetched:
//! QEMU's built-in TFTP, a site TFTP server, or the manager over HTTPS),
//! `grub.cfg` for grub's network boot (`grubnetx64.efi`), and
//! `pxelinux.cfg/default` for pxelinux/lpxelinux.

use std::path::{Path, PathBuf};

use crate::BootError;

/// What goes in the directory.
#[derive(Clone, Debug)]
pub struct PxeOptions {
    /// The kernel.
    pub kernel: PathBuf,
    /// The ramdisk.
    pub initrd: PathBuf,
    /// The kernel command line.
    pub cmdline: String,
    /// The directory to fill (created if missing).
    pub output: PathBuf,
}

/// The iPXE script.
pub fn ipxe_script(cmdline: &str) -> String {
    format!(
        "#!ipxe\n\
         # ferry agent network boot (written by ferry boot pxe). Names are\n\
         # relative: iPXE fetches them from where it fetched this script.\n\
         echo ferry: loading the agent kernel and ramdisk\n\
         kernel vmlinuz initrd=initrd.img {cmdline}\n\
         initrd initrd.img\n\
         boot\n"
    )
}

/// grub's network-boot configuration.
pub fn grub_net_cfg(cmdline: &str) -> String {
    format!(
        "# ferry agent network boot for grub (written by ferry boot pxe)\n\
         set timeout=1\n\
         menuentry \"ferry agent\" {{\n\
         \tlinux vmlinuz {cmdline}\n\
         \tinitrd initrd.img\n\
         }}\n"
    )
}

/// pxelinux's configuration.
pub fn pxelinux_cfg(cmdline: &str) -> String {
    format!(
        "# ferry agent network boot for pxelinux (written by ferry boot pxe)\n\
         DEFAULT ferry\n\
         PROMPT 0\n\
         TIMEOUT 10\n\
         LABEL ferry\n\
         \tKERNEL vmlinuz\n\
         \tINITRD initrd.img\n\
         \tAPPEND {cmdline}\n"
    )
}

fn write(path: &Path, text: &str) -> Result<(), BootError> {
    std::fs::write(path, text).map_err(BootError::io("writing", path))
}

/// Fills the directory.
pub fn build(opts: &PxeOptions) -> Result<(), BootError> {
    let dir = &opts.output;
    std::fs::create_dir_all(dir.join("pxelinux.cfg"))
        .map_err(BootError::io("creating", &dir.join("pxelinux.cfg")))?;
    std::fs::copy(&opts.kernel, dir.join("vmlinuz"))
        .map_err(BootError::io("copying", &opts.kernel))?;
    std::fs::copy(&opts.initrd, dir.join("initrd.img"))
        .map_err(BootError::io("copying", &opts.initrd))?;
    write(&dir.join("boot.ipxe"), &ipxe_script(&opts.cmdline))?;
    write(&dir.join("grub.cfg"), &grub_net_cfg(&opts.cmdline))?;
    write(
        &dir.join("pxelinux.cfg/default"),
        &pxelinux_cfg(&opts.cmdline),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_config_names_the_same_files_and_cmdline() {
        let c = "console=ttyS0 ferry.server=https://m:8443";
        for text in [ipxe_script(c), grub_net_cfg(c), pxelinux_cfg(c)] {
            assert!(
                text.contains("vmlinuz") && text.contains("initrd.img"),
                "{text}"
            );
            assert!(text.contains(c), "{text}");
            // Relative names only: the same files work over TFTP and HTTPS.
            assert!(!text.replace(c, "").contains("://"), "{text}");
        }
        assert!(ipxe_script(c).starts_with("#!ipxe\n"));
        assert!(ipxe_script(c).contains("\nkernel vmlinuz initrd=initrd.img "));
    }
}
