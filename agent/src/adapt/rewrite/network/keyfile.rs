//! NetworkManager keyfiles (`/etc/NetworkManager/system-connections/
//! *.nmconnection`, RHEL 9, Fedora, recent Ubuntu desktops).
//!
//! [`to_dhcp`] sets `method=auto` in `[ipv4]` and `[ipv6]` sections whose
//! method is `manual` and comments out their addresses, gateway, DNS,
//! routes and `ignore-auto-dns`/`ignore-auto-routes`. A profile bound to a MAC address (`mac-address=` in
//! `[ethernet]`) gets a warning: NetworkManager will not activate it on a
//! NIC with another MAC (see [`replace_mac`](super::identity::replace_mac)).
//! The caller keeps the file mode 0600, which NetworkManager requires.

use super::ini::{entries, with_value};
use super::DHCP_NOTE;
use crate::adapt::rewrite::document::Document;
use crate::adapt::rewrite::edit::Rewritten;

/// Whether a key of `[ipv4]`/`[ipv6]` belongs to a manual configuration.
fn is_static_key(key: &str) -> bool {
    let numbered = |prefix: &str| {
        key.strip_prefix(prefix)
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
    };
    ["address", "addresses", "route", "routes"]
        .iter()
        .any(|p| numbered(p))
        || key
            .strip_prefix("route")
            .is_some_and(|r| r.ends_with("_options"))
        || [
            "gateway",
            "dns",
            "dns-search",
            // These would make DHCP's name servers and routes unused.
            "ignore-auto-dns",
            "ignore-auto-routes",
        ]
        .contains(&key)
}

/// Converts manual IPv4 and IPv6 methods to `auto` (DHCP, SLAAC).
pub fn to_dhcp(text: &str) -> Rewritten {
    let mut doc = Document::new(
        "/etc/NetworkManager/system-connections/*.nmconnection",
        text,
    );
    let all = entries(&doc);
    for family in ["ipv4", "ipv6"] {
        let section: Vec<_> = all.iter().filter(|e| e.section == family).collect();
        let manual = section
            .iter()
            .find(|e| e.key == "method" && e.value == "manual");
        let Some(method) = manual else {
            continue;
        };
        let new = with_value(doc.line(method.line), "auto");
        doc.replace(method.line, new, DHCP_NOTE);
        for e in section.iter().filter(|e| is_static_key(&e.key)) {
            doc.comment_out(e.line, DHCP_NOTE);
        }
    }
    for e in all
        .iter()
        .filter(|e| e.section == "ethernet" && e.key == "mac-address")
    {
        doc.warn(format!(
            "line {}: the connection is bound to the MAC address {}, which the new hardware does not have",
            e.line + 1,
            e.value
        ));
    }
    doc.finish()
}

/// The interface the profile is for (`interface-name=` of
/// `[connection]`), when it names one.
pub fn interface_names(text: &str) -> Vec<String> {
    let doc = Document::new("", text);
    entries(&doc)
        .into_iter()
        .filter(|e| e.section == "connection" && e.key == "interface-name" && !e.value.is_empty())
        .map(|e| e.value)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapt::rewrite::testmap::{assert_warnings, check_warned};

    const KEYFILE: &str = "[connection]
id=Wired connection 1
uuid=2d4e6f80-1234-4abc-9def-0123456789ab
type=ethernet
autoconnect-priority=-999
interface-name=ens3

[ethernet]
mac-address=52:54:00:12:34:56

[ipv4]
address1=10.0.2.15/24,10.0.2.2
dns=10.0.2.3;
dns-search=example.com;
method=manual
route1=192.168.50.0/24,10.0.2.1
route1_options=mtu=1400

[ipv6]
addr-gen-mode=stable-privacy
method=auto

[proxy]
";

    #[test]
    fn manual_ipv4_becomes_auto() {
        let note = format!("# ferry: {DHCP_NOTE}: ");
        let commented = |l: &str| format!("{note}{l}");
        let out = check_warned(
            to_dhcp,
            KEYFILE,
            &[
                ("address1=", &commented("address1=")),
                ("dns=", &commented("dns=")),
                ("dns-search=", &commented("dns-search=")),
                ("method=manual", "method=auto"),
                ("route1=", &commented("route1=")),
                ("route1_options=", &commented("route1_options=")),
            ],
            &[12, 13, 14, 15, 16, 17],
        );
        assert_warnings(
            &out.warnings,
            &["line 9: the connection is bound to the MAC address 52:54:00:12:34:56"],
        );
    }

    #[test]
    fn manual_ipv6_becomes_auto_too() {
        let text = "[ipv6]\nmethod=manual\naddress1=2001:db8::15/64\ngateway=2001:db8::1\nignore-auto-dns=true\nip6-privacy=0\n";
        let out = to_dhcp(text);
        let c = |l: &str| format!("# ferry: {DHCP_NOTE}: {l}\n");
        let want = format!(
            "[ipv6]\nmethod=auto\n{}{}{}ip6-privacy=0\n",
            c("address1=2001:db8::15/64"),
            c("gateway=2001:db8::1"),
            c("ignore-auto-dns=true")
        );
        assert_eq!(out.text, want);
    }

    #[test]
    fn the_interface_name_is_found() {
        assert_eq!(interface_names(KEYFILE), ["ens3"]);
        assert!(interface_names("[connection]\nid=x\n").is_empty());
    }
}
