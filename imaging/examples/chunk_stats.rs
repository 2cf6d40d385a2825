//! Measures chunking parameters on real disk images: for each average
//! chunk size, captures a base image and its successor into a fresh library
//! and reports chunk counts, stored bytes and the successor's added bytes.
//! The table in `ChunkerParams::default` comes from this tool.
//!
//! `cargo run --release -p imaging --example chunk_stats -- BASE.img NEXT.img [CHANGED_BYTES]`

use std::path::PathBuf;
use std::time::Instant;

use imaging::store::LocalStore;
use imaging::{capture, CaptureRequest, ChunkerParams, Library, NoProgress};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        return Err("usage: chunk_stats BASE.img NEXT.img [CHANGED_BYTES]".into());
    }
    let changed: Option<f64> = args.get(2).and_then(|s| s.trim().parse().ok());
    println!("| avg | chunks | stored base | capture s | added by next | next / changed |");
    println!("|---|---|---|---|---|---|");
    for avg in [16u32 << 10, 32 << 10, 64 << 10, 128 << 10] {
        let dir =
            tempfile::tempdir_in(std::env::var("TMPDIR").unwrap_or_else(|_| "/var/tmp".into()))?;
        let lib = Library::create(
            Box::new(LocalStore::new(dir.path())),
            ChunkerParams::with_avg(avg),
        )?;
        let req = |name: &str, src: &str| CaptureRequest {
            mode: imaging::DiskMode::Raw,
            name: name.into(),
            parent: None,
            sources: vec![PathBuf::from(src)],
            workers: 0,
        };
        let t = Instant::now();
        let base = capture(&lib, &req("base", &args[0]), &NoProgress)?;
        let secs = t.elapsed().as_secs_f64();
        let next = capture(&lib, &req("next", &args[1]), &NoProgress)?;
        let ratio = changed.map_or("-".into(), |c| {
            format!("{:.2}", next.stats.stored_new as f64 / c)
        });
        println!(
            "| {} KiB | {} | {:.1} MB | {secs:.1} | {:.1} MB | {ratio} |",
            avg >> 10,
            base.stats.chunks,
            base.stats.stored_new as f64 / 1e6,
            next.stats.stored_new as f64 / 1e6
        );
    }
    Ok(())
}
