//! How the migrated system's file systems are named, and which of those
//! names survive a move to other hardware.
//!
//! The caller builds a [`DeviceMap`] from a disk survey: one
//! [`FsIdentity`] per file system (or swap, LUKS container, raw
//! partition), with the position of its disk among the surveyed disks.
//! `ferry adapt` surveys the target's disks after the deploy; it then adds
//! the image's own disks ([`DeviceMap::with_source_disks`]), which carry
//! the serials, WWNs and device paths the migrated system's configuration
//! was written for. [`DeviceMap::resolve`] finds the (target) file system a
//! device reference in a configuration file means; [`DeviceMap::stabilize`]
//! says what the reference should become, and [`DeviceMap::note`] when
//! that was a guess the report should mention.
//!
//! # What is stable
//!
//! `UUID=`, `PARTUUID=`, `/dev/disk/by-uuid/…` and `/dev/disk/by-partuuid/…`
//! survive the move (ferry keeps file system UUIDs and partition GUIDs) and
//! are left as they are. Kernel names (`/dev/sda1`, `/dev/nvme0n1p2`, …),
//! `/dev/disk/by-id/…` and `/dev/disk/by-path/…` name hardware that
//! changes; they become `UUID=` (or `PARTUUID=` where there is no UUID,
//! e.g. a raw partition for plain dm-crypt swap).
//!
//! **Labels.** `LABEL=` and `/dev/disk/by-label/…` survive the move too,
//! but are rewritten to `UUID=` whenever the label resolves: a label is only
//! unique by convention, and the target may hold another disk with the same
//! one (a cloud image's `cloudimg-rootfs`, a rescue disk's, a second copy
//! of the server), after which the wrong file system is mounted. A label
//! that several surveyed file systems carry resolves to nothing and is
//! left, with a warning.
//!
//! # Finding the disk
//!
//! Without source disks:
//!
//! - Kernel names: when the caller registered the disks' names
//!   ([`DeviceMap::with_disk_name`], from the survey's device paths), only
//!   those count. Otherwise the letter or number is the position among the
//!   surveyed disks (`sdc` and `vdc` → disk 2, `nvme1n1` and `mmcblk1` →
//!   disk 1; other NVMe namespaces than 1 resolve to nothing).
//! - `by-id`: a registered name, else the disk whose serial or WWN the id
//!   contains, else the only disk when there is one and its serial and WWN
//!   are unknown (a recorded serial that the id lacks means another disk).
//!   `dm-*`, `md-*` and `lvm-pv-uuid-*` ids name no partition and are left.
//! - `by-path`: a registered name, else the only disk. Bus positions are
//!   not guessed from: they change with the hardware, and a wrong guess
//!   mounts the wrong file system, which is worse than a warning.
//!
//! With source disks, a name that means a source disk resolves to the
//! target file system carrying the UUID (else the PARTUUID) of what that
//! disk's partition held: a deploy keeps them, even where it renumbers
//! partitions. In order:
//!
//! - Kernel names: a name registered for a target disk (tools run in the
//!   chroot write the agent's names) and a source disk's capture path
//!   (`/dev/sda`) both count; when both match and disagree, nothing
//!   resolves. Without kernel names among the capture paths, the position
//!   among the source disks. The target disks' positions are not guessed
//!   from.
//! - `by-id` and `by-path`: a source disk's capture path, a name registered
//!   for a target disk; for `by-id`, the source disk whose serial or WWN
//!   (or model and serial, as udev composes `ata-<model>_<serial>`) the id
//!   contains, then the target disk whose does. Failing those, when the
//!   image has a single disk: that disk, for `by-path` always and for
//!   `by-id` when the disk's serial and WWN are unknown, with a
//!   [note](DeviceMap::note). With several source disks nothing is
//!   guessed.
//!
//! Hardware ids are compared as udev writes them: lower case, whitespace
//! and other characters udev replaces as `_`, WWNs as hex without `naa.`,
//! `eui.` or `0x` (`wwn-0x5000c500a1b2c3d4` is `naa.5000c500a1b2c3d4`), an
//! ATA disk's T10 id (`t10.ATA`, padded to 8 characters, the model padded
//! to 40, the serial) as its model and serial.
//!
//! A partition suffix (`1`, `p1`, `-part1`) picks the file system on that
//! partition; no suffix picks a file system on the whole disk (a
//! partitioned disk's `/dev/sda` resolves to nothing). A reference that
//! matches several file systems (cloned UUIDs) resolves to nothing.

use serde::{Deserialize, Serialize};

/// One file system (or swap, LUKS container, raw partition) of the
/// migrated system, as the disk survey of the source image found it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsIdentity {
    /// Position of its disk among the source disks (0 = first).
    pub disk_index: usize,
    /// Partition number, `None` for a file system on the whole disk.
    pub partition: Option<u32>,
    /// File system UUID as blkid prints it.
    pub uuid: Option<String>,
    /// File system label.
    pub label: Option<String>,
    /// Partition GUID (GPT) or `<signature>-<nn>` (MBR).
    pub partuuid: Option<String>,
    /// blkid's type (`ext4`, `swap`, `crypto_LUKS`, …).
    pub fs_type: String,
    /// Serial number of its disk.
    pub source_serial: Option<String>,
    /// WWN of its disk (`naa.5000c500a1b2c3d4`, `0x5000c500a1b2c3d4`,
    /// `eui.…`, `t10.…`).
    pub source_wwn: Option<String>,
    /// Model of its disk (sysfs `device/model`).
    #[serde(default)]
    pub source_model: Option<String>,
}

/// A disk of the system as it was captured: a disk of the image the
/// target was deployed from. The migrated system's configuration names
/// its disks as they were then (by serial, WWN, device path or position),
/// which the target's disks no longer carry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceDisk {
    /// How notes name it (`disk0 (/dev/sda)`).
    pub name: String,
    /// The device it was captured from (`/dev/sda`, `/dev/disk/by-id/…`),
    /// `None` for an image file.
    pub path: Option<String>,
    /// Its model (sysfs `device/model`).
    pub model: Option<String>,
    /// Its serial number.
    pub serial: Option<String>,
    /// Its WWN (`naa.…`, `eui.…`, `t10.…`, `0x…`).
    pub wwn: Option<String>,
    /// What it held: of each, the partition number, UUID and PARTUUID count
    /// (`disk_index` does not).
    pub filesystems: Vec<FsIdentity>,
}

impl SourceDisk {
    fn hardware_ids(&self) -> Vec<String> {
        hardware_ids(
            self.model.as_deref(),
            self.serial.as_deref(),
            self.wwn.as_deref(),
        )
    }
}

/// How a device reference is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecKind {
    /// `/dev/sda1`, `/dev/nvme0n1p2`, `/dev/mmcblk0p1`, …
    KernelName,
    /// `/dev/disk/by-id/…`
    ById,
    /// `/dev/disk/by-path/…`
    ByPath,
    /// `LABEL=…`
    Label,
    /// `/dev/disk/by-label/…`
    ByLabel,
    /// `UUID=…`
    Uuid,
    /// `/dev/disk/by-uuid/…`
    ByUuid,
    /// `PARTUUID=…`
    PartUuid,
    /// `/dev/disk/by-partuuid/…`
    ByPartUuid,
}

impl SpecKind {
    /// Whether references of this kind survive the move unchanged.
    pub fn is_stable(self) -> bool {
        matches!(
            self,
            Self::Uuid | Self::ByUuid | Self::PartUuid | Self::ByPartUuid
        )
    }
}

/// What a device reference should become.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stabilized {
    /// Not a reference [`DeviceMap`] understands (`/dev/mapper/…`, an LVM
    /// or MD name, `tmpfs`, `server:/export`): left alone, no warning.
    NotADevice,
    /// A stable reference to a surveyed file system.
    Stable,
    /// A stable form naming no surveyed file system (left as is; worth a
    /// warning where a missing device blocks the boot).
    StableUnknown,
    /// The stable reference to write instead.
    Rewritten(String),
    /// A hardware-bound reference that names no surveyed file system, or
    /// several (left as is, with a warning).
    Unresolved,
}

/// The migrated system's file systems, for resolving device references.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceMap {
    filesystems: Vec<FsIdentity>,
    /// Names of the disks, without `/dev/`: `sda`, `nvme0n1`,
    /// `disk/by-id/ata-…`, `disk/by-path/pci-…`.
    disk_names: Vec<(usize, String)>,
    /// The image's disks the target was deployed from, in image order.
    sources: Vec<SourceDisk>,
}

/// The disk a device name means.
#[derive(Debug)]
enum Place {
    /// Disk `n` of the map's file systems (the target).
    Target(usize),
    /// Source disk `n`; `true` when it is the image's only disk, taken for
    /// a name that matches no disk.
    Source(usize, bool),
}

/// `UUID=<uuid>`, or `PARTUUID=<partuuid>` for what has no UUID; `None`
/// when it has neither.
pub fn stable_spec(fs: &FsIdentity) -> Option<String> {
    match (&fs.uuid, &fs.partuuid) {
        (Some(uuid), _) => Some(format!("UUID={uuid}")),
        (None, Some(partuuid)) => Some(format!("PARTUUID={partuuid}")),
        (None, None) => None,
    }
}

/// Which kind of device reference `spec` is (quotes around the value are
/// allowed); `None` when it is none that [`DeviceMap`] understands.
pub fn classify(spec: &str) -> Option<SpecKind> {
    let spec = unquote(spec);
    let spec = spec.as_str();
    let tags = [
        ("UUID=", SpecKind::Uuid),
        ("PARTUUID=", SpecKind::PartUuid),
        ("LABEL=", SpecKind::Label),
    ];
    let kind = if let Some((_, kind)) = tags.iter().find(|(t, _)| spec.starts_with(t)) {
        *kind
    } else if let Some(link) = spec.strip_prefix("/dev/disk/") {
        let (dir, name) = link.split_once('/')?;
        match dir {
            "by-uuid" => SpecKind::ByUuid,
            "by-partuuid" => SpecKind::ByPartUuid,
            "by-label" => SpecKind::ByLabel,
            "by-path" => SpecKind::ByPath,
            "by-id" if !is_virtual_id(name) => SpecKind::ById,
            _ => return None,
        }
    } else {
        kernel_name(spec)?;
        SpecKind::KernelName
    };
    Some(kind)
}

impl DeviceMap {
    /// A map of the given file systems.
    pub fn new(filesystems: Vec<FsIdentity>) -> Self {
        Self {
            filesystems,
            disk_names: Vec::new(),
            sources: Vec::new(),
        }
    }

    /// Registers a name of disk `disk_index`: its kernel name or device
    /// path (`sda`, `/dev/nvme0n1`) or a link under `/dev/disk/by-id` or
    /// `/dev/disk/by-path` (without `-partN`).
    pub fn with_disk_name(mut self, disk_index: usize, name: &str) -> Self {
        let name = name.strip_prefix("/dev/").unwrap_or(name);
        self.disk_names.push((disk_index, name.to_string()));
        self
    }

    /// Adds the disks of the image the surveyed disks were deployed from
    /// (see the module documentation for how names of theirs resolve).
    pub fn with_source_disks(mut self, disks: Vec<SourceDisk>) -> Self {
        self.sources = disks;
        self
    }

    /// The surveyed file systems.
    pub fn filesystems(&self) -> &[FsIdentity] {
        &self.filesystems
    }

    /// The file system a device reference means (see the module
    /// documentation for the forms understood); `None` when it names none
    /// or several.
    pub fn resolve(&self, spec: &str) -> Option<&FsIdentity> {
        self.locate(spec).map(|(fs, _)| fs)
    }

    /// What the report should say about how `spec` resolved: `Some` when
    /// it was a guess (a name matching no disk, taken as the image's only
    /// disk).
    pub fn note(&self, spec: &str) -> Option<String> {
        let (fs, guessed) = self.locate(spec)?;
        let source = guessed?;
        let to = stable_spec(fs).unwrap_or_else(|| "its file system".into());
        Some(format!(
            "{} names no disk ferry knows by serial, WWN or path; taken to be on the image's only disk, {}: {to}",
            unquote(spec),
            source.name
        ))
    }

    /// The file system `spec` means and, when it was guessed to be on the
    /// image's only disk, that disk.
    fn locate(&self, spec: &str) -> Option<(&FsIdentity, Option<&SourceDisk>)> {
        let kind = classify(spec)?;
        let spec = unquote(spec);
        let spec = spec.as_str();
        let value = match spec.strip_prefix('/') {
            Some(path) => path.rsplit('/').next().unwrap_or(path),
            None => spec.split_once('=').map_or(spec, |(_, v)| v),
        };
        let found = match kind {
            SpecKind::Uuid | SpecKind::ByUuid => {
                self.unique(|fs| eq_ignore_case(fs.uuid.as_deref(), &unescape(value)))
            }
            SpecKind::PartUuid | SpecKind::ByPartUuid => {
                self.unique(|fs| eq_ignore_case(fs.partuuid.as_deref(), &unescape(value)))
            }
            SpecKind::Label | SpecKind::ByLabel => {
                let label = unescape(value);
                self.unique(|fs| fs.label.as_deref() == Some(label.as_str()))
            }
            SpecKind::KernelName => {
                let name = kernel_name(spec)?;
                if self.sources.is_empty() {
                    self.on_disk(self.kernel_disk(&name)?, name.partition)
                } else {
                    self.by_kernel_name(&name)
                }
            }
            SpecKind::ById | SpecKind::ByPath => {
                let link = spec.strip_prefix("/dev/")?;
                let (link, partition) = split_part_suffix(link);
                return match self.link_place(kind, link)? {
                    Place::Target(disk) => self.on_disk(disk, partition).map(|fs| (fs, None)),
                    Place::Source(disk, guessed) => {
                        let fs = self.held_by_source(disk, partition)?;
                        Some((fs, guessed.then(|| &self.sources[disk])))
                    }
                };
            }
        };
        found.map(|fs| (fs, None))
    }

    /// What `spec` should become: see [`Stabilized`].
    pub fn stabilize(&self, spec: &str) -> Stabilized {
        let Some(kind) = classify(spec) else {
            return Stabilized::NotADevice;
        };
        match (kind.is_stable(), self.resolve(spec)) {
            (true, Some(_)) => Stabilized::Stable,
            (true, None) => Stabilized::StableUnknown,
            (false, Some(fs)) => {
                stable_spec(fs).map_or(Stabilized::Unresolved, Stabilized::Rewritten)
            }
            (false, None) => Stabilized::Unresolved,
        }
    }

    fn unique(&self, matches: impl Fn(&FsIdentity) -> bool) -> Option<&FsIdentity> {
        let mut found = self.filesystems.iter().filter(|fs| matches(fs));
        let first = found.next()?;
        found.next().is_none().then_some(first)
    }

    fn on_disk(&self, disk: usize, partition: Option<u32>) -> Option<&FsIdentity> {
        self.unique(|fs| fs.disk_index == disk && fs.partition == partition)
    }

    /// The file system that holds what partition `partition` of source
    /// disk `disk` held: the one with its UUID, else its PARTUUID.
    fn held_by_source(&self, disk: usize, partition: Option<u32>) -> Option<&FsIdentity> {
        let source = self.sources.get(disk)?;
        let mut held = source
            .filesystems
            .iter()
            .filter(|fs| fs.partition == partition);
        let was = held.next()?;
        if held.next().is_some() {
            return None;
        }
        match (&was.uuid, &was.partuuid) {
            (Some(uuid), _) => self.unique(|fs| eq_ignore_case(fs.uuid.as_deref(), uuid)),
            (None, Some(partuuid)) => {
                self.unique(|fs| eq_ignore_case(fs.partuuid.as_deref(), partuuid))
            }
            (None, None) => None,
        }
    }

    /// A kernel name when there are source disks: a target disk's
    /// registered name, a source disk's capture path, or (without kernel
    /// names among those) the position among the source disks.
    fn by_kernel_name(&self, name: &KernelName) -> Option<&FsIdentity> {
        let target = self
            .disk_names
            .iter()
            .find(|(_, n)| *n == name.disk)
            .and_then(|(disk, _)| self.on_disk(*disk, name.partition));
        let paths: Vec<(usize, KernelName)> = self
            .sources
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i, kernel_name(s.path.as_deref()?)?)))
            .collect();
        let source_disk = if paths.is_empty() {
            name.ordinal.filter(|&i| i < self.sources.len())
        } else {
            paths
                .iter()
                .find(|(_, k)| k.disk == name.disk)
                .map(|(i, _)| *i)
        };
        let source = source_disk.and_then(|disk| self.held_by_source(disk, name.partition));
        match (target, source) {
            (Some(t), Some(s)) => (t == s).then_some(t),
            (t, s) => t.or(s),
        }
    }

    /// The disk a `by-id` or `by-path` link (without `-partN`) means, when
    /// there are source disks or not.
    fn link_place(&self, kind: SpecKind, link: &str) -> Option<Place> {
        if let Some(disk) = self.sources.iter().position(|s| {
            s.path
                .as_deref()
                .is_some_and(|p| p.strip_prefix("/dev/").unwrap_or(p) == link)
        }) {
            return Some(Place::Source(disk, false));
        }
        if let Some((index, _)) = self.disk_names.iter().find(|(_, n)| n == link) {
            return Some(Place::Target(*index));
        }
        let id = link.rsplit('/').next().unwrap_or(link).to_ascii_lowercase();
        let names = |ids: Vec<String>| ids.iter().any(|h| id.contains(h.as_str()));
        if kind == SpecKind::ById {
            let owners: Vec<usize> = (0..self.sources.len())
                .filter(|&i| names(self.sources[i].hardware_ids()))
                .collect();
            match owners.as_slice() {
                [one] => return Some(Place::Source(*one, false)),
                [] => {}
                _ => return None,
            }
            let mut owners: Vec<usize> = self
                .filesystems
                .iter()
                .filter(|fs| names(fs_hardware_ids(fs)))
                .map(|fs| fs.disk_index)
                .collect();
            owners.sort_unstable();
            owners.dedup();
            match owners.as_slice() {
                [one] => return Some(Place::Target(*one)),
                [] => {}
                _ => return None,
            }
        }
        if !self.sources.is_empty() {
            // The image's only disk, unless the id lacks the serial or WWN
            // it is known by (then it names another disk).
            return match self.sources.as_slice() {
                [only] if kind == SpecKind::ByPath || only.hardware_ids().is_empty() => {
                    Some(Place::Source(0, true))
                }
                _ => None,
            };
        }
        if kind == SpecKind::ById
            && self
                .filesystems
                .iter()
                .any(|fs| !fs_hardware_ids(fs).is_empty())
        {
            return None;
        }
        match self.disks().as_slice() {
            [only] => Some(Place::Target(*only)),
            _ => None,
        }
    }

    /// The distinct disks the map knows of.
    fn disks(&self) -> Vec<usize> {
        let mut disks: Vec<usize> = self
            .filesystems
            .iter()
            .map(|fs| fs.disk_index)
            .chain(self.disk_names.iter().map(|(i, _)| *i))
            .collect();
        disks.sort_unstable();
        disks.dedup();
        disks
    }

    fn kernel_disk(&self, name: &KernelName) -> Option<usize> {
        let registered = |(_, n): &&(usize, String)| !n.starts_with("disk/");
        if let Some((index, _)) = self
            .disk_names
            .iter()
            .filter(registered)
            .find(|(_, n)| *n == name.disk)
        {
            return Some(*index);
        }
        // Registered source names rule out guessing by position; the
        // agent's own loop devices say nothing about the source's names.
        let source_names = self
            .disk_names
            .iter()
            .filter(registered)
            .any(|(_, n)| !n.starts_with("loop"));
        if source_names {
            None
        } else {
            name.ordinal
        }
    }
}

/// [`hardware_ids`] of a file system's disk.
fn fs_hardware_ids(fs: &FsIdentity) -> Vec<String> {
    hardware_ids(
        fs.source_model.as_deref(),
        fs.source_serial.as_deref(),
        fs.source_wwn.as_deref(),
    )
}

/// What a disk's by-id names contain, as udev writes them (see
/// [`udev_form`]): the serial, the model and serial (`ata-`, `nvme-`,
/// `scsi-SATA_` ids), the WWN's hex (`wwn-0x…`, `scsi-3…`, `nvme-eui.…`),
/// an ATA disk's model and serial from its T10 id. Values shorter than 4
/// characters are left out: they would match by accident inside longer
/// ids.
fn hardware_ids(model: Option<&str>, serial: Option<&str>, wwn: Option<&str>) -> Vec<String> {
    let model = model.map(udev_form).filter(|m| !m.is_empty());
    let serial = serial.map(udev_form).filter(|s| !s.is_empty());
    let mut ids = Vec::new();
    if let Some(serial) = serial {
        if let Some(model) = &model {
            ids.push(format!("{model}_{serial}"));
        }
        ids.push(serial);
    }
    if let Some(wwn) = wwn {
        ids.extend(wwn_ids(wwn));
    }
    ids.retain(|id| id.len() >= 4);
    ids
}

/// The forms a WWN takes in by-id names.
fn wwn_ids(wwn: &str) -> Vec<String> {
    let wwn = wwn.trim();
    let lower = wwn.to_ascii_lowercase();
    if let Some(hex) = ["naa.", "eui.", "0x"]
        .iter()
        .find_map(|p| lower.strip_prefix(p))
    {
        return vec![hex.to_string()];
    }
    if lower.starts_with("t10.") {
        // libata's T10 id: vendor `ATA` padded to 8, the model padded to
        // 40, the serial. Other vendors' layouts are their own: a model
        // without a serial would match every disk of that model.
        let Some(ata) = wwn.get(4..).and_then(|t| t.strip_prefix("ATA     ")) else {
            return Vec::new();
        };
        let (Some(model), Some(serial)) = (ata.get(..40), ata.get(40..)) else {
            return Vec::new();
        };
        let (model, serial) = (udev_form(model), udev_form(serial));
        if serial.is_empty() {
            return Vec::new();
        }
        return vec![format!("{model}_{serial}"), serial];
    }
    vec![udev_form(wwn)]
}

/// A value as udev puts it into a by-id name, lower-cased: whitespace
/// trimmed and each run of it one `_`, characters other than
/// `0-9A-Za-z#+-.:=@_` (and non-ASCII) `_`.
fn udev_form(value: &str) -> String {
    value
        .split_whitespace()
        .collect::<Vec<_>>()
        .join("_")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "#+-.:=@_".contains(c) || !c.is_ascii() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// by-id names of device-mapper, MD and LVM devices, which are no
/// partitions of a disk.
fn is_virtual_id(name: &str) -> bool {
    ["dm-", "md-", "lvm-pv-uuid-"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// `ata-XYZ-part3` → (`ata-XYZ`, 3).
fn split_part_suffix(link: &str) -> (&str, Option<u32>) {
    if let Some((base, n)) = link.rsplit_once("-part") {
        if let Ok(n) = n.parse() {
            return (base, Some(n));
        }
    }
    (link, None)
}

/// A parsed kernel device name.
#[derive(Debug, PartialEq, Eq)]
struct KernelName {
    /// The disk's name: `sda`, `nvme0n1`, `mmcblk0`.
    disk: String,
    /// The disk's position by the name alone, when it tells.
    ordinal: Option<usize>,
    partition: Option<u32>,
}

fn kernel_name(spec: &str) -> Option<KernelName> {
    let name = spec.strip_prefix("/dev/")?;
    for prefix in ["xvd", "sd", "hd", "vd"] {
        if let Some(rest) = name.strip_prefix(prefix) {
            let letters = rest.bytes().take_while(u8::is_ascii_lowercase).count();
            let (letters, digits) = rest.split_at(letters);
            if letters.is_empty() || letters.len() > 3 {
                return None;
            }
            let partition = number_or_none(digits)?;
            // Bijective base 26: a=0 … z=25, aa=26.
            let ordinal = letters
                .bytes()
                .fold(0usize, |n, b| n * 26 + usize::from(b - b'a') + 1)
                - 1;
            return Some(KernelName {
                disk: format!("{prefix}{letters}"),
                ordinal: Some(ordinal),
                partition,
            });
        }
    }
    if let Some(rest) = name.strip_prefix("nvme") {
        let (controller, rest) = rest.split_once('n')?;
        let controller: usize = controller.parse().ok()?;
        let (namespace, partition) = match rest.split_once('p') {
            Some((ns, part)) => (ns, Some(part.parse().ok()?)),
            None => (rest, None),
        };
        let namespace: u32 = namespace.parse().ok()?;
        return Some(KernelName {
            disk: format!("nvme{controller}n{namespace}"),
            ordinal: (namespace == 1).then_some(controller),
            partition,
        });
    }
    // Loop devices carry no position: they resolve only through a name
    // registered with `with_disk_name` (the agent's view of an image file,
    // which tools run in a chroot may write into grub.cfg).
    if let Some(rest) = name.strip_prefix("loop") {
        let (number, partition) = match rest.split_once('p') {
            Some((n, part)) => (n, Some(part.parse().ok()?)),
            None => (rest, None),
        };
        let number: usize = number.parse().ok()?;
        return Some(KernelName {
            disk: format!("loop{number}"),
            ordinal: None,
            partition,
        });
    }
    let rest = name.strip_prefix("mmcblk")?;
    let (number, partition) = match rest.split_once('p') {
        Some((n, part)) => (n, Some(part.parse().ok()?)),
        None => (rest, None),
    };
    let number: usize = number.parse().ok()?;
    Some(KernelName {
        disk: format!("mmcblk{number}"),
        ordinal: Some(number),
        partition,
    })
}

/// `""` → `Some(None)`, `"3"` → `Some(Some(3))`, anything else → `None`.
fn number_or_none(digits: &str) -> Option<Option<u32>> {
    if digits.is_empty() {
        return Some(None);
    }
    digits.parse().ok().map(Some)
}

/// Drops quotes around a reference or its value: `"LABEL=x"` and
/// `LABEL='x'` → `LABEL=x`.
pub(crate) fn unquote(s: &str) -> String {
    fn strip(s: &str) -> &str {
        for q in ['"', '\''] {
            if let Some(inner) = s.strip_prefix(q).and_then(|s| s.strip_suffix(q)) {
                return inner;
            }
        }
        s
    }
    let s = strip(s.trim());
    match s.split_once('=') {
        Some((tag, value)) if tag.bytes().all(|b| b.is_ascii_uppercase()) => {
            format!("{tag}={}", strip(value))
        }
        _ => s.to_string(),
    }
}

/// Decodes fstab's octal (`\040`) and udev's hex (`\x20`) escapes.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut raw = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match (bytes[i], bytes.get(i + 1)) {
            (b'\\', Some(b'x')) => s
                .get(i + 2..i + 4)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .map(|b| (b, 4)),
            (b'\\', Some(_)) => s
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
                .map(|b| (b, 4)),
            _ => None,
        };
        match escaped {
            Some((b, len)) => {
                raw.push(b);
                i += len;
            }
            None => {
                raw.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&raw).into_owned()
}

fn eq_ignore_case(have: Option<&str>, want: &str) -> bool {
    have.is_some_and(|h| h.eq_ignore_ascii_case(want))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapt::rewrite::testmap::{self, *};

    /// Where a file system lies: (disk, partition).
    type Place = Option<(usize, Option<u32>)>;

    /// Where the file system a reference resolves to lies.
    fn at(map: &DeviceMap, spec: &str) -> Place {
        map.resolve(spec).map(|fs| (fs.disk_index, fs.partition))
    }

    #[test]
    fn references_resolve_to_their_file_system() {
        let map = testmap::sample();
        let wwn_id = format!("/dev/disk/by-id/wwn-{WWN1}-part1");
        let serial_id = format!("/dev/disk/by-id/ata-Samsung_SSD_860_EVO_500GB_{SERIAL0}-part5");
        let cases: &[(&str, Place)] = &[
            ("/dev/sda2", Some((0, Some(2)))),
            ("/dev/hda5", Some((0, Some(5)))),
            ("/dev/vdb1", Some((1, Some(1)))),
            ("/dev/xvdb2", Some((1, Some(2)))),
            ("/dev/nvme0n1p3", Some((0, Some(3)))),
            ("/dev/nvme1n1p1", Some((1, Some(1)))),
            ("/dev/nvme0n2p1", None),
            ("/dev/mmcblk1p2", Some((1, Some(2)))),
            ("/dev/sdc1", None),
            ("/dev/sda", None),
            ("/dev/sda4", None),
            (&wwn_id, Some((1, Some(1)))),
            (&serial_id, Some((0, Some(5)))),
            ("/dev/disk/by-id/ata-OTHER_DISK_XYZ123-part1", None),
            ("/dev/disk/by-id/dm-name-vg-root", None),
            ("/dev/disk/by-path/pci-0000:00:1f.2-ata-1-part2", None),
            ("/dev/disk/by-uuid/4A1B-2C3D", Some((0, Some(1)))),
            ("UUID=4a1b-2c3d", Some((0, Some(1)))),
            (
                "UUID=\"1b2c3d4e-0000-4000-8000-00000000000a\"",
                Some((0, Some(2))),
            ),
            (
                "'UUID=1b2c3d4e-0000-4000-8000-00000000000a'",
                Some((0, Some(2))),
            ),
            ("UUID=ffffffff-0000-4000-8000-00000000000a", None),
            ("LABEL=home", Some((0, Some(5)))),
            ("LABEL='data'", Some((1, Some(1)))),
            ("LABEL=twin", None),
            ("/dev/disk/by-label/root", Some((0, Some(2)))),
            (
                "PARTUUID=C3D4E5F6-0000-4000-8000-000000010103",
                Some((1, Some(3))),
            ),
            (
                "/dev/disk/by-partuuid/c3d4e5f6-0000-4000-8000-000000000102",
                Some((0, Some(2))),
            ),
            ("/dev/mapper/vg-root", None),
            ("tmpfs", None),
        ];
        for (spec, want) in cases {
            assert_eq!(at(&map, spec), *want, "{spec}");
        }
    }

    #[test]
    fn registered_names_replace_the_ordinal_guess() {
        let map = testmap::sample()
            .with_disk_name(1, "/dev/nvme0n1")
            .with_disk_name(0, "/dev/sda")
            .with_disk_name(0, "/dev/disk/by-path/pci-0000:00:1f.2-ata-1");
        assert_eq!(at(&map, "/dev/nvme0n1p1"), Some((1, Some(1))));
        assert_eq!(at(&map, "/dev/sda2"), Some((0, Some(2))));
        assert_eq!(at(&map, "/dev/sdb1"), None, "sdb is no registered name");
        assert_eq!(
            at(&map, "/dev/disk/by-path/pci-0000:00:1f.2-ata-1-part3"),
            Some((0, Some(3)))
        );
    }

    #[test]
    fn the_only_disk_takes_links_that_name_no_known_hardware() {
        let root = FsIdentity {
            partition: Some(1),
            uuid: Some(ROOT.into()),
            fs_type: "ext4".into(),
            ..FsIdentity::default()
        };
        let map = DeviceMap::new(vec![root.clone()]);
        for spec in [
            "/dev/disk/by-path/virtio-pci-0000:00:04.0-part1",
            "/dev/disk/by-id/virtio-abc-part1",
        ] {
            assert_eq!(at(&map, spec), Some((0, Some(1))), "{spec}");
        }
        let serial = FsIdentity {
            source_serial: Some("QM00001".into()),
            ..root
        };
        let map = DeviceMap::new(vec![serial]);
        assert_eq!(
            at(&map, "/dev/disk/by-id/ata-QEMU_HARDDISK_QM00001-part1"),
            Some((0, Some(1)))
        );
        assert_eq!(
            at(&map, "/dev/disk/by-id/ata-QEMU_HARDDISK_QM00009-part1"),
            None
        );
    }

    #[test]
    fn whole_disk_file_systems_resolve_by_disk_name() {
        let map = DeviceMap::new(vec![FsIdentity {
            disk_index: 1,
            uuid: Some(DATA.into()),
            fs_type: "xfs".into(),
            ..FsIdentity::default()
        }]);
        assert_eq!(at(&map, "/dev/sdb"), Some((1, None)));
        assert_eq!(at(&map, "/dev/sdb1"), None);
    }

    #[test]
    fn labels_with_escaped_spaces_resolve() {
        let map = DeviceMap::new(vec![FsIdentity {
            uuid: Some(DATA.into()),
            label: Some("my data".into()),
            ..FsIdentity::default()
        }]);
        assert!(map.resolve("LABEL=my\\040data").is_some());
        assert!(map.resolve("/dev/disk/by-label/my\\x20data").is_some());
        assert!(map.resolve("LABEL=my_data").is_none());
    }

    #[test]
    fn stabilize_tells_what_to_write() {
        let map = testmap::sample();
        let cases = [
            ("/dev/sda2", Stabilized::Rewritten(u(ROOT))),
            ("LABEL=home", Stabilized::Rewritten(u(HOME))),
            (
                "/dev/sdb3",
                Stabilized::Rewritten(format!("PARTUUID={RAW_PARTUUID}")),
            ),
            ("UUID=4A1B-2C3D", Stabilized::Stable),
            ("/dev/disk/by-uuid/nope", Stabilized::StableUnknown),
            ("/dev/sdq1", Stabilized::Unresolved),
            ("LABEL=twin", Stabilized::Unresolved),
            ("/dev/mapper/vg-root", Stabilized::NotADevice),
            ("/dev/md0", Stabilized::NotADevice),
            ("server:/export", Stabilized::NotADevice),
        ];
        for (spec, want) in cases {
            assert_eq!(map.stabilize(spec), want, "{spec}");
        }
    }

    #[test]
    fn stable_spec_prefers_the_uuid() {
        let mut fs = FsIdentity {
            uuid: Some("u".into()),
            partuuid: Some("p".into()),
            ..FsIdentity::default()
        };
        assert_eq!(stable_spec(&fs).as_deref(), Some("UUID=u"));
        fs.uuid = None;
        assert_eq!(stable_spec(&fs).as_deref(), Some("PARTUUID=p"));
        fs.partuuid = None;
        assert_eq!(stable_spec(&fs), None);
    }

    #[test]
    fn a_source_disks_by_id_resolves_through_the_uuid_its_partition_held() {
        let spec = "/dev/disk/by-id/ata-QEMU_HARDDISK_FERRYSPLITSOURCE-part3";
        assert_eq!(deployed().stabilize(spec), Stabilized::Unresolved);
        let map = deployed().with_source_disks(vec![split_source()]);
        assert_eq!(map.stabilize(spec), Stabilized::Rewritten(u(ROOT3)));
        assert_eq!(map.note(spec), None, "an exact match is no guess");
        // Other ids udev makes for that disk, and its kernel name.
        for (spec, want) in [
            (
                "/dev/disk/by-id/scsi-SATA_QEMU_HARDDISK_FERRYSPLITSOURCE-part1",
                BOOT,
            ),
            (
                "/dev/disk/by-id/scsi-1ATA_QEMU_HARDDISK_FERRYSPLITSOURCE-part2",
                SWAP3,
            ),
            ("/dev/sda2", SWAP3),
            (
                "/dev/disk/by-id/ata-QEMU_HARDDISK_FERRYSPLITSOURCE-part2",
                SWAP3,
            ),
        ] {
            assert_eq!(
                map.stabilize(spec),
                Stabilized::Rewritten(u(want)),
                "{spec}"
            );
        }
        for spec in [
            "/dev/disk/by-id/ata-QEMU_HARDDISK_FERRYSPLITSOURCE-part4",
            "/dev/disk/by-id/ata-QEMU_HARDDISK_FERRYSPLITSOURCE",
            "/dev/disk/by-id/ata-QEMU_HARDDISK_QM00001-part3",
            "/dev/sdb3",
        ] {
            assert_eq!(map.stabilize(spec), Stabilized::Unresolved, "{spec}");
        }
        // The target's own names still resolve.
        assert_eq!(map.stabilize("/dev/vda1"), Stabilized::Rewritten(u(BOOT)));
        assert_eq!(
            map.stabilize("/dev/disk/by-id/ata-QEMU_HARDDISK_TARGET0001-part3"),
            Stabilized::Rewritten(u(ROOT3))
        );
    }

    #[test]
    fn renumbered_partitions_resolve_by_what_they_held() {
        // The deploy put the source's logical partition 5 at 2.
        let mut source = split_source();
        source.filesystems[1].partition = Some(5);
        let map = deployed().with_source_disks(vec![source]);
        assert_eq!(
            map.stabilize("/dev/disk/by-id/ata-QEMU_HARDDISK_FERRYSPLITSOURCE-part5"),
            Stabilized::Rewritten(u(SWAP3))
        );
        assert_eq!(map.stabilize("/dev/sda5"), Stabilized::Rewritten(u(SWAP3)));
    }

    #[test]
    fn old_images_match_by_the_t10_id_of_an_ata_disk() {
        // Captured before ferry read VPD page 0x80: no serial, the
        // kernel's T10 id (vendor padded to 8, model to 40).
        let source = SourceDisk {
            serial: None,
            wwn: Some(format!(
                "t10.ATA     {:<40}FERRYSPLITSOURCE",
                "QEMU HARDDISK"
            )),
            ..split_source()
        };
        let map = deployed().with_source_disks(vec![source]);
        assert_eq!(
            map.stabilize("/dev/disk/by-id/ata-QEMU_HARDDISK_FERRYSPLITSOURCE-part3"),
            Stabilized::Rewritten(u(ROOT3))
        );
        assert_eq!(
            map.stabilize("/dev/disk/by-id/ata-QEMU_HARDDISK_QM00001-part3"),
            Stabilized::Unresolved,
            "another disk of the same model"
        );
        // A T10 id without the ATA layout says nothing.
        assert!(wwn_ids("t10.QEMU    QEMU HARDDISK").is_empty());
    }

    #[test]
    fn wwn_ids_match_the_kernels_naa_form() {
        let source = SourceDisk {
            serial: Some("WD-WCC4N1234567".into()),
            wwn: Some("naa.50014EE2B5A1C3D7".into()),
            ..split_source()
        };
        let map = deployed().with_source_disks(vec![source]);
        for spec in [
            "/dev/disk/by-id/wwn-0x50014ee2b5a1c3d7-part3",
            "/dev/disk/by-id/scsi-350014ee2b5a1c3d7-part3",
            "/dev/disk/by-id/ata-WDC_WD40EFRX-68N32N0_WD-WCC4N1234567-part3",
        ] {
            assert_eq!(
                map.stabilize(spec),
                Stabilized::Rewritten(u(ROOT3)),
                "{spec}"
            );
        }
        assert_eq!(
            map.stabilize("/dev/disk/by-id/wwn-0x50014ee2b5a1ffff-part3"),
            Stabilized::Unresolved
        );
        // NVMe: `nvme-eui.…` and `nvme-<model>_<serial>`.
        let nvme = SourceDisk {
            model: Some("Samsung SSD 970 EVO Plus 1TB".into()),
            serial: Some("S4EWNX0R123456".into()),
            wwn: Some("eui.0025388B91B2C3D4".into()),
            path: Some("/dev/nvme0n1".into()),
            ..split_source()
        };
        let map = deployed().with_source_disks(vec![nvme]);
        for spec in [
            "/dev/disk/by-id/nvme-eui.0025388b91b2c3d4-part1",
            "/dev/disk/by-id/nvme-Samsung_SSD_970_EVO_Plus_1TB_S4EWNX0R123456_1-part1",
            "/dev/nvme0n1p1",
        ] {
            assert_eq!(
                map.stabilize(spec),
                Stabilized::Rewritten(u(BOOT)),
                "{spec}"
            );
        }
    }

    #[test]
    fn the_images_only_disk_takes_names_of_no_known_disk_with_a_note() {
        let map = deployed().with_source_disks(vec![split_source()]);
        let spec = "/dev/disk/by-path/pci-0000:00:01.1-ata-1-part3";
        assert_eq!(map.stabilize(spec), Stabilized::Rewritten(u(ROOT3)));
        let note = map.note(spec).expect("a guess is noted");
        assert!(
            note.contains(spec) && note.contains("only disk") && note.contains("disk0 (/dev/sda)"),
            "{note}"
        );
        // A by-id of another disk than the one the image knows by serial
        // is no guess to make.
        assert_eq!(
            map.stabilize("/dev/disk/by-id/virtio-data0-part3"),
            Stabilized::Unresolved
        );
        // Without a known serial or WWN, by-id names are taken too.
        let anonymous = SourceDisk {
            serial: None,
            ..split_source()
        };
        let map = deployed().with_source_disks(vec![anonymous]);
        let spec = "/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_drive-scsi0-0-0-0-part1";
        assert_eq!(map.stabilize(spec), Stabilized::Rewritten(u(BOOT)));
        assert!(map.note(spec).is_some());
        // A whole-disk file system.
        let whole = SourceDisk {
            filesystems: vec![held(None, ROOT3, "xfs")],
            ..split_source()
        };
        let map = deployed().with_source_disks(vec![whole]);
        assert_eq!(
            map.stabilize("/dev/disk/by-path/pci-0000:00:01.1-ata-1"),
            Stabilized::Rewritten(u(ROOT3))
        );
    }

    #[test]
    fn names_of_no_disk_stay_when_the_image_has_several() {
        let second = SourceDisk {
            name: "disk1 (/dev/sdb)".into(),
            path: Some("/dev/sdb".into()),
            serial: Some("FERRYDATA".into()),
            filesystems: Vec::new(),
            ..split_source()
        };
        let map = deployed().with_source_disks(vec![split_source(), second]);
        for spec in [
            "/dev/disk/by-path/pci-0000:00:01.1-ata-1-part3",
            "/dev/disk/by-id/ata-QEMU_HARDDISK_SOMEOTHER-part3",
        ] {
            assert_eq!(map.stabilize(spec), Stabilized::Unresolved, "{spec}");
            assert_eq!(map.note(spec), None);
        }
        // Exact matches still resolve.
        assert_eq!(
            map.stabilize("/dev/disk/by-id/ata-QEMU_HARDDISK_FERRYSPLITSOURCE-part3"),
            Stabilized::Rewritten(u(ROOT3))
        );
        // A serial both disks' ids would contain is no match.
        let twins = SourceDisk {
            serial: Some("FERRYSPLITSOURCE".into()),
            ..split_source()
        };
        let map = deployed().with_source_disks(vec![split_source(), twins]);
        assert_eq!(
            map.stabilize("/dev/disk/by-id/ata-QEMU_HARDDISK_FERRYSPLITSOURCE-part3"),
            Stabilized::Unresolved
        );
    }

    #[test]
    fn kernel_names_of_target_and_source_must_agree() {
        // The target's `vda` is registered; the source was captured from
        // `/dev/vda` too, but its partition 1 held the root.
        let source = SourceDisk {
            path: Some("/dev/vda".into()),
            filesystems: vec![held(Some(1), ROOT3, "ext4")],
            ..split_source()
        };
        let map = deployed().with_source_disks(vec![source]);
        assert_eq!(map.stabilize("/dev/vda1"), Stabilized::Unresolved);
        assert_eq!(map.stabilize("/dev/vda3"), Stabilized::Rewritten(u(ROOT3)));
        // Captured from image files: positions among the source disks.
        let from_file = SourceDisk {
            path: None,
            ..split_source()
        };
        let map = deployed().with_source_disks(vec![from_file]);
        assert_eq!(map.stabilize("/dev/sda3"), Stabilized::Rewritten(u(ROOT3)));
        assert_eq!(map.stabilize("/dev/sdb3"), Stabilized::Unresolved);
    }

    #[test]
    fn hardware_ids_are_written_as_udev_writes_them() {
        assert_eq!(
            hardware_ids(Some("QEMU HARDDISK"), Some(" QM00001 "), None),
            ["qemu_harddisk_qm00001", "qm00001"]
        );
        assert_eq!(
            hardware_ids(None, Some("a/b c"), Some("0x5000C500A1B2C3D4")),
            ["a_b_c", "5000c500a1b2c3d4"]
        );
        assert_eq!(hardware_ids(None, Some("ab"), None), Vec::<String>::new());
        assert_eq!(
            wwn_ids(&format!(
                "t10.ATA     {:<40}{:<20}",
                "QEMU HARDDISK", "QM00001"
            )),
            ["qemu_harddisk_qm00001", "qm00001"]
        );
        assert!(wwn_ids(&format!("t10.ATA     {:<40}", "QEMU HARDDISK")).is_empty());
    }

    #[test]
    fn kernel_names_parse() {
        let cases = [
            ("/dev/sdaa1", Some(("sdaa", Some(26), Some(1)))),
            ("/dev/sdz", Some(("sdz", Some(25), None))),
            ("/dev/nvme2n1", Some(("nvme2n1", Some(2), None))),
            ("/dev/mmcblk0p1", Some(("mmcblk0", Some(0), Some(1)))),
            ("/dev/loop3p1", Some(("loop3", None, Some(1)))),
            ("/dev/sda1x", None),
            ("/dev/sr0", None),
            ("/dev/nvme0", None),
            ("sda1", None),
        ];
        for (spec, want) in cases {
            let got = kernel_name(spec);
            let got = got
                .as_ref()
                .map(|k| (k.disk.as_str(), k.ordinal, k.partition));
            assert_eq!(got, want, "{spec}");
        }
    }
}
