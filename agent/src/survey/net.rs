//! Network interfaces backed by a device (ROOT/sys/class/net/*/device):
//! `lo`, bridges, bonds, tunnels and other virtual interfaces are left out.

use serde::{Deserialize, Serialize};

use super::pci::{self, PciDevice};
use super::sysfs::{attr, Sysfs};

/// One network interface card (or virtio-net device).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    /// Interface name when surveyed (`eth0`, `ens3`).
    pub name: String,
    /// Its MAC address (`52:54:00:12:34:56`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The driver of its device (`e1000`, `virtio_net`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// The address of the PCI device it hangs off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci: Option<String>,
}

/// The interfaces of ROOT/sys/class/net that have a device, by name.
pub(crate) fn scan(fs: &Sysfs, pci: &[PciDevice]) -> Vec<Nic> {
    let mut out = Vec::new();
    for (name, link) in fs.children(&fs.path("class/net")) {
        let Some(real) = fs.real(&link) else {
            continue;
        };
        let Some(device) = fs.real(&real.join("device")) else {
            continue;
        };
        out.push(Nic {
            mac: attr(&real.join("address")),
            driver: fs.driver(&device),
            pci: fs.display(&real).and_then(|p| pci::parent(pci, &p)),
            name,
        });
    }
    out
}
