//! ifupdown (`/etc/network/interfaces`, `interfaces.d/*`), Debian's and
//! Ubuntu's classic network configuration.
//!
//! [`to_dhcp`] turns `iface X inet static` into `inet dhcp` and
//! `inet6 static` into `inet6 auto` (SLAAC, with stateless DHCPv6 when the
//! router says so), commenting out the address, netmask, gateway, DNS and
//! similar options. `auto` and `allow-*` lines and options that DHCP does
//! not replace (`mtu`, `hwaddress`, `bridge_*`, `bond-*`, …) stay. A
//! `accept_ra`/`autoconf` of an IPv6 stanza go too (they would keep SLAAC
//! off). A second static stanza of the same interface and family, and alias
//! interfaces (`eth0:1`), are commented out whole (DHCP gives one address),
//! and the alias leaves the `auto` lines. `up`/`post-up` commands that add
//! routes or addresses stay, with a warning.

use std::collections::HashSet;

use super::DHCP_NOTE;
use crate::adapt::rewrite::document::{is_comment_or_blank, Document};
use crate::adapt::rewrite::edit::Rewritten;
use crate::adapt::rewrite::fields::{fields, replace_field};

/// IPv6 options that would keep SLAAC off.
const STATIC_OPTIONS_V6: [&str; 2] = ["accept_ra", "autoconf"];

/// Words that start a stanza; other lines are options of the last `iface`.
const STANZAS: [&str; 6] = [
    "iface",
    "mapping",
    "auto",
    "source",
    "source-directory",
    "rename",
];

/// Options a static address needs and DHCP provides.
const STATIC_OPTIONS: [&str; 11] = [
    "address",
    "netmask",
    "gateway",
    "broadcast",
    "network",
    "pointopoint",
    "scope",
    "dns-nameservers",
    "dns-nameserver",
    "dns-search",
    "dns-domain",
];

/// Options whose values name other interfaces.
const LINK_OPTIONS: [&str; 6] = [
    "bridge_ports",
    "bridge-ports",
    "bond-slaves",
    "bond_slaves",
    "vlan-raw-device",
    "vlan_raw_device",
];

/// A line's first word and whether it starts a stanza.
fn keyword(line: &str) -> Option<(&str, bool)> {
    if is_comment_or_blank(line) {
        return None;
    }
    let word = line.split_whitespace().next()?;
    Some((word, STANZAS.contains(&word) || word.starts_with("allow-")))
}

/// The stanza lines: (first line, lines after the last one).
fn stanzas(doc: &Document) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for i in 0..doc.len() {
        if let Some((_, true)) = keyword(doc.line(i)) {
            if let Some(last) = out.last_mut() {
                last.1 = i;
            }
            out.push((i, doc.len()));
        }
    }
    out
}

/// Converts static addresses to DHCP (IPv4) and SLAAC (IPv6).
pub fn to_dhcp(text: &str) -> Rewritten {
    let mut doc = Document::new("/etc/network/interfaces", text);
    let mut seen = HashSet::new();
    let mut dropped = Vec::new();
    for (start, end) in stanzas(&doc) {
        let line = doc.line(start).to_string();
        let ranges = fields(&line);
        let words: Vec<&str> = ranges.iter().map(|r| &line[r.clone()]).collect();
        let ["iface", name, family @ ("inet" | "inet6"), method, ..] = words[..] else {
            continue;
        };
        let first = seen.insert((name.to_string(), family.to_string()));
        if method != "static" {
            continue;
        }
        if !first || name.contains(':') {
            for i in start..end {
                if !is_comment_or_blank(doc.line(i)) {
                    doc.comment_out(i, &format!("{DHCP_NOTE} (DHCP gives {name} one address)"));
                }
            }
            if name.contains(':') {
                dropped.push(name.to_string());
            }
            continue;
        }
        let new_method = if family == "inet" { "dhcp" } else { "auto" };
        doc.replace(
            start,
            replace_field(&line, &ranges, 3, new_method),
            DHCP_NOTE,
        );
        for i in start + 1..end {
            let option = doc.line(i).split_whitespace().next().unwrap_or_default();
            let v6_only = family == "inet6" && STATIC_OPTIONS_V6.contains(&option);
            if STATIC_OPTIONS.contains(&option) || v6_only {
                doc.comment_out(i, DHCP_NOTE);
            } else if is_route_command(doc.line(i)) {
                doc.warn(format!(
                    "line {}: {name} runs a command that may assume its static address: {}",
                    i + 1,
                    doc.line(i).trim()
                ));
            }
        }
    }
    drop_from_auto(&mut doc, &dropped);
    doc.finish()
}

/// `up ip route add …`, `post-up route add …`, `up ip addr add …`.
fn is_route_command(line: &str) -> bool {
    let mut words = line.split_whitespace();
    let hook = words.next().unwrap_or_default();
    ["up", "post-up", "pre-up"].contains(&hook)
        && words.any(|w| ["route", "addr", "address"].contains(&w))
}

/// Takes `names` off `auto` and `allow-*` lines; a line left empty is
/// commented out.
fn drop_from_auto(doc: &mut Document, names: &[String]) {
    if names.is_empty() {
        return;
    }
    for i in 0..doc.len() {
        let line = doc.line(i).to_string();
        let Some((word, true)) = keyword(&line) else {
            continue;
        };
        if word != "auto" && !word.starts_with("allow-") {
            continue;
        }
        let ranges = fields(&line);
        let keep: Vec<&str> = ranges[1..]
            .iter()
            .map(|r| &line[r.clone()])
            .filter(|n| !names.iter().any(|d| d == n))
            .collect();
        if keep.len() + 1 == ranges.len() {
            continue;
        }
        if keep.is_empty() {
            doc.comment_out(i, DHCP_NOTE);
        } else {
            let indent = &line[..ranges[0].start];
            doc.replace(i, format!("{indent}{word} {}", keep.join(" ")), DHCP_NOTE);
        }
    }
}

/// The interface names the configuration uses, in order of appearance:
/// `iface`, `auto`, `allow-*` and `mapping` names and the interfaces that
/// bridges, bonds and VLANs name. `lo` and `none` are left out, alias
/// suffixes (`eth0:1`) dropped, and a VLAN interface (`eth0.100`) also
/// brings its raw device (`eth0`). Bridges and bonds are listed too: only
/// the caller knows which names are hardware.
pub fn interface_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |name: &str| {
        let name = name.split(':').next().unwrap_or(name);
        let base = name.split_once('.').map(|(b, _)| b);
        for n in base.into_iter().chain([name]) {
            if !["lo", "none", "all", ""].contains(&n) && !out.iter().any(|o| o == n) {
                out.push(n.to_string());
            }
        }
    };
    for line in text.lines() {
        let Some((word, starts)) = keyword(line) else {
            continue;
        };
        let words = line.split_whitespace().skip(1);
        match (word, starts) {
            ("iface" | "mapping", true) => words.take(1).for_each(&mut add),
            ("auto", true) => words.for_each(&mut add),
            (w, true) if w.starts_with("allow-") => words.for_each(&mut add),
            (w, false) if LINK_OPTIONS.contains(&w) => words.for_each(&mut add),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapt::rewrite::testmap::{assert_warnings, check_warned, unchanged};

    const INTERFACES: &str = "# This file describes the network interfaces available on your system
# and how to activate them. For more information, see interfaces(5).

source /etc/network/interfaces.d/*

# The loopback network interface
auto lo
iface lo inet loopback

# The primary network interface
allow-hotplug ens3
iface ens3 inet static
\taddress 10.0.2.15/24
\tgateway 10.0.2.2
\t# dns-* options are implemented by the resolvconf package, if installed
\tdns-nameservers 10.0.2.3
\tdns-search example.com
\tmtu 1450
\tup ip route add 192.168.50.0/24 via 10.0.2.1

iface ens3 inet6 static
\taddress 2001:db8::15/64
\tgateway 2001:db8::1
\taccept_ra 0

auto ens3:1 br0
iface ens3:1 inet static
\taddress 10.0.2.16/24

iface ens3 inet static
\taddress 10.0.2.17/24

iface br0 inet dhcp
\tbridge_ports ens4 ens5.100
";

    #[test]
    fn static_stanzas_become_dhcp() {
        let note = |s: &str| format!("\t# ferry: {DHCP_NOTE}: {s}");
        let whole = |s: &str| format!("# ferry: {DHCP_NOTE} (DHCP gives {s} one address): ");
        let out = check_warned(
            to_dhcp,
            INTERFACES,
            &[
                (
                    "iface ens3 inet static\n\taddress 10.0.2.15",
                    "iface ens3 inet dhcp\n\taddress 10.0.2.15",
                ),
                ("\taddress 10.0.2.15/24", &note("address 10.0.2.15/24")),
                ("\tgateway 10.0.2.2", &note("gateway 10.0.2.2")),
                (
                    "\tdns-nameservers 10.0.2.3",
                    &note("dns-nameservers 10.0.2.3"),
                ),
                ("\tdns-search example.com", &note("dns-search example.com")),
                ("iface ens3 inet6 static", "iface ens3 inet6 auto"),
                (
                    "\taddress 2001:db8::15/64",
                    &note("address 2001:db8::15/64"),
                ),
                ("\tgateway 2001:db8::1", &note("gateway 2001:db8::1")),
                ("\taccept_ra 0", &note("accept_ra 0")),
                ("auto ens3:1 br0", "auto br0"),
                (
                    "iface ens3:1 inet static",
                    &format!("{}iface ens3:1 inet static", whole("ens3:1")),
                ),
                (
                    "\taddress 10.0.2.16/24",
                    &format!("\t{}address 10.0.2.16/24", whole("ens3:1")),
                ),
                (
                    "iface ens3 inet static\n",
                    &format!("{}iface ens3 inet static\n", whole("ens3")),
                ),
                (
                    "\taddress 10.0.2.17/24",
                    &format!("\t{}address 10.0.2.17/24", whole("ens3")),
                ),
            ],
            &[12, 13, 14, 16, 17, 21, 22, 23, 24, 26, 27, 28, 30, 31],
        );
        // The static route stays, with a warning.
        assert_warnings(&out.warnings, &["line 19: ens3 runs a command"]);
    }

    #[test]
    fn route_commands_are_warned_about() {
        let text = "iface ens3 inet static\n  address 10.0.2.15/24\n  post-up ip route add 10.9.0.0/16 via 10.0.2.1\n";
        let out = to_dhcp(text);
        assert_eq!(out.edits.len(), 2);
        assert_warnings(&out.warnings, &["line 3: ens3 runs a command"]);
    }

    #[test]
    fn dhcp_and_loopback_stay() {
        let text = "auto lo\niface lo inet loopback\nauto eth0\niface eth0 inet dhcp\n";
        assert!(unchanged(to_dhcp, text).is_empty());
    }

    #[test]
    fn interface_names_are_listed_once() {
        assert_eq!(
            interface_names(INTERFACES),
            ["ens3", "br0", "ens4", "ens5", "ens5.100"]
        );
    }
}
