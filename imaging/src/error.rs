//! The errors of the image engine. Each variant carries what an operator
//! needs to find the problem: the file, pack, chunk or offset.

use std::io;

use crate::chunk::{ChunkFault, ChunkId};

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `imaging`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O call failed on a named file, device or object.
    #[error("{op} {path}")]
    Io {
        /// what was being done ("reading", "writing", …)
        op: &'static str,
        /// the file, device or object
        path: String,
        /// the OS error
        #[source]
        source: io::Error,
    },
    /// A directory that exists and is not a library.
    #[error("{path} is not a ferry library (it has no ferry-library.json); name a new or empty directory to create one")]
    NotALibrary {
        /// the directory
        path: String,
    },
    /// A library object (config, index, list, pack, manifest) that does not decode.
    #[error("{path} is damaged: {reason}")]
    Corrupt {
        /// the object
        path: String,
        /// what is wrong
        reason: String,
    },
    /// A stored chunk that fails verification.
    #[error("chunk {id} in pack {pack} (offset {offset}) failed verification: {fault}")]
    BadChunk {
        /// the chunk
        id: ChunkId,
        /// the pack file
        pack: String,
        /// the record's offset in the pack
        offset: u64,
        /// what failed
        fault: ChunkFault,
    },
    /// A chunk an image needs that the index does not know.
    #[error("chunk {id} needed by image {image:?} is missing from the library's index")]
    MissingChunk {
        /// the chunk
        id: ChunkId,
        /// the image
        image: String,
    },
    /// No image of that name.
    #[error("no image named {name:?} in library {library}")]
    NoSuchImage {
        /// the name asked for
        name: String,
        /// the library
        library: String,
    },
    /// The name is taken.
    #[error("an image named {name:?} already exists in library {library}; remove it first with `ferry image rm {name}` or choose another name")]
    ImageExists {
        /// the name
        name: String,
        /// the library
        library: String,
    },
    /// A name that cannot be an image name.
    #[error("invalid image name {0:?}: use 1 to 128 letters, digits, '.', '_' or '-', not starting with '.'")]
    BadName(String),
    /// The restore target cannot hold the image.
    #[error(
        "target {target} holds {have} bytes but image {image:?} needs {need}; nothing was written"
    )]
    TargetTooSmall {
        /// the target
        target: String,
        /// its size
        have: u64,
        /// the image's size
        need: u64,
        /// the image
        image: String,
    },
    /// A capture source that cannot be used.
    #[error("source {path}: {reason}")]
    Source {
        /// the source
        path: String,
        /// why
        reason: String,
    },
    /// Another process holds the library lock.
    #[error("library {library} is in use by another ferry process ({wanted} lock unavailable); try again when it has finished")]
    Locked {
        /// the library
        library: String,
        /// the lock wanted
        wanted: &'static str,
    },
    /// The library's configuration refuses the operation.
    #[error("library {library}: {reason}")]
    Config {
        /// the library
        library: String,
        /// why
        reason: String,
    },
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(op: &'static str, path: impl std::fmt::Display, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.to_string(),
            source,
        }
    }
}
