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
use std::time::Instant;

use imaging::device::{DeviceKind, Target};
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
            lib,
            index: &index,
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

struct DiskCtx<'a> {
    lib: &'a Arc<Library>,
    index: &'a imaging::index::Index,
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
        let target = self.plan.target.as_str();
        let path = Path::new(target);
        check_not_in_use(path)?;
        let mut reports: Vec<PartitionReport> = self
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
        self.copy_head(&disk)?;
        for (step, rep) in self.plan.steps.iter().zip(&mut reports) {
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
                        self.lib,
                        self.index,
                        self.image,
                        stream,
                        &disk,
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
                let reader = StreamReader::open(Arc::clone(self.lib), stream, &name)?;
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
        let reader = StreamReader::open(Arc::clone(self.lib), head, &name)?;
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
