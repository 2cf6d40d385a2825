//! The bytes of a file system: a file, block device, memory buffer or any
//! [`ByteSource`] (such as a stored block stream, [`crate::stream`]), a
//! byte range of it, and the journal's newer copies of blocks laid over it.
//!
//! Everything reads through [`ReadAt`] with positional reads (`pread`), so
//! nothing ever writes to or even seeks the source. The journal overlay
//! ([`Overlay`]) replaces whole file-system blocks with their newest
//! committed copy from the journal, exactly as recovery would write them,
//! but only in memory; every metadata and content read goes through it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::fault::{Fault, Parsed};
use super::raw::u64_of;

/// Positional reads of file-system bytes (offsets relative to the start of
/// the file system).
pub(crate) trait ReadAt {
    /// Fills `dst` from byte `off`, or fails naming the offset.
    fn read_at(&self, off: u64, dst: &mut [u8]) -> Parsed<()>;
}

/// Read-only positional access to bytes that hold a file system: what
/// [`super::Ext4Tree::from_reader`] reads through. Implemented by
/// [`crate::stream::StreamReader`] (an image's stored block stream); tests
/// and other callers can implement it over anything. Implementations must
/// not change the bytes they serve while a tree is open on them.
pub trait ByteSource: Send + Sync {
    /// Length in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` from byte `off`, or fails with an error that says what
    /// went wrong (a read past the end has kind `UnexpectedEof`).
    fn read_exact_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()>;
}

/// Where the bytes come from.
pub(crate) enum Backing {
    /// A file or block device opened read-only.
    File(File),
    /// A buffer in memory.
    Memory(Vec<u8>),
    /// Any other positional reader.
    Reader(Box<dyn ByteSource>),
}

/// A byte range of a backing store, with no journal applied.
pub(crate) struct RawSource {
    backing: Backing,
    /// Byte offset of the file system in the backing store.
    base: u64,
    /// Length of the file-system area.
    len: u64,
}

impl RawSource {
    /// `len` bytes of `backing` from byte `base`; the caller checked the range.
    pub(crate) fn new(backing: Backing, base: u64, len: u64) -> Self {
        RawSource { backing, base, len }
    }

    /// Length of the file-system area in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }
}

impl ReadAt for RawSource {
    fn read_at(&self, off: u64, dst: &mut [u8]) -> Parsed<()> {
        let n = dst.len();
        let what = || format!("{n} bytes at byte {off}");
        let end = off.checked_add(u64_of(dst.len()));
        if end.is_none_or(|end| end > self.len) {
            return Err(Fault::Io {
                what: what(),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "past the end of the file-system area ({} bytes); is the image truncated?",
                        self.len
                    ),
                ),
            });
        }
        let at = || {
            self.base.checked_add(off).ok_or_else(|| Fault::Io {
                what: what(),
                source: io::Error::from(io::ErrorKind::InvalidInput),
            })
        };
        let read = match &self.backing {
            Backing::File(f) => f.read_exact_at(dst, at()?),
            Backing::Reader(r) => r.read_exact_at(at()?, dst),
            Backing::Memory(m) => {
                let src = usize::try_from(off)
                    .ok()
                    .and_then(|s| Some(s..s.checked_add(dst.len())?))
                    .and_then(|r| m.get(r));
                match src {
                    Some(src) => {
                        dst.copy_from_slice(src);
                        Ok(())
                    }
                    None => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                }
            }
        };
        read.map_err(|source| Fault::Io {
            what: what(),
            source,
        })
    }
}

/// A newer copy of a file-system block, in the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct JournalCopy {
    /// Physical block (file-system block number) holding the copy.
    pub(crate) block: u64,
    /// jbd2 escaped the copy: its first four bytes were the journal magic
    /// and are stored as zeros.
    pub(crate) escaped: bool,
}

/// jbd2's block magic, restored at the start of escaped blocks.
pub(crate) const JBD2_MAGIC: u32 = 0xc03b_3998;

/// Journal copies laid over the file system.
#[derive(Default)]
pub(crate) struct Overlay {
    /// Block size of the file system.
    pub(crate) block_size: u64,
    /// File-system block → its newest committed copy in the journal.
    pub(crate) blocks: BTreeMap<u64, JournalCopy>,
}

/// The file system as recovery would leave it: raw bytes + overlay.
pub(crate) struct Source {
    raw: RawSource,
    overlay: Overlay,
}

impl Source {
    /// The raw source seen through `overlay`.
    pub(crate) fn new(raw: RawSource, overlay: Overlay) -> Self {
        Source { raw, overlay }
    }

    /// How many blocks the journal replaced.
    pub(crate) fn replayed_blocks(&self) -> usize {
        self.overlay.blocks.len()
    }

    fn read_overlaid(&self, off: u64, dst: &mut [u8]) -> Parsed<()> {
        let bs = self.overlay.block_size;
        if self.overlay.blocks.is_empty() || bs == 0 || dst.is_empty() {
            return self.raw.read_at(off, dst);
        }
        let len = u64_of(dst.len());
        let end = off.checked_add(len).ok_or_else(|| Fault::Io {
            what: format!("{len} bytes at byte {off}"),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
        let first = off / bs;
        let last = (end - 1) / bs;
        let mut pos = off;
        for (&blk, copy) in self.overlay.blocks.range(first..=last) {
            let blk_start = blk * bs;
            if pos < blk_start {
                self.raw.read_at(pos, sub(dst, off, pos, blk_start))?;
                pos = blk_start;
            }
            let piece_end = end.min(blk_start + bs);
            let within = pos - blk_start;
            let piece = sub(dst, off, pos, piece_end);
            self.raw.read_at(copy.block * bs + within, piece)?;
            if copy.escaped && within < 4 {
                let magic = JBD2_MAGIC.to_be_bytes();
                for (i, b) in piece.iter_mut().enumerate().take(4 - within as usize) {
                    *b = magic[within as usize + i];
                }
            }
            pos = piece_end;
        }
        if pos < end {
            self.raw.read_at(pos, sub(dst, off, pos, end))?;
        }
        Ok(())
    }
}

/// The part of `dst` (which starts at byte `base`) for bytes `from..to`.
fn sub(dst: &mut [u8], base: u64, from: u64, to: u64) -> &mut [u8] {
    let a = usize::try_from(from - base).expect("within a slice's length");
    let b = usize::try_from(to - base).expect("within a slice's length");
    &mut dst[a..b]
}

impl ReadAt for Source {
    fn read_at(&self, off: u64, dst: &mut [u8]) -> Parsed<()> {
        self.read_overlaid(off, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(blocks: &[(u64, u64, bool)]) -> Source {
        // 8 blocks of 1024 bytes; block i is filled with byte i.
        let data: Vec<u8> = (0..8u8).flat_map(|i| [i; 1024]).collect();
        let mut overlay = Overlay {
            block_size: 1024,
            ..Overlay::default()
        };
        for &(fs_block, copy, escaped) in blocks {
            overlay.blocks.insert(
                fs_block,
                JournalCopy {
                    block: copy,
                    escaped,
                },
            );
        }
        Source::new(RawSource::new(Backing::Memory(data), 0, 8192), overlay)
    }

    #[test]
    fn overlay_replaces_whole_blocks_across_a_read() {
        let s = source(&[(3, 6, false), (4, 7, false)]);
        let mut buf = vec![0u8; 3 * 1024];
        s.read_at(2 * 1024 + 512, &mut buf).expect("in range");
        assert!(buf[..512].iter().all(|&b| b == 2));
        assert!(buf[512..1536].iter().all(|&b| b == 6));
        assert!(buf[1536..2560].iter().all(|&b| b == 7));
        assert!(buf[2560..].iter().all(|&b| b == 5));
    }

    #[test]
    fn escaped_blocks_get_their_magic_back() {
        let s = source(&[(2, 5, true)]);
        let mut buf = [0u8; 6];
        s.read_at(2 * 1024 + 1, &mut buf).expect("in range");
        assert_eq!(&buf[..3], &JBD2_MAGIC.to_be_bytes()[1..]);
        assert_eq!(&buf[3..], &[5, 5, 5]);
    }

    #[test]
    fn bounds() {
        let s = source(&[]);
        let mut buf = [0u8; 4];
        assert!(s.read_at(8188, &mut buf).is_ok());
        assert!(s.read_at(8190, &mut buf).is_err());
        assert!(s.read_at(u64::MAX - 1, &mut buf).is_err());
    }
}
