//! The modaliases a survey found: all of them, or those the target's
//! storage and network need (what the OS-adaptation step must find drivers
//! for before the moved system can mount its root and reach the network).

use std::collections::BTreeSet;

use super::HardwareSurvey;

impl HardwareSurvey {
    /// Every modalias, PCI and other buses (both virtio layers), sorted and
    /// without duplicates.
    pub fn modaliases(&self) -> Vec<String> {
        let pci = self.pci.iter().filter_map(|d| d.modalias.as_deref());
        let other = self.devices.iter().filter_map(|d| d.modalias.as_deref());
        sorted(pci.chain(other))
    }

    /// The modaliases of mass storage (class `01xx`) and network (`02xx`)
    /// PCI devices, of the devices under them (their virtio device, the
    /// SCSI disks of an HBA), and of virtio block, net and SCSI devices
    /// wherever they are (virtio-mmio has no PCI layer); sorted, without
    /// duplicates.
    pub fn storage_and_network_modaliases(&self) -> Vec<String> {
        let controllers: BTreeSet<&str> = self
            .pci
            .iter()
            .filter(|d| d.is_storage_or_network())
            .map(|d| d.address.as_str())
            .collect();
        let pci = self
            .pci
            .iter()
            .filter(|d| controllers.contains(d.address.as_str()))
            .filter_map(|d| d.modalias.as_deref());
        let under = self
            .devices
            .iter()
            .filter(|d| {
                d.pci.as_deref().is_some_and(|a| controllers.contains(a))
                    || d.is_virtio_storage_or_network()
            })
            .filter_map(|d| d.modalias.as_deref());
        sorted(pci.chain(under))
    }
}

fn sorted<'a>(aliases: impl Iterator<Item = &'a str>) -> Vec<String> {
    let set: BTreeSet<&str> = aliases.collect();
    set.into_iter().map(str::to_string).collect()
}
