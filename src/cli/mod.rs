//! Presentation: argument types, progress rendering and output formats for
//! each subcommand.

pub mod adapt;
pub mod agent;
pub mod agents;
pub mod boot;
pub mod boot_swap;
pub mod capture;
pub mod deploy;
pub mod drivers;
pub mod first_boot;
pub mod image;
pub mod jobs;
pub mod migrate;
pub mod progress;
pub mod remote;
pub mod restore;
pub mod serve;
pub mod survey;

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use imaging::Library;
use indicatif::HumanBytes;

/// Sends `tracing` output to stderr; `-v` raises the level.
pub fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn,ferry=info,imaging=info",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .with_target(false)
        .init();
}

/// Opens an existing library, with the path or URL in any error: a
/// directory, `file:///dir`, `https://host:port/v1/library` (token from
/// `$FERRY_TOKEN`, CA from `$FERRY_CA`) or `s3://bucket/prefix?endpoint=…`
/// (see `imaging::remote`).
pub fn open_library(path: &Path) -> anyhow::Result<Library> {
    match remote_store(path)? {
        Some(store) => Library::open(store),
        None => Library::open_local(path),
    }
    .with_context(|| format!("opening library {}", path.display()))
}

/// Opens a library, creating it (LZ4) if the directory or store is new.
pub fn open_or_create_library(path: &Path) -> anyhow::Result<Library> {
    match remote_store(path)? {
        Some(store) => Library::open_or_create_store(store, None),
        None => Library::open_or_create_local(path),
    }
    .with_context(|| format!("opening library {}", path.display()))
}

/// The store of a library given as a URL; `None` for a plain path.
pub fn remote_store(path: &Path) -> anyhow::Result<Option<Box<dyn imaging::store::Store>>> {
    let Some(s) = path.to_str().filter(|s| s.contains("://")) else {
        return Ok(None);
    };
    let opts = imaging::remote::RemoteOptions::from_env()?;
    Ok(Some(imaging::remote::open_store(s, &opts)?))
}

/// Bytes for people: `1.50 GiB`.
pub fn bytes(n: u64) -> String {
    HumanBytes(n).to_string()
}

/// A rate for people: `180.3 MiB/s`.
pub fn rate(n: u64, secs: f64) -> String {
    if secs <= 0.0 {
        return "-".into();
    }
    format!("{}/s", HumanBytes((n as f64 / secs) as u64))
}

/// Seconds for people.
pub fn duration(secs: f64) -> String {
    format!("{:.1?}", Duration::from_secs_f64(secs.max(0.0)))
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
