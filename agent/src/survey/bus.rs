//! Devices on the buses other than PCI that drivers bind to: virtio,
//! vmbus (Hyper-V), xen, acpi, platform, scsi and usb, each linked to the
//! PCI device it hangs off (a virtio device to its virtio-pci function, a
//! SCSI disk to its HBA).

use serde::{Deserialize, Serialize};

use super::pci::{self, PciDevice};
use super::sysfs::{attr, Sysfs};

/// The buses surveyed besides PCI, where present.
pub const BUSES: [&str; 7] = ["virtio", "vmbus", "xen", "acpi", "platform", "scsi", "usb"];

/// The virtio device IDs of storage and network devices: net (1),
/// block (2), SCSI host (8).
const VIRTIO_STORAGE_AND_NETWORK: [u32; 3] = [1, 2, 8];

/// A device on one of [`BUSES`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusDevice {
    /// The bus (`virtio`).
    pub bus: String,
    /// Its name on the bus (`virtio1`, `0:0:0:0`, `PNP0A03:00`).
    pub name: String,
    /// Its sysfs path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// What drivers match against (`virtio:d00000002v00001AF4`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modalias: Option<String>,
    /// The driver bound to it (`virtio_blk`, `sd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// The address of the PCI device it hangs off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci: Option<String>,
}

impl BusDevice {
    /// The virtio device ID from a `virtio:dXXXXXXXXvXXXXXXXX` modalias
    /// (1 net, 2 block, 8 SCSI host).
    pub fn virtio_id(&self) -> Option<u32> {
        let rest = self.modalias.as_deref()?.strip_prefix("virtio:d")?;
        u32::from_str_radix(rest.get(..8)?, 16).ok()
    }

    /// A virtio net, block or SCSI host device.
    pub fn is_virtio_storage_or_network(&self) -> bool {
        self.bus == "virtio"
            && self
                .virtio_id()
                .is_some_and(|id| VIRTIO_STORAGE_AND_NETWORK.contains(&id))
    }
}

/// The devices on [`BUSES`] that have a modalias or a bound driver (SCSI
/// hosts and targets, ACPI containers and the like have neither and are
/// left out), by bus then name.
pub(crate) fn scan(fs: &Sysfs, pci: &[PciDevice]) -> Vec<BusDevice> {
    let mut out = Vec::new();
    for bus in BUSES {
        for (name, link) in fs.children(&fs.path(&format!("bus/{bus}/devices"))) {
            let Some(real) = fs.real(&link) else {
                continue;
            };
            let modalias = attr(&real.join("modalias"));
            let driver = fs.driver(&real);
            if modalias.is_none() && driver.is_none() {
                continue;
            }
            let path = fs.display(&real);
            out.push(BusDevice {
                bus: bus.to_string(),
                name,
                pci: path.as_deref().and_then(|p| pci::parent(pci, p)),
                path,
                modalias,
                driver,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtio_ids_come_from_the_modalias() {
        let mut d = BusDevice {
            bus: "virtio".into(),
            name: "virtio0".into(),
            path: None,
            modalias: Some("virtio:d00000001v00001AF4".into()),
            driver: None,
            pci: None,
        };
        assert_eq!(d.virtio_id(), Some(1));
        assert!(d.is_virtio_storage_or_network());
        d.modalias = Some("virtio:d00000004v00001AF4".into()); // rng
        assert!(!d.is_virtio_storage_or_network());
        d.modalias = Some("virtio:dzz".into());
        assert_eq!(d.virtio_id(), None);
    }
}
