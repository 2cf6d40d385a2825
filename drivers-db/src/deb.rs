//! Kernel module trees out of Debian binary packages, without dpkg.
//!
//! A `.deb` is an `ar` archive (`!<arch>\n`, then members with 60-byte
//! headers, data padded to even offsets) holding `debian-binary`,
//! `control.tar.*` and `data.tar.*`. [`unpack_module_trees`] finds the data
//! member, decodes it (xz, zstd, gzip or none, told by magic) as a stream
//! and writes the entries under `lib/modules/VERSION/` or
//! `usr/lib/modules/VERSION/` into `DEST/VERSION/` through a
//! [`TreeWriter`]; every other entry is ignored. An entry whose path is
//! absolute or contains `..` anywhere in the archive makes the whole package
//! refused: no honest package has one.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use crate::compression::Compression;
use crate::error::LibraryError;
use crate::staging::{safe_relative, Skipped, TreeWriter, WriteError};

/// `ar`'s global header.
const AR_MAGIC: &[u8; 8] = b"!<arch>\n";
/// The length of an `ar` member header.
const AR_HEADER_LEN: u64 = 60;

/// The module trees found in a package.
#[derive(Debug, Default)]
pub struct Unpacked {
    /// Kernel versions, each unpacked into `DEST/VERSION`, sorted.
    pub kernels: Vec<String>,
    /// Entries of those trees that were left out.
    pub skipped: Vec<Skipped>,
}

fn archive_error(path: &Path, offset: u64, problem: impl Into<String>) -> LibraryError {
    LibraryError::Archive {
        path: path.to_path_buf(),
        offset,
        problem: problem.into(),
    }
}

/// Opens `deb` and positions a reader on its `data.tar*` member; returns
/// the member's name and a reader limited to its data.
fn data_member(deb: &Path) -> Result<(String, io::Take<BufReader<File>>), LibraryError> {
    let file = File::open(deb).map_err(LibraryError::io("opening", deb))?;
    let mut reader = BufReader::new(file);
    let mut magic = [0u8; 8];
    reader
        .read_exact(&mut magic)
        .map_err(|e| archive_error(deb, 0, format!("not an ar archive: {e}")))?;
    if &magic != AR_MAGIC {
        return Err(archive_error(
            deb,
            0,
            "not a Debian package: no `!<arch>` header",
        ));
    }
    let mut offset = AR_MAGIC.len() as u64;
    loop {
        let mut header = [0u8; AR_HEADER_LEN as usize];
        match reader.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(archive_error(
                    deb,
                    offset,
                    "no data.tar member: not a binary package",
                ))
            }
            Err(e) => return Err(LibraryError::io("reading", deb)(e)),
        }
        if &header[58..60] != b"`\n" {
            return Err(archive_error(deb, offset, "bad ar member header"));
        }
        let name = String::from_utf8_lossy(&header[..16])
            .trim_end()
            .trim_end_matches('/')
            .to_owned();
        let size: u64 = std::str::from_utf8(&header[48..58])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| {
                archive_error(
                    deb,
                    offset + 48,
                    format!("bad size in the header of `{name}`"),
                )
            })?;
        offset += AR_HEADER_LEN;
        if name.starts_with("data.tar") {
            return Ok((name, reader.take(size)));
        }
        // Members are padded to an even offset.
        let skip = size + size % 2;
        offset = offset
            .checked_add(skip)
            .ok_or_else(|| archive_error(deb, offset, "member size overflows"))?;
        reader
            .seek(SeekFrom::Start(offset))
            .map_err(LibraryError::io("reading", deb))?;
    }
}

/// Splits an archive path into the kernel version and the path inside its
/// tree when it lies under `lib/modules/VERSION/` or
/// `usr/lib/modules/VERSION/`.
fn module_tree_path(path: &Path) -> Option<(String, PathBuf)> {
    let parts: Vec<&str> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => p.to_str(),
            _ => None,
        })
        .collect();
    let rest = match parts.as_slice() {
        ["lib", "modules", rest @ ..] | ["usr", "lib", "modules", rest @ ..] => rest,
        _ => return None,
    };
    let (version, inside) = rest.split_first()?;
    Some((version.to_string(), inside.iter().collect()))
}

/// Unpacks the kernel module trees of the package `deb` into
/// `dest/VERSION/` (see the module documentation).
pub fn unpack_module_trees(deb: &Path, dest: &Path) -> Result<Unpacked, LibraryError> {
    let (member, data) = data_member(deb)?;
    let mut data = BufReader::new(data);
    let head = data.fill_buf().map_err(LibraryError::io("reading", deb))?;
    let compression = Compression::detect(head);
    let decoder = compression.decoder(data).map_err(|e| {
        archive_error(
            deb,
            0,
            format!("{member}: corrupt {} data: {e}", compression.name()),
        )
    })?;
    let mut archive = tar::Archive::new(decoder);
    let mut trees: BTreeMap<String, TreeWriter> = BTreeMap::new();
    let entries = archive
        .entries()
        .map_err(|e| archive_error(deb, 0, format!("{member}: {e}")))?;
    let mut position = 0;
    for entry in entries {
        let mut entry = entry.map_err(|e| {
            archive_error(deb, position, format!("{member}: after this offset: {e}"))
        })?;
        position = entry.raw_header_position();
        let path = entry
            .path()
            .map_err(|e| archive_error(deb, position, format!("{member}: entry path: {e}")))?
            .into_owned();
        let shown = path.display().to_string();
        let refuse = |problem: String| LibraryError::UnsafeEntry {
            archive: deb.to_path_buf(),
            entry: shown.clone(),
            problem,
        };
        safe_relative(&path).map_err(&refuse)?;
        let Some((version, inside)) = module_tree_path(&path) else {
            continue;
        };
        if version.starts_with('.') {
            return Err(refuse("a kernel version cannot start with `.`".to_owned()));
        }
        let tree = match trees.entry(version) {
            std::collections::btree_map::Entry::Occupied(tree) => tree.into_mut(),
            std::collections::btree_map::Entry::Vacant(slot) => {
                let root = dest.join(slot.key());
                slot.insert(TreeWriter::new(root).map_err(|e| write_error(deb, &shown, e))?)
            }
        };
        let kind = entry.header().entry_type();
        let link = entry
            .link_name()
            .map_err(|e| archive_error(deb, position, format!("{member}: link name: {e}")))?
            .map(|l| l.into_owned());
        let written = match (kind, link) {
            (tar::EntryType::Directory, _) => tree.dir(&inside),
            (tar::EntryType::Regular | tar::EntryType::Continuous, _) => {
                let size = entry.size();
                tree.file(&inside, size, &mut entry)
            }
            (tar::EntryType::Symlink, Some(target)) => tree.symlink(&inside, &target),
            (tar::EntryType::Link, Some(target)) => match module_tree_path(&target) {
                Some((_, target_inside)) => tree.hard_link(&inside, &target_inside),
                None => {
                    tree.skip(&inside, "hard link to outside the tree".to_owned());
                    Ok(())
                }
            },
            (other, _) => {
                tree.skip(&inside, format!("unsupported entry type {other:?}"));
                Ok(())
            }
        };
        written.map_err(|e| write_error(deb, &shown, e))?;
    }
    let mut unpacked = Unpacked::default();
    for (version, tree) in trees {
        unpacked.kernels.push(version);
        unpacked.skipped.extend(tree.skipped);
    }
    if unpacked.kernels.is_empty() {
        return Err(LibraryError::NoKernel {
            path: deb.to_path_buf(),
            expected: "entries under lib/modules/VERSION/",
        });
    }
    Ok(unpacked)
}

/// Turns a [`WriteError`] for `entry` of `archive` into a library error.
pub(crate) fn write_error(archive: &Path, entry: &str, error: WriteError) -> LibraryError {
    match error {
        WriteError::Unsafe(problem) | WriteError::TooLarge(problem) => LibraryError::UnsafeEntry {
            archive: archive.to_path_buf(),
            entry: entry.to_owned(),
            problem,
        },
        WriteError::Io {
            action,
            path,
            source,
        } => LibraryError::Io {
            action,
            path,
            source,
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An `ar` archive of `members` (name, data), as dpkg-deb writes it.
    pub(crate) fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = AR_MAGIC.to_vec();
        for (name, data) in members {
            out.extend_from_slice(
                format!(
                    "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                    name,
                    0,
                    0,
                    0,
                    100644,
                    data.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(data);
            if data.len() % 2 == 1 {
                out.push(b'\n');
            }
        }
        out
    }

    /// A tar archive with the given entries: `(path, Some(data))` for files,
    /// `(path, None)` for directories, written with raw names so that
    /// malicious paths survive.
    pub(crate) fn tar(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            let name = path.as_bytes();
            header.as_old_mut().name[..name.len()].copy_from_slice(name);
            header.set_mode(0o644);
            match data {
                Some(data) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(data.len() as u64);
                    header.set_cksum();
                    builder.append(&header, *data).expect("append");
                }
                None => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    header.set_cksum();
                    builder.append(&header, io::empty()).expect("append");
                }
            }
        }
        builder.into_inner().expect("tar")
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut encoder, data).expect("compress");
        encoder.finish().expect("finish")
    }

    fn deb_file(dir: &Path, data_tar: &[u8]) -> PathBuf {
        let deb = ar(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.gz", &gzip(&tar(&[("./control", Some(b"x"))]))),
            ("data.tar.gz", &gzip(data_tar)),
        ]);
        let path = dir.join("linux-image.deb");
        std::fs::write(&path, deb).expect("write deb");
        path
    }

    #[test]
    fn takes_only_module_trees() {
        let dir = tempfile::tempdir().expect("temp dir");
        let deb = deb_file(
            dir.path(),
            &tar(&[
                ("./", None),
                ("./boot/vmlinuz-6.1.0-9-amd64", Some(b"kernel")),
                ("./lib/modules/6.1.0-9-amd64/", None),
                ("./lib/modules/6.1.0-9-amd64/kernel/a.ko", Some(b"A")),
                ("./usr/lib/modules/6.2.0-1-amd64/modules.builtin", Some(b"")),
                ("./usr/share/doc/x", Some(b"doc")),
            ]),
        );
        let dest = dir.path().join("out");
        let unpacked = unpack_module_trees(&deb, &dest).expect("unpacks");
        assert_eq!(unpacked.kernels, ["6.1.0-9-amd64", "6.2.0-1-amd64"]);
        assert_eq!(
            std::fs::read(dest.join("6.1.0-9-amd64/kernel/a.ko")).expect("module"),
            b"A"
        );
        assert!(dest.join("6.2.0-1-amd64/modules.builtin").is_file());
        assert!(!dest.join("boot").exists() && !dest.join("usr").exists());
    }

    #[test]
    fn refuses_traversal() {
        let dir = tempfile::tempdir().expect("temp dir");
        for evil in [
            "./lib/modules/6.1/../../../../escaped",
            "../escaped",
            "/lib/modules/6.1/kernel/a.ko",
        ] {
            let deb = deb_file(dir.path(), &tar(&[(evil, Some(b"evil"))]));
            let err = unpack_module_trees(&deb, &dir.path().join("out")).expect_err(evil);
            assert!(err.to_string().contains("refusing entry"), "{evil}: {err}");
        }
        assert!(!dir.path().join("escaped").exists());
    }

    #[test]
    fn malformed_packages_are_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("x.deb");
        let cases: [(&[u8], &str); 4] = [
            (b"PK\x03\x04", "not an ar archive"),
            (b"!<arch>\nshort", "no data.tar member"),
            (&ar(&[("debian-binary", b"2.0\n")]), "no data.tar member"),
            (
                &ar(&[("data.tar.gz", b"\x1F\x8Bnot really gzip")]),
                "data.tar.gz",
            ),
        ];
        for (bytes, expected) in cases {
            std::fs::write(&path, bytes).expect("write");
            let err = unpack_module_trees(&path, &dir.path().join("out")).expect_err(expected);
            assert!(err.to_string().contains(expected), "{err}");
            assert!(err.to_string().contains("x.deb"), "{err}");
        }
        let deb = deb_file(dir.path(), &tar(&[("./boot/vmlinuz", Some(b"k"))]));
        let err = unpack_module_trees(&deb, &dir.path().join("out")).expect_err("no tree");
        assert!(err.to_string().contains("no kernel module tree"), "{err}");
    }
}
