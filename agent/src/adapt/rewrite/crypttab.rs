//! `/etc/crypttab`: the source-device column (the second) to `UUID=` (the
//! LUKS header's), or `PARTUUID=` for plain dm-crypt, whose random
//! content has no UUID (swap re-keyed from `/dev/urandom` at each boot).
//!
//! A key file named by a hardware-bound device name only gets a warning:
//! its column may also be a file path, `none` or `-`, and systemd's
//! `<device>:<path>` form cannot take a `UUID=`.

use super::devmap::{classify, DeviceMap, Stabilized};
use super::document::{is_comment_or_blank, Document};
use super::edit::Rewritten;
use super::fields::{fields, replace_field};

/// Rewrites the source devices of a crypttab.
pub fn rewrite_crypttab(text: &str, map: &DeviceMap) -> Rewritten {
    let mut doc = Document::new("/etc/crypttab", text);
    for i in 0..doc.len() {
        let line = doc.line(i).to_string();
        if is_comment_or_blank(&line) {
            continue;
        }
        let ranges = fields(&line);
        let (Some(name), Some(source)) = (ranges.first(), ranges.get(1)) else {
            continue;
        };
        let (name, source) = (&line[name.clone()], &line[source.clone()]);
        match map.stabilize(source) {
            Stabilized::Rewritten(new) => {
                doc.replace(
                    i,
                    replace_field(&line, &ranges, 1, &new),
                    "encrypted device named by UUID, which survives the move to other disks",
                );
                if let Some(note) = map.note(source) {
                    doc.note(format!("line {}: {note}", i + 1));
                }
            }
            Stabilized::Unresolved | Stabilized::StableUnknown => doc.warn(format!(
                "line {}: {source} (for {name}) names no surveyed device; left as is",
                i + 1
            )),
            Stabilized::Stable | Stabilized::NotADevice => {}
        }
        let key = ranges.get(2).map(|r| &line[r.clone()]);
        let key_device = key.map(|k| k.split(':').next().unwrap_or(k));
        if key_device
            .and_then(classify)
            .is_some_and(|k| !k.is_stable())
        {
            doc.warn(format!(
                "line {}: the key file of {name} is on a device name ({}); check it after the move",
                i + 1,
                key.unwrap_or_default()
            ));
        }
    }
    doc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapt::rewrite::testmap::*;

    const CRYPTTAB: &str = "# <target name>\t<source device>\t\t<key file>\t<options>
data_crypt /dev/sdb2 none luks,discard
swap_crypt\t/dev/disk/by-id/wwn-0x50014ee2b5a1c3d7-part3\t/dev/urandom\tswap,cipher=aes-xts-plain64,size=256
home_crypt UUID=b2c3d4e5-0000-4000-8000-00000000000e /root/home.key luks
";

    #[test]
    fn sources_become_uuids_or_partuuids() {
        let raw = format!("PARTUUID={RAW_PARTUUID}");
        let wwn = "/dev/disk/by-id/wwn-0x50014ee2b5a1c3d7-part3";
        let luks = u(LUKS);
        let replacements = [("/dev/sdb2", luks.as_str()), (wwn, &raw)];
        check_sample(rewrite_crypttab, CRYPTTAB, &replacements, &[2, 3]);
    }

    #[test]
    fn unknown_sources_and_device_key_files_are_warnings() {
        let text = "a /dev/sdq2 none luks\nb UUID=b2c3d4e5-0000-4000-8000-00000000000e /dev/sdc1:/keys/b luks\n";
        let warnings = unchanged_sample(rewrite_crypttab, text);
        assert_warnings(
            &warnings,
            &["line 1: /dev/sdq2 (for a)", "line 2: the key file of b"],
        );
    }
}
