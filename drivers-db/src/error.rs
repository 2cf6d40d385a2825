//! The error type for reading and parsing a kernel module tree.

use std::io;
use std::path::PathBuf;

/// Why a kernel module tree (or one of its index files) could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    /// A file could not be read (missing, unreadable or not UTF-8).
    #[error("cannot read {}", path.display())]
    Read {
        /// The file that was being read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// A line of an index file does not have the expected shape.
    #[error("{}:{line}: {problem}", path.display())]
    Parse {
        /// The file being parsed.
        path: PathBuf,
        /// 1-based line number; for `modules.builtin.modinfo`, whose records
        /// are NUL-separated, the 1-based record number.
        line: usize,
        /// What is wrong, quoting the offending text.
        problem: String,
    },
}

/// Why the `.modinfo` of a module file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ModinfoError {
    /// The file could not be read.
    #[error("cannot read module {}", path.display())]
    Read {
        /// The module file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// The file, compressed or decompressed, is larger than ferry accepts.
    #[error("module {} is larger than {limit} bytes{}; refused", path.display(), if *decompressed { " once decompressed" } else { "" })]
    TooLarge {
        /// The module file.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
        /// Whether the limit was hit while decompressing.
        decompressed: bool,
    },
    /// The compressed data could not be decoded.
    #[error("module {}: corrupt {format} data: {problem}", path.display())]
    Decompress {
        /// The module file.
        path: PathBuf,
        /// `xz`, `zstd` or `gzip`.
        format: &'static str,
        /// What the decoder reported.
        problem: String,
    },
    /// The (decompressed) bytes are not an ELF file with a usable `.modinfo`.
    #[error("module {}: {problem} (offset {offset:#x})", path.display())]
    Elf {
        /// The module file.
        path: PathBuf,
        /// Where in the decompressed file the problem is.
        offset: u64,
        /// What is wrong.
        problem: String,
    },
}

/// Why the driver library could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    /// A file system operation failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done (`creating`, `reading`, `renaming to`, ...).
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// The library directory does not exist.
    #[error("no driver library at {} (add a kernel with `ferry drivers add`)", path.display())]
    NoLibrary {
        /// The directory that was expected.
        path: PathBuf,
    },
    /// The library holds no tree for the requested kernel version.
    #[error("kernel {version} is not in the driver library {}; it holds: {}", library.display(), if available.is_empty() { "no kernels".to_owned() } else { available.join(", ") })]
    UnknownKernel {
        /// The library directory.
        library: PathBuf,
        /// The version asked for.
        version: String,
        /// The versions present, sorted.
        available: Vec<String>,
    },
    /// A package or archive is malformed.
    #[error("{}: {problem} (offset {offset})", path.display())]
    Archive {
        /// The package file.
        path: PathBuf,
        /// Byte offset in the package file (for the `ar` container) or in
        /// the decompressed data archive (for `tar` entries).
        offset: u64,
        /// What is wrong.
        problem: String,
    },
    /// An archive entry would write outside the kernel tree.
    #[error("{}: refusing entry `{entry}`: {problem}", archive.display())]
    UnsafeEntry {
        /// The package file.
        archive: PathBuf,
        /// The entry's path as stored.
        entry: String,
        /// Why it is refused.
        problem: String,
    },
    /// The package or directory holds no kernel module tree.
    #[error("{}: no kernel module tree in it ({expected})", path.display())]
    NoKernel {
        /// The package or directory.
        path: PathBuf,
        /// What was looked for.
        expected: &'static str,
    },
    /// A module tree's indexes could not be read.
    #[error(transparent)]
    Modules(#[from] ModulesError),
    /// A module file could not be read while generating indexes.
    #[error(transparent)]
    Modinfo(#[from] ModinfoError),
}

impl LibraryError {
    /// Wraps an I/O error with what was being done and to which path.
    pub(crate) fn io(
        action: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| LibraryError::Io {
            action,
            path,
            source,
        }
    }
}
