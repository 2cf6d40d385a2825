//! `/etc/fstab`: device columns to `UUID=`, `nofail` on data mounts,
//! network mounts commented out, and mounts added by the adaptation.
//!
//! # Rules
//!
//! - **Devices.** Kernel names, `by-id`, `by-path`, `LABEL=` and
//!   `by-label` references become `UUID=` (see [`devmap`](super::devmap)
//!   for why labels too); `UUID=`, `PARTUUID=`, `/dev/mapper/…`, LVM and
//!   MD names stay. Swap entries get the swap's UUID. A hardware-bound
//!   reference that resolves to nothing stays, with a warning naming the
//!   line, and so does a `UUID=` that names no surveyed file system.
//! - **nofail.** Every block-device mount except `/`, `/usr` and `/var`
//!   gets `nofail`: those three are needed to boot (the initramfs mounts
//!   `/usr`; early services and package state live on `/var`); any other
//!   disk that did not make the move, or comes up late, then costs a
//!   90-second wait instead of the emergency shell. `/boot` and
//!   `/boot/efi` get it too: the firmware and GRUB read them, not the
//!   booted system. Swap, `noauto` entries and pseudo file systems
//!   (`tmpfs`, `proc`, bind mounts) are left alone.
//! - **Network mounts** (NFS, CIFS/SMB, GlusterFS, CephFS, SSHFS, WebDAV,
//!   9p host shares, …) are commented out behind
//!   `# ferry: network mount disabled after migration: `: their servers
//!   are rarely reachable from the new place, and a hanging mount stops
//!   the boot. Other `_netdev` mounts (iSCSI) keep their line, with a
//!   warning.

use super::devmap::{classify, DeviceMap, Stabilized};
use super::document::{is_comment_or_blank, Document};
use super::edit::Rewritten;
use super::fields::{fields, replace_field};

/// Mount points without which the system does not boot: they stay strict.
pub const BOOT_CRITICAL: [&str; 3] = ["/", "/usr", "/var"];

/// File system types served over the network.
pub const NETWORK_TYPES: [&str; 17] = [
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "glusterfs",
    "fuse.glusterfs",
    "ceph",
    "fuse.ceph",
    "fuse.sshfs",
    "sshfs",
    "davfs",
    "fuse.s3fs",
    "9p",
    "virtiofs",
    "lustre",
    "afs",
];

const NETWORK_NOTE: &str = "network mount disabled after migration";
const DEVICE_REASON: &str = "device named by UUID, which survives the move to other disks";
const NOFAIL_REASON: &str = "a missing data disk no longer stops the boot";

/// What [`rewrite_fstab`] does besides naming devices by UUID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FstabOptions {
    /// Add `nofail` to data mounts (see the module documentation).
    pub nofail: bool,
    /// Comment out network mounts.
    pub disable_network_mounts: bool,
    /// Mounts to add (or to put in place of another mount of the same
    /// mount point), each following the column layout of the last entry;
    /// applying them again changes nothing.
    pub add: Vec<FstabEntry>,
}

impl Default for FstabOptions {
    fn default() -> Self {
        Self {
            nofail: true,
            disable_network_mounts: true,
            add: Vec::new(),
        }
    }
}

/// One fstab entry to add.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FstabEntry {
    /// What to mount: `UUID=…`.
    pub spec: String,
    /// Where: `/boot/efi`.
    pub mountpoint: String,
    /// File system type: `vfat`.
    pub fstype: String,
    /// Mount options: `umask=0077`.
    pub options: String,
    /// fsck pass (0 none, 1 root, 2 others).
    pub pass: u8,
}

/// Rewrites an fstab as the module documentation describes.
pub fn rewrite_fstab(text: &str, map: &DeviceMap, options: &FstabOptions) -> Rewritten {
    let mut doc = Document::new("/etc/fstab", text);
    for i in 0..doc.len() {
        rewrite_entry(&mut doc, i, map, options);
    }
    for entry in &options.add {
        let mut entry = entry.clone();
        if options.nofail
            && wants_nofail(
                &entry.spec,
                &entry.mountpoint,
                &entry.fstype,
                &entry.options,
            )
        {
            entry.options.push_str(",nofail");
        }
        add_entry(&mut doc, &entry);
    }
    doc.finish()
}

/// The fields of an active entry of line `i`, as strings.
fn entry_fields(doc: &Document, i: usize) -> Option<Vec<String>> {
    let line = doc.line(i);
    if is_comment_or_blank(line) {
        return None;
    }
    let found: Vec<String> = fields(line)
        .into_iter()
        .map(|r| line[r].to_string())
        .collect();
    (found.len() >= 3).then_some(found)
}

fn rewrite_entry(doc: &mut Document, i: usize, map: &DeviceMap, options: &FstabOptions) {
    let Some(f) = entry_fields(doc, i) else {
        return;
    };
    let (spec, mountpoint, fstype) = (&f[0], unescape_path(&f[1]), f[2].as_str());
    let mount_options = f.get(3).map_or("defaults", String::as_str);
    let has = |o: &str| mount_options.split(',').any(|x| x == o);
    if NETWORK_TYPES.contains(&fstype) {
        if options.disable_network_mounts {
            doc.comment_out(i, NETWORK_NOTE);
        }
        return;
    }
    if has("_netdev") {
        doc.warn(format!(
            "line {}: {mountpoint} is a network block device (_netdev) that may be unreachable after migration",
            i + 1
        ));
    }
    match map.stabilize(spec) {
        Stabilized::Rewritten(new) => {
            let line = doc.line(i);
            let new = replace_field(line, &fields(line), 0, &new);
            doc.replace(i, new, DEVICE_REASON);
            if let Some(note) = map.note(spec) {
                doc.note(format!("line {}: {note}", i + 1));
            }
        }
        Stabilized::Unresolved => doc.warn(format!(
            "line {}: {spec} ({mountpoint}) names no single surveyed file system; left as is",
            i + 1
        )),
        Stabilized::StableUnknown if !has("noauto") => doc.warn(format!(
            "line {}: {spec} ({mountpoint}) is not among the surveyed file systems",
            i + 1
        )),
        _ => {}
    }
    if options.nofail && wants_nofail(spec, &mountpoint, fstype, mount_options) {
        let line = doc.line(i);
        let ranges = fields(line);
        let new = match ranges.get(3) {
            Some(_) => replace_field(line, &ranges, 3, &format!("{mount_options},nofail")),
            None => format!("{} defaults,nofail", line.trim_end()),
        };
        doc.replace(i, new, NOFAIL_REASON);
    }
}

/// Whether an entry is a block-device data mount without `nofail`.
fn wants_nofail(spec: &str, mountpoint: &str, fstype: &str, options: &str) -> bool {
    let has = |o: &str| options.split(',').any(|x| x == o);
    let block_device = classify(spec).is_some() || spec.starts_with("/dev/");
    block_device
        && fstype != "swap"
        && !BOOT_CRITICAL.contains(&normalize_mountpoint(mountpoint))
        && !has("noauto")
        && !has("nofail")
}

fn add_entry(doc: &mut Document, entry: &FstabEntry) {
    let mut existing = None;
    let mut template = None;
    for i in 0..doc.len() {
        let Some(f) = entry_fields(doc, i) else {
            continue;
        };
        if f.len() == 6 {
            template = Some(doc.line(i).to_string());
        }
        if unescape_path(&f[1]) == entry.mountpoint {
            if f[0] == entry.spec {
                return;
            }
            existing = Some(i);
        }
    }
    let values = [
        escape_path(&entry.spec),
        escape_path(&entry.mountpoint),
        entry.fstype.clone(),
        entry.options.clone(),
        "0".to_string(),
        entry.pass.to_string(),
    ];
    let line = match template {
        Some(template) => values.iter().enumerate().fold(template, |line, (n, v)| {
            replace_field(&line, &fields(&line), n, v)
        }),
        None => values.join(" "),
    };
    let reason = format!("mounts {} on {}", entry.spec, entry.mountpoint);
    match existing {
        Some(i) => {
            doc.comment_out(i, &format!("replaced by the mount of {}", entry.spec));
            doc.insert(Some(i), line, &reason);
        }
        None => doc.append(line, &reason),
    }
}

/// `/var/` → `/var`; `/` stays.
fn normalize_mountpoint(mountpoint: &str) -> &str {
    match mountpoint.trim_end_matches('/') {
        "" => "/",
        trimmed => trimmed,
    }
}

/// fstab's `\040` (space) and `\011` (tab) escapes, decoded.
fn unescape_path(field: &str) -> String {
    field.replace("\\040", " ").replace("\\011", "\t")
}

fn escape_path(path: &str) -> String {
    path.replace(' ', "\\040").replace('\t', "\\011")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapt::rewrite::testmap::{self, assert_warnings, check};

    /// As Debian bookworm's installer writes it, with a few entries added
    /// by hand.
    const DEBIAN: &str = "# /etc/fstab: static file system information.
#
# Use 'blkid' to print the universally unique identifier for a
# device; this may be used with UUID= as a more robust way to name devices
# that works even if disks are added and removed. See fstab(5).
#
# systemd generates mount units based on this file, see systemd.mount(5).
# Please run 'systemctl daemon-reload' after making changes here.
#
# <file system> <mount point>   <type>  <options>       <dump>  <pass>
# / was on /dev/sda2 during installation
UUID=1b2c3d4e-0000-4000-8000-00000000000a /               ext4    errors=remount-ro 0       1
# /boot/efi was on /dev/sda1 during installation
UUID=4A1B-2C3D  /boot/efi       vfat    umask=0077      0       1
# /home was on /dev/sda5 during installation
/dev/sda5       /home           ext4    defaults        0       2
# swap was on /dev/sda3 during installation
/dev/sda3       none            swap    sw              0       0
/dev/sr0        /media/cdrom0   udf,iso9660 user,noauto     0       0
LABEL=data      /srv/data       xfs     defaults        0       2
nas:/export/backup /mnt/backup  nfs     defaults,_netdev 0      0
//fs1/share     /mnt/share      cifs    credentials=/etc/cifs.cred 0 0
tmpfs           /tmp            tmpfs   defaults,size=2G 0      0
";

    /// As anaconda writes it on CentOS 7 with LVM, plus a data disk by WWN.
    const CENTOS: &str = "
#
# /etc/fstab
# Created by anaconda on Tue Mar  3 10:21:42 2020
#
# Accessible filesystems, by reference, are maintained under '/dev/disk'
# See man pages fstab(5), findfs(8), mount(8) and/or blkid(8) for more info
#
/dev/mapper/centos-root /                       xfs     defaults        0 0
UUID=1b2c3d4e-0000-4000-8000-00000000000a /boot                   xfs     defaults        0 0
/dev/mapper/centos-home /home                   xfs     defaults        0 0
/dev/mapper/centos-swap swap                    swap    defaults        0 0
/dev/disk/by-id/wwn-0x50014ee2b5a1c3d7-part1\t/data\txfs\tdefaults\t0 0
";

    fn rewrite(text: &str) -> Rewritten {
        rewrite_fstab(text, &testmap::sample(), &FstabOptions::default())
    }

    #[test]
    fn debian_fstab_is_rewritten() {
        let home = "/dev/sda5       /home           ext4    defaults        0       2";
        let esp = "umask=0077      0";
        let network = "# ferry: network mount disabled after migration: ";
        let out = check(
            rewrite,
            DEBIAN,
            &[
                (esp, "umask=0077,nofail 0"),
                (home, "UUID=9c0d1e2f-0000-4000-8000-00000000000c /home           ext4    defaults,nofail 0       2"),
                ("/dev/sda3       none", "UUID=5e6f7a8b-0000-4000-8000-00000000000b none"),
                ("LABEL=data      /srv/data       xfs     defaults       ", "UUID=a1b2c3d4-0000-4000-8000-00000000000d /srv/data       xfs     defaults,nofail"),
                ("nas:/", &format!("{network}nas:/")),
                ("//fs1", &format!("{network}//fs1")),
            ],
            &[14, 16, 18, 20, 21, 22],
        );
        assert_eq!(out.edits[1].before, home);
        assert_eq!(
            out.edits[1].reason,
            format!("{DEVICE_REASON}; {NOFAIL_REASON}")
        );
        assert_eq!(out.edits[4].reason, NETWORK_NOTE);
    }

    #[test]
    fn centos_fstab_is_rewritten() {
        let wwn = "/dev/disk/by-id/wwn-0x50014ee2b5a1c3d7-part1\t/data\txfs\tdefaults\t";
        let data = "UUID=a1b2c3d4-0000-4000-8000-00000000000d\t/data\txfs\tdefaults,nofail\t";
        check(
            rewrite,
            CENTOS,
            &[
                (
                    "/boot                   xfs     defaults       ",
                    "/boot                   xfs     defaults,nofail",
                ),
                (
                    "/home                   xfs     defaults       ",
                    "/home                   xfs     defaults,nofail",
                ),
                (wwn, data),
            ],
            &[10, 11, 13],
        );
    }

    #[test]
    fn options_switch_nofail_and_network_handling_off() {
        let map = testmap::sample();
        let options = FstabOptions {
            nofail: false,
            disable_network_mounts: false,
            add: Vec::new(),
        };
        let out = rewrite_fstab(DEBIAN, &map, &options);
        assert!(!out.text.contains("nofail"));
        assert!(!out.text.contains("# ferry:"));
        assert_eq!(out.edits.len(), 3, "device names only");
    }

    #[test]
    fn unresolvable_devices_stay_and_are_named_in_a_warning() {
        let map = testmap::sample();
        let text = "/dev/sdq1 /srv ext4 defaults 0 2\nUUID=0000 /opt ext4 defaults,noauto 0 2\nUUID=1111 /x ext4 defaults 0 2\n";
        let out = rewrite_fstab(text, &map, &FstabOptions::default());
        assert_eq!(
            out.text,
            "/dev/sdq1 /srv ext4 defaults,nofail 0 2\nUUID=0000 /opt ext4 defaults,noauto 0 2\nUUID=1111 /x ext4 defaults,nofail 0 2\n"
        );
        assert_warnings(
            &out.warnings,
            &["line 1: /dev/sdq1 (/srv)", "line 3: UUID=1111 (/x)"],
        );
    }

    #[test]
    fn boot_critical_mounts_stay_strict() {
        let map = testmap::sample();
        for mountpoint in ["/", "/usr", "/var", "/var/"] {
            let text = format!("/dev/mapper/vg-x {mountpoint} ext4 defaults 0 1\n");
            let out = rewrite_fstab(&text, &map, &FstabOptions::default());
            assert!(out.edits.is_empty(), "{mountpoint}");
        }
        let out = rewrite_fstab(
            "/dev/mapper/vg-x /var/log ext4\n",
            &map,
            &FstabOptions::default(),
        );
        assert_eq!(out.text, "/dev/mapper/vg-x /var/log ext4 defaults,nofail\n");
    }

    #[test]
    fn iscsi_mounts_get_a_warning() {
        let map = testmap::sample();
        let out = rewrite_fstab(
            "UUID=4A1B-2C3D /san ext4 _netdev 0 0\n",
            &map,
            &FstabOptions::default(),
        );
        assert_eq!(out.text, "UUID=4A1B-2C3D /san ext4 _netdev,nofail 0 0\n");
        assert_warnings(&out.warnings, &["line 1: /san is a network block device"]);
    }

    /// Adds an entry for `mountpoint` unless one with the same `spec` is
    /// there; another active entry for the same mount point is commented out
    /// and the new one goes right after it. The new line follows the column
    /// layout of the last entry. Idempotent.
    fn add_mount(
        text: &str,
        spec: &str,
        mountpoint: &str,
        fstype: &str,
        options: &str,
        pass: u8,
    ) -> Rewritten {
        let mut doc = Document::new("/etc/fstab", text);
        add_entry(
            &mut doc,
            &FstabEntry {
                spec: spec.to_string(),
                mountpoint: mountpoint.to_string(),
                fstype: fstype.to_string(),
                options: options.to_string(),
                pass,
            },
        );
        doc.finish()
    }

    #[test]
    fn add_mount_follows_the_layout_and_is_idempotent() {
        let spec = "UUID=ABCD-0001";
        let out = add_mount(
            &rewrite(DEBIAN).text,
            spec,
            "/boot/efi",
            "vfat",
            "umask=0077",
            1,
        );
        // The old ESP entry gives way; the new one takes its place.
        assert_eq!(out.edits.len(), 2);
        assert_eq!(out.edits[0].line, 14);
        assert!(out.edits[0]
            .after
            .starts_with("# ferry: replaced by the mount of UUID=ABCD-0001: UUID=4A1B-2C3D"));
        assert_eq!(out.edits[1].line, 15);
        assert_eq!(
            out.edits[1].after,
            "UUID=ABCD-0001  /boot/efi       vfat    umask=0077       0      1"
        );
        let again = add_mount(&out.text, spec, "/boot/efi", "vfat", "umask=0077", 1);
        assert!(again.edits.is_empty());

        let out = add_mount(
            "/dev/sda1 / ext4 defaults\n",
            spec,
            "/boot/efi",
            "vfat",
            "umask=0077",
            1,
        );
        assert_eq!(
            out.text,
            "/dev/sda1 / ext4 defaults\nUUID=ABCD-0001 /boot/efi vfat umask=0077 0 1\n"
        );
        let out = add_mount("", spec, "/mnt/my disk", "vfat", "defaults", 2);
        assert_eq!(
            out.text,
            "UUID=ABCD-0001 /mnt/my\\040disk vfat defaults 0 2\n"
        );
        assert!(
            add_mount(&out.text, spec, "/mnt/my disk", "vfat", "defaults", 2)
                .edits
                .is_empty()
        );
    }

    #[test]
    fn options_add_entries() {
        let map = testmap::sample();
        let options = FstabOptions {
            add: vec![FstabEntry {
                spec: "UUID=ABCD-0001".into(),
                mountpoint: "/boot/efi".into(),
                fstype: "vfat".into(),
                options: "umask=0077".into(),
                pass: 1,
            }],
            ..FstabOptions::default()
        };
        let out = rewrite_fstab(CENTOS, &map, &options);
        assert!(
            out.text
                .ends_with("UUID=ABCD-0001\t/boot/efi\tvfat\tumask=0077,nofail\t0 1\n"),
            "{}",
            out.text
        );
        assert!(rewrite_fstab(&out.text, &map, &options).edits.is_empty());
    }

    /// The split fixture's fstab after its deploy onto a disk with another
    /// serial: the by-id root names the source disk, which only the
    /// image's disks know.
    #[test]
    fn a_source_disks_by_id_becomes_the_uuid_its_partition_held() {
        use crate::adapt::rewrite::testmap::{deployed, split_source, u, BOOT, ROOT3, SWAP3};
        let text =
            "/dev/disk/by-id/ata-QEMU_HARDDISK_FERRYSPLITSOURCE-part3 / ext4 errors=remount-ro 0 1
LABEL=boot /boot ext4 defaults 0 2
/dev/disk/by-label/swap none swap sw 0 0
";
        let target_only = deployed();
        let out = rewrite_fstab(text, &target_only, &FstabOptions::default());
        assert_warnings(
            &out.warnings,
            &["line 1: /dev/disk/by-id/ata-QEMU_HARDDISK_FERRYSPLITSOURCE-part3 (/) names no single surveyed file system; left as is"],
        );
        let map = deployed().with_source_disks(vec![split_source()]);
        let out = rewrite_fstab(text, &map, &FstabOptions::default());
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        assert!(out.notes.is_empty(), "{:?}", out.notes);
        let specs: Vec<&str> = out
            .text
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(specs, [u(ROOT3), u(BOOT), u(SWAP3)]);
        let again = rewrite_fstab(&out.text, &map, &FstabOptions::default());
        assert!(again.edits.is_empty(), "{:?}", again.edits);
        // The same root named by path: the image's only disk, noted.
        let by_path = "/dev/disk/by-path/pci-0000:00:01.1-ata-1-part3 / ext4 defaults 0 1\n";
        let out = rewrite_fstab(by_path, &map, &FstabOptions::default());
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        assert!(
            out.text.starts_with(&format!("{} ", u(ROOT3))),
            "{}",
            out.text
        );
        assert_eq!(out.notes.len(), 1, "{:?}", out.notes);
        assert!(
            out.notes[0].starts_with("line 1: /dev/disk/by-path/"),
            "{:?}",
            out.notes
        );
    }
}
