//! Block-device primitives on real loop devices (root): re-reading a table
//! `write_table` wrote, loop devices over file ranges, and refusing disks
//! that are mounted, swapped on, held by device-mapper or attached to a
//! loop device. Without root or a tool they print `SKIPPED` and return.

mod common;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use agent::blockdev::{
    check_not_in_use, partition_device, reread_partitions, InUse, LoopDevice, Use,
};
use agent::mkfs::{make_fs, mount_temp, FsKind};
use agent::table::{write_table, EntrySpec, PartSpec, Scheme, TableSpec};
use common::{sh, skip, sparse, MIB};

const DISK: u64 = 256 * MIB;

fn linux(number: u32, start_mib: u64, size_mib: u64) -> PartSpec {
    PartSpec {
        number,
        start: start_mib * MIB,
        size: size_mib * MIB,
        entry: EntrySpec::Mbr {
            type_code: 0x83,
            bootable: false,
            logical: false,
        },
    }
}

fn mbr(partitions: Vec<PartSpec>) -> TableSpec {
    TableSpec {
        scheme: Scheme::Mbr {
            disk_signature: "1234abcd".into(),
        },
        sector_size: 512,
        disk_size: DISK,
        partitions,
    }
}

fn open_rw(p: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .expect("open loop device")
}

/// A loop device over a fresh sparse disk image with `spec` written and
/// re-read; returns the image path, the loop device and its partitions.
fn disk_with(dir: &Path, spec: &TableSpec) -> (PathBuf, LoopDevice, Vec<(u32, PathBuf)>) {
    let (img, _) = sparse(dir, "disk.img", DISK);
    let lo = LoopDevice::attach(&img, 0, 0).expect("attach");
    let f = open_rw(lo.path());
    write_table(&f, &lo.path().display().to_string(), spec).expect("write table");
    let parts = reread_partitions(&f, lo.path()).expect("reread");
    (img, lo, parts)
}

/// The size in bytes the kernel gives a block device.
fn kernel_size(dev: &Path) -> u64 {
    let name = std::fs::canonicalize(dev).expect("canonical");
    let name = name
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let sectors: u64 = std::fs::read_to_string(format!("/sys/class/block/{name}/size"))
        .expect("sysfs size")
        .trim()
        .parse()
        .expect("number");
    sectors * 512
}

#[test]
fn reread_shows_new_and_changed_partitions() {
    if skip(
        "reread_shows_new_and_changed_partitions",
        true,
        &["losetup", "partx"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_img, lo, parts) = disk_with(dir.path(), &mbr(vec![linux(1, 1, 50), linux(2, 51, 50)]));
    let want: Vec<(u32, PathBuf)> = (1..=2)
        .map(|n| (n, partition_device(lo.path(), n)))
        .collect();
    assert_eq!(parts, want);
    assert_eq!(kernel_size(&want[0].1), 50 * MIB);

    // A second table: partition 1 shrinks, 3 appears.
    let f = open_rw(lo.path());
    let spec = mbr(vec![linux(1, 1, 20), linux(2, 51, 50), linux(3, 101, 100)]);
    write_table(&f, "loop", &spec).expect("rewrite");
    let parts = reread_partitions(&f, lo.path()).expect("reread again");
    assert_eq!(parts.len(), 3, "{parts:?}");
    assert_eq!(kernel_size(&parts[0].1), 20 * MIB);
    assert_eq!(kernel_size(&parts[2].1), 100 * MIB);
    let p3 = parts[2].1.clone();
    lo.detach().expect("detach");
    assert!(!p3.exists(), "{} survives the detach", p3.display());
}

#[test]
fn loop_devices_cover_the_range_asked_for() {
    if skip("loop_devices_cover_the_range_asked_for", true, &["losetup"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (img, _) = sparse(dir.path(), "part.img", 64 * MIB);
    let lo = LoopDevice::attach(&img, 3 * MIB, 10 * MIB).expect("attach");
    let name = lo
        .path()
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert_eq!(kernel_size(lo.path()), 10 * MIB);
    let sys = |a: &str| std::fs::read_to_string(format!("/sys/block/{name}/loop/{a}")).expect(a);
    assert_eq!(sys("offset").trim(), (3 * MIB).to_string());
    assert_eq!(
        sys("backing_file").trim(),
        std::fs::canonicalize(&img)
            .expect("canonical")
            .to_str()
            .expect("utf-8")
    );
    let path = lo.path().to_path_buf();
    drop(lo);
    assert!(
        std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).is_err(),
        "{} still attached after drop",
        path.display()
    );
    let err = LoopDevice::attach(&dir.path().join("missing.img"), 0, 0).expect_err("no file");
    assert!(
        err.to_string().contains("losetup") && err.to_string().contains("missing.img"),
        "{err}"
    );
}

fn busy_uses(r: Result<(), InUse>) -> Vec<Use> {
    match r {
        Err(InUse::Busy { uses, .. }) => uses,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn mounted_swapped_and_held_disks_are_refused() {
    if skip(
        "mounted_swapped_and_held_disks_are_refused",
        true,
        &["losetup", "partx", "mke2fs", "mount"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (img, lo, parts) = disk_with(dir.path(), &mbr(vec![linux(1, 1, 100), linux(2, 101, 100)]));
    let disk = lo.path().to_path_buf();
    let (p1, p2) = (parts[0].1.clone(), parts[1].1.clone());
    check_not_in_use(&disk).expect("an unused disk is accepted");

    // The image behind the loop device is in use while attached.
    let uses = busy_uses(check_not_in_use(&img));
    assert!(
        matches!(&uses[..], [Use::LoopBacking { loop_device, .. }] if Path::new(loop_device) == disk),
        "{uses:?}"
    );

    make_fs(&p1, FsKind::Ext4, None, Some("busy")).expect("mkfs");
    let m = mount_temp(&p1, FsKind::Ext4).expect("mount");
    let err = check_not_in_use(&disk).expect_err("mounted");
    let msg = err.to_string();
    assert!(
        msg.contains(&disk.display().to_string())
            && msg.contains(&format!(
                "{} is mounted at {}",
                p1.display(),
                m.path().display()
            )),
        "{msg}"
    );
    // Through a symlink too.
    let link = dir.path().join("by-id-link");
    std::os::unix::fs::symlink(&disk, &link).expect("symlink");
    assert!(check_not_in_use(&link).is_err());
    m.unmount().expect("unmount");
    check_not_in_use(&disk).expect("accepted again after the unmount");

    if common::have("mkswap") && common::have("swapon") {
        make_fs(&p2, FsKind::Swap, None, None).expect("mkswap");
        let on = std::process::Command::new("swapon")
            .arg(&p2)
            .status()
            .expect("swapon");
        if on.success() {
            let uses = busy_uses(check_not_in_use(&disk));
            sh(&format!("swapoff {}", p2.display()));
            assert_eq!(
                uses,
                vec![Use::Swap {
                    device: p2.display().to_string()
                }]
            );
        } else {
            common::say_skipped(
                "the swap part of mounted_swapped_and_held_disks_are_refused",
                "swapon refused",
            );
        }
    } else {
        common::say_skipped(
            "the swap part of mounted_swapped_and_held_disks_are_refused",
            "mkswap/swapon missing",
        );
    }

    let dm_works = common::have("dmsetup")
        && std::process::Command::new("dmsetup")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success());
    if dm_works {
        let name = format!("ferry-test-{}", std::process::id());
        sh(&format!(
            "dmsetup create {name} --table '0 {} linear {} 0'",
            100 * MIB / 512,
            p2.display()
        ));
        let uses = busy_uses(check_not_in_use(&disk));
        sh(&format!("dmsetup remove {name}"));
        assert!(
            matches!(&uses[..], [Use::Held { device, by }] if Path::new(device) == p2 && by.contains(&format!("device-mapper {name}"))),
            "{uses:?}"
        );
    } else {
        common::say_skipped(
            "the holder part of mounted_swapped_and_held_disks_are_refused",
            "dmsetup or the kernel's device-mapper missing",
        );
    }
    check_not_in_use(&disk).expect("accepted at the end");
}
