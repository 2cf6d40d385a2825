//! Reading an initramfs back: the list of files it holds, so that a
//! rebuilt one is checked for the modules the new hardware needs.
//!
//! An initramfs is a sequence of newc (`070701`/`070702`) cpio archives,
//! uncompressed ones first (the early microcode prefix that
//! initramfs-tools and dracut prepend), then one compressed archive. The
//! compressions the kernel accepts are recognised by their magic; gzip,
//! zstd, xz and lz4 (legacy frames) are read. Nothing is trusted:
//! names and sizes are bounded, and the decompressed size is capped at
//! [`MAX_UNPACKED`].

use std::io::{self, Read};
use std::path::Path;

use drivers_db::compression::Compression;

/// The most decompressed bytes read from one initramfs (a generous
/// MODULES=most image is ~250 MB).
pub const MAX_UNPACKED: u64 = 2 << 30;
/// The longest file name accepted in a cpio header.
const MAX_NAME: usize = 4096;
/// newc header length.
const HEADER: usize = 110;

/// Why an initramfs could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// Reading failed.
    #[error("{path}: {what}: {source}")]
    Io {
        /// The initramfs.
        path: String,
        /// What was being read.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// The content is not what an initramfs holds.
    #[error("{path}: {reason} (at byte {offset} of {part})")]
    Format {
        /// The initramfs.
        path: String,
        /// Which part: `file`, or the compressed archive's decompressed stream.
        part: String,
        /// Offset within that part.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
}

/// What an initramfs holds.
#[derive(Debug, Default, Clone)]
pub struct Listing {
    /// Every path, in archive order (without a leading `./` or `/`).
    pub paths: Vec<String>,
    /// The compression of the main archive (`gzip`, `zstd`, ...), or
    /// `none`.
    pub compression: String,
    /// How many uncompressed archives came first (microcode).
    pub early_archives: usize,
}

impl Listing {
    /// The kernel modules it holds, by normalized name (`-` → `_`).
    pub fn modules(&self) -> Vec<String> {
        let mut m: Vec<String> = self
            .paths
            .iter()
            .filter_map(|p| {
                let base = p.rsplit('/').next()?;
                let stem = [".ko.zst", ".ko.xz", ".ko.gz", ".ko"]
                    .iter()
                    .find_map(|s| base.strip_suffix(s))?;
                Some(stem.replace('-', "_"))
            })
            .collect();
        m.sort();
        m.dedup();
        m
    }
}

/// A reader counting its offset and refusing to go past a cap.
struct Counted<R> {
    inner: R,
    offset: u64,
    cap: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.offset >= self.cap {
            return Err(io::Error::other(format!(
                "more than {} bytes unpacked",
                self.cap
            )));
        }
        let n = self.inner.read(buf)?;
        self.offset += n as u64;
        Ok(n)
    }
}

fn hex_field(h: &[u8], i: usize) -> Option<u64> {
    let s = std::str::from_utf8(h.get(6 + i * 8..6 + (i + 1) * 8)?).ok()?;
    u64::from_str_radix(s, 16).ok()
}

fn skip<R: Read>(r: &mut R, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut r.take(n), &mut io::sink())?;
    if copied < n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Reads cpio archives from `r` until its end (several archives may
/// follow each other, padded with zeros), appending paths. With
/// `stop_after_trailer`, returns after the first archive's trailer
/// instead. Returns false when `r` ended before any header.
fn read_cpio<R: Read>(
    r: &mut Counted<R>,
    paths: &mut Vec<String>,
    stop_after_trailer: bool,
) -> Result<bool, (u64, String)> {
    let mut any = false;
    loop {
        let start = r.offset;
        let mut h = [0u8; HEADER];
        // Zero padding between archives is skipped 4 bytes at a time.
        let mut got = 0;
        while got < HEADER {
            let n = r
                .read(&mut h[got..])
                .map_err(|e| (r.offset, e.to_string()))?;
            if n == 0 {
                if got == 0 || h[..got].iter().all(|&b| b == 0) {
                    return Ok(any);
                }
                return Err((start, "truncated cpio header".into()));
            }
            got += n;
            while got >= 4 && h[..4] == [0, 0, 0, 0] {
                h.copy_within(4..got, 0);
                got -= 4;
            }
        }
        if &h[..6] != b"070701" && &h[..6] != b"070702" {
            return Err((
                r.offset - HEADER as u64,
                format!(
                    "not a newc cpio header ({:?})",
                    String::from_utf8_lossy(&h[..6])
                ),
            ));
        }
        let bad = |what: &str| (r.offset, format!("bad {what} in cpio header"));
        let filesize = hex_field(&h, 6).ok_or_else(|| bad("file size"))?;
        let namesize = hex_field(&h, 11).ok_or_else(|| bad("name size"))? as usize;
        if namesize == 0 || namesize > MAX_NAME {
            return Err((r.offset, format!("cpio name size {namesize} out of range")));
        }
        let mut name = vec![0u8; namesize];
        r.read_exact(&mut name)
            .map_err(|e| (r.offset, format!("reading a cpio name: {e}")))?;
        let name_pad = (4 - (HEADER + namesize) % 4) % 4;
        skip(r, name_pad as u64).map_err(|e| (r.offset, e.to_string()))?;
        let name = String::from_utf8_lossy(name.strip_suffix(&[0]).unwrap_or(&name)).into_owned();
        let data_pad = (4 - filesize % 4) % 4;
        skip(r, filesize + data_pad)
            .map_err(|e| (r.offset, format!("reading {name}'s data: {e}")))?;
        any = true;
        if name == "TRAILER!!!" {
            if stop_after_trailer {
                return Ok(true);
            }
            continue;
        }
        let clean = name
            .trim_start_matches("./")
            .trim_start_matches('/')
            .to_string();
        if !clean.is_empty() && clean != "." {
            paths.push(clean);
        }
    }
}

/// Lists the files of the initramfs at `path`.
pub fn list(path: &Path) -> Result<Listing, InitramfsError> {
    let name = path.display().to_string();
    let data = std::fs::read(path).map_err(|e| InitramfsError::Io {
        path: name.clone(),
        what: "reading".into(),
        source: e,
    })?;
    list_bytes(&name, &data)
}

/// Lists an initramfs held in memory; `name` is used in errors.
pub fn list_bytes(name: &str, data: &[u8]) -> Result<Listing, InitramfsError> {
    let fmt = |part: &str, (offset, reason): (u64, String)| InitramfsError::Format {
        path: name.to_string(),
        part: part.to_string(),
        offset,
        reason,
    };
    let mut listing = Listing {
        compression: "none".into(),
        ..Listing::default()
    };
    let mut pos = 0usize;
    loop {
        while data.get(pos..pos + 4) == Some(&[0, 0, 0, 0]) {
            pos += 4;
        }
        let rest = &data[pos.min(data.len())..];
        if rest.is_empty() {
            return Ok(listing);
        }
        if rest.starts_with(b"0707") {
            let mut r = Counted {
                inner: rest,
                offset: 0,
                cap: rest.len() as u64,
            };
            read_cpio(&mut r, &mut listing.paths, true)
                .map_err(|(o, e)| fmt("file", (o + pos as u64, e)))?;
            listing.early_archives += 1;
            pos += r.offset as usize;
            continue;
        }
        let (kind, reader): (&str, Box<dyn Read + '_>) =
            decoder(rest).map_err(|e| fmt("file", (pos as u64, e)))?;
        // The early archives were really early: the compressed one is main.
        listing.compression = kind.to_string();
        let mut r = Counted {
            inner: reader,
            offset: 0,
            cap: MAX_UNPACKED,
        };
        let part = format!("the {kind} archive at byte {pos}");
        read_cpio(&mut r, &mut listing.paths, false).map_err(|e| fmt(&part, e))?;
        return Ok(listing);
    }
}

/// A decompressing reader for the archive starting at `data`.
fn decoder(data: &[u8]) -> Result<(&'static str, Box<dyn Read + '_>), String> {
    let c = Compression::detect(data);
    if c != Compression::None {
        let d = c.decoder(data).map_err(|e| format!("{}: {e}", c.name()))?;
        return Ok((c.name(), d));
    }
    let magic = |m: &[u8]| data.starts_with(m);
    if magic(&[0x02, 0x21, 0x4c, 0x18]) {
        return Ok(("lz4", Box::new(io::Cursor::new(lz4_legacy(data)?))));
    }
    let what = if magic(b"BZh") {
        "bzip2"
    } else if magic(&[0x89, b'L', b'Z', b'O']) {
        "lzo"
    } else if magic(&[0x5d, 0, 0]) {
        "lzma"
    } else {
        return Err(format!(
            "unknown archive format (first bytes {:02x?})",
            &data[..data.len().min(6)]
        ));
    };
    Err(format!("{what}-compressed initramfs archives cannot be checked by ferry; use gzip, zstd, xz or lz4"))
}

/// The kernel's lz4 legacy format (`lz4 -l`): a magic, then blocks of a
/// little-endian u32 compressed length and an lz4 block of at most 8 MiB
/// decompressed; another magic may start a new stream.
fn lz4_legacy(data: &[u8]) -> Result<Vec<u8>, String> {
    const BLOCK: usize = 8 << 20;
    let mut out = Vec::new();
    let mut p = 4;
    while p + 4 <= data.len() {
        let word = u32::from_le_bytes([data[p], data[p + 1], data[p + 2], data[p + 3]]);
        p += 4;
        if word == 0x184c_2102 {
            continue;
        }
        let len = word as usize;
        let Some(block) = data.get(p..p + len) else {
            // The kernel stops at the first bad block length: what follows
            // is padding.
            break;
        };
        let d = lz4_flex::block::decompress(block, BLOCK)
            .map_err(|e| format!("lz4 block at byte {}: {e}", p - 4))?;
        if out.len() as u64 + d.len() as u64 > MAX_UNPACKED {
            return Err(format!("more than {MAX_UNPACKED} bytes unpacked"));
        }
        out.extend_from_slice(&d);
        p += len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A newc archive of `files` (name, data), with its trailer.
    pub(crate) fn newc(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut put = |name: &str, data: &[u8], ino: usize| {
            let h = format!(
                "070701{ino:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
                0o100644,
                0,
                0,
                1,
                0,
                data.len(),
                0,
                0,
                0,
                0,
                name.len() + 1,
                0
            );
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            while out.len() % 4 != 0 {
                out.push(0);
            }
            out.extend_from_slice(data);
            while out.len() % 4 != 0 {
                out.push(0);
            }
        };
        for (i, (n, d)) in files.iter().enumerate() {
            put(n, d, i + 1);
        }
        put("TRAILER!!!", b"", 0);
        out
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).expect("gzip");
        e.finish().expect("gzip")
    }

    #[test]
    fn lists_microcode_prefix_and_compressed_main_archive() {
        let mut img = newc(&[("kernel/x86/microcode/GenuineIntel.bin", b"ucode")]);
        img.extend_from_slice(&[0; 512]);
        img.extend(gzip(&newc(&[
            (".", b""),
            (
                "usr/lib/modules/6.1.0-50-amd64/kernel/drivers/block/virtio_blk.ko",
                b"\x7fELF...",
            ),
            (
                "usr/lib/modules/6.1.0-50-amd64/kernel/drivers/nvme/host/nvme-core.ko.xz",
                b"xz",
            ),
            ("init", b"#!/bin/sh\n"),
        ])));
        let l = list_bytes("initrd.img", &img).expect("list");
        assert_eq!(l.early_archives, 1);
        assert_eq!(l.compression, "gzip");
        assert_eq!(l.paths.len(), 4);
        assert_eq!(l.modules(), ["nvme_core", "virtio_blk"]);
    }

    #[test]
    fn uncompressed_only_and_lz4_legacy() {
        let plain = newc(&[("a.ko", b"1")]);
        assert_eq!(list_bytes("x", &plain).expect("list").modules(), ["a"]);
        let inner = newc(&[("lib/modules/v/b.ko", b"22")]);
        let block = lz4_flex::block::compress(&inner);
        let mut lz = vec![0x02, 0x21, 0x4c, 0x18];
        lz.extend_from_slice(&(block.len() as u32).to_le_bytes());
        lz.extend_from_slice(&block);
        let l = list_bytes("x", &lz).expect("list");
        assert_eq!(
            (l.compression.as_str(), l.modules()),
            ("lz4", vec!["b".to_string()])
        );
    }

    #[test]
    fn damaged_input_is_an_error_naming_the_offset_never_a_panic() {
        let mut img = newc(&[("a.ko", b"1")]);
        img.extend(gzip(&newc(&[("b.ko", b"2")])));
        for cut in [7, 50, 111, img.len() - 9] {
            let _ = list_bytes("x", &img[..cut]);
        }
        let e = list_bytes("initrd", b"BZh91AY&SY").expect_err("bzip2");
        assert!(e.to_string().contains("bzip2"), "{e}");
        let e = list_bytes("initrd", b"hello world, not an archive").expect_err("junk");
        assert!(
            e.to_string().contains("initrd") && e.to_string().contains("byte 0"),
            "{e}"
        );
        let mut bad = newc(&[("a", b"1")]);
        bad[6 + 11 * 8..6 + 12 * 8].copy_from_slice(b"ffffffff");
        let e = list_bytes("initrd", &bad).expect_err("name size");
        assert!(e.to_string().contains("name size"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = list_bytes("x", &data);
        }
    }
}
