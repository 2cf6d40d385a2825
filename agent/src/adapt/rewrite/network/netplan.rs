//! netplan (`/etc/netplan/*.yaml`), Ubuntu's network configuration,
//! edited line by line by indentation, without a YAML parser, so that
//! comments and layout stay.
//!
//! Handled: block-style mappings (`ethernets:` → `ens3:` → properties,
//! compact or indented sequences below a property, flow sequences on one
//! line). An interface written in flow style (`ens3: {addresses: …}`) is
//! left with a warning.
//!
//! [`to_dhcp`] works on every interface under `ethernets`, `bonds`,
//! `bridges`, `vlans` and `wifis` that has static `addresses`, `gateway4`,
//! `gateway6` or `routes`: those and its `nameservers` are commented out,
//! and `dhcp4: true` is set (and `dhcp6: true` when it had IPv6
//! addresses). Interfaces that already use DHCP keep their `nameservers`.

use super::DHCP_NOTE;
use crate::adapt::rewrite::document::{is_comment_or_blank, Document};
use crate::adapt::rewrite::edit::Rewritten;

/// The device types whose interfaces can take an address.
const DEVICE_TYPES: [&str; 5] = ["ethernets", "bonds", "bridges", "vlans", "wifis"];
/// The device types with hardware behind them.
const HARDWARE_TYPES: [&str; 2] = ["ethernets", "wifis"];
/// Properties of a static configuration.
const STATIC_KEYS: [&str; 4] = ["addresses", "gateway4", "gateway6", "routes"];

/// One line's indentation, key and inline value (`key: value`).
#[derive(Debug)]
struct Line<'a> {
    indent: usize,
    key: Option<&'a str>,
    value: &'a str,
}

fn parse(line: &str) -> Option<Line<'_>> {
    if is_comment_or_blank(line) {
        return None;
    }
    let body = line.trim_start_matches(' ');
    let indent = line.len() - body.len();
    let body = body.trim_end();
    let key = body
        .split_once(": ")
        .map(|(k, _)| k)
        .or_else(|| body.strip_suffix(':'))
        .filter(|k| !k.starts_with('-') && !k.starts_with('{') && !k.starts_with('['));
    let value = key.map_or("", |k| body[k.len() + 1..].trim());
    let key = key.map(|k| k.trim_matches(|c| c == '"' || c == '\''));
    Some(Line { indent, key, value })
}

/// A block: a line and the lines below it (deeper, or `- ` items at the
/// same indentation), as 0-based line numbers `start..end`.
#[derive(Debug)]
struct Block {
    start: usize,
    end: usize,
}

/// The end of the block that starts at line `start` with `indent`.
fn block_end(doc: &Document, start: usize, indent: usize) -> usize {
    let mut end = start + 1;
    for i in start + 1..doc.len() {
        let line = doc.line(i);
        let Some(parsed) = parse(line) else {
            continue;
        };
        let item = line.trim_start().starts_with("- ") || line.trim() == "-";
        if parsed.indent > indent || (parsed.indent == indent && item) {
            end = i + 1;
        } else {
            break;
        }
    }
    end
}

/// The keyed children of the block at `parent`: (line, block).
fn children(doc: &Document, parent: &Block) -> Vec<(usize, Block)> {
    let mut out = Vec::new();
    let mut child_indent = None;
    let mut i = parent.start + 1;
    while i < parent.end {
        let Some(line) = parse(doc.line(i)) else {
            i += 1;
            continue;
        };
        let indent = *child_indent.get_or_insert(line.indent);
        let end = block_end(doc, i, indent);
        if line.indent == indent && line.key.is_some() {
            out.push((i, Block { start: i, end }));
        }
        i = end;
    }
    out
}

/// One interface: its device type, key line and block.
struct Interface {
    device_type: String,
    id: String,
    block: Block,
}

fn interfaces(doc: &Document) -> Vec<Interface> {
    let mut out = Vec::new();
    for i in 0..doc.len() {
        let Some(Line {
            indent,
            key: Some(key),
            ..
        }) = parse(doc.line(i))
        else {
            continue;
        };
        if !DEVICE_TYPES.contains(&key) {
            continue;
        }
        let section = Block {
            start: i,
            end: block_end(doc, i, indent),
        };
        for (line, block) in children(doc, &section) {
            let id = parse(doc.line(line))
                .and_then(|l| l.key)
                .unwrap_or_default();
            out.push(Interface {
                device_type: key.to_string(),
                id: id.to_string(),
                block,
            });
        }
    }
    out
}

/// The property `key` of an interface: its line, block and inline value.
fn property<'d>(doc: &'d Document, iface: &Interface, key: &str) -> Option<(Block, &'d str)> {
    children(doc, &iface.block)
        .into_iter()
        .find_map(|(line, block)| {
            let parsed = parse(doc.line(line))?;
            (parsed.key == Some(key)).then_some((block, parsed.value))
        })
}

fn truthy(value: &str) -> bool {
    ["true", "yes", "on", "y"].contains(&value.to_ascii_lowercase().as_str())
}

/// Converts static interfaces to DHCP (see the module documentation).
pub fn to_dhcp(text: &str) -> Rewritten {
    let mut doc = Document::new("/etc/netplan/*.yaml", text);
    for iface in interfaces(&doc) {
        let key_line = iface.block.start;
        let flow = parse(doc.line(key_line)).is_some_and(|l| !l.value.is_empty());
        if flow {
            doc.warn(format!(
                "line {}: {} is written in flow style; not converted to DHCP",
                key_line + 1,
                iface.id
            ));
            continue;
        }
        let mut blocks: Vec<Block> = STATIC_KEYS
            .iter()
            .filter_map(|k| property(&doc, &iface, k))
            .filter(|(_, value)| *value != "[]")
            .map(|(block, _)| block)
            .collect();
        if blocks.is_empty() {
            continue;
        }
        let ipv6 = blocks.iter().any(|b| has_ipv6(&doc, b));
        let child_indent = children(&doc, &iface.block)
            .first()
            .and_then(|(line, _)| parse(doc.line(*line)))
            .map_or(0, |l| l.indent);
        blocks.extend(property(&doc, &iface, "nameservers").map(|(b, _)| b));
        for block in &blocks {
            for i in block.start..block.end {
                if !is_comment_or_blank(doc.line(i)) {
                    doc.comment_out(i, DHCP_NOTE);
                }
            }
        }
        set_true(&mut doc, &iface, child_indent, "dhcp4");
        if ipv6 {
            set_true(&mut doc, &iface, child_indent, "dhcp6");
        }
        warn_mac(&mut doc, &iface);
    }
    doc.finish()
}

/// Whether a block holds an IPv6 address (`fd00::5/64`, `"::1"`).
fn has_ipv6(doc: &Document, block: &Block) -> bool {
    let separators = |c: char| c.is_whitespace() || "[],'\"{}".contains(c);
    (block.start..block.end).any(|i| {
        doc.line(i).split(separators).any(|token| {
            let token = token.trim_start_matches('-').trim_end_matches(':');
            let address = token.split('/').next().unwrap_or(token);
            address.parse::<std::net::Ipv6Addr>().is_ok()
        })
    })
}

/// Sets `key: true` on an interface (whose properties are indented by
/// `indent`), in place or as its first property.
fn set_true(doc: &mut Document, iface: &Interface, indent: usize, key: &str) {
    match property(doc, iface, key) {
        Some((_, value)) if truthy(value) => {}
        Some((block, _)) => {
            let line = doc.line(block.start);
            let indent = &line[..line.len() - line.trim_start().len()];
            let new = format!("{indent}{key}: true");
            doc.replace(block.start, new, DHCP_NOTE);
        }
        None => {
            let new = format!("{}{key}: true", " ".repeat(indent));
            doc.insert(Some(iface.block.start), new, DHCP_NOTE);
        }
    }
}

fn warn_mac(doc: &mut Document, iface: &Interface) {
    let Some((block, _)) = property(doc, iface, "match") else {
        return;
    };
    for i in block.start..block.end {
        if let Some(Line {
            key: Some("macaddress"),
            value,
            ..
        }) = parse(doc.line(i))
        {
            let warning = format!(
                "line {}: {} matches the MAC address {value}, which the new hardware does not have",
                i + 1,
                iface.id
            );
            doc.warn(warning);
        }
    }
}

/// The interface names the configuration uses, for `ethernets` and
/// `wifis`: the `set-name:` of an interface when it has one, else the
/// `name:` of its `match:` (unless a glob), else its id when it has no
/// `match:` (an id with a `match:` is only a label).
pub fn interface_names(text: &str) -> Vec<String> {
    let doc = Document::new("", text);
    let mut out: Vec<String> = Vec::new();
    for iface in interfaces(&doc) {
        if !HARDWARE_TYPES.contains(&iface.device_type.as_str()) {
            continue;
        }
        let set_name = property(&doc, &iface, "set-name").map(|(_, v)| v.to_string());
        let matched = property(&doc, &iface, "match").map(|(block, _)| {
            (block.start..block.end)
                .filter_map(|i| parse(doc.line(i)))
                .find(|l| l.key == Some("name"))
                .map(|l| l.value.trim_matches(|c| c == '"' || c == '\'').to_string())
                .filter(|n| !n.contains(['*', '?', '[']))
        });
        let name = match (set_name, matched) {
            (Some(set), _) => Some(set),
            (None, Some(matched)) => matched,
            (None, None) => Some(iface.id.clone()),
        };
        if let Some(name) = name.filter(|n| !out.contains(n)) {
            out.push(name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapt::rewrite::testmap::{assert_warnings, check_warned, unchanged};

    const NETPLAN: &str = "# This is the network config written by 'subiquity'
network:
  version: 2
  renderer: networkd
  ethernets:
    ens3:
      addresses:
      - 10.0.2.15/24
      - \"2001:db8::15/64\"
      gateway4: 10.0.2.2
      nameservers:
        addresses:
        - 10.0.2.3
        search: [example.com]
      routes:
        - to: 192.168.50.0/24
          via: 10.0.2.1
    ens4:
      dhcp4: true
      nameservers:
        addresses: [1.1.1.1]
    lan:
      match:
        macaddress: \"52:54:00:12:34:56\"
      set-name: lan0
      dhcp4: no
      addresses: [192.168.1.5/24]
  bridges:
    br0:
      interfaces: [ens5]

      addresses: [10.9.0.1/24]
";

    #[test]
    fn static_interfaces_become_dhcp() {
        let note = format!("# ferry: {DHCP_NOTE}: ");
        // Lines 7 to 17: ens3's addresses, gateway, name servers, routes.
        let ens3_old: String = NETPLAN
            .lines()
            .skip(6)
            .take(11)
            .map(|l| format!("{l}\n"))
            .collect();
        let ens3_new: String = ens3_old
            .lines()
            .map(|l| {
                let body = l.trim_start();
                format!("{}{note}{body}\n", &l[..l.len() - body.len()])
            })
            .collect();
        let ens3_new = format!("      dhcp4: true\n      dhcp6: true\n{ens3_new}");
        let lan = format!("      dhcp4: true\n      {note}addresses: [192.168.1.5/24]");
        let br0 = format!(
            "    br0:\n      dhcp4: true\n      interfaces: [ens5]\n\n      {note}addresses"
        );
        let out = check_warned(
            to_dhcp,
            NETPLAN,
            &[
                (&ens3_old, &ens3_new),
                ("      dhcp4: no\n      addresses: [192.168.1.5/24]", &lan),
                (
                    "    br0:\n      interfaces: [ens5]\n\n      addresses",
                    &br0,
                ),
            ],
            &[
                7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 28, 29, 32, 35,
            ],
        );
        assert_warnings(&out.warnings, &["lan matches the MAC address"]);
    }

    #[test]
    fn flow_style_interfaces_are_left_with_a_warning() {
        let text = "network:\n  ethernets:\n    ens3: {addresses: [10.0.0.2/24]}\n";
        assert_warnings(
            &unchanged(to_dhcp, text),
            &["line 3: ens3 is written in flow style"],
        );
    }

    #[test]
    fn interface_names_follow_set_name_and_match() {
        let text = "network:
  ethernets:
    id0:
      match:
        name: enp1s0
    id1:
      match:
        name: \"en*\"
    eth9: {}
  bonds:
    bond0:
      interfaces: [id0]
";
        assert_eq!(interface_names(text), ["enp1s0", "eth9"]);
        assert_eq!(interface_names(NETPLAN), ["ens3", "ens4", "lan0"]);
    }
}
