//! `ferry restore`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use imaging::RestoreOptions;

use super::progress::CliProgress;
use super::{bytes, duration, open_library, print_json, rate};

/// Arguments of `ferry restore`.
#[derive(clap::Args)]
pub struct RestoreArgs {
    /// The image.
    image: String,
    /// A file (created sparse if absent) or a block device.
    target: PathBuf,
    /// Which disk of a multi-disk image.
    #[arg(long, default_value_t = 0)]
    disk: usize,
    /// Write every chunk, without first checking what the target holds.
    #[arg(long)]
    no_seed: bool,
    /// The block device already reads zeros (new or discarded): do not zero holes.
    #[arg(long)]
    target_zeroed: bool,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `ferry restore`.
pub fn run(library: &Path, a: RestoreArgs) -> anyhow::Result<ExitCode> {
    let lib = open_library(library)?;
    let progress = CliProgress::new();
    let opts = RestoreOptions {
        disk: a.disk,
        no_seed: a.no_seed,
        target_zeroed: a.target_zeroed,
        workers: 0,
    };
    let s = imaging::restore(&lib, &a.image, &a.target, &opts, &progress)
        .with_context(|| format!("restoring image {} to {}", a.image, a.target.display()))?;
    progress.clear();
    if a.json {
        print_json(&s)?;
    } else {
        eprintln!(
            "restored image {} to {}: {} ({} written, {} already in place, {} holes), {} chunks fetched, in {} ({})",
            a.image,
            a.target.display(),
            bytes(s.bytes_total),
            bytes(s.bytes_written),
            bytes(s.bytes_seeded),
            bytes(s.bytes_holes),
            s.chunks_fetched,
            duration(s.seconds),
            rate(s.bytes_total, s.seconds)
        );
    }
    Ok(ExitCode::SUCCESS)
}
