//! File-tree restore: populating a directory (normally the root of a fresh
//! file system) from a file-tree stream, safely.
//!
//! **Safety against hostile images.** Entries are checked first (see
//! [`crate::tree::read`]). Then every parent directory is opened with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`
//! from the target, and the final component is created with `*at` calls that
//! never follow it (`O_CREAT|O_EXCL|O_NOFOLLOW`, `mknodat`, `symlinkat`,
//! `linkat` without `AT_SYMLINK_FOLLOW`). Nothing can be written outside the
//! target, even through symlinks the image itself creates.
//!
//! **Order.** A file's content is written first, then `fchown` (which clears
//! setuid bits and file capabilities), then `fchmod`, then xattrs (ACLs and
//! `security.capability` last), then times. Directories are created
//! owner-only and get their metadata at the end, deepest first, so adding
//! their children does not disturb their times. Device nodes are never opened.
//!
//! Without root, ownership cannot be set; that is reported once and the
//! restore goes on, as `tar` does.
//!
//! The writer (`write_tree`) takes file contents from a `FileContent`
//! source: here, chunks in the library; in [`crate::tree::populate`], an
//! ext4 file system read from a stored block stream. Both therefore create
//! and finish entries in exactly the same way.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use crossbeam_channel::bounded;
use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{
    fchmod, fchmodat, mkdirat, mknodat, utimensat, FchmodatFlags, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{
    fchown, fchownat, linkat, symlinkat, unlinkat, FchownatFlags, Gid, Uid, UnlinkatFlags,
};
use serde::Serialize;

use crate::capture::{default_workers, FirstError};
use crate::device::Writeback;
use crate::error::{Error, Result};
use crate::index::Index;
use crate::library::Library;
use crate::progress::{ProgressSink, Throttle};
use crate::store::LockMode;
use crate::tree::entry::{Entry, FileExtent, Kind};
use crate::tree::read::{parent, read_entries};
use crate::tree::xattr;

/// How to restore.
#[derive(Clone, Debug, Default)]
pub struct TreeRestoreOptions {
    /// Restore only this path of the tree (relative, e.g. `etc`), as the
    /// target's content (`ferry image extract`).
    pub subtree: Option<Vec<u8>>,
    /// Content threads; 0 means one per core.
    pub workers: usize,
}

/// What a tree restore did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TreeRestoreStats {
    /// Entries created.
    pub entries: u64,
    /// Regular files written.
    pub files: u64,
    /// Content bytes written.
    pub bytes_written: u64,
    /// Warnings (e.g. ownership not settable without root).
    pub warnings: Vec<String>,
    /// Wall time in seconds.
    pub seconds: f64,
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

fn last(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// The entries to restore, re-rooted at `subtree` when given.
pub fn select(entries: Vec<Entry>, subtree: Option<&[u8]>) -> Result<Vec<Entry>, String> {
    let Some(sub) = subtree.filter(|s| !s.is_empty()) else {
        return Ok(entries);
    };
    let Some(top) = entries.iter().find(|e| e.path.0 == sub) else {
        return Err(format!(
            "no {:?} in the image",
            String::from_utf8_lossy(sub)
        ));
    };
    let mut out = Vec::new();
    let prefix_len = sub.len() + 1;
    if top.kind != Kind::Dir {
        // A single file: a root directory holding it under its own name.
        let mut root = Entry::new("", Kind::Dir);
        root.mode = 0o755;
        out.push(root);
    }
    // Content of hard links whose first name lies outside the subtree.
    let firsts: std::collections::HashMap<&[u8], &Entry> =
        entries.iter().map(|e| (e.path.0.as_slice(), e)).collect();
    for e in &entries {
        let p = &e.path.0;
        let inside = p == sub || (p.starts_with(sub) && p.get(sub.len()) == Some(&b'/'));
        if !inside {
            continue;
        }
        let mut e = e.clone();
        // A non-directory has no children, so only a directory gets here
        // with a longer path.
        e.path.0 = match (p == sub, top.kind == Kind::Dir) {
            (true, true) => Vec::new(),
            (true, false) => last(sub).to_vec(),
            (false, _) => p[prefix_len..].to_vec(),
        };
        if let Some(first) = e.hardlink.clone() {
            let f = &first.0;
            let first_inside = f.starts_with(sub) && f.get(sub.len()) == Some(&b'/');
            if first_inside {
                e.hardlink = Some(crate::tree::entry::Bytes(f[prefix_len..].to_vec()));
            } else if let Some(orig) = firsts.get(f.as_slice()) {
                e.hardlink = None;
                e.content = orig.content.clone();
                e.size = orig.size;
            }
        }
        out.push(e);
    }
    Ok(out)
}

/// An open directory fd beneath the target.
struct Dirs<'a> {
    root: &'a OwnedFd,
    cached: Option<(Vec<u8>, OwnedFd)>,
}

impl Dirs<'_> {
    /// Opens `rel` (a directory path relative to the target) without
    /// following any symlink or leaving the target.
    fn open(&self, rel: &[u8]) -> nix::Result<OwnedFd> {
        let path: &[u8] = if rel.is_empty() { b"." } else { rel };
        let how = OpenHow::new()
            .flags(OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC)
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            );
        openat2(self.root.as_fd(), os(path), how)
    }

    /// The parent directory of `path`, cached for runs of siblings.
    fn parent_of(&mut self, path: &[u8]) -> nix::Result<BorrowedFd<'_>> {
        let p = parent(path);
        if self.cached.as_ref().is_none_or(|(c, _)| c != p) {
            let fd = self.open(p)?;
            self.cached = Some((p.to_vec(), fd));
        }
        Ok(self
            .cached
            .as_ref()
            .map(|(_, fd)| fd.as_fd())
            .expect("just cached"))
    }
}

/// Restores image `name`'s tree into directory `target`.
pub fn restore_tree(
    lib: &Library,
    name: &str,
    target: &Path,
    opts: &TreeRestoreOptions,
    progress: &dyn ProgressSink,
) -> Result<TreeRestoreStats> {
    let started = Instant::now();
    let _lock = lib.lock(LockMode::Shared)?;
    let manifest = lib.manifest(name)?;
    let Some(tree) = manifest.trees.first() else {
        return Err(Error::Config {
            library: lib.location(),
            reason: format!(
                "image {name:?} holds no file tree (restore it to a file or block device instead)"
            ),
        });
    };
    let entries = read_entries(lib, &tree.stream)?;
    let entries = select(entries, opts.subtree.as_deref()).map_err(|reason| Error::Config {
        library: lib.location(),
        reason: format!("image {name:?}: {reason}"),
    })?;
    let index = lib.load_index()?;
    for e in &entries {
        for x in e.content.iter().flat_map(|c| &c.extents) {
            if let FileExtent::Chunk { id, .. } = x {
                if !index.contains(id) {
                    return Err(Error::MissingChunk {
                        id: *id,
                        image: name.into(),
                    });
                }
            }
        }
    }
    match std::fs::create_dir(target) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(Error::io("creating", target.display(), e))
        }
        _ => {}
    }
    let content = StoredContent { lib, index: &index };
    let mut stats = write_tree(
        &entries,
        target,
        opts.workers,
        &content,
        "restore",
        progress,
    )?;
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(stats)
}

/// Where the content of regular files comes from, for [`write_tree`].
pub(crate) trait FileContent: Sync {
    /// Writes the content of `e` into `file` (just created, empty; `shown`
    /// names it in errors), adding each byte written to `written` as it
    /// goes. Holes are left unwritten: the caller sets the size.
    fn write(&self, file: &File, e: &Entry, shown: &str, written: &AtomicU64) -> Result<()>;
}

/// Writes `entries` (checked, in walk order, the root first) into the
/// existing directory `target`, with the safety and metadata order the
/// module docs describe: `content` supplies file contents, written on
/// `workers` threads (0: one per core); progress is reported as `step`,
/// in content bytes. The root entry's metadata goes on `target` itself.
pub(crate) fn write_tree(
    entries: &[Entry],
    target: &Path,
    workers: usize,
    content: &dyn FileContent,
    step: &'static str,
    progress: &dyn ProgressSink,
) -> Result<TreeRestoreStats> {
    let t = target.display().to_string();
    let root: OwnedFd = File::open(target)
        .map_err(|e| Error::io("opening", &t, e))?
        .into();
    let total: u64 = entries
        .iter()
        .filter(|e| e.hardlink.is_none())
        .map(|e| e.size)
        .sum();
    let mut throttle = Throttle::new(progress, step, total);
    let written = AtomicU64::new(0);
    let errors = FirstError::default();
    let warned_owner = AtomicBool::new(false);
    let mut stats = TreeRestoreStats::default();
    let workers = default_workers(workers);
    let ctx = Writer {
        content,
        target: &t,
        is_root: nix::unistd::geteuid().is_root(),
        warned_owner: &warned_owner,
    };

    std::thread::scope(|s| {
        let (tx, rx) = bounded::<(File, &Entry)>(64);
        // Written files go to the writeback thread, which starts their
        // writing to the disk and closes them.
        let writeback = Writeback::spawn(s);
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let rx = rx.clone();
                let (ctx, written, errors, writeback) =
                    (&ctx, &written, &errors, writeback.clone());
                s.spawn(move || {
                    for (file, e) in rx {
                        if errors.is_set() {
                            return;
                        }
                        if let Err(err) = ctx.write_file(&file, e, written) {
                            errors.set(err);
                            return;
                        }
                        writeback.start(file, 0, 0);
                    }
                })
            })
            .collect();
        drop(writeback);
        drop(rx);
        let mut dirs = Dirs {
            root: &root,
            cached: None,
        };
        for e in entries.iter().skip(1) {
            if errors.is_set() {
                break;
            }
            match ctx.create(&mut dirs, e) {
                Ok(Some(file)) => {
                    stats.files += 1;
                    if tx.send((file, e)).is_err() {
                        break;
                    }
                }
                Ok(None) => {}
                Err(err) => {
                    errors.set(err);
                    break;
                }
            }
            stats.entries += 1;
            throttle.update(written.load(Ordering::Relaxed));
        }
        drop(tx);
        // Large files may still be in the workers' hands: keep reporting.
        while handles.iter().any(|h| !h.is_finished()) {
            throttle.update(written.load(Ordering::Relaxed));
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        for h in handles {
            let _ = h.join();
        }
    });
    errors.result()?;
    // Directory metadata last, deepest first; the root is the target itself.
    let dirs = Dirs {
        root: &root,
        cached: None,
    };
    for e in entries.iter().rev().filter(|e| e.kind == Kind::Dir) {
        let fd = dirs
            .open(&e.path.0)
            .map_err(|err| ctx.fail("opening directory", &e.path.0, err))?;
        ctx.apply_fd(&File::from(fd), e)?;
    }
    stats.bytes_written = written.load(Ordering::Relaxed);
    throttle.finish(stats.bytes_written);
    if warned_owner.load(Ordering::Relaxed) {
        stats
            .warnings
            .push("not running as root: file ownership was not restored".into());
    }
    Ok(stats)
}

/// Creates entries beneath the target and applies their metadata.
struct Writer<'a> {
    content: &'a dyn FileContent,
    target: &'a str,
    is_root: bool,
    warned_owner: &'a AtomicBool,
}

impl Writer<'_> {
    fn fail(&self, op: &'static str, path: &[u8], err: Errno) -> Error {
        Error::io(
            op,
            format!("{}/{}", self.target, String::from_utf8_lossy(path)),
            std::io::Error::from(err),
        )
    }

    /// Creates one entry. Returns an open regular file whose content and
    /// metadata are still to be written.
    fn create(&self, dirs: &mut Dirs<'_>, e: &Entry) -> Result<Option<File>> {
        let p = &e.path.0;
        let name = os(last(p));
        let fail = |op, err| self.fail(op, p, err);
        let dir = dirs
            .parent_of(p)
            .map_err(|err| fail("opening the parent of", err))?;
        // Whatever is in the way goes (an existing directory stays, if one is wanted).
        if e.kind == Kind::Dir {
            match mkdirat(dir, name, Mode::from_bits_truncate(0o700)) {
                Ok(()) => {}
                Err(Errno::EEXIST) => {
                    if nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                        .map(|st| {
                            SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
                                != SFlag::S_IFDIR
                        })
                        .unwrap_or(true)
                    {
                        unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)
                            .map_err(|err| fail("replacing", err))?;
                        mkdirat(dir, name, Mode::from_bits_truncate(0o700))
                            .map_err(|err| fail("creating", err))?;
                    }
                }
                Err(err) => return Err(fail("creating directory", err)),
            }
            return Ok(None);
        }
        match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(err) => return Err(fail("replacing", err)),
        }
        if let Some(first) = &e.hardlink {
            // The first name's directory is opened beneath the target too.
            let first_dir = dirs
                .open(parent(&first.0))
                .map_err(|err| fail("opening the link source of", err))?;
            let dir = dirs
                .parent_of(p)
                .map_err(|err| fail("opening the parent of", err))?;
            linkat(
                first_dir.as_fd(),
                os(last(&first.0)),
                dir,
                name,
                nix::fcntl::AtFlags::empty(),
            )
            .map_err(|err| fail("linking", err))?;
            return Ok(None);
        }
        match e.kind {
            Kind::File => {
                let fd = nix::fcntl::openat(
                    dir,
                    name,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|err| fail("creating", err))?;
                return Ok(Some(File::from(fd)));
            }
            Kind::Symlink => {
                let target = e
                    .target
                    .as_ref()
                    .map(|t| t.0.as_slice())
                    .unwrap_or_default();
                symlinkat(os(target), dir, name).map_err(|err| fail("creating symlink", err))?;
            }
            Kind::Char | Kind::Block | Kind::Fifo => {
                let (kind, dev) = match (e.kind, e.rdev) {
                    (Kind::Char, Some((ma, mi))) => (SFlag::S_IFCHR, libc::makedev(ma, mi)),
                    (Kind::Block, Some((ma, mi))) => (SFlag::S_IFBLK, libc::makedev(ma, mi)),
                    _ => (SFlag::S_IFIFO, 0),
                };
                mknodat(dir, name, kind, Mode::from_bits_truncate(0o600), dev)
                    .map_err(|err| fail("creating node", err))?;
            }
            Kind::Dir => unreachable!("handled above"),
        }
        self.apply_at(dir, name, e)?;
        Ok(None)
    }

    /// Writes a file's content, then its metadata.
    fn write_file(&self, file: &File, e: &Entry, written: &AtomicU64) -> Result<()> {
        let shown = format!("{}/{}", self.target, e.path.display());
        self.content.write(file, e, &shown, written)?;
        file.set_len(e.size)
            .map_err(|err| Error::io("sizing", &shown, err))?;
        self.apply_fd(file, e)
    }

    fn owner_failed(&self, err: Errno) -> bool {
        if err == Errno::EPERM && !self.is_root {
            self.warned_owner.store(true, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Owner, mode, xattrs and times of an open file or directory.
    fn apply_fd(&self, f: &File, e: &Entry) -> Result<()> {
        let fail = |op, err: Errno| self.fail(op, &e.path.0, err);
        if let Err(err) = fchown(
            f.as_fd(),
            Some(Uid::from_raw(e.uid)),
            Some(Gid::from_raw(e.gid)),
        ) {
            if !self.owner_failed(err) {
                return Err(fail("setting the owner of", err));
            }
        }
        fchmod(f.as_fd(), Mode::from_bits_truncate(e.mode))
            .map_err(|err| fail("setting the mode of", err))?;
        for (n, v) in &e.xattrs {
            self.xattr_result(xattr::set_fd(f, &n.0, &v.0), e, &n.0)?;
        }
        let (atime, mtime) = times(e);
        nix::sys::stat::futimens(f.as_fd(), &atime, &mtime)
            .map_err(|err| fail("setting the times of", err))
    }

    /// The same for a symlink or device node, by name in its directory.
    fn apply_at(&self, dir: BorrowedFd<'_>, name: &OsStr, e: &Entry) -> Result<()> {
        let fail = |op, err: Errno| self.fail(op, &e.path.0, err);
        let flags = FchownatFlags::AT_SYMLINK_NOFOLLOW;
        if let Err(err) = fchownat(
            dir,
            name,
            Some(Uid::from_raw(e.uid)),
            Some(Gid::from_raw(e.gid)),
            flags,
        ) {
            if !self.owner_failed(err) {
                return Err(fail("setting the owner of", err));
            }
        }
        if e.kind != Kind::Symlink {
            fchmodat(
                dir,
                name,
                Mode::from_bits_truncate(e.mode),
                FchmodatFlags::NoFollowSymlink,
            )
            .or_else(|err| {
                if err == Errno::EOPNOTSUPP {
                    fchmodat(
                        dir,
                        name,
                        Mode::from_bits_truncate(e.mode),
                        FchmodatFlags::FollowSymlink,
                    )
                } else {
                    Err(err)
                }
            })
            .map_err(|err| fail("setting the mode of", err))?;
        }
        if !e.xattrs.is_empty() {
            // The directory fd is beneath the target; the name is not followed.
            let via = format!("/proc/self/fd/{}/", dir.as_raw_fd());
            let mut path = via.into_bytes();
            path.extend_from_slice(name.as_bytes());
            for (n, v) in &e.xattrs {
                self.xattr_result(xattr::set_path(Path::new(os(&path)), &n.0, &v.0), e, &n.0)?;
            }
        }
        let (atime, mtime) = times(e);
        utimensat(dir, name, &atime, &mtime, UtimensatFlags::NoFollowSymlink)
            .map_err(|err| fail("setting the times of", err))
    }

    fn xattr_result(&self, r: std::io::Result<()>, e: &Entry, name: &[u8]) -> Result<()> {
        r.map_err(|err| {
            Error::io(
                "setting xattr",
                format!(
                    "{} on {}/{}",
                    String::from_utf8_lossy(name),
                    self.target,
                    e.path.display()
                ),
                err,
            )
        })
    }
}

fn times(e: &Entry) -> (TimeSpec, TimeSpec) {
    let mtime = TimeSpec::new(e.mtime, i64::from(e.mtime_ns));
    (mtime, mtime)
}

/// File contents stored in a library as chunks and holes.
struct StoredContent<'a> {
    lib: &'a Library,
    index: &'a Index,
}

impl FileContent for StoredContent<'_> {
    fn write(&self, file: &File, e: &Entry, shown: &str, written: &AtomicU64) -> Result<()> {
        let mut off = 0u64;
        let mut buf = Vec::new();
        for x in e.content.iter().flat_map(|c| &c.extents) {
            match *x {
                FileExtent::Hole { hole } => off += hole,
                FileExtent::Chunk { id, len } => {
                    let loc = self.index.get(&id).ok_or_else(|| Error::MissingChunk {
                        id,
                        image: e.path.display(),
                    })?;
                    let mut record = std::mem::take(&mut buf);
                    record.resize(loc.entry.record_len(), 0);
                    self.lib.read_pack_range(
                        &self.index.pack_id(loc.pack),
                        u64::from(loc.entry.offset),
                        &mut record,
                    )?;
                    let chunk = self
                        .lib
                        .verify_record(self.index, loc, &record, Vec::new())?;
                    file.write_all_at(chunk.data(), off)
                        .map_err(|err| Error::io("writing", shown, err))?;
                    written.fetch_add(u64::from(len), Ordering::Relaxed);
                    off += u64::from(len);
                    buf = record;
                }
            }
        }
        Ok(())
    }
}
