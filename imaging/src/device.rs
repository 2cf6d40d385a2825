//! Capture sources and restore targets: regular files (sparse-aware) and
//! block devices.
//!
//! Sources report their data regions (`SEEK_DATA`/`SEEK_HOLE` on files, the
//! whole range on devices), so a sparse image's holes are never read. Targets
//! know how to make a range read as zeros cheaply: a punched hole in a file,
//! `BLKZEROOUT` on a device. Block devices are opened with `O_EXCL`, which
//! the kernel refuses while the device is mounted or otherwise claimed.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::chunker::ZERO_BLOCK;
use crate::error::{Error, Result};

mod ioctl {
    // BLKGETSIZE64 = _IOR(0x12, 114, size_t)
    nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
    // BLKZEROOUT = _IO(0x12, 127), taking a pointer to {start, len}.
    nix::ioctl_write_ptr_bad!(blkzeroout, nix::request_code_none!(0x12, 127), [u64; 2]);
}

/// What kind of object a source or target is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// A regular file (a disk image).
    File,
    /// A block device.
    Block,
}

fn block_size(f: &File) -> io::Result<u64> {
    let mut size = 0u64;
    // SAFETY: the fd is open for the duration of the call and `size` is a
    // valid u64 the kernel writes into.
    unsafe { ioctl::blkgetsize64(f.as_raw_fd(), &mut size) }.map_err(io::Error::from)?;
    Ok(size)
}

/// Starts writing `file`'s dirty pages in `[off, off + len)` (to the end
/// if `len` is 0) back to the disk, without waiting for the disk
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`; the call itself may wait for
/// room in the device's queue). Advice only: a failure changes nothing but
/// speed.
pub fn start_writeback(file: impl AsFd, off: u64, len: u64) {
    let (Ok(off), Ok(len)) = (i64::try_from(off), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a plain syscall on an fd that stays open for its duration; it
    // touches no memory of ours.
    unsafe {
        libc::sync_file_range(
            file.as_fd().as_raw_fd(),
            off,
            len,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Ranges handed to a [`Writeback`] thread and not yet started.
const WRITEBACK_QUEUE: usize = 256;

/// A thread that starts the writeback of what a restore wrote
/// ([`start_writeback`]), so the disk writes while the restore goes on
/// instead of everything waiting for the final sync, and the restore's own
/// threads never wait for the device's queue. Files handed over are closed
/// by it. It ends once every clone of the `Writeback` is dropped and its
/// queue is done.
pub struct Writeback<F: AsFd + Send> {
    tx: crossbeam_channel::Sender<(F, u64, u64)>,
}

impl<F: AsFd + Send> Clone for Writeback<F> {
    fn clone(&self) -> Self {
        Writeback {
            tx: self.tx.clone(),
        }
    }
}

impl<'scope, F: AsFd + Send + 'scope> Writeback<F> {
    /// Starts the thread in scope `s`.
    pub fn spawn<'env>(s: &'scope std::thread::Scope<'scope, 'env>) -> Self {
        let (tx, rx) = crossbeam_channel::bounded::<(F, u64, u64)>(WRITEBACK_QUEUE);
        s.spawn(move || {
            for (f, off, len) in rx {
                start_writeback(&f, off, len);
            }
        });
        Writeback { tx }
    }

    /// Queues `[off, off + len)` of `file` (0: to the end); skipped when
    /// the queue is full.
    pub fn start(&self, file: F, off: u64, len: u64) {
        let _ = self.tx.try_send((file, off, len));
    }
}

fn kind_of(path: &Path) -> Result<DeviceKind> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io("opening", path.display(), e))?;
    let ft = meta.file_type();
    if ft.is_file() {
        Ok(DeviceKind::File)
    } else if ft.is_block_device() {
        Ok(DeviceKind::Block)
    } else {
        Err(Error::Source {
            path: path.display().to_string(),
            reason: if ft.is_dir() {
                "is a directory; a block capture needs a disk image file or a block device".into()
            } else {
                "is neither a regular file nor a block device".into()
            },
        })
    }
}

/// A capture source.
pub struct Source {
    /// The open file or device.
    pub file: File,
    /// Its path, for messages.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// File or device.
    pub kind: DeviceKind,
}

impl Source {
    /// Opens a disk image or block device read-only. A block device that is
    /// mounted or claimed is refused: capturing a live file system gives an
    /// inconsistent image.
    pub fn open(path: &Path) -> Result<Source> {
        let kind = kind_of(path)?;
        let mut opts = OpenOptions::new();
        opts.read(true);
        if kind == DeviceKind::Block {
            opts.custom_flags(libc::O_EXCL);
        }
        let file = opts.open(path).map_err(|e| {
            if e.raw_os_error() == Some(libc::EBUSY) {
                Error::Source {
                    path: path.display().to_string(),
                    reason: "is in use (mounted, or held by LVM, MD or another program); \
                             capture it offline from the ferry agent"
                        .into(),
                }
            } else {
                Error::io("opening", path.display(), e)
            }
        })?;
        let size = match kind {
            DeviceKind::File => file.metadata().map(|m| m.len()),
            DeviceKind::Block => block_size(&file),
        }
        .map_err(|e| Error::io("sizing", path.display(), e))?;
        Ok(Source {
            file,
            path: path.display().to_string(),
            size,
            kind,
        })
    }

    /// The data regions `[start, end)`, aligned out to [`ZERO_BLOCK`], in
    /// order. Everything else reads as zeros.
    pub fn data_regions(&self) -> Result<Vec<(u64, u64)>> {
        if self.kind == DeviceKind::Block {
            return Ok(vec![(0, self.size)]);
        }
        data_regions(&self.file, self.size, &self.path)
    }
}

/// The data regions of a regular file of `size` bytes, `[start, end)`,
/// aligned out to [`ZERO_BLOCK`], in order. Everything else reads as zeros.
pub fn data_regions(file: &File, size: u64, path: &str) -> Result<Vec<(u64, u64)>> {
    {
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut pos = 0u64;
        let align = ZERO_BLOCK as u64;
        while pos < size {
            let Some(data) = seek(file, pos, libc::SEEK_DATA)
                .map_err(|e| Error::io("seeking data in", path, e))?
            else {
                break;
            };
            let hole = seek(file, data, libc::SEEK_HOLE)
                .map_err(|e| Error::io("seeking a hole in", path, e))?
                .unwrap_or(size);
            let start = data / align * align;
            let end = hole.div_ceil(align).saturating_mul(align).min(size);
            match out.last_mut() {
                Some(last) if last.1 >= start => last.1 = last.1.max(end),
                _ => out.push((start, end)),
            }
            pos = hole.max(data + 1);
        }
        Ok(out)
    }
}

/// `lseek` with `SEEK_DATA`/`SEEK_HOLE`; `None` when there is no more data.
fn seek(f: &File, pos: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    // SAFETY: lseek on an open fd has no memory effects.
    let r = unsafe { libc::lseek(f.as_raw_fd(), pos as libc::off_t, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENXIO) {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(r as u64))
}

/// Opens a restore or deploy target; `EBUSY` (an `O_EXCL` open of a device
/// that is mounted or held) becomes a refusal that says so.
fn open_for_writing(opts: &OpenOptions, path: &Path, verb: &'static str) -> Result<File> {
    opts.open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::EBUSY) {
            Error::Source {
                path: path.display().to_string(),
                reason: "is in use (mounted or held); refusing to write to it".into(),
            }
        } else {
            Error::io(verb, path.display(), e)
        }
    })
}

/// A restore target.
pub struct Target {
    /// The open file or device.
    pub file: File,
    /// Its path, for messages.
    pub path: String,
    /// File or device.
    pub kind: DeviceKind,
    /// True if ferry created it for this restore (so it holds only zeros).
    pub fresh: bool,
}

impl Target {
    /// Opens (or creates, sparse) a target that must hold `need` bytes. A
    /// block device that is too small or in use is refused before anything
    /// is written; a file is sized to exactly `need`.
    pub fn open(path: &Path, need: u64, image: &str) -> Result<Target> {
        let p = path.display().to_string();
        let exists = path.symlink_metadata().is_ok();
        let kind = if exists {
            kind_of(path)?
        } else {
            DeviceKind::File
        };
        let mut opts = OpenOptions::new();
        opts.read(true).write(true);
        match (kind, exists) {
            (DeviceKind::Block, _) => {
                opts.custom_flags(libc::O_EXCL);
            }
            (DeviceKind::File, false) => {
                opts.create_new(true);
            }
            (DeviceKind::File, true) => {}
        }
        let file = open_for_writing(&opts, path, if exists { "opening" } else { "creating" })?;
        let target = Target {
            file,
            path: p.clone(),
            kind,
            fresh: !exists,
        };
        match kind {
            DeviceKind::Block => {
                let have = block_size(&target.file).map_err(|e| Error::io("sizing", &p, e))?;
                if have < need {
                    return Err(Error::TargetTooSmall {
                        target: p,
                        have,
                        need,
                        image: image.into(),
                    });
                }
            }
            DeviceKind::File => {
                if target.file.metadata().map(|m| m.len()).unwrap_or(0) != need {
                    target
                        .file
                        .set_len(need)
                        .map_err(|e| Error::io("sizing", &p, e))?;
                }
            }
        }
        Ok(target)
    }

    /// Opens an existing disk (image file or block device) to deploy onto,
    /// without changing its size. A block device is opened `O_EXCL`, so
    /// one that is mounted or held is refused.
    pub fn open_disk(path: &Path) -> Result<Target> {
        let p = path.display().to_string();
        let kind = kind_of(path)?;
        let mut opts = OpenOptions::new();
        opts.read(true).write(true);
        if kind == DeviceKind::Block {
            opts.custom_flags(libc::O_EXCL);
        }
        let file = open_for_writing(&opts, path, "opening")?;
        Ok(Target {
            file,
            path: p,
            kind,
            fresh: false,
        })
    }

    /// The size in bytes of the file or device.
    pub fn size(&self) -> Result<u64> {
        match self.kind {
            DeviceKind::Block => block_size(&self.file),
            DeviceKind::File => self.file.metadata().map(|m| m.len()),
        }
        .map_err(|e| Error::io("sizing", &self.path, e))
    }

    /// Bytes free on the file system holding a file target.
    pub fn free_space(&self) -> Option<u64> {
        let st = nix::sys::statvfs::fstatvfs(&self.file).ok()?;
        Some(st.blocks_available() as u64 * st.fragment_size() as u64)
    }

    /// Bytes a file target already has allocated.
    pub fn allocated(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        self.file.metadata().map(|m| m.blocks() * 512).unwrap_or(0)
    }

    /// True if `[off, off+len)` certainly reads as zeros without reading it:
    /// a fresh target, or a hole in a file.
    pub fn known_zero(&self, off: u64, len: u64) -> io::Result<bool> {
        if self.fresh {
            return Ok(true);
        }
        if self.kind == DeviceKind::Block {
            return Ok(false);
        }
        Ok(match seek(&self.file, off, libc::SEEK_DATA)? {
            None => true,
            Some(d) => d >= off + len,
        })
    }

    /// Makes `[off, off+len)` read as zeros unless it certainly does
    /// already: a hole in a file, a fresh target, or (`device_zeroed`) a
    /// block device the caller knows to read zeros.
    pub fn ensure_zero(&self, off: u64, len: u64, device_zeroed: bool) -> Result<()> {
        let skip = match self.kind {
            DeviceKind::File => self
                .known_zero(off, len)
                .map_err(|e| Error::io("probing", &self.path, e))?,
            DeviceKind::Block => device_zeroed || self.fresh,
        };
        if skip {
            return Ok(());
        }
        self.zero(off, len).map_err(|e| {
            Error::io(
                "zeroing",
                format!("{} at offset {off} ({len} bytes)", self.path),
                e,
            )
        })
    }

    /// Makes `[off, off+len)` read as zeros: punches a hole in a file,
    /// issues BLKZEROOUT on a device (which the kernel turns into discard or
    /// write-zeroes where the device supports them).
    pub fn zero(&self, off: u64, len: u64) -> io::Result<()> {
        match self.kind {
            DeviceKind::File => nix::fcntl::fallocate(
                &self.file,
                nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                    | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
                off as libc::off_t,
                len as libc::off_t,
            )
            .map_err(io::Error::from),
            DeviceKind::Block => {
                let range = [off, len];
                // SAFETY: `range` outlives the call; the kernel only reads it.
                unsafe { ioctl::blkzeroout(self.file.as_raw_fd(), &range) }
                    .map(|_| ())
                    .map_err(io::Error::from)
            }
        }
    }
}
