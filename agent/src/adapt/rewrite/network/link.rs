//! Pinning interface names to the new NICs, and udev's persistent-net
//! rules.
//!
//! To keep the names a configuration uses (see each format's
//! `interface_names`), the caller writes one [`pin_link_file`] per name
//! into `/etc/systemd/network/` (named by [`link_file_name`]) and rebuilds
//! the initramfs, which copies `.link` files, so that the names hold from
//! early boot. Limits: `MACAddress=` also matches bonds and VLANs that
//! take the NIC's MAC (systemd ≥ 245 could use `PermanentMACAddress=`),
//! and a kernel-style name (`eth0`) can race with the kernel's own naming;
//! systemd renames around that but warns.
//!
//! `/etc/udev/rules.d/70-persistent-net.rules` (written by udev before
//! systemd's predictable names) binds `ethN` to the old MACs: new NICs get
//! the next free numbers. In DHCP mode the caller deletes it (see
//! [`is_persistent_net_rules`]); to keep the names it either deletes it
//! and pins, or swaps the MACs in it with
//! [`replace_mac`](super::identity::replace_mac).

use std::path::Path;

/// Where udev's generated persistent-net rules live, relative to the root.
pub const PERSISTENT_NET_RULES: &str = "etc/udev/rules.d/70-persistent-net.rules";

/// The content of a systemd `.link` file giving the NIC with `mac` the
/// name `name`.
pub fn pin_link_file(name: &str, mac: &str) -> String {
    format!(
        "# Written by ferry: keeps the interface name {name} that the moved system uses.\n\
         [Match]\n\
         MACAddress={mac}\n\
         \n\
         [Link]\n\
         Name={name}\n",
        mac = mac.to_ascii_lowercase()
    )
}

/// The file name for [`pin_link_file`]: sorts before systemd's
/// `99-default.link`, which would otherwise name the NIC.
pub fn link_file_name(name: &str) -> String {
    format!("10-ferry-{name}.link")
}

/// Whether `path` (absolute, or relative to a mounted root) is udev's
/// persistent-net rules file, which binds interface names to the old MACs
/// and is deleted when converting to DHCP.
pub fn is_persistent_net_rules(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let dir = path
        .parent()
        .map(|p| p.ends_with("etc/udev/rules.d"))
        .unwrap_or(false);
    dir && name.ends_with("-persistent-net.rules")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_file_matches_the_mac_and_sets_the_name() {
        let text = pin_link_file("ens3", "52:54:00:AB:CD:EF");
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "[Match]",
                "MACAddress=52:54:00:ab:cd:ef",
                "",
                "[Link]",
                "Name=ens3"
            ]
        );
        assert_eq!(link_file_name("ens3"), "10-ferry-ens3.link");
        assert!(link_file_name("x").as_str() < "99-default.link");
    }

    #[test]
    fn persistent_net_rules_are_recognized() {
        let cases = [
            ("/etc/udev/rules.d/70-persistent-net.rules", true),
            ("/mnt/target/etc/udev/rules.d/70-persistent-net.rules", true),
            ("etc/udev/rules.d/70-persistent-net.rules", true),
            ("/lib/udev/rules.d/75-persistent-net-generator.rules", false),
            ("/etc/udev/rules.d/70-persistent-cd.rules", false),
            ("/etc/udev/rules.d/99-custom.rules", false),
        ];
        for (path, want) in cases {
            assert_eq!(is_persistent_net_rules(Path::new(path)), want, "{path}");
        }
        assert!(is_persistent_net_rules(Path::new(PERSISTENT_NET_RULES)));
    }
}
