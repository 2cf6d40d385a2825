//! `ferry jobs` and `ferry job ID [--follow]`: jobs and their progress,
//! fed by the agent's status (an indicatif bar on a terminal, plain lines
//! otherwise).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use manager::client::Client;
use manager::jobs::{JobState, JobView};

use super::remote::RemoteArgs;

/// Arguments of `ferry jobs`.
#[derive(clap::Args)]
pub struct JobsArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `ferry job`.
#[derive(clap::Args)]
pub struct JobArgs {
    /// The job's id.
    id: String,
    #[command(flatten)]
    remote: RemoteArgs,
    /// Follow it until it ends; exit non-zero if it fails.
    #[arg(long)]
    follow: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn state_name(s: JobState) -> &'static str {
    match s {
        JobState::Running => "running",
        JobState::Finished => "finished",
        JobState::Failed => "failed",
    }
}

fn action_name(a: &agent::mailbox::Action) -> String {
    serde_json::to_value(a)
        .ok()
        .and_then(|v| v.get("action").and_then(|x| x.as_str()).map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Runs `ferry jobs`.
pub fn run_list(a: JobsArgs) -> anyhow::Result<ExitCode> {
    let jobs = a.remote.client()?.jobs().context("listing jobs")?;
    if a.json {
        super::print_json(&jobs)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<30}  {:<32}  {:<8}  {:<6}  STEPS",
        "JOB", "AGENT", "STATE", "DONE"
    );
    for j in jobs {
        let done = j.steps.iter().filter(|s| s.state == "done").count();
        let steps: Vec<String> = j.steps.iter().map(|s| action_name(&s.action)).collect();
        println!(
            "{:<30}  {:<32}  {:<8}  {:<6}  {}",
            j.id,
            j.agent,
            state_name(j.state),
            format!("{done}/{}", j.steps.len()),
            steps.join(",")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn print_view(j: &JobView) {
    println!("job {}  agent {}  {}", j.id, j.agent, state_name(j.state));
    for (i, s) in j.steps.iter().enumerate() {
        let seq = s.seq.map_or(String::new(), |n| format!(" (command {n})"));
        println!("  {i}: {} {}{seq}", action_name(&s.action), s.state);
        if let Some(e) = &s.error {
            println!("     error: {e}");
        }
    }
    if let Some(e) = &j.error {
        println!("error: {e}");
    }
}

/// Prints a job's final view; its exit code says whether it failed.
pub(crate) fn show(j: &JobView, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        super::print_json(j)?;
    } else {
        print_view(j);
    }
    Ok(exit_for(j))
}

fn exit_for(j: &JobView) -> ExitCode {
    match j.state {
        JobState::Failed => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    }
}

/// Runs `ferry job`.
pub fn run_one(a: JobArgs) -> anyhow::Result<ExitCode> {
    let client = a.remote.client()?;
    if a.follow {
        return follow(&client, &a.id, a.json);
    }
    let j = client
        .job(&a.id)
        .with_context(|| format!("reading job {}", a.id))?;
    show(&j, a.json)
}

/// Follows job `id` until it ends, showing its progress on stderr; prints
/// the final view (as JSON with `json`); fails the exit code if it failed.
pub fn follow(client: &Client, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let j = follow_view(client, id)?;
    show(&j, json)
}

/// Follows job `id` until it ends, showing its progress on stderr; returns
/// its final view.
pub fn follow_view(client: &Client, id: &str) -> anyhow::Result<JobView> {
    let get = || client.job(id).with_context(|| format!("reading job {id}"));
    let tty = std::io::stderr().is_terminal();
    let bar = tty.then(|| {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template(
                "{msg:30} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .expect("the template is valid"),
        );
        b
    });
    let mut last_line = String::new();
    let j = loop {
        let j = get()?;
        let current = j.steps.iter().position(|s| s.state != "done");
        let step = current.map_or("-".to_string(), |i| {
            format!(
                "step {}/{} {}",
                i + 1,
                j.steps.len(),
                action_name(&j.steps[i].action)
            )
        });
        let agent_step = j.agent_step.clone().unwrap_or_default();
        let offline = if j.online == Some(false) {
            " (agent offline)"
        } else {
            ""
        };
        let progress = j.progress.as_ref().map(|p| (p.done, p.total));
        match &bar {
            Some(b) => {
                b.set_message(format!("{step} {agent_step}{offline}"));
                if let Some((done, total)) = progress {
                    b.set_length(total.unwrap_or(0));
                    b.set_position(done);
                }
            }
            None => {
                let pct = match progress {
                    Some((d, Some(t))) if t > 0 => format!(" {:.0}%", d as f64 * 100.0 / t as f64),
                    _ => String::new(),
                };
                let line = format!("{step}: {agent_step}{pct}{offline}");
                if line != last_line {
                    eprintln!("{line}");
                    last_line = line;
                }
            }
        }
        if j.state != JobState::Running {
            break j;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(j)
}
