//! `ferry adapt`: makes a deployed server boot and run on its new hardware.
//!
//! The target is a set of disks (block devices or image files, attached to
//! loop devices) or an already mounted root directory. On it, in order:
//!
//! 1. **Detect** the distribution, init system, initramfs tool, boot loader
//!    and kernels ([`detect`]); choose the newest kernel that can drive the
//!    new storage and network (every needed module builtin, in its tree, or
//!    in the driver library for that exact version), and make it GRUB's
//!    default when it is not the newest.
//! 2. **Preflight**, before anything changes: the initramfs tool is there,
//!    no needed module is missing, `/boot` has room for a second initramfs,
//!    and the file systems have free inodes. Otherwise adapt refuses with
//!    the list of what is missing.
//! 3. **Identity:** fstab, crypttab, `resume`, `/etc/default/grub`, BLS
//!    entries and `menu.lst` name file systems by UUID ([`rewrite`]); right
//!    after a deploy ([`adapt_deployed`]) names of the source machine's
//!    disks (by-id with their serial or WWN, by-path, the kernel names they
//!    were captured from) resolve through the image's disks; stale
//!    device-bound state is removed; the ESP gets an fstab entry after a
//!    BIOS→UEFI conversion.
//! 4. **Hosts and network:** `/etc/hosts` from `--hosts`; static network
//!    configuration converted to DHCP with `--network dhcp`; the old
//!    interface names pinned to the new NICs' MACs (systemd `.link` files)
//!    so the configuration still applies. With [`AdaptOptions::first_boot`],
//!    the first-boot check ([`crate::firstboot`]) is installed (systemd
//!    targets).
//! 5. **Drivers:** missing modules copied from the driver library, `depmod`;
//!    the storage and network modules added to the initramfs configuration;
//!    the initramfs rebuilt in a chroot (old one kept as a backup) when it
//!    lacks any of them, then **verified** by listing its cpio.
//! 6. **Boot loader:** `grub.cfg` regenerated in the chroot (os-prober off),
//!    GRUB installed for BIOS or UEFI ([`bootloader`]).
//! 7. **Record:** every changed file is backed up under
//!    `/var/lib/ferry/adapt/<run>/files/`, and `report.json`/`report.txt`
//!    list each change ([`changes`]).
//!
//! Any failure rolls every file change back (the backups and a report of
//! the failure stay), so a target is never left half-adapted. A second run
//! on an adapted target changes nothing.

pub mod bootloader;
pub mod changes;
pub mod chroot;
pub mod detect;
pub mod drivers;
pub mod initramfs;
pub mod rewrite;
pub mod target;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::plan::Firmware;
use crate::tool::ToolError;
use bootloader::{BootFs, BootloaderReport};
use changes::{Change, Changes};
use chroot::Chroot;
use detect::{Bootloader, InitramfsTool, Kernel, OsInfo};
use drivers_db::plan::{DriverPlan, ModuleSource};
use rewrite::Rewritten;
use target::{fstab_entries, MountedTarget};

/// Why adapt failed.
#[derive(Debug, thiserror::Error)]
pub enum AdaptError {
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A tool failed.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// A block-device operation failed.
    #[error(transparent)]
    Blockdev(#[from] crate::blockdev::BlockdevError),
    /// Mounting failed.
    #[error(transparent)]
    Fs(#[from] crate::mkfs::FsError),
    /// The disks could not be surveyed.
    #[error(transparent)]
    Survey(#[from] imaging::Error),
    /// No root file system on the disks.
    #[error("no root file system (one with /etc/fstab and an os-release) on {disks}")]
    NoRoot {
        /// The disks searched.
        disks: String,
    },
    /// A preflight check failed; nothing was changed.
    #[error("preflight failed, nothing was changed:\n  {}", problems.join("\n  "))]
    Preflight {
        /// Each problem.
        problems: Vec<String>,
    },
    /// The kernel module database could not be read.
    #[error("kernel modules: {0}")]
    Drivers(String),
    /// The initramfs rebuild failed; every change was rolled back.
    #[error("rebuilding the initramfs of {kernel} failed; every change was rolled back (backups in {backups}): {reason}")]
    Initramfs {
        /// The kernel.
        kernel: String,
        /// Where the backups are.
        backups: String,
        /// What went wrong.
        reason: String,
    },
    /// A bug or an impossible state.
    #[error("{0}")]
    Internal(String),
}

/// What to do with the network configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Keep it (addresses stay static), with interface names pinned to the
    /// new MACs.
    Keep,
    /// Convert static configuration to DHCP.
    Dhcp,
}

/// The new hardware, as far as adapt needs it (from the hardware survey).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Hardware {
    /// The machine's firmware.
    pub firmware: Option<Firmware>,
    /// Modaliases of its storage and network devices (both layers for
    /// virtio).
    pub modaliases: Vec<String>,
    /// MACs of its NICs, in PCI order.
    pub nic_macs: Vec<String>,
}

/// What `ferry adapt` works on.
#[derive(Clone, Debug)]
pub enum AdaptTarget {
    /// Deployed disks (devices or image files).
    Disks(Vec<PathBuf>),
    /// A mounted root.
    Root(PathBuf),
}

/// How to adapt.
#[derive(Clone, Debug)]
pub struct AdaptOptions {
    /// The new hardware.
    pub hardware: Hardware,
    /// Network handling.
    pub network: NetworkMode,
    /// The migrated servers' names and addresses for /etc/hosts.
    pub hosts: Vec<rewrite::hosts::HostEntry>,
    /// The firmware to boot with (default: the hardware's, else the
    /// target's current one).
    pub firmware: Option<Firmware>,
    /// The driver library.
    pub drivers: Option<PathBuf>,
    /// Install the first-boot check reporting to this mailbox
    /// ([`crate::firstboot`]); systemd targets only.
    pub first_boot: Option<crate::firstboot::FirstBootConfig>,
}

/// The initramfs step.
#[derive(Clone, Debug, Default, Serialize)]
pub struct InitramfsReport {
    /// The initramfs, inside the target.
    pub path: String,
    /// Whether it was rebuilt (false: it already held every module).
    pub rebuilt: bool,
    /// Its compression.
    pub compression: String,
    /// The modules checked to be inside.
    pub verified_modules: Vec<String>,
}

/// What adapt did.
#[derive(Clone, Debug, Serialize)]
pub struct AdaptReport {
    /// The run's name (UTC time).
    pub run: String,
    /// `ok`, or `failed` (then everything was rolled back).
    pub status: String,
    /// The error, when failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The target OS.
    pub os: OsInfo,
    /// The kernel made to boot.
    pub kernel: Option<String>,
    /// The firmware it boots with.
    pub firmware: Option<Firmware>,
    /// The drivers.
    pub drivers: Option<DriverPlan>,
    /// The initramfs.
    pub initramfs: Option<InitramfsReport>,
    /// The boot loader.
    pub bootloader: Option<BootloaderReport>,
    /// Every file changed.
    pub changes: Vec<Change>,
    /// What may need a look.
    pub warnings: Vec<String>,
    /// How edits were decided where the operator should know (a device
    /// name taken to be on the image's only disk).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Where the backups and this report are, inside the target.
    pub record: String,
}

impl AdaptReport {
    /// The text form of the report.
    pub fn text(&self) -> String {
        let mut s = format!("ferry adapt {} — {}\n", self.run, self.status);
        if let Some(e) = &self.error {
            s += &format!("error: {e}\n");
        }
        s += &format!(
            "os: {} ({}), init {}, initramfs tool {:?}, boot loader {:?}\n",
            self.os.pretty_name.as_deref().unwrap_or(&self.os.id),
            self.os.id,
            self.os.init,
            self.os.initramfs_tool,
            self.os.bootloader
        );
        if let Some(k) = &self.kernel {
            s += &format!("kernel: {k}\n");
        }
        if let Some(d) = &self.drivers {
            let names: Vec<String> = d
                .modules
                .iter()
                .map(|m| match &m.source {
                    ModuleSource::Builtin => format!("{} (builtin)", m.name),
                    ModuleSource::Image { .. } => m.name.clone(),
                    ModuleSource::Library { .. } => format!("{} (from the driver library)", m.name),
                    ModuleSource::Missing => format!("{} (MISSING)", m.name),
                })
                .collect();
            s += &format!("drivers: {}\n", names.join(", "));
        }
        if let Some(i) = &self.initramfs {
            s += &format!(
                "initramfs: {} {} ({}, {} modules verified inside)\n",
                i.path,
                if i.rebuilt {
                    "rebuilt"
                } else {
                    "already complete"
                },
                i.compression,
                i.verified_modules.len()
            );
        }
        if let Some(b) = &self.bootloader {
            s += &format!(
                "boot loader: {} on {} ({})\n",
                b.firmware,
                b.installed.join(", "),
                b.how
            );
        }
        s += &format!("changes: {}\n", self.changes.len());
        for c in &self.changes {
            s += &format!("  {:?} {}: {}\n", c.action, c.path, c.reason);
            for e in &c.edits {
                s += &format!("    line {}: {:?} -> {:?}\n", e.line, e.before, e.after);
            }
        }
        for n in &self.notes {
            s += &format!("note: {n}\n");
        }
        for w in &self.warnings {
            s += &format!("warning: {w}\n");
        }
        s += &format!("record: {}\n", self.record);
        s
    }
}

/// A UTC time stamp naming a run: `20261124T004512Z`.
fn run_name() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// Adapts `target` for `opts.hardware`; `progress` receives one line per
/// step. Device names in the target's configuration resolve against the
/// target's disks only; right after a deploy, [`adapt_deployed`] also
/// knows the names the source system gave its disks.
pub fn adapt(
    target: &AdaptTarget,
    opts: &AdaptOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<AdaptReport, AdaptError> {
    adapt_deployed(target, opts, &[], progress)
}

/// [`adapt`] for a target deployed from an image whose disks are
/// `source` (the manifest's). The migrated system's configuration names
/// its disks as the source machine saw them: a `/dev/disk/by-id` name with
/// the source disk's serial or WWN, a `by-path` name, the kernel name it
/// was captured from. Those resolve through what the named source
/// partition held to the target file system with the same UUID (see
/// [`rewrite::devmap`]). With `source` empty this is [`adapt`].
pub fn adapt_deployed(
    target: &AdaptTarget,
    opts: &AdaptOptions,
    source: &[imaging::manifest::Disk],
    progress: &mut dyn FnMut(&str),
) -> Result<AdaptReport, AdaptError> {
    let sources = target::source_disks(source);
    let t = match target {
        AdaptTarget::Disks(d) => MountedTarget::open_disks(d, &sources)?,
        AdaptTarget::Root(r) => MountedTarget::open_root(r, &sources)?,
    };
    progress(&format!("target root mounted at {}", t.root.display()));
    let os = detect::detect(&t.root);
    progress(&format!(
        "detected {} ({} kernel(s), init {}, {:?}, {:?})",
        os.pretty_name.as_deref().unwrap_or(&os.id),
        os.kernels.len(),
        os.init,
        os.initramfs_tool,
        os.bootloader
    ));
    let current_firmware = if t.esp.is_some() {
        Firmware::Uefi
    } else {
        Firmware::Bios
    };
    let firmware = opts
        .firmware
        .or(opts.hardware.firmware)
        .unwrap_or(current_firmware);
    let mut changes = Changes::begin(&t.root, &run_name());
    let mut report = AdaptReport {
        run: changes
            .run_dir_rel()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string(),
        status: "ok".into(),
        error: None,
        os: os.clone(),
        kernel: None,
        firmware: Some(firmware),
        drivers: None,
        initramfs: None,
        bootloader: None,
        changes: Vec::new(),
        warnings: Vec::new(),
        notes: Vec::new(),
        record: format!("/{}", changes.run_dir_rel()),
    };
    // Preflight: nothing has changed yet, so a refusal needs no rollback
    // and leaves no record.
    let (kernel, needs) = preflight(&t, &os, opts, firmware)?;
    report.kernel = Some(kernel.version.clone());
    report.drivers = Some(needs.clone());
    progress(&format!(
        "kernel {}: {} module(s) for the new hardware, {} from the driver library",
        kernel.version,
        needs.modules.len(),
        needs
            .modules
            .iter()
            .filter(|m| matches!(m.source, ModuleSource::Library { .. }))
            .count()
    ));
    let chroot = Chroot::enter(&t.root)?;
    let result = run_steps(
        &t,
        &chroot,
        &os,
        &kernel,
        &needs,
        opts,
        firmware,
        &mut changes,
        &mut report,
        progress,
    );
    report.changes = changes.applied().to_vec();
    if let Err(e) = result {
        let problems = changes.rollback();
        report.status = "failed".into();
        let mut msg = e.to_string();
        if !problems.is_empty() {
            msg += &format!(" (rollback problems: {})", problems.join("; "));
        }
        report.error = Some(msg);
        let text = report.text();
        let _ = changes.write_report(&report, &text);
        drop(chroot);
        let _ = t.close();
        return Err(match e {
            AdaptError::Initramfs { kernel, reason, .. } => AdaptError::Initramfs {
                kernel,
                reason,
                backups: format!("/{}", changes.run_dir_rel()),
            },
            other => other,
        });
    }
    let text = report.text();
    changes.write_report(&report, &text)?;
    drop(chroot);
    t.close()?;
    Ok(report)
}

/// The checks made before anything changes; returns the kernel to boot
/// and its drivers.
fn preflight(
    t: &MountedTarget,
    os: &OsInfo,
    opts: &AdaptOptions,
    firmware: Firmware,
) -> Result<(Kernel, DriverPlan), AdaptError> {
    let mut problems = Vec::new();
    if os.initramfs_tool.is_none() {
        problems.push(
            "no initramfs tool in the target (neither update-initramfs nor dracut)".to_string(),
        );
    }
    if os.kernels.is_empty() {
        problems.push("no kernel in the target's /boot with a module tree".to_string());
    }
    if firmware == Firmware::Uefi && t.esp.is_none() {
        problems.push("UEFI boot needs an EFI system partition on the target disks (`ferry deploy --firmware uefi` creates one)".into());
    }
    // The newest kernel that can drive the new hardware.
    let mut chosen = None;
    let mut missing_per_kernel = Vec::new();
    for k in &os.kernels {
        let needs = drivers::plan(
            &t.root,
            k,
            &opts.hardware.modaliases,
            opts.drivers.as_deref(),
        )?;
        if needs.missing.is_empty() {
            chosen = Some((k.clone(), needs));
            break;
        }
        missing_per_kernel.push(format!(
            "kernel {} lacks module(s) {} (not in its tree, nor in the driver library{} for that version)",
            k.version,
            needs
                .missing
                .iter()
                .map(|m| format!("{} (for {})", m.name, m.needed_by.join(", ")))
                .collect::<Vec<_>>()
                .join(", "),
            opts.drivers.as_ref().map(|d| format!(" {}", d.display())).unwrap_or_default()
        ));
    }
    if chosen.is_none() {
        problems.extend(missing_per_kernel);
    }
    // Room for a second initramfs next to the first, and free inodes.
    if let Some((k, _)) = &chosen {
        let size = k
            .initramfs
            .as_ref()
            .and_then(|p| std::fs::metadata(t.root.join(p.trim_start_matches('/'))).ok())
            .map(|m| m.len())
            .unwrap_or(64 << 20);
        for (dir, need) in [("boot", size * 2), ("", 16 << 20)] {
            let p = t.root.join(dir);
            match nix::sys::statvfs::statvfs(&p) {
                Ok(s) => {
                    let free = s.blocks_available() * s.fragment_size();
                    if free < need {
                        problems.push(format!(
                            "{} has {free} bytes free; {need} are needed",
                            p.display()
                        ));
                    }
                    if s.files() > 0 && s.files_available() < 100 {
                        problems.push(format!(
                            "{} has only {} free inodes",
                            p.display(),
                            s.files_available()
                        ));
                    }
                }
                Err(e) => problems.push(format!("checking free space on {}: {e}", p.display())),
            }
        }
    }
    match chosen {
        Some(c) if problems.is_empty() => Ok(c),
        _ => Err(AdaptError::Preflight { problems }),
    }
}

/// Reads a text file of the target, `None` when absent.
fn read_text(root: &Path, rel: &str) -> Option<String> {
    std::fs::read_to_string(root.join(rel)).ok()
}

/// Applies a rewrite of `rel` through `changes`.
fn apply(
    changes: &mut Changes,
    report: &mut AdaptReport,
    rel: &str,
    r: Rewritten,
    reason: &str,
) -> Result<(), AdaptError> {
    report
        .warnings
        .extend(r.warnings.iter().map(|w| format!("/{rel}: {w}")));
    report
        .notes
        .extend(r.notes.iter().map(|n| format!("/{rel}: {n}")));
    if r.changed() {
        let r = r.for_file(&format!("/{rel}"));
        changes.write(rel, r.text.as_bytes(), 0o644, reason, r.edits)?;
    }
    Ok(())
}

/// Files directly in `dir` of the target whose names end in `suffix`.
fn files_in(root: &Path, dir: &str, suffix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join(dir))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(suffix))
                .map(|n| format!("{dir}/{n}"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[allow(clippy::too_many_arguments)]
fn run_steps(
    t: &MountedTarget,
    chroot: &Chroot,
    os: &OsInfo,
    kernel: &Kernel,
    needs: &DriverPlan,
    opts: &AdaptOptions,
    firmware: Firmware,
    changes: &mut Changes,
    report: &mut AdaptReport,
    progress: &mut dyn FnMut(&str),
) -> Result<(), AdaptError> {
    let root = t.root.as_path();
    let map = &t.devmap;

    // 3. Identity.
    progress("rewriting device references to UUIDs");
    if let Some(text) = read_text(root, "etc/fstab") {
        // On UEFI the ESP gets a mount; like every mount but /, /usr and
        // /var it is `nofail`, so a slow or failed vfat mount cannot drop
        // the migrated server into the emergency shell.
        let esp = match firmware {
            Firmware::Uefi => t.esp.as_ref().and_then(|e| e.uuid.clone()),
            Firmware::Bios => None,
        };
        let mut options = rewrite::fstab::FstabOptions::default();
        if let Some(uuid) = &esp {
            options.add.push(rewrite::fstab::FstabEntry {
                spec: format!("UUID={uuid}"),
                mountpoint: "/boot/efi".into(),
                fstype: "vfat".into(),
                options: "umask=0077".into(),
                pass: 1,
            });
            std::fs::create_dir_all(root.join("boot/efi")).map_err(|e| AdaptError::Io {
                action: "creating",
                path: root.join("boot/efi").display().to_string(),
                source: e,
            })?;
        }
        let r = rewrite::fstab::rewrite_fstab(&text, map, &options);
        apply(changes, report, "etc/fstab", r, "file systems by UUID")?;
    }
    if let Some(text) = read_text(root, "etc/crypttab") {
        apply(
            changes,
            report,
            "etc/crypttab",
            rewrite::crypttab::rewrite_crypttab(&text, map),
            "encrypted devices by UUID",
        )?;
    }
    // The chosen kernel boots by default when it is not the newest.
    let newest = os.kernels.first().map(|k| k.version.as_str());
    if newest != Some(kernel.version.as_str())
        && matches!(os.bootloader, Bootloader::Grub2 | Bootloader::Grub2Redhat)
    {
        match (t.root_fs.as_ref().and_then(|f| f.uuid.clone()), read_text(root, "etc/default/grub")) {
            (Some(uuid), Some(text)) => {
                let entry = format!("gnulinux-advanced-{uuid}>gnulinux-{}-advanced-{uuid}", kernel.version);
                apply(changes, report, "etc/default/grub", rewrite::grub::set_grub_default(&text, &entry), "default kernel")?;
            }
            _ => report.warnings.push(format!(
                "kernel {} drives the new hardware but is not the newest; set it as GRUB's default by hand",
                kernel.version
            )),
        }
    }
    if let Some(text) = read_text(root, "etc/default/grub") {
        apply(
            changes,
            report,
            "etc/default/grub",
            rewrite::grub::rewrite_grub_default(&text, map),
            "kernel command line by UUID",
        )?;
    }
    for rel in ["etc/initramfs-tools/conf.d/resume", "etc/uswsusp.conf"] {
        if let Some(text) = read_text(root, rel) {
            apply(
                changes,
                report,
                rel,
                rewrite::resume::rewrite_initramfs_resume(&text, map),
                "resume device by UUID",
            )?;
        }
    }
    for rel in files_in(root, "boot/loader/entries", ".conf") {
        if let Some(text) = read_text(root, &rel) {
            apply(
                changes,
                report,
                &rel,
                rewrite::bls::rewrite_bls_entry(&text, map),
                "BLS entry by UUID",
            )?;
        }
    }
    if let Some(text) = read_text(root, "boot/grub/menu.lst") {
        apply(
            changes,
            report,
            "boot/grub/menu.lst",
            rewrite::grub::rewrite_menu_lst(&text, map),
            "GRUB legacy by UUID",
        )?;
    }
    for rel in [
        "etc/lvm/devices/system.devices",
        "etc/lvm/cache/.cache",
        "etc/blkid.tab",
        "etc/blkid/blkid.tab",
    ] {
        changes.remove(rel, "state bound to the old devices")?;
    }

    // 4. Hosts and network.
    if !opts.hosts.is_empty() {
        let hostname = read_text(root, "etc/hostname").map(|h| h.trim().to_string());
        if let Some(text) = read_text(root, "etc/hosts") {
            let r = rewrite::hosts::rewrite_hosts(&text, &opts.hosts, hostname.as_deref());
            apply(
                changes,
                report,
                "etc/hosts",
                r,
                "the migrated servers' names and addresses",
            )?;
        }
    }
    network(root, opts, changes, report, progress)?;
    if let Some(fb) = &opts.first_boot {
        if crate::firstboot::install(changes, root, fb)? {
            progress(&format!(
                "first-boot check installed: reports to {} (mailbox {})",
                fb.server, fb.mailbox
            ));
        } else {
            report
                .warnings
                .push("first-boot check not installed: no systemd".into());
        }
    }

    // 5. Drivers and the initramfs.
    progress("drivers for the new hardware");
    drivers::install(changes, chroot, kernel, needs, opts.drivers.as_deref())?;
    let config_changed = module_config(root, os, needs, changes)?;
    let initrd_rel = kernel
        .initramfs
        .clone()
        .unwrap_or_else(|| format!("/boot/initrd.img-{}", kernel.version));
    let want = drivers::loadable(needs);
    let current = initramfs::list(&root.join(initrd_rel.trim_start_matches('/'))).ok();
    let complete = current
        .as_ref()
        .map(|l| {
            let have = l.modules();
            want.iter().all(|w| have.contains(w))
        })
        .unwrap_or(false);
    let rebuild = config_changed
        || !complete
        || changes
            .applied()
            .iter()
            .any(|c| c.path.starts_with(&kernel.modules));
    if rebuild {
        progress(&format!(
            "rebuilding the initramfs of {} in the target",
            kernel.version
        ));
        rebuild_initramfs(chroot, os, kernel, &initrd_rel, changes)?;
    }
    let listing = initramfs::list(&root.join(initrd_rel.trim_start_matches('/'))).map_err(|e| {
        AdaptError::Initramfs {
            kernel: kernel.version.clone(),
            backups: String::new(),
            reason: e.to_string(),
        }
    })?;
    let have = listing.modules();
    let absent: Vec<&String> = want.iter().filter(|w| !have.contains(w)).collect();
    if !absent.is_empty() {
        return Err(AdaptError::Initramfs {
            kernel: kernel.version.clone(),
            backups: String::new(),
            reason: format!(
                "the new initramfs {initrd_rel} lacks {} (checked by listing its cpio)",
                absent
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    progress(&format!(
        "initramfs {initrd_rel} verified: {} needed module(s) inside",
        want.len()
    ));
    report.initramfs = Some(InitramfsReport {
        path: initrd_rel.clone(),
        rebuilt: rebuild,
        compression: listing.compression,
        verified_modules: want,
    });

    // 6. Boot loader.
    grub_config(t, chroot, os, changes, report)?;
    let boot = boot_fs(t)?;
    let b = match firmware {
        Firmware::Bios => {
            let disk = t
                .disks
                .get(boot.1)
                .ok_or_else(|| AdaptError::Internal("the boot disk is not a target disk".into()))?;
            progress(&format!(
                "installing GRUB for BIOS on {}",
                disk.given.display()
            ));
            bootloader::install_bios(chroot, &disk.device, &disk.given)?
        }
        Firmware::Uefi => {
            let esp = t
                .esp
                .as_ref()
                .ok_or_else(|| AdaptError::Internal("no ESP".into()))?;
            progress(&format!(
                "installing GRUB for UEFI on the ESP {}",
                esp.device.display()
            ));
            // An NVRAM entry only for disks of the machine ferry runs on.
            let disk = t.disks.get(esp.disk).filter(|d| !d.is_image());
            let nvram = disk.map(|d| (d.device.as_path(), esp.partition));
            bootloader::install_uefi(changes, &esp.device, &boot.0, &os.id, nvram)?
        }
    };
    report.bootloader = Some(b);
    Ok(())
}

/// The file system holding /boot (its UUID and GRUB directory) and its
/// disk's index.
fn boot_fs(t: &MountedTarget) -> Result<(BootFs, usize), AdaptError> {
    let fstab = read_text(&t.root, "etc/fstab").unwrap_or_default();
    let boot = fstab_entries(&fstab)
        .into_iter()
        .find(|(_, mp, _, _)| mp == "/boot")
        .and_then(|(spec, ..)| t.resolve(&spec).cloned());
    let (fs, grub_dir) = match boot {
        Some(fs) => (fs, "/grub"),
        None => (
            t.root_fs.clone().ok_or_else(|| {
                AdaptError::Internal("the root file system's device is unknown".into())
            })?,
            "/boot/grub",
        ),
    };
    let uuid = fs
        .uuid
        .clone()
        .ok_or_else(|| AdaptError::Internal(format!("{} has no UUID", fs.device.display())))?;
    Ok((
        BootFs {
            uuid,
            grub_dir: grub_dir.into(),
        },
        fs.disk,
    ))
}

/// Adds the needed storage and network modules to the initramfs tool's
/// configuration; returns whether it changed.
fn module_config(
    root: &Path,
    os: &OsInfo,
    needs: &DriverPlan,
    changes: &mut Changes,
) -> Result<bool, AdaptError> {
    let names = drivers::loadable(needs);
    match os.initramfs_tool {
        Some(InitramfsTool::InitramfsTools) => {
            let rel = "etc/initramfs-tools/modules";
            let text = read_text(root, rel).unwrap_or_default();
            let listed: Vec<String> = text
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .filter_map(|l| l.split_whitespace().next())
                .map(|m| m.replace('-', "_"))
                .collect();
            let add: Vec<&String> = names.iter().filter(|n| !listed.contains(n)).collect();
            if add.is_empty() {
                return Ok(false);
            }
            let mut new = text.clone();
            if !new.is_empty() && !new.ends_with('\n') {
                new.push('\n');
            }
            new += "# ferry adapt: storage and network drivers of the new hardware\n";
            for n in &add {
                new += &format!("{n}\n");
            }
            changes.write(
                rel,
                new.as_bytes(),
                0o644,
                "new hardware's drivers into the initramfs",
                Vec::new(),
            )
        }
        Some(InitramfsTool::Dracut) => {
            let rel = "etc/dracut.conf.d/90-ferry.conf";
            let text = format!(
                "# ferry adapt: storage and network drivers of the new hardware\nadd_drivers+=\" {} \"\n",
                names.join(" ")
            );
            changes.write(
                rel,
                text.as_bytes(),
                0o644,
                "new hardware's drivers into the initramfs",
                Vec::new(),
            )
        }
        None => Ok(false),
    }
}

/// Rebuilds the initramfs of `kernel` in the chroot; the old one is
/// backed up first.
fn rebuild_initramfs(
    chroot: &Chroot,
    os: &OsInfo,
    kernel: &Kernel,
    initrd_rel: &str,
    changes: &mut Changes,
) -> Result<(), AdaptError> {
    changes.expect_change(
        initrd_rel,
        "initramfs rebuilt with the new hardware's drivers",
    )?;
    let r = match os.initramfs_tool {
        Some(InitramfsTool::Dracut) => {
            chroot.run("dracut", &["--force", initrd_rel, &kernel.version])
        }
        _ => chroot.run("update-initramfs", &["-u", "-k", &kernel.version]),
    };
    if let Err(e) = r {
        return Err(AdaptError::Initramfs {
            kernel: kernel.version.clone(),
            backups: String::new(),
            reason: e.to_string(),
        });
    }
    changes.settle()
}

/// Regenerates grub.cfg in the chroot (GRUB 2), or rewrites it in place
/// when the target has no grub-mkconfig.
fn grub_config(
    t: &MountedTarget,
    chroot: &Chroot,
    os: &OsInfo,
    changes: &mut Changes,
    report: &mut AdaptReport,
) -> Result<(), AdaptError> {
    let (cfg, mkconfig) = match os.bootloader {
        Bootloader::Grub2 => ("boot/grub/grub.cfg", "grub-mkconfig"),
        Bootloader::Grub2Redhat => ("boot/grub2/grub.cfg", "grub2-mkconfig"),
        _ => return Ok(()),
    };
    let has_mkconfig = ["usr/sbin", "sbin", "usr/bin"]
        .iter()
        .any(|d| t.root.join(d).join(mkconfig).exists());
    // grub-mkconfig writes into the chroot's private /run; what it made,
    // with any device name it used (the agent's loop device, for want of
    // /dev/disk/by-uuid) turned into a UUID, replaces grub.cfg in one
    // change, which is no change at all on a second run.
    let (text, reason) = if has_mkconfig {
        chroot.run(mkconfig, &["-o", "/run/ferry-grub.cfg"])?;
        let made = t.root.join("run/ferry-grub.cfg");
        let text = std::fs::read_to_string(&made).map_err(|e| AdaptError::Io {
            action: "reading",
            path: made.display().to_string(),
            source: e,
        })?;
        (
            text,
            "grub.cfg regenerated (os-prober off), devices by UUID",
        )
    } else {
        match read_text(&t.root, cfg) {
            Some(text) => (text, "grub.cfg devices by UUID"),
            None => return Ok(()),
        }
    };
    let r = rewrite::grub::rewrite_grub_cfg(&text, &t.devmap);
    report
        .warnings
        .extend(r.warnings.iter().map(|w| format!("/{cfg}: {w}")));
    report
        .notes
        .extend(r.notes.iter().map(|n| format!("/{cfg}: {n}")));
    let edits = r.for_file(&format!("/{cfg}"));
    changes.write(cfg, edits.text.as_bytes(), 0o644, reason, edits.edits)?;
    Ok(())
}

/// The network configuration formats adapt converts.
#[derive(Clone, Copy)]
enum NetFormat {
    Ifupdown,
    Netplan,
    NetworkManager,
    Networkd,
}

impl NetFormat {
    fn interface_names(self, text: &str) -> Vec<String> {
        use rewrite::network::*;
        match self {
            NetFormat::Ifupdown => ifupdown::interface_names(text),
            NetFormat::Netplan => netplan::interface_names(text),
            NetFormat::NetworkManager => keyfile::interface_names(text),
            NetFormat::Networkd => networkd::interface_names(text),
        }
    }

    fn to_dhcp(self, text: &str) -> Rewritten {
        use rewrite::network::*;
        match self {
            NetFormat::Ifupdown => ifupdown::to_dhcp(text),
            NetFormat::Netplan => netplan::to_dhcp(text),
            NetFormat::NetworkManager => keyfile::to_dhcp(text),
            NetFormat::Networkd => networkd::to_dhcp(text),
        }
    }
}

/// Converts or pins the network configuration.
fn network(
    root: &Path,
    opts: &AdaptOptions,
    changes: &mut Changes,
    report: &mut AdaptReport,
    progress: &mut dyn FnMut(&str),
) -> Result<(), AdaptError> {
    use rewrite::network::link;
    let mut files: Vec<(String, NetFormat)> = Vec::new();
    for rel in ["etc/network/interfaces".to_string()]
        .into_iter()
        .chain(files_in(root, "etc/network/interfaces.d", ""))
    {
        files.push((rel, NetFormat::Ifupdown));
    }
    files.extend(
        files_in(root, "etc/netplan", ".yaml")
            .into_iter()
            .map(|f| (f, NetFormat::Netplan)),
    );
    files.extend(
        files_in(
            root,
            "etc/NetworkManager/system-connections",
            ".nmconnection",
        )
        .into_iter()
        .map(|f| (f, NetFormat::NetworkManager)),
    );
    files.extend(
        files_in(root, "etc/systemd/network", ".network")
            .into_iter()
            .map(|f| (f, NetFormat::Networkd)),
    );
    let mut names: Vec<String> = Vec::new();
    for (rel, format) in &files {
        let Some(text) = read_text(root, rel) else {
            continue;
        };
        for n in format.interface_names(&text) {
            if n != "lo" && !names.contains(&n) {
                names.push(n);
            }
        }
        if opts.network == NetworkMode::Dhcp {
            let r = format.to_dhcp(&text);
            apply(
                changes,
                report,
                rel,
                r,
                "static addresses converted to DHCP (--network dhcp)",
            )?;
        }
    }
    if opts.network == NetworkMode::Dhcp {
        changes.remove(
            link::PERSISTENT_NET_RULES,
            "names bound to the old NICs' MACs (--network dhcp)",
        )?;
    }
    // Pin the configured names to the new NICs, in order.
    if root.join("etc/systemd").is_dir() || root.join("lib/systemd").is_dir() {
        for (name, mac) in names.iter().zip(&opts.hardware.nic_macs) {
            let rel = format!("etc/systemd/network/{}", link::link_file_name(name));
            let text = link::pin_link_file(name, mac);
            if changes.write(
                &rel,
                text.as_bytes(),
                0o644,
                &format!("interface {name} pinned to the new NIC {mac}"),
                Vec::new(),
            )? {
                progress(&format!("interface name {name} pinned to {mac}"));
            }
        }
        if names.len() > opts.hardware.nic_macs.len() {
            report.warnings.push(format!(
                "the configuration names {} interface(s) ({}) but the new hardware has {} NIC(s)",
                names.len(),
                names.join(", "),
                opts.hardware.nic_macs.len()
            ));
        }
    }
    Ok(())
}
