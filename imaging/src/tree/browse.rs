//! Browsing a file-tree image without restoring it: list a directory, read
//! one file (its chunks fetched and verified on the way).

use std::io::Write;

use crate::error::{Error, Result};
use crate::library::Library;
use crate::manifest::Manifest;
use crate::tree::entry::{Entry, FileExtent, Kind};
use crate::tree::read::{parent, read_entries};

/// A path as given by a user (`/etc/fstab`, `etc/`, `/`) in tree form (`etc/fstab`, `etc`, ``).
pub fn tree_path(user: &str) -> Vec<u8> {
    user.trim_matches('/').as_bytes().to_vec()
}

fn tree_entries(lib: &Library, m: &Manifest) -> Result<Vec<Entry>> {
    let t = m.trees.first().ok_or_else(|| Error::Config {
        library: lib.location(),
        reason: format!("image {:?} holds no file tree", m.name),
    })?;
    read_entries(lib, &t.stream)
}

fn not_found(m: &Manifest, path: &[u8]) -> Error {
    Error::Config {
        library: String::new(),
        reason: format!(
            "image {:?} has no /{}",
            m.name,
            String::from_utf8_lossy(path)
        ),
    }
}

/// The entries directly inside `path` (or the entry itself, for a non-directory).
pub fn list(lib: &Library, name: &str, path: &[u8]) -> Result<Vec<Entry>> {
    let m = lib.manifest(name)?;
    let entries = tree_entries(lib, &m)?;
    let Some(me) = entries.iter().find(|e| e.path.0 == path) else {
        return Err(not_found(&m, path));
    };
    if me.kind != Kind::Dir {
        return Ok(vec![me.clone()]);
    }
    Ok(entries
        .into_iter()
        .filter(|e| !e.path.0.is_empty() && e.path.0 != path && parent(&e.path.0) == path)
        .collect())
}

/// Writes the content of the file at `path` to `out`; returns its size.
pub fn cat(lib: &Library, name: &str, path: &[u8], out: &mut dyn Write) -> Result<u64> {
    let m = lib.manifest(name)?;
    let entries = tree_entries(lib, &m)?;
    let mut e = entries
        .iter()
        .find(|e| e.path.0 == path)
        .ok_or_else(|| not_found(&m, path))?;
    if let Some(first) = &e.hardlink {
        e = entries
            .iter()
            .find(|x| x.path.0 == first.0)
            .ok_or_else(|| not_found(&m, &first.0))?;
    }
    if e.kind != Kind::File {
        return Err(Error::Config {
            library: lib.location(),
            reason: format!(
                "/{} in image {name:?} is a {:?}, not a regular file",
                e.path.display(),
                e.kind
            ),
        });
    }
    let index = lib.load_index()?;
    let to_io = |err: std::io::Error| Error::io("writing", "standard output", err);
    let zeros = [0u8; 64 << 10];
    for x in e.content.iter().flat_map(|c| &c.extents) {
        match *x {
            FileExtent::Chunk { id, .. } => {
                let loc = index.get(&id).ok_or_else(|| Error::MissingChunk {
                    id,
                    image: name.into(),
                })?;
                out.write_all(lib.read_chunk(&index, loc)?.data())
                    .map_err(to_io)?;
            }
            FileExtent::Hole { mut hole } => {
                while hole > 0 {
                    let n = hole.min(zeros.len() as u64) as usize;
                    out.write_all(&zeros[..n]).map_err(to_io)?;
                    hole -= n as u64;
                }
            }
        }
    }
    Ok(e.size)
}
