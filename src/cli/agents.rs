//! `ferry agents`: every agent with its state, last heartbeat and hardware.

use std::process::ExitCode;

use agent::mailbox::now_ms;
use anyhow::Context;

use super::remote::RemoteArgs;

/// Arguments of `ferry agents`.
#[derive(clap::Args)]
pub struct AgentsArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// Heartbeat intervals missed before an agent counts as offline
    /// (default: the server's).
    #[arg(long)]
    offline_factor: Option<u32>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// A duration since `ms` for people: `4s ago`.
pub fn ago(ms: u64) -> String {
    let s = now_ms().saturating_sub(ms) / 1000;
    match s {
        0..=119 => format!("{s}s ago"),
        120..=7199 => format!("{}m ago", s / 60),
        _ => format!("{}h ago", s / 3600),
    }
}

/// Runs `ferry agents`.
pub fn run(a: AgentsArgs) -> anyhow::Result<ExitCode> {
    let agents = a
        .remote
        .client()?
        .agents(a.offline_factor)
        .context("listing agents")?;
    if a.json {
        super::print_json(&agents)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<32}  {:<8}  {:<8}  {:<10}  {:<24}  HARDWARE",
        "AGENT", "ONLINE", "STATE", "HEARTBEAT", "STEP"
    );
    for v in agents {
        let online = match v.online {
            Some(true) => "online",
            Some(false) => "offline",
            None => "unknown",
        };
        let state = v
            .state
            .and_then(|s| serde_json::to_value(s).ok())
            .and_then(|s| s.as_str().map(str::to_string))
            .unwrap_or_else(|| "-".into());
        // A booted server has no step: its report says how it came up.
        let booted = v
            .first_boot
            .as_ref()
            .map(|f| format!("{}: {}", f.hostname, f.system_state));
        println!(
            "{:<32}  {:<8}  {:<8}  {:<10}  {:<24}  {}",
            v.id,
            online,
            state,
            v.heartbeat_ms.map_or("-".into(), ago),
            v.step.or(v.error).or(booted).unwrap_or_else(|| "-".into()),
            v.hardware.unwrap_or_else(|| "-".into())
        );
    }
    Ok(ExitCode::SUCCESS)
}
