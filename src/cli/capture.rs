//! `ferry capture`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use imaging::chunk::Compression;
use imaging::tree::capture::{capture_tree, TreeCaptureRequest};
use imaging::{CaptureRequest, DiskMode, Library};

use super::progress::CliProgress;
use super::{bytes, duration, print_json, rate};

/// Arguments of `ferry capture`.
#[derive(clap::Args)]
pub struct CaptureArgs {
    /// Disk images or block devices captured byte for byte, each one disk of
    /// the image; with --files, one directory or ext2/3/4 file system.
    #[arg(required_unless_present = "disk", conflicts_with = "disk")]
    sources: Vec<PathBuf>,
    /// A server's disk (image file or block device), captured with its
    /// partition table and one stream per partition holding only the blocks
    /// in use (swap: its UUID and label only). Repeat for every disk.
    #[arg(long, conflicts_with = "files")]
    disk: Vec<PathBuf>,
    /// Name of the new image.
    #[arg(long)]
    name: String,
    /// The image this capture succeeds (recorded as its parent).
    #[arg(long)]
    parent: Option<String>,
    /// Capture a file tree: a mounted directory, or an unmounted ext2/3/4
    /// partition or image (read directly, never written).
    #[arg(long)]
    files: bool,
    /// With --files: leave out paths matching this glob (relative to the
    /// source; `*` and `?` within a component). Repeatable.
    #[arg(long, requires = "files")]
    exclude: Vec<String>,
    /// With --files: descend into other mounted file systems.
    #[arg(long, requires = "files")]
    cross_file_systems: bool,
    /// With --files on `/`: keep the contents of /proc, /sys, /dev, /run and /tmp.
    #[arg(long, requires = "files")]
    no_default_excludes: bool,
    /// How a new library compresses chunks: lz4 (the default), zstd (level
    /// 3) or zstd:LEVEL (1-19). Chosen when the library is created; on an
    /// existing library it must match the library's.
    #[arg(long, value_name = "CODEC")]
    compression: Option<Compression>,
    /// Print the manifest as JSON.
    #[arg(long)]
    json: bool,
    /// Direct migration, sending side: stream the --disk capture through
    /// relay ID of the library's store to `ferry deploy NAME --relay ID`
    /// (or an agent) instead of storing it; NAME is then only a label.
    #[arg(long, value_name = "ID", requires = "disk", conflicts_with_all = ["parent", "agent"])]
    relay: Option<String>,
    /// Capture on this agent's machine (its mailbox id) instead, as a job
    /// sent through `ferry serve`; --disk names the agent's disks.
    #[arg(long, value_name = "ID")]
    agent: Option<String>,
    #[command(flatten)]
    job: super::remote::JobArgs,
    #[command(flatten)]
    remote: super::remote::RemoteArgs,
}

/// Runs `ferry capture`. The library is created if the directory (or the
/// network store) is new or empty.
pub fn run(library: &Path, a: CaptureArgs) -> anyhow::Result<ExitCode> {
    if let Some(agent) = &a.agent {
        return super::remote::capture(
            &a.remote,
            agent,
            &a.name,
            &a.disk,
            a.parent.clone(),
            &a.job,
            a.json,
        );
    }
    let lib = match super::remote_store(library)? {
        Some(store) => Library::open_or_create_store(store, a.compression),
        None => Library::open_or_create_local_with(library, a.compression),
    }
    .with_context(|| format!("opening library {}", library.display()))?;
    if let Some(relay) = &a.relay {
        return send(&lib, relay, &a);
    }
    let progress = CliProgress::new();
    let m = if a.files {
        let [source] = <[PathBuf; 1]>::try_from(a.sources)
            .map_err(|_| anyhow::anyhow!("--files captures exactly one source"))?;
        let req = TreeCaptureRequest {
            name: a.name.clone(),
            parent: a.parent,
            source,
            excludes: a.exclude,
            cross_file_systems: a.cross_file_systems,
            no_default_excludes: a.no_default_excludes,
            workers: 0,
        };
        capture_tree(&lib, &req, &progress)
    } else {
        let (sources, mode) = if a.disk.is_empty() {
            (a.sources, DiskMode::Raw)
        } else {
            (a.disk, DiskMode::Server)
        };
        let req = CaptureRequest {
            name: a.name.clone(),
            parent: a.parent,
            sources,
            mode,
            workers: 0,
        };
        imaging::capture(&lib, &req, &progress)
    }
    .with_context(|| format!("capturing image {}", a.name))?;
    progress.clear();
    if a.json {
        print_json(&m)?;
    } else {
        let s = &m.stats;
        eprintln!(
            "captured image {} into {}: {} in {}, {} read, {} chunks ({} new, {}), {} stored ({}), in {} ({})",
            m.name,
            lib.location(),
            bytes(m.size()),
            match m.trees.first() {
                Some(t) => format!("{} entries, {} files", t.stream.entries, t.stream.files),
                None => format!("{} disk(s)", m.disks.len()),
            },
            bytes(s.bytes_read),
            s.chunks,
            s.chunks_new,
            bytes(s.bytes_new),
            bytes(s.stored_new),
            lib.compression(),
            duration(s.seconds),
            rate(s.bytes_read, s.seconds)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `ferry capture --disk ... --name LABEL --relay ID`: streams the disks
/// through the relay; nothing is stored in the library.
fn send(lib: &Library, relay: &str, a: &CaptureArgs) -> anyhow::Result<ExitCode> {
    use imaging::direct::{RelayTimeouts, RelayWriter};
    let mut w = RelayWriter::new(lib.store(), relay, RelayTimeouts::default())?;
    let progress = CliProgress::new();
    // The last segment goes out in both cases: on failure it carries the
    // reason to the receiver.
    let sent = imaging::direct::send(&a.disk, &a.name, &mut w, &progress);
    let relayed = w.finish();
    let stats = sent.with_context(|| format!("sending {} through relay {relay}", a.name))?;
    let relayed =
        relayed.with_context(|| format!("sending the last of {} through relay {relay}", a.name))?;
    progress.clear();
    if a.json {
        print_json(&stats)?;
    } else {
        eprintln!(
            "sent {} directly through relay {relay} of {}: {} read, {} chunks, {} relayed, nothing stored, in {} ({})",
            a.name,
            lib.location(),
            bytes(stats.bytes_read),
            stats.chunks,
            bytes(relayed),
            duration(stats.seconds),
            rate(stats.bytes_read, stats.seconds)
        );
    }
    Ok(ExitCode::SUCCESS)
}
