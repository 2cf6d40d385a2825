//! Network configuration on new hardware: static addresses to DHCP
//! (`ferry adapt --network dhcp`), the interface names a configuration
//! uses, and renames, pins and MAC swaps to keep them.
//!
//! One module per format: [`ifupdown`], [`netplan`], [`keyfile`]
//! (NetworkManager), [`networkd`]. Each has `to_dhcp(text)` and
//! `interface_names(text)`; [`identity`] renames interfaces and swaps MACs
//! in all of them; [`link`] writes systemd `.link` pins and recognizes
//! udev's persistent-net rules.
//!
//! What no longer applies is commented out behind
//! `# ferry: static setting replaced by DHCP: `, never deleted.

mod ini;

pub mod identity;
pub mod ifupdown;
pub mod keyfile;
pub mod link;
pub mod netplan;
pub mod networkd;

/// Why a static setting changes.
pub(crate) const DHCP_NOTE: &str = "static setting replaced by DHCP";
