//! Server images: `ferry capture --disk` stores the partition table area and
//! one stream per partition, reading only the blocks in use.

use std::fs;
use std::path::Path;

use ferry_tests::{fails, ferry, json, ok, pseudo_random, sh};

/// A directory of `mib` MiB of incompressible files (for `mke2fs -d`).
fn data_tree(dir: &Path, mib: usize) {
    fs::create_dir_all(dir.join("srv/data")).expect("mkdir");
    for i in 0..mib / 8 {
        let f = dir.join(format!("srv/data/blob{i:03}"));
        fs::write(&f, pseudo_random(8 << 20, 1000 + i as u64)).expect("write");
    }
    fs::write(dir.join("etc-hostname"), b"web01\n").expect("write");
}

/// The partition's JSON from an image manifest.
fn partition(m: &serde_json::Value, number: u64) -> &serde_json::Value {
    m["disks"][0]["content"]["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .find(|p| p["number"] == number)
        .unwrap_or_else(|| panic!("no partition {number} in {m:#}"))
}

#[test]
fn a_big_disk_with_little_data_costs_only_its_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = dir.path().join("lib");
    let tree = dir.path().join("tree");
    data_tree(&tree, 96);
    let disk = dir.path().join("big.img");
    // 16 GiB sparse disk: MBR, one ext4 partition from 1 MiB to the end,
    // populated with 96 MiB of data by mke2fs (no mount needed).
    sh(&format!(
        "truncate -s 16G {d} && echo 'start=2048, type=83' | sfdisk -q {d} && \
         mke2fs -q -F -t ext4 -L data -U 0d0e0a0d-0b0e-4e0f-8a0a-000000000001 \
         -E offset=1048576 -d {t} {d} 16776192k",
        d = disk.display(),
        t = tree.display()
    ));
    let m = json(
        ferry(&lib)
            .arg("capture")
            .arg("--disk")
            .arg(&disk)
            .args(["--name", "big"]),
    );
    let p1 = partition(&m, 1);
    assert_eq!(p1["content"]["kind"], "used-blocks", "{p1:#}");
    let used = p1["content"]["used_bytes"].as_u64().expect("used");
    let read = m["stats"]["bytes_read"].as_u64().expect("bytes_read");
    // The data plus ext4 metadata (inode tables, journal, bitmaps) is read;
    // the 16 GiB of free blocks are not.
    assert!((96 << 20) < used && used < (700 << 20), "used {used}");
    assert!(read <= used + (1 << 20), "read {read} > used {used}");
    let unused = p1["content"]["stream"]["unused_bytes"].as_u64().expect("u");
    assert!(unused > 15 << 30, "unused {unused}");
    assert_eq!(m["disks"][0]["content"]["head"]["size"], 1 << 20);
    assert_eq!(
        p1["content"]["stream"]["size"].as_u64(),
        Some((16 << 30) - (1 << 20))
    );
    ok(ferry(&lib).args(["image", "verify", "big"]));
    let err = fails(
        ferry(&lib)
            .args(["restore", "big"])
            .arg(dir.path().join("out.img")),
    );
    assert!(err.contains("ferry deploy big --target"), "{err}");
    assert!(!dir.path().join("out.img").exists(), "nothing created");
    // The same disk captured byte for byte stores the same data chunks:
    // nothing new but the free space's metadata.
    let raw = json(
        ferry(&lib)
            .arg("capture")
            .arg(&disk)
            .args(["--name", "big-raw"]),
    );
    assert!(
        raw["stats"]["stored_new"].as_u64().expect("stored") < 32 << 20,
        "{raw:#}"
    );
}

#[test]
fn swap_is_described_and_lvm_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = dir.path().join("lib");
    let disk = dir.path().join("disk.img");
    let swap = dir.path().join("swap.img");
    // p1 ext4 (32 MiB), p2 swap (16 MiB), written into place with dd.
    sh(&format!(
        "truncate -s 64M {d} && printf 'start=2048, size=65536, type=83\\nsize=32768, type=82\\n' \
         | sfdisk -q {d} && mke2fs -q -F -t ext4 -L root -E offset=1048576 {d} 32768k && \
         truncate -s 16M {s} && mkswap -q -L swap0 -U 5a5a5a5a-0000-4000-8000-000000000002 {s} && \
         dd if={s} of={d} bs=1M seek=33 conv=notrunc status=none",
        d = disk.display(),
        s = swap.display()
    ));
    let m = json(
        ferry(&lib)
            .arg("capture")
            .arg("--disk")
            .arg(&disk)
            .args(["--name", "with-swap"]),
    );
    let p2 = partition(&m, 2);
    assert_eq!(p2["content"]["kind"], "swap", "{p2:#}");
    let fs = &m["disks"][0]["content"]["layout"]["partitions"][1]["filesystem"];
    assert_eq!(fs["uuid"], "5a5a5a5a-0000-4000-8000-000000000002", "{fs:#}");
    assert_eq!(fs["label"], "swap0");
    assert_eq!(partition(&m, 1)["content"]["kind"], "used-blocks");

    // An LVM2 physical volume in partition 2: "LABELONE" at sector 1 with
    // the "LVM2 001" type, as pvcreate writes it.
    sh(&format!(
        "printf 'LABELONE' | dd of={d} bs=1 seek=$((33*1048576+512)) conv=notrunc status=none && \
         printf 'LVM2 001' | dd of={d} bs=1 seek=$((33*1048576+512+24)) conv=notrunc status=none",
        d = disk.display()
    ));
    let err = fails(
        ferry(&lib)
            .arg("capture")
            .arg("--disk")
            .arg(&disk)
            .args(["--name", "with-lvm"]),
    );
    assert!(
        err.contains("partition 2") && err.contains("LVM2") && err.contains("byte for byte"),
        "{err}"
    );
    let images = json(ferry(&lib).args(["image", "ls"]));
    assert_eq!(images.as_array().map(Vec::len), Some(1), "{images:#}");
}
