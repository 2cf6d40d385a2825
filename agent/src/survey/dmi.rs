//! The machine's SMBIOS identity from ROOT/sys/class/dmi/id.
//!
//! `product_uuid` and `product_serial` are readable by root only; as
//! another user they are `None`, as is anything the firmware leaves blank.

use serde::{Deserialize, Serialize};

use super::sysfs::{attr, Sysfs};

/// SMBIOS system, board and BIOS strings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dmi {
    /// System manufacturer (`QEMU`, `Dell Inc.`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sys_vendor: Option<String>,
    /// Product name (`Standard PC (Q35 + ICH9, 2009)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_name: Option<String>,
    /// Product version (`pc-q35-7.2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_version: Option<String>,
    /// System UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_uuid: Option<String>,
    /// System serial number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_serial: Option<String>,
    /// Board manufacturer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub board_vendor: Option<String>,
    /// Board name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub board_name: Option<String>,
    /// BIOS/UEFI firmware vendor (`SeaBIOS`, `EDK II`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bios_vendor: Option<String>,
    /// Firmware version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bios_version: Option<String>,
    /// Firmware release date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bios_date: Option<String>,
}

/// Reads ROOT/sys/class/dmi/id; all `None` where it is missing.
pub(crate) fn read(fs: &Sysfs) -> Dmi {
    let Some(dir) = fs.real(&fs.path("class/dmi/id")) else {
        return Dmi::default();
    };
    let get = |name: &str| attr(&dir.join(name));
    Dmi {
        sys_vendor: get("sys_vendor"),
        product_name: get("product_name"),
        product_version: get("product_version"),
        product_uuid: get("product_uuid"),
        product_serial: get("product_serial"),
        board_vendor: get("board_vendor"),
        board_name: get("board_name"),
        bios_vendor: get("bios_vendor"),
        bios_version: get("bios_version"),
        bios_date: get("bios_date"),
    }
}
