//! Compressed files told apart by their magic bytes, and decoders for them.
//!
//! Kernel modules come as `.ko`, `.ko.xz`, `.ko.zst` or `.ko.gz`, and a
//! Debian package's data member as `data.tar.xz`, `.zst` or `.gz`. The name
//! is only a hint: [`Compression::detect`] reads the magic number, so a
//! renamed file is still decoded right. All decoders are pure Rust
//! (`lzma-rust2`, `ruzstd`, `flate2` with miniz_oxide), so ferry's static
//! build links no C compression library, and each bounds its memory: xz
//! refuses dictionaries over [`XZ_MEM_LIMIT_KIB`], ruzstd windows over
//! 100 MiB, and [`read_bounded`] caps what is decompressed into memory.

use std::io::{self, Read};

/// Memory an xz dictionary may take, in KiB: kernel modules use 1 MiB and
/// Debian packages at most 64 MiB (`xz -9`), so 128 MiB admits both and
/// stops a crafted header from asking for 4 GiB.
pub const XZ_MEM_LIMIT_KIB: u32 = 128 << 10;

/// The compression of some bytes, by their magic number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// No known compression magic: taken as the raw data.
    None,
    /// xz (`FD 37 7A 58 5A 00`).
    Xz,
    /// Zstandard (`28 B5 2F FD`).
    Zstd,
    /// gzip (`1F 8B`).
    Gzip,
}

impl Compression {
    /// Tells the compression from the first bytes of a file (six suffice).
    pub fn detect(head: &[u8]) -> Self {
        if head.starts_with(&[0xFD, b'7', b'z', b'X', b'Z', 0]) {
            Compression::Xz
        } else if head.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) {
            Compression::Zstd
        } else if head.starts_with(&[0x1F, 0x8B]) {
            Compression::Gzip
        } else {
            Compression::None
        }
    }

    /// The format's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "uncompressed",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
        }
    }

    /// A reader that decodes `inner`. Corrupt input shows up as
    /// `io::ErrorKind::InvalidData` (or another I/O error) from `read`.
    pub fn decoder<'a, R: Read + 'a>(self, inner: R) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::None => Box::new(inner),
            Compression::Xz => Box::new(lzma_rust2::XzReader::new_mem_limit(
                inner,
                true,
                XZ_MEM_LIMIT_KIB,
            )),
            Compression::Zstd => Box::new(
                ruzstd::decoding::StreamingDecoder::new(inner)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?,
            ),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(inner)),
        })
    }
}

/// The data was longer than the limit given to [`read_bounded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge;

/// Reads `reader` to its end into memory, or returns `Ok(Err(TooLarge))`
/// as soon as it yields more than `limit` bytes (memory stays bounded by
/// the limit).
pub fn read_bounded(reader: impl Read, limit: u64) -> io::Result<Result<Vec<u8>, TooLarge>> {
    let mut out = Vec::new();
    reader.take(limit.saturating_add(1)).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Ok(Err(TooLarge));
    }
    Ok(Ok(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_numbers() {
        assert_eq!(Compression::detect(b"\xFD7zXZ\0rest"), Compression::Xz);
        assert_eq!(
            Compression::detect(b"\x28\xB5\x2F\xFDxx"),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"\x1F\x8B\x08"), Compression::Gzip);
        assert_eq!(Compression::detect(b"\x7FELF"), Compression::None);
        assert_eq!(Compression::detect(b""), Compression::None);
        assert_eq!(Compression::detect(b"\xFD7zX"), Compression::None);
    }

    #[test]
    fn gzip_round_trip_and_bound() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        io::Write::write_all(&mut encoder, &[7u8; 10_000]).expect("compress");
        let gz = encoder.finish().expect("finish");
        let decode = || {
            Compression::detect(&gz)
                .decoder(gz.as_slice())
                .expect("decoder")
        };
        assert_eq!(
            read_bounded(decode(), 10_000).expect("read"),
            Ok(vec![7u8; 10_000])
        );
        assert_eq!(read_bounded(decode(), 9_999).expect("read"), Err(TooLarge));
    }

    #[test]
    fn corrupt_data_is_an_error_not_a_panic() {
        for data in [
            &b"\xFD7zXZ\0garbage garbage garbage"[..],
            b"\x28\xB5\x2F\xFD\xFF\xFF\xFF\xFF",
            b"\x1F\x8B\x08\x00garbage",
        ] {
            let result = Compression::detect(data)
                .decoder(data)
                .and_then(|d| read_bounded(d, 1 << 20));
            assert!(
                matches!(result, Err(_) | Ok(Err(TooLarge))),
                "{data:?} decoded to {result:?}"
            );
        }
    }
}
