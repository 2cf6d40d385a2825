//! `ferry restore`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use imaging::tree::restore::{restore_tree, TreeRestoreOptions};
use imaging::RestoreOptions;

use super::progress::CliProgress;
use super::{bytes, duration, open_library, print_json, rate};

/// Arguments of `ferry restore`.
#[derive(clap::Args)]
pub struct RestoreArgs {
    /// The image.
    image: String,
    /// A file (created sparse if absent) or a block device; for a file-tree
    /// image, a directory (created if absent).
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
    let m = lib.manifest(&a.image)?;
    if m.disks.is_empty() && !m.trees.is_empty() {
        return restore_tree_cmd(&lib, &a.image, &a.target, None, a.json, &progress);
    }
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

/// Restores a file-tree image (or a subtree of it) into a directory.
pub fn restore_tree_cmd(
    lib: &imaging::Library,
    image: &str,
    target: &Path,
    subtree: Option<Vec<u8>>,
    json: bool,
    progress: &CliProgress,
) -> anyhow::Result<ExitCode> {
    let opts = TreeRestoreOptions {
        subtree,
        workers: 0,
    };
    let s = restore_tree(lib, image, target, &opts, progress)
        .with_context(|| format!("restoring image {image} into {}", target.display()))?;
    progress.clear();
    for w in &s.warnings {
        eprintln!("ferry: warning: {w}");
    }
    if json {
        print_json(&s)?;
    } else {
        eprintln!(
            "restored image {image} into {}: {} entries, {} files, {} written, in {} ({})",
            target.display(),
            s.entries,
            s.files,
            bytes(s.bytes_written),
            duration(s.seconds),
            rate(s.bytes_written, s.seconds)
        );
    }
    Ok(ExitCode::SUCCESS)
}
