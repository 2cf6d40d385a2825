//! `ferry survey` (hardware) on sysfs trees captured from real QEMU boots
//! (`tests/fixtures/hw/capture.sh`), and on this machine.

use std::path::{Path, PathBuf};

use ferry_tests::{fails, ferry, json, ok};
use serde_json::Value;

const QEMU_MAC: &str = "52:54:00:12:34:56";
const DISK_SIZE: u64 = 2 << 30;

fn fixture(config: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/hw")
        .join(config)
}

/// `ferry survey --json --root <fixture>`.
fn survey(config: &str) -> Value {
    let lib = tempfile::tempdir().expect("tempdir");
    json(
        ferry(lib.path())
            .args(["survey", "--root"])
            .arg(fixture(config)),
    )
}

/// The PCI device with `vendor:device`.
fn pci<'a>(s: &'a Value, id: &str) -> &'a Value {
    let (vendor, device) = id.split_once(':').expect("vendor:device");
    s["pci"]
        .as_array()
        .expect("pci list")
        .iter()
        .find(|d| d["vendor"] == vendor && d["device"] == device)
        .unwrap_or_else(|| panic!("no PCI device {id} in {:#}", s["pci"]))
}

/// The one entry of list `key` whose `name` is `name`.
fn named<'a>(s: &'a Value, key: &str, name: &str) -> &'a Value {
    s[key]
        .as_array()
        .expect("a list")
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {key}: {:#}", s[key]))
}

/// Checks the disk `name`: size, PCI parent and driver stack.
fn assert_disk(s: &Value, name: &str, pci: &Value, drivers: &[&str]) {
    let d = named(s, "disks", name);
    assert_eq!(d["size"], DISK_SIZE, "{d:#}");
    assert_eq!(d["logical_sector_size"], 512, "{d:#}");
    assert_eq!(d["pci"], pci["address"], "{d:#}");
    assert_eq!(d["drivers"], serde_json::json!(drivers), "{d:#}");
}

/// Checks the one NIC: QEMU's MAC, its driver and PCI device.
fn assert_nic(s: &Value, pci: &Value) {
    let nics = s["nics"].as_array().expect("nics");
    assert_eq!(nics.len(), 1, "lo is not a NIC: {nics:?}");
    assert_eq!(nics[0]["mac"], QEMU_MAC);
    assert_eq!(nics[0]["pci"], pci["address"]);
}

/// Checks what QEMU makes of every VM: 2 vCPUs, ~1 GiB, its DMI name.
fn assert_machine(s: &Value, firmware: &str, product: &str) {
    assert_eq!(s["format_version"], 1);
    assert_eq!(s["firmware"], firmware);
    assert_eq!(s["dmi"]["sys_vendor"], "QEMU");
    assert_eq!(s["dmi"]["product_name"], product);
    assert_eq!(s["cpu"]["logical"], 2);
    assert_eq!(s["cpu"]["model_name"], "QEMU Virtual CPU version 2.5+");
    let mem = s["memory"]["total"].as_u64().expect("MemTotal");
    assert!((900 << 20..1 << 30).contains(&mem), "{mem}");
}

/// Checks the two virtio layers: the PCI function `id` with `modalias`
/// and the virtio device under it with `virtio` and `driver`.
fn assert_virtio(s: &Value, id: &str, modalias: &str, virtio: &str, driver: &str) -> Value {
    let p = pci(s, id).clone();
    assert_eq!(p["modalias"], modalias);
    assert_eq!(p["driver"], "virtio-pci");
    let under: Vec<&Value> = s["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .filter(|d| d["bus"] == "virtio" && d["pci"] == p["address"])
        .collect();
    assert_eq!(under.len(), 1, "{under:?}");
    assert_eq!(under[0]["modalias"], virtio);
    assert_eq!(under[0]["driver"], driver);
    p
}

/// Checks the virtio-blk disk `vda` and both its layers.
fn assert_virtio_blk(s: &Value) {
    let blk = assert_virtio(
        s,
        "1af4:1001",
        "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00",
        "virtio:d00000002v00001AF4",
        "virtio_blk",
    );
    assert_disk(s, "vda", &blk, &["virtio_blk", "virtio-pci"]);
}

#[test]
fn ide_e1000_is_the_source_server() {
    let s = survey("ide-e1000");
    assert_machine(&s, "bios", "Standard PC (i440FX + PIIX, 1996)");
    let ide = pci(&s, "8086:7010");
    assert_eq!(
        (&ide["class"], &ide["driver"]),
        (&"010180".into(), &"ata_piix".into())
    );
    let nic = pci(&s, "8086:100e");
    assert_eq!(
        nic["modalias"],
        "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00"
    );
    assert_eq!(nic["driver"], "e1000");
    assert_disk(&s, "sda", ide, &["sd", "ata_piix"]);
    let sda = named(&s, "disks", "sda");
    assert_eq!(
        (&sda["model"], &sda["serial"], &sda["rotational"]),
        (&"QEMU HARDDISK".into(), &"QM00001".into(), &true.into())
    );
    assert_eq!(named(&s, "disks", "sr0")["removable"], true);
    assert_nic(&s, nic);
}

#[test]
fn virtio_shows_both_layers() {
    let s = survey("virtio");
    assert_machine(&s, "bios", "Standard PC (i440FX + PIIX, 1996)");
    assert_virtio_blk(&s);
    let net = assert_virtio(
        &s,
        "1af4:1000",
        "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
        "virtio:d00000001v00001AF4",
        "virtio_net",
    );
    assert_nic(&s, &net);
    assert_eq!(s["nics"][0]["driver"], "virtio_net");
}

#[test]
fn nvme_e1000e_on_q35() {
    let s = survey("nvme-e1000e");
    assert_machine(&s, "bios", "Standard PC (Q35 + ICH9, 2009)");
    assert_eq!(
        s["dmi"]["product_uuid"],
        "5e7a1c2b-3d4f-4a6b-8c9d-0e1f2a3b4c5d"
    );
    let nvme = pci(&s, "1b36:0010");
    assert_eq!(
        (&nvme["class"], &nvme["driver"]),
        (&"010802".into(), &"nvme".into())
    );
    let nic = pci(&s, "8086:10d3");
    assert_eq!(nic["driver"], "e1000e");
    assert_disk(&s, "nvme0n1", nvme, &["nvme"]);
    let d = named(&s, "disks", "nvme0n1");
    assert_eq!(
        (&d["serial"], &d["rotational"]),
        (&"ferry-nvme0".into(), &false.into())
    );
    assert!(
        d["wwn"].as_str().is_some_and(|w| w.starts_with("nvme.")),
        "{d:#}"
    );
    assert_nic(&s, nic);
}

#[test]
fn ahci_rtl8139_on_q35() {
    let s = survey("ahci-rtl8139");
    assert_machine(&s, "bios", "Standard PC (Q35 + ICH9, 2009)");
    let ahci = pci(&s, "8086:2922");
    assert_eq!(
        (&ahci["class"], &ahci["driver"]),
        (&"010601".into(), &"ahci".into())
    );
    let nic = pci(&s, "10ec:8139");
    assert_eq!(nic["revision"], "20");
    // QEMU's rtl8139 is a "C+" chip, which 8139too leaves to 8139cp.
    assert_eq!(nic["driver"], "8139cp");
    assert_disk(&s, "sda", ahci, &["sd", "ahci"]);
    assert_nic(&s, nic);
}

#[test]
fn uefi_virtio_booted_under_ovmf() {
    let s = survey("uefi-virtio");
    assert_machine(&s, "uefi", "Standard PC (Q35 + ICH9, 2009)");
    assert_eq!(s["dmi"]["bios_vendor"], "EFI Development Kit II / OVMF");
    assert_virtio_blk(&s);
}

#[test]
fn every_fixture_records_its_qemu_command_line() {
    for config in [
        "ide-e1000",
        "virtio",
        "nvme-e1000e",
        "ahci-rtl8139",
        "uefi-virtio",
    ] {
        let args = std::fs::read_to_string(fixture(config).join("qemu-args"))
            .unwrap_or_else(|e| panic!("{config}/qemu-args: {e}"));
        assert!(
            args.lines().any(|l| l.contains("@DISK@")),
            "{config}: {args}"
        );
        let machine = if config.starts_with("ide") || config == "virtio" {
            "pc"
        } else {
            "q35"
        };
        assert!(
            args.contains(&format!("-machine\n{machine}\n")),
            "{config}: {args}"
        );
    }
}

#[test]
fn the_text_form_is_a_compact_table() {
    let lib = tempfile::tempdir().expect("tempdir");
    let out = ok(ferry(lib.path())
        .args(["survey", "--root"])
        .arg(fixture("virtio")));
    for want in [
        "firmware  bios",
        "Standard PC (i440FX + PIIX, 1996)",
        "1af4:1001  class 010000  virtio-pci",
        "virtio virtio1  virtio:d00000002v00001AF4  virtio_blk",
        "vda",
        "2.00 GiB",
        QEMU_MAC,
    ] {
        assert!(out.contains(want), "no {want:?} in:\n{out}");
    }
}

#[test]
fn a_root_without_sys_fails_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = fails(
        ferry(dir.path())
            .args(["survey", "--json", "--root"])
            .arg(dir.path()),
    );
    assert!(
        err.contains(&dir.path().join("sys").display().to_string()),
        "{err}"
    );
}

#[test]
fn this_machine_can_be_surveyed() {
    let lib = tempfile::tempdir().expect("tempdir");
    let s = json(ferry(lib.path()).args(["survey", "--root", "/"]));
    assert!(
        s["cpu"]["logical"].as_u64().is_some_and(|n| n >= 1),
        "{:#}",
        s["cpu"]
    );
    assert!(
        s["memory"]["total"].as_u64().is_some_and(|n| n > 0),
        "{:#}",
        s["memory"]
    );
}
