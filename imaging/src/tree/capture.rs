//! File-tree capture: a directory, or an unmounted ext2/3/4 file system,
//! into a file-tree stream.
//!
//! The walk runs on the pipeline's reader thread: each entry goes down the
//! pipeline with its file's batches (one chunker per file, so a file's cut
//! points depend only on its content), and the collector writes finished
//! entries as JSON lines into the metadata stream, chunked like any stream.
//!
//! **Files cache.** Re-captures are fast: the entries of the parent image (or
//! of the newest image of the same source) are loaded, and a regular file
//! whose inode, size, mtime and ctime are unchanged, on the same source
//! device or file system, reuses its recorded content without being read.

use std::cell::Cell;
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crossbeam_channel::bounded;

use crate::capture::{
    default_workers, pack_writer, run_pipeline, Collector, Done, Emit, FirstError, PieceSink,
    PACKS_QUEUED,
};
use crate::chunk::{ChunkId, HashedChunk};
use crate::chunker::{Batch, Chunker, ChunkerParams, Piece};
use crate::chunklist::ChunkList;
use crate::error::{Error, Result};
use crate::index::Index;
use crate::library::Library;
use crate::manifest::{FsInfo, Manifest, Tree, TreeStream};
use crate::progress::{ProgressSink, Throttle};
use crate::tree::entry::{Content, Entry, FileExtent, FileStamp, Kind};
use crate::tree::read::read_entries;
use crate::tree::walk::{walk_dir, WalkOptions, LIVE_ROOT_EXCLUDES};

/// Bytes read per call from a file.
const READ_SIZE: usize = 1 << 20;

/// What to capture.
#[derive(Clone, Debug, Default)]
pub struct TreeCaptureRequest {
    /// The new image's name.
    pub name: String,
    /// The image this one succeeds; also the files cache.
    pub parent: Option<String>,
    /// A directory, or an ext2/3/4 partition or image.
    pub source: PathBuf,
    /// Glob patterns to leave out (see [`crate::tree::walk`]).
    pub excludes: Vec<String>,
    /// Descend into other mounted file systems.
    pub cross_file_systems: bool,
    /// Do not skip the contents of /proc, /sys, /dev, /run and /tmp when
    /// capturing `/`.
    pub no_default_excludes: bool,
    /// Hash/compress threads; 0 means one per core.
    pub workers: usize,
}

impl PieceSink for Content {
    fn hole(&mut self, len: u64) {
        if let Some(FileExtent::Hole { hole }) = self.extents.last_mut() {
            *hole += len;
        } else {
            self.extents.push(FileExtent::Hole { hole: len });
        }
    }
    fn chunk(&mut self, id: ChunkId, len: u32) {
        self.extents.push(FileExtent::Chunk { id, len });
    }
}

/// A tree to capture from. Opened on the caller's thread for its identity;
/// walked on the pipeline's reader thread, where a source opens what it
/// walks inside `walk`.
pub(crate) trait TreeSource: Sync {
    /// For messages and the manifest.
    fn describe(&self) -> String;
    /// Identity for the files cache.
    fn source_id(&self) -> String;
    /// File-system facts, for unmounted sources.
    fn filesystem(&self) -> Option<FsInfo>;
    /// Walks the tree in walk order; `visit` gets each entry and a feeder
    /// for regular files' content. Files for which `known` says yes will
    /// not be fed: a source need not read them ahead.
    fn walk(
        &self,
        known: &dyn Fn(&FileStamp) -> bool,
        visit: &mut dyn FnMut(Entry, &mut dyn Feeder) -> Result<()>,
    ) -> Result<()>;
}

/// Feeds one regular file's content into a chunker.
pub(crate) trait Feeder {
    /// Feeds `entry`'s content, exactly `entry.size` bytes.
    fn feed(
        &mut self,
        entry: &Entry,
        chunker: &mut Chunker,
        emit: &mut dyn FnMut(Batch),
        read: &AtomicU64,
    ) -> Result<()>;
}

/// A mounted directory.
struct DirSource {
    root: PathBuf,
    opts: WalkOptions,
    dev: u64,
}

impl TreeSource for DirSource {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }
    fn source_id(&self) -> String {
        format!("dev:{}", self.dev)
    }
    fn filesystem(&self) -> Option<FsInfo> {
        None
    }
    fn walk(
        &self,
        known: &dyn Fn(&FileStamp) -> bool,
        visit: &mut dyn FnMut(Entry, &mut dyn Feeder) -> Result<()>,
    ) -> Result<()> {
        let mut feeder = DirFeeder { root: &self.root };
        let stats = walk_dir(&self.root, &self.opts, known, &mut |e| {
            visit(e, &mut feeder)
        })?;
        if stats.sockets + stats.vanished + stats.mounts > 0 {
            tracing::info!(
                "skipped {} socket(s), {} vanished entr(ies), {} other file system(s)",
                stats.sockets,
                stats.vanished,
                stats.mounts
            );
        }
        Ok(())
    }
}

struct DirFeeder<'a> {
    root: &'a Path,
}

impl Feeder for DirFeeder<'_> {
    fn feed(
        &mut self,
        entry: &Entry,
        chunker: &mut Chunker,
        emit: &mut dyn FnMut(Batch),
        read: &AtomicU64,
    ) -> Result<()> {
        let path = self.root.join(std::ffi::OsStr::from_bytes(&entry.path.0));
        let p = path.display().to_string();
        let mut opts = std::fs::OpenOptions::new();
        opts.read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NOATIME);
        let file = match opts.open(&path) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                // O_NOATIME needs ownership; read without it.
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
            }
            r => r,
        }
        .map_err(|e| Error::io("opening", &p, e))?;
        let size = file
            .metadata()
            .map_err(|e| Error::io("reading", &p, e))?
            .size();
        if size != entry.size {
            tracing::warn!(
                "{p} changed size during the capture ({} -> {size} bytes)",
                entry.size
            );
        }
        // Read exactly the size the entry records, so content and size agree.
        let regions = crate::device::data_regions(&file, entry.size.min(size), &p)?;
        let mut buf = vec![0u8; READ_SIZE];
        let mut pos = 0u64;
        for (start, end) in regions {
            chunker.feed_zeros(start - pos, emit);
            let mut off = start;
            while off < end {
                let n = READ_SIZE.min((end - off) as usize);
                file.read_exact_at(&mut buf[..n], off)
                    .map_err(|e| Error::io("reading", format!("{p} at offset {off}"), e))?;
                chunker.feed(&buf[..n], emit);
                off += n as u64;
                read.fetch_add(n as u64, Ordering::Relaxed);
            }
            pos = end;
        }
        chunker.feed_zeros(entry.size - pos.min(entry.size), emit);
        Ok(())
    }
}

/// What travels with a batch: finished entries that precede it in walk
/// order (metadata-only entries and cached files, sent in groups rather than
/// one batch each), the entry the batch starts, and whether it ends it.
struct Tag {
    before: Vec<Entry>,
    entry: Option<Box<Entry>>,
    last: bool,
}

/// Finished entries are sent in groups of this many.
const ENTRY_GROUP: usize = 512;

/// The files cache: the previous capture's regular files by inode.
struct FilesCache {
    files: HashMap<u64, Entry>,
}

impl FilesCache {
    fn load(
        lib: &Library,
        req: &TreeCaptureRequest,
        source: &dyn TreeSource,
    ) -> Result<FilesCache> {
        let mut files = HashMap::new();
        let image = match &req.parent {
            Some(p) => Some(p.clone()),
            None => {
                // The newest image of the same source.
                let mut best: Option<(time::OffsetDateTime, String)> = None;
                for name in lib.image_names()? {
                    let Ok(m) = lib.manifest(&name) else { continue };
                    if m.trees.iter().any(|t| t.source == source.describe())
                        && best.as_ref().is_none_or(|b| m.created > b.0)
                    {
                        best = Some((m.created, name));
                    }
                }
                best.map(|b| b.1)
            }
        };
        if let Some(name) = image {
            let m = lib.manifest(&name)?;
            if let Some(t) = m
                .trees
                .iter()
                .find(|t| t.stream.source_id == source.source_id())
            {
                for e in read_entries(lib, &t.stream)? {
                    if e.kind == Kind::File && e.hardlink.is_none() && e.content.is_some() {
                        files.insert(e.ino, e);
                    }
                }
                tracing::debug!("files cache: {} files from image {name}", files.len());
            }
        }
        Ok(FilesCache { files })
    }

    /// Whether a file with this stamp was recorded in the parent.
    fn knows(&self, s: &FileStamp) -> bool {
        self.files.get(&s.ino).is_some_and(|c| c.stamp() == *s)
    }

    /// The recorded content of `e`, if it is unchanged and fully stored.
    fn content(&self, e: &Entry, index: &Index) -> Option<Content> {
        let c = self.files.get(&e.ino)?;
        let same = c.stamp() == e.stamp();
        let content = c.content.as_ref()?;
        let stored = content.extents.iter().all(|x| match x {
            FileExtent::Chunk { id, .. } => index.contains(id),
            FileExtent::Hole { .. } => true,
        });
        (same && stored).then(|| content.clone())
    }
}

/// Opens the source of a tree capture.
fn open_source(req: &TreeCaptureRequest) -> Result<Box<dyn TreeSource>> {
    let meta = std::fs::metadata(&req.source)
        .map_err(|e| Error::io("opening", req.source.display(), e))?;
    if meta.is_dir() {
        let root = req
            .source
            .canonicalize()
            .map_err(|e| Error::io("resolving", req.source.display(), e))?;
        let mut excludes = req.excludes.clone();
        if root == Path::new("/") && !req.no_default_excludes {
            excludes.extend(LIVE_ROOT_EXCLUDES.iter().map(|s| s.to_string()));
        }
        return Ok(Box::new(DirSource {
            root,
            opts: WalkOptions {
                cross_file_systems: req.cross_file_systems,
                excludes,
            },
            dev: meta.dev(),
        }));
    }
    Ok(Box::new(crate::tree::ext4src::Ext4Source::open(
        &req.source,
    )?))
}

/// Captures a file tree into a new image.
pub fn capture_tree(
    lib: &Library,
    req: &TreeCaptureRequest,
    progress: &dyn ProgressSink,
) -> Result<Manifest> {
    let started = Instant::now();
    let _lock = lib.begin_capture(&req.name, req.parent.as_deref())?;
    let source = open_source(req)?;
    let cache = FilesCache::load(lib, req, source.as_ref())?;
    let index = lib.load_index()?;
    let workers = default_workers(req.workers);
    let params = lib.chunker().clone();

    let errors = FirstError::default();
    let read = AtomicU64::new(0);
    let cached = AtomicU64::new(0);
    let mut throttle = Throttle::new(progress, "capture", 0);
    let (pack_tx, pack_rx) = bounded(PACKS_QUEUED);
    let mut collector = Collector::new(&index, lib.compression(), pack_tx);
    let mut meta = MetaStream::new(&params);
    let mut current: Option<(Entry, Content)> = None;
    let mut summary = TreeStream {
        metadata: ChunkId([0; 32]),
        metadata_bytes: 0,
        entries: 0,
        files: 0,
        data_bytes: 0,
        source_id: source.source_id(),
        filesystem: source.filesystem(),
    };

    let unflushed = std::thread::scope(|s| {
        let writer = s.spawn(|| pack_writer(lib, pack_rx, &errors));
        let (src, cache, index, read, cached, params) =
            (source.as_ref(), &cache, &index, &read, &cached, &params);
        let compression = lib.compression();
        run_pipeline(
            s,
            index,
            compression,
            workers,
            &errors,
            move |emit: &mut Emit<'_, Tag>| produce(src, cache, index, params, emit, read, cached),
            |d: Done<Tag>| {
                for e in &d.tag.before {
                    summary.add(e);
                    meta.push(e, &mut collector, &errors);
                }
                if let Some(e) = &d.tag.entry {
                    current = Some(((**e).clone(), Content::default()));
                }
                if let Some((_, content)) = current.as_mut() {
                    collector.absorb(&d, content, &errors);
                }
                if d.tag.last {
                    if let Some((mut e, content)) = current.take() {
                        if e.kind == Kind::File && e.hardlink.is_none() && e.content.is_none() {
                            e.content = Some(content);
                        }
                        summary.add(&e);
                        meta.push(&e, &mut collector, &errors);
                    }
                }
                throttle.update(read.load(Ordering::Relaxed) + cached.load(Ordering::Relaxed));
            },
        );
        if !errors.is_set() {
            meta.finish(&mut collector, &errors);
        }
        collector.close(&errors);
        writer.join().expect("the pack writer does not panic")
    });
    errors.result()?;
    throttle.finish(read.load(Ordering::Relaxed) + cached.load(Ordering::Relaxed));
    if !unflushed.is_empty() {
        lib.write_index(&unflushed)?;
    }
    summary.metadata_bytes = meta.list.stream_len();
    summary.metadata = lib.write_list(&meta.list)?;
    let mut stats = collector.stats;
    stats.bytes_read = read.load(Ordering::Relaxed);
    stats.seconds = started.elapsed().as_secs_f64();
    let tree = Tree {
        name: "tree0".into(),
        source: source.describe(),
        stream: summary,
    };
    let manifest = Manifest::new(
        req.name.clone(),
        req.parent.clone(),
        params,
        Vec::new(),
        vec![tree],
        stats,
    );
    lib.write_manifest(&manifest)?;
    Ok(manifest)
}

impl TreeStream {
    /// Counts a finished entry.
    fn add(&mut self, e: &Entry) {
        self.entries += 1;
        if e.kind == Kind::File && e.hardlink.is_none() {
            self.files += 1;
            self.data_bytes += e.size;
        }
    }
}

/// The reader thread: walks the source and emits each entry with its
/// file's batches.
fn produce(
    src: &dyn TreeSource,
    cache: &FilesCache,
    index: &Index,
    params: &ChunkerParams,
    emit: &mut Emit<'_, Tag>,
    read: &AtomicU64,
    cached: &AtomicU64,
) -> Result<()> {
    let stopped = Cell::new(false);
    let mut finished: Vec<Entry> = Vec::new();
    let known = |s: &FileStamp| cache.knows(s);
    src.walk(&known, &mut |mut e: Entry, feeder: &mut dyn Feeder| {
        if stopped.get() {
            return Err(Error::Source {
                path: src.describe(),
                reason: "capture stopped".into(),
            });
        }
        let needs_content = e.kind == Kind::File && e.hardlink.is_none();
        if needs_content && e.size > 0 {
            if let Some(c) = cache.content(&e, index) {
                cached.fetch_add(e.size, Ordering::Relaxed);
                e.content = Some(c);
            }
        } else if needs_content {
            e.content = Some(Content::default());
        }
        if !needs_content || e.content.is_some() {
            finished.push(e);
            if finished.len() >= ENTRY_GROUP {
                let before = std::mem::take(&mut finished);
                let tag = Tag {
                    before,
                    entry: None,
                    last: false,
                };
                if !emit(Batch::default(), tag) {
                    stopped.set(true);
                }
            }
            return Ok(());
        }
        // One chunker per file; hold one batch back so the last is known.
        let mut chunker = Chunker::new(params);
        let mut held: Option<Batch> = None;
        let mut entry = Some(Box::new(e.clone()));
        let mut send = |b: Batch, last: bool, entry: &mut Option<Box<Entry>>| {
            let before = std::mem::take(&mut finished);
            let tag = Tag {
                before,
                entry: entry.take(),
                last,
            };
            if !stopped.get() && !emit(b, tag) {
                stopped.set(true);
            }
        };
        {
            let mut on_batch = |b: Batch| {
                if let Some(prev) = held.replace(b) {
                    send(prev, false, &mut entry);
                }
            };
            feeder.feed(&e, &mut chunker, &mut on_batch, read)?;
            chunker.finish(&mut on_batch);
        }
        send(held.take().unwrap_or_default(), true, &mut entry);
        Ok(())
    })?;
    if !finished.is_empty() && !stopped.get() {
        emit(
            Batch::default(),
            Tag {
                before: finished,
                entry: None,
                last: false,
            },
        );
    }
    Ok(())
}

/// The metadata stream being written: entries as JSON lines, chunked.
struct MetaStream {
    chunker: Option<Chunker>,
    list: ChunkList,
}

impl MetaStream {
    fn new(params: &ChunkerParams) -> Self {
        MetaStream {
            chunker: Some(Chunker::new(params)),
            list: ChunkList::new(),
        }
    }

    fn push(&mut self, e: &Entry, collector: &mut Collector<'_>, errors: &FirstError) {
        let mut line = serde_json::to_vec(e).expect("an entry always serialises");
        line.push(b'\n');
        let list = &mut self.list;
        if let Some(c) = self.chunker.as_mut() {
            c.feed(&line, &mut |b: Batch| {
                store_meta(b, list, collector, errors)
            });
        }
    }

    fn finish(&mut self, collector: &mut Collector<'_>, errors: &FirstError) {
        let list = &mut self.list;
        if let Some(c) = self.chunker.take() {
            c.finish(&mut |b: Batch| store_meta(b, list, collector, errors));
        }
    }
}

/// Hashes and stores a batch of the metadata stream on the collector thread.
fn store_meta(b: Batch, list: &mut ChunkList, collector: &mut Collector<'_>, errors: &FirstError) {
    for p in b.pieces {
        match p {
            Piece::Hole(n) | Piece::Unused(n) => list.push_hole(n),
            Piece::Chunk { start, len } => {
                let h = HashedChunk::new(&b.data[start..start + len]);
                let mut stored = Vec::new();
                let codec = h.compress_into(&mut stored, collector.compression);
                collector.add(h.id, codec, len as u32, &stored, errors);
                list.push_chunk(h.id, len as u32);
            }
        }
    }
}
