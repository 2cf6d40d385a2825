//! The agent's side of the mailbox, shared by the command loop, the
//! heartbeat thread and the image engine's worker threads (progress).
//!
//! One lock order everywhere: the status, then the mailbox. A status is
//! written while its lock is held, so two writers (a progress event and a
//! state change) can never publish an older status after a newer one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::mailbox::{Command, Mailbox, MailboxError, Progress, Status};

/// The most often a progress event rewrites `status.json` (a manager's
/// progress bar needs no more; an S3 mailbox pays per write).
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// The mailbox and the status the agent publishes in it.
pub struct Reporter {
    mailbox: Mutex<Mailbox>,
    status: Mutex<Status>,
    last_progress: Mutex<Option<Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock aborts the process (panic = "abort"),
    // and the data stays consistent in tests: take it regardless.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Reporter {
    /// Wraps the agent's mailbox; `status` is what it publishes first.
    pub fn new(mailbox: Mailbox, status: Status) -> Reporter {
        Reporter {
            mailbox: Mutex::new(mailbox),
            status: Mutex::new(status),
            last_progress: Mutex::new(None),
        }
    }

    /// Writes the current status.
    pub fn publish(&self) -> Result<(), MailboxError> {
        let s = lock(&self.status);
        lock(&self.mailbox).write_status(&s)
    }

    /// Changes the status and writes it. The change is kept even when the
    /// write fails (the next write carries it).
    pub fn update(&self, change: impl FnOnce(&mut Status)) -> Result<(), MailboxError> {
        let mut s = lock(&self.status);
        change(&mut s);
        let r = lock(&self.mailbox).write_status(&s);
        if let Err(e) = &r {
            tracing::warn!("status not written: {}", super::error_chain(e));
        }
        r
    }

    /// The commands waiting, in order.
    pub fn pending_commands(&self) -> Result<Vec<Command>, MailboxError> {
        lock(&self.mailbox).pending_commands()
    }

    /// Answers a command.
    pub fn finish(
        &self,
        seq: u64,
        job: Option<String>,
        outcome: Result<serde_json::Value, String>,
    ) -> Result<(), MailboxError> {
        // The status lock first (the lock order), so that the status
        // written next carries the new `last_command`.
        let _s = lock(&self.status);
        lock(&self.mailbox).finish(seq, job, outcome)
    }

    /// Writes a heartbeat every `interval` until `stop` or `done` is set.
    pub fn beat(&self, interval: Duration, stop: &AtomicBool, done: &AtomicBool) {
        let interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) && !done.load(Ordering::Relaxed) {
            if Instant::now() >= next {
                if let Err(e) = lock(&self.mailbox).heartbeat(interval_ms) {
                    tracing::warn!("heartbeat not written: {}", super::error_chain(&e));
                }
                next = Instant::now() + interval;
            }
            std::thread::sleep(Duration::from_millis(50).min(interval));
        }
    }

    /// A progress sink for the command described as `label`: its events
    /// become `status.step` (`label: restore`) and `status.progress`,
    /// written at most once per [`PROGRESS_INTERVAL`] plus every
    /// step's last event.
    pub fn progress_sink<'a>(&'a self, label: &'a str) -> impl imaging::ProgressSink + 'a {
        move |p: imaging::Progress| {
            let step = format!("{label}: {}", p.step);
            let mut s = lock(&self.status);
            let new_step = s.step.as_deref() != Some(step.as_str());
            let finished = p.total > 0 && p.done >= p.total;
            s.step = Some(step);
            s.progress = Some(Progress {
                done: p.done,
                total: (p.total > 0).then_some(p.total),
                unit: "bytes".into(),
            });
            let mut last = lock(&self.last_progress);
            let due = last.is_none_or(|t| t.elapsed() >= PROGRESS_INTERVAL);
            if new_step || finished || due {
                *last = Some(Instant::now());
                drop(last);
                if let Err(e) = lock(&self.mailbox).write_status(&s) {
                    tracing::warn!("progress not written: {}", super::error_chain(&e));
                }
            }
        }
    }
}
