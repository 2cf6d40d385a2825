//! Chunk identity, compression and the integrity types a chunk passes through.
//!
//! A chunk's id is the BLAKE3 hash of its *uncompressed* bytes. Each stored
//! chunk records its [`Codec`]: a new chunk is compressed with the library's
//! [`Compression`] (LZ4, the default, or zstd at a chosen level) when that
//! saves at least 1/[`MIN_SAVING`] of the raw size, and kept raw otherwise.
//! The codec is per chunk, so readers decode any mix; the id does not depend
//! on it, so chunks dedup the same whatever the codec.
//!
//! Stored forms: raw bytes (codec 0); an lz4_flex block without size prefix
//! (codec 1); one zstd frame (RFC 8878) with its content size in the header,
//! no checksum (BLAKE3 covers it) and nothing after it (codec 2).
//!
//! Integrity lives in the types: bytes read from a library are a
//! [`StoredChunk`]; the only way to get a [`VerifiedChunk`] from it is
//! [`StoredChunk::verify`], which bounds the sizes, decompresses and checks the
//! hash. Restore writes only `VerifiedChunk`s to a target. No length read from
//! a library sizes an allocation before it is checked against the index's raw
//! length, itself at most [`MAX_CHUNK`]: a zstd frame whose header claims any
//! other content size is refused before it is decoded.

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The largest raw chunk ferry will ever read or write. fastcdc's v2020 maximum
/// is 16 MiB; every length read from a library is checked against this before
/// anything is allocated.
pub const MAX_CHUNK: usize = 16 << 20;

/// Keep a compressed form only if it saves at least 1/16 (6.25 %) of the raw
/// size: below that, decompression costs more than the bytes saved.
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
    /// One zstd frame holding its content size (libraries created with
    /// [`Compression::Zstd`]).
    Zstd = 2,
}

impl Codec {
    /// Parses the codec byte of a pack record or index entry.
    pub fn from_byte(b: u8) -> Option<Codec> {
        match b {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Lz4),
            2 => Some(Codec::Zstd),
            _ => None,
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Codec::Raw => "uncompressed",
            Codec::Lz4 => "LZ4",
            Codec::Zstd => "zstd",
        })
    }
}

/// How captures into a library compress new chunks. A library's setting,
/// chosen when it is created (see [`crate::library`]); written `lz4`,
/// `zstd` or `zstd:LEVEL`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// LZ4 (lz4_flex): the default, fastest to write and to read.
    #[default]
    Lz4,
    /// zstd at `level` (one of [`Compression::ZSTD_LEVELS`]): fewer bytes
    /// stored, slower to write.
    Zstd {
        /// The zstd compression level.
        level: i32,
    },
}

impl Compression {
    /// The zstd level `zstd` alone means.
    pub const ZSTD_DEFAULT_LEVEL: i32 = 3;
    /// The zstd levels a library may use: zstd's own without `--ultra`. The
    /// negative (fast) levels are left out: LZ4 is the fast choice.
    pub const ZSTD_LEVELS: std::ops::RangeInclusive<i32> = 1..=19;

    /// True for the default, LZ4.
    pub fn is_lz4(&self) -> bool {
        *self == Compression::Lz4
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::Lz4 => f.write_str("lz4"),
            Compression::Zstd { level } => write!(f, "zstd:{level}"),
        }
    }
}

/// Error for a compression setting that is not `lz4`, `zstd` or `zstd:LEVEL`.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown compression {0:?}: use lz4, zstd (level {lvl}) or zstd:LEVEL with LEVEL from {lo} to {hi}",
    lvl = Compression::ZSTD_DEFAULT_LEVEL,
    lo = Compression::ZSTD_LEVELS.start(),
    hi = Compression::ZSTD_LEVELS.end()
)]
pub struct BadCompression(pub String);

impl FromStr for Compression {
    type Err = BadCompression;
    fn from_str(s: &str) -> Result<Self, BadCompression> {
        let bad = || BadCompression(s.chars().take(80).collect());
        match s.split_once(':') {
            None if s == "lz4" => Ok(Compression::Lz4),
            None if s == "zstd" => Ok(Compression::Zstd {
                level: Compression::ZSTD_DEFAULT_LEVEL,
            }),
            Some(("zstd", level)) => match level.parse() {
                Ok(level) if Compression::ZSTD_LEVELS.contains(&level) => {
                    Ok(Compression::Zstd { level })
                }
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

impl Serialize for Compression {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Compression {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

thread_local! {
    // libzstd contexts are costly to make (hundreds of KiB each); every
    // capture worker and restore worker keeps one of each it uses.
    static ZSTD_ENCODER: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static ZSTD_DECODER: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// zstd-compresses `raw` into `dst` (at least `compress_bound` long); `None`
/// if libzstd fails (it cannot, short of memory: the chunk then stays raw).
fn zstd_compress(level: i32, raw: &[u8], dst: &mut [u8]) -> Option<usize> {
    ZSTD_ENCODER.with_borrow_mut(|slot| {
        if !matches!(slot, Some((l, _)) if *l == level) {
            let mut c = zstd::bulk::Compressor::new(level).ok()?;
            // The decoder checks the content size against the index before
            // decoding; the checksum would repeat what BLAKE3 checks.
            c.set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(true))
                .ok()?;
            c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(false))
                .ok()?;
            *slot = Some((level, c));
        }
        let (_, c) = slot.as_mut()?;
        c.compress_to_buffer(raw, dst).ok()
    })
}

/// Checks that `frame` is one whole zstd frame whose header claims exactly
/// `raw_len` bytes, so that nothing is allocated or decoded on the word of
/// a damaged or hostile header.
fn zstd_check_frame(frame: &[u8], raw_len: usize) -> Result<(), String> {
    use zstd::zstd_safe;
    match zstd_safe::get_frame_content_size(frame) {
        Ok(Some(n)) if n == raw_len as u64 => {}
        Ok(Some(n)) => return Err(format!("its frame header claims {n} bytes")),
        Ok(None) => return Err("its frame header gives no content size".into()),
        Err(_) => return Err("it does not start with a zstd frame header".into()),
    }
    match zstd_safe::find_frame_compressed_size(frame) {
        Ok(n) if n == frame.len() => Ok(()),
        Ok(n) => Err(format!(
            "{} bytes follow its frame of {n} bytes",
            frame.len() - n
        )),
        Err(code) => Err(format!(
            "its frame is truncated or damaged ({})",
            zstd_safe::get_error_name(code)
        )),
    }
}

/// Decodes the zstd frame `frame`, checked by [`zstd_check_frame`], into
/// `dst`, which is exactly its content size.
fn zstd_decompress(frame: &[u8], dst: &mut [u8]) -> Result<(), String> {
    ZSTD_DECODER.with_borrow_mut(|slot| {
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?);
        }
        let d = slot.as_mut().expect("the decoder was just made");
        match d.decompress_to_buffer(frame, dst) {
            Ok(n) if n == dst.len() => Ok(()),
            Ok(n) => Err(format!("decoded {n} bytes")),
            Err(e) => Err(e.to_string()),
        }
    })
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

    /// Compresses the chunk for storage, keeping it raw when compression
    /// does not pay.
    pub fn compress(&self, compression: Compression) -> (Codec, Vec<u8>) {
        let mut out = Vec::new();
        let codec = self.compress_into(&mut out, compression);
        (codec, out)
    }

    /// Appends the stored form to `out` and returns its codec.
    pub fn compress_into(&self, out: &mut Vec<u8>, compression: Compression) -> Codec {
        let raw = self.data;
        let start = out.len();
        let (codec, n) = match compression {
            Compression::Lz4 => {
                out.resize(
                    start + lz4_flex::block::get_maximum_output_size(raw.len()),
                    0,
                );
                let n = lz4_flex::block::compress_into(raw, &mut out[start..]).ok();
                (Codec::Lz4, n)
            }
            Compression::Zstd { level } => {
                out.resize(start + zstd::zstd_safe::compress_bound(raw.len()), 0);
                (Codec::Zstd, zstd_compress(level, raw, &mut out[start..]))
            }
        };
        match n {
            Some(n) if n <= raw.len() - raw.len() / MIN_SAVING => {
                out.truncate(start + n);
                codec
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
    /// Compressed data that does not decode to exactly the claimed length.
    #[error("{codec} data does not decode to {expected} bytes: {detail}")]
    Decompress {
        /// how the data is stored
        codec: Codec,
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
                let detail = match lz4_flex::block::decompress_into(self.data, &mut buf) {
                    Ok(n) if n == self.raw_len => None,
                    Ok(n) => Some(format!("decoded {n} bytes")),
                    Err(e) => Some(e.to_string()),
                };
                if let Some(detail) = detail {
                    return Err(self.undecodable(detail));
                }
            }
            Codec::Zstd => {
                zstd_check_frame(self.data, self.raw_len).map_err(|d| self.undecodable(d))?;
                buf.resize(self.raw_len, 0);
                zstd_decompress(self.data, &mut buf).map_err(|d| self.undecodable(d))?;
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

    fn undecodable(&self, detail: String) -> ChunkFault {
        ChunkFault::Decompress {
            codec: self.codec,
            expected: self.raw_len,
            detail,
        }
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
        let (codec, stored) = h.compress(Compression::Lz4);
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
        for c in [Compression::Lz4, Compression::Zstd { level: 3 }] {
            let (codec, stored) = HashedChunk::new(&data).compress(c);
            assert_eq!(codec, Codec::Raw, "{c}");
            assert_eq!(stored, data, "{c}");
        }
    }

    #[test]
    fn flipped_byte_is_rejected() {
        let data = vec![7u8; 10_000];
        let h = HashedChunk::new(&data);
        let (codec, mut stored) = h.compress(Compression::Lz4);
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
    /// Text-like bytes that every codec compresses.
    fn text(len: usize) -> Vec<u8> {
        let words = ["chunk ", "pack ", "index ", "ferry ", "the ", "disk\n"];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut out = Vec::new();
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(words[(x % 6) as usize].as_bytes());
        }
        out.truncate(len);
        out
    }

    /// A chunk stored with zstd at `level`, and its stored form.
    fn zstd_stored(data: &[u8], level: i32) -> (ChunkId, Vec<u8>) {
        let h = HashedChunk::new(data);
        let (codec, stored) = h.compress(Compression::Zstd { level });
        assert_eq!(codec, Codec::Zstd);
        (h.id, stored)
    }

    fn zstd_chunk(id: ChunkId, raw_len: usize, data: &[u8]) -> StoredChunk<'_> {
        StoredChunk {
            id,
            codec: Codec::Zstd,
            raw_len,
            data,
        }
    }

    /// The detail of a decode failure, which must name the codec.
    fn decode_fault(s: &StoredChunk<'_>) -> String {
        match s.verify() {
            Err(f @ ChunkFault::Decompress { .. }) => {
                let msg = f.to_string();
                assert!(msg.starts_with("zstd data does not decode to"), "{msg}");
                msg
            }
            other => panic!("expected a decode fault, got {other:?}"),
        }
    }

    #[test]
    fn zstd_round_trips_at_every_level_tried() {
        let data = text(200_000);
        let (_, lz4) = HashedChunk::new(&data).compress(Compression::Lz4);
        for level in [1, 3, 9, 19] {
            let (id, stored) = zstd_stored(&data, level);
            assert!(
                stored.len() < lz4.len(),
                "level {level}: zstd beats LZ4 on text"
            );
            let v = zstd_chunk(id, data.len(), &stored)
                .verify()
                .expect("verifies");
            assert_eq!(v.data(), &data[..], "level {level}");
        }
        // A reused buffer with other content and length is overwritten.
        let (id, stored) = zstd_stored(&data[..5000], 3);
        let v = zstd_chunk(id, 5000, &stored)
            .verify_into(vec![0xaa; 70_000])
            .expect("verifies");
        assert_eq!(v.data(), &data[..5000]);
    }

    #[test]
    fn zstd_frame_claiming_another_size_is_refused_before_decoding() {
        let data = text(10_000);
        let (id, stored) = zstd_stored(&data, 3);
        for claimed in [9_999, 10_001, 1, MAX_CHUNK] {
            let msg = decode_fault(&zstd_chunk(id, claimed, &stored));
            assert!(msg.contains("its frame header claims 10000 bytes"), "{msg}");
        }
        // A hand-made frame header claiming 1 TiB (single segment, 8-byte
        // content size) is refused without allocating anything for it.
        let mut huge = vec![0x28, 0xb5, 0x2f, 0xfd, 0xe0];
        huge.extend_from_slice(&(1u64 << 40).to_le_bytes());
        huge.extend_from_slice(&[0x01, 0x00, 0x00]); // last block, raw, empty
        let msg = decode_fault(&zstd_chunk(id, 10_000, &huge));
        assert!(msg.contains("claims 1099511627776 bytes"), "{msg}");
        // The index's own claim is bounded first, whatever the frame says.
        assert_eq!(
            zstd_chunk(id, MAX_CHUNK + 1, &huge).verify(),
            Err(ChunkFault::RawLength(MAX_CHUNK + 1))
        );
    }

    #[test]
    fn zstd_frame_without_content_size_is_refused() {
        // Frame header: no content size, a window descriptor; one last raw
        // block holding the byte 'x'.
        let frame = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x00, 0x09, 0x00, 0x00, b'x'];
        let msg = decode_fault(&zstd_chunk(ChunkId::of(b"x"), 1, &frame));
        assert!(msg.contains("gives no content size"), "{msg}");
    }

    #[test]
    fn truncated_or_padded_zstd_frames_are_refused() {
        let data = text(50_000);
        let (id, stored) = zstd_stored(&data, 3);
        for cut in [stored.len() - 1, stored.len() / 2, 20] {
            let msg = decode_fault(&zstd_chunk(id, data.len(), &stored[..cut]));
            assert!(msg.contains("truncated or damaged"), "cut at {cut}: {msg}");
        }
        for cut in [0, 3, 5] {
            let msg = decode_fault(&zstd_chunk(id, data.len(), &stored[..cut]));
            assert!(
                msg.contains("does not start with a zstd frame header"),
                "{msg}"
            );
        }
        // A second frame (or any bytes) after the first.
        let mut twice = stored.clone();
        twice.extend_from_slice(&stored);
        let msg = decode_fault(&zstd_chunk(id, data.len(), &twice));
        assert!(
            msg.contains(&format!("{} bytes follow its frame", stored.len())),
            "{msg}"
        );
        // LZ4 bytes labelled zstd.
        let (_, lz4) = HashedChunk::new(&data).compress(Compression::Lz4);
        decode_fault(&zstd_chunk(id, data.len(), &lz4));
    }

    #[test]
    fn damaged_zstd_data_never_verifies() {
        let data = text(30_000);
        let (id, stored) = zstd_stored(&data, 3);
        for at in (0..stored.len()).step_by(7) {
            let mut bad = stored.clone();
            bad[at] ^= 0x21;
            assert!(
                zstd_chunk(id, data.len(), &bad).verify().is_err(),
                "flipping byte {at} went unnoticed"
            );
        }
    }

    #[test]
    fn compression_settings_parse_and_print() {
        for (text, want) in [
            ("lz4", Compression::Lz4),
            ("zstd", Compression::Zstd { level: 3 }),
            ("zstd:1", Compression::Zstd { level: 1 }),
            ("zstd:19", Compression::Zstd { level: 19 }),
        ] {
            let c: Compression = text.parse().expect(text);
            assert_eq!(c, want);
            assert_eq!(c.to_string().parse::<Compression>().expect("again"), c);
        }
        for bad in [
            "", "LZ4", "zstd:", "zstd:0", "zstd:20", "zstd:-1", "zstd:3:1", "gzip", "lz4:1",
        ] {
            let err = bad.parse::<Compression>().expect_err(bad);
            assert!(
                err.to_string()
                    .contains("zstd:LEVEL with LEVEL from 1 to 19"),
                "{err}"
            );
        }
        assert_eq!(
            serde_json::to_string(&Compression::Zstd { level: 6 }).expect("json"),
            "\"zstd:6\""
        );
    }

    proptest::proptest! {
        /// Any bytes labelled zstd, with any claimed length, are an error or
        /// the right bytes: never a panic.
        #[test]
        fn hostile_zstd_bytes_never_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            raw_len in 1usize..100_000,
        ) {
            let s = zstd_chunk(ChunkId([7; 32]), raw_len, &bytes);
            proptest::prop_assert!(s.verify().is_err());
        }

        /// A valid frame with a few bytes changed is refused or, if the
        /// change is immaterial, decodes to the chunk itself.
        #[test]
        fn mutated_zstd_frames_never_verify_wrongly(
            edits in proptest::collection::vec((proptest::num::usize::ANY, 1u8..=255), 1..6),
        ) {
            let data = text(20_000);
            let (id, mut stored) = zstd_stored(&data, 3);
            for (at, x) in edits {
                let n = stored.len();
                stored[at % n] ^= x;
            }
            if let Ok(v) = zstd_chunk(id, data.len(), &stored).verify() {
                proptest::prop_assert!(v.data() == &data[..]);
            }
        }
    }
}
