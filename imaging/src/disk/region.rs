//! A byte range of a disk (the whole disk or one partition), read with
//! `pread` and bounds-checked, with errors that name the disk, the
//! partition and the absolute byte offset.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use crate::error::{Error, Result};

/// A name for an open file in messages: its path from `/proc/self/fd`.
pub(crate) fn describe(file: &File) -> String {
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| format!("<disk fd {}>", file.as_raw_fd()))
}

/// `[start, start + len)` of a disk.
#[derive(Clone, Copy)]
pub(crate) struct Region<'a> {
    file: &'a File,
    disk: &'a str,
    /// The partition number, `None` for the whole disk.
    part: Option<u32>,
    start: u64,
    len: u64,
}

impl<'a> Region<'a> {
    /// The whole disk of `len` bytes.
    pub(crate) fn whole(file: &'a File, disk: &'a str, len: u64) -> Self {
        Region {
            file,
            disk,
            part: None,
            start: 0,
            len,
        }
    }

    /// Partition `number` at `[start, start + len)` of this region.
    pub(crate) fn sub(&self, start: u64, len: u64, number: u32) -> Region<'a> {
        let start = self.start.saturating_add(start);
        Region {
            file: self.file,
            disk: self.disk,
            part: Some(number),
            start,
            len: len.min(u64::MAX - start),
        }
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Absolute disk offset of the region-relative offset `off`.
    pub(crate) fn abs(&self, off: u64) -> u64 {
        self.start.saturating_add(off)
    }

    /// "disk" or "disk partition N", for messages.
    pub(crate) fn label(&self) -> String {
        match self.part {
            None => self.disk.to_string(),
            Some(0) => format!("{} (whole disk)", self.disk),
            Some(n) => format!("{} partition {n}", self.disk),
        }
    }

    /// An [`Error::Corrupt`] about this region.
    pub(crate) fn corrupt(&self, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            path: self.label(),
            reason: reason.into(),
        }
    }

    /// True when `[off, off + n)` lies inside the region.
    pub(crate) fn contains(&self, off: u64, n: u64) -> bool {
        off.checked_add(n).is_some_and(|end| end <= self.len)
    }

    /// The error for `[off, off + n)` reaching past the region's end.
    fn beyond(&self, off: u64, n: u64, what: &dyn Fn() -> String) -> Error {
        self.corrupt(format!(
            "{} at byte {} ({} bytes) lies beyond the end of the {}-byte {}",
            what(),
            self.abs(off),
            n,
            self.len,
            if self.part.is_some() {
                "partition"
            } else {
                "disk"
            }
        ))
    }

    /// Reads `buf.len()` bytes at region offset `off`; `what` names them
    /// for the error ("the ext4 superblock").
    pub(crate) fn read(&self, off: u64, buf: &mut [u8], what: &dyn Fn() -> String) -> Result<()> {
        let n = buf.len() as u64;
        if !self.contains(off, n) {
            return Err(self.beyond(off, n, what));
        }
        self.file
            .read_exact_at(buf, self.abs(off))
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => self.corrupt(format!(
                    "the disk ends before {} at byte {} ({} bytes): truncated image?",
                    what(),
                    self.abs(off),
                    n
                )),
                _ => Error::io(
                    "reading",
                    format!("{} ({} at byte {})", self.label(), what(), self.abs(off)),
                    e,
                ),
            })
    }

    /// Reads `n` bytes at `off` into a new vector. `n` must have been
    /// validated against the region (it is checked again here before
    /// anything is allocated).
    pub(crate) fn read_vec(&self, off: u64, n: u64, what: &dyn Fn() -> String) -> Result<Vec<u8>> {
        if !self.contains(off, n) {
            return Err(self.beyond(off, n, what));
        }
        let len = usize::try_from(n).map_err(|_| self.beyond(off, n, what))?;
        let mut buf = vec![0u8; len];
        self.read(off, &mut buf, what)?;
        Ok(buf)
    }

    /// Reads what exists of `[off, off + buf.len())`; returns false (and
    /// reads nothing) when that range is not inside the region or the disk
    /// ends first. For probing signatures.
    pub(crate) fn probe(&self, off: u64, buf: &mut [u8]) -> Result<bool> {
        if !self.contains(off, buf.len() as u64) {
            return Ok(false);
        }
        match self.file.read_exact_at(buf, self.abs(off)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(Error::io(
                "reading",
                format!("{} at byte {}", self.label(), self.abs(off)),
                e,
            )),
        }
    }

    /// A `Read + Seek` view of the whole region for the table crates, with
    /// `[hide_start, hide_end)` reading as zeros (to make the `gpt` crate
    /// fall back to the backup header). Reads never move the shared file's
    /// cursor, and writes fail.
    pub(crate) fn cursor(&self, hide: (u64, u64)) -> RegionCursor<'a> {
        RegionCursor {
            file: self.file,
            start: self.start,
            len: self.len,
            pos: 0,
            hide,
        }
    }
}

/// See [`Region::cursor`].
#[derive(Debug)]
pub(crate) struct RegionCursor<'a> {
    file: &'a File,
    start: u64,
    len: u64,
    pos: u64,
    hide: (u64, u64),
}

impl Read for RegionCursor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.len - self.pos) as usize;
        let n = self
            .file
            .read_at(&mut buf[..want], self.start.saturating_add(self.pos))?;
        let (a, b) = (self.pos, self.pos + n as u64);
        let (ha, hb) = (self.hide.0.max(a), self.hide.1.min(b));
        if ha < hb {
            buf[(ha - a) as usize..(hb - a) as usize].fill(0);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for RegionCursor<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let new = new.ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        self.pos = new;
        Ok(new)
    }
}

impl Write for RegionCursor<'_> {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the disk survey never writes",
        ))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
