//! The deployed system `ferry adapt` works on: its disks (block devices,
//! or image files attached to loop devices with their partitions), the
//! file systems on them, its root found and mounted read-write, and the
//! local file systems of its fstab mounted below it.
//!
//! The ESP is not mounted (ferry writes it with the `fatfs` crate, so no
//! kernel vfat driver is needed); swap, network and `noauto` entries are
//! not mounted either.

use std::path::{Path, PathBuf};

use imaging::disk::{survey_disk, DiskLayout, FsType, PartitionKind, PartitionTable};
use imaging::manifest::DiskContent;

use crate::blockdev::{partition_device, reread_partitions, LoopDevice};
use crate::mkfs::{mount_temp, FsKind, TempMount};
use crate::tool::{MOUNT, UMOUNT};

use super::rewrite::devmap::{DeviceMap, FsIdentity, SourceDisk};
use super::AdaptError;

/// One target disk.
#[derive(Debug)]
pub struct TargetDisk {
    /// As given on the command line.
    pub given: PathBuf,
    /// The block device (the loop device of an image file).
    pub device: PathBuf,
    /// What is on it.
    pub layout: DiskLayout,
    _loop: Option<LoopDevice>,
}

impl TargetDisk {
    /// Whether it is an image file (attached to a loop device by ferry),
    /// not a disk of the machine ferry runs on.
    pub fn is_image(&self) -> bool {
        self._loop.is_some()
    }

    /// The device node of partition `n`.
    pub fn partition(&self, n: u32) -> PathBuf {
        if n == 0 {
            self.device.clone()
        } else {
            partition_device(&self.device, n)
        }
    }
}

/// A file system of the target: where it is and what it is.
#[derive(Clone, Debug)]
pub struct TargetFs {
    /// Index of its disk.
    pub disk: usize,
    /// Its partition number (0: the whole disk).
    pub partition: u32,
    /// Its device node.
    pub device: PathBuf,
    /// Its type.
    pub fs_type: FsType,
    /// Its UUID.
    pub uuid: Option<String>,
}

/// The mounted target.
#[derive(Debug)]
pub struct MountedTarget {
    /// The disks, in command-line order (`None` for a root directory given
    /// as is).
    pub disks: Vec<TargetDisk>,
    /// Every file system found on them.
    pub filesystems: Vec<TargetFs>,
    /// The device map for rewriting references (from the disks' surveys).
    pub devmap: DeviceMap,
    /// Its root directory on the host.
    pub root: PathBuf,
    /// The root file system, when ferry found it on the disks.
    pub root_fs: Option<TargetFs>,
    /// The ESP, if the disks hold one.
    pub esp: Option<TargetFs>,
    /// Mounts below the root, innermost last.
    submounts: Vec<PathBuf>,
    root_mount: Option<TempMount>,
}

fn fs_kind(t: FsType) -> Option<FsKind> {
    match t {
        FsType::Ext2 => Some(FsKind::Ext2),
        FsType::Ext3 => Some(FsKind::Ext3),
        FsType::Ext4 => Some(FsKind::Ext4),
        FsType::Xfs => Some(FsKind::Xfs),
        _ => None,
    }
}

/// The device map of surveyed disks: each file system with its disk's
/// position, partition number, UUID, label and PARTUUID.
pub fn device_map(layouts: &[&DiskLayout]) -> DeviceMap {
    let mut out = Vec::new();
    for (i, d) in layouts.iter().enumerate() {
        for p in &d.partitions {
            let Some(fs) = &p.filesystem else { continue };
            let partuuid = match (&p.kind, &d.table) {
                (PartitionKind::Gpt { unique_guid, .. }, _) => Some(unique_guid.clone()),
                (PartitionKind::Mbr { .. }, PartitionTable::Mbr { disk_signature, .. }) => {
                    Some(format!("{disk_signature}-{:02x}", p.number))
                }
                _ => None,
            };
            out.push(FsIdentity {
                disk_index: i,
                partition: (p.number != 0).then_some(p.number),
                uuid: fs.uuid.clone(),
                label: fs.label.clone(),
                partuuid,
                fs_type: fs.fs_type.blkid_name().to_string(),
                source_serial: d.serial.clone(),
                source_wwn: d.wwn.clone(),
                source_model: d.model.clone(),
            });
        }
    }
    DeviceMap::new(out)
}

/// The disks of an image as [`SourceDisk`]s: what a deployed system's
/// configuration was written for. A disk captured whole (raw) has no
/// survey: it counts as a disk, but nothing resolves through it.
pub fn source_disks(disks: &[imaging::manifest::Disk]) -> Vec<SourceDisk> {
    disks
        .iter()
        .map(|d| {
            let layout = match &d.content {
                DiskContent::Partitioned { layout, .. } => Some(layout),
                DiskContent::Whole { .. } => None,
            };
            SourceDisk {
                name: format!("{} ({})", d.name, d.source),
                path: d.source.starts_with("/dev/").then(|| d.source.clone()),
                model: layout.and_then(|l| l.model.clone()),
                serial: layout.and_then(|l| l.serial.clone()),
                wwn: layout.and_then(|l| l.wwn.clone()),
                filesystems: layout
                    .map(|l| device_map(&[l]).filesystems().to_vec())
                    .unwrap_or_default(),
            }
        })
        .collect()
}

/// Every file system on `disks`.
fn filesystems_of(disks: &[TargetDisk]) -> Vec<TargetFs> {
    let mut out = Vec::new();
    for (i, d) in disks.iter().enumerate() {
        for p in &d.layout.partitions {
            if let Some(fs) = &p.filesystem {
                out.push(TargetFs {
                    disk: i,
                    partition: p.number,
                    device: d.partition(p.number),
                    fs_type: fs.fs_type,
                    uuid: fs.uuid.clone(),
                });
            }
        }
    }
    out
}

/// Registers the target disks' own device names (`/dev/loop3` behind an
/// image file): tools run in the chroot (grub-mkconfig without
/// `/dev/disk/by-uuid`) write those, and they must become UUIDs too.
fn with_target_names(mut map: DeviceMap, disks: &[TargetDisk]) -> DeviceMap {
    for (i, d) in disks.iter().enumerate() {
        map = map.with_disk_name(i, &d.device.display().to_string());
    }
    map
}

/// The fields of the active fstab lines: (spec, mount point, type, options).
pub fn fstab_entries(text: &str) -> Vec<(String, String, String, String)> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let spec = f.next()?.to_string();
            let mp = f.next()?.replace("\\040", " ");
            let t = f.next()?.to_string();
            let o = f.next().unwrap_or("defaults").to_string();
            Some((spec, mp, t, o))
        })
        .collect()
}

impl MountedTarget {
    /// Opens target disks (block devices or image files), finds the root
    /// file system (the one with `/etc/fstab` and an os-release) and
    /// mounts it and its fstab's local file systems. `sources` are the
    /// disks of the image the target was deployed from, when known (see
    /// [`source_disks`]): names of theirs then resolve too.
    pub fn open_disks(
        paths: &[PathBuf],
        sources: &[SourceDisk],
    ) -> Result<MountedTarget, AdaptError> {
        let mut disks = Vec::new();
        for p in paths {
            let meta = std::fs::metadata(p).map_err(|e| AdaptError::Io {
                action: "opening",
                path: p.display().to_string(),
                source: e,
            })?;
            let (device, lo) = if meta.is_file() {
                let lo = LoopDevice::attach(p, 0, 0)?;
                (lo.path().to_path_buf(), Some(lo))
            } else {
                (p.clone(), None)
            };
            let f = std::fs::File::open(&device).map_err(|e| AdaptError::Io {
                action: "opening",
                path: device.display().to_string(),
                source: e,
            })?;
            reread_partitions(&f, &device)?;
            let layout = survey_disk(&device, Path::new("/"))?;
            disks.push(TargetDisk {
                given: p.clone(),
                device,
                layout,
                _loop: lo,
            });
        }
        let filesystems = filesystems_of(&disks);
        let devmap = with_target_names(
            device_map(&disks.iter().map(|d| &d.layout).collect::<Vec<_>>()),
            &disks,
        )
        .with_source_disks(sources.to_vec());
        let esp = disks.iter().enumerate().find_map(|(i, d)| {
            let p = d.layout.partitions.iter().find(|p| p.is_esp())?;
            filesystems
                .iter()
                .find(|f| f.disk == i && f.partition == p.number)
                .cloned()
        });
        // The root: the first Linux file system holding /etc/fstab and an
        // os-release.
        let mut found = None;
        for fs in &filesystems {
            let Some(kind) = fs_kind(fs.fs_type) else {
                continue;
            };
            let m = mount_temp(&fs.device, kind)?;
            let r = m.path();
            let is_root = r.join("etc/fstab").is_file()
                && (r.join("etc/os-release").exists() || r.join("usr/lib/os-release").exists());
            if is_root {
                found = Some((fs.clone(), m));
                break;
            }
            m.unmount()?;
        }
        let Some((root_fs, root_mount)) = found else {
            return Err(AdaptError::NoRoot {
                disks: paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let mut t = MountedTarget {
            root: root_mount.path().to_path_buf(),
            disks,
            filesystems,
            devmap,
            root_fs: Some(root_fs),
            esp,
            submounts: Vec::new(),
            root_mount: Some(root_mount),
        };
        t.mount_fstab()?;
        Ok(t)
    }

    /// Takes a root directory that is already mounted (with its file
    /// systems below it). The device map comes from the disks holding
    /// the file systems mounted at and below it, when those are block
    /// devices; otherwise it is empty (references cannot be resolved).
    /// `sources` as for [`MountedTarget::open_disks`].
    pub fn open_root(root: &Path, sources: &[SourceDisk]) -> Result<MountedTarget, AdaptError> {
        let root = std::fs::canonicalize(root).map_err(|e| AdaptError::Io {
            action: "opening",
            path: root.display().to_string(),
            source: e,
        })?;
        let (mounted, root_dev) = mounted_disks(&root);
        let mut disks: Vec<TargetDisk> = Vec::new();
        for dev in mounted {
            if disks.iter().any(|d| d.device == dev) {
                continue;
            }
            let layout = survey_disk(&dev, Path::new("/"))?;
            disks.push(TargetDisk {
                given: dev.clone(),
                device: dev,
                layout,
                _loop: None,
            });
        }
        let devmap = with_target_names(
            device_map(&disks.iter().map(|d| &d.layout).collect::<Vec<_>>()),
            &disks,
        )
        .with_source_disks(sources.to_vec());
        let filesystems = filesystems_of(&disks);
        let esp = filesystems.iter().find(|f| {
            disks[f.disk]
                .layout
                .partitions
                .iter()
                .any(|p| p.number == f.partition && p.is_esp())
        });
        let root_fs = root_dev.and_then(|d| filesystems.iter().find(|f| f.device == d).cloned());
        Ok(MountedTarget {
            esp: esp.cloned(),
            root_fs,
            root,
            disks,
            filesystems,
            devmap,
            submounts: Vec::new(),
            root_mount: None,
        })
    }

    /// The target file system a device reference names.
    pub fn resolve(&self, spec: &str) -> Option<&TargetFs> {
        let id = self.devmap.resolve(spec)?;
        self.filesystems
            .iter()
            .find(|f| f.disk == id.disk_index && f.partition == id.partition.unwrap_or(0))
    }

    /// Mounts the local file systems of the target's fstab below the root,
    /// shallowest first.
    fn mount_fstab(&mut self) -> Result<(), AdaptError> {
        let fstab = std::fs::read_to_string(self.root.join("etc/fstab")).unwrap_or_default();
        let mut entries: Vec<(String, PathBuf)> = Vec::new();
        for (spec, mp, t, opts) in fstab_entries(&fstab) {
            if mp == "/" || !mp.starts_with('/') || opts.split(',').any(|o| o == "noauto") {
                continue;
            }
            if !matches!(t.as_str(), "ext2" | "ext3" | "ext4" | "xfs" | "auto") {
                continue;
            }
            let Some(fs) = self.resolve(&spec) else {
                tracing::warn!(%spec, mount_point = %mp, "fstab entry names no file system on the target disks; not mounted");
                continue;
            };
            if fs_kind(fs.fs_type).is_none() {
                continue;
            }
            entries.push((fs.device.display().to_string(), PathBuf::from(mp)));
        }
        entries.sort_by_key(|(_, mp)| mp.components().count());
        for (dev, mp) in entries {
            let rel = mp.strip_prefix("/").unwrap_or(&mp);
            if rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                continue;
            }
            let at = self.root.join(rel);
            // The mount point must be a real directory inside the root.
            match std::fs::symlink_metadata(&at) {
                Ok(m) if m.is_dir() => {}
                _ => {
                    tracing::warn!(mount_point = %mp.display(), "mount point missing or not a directory; not mounted");
                    continue;
                }
            }
            MOUNT.run(
                Path::new(&dev),
                &[dev.as_str(), &at.display().to_string()],
                &[0],
            )?;
            self.submounts.push(at);
        }
        Ok(())
    }

    /// Unmounts everything ferry mounted, reporting failure.
    pub fn close(mut self) -> Result<(), AdaptError> {
        self.unmount_all()
    }

    fn unmount_all(&mut self) -> Result<(), AdaptError> {
        for m in self.submounts.drain(..).rev() {
            UMOUNT.run_retrying(
                &m,
                &[m.as_os_str()],
                5,
                std::time::Duration::from_millis(200),
            )?;
        }
        if let Some(r) = self.root_mount.take() {
            r.unmount()?;
        }
        Ok(())
    }
}

impl Drop for MountedTarget {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_all() {
            tracing::warn!(error = %e, "unmounting the target");
        }
    }
}

/// The whole-disk block devices behind the file systems mounted at or
/// below `root` (from /proc/self/mountinfo and /sys/class/block), and the
/// device mounted at `root` itself.
fn mounted_disks(root: &Path) -> (Vec<PathBuf>, Option<PathBuf>) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let root_s = root.display().to_string();
    let mut out = Vec::new();
    let mut root_dev = None;
    for line in info.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(sep) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        let (Some(mp), Some(src)) = (f.get(4), f.get(sep + 2)) else {
            continue;
        };
        if !(*mp == root_s || mp.starts_with(&format!("{root_s}/"))) || !src.starts_with("/dev/") {
            continue;
        }
        if *mp == root_s {
            root_dev = Some(PathBuf::from(src));
        }
        let name = src.trim_start_matches("/dev/");
        let class = Path::new("/sys/class/block").join(name);
        let disk = if class.join("partition").exists() {
            std::fs::canonicalize(&class).ok().and_then(|p| {
                p.parent()
                    .and_then(|d| d.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
            })
        } else {
            Some(name.to_string())
        };
        if let Some(d) = disk {
            let p = PathBuf::from("/dev").join(d);
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    (out, root_dev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use imaging::disk::{BootArea, Filesystem, Partition, Role};
    use imaging::manifest::{BlockStream, Disk, PartitionContent, PartitionImage};

    fn stream() -> BlockStream {
        BlockStream {
            size: 0,
            list: imaging::ChunkId([0; 32]),
            extents: 0,
            chunks: 0,
            data_bytes: 0,
            hole_bytes: 0,
            unused_bytes: 0,
        }
    }

    /// An MBR disk with an ext4 on partition 3, as a capture of `/dev/sda`
    /// with the given identity records it.
    fn captured(serial: Option<&str>, wwn: Option<&str>) -> Disk {
        let root = Partition {
            number: 3,
            start: 1 << 20,
            size: 1 << 30,
            kind: PartitionKind::Mbr {
                type_code: 0x83,
                bootable: false,
                logical: false,
                first_lba: 2048,
                sectors: 1 << 21,
            },
            role: Role::Linux,
            filesystem: Some(Filesystem {
                fs_type: FsType::Ext4,
                version: None,
                uuid: Some("5c1d7e2a-3b4f-4a60-8d19-2e7f0a6b1c03".into()),
                label: Some("root".into()),
                size: None,
                used: None,
                block_size: None,
                problem: None,
            }),
        };
        Disk {
            name: "disk0".into(),
            source: "/dev/sda".into(),
            size: 2 << 30,
            content: DiskContent::Partitioned {
                layout: DiskLayout {
                    size: 2 << 30,
                    logical_sector_size: 512,
                    physical_sector_size: 512,
                    model: Some("QEMU HARDDISK".into()),
                    serial: serial.map(str::to_string),
                    wwn: wwn.map(str::to_string),
                    table: PartitionTable::Mbr {
                        disk_signature: "fe77a003".into(),
                        sector_size: 512,
                    },
                    partitions: vec![root],
                    boot: BootArea::default(),
                },
                head: stream(),
                partitions: vec![PartitionImage {
                    number: 3,
                    content: PartitionContent::Full { stream: stream() },
                }],
            },
        }
    }

    #[test]
    fn an_images_disks_become_source_disks() {
        let raw = Disk {
            name: "disk1".into(),
            source: "/srv/images/data.img".into(),
            size: 1 << 30,
            content: DiskContent::Whole { stream: stream() },
        };
        let sources = source_disks(&[captured(Some("FERRYSPLITSOURCE"), None), raw]);
        assert_eq!(sources.len(), 2, "a raw disk still counts");
        let s = &sources[0];
        assert_eq!(s.name, "disk0 (/dev/sda)");
        assert_eq!(s.path.as_deref(), Some("/dev/sda"));
        assert_eq!(s.serial.as_deref(), Some("FERRYSPLITSOURCE"));
        assert_eq!(s.model.as_deref(), Some("QEMU HARDDISK"));
        assert_eq!(s.filesystems.len(), 1);
        let fs = &s.filesystems[0];
        assert_eq!(fs.partition, Some(3));
        assert_eq!(
            fs.uuid.as_deref(),
            Some("5c1d7e2a-3b4f-4a60-8d19-2e7f0a6b1c03")
        );
        assert_eq!(fs.partuuid.as_deref(), Some("fe77a003-03"));
        assert_eq!(sources[1].path, None, "an image file is no device name");
        assert!(sources[1].filesystems.is_empty());
    }

    #[test]
    fn the_split_fixtures_root_resolves_on_a_target_with_another_serial() {
        // The target after the deploy: the same file system, another disk.
        let mut target = captured(Some("TARGET0001"), None);
        let DiskContent::Partitioned { layout, .. } = &mut target.content else {
            unreachable!("captured() is partitioned");
        };
        let spec = "/dev/disk/by-id/ata-QEMU_HARDDISK_FERRYSPLITSOURCE-part3";
        let map = device_map(&[layout]).with_disk_name(0, "/dev/vda");
        assert!(map.resolve(spec).is_none());
        // Old images (no serial, the kernel's T10 id) and new ones.
        let t10 = format!("t10.ATA     {:<40}FERRYSPLITSOURCE", "QEMU HARDDISK");
        for image in [
            captured(Some("FERRYSPLITSOURCE"), None),
            captured(None, Some(&t10)),
        ] {
            let map = map.clone().with_source_disks(source_disks(&[image]));
            let fs = map.resolve(spec).expect("the source disk's partition 3");
            assert_eq!((fs.disk_index, fs.partition), (0, Some(3)));
            assert_eq!(map.note(spec), None);
        }
    }
}
