//! Engine tests through the public API: round trips, dedup, corruption,
//! seeding and gc, on temp directories (no root needed).

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{capture_raw as cap, xorshift};
use imaging::chunker::ChunkerParams;
use imaging::store::LocalStore;
use imaging::{capture, restore, CaptureRequest, Error, Library, NoProgress, RestoreOptions};
use proptest::prelude::*;

/// A library with small chunks, so small inputs exercise many of them.
fn small_library(dir: &Path) -> Library {
    Library::create(
        Box::new(LocalStore::new(dir.join("lib"))),
        ChunkerParams::with_avg(4096),
    )
    .expect("library")
}

fn rest(lib: &Library, name: &str, target: &Path) -> imaging::Result<imaging::RestoreStats> {
    restore(lib, name, target, &RestoreOptions::default(), &NoProgress)
}

/// A disk-like test input: random data, zero runs, repeats, a short tail.
fn disk(seed: u64) -> Vec<u8> {
    let mut d = xorshift(300_000, seed);
    d.extend(std::iter::repeat_n(0u8, 200_000));
    let copy = d[10_000..60_000].to_vec();
    d.extend(&copy);
    d.extend(std::iter::repeat_n(0xffu8, 40_000));
    d.extend(xorshift(123_457, seed + 1));
    d
}

fn packs(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in fs::read_dir(dir.join("lib/packs")).expect("packs dir") {
        for f in fs::read_dir(sub.expect("entry").path()).expect("sub dir") {
            out.push(f.expect("entry").path());
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any mix of data, zeros and repeats restores byte for byte, onto a new
    /// file and onto a file holding other bytes.
    #[test]
    fn round_trip(parts in prop::collection::vec((0u8..4, 1usize..70_000, any::<u64>()), 1..12)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut data = Vec::new();
        for (kind, len, seed) in parts {
            match kind {
                0 => data.extend(xorshift(len, seed | 1)),
                1 => data.extend(std::iter::repeat_n(0u8, len * 3)),
                2 if !data.is_empty() => {
                    let start = (seed as usize) % data.len();
                    let end = (start + len).min(data.len());
                    let copy = data[start..end].to_vec();
                    data.extend(copy);
                }
                _ => data.extend(std::iter::repeat_n(seed as u8, len)),
            }
        }
        let src = dir.path().join("src.img");
        fs::write(&src, &data).expect("write source");
        let lib = small_library(dir.path());
        let m = cap(&lib, &src, "img", None);
        prop_assert_eq!(m.size(), data.len() as u64);

        let fresh = dir.path().join("fresh.img");
        rest(&lib, "img", &fresh).expect("restore");
        prop_assert!(fs::read(&fresh).expect("read") == data);

        let dirty = dir.path().join("dirty.img");
        fs::write(&dirty, xorshift(data.len() / 2 + 5000, 77)).expect("write");
        rest(&lib, "img", &dirty).expect("restore over other data");
        prop_assert!(fs::read(&dirty).expect("read") == data);
    }
}

#[test]
fn second_capture_stores_only_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = small_library(dir.path());
    let mut data = disk(1);
    let src = dir.path().join("src.img");
    fs::write(&src, &data).expect("write");
    let v1 = cap(&lib, &src, "v1", None);
    let again = cap(&lib, &src, "v1-again", Some("v1"));
    assert_eq!(
        again.stats.chunks_new, 0,
        "an unchanged source stores nothing"
    );
    assert_eq!(again.stats.stored_new, 0);
    assert_eq!(again.parent.as_deref(), Some("v1"));

    data[100_000..104_096].copy_from_slice(&xorshift(4096, 99));
    fs::write(&src, &data).expect("write");
    let v2 = cap(&lib, &src, "v2", Some("v1"));
    assert!(
        v2.stats.chunks_new >= 1 && v2.stats.chunks_new <= 4,
        "{:?}",
        v2.stats
    );
    assert!(
        v2.stats.bytes_new < 40_000,
        "a 4 KiB change stored {:?}",
        v2.stats
    );
    assert!(v1.stats.stored_new > 300_000);

    let out = dir.path().join("v2.img");
    rest(&lib, "v2", &out).expect("restore");
    assert_eq!(fs::read(&out).expect("read"), data);
}

#[test]
fn sparse_source_restores_sparse() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = small_library(dir.path());
    let src = dir.path().join("sparse.img");
    let f = fs::File::create(&src).expect("create");
    f.set_len(64 << 20).expect("size");
    std::os::unix::fs::FileExt::write_all_at(&f, &xorshift(100_000, 5), 40 << 20).expect("write");
    let m = cap(&lib, &src, "s", None);
    assert!(
        m.stats.bytes_read <= 200_000,
        "holes were read: {:?}",
        m.stats
    );
    let out = dir.path().join("out.img");
    rest(&lib, "s", &out).expect("restore");
    assert_eq!(fs::read(&out).expect("read"), fs::read(&src).expect("read"));
    assert!(
        fs::metadata(&out).expect("meta").blocks() * 512 < 1 << 20,
        "the restored file is not sparse"
    );
}

#[test]
fn flipped_pack_byte_is_caught_and_never_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = small_library(dir.path());
    let data = xorshift(200_000, 3);
    let src = dir.path().join("src.img");
    fs::write(&src, &data).expect("write");
    cap(&lib, &src, "v", None);
    let pack = packs(dir.path()).pop().expect("a pack");
    let mut bytes = fs::read(&pack).expect("read pack");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    fs::write(&pack, &bytes).expect("write pack");

    let out = dir.path().join("out.img");
    let err = rest(&lib, "v", &out).expect_err("restore must fail");
    let msg = err.to_string();
    assert!(
        matches!(err, Error::BadChunk { .. } | Error::Corrupt { .. }),
        "{msg}"
    );
    assert!(
        msg.contains(&pack.display().to_string()),
        "error does not name the pack: {msg}"
    );
    // Whatever reached the target is correct data; the bad chunk is not there.
    let got = fs::read(&out).expect("read");
    let mut wrong = 0;
    for (a, b) in got.iter().zip(&data) {
        if a != b && *a != 0 {
            wrong += 1;
        }
    }
    assert_eq!(
        wrong, 0,
        "bytes that are neither zero nor correct reached the target"
    );
    assert_ne!(got, data, "the restore cannot have completed");

    let report = imaging::verify::verify_library(&lib, &NoProgress).expect("verify runs");
    assert!(!report.is_clean());
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains(&pack.display().to_string())),
        "{:?}",
        report.problems
    );
    let report = imaging::verify::verify_image(&lib, "v", &NoProgress).expect("verify runs");
    assert!(!report.is_clean());
}

#[test]
fn truncated_index_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = small_library(dir.path());
    let src = dir.path().join("src.img");
    fs::write(&src, xorshift(100_000, 4)).expect("write");
    cap(&lib, &src, "v", None);
    let idx = fs::read_dir(dir.path().join("lib/index"))
        .expect("index dir")
        .next()
        .expect("one")
        .expect("entry")
        .path();
    let bytes = fs::read(&idx).expect("read");
    fs::write(&idx, &bytes[..bytes.len() - 10]).expect("truncate");
    let err = rest(&lib, "v", &dir.path().join("out.img")).expect_err("must fail");
    assert!(
        err.to_string().contains(&idx.display().to_string()),
        "{err}"
    );
    assert!(
        !dir.path().join("out.img").exists(),
        "nothing is created before the index loads"
    );
}

#[test]
fn restore_seeds_from_what_the_target_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = small_library(dir.path());
    let v1 = disk(10);
    let mut v2 = v1.clone();
    v2[20_000..30_000].copy_from_slice(&xorshift(10_000, 11));
    let (s1, s2) = (dir.path().join("v1.img"), dir.path().join("v2.img"));
    fs::write(&s1, &v1).expect("write");
    fs::write(&s2, &v2).expect("write");
    cap(&lib, &s1, "v1", None);
    cap(&lib, &s2, "v2", Some("v1"));

    // An older version on the target: only the changed chunks are written.
    let out = dir.path().join("out.img");
    rest(&lib, "v1", &out).expect("restore v1");
    let st = rest(&lib, "v2", &out).expect("restore v2 over v1");
    assert_eq!(fs::read(&out).expect("read"), v2);
    assert!(st.bytes_written < 40_000, "{st:?}");
    assert!(st.bytes_seeded > 300_000, "{st:?}");

    // An interrupted restore: the first half is in place.
    let half = dir.path().join("half.img");
    fs::write(&half, &v2[..v2.len() / 2]).expect("write");
    let st = rest(&lib, "v2", &half).expect("resume");
    assert_eq!(fs::read(&half).expect("read"), v2);
    assert!(st.bytes_seeded > 200_000, "{st:?}");

    // A complete target: nothing to do.
    let st = rest(&lib, "v2", &half).expect("rerun");
    assert_eq!(st.bytes_written, 0, "{st:?}");
}

#[test]
fn gc_frees_removed_images_and_keeps_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = small_library(dir.path());
    let (a, b) = (disk(20), disk(30));
    let (sa, sb) = (dir.path().join("a.img"), dir.path().join("b.img"));
    fs::write(&sa, &a).expect("write");
    fs::write(&sb, &b).expect("write");
    cap(&lib, &sa, "a", None);
    cap(&lib, &sb, "b", None);
    let before: u64 = packs(dir.path())
        .iter()
        .map(|p| fs::metadata(p).expect("meta").len())
        .sum();
    {
        let _l = lib.lock(imaging::store::LockMode::Exclusive).expect("lock");
        lib.remove_image("a").expect("rm");
    }
    let r = imaging::gc::gc(&lib, &NoProgress).expect("gc");
    assert!(r.bytes_freed > 0, "{r:?}");
    let after: u64 = packs(dir.path())
        .iter()
        .map(|p| fs::metadata(p).expect("meta").len())
        .sum();
    assert!(after < before * 3 / 4, "before {before}, after {after}");
    assert!(imaging::verify::verify_library(&lib, &NoProgress)
        .expect("verify")
        .is_clean());
    let out = dir.path().join("out.img");
    rest(&lib, "b", &out).expect("restore");
    assert_eq!(fs::read(&out).expect("read"), b);
    let r2 = imaging::gc::gc(&lib, &NoProgress).expect("second gc");
    assert_eq!(
        (r2.packs_deleted, r2.bytes_freed),
        (0, 0),
        "gc is idempotent: {r2:?}"
    );
}

#[test]
fn refusals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = small_library(dir.path());
    let src = dir.path().join("src.img");
    fs::write(&src, xorshift(10_000, 1)).expect("write");
    let req = |name: &str, s: &Path| CaptureRequest {
        mode: imaging::DiskMode::Raw,
        name: name.into(),
        parent: None,
        sources: vec![s.to_path_buf()],
        workers: 1,
    };
    let missing = dir.path().join("nope.img");
    let e = capture(&lib, &req("x", &missing), &NoProgress).expect_err("missing source");
    assert!(e.to_string().contains("nope.img"), "{e}");
    let e = capture(&lib, &req("../evil", &src), &NoProgress).expect_err("bad name");
    assert!(matches!(e, Error::BadName(_)), "{e}");
    cap(&lib, &src, "x", None);
    let e = capture(&lib, &req("x", &src), &NoProgress).expect_err("duplicate");
    assert!(matches!(e, Error::ImageExists { .. }), "{e}");
    let e = rest(&lib, "nope", &dir.path().join("o.img")).expect_err("no image");
    assert!(matches!(e, Error::NoSuchImage { .. }), "{e}");
    assert!(!dir.path().join("o.img").exists());
}
