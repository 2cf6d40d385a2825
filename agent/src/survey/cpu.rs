//! The processors, from ROOT/proc/cpuinfo.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// What /proc/cpuinfo says about the processors.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cpu {
    /// The first processor's `model name` (x86; other architectures may
    /// not have one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    /// Logical processors online: the number of `processor` entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical: Option<u32>,
}

/// Reads ROOT/proc/cpuinfo; all `None` when it is unreadable.
pub(crate) fn read(root: &Path) -> Cpu {
    let Ok(text) = std::fs::read_to_string(root.join("proc/cpuinfo")) else {
        return Cpu::default();
    };
    parse(&text)
}

fn parse(text: &str) -> Cpu {
    let fields = text.lines().filter_map(|l| {
        let (k, v) = l.split_once(':')?;
        Some((k.trim(), v.trim()))
    });
    let mut cpu = Cpu::default();
    let mut logical = 0u32;
    for (k, v) in fields {
        match k {
            "processor" => logical += 1,
            "model name" if cpu.model_name.is_none() && !v.is_empty() => {
                cpu.model_name = Some(v.to_string());
            }
            _ => {}
        }
    }
    cpu.logical = (logical > 0).then_some(logical);
    cpu
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processors_are_counted() {
        let text = "processor\t: 0\nmodel name\t: QEMU Virtual CPU version 2.5+\n\n\
                    processor\t: 1\nmodel name\t: QEMU Virtual CPU version 2.5+\n";
        let cpu = parse(text);
        assert_eq!(cpu.logical, Some(2));
        assert_eq!(
            cpu.model_name.as_deref(),
            Some("QEMU Virtual CPU version 2.5+")
        );
        assert_eq!(parse("garbage"), Cpu::default());
    }
}
