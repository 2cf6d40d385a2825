//! Reading unmounted ext2/ext3/ext4 file systems with full metadata.
//!
//! [`Ext4Tree`] opens a file system in a partition, a disk image file or a
//! byte range of one, never writing to it (the source is opened
//! `O_RDONLY` and only read with `pread`), or in any [`ByteSource`] such
//! as an image's stored block stream ([`Ext4Tree::from_reader`] with a
//! [`crate::stream::StreamReader`]), and yields the tree as
//! [`Entry`] records with everything `lstat` + `llistxattr` would report:
//! type, permission bits, owner (32-bit ids), mtime and ctime with
//! nanoseconds and epoch bits, size, device numbers, symlink targets, hard
//! links, inode numbers and extended attributes, POSIX ACLs converted to
//! the kernel's xattr format. File contents come from
//! [`Ext4Tree::open_file`], with holes reported by
//! [`Ext4File::data_ranges`].
//!
//! # Why not ext4-view
//!
//! `ext4-view` 1.0 has no inode numbers, link counts, device numbers or
//! xattrs, and two defects ruled it out for contents too: it rejects every
//! inode with a timestamp before 1970 or after 2038-01-19 (its
//! `Timestamp::from_raw` does `i32::try_from(u32)`), so such files and
//! everything below such directories cannot be opened; and it sizes a
//! vector from `s_blocks_count_hi` even without the 64bit feature, so one
//! damaged byte aborts the process with a 56 GB allocation. So ferry
//! parses everything itself: superblock, group descriptors, inodes,
//! directories (linear scan, which covers htree directories), extent trees
//! and block maps, xattr areas, inline data, and the journal, verifying
//! metadata checksums where the file system has them.
//!
//! # Dirty journals
//!
//! When the file system needs recovery, `journal::replay` follows the
//! kernel's recovery over the journal and builds an in-memory overlay from
//! file-system block to the journal block with its newest committed copy.
//! `source::Source` applies it to every read, metadata and contents, so
//! the walk sees the file system exactly as after recovery, and the source
//! is never written.
//!
//! # Limits
//!
//! - Supported: ext2, ext3, ext4; 1-64 KiB blocks; extents and block maps;
//!   htree directories; `metadata_csum`; `bigalloc`; `meta_bg`;
//!   `inline_data`; `ea_inode`; 32-bit ids; nanosecond and post-2038
//!   timestamps.
//! - Refused with an error: encrypted inodes and, when the
//!   file system needs recovery, fast-commit journals and external journal
//!   devices. Casefolded directories are read with their names as stored.
//! - `Ext4Tree` and [`Ext4File`] are `Send`, and `Ext4Tree` is `Sync`:
//!   files can be read on several threads at once (positional reads).
//!
//! Errors name the source and path (`disk.img:/etc/passwd`) and, in the
//! reason, the inode, block and byte offset.

mod acl;
mod blocks;
mod crc32c;
mod dir;
mod fault;
mod file;
mod inode;
mod journal;
mod raw;
mod source;
mod superblock;
mod xattr;

use std::cell::Cell;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::tree::{Bytes, Entry, Kind};
use fault::{corrupt, unsupported, Fault, Parsed};
use inode::{flags, read_inode, Inode, I_BLOCK_LEN};
use source::{Backing, RawSource, ReadAt, Source};
use superblock::Superblock;

pub use file::Ext4File;
pub use source::ByteSource;

/// Symlink targets longer than this are refused (the kernel's `PATH_MAX`
/// including the terminating NUL).
const PATH_MAX: u64 = 4096;

/// A view of the file system's metadata for the parsers.
#[derive(Clone, Copy)]
pub(crate) struct Vol<'a> {
    /// The bytes.
    pub(crate) r: &'a dyn ReadAt,
    /// The superblock.
    pub(crate) sb: &'a Superblock,
    /// First block of each group's inode table.
    pub(crate) tables: &'a [u64],
}

/// How many metadata blocks (directory blocks, extent tree nodes,
/// indirect blocks) one walk may read. In a sound file system each
/// belongs to one inode and is read once, so the total stays below the
/// block count; a cross-linked one hits the limit and fails instead of
/// running (nearly) forever.
pub(crate) struct Budget {
    left: Cell<u64>,
    limit: u64,
}

impl Budget {
    /// A budget of `limit` blocks.
    pub(crate) fn new(limit: u64) -> Self {
        Budget {
            left: Cell::new(limit),
            limit,
        }
    }

    /// Charges `n` blocks read for inode `ino`.
    pub(crate) fn take(&self, n: u64, ino: u32) -> Parsed<()> {
        match self.left.get().checked_sub(n) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => corrupt!(
                "inode {ino}: the walk has read more metadata blocks ({}) than the file system holds; directories or extent trees are cross-linked",
                self.limit
            ),
        }
    }
}

/// An ext2/3/4 file system opened for reading.
pub struct Ext4Tree {
    /// The source for messages (`disk.img`, `disk.img@1048576`).
    name: String,
    src: Arc<Source>,
    sb: Superblock,
    tables: Vec<u64>,
    /// Directory listings along the last path `open_file` resolved, so
    /// opening files in walk order reads each directory once.
    lookups: Mutex<Vec<Listing>>,
}

/// A directory's entries, for path lookups.
struct Listing {
    /// The directory's path.
    path: Vec<u8>,
    entries: Vec<dir::DirEntry>,
}

impl std::fmt::Debug for Ext4Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ext4Tree")
            .field("source", &self.name)
            .field("blocks", &self.sb.blocks_count)
            .field("block_size", &self.sb.block_size)
            .field("replayed_journal_blocks", &self.src.replayed_blocks())
            .finish_non_exhaustive()
    }
}

impl Ext4Tree {
    /// Opens the file system in `path` (file or block device, opened
    /// `O_RDONLY`) starting at byte `offset`, `len` bytes long (None = to
    /// the end).
    pub fn open(path: &Path, offset: u64, len: Option<u64>) -> Result<Ext4Tree> {
        let shown = path.display().to_string();
        let file = open_read_only(path).map_err(|e| Error::io("opening", &shown, e))?;
        let size = (&file)
            .seek(SeekFrom::End(0))
            .map_err(|e| Error::io("finding the size of", &shown, e))?;
        let (name, len) = area(shown, size, offset, len)?;
        Self::build(RawSource::new(Backing::File(file), offset, len), name)
    }

    /// Opens the file system that `reader` holds from byte `offset`, `len`
    /// bytes long (None = to the end of the reader), for example an image's
    /// stored block stream read through a [`crate::stream::StreamReader`],
    /// so a tree can be read without restoring the stream first. `name`
    /// names the source in errors (`web01 disk 0`, shown with `@offset`
    /// when `offset` is not 0). Only positional reads are made.
    pub fn from_reader(
        name: &str,
        reader: Box<dyn ByteSource>,
        offset: u64,
        len: Option<u64>,
    ) -> Result<Ext4Tree> {
        let (name, len) = area(name.to_string(), reader.size(), offset, len)?;
        Self::build(RawSource::new(Backing::Reader(reader), offset, len), name)
    }

    /// The same over bytes in memory (for tests and the fuzzer).
    pub fn from_bytes(data: Vec<u8>) -> Result<Ext4Tree> {
        let len = raw::u64_of(data.len());
        Self::build(
            RawSource::new(Backing::Memory(data), 0, len),
            "<memory>".to_string(),
        )
    }

    fn build(raw: RawSource, name: String) -> Result<Ext4Tree> {
        let whole = |f: Fault| f.at(&name, None);
        let area = raw.len();
        let sb = read_superblock(&raw, area).map_err(whole)?;
        let tables = superblock::inode_tables(&raw, &sb, area).map_err(whole)?;
        let overlay = journal::replay(Vol {
            r: &raw,
            sb: &sb,
            tables: &tables,
        })
        .map_err(|f| f.context("replaying the journal").at(&name, None))?;
        let src = Source::new(raw, overlay);
        let (sb, tables) = if src.replayed_blocks() > 0 {
            // The journal may hold newer superblock and descriptor blocks.
            let newer = read_superblock(&src, area).map_err(whole)?;
            if !sb.same_geometry(&newer) {
                return Err(whole(Fault::Corrupt(
                    "the journal holds a superblock with a different geometry (an interrupted resize?)".into(),
                )));
            }
            let tables = superblock::inode_tables(&src, &newer, area).map_err(whole)?;
            (newer, tables)
        } else {
            (sb, tables)
        };
        Ok(Ext4Tree {
            name,
            src: Arc::new(src),
            sb,
            tables,
            lookups: Mutex::new(Vec::new()),
        })
    }

    fn vol(&self) -> Vol<'_> {
        Vol {
            r: &*self.src,
            sb: &self.sb,
            tables: &self.tables,
        }
    }

    /// The source's name in messages (`disk.img@1048576`, or the name given
    /// to [`Ext4Tree::from_reader`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// File-system UUID.
    pub fn uuid(&self) -> [u8; 16] {
        self.sb.uuid
    }

    /// File-system UUID as text (`8-4-4-4-12` lowercase hex), as `blkid`
    /// shows it and `mkfs -U` takes it.
    pub fn uuid_string(&self) -> String {
        let h = hex::encode(self.sb.uuid);
        [&h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]].join("-")
    }

    /// File-system label (lossy UTF-8, without trailing NULs).
    pub fn label(&self) -> String {
        self.sb.label_text()
    }

    /// How many blocks were taken from the journal because the file system
    /// was not cleanly unmounted (0 when clean).
    pub fn replayed_journal_blocks(&self) -> usize {
        self.src.replayed_blocks()
    }

    /// Walks the whole tree in the order [`crate::tree::entry`] documents
    /// (root `""` first, depth first, names sorted bytewise, a directory
    /// before its contents), calling `visit` for each entry. Sockets are
    /// skipped; `lost+found` is included like any directory. `content` is
    /// left `None`. Stops at the first error, from the file system or from
    /// `visit`.
    pub fn walk(&self, visit: &mut dyn FnMut(Entry) -> Result<()>) -> Result<()> {
        let v = self.vol();
        let budget = Budget::new(self.sb.blocks_count.saturating_mul(2).saturating_add(64));
        let at = |path: &[u8], f: Fault| f.at(&self.name, Some(path));
        let root = read_inode(v, 2).map_err(|f| at(b"", f))?;
        if root.kind().map_err(|f| at(b"", f))? != Some(Kind::Dir) {
            return Err(at(
                b"",
                Fault::Corrupt(format!(
                    "root inode 2 is not a directory (mode {:#o})",
                    root.mode
                )),
            ));
        }
        visit(
            self.entry(&root, Vec::new(), Kind::Dir, &budget)
                .map_err(|f| at(b"", f))?,
        )?;

        struct Frame {
            path: Vec<u8>,
            children: std::vec::IntoIter<dir::DirEntry>,
        }
        let mut dirs_seen: HashMap<u32, Vec<u8>> = HashMap::from([(2, Vec::new())]);
        let mut first_names: HashMap<u32, Vec<u8>> = HashMap::new();
        let mut stack = vec![Frame {
            path: Vec::new(),
            children: dir::read_dir(v, &root, &budget)
                .map_err(|f| at(b"", f))?
                .into_iter(),
        }];
        while let Some(frame) = stack.last_mut() {
            let Some(child) = frame.children.next() else {
                stack.pop();
                continue;
            };
            let mut path = frame.path.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&child.name);
            let inode = read_inode(v, child.ino).map_err(|f| at(&path, f))?;
            if inode.links == 0 {
                return Err(at(
                    &path,
                    Fault::Corrupt(format!(
                        "inode {} is deleted (link count 0) but still named by a directory",
                        inode.ino
                    )),
                ));
            }
            let Some(kind) = inode.kind().map_err(|f| at(&path, f))? else {
                continue; // sockets are not captured
            };
            if kind == Kind::Dir {
                if let Some(earlier) = dirs_seen.get(&inode.ino) {
                    return Err(at(&path, Fault::Corrupt(format!(
                        "directory inode {} is also named /{}: the tree has a cycle or a hard-linked directory",
                        inode.ino,
                        String::from_utf8_lossy(earlier)
                    ))));
                }
                dirs_seen.insert(inode.ino, path.clone());
                let children = dir::read_dir(v, &inode, &budget).map_err(|f| at(&path, f))?;
                visit(
                    self.entry(&inode, path.clone(), kind, &budget)
                        .map_err(|f| at(&path, f))?,
                )?;
                stack.push(Frame {
                    path,
                    children: children.into_iter(),
                });
                continue;
            }
            let mut entry = self
                .entry(&inode, path.clone(), kind, &budget)
                .map_err(|f| at(&path, f))?;
            if inode.links > 1 {
                match first_names.get(&inode.ino) {
                    Some(first) => entry.hardlink = Some(Bytes(first.clone())),
                    None => {
                        first_names.insert(inode.ino, path);
                    }
                }
            }
            visit(entry)?;
        }
        Ok(())
    }

    /// Builds the entry for `inode` at `path`.
    fn entry(&self, inode: &Inode, path: Vec<u8>, kind: Kind, budget: &Budget) -> Parsed<Entry> {
        if inode.has(flags::ENCRYPT) {
            return unsupported!("inode {} is encrypted", inode.ino);
        }
        let v = self.vol();
        let mut e = Entry::new(Bytes(path), kind);
        e.mode = u32::from(inode.mode) & 0o7777;
        e.uid = inode.uid;
        e.gid = inode.gid;
        (e.mtime, e.mtime_ns) = inode.mtime;
        (e.ctime, e.ctime_ns) = inode.ctime;
        e.ino = u64::from(inode.ino);
        match kind {
            Kind::File => {
                // ext4's limit: 2^32 logical blocks.
                if inode.size > (1u64 << 32) * self.sb.bs() {
                    return corrupt!(
                        "inode {}: size {} is beyond ext4's maximum",
                        inode.ino,
                        inode.size
                    );
                }
                e.size = inode.size;
            }
            Kind::Char | Kind::Block => e.rdev = Some(inode.rdev()),
            Kind::Symlink => e.target = Some(Bytes(self.symlink_target(inode, budget)?)),
            Kind::Dir | Kind::Fifo => {}
        }
        e.xattrs = xattr::read_xattrs(v, inode, budget)?
            .into_iter()
            .map(|(n, v)| (Bytes(n), Bytes(v)))
            .collect();
        Ok(e)
    }

    /// A symlink's target: in `i_block` for fast symlinks (no data blocks
    /// besides an xattr block), else in its first data block.
    fn symlink_target(&self, inode: &Inode, budget: &Budget) -> Parsed<Vec<u8>> {
        let ino = inode.ino;
        let size = inode.size;
        if size == 0 || size >= PATH_MAX || size > self.sb.bs() {
            return corrupt!("symlink inode {ino} has a target of {size} bytes");
        }
        let len = usize::try_from(size).expect("below PATH_MAX");
        let xattr_sectors = if inode.file_acl != 0 {
            self.sb.cluster_size / 512
        } else {
            0
        };
        let target = if inode.has(flags::INLINE_DATA) {
            let data = xattr::inline_data(inode)?;
            match data.get(..len) {
                Some(t) => t.to_vec(),
                None => {
                    return corrupt!(
                        "symlink inode {ino}: {size}-byte target, {} bytes inline",
                        data.len()
                    )
                }
            }
        } else if inode.sectors.saturating_sub(xattr_sectors) == 0 && !inode.has(flags::EXTENTS) {
            // A fast symlink: the target is in i_block.
            if len >= I_BLOCK_LEN {
                return corrupt!("fast symlink inode {ino} claims a {size}-byte target");
            }
            inode.i_block()[..len].to_vec()
        } else {
            let v = self.vol();
            let runs = blocks::runs(v, inode, 1, budget)?;
            let Some(run) = runs.first().filter(|r| r.logical == 0 && !r.unwritten) else {
                return corrupt!(
                    "symlink inode {ino} has no data block for its {size}-byte target"
                );
            };
            let mut buf = vec![0u8; len];
            let off = run.physical * self.sb.bs();
            v.r.read_at(off, &mut buf)
                .map_err(|f| f.context(format!("symlink inode {ino} (byte {off})")))?;
            buf
        };
        if target.contains(&0) {
            return corrupt!("symlink inode {ino} has a NUL byte in its target");
        }
        Ok(target)
    }

    /// Opens a regular file's content for reading, by the path given in its
    /// [`Entry`] (relative, `/`-separated; symlinks are not followed).
    /// Holes and unwritten extents read as zeros.
    pub fn open_file(&self, path: &[u8]) -> Result<Ext4File> {
        if path.is_empty()
            || path
                .split(|&b| b == b'/')
                .any(|c| c.is_empty() || c == b"." || c == b"..")
        {
            return Err(Error::Source {
                path: format!("{}:/{}", self.name, String::from_utf8_lossy(path)),
                reason: "not a path from the walk (empty, `.` or `..` components)".into(),
            });
        }
        let at = |f: Fault| f.at(&self.name, Some(path));
        let ino = self.lookup(path).map_err(at)?;
        self.open_ino(ino, path).map_err(at)
    }

    /// Opens the content of regular file inode `ino` (an [`Entry`]'s `ino`
    /// from this tree's walk): no path lookup.
    pub fn open_inode(&self, ino: u64) -> Result<Ext4File> {
        let shown = format!("<inode {ino}>");
        let at = |f: Fault| f.at(&self.name, Some(shown.as_bytes()));
        let ino = u32::try_from(ino).map_err(|_| {
            at(Fault::Corrupt(format!(
                "inode number {ino} is out of range"
            )))
        })?;
        if ino < self.sb.first_ino {
            return Err(at(Fault::Unsupported(format!(
                "inode {ino} is reserved, not a file"
            ))));
        }
        self.open_ino(ino, shown.as_bytes()).map_err(at)
    }

    fn open_ino(&self, ino: u32, path: &[u8]) -> Parsed<Ext4File> {
        let v = self.vol();
        let inode = read_inode(v, ino)?;
        if inode.kind()? != Some(Kind::File) {
            return unsupported!("inode {ino} is not a regular file (mode {:#o})", inode.mode);
        }
        if inode.has(flags::ENCRYPT) {
            return unsupported!("inode {ino} is encrypted");
        }
        let place = format!("{}:/{}", self.name, String::from_utf8_lossy(path));
        if inode.has(flags::INLINE_DATA) {
            let mut data = xattr::inline_data(&inode)?;
            let Some(size) = usize::try_from(inode.size)
                .ok()
                .filter(|&s| s <= data.len())
            else {
                return corrupt!(
                    "inode {ino}: size {} but only {} bytes of inline data",
                    inode.size,
                    data.len()
                );
            };
            data.truncate(size);
            return Ok(Ext4File::inline(
                Arc::clone(&self.src),
                data,
                self.sb.bs(),
                place,
            ));
        }
        if inode.size > (1u64 << 32) * self.sb.bs() {
            return corrupt!("inode {ino}: size {} is beyond ext4's maximum", inode.size);
        }
        let budget = Budget::new(self.sb.blocks_count.saturating_add(64));
        let runs = blocks::runs(v, &inode, inode.size.div_ceil(self.sb.bs()), &budget)?;
        Ok(Ext4File::mapped(
            Arc::clone(&self.src),
            runs,
            inode.size,
            self.sb.bs(),
            place,
        ))
    }

    /// Finds the inode `path` names, reusing the directory listings of the
    /// previous lookup where the paths share a prefix.
    fn lookup(&self, path: &[u8]) -> Parsed<u32> {
        let v = self.vol();
        let budget = Budget::new(self.sb.blocks_count.saturating_add(64));
        // A panic elsewhere cannot leave a listing half-built (they are
        // pushed whole), so a poisoned cache is still sound.
        let mut cache = self.lookups.lock().unwrap_or_else(|p| p.into_inner());
        let names: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
        let mut dir_path: Vec<u8> = Vec::new();
        let mut ino = 2u32;
        for (depth, name) in names.iter().enumerate() {
            // cache[depth] must list the directory at `dir_path`.
            if cache.get(depth).is_none_or(|l| l.path != dir_path) {
                cache.truncate(depth);
                let dir = read_inode(v, ino)?;
                if dir.kind()? != Some(Kind::Dir) {
                    return unsupported!(
                        "/{} (inode {ino}) is not a directory",
                        String::from_utf8_lossy(&dir_path)
                    );
                }
                cache.push(Listing {
                    path: dir_path.clone(),
                    entries: dir::read_dir(v, &dir, &budget)?,
                });
            }
            let entries = &cache[depth].entries;
            let Ok(i) = entries.binary_search_by(|e| e.name.as_slice().cmp(name)) else {
                return unsupported!(
                    "no entry {:?} in /{}",
                    String::from_utf8_lossy(name),
                    String::from_utf8_lossy(&dir_path)
                );
            };
            ino = entries[i].ino;
            if !dir_path.is_empty() {
                dir_path.push(b'/');
            }
            dir_path.extend_from_slice(name);
        }
        Ok(ino)
    }
}

/// Checks that `len` bytes (None = all) from `offset` lie within a source
/// of `size` bytes called `shown`; returns the name for messages
/// (`shown@offset`) and the length.
fn area(shown: String, size: u64, offset: u64, len: Option<u64>) -> Result<(String, u64)> {
    let avail = size.checked_sub(offset).ok_or_else(|| Error::Source {
        path: shown.clone(),
        reason: format!("offset {offset} is past its end ({size} bytes)"),
    })?;
    let len = match len {
        None => avail,
        Some(l) if l <= avail => l,
        Some(l) => {
            return Err(Error::Source {
                path: shown,
                reason: format!("{l} bytes from offset {offset} run past its end ({size} bytes)"),
            })
        }
    };
    let name = if offset == 0 {
        shown
    } else {
        format!("{shown}@{offset}")
    };
    Ok((name, len))
}

/// Opens read-only, with `O_NOATIME` where permitted so reading an image
/// file does not even touch its access time.
fn open_read_only(path: &Path) -> io::Result<File> {
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(path)
    {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => File::open(path),
        other => other,
    }
}

/// Reads and parses the superblock at byte 1024.
fn read_superblock(r: &dyn ReadAt, area: u64) -> Parsed<Superblock> {
    let mut raw = vec![0u8; 1024];
    r.read_at(1024, &mut raw)
        .map_err(|f| f.context("reading the superblock"))?;
    Superblock::parse(&raw, area)
}
