//! Progress events. Libraries report `Progress { step, done, total }`; the CLI
//! renders them as a bar or plain lines, the agent writes them into its
//! mailbox status.

/// How far a step has come, in bytes unless the step says otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// What is being done: "capture", "restore", "verify", "gc".
    pub step: &'static str,
    /// Units done.
    pub done: u64,
    /// Units in all (0 when unknown).
    pub total: u64,
}

/// Receives progress events. Called from worker threads, at most a few
/// times a second per step.
pub trait ProgressSink: Send + Sync {
    /// One event.
    fn progress(&self, p: Progress);
}

impl<F: Fn(Progress) + Send + Sync> ProgressSink for F {
    fn progress(&self, p: Progress) {
        self(p)
    }
}

/// Discards events.
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn progress(&self, _: Progress) {}
}

/// Rate-limits events to one per [`Throttle::INTERVAL`], plus the last.
pub(crate) struct Throttle<'a> {
    sink: &'a dyn ProgressSink,
    step: &'static str,
    total: u64,
    last: std::time::Instant,
}

impl<'a> Throttle<'a> {
    const INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

    pub(crate) fn new(sink: &'a dyn ProgressSink, step: &'static str, total: u64) -> Self {
        sink.progress(Progress {
            step,
            done: 0,
            total,
        });
        Throttle {
            sink,
            step,
            total,
            last: std::time::Instant::now(),
        }
    }

    pub(crate) fn update(&mut self, done: u64) {
        if self.last.elapsed() >= Self::INTERVAL {
            self.last = std::time::Instant::now();
            self.sink.progress(Progress {
                step: self.step,
                done,
                total: self.total,
            });
        }
    }

    pub(crate) fn finish(&mut self, done: u64) {
        self.sink.progress(Progress {
            step: self.step,
            done,
            total: self.total.max(done),
        });
    }
}
