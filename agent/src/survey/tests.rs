//! The survey on small synthetic sysfs trees.

use std::path::Path;

use super::*;

/// Writes `content` at `root/rel`, creating directories.
fn file(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
    std::fs::write(&p, content).expect("write");
}

/// Makes `root/rel` a symlink to `target`, creating directories.
fn link(root: &Path, rel: &str, target: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
    std::os::unix::fs::symlink(target, &p).expect("symlink");
}

/// A virtio-blk disk and a virtio-net NIC on PCI, as sysfs lays them out.
fn virtio_tree(root: &Path) {
    let blk = "sys/devices/pci0000:00/0000:00:04.0";
    let net = "sys/devices/pci0000:00/0000:00:03.0";
    for (dev, id, class) in [(blk, "0x1001", "0x010000"), (net, "0x1000", "0x020000")] {
        file(root, &format!("{dev}/vendor"), "0x1af4\n");
        file(root, &format!("{dev}/device"), &format!("{id}\n"));
        file(root, &format!("{dev}/class"), &format!("{class}\n"));
        let modalias = format!(
            "pci:v00001AF4d0000{}sv00001AF4sd00000002bc{}sc00i00\n",
            id[2..].to_uppercase(),
            &class[2..4]
        );
        file(root, &format!("{dev}/modalias"), &modalias);
        link(
            root,
            &format!("{dev}/driver"),
            "../../../bus/pci/drivers/virtio-pci",
        );
        let addr = &dev[dev.len() - 12..];
        link(
            root,
            &format!("sys/bus/pci/devices/{addr}"),
            &format!("../../../devices/pci0000:00/{addr}"),
        );
    }
    file(
        root,
        &format!("{blk}/virtio1/modalias"),
        "virtio:d00000002v00001AF4\n",
    );
    link(
        root,
        &format!("{blk}/virtio1/driver"),
        "../../../../bus/virtio/drivers/virtio_blk",
    );
    link(
        root,
        "sys/bus/virtio/devices/virtio1",
        "../../../devices/pci0000:00/0000:00:04.0/virtio1",
    );
    file(root, &format!("{blk}/virtio1/block/vda/size"), "4194304\n");
    link(
        root,
        &format!("{blk}/virtio1/block/vda/device"),
        "../../../virtio1",
    );
    link(
        root,
        "sys/block/vda",
        "../devices/pci0000:00/0000:00:04.0/virtio1/block/vda",
    );
    file(
        root,
        &format!("{net}/virtio0/modalias"),
        "virtio:d00000001v00001AF4\n",
    );
    link(
        root,
        "sys/bus/virtio/devices/virtio0",
        "../../../devices/pci0000:00/0000:00:03.0/virtio0",
    );
    file(
        root,
        &format!("{net}/virtio0/net/eth0/address"),
        "52:54:00:12:34:56\n",
    );
    link(
        root,
        &format!("{net}/virtio0/net/eth0/device"),
        "../../../virtio0",
    );
    link(
        root,
        "sys/class/net/eth0",
        "../../devices/pci0000:00/0000:00:03.0/virtio0/net/eth0",
    );
    file(
        root,
        "sys/devices/virtual/net/lo/address",
        "00:00:00:00:00:00\n",
    );
    link(root, "sys/class/net/lo", "../../devices/virtual/net/lo");
    file(root, "sys/devices/virtual/block/loop0/size", "0\n");
    link(root, "sys/block/loop0", "../devices/virtual/block/loop0");
    // A virtio console on virtio-mmio: no PCI layer, not storage.
    file(
        root,
        "sys/devices/platform/virtio-mmio.0/virtio2/modalias",
        "virtio:d00000003v554D4551\n",
    );
    link(
        root,
        "sys/bus/virtio/devices/virtio2",
        "../../../devices/platform/virtio-mmio.0/virtio2",
    );
}

#[test]
fn a_missing_sysfs_is_the_one_error_and_names_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = survey(dir.path()).expect_err("no sys");
    let want = dir.path().join("sys").display().to_string();
    assert!(err.to_string().contains(&want), "{err}");
}

#[test]
fn an_empty_sysfs_is_an_empty_bios_machine() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("sys")).expect("mkdir");
    let s = survey(dir.path()).expect("survey");
    assert_eq!(s.format_version, FORMAT_VERSION);
    assert_eq!(s.firmware, Firmware::Bios);
    assert!(s.pci.is_empty() && s.devices.is_empty() && s.disks.is_empty() && s.nics.is_empty());
    assert_eq!(s.dmi, Dmi::default());
    assert_eq!(s.cpu, Cpu::default());
    assert_eq!(s.memory.total, None);
}

#[test]
fn virtio_devices_link_to_their_pci_function() {
    let dir = tempfile::tempdir().expect("tempdir");
    virtio_tree(dir.path());
    std::fs::create_dir_all(dir.path().join("sys/firmware/efi")).expect("mkdir");
    let s = survey(dir.path()).expect("survey");
    assert_eq!(s.firmware, Firmware::Uefi);

    let blk = &s.pci[1];
    assert_eq!(blk.address, "0000:00:04.0");
    assert_eq!(blk.vendor.as_deref(), Some("1af4"));
    assert_eq!(blk.class.as_deref(), Some("010000"));
    assert_eq!(blk.driver.as_deref(), Some("virtio-pci"));
    assert_eq!(blk.subsystem_vendor, None, "a missing attribute is None");
    assert_eq!(
        blk.path.as_deref(),
        Some("/sys/devices/pci0000:00/0000:00:04.0")
    );

    let virtio1 = s
        .devices
        .iter()
        .find(|d| d.name == "virtio1")
        .expect("virtio1");
    assert_eq!(virtio1.pci.as_deref(), Some("0000:00:04.0"));
    assert_eq!(virtio1.driver.as_deref(), Some("virtio_blk"));
    let virtio2 = s
        .devices
        .iter()
        .find(|d| d.name == "virtio2")
        .expect("virtio2");
    assert_eq!(virtio2.pci, None);

    assert_eq!(s.disks.len(), 1, "loop0 is virtual: {:?}", s.disks);
    let vda = &s.disks[0];
    assert_eq!(vda.size, Some(2 << 30));
    assert_eq!(vda.pci.as_deref(), Some("0000:00:04.0"));
    assert_eq!(vda.drivers, ["virtio_blk", "virtio-pci"]);
    assert_eq!(
        (vda.model.as_deref(), vda.logical_sector_size),
        (None, None)
    );

    assert_eq!(s.nics.len(), 1, "lo has no device: {:?}", s.nics);
    assert_eq!(s.nics[0].mac.as_deref(), Some("52:54:00:12:34:56"));
    assert_eq!(s.nics[0].pci.as_deref(), Some("0000:00:03.0"));
    assert_eq!(s.nics[0].driver, None, "virtio0 has no driver link");

    let all = s.modaliases();
    assert_eq!(all.len(), 5, "{all:?}");
    assert_eq!(
        s.storage_and_network_modaliases(),
        [
            "pci:v00001AF4d00001000sv00001AF4sd00000002bc02sc00i00",
            "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00",
            "virtio:d00000001v00001AF4",
            "virtio:d00000002v00001AF4",
        ]
    );
}

#[test]
fn the_survey_round_trips_through_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    virtio_tree(dir.path());
    let s = survey(dir.path()).expect("survey");
    let json = serde_json::to_string(&s).expect("to json");
    let back: HardwareSurvey = serde_json::from_str(&json).expect("from json");
    assert_eq!(back, s);
}

#[test]
fn dangling_links_and_unreadable_proc_are_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    link(
        dir.path(),
        "sys/bus/pci/devices/0000:00:05.0",
        "../../../devices/pci0000:00/0000:00:05.0",
    );
    link(
        dir.path(),
        "sys/bus/scsi/devices/host0",
        "../../../devices/nowhere/host0",
    );
    link(dir.path(), "sys/block/sdz", "../devices/nowhere/sdz");
    file(dir.path(), "proc/cpuinfo", "processor : 0\n");
    let s = survey(dir.path()).expect("survey");
    assert_eq!(s.pci.len(), 1);
    assert_eq!(
        (s.pci[0].path.as_deref(), s.pci[0].modalias.as_deref()),
        (None, None)
    );
    assert!(s.devices.is_empty() && s.disks.is_empty());
    assert_eq!(
        (s.cpu.logical, s.cpu.model_name.as_deref()),
        (Some(1), None)
    );
    assert_eq!(s.memory.total, None);
}

/// A sysfs tree captured from a QEMU boot (`tests/fixtures/hw`).
fn captured(config: &str) -> HardwareSurvey {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/hw")
        .join(config);
    survey(&root).unwrap_or_else(|e| panic!("{config}: {e}"))
}

#[test]
fn storage_and_network_of_the_ide_source_server() {
    let s = captured("ide-e1000");
    assert_eq!(
        s.storage_and_network_modaliases(),
        [
            "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00",
            "pci:v00008086d00007010sv00001AF4sd00001100bc01sc01i80",
            "scsi:t-0x00",
            "scsi:t-0x05",
        ]
    );
    let all = s.modaliases();
    assert!(all.len() > 20, "ACPI and platform devices too: {all:?}");
    assert!(all.iter().any(|a| a.starts_with("acpi:PNP0A03")), "{all:?}");
}

#[test]
fn storage_and_network_of_virtio_are_both_layers() {
    let virtio = [
        "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
        "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00",
        "virtio:d00000001v00001AF4",
        "virtio:d00000002v00001AF4",
    ];
    let s = captured("virtio");
    assert_eq!(
        s.storage_and_network_modaliases(),
        [
            virtio[0],
            virtio[1],
            "pci:v00008086d00007010sv00001AF4sd00001100bc01sc01i80",
            "scsi:t-0x05", // the CD-ROM on the PIIX IDE
            virtio[2],
            virtio[3],
        ]
    );
    // Q35's built-in AHCI is a storage controller too.
    let s = captured("uefi-virtio");
    assert_eq!(
        s.storage_and_network_modaliases(),
        [
            virtio[0],
            virtio[1],
            "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01",
            "scsi:t-0x05",
            virtio[2],
            virtio[3],
        ]
    );
}
