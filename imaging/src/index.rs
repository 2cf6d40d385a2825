//! The chunk index: where every stored chunk lives.
//!
//! The library's index is the union of its index files. A capture writes one
//! index file after its packs (and another every [`FLUSH_PACKS`] packs on long
//! captures); `gc` merges them into one. The same chunk may appear in several
//! files or packs: any of its locations is valid.
//!
//! Index file format, version 1 (little-endian), named by the BLAKE3 of its
//! content:
//!
//! ```text
//! "FERRYIDX" | version u32 = 1 | pack_count u32 | entry_count u64
//! pack ids   [32] × pack_count
//! entries    chunk id [32] | pack_no u32 | offset u32 | stored_len u32 | raw_len u32 | codec u8 | 0 ×3
//! ```
//!
//! codec is the pack record's: 0 raw, 1 LZ4, 2 zstd (see [`crate::pack`]).

use std::collections::HashMap;

use crate::binfmt::{write_header, DecodeError, Reader};
use crate::chunk::{ChunkId, Codec, ObjectId, MAX_CHUNK};
use crate::pack::{max_stored_len, PackEntry};

/// A long capture writes an index file after this many packs (512 MiB), so an
/// interrupted capture's chunks are found by the next one.
pub const FLUSH_PACKS: usize = 32;

const MAGIC: &[u8; 8] = b"FERRYIDX";
const VERSION: u32 = 1;
const ENTRY: usize = 52;

/// Where a chunk lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// The pack's number in [`Index::packs`].
    pub pack: u32,
    /// The record within the pack.
    pub entry: PackEntry,
}

/// The decoded content of index files: pack ids and chunk locations.
#[derive(Default, Debug, Clone)]
pub struct Index {
    packs: Vec<ObjectId>,
    pack_nos: HashMap<ObjectId, u32>,
    chunks: HashMap<ChunkId, Location>,
}

impl Index {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of chunks known.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// True if no chunk is known.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Where `id` is stored, if anywhere.
    pub fn get(&self, id: &ChunkId) -> Option<&Location> {
        self.chunks.get(id)
    }

    /// True if `id` is stored.
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.chunks.contains_key(id)
    }

    /// The id of pack number `no`.
    pub fn pack_id(&self, no: u32) -> ObjectId {
        self.packs[no as usize]
    }

    /// All packs the index refers to.
    pub fn packs(&self) -> &[ObjectId] {
        &self.packs
    }

    /// Every chunk and its location.
    pub fn iter(&self) -> impl Iterator<Item = (&ChunkId, &Location)> {
        self.chunks.iter()
    }

    fn pack_no(&mut self, pack: ObjectId) -> u32 {
        if let Some(&n) = self.pack_nos.get(&pack) {
            return n;
        }
        let n = u32::try_from(self.packs.len()).expect("fewer than 4 billion packs");
        self.packs.push(pack);
        self.pack_nos.insert(pack, n);
        n
    }

    /// Records the chunks of one pack. An already known chunk keeps its
    /// first location.
    pub fn add_pack(&mut self, pack: ObjectId, entries: &[PackEntry]) {
        let no = self.pack_no(pack);
        for e in entries {
            self.chunks.entry(e.id).or_insert(Location {
                pack: no,
                entry: *e,
            });
        }
    }

    /// Merges an index file's content.
    pub fn merge(&mut self, other: &Index) {
        for (id, loc) in &other.chunks {
            if !self.chunks.contains_key(id) {
                let no = self.pack_no(other.packs[loc.pack as usize]);
                self.chunks.insert(
                    *id,
                    Location {
                        pack: no,
                        entry: loc.entry,
                    },
                );
            }
        }
    }

    /// Encodes as an index file.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.packs.len() * 32 + self.chunks.len() * ENTRY);
        write_header(&mut out, MAGIC, VERSION);
        out.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.chunks.len() as u64).to_le_bytes());
        for p in &self.packs {
            out.extend_from_slice(&p.0);
        }
        // Sorted by pack and offset, so the file is deterministic and readers
        // walking it visit packs sequentially.
        let mut entries: Vec<&Location> = self.chunks.values().collect();
        entries.sort_by_key(|l| (l.pack, l.entry.offset));
        for l in entries {
            let e = &l.entry;
            out.extend_from_slice(&e.id.0);
            out.extend_from_slice(&l.pack.to_le_bytes());
            out.extend_from_slice(&e.offset.to_le_bytes());
            out.extend_from_slice(&e.stored_len.to_le_bytes());
            out.extend_from_slice(&e.raw_len.to_le_bytes());
            out.extend_from_slice(&[e.codec as u8, 0, 0, 0]);
        }
        out
    }

    /// Decodes an index file, checking every field's bounds.
    pub fn decode(data: &[u8]) -> Result<Index, DecodeError> {
        let mut r = Reader::new(data);
        r.header(MAGIC, "index", VERSION)?;
        let pack_count = r.u32()?;
        let entry_count = r.u64()?;
        let pack_count = r.expect_records(u64::from(pack_count), 32)?;
        let mut index = Index::new();
        for _ in 0..pack_count {
            index.pack_no(ChunkId(r.array()?));
        }
        if index.packs.len() != pack_count {
            return Err(DecodeError::Invalid {
                offset: 24,
                what: "a pack is listed twice".into(),
            });
        }
        let entry_count = r.expect_records(entry_count, ENTRY)?;
        index.chunks.reserve(entry_count);
        for _ in 0..entry_count {
            let at = r.offset();
            let id = ChunkId(r.array()?);
            let pack = r.u32()?;
            let offset = r.u32()?;
            let stored_len = r.u32()?;
            let raw_len = r.u32()?;
            let codec = r.u8()?;
            r.take(3)?;
            let codec = Codec::from_byte(codec);
            let bad = pack as usize >= pack_count
                || raw_len == 0
                || raw_len as usize > MAX_CHUNK
                || stored_len as usize > max_stored_len()
                || codec.is_none();
            let Some(codec) = codec.filter(|_| !bad) else {
                return Err(DecodeError::Invalid {
                    offset: at,
                    what: format!(
                        "entry for chunk {} has pack {pack}, lengths {raw_len}/{stored_len}",
                        id.short()
                    ),
                });
            };
            let entry = PackEntry {
                id,
                offset,
                stored_len,
                raw_len,
                codec,
            };
            index.chunks.entry(id).or_insert(Location { pack, entry });
        }
        r.finish()?;
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8, offset: u32) -> PackEntry {
        PackEntry {
            id: ChunkId([n; 32]),
            offset,
            stored_len: 10,
            raw_len: 20,
            codec: Codec::Lz4,
        }
    }

    #[test]
    fn index_round_trip() {
        let mut i = Index::new();
        i.add_pack(ChunkId([0xaa; 32]), &[entry(1, 16), entry(2, 70)]);
        i.add_pack(ChunkId([0xbb; 32]), &[entry(3, 16), entry(1, 70)]);
        let bytes = i.encode();
        let d = Index::decode(&bytes).expect("decodes");
        assert_eq!(d.len(), 3);
        assert_eq!(
            d.get(&ChunkId([1; 32])).map(|l| d.pack_id(l.pack)),
            Some(ChunkId([0xaa; 32]))
        );
        assert_eq!(d.encode(), bytes);
    }

    #[test]
    fn truncated_or_hostile_index_is_refused() {
        let mut i = Index::new();
        i.add_pack(ChunkId([0xaa; 32]), &[entry(1, 16)]);
        let bytes = i.encode();
        for cut in [0, 5, 23, 24 + 31, bytes.len() - 1] {
            assert!(Index::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = bytes.clone();
        huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Index::decode(&huge).is_err());
        let mut bad_pack = bytes.clone();
        bad_pack[24 + 32 + 32] = 7;
        assert!(Index::decode(&bad_pack).is_err());
    }
}
