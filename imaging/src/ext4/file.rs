//! A regular file's content: its block runs read through the (journal
//! overlaid) source, holes and unwritten extents as zeros, or its inline
//! data.

use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::sync::Arc;

use super::blocks::Run;
use super::fault::Fault;
use super::raw::u64_of;
use super::source::{ReadAt, Source};

/// Where the bytes are.
enum Data {
    /// Mapped blocks (sorted by logical block; gaps are holes).
    Runs(Vec<Run>),
    /// Stored in the inode (`inline_data`), exactly `size` bytes.
    Inline(Vec<u8>),
}

/// A regular file's content, from [`super::Ext4Tree::open_file`]: `Read`
/// and `Seek` like a file, reading only the source's blocks.
pub struct Ext4File {
    src: Arc<Source>,
    data: Data,
    size: u64,
    block_size: u64,
    pos: u64,
    /// `source:/path` for messages.
    place: String,
}

impl Ext4File {
    /// A file of `size` bytes stored in `runs`.
    pub(crate) fn mapped(
        src: Arc<Source>,
        runs: Vec<Run>,
        size: u64,
        block_size: u64,
        place: String,
    ) -> Self {
        Ext4File {
            src,
            data: Data::Runs(runs),
            size,
            block_size,
            pos: 0,
            place,
        }
    }

    /// A file whose bytes are `data` (its whole content).
    pub(crate) fn inline(src: Arc<Source>, data: Vec<u8>, block_size: u64, place: String) -> Self {
        Ext4File {
            src,
            size: u64_of(data.len()),
            data: Data::Inline(data),
            block_size,
            pos: 0,
            place,
        }
    }

    /// The file's size in bytes.
    pub fn len(&self) -> u64 {
        self.size
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// The byte ranges that hold data, in order; everything else in
    /// `0..len()` is a hole (or preallocated but unwritten) and reads as
    /// zeros. Lets a capture store holes without reading them.
    pub fn data_ranges(&self) -> Vec<Range<u64>> {
        match &self.data {
            Data::Inline(_) if self.size == 0 => Vec::new(),
            Data::Inline(_) => std::iter::once(0..self.size).collect(),
            Data::Runs(runs) => {
                let mut out: Vec<Range<u64>> = Vec::new();
                for r in runs.iter().filter(|r| !r.unwritten) {
                    let start = r.logical * self.block_size;
                    let end = ((r.logical + r.len) * self.block_size).min(self.size);
                    if start >= end {
                        continue;
                    }
                    match out.last_mut() {
                        Some(last) if last.end == start => last.end = end,
                        _ => out.push(start..end),
                    }
                }
                out
            }
        }
    }
}

impl std::fmt::Debug for Ext4File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ext4File")
            .field("path", &self.place)
            .field("size", &self.size)
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl Read for Ext4File {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let left = self.size - self.pos;
        let want = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        let buf = &mut buf[..want];
        let n = match &self.data {
            Data::Inline(data) => {
                let at = usize::try_from(self.pos).expect("inline data is small");
                buf.copy_from_slice(&data[at..at + want]);
                want
            }
            Data::Runs(runs) => {
                let bs = self.block_size;
                let block = self.pos / bs;
                let i = runs.partition_point(|r| r.logical + r.len <= block);
                match runs.get(i) {
                    Some(r) if r.logical <= block => {
                        let run_end = (r.logical + r.len) * bs;
                        let n = usize::try_from(run_end - self.pos).map_or(want, |n| n.min(want));
                        if r.unwritten {
                            buf[..n].fill(0);
                        } else {
                            let off = r.physical * bs + (self.pos - r.logical * bs);
                            self.src.read_at(off, &mut buf[..n]).map_err(|f| match f {
                                Fault::Io { what, source } => io::Error::new(
                                    source.kind(),
                                    format!(
                                        "reading {} (byte {} of the file): {what}: {source}",
                                        self.place, self.pos
                                    ),
                                ),
                                Fault::Corrupt(m) | Fault::Unsupported(m) => {
                                    io::Error::other(format!("reading {}: {m}", self.place))
                                }
                            })?;
                        }
                        n
                    }
                    next => {
                        // A hole up to the next run (or the end).
                        let hole_end = next.map_or(self.size, |r| r.logical * bs);
                        let n = usize::try_from(hole_end - self.pos).map_or(want, |n| n.min(want));
                        buf[..n].fill(0);
                        n
                    }
                }
            }
        };
        self.pos += u64_of(n);
        Ok(n)
    }
}

impl Seek for Ext4File {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("seeking {}: position before the start", self.place),
            )),
        }
    }
}
