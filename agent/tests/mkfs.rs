//! File systems on loop devices over sparse files (root): each kind made
//! with a UUID and label the survey reads back, checked clean; ext4 and
//! xfs grown inside a larger loop device; tool failures named. Without
//! root or a tool they print `SKIPPED` and return.

mod common;

use std::path::Path;

use agent::blockdev::LoopDevice;
use agent::mkfs::{check_fs, grow_fs, make_fs, mount_temp, FsError, FsKind};
use common::{skip, sparse, MIB};
use imaging::disk::{survey_disk, Filesystem, FsType};

/// The file system the survey finds on a whole device or image.
fn surveyed(path: &Path) -> Filesystem {
    let layout = survey_disk(path, Path::new("/")).expect("survey");
    let p = layout
        .partitions
        .first()
        .unwrap_or_else(|| panic!("nothing on {}", path.display()));
    assert_eq!(p.number, 0, "a file system on the whole device");
    p.filesystem.clone().expect("a file system")
}

#[test]
fn each_kind_keeps_its_uuid_and_label() {
    let tools = [
        "losetup",
        "mke2fs",
        "e2fsck",
        "mkfs.xfs",
        "xfs_repair",
        "mkfs.vfat",
        "fsck.vfat",
        "mkswap",
    ];
    if skip("each_kind_keeps_its_uuid_and_label", true, &tools) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            FsKind::Ext2,
            FsType::Ext2,
            "3f1d2c4b-5a69-4788-99aa-bbccddeeff01",
            "ext2-label",
        ),
        (
            FsKind::Ext3,
            FsType::Ext3,
            "3f1d2c4b-5a69-4788-99aa-bbccddeeff02",
            "ext3 label",
        ),
        (
            FsKind::Ext4,
            FsType::Ext4,
            "3f1d2c4b-5a69-4788-99aa-bbccddeeff03",
            "sixteen-chars-ok",
        ),
        (
            FsKind::Xfs,
            FsType::Xfs,
            "3f1d2c4b-5a69-4788-99aa-bbccddeeff04",
            "xfs-root",
        ),
        (FsKind::Vfat, FsType::Vfat, "ABCD-1234", "EFI SYSTEM"),
        (
            FsKind::Swap,
            FsType::Swap,
            "3f1d2c4b-5a69-4788-99aa-bbccddeeff06",
            "swap0",
        ),
    ];
    for (kind, fs_type, uuid, label) in cases {
        let (img, _) = sparse(dir.path(), kind.name(), 320 * MIB);
        let lo = LoopDevice::attach(&img, 0, 0).expect("attach");
        make_fs(lo.path(), kind, Some(uuid), Some(label))
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        let report = check_fs(lo.path(), kind).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert!(report.clean, "{kind:?} not clean: {}", report.output);
        lo.detach().expect("detach");
        let fs = surveyed(&img);
        assert_eq!(fs.fs_type, fs_type);
        assert_eq!(fs.uuid.as_deref(), Some(uuid), "{kind:?}");
        assert_eq!(fs.label.as_deref(), Some(label), "{kind:?}");
    }
}

/// Makes `kind` in the first `small` bytes of a loop device over `img`
/// at 1 MiB, grows it within `large` bytes and returns the surveyed size.
fn grow(img: &Path, kind: FsKind, small: u64, large: u64) -> u64 {
    let lo = LoopDevice::attach(img, MIB, small).expect("attach small");
    make_fs(lo.path(), kind, None, Some("grow")).expect("mkfs");
    assert_eq!(
        surveyed(lo.path()).size,
        Some(small),
        "{kind:?} before growing"
    );
    lo.detach().expect("detach");
    let lo = LoopDevice::attach(img, MIB, large).expect("attach large");
    grow_fs(lo.path(), kind).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
    let report = check_fs(lo.path(), kind).expect("check");
    assert!(
        report.clean,
        "{kind:?} not clean after growing: {}",
        report.output
    );
    let fs = surveyed(lo.path());
    assert_eq!(fs.label.as_deref(), Some("grow"));
    fs.size.expect("size")
}

#[test]
fn ext4_and_xfs_grow_to_fill_the_device() {
    let tools = [
        "losetup",
        "mke2fs",
        "e2fsck",
        "resize2fs",
        "mkfs.xfs",
        "xfs_growfs",
        "xfs_repair",
        "mount",
    ];
    if skip("ext4_and_xfs_grow_to_fill_the_device", true, &tools) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (img, _) = sparse(dir.path(), "ext4.img", 1024 * MIB);
    assert_eq!(grow(&img, FsKind::Ext4, 100 * MIB, 300 * MIB), 300 * MIB);
    // mkfs.xfs (xfsprogs ≥ 5.19) refuses file systems under 300 MB.
    let (img, _) = sparse(dir.path(), "xfs.img", 1024 * MIB);
    assert_eq!(grow(&img, FsKind::Xfs, 320 * MIB, 640 * MIB), 640 * MIB);
}

#[test]
fn a_busy_temporary_mount_is_detached_lazily() {
    if skip(
        "a_busy_temporary_mount_is_detached_lazily",
        true,
        &["losetup", "mke2fs", "mount"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (img, _) = sparse(dir.path(), "busy.img", 64 * MIB);
    let lo = LoopDevice::attach(&img, 0, 0).expect("attach");
    make_fs(lo.path(), FsKind::Ext4, None, None).expect("mkfs");
    let m = mount_temp(lo.path(), FsKind::Ext4).expect("mount");
    let at = m.path().to_path_buf();
    let held = std::fs::File::create(at.join("held")).expect("file in the mount");
    drop(m);
    assert!(!at.exists(), "mount point {} left behind", at.display());
    drop(held);
}

#[test]
fn tool_failures_name_device_command_and_stderr() {
    if skip(
        "tool_failures_name_device_command_and_stderr",
        false,
        &["mke2fs"],
    ) {
        return;
    }
    let err = make_fs(
        Path::new("/nonexistent/ferry-dev"),
        FsKind::Ext4,
        None,
        Some("x"),
    )
    .expect_err("no device");
    assert!(matches!(err, FsError::Tool(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("/nonexistent/ferry-dev")
            && msg.contains("mke2fs -F -q -t ext4 -L x /nonexistent/ferry-dev")
            && msg.contains("does not exist"),
        "{msg}"
    );
}
