//! The unmounted ext4 source against real file systems.
//!
//! Each test builds its file systems at run time with `mkfs.ext4 -d`
//! (e2fsprogs) from a staging directory, walks the image with
//! [`Ext4Tree`], and compares every entry with what `lstat` and
//! `getfattr` (attr) report for the staging directory and, where loop
//! mounts work, for the image mounted read-only by the kernel. Tests that
//! need root (device nodes, foreign owners, trusted xattrs, mounts) print
//! `SKIPPED <name>: …` and return when a prerequisite is missing; they
//! never pass silently.
//!
//! Needs: e2fsprogs, attr (getfattr/setfattr), acl (setfacl),
//! libcap2-bin (setcap), util-linux (mount, losetup).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use imaging::ext4::Ext4Tree;
use imaging::tree::{Entry, Kind};

// ---------------------------------------------------------------- helpers

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn have(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .any(|d| d.join(tool).is_file())
}

/// Writes a line straight to stderr: the test harness captures `println!`
/// and `eprintln!` of passing tests, but not the stderr handle itself, so
/// a skip is seen in every `cargo test` run.
fn loud(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// `loud` with `format!` arguments.
macro_rules! loud_fmt {
    ($($arg:tt)*) => {
        loud(&format!($($arg)*))
    };
}

/// Prints the loud skip line and returns true when something is missing.
fn skip(name: &str, root: bool, tools: &[&str]) -> bool {
    if root && !is_root() {
        loud(&format!("SKIPPED {name}: needs root"));
        return true;
    }
    for t in tools {
        if !have(t) {
            loud(&format!(
                "SKIPPED {name}: needs {t} (apt-get install e2fsprogs attr acl libcap2-bin util-linux)"
            ));
            return true;
        }
    }
    false
}

fn sbin(tool: &str) -> PathBuf {
    for d in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = Path::new(d).join(tool);
        if p.is_file() {
            return p;
        }
    }
    PathBuf::from(tool)
}

/// Runs a command and returns its stdout; panics with its stderr on failure.
fn run<I, S>(tool: &str, args: I) -> Vec<u8>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args
        .into_iter()
        .map(|a| a.as_ref().to_os_string())
        .collect();
    let out = Command::new(sbin(tool))
        .args(&args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn tmpdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ferry-ext4-")
        .tempdir_in("/var/tmp")
        .expect("creating a temporary directory in /var/tmp")
}

fn write(path: &Path, data: &[u8]) {
    fs::write(path, data).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn setfattr(path: &Path, name: &str, value: &str) {
    let mut args = vec![OsStr::new("-h").to_os_string(), "-n".into(), name.into()];
    args.push("-v".into());
    args.push(value.into());
    args.push(path.as_os_str().to_os_string());
    run("setfattr", args);
}

fn touch(path: &Path, date: &str) {
    run(
        "touch",
        [
            OsStr::new("-h"),
            OsStr::new("-d"),
            OsStr::new(date),
            path.as_os_str(),
        ],
    );
}

fn mknod(path: &Path, kind: nix::sys::stat::SFlag, major: u64, minor: u64) {
    nix::sys::stat::mknod(
        path,
        kind,
        nix::sys::stat::Mode::from_bits_truncate(0o640),
        nix::sys::stat::makedev(major, minor),
    )
    .unwrap_or_else(|e| panic!("mknod {}: {e}", path.display()));
}

/// Deterministic bytes (xorshift) for file contents and mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

// ---------------------------------------------------------------- staging

/// Files every staging tree has; needs no privileges.
fn simple_staging(dir: &Path) {
    let mut rng = Rng(0x5eed);
    fs::create_dir_all(dir.join("a/b/c")).expect("mkdir a/b/c");
    write(&dir.join("a/b/c/deep.txt"), b"deep\n");
    write(&dir.join("hard1"), b"three names\n");
    fs::hard_link(dir.join("hard1"), dir.join("a/hard2")).expect("link hard2");
    fs::hard_link(dir.join("hard1"), dir.join("a/b/hard3")).expect("link hard3");
    std::os::unix::fs::symlink("a/b/c/deep.txt", dir.join("link_short")).expect("symlink");
    let long = format!(
        "../{}/target-that-is-longer-than-sixty-bytes",
        "x".repeat(80)
    );
    std::os::unix::fs::symlink(&long, dir.join("link_long")).expect("symlink");
    std::os::unix::fs::symlink("x".repeat(59), dir.join("link_59")).expect("symlink");
    std::os::unix::fs::symlink("y".repeat(60), dir.join("link_60")).expect("symlink");
    nix::unistd::mkfifo(
        &dir.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("mkfifo");
    write(&dir.join("empty"), b"");
    write(&dir.join("large"), &rng.bytes(5 << 20));
    // Sparse: data at 0, 3 MiB and the last block of 8 MiB.
    let f = fs::File::create(dir.join("sparse")).expect("create sparse");
    f.write_all_at(b"start", 0).expect("write");
    f.write_all_at(&rng.bytes(10_000), 3 << 20).expect("write");
    f.set_len(8 << 20).expect("set_len");
    f.write_all_at(b"end", (8 << 20) - 3).expect("write");
    drop(f);
    // Many extents: one block of data every other block.
    let f = fs::File::create(dir.join("fragmented")).expect("create fragmented");
    for i in 0..200u64 {
        f.write_all_at(&rng.bytes(100), i * 8192).expect("write");
    }
    drop(f);
    let bad = dir.join(OsStr::from_bytes(b"bad\xff\xfename"));
    write(&bad, b"not utf-8 name\n");
    // debugfs scripts cannot name it, so give it a time mkfs copies exactly.
    touch(&bad, "2020-02-02 02:02:02");
    fs::create_dir(dir.join("many")).expect("mkdir many");
    for i in 0..300 {
        write(
            &dir.join(format!("many/file-with-a-longish-name-{i:04}")),
            format!("{i}\n").as_bytes(),
        );
    }
    write(&dir.join("ns"), b"nanoseconds\n");
    touch(&dir.join("ns"), "2021-03-04 05:06:07.123456789");
    write(&dir.join("future"), b"2100\n");
    touch(&dir.join("future"), "2100-01-02 03:04:05.5");
    write(&dir.join("past"), b"1960\n");
    touch(&dir.join("past"), "1960-01-02 03:04:05.25");
    write(&dir.join("xattrs"), b"user xattrs\n");
    setfattr(&dir.join("xattrs"), "user.comment", "hello");
    setfattr(&dir.join("xattrs"), "user.empty", "");
    setfattr(&dir.join("xattrs"), "user.bin", "0x00ff10");
    // Enough xattrs that some go to the external block.
    write(&dir.join("xattr_block"), b"many xattrs\n");
    for i in 0..12 {
        setfattr(
            &dir.join("xattr_block"),
            &format!("user.attr{i:02}"),
            &"v".repeat(40 + i),
        );
    }
    let _ = std::os::unix::net::UnixListener::bind(dir.join("socket")).expect("bind socket");
    fs::set_permissions(
        dir.join("a/b/c/deep.txt"),
        fs::Permissions::from_mode(0o640),
    )
    .expect("chmod");
}

/// Everything in `simple_staging` plus what needs root.
fn full_staging(dir: &Path) {
    use nix::sys::stat::SFlag;
    simple_staging(dir);
    mknod(&dir.join("char_old"), SFlag::S_IFCHR, 1, 3);
    mknod(&dir.join("char_new"), SFlag::S_IFCHR, 300, 70_000);
    mknod(&dir.join("block_old"), SFlag::S_IFBLK, 8, 1);
    mknod(&dir.join("block_new"), SFlag::S_IFBLK, 259, 65_541);
    write(&dir.join("setuid"), b"#!/bin/sh\n");
    fs::set_permissions(dir.join("setuid"), fs::Permissions::from_mode(0o4755)).expect("chmod");
    write(&dir.join("setgid"), b"#!/bin/sh\n");
    fs::set_permissions(dir.join("setgid"), fs::Permissions::from_mode(0o2751)).expect("chmod");
    fs::create_dir(dir.join("sticky")).expect("mkdir sticky");
    fs::set_permissions(dir.join("sticky"), fs::Permissions::from_mode(0o1777)).expect("chmod");
    write(&dir.join("sticky/inside"), b"in sticky\n");
    write(&dir.join("bigids"), b"high uid and gid\n");
    nix::unistd::chown(
        &dir.join("bigids"),
        Some(nix::unistd::Uid::from_raw(100_000)),
        Some(nix::unistd::Gid::from_raw(200_000)),
    )
    .expect("chown");
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        &dir.join("link_short"),
        Some(nix::unistd::Uid::from_raw(70_000)),
        Some(nix::unistd::Gid::from_raw(80_000)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .expect("lchown");
    setfattr(&dir.join("xattrs"), "trusted.secret", "only root sees this");
    setfattr(
        &dir.join("xattrs"),
        "security.selinux",
        "system_u:object_r:etc_t:s0",
    );
    write(&dir.join("cap"), b"#!/bin/sh\n");
    run(
        "setcap",
        [
            OsStr::new("cap_net_raw,cap_net_admin+ep"),
            dir.join("cap").as_os_str(),
        ],
    );
    write(&dir.join("acl_file"), b"acl\n");
    run(
        "setfacl",
        [
            OsStr::new("-m"),
            OsStr::new("u:1234:rw,g:5678:r,u:100000:r"),
            dir.join("acl_file").as_os_str(),
        ],
    );
    fs::create_dir(dir.join("acl_dir")).expect("mkdir acl_dir");
    run(
        "setfacl",
        [
            OsStr::new("-d"),
            OsStr::new("-m"),
            OsStr::new("u:1234:rwx,g:5678:rx"),
            dir.join("acl_dir").as_os_str(),
        ],
    );
    run(
        "setfacl",
        [
            OsStr::new("-m"),
            OsStr::new("u:4321:rx"),
            dir.join("acl_dir").as_os_str(),
        ],
    );
    // Times last: creating children changes a directory's mtime.
    touch(&dir.join("a/b"), "2011-11-11 11:11:11.111111111");
}

// ---------------------------------------------------------------- images

/// `mkfs.ext4 -d` drops nanoseconds and the epoch bits (e2fsprogs 1.47.0),
/// so put the staging tree's exact mtimes into the image with debugfs.
fn copy_mtimes(staging: &Path, image: &Path) {
    let mut cmds = String::new();
    for s in scan(staging) {
        if s.path.is_empty() || s.path.contains(&0xff) {
            continue;
        }
        let epoch = ((s.mtime - i64::from(s.mtime as i32)) >> 32) & 3;
        let extra = (u64::from(s.mtime_ns) << 2) | epoch as u64;
        let p = String::from_utf8_lossy(&s.path).into_owned();
        cmds.push_str(&format!(
            "sif \"/{p}\" mtime @{}\nsif \"/{p}\" mtime_extra {extra}\n",
            s.mtime
        ));
    }
    let script = image.with_extension("debugfs");
    write(&script, cmds.as_bytes());
    run(
        "debugfs",
        [
            OsStr::new("-w"),
            OsStr::new("-f"),
            script.as_os_str(),
            image.as_os_str(),
        ],
    );
}

/// Builds an image of `staging` with `mkfs` options.
fn make_image(staging: &Path, image: &Path, mkfs: &str, opts: &[&str], size: &str) {
    let mut args: Vec<&OsStr> = vec![OsStr::new("-q"), OsStr::new("-F")];
    args.extend(opts.iter().map(OsStr::new));
    args.extend([
        OsStr::new("-d"),
        staging.as_os_str(),
        image.as_os_str(),
        OsStr::new(size),
    ]);
    run(mkfs, args);
}

/// Whether an image has the extra inode fields (nanoseconds, epochs).
fn has_extra(opts: &[&str]) -> bool {
    !opts.windows(2).any(|w| w == ["-I", "128"])
}

// ---------------------------------------------------------------- observed trees

/// One object as `lstat` + `getfattr` see it.
#[derive(Clone, Debug)]
struct Seen {
    path: Vec<u8>,
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    mtime_ns: u32,
    ctime: i64,
    ctime_ns: u32,
    size: u64,
    rdev: Option<(u32, u32)>,
    target: Option<Vec<u8>>,
    ino: u64,
    dev: u64,
    nlink: u64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// BLAKE3 of a regular file's content.
    content: Option<blake3::Hash>,
}

fn kind_of(ft: fs::FileType) -> Option<Kind> {
    use std::os::unix::fs::FileTypeExt;
    Some(if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_char_device() {
        Kind::Char
    } else if ft.is_block_device() {
        Kind::Block
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        return None;
    })
}

fn getfattr(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    if !have("getfattr") {
        return Vec::new();
    }
    let out = run(
        "getfattr",
        [
            OsStr::new("-h"),
            OsStr::new("-d"),
            OsStr::new("-m"),
            OsStr::new("-"),
            OsStr::new("-e"),
            OsStr::new("hex"),
            OsStr::new("--absolute-names"),
            path.as_os_str(),
        ],
    );
    let mut v: Vec<(Vec<u8>, Vec<u8>)> = String::from_utf8_lossy(&out)
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once('=') {
            Some((n, h)) => (
                n.as_bytes().to_vec(),
                hex::decode(h.trim_start_matches("0x"))
                    .unwrap_or_else(|e| panic!("getfattr hex {h:?}: {e}")),
            ),
            None => (l.as_bytes().to_vec(), Vec::new()),
        })
        .collect();
    v.sort();
    v
}

/// `root`'s tree in the walk order, sockets left out.
fn scan(root: &Path) -> Vec<Seen> {
    let mut out = Vec::new();
    scan_into(root, root, &mut out);
    out
}

fn scan_into(root: &Path, p: &Path, out: &mut Vec<Seen>) {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    let Some(kind) = kind_of(m.file_type()) else {
        return;
    };
    let rel = p
        .strip_prefix(root)
        .expect("below root")
        .as_os_str()
        .as_bytes()
        .to_vec();
    let rdev = matches!(kind, Kind::Char | Kind::Block).then(|| {
        (
            nix::sys::stat::major(m.rdev()) as u32,
            nix::sys::stat::minor(m.rdev()) as u32,
        )
    });
    let target = (kind == Kind::Symlink).then(|| {
        fs::read_link(p)
            .expect("readlink")
            .as_os_str()
            .as_bytes()
            .to_vec()
    });
    out.push(Seen {
        path: rel,
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime: m.mtime(),
        mtime_ns: m.mtime_nsec() as u32,
        ctime: m.ctime(),
        ctime_ns: m.ctime_nsec() as u32,
        size: if kind == Kind::File { m.len() } else { 0 },
        rdev,
        target,
        ino: m.ino(),
        dev: m.dev(),
        nlink: m.nlink(),
        xattrs: getfattr(p),
        content: (kind == Kind::File).then(|| hash_file(p)),
    });
    if kind == Kind::Dir {
        let mut names: Vec<_> = fs::read_dir(p)
            .unwrap_or_else(|e| panic!("readdir {}: {e}", p.display()))
            .map(|e| e.expect("dirent").file_name())
            .collect();
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for n in names {
            scan_into(root, &p.join(n), out);
        }
    }
}

fn walk(tree: &Ext4Tree) -> Vec<Entry> {
    let mut v = Vec::new();
    tree.walk(&mut |e| {
        v.push(e);
        Ok(())
    })
    .unwrap_or_else(|e| panic!("walk failed: {e}"));
    v
}

fn read_all(tree: &Ext4Tree, path: &[u8]) -> Vec<u8> {
    let mut f = tree
        .open_file(path)
        .unwrap_or_else(|e| panic!("open_file {}: {e}", String::from_utf8_lossy(path)));
    let mut v = Vec::new();
    f.read_to_end(&mut v)
        .unwrap_or_else(|e| panic!("reading {}: {e}", String::from_utf8_lossy(path)));
    v
}

/// What to compare besides the always-comparable fields.
#[derive(Clone, Copy)]
struct Compare {
    /// Inode numbers, ctime (only a mount of the same image has them).
    identity: bool,
    /// Nanoseconds and post-2038 times (inodes above 128 bytes).
    extra: bool,
    /// The image's root and lost+found are not in the staging tree.
    staging: bool,
}

/// Compares the walk with an observed tree; returns the number of entries.
fn compare(tree: &Ext4Tree, entries: &[Entry], seen: &[Seen], how: Compare) -> usize {
    let mut expected: Vec<&Seen> = seen.iter().collect();
    let mut got: Vec<&Entry> = entries.iter().collect();
    if how.staging {
        got.retain(|e| e.path.0 != b"lost+found");
    }
    let got_paths: Vec<_> = got.iter().map(|e| e.path.display()).collect();
    let want_paths: Vec<_> = expected
        .iter()
        .map(|s| String::from_utf8_lossy(&s.path).into_owned())
        .collect();
    assert_eq!(got_paths, want_paths, "paths or their order differ");
    let mut first_name: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    for (e, s) in got.iter().zip(expected.iter_mut()) {
        let p = e.path.display();
        assert_eq!(e.kind, s.kind, "{p}: kind");
        assert!(e.content.is_none(), "{p}: content must stay None");
        let want_hardlink = if s.kind != Kind::Dir && s.nlink > 1 {
            match first_name.get(&(s.dev, s.ino)) {
                Some(first) => Some(first.clone()),
                None => {
                    first_name.insert((s.dev, s.ino), s.path.clone());
                    None
                }
            }
        } else {
            None
        };
        assert_eq!(
            e.hardlink.as_ref().map(|h| h.0.clone()),
            want_hardlink,
            "{p}: hardlink"
        );
        if how.staging && s.path.is_empty() {
            continue; // mkfs -d does not copy the root's metadata
        }
        assert_eq!(e.mode, s.mode, "{p}: mode");
        assert_eq!((e.uid, e.gid), (s.uid, s.gid), "{p}: owner");
        if how.extra || (i64::from(i32::MIN)..=i64::from(i32::MAX)).contains(&s.mtime) {
            assert_eq!(e.mtime, s.mtime, "{p}: mtime seconds");
        }
        if how.extra {
            assert_eq!(e.mtime_ns, s.mtime_ns, "{p}: mtime nanoseconds");
        } else {
            assert_eq!(e.mtime_ns, 0, "{p}: mtime nanoseconds without extra fields");
        }
        assert_eq!(e.size, s.size, "{p}: size");
        assert_eq!(e.rdev, s.rdev, "{p}: rdev");
        assert_eq!(
            e.target.as_ref().map(|t| t.0.clone()),
            s.target,
            "{p}: symlink target"
        );
        let xattrs: Vec<(Vec<u8>, Vec<u8>)> = e
            .xattrs
            .iter()
            .map(|(n, v)| (n.0.clone(), v.0.clone()))
            .collect();
        assert_eq!(xattrs, s.xattrs, "{p}: xattrs");
        if how.identity {
            assert_eq!(e.ino, s.ino, "{p}: inode number");
            assert_eq!((e.ctime, e.ctime_ns), (s.ctime, s.ctime_ns), "{p}: ctime");
        }
        if e.kind == Kind::File {
            let data = read_all(tree, &e.path.0);
            assert_eq!(
                Some(blake3::hash(&data)),
                s.content,
                "{p}: content differs ({} bytes read)",
                data.len()
            );
            let by_ino = tree
                .open_inode(e.ino)
                .unwrap_or_else(|err| panic!("{p}: open_inode: {err}"));
            assert_eq!(by_ino.len(), e.size, "{p}: open_inode length");
            // Outside the data ranges a file is zeros (holes, unwritten).
            let mut end = 0;
            for r in by_ino.data_ranges() {
                assert!(
                    r.start >= end && r.start < r.end && r.end <= e.size,
                    "{p}: data range {r:?}"
                );
                assert!(
                    data[end as usize..r.start as usize].iter().all(|&b| b == 0),
                    "{p}: hole before {r:?} is not zeros"
                );
                end = r.end;
            }
            assert!(
                data[end as usize..].iter().all(|&b| b == 0),
                "{p}: tail after the last data range is not zeros"
            );
        }
    }
    got.len()
}

/// A read-only loop mount, unmounted on drop.
struct Mount {
    dir: PathBuf,
}

impl Mount {
    /// Mounts `image` (`opts` e.g. "ro,noload"); None if loop mounts fail.
    fn new(image: &Path, dir: &Path, opts: &str) -> Option<Mount> {
        fs::create_dir_all(dir).expect("mkdir mountpoint");
        let out = Command::new(sbin("mount"))
            .args([
                OsStr::new("-t"),
                OsStr::new("ext4"),
                OsStr::new("-o"),
                OsStr::new(&format!("loop,{opts}")),
            ])
            .arg(image)
            .arg(dir)
            .output()
            .expect("running mount");
        if !out.status.success() {
            eprintln!(
                "mount {} failed: {}",
                image.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(Mount {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // Another test thread forking a child can hold the mount busy for
        // a moment (the child inherits open files until it execs).
        for attempt in 0..40 {
            let out = Command::new(sbin("umount")).arg(&self.dir).output();
            if out.is_ok_and(|o| o.status.success()) {
                if attempt > 0 {
                    loud_fmt!(
                        "umount {} needed {} attempts",
                        self.dir.display(),
                        attempt + 1
                    );
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        eprintln!(
            "umount {} keeps failing; detaching it lazily",
            self.dir.display()
        );
        let _ = Command::new(sbin("umount"))
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

fn hash_file(path: &Path) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update_reader(fs::File::open(path).expect("open image"))
        .expect("hash image");
    h.finalize()
}

fn incompat(image: &Path) -> u32 {
    let f = fs::File::open(image).expect("open image");
    let mut b = [0u8; 4];
    f.read_exact_at(&mut b, 1024 + 0x60)
        .expect("read superblock");
    u32::from_le_bytes(b)
}

const NEEDS_RECOVERY: u32 = 0x4;

// ---------------------------------------------------------------- tests

/// (name, mkfs program, options, size)
const VARIANTS: &[(&str, &str, &[&str], &str)] = &[
    ("ext4-4k", "mkfs.ext4", &["-b", "4096"], "96M"),
    (
        "ext4-1k-nocsum",
        "mkfs.ext4",
        &["-b", "1024", "-O", "^metadata_csum"],
        "96M",
    ),
    (
        "ext4-bigalloc",
        "mkfs.ext4",
        &["-b", "1024", "-O", "bigalloc", "-C", "16384"],
        "96M",
    ),
    ("ext4-inline", "mkfs.ext4", &["-O", "inline_data"], "96M"),
    (
        "ext4-meta_bg",
        "mkfs.ext4",
        &["-b", "1024", "-O", "meta_bg,^resize_inode", "-g", "1024"],
        "96M",
    ),
    ("ext3", "mkfs.ext3", &["-b", "2048"], "96M"),
    ("ext2-128", "mkfs.ext2", &["-b", "1024", "-I", "128"], "96M"),
];

#[test]
fn walk_matches_staging_and_kernel() {
    let name = "walk_matches_staging_and_kernel";
    if skip(
        name,
        true,
        &[
            "mkfs.ext4",
            "debugfs",
            "e2fsck",
            "setfattr",
            "getfattr",
            "setfacl",
            "setcap",
        ],
    ) {
        return;
    }
    let t = tmpdir();
    let staging = t.path().join("staging");
    fs::create_dir(&staging).expect("mkdir staging");
    full_staging(&staging);
    let seen = scan(&staging);
    let mut mounted = 0;
    for &(variant, mkfs, opts, size) in VARIANTS {
        let start = Instant::now();
        let image = t.path().join(format!("{variant}.img"));
        make_image(&staging, &image, mkfs, opts, size);
        copy_mtimes(&staging, &image);
        if variant == "ext4-4k" {
            // Index large directories (htree), as a long-lived system has.
            let status = Command::new(sbin("e2fsck"))
                .args(["-fyD"])
                .arg(&image)
                .output()
                .expect("e2fsck")
                .status;
            assert!(
                status.code().is_some_and(|c| c <= 1),
                "e2fsck -fyD: {status}"
            );
        }
        let before = hash_file(&image);
        let tree =
            Ext4Tree::open(&image, 0, None).unwrap_or_else(|e| panic!("{variant}: open: {e}"));
        assert_eq!(tree.replayed_journal_blocks(), 0);
        let entries = walk(&tree);
        assert_eq!(entries[0].path.0, b"", "{variant}: root first");
        let how = Compare {
            identity: false,
            extra: has_extra(opts),
            staging: true,
        };
        let n = compare(&tree, &entries, &seen, how);
        // The kernel's view of the same image: inode numbers, ctimes,
        // link counts and xattrs as getxattr(2) returns them.
        let mnt = t.path().join(format!("{variant}.mnt"));
        if let Some(m) = Mount::new(&image, &mnt, "ro,noload") {
            let kernel = scan(&m.dir);
            compare(
                &tree,
                &entries,
                &kernel,
                Compare {
                    identity: true,
                    extra: has_extra(opts),
                    staging: false,
                },
            );
            mounted += 1;
        }
        drop(tree);
        assert_eq!(hash_file(&image), before, "{variant}: the image changed");
        println!("{variant}: {n} entries match in {:?}", start.elapsed());
    }
    if mounted == 0 {
        loud_fmt!("SKIPPED {name} (kernel comparison part): loop mounts failed");
    }
}

#[test]
fn ea_inode_values_are_read() {
    let name = "ea_inode_values_are_read";
    if skip(name, false, &["mkfs.ext4", "setfattr", "getfattr"]) {
        return;
    }
    let t = tmpdir();
    let staging = t.path().join("staging");
    fs::create_dir(&staging).expect("mkdir");
    write(&staging.join("big_xattr"), b"value in its own inode\n");
    let value = "z".repeat(3000);
    setfattr(&staging.join("big_xattr"), "user.big", &value);
    let image = t.path().join("ea.img");
    make_image(
        &staging,
        &image,
        "mkfs.ext4",
        &["-b", "1024", "-O", "ea_inode"],
        "8M",
    );
    let tree = Ext4Tree::open(&image, 0, None).expect("open");
    let entries = walk(&tree);
    let e = entries
        .iter()
        .find(|e| e.path.0 == b"big_xattr")
        .expect("big_xattr listed");
    assert_eq!(e.xattrs.len(), 1);
    assert_eq!(e.xattrs[0].0 .0, b"user.big");
    assert_eq!(e.xattrs[0].1 .0, value.as_bytes());
}

#[test]
fn inline_data_is_read() {
    let name = "inline_data_is_read";
    if skip(name, false, &["mkfs.ext4"]) {
        return;
    }
    let t = tmpdir();
    let staging = t.path().join("staging");
    fs::create_dir_all(staging.join("dir/sub")).expect("mkdir");
    write(&staging.join("dir/tiny"), b"inline\n");
    write(&staging.join("dir/sub/in_xattr_too"), &[b'q'; 100]);
    write(&staging.join("dir/big"), &[b'b'; 10_000]);
    for i in 0..5 {
        write(&staging.join(format!("dir/sub/n{i}")), b"");
    }
    std::os::unix::fs::symlink("t".repeat(70), staging.join("dir/longlink")).expect("symlink");
    let image = t.path().join("inline.img");
    make_image(&staging, &image, "mkfs.ext4", &["-O", "inline_data"], "8M");
    let tree = Ext4Tree::open(&image, 0, None).expect("open");
    let entries = walk(&tree);
    let names: Vec<String> = entries.iter().map(|e| e.path.display()).collect();
    assert_eq!(
        names,
        [
            "",
            "dir",
            "dir/big",
            "dir/longlink",
            "dir/sub",
            "dir/sub/in_xattr_too",
            "dir/sub/n0",
            "dir/sub/n1",
            "dir/sub/n2",
            "dir/sub/n3",
            "dir/sub/n4",
            "dir/tiny",
            "lost+found"
        ]
    );
    for f in ["dir/tiny", "dir/sub/in_xattr_too", "dir/big"] {
        assert_eq!(
            read_all(&tree, f.as_bytes()),
            fs::read(staging.join(f)).expect("read"),
            "{f}"
        );
    }
    let link = entries
        .iter()
        .find(|e| e.path.0 == b"dir/longlink")
        .expect("longlink");
    assert_eq!(
        link.target.as_ref().map(|t| t.0.clone()),
        Some("t".repeat(70).into_bytes())
    );
    // Inline data must not show up as an xattr.
    assert!(entries.iter().all(|e| e.xattrs.is_empty()));
}

#[test]
fn byte_range_and_block_device_sources() {
    let name = "byte_range_and_block_device_sources";
    if skip(name, false, &["mkfs.ext4", "setfattr"]) {
        return;
    }
    let t = tmpdir();
    let staging = t.path().join("staging");
    fs::create_dir(&staging).expect("mkdir");
    simple_staging(&staging);
    let image = t.path().join("fs.img");
    make_image(&staging, &image, "mkfs.ext4", &[], "32M");
    let fs_bytes = fs::read(&image).expect("read image");
    let reference = walk(&Ext4Tree::from_bytes(fs_bytes.clone()).expect("from_bytes"));

    // The file system inside a "disk" at 1 MiB, with data after it.
    let disk = t.path().join("disk.img");
    let mut d = fs::File::create(&disk).expect("create disk");
    d.write_all(&vec![0xa5; 1 << 20]).expect("write");
    d.write_all(&fs_bytes).expect("write");
    d.write_all(&vec![0x5a; 1 << 20]).expect("write");
    drop(d);
    let len = fs_bytes.len() as u64;
    let tree = Ext4Tree::open(&disk, 1 << 20, Some(len)).expect("open byte range");
    assert_eq!(walk(&tree), reference);
    assert_eq!(
        read_all(&tree, b"large"),
        fs::read(staging.join("large")).expect("read")
    );
    let tree = Ext4Tree::open(&disk, 1 << 20, None).expect("open to the end");
    assert_eq!(walk(&tree), reference);
    assert!(
        Ext4Tree::open(&disk, 1 << 20, Some(len - 4096)).is_err(),
        "truncated range must fail"
    );
    assert!(
        Ext4Tree::open(&disk, 1 << 40, None).is_err(),
        "offset past the end must fail"
    );
    assert!(
        Ext4Tree::open(&disk, 0, None).is_err(),
        "no file system at 0"
    );
    assert!(
        Ext4Tree::open(&disk, 1 << 20, Some(len + (2 << 20))).is_err(),
        "range past the end must fail"
    );

    // open_file refuses what is not a regular file from the walk.
    for bad in [
        &b"a"[..],
        b"link_short",
        b"missing",
        b"../etc",
        b"a//hard2",
        b"",
        b"fifo",
    ] {
        assert!(
            tree.open_file(bad).is_err(),
            "open_file {:?} must fail",
            String::from_utf8_lossy(bad)
        );
    }
    let uuid = tree.uuid();
    assert_ne!(uuid, [0; 16]);
    assert_eq!(tree.label(), "");

    if !is_root() || !have("losetup") {
        loud_fmt!("SKIPPED {name} (block device part): needs root and losetup");
        return;
    }
    let out = Command::new(sbin("losetup"))
        .args(["-r", "-f", "--show"])
        .arg(&disk)
        .output()
        .expect("losetup");
    if !out.status.success() {
        loud_fmt!(
            "SKIPPED {name} (block device part): losetup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let result = std::panic::catch_unwind(|| {
        let tree = Ext4Tree::open(Path::new(&dev), 1 << 20, Some(len)).expect("open block device");
        assert_eq!(walk(&tree), reference);
        assert_eq!(
            read_all(&tree, b"sparse"),
            fs::read(staging.join("sparse")).expect("read")
        );
    });
    let _ = Command::new(sbin("losetup")).args(["-d", &dev]).status();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

/// Mounts `image` read-write, changes it, commits the journal with fsync,
/// and copies the backing file while still mounted: the copy needs
/// recovery and holds the changes only in its journal. Returns the
/// kernel's view of the changed tree.
fn make_dirty(t: &Path, image: &Path, dirty: &Path) -> Option<Vec<Seen>> {
    let mnt = t.join("rw.mnt");
    // nodelalloc: blocks and sizes are set at write time, so the one
    // transaction the fsyncs below commit holds every change (with delayed
    // allocation, files never fsynced would still be empty on disk).
    let m = Mount::new(image, &mnt, "rw,noatime,nodelalloc,commit=600")?;
    let root = &m.dir;
    fs::create_dir_all(root.join("newdir/many")).expect("mkdir");
    write(&root.join("newdir/f"), b"journal only\n");
    setfattr(&root.join("newdir/f"), "user.j", "in the journal");
    for i in 0..400 {
        write(
            &root.join(format!("newdir/many/entry-with-a-long-name-{i:04}")),
            b"x",
        );
    }
    // Preallocated (unwritten) extents around a little data.
    let pre = fs::File::create(root.join("newdir/prealloc")).expect("create");
    // (Block-mapped ext3 files cannot preallocate; they just get the data.)
    match nix::fcntl::fallocate(&pre, nix::fcntl::FallocateFlags::empty(), 0, 1 << 20) {
        Ok(()) | Err(nix::errno::Errno::EOPNOTSUPP) => {}
        Err(e) => panic!("fallocate: {e}"),
    }
    pre.write_all_at(b"written", 300_000).expect("write");
    pre.sync_all().expect("fsync");
    drop(pre);
    std::os::unix::fs::symlink("newdir/f", root.join("newlink")).expect("symlink");
    fs::remove_file(root.join("xattrs")).expect("unlink");
    fs::set_permissions(root.join("empty"), fs::Permissions::from_mode(0o600)).expect("chmod");
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(root.join("hard1"))
        .expect("open");
    f.write_all(b"appended\n").expect("append");
    f.sync_all().expect("fsync");
    drop(f);
    for p in [
        root.join("newdir/f"),
        root.join("newdir/many"),
        root.join("newdir"),
        root.to_path_buf(),
    ] {
        fs::File::open(&p)
            .expect("open for fsync")
            .sync_all()
            .expect("fsync");
    }
    let seen = scan(root);
    fs::copy(image, dirty).expect("copy the mounted image");
    drop(m);
    Some(seen)
}

#[test]
fn dirty_journal_is_replayed_without_writing() {
    let name = "dirty_journal_is_replayed_without_writing";
    if skip(
        name,
        true,
        &["mkfs.ext4", "debugfs", "e2fsck", "setfattr", "getfattr"],
    ) {
        return;
    }
    let t = tmpdir();
    let staging = t.path().join("staging");
    fs::create_dir(&staging).expect("mkdir");
    simple_staging(&staging);
    let variants: &[(&str, &str, &[&str])] = &[
        ("csum-v3", "mkfs.ext4", &[]),
        ("no-csum", "mkfs.ext4", &["-O", "^metadata_csum"]),
        ("ext3-32bit", "mkfs.ext3", &[]),
    ];
    for &(variant, mkfs, opts) in variants {
        let image = t.path().join(format!("{variant}.img"));
        let dirty = t.path().join(format!("{variant}.dirty.img"));
        let mut opts = opts.to_vec();
        opts.extend(["-J", "size=16"]); // room for the whole transaction
                                        // The kernel may write the committed blocks home before the copy
                                        // (background writeback under load from other tests): then the
                                        // copy is not journal-only, so build it again.
        let mut kernel = None;
        for attempt in 1..=5 {
            make_image(&staging, &image, mkfs, &opts, "64M");
            let Some(seen) = make_dirty(t.path(), &image, &dirty) else {
                loud_fmt!("SKIPPED {name}: loop mount failed");
                return;
            };
            assert!(
                incompat(&dirty) & NEEDS_RECOVERY != 0,
                "{variant}: the copy must need recovery"
            );
            // Without the journal the changes must not be there.
            let raw_ls = run(
                "debugfs",
                [OsStr::new("-R"), OsStr::new("ls -l /"), dirty.as_os_str()],
            );
            if !String::from_utf8_lossy(&raw_ls).contains("newdir") {
                kernel = Some(seen);
                break;
            }
            loud_fmt!("{name}: {variant}: writeback raced the copy (attempt {attempt}); again");
        }
        let Some(kernel) = kernel else {
            panic!("{variant}: could not make a copy whose changes are only in the journal in 5 attempts");
        };

        let before = hash_file(&dirty);
        let mtime_before = fs::metadata(&dirty)
            .expect("stat")
            .modified()
            .expect("mtime");
        let tree =
            Ext4Tree::open(&dirty, 0, None).unwrap_or_else(|e| panic!("{variant}: open: {e}"));
        assert!(
            tree.replayed_journal_blocks() > 0,
            "{variant}: nothing replayed"
        );
        let entries = walk(&tree);
        compare(
            &tree,
            &entries,
            &kernel,
            Compare {
                identity: true,
                extra: true,
                staging: false,
            },
        );
        for e in &entries {
            if e.kind == Kind::File {
                read_all(&tree, &e.path.0);
            }
        }
        let replayed = tree.replayed_journal_blocks();
        drop(tree);
        assert_eq!(
            hash_file(&dirty),
            before,
            "{variant}: the dirty image was written to"
        );
        assert_eq!(
            fs::metadata(&dirty)
                .expect("stat")
                .modified()
                .expect("mtime"),
            mtime_before
        );
        assert!(incompat(&dirty) & NEEDS_RECOVERY != 0);

        // e2fsck's own replay of a copy yields the very same tree.
        let fixed = t.path().join(format!("{variant}.replayed.img"));
        fs::copy(&dirty, &fixed).expect("copy");
        let status = Command::new(sbin("e2fsck"))
            .args(["-E", "journal_only", "-y"])
            .arg(&fixed)
            .output()
            .expect("e2fsck")
            .status;
        assert!(
            status.code().is_some_and(|c| c <= 1),
            "e2fsck -E journal_only: {status}"
        );
        assert_eq!(incompat(&fixed) & NEEDS_RECOVERY, 0);
        let replayed_tree = Ext4Tree::open(&fixed, 0, None).expect("open replayed");
        assert_eq!(replayed_tree.replayed_journal_blocks(), 0);
        assert!(
            walk(&replayed_tree) == entries,
            "{variant}: e2fsck's replay differs from ours"
        );
        println!("{variant}: {replayed} journal blocks replayed in memory; {} entries match the kernel and e2fsck", entries.len());
    }
}

/// Block numbers of the log blocks `debugfs logdump` finds, in log order.
fn log_blocks(image: &Path) -> Vec<u64> {
    let out = run(
        "debugfs",
        [OsStr::new("-R"), OsStr::new("logdump"), image.as_os_str()],
    );
    String::from_utf8_lossy(&out)
        .lines()
        .filter(|l| l.starts_with("Found expected sequence"))
        .filter_map(|l| l.rsplit("at block ").next()?.trim().parse().ok())
        .collect()
}

/// A journal whose live part wraps from its end to its start: many small
/// transactions (creating and removing directories, so revoke records
/// too) on a 1 MiB journal, copied while mounted as soon as debugfs sees
/// the log wrap.
#[test]
fn wrapped_journal_with_revokes_matches_e2fsck() {
    let name = "wrapped_journal_with_revokes_matches_e2fsck";
    if skip(name, true, &["mkfs.ext4", "debugfs", "e2fsck"]) {
        return;
    }
    let t = tmpdir();
    let staging = t.path().join("staging");
    fs::create_dir(&staging).expect("mkdir");
    write(&staging.join("seed"), b"seed\n");
    let image = t.path().join("wrap.img");
    make_image(
        &staging,
        &image,
        "mkfs.ext4",
        &["-b", "1024", "-J", "size=1"],
        "32M",
    );
    let dirty = t.path().join("wrap.dirty.img");
    let Some(m) = Mount::new(
        &image,
        &t.path().join("mnt"),
        "rw,noatime,nodelalloc,commit=600",
    ) else {
        loud_fmt!("SKIPPED {name}: loop mount failed");
        return;
    };
    let fsync = |p: &Path| fs::File::open(p).expect("open").sync_all().expect("fsync");
    let mut wrapped = None;
    for i in 0..2000 {
        let d = m.dir.join(format!("d{}", i % 7));
        fs::create_dir_all(&d).expect("mkdir");
        for j in 0..5 {
            write(&d.join(format!("f{j}")), &vec![b'x'; i]);
        }
        fsync(&d);
        if i % 3 == 2 {
            fs::remove_dir_all(&d).expect("rm -r");
            fsync(&m.dir);
        }
        if i % 5 == 4 {
            fs::copy(&image, &dirty).expect("copy the mounted image");
            let blocks = log_blocks(&dirty);
            if blocks.windows(2).any(|w| w[1] < w[0]) {
                wrapped = Some((i, blocks.len()));
                break;
            }
        }
    }
    drop(m);
    let Some((iterations, log_len)) = wrapped else {
        panic!("{name}: the journal never wrapped in 2000 transactions");
    };
    assert!(incompat(&dirty) & NEEDS_RECOVERY != 0);
    let before = hash_file(&dirty);
    let tree = Ext4Tree::open(&dirty, 0, None).expect("open");
    assert!(tree.replayed_journal_blocks() > 0);
    let entries = walk(&tree);
    let mut contents = Vec::new();
    for e in entries.iter().filter(|e| e.kind == Kind::File) {
        contents.push(read_all(&tree, &e.path.0));
    }
    drop(tree);
    assert_eq!(hash_file(&dirty), before, "the dirty image was written to");
    let fixed = t.path().join("wrap.replayed.img");
    fs::copy(&dirty, &fixed).expect("copy");
    let status = Command::new(sbin("e2fsck"))
        .args(["-E", "journal_only", "-y"])
        .arg(&fixed)
        .output()
        .expect("e2fsck");
    assert!(
        status.status.code().is_some_and(|c| c <= 1),
        "e2fsck: {status:?}"
    );
    let theirs = Ext4Tree::open(&fixed, 0, None).expect("open replayed");
    assert!(
        walk(&theirs) == entries,
        "e2fsck's replay differs from ours"
    );
    let mut theirs_contents = Vec::new();
    for e in entries.iter().filter(|e| e.kind == Kind::File) {
        theirs_contents.push(read_all(&theirs, &e.path.0));
    }
    assert!(
        theirs_contents == contents,
        "contents differ from e2fsck's replay"
    );
    println!("{name}: log wrapped after {iterations} rounds ({log_len} log blocks); {} entries match e2fsck", entries.len());
}

/// Image `before` with every block that differs in `after` (same
/// geometry) logged in its journal by debugfs: in transactions of 40
/// blocks, then a garbage copy of block `revoked` and a revoke record for
/// it. Replay must give exactly `after`.
fn journal_the_difference(
    before: &Path,
    after: &Path,
    dirty: &Path,
    revoked: u64,
    csum: bool,
) -> usize {
    let a = fs::read(before).expect("read before");
    let b = fs::read(after).expect("read after");
    assert_eq!(a.len(), b.len());
    let map = journal_map(before);
    assert_eq!(
        map,
        journal_map(after),
        "the journals must be in the same place"
    );
    let journal: std::collections::HashSet<u64> =
        map.iter().flat_map(|&(_, p, n)| p..p + n).collect();
    let bs = 1024
        * (1u64 << u32::from_le_bytes(a[1024 + 0x18..1024 + 0x1c].try_into().expect("4 bytes")));
    let bsz = bs as usize;
    let changed: Vec<u64> = (0..a.len() / bsz)
        .filter(|&i| a[i * bsz..(i + 1) * bsz] != b[i * bsz..(i + 1) * bsz])
        .map(|i| i as u64)
        .filter(|i| !journal.contains(i))
        .collect();
    assert!(
        !changed.contains(&revoked),
        "block {revoked} must be the same in both"
    );
    fs::copy(before, dirty).expect("copy");
    let dir = dirty.parent().expect("has a parent");
    let mut script = String::from(if csum { "jo -c\n" } else { "jo\n" });
    for (n, chunk) in changed.chunks(40).enumerate() {
        let file = dir.join(format!("txn{n}"));
        let mut data = Vec::new();
        for &blk in chunk {
            data.extend_from_slice(&b[blk as usize * bsz..(blk as usize + 1) * bsz]);
        }
        write(&file, &data);
        let list: Vec<String> = chunk.iter().map(u64::to_string).collect();
        script.push_str(&format!("jw -b {} {}\n", list.join(","), file.display()));
    }
    write(&dir.join("garbage"), &vec![0x6b; bsz]);
    write(&dir.join("empty"), b"");
    script.push_str(&format!(
        "jw -b {revoked} {}\n",
        dir.join("garbage").display()
    ));
    script.push_str(&format!(
        "jw -r {revoked} {}\n",
        dir.join("empty").display()
    ));
    script.push_str("jc\n");
    let script_file = dir.join("journal.debugfs");
    write(&script_file, script.as_bytes());
    run(
        "debugfs",
        [
            OsStr::new("-w"),
            OsStr::new("-f"),
            script_file.as_os_str(),
            dirty.as_os_str(),
        ],
    );
    changed.len()
}

/// The debugfs-written journal of `journal_the_difference`: the "after"
/// image is the "before" image changed with debugfs (new directory and
/// files, a removal, an xattr, a file whose blocks all start with the
/// jbd2 magic so jbd2 escapes them), replayed over many transactions and
/// a revoke. Needs no root.
#[test]
fn debugfs_journal_replays_to_the_after_image() {
    let name = "debugfs_journal_replays_to_the_after_image";
    if skip(name, false, &["mkfs.ext4", "debugfs"]) {
        return;
    }
    let t = tmpdir();
    let staging = t.path().join("staging");
    fs::create_dir_all(staging.join("d/e")).expect("mkdir");
    write(&staging.join("keep"), &Rng(7).bytes(64 << 10));
    write(&staging.join("d/changes"), b"old\n");
    write(&staging.join("d/goes"), b"removed later\n");
    std::os::unix::fs::symlink("keep", staging.join("link")).expect("symlink");
    // Host files debugfs copies in.
    let small = t.path().join("small");
    write(&small, b"new file\n");
    let magic = t.path().join("magic");
    let mut data = Vec::new();
    for _ in 0..16 {
        let mut block = vec![0x42u8; 1024];
        block[..4].copy_from_slice(&0xc03b_3998u32.to_be_bytes());
        data.extend_from_slice(&block);
    }
    write(&magic, &data);
    let mut changes = String::from("mkdir new\nrm d/goes\nea_set d/changes user.added later\n");
    changes.push_str(&format!("write {} new/magic\n", magic.display()));
    for i in 0..150 {
        changes.push_str(&format!(
            "write {} new/file-with-a-long-name-{i:03}\n",
            small.display()
        ));
    }
    let changes_file = t.path().join("changes.debugfs");
    write(&changes_file, changes.as_bytes());

    for (variant, mkfs, opts, csum) in [
        ("csum-1k", "mkfs.ext4", &["-b", "1024"][..], true),
        (
            "nocsum-4k",
            "mkfs.ext4",
            &["-b", "4096", "-O", "^metadata_csum"][..],
            false,
        ),
        ("ext3-2k", "mkfs.ext3", &["-b", "2048"][..], false),
    ] {
        let a = t.path().join(format!("{variant}.before.img"));
        let b = t.path().join(format!("{variant}.after.img"));
        make_image(&staging, &a, mkfs, opts, "32M");
        fs::copy(&a, &b).expect("copy");
        run(
            "debugfs",
            [
                OsStr::new("-w"),
                OsStr::new("-f"),
                changes_file.as_os_str(),
                b.as_os_str(),
            ],
        );
        let bmap = run(
            "debugfs",
            [OsStr::new("-R"), OsStr::new("bmap /keep 3"), b.as_os_str()],
        );
        let revoked: u64 = String::from_utf8_lossy(&bmap)
            .trim()
            .parse()
            .expect("a block number");
        let dirty = t.path().join(format!("{variant}.dirty.img"));
        let logged = journal_the_difference(&a, &b, &dirty, revoked, csum);
        assert!(
            incompat(&dirty) & NEEDS_RECOVERY != 0,
            "{variant}: debugfs left no recovery flag"
        );
        let hash = hash_file(&dirty);

        let ours = Ext4Tree::open(&dirty, 0, None).unwrap_or_else(|e| panic!("{variant}: {e}"));
        let theirs = Ext4Tree::open(&b, 0, None).expect("open after");
        assert_eq!(
            ours.replayed_journal_blocks(),
            logged,
            "{variant}: blocks replayed"
        );
        let entries = walk(&ours);
        assert!(entries.iter().any(|e| e.path.0 == b"new/magic"));
        assert!(
            entries == walk(&theirs),
            "{variant}: the replayed tree differs from the after image"
        );
        for e in entries.iter().filter(|e| e.kind == Kind::File) {
            assert!(
                read_all(&ours, &e.path.0) == read_all(&theirs, &e.path.0),
                "{variant}: {} differs",
                e.path.display()
            );
        }
        drop(ours);
        assert_eq!(
            hash_file(&dirty),
            hash,
            "{variant}: the dirty image was written to"
        );
        println!("{variant}: {logged} blocks logged by debugfs replay to the after image");
    }
}

// ---------------------------------------------------------------- damage

/// Walks an image and reads (the start of) every file; Ok or Err, any.
fn exercise(data: Vec<u8>) -> Result<usize, String> {
    let tree = Ext4Tree::from_bytes(data).map_err(|e| e.to_string())?;
    let mut files = Vec::new();
    let mut n = 0;
    tree.walk(&mut |e| {
        n += 1;
        if e.kind == Kind::File && e.hardlink.is_none() {
            files.push(e.path.0);
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    for f in files {
        if let Ok(file) = tree.open_file(&f) {
            let mut sink = Vec::new();
            let _ = file.take(256 << 10).read_to_end(&mut sink);
        }
    }
    Ok(n)
}

/// Block numbers of interesting metadata, from dumpe2fs and debugfs.
fn metadata_blocks(image: &Path, paths: &[&str]) -> BTreeMap<String, Vec<u64>> {
    let mut m: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let dump = String::from_utf8_lossy(&run("dumpe2fs", [image.as_os_str()])).into_owned();
    for line in dump.lines() {
        let l = line.trim();
        for (key, label) in [
            ("Inode table at ", "inode table"),
            ("Primary superblock at ", "superblock"),
            ("Group descriptors at ", "group descriptors"),
        ] {
            if let Some(rest) = l.split(key).nth(1) {
                let first = rest
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .unwrap_or("");
                if let Ok(b) = first.parse::<u64>() {
                    m.entry(label.to_string()).or_default().push(b);
                }
            }
        }
    }
    for p in paths {
        let stat = String::from_utf8_lossy(&run(
            "debugfs",
            [
                OsStr::new("-R"),
                OsStr::new(&format!("stat {p}")),
                image.as_os_str(),
            ],
        ))
        .into_owned();
        for l in stat.lines() {
            if let Some(rest) = l.split("File ACL: ").nth(1) {
                if let Ok(b) = rest.split_whitespace().next().unwrap_or("").parse::<u64>() {
                    if b != 0 {
                        m.entry("xattr block".into()).or_default().push(b);
                    }
                }
            }
            for part in l.split(", ") {
                // "(ETB0):1234" is an extent tree block; "(0-3):100-103" data.
                if let Some((k, v)) = part.trim().split_once("):") {
                    let label = if k.contains("ETB") || k.contains("IND") {
                        "extent or indirect block"
                    } else {
                        "directory or file data"
                    };
                    if let Ok(b) = v.split('-').next().unwrap_or("").parse::<u64>() {
                        m.entry(label.into()).or_default().push(b);
                    }
                }
            }
        }
    }
    m
}

/// Mutations per kind of metadata block and image.
const PER_REGION: usize = 80;

/// Journal block → disk block runs, from debugfs's extent list of inode 8.
fn journal_map(image: &Path) -> Vec<(u64, u64, u64)> {
    let out = run(
        "debugfs",
        [OsStr::new("-R"), OsStr::new("stat <8>"), image.as_os_str()],
    );
    let mut runs = Vec::new();
    for part in String::from_utf8_lossy(&out).split([',', '\n', ' ']) {
        let Some((logical, physical)) = part
            .trim()
            .strip_prefix('(')
            .and_then(|p| p.split_once("):"))
        else {
            continue;
        };
        let first = |r: &str| r.split('-').next().and_then(|n| n.parse::<u64>().ok());
        let last = |r: &str| r.split('-').next_back().and_then(|n| n.parse::<u64>().ok());
        if let (Some(l0), Some(l1), Some(p0)) = (first(logical), last(logical), first(physical)) {
            runs.push((l0, p0, l1 - l0 + 1));
        }
    }
    runs
}

/// Flips 1-3 bytes near each target offset of `clean` and walks the
/// result in a worker thread: it must finish within 60 s with Ok or an
/// error message, never panic. Returns (walks, errors).
fn damage(
    variant: &str,
    clean: &[u8],
    targets: Vec<(String, u64)>,
    rng: &mut Rng,
) -> (usize, usize) {
    let mut errors = 0;
    let total = targets.len();
    for (label, off) in targets {
        let mut data = clean.to_vec();
        let flips = 1 + rng.below(3);
        for k in 0..flips {
            let at = (off + k * rng.below(64)) as usize % data.len();
            data[at] ^= (1 + rng.below(255)) as u8;
        }
        let (tx, rx) = mpsc::channel();
        let what = format!("{variant}: {flips} bytes flipped at byte {off} ({label})");
        let worker = std::thread::spawn(move || {
            let r = exercise(data);
            let _ = tx.send(r);
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(_)) => {}
            Ok(Err(msg)) => {
                assert!(!msg.is_empty(), "{what}: empty error message");
                errors += 1;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("{what}: walk did not finish within 60 s")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = worker.join();
                panic!("{what}: walk panicked");
            }
        }
        worker.join().expect("worker finished");
    }
    (total, errors)
}

#[test]
fn damaged_images_fail_cleanly() {
    let name = "damaged_images_fail_cleanly";
    if skip(
        name,
        false,
        &["mkfs.ext4", "debugfs", "dumpe2fs", "setfattr"],
    ) {
        return;
    }
    let t = tmpdir();
    let staging = t.path().join("staging");
    fs::create_dir(&staging).expect("mkdir");
    simple_staging(&staging);
    fs::remove_file(staging.join("large")).expect("rm");
    let mut rng = Rng(0xdead_beef);
    let mut total = 0;
    let mut errors = 0;
    let start = Instant::now();
    let bs = 1024u64;
    for (variant, opts) in [
        ("csum", &["-b", "1024"][..]),
        ("nocsum", &["-b", "1024", "-O", "^metadata_csum"][..]),
        (
            "ext3",
            &["-b", "1024", "-O", "^extent,^64bit,^metadata_csum"][..],
        ),
    ] {
        let image = t.path().join(format!("{variant}.img"));
        make_image(&staging, &image, "mkfs.ext4", opts, "16M");
        let clean = fs::read(&image).expect("read");
        exercise(clean.clone())
            .unwrap_or_else(|e| panic!("{variant}: the undamaged image fails: {e}"));
        let regions = metadata_blocks(
            &image,
            &[
                "/",
                "/a",
                "/many",
                "/xattr_block",
                "/fragmented",
                "/link_long",
                "/sparse",
            ],
        );
        let mut targets: Vec<(String, u64)> = Vec::new();
        for (label, blocks) in &regions {
            for _ in 0..PER_REGION {
                let b = blocks[rng.below(blocks.len() as u64) as usize];
                targets.push((label.clone(), b * bs + rng.below(bs)));
            }
        }
        for _ in 0..PER_REGION {
            targets.push(("superblock".into(), 1024 + rng.below(1024)));
            targets.push(("anywhere".into(), rng.below(clean.len() as u64)));
        }
        let (n, e) = damage(variant, &clean, targets, &mut rng);
        total += n;
        errors += e;

        // The same with a dirty journal: damage in the log itself.
        if !is_root() {
            if variant == "csum" {
                loud_fmt!("SKIPPED {name} (dirty journals): needs root to mount");
            }
            continue;
        }
        let dirty = t.path().join(format!("{variant}.dirty.img"));
        if make_dirty(t.path(), &image, &dirty).is_none() {
            loud_fmt!("SKIPPED {name} (dirty journals): loop mount failed");
            continue;
        }
        let clean = fs::read(&dirty).expect("read");
        exercise(clean.clone())
            .unwrap_or_else(|e| panic!("{variant}: the undamaged dirty image fails: {e}"));
        let map = journal_map(&dirty);
        let physical = |l: u64| {
            map.iter()
                .find(|r| l >= r.0 && l < r.0 + r.2)
                .map(|r| r.1 + (l - r.0))
        };
        let mut log: Vec<u64> = log_blocks(&dirty)
            .into_iter()
            .filter_map(physical)
            .collect();
        log.extend(physical(0)); // the journal superblock
        assert!(log.len() > 2, "{variant}: no journal log found");
        let mut targets = Vec::new();
        for _ in 0..3 * PER_REGION {
            let b = log[rng.below(log.len() as u64) as usize];
            targets.push(("journal log".to_string(), b * bs + rng.below(bs)));
        }
        let (n, e) = damage(&format!("{variant} dirty"), &clean, targets, &mut rng);
        total += n;
        errors += e;
    }
    println!(
        "damaged images: {total} walks, {errors} clean errors, none panicked or hung, in {:?}",
        start.elapsed()
    );
}

/// `Ext4Tree` can move to and be shared between threads.
#[test]
fn tree_and_files_are_send() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Ext4Tree>();
    send::<imaging::ext4::Ext4File>();
}
