//! PCI devices: identity, class, modalias and bound driver, from
//! ROOT/sys/bus/pci/devices.

use serde::{Deserialize, Serialize};

use super::sysfs::{attr, hex, Sysfs};

/// One PCI function as sysfs describes it. IDs are lower-case hex without
/// `0x`, as `lspci -n` prints them (`8086`, class `010802`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciDevice {
    /// Domain:bus:device.function (`0000:00:04.0`).
    pub address: String,
    /// Its sysfs path (`/sys/devices/pci0000:00/0000:00:04.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Vendor ID (`1af4`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// Device ID (`1001`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Subsystem vendor ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subsystem_vendor: Option<String>,
    /// Subsystem device ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subsystem_device: Option<String>,
    /// Class, subclass and programming interface (`010802`: NVMe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// Revision (`02`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// What the kernel matches drivers against
    /// (`pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modalias: Option<String>,
    /// The driver bound to it (`virtio-pci`, `nvme`, `e1000e`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
}

impl PciDevice {
    /// The base class (`0x01` mass storage, `0x02` network), the first
    /// byte of [`class`](Self::class).
    pub fn base_class(&self) -> Option<u8> {
        let class = self.class.as_deref()?;
        let hi = class.len().checked_sub(4)?;
        u8::from_str_radix(class.get(..hi)?, 16).ok()
    }

    /// A mass storage (`01xx`) or network (`02xx`) controller.
    pub fn is_storage_or_network(&self) -> bool {
        matches!(self.base_class(), Some(0x01 | 0x02))
    }
}

/// Every device under ROOT/sys/bus/pci/devices, by address.
pub(crate) fn scan(fs: &Sysfs) -> Vec<PciDevice> {
    fs.children(&fs.path("bus/pci/devices"))
        .into_iter()
        .map(|(address, link)| {
            let real = fs.real(&link);
            let get = |name: &str| real.as_ref().and_then(|r| hex(&r.join(name)));
            PciDevice {
                path: real.as_deref().and_then(|r| fs.display(r)),
                vendor: get("vendor"),
                device: get("device"),
                subsystem_vendor: get("subsystem_vendor"),
                subsystem_device: get("subsystem_device"),
                class: get("class"),
                revision: get("revision"),
                modalias: real.as_ref().and_then(|r| attr(&r.join("modalias"))),
                driver: real.as_deref().and_then(|r| fs.driver(r)),
                address,
            }
        })
        .collect()
}

/// The address of the PCI device nearest above the sysfs path `path`
/// (`/sys/devices/pci0000:00/0000:00:04.0/virtio1` → `0000:00:04.0`).
pub(crate) fn parent(pci: &[PciDevice], path: &str) -> Option<String> {
    pci.iter()
        .filter_map(|d| {
            let p = d.path.as_deref()?;
            let below = path.strip_prefix(p)?.starts_with('/');
            below.then_some((p.len(), &d.address))
        })
        .max()
        .map(|(_, a)| a.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(address: &str, path: &str, class: &str) -> PciDevice {
        PciDevice {
            address: address.into(),
            path: Some(path.into()),
            vendor: None,
            device: None,
            subsystem_vendor: None,
            subsystem_device: None,
            class: Some(class.into()),
            revision: None,
            modalias: None,
            driver: None,
        }
    }

    #[test]
    fn the_nearest_pci_device_is_the_parent() {
        let pci = [
            dev(
                "0000:00:1c.0",
                "/sys/devices/pci0000:00/0000:00:1c.0",
                "060400",
            ),
            dev(
                "0000:01:00.0",
                "/sys/devices/pci0000:00/0000:00:1c.0/0000:01:00.0",
                "010802",
            ),
            dev(
                "0000:00:01.0",
                "/sys/devices/pci0000:00/0000:00:01.0",
                "030000",
            ),
        ];
        let nvme = "/sys/devices/pci0000:00/0000:00:1c.0/0000:01:00.0/nvme/nvme0/nvme0n1";
        assert_eq!(parent(&pci, nvme).as_deref(), Some("0000:01:00.0"));
        assert_eq!(parent(&pci, "/sys/devices/pci0000:00/0000:00:01.05"), None);
        assert_eq!(parent(&pci, "/sys/devices/platform/serial8250"), None);
        assert_eq!(pci[1].base_class(), Some(1));
        assert!(pci[1].is_storage_or_network());
        assert!(!pci[0].is_storage_or_network());
    }
}
