//! Installed memory, from ROOT/proc/meminfo.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// What /proc/meminfo says about memory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// `MemTotal` in bytes: RAM the kernel manages (a little less than
    /// installed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// Reads ROOT/proc/meminfo; `None` when it is unreadable.
pub(crate) fn read(root: &Path) -> Memory {
    let text = std::fs::read_to_string(root.join("proc/meminfo")).unwrap_or_default();
    Memory {
        total: parse_total(&text),
    }
}

/// `MemTotal:  983508 kB` → 983508 × 1024.
fn parse_total(text: &str) -> Option<u64> {
    let line = text.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let mut words = line.split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    let unit = match words.next() {
        Some("kB") => 1024,
        None => 1,
        Some(_) => return None,
    };
    n.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_is_in_kib() {
        assert_eq!(
            parse_total("MemFree: 1 kB\nMemTotal:         983508 kB\n"),
            Some(983508 * 1024)
        );
        assert_eq!(parse_total("MemTotal: lots\n"), None);
        assert_eq!(parse_total(""), None);
    }
}
