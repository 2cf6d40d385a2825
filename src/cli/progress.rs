//! Renders engine progress events: an indicatif bar on a terminal, plain
//! periodic lines otherwise (logs, CI, the agent's console).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use imaging::{Progress, ProgressSink};
use indicatif::{ProgressBar, ProgressStyle};

/// How often plain lines are printed.
const LINE_EVERY: Duration = Duration::from_secs(2);

/// A progress renderer for stderr.
pub struct CliProgress {
    inner: Mutex<Inner>,
}

enum Inner {
    Bar(Option<ProgressBar>),
    Lines {
        last: Option<Instant>,
        started: Instant,
    },
}

impl CliProgress {
    /// A bar if stderr is a terminal, lines otherwise.
    pub fn new() -> Self {
        let inner = if std::io::stderr().is_terminal() {
            Inner::Bar(None)
        } else {
            Inner::Lines {
                last: None,
                started: Instant::now(),
            }
        };
        CliProgress {
            inner: Mutex::new(inner),
        }
    }

    /// Removes the bar, if any, before a summary is printed.
    pub fn clear(&self) {
        if let Inner::Bar(Some(bar)) = &*self.inner.lock().unwrap_or_else(|e| e.into_inner()) {
            bar.finish_and_clear();
        }
    }
}

impl ProgressSink for CliProgress {
    fn progress(&self, p: Progress) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *inner {
            Inner::Bar(bar) => {
                let bar = bar.get_or_insert_with(|| {
                    // An unknown total (a tree being walked) gets a spinner.
                    let (b, template) = if p.total > 0 {
                        (
                            ProgressBar::new(p.total),
                            "{msg:>8} [{bar:32}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                        )
                    } else {
                        (ProgressBar::no_length(), "{msg:>8} {spinner} {bytes} {binary_bytes_per_sec}")
                    };
                    b.set_style(
                        ProgressStyle::with_template(template)
                            .expect("the template is valid")
                            .progress_chars("=> "),
                    );
                    b.set_message(p.step);
                    b
                });
                if p.total > 0 {
                    bar.set_length(p.total.max(p.done));
                }
                bar.set_position(p.done);
            }
            Inner::Lines { last, started } => {
                let due = last.is_none_or(|t| t.elapsed() >= LINE_EVERY);
                let end = p.total > 0 && p.done >= p.total;
                if due || end {
                    *last = Some(Instant::now());
                    let secs = started.elapsed().as_secs_f64();
                    let pct = if p.total > 0 {
                        100.0 * p.done as f64 / p.total as f64
                    } else {
                        0.0
                    };
                    eprintln!(
                        "{}: {} / {} ({pct:.0}%), {}",
                        p.step,
                        super::bytes(p.done),
                        super::bytes(p.total),
                        super::rate(p.done, secs)
                    );
                }
            }
        }
    }
}
