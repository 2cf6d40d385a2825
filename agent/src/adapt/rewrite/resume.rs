//! initramfs-tools' resume device (`/etc/initramfs-tools/conf.d/resume`):
//! `RESUME=<device>`, which the initramfs uses when the command line has
//! no `resume=`. A stale device name makes every boot wait for it.

use super::devmap::{DeviceMap, Stabilized};
use super::document::Document;
use super::edit::Rewritten;
use super::shell::assignment;

/// Rewrites `RESUME=` (bare or quoted) to the swap's `UUID=`; `none` and
/// `auto` stay.
pub fn rewrite_initramfs_resume(text: &str, map: &DeviceMap) -> Rewritten {
    let mut doc = Document::new("/etc/initramfs-tools/conf.d/resume", text);
    for i in 0..doc.len() {
        let line = doc.line(i).to_string();
        let Some(a) = assignment(&line) else {
            continue;
        };
        if a.name != "RESUME" {
            continue;
        }
        let value = &line[a.value.clone()];
        match map.stabilize(value) {
            Stabilized::Rewritten(new) => {
                let new = format!("{}{new}{}", &line[..a.value.start], &line[a.value.end..]);
                doc.replace(i, new, "the resume device is named by UUID");
                if let Some(note) = map.note(value) {
                    doc.note(format!("line {}: {note}", i + 1));
                }
            }
            Stabilized::Unresolved | Stabilized::StableUnknown => doc.warn(format!(
                "line {}: RESUME={value} names no surveyed swap; boot may wait for it",
                i + 1
            )),
            Stabilized::Stable | Stabilized::NotADevice => {}
        }
    }
    doc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapt::rewrite::testmap::{self, *};

    #[test]
    fn resume_devices_become_uuids() {
        let map = testmap::sample();
        let swap = u(SWAP);
        let cases = [
            ("RESUME=/dev/sda3\n", format!("RESUME={swap}\n")),
            (
                "RESUME=\"/dev/nvme0n1p3\"\n",
                format!("RESUME=\"{swap}\"\n"),
            ),
            (
                "# swap\nRESUME='/dev/disk/by-id/ata-X_S3Z1NB0K123456A-part3'\n",
                format!("# swap\nRESUME='{swap}'\n"),
            ),
            ("RESUME=none\n", "RESUME=none\n".into()),
            ("RESUME=auto\n", "RESUME=auto\n".into()),
            (&format!("RESUME={swap}\n"), format!("RESUME={swap}\n")),
        ];
        for (text, want) in cases {
            let out = rewrite_initramfs_resume(text, &map);
            assert_eq!(out.text, want, "{text}");
            assert_eq!(out.edits.len(), usize::from(text != want), "{text}");
            assert!(rewrite_initramfs_resume(&out.text, &map).edits.is_empty());
        }
    }

    #[test]
    fn an_unknown_resume_device_is_a_warning() {
        let warnings = unchanged_sample(rewrite_initramfs_resume, "RESUME=/dev/sdq2\n");
        assert_warnings(&warnings, &["/dev/sdq2"]);
    }
}
