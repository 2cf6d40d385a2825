//! The second, virtio-bus step behind a virtio PCI device.
//!
//! A virtio device on PCI needs two drivers: `virtio_pci` claims the PCI
//! function (`pci:v00001AF4d00001001…`), then registers a device on the
//! virtio bus (`virtio:d00000002v00001AF4`), which the device-class driver
//! (`virtio_blk`, `virtio_net`, `virtio_scsi`, …) claims. A survey of a
//! running machine sees both modaliases; a plan made from the PCI id alone
//! derives the second with [`virtio_bus_modalias`], as the kernel's
//! `virtio_pci` does:
//!
//! - transitional (legacy) devices, PCI device ids 0x1000–0x103f: the virtio
//!   device id is the PCI subsystem device id, or, when the modalias has
//!   none (or 0), the id from the legacy table (0x1000 net=1, 0x1001
//!   block=2, 0x1002 balloon=5, 0x1003 console=3, 0x1004 scsi=8, 0x1005
//!   rng=4, 0x1009 9p=9);
//! - modern devices, PCI device ids 0x1040–0x107f: the virtio device id is
//!   the PCI device id minus 0x1040;
//! - the virtio vendor is the PCI subsystem vendor (0x1AF4 when absent).

/// Red Hat's PCI vendor id, which all virtio PCI devices carry.
const VIRTIO_PCI_VENDOR: u32 = 0x1AF4;

/// Transitional PCI device id → virtio device id, for modaliases without a
/// subsystem device id (the virtio 1.0 spec, "Legacy Interfaces").
const LEGACY_DEVICE_IDS: [(u32, u32); 7] = [
    (0x1000, 1),
    (0x1001, 2),
    (0x1002, 5),
    (0x1003, 3),
    (0x1004, 8),
    (0x1005, 4),
    (0x1009, 9),
];

/// The fields of a `pci:` modalias that the derivation needs.
struct PciIds {
    vendor: u32,
    device: u32,
    subsystem_vendor: Option<u32>,
    subsystem_device: Option<u32>,
}

/// Reads the 8-hex-digit field after `tag` at the start of `text`.
fn field<'a>(text: &'a str, tag: &str) -> Option<(u32, &'a str)> {
    let rest = text.strip_prefix(tag)?;
    let digits = rest.get(..8)?;
    let value = u32::from_str_radix(digits, 16).ok()?;
    Some((value, &rest[8..]))
}

/// Parses `pci:v<8>d<8>[sv<8>sd<8>…]`.
fn parse_pci(modalias: &str) -> Option<PciIds> {
    let rest = modalias.strip_prefix("pci:")?;
    let (vendor, rest) = field(rest, "v")?;
    let (device, rest) = field(rest, "d")?;
    let subsystem = field(rest, "sv").and_then(|(sv, rest)| Some((sv, field(rest, "sd")?.0)));
    Some(PciIds {
        vendor,
        device,
        subsystem_vendor: subsystem.map(|(sv, _)| sv),
        subsystem_device: subsystem.map(|(_, sd)| sd),
    })
}

/// The virtio-bus modalias (`virtio:d<device>v<vendor>`) of the device that
/// `virtio_pci` registers for this PCI modalias, or `None` when the
/// modalias is not a virtio PCI device.
pub fn virtio_bus_modalias(pci_modalias: &str) -> Option<String> {
    let ids = parse_pci(pci_modalias.trim())?;
    if ids.vendor != VIRTIO_PCI_VENDOR {
        return None;
    }
    let device = match ids.device {
        0x1000..=0x103f => match ids.subsystem_device {
            Some(sd) if sd != 0 => sd,
            _ => LEGACY_DEVICE_IDS
                .iter()
                .find(|(pci, _)| *pci == ids.device)
                .map(|(_, virtio)| *virtio)?,
        },
        0x1040..=0x107f => ids.device - 0x1040,
        _ => return None,
    };
    let vendor = ids.subsystem_vendor.unwrap_or(VIRTIO_PCI_VENDOR);
    Some(format!("virtio:d{device:08X}v{vendor:08X}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts each `(pci, virtio)` derivation.
    fn check(rows: &[(&str, &str)]) {
        for (pci, virtio) in rows {
            assert_eq!(virtio_bus_modalias(pci).as_deref(), Some(*virtio), "{pci}");
        }
    }

    #[test]
    fn qemu_transitional_devices() {
        // virtio-blk, virtio-net, virtio-scsi, virtio-rng, balloon, 9p
        check(&[
            (
                "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00",
                "virtio:d00000002v00001AF4",
            ),
            (
                "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
                "virtio:d00000001v00001AF4",
            ),
            (
                "pci:v00001AF4d00001004sv00001AF4sd00000008bc01sc00i00",
                "virtio:d00000008v00001AF4",
            ),
            (
                "pci:v00001AF4d00001005sv00001AF4sd00000004bc00scFFi00",
                "virtio:d00000004v00001AF4",
            ),
            (
                "pci:v00001AF4d00001002sv00001AF4sd00000005bc00scFFi00",
                "virtio:d00000005v00001AF4",
            ),
            (
                "pci:v00001AF4d00001009sv00001AF4sd00000009bc00sc02i00",
                "virtio:d00000009v00001AF4",
            ),
        ]);
    }

    #[test]
    fn legacy_table_without_subsystem_ids() {
        check(&[
            ("pci:v00001AF4d00001003", "virtio:d00000003v00001AF4"),
            (
                "pci:v00001AF4d00001001sv00001AF4sd00000000bc01sc00i00",
                "virtio:d00000002v00001AF4",
            ),
        ]);
        // A transitional id the legacy table does not know.
        assert_eq!(virtio_bus_modalias("pci:v00001AF4d00001010"), None);
    }

    #[test]
    fn modern_devices() {
        check(&[
            (
                "pci:v00001AF4d00001042sv00001AF4sd00001100bc01sc00i00",
                "virtio:d00000002v00001AF4",
            ),
            (
                "pci:v00001AF4d00001041sv00001234sd00001100bc02sc00i00",
                "virtio:d00000001v00001234",
            ),
            (
                "pci:v00001AF4d00001050sv00001AF4sd00001100bc03sc80i00",
                "virtio:d00000010v00001AF4",
            ),
        ]);
    }

    #[test]
    fn other_devices_have_no_virtio_layer() {
        for alias in [
            "pci:v00008086d0000100Esv00008086sd0000001Ebc02sc00i00",
            "pci:v00001AF4d00001100sv00001AF4sd00001100bc05sc00i00",
            "pci:v00001AF4d00000FFF",
            "virtio:d00000002v00001AF4",
            "pci:v00001AF4",
            "pci:vZZZZZZZZd00001001",
            "",
        ] {
            assert_eq!(virtio_bus_modalias(alias), None, "{alias}");
        }
    }
}
