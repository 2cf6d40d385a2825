//! Refusing to deploy onto a disk that something is using.

use std::fmt;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::sysfs;

/// Why a disk may not be written.
#[derive(Debug, thiserror::Error)]
pub enum InUse {
    /// Something uses the disk or one of its partitions.
    #[error("{device} is in use: {}; refusing to write to it", join(uses))]
    Busy {
        /// The disk.
        device: String,
        /// Everything found using it.
        uses: Vec<Use>,
    },
    /// What uses the disk could not be found out.
    #[error("cannot tell whether {device} is in use: reading {path}: {source}")]
    Unreadable {
        /// The disk.
        device: String,
        /// What could not be read.
        path: String,
        /// The error.
        source: io::Error,
    },
}

/// One use of a disk or partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Use {
    /// It is mounted.
    Mounted {
        /// The disk or partition node.
        device: String,
        /// Where.
        at: String,
    },
    /// It is an active swap area.
    Swap {
        /// The disk or partition node.
        device: String,
    },
    /// Another block device sits on it (sysfs `holders`).
    Held {
        /// The disk or partition node.
        device: String,
        /// The holder, e.g. `dm-0 (LVM vg-root)`, `md0 (md RAID)`.
        by: String,
    },
    /// A loop device's backing file is it.
    LoopBacking {
        /// The image file or device.
        device: String,
        /// The loop device.
        loop_device: String,
    },
}

impl fmt::Display for Use {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Use::Mounted { device, at } => write!(f, "{device} is mounted at {at}"),
            Use::Swap { device } => write!(f, "{device} is an active swap area"),
            Use::Held { device, by } => write!(f, "{device} is held by {by}"),
            Use::LoopBacking {
                device,
                loop_device,
            } => write!(f, "{device} is attached to {loop_device}"),
        }
    }
}

fn join(uses: &[Use]) -> String {
    uses.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Refuses `disk` (a block device or an image file) when it is in use.
///
/// A block device is in use when it or any of its partitions is mounted
/// (`/proc/self/mountinfo`, by device number and by source path, so btrfs
/// with its anonymous device numbers is caught), is an active swap area
/// (`/proc/swaps`), has holders (`/sys/class/block/<name>/holders`:
/// device-mapper, LVM, dm-crypt, md) or backs a loop device. An image
/// file is in use when a loop device is attached to it
/// (`/sys/block/loop*/loop/backing_file`). The error lists every use.
pub fn check_not_in_use(disk: &Path) -> Result<(), InUse> {
    check_under(disk, Path::new("/"))
}

/// [`check_not_in_use`] with `proc/` and `sys/` under `root`.
pub(crate) fn check_under(disk: &Path, root: &Path) -> Result<(), InUse> {
    let device = disk.display().to_string();
    let unreadable = |path: &Path, source| InUse::Unreadable {
        device: device.clone(),
        path: path.display().to_string(),
        source,
    };
    let meta = std::fs::metadata(disk).map_err(|e| unreadable(disk, e))?;
    let sys = root.join("sys");
    let mut uses = Vec::new();
    // (node in /dev, major:minor) of the disk and its partitions.
    let mut members: Vec<(String, String)> = Vec::new();
    if meta.file_type().is_block_device() {
        let node = sysfs::node(&sys, &sysfs::dev_string(meta.rdev()))
            .map_err(|e| unreadable(&sys.join("dev/block"), e))?;
        let parts = sysfs::partitions(&node).map_err(|e| unreadable(&node.dir, e))?;
        for n in std::iter::once(&node).chain(&parts) {
            let name = if n.dir == node.dir {
                device.clone()
            } else {
                n.devnode().display().to_string()
            };
            for h in n
                .holders()
                .map_err(|e| unreadable(&n.dir.join("holders"), e))?
            {
                uses.push(Use::Held {
                    device: name.clone(),
                    by: describe_holder(&sys, &h),
                });
            }
            members.push((name, n.dev.clone()));
        }
        let mountinfo = root.join("proc/self/mountinfo");
        let text = std::fs::read_to_string(&mountinfo).map_err(|e| unreadable(&mountinfo, e))?;
        for m in parse_mountinfo(&text) {
            if let Some((name, _)) = members
                .iter()
                .find(|(node, dev)| *dev == m.dev || same_device(&m.source, node, dev))
            {
                uses.push(Use::Mounted {
                    device: name.clone(),
                    at: m.mount_point,
                });
            }
        }
        let swaps = root.join("proc/swaps");
        let text = std::fs::read_to_string(&swaps).map_err(|e| unreadable(&swaps, e))?;
        for s in parse_swaps(&text) {
            if let Some((name, _)) = members
                .iter()
                .find(|(node, dev)| same_device(&s, node, dev))
            {
                uses.push(Use::Swap {
                    device: name.clone(),
                });
            }
        }
    }
    let targets: Vec<String> = if members.is_empty() {
        vec![canonical(disk)]
    } else {
        members
            .iter()
            .map(|(n, _)| canonical(Path::new(n)))
            .collect()
    };
    let block = sys.join("block");
    for name in sysfs::names_in(&block).map_err(|e| unreadable(&block, e))? {
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = sysfs::read_trimmed(&block.join(&name).join("loop/backing_file")) else {
            continue;
        };
        let backing = backing.strip_suffix(" (deleted)").unwrap_or(&backing);
        if targets.iter().any(|t| t == backing) {
            uses.push(Use::LoopBacking {
                device: backing.to_string(),
                loop_device: format!("/dev/{name}"),
            });
        }
    }
    if uses.is_empty() {
        Ok(())
    } else {
        Err(InUse::Busy { device, uses })
    }
}

/// `path` names the block device `node` (`major:minor` `dev`): the same
/// string, or a path (symlink, other node) with that device number.
fn same_device(path: &str, node: &str, dev: &str) -> bool {
    path == node
        || path.starts_with('/')
            && std::fs::metadata(path).is_ok_and(|m| {
                m.file_type().is_block_device() && sysfs::dev_string(m.rdev()) == dev
            })
}

fn canonical(p: &Path) -> String {
    std::fs::canonicalize(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// `dm-0 (LVM vg-root)`, `dm-1 (dm-crypt luks-…)`, `md0 (md RAID)`.
fn describe_holder(sys: &Path, name: &str) -> String {
    let dir = sys.join("class/block").join(name);
    if let Ok(dm) = sysfs::read_trimmed(&dir.join("dm/name")) {
        let uuid = sysfs::read_trimmed(&dir.join("dm/uuid")).unwrap_or_default();
        let kind = if uuid.starts_with("LVM-") {
            "LVM"
        } else if uuid.starts_with("CRYPT-") {
            "dm-crypt"
        } else {
            "device-mapper"
        };
        return format!("{name} ({kind} {dm})");
    }
    if dir.join("md").is_dir() || name.starts_with("md") {
        return format!("{name} (md RAID)");
    }
    name.to_string()
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, PartialEq, Eq)]
struct Mount {
    dev: String,
    mount_point: String,
    source: String,
}

/// The mounts of a `mountinfo` text; malformed lines are skipped.
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            Some(Mount {
                dev: f.get(2)?.to_string(),
                mount_point: unescape(f.get(4)?),
                source: unescape(r.get(1)?),
            })
        })
        .collect()
}

/// The swap areas of a `/proc/swaps` text.
fn parse_swaps(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(unescape))
        .collect()
}

/// Undoes the kernel's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(d)) => {
                out.push(d.iter().fold(0u8, |v, c| v.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_parse_with_escapes() {
        let text = "36 35 98:0 /mnt1 /mnt/my\\040disk rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    37 35 0:42 / /srv rw shared:2 - btrfs /dev/sdb2 rw\n\
                    garbage\n";
        assert_eq!(
            parse_mountinfo(text),
            vec![
                Mount {
                    dev: "98:0".into(),
                    mount_point: "/mnt/my disk".into(),
                    source: "/dev/root".into()
                },
                Mount {
                    dev: "0:42".into(),
                    mount_point: "/srv".into(),
                    source: "/dev/sdb2".into()
                },
            ]
        );
    }

    #[test]
    fn swaps_parse() {
        let text = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
                    /dev/sda3                               partition\t8388604\t\t0\t\t-2\n\
                    /swap\\040file                          file\t\t1024\t\t0\t\t-3\n";
        assert_eq!(parse_swaps(text), vec!["/dev/sda3", "/swap file"]);
    }

    #[test]
    fn an_image_file_attached_to_a_loop_device_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let img = dir.path().join("disk.img");
        std::fs::write(&img, b"x").expect("image");
        let img = std::fs::canonicalize(&img).expect("canonical");
        let root = dir.path().join("root");
        let lo = root.join("sys/block/loop3/loop");
        std::fs::create_dir_all(&lo).expect("fixture");
        std::fs::create_dir_all(root.join("sys/block/sda")).expect("fixture");
        assert!(check_under(&img, &root).is_ok());
        std::fs::write(lo.join("backing_file"), format!("{}\n", img.display())).expect("fixture");
        let err = check_under(&img, &root).expect_err("attached");
        let msg = err.to_string();
        assert!(
            msg.contains("is attached to /dev/loop3") && msg.contains("disk.img"),
            "{msg}"
        );
    }

    #[test]
    fn holders_and_mounts_of_partitions_are_found_in_a_fixture_tree() {
        // Any block device node will do for its number; the rest is fixture.
        let disk = Path::new("/dev/loop0");
        let Ok(meta) = std::fs::metadata(disk) else {
            println!("SKIPPED holders fixture test: no /dev/loop0 node");
            return;
        };
        let dev = sysfs::dev_string(meta.rdev());
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let w = |p: &str, text: &str| {
            let p = root.join(p);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("fixture dir");
            std::fs::write(p, text).expect("fixture file");
        };
        let blk = "sys/devices/virtual/block/loop0";
        w(&format!("{blk}/dev"), &format!("{dev}\n"));
        w(&format!("{blk}/holders/dm-0"), "");
        w(&format!("{blk}/loop0p1/partition"), "1\n");
        w(&format!("{blk}/loop0p1/dev"), "259:77\n");
        w(
            &format!("{blk}/loop0p1/uevent"),
            "MAJOR=259\nDEVNAME=loop0p1\n",
        );
        w("sys/class/block/dm-0/dm/name", "cryptroot\n");
        w("sys/class/block/dm-0/dm/uuid", "CRYPT-LUKS2-abc\n");
        w("sys/block/loop0/loop/backing_file", "/elsewhere.img\n");
        w(
            "proc/self/mountinfo",
            "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n2 1 259:77 / /mnt/x rw - ext4 /dev/loop0p1 rw\n",
        );
        w("proc/swaps", "Filename Type Size Used Priority\n");
        std::fs::create_dir_all(root.join("sys/dev/block")).expect("fixture dir");
        std::os::unix::fs::symlink(
            "../../devices/virtual/block/loop0",
            root.join("sys/dev/block").join(&dev),
        )
        .expect("fixture link");
        match check_under(disk, root) {
            Err(InUse::Busy { device, uses }) => {
                assert_eq!(device, "/dev/loop0");
                assert_eq!(
                    uses,
                    vec![
                        Use::Held {
                            device: "/dev/loop0".into(),
                            by: "dm-0 (dm-crypt cryptroot)".into()
                        },
                        Use::Mounted {
                            device: "/dev/loop0p1".into(),
                            at: "/mnt/x".into()
                        },
                    ]
                );
            }
            other => panic!("expected a refusal: {other:?}"),
        }
    }

    #[test]
    fn holders_are_described() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sys = dir.path();
        let dm = sys.join("class/block/dm-0/dm");
        std::fs::create_dir_all(&dm).expect("fixture");
        std::fs::write(dm.join("name"), "vg-root\n").expect("fixture");
        std::fs::write(dm.join("uuid"), "LVM-abc\n").expect("fixture");
        assert_eq!(describe_holder(sys, "dm-0"), "dm-0 (LVM vg-root)");
        assert_eq!(describe_holder(sys, "md127"), "md127 (md RAID)");
    }
}
