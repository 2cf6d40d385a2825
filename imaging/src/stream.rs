//! Random access to a stored block stream, without restoring it.
//!
//! A deploy onto a smaller partition, or onto another file-system type,
//! cannot write an image's block stream back as it is: it makes a fresh file
//! system and fills it with the *file tree* held in the stream. The agent
//! runs in a RAM disk, so the stream cannot first be restored to a temp file
//! either. [`StreamReader`] reads any byte range of a stream straight from
//! the library instead, and [`crate::ext4::Ext4Tree::from_reader`] parses a
//! file system through it; [`crate::tree::populate`] then copies the tree.
//!
//! **Reads.** The chunk list's extent start offsets are kept sorted, so the
//! extent holding any offset is found by binary search. Holes (and any other
//! extent kind whose bytes are not stored) read as zeros. Chunks are fetched
//! with [`Library::read_chunk`], which verifies each against its BLAKE3 id:
//! a damaged chunk is an [`Error::BadChunk`] naming the chunk and its pack,
//! never wrong bytes.
//!
//! **Cache.** File-system reads are small and clustered (an inode, a
//! directory block, the next 4 KiB of a file), while chunks are ~64 KiB, so
//! the last [`DEFAULT_CACHE_CHUNKS`] decoded chunks are kept in a small LRU
//! cache behind a mutex. The lock is not held while a chunk is fetched, so
//! several threads read in parallel; the reader is `Send + Sync`.
//!
//! **Consistency.** Opening checks that every chunk of the list is in the
//! index (as [`crate::restore::restore`] does) and takes the library lock
//! shared for the reader's lifetime, so `gc` cannot remove a pack under it.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::chunk::ChunkId;
use crate::chunklist::{ChunkList, Extent};
use crate::error::{Error, Result};
use crate::ext4::ByteSource;
use crate::index::Index;
use crate::library::Library;
use crate::manifest::BlockStream;
use crate::store::{LockGuard, LockMode};

/// Decoded chunks kept by default: at most 16 MiB with the default
/// chunker's 256 KiB largest chunk, and enough to hold an ext4 walk's
/// working set of inode-table and directory chunks.
pub const DEFAULT_CACHE_CHUNKS: usize = 64;

/// Positional reads over a stored block stream (see the module docs).
pub struct StreamReader {
    lib: Arc<Library>,
    index: Arc<Index>,
    list: ChunkList,
    /// Start offset of each extent of `list`, ascending.
    starts: Vec<u64>,
    /// Names the stream in messages (`web01 disk 0`).
    name: String,
    cache: Mutex<Lru>,
    /// Stored bytes read from the library so far (cache misses, each
    /// counted every time it is read: what crossed the network from a
    /// remote library).
    fetched: Arc<AtomicU64>,
    /// The shared library lock, held while the reader exists (a mutex only
    /// to make the reader `Sync`; never locked).
    _lock: Mutex<LockGuard>,
}

impl std::fmt::Debug for StreamReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamReader")
            .field("name", &self.name)
            .field("len", &self.list.stream_len())
            .field("extents", &self.list.extents().len())
            .finish_non_exhaustive()
    }
}

impl StreamReader {
    /// Opens `stream` (e.g. one of [`crate::manifest::Disk::streams`])
    /// in `lib`. `name` names it in messages and errors (`web01 disk 0`).
    /// Fails with [`Error::MissingChunk`] if the index lacks any of its
    /// chunks.
    pub fn open(lib: Arc<Library>, stream: &BlockStream, name: &str) -> Result<StreamReader> {
        let lock = lib.lock(LockMode::Shared)?;
        let list = lib.read_list(&stream.list)?;
        if list.stream_len() != stream.size {
            return Err(Error::Corrupt {
                path: format!("chunk list {} of {name}", stream.list.short()),
                reason: format!(
                    "it covers {} bytes, the manifest says the stream has {}",
                    list.stream_len(),
                    stream.size
                ),
            });
        }
        let index = Arc::new(lib.load_index()?);
        Self::build(lib, index, list, name, lock)
    }

    /// A reader over `list`, with chunks located through `index` (an index
    /// the caller already loaded, e.g. shared by several readers).
    pub fn from_list(
        lib: Arc<Library>,
        index: Arc<Index>,
        list: ChunkList,
        name: &str,
    ) -> Result<StreamReader> {
        let lock = lib.lock(LockMode::Shared)?;
        Self::build(lib, index, list, name, lock)
    }

    fn build(
        lib: Arc<Library>,
        index: Arc<Index>,
        list: ChunkList,
        name: &str,
        lock: LockGuard,
    ) -> Result<StreamReader> {
        crate::restore::check_present(&list, &index, name)?;
        let mut starts = Vec::with_capacity(list.extents().len());
        let mut at = 0u64;
        for e in list.extents() {
            starts.push(at);
            // A decoded or built list's extents add up to its length, so this cannot overflow.
            at += e.bytes();
        }
        Ok(StreamReader {
            lib,
            index,
            list,
            starts,
            name: name.into(),
            cache: Mutex::new(Lru::new(DEFAULT_CACHE_CHUNKS)),
            fetched: Arc::new(AtomicU64::new(0)),
            _lock: Mutex::new(lock),
        })
    }

    /// Keeps up to `chunks` decoded chunks (at least 1) instead of
    /// [`DEFAULT_CACHE_CHUNKS`].
    pub fn with_cache_chunks(self, chunks: usize) -> StreamReader {
        StreamReader {
            cache: Mutex::new(Lru::new(chunks.max(1))),
            ..self
        }
    }

    /// A live count of the stored bytes this reader has read from the
    /// library, which stays readable after the reader is handed away.
    pub fn fetched(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.fetched)
    }

    /// The stream's name in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stream's length in bytes.
    pub fn len(&self) -> u64 {
        self.list.stream_len()
    }

    /// True for an empty stream.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` with the stream's bytes from offset `off`. A range
    /// running past the end is an error (nothing is read); a chunk that
    /// fails verification is [`Error::BadChunk`].
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        let len = self.len();
        let end = off
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= len)
            .ok_or_else(|| {
                Error::io(
                    "reading",
                    &self.name,
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "{} bytes at offset {off} run past the end of the stream ({len} bytes)",
                            buf.len()
                        ),
                    ),
                )
            })?;
        if buf.is_empty() {
            return Ok(());
        }
        // The last extent starting at or before `off`; starts[0] is 0.
        let mut i = self.starts.partition_point(|&s| s <= off).saturating_sub(1);
        let mut pos = off;
        while pos < end {
            let (Some(extent), Some(&start)) = (self.list.extents().get(i), self.starts.get(i))
            else {
                return Err(self.corrupt(format!("no extent holds offset {pos}")));
            };
            let n = usize::try_from((start + extent.bytes()).min(end) - pos)
                .expect("bounded by the buffer's length");
            let from = usize::try_from(pos - off).expect("bounded by the buffer's length");
            let dst = &mut buf[from..from + n];
            match *extent {
                Extent::Chunk { id, len, .. } => self.copy_chunk(id, len, pos - start, dst)?,
                // Bytes that are not stored read as zeros.
                Extent::Hole { .. } | Extent::Unused { .. } => dst.fill(0),
            }
            pos += n as u64;
            i += 1;
        }
        Ok(())
    }

    /// Copies from a run of repeats of chunk `id` (`len` bytes each),
    /// starting `within` bytes into the run.
    fn copy_chunk(&self, id: ChunkId, len: u32, within: u64, dst: &mut [u8]) -> Result<()> {
        let data = self.chunk(id)?;
        if data.len() != len as usize {
            return Err(self.corrupt(format!(
                "chunk {id} holds {} bytes, the chunk list says {len}",
                data.len()
            )));
        }
        let mut k = usize::try_from(within % u64::from(len)).expect("below a chunk's length");
        let mut done = 0;
        while done < dst.len() {
            let m = (data.len() - k).min(dst.len() - done);
            dst[done..done + m].copy_from_slice(&data[k..k + m]);
            done += m;
            k = 0;
        }
        Ok(())
    }

    /// The verified bytes of chunk `id`, from the cache or the library.
    fn chunk(&self, id: ChunkId) -> Result<Arc<Vec<u8>>> {
        if let Some(data) = self.lru().get(&id) {
            return Ok(data);
        }
        let loc = self.index.get(&id).ok_or_else(|| Error::MissingChunk {
            id,
            image: self.name.clone(),
        })?;
        let data = Arc::new(self.lib.read_chunk(&self.index, loc)?.into_data());
        self.fetched
            .fetch_add(loc.entry.record_len() as u64, Ordering::Relaxed);
        self.lru().put(id, Arc::clone(&data));
        Ok(data)
    }

    fn lru(&self) -> std::sync::MutexGuard<'_, Lru> {
        // The cache is only ever left whole (entries are pushed and removed
        // in single calls), so a poisoned one is still sound.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn corrupt(&self, reason: String) -> Error {
        Error::Corrupt {
            path: self.name.clone(),
            reason,
        }
    }
}

impl ByteSource for StreamReader {
    fn size(&self) -> u64 {
        self.len()
    }

    fn read_exact_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        self.read_at(off, buf).map_err(|e| {
            let kind = match &e {
                Error::Io { source, .. } => source.kind(),
                _ => io::ErrorKind::InvalidData,
            };
            io::Error::new(kind, e)
        })
    }
}

/// A least-recently-used set of decoded chunks, most recent last. Linear
/// scans: it holds tens of entries, and each miss costs a chunk decode.
struct Lru {
    cap: usize,
    slots: Vec<(ChunkId, Arc<Vec<u8>>)>,
}

impl Lru {
    fn new(cap: usize) -> Self {
        Lru {
            cap,
            slots: Vec::with_capacity(cap),
        }
    }

    fn get(&mut self, id: &ChunkId) -> Option<Arc<Vec<u8>>> {
        let i = self.slots.iter().position(|(k, _)| k == id)?;
        let slot = self.slots.remove(i);
        let data = Arc::clone(&slot.1);
        self.slots.push(slot);
        Some(data)
    }

    fn put(&mut self, id: ChunkId, data: Arc<Vec<u8>>) {
        if self.slots.iter().any(|(k, _)| *k == id) {
            return; // another thread fetched it meanwhile
        }
        if self.slots.len() >= self.cap {
            self.slots.remove(0);
        }
        self.slots.push((id, data));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunker::ChunkerParams;
    use crate::store::LocalStore;
    use crate::{capture, CaptureRequest, NoProgress};
    use std::path::Path;

    fn xorshift(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    /// Random data, a zero run (stored as a hole), repeated chunks, a tail.
    fn source(seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let mut d: Vec<u8> = (0..300_000).map(|_| xorshift(&mut x) as u8).collect();
        d.extend(std::iter::repeat_n(0u8, 200_000));
        let block: Vec<u8> = (0..4096).map(|_| xorshift(&mut x) as u8).collect();
        for _ in 0..40 {
            d.extend(&block);
        }
        d.extend((0..123_457).map(|_| xorshift(&mut x) as u8));
        d
    }

    /// A small-chunk library holding `data` as image `t`, and a reader on it.
    fn stored(dir: &Path, data: &[u8]) -> (Arc<Library>, StreamReader) {
        let lib = Library::create(
            Box::new(LocalStore::new(dir.join("lib"))),
            ChunkerParams::with_avg(4096),
        )
        .expect("library");
        let src = dir.join("src.img");
        std::fs::write(&src, data).expect("write source");
        let req = CaptureRequest {
            mode: crate::DiskMode::Raw,
            name: "t".into(),
            parent: None,
            sources: vec![src],
            workers: 2,
        };
        let m = capture(&lib, &req, &NoProgress).expect("capture");
        let lib = Arc::new(lib);
        let r = StreamReader::open(Arc::clone(&lib), m.disks[0].streams()[0].1, "t disk 0")
            .expect("opens")
            .with_cache_chunks(8);
        (lib, r)
    }

    #[test]
    fn random_reads_match_the_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = source(7);
        let (_lib, r) = stored(dir.path(), &data);
        assert_eq!(r.len(), data.len() as u64);
        let kinds: Vec<_> = r
            .list
            .extents()
            .iter()
            .map(std::mem::discriminant)
            .collect();
        assert!(
            kinds.len() > 3 && kinds.contains(&std::mem::discriminant(&Extent::Hole { len: 1 }))
        );
        assert!(r
            .list
            .extents()
            .iter()
            .any(|e| matches!(e, Extent::Chunk { count, .. } if *count > 1)));
        let mut x = 0x5eed_u64;
        let mut buf = Vec::new();
        for round in 0..3000 {
            let off = xorshift(&mut x) % data.len() as u64;
            let max = if round % 10 == 0 { 200_000 } else { 9000 };
            let len = (xorshift(&mut x) % max).min(data.len() as u64 - off) as usize;
            buf.resize(len, 0xaa);
            r.read_at(off, &mut buf).expect("in range");
            let o = off as usize;
            assert!(buf == data[o..o + len], "{len} bytes at {off}");
        }
        // Every extent boundary, read across.
        for &s in r.starts.iter().skip(1) {
            let mut b = [0u8; 64];
            r.read_at(s - 32, &mut b).expect("in range");
            assert_eq!(&b[..], &data[s as usize - 32..s as usize + 32]);
        }
        let mut whole = vec![0u8; data.len()];
        r.read_at(0, &mut whole).expect("whole");
        assert!(whole == data);
    }

    #[test]
    fn fetched_counts_every_library_read_and_no_cache_hit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = source(9);
        let (lib, r) = stored(dir.path(), &data);
        let fetched = r.fetched();
        let index = lib.load_index().expect("index");
        // Stored bytes of the distinct chunks: one whole read fetches each
        // once (a repeated chunk is decoded once and served from the cache).
        let mut ids: Vec<ChunkId> = r
            .list
            .extents()
            .iter()
            .filter_map(|e| match e {
                Extent::Chunk { id, .. } => Some(*id),
                _ => None,
            })
            .collect();
        ids.sort();
        ids.dedup();
        let stored: u64 = ids
            .iter()
            .map(|id| index.get(id).expect("indexed").entry.record_len() as u64)
            .sum();
        let mut whole = vec![0u8; data.len()];
        r.read_at(0, &mut whole).expect("whole");
        assert_eq!(fetched.load(Ordering::Relaxed), stored);
        // The last chunk again: a cache hit costs nothing.
        let mut b = [0u8; 16];
        r.read_at(data.len() as u64 - 16, &mut b).expect("tail");
        assert_eq!(fetched.load(Ordering::Relaxed), stored);
        drop(r);
        assert_eq!(
            fetched.load(Ordering::Relaxed),
            stored,
            "readable after the reader"
        );
    }

    #[test]
    fn reads_past_the_end_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = source(3);
        let (_lib, r) = stored(dir.path(), &data);
        let n = data.len() as u64;
        let mut b = [0u8; 10];
        r.read_at(n - 10, &mut b).expect("last bytes");
        r.read_at(n, &mut []).expect("empty read at the end");
        for off in [n - 9, n, n + 1, u64::MAX - 3] {
            let err = r.read_at(off, &mut b).expect_err("past the end");
            let text = err.to_string()
                + &std::error::Error::source(&err)
                    .map(|s| s.to_string())
                    .unwrap_or_default();
            assert!(
                text.contains("t disk 0") && text.contains("past the end"),
                "{text}"
            );
        }
        let err = r.read_exact_at(n - 9, &mut b).expect_err("past the end");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_damaged_chunk_is_an_error_naming_it_never_wrong_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = source(11);
        let (lib, r) = stored(dir.path(), &data);
        // Damage the last byte of the record of the chunk at offset 0.
        let Extent::Chunk { id, .. } = r.list.extents()[0] else {
            panic!("the source starts with data");
        };
        let loc = *r.index.get(&id).expect("indexed");
        let pack = r.index.pack_id(loc.pack);
        let path = dir.path().join("lib").join(crate::library::pack_key(&pack));
        let mut bytes = std::fs::read(&path).expect("pack");
        let at = loc.entry.offset as usize + loc.entry.record_len() - 1;
        bytes[at] ^= 0x55;
        std::fs::write(&path, bytes).expect("damage");
        let mut b = [0u8; 100];
        let err = r.read_at(10, &mut b).expect_err("damaged");
        match &err {
            Error::BadChunk {
                id: bad, pack: p, ..
            } => {
                assert_eq!(*bad, id);
                assert!(p.contains(&pack.to_hex()), "{p}");
            }
            other => panic!("expected BadChunk, got {other}"),
        }
        assert!(err.to_string().contains(&id.to_string()), "{err}");
        // Through the byte-source trait the message survives.
        let io = r.read_exact_at(10, &mut b).expect_err("damaged");
        assert!(io.to_string().contains(&id.to_string()), "{io}");
        drop(lib);
    }

    #[test]
    fn missing_chunks_are_refused_up_front() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (lib, r) = stored(dir.path(), &source(5));
        let mut list = r.list.clone();
        let ghost = ChunkId([0x42; 32]);
        list.push_chunk(ghost, 4096);
        let err = StreamReader::from_list(lib, Arc::clone(&r.index), list, "t disk 0")
            .expect_err("a chunk is missing");
        assert!(
            matches!(err, Error::MissingChunk { id, ref image } if id == ghost && image == "t disk 0"),
            "{err}"
        );
    }

    #[test]
    fn the_cache_stays_bounded() {
        let mut lru = Lru::new(2);
        let (a, b, c) = (ChunkId([1; 32]), ChunkId([2; 32]), ChunkId([3; 32]));
        lru.put(a, Arc::new(vec![1]));
        lru.put(b, Arc::new(vec![2]));
        assert!(lru.get(&a).is_some()); // a is now the most recent
        lru.put(c, Arc::new(vec![3]));
        assert!(lru.get(&b).is_none(), "the least recently used goes");
        assert!(lru.get(&a).is_some() && lru.get(&c).is_some());
        assert_eq!(lru.slots.len(), 2);
    }
}
