//! `ferry capture`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use imaging::{CaptureRequest, Library};

use super::progress::CliProgress;
use super::{bytes, duration, print_json, rate};

/// Arguments of `ferry capture`.
#[derive(clap::Args)]
pub struct CaptureArgs {
    /// Disk image files or block devices; each becomes one disk of the image.
    #[arg(required = true)]
    sources: Vec<PathBuf>,
    /// Name of the new image.
    #[arg(long)]
    name: String,
    /// The image this capture succeeds (recorded as its parent).
    #[arg(long)]
    parent: Option<String>,
    /// Print the manifest as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `ferry capture`. The library is created if the directory is new or empty.
pub fn run(library: &Path, a: CaptureArgs) -> anyhow::Result<ExitCode> {
    let lib = Library::open_or_create_local(library)
        .with_context(|| format!("opening library {}", library.display()))?;
    let progress = CliProgress::new();
    let req = CaptureRequest {
        name: a.name.clone(),
        parent: a.parent,
        sources: a.sources,
        workers: 0,
    };
    let m = imaging::capture(&lib, &req, &progress)
        .with_context(|| format!("capturing image {}", a.name))?;
    progress.clear();
    if a.json {
        print_json(&m)?;
    } else {
        let s = &m.stats;
        eprintln!(
            "captured image {} into {}: {} in {} disk(s), {} read, {} chunks ({} new, {}), {} stored, in {} ({})",
            m.name,
            lib.location(),
            bytes(m.size()),
            m.disks.len(),
            bytes(s.bytes_read),
            s.chunks,
            s.chunks_new,
            bytes(s.bytes_new),
            bytes(s.stored_new),
            duration(s.seconds),
            rate(s.bytes_read, s.seconds)
        );
    }
    Ok(ExitCode::SUCCESS)
}
