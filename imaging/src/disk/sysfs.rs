//! A block device's identity and sector sizes from sysfs, under a root
//! that tests point at a fixture tree.

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
    Identity {
        model: attr(&["device/model", "device/name"]),
        serial: attr(&["device/serial", "serial", "device/vpd_serial"]),
        wwn: attr(&["device/wwid", "wwid"]),
        logical_sector_size: number("queue/logical_block_size").filter(|&n| valid_sector(n)),
        physical_sector_size: number("queue/physical_block_size").filter(|&n| valid_sector(n)),
    }
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
        let missing = identity(
            &dev.join("sdz"),
            &std::fs::metadata(&dev).expect("meta"),
            &dev,
        );
        assert!(missing.model.is_none() && missing.logical_sector_size.is_none());
    }
}
