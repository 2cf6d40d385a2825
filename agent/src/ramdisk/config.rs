//! The agent's configuration in the ramdisk: the embedded file
//! (`/etc/ferry/agent.json`, written by `ferry boot … --config`) overlaid
//! by the kernel command line (`ferry.server=`, `ferry.token=`,
//! `ferry.ca=sha256:<hex>`, `ferry.heartbeat=<seconds>`,
//! `ferry.return_after=<seconds>`), plus the kernel's own `ip=` for the
//! network.
//!
//! `ferry.return_after=N` is for an agent swapped onto a running server
//! (`ferry boot swap` sets it): when the agent cannot come up or reach its
//! server, it keeps trying until N seconds after boot and then reboots,
//! which returns the machine to its installed OS (GRUB's one-shot entry is
//! spent; after a kexec, the firmware boots the installed OS).
//!
//! Command-line values win, so one medium serves many managers. The
//! command line is split as the kernel splits it: on spaces, with double
//! quotes grouping (`ferry.server="file:///a b"`).

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The embedded configuration file, relative to the root.
pub const CONFIG_FILE: &str = "etc/ferry/agent.json";
/// Heartbeat interval when none is configured.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The embedded file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The embedded file is not valid JSON of the expected shape.
    #[error("{path} is not a valid agent configuration: {reason}")]
    Malformed {
        /// The file.
        path: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A value is wrong.
    #[error("{key}={value:?}: {reason}")]
    Invalid {
        /// The key (`ferry.server`).
        key: &'static str,
        /// The value given.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// The agent's configuration (the JSON form of `/etc/ferry/agent.json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The mailbox server: `https://…` (a manager), `s3://…`, or
    /// `file:///dir` (a mailbox directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The one-time enrolment token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enroll_token: Option<String>,
    /// The manager's CA certificate, PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// The SHA-256 of the manager's CA certificate (DER), 64 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_sha256: Option<String>,
    /// Seconds between heartbeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_secs: Option<u64>,
    /// The image library for capture and deploy (a path, `https://` or
    /// `s3://` URL). Default for an `https://` server: its `/v1/library`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library: Option<String>,
    /// Seconds after boot at which an agent that failed to come up, or to
    /// reach its server, gives up and reboots into the installed OS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_after_secs: Option<u64>,
}

impl AgentConfig {
    /// When an agent that cannot come up or reach its server returns to
    /// the installed OS, counted from boot (`ferry.return_after`; 0 or
    /// unset: never, it stays for the rescue shell).
    pub fn return_after(&self) -> Option<Duration> {
        self.return_after_secs
            .filter(|&s| s > 0)
            .map(Duration::from_secs)
    }

    /// The image library: the configured one, or an `https://` server's.
    pub fn library(&self) -> Option<String> {
        self.library.clone().or_else(|| {
            let server = self.server.as_deref()?;
            let base = server.split("/v1/").next().unwrap_or(server);
            server
                .starts_with("https://")
                .then(|| format!("{}/v1/library", base.trim_end_matches('/')))
        })
    }

    /// What the agent trusts for an `https://` server: the embedded CA,
    /// else the pinned fingerprint.
    pub fn trust(&self) -> Result<Option<crate::mailbox::https::Trust>, String> {
        use crate::mailbox::https::Trust;
        if let Some(pem) = &self.ca_pem {
            return Ok(Some(Trust::CaPem(pem.as_bytes().to_vec())));
        }
        match &self.ca_sha256 {
            Some(hex) => Trust::parse(&format!("sha256:{hex}"))
                .map(Some)
                .map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }

    /// The heartbeat interval.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat_secs
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_HEARTBEAT)
    }

    /// Whether the mailbox is reached over the network.
    pub fn needs_network(&self) -> bool {
        self.server
            .as_deref()
            .is_some_and(|s| !s.starts_with("file://"))
    }
}

/// The kernel command line, split into words as the kernel splits it.
pub fn split_cmdline(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    words.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(cur);
    }
    words
}

/// The value of the last `key=` on the command line.
pub fn cmdline_value(words: &[String], key: &str) -> Option<String> {
    words
        .iter()
        .rev()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=').map(String::from))
}

/// Reads the embedded file under `root` (absent: defaults) and overlays
/// the command line; checks the result.
pub fn load(root: &Path, cmdline: &str) -> Result<AgentConfig, ConfigError> {
    let path = root.join(CONFIG_FILE);
    let mut cfg = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ConfigError::Malformed {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => AgentConfig::default(),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.display().to_string(),
                source,
            })
        }
    };
    let words = split_cmdline(cmdline);
    if let Some(v) = cmdline_value(&words, "ferry.server") {
        cfg.server = Some(v);
    }
    if let Some(v) = cmdline_value(&words, "ferry.token") {
        cfg.enroll_token = Some(v);
    }
    if let Some(v) = cmdline_value(&words, "ferry.library") {
        cfg.library = Some(v);
    }
    if let Some(v) = cmdline_value(&words, "ferry.ca") {
        let hex = v
            .strip_prefix("sha256:")
            .ok_or_else(|| ConfigError::Invalid {
                key: "ferry.ca",
                value: v.clone(),
                reason: "expected sha256:<64 hex digits>",
            })?;
        cfg.ca_sha256 = Some(hex.to_ascii_lowercase());
    }
    if let Some(v) = cmdline_value(&words, "ferry.heartbeat") {
        cfg.heartbeat_secs = Some(v.parse().map_err(|_| ConfigError::Invalid {
            key: "ferry.heartbeat",
            value: v.clone(),
            reason: "expected whole seconds",
        })?);
    }
    if let Some(v) = cmdline_value(&words, "ferry.return_after") {
        cfg.return_after_secs = Some(v.parse().map_err(|_| ConfigError::Invalid {
            key: "ferry.return_after",
            value: v.clone(),
            reason: "expected whole seconds",
        })?);
    }
    check(&cfg)?;
    Ok(cfg)
}

fn check(cfg: &AgentConfig) -> Result<(), ConfigError> {
    if let Some(s) = &cfg.server {
        if !["https://", "s3://", "file:///"]
            .iter()
            .any(|p| s.starts_with(p))
        {
            return Err(ConfigError::Invalid {
                key: "ferry.server",
                value: s.clone(),
                reason: "expected an https://, s3:// or file:/// URL",
            });
        }
    }
    if let Some(h) = &cfg.ca_sha256 {
        if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ConfigError::Invalid {
                key: "ferry.ca",
                value: h.clone(),
                reason: "expected sha256:<64 hex digits>",
            });
        }
    }
    if cfg.heartbeat_secs == Some(0) {
        return Err(ConfigError::Invalid {
            key: "ferry.heartbeat",
            value: "0".into(),
            reason: "must be at least 1 second",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_overrides_the_embedded_file() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(dir.path().join("etc/ferry")).expect("mkdir");
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            r#"{"server":"https://a.example:8443","enroll_token":"t1","ca_pem":"PEM"}"#,
        )
        .expect("write");
        let ca = "ab".repeat(32);
        let cfg = load(
            dir.path(),
            &format!(
                "quiet ferry.server=\"https://b.example/x y\" ferry.ca=sha256:{} ip=dhcp",
                ca.to_uppercase()
            ),
        )
        .expect("valid");
        assert_eq!(cfg.server.as_deref(), Some("https://b.example/x y"));
        assert_eq!(cfg.enroll_token.as_deref(), Some("t1"));
        assert_eq!(cfg.ca_pem.as_deref(), Some("PEM"));
        assert_eq!(cfg.ca_sha256.as_deref(), Some(ca.as_str()));
        assert!(cfg.needs_network());
    }

    #[test]
    fn bad_values_are_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let e = load(dir.path(), "ferry.server=ftp://x").expect_err("bad scheme");
        assert!(e.to_string().contains("ferry.server"), "{e}");
        let e = load(dir.path(), "ferry.ca=md5:abc").expect_err("bad ca");
        assert!(e.to_string().contains("ferry.ca"), "{e}");
        let e = load(dir.path(), "ferry.heartbeat=soon").expect_err("bad heartbeat");
        assert!(e.to_string().contains("ferry.heartbeat"), "{e}");
        let e = load(dir.path(), "ferry.return_after=later").expect_err("bad return_after");
        assert!(e.to_string().contains("ferry.return_after"), "{e}");
        let c = load(dir.path(), "ferry.return_after=300").expect("return_after");
        assert_eq!(c.return_after(), Some(Duration::from_secs(300)));
        let c = load(dir.path(), "ferry.return_after=0").expect("return_after 0");
        assert_eq!(c.return_after(), None);
        std::fs::create_dir_all(dir.path().join("etc/ferry")).expect("mkdir");
        std::fs::write(dir.path().join(CONFIG_FILE), "{\"sever\":1}").expect("write");
        let e = load(dir.path(), "").expect_err("unknown field");
        assert!(e.to_string().contains("agent.json"), "{e}");
    }
}
