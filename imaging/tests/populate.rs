//! Populating a directory from an ext4 file system read out of a stored
//! block stream (`StreamReader` → `Ext4Tree::from_reader` →
//! `populate_from_ext4`), against the same file system read directly.
//!
//! Each test builds a small ext4 image with `mkfs.ext4 -d` from a staging
//! directory holding every kind of object, captures it into a temporary
//! library with small chunks, and populates a plain directory on
//! /var/tmp. No mounts; ownership of foreign ids is checked only as root.
//! Tests print `SKIPPED <name>: …` and return when e2fsprogs is missing.
//! The full Debian check (fresh ext4 and xfs, e2fsck, rsync) is
//! `tests/tests/populate.rs` in the ferry-tests crate.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::xorshift;
use imaging::chunker::ChunkerParams;
use imaging::chunklist::Extent;
use imaging::ext4::Ext4Tree;
use imaging::store::LocalStore;
use imaging::stream::StreamReader;
use imaging::tree::populate::populate_from_ext4;
use imaging::tree::walk::entry_of;
use imaging::tree::{Entry, Kind};
use imaging::{capture, CaptureRequest, Error, Library, NoProgress, Progress};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn mkfs() -> Option<PathBuf> {
    ["/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Prints the loud skip line (to the stderr handle, which the harness does
/// not capture) and returns true when e2fsprogs is missing.
fn skip(name: &str) -> bool {
    if mkfs().is_some() {
        return false;
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {name}: needs mkfs.ext4 (apt-get install e2fsprogs)"
    );
    true
}

fn set_mtime(path: &Path, sec: i64, nsec: i64) {
    let t = nix::sys::time::TimeSpec::new(sec, nsec);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap_or_else(|e| panic!("touching {}: {e}", path.display()));
}

/// A staging tree with every kind of object `populate` must carry.
fn stage(dir: &Path) {
    let p = |s: &str| dir.join(s);
    for d in ["etc/sub/deeper", "usr/bin", "srv/sticky"] {
        fs::create_dir_all(p(d)).expect("mkdir");
    }
    fs::write(p("etc/hostname"), "web01\n").expect("write");
    fs::write(p("etc/empty"), "").expect("write");
    fs::write(p("usr/bin/big"), xorshift(6 << 20, 17)).expect("write");
    // Sparse: 32 MiB with data at 1 MiB and 20 MiB.
    let sparse = fs::File::create(p("srv/sparse")).expect("create");
    sparse.set_len(32 << 20).expect("size");
    sparse
        .write_all_at(&xorshift(70_000, 3), 1 << 20)
        .expect("w");
    sparse.write_all_at(b"tail", 20 << 20).expect("w");
    drop(sparse);
    fs::hard_link(p("etc/hostname"), p("etc/sub/hostname-link")).expect("link");
    std::os::unix::fs::symlink("../hostname", p("etc/sub/rel")).expect("symlink");
    std::os::unix::fs::symlink("/nowhere/at/all", p("etc/dangling")).expect("symlink");
    nix::unistd::mkfifo(
        &p("srv/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .expect("mkfifo");
    fs::write(dir.join(OsStr::from_bytes(b"srv/bad\xffname")), "x").expect("write");
    fs::write(p("usr/bin/suid"), "#!/bin/sh\n").expect("write");
    let mode = |path: &str, m: u32| {
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            &p(path),
            nix::sys::stat::Mode::from_bits_truncate(m),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .expect("chmod")
    };
    mode("usr/bin/suid", 0o4755);
    mode("srv/sticky", 0o1777);
    mode("etc/sub", 0o2750);
    imaging::tree::xattr::set_path(&p("etc/hostname"), b"user.note", b"hello").expect("user xattr");
    if is_root() {
        use nix::sys::stat::{mknod, Mode, SFlag};
        for (path, kind, dev) in [
            ("srv/null", SFlag::S_IFCHR, libc::makedev(1, 3)),
            ("srv/loop", SFlag::S_IFBLK, libc::makedev(7, 9)),
        ] {
            mknod(&p(path), kind, Mode::from_bits_truncate(0o660), dev).expect("mknod");
        }
        // chown clears the setuid bit: set it again after.
        for (path, uid, gid) in [("etc/hostname", 70000, 80000), ("usr/bin/suid", 0, 50)] {
            nix::unistd::chown(
                &p(path),
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .expect("chown");
        }
        mode("usr/bin/suid", 0o4755);
        imaging::tree::xattr::set_path(
            &p("usr/bin/suid"),
            b"security.capability",
            // VFS_CAP_REVISION_2, cap_net_raw permitted + effective.
            &[
                0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        )
        .expect("capability");
    }
    if Path::new("/usr/bin/setfacl").is_file() {
        let ok = Command::new("setfacl")
            .args(["-m", "u:1234:rw"])
            .arg(p("srv/sparse"))
            .status()
            .is_ok_and(|s| s.success())
            && Command::new("setfacl")
                .args(["-d", "-m", "g:4321:rx"])
                .arg(p("srv/sticky"))
                .status()
                .is_ok_and(|s| s.success());
        assert!(ok, "setfacl failed");
    }
    for (i, path) in ["etc/hostname", "etc/sub/rel", "srv", "etc/sub", ""]
        .iter()
        .enumerate()
    {
        set_mtime(&p(path), 1_600_000_000 + i as i64, 123_456_789);
    }
}

/// An ext4 image of a staged tree, captured into a small-chunk library.
struct Fixture {
    dir: tempfile::TempDir,
    image: PathBuf,
    lib: Arc<Library>,
    manifest: imaging::Manifest,
}

/// The fixture, or None (after the loud skip line) without e2fsprogs.
fn fixture(test: &str) -> Option<Fixture> {
    if skip(test) {
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("ferry-populate-")
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    let staging = dir.path().join("staging");
    stage(&staging);
    let image = dir.path().join("fs.img");
    let out = Command::new(mkfs().expect("checked by skip"))
        .args(["-q", "-F", "-t", "ext4", "-d"])
        .arg(&staging)
        .arg(&image)
        .arg("96M")
        .output()
        .expect("running mkfs.ext4");
    assert!(
        out.status.success(),
        "mkfs.ext4 -d failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lib = Library::create(
        Box::new(LocalStore::new(dir.path().join("lib"))),
        ChunkerParams::with_avg(16 << 10),
    )
    .expect("library");
    let req = CaptureRequest {
        mode: imaging::DiskMode::Raw,
        name: "fs".into(),
        parent: None,
        sources: vec![image.clone()],
        workers: 2,
    };
    let manifest = capture(&lib, &req, &NoProgress).expect("capture");
    Some(Fixture {
        dir,
        image,
        lib: Arc::new(lib),
        manifest,
    })
}

impl Fixture {
    fn reader(&self) -> StreamReader {
        StreamReader::open(
            Arc::clone(&self.lib),
            self.manifest.disks[0].streams()[0].1,
            "fs disk 0",
        )
        .expect("stream reader")
    }

    fn streamed_tree(&self) -> Ext4Tree {
        Ext4Tree::from_reader("fs disk 0", Box::new(self.reader()), 0, None)
            .expect("ext4 in stream")
    }
}

fn walk(tree: &Ext4Tree) -> Vec<Entry> {
    let mut out = Vec::new();
    tree.walk(&mut |e| {
        out.push(e);
        Ok(())
    })
    .expect("walk");
    out
}

/// Every difference between `dest` and the entries of `direct` (the
/// source file system read straight from its image), one line each.
fn differences(direct: &Ext4Tree, dest: &Path) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut inodes = std::collections::HashMap::new();
    for want in walk(direct) {
        let name = want.path.display();
        let path = dest.join(OsStr::from_bytes(&want.path.0));
        let got = fs::symlink_metadata(&path)
            .map_err(|err| err.to_string())
            .and_then(|md| {
                let e = entry_of(&path, &want.path.0, &md).map_err(|err| err.to_string())?;
                e.ok_or_else(|| "a socket".to_string())
            });
        let mut got = match got {
            Ok(e) => e,
            Err(err) => {
                diffs.push(format!("/{name}: {err}"));
                continue;
            }
        };
        // Hard links: the same inode as the first name.
        match &want.hardlink {
            Some(first) if inodes.get(&first.0) != Some(&got.ino) => {
                diffs.push(format!("/{name}: not a hard link to /{}", first.display()));
            }
            Some(_) => got.size = want.size,
            None => {
                inodes.insert(want.path.0.clone(), got.ino);
            }
        }
        // Not restored: identity fields; ownership without root.
        (got.ino, got.ctime, got.ctime_ns, got.hardlink) =
            (want.ino, want.ctime, want.ctime_ns, want.hardlink.clone());
        if !is_root() {
            (got.uid, got.gid) = (want.uid, want.gid);
        }
        if got != want {
            diffs.push(format!("/{name}: want {want:?}\n  got {got:?}"));
        }
        if want.kind == Kind::File && want.hardlink.is_none() {
            let mut bytes = Vec::new();
            direct
                .open_file(&want.path.0)
                .expect("open")
                .read_to_end(&mut bytes)
                .expect("read");
            if fs::read(&path).expect("read dest") != bytes {
                diffs.push(format!("/{name}: content differs"));
            }
        }
    }
    diffs
}

#[test]
fn a_tree_read_from_a_stored_stream_populates_a_directory_identically() {
    let Some(f) = fixture("a_tree_read_from_a_stored_stream_populates_a_directory_identically")
    else {
        return;
    };
    let dest = f.dir.path().join("dest");
    // A fresh file system's empty lost+found is merged into.
    fs::create_dir_all(dest.join("lost+found")).expect("mkdir");
    let tree = f.streamed_tree();
    assert_eq!(tree.name(), "fs disk 0");
    let events = Mutex::new(Vec::new());
    let sink = |p: Progress| events.lock().expect("lock").push(p);
    let stats = populate_from_ext4(&tree, &dest, &sink).expect("populate");

    let direct = Ext4Tree::open(&f.image, 0, None).expect("direct");
    let diffs = differences(&direct, &dest);
    assert!(
        diffs.is_empty(),
        "populated tree differs:\n{}",
        diffs.join("\n")
    );
    assert!(stats.files >= 6 && stats.entries >= 15, "{stats:?}");
    if !is_root() {
        assert!(
            !stats.warnings.is_empty(),
            "ownership warning expected: {stats:?}"
        );
    }
    // Holes stay holes: 32 MiB apparent, ~72 KiB of data.
    let sparse = fs::metadata(dest.join("srv/sparse")).expect("sparse");
    assert!(
        sparse.blocks() * 512 < 1 << 20,
        "{} blocks",
        sparse.blocks()
    );
    // Progress counts content bytes up to the walk's total.
    let events = events.into_inner().expect("lock");
    let last = events.last().expect("events");
    assert!(events.iter().all(|p| p.step == "populate"));
    assert_eq!(last.done, stats.bytes_written);
    assert!(last.total >= (6 << 20) + (32 << 20), "{last:?}");
    assert!(stats.bytes_written >= (6 << 20) + 70_000, "{stats:?}");
    assert!(
        stats.bytes_written < (7 << 20),
        "holes were written: {stats:?}"
    );
}

#[test]
fn a_damaged_chunk_stops_populate_with_an_error_naming_it() {
    let Some(f) = fixture("a_damaged_chunk_stops_populate_with_an_error_naming_it") else {
        return;
    };
    // Find a block in the middle of usr/bin/big in the image (file data is
    // aligned to the smallest block size, 1 KiB), then the chunk holding it: a chunk of file data only.
    let image = fs::read(&f.image).expect("image");
    let big = xorshift(6 << 20, 17);
    let head = &big[3 << 20..(3 << 20) + 1024];
    let at = (0..image.len() / 1024)
        .map(|b| b * 1024)
        .find(|&o| &image[o..o + 1024] == head)
        .expect("the block is in the image") as u64;
    let stream = f.manifest.disks[0].streams()[0].1;
    let list = f.lib.read_list(&stream.list).expect("list");
    let mut pos = 0u64;
    let id = list
        .extents()
        .iter()
        .find_map(|e| {
            let start = pos;
            pos += e.bytes();
            match *e {
                Extent::Chunk { id, .. } if (start..pos).contains(&at) => Some(id),
                _ => None,
            }
        })
        .expect("a chunk holds it");
    let index = f.lib.load_index().expect("index");
    let loc = *index.get(&id).expect("indexed");
    let pack = index.pack_id(loc.pack);
    let path = f
        .dir
        .path()
        .join("lib")
        .join(imaging::library::pack_key(&pack));
    let mut bytes = fs::read(&path).expect("pack");
    bytes[loc.entry.offset as usize + loc.entry.record_len() - 1] ^= 0x5a;
    fs::write(&path, bytes).expect("damage");

    let dest = f.dir.path().join("dest");
    fs::create_dir(&dest).expect("mkdir");
    let err = populate_from_ext4(&f.streamed_tree(), &dest, &NoProgress)
        .expect_err("a damaged chunk must stop the populate");
    let mut text = err.to_string();
    let mut cause = std::error::Error::source(&err);
    while let Some(c) = cause {
        text += &format!(": {c}");
        cause = c.source();
    }
    assert!(
        text.contains(&id.to_string()) && text.contains("usr/bin/big"),
        "the error names neither the chunk nor the file: {text}"
    );
}

#[test]
fn stream_sources_are_checked_and_named() {
    let Some(f) = fixture("stream_sources_are_checked_and_named") else {
        return;
    };
    let len = f.reader().len();
    let err = Ext4Tree::from_reader("fs disk 0", Box::new(f.reader()), 0, Some(len + 1))
        .expect_err("range past the end");
    assert!(
        matches!(err, Error::Source { ref path, .. } if path == "fs disk 0"),
        "{err}"
    );
    let err = Ext4Tree::from_reader("fs disk 0", Box::new(f.reader()), len + 512, None)
        .expect_err("offset past the end");
    assert!(err.to_string().contains("fs disk 0"), "{err}");
    // A file system cut short inside the stream: clean errors, no panic.
    let short = Ext4Tree::from_reader("fs disk 0", Box::new(f.reader()), 0, Some(1 << 20));
    match short {
        Err(e) => assert!(e.to_string().contains("fs disk 0"), "{e}"),
        Ok(tree) => {
            let dest = f.dir.path().join("short");
            fs::create_dir(&dest).expect("mkdir");
            let err = populate_from_ext4(&tree, &dest, &NoProgress).expect_err("truncated");
            assert!(err.to_string().contains("fs disk 0"), "{err}");
        }
    }
    // At an offset, as a partition inside a disk stream would be.
    let mut disk = vec![0u8; 1 << 20];
    disk.extend(fs::read(&f.image).expect("image"));
    let padded = f.dir.path().join("disk.img");
    fs::write(&padded, disk).expect("write");
    let req = CaptureRequest {
        mode: imaging::DiskMode::Raw,
        name: "disk".into(),
        parent: None,
        sources: vec![padded],
        workers: 2,
    };
    let m = capture(&f.lib, &req, &NoProgress).expect("capture");
    let r = StreamReader::open(Arc::clone(&f.lib), m.disks[0].streams()[0].1, "disk 0")
        .expect("reader");
    let tree = Ext4Tree::from_reader("disk 0", Box::new(r), 1 << 20, None).expect("partition");
    assert_eq!(tree.name(), "disk 0@1048576");
    assert_eq!(walk(&tree), walk(&f.streamed_tree()));
}
