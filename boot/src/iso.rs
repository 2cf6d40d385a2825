//! `ferry boot iso`: a hybrid ISO that boots the agent under BIOS and UEFI,
//! from a CD or written to a USB stick or disk.
//!
//! Built the way `grub-mkrescue` builds its images, with Debian's grub and
//! xorriso, but with every piece chosen here: an El Torito BIOS image
//! (`grub-mkimage -O i386-pc-eltorito`), an El Torito EFI image (a FAT
//! file system made by `mkfs.fat` and filled with mtools, holding
//! `EFI/BOOT/BOOTX64.EFI` from `grub-mkimage -O x86_64-efi`; mtools writes
//! directories that pass `fsck.fat -n`, which the fatfs crate's do not),
//! grub's hybrid MBR (`boot_hybrid.img`) and an appended EFI partition, so
//! the same file boots as a CD and as a disk. Both grub images carry the
//! modules they need and an embedded configuration that finds the medium
//! by a marker file and reads `/boot/grub/grub.cfg` from it, which loads
//! `/ferry/vmlinuz` and `/ferry/initrd.img`.
//!
//! Why xorriso + grub: isolinux cannot boot UEFI (syslinux.efi does not
//! read ISO 9660), and hadris-iso writes no hybrid MBR/GPT and no BIOS
//! boot loader of its own; grub is what Debian's own installer images use
//! for both firmware types, and xorriso is the tool grub-mkrescue drives.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{run_tool, BootError};

/// The marker file grub searches for to find the medium.
pub const MARKER: &str = "ferry/ferry-media.id";

/// grub modules both images need.
const COMMON_MODULES: &[&str] = &[
    "iso9660",
    "part_msdos",
    "part_gpt",
    "fat",
    "normal",
    "configfile",
    "linux",
    "search",
    "search_fs_file",
    "echo",
    "serial",
    "terminal",
    "test",
    "gzio",
    "boot",
    "ls",
    "cat",
];

/// What goes on the ISO.
#[derive(Clone, Debug)]
pub struct IsoOptions {
    /// The kernel.
    pub kernel: PathBuf,
    /// The ramdisk (from `ferry boot initramfs`).
    pub initrd: PathBuf,
    /// The kernel command line.
    pub cmdline: String,
    /// The ISO to write.
    pub output: PathBuf,
    /// Seconds grub's menu waits.
    pub timeout: u32,
}

/// grub's configuration on the medium.
pub fn grub_cfg(cmdline: &str, timeout: u32) -> String {
    format!(
        "# ferry agent boot medium (written by ferry boot iso)\n\
         serial --unit=0 --speed=115200\n\
         terminal_input console serial\n\
         terminal_output console serial\n\
         set timeout={timeout}\n\
         set default=0\n\
         menuentry \"ferry agent\" {{\n\
         \techo \"ferry: loading the agent kernel and ramdisk\"\n\
         \tlinux /ferry/vmlinuz {cmdline}\n\
         \tinitrd /ferry/initrd.img\n\
         }}\n"
    )
}

/// The configuration embedded in both grub images: find the medium.
fn early_cfg() -> String {
    format!(
        "search --no-floppy --file --set=root /{MARKER}\n\
         set prefix=($root)/boot/grub\n\
         configfile ($root)/boot/grub/grub.cfg\n"
    )
}

/// Makes the FAT image holding `EFI/BOOT/BOOTX64.EFI` (mkfs.fat + mtools).
pub fn efi_image(bootx64: &Path, out: &Path) -> Result<(), BootError> {
    let size = std::fs::metadata(bootx64)
        .map_err(BootError::io("reading", bootx64))?
        .len();
    // FAT12/16 overhead and slack: 512 KiB, rounded up to whole MiB.
    let kib = (size / 1024 + 512).div_ceil(1024) * 1024;
    let _ = std::fs::remove_file(out);
    run_tool(
        Command::new("mkfs.fat")
            .args(["-C", "-n", "FERRY_EFI"])
            .arg(out)
            .arg(kib.to_string()),
    )?;
    run_tool(
        Command::new("mmd")
            .arg("-i")
            .arg(out)
            .args(["::/EFI", "::/EFI/BOOT"]),
    )?;
    run_tool(
        Command::new("mcopy")
            .arg("-i")
            .arg(out)
            .arg(bootx64)
            .arg("::/EFI/BOOT/BOOTX64.EFI"),
    )
}

/// Builds the ISO.
pub fn build(opts: &IsoOptions) -> Result<(), BootError> {
    let work = tempfile::tempdir().map_err(BootError::io(
        "creating a temporary directory in",
        &std::env::temp_dir(),
    ))?;
    let tree = work.path().join("tree");
    let grub = tree.join("boot/grub");
    let ferry = tree.join("ferry");
    for d in [&grub, &ferry] {
        std::fs::create_dir_all(d).map_err(BootError::io("creating", d))?;
    }
    std::fs::copy(&opts.kernel, ferry.join("vmlinuz"))
        .map_err(BootError::io("copying", &opts.kernel))?;
    std::fs::copy(&opts.initrd, ferry.join("initrd.img"))
        .map_err(BootError::io("copying", &opts.initrd))?;
    let marker = tree.join(MARKER);
    std::fs::write(&marker, "ferry agent boot medium\n")
        .map_err(BootError::io("writing", &marker))?;
    let cfg = grub.join("grub.cfg");
    std::fs::write(&cfg, grub_cfg(&opts.cmdline, opts.timeout))
        .map_err(BootError::io("writing", &cfg))?;
    let early = work.path().join("early.cfg");
    std::fs::write(&early, early_cfg()).map_err(BootError::io("writing", &early))?;

    // BIOS: El Torito no-emulation image.
    let mut bios_mods: Vec<&str> = COMMON_MODULES.to_vec();
    bios_mods.push("biosdisk");
    run_tool(
        Command::new("grub-mkimage")
            .args(["-O", "i386-pc-eltorito", "-p", "/boot/grub", "-c"])
            .arg(&early)
            .arg("-o")
            .arg(grub.join("eltorito.img"))
            .args(&bios_mods),
    )?;
    // UEFI: BOOTX64.EFI in a FAT image.
    let mut efi_mods: Vec<&str> = COMMON_MODULES.to_vec();
    efi_mods.extend(["efi_gop", "efi_uga", "all_video"]);
    let bootx64 = work.path().join("BOOTX64.EFI");
    run_tool(
        Command::new("grub-mkimage")
            .args(["-O", "x86_64-efi", "-p", "/boot/grub", "-c"])
            .arg(&early)
            .arg("-o")
            .arg(&bootx64)
            .args(&efi_mods),
    )?;
    efi_image(&bootx64, &grub.join("efi.img"))?;

    let _ = std::fs::remove_file(&opts.output);
    run_tool(
        Command::new("xorriso")
            .args(["-as", "mkisofs", "-quiet", "-o"])
            .arg(&opts.output)
            .args([
                "-R",
                "-J",
                "-V",
                "FERRY_AGENT",
                "--modification-date=2020010100000000",
                "-b",
                "boot/grub/eltorito.img",
                "-no-emul-boot",
                "-boot-load-size",
                "4",
                "-boot-info-table",
                "--grub2-boot-info",
                "--grub2-mbr",
                "/usr/lib/grub/i386-pc/boot_hybrid.img",
                "--efi-boot",
                "boot/grub/efi.img",
                "-efi-boot-part",
                "--efi-boot-image",
                "--protective-msdos-label",
            ])
            .arg(&tree),
    )
}
