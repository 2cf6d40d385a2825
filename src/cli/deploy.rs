//! `ferry plan` and `ferry deploy`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use agent::deploy::{deploy, probe_target, DeployOptions};
use agent::plan::{plan, DeployPlan, Firmware, FsConvert, PlanOptions, TableKind};
use anyhow::Context;
use imaging::disk::FsType;

use super::progress::CliProgress;
use super::{bytes, duration, open_library, print_json};

/// What the plan is made from: shared by `plan` and `deploy`.
#[derive(clap::Args)]
pub struct PlanArgs {
    /// The server image (captured with `ferry capture --disk`).
    pub(crate) image: String,
    /// A target disk (image file or block device). Repeat for several; the
    /// image's disks go onto them in order unless --map says otherwise.
    #[arg(long = "target", required = true)]
    pub(crate) targets: Vec<PathBuf>,
    /// The firmware the target boots with; default: the source's.
    #[arg(long, value_parser = parse_firmware)]
    pub(crate) firmware: Option<Firmware>,
    /// Force a partition-table scheme (gpt or mbr); default: the source's,
    /// or GPT when UEFI needs it.
    #[arg(long, value_parser = parse_scheme)]
    scheme: Option<TableKind>,
    /// Put image disk S onto target T (both counted from 0): `--map 0:1`.
    /// Repeat for every disk.
    #[arg(long = "map", value_parser = parse_map)]
    mapping: Vec<(usize, usize)>,
    /// Make a file system of another type: `--convert 0:2:xfs` makes
    /// partition 2 of image disk 0 an xfs, populated from its file tree.
    #[arg(long = "convert", value_parser = parse_convert)]
    convert: Vec<FsConvert>,
}

/// Arguments of `ferry plan`.
#[derive(clap::Args)]
pub struct PlanCmd {
    #[command(flatten)]
    plan: PlanArgs,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `ferry deploy`.
#[derive(clap::Args)]
pub struct DeployCmd {
    #[command(flatten)]
    plan: PlanArgs,
    /// Write every chunk, without comparing what the disk already holds.
    #[arg(long)]
    no_seed: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Deploy on this agent's machine (its mailbox id) instead, as a job
    /// sent through `ferry serve`; --target names the agent's disks.
    #[arg(long, value_name = "ID")]
    agent: Option<String>,
    /// With --agent: adapt the deployed OS to the agent's machine afterwards.
    #[arg(long, requires = "agent")]
    adapt: bool,
    /// Direct migration, receiving side: deploy what `ferry capture --disk
    /// ... --relay ID` (or an agent) streams through relay ID of the
    /// library's store, without storing it; IMAGE is then only a label.
    /// Every partition is block-copied (equal or bigger targets).
    #[arg(long, value_name = "ID", conflicts_with = "no_seed")]
    relay: Option<String>,
    #[command(flatten)]
    job: super::remote::JobArgs,
    #[command(flatten)]
    remote: super::remote::RemoteArgs,
}

pub(crate) fn parse_firmware(s: &str) -> Result<Firmware, String> {
    match s {
        "bios" => Ok(Firmware::Bios),
        "uefi" => Ok(Firmware::Uefi),
        _ => Err(format!("{s:?}: expected bios or uefi")),
    }
}

fn parse_scheme(s: &str) -> Result<TableKind, String> {
    match s {
        "gpt" => Ok(TableKind::Gpt),
        "mbr" | "dos" => Ok(TableKind::Mbr),
        _ => Err(format!("{s:?}: expected gpt or mbr")),
    }
}

fn parse_map(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected SOURCE:TARGET, e.g. 0:1"))?;
    let n = |x: &str| x.parse::<usize>().map_err(|e| format!("{s:?}: {e}"));
    Ok((n(a)?, n(b)?))
}

fn parse_convert(s: &str) -> Result<FsConvert, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let [disk, number, fs] = parts[..] else {
        return Err(format!("{s:?}: expected DISK:PARTITION:FS, e.g. 0:2:xfs"));
    };
    let to = match fs {
        "ext2" => FsType::Ext2,
        "ext3" => FsType::Ext3,
        "ext4" => FsType::Ext4,
        "xfs" => FsType::Xfs,
        _ => return Err(format!("{s:?}: ferry makes ext2, ext3, ext4 or xfs")),
    };
    Ok(FsConvert {
        disk: disk.parse().map_err(|e| format!("{s:?}: {e}"))?,
        number: number.parse().map_err(|e| format!("{s:?}: {e}"))?,
        to,
    })
}

/// Makes the plan for `a` from the image in `lib`.
fn make_plan(lib: &imaging::Library, a: &PlanArgs) -> anyhow::Result<DeployPlan> {
    let m = lib.manifest(&a.image)?;
    plan_disks(&m.disks, a)
}

/// Makes the plan for `a` from an image's (or a direct stream's) disks.
fn plan_disks(disks: &[imaging::manifest::Disk], a: &PlanArgs) -> anyhow::Result<DeployPlan> {
    let targets = a
        .targets
        .iter()
        .map(|t| probe_target(t).with_context(|| format!("measuring target {}", t.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    plan(disks, &targets, &plan_options(a))
        .with_context(|| format!("planning the deploy of {}", a.image))
}

/// `ferry deploy LABEL --relay ID`: waits for the sender's layout on the
/// relay, plans, and writes the streams as they arrive; on failure, tells
/// the sender (the relay's abort) before returning the error.
fn receive(
    lib: &imaging::Library,
    relay: &str,
    a: &DeployCmd,
    opts: &DeployOptions,
    progress: &CliProgress,
    log: &dyn Fn(&str),
) -> anyhow::Result<agent::deploy::DeployReport> {
    use imaging::direct::{Receiver, RelayReader, RelayTimeouts};
    let reader = RelayReader::new(lib.store(), relay, RelayTimeouts::default())?;
    let name = reader.name();
    log(&format!("waiting for the sender on {name}"));
    let mut rx = Receiver::open(reader, &name).inspect_err(|e| {
        imaging::direct::abort(lib.store(), relay, &format!("{e:#}"));
    })?;
    let m = agent::deploy::direct_manifest(rx.layout());
    let r = plan_disks(&m.disks, &a.plan).and_then(|p| {
        if !a.json {
            progress.clear();
            eprint!("{p}");
        }
        agent::deploy::deploy_direct(&mut rx, &m, &p, opts, progress, log)
            .with_context(|| format!("deploying {} directly from {name}", a.plan.image))
    });
    let reader = rx.into_inner();
    match r {
        Ok(report) => {
            reader.close()?;
            Ok(report)
        }
        Err(e) => {
            reader.abort(&format!("{e:#}"));
            Err(e)
        }
    }
}

/// The operator's choices for the planner.
pub(crate) fn plan_options(a: &PlanArgs) -> PlanOptions {
    PlanOptions {
        firmware: a.firmware,
        scheme: a.scheme,
        mapping: (!a.mapping.is_empty()).then(|| a.mapping.clone()),
        convert: a.convert.clone(),
    }
}

/// Runs `ferry plan`.
pub fn run_plan(library: &Path, a: PlanCmd) -> anyhow::Result<ExitCode> {
    let lib = open_library(library)?;
    let p = make_plan(&lib, &a.plan)?;
    if a.json {
        print_json(&p)?;
    } else {
        print!("{p}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `ferry deploy`: plans, prints the plan, executes it.
pub fn run_deploy(library: &Path, a: DeployCmd) -> anyhow::Result<ExitCode> {
    if let Some(agent) = &a.agent {
        let firmware = a.plan.firmware.map(|f| match f {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
        });
        // The agent plans against its own disks and firmware.
        let choices = plan_options(&a.plan);
        let steps = super::remote::DeploySteps {
            image: &a.plan.image,
            targets: &a.plan.targets,
            firmware,
            adapt: a.adapt,
            choices: &choices,
            relay: a.relay.as_deref(),
        };
        return super::remote::deploy(&a.remote, agent, &steps, &a.job, a.json);
    }
    // A direct migration's relay may be a new library: either side, started
    // first, creates it.
    let lib = Arc::new(match &a.relay {
        Some(_) => super::open_or_create_library(library)?,
        None => open_library(library)?,
    });
    let progress = CliProgress::new();
    let log = |line: &str| {
        progress.clear();
        eprintln!("{line}");
    };
    let opts = DeployOptions {
        no_seed: a.no_seed,
        workers: 0,
    };
    let r = match &a.relay {
        Some(relay) => receive(&lib, relay, &a, &opts, &progress, &log)?,
        None => {
            let p = make_plan(&lib, &a.plan)?;
            if !a.json {
                eprint!("{p}");
            }
            deploy(&lib, &a.plan.image, &p, &opts, &progress, &log)
                .with_context(|| format!("deploying image {}", a.plan.image))?
        }
    };
    progress.clear();
    if a.json {
        print_json(&r)?;
    } else {
        let written: u64 = r
            .disks
            .iter()
            .flat_map(|d| &d.partitions)
            .map(|p| p.bytes_written)
            .sum();
        let seeded: u64 = r
            .disks
            .iter()
            .flat_map(|d| &d.partitions)
            .map(|p| p.bytes_seeded)
            .sum();
        eprintln!(
            "deployed image {} onto {}: {} written, {} already in place, every file system checked clean, in {}",
            r.image,
            r.disks
                .iter()
                .map(|d| d.target.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            bytes(written),
            bytes(seeded),
            duration(r.seconds)
        );
    }
    Ok(ExitCode::SUCCESS)
}
