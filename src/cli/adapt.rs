//! `ferry adapt`: make a deployed server boot on its new hardware.

use std::path::PathBuf;
use std::process::ExitCode;

use agent::adapt::{adapt, AdaptOptions, AdaptTarget, Hardware, NetworkMode};
use agent::plan::Firmware;
use agent::survey::HardwareSurvey;
use anyhow::Context;

use super::deploy::parse_firmware;
use super::print_json;

/// Arguments of `ferry adapt`.
#[derive(clap::Args)]
pub struct AdaptArgs {
    /// The deployed target: its disks (block devices or image files), or
    /// the directory where its root is mounted (with its file systems).
    #[arg(required = true)]
    target: Vec<PathBuf>,
    /// The new machine's hardware survey (`ferry survey --json` there).
    #[arg(long)]
    hardware: PathBuf,
    /// keep: static addresses stay (interface names pinned to the new
    /// MACs); dhcp: static configuration becomes DHCP.
    #[arg(long, default_value = "keep", value_parser = parse_network)]
    network: NetworkMode,
    /// The migrated servers' names and addresses, for /etc/hosts:
    /// `{"hosts": [{"name": "web1.prod.corp", "addresses": ["10.1.0.5"]}]}`.
    #[arg(long)]
    hosts: Option<PathBuf>,
    /// The firmware the target boots with; default: the survey's.
    #[arg(long, value_parser = parse_firmware)]
    firmware: Option<Firmware>,
    /// The driver library (module trees per kernel version).
    #[arg(long, env = "FERRY_DRIVERS", default_value = "./ferry-drivers")]
    drivers: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_network(s: &str) -> Result<NetworkMode, String> {
    match s {
        "keep" => Ok(NetworkMode::Keep),
        "dhcp" => Ok(NetworkMode::Dhcp),
        _ => Err(format!("{s:?}: expected keep or dhcp")),
    }
}

/// Runs `ferry adapt`.
pub fn run(a: AdaptArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&a.hardware)
        .with_context(|| format!("reading the hardware survey {}", a.hardware.display()))?;
    let survey: HardwareSurvey = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a ferry hardware survey", a.hardware.display()))?;
    let hardware = Hardware {
        firmware: Some(survey.firmware),
        modaliases: survey.storage_and_network_modaliases(),
        nic_macs: survey.nics.iter().filter_map(|n| n.mac.clone()).collect(),
    };
    let hosts = match &a.hosts {
        Some(p) => {
            let t =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let f: agent::adapt::rewrite::hosts::HostsFile = serde_json::from_str(&t)
                .with_context(|| format!("{} is not a hosts file", p.display()))?;
            f.hosts
        }
        None => Vec::new(),
    };
    let target = if a.target.len() == 1 && a.target[0].is_dir() {
        AdaptTarget::Root(a.target[0].clone())
    } else {
        AdaptTarget::Disks(a.target.clone())
    };
    let opts = AdaptOptions {
        hardware,
        network: a.network,
        hosts,
        firmware: a.firmware,
        drivers: a.drivers.is_dir().then(|| a.drivers.clone()),
        first_boot: None,
    };
    let json = a.json;
    let report = adapt(&target, &opts, &mut |line| {
        if !json {
            eprintln!("ferry adapt: {line}");
        }
    })?;
    if json {
        print_json(&report)?;
    } else {
        print!("{}", report.text());
    }
    Ok(ExitCode::SUCCESS)
}
