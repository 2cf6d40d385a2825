//! A checked-in library stays readable: `tests/golden/lz4-library/` is a
//! small library written by ferry before any codec but raw and LZ4 existed
//! (chunk records of codec 0 and 1, a version-1 config). Every later build
//! must restore its image byte for byte and find it clean.
//!
//! Regenerate (only if the format version changes on purpose):
//! `cargo test -p imaging --test golden_library -- --ignored write_golden_lz4_library`

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::xorshift;
use imaging::chunker::ChunkerParams;
use imaging::store::LocalStore;
use imaging::{capture, restore, CaptureRequest, Library, NoProgress, RestoreOptions};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/lz4-library")
}

/// The golden image's content: text-like bytes (stored LZ4), random bytes
/// (stored raw), a zero run (a hole) and a repeated block (one chunk, used
/// twice).
fn golden_source() -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "ferry ", "chunk ", "pack ", "index ", "restore ", "capture ", "disk ", "library ", "the ",
        "of ", "and ", "\n",
    ];
    let noise = xorshift(24_000, 0x601d);
    let mut d = Vec::new();
    for b in &noise {
        d.extend_from_slice(WORDS[usize::from(*b) % WORDS.len()].as_bytes());
    }
    d.extend(xorshift(30_000, 0x7a4d));
    d.extend(std::iter::repeat_n(0u8, 40_000));
    let block = d[1000..9192].to_vec();
    d.extend(&block);
    d.extend(&block);
    d.extend(xorshift(5_001, 0xfeed));
    d
}

/// The golden library, copied to `dir` (opening takes the lock file and may
/// make `tmp/`: the checked-in tree stays untouched).
fn golden_copy(dir: &Path) -> PathBuf {
    fn copy(from: &Path, to: &Path) {
        fs::create_dir_all(to).expect("mkdir");
        for e in fs::read_dir(from).expect("read golden dir") {
            let e = e.expect("entry");
            let dst = to.join(e.file_name());
            if e.file_type().expect("type").is_dir() {
                copy(&e.path(), &dst);
            } else {
                fs::copy(e.path(), &dst).expect("copy");
            }
        }
    }
    let lib = dir.join("lib");
    copy(&golden_dir(), &lib);
    lib
}

#[test]
fn lz4_library_from_before_zstd_still_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = Library::open_local(&golden_copy(dir.path())).expect("the golden library opens");
    let out = dir.path().join("out.img");
    restore(
        &lib,
        "golden",
        &out,
        &RestoreOptions::default(),
        &NoProgress,
    )
    .expect("restores");
    assert!(
        fs::read(&out).expect("read") == golden_source(),
        "the restored image differs from its source"
    );
    let report = imaging::verify::verify_library(&lib, &NoProgress).expect("verify runs");
    assert!(report.is_clean(), "{:?}", report.problems);
}

#[test]
fn a_new_lz4_library_writes_the_config_older_builds_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    Library::create(
        Box::new(LocalStore::new(dir.path().join("lib"))),
        ChunkerParams::with_avg(4096),
    )
    .expect("library");
    let config = "ferry-library.json";
    assert_eq!(
        fs::read_to_string(dir.path().join("lib").join(config)).expect("new config"),
        fs::read_to_string(golden_dir().join(config)).expect("golden config"),
        "an LZ4 library's config changed: builds before it could not open it"
    );
}

/// Writes `tests/golden/lz4-library/` anew.
#[test]
#[ignore = "regenerates the checked-in golden library"]
fn write_golden_lz4_library() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("golden.img");
    fs::write(&src, golden_source()).expect("write source");
    let golden = golden_dir();
    if golden.exists() {
        fs::remove_dir_all(&golden).expect("remove the old golden library");
    }
    let lib = Library::create(
        Box::new(LocalStore::new(&golden)),
        ChunkerParams::with_avg(4096),
    )
    .expect("library");
    let req = CaptureRequest {
        mode: imaging::DiskMode::Raw,
        name: "golden".into(),
        parent: None,
        sources: vec![src],
        workers: 1,
    };
    capture(&lib, &req, &NoProgress).expect("capture");
    drop(lib);
    for leftover in ["lock", "tmp"] {
        let p = golden.join(leftover);
        if p.is_dir() {
            fs::remove_dir_all(&p).expect("remove tmp");
        } else if p.exists() {
            fs::remove_file(&p).expect("remove lock");
        }
    }
}
