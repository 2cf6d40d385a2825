//! Deploy-time file trees: filling a fresh file system with the tree held
//! in an ext2/3/4 file system, typically one read straight from an image's
//! stored block stream.
//!
//! # Why derive the tree at deploy time
//!
//! A whole-server image stores each ext2/3/4 partition as a block stream of
//! its used blocks: exact, bootable as it is, and deduplicated against
//! every other capture. Usually the deploy writes that stream back. When
//! the target partition is *smaller* than the source, or the plan changes
//! the file-system type (ext4 to xfs), the blocks cannot be reused and the
//! deploy needs the file tree instead. Storing a second, file-tree copy of
//! every partition at capture time would double the capture's reading and
//! the library's metadata for a case most deploys never meet; the block
//! stream already holds the whole tree. So the tree is derived when it is
//! needed: [`crate::stream::StreamReader`] reads the stream from the
//! library by random access (no temp file: the agent runs in a RAM disk),
//! [`Ext4Tree::from_reader`] parses the file system through it, and
//! [`populate_from_ext4`] writes every entry into the mounted target.
//!
//! # Semantics
//!
//! Exactly those of a tree restore ([`crate::tree::restore`]), whose writer
//! this module shares: nothing is written outside the target (`openat2`
//! with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, final components never
//! followed), hard links, device nodes, FIFOs, symlinks, numeric owners,
//! `chown` before the mode so setuid bits survive, xattrs including
//! `security.capability` and POSIX ACLs, nanosecond mtimes, and directory
//! metadata last (deepest first), the root entry's onto the target itself.
//! Existing directories are merged into (a fresh file system's empty
//! `lost+found`); any other existing object of the same name is replaced.
//! Sockets are not copied; ext4 inode flags (`chattr`) are not either, as
//! the tree stream has no place for them.
//!
//! **Contents.** Each file is copied with reads of up to [`COPY_BUF`]
//! bytes, and only the byte ranges ext4 maps to written blocks: holes and
//! unwritten (preallocated) extents stay holes in the target. Every byte
//! of the source is verified on its way (each chunk against its BLAKE3 id
//! by the stream reader). Progress events count content bytes written
//! against the walk's total, as step `"populate"`.
//!
//! **Limits.** The walk's entries are held in memory (a few hundred bytes
//! per entry) while the target is written.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::ext4::Ext4Tree;
use crate::progress::ProgressSink;
use crate::tree::entry::Entry;
use crate::tree::restore::{write_tree, FileContent, TreeRestoreStats};

/// Bytes read from the source per call when copying a file: large enough
/// to span several chunks of a stored stream (64 KiB on average), small
/// enough for two workers in a RAM-disk agent.
pub const COPY_BUF: usize = 4 << 20;

/// What a populate did: entries created, files written, content bytes
/// written, warnings and wall time, as for a tree restore.
pub type PopulateStats = TreeRestoreStats;

/// Writes every entry of the ext2/3/4 file system `tree` into the existing
/// directory `dest` (normally the root of a freshly made, mounted file
/// system), with the semantics the module documents. Errors name the
/// source (`tree`'s name and the path in it) or the target path.
pub fn populate_from_ext4(
    tree: &Ext4Tree,
    dest: &Path,
    progress: &dyn ProgressSink,
) -> Result<PopulateStats> {
    let started = Instant::now();
    let mut entries: Vec<Entry> = Vec::new();
    tree.walk(&mut |e| {
        entries.push(e);
        Ok(())
    })?;
    let content = Ext4Content { tree };
    let mut stats = write_tree(&entries, dest, 0, &content, "populate", progress)?;
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(stats)
}

/// File contents read from an ext4 file system.
struct Ext4Content<'a> {
    tree: &'a Ext4Tree,
}

impl FileContent for Ext4Content<'_> {
    fn write(&self, file: &File, e: &Entry, shown: &str, written: &AtomicU64) -> Result<()> {
        let place = || format!("{}:/{}", self.tree.name(), e.path.display());
        let mut src = self.tree.open_inode(e.ino)?;
        if src.len() != e.size {
            return Err(Error::Corrupt {
                path: place(),
                reason: format!(
                    "inode {} holds {} bytes, its walk entry said {}",
                    e.ino,
                    src.len(),
                    e.size
                ),
            });
        }
        let mut buf = vec![0u8; COPY_BUF.min(usize::try_from(e.size).unwrap_or(COPY_BUF))];
        for range in src.data_ranges() {
            let mut pos = range.start;
            src.seek(SeekFrom::Start(pos))
                .map_err(|err| Error::io("seeking", place(), err))?;
            while pos < range.end {
                let n = usize::try_from(range.end - pos).map_or(buf.len(), |n| n.min(buf.len()));
                let piece = &mut buf[..n];
                src.read_exact(piece)
                    .map_err(|err| Error::io("reading", place(), err))?;
                file.write_all_at(piece, pos)
                    .map_err(|err| Error::io("writing", shown, err))?;
                written.fetch_add(n as u64, Ordering::Relaxed);
                pos += n as u64;
            }
        }
        Ok(())
    }
}
