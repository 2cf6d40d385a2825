//! Libraries created with zstd: their images restore byte for byte, they
//! dedup like LZ4 libraries, their setting is fixed at creation, and a
//! damaged zstd record is an error naming the chunk.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use common::{capture_raw as cap, xorshift};
use imaging::chunk::{ChunkId, Codec, Compression};
use imaging::chunker::ChunkerParams;
use imaging::store::LocalStore;
use imaging::tree::capture::{capture_tree, TreeCaptureRequest};
use imaging::tree::restore::{restore_tree, TreeRestoreOptions};
use imaging::{restore, Error, Library, NoProgress, RestoreOptions};

const ZSTD: Compression = Compression::Zstd { level: 3 };

/// A library with small chunks in `dir/name`.
fn library(dir: &Path, name: &str, compression: Compression) -> Library {
    Library::create_with(
        Box::new(LocalStore::new(dir.join(name))),
        ChunkerParams::with_avg(4096),
        compression,
    )
    .expect("library")
}

fn restored(lib: &Library, name: &str, out: &Path) -> Vec<u8> {
    restore(lib, name, out, &RestoreOptions::default(), &NoProgress).expect("restore");
    fs::read(out).expect("read restored image")
}

/// Text-like bytes (compressible by any codec), `len` long.
fn text(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&str; 8] = [
        "block ",
        "inode ",
        "extent ",
        "journal ",
        "the ",
        "superblock ",
        "of ",
        "\n",
    ];
    let mut out = Vec::with_capacity(len + 16);
    for b in xorshift(len, seed) {
        if out.len() >= len {
            break;
        }
        out.extend_from_slice(WORDS[usize::from(b) % WORDS.len()].as_bytes());
    }
    out.truncate(len);
    out
}

/// A disk-like input: text, random bytes, zeros, a repeat, more text.
fn disk(seed: u64) -> Vec<u8> {
    let mut d = text(150_000, seed);
    d.extend(xorshift(60_000, seed + 1));
    d.extend(std::iter::repeat_n(0u8, 100_000));
    let copy = d[20_000..70_000].to_vec();
    d.extend(&copy);
    d.extend(text(80_001, seed + 2));
    d
}

/// Codec of every chunk in the library's index.
fn codecs(lib: &Library) -> Vec<(ChunkId, Codec)> {
    let index = lib.load_index().expect("index");
    index.iter().map(|(id, l)| (*id, l.entry.codec)).collect()
}

fn stored_bytes(lib_dir: &Path) -> u64 {
    fn walk(p: &Path) -> u64 {
        fs::read_dir(p)
            .expect("ls")
            .map(|e| {
                let e = e.expect("entry");
                if e.file_type().expect("type").is_dir() {
                    walk(&e.path())
                } else {
                    e.metadata().expect("stat").len()
                }
            })
            .sum()
    }
    walk(&lib_dir.join("packs"))
}

#[test]
fn a_zstd_library_restores_byte_for_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = library(dir.path(), "lib", ZSTD);
    for (i, data) in [disk(1), text(1, 9), xorshift(70_001, 5), disk(7)]
        .iter()
        .enumerate()
    {
        let src = dir.path().join(format!("src{i}.img"));
        fs::write(&src, data).expect("write source");
        let name = format!("img{i}");
        cap(&lib, &src, &name, None);
        let out = dir.path().join(format!("out{i}.img"));
        assert!(restored(&lib, &name, &out) == *data, "image {i} differs");
    }
    let c = codecs(&lib);
    assert!(
        c.iter().any(|(_, c)| *c == Codec::Zstd),
        "text is stored zstd"
    );
    assert!(
        c.iter().any(|(_, c)| *c == Codec::Raw),
        "random bytes stay raw"
    );
    assert!(
        !c.iter().any(|(_, c)| *c == Codec::Lz4),
        "no LZ4 in a zstd library"
    );
    let report = imaging::verify::verify_library(&lib, &NoProgress).expect("verify");
    assert!(report.is_clean(), "{:?}", report.problems);

    // Reopened, the library keeps its setting and still reads.
    drop(lib);
    let lib = Library::open_local(&dir.path().join("lib")).expect("reopens");
    assert_eq!(lib.compression(), ZSTD);
    assert!(restored(&lib, "img0", &dir.path().join("again.img")) == disk(1));
}

#[test]
fn lz4_and_zstd_libraries_dedup_and_restore_independently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v1 = disk(11);
    let mut v2 = v1.clone();
    v2[5_000..9_000].copy_from_slice(&text(4_000, 99));
    let (s1, s2) = (dir.path().join("v1.img"), dir.path().join("v2.img"));
    fs::write(&s1, &v1).expect("write v1");
    fs::write(&s2, &v2).expect("write v2");

    let mut seen = Vec::new();
    for (name, compression) in [("lz4", Compression::Lz4), ("zstd", ZSTD)] {
        let lib = library(dir.path(), name, compression);
        let m1 = cap(&lib, &s1, "v1", None);
        let again = cap(&lib, &s1, "v1-again", Some("v1"));
        assert_eq!(again.stats.chunks_new, 0, "{name}: nothing new to store");
        let m2 = cap(&lib, &s2, "v2", Some("v1"));
        assert!(
            m2.stats.chunks_new > 0 && m2.stats.chunks_new <= 4,
            "{name}: a 4 KB change stores a few chunks, not {}",
            m2.stats.chunks_new
        );
        let out = dir.path().join(format!("{name}.img"));
        assert!(restored(&lib, "v1", &out) == v1, "{name}: v1 differs");
        assert!(restored(&lib, "v2", &out) == v2, "{name}: v2 differs");

        // gc keeps each record's codec when it repacks.
        lib.remove_image("v1").expect("rm v1");
        lib.remove_image("v1-again").expect("rm v1-again");
        imaging::gc::gc(&lib, &NoProgress).expect("gc");
        assert!(restored(&lib, "v2", &out) == v2, "{name}: v2 after gc");
        let ids: BTreeSet<ChunkId> = codecs(&lib).into_iter().map(|(id, _)| id).collect();
        seen.push((name, ids, m1, stored_bytes(&dir.path().join(name))));
    }
    let (lz4, zstd) = (&seen[0], &seen[1]);
    assert_eq!(lz4.1, zstd.1, "the same chunks, whatever the codec");
    assert_eq!(
        (lz4.2.stats.chunks_new, lz4.2.stats.bytes_new),
        (zstd.2.stats.chunks_new, zstd.2.stats.bytes_new),
        "the same new chunks and raw bytes"
    );
    assert!(
        zstd.3 < lz4.3,
        "zstd stores less: {} against LZ4's {}",
        zstd.3,
        lz4.3
    );
}

#[test]
fn a_file_tree_captures_into_a_zstd_library() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = library(dir.path(), "lib", ZSTD);
    let tree = dir.path().join("tree");
    fs::create_dir_all(tree.join("etc")).expect("mkdir");
    let files = [
        ("etc/fstab", text(3_000, 3)),
        ("log", text(200_000, 4)),
        ("blob", xorshift(50_000, 5)),
    ];
    for (path, data) in &files {
        fs::write(tree.join(path), data).expect("write file");
    }
    let req = TreeCaptureRequest {
        name: "t".into(),
        parent: None,
        source: tree.clone(),
        excludes: Vec::new(),
        cross_file_systems: false,
        no_default_excludes: false,
        workers: 2,
    };
    capture_tree(&lib, &req, &NoProgress).expect("tree capture");
    let out = dir.path().join("out");
    restore_tree(&lib, "t", &out, &TreeRestoreOptions::default(), &NoProgress)
        .expect("tree restore");
    for (path, data) in &files {
        assert!(fs::read(out.join(path)).expect("read") == *data, "{path}");
    }
    assert!(codecs(&lib).iter().any(|(_, c)| *c == Codec::Zstd));
}

#[test]
fn the_setting_is_recorded_and_fixed_at_creation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lib");
    let lib = Library::open_or_create_local_with(&path, Some(Compression::Zstd { level: 9 }))
        .expect("created");
    assert_eq!(lib.compression(), Compression::Zstd { level: 9 });
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(path.join("ferry-library.json")).expect("config"))
            .expect("json");
    assert_eq!(config["version"], 2, "{config}");
    assert_eq!(config["compression"], "zstd:9", "{config}");
    drop(lib);

    // Opening with the same setting, or none, is fine; another is refused.
    Library::open_or_create_local_with(&path, Some(Compression::Zstd { level: 9 })).expect("same");
    assert_eq!(
        Library::open_or_create_local(&path)
            .expect("opens")
            .compression(),
        Compression::Zstd { level: 9 }
    );
    for other in [Compression::Lz4, ZSTD] {
        let err = Library::open_or_create_local_with(&path, Some(other))
            .err()
            .expect("refused");
        let msg = err.to_string();
        assert!(matches!(err, Error::Config { .. }), "{msg}");
        assert!(
            msg.contains("zstd:9") && msg.contains(&other.to_string()),
            "{msg}"
        );
    }

    // An LZ4 library's config is version 1 without a compression key: the
    // file every earlier ferry wrote and reads.
    let lz4 = dir.path().join("lz4");
    Library::open_or_create_local_with(&lz4, None).expect("created");
    let text = fs::read_to_string(lz4.join("ferry-library.json")).expect("config");
    assert!(
        text.contains("\"version\": 1") && !text.contains("compression"),
        "{text}"
    );

    // A level outside zstd's is refused at creation.
    let err = Library::create_with(
        Box::new(LocalStore::new(dir.path().join("bad"))),
        ChunkerParams::default(),
        Compression::Zstd { level: 40 },
    )
    .err()
    .expect("refused");
    assert!(err.to_string().contains("zstd level 40"), "{err}");
}

#[test]
fn a_config_whose_version_and_compression_disagree_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lib");
    Library::open_or_create_local_with(&path, Some(ZSTD)).expect("created");
    let config = path.join("ferry-library.json");
    let good = fs::read_to_string(&config).expect("config");
    for (from, to, want) in [
        (
            "\"version\": 2",
            "\"version\": 1",
            "does not go with compression zstd:3",
        ),
        (
            "\"version\": 2",
            "\"version\": 3",
            "version 3 is not a library this build reads",
        ),
        ("\"zstd:3\"", "\"brotli\"", "unknown compression \"brotli\""),
        ("\"zstd:3\"", "\"zstd:0\"", "unknown compression \"zstd:0\""),
    ] {
        fs::write(&config, good.replace(from, to)).expect("edit config");
        let err = Library::open_local(&path).err().expect("refused");
        let msg = err.to_string();
        assert!(matches!(err, Error::Corrupt { .. }), "{msg}");
        assert!(msg.contains(want), "{to}: {msg}");
    }
}

/// The pack file holding `id`, and the offset of its data.
fn record_of(lib: &Library, lib_dir: &Path, id: &ChunkId) -> (PathBuf, usize) {
    let index = lib.load_index().expect("index");
    let loc = index.get(id).expect("indexed");
    let pack = index.pack_id(loc.pack);
    let path = lib_dir.join(imaging::library::pack_key(&pack));
    (
        path,
        loc.entry.offset as usize + imaging::pack::RECORD_HEADER,
    )
}

#[test]
fn a_damaged_zstd_record_is_an_error_naming_the_chunk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = library(dir.path(), "lib", ZSTD);
    let data = text(100_000, 21);
    let src = dir.path().join("src.img");
    fs::write(&src, &data).expect("write");
    cap(&lib, &src, "v", None);
    let (id, _) = *codecs(&lib)
        .iter()
        .find(|(_, c)| *c == Codec::Zstd)
        .expect("a zstd chunk");
    let (pack, at) = record_of(&lib, &dir.path().join("lib"), &id);
    let good = fs::read(&pack).expect("read pack");

    // Byte 4 is the frame header descriptor: its top bits say how many
    // bytes the content size takes. Claiming a 1-byte size, or cutting the
    // frame's magic, makes a frame that does not fit the index.
    for (what, edit, want) in [
        (
            "content size",
            (at + 5, 0x40u8),
            "zstd data does not decode to",
        ),
        (
            "magic",
            (at, 0xffu8),
            "does not start with a zstd frame header",
        ),
    ] {
        let mut bad = good.clone();
        bad[edit.0] ^= edit.1;
        fs::write(&pack, &bad).expect("damage");
        let out = dir.path().join("out.img");
        let _ = fs::remove_file(&out);
        let err =
            restore(&lib, "v", &out, &RestoreOptions::default(), &NoProgress).expect_err(what);
        let msg = err.to_string();
        assert!(
            matches!(err, Error::BadChunk { id: bad_id, .. } if bad_id == id),
            "{what}: {msg}"
        );
        assert!(
            msg.contains(&id.to_string()) && msg.contains(want),
            "{what}: {msg}"
        );
        assert!(msg.contains(&pack.display().to_string()), "{what}: {msg}");
    }
    fs::write(&pack, &good).expect("repair");
    assert!(restored(&lib, "v", &dir.path().join("ok.img")) == data);
}
