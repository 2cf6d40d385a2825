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

fn start(remote: &RemoteArgs, agent: &str, steps: Vec<Action>) -> anyhow::Result<ExitCode> {
    let id = parse_agent(agent)?;
    let client = remote.client()?;
    let job = client
        .create_job(&id, steps)
        .with_context(|| format!("starting a job on agent {id}"))?;
    println!("{}", job.id);
    eprintln!(
        "job {} started on agent {id}; follow it with `ferry job {} --follow`",
        job.id, job.id
    );
    Ok(ExitCode::SUCCESS)
}

/// `ferry capture --agent ID --name IMAGE --disk /dev/X ...`.
pub fn capture(
    remote: &RemoteArgs,
    agent: &str,
    name: &str,
    disks: &[PathBuf],
    parent: Option<String>,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        !disks.is_empty(),
        "--agent needs --disk /dev/X (a disk on the agent's machine)"
    );
    let step = Action::Capture {
        image: name.to_string(),
        disks: disks.iter().map(|d| d.display().to_string()).collect(),
        parent,
    };
    start(remote, agent, vec![step])
}

/// `ferry deploy IMAGE --agent ID --target /dev/X ... [--firmware F] [--adapt]`.
pub fn deploy(
    remote: &RemoteArgs,
    agent: &str,
    image: &str,
    targets: &[PathBuf],
    firmware: Option<&str>,
    adapt: bool,
) -> anyhow::Result<ExitCode> {
    let step = Action::Deploy {
        image: image.to_string(),
        targets: targets.iter().map(|d| d.display().to_string()).collect(),
        firmware: firmware.map(str::to_string),
        adapt,
    };
    start(remote, agent, vec![step])
}
