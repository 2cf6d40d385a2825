//! The `.modinfo` of a kernel module file: what `modinfo(8)` prints.
//!
//! A module's `.modinfo` ELF section is a run of NUL-terminated
//! `key=value` strings (`license=GPL`, `alias=pci:v…`, `depends=a,b`,
//! `firmware=…`, `softdep=pre: crc32c`, `vermagic=…`, `name=…`). This reads
//! it from `.ko` files and from `.ko.xz`, `.ko.zst` and `.ko.gz`, telling
//! the compression by its magic number, not by the name. A module larger
//! than [`MAX_MODULE_SIZE`], compressed or decompressed, is refused. Keys
//! ferry does not use are ignored, as are strings without `=`; text that is
//! not UTF-8 is decoded lossily.

use std::path::Path;

use serde::Serialize;

use crate::compression::{read_bounded, Compression, TooLarge};
use crate::elf;
use crate::error::ModinfoError;
use crate::modalias::{module_name_from_path, normalize_module_name};

/// The largest module ferry reads, in bytes (compressed or not): Debian
/// 6.1's largest module (amdgpu) is about 20 MiB uncompressed.
pub const MAX_MODULE_SIZE: u64 = 64 << 20;

/// A module's `.modinfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Modinfo {
    /// The module's normalised name: its `name=` entry, or else taken from
    /// the file name.
    pub name: String,
    /// Modules it needs loaded first (normalised names, `depends=`).
    pub depends: Vec<String>,
    /// Firmware files it may request, relative to `/lib/firmware`.
    pub firmware: Vec<String>,
    /// The modalias patterns it claims, as written in the module.
    pub alias: Vec<String>,
    /// Soft dependencies, verbatim (`pre: crc32c post: x`), one per entry.
    pub softdep: Vec<String>,
    /// The kernel it was built for (`6.1.0-50-amd64 SMP preempt mod_unload modversions`).
    pub vermagic: Option<String>,
    /// Its license.
    pub license: Option<String>,
    /// Its one-line description.
    pub description: Option<String>,
}

impl Modinfo {
    /// Reads the `.modinfo` of the module file at `path`.
    pub fn read(path: &Path) -> Result<Self, ModinfoError> {
        let file = std::fs::File::open(path).map_err(|source| ModinfoError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let bytes = read_bounded(file, MAX_MODULE_SIZE)
            .map_err(|source| ModinfoError::Read {
                path: path.to_path_buf(),
                source,
            })?
            .map_err(|TooLarge| ModinfoError::TooLarge {
                path: path.to_path_buf(),
                limit: MAX_MODULE_SIZE,
                decompressed: false,
            })?;
        Self::from_bytes(path, &bytes)
    }

    /// Parses a module file's contents (compressed or not); `path` names it
    /// in errors and supplies the name when the module has no `name=`.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self, ModinfoError> {
        let compression = Compression::detect(bytes);
        let decompressed;
        let elf_bytes = match compression {
            Compression::None => bytes,
            _ => {
                let corrupt = |problem: String| ModinfoError::Decompress {
                    path: path.to_path_buf(),
                    format: compression.name(),
                    problem,
                };
                let decoder = compression
                    .decoder(bytes)
                    .map_err(|e| corrupt(e.to_string()))?;
                decompressed = read_bounded(decoder, MAX_MODULE_SIZE)
                    .map_err(|e| corrupt(e.to_string()))?
                    .map_err(|TooLarge| ModinfoError::TooLarge {
                        path: path.to_path_buf(),
                        limit: MAX_MODULE_SIZE,
                        decompressed: true,
                    })?;
                &decompressed
            }
        };
        let elf_error = |e: elf::ElfError| ModinfoError::Elf {
            path: path.to_path_buf(),
            offset: e.offset,
            problem: e.problem,
        };
        let section = elf::section(elf_bytes, ".modinfo")
            .map_err(elf_error)?
            .ok_or_else(|| {
                elf_error(elf::ElfError {
                    offset: 0,
                    problem: "no .modinfo section: not a kernel module".to_owned(),
                })
            })?;
        let file_name = path.to_string_lossy();
        Ok(Self::parse(section, module_name_from_path(&file_name)))
    }

    /// Parses the raw section: NUL-separated `key=value` strings.
    fn parse(section: &[u8], fallback_name: Option<String>) -> Self {
        let mut info = Modinfo::default();
        let mut name = None;
        for entry in section.split(|&b| b == 0).filter(|e| !e.is_empty()) {
            let entry = String::from_utf8_lossy(entry);
            let Some((key, value)) = entry.split_once('=') else {
                continue;
            };
            let value = value.to_owned();
            match key {
                "name" => name = Some(normalize_module_name(&value)),
                "depends" => info.depends.extend(
                    value
                        .split(',')
                        .filter(|d| !d.is_empty())
                        .map(normalize_module_name),
                ),
                "firmware" => info.firmware.push(value),
                "alias" => info.alias.push(value),
                "softdep" => info.softdep.push(value),
                "vermagic" => info.vermagic = Some(value),
                "license" => info.license = Some(value),
                "description" => info.description = Some(value),
                _ => {}
            }
        }
        info.name = name.or(fallback_name).unwrap_or_default();
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::tests::build;
    use proptest::prelude::*;

    const SECTION: &[u8] = b"alias=virtio:d00000002v*\0depends=virtio_ring,virtio\0\
        retpoline=Y\0intree=Y\0name=virtio_blk\0vermagic=6.1.0-50-amd64 SMP mod_unload \0\
        license=GPL\0description=Virtio block driver\0firmware=a/b.fw\0firmware=c.bin\0\
        softdep=pre: crc32c\0garbage-without-equals\0\0\0";

    #[test]
    fn parses_every_key() {
        let elf = build(true, false, &[(".text", b"x"), (".modinfo", SECTION)]);
        let info = Modinfo::from_bytes(Path::new("/m/virtio_blk.ko"), &elf).expect("parses");
        assert_eq!(info.name, "virtio_blk");
        assert_eq!(info.depends, ["virtio_ring", "virtio"]);
        assert_eq!(info.alias, ["virtio:d00000002v*"]);
        assert_eq!(info.firmware, ["a/b.fw", "c.bin"]);
        assert_eq!(info.softdep, ["pre: crc32c"]);
        assert_eq!(info.license.as_deref(), Some("GPL"));
        assert_eq!(info.description.as_deref(), Some("Virtio block driver"));
        assert_eq!(
            info.vermagic.as_deref(),
            Some("6.1.0-50-amd64 SMP mod_unload ")
        );
    }

    #[test]
    fn name_falls_back_to_the_file_name() {
        let elf = build(false, true, &[(".modinfo", b"depends=\0license=GPL\0")]);
        let info =
            Modinfo::from_bytes(Path::new("kernel/x/nvme-core.ko.zst"), &elf).expect("parses");
        assert_eq!(info.name, "nvme_core");
        assert!(info.depends.is_empty());
    }

    #[test]
    fn gzip_is_detected_by_magic_not_name() {
        let elf = build(true, false, &[(".modinfo", SECTION)]);
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut encoder, &elf).expect("compress");
        let gz = encoder.finish().expect("finish");
        let info = Modinfo::from_bytes(Path::new("renamed.ko"), &gz).expect("parses");
        assert_eq!(info.name, "virtio_blk");
    }

    #[test]
    fn errors_name_the_file() {
        let path = Path::new("/lib/modules/x/broken.ko.xz");
        let err = Modinfo::from_bytes(path, b"\xFD7zXZ\0\0\0").expect_err("corrupt xz");
        assert!(
            err.to_string()
                .starts_with("module /lib/modules/x/broken.ko.xz: corrupt xz data"),
            "{err}"
        );
        let err = Modinfo::from_bytes(path, b"hello").expect_err("not ELF");
        assert!(err.to_string().contains("not an ELF file"), "{err}");
        let elf = build(true, false, &[(".text", b"x")]);
        let err = Modinfo::from_bytes(path, &elf).expect_err("no modinfo");
        assert!(err.to_string().contains("no .modinfo section"), "{err}");
        let err = Modinfo::read(Path::new("/nonexistent/x.ko")).expect_err("absent");
        assert_eq!(err.to_string(), "cannot read module /nonexistent/x.ko");
    }

    #[test]
    fn decompression_bombs_are_refused() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(MAX_MODULE_SIZE >> 20) + 1 {
            std::io::Write::write_all(&mut encoder, &zeros).expect("compress");
        }
        let gz = encoder.finish().expect("finish");
        assert!(gz.len() < 1 << 20);
        let err = Modinfo::from_bytes(Path::new("bomb.ko.gz"), &gz).expect_err("too large");
        assert_eq!(
            err.to_string(),
            format!("module bomb.ko.gz is larger than {MAX_MODULE_SIZE} bytes once decompressed; refused")
        );
    }

    proptest! {
        #[test]
        fn never_panics_on_truncated_or_mangled_modules(
            cut in any::<usize>(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
            gzip in any::<bool>(),
        ) {
            let mut bytes = build(true, false, &[(".modinfo", SECTION)]);
            if gzip {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                std::io::Write::write_all(&mut encoder, &bytes).expect("compress");
                bytes = encoder.finish().expect("finish");
            }
            for (at, value) in flips {
                let len = bytes.len();
                bytes[at % len] = value;
            }
            bytes.truncate(cut % (bytes.len() + 1));
            let _ = Modinfo::from_bytes(Path::new("fuzz.ko"), &bytes);
        }
    }
}
