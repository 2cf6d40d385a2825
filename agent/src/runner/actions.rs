//! What each mailbox [`Action`] does on the agent's machine, and what it
//! answers.
//!
//! | action | result |
//! |---|---|
//! | `survey` | `{"hardware": HardwareSurvey, "disks": [{"path", "layout" or "error"}]}` |
//! | `capture` | `{"image", "size", "disks", "stats": CaptureStats}` |
//! | `capture` with `relay` | `{"relay", "disks", "stats": SendStats, "bytes_relayed"}` (direct migration, sending side) |
//! | `deploy` (with or without `relay`) | `{"deploy": DeployReport, "adapt": AdaptReport?}` |
//! | `adapt` | `AdaptReport` |
//! | `shell` | `{"exit_code", "signal", "stdout", "stderr", "truncated"}` ([`super::shell`]) |
//! | `reboot`, `poweroff`, `kexec` | `{"action", "done"}`; `done: false` when power actions are not allowed |
//!
//! A failure is an [`ActionError`]; the loop answers it with
//! [`error_chain`], every cause down to the system call.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use imaging::direct::{Receiver, RelayReader, RelayTimeouts, RelayWriter};
use imaging::{CaptureRequest, DiskMode, Library, ProgressSink};
use serde_json::{json, Value};

use super::{kexec, shell, RunnerConfig};
use crate::adapt::{adapt_deployed, AdaptError, AdaptOptions, AdaptTarget, Hardware, NetworkMode};
use crate::deploy::{
    deploy, deploy_direct, direct_manifest, probe_target, DeployError, DeployOptions, DeployReport,
};
use crate::mailbox::Action;
use crate::plan::{plan, Firmware, PlanError, PlanOptions};
use crate::survey::{survey, HardwareSurvey, SurveyError};

/// Why an action failed.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The command cannot be carried out as given.
    #[error("{0}")]
    Refused(String),
    /// No library is configured, or it cannot be opened.
    #[error("opening library {location}")]
    Library {
        /// The library's location.
        location: String,
        /// Why.
        #[source]
        source: Box<imaging::Error>,
    },
    /// A network library's URL or options are wrong.
    #[error("opening library {location}")]
    RemoteLibrary {
        /// The library's URL.
        location: String,
        /// Why.
        #[source]
        source: imaging::remote::RemoteError,
    },
    /// The hardware survey failed.
    #[error("surveying the hardware")]
    Survey(#[source] SurveyError),
    /// A capture failed.
    #[error("capturing image {image}")]
    Capture {
        /// The image.
        image: String,
        /// Why.
        #[source]
        source: Box<imaging::Error>,
    },
    /// Reading the image to deploy failed.
    #[error("reading image {image}")]
    Image {
        /// The image.
        image: String,
        /// Why.
        #[source]
        source: Box<imaging::Error>,
    },
    /// Planning a deploy failed.
    #[error("planning the deploy of {image}")]
    Plan {
        /// The image.
        image: String,
        /// Why.
        #[source]
        source: Box<PlanError>,
    },
    /// A deploy failed.
    #[error("deploying image {image}")]
    Deploy {
        /// The image.
        image: String,
        /// Why.
        #[source]
        source: Box<DeployError>,
    },
    /// Adapting the OS failed.
    #[error("adapting the OS on {disks}")]
    Adapt {
        /// The disks.
        disks: String,
        /// Why.
        #[source]
        source: Box<AdaptError>,
    },
    /// A shell command could not be run or timed out.
    #[error(transparent)]
    Shell(#[from] shell::ShellError),
    /// Loading a kexec kernel failed.
    #[error(transparent)]
    Kexec(#[from] kexec::KexecError),
}

/// The text of `e` and every cause below it, `: `-separated, each cause
/// once (a message that already quotes its cause is not repeated).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !t.is_empty() && !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Opens the library at `location` (a path or `file://` URL), creating it
/// when `create` and it is new. The one place that knows how libraries are
/// reached: remote libraries plug in here.
pub fn open_library(cfg: &RunnerConfig, create: bool) -> Result<Library, ActionError> {
    let Some(location) = cfg.library.as_deref() else {
        return Err(ActionError::Refused(
            "this agent has no library configured (ferry.library= or the media's config)".into(),
        ));
    };
    let err = |source| ActionError::Library {
        location: location.to_string(),
        source: Box::new(source),
    };
    if imaging::remote::is_remote(location) {
        let store = imaging::remote::open_store(location, &cfg.remote).map_err(|source| {
            ActionError::RemoteLibrary {
                location: location.to_string(),
                source,
            }
        })?;
        return if create {
            Library::open_or_create_store(store, None)
        } else {
            Library::open(store)
        }
        .map_err(err);
    }
    let path = Path::new(location.strip_prefix("file://").unwrap_or(location));
    let r = if create {
        Library::open_or_create_local(path)
    } else {
        Library::open_local(path)
    };
    r.map_err(err)
}

/// What happens after the answer is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PowerAction {
    /// Restart the machine.
    Reboot,
    /// Turn it off.
    Poweroff,
    /// Boot the kernel loaded with kexec_file_load.
    Kexec,
}

impl PowerAction {
    /// Its name.
    pub fn name(&self) -> &'static str {
        match self {
            PowerAction::Reboot => "reboot",
            PowerAction::Poweroff => "poweroff",
            PowerAction::Kexec => "kexec",
        }
    }

    /// Flushes the disks and acts; returns only if that failed.
    pub fn act(&self) -> String {
        use nix::sys::reboot::{reboot, RebootMode};
        nix::unistd::sync();
        let mode = match self {
            PowerAction::Reboot => RebootMode::RB_AUTOBOOT,
            PowerAction::Poweroff => RebootMode::RB_POWER_OFF,
            PowerAction::Kexec => RebootMode::RB_KEXEC,
        };
        match reboot(mode) {
            Err(e) => format!("reboot(2) failed: {e}"),
            Ok(never) => match never {},
        }
    }
}

/// An action's result, and what to do once it is answered.
#[derive(Debug)]
pub struct Outcome {
    /// The response's result.
    pub result: Value,
    /// A power action to take after answering.
    pub then: Option<PowerAction>,
    /// A new hardware survey for the status.
    pub survey: Option<HardwareSurvey>,
}

impl Outcome {
    fn value(result: Value) -> Outcome {
        Outcome {
            result,
            then: None,
            survey: None,
        }
    }
}

/// What an action works with.
pub struct Context<'a> {
    /// The loop's configuration.
    pub cfg: &'a RunnerConfig,
    /// The machine's latest hardware survey.
    pub survey: &'a HardwareSurvey,
    /// Where progress events go.
    pub progress: &'a dyn ProgressSink,
}

/// A short description of an action, for `status.step` and logs.
pub fn describe(a: &Action) -> String {
    match a {
        Action::Survey => "survey".into(),
        Action::Capture {
            image,
            disks,
            relay: Some(_),
            ..
        } => format!("send {} directly as {image}", disks.join(", ")),
        Action::Capture { image, disks, .. } => {
            format!("capture {} as {image}", disks.join(", "))
        }
        Action::Deploy {
            image,
            targets,
            relay: Some(_),
            ..
        } => format!("receive {image} directly onto {}", targets.join(", ")),
        Action::Deploy { image, targets, .. } => {
            format!("deploy {image} onto {}", targets.join(", "))
        }
        Action::Adapt { disks, .. } => format!("adapt {}", disks.join(", ")),
        Action::Reboot => "reboot".into(),
        Action::Poweroff => "poweroff".into(),
        Action::Kexec { kernel, .. } => format!("kexec {kernel}"),
        Action::Shell { command, .. } => {
            let short: String = command.chars().take(60).collect();
            format!("shell {short}")
        }
    }
}

/// Carries out `action`.
pub fn perform(ctx: &Context<'_>, action: &Action) -> Result<Outcome, ActionError> {
    match action {
        Action::Survey => do_survey(ctx),
        Action::Capture {
            image,
            disks,
            relay: Some(relay),
            ..
        } => do_send(ctx, image, disks, relay),
        Action::Capture {
            image,
            disks,
            parent,
            relay: None,
        } => do_capture(ctx, image, disks, parent.clone()),
        Action::Deploy {
            image,
            targets,
            firmware,
            adapt,
            scheme,
            mapping,
            convert,
            relay,
        } => {
            let choices = PlanOptions {
                firmware: None,
                scheme: *scheme,
                mapping: (!mapping.is_empty()).then(|| mapping.clone()),
                convert: convert.clone(),
            };
            let d = DeployRequest {
                image,
                targets,
                firmware: firmware.as_deref(),
                choices,
                adapt: *adapt,
            };
            match relay {
                Some(relay) => do_receive(ctx, &d, relay),
                None => do_deploy(ctx, &d),
            }
        }
        Action::Adapt { disks, network } => {
            let disks: Vec<PathBuf> = disks.iter().map(PathBuf::from).collect();
            let report = do_adapt(ctx, &disks, network.as_deref(), &[])?;
            Ok(Outcome::value(to_value(&report)))
        }
        Action::Shell { command, timeout_s } => {
            let out = shell::run(command, Duration::from_secs(*timeout_s))?;
            Ok(Outcome::value(to_value(&out)))
        }
        Action::Reboot => Ok(power(ctx, PowerAction::Reboot)),
        Action::Poweroff => Ok(power(ctx, PowerAction::Poweroff)),
        Action::Kexec {
            kernel,
            initrd,
            cmdline,
        } => {
            let (kernel, initrd) = (Path::new(kernel), Path::new(initrd));
            if ctx.cfg.allow_power {
                kexec::load(kernel, Some(initrd), cmdline)?;
            } else {
                kexec::check_files(kernel, Some(initrd))?;
            }
            let mut o = power(ctx, PowerAction::Kexec);
            o.result["kernel"] = json!(kernel.display().to_string());
            o.result["cmdline"] = json!(cmdline);
            Ok(o)
        }
    }
}

fn to_value(v: &impl serde::Serialize) -> Value {
    serde_json::to_value(v).expect("ferry's reports always serialise")
}

fn power(ctx: &Context<'_>, p: PowerAction) -> Outcome {
    let done = ctx.cfg.allow_power;
    Outcome {
        result: json!({ "action": p.name(), "done": done }),
        then: done.then_some(p),
        survey: None,
    }
}

/// Block disks worth surveying under ROOT/sys/block: not RAM disks, not
/// empty devices; as ROOT/dev paths.
fn block_disks(root: &Path) -> Vec<PathBuf> {
    let sys = root.join("sys/block");
    let mut out = Vec::new();
    for ent in std::fs::read_dir(&sys).into_iter().flatten().flatten() {
        let name = ent.file_name().to_string_lossy().into_owned();
        let sectors: u64 = std::fs::read_to_string(sys.join(&name).join("size"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let virtual_only = ["ram", "zram", "loop"].iter().any(|p| name.starts_with(p));
        if sectors > 0 && !virtual_only {
            out.push(root.join("dev").join(name));
        }
    }
    out.sort();
    out
}

fn do_survey(ctx: &Context<'_>) -> Result<Outcome, ActionError> {
    let root = &ctx.cfg.root;
    let hw = survey(root).map_err(ActionError::Survey)?;
    let sys = root.join("sys");
    let disks: Vec<Value> = block_disks(root)
        .into_iter()
        .map(|p| {
            let path = p.display().to_string();
            match imaging::disk::survey_disk(&p, &sys) {
                Ok(layout) => json!({ "path": path, "layout": layout }),
                Err(e) => json!({ "path": path, "error": error_chain(&e) }),
            }
        })
        .collect();
    Ok(Outcome {
        result: json!({ "hardware": hw, "disks": disks }),
        then: None,
        survey: Some(hw),
    })
}

fn do_capture(
    ctx: &Context<'_>,
    image: &str,
    disks: &[String],
    parent: Option<String>,
) -> Result<Outcome, ActionError> {
    if disks.is_empty() {
        return Err(ActionError::Refused(format!(
            "capture of {image}: no disks given"
        )));
    }
    let lib = open_library(ctx.cfg, true)?;
    let req = CaptureRequest {
        name: image.to_string(),
        parent,
        sources: disks.iter().map(PathBuf::from).collect(),
        mode: DiskMode::Server,
        workers: 0,
    };
    let m = imaging::capture(&lib, &req, ctx.progress).map_err(|source| ActionError::Capture {
        image: image.to_string(),
        source: Box::new(source),
    })?;
    Ok(Outcome::value(json!({
        "image": m.name,
        "size": m.size(),
        "disks": m.disks.len(),
        "stats": m.stats,
    })))
}

fn parse_firmware(s: &str) -> Result<Firmware, ActionError> {
    match s {
        "bios" => Ok(Firmware::Bios),
        "uefi" => Ok(Firmware::Uefi),
        _ => Err(ActionError::Refused(format!(
            "firmware {s:?}: expected bios or uefi"
        ))),
    }
}

/// What a deploy command asks for.
struct DeployRequest<'a> {
    image: &'a str,
    targets: &'a [String],
    firmware: Option<&'a str>,
    choices: PlanOptions,
    adapt: bool,
}

impl DeployRequest<'_> {
    fn err(&self, source: DeployError) -> ActionError {
        ActionError::Deploy {
            image: self.image.to_string(),
            source: Box::new(source),
        }
    }

    /// Plans the deploy of `disks` (an image's or a direct stream's) onto
    /// the target disks.
    fn plan(
        &self,
        ctx: &Context<'_>,
        disks: &[imaging::manifest::Disk],
    ) -> Result<crate::plan::DeployPlan, ActionError> {
        let firmware = match self.firmware {
            Some(f) => parse_firmware(f)?,
            None => ctx.survey.firmware,
        };
        let targets = self
            .targets
            .iter()
            .map(|t| probe_target(Path::new(t)).map_err(|e| self.err(e)))
            .collect::<Result<Vec<_>, _>>()?;
        let opts = PlanOptions {
            firmware: Some(firmware),
            ..self.choices.clone()
        };
        plan(disks, &targets, &opts).map_err(|source| ActionError::Plan {
            image: self.image.to_string(),
            source: Box::new(source),
        })
    }

    /// The response: the deploy report, and the adapt report when asked;
    /// adapt knows the deployed image's disks (`image_disks`, the
    /// manifest's), so names the source system gave them resolve.
    fn finish(
        &self,
        ctx: &Context<'_>,
        report: DeployReport,
        image_disks: &[imaging::manifest::Disk],
    ) -> Result<Outcome, ActionError> {
        let adapted = if self.adapt {
            let paths: Vec<PathBuf> = self.targets.iter().map(PathBuf::from).collect();
            Some(to_value(&do_adapt(ctx, &paths, None, image_disks)?))
        } else {
            None
        };
        Ok(Outcome::value(json!({
            "deploy": report,
            "adapt": adapted,
        })))
    }
}

fn do_deploy(ctx: &Context<'_>, d: &DeployRequest<'_>) -> Result<Outcome, ActionError> {
    let lib = Arc::new(open_library(ctx.cfg, false)?);
    let m = lib.manifest(d.image).map_err(|source| ActionError::Image {
        image: d.image.to_string(),
        source: Box::new(source),
    })?;
    let p = d.plan(ctx, &m.disks)?;
    let log = |line: &str| tracing::info!("{line}");
    let report = deploy(
        &lib,
        d.image,
        &p,
        &DeployOptions::default(),
        ctx.progress,
        &log,
    )
    .map_err(|e| d.err(e))?;
    d.finish(ctx, report, &m.disks)
}

/// Direct migration, receiving side: plans from the layout the capturing
/// agent sends through `relay`, then writes its streams as they arrive.
/// On any failure the relay is aborted, so the sender stops too.
fn do_receive(
    ctx: &Context<'_>,
    d: &DeployRequest<'_>,
    relay: &str,
) -> Result<Outcome, ActionError> {
    let lib = open_library(ctx.cfg, false)?;
    let reader = RelayReader::new(lib.store(), relay, RelayTimeouts::default())
        .map_err(|e| ActionError::Refused(e.to_string()))?;
    let name = reader.name();
    tracing::info!(
        "direct migration {}: waiting for the sender on {name}",
        d.image
    );
    let mut rx = match Receiver::open(reader, &name) {
        Ok(rx) => rx,
        Err(e) => {
            // The reader is gone with the failed open; tell the sender.
            imaging::direct::abort(lib.store(), relay, &error_chain(&e));
            return Err(d.err(DeployError::Image(e)));
        }
    };
    let m = direct_manifest(rx.layout());
    let log = |line: &str| tracing::info!("{line}");
    let result = d.plan(ctx, &m.disks).and_then(|p| {
        deploy_direct(
            &mut rx,
            &m,
            &p,
            &DeployOptions::default(),
            ctx.progress,
            &log,
        )
        .map_err(|e| d.err(e))
    });
    let reader = rx.into_inner();
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            reader.abort(&error_chain(&e));
            return Err(e);
        }
    };
    if let Err(e) = reader.close() {
        tracing::warn!("direct migration {}: cleaning up {name}: {e}", d.image);
    }
    d.finish(ctx, report, &m.disks)
}

/// Direct migration, sending side: streams `disks` through `relay`.
fn do_send(
    ctx: &Context<'_>,
    label: &str,
    disks: &[String],
    relay: &str,
) -> Result<Outcome, ActionError> {
    if disks.is_empty() {
        return Err(ActionError::Refused(format!(
            "direct migration {label}: no disks given"
        )));
    }
    let lib = open_library(ctx.cfg, false)?;
    let mut w = RelayWriter::new(lib.store(), relay, RelayTimeouts::default())
        .map_err(|e| ActionError::Refused(e.to_string()))?;
    let sources: Vec<PathBuf> = disks.iter().map(PathBuf::from).collect();
    let err = |source| ActionError::Capture {
        image: label.to_string(),
        source: Box::new(source),
    };
    // The last segment goes out in both cases: on failure it carries the
    // reason to the receiver.
    let stats = imaging::direct::send(&sources, label, &mut w, ctx.progress);
    let sent = w.finish();
    let stats = stats.map_err(err)?;
    let sent = sent.map_err(|e| err(imaging::Error::io("sending", format!("relay {relay}"), e)))?;
    Ok(Outcome::value(json!({
        "relay": relay,
        "disks": disks.len(),
        "stats": stats,
        "bytes_relayed": sent,
    })))
}

/// Adapts the OS on `disks`; `image_disks` are the disks (the manifest's)
/// of the image just deployed onto them, empty when adapt runs alone.
fn do_adapt(
    ctx: &Context<'_>,
    disks: &[PathBuf],
    network: Option<&str>,
    image_disks: &[imaging::manifest::Disk],
) -> Result<crate::adapt::AdaptReport, ActionError> {
    let network = match network.unwrap_or("keep") {
        "keep" => NetworkMode::Keep,
        "dhcp" => NetworkMode::Dhcp,
        other => {
            return Err(ActionError::Refused(format!(
                "network {other:?}: expected keep or dhcp"
            )))
        }
    };
    let s = ctx.survey;
    let opts = AdaptOptions {
        hardware: Hardware {
            firmware: Some(s.firmware),
            modaliases: s.storage_and_network_modaliases(),
            nic_macs: s.nics.iter().filter_map(|n| n.mac.clone()).collect(),
        },
        network,
        hosts: Vec::new(),
        firmware: None,
        drivers: ctx.cfg.drivers.clone().filter(|d| d.is_dir()),
        first_boot: ctx.cfg.first_boot.clone(),
    };
    let shown = disks
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let target = AdaptTarget::Disks(disks.to_vec());
    let report = adapt_deployed(&target, &opts, image_disks, &mut |line| {
        tracing::info!("adapt: {line}")
    })
    .map_err(|source| ActionError::Adapt {
        disks: shown.clone(),
        source: Box::new(source),
    })?;
    if report.status != "ok" {
        return Err(ActionError::Refused(format!(
            "adapting the OS on {shown}: {} (every change rolled back)",
            report.error.as_deref().unwrap_or(&report.status)
        )));
    }
    Ok(report)
}
