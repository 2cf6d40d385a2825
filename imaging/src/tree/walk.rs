//! Walking a mounted directory tree into [`Entry`] records.
//!
//! Depth first, names sorted bytewise, a directory before its contents.
//! Symlinks are never followed; sockets are skipped. By default the walk
//! stays on the root's file system (other mounts appear as empty
//! directories). Excludes are glob patterns on the path relative to the root
//! (`*` and `?` within one component): a matching entry is left out with
//! everything below it. Capturing `/` adds [`LIVE_ROOT_EXCLUDES`].

use std::collections::HashMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::tree::entry::{Bytes, Entry, FileStamp, Kind};
use crate::tree::xattr;

/// The contents of these are skipped when capturing a live root (`/`); the
/// directories themselves are kept, empty, as a restored system needs them.
pub const LIVE_ROOT_EXCLUDES: &[&str] = &["proc/*", "sys/*", "dev/*", "run/*", "tmp/*"];

/// How to walk.
#[derive(Clone, Debug, Default)]
pub struct WalkOptions {
    /// Descend into other file systems too.
    pub cross_file_systems: bool,
    /// Glob patterns of relative paths to leave out.
    pub excludes: Vec<String>,
}

/// What the walk passed over.
#[derive(Clone, Debug, Default)]
pub struct WalkStats {
    /// Sockets skipped.
    pub sockets: u64,
    /// Entries excluded by pattern.
    pub excluded: u64,
    /// Mount points not descended into.
    pub mounts: u64,
    /// Entries that vanished while walking.
    pub vanished: u64,
}

/// Matches `path` against a glob: `*` and `?` match within one component.
pub fn glob_match(pattern: &[u8], path: &[u8]) -> bool {
    match (pattern.split_first(), path.split_first()) {
        (None, None) => true,
        (Some((b'*', rest)), _) => {
            glob_match(rest, path)
                || matches!(path.split_first(), Some((c, p)) if *c != b'/' && glob_match(pattern, p))
        }
        (Some((b'?', rest)), Some((c, p))) => *c != b'/' && glob_match(rest, p),
        (Some((a, rest)), Some((b, p))) => a == b && glob_match(rest, p),
        _ => false,
    }
}

/// The entry for `full` (at `rel` in the tree), from `lstat` and xattrs.
pub fn entry_of(full: &Path, rel: &[u8], meta: &fs::Metadata) -> Result<Option<Entry>> {
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
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
        return Ok(None); // a socket
    };
    let mut e = Entry::new(Bytes(rel.to_vec()), kind);
    e.mode = meta.mode() & 0o7777;
    e.uid = meta.uid();
    e.gid = meta.gid();
    e.mtime = meta.mtime();
    e.mtime_ns = meta.mtime_nsec() as u32;
    e.ctime = meta.ctime();
    e.ctime_ns = meta.ctime_nsec() as u32;
    e.ino = meta.ino();
    if kind == Kind::File {
        e.size = meta.len();
    }
    if matches!(kind, Kind::Char | Kind::Block) {
        let rdev = meta.rdev();
        e.rdev = Some((libc::major(rdev), libc::minor(rdev)));
    }
    if kind == Kind::Symlink {
        let t =
            fs::read_link(full).map_err(|err| Error::io("reading link", full.display(), err))?;
        e.target = Some(Bytes(t.as_os_str().as_bytes().to_vec()));
    }
    e.xattrs = xattr::list(full)
        .map_err(|err| Error::io("reading xattrs of", full.display(), err))?
        .into_iter()
        .map(|(n, v)| (Bytes(n), Bytes(v)))
        .collect();
    Ok(Some(e))
}

/// One directory being walked: its children, sorted by name, each with its
/// `lstat` result (or the error), and how far the walk has come.
struct Frame {
    dir: PathBuf,
    rel: Vec<u8>,
    children: Vec<(Vec<u8>, std::io::Result<fs::Metadata>)>,
    next: usize,
}

/// The files-cache stamp of a regular file's `lstat`.
fn stamp_of(m: &fs::Metadata) -> FileStamp {
    FileStamp {
        ino: m.ino(),
        size: m.len(),
        mtime: (m.mtime(), m.mtime_nsec() as u32),
        ctime: (m.ctime(), m.ctime_nsec() as u32),
    }
}

fn frame(
    dir: PathBuf,
    rel: Vec<u8>,
    stats: &mut WalkStats,
    known: &dyn Fn(&FileStamp) -> bool,
) -> Result<Option<Frame>> {
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            stats.vanished += 1;
            return Ok(None);
        }
        Err(e) => return Err(Error::io("listing", dir.display(), e)),
    };
    let mut names = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| Error::io("listing", dir.display(), e))?;
        let ino = std::os::unix::fs::DirEntryExt::ino(&ent);
        names.push((ino, ent.file_name().as_bytes().to_vec()));
    }
    // Stat in inode order: on a cold cache that reads inode tables
    // sequentially instead of seeking for every name. Emit in name order.
    names.sort_unstable();
    let mut children: Vec<_> = names
        .into_iter()
        .map(|(_, name)| {
            let meta = fs::symlink_metadata(dir.join(std::ffi::OsStr::from_bytes(&name)));
            (name, meta)
        })
        .collect();
    children.sort_by(|a, b| a.0.cmp(&b.0));
    prefetch(&dir, &children, known);
    Ok(Some(Frame {
        dir,
        rel,
        children,
        next: 0,
    }))
}

/// How much file content one directory may ask the kernel to read ahead.
const PREFETCH_BYTES: u64 = 256 << 20;

/// Asks the kernel to start reading this directory's regular files
/// (`POSIX_FADV_WILLNEED`), so on a cold cache the disk works while the
/// capture chunks and hashes the previous file. Files whose content is
/// `known` (the files cache will reuse it) are not read at all: read-ahead
/// of them would make an unchanged re-capture read the whole tree.
fn prefetch(
    dir: &Path,
    children: &[(Vec<u8>, std::io::Result<fs::Metadata>)],
    known: &dyn Fn(&FileStamp) -> bool,
) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut budget = PREFETCH_BYTES;
    for (name, meta) in children {
        let Ok(m) = meta else { continue };
        if !m.is_file() || m.len() == 0 || m.len() > budget || known(&stamp_of(m)) {
            continue;
        }
        budget -= m.len();
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NOATIME)
            .open(dir.join(std::ffi::OsStr::from_bytes(name)));
        if let Ok(f) = f {
            // Advice only: failure changes nothing but speed.
            let _ = nix::fcntl::posix_fadvise(
                &f,
                0,
                0,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
            );
        }
    }
}

/// Walks `root`, calling `visit` for each entry in walk order. An explicit
/// stack of frames bounds memory by depth, not by thread stack size. Regular
/// files for which `known` says yes are not read ahead (see [`prefetch`]).
pub fn walk_dir(
    root: &Path,
    opts: &WalkOptions,
    known: &dyn Fn(&FileStamp) -> bool,
    visit: &mut dyn FnMut(Entry) -> Result<()>,
) -> Result<WalkStats> {
    let mut stats = WalkStats::default();
    let meta = fs::symlink_metadata(root).map_err(|e| Error::io("reading", root.display(), e))?;
    if !meta.is_dir() {
        return Err(Error::Source {
            path: root.display().to_string(),
            reason: "is not a directory".into(),
        });
    }
    let root_dev = meta.dev();
    let mut links: HashMap<(u64, u64), Bytes> = HashMap::new();
    visit(entry_of(root, b"", &meta)?.expect("a directory has an entry"))?;
    let mut stack: Vec<Frame> = frame(root.to_path_buf(), Vec::new(), &mut stats, known)?
        .into_iter()
        .collect();
    while let Some(top) = stack.last_mut() {
        let Some((name, meta)) = top.children.get_mut(top.next).map(|(n, m)| {
            let m = std::mem::replace(m, Err(std::io::Error::other("taken")));
            (n.clone(), m)
        }) else {
            stack.pop();
            continue;
        };
        top.next += 1;
        let mut rel = top.rel.clone();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(&name);
        if opts.excludes.iter().any(|p| glob_match(p.as_bytes(), &rel)) {
            stats.excluded += 1;
            continue;
        }
        let full = top.dir.join(std::ffi::OsStr::from_bytes(&name));
        let meta = match meta {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!("{} vanished during the capture", full.display());
                stats.vanished += 1;
                continue;
            }
            Err(e) => return Err(Error::io("reading", full.display(), e)),
        };
        let Some(mut e) = entry_of(&full, &rel, &meta)? else {
            stats.sockets += 1;
            continue;
        };
        if e.kind != Kind::Dir && meta.nlink() > 1 {
            match links.get(&(meta.dev(), meta.ino())) {
                Some(first) => e.hardlink = Some(first.clone()),
                None => {
                    links.insert((meta.dev(), meta.ino()), e.path.clone());
                }
            }
        }
        let descend = e.kind == Kind::Dir && (meta.dev() == root_dev || opts.cross_file_systems);
        if e.kind == Kind::Dir && !descend {
            stats.mounts += 1;
        }
        visit(e)?;
        if descend {
            if let Some(f) = frame(full, rel, &mut stats, known)? {
                stack.push(f);
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(b"proc/*", b"proc/1"));
        assert!(!glob_match(b"proc/*", b"proc"));
        assert!(!glob_match(b"proc/*", b"proc/1/status"));
        assert!(glob_match(b"*.log", b"a.log"));
        assert!(!glob_match(b"*.log", b"var/a.log"));
        assert!(glob_match(b"var/*/a?.log", b"var/x/ab.log"));
    }
}
