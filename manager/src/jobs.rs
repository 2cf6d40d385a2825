//! Jobs, agent views and command numbering, over a [`MailStore`].
//!
//! A job is an ordered list of steps ([`Action`]s) for one agent. Its
//! records under `jobs/<job>/` are all write-once (`job.json`,
//! `send-<step>-<try>.json`, `done-<step>.json`, `end.json`), so any number
//! of managers drive it without a lock, and a manager killed at any point
//! loses nothing: [`drive`] derives what to do next from the records and
//! the mailbox alone. The rules are MAILBOX.md, sections 3 and 6.

use agent::mailbox::{
    hex_lower, now_ms, Action, AgentState, Command, Heartbeat, MachineIdentity, MailboxId,
    MessageKind, Progress, Response, Status, HEARTBEAT, MAX_FILE, PROTOCOL_VERSION, STATUS,
};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::store::{MailStore, StoreError};

/// Why a job operation failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A record did not parse.
    #[error("{store}: {key} is not a valid {what}: {reason}")]
    Malformed {
        /// The store.
        store: String,
        /// The key.
        key: String,
        /// What it should be.
        what: &'static str,
        /// The parser's complaint.
        reason: String,
    },
    /// No sequence number could be allocated.
    #[error(
        "mailbox {0}: no free command number after {1} tries (other managers keep taking them)"
    )]
    Contended(MailboxId, u32),
    /// A job needs at least one step.
    #[error("a job needs at least one step")]
    Empty,
}

/// Result of job operations.
pub type Result<T> = std::result::Result<T, JobError>;

/// How many times [`send_command`] retries a taken number.
const SEND_TRIES: u32 = 16;

/// The store key of a mailbox file.
pub fn mailbox_key(id: &MailboxId, file: &str) -> String {
    format!("mailboxes/{id}/{file}")
}

/// Reads and parses a JSON object, bounded by [`MAX_FILE`].
pub async fn read_json<T: serde::de::DeserializeOwned>(
    store: &MailStore,
    key: &str,
    what: &'static str,
) -> Result<Option<T>> {
    let Some(bytes) = store.get(key).await? else {
        return Ok(None);
    };
    let bad = |reason: String| JobError::Malformed {
        store: store.url().to_string(),
        key: key.to_string(),
        what,
        reason,
    };
    if bytes.len() > MAX_FILE {
        return Err(bad(format!("{} bytes", bytes.len())));
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| bad(e.to_string()))
}

fn json_bytes<T: Serialize>(v: &T) -> Bytes {
    let mut out = serde_json::to_vec_pretty(v).expect("job records always serialise");
    out.push(b'\n');
    Bytes::from(out)
}

async fn create_json<T: Serialize>(store: &MailStore, key: &str, v: &T) -> Result<bool> {
    Ok(store.create(key, json_bytes(v)).await?)
}

/// The agent's `last_command` (0 without a status).
async fn last_command(store: &MailStore, id: &MailboxId) -> Result<u64> {
    Ok(
        read_json::<Status>(store, &mailbox_key(id, STATUS), "status")
            .await?
            .map_or(0, |s| s.last_command),
    )
}

/// The next free command number of mailbox `id`: above its
/// `last_command` and every existing command and response.
pub async fn next_seq(store: &MailStore, id: &MailboxId) -> Result<u64> {
    let mut max = last_command(store, id).await?;
    for name in store.list_files(&format!("mailboxes/{id}")).await? {
        if let Some((MessageKind::Command | MessageKind::Response, seq)) =
            MessageKind::parse_name(&name)
        {
            max = max.max(seq);
        }
    }
    Ok(max + 1)
}

/// Sends `action` to mailbox `id` as the next command; returns its number.
/// Retries when another manager takes the number first.
pub async fn send_command(
    store: &MailStore,
    id: &MailboxId,
    job: Option<String>,
    action: Action,
) -> Result<u64> {
    for _ in 0..SEND_TRIES {
        let seq = next_seq(store, id).await?;
        let cmd = Command {
            protocol: PROTOCOL_VERSION,
            seq,
            job: job.clone(),
            issued_ms: now_ms(),
            action: action.clone(),
        };
        let key = mailbox_key(id, &MessageKind::Command.file_name(seq));
        if create_json(store, &key, &cmd).await? {
            return Ok(seq);
        }
    }
    Err(JobError::Contended(id.clone(), SEND_TRIES))
}

/// `jobs/<job>/job.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobDef {
    /// The job's id.
    pub id: String,
    /// The agent it runs on.
    pub agent: MailboxId,
    /// Its steps, in order.
    pub steps: Vec<Action>,
    /// When it was made, Unix milliseconds.
    pub created_ms: u64,
}

/// `jobs/<job>/send-<step>-<try>.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SendRecord {
    seq: u64,
}

/// `jobs/<job>/done-<step>.json`: a step's outcome, from the agent's
/// response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepOutcome {
    /// The command's number.
    pub seq: u64,
    /// Whether it succeeded.
    pub ok: bool,
    /// The agent's error text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What it produced.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub result: serde_json::Value,
    /// When the agent finished it.
    pub finished_ms: u64,
}

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    /// Steps remain.
    Running,
    /// Every step succeeded.
    Finished,
    /// A step failed; the rest were not sent.
    Failed,
}

/// `jobs/<job>/end.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct EndRecord {
    state: JobState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    ended_ms: u64,
}

/// One step, for people.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepView {
    /// Its action.
    pub action: Action,
    /// `pending`, `sent`, `done` or `failed`.
    pub state: String,
    /// Its command number, once sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The agent's error text, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What it produced.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub result: serde_json::Value,
}

/// A job with its steps' states and its agent's live status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    /// The job's id.
    pub id: String,
    /// The agent.
    pub agent: MailboxId,
    /// Where it is.
    pub state: JobState,
    /// The first failed step's error text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its steps.
    pub steps: Vec<StepView>,
    /// When it was made.
    pub created_ms: u64,
    /// The agent's state, if it has a status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_state: Option<AgentState>,
    /// The agent's current step text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_step: Option<String>,
    /// The agent's progress, while it works on this job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// Whether the agent's heartbeat is current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
}

/// A fresh job id: creation time and 64 random bits, so ids sort by age.
pub fn new_job_id() -> std::io::Result<String> {
    let mut r = [0u8; 8];
    agent::mailbox::fill_random(&mut r)?;
    Ok(format!("{:013}-{}", now_ms(), hex_lower(&r)))
}

/// Whether `s` can be a job id (a plain name, safe as a key part).
pub fn valid_job_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Records a new job; [`drive`] sends its steps.
pub async fn create_job(store: &MailStore, agent: MailboxId, steps: Vec<Action>) -> Result<JobDef> {
    if steps.is_empty() {
        return Err(JobError::Empty);
    }
    let id = new_job_id().map_err(|e| {
        JobError::Store(StoreError::Url {
            url: store.url().to_string(),
            reason: format!("getrandom: {e}"),
        })
    })?;
    let def = JobDef {
        id: id.clone(),
        agent,
        steps,
        created_ms: now_ms(),
    };
    create_json(store, &format!("jobs/{id}/job.json"), &def).await?;
    Ok(def)
}

/// Every job's id, oldest first.
pub async fn list_jobs(store: &MailStore) -> Result<Vec<String>> {
    Ok(store.list_dirs("jobs").await?)
}

fn latest_send(files: &[String], step: usize) -> Option<(u32, String)> {
    let prefix = format!("send-{step}-");
    files
        .iter()
        .filter_map(|f| {
            let t: u32 = f
                .strip_prefix(&prefix)?
                .strip_suffix(".json")?
                .parse()
                .ok()?;
            Some((t, f.clone()))
        })
        .max()
}

/// Moves job `job` one step forward if it can; returns its state. Safe to
/// run from any number of managers at once (MAILBOX.md, section 6).
pub async fn drive(store: &MailStore, job: &str) -> Result<JobState> {
    let dir = format!("jobs/{job}");
    let files = store.list_files(&dir).await?;
    if let Some(end) = read_json::<EndRecord>(store, &format!("{dir}/end.json"), "job end").await? {
        return Ok(end.state);
    }
    let Some(def) = read_json::<JobDef>(store, &format!("{dir}/job.json"), "job").await? else {
        return Ok(JobState::Running);
    };
    let id = &def.agent;
    let last = last_command(store, id).await?;
    for step in 0..def.steps.len() {
        let done_key = format!("{dir}/done-{step}.json");
        if let Some(done) = read_json::<StepOutcome>(store, &done_key, "step outcome").await? {
            // Acknowledge the response once the agent's status covers it.
            let resp_key = mailbox_key(id, &MessageKind::Response.file_name(done.seq));
            if last >= done.seq {
                store.delete(&resp_key).await?;
            }
            if !done.ok {
                let end = EndRecord {
                    state: JobState::Failed,
                    error: done.error.clone(),
                    ended_ms: now_ms(),
                };
                create_json(store, &format!("{dir}/end.json"), &end).await?;
                return Ok(JobState::Failed);
            }
            continue;
        }
        let action = &def.steps[step];
        let Some((attempt, send_name)) = latest_send(&files, step) else {
            let seq = next_seq(store, id).await?;
            let key = format!("{dir}/send-{step}-0.json");
            if create_json(store, &key, &SendRecord { seq }).await? {
                send_step(store, &def, seq, action).await?;
            }
            return Ok(JobState::Running);
        };
        let Some(rec) =
            read_json::<SendRecord>(store, &format!("{dir}/{send_name}"), "send record").await?
        else {
            return Ok(JobState::Running);
        };
        let n = rec.seq;
        let resp_key = mailbox_key(id, &MessageKind::Response.file_name(n));
        if let Some(resp) = read_json::<Response>(store, &resp_key, "response").await? {
            if resp.job.as_deref() == Some(job) {
                let outcome = StepOutcome {
                    seq: n,
                    ok: resp.ok,
                    error: resp.error,
                    result: resp.result,
                    finished_ms: resp.finished_ms,
                };
                create_json(store, &done_key, &outcome).await?;
                if last >= n {
                    store.delete(&resp_key).await?;
                }
                tracing::info!(job, step, seq = n, ok = outcome.ok, "step done");
                return Ok(JobState::Running);
            }
        }
        let cmd_key = mailbox_key(id, &MessageKind::Command.file_name(n));
        let cmd = read_json::<Command>(store, &cmd_key, "command").await;
        let ours = match cmd {
            Ok(Some(c)) => Some(c.job.as_deref() == Some(job)),
            Ok(None) => None,
            // Someone else's unreadable file holds the number.
            Err(JobError::Malformed { .. }) => Some(false),
            Err(e) => return Err(e),
        };
        match ours {
            Some(true) => {}
            None if n > last => {
                // Its sender died between the record and the command.
                send_step(store, &def, n, action).await?;
            }
            _ => {
                // The number went to someone else, or the agent skipped it
                // -- unless another manager recorded the outcome after this
                // one looked: it writes done before deleting the response,
                // so with the response and command both gone, a fresh look
                // at done settles it.
                if store.get(&done_key).await?.is_some() {
                    return Ok(JobState::Running);
                }
                let seq = next_seq(store, id).await?;
                let key = format!("{dir}/send-{step}-{}.json", attempt + 1);
                if create_json(store, &key, &SendRecord { seq }).await? {
                    tracing::info!(job, step, lost = n, seq, "resending a step");
                    send_step(store, &def, seq, action).await?;
                }
            }
        }
        return Ok(JobState::Running);
    }
    let end = EndRecord {
        state: JobState::Finished,
        error: None,
        ended_ms: now_ms(),
    };
    create_json(store, &format!("{dir}/end.json"), &end).await?;
    tracing::info!(job, "job finished");
    Ok(JobState::Finished)
}

async fn send_step(store: &MailStore, def: &JobDef, seq: u64, action: &Action) -> Result<()> {
    let cmd = Command {
        protocol: PROTOCOL_VERSION,
        seq,
        job: Some(def.id.clone()),
        issued_ms: now_ms(),
        action: action.clone(),
    };
    let key = mailbox_key(&def.agent, &MessageKind::Command.file_name(seq));
    if create_json(store, &key, &cmd).await? {
        tracing::info!(job = def.id, seq, agent = %def.agent, "command sent");
    }
    Ok(())
}

/// Drives every unfinished job once; errors are logged, not returned, so
/// one broken job does not stop the others.
pub async fn drive_all(store: &MailStore) {
    let jobs = match list_jobs(store).await {
        Ok(j) => j,
        Err(e) => {
            tracing::warn!("listing jobs: {e}");
            return;
        }
    };
    for job in jobs {
        if let Err(e) = drive(store, &job).await {
            tracing::warn!(job, "driving: {e}");
        }
    }
}

/// Whether the heartbeat says online at `now_ms` (`None`: no heartbeat).
fn online(hb: Option<&Heartbeat>, now: u64, factor: u32) -> Option<bool> {
    hb.map(|h| !h.is_offline(now, factor))
}

/// Job `job` with its steps' states, or `None` if there is no such job.
pub async fn view(store: &MailStore, job: &str, offline_factor: u32) -> Result<Option<JobView>> {
    let dir = format!("jobs/{job}");
    let Some(def) = read_json::<JobDef>(store, &format!("{dir}/job.json"), "job").await? else {
        return Ok(None);
    };
    let files = store.list_files(&dir).await?;
    let end = read_json::<EndRecord>(store, &format!("{dir}/end.json"), "job end").await?;
    let mut steps = Vec::new();
    let mut error = None;
    for (i, action) in def.steps.iter().enumerate() {
        let done = read_json::<StepOutcome>(store, &format!("{dir}/done-{i}.json"), "step outcome")
            .await?;
        let sent = match latest_send(&files, i) {
            Some((_, name)) => read_json::<SendRecord>(store, &format!("{dir}/{name}"), "send")
                .await?
                .map(|r| r.seq),
            None => None,
        };
        let (state, seq, err, result) = match done {
            Some(d) if d.ok => ("done", Some(d.seq), None, d.result),
            Some(d) => ("failed", Some(d.seq), d.error, d.result),
            None if sent.is_some() => ("sent", sent, None, serde_json::Value::Null),
            None => ("pending", None, None, serde_json::Value::Null),
        };
        if error.is_none() && err.is_some() {
            error = err.clone();
        }
        steps.push(StepView {
            action: action.clone(),
            state: state.into(),
            seq,
            error: err,
            result,
        });
    }
    let status = read_json::<Status>(store, &mailbox_key(&def.agent, STATUS), "status").await?;
    let hb =
        read_json::<Heartbeat>(store, &mailbox_key(&def.agent, HEARTBEAT), "heartbeat").await?;
    let state = end.as_ref().map_or(JobState::Running, |e| e.state);
    let progress = status
        .as_ref()
        .filter(|s| s.job.as_deref() == Some(job) && state == JobState::Running)
        .and_then(|s| s.progress.clone());
    Ok(Some(JobView {
        id: def.id,
        agent: def.agent,
        state,
        error: end.and_then(|e| e.error).or(error),
        steps,
        created_ms: def.created_ms,
        agent_state: status.as_ref().map(|s| s.state),
        agent_step: status.as_ref().and_then(|s| s.step.clone()),
        progress,
        online: online(hb.as_ref(), now_ms(), offline_factor),
    }))
}

/// One agent, for `ferry agents`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentView {
    /// Its mailbox id.
    pub id: MailboxId,
    /// Online (`Some(true)`), offline, or never heard from (`None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    /// What it is doing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<AgentState>,
    /// Its current step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Its job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Its fatal error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When its last heartbeat was written, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
    /// Who it runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<MachineIdentity>,
    /// `4 CPUs, 7.8 GiB, 2 disks, 1 NIC, uefi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<String>,
    /// What the deployed server reported on its first boot (state
    /// `booted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_boot: Option<agent::mailbox::FirstBootReport>,
}

fn hardware_summary(s: &agent::survey::HardwareSurvey) -> String {
    let mut parts = Vec::new();
    if let Some(n) = s.cpu.logical {
        parts.push(format!("{n} CPUs"));
    }
    if let Some(m) = s.memory.total {
        parts.push(format!("{:.1} GiB", m as f64 / (1u64 << 30) as f64));
    }
    parts.push(format!("{} disks", s.disks.len()));
    parts.push(format!("{} NICs", s.nics.len()));
    parts.push(
        serde_json::to_value(s.firmware)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
    );
    parts.retain(|p| !p.is_empty());
    parts.join(", ")
}

/// Every agent's view.
pub async fn list_agents(store: &MailStore, offline_factor: u32) -> Result<Vec<AgentView>> {
    let mut out = Vec::new();
    for name in store.list_dirs("mailboxes").await? {
        let Ok(id) = MailboxId::parse(&name) else {
            continue;
        };
        // A broken status must not hide the agent: show what parses.
        let status = read_json::<Status>(store, &mailbox_key(&id, STATUS), "status")
            .await
            .unwrap_or(None);
        let hb = read_json::<Heartbeat>(store, &mailbox_key(&id, HEARTBEAT), "heartbeat")
            .await
            .unwrap_or(None);
        out.push(AgentView {
            online: online(hb.as_ref(), now_ms(), offline_factor),
            heartbeat_ms: hb.as_ref().map(|h| h.ts_ms),
            state: status.as_ref().map(|s| s.state),
            step: status.as_ref().and_then(|s| s.step.clone()),
            job: status.as_ref().and_then(|s| s.job.clone()),
            error: status.as_ref().and_then(|s| s.error.clone()),
            identity: status.as_ref().map(|s| s.identity.clone()),
            hardware: status
                .as_ref()
                .and_then(|s| s.survey.as_ref())
                .map(hardware_summary),
            first_boot: status.as_ref().and_then(|s| s.first_boot.clone()),
            id,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    type Runs = Arc<Mutex<Vec<(u64, String)>>>;

    fn status(last_command: u64) -> Status {
        Status {
            protocol: PROTOCOL_VERSION,
            agent_version: "test".into(),
            state: AgentState::Idle,
            step: None,
            progress: None,
            job: None,
            last_command,
            error: None,
            identity: MachineIdentity::default(),
            survey: None,
            first_boot: None,
            updated_ms: 0,
        }
    }

    /// An agent that answers each command at once, in the order the agent's
    /// `Mailbox` does (response, delete the command, then status), and
    /// records what it ran.
    async fn quick_agent(store: MailStore, id: MailboxId, stop: Arc<AtomicBool>, runs: Runs) {
        let mut last = 0;
        while !stop.load(Ordering::Relaxed) {
            let mut seqs: Vec<u64> = (store.list_files(&format!("mailboxes/{id}")).await)
                .expect("list")
                .iter()
                .filter_map(|f| match MessageKind::parse_name(f) {
                    Some((MessageKind::Command, seq)) => Some(seq),
                    _ => None,
                })
                .collect();
            seqs.sort_unstable();
            for seq in seqs {
                let key = mailbox_key(&id, &MessageKind::Command.file_name(seq));
                let cmd = read_json::<Command>(&store, &key, "command").await;
                if seq > last {
                    let cmd = cmd.expect("read").expect("command");
                    let Action::Shell { command, .. } = &cmd.action else {
                        panic!("unexpected {:?}", cmd.action);
                    };
                    runs.lock().expect("runs").push((seq, command.clone()));
                    let resp = Response {
                        seq,
                        job: cmd.job.clone(),
                        ok: true,
                        error: None,
                        result: serde_json::Value::Null,
                        finished_ms: now_ms(),
                    };
                    let resp_key = mailbox_key(&id, &MessageKind::Response.file_name(seq));
                    create_json(&store, &resp_key, &resp).await.expect("resp");
                    last = seq;
                }
                store.delete(&key).await.expect("delete");
                let s = json_bytes(&status(last));
                store
                    .replace(&mailbox_key(&id, STATUS), s)
                    .await
                    .expect("status");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Managers racing over one job must never resend a step whose outcome
    /// another has just recorded (a CI run once saw a step run twice).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_managers_run_each_step_once() {
        // Per-call latency, as over S3, widens the windows between reads.
        let ms = Duration::from_millis;
        let lag = object_store::throttle::ThrottleConfig {
            wait_get_per_call: ms(2),
            wait_put_per_call: ms(1),
            wait_delete_per_call: ms(1),
            wait_list_per_call: ms(1),
            ..Default::default()
        };
        let mem = object_store::memory::InMemory::new();
        let store = MailStore::new(
            Arc::new(object_store::throttle::ThrottledStore::new(mem, lag)),
            String::new(),
            "memory://throttled",
        );
        for round in 0..12 {
            let id = MailboxId::generate().expect("id");
            let stop = Arc::new(AtomicBool::new(false));
            let runs = Runs::default();
            let agent = tokio::spawn(quick_agent(
                store.clone(),
                id.clone(),
                stop.clone(),
                runs.clone(),
            ));
            let want: Vec<String> = (0..6).map(|i| format!("step {i}")).collect();
            let steps = (want.iter())
                .map(|c| Action::Shell {
                    command: c.clone(),
                    timeout_s: 5,
                })
                .collect();
            let job = create_job(&store, id, steps).await.expect("job").id;
            let drivers: Vec<_> = (0..4)
                .map(|_| {
                    let (store, job) = (store.clone(), job.clone());
                    tokio::spawn(async move {
                        let until = Instant::now() + Duration::from_secs(30);
                        loop {
                            match drive(&store, &job).await.expect("drive") {
                                JobState::Running => {}
                                s => return s,
                            }
                            assert!(Instant::now() < until, "job stuck");
                            tokio::task::yield_now().await;
                        }
                    })
                })
                .collect();
            for d in drivers {
                assert_eq!(d.await.expect("driver"), JobState::Finished);
            }
            stop.store(true, Ordering::Relaxed);
            agent.await.expect("agent");
            let runs = runs.lock().expect("runs").clone();
            let names: Vec<&String> = runs.iter().map(|r| &r.1).collect();
            assert_eq!(
                names,
                want.iter().collect::<Vec<_>>(),
                "round {round}: {runs:?}"
            );
        }
    }
}
