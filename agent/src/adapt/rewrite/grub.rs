//! GRUB's copies of the kernel command line: `/etc/default/grub` (what
//! `grub-mkconfig` reads), `grub.cfg` (the fallback when it cannot be
//! regenerated), GRUB Legacy's `menu.lst` and RHEL 8's `grubenv`
//! (`kernelopts=`).
//!
//! Only the device parameters of [`cmdline`](super::cmdline) change.
//! `set root=`, `search --fs-uuid` and `hd0,msdos1` hints in `grub.cfg`
//! are GRUB's own and stay: `grub-install` and `grub-mkconfig` redo them.

use super::cmdline::{rewrite_line_from, rewrite_line_part};
use super::devmap::DeviceMap;
use super::document::{is_comment_or_blank, Document};
use super::edit::Rewritten;
use super::fields::fields;
use super::shell::assignment;

/// grub.cfg commands whose arguments are a kernel command line.
const KERNEL_COMMANDS: [&str; 5] = ["linux", "linux16", "linuxefi", "module", "module2"];

/// The size of a GRUB environment block, which must not change.
const GRUBENV_SIZE: usize = 1024;

/// Rewrites `root=`/`resume=` in the `GRUB_CMDLINE_*` variables of
/// `/etc/default/grub` (or a `/etc/default/grub.d/*.cfg` file). Warns
/// when `GRUB_DISABLE_LINUX_UUID=true` would make `grub-mkconfig` write
/// kernel device names again.
pub fn rewrite_grub_default(text: &str, map: &DeviceMap) -> Rewritten {
    let mut doc = Document::new("/etc/default/grub", text);
    for i in 0..doc.len() {
        let Some(a) = assignment(doc.line(i)) else {
            continue;
        };
        let disables_uuid =
            a.name == "GRUB_DISABLE_LINUX_UUID" && &doc.line(i)[a.value.clone()] == "true";
        let cmdline = a.name.starts_with("GRUB_CMDLINE_");
        let value = a.value;
        if disables_uuid {
            doc.warn(format!(
                "line {}: GRUB_DISABLE_LINUX_UUID=true makes grub-mkconfig write root=/dev/… names",
                i + 1
            ));
        }
        if cmdline {
            rewrite_line_part(&mut doc, i, value, map);
        }
    }
    doc.finish()
}

/// Sets `GRUB_DEFAULT` in `/etc/default/grub` to `value` (quoted), so
/// the kernel chosen for the new hardware boots by default; the line is
/// added when missing.
pub fn set_grub_default(text: &str, value: &str) -> Rewritten {
    let mut doc = Document::new("/etc/default/grub", text);
    let wanted = format!("GRUB_DEFAULT=\"{value}\"");
    let found =
        (0..doc.len()).find(|&i| assignment(doc.line(i)).is_some_and(|a| a.name == "GRUB_DEFAULT"));
    let reason = "the kernel that drives the new hardware boots by default";
    match found {
        Some(i) if doc.line(i) == wanted => {}
        Some(i) => doc.replace(i, wanted, reason),
        None => doc.append(wanted, reason),
    }
    doc.finish()
}

/// Rewrites `root=`/`resume=` on the `linux`, `linux16`, `linuxefi` and
/// `module` lines of a `grub.cfg`.
pub fn rewrite_grub_cfg(text: &str, map: &DeviceMap) -> Rewritten {
    let mut doc = Document::new("/boot/grub/grub.cfg", text);
    for i in 0..doc.len() {
        let ranges = fields(doc.line(i));
        let Some(command) = ranges.first() else {
            continue;
        };
        if KERNEL_COMMANDS.contains(&&doc.line(i)[command.clone()]) {
            rewrite_line_from(&mut doc, i, command.end, map);
        }
    }
    doc.finish()
}

/// Rewrites GRUB Legacy's `menu.lst`: `root=`/`resume=` on `kernel` lines
/// and in Debian's `# kopt=` template, which `update-grub` copies into
/// new entries.
pub fn rewrite_menu_lst(text: &str, map: &DeviceMap) -> Rewritten {
    let mut doc = Document::new("/boot/grub/menu.lst", text);
    for i in 0..doc.len() {
        let line = doc.line(i);
        let body = line.trim_start();
        let start = if let Some(template) = body.strip_prefix("# kopt") {
            // `# kopt=…` and `# kopt_2_6=…`.
            template
                .find('=')
                .map(|e| line.len() - template.len() + e + 1)
        } else if !is_comment_or_blank(line) && fields(line).len() > 1 {
            let command = &fields(line)[0];
            (&line[command.clone()] == "kernel").then_some(command.end)
        } else {
            None
        };
        if let Some(start) = start {
            rewrite_line_from(&mut doc, i, start, map);
        }
    }
    doc.finish()
}

/// Rewrites `kernelopts=` in a GRUB environment block (`grubenv`, RHEL 8),
/// re-padding it with `#` to its 1024 bytes. Warns, and changes nothing,
/// when the new options would not fit.
pub fn rewrite_grubenv(text: &str, map: &DeviceMap) -> Rewritten {
    let mut doc = Document::new("/boot/grub2/grubenv", text);
    let mut grown = 0isize;
    let mut padding = None;
    for i in 0..doc.len() {
        let line = doc.line(i);
        if let Some(value) = line.strip_prefix("kernelopts=") {
            let before = value.len() as isize;
            rewrite_line_from(&mut doc, i, "kernelopts=".len(), map);
            grown += doc.line(i).len() as isize - "kernelopts=".len() as isize - before;
        } else if !line.is_empty() && line.bytes().all(|b| b == b'#') {
            padding = Some(i);
        }
    }
    if grown == 0 {
        return doc.finish();
    }
    let fits = padding.and_then(|p| {
        let pad = doc.line(p).len() as isize - grown;
        (pad >= 0 && text.len() == GRUBENV_SIZE).then_some((p, pad))
    });
    match fits {
        Some((p, pad)) => {
            doc.replace(
                p,
                "#".repeat(pad.unsigned_abs()),
                "the environment block keeps its 1024 bytes",
            );
            doc.finish()
        }
        None => {
            let mut out = Document::new("/boot/grub2/grubenv", text).finish();
            out.warnings = doc.finish().warnings;
            out.warnings.push(
                "grubenv: the rewritten kernelopts do not fit the 1024-byte block; \
                 left as is (set them with grub2-editenv)"
                    .to_string(),
            );
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapt::rewrite::testmap::*;

    const DEFAULT_GRUB: &str = r#"# If you change this file, run 'update-grub' afterwards to update
# /boot/grub/grub.cfg.
# For full documentation of the options in this file, see:
#   info -f grub -n 'Simple configuration'

GRUB_DEFAULT=0
GRUB_TIMEOUT=5
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet resume=/dev/sda3"
GRUB_CMDLINE_LINUX='root=/dev/disk/by-label/root console=ttyS0,115200n8'

# Uncomment to disable graphical terminal (grub-pc only)
#GRUB_TERMINAL=console
"#;

    #[test]
    fn default_grub_cmdlines_become_uuids_in_both_quotings() {
        let (root, swap) = (arg("root", ROOT), arg("resume", SWAP));
        let replacements = [
            ("resume=/dev/sda3", swap.as_str()),
            ("root=/dev/disk/by-label/root", &root),
        ];
        check_sample(rewrite_grub_default, DEFAULT_GRUB, &replacements, &[9, 10]);
    }

    #[test]
    fn default_grub_warns_about_what_it_cannot_fix() {
        let text =
            "GRUB_DISABLE_LINUX_UUID=true\nexport GRUB_CMDLINE_LINUX=\"root=/dev/sdq1\" # old\n";
        let warnings = unchanged_sample(rewrite_grub_default, text);
        assert_warnings(
            &warnings,
            &["line 1: GRUB_DISABLE_LINUX_UUID", "line 2: root=/dev/sdq1"],
        );
    }

    const GRUB_CFG: &str = "menuentry 'Debian GNU/Linux' --class debian --class gnu-linux --class gnu --class os $menuentry_id_option 'gnulinux-simple-1b2c3d4e' {
\tload_video
\tinsmod gzio
\tif [ x$grub_platform = xxen ]; then insmod xzio; insmod lzopio; fi
\tinsmod part_gpt
\tinsmod ext2
\tset root='hd0,gpt2'
\tif [ x$feature_platform_search_hint = xy ]; then
\t  search --no-floppy --fs-uuid --set=root --hint-bios=hd0,gpt2 --hint-efi=hd0,gpt2 --hint-baremetal=ahci0,gpt2  1b2c3d4e-0000-4000-8000-00000000000a
\telse
\t  search --no-floppy --fs-uuid --set=root 1b2c3d4e-0000-4000-8000-00000000000a
\tfi
\techo\t'Loading Linux 6.1.0-18-amd64 ...'
\tlinux\t/boot/vmlinuz-6.1.0-18-amd64 root=/dev/sda2 ro  quiet resume=/dev/sda3
\techo\t'Loading initial ramdisk ...'
\tinitrd\t/boot/initrd.img-6.1.0-18-amd64
}
menuentry 'CentOS Linux (3.10.0)' {
\tlinux16 /vmlinuz-3.10.0 root=/dev/sda2 ro crashkernel=auto
\tinitrd16 /initramfs-3.10.0.img
}
menuentry 'Fedora' {
\tlinuxefi /vmlinuz root=LABEL=root ro
}
";

    #[test]
    fn grub_cfg_kernel_lines_become_uuids_and_nothing_else_changes() {
        let (root, swap) = (arg("root", ROOT), arg("resume", SWAP));
        let replacements = [
            ("root=/dev/sda2", root.as_str()),
            ("root=LABEL=root", &root),
            ("resume=/dev/sda3", &swap),
        ];
        check_sample(rewrite_grub_cfg, GRUB_CFG, &replacements, &[14, 19, 23]);
    }

    const MENU_LST: &str = "default\t\t0
timeout\t\t5

### BEGIN AUTOMAGIC KERNELS LIST
## default kernel options
## e.g. kopt=root=/dev/hda1 ro
# kopt=root=/dev/sda2 ro
# groot=(hd0,1)
### END DEBIAN AUTOMAGIC KERNELS LIST

title\t\tDebian GNU/Linux, kernel 2.6.32-5-amd64
root\t\t(hd0,1)
kernel\t\t/boot/vmlinuz-2.6.32-5-amd64 root=/dev/sda2 ro quiet
initrd\t\t/boot/initrd.img-2.6.32-5-amd64
";

    #[test]
    fn menu_lst_kernel_lines_and_kopt_become_uuids() {
        let root = arg("root", ROOT);
        let (kopt, kernel) = (format!("# kopt={root}"), format!("amd64 {root}"));
        let replacements = [
            ("# kopt=root=/dev/sda2", kopt.as_str()),
            ("amd64 root=/dev/sda2", &kernel),
        ];
        let out = check_sample(rewrite_menu_lst, MENU_LST, &replacements, &[7, 13]);
        assert!(
            out.text.contains("## e.g. kopt=root=/dev/hda1 ro"),
            "examples stay"
        );
    }

    fn grubenv_head(kernelopts: &str) -> String {
        format!("# GRUB Environment Block\nsaved_entry=abc-4.18.0\nkernelopts={kernelopts}\nboot_success=0\n")
    }

    fn grubenv(kernelopts: &str) -> String {
        let head = grubenv_head(kernelopts);
        let pad = GRUBENV_SIZE - head.len();
        format!("{head}{}", "#".repeat(pad))
    }

    #[test]
    fn grubenv_keeps_its_size() {
        let text = grubenv("root=/dev/sda2 ro resume=/dev/sda3 rhgb quiet");
        let (root, swap) = (arg("root", ROOT), arg("resume", SWAP));
        let want = grubenv(&format!("{root} ro {swap} rhgb quiet"));
        // kernelopts and the padding
        let out = check_sample(rewrite_grubenv, &text, &[(&text, &want)], &[3, 5]);
        assert_eq!(out.text.len(), GRUBENV_SIZE);
    }

    #[test]
    fn grubenv_that_would_overflow_is_left_with_a_warning() {
        // 10 bytes of padding left; the UUID needs 32 more.
        let filler = GRUBENV_SIZE - 10 - grubenv_head("root=/dev/sda2 ").len();
        let long = format!("root=/dev/sda2 {}", "x".repeat(filler));
        let warnings = unchanged_sample(rewrite_grubenv, &grubenv(&long));
        assert_warnings(&warnings, &["do not fit the 1024-byte block"]);
    }

    #[test]
    fn grub_default_is_set_once() {
        let text = "GRUB_DEFAULT=0\nGRUB_TIMEOUT=5\n";
        let r = set_grub_default(
            text,
            "gnulinux-advanced-U>gnulinux-6.1.0-9-amd64-advanced-U",
        );
        assert_eq!(
            r.text,
            "GRUB_DEFAULT=\"gnulinux-advanced-U>gnulinux-6.1.0-9-amd64-advanced-U\"\nGRUB_TIMEOUT=5\n"
        );
        assert_eq!(r.edits.len(), 1);
        let again = set_grub_default(
            &r.text,
            "gnulinux-advanced-U>gnulinux-6.1.0-9-amd64-advanced-U",
        );
        assert!(again.edits.is_empty());
        let added = set_grub_default("GRUB_TIMEOUT=5\n", "x");
        assert_eq!(added.text, "GRUB_TIMEOUT=5\nGRUB_DEFAULT=\"x\"\n");
    }
}
