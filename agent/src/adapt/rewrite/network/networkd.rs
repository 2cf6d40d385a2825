//! systemd-networkd (`/etc/systemd/network/*.network`, also what netplan
//! renders to on servers).
//!
//! [`to_dhcp`] works on a file with a static address (`Address=` in
//! `[Network]` or an `[Address]` section): it comments out `Address=`,
//! `Gateway=`, `DNS=` and `Domains=` in `[Network]` and every `[Address]`
//! and `[Route]` section, and sets `DHCP=yes` (IPv4 and IPv6; router
//! advertisements stay on by default). A `[Match]` on `MACAddress=` or
//! `PermanentMACAddress=` gets a warning.

use super::ini::{entries, sections, with_value};
use super::DHCP_NOTE;
use crate::adapt::rewrite::document::Document;
use crate::adapt::rewrite::edit::Rewritten;

/// `[Network]` keys of a static configuration.
const STATIC_KEYS: [&str; 4] = ["Address", "Gateway", "DNS", "Domains"];

/// Converts a static configuration to `DHCP=yes`.
pub fn to_dhcp(text: &str) -> Rewritten {
    let mut doc = Document::new("/etc/systemd/network/*.network", text);
    let all = entries(&doc);
    let parts = sections(&doc);
    let has_static = all
        .iter()
        .any(|e| e.section == "Network" && e.key == "Address")
        || parts.iter().any(|s| s.name == "Address");
    for e in all
        .iter()
        .filter(|e| e.section == "Match" && e.key.ends_with("MACAddress"))
    {
        doc.warn(format!(
            "line {}: the file matches the MAC address {}, which the new hardware does not have",
            e.line + 1,
            e.value
        ));
    }
    if !has_static {
        return doc.finish();
    }
    for e in &all {
        let in_static_section = e.section == "Address" || e.section == "Route";
        if in_static_section || (e.section == "Network" && STATIC_KEYS.contains(&e.key.as_str())) {
            doc.comment_out(e.line, DHCP_NOTE);
        }
    }
    for s in parts
        .iter()
        .filter(|s| s.name == "Address" || s.name == "Route")
    {
        doc.comment_out(s.header, DHCP_NOTE);
    }
    let dhcp = all
        .iter()
        .find(|e| e.section == "Network" && e.key == "DHCP");
    let network = parts.iter().find(|s| s.name == "Network");
    match (dhcp, network) {
        (Some(e), _) if ["yes", "true", "on", "1", "both"].contains(&e.value.as_str()) => {}
        (Some(e), _) => {
            let new = with_value(doc.line(e.line), "yes");
            doc.replace(e.line, new, DHCP_NOTE);
        }
        (None, Some(s)) => doc.insert(Some(s.header), "DHCP=yes".into(), DHCP_NOTE),
        (None, None) => {
            doc.append(String::new(), DHCP_NOTE);
            doc.append("[Network]".into(), DHCP_NOTE);
            doc.append("DHCP=yes".into(), DHCP_NOTE);
        }
    }
    doc.finish()
}

/// The names `Name=` in `[Match]` lists, globs and negations left out.
pub fn interface_names(text: &str) -> Vec<String> {
    let doc = Document::new("", text);
    let mut out: Vec<String> = Vec::new();
    for e in entries(&doc)
        .into_iter()
        .filter(|e| e.section == "Match" && e.key == "Name")
    {
        for name in e.value.split_whitespace() {
            let pattern = name.starts_with('!') || name.contains(['*', '?', '[']);
            if !pattern && !out.iter().any(|o| o == name) {
                out.push(name.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapt::rewrite::testmap::{assert_warnings, check, unchanged};

    const NETWORK: &str = "[Match]
Name=ens3

[Network]
Address=10.0.2.15/24
Gateway=10.0.2.2
DNS=10.0.2.3
Domains=example.com
LLDP=yes

[Address]
Address=10.0.2.16/24

[Route]
Destination=192.168.50.0/24
Gateway=10.0.2.1
";

    #[test]
    fn static_addresses_become_dhcp() {
        let c = |l: &str| format!("# ferry: {DHCP_NOTE}: {l}");
        let network = format!("[Network]\nDHCP=yes\n{}", c("Address=10.0.2.15/24"));
        let route = format!("{}\n{}", c("[Route]"), c("Destination"));
        check(
            to_dhcp,
            NETWORK,
            &[
                ("[Network]\nAddress=10.0.2.15/24", &network),
                ("Gateway=10.0.2.2", &c("Gateway=10.0.2.2")),
                ("DNS=", &c("DNS=")),
                ("Domains=", &c("Domains=")),
                (
                    "[Address]\nAddress=10.0.2.16/24",
                    &format!("{}\n{}", c("[Address]"), c("Address=10.0.2.16/24")),
                ),
                ("[Route]\nDestination", &route),
                ("Gateway=10.0.2.1", &c("Gateway=10.0.2.1")),
            ],
            &[5, 6, 7, 8, 9, 12, 13, 15, 16, 17],
        );
    }

    #[test]
    fn an_existing_dhcp_setting_is_switched_on_or_a_section_added() {
        let c = |l: &str| format!("# ferry: {DHCP_NOTE}: {l}");
        let out = to_dhcp("[Network]\nDHCP=ipv6\nAddress=10.0.0.2/24\n");
        assert_eq!(
            out.text,
            format!("[Network]\nDHCP=yes\n{}\n", c("Address=10.0.0.2/24"))
        );
        let out = to_dhcp("[Match]\nName=eth0\n[Address]\nAddress=10.0.0.2/24\n");
        assert_eq!(
            out.text,
            format!(
                "[Match]\nName=eth0\n{}\n{}\n\n[Network]\nDHCP=yes\n",
                c("[Address]"),
                c("Address=10.0.0.2/24")
            )
        );
        assert!(to_dhcp(&out.text).edits.is_empty());
    }

    #[test]
    fn dhcp_files_stay_and_mac_matches_warn() {
        let text = "[Match]\nMACAddress=52:54:00:12:34:56\n\n[Network]\nDHCP=yes\n";
        assert_warnings(
            &unchanged(to_dhcp, text),
            &["line 2: the file matches the MAC address"],
        );
    }

    #[test]
    fn match_names_are_found() {
        assert_eq!(
            interface_names("[Match]\nName=ens3 en* !eth9 ens4\n"),
            ["ens3", "ens4"]
        );
    }
}
