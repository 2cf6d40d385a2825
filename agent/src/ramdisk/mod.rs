//! PID-1 mode: the agent as the init of its ramdisk (issue 6).
//!
//! [`supervise`] is what runs as PID 1: it mounts proc, sys, devtmpfs, run
//! and /tmp, starts the agent proper as its child (`ferry agent --pid1`),
//! and from then on only reaps: every orphan on the system becomes its
//! child and is waited for, so no zombie stays. When the agent exits (a
//! fatal error, or a crash), it offers a rescue shell on the console and
//! starts it again each time it exits. PID 1 never exits (that would panic
//! the kernel).
//!
//! [`bring_up`] is the agent proper's start: coldplug ([`coldplug`]), a
//! bounded wait for disks and NICs (`modprobe.blacklist=` is honoured),
//! the network ([`net`]), the
//! configuration ([`config`]), the survey, the mailbox. Each step prints a
//! `ferry-agent: ` line on the console; [`survey_line`] is the stable
//! one-line summary tests look for. Outside a ramdisk (`--no-pid1`, a
//! fixture root), nothing is mounted, loaded or configured: coldplug only
//! plans and the network is left alone.

pub mod coldplug;
pub mod config;
pub mod net;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::mailbox::{self, Mailbox};
use crate::survey::{self, HardwareSurvey};

pub use config::AgentConfig;

/// Why bring-up failed: printed as `ferry-agent: FATAL: …`.
#[derive(Debug, thiserror::Error)]
pub enum RamdiskError {
    /// The survey could not read sysfs.
    #[error(transparent)]
    Survey(#[from] survey::SurveyError),
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(#[from] config::ConfigError),
    /// No disks appeared.
    #[error("no disks: none appeared within {waited:?} (optical drives do not count){hint}")]
    NoDisks {
        /// How long it waited.
        waited: Duration,
        /// Storage controllers no module claimed, when known.
        hint: String,
    },
    /// The network is needed (a remote mailbox) but did not come up.
    #[error("no network, and the mailbox {server} needs one: {reason}")]
    NoNetwork {
        /// The configured server.
        server: String,
        /// Why.
        reason: String,
    },
    /// The mailbox could not be opened.
    #[error("mailbox {server}: {reason}")]
    Mailbox {
        /// The configured server.
        server: String,
        /// Why.
        reason: String,
    },
}

/// How to bring up.
#[derive(Clone, Debug)]
pub struct Options {
    /// The root whose /sys, /proc and /etc are read (`/`).
    pub root: PathBuf,
    /// Really bring the machine up: load modules, configure the network.
    pub machine: bool,
    /// The module tree (default ROOT/lib/modules/`uname -r`).
    pub modules: Option<PathBuf>,
    /// The kernel command line (default ROOT/proc/cmdline).
    pub cmdline: Option<String>,
    /// How long to wait for disks and NICs.
    pub device_wait: Duration,
}

/// A brought-up agent.
pub struct Ready {
    /// Its configuration.
    pub config: AgentConfig,
    /// The survey.
    pub survey: HardwareSurvey,
    /// The mailbox, when one is configured.
    pub mailbox: Option<Mailbox>,
    /// The agent's own token (after enrolment), for the network library.
    pub agent_token: Option<String>,
    /// Loading the file-system modules, still running after `ready`.
    pub background: Option<std::thread::JoinHandle<()>>,
}

/// Prints a console line, stamped like the kernel's with seconds since boot.
pub fn say(msg: &str) {
    println!(
        "[{:8.3}] ferry-agent: {msg}",
        uptime(Path::new("/")).unwrap_or(0.0)
    );
}

/// Seconds since the kernel started (ROOT/proc/uptime).
/// How long an agent with `ferry.return_after` waits between attempts to
/// reach its server.
const MAILBOX_RETRY: Duration = Duration::from_secs(10);

/// When this agent returns to the installed OS after failing to come up
/// (`ferry.return_after`, counted from boot), if it does. Read from the
/// configuration, or from the command line alone when the configuration
/// is what failed.
pub fn return_after(opts: &Options) -> Option<Duration> {
    let cmdline = opts.cmdline.clone().unwrap_or_else(|| {
        std::fs::read_to_string(opts.root.join("proc/cmdline")).unwrap_or_default()
    });
    match config::load(&opts.root, &cmdline) {
        Ok(cfg) => cfg.return_after(),
        Err(_) => config::cmdline_value(&config::split_cmdline(&cmdline), "ferry.return_after")
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&s| s > 0)
            .map(Duration::from_secs),
    }
}

pub fn uptime(root: &Path) -> Option<f64> {
    std::fs::read_to_string(root.join("proc/uptime"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// This process's resident memory in KiB (/proc/self/status VmRSS).
pub fn rss_kib() -> Option<u64> {
    Rss::parse(&std::fs::read_to_string("/proc/self/status").ok()?).map(|r| r.total)
}

/// A process's resident memory, split as /proc/PID/status splits it, in
/// KiB. The agent's own text is `file` on a disk but `shmem` in the
/// ramdisk (its rootfs is tmpfs): either way those pages are the binary's,
/// held in RAM anyway, so `anon` is what the agent costs the machine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rss {
    /// VmRSS.
    pub total: u64,
    /// RssAnon: heap, stacks, written data.
    pub anon: u64,
    /// RssFile: mapped file pages (the binary's text and read-only data).
    pub file: u64,
    /// RssShmem: mapped tmpfs pages (the binary's text, in the ramdisk).
    pub shmem: u64,
}

impl Rss {
    /// This process's (/proc/self/status).
    pub fn current() -> Option<Rss> {
        Rss::parse(&std::fs::read_to_string("/proc/self/status").ok()?)
    }

    /// Parses the text of a /proc/PID/status file.
    pub fn parse(status: &str) -> Option<Rss> {
        let field = |name: &str| -> Option<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        };
        Some(Rss {
            total: field("VmRSS:")?,
            anon: field("RssAnon:").unwrap_or(0),
            file: field("RssFile:").unwrap_or(0),
            shmem: field("RssShmem:").unwrap_or(0),
        })
    }
}

fn hex_id(s: Option<&str>) -> String {
    s.map(|v| v.trim_start_matches("0x").to_string())
        .unwrap_or_else(|| "????".into())
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// The stable one-line survey summary:
/// `survey: 6 pci devices [8086:1237 …]; disks: vda 2.0 GiB virtio_blk serial=…; nics: eth0 52:54:00:12:34:56 e1000`.
pub fn survey_line(s: &HardwareSurvey) -> String {
    let ids: Vec<String> = s
        .pci
        .iter()
        .map(|d| {
            format!(
                "{}:{}",
                hex_id(d.vendor.as_deref()),
                hex_id(d.device.as_deref())
            )
        })
        .collect();
    let disks: Vec<String> = s
        .disks
        .iter()
        .map(|d| {
            let mut t = format!(
                "{} {}",
                d.name,
                d.size.map(gib).unwrap_or_else(|| "?".into())
            );
            if !d.drivers.is_empty() {
                t.push(' ');
                t.push_str(&d.drivers.join(","));
            }
            if let Some(serial) = d.serial.as_deref().or(d.wwn.as_deref()) {
                t.push_str(&format!(" serial={serial}"));
            }
            t
        })
        .collect();
    let nics: Vec<String> = s
        .nics
        .iter()
        .map(|n| {
            format!(
                "{} {} {}",
                n.name,
                n.mac.as_deref().unwrap_or("?"),
                n.driver.as_deref().unwrap_or("?")
            )
        })
        .collect();
    let none = |v: Vec<String>| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    format!(
        "survey: {} pci devices [{}]; disks: {}; nics: {}",
        s.pci.len(),
        ids.join(" "),
        none(disks),
        none(nics)
    )
}

fn kernel_release(root: &Path) -> Option<String> {
    std::fs::read_to_string(root.join("proc/sys/kernel/osrelease"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The disks a deploy could write: optical drives (`sr*`, named so by the
/// kernel's SCSI CD-ROM driver) do not count, even with a medium (the
/// boot CD).
pub fn target_disks(s: &HardwareSurvey) -> usize {
    s.disks.iter().filter(|d| !d.name.starts_with("sr")).count()
}

/// Storage controllers (PCI class 01) with no driver bound.
/// Also virtio block and SCSI devices with no driver (their PCI function
/// is bound to virtio_pci, the device under it to nothing).
fn unclaimed_storage(s: &HardwareSurvey) -> Vec<String> {
    let ids = |d: &survey::PciDevice| {
        format!(
            "{} {}:{}",
            d.address,
            hex_id(d.vendor.as_deref()),
            hex_id(d.device.as_deref())
        )
    };
    let mut out: Vec<String> = s
        .pci
        .iter()
        .filter(|d| d.base_class() == Some(0x01) && d.driver.is_none())
        .map(ids)
        .collect();
    for d in &s.devices {
        if matches!(d.virtio_id(), Some(2 | 8)) && d.driver.is_none() {
            let parent = s.pci.iter().find(|p| Some(&p.address) == d.pci.as_ref());
            out.push(match parent {
                Some(p) => format!("{} (virtio storage on {})", d.name, ids(p)),
                None => format!("{} (virtio storage)", d.name),
            });
        }
    }
    out
}

/// Brings the agent up (see the module documentation).
pub fn bring_up(opts: &Options) -> Result<Ready, (RamdiskError, Option<Mailbox>)> {
    let root = &opts.root;
    let cmdline = opts
        .cmdline
        .clone()
        .unwrap_or_else(|| std::fs::read_to_string(root.join("proc/cmdline")).unwrap_or_default());
    // The configuration first: a bad one is fatal before anything is done.
    let cfg = config::load(root, &cmdline).map_err(|e| (e.into(), None))?;

    // Coldplug.
    let tree_dir = opts
        .modules
        .clone()
        .or_else(|| kernel_release(root).map(|r| root.join("lib/modules").join(r)));
    let tree = tree_dir
        .as_ref()
        .and_then(|d| match drivers_db::KernelModules::load(d) {
            Ok(t) => Some(t),
            Err(e) => {
                say(&format!("coldplug: no module tree: {e}"));
                None
            }
        });
    let mut plug = coldplug::Coldplug::default();
    // modprobe.blacklist=a,b as modprobe honours it: never loaded.
    let words = config::split_cmdline(&cmdline);
    for m in config::cmdline_value(&words, "modprobe.blacklist")
        .unwrap_or_default()
        .split(',')
        .filter(|m| !m.is_empty())
    {
        plug.failed.insert(
            drivers_db::modalias::normalize_module_name(m),
            "skipped".into(),
        );
    }
    let started = Instant::now();
    if let Some(tree) = &tree {
        let extra: &[&str] = if opts.machine { &[] } else { coldplug::ALWAYS };
        coldplug::run(root, tree, opts.machine, extra, &mut plug);
        if opts.machine {
            say(&format!(
                "coldplug: loaded {} modules in {} rounds: {}",
                plug.loaded.len(),
                plug.rounds,
                plug.loaded.join(" ")
            ));
            if !plug.slow.is_empty() {
                let slow: Vec<String> = plug
                    .slow
                    .iter()
                    .map(|(m, ms)| format!("{m} {ms} ms"))
                    .collect();
                say(&format!("coldplug: slow to load: {}", slow.join(", ")));
            }
        } else {
            say(&format!(
                "coldplug (dry run): would load {}",
                plug.planned.join(" ")
            ));
        }
    }
    // Wait (bounded) for disks and NICs, re-running coldplug for devices
    // that appear late (SCSI disks behind a just-loaded HBA).
    let mut s = survey::survey(root).map_err(|e| (e.into(), None))?;
    let mut up: Vec<String> = Vec::new();
    let mut links_up = |s: &HardwareSurvey| {
        let new: Vec<String> = s
            .nics
            .iter()
            .map(|n| n.name.clone())
            .filter(|n| !up.contains(n))
            .collect();
        if opts.machine {
            net::links_up(&new);
        }
        up.extend(new);
    };
    links_up(&s);
    while opts.machine
        && (target_disks(&s) == 0 || s.nics.is_empty())
        && started.elapsed() < opts.device_wait
    {
        std::thread::sleep(Duration::from_millis(250));
        if let Some(tree) = &tree {
            coldplug::run(root, tree, true, &[], &mut plug);
        }
        s = survey::survey(root).map_err(|e| (e.into(), None))?;
        links_up(&s);
    }
    // ENODEV is a driver declining hardware that is not there
    // (crc32c_intel without SSE4.2, efivarfs without UEFI): one quiet line.
    let declined: Vec<&str> = plug
        .failed
        .iter()
        .filter(|(_, why)| why.contains("ENODEV"))
        .map(|(m, _)| m.as_str())
        .collect();
    if !declined.is_empty() {
        say(&format!("coldplug: no device for {}", declined.join(" ")));
    }
    for (m, why) in &plug.failed {
        if why != "skipped" && !why.contains("ENODEV") {
            say(&format!("coldplug: {m}: {why}"));
        }
    }
    say(&format!(
        "devices: disks [{}], nics [{}]",
        s.disks
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        s.nics
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    ));

    // The network.
    let mut net_error = None;
    if opts.machine {
        match net::parse_ip(config::cmdline_value(&words, "ip").as_deref()) {
            Err(e) => net_error = Some(e),
            Ok(ipcfg) => {
                let nics: Vec<String> = s.nics.iter().map(|n| n.name.clone()).collect();
                match net::configure(root, &ipcfg, &nics) {
                    Ok(lines) if lines.is_empty() => say("network: off (ip=off)"),
                    Ok(lines) => say(&format!("network: {}", lines.join("; "))),
                    Err(e) => net_error = Some(e),
                }
            }
        }
        if let Some(e) = &net_error {
            say(&format!("network: not configured: {e}"));
        }
    }

    // The mailbox.
    let mut agent_token = None;
    let mailbox = match &cfg.server {
        None => {
            say("mailbox: none configured (ferry.server=); the survey is on the console only");
            None
        }
        Some(server) => {
            // An agent that may return to the installed OS keeps trying
            // until then: the server may be down for a moment.
            let until = cfg.return_after().filter(|_| opts.machine);
            loop {
                match open_mailbox(server, &cfg) {
                    Ok((m, token)) => {
                        agent_token = token;
                        break Some(m);
                    }
                    Err(reason) => {
                        let up = Duration::from_secs_f64(uptime(root).unwrap_or(0.0));
                        if let Some(until) = until.filter(|&u| up + MAILBOX_RETRY < u) {
                            say(&format!(
                                "mailbox: {server}: {reason}; trying again in {} s (until {} s \
                                 after boot, then back to the installed OS)",
                                MAILBOX_RETRY.as_secs(),
                                until.as_secs()
                            ));
                            std::thread::sleep(MAILBOX_RETRY);
                            continue;
                        }
                        return Err((
                            RamdiskError::Mailbox {
                                server: server.clone(),
                                reason,
                            },
                            None,
                        ));
                    }
                }
            }
        }
    };
    // Survey once more, now that everything is up, and print it.
    let s = survey::survey(root).map_err(|e| (e.into(), None))?;
    say(&survey_line(&s));
    if target_disks(&s) == 0 {
        let unclaimed = unclaimed_storage(&s);
        let hint = if unclaimed.is_empty() {
            String::new()
        } else {
            format!(
                "; storage controllers without a driver in this ramdisk: {}",
                unclaimed.join(", ")
            )
        };
        return Err((
            RamdiskError::NoDisks {
                waited: opts.device_wait,
                hint,
            },
            mailbox,
        ));
    }
    if let (Some(e), true) = (net_error, cfg.needs_network()) {
        return Err((
            RamdiskError::NoNetwork {
                server: cfg.server.clone().unwrap_or_default(),
                reason: e,
            },
            mailbox,
        ));
    }
    // The file systems deploy and adapt mount, loaded while the agent
    // already answers (see coldplug::ALWAYS).
    let mut background = None;
    if opts.machine {
        if let Some(tree) = tree {
            let root = root.clone();
            background = Some(std::thread::spawn(move || {
                let mut fs = coldplug::Coldplug::default();
                coldplug::run(&root, &tree, true, coldplug::ALWAYS, &mut fs);
                say(&format!("coldplug: file systems: {}", fs.loaded.join(" ")));
                mount_efivarfs(&root);
            }));
        }
    }
    Ok(Ready {
        config: cfg,
        survey: s,
        mailbox,
        agent_token,
        background,
    })
}

/// Opens the mailbox `server` names (`file:///dir`, `https://manager`,
/// `s3://bucket/prefix/mailboxes/<id>`). On an `https://` server the agent
/// enrols with the enrolment token, unless the token is already an agent
/// token (`ferry-agent.<id>.…`, kept from an earlier boot); it returns the
/// agent's own token with the mailbox.
pub fn open_mailbox(server: &str, cfg: &AgentConfig) -> Result<(Mailbox, Option<String>), String> {
    let open = |t: Box<dyn mailbox::Transport>| Mailbox::new(t, 0).map_err(|e| e.to_string());
    if let Some(dir) = server.strip_prefix("file://") {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {dir}: {e}"))?;
        return Ok((open(Box::new(mailbox::LocalTransport::new(dir)))?, None));
    }
    if server.starts_with("https://") {
        let trust = cfg.trust()?.ok_or_else(|| {
            "an https:// server needs its CA: ca_pem in the media's agent.json, or ferry.ca=sha256:…"
                .to_string()
        })?;
        let token = cfg
            .enroll_token
            .as_deref()
            .ok_or_else(|| "no token: ferry.token= or enroll_token in agent.json".to_string())?;
        let agent_token = if mailbox::connect::token_mailbox(token).is_some() {
            token.to_string()
        } else {
            let base = server.split("/v1/").next().unwrap_or(server);
            let (id, agent_token) = mailbox::connect::enroll(base, token, &trust)
                .map_err(|e| format!("enrolling: {e}"))?;
            say(&format!("mailbox: enrolled as {id}"));
            agent_token
        };
        let t = mailbox::connect::connect(server, &agent_token, Some(&trust))
            .map_err(|e| e.to_string())?;
        return Ok((open(t)?, Some(agent_token)));
    }
    let t = mailbox::connect::connect(server, "", None).map_err(|e| e.to_string())?;
    Ok((open(t)?, None))
}

/// The status an agent writes.
pub fn status(
    state: mailbox::AgentState,
    survey: Option<&HardwareSurvey>,
    error: Option<String>,
) -> mailbox::Status {
    mailbox::Status {
        protocol: mailbox::PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        state,
        step: None,
        progress: None,
        job: None,
        last_command: 0,
        error,
        identity: survey
            .map(mailbox::MachineIdentity::from_survey)
            .unwrap_or_default(),
        survey: survey.cloned(),
        updated_ms: 0,
        first_boot: None,
    }
}

/// Mounts the kernel's file systems under `root` (PID 1 only). Already
/// mounted ones (EBUSY) are fine; other failures are printed, not fatal.
pub fn mount_kernel_filesystems(root: &Path) {
    use nix::mount::{mount, MsFlags};
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let table: [(&str, &str, MsFlags, &str); 5] = [
        ("proc", "proc", nosuid, ""),
        ("sys", "sysfs", nosuid, ""),
        ("dev", "devtmpfs", MsFlags::MS_NOSUID, "mode=0755"),
        (
            "run",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            "mode=0755",
        ),
        (
            "tmp",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            "mode=1777",
        ),
    ];
    for (dir, fstype, flags, data) in table {
        let target = root.join(dir);
        let _ = std::fs::create_dir_all(&target);
        match mount(Some(fstype), &target, Some(fstype), flags, Some(data)) {
            Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
            Err(e) => say(&format!("mount {fstype} on {}: {e}", target.display())),
        }
    }
    mount_efivarfs(root);
    let pts = root.join("dev/pts");
    let _ = std::fs::create_dir_all(&pts);
    let _ = mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID,
        Some("gid=5,mode=620"),
    );
}

/// Mounts efivarfs on a UEFI machine, so that adapt can add the migrated
/// OS's boot entry with efibootmgr. Debian builds it as a module, which
/// coldplug loads after the first mounts: until then (ENODEV) this does
/// nothing and is called again once the module is in.
pub fn mount_efivarfs(root: &Path) {
    use nix::mount::{mount, MsFlags};
    let target = root.join("sys/firmware/efi/efivars");
    if !target.is_dir() {
        return;
    }
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    match mount(Some("efivarfs"), &target, Some("efivarfs"), flags, Some("")) {
        Ok(()) | Err(nix::errno::Errno::EBUSY) | Err(nix::errno::Errno::ENODEV) => {}
        Err(e) => say(&format!("mount efivarfs on {}: {e}", target.display())),
    }
}

/// PID 1: mounts, starts `agent` (the command that runs the agent proper),
/// reaps every process, and keeps a rescue shell on the console once the
/// agent has exited. Never returns.
pub fn supervise(root: &Path, mut agent: std::process::Command) -> ! {
    mount_kernel_filesystems(root);
    std::env::set_var("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    std::env::set_var("HOME", "/root");
    std::env::set_var("TERM", "linux");
    say(&format!(
        "PID 1 started {:.1} s after the kernel",
        uptime(root).unwrap_or(0.0)
    ));
    let child = match agent.spawn() {
        Ok(c) => Some(c.id() as i32),
        Err(e) => {
            say(&format!("FATAL: starting the agent: {e}"));
            None
        }
    };
    let mut shell: Option<i32> = None;
    let mut agent_pid = child;
    if agent_pid.is_none() {
        shell = spawn_shell();
    }
    loop {
        use nix::sys::wait::{waitpid, WaitStatus};
        match waitpid(None, None) {
            Ok(st) => {
                let pid = st.pid().map(|p| p.as_raw());
                if pid.is_some() && pid == agent_pid {
                    agent_pid = None;
                    let how = match st {
                        WaitStatus::Exited(_, code) => format!("exited with status {code}"),
                        WaitStatus::Signaled(_, sig, _) => format!("was killed by {sig}"),
                        other => format!("stopped ({other:?})"),
                    };
                    say(&format!("the agent {how}"));
                    shell = spawn_shell();
                } else if pid.is_some() && pid == shell {
                    std::thread::sleep(Duration::from_secs(1));
                    shell = spawn_shell();
                }
            }
            Err(nix::errno::Errno::ECHILD) => {
                // Nothing to wait for (should not happen: the shell is
                // always running); do not spin.
                std::thread::sleep(Duration::from_secs(1));
                if shell.is_none() && agent_pid.is_none() {
                    shell = spawn_shell();
                }
            }
            Err(_) => {}
        }
    }
}

/// Starts the rescue shell on the console (busybox `cttyhack` gives it a
/// controlling terminal, so job control and ^C work).
fn spawn_shell() -> Option<i32> {
    say("rescue shell on the console: type `exit` to get a new one, `reboot -f` to restart");
    let mut cmd = if Path::new("/usr/bin/cttyhack").exists() {
        let mut c = std::process::Command::new("/usr/bin/cttyhack");
        c.arg("/bin/sh");
        c
    } else {
        std::process::Command::new("/bin/sh")
    };
    match cmd.spawn() {
        Ok(c) => Some(c.id() as i32),
        Err(e) => {
            say(&format!("starting /bin/sh: {e}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_from_a_status_file() {
        let status = "Name:\tferry\nVmRSS:\t   11392 kB\nRssAnon:\t    1716 kB\n\
                      RssFile:\t    9676 kB\nRssShmem:\t       0 kB\n";
        assert_eq!(
            Rss::parse(status),
            Some(Rss {
                total: 11392,
                anon: 1716,
                file: 9676,
                shmem: 0
            })
        );
        assert_eq!(Rss::parse("Name:\tkthreadd\n"), None);
        let me = Rss::current().expect("/proc/self/status");
        assert!(
            me.total > 0 && me.anon + me.file + me.shmem <= me.total + 4,
            "{me:?}"
        );
    }

    #[test]
    fn summary_of_the_virtio_fixture_names_its_devices() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hw/virtio");
        let s = survey::survey(&root).expect("fixture");
        let line = survey_line(&s);
        assert!(
            line.starts_with(&format!("survey: {} pci devices [", s.pci.len())),
            "{line}"
        );
        assert!(line.contains("1af4:1001"), "{line}");
        assert!(line.contains("vda 2.0 GiB virtio_blk"), "{line}");
        // sr0 (the fixture's CD drive) is listed but is no deploy target.
        assert!(line.contains("sr0 "), "{line}");
        assert_eq!(target_disks(&s), 1);
        assert!(line.contains("nics: "), "{line}");
    }
}
