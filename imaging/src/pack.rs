//! Pack files: many compressed chunks appended into one object of about
//! [`PACK_TARGET`] bytes.
//!
//! Format, version 1 (all integers little-endian):
//!
//! ```text
//! header  "FERRYPAK" | version u32 = 1 | reserved u32 = 0           16 bytes
//! record  chunk id [32] | codec u8 | 0 u8 ×3 | raw_len u32 | stored_len u32 | data[stored_len]
//! ```
//!
//! codec: 0 raw, 1 LZ4 block, 2 zstd frame (only in libraries created with
//! zstd, config version 2; see [`crate::chunk`] for each stored form).
//!
//! A pack is named by the BLAKE3 of its whole content. Each record repeats
//! the chunk id, so a pack can be checked, and an index rebuilt, from the pack
//! alone. An index entry points at a record's first byte.

use crate::binfmt::{write_header, DecodeError, Reader};
use crate::chunk::{ChunkId, Codec, ObjectId, StoredChunk, MAX_CHUNK};

/// A pack is closed once it holds this many bytes: large enough for fast
/// sequential reads, small enough that ≤ 64 objects make a GiB on S3 and a
/// pack in the making is cheap to hold in memory.
pub const PACK_TARGET: usize = 16 << 20;

const MAGIC: &[u8; 8] = b"FERRYPAK";
const VERSION: u32 = 1;
/// Bytes before the first record.
pub const PACK_HEADER: usize = 16;
/// Bytes of a record before its data.
pub const RECORD_HEADER: usize = 44;

/// The largest stored form a chunk may have: LZ4's worst case for the largest
/// chunk (above zstd's, and a compressed form is kept only when smaller than
/// the raw chunk anyway). Any larger claimed length is refused before
/// allocation.
pub fn max_stored_len() -> usize {
    lz4_flex::block::get_maximum_output_size(MAX_CHUNK)
}

/// Where one record sits in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    /// The chunk's id.
    pub id: ChunkId,
    /// Offset of the record header in the pack.
    pub offset: u32,
    /// Bytes of stored data after the header.
    pub stored_len: u32,
    /// Uncompressed length.
    pub raw_len: u32,
    /// Encoding of the stored data.
    pub codec: Codec,
}

impl PackEntry {
    /// Bytes the whole record takes in the pack.
    pub fn record_len(&self) -> usize {
        RECORD_HEADER + self.stored_len as usize
    }
}

/// Builds a pack in memory.
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
}

impl Default for PackBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PackBuilder {
    /// An empty pack.
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(PACK_TARGET + RECORD_HEADER + MAX_CHUNK / 4);
        write_header(&mut buf, MAGIC, VERSION);
        buf.extend_from_slice(&0u32.to_le_bytes());
        PackBuilder {
            buf,
            entries: Vec::new(),
        }
    }

    /// Appends one chunk's stored form.
    pub fn add(&mut self, id: ChunkId, codec: Codec, raw_len: usize, stored: &[u8]) {
        let entry = PackEntry {
            id,
            offset: u32::try_from(self.buf.len()).expect("packs stay far below 4 GiB"),
            stored_len: u32::try_from(stored.len()).expect("chunks are at most 16 MiB"),
            raw_len: u32::try_from(raw_len).expect("chunks are at most 16 MiB"),
            codec,
        };
        self.buf.extend_from_slice(&id.0);
        self.buf.extend_from_slice(&[codec as u8, 0, 0, 0]);
        self.buf.extend_from_slice(&entry.raw_len.to_le_bytes());
        self.buf.extend_from_slice(&entry.stored_len.to_le_bytes());
        self.buf.extend_from_slice(stored);
        self.entries.push(entry);
    }

    /// Number of chunks so far.
    pub fn chunks(&self) -> usize {
        self.entries.len()
    }

    /// True once the pack should be closed.
    pub fn is_full(&self) -> bool {
        self.buf.len() >= PACK_TARGET
    }

    /// Closes the pack: its id, bytes and entries.
    pub fn finish(self) -> (ObjectId, Vec<u8>, Vec<PackEntry>) {
        (ChunkId::of(&self.buf), self.buf, self.entries)
    }
}

/// Decodes one record header and checks it against what the index said.
/// `record` holds exactly the record (header and data).
pub fn parse_record<'a>(
    record: &'a [u8],
    expect: &PackEntry,
) -> Result<StoredChunk<'a>, DecodeError> {
    let mut r = Reader::new(record);
    let (entry, data) = read_record(&mut r, expect.offset)?;
    if entry.id != expect.id
        || entry.raw_len != expect.raw_len
        || entry.stored_len != expect.stored_len
        || entry.codec != expect.codec
    {
        return Err(DecodeError::Invalid {
            offset: 0,
            what: format!(
                "record holds chunk {} ({} → {} bytes) where the index expects chunk {} ({} → {} bytes)",
                entry.id.short(),
                entry.raw_len,
                entry.stored_len,
                expect.id.short(),
                expect.raw_len,
                expect.stored_len
            ),
        });
    }
    r.finish()?;
    Ok(StoredChunk {
        id: entry.id,
        codec: entry.codec,
        raw_len: entry.raw_len as usize,
        data,
    })
}

fn read_record<'a>(r: &mut Reader<'a>, base: u32) -> Result<(PackEntry, &'a [u8]), DecodeError> {
    let at = r.offset();
    let id = ChunkId(r.array()?);
    let codec_byte = r.u8()?;
    let codec = Codec::from_byte(codec_byte).ok_or_else(|| DecodeError::Invalid {
        offset: at + 32,
        what: format!("unknown codec {codec_byte}"),
    })?;
    r.take(3)?;
    let raw_len = r.u32()?;
    let stored_len = r.u32()?;
    if raw_len == 0 || raw_len as usize > MAX_CHUNK || stored_len as usize > max_stored_len() {
        return Err(DecodeError::Invalid {
            offset: at + 36,
            what: format!("chunk lengths raw {raw_len}, stored {stored_len} are out of bounds"),
        });
    }
    let data = r.take(stored_len as usize)?;
    let offset = base
        .checked_add(at as u32)
        .ok_or_else(|| DecodeError::Invalid {
            offset: at,
            what: "record offset beyond 4 GiB".into(),
        })?;
    Ok((
        PackEntry {
            id,
            offset,
            stored_len,
            raw_len,
            codec,
        },
        data,
    ))
}

/// Walks a whole pack, returning each record's entry and stored data.
pub fn parse_pack(pack: &[u8]) -> Result<Vec<(PackEntry, &[u8])>, DecodeError> {
    let mut r = Reader::new(pack);
    r.header(MAGIC, "pack", VERSION)?;
    r.u32()?;
    let mut out = Vec::new();
    while r.remaining() > 0 {
        out.push(read_record(&mut r, 0)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::HashedChunk;

    #[test]
    fn pack_round_trip() {
        let mut b = PackBuilder::new();
        let chunks: Vec<Vec<u8>> = vec![vec![1u8; 5000], (0..=255u8).collect(), vec![9u8; 70_000]];
        for c in &chunks {
            let h = HashedChunk::new(c);
            let (codec, stored) = h.compress(crate::chunk::Compression::Lz4);
            b.add(h.id, codec, c.len(), &stored);
        }
        let (id, bytes, entries) = b.finish();
        assert_eq!(id, ChunkId::of(&bytes));
        let parsed = parse_pack(&bytes).expect("parses");
        assert_eq!(parsed.len(), 3);
        for ((e, _), (c, want)) in parsed.iter().zip(entries.iter().zip(&chunks)) {
            assert_eq!(e, c);
            let rec = &bytes[e.offset as usize..e.offset as usize + e.record_len()];
            let v = parse_record(rec, c)
                .expect("record")
                .verify()
                .expect("verifies");
            assert_eq!(v.data(), &want[..]);
        }
    }

    #[test]
    fn truncated_pack_is_an_error() {
        let mut b = PackBuilder::new();
        b.add(ChunkId::of(b"x"), Codec::Raw, 1, b"x");
        let (_, bytes, _) = b.finish();
        assert!(parse_pack(&bytes[..bytes.len() - 1]).is_err());
        assert!(parse_pack(&bytes[..10]).is_err());
    }

    #[test]
    fn record_for_another_chunk_is_refused() {
        let mut b = PackBuilder::new();
        b.add(ChunkId::of(b"x"), Codec::Raw, 1, b"x");
        let (_, bytes, entries) = b.finish();
        let mut wrong = entries[0];
        wrong.id = ChunkId::of(b"y");
        let rec = &bytes[PACK_HEADER..];
        assert!(parse_record(rec, &wrong).is_err());
    }
}
