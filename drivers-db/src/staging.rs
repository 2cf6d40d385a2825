//! A kernel module tree being assembled from untrusted input (a package's
//! archive entries, a directory copied from another machine).
//!
//! [`TreeWriter`] writes below one root and nowhere else: paths must be
//! relative and made of plain components (no `..`, no absolute paths); no
//! write goes through a symbolic link (a parent that is a link is refused,
//! and a link in the file's own place is replaced, not followed); symbolic
//! links are recreated only when their target is relative and stays inside
//! the tree, read from the link's own directory; hard links only to files
//! already written. Links that do not qualify (a tree's `build ->
//! /usr/src/linux-headers-…`) and special files are skipped and listed.
//! Sizes are bounded per file and per tree.

use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

/// The largest single file accepted into a tree: 256 MiB.
pub const MAX_FILE_SIZE: u64 = 256 << 20;
/// The most a tree may hold in all: 4 GiB (Debian 6.1's is 390 MiB).
pub const MAX_TREE_SIZE: u64 = 4 << 30;

/// An entry that was not copied into the library, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The entry's path as the source names it.
    pub entry: String,
    /// Why it was left out.
    pub reason: String,
}

/// Why an entry could not be written.
#[derive(Debug)]
pub enum WriteError {
    /// The entry would escape the tree: refuse the whole source.
    Unsafe(String),
    /// The entry is too large, or the tree is.
    TooLarge(String),
    /// A file system operation failed.
    Io {
        /// What was being done.
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// Checks that `rel` is relative and made only of plain components
/// (`.` components are dropped); returns it cleaned.
pub fn safe_relative(rel: &Path) -> Result<PathBuf, String> {
    let mut clean = PathBuf::new();
    for component in rel.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("the path contains `..`".to_owned()),
            Component::RootDir | Component::Prefix(_) => {
                return Err("the path is absolute".to_owned())
            }
        }
    }
    Ok(clean)
}

/// Writes one tree under `root`, guarding every write (see the module
/// documentation).
#[derive(Debug)]
pub struct TreeWriter {
    root: PathBuf,
    written: u64,
    /// Entries left out.
    pub skipped: Vec<Skipped>,
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> WriteError {
    let path = path.to_path_buf();
    move |source| WriteError::Io {
        action,
        path,
        source,
    }
}

impl TreeWriter {
    /// Starts a tree at `root` (created if absent).
    pub fn new(root: PathBuf) -> Result<Self, WriteError> {
        fs::create_dir_all(&root).map_err(io_error("creating", &root))?;
        Ok(TreeWriter {
            root,
            written: 0,
            skipped: Vec::new(),
        })
    }

    /// The tree's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where `rel` goes, after checking that it is safe and that none of
    /// its parents inside the tree is a symbolic link; creates the parents.
    fn place(&self, rel: &Path) -> Result<PathBuf, WriteError> {
        let rel = safe_relative(rel).map_err(WriteError::Unsafe)?;
        let mut at = self.root.clone();
        let mut parts = rel.components().peekable();
        while let Some(part) = parts.next() {
            at.push(part);
            if parts.peek().is_none() {
                break;
            }
            match fs::symlink_metadata(&at) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(WriteError::Unsafe(format!(
                        "its parent {} is a symbolic link",
                        at.display()
                    )))
                }
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(WriteError::Unsafe(format!(
                        "its parent {} is not a directory",
                        at.display()
                    )))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&at).map_err(io_error("creating", &at))?;
                }
                Err(e) => return Err(io_error("inspecting", &at)(e)),
            }
        }
        Ok(at)
    }

    /// Removes whatever non-directory is at `path`, so that a new entry
    /// replaces it instead of writing through it.
    fn clear(path: &Path) -> Result<(), WriteError> {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => Err(WriteError::Unsafe(format!(
                "{} is already a directory",
                path.display()
            ))),
            Ok(_) => fs::remove_file(path).map_err(io_error("replacing", path)),
            Err(_) => Ok(()),
        }
    }

    /// Creates the directory `rel`.
    pub fn dir(&mut self, rel: &Path) -> Result<(), WriteError> {
        let path = self.place(rel)?;
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(WriteError::Unsafe(format!(
                "{} exists and is not a directory",
                path.display()
            ))),
            Err(_) => fs::create_dir(&path).map_err(io_error("creating", &path)),
        }
    }

    /// Writes the regular file `rel` from `contents`, which claims to hold
    /// `size` bytes; no more than that (and the limits) is written.
    pub fn file(&mut self, rel: &Path, size: u64, contents: impl Read) -> Result<(), WriteError> {
        if size > MAX_FILE_SIZE {
            return Err(WriteError::TooLarge(format!(
                "{} is {size} bytes, more than the {MAX_FILE_SIZE} accepted",
                rel.display()
            )));
        }
        if self.written.saturating_add(size) > MAX_TREE_SIZE {
            return Err(WriteError::TooLarge(format!(
                "the tree grows past {MAX_TREE_SIZE} bytes at {}",
                rel.display()
            )));
        }
        let path = self.place(rel)?;
        Self::clear(&path)?;
        let mut file = fs::File::create(&path).map_err(io_error("creating", &path))?;
        let copied =
            io::copy(&mut contents.take(size), &mut file).map_err(io_error("writing", &path))?;
        self.written += copied;
        Ok(())
    }

    /// Recreates the symbolic link `rel -> target` when the target stays
    /// inside the tree; records it as skipped otherwise.
    pub fn symlink(&mut self, rel: &Path, target: &Path) -> Result<(), WriteError> {
        if !Self::stays_inside(rel, target) {
            let why = format!("symbolic link to {} leaves the tree", target.display());
            return self.leave_out(rel, why);
        }
        let path = self.place(rel)?;
        Self::clear(&path)?;
        std::os::unix::fs::symlink(target, &path).map_err(io_error("linking", &path))
    }

    /// Whether `target`, read from the directory holding `rel`, names a
    /// path inside the tree (lexically; parents are never links, see
    /// [`Self::place`]).
    fn stays_inside(rel: &Path, target: &Path) -> bool {
        let mut depth: Vec<&std::ffi::OsStr> = Vec::new();
        for part in rel.parent().unwrap_or(Path::new("")).components() {
            match part {
                Component::Normal(p) => depth.push(p),
                Component::CurDir => {}
                _ => return false,
            }
        }
        for part in target.components() {
            match part {
                Component::Normal(p) => depth.push(p),
                Component::CurDir => {}
                Component::ParentDir => {
                    if depth.pop().is_none() {
                        return false;
                    }
                }
                Component::RootDir | Component::Prefix(_) => return false,
            }
        }
        true
    }

    /// Makes `rel` a hard link to the already-written regular file `target`
    /// (a path relative to the tree root); skips it otherwise.
    pub fn hard_link(&mut self, rel: &Path, target: &Path) -> Result<(), WriteError> {
        let existing = safe_relative(target)
            .map(|target| self.root.join(target))
            .ok()
            .filter(|existing| fs::symlink_metadata(existing).is_ok_and(|m| m.is_file()));
        let Some(existing) = existing else {
            let why = format!("hard link to {}, not a file of this tree", target.display());
            return self.leave_out(rel, why);
        };
        let path = self.place(rel)?;
        Self::clear(&path)?;
        fs::hard_link(&existing, &path).map_err(io_error("linking", &path))
    }

    /// Records an entry that is left out.
    pub fn skip(&mut self, rel: &Path, reason: String) {
        self.skipped.push(Skipped {
            entry: rel.display().to_string(),
            reason,
        });
    }

    /// [`Self::skip`], as the successful outcome of a write.
    fn leave_out(&mut self, rel: &Path, reason: String) -> Result<(), WriteError> {
        self.skip(rel, reason);
        Ok(())
    }

    /// Copies the directory `src` into the tree at `rel` (empty: the root),
    /// recursively, with the same guards as for archive entries.
    pub fn copy_dir(&mut self, src: &Path, rel: &Path) -> Result<(), WriteError> {
        let mut entries: Vec<fs::DirEntry> = fs::read_dir(src)
            .map_err(io_error("listing", src))?
            .collect::<Result<_, _>>()
            .map_err(io_error("listing", src))?;
        entries.sort_by_key(fs::DirEntry::file_name);
        for entry in entries {
            let from = entry.path();
            let to = rel.join(entry.file_name());
            let kind = entry.file_type().map_err(io_error("inspecting", &from))?;
            if kind.is_dir() {
                self.dir(&to)?;
                self.copy_dir(&from, &to)?;
            } else if kind.is_file() {
                let file = fs::File::open(&from).map_err(io_error("opening", &from))?;
                let size = file
                    .metadata()
                    .map_err(io_error("inspecting", &from))?
                    .len();
                self.file(&to, size, file)?;
            } else if kind.is_symlink() {
                let target = fs::read_link(&from).map_err(io_error("reading", &from))?;
                self.symlink(&to, &target)?;
            } else {
                self.skip(&to, "not a regular file, directory or link".to_owned());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> (tempfile::TempDir, TreeWriter) {
        let dir = tempfile::tempdir().expect("temp dir");
        let w = TreeWriter::new(dir.path().join("tree")).expect("writer");
        (dir, w)
    }

    #[test]
    fn refuses_escaping_paths() {
        let (dir, mut w) = writer();
        for bad in ["../x", "a/../../x", "/etc/passwd"] {
            let err = w.file(Path::new(bad), 1, &b"x"[..]).expect_err(bad);
            assert!(matches!(err, WriteError::Unsafe(_)), "{bad}: {err:?}");
        }
        assert!(!dir.path().join("x").exists());
        w.file(Path::new("./kernel/a.ko"), 3, &b"abcdef"[..])
            .expect("plain path");
        assert_eq!(
            fs::read(dir.path().join("tree/kernel/a.ko")).expect("written"),
            b"abc"
        );
    }

    #[test]
    fn links_stay_inside() {
        let (dir, mut w) = writer();
        w.file(Path::new("kernel/a.ko"), 1, &b"a"[..])
            .expect("file");
        w.symlink(Path::new("build"), Path::new("/usr/src/linux-headers"))
            .expect("skipped, not failed");
        w.symlink(Path::new("kernel/up"), Path::new("../../.."))
            .expect("skipped, not failed");
        w.symlink(Path::new("kernel/b.ko"), Path::new("a.ko"))
            .expect("inside");
        w.symlink(Path::new("sub"), Path::new("kernel"))
            .expect("inside");
        assert_eq!(w.skipped.len(), 2, "{:?}", w.skipped);
        assert!(!dir.path().join("tree/build").exists());
        // Nothing is written through a link, even one that stays inside.
        let err = w
            .file(Path::new("sub/c.ko"), 1, &b"c"[..])
            .expect_err("parent is a link");
        assert!(matches!(err, WriteError::Unsafe(_)), "{err:?}");
        // A file entry in a link's place replaces the link.
        w.symlink(Path::new("kernel/l"), Path::new("a.ko"))
            .expect("inside");
        w.file(Path::new("kernel/l"), 1, &b"l"[..])
            .expect("replace");
        assert_eq!(
            fs::read(dir.path().join("tree/kernel/a.ko")).expect("a"),
            b"a"
        );
        w.hard_link(Path::new("kernel/h.ko"), Path::new("kernel/a.ko"))
            .expect("hard link");
        w.hard_link(Path::new("kernel/i.ko"), Path::new("../outside"))
            .expect("skipped");
        assert_eq!(w.skipped.len(), 3, "{:?}", w.skipped);
    }

    #[test]
    fn sizes_are_bounded() {
        let (_dir, mut w) = writer();
        let err = w
            .file(Path::new("big"), MAX_FILE_SIZE + 1, io::empty())
            .expect_err("too big");
        assert!(matches!(err, WriteError::TooLarge(_)), "{err:?}");
    }
}
