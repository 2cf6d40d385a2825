//! Substitutions that keep a network configuration bound to its interface
//! on new hardware: an interface name for another, an old MAC address for
//! the new one. They apply to every format here (ifupdown, netplan,
//! NetworkManager keyfiles, systemd-networkd `.network` and `.link` files,
//! udev's `70-persistent-net.rules`), on all lines but comments.

use super::ini::is_comment;
use crate::adapt::rewrite::document::Document;
use crate::adapt::rewrite::edit::Rewritten;

/// Characters that continue an interface name (`.` and `:` separate a VLAN
/// id or an alias, so `eth0.100` renames with `eth0`).
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Replaces every whole-word `old` interface name by `new` (also in
/// `old.100` and `old:1`).
pub fn rename_interface(text: &str, old: &str, new: &str) -> Rewritten {
    let reason = format!("interface {old} is called {new} on the new hardware");
    substitute(text, &reason, |line| {
        replace_words(line, old, new, is_name_char, |_| new.to_string())
    })
}

/// Replaces the MAC address `old` by `new` (either case, `:` separated),
/// writing `new` in upper case where the old one was, else in lower case.
pub fn replace_mac(text: &str, old: &str, new: &str) -> Rewritten {
    let reason = format!("the NIC with MAC address {old} is {new} on the new hardware");
    let is_mac_char = |c: char| c.is_ascii_hexdigit() || c == ':';
    substitute(text, &reason, |line| {
        replace_words(line, old, new, is_mac_char, |found| {
            if found.bytes().any(|b| b.is_ascii_uppercase()) {
                new.to_ascii_uppercase()
            } else {
                new.to_ascii_lowercase()
            }
        })
    })
}

fn substitute(text: &str, reason: &str, change: impl Fn(&str) -> String) -> Rewritten {
    let mut doc = Document::new("", text);
    for i in 0..doc.len() {
        if !is_comment(doc.line(i)) {
            let new = change(doc.line(i));
            doc.replace(i, new, reason);
        }
    }
    doc.finish()
}

/// `line` with each occurrence of `old` (ASCII case-insensitive) that no
/// `continues` character touches replaced by `with(found)`.
fn replace_words(
    line: &str,
    old: &str,
    new: &str,
    continues: impl Fn(char) -> bool,
    with: impl Fn(&str) -> String,
) -> String {
    if old.is_empty() || old == new {
        return line.to_string();
    }
    let lower = line.to_ascii_lowercase();
    let needle = old.to_ascii_lowercase();
    let mut out = String::with_capacity(line.len());
    let mut last = 0;
    for (at, _) in lower.match_indices(&needle) {
        let end = at + old.len();
        let before = line[..at].chars().next_back();
        let after = line[end..].chars().next();
        if before.is_some_and(&continues) || after.is_some_and(&continues) {
            continue;
        }
        out.push_str(&line[last..at]);
        out.push_str(&with(&line[at..end]));
        last = end;
    }
    out.push_str(&line[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_are_renamed_as_whole_words() {
        let cases = [
            ("auto eth0 eth01\niface eth0 inet dhcp\n", "auto ens3 eth01\niface ens3 inet dhcp\n"),
            ("iface eth0.100 inet manual\n  vlan-raw-device eth0\n", "iface ens3.100 inet manual\n  vlan-raw-device ens3\n"),
            ("iface eth0:1 inet static\n", "iface ens3:1 inet static\n"),
            ("    eth0:\n      dhcp4: true\n  bonds:\n    bond0:\n      interfaces: [eth0, eth1]\n", "    ens3:\n      dhcp4: true\n  bonds:\n    bond0:\n      interfaces: [ens3, eth1]\n"),
            ("[Match]\nName=eth0\n# eth0 stays in comments\n", "[Match]\nName=ens3\n# eth0 stays in comments\n"),
            ("interface-name=veth0\nid=my-eth0\n", "interface-name=veth0\nid=my-eth0\n"),
            ("up ip route add 10.0.0.0/8 dev eth0\n", "up ip route add 10.0.0.0/8 dev ens3\n"),
        ];
        for (text, want) in cases {
            let out = rename_interface(text, "eth0", "ens3");
            assert_eq!(out.text, want, "{text}");
            assert_eq!(out.changed(), text != want);
            assert!(rename_interface(&out.text, "eth0", "ens3").edits.is_empty());
        }
    }

    #[test]
    fn macs_are_replaced_in_their_case() {
        let old = "52:54:00:12:34:56";
        let new = "0A:0B:0C:0D:0E:0F";
        let cases = [
            (
                "MACAddress=52:54:00:12:34:56\n",
                "MACAddress=0a:0b:0c:0d:0e:0f\n",
            ),
            (
                "mac-address=52:54:00:12:34:56\n",
                "mac-address=0a:0b:0c:0d:0e:0f\n",
            ),
            (
                "SUBSYSTEM==\"net\", ATTR{address}==\"52:54:00:12:34:56\", NAME=\"eth0\"\n",
                "SUBSYSTEM==\"net\", ATTR{address}==\"0a:0b:0c:0d:0e:0f\", NAME=\"eth0\"\n",
            ),
            (
                "hwaddress ether 52:54:00:12:34:5600\n",
                "hwaddress ether 52:54:00:12:34:5600\n",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(replace_mac(text, old, new).text, want, "{text}");
        }
        let upper = replace_mac(
            "MACAddress=52:54:00:AB:CD:EF\n",
            "52:54:00:ab:cd:ef",
            "0a:0b:0c:0d:0e:0f",
        );
        assert_eq!(upper.text, "MACAddress=0A:0B:0C:0D:0E:0F\n");
    }
}
