//! `ferry agent`: the agent on the machine being moved. As PID 1 (the
//! ramdisk's `/init`) it supervises; its child, `ferry agent --pid1`,
//! brings the machine up and serves the mailbox. `--no-pid1 --root DIR`
//! runs the same bring-up against a fixture tree without touching the
//! machine (nothing mounted, loaded or configured).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use agent::mailbox::AgentState;
use agent::ramdisk::{self, say};

/// Arguments of `ferry agent`.
#[derive(clap::Args)]
pub struct AgentArgs {
    /// The root whose /sys, /proc and /etc are read.
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Bring the machine up: load modules, configure the network (implied
    /// when running as PID 1, which then supervises this mode).
    #[arg(long, conflicts_with = "no_pid1")]
    pid1: bool,
    /// Never act as PID 1 or touch the machine, even as process 1.
    #[arg(long)]
    no_pid1: bool,
    /// The kernel module tree (default ROOT/lib/modules/`uname -r`).
    #[arg(long)]
    modules: Option<PathBuf>,
    /// The kernel command line to use instead of ROOT/proc/cmdline.
    #[arg(long)]
    cmdline: Option<String>,
    /// Seconds to wait for disks and NICs to appear.
    #[arg(long, default_value_t = 10)]
    device_wait: u64,
    /// Exit after the first heartbeat instead of serving the mailbox.
    #[arg(long)]
    once: bool,
}

/// Whether ferry was started by the kernel as the ramdisk's `/init`: then
/// it runs `ferry agent`, whatever arguments the kernel passed.
pub fn started_as_init(argv0: Option<&OsString>) -> bool {
    argv0
        .map(|a| std::path::Path::new(a).file_name() == Some(std::ffi::OsStr::new("init")))
        .unwrap_or(false)
}

/// Set when the agent is asked to stop (never, until the runner arrives).
static STOP: AtomicBool = AtomicBool::new(false);

/// Runs `ferry agent`.
pub fn run(a: AgentArgs) -> anyhow::Result<ExitCode> {
    if std::process::id() == 1 && !a.no_pid1 {
        let mut child = std::process::Command::new("/proc/self/exe");
        child.arg0("ferry").args(["agent", "--pid1"]);
        ramdisk::supervise(&a.root, child);
    }
    let opts = ramdisk::Options {
        root: a.root.clone(),
        machine: a.pid1,
        modules: a.modules.clone(),
        cmdline: a.cmdline.clone(),
        device_wait: Duration::from_secs(a.device_wait),
    };
    say(&format!("ferry {} starting", env!("CARGO_PKG_VERSION")));
    let ready = match ramdisk::bring_up(&opts) {
        Ok(r) => r,
        Err((e, mailbox)) => {
            say(&format!("FATAL: {e}"));
            if let Some(m) = mailbox {
                let st = ramdisk::status(AgentState::Failed, None, Some(e.to_string()));
                if let Err(w) = m.write_status(&st) {
                    say(&format!("could not report the error to the mailbox: {w}"));
                }
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let hb = ready.config.heartbeat();
    // replaced by runner::run at merge
    if let Some(m) = &ready.mailbox {
        m.write_status(&ramdisk::status(
            AgentState::Idle,
            Some(&ready.survey),
            None,
        ))?;
        m.heartbeat(hb.as_millis() as u64)?;
        say(&format!(
            "mailbox: {} (status written, heartbeat every {hb:?})",
            m.transport().describe()
        ));
    }
    say(&format!(
        "ready {:.1} s after the kernel started",
        ramdisk::uptime(&a.root).unwrap_or(0.0)
    ));
    let mut rss_printed = false;
    let start = Instant::now();
    while !STOP.load(Ordering::Relaxed) {
        std::thread::sleep(hb);
        if let Some(m) = &ready.mailbox {
            if let Err(e) = m.heartbeat(hb.as_millis() as u64) {
                say(&format!("heartbeat: {e}"));
            }
        }
        // Idle means bring-up is over, background module loading included.
        let busy = ready.background.as_ref().is_some_and(|h| !h.is_finished());
        if !rss_printed && !busy {
            rss_printed = true;
            // mimalloc frees lazily, on its next call: an idle agent makes
            // none, so hand what bring-up used back to the kernel now.
            #[cfg(target_env = "musl")]
            // SAFETY: mi_collect only walks mimalloc's own heaps; it is
            // safe to call from any thread at any time.
            unsafe {
                libmimalloc_sys::mi_collect(true)
            };
            say(&format!(
                "idle: rss {} KiB after {:.0} s",
                ramdisk::rss_kib().unwrap_or(0),
                start.elapsed().as_secs_f64()
            ));
        }
        if a.once {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}
