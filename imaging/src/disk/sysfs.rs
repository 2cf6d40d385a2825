//! A block device's identity and sector sizes from sysfs, under a root
//! that tests point at a fixture tree.
//!
//! The serial is what udev puts into `/dev/disk/by-id` names: the block
//! device's `serial` (virtio), its device's `serial` (NVMe, MMC), else the
//! Unit Serial Number of SCSI VPD page 0x80 (`device/vpd_pg80`: SCSI, SAS,
//! and ATA disks behind libata). The WWN is the kernel's `wwid`
//! (`naa.…`, `eui.…`, `t10.…`, `nvme.…`) in the form of [`normalize_wwid`].

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What sysfs says about a block device; every field optional.
#[derive(Debug, Default)]
pub(crate) struct Identity {
    pub(crate) model: Option<String>,
    pub(crate) serial: Option<String>,
    pub(crate) wwn: Option<String>,
    pub(crate) logical_sector_size: Option<u32>,
    pub(crate) physical_sector_size: Option<u32>,
}

/// Reads the identity of the block device at `dev` from
/// `sys_root/sys/class/block/<name>`, where `<name>` is the device node's
/// name after resolving symlinks (`/dev/disk/by-id/…` → `sda`,
/// `/dev/mapper/x` → `dm-0`), falling back to `sys/dev/block/MAJ:MIN`.
/// For a partition, the attributes come from its parent disk.
pub(crate) fn identity(dev: &Path, meta: &Metadata, sys_root: &Path) -> Identity {
    let Some(dir) = device_dir(dev, meta, sys_root) else {
        return Identity::default();
    };
    // A partition has a `partition` file and no queue/ or device/ of its
    // own: read them from the parent directory.
    let dirs: Vec<PathBuf> = if dir.join("partition").is_file() {
        vec![dir.clone(), dir.join("..")]
    } else {
        vec![dir]
    };
    let attr = |names: &[&str]| -> Option<String> {
        dirs.iter()
            .flat_map(|d| names.iter().map(move |n| d.join(n)))
            .find_map(|p| read_attr(&p))
    };
    let number = |name: &str| attr(&[name]).and_then(|s| s.parse::<u32>().ok());
    let vpd_serial = || {
        dirs.iter()
            .filter_map(|d| std::fs::read(d.join("device/vpd_pg80")).ok())
            .find_map(|page| vpd_unit_serial(&page))
    };
    Identity {
        model: attr(&["device/model", "device/name"]),
        serial: attr(&["device/serial", "serial"]).or_else(vpd_serial),
        wwn: attr(&["wwid", "device/wwid"]).and_then(|w| normalize_wwid(&w)),
        logical_sector_size: number("queue/logical_block_size").filter(|&n| valid_sector(n)),
        physical_sector_size: number("queue/physical_block_size").filter(|&n| valid_sector(n)),
    }
}

/// The serial number in a SCSI VPD page 0x80 (Unit Serial Number), as
/// sysfs gives it in `device/vpd_pg80`: byte 1 is the page code, bytes 2-3
/// the length, then ASCII, padded with spaces (trimmed here). `None` for
/// another page, a truncated one or an empty serial.
pub fn vpd_unit_serial(page: &[u8]) -> Option<String> {
    if page.get(1) != Some(&0x80) {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([*page.get(2)?, *page.get(3)?]));
    let serial = page.get(4..4 + len)?;
    let serial = String::from_utf8_lossy(serial);
    let serial = serial.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!serial.is_empty()).then(|| serial.to_string())
}

/// A world-wide identifier as the kernel's `wwid` gives it, in one form:
/// trimmed, and `naa.`/`eui.` ids, being hex, lower-cased
/// (`naa.5000C500A1B2C3D4` → `naa.5000c500a1b2c3d4`, which udev links as
/// `wwn-0x5000c500a1b2c3d4`). Other ids (`t10.…`, `nvme.…`) are kept as
/// they are: a T10 id's padding is fixed-width (an ATA disk's is
/// `ATA` padded to 8, the model padded to 40, the serial), so it still
/// tells model and serial apart. `None` for an empty one.
pub fn normalize_wwid(wwid: &str) -> Option<String> {
    let wwid = wwid.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    if wwid.is_empty() {
        return None;
    }
    let lower = wwid.to_ascii_lowercase();
    Some(if lower.starts_with("naa.") || lower.starts_with("eui.") {
        lower
    } else {
        wwid.to_string()
    })
}

/// A power of two from 512 to 64 KiB.
fn valid_sector(n: u32) -> bool {
    n.is_power_of_two() && (512..=65536).contains(&n)
}

fn device_dir(dev: &Path, meta: &Metadata, sys_root: &Path) -> Option<PathBuf> {
    let class = sys_root.join("sys/class/block");
    if let Some(name) = std::fs::canonicalize(dev)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_owned()))
    {
        let dir = class.join(name);
        if dir.is_dir() {
            return Some(dir);
        }
    }
    if let Some(name) = dev.file_name() {
        let dir = class.join(name);
        if dir.is_dir() {
            return Some(dir);
        }
    }
    let rdev = meta.rdev();
    let dir = sys_root.join(format!(
        "sys/dev/block/{}:{}",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    ));
    dir.is_dir().then_some(dir)
}

/// A sysfs attribute, trimmed; `None` when missing or empty.
fn read_attr(p: &Path) -> Option<String> {
    let s = std::fs::read(p).ok()?;
    let s = String::from_utf8_lossy(&s);
    let s = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!s.is_empty()).then(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_fixture_tree_and_a_partitions_parent() {
        let root = tempfile::tempdir().expect("tempdir");
        let dev = root.path().join("dev");
        std::fs::create_dir_all(&dev).expect("mkdir dev");
        let disk = root.path().join("sys/class/block/sdz");
        let part = disk.join("sdz1");
        for d in ["device", "queue"] {
            std::fs::create_dir_all(disk.join(d)).expect("mkdir");
        }
        std::fs::create_dir_all(&part).expect("mkdir part");
        let w = |p: std::path::PathBuf, s: &str| std::fs::write(p, s).expect("write fixture");
        w(disk.join("device/model"), "QEMU HARDDISK   \n");
        w(disk.join("device/wwid"), "naa.5000c500a1b2c3d4\n");
        w(disk.join("serial"), "\n");
        w(disk.join("queue/logical_block_size"), "512\n");
        w(disk.join("queue/physical_block_size"), "4096\n");
        w(part.join("partition"), "1\n");
        // Stand-ins for the device nodes (only their names are used).
        w(dev.join("sdz"), "");
        w(dev.join("sdz1"), "");
        // The class entry of a partition is a symlink in real sysfs; here a
        // directory below the disk, reached by name.
        std::os::unix::fs::symlink(&part, root.path().join("sys/class/block/sdz1"))
            .expect("symlink");
        for node in ["sdz", "sdz1"] {
            let p = dev.join(node);
            let meta = std::fs::metadata(&p).expect("meta");
            let id = identity(&p, &meta, root.path());
            assert_eq!(id.model.as_deref(), Some("QEMU HARDDISK"), "{node}");
            assert_eq!(id.wwn.as_deref(), Some("naa.5000c500a1b2c3d4"));
            assert_eq!(id.serial, None, "an empty attribute is no serial");
            assert_eq!(id.logical_sector_size, Some(512));
            assert_eq!(id.physical_sector_size, Some(4096));
        }
        // A SCSI (or libata) disk: the serial is in VPD page 0x80.
        let mut page = vec![0, 0x80, 0, 20];
        page.extend_from_slice(b"FERRYSPLITSOURCE    ");
        std::fs::write(disk.join("device/vpd_pg80"), &page).expect("write vpd");
        w(
            disk.join("device/wwid"),
            "t10.ATA     QEMU HARDDISK                           FERRYSPLITSOURCE\n",
        );
        for node in ["sdz", "sdz1"] {
            let p = dev.join(node);
            let meta = std::fs::metadata(&p).expect("meta");
            let id = identity(&p, &meta, root.path());
            assert_eq!(id.serial.as_deref(), Some("FERRYSPLITSOURCE"), "{node}");
            assert_eq!(
                id.wwn.as_deref(),
                Some("t10.ATA     QEMU HARDDISK                           FERRYSPLITSOURCE"),
                "{node}"
            );
        }
        // A virtio disk's own `serial` comes first.
        w(disk.join("serial"), "virtio-serial-1\n");
        let meta = std::fs::metadata(dev.join("sdz")).expect("meta");
        let id = identity(&dev.join("sdz"), &meta, root.path());
        assert_eq!(id.serial.as_deref(), Some("virtio-serial-1"));
        let missing = identity(
            &dev.join("sdz"),
            &std::fs::metadata(&dev).expect("meta"),
            &dev,
        );
        assert!(missing.model.is_none() && missing.logical_sector_size.is_none());
    }

    #[test]
    fn vpd_page_0x80_holds_the_serial() {
        let mut page = vec![0, 0x80, 0, 20];
        page.extend_from_slice(b"QM00001             ");
        assert_eq!(vpd_unit_serial(&page).as_deref(), Some("QM00001"));
        assert_eq!(
            vpd_unit_serial(&[0, 0x80, 0, 40, b'X']),
            None,
            "a truncated page is no serial"
        );
        assert_eq!(
            vpd_unit_serial(&[0, 0x83, 0, 1, b'X']),
            None,
            "another page is no serial"
        );
        assert_eq!(vpd_unit_serial(&[0, 0x80, 0, 2, b' ', 0]), None);
    }

    #[test]
    fn wwids_take_one_form() {
        let cases = [
            ("naa.5000C500A1B2C3D4\n", Some("naa.5000c500a1b2c3d4")),
            ("eui.0025388b91b2c3d4", Some("eui.0025388b91b2c3d4")),
            (
                "t10.ATA     QEMU HARDDISK       QM00001  \n",
                Some("t10.ATA     QEMU HARDDISK       QM00001"),
            ),
            ("  ", None),
        ];
        for (wwid, want) in cases {
            assert_eq!(normalize_wwid(wwid).as_deref(), want, "{wwid:?}");
        }
    }
}
