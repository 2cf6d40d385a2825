//! The plan as a table, for `ferry plan` without `--json`.

use std::fmt;

use crate::plan::{DeployPlan, DiskPlan, Firmware, Method, PartitionStep};
use crate::table::Scheme;

impl fmt::Display for DeployPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let firmware = match self.firmware {
            Firmware::Bios => "BIOS",
            Firmware::Uefi => "UEFI",
        };
        writeln!(f, "firmware: {firmware}")?;
        for disk in &self.disks {
            write!(f, "\n{disk}")?;
        }
        Ok(())
    }
}

impl fmt::Display for DiskPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = match self.table.as_ref().map(|t| &t.scheme) {
            Some(Scheme::Gpt { disk_guid }) => format!("GPT {disk_guid}"),
            Some(Scheme::Mbr { disk_signature }) => format!("MBR {disk_signature}"),
            None => "no partition table".into(),
        };
        let boot = if self.boot { ", boot disk" } else { "" };
        writeln!(
            f,
            "{} (source disk {}) → {} ({}, {table}{boot})",
            self.source_name,
            self.source,
            self.target,
            human(self.target_size)
        )?;
        let head: Vec<String> = self
            .copy_head
            .ranges()
            .iter()
            .map(|(s, e)| format!("[{s}, {e})"))
            .collect();
        if !head.is_empty() {
            writeln!(f, "  head: copy bytes {}", head.join(" and "))?;
        }
        let mut rows = vec![[
            "part", "start", "size", "fs", "uuid", "label", "from", "method",
        ]
        .map(String::from)];
        rows.extend(self.steps.iter().map(row));
        let widths: Vec<usize> = (0..8)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        for r in &rows {
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(cell, &w)| format!("{cell:<w$}"))
                .collect();
            writeln!(f, "  {}", line.join("  ").trim_end())?;
        }
        for note in &self.notes {
            writeln!(f, "  note: {note}")?;
        }
        Ok(())
    }
}

/// One table row.
fn row(s: &PartitionStep) -> [String; 8] {
    let fs = s.fs.as_ref();
    let dash = || "-".to_string();
    let method = match &s.method {
        Method::Block { grow: true } => "block, grow".into(),
        Method::Block { grow: false } => "block".into(),
        Method::Tree { mkfs } => format!("file tree into new {}", mkfs.blkid_name()),
        Method::Swap => "mkswap".into(),
        Method::NewEsp => "new ESP (FAT32)".into(),
        Method::NewBiosBoot => "new BIOS boot".into(),
        Method::Raw => "raw copy".into(),
        Method::None => "extended (container)".into(),
    };
    [
        s.number.to_string(),
        human(s.start),
        human(s.size),
        fs.map_or_else(dash, |f| f.fs_type.blkid_name().into()),
        fs.and_then(|f| f.uuid.clone()).unwrap_or_else(dash),
        fs.and_then(|f| f.label.clone()).unwrap_or_else(dash),
        s.source.map_or_else(|| "new".into(), |n| n.to_string()),
        method,
    ]
}

/// Bytes for people: `512 B`, `1.0 MiB`, `3.5 GiB`.
pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn sizes_read_as_binary_units() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1 << 20), "1.0 MiB");
        assert_eq!(human(3 << 29), "1.5 GiB");
    }
}
