//! Chunk lists: the ordered content of one stream.
//!
//! A list is a run-length-compacted sequence of extents: a chunk repeated
//! `count` times, a hole of zeros, or an unused range (bytes the file system
//! does not use, whose content does not matter: not stored, read as zeros,
//! and not written by a restore to a block device). Lists are stored as their own objects,
//! outside the JSON manifest, so a manifest stays small however large the disk.
//!
//! Format, version 1 (little-endian), named by the BLAKE3 of its content:
//!
//! ```text
//! "FERRYLST" | version u32 = 1 | extent_count u64 | stream_len u64
//! extents    kind u8 (0 hole, 1 chunk, 2 unused) | 0 ×3 | count u32 | len u64 | chunk id [32] (zeros unless a chunk)
//! ```
//!
//! `len` is one chunk's length (or the hole's); an extent covers `len × count`
//! bytes. Decoding checks that the extents add up to `stream_len`.

use crate::binfmt::{write_header, DecodeError, Reader};
use crate::chunk::{ChunkId, MAX_CHUNK};

const MAGIC: &[u8; 8] = b"FERRYLST";
const VERSION: u32 = 1;
const EXTENT: usize = 48;

/// One run in a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extent {
    /// `len` zero bytes.
    Hole {
        /// bytes
        len: u64,
    },
    /// `len` bytes the file system does not use: their content does not
    /// matter. Read as zeros; a restore leaves them as they are on a block
    /// device and as holes in a file.
    Unused {
        /// bytes
        len: u64,
    },
    /// The chunk `id` of `len` bytes, `count` times in a row.
    Chunk {
        /// the chunk
        id: ChunkId,
        /// its raw length
        len: u32,
        /// repetitions, at least 1
        count: u32,
    },
}

impl Extent {
    /// Bytes covered.
    pub fn bytes(&self) -> u64 {
        match *self {
            Extent::Hole { len } | Extent::Unused { len } => len,
            Extent::Chunk { len, count, .. } => u64::from(len) * u64::from(count),
        }
    }
}

/// A decoded chunk list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChunkList {
    extents: Vec<Extent>,
    len: u64,
}

impl ChunkList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// The extents in order.
    pub fn extents(&self) -> &[Extent] {
        &self.extents
    }

    /// Stream length in bytes.
    pub fn stream_len(&self) -> u64 {
        self.len
    }

    /// Appends a hole, merging it with a preceding one.
    pub fn push_hole(&mut self, len: u64) {
        if len == 0 {
            return;
        }
        self.len += len;
        if let Some(Extent::Hole { len: prev }) = self.extents.last_mut() {
            *prev += len;
        } else {
            self.extents.push(Extent::Hole { len });
        }
    }

    /// Appends an unused range, merging it with a preceding one.
    pub fn push_unused(&mut self, len: u64) {
        if len == 0 {
            return;
        }
        self.len += len;
        if let Some(Extent::Unused { len: prev }) = self.extents.last_mut() {
            *prev += len;
        } else {
            self.extents.push(Extent::Unused { len });
        }
    }

    /// Appends a chunk, merging it with an identical predecessor.
    pub fn push_chunk(&mut self, id: ChunkId, len: u32) {
        self.len += u64::from(len);
        if let Some(Extent::Chunk { id: p, count, .. }) = self.extents.last_mut() {
            if *p == id && *count < u32::MAX {
                *count += 1;
                return;
            }
        }
        self.extents.push(Extent::Chunk { id, len, count: 1 });
    }

    /// Encodes as a list object.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(28 + self.extents.len() * EXTENT);
        write_header(&mut out, MAGIC, VERSION);
        out.extend_from_slice(&(self.extents.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        for e in &self.extents {
            let (kind, count, len, id) = match *e {
                Extent::Hole { len } => (0u8, 1u32, len, [0u8; 32]),
                Extent::Unused { len } => (2, 1, len, [0u8; 32]),
                Extent::Chunk { id, len, count } => (1, count, u64::from(len), id.0),
            };
            out.extend_from_slice(&[kind, 0, 0, 0]);
            out.extend_from_slice(&count.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&id);
        }
        out
    }

    /// Decodes a list object, checking every extent.
    pub fn decode(data: &[u8]) -> Result<ChunkList, DecodeError> {
        let mut r = Reader::new(data);
        r.header(MAGIC, "chunk list", VERSION)?;
        let count = r.u64()?;
        let declared = r.u64()?;
        let count = r.expect_records(count, EXTENT)?;
        let mut list = ChunkList {
            extents: Vec::with_capacity(count),
            len: 0,
        };
        for _ in 0..count {
            let at = r.offset();
            let kind = r.u8()?;
            r.take(3)?;
            let n = r.u32()?;
            let len = r.u64()?;
            let id = ChunkId(r.array()?);
            let extent = match kind {
                0 if n == 1 && len > 0 => Extent::Hole { len },
                2 if n == 1 && len > 0 => Extent::Unused { len },
                1 if n >= 1 && len > 0 && len <= MAX_CHUNK as u64 => Extent::Chunk {
                    id,
                    len: len as u32,
                    count: n,
                },
                _ => {
                    return Err(DecodeError::Invalid {
                        offset: at,
                        what: format!("extent kind {kind}, count {n}, length {len}"),
                    })
                }
            };
            list.len =
                list.len
                    .checked_add(extent.bytes())
                    .ok_or_else(|| DecodeError::Invalid {
                        offset: at,
                        what: "stream length overflows".into(),
                    })?;
            list.extents.push(extent);
        }
        r.finish()?;
        if list.len != declared {
            return Err(DecodeError::Invalid {
                offset: 20,
                what: format!(
                    "extents add up to {} bytes, header says {declared}",
                    list.len
                ),
            });
        }
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_length_compaction() {
        let mut l = ChunkList::new();
        let a = ChunkId([1; 32]);
        l.push_chunk(a, 100);
        l.push_chunk(a, 100);
        l.push_hole(4096);
        l.push_hole(4096);
        l.push_chunk(ChunkId([2; 32]), 7);
        l.push_unused(1 << 20);
        l.push_unused(4096);
        assert_eq!(
            l.extents(),
            &[
                Extent::Chunk {
                    id: a,
                    len: 100,
                    count: 2
                },
                Extent::Hole { len: 8192 },
                Extent::Chunk {
                    id: ChunkId([2; 32]),
                    len: 7,
                    count: 1
                },
                Extent::Unused {
                    len: (1 << 20) + 4096
                },
            ]
        );
        assert_eq!(l.stream_len(), 8399 + (1 << 20) + 4096);
        assert_eq!(ChunkList::decode(&l.encode()).expect("decodes"), l);
    }

    #[test]
    fn inconsistent_lists_are_refused() {
        let mut l = ChunkList::new();
        l.push_chunk(ChunkId([1; 32]), 100);
        let mut bytes = l.encode();
        bytes[20] = 99; // stream_len
        assert!(ChunkList::decode(&bytes).is_err());
        let mut bytes = l.encode();
        bytes[28 + 8..28 + 16].copy_from_slice(&(u64::MAX).to_le_bytes());
        assert!(ChunkList::decode(&bytes).is_err());
        assert!(ChunkList::decode(&l.encode()[..40]).is_err());
    }
}
