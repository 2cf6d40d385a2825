//! Capturing an unmounted ext2/3/4 file system (a partition, or an image of
//! one) as a file tree, read directly with [`crate::ext4::Ext4Tree`]: the
//! source is opened read-only and never written, even with a dirty journal
//! (the journal is replayed in memory).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::chunker::{Batch, Chunker};
use crate::error::{Error, Result};
use crate::ext4::Ext4Tree;
use crate::manifest::FsInfo;
use crate::tree::capture::{Feeder, TreeSource};
use crate::tree::entry::{Entry, FileStamp};

/// Bytes read per call from a file.
const READ_SIZE: usize = 1 << 20;

/// An unmounted ext2/3/4 file system.
pub(crate) struct Ext4Source {
    path: PathBuf,
    uuid: String,
    label: String,
}

impl Ext4Source {
    /// Checks that `path` holds an ext2/3/4 file system and records its identity.
    pub(crate) fn open(path: &Path) -> Result<Ext4Source> {
        let tree = Ext4Tree::open(path, 0, None).map_err(|e| match e {
            Error::Corrupt { reason, .. } => Error::Source {
                path: path.display().to_string(),
                reason: format!(
                    "is neither a directory nor a readable ext2/3/4 file system ({reason})"
                ),
            },
            other => other,
        })?;
        Ok(Ext4Source {
            path: path.to_path_buf(),
            uuid: tree.uuid_string(),
            label: tree.label(),
        })
    }
}

impl TreeSource for Ext4Source {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }
    fn source_id(&self) -> String {
        format!("ext4:{}", self.uuid)
    }
    fn filesystem(&self) -> Option<FsInfo> {
        Some(FsInfo {
            kind: "ext4".into(),
            uuid: self.uuid.clone(),
            label: self.label.clone(),
        })
    }
    fn walk(
        &self,
        _known: &dyn Fn(&FileStamp) -> bool,
        visit: &mut dyn FnMut(Entry, &mut dyn Feeder) -> Result<()>,
    ) -> Result<()> {
        // Opened here, on the walking thread, with its own read state.
        let tree = Ext4Tree::open(&self.path, 0, None)?;
        let mut feeder = Ext4Feeder {
            tree: &tree,
            path: &self.path,
        };
        tree.walk(&mut |e| visit(e, &mut feeder))
    }
}

struct Ext4Feeder<'a> {
    tree: &'a Ext4Tree,
    path: &'a Path,
}

impl Feeder for Ext4Feeder<'_> {
    fn feed(
        &mut self,
        entry: &Entry,
        chunker: &mut Chunker,
        emit: &mut dyn FnMut(Batch),
        read: &AtomicU64,
    ) -> Result<()> {
        let mut file = self.tree.open_file(&entry.path.0)?;
        let mut buf = vec![0u8; READ_SIZE];
        let mut left = entry.size;
        while left > 0 {
            let want = READ_SIZE.min(left as usize);
            let n = file.read(&mut buf[..want]).map_err(|e| {
                Error::io(
                    "reading",
                    format!("{}:/{}", self.path.display(), entry.path.display()),
                    e,
                )
            })?;
            if n == 0 {
                return Err(Error::Corrupt {
                    path: format!("{}:/{}", self.path.display(), entry.path.display()),
                    reason: format!(
                        "file ends {left} bytes before its recorded size {}",
                        entry.size
                    ),
                });
            }
            chunker.feed(&buf[..n], emit);
            left -= n as u64;
            read.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(())
    }
}
