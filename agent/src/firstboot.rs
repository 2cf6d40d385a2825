//! The first-boot check: a deployed server proves, on its first boot, that
//! it came up, by reporting through the mailbox of the agent that deployed
//! it.
//!
//! **Installing** ([`install`], called by `ferry adapt` when
//! [`crate::adapt::AdaptOptions::first_boot`] is set and the target runs
//! systemd) puts three files and a link into the target root, each through
//! adapt's change journal (so a failed adapt rolls them back and a second
//! adapt changes nothing):
//!
//! | path | what |
//! |---|---|
//! | [`BINARY`] | a static `ferry` (0755) |
//! | [`CONFIG`] | [`FirstBootConfig`] without `binary`, as JSON (0600: it holds the agent token) |
//! | [`UNIT`] | the systemd unit running `ferry first-boot` ([`UNIT_TEXT`]) |
//! | [`WANTS_LINK`] | the unit enabled, as `systemctl enable` would (no chroot needed) |
//!
//! **Running** (`ferry first-boot`, on the migrated server): [`load_config`],
//! [`wait_for_server`] (TCP, retried with backoff until a deadline),
//! [`collect`] a [`FirstBootReport`], [`publish`] it as the mailbox's
//! `status.json` (state `booted`, `last_command` carried over) and as a
//! `first-boot` request, then [`disable`]: the wants link and the config
//! (with the token, and any backup adapt kept of it) are deleted. A check
//! that cannot report leaves itself enabled, so the next boot tries again.
//!
//! The server is reached over HTTPS only, trusting nothing but the pinned CA
//! (`ca_pem`, else `ca_sha256`), like the agent (`mailbox::https`).

use std::fmt;
use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::adapt::changes::Changes;
use crate::adapt::AdaptError;
use crate::mailbox::https::{HttpsTransport, Trust};
use crate::mailbox::{
    self, AgentState, FirstBootReport, Mailbox, MailboxError, MailboxId, Status, Transport,
    PROTOCOL_VERSION, STATUS,
};

/// The ferry binary, inside the target.
pub const BINARY: &str = "usr/local/lib/ferry/ferry";
/// The check's configuration, inside the target.
pub const CONFIG: &str = "etc/ferry/first-boot.json";
/// The unit's name.
pub const UNIT_NAME: &str = "ferry-first-boot.service";
/// The unit file, inside the target.
pub const UNIT: &str = "etc/systemd/system/ferry-first-boot.service";
/// The link that enables the unit, inside the target.
pub const WANTS_LINK: &str = "etc/systemd/system/multi-user.target.wants/ferry-first-boot.service";
/// Where the wants link points (as `systemctl enable` makes it).
const WANTS_TARGET: &str = "/etc/systemd/system/ferry-first-boot.service";
/// The kind of the request the check sends.
pub const REQUEST_KIND: &str = "first-boot";
/// How long `ferry first-boot` waits for the server by default: long
/// enough for a slow DHCP or a manager restart, short enough that a server
/// whose manager is gone finishes booting quietly (it tries again next
/// boot).
pub const DEFAULT_GIVE_UP: Duration = Duration::from_secs(10 * 60);
/// How long it waits for the boot to settle (`is-system-running`) by
/// default.
pub const DEFAULT_STATE_WAIT: Duration = Duration::from_secs(120);
/// The longest pause between two attempts to reach the server.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The TCP connect timeout of one reachability probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The systemd unit. `Type=exec`, not `oneshot`: a oneshot unit wanted by
/// `multi-user.target` holds the boot transaction open until it exits, so
/// `systemctl is-system-running` would say `starting` for as long as the
/// check waits for it to say anything else.
pub const UNIT_TEXT: &str = "\
# Installed by ferry adapt: reports this server's first boot to the ferry
# manager that deployed it, then disables itself (it deletes its wants link
# and /etc/ferry/first-boot.json, which holds the mailbox token).
[Unit]
Description=ferry first-boot report to the manager
Wants=network-online.target
After=network-online.target
ConditionPathExists=/etc/ferry/first-boot.json

[Service]
# exec, not oneshot: a oneshot would keep the boot `starting` while the
# check waits for it to finish.
Type=exec
ExecStart=/usr/local/lib/ferry/ferry first-boot
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
";

/// How a deployed server reaches its manager on first boot.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirstBootConfig {
    /// The manager: `https://host:port`.
    pub server: String,
    /// The deploying agent's mailbox.
    pub mailbox: MailboxId,
    /// The agent token of that mailbox.
    pub token: String,
    /// The manager's CA certificate (PEM), trusted first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// The SHA-256 of the manager's CA certificate (64 hex digits), when
    /// there is no `ca_pem`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_sha256: Option<String>,
    /// A static ferry binary to copy into the target (not written to the
    /// target's configuration).
    #[serde(default, skip_serializing_if = "path_is_empty")]
    pub binary: PathBuf,
}

fn path_is_empty(p: &Path) -> bool {
    p.as_os_str().is_empty()
}

impl fmt::Debug for FirstBootConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FirstBootConfig")
            .field("server", &self.server)
            .field("mailbox", &self.mailbox)
            .field("token", &"<redacted>")
            .field("ca_pem", &self.ca_pem.as_ref().map(|p| p.len()))
            .field("ca_sha256", &self.ca_sha256)
            .field("binary", &self.binary)
            .finish()
    }
}

impl FirstBootConfig {
    /// What the check trusts: the CA certificate, else the fingerprint.
    pub fn trust(&self) -> Result<Trust, FirstBootError> {
        let bad = |reason: String| FirstBootError::Config {
            path: String::from("(first-boot configuration)"),
            reason,
        };
        if let Some(pem) = &self.ca_pem {
            return Ok(Trust::CaPem(pem.as_bytes().to_vec()));
        }
        match &self.ca_sha256 {
            Some(hex) => {
                let hex = hex.strip_prefix("sha256:").unwrap_or(hex);
                Trust::parse(&format!("sha256:{hex}")).map_err(|e| bad(e.to_string()))
            }
            None => Err(bad(
                "neither ca_pem nor ca_sha256 is set; the server cannot be verified".into(),
            )),
        }
    }

    /// The JSON written to [`CONFIG`]: everything but `binary`.
    pub fn file_json(&self) -> Vec<u8> {
        let mut c = self.clone();
        c.binary = PathBuf::new();
        let mut v = serde_json::to_vec_pretty(&c).expect("the configuration always serialises");
        v.push(b'\n');
        v
    }
}

/// Why the first-boot check failed.
#[derive(Debug, thiserror::Error)]
pub enum FirstBootError {
    /// The configuration is missing or wrong.
    #[error("first-boot configuration {path}: {reason}")]
    Config {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The server did not answer before the deadline.
    #[error(
        "server {server} unreachable for {seconds} s ({attempts} attempt(s)), giving up: {last}"
    )]
    Unreachable {
        /// The server.
        server: String,
        /// How long it was tried.
        seconds: u64,
        /// How many attempts were made.
        attempts: u32,
        /// The last error.
        last: String,
    },
    /// The server was reached but refused, or could not be verified
    /// (wrong CA, bad token): retrying would not help.
    #[error("server {server} refused the report: {reason}")]
    Refused {
        /// The server.
        server: String,
        /// Why.
        reason: String,
    },
    /// Disabling the check after reporting failed.
    #[error("disabling the first-boot check: removing {path}: {source}")]
    Disable {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Whether the OS in `root` runs systemd.
pub fn uses_systemd(root: &Path) -> bool {
    ["lib/systemd/systemd", "usr/lib/systemd/systemd"]
        .iter()
        .any(|p| root.join(p).exists())
}

/// Installs the check into `root` through `changes` (see the module
/// documentation). Returns `false`, having changed nothing, when the
/// target does not run systemd.
pub fn install(
    changes: &mut Changes,
    root: &Path,
    cfg: &FirstBootConfig,
) -> Result<bool, AdaptError> {
    if !uses_systemd(root) {
        return Ok(false);
    }
    // Checked before anything is written, so a bad configuration leaves no
    // half-installed check.
    if let Err(e) = cfg.trust() {
        return Err(AdaptError::Internal(format!("first-boot check: {e}")));
    }
    let binary = std::fs::read(&cfg.binary).map_err(|e| AdaptError::Io {
        action: "reading the ferry binary for the first-boot check",
        path: cfg.binary.display().to_string(),
        source: e,
    })?;
    changes.write(
        BINARY,
        &binary,
        0o755,
        "ferry, for the first-boot check",
        Vec::new(),
    )?;
    changes.write(
        CONFIG,
        &cfg.file_json(),
        0o600,
        "first-boot check: the manager, mailbox and token to report to",
        Vec::new(),
    )?;
    changes.write(
        UNIT,
        UNIT_TEXT.as_bytes(),
        0o644,
        "first-boot check unit",
        Vec::new(),
    )?;
    changes.symlink(
        WANTS_LINK,
        WANTS_TARGET,
        "first-boot check enabled (multi-user.target)",
    )?;
    Ok(true)
}

/// Reads the check's configuration.
pub fn load_config(path: &Path) -> Result<FirstBootConfig, FirstBootError> {
    let bad = |reason: String| FirstBootError::Config {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            bad(format!(
                "{e} (the check has reported already and disabled itself, or was never installed)"
            ))
        } else {
            bad(e.to_string())
        }
    })?;
    if text.len() > mailbox::MAX_FILE {
        return Err(bad(format!("{} bytes is not a configuration", text.len())));
    }
    let cfg: FirstBootConfig = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    if !cfg.server.starts_with("https://") {
        return Err(bad(format!(
            "server {:?} is not an https:// URL",
            cfg.server
        )));
    }
    cfg.trust().map_err(|e| match e {
        FirstBootError::Config { reason, .. } => bad(reason),
        other => other,
    })?;
    Ok(cfg)
}

/// `host:port` of an `https://` URL (443 when absent).
fn authority(server: &str) -> String {
    let rest = server.strip_prefix("https://").unwrap_or(server);
    let auth = rest.split('/').next().unwrap_or(rest);
    let has_port = match auth.rfind(']') {
        Some(end) => auth[end..].contains(':'),
        None => auth.contains(':'),
    };
    if has_port {
        auth.to_string()
    } else {
        format!("{auth}:443")
    }
}

/// The pause after `failures` failed attempts: 1 s, 2 s, 4 s … up to 30 s,
/// never past `deadline`.
fn pause(failures: u32, deadline: Instant) -> Duration {
    let d = Duration::from_secs(1)
        .saturating_mul(1u32 << failures.saturating_sub(1).min(5))
        .min(MAX_BACKOFF);
    d.min(deadline.saturating_duration_since(Instant::now()))
}

/// Waits until the server accepts a TCP connection (the network is up,
/// its name resolves, the manager listens), trying with backoff until
/// `deadline`. `log` receives a line per failed attempt.
pub fn wait_for_server(
    cfg: &FirstBootConfig,
    started: Instant,
    deadline: Instant,
    log: &mut dyn FnMut(&str),
) -> Result<(), FirstBootError> {
    let auth = authority(&cfg.server);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let r = auth
            .to_socket_addrs()
            .map_err(|e| format!("resolving {auth}: {e}"))
            .and_then(|addrs| {
                let mut last = format!("{auth} resolves to no address");
                for a in addrs {
                    let t = PROBE_TIMEOUT.min(left).max(Duration::from_millis(100));
                    match TcpStream::connect_timeout(&a, t) {
                        Ok(_) => return Ok(()),
                        Err(e) => last = format!("connecting to {a}: {e}"),
                    }
                }
                Err(last)
            });
        let last = match r {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(FirstBootError::Unreachable {
                server: cfg.server.clone(),
                seconds: started.elapsed().as_secs(),
                attempts,
                last,
            });
        }
        log(&format!(
            "waiting for {} (attempt {attempts}): {last}",
            cfg.server
        ));
        std::thread::sleep(pause(attempts, deadline));
    }
}

/// Runs `systemctl ARGS`; its stdout, or `None` without systemctl.
fn systemctl(args: &[&str]) -> Option<String> {
    let out = Command::new("systemctl").args(args).output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `systemctl is-system-running`, asked every second while it says the
/// boot is still going on, for at most `wait` (the bounded equivalent of
/// `--wait`, which older systemd lacks).
pub fn system_state(wait: Duration) -> String {
    let end = Instant::now() + wait;
    loop {
        let Some(out) = systemctl(&["is-system-running"]) else {
            return "unknown".into();
        };
        let state = out.trim().to_string();
        let settling = matches!(state.as_str(), "initializing" | "starting");
        if !settling || Instant::now() >= end {
            return if state.is_empty() {
                "unknown".into()
            } else {
                state
            };
        }
        std::thread::sleep(Duration::from_secs(1).min(end - Instant::now()));
    }
}

/// The units systemd lists as failed.
pub fn failed_units() -> Vec<String> {
    systemctl(&[
        "list-units",
        "--state=failed",
        "--plain",
        "--no-legend",
        "--no-pager",
        "--full",
    ])
    .map(|out| {
        out.lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(|u| u.trim_start_matches('●').to_string())
            .filter(|u| !u.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

/// The source mounted on `/` in a mountinfo text (the last mount there
/// wins, as it is the one visible).
pub fn root_source(mountinfo: &str) -> Option<String> {
    mountinfo.lines().rev().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mount_point = left.split_whitespace().nth(4)?;
        let source = right.split_whitespace().nth(1)?;
        (mount_point == "/").then(|| source.to_string())
    })
}

/// The machine's non-loopback addresses in CIDR form (IPv6 link-local
/// left out), sorted.
pub fn addresses() -> Vec<String> {
    use nix::net::if_::InterfaceFlags;
    let mut out = Vec::new();
    let Ok(ifs) = nix::ifaddrs::getifaddrs() else {
        return out;
    };
    for i in ifs {
        if i.flags.contains(InterfaceFlags::IFF_LOOPBACK) {
            continue;
        }
        let (Some(addr), Some(mask)) = (i.address, i.netmask) else {
            continue;
        };
        if let (Some(a), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
            let ip = a.ip();
            if !ip.is_loopback() {
                out.push(format!("{ip}/{}", u32::from(m.ip()).count_ones()));
            }
        } else if let (Some(a), Some(m)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            let ip = a.ip();
            let link_local = ip.segments()[0] & 0xffc0 == 0xfe80;
            if !ip.is_loopback() && !link_local {
                out.push(format!("{ip}/{}", u128::from(m.ip()).count_ones()));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The report of the running system: `root` holds its `/proc` (`/`; a
/// fixture tree in tests); the boot is given up to `state_wait` to settle.
pub fn collect(root: &Path, state_wait: Duration) -> FirstBootReport {
    let read = |rel: &str| {
        std::fs::read_to_string(root.join(rel))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let system_state = system_state(state_wait);
    let uptime_ms = read("proc/uptime")
        .split_whitespace()
        .next()
        .and_then(|s| s.parse::<f64>().ok())
        .map(|s| (s * 1000.0) as u64)
        .unwrap_or(0);
    FirstBootReport {
        hostname: read("proc/sys/kernel/hostname"),
        kernel: read("proc/sys/kernel/osrelease"),
        addresses: addresses(),
        root_source: root_source(&read("proc/self/mountinfo")).unwrap_or_default(),
        system_state,
        failed_units: failed_units(),
        booted_ms: mailbox::now_ms().saturating_sub(uptime_ms),
        uptime_ms,
    }
}

/// Whether a mailbox error is final: the server answered but refused
/// (401, 403, 404), or its certificate did not verify. rustls's verdicts
/// reach us as text through reqwest, hence the match on it.
fn is_final(e: &MailboxError) -> bool {
    match e {
        MailboxError::Io { source, .. } => {
            let text = source.to_string();
            matches!(
                source.kind(),
                io::ErrorKind::PermissionDenied | io::ErrorKind::NotFound
            ) || text.contains("certificate")
                || text.contains("fingerprint")
        }
        MailboxError::Malformed { .. } | MailboxError::BadId(_) => true,
    }
}

/// One exchange: reads the status, writes it back as `booted` with the
/// report, and sends the `first-boot` request; returns its sequence
/// number.
fn exchange(
    cfg: &FirstBootConfig,
    trust: &Trust,
    report: &FirstBootReport,
) -> Result<u64, MailboxError> {
    let io = |action: &'static str| {
        let mailbox = format!("{}/v1/mailboxes/{}", cfg.server, cfg.mailbox);
        move |source| MailboxError::Io {
            mailbox,
            action,
            file: String::new(),
            source,
        }
    };
    let base = cfg.server.trim_end_matches('/');
    let t = HttpsTransport::new(base, cfg.mailbox.clone(), &cfg.token, trust)
        .map_err(io("connecting to"))?;
    let current: Option<Status> = mailbox::read_json(&t, STATUS, "status")?;
    let last_command = current.as_ref().map_or(0, |s| s.last_command);
    let mut status = current.unwrap_or_else(|| Status {
        protocol: PROTOCOL_VERSION,
        agent_version: String::new(),
        state: AgentState::Booted,
        step: None,
        progress: None,
        job: None,
        last_command,
        error: None,
        identity: Default::default(),
        survey: None,
        updated_ms: 0,
        first_boot: None,
    });
    status.protocol = PROTOCOL_VERSION;
    status.agent_version = env!("CARGO_PKG_VERSION").to_string();
    status.state = AgentState::Booted;
    status.step = None;
    status.progress = None;
    status.job = None;
    status.error = None;
    status.first_boot = Some(report.clone());
    let boxed: Box<dyn Transport> = Box::new(t);
    let mut mb = Mailbox::new(boxed, last_command).map_err(io("opening"))?;
    mb.write_status(&status)?;
    let body = serde_json::to_value(report).expect("a report always serialises");
    mb.request(REQUEST_KIND, body)
}

/// Publishes `report` to the mailbox (see the module documentation),
/// retrying transient failures with backoff until `deadline`; returns the
/// request's sequence number.
pub fn publish(
    cfg: &FirstBootConfig,
    report: &FirstBootReport,
    started: Instant,
    deadline: Instant,
    log: &mut dyn FnMut(&str),
) -> Result<u64, FirstBootError> {
    let trust = cfg.trust()?;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let e = match exchange(cfg, &trust, report) {
            Ok(seq) => return Ok(seq),
            Err(e) => e,
        };
        let msg = crate::runner::error_chain(&e);
        if is_final(&e) {
            return Err(FirstBootError::Refused {
                server: cfg.server.clone(),
                reason: msg,
            });
        }
        if Instant::now() >= deadline {
            return Err(FirstBootError::Unreachable {
                server: cfg.server.clone(),
                seconds: started.elapsed().as_secs(),
                attempts,
                last: msg,
            });
        }
        log(&format!(
            "reporting to {} failed (attempt {attempts}): {msg}",
            cfg.server
        ));
        std::thread::sleep(pause(attempts, deadline));
        wait_for_server(cfg, started, deadline, log)?;
    }
}

/// Disables the check in `root` once it has reported: deletes the wants
/// link, the configuration `config` (it holds the token) and any copy of
/// it adapt kept among its backups. Returns what was deleted.
pub fn disable(root: &Path, config: &Path) -> Result<Vec<PathBuf>, FirstBootError> {
    let mut targets = vec![root.join(WANTS_LINK), config.to_path_buf()];
    let runs = root.join(crate::adapt::changes::ADAPT_DIR);
    if let Ok(dir) = std::fs::read_dir(&runs) {
        for run in dir.flatten() {
            targets.push(run.path().join("files").join(CONFIG));
        }
    }
    let mut removed = Vec::new();
    for p in targets {
        match std::fs::remove_file(&p) {
            Ok(()) => removed.push(p),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(FirstBootError::Disable {
                    path: p.display().to_string(),
                    source: e,
                })
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn config(binary: &Path) -> FirstBootConfig {
        FirstBootConfig {
            server: "https://10.0.2.2:8443".into(),
            mailbox: MailboxId::parse("0123456789abcdef0123456789abcdef").expect("id"),
            token: "ferry-agent.0123456789abcdef0123456789abcdef.00".into(),
            ca_pem: None,
            ca_sha256: Some("ab".repeat(32)),
            binary: binary.to_path_buf(),
        }
    }

    /// A target root with systemd, and a "ferry binary" beside it.
    fn target() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("lib/systemd")).expect("mkdir");
        std::fs::write(root.join("lib/systemd/systemd"), b"\x7fELF").expect("write");
        let bin = d.path().join("ferry-static");
        std::fs::write(&bin, b"\x7fELF static ferry").expect("write");
        (d, root, bin)
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777
    }

    #[test]
    fn install_writes_three_files_and_the_link() {
        let (_d, root, bin) = target();
        let mut c = Changes::begin(&root, "20261124T000000Z");
        assert!(install(&mut c, &root, &config(&bin)).expect("install"));
        assert_eq!(
            std::fs::read(root.join(BINARY)).expect("binary"),
            b"\x7fELF static ferry"
        );
        assert_eq!(mode(&root.join(BINARY)), 0o755);
        assert_eq!(mode(&root.join(CONFIG)), 0o600);
        assert_eq!(mode(&root.join(UNIT)), 0o644);
        let written: FirstBootConfig =
            serde_json::from_slice(&std::fs::read(root.join(CONFIG)).expect("config"))
                .expect("config parses");
        assert_eq!(written.server, "https://10.0.2.2:8443");
        assert_eq!(written.token, config(&bin).token);
        assert!(
            written.binary.as_os_str().is_empty(),
            "the build host's binary path is not written: {written:?}"
        );
        let unit = std::fs::read_to_string(root.join(UNIT)).expect("unit");
        assert!(unit.contains("ExecStart=/usr/local/lib/ferry/ferry first-boot"));
        assert!(unit.contains("After=network-online.target"));
        assert!(unit.contains("Wants=network-online.target"));
        assert!(unit.contains("StandardOutput=journal+console"));
        assert_eq!(
            std::fs::read_link(root.join(WANTS_LINK)).expect("link"),
            Path::new("/etc/systemd/system/ferry-first-boot.service")
        );
        let paths: Vec<&str> = c.applied().iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/usr/local/lib/ferry/ferry",
                "/etc/ferry/first-boot.json",
                "/etc/systemd/system/ferry-first-boot.service",
                "/etc/systemd/system/multi-user.target.wants/ferry-first-boot.service"
            ]
        );
    }

    #[test]
    fn rollback_removes_everything_installed() {
        let (_d, root, bin) = target();
        let mut c = Changes::begin(&root, "r1");
        install(&mut c, &root, &config(&bin)).expect("install");
        assert!(c.rollback().is_empty());
        for rel in [BINARY, CONFIG, UNIT, WANTS_LINK] {
            assert!(
                std::fs::symlink_metadata(root.join(rel)).is_err(),
                "{rel} left behind"
            );
        }
    }

    #[test]
    fn a_second_install_changes_nothing() {
        let (_d, root, bin) = target();
        let mut c = Changes::begin(&root, "r1");
        install(&mut c, &root, &config(&bin)).expect("install");
        let mut again = Changes::begin(&root, "r2");
        assert!(install(&mut again, &root, &config(&bin)).expect("install"));
        assert!(
            again.applied().is_empty(),
            "second run changed {:?}",
            again.applied()
        );
        let wants = std::fs::read_dir(root.join("etc/systemd/system/multi-user.target.wants"))
            .expect("wants")
            .count();
        assert_eq!(wants, 1);
        // A new token is one change, and undoing it restores the old one.
        let mut cfg = config(&bin);
        cfg.token = "ferry-agent.0123456789abcdef0123456789abcdef.11".into();
        let mut third = Changes::begin(&root, "r3");
        install(&mut third, &root, &cfg).expect("install");
        assert_eq!(third.applied().len(), 1);
        assert!(third.rollback().is_empty());
        let back: FirstBootConfig =
            serde_json::from_slice(&std::fs::read(root.join(CONFIG)).expect("config"))
                .expect("parses");
        assert_eq!(back.token, config(&bin).token);
        assert_eq!(mode(&root.join(CONFIG)), 0o600);
    }

    #[test]
    fn no_systemd_no_check() {
        let (_d, root, bin) = target();
        std::fs::remove_file(root.join("lib/systemd/systemd")).expect("rm");
        let mut c = Changes::begin(&root, "r1");
        assert!(!install(&mut c, &root, &config(&bin)).expect("install"));
        assert!(c.applied().is_empty());
        assert!(!root.join(CONFIG).exists());
    }

    #[test]
    fn a_missing_binary_or_trust_fails_before_writing() {
        let (d, root, bin) = target();
        let mut c = Changes::begin(&root, "r1");
        let e = install(&mut c, &root, &config(&d.path().join("nope"))).expect_err("no binary");
        assert!(e.to_string().contains("nope"), "{e}");
        let mut cfg = config(&bin);
        cfg.ca_sha256 = None;
        let e = install(&mut c, &root, &cfg).expect_err("no trust");
        assert!(e.to_string().contains("ca_pem"), "{e}");
        assert!(c.applied().is_empty());
    }

    #[test]
    fn disable_removes_link_config_and_its_backups() {
        let (_d, root, bin) = target();
        let mut c = Changes::begin(&root, "r1");
        install(&mut c, &root, &config(&bin)).expect("install");
        let backup = root.join("var/lib/ferry/adapt/r0/files").join(CONFIG);
        std::fs::create_dir_all(backup.parent().expect("parent")).expect("mkdir");
        std::fs::write(&backup, b"old token").expect("write");
        let removed = disable(&root, &root.join(CONFIG)).expect("disable");
        assert_eq!(removed.len(), 3, "{removed:?}");
        assert!(std::fs::symlink_metadata(root.join(WANTS_LINK)).is_err());
        assert!(!root.join(CONFIG).exists());
        assert!(!backup.exists());
        assert!(root.join(UNIT).exists() && root.join(BINARY).exists());
        assert!(disable(&root, &root.join(CONFIG))
            .expect("again")
            .is_empty());
    }

    #[test]
    fn configs_are_checked() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("first-boot.json");
        let e = load_config(&p).expect_err("absent");
        assert!(e.to_string().contains("reported already"), "{e}");
        let mut cfg = config(Path::new(""));
        std::fs::write(&p, cfg.file_json()).expect("write");
        assert_eq!(load_config(&p).expect("valid").server, cfg.server);
        cfg.server = "http://x:1".into();
        std::fs::write(&p, cfg.file_json()).expect("write");
        assert!(load_config(&p)
            .expect_err("http")
            .to_string()
            .contains("https"));
        std::fs::write(&p, b"{").expect("write");
        assert!(load_config(&p).is_err());
        assert!(!format!("{:?}", config(Path::new(""))).contains("ferry-agent."));
    }

    #[test]
    fn report_pieces() {
        let mi = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n\
                  23 22 0:5 / /proc rw - proc proc rw\n";
        assert_eq!(root_source(mi).as_deref(), Some("/dev/vda1"));
        // A later mount over / hides the first: the visible one is reported.
        let over = format!("{mi}30 22 0:40 / / rw - overlay overlay rw\n");
        assert_eq!(root_source(&over).as_deref(), Some("overlay"));
        assert_eq!(root_source("garbage\n"), None);
        assert_eq!(authority("https://10.0.2.2:8443"), "10.0.2.2:8443");
        assert_eq!(authority("https://mgr/x"), "mgr:443");
        assert_eq!(authority("https://[::1]:9/"), "[::1]:9");
        assert_eq!(authority("https://[::1]"), "[::1]:443");
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(d.path().join("proc/sys/kernel")).expect("mkdir");
        std::fs::create_dir_all(d.path().join("proc/self")).expect("mkdir");
        std::fs::write(d.path().join("proc/sys/kernel/hostname"), "web1\n").expect("w");
        std::fs::write(d.path().join("proc/sys/kernel/osrelease"), "6.1.0-9\n").expect("w");
        std::fs::write(d.path().join("proc/uptime"), "12.50 3.00\n").expect("w");
        std::fs::write(d.path().join("proc/self/mountinfo"), mi).expect("w");
        let r = collect(d.path(), Duration::ZERO);
        assert_eq!(r.hostname, "web1");
        assert_eq!(r.kernel, "6.1.0-9");
        assert_eq!(r.root_source, "/dev/vda1");
        assert_eq!(r.uptime_ms, 12_500);
        assert!(r.booted_ms + 12_500 <= mailbox::now_ms());
        assert!(!r.system_state.is_empty());
        assert!(r
            .addresses
            .iter()
            .all(|a| a.contains('/') && !a.starts_with("127.") && !a.starts_with("::1/")));
    }
}
