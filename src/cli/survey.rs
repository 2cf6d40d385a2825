//! `ferry survey --disks`: what is on a machine's disks.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use imaging::disk::{survey_disk, DiskLayout};
use serde::Serialize;

use super::{bytes, print_json};

/// Arguments of `ferry survey`.
#[derive(clap::Args)]
pub struct SurveyArgs {
    /// Survey disks: partition tables, file systems, boot pieces. (This
    /// build surveys disks only.)
    #[arg(long)]
    disks: bool,
    /// Disks or disk images to survey; all block disks under ROOT/sys/block
    /// if none are given.
    paths: Vec<PathBuf>,
    /// The root holding /sys and /dev (a fixture tree in tests).
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
    let _ = a.disks;
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
