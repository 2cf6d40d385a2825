//! The mailbox protocol: how an agent and its managers talk, through files.
//!
//! Every exchange between an agent and a manager is a file in the agent's
//! mailbox, a directory (or key prefix) on a file server that both reach by
//! *outgoing* connections: HTTPS to `ferry serve`, or an S3 bucket. Managers
//! keep no state of their own. The full specification, with the HTTP API and
//! the permission model, is `manager/MAILBOX.md`; this module holds the parts
//! both sides share: names, message types, the [`Transport`] a mailbox lives
//! on, a local-directory transport, and the agent's side of the exchange.
//!
//! A mailbox `<id>/` holds:
//!
//! | file | written by | how |
//! |---|---|---|
//! | `status.json` | agent | replaced atomically ([`Status`]) |
//! | `heartbeat.json` | agent | replaced atomically ([`Heartbeat`]) |
//! | `cmd-<seq>.json` | manager | write-once ([`Command`]) |
//! | `resp-<seq>.json` | agent | write-once, answers `cmd-<seq>` ([`Response`]) |
//! | `req-<seq>.json` | agent (or the deployed server's first-boot check) | write-once ([`Request`]) |
//!
//! `<seq>` is a decimal number zero-padded to 20 digits, so that key order is
//! sequence order. A write-once file is created only if absent and never
//! modified; whoever consumes it deletes it as its acknowledgement (the agent
//! deletes `cmd-N` after writing `resp-N`; the manager deletes `resp-N` and
//! `req-N` after acting on them). A command whose sequence number is not
//! above [`Status::last_command`] has been carried out already: the agent
//! deletes it without running it again, so a replayed or duplicated command
//! is harmless.

pub mod connect;
pub mod https;
pub mod local;
pub mod s3;

use std::fmt;
use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::survey::HardwareSurvey;

pub use local::LocalTransport;

/// The protocol version written into every status and command.
pub const PROTOCOL_VERSION: u32 = 1;
/// The status file's name.
pub const STATUS: &str = "status.json";
/// The heartbeat file's name.
pub const HEARTBEAT: &str = "heartbeat.json";
/// Heartbeats missed before a manager deems an agent offline.
pub const DEFAULT_OFFLINE_FACTOR: u32 = 3;
/// The largest mailbox file a reader accepts: a status holds a survey
/// (tens of KiB); anything near this is not a mailbox file.
pub const MAX_FILE: usize = 4 << 20;

/// Why a mailbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MailboxError {
    /// The transport failed.
    #[error("mailbox {mailbox}: {action} {file}: {source}")]
    Io {
        /// The mailbox, as its transport describes it.
        mailbox: String,
        /// What was being done.
        action: &'static str,
        /// The file.
        file: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file did not parse.
    #[error("mailbox {mailbox}: {file} is not a valid {what}: {reason}")]
    Malformed {
        /// The mailbox.
        mailbox: String,
        /// The file.
        file: String,
        /// What it should have been.
        what: &'static str,
        /// The parser's complaint.
        reason: String,
    },
    /// A mailbox id that is not 32 lowercase hex digits.
    #[error("{0:?} is not a mailbox id (32 lowercase hex digits, 128 random bits)")]
    BadId(String),
}

/// Result of mailbox operations.
pub type Result<T> = std::result::Result<T, MailboxError>;

/// A mailbox's name: 128 bits from the kernel's CSPRNG, as 32 hex digits.
/// Knowing it is not enough to read the mailbox (tokens decide that, see
/// `manager/MAILBOX.md`), but it is never guessable either.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MailboxId(String);

impl MailboxId {
    /// A fresh id from getrandom(2).
    pub fn generate() -> io::Result<MailboxId> {
        let mut bytes = [0u8; 16];
        fill_random(&mut bytes)?;
        Ok(MailboxId(hex_lower(&bytes)))
    }

    /// Checks and wraps an id.
    pub fn parse(s: &str) -> Result<MailboxId> {
        if s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(MailboxId(s.to_string()))
        } else {
            Err(MailboxError::BadId(s.to_string()))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MailboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for MailboxId {
    type Error = MailboxError;
    fn try_from(s: String) -> Result<MailboxId> {
        MailboxId::parse(&s)
    }
}

impl From<MailboxId> for String {
    fn from(id: MailboxId) -> String {
        id.0
    }
}

/// Fills `buf` from the kernel's CSPRNG (getrandom(2), blocking until it is
/// seeded).
pub fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    getrandom::fill(buf).map_err(|e| io::Error::other(format!("getrandom: {e}")))
}

/// Lowercase hex of `bytes`.
pub fn hex_lower(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        write!(s, "{b:02x}").expect("writing to a String cannot fail");
    }
    s
}

/// The three kinds of write-once message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MessageKind {
    /// `cmd-<seq>.json`, manager → agent.
    Command,
    /// `resp-<seq>.json`, agent → manager, answering the command `<seq>`.
    Response,
    /// `req-<seq>.json`, agent → manager, unsolicited.
    Request,
}

impl MessageKind {
    fn prefix(self) -> &'static str {
        match self {
            MessageKind::Command => "cmd-",
            MessageKind::Response => "resp-",
            MessageKind::Request => "req-",
        }
    }

    /// The file name of message `seq`.
    pub fn file_name(self, seq: u64) -> String {
        format!("{}{seq:020}.json", self.prefix())
    }

    /// The kind and sequence number of a file name, if it is a message.
    pub fn parse_name(name: &str) -> Option<(MessageKind, u64)> {
        for kind in [
            MessageKind::Command,
            MessageKind::Response,
            MessageKind::Request,
        ] {
            if let Some(rest) = name.strip_prefix(kind.prefix()) {
                let digits = rest.strip_suffix(".json")?;
                if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
                    return digits.parse().ok().map(|seq| (kind, seq));
                }
                return None;
            }
        }
        None
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `heartbeat.json`: the agent is alive and will write again within
/// `interval_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// When it was written, in Unix milliseconds.
    pub ts_ms: u64,
    /// How often the agent writes it, in milliseconds.
    pub interval_ms: u64,
    /// Random per agent process: a change means the agent restarted.
    pub boot: String,
}

impl Heartbeat {
    /// Whether an agent with this heartbeat is offline at `now_ms`: more
    /// than `factor` intervals have passed since it was written.
    pub fn is_offline(&self, now_ms: u64, factor: u32) -> bool {
        now_ms.saturating_sub(self.ts_ms) > self.interval_ms.saturating_mul(u64::from(factor))
    }
}

/// What the agent is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentState {
    /// Booting: coldplug, network, survey.
    Starting,
    /// Waiting for commands.
    Idle,
    /// Running a command.
    Busy,
    /// Something fatal happened; see [`Status::error`]. A rescue shell is
    /// on the console.
    Failed,
    /// The deployed server booted its own OS and reported it (see
    /// [`Status::first_boot`]); no agent serves this mailbox any more.
    Booted,
}

/// Progress of the current step, fed by the library's progress events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Units done.
    pub done: u64,
    /// Units in all, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// What is counted (`bytes`).
    pub unit: String,
}

/// Who the agent runs on, to tell machines apart without trusting the id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineIdentity {
    /// SMBIOS system UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dmi_uuid: Option<String>,
    /// MAC addresses of its NICs.
    #[serde(default)]
    pub macs: Vec<String>,
    /// Serial numbers (or WWNs) of its disks.
    #[serde(default)]
    pub disk_serials: Vec<String>,
}

impl MachineIdentity {
    /// The identity recorded in a hardware survey.
    pub fn from_survey(s: &HardwareSurvey) -> MachineIdentity {
        MachineIdentity {
            dmi_uuid: s.dmi.product_uuid.clone(),
            macs: s.nics.iter().filter_map(|n| n.mac.clone()).collect(),
            disk_serials: s
                .disks
                .iter()
                .filter_map(|d| d.serial.clone().or_else(|| d.wwn.clone()))
                .collect(),
        }
    }
}

/// `status.json`: the agent's state, replaced as it changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The agent's ferry version.
    pub agent_version: String,
    /// What it is doing.
    pub state: AgentState,
    /// The current step, for people (`deploy: writing disk 0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Progress of the current step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// The job the current command belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The highest command sequence number carried out (0: none). Managers
    /// number new commands above it.
    pub last_command: u64,
    /// The fatal error, in [`AgentState::Failed`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Who the agent runs on.
    pub identity: MachineIdentity,
    /// The hardware survey, once taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub survey: Option<HardwareSurvey>,
    /// When this status was written, in Unix milliseconds.
    pub updated_ms: u64,
    /// What the deployed server reported on its first boot, in
    /// [`AgentState::Booted`] (written by `ferry first-boot`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_boot: Option<FirstBootReport>,
}

/// What a deployed server reports on its first boot (`ferry first-boot`,
/// see `agent::firstboot`): enough to tell that the migrated OS came up
/// on the right disk, with its network, and in what health.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstBootReport {
    /// Its host name (`uname -n`).
    pub hostname: String,
    /// The running kernel (`uname -r`).
    pub kernel: String,
    /// Its non-loopback addresses, in CIDR form (`10.0.2.15/24`); IPv6
    /// link-local addresses are left out.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// What is mounted on `/` (`/dev/vda1`), from `/proc/self/mountinfo`.
    pub root_source: String,
    /// `systemctl is-system-running` once the boot settled (or the wait
    /// ran out): `running`, `degraded`, `starting`, … (`unknown` without
    /// systemctl).
    pub system_state: String,
    /// Units in the `failed` state.
    #[serde(default)]
    pub failed_units: Vec<String>,
    /// When the kernel started, in Unix milliseconds.
    pub booted_ms: u64,
    /// How long after the kernel started the report was made, in
    /// milliseconds.
    #[serde(default)]
    pub uptime_ms: u64,
}

/// What a command asks for. New actions are added at the end; an agent
/// answers an action it does not know with an error response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Take the hardware and disk survey again and put it in the status.
    Survey,
    /// Capture disks (device paths on the agent) into the library as
    /// `image`.
    Capture {
        /// The image's name.
        image: String,
        /// Disks to capture, in order (`/dev/sda`).
        disks: Vec<String>,
        /// Parent image for an incremental capture.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<String>,
        /// Direct migration: stream the capture through this relay (32 hex
        /// digits) of the library's store to a deploying agent instead of
        /// storing it; `image` is then only the migration's label.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        relay: Option<String>,
    },
    /// Deploy `image` onto disks of the agent's machine.
    Deploy {
        /// The image's name.
        image: String,
        /// Target disks, in order (`/dev/vda`).
        targets: Vec<String>,
        /// Target firmware (`bios`, `uefi`); the machine's own if absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        firmware: Option<String>,
        /// Adapt the deployed OS to this machine afterwards.
        #[serde(default)]
        adapt: bool,
        /// Force this table scheme on the target disks (`gpt`, `mbr`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scheme: Option<crate::plan::TableKind>,
        /// `[image disk, target disk]` pairs (from 0); by order if empty.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        mapping: Vec<(usize, usize)>,
        /// File-system type changes (`{"disk":0,"number":2,"to":"xfs"}`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        convert: Vec<crate::plan::FsConvert>,
        /// Direct migration: deploy what a capturing agent streams through
        /// this relay (32 hex digits) instead of a stored image; `image` is
        /// then only the migration's label.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        relay: Option<String>,
    },
    /// Adapt the OS on these disks to this machine (`ferry adapt`).
    Adapt {
        /// The disks holding the OS.
        disks: Vec<String>,
        /// `keep` or `dhcp`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<String>,
    },
    /// Reboot the machine.
    Reboot,
    /// Power it off.
    Poweroff,
    /// Load a kernel and initramfs (paths or library URLs) and kexec them.
    Kexec {
        /// The kernel.
        kernel: String,
        /// The initramfs.
        initrd: String,
        /// Its command line.
        cmdline: String,
    },
    /// Run a shell command; its output is the response's result.
    Shell {
        /// The command, run by `/bin/sh -c`.
        command: String,
        /// Give up after this many seconds.
        #[serde(default = "default_shell_timeout")]
        timeout_s: u64,
    },
}

fn default_shell_timeout() -> u64 {
    300
}

/// `cmd-<seq>.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// Its sequence number (also in its file name; they must agree).
    pub seq: u64,
    /// The job it is a step of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// When the manager wrote it, in Unix milliseconds.
    pub issued_ms: u64,
    /// What to do.
    #[serde(flatten)]
    pub action: Action,
}

/// `resp-<seq>.json`: how command `<seq>` ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The command's sequence number.
    pub seq: u64,
    /// The command's job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Whether it succeeded.
    pub ok: bool,
    /// The error chain when it failed, as the agent printed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What it produced (a capture's stats, a shell command's output).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub result: serde_json::Value,
    /// When it finished, in Unix milliseconds.
    pub finished_ms: u64,
}

/// `req-<seq>.json`: something the agent asks of or tells the manager
/// unprompted (`hello` when it first starts, `first-boot` from a deployed
/// server).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Its sequence number.
    pub seq: u64,
    /// What kind of request.
    pub kind: String,
    /// Its content.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub body: serde_json::Value,
    /// When it was written, in Unix milliseconds.
    pub sent_ms: u64,
}

/// Where a mailbox's files live: a local directory, `ferry serve` over
/// HTTPS, or an S3 prefix. Names are the bare file names above.
pub trait Transport: Send + Sync {
    /// The mailbox's location, for messages.
    fn describe(&self) -> String;
    /// A file's content, or `None` if it does not exist.
    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>>;
    /// Replaces a file atomically (status, heartbeat).
    fn replace(&self, name: &str, data: &[u8]) -> io::Result<()>;
    /// Creates a write-once file; `Ok(false)` if it already exists, in
    /// which case nothing is written.
    fn create(&self, name: &str, data: &[u8]) -> io::Result<bool>;
    /// Every file's name, sorted.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Deletes a file; an absent file is not an error.
    fn delete(&self, name: &str) -> io::Result<()>;
}

/// Checks that `name` is a plain mailbox file name (letters, digits, `-`,
/// `_`, `.`; not hidden), so no transport can be led outside its mailbox.
pub fn check_file_name(name: &str) -> io::Result<()> {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if plain {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a mailbox file name"),
        ))
    }
}

/// Reads and parses a mailbox file, bounding its size.
pub fn read_json<T: serde::de::DeserializeOwned>(
    t: &dyn Transport,
    name: &str,
    what: &'static str,
) -> Result<Option<T>> {
    let io_err = |source| MailboxError::Io {
        mailbox: t.describe(),
        action: "reading",
        file: name.to_string(),
        source,
    };
    let Some(bytes) = t.read(name).map_err(io_err)? else {
        return Ok(None);
    };
    if bytes.len() > MAX_FILE {
        return Err(MailboxError::Malformed {
            mailbox: t.describe(),
            file: name.to_string(),
            what,
            reason: format!("{} bytes, more than the {MAX_FILE} allowed", bytes.len()),
        });
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| MailboxError::Malformed {
            mailbox: t.describe(),
            file: name.to_string(),
            what,
            reason: e.to_string(),
        })
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(value).expect("mailbox types always serialise");
    v.push(b'\n');
    v
}

/// The messages of one kind in a mailbox, by sequence number.
pub fn list_messages(t: &dyn Transport, kind: MessageKind) -> Result<Vec<u64>> {
    let names = t.list().map_err(|source| MailboxError::Io {
        mailbox: t.describe(),
        action: "listing",
        file: String::new(),
        source,
    })?;
    let mut seqs: Vec<u64> = names
        .iter()
        .filter_map(|n| MessageKind::parse_name(n))
        .filter(|(k, _)| *k == kind)
        .map(|(_, s)| s)
        .collect();
    seqs.sort_unstable();
    Ok(seqs)
}

/// The agent's side of a mailbox.
pub struct Mailbox {
    transport: Box<dyn Transport>,
    last_command: u64,
    next_request: u64,
    boot: String,
}

impl Mailbox {
    /// The agent side of the mailbox on `transport`. `last_command` is the
    /// highest command already carried out (from a previous status, 0 for a
    /// fresh agent).
    pub fn new(transport: Box<dyn Transport>, last_command: u64) -> io::Result<Mailbox> {
        let mut b = [0u8; 8];
        fill_random(&mut b)?;
        Ok(Mailbox {
            transport,
            last_command,
            next_request: 0,
            boot: hex_lower(&b),
        })
    }

    /// The transport.
    pub fn transport(&self) -> &dyn Transport {
        self.transport.as_ref()
    }

    /// The highest command carried out.
    pub fn last_command(&self) -> u64 {
        self.last_command
    }

    fn io(&self, action: &'static str, file: &str) -> impl FnOnce(io::Error) -> MailboxError {
        let mailbox = self.transport.describe();
        let file = file.to_string();
        move |source| MailboxError::Io {
            mailbox,
            action,
            file,
            source,
        }
    }

    /// Writes the status. Its `last_command` is set to this mailbox's.
    pub fn write_status(&self, status: &Status) -> Result<()> {
        let mut s = status.clone();
        s.last_command = self.last_command;
        s.updated_ms = now_ms();
        self.transport
            .replace(STATUS, &to_json(&s))
            .map_err(self.io("writing", STATUS))
    }

    /// Writes a heartbeat promising the next within `interval_ms`.
    pub fn heartbeat(&self, interval_ms: u64) -> Result<()> {
        let hb = Heartbeat {
            ts_ms: now_ms(),
            interval_ms,
            boot: self.boot.clone(),
        };
        self.transport
            .replace(HEARTBEAT, &to_json(&hb))
            .map_err(self.io("writing", HEARTBEAT))
    }

    /// Commands waiting to be carried out, in order. Commands at or below
    /// `last_command` (replays, duplicates) are deleted unread; a command
    /// file that does not parse, or whose `seq` disagrees with its name, is
    /// answered with an error response and deleted, so it cannot block the
    /// queue.
    pub fn pending_commands(&mut self) -> Result<Vec<Command>> {
        let mut out = Vec::new();
        for seq in list_messages(self.transport.as_ref(), MessageKind::Command)? {
            let name = MessageKind::Command.file_name(seq);
            if seq <= self.last_command {
                self.transport
                    .delete(&name)
                    .map_err(self.io("deleting", &name))?;
                continue;
            }
            match read_json::<Command>(self.transport.as_ref(), &name, "command") {
                Ok(Some(cmd)) if cmd.seq == seq => out.push(cmd),
                Ok(Some(cmd)) => {
                    let msg = format!("{name} says seq {}; refused", cmd.seq);
                    self.finish(seq, None, Err(msg))?;
                }
                Ok(None) => {}
                Err(e @ MailboxError::Malformed { .. }) => {
                    self.finish(seq, None, Err(e.to_string()))?
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Answers command `seq` and acknowledges it (deletes `cmd-<seq>`). The
    /// response is written before the command is deleted, so a crash in
    /// between leaves the command answered, and it is not run again:
    /// [`Mailbox::pending_commands`] skips it once `last_command` covers it.
    pub fn finish(
        &mut self,
        seq: u64,
        job: Option<String>,
        outcome: std::result::Result<serde_json::Value, String>,
    ) -> Result<()> {
        let (ok, error, result) = match outcome {
            Ok(v) => (true, None, v),
            Err(e) => (false, Some(e), serde_json::Value::Null),
        };
        let resp = Response {
            seq,
            job,
            ok,
            error,
            result,
            finished_ms: now_ms(),
        };
        let name = MessageKind::Response.file_name(seq);
        // Already answered (a crash between response and delete): keep
        // the first answer, the file is write-once.
        self.transport
            .create(&name, &to_json(&resp))
            .map_err(self.io("writing", &name))?;
        self.last_command = self.last_command.max(seq);
        let cmd = MessageKind::Command.file_name(seq);
        self.transport
            .delete(&cmd)
            .map_err(self.io("deleting", &cmd))
    }

    /// Sends a request to the manager; returns its sequence number.
    pub fn request(&mut self, kind: &str, body: serde_json::Value) -> Result<u64> {
        if self.next_request == 0 {
            let existing = list_messages(self.transport.as_ref(), MessageKind::Request)?;
            self.next_request = existing.last().map_or(1, |s| s + 1);
        }
        loop {
            let seq = self.next_request;
            self.next_request += 1;
            let req = Request {
                seq,
                kind: kind.to_string(),
                body: body.clone(),
                sent_ms: now_ms(),
            };
            let name = MessageKind::Request.file_name(seq);
            if self
                .transport
                .create(&name, &to_json(&req))
                .map_err(self.io("writing", &name))?
            {
                return Ok(seq);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox() -> (tempfile::TempDir, Mailbox) {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = LocalTransport::new(dir.path().join("mb"));
        (dir, Mailbox::new(Box::new(t), 0).expect("mailbox"))
    }

    fn command(seq: u64, action: Action) -> Vec<u8> {
        to_json(&Command {
            protocol: PROTOCOL_VERSION,
            seq,
            job: Some("j1".into()),
            issued_ms: now_ms(),
            action,
        })
    }

    #[test]
    fn ids_are_128_random_bits() {
        let a = MailboxId::generate().expect("id");
        let b = MailboxId::generate().expect("id");
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
        assert!(MailboxId::parse(a.as_str()).is_ok());
        for bad in [
            "",
            "../etc",
            "ABCDEF0123456789ABCDEF0123456789",
            &"a".repeat(33),
        ] {
            assert!(MailboxId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_sort_by_sequence() {
        let n9 = MessageKind::Command.file_name(9);
        let n10 = MessageKind::Command.file_name(10);
        assert!(n9 < n10);
        assert_eq!(
            MessageKind::parse_name(&n10),
            Some((MessageKind::Command, 10))
        );
        assert_eq!(
            MessageKind::parse_name("resp-00000000000000000003.json"),
            Some((MessageKind::Response, 3))
        );
        assert_eq!(MessageKind::parse_name("cmd-3.json"), None);
        assert_eq!(MessageKind::parse_name("status.json"), None);
    }

    #[test]
    fn commands_run_once_in_order() {
        let (_d, mut mb) = mailbox();
        let t = mb.transport();
        assert!(t
            .create(
                &MessageKind::Command.file_name(2),
                &command(2, Action::Reboot)
            )
            .expect("create"));
        assert!(t
            .create(
                &MessageKind::Command.file_name(1),
                &command(1, Action::Survey)
            )
            .expect("create"));
        // Write-once: a second create of the same name changes nothing.
        assert!(!t
            .create(
                &MessageKind::Command.file_name(1),
                &command(1, Action::Poweroff)
            )
            .expect("create"));
        let cmds = mb.pending_commands().expect("pending");
        assert_eq!(cmds.iter().map(|c| c.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(cmds[0].action, Action::Survey);
        mb.finish(1, cmds[0].job.clone(), Ok(serde_json::json!({"n": 1})))
            .expect("finish");
        assert_eq!(mb.last_command(), 1);
        // A replay of command 1 is deleted without being returned.
        let t = mb.transport();
        assert!(t
            .create(
                &MessageKind::Command.file_name(1),
                &command(1, Action::Poweroff)
            )
            .expect("create"));
        let cmds = mb.pending_commands().expect("pending");
        assert_eq!(cmds.iter().map(|c| c.seq).collect::<Vec<_>>(), [2]);
        assert!(!mb
            .transport()
            .list()
            .expect("list")
            .contains(&MessageKind::Command.file_name(1)));
        let resp: Response = read_json(
            mb.transport(),
            &MessageKind::Response.file_name(1),
            "response",
        )
        .expect("read")
        .expect("present");
        assert!(resp.ok);
        assert_eq!(resp.result, serde_json::json!({"n": 1}));
    }

    #[test]
    fn malformed_command_is_answered_not_run() {
        let (_d, mut mb) = mailbox();
        let t = mb.transport();
        t.create(&MessageKind::Command.file_name(1), b"{not json")
            .expect("create");
        t.create(
            &MessageKind::Command.file_name(2),
            &command(3, Action::Reboot),
        )
        .expect("create");
        assert!(mb.pending_commands().expect("pending").is_empty());
        for seq in [1, 2] {
            let resp: Response = read_json(
                mb.transport(),
                &MessageKind::Response.file_name(seq),
                "response",
            )
            .expect("read")
            .expect("present");
            assert!(!resp.ok);
            assert!(resp
                .error
                .as_deref()
                .unwrap_or("")
                .contains(&MessageKind::Command.file_name(seq)));
        }
    }

    #[test]
    fn heartbeat_expiry() {
        let hb = Heartbeat {
            ts_ms: 10_000,
            interval_ms: 1_000,
            boot: "x".into(),
        };
        assert!(!hb.is_offline(13_000, 3));
        assert!(hb.is_offline(13_001, 3));
        assert!(
            !hb.is_offline(5_000, 3),
            "a clock behind the agent's is not offline"
        );
    }

    #[test]
    fn requests_take_the_next_number() {
        let (_d, mut mb) = mailbox();
        assert_eq!(
            mb.request("hello", serde_json::Value::Null).expect("req"),
            1
        );
        assert_eq!(
            mb.request("hello", serde_json::Value::Null).expect("req"),
            2
        );
        mb.transport()
            .delete(&MessageKind::Request.file_name(1))
            .expect("delete");
        assert_eq!(mb.request("x", serde_json::Value::Null).expect("req"), 3);
    }
}
