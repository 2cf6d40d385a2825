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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    use super::*;
    use crate::mailbox::{read_json, LocalTransport, Transport, STATUS};
    use imaging::ProgressSink;

    /// Counts status writes.
    struct Counting {
        inner: LocalTransport,
        writes: Arc<AtomicUsize>,
    }

    impl Transport for Counting {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn read(&self, name: &str) -> std::io::Result<Option<Vec<u8>>> {
            self.inner.read(name)
        }
        fn replace(&self, name: &str, data: &[u8]) -> std::io::Result<()> {
            if name == STATUS {
                self.writes.fetch_add(1, Ordering::Relaxed);
            }
            self.inner.replace(name, data)
        }
        fn create(&self, name: &str, data: &[u8]) -> std::io::Result<bool> {
            self.inner.create(name, data)
        }
        fn list(&self) -> std::io::Result<Vec<String>> {
            self.inner.list()
        }
        fn delete(&self, name: &str) -> std::io::Result<()> {
            self.inner.delete(name)
        }
    }

    fn survey() -> crate::survey::HardwareSurvey {
        let root =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hw/virtio");
        crate::survey::survey(&root).expect("fixture survey")
    }

    #[test]
    fn progress_is_throttled_but_steps_and_ends_are_written() {
        let d = tempfile::tempdir().expect("tempdir");
        let writes = Arc::new(AtomicUsize::new(0));
        let t = Counting {
            inner: LocalTransport::new(d.path()),
            writes: Arc::clone(&writes),
        };
        let mb = Mailbox::new(Box::new(t), 0).expect("mailbox");
        let r = Reporter::new(mb, super::super::initial_status(&survey()));
        let sink = r.progress_sink("capture web1");
        // 10,000 events in a burst: the first (a new step) and the last
        // (done == total) are written, hardly any between.
        for done in 0..=10_000u64 {
            sink.progress(imaging::Progress {
                step: "capture",
                done,
                total: 10_000,
            });
        }
        let n = writes.load(Ordering::Relaxed);
        assert!((2..=4).contains(&n), "{n} status writes");
        let s: Status = read_json(&LocalTransport::new(d.path()), STATUS, "status")
            .expect("read")
            .expect("status");
        assert_eq!(s.step.as_deref(), Some("capture web1: capture"));
        let p = s.progress.expect("progress");
        assert_eq!((p.done, p.total), (10_000, Some(10_000)));
        // A new step is written at once.
        sink.progress(imaging::Progress {
            step: "verify",
            done: 1,
            total: 0,
        });
        assert_eq!(writes.load(Ordering::Relaxed), n + 1);
    }
}
