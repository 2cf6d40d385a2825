//! Block capture: disk images and block devices into the library.
//!
//! Pipeline (threads joined by bounded channels):
//!
//! ```text
//! reader ──batches──▶ hash+compress workers ──results──▶ collector ──packs──▶ pack writer
//! (reads data regions,  (BLAKE3; compresses, with the   (reorders, builds   (atomic put;
//!  zero runs, FastCDC)   library's codec, only chunks     lists and packs)    index flushes)
//!                        the library does not have)
//! ```
//!
//! Memory is bounded: at most [`MAX_IN_FLIGHT`] batches exist at once (each
//! ≤ 4.25 MiB of data plus its compressed form), the chunker holds ≤ 4 MiB,
//! and at most four packs (≤ 16 MiB each) are being filled, queued
//! (`PACKS_QUEUED`) or written: ≈ 125 MiB in all, plus the index at ≈ 70
//! bytes per chunk already in the library (≈ 1 MiB per GB stored). The pack
//! writer finishes each pack (fsync, rename) after writing the next one, so
//! the disk flushes one while the next is written.

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::chunk::{is_zero, ChunkId, Codec, Compression, HashedChunk, ObjectId};
use crate::chunker::{Batch, Chunker, ChunkerParams, Piece};
use crate::chunklist::{ChunkList, Extent};
use crate::device::Source;
use crate::error::{Error, Result};
use crate::index::{Index, FLUSH_PACKS};
use crate::library::{Library, PendingPack};
use crate::manifest::{BlockStream, CaptureStats, Disk, Manifest};
use crate::pack::{PackBuilder, PackEntry};
use crate::progress::{ProgressSink, Throttle};
use crate::server::DiskPlan;

/// Batches alive at once, across all stages.
pub const MAX_IN_FLIGHT: usize = 6;
/// Full packs (16 MiB each) waiting for the pack writer: two let the
/// capture go on while the writer waits for the disk.
pub(crate) const PACKS_QUEUED: usize = 2;
/// Bytes read from the source per call.
const READ_SIZE: usize = 1 << 20;

/// What to capture.
#[derive(Clone, Debug)]
pub struct CaptureRequest {
    /// The new image's name.
    pub name: String,
    /// The image this one succeeds, recorded as lineage.
    pub parent: Option<String>,
    /// Disk images or block devices, one per disk.
    pub sources: Vec<PathBuf>,
    /// Every byte of each disk, or a server's disks partition by partition.
    pub mode: DiskMode,
    /// Hash/compress threads; 0 means one per core.
    pub workers: usize,
}

/// How a disk is captured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DiskMode {
    /// The disk as one stream of every byte (sparse holes and zero runs
    /// are not stored).
    #[default]
    Raw,
    /// A server's disk: its survey, the bytes before the first partition,
    /// and one stream per partition holding only the blocks its file
    /// system uses (see [`crate::server`]).
    Server,
}

/// The first error wins; later ones are its consequences.
#[derive(Default)]
pub(crate) struct FirstError(Mutex<Option<Error>>);

impl FirstError {
    pub(crate) fn set(&self, e: Error) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
    }
    pub(crate) fn is_set(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }
    /// Takes the recorded error, if any, as a result.
    pub(crate) fn result(&self) -> Result<()> {
        match self.0.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Worker count: one per core, at most 8.
pub(crate) fn default_workers(n: usize) -> usize {
    match n {
        0 => std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .min(8),
        n => n,
    }
}

/// One hashed piece of a batch.
pub(crate) enum Hashed {
    Hole(u64),
    Unused(u64),
    Known {
        id: ChunkId,
        len: u32,
    },
    New {
        id: ChunkId,
        len: u32,
        codec: Codec,
        start: usize,
        end: usize,
    },
}

/// A batch after hashing; `stored` holds the stored forms of its new chunks.
pub(crate) struct Done<T> {
    seq: u64,
    pub(crate) tag: T,
    pub(crate) pieces: Vec<Hashed>,
    pub(crate) stored: Vec<u8>,
}

/// Where the pieces of a stream go: a chunk list or a file's content.
pub(crate) trait PieceSink {
    /// Zero bytes.
    fn hole(&mut self, len: u64);
    /// Bytes whose content does not matter; zeros unless the sink keeps
    /// the difference.
    fn unused(&mut self, len: u64) {
        self.hole(len);
    }
    /// A chunk.
    fn chunk(&mut self, id: ChunkId, len: u32);
}

impl PieceSink for ChunkList {
    fn hole(&mut self, len: u64) {
        self.push_hole(len);
    }
    fn unused(&mut self, len: u64) {
        self.push_unused(len);
    }
    fn chunk(&mut self, id: ChunkId, len: u32) {
        self.push_chunk(id, len);
    }
}

/// Emits a batch to the pipeline; false once downstream has stopped.
pub(crate) type Emit<'e, T> = dyn FnMut(Batch, T) -> bool + 'e;

pub(crate) type PackJob = (ObjectId, Vec<u8>, Vec<PackEntry>);

/// Captures `req.sources` into a new image in `lib`.
pub fn capture(
    lib: &Library,
    req: &CaptureRequest,
    progress: &dyn ProgressSink,
) -> Result<Manifest> {
    let started = Instant::now();
    let _lock = lib.begin_capture(&req.name, req.parent.as_deref())?;
    if req.sources.is_empty() {
        return Err(Error::Source {
            path: String::new(),
            reason: "no source given".into(),
        });
    }
    let sources = req
        .sources
        .iter()
        .map(|p| Source::open(p))
        .collect::<Result<Vec<_>>>()?;
    let plans = sources
        .iter()
        .map(|src| match req.mode {
            DiskMode::Raw => Ok(DiskPlan::raw(src)),
            DiskMode::Server => DiskPlan::server(src),
        })
        .collect::<Result<Vec<_>>>()?;
    let regions = sources
        .iter()
        .map(Source::data_regions)
        .collect::<Result<Vec<_>>>()?;
    let total: u64 = plans
        .iter()
        .zip(&regions)
        .flat_map(|(p, r)| p.segments.iter().map(move |seg| seg.to_read(r)))
        .sum();
    let index = lib.load_index()?;
    let workers = default_workers(req.workers);

    let errors = FirstError::default();
    let read = AtomicU64::new(0);
    let mut throttle = Throttle::new(progress, "capture", total);
    let (pack_tx, pack_rx) = bounded::<PackJob>(PACKS_QUEUED);
    let mut collector = Collector::new(&index, lib.compression(), pack_tx);

    let (lists, unflushed) = std::thread::scope(|s| {
        let writer = s.spawn(|| pack_writer(lib, pack_rx, &errors));
        let mut lists: Vec<Vec<ChunkList>> = Vec::new();
        'disks: for ((src, plan), regs) in sources.iter().zip(&plans).zip(&regions) {
            let mut disk = Vec::new();
            for seg in &plan.segments {
                let list = capture_stream(
                    s,
                    lib.chunker(),
                    src,
                    seg,
                    regs,
                    workers,
                    &mut collector,
                    &read,
                    &mut throttle,
                    &errors,
                );
                match list {
                    Some(l) => disk.push(l),
                    None => break 'disks,
                }
            }
            lists.push(disk);
        }
        collector.close(&errors);
        let unflushed = writer.join().expect("the pack writer does not panic");
        (lists, unflushed)
    });
    errors.result()?;
    throttle.finish(read.load(Ordering::Relaxed));
    if !unflushed.is_empty() {
        lib.write_index(&unflushed)?;
    }

    let mut disks = Vec::new();
    for (i, ((disk_lists, src), plan)) in lists.iter().zip(&sources).zip(&plans).enumerate() {
        let mut streams = Vec::new();
        for list in disk_lists {
            streams.push(stream_summary(list, lib.write_list(list)?));
        }
        disks.push(Disk {
            name: format!("disk{i}"),
            source: src.path.clone(),
            size: src.size,
            content: plan.content(streams),
        });
    }
    let mut stats = collector.stats;
    stats.bytes_read = read.load(Ordering::Relaxed);
    stats.seconds = started.elapsed().as_secs_f64();
    let manifest = Manifest::new(
        req.name.clone(),
        req.parent.clone(),
        lib.chunker().clone(),
        disks,
        Vec::new(),
        stats,
    );
    lib.write_manifest(&manifest)?;
    Ok(manifest)
}

/// The manifest's description of a stored list.
fn stream_summary(list: &ChunkList, id: ObjectId) -> BlockStream {
    let (mut chunks, mut data, mut unused) = (0u64, 0u64, 0u64);
    for e in list.extents() {
        match e {
            Extent::Chunk { count, .. } => {
                chunks += u64::from(*count);
                data += e.bytes();
            }
            Extent::Unused { len } => unused += len,
            Extent::Hole { .. } => {}
        }
    }
    BlockStream {
        size: list.stream_len(),
        list: id,
        extents: list.extents().len() as u64,
        chunks,
        data_bytes: data,
        hole_bytes: list.stream_len() - data - unused,
        unused_bytes: unused,
    }
}

/// Collector state shared by all streams of one capture: the chunks seen,
/// the pack in the making, and the figures.
pub(crate) struct Collector<'a> {
    pub(crate) index: &'a Index,
    /// The library's compression, for every new chunk.
    pub(crate) compression: Compression,
    session: HashSet<ChunkId>,
    pack: PackBuilder,
    pack_tx: Option<Sender<PackJob>>,
    pub(crate) stats: CaptureStats,
}

impl<'a> Collector<'a> {
    pub(crate) fn new(
        index: &'a Index,
        compression: Compression,
        pack_tx: Sender<PackJob>,
    ) -> Self {
        Collector {
            index,
            compression,
            session: HashSet::new(),
            pack: PackBuilder::new(),
            pack_tx: Some(pack_tx),
            stats: CaptureStats::default(),
        }
    }

    /// Stores one batch's new chunks and routes every piece to `sink`.
    pub(crate) fn absorb<T>(&mut self, d: &Done<T>, sink: &mut dyn PieceSink, errors: &FirstError) {
        for p in &d.pieces {
            match *p {
                Hashed::Hole(n) => sink.hole(n),
                Hashed::Unused(n) => sink.unused(n),
                Hashed::Known { id, len } => {
                    self.stats.chunks += 1;
                    sink.chunk(id, len);
                }
                Hashed::New {
                    id,
                    len,
                    codec,
                    start,
                    end,
                } => {
                    self.stats.chunks += 1;
                    sink.chunk(id, len);
                    self.add(id, codec, len, &d.stored[start..end], errors);
                }
            }
        }
    }

    /// Adds a chunk's stored form unless the library or this capture has it.
    pub(crate) fn add(
        &mut self,
        id: ChunkId,
        codec: Codec,
        len: u32,
        stored: &[u8],
        errors: &FirstError,
    ) {
        if !self.index.contains(&id) && self.session.insert(id) {
            self.stats.chunks_new += 1;
            self.stats.bytes_new += u64::from(len);
            self.pack.add(id, codec, len as usize, stored);
            if self.pack.is_full() {
                self.flush_pack(errors);
            }
        }
    }

    /// Hands the pack in the making to the writer.
    pub(crate) fn flush_pack(&mut self, errors: &FirstError) {
        if self.pack.chunks() == 0 {
            return;
        }
        let (id, bytes, entries) = std::mem::take(&mut self.pack).finish();
        self.stats.stored_new += bytes.len() as u64;
        let sent = self
            .pack_tx
            .as_ref()
            .map(|tx| tx.send((id, bytes, entries)));
        if !matches!(sent, Some(Ok(()))) {
            // The writer stopped; it recorded why.
            debug_assert!(errors.is_set());
        }
    }

    /// Flushes the last pack and lets the writer finish.
    pub(crate) fn close(&mut self, errors: &FirstError) {
        if !errors.is_set() {
            self.flush_pack(errors);
        }
        self.pack_tx = None;
    }
}

/// Writes packs durably, and an index file every [`FLUSH_PACKS`] packs.
/// Returns the entries of packs not yet covered by an index file.
///
/// Each pack is finished (fsynced and put in place) only after the next one
/// is written: its flush to the disk, started when it was written, goes on
/// meanwhile, so the capture rarely waits for it. An index file only ever
/// lists finished packs.
pub(crate) fn pack_writer(lib: &Library, rx: Receiver<PackJob>, errors: &FirstError) -> Index {
    let mut pending = Index::new();
    let mut packs = 0;
    let mut unfinished: Option<(PendingPack, ObjectId, Vec<PackEntry>)> = None;
    let mut finish = |p: Option<(PendingPack, ObjectId, Vec<PackEntry>)>| -> Result<()> {
        let Some((put, id, entries)) = p else {
            return Ok(());
        };
        put.finish()?;
        pending.add_pack(id, &entries);
        packs += 1;
        if packs % FLUSH_PACKS == 0 {
            lib.write_index(&pending)?;
            pending = Index::new();
        }
        Ok(())
    };
    for (id, bytes, entries) in rx {
        let step = lib.start_pack(&id, &bytes).and_then(|put| {
            drop(bytes);
            finish(unfinished.replace((put, id, entries)))
        });
        if let Err(e) = step {
            errors.set(e);
            return Index::new();
        }
    }
    if let Err(e) = finish(unfinished.take()) {
        errors.set(e);
    }
    pending
}

/// Runs the hashing pipeline once: `produce` runs on a reader thread and
/// emits batches with a tag; workers compress new chunks with
/// `compression`; `consume` receives each hashed batch, in order, on the
/// calling thread. Returns false if the pipeline failed (the error is
/// in `errors`).
pub(crate) fn run_pipeline<'scope, 'env: 'scope, T: Send + 'scope>(
    s: &'scope std::thread::Scope<'scope, 'env>,
    index: &'env Index,
    compression: Compression,
    workers: usize,
    errors: &'env FirstError,
    produce: impl FnOnce(&mut Emit<'_, T>) -> Result<()> + Send + 'scope,
    mut consume: impl FnMut(Done<T>),
) -> bool {
    let (batch_tx, batch_rx) = bounded::<(u64, Batch, T)>(MAX_IN_FLIGHT);
    let (done_tx, done_rx) = bounded::<Done<T>>(MAX_IN_FLIGHT);
    let (ticket_tx, ticket_rx) = bounded::<()>(MAX_IN_FLIGHT);
    for _ in 0..MAX_IN_FLIGHT {
        ticket_tx
            .send(())
            .expect("the ticket channel has room for every ticket");
    }
    let reader = s.spawn(move || {
        let mut seq = 0u64;
        let mut emit = |b: Batch, tag: T| {
            let ok = ticket_rx.recv().is_ok() && batch_tx.send((seq, b, tag)).is_ok();
            seq += 1;
            ok
        };
        if let Err(e) = produce(&mut emit) {
            errors.set(e);
        }
    });
    let hashers: Vec<_> = (0..workers)
        .map(|_| {
            let (rx, tx) = (batch_rx.clone(), done_tx.clone());
            s.spawn(move || hash_batches(index, compression, rx, tx))
        })
        .collect();
    drop((batch_rx, done_tx));

    let mut waiting: BTreeMap<u64, Done<T>> = BTreeMap::new();
    let mut next = 0u64;
    for done in done_rx.iter() {
        waiting.insert(done.seq, done);
        while let Some(d) = waiting.remove(&next) {
            next += 1;
            consume(d);
            let _ = ticket_tx.send(());
        }
        if errors.is_set() {
            break;
        }
    }
    drop((done_rx, ticket_tx));
    let _ = reader.join();
    for h in hashers {
        let _ = h.join();
    }
    !errors.is_set()
}

/// Runs the pipeline over one block source.
#[allow(clippy::too_many_arguments)]
fn capture_stream<'scope, 'env: 'scope>(
    s: &'scope std::thread::Scope<'scope, 'env>,
    params: &'env ChunkerParams,
    src: &'env Source,
    seg: &'env Segment,
    regions: &'env [(u64, u64)],
    workers: usize,
    collector: &mut Collector<'env>,
    read: &'env AtomicU64,
    throttle: &mut Throttle<'_>,
    errors: &'env FirstError,
) -> Option<ChunkList> {
    let mut list = ChunkList::new();
    let ok = run_pipeline(
        s,
        collector.index,
        collector.compression,
        workers,
        errors,
        move |emit| read_segment(src, seg, regions, params, emit, read),
        |d: Done<()>| {
            collector.absorb(&d, &mut list, errors);
            throttle.update(read.load(Ordering::Relaxed));
        },
    );
    ok.then_some(list)
}

/// A byte range of a source stored as one stream: `[base, base + len)`, of
/// which only `used` (relative, sorted, merged) is read when it is given;
/// the rest is recorded as unused.
#[derive(Clone, Debug)]
pub(crate) struct Segment {
    pub(crate) base: u64,
    pub(crate) len: u64,
    pub(crate) used: Option<Vec<(u64, u64)>>,
}

impl Segment {
    /// Bytes this segment reads: its used ranges that hold data.
    pub(crate) fn to_read(&self, data: &[(u64, u64)]) -> u64 {
        let whole = [(0, self.len)];
        let wanted = self.used.as_deref().unwrap_or(&whole);
        let mut n = 0;
        for &(s, e) in wanted {
            let (s, e) = (self.base + s, self.base + e.min(self.len));
            let first = data.partition_point(|r| r.1 <= s);
            for &(ds, de) in data[first..].iter().take_while(|r| r.0 < e) {
                n += de.min(e).saturating_sub(ds.max(s));
            }
        }
        n
    }
}

/// Reads a segment into the chunker: the used ranges that hold data are
/// read, sparse holes are fed as zeros without reading, and the ranges the
/// file system does not use are fed as unused.
pub(crate) fn read_segment(
    src: &Source,
    seg: &Segment,
    data: &[(u64, u64)],
    params: &ChunkerParams,
    emit: &mut Emit<'_, ()>,
    read: &AtomicU64,
) -> Result<()> {
    let stopped = Cell::new(false);
    let mut emit = |b: Batch| {
        if !stopped.get() && !emit(b, ()) {
            stopped.set(true);
        }
    };
    let mut chunker = Chunker::new(params);
    let mut buf = vec![0u8; READ_SIZE];
    let whole = [(0, seg.len)];
    let wanted = seg.used.as_deref().unwrap_or(&whole);
    let mut pos = 0u64; // relative to seg.base
    for &(s, e) in wanted {
        let (s, e) = (s.clamp(pos, seg.len), e.min(seg.len));
        if s >= e {
            continue;
        }
        chunker.feed_unused(s - pos, &mut emit);
        let (mut at, end) = (seg.base + s, seg.base + e);
        let first = data.partition_point(|r| r.1 <= at);
        for &(ds, de) in &data[first..] {
            if ds >= end {
                break;
            }
            let (ds, de) = (ds.max(at), de.min(end));
            chunker.feed_zeros(ds - at, &mut emit);
            let mut off = ds;
            while off < de {
                let n = READ_SIZE.min((de - off) as usize);
                src.file.read_exact_at(&mut buf[..n], off).map_err(|e| {
                    Error::io("reading", format!("{} at offset {off}", src.path), e)
                })?;
                chunker.feed(&buf[..n], &mut emit);
                off += n as u64;
                read.fetch_add(n as u64, Ordering::Relaxed);
                if stopped.get() {
                    return Ok(()); // downstream stopped and recorded why
                }
            }
            at = de;
        }
        chunker.feed_zeros(end - at, &mut emit);
        pos = e;
    }
    chunker.feed_unused(seg.len - pos, &mut emit);
    chunker.finish(&mut emit);
    Ok(())
}

/// Hashes every chunk; compresses the ones the library lacks.
fn hash_batches<T>(
    index: &Index,
    compression: Compression,
    rx: Receiver<(u64, Batch, T)>,
    tx: Sender<Done<T>>,
) {
    for (seq, batch, tag) in rx {
        let mut stored = Vec::new();
        let pieces = batch
            .pieces
            .iter()
            .map(|p| match *p {
                Piece::Hole(n) => Hashed::Hole(n),
                Piece::Unused(n) => Hashed::Unused(n),
                Piece::Chunk { start, len } => {
                    let data = &batch.data[start..start + len];
                    if is_zero(data) {
                        return Hashed::Hole(len as u64);
                    }
                    let h = HashedChunk::new(data);
                    let len = len as u32;
                    if index.contains(&h.id) {
                        return Hashed::Known { id: h.id, len };
                    }
                    let start = stored.len();
                    let codec = h.compress_into(&mut stored, compression);
                    Hashed::New {
                        id: h.id,
                        len,
                        codec,
                        start,
                        end: stored.len(),
                    }
                }
            })
            .collect();
        if tx
            .send(Done {
                seq,
                tag,
                pieces,
                stored,
            })
            .is_err()
        {
            return;
        }
    }
}
