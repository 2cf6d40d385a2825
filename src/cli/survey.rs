//! `ferry survey`: what a machine is made of (firmware, PCI and other bus
//! devices, disks, NICs, DMI, CPU, memory), or with `--disks` what is on
//! its disks.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use agent::survey::{survey, HardwareSurvey};
use anyhow::Context;
use imaging::disk::{survey_disk, DiskLayout};
use serde::Serialize;

use super::{bytes, print_json};

/// Arguments of `ferry survey`.
#[derive(clap::Args)]
pub struct SurveyArgs {
    /// Survey disks: partition tables, file systems, boot pieces (without
    /// it: the hardware).
    #[arg(long)]
    disks: bool,
    /// With --disks: disks or disk images to survey; all block disks under
    /// ROOT/sys/block if none are given.
    #[arg(requires = "disks")]
    paths: Vec<PathBuf>,
    /// The root holding /sys, /proc and /dev (a fixture tree in tests).
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// As JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Surveyed {
    path: String,
    #[serde(flatten)]
    layout: DiskLayout,
}

/// Block disks worth surveying: not RAM disks, not empty devices.
fn all_disks(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let sys = root.join("sys/block");
    let mut out = Vec::new();
    for ent in std::fs::read_dir(&sys).with_context(|| format!("listing {}", sys.display()))? {
        let name = ent?.file_name().to_string_lossy().into_owned();
        let sectors: u64 = std::fs::read_to_string(sys.join(&name).join("size"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if sectors == 0 || name.starts_with("ram") || name.starts_with("zram") {
            continue;
        }
        out.push(root.join("dev").join(name));
    }
    out.sort();
    Ok(out)
}

/// Runs `ferry survey`.
pub fn run(a: SurveyArgs) -> anyhow::Result<ExitCode> {
    if a.disks {
        run_disks(a)
    } else {
        run_hardware(&a.root, a.json)
    }
}

/// `ferry survey [--json]`: the hardware survey.
fn run_hardware(root: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let s =
        survey(root).with_context(|| format!("surveying the hardware under {}", root.display()))?;
    if json {
        print_json(&s)?;
    } else {
        print!("{}", hardware_text(&s));
    }
    Ok(ExitCode::SUCCESS)
}

/// `-` for what is unknown.
fn or_dash(s: Option<&str>) -> &str {
    s.unwrap_or("-")
}

/// The known parts joined by `sep`; `-` when none is known.
fn joined<'a>(parts: impl IntoIterator<Item = Option<&'a str>>, sep: &str) -> String {
    let known: Vec<&str> = parts.into_iter().flatten().collect();
    if known.is_empty() {
        "-".into()
    } else {
        known.join(sep)
    }
}

/// The hardware survey as a compact table.
fn hardware_text(s: &HardwareSurvey) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let d = &s.dmi;
    let firmware = serde_json::to_value(s.firmware)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let _ = writeln!(o, "firmware  {firmware}");
    let _ = writeln!(
        o,
        "machine   {}  (firmware {})",
        joined([d.sys_vendor.as_deref(), d.product_name.as_deref()], " "),
        joined([d.bios_vendor.as_deref(), d.bios_version.as_deref()], " ")
    );
    if let Some(uuid) = &d.product_uuid {
        let _ = writeln!(o, "uuid      {uuid}");
    }
    let _ = writeln!(
        o,
        "cpu       {} x {}",
        s.cpu.logical.map_or("?".into(), |n| n.to_string()),
        or_dash(s.cpu.model_name.as_deref())
    );
    let _ = writeln!(o, "memory    {}", s.memory.total.map_or("-".into(), bytes));
    let _ = writeln!(o, "\nPCI devices");
    for p in &s.pci {
        let _ = writeln!(
            o,
            "  {}  {}:{}  class {:<6}  {}",
            p.address,
            or_dash(p.vendor.as_deref()),
            or_dash(p.device.as_deref()),
            or_dash(p.class.as_deref()),
            or_dash(p.driver.as_deref())
        );
        for b in s
            .devices
            .iter()
            .filter(|b| b.pci.as_deref() == Some(&p.address))
        {
            let _ = writeln!(
                o,
                "      {} {}  {}  {}",
                b.bus,
                b.name,
                or_dash(b.modalias.as_deref()),
                or_dash(b.driver.as_deref())
            );
        }
    }
    let _ = writeln!(o, "\ndisks");
    for k in &s.disks {
        let _ = writeln!(
            o,
            "  {:<8} {:>10}  {}/{} B{}  {}  {}  {}",
            k.name,
            k.size.map_or("-".into(), bytes),
            k.logical_sector_size.map_or("?".into(), |n| n.to_string()),
            k.physical_sector_size.map_or("?".into(), |n| n.to_string()),
            if k.removable == Some(true) {
                "  removable"
            } else {
                ""
            },
            joined([k.model.as_deref(), k.serial.as_deref()], " "),
            or_dash(k.pci.as_deref()),
            joined(k.drivers.iter().map(|d| Some(d.as_str())), " < ")
        );
    }
    let _ = writeln!(o, "\nNICs");
    for n in &s.nics {
        let _ = writeln!(
            o,
            "  {:<8} {}  {}  {}",
            n.name,
            or_dash(n.mac.as_deref()),
            or_dash(n.driver.as_deref()),
            or_dash(n.pci.as_deref())
        );
    }
    o
}

/// `ferry survey --disks [PATH...]`: partition tables and file systems.
fn run_disks(a: SurveyArgs) -> anyhow::Result<ExitCode> {
    let paths = if a.paths.is_empty() {
        all_disks(&a.root)?
    } else {
        a.paths
    };
    let mut out = Vec::new();
    let mut failed = 0;
    for p in paths {
        match survey_disk(&p, &a.root) {
            Ok(layout) => out.push(Surveyed {
                path: p.display().to_string(),
                layout,
            }),
            Err(e) => {
                // One unreadable disk does not hide the others.
                eprintln!("ferry: error: surveying {}: {e}", p.display());
                failed += 1;
            }
        }
    }
    let code = if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    };
    if a.json {
        print_json(&out)?;
        return Ok(code);
    }
    for d in &out {
        let l = &d.layout;
        let ident: Vec<&str> = [&l.model, &l.serial, &l.wwn]
            .iter()
            .filter_map(|s| s.as_deref())
            .collect();
        println!(
            "{}: {} ({} B sectors, {} B physical){}  table: {}",
            d.path,
            bytes(l.size),
            l.logical_sector_size,
            l.physical_sector_size,
            if ident.is_empty() {
                String::new()
            } else {
                format!("  {}", ident.join(" "))
            },
            serde_json::to_value(&l.table)
                .ok()
                .and_then(|v| v
                    .get("type")
                    .or(v.get("kind"))
                    .and_then(|t| t.as_str().map(str::to_string)))
                .unwrap_or_else(|| "?".into())
        );
        for p in &l.partitions {
            let fs = match &p.filesystem {
                Some(f) => format!(
                    "{} uuid={} label={} used={}",
                    f.fs_type.blkid_name(),
                    f.uuid.as_deref().unwrap_or("-"),
                    f.label.as_deref().unwrap_or("-"),
                    f.used.map_or("-".into(), bytes)
                ),
                None => "no file system recognised".into(),
            };
            println!(
                "  {:>3}  start {:>12}  size {:>10}  {:<10} {}",
                p.number,
                p.start,
                bytes(p.size),
                serde_json::to_value(p.role)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                fs
            );
        }
    }
    Ok(code)
}
