//! Boot Loader Specification entries (`/boot/loader/entries/*.conf`, as
//! Fedora, RHEL 8+ and systemd-boot write them): `root=`/`resume=` on the
//! `options` lines.
//!
//! Entries that carry `$kernelopts` take their options from grubenv
//! ([`rewrite_grubenv`](super::grub::rewrite_grubenv)); `/etc/kernel/cmdline`,
//! which kernel-install copies into new entries, is
//! [`rewrite_kernel_cmdline`](super::cmdline::rewrite_kernel_cmdline).

use super::cmdline::rewrite_line_from;
use super::devmap::DeviceMap;
use super::document::Document;
use super::edit::Rewritten;
use super::fields::fields;

/// Rewrites the `options` lines of a BLS entry.
pub fn rewrite_bls_entry(text: &str, map: &DeviceMap) -> Rewritten {
    let mut doc = Document::new("/boot/loader/entries/*.conf", text);
    for i in 0..doc.len() {
        let line = doc.line(i);
        let key = fields(line)
            .first()
            .map(|r| (r.end, &line[r.clone()] == "options"));
        if let Some((end, true)) = key {
            rewrite_line_from(&mut doc, i, end, map);
        }
    }
    doc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapt::rewrite::testmap::*;

    const ENTRY: &str = "title Rocky Linux (4.18.0-513.el8.x86_64) 8.9 (Green Obsidian)
version 4.18.0-513.el8.x86_64
linux /vmlinuz-4.18.0-513.el8.x86_64
initrd /initramfs-4.18.0-513.el8.x86_64.img $tuned_initrd
options root=/dev/sda2 ro crashkernel=auto resume=LABEL=home rhgb quiet $tuned_params
id rocky-20231120-4.18.0-513.el8.x86_64
grub_users $grub_users
grub_arg --unrestricted
grub_class rocky
";

    #[test]
    fn options_become_uuids() {
        let (root, home) = (format!("root={}", u(ROOT)), format!("resume={}", u(HOME)));
        let replacements = [
            ("root=/dev/sda2", root.as_str()),
            ("resume=LABEL=home", &home),
        ];
        check_sample(rewrite_bls_entry, ENTRY, &replacements, &[5]);
    }

    #[test]
    fn entries_with_kernelopts_are_unchanged() {
        let text = "title Fedora\nlinux /vmlinuz\noptions $kernelopts\n";
        assert!(unchanged_sample(rewrite_bls_entry, text).is_empty());
    }
}
