//! Reading a file-tree stream back: the metadata stream's entries, checked
//! so that nothing in a damaged or hostile image can steer a restore.
//!
//! Checks: the first entry is the root directory; every path is relative,
//! made of non-empty components other than `.` and `..`, without NUL, and
//! unique; every entry's parent is a *directory entry that came earlier*
//! (so an image cannot plant a symlink and then write through it); a hard
//! link names an earlier non-directory; a file's extents add up to its size
//! with bounded chunk lengths; sizes of names, targets and xattrs are
//! bounded.

use std::collections::{HashMap, HashSet};

use crate::chunk::MAX_CHUNK;
use crate::chunklist::Extent;
use crate::error::{Error, Result};
use crate::library::Library;
use crate::manifest::TreeStream;
use crate::tree::entry::{Content, Entry, FileExtent, Kind};

/// Longest path accepted (Linux's PATH_MAX).
pub const MAX_PATH: usize = 4096;
/// Longest xattr value (XATTR_SIZE_MAX).
pub const MAX_XATTR: usize = 64 << 10;
/// Largest metadata stream read into memory.
pub const MAX_METADATA: u64 = 4 << 30;

/// Reads and checks every entry of a tree.
pub fn read_entries(lib: &Library, stream: &TreeStream) -> Result<Vec<Entry>> {
    let what = format!("file-tree metadata {}", stream.metadata.short());
    let list = lib.read_list(&stream.metadata)?;
    if list.stream_len() > MAX_METADATA {
        return Err(Error::Corrupt {
            path: what,
            reason: format!(
                "{} bytes of metadata is beyond the {MAX_METADATA}-byte limit",
                list.stream_len()
            ),
        });
    }
    let index = lib.load_index()?;
    let mut bytes = Vec::with_capacity(list.stream_len() as usize);
    for e in list.extents() {
        match *e {
            Extent::Hole { len } | Extent::Unused { len } => {
                bytes.resize(bytes.len() + len as usize, 0)
            }
            Extent::Chunk { id, count, .. } => {
                let loc = index.get(&id).ok_or_else(|| Error::MissingChunk {
                    id,
                    image: what.clone(),
                })?;
                let chunk = lib.read_chunk(&index, loc)?;
                for _ in 0..count {
                    bytes.extend_from_slice(chunk.data());
                }
            }
        }
    }
    parse_entries(&bytes).map_err(|reason| Error::Corrupt { path: what, reason })
}

/// Parses and checks JSON-lines metadata.
pub fn parse_entries(bytes: &[u8]) -> Result<Vec<Entry>, String> {
    let mut entries = Vec::new();
    let mut checker = Checker::default();
    for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let e: Entry =
            serde_json::from_slice(line).map_err(|err| format!("line {}: {err}", n + 1))?;
        checker
            .check(&e)
            .map_err(|err| format!("line {} ({:?}): {err}", n + 1, e.path.display()))?;
        entries.push(e);
    }
    if entries.is_empty() {
        return Err("no entries (not even the root)".into());
    }
    Ok(entries)
}

#[derive(Default)]
struct Checker {
    dirs: HashSet<Vec<u8>>,
    seen: HashSet<Vec<u8>>,
    /// Non-directory paths and whether they are regular files.
    linkable: HashMap<Vec<u8>, Kind>,
}

/// The parent of a relative path (`""` for top-level names).
pub fn parent(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[..i],
        None => b"",
    }
}

/// Checks that `path` is a clean relative path.
pub fn check_path(path: &[u8]) -> Result<(), String> {
    if path.len() > MAX_PATH {
        return Err(format!("path of {} bytes is too long", path.len()));
    }
    if path.contains(&0) {
        return Err("path contains NUL".into());
    }
    for c in path.split(|&b| b == b'/') {
        if c.is_empty() || c == b"." || c == b".." {
            return Err(
                "path is not a clean relative path (empty, `.` or `..` component, or absolute)"
                    .into(),
            );
        }
    }
    Ok(())
}

impl Checker {
    fn check(&mut self, e: &Entry) -> Result<(), String> {
        let p = &e.path.0;
        if self.seen.is_empty() {
            if !p.is_empty() || e.kind != Kind::Dir {
                return Err("the first entry must be the root directory".into());
            }
        } else {
            check_path(p)?;
            if !self.dirs.contains(parent(p)) {
                return Err("its parent is not a directory entry earlier in the image".into());
            }
        }
        if !self.seen.insert(p.clone()) {
            return Err("duplicate path".into());
        }
        if e.mode > 0o7777 {
            return Err(format!("mode {:o} has bits beyond 07777", e.mode));
        }
        for (name, value) in &e.xattrs {
            if name.0.is_empty()
                || name.0.len() > 255
                || name.0.contains(&0)
                || value.0.len() > MAX_XATTR
            {
                return Err("an xattr name or value is out of bounds".into());
            }
        }
        if let Some(first) = &e.hardlink {
            if e.kind == Kind::Dir || self.linkable.get(&first.0) != Some(&e.kind) {
                return Err(format!(
                    "hard link to {:?}, which is not an earlier entry of the same kind",
                    first.display()
                ));
            }
            if e.content.is_some() {
                return Err("a hard link carries no content".into());
            }
        }
        match e.kind {
            Kind::Dir => {
                self.dirs.insert(p.clone());
            }
            Kind::File if e.hardlink.is_none() => check_content(e.content.as_ref(), e.size)?,
            Kind::Symlink => match &e.target {
                Some(t) if !t.0.is_empty() && t.0.len() <= MAX_PATH && !t.0.contains(&0) => {}
                _ => return Err("a symlink needs a target of 1 to 4096 bytes without NUL".into()),
            },
            Kind::Char | Kind::Block if e.rdev.is_none() => {
                return Err("a device node needs a device number".into())
            }
            _ => {}
        }
        if e.kind != Kind::Dir && e.hardlink.is_none() {
            self.linkable.insert(p.clone(), e.kind);
        }
        Ok(())
    }
}

fn check_content(content: Option<&Content>, size: u64) -> Result<(), String> {
    let Some(c) = content else {
        return Err("a regular file has no content record".into());
    };
    let mut total = 0u64;
    for x in &c.extents {
        let n = match *x {
            FileExtent::Chunk { len, .. } if len > 0 && len as usize <= MAX_CHUNK => u64::from(len),
            FileExtent::Hole { hole } if hole > 0 => hole,
            _ => return Err("an extent has a zero or oversized length".into()),
        };
        total = total.checked_add(n).ok_or("extent lengths overflow")?;
    }
    if total != size {
        return Err(format!(
            "extents cover {total} bytes but the size is {size}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(entries: &[Entry]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in entries {
            out.extend(serde_json::to_vec(e).expect("serialises"));
            out.push(b'\n');
        }
        out
    }

    fn root() -> Entry {
        Entry::new("", Kind::Dir)
    }

    #[test]
    fn traversal_and_planted_symlinks_are_refused() {
        for bad in ["../etc/passwd", "/etc/passwd", "a/../../x", "a//b", "./a"] {
            let e = Entry::new(bad, Kind::Fifo);
            assert!(parse_entries(&lines(&[root(), e])).is_err(), "{bad}");
        }
        let mut link = Entry::new("a", Kind::Symlink);
        link.target = Some("/tmp".into());
        let through = Entry::new("a/evil", Kind::Fifo);
        let err =
            parse_entries(&lines(&[root(), link, through])).expect_err("write through a symlink");
        assert!(err.contains("parent"), "{err}");
    }

    #[test]
    fn sizes_must_add_up() {
        let mut f = Entry::new("f", Kind::File);
        f.size = u64::MAX;
        f.content = Some(Content {
            extents: vec![FileExtent::Hole { hole: 10 }],
        });
        assert!(parse_entries(&lines(&[root(), f.clone()])).is_err());
        f.size = 10;
        assert!(parse_entries(&lines(&[root(), f])).is_ok());
    }

    #[test]
    fn hard_links_must_point_back() {
        let mut l = Entry::new("l", Kind::File);
        l.hardlink = Some("f".into());
        assert!(parse_entries(&lines(&[root(), l.clone()])).is_err());
        let mut f = Entry::new("f", Kind::File);
        f.content = Some(Content::default());
        assert!(parse_entries(&lines(&[root(), f, l])).is_ok());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse_entries(b"").is_err());
        assert!(parse_entries(b"{not json\n").is_err());
        assert!(
            parse_entries(b"{\"path\":\"\",\"kind\":\"dir\"}\n").is_err(),
            "missing fields"
        );
    }
}
