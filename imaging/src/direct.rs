//! Direct migration: a server capture streamed straight to a deploying
//! agent, never stored in the library.
//!
//! The sending side ([`send`]) surveys and reads its disks exactly as a
//! server capture does ([`crate::server`]: the head, then one stream per
//! partition, used blocks only), through the same chunk, hash and
//! compress pipeline, but every chunk goes into a **frame stream** instead
//! of a pack. The receiving side ([`Receiver`]) parses the stream, checks
//! every frame against the layout announced at its start, and verifies
//! each chunk's BLAKE3 before handing it out to be written.
//!
//! Between the two agents the stream travels through a **relay** in the
//! library's store ([`RelayWriter`], [`RelayReader`]): numbered segments
//! `relay/<id>/<seq>` of [`SEGMENT`] bytes. Both agents only ever connect
//! outward to the store (`ferry serve` or S3), as for everything else. The
//! writer puts segment *n* only once the reader has deleted segment
//! *n − [`WINDOW`]*, so at most `WINDOW + 1` segments (≈ 40 MiB) exist at
//! any moment, whatever the size of the disks: the image is never stored.
//! A reader that gives up writes `relay/<id>/abort` with its reason, and the
//! writer stops with that reason.
//!
//! # Stream format (version 1)
//!
//! All integers little-endian. The stream starts with the 8 bytes
//! `FERRYDM1`, then frames, each a tag byte and its fields:
//!
//! | tag | fields | meaning |
//! |-----|--------|---------|
//! | `L` | u32 n, n bytes JSON [`Layout`] | first frame: the disks, as a server image's manifest would list them (streams without chunk lists) |
//! | `B` | u32 disk, u32 stream, u64 size | the next stream of that disk begins ([`crate::manifest::Disk::streams`] order) |
//! | `C` | 32-byte id, u32 raw length, u8 codec, u32 stored length, the stored bytes | the next chunk of the stream |
//! | `Z` | u64 n | the next n bytes are zeros |
//! | `U` | u64 n | the next n bytes are unused by the file system (any content) |
//! | `E` | u64 chunks, u64 chunk bytes | the stream ends; the counts cross-check what came |
//! | `D` | u32 n, n bytes JSON [`SendStats`] | the sender finished; nothing follows |
//! | `F` | u32 n, n bytes UTF-8 | the sender failed, with its reason; nothing follows |
//!
//! Streams come in order (disk 0's streams, then disk 1's, …), each
//! exactly once. A receiver rejects, naming the byte offset: an unknown
//! tag, a stream out of order or of the wrong size, content past a
//! stream's end, a chunk longer than [`MAX_CHUNK`] or failing its BLAKE3,
//! counts that do not match, and a stream that ends before `D`.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::capture::{default_workers, read_segment, run_pipeline, Done, FirstError, Hashed};
use crate::chunk::{ChunkId, Codec, Compression, StoredChunk, VerifiedChunk, MAX_CHUNK};
use crate::chunker::ChunkerParams;
use crate::device::Source;
use crate::error::{Error, Result};
use crate::index::Index;
use crate::manifest::{BlockStream, Disk};
use crate::progress::{ProgressSink, Throttle};
use crate::server::DiskPlan;
use crate::store::Store;

/// The first bytes of a direct stream.
pub const MAGIC: &[u8; 8] = b"FERRYDM1";
/// The largest JSON frame accepted (a layout of many disks is far smaller).
const MAX_JSON: usize = 16 << 20;
/// The largest failure message accepted.
const MAX_MESSAGE: usize = 64 << 10;
/// Bytes per relay segment.
pub const SEGMENT: usize = 8 << 20;
/// Segments the writer may be ahead of the reader.
pub const WINDOW: u64 = 4;
/// How often the relay looks again for a segment or an acknowledgement.
const POLL: Duration = Duration::from_millis(250);

/// The disks a direct stream carries, sent first: what the receiver plans
/// its deploy from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Layout {
    /// What the operator called this migration (shown in logs).
    pub label: String,
    /// The disks, as a server image's manifest lists them; each stream's
    /// `list` is all zeros (nothing is stored) and `data_bytes` is what
    /// the sender will read.
    pub disks: Vec<Disk>,
}

/// What the sender did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SendStats {
    /// Bytes read from the disks.
    pub bytes_read: u64,
    /// Chunks sent.
    pub chunks: u64,
    /// Stored (compressed) bytes of the chunks sent.
    pub bytes_sent: u64,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// Sends `sources` (disk images or block devices of a server) as a direct
/// stream to `out`, labelled `label`. On failure the stream ends with an
/// `F` frame naming the error, when `out` still takes it: a caller that
/// buffers (a [`RelayWriter`]) must flush it in both cases.
pub fn send(
    sources: &[PathBuf],
    label: &str,
    out: &mut dyn Write,
    progress: &dyn ProgressSink,
) -> Result<SendStats> {
    let started = Instant::now();
    let mut w = FrameWriter { out, label };
    w.out.write_all(MAGIC).map_err(|e| w.err(e))?;
    let r = send_frames(sources, label, &mut w, progress, started);
    match r {
        Ok(stats) => {
            w.json(b'D', &stats)?;
            w.flush()?;
            Ok(stats)
        }
        Err(e) => {
            let msg = chain(&e);
            let _ = w.frame(b'F', msg.as_bytes()).and_then(|()| w.flush());
            Err(e)
        }
    }
}

fn send_frames(
    sources: &[PathBuf],
    label: &str,
    w: &mut FrameWriter<'_>,
    progress: &dyn ProgressSink,
    started: Instant,
) -> Result<SendStats> {
    if sources.is_empty() {
        return Err(Error::Source {
            path: String::new(),
            reason: "no source given".into(),
        });
    }
    let srcs = sources
        .iter()
        .map(|p| Source::open(p))
        .collect::<Result<Vec<_>>>()?;
    let plans = srcs
        .iter()
        .map(DiskPlan::server)
        .collect::<Result<Vec<_>>>()?;
    let regions = srcs
        .iter()
        .map(Source::data_regions)
        .collect::<Result<Vec<_>>>()?;
    let disks = srcs
        .iter()
        .zip(&plans)
        .zip(&regions)
        .enumerate()
        .map(|(i, ((src, plan), regs))| {
            let streams = plan
                .segments
                .iter()
                .map(|seg| BlockStream {
                    size: seg.len,
                    list: ChunkId([0; 32]),
                    extents: 0,
                    chunks: 0,
                    data_bytes: seg.to_read(regs),
                    hole_bytes: 0,
                    unused_bytes: 0,
                })
                .collect();
            Disk {
                name: format!("disk{i}"),
                source: src.path.clone(),
                size: src.size,
                content: plan.content(streams),
            }
        })
        .collect();
    w.json(
        b'L',
        &Layout {
            label: label.to_string(),
            disks,
        },
    )?;

    let total: u64 = plans
        .iter()
        .zip(&regions)
        .flat_map(|(p, r)| p.segments.iter().map(move |seg| seg.to_read(r)))
        .sum();
    let params = ChunkerParams::default();
    let index = Index::new(); // empty: every chunk is compressed and sent
    let errors = FirstError::default();
    let read = AtomicU64::new(0);
    let workers = default_workers(0);
    let mut throttle = Throttle::new(progress, "send", total);
    let mut stats = SendStats::default();
    std::thread::scope(|s| {
        'disks: for (d, ((src, plan), regs)) in srcs.iter().zip(&plans).zip(&regions).enumerate() {
            for (k, seg) in plan.segments.iter().enumerate() {
                let mut head = [0u8; 16];
                head[..4].copy_from_slice(&(d as u32).to_le_bytes());
                head[4..8].copy_from_slice(&(k as u32).to_le_bytes());
                head[8..].copy_from_slice(&seg.len.to_le_bytes());
                if let Err(e) = w.raw(b'B', &head) {
                    errors.set(e);
                    break 'disks;
                }
                let (mut chunks, mut bytes) = (0u64, 0u64);
                let (params, read, errors) = (&params, &read, &errors);
                let ok = run_pipeline(
                    s,
                    &index,
                    Compression::Lz4,
                    workers,
                    errors,
                    move |emit| read_segment(src, seg, regs, params, emit, read),
                    |done: Done<()>| {
                        if errors.is_set() {
                            return;
                        }
                        match w.pieces(&done, &mut chunks, &mut bytes, &mut stats) {
                            Ok(()) => throttle.update(read.load(Ordering::Relaxed)),
                            Err(e) => errors.set(e),
                        }
                    },
                );
                if !ok {
                    break 'disks;
                }
                let mut end = [0u8; 16];
                end[..8].copy_from_slice(&chunks.to_le_bytes());
                end[8..].copy_from_slice(&bytes.to_le_bytes());
                if let Err(e) = w.raw(b'E', &end) {
                    errors.set(e);
                    break 'disks;
                }
            }
        }
    });
    errors.result()?;
    stats.bytes_read = read.load(Ordering::Relaxed);
    throttle.finish(stats.bytes_read);
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(stats)
}

/// Writes frames, naming the stream in errors.
struct FrameWriter<'a> {
    out: &'a mut dyn Write,
    label: &'a str,
}

impl FrameWriter<'_> {
    fn err(&self, e: io::Error) -> Error {
        Error::io("sending", format!("direct stream {:?}", self.label), e)
    }

    fn raw(&mut self, tag: u8, fields: &[u8]) -> Result<()> {
        self.out
            .write_all(&[tag])
            .and_then(|()| self.out.write_all(fields))
            .map_err(|e| self.err(e))
    }

    fn frame(&mut self, tag: u8, body: &[u8]) -> Result<()> {
        let n = u32::try_from(body.len()).expect("frames are far below 4 GiB");
        self.raw(tag, &n.to_le_bytes())?;
        self.out.write_all(body).map_err(|e| self.err(e))
    }

    fn json(&mut self, tag: u8, v: &impl Serialize) -> Result<()> {
        let body = serde_json::to_vec(v).expect("layouts and stats always serialise");
        self.frame(tag, &body)
    }

    fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| self.err(e))
    }

    /// One hashed batch, as frames.
    fn pieces(
        &mut self,
        done: &Done<()>,
        chunks: &mut u64,
        bytes: &mut u64,
        stats: &mut SendStats,
    ) -> Result<()> {
        for p in &done.pieces {
            match *p {
                Hashed::Hole(n) => self.raw(b'Z', &n.to_le_bytes())?,
                Hashed::Unused(n) => self.raw(b'U', &n.to_le_bytes())?,
                Hashed::Known { id, .. } => {
                    // The pipeline runs with an empty index: every chunk is new.
                    return Err(Error::Corrupt {
                        path: format!("direct stream {:?}", self.label),
                        reason: format!("chunk {id} was not compressed for sending"),
                    });
                }
                Hashed::New {
                    id,
                    len,
                    codec,
                    start,
                    end,
                } => {
                    let stored = &done.stored[start..end];
                    let mut head = [0u8; 41];
                    head[..32].copy_from_slice(&id.0);
                    head[32..36].copy_from_slice(&len.to_le_bytes());
                    head[36] = codec as u8;
                    head[37..].copy_from_slice(&(stored.len() as u32).to_le_bytes());
                    self.raw(b'C', &head)?;
                    self.out.write_all(stored).map_err(|e| self.err(e))?;
                    *chunks += 1;
                    *bytes += u64::from(len);
                    stats.chunks += 1;
                    stats.bytes_sent += stored.len() as u64;
                }
            }
        }
        Ok(())
    }
}

/// One step of a direct stream, as the receiver hands it out.
#[derive(Debug)]
pub enum Event {
    /// A stream begins: `disk`'s stream number `stream`
    /// ([`Disk::streams`] order), `size` bytes.
    Begin {
        /// The disk's index in the layout.
        disk: usize,
        /// The stream's index among the disk's streams.
        stream: usize,
        /// Its size.
        size: u64,
    },
    /// A verified chunk at `pos` of the current stream.
    Chunk {
        /// Offset in the stream.
        pos: u64,
        /// Its bytes, BLAKE3-checked.
        chunk: VerifiedChunk,
        /// The bytes it took on the wire (compressed).
        stored: u64,
    },
    /// `len` zero bytes at `pos`.
    Zeros {
        /// Offset in the stream.
        pos: u64,
        /// Length.
        len: u64,
    },
    /// `len` bytes at `pos` the file system does not use.
    Unused {
        /// Offset in the stream.
        pos: u64,
        /// Length.
        len: u64,
    },
    /// The current stream is complete.
    End,
    /// The sender finished: every stream has come.
    Done(SendStats),
}

/// Parses and checks a direct stream (see the module docs).
pub struct Receiver<R> {
    r: R,
    name: String,
    layout: Layout,
    /// Byte offset in the stream, for messages.
    at: u64,
    /// Streams per disk, from the layout.
    shape: Vec<Vec<u64>>,
    /// The next stream expected: (disk, stream).
    next: (usize, usize),
    cur: Option<Current>,
    finished: bool,
    stored: Vec<u8>,
}

struct Current {
    size: u64,
    pos: u64,
    chunks: u64,
    bytes: u64,
}

impl<R: Read> Receiver<R> {
    /// Reads the stream's magic and layout. `name` names the stream in
    /// errors (the relay, or a file).
    pub fn open(r: R, name: &str) -> Result<Receiver<R>> {
        let mut rx = Receiver {
            r,
            name: name.to_string(),
            layout: Layout {
                label: String::new(),
                disks: Vec::new(),
            },
            at: 0,
            shape: Vec::new(),
            next: (0, 0),
            cur: None,
            finished: false,
            stored: Vec::new(),
        };
        let mut magic = [0u8; 8];
        rx.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(rx.bad(0, "is not a ferry direct stream (no FERRYDM1 magic)".into()));
        }
        match rx.tag()? {
            b'L' => {}
            b'F' => return Err(rx.failed()),
            t => return Err(rx.bad(8, format!("starts with frame {t:#04x}, not its layout"))),
        }
        let body = rx.sized(MAX_JSON, "layout")?;
        rx.layout = serde_json::from_slice(&body)
            .map_err(|e| rx.bad(rx.at, format!("its layout does not parse: {e}")))?;
        for d in &rx.layout.disks {
            d.check()
                .map_err(|why| rx.bad(rx.at, format!("its layout of {}: {why}", d.name)))?;
        }
        rx.shape = rx
            .layout
            .disks
            .iter()
            .map(|d| d.streams().iter().map(|(_, s)| s.size).collect())
            .collect();
        Ok(rx)
    }

    /// The layout the sender announced.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The next event. After [`Event::Done`], nothing more is read.
    pub fn next_event(&mut self) -> Result<Event> {
        if self.finished {
            return Err(self.bad(self.at, "read past its end".into()));
        }
        let at = self.at;
        let tag = self.tag()?;
        match (tag, self.cur.is_some()) {
            (b'F', _) => Err(self.failed()),
            (b'B', false) => {
                let f = self.fields::<16>()?;
                let disk = u32_at(&f, 0) as usize;
                let stream = u32_at(&f, 4) as usize;
                let size = u64_at(&f, 8);
                let want = self.next;
                if (disk, stream) != want {
                    return Err(self.bad(
                        at,
                        format!(
                            "sends disk {disk} stream {stream} where disk {} stream {} was due",
                            want.0, want.1
                        ),
                    ));
                }
                let expected = self.shape.get(disk).and_then(|s| s.get(stream)).copied();
                if expected != Some(size) {
                    return Err(self.bad(
                        at,
                        format!(
                            "disk {disk} stream {stream} of {size} bytes; the layout says {expected:?}"
                        ),
                    ));
                }
                self.cur = Some(Current {
                    size,
                    pos: 0,
                    chunks: 0,
                    bytes: 0,
                });
                Ok(Event::Begin { disk, stream, size })
            }
            (b'C', true) => {
                let f = self.fields::<41>()?;
                let mut id = [0u8; 32];
                id.copy_from_slice(&f[..32]);
                let raw_len = u32_at(&f, 32) as usize;
                let codec = Codec::from_byte(f[36])
                    .ok_or_else(|| self.bad(at, format!("chunk with unknown codec {}", f[36])))?;
                let stored_len = u32_at(&f, 37) as usize;
                if raw_len == 0 || raw_len > MAX_CHUNK || stored_len > MAX_CHUNK + MAX_CHUNK / 64 {
                    return Err(self.bad(
                        at,
                        format!("chunk of {raw_len} bytes ({stored_len} stored) is out of bounds"),
                    ));
                }
                let pos = self.advance(at, raw_len as u64)?;
                let mut stored = std::mem::take(&mut self.stored);
                stored.resize(stored_len, 0);
                self.read_exact(&mut stored)?;
                let id = ChunkId(id);
                let verified = StoredChunk {
                    id,
                    codec,
                    raw_len,
                    data: &stored,
                }
                .verify();
                self.stored = stored;
                let chunk = verified.map_err(|fault| {
                    self.bad(at, format!("chunk {id} at stream offset {pos}: {fault}"))
                })?;
                let cur = self.cur.as_mut().expect("checked above");
                cur.chunks += 1;
                cur.bytes += raw_len as u64;
                Ok(Event::Chunk {
                    pos,
                    chunk,
                    stored: stored_len as u64,
                })
            }
            (b'Z' | b'U', true) => {
                let len = u64_at(&self.fields::<8>()?, 0);
                let pos = self.advance(at, len)?;
                Ok(if tag == b'Z' {
                    Event::Zeros { pos, len }
                } else {
                    Event::Unused { pos, len }
                })
            }
            (b'E', true) => {
                let f = self.fields::<16>()?;
                let (chunks, bytes) = (u64_at(&f, 0), u64_at(&f, 8));
                let cur = self.cur.take().expect("checked above");
                if cur.pos != cur.size || cur.chunks != chunks || cur.bytes != bytes {
                    return Err(self.bad(
                        at,
                        format!(
                            "a stream ends at byte {} of {} with {} chunks ({} bytes); the sender counted {chunks} ({bytes} bytes)",
                            cur.pos, cur.size, cur.chunks, cur.bytes
                        ),
                    ));
                }
                let (d, s) = self.next;
                self.next = if s + 1 < self.shape[d].len() {
                    (d, s + 1)
                } else {
                    (d + 1, 0)
                };
                while self.next.0 < self.shape.len() && self.shape[self.next.0].is_empty() {
                    self.next = (self.next.0 + 1, 0);
                }
                Ok(Event::End)
            }
            (b'D', false) => {
                if self.next.0 < self.shape.len() {
                    return Err(self.bad(
                        at,
                        format!(
                            "the sender says it is done, but disk {} stream {} never came",
                            self.next.0, self.next.1
                        ),
                    ));
                }
                let body = self.sized(MAX_JSON, "end")?;
                let stats = serde_json::from_slice(&body)
                    .map_err(|e| self.bad(at, format!("its end frame does not parse: {e}")))?;
                self.finished = true;
                Ok(Event::Done(stats))
            }
            (t, inside) => Err(self.bad(
                at,
                format!(
                    "unexpected frame {t:#04x} {}",
                    if inside {
                        "inside a stream"
                    } else {
                        "between streams"
                    }
                ),
            )),
        }
    }

    /// The reader, once the stream is done (to release a relay).
    pub fn into_inner(self) -> R {
        self.r
    }

    /// Moves the current stream's position on by `len`; its old position.
    fn advance(&mut self, at: u64, len: u64) -> Result<u64> {
        let cur = self.cur.as_mut().expect("only called inside a stream");
        let pos = cur.pos;
        match pos.checked_add(len) {
            Some(end) if end <= cur.size => {
                cur.pos = end;
                Ok(pos)
            }
            _ => {
                let size = cur.size;
                Err(self.bad(
                    at,
                    format!(
                        "{len} bytes at stream offset {pos} run past the stream's {size} bytes"
                    ),
                ))
            }
        }
    }

    fn bad(&self, at: u64, reason: String) -> Error {
        Error::Corrupt {
            path: format!("{} at byte {at}", self.name),
            reason,
        }
    }

    fn failed(&mut self) -> Error {
        let msg = match self.sized(MAX_MESSAGE, "failure") {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) => format!("(its message is unreadable: {e})"),
        };
        self.finished = true;
        Error::Source {
            path: self.name.clone(),
            reason: format!("the sending side failed: {msg}"),
        }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        match self.r.read_exact(buf) {
            Ok(()) => {
                self.at += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(self.bad(
                self.at,
                "ends before the sender's end frame (the sender stopped?)".into(),
            )),
            Err(e) => Err(Error::io(
                "receiving",
                format!("{} at byte {}", self.name, self.at),
                e,
            )),
        }
    }

    fn tag(&mut self) -> Result<u8> {
        Ok(self.fields::<1>()?[0])
    }

    fn fields<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.read_exact(&mut b)?;
        Ok(b)
    }

    /// A u32 length, at most `max`, then that many bytes.
    fn sized(&mut self, max: usize, what: &str) -> Result<Vec<u8>> {
        let at = self.at;
        let n = u32_at(&self.fields::<4>()?, 0) as usize;
        if n > max {
            return Err(self.bad(at, format!("{what} frame of {n} bytes (at most {max})")));
        }
        let mut b = vec![0u8; n];
        self.read_exact(&mut b)?;
        Ok(b)
    }
}

/// `e` and its causes, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cause = c.source();
    }
    s
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// True for a relay id: 32 lowercase hex digits (128 bits).
pub fn valid_relay_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn check_relay_id(id: &str) -> io::Result<()> {
    if valid_relay_id(id) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("relay id {id:?}: expected 32 lowercase hex digits"),
        ))
    }
}

/// The store key of a relay's segment.
pub fn segment_key(id: &str, seq: u64) -> String {
    format!("relay/{id}/{seq:010}")
}

/// The store key a reader that gave up writes its reason to.
pub fn abort_key(id: &str) -> String {
    format!("relay/{id}/abort")
}

/// How long each side of a relay waits for the other.
#[derive(Clone, Copy, Debug)]
pub struct RelayTimeouts {
    /// The reader's wait for the first segment (the sender may still be
    /// booting).
    pub first: Duration,
    /// Either side's wait for the other's next step.
    pub stall: Duration,
}

impl Default for RelayTimeouts {
    fn default() -> Self {
        RelayTimeouts {
            first: Duration::from_secs(30 * 60),
            stall: Duration::from_secs(10 * 60),
        }
    }
}

/// The sending end of a relay: an [`io::Write`] that puts full segments.
/// Call [`RelayWriter::finish`] to put the last one.
pub struct RelayWriter<'a> {
    store: &'a dyn Store,
    id: String,
    seq: u64,
    buf: Vec<u8>,
    timeouts: RelayTimeouts,
    /// The reader's reason, once it gave up.
    aborted: Option<String>,
    /// Bytes put so far.
    pub sent: u64,
}

impl<'a> RelayWriter<'a> {
    /// A writer for relay `id` in `store`.
    pub fn new(store: &'a dyn Store, id: &str, timeouts: RelayTimeouts) -> io::Result<Self> {
        check_relay_id(id)?;
        Ok(RelayWriter {
            store,
            id: id.to_string(),
            seq: 0,
            buf: Vec::with_capacity(SEGMENT),
            timeouts,
            aborted: None,
            sent: 0,
        })
    }

    /// Puts what is buffered as the last segment.
    pub fn finish(mut self) -> io::Result<u64> {
        if !self.buf.is_empty() {
            let data = std::mem::take(&mut self.buf);
            self.put(&data)?;
        }
        self.check_abort()?;
        Ok(self.sent)
    }

    /// Fails with the reader's reason if it gave up; the writer, last to
    /// act, then removes every segment it put and the marker, and puts
    /// nothing more.
    fn check_abort(&mut self) -> io::Result<()> {
        if self.aborted.is_none() {
            let Some(why) = read_abort(self.store, &self.id)? else {
                return Ok(());
            };
            for seq in 0..self.seq {
                let _ = self.store.delete(&segment_key(&self.id, seq));
            }
            let _ = self.store.delete(&abort_key(&self.id));
            self.aborted = Some(why);
        }
        Err(io::Error::other(format!(
            "the receiving side of relay {} gave up: {}",
            self.id,
            self.aborted.as_deref().unwrap_or_default()
        )))
    }

    fn put(&mut self, data: &[u8]) -> io::Result<()> {
        if self.aborted.is_some() {
            return self.check_abort();
        }
        if self.seq >= WINDOW {
            let acked = segment_key(&self.id, self.seq - WINDOW);
            let since = Instant::now();
            loop {
                self.check_abort()?;
                match self.store.size(&acked) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) => return Err(e),
                    Ok(_) if since.elapsed() > self.timeouts.stall => {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "the receiving side of relay {} has not taken segment {} for {} s",
                                self.id,
                                self.seq - WINDOW,
                                since.elapsed().as_secs()
                            ),
                        ))
                    }
                    Ok(_) => std::thread::sleep(POLL),
                }
            }
        }
        self.store.put(&segment_key(&self.id, self.seq), data)?;
        self.seq += 1;
        self.sent += data.len() as u64;
        Ok(())
    }
}

impl Write for RelayWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(SEGMENT - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == SEGMENT {
            let full = std::mem::replace(&mut self.buf, Vec::with_capacity(SEGMENT));
            self.put(&full)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(()) // segments go out whole; finish() puts the last
    }
}

fn read_abort(store: &dyn Store, id: &str) -> io::Result<Option<String>> {
    match store.get(&abort_key(id)) {
        Ok(b) => Ok(Some(
            String::from_utf8_lossy(&b[..b.len().min(MAX_MESSAGE)]).into_owned(),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Gives relay `id` up from the receiving side: tells the writer why (it
/// stops at its next wait), and removes the segments left. Best effort:
/// the writer also stops when nobody reads.
pub fn abort(store: &dyn Store, id: &str, why: &str) {
    if check_relay_id(id).is_err() {
        return;
    }
    let _ = store.put(&abort_key(id), why.as_bytes());
    if let Ok(left) = store.list(&format!("relay/{id}/")) {
        for o in left.iter().filter(|o| o.key != abort_key(id)) {
            let _ = store.delete(&o.key);
        }
    }
}

/// The receiving end of a relay: an [`io::Read`] over its segments, each
/// deleted once read (the writer's acknowledgement).
pub struct RelayReader<'a> {
    store: &'a dyn Store,
    id: String,
    seq: u64,
    cur: Vec<u8>,
    off: usize,
    timeouts: RelayTimeouts,
    /// Bytes received so far.
    pub received: u64,
}

impl<'a> RelayReader<'a> {
    /// A reader of relay `id` in `store`.
    pub fn new(store: &'a dyn Store, id: &str, timeouts: RelayTimeouts) -> io::Result<Self> {
        check_relay_id(id)?;
        Ok(RelayReader {
            store,
            id: id.to_string(),
            seq: 0,
            cur: Vec::new(),
            off: 0,
            timeouts,
            received: 0,
        })
    }

    /// A name for messages.
    pub fn name(&self) -> String {
        format!("relay {} in {}", self.id, self.store.location())
    }

    /// Deletes what is left of the relay once the stream is done.
    pub fn close(self) -> io::Result<()> {
        if self.seq > 0 {
            self.store.delete(&segment_key(&self.id, self.seq - 1))?;
        }
        Ok(())
    }

    /// Gives up: tells the writer why, and removes the segments left.
    pub fn abort(self, why: &str) {
        abort(self.store, &self.id, why);
    }

    fn next_segment(&mut self) -> io::Result<bool> {
        if self.seq > 0 {
            self.store.delete(&segment_key(&self.id, self.seq - 1))?;
        }
        let key = segment_key(&self.id, self.seq);
        let wait = if self.seq == 0 {
            self.timeouts.first
        } else {
            self.timeouts.stall
        };
        let since = Instant::now();
        loop {
            match self.store.get(&key) {
                Ok(data) => {
                    self.received += data.len() as u64;
                    self.cur = data;
                    self.off = 0;
                    self.seq += 1;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if since.elapsed() > wait {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "no segment {} from the sending side of relay {} for {} s",
                                self.seq,
                                self.id,
                                since.elapsed().as_secs()
                            ),
                        ));
                    }
                    std::thread::sleep(POLL);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Read for RelayReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.off == self.cur.len() && !self.next_segment()? {
            return Ok(0);
        }
        let n = buf.len().min(self.cur.len() - self.off);
        buf[..n].copy_from_slice(&self.cur[self.off..self.off + n]);
        self.off += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::HashedChunk;
    use crate::manifest::DiskContent;
    use crate::store::LocalStore;

    const SIZE: u64 = 200_000;

    fn layout() -> Layout {
        Layout {
            label: "t".into(),
            disks: vec![Disk {
                name: "disk0".into(),
                source: "/dev/test".into(),
                size: SIZE,
                content: DiskContent::Whole {
                    stream: BlockStream {
                        size: SIZE,
                        list: ChunkId([0; 32]),
                        extents: 0,
                        chunks: 0,
                        data_bytes: 0,
                        hole_bytes: 0,
                        unused_bytes: 0,
                    },
                },
            }],
        }
    }

    /// A stream by hand: the layout, one stream of a 100 000-byte chunk,
    /// 50 000 zeros, 50 000 unused bytes, its end and the sender's end.
    fn stream() -> (Vec<u8>, Vec<u8>) {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut out = Vec::new();
        let mut w = FrameWriter {
            out: &mut out,
            label: "t",
        };
        w.out.write_all(MAGIC).expect("writing to a Vec");
        w.json(b'L', &layout()).expect("writing to a Vec");
        let mut b = [0u8; 16];
        b[8..].copy_from_slice(&SIZE.to_le_bytes());
        w.raw(b'B', &b).expect("writing to a Vec");
        let h = HashedChunk::new(&data);
        let mut stored = Vec::new();
        let codec = h.compress_into(&mut stored, Compression::Lz4);
        let mut head = [0u8; 41];
        head[..32].copy_from_slice(&h.id.0);
        head[32..36].copy_from_slice(&(data.len() as u32).to_le_bytes());
        head[36] = codec as u8;
        head[37..].copy_from_slice(&(stored.len() as u32).to_le_bytes());
        w.raw(b'C', &head).expect("writing to a Vec");
        w.out.write_all(&stored).expect("writing to a Vec");
        w.raw(b'Z', &50_000u64.to_le_bytes())
            .expect("writing to a Vec");
        w.raw(b'U', &50_000u64.to_le_bytes())
            .expect("writing to a Vec");
        let mut e = [0u8; 16];
        e[..8].copy_from_slice(&1u64.to_le_bytes());
        e[8..].copy_from_slice(&100_000u64.to_le_bytes());
        w.raw(b'E', &e).expect("writing to a Vec");
        w.json(b'D', &SendStats::default())
            .expect("writing to a Vec");
        (out, data)
    }

    fn events(bytes: &[u8]) -> Result<Vec<Event>> {
        let mut rx = Receiver::open(bytes, "test stream")?;
        let mut v = Vec::new();
        loop {
            let e = rx.next_event()?;
            let done = matches!(e, Event::Done(_));
            v.push(e);
            if done {
                return Ok(v);
            }
        }
    }

    fn err_text(bytes: &[u8]) -> String {
        match events(bytes) {
            Ok(v) => panic!("accepted a bad stream: {v:?}"),
            Err(e) => chain(&e),
        }
    }

    #[test]
    fn a_stream_reads_back_in_order_with_its_chunk_verified() {
        let (bytes, data) = stream();
        let v = events(&bytes).expect("a good stream");
        assert!(matches!(
            v[0],
            Event::Begin {
                disk: 0,
                stream: 0,
                size: SIZE
            }
        ));
        match &v[1] {
            Event::Chunk { pos: 0, chunk, .. } => assert_eq!(chunk.data(), &data[..]),
            e => panic!("{e:?}"),
        }
        assert!(matches!(
            v[2],
            Event::Zeros {
                pos: 100_000,
                len: 50_000
            }
        ));
        assert!(matches!(
            v[3],
            Event::Unused {
                pos: 150_000,
                len: 50_000
            }
        ));
        assert!(matches!(v[4], Event::End));
        assert!(matches!(v[5], Event::Done(_)));
    }

    #[test]
    fn bad_streams_are_refused_naming_the_offset() {
        let (good, _) = stream();
        // The chunk frame's offset: magic, L + length + layout, B frame.
        let layout_len = u32_at(&good, 9) as usize;
        let c = 8 + 1 + 4 + layout_len + 1 + 16;
        assert_eq!(good[c], b'C', "chunk frame at {c}");

        let mut flipped = good.clone();
        let last_stored = c + 42 + 10;
        flipped[last_stored] ^= 0x55;
        let t = err_text(&flipped);
        assert!(
            t.contains(&format!("at byte {c}")) && t.contains("chunk"),
            "{t}"
        );

        let t = err_text(&good[..good.len() - 10]);
        assert!(t.contains("ends before the sender's end frame"), "{t}");

        let mut long = good.clone();
        let z = c + 42 + u32_at(&good, c + 38) as usize;
        assert_eq!(long[z], b'Z');
        long[z + 1..z + 9].copy_from_slice(&60_000u64.to_le_bytes());
        let t = err_text(&long);
        assert!(t.contains("run past the stream's 200000 bytes"), "{t}");

        let mut wrong = good.clone();
        wrong[c - 16] = 1; // B names disk 1
        let t = err_text(&wrong);
        assert!(
            t.contains("disk 1 stream 0 where disk 0 stream 0 was due"),
            "{t}"
        );

        let mut not = good.clone();
        not[0] = b'X';
        assert!(err_text(&not).contains("no FERRYDM1 magic"));

        let mut huge = good.clone();
        huge[c + 33..c + 37].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(err_text(&huge).contains("out of bounds"));
    }

    #[test]
    fn a_senders_failure_reaches_the_receiver() {
        let mut out = Vec::new();
        let err = send(
            &[PathBuf::from("/nonexistent/disk.img")],
            "gone",
            &mut out,
            &crate::NoProgress,
        )
        .expect_err("no such disk");
        let t = err_text(&out);
        assert!(
            t.contains("the sending side failed") && t.contains("/nonexistent/disk.img"),
            "{t} / {err}"
        );
    }

    #[test]
    fn a_relay_keeps_at_most_its_window_and_deletes_what_was_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path());
        let id = "0123456789abcdef0123456789abcdef";
        let data: Vec<u8> = (0..(SEGMENT * 9 + 1234)).map(|i| (i % 253) as u8).collect();
        let t = RelayTimeouts {
            first: Duration::from_secs(20),
            stall: Duration::from_secs(20),
        };
        let most = AtomicU64::new(0);
        let got = std::thread::scope(|s| {
            let writer = s.spawn(|| {
                let mut w = RelayWriter::new(&store, id, t).expect("writer");
                w.write_all(&data).expect("write");
                w.finish().expect("finish")
            });
            let mut r = RelayReader::new(&store, id, t).expect("reader");
            let mut got = vec![0u8; data.len()];
            let mut at = 0;
            while at < got.len() {
                let n = r.read(&mut got[at..]).expect("read");
                at += n;
                let live = store.list(&format!("relay/{id}/")).expect("list").len() as u64;
                most.fetch_max(live, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
            assert_eq!(writer.join().expect("writer thread"), data.len() as u64);
            r.close().expect("close");
            got
        });
        assert!(got == data, "the relay changed the bytes");
        assert!(most.load(Ordering::Relaxed) <= WINDOW + 1, "{most:?}");
        assert!(store.list("relay/").expect("list").is_empty());
    }

    #[test]
    fn a_reader_that_gives_up_stops_the_writer_with_its_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path());
        let id = "fedcba9876543210fedcba9876543210";
        let t = RelayTimeouts {
            first: Duration::from_secs(20),
            stall: Duration::from_secs(20),
        };
        abort(&store, id, "the target disk is too small");
        let mut w = RelayWriter::new(&store, id, t).expect("writer");
        let chunk = vec![1u8; SEGMENT];
        let e = (0..=WINDOW)
            .map(|_| w.write_all(&chunk))
            .find_map(|r| r.err())
            .expect("the writer stops");
        assert!(
            e.to_string()
                .contains("gave up: the target disk is too small"),
            "{e}"
        );
        assert!(RelayWriter::new(&store, "../escape", t).is_err());
    }
}
