//! Deploy: executes a [`DeployPlan`] on the target disks.
//!
//! For every disk of the plan, in order:
//!
//! 1. **Refuse a disk in use**: mounted, swapped on, held by LVM, dm-crypt
//!    or md, or an image file attached to a loop device
//!    ([`check_not_in_use`]); and a disk whose size is not the size the plan
//!    was made for.
//! 2. **Write, holding the disk exclusively** (`O_EXCL` on a block
//!    device): the partition table ([`write_table`]), the parts of the
//!    source's head the plan copies (MBR boot code, GRUB's `core.img` in the
//!    post-MBR gap), and every block stream at its partition's offset
//!    ([`restore_stream`]: each chunk verified before it is written, chunks
//!    the disk already holds not rewritten, unused blocks skipped). A new
//!    BIOS boot partition is zeroed.
//! 3. **Make the kernel see the new table** (BLKRRPART, else `partx`) and
//!    reach each partition: its device node on a block device, a loop device
//!    over its byte range in an image file.
//! 4. **Per partition**: grow a block-copied file system to its partition
//!    (`resize2fs`, `xfs_growfs`); make a fresh file system with the source's
//!    UUID and label and populate it with the file tree derived from the
//!    stored ext2/3/4 stream (shrinking, or a type change); `mkswap` with the
//!    source's UUID and label; make a new ESP.
//! 5. **Check** every file system written with a read-only fsck (`e2fsck
//!    -fn`, `xfs_repair -n`, `fsck.vfat -n`); a file system that is not
//!    clean fails the deploy, naming it and quoting the checker.
//!
//! Every step is idempotent, so a deploy interrupted at any point is simply
//! run again: the table is rewritten, streams are seeded from what is
//! already on the disk, and file systems are made afresh.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use imaging::device::{DeviceKind, Target};
use imaging::direct::{Event as DirectEvent, Receiver};
use imaging::disk::FsType;
use imaging::ext4::Ext4Tree;
use imaging::manifest::{BlockStream, DiskContent, Manifest};
use imaging::restore::restore_stream;
use imaging::store::LockMode;
use imaging::stream::StreamReader;
use imaging::tree::populate::populate_from_ext4;
use imaging::{Library, ProgressSink, RestoreOptions};
use serde::Serialize;

use crate::blockdev::{
    check_not_in_use, partition_device, reread_partitions, BlockdevError, InUse, LoopDevice,
};
use crate::mkfs::{check_fs, grow_fs, make_fs, mount_temp, FsError, FsKind, FsckReport};
use crate::plan::{DeployPlan, DiskPlan, Method, PartitionStep};
use crate::table::{write_table, TableError};

/// How to deploy.
#[derive(Clone, Debug, Default)]
pub struct DeployOptions {
    /// Write every chunk, without comparing what the disk already holds.
    pub no_seed: bool,
    /// Verify/write threads per stream; 0 means one per core.
    pub workers: usize,
}

/// What a deploy did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DeployReport {
    /// The image deployed.
    pub image: String,
    /// One entry per disk of the plan.
    pub disks: Vec<DiskReport>,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// What a deploy did to one disk.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DiskReport {
    /// The target disk.
    pub target: String,
    /// One entry per partition step.
    pub partitions: Vec<PartitionReport>,
}

/// What a deploy did to one partition.
#[derive(Clone, Debug, Serialize)]
pub struct PartitionReport {
    /// The partition's number on the target.
    pub number: u32,
    /// The device or loop device it was reached through.
    pub device: Option<String>,
    /// How its content was made.
    pub method: Method,
    /// Bytes written to it (block streams and populated file content).
    pub bytes_written: u64,
    /// Bytes of a block stream already on the disk, not rewritten.
    pub bytes_seeded: u64,
    /// Stored (compressed) bytes read from the library, for a block
    /// stream or a file tree: what crossed the network from a remote
    /// library.
    pub bytes_fetched: u64,
    /// The read-only check of its file system, when it has one.
    pub fsck: Option<FsckReport>,
    /// Wall time spent on it, in seconds.
    pub seconds: f64,
}

/// Why a deploy failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The image or library failed (a missing or corrupt chunk, I/O).
    #[error(transparent)]
    Image(#[from] imaging::Error),
    /// The disk is in use.
    #[error(transparent)]
    InUse(#[from] InUse),
    /// Partition table writing failed.
    #[error(transparent)]
    Table(#[from] TableError),
    /// Re-reading partitions or attaching a loop device failed.
    #[error(transparent)]
    Blockdev(#[from] BlockdevError),
    /// Making, growing, mounting or checking a file system failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The plan does not fit the image or the disk.
    #[error("{target}: {reason}")]
    Plan {
        /// The target disk.
        target: String,
        /// What does not fit.
        reason: String,
    },
    /// A file system is not clean after the deploy.
    #[error("{target} partition {number}: {checker} reports problems after the deploy:\n{output}")]
    Unclean {
        /// The target disk.
        target: String,
        /// The partition.
        number: u32,
        /// The checker run.
        checker: String,
        /// Its output.
        output: String,
    },
}

/// Executes `plan` for image `image`. `log` receives one line per step
/// taken (the CLI prints them; the agent writes them to its mailbox).
pub fn deploy(
    lib: &Arc<Library>,
    image: &str,
    plan: &DeployPlan,
    opts: &DeployOptions,
    progress: &dyn ProgressSink,
    log: &dyn Fn(&str),
) -> Result<DeployReport, DeployError> {
    let started = Instant::now();
    let _lock = lib.lock(LockMode::Shared)?;
    let manifest = lib.manifest(image)?;
    let index = lib.load_index()?;
    let mut report = DeployReport {
        image: image.into(),
        ..Default::default()
    };
    for dp in &plan.disks {
        let ctx = DiskCtx {
            data: Data::Library { lib, index: &index },
            manifest: &manifest,
            image,
            plan: dp,
            opts,
            progress,
            log,
        };
        report.disks.push(ctx.run()?);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Executes `plan` with the data of a direct stream ([`imaging::direct`]):
/// what a capturing agent sends through a relay, written as it arrives,
/// never stored. `manifest` is the stream's layout as a manifest (see
/// [`direct_manifest`]). Every partition must be block-copied: a plan that
/// needs a file-tree population (a smaller partition, a type change) is
/// refused before anything is written, since that reads the source's file
/// system at random.
pub fn deploy_direct<R: std::io::Read>(
    rx: &mut Receiver<R>,
    manifest: &Manifest,
    plan: &DeployPlan,
    opts: &DeployOptions,
    progress: &dyn ProgressSink,
    log: &dyn Fn(&str),
) -> Result<DeployReport, DeployError> {
    let started = Instant::now();
    let label = manifest.name.as_str();
    for dp in &plan.disks {
        if let Some(step) = dp
            .steps
            .iter()
            .find(|s| matches!(s.method, Method::Tree { .. }))
        {
            return Err(DeployError::Plan {
                target: dp.target.clone(),
                reason: format!(
                    "partition {} needs a file-tree deploy (a smaller partition or a new file-system \
                     type), which a direct migration cannot do: capture into the library, then deploy \
                     from it",
                    step.number
                ),
            });
        }
    }
    let ctxs: Vec<DiskCtx<'_>> = plan
        .disks
        .iter()
        .map(|dp| DiskCtx {
            data: Data::Direct,
            manifest,
            image: label,
            plan: dp,
            opts,
            progress,
            log,
        })
        .collect();
    let mut open = Vec::with_capacity(ctxs.len());
    for c in &ctxs {
        open.push(c.begin()?);
    }
    let total: u64 = ctxs.iter().map(|c| c.direct_bytes()).sum();
    let mut done = 0u64;
    let mut last = Instant::now();
    progress.progress(imaging::Progress {
        step: "receive",
        done: 0,
        total,
    });
    let mut dest = Dest::Discard;
    let mut t = Instant::now();
    loop {
        match rx.next_event()? {
            DirectEvent::Begin { disk, stream, size } => {
                dest = Dest::Discard;
                t = Instant::now();
                for (i, c) in ctxs.iter().enumerate() {
                    if c.plan.source == disk {
                        dest = c.direct_dest(i, stream, size)?;
                    }
                }
                if let Dest::Part { ctx, step } = dest {
                    let s = &ctxs[ctx].plan.steps[step];
                    log(&format!(
                        "{}: partition {}: receiving {size} bytes of blocks at byte {}",
                        ctxs[ctx].plan.target, s.number, s.start
                    ));
                }
            }
            DirectEvent::Chunk { pos, chunk, stored } => {
                let len = chunk.data().len() as u64;
                if let Some((ctx, at, part)) = dest.place(&ctxs, pos) {
                    let (disk, reps) = &mut open[ctx];
                    write_ranges(disk, &ctxs[ctx], at, chunk.data(), part.is_none())?;
                    if let Some(step) = part {
                        reps[step].bytes_written += len;
                        reps[step].bytes_fetched += stored;
                    }
                    done += len;
                }
            }
            DirectEvent::Zeros { pos, len } => {
                if let Some((ctx, at, part)) = dest.place(&ctxs, pos) {
                    let (disk, _) = &open[ctx];
                    if part.is_some() {
                        disk.ensure_zero(at, len, false)?;
                    } else {
                        write_ranges(disk, &ctxs[ctx], at, &vec![0u8; len as usize], true)?;
                    }
                    done += len;
                }
            }
            DirectEvent::Unused { pos, len } => {
                if dest.place(&ctxs, pos).is_some() {
                    done += len;
                }
            }
            DirectEvent::End => {
                if let Dest::Part { ctx, step } = dest {
                    open[ctx].1[step].seconds += t.elapsed().as_secs_f64();
                }
                dest = Dest::Discard;
            }
            DirectEvent::Done(stats) => {
                log(&format!(
                    "direct stream {label}: complete ({} chunks, {} bytes read by the sender)",
                    stats.chunks, stats.bytes_read
                ));
                break;
            }
        }
        if last.elapsed() >= Duration::from_millis(200) {
            last = Instant::now();
            progress.progress(imaging::Progress {
                step: "receive",
                done,
                total,
            });
        }
    }
    progress.progress(imaging::Progress {
        step: "receive",
        done,
        total: total.max(done),
    });
    let mut report = DeployReport {
        image: label.into(),
        ..Default::default()
    };
    for (c, (disk, reps)) in ctxs.iter().zip(open) {
        report.disks.push(c.finish(disk, reps)?);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// A direct stream's layout as a manifest, for [`crate::plan::plan`] and
/// [`deploy_direct`].
pub fn direct_manifest(layout: &imaging::direct::Layout) -> Manifest {
    Manifest::new(
        layout.label.clone(),
        None,
        imaging::ChunkerParams::default(),
        layout.disks.clone(),
        Vec::new(),
        Default::default(),
    )
}

/// Where the direct stream being received goes.
#[derive(Clone, Copy, Debug)]
enum Dest {
    /// Nowhere (a disk or partition the plan does not deploy).
    Discard,
    /// The head of plan disk `ctx`: the ranges its plan copies.
    Head { ctx: usize },
    /// Step `step` of plan disk `ctx`.
    Part { ctx: usize, step: usize },
}

impl Dest {
    /// Where `len` bytes at stream offset `pos` go: the plan disk, the
    /// disk offset, and the step (none for the head). `None` to discard.
    fn place(&self, ctxs: &[DiskCtx<'_>], pos: u64) -> Option<(usize, u64, Option<usize>)> {
        match *self {
            Dest::Discard => None,
            Dest::Head { ctx } => Some((ctx, pos, None)),
            Dest::Part { ctx, step } => {
                Some((ctx, ctxs[ctx].plan.steps[step].start + pos, Some(step)))
            }
        }
    }
}

/// Writes `data` at disk offset `at`; for the head (`head_only`), only the
/// parts inside the ranges the plan copies.
fn write_ranges(
    disk: &Target,
    ctx: &DiskCtx<'_>,
    at: u64,
    data: &[u8],
    head_only: bool,
) -> Result<(), DeployError> {
    let end = at + data.len() as u64;
    let ranges = if head_only {
        ctx.plan.copy_head.ranges()
    } else {
        vec![(at, end)]
    };
    for (s, e) in ranges {
        let (s, e) = (s.max(at), e.min(end));
        if s >= e {
            continue;
        }
        let piece = &data[(s - at) as usize..(e - at) as usize];
        std::os::unix::fs::FileExt::write_all_at(&disk.file, piece, s).map_err(|err| {
            imaging::Error::io("writing", format!("{} at offset {s}", ctx.plan.target), err)
        })?;
    }
    Ok(())
}

/// Where a deploy's data comes from.
#[derive(Clone, Copy)]
enum Data<'a> {
    /// Images stored in a library.
    Library {
        lib: &'a Arc<Library>,
        index: &'a imaging::index::Index,
    },
    /// A direct stream from a capturing agent ([`deploy_direct`]): block
    /// streams only, written as they arrive.
    Direct,
}

struct DiskCtx<'a> {
    data: Data<'a>,
    manifest: &'a Manifest,
    image: &'a str,
    plan: &'a DiskPlan,
    opts: &'a DeployOptions,
    progress: &'a dyn ProgressSink,
    log: &'a dyn Fn(&str),
}

/// A partition reached for tools: a device node, or a loop device over
/// its range of an image file (detached when dropped).
struct PartDev {
    path: PathBuf,
    _loop: Option<LoopDevice>,
}

impl DiskCtx<'_> {
    fn run(&self) -> Result<DiskReport, DeployError> {
        let (disk, mut reports) = self.begin()?;
        self.copy_head(&disk)?;
        self.write_streams(&disk, &mut reports)?;
        self.finish(disk, reports)
    }

    /// Checks the disk, opens it exclusively and writes its table.
    fn begin(&self) -> Result<(Target, Vec<PartitionReport>), DeployError> {
        let target = self.plan.target.as_str();
        let path = Path::new(target);
        check_not_in_use(path)?;
        let reports: Vec<PartitionReport> = self
            .plan
            .steps
            .iter()
            .map(|s| PartitionReport {
                number: s.number,
                device: None,
                method: s.method.clone(),
                bytes_written: 0,
                bytes_seeded: 0,
                bytes_fetched: 0,
                fsck: None,
                seconds: 0.0,
            })
            .collect();

        // Phase 1: the table, the head and the block streams, holding the
        // disk exclusively.
        let disk = Target::open_disk(path)?;
        let size = disk.size()?;
        if size != self.plan.target_size {
            return Err(self.refuse(format!(
                "is {size} bytes but the plan was made for {} bytes; plan again",
                self.plan.target_size
            )));
        }
        if let Some(spec) = &self.plan.table {
            (self.log)(&format!(
                "{target}: writing the partition table ({} partitions)",
                spec.partitions.len()
            ));
            write_table(&disk.file, target, spec)?;
        }
        Ok((disk, reports))
    }

    /// Bytes of the direct stream this disk takes: its copied head and
    /// its block-copied partitions.
    fn direct_bytes(&self) -> u64 {
        let Some(src) = self.manifest.disks.get(self.plan.source) else {
            return 0;
        };
        let streams = src.streams();
        let head = if self.plan.copy_head.ranges().is_empty() {
            0
        } else {
            streams.first().map_or(0, |(_, s)| s.size)
        };
        head + self
            .plan
            .steps
            .iter()
            .filter(|s| matches!(s.method, Method::Block { .. } | Method::Raw))
            .filter_map(|s| self.source_stream(s).ok())
            .map(|s| s.size)
            .sum::<u64>()
    }

    /// Where stream `stream` of this disk's source goes (this is plan disk
    /// `ctx`); checks that it fits.
    fn direct_dest(&self, ctx: usize, stream: usize, size: u64) -> Result<Dest, DeployError> {
        let src = &self.manifest.disks[self.plan.source];
        let number = match &src.content {
            DiskContent::Whole { .. } => None,
            DiskContent::Partitioned { partitions, .. } => {
                if stream == 0 {
                    let copies = !self.plan.copy_head.ranges().is_empty();
                    return Ok(if copies {
                        Dest::Head { ctx }
                    } else {
                        Dest::Discard
                    });
                }
                let Some(p) = partitions
                    .iter()
                    .filter(|p| p.content.stream().is_some())
                    .nth(stream - 1)
                else {
                    return Ok(Dest::Discard);
                };
                Some(p.number)
            }
        };
        let Some(step) = self.plan.steps.iter().position(|s| {
            s.source == number && matches!(s.method, Method::Block { .. } | Method::Raw)
        }) else {
            return Ok(Dest::Discard);
        };
        let s = &self.plan.steps[step];
        if size > s.size {
            return Err(self.refuse(format!(
                "partition {} is {} bytes, too small for its {size}-byte stream",
                s.number, s.size
            )));
        }
        Ok(Dest::Part { ctx, step })
    }

    /// Writes every block stream from the library.
    fn write_streams(
        &self,
        disk: &Target,
        reports: &mut [PartitionReport],
    ) -> Result<(), DeployError> {
        let target = self.plan.target.as_str();
        let Data::Library { lib, index } = self.data else {
            return Err(self.refuse("a direct stream is written as it arrives".into()));
        };
        for (step, rep) in self.plan.steps.iter().zip(reports.iter_mut()) {
            let t = Instant::now();
            match step.method {
                Method::Block { .. } | Method::Raw => {
                    let stream = self.source_stream(step)?;
                    if stream.size > step.size {
                        return Err(self.refuse(format!(
                            "partition {} is {} bytes, too small for its {}-byte stream",
                            step.number, step.size, stream.size
                        )));
                    }
                    (self.log)(&format!(
                        "{target}: partition {}: writing {} bytes of blocks at byte {}",
                        step.number, stream.data_bytes, step.start
                    ));
                    let ropts = RestoreOptions {
                        no_seed: self.opts.no_seed,
                        workers: self.opts.workers,
                        ..Default::default()
                    };
                    let st = restore_stream(
                        lib,
                        index,
                        self.image,
                        stream,
                        disk,
                        step.start,
                        &ropts,
                        self.progress,
                    )?;
                    rep.bytes_written = st.bytes_written;
                    rep.bytes_seeded = st.bytes_seeded;
                    rep.bytes_fetched = st.bytes_fetched;
                }
                Method::NewBiosBoot => {
                    disk.zero(step.start, step.size).map_err(|e| {
                        imaging::Error::io("zeroing the BIOS boot partition on", target, e)
                    })?;
                }
                _ => {}
            }
            rep.seconds += t.elapsed().as_secs_f64();
        }
        Ok(())
    }

    /// Flushes the disk, makes the kernel see its table, and makes, grows
    /// and checks its file systems.
    fn finish(
        &self,
        disk: Target,
        mut reports: Vec<PartitionReport>,
    ) -> Result<DiskReport, DeployError> {
        let target = self.plan.target.as_str();
        let path = Path::new(target);
        disk.file
            .sync_all()
            .map_err(|e| imaging::Error::io("flushing", target, e))?;
        let is_block = disk.kind == DeviceKind::Block;
        let nodes = if is_block {
            (self.log)(&format!("{target}: re-reading the partition table"));
            reread_partitions(&disk.file, path)?
        } else {
            Vec::new()
        };
        drop(disk); // release O_EXCL: the tools below open the partitions

        // Phase 2: file systems.
        for (step, rep) in self.plan.steps.iter().zip(&mut reports) {
            let Some(kind) = self.fs_kind(step)? else {
                continue;
            };
            let t = Instant::now();
            let dev = self.reach(step, is_block, &nodes)?;
            rep.device = Some(dev.path.display().to_string());
            self.make_content(step, kind, &dev.path, rep)?;
            let fsck = check_fs(&dev.path, kind)?;
            if !fsck.clean {
                return Err(DeployError::Unclean {
                    target: target.into(),
                    number: step.number,
                    checker: checker_of(kind).into(),
                    output: fsck.output,
                });
            }
            (self.log)(&format!(
                "{target}: partition {}: {} {} clean",
                step.number,
                kind.name(),
                checker_of(kind)
            ));
            rep.fsck = Some(fsck);
            rep.seconds += t.elapsed().as_secs_f64();
        }
        Ok(DiskReport {
            target: target.into(),
            partitions: reports,
        })
    }

    fn refuse(&self, reason: String) -> DeployError {
        DeployError::Plan {
            target: self.plan.target.clone(),
            reason,
        }
    }

    /// The file system a step leaves, if any.
    fn fs_kind(&self, step: &PartitionStep) -> Result<Option<FsKind>, DeployError> {
        let fs_type = match (&step.method, &step.fs) {
            (Method::Swap, _) => FsType::Swap,
            (Method::NewEsp, _) => FsType::Vfat,
            (Method::Tree { mkfs }, _) => *mkfs,
            (Method::Block { .. }, Some(fs)) => fs.fs_type,
            _ => return Ok(None),
        };
        FsKind::try_from(fs_type).map(Some).map_err(|t| {
            self.refuse(format!(
                "partition {}: ferry cannot make or check a {t:?} file system",
                step.number
            ))
        })
    }

    /// A device node for the step's partition.
    fn reach(
        &self,
        step: &PartitionStep,
        is_block: bool,
        nodes: &[(u32, PathBuf)],
    ) -> Result<PartDev, DeployError> {
        let disk = Path::new(&self.plan.target);
        if is_block {
            let path = if step.number == 0 {
                disk.to_path_buf()
            } else {
                nodes
                    .iter()
                    .find(|(n, _)| *n == step.number)
                    .map(|(_, p)| p.clone())
                    .unwrap_or_else(|| partition_device(disk, step.number))
            };
            return Ok(PartDev { path, _loop: None });
        }
        let lo = LoopDevice::attach(disk, step.start, step.size)?;
        Ok(PartDev {
            path: lo.path().to_path_buf(),
            _loop: Some(lo),
        })
    }

    /// Grows, makes or populates the step's file system on `dev`.
    fn make_content(
        &self,
        step: &PartitionStep,
        kind: FsKind,
        dev: &Path,
        rep: &mut PartitionReport,
    ) -> Result<(), DeployError> {
        let target = &self.plan.target;
        let uuid = step.fs.as_ref().and_then(|f| f.uuid.as_deref());
        let label = step.fs.as_ref().and_then(|f| f.label.as_deref());
        match step.method {
            Method::Block { grow: true } => {
                (self.log)(&format!(
                    "{target}: partition {}: growing {} to {} bytes",
                    step.number,
                    kind.name(),
                    step.size
                ));
                grow_fs(dev, kind)?;
            }
            Method::Tree { .. } => {
                (self.log)(&format!(
                    "{target}: partition {}: making {} (UUID {}, label {}) and populating it \
                     from the stored file system",
                    step.number,
                    kind.name(),
                    uuid.unwrap_or("new"),
                    label.unwrap_or("none")
                ));
                make_fs(dev, kind, uuid, label)?;
                let stream = self.source_stream(step)?;
                let name = format!("{} {} partition {}", self.image, self.plan.source_name, {
                    step.source.unwrap_or(step.number)
                });
                let Data::Library { lib, .. } = self.data else {
                    return Err(self.refuse(format!(
                        "partition {}: a direct stream cannot be populated file by file",
                        step.number
                    )));
                };
                let reader = StreamReader::open(Arc::clone(lib), stream, &name)?;
                let fetched = reader.fetched();
                let tree = Ext4Tree::from_reader(&name, Box::new(reader), 0, None)?;
                let mount = mount_temp(dev, kind)?;
                let st = populate_from_ext4(&tree, mount.path(), self.progress)?;
                mount.unmount()?;
                rep.bytes_written = st.bytes_written;
                rep.bytes_fetched = fetched.load(std::sync::atomic::Ordering::Relaxed);
            }
            Method::Swap | Method::NewEsp => {
                (self.log)(&format!(
                    "{target}: partition {}: making {}",
                    step.number,
                    kind.name()
                ));
                make_fs(dev, kind, uuid, label)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// The stored stream a step's content comes from.
    fn source_stream(&self, step: &PartitionStep) -> Result<&BlockStream, DeployError> {
        let Some(disk) = self.manifest.disks.get(self.plan.source) else {
            return Err(self.refuse(format!(
                "the plan names source disk {} but image {:?} has {}",
                self.plan.source,
                self.image,
                self.manifest.disks.len()
            )));
        };
        let found = match (&disk.content, step.source) {
            (DiskContent::Whole { stream }, None) => Some(stream),
            (DiskContent::Partitioned { partitions, .. }, Some(n)) => partitions
                .iter()
                .find(|p| p.number == n)
                .and_then(|p| p.content.stream()),
            _ => None,
        };
        found.ok_or_else(|| {
            self.refuse(format!(
                "partition {}: image {:?} disk {} has no stored stream for source partition {:?}",
                step.number, self.image, disk.name, step.source
            ))
        })
    }

    /// Writes the parts of the source's head the plan copies.
    fn copy_head(&self, disk: &Target) -> Result<(), DeployError> {
        let ranges = self.plan.copy_head.ranges();
        if ranges.is_empty() {
            return Ok(());
        }
        let src = &self.manifest.disks[self.plan.source];
        let DiskContent::Partitioned { head, .. } = &src.content else {
            return Err(self.refuse("only a server disk has a head to copy".into()));
        };
        let name = format!("{} {} head", self.image, src.name);
        let Data::Library { lib, .. } = self.data else {
            return Err(self.refuse("a direct stream's head is written as it arrives".into()));
        };
        let reader = StreamReader::open(Arc::clone(lib), head, &name)?;
        for (start, end) in ranges {
            if end > head.size {
                return Err(self.refuse(format!(
                    "the plan copies head bytes {start}..{end} but the stored head has {}",
                    head.size
                )));
            }
            let mut buf = vec![0u8; (end - start) as usize];
            reader.read_at(start, &mut buf)?;
            std::os::unix::fs::FileExt::write_all_at(&disk.file, &buf, start).map_err(|e| {
                imaging::Error::io(
                    "writing the boot code to",
                    format!("{} at offset {start}", self.plan.target),
                    e,
                )
            })?;
        }
        (self.log)(&format!(
            "{}: copied the boot code and boot gap of {}",
            self.plan.target, src.name
        ));
        Ok(())
    }
}

/// The read-only checker run for a kind, for messages.
fn checker_of(kind: FsKind) -> &'static str {
    match kind {
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => "e2fsck -fn",
        FsKind::Xfs => "xfs_repair -n",
        FsKind::Vfat => "fsck.vfat -n",
        FsKind::Swap => "the swap signature",
    }
}

/// Measures a target disk for planning: its size, and its logical sector
/// size (sysfs `queue/logical_block_size` for a block device; 512 for an
/// image file). Nothing is written, and the disk's current content is not
/// read.
pub fn probe_target(path: &Path) -> Result<crate::plan::TargetDisk, DeployError> {
    use std::io::{Seek, SeekFrom};
    use std::os::unix::fs::FileTypeExt;
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| imaging::Error::io("opening", &shown, e))?;
    let block = meta.file_type().is_block_device();
    if !block && !meta.file_type().is_file() {
        return Err(DeployError::Plan {
            target: shown,
            reason: "is neither a disk image file nor a block device".into(),
        });
    }
    let mut f = std::fs::File::open(path).map_err(|e| imaging::Error::io("opening", &shown, e))?;
    let size = f
        .seek(SeekFrom::End(0))
        .map_err(|e| imaging::Error::io("sizing", &shown, e))?;
    let mut sector = 512;
    if block {
        let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if let Some(name) = real.file_name() {
            let attr = Path::new("/sys/class/block")
                .join(name)
                .join("queue/logical_block_size");
            if let Some(n) = std::fs::read_to_string(attr)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                sector = n;
            }
        }
    }
    Ok(crate::plan::TargetDisk {
        path: shown,
        size,
        logical_sector_size: sector,
    })
}
