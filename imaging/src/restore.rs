//! Restore: an image's block stream onto a file or block device.
//!
//! Every chunk is verified against its BLAKE3 id before it is written; a bad
//! chunk stops the restore with an error naming the chunk and pack, and its
//! bytes never reach the target.
//!
//! **Seeding.** Before fetching a chunk, the target's bytes at that offset
//! are hashed; if they already match (an interrupted restore, or an older
//! version of the image), nothing is fetched or written. Ranges of a file
//! target that are holes, and a target created by this restore, are known to
//! read zeros without being read. Rerunning an interrupted restore therefore
//! redoes only what is missing.
//!
//! **Holes** are punched in file targets (which stay sparse). On a block
//! device they are zeroed with `BLKZEROOUT`, unless the caller says the
//! device already reads zeros.
//!
//! Pipeline: the planner walks the chunk list, seeds, and plans pack reads
//! (merging adjacent records into one read of up to [`READ_BATCH`] bytes);
//! workers decompress, verify and write with positional writes, coalescing
//! contiguous chunks into one write. On a local store the planner reads
//! the planned ranges itself. On a network store
//! ([`crate::store::Store::parallel_reads`]) a pool of fetch threads
//! performs them concurrently under an adaptive limit
//! (`remote::adaptive`: grows while throughput grows, from 4 up to
//! [`MAX_FETCHES`]); writes are positional, so batches land in any order.
//! Each write is handed to a [`Writeback`] thread, which starts its flush to
//! the disk at once: the final fsync then finds little left to write.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver};
use serde::Serialize;

use crate::capture::{default_workers, FirstError};
use crate::chunk::ChunkId;
use crate::chunklist::{ChunkList, Extent};
use crate::device::{DeviceKind, Target, Writeback};
use crate::error::{Error, Result};
use crate::index::{Index, Location};
use crate::library::Library;
use crate::manifest::{BlockStream, DiskContent};
use crate::progress::{ProgressSink, Throttle};
use crate::remote::adaptive::Limiter;
use crate::store::LockMode;

/// Pack bytes read per batch.
pub const READ_BATCH: usize = 4 << 20;
/// The last bytes to fetch are read in batches of at most [`TAIL_BATCH`]:
/// at the end, the last few 4 MiB reads were left to one or two
/// connections holding a 1/N share of the link (BBR takes seconds to claim
/// the rest back), which cost up to 2.5 s of a 38 s restore at 100 Mbit/s,
/// 50 ms RTT (tests/bench/net.sh). 64 MiB: more than the 4 MiB reads in
/// flight at the 11 to 20 connections the limiter reaches there.
const TAIL: u64 = 64 << 20;
/// Batch size within [`TAIL`]: small enough that the last reads spread
/// over every connection and finish together.
const TAIL_BATCH: usize = 256 << 10;
/// Batches queued for workers.
const QUEUE: usize = 4;
/// The most range reads in flight from a network store (at [`READ_BATCH`]
/// each, the client's buffer ceiling is 128 MiB).
pub const MAX_FETCHES: usize = 32;

/// How to restore.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Which disk of the image (0 for single-disk images).
    pub disk: usize,
    /// Do not compare the target's existing bytes; write everything.
    pub no_seed: bool,
    /// The block device is known to read zeros already: skip zeroing holes.
    pub target_zeroed: bool,
    /// Decode/verify/write threads; 0 means one per core.
    pub workers: usize,
}

/// What a restore did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RestoreStats {
    /// Image size in bytes.
    pub bytes_total: u64,
    /// Bytes written to the target.
    pub bytes_written: u64,
    /// Bytes already correct on the target, not rewritten.
    pub bytes_seeded: u64,
    /// Bytes of holes.
    pub bytes_holes: u64,
    /// Bytes the file system does not use, left as they were.
    pub bytes_unused: u64,
    /// Chunks fetched from the library and verified.
    pub chunks_fetched: u64,
    /// Stored bytes read from the library.
    pub bytes_fetched: u64,
    /// Range reads in flight at most (1 for a local store, whose reads the
    /// planner does itself; the adaptive limit's peak for a network store).
    pub read_concurrency: usize,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// One chunk to fetch: where it goes, where it is, and its slice of the batch.
struct Job {
    target_off: u64,
    loc: Location,
    at: usize,
}

/// One planned read: `len` bytes of pack `pack` at `start`, into the
/// batch's data at `at`.
struct Read {
    pack: u32,
    start: u64,
    len: usize,
    at: usize,
}

struct ReadBatch {
    data: Vec<u8>,
    /// The batch's size once its reads are done.
    len: usize,
    reads: Vec<Read>,
    jobs: Vec<Job>,
}

impl ReadBatch {
    /// Performs the planned reads into `data`.
    fn read(&mut self, lib: &Library, index: &Index) -> Result<()> {
        self.data.resize(self.len, 0);
        for r in &self.reads {
            lib.read_pack_range(
                &index.pack_id(r.pack),
                r.start,
                &mut self.data[r.at..r.at + r.len],
            )?;
        }
        Ok(())
    }
}

/// Restores disk `opts.disk` of image `name` onto `target`. Only raw
/// (`whole`) disks restore this way; a server image's partitioned disks are
/// deployed (a partition table is planned and written first).
pub fn restore(
    lib: &Library,
    name: &str,
    target: &Path,
    opts: &RestoreOptions,
    progress: &dyn ProgressSink,
) -> Result<RestoreStats> {
    let _lock = lib.lock(LockMode::Shared)?;
    let manifest = lib.manifest(name)?;
    let Some(disk) = manifest.disks.get(opts.disk) else {
        return Err(Error::Config {
            library: lib.location(),
            reason: format!(
                "image {name:?} has {} disk(s); there is no disk {}",
                manifest.disks.len(),
                opts.disk
            ),
        });
    };
    let DiskContent::Whole { stream } = &disk.content else {
        return Err(Error::Config {
            library: lib.location(),
            reason: format!(
                "disk {} of image {name:?} is a server disk (partition table plus one stream \
                 per partition): deploy it with `ferry deploy {name} --target <DISK>`",
                disk.name
            ),
        });
    };
    let index = lib.load_index()?;
    check_present(&lib.read_list(&stream.list)?, &index, name)?;
    let target = Target::open(target, stream.size, name)?;
    if target.kind == DeviceKind::File {
        if let Some(free) = target.free_space() {
            let need = stream.data_bytes.saturating_sub(target.allocated());
            if free < need {
                return Err(Error::TargetTooSmall {
                    target: format!("the file system holding {}", target.path),
                    have: free,
                    need,
                    image: name.into(),
                });
            }
        }
    }
    let stats = restore_stream(lib, &index, name, stream, &target, 0, opts, progress)?;
    target
        .file
        .sync_all()
        .map_err(|e| Error::io("flushing", &target.path, e))?;
    Ok(stats)
}

/// Fails unless every chunk of `list` is in the library, so nothing is
/// written for an image that cannot be restored whole.
pub(crate) fn check_present(list: &ChunkList, index: &Index, image: &str) -> Result<()> {
    for e in list.extents() {
        if let Extent::Chunk { id, .. } = e {
            if !index.contains(id) {
                return Err(Error::MissingChunk {
                    id: *id,
                    image: image.into(),
                });
            }
        }
    }
    Ok(())
}

/// Writes one stream of image `image` onto `target` from byte `base`
/// (a partition's offset on a disk), verifying, seeding and zeroing as
/// [`restore`] does. The caller holds the library lock, checked the
/// target's size and syncs it afterwards.
#[allow(clippy::too_many_arguments)]
pub fn restore_stream(
    lib: &Library,
    index: &Index,
    image: &str,
    stream: &BlockStream,
    target: &Target,
    base: u64,
    opts: &RestoreOptions,
    progress: &dyn ProgressSink,
) -> Result<RestoreStats> {
    let started = Instant::now();
    let list = lib.read_list(&stream.list)?;
    check_present(&list, index, image)?;
    let mut stats = RestoreStats {
        bytes_total: stream.size,
        ..Default::default()
    };
    let written = AtomicU64::new(0);
    let errors = FirstError::default();
    let workers = default_workers(opts.workers);
    let mut throttle = Throttle::new(progress, "restore", stream.size);
    let (tx, rx) = bounded::<ReadBatch>(QUEUE);
    let parallel = lib.store().parallel_reads();
    let limiter = Limiter::new(MAX_FETCHES);

    std::thread::scope(|s| {
        let writeback = Writeback::spawn(s);
        let mut handles: Vec<_> = (0..workers)
            .map(|_| {
                let rx = rx.clone();
                let (lib, target, written, errors, writeback) =
                    (lib, target, &written, &errors, writeback.clone());
                s.spawn(move || write_batches(lib, index, target, rx, written, errors, writeback))
            })
            .collect();
        drop(rx);
        // Network stores: planned batches go to the fetch pool, which
        // passes them on, read, to the workers.
        let to_workers = tx.clone();
        let (fetch_tx, fetch_rx) = bounded::<ReadBatch>(MAX_FETCHES);
        let planned_tx = if parallel {
            for _ in 0..MAX_FETCHES {
                let (rx, tx) = (fetch_rx.clone(), to_workers.clone());
                let (limiter, errors) = (&limiter, &errors);
                handles.push(s.spawn(move || fetch_batches(lib, index, rx, tx, limiter, errors)));
            }
            Some(fetch_tx)
        } else {
            None
        };
        drop((fetch_rx, to_workers));
        let mut planner = Planner {
            to_plan: bytes_to_fetch(&list, index),
            lib,
            index,
            target,
            batch: None,
            tx,
            fetch_tx: planned_tx,
        };
        let planned = planner.run(
            list.extents(),
            base,
            opts,
            &mut stats,
            &mut throttle,
            &written,
            &errors,
        );
        if let Err(e) = planned {
            errors.set(e);
        }
        drop(planner);
        for h in handles {
            let _ = h.join();
        }
    });
    errors.result()?;
    stats.bytes_written = written.load(Ordering::Relaxed);
    stats.read_concurrency = if parallel { limiter.peak() } else { 1 };
    throttle.finish(stream.size);
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(stats)
}

struct Planner<'a> {
    /// Record bytes not yet planned (an upper bound: seeded chunks are
    /// counted until passed).
    to_plan: u64,
    lib: &'a Library,
    index: &'a Index,
    target: &'a Target,
    batch: Option<ReadBatch>,
    tx: crossbeam_channel::Sender<ReadBatch>,
    /// The fetch pool's queue, for a network store.
    fetch_tx: Option<crossbeam_channel::Sender<ReadBatch>>,
}

impl Planner<'_> {
    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        extents: &[Extent],
        base: u64,
        opts: &RestoreOptions,
        stats: &mut RestoreStats,
        throttle: &mut Throttle<'_>,
        written: &AtomicU64,
        errors: &FirstError,
    ) -> Result<()> {
        let mut pos = base;
        let mut seed_buf = Vec::new();
        let mut pending: Vec<(u64, Location)> = Vec::new();
        for e in extents {
            if errors.is_set() {
                return Ok(());
            }
            match *e {
                Extent::Hole { len } => {
                    stats.bytes_holes += len;
                    self.hole(pos, len, opts)?;
                    pos += len;
                }
                Extent::Unused { len } => {
                    stats.bytes_unused += len;
                    pos += len;
                }
                Extent::Chunk { id, len, count } => {
                    let loc = *self
                        .index
                        .get(&id)
                        .expect("presence checked before writing");
                    for _ in 0..count {
                        if !opts.no_seed && self.seeded(&id, pos, len, &mut seed_buf)? {
                            stats.bytes_seeded += u64::from(len);
                            self.to_plan =
                                self.to_plan.saturating_sub(loc.entry.record_len() as u64);
                        } else {
                            pending.push((pos, loc));
                            stats.chunks_fetched += 1;
                            stats.bytes_fetched += loc.entry.record_len() as u64;
                        }
                        pos += u64::from(len);
                    }
                }
            }
            if pending.len() >= 64 {
                self.fetch(&mut pending)?;
            }
            throttle.update(
                stats.bytes_seeded
                    + stats.bytes_holes
                    + stats.bytes_unused
                    + written.load(Ordering::Relaxed),
            );
        }
        self.fetch(&mut pending)?;
        self.send()
    }

    /// True if the target already holds chunk `id` at `pos`.
    fn seeded(&self, id: &ChunkId, pos: u64, len: u32, buf: &mut Vec<u8>) -> Result<bool> {
        let t = self.target;
        if t.known_zero(pos, u64::from(len))
            .map_err(|e| Error::io("probing", &t.path, e))?
        {
            return Ok(false); // chunks are never all zeros
        }
        buf.resize(len as usize, 0);
        t.file
            .read_exact_at(buf, pos)
            .map_err(|e| Error::io("reading", format!("{} at offset {pos}", t.path), e))?;
        Ok(ChunkId::of(buf) == *id)
    }

    fn hole(&self, pos: u64, len: u64, opts: &RestoreOptions) -> Result<()> {
        self.target.ensure_zero(pos, len, opts.target_zeroed)
    }

    /// Plans reads of the records of `pending` chunks into batches, one
    /// read per run of adjacent records in a pack.
    fn fetch(&mut self, pending: &mut Vec<(u64, Location)>) -> Result<()> {
        let mut i = 0;
        while i < pending.len() {
            let cap = if self.to_plan <= TAIL {
                TAIL_BATCH
            } else {
                READ_BATCH
            };
            let first = pending[i].1;
            let mut j = i + 1;
            let mut end = u64::from(first.entry.offset) + first.entry.record_len() as u64;
            while j < pending.len() {
                let l = pending[j].1;
                if l.pack != first.pack
                    || u64::from(l.entry.offset) != end
                    || (end - u64::from(first.entry.offset)) as usize >= cap
                {
                    break;
                }
                end += l.entry.record_len() as u64;
                j += 1;
            }
            let start = u64::from(first.entry.offset);
            let batch = self.batch.get_or_insert_with(|| ReadBatch {
                data: Vec::new(),
                len: 0,
                reads: Vec::new(),
                jobs: Vec::new(),
            });
            let base = batch.len;
            batch.len += (end - start) as usize;
            self.to_plan = self.to_plan.saturating_sub(end - start);
            batch.reads.push(Read {
                pack: first.pack,
                start,
                len: (end - start) as usize,
                at: base,
            });
            for (target_off, loc) in &pending[i..j] {
                let at = base + (u64::from(loc.entry.offset) - start) as usize;
                batch.jobs.push(Job {
                    target_off: *target_off,
                    loc: *loc,
                    at,
                });
            }
            if batch.len >= cap {
                self.send()?;
            }
            i = j;
        }
        pending.clear();
        Ok(())
    }

    /// Hands the current batch on: to the fetch pool, or (local store)
    /// read here and on to the workers.
    fn send(&mut self) -> Result<()> {
        let Some(mut b) = self.batch.take() else {
            return Ok(());
        };
        // A closed channel means the workers stopped on an error they recorded.
        match &self.fetch_tx {
            Some(fetch) => {
                let _ = fetch.send(b);
            }
            None => {
                b.read(self.lib, self.index)?;
                let _ = self.tx.send(b);
            }
        }
        Ok(())
    }
}

/// The record bytes a restore of `list` fetches with nothing seeded.
fn bytes_to_fetch(list: &ChunkList, index: &Index) -> u64 {
    list.extents()
        .iter()
        .filter_map(|e| match e {
            Extent::Chunk { id, count, .. } => index
                .get(id)
                .map(|l| l.entry.record_len() as u64 * u64::from(*count)),
            _ => None,
        })
        .sum()
}

/// A fetch thread: performs planned batches' reads under the adaptive
/// limit and passes them to the workers. It takes its place under the
/// limit before it takes a batch, so batches are fetched in plan order
/// (the tail's small batches last) and at most `limit` are taken.
fn fetch_batches(
    lib: &Library,
    index: &Index,
    rx: Receiver<ReadBatch>,
    tx: crossbeam_channel::Sender<ReadBatch>,
    limiter: &Limiter,
    errors: &FirstError,
) {
    loop {
        limiter.acquire();
        let Ok(mut batch) = rx.recv() else {
            limiter.cancel();
            return;
        };
        if errors.is_set() {
            limiter.cancel();
            return;
        }
        let result = batch.read(lib, index);
        limiter.release(batch.len as u64, result.is_ok());
        match result {
            Ok(()) => {
                if tx.send(batch).is_err() {
                    return;
                }
            }
            Err(e) => {
                errors.set(e);
                return;
            }
        }
    }
}

/// Verifies each chunk and writes runs of contiguous chunks with one write.
fn write_batches<'t>(
    lib: &Library,
    index: &Index,
    target: &'t Target,
    rx: Receiver<ReadBatch>,
    written: &AtomicU64,
    errors: &FirstError,
    writeback: Writeback<&'t File>,
) {
    let mut run: Vec<u8> = Vec::new();
    let mut run_start = 0u64;
    let mut scratch = Vec::new();
    let flush = |run: &mut Vec<u8>, at: u64| -> Result<()> {
        if !run.is_empty() {
            target
                .file
                .write_all_at(run, at)
                .map_err(|e| Error::io("writing", format!("{} at offset {at}", target.path), e))?;
            writeback.start(&target.file, at, run.len() as u64);
            written.fetch_add(run.len() as u64, Ordering::Relaxed);
            run.clear();
        }
        Ok(())
    };
    for batch in rx {
        let result = (|| {
            for job in &batch.jobs {
                let record = &batch.data[job.at..job.at + job.loc.entry.record_len()];
                let chunk =
                    lib.verify_record(index, &job.loc, record, std::mem::take(&mut scratch))?;
                if run_start + run.len() as u64 != job.target_off || run.len() >= READ_BATCH {
                    flush(&mut run, run_start)?;
                    run_start = job.target_off;
                }
                run.extend_from_slice(chunk.data());
                scratch = chunk.into_data();
            }
            flush(&mut run, run_start)
        })();
        if let Err(e) = result {
            errors.set(e);
            return;
        }
        if errors.is_set() {
            return;
        }
    }
}
