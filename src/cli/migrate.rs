//! `ferry migrate`: a direct migration between two agents, through
//! `ferry serve`.
//!
//! The target agent is sent a deploy that reads relay ID, and the source
//! agent a capture that writes it (`imaging::direct`): the source's disks
//! stream to the target as they are read, through at most a few segments
//! of the library's store, and are never stored as an image.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use agent::mailbox::{Action, MailboxId};
use anyhow::Context;
use manager::jobs::{JobState, JobView};

use super::deploy::{plan_options, PlanArgs};
use super::remote::{DeploySteps, RemoteArgs};

/// Arguments of `ferry migrate`.
#[derive(clap::Args)]
pub struct MigrateArgs {
    /// The plan: NAME labels the migration; --target names the target
    /// agent's disks.
    #[command(flatten)]
    plan: PlanArgs,
    /// The source agent (its mailbox id); its disks are read offline.
    #[arg(long, value_name = "ID")]
    from: String,
    /// A disk of the source machine (`/dev/sda`). Repeat for every disk.
    #[arg(long = "disk", required = true)]
    disks: Vec<PathBuf>,
    /// The target agent (its mailbox id).
    #[arg(long, value_name = "ID")]
    to: String,
    /// Adapt the deployed OS to the target machine afterwards.
    #[arg(long)]
    adapt: bool,
    /// Reboot the target into the migrated OS when it is done.
    #[arg(long)]
    reboot: bool,
    /// Power the source off once its disks are sent, so it cannot come
    /// back up next to its copy.
    #[arg(long)]
    poweroff_source: bool,
    /// Follow both jobs until they end, then print their outcomes; exit
    /// non-zero if either failed.
    #[arg(long)]
    follow: bool,
    /// With --follow: print the outcomes as one JSON object
    /// (`{"relay", "target", "source"}`).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: RemoteArgs,
}

/// Runs `ferry migrate`.
pub fn run(a: MigrateArgs) -> anyhow::Result<ExitCode> {
    let parse =
        |flag: &str, id: &str| MailboxId::parse(id).map_err(|e| anyhow::anyhow!("--{flag}: {e}"));
    let (from, to) = (parse("from", &a.from)?, parse("to", &a.to)?);
    anyhow::ensure!(from != to, "--from and --to name the same agent");
    let relay = MailboxId::generate()
        .context("drawing a relay id")?
        .to_string();
    let firmware = a.plan.firmware.map(|f| match f {
        agent::plan::Firmware::Bios => "bios",
        agent::plan::Firmware::Uefi => "uefi",
    });
    let choices = plan_options(&a.plan);
    let deploy = DeploySteps {
        image: &a.plan.image,
        targets: &a.plan.targets,
        firmware,
        adapt: a.adapt,
        choices: &choices,
        relay: Some(&relay),
    };
    let mut target_steps = vec![deploy.action()];
    if a.reboot {
        target_steps.push(Action::Reboot);
    }
    let mut source_steps = vec![Action::Capture {
        image: a.plan.image.clone(),
        disks: a.disks.iter().map(|d| d.display().to_string()).collect(),
        parent: None,
        relay: Some(relay.clone()),
    }];
    if a.poweroff_source {
        source_steps.push(Action::Poweroff);
    }
    let client = a.remote.client()?;
    // The receiver first: it waits for the sender's layout.
    let target_job = client
        .create_job(&to, target_steps)
        .with_context(|| format!("starting the receiving job on agent {to}"))?;
    let source_job = client
        .create_job(&from, source_steps)
        .with_context(|| format!("starting the sending job on agent {from}"))?;
    eprintln!(
        "migration {} through relay {relay}: job {} sends from agent {from}, job {} receives on agent {to}",
        a.plan.image, source_job.id, target_job.id
    );
    if !a.follow {
        println!("{}", target_job.id);
        println!("{}", source_job.id);
        return Ok(ExitCode::SUCCESS);
    }
    let target = super::jobs::follow_view(&client, &target_job.id)?;
    let source = wait_end(&client, &source_job.id, Duration::from_secs(300))?;
    if a.json {
        super::print_json(&serde_json::json!({
            "relay": relay,
            "target": target,
            "source": source,
        }))?;
    } else {
        super::jobs::print_view(&target);
        super::jobs::print_view(&source);
    }
    let failed = [&target, &source]
        .iter()
        .any(|j| j.state == JobState::Failed);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Job `id`'s view once it has ended, or after `wait`.
fn wait_end(client: &manager::client::Client, id: &str, wait: Duration) -> anyhow::Result<JobView> {
    let since = Instant::now();
    loop {
        let j = client
            .job(id)
            .with_context(|| format!("reading job {id}"))?;
        if j.state != JobState::Running || since.elapsed() > wait {
            return Ok(j);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
