//! Content-defined chunking of a byte stream into chunks and zero holes.
//!
//! A stream is first split at **zero runs**: whole, aligned [`ZERO_BLOCK`]
//! blocks of zeros that together reach [`ChunkerParams::zero_run_min`] become a
//! hole, and are never read back, hashed or stored. (A sparse source file's
//! holes are fed in the same way without being read, so a sparse file and the
//! same bytes on a block device give identical chunks.) The data between holes
//! is a *segment*, cut by FastCDC v2020 from the [`fastcdc`] crate; each
//! segment starts a fresh chunker, so cut points depend only on content.
//!
//! Cut points are a compatibility contract: fastcdc changed them across 3.1,
//! 4.0 and 5.0. The crate is pinned exactly (`=5.0.0`), every image records
//! [`ChunkerParams`], and `tests/golden` holds the cut points of a generated
//! input so that any drift fails a test.
//!
//! Memory: the chunker holds at most `max(4 MiB, 4 × max_size)` of pending
//! segment data plus one batch of about [`BATCH_TARGET`] bytes.

use fastcdc::v2020::{cut, select_masks, Normalization};
use serde::{Deserialize, Serialize};

use crate::chunk::MAX_CHUNK;

/// Granularity of zero detection. Matches the page and file-system block size
/// of nearly every disk, so free space in a file system is found block by block.
pub const ZERO_BLOCK: usize = 4096;

static ZEROS: [u8; ZERO_BLOCK] = [0; ZERO_BLOCK];

/// Pieces are handed on in batches of about this many data bytes: large
/// enough that channel and thread overheads vanish, small enough to bound memory.
pub const BATCH_TARGET: usize = 4 << 20;

/// The fastcdc crate version whose cut points this build produces.
pub const FASTCDC_VERSION: &str = "5.0.0";

/// The chunking parameters, recorded in the library and in every image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// Always `fastcdc-v2020`.
    pub algorithm: String,
    /// The fastcdc crate version, e.g. `5.0.0`.
    pub crate_version: String,
    /// Smallest chunk (except a segment's last).
    pub min_size: u32,
    /// Target average; a power of two.
    pub avg_size: u32,
    /// Largest chunk.
    pub max_size: u32,
    /// FastCDC normalization level (0–3).
    pub normalization: u8,
    /// Zero runs at least this long (in whole [`ZERO_BLOCK`]s) become holes.
    pub zero_run_min: u32,
}

impl Default for ChunkerParams {
    /// The parameters for new libraries.
    ///
    /// Measured with `cargo run --release -p imaging --example chunk_stats`
    /// on the bench's Debian bookworm disk (2 GiB, 935 MiB allocated) and its
    /// successor with a package installed (94 MB of 4 KiB blocks changed),
    /// each average with min = avg/4 and max = avg×4, on 2 cores:
    ///
    /// | avg     | chunks | stored base | capture | added by next | next / changed |
    /// |---------|--------|-------------|---------|---------------|----------------|
    /// | 16 KiB  | 42 564 | 415.7 MB    | 4.6 s   | 25.7 MB       | 0.27           |
    /// | 32 KiB  | 21 722 | 411.5 MB    | 3.2 s   | 28.4 MB       | 0.30           |
    /// | 64 KiB  | 11 313 | 410.3 MB    | 2.9 s   | 30.9 MB       | 0.33           |
    /// | 128 KiB |  6 058 | 411.6 MB    | 3.2 s   | 34.4 MB       | 0.37           |
    ///
    /// 64 KiB is the fastest and stores the least; an incremental still costs
    /// only a third of the changed bytes, and per-chunk metadata (48 B in a
    /// list, 52 B in an index) is a quarter of 16 KiB's. Below it, per-chunk
    /// overhead dominates; above it, scattered metadata changes each drag a
    /// larger chunk along. Level-1 normalization keeps most chunks within
    /// avg/2..avg×2. Zero runs of 64 KiB or more become holes.
    fn default() -> Self {
        ChunkerParams {
            algorithm: "fastcdc-v2020".into(),
            crate_version: FASTCDC_VERSION.into(),
            min_size: 16 << 10,
            avg_size: 64 << 10,
            max_size: 256 << 10,
            normalization: 1,
            zero_run_min: 64 << 10,
        }
    }
}

impl ChunkerParams {
    /// Parameters with the given average, and min/max/zero runs derived as
    /// for the default.
    pub fn with_avg(avg: u32) -> Self {
        ChunkerParams {
            min_size: avg / 4,
            avg_size: avg,
            max_size: avg * 4,
            zero_run_min: avg.max(ZERO_BLOCK as u32),
            ..Default::default()
        }
    }

    /// Checks that this build can reproduce these parameters' cut points.
    pub fn check(&self) -> Result<(), String> {
        if self.algorithm != "fastcdc-v2020" {
            return Err(format!("unknown chunking algorithm {:?}", self.algorithm));
        }
        if self.crate_version != FASTCDC_VERSION {
            return Err(format!(
                "chunks were cut by fastcdc {} but this build has {FASTCDC_VERSION}; \
                 cut points differ between versions",
                self.crate_version
            ));
        }
        let (min, avg, max) = (self.min_size, self.avg_size, self.max_size);
        let ok = (64..=1 << 20).contains(&min)
            && (256..=4 << 20).contains(&avg)
            && avg.is_power_of_two()
            && (1024..=MAX_CHUNK as u32).contains(&max)
            && min <= avg
            && avg <= max
            && min % 2 == 0
            && max % 2 == 0
            && self.normalization <= 3
            && self.zero_run_min as usize >= ZERO_BLOCK
            && self.zero_run_min as usize % ZERO_BLOCK == 0;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "invalid chunker sizes min={min} avg={avg} max={max} normalization={} zero_run_min={}",
                self.normalization, self.zero_run_min
            ))
        }
    }

    fn level(&self) -> Normalization {
        match self.normalization {
            0 => Normalization::Level0,
            1 => Normalization::Level1,
            2 => Normalization::Level2,
            _ => Normalization::Level3,
        }
    }
}

/// One piece of a stream, in stream order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    /// `len` zero bytes, not stored.
    Hole(u64),
    /// `len` bytes whose content does not matter (see
    /// [`Chunker::feed_unused`]), not stored.
    Unused(u64),
    /// A chunk: `len` bytes at `start` in the batch's `data`.
    Chunk {
        /// Offset in [`Batch::data`].
        start: usize,
        /// Length in bytes.
        len: usize,
    },
}

/// A run of consecutive pieces and the bytes of their chunks.
#[derive(Debug, Default)]
pub struct Batch {
    /// Concatenated chunk bytes.
    pub data: Vec<u8>,
    /// Pieces in stream order.
    pub pieces: Vec<Piece>,
}

/// Streaming chunker: feed it data and holes in stream order, and it emits
/// batches of pieces.
pub struct Chunker {
    min: usize,
    avg: usize,
    max: usize,
    masks: (u64, u64),
    zero_run_min: u64,
    /// Absolute stream position of the next byte fed.
    pos: u64,
    /// Data of the current segment not yet cut.
    pending: Vec<u8>,
    /// Zero bytes (whole blocks) seen after `pending`, not yet decided.
    zeros: u64,
    /// The start of a block whose end has not been fed yet.
    partial: Vec<u8>,
    high_water: usize,
    batch: Batch,
}

impl Chunker {
    /// A chunker for `params`, which must pass [`ChunkerParams::check`].
    pub fn new(params: &ChunkerParams) -> Self {
        let max = params.max_size as usize;
        Chunker {
            min: params.min_size as usize,
            avg: params.avg_size as usize,
            max,
            masks: select_masks(params.avg_size as usize, params.level()),
            zero_run_min: u64::from(params.zero_run_min),
            pos: 0,
            pending: Vec::new(),
            zeros: 0,
            partial: Vec::with_capacity(ZERO_BLOCK),
            high_water: (4 << 20).max(4 * max),
            batch: Batch::default(),
        }
    }

    /// Feeds stream bytes. `emit` receives each full batch.
    pub fn feed(&mut self, mut data: &[u8], emit: &mut (impl FnMut(Batch) + ?Sized)) {
        // Zero detection works on whole aligned blocks, whatever the feed
        // sizes: a block split across calls waits in `partial`.
        if !self.partial.is_empty() {
            let need = ZERO_BLOCK - self.partial.len();
            let n = need.min(data.len());
            self.partial.extend_from_slice(&data[..n]);
            self.pos += n as u64;
            data = &data[n..];
            if self.partial.len() < ZERO_BLOCK {
                return;
            }
            let block = std::mem::take(&mut self.partial);
            self.block(&block, emit);
            self.partial = block;
            self.partial.clear();
        }
        let mut blocks = data.chunks_exact(ZERO_BLOCK);
        for block in &mut blocks {
            self.pos += ZERO_BLOCK as u64;
            self.block(block, emit);
        }
        let rest = blocks.remainder();
        self.pos += rest.len() as u64;
        self.partial.extend_from_slice(rest);
    }

    /// Classifies one whole block (or the stream's short last block).
    fn block(&mut self, block: &[u8], emit: &mut (impl FnMut(Batch) + ?Sized)) {
        if crate::chunk::is_zero(block) {
            self.zeros += block.len() as u64;
        } else {
            self.settle_zeros(emit);
            self.pending.extend_from_slice(block);
            if self.pending.len() >= self.high_water {
                self.cut_pending(false, emit);
            }
        }
    }

    /// Feeds `len` zero bytes without reading them (a hole in a sparse file).
    pub fn feed_zeros(&mut self, mut len: u64, emit: &mut (impl FnMut(Batch) + ?Sized)) {
        if !self.partial.is_empty() {
            let n = ((ZERO_BLOCK - self.partial.len()) as u64).min(len);
            self.feed(&ZEROS[..n as usize], emit);
            len -= n;
        }
        self.pos += len;
        self.zeros += len;
    }

    /// Feeds `len` bytes the file system does not use, without reading them.
    /// A run of at least `zero_run_min` bytes ends the segment and becomes
    /// a [`Piece::Unused`]; a shorter one is fed as zeros (its content does
    /// not matter, and zeros keep the cut points of the data around it).
    pub fn feed_unused(&mut self, mut len: u64, emit: &mut (impl FnMut(Batch) + ?Sized)) {
        if !self.partial.is_empty() {
            let n = ((ZERO_BLOCK - self.partial.len()) as u64).min(len);
            self.feed(&ZEROS[..n as usize], emit);
            len -= n;
        }
        if len < self.zero_run_min {
            self.pos += len;
            self.zeros += len;
            return;
        }
        // Zeros before the unused run become a hole or segment data; either
        // way the segment ends here.
        self.settle_zeros(emit);
        self.cut_pending(true, emit);
        self.pos += len;
        if let Some(Piece::Unused(prev)) = self.batch.pieces.last_mut() {
            *prev += len;
        } else {
            self.batch.pieces.push(Piece::Unused(len));
        }
    }

    /// Ends the stream, emitting everything still held.
    pub fn finish(mut self, emit: &mut (impl FnMut(Batch) + ?Sized)) {
        let last = std::mem::take(&mut self.partial);
        if !last.is_empty() {
            self.block(&last, emit);
        }
        if self.zeros >= self.zero_run_min {
            self.cut_pending(true, emit);
            self.push_hole(self.zeros);
        } else {
            let z = self.zeros as usize;
            self.pending.resize(self.pending.len() + z, 0);
            self.cut_pending(true, emit);
        }
        if !self.batch.pieces.is_empty() {
            emit(std::mem::take(&mut self.batch));
        }
    }

    /// A non-zero block follows the zeros seen so far: they become a hole
    /// (ending the segment) or part of the segment's data.
    fn settle_zeros(&mut self, emit: &mut (impl FnMut(Batch) + ?Sized)) {
        if self.zeros == 0 {
            return;
        }
        if self.zeros >= self.zero_run_min {
            self.cut_pending(true, emit);
            self.push_hole(self.zeros);
        } else {
            let z = self.zeros as usize;
            self.pending.resize(self.pending.len() + z, 0);
        }
        self.zeros = 0;
    }

    fn push_hole(&mut self, len: u64) {
        if let Some(Piece::Hole(prev)) = self.batch.pieces.last_mut() {
            *prev += len;
        } else {
            self.batch.pieces.push(Piece::Hole(len));
        }
    }

    /// Cuts chunks from `pending`. Unless the segment ends here, stops while
    /// fewer than `max` bytes remain, since the next cut could depend on data
    /// not yet seen.
    fn cut_pending(&mut self, segment_end: bool, emit: &mut (impl FnMut(Batch) + ?Sized)) {
        let mut at = 0;
        let (mask_s, mask_l) = self.masks;
        loop {
            let remaining = self.pending.len() - at;
            if remaining == 0 || (!segment_end && remaining < self.max) {
                break;
            }
            let (_, len) = cut(
                &self.pending[at..],
                self.min,
                self.avg,
                self.max,
                mask_s,
                mask_l,
                mask_s << 1,
                mask_l << 1,
            );
            let start = self.batch.data.len();
            self.batch
                .data
                .extend_from_slice(&self.pending[at..at + len]);
            self.batch.pieces.push(Piece::Chunk { start, len });
            at += len;
            if self.batch.data.len() >= BATCH_TARGET {
                emit(std::mem::take(&mut self.batch));
            }
        }
        self.pending.drain(..at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64: a fixed, dependency-free input generator.
    pub(crate) fn generated(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    fn pieces_of(data: &[u8], params: &ChunkerParams, feed_size: usize) -> Vec<(bool, u64)> {
        let mut out = Vec::new();
        let mut c = Chunker::new(params);
        let mut emit = |b: Batch| {
            for p in b.pieces {
                match p {
                    Piece::Hole(n) | Piece::Unused(n) => out.push((true, n)),
                    Piece::Chunk { len, .. } => out.push((false, len as u64)),
                }
            }
        };
        for part in data.chunks(feed_size) {
            c.feed(part, &mut emit);
        }
        c.finish(&mut emit);
        // Adjacent holes from different batches are one hole.
        let mut merged: Vec<(bool, u64)> = Vec::new();
        for p in out {
            match (merged.last_mut(), p) {
                (Some((true, n)), (true, m)) => *n += m,
                _ => merged.push(p),
            }
        }
        merged
    }

    #[test]
    fn unused_runs_end_segments_and_short_ones_are_zeros() {
        let params = ChunkerParams::default();
        let mut pieces = Vec::new();
        let mut c = Chunker::new(&params);
        let mut emit = |b: Batch| pieces.extend(b.pieces);
        // Block-aligned, as file-system allocation is.
        let data = generated(75 * 4096, 7);
        c.feed(&data[..25 * 4096], &mut emit);
        c.feed_unused(1 << 20, &mut emit);
        c.feed(&data[25 * 4096..50 * 4096], &mut emit);
        c.feed_unused(8192, &mut emit); // shorter than zero_run_min: zeros
        c.feed(&data[50 * 4096..], &mut emit);
        c.feed_unused(3 << 20, &mut emit);
        c.finish(&mut emit);
        let unused: Vec<u64> = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Unused(n) => Some(*n),
                _ => None,
            })
            .collect();
        assert_eq!(unused, [1 << 20, 3 << 20]);
        let chunk_bytes: usize = pieces
            .iter()
            .map(|p| match p {
                Piece::Chunk { len, .. } => *len,
                _ => 0,
            })
            .sum();
        assert_eq!(chunk_bytes, 75 * 4096 + 8192);
        // The first unused run follows exactly the first 25 blocks.
        let before: usize = pieces
            .iter()
            .take_while(|p| !matches!(p, Piece::Unused(_)))
            .map(|p| match p {
                Piece::Chunk { len, .. } => *len,
                _ => 0,
            })
            .sum();
        assert_eq!(before, 25 * 4096);
    }

    /// The golden input: random data with zero runs of several lengths.
    fn golden_input() -> Vec<u8> {
        let mut data = generated(6 << 20, 0x5eed_f0e1_2026);
        for (at, len) in [(100_000, 70_000), (1 << 20, 200_000), (3 << 20, 40_000)] {
            data[at..at + len].fill(0);
        }
        data.extend(std::iter::repeat_n(0u8, 300_000));
        data
    }

    fn golden_text() -> String {
        let mut s =
            String::from("# fastcdc-v2020 5.0.0, ChunkerParams::default(), golden_input()\n");
        for (hole, len) in pieces_of(&golden_input(), &ChunkerParams::default(), 1 << 20) {
            s.push_str(&format!("{} {len}\n", if hole { "hole" } else { "chunk" }));
        }
        s
    }

    /// Golden cut points. Regenerate (only on a deliberate format change) with
    /// `FERRY_REGEN_GOLDEN=1 cargo test -p imaging golden`.
    #[test]
    fn golden_cut_points() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/golden/cutpoints-v2020-5.0.0.txt"
        );
        let text = golden_text();
        if std::env::var_os("FERRY_REGEN_GOLDEN").is_some() {
            std::fs::write(path, &text).expect("write golden file");
        }
        let golden = std::fs::read_to_string(path).expect("golden file present");
        assert_eq!(text, golden, "cut points differ from {path}");
    }

    #[test]
    fn cut_points_do_not_depend_on_feed_size() {
        let data = golden_input();
        let p = ChunkerParams::default();
        let a = pieces_of(&data, &p, 1 << 20);
        assert_eq!(a, pieces_of(&data, &p, 4093));
        assert_eq!(a, pieces_of(&data, &p, data.len()));
        let total: u64 = a.iter().map(|x| x.1).sum();
        assert_eq!(total, data.len() as u64);
    }

    #[test]
    fn fed_zeros_equal_read_zeros() {
        let mut data = generated(1 << 20, 9);
        data.extend(std::iter::repeat_n(0u8, 1 << 20));
        data.extend(generated(1 << 20, 10));
        let p = ChunkerParams::default();
        let read = pieces_of(&data, &p, 65536);
        let mut sparse = Vec::new();
        let mut c = Chunker::new(&p);
        let mut emit = |b: Batch| sparse.extend(b.pieces);
        c.feed(&data[..1 << 20], &mut emit);
        c.feed_zeros(1 << 20, &mut emit);
        c.feed(&data[2 << 20..], &mut emit);
        c.finish(&mut emit);
        let sparse: Vec<(bool, u64)> = sparse
            .iter()
            .map(|p| match p {
                Piece::Hole(n) | Piece::Unused(n) => (true, *n),
                Piece::Chunk { len, .. } => (false, *len as u64),
            })
            .collect();
        assert_eq!(read, sparse);
        assert!(read.contains(&(true, 1 << 20)));
    }

    #[test]
    fn short_zero_runs_stay_in_the_data() {
        let mut data = generated(200_000, 3);
        data[50_000..50_000 + 8192].fill(0);
        let pieces = pieces_of(&data, &ChunkerParams::default(), 1 << 20);
        assert!(pieces.iter().all(|p| !p.0));
    }

    #[test]
    fn default_params_are_valid() {
        ChunkerParams::default().check().expect("valid");
        let old = ChunkerParams {
            crate_version: "4.0.0".into(),
            ..Default::default()
        };
        assert!(old.check().is_err());
    }
}
