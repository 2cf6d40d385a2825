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

use agent::firstboot::FirstBootConfig;
use agent::mailbox::AgentState;
use agent::ramdisk::{self, say};
use agent::runner::{self, RunnerConfig};
use imaging::remote::RemoteOptions;

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

/// Set when the agent is asked to stop (`--once`).
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
            if a.pid1 {
                if let Some(until) = ramdisk::return_after(&opts) {
                    return_to_installed_os(&a.root, until);
                }
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let hb = ready.config.heartbeat();
    say(&format!(
        "ready {:.1} s after the kernel started",
        ramdisk::uptime(&a.root).unwrap_or(0.0)
    ));
    let background = ready.background;
    std::thread::spawn(move || report_idle_rss(background));
    let Some(mailbox) = ready.mailbox else {
        // No mailbox: the survey on the console is all there is to give;
        // stay up (PID 1's child) unless asked to stop at once.
        if !a.once {
            loop {
                std::thread::park();
            }
        }
        return Ok(ExitCode::SUCCESS);
    };
    say(&format!(
        "mailbox: {} (heartbeat every {hb:?})",
        mailbox.transport().describe()
    ));
    if a.once {
        // Long enough for the first status and heartbeat.
        std::thread::spawn(move || {
            std::thread::sleep(hb / 2);
            STOP.store(true, Ordering::Relaxed);
        });
    }
    let cfg = RunnerConfig {
        root: a.root.clone(),
        heartbeat: hb,
        library: ready.config.library(),
        remote: RemoteOptions {
            token: ready.agent_token.clone(),
            trust: ready.config.trust().ok().flatten(),
            ..RemoteOptions::default()
        },
        drivers: None,
        // Reboot, poweroff and kexec act only on a machine the agent owns.
        allow_power: a.pid1,
        first_boot: first_boot_config(&ready.config, ready.agent_token.as_deref()),
        ..RunnerConfig::default()
    };
    if let Err(e) = runner::run(mailbox, ready.survey, &cfg, &STOP) {
        say(&format!("FATAL: {}", runner::error_chain(&e)));
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Reboots, `until` after boot, into the installed OS of a machine the
/// agent was swapped onto (`ferry.return_after`); returns only if the
/// reboot failed.
fn return_to_installed_os(root: &std::path::Path, until: Duration) {
    let up = Duration::from_secs_f64(ramdisk::uptime(root).unwrap_or(0.0));
    let wait = until.saturating_sub(up);
    say(&format!(
        "returning to the installed OS: rebooting in {} s (ferry.return_after={})",
        wait.as_secs(),
        until.as_secs()
    ));
    std::thread::sleep(wait);
    say(&agent::runner::actions::PowerAction::Reboot.act());
}

/// The first-boot check adapt installs into the servers this agent
/// deploys: they report to this agent's mailbox on an `https://` server,
/// with its token and CA, using a copy of this (static, in the ramdisk)
/// binary. `None` for other mailboxes.
fn first_boot_config(
    config: &ramdisk::AgentConfig,
    token: Option<&str>,
) -> Option<FirstBootConfig> {
    let server = config.server.as_deref()?;
    let token = token?;
    if !server.starts_with("https://") {
        return None;
    }
    let base = server.split("/v1/").next().unwrap_or(server);
    let mailbox = agent::mailbox::connect::token_mailbox(token)?;
    // /proc/self/exe resolved; the link itself still reads the running
    // binary if that file has been replaced or deleted since.
    let binary = std::env::current_exe()
        .ok()
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
    Some(FirstBootConfig {
        server: base.trim_end_matches('/').to_string(),
        mailbox,
        token: token.to_string(),
        ca_pem: config.ca_pem.clone(),
        ca_sha256: config.ca_sha256.clone(),
        binary,
    })
}

/// Prints the agent's memory once bring-up is over (background module
/// loading included): the idle RSS the target is about.
fn report_idle_rss(background: Option<std::thread::JoinHandle<()>>) {
    let start = Instant::now();
    if let Some(h) = background {
        let _ = h.join();
    }
    std::thread::sleep(Duration::from_secs(2));
    // mimalloc frees lazily, on its next call: an idle agent makes none,
    // so hand what bring-up used back to the kernel now.
    #[cfg(target_env = "musl")]
    // SAFETY: mi_collect only walks mimalloc's own heaps; it is safe to
    // call from any thread at any time.
    unsafe {
        libmimalloc_sys::mi_collect(true)
    };
    let rss = ramdisk::Rss::current().unwrap_or_default();
    say(&format!(
        "idle: rss {} KiB (anon {} KiB, file {} KiB, shmem {} KiB) after {:.0} s",
        rss.total,
        rss.anon,
        rss.file,
        rss.shmem,
        start.elapsed().as_secs_f64()
    ));
}
