//! Device references on a kernel command line: `root=`, `resume=` and
//! Arch's `cryptdevice=<device>:<name>`, wherever a command line is kept
//! (`/etc/default/grub`, `grub.cfg`, BLS entries, `menu.lst`, grubenv,
//! `/etc/kernel/cmdline`).
//!
//! Arguments are separated by whitespace; a double-quoted part keeps its
//! spaces (as the kernel reads it). The separators are kept as they were,
//! and arguments ferry does not know (including `$kernelopts` and other
//! variables) are left alone.

use std::ops::Range;

use super::devmap::{DeviceMap, Stabilized};
use super::document::Document;
use super::edit::Rewritten;

/// The parameters whose value is a device reference.
const DEVICE_PARAMS: [&str; 3] = ["root=", "resume=", "cryptdevice="];

/// Why a command line changes.
pub(crate) const REASON: &str = "kernel command line names its devices by UUID";

/// A command line after [`rewrite_args`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Args {
    pub(crate) text: String,
    pub(crate) warnings: Vec<String>,
    /// [`DeviceMap::note`]s of the references rewritten.
    pub(crate) notes: Vec<String>,
}

/// Rewrites the device references in the arguments `args`.
pub(crate) fn rewrite_args(args: &str, map: &DeviceMap) -> Args {
    let mut text = String::with_capacity(args.len() + 64);
    let mut warnings = Vec::new();
    let mut notes = Vec::new();
    for (sep, arg) in split(args) {
        text.push_str(sep);
        match rewrite_arg(arg, map, &mut notes) {
            Ok(Some(new)) => text.push_str(&new),
            Ok(None) => text.push_str(arg),
            Err(warning) => {
                warnings.push(warning);
                text.push_str(arg);
            }
        }
    }
    Args {
        text,
        warnings,
        notes,
    }
}

/// Rewrites the command line file of kernel-install and systemd-boot
/// (`/etc/kernel/cmdline`): one line of arguments.
pub fn rewrite_kernel_cmdline(text: &str, map: &DeviceMap) -> Rewritten {
    let mut doc = Document::new("/etc/kernel/cmdline", text);
    for i in 0..doc.len() {
        if super::document::is_comment_or_blank(doc.line(i)) {
            continue;
        }
        rewrite_line_from(&mut doc, i, 0, map);
    }
    doc.finish()
}

/// Rewrites the arguments in the byte range `part` of line `i` of `doc`,
/// warning about what stays unresolved.
pub(crate) fn rewrite_line_part(doc: &mut Document, i: usize, part: Range<usize>, map: &DeviceMap) {
    let line = doc.line(i).to_string();
    let args = rewrite_args(&line[part.clone()], map);
    for w in args.warnings {
        doc.warn(format!("line {}: {w}", i + 1));
    }
    for n in args.notes {
        doc.note(format!("line {}: {n}", i + 1));
    }
    let new = format!("{}{}{}", &line[..part.start], args.text, &line[part.end..]);
    doc.replace(i, new, REASON);
}

/// Rewrites the arguments of line `i` of `doc` from byte `start` on.
pub(crate) fn rewrite_line_from(doc: &mut Document, i: usize, start: usize, map: &DeviceMap) {
    let end = doc.line(i).len();
    rewrite_line_part(doc, i, start..end, map);
}

/// `Ok(Some(new))` for an argument to replace, `Ok(None)` to keep, `Err`
/// with a warning for a device reference that stays; a replacement's
/// [`DeviceMap::note`] goes to `notes`.
fn rewrite_arg(
    arg: &str,
    map: &DeviceMap,
    notes: &mut Vec<String>,
) -> Result<Option<String>, String> {
    let Some(param) = DEVICE_PARAMS.iter().find(|p| arg.starts_with(*p)) else {
        return Ok(None);
    };
    let value = &arg[param.len()..];
    let (device, rest) = if *param == "cryptdevice=" {
        split_cryptdevice(value, map)
    } else {
        (value, "")
    };
    match map.stabilize(device) {
        Stabilized::Rewritten(new) => {
            notes.extend(map.note(device));
            Ok(Some(format!("{param}{new}{rest}")))
        }
        Stabilized::Unresolved => Err(format!(
            "{param}{device} names no single surveyed file system; left as is"
        )),
        Stabilized::StableUnknown => Err(format!(
            "{param}{device} is not among the surveyed file systems"
        )),
        Stabilized::Stable | Stabilized::NotADevice => Ok(None),
    }
}

/// `cryptdevice=<device>:<name>[:<options>]`, where the device itself may
/// hold colons (`by-path/pci-0000:00:1f.2-…`): the first split whose
/// device part resolves wins, else the first colon.
fn split_cryptdevice<'a>(value: &'a str, map: &DeviceMap) -> (&'a str, &'a str) {
    let mut splits = value.match_indices(':').map(|(i, _)| i);
    let first = value.find(':').unwrap_or(value.len());
    let at = splits
        .find(|&i| map.resolve(&value[..i]).is_some())
        .unwrap_or(first);
    value.split_at(at)
}

/// The arguments of `args`, each with the whitespace before it; trailing
/// whitespace comes as a last pair with an empty argument.
fn split(args: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = args;
    while !rest.is_empty() {
        let body = rest.trim_start();
        let sep = &rest[..rest.len() - body.len()];
        let mut quoted = false;
        let end = body
            .char_indices()
            .find(|&(_, c)| {
                if c == '"' {
                    quoted = !quoted;
                }
                c.is_whitespace() && !quoted
            })
            .map_or(body.len(), |(i, _)| i);
        out.push((sep, &body[..end]));
        rest = &body[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapt::rewrite::testmap::{self, *};

    #[test]
    fn device_arguments_become_uuids() {
        let map = testmap::sample();
        let cases = [
            (
                "root=/dev/sda2 ro quiet",
                format!("root={} ro quiet", u(ROOT)),
            ),
            (
                "  root=LABEL=root\tresume=/dev/sda3 ",
                format!("  root={}\tresume={} ", u(ROOT), u(SWAP)),
            ),
            (
                "BOOT_IMAGE=/vmlinuz root=PARTUUID=c3d4e5f6-0000-4000-8000-000000000102 ro",
                "BOOT_IMAGE=/vmlinuz root=PARTUUID=c3d4e5f6-0000-4000-8000-000000000102 ro".into(),
            ),
            (
                "root=/dev/mapper/vg-root rd.lvm.lv=vg/root",
                "root=/dev/mapper/vg-root rd.lvm.lv=vg/root".into(),
            ),
            (
                "resume_offset=1234 noresume",
                "resume_offset=1234 noresume".into(),
            ),
            (
                "$kernelopts root=\"/dev/sda2\"",
                format!("$kernelopts root={}", u(ROOT)),
            ),
            (
                "cryptdevice=/dev/sdb2:cryptroot root=/dev/mapper/cryptroot",
                format!(
                    "cryptdevice={}:cryptroot root=/dev/mapper/cryptroot",
                    u(LUKS)
                ),
            ),
            ("quiet splash", "quiet splash".into()),
            ("", String::new()),
        ];
        for (args, want) in cases {
            let got = rewrite_args(args, &map);
            assert_eq!(got.text, want, "{args}");
            assert!(got.warnings.is_empty(), "{args}: {:?}", got.warnings);
        }
    }

    #[test]
    fn colons_inside_the_cryptdevice_path_are_no_separator() {
        let map = testmap::sample().with_disk_name(1, "/dev/disk/by-path/pci-0000:00:1f.2-ata-2");
        let got = rewrite_args(
            "cryptdevice=/dev/disk/by-path/pci-0000:00:1f.2-ata-2-part2:c:allow-discards",
            &map,
        );
        assert_eq!(
            got.text,
            format!("cryptdevice={}:c:allow-discards", u(LUKS))
        );
    }

    #[test]
    fn unresolved_devices_stay_with_a_warning() {
        let map = testmap::sample();
        let got = rewrite_args("root=/dev/sdq1 resume=UUID=0000 quiet", &map);
        assert_eq!(got.text, "root=/dev/sdq1 resume=UUID=0000 quiet");
        assert_warnings(&got.warnings, &["root=/dev/sdq1", "resume=UUID=0000"]);
    }

    #[test]
    fn quoted_arguments_keep_their_spaces() {
        let got: Vec<_> = split(r#"a "b c" d="e f" g"#)
            .into_iter()
            .map(|(_, a)| a)
            .collect();
        assert_eq!(got, ["a", "\"b c\"", "d=\"e f\"", "g"]);
    }

    #[test]
    fn guessed_references_are_noted() {
        let map = deployed().with_source_disks(vec![split_source()]);
        let got = rewrite_args(
            "root=/dev/disk/by-path/pci-0000:00:01.1-ata-1-part3 resume=/dev/disk/by-id/ata-QEMU_HARDDISK_FERRYSPLITSOURCE-part2 ro",
            &map,
        );
        assert_eq!(
            got.text,
            format!("{} {} ro", arg("root", ROOT3), arg("resume", SWAP3))
        );
        assert!(got.warnings.is_empty(), "{:?}", got.warnings);
        assert_eq!(
            got.notes.len(),
            1,
            "only the by-path root was a guess: {:?}",
            got.notes
        );
        assert!(got.notes[0].contains("only disk"), "{:?}", got.notes);
    }

    #[test]
    fn kernel_cmdline_file_is_rewritten_and_idempotent() {
        let text = "root=/dev/sda2 rw quiet\n";
        let root = arg("root", ROOT);
        let out = check_sample(
            rewrite_kernel_cmdline,
            text,
            &[("root=/dev/sda2", &root)],
            &[1],
        );
        assert_eq!(out.edits[0].file, "/etc/kernel/cmdline");
    }
}
