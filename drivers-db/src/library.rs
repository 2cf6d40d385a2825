//! The driver library: kernel module trees per kernel version, to fill the
//! gaps of an image's own tree.
//!
//! On disk (format 1):
//!
//! ```text
//! LIBRARY/
//!   6.1.0-50-amd64/        the contents of /lib/modules/6.1.0-50-amd64:
//!     modules.dep            modules.* indexes (modules.dep marks a complete tree)
//!     modules.alias
//!     kernel/…/*.ko[.xz|.zst|.gz]
//!   firmware/              optional, laid out as /lib/firmware (filled by hand)
//!   .staging-XXXX/         work in progress, removed when done
//! ```
//!
//! [`DriverLibrary::add_deb`] takes a Debian `linux-image-*` package and
//! [`DriverLibrary::add_tree`] a `/lib/modules/VERSION` directory. Each
//! kernel is assembled in a staging directory inside the library, completed
//! and then moved into place with one `rename`, so a kernel is either
//! absent or complete; adding a version again replaces the old tree (it is
//! moved aside, then deleted; an interrupted replace can leave the version
//! absent, never half-written). Trees without `modules.alias` and
//! `modules.dep` (every Debian package) get them from `depmod -b` when the
//! host has `depmod`, otherwise from ferry's own generator
//! ([`crate::depmod`]), which writes the text indexes only; the report says
//! which. Concurrent `add`s of the same version are not coordinated: the
//! last one wins.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::deb;
use crate::depmod::generate_indexes;
use crate::error::LibraryError;
use crate::matcher::KernelModules;
use crate::staging::{Skipped, TreeWriter};

/// The library's firmware directory, laid out as `/lib/firmware`.
const FIRMWARE_DIR: &str = "firmware";
/// Prefix of staging directories (hidden, so never taken for a kernel).
const STAGING_PREFIX: &str = ".staging-";

/// Where a kernel tree's `modules.alias` and `modules.dep` came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexSource {
    /// The source had them.
    Shipped,
    /// The host's `depmod -b` made them.
    Depmod,
    /// ferry's own generator made them ([`crate::depmod`]).
    Ferry,
}

impl std::fmt::Display for IndexSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IndexSource::Shipped => "shipped with the tree",
            IndexSource::Depmod => "made by depmod",
            IndexSource::Ferry => "made by ferry",
        })
    }
}

/// One kernel added to the library.
#[derive(Debug, Clone, Serialize)]
pub struct AddedKernel {
    /// The kernel version (`6.1.0-50-amd64`).
    pub version: String,
    /// Its tree in the library.
    pub path: PathBuf,
    /// How many loadable modules its `modules.dep` lists.
    pub modules: usize,
    /// Where its indexes came from.
    pub indexes: IndexSource,
    /// Why `depmod` was not used, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depmod_note: Option<String>,
    /// True when a tree of the same version was there and was replaced.
    pub replaced: bool,
}

/// What [`DriverLibrary::add_deb`] or [`DriverLibrary::add_tree`] did.
#[derive(Debug, Clone, Serialize)]
pub struct AddReport {
    /// The kernels added, by version.
    pub kernels: Vec<AddedKernel>,
    /// Entries of the source that were left out (links leaving the tree,
    /// special files).
    pub skipped: Vec<Skipped>,
}

/// A driver library directory (see the module documentation).
#[derive(Debug, Clone)]
pub struct DriverLibrary {
    dir: PathBuf,
    use_depmod: bool,
}

/// Whether `version` can name a kernel directory of the library.
fn valid_version(version: &str) -> bool {
    !version.is_empty()
        && !version.starts_with('.')
        && !version.contains('/')
        && version != FIRMWARE_DIR
}

impl DriverLibrary {
    /// Opens an existing library directory.
    pub fn open(dir: &Path) -> Result<Self, LibraryError> {
        if !dir.is_dir() {
            return Err(LibraryError::NoLibrary {
                path: dir.to_path_buf(),
            });
        }
        Ok(DriverLibrary {
            dir: dir.to_path_buf(),
            use_depmod: true,
        })
    }

    /// Opens the library at `dir`, creating the directory if needed.
    pub fn create(dir: &Path) -> Result<Self, LibraryError> {
        std::fs::create_dir_all(dir).map_err(LibraryError::io("creating", dir))?;
        Self::open(dir)
    }

    /// Never runs the host's `depmod`: trees without indexes get ferry's.
    pub fn without_depmod(mut self) -> Self {
        self.use_depmod = false;
        self
    }

    /// The library directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the tree of kernel `version` is (or would be).
    pub fn tree(&self, version: &str) -> PathBuf {
        self.dir.join(version)
    }

    /// The firmware directory (`LIBRARY/firmware`, laid out as
    /// `/lib/firmware`; it may not exist).
    pub fn firmware_dir(&self) -> PathBuf {
        self.dir.join(FIRMWARE_DIR)
    }

    /// The kernel versions present, sorted.
    pub fn kernels(&self) -> Result<Vec<String>, LibraryError> {
        let entries =
            std::fs::read_dir(&self.dir).map_err(LibraryError::io("listing", &self.dir))?;
        let mut versions = Vec::new();
        for entry in entries {
            let entry = entry.map_err(LibraryError::io("listing", &self.dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if valid_version(&name) && entry.path().join("modules.dep").is_file() {
                versions.push(name);
            }
        }
        versions.sort();
        Ok(versions)
    }

    /// Loads the indexes of kernel `version`; the error lists the versions
    /// present when it is not one of them.
    pub fn load(&self, version: &str) -> Result<KernelModules, LibraryError> {
        let tree = self.tree(version);
        if !valid_version(version) || !tree.join("modules.dep").is_file() {
            return Err(LibraryError::UnknownKernel {
                library: self.dir.clone(),
                version: version.to_owned(),
                available: self.kernels()?,
            });
        }
        Ok(KernelModules::load(&tree)?)
    }

    /// The file of `module` in the library's tree of kernel `version`, if
    /// the library has that kernel and the file is there.
    pub fn module_file(
        &self,
        version: &str,
        module: &str,
    ) -> Result<Option<PathBuf>, LibraryError> {
        Ok(self.load(version)?.module_file(module))
    }

    /// A staging directory inside the library (same file system, so the
    /// final `rename` is atomic); removed when dropped.
    fn staging(&self) -> Result<tempfile::TempDir, LibraryError> {
        tempfile::Builder::new()
            .prefix(STAGING_PREFIX)
            .tempdir_in(&self.dir)
            .map_err(LibraryError::io(
                "creating a staging directory in",
                &self.dir,
            ))
    }

    /// Adds the kernel module trees of a Debian `linux-image-*` package.
    pub fn add_deb(&self, deb: &Path) -> Result<AddReport, LibraryError> {
        let staging = self.staging()?;
        let base = staging.path().join("lib/modules");
        let unpacked = deb::unpack_module_trees(deb, &base)?;
        let mut kernels = Vec::new();
        for version in &unpacked.kernels {
            kernels.push(self.finish(&staging, version, deb)?);
        }
        Ok(AddReport {
            kernels,
            skipped: unpacked.skipped,
        })
    }

    /// Adds a `/lib/modules/VERSION` directory; its name is the version.
    pub fn add_tree(&self, tree: &Path) -> Result<AddReport, LibraryError> {
        let canonical = tree
            .canonicalize()
            .map_err(LibraryError::io("opening", tree))?;
        let version = canonical
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|v| valid_version(v))
            .map(str::to_owned)
            .ok_or_else(|| LibraryError::NoKernel {
                path: tree.to_path_buf(),
                expected: "a directory named after its kernel version",
            })?;
        let looks_like_tree = ["modules.dep", "modules.order", "modules.builtin", "kernel"]
            .iter()
            .any(|name| canonical.join(name).exists());
        if !looks_like_tree {
            return Err(LibraryError::NoKernel {
                path: tree.to_path_buf(),
                expected: "modules.dep, modules.order, modules.builtin or kernel/",
            });
        }
        let staging = self.staging()?;
        let mut writer = TreeWriter::new(staging.path().join("lib/modules").join(&version))
            .map_err(|e| deb::write_error(tree, &version, e))?;
        writer
            .copy_dir(&canonical, Path::new(""))
            .map_err(|e| deb::write_error(tree, &version, e))?;
        let skipped = std::mem::take(&mut writer.skipped);
        Ok(AddReport {
            kernels: vec![self.finish(&staging, &version, tree)?],
            skipped,
        })
    }

    /// Completes the staged tree of `version` from `source` (indexes) and
    /// moves it into place.
    fn finish(
        &self,
        staging: &tempfile::TempDir,
        version: &str,
        source: &Path,
    ) -> Result<AddedKernel, LibraryError> {
        if !valid_version(version) {
            return Err(LibraryError::UnsafeEntry {
                archive: source.to_path_buf(),
                entry: version.to_owned(),
                problem: "not usable as a kernel version in the library".to_owned(),
            });
        }
        let staged = staging.path().join("lib/modules").join(version);
        let (indexes, depmod_note) = self.index(staging.path(), &staged, version)?;
        let modules = KernelModules::load(&staged)?.loadable_modules().len();
        let dest = self.tree(version);
        let replaced = dest.exists();
        if replaced {
            // Moved into the staging directory, deleted with it.
            let old = staging.path().join(format!("replaced-{version}"));
            std::fs::rename(&dest, &old).map_err(LibraryError::io("moving aside", &dest))?;
        }
        std::fs::rename(&staged, &dest).map_err(LibraryError::io("renaming to", &dest))?;
        Ok(AddedKernel {
            version: version.to_owned(),
            path: dest,
            modules,
            indexes,
            depmod_note,
            replaced,
        })
    }

    /// Makes sure `tree` has `modules.alias` and `modules.dep`.
    fn index(
        &self,
        base: &Path,
        tree: &Path,
        version: &str,
    ) -> Result<(IndexSource, Option<String>), LibraryError> {
        let complete = |tree: &Path| {
            tree.join("modules.alias").is_file() && tree.join("modules.dep").is_file()
        };
        if complete(tree) {
            return Ok((IndexSource::Shipped, None));
        }
        let note = if self.use_depmod {
            match run_depmod(base, version) {
                Ok(()) if complete(tree) => return Ok((IndexSource::Depmod, None)),
                Ok(()) => "depmod wrote no modules.dep under lib/modules".to_owned(),
                Err(why) => why,
            }
        } else {
            "depmod disabled".to_owned()
        };
        generate_indexes(tree)?;
        Ok((IndexSource::Ferry, Some(note)))
    }
}

/// Runs `depmod -b BASE VERSION`; `Err` says why it could not be used.
fn run_depmod(base: &Path, version: &str) -> Result<(), String> {
    for program in ["depmod", "/sbin/depmod", "/usr/sbin/depmod"] {
        let output = Command::new(program)
            .arg("-b")
            .arg(base)
            .arg(version)
            .output();
        match output {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("running {program}: {e}")),
            Ok(out) if out.status.success() => return Ok(()),
            Ok(out) => {
                return Err(format!(
                    "{program} failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        }
    }
    Err("depmod not found".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deb::tests::{ar, tar};
    use crate::elf::tests::build;

    fn modinfo_elf(modinfo: &str) -> Vec<u8> {
        build(
            true,
            false,
            &[(".modinfo", modinfo.replace(';', "\0").as_bytes())],
        )
    }

    /// A new library in `dir/lib` that never runs the host's depmod.
    fn library(dir: &Path) -> DriverLibrary {
        DriverLibrary::create(&dir.join("lib"))
            .expect("library")
            .without_depmod()
    }

    fn small_deb(dir: &Path, version: &str, blk: &[u8]) -> PathBuf {
        let virtio = modinfo_elf("name=virtio;depends=");
        let prefix = format!("./lib/modules/{version}");
        let files = [
            (format!("{prefix}/"), None),
            (
                format!("{prefix}/kernel/virtio.ko"),
                Some(virtio.as_slice()),
            ),
            (format!("{prefix}/kernel/virtio_blk.ko"), Some(blk)),
            (
                format!("{prefix}/modules.builtin"),
                Some(&b"kernel/fs/ext4/ext4.ko\n"[..]),
            ),
        ];
        let entries: Vec<(&str, Option<&[u8]>)> =
            files.iter().map(|(p, d)| (p.as_str(), *d)).collect();
        let path = dir.join(format!("linux-image-{version}.deb"));
        std::fs::write(
            &path,
            ar(&[("debian-binary", b"2.0\n"), ("data.tar", &tar(&entries))]),
        )
        .expect("write deb");
        path
    }

    #[test]
    fn adds_a_deb_and_replaces_it_idempotently() {
        let dir = tempfile::tempdir().expect("temp dir");
        let lib = library(dir.path());
        assert!(lib.kernels().expect("list").is_empty());
        let blk = modinfo_elf("name=virtio_blk;depends=virtio;alias=virtio:d00000002v*");
        let deb = small_deb(dir.path(), "6.1.0-9-amd64", &blk);
        for round in 0..2 {
            let report = lib.add_deb(&deb).expect("adds");
            assert_eq!(report.kernels.len(), 1);
            let added = &report.kernels[0];
            assert_eq!(added.version, "6.1.0-9-amd64");
            assert_eq!(added.modules, 2);
            assert_eq!(added.indexes, IndexSource::Ferry);
            assert_eq!(added.replaced, round == 1);
        }
        assert_eq!(lib.kernels().expect("list"), ["6.1.0-9-amd64"]);
        let km = lib.load("6.1.0-9-amd64").expect("loads");
        assert_eq!(
            km.match_modalias("virtio:d00000002v00001AF4"),
            ["virtio_blk"]
        );
        assert!(km.is_builtin("ext4"));
        assert_eq!(
            lib.module_file("6.1.0-9-amd64", "virtio_blk")
                .expect("known"),
            Some(lib.tree("6.1.0-9-amd64").join("kernel/virtio_blk.ko"))
        );
        // No staging directories are left behind.
        let leftovers: Vec<_> = std::fs::read_dir(lib.dir())
            .expect("list")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_failed_add_leaves_the_library_as_it_was() {
        let dir = tempfile::tempdir().expect("temp dir");
        let lib = library(dir.path());
        let deb = small_deb(dir.path(), "6.1.0-9-amd64", b"\x1F\x8Bbroken module");
        let err = lib.add_deb(&deb).expect_err("broken module");
        assert!(err.to_string().contains("virtio_blk.ko"), "{err}");
        assert!(lib.kernels().expect("list").is_empty());
        assert_eq!(std::fs::read_dir(lib.dir()).expect("list").count(), 0);
    }

    #[test]
    fn a_tree_named_firmware_cannot_replace_the_firmware_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let lib = library(dir.path());
        std::fs::create_dir(lib.firmware_dir()).expect("mkdir");
        std::fs::write(lib.firmware_dir().join("a.fw"), "fw").expect("fw");
        let deb = small_deb(dir.path(), "firmware", &modinfo_elf("name=virtio_blk"));
        let err = lib.add_deb(&deb).expect_err("refused");
        assert!(
            err.to_string().contains("refusing entry `firmware`"),
            "{err}"
        );
        assert!(lib.firmware_dir().join("a.fw").is_file());
    }

    #[test]
    fn unknown_kernels_list_what_is_there() {
        let dir = tempfile::tempdir().expect("temp dir");
        let lib = DriverLibrary::create(dir.path()).expect("library");
        std::fs::create_dir_all(dir.path().join("6.1.0-1-amd64")).expect("mkdir");
        std::fs::write(dir.path().join("6.1.0-1-amd64/modules.dep"), "").expect("dep");
        std::fs::write(dir.path().join("6.1.0-1-amd64/modules.alias"), "").expect("alias");
        let err = lib.load("5.10.0-1-amd64").expect_err("absent");
        assert_eq!(
            err.to_string(),
            format!(
                "kernel 5.10.0-1-amd64 is not in the driver library {}; it holds: 6.1.0-1-amd64",
                dir.path().display()
            )
        );
        assert!(lib.load("../etc").is_err());
        let err = DriverLibrary::open(&dir.path().join("nope")).expect_err("absent");
        assert!(err.to_string().starts_with("no driver library at"), "{err}");
    }

    #[test]
    fn adds_a_tree_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let src = dir.path().join("src/6.1.0-7-amd64");
        std::fs::create_dir_all(src.join("kernel")).expect("mkdir");
        std::fs::write(src.join("kernel/virtio.ko"), modinfo_elf("name=virtio")).expect("ko");
        std::os::unix::fs::symlink("/usr/src/linux-headers-6.1.0-7-amd64", src.join("build"))
            .expect("link");
        let lib = library(dir.path());
        let report = lib.add_tree(&src).expect("adds");
        assert_eq!(report.kernels[0].version, "6.1.0-7-amd64");
        assert_eq!(report.kernels[0].modules, 1);
        assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
        assert_eq!(report.skipped[0].entry, "build");
        let err = lib.add_tree(dir.path()).expect_err("not a tree");
        assert!(err.to_string().contains("no kernel module tree"), "{err}");
    }
}
