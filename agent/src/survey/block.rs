//! Disks: every block device of ROOT/sys/block backed by hardware (loop,
//! RAM, device-mapper, MD and other virtual devices are left out), with
//! size, sector sizes, identity and the drivers it goes through.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::pci::{self, PciDevice};
use super::sysfs::{attr, flag, number, Sysfs};

/// sysfs counts a block device's `size` in 512-byte units whatever its
/// sector size.
const SYSFS_SECTOR: u64 = 512;

/// One disk (or CD-ROM: `removable`, size 0 when empty).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// Kernel name (`sda`, `nvme0n1`, `vda`).
    pub name: String,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Logical sector size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_sector_size: Option<u32>,
    /// Physical sector size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical_sector_size: Option<u32>,
    /// Spinning (as the kernel guesses: QEMU's IDE and SATA disks say yes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotational: Option<bool>,
    /// Removable media.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removable: Option<bool>,
    /// Vendor (SCSI/ATA: `ATA`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// Model (`QEMU HARDDISK`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Serial number (`serial`, or SCSI VPD page 0x80).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// World-wide identifier as the kernel gives it (`wwid`: `naa.…`,
    /// `eui.…`, `t10.…`, `nvme.…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
    /// The address of the PCI device it hangs off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci: Option<String>,
    /// The drivers between it and the bus, nearest first
    /// (`["sd", "ahci"]`, `["virtio_blk", "virtio-pci"]`, `["nvme"]`).
    #[serde(default)]
    pub drivers: Vec<String>,
}

/// The disks under ROOT/sys/block, by name.
pub(crate) fn scan(fs: &Sysfs, pci: &[PciDevice]) -> Vec<Disk> {
    let mut out = Vec::new();
    for (name, link) in fs.children(&fs.path("block")) {
        let Some(real) = fs.real(&link) else {
            continue;
        };
        if real.starts_with(fs.path("devices/virtual")) {
            continue;
        }
        let device = fs.real(&real.join("device"));
        let on_device = |a: &str| device.as_ref().and_then(|d| attr(&d.join(a)));
        let path = fs.display(&real);
        out.push(Disk {
            size: number::<u64>(&real.join("size")).and_then(|n| n.checked_mul(SYSFS_SECTOR)),
            logical_sector_size: number(&real.join("queue/logical_block_size")),
            physical_sector_size: number(&real.join("queue/physical_block_size")),
            rotational: flag(&real.join("queue/rotational")),
            removable: flag(&real.join("removable")),
            vendor: on_device("vendor"),
            model: on_device("model"),
            serial: attr(&real.join("serial"))
                .or_else(|| on_device("serial"))
                .or_else(|| device.as_deref().and_then(vpd_serial)),
            wwn: attr(&real.join("wwid")).or_else(|| on_device("wwid")),
            pci: path.as_deref().and_then(|p| pci::parent(pci, p)),
            drivers: fs.driver_stack(&real),
            name,
        });
    }
    out
}

/// The serial number in a SCSI device's VPD page 0x80 (Unit Serial
/// Number), parsed as the disk survey does ([`imaging::disk::vpd_unit_serial`]).
fn vpd_serial(device: &Path) -> Option<String> {
    let page = std::fs::read(device.join("vpd_pg80")).ok()?;
    imaging::disk::vpd_unit_serial(&page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vpd_page_0x80_holds_the_serial() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut page = vec![0, 0x80, 0, 20];
        page.extend_from_slice(b"QM00001             ");
        std::fs::write(dir.path().join("vpd_pg80"), &page).expect("write");
        assert_eq!(vpd_serial(dir.path()).as_deref(), Some("QM00001"));
        assert_eq!(vpd_serial(&dir.path().join("none")), None);
    }
}
