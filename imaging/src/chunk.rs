//! Chunk identity, compression and the integrity types a chunk passes through.
//!
//! A chunk's id is the BLAKE3 hash of its *uncompressed* bytes. Stored chunks
//! are LZ4-compressed (lz4_flex block format) when that saves at least
//! [`MIN_SAVING`] of the raw size, and kept raw otherwise.
//!
//! Integrity lives in the types: bytes read from a library are a
//! [`StoredChunk`]; the only way to get a [`VerifiedChunk`] from it is
//! [`StoredChunk::verify`], which bounds the sizes, decompresses and checks the
//! hash. Restore writes only `VerifiedChunk`s to a target.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The largest raw chunk ferry will ever read or write. fastcdc's v2020 maximum
/// is 16 MiB; every length read from a library is checked against this before
/// anything is allocated.
pub const MAX_CHUNK: usize = 16 << 20;

/// Keep the LZ4 form only if it saves at least 1/16 (6.25 %) of the raw size:
/// below that, decompression costs more than the bytes saved.
pub const MIN_SAVING: usize = 16;

/// A 32-byte BLAKE3 hash naming a chunk or a library object.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

/// Objects (packs, index files, chunk lists) are named by the BLAKE3 of their
/// content, exactly like chunks.
pub type ObjectId = ChunkId;

impl ChunkId {
    /// The id of `data`.
    pub fn of(data: &[u8]) -> Self {
        ChunkId(*blake3::hash(data).as_bytes())
    }

    /// Lower-case hex form, as used in file names and manifests.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first eight bytes in hex, for compact messages.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..8])
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", self.short())
    }
}

/// Error for a string that is not 64 hex digits.
#[derive(Debug, thiserror::Error)]
#[error("not a 64-digit hex id: {0:?}")]
pub struct BadId(pub String);

impl FromStr for ChunkId {
    type Err = BadId;
    fn from_str(s: &str) -> Result<Self, BadId> {
        let mut out = [0u8; 32];
        if s.len() != 64 || hex::decode_to_slice(s, &mut out).is_err() {
            return Err(BadId(s.chars().take(80).collect()));
        }
        Ok(ChunkId(out))
    }
}

impl Serialize for ChunkId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ChunkId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How a chunk's bytes are stored in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Codec {
    /// Stored as is.
    Raw = 0,
    /// An lz4_flex block (no size prefix; the raw length is kept beside it).
    Lz4 = 1,
}

impl Codec {
    /// Parses the codec byte of a pack record or index entry.
    pub fn from_byte(b: u8) -> Option<Codec> {
        match b {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Lz4),
            _ => None,
        }
    }
}

/// A chunk whose bytes were hashed from data ferry read itself (a capture
/// source): its id is correct by construction.
#[derive(Debug)]
pub struct HashedChunk<'a> {
    /// BLAKE3 of `data`.
    pub id: ChunkId,
    /// The raw bytes.
    pub data: &'a [u8],
}

impl<'a> HashedChunk<'a> {
    /// Hashes `data`.
    pub fn new(data: &'a [u8]) -> Self {
        HashedChunk {
            id: ChunkId::of(data),
            data,
        }
    }

    /// Compresses the chunk for storage, keeping it raw when LZ4 does not pay.
    pub fn compress(&self) -> (Codec, Vec<u8>) {
        let mut out = Vec::new();
        let codec = self.compress_into(&mut out);
        (codec, out)
    }

    /// Appends the stored form to `out` and returns its codec.
    pub fn compress_into(&self, out: &mut Vec<u8>) -> Codec {
        let raw = self.data;
        let start = out.len();
        out.resize(
            start + lz4_flex::block::get_maximum_output_size(raw.len()),
            0,
        );
        match lz4_flex::block::compress_into(raw, &mut out[start..]) {
            Ok(n) if n <= raw.len() - raw.len() / MIN_SAVING => {
                out.truncate(start + n);
                Codec::Lz4
            }
            _ => {
                out.truncate(start);
                out.extend_from_slice(raw);
                Codec::Raw
            }
        }
    }
}

/// Chunk bytes as read from a library: not yet trusted.
#[derive(Debug)]
pub struct StoredChunk<'a> {
    /// The id the index or chunk list claims these bytes have.
    pub id: ChunkId,
    /// How `data` is encoded.
    pub codec: Codec,
    /// The raw length the index claims.
    pub raw_len: usize,
    /// The stored (possibly compressed) bytes.
    pub data: &'a [u8],
}

/// Why a stored chunk was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkFault {
    /// The claimed raw length is beyond [`MAX_CHUNK`] or zero.
    #[error("claimed raw length {0} is out of bounds (1..={MAX_CHUNK})")]
    RawLength(usize),
    /// A raw-codec chunk whose stored length differs from its raw length.
    #[error("stored length {stored} does not match raw length {raw} of an uncompressed chunk")]
    RawMismatch {
        /// bytes stored
        stored: usize,
        /// bytes claimed
        raw: usize,
    },
    /// LZ4 data that does not decode to exactly the claimed length.
    #[error("LZ4 data does not decode to {expected} bytes: {detail}")]
    Decompress {
        /// claimed raw length
        expected: usize,
        /// decoder message
        detail: String,
    },
    /// The decoded bytes hash to a different id.
    #[error("content hashes to {actual}, not to its id")]
    HashMismatch {
        /// what the bytes hash to
        actual: ChunkId,
    },
}

/// Chunk bytes whose BLAKE3 matched their id. Only these reach a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedChunk {
    id: ChunkId,
    data: Vec<u8>,
}

impl VerifiedChunk {
    /// The chunk's id.
    pub fn id(&self) -> ChunkId {
        self.id
    }
    /// The verified raw bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }
    /// Gives the buffer back, e.g. to reuse its allocation.
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }
}

impl StoredChunk<'_> {
    /// Decodes into `buf` (reusing its allocation) and checks the hash.
    pub fn verify_into(&self, mut buf: Vec<u8>) -> Result<VerifiedChunk, ChunkFault> {
        if self.raw_len == 0 || self.raw_len > MAX_CHUNK {
            return Err(ChunkFault::RawLength(self.raw_len));
        }
        buf.clear();
        match self.codec {
            Codec::Raw => {
                if self.data.len() != self.raw_len {
                    return Err(ChunkFault::RawMismatch {
                        stored: self.data.len(),
                        raw: self.raw_len,
                    });
                }
                buf.extend_from_slice(self.data);
            }
            Codec::Lz4 => {
                buf.resize(self.raw_len, 0);
                match lz4_flex::block::decompress_into(self.data, &mut buf) {
                    Ok(n) if n == self.raw_len => {}
                    Ok(n) => {
                        return Err(ChunkFault::Decompress {
                            expected: self.raw_len,
                            detail: format!("decoded {n} bytes"),
                        })
                    }
                    Err(e) => {
                        return Err(ChunkFault::Decompress {
                            expected: self.raw_len,
                            detail: e.to_string(),
                        })
                    }
                }
            }
        }
        let actual = ChunkId::of(&buf);
        if actual != self.id {
            return Err(ChunkFault::HashMismatch { actual });
        }
        Ok(VerifiedChunk {
            id: self.id,
            data: buf,
        })
    }

    /// Decodes into a fresh buffer and checks the hash.
    pub fn verify(&self) -> Result<VerifiedChunk, ChunkFault> {
        self.verify_into(Vec::new())
    }
}

/// True when every byte of `data` is zero. Written so the compiler vectorises it.
pub fn is_zero(data: &[u8]) -> bool {
    let mut blocks = data.chunks_exact(64);
    blocks.all(|b| b.iter().fold(0u8, |acc, &x| acc | x) == 0)
        && blocks.remainder().iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressible_chunk_round_trips() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 7) as u8).collect();
        let h = HashedChunk::new(&data);
        let (codec, stored) = h.compress();
        assert_eq!(codec, Codec::Lz4);
        assert!(stored.len() < data.len() / 4);
        let s = StoredChunk {
            id: h.id,
            codec,
            raw_len: data.len(),
            data: &stored,
        };
        assert_eq!(s.verify().expect("verifies").data(), &data[..]);
    }

    #[test]
    fn incompressible_chunk_is_stored_raw() {
        let mut x = 0x1234_5678_9abc_def0u64;
        let data: Vec<u8> = (0..50_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let (codec, stored) = HashedChunk::new(&data).compress();
        assert_eq!(codec, Codec::Raw);
        assert_eq!(stored, data);
    }

    #[test]
    fn flipped_byte_is_rejected() {
        let data = vec![7u8; 10_000];
        let h = HashedChunk::new(&data);
        let (codec, mut stored) = h.compress();
        let last = stored.len() - 1;
        stored[last] ^= 0x40;
        let s = StoredChunk {
            id: h.id,
            codec,
            raw_len: data.len(),
            data: &stored,
        };
        assert!(s.verify().is_err());
    }

    #[test]
    fn absurd_lengths_are_refused_before_allocating() {
        let s = StoredChunk {
            id: ChunkId([0; 32]),
            codec: Codec::Lz4,
            raw_len: usize::MAX,
            data: &[0x1f],
        };
        assert_eq!(s.verify(), Err(ChunkFault::RawLength(usize::MAX)));
    }

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0u8; 4096]));
        assert!(is_zero(&[]));
        let mut v = vec![0u8; 4099];
        v[4098] = 1;
        assert!(!is_zero(&v));
        v[4098] = 0;
        v[17] = 1;
        assert!(!is_zero(&v));
    }

    #[test]
    fn id_parses_its_hex() {
        let id = ChunkId::of(b"ferry");
        assert_eq!(id.to_hex().parse::<ChunkId>().expect("parses"), id);
        assert!("xyz".parse::<ChunkId>().is_err());
    }
}
