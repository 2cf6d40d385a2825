//! Installing the boot loader on the adapted target.
//!
//! - **BIOS:** the target's own `grub-install --target=i386-pc DISK`, run in
//!   the chroot; when the target has no i386-pc GRUB (a UEFI source moved
//!   to BIOS), the agent's own GRUB modules (`/usr/lib/grub/i386-pc`) are
//!   installed with the host's `grub-install --boot-directory`.
//! - **UEFI:** `grub-mkimage` builds a `x86_64-efi` GRUB from the agent's
//!   modules (`/usr/lib/grub/x86_64-efi`, Debian's `grub-efi-amd64-bin`),
//!   with an early config that finds `/boot` by its file system UUID and
//!   reads the target's own `grub.cfg`. It is written to the ESP twice: as
//!   the distribution's loader (`\EFI\<id>\grubx64.efi`) and as the
//!   removable-media fallback `\EFI\BOOT\BOOTX64.EFI`, which firmware with
//!   an empty NVRAM boots. The modules are copied to `/boot/grub/x86_64-efi`
//!   so `insmod` works. `grub-install` is not used for UEFI because it
//!   insists on a mounted FAT ESP; ferry writes the ESP with the `fatfs`
//!   crate (directories with mtools' `mmd`: fatfs 0.3 writes `.` and `..`
//!   entries that `fsck.fat` rejects), so no kernel vfat driver is needed,
//!   and checks it with `fsck.fat -n` afterwards. An NVRAM entry is added
//!   with `efibootmgr` only when the agent runs on the target itself with
//!   efivars; otherwise the fallback path boots.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::tool::Tool;

use super::changes::Changes;
use super::chroot::Chroot;
use super::AdaptError;

const GRUB_MKIMAGE: Tool = Tool {
    program: "grub-mkimage",
    package: "grub-common",
};
const GRUB_INSTALL: Tool = Tool {
    program: "grub-install",
    package: "grub-pc-bin",
};
const MMD: Tool = Tool {
    program: "mmd",
    package: "mtools",
};
const EFIBOOTMGR: Tool = Tool {
    program: "efibootmgr",
    package: "efibootmgr",
};
const FSCK_FAT: Tool = Tool {
    program: "fsck.fat",
    package: "dosfstools",
};

/// The agent's GRUB module directories.
const HOST_GRUB_EFI: &str = "/usr/lib/grub/x86_64-efi";
const HOST_GRUB_PC: &str = "/usr/lib/grub/i386-pc";

/// Modules built into the EFI image: enough to find `/boot` and read the
/// target's `grub.cfg` without the module directory; the rest load from it.
const EFI_MODULES: &[&str] = &[
    "part_gpt",
    "part_msdos",
    "fat",
    "ext2",
    "xfs",
    "btrfs",
    "search",
    "search_fs_uuid",
    "normal",
    "configfile",
    "linux",
    "echo",
    "test",
    "gzio",
    "all_video",
    "efi_gop",
    "serial",
    "terminal",
    "boot",
    "loadenv",
];

/// What was installed.
#[derive(Clone, Debug, Serialize)]
pub struct BootloaderReport {
    /// `bios` or `uefi`.
    pub firmware: String,
    /// Where: the disk (BIOS) or the ESP's device and paths (UEFI).
    pub installed: Vec<String>,
    /// How it was done.
    pub how: String,
}

/// Runs `grub-install` for BIOS onto `disk`.
/// `shown` names the disk in the report (the image file behind a loop
/// device).
pub fn install_bios(
    chroot: &Chroot,
    disk: &Path,
    shown: &Path,
) -> Result<BootloaderReport, AdaptError> {
    let d = disk.display().to_string();
    let own = chroot
        .root()
        .join("usr/lib/grub/i386-pc/modinfo.sh")
        .exists();
    if own {
        chroot.run("grub-install", &["--target=i386-pc", "--recheck", &d])?;
    } else {
        let boot = chroot.root().join("boot");
        GRUB_INSTALL.run(
            disk,
            &[
                "--target=i386-pc",
                &format!("--directory={HOST_GRUB_PC}"),
                &format!("--boot-directory={}", boot.display()),
                &d,
            ],
            &[0],
        )?;
    }
    Ok(BootloaderReport {
        firmware: "bios".into(),
        installed: vec![shown.display().to_string()],
        how: if own {
            "the target's grub-install --target=i386-pc (in the chroot)".into()
        } else {
            "the agent's GRUB i386-pc modules (the target has none)".into()
        },
    })
}

/// Where GRUB's files are, as seen from the file system holding `/boot`.
pub struct BootFs {
    /// That file system's UUID.
    pub uuid: String,
    /// `/boot/grub`, or `/grub` when `/boot` is a file system of its own.
    pub grub_dir: String,
}

/// Builds and writes GRUB for UEFI onto the ESP at `esp` (a device or
/// image), copying the module directory into the target through
/// `changes`. `distro` names the vendor directory (`debian`).
pub fn install_uefi(
    changes: &mut Changes,
    esp: &Path,
    boot: &BootFs,
    distro: &str,
    nvram: Option<(&Path, u32)>,
) -> Result<BootloaderReport, AdaptError> {
    let tmp = tempfile::tempdir().map_err(|e| AdaptError::Io {
        action: "creating a temporary directory",
        path: std::env::temp_dir().display().to_string(),
        source: e,
    })?;
    let cfg = tmp.path().join("early.cfg");
    std::fs::write(
        &cfg,
        format!(
            "search.fs_uuid {uuid} root\nset prefix=($root){dir}\nconfigfile $prefix/grub.cfg\n",
            uuid = boot.uuid,
            dir = boot.grub_dir
        ),
    )
    .map_err(|e| AdaptError::Io {
        action: "writing",
        path: cfg.display().to_string(),
        source: e,
    })?;
    let image = tmp.path().join("grubx64.efi");
    let mut args: Vec<String> = vec![
        "-O".into(),
        "x86_64-efi".into(),
        "-d".into(),
        HOST_GRUB_EFI.into(),
        "-o".into(),
        image.display().to_string(),
        "-p".into(),
        boot.grub_dir.clone(),
        "-c".into(),
        cfg.display().to_string(),
    ];
    args.extend(EFI_MODULES.iter().map(|m| m.to_string()));
    GRUB_MKIMAGE.run(esp, &args, &[0])?;
    let efi = std::fs::read(&image).map_err(|e| AdaptError::Io {
        action: "reading",
        path: image.display().to_string(),
        source: e,
    })?;

    // The module directory, for insmod at boot.
    let mut copied = 0;
    let moddir = Path::new(HOST_GRUB_EFI);
    let entries = std::fs::read_dir(moddir).map_err(|e| AdaptError::Io {
        action: "listing (install Debian's grub-efi-amd64-bin)",
        path: HOST_GRUB_EFI.into(),
        source: e,
    })?;
    let rel_dir = "boot/grub/x86_64-efi";
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.ends_with(".mod") || name.ends_with(".lst")) {
            continue;
        }
        let data = std::fs::read(e.path()).map_err(|err| AdaptError::Io {
            action: "reading",
            path: e.path().display().to_string(),
            source: err,
        })?;
        if changes.write(
            &format!("{rel_dir}/{name}"),
            &data,
            0o644,
            "GRUB x86_64-efi modules for UEFI boot",
            Vec::new(),
        )? {
            copied += 1;
        }
    }

    let vendor = format!("EFI/{distro}/grubx64.efi");
    let fallback = "EFI/BOOT/BOOTX64.EFI".to_string();
    write_esp(esp, &[(vendor.as_str(), &efi), (fallback.as_str(), &efi)])?;
    FSCK_FAT.run(esp, &["-n".as_ref(), esp.as_os_str()], &[0])?;
    // The fallback path boots without an NVRAM entry, so a firmware that
    // refuses one costs a note in the report, not the adapted system.
    let nvram_note = match nvram {
        Some((disk, part)) => nvram_entry(disk, part, distro).unwrap_or_else(|e| {
            format!("no NVRAM entry ({e}); the fallback loader \\EFI\\BOOT\\BOOTX64.EFI boots")
        }),
        None => "no NVRAM entry (not the machine ferry runs on; the fallback loader boots)".into(),
    };
    Ok(BootloaderReport {
        firmware: "uefi".into(),
        installed: vec![format!("{}:\\{}", esp.display(), vendor.replace('/', "\\")), format!("{}:\\{}", esp.display(), fallback.replace('/', "\\"))],
        how: format!(
            "grub-mkimage x86_64-efi ({} modules copied to /{rel_dir}); /boot found by UUID {}; fsck.fat -n clean; {nvram_note}",
            copied, boot.uuid
        ),
    })
}

/// Adds a firmware boot entry for the distribution's loader on partition
/// `part` of `disk`, when this machine has efivars (ferry runs on the
/// target itself) and no entry for that loader exists yet.
fn nvram_entry(disk: &Path, part: u32, distro: &str) -> Result<String, AdaptError> {
    if !Path::new("/sys/firmware/efi/efivars").is_dir() {
        return Ok("no efivars on this machine: no NVRAM entry (the fallback loader boots)".into());
    }
    let loader = format!("\\EFI\\{distro}\\grubx64.efi");
    let listed = EFIBOOTMGR.run(disk, &["-v"], &[0])?;
    let listed = String::from_utf8_lossy(&listed.stdout).to_ascii_lowercase();
    if listed.contains(&loader.to_ascii_lowercase()) {
        return Ok(format!("NVRAM already boots {loader}"));
    }
    let d = disk.display().to_string();
    let p = part.to_string();
    EFIBOOTMGR.run(
        disk,
        &[
            "--create", "--disk", &d, "--part", &p, "--loader", &loader, "--label", distro,
        ],
        &[0],
    )?;
    Ok(format!("NVRAM entry {distro:?} added for {loader}"))
}

/// Writes `files` (paths with `/`) onto the FAT file system at `esp`:
/// directories with `mmd`, contents with `fatfs`.
pub fn write_esp(esp: &Path, files: &[(&str, &[u8])]) -> Result<(), AdaptError> {
    let fat_err = |what: &str, e: std::io::Error| AdaptError::Io {
        action: "writing the ESP",
        path: format!("{} ({what})", esp.display()),
        source: e,
    };
    let mut dirs: Vec<String> = Vec::new();
    for (path, _) in files {
        let mut acc = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            if !dirs.contains(&acc) {
                dirs.push(acc.clone());
            }
        }
    }
    let open = || -> Result<fatfs::FileSystem<std::fs::File>, AdaptError> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(esp)
            .map_err(|e| fat_err("opening", e))?;
        fatfs::FileSystem::new(f, fatfs::FsOptions::new())
            .map_err(|e| fat_err("reading the FAT", e))
    };
    {
        let fs = open()?;
        let missing: Vec<String> = dirs
            .iter()
            .filter(|d| fs.root_dir().open_dir(d).is_err())
            .cloned()
            .collect();
        drop(fs);
        if !missing.is_empty() {
            let mut args: Vec<String> = vec![
                "-D".into(),
                "s".into(),
                "-i".into(),
                esp.display().to_string(),
            ];
            args.extend(missing.iter().map(|d| format!("::{d}")));
            MMD.run_with(esp, &args, &[0], |c| {
                c.env("MTOOLS_SKIP_CHECK", "1");
            })?;
        }
    }
    let fs = open()?;
    for (path, data) in files {
        let mut file = fs
            .root_dir()
            .create_file(path)
            .map_err(|e| fat_err(path, e))?;
        file.truncate().map_err(|e| fat_err(path, e))?;
        file.write_all(data).map_err(|e| fat_err(path, e))?;
        file.flush().map_err(|e| fat_err(path, e))?;
    }
    fs.unmount().map_err(|e| fat_err("closing", e))?;
    Ok(())
}
