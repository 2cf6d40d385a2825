//! The ramdisk swap: moves a running Linux machine onto the ferry agent,
//! so that the agent owns its disks unmounted (to capture them offline, or
//! to redeploy them in place).
//!
//! [`install_files`] copies the agent's kernel and initramfs to
//! `/boot/ferry/` (temp file, fsync, rename, fsync of the directory). Then
//! either:
//!
//! - **kexec** ([`load_kexec`]): the kernel is loaded with
//!   `kexec_file_load(2)` and booted by `systemctl kexec` (services
//!   stopped, file systems unmounted) or, without systemd, `sync` +
//!   `reboot(RB_KEXEC)`. Refused when `kernel.kexec_load_disabled` is 1.
//! - **grub** ([`install_grub_entry`]): a menu entry `ferry agent
//!   (one-shot)` is written as `/etc/grub.d/45_ferry_agent` (it finds the
//!   file system holding `/boot/ferry` by UUID, and names the kernel
//!   relative to it, so a separate /boot works), `grub.cfg` is regenerated
//!   (`update-grub`, else `grub-mkconfig -o /boot/grub/grub.cfg`) and
//!   checked to hold the entry, and `grub-reboot` sets it as `next_entry`
//!   in grubenv. GRUB boots it once and clears `next_entry` (Debian's
//!   `00_header` does this whatever `GRUB_DEFAULT` says), so the boot after
//!   the agent's returns to the old OS by itself.
//!
//! Either way, a swapped machine whose agent cannot come up or reach its
//! server comes back with one more reboot, and the agent does it:
//! `ferry boot swap` adds `ferry.return_after=SECONDS` (600 by default) to
//! the agent's command line, and the agent, after retrying its server until
//! then, reboots into the installed OS.
//!   Refused where GRUB cannot clear `next_entry` at boot (grubenv on
//!   btrfs, ZFS, LVM or md), since the machine would then boot the agent
//!   for ever.
//!
//! Limits: x86 and GRUB 2 only (`grub-*` or `grub2-*` tools); a /boot on a
//! btrfs subvolume is not handled.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The menu entry's title (what `grub-reboot` is given).
pub const ENTRY_TITLE: &str = "ferry agent (one-shot)";
/// The grub.d script that holds the entry.
pub const GRUB_SCRIPT: &str = "etc/grub.d/45_ferry_agent";
/// Where the kernel and initramfs go, under the root.
pub const BOOT_DIR: &str = "boot/ferry";

/// Why a swap was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// Not root.
    #[error("ferry boot swap must run as root (it writes /boot and reboots the machine)")]
    NotRoot,
    /// A file operation failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// /boot cannot be written.
    #[error("{} is not writable: {reason}", path.display())]
    BootNotWritable {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// GRUB is not this machine's boot loader, or lacks a tool.
    #[error("GRUB 2 does not seem to boot this machine: {0}")]
    NoGrub(String),
    /// GRUB could not clear `next_entry` at boot on this file system.
    #[error(
        "{grubenv} is on {what}, where GRUB cannot write at boot: the one-shot entry would \
         never be cleared and the machine would boot the agent for ever; use --kexec"
    )]
    GrubenvNotWritable {
        /// The grubenv file.
        grubenv: String,
        /// Its file system or device.
        what: String,
    },
    /// A tool failed.
    #[error("{command} failed ({status}): {output}")]
    Tool {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed.
        output: String,
    },
    /// The regenerated grub.cfg lacks the entry.
    #[error("{} has no menu entry {ENTRY_TITLE:?} after regenerating it; is {GRUB_SCRIPT} executable and GRUB_DISABLE_CUSTOM off?", cfg.display())]
    EntryMissing {
        /// The grub.cfg.
        cfg: PathBuf,
    },
    /// Loading the kernel failed.
    #[error(transparent)]
    Kexec(#[from] agent::runner::kexec::KexecError),
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SwapError {
    let path = path.to_path_buf();
    move |source| SwapError::Io {
        action,
        path,
        source,
    }
}

/// Refuses unless running as root.
pub fn require_root() -> Result<(), SwapError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(SwapError::NotRoot)
    }
}

/// The agent's files, once installed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    /// The kernel.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
}

/// Copies `src` to `dst` atomically: a temp file next to it, fsynced,
/// renamed over it.
fn copy_atomic(src: &Path, dst: &Path) -> Result<(), SwapError> {
    let tmp = dst.with_extension("ferry-tmp");
    let mut input = File::open(src).map_err(io_err("opening", src))?;
    let mut out = File::create(&tmp).map_err(io_err("creating", &tmp))?;
    let r = io::copy(&mut input, &mut out)
        .and_then(|_| out.flush())
        .and_then(|()| out.sync_all());
    if let Err(e) = r {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("writing", &tmp)(e));
    }
    fs::rename(&tmp, dst).map_err(io_err("renaming into place", dst))
}

/// Copies the kernel and initramfs to ROOT/boot/ferry/ (`vmlinuz`,
/// `initrd.img`).
pub fn install_files(root: &Path, kernel: &Path, initrd: &Path) -> Result<Installed, SwapError> {
    let dir = root.join(BOOT_DIR);
    if let Err(e) = fs::create_dir_all(&dir) {
        return Err(SwapError::BootNotWritable {
            path: dir,
            reason: e.to_string(),
        });
    }
    let probe = dir.join(".ferry-write-test");
    if let Err(e) = File::create(&probe) {
        return Err(SwapError::BootNotWritable {
            path: dir,
            reason: e.to_string(),
        });
    }
    let _ = fs::remove_file(&probe);
    let installed = Installed {
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
    };
    copy_atomic(kernel, &installed.kernel)?;
    copy_atomic(initrd, &installed.initrd)?;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("flushing", &dir))?;
    Ok(installed)
}

/// Loads the installed kernel for kexec.
pub fn load_kexec(i: &Installed, cmdline: &str) -> Result<(), SwapError> {
    agent::runner::kexec::load(&i.kernel, Some(&i.initrd), cmdline)?;
    Ok(())
}

/// The kernel command line parameters worth keeping from the running
/// system's (`console=`), so the agent talks where the server did.
pub fn inherited_cmdline(proc_cmdline: &str) -> String {
    proc_cmdline
        .split_whitespace()
        .filter(|p| p.starts_with("console="))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The file system holding a path, as `findmnt` sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    /// Its mount point.
    pub target: PathBuf,
    /// Its device.
    pub source: String,
    /// Its type.
    pub fstype: String,
    /// Its UUID.
    pub uuid: String,
}

fn run_tool(cmd: &mut Command) -> Result<String, SwapError> {
    let shown = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|e| SwapError::Tool {
        command: shown.clone(),
        status: "not started".into(),
        output: e.to_string(),
    })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(SwapError::Tool {
            command: shown,
            status: out.status.to_string(),
            output: text.trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The file system holding `path` (`findmnt -T`).
pub fn mount_of(path: &Path) -> Result<MountInfo, SwapError> {
    let out = run_tool(
        Command::new("findmnt")
            .args(["-n", "-P", "-o", "TARGET,SOURCE,FSTYPE,UUID", "-T"])
            .arg(path),
    )?;
    let line = out.lines().next().unwrap_or_default();
    let field = |k: &str| -> String {
        let key = format!("{k}=\"");
        line.find(&key)
            .map(|i| {
                let rest = &line[i + key.len()..];
                rest[..rest.find('"').unwrap_or(rest.len())].to_string()
            })
            .unwrap_or_default()
    };
    Ok(MountInfo {
        target: PathBuf::from(field("TARGET")),
        source: field("SOURCE"),
        fstype: field("FSTYPE"),
        uuid: field("UUID"),
    })
}

/// `path` as GRUB names it on its own file system (mounted at `mount`):
/// `/boot/ferry/vmlinuz` on a root file system, `/ferry/vmlinuz` on a
/// separate /boot.
pub fn grub_path(path: &Path, mount: &Path) -> String {
    let rel = path.strip_prefix(mount).unwrap_or(path);
    format!("/{}", rel.display()).replace("//", "/")
}

/// The GRUB module that reads a file system type.
fn grub_fs_module(fstype: &str) -> &'static str {
    match fstype {
        "xfs" => "xfs",
        "btrfs" => "btrfs",
        "vfat" => "fat",
        _ => "ext2",
    }
}

/// The grub.d script holding the one-shot entry.
pub fn grub_script(boot: &MountInfo, kernel: &str, initrd: &str, cmdline: &str) -> String {
    format!(
        "#!/bin/sh\n\
         # Written by `ferry boot swap --grub`: the ferry agent, booted once (grub-reboot).\n\
         # To remove it: rm {GRUB_SCRIPT} and run update-grub.\n\
         exec tail -n +5 \"$0\"\n\
         menuentry '{ENTRY_TITLE}' --id ferry-agent {{\n\
         \tinsmod part_msdos\n\
         \tinsmod part_gpt\n\
         \tinsmod {module}\n\
         \tsearch --no-floppy --fs-uuid --set=root {uuid}\n\
         \techo 'Loading the ferry agent...'\n\
         \tlinux {kernel} {cmdline}\n\
         \tinitrd {initrd}\n\
         }}\n",
        module = grub_fs_module(&boot.fstype),
        uuid = boot.uuid,
    )
}

/// The GRUB tools of this machine: Debian's `grub-*` or Red Hat's
/// `grub2-*`, and where grub.cfg is.
#[derive(Clone, Debug)]
pub struct GrubTools {
    /// `grub-mkconfig` or `grub2-mkconfig`.
    pub mkconfig: String,
    /// `grub-reboot` or `grub2-reboot`.
    pub reboot: String,
    /// The grub.cfg to regenerate.
    pub cfg: PathBuf,
    /// `update-grub` when present.
    pub update_grub: bool,
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin", "/usr/bin"]
            .iter()
            .any(|d| Path::new(d).join(tool).is_file())
}

/// Finds GRUB's tools and configuration under ROOT; refuses when GRUB is
/// not the boot loader.
pub fn find_grub(root: &Path) -> Result<GrubTools, SwapError> {
    for (prefix, dir) in [("grub", "boot/grub"), ("grub2", "boot/grub2")] {
        let cfg = root.join(dir).join("grub.cfg");
        if !cfg.is_file() {
            continue;
        }
        let mkconfig = format!("{prefix}-mkconfig");
        let reboot = format!("{prefix}-reboot");
        for t in [&mkconfig, &reboot] {
            if !on_path(t) {
                return Err(SwapError::NoGrub(format!(
                    "{} exists but {t} is not installed",
                    cfg.display()
                )));
            }
        }
        return Ok(GrubTools {
            mkconfig,
            reboot,
            cfg,
            update_grub: prefix == "grub" && on_path("update-grub"),
        });
    }
    Err(SwapError::NoGrub(format!(
        "neither {} nor {} exists",
        root.join("boot/grub/grub.cfg").display(),
        root.join("boot/grub2/grub.cfg").display()
    )))
}

/// Refuses a grubenv GRUB cannot write at boot.
pub fn check_grubenv_writable(grubenv_fs: &MountInfo, grubenv: &Path) -> Result<(), SwapError> {
    let what = if matches!(grubenv_fs.fstype.as_str(), "btrfs" | "zfs") {
        Some(grubenv_fs.fstype.clone())
    } else if ["/dev/mapper/", "/dev/md", "/dev/dm-"]
        .iter()
        .any(|p| grubenv_fs.source.starts_with(p))
    {
        Some(format!("{} (device-mapper or md)", grubenv_fs.source))
    } else {
        None
    };
    match what {
        Some(what) => Err(SwapError::GrubenvNotWritable {
            grubenv: grubenv.display().to_string(),
            what,
        }),
        None => Ok(()),
    }
}

/// Writes the one-shot entry, regenerates grub.cfg, checks it and makes
/// the entry GRUB's next boot (once). Returns the grub.cfg.
pub fn install_grub_entry(i: &Installed, cmdline: &str) -> Result<PathBuf, SwapError> {
    let root = Path::new("/");
    let tools = find_grub(root)?;
    let grub_dir = tools.cfg.parent().unwrap_or(root).to_path_buf();
    check_grubenv_writable(&mount_of(&grub_dir)?, &grub_dir.join("grubenv"))?;
    let boot = mount_of(&i.kernel)?;
    if boot.uuid.is_empty() {
        return Err(SwapError::NoGrub(format!(
            "the file system holding {} ({}) has no UUID to find it by",
            i.kernel.display(),
            boot.source
        )));
    }
    let script = grub_script(
        &boot,
        &grub_path(&i.kernel, &boot.target),
        &grub_path(&i.initrd, &boot.target),
        cmdline,
    );
    let path = root.join(GRUB_SCRIPT);
    let tmp = path.with_extension("ferry-tmp");
    fs::write(&tmp, script).map_err(io_err("writing", &tmp))?;
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
            .map_err(io_err("making executable", &tmp))?;
    }
    fs::rename(&tmp, &path).map_err(io_err("renaming into place", &path))?;
    if tools.update_grub {
        run_tool(&mut Command::new("update-grub"))?;
    } else {
        run_tool(Command::new(&tools.mkconfig).arg("-o").arg(&tools.cfg))?;
    }
    let cfg = fs::read_to_string(&tools.cfg).map_err(io_err("reading", &tools.cfg))?;
    if !cfg.contains(&format!("menuentry '{ENTRY_TITLE}'")) {
        return Err(SwapError::EntryMissing { cfg: tools.cfg });
    }
    run_tool(Command::new(&tools.reboot).arg(ENTRY_TITLE))?;
    nix::unistd::sync();
    Ok(tools.cfg)
}

/// How the machine leaves its running OS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leave {
    /// Boot the loaded kexec kernel.
    Kexec,
    /// Reboot (through firmware and GRUB).
    Reboot,
}

/// Leaves the running OS: through systemd when it runs (services stopped,
/// file systems unmounted cleanly), else `sync` and reboot(2) directly.
/// Returns only on failure.
pub fn leave(how: Leave) -> SwapError {
    if Path::new("/run/systemd/system").is_dir() {
        let verb = match how {
            Leave::Kexec => "kexec",
            Leave::Reboot => "reboot",
        };
        match run_tool(Command::new("systemctl").arg(verb)) {
            // systemd takes it from here; the caller waits to be killed.
            Ok(_) => loop {
                std::thread::sleep(std::time::Duration::from_secs(60));
            },
            Err(e) => tracing::warn!("{e}; rebooting directly"),
        }
    }
    use nix::sys::reboot::{reboot, RebootMode};
    nix::unistd::sync();
    let mode = match how {
        Leave::Kexec => RebootMode::RB_KEXEC,
        Leave::Reboot => RebootMode::RB_AUTOBOOT,
    };
    match reboot(mode) {
        Ok(never) => match never {},
        Err(e) => SwapError::Io {
            action: "reboot(2)",
            path: PathBuf::from("/"),
            source: io::Error::from(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot(target: &str, fstype: &str) -> MountInfo {
        MountInfo {
            target: PathBuf::from(target),
            source: "/dev/sda1".into(),
            fstype: fstype.into(),
            uuid: "6a3b1f0e-5c2d-4e7a-9b81-f3e0c2d4a5b6".into(),
        }
    }

    #[test]
    fn paths_are_relative_to_the_boot_file_system() {
        let k = Path::new("/boot/ferry/vmlinuz");
        assert_eq!(grub_path(k, Path::new("/")), "/boot/ferry/vmlinuz");
        assert_eq!(grub_path(k, Path::new("/boot")), "/ferry/vmlinuz");
    }

    #[test]
    fn the_script_prints_one_entry_found_by_uuid() {
        let s = grub_script(
            &boot("/boot", "xfs"),
            "/ferry/vmlinuz",
            "/ferry/initrd.img",
            "console=ttyS0",
        );
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("45_ferry_agent");
        fs::write(&p, &s).expect("write");
        let out = Command::new("sh").arg(&p).output().expect("sh");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("menuentry 'ferry agent (one-shot)' --id ferry-agent {\n"));
        assert!(text.contains("insmod xfs\n"));
        assert!(text.contains(
            "search --no-floppy --fs-uuid --set=root 6a3b1f0e-5c2d-4e7a-9b81-f3e0c2d4a5b6\n"
        ));
        assert!(text.contains("\tlinux /ferry/vmlinuz console=ttyS0\n"));
        assert!(text.contains("\tinitrd /ferry/initrd.img\n"));
        assert!(text.trim_end().ends_with('}'));
        assert!(!text.contains("#!/bin/sh"));
    }

    #[test]
    fn consoles_are_inherited() {
        assert_eq!(
            inherited_cmdline(
                "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro console=tty0 console=ttyS0,115200n8 quiet"
            ),
            "console=tty0 console=ttyS0,115200n8"
        );
    }

    #[test]
    fn unwritable_grubenv_is_refused() {
        let env = Path::new("/boot/grub/grubenv");
        assert!(check_grubenv_writable(&boot("/", "ext4"), env).is_ok());
        assert!(check_grubenv_writable(&boot("/", "btrfs"), env).is_err());
        let mut lvm = boot("/", "ext4");
        lvm.source = "/dev/mapper/vg-root".into();
        let e = check_grubenv_writable(&lvm, env).expect_err("lvm");
        assert!(e.to_string().contains("/dev/mapper/vg-root"), "{e}");
    }

    #[test]
    fn files_are_installed_whole() {
        let d = tempfile::tempdir().expect("tempdir");
        let k = d.path().join("k");
        let i = d.path().join("i");
        fs::write(&k, b"kernel").expect("write");
        fs::write(&i, b"initrd").expect("write");
        let root = d.path().join("root");
        let inst = install_files(&root, &k, &i).expect("install");
        assert_eq!(inst.kernel, root.join("boot/ferry/vmlinuz"));
        assert_eq!(fs::read(&inst.kernel).expect("read"), b"kernel");
        assert_eq!(fs::read(&inst.initrd).expect("read"), b"initrd");
        let e = install_files(&root, &d.path().join("missing"), &i).expect_err("missing");
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
