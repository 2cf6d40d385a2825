//! The agent's command loop: what `ferry agent` does once the machine is
//! up (after the ramdisk bring-up, or on a live system).
//!
//! [`run`] publishes the agent's [`Status`] (identity, hardware survey,
//! state `Idle`), starts a heartbeat thread that writes `heartbeat.json`
//! every [`RunnerConfig::heartbeat`] for as long as the loop runs (also
//! while a long capture or deploy is executing), then polls the mailbox for
//! commands every [`RunnerConfig::poll`] and carries them out one at a time,
//! in sequence order:
//!
//! 1. status `Busy`, with the command's job and a step for people;
//! 2. the action ([`actions`]): survey, capture, deploy (+ adapt), adapt,
//!    shell, reboot, poweroff, kexec; progress events from the image engine
//!    go into `status.progress`, at most about once a second;
//! 3. the response (`Mailbox::finish`): the action's result, or its error
//!    with the whole chain of causes (`deploying image web1: /dev/sda: …`);
//! 4. status `Idle` again. Reboot, poweroff and kexec answer *before* they
//!    act, since nothing can answer afterwards.
//!
//! A mailbox that cannot be reached is retried with a growing pause (up to
//! [`MAX_BACKOFF`]) while the heartbeat thread keeps trying too; after
//! [`RunnerConfig::offline_limit`] without a single successful exchange, or
//! when an answer cannot be written for that long, [`run`] returns the error
//! so that the caller (PID-1 mode) can fall back (rescue shell, or a reboot
//! into the old OS after a ramdisk swap). Otherwise it returns only when
//! `stop` is set.

pub mod actions;
pub mod kexec;
mod reporter;
pub mod shell;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::mailbox::{
    AgentState, Command, MachineIdentity, Mailbox, MailboxError, Status, PROTOCOL_VERSION,
};
use crate::survey::HardwareSurvey;

pub use actions::{error_chain, open_library, ActionError, Outcome, PowerAction};
pub use reporter::Reporter;

/// The longest pause between two attempts to reach an unreachable mailbox.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How the loop runs.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// The root holding /sys, /proc and /dev (`/`; a fixture tree in tests).
    pub root: PathBuf,
    /// How often the heartbeat is written.
    pub heartbeat: Duration,
    /// The image library: a local path, `file://`, `https://` (through
    /// `ferry serve`) or `s3://` URL.
    pub library: Option<String>,
    /// Token and CA for a network library (the agent's own mailbox token
    /// and the CA its media embed).
    pub remote: imaging::remote::RemoteOptions,
    /// The driver library for OS adaptation.
    pub drivers: Option<PathBuf>,
    /// Whether reboot, poweroff and kexec really act; when false they
    /// answer with what they would have done (tests).
    pub allow_power: bool,
    /// How often the mailbox is polled for commands.
    pub poll: Duration,
    /// How long the mailbox may stay unreachable before [`run`] gives up.
    pub offline_limit: Duration,
    /// The first-boot check that adapt installs into deployed servers
    /// (the agent's own mailbox, token and CA).
    pub first_boot: Option<crate::firstboot::FirstBootConfig>,
}

impl Default for RunnerConfig {
    fn default() -> RunnerConfig {
        RunnerConfig {
            root: PathBuf::from("/"),
            heartbeat: Duration::from_secs(10),
            library: None,
            remote: imaging::remote::RemoteOptions::default(),
            drivers: None,
            allow_power: true,
            poll: Duration::from_secs(1),
            // Long enough to ride out a server restart or a network blip;
            // short enough that a swapped server whose manager is gone
            // returns to its old OS within the quarter hour.
            offline_limit: Duration::from_secs(15 * 60),
            first_boot: None,
        }
    }
}

/// Why the loop stopped without being asked to.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The mailbox stayed unreachable for longer than the offline limit.
    #[error("the mailbox has been unreachable for {seconds} s (limit {limit} s)")]
    Offline {
        /// How long it has been unreachable.
        seconds: u64,
        /// The limit.
        limit: u64,
        /// The last error.
        #[source]
        source: MailboxError,
    },
}

/// The status the agent starts with: `Idle`, its identity and survey.
pub fn initial_status(survey: &HardwareSurvey) -> Status {
    Status {
        protocol: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        state: AgentState::Idle,
        step: None,
        progress: None,
        job: None,
        last_command: 0,
        error: None,
        identity: MachineIdentity::from_survey(survey),
        survey: Some(survey.clone()),
        updated_ms: 0,
        first_boot: None,
    }
}

/// Tracks how long the mailbox has been unreachable and how long to wait
/// before the next attempt.
struct Backoff {
    since: Option<Instant>,
    failures: u32,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            since: None,
            failures: 0,
        }
    }

    fn ok(&mut self) {
        if self.since.is_some() {
            tracing::info!("the mailbox is reachable again");
        }
        self.since = None;
        self.failures = 0;
    }

    /// Records a failure; returns the pause before the next attempt, or the
    /// fatal error when the offline limit is passed.
    fn failed(&mut self, e: MailboxError, limit: Duration) -> Result<Duration, RunnerError> {
        let since = *self.since.get_or_insert_with(Instant::now);
        self.failures = self.failures.saturating_add(1);
        if since.elapsed() > limit {
            return Err(RunnerError::Offline {
                seconds: since.elapsed().as_secs(),
                limit: limit.as_secs(),
                source: e,
            });
        }
        tracing::warn!(
            "mailbox unreachable (attempt {}): {}",
            self.failures,
            error_chain(&e)
        );
        let pause = Duration::from_millis(500)
            .saturating_mul(1u32 << self.failures.min(8))
            .min(MAX_BACKOFF);
        Ok(pause)
    }
}

/// Sleeps for `d`, waking early when `stop` is set.
fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= end {
            return;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// Runs the agent's command loop on `mailbox` until `stop` is set (see the
/// module documentation). `survey` is the machine's hardware survey, taken
/// during bring-up.
pub fn run(
    mailbox: Mailbox,
    survey: HardwareSurvey,
    cfg: &RunnerConfig,
    stop: &AtomicBool,
) -> Result<(), RunnerError> {
    let reporter = Reporter::new(mailbox, initial_status(&survey));
    let mut backoff = Backoff::new();
    // The first status: retried like any exchange until the mailbox answers.
    while !stop.load(Ordering::Relaxed) {
        match reporter.publish() {
            Ok(()) => break,
            Err(e) => {
                let pause = backoff.failed(e, cfg.offline_limit)?;
                sleep_unless(stop, pause);
            }
        }
    }
    let done = AtomicBool::new(false);
    let result = std::thread::scope(|scope| {
        scope.spawn(|| reporter.beat(cfg.heartbeat, stop, &done));
        let r = command_loop(&reporter, survey, cfg, stop, &mut backoff);
        done.store(true, Ordering::Relaxed);
        r
    });
    if let Err(e) = &result {
        let msg = error_chain(e);
        tracing::error!("{msg}");
        // Probably unreachable, but the manager may yet read it.
        let _ = reporter.update(|s| {
            s.state = AgentState::Failed;
            s.error = Some(msg.clone());
        });
    }
    result
}

fn command_loop(
    reporter: &Reporter,
    mut survey: HardwareSurvey,
    cfg: &RunnerConfig,
    stop: &AtomicBool,
    backoff: &mut Backoff,
) -> Result<(), RunnerError> {
    while !stop.load(Ordering::Relaxed) {
        let cmds = match reporter.pending_commands() {
            Ok(c) => {
                backoff.ok();
                c
            }
            Err(e) => {
                let pause = backoff.failed(e, cfg.offline_limit)?;
                sleep_unless(stop, pause);
                continue;
            }
        };
        for cmd in cmds {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            execute(reporter, &mut survey, cfg, stop, backoff, cmd)?;
        }
        sleep_unless(stop, cfg.poll);
    }
    Ok(())
}

/// Carries out one command and answers it.
fn execute(
    reporter: &Reporter,
    survey: &mut HardwareSurvey,
    cfg: &RunnerConfig,
    stop: &AtomicBool,
    backoff: &mut Backoff,
    cmd: Command,
) -> Result<(), RunnerError> {
    let label = actions::describe(&cmd.action);
    tracing::info!("command {}: {label}", cmd.seq);
    let _ = reporter.update(|s| {
        s.state = AgentState::Busy;
        s.step = Some(label.clone());
        s.job = cmd.job.clone();
        s.progress = None;
    });
    let ctx = actions::Context {
        cfg,
        survey,
        progress: &reporter.progress_sink(&label),
    };
    let outcome = actions::perform(&ctx, &cmd.action);
    let (answer, then, new_survey) = match outcome {
        Ok(o) => (Ok(o.result), o.then, o.survey),
        Err(e) => {
            let msg = error_chain(&e);
            tracing::warn!("command {} ({label}) failed: {msg}", cmd.seq);
            (Err(msg), None, None)
        }
    };
    if let Some(s) = new_survey {
        *survey = s;
        let _ = reporter.update(|st| {
            st.identity = MachineIdentity::from_survey(survey);
            st.survey = Some(survey.clone());
        });
    }
    // The answer must get out: a command answered late is better than a
    // command run twice.
    loop {
        match reporter.finish(cmd.seq, cmd.job.clone(), answer.clone()) {
            Ok(()) => {
                backoff.ok();
                break;
            }
            Err(e) => {
                let pause = backoff.failed(e, cfg.offline_limit)?;
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                sleep_unless(stop, pause);
            }
        }
    }
    if let Some(power) = then {
        let _ = reporter.update(|s| s.step = Some(format!("{}: now", power.name())));
        // Only returns on failure: the machine is going down otherwise.
        let e = power.act();
        tracing::error!("{}: {e}", power.name());
    }
    let _ = reporter.update(|s| {
        s.state = AgentState::Idle;
        s.step = None;
        s.job = None;
        s.progress = None;
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    use super::*;
    use crate::mailbox::{LocalTransport, Transport, HEARTBEAT};

    /// A mailbox whose listing fails (the server is down for commands)
    /// while writes still land: counts heartbeats.
    struct Flaky {
        inner: LocalTransport,
        beats: Arc<AtomicUsize>,
    }

    impl Transport for Flaky {
        fn describe(&self) -> String {
            "flaky".into()
        }
        fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
            self.inner.read(name)
        }
        fn replace(&self, name: &str, data: &[u8]) -> io::Result<()> {
            if name == HEARTBEAT {
                self.beats.fetch_add(1, Ordering::Relaxed);
            }
            self.inner.replace(name, data)
        }
        fn create(&self, name: &str, data: &[u8]) -> io::Result<bool> {
            self.inner.create(name, data)
        }
        fn list(&self) -> io::Result<Vec<String>> {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection timed out",
            ))
        }
        fn delete(&self, name: &str) -> io::Result<()> {
            self.inner.delete(name)
        }
    }

    #[test]
    fn an_unreachable_mailbox_is_retried_then_given_up() {
        let d = tempfile::tempdir().expect("tempdir");
        let beats = Arc::new(AtomicUsize::new(0));
        let t = Flaky {
            inner: LocalTransport::new(d.path()),
            beats: Arc::clone(&beats),
        };
        let mb = Mailbox::new(Box::new(t), 0).expect("mailbox");
        let root =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hw/virtio");
        let survey = crate::survey::survey(&root).expect("fixture survey");
        let cfg = RunnerConfig {
            root,
            heartbeat: Duration::from_millis(100),
            poll: Duration::from_millis(50),
            offline_limit: Duration::from_secs(2),
            allow_power: false,
            ..Default::default()
        };
        let started = Instant::now();
        let e = run(mb, survey, &cfg, &AtomicBool::new(false)).expect_err("must give up");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(10),
            "{took:?}"
        );
        let msg = error_chain(&e);
        assert!(
            msg.contains("unreachable") && msg.contains("connection timed out"),
            "{msg}"
        );
        // It kept beating while it retried.
        assert!(beats.load(Ordering::Relaxed) >= 10, "{beats:?}");
        // And said why it stopped, where a manager can read it.
        let s: Status =
            crate::mailbox::read_json(&LocalTransport::new(d.path()), "status.json", "status")
                .expect("read")
                .expect("status");
        assert_eq!(s.state, AgentState::Failed);
        assert!(s
            .error
            .as_deref()
            .unwrap_or("")
            .contains("connection timed out"));
    }
}
