//! The surveyed file systems the rewrite tests resolve against: a GPT
//! system disk and a data disk, as a Debian server would have them; and a
//! deployed target with the image's source disk it came from.

use super::devmap::{DeviceMap, FsIdentity, SourceDisk};
use super::edit::Rewritten;

pub(crate) const ESP: &str = "4A1B-2C3D";
pub(crate) const ROOT: &str = "1b2c3d4e-0000-4000-8000-00000000000a";
pub(crate) const SWAP: &str = "5e6f7a8b-0000-4000-8000-00000000000b";
pub(crate) const HOME: &str = "9c0d1e2f-0000-4000-8000-00000000000c";
pub(crate) const DATA: &str = "a1b2c3d4-0000-4000-8000-00000000000d";
pub(crate) const LUKS: &str = "b2c3d4e5-0000-4000-8000-00000000000e";
/// The partition GUID of disk 1's raw partition 3 (plain dm-crypt swap).
pub(crate) const RAW_PARTUUID: &str = "c3d4e5f6-0000-4000-8000-000000010103";
pub(crate) const SERIAL0: &str = "S3Z1NB0K123456A";
pub(crate) const WWN1: &str = "0x50014ee2b5a1c3d7";

fn fs(
    disk: usize,
    part: u32,
    fs_type: &str,
    uuid: Option<&str>,
    label: Option<&str>,
) -> FsIdentity {
    FsIdentity {
        disk_index: disk,
        partition: Some(part),
        uuid: uuid.map(str::to_string),
        label: label.map(str::to_string),
        partuuid: Some(format!("c3d4e5f6-0000-4000-8000-0000000{disk}010{part}")),
        fs_type: fs_type.to_string(),
        source_serial: (disk == 0).then(|| SERIAL0.to_string()),
        source_wwn: (disk == 1).then(|| WWN1.to_string()),
        source_model: None,
    }
}

/// Disk 0: ESP, root (`root`), swap, home (`home`, partition 5).
/// Disk 1: data (`data`), LUKS, a raw partition, two file systems that
/// share the label `twin`.
pub(crate) fn sample() -> DeviceMap {
    DeviceMap::new(vec![
        fs(0, 1, "vfat", Some(ESP), None),
        fs(0, 2, "ext4", Some(ROOT), Some("root")),
        fs(0, 3, "swap", Some(SWAP), None),
        fs(0, 5, "ext4", Some(HOME), Some("home")),
        fs(1, 1, "xfs", Some(DATA), Some("data")),
        fs(1, 2, "crypto_LUKS", Some(LUKS), None),
        fs(1, 3, "", None, None),
        fs(
            1,
            4,
            "ext4",
            Some("d0000000-0000-4000-8000-000000000001"),
            Some("twin"),
        ),
        fs(
            1,
            6,
            "ext4",
            Some("d0000000-0000-4000-8000-000000000002"),
            Some("twin"),
        ),
    ])
}

/// The split fixture's file systems (`tests/fixtures/debian-split.sh`),
/// deployed: /boot, swap and root
/// on partitions 1-3 of a target disk whose serial is not the
/// source's.
pub(crate) const BOOT: &str = "5c1d7e2a-3b4f-4a60-8d19-2e7f0a6b1c01";
pub(crate) const SWAP3: &str = "5c1d7e2a-3b4f-4a60-8d19-2e7f0a6b1c02";
pub(crate) const ROOT3: &str = "5c1d7e2a-3b4f-4a60-8d19-2e7f0a6b1c03";

pub(crate) fn held(partition: Option<u32>, uuid: &str, fs_type: &str) -> FsIdentity {
    FsIdentity {
        partition,
        uuid: Some(uuid.into()),
        fs_type: fs_type.into(),
        ..FsIdentity::default()
    }
}

/// The target after the deploy: one disk, serial `TARGET0001`, the
/// source's file systems with their UUIDs and labels.
pub(crate) fn deployed() -> DeviceMap {
    let on_target = |partition, uuid, fs_type, label: &str| FsIdentity {
        label: Some(label.into()),
        source_serial: Some("TARGET0001".into()),
        source_model: Some("QEMU HARDDISK".into()),
        ..held(Some(partition), uuid, fs_type)
    };
    DeviceMap::new(vec![
        on_target(1, BOOT, "ext4", "boot"),
        on_target(2, SWAP3, "swap", "swap"),
        on_target(3, ROOT3, "ext4", "root"),
    ])
    .with_disk_name(0, "/dev/vda")
}

/// The split fixture's source disk as the image recorded it.
pub(crate) fn split_source() -> SourceDisk {
    SourceDisk {
        name: "disk0 (/dev/sda)".into(),
        path: Some("/dev/sda".into()),
        model: Some("QEMU HARDDISK".into()),
        serial: Some("FERRYSPLITSOURCE".into()),
        wwn: None,
        filesystems: vec![
            held(Some(1), BOOT, "ext4"),
            held(Some(2), SWAP3, "swap"),
            held(Some(3), ROOT3, "ext4"),
        ],
    }
}

/// `UUID=<uuid>`.
pub(crate) fn u(uuid: &str) -> String {
    format!("UUID={uuid}")
}

/// [`check_warned`] for a rewrite that must not warn.
pub(crate) fn check(
    rewrite: impl Fn(&str) -> Rewritten,
    text: &str,
    replacements: &[(&str, &str)],
    lines: &[usize],
) -> Rewritten {
    let out = check_warned(rewrite, text, replacements, lines);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    out
}

/// Runs `rewrite` on `text` and checks that the result is `text` with
/// every `(from, to)` replaced (each `from` must occur), that the edits
/// are on `lines` (1-based) and that a second run changes nothing.
/// Returns the result, whose warnings the caller checks.
pub(crate) fn check_warned(
    rewrite: impl Fn(&str) -> Rewritten,
    text: &str,
    replacements: &[(&str, &str)],
    lines: &[usize],
) -> Rewritten {
    let mut want = text.to_string();
    for (from, to) in replacements {
        assert!(want.contains(from), "{from:?} is not in the text");
        want = want.replace(from, to);
    }
    let out = rewrite(text);
    assert_eq!(out.text, want);
    let got: Vec<usize> = out.edits.iter().map(|e| e.line).collect();
    assert_eq!(got, lines, "edited lines");
    let again = rewrite(&out.text);
    assert!(again.edits.is_empty(), "not idempotent: {:?}", again.edits);
    assert_eq!(again.text, out.text);
    out
}

/// [`check`] for a rewrite that resolves against [`sample`].
pub(crate) fn check_sample(
    rewrite: fn(&str, &DeviceMap) -> Rewritten,
    text: &str,
    replacements: &[(&str, &str)],
    lines: &[usize],
) -> Rewritten {
    let map = sample();
    check(|t| rewrite(t, &map), text, replacements, lines)
}

/// [`unchanged`] for a rewrite that resolves against [`sample`].
pub(crate) fn unchanged_sample(
    rewrite: fn(&str, &DeviceMap) -> Rewritten,
    text: &str,
) -> Vec<String> {
    let map = sample();
    unchanged(|t| rewrite(t, &map), text)
}

/// A kernel argument naming a file system by UUID: `root=UUID=<uuid>`.
pub(crate) fn arg(param: &str, uuid: &str) -> String {
    format!("{param}=UUID={uuid}")
}

/// Checks that there is one warning per entry of `want`, in order, each
/// containing its entry.
pub(crate) fn assert_warnings(warnings: &[String], want: &[&str]) {
    assert_eq!(warnings.len(), want.len(), "{warnings:?}");
    for (warning, part) in warnings.iter().zip(want) {
        assert!(warning.contains(part), "{warning:?} lacks {part:?}");
    }
}

/// Runs `rewrite` on a text it must leave unchanged and returns the
/// warnings.
pub(crate) fn unchanged(rewrite: impl Fn(&str) -> Rewritten, text: &str) -> Vec<String> {
    let out = rewrite(text);
    assert_eq!(out.text, text);
    assert!(out.edits.is_empty(), "{:?}", out.edits);
    out.warnings
}
