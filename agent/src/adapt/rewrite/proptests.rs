//! Properties of all rewrites over generated texts: what holds no device
//! reference stays byte for byte, and a second run changes nothing.

use proptest::prelude::*;

use super::devmap::{DeviceMap, Stabilized};
use super::edit::Rewritten;
use super::fstab::{rewrite_fstab, FstabOptions};
use super::hosts::{rewrite_hosts, HostEntry};
use super::testmap::sample;
use super::{bls, cmdline, crypttab, grub, network, resume};

/// Every rewrite, with the sample map where it takes one.
fn all_rewrites(text: &str) -> Vec<(&'static str, Rewritten)> {
    let map = sample();
    vec![
        ("fstab", rewrite_fstab(text, &map, &FstabOptions::default())),
        ("crypttab", crypttab::rewrite_crypttab(text, &map)),
        ("grub default", grub::rewrite_grub_default(text, &map)),
        ("grub.cfg", grub::rewrite_grub_cfg(text, &map)),
        ("menu.lst", grub::rewrite_menu_lst(text, &map)),
        ("grubenv", grub::rewrite_grubenv(text, &map)),
        ("bls", bls::rewrite_bls_entry(text, &map)),
        (
            "kernel cmdline",
            cmdline::rewrite_kernel_cmdline(text, &map),
        ),
        ("resume", resume::rewrite_initramfs_resume(text, &map)),
        ("hosts", rewrite_hosts(text, &[], None)),
        ("ifupdown", network::ifupdown::to_dhcp(text)),
        ("netplan", network::netplan::to_dhcp(text)),
        ("keyfile", network::keyfile::to_dhcp(text)),
        ("networkd", network::networkd::to_dhcp(text)),
    ]
}

/// Lines that name no device, no network file system type and no
/// keyword a rewrite acts on: no `/` or `=`, and no letters that spell
/// `nfs`, `iface`, `ethernets`, `[Network]` and the like.
fn inert_text() -> impl Strategy<Value = String> {
    "[a-exyz0-9 \t#,.:\\-\r\n]{0,400}"
}

fn fstab_line() -> impl Strategy<Value = String> {
    let spec = prop::sample::select(vec![
        "/dev/sda2",
        "/dev/sda5",
        "/dev/sdb1",
        "/dev/sdq1",
        "/dev/nvme0n1p3",
        "LABEL=home",
        "LABEL=twin",
        "UUID=4A1B-2C3D",
        "UUID=0000-0000",
        "/dev/disk/by-id/wwn-0x50014ee2b5a1c3d7-part1",
        "/dev/disk/by-path/pci-0000:00:1f.2-ata-1-part2",
        "/dev/mapper/vg-data",
        "nas:/export",
        "tmpfs",
        "# /dev/sda9 was here",
    ]);
    let mountpoint = prop::sample::select(vec!["/", "/usr", "/var", "/home", "/srv/x", "none"]);
    let fstype = prop::sample::select(vec!["ext4", "xfs", "swap", "nfs", "tmpfs", "vfat"]);
    let options = prop::sample::select(vec!["defaults", "noauto", "sw", "nofail,x", "_netdev"]);
    let sep = prop::sample::select(vec![" ", "\t", "   "]);
    (spec, mountpoint, fstype, options, sep, 0..3usize)
        .prop_map(|(s, m, t, o, sep, pass)| format!("{s}{sep}{m}{sep}{t}{sep}{o}{sep}0{sep}{pass}"))
}

fn host_entry() -> impl Strategy<Value = HostEntry> {
    let name = prop::sample::select(vec![
        "web1.prod.corp",
        "web1.test.corp",
        "web1",
        "db1.prod.corp",
        "app.corp",
        "localhost",
    ]);
    let address = prop::sample::select(vec!["10.1.0.5", "10.1.0.6", "fd00::5", "bad"]);
    (name, prop::collection::vec(address, 0..3)).prop_map(|(n, a)| HostEntry {
        name: n.to_string(),
        addresses: a.into_iter().map(str::to_string).collect(),
    })
}

fn hosts_line() -> impl Strategy<Value = String> {
    let address = prop::sample::select(vec![
        "127.0.0.1",
        "127.0.1.1",
        "::1",
        "10.0.0.5",
        "10.1.0.5",
    ]);
    let name = prop::sample::select(vec![
        "localhost",
        "web1.prod.corp",
        "web1.prod",
        "web1",
        "db1",
        "app.corp",
        "app",
        "other",
    ]);
    let comment = prop::sample::select(vec!["", " # note", "#"]);
    (address, prop::collection::vec(name, 0..4), comment)
        .prop_map(|(a, n, c)| format!("{a}\t{}{c}", n.join(" ")))
}

/// Active lines of a hosts text, as written.
fn active_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect()
}

proptest! {
    #[test]
    fn texts_without_references_stay_byte_for_byte(text in inert_text()) {
        for (name, out) in all_rewrites(&text) {
            prop_assert_eq!(&out.text, &text, "{}", name);
            prop_assert!(out.edits.is_empty(), "{}", name);
        }
    }

    /// Splitting and joining a command line loses nothing, quotes and
    /// odd spacing included (nothing resolves against an empty map).
    #[test]
    fn command_lines_survive_splitting(args in "[ -~\t]{0,200}") {
        let out = cmdline::rewrite_args(&args, &DeviceMap::default());
        prop_assert_eq!(out.text, args);
    }

    #[test]
    fn fstab_rewrites_are_idempotent_and_leave_no_resolvable_name(
        lines in prop::collection::vec(fstab_line(), 0..12),
        crlf in any::<bool>(),
    ) {
        let text = lines.join(if crlf { "\r\n" } else { "\n" });
        let map = sample();
        let once = rewrite_fstab(&text, &map, &FstabOptions::default());
        let twice = rewrite_fstab(&once.text, &map, &FstabOptions::default());
        prop_assert!(twice.edits.is_empty(), "{:?}", twice.edits);
        prop_assert_eq!(once.text.lines().count(), text.lines().count());
        for line in once.text.lines().filter(|l| !l.starts_with('#')) {
            let spec = line.split_whitespace().next().unwrap_or_default();
            prop_assert!(!matches!(map.stabilize(spec), Stabilized::Rewritten(_)), "{}", line);
        }
    }

    #[test]
    fn hosts_rewrites_are_idempotent_and_resolve_every_name(
        lines in prop::collection::vec(hosts_line(), 0..10),
        hosts in prop::collection::vec(host_entry(), 0..4),
        hostname in prop::option::of(prop::sample::select(vec!["web1.prod.corp", "app", "new"])),
    ) {
        let text = lines.join("\n");
        let once = rewrite_hosts(&text, &hosts, hostname);
        let twice = rewrite_hosts(&once.text, &hosts, hostname);
        prop_assert!(twice.edits.is_empty(), "{:?}\n{}", twice.edits, once.text);
        let active = active_lines(&once.text);
        let names_of = |address: &str| -> Vec<&str> {
            active
                .iter()
                .map(|l| l.split('#').next().unwrap_or_default().split_whitespace())
                .filter_map(|mut words| (words.next()? == address).then(|| words.collect::<Vec<_>>()))
                .flatten()
                .collect()
        };
        for host in hosts.iter().filter(|h| h.name != "localhost") {
            for address in host.addresses.iter().filter(|a| a.as_str() != "bad") {
                let names = names_of(address);
                prop_assert!(names.contains(&host.name.as_str()), "{} {}:\n{}", address, host.name, once.text);
            }
        }
        if let Some(hostname) = hostname {
            let resolvable = active
                .iter()
                .any(|l| l.split('#').next().unwrap_or_default().split_whitespace().skip(1).any(|n| n == hostname));
            prop_assert!(resolvable, "{} unresolvable in\n{}", hostname, once.text);
        }
    }
}
