//! `ferry image ls | show | verify | rm | gc`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use imaging::chunklist::Extent;
use serde::Serialize;

use super::progress::CliProgress;
use super::{bytes, open_library, print_json};

/// `ferry image` subcommands.
#[derive(clap::Subcommand)]
pub enum ImageCmd {
    /// List images, or with IMAGE[:/path] the files of a file-tree image.
    Ls {
        /// An image, optionally with a path inside it.
        target: Option<String>,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a file of a file-tree image (IMAGE:/path) to standard output.
    Cat {
        /// IMAGE:/path
        target: String,
    },
    /// Copy a directory or file of a file-tree image (IMAGE:/path) into DIR,
    /// with full metadata.
    Extract {
        /// IMAGE:/path
        target: String,
        /// Where to put it (created if absent).
        dir: std::path::PathBuf,
        /// Print the figures as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one image's manifest and layout.
    Show {
        /// The image.
        image: String,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-read and check stored data: one image, or the whole library.
    Verify {
        /// The image; the whole library if omitted.
        image: Option<String>,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove an image (its data is freed by `gc`).
    Rm {
        /// The image.
        image: String,
    },
    /// Delete data no image refers to.
    Gc {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Serialize)]
struct LsRow {
    name: String,
    created: String,
    parent: Option<String>,
    disks: usize,
    size: u64,
    data_bytes: u64,
    stored_new: u64,
}

/// Runs an image subcommand.
pub fn run(library: &Path, cmd: ImageCmd) -> anyhow::Result<ExitCode> {
    let lib = open_library(library)?;
    match cmd {
        ImageCmd::Ls {
            target: Some(t),
            json,
        } => {
            let (image, path) = split_target(&t);
            let entries = imaging::tree::browse::list(&lib, image, &path)?;
            if json {
                print_json(&entries)?;
            } else {
                for e in entries {
                    println!("{}", ls_line(&e));
                }
            }
        }
        ImageCmd::Cat { target } => {
            let (image, path) = split_target(&target);
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            imaging::tree::browse::cat(&lib, image, &path, &mut out)?;
            std::io::Write::flush(&mut out)?;
        }
        ImageCmd::Extract { target, dir, json } => {
            let (image, path) = split_target(&target);
            let progress = CliProgress::new();
            return super::restore::restore_tree_cmd(
                &lib,
                image,
                &dir,
                Some(path),
                json,
                &progress,
            );
        }
        ImageCmd::Ls { target: None, json } => {
            let mut rows = Vec::new();
            for name in lib.image_names()? {
                let m = lib.manifest(&name)?;
                rows.push(LsRow {
                    created: m
                        .created
                        .format(time::macros::format_description!(
                            "[year]-[month]-[day] [hour]:[minute]:[second]"
                        ))
                        .unwrap_or_default(),
                    parent: m.parent.clone(),
                    disks: m.disks.len(),
                    size: m.size(),
                    data_bytes: m.streams().map(|(_, s)| s.data_bytes).sum(),
                    stored_new: m.stats.stored_new,
                    name,
                });
            }
            if json {
                print_json(&rows)?;
            } else {
                println!(
                    "{:<32} {:<20} {:>10} {:>10} {:>10}  PARENT",
                    "NAME", "CREATED", "SIZE", "DATA", "ADDED"
                );
                for r in rows {
                    println!(
                        "{:<32} {:<20} {:>10} {:>10} {:>10}  {}",
                        r.name,
                        r.created,
                        bytes(r.size),
                        bytes(r.data_bytes),
                        bytes(r.stored_new),
                        r.parent.as_deref().unwrap_or("-")
                    );
                }
            }
        }
        ImageCmd::Show { image, json } => {
            let m = lib.manifest(&image)?;
            if json {
                print_json(&m)?;
            } else {
                println!("image    {}", m.name);
                println!(
                    "created  {} UTC",
                    m.created
                        .format(time::macros::format_description!(
                            "[year]-[month]-[day] [hour]:[minute]:[second]"
                        ))
                        .unwrap_or_default()
                );
                println!("parent   {}", m.parent.as_deref().unwrap_or("-"));
                println!(
                    "chunker  {} {} min {} avg {} max {}",
                    m.chunker.algorithm,
                    m.chunker.crate_version,
                    bytes(m.chunker.min_size.into()),
                    bytes(m.chunker.avg_size.into()),
                    bytes(m.chunker.max_size.into())
                );
                for d in &m.disks {
                    show_disk(&lib, d)?;
                }
                let st = &m.stats;
                println!(
                    "capture  {} read, {} new chunks ({}), {} stored, {:.1} s",
                    bytes(st.bytes_read),
                    st.chunks_new,
                    bytes(st.bytes_new),
                    bytes(st.stored_new),
                    st.seconds
                );
            }
        }
        ImageCmd::Verify { image, json } => {
            let progress = CliProgress::new();
            let report = match &image {
                Some(name) => imaging::verify::verify_image(&lib, name, &progress),
                None => imaging::verify::verify_library(&lib, &progress),
            }
            .context("verifying")?;
            progress.clear();
            if json {
                print_json(&report)?;
            } else {
                for p in &report.problems {
                    println!("PROBLEM: {p}");
                }
                for n in &report.notes {
                    println!("note: {n}");
                }
                println!(
                    "{}: {} image(s), {} chunks, {} checked, {} problem(s)",
                    if report.is_clean() {
                        "clean"
                    } else {
                        "DAMAGED"
                    },
                    report.images.len(),
                    report.chunks_checked,
                    bytes(report.bytes_checked),
                    report.problems.len()
                );
            }
            if !report.is_clean() {
                return Ok(ExitCode::FAILURE);
            }
        }
        ImageCmd::Rm { image } => {
            let _lock = lib.lock(imaging::store::LockMode::Exclusive)?;
            lib.remove_image(&image)?;
            eprintln!("removed image {image}; run `ferry image gc` to free its data");
        }
        ImageCmd::Gc { json } => {
            let progress = CliProgress::new();
            let r = imaging::gc::gc(&lib, &progress).context("collecting garbage")?;
            progress.clear();
            if json {
                print_json(&r)?;
            } else {
                println!(
                    "gc: {} live chunks; deleted {} pack(s), wrote {}, merged {} index file(s), deleted {} list(s) and {} temp file(s); freed {}",
                    r.chunks_live,
                    r.packs_deleted,
                    r.packs_written,
                    r.index_files_merged,
                    r.lists_deleted,
                    r.temp_files_removed,
                    bytes(r.bytes_freed)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Splits `IMAGE:/path` (the path defaults to the root).
fn split_target(t: &str) -> (&str, Vec<u8>) {
    match t.split_once(':') {
        Some((image, path)) => (image, imaging::tree::browse::tree_path(path)),
        None => (t, Vec::new()),
    }
}

/// One `ls -l`-like line.
fn ls_line(e: &imaging::tree::Entry) -> String {
    use imaging::tree::Kind;
    let t = match e.kind {
        Kind::Dir => 'd',
        Kind::File => '-',
        Kind::Symlink => 'l',
        Kind::Char => 'c',
        Kind::Block => 'b',
        Kind::Fifo => 'p',
    };
    let mut perms = String::new();
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        perms.push(if e.mode & (0o400 >> i) != 0 { c } else { '-' });
    }
    let when = time::OffsetDateTime::from_unix_timestamp(e.mtime)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]"
            ))
            .ok()
        })
        .unwrap_or_default();
    let name = String::from_utf8_lossy(e.path.0.rsplit(|&b| b == b'/').next().unwrap_or_default())
        .into_owned();
    let extra = match (&e.target, &e.hardlink, e.rdev) {
        (Some(target), _, _) => format!(" -> {}", target.display()),
        (_, Some(first), _) => format!(" => /{}", first.display()),
        (_, _, Some((ma, mi))) => format!(" [{ma}, {mi}]"),
        _ => String::new(),
    };
    format!(
        "{t}{perms} {:>6} {:>6} {:>12} {when} {name}{extra}",
        e.uid, e.gid, e.size
    )
}

/// `image show` lines for one disk: its streams, and for a server disk its
/// table and partitions.
fn show_disk(lib: &imaging::Library, d: &imaging::manifest::Disk) -> anyhow::Result<()> {
    use imaging::manifest::{DiskContent, PartitionContent};
    let stream_line = |s: &imaging::manifest::BlockStream| -> anyhow::Result<String> {
        let list = lib.read_list(&s.list)?;
        let holes = list
            .extents()
            .iter()
            .filter(|e| matches!(e, Extent::Hole { .. }))
            .count();
        let mut line = format!(
            "{} data in {} chunks, {} zero in {} holes",
            bytes(s.data_bytes),
            s.chunks,
            bytes(s.hole_bytes),
            holes
        );
        if s.unused_bytes > 0 {
            line.push_str(&format!(", {} unused", bytes(s.unused_bytes)));
        }
        Ok(line)
    };
    match &d.content {
        DiskContent::Whole { stream } => {
            println!(
                "{}    {} from {} (every byte): {}",
                d.name,
                bytes(d.size),
                d.source,
                stream_line(stream)?
            );
        }
        DiskContent::Partitioned {
            layout,
            head,
            partitions,
        } => {
            let table = match &layout.table {
                imaging::disk::PartitionTable::None => "no partition table".to_string(),
                imaging::disk::PartitionTable::Mbr { disk_signature, .. } => {
                    format!("MBR {disk_signature}")
                }
                imaging::disk::PartitionTable::Gpt { disk_guid, .. } => format!("GPT {disk_guid}"),
            };
            println!("{}    {} from {}, {table}", d.name, bytes(d.size), d.source);
            println!("  head   {}: {}", bytes(head.size), stream_line(head)?);
            for (p, l) in partitions.iter().zip(&layout.partitions) {
                let fs = l
                    .filesystem
                    .as_ref()
                    .map(|f| {
                        format!(
                            "{} {} {}",
                            format!("{:?}", f.fs_type).to_lowercase(),
                            f.uuid.as_deref().unwrap_or("-"),
                            f.label.as_deref().unwrap_or("-")
                        )
                    })
                    .unwrap_or_else(|| "-".into());
                let what = match &p.content {
                    PartitionContent::UsedBlocks { stream, used_bytes } => format!(
                        "used blocks ({} in use): {}",
                        bytes(*used_bytes),
                        stream_line(stream)?
                    ),
                    PartitionContent::Full { stream } => {
                        format!("every byte: {}", stream_line(stream)?)
                    }
                    PartitionContent::Swap => "swap: nothing stored".into(),
                    PartitionContent::Extended => "extended: nothing stored".into(),
                };
                println!(
                    "  part {:<2} {:>10} at {:>12}  {fs}  {what}",
                    p.number,
                    bytes(l.size),
                    l.start
                );
            }
        }
    }
    Ok(())
}
