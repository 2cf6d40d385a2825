//! The hardware survey: what a machine is made of, read from ROOT/sys and
//! ROOT/proc only (no tools run, no devices opened), so that tests point it
//! at a fixture tree captured from a real boot (`tests/fixtures/hw`).
//!
//! It records the firmware mode, every PCI device and the devices on the
//! other buses drivers bind to (both layers of virtio: the virtio-pci
//! function and the `virtio:d…v…` device under it), disks, NICs, DMI
//! strings, processors and memory. The OS-adaptation step asks it which
//! modaliases the target's storage and network need
//! ([`HardwareSurvey::storage_and_network_modaliases`]).
//!
//! Missing or unreadable attributes are `None` (or left out of the JSON);
//! the only error is a missing ROOT/sys. The serialised form carries
//! [`FORMAT_VERSION`].

mod block;
mod bus;
mod cpu;
mod dmi;
mod memory;
mod modalias;
mod net;
mod pci;
mod sysfs;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::plan::Firmware;
pub use block::Disk;
pub use bus::{BusDevice, BUSES};
pub use cpu::Cpu;
pub use dmi::Dmi;
pub use memory::Memory;
pub use net::Nic;
pub use pci::PciDevice;

/// The version of [`HardwareSurvey`]'s serialised form; raised when a
/// field changes meaning or goes away.
pub const FORMAT_VERSION: u32 = 1;

/// What a machine is made of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardwareSurvey {
    /// [`FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// How it booted: UEFI when ROOT/sys/firmware/efi exists.
    pub firmware: Firmware,
    /// Every PCI device, by address.
    pub pci: Vec<PciDevice>,
    /// Devices on the other [`BUSES`] with a modalias or a driver, by bus
    /// then name.
    pub devices: Vec<BusDevice>,
    /// Disks backed by hardware, by name.
    pub disks: Vec<Disk>,
    /// Network interfaces backed by a device, by name.
    pub nics: Vec<Nic>,
    /// SMBIOS identity.
    pub dmi: Dmi,
    /// Processors.
    pub cpu: Cpu,
    /// Memory.
    pub memory: Memory,
}

/// Why a survey failed.
#[derive(Debug, thiserror::Error)]
pub enum SurveyError {
    /// ROOT/sys is missing or not a directory: not a live root, or not a
    /// fixture tree.
    #[error("no sysfs at {}", path.display())]
    NoSysfs {
        /// The path looked at.
        path: PathBuf,
        /// Why it could not be used.
        #[source]
        source: std::io::Error,
    },
}

/// Surveys the machine whose /sys and /proc are under `root` (`/` for this
/// one).
pub fn survey(root: &Path) -> Result<HardwareSurvey, SurveyError> {
    let fs = sysfs::Sysfs::open(root)?;
    let firmware = if fs.path("firmware/efi").is_dir() {
        Firmware::Uefi
    } else {
        Firmware::Bios
    };
    let pci = pci::scan(&fs);
    Ok(HardwareSurvey {
        format_version: FORMAT_VERSION,
        firmware,
        devices: bus::scan(&fs, &pci),
        disks: block::scan(&fs, &pci),
        nics: net::scan(&fs, &pci),
        dmi: dmi::read(&fs),
        cpu: cpu::read(root),
        memory: memory::read(root),
        pci,
    })
}

#[cfg(test)]
mod tests;
