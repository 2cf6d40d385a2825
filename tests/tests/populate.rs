//! Deploy-time file trees on the real Debian bookworm fixture: the ext4
//! partition is captured as a block stream, its tree is read back through
//! a `StreamReader` (never restored to a file) and populated into a fresh,
//! smaller ext4 and into an xfs. Each result passes the file system's own
//! checker and rsync -aHAX (plus a checksum pass) finds no difference from
//! the partition mounted directly. Prints the populate throughput.
//!
//! Needs root (loop mounts), e2fsprogs, xfsprogs and rsync; skips loudly
//! otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use ferry_tests::{debian_fixture, is_root, ok, require, rsync_differences};
use imaging::ext4::Ext4Tree;
use imaging::stream::StreamReader;
use imaging::tree::populate::{populate_from_ext4, PopulateStats};
use imaging::{capture, CaptureRequest, DiskMode, Library, NoProgress};

/// The fixture's one partition starts at 1 MiB.
const PART_OFFSET: u64 = 1 << 20;

/// Unmounts when dropped, so a failing test leaves no mount behind.
struct Mount(PathBuf);

impl Mount {
    fn new(image: &Path, at: &Path, opts: &str) -> Mount {
        std::fs::create_dir_all(at).unwrap_or_else(|e| panic!("mkdir {}: {e}", at.display()));
        ok(Command::new("mount").args(["-o", opts]).arg(image).arg(at));
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn have(tool: &str) -> bool {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(tool).is_file())
}

/// The partition's length in bytes, from the fixture's MBR entry 1.
fn partition_len(disk: &Path) -> u64 {
    let mbr = std::fs::read(disk)
        .map(|d| d[..512].to_vec())
        .unwrap_or_else(|e| panic!("reading {}: {e}", disk.display()));
    let sectors = u32::from_le_bytes(mbr[0x1be + 12..0x1be + 16].try_into().expect("4 bytes"));
    u64::from(sectors) * 512
}

/// Every difference rsync finds, the checksum pass included.
fn all_differences(src: &Path, dst: &Path) -> String {
    let mut diff = rsync_differences(src, dst);
    let (mut a, mut b) = (src.as_os_str().to_owned(), dst.as_os_str().to_owned());
    a.push("/");
    b.push("/");
    diff += &ok(Command::new("rsync")
        .args(["-rlncD", "--itemize-changes"])
        .arg(a)
        .arg(b));
    diff
}

/// `diff` without the lines that differ only by xfs's shadow xattrs: xfs
/// also lists a POSIX ACL to root as `trusted.SGI_ACL_FILE` /
/// `trusted.SGI_ACL_DEFAULT`, so rsync -X sees xattrs ext4 has not, though
/// the ACLs themselves (rsync -A) are identical. Other xattrs of such a
/// path must still match exactly.
fn without_xfs_acl_shadows(diff: &str, src: &Path, dst: &Path) -> String {
    let xattrs = |root: &Path, rel: &str| -> String {
        let out = ok(Command::new("getfattr")
            .args(["-h", "-d", "-m", "-", "-e", "hex", "--absolute-names"])
            .arg(root.join(rel)));
        out.lines()
            .filter(|l| !l.starts_with("# file:") && !l.starts_with("trusted.SGI_ACL_"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    diff.lines()
        .filter(|line| {
            let Some((flags, path)) = line.split_once(' ') else {
                return true;
            };
            let only_xattrs = flags.len() == 11
                && flags[2..10].bytes().all(|b| b == b'.')
                && flags.ends_with('x');
            !(only_xattrs && xattrs(src, path) == xattrs(dst, path))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Populates `target` (mounted at `mnt`) from `tree`; reports throughput.
fn populate_into(tree: &Ext4Tree, target: &Path, mnt: &Path, opts: &str) -> PopulateStats {
    let m = Mount::new(target, mnt, opts);
    let t = Instant::now();
    let stats = populate_from_ext4(tree, mnt, &NoProgress).expect("populate");
    ok(Command::new("sync").arg("-f").arg(mnt));
    let secs = t.elapsed().as_secs_f64();
    drop(m);
    eprintln!(
        "populate into {}: {} entries, {} files, {:.1} MB in {:.1} s ({:.1} s with sync) = {:.1} MB/s",
        target.display(),
        stats.entries,
        stats.files,
        stats.bytes_written as f64 / 1e6,
        stats.seconds,
        secs,
        stats.bytes_written as f64 / 1e6 / secs
    );
    assert!(stats.warnings.is_empty(), "{:?}", stats.warnings);
    stats
}

#[test]
fn a_debian_partition_stream_populates_smaller_ext4_and_xfs_identically() {
    let name = "a_debian_partition_stream_populates_smaller_ext4_and_xfs_identically";
    require!(is_root(), name, "needs root (loop mounts)");
    for tool in ["mkfs.ext4", "e2fsck", "mkfs.xfs", "xfs_repair", "rsync"] {
        require!(
            have(tool),
            name,
            format!("needs {tool} (apt-get install e2fsprogs xfsprogs rsync)")
        );
    }
    let fixture = debian_fixture();
    let dir = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let p = |s: &str| dir.path().join(s);

    // The ext4 partition alone, sparse, as a whole-server capture stores it.
    let disk = fixture.join("debian.img");
    let len = partition_len(&disk);
    ok(Command::new("dd")
        .arg(format!("if={}", disk.display()))
        .arg(format!("of={}", p("part.img").display()))
        .args([
            "bs=4M",
            "iflag=skip_bytes,count_bytes",
            "conv=sparse",
            "status=none",
        ])
        .arg(format!("skip={PART_OFFSET}"))
        .arg(format!("count={len}")));
    let lib = Library::open_or_create_local(&p("lib")).expect("library");
    let req = CaptureRequest {
        name: "debian".into(),
        parent: None,
        sources: vec![p("part.img")],
        mode: DiskMode::Server,
        workers: 0,
    };
    let t = Instant::now();
    let manifest = capture(&lib, &req, &NoProgress).expect("capture");
    // A server capture of a whole-disk ext4: no head, one used-blocks stream.
    let streams = manifest.disks[0].streams();
    assert_eq!(streams.len(), 2, "head and partition 0");
    let stream = streams[1].1;
    assert!(stream.unused_bytes > 0, "free blocks are not stored");
    eprintln!(
        "captured {} MB of a {} MB partition in {:.1} s",
        stream.data_bytes / 1_000_000,
        len / 1_000_000,
        t.elapsed().as_secs_f64()
    );
    let lib = Arc::new(lib);
    let reader =
        StreamReader::open(Arc::clone(&lib), stream, "debian disk 0").expect("stream reader");
    let tree = Ext4Tree::from_reader("debian disk 0", Box::new(reader), 0, None).expect("ext4");
    assert_eq!(tree.label(), "root");
    let uuid = tree.uuid_string();

    // The source, mounted directly (a private copy: ro mounts may replay).
    let src = Mount::new(&p("part.img"), &p("src"), "ro,loop");

    // A fresh, smaller ext4 with the source's UUID and label.
    ok(Command::new("truncate")
        .args(["-s", "1536M"])
        .arg(p("ext4.img")));
    ok(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-t", "ext4", "-U", &uuid, "-L", "root"])
        .arg(p("ext4.img")));
    let stats = populate_into(&tree, &p("ext4.img"), &p("ext4"), "loop");
    assert!(
        stats.files > 10_000 && stats.bytes_written > 100_000_000,
        "{stats:?}"
    );
    ok(Command::new("e2fsck").arg("-fn").arg(p("ext4.img")));
    let ext4 = Mount::new(&p("ext4.img"), &p("ext4"), "ro,loop");
    let diff = all_differences(&src.0, &ext4.0);
    assert!(diff.is_empty(), "populated ext4 differs:\n{diff}");
    drop(ext4);

    // Another file-system type: xfs.
    ok(Command::new("truncate")
        .args(["-s", "1536M"])
        .arg(p("xfs.img")));
    ok(Command::new("mkfs.xfs")
        .args(["-q", "-f", "-L", "root", "-m"])
        .arg(format!("uuid={uuid}"))
        .arg(p("xfs.img")));
    populate_into(&tree, &p("xfs.img"), &p("xfs"), "loop");
    ok(Command::new("xfs_repair").arg("-n").arg(p("xfs.img")));
    let xfs = Mount::new(&p("xfs.img"), &p("xfs"), "ro,loop");
    let diff = without_xfs_acl_shadows(&all_differences(&src.0, &xfs.0), &src.0, &xfs.0);
    assert!(diff.is_empty(), "populated xfs differs:\n{diff}");
}
