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
