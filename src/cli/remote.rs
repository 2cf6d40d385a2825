//! The operator's side of remote work: how the CLI reaches `ferry serve`
//! (`--server`, `--token`, `--ca`, or a server directory), and the jobs
//! `ferry capture --agent` and `ferry deploy --agent` start.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use agent::mailbox::https::Trust;
use agent::mailbox::{Action, MailboxId};
use anyhow::Context;
use manager::client::Client;

/// How to reach the server.
#[derive(clap::Args, Clone, Debug)]
pub struct RemoteArgs {
    /// The manager (`https://host:8443`). Default: https://localhost:8443.
    #[arg(long, env = "FERRY_SERVER")]
    server: Option<String>,
    /// The operator token. Default: DIR/operator.token.
    #[arg(long, env = "FERRY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The CA certificate (PEM file) or `sha256:<fingerprint>`. Default:
    /// DIR/ca.pem.
    #[arg(long, env = "FERRY_CA")]
    ca: Option<String>,
    /// A server directory made by `ferry serve --init`, for the token and CA.
    #[arg(long = "dir", env = "FERRY_SERVER_DIR")]
    server_dir: Option<PathBuf>,
}

impl RemoteArgs {
    /// A client for the server these arguments name.
    pub fn client(&self) -> anyhow::Result<Client> {
        let server = self
            .server
            .clone()
            .unwrap_or_else(|| "https://localhost:8443".into());
        let from_dir = |name: &str| -> anyhow::Result<PathBuf> {
            let dir = self.server_dir.as_deref().with_context(|| {
                format!(
                    "no --{} given, and no --dir to read it from",
                    name.split('.').next().unwrap_or(name)
                )
            })?;
            Ok(dir.join(name))
        };
        let token = match &self.token {
            Some(t) => t.clone(),
            None => {
                let p = from_dir("operator.token")?;
                read_trimmed(&p)?
            }
        };
        let ca = match &self.ca {
            Some(c) => c.clone(),
            None => from_dir("ca.pem")?.display().to_string(),
        };
        let trust = Trust::parse(&ca).with_context(|| format!("loading the CA {ca}"))?;
        Client::new(&server, &token, &trust).with_context(|| format!("connecting to {server}"))
    }
}

fn read_trimmed(p: &Path) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(p)
        .with_context(|| format!("reading {}", p.display()))?
        .trim()
        .to_string())
}

fn parse_agent(id: &str) -> anyhow::Result<MailboxId> {
    MailboxId::parse(id).map_err(|e| anyhow::anyhow!("--agent: {e}"))
}

/// How an operator command that starts a job behaves.
#[derive(clap::Args, Clone, Debug)]
pub struct JobArgs {
    /// With --agent: follow the job until it ends (progress on stderr),
    /// then print its outcome; exit non-zero if it failed.
    #[arg(long, requires = "agent")]
    pub follow: bool,
    /// With --agent: reboot the agent's machine when the work is done
    /// (after a deploy: into the deployed OS, when its firmware boots the
    /// disk before the network).
    #[arg(long, requires = "agent", conflicts_with = "poweroff")]
    pub reboot: bool,
    /// With --agent: power the agent's machine off when the work is done
    /// (after an offline capture, so the source cannot come back up next
    /// to its migrated copy).
    #[arg(long, requires = "agent")]
    pub poweroff: bool,
}

fn start(
    remote: &RemoteArgs,
    agent: &str,
    steps: Vec<Action>,
    job: &JobArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let id = parse_agent(agent)?;
    let mut steps = steps;
    if job.reboot {
        steps.push(Action::Reboot);
    }
    if job.poweroff {
        steps.push(Action::Poweroff);
    }
    let client = remote.client()?;
    let made = client
        .create_job(&id, steps)
        .with_context(|| format!("starting a job on agent {id}"))?;
    if job.follow {
        eprintln!("job {} started on agent {id}", made.id);
        return super::jobs::follow(&client, &made.id, json);
    }
    println!("{}", made.id);
    eprintln!(
        "job {} started on agent {id}; follow it with `ferry job {} --follow`",
        made.id, made.id
    );
    Ok(ExitCode::SUCCESS)
}

/// `ferry capture --agent ID --name IMAGE --disk /dev/X ...
/// [--reboot|--poweroff] [--follow]`.
pub fn capture(
    remote: &RemoteArgs,
    agent: &str,
    name: &str,
    disks: &[PathBuf],
    parent: Option<String>,
    job: &JobArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        !disks.is_empty(),
        "--agent needs --disk /dev/X (a disk on the agent's machine)"
    );
    let step = Action::Capture {
        image: name.to_string(),
        disks: disks.iter().map(|d| d.display().to_string()).collect(),
        parent,
        relay: None,
    };
    start(remote, agent, vec![step], job, json)
}

/// What `ferry deploy --agent` asks of the agent.
pub struct DeploySteps<'a> {
    /// The image.
    pub image: &'a str,
    /// The agent's target disks.
    pub targets: &'a [PathBuf],
    /// `bios` or `uefi`; the agent's own when absent.
    pub firmware: Option<&'a str>,
    /// Adapt the deployed OS afterwards.
    pub adapt: bool,
    /// The plan's other choices (scheme, mapping, conversions).
    pub choices: &'a agent::plan::PlanOptions,
    /// Direct migration: the relay the deploy reads from.
    pub relay: Option<&'a str>,
}

/// `ferry deploy IMAGE --agent ID --target /dev/X ... [--firmware F]
/// [--adapt] [--reboot|--poweroff] [--follow]`.
pub fn deploy(
    remote: &RemoteArgs,
    agent: &str,
    d: &DeploySteps<'_>,
    job: &JobArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    start(remote, agent, vec![d.action()], job, json)
}

impl DeploySteps<'_> {
    /// The deploy command for the agent.
    pub fn action(&self) -> Action {
        let d = self;
        Action::Deploy {
            image: d.image.to_string(),
            targets: d.targets.iter().map(|t| t.display().to_string()).collect(),
            firmware: d.firmware.map(str::to_string),
            adapt: d.adapt,
            scheme: d.choices.scheme,
            mapping: d.choices.mapping.clone().unwrap_or_default(),
            convert: d.choices.convert.clone(),
            relay: d.relay.map(str::to_string),
        }
    }
}
