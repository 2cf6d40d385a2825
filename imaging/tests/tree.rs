//! Hostile and damaged file-tree images: restore refuses them and never
//! writes outside its target.

use std::fs;
use std::path::Path;

use imaging::chunk::{ChunkId, Codec};
use imaging::chunklist::ChunkList;
use imaging::index::Index;
use imaging::manifest::{
    CaptureStats, Manifest, Tree, TreeStream, MANIFEST_FORMAT, MANIFEST_VERSION,
};
use imaging::pack::PackBuilder;
use imaging::tree::restore::{restore_tree, TreeRestoreOptions};
use imaging::tree::{Content, Entry, FileExtent, Kind};
use imaging::{ChunkerParams, Library, NoProgress};

/// Stores `chunks` (id, claimed content) as they are — even when the id is
/// not the content's hash — and an image whose metadata is `entries`.
fn craft(lib: &Library, name: &str, entries: &[Entry], chunks: &[(ChunkId, Vec<u8>)]) {
    let mut meta = Vec::new();
    for e in entries {
        meta.extend(serde_json::to_vec(e).expect("serialises"));
        meta.push(b'\n');
    }
    let meta_id = ChunkId::of(&meta);
    let mut pack = PackBuilder::new();
    pack.add(meta_id, Codec::Raw, meta.len(), &meta);
    for (id, data) in chunks {
        pack.add(*id, Codec::Raw, data.len(), data);
    }
    let (pack_id, bytes, pack_entries) = pack.finish();
    lib.write_pack(&pack_id, &bytes).expect("pack");
    let mut index = Index::new();
    index.add_pack(pack_id, &pack_entries);
    lib.write_index(&index).expect("index");
    let mut list = ChunkList::new();
    list.push_chunk(meta_id, meta.len() as u32);
    let list_id = lib.write_list(&list).expect("list");
    lib.write_manifest(&Manifest {
        format: MANIFEST_FORMAT.into(),
        version: MANIFEST_VERSION,
        name: name.into(),
        created: time::OffsetDateTime::now_utc(),
        parent: None,
        chunker: ChunkerParams::default(),
        disks: Vec::new(),
        trees: vec![Tree {
            name: "tree0".into(),
            source: "crafted".into(),
            stream: TreeStream {
                metadata: list_id,
                metadata_bytes: meta.len() as u64,
                entries: entries.len() as u64,
                files: 0,
                data_bytes: 0,
                source_id: String::new(),
                filesystem: None,
            },
        }],
        stats: CaptureStats::default(),
    })
    .expect("manifest");
}

fn root() -> Entry {
    let mut e = Entry::new("", Kind::Dir);
    e.mode = 0o755;
    e
}

fn file(path: &str, data: &[u8]) -> Entry {
    let mut e = Entry::new(path, Kind::File);
    e.mode = 0o644;
    e.size = data.len() as u64;
    e.content = Some(Content {
        extents: vec![FileExtent::Chunk {
            id: ChunkId::of(data),
            len: data.len() as u32,
        }],
    });
    e
}

fn setup() -> (tempfile::TempDir, Library) {
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = Library::create(
        Box::new(imaging::store::LocalStore::new(dir.path().join("lib"))),
        ChunkerParams::default(),
    )
    .expect("library");
    fs::create_dir(dir.path().join("outside")).expect("mkdir");
    (dir, lib)
}

fn restore(
    lib: &Library,
    name: &str,
    target: &Path,
) -> imaging::Result<imaging::tree::restore::TreeRestoreStats> {
    restore_tree(
        lib,
        name,
        target,
        &TreeRestoreOptions::default(),
        &NoProgress,
    )
}

fn outside_is_empty(dir: &Path) {
    let n = fs::read_dir(dir.join("outside")).expect("ls").count();
    assert_eq!(n, 0, "something was written outside the target");
}

#[test]
fn path_traversal_is_refused() {
    let (dir, lib) = setup();
    let data = b"owned".to_vec();
    for (i, bad) in ["../outside/x", "/tmp/x", "a/../../outside/x"]
        .iter()
        .enumerate()
    {
        let name = format!("t{i}");
        craft(
            &lib,
            &name,
            &[root(), file(bad, &data)],
            &[(ChunkId::of(&data), data.clone())],
        );
        let err = restore(&lib, &name, &dir.path().join("target")).expect_err("refused");
        assert!(err.to_string().contains("clean relative path"), "{err}");
    }
    outside_is_empty(dir.path());
}

#[test]
fn writing_through_a_planted_symlink_is_refused() {
    let (dir, lib) = setup();
    let data = b"owned".to_vec();
    let mut link = Entry::new("a", Kind::Symlink);
    link.target = Some(dir.path().join("outside").to_str().expect("utf8").into());
    craft(
        &lib,
        "s",
        &[root(), link, file("a/evil", &data)],
        &[(ChunkId::of(&data), data.clone())],
    );
    let err = restore(&lib, "s", &dir.path().join("target")).expect_err("refused");
    assert!(err.to_string().contains("parent"), "{err}");
    outside_is_empty(dir.path());
}

#[test]
fn a_symlink_already_in_the_target_is_not_followed() {
    // The image is clean; the target holds a trap: d -> outside.
    let (dir, lib) = setup();
    let data = b"content".to_vec();
    let mut d = Entry::new("d", Kind::Dir);
    d.mode = 0o755;
    craft(
        &lib,
        "c",
        &[root(), d, file("d/x", &data)],
        &[(ChunkId::of(&data), data.clone())],
    );
    let target = dir.path().join("target");
    fs::create_dir(&target).expect("mkdir");
    std::os::unix::fs::symlink(dir.path().join("outside"), target.join("d")).expect("symlink");
    restore(&lib, "c", &target).expect("restores");
    outside_is_empty(dir.path());
    assert!(
        fs::symlink_metadata(target.join("d"))
            .expect("stat")
            .is_dir(),
        "the symlink was kept"
    );
    assert_eq!(fs::read(target.join("d/x")).expect("read"), data);
}

#[test]
fn absurd_sizes_are_refused() {
    let (dir, lib) = setup();
    let data = b"x".to_vec();
    let mut f = file("big", &data);
    f.size = u64::MAX;
    craft(
        &lib,
        "b",
        &[root(), f],
        &[(ChunkId::of(&data), data.clone())],
    );
    let err = restore(&lib, "b", &dir.path().join("target")).expect_err("refused");
    assert!(err.to_string().contains("size"), "{err}");
    let mut f = file("huge-extent", &data);
    f.content = Some(Content {
        extents: vec![FileExtent::Chunk {
            id: ChunkId::of(&data),
            len: u32::MAX,
        }],
    });
    f.size = u64::from(u32::MAX);
    craft(&lib, "b2", &[root(), f], &[(ChunkId::of(&data), data)]);
    assert!(restore(&lib, "b2", &dir.path().join("target2")).is_err());
}

#[test]
fn a_chunk_that_does_not_match_its_hash_is_never_written() {
    let (dir, lib) = setup();
    let good = b"the real content".to_vec();
    let evil = b"evil replacement".to_vec();
    // The pack claims `good`'s id for `evil`'s bytes.
    craft(
        &lib,
        "h",
        &[root(), file("f", &good)],
        &[(ChunkId::of(&good), evil.clone())],
    );
    let target = dir.path().join("target");
    let err = restore(&lib, "h", &target).expect_err("refused");
    assert!(err.to_string().contains("failed verification"), "{err}");
    let got = fs::read(target.join("f")).unwrap_or_default();
    assert!(
        !got.windows(evil.len()).any(|w| w == evil.as_slice()),
        "unverified bytes reached the file"
    );
}

#[test]
fn damaged_metadata_is_a_clear_error() {
    let (dir, lib) = setup();
    // A valid image first.
    let mut meta = Entry::new("", Kind::Dir);
    meta.mode = 0o755;
    craft(&lib, "ok", &[meta], &[]);
    let m = lib.manifest("ok").expect("manifest");
    assert!(restore(&lib, "ok", &dir.path().join("t")).is_ok());
    // Truncate the metadata's pack: the restore names the damaged object.
    let list = lib.read_list(&m.trees[0].stream.metadata).expect("list");
    let index = lib.load_index().expect("index");
    let imaging::chunklist::Extent::Chunk { id, .. } = list.extents()[0] else {
        panic!("a chunk")
    };
    let pack = imaging::library::pack_key(&index.pack_id(index.get(&id).expect("indexed").pack));
    let path = dir.path().join("lib").join(&pack);
    let bytes = fs::read(&path).expect("read");
    fs::write(&path, &bytes[..bytes.len() - 3]).expect("truncate");
    let err = restore(&lib, "ok", &dir.path().join("t2")).expect_err("damaged");
    assert!(
        err.to_string().contains(&pack[..20]) || err.to_string().contains("pack"),
        "{err}"
    );
}
